"""VLN-CE-Isaac episodes and measures: NaVILA-Bench's evaluation on Isaac Sim.

Two families of metrics live in this package; do not mix their numbers:

- VLN-CE (Habitat) measures, `nvila_nav.metrics`: what the embedded simulator's evaluator and
  closed loop report (straight-line distance to the goal position, nDTW/SDTW on the reference
  path), computed once per action from the 2-D trajectory.
- VLN-CE-Isaac measures, here: what NaVILA-Bench reports on Isaac Sim (its utils/measures.py),
  updated after every control step (50 Hz) from the robot's 3-D root position:
  * distance_to_goal: the distance to the nearest point of the episode's `gt_locations`, plus
    the remaining length of that polyline from that point to its end (neither Euclidean to the
    goal nor geodesic);
  * success: the agent called stop and distance_to_goal < goals[0].radius;
  * spl: success · d0 / max(d0, path length), d0 the distance_to_goal at reset;
  * oracle_navigation_error: the smallest distance_to_goal so far; oracle_success: whether
    distance_to_goal was ever below the radius; path_length: summed 3-D step lengths.

Episode files are VLN-CE-Isaac's `vln_ce_isaac_v1.json.gz`: ``{"episodes": [...]}`` with
episode_id, scene_id, start_position, start_rotation (quaternion **w, x, y, z**, Isaac Lab's
order), goals[].position/radius, reference_path, gt_locations and
instruction.instruction_text, in a z-up frame in metres. The embedded simulator's R2R-format
episodes (`nvila_nav.sim.episodes`, start_rotation x, y, z, w) convert both ways; positions are
kept as they are (both frames are z-up).
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nvila_nav.sim.episodes import Episode

MEASURES = (
    "path_length",
    "distance_to_goal",
    "success",
    "spl",
    "oracle_navigation_error",
    "oracle_success",
)
"""NaVILA-Bench's measure names, in its registration (and update) order."""
GT_SPACING_M = 0.25
"""Spacing of gt_locations made from a reference path that has none."""


# ---------------------------------------------------------------- episodes
def xyzw_to_wxyz(q: Sequence[float]) -> list[float]:
    x, y, z, w = (float(v) for v in q)
    return [w, x, y, z]


def wxyz_to_xyzw(q: Sequence[float]) -> list[float]:
    w, x, y, z = (float(v) for v in q)
    return [x, y, z, w]


def _dense(points: Sequence[Sequence[float]], spacing: float) -> list[list[float]]:
    """Points every `spacing` m along a 3-D polyline, keeping every vertex."""
    out = [list(map(float, points[0]))]
    for a, b in itertools.pairwise(points):
        a, b = np.asarray(a, float), np.asarray(b, float)
        n = max(1, math.ceil(float(np.linalg.norm(b - a)) / spacing - 1e-9))
        out += [list(map(float, a + (b - a) * k / n)) for k in range(1, n + 1)]
    return out


def to_isaac(episode: Episode, number: int) -> dict[str, Any]:
    """A VLN-CE-Isaac episode dict. `episode_id` is `number` (VLN-CE-Isaac ids are integers,
    NaVILA-Bench names its result files int(episode_id) - 1); the R2R id is kept in
    info["r2r_episode_id"] so the way back restores it."""
    if not episode.goals or episode.goal.radius is None:
        raise ValueError(f"episode {episode.episode_id}: VLN-CE-Isaac needs a goal with a radius")
    reference = [list(map(float, p)) for p in episode.reference_path]
    if not reference:
        raise ValueError(f"episode {episode.episode_id}: no reference_path")
    gt = [list(map(float, p)) for p in episode.gt_locations] or _dense(reference, GT_SPACING_M)
    return {
        "episode_id": int(number),
        "trajectory_id": episode.trajectory_id,
        "scene_id": episode.scene_id,
        "start_position": list(map(float, episode.start_position)),
        "start_rotation": xyzw_to_wxyz(episode.start_rotation),
        "info": {**episode.info, "r2r_episode_id": episode.episode_id},
        "goals": [
            {"position": list(map(float, g.position)), "radius": g.radius} for g in episode.goals
        ],
        "reference_path": reference,
        "gt_locations": gt,
        "instruction": {"instruction_text": episode.instruction_text},
    }


def from_isaac(data: dict[str, Any]) -> Episode:
    """The R2R-format `Episode` of a VLN-CE-Isaac episode dict (rotation back to x, y, z, w)."""
    info = dict(data.get("info") or {})
    episode_id = info.pop("r2r_episode_id", data["episode_id"])
    instruction = data["instruction"]
    text = instruction if isinstance(instruction, str) else instruction["instruction_text"]
    return Episode.from_dict(
        {
            "episode_id": str(episode_id),
            "trajectory_id": data.get("trajectory_id", data["episode_id"]),
            "scene_id": data["scene_id"],
            "start_position": data["start_position"],
            "start_rotation": wxyz_to_xyzw(data["start_rotation"]),
            "goals": data["goals"],
            "reference_path": data["reference_path"],
            "gt_locations": data.get("gt_locations") or [],
            "instruction": {"instruction_text": text},
            "info": info,
        }
    )


def _open(path: Path, mode: str):
    return (
        gzip.open(path, mode, encoding="utf-8")
        if path.suffix == ".gz"
        else open(path, mode, encoding="utf-8")
    )


def read_isaac_episodes(path: str | Path) -> list[dict[str, Any]]:
    """The raw episode dicts of a vln_ce_isaac_v1.json(.gz) file, checked for the fields
    NaVILA-Bench reads."""
    path = Path(path)
    with _open(path, "rt") as handle:
        data = json.load(handle)
    episodes = data.get("episodes") if isinstance(data, dict) else None
    if not isinstance(episodes, list):
        raise ValueError(f'{path}: expected {{"episodes": [...]}}')
    for episode in episodes:
        check_isaac_episode(episode)
    return episodes


def check_isaac_episode(episode: dict[str, Any]) -> None:
    """ValueError naming the first field NaVILA-Bench needs that is missing or malformed."""
    where = f"episode {episode.get('episode_id', '?')}"
    for key in (
        "episode_id",
        "scene_id",
        "start_position",
        "start_rotation",
        "goals",
        "reference_path",
        "gt_locations",
        "instruction",
    ):
        if key not in episode:
            raise ValueError(f"{where}: no {key}")
    if len(episode["start_position"]) != 3 or len(episode["start_rotation"]) != 4:
        raise ValueError(f"{where}: start_position needs 3 numbers, start_rotation 4 (w, x, y, z)")
    if not episode["goals"] or episode["goals"][0].get("radius") is None:
        raise ValueError(f"{where}: goals[0].radius is missing")
    for key in ("reference_path", "gt_locations"):
        points = episode[key]
        if not points or any(len(p) != 3 for p in points):
            raise ValueError(f"{where}: {key} must be a non-empty list of (x, y, z)")
    instruction = episode["instruction"]
    if not isinstance(instruction, dict) or not isinstance(
        instruction.get("instruction_text"), str
    ):
        raise ValueError(f"{where}: instruction.instruction_text is missing")


def write_isaac_episodes(path: str | Path, episodes: Iterable[dict[str, Any]]) -> Path:
    """Write VLN-CE-Isaac episode dicts (gzipped when the name ends in .gz)."""
    path = Path(path)
    episodes = list(episodes)
    for episode in episodes:
        check_isaac_episode(episode)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open(path, "wt") as handle:
        json.dump({"episodes": episodes}, handle)
    return path


def read_any_episodes(path: str | Path) -> list[Episode]:
    """Episodes of a VLN-CE-Isaac file (every episode has an integer episode_id and
    gt_locations) or of an R2R-format file (anything else `read_episodes` takes)."""
    path = Path(path)
    with _open(path, "rt") as handle:
        data = json.load(handle)
    raw = data.get("episodes", []) if isinstance(data, dict) else []
    if raw and all(isinstance(e.get("episode_id"), int) and e.get("gt_locations") for e in raw):
        return [from_isaac(e) for e in read_isaac_episodes(path)]
    from nvila_nav.sim.episodes import read_episodes

    return read_episodes(path)


# ---------------------------------------------------------------- measures
def distance_to_goal(position: Sequence[float], gt_locations: Sequence[Sequence[float]]) -> float:
    """VLN-CE-Isaac's distance to goal: to the nearest gt_locations point (the first of equally
    near ones), plus the polyline's remaining length from there to its end."""
    gt = np.asarray(gt_locations, dtype=float)
    p = np.asarray(position, dtype=float)
    if gt.ndim != 2 or gt.shape[1] != 3 or len(gt) == 0 or p.shape != (3,):
        raise ValueError("position must be (x, y, z) and gt_locations a list of (x, y, z)")
    distances = np.linalg.norm(gt - p, axis=1)
    nearest = int(np.argmin(distances))
    remaining = float(np.linalg.norm(np.diff(gt[nearest:], axis=0), axis=1).sum())
    return float(distances[nearest]) + remaining


class IsaacMeasures:
    """NaVILA-Bench's MeasureManager for one episode: `reset(position)` once, then
    `update(position, stop_called)` after every control step; `measurements()` is its dict.

    Update order and rules are the original's: the distance is recomputed only when the
    position moved by more than 1e-4 m on some axis; success uses this step's distance; SPL
    this step's success.
    """

    def __init__(self, gt_locations: Sequence[Sequence[float]], radius: float) -> None:
        if not radius > 0:
            raise ValueError(f"goal radius must be positive, got {radius}")
        self.gt = np.asarray(gt_locations, dtype=float)
        self.radius = float(radius)
        self._started = False

    def reset(self, position: Sequence[float]) -> None:
        p = np.asarray(position, dtype=float)
        self.path_length = 0.0
        self._previous = p
        self._dtg_position = p
        self.distance_to_goal = distance_to_goal(p, self.gt)
        self.success = 0.0
        self._start_distance = self.distance_to_goal
        self._agent_distance = 0.0
        self.spl = self._spl()
        self.oracle_navigation_error = self.distance_to_goal
        self.oracle_success = float(self.distance_to_goal < self.radius)
        self._started = True

    def update(self, position: Sequence[float], stop_called: bool) -> None:
        if not self._started:
            raise RuntimeError("reset(position) first")
        p = np.asarray(position, dtype=float)
        step = float(np.linalg.norm(p - self._previous))
        self.path_length += step
        if not np.allclose(self._dtg_position, p, atol=1e-4):
            self.distance_to_goal = distance_to_goal(p, self.gt)
            self._dtg_position = p
        self.success = float(bool(stop_called) and self.distance_to_goal < self.radius)
        self._agent_distance += step
        self.spl = self._spl()
        self.oracle_navigation_error = min(self.oracle_navigation_error, self.distance_to_goal)
        self.oracle_success = float(self.oracle_success or self.distance_to_goal < self.radius)
        self._previous = p

    def _spl(self) -> float:
        denominator = max(self._start_distance, self._agent_distance)
        if denominator == 0.0:  # starting at the end of gt_locations and never moving
            return self.success
        return self.success * self._start_distance / denominator

    def measurements(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in MEASURES}


def episode_measures(
    positions: Sequence[Sequence[float]],
    gt_locations: Sequence[Sequence[float]],
    radius: float,
    stop_called: Sequence[bool] | bool,
) -> dict[str, float]:
    """The measures after a whole run: positions[0] at reset, then one per control step;
    `stop_called` per step (len(positions) - 1 flags) or one flag for the last step only."""
    if len(positions) < 1:
        raise ValueError("need at least the reset position")
    steps = len(positions) - 1
    if isinstance(stop_called, bool):
        flags = [False] * steps
        if steps:
            flags[-1] = stop_called
    else:
        flags = list(stop_called)
        if len(flags) != steps:
            raise ValueError(f"{len(flags)} stop flags for {steps} steps")
    tracker = IsaacMeasures(gt_locations, radius)
    tracker.reset(positions[0])
    for position, stop in zip(positions[1:], flags, strict=True):
        tracker.update(position, stop)
    return tracker.measurements()


def aggregate(results: Sequence[dict[str, float]]) -> dict[str, float]:
    """Means over episodes, keyed as MEASURES, plus count."""
    if not results:
        raise ValueError("cannot aggregate zero episodes")
    summary: dict[str, float] = {"count": len(results)}
    for name in MEASURES:
        summary[name] = float(np.mean([float(r[name]) for r in results]))
    return summary


COLUMNS = (
    ("N", "count", 1, "{:.0f}"),
    ("SR%", "success", 100, "{:.1f}"),
    ("SPL%", "spl", 100, "{:.1f}"),
    ("OS%", "oracle_success", 100, "{:.1f}"),
    ("NE(m)", "distance_to_goal", 1, "{:.2f}"),
    ("ONE(m)", "oracle_navigation_error", 1, "{:.2f}"),
    ("TL(m)", "path_length", 1, "{:.2f}"),
)
"""VLN-CE-Isaac table columns: NE is the final distance_to_goal, OS the oracle success."""


def format_table(results: dict[str, dict[str, float]]) -> str:
    """One row per run, VLN-CE-Isaac measures (`aggregate` outputs)."""
    width = max([len("Server"), *(len(name) for name in results)])
    header = "Server".ljust(width) + "".join(f"{h:>9}" for h, *_ in COLUMNS)
    lines = [header, "-" * len(header)]
    for name, summary in results.items():
        cells = [fmt.format(summary[key] * scale) for _, key, scale, fmt in COLUMNS]
        lines.append(name.ljust(width) + "".join(f"{c:>9}" for c in cells))
    return "\n".join(lines)
