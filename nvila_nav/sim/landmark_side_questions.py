"""The landmark-side question on rollout frames: "Where is the blue door?" at every rollout state,
about every landmark in view there and two that are not (`nvila_nav.landmark_side`);
`write_question_dataset` writes the dataset (`nvila-sim landmark-side`).

Each landmark is named in the readout's words ("the pink shelf", "the green potted plant"), as
navila-nano's statements name the goal, and in view as the statements see it
(`sight.landmarks_in_view`, within `VIEW_RANGE`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from nvila_nav.landmark_side import (
    LANDMARK_SIDE_ANSWER_SET,
    LANDMARK_SIDE_HEAD,
    LANDMARK_SIDE_PROMPT,
    VIEW_RANGE,
    landmark_side_answer,
)
from nvila_nav.sim.captions import landmark_phrase
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.sight import landmarks_in_view
from nvila_nav.sim.world import world_for_scene


@dataclass(frozen=True)
class LandmarkSideQuestion:
    """A frame question (`FrameQuestion`) about named landmarks: its states are
    (action index, answer, name) triples."""

    head: str = LANDMARK_SIDE_HEAD
    prompt: str = LANDMARK_SIDE_PROMPT
    answers: tuple[str, ...] = LANDMARK_SIDE_ANSWER_SET
    file: str = "landmark_side.json"
    frames: int = 1

    def states(self, meta: dict) -> list[tuple[int, str, str]]:
        """(action index, answer, name) about every landmark in view at each state of an
        episode's meta.json (seen by its camera), and about two that are not: one that shares
        a colour or a kind with one in view where there is one ("the pink chair" with the pink
        table in view), and one of the rest, drawn with a seed from the episode's id.
        History-only actions (contrast episodes' "context") are never asked about."""
        world = world_for_scene(meta["episode"]["scene_id"])
        hfov = float(meta["camera"]["hfov_deg"])
        rng = np.random.default_rng(zlib.crc32(str(meta["episode"]["episode_id"]).encode()))
        found = []
        for k, action in enumerate(meta["actions"]):
            if action.get("context", False):
                continue
            pose = Pose(*action["pose"][:3])
            seen = {
                name: bearing
                for _, name, bearing in landmarks_in_view(world, pose, hfov, VIEW_RANGE)
            }
            asked = [lm for lm in world.landmarks if lm.name in seen]
            unseen = [lm for lm in world.landmarks if lm.name not in seen]
            alike = [
                lm
                for lm in unseen
                if any(lm.colour == s.colour or lm.kind == s.kind for s in asked)
            ]
            for pool in (alike, unseen):
                pool = [lm for lm in pool if lm not in asked]
                if pool:
                    asked.append(pool[int(rng.integers(len(pool)))])
            found += [
                (k, landmark_side_answer(seen.get(lm.name)), landmark_phrase(lm)) for lm in asked
            ]
        return found


LANDMARK_SIDE = LandmarkSideQuestion()
