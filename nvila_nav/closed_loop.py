"""Closed-loop episodes without ROS: a policy drives the simulator, the expert labels each state.

The same loop serves two jobs:
- evaluation: many episodes in one process, much faster than the sim_eval graph, scored with the
  evaluator's own code (`nvila_nav.evaluation`), written in the evaluator's output layout so
  `nvila-nav-report` reads both;
- DAgger (`nvila_nav.dagger`): every state the policy visits gets the expert's action as its
  label, and the run is written as a training episode whose `executed` actions are the policy's.

Semantics match the sim_eval graph and VLN-CE: actions run open-loop at NaVILA's speeds in 50 ms
ticks (`FrameRecorder`), a forward move into a wall is an executed no-op (the body stops at the
wall), the episode ends when the policy says "stop" (`agent_stopped`) or after `max_actions` movement
actions (`action_limit`), and success needs the policy's own stop within the goal radius. Time
does not run while the policy thinks: a slow model gets the same episode as a fast one.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nvila_nav.actions import Action
from nvila_nav.evaluation import (
    END_ACTION_LIMIT,
    END_STOP,
    EpisodeRecorder,
    evaluate_episode,
    plot_episode,
    write_episode_result,
    write_summary,
)
from nvila_nav.navigation import END_NO_USABLE_ACTION
from nvila_nav.policies import DECODINGS, Policy, PolicyRequest, pad_frames
from nvila_nav.sim.episodes import Episode
from nvila_nav.sim.expert import STOP_DISTANCE, ActionStep, Expert, ExpertRun, FrameRecorder

END_POLICY_FAILED = END_NO_USABLE_ACTION
"""The policy gave no action (unparseable text) twice in a row: the navigator's reason too."""


@dataclass
class PolicyRun:
    """A closed-loop episode: the run (labels = expert, `executed` = what was driven), how it
    ended and the policy's wall time per decision."""

    run: ExpertRun
    end_reason: str
    latencies: list[float]


def _request(
    run: ExpertRun,
    episode: Episode,
    executed: list[str],
    pose: tuple[float, float, float],
) -> PolicyRequest:
    """The policy's inputs: every frame so far (the engine samples its own history from them)."""
    frames = run.frames if run.frames else [np.zeros((96, 128, 3), np.uint8)]
    keys: list[int | None] = list(range(len(frames)))
    if not run.frames:
        keys = [None]
    return PolicyRequest(
        instruction=episode.instruction_text,
        frames=pad_frames(frames),
        frame_keys=keys,
        pose=pose,
        episode=episode.to_dict(),
        previous_actions=tuple(executed),
    )


def run_policy(
    sim,
    episode: Episode,
    policy: Policy,
    max_actions: int = 100,
    beta: float = 0.0,
    seed: int = 0,
    render: bool = True,
    frame_hz: float = 2.0,
    expert_finishes: bool = False,
    stop_distance: float = STOP_DISTANCE,
    stop_band: float | None = None,
) -> PolicyRun:
    """Drive `episode` with `policy`; with probability `beta` per step the expert's action is
    driven instead (DAgger's mixture). Frames are rendered one per decision for "recent"
    history policies, at `frame_hz` otherwise (NaVILA's history).

    `expert_finishes` (DAgger only): a policy "stop" the expert does not make is not executed;
    from there the expert drives to its own approach and stop, so a run that the policy ended
    too early still brings the stop labels of the states around the goal. `stop_distance` and
    `stop_band`: where the labelling expert stops around the goal point (`Expert`)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    rng = np.random.default_rng(seed)
    decision_frames = getattr(policy, "history", "navila") == "recent"
    run = ExpertRun(episode=episode, frame_hz=frame_hz, decision_frames=decision_frames)
    recorder = FrameRecorder(sim, run, render, decision_frames)
    recorder.record(sim.reset(episode, render=render and not decision_frames))
    expert = Expert(
        sim, episode, stop_distance=stop_distance, stop_band=stop_band, hfov_deg=sim.camera.hfov_deg
    )
    policy.reset()
    executed: list[str] = []
    latencies: list[float] = []
    end_reason = END_ACTION_LIMIT
    expert_driving = False
    while True:
        pose = sim.pose
        label = expert.next_action(pose)
        frame = recorder.decision()
        driven: Action | None = label if expert_driving else None
        if driven is None and beta > 0.0 and rng.random() < beta:
            driven = label
        for _ in range(2 if driven is None else 0):  # one re-query, as the navigator does
            start = time.perf_counter()
            decision = policy.decide(_request(run, episode, executed, (pose.x, pose.y, pose.yaw)))
            latencies.append(time.perf_counter() - start)
            driven = decision.action
            if driven is not None:
                break
        if driven is None:
            end_reason = END_POLICY_FAILED
            break
        if expert_finishes and driven.is_stop and not label.is_stop:
            driven, expert_driving = label, True
        movements = sum(not _driven(step).is_stop for step in run.actions)
        if not driven.is_stop and movements >= max_actions:
            break
        run.actions.append(
            ActionStep(sim.time, label, frame, pose, None if driven == label else driven)
        )
        if driven.is_stop:
            run.stopped = True
            end_reason = END_STOP
            break
        executed.append(driven.to_text())
        recorder.execute(driven)
    return PolicyRun(run, end_reason, latencies)


def _driven(step: ActionStep) -> Action:
    return step.executed or step.action


def score(result: PolicyRun, label: str) -> dict:
    """The evaluator's result dict for a closed-loop run (same metrics code and fields)."""
    run = result.run
    recorder = EpisodeRecorder(max_actions=0)
    for t, x, y, yaw in run.trajectory:
        recorder.add_pose(t, x, y, yaw)
    for step in run.actions:
        recorder.add_action(step.t, _driven(step).to_text())
    recorder.end_reason = result.end_reason
    scored = evaluate_episode(run.episode, recorder, label)
    labels = [s.action for s in run.actions]
    agree = sum(_driven(s) == s.action for s in run.actions)
    scored["expert_agreement"] = round(agree / len(labels), 4) if labels else None
    scored["decision_s"] = round(float(np.mean(result.latencies)), 4) if result.latencies else 0.0
    return scored


def evaluate(
    policy: Policy,
    episodes: Sequence[Episode],
    out: str | Path,
    label: str,
    max_actions: int = 100,
    width: int = 128,
    height: int = 96,
    plots: bool = True,
) -> dict:
    """Run and score every episode; writes the evaluator's layout (episodes/, plots/,
    summary.json, summary.txt) under `out` and returns the summary."""
    from nvila_core.progress import Progress
    from nvila_nav.sim.env import Simulator
    from nvila_nav.sim.robot import CameraConfig

    results = []
    with (
        Simulator(CameraConfig(width=width, height=height)) as sim,
        Progress(len(episodes), f"closed loop {label}", "ep") as bar,
    ):
        for episode in episodes:
            result = score(run_policy(sim, episode, policy, max_actions=max_actions), label)
            write_episode_result(result, out)
            if plots:
                plot_episode(episode, result, out)
            results.append(result)
            successes = sum(r["metrics"]["success"] for r in results)
            bar.set_postfix(SR=f"{successes}/{len(results)}")
            bar.update(1)
    return write_summary(results, out, label)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nvila-nav-closed-loop",
        description="Evaluate a policy on simulator episodes in one process (no ROS graph).",
    )
    parser.add_argument("--episodes", required=True, help="episodes .json(.gz)")
    parser.add_argument("--policy", default="nvila", help="nvila | expert | random | forward")
    parser.add_argument("--model", default="tiny", help="nvila: checkpoint folder or preset")
    parser.add_argument("--backend", default="torch", help="torch | onnxruntime | tensorrt")
    parser.add_argument(
        "--decoding", default="choose", choices=DECODINGS, help="generate | choose | choose_kind"
    )
    parser.add_argument("--blank-frames", action="store_true", help="instruction-only model")
    parser.add_argument("--label", default=None, help="name in the results (default: policy)")
    parser.add_argument("--limit", type=int, default=0, help="first N episodes (0: all)")
    parser.add_argument("--max-actions", type=int, default=100)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--out", required=True, help="output folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from nvila_nav.evaluation import summary_table
    from nvila_nav.policies import make_policy
    from nvila_nav.sim.episodes import read_episodes

    args = build_parser().parse_args(argv)
    episodes = read_episodes(args.episodes)
    if args.limit > 0:
        episodes = episodes[: args.limit]
    policy = make_policy(
        args.policy,
        model=args.model,
        backend=args.backend,
        blank_frames=args.blank_frames,
        decoding=args.decoding,
    )
    label = args.label or (
        f"nvila ({Path(args.model).name})" if args.policy == "nvila" else args.policy
    )
    summary = evaluate(
        policy,
        episodes,
        args.out,
        label,
        max_actions=args.max_actions,
        width=args.width,
        height=args.height,
        plots=not args.no_plots,
    )
    print(summary_table(summary))
    print(f"per-episode JSON and plots: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
