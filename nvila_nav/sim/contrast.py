"""Contrast episodes: the same frames, another landmark named, so the stop must read the name.

Trained on expert rollouts alone, a model can stop whenever furniture fills the view: in every
rollout the only furniture the robot comes close to and faces is the goal, so the name in the
stop clause never decides a label. A contrast episode copies a successful rollout (frames,
executed actions), names another landmark of the same scene in the stop clause, and relabels the
states near the original goal with the expert's action for that landmark: there, the view that
meant "stop" for the original name now means "go on" for the new one. The states before stay as
context (`"context": true`: they build later samples' history but are not samples themselves),
because the rest of the instruction still describes the route that was driven.

    nvila-sim contrast --data data/nano/train_A --out data/nano/contrast_A --radius 1.5
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nvila_nav.actions import Action, parse_action
from nvila_nav.sim.captions import goal_phrase
from nvila_nav.sim.dataset import FORMAT, VERSION, link_frames, set_statements
from nvila_nav.sim.episodes import Episode
from nvila_nav.sim.expert import Expert
from nvila_nav.sim.furniture import KINDS
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.world import Landmark, World, world_for_scene

HARD_NEGATIVE_SHARE = 0.5
"""Share of contrast episodes that name a landmark of the same kind or the same colour as the
goal (when the scene has one): both words of the name must be read, not just one."""


def name_other(text: str, goal: Landmark, other: Landmark, rng: np.random.Generator) -> str | None:
    """`text` with its last naming of `goal` replaced by "the <colour> <noun>" of `other`; None
    when `text` does not name `goal`."""
    found = goal_phrase(text, goal)
    if found is None:
        return None
    nouns = KINDS[other.kind].nouns
    phrase = f"the {other.colour} {nouns[int(rng.integers(len(nouns)))]}"
    return text[: found.start()] + phrase + text[found.end() :]


def pick_other(world: World, goal: Landmark, rng: np.random.Generator) -> Landmark | None:
    """Another landmark of the scene, a hard negative (same kind or colour) half the time."""
    others = [lm for lm in world.landmarks if lm.name != goal.name]
    hard = [lm for lm in others if lm.kind == goal.kind or lm.colour == goal.colour]
    pool = hard if hard and rng.random() < HARD_NEGATIVE_SHARE else others
    return pool[int(rng.integers(len(pool)))] if pool else None


def contrast_meta(
    meta: dict,
    world: World,
    rng: np.random.Generator,
    radius: float,
    stop_band: float | None = None,
) -> dict | None:
    """A contrast episode's meta.json for one rollout's meta, or None when the rollout did not
    reach its goal, its instruction does not name the goal, or the scene has no other landmark.

    Actions whose pose is within `radius` of the original goal point are relabelled with the
    expert's action for the other landmark (their `executed` keeps what was driven); every
    other action becomes context. `stop_band`: the rollouts' expert's (`Expert`), so that
    the relabelling expert stops where theirs would, at the other landmark."""
    if not meta["result"]["success"]:
        return None
    episode = Episode.from_dict(meta["episode"])
    goal = world.landmark(episode.info["goal_landmark"])
    other = pick_other(world, goal, rng)
    text = None if other is None else name_other(meta["instruction"], goal, other, rng)
    if text is None:
        return None
    swapped = meta["episode"] | {
        "episode_id": f"{episode.episode_id}-contrast",
        "goals": [{"position": [*other.approach, 0.0], "radius": episode.goal.radius}],
        "reference_path": [],
        "gt_locations": [],
        "instruction": {"instruction_text": text},
        "info": episode.info
        | {"goal_landmark": other.name, "initial_turn_deg": 0.0, "contrast_of": episode.episode_id},
    }
    expert = Expert(
        world,
        Episode.from_dict(swapped),
        stop_band=stop_band,
        hfov_deg=float(meta["camera"]["hfov_deg"]),
    )
    gx, gy = episode.goal.position[0], episode.goal.position[1]
    actions = []
    for a in meta["actions"]:
        pose = Pose(*a["pose"])
        if math.hypot(pose.x - gx, pose.y - gy) > radius:
            actions.append(a | {"context": True})
            continue
        label = expert.next_action(pose)
        driven = a.get("executed") or a["text"]
        actions.append(_relabelled(a, label, driven))
    if all(a.get("context") for a in actions):
        return None
    last = meta["trajectory"][-1] if meta["trajectory"] else meta["actions"][-1]["pose"]
    x, y = (last[1], last[2]) if meta["trajectory"] else (last[0], last[1])
    contrast = meta | {
        "episode": swapped,
        "instruction": text,
        "actions": actions,
        "result": meta["result"]
        | {
            "success": False,
            "distance_to_goal": round(math.hypot(x - other.approach[0], y - other.approach[1]), 4),
        },
    }
    set_statements(contrast, world)  # about the landmark now named
    return contrast


def _relabelled(action: dict, label: Action, driven: str) -> dict:
    parsed = parse_action(driven)
    out = action | {"text": label.to_text(), "kind": label.kind.value, "amount": label.amount}
    out.pop("executed", None)
    if parsed != label:
        out["executed"] = driven
    return out


def write_contrast_dataset(
    data: str | Path,
    out: str | Path,
    radius: float = 1.5,
    seed: int = 0,
    progress: Callable[[int], object] | None = None,
) -> list[dict]:
    """Write a contrast episode for every usable rollout of the dataset at `data` into `out`
    (same layout, `index.json` last); returns the index entries, which also count each
    episode's training samples (`num_samples`: its actions that are not context)."""
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    data, out = Path(data), Path(out)
    index = json.loads((data / "index.json").read_text(encoding="utf-8"))
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(f"{data} is not a {FORMAT} v{VERSION} dataset")
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, entry in enumerate(index["episodes"]):
        meta = json.loads((data / entry["dir"] / "meta.json").read_text(encoding="utf-8"))
        scene = meta["episode"]["scene_id"]
        contrast = contrast_meta(
            meta,
            world_for_scene(scene),
            np.random.default_rng([seed, k]),
            radius,
            index.get("stop_band"),
        )
        if progress is not None:
            progress(1)
        if contrast is None:
            continue
        name = f"{entry['dir']}-contrast"
        link_frames(data / entry["dir"], out / name)
        (out / name / "meta.json").write_text(json.dumps(contrast), encoding="utf-8")
        entries.append(
            {
                "episode_id": contrast["episode"]["episode_id"],
                "dir": name,
                "scene_id": scene,
                "num_frames": len(contrast["frames"]),
                "num_actions": len(contrast["actions"]),
                "num_samples": sum(not a.get("context", False) for a in contrast["actions"]),
                "success": False,
            }
        )
    index_out = index | {"episodes": entries, "contrast": {"of": str(data), "radius": radius}}
    (out / "index.json").write_text(json.dumps(index_out, indent=1), encoding="utf-8")
    return entries
