"""`make faults` / `python -m nvila_nav.faults`: inject the faults a robot meets into the navigation
graph and measure how it reacts.

The graph runs as a robot runs it, one process per node (`nvila-nav-navigator` on the `forward`
policy, which always moves, and `nvila-nav-motion-controller`, both on config/ defaults), or as
`nvila-nav-bringup navigation` for the bringup rows; the simulator's, evaluator's and voice
teleop's console scripts run alone for their signal rows (nvila_nav/faults/shutdown.py). A `ScriptedRobot` in this process plays
camera, odometry and base over DDS on loopback. Each fault is injected while the robot moves;
the row says what was expected, what happened, the measured time, and whether it passed.
The table goes to `<out>/faults.md` and `<out>/faults.json`; `--update-docs` also puts it into
docs/ros_interfaces.md.

Times are measured on `time.monotonic()` in this process: from the injection (or, for camera
loss, from the last frame published) to the first zero twist the base received, and from a
signal to the process's exit. `--tolerance` multiplies every time limit (a loaded machine).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from nvila_nav.faults.robot import RELIABLE, ScriptedRobot

STOPPED_HOLD_S = 0.6
"""A zero twist counts as a stop when no non-zero command follows it for this long (longer than
the gap between two actions)."""
CONTROL_TICK_S = 0.05
"""The motion controller's control period at its default 20 Hz."""
DOCS_BEGIN = "<!-- fault table: begin -->"
DOCS_END = "<!-- fault table: end -->"
NONSENSE_ACTIONS = (
    "-75 cm",
    "nan",
    "move forward 0 cm",
    "move forward -75 cm",
    "turn left -45 degrees",
    "move forward nan cm",
    "Do not move forward 75 cm",
)


@dataclass
class Row:
    """One fault: what was injected, what must happen, what happened, when, and the verdict
    (None: informational, nothing this package can do)."""

    fault: str
    expected: str
    reaction: str
    time_s: float | None
    passed: bool | None

    def markdown(self) -> str:
        time_text = "" if self.time_s is None else f"{self.time_s:.3f}"
        verdict = {True: "pass", False: "**FAIL**", None: "n/a"}[self.passed]
        cells = (self.fault, self.expected, self.reaction, time_text, verdict)
        return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


class NodeProcess:
    """One node (or the bringup) as a child process, its output in a log file.

    The log starts empty (what a run reads from it is this run's); restarts append to it."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.command = command
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("")
        self.process: subprocess.Popen | None = None

    def start(self, stdin: Any = None) -> None:
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            self.command, env=self.env, stdin=stdin, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else -1

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> float:
        self.process.send_signal(sig)
        return time.monotonic()

    def wait_exit(self, since: float, timeout: float = 10.0) -> tuple[int | None, float | None]:
        """(exit status, seconds from `since` to the exit); (None, None) if still running."""
        deadline = since + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                return code, time.monotonic() - since
            time.sleep(0.005)
        return None, None

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.pid).memory_info().rss / 2**20


def loopback_env(domain_id: int, **extra: str) -> dict[str, str]:
    """This process's environment for a graph on one DDS domain that stays on this machine."""
    return {
        **os.environ,
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def node_process(
    name: str, node: str, env: dict[str, str], logs: Path, extra: Sequence[str] = ()
) -> NodeProcess:
    """`nvila_nav.nodes.<node>` on its config/<node>.yaml parameters, `extra` ROS args after."""
    from nvila_nav.nodes.bringup import config_dir

    params = config_dir() / f"{node}.yaml"
    command = [sys.executable, "-m", f"nvila_nav.nodes.{node}", "--ros-args", "--params-file"]
    return NodeProcess(name, [*command, str(params), *extra], env, logs)


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class FaultSuite:
    """The graph, the robot and the rows; `run()` injects every fault in turn."""

    def __init__(self, out: Path, domain_id: int, tolerance: float = 1.0, quick: bool = False):
        self.out = out
        self.tolerance = tolerance
        self.quick = quick
        self.rows: list[Row] = []
        self.domain_id = domain_id
        out.mkdir(parents=True, exist_ok=True)
        self.env = loopback_env(domain_id)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.robot = ScriptedRobot(self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.robot)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()
        self.resume_client = self.robot.create_client(Trigger, "motion_controller/resume")
        self.reset_client = self.robot.create_client(Trigger, "navigator/reset")
        self.navigator = node_process(
            "navigator", "navigator", self.env, self.out, ["-p", "policy:=forward"]
        )
        self.controller = node_process("motion_controller", "motion_controller", self.env, self.out)

    # --- helpers --------------------------------------------------------------------------

    def limit(self, seconds: float) -> float:
        return seconds * self.tolerance

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[row.passed]
        time_text = "" if row.time_s is None else f" ({row.time_s:.3f} s)"
        print(f"[{verdict}] {row.fault}: {row.reaction}{time_text}", flush=True)
        return row

    def start_graph(self) -> None:
        started = time.monotonic()
        for process in (self.controller, self.navigator):
            if not process.alive():
                process.start()
        ok = wait_for(
            lambda: (
                self.robot.instruction_pub.get_subscription_count() > 0
                and self.robot.action_pub.get_subscription_count() > 0
                # navigator and controller hear odometry: a move needs it to start
                and self.robot.odom_subscribers() >= 2
                and self.robot.controller_has_odometry(started)
                and self.robot.last_status(started)[0].get("active") == "true"
            ),
            90.0,
        )
        if not ok:
            raise RuntimeError(f"the graph did not come up; logs in {self.out}")

    def call(self, client: Any, timeout: float = 5.0) -> Trigger.Response | None:
        if not client.wait_for_service(timeout_sec=timeout):
            return None
        future = client.call_async(Trigger.Request())
        wait_for(future.done, timeout)
        return future.result() if future.done() else None

    def release_estop(self) -> None:
        for publisher in self.robot.estop_pubs.values():
            publisher.publish(Bool(data=False))
        time.sleep(0.2)
        self.call(self.resume_client, timeout=2.0)

    def drive(self, instruction: str = "walk forward down the hallway") -> bool:
        """Make the robot move (a new instruction); True once a non-zero command arrives."""
        t0 = time.monotonic()
        self.robot.instruction_pub.publish(String(data=instruction))
        return wait_for(lambda: self.robot.moving(t0), 20.0)

    def stays_stopped(self, since: float, seconds: float) -> bool:
        time.sleep(seconds)
        return all(c.zero for c in self.robot.commands_since(since))

    def zero_after(
        self, t: float, timeout: float = 5.0, hold_s: float = STOPPED_HOLD_S
    ) -> float | None:
        """Seconds from `t` to the zero twist that stopped the robot: the first zero command
        after `t` followed only by zero commands for `hold_s` (the controller also sends one
        zero between two actions, which is not a stop). None if the robot did not stop."""
        deadline = time.monotonic() + timeout + hold_s
        while True:
            commands = self.robot.commands_since(t)
            for i, command in enumerate(commands):
                if not command.zero:
                    continue
                if any(not c.zero for c in commands[i + 1 :] if c.t <= command.t + hold_s):
                    continue
                if time.monotonic() >= command.t + hold_s:
                    return command.t - t
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    # --- faults ---------------------------------------------------------------------------

    def estops(self) -> None:
        for name, publisher in self.robot.estop_pubs.items():
            if not self.drive():
                self.add(
                    Row(f"e-stop from a {name} publisher", "", "robot did not move", None, False)
                )
                continue
            t = time.monotonic()
            publisher.publish(Bool(data=True))
            latency = self.zero_after(t)
            stopped = latency is not None and self.stays_stopped(t + latency, 1.0)
            self.add(
                Row(
                    f"e-stop (true) from a {name} publisher, moving",
                    f"zero twist within one control tick ({CONTROL_TICK_S * 1000:.0f} ms)",
                    "zero twist, stays stopped" if stopped else "not stopped",
                    latency,
                    stopped and latency <= self.limit(CONTROL_TICK_S),
                )
            )
            t = time.monotonic()
            publisher.publish(Bool(data=False))
            still = self.stays_stopped(t, 2.0)
            self.add(
                Row(
                    f"e-stop released ({name}), no resume",
                    "no motion until an explicit resume",
                    "no motion for 2 s" if still else "moved again on its own",
                    None,
                    still,
                )
            )
            t = time.monotonic()
            answer = self.call(self.resume_client)
            moved = wait_for(lambda t=t: self.robot.moving(t), 10.0)
            first = next((c for c in self.robot.commands_since(t) if not c.zero), None)
            self.add(
                Row(
                    f"motion_controller/resume after the {name} e-stop",
                    "the paused instruction continues",
                    ("moving again" if moved else "no motion")
                    + ("" if answer is not None else "; no motion_controller/resume service"),
                    None if first is None else first.t - t,
                    moved,
                )
            )

    def camera_loss(self) -> None:
        self.drive()
        self.robot.camera_on = False
        last = time.monotonic()
        latency = self.zero_after(last)
        self.add(
            Row(
                "camera stops while moving",
                "zero twist within 0.5 s of the last frame",
                "navigator published stop" if latency is not None else "kept moving",
                latency,
                latency is not None and latency <= self.limit(0.5),
            )
        )
        self.robot.camera_on = True
        t = time.monotonic()
        moved = wait_for(lambda: self.robot.moving(t), 10.0)
        self.add(
            Row(
                "camera back within frame_timeout_s",
                "the instruction continues",
                "moving again" if moved else "no motion",
                None,
                moved,
            )
        )

    def odom_loss(self) -> None:
        self.drive()
        self.robot.odom_on = False
        t = time.monotonic()
        latency = self.zero_after(t)
        self.add(
            Row(
                "odometry stops while moving",
                "zero twist (odom_timeout_s 0.5 + one tick)",
                "controller watchdog" if latency is not None else "kept moving",
                latency,
                latency is not None and latency <= self.limit(0.5 + 2 * CONTROL_TICK_S),
            )
        )
        self.robot.odom_on = True
        time.sleep(0.5)

    def bad_images(self) -> None:
        for label, encoding, malformed, log_text in (
            ("unsupported encoding yuv422", "yuv422", False, "unsupported encoding 'yuv422'"),
            ("malformed images (step < width x 3)", "rgb8", True, "dropped a malformed image"),
        ):
            self.drive()
            t = time.monotonic()
            self.robot.set_camera(64, 48, encoding, malformed=malformed)
            latency = self.zero_after(t)
            named = wait_for(
                lambda t=t, text=log_text: any(
                    text in m for m in self.robot.logs_since(t, "navigator")
                ),
                5.0,
            )
            self.add(
                Row(
                    f"{label} while moving",
                    "dropped and named in the log; zero twist within 0.5 s",
                    ("named" if named else "not named")
                    + ("; stopped" if latency is not None else "; kept moving"),
                    latency,
                    named and latency is not None and latency <= self.limit(0.5),
                )
            )
            self.robot.set_camera(64, 48)
            time.sleep(0.5)
        # A camera that only ever sends an unsupported encoding: the end names it.
        self.robot.set_camera(64, 48, "yuv422")
        t = time.monotonic()
        self.robot.instruction_pub.publish(String(data="walk to the kitchen"))
        named = wait_for(
            lambda: any(
                "unsupported encoding 'yuv422'" in m and "stop" in m
                for m in self.robot.logs_since(t, "navigator")
            ),
            15.0,
        )
        self.add(
            Row(
                "instruction with only yuv422 frames",
                "ends naming the encoding (not 'camera down')",
                "ended naming unsupported encoding 'yuv422'" if named else "not named",
                None,
                named,
            )
        )
        self.robot.set_camera(64, 48)

    def huge_images(self, seconds: float) -> None:
        self.drive()
        time.sleep(1.0)
        before = self.navigator.rss_mb()
        frames0 = self.robot.camera_frames
        self.robot.set_camera(3840, 2160, rate_hz=30.0)
        t = time.monotonic()
        peak = before
        while time.monotonic() - t < seconds:
            peak = max(peak, self.navigator.rss_mb())
            time.sleep(0.25)
        rate = (self.robot.camera_frames - frames0) / (time.monotonic() - t)
        moving = self.robot.moving(t)
        self.robot.set_camera(64, 48, rate_hz=15.0)
        self.call(self.reset_client)
        time.sleep(2.0)
        after = self.navigator.rss_mb()
        growth = peak - before
        self.add(
            Row(
                f"4K camera (3840x2160 rgb8, {rate:.0f} Hz sent) for {seconds:.0f} s",
                "navigator RSS bounded (< +250 MB), frames downscaled on arrival",
                f"RSS {before:.0f} MB -> peak {peak:.0f} MB -> {after:.0f} MB after "
                f"reset; {'still moving' if moving else 'not moving'}",
                None,
                growth < 250,
            )
        )

    def qos_rows(self) -> None:
        t = time.monotonic()
        self.robot.instruction_pub.publish(String(data="stop"))
        time.sleep(0.5)
        t = time.monotonic()
        self.robot.instruction_best_effort_pub.publish(String(data="go down the hall"))
        moved = wait_for(lambda: self.robot.moving(t), 10.0)
        first = next((c for c in self.robot.commands_since(t) if not c.zero), None)
        self.add(
            Row(
                "instruction from a best-effort publisher",
                "accepted",
                "robot moves" if moved else "ignored",
                None if first is None else first.t - t,
                moved,
            )
        )
        self.add(
            Row(
                "camera and odometry from best-effort publishers",
                "heard (sensor-data QoS)",
                "every row above ran on them",
                None,
                True,
            )
        )
        # another participant: one process cannot hold two types on one topic
        foreign_context = rclpy.Context()
        rclpy.init(context=foreign_context, domain_id=self.domain_id)
        foreign = rclpy.create_node("compressed_camera", context=foreign_context)
        wrong = foreign.create_publisher(CompressedImage, "rgb", RELIABLE)
        t = time.monotonic()
        wrong.publish(CompressedImage(format="jpeg"))
        named = wait_for(
            lambda: any(
                "CompressedImage" in m and "/rgb" in m
                for m in self.robot.logs_since(t, "navigator")
            ),
            15.0,
        )
        found = [m for m in self.robot.logs_since(t, "navigator") if "CompressedImage" in m]
        self.add(
            Row(
                "a sensor_msgs/CompressedImage publisher on rgb (type mismatch)",
                "warned, naming the topic and the publisher; repeated",
                (found[0][:140] + "...") if found else "not reported",
                None,
                named,
            )
        )
        foreign.destroy_node()
        rclpy.try_shutdown(context=foreign_context)

    def instructions(self) -> None:
        self.drive()
        t = time.monotonic()
        huge = "go " * 34134  # about 100 KB
        self.robot.instruction_pub.publish(String(data=huge))
        rejected = wait_for(
            lambda: any("rejected an instruction" in m for m in self.robot.logs_since(t)), 5.0
        )
        line = next((m for m in self.robot.logs_since(t) if "rejected an instruction" in m), "")
        self.add(
            Row(
                f"{len(huge) // 1000} KB instruction",
                "rejected with a short logged reason; the running one goes on",
                f"rejected, log line of {len(line)} characters"
                + ("; still moving" if self.robot.moving(t) else ""),
                None,
                rejected and len(line) < 500,
            )
        )
        t = time.monotonic()
        self.robot.instruction_pub.publish(String(data="stop"))
        wait_for(lambda: self.robot.first_zero(t) is not None, 5.0)
        t = time.monotonic()
        moved = self.drive("turn around and go to the door")
        first = next((c for c in self.robot.commands_since(t) if not c.zero), None)
        self.add(
            Row(
                "next instruction after the huge one",
                "not blocked",
                "robot moves" if moved else "blocked",
                None if first is None else first.t - t,
                moved and first is not None and first.t - t < self.limit(2.0),
            )
        )
        for label, text in (
            ("empty instruction", ""),
            ("whitespace / control characters only", " \t\n\x07 "),
        ):
            t = time.monotonic()
            self.robot.instruction_pub.publish(String(data=text))
            time.sleep(0.5)
            ignored = self.robot.moving(t) or not self.robot.commands_since(t)
            logged = any("empty instruction" in m for m in self.robot.logs_since(t, "navigator"))
            self.add(
                Row(
                    label,
                    "ignored with a log line; the running one goes on",
                    ("ignored" if ignored else "stopped the robot")
                    + ("; logged" if logged else ""),
                    None,
                    ignored and logged,
                )
            )
        t = time.monotonic()
        self.robot.instruction_pub.publish(String(data="\x00\x01 \u2603\u2603 ###"))
        time.sleep(1.0)
        alive = self.navigator.alive()
        self.add(
            Row(
                "garbage text (NUL, symbols)",
                "taken as text, the policy decides; no crash",
                "navigator alive" if alive else "navigator died",
                None,
                alive,
            )
        )

    def nonsense_actions(self) -> None:
        t = time.monotonic()
        self.robot.instruction_pub.publish(String(data="stop"))
        wait_for(lambda: self.robot.first_zero(t) is not None, 5.0)
        time.sleep(0.5)
        for text in NONSENSE_ACTIONS:
            t = time.monotonic()
            self.robot.action_pub.publish(String(data=text))
            answered = wait_for(lambda t=t: self.robot.results_since(t), 3.0)
            time.sleep(0.5)
            result = (self.robot.results_since(t) or ["no action_result"])[0]
            moved = any(not c.zero for c in self.robot.commands_since(t))
            self.add(
                Row(
                    f'action "{text}"',
                    "rejected with a reason on action_result; no motion",
                    f"{result[:90]}" + ("; MOVED" if moved else "; no motion"),
                    None,
                    answered and result.startswith("rejected") and not moved,
                )
            )

    def process_loss(self) -> None:
        self.drive()
        t = self.navigator.signal(signal.SIGKILL)
        latency = self.zero_after(t)
        self.add(
            Row(
                "navigator killed (SIGKILL) while moving",
                "zero twist (controller's action-stream watchdog, 0.5 s)",
                "controller watchdog" if latency is not None else "kept moving",
                latency,
                latency is not None and latency <= self.limit(0.5 + 0.2 + 2 * CONTROL_TICK_S),
            )
        )
        self.navigator.process.wait()
        self.start_graph()
        self.drive()
        wait_for(lambda: self.robot.moving(), 5.0)
        t = self.controller.signal(signal.SIGKILL)
        time.sleep(1.0)
        last = self.robot.commands_since(0.0)[-1]
        self.add(
            Row(
                "motion controller killed (SIGKILL) while moving",
                "nothing can publish: the base must apply its own command timeout",
                f"last cmd_vel stays (vx {last.vx:.2f} m/s, wz {last.wz:.2f} rad/s)",
                None,
                None,
            )
        )
        self.controller.process.wait()
        self.start_graph()

    def signals(self) -> None:
        for process in (self.navigator, self.controller):
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.start_graph()
                if not self.drive():
                    self.add(Row(f"{sig.name} to {process.name}", "", "did not move", None, False))
                    continue
                t = process.signal(sig)
                code, exit_s = process.wait_exit(t, 10.0)
                latency = self.zero_after(t)
                ok = code == 0 and exit_s <= self.limit(2.0) and latency is not None
                self.add(
                    Row(
                        f"{sig.name} to {process.name} while moving",
                        "zero twist; exit within 2 s",
                        f"zero twist after {latency:.3f} s, exit status {code} after {exit_s:.2f} s"
                        if ok
                        else f"zero twist: {latency}, exit: {code} after {exit_s}",
                        exit_s,
                        ok and latency <= self.limit(0.5),
                    )
                )
                if code is None:
                    process.process.kill()
                    process.process.wait()
        self.start_graph()

    def bringup_signals(self) -> None:
        from nvila_nav.faults.shutdown import ShutdownBench

        self.navigator.stop()
        self.controller.stop()
        bench = ShutdownBench("navigation", self.out, self.domain_id, robot=self.robot)
        for sig in (signal.SIGINT, signal.SIGTERM):
            trial = bench.trial(sig, 0)
            self.add(
                Row(
                    f"{sig.name} to nvila-nav-bringup navigation while moving",
                    "zero twist; exit within 2 s",
                    f"zero twist after {trial.zero_s:.3f} s, exit status {trial.exit_code} after "
                    f"{trial.exit_s:.2f} s"
                    if trial.ok_within(self.limit(2.0))
                    else f"moved {trial.moved}, zero twist {trial.zero_s}, exit "
                    f"{trial.exit_code} after {trial.exit_s}",
                    trial.exit_s,
                    trial.ok_within(self.limit(2.0)),
                )
            )
        bench.close()

    def node_script_signals(self) -> None:
        """The console scripts of the nodes outside the navigation graph, each on its own (the
        navigator's and the controller's are the rows above)."""
        from nvila_nav.faults.shutdown import ShutdownBench

        for target in ("nvila-nav-sim", "nvila-nav-evaluator", "nvila-nav-voice-teleop"):
            bench = ShutdownBench(target, self.out, self.domain_id, robot=self.robot)
            for index, sig in enumerate((signal.SIGINT, signal.SIGTERM)):
                trial = bench.trial(sig, index)
                self.add(
                    Row(
                        f"{sig.name} to {target} (alone) while it works",
                        "exit status 0 within 2 s, no traceback",
                        f"exit status {trial.exit_code} after {trial.exit_s:.2f} s"
                        if trial.ok_within(self.limit(2.0))
                        else f"worked {trial.moved}, exit {trial.exit_code} after "
                        f"{trial.exit_s}, traceback: {trial.traceback or 'none'}",
                        trial.exit_s,
                        trial.ok_within(self.limit(2.0)),
                    )
                )
            bench.close()

    # --- run ------------------------------------------------------------------------------

    def run(self) -> list[Row]:
        started = time.monotonic()
        try:
            self.start_graph()
            self.estops()
            self.release_estop()
            self.camera_loss()
            self.odom_loss()
            self.bad_images()
            self.qos_rows()
            self.instructions()
            self.nonsense_actions()
            if not self.quick:
                self.huge_images(20.0)
            self.process_loss()
            self.signals()
            self.bringup_signals()
            self.node_script_signals()
        finally:
            self.close()
        print(f"fault suite: {len(self.rows)} rows in {time.monotonic() - started:.0f} s")
        return self.rows

    def close(self) -> None:
        self.navigator.stop()
        self.controller.stop()
        self.robot.close()
        self.executor.shutdown(timeout_sec=2.0)
        self._spin.join(timeout=2.0)
        self.robot.destroy_node()
        rclpy.try_shutdown(context=self.context)


def table(rows: list[Row]) -> str:
    lines = [
        "| fault | expected | reaction | time (s) | verdict |",
        "| --- | --- | --- | ---: | --- |",
        *(row.markdown() for row in rows),
    ]
    return "\n".join(lines) + "\n"


def write(rows: list[Row], out: Path, note: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "faults.md"
    path.write_text(f"{note}\n\n{table(rows)}")
    (out / "faults.json").write_text(json.dumps([asdict(row) for row in rows], indent=2))
    return path


def update_docs(rows: list[Row], docs: Path, note: str) -> None:
    text = docs.read_text()
    if DOCS_BEGIN not in text or DOCS_END not in text:
        raise ValueError(f"{docs} has no {DOCS_BEGIN} ... {DOCS_END} section")
    head, rest = text.split(DOCS_BEGIN, 1)
    _, tail = rest.split(DOCS_END, 1)
    docs.write_text(f"{head}{DOCS_BEGIN}\n{note}\n\n{table(rows)}{DOCS_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nvila_nav.faults",
        description="Inject faults into the navigation graph (navigator on the forward policy, "
        "motion controller, a scripted robot; loopback DDS) and write the measured reactions.",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/faults"))
    parser.add_argument("--domain-id", type=int, default=1 + os.getpid() % 100)
    parser.add_argument(
        "--tolerance", type=float, default=1.0, help="factor on every time limit (busy machine)"
    )
    parser.add_argument("--quick", action="store_true", help="skip the 4K camera row")
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="also write the table into docs/ros_interfaces.md",
    )
    args = parser.parse_args(argv)
    if not math.isfinite(args.tolerance) or args.tolerance < 1:
        parser.error("--tolerance must be >= 1")
    suite = FaultSuite(args.out, args.domain_id, args.tolerance, args.quick)
    rows = suite.run()
    failed = [row for row in rows if row.passed is False]
    note = (
        f"Measured {time.strftime('%Y-%m-%d')} by `make faults` on {os.cpu_count()} CPU cores "
        f"(tolerance x{args.tolerance:g}): {sum(r.passed is True for r in rows)} pass, "
        f"{len(failed)} fail, {sum(r.passed is None for r in rows)} informational; load "
        f"average {os.getloadavg()[0]:.1f} at the end (other work on the same cores slows "
        "DDS delivery and the camera)."
    )
    path = write(rows, args.out, note)
    print(f"table: {path}")
    if args.update_docs:
        update_docs(rows, Path(__file__).resolve().parents[2] / "docs" / "ros_interfaces.md", note)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
