"""The close-side question on rollout frames: "Where is what is close ahead?" at every state
whose statement names a landmark close ahead ("Close ahead: the blue door. ..."), answered by
the bearing of that landmark's centre from the camera ("Left.", "Ahead." within `AHEAD_DEG`,
"Right."; `nvila_nav.doorway`); `write_question_dataset` writes the dataset (`nvila-sim
close-side`).

The statement names the goal's landmark where it is close ahead, else the nearest (`stop_statement`),
so the head learns where the landmark the statement would name is, doorways and furniture alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from nvila_core.model.prompting import close_ahead_name
from nvila_nav.doorway import (
    CLOSE_SIDE_ANSWERS,
    CLOSE_SIDE_HEAD,
    CLOSE_SIDE_PROMPT,
    close_side_answer,
)
from nvila_nav.sim.captions import readout_answer
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.sight import camera_bearing
from nvila_nav.sim.turn_sides import stated_states
from nvila_nav.sim.world import world_for_scene


@dataclass(frozen=True)
class CloseSideQuestion:
    """A frame question (`FrameQuestion`) whose states come from the statements and poses."""

    head: str = CLOSE_SIDE_HEAD
    prompt: str = CLOSE_SIDE_PROMPT
    answers: tuple[str, ...] = tuple(CLOSE_SIDE_ANSWERS.values())
    file: str = "close_side.json"
    frames: int = 1

    def states(self, meta: dict) -> list[tuple[int, str]]:
        """(action index, answer) of every state of an episode's meta.json whose statement names
        a landmark close ahead. History-only actions (contrast episodes' "context") are never
        asked about."""
        world = world_for_scene(meta["episode"]["scene_id"])
        # the statement's words for a landmark: the readout's ("The blue door." -> "the blue door")
        by_name = {readout_answer(lm)[:-1].lower(): lm for lm in world.landmarks}
        found = []
        for k, action in stated_states(meta):
            name = close_ahead_name(action["statement"])
            if name is None:
                continue
            if name.lower() not in by_name:
                raise ValueError(f"action {k} states {name!r}, which {world.scene_id} lacks")
            landmark = by_name[name.lower()]
            bearing = camera_bearing(Pose(*action["pose"][:3]), landmark.x, landmark.y)
            found.append((k, close_side_answer(bearing)))
        return found


CLOSE_SIDE = CloseSideQuestion()
