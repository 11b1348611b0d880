"""`nvila-nav-decision-bench`: what the robot feels, camera frame to first motion, through the graph.

The navigator and the motion controller run as separate processes, as a launch file starts them;
a `ScriptedRobot` (nvila_nav/faults/robot.py) plays the camera (a fixed picture at
`--camera-rate`), odometry and the base, and keeps sending the instruction. Per decision, all
times on this process's monotonic clock:

- `frame_wait`: the newest camera frame published before the query began → `navigator/querying`
  true (the navigator's poll, its history and the delivery of the flag);
- `model`: querying true → the `action` message (the whole policy: vision, prefill, decode or
  choose, parsing; the navigator's own `last_latency_ms` and `vision_ms` are kept beside it);
- `controller`: the action → the first non-zero `cmd_vel` (a "stop" decision has none and only
  counts in `model`).

`total` = frame → first non-zero twist; decisions/s is 1 / median total. `policy_alone_ms` is the
same query's `NVILAPolicy.decide` in a process of its own (same model, backend and threads): the
navigator's `navigator_latency_ms` minus it is what sharing the process with the camera, DDS
and the executor costs. Each variant (model
folder, backend) is one graph run; results go to `<out>/decision_bench.csv` (one row per
decision), `decision_bench.json` (medians) and `decision_bench.png` (stacked medians).

    nvila-nav-decision-bench --variant "torch fp32=models/navila-nano:torch" \\
        --variant "ORT W8A8+W4A16=outputs/deploy/navila-nano-w8a8-w4a16:onnxruntime"
"""

from __future__ import annotations

import argparse
import bisect
import csv
import dataclasses
import json
import math
import os
import statistics
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, String

from nvila_nav.faults.robot import RELIABLE, ScriptedRobot
from nvila_nav.faults.suite import loopback_env, node_process, wait_for

INSTRUCTION = "Walk down the hallway, turn left at the sofa and stop at the plant."
PARTS = ("frame_wait", "model", "controller")


@dataclass(frozen=True)
class Variant:
    """One graph run: a label, the navigator's model (folder or preset) and backend."""

    label: str
    model: str
    backend: str = "torch"

    @classmethod
    def parse(cls, text: str) -> Variant:
        """ "label=model[:backend]" ."""
        label, sep, rest = text.partition("=")
        if not sep or not label or not rest:
            raise argparse.ArgumentTypeError(f"expected LABEL=MODEL[:BACKEND], got {text!r}")
        model, _, backend = rest.rpartition(":")
        if backend not in ("torch", "onnxruntime", "tensorrt"):
            model, backend = rest, "torch"
        return cls(label, model, backend)


@dataclass(frozen=True)
class Decision:
    variant: str
    action: str
    frame_wait_s: float
    model_s: float
    controller_s: float | None
    navigator_latency_ms: float | None
    vision_ms: float | None

    @property
    def total_s(self) -> float | None:
        if self.controller_s is None:
            return None
        return self.frame_wait_s + self.model_s + self.controller_s


class FrameClock:
    """Publish times of the robot's camera frames (the newest few hundred)."""

    def __init__(self, robot: ScriptedRobot) -> None:
        self._robot = robot
        self._times: deque[float] = deque(maxlen=512)
        self._seen = robot.camera_frames
        self._lock = threading.Lock()

    def poll(self) -> None:
        """Record a time for every frame sent since the last poll (called at 1 kHz)."""
        sent = self._robot.camera_frames
        if sent != self._seen:
            with self._lock:
                self._times.append(time.monotonic())
            self._seen = sent

    def newest_before(self, t: float) -> float | None:
        with self._lock:
            times = list(self._times)
        k = bisect.bisect_right(times, t)
        return times[k - 1] if k else None


class Probe(Node):
    """Listens to `navigator/querying` and `action`, timing each edge on arrival."""

    def __init__(self, context) -> None:
        super().__init__("decision_probe", context=context)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.query_starts: list[float] = []
        self.actions: list[tuple[float, str]] = []
        self._querying = False
        self.create_subscription(Bool, "navigator/querying", self._on_querying, latched)
        self.create_subscription(String, "action", self._on_action, RELIABLE)

    def _on_querying(self, msg: Bool) -> None:
        now = time.monotonic()
        if msg.data and not self._querying:
            self.query_starts.append(now)
        self._querying = msg.data

    def _on_action(self, msg: String) -> None:
        self.actions.append((time.monotonic(), msg.data))


def _with_status(decision: Decision, values: dict[str, str]) -> Decision:
    """The navigator's own timings of this decision, from its first status after the action."""
    return dataclasses.replace(
        decision,
        navigator_latency_ms=_number(values.get("last_latency_ms")),
        vision_ms=_number(values.get("vision_ms")),
    )


def _number(text: str | None) -> float | None:
    try:
        return None if text in (None, "none") else float(text)
    except ValueError:
        return None


def measure(variant: Variant, args: argparse.Namespace) -> list[Decision]:
    """Start the graph on `variant`, keep it navigating, and time `args.decisions` decisions."""
    env = loopback_env(args.domain_id)
    logs = args.out / "logs"
    slug = "".join(c if c.isalnum() else "_" for c in variant.label)
    values = [
        f"model:={variant.model}",
        f"backend:={variant.backend}",
        "device:=cpu",
        f"decoding:={args.decoding}",
        f"compute_threads:={args.threads}",
    ]
    navigator_args = [arg for value in values for arg in ("-p", value)]
    navigator = node_process(f"navigator-{slug}", "navigator", env, logs, navigator_args)
    controller = node_process(f"motion_controller-{slug}", "motion_controller", env, logs)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=args.domain_id)
    width, height = args.camera
    robot = ScriptedRobot(context, camera_size=(width, height), camera_rate_hz=args.camera_rate)
    probe = Probe(context)
    frames = FrameClock(robot)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(robot)
    executor.add_node(probe)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    stop_clock = threading.Event()

    def tick() -> None:
        while not stop_clock.wait(0.001):
            frames.poll()

    clock = threading.Thread(target=tick, daemon=True)
    clock.start()
    decisions: list[Decision] = []
    try:
        controller.start()
        navigator.start()
        up = wait_for(
            lambda: (
                robot.last_status()[0].get("active") == "true"
                and robot.instruction_pub.get_subscription_count() > 0
            ),
            args.startup_timeout,
        )
        if not up:
            raise RuntimeError(f"the graph did not come up for {variant.label}; logs in {logs}")
        deadline = time.monotonic() + args.timeout
        used, sent = 0, -math.inf
        action_times: list[float] = []
        while len(decisions) < args.decisions + args.warmup and time.monotonic() < deadline:
            # a "stop" decision ends the instruction: send it again (the status lags a little)
            idle = robot.last_status()[0].get("state") in ("idle", "stopped")
            if idle and time.monotonic() - sent > 1.0:
                robot.instruction_pub.publish(String(data=INSTRUCTION))
                sent = time.monotonic()
            for k in range(used, len(probe.query_starts)):
                start = probe.query_starts[k]
                action = next(((t, a) for t, a in probe.actions if t >= start), None)
                if action is None:
                    break
                frame = frames.newest_before(start)
                t_action, text = action
                moving = [c for c in robot.commands_since(t_action) if not c.zero]
                if text != "stop" and not moving and time.monotonic() - t_action < 3.0:
                    break  # its motion may still come
                decisions.append(
                    Decision(
                        variant=variant.label,
                        action=text,
                        frame_wait_s=start - frame if frame is not None else 0.0,
                        model_s=t_action - start,
                        controller_s=moving[0].t - t_action if moving and text != "stop" else None,
                        navigator_latency_ms=None,
                        vision_ms=None,
                    )
                )
                action_times.append(t_action)
                used = k + 1
            time.sleep(0.05)
        time.sleep(0.5)  # the status that follows the last action
        decisions = [
            _with_status(d, robot.first_status_after(t))
            for d, t in zip(decisions, action_times, strict=True)
        ]
    finally:
        stop_clock.set()
        navigator.stop()
        controller.stop()
        robot.close()
        executor.shutdown(timeout_sec=2.0)
        spin.join(timeout=2.0)
        clock.join(timeout=1.0)
        probe.destroy_node()
        robot.destroy_node()
        rclpy.try_shutdown(context=context)
    return decisions[args.warmup :]


def policy_alone_ms(variant: Variant, args: argparse.Namespace) -> float | None:
    """Median `NVILAPolicy.decide` of the graph's query in a process of its own, with nothing
    else running in it: the model's share of a decision, so `navigator_latency_ms` minus this is
    what sharing the navigator process costs. A spawned process, so its threads are its own."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        job = (variant.model, variant.backend, args.decoding, args.threads, args.decisions)
        return pool.apply(_time_policy, job)


def _time_policy(model: str, backend: str, decoding: str, threads: int, repeats: int) -> float:
    """What the navigator asks per decision: the model's frames, all but the current one
    cached under their keys, a new current frame each time, four previous actions."""
    from nvila_nav.policies import PolicyRequest, make_policy

    policy = make_policy("nvila", model, backend, device="cpu", decoding=decoding, threads=threads)
    rng = np.random.default_rng(0)
    side = policy.tile_size
    history = [rng.integers(0, 256, (side, side, 3), np.uint8) for _ in range(policy.num_frames)]
    previous = ("move forward 75 cm", "turn left 15 degrees") * 2
    times = []
    for step in range(repeats + 2):  # two untimed: the first frames fill the feature cache
        keys = [*range(len(history) - 1), len(history) + step]
        request = PolicyRequest(INSTRUCTION, history, keys, previous_actions=previous)
        times.append(policy.decide(request).latency_s)
    policy.close()
    return round(statistics.median(times[2:]) * 1e3, 1)


def summarize(decisions: list[Decision]) -> dict:
    """Medians per part, decisions/s from the median total (motion decisions only)."""

    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    moves = [d for d in decisions if d.total_s is not None]
    total = median([d.total_s for d in moves])
    model = median([d.model_s for d in decisions])
    return {
        "decisions": len(decisions),
        "motion_decisions": len(moves),
        "frame_wait_ms": _ms(median([d.frame_wait_s for d in decisions])),
        "model_ms": _ms(model),
        "controller_ms": _ms(median([d.controller_s for d in moves])),
        "total_ms": _ms(total),
        "navigator_latency_ms": median(
            [d.navigator_latency_ms for d in decisions if d.navigator_latency_ms is not None]
        ),
        "vision_ms": median([d.vision_ms for d in decisions if d.vision_ms is not None]),
        "decisions_per_s": round(1.0 / total, 2) if total else None,
        "model_decisions_per_s": round(1.0 / model, 2) if model else None,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 1)


def write(results: dict[str, list[Decision]], summaries: dict[str, dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "decision_bench.csv", "w", newline="", encoding="utf-8") as f:
        fields = [*asdict(next(iter(d for ds in results.values() for d in ds))).keys(), "total_s"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for decisions in results.values():
            for d in decisions:
                writer.writerow({**asdict(d), "total_s": d.total_s})
    (out / "decision_bench.json").write_text(json.dumps(summaries, indent=1), encoding="utf-8")
    plot(summaries, out / "decision_bench.png")


def plot(summaries: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(summaries)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * len(labels)))
    left = [0.0] * len(labels)
    for part, colour in zip(PARTS, ("tab:gray", "tab:blue", "tab:orange"), strict=True):
        widths = [summaries[label][f"{part}_ms"] or 0.0 for label in labels]
        ax.barh(labels, widths, left=left, color=colour, label=part.replace("_", " "))
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, label in enumerate(labels):
        rate = summaries[label]["decisions_per_s"]
        ax.text(left[y], y, f"  {rate} decisions/s" if rate else "  no motion", va="center")
    ax.set_xlabel("median ms per part (camera frame → first non-zero cmd_vel)")
    ax.set_xlim(0, max(left) * 1.4 if max(left) else 1)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize=8)
    ax.set_title("decision latency through the ROS 2 graph", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nvila-nav-decision-bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--variant",
        type=Variant.parse,
        action="append",
        help="LABEL=MODEL[:BACKEND] (repeatable); default: navila-nano on torch",
    )
    parser.add_argument("--decisions", type=int, default=40, help="timed decisions per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first decisions")
    parser.add_argument("--decoding", default="choose_kind")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="the navigator's compute_threads (0: one per core; on 2 cores 1 is fastest)",
    )
    parser.add_argument(
        "--camera", type=lambda s: tuple(int(v) for v in s.split("x")), default=(640, 480)
    )
    parser.add_argument("--camera-rate", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per variant")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    parser.add_argument("--domain-id", type=int, default=1 + os.getpid() % 100)
    args = parser.parse_args(argv)
    variants = args.variant or [Variant("navila-nano torch fp32", "models/navila-nano")]
    results, summaries = {}, {}
    for variant in variants:
        print(f"[decision-bench] {variant.label}: {variant.model} on {variant.backend}")
        results[variant.label] = measure(variant, args)
        summaries[variant.label] = summarize(results[variant.label])
        summaries[variant.label]["policy_alone_ms"] = policy_alone_ms(variant, args)
        print(f"[decision-bench] {variant.label}: {json.dumps(summaries[variant.label])}")
    if not any(results.values()):
        print("no decision was timed; see the logs under", args.out / "logs", file=sys.stderr)
        return 1
    write(results, summaries, args.out)
    print(f"written {args.out}/decision_bench.{{csv,json,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
