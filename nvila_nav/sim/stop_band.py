"""Rollouts ended at the expert's stop band, from rollouts written without it.

An expert with `stop_band` (`Expert`) stops at the first state where the named landmark is
close ahead and the goal point near; up to that state it drives exactly as the expert without
it. So a rollout dataset written without the band gives the band's dataset by ending each
episode there: that action becomes "stop", and the frames before it are linked, not rendered
again. The result is what `nvila-sim rollout --stop-band` would have written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from nvila_nav.actions import Action
from nvila_nav.sim.dataset import FORMAT, VERSION, link_frames
from nvila_nav.sim.episodes import SUCCESS_RADIUS, Episode
from nvila_nav.sim.expert import in_stop_band
from nvila_nav.sim.geometry import Pose, polyline_length
from nvila_nav.sim.world import world_for_scene


def band_stop_index(meta: dict, band: float) -> int | None:
    """The first action of an episode's meta.json where an expert with `stop_band=band` stops,
    or None when it reaches no such state."""
    episode = Episode.from_dict(meta["episode"])
    radius = episode.goal.radius or SUCCESS_RADIUS
    if not 0.0 < band < radius:
        raise ValueError(f"the stop band must be in (0, {radius}) m (the goal radius), got {band}")
    world = world_for_scene(episode.scene_id)
    hfov = float(meta["camera"]["hfov_deg"])
    return next(
        (
            i
            for i, a in enumerate(meta["actions"])
            if in_stop_band(world, episode, Pose(*a["pose"]), band, hfov)
        ),
        None,
    )


def cut_meta(meta: dict, stop: int) -> dict:
    """The episode's meta.json ended at action `stop`, which becomes "stop"."""
    last = {k: v for k, v in meta["actions"][stop].items() if k != "executed"}
    stopped = Action.stop()
    last |= {"text": stopped.to_text(), "kind": stopped.kind.value, "amount": stopped.amount}
    trajectory = [row for row in meta["trajectory"] if row[0] <= last["t"] + 1e-6]
    episode = Episode.from_dict(meta["episode"])
    gx, gy = episode.goal.position[0], episode.goal.position[1]
    distance = math.hypot(last["pose"][0] - gx, last["pose"][1] - gy)
    return meta | {
        "actions": [*meta["actions"][:stop], last],
        "frames": meta["frames"][: last["frame_index"] + 1],
        "trajectory": trajectory,
        "result": {
            "success": distance < (episode.goal.radius or SUCCESS_RADIUS),
            "stopped": True,
            "distance_to_goal": round(distance, 4),
            "path_length": round(polyline_length([(r[1], r[2]) for r in trajectory]), 4),
        },
    }


def write_stop_band_dataset(
    data: str | Path,
    out: str | Path,
    band: float,
    progress: Callable[[int], object] | None = None,
) -> tuple[int, int]:
    """Write the rollouts of `data` ended at a `band` m stop band into `out` (same layout,
    frames linked, `index.json` last, recording the band); returns (episodes ended earlier,
    actions removed). Rollouts already written with a band can be given a wider one only: a
    narrower band needs the steps they no longer have."""
    data, out = Path(data), Path(out)
    index = json.loads((data / "index.json").read_text(encoding="utf-8"))
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(f"{data} is not a {FORMAT} v{VERSION} dataset")
    if "contrast" in index:
        raise ValueError(f"{data} holds contrast episodes: end the rollouts they were made of")
    previous = index.get("stop_band")
    if previous is not None and band < previous:
        raise ValueError(f"{data} has a {previous} m stop band; a narrower one needs new rollouts")
    out.mkdir(parents=True, exist_ok=True)
    entries, cut, removed = [], 0, 0
    for entry in index["episodes"]:
        meta = json.loads((data / entry["dir"] / "meta.json").read_text(encoding="utf-8"))
        stop = band_stop_index(meta, band)
        if stop is not None and meta["actions"][stop]["kind"] != "stop":
            meta = cut_meta(meta, stop)
            removed += entry["num_actions"] - len(meta["actions"])
            cut += 1
        link_frames(data / entry["dir"], out / entry["dir"], [f["file"] for f in meta["frames"]])
        (out / entry["dir"] / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        entries.append(
            entry
            | {
                "num_frames": len(meta["frames"]),
                "num_actions": len(meta["actions"]),
                "success": meta["result"]["success"],
            }
        )
        if progress is not None:
            progress(1)
    index_out = index | {"stop_band": band, "episodes": entries}
    (out / "index.json").write_text(json.dumps(index_out, indent=1), encoding="utf-8")
    return cut, removed
