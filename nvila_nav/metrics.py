"""VLN-CE (Habitat) episode metrics (SR, SPL, NE, OSR, nDTW, SDTW, TL, steps) and their
aggregation: what the embedded simulator's evaluator and closed loop report.

Definitions follow VLN-CE's Habitat measures as NaVILA's VLN-CE fork computes them
(habitat_extensions/measures.py, eval_jsons.py), once per action, on the 2-D trajectory. They
are not VLN-CE-Isaac's: NaVILA-Bench on Isaac Sim measures the distance to the goal along the
episode's gt_locations polyline from the 3-D root position every control step, and has no
nDTW; those measures are in `nvila_nav.vln_ce_isaac`. Here the distance to the goal is the
straight line to the goal position by default (Habitat measures it geodesically on the
navmesh: pass `distance_fn` / `start_goal_distance` when a geodesic is available), so numbers
are comparable to R2R-CE tables only as far as that difference allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

DistanceFn = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class EpisodeMetrics:
    """Metrics of one episode; distances in metres, `ne`/`spl` may be non-finite (unreachable goal)."""

    success: bool
    spl: float
    ne: float
    osr: bool
    ndtw: float
    sdtw: float
    path_length: float
    steps: int

    def to_dict(self) -> dict[str, float | int | bool]:
        """Plain dict for json.dump; non-finite values stay floats (json writes NaN/Infinity)."""
        return asdict(self)


def _points(name: str, points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] not in (2, 3):
        raise ValueError(f"{name} must be a non-empty list of (x, y) or (x, y, z) points")
    return array


def path_length(points: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Sum of straight segment lengths along a polyline (TL)."""
    array = _points("points", points)
    return float(np.linalg.norm(np.diff(array, axis=0), axis=1).sum())


def dtw(
    path: Sequence[Sequence[float]] | np.ndarray, reference: Sequence[Sequence[float]]
) -> float:
    """Exact dynamic time warping cost with Euclidean point distance, O(len(path)·len(reference)).

    VLN-CE uses fastdtw, an approximation that can only over-estimate this value.
    """
    a = _points("path", path)
    b = _points("reference", reference)
    if a.shape[1] != b.shape[1]:
        raise ValueError("path and reference must have the same dimension")
    n, m = len(a), len(b)
    cost = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    # acc[i, j] is the best cost aligning a[:i] with b[:j]; cells on one anti-diagonal
    # (i + j = k) depend only on the previous two, so each diagonal is one vector step.
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for k in range(2, n + m + 1):
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        best = np.minimum(np.minimum(acc[i - 1, j], acc[i, j - 1]), acc[i - 1, j - 1])
        acc[i, j] = cost[i - 1, j - 1] + best
    return float(acc[n, m])


def episode_metrics(
    trajectory: Sequence[Sequence[float]] | np.ndarray,
    reference_path: Sequence[Sequence[float]] | np.ndarray,
    goal: Sequence[float] | np.ndarray,
    radius: float,
    stopped: bool,
    steps: int | None = None,
    start_goal_distance: float | None = None,
    distance_fn: DistanceFn | None = None,
) -> EpisodeMetrics:
    """Compute VLN-CE metrics for one executed episode.

    `trajectory` holds the agent position before the first action and after every step, so
    `steps` defaults to len(trajectory) - 1. `distance_fn(position)` gives the distance to the goal
    (Euclidean if omitted; pass a geodesic for Habitat-comparable NE/SR/OSR); `start_goal_distance`
    overrides the SPL shortest-path length (defaults to the distance from trajectory[0]).
    Success needs an explicit stop, as in VLN-CE: running out of steps near the goal does not count.
    """
    path = _points("trajectory", trajectory)
    reference = _points("reference_path", reference_path)
    goal_point = np.asarray(goal, dtype=float)
    if goal_point.shape != (path.shape[1],) or reference.shape[1] != path.shape[1]:
        raise ValueError("trajectory, reference_path and goal must have the same dimension")
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius}")

    if distance_fn is None:
        distances = np.linalg.norm(path - goal_point, axis=1)
    else:
        distances = np.array([distance_fn(p) for p in path], dtype=float)
    ne = float(distances[-1])
    d_start = float(distances[0]) if start_goal_distance is None else float(start_goal_distance)
    length = path_length(path)

    success = bool(stopped) and ne < radius
    spl = _spl(success, d_start, length)
    ndtw = math.exp(-dtw(path, reference) / (len(reference) * radius))
    return EpisodeMetrics(
        success=success,
        spl=spl,
        ne=ne,
        osr=bool(np.any(distances < radius)),
        ndtw=ndtw,
        sdtw=ndtw if success else 0.0,
        path_length=length,
        steps=len(path) - 1 if steps is None else int(steps),
    )


def _spl(success: bool, d_start: float, length: float) -> float:
    """S · d_start / max(d_start, length); NaN when d_start is not finite (as Habitat would give)."""
    if not math.isfinite(d_start):
        return math.nan
    if not success:
        return 0.0
    denominator = max(d_start, length)
    # Starting on the goal and stopping at once is optimal; Habitat would divide 0 by 0 here.
    return 1.0 if denominator == 0 else d_start / denominator


_MEAN_KEYS = ("sr", "osr", "ndtw", "sdtw", "path_length", "steps")
_FINITE_ONLY_KEYS = ("spl", "ne")


def aggregate(episodes: Sequence[EpisodeMetrics]) -> dict[str, float | int]:
    """Average metrics over episodes as fractions in [0, 1] (SR, SPL, OSR, nDTW, SDTW) or metres.

    Like VLN-CE's eval_jsons.py, non-finite NE/SPL values are left out of their mean and counted
    under `ne_nonfinite` / `spl_nonfinite`; a metric with no finite value averages to NaN.
    """
    if not episodes:
        raise ValueError("cannot aggregate zero episodes")
    values = {
        "sr": [float(e.success) for e in episodes],
        "osr": [float(e.osr) for e in episodes],
        "ndtw": [e.ndtw for e in episodes],
        "sdtw": [e.sdtw for e in episodes],
        "path_length": [e.path_length for e in episodes],
        "steps": [float(e.steps) for e in episodes],
        "spl": [e.spl for e in episodes],
        "ne": [e.ne for e in episodes],
    }
    result: dict[str, float | int] = {"count": len(episodes)}
    for key in _MEAN_KEYS:
        result[key] = float(np.mean(values[key]))
    for key in _FINITE_ONLY_KEYS:
        array = np.asarray(values[key], dtype=float)
        finite = array[np.isfinite(array)]
        result[key] = float(finite.mean()) if finite.size else math.nan
        result[f"{key}_nonfinite"] = int(array.size - finite.size)
    return result


COLUMNS = (
    ("N", "count", 1, "{:.0f}"),
    ("SR%", "sr", 100, "{:.1f}"),
    ("SPL%", "spl", 100, "{:.1f}"),
    ("OSR%", "osr", 100, "{:.1f}"),
    ("nDTW%", "ndtw", 100, "{:.1f}"),
    ("SDTW%", "sdtw", 100, "{:.1f}"),
    ("NE(m)", "ne", 1, "{:.2f}"),
    ("TL(m)", "path_length", 1, "{:.2f}"),
    ("Steps", "steps", 1, "{:.1f}"),
)
"""(header, `aggregate` key, scale, format) of the metrics tables: the console's and README's."""


def metric_cells(metrics: dict[str, float | int]) -> list[str]:
    """One table row's numbers, formatted as COLUMNS says (fractions as percentages)."""
    cells = []
    for _, key, scale, fmt in COLUMNS:
        value = metrics.get(key, math.nan)
        cells.append(fmt.format(value * scale) if math.isfinite(value) else "n/a")
    return cells


def format_table(results: dict[str, dict[str, float | int]]) -> str:
    """Fixed-width table with one row per policy, for comparing `aggregate` outputs in a log."""
    name_width = max([len("Policy"), *(len(name) for name in results)])
    header = "Policy".ljust(name_width) + "".join(f"{h:>8}" for h, *_ in COLUMNS)
    lines = [header, "-" * len(header)]
    for name, metrics in results.items():
        cells = metric_cells(metrics)
        lines.append(name.ljust(name_width) + "".join(f"{c:>8}" for c in cells))
    return "\n".join(lines)
