"""A scripted robot for fault injection: camera, odometry and a base, as one rclpy node.

`ScriptedRobot` plays what a real robot's drivers publish, with switches for what goes wrong:
the camera (any size, rate, encoding and reliability; on, off, malformed), odometry (a unicycle
that integrates the commanded twist, reliable or best effort; on or off), and the base, which
records every `cmd_vel` with its arrival time. It also holds the operator's endpoints:
instruction publishers, e-stop publishers of every QoS a real e-stop node uses, a raw `action`
publisher, and collectors for `action_result`, `navigator/status`, the motion controller's
`diagnostics` and the log (`/rosout`).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import Log
from rclpy.node import Node

try:  # Jazzy and later
    from rclpy.event_handler import PublisherEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
BEST_EFFORT = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
E_STOP_PUBLISHERS = {
    "reliable + transient local": LATCHED,
    "default (reliable + volatile)": RELIABLE,
    "best effort": BEST_EFFORT,
}
"""The QoS of the e-stop publishers a robot meets: latched nodes, rclpy/rclcpp defaults, and
joystick-style best-effort publishers."""


@dataclass(frozen=True)
class Command:
    """One cmd_vel as the base received it."""

    t: float
    vx: float
    wz: float

    @property
    def zero(self) -> bool:
        return self.vx == 0.0 and self.wz == 0.0


class ScriptedRobot(Node):
    """See the module docstring. Every recorded time is `time.monotonic()`."""

    def __init__(
        self,
        context: Any = None,
        camera_size: tuple[int, int] = (64, 48),
        camera_rate_hz: float = 15.0,
        odom_rate_hz: float = 50.0,
        camera_qos: QoSProfile = BEST_EFFORT,
        odom_qos: QoSProfile = BEST_EFFORT,
        stamped: bool = False,
        drive_base: bool = True,
    ):
        super().__init__("scripted_robot", context=context)
        # subscriptions that some of these publishers do not match are expected: no warnings
        _quiet = {"event_callbacks": PublisherEventCallbacks(incompatible_qos=lambda _info: None)}
        self._lock = threading.Lock()
        self._x = self._y = self._yaw = 0.0
        self._vx = self._wz = 0.0
        self._odom_step_s = 1.0 / odom_rate_hz
        self.commands: list[Command] = []
        self.results: list[tuple[float, str]] = []
        self.logs: list[tuple[float, int, str, str]] = []
        self.status: list[tuple[float, dict[str, str], str]] = []
        self.controller_diagnostics: tuple[float, dict[str, str]] | None = None
        """The newest motion controller diagnostics: (arrival, values)."""
        self.camera_on = drive_base
        self.odom_on = drive_base
        self.camera_frames = 0
        self._camera_rate_hz = camera_rate_hz
        self._camera_pub = self.create_publisher(Image, "rgb", camera_qos, **_quiet)
        self._odom_pub = self.create_publisher(Odometry, "odom", odom_qos, **_quiet)
        self.set_camera(*camera_size)
        self.instruction_pub = self.create_publisher(String, "instruction", RELIABLE, **_quiet)
        self.instruction_best_effort_pub = self.create_publisher(
            String, "instruction", BEST_EFFORT, **_quiet
        )
        self.action_pub = self.create_publisher(String, "action", RELIABLE)
        self.estop_pubs = {
            name: self.create_publisher(Bool, "e_stop", qos, **_quiet)
            for name, qos in E_STOP_PUBLISHERS.items()
        }
        self.create_subscription(
            TwistStamped if stamped else Twist, "cmd_vel", self._on_cmd_vel, RELIABLE
        )
        self.create_subscription(String, "action_result", self._on_result, RELIABLE)
        self.create_subscription(DiagnosticArray, "navigator/status", self._on_status, RELIABLE)
        self.create_subscription(DiagnosticArray, "diagnostics", self._on_diagnostics, RELIABLE)
        self.create_subscription(
            Log,
            "/rosout",
            self._on_log,
            QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE),
        )
        self.create_timer(self._odom_step_s, self._step)
        self._closing = threading.Event()
        self._camera_thread = threading.Thread(target=self._camera_loop, daemon=True)
        self._camera_thread.start()

    # --- camera ---------------------------------------------------------------------------

    def set_camera(
        self,
        width: int,
        height: int,
        encoding: str = "rgb8",
        rate_hz: float | None = None,
        malformed: bool = False,
    ) -> None:
        """What the camera publishes from now on: a fixed random picture of this size and
        encoding (bytes per pixel from the encoding; `malformed`: a step too small)."""
        channels = {"rgb8": 3, "bgr8": 3, "mono8": 1, "yuv422": 2, "rgba8": 4}.get(encoding, 3)
        rng = np.random.default_rng(0)
        data = rng.integers(0, 256, width * height * channels, dtype=np.uint8).tobytes()
        image = Image()
        image.header.frame_id = "camera"
        image.height, image.width, image.encoding = height, width, encoding
        image.step = width * channels - (1 if malformed else 0)
        image.data = data
        with self._lock:
            self._image = image
            if rate_hz is not None:
                self._camera_rate_hz = rate_hz

    def _camera_loop(self) -> None:
        next_t = time.monotonic()
        while not self._closing.is_set():
            with self._lock:
                period = 1.0 / self._camera_rate_hz
                image = self._image
            if self.camera_on and self.context.ok():
                image.header.stamp = self.get_clock().now().to_msg()
                try:
                    self._camera_pub.publish(image)
                    self.camera_frames += 1
                except Exception:  # shutting down
                    return
            next_t += period
            delay = next_t - time.monotonic()
            if delay < -period:  # behind (a big frame on a busy machine): do not catch up
                next_t = time.monotonic()
            self._closing.wait(max(delay, 0.0))

    # --- base -----------------------------------------------------------------------------

    def _on_cmd_vel(self, msg: Twist | TwistStamped) -> None:
        twist = msg.twist if isinstance(msg, TwistStamped) else msg
        with self._lock:
            self._vx, self._wz = twist.linear.x, twist.angular.z
            self.commands.append(Command(time.monotonic(), twist.linear.x, twist.angular.z))

    def _step(self) -> None:
        with self._lock:
            dt = self._odom_step_s
            self._x += self._vx * dt * math.cos(self._yaw)
            self._y += self._vx * dt * math.sin(self._yaw)
            self._yaw += self._wz * dt
            x, y, yaw = self._x, self._y, self._yaw
        if not self.odom_on:
            return
        odom = Odometry()
        odom.header.stamp = self.get_clock().now().to_msg()
        odom.header.frame_id = "odom"
        odom.child_frame_id = "base_link"
        odom.pose.pose.position.x, odom.pose.pose.position.y = x, y
        odom.pose.pose.orientation.z = math.sin(yaw / 2)
        odom.pose.pose.orientation.w = math.cos(yaw / 2)
        self._odom_pub.publish(odom)

    # --- collectors -----------------------------------------------------------------------

    def _on_result(self, msg: String) -> None:
        with self._lock:
            self.results.append((time.monotonic(), msg.data))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(": motion"):  # the motion controller's
                values = {kv.key: kv.value for kv in status.values}
                with self._lock:
                    self.controller_diagnostics = (time.monotonic(), values)

    def controller_has_odometry(self, since: float = -math.inf) -> bool:
        """Whether the motion controller said, at or after `since`, that it has heard odometry:
        before that it refuses every move (the robot seeing its odom subscription is not
        enough: its side of the discovery can still be pending)."""
        with self._lock:
            latest = self.controller_diagnostics
        return latest is not None and latest[0] >= since and latest[1].get("odom_age_s") != "none"

    def _on_status(self, msg: DiagnosticArray) -> None:
        if not msg.status:
            return
        values = {kv.key: kv.value for kv in msg.status[0].values}
        with self._lock:
            self.status.append((time.monotonic(), values, msg.status[0].message))
            del self.status[:-1000]

    def _on_log(self, msg: Log) -> None:
        with self._lock:
            self.logs.append((time.monotonic(), msg.level, msg.name, msg.msg))
            del self.logs[:-5000]

    # --- queries --------------------------------------------------------------------------

    def odom_subscribers(self) -> int:
        """Subscriptions matched by the odometry publisher."""
        return self._odom_pub.get_subscription_count()

    def commands_since(self, t: float) -> list[Command]:
        with self._lock:
            return [c for c in self.commands if c.t >= t]

    def moving(self, since: float = -math.inf) -> bool:
        """Whether the latest command since `since` is a non-zero one."""
        commands = self.commands_since(since)
        return bool(commands) and not commands[-1].zero

    def first_zero(self, since: float) -> Command | None:
        return next((c for c in self.commands_since(since) if c.zero), None)

    def results_since(self, t: float) -> list[str]:
        with self._lock:
            return [text for at, text in self.results if at >= t]

    def logs_since(self, t: float, node: str = "") -> list[str]:
        with self._lock:
            return [m for at, _, name, m in self.logs if at >= t and (not node or name == node)]

    def last_status(self, since: float = -math.inf) -> tuple[dict[str, str], str]:
        """The newest navigator/status (values, message) that arrived at or after `since`."""
        with self._lock:
            if not self.status or self.status[-1][0] < since:
                return {}, ""
            return self.status[-1][1], self.status[-1][2]

    def first_status_after(self, t: float) -> dict[str, str]:
        """The values of the first navigator/status that arrived after `t` ({} if none)."""
        with self._lock:
            return next((values for at, values, _ in self.status if at > t), {})

    def close(self) -> None:
        self._closing.set()
        self._camera_thread.join(timeout=2.0)
