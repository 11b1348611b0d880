"""motion_controller node: executes the NaVILA actions on `action` against `odom`, drives `cmd_vel`.

A thin ROS 2 wrapper over `MotionController` (nvila_nav/controller.py); topics, types and QoS
follow docs/ros_interfaces.md. Behaviour decisions:

- `cmd_vel` goes out at `control_rate_hz` while an action executes. In every other state a zero
  twist is published once on the transition (succeeded, stop, e-stop, watchdog, ...) and then
  repeated at `idle_rate_hz` (0: only on transitions), so a base with its own command timeout
  stays stopped and a late subscriber still learns that the command is zero.
- `e_stop` true is applied in its callback and a control tick runs at once, so the zero twist
  goes out before the next timer tick. It stays latched until false and never resumes motion.
  "stop", refused and rejected actions also tick at once.
- Every message on `action` gets exactly one `action_result` "<state> <action text>" (canonical
  text of the parsed action): succeeded / timed_out / watchdog / estopped when it ends,
  "cancelled" when a new message preempts it, "blocked" when a forward move made no progress for
  `blocked_timeout_s` (the robot pushes an obstacle: an executed no-op, VLN-CE semantics), "estopped" or "watchdog" when it is refused (e-stop
  latched, no finite odometry), "rejected <text as received>" when it cannot be parsed. Rejected
  text does not move the robot, and it cancels a running action, since the sender meant to
  replace it.
- `navigator/status` is the action-stream heartbeat; with `action_stream_timeout_s` 0 a silent
  navigator no longer stops the robot.
- A lock serialises the controller between the timer and the subscriptions, so the node is safe
  in any executor. Callbacks log and drop whatever fails instead of raising into the executor.
- A zero twist is published on `destroy_node()` and on Ctrl-C; `main` disables rclpy's SIGINT
  handler because it would shut the context down before that zero could be published.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Bool, String

from nvila_nav.actions import parse_action
from nvila_nav.controller import (
    ControllerLimits,
    ControllerState,
    ControlOutput,
    MotionController,
    Pose2D,
)
from nvila_nav.nodes.callbacks import logged, quaternion_yaw
from nvila_nav.nodes.parameters import ParameterSpec, declare_all

_DEFAULT_LIMITS = ControllerLimits()
_RESTART = "Read at start-up."

PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "control_rate_hz",
        20.0,
        f"Control loop rate, and cmd_vel rate while an action executes [Hz]. {_RESTART}",
        read_only=True,
        min_value=1.0,
        max_value=1000.0,
    ),
    ParameterSpec(
        "idle_rate_hz",
        2.0,
        "Rate at which the zero twist is repeated while no action executes [Hz]; 0 publishes it "
        f"only on each transition to a stopped state. {_RESTART}",
        read_only=True,
        min_value=0.0,
        max_value=1000.0,
    ),
    ParameterSpec(
        "diagnostics_rate_hz",
        1.0,
        f"Rate of the status on diagnostics [Hz]. {_RESTART}",
        read_only=True,
        min_value=0.1,
        max_value=50.0,
    ),
    ParameterSpec(
        "use_stamped",
        False,
        "Publish geometry_msgs/TwistStamped instead of Twist on cmd_vel (Nav2 "
        f"enable_stamped_cmd_vel, ros2_control); Isaac Sim takes Twist. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "cmd_vel_frame_id",
        "base_link",
        f"header.frame_id of TwistStamped commands. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "max_linear_speed",
        _DEFAULT_LIMITS.max_linear_speed,
        f"Forward cruise speed [m/s]; NaVILA's fixed 0.5 m/s. {_RESTART}",
        read_only=True,
        min_value=0.0,
    ),
    ParameterSpec(
        "max_angular_speed",
        _DEFAULT_LIMITS.max_angular_speed,
        f"Turn cruise speed [rad/s]; NaVILA's fixed pi/6. {_RESTART}",
        read_only=True,
        min_value=0.0,
    ),
    ParameterSpec(
        "max_linear_accel",
        _DEFAULT_LIMITS.max_linear_accel,
        f"Linear acceleration and planned braking [m/s^2]; stops are immediate. {_RESTART}",
        read_only=True,
        min_value=0.0,
    ),
    ParameterSpec(
        "max_angular_accel",
        _DEFAULT_LIMITS.max_angular_accel,
        f"Angular acceleration and planned braking [rad/s^2]; stops are immediate. {_RESTART}",
        read_only=True,
        min_value=0.0,
    ),
    ParameterSpec(
        "distance_tolerance",
        _DEFAULT_LIMITS.distance_tolerance,
        f"A forward action succeeds this close to its goal [m]. {_RESTART}",
        read_only=True,
        min_value=0.0,
    ),
    ParameterSpec(
        "angle_tolerance",
        _DEFAULT_LIMITS.angle_tolerance,
        f"A turn succeeds this close to its goal heading [rad]. {_RESTART}",
        read_only=True,
        min_value=0.0,
    ),
    ParameterSpec(
        "timeout_factor",
        _DEFAULT_LIMITS.timeout_factor,
        "An action times out after its full-speed duration times this factor plus "
        f"timeout_margin_s. {_RESTART}",
        read_only=True,
        min_value=1.0,
    ),
    ParameterSpec(
        "timeout_margin_s",
        _DEFAULT_LIMITS.timeout_margin_s,
        f"Time added to every action's timeout [s]. {_RESTART}",
        read_only=True,
        min_value=0.0,
    ),
    ParameterSpec(
        "odom_timeout_s",
        _DEFAULT_LIMITS.odom_timeout_s,
        f"Odometry older than this stops a running action (state watchdog) [s]. {_RESTART}",
        read_only=True,
        min_value=0.0,
    ),
    ParameterSpec(
        "action_stream_timeout_s",
        _DEFAULT_LIMITS.action_stream_timeout_s,
        "No navigator/status for this long stops a running action (state watchdog) [s]; "
        f"0 disables this watchdog. {_RESTART}",
        read_only=True,
        min_value=0.0,
    ),
    ParameterSpec(
        "blocked_timeout_s",
        _DEFAULT_LIMITS.blocked_timeout_s,
        "A forward move that gains less than blocked_progress_m in this long ends at once with "
        "result blocked (pushing a wall: executed as a no-op, VLN-CE semantics) [s]; 0 disables "
        f"the check (such a move then times out). {_RESTART}",
        read_only=True,
        min_value=0.0,
    ),
    ParameterSpec(
        "blocked_progress_m",
        _DEFAULT_LIMITS.blocked_progress_m,
        f"Progress that resets the blocked_timeout_s timer [m]. {_RESTART}",
        read_only=True,
        min_value=0.001,
    ),
)

_LIMIT_NAMES = tuple(field.name for field in dataclasses.fields(ControllerLimits))

# The contract's word for each final state; STOPPED is what the controller calls a cancel.
_RESULT_WORDS = {ControllerState.STOPPED: "cancelled"}

_LEVELS = {
    ControllerState.WATCHDOG: DiagnosticStatus.ERROR,
    ControllerState.ESTOPPED: DiagnosticStatus.WARN,
    ControllerState.TIMED_OUT: DiagnosticStatus.WARN,
    ControllerState.BLOCKED: DiagnosticStatus.WARN,
}


def _result_word(state: ControllerState) -> str:
    return _RESULT_WORDS.get(state, state.value)


class MotionControllerNode(Node):
    """Runs `MotionController` at a fixed rate on odometry and publishes its twist on cmd_vel."""

    def __init__(self, node_name: str = "motion_controller", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        params = declare_all(self, PARAMETERS)
        limits = {name: params[name] for name in _LIMIT_NAMES}
        self._stream_watchdog = limits["action_stream_timeout_s"] > 0
        if not self._stream_watchdog:
            # The controller needs a positive limit; one no silence can reach disables it.
            limits["action_stream_timeout_s"] = sys.float_info.max
        if limits["blocked_timeout_s"] <= 0:
            limits["blocked_timeout_s"] = sys.float_info.max
        self._odom_timeout_s = limits["odom_timeout_s"]
        self._controller = MotionController(ControllerLimits(**limits))
        self._use_stamped = params["use_stamped"]
        self._frame_id = params["cmd_vel_frame_id"]
        control_rate_hz = params["control_rate_hz"]
        idle_rate_hz = params["idle_rate_hz"]
        self._zero_every_ticks = (
            max(1, round(control_rate_hz / idle_rate_hz)) if idle_rate_hz > 0 else 0
        )

        self._lock = threading.Lock()
        self._pose: Pose2D | None = None
        self._odom_stamp_s: float | None = None
        self._estop = False
        self._last_output: ControlOutput | None = None
        self._idle_ticks = 0

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._cmd_pub = self.create_publisher(
            TwistStamped if self._use_stamped else Twist, "cmd_vel", reliable
        )
        self._result_pub = self.create_publisher(String, "action_result", reliable)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", reliable)
        self.create_subscription(String, "action", self._on_action, reliable)
        self.create_subscription(Odometry, "odom", self._on_odom, reliable)
        self.create_subscription(Bool, "e_stop", self._on_estop, latched)
        self.create_subscription(
            DiagnosticArray, "navigator/status", self._on_navigator_status, reliable
        )
        self.create_timer(1.0 / control_rate_hz, self._on_control_timer)
        self.create_timer(1.0 / params["diagnostics_rate_hz"], self._on_diagnostics_timer)
        self.get_logger().info(
            f"motion controller ready: {control_rate_hz:g} Hz, "
            f"{'TwistStamped' if self._use_stamped else 'Twist'} on cmd_vel, "
            f"action-stream watchdog {'on' if self._stream_watchdog else 'off'}"
        )

    def destroy_node(self) -> None:
        """Command zero before going away, so the base is not left on the last command."""
        with self._lock:
            if self.context.ok():
                self._publish_twist(0.0, 0.0)
        super().destroy_node()

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    @logged
    def _on_action(self, msg: String) -> None:
        text = msg.data.strip()
        action = parse_action(text)
        with self._lock:
            if action is None:
                self.get_logger().warning(f"rejected unparseable action {text!r}; not moving")
                self._controller.cancel()
                self._tick()
                self._publish_result("rejected", text)
                return
            if self._controller.state is ControllerState.EXECUTING:
                self._publish_result("cancelled", self._controller.action.to_text())
            if not self._controller.start(action, self._pose, self._now_s()):
                self._publish_result(_result_word(self._controller.state), action.to_text())
            if self._controller.state is not ControllerState.EXECUTING:
                self._tick()

    @logged
    def _on_odom(self, msg: Odometry) -> None:
        position = msg.pose.pose.position
        pose = Pose2D(position.x, position.y, quaternion_yaw(msg.pose.pose.orientation))
        stamp = msg.header.stamp
        stamp_s = stamp.sec + stamp.nanosec * 1e-9
        with self._lock:
            self._pose = pose
            self._odom_stamp_s = stamp_s if stamp_s > 0 else self._now_s()

    @logged
    def _on_estop(self, msg: Bool) -> None:
        active = bool(msg.data)
        with self._lock:
            changed = active != self._estop
            self._estop = active
            self._controller.set_estop(active)
            self._tick()
        if changed and active:
            self.get_logger().warning("e-stop engaged")
        elif changed:
            self.get_logger().info("e-stop released")

    @logged
    def _on_navigator_status(self, _msg: DiagnosticArray) -> None:
        with self._lock:
            self._controller.heartbeat(self._now_s())

    @logged
    def _on_control_timer(self) -> None:
        with self._lock:
            self._tick()

    def _tick(self) -> None:
        """One controller update and its outputs; the caller holds the lock.

        The twist goes out before the result, so whoever reacts to the result finds the robot
        already commanded to stop.
        """
        output = self._controller.update(self._pose, self._odom_stamp_s, self._now_s())
        previous = self._last_output
        self._last_output = output
        self._idle_ticks += 1
        if (
            output.state is ControllerState.EXECUTING
            or output.action_finished
            or previous is None
            or previous.state is not output.state
            or (self._zero_every_ticks and self._idle_ticks >= self._zero_every_ticks)
        ):
            self._publish_twist(output.vx, output.wz)
        if output.action_finished:
            self._publish_result(
                _result_word(output.state), self._controller.action.to_text(), output.reason
            )

    def _publish_twist(self, vx: float, wz: float) -> None:
        self._idle_ticks = 0
        twist = Twist()
        twist.linear.x = vx
        twist.angular.z = wz
        if not self._use_stamped:
            self._cmd_pub.publish(twist)
            return
        stamped = TwistStamped()
        stamped.header.stamp = self.get_clock().now().to_msg()
        stamped.header.frame_id = self._frame_id
        stamped.twist = twist
        self._cmd_pub.publish(stamped)

    def _publish_result(self, word: str, text: str, reason: str = "") -> None:
        result = f"{word} {text}"
        self._result_pub.publish(String(data=result))
        # rclpy ties one severity to each logging call site, hence two calls.
        message = f"action_result: {result}" + (f" ({reason})" if reason else "")
        if word == "succeeded":
            self.get_logger().info(message)
        else:
            self.get_logger().warning(message)

    @logged
    def _on_diagnostics_timer(self) -> None:
        with self._lock:
            now_s = self._now_s()
            output = self._last_output
            state = self._controller.state
            action = self._controller.action
            odom_age_s = None if self._odom_stamp_s is None else now_s - self._odom_stamp_s
            estop = self._estop
        level = _LEVELS.get(state, DiagnosticStatus.OK)
        message = output.reason if output else "starting"
        if level == DiagnosticStatus.OK and (
            odom_age_s is None or odom_age_s > self._odom_timeout_s
        ):
            level = DiagnosticStatus.WARN
            message += "; no fresh odometry"
        values = {
            "state": state.value,
            "action": action.to_text() if action else "",
            "e_stop": str(estop).lower(),
            "odom_age_s": "none" if odom_age_s is None else f"{odom_age_s:.3f}",
        }
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [
            DiagnosticStatus(
                level=level,
                name=f"{self.get_name()}: motion",
                message=message,
                values=[KeyValue(key=key, value=value) for key, value in values.items()],
            )
        ]
        self._diag_pub.publish(array)


def main(args: list[str] | None = None) -> None:
    # rclpy's SIGINT handler shuts the context down at once, and the final zero twist in
    # destroy_node() could then not be published; Ctrl-C arrives as KeyboardInterrupt instead.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = MotionControllerNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
