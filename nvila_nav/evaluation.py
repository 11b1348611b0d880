"""Episode evaluation without ROS: record an episode, score it, write and plot the results.

The evaluator node (nvila_nav/nodes/evaluator.py) feeds an `EpisodeRecorder` from odometry and
the `action` topic; everything else lives here, so the protocol is testable, and reusable by an
offline runner, without a graph. The protocol follows VLN-CE (navila.md §2.1–2.3):

- Success needs the agent's own "stop" within the goal radius (3 m, VLN-CE's SUCCESS_DISTANCE,
  when an episode has none). Hitting the action or time limit is a failure.
- Every episode records how it ended (`end_reason`): `agent_stopped` (the policy said stop),
  `action_limit`, `time_limit`, or the navigator's own reason for a stop it made for the agent
  (`controller_failures`, `no_usable_action`, `camera_timeout`, `stop_requested`; reported on
  `navigator/outcome`). A navigator stop is never the agent's: it cannot succeed, and its "stop"
  is not counted as a step. Summaries count episodes per end reason.
- A forward move into an obstacle ends "blocked" (an executed no-op, as in VLN-CE): it counts as
  an action, and `blocked_actions` counts them per episode.
- Path length, NE, OSR and SPL use every odometry pose, as VLN-CE-Isaac measures every physics
  step. nDTW and SDTW use the path thinned to points at least 25 cm apart (one VLN-CE forward
  step; VLN-CE also skips positions that did not change): DTW sums one cost per point, so a
  50 Hz stream would otherwise lower nDTW for the same route.
- nDTW compares with `gt_locations` (one point per 25 cm), or the reference path without them.
- On embedded-simulator scenes distances to the goal are geodesic on the nav grid, as in Habitat;
  elsewhere (a robot, Isaac Sim through the ROS graph) they are Euclidean to the goal position.
  SPL's shortest path is the episode's `info.geodesic_distance` when present. These are VLN-CE
  (Habitat) measures; VLN-CE-Isaac's (NaVILA-Bench's distance along `gt_locations`) are in
  `nvila_nav.vln_ce_isaac`.
- `steps` counts every action the agent sent, its final "stop" included (VLN-CE's StepsTaken).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from nvila_nav.actions import parse_action
from nvila_nav.metrics import EpisodeMetrics, aggregate, episode_metrics, format_table
from nvila_nav.navigation import END_AGENT_STOPPED as NAVIGATOR_END_AGENT_STOPPED
from nvila_nav.navigation import END_REASONS as NAVIGATOR_ENDS
from nvila_nav.sim.episodes import Episode
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.topdown import draw_topdown
from nvila_nav.sim.world import World, world_for_scene

END_AGENT_STOPPED = NAVIGATOR_END_AGENT_STOPPED
END_STOP = END_AGENT_STOPPED
"""The agent's own stop (the older name)."""
END_ACTION_LIMIT = "action_limit"
END_TIME_LIMIT = "time_limit"
END_REASONS = (END_AGENT_STOPPED, END_ACTION_LIMIT, END_TIME_LIMIT, *NAVIGATOR_ENDS[1:])
"""Every way an episode can end: the agent's stop, the evaluator's limits, then the stops the
navigator makes for the agent (nvila_nav.navigation.END_REASONS)."""

DEFAULT_RADIUS = 3.0
"""VLN-CE's SUCCESS_DISTANCE, for episodes that carry no goal radius (real R2R files)."""
PATH_SPACING_M = 0.25


def select_episodes(episodes: Sequence[Episode], ids: str = "", limit: int = 0) -> list[Episode]:
    """The episodes named in `ids` (comma or space separated, in that order; "" = all of them),
    cut to the first `limit` (0 = no limit). Unknown ids raise ValueError, naming them."""
    by_id = {e.episode_id: e for e in episodes}
    wanted = ids.replace(",", " ").split()
    unknown = [i for i in wanted if i not in by_id]
    if unknown:
        raise ValueError(f"unknown episode ids: {', '.join(unknown)}")
    chosen = [by_id[i] for i in wanted] if wanted else list(episodes)
    return chosen[:limit] if limit > 0 else chosen


class EpisodeRecorder:
    """Collects one episode's odometry and actions and knows when it has ended.

    Times are seconds on the odometry clock (sim time in simulation); poses stamped before
    `start_time` are from before the episode and are ignored. `max_actions` bounds the movement
    actions (the next one ends the episode unexecuted, as VLN-CE's step limit does) and
    `max_time_s` the time since `start_time`; 0 means no limit. The recorder is not thread-safe:
    its owner serialises the calls.

    With `await_outcome` the navigator reports why each instruction ended (`add_outcome`), and a
    "stop" on `action` only marks `stop_seen`: the episode ends when the outcome arrives (the
    two come on different topics, in either order), or when the owner gives up waiting and calls
    `finish(END_AGENT_STOPPED)`. Without it (a navigator that reports nothing) a stop is the
    agent's.
    """

    def __init__(
        self,
        max_actions: int = 0,
        max_time_s: float = 0.0,
        start_time: float = 0.0,
        await_outcome: bool = False,
    ):
        if max_actions < 0 or max_time_s < 0:
            raise ValueError("limits must be >= 0 (0: no limit)")
        self.max_actions = max_actions
        self.max_time_s = max_time_s
        self.start_time = start_time
        self.await_outcome = await_outcome
        self.trajectory: list[tuple[float, float, float, float]] = []
        self.actions: list[tuple[float, str]] = []
        self.end_reason: str | None = None
        self.stop_seen = False
        self.blocked_actions = 0

    @property
    def done(self) -> bool:
        return self.end_reason is not None

    @property
    def stopped(self) -> bool:
        """The agent ended the episode itself, which success requires."""
        return self.end_reason == END_AGENT_STOPPED

    @property
    def elapsed_s(self) -> float:
        return self.trajectory[-1][0] - self.start_time if self.trajectory else 0.0

    @property
    def movement_actions(self) -> int:
        return sum(not _is_stop(text) for _, text in self.actions)

    def add_pose(self, t: float, x: float, y: float, yaw: float) -> None:
        if self.done or t < self.start_time:
            return
        self.trajectory.append((t, x, y, yaw))
        if self.max_time_s and t - self.start_time >= self.max_time_s:
            self.finish(END_TIME_LIMIT)

    def add_action(self, t: float, text: str) -> None:
        if self.done or self.stop_seen:
            return
        if _is_stop(text):
            self.actions.append((t, text))
            self.stop_seen = True
            if not self.await_outcome:
                self.finish(END_AGENT_STOPPED)
        elif self.max_actions and self.movement_actions >= self.max_actions:
            self.finish(END_ACTION_LIMIT)
        else:
            self.actions.append((t, text))

    def add_result(self, text: str) -> None:
        """An `action_result` from the controller: counts blocked moves (executed no-ops)."""
        if not self.done and text.split(" ", 1)[0] == "blocked":
            self.blocked_actions += 1

    def add_outcome(self, t: float, end: str) -> None:
        """The navigator's reason for ending the instruction (nvila_nav.navigation.END_REASONS).

        Only `agent_stopped` is the agent's stop; for any other reason the navigator's "stop"
        is not the agent's action and is dropped from `actions`.
        """
        if self.done:
            return
        if end not in END_REASONS:
            raise ValueError(f"unknown end reason {end!r}")
        if end == END_AGENT_STOPPED and not self.stop_seen:
            self.actions.append((t, "stop"))
        elif end != END_AGENT_STOPPED and self.stop_seen:
            self.actions.pop()
        self.stop_seen = True
        self.finish(end)

    def finish(self, reason: str) -> None:
        """End the episode for `reason` (ignored once ended: the first reason stands)."""
        if not self.done:
            self.end_reason = reason


def _is_stop(text: str) -> bool:
    action = parse_action(text)
    return action is not None and action.is_stop


def thin_path(points: Sequence[Sequence[float]], spacing: float = PATH_SPACING_M) -> list:
    """Points at least `spacing` apart (each from the last kept one), plus the final point."""
    kept = [0]
    for i in range(1, len(points)):
        if math.dist(points[i][:2], points[kept[-1]][:2]) >= spacing:
            kept.append(i)
    if kept[-1] != len(points) - 1:
        kept.append(len(points) - 1)
    return [points[i] for i in kept]


def _sim_world(scene_id: str) -> World | None:
    """The embedded simulator's world of `scene_id`, None for other datasets' scenes."""
    try:
        return world_for_scene(scene_id)
    except ValueError:
        return None


def evaluate_episode(episode: Episode, recorder: EpisodeRecorder, policy_label: str) -> dict:
    """Score a recorded episode; returns the JSON-ready result (metrics, trajectory, actions)."""
    if not recorder.trajectory:
        raise ValueError(f"episode {episode.episode_id}: no odometry was recorded")
    goal = episode.goal.position[:2]
    radius = episode.goal.radius or DEFAULT_RADIUS
    world = _sim_world(episode.scene_id)
    field = world.nav.geodesic(goal) if world is not None else None
    start_distance = episode.info.get("geodesic_distance")
    if start_distance is None and field is not None:
        start_distance = field.at(*episode.start_position[:2])
    reference = [p[:2] for p in episode.gt_locations or episode.reference_path]
    path = [(x, y) for _, x, y, _ in recorder.trajectory]
    common = {
        "reference_path": reference,
        "goal": goal,
        "radius": radius,
        "stopped": recorder.stopped,
        "steps": len(recorder.actions),
        "start_goal_distance": start_distance,
        "distance_fn": None if field is None else (lambda p: field.at(p[0], p[1])),
    }
    metrics = episode_metrics(path, **common)
    shape = episode_metrics(thin_path(path), **common)
    metrics = dataclasses.replace(metrics, ndtw=shape.ndtw, sdtw=shape.sdtw)
    return {
        "episode_id": episode.episode_id,
        "scene_id": episode.scene_id,
        "instruction": episode.instruction_text,
        "policy": policy_label,
        "metrics": metrics.to_dict(),
        "end_reason": recorder.end_reason,
        "blocked_actions": recorder.blocked_actions,
        "elapsed_s": round(recorder.elapsed_s, 3),
        "goal": list(goal),
        "radius": radius,
        "start_goal_distance": start_distance,
        "distance": "geodesic" if field is not None else "euclidean",
        "trajectory": [[round(v, 4) for v in row] for row in recorder.trajectory],
        "actions": [{"t": round(t, 3), "text": text} for t, text in recorder.actions],
    }


def _file_stem(episode_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", episode_id)


def write_episode_result(result: dict, output_dir: str | Path) -> Path:
    """Write `output_dir/episodes/<id>.json`; returns its path."""
    path = Path(output_dir) / "episodes" / f"{_file_stem(result['episode_id'])}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return path


def end_reason_counts(results: Sequence[dict]) -> dict[str, int]:
    """Episodes per end reason, in END_REASONS order (unknown reasons of older files last)."""
    counts: dict[str, int] = {}
    for result in results:
        reason = result.get("end_reason") or "unknown"
        counts[reason] = counts.get(reason, 0) + 1
    order = {reason: i for i, reason in enumerate(END_REASONS)}
    return dict(sorted(counts.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def summary_table(summary: dict[str, Any]) -> str:
    """The `format_table` text of a `write_summary` result, and how the episodes ended."""
    table = format_table({summary["policy"]: summary["metrics"]})
    ends = summary.get("end_reasons")
    if not ends:
        return table
    return table + "\nEnded: " + ", ".join(f"{reason} {n}" for reason, n in ends.items())


def write_summary(results: Sequence[dict], output_dir: str | Path, policy_label: str) -> dict:
    """Aggregate episode results into `summary.json` and `summary.txt`; returns the summary."""
    metrics = aggregate([EpisodeMetrics(**r["metrics"]) for r in results])
    summary = {
        "policy": policy_label,
        "metrics": metrics,
        "end_reasons": end_reason_counts(results),
        "episodes": [
            {
                "episode_id": r["episode_id"],
                "success": r["metrics"]["success"],
                "spl": r["metrics"]["spl"],
                "ne": r["metrics"]["ne"],
                "end_reason": r["end_reason"],
            }
            for r in results
        ],
    }
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (output / "summary.txt").write_text(summary_table(summary) + "\n", encoding="utf-8")
    return summary


def plot_episode(episode: Episode, result: dict, output_dir: str | Path) -> Path | None:
    """Top-down map of the run at `output_dir/plots/<id>.png`: walls, landmarks, reference path,
    goal radius and the robot's trajectory. None for scenes the embedded simulator cannot draw.

    Uses a bare matplotlib Figure (no pyplot), so it is safe off the main thread.
    """
    world = _sim_world(episode.scene_id)
    if world is None:
        return None
    trajectory = [row[1:3] for row in result["trajectory"]]
    _, x, y, yaw = result["trajectory"][-1]
    figure = Figure(figsize=(0.45 * world.size[0] + 1, 0.45 * world.size[1] + 1.4))
    ax = figure.add_subplot()
    draw_topdown(ax, world, episode, trajectory=trajectory, robot=Pose(x, y, yaw))
    metrics = result["metrics"]
    ax.set_title(
        f"{episode.episode_id} ({result['policy']}): "
        f"{'success' if metrics['success'] else 'failure'}, {result['end_reason']}\n"
        f"NE {metrics['ne']:.2f} m  SPL {metrics['spl']:.2f}  nDTW {metrics['ndtw']:.2f}  "
        f"TL {metrics['path_length']:.1f} m",
        fontsize=8,
    )
    ax.legend(loc="upper right", fontsize=6)
    path = Path(output_dir) / "plots" / f"{_file_stem(episode.episode_id)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path
