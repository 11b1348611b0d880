"""motion_controller node: executes the NaVILA actions on `action` against `odom`, drives `cmd_vel`.

A thin ROS 2 wrapper over `MotionController` (nvila_nav/controller.py); topics, types and QoS
follow docs/ros_interfaces.md. Behaviour decisions:

- `cmd_vel` goes out at `control_rate_hz` while an action executes, and at once when an action
  arrives (its first twist, within the acceleration limit over one control period, does not
  wait for the next tick: it is part of the decision latency). In every other state a zero
  twist is published once on the transition (succeeded, stop, e-stop, watchdog, ...) and then
  repeated at `idle_rate_hz` (0: only on transitions), so a base with its own command timeout
  stays stopped and a late subscriber still learns that the command is zero.
- `e_stop` is read by three subscriptions (reliable + transient local, reliable + volatile, best
  effort + volatile), so a publisher of any reliability and durability is heard, and a latched
  one is heard even when it published before this node started. The latest message on any of
  them counts. True is applied in the callback and a control tick runs at once, so the zero
  twist goes out before the next timer tick.
- Reset is not restart: releasing the e-stop leaves the controller in `awaiting_resume`, which
  refuses every action ("estopped <action>") until an explicit resume: the
  `motion_controller/resume` service (std_srvs/Trigger), or a new instruction on `instruction`
  (not "stop"/"halt"; `resume_on_instruction`). `motion_controller/state` (latched) says
  ready / estopped / awaiting_resume, so the navigator can hold its instruction until resumed.
- Heartbeat mode (`e_stop_heartbeat_timeout_s` > 0): the e-stop source must keep publishing
  false; silence longer than the timeout engages the e-stop like a true, and the node starts
  stopped until the first heartbeat (that first one needs no resume; every later release does).
- Only NaVILA's grammar moves the robot: each `action` text is checked with `parse_command`
  (nvila_nav/actions.py); anything else is answered "rejected <text> (<why>)" and stops a running
  action, since the sender meant to replace it.
- Every message on `action` gets exactly one `action_result` "<state> <action text>" (canonical
  text of the parsed action): succeeded / timed_out / watchdog / estopped when it ends,
  "cancelled" when a new message preempts it, "blocked" when a forward move made no progress for
  `blocked_timeout_s` (an executed no-op, VLN-CE semantics), "estopped" or "watchdog" when it is
  refused (e-stop latched or awaiting resume, no finite odometry).
- `odom` QoS is `odom_qos`: sensor_data (best effort) by default, which hears reliable and best
  effort publishers alike. Incompatible QoS (rclpy's event callbacks, and a graph check on every
  diagnostics tick), publishers of another type, silence on `odom` for `input_timeout_s`, and a
  `cmd_vel` subscriber that expects the other of Twist / TwistStamped are warned about, naming
  the topic, the peer and the parameter to change, again every `input_warn_period_s` while they
  last, and listed in `diagnostics`.
- `navigator/status` is the action-stream heartbeat; with `action_stream_timeout_s` 0 a silent
  navigator no longer stops the robot.
- A lock serialises the controller between the timer and the subscriptions, so the node is safe
  in any executor. Callbacks log and drop whatever fails instead of raising into the executor.
- A zero twist is published by `halt()` / `destroy_node()` and on every clean exit of `main`
  (SIGINT, SIGTERM, an error): `main` disables rclpy's signal handlers (they would shut the
  context down before that zero could go out), spins in a background thread, and on a signal
  publishes the zero (three times, 20 ms apart), stops spinning and exits within 2 s (a
  shutdown that hangs is ended after 1.5 s: `nvila_nav.nodes.process`). A SIGKILL cannot be handled: the
  base must apply its own command timeout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_policy_name_from_kind,
    qos_profile_sensor_data,
)
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

try:  # Iron and newer
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks

from nvila_nav.actions import CommandRejected, parse_command
from nvila_nav.controller import (
    ControllerLimits,
    ControllerState,
    ControlOutput,
    MotionController,
    Pose2D,
)
from nvila_nav.nodes.callbacks import logged, quaternion_yaw
from nvila_nav.nodes.parameters import ParameterSpec, declare_all
from nvila_nav.nodes.process import ShutdownRequest

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
    ParameterSpec(
        "odom_qos",
        "sensor_data",
        "QoS of the odom subscription: sensor_data (best effort, depth 5: hears best-effort and "
        "reliable publishers, what robot drivers use) or reliable (depth 10: only reliable "
        f"publishers, every message). {_RESTART}",
        read_only=True,
        choices=("sensor_data", "reliable"),
    ),
    ParameterSpec(
        "e_stop_heartbeat_timeout_s",
        0.0,
        "0: e_stop is an event (true engages, false releases). > 0: heartbeat mode, the e-stop "
        "source must keep publishing false; silence longer than this engages the e-stop, and "
        f"the node starts stopped until the first false [s]. {_RESTART}",
        read_only=True,
        min_value=0.0,
        max_value=60.0,
    ),
    ParameterSpec(
        "resume_on_instruction",
        True,
        "After an e-stop release, a new instruction on instruction (not stop/halt) resumes like "
        f"the motion_controller/resume service; false: only the service resumes. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "input_timeout_s",
        2.0,
        "No odometry for this long (or in heartbeat mode no e-stop heartbeat) is reported on "
        f"diagnostics and warned about, naming the topic and its publishers [s]. {_RESTART}",
        read_only=True,
        min_value=0.1,
    ),
    ParameterSpec(
        "input_warn_period_s",
        10.0,
        "A problem that lasts (silent input, incompatible QoS, a publisher or subscriber of "
        f"another message type) is warned about again after this long [s]. {_RESTART}",
        read_only=True,
        min_value=0.5,
    ),
)

_LIMIT_NAMES = tuple(field.name for field in dataclasses.fields(ControllerLimits))

# The contract's word for each final state; STOPPED is what the controller calls a cancel, and
# an action refused while awaiting resume is refused because of the e-stop.
_RESULT_WORDS = {
    ControllerState.STOPPED: "cancelled",
    ControllerState.AWAITING_RESUME: "estopped",
}

_LEVELS = {
    ControllerState.WATCHDOG: DiagnosticStatus.ERROR,
    ControllerState.ESTOPPED: DiagnosticStatus.WARN,
    ControllerState.AWAITING_RESUME: DiagnosticStatus.WARN,
    ControllerState.TIMED_OUT: DiagnosticStatus.WARN,
    ControllerState.BLOCKED: DiagnosticStatus.WARN,
}

READY, ESTOPPED, AWAITING_RESUME = "ready", "estopped", "awaiting_resume"
"""The words on motion_controller/state: actions are executed only while it is "ready"."""

STOP_INSTRUCTIONS = frozenset({"stop", "halt"})
"""Instructions that end motion (the navigator's set, nvila_nav/navigation.py); they never resume."""

MAX_SHOWN_CHARS = 200
"""Received text longer than this is cut (with its length) in logs and action_result."""

_FINAL_ZEROS = 3
_FINAL_ZERO_GAP_S = 0.02

_RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
_LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
_BEST_EFFORT = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
# Together these hear a publisher of any reliability and durability: best effort + volatile
# matches every publisher, reliable gets retransmission from reliable ones, and transient local
# gets the last message a latched publisher sent before this node started.
_ANY_PUBLISHER = (_LATCHED, _RELIABLE, _BEST_EFFORT)
_ODOM_QOS = {"sensor_data": qos_profile_sensor_data, "reliable": _RELIABLE}


def _result_word(state: ControllerState) -> str:
    return _RESULT_WORDS.get(state, state.value)


def _shown(text: str) -> str:
    """`text` for logs and action_result, cut when it is very long."""
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS]}... ({len(text)} characters)"


def _type_name(msg_type: type) -> str:
    """The type's name in the ROS graph: geometry_msgs/msg/Twist for geometry_msgs.msg.Twist."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


def _policy_name(value: Any) -> str:
    """RELIABLE, TRANSIENT_LOCAL, ...: the name of a QoS policy value."""
    return getattr(value, "name", str(value)).upper()


def _kind_name(kind: Any) -> str:
    """RELIABILITY, DURABILITY, ...: the policy an incompatible-QoS event names."""
    try:
        return qos_policy_name_from_kind(int(kind))
    except (TypeError, ValueError):
        return _policy_name(kind).removeprefix("RMW_QOS_POLICY_")


def qos_mismatch(offered: QoSProfile, requested: QoSProfile) -> str:
    """Why a publisher offering `offered` cannot reach a subscription requesting `requested`
    (reliability and durability, the policies that differ between real drivers), or ""."""
    problems = []
    if (
        requested.reliability == ReliabilityPolicy.RELIABLE
        and offered.reliability == ReliabilityPolicy.BEST_EFFORT
    ):
        problems.append("reliability: BEST_EFFORT offered, RELIABLE requested")
    if (
        requested.durability == DurabilityPolicy.TRANSIENT_LOCAL
        and offered.durability == DurabilityPolicy.VOLATILE
    ):
        problems.append("durability: VOLATILE offered, TRANSIENT_LOCAL requested")
    return "; ".join(problems)


def _peer(info: Any) -> str:
    """The node behind a graph endpoint, as /namespace/name."""
    if not info.node_name or info.node_name == "_NODE_NAME_UNKNOWN_":
        return "a node not identified yet"  # its name arrives a little after its endpoints
    return f"{info.node_namespace.rstrip('/')}/{info.node_name}"


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
        self._controller = MotionController(
            ControllerLimits(**limits), control_period_s=1.0 / params["control_rate_hz"]
        )
        self._use_stamped = params["use_stamped"]
        self._frame_id = params["cmd_vel_frame_id"]
        self._heartbeat_timeout_s = params["e_stop_heartbeat_timeout_s"]
        self._input_timeout_s = params["input_timeout_s"]
        self._warn_period_s = params["input_warn_period_s"]
        control_rate_hz = params["control_rate_hz"]
        idle_rate_hz = params["idle_rate_hz"]
        self._zero_every_ticks = (
            max(1, round(control_rate_hz / idle_rate_hz)) if idle_rate_hz > 0 else 0
        )

        self._lock = threading.Lock()
        self._pose: Pose2D | None = None
        self._odom_stamp_s: float | None = None
        self._last_output: ControlOutput | None = None
        self._idle_ticks = 0
        self._closed = False
        self._published_state = ""
        self._started_mono = time.monotonic()
        self._odom_heard_mono: float | None = None
        self._heartbeat_heard_mono: float | None = None
        # A release needs a resume only after a real stop: not after heartbeat mode's start-up.
        self._estop_ever_engaged = False
        self._problems: dict[str, str] = {}
        self._warned_at: dict[str, float] = {}
        if self._heartbeat_timeout_s > 0:
            self._controller.set_estop(True, "waiting for the first e-stop heartbeat on e_stop")

        self._cmd_type = TwistStamped if self._use_stamped else Twist
        self._cmd_pub = self.create_publisher(
            self._cmd_type,
            "cmd_vel",
            _RELIABLE,
            event_callbacks=PublisherEventCallbacks(incompatible_qos=self._on_cmd_vel_incompatible),
        )
        self._result_pub = self.create_publisher(String, "action_result", _RELIABLE)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", _RELIABLE)
        self._state_pub = self.create_publisher(String, "motion_controller/state", _LATCHED)
        odom_hint = (
            "set the motion_controller parameter odom_qos: sensor_data"
            if params["odom_qos"] == "reliable"
            else "publish odometry with a volatile durability"
        )
        # (subscription, requested QoS, what to change) of the inputs heard by one subscription.
        self._checked_inputs: list[tuple[Any, QoSProfile, str]] = []
        self._checked_inputs.append(
            self._subscribe(
                Odometry, "odom", self._on_odom, _ODOM_QOS[params["odom_qos"]], odom_hint
            )
        )
        self._checked_inputs.append(
            self._subscribe(
                String, "action", self._on_action, _RELIABLE, "publish actions reliably"
            )
        )
        self._checked_inputs.append(
            self._subscribe(
                DiagnosticArray,
                "navigator/status",
                self._on_navigator_status,
                _RELIABLE,
                "publish navigator/status reliably",
            )
        )
        # Several subscriptions per topic hear every publisher; the ones a given publisher does
        # not match are expected, so their incompatible-QoS events are not warnings.
        self._estop_subs = [
            self._subscribe(Bool, "e_stop", self._on_estop, qos)[0] for qos in _ANY_PUBLISHER
        ]
        if params["resume_on_instruction"]:
            for qos in (_RELIABLE, _BEST_EFFORT):
                self._subscribe(String, "instruction", self._on_instruction, qos)
        self.create_service(Trigger, "motion_controller/resume", self._on_resume)
        self.create_timer(1.0 / control_rate_hz, self._on_control_timer)
        self.create_timer(1.0 / params["diagnostics_rate_hz"], self._on_diagnostics_timer)
        with self._lock:
            self._publish_state()
        mode = (
            f"heartbeat (timeout {self._heartbeat_timeout_s:g} s)"
            if self._heartbeat_timeout_s > 0
            else "latched"
        )
        self.get_logger().info(
            f"motion controller ready: {control_rate_hz:g} Hz, "
            f"{'TwistStamped' if self._use_stamped else 'Twist'} on {self._cmd_pub.topic_name}, "
            f"odom QoS {params['odom_qos']}, e-stop {mode}, "
            f"action-stream watchdog {'on' if self._stream_watchdog else 'off'}"
        )

    def _subscribe(
        self,
        msg_type: type,
        topic: str,
        callback: Callable[[Any], None],
        qos: QoSProfile,
        hint: str = "",
    ) -> tuple[Any, QoSProfile, str]:
        """A subscription whose incompatible-QoS events are warned about with `hint`, or (no
        hint: one of several subscriptions that together hear any publisher) ignored."""
        sub = None

        def on_incompatible(info: Any) -> None:
            policy = _kind_name(info.last_policy_kind)
            self._warn(
                f"qos-event {sub.topic_name}",
                f"{sub.topic_name}: a publisher with incompatible QoS ({policy}) was discovered; "
                f"its messages never arrive here: {hint}",
                force=True,
            )

        events = SubscriptionEventCallbacks(
            incompatible_qos=on_incompatible if hint else (lambda _info: None)
        )
        sub = self.create_subscription(msg_type, topic, callback, qos, event_callbacks=events)
        return sub, qos, hint

    def halt(self) -> None:
        """Command zero now and nothing after it: the last word on cmd_vel before this node (or
        its process) goes away. The zero goes out _FINAL_ZEROS times, _FINAL_ZERO_GAP_S apart,
        so one lost datagram cannot leave the base on its last command (a reliable writer that
        is destroyed at once would never resend it)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for repeat in range(_FINAL_ZEROS):
            if not self.context.ok():
                return
            if repeat:
                time.sleep(_FINAL_ZERO_GAP_S)
            self._publish_twist(0.0, 0.0)

    def destroy_node(self) -> None:
        """Command zero before going away, so the base is not left on the last command."""
        self.halt()
        super().destroy_node()

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # --- callbacks -------------------------------------------------------------------------

    @logged
    def _on_action(self, msg: String) -> None:
        text = msg.data.strip()
        try:
            action, why = parse_command(text), ""
        except CommandRejected as error:
            action, why = None, str(error)
        with self._lock:
            if self._closed:
                return
            if action is None:
                self._controller.cancel()
                self._tick()
                self._publish_result("rejected", f"{_shown(text)} ({why})")
                return
            if self._controller.state is ControllerState.EXECUTING:
                self._publish_result("cancelled", self._controller.action.to_text())
            if not self._controller.start(action, self._pose, self._now_s()):
                self._publish_result(
                    _result_word(self._controller.state),
                    action.to_text(),
                    self._controller.reason,
                )
            # at once, not at the next control tick: the first twist of a new action is part
            # of the decision latency the robot feels
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
            self._odom_heard_mono = time.monotonic()

    @logged
    def _on_estop(self, msg: Bool) -> None:
        active = bool(msg.data)
        with self._lock:
            if self._closed:
                return
            if not active:
                self._heartbeat_heard_mono = time.monotonic()
            was_active = self._controller.estop
            if active and not was_active:
                self._estop_ever_engaged = True
                self._controller.set_estop(True, "e-stop engaged (e_stop true)")
            elif was_active and not active:
                self._controller.set_estop(False)
                if not self._estop_ever_engaged:
                    self._controller.resume()  # the first heartbeat: start-up, not a restart
            self._tick()
            state = self._controller.state
        if active and not was_active:
            self.get_logger().warning("e-stop engaged: zero twist, actions refused")
        elif was_active and not active:
            if state is ControllerState.AWAITING_RESUME:
                self.get_logger().warning(
                    "e-stop released, waiting for resume: nothing moves until "
                    "motion_controller/resume is called or a new instruction arrives"
                )
            else:
                self.get_logger().info("first e-stop heartbeat: ready")

    @logged
    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        if not text or "".join(c for c in text.lower() if c.isalpha()) in STOP_INSTRUCTIONS:
            return
        with self._lock:
            if self._closed or self._controller.state is not ControllerState.AWAITING_RESUME:
                return
            self._controller.resume()
            self._tick()
        self.get_logger().info(f"resumed after the e-stop by a new instruction: {_shown(text)!r}")

    def _on_resume(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            with self._lock:
                response.success, response.message = self._controller.resume()
                if not self._closed:
                    self._tick()
        except Exception as error:  # a service callback must answer, never raise
            response.success, response.message = False, f"resume failed: {error}"
        log = self.get_logger().info if response.success else self.get_logger().warning
        log(f"motion_controller/resume: {response.message}")
        return response

    @logged
    def _on_navigator_status(self, _msg: DiagnosticArray) -> None:
        with self._lock:
            self._controller.heartbeat(self._now_s())

    @logged
    def _on_control_timer(self) -> None:
        silent_s = None
        with self._lock:
            heard = self._heartbeat_heard_mono
            if self._heartbeat_timeout_s > 0 and heard is not None and not self._controller.estop:
                silent_s = time.monotonic() - heard
                if silent_s > self._heartbeat_timeout_s:
                    self._estop_ever_engaged = True
                    self._controller.set_estop(
                        True,
                        f"e-stop heartbeat silent for {silent_s:.2f} s "
                        f"(limit {self._heartbeat_timeout_s:g} s)",
                    )
                else:
                    silent_s = None
            self._tick()
        if silent_s is not None:
            self.get_logger().warning(
                f"e-stop engaged: no heartbeat on e_stop for {silent_s:.2f} s "
                f"(e_stop_heartbeat_timeout_s {self._heartbeat_timeout_s:g})"
            )

    def _on_cmd_vel_incompatible(self, info: Any) -> None:
        topic = self._cmd_pub.topic_name
        self._warn(
            f"qos-event {topic}",
            f"{topic}: a subscriber requests QoS this reliable, volatile publisher does not offer "
            f"({_kind_name(info.last_policy_kind)}); it receives no velocity commands",
            force=True,
        )

    # --- outputs ---------------------------------------------------------------------------

    def _tick(self) -> None:
        """One controller update and its outputs; the caller holds the lock.

        The twist goes out before the result, so whoever reacts to the result finds the robot
        already commanded to stop.
        """
        if self._closed:
            return
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
        self._publish_state()

    def _state_word(self) -> str:
        if self._controller.estop:
            return ESTOPPED
        if self._controller.state is ControllerState.AWAITING_RESUME:
            return AWAITING_RESUME
        return READY

    def _publish_state(self) -> None:
        """motion_controller/state on every change (latched); the caller holds the lock."""
        word = self._state_word()
        if word != self._published_state:
            self._published_state = word
            self._state_pub.publish(String(data=word))

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

    # --- diagnosis -------------------------------------------------------------------------

    def _warn(self, key: str, message: str, force: bool = False) -> None:
        """Warn about `key` when new, when `force`d, or again after input_warn_period_s."""
        now = time.monotonic()
        with self._lock:
            last = self._warned_at.get(key)
            if not force and last is not None and now - last < self._warn_period_s:
                return
            self._warned_at[key] = now
        self.get_logger().warning(message)

    def graph_problems(self) -> dict[str, str]:
        """What keeps inputs or cmd_vel from flowing, by key: publishers or subscribers of another
        message type or with incompatible QoS, and inputs silent for input_timeout_s."""
        problems: dict[str, str] = {}
        for sub, requested, hint in self._checked_inputs:
            topic, expected = sub.topic_name, _type_name(sub.msg_type)
            for info in self.get_publishers_info_by_topic(topic):
                peer = _peer(info)
                if info.topic_type != expected:
                    problems[f"type {topic} {peer}"] = (
                        f"{topic}: {peer} publishes {info.topic_type}, this node subscribes "
                        f"{expected}; nothing it sends arrives"
                    )
                elif mismatch := qos_mismatch(info.qos_profile, requested):
                    problems[f"qos {topic} {peer}"] = (
                        f"{topic}: {peer} offers incompatible QoS ({mismatch}); nothing it sends "
                        f"arrives: {hint}"
                    )
        for sub in self._estop_subs[:1]:
            topic = sub.topic_name
            for info in self.get_publishers_info_by_topic(topic):
                if info.topic_type != _type_name(Bool):
                    problems[f"type {topic} {_peer(info)}"] = (
                        f"{topic}: {_peer(info)} publishes {info.topic_type}, the e-stop is "
                        f"{_type_name(Bool)}; that e-stop is not heard"
                    )
        topic, ours = self._cmd_pub.topic_name, _type_name(self._cmd_type)
        other = not self._use_stamped
        for info in self.get_subscriptions_info_by_topic(topic):
            peer = _peer(info)
            if info.topic_type != ours:
                problems[f"type {topic} {peer}"] = (
                    f"{topic}: {peer} subscribes {info.topic_type} but this node publishes "
                    f"{ours}: it receives no velocity commands; set the motion_controller "
                    f"parameter use_stamped: {str(other).lower()} (launch argument "
                    f"cmd_vel_stamped:={str(other).lower()})"
                )
            elif mismatch := qos_mismatch(_RELIABLE, info.qos_profile):
                problems[f"qos {topic} {peer}"] = (
                    f"{topic}: {peer} requests QoS this node does not offer ({mismatch}); it "
                    "receives no velocity commands"
                )
        now = time.monotonic()
        with self._lock:
            odom_heard, heartbeat_heard = self._odom_heard_mono, self._heartbeat_heard_mono
        odom_sub = self._checked_inputs[0][0]
        silent = self._silence(odom_heard, now)
        if silent is not None:
            problems[f"silent {odom_sub.topic_name}"] = (
                f"{odom_sub.topic_name}: no odometry for {silent} "
                f"({self._publishers_text(odom_sub.topic_name)}); actions are refused or "
                "stopped without it"
            )
        if self._heartbeat_timeout_s > 0:
            silent = self._silence(heartbeat_heard, now)
            if silent is not None:
                topic = self._estop_subs[0].topic_name
                problems[f"silent {topic}"] = (
                    f"{topic}: no e-stop heartbeat (false) for {silent} "
                    f"({self._publishers_text(topic)}); the e-stop stays engaged"
                )
        return problems

    def _silence(self, heard: float | None, now: float) -> str | None:
        """How long an input has been silent, when longer than input_timeout_s; else None."""
        since = self._started_mono if heard is None else heard
        if now - since <= self._input_timeout_s:
            return None
        return f"{now - since:.1f} s" + (" since start-up" if heard is None else "")

    def _publishers_text(self, topic: str) -> str:
        infos = self.get_publishers_info_by_topic(topic)
        if not infos:
            return "no publisher"
        return "publishers: " + ", ".join(
            f"{_peer(info)} ({_policy_name(info.qos_profile.reliability)}, "
            f"{_policy_name(info.qos_profile.durability)})"
            for info in infos
        )

    def _report_problems(self, problems: dict[str, str]) -> None:
        with self._lock:
            resolved = [key for key in self._problems if key not in problems]
            self._problems = problems
            for key in resolved:
                self._warned_at.pop(key, None)
        for key, message in problems.items():
            self._warn(key, message)
        for key in resolved:
            self.get_logger().info(f"resolved: {key}")

    @logged
    def _on_diagnostics_timer(self) -> None:
        problems = self.graph_problems()
        self._report_problems(problems)
        with self._lock:
            now_s = self._now_s()
            output = self._last_output
            state = self._controller.state
            action = self._controller.action
            odom_age_s = None if self._odom_stamp_s is None else now_s - self._odom_stamp_s
            estop = self._controller.estop
            word = self._state_word()
        level = _LEVELS.get(state, DiagnosticStatus.OK)
        message = output.reason if output else "starting"
        if state is ControllerState.AWAITING_RESUME:
            message += ": call motion_controller/resume or send a new instruction"
        if level == DiagnosticStatus.OK and (
            odom_age_s is None or odom_age_s > self._odom_timeout_s
        ):
            level = DiagnosticStatus.WARN
            message += "; no fresh odometry"
        if problems:
            level = max(level, DiagnosticStatus.WARN)
            message += f"; {len(problems)} input/output problem(s): {next(iter(problems.values()))}"
        values = {
            "state": state.value,
            "motion": word,
            "action": action.to_text() if action else "",
            "e_stop": str(estop).lower(),
            "e_stop_mode": "heartbeat" if self._heartbeat_timeout_s > 0 else "latched",
            "odom_age_s": "none" if odom_age_s is None else f"{odom_age_s:.3f}",
            "problems": " | ".join(problems.values()),
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


def _spin(executor: SingleThreadedExecutor) -> None:
    with contextlib.suppress(ExternalShutdownException):
        executor.spin()


def main(args: list[str] | None = None) -> None:
    """Run the node until SIGINT or SIGTERM; then publish a zero twist and exit within 2 s.

    rclpy's signal handlers would shut the context down at once, before the final zero twist
    could go out, so they are off; the executor spins in a background thread while the main
    thread waits for a signal (a Python signal handler runs only in the main thread, and never
    while it is blocked inside rcl's wait).
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    request = ShutdownRequest("motion_controller").install()
    node = executor = thread = None
    code = 0
    try:
        node = MotionControllerNode()
        request.running()  # from here a signal only requests the shutdown below
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        thread = threading.Thread(target=_spin, args=(executor,), name="executor", daemon=True)
        thread.start()
        if request.wait(thread) == "executor":
            node.get_logger().error("the executor stopped; shutting down")
            code = 1
    except KeyboardInterrupt:
        pass
    except Exception as error:  # bad parameters and the like: one clear line, no traceback
        sys.stderr.write(f"motion_controller: {error}\n")
        code = 2 if node is None else 1
    finally:
        request.running()
        if node is not None:
            node.halt()  # the zero twist first; the executor may still run, but commands nothing
        if executor is not None:
            executor.shutdown(timeout_sec=0.5)
        if thread is not None:
            # Native code still running in the spin thread at interpreter exit aborts the process.
            thread.join(timeout=0.5)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    # The zero twist is out and acknowledged: end now. Interpreter teardown with DDS threads
    # still running takes long on a busy machine, and nothing is left for it to do.
    request.finish(code)


if __name__ == "__main__":
    main()
