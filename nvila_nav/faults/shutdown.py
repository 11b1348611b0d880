"""`python -m nvila_nav.faults.shutdown`: SIGINT / SIGTERM to `nvila-nav-bringup <graph>` and to
each node's console script run on its own, while it works, many times: each try must end with
the process gone (exit status 0) within 2 s, after its last command went out: a zero twist on
cmd_vel from a graph or the motion controller, "stop" on action from the navigator.

Targets (`TARGETS`): the graphs navigation, voice and sim_eval, and the console scripts
nvila-nav-navigator, nvila-nav-motion-controller, nvila-nav-sim, nvila-nav-evaluator and
nvila-nav-voice-teleop (`nodes` names all five, `graphs` the three graphs). navigation and voice
run on the `forward` policy (it always moves) with a `ScriptedRobot` as camera, odometry and
base; sim_eval runs the expert on generated episodes in its own simulator and the robot only
records cmd_vel. The node scripts run on their config/ defaults with:

- navigator: the `forward` policy, the robot as camera and odometry; working = it sent a move
  on `action` for an instruction; its last command is "stop" on `action`.
- motion controller: the robot sends "move forward 75 cm" on `action`; working = a non-zero
  cmd_vel; its last command is a zero twist.
- sim: its own scene and camera; working = ready (it logged "simulator ready") and driven by a
  twist on cmd_vel from the robot.
- evaluator: one generated episode; working = it logged "evaluating".
- voice teleop: `audio_source: none`, typed instructions on stdin (`keyboard: enabled`); working
  = the instruction it was typed arrived on `instruction`.

A try: start the process, wait until it works, send the signal, measure the last command after
it and the exit. Results go to `<out>/shutdown_<target>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import rclpy
from geometry_msgs.msg import Twist
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String

from nvila_nav.faults.robot import BEST_EFFORT, RELIABLE, ScriptedRobot
from nvila_nav.faults.suite import NodeProcess, wait_for

EXIT_LIMIT_S = 2.0
GRAPH_ARGUMENTS = {
    "navigation": ["policy:=forward"],
    "voice": ["policy:=forward", "audio_source:=none"],
    "sim_eval": ["policy:=expert"],
}


@dataclass(frozen=True)
class NodeScript:
    """A node's console script as a shutdown target."""

    module: str
    node: str
    """The node's name (config section, log lines)."""
    arguments: tuple[str, ...] = ()
    ready: str = ""
    """A line of its log that says it runs."""
    last: str = ""
    """Its last command: "zero" (a zero twist on cmd_vel), "stop" (on action), or none."""
    camera: bool = False
    """Whether the robot plays camera and odometry for it."""


NODE_SCRIPTS = {
    "nvila-nav-navigator": NodeScript(
        "nvila_nav.nodes.navigator", "navigator", ("-p", "policy:=forward"), "", "stop", True
    ),
    "nvila-nav-motion-controller": NodeScript(
        "nvila_nav.nodes.motion_controller", "motion_controller", (), "", "zero", True
    ),
    "nvila-nav-sim": NodeScript("nvila_nav.nodes.simulator", "sim", (), "simulator ready"),
    "nvila-nav-evaluator": NodeScript(
        "nvila_nav.nodes.evaluator", "evaluator", (), "evaluating", "", True
    ),
    "nvila-nav-voice-teleop": NodeScript(
        "nvila_nav.nodes.voice_teleop",
        "voice_teleop",
        ("-p", "audio_source:=none", "-p", "keyboard:=enabled"),
        "voice teleop ready",
    ),
}
TARGETS = (*GRAPH_ARGUMENTS, *NODE_SCRIPTS)
GROUPS = {"graphs": tuple(GRAPH_ARGUMENTS), "nodes": tuple(NODE_SCRIPTS)}
TYPED_INSTRUCTION = "walk down the hallway"


def traceback_line(log: str) -> str:
    """The exception line that ends the last Python traceback in `log`; "" without one."""
    start = log.rfind("Traceback (most recent call last)")
    if start < 0:
        return ""
    for line in log[start:].splitlines()[1:]:
        if line and not line.startswith((" ", "\t")):
            return line.strip()
    return "Traceback (cut off)"


def script_command(name: str) -> list[str]:
    """The console script next to this interpreter, or `python -m <module>` without one."""
    script = Path(sys.executable).parent / name
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", NODE_SCRIPTS[name].module]


@dataclass
class Trial:
    target: str
    signal: str
    moved: bool
    """The process worked when the signal came (the robot moved, for a graph)."""
    zero_s: float | None
    """Signal → first zero twist on cmd_vel (graphs, motion controller)."""
    exit_s: float | None
    """Signal → process exit (None: still running after 10 s, then killed)."""
    exit_code: int | None
    stop_s: float | None = None
    """Signal → "stop" on action (navigator)."""
    needs: str = "zero"
    """The last command the try must see: "zero", "stop" or nothing."""
    traceback: str = ""
    """The last line of a Python traceback in the process's output (node scripts): the
    exception; empty when there is none."""

    @property
    def ok(self) -> bool:
        return self.ok_within(EXIT_LIMIT_S)

    def ok_within(self, exit_limit_s: float) -> bool:
        """Worked, sent its last command, and exited with status 0 within `exit_limit_s`."""
        last = {"zero": self.zero_s, "stop": self.stop_s}.get(self.needs, 0.0)
        return (
            self.moved
            and last is not None
            and self.exit_code == 0  # 1: the clean shutdown missed its deadline
            and self.exit_s is not None
            and self.exit_s <= exit_limit_s
            and not self.traceback
        )


class ShutdownBench:
    """A robot on its own domain and context (or `robot`, someone else's, spinning on
    `domain_id`), and tries of one target: a graph's bringup or a node's console script."""

    def __init__(self, target: str, out: Path, domain_id: int, robot: ScriptedRobot | None = None):
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; one of {', '.join(TARGETS)}")
        self.target = self.graph = target
        self.script = NODE_SCRIPTS.get(target)
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "ROS_DOMAIN_ID": str(domain_id),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "PYTHONUNBUFFERED": "1",
        }
        if self.script is None:
            self.arguments = list(GRAPH_ARGUMENTS[target])
            drive_base = target != "sim_eval"
        else:
            from nvila_nav.nodes.bringup import config_dir

            params = config_dir() / f"{self.script.node}.yaml"
            self.arguments = ["--ros-args", "--params-file", str(params), *self.script.arguments]
            drive_base = self.script.camera
        if target in ("sim_eval", "nvila-nav-evaluator"):
            from nvila_nav.sim.episodes import generate_episodes, write_episodes

            count = 20 if target == "sim_eval" else 1
            episodes = write_episodes(
                out / "episodes.json.gz", generate_episodes("val_unseen", count, seed=0)
            )
            evaluation = out / "evaluation"
            if target == "sim_eval":
                self.arguments += [f"episodes:={episodes}", f"output_dir:={evaluation}"]
            else:
                self.arguments += [
                    *("-p", f"episodes_file:={episodes}"),
                    *("-p", f"output_dir:={evaluation}"),
                ]
        self._own = robot is None
        if robot is None:
            self.context = rclpy.Context()
            rclpy.init(context=self.context, domain_id=domain_id)
            robot = ScriptedRobot(self.context, drive_base=drive_base)
        self.robot = robot
        self.actions: list[tuple[float, str]] = []
        self.instructions: list[tuple[float, str]] = []
        self._entities: list[Any] = []
        if self.script is not None:
            # best effort: hears the voice node's reliable publisher and the robot's own
            self._instruction_sub = robot.create_subscription(
                String, "instruction", self._on_instruction, BEST_EFFORT
            )
            self._entities = [
                robot.create_subscription(String, "action", self._on_action, RELIABLE),
                self._instruction_sub,
            ]
            self.cmd_vel_pub = robot.create_publisher(Twist, "cmd_vel", RELIABLE)
        if self._own:
            self.executor = SingleThreadedExecutor(context=self.context)
            self.executor.add_node(self.robot)
            self._thread = threading.Thread(target=self.executor.spin, daemon=True)
            self._thread.start()

    def _on_action(self, msg: String) -> None:
        self.actions.append((time.monotonic(), msg.data))

    def _on_instruction(self, msg: String) -> None:
        self.instructions.append((time.monotonic(), msg.data))

    def trial(self, sig: signal.Signals, index: int) -> Trial:
        if self.script is not None:
            return self.script_trial(sig, index)
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
                t0 = self._instruct(started, "walk down the hallway", controller=True)
                moved = t0 is not None and wait_for(lambda: self.robot.moving(t0), 20.0)
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

    def script_trial(self, sig: signal.Signals, index: int) -> Trial:
        """One try of a node's console script (see the module docstring)."""
        script = self.script
        process = NodeProcess(
            f"{self.target}-{index}-{sig.name}",
            [*script_command(self.target), *self.arguments],
            self.env,
            self.out,
        )
        typed = script.node == "voice_teleop"
        started = time.monotonic()
        process.start(stdin=subprocess.PIPE if typed else subprocess.DEVNULL)

        def logged(text: str) -> bool:
            return text in process.log_path.read_text(errors="replace")

        try:
            moved = False
            if script.node == "navigator":
                t0 = self._instruct(started, TYPED_INSTRUCTION)
                moved = t0 is not None and wait_for(lambda: self._moves_since(t0), 20.0)
            elif script.node == "motion_controller":
                up = wait_for(lambda: self.robot.action_pub.get_subscription_count() > 0, 120.0)
                deadline = time.monotonic() + 20.0
                while up and not moved and time.monotonic() < deadline:
                    t0 = time.monotonic()
                    self.robot.action_pub.publish(String(data="move forward 75 cm"))
                    moved = wait_for(lambda t0=t0: self.robot.moving(t0), 2.0)
            else:
                moved = wait_for(lambda: logged(script.ready), 120.0)
                if moved and script.node == "sim":
                    twist = Twist()
                    twist.linear.x = 0.3
                    self.cmd_vel_pub.publish(twist)
                if moved and typed:
                    # typed before discovery matched us, the instruction would be lost
                    discovered = wait_for(lambda: self._publishes_instructions(script.node), 30.0)
                    t0 = time.monotonic()
                    if discovered:
                        process.process.stdin.write(f"{TYPED_INSTRUCTION}\n".encode())
                        process.process.stdin.flush()
                    moved = discovered and wait_for(
                        lambda: any(
                            at >= t0 and text == TYPED_INSTRUCTION
                            for at, text in list(self.instructions)
                        ),
                        10.0,
                    )
                time.sleep(0.3)  # at work: the sim steps, the evaluator waits for its episode
            t = process.signal(sig)
            code, exit_s = process.wait_exit(t, 10.0)
            zero_s = stop_s = None
            if script.last == "zero":
                wait_for(lambda: self.robot.first_zero(t) is not None, 1.0)
                zero = self.robot.first_zero(t)
                zero_s = None if zero is None else zero.t - t
            elif script.last == "stop":
                wait_for(lambda: self._stop_after(t) is not None, 1.0)
                stop = self._stop_after(t)
                stop_s = None if stop is None else stop - t
            return Trial(
                self.target,
                sig.name,
                moved,
                zero_s,
                exit_s,
                code,
                stop_s,
                script.last or "-",
                traceback_line(process.log_path.read_text(errors="replace")),
            )
        finally:
            if process.alive():
                process.process.kill()
                process.process.wait()
            if process.process is not None and process.process.stdin is not None:
                process.process.stdin.close()
            # the old node leaves the graph before the next try
            wait_for(lambda: script.node not in self.robot.get_node_names(), 5.0)

    def _publishes_instructions(self, node: str) -> bool:
        """Whether this process has discovered `node` publishing on our instruction topic."""
        topic = self._instruction_sub.topic_name
        return any(p.node_name == node for p in self.robot.get_publishers_info_by_topic(topic))

    def _instruct(self, started: float, text: str, controller: bool = False) -> float | None:
        """Once a navigator started at `started` is active and listening (and with `controller`,
        the graph's motion controller has heard odometry: it refuses moves before), send `text`;
        the time it was sent, or None when the graph never came up."""
        up = wait_for(
            lambda: (
                self.robot.last_status(started)[0].get("active") == "true"
                and self.robot.instruction_pub.get_subscription_count() > 0
                and (not controller or self.robot.controller_has_odometry(started))
            ),
            120.0,
        )
        if not up:
            return None
        sent = time.monotonic()
        self.robot.instruction_pub.publish(String(data=text))
        return sent

    def _moves_since(self, t: float) -> bool:
        return any(at >= t and text != "stop" for at, text in list(self.actions))

    def _stop_after(self, t: float) -> float | None:
        return next((at for at, text in list(self.actions) if at >= t and text == "stop"), None)

    def close(self) -> None:
        if not self._own:  # someone else's robot: only what this bench added goes
            for subscription in self._entities:
                self.robot.destroy_subscription(subscription)
            if self.script is not None:
                self.robot.destroy_publisher(self.cmd_vel_pub)
            return
        self.robot.close()
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)
        self.robot.destroy_node()
        rclpy.try_shutdown(context=self.context)


def run(target: str, tries: int, signals: list[signal.Signals], out: Path, domain_id: int):
    bench = ShutdownBench(target, out, domain_id)
    trials = []
    try:
        for index in range(tries):
            sig = signals[index % len(signals)]
            trial = bench.trial(sig, index)
            trials.append(trial)
            last = (
                f"zero twist after {trial.zero_s}"
                if trial.needs == "zero"
                else f"stop after {trial.stop_s}"
                if trial.needs == "stop"
                else "no last command expected"
            )
            print(
                f"{target} try {index + 1}/{tries} {sig.name}: worked {trial.moved}, {last}, "
                f"exit {trial.exit_code} after {trial.exit_s} -> "
                f"{'ok' if trial.ok else 'FAILED'}",
                flush=True,
            )
    finally:
        bench.close()
    return trials


def summarize(target: str, trials: list[Trial]) -> dict:
    """Tries, good ones and the slowest times, over all tries and per signal."""

    def slowest(values: list[float | None]) -> float | None:
        return max((v for v in values if v is not None), default=None)

    def stats(group: list[Trial]) -> dict:
        return {
            "tries": len(group),
            "ok": sum(t.ok for t in group),
            "max_exit_s": slowest([t.exit_s for t in group]),
            "max_zero_s": slowest([t.zero_s for t in group]),
            "max_stop_s": slowest([t.stop_s for t in group]),
        }

    signals = sorted({t.signal for t in trials})
    return {
        "target": target,
        **stats(trials),
        "per_signal": {sig: stats([t for t in trials if t.signal == sig]) for sig in signals},
        "trials": [asdict(t) | {"ok": t.ok} for t in trials],
    }


def markdown_row(summary: dict, signal_name: str) -> str:
    """`| target | signal | good / tries | slowest exit (s) | slowest last command (s) |`"""
    stats = summary["per_signal"][signal_name]
    last = stats["max_zero_s"] if stats["max_zero_s"] is not None else stats["max_stop_s"]
    last_text = "-" if last is None else f"{last:.3f}"
    exit_text = "-" if stats["max_exit_s"] is None else f"{stats['max_exit_s']:.2f}"
    return (
        f"| {summary['target']} | {signal_name} | {stats['ok']} / {stats['tries']} | "
        f"{exit_text} | {last_text} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nvila_nav.faults.shutdown",
        description="SIGINT/SIGTERM to nvila-nav-bringup <graph> or a node's console script "
        "while it works, many times.",
    )
    parser.add_argument(
        "targets",
        nargs="+",
        choices=(*TARGETS, *GROUPS),
        metavar="target",
        help=f"a graph or a node script ({', '.join(TARGETS)}), or a group: graphs, nodes",
    )
    parser.add_argument("--tries", type=int, default=50, help="tries per target")
    parser.add_argument("--signal", choices=("SIGINT", "SIGTERM", "both"), default="both")
    parser.add_argument("--out", type=Path, default=Path("outputs/faults"))
    parser.add_argument("--domain-id", type=int, default=1 + os.getpid() % 100)
    args = parser.parse_args(argv)
    if args.tries < 1:
        parser.error("--tries must be at least 1")
    signals = (
        [signal.SIGINT, signal.SIGTERM] if args.signal == "both" else [signal.Signals[args.signal]]
    )
    targets = [t for name in args.targets for t in GROUPS.get(name, (name,))]
    failed = 0
    rows = []
    for target in dict.fromkeys(targets):
        trials = run(target, args.tries, signals, args.out / f"shutdown_{target}", args.domain_id)
        summary = summarize(target, trials)
        path = args.out / f"shutdown_{target}.json"
        path.write_text(json.dumps(summary, indent=2))
        failed += summary["ok"] != summary["tries"]
        rows += [markdown_row(summary, sig) for sig in summary["per_signal"]]
        print(
            f"{target}: {summary['ok']} of {summary['tries']} tries ended with the last command "
            f"and an exit within {EXIT_LIMIT_S:g} s (slowest exit {summary['max_exit_s']}, "
            f"slowest zero twist {summary['max_zero_s']}, slowest stop "
            f"{summary['max_stop_s']}); {path}",
            flush=True,
        )
    print("| target | signal | good / tries | slowest exit (s) | slowest last command (s) |")
    print("| --- | --- | --- | ---: | ---: |")
    print("\n".join(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
