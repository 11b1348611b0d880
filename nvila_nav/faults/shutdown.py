"""`python -m nvila_nav.faults.shutdown`: SIGINT / SIGTERM to `nvila-nav-bringup <graph>` while the
robot moves, many times: each try must end with a zero twist on cmd_vel and the process gone
within 2 s.

navigation and voice run on the `forward` policy (it always moves) with a `ScriptedRobot` as
camera, odometry and base; sim_eval runs the expert on generated episodes in its own simulator
and the robot only records cmd_vel. A try: start the bringup, make the robot move, send the
signal, measure the first zero twist after it and the exit. Results go to
`<out>/shutdown_<graph>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String

from nvila_nav.faults.robot import ScriptedRobot
from nvila_nav.faults.suite import NodeProcess, wait_for

EXIT_LIMIT_S = 2.0
GRAPH_ARGUMENTS = {
    "navigation": ["policy:=forward"],
    "voice": ["policy:=forward", "audio_source:=none"],
    "sim_eval": ["policy:=expert"],
}


@dataclass
class Trial:
    graph: str
    signal: str
    moved: bool
    zero_s: float | None
    """Signal → first zero twist on cmd_vel."""
    exit_s: float | None
    """Signal → process exit (None: still running after 10 s, then killed)."""
    exit_code: int | None

    @property
    def ok(self) -> bool:
        return (
            self.moved
            and self.zero_s is not None
            and self.exit_code == 0  # 1: the clean shutdown missed its deadline
            and self.exit_s is not None
            and self.exit_s <= EXIT_LIMIT_S
        )


class ShutdownBench:
    """A robot on its own domain and context, and tries of one graph's bringup."""

    def __init__(self, graph: str, out: Path, domain_id: int):
        if graph not in GRAPH_ARGUMENTS:
            raise ValueError(f"unknown graph {graph!r}; one of {', '.join(GRAPH_ARGUMENTS)}")
        self.graph = graph
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "ROS_DOMAIN_ID": str(domain_id),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "PYTHONUNBUFFERED": "1",
        }
        self.arguments = list(GRAPH_ARGUMENTS[graph])
        if graph == "sim_eval":
            from nvila_nav.sim.episodes import generate_episodes, write_episodes

            episodes = write_episodes(
                out / "episodes.json.gz", generate_episodes("val_unseen", 20, seed=0)
            )
            self.arguments += [f"episodes:={episodes}", f"output_dir:={out / 'evaluation'}"]
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.robot = ScriptedRobot(self.context, drive_base=graph != "sim_eval")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.robot)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def trial(self, sig: signal.Signals, index: int) -> Trial:
        bringup = NodeProcess(
            f"bringup-{self.graph}-{index}-{sig.name}",
            [sys.executable, "-m", "nvila_nav.nodes.bringup", self.graph, *self.arguments],
            self.env,
            self.out,
        )
        started = time.monotonic()
        bringup.start()
        try:
            if self.graph == "sim_eval":  # the evaluator sends the instruction
                moved = wait_for(lambda: self.robot.moving(started), 120.0)
            else:
                up = wait_for(
                    lambda: (
                        self.robot.last_status(started)[0].get("active") == "true"
                        and self.robot.instruction_pub.get_subscription_count() > 0
                    ),
                    120.0,
                )
                t0 = time.monotonic()
                if up:
                    self.robot.instruction_pub.publish(String(data="walk down the hallway"))
                moved = up and wait_for(lambda: self.robot.moving(t0), 20.0)
            if moved:  # signal in the middle of a move, not between two actions
                wait_for(lambda: self.robot.moving(), 5.0)
            t = bringup.signal(sig)
            code, exit_s = bringup.wait_exit(t, 10.0)
            wait_for(lambda: self.robot.first_zero(t) is not None, 1.0)
            zero = self.robot.first_zero(t)
            return Trial(
                self.graph, sig.name, moved, None if zero is None else zero.t - t, exit_s, code
            )
        finally:
            if bringup.alive():
                bringup.process.kill()
                bringup.process.wait()
            # the old nodes leave the graph before the next try
            wait_for(lambda: self.robot.action_pub.get_subscription_count() == 0, 5.0)

    def close(self) -> None:
        self.robot.close()
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)
        self.robot.destroy_node()
        rclpy.try_shutdown(context=self.context)


def run(graph: str, tries: int, signals: list[signal.Signals], out: Path, domain_id: int):
    bench = ShutdownBench(graph, out, domain_id)
    trials = []
    try:
        for index in range(tries):
            sig = signals[index % len(signals)]
            trial = bench.trial(sig, index)
            trials.append(trial)
            print(
                f"{graph} try {index + 1}/{tries} {sig.name}: moved {trial.moved}, zero twist "
                f"after {trial.zero_s}, exit {trial.exit_code} after {trial.exit_s} -> "
                f"{'ok' if trial.ok else 'FAILED'}",
                flush=True,
            )
    finally:
        bench.close()
    return trials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nvila_nav.faults.shutdown",
        description="SIGINT/SIGTERM to nvila-nav-bringup <graph> while moving, many times.",
    )
    parser.add_argument("graph", choices=sorted(GRAPH_ARGUMENTS))
    parser.add_argument("--tries", type=int, default=50)
    parser.add_argument("--signal", choices=("SIGINT", "SIGTERM", "both"), default="both")
    parser.add_argument("--out", type=Path, default=Path("outputs/faults"))
    parser.add_argument("--domain-id", type=int, default=1 + os.getpid() % 100)
    args = parser.parse_args(argv)
    signals = (
        [signal.SIGINT, signal.SIGTERM] if args.signal == "both" else [signal.Signals[args.signal]]
    )
    trials = run(
        args.graph, args.tries, signals, args.out / f"shutdown_{args.graph}", args.domain_id
    )
    good = sum(trial.ok for trial in trials)
    exits = [t.exit_s for t in trials if t.exit_s is not None]
    zeros = [t.zero_s for t in trials if t.zero_s is not None]
    summary = {
        "graph": args.graph,
        "tries": len(trials),
        "ok": good,
        "max_exit_s": max(exits, default=None),
        "max_zero_s": max(zeros, default=None),
        "trials": [asdict(t) | {"ok": t.ok} for t in trials],
    }
    path = args.out / f"shutdown_{args.graph}.json"
    path.write_text(json.dumps(summary, indent=2))
    print(
        f"{args.graph}: {good} of {len(trials)} tries stopped the robot and exited within "
        f"{EXIT_LIMIT_S:g} s (slowest exit {summary['max_exit_s']}, slowest zero twist "
        f"{summary['max_zero_s']}); {path}"
    )
    return 0 if good == len(trials) else 1


if __name__ == "__main__":
    sys.exit(main())
