"""motion_controller node in closed loop with a kinematic base, over real rclpy and Fast DDS.

The test's KinematicBase integrates the published cmd_vel and publishes odom at 50 Hz, so the
node is checked the way a robot sees it: where the robot ends up, what reaches cmd_vel and when.
"""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import Log
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from ros_harness import (
    RELIABLE,
    Collector,
    KinematicBase,
    isolated_context,
    ros_graph,
    wait_for,
)
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from nvila_nav.nodes.motion_controller import PARAMETERS, MotionControllerNode

pytestmark = pytest.mark.ros

CONFIG = Path(__file__).parents[2] / "config" / "motion_controller.yaml"
CONTROL_PERIOD_S = 1.0 / 20.0
# DDS delivery and thread scheduling on a loaded test machine, on top of one control period.
MARGIN_S = 0.1
LIMIT_FIRST_STEP_MPS = 1.0 * 0.1  # max_linear_accel x the controller's longest credited step
ROSOUT = QoSProfile(
    depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def twist_of(msg):
    twist = msg.twist if isinstance(msg, TwistStamped) else msg
    return twist.linear.x, twist.angular.z


def is_zero(msg) -> bool:
    return twist_of(msg) == (0.0, 0.0)


def diag_values(msg: DiagnosticArray) -> dict[str, str]:
    return {kv.key: kv.value for kv in msg.status[0].values}


class QoSBase(KinematicBase):
    """The kinematic base with its odometry published on the given QoS (drivers differ)."""

    def __init__(self, context, odom_qos: QoSProfile, **kwargs):
        super().__init__(context, **kwargs)
        self.destroy_publisher(self._odom_pub)
        self._odom_pub = self.create_publisher(Odometry, "odom", odom_qos)


class Bench:
    """The controller under test, a kinematic base, and the test's own endpoints on one graph."""

    def __init__(
        self,
        graph,
        stamped: bool = False,
        heartbeat: bool = True,
        sim_time: bool = False,
        odom_publisher_qos: QoSProfile = RELIABLE,
        **parameters,
    ):
        self.graph = graph
        self.robot = graph.add(
            QoSBase(graph.context, odom_publisher_qos, stamped=stamped, sim_time=sim_time)
        )
        probe = graph.node("probe")
        self.action_pub = probe.create_publisher(String, "action", RELIABLE)
        self.estop_pub = probe.create_publisher(Bool, "e_stop", LATCHED)
        self.results = Collector(probe, String, "action_result")
        self.cmd = Collector(probe, TwistStamped if stamped else Twist, "cmd_vel")
        self.diagnostics = Collector(probe, DiagnosticArray, "diagnostics")
        self.state = Collector(probe, String, "motion_controller/state", LATCHED)
        self.resume_client = probe.create_client(Trigger, "motion_controller/resume")
        self.probe = probe
        if heartbeat:
            status_pub = probe.create_publisher(DiagnosticArray, "navigator/status", RELIABLE)
            probe.create_timer(0.1, lambda: status_pub.publish(DiagnosticArray()))
        self.parameters = {
            "diagnostics_rate_hz": 10.0,
            "use_stamped": stamped,
            "use_sim_time": sim_time,
            # the base's odometry can stall for half a second on a loaded machine; the tests of
            # the odometry watchdog set their own limit
            "odom_timeout_s": 2.0,
            **parameters,
        }
        self.controller = None

    def start_controller(self, graph=None) -> None:
        """Start the node under test, on its own `graph` (executor) if given."""
        overrides = [Parameter(name, value=value) for name, value in self.parameters.items()]
        self.controller = (graph or self.graph).add(
            MotionControllerNode(context=self.graph.context, parameter_overrides=overrides)
        )
        # Ready once odometry flows through the controller into its diagnostics.
        ready = self.diagnostics.wait_for(
            lambda msg: diag_values(msg)["odom_age_s"] != "none", timeout=10.0
        )
        assert ready, "controller never reported odometry"
        for pub in (self.action_pub, self.estop_pub):
            assert wait_for(lambda pub=pub: pub.get_subscription_count() > 0, 10.0)

    def send(self, text: str) -> float:
        self.action_pub.publish(String(data=text))
        return time.monotonic()

    def estop(self, active: bool) -> float:
        self.estop_pub.publish(Bool(data=active))
        return time.monotonic()

    def wait_result(self, expected: str, timeout: float = 5.0) -> float:
        found = self.results.wait_for(lambda msg: msg.data == expected, timeout)
        got = [msg.data for msg in self.results.messages()]
        assert found, f"no action_result {expected!r} within {timeout} s; got {got}"
        return found[0]

    def wait_diag(self, predicate, since: float, timeout: float = 2.0) -> dict[str, str]:
        found = self.diagnostics.wait_for(lambda msg: predicate(diag_values(msg)), timeout, since)
        assert found, "no matching diagnostics"
        return diag_values(found[1])

    def wait_moving(self) -> None:
        assert wait_for(lambda: abs(self.robot.command()[0]) > 0.1, 3.0), "robot never moved"

    def assert_stopped_after(self, t0: float) -> None:
        """The zero twist reaches cmd_vel within one control period of t0 and nothing moves after.

        At most one non-zero command may arrive after t0: the one already in flight when the
        event reached the controller.
        """
        first_zero = self.cmd.wait_for(is_zero, CONTROL_PERIOD_S + MARGIN_S, since=t0)
        assert first_zero, f"no zero twist within {CONTROL_PERIOD_S + MARGIN_S:.2f} s"
        after = self.cmd.timed(since=t0)
        assert sum(not is_zero(msg) for _, msg in after) <= 1
        assert all(is_zero(msg) for t, msg in after if t >= first_zero[0])
        self.assert_robot_stops()

    def assert_robot_stops(self) -> None:
        """The base receives a zero twist within a control period (it may still be in flight)."""
        stopped = wait_for(lambda: self.robot.command() == (0.0, 0.0), CONTROL_PERIOD_S + MARGIN_S)
        assert stopped, f"base still commanded {self.robot.command()}"

    def result_count(self, text: str) -> int:
        return sum(msg.data == text for msg in self.results.messages())

    def wait_result_count(self, text: str, count: int, timeout: float = 5.0) -> None:
        got = wait_for(lambda: self.result_count(text) >= count, timeout)
        assert got, f"{text!r} not {count} times; got {[m.data for m in self.results.messages()]}"

    def resume(self) -> tuple[bool, str]:
        """Call motion_controller/resume; (success, message)."""
        assert self.resume_client.wait_for_service(timeout_sec=5.0)
        future = self.resume_client.call_async(Trigger.Request())
        assert wait_for(future.done, 5.0), "motion_controller/resume did not answer"
        response = future.result()
        return response.success, response.message

    def wait_state(self, word: str, since: float = -math.inf, timeout: float = 3.0) -> float:
        found = self.state.wait_for(lambda msg: msg.data == word, timeout, since)
        assert found, f"motion_controller/state never {word!r}: {self.state.messages()}"
        return found[0]


@pytest.fixture
def context(ros_domain_id):
    with isolated_context(ros_domain_id) as context:
        yield context


@pytest.fixture
def graph(context):
    with ros_graph(context) as graph:
        yield graph


def test_parameters_and_yaml_agree():
    """config/motion_controller.yaml lists every declared parameter with its default, no more."""
    loaded = yaml.safe_load(CONFIG.read_text())["motion_controller"]["ros__parameters"]
    declared = {spec.name: spec.default for spec in PARAMETERS}
    assert loaded == declared
    assert all(type(loaded[name]) is type(value) for name, value in declared.items())
    assert all(spec.description for spec in PARAMETERS)


def test_node_loads_the_yaml_file(context):
    node = MotionControllerNode(
        context=context, cli_args=["--ros-args", "--params-file", str(CONFIG)]
    )
    try:
        for spec in PARAMETERS:
            assert node.get_parameter(spec.name).value == spec.default
            descriptor = node.describe_parameters([spec.name])[0]
            assert descriptor.read_only and descriptor.description == spec.description
    finally:
        node.destroy_node()


@pytest.mark.parametrize(
    ("text", "distance", "yaw_deg", "sim_time"),
    [
        ("move forward 50 cm", 0.5, 0.0, False),
        ("turn left 30 degrees", 0.0, 30.0, False),
        # On the simulator's /clock: odometry stamped in sim time must look fresh.
        ("move forward 25 cm", 0.25, 0.0, True),
    ],
    ids=["forward", "turn", "forward-sim-time"],
)
def test_action_reaches_target_and_reports_once(graph, text, distance, yaw_deg, sim_time):
    bench = Bench(graph, sim_time=sim_time)
    bench.start_controller()
    bench.send(text)
    done = bench.wait_result(f"succeeded {text}")
    # A duplicate would come within a tick; two diagnostics later (0.2 s) none has.
    bench.wait_diag(lambda values: values["state"] == "succeeded", since=done + 0.15)
    assert bench.result_count(f"succeeded {text}") == 1
    assert len(bench.results.messages()) == 1
    x, y, yaw = bench.robot.pose()
    assert math.hypot(x, y) == pytest.approx(distance, abs=0.035)
    assert abs(y) < 0.005
    assert math.degrees(yaw) == pytest.approx(yaw_deg, abs=2.5)
    bench.assert_robot_stops()


def test_first_twist_of_an_action_goes_out_on_arrival_not_at_the_next_tick(graph):
    """At a 1 Hz control rate a tick-bound controller starts moving up to a second after the
    action; the first twist (the acceleration over one period, capped at 0.1 s: 0.1 m/s) comes
    with the action."""
    bench = Bench(graph, control_rate_hz=1.0, idle_rate_hz=1.0)
    bench.start_controller()
    # right after an idle tick's zero twist, so the next tick is about a second away
    tick = bench.cmd.wait_for(is_zero, 3.0, since=time.monotonic())
    assert tick, "no idle zero twist at 1 Hz"
    sent = bench.send("move forward 75 cm")
    moving = bench.cmd.wait_for(lambda msg: twist_of(msg)[0] > 0.0, 2.0, since=sent)
    assert moving, "never moved"
    assert moving[0] - sent < 0.5, f"first moving twist {moving[0] - sent:.2f} s after the action"
    assert twist_of(moving[1])[0] == pytest.approx(LIMIT_FIRST_STEP_MPS)


def test_estop_during_motion_zeroes_within_a_tick_and_latches(graph):
    bench = Bench(graph)
    bench.start_controller()
    bench.send("move forward 75 cm")
    bench.wait_moving()
    t0 = bench.estop(True)
    bench.assert_stopped_after(t0)
    bench.wait_result("estopped move forward 75 cm")
    # Latched: a new action is refused and nothing moves.
    bench.send("move forward 25 cm")
    t1 = bench.wait_result("estopped move forward 25 cm")
    bench.wait_diag(lambda values: values["e_stop"] == "true", since=t1)
    assert all(is_zero(msg) for msg in bench.cmd.messages(since=t0 + CONTROL_PERIOD_S + MARGIN_S))
    # Released: nothing resumes by itself, and actions stay refused until an explicit resume.
    t2 = bench.estop(False)
    values = bench.wait_diag(lambda values: values["e_stop"] == "false", since=t2 + 0.05)
    assert values["state"] == "awaiting_resume" and values["motion"] == "awaiting_resume"
    bench.send("move forward 25 cm")
    bench.wait_result_count("estopped move forward 25 cm", 2)
    assert all(is_zero(msg) for msg in bench.cmd.messages(since=t0 + CONTROL_PERIOD_S + MARGIN_S))
    bench.assert_robot_stops()
    assert bench.resume() == (True, "resumed: actions are executed again")
    bench.send("move forward 25 cm")
    bench.wait_result("succeeded move forward 25 cm")


def test_estop_latched_before_start_prevents_any_motion(graph):
    bench = Bench(graph)
    bench.estop(True)  # Published before the controller exists: transient local delivers it.
    bench.start_controller()
    bench.wait_diag(lambda values: values["e_stop"] == "true", since=0.0)
    bench.send("move forward 50 cm")
    t1 = bench.wait_result("estopped move forward 50 cm")
    bench.wait_diag(lambda values: values["state"] == "estopped", since=t1 + 0.15)
    assert bench.cmd.messages() and all(is_zero(msg) for msg in bench.cmd.messages())
    assert bench.robot.pose() == (0.0, 0.0, 0.0)


def test_odometry_loss_stops_within_timeout_plus_a_tick(graph):
    odom_timeout_s = 0.3
    bench = Bench(graph, odom_timeout_s=odom_timeout_s)
    bench.start_controller()
    bench.send("move forward 75 cm")
    bench.wait_moving()
    last_odom = bench.robot.stop_odometry()
    deadline = odom_timeout_s + CONTROL_PERIOD_S + MARGIN_S
    stopped = bench.cmd.wait_for(is_zero, deadline + 0.5, since=last_odom)
    assert stopped, "cmd_vel never went to zero after odometry stopped"
    assert stopped[0] - last_odom <= deadline
    assert all(is_zero(msg) for t, msg in bench.cmd.timed(since=stopped[0]))
    t1 = bench.wait_result("watchdog move forward 75 cm")
    bench.wait_diag(lambda values: values["state"] == "watchdog", since=t1)
    bench.assert_robot_stops()


@pytest.mark.parametrize(("blocked_timeout_s", "outcome"), [(1.0, "blocked"), (0.0, "timed_out")])
def test_forward_into_a_wall_ends_blocked_quickly_unless_disabled(
    graph, blocked_timeout_s, outcome
):
    """A robot pushing a wall makes no progress: the move ends "blocked" after
    blocked_timeout_s with a zero twist (VLN-CE executes it as a no-op); with the check off it
    runs into its timeout (0.75 m / 0.5 m/s x 2 + 1 s = 4 s)."""
    bench = Bench(graph, blocked_timeout_s=blocked_timeout_s)
    bench.start_controller()
    bench.robot.block()
    t0 = bench.send("move forward 75 cm")
    bench.wait_moving()
    t1 = bench.wait_result(f"{outcome} move forward 75 cm", timeout=8.0)
    expected = blocked_timeout_s or 4.0
    assert expected <= t1 - t0 <= expected + 1.0
    bench.assert_robot_stops()
    bench.wait_diag(lambda values: values["state"] == outcome, since=t1)


@pytest.mark.parametrize(("stream_timeout_s", "outcome"), [(0.3, "watchdog"), (0.0, "succeeded")])
def test_silent_navigator_stops_unless_disabled(graph, stream_timeout_s, outcome):
    bench = Bench(graph, heartbeat=False, action_stream_timeout_s=stream_timeout_s)
    bench.start_controller()
    bench.send("move forward 25 cm")
    bench.wait_result(f"{outcome} move forward 25 cm")
    bench.assert_robot_stops()


NO_ACTION = "(no NaVILA action (move forward 25|50|75 cm, turn left|right 15|30|45 degrees, stop))"


def test_unparseable_action_is_rejected_without_motion(graph):
    bench = Bench(graph)
    bench.start_controller()
    t0 = bench.send("dance like nobody is watching")
    t1 = bench.wait_result(f"rejected dance like nobody is watching {NO_ACTION}")
    bench.wait_diag(lambda values: values["state"] == "idle", since=t1 + 0.15)
    assert all(is_zero(msg) for msg in bench.cmd.messages(since=t0))
    assert bench.robot.pose() == (0.0, 0.0, 0.0)
    # While moving, garbage still stops the robot: the sender meant to replace the action.
    bench.send("move forward 75 cm")
    bench.wait_moving()
    t2 = bench.send("42")
    bench.assert_stopped_after(t2)
    bench.wait_result(f"rejected 42 {NO_ACTION}")
    assert [msg.data for msg in bench.results.messages()] == [
        f"rejected dance like nobody is watching {NO_ACTION}",
        "cancelled move forward 75 cm",
        f"rejected 42 {NO_ACTION}",
    ]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("move forward -75 cm", "amount -75 is negative (the grammar has no backward motion)"),
        ("move forward nan cm", "amount 'nan' is not a finite number"),
        ("move forward 0 cm", "amount 0 is zero"),
        ("turn left -45 degrees", "amount -45 is negative (the grammar has no backward motion)"),
        (
            "Do not move forward 75 cm",
            "negated: a command names the action to take, never one to avoid",
        ),
        ("move forward 60 cm", "60 cm is not in the grammar (25, 50, 75 cm)"),
    ],
)
def test_nonsense_actions_are_rejected_with_a_reason_and_never_move(graph, text, why):
    bench = Bench(graph)
    bench.start_controller()
    t0 = bench.send(text)
    bench.wait_result(f"rejected {text} ({why})")
    # Two diagnostics later (0.2 s) the controller is still idle and the robot has not moved.
    bench.wait_diag(lambda values: values["state"] == "idle", since=t0 + 0.2)
    assert all(is_zero(msg) for msg in bench.cmd.messages(since=t0))
    assert bench.robot.pose() == (0.0, 0.0, 0.0)


def test_navila_answer_sentence_is_executed(graph):
    bench = Bench(graph)
    bench.start_controller()
    bench.send("The next action is turn right 15 degrees.")
    bench.wait_result("succeeded turn right 15 degrees")
    assert math.degrees(bench.robot.pose()[2]) == pytest.approx(-15.0, abs=2.5)


def test_idle_controller_repeats_zero_at_idle_rate(graph):
    bench = Bench(graph)
    bench.start_controller()
    t0 = time.monotonic()
    assert wait_for(lambda: len(bench.cmd.messages(since=t0)) >= 5, 4.0)
    timed = bench.cmd.timed(since=t0)[:5]
    assert all(is_zero(msg) for _, msg in timed)
    # The mean gap over four periods: one late delivery on a loaded machine moves it little,
    # while the 20 Hz active rate (0.05 s) or a silent controller could never pass.
    arrivals = [t for t, _ in timed]
    assert (arrivals[-1] - arrivals[0]) / 4 == pytest.approx(0.5, abs=0.08)


def test_stop_zeroes_now_and_cancels_the_running_action(graph):
    bench = Bench(graph)
    bench.start_controller()
    bench.send("move forward 75 cm")
    bench.wait_moving()
    t0 = bench.send("stop")
    bench.assert_stopped_after(t0)
    bench.wait_result("succeeded stop")
    assert [msg.data for msg in bench.results.messages()] == [
        "cancelled move forward 75 cm",
        "succeeded stop",
    ]


def test_destroying_the_node_commands_zero(graph):
    bench = Bench(graph)
    # The node spins on its own executor, shut down before destroy_node() as in main().
    with ros_graph(graph.context) as own:
        bench.start_controller(own)
        bench.send("move forward 75 cm")
        bench.wait_moving()
    bench.assert_robot_stops()


def test_stamped_mode_publishes_twist_stamped_with_frame(graph):
    bench = Bench(graph, stamped=True, cmd_vel_frame_id="base_footprint")
    bench.start_controller()
    bench.send("move forward 25 cm")
    bench.wait_result("succeeded move forward 25 cm")
    commands = bench.cmd.messages()
    assert any(not is_zero(msg) for msg in commands)
    assert all(msg.header.frame_id == "base_footprint" for msg in commands)
    assert all(msg.header.stamp.sec > 0 for msg in commands)
    x, _, _ = bench.robot.pose()
    assert x == pytest.approx(0.25, abs=0.035)


ESTOP_PUBLISHER_QOS = {
    # rclpy / rclcpp default: reliable, volatile, depth 10 (most joystick and e-stop nodes)
    "default": QoSProfile(depth=10),
    "best_effort": QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT),
    "transient_local": LATCHED,
}


@pytest.mark.parametrize("qos_name", list(ESTOP_PUBLISHER_QOS))
def test_estop_from_a_publisher_of_any_qos_zeroes_within_a_tick(graph, qos_name):
    bench = Bench(graph)
    bench.start_controller()
    estop_pub = bench.probe.create_publisher(Bool, "e_stop", ESTOP_PUBLISHER_QOS[qos_name])
    # Which of the controller's three e_stop subscriptions (reliable + transient local,
    # reliable, best effort) each publisher matches.
    matches = {"default": 2, "best_effort": 1, "transient_local": 3}[qos_name]
    matched = wait_for(lambda: estop_pub.get_subscription_count() == matches, 5.0)
    assert matched, f"{estop_pub.get_subscription_count()} matching subscriptions, not {matches}"
    bench.send("move forward 75 cm")
    bench.wait_moving()
    estop_pub.publish(Bool(data=True))
    t0 = time.monotonic()
    bench.assert_stopped_after(t0)
    first_zero = bench.cmd.wait_for(is_zero, 1.0, since=t0)
    print(f"e-stop ({qos_name}) → zero twist: {(first_zero[0] - t0) * 1000:.1f} ms")
    bench.wait_result("estopped move forward 75 cm")
    bench.wait_state("estopped")


def test_estop_published_before_start_by_each_qos_is_heard_only_when_latched(graph):
    """A latched (transient local) e-stop published before the controller starts holds it
    stopped from its first tick: its subscription set includes a transient-local one."""
    bench = Bench(graph)
    bench.estop(True)
    bench.start_controller()
    values = bench.wait_diag(lambda values: values["e_stop"] == "true", since=0.0)
    assert values["motion"] == "estopped"
    bench.wait_state("estopped")


@pytest.mark.parametrize("how", ["service", "instruction"])
def test_release_does_not_restart_until_an_explicit_resume(graph, how):
    bench = Bench(graph)
    bench.start_controller()
    bench.wait_state("ready")
    instruction_pub = bench.probe.create_publisher(String, "instruction", qos_profile_sensor_data)
    bench.send("move forward 75 cm")
    bench.wait_moving()
    t0 = bench.estop(True)
    bench.assert_stopped_after(t0)
    bench.wait_result("estopped move forward 75 cm")
    t1 = bench.estop(False)
    bench.wait_state("awaiting_resume", since=t1)
    values = bench.wait_diag(lambda values: values["state"] == "awaiting_resume", since=t1)
    assert values["motion"] == "awaiting_resume"
    message = bench.diagnostics.messages(since=t1)[-1].status[0].message
    assert "e-stop released, waiting for resume" in message
    assert "motion_controller/resume" in message
    # Whatever comes on action now is refused: a navigator that asks again gets no motion.
    bench.send("move forward 50 cm")
    bench.wait_result("estopped move forward 50 cm")
    # A stop instruction is not a resume.
    assert wait_for(lambda: instruction_pub.get_subscription_count() >= 1, 5.0)
    instruction_pub.publish(String(data="Stop!"))
    bench.send("turn left 15 degrees")
    bench.wait_result("estopped turn left 15 degrees")
    assert all(is_zero(msg) for msg in bench.cmd.messages(since=t0 + CONTROL_PERIOD_S + MARGIN_S))
    x_stopped = bench.robot.pose()[0]
    if how == "service":
        assert bench.resume() == (True, "resumed: actions are executed again")
    else:  # a best-effort instruction publisher is heard too
        instruction_pub.publish(String(data="go to the kitchen"))
    bench.wait_state("ready", since=t1)
    bench.send("move forward 25 cm")
    bench.wait_result("succeeded move forward 25 cm")
    assert bench.robot.pose()[0] == pytest.approx(x_stopped + 0.25, abs=0.035)


def test_resume_is_refused_while_the_estop_is_active(graph):
    bench = Bench(graph)
    bench.start_controller()
    bench.estop(True)
    bench.wait_state("estopped")
    success, message = bench.resume()
    assert not success and "e-stop still active" in message
    bench.send("move forward 25 cm")
    bench.wait_result("estopped move forward 25 cm")
    assert bench.robot.pose() == (0.0, 0.0, 0.0)


def test_heartbeat_mode_stops_on_silence_and_needs_a_resume_after_it(graph):
    timeout_s = 0.3
    bench = Bench(graph, e_stop_heartbeat_timeout_s=timeout_s)
    heartbeat_pub = bench.probe.create_publisher(Bool, "e_stop", qos_profile_sensor_data)
    beating = [False]
    bench.probe.create_timer(0.05, lambda: beating[0] and heartbeat_pub.publish(Bool(data=False)))
    bench.start_controller()
    # No heartbeat yet: stopped, and it says why.
    bench.wait_state("estopped")
    values = bench.wait_diag(
        lambda values: "heartbeat" in values["problems"], since=0.0, timeout=5.0
    )
    assert values["e_stop_mode"] == "heartbeat"
    bench.send("move forward 25 cm")
    bench.wait_result("estopped move forward 25 cm")
    # The first heartbeat makes it ready without a resume (start-up is not a restart).
    beating[0] = True
    bench.wait_state("ready")
    bench.send("move forward 75 cm")
    bench.wait_moving()
    beating[0] = False
    last_beat = time.monotonic()
    stopped = bench.cmd.wait_for(is_zero, timeout_s + 1.0, since=last_beat)
    assert stopped, "silence never stopped the robot"
    print(f"heartbeat silent → zero twist after {(stopped[0] - last_beat) * 1000:.0f} ms")
    # Silence is noticed between timeout_s (minus the last gap of 0.05 s) and one tick later.
    assert timeout_s - 0.05 <= stopped[0] - last_beat <= timeout_s + CONTROL_PERIOD_S + MARGIN_S
    bench.wait_result("estopped move forward 75 cm")
    bench.wait_state("estopped", since=last_beat)
    # Heartbeats again: released, but nothing moves until resumed.
    t1 = time.monotonic()
    beating[0] = True
    bench.wait_state("awaiting_resume", since=t1)
    bench.send("move forward 25 cm")
    bench.wait_result_count("estopped move forward 25 cm", 2)
    assert bench.resume()[0]
    bench.send("move forward 25 cm")
    bench.wait_result("succeeded move forward 25 cm")


@pytest.mark.parametrize("odom_qos_name", ["best_effort", "reliable"])
def test_odometry_from_best_effort_and_reliable_drivers_moves_the_robot(graph, odom_qos_name):
    """The default odom_qos (sensor_data) hears a sensor-data driver and a reliable one."""
    qos = qos_profile_sensor_data if odom_qos_name == "best_effort" else RELIABLE
    bench = Bench(graph, odom_publisher_qos=qos)
    bench.start_controller()
    bench.send("move forward 50 cm")
    bench.wait_result("succeeded move forward 50 cm")
    assert bench.robot.pose()[0] == pytest.approx(0.5, abs=0.035)


def test_incompatible_odometry_qos_is_diagnosed_naming_topic_and_parameter(graph):
    bench = Bench(graph, odom_publisher_qos=qos_profile_sensor_data, odom_qos="reliable")
    rosout = Collector(bench.probe, Log, "/rosout", ROSOUT)
    bench.controller = graph.add(
        MotionControllerNode(
            context=graph.context,
            parameter_overrides=[
                Parameter(name, value=value) for name, value in bench.parameters.items()
            ],
        )
    )
    values = bench.wait_diag(lambda values: "/odom" in values["problems"], since=0.0, timeout=5.0)
    problems = values["problems"]
    assert "/kinematic_base offers incompatible QoS" in problems
    assert "reliability: BEST_EFFORT offered, RELIABLE requested" in problems
    assert "odom_qos: sensor_data" in problems
    # rclpy's incompatible-QoS event and the graph check both warn on the log.
    for fragment in (
        "/odom: a publisher with incompatible QoS (RELIABILITY) was discovered",
        "/odom: /kinematic_base offers incompatible QoS",
    ):
        logged = rosout.wait_for(
            lambda msg, fragment=fragment: (
                msg.name == "motion_controller" and msg.level == Log.WARN and fragment in msg.msg
            ),
            5.0,
        )
        assert logged, f"no warning {fragment!r}"
    bench.send("move forward 25 cm")
    bench.wait_result("watchdog move forward 25 cm")
    assert bench.robot.pose() == (0.0, 0.0, 0.0)


def test_huge_action_text_is_rejected_with_a_short_result(graph):
    bench = Bench(graph)
    bench.start_controller()
    text = "move forward 25 cm " + "x" * 100_000
    bench.send(text)
    found = bench.results.wait_for(lambda msg: msg.data.startswith("rejected "), 5.0)
    assert found, "no action_result"
    result = found[1].data
    assert result.startswith(f"rejected {text[:200]}... ({len(text)} characters) (longer than")
    assert len(result) < 400
    assert bench.robot.pose() == (0.0, 0.0, 0.0)


def test_silent_odometry_is_diagnosed(graph):
    probe = graph.node("probe")
    diagnostics = Collector(probe, DiagnosticArray, "diagnostics")
    overrides = [
        Parameter("diagnostics_rate_hz", value=10.0),
        Parameter("input_timeout_s", value=0.3),
    ]
    graph.add(MotionControllerNode(context=graph.context, parameter_overrides=overrides))
    found = diagnostics.wait_for(
        lambda msg: "/odom: no odometry" in diag_values(msg)["problems"], 5.0
    )
    assert found, "silent odom never diagnosed"
    assert "no publisher" in diag_values(found[1])["problems"]
    assert found[1].status[0].level == DiagnosticStatus.WARN


@pytest.mark.parametrize("stamped", [False, True])
def test_cmd_vel_subscriber_of_the_other_type_is_diagnosed(ros_context, ros_domain_id, stamped):
    """A base driver (another participant: DDS allows one type per topic in each) that
    subscribes the other of Twist / TwistStamped is named, with the parameter to change."""
    namespace = f"/cmd_vel_type_{os.getpid()}"  # discovery reaches other processes here
    base_context = rclpy.Context()
    rclpy.init(context=base_context, domain_id=ros_domain_id)
    try:
        with ros_graph(ros_context) as graph, ros_graph(base_context) as base_graph:
            base = base_graph.add(
                rclpy.create_node("stamped_base", namespace=namespace, context=base_context)
            )
            base.create_subscription(
                Twist if stamped else TwistStamped, "cmd_vel", lambda _msg: None, RELIABLE
            )
            probe = graph.add(rclpy.create_node("probe", namespace=namespace, context=ros_context))
            diagnostics = Collector(probe, DiagnosticArray, "diagnostics")
            overrides = [
                Parameter("diagnostics_rate_hz", value=10.0),
                Parameter("use_stamped", value=stamped),
            ]
            graph.add(
                MotionControllerNode(
                    namespace=namespace, context=ros_context, parameter_overrides=overrides
                )
            )
            found = diagnostics.wait_for(
                lambda msg: "stamped_base" in diag_values(msg)["problems"], 10.0
            )
    finally:
        rclpy.try_shutdown(context=base_context)
    assert found, "the base of the other type was never diagnosed"
    problems = diag_values(found[1])["problems"]
    other = str(not stamped).lower()
    ours = "TwistStamped" if stamped else "Twist"
    theirs = "Twist" if stamped else "TwistStamped"
    assert f"{namespace}/stamped_base subscribes geometry_msgs/msg/{theirs}" in problems
    assert f"this node publishes geometry_msgs/msg/{ours}" in problems
    assert f"use_stamped: {other}" in problems and f"cmd_vel_stamped:={other}" in problems


SIGNAL_TRIES = int(os.environ.get("NVILA_NAV_SIGNAL_TRIES", "1"))
"""Tries per case in the signal test; set it (e.g. 50) for a soak by hand."""


# The test's base publishes odometry and the controller drives until the signal: no blocked
# check, no navigator heartbeat needed.
NO_STOP_WITHOUT_PROGRESS = ("-p", "blocked_timeout_s:=0.0", "-p", "action_stream_timeout_s:=0.0")


def _drive_forward(action_pub, base: KinematicBase, timeout_s: float) -> bool:
    """Publish a move until the base is driven: on a loaded machine the first one can reach the
    controller before its first odometry (refused) or before its subscription matched ours."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        action_pub.publish(String(data="move forward 75 cm"))
        if wait_for(lambda: base.command()[0] > 0.1, 1.0):
            return True
    return False


def _run_and_signal(command, signum, context, namespace, env, log_path) -> tuple[float, float]:
    """Start the controller process, make it drive, signal it; (zero latency, exit time) [s]."""
    base = KinematicBase(context)
    probe = rclpy.create_node("probe", context=context)
    cmd = Collector(probe, Twist, "cmd_vel")
    results = Collector(probe, String, "action_result")
    action_pub = probe.create_publisher(String, "action", RELIABLE)
    with ros_graph(context) as graph, open(log_path, "ab") as log:
        graph.add(base)
        graph.add(probe)
        process = subprocess.Popen(
            [*command, "--ros-args", "-r", f"__ns:={namespace}", *NO_STOP_WITHOUT_PROGRESS],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            started = wait_for(lambda: action_pub.get_subscription_count() > 0, 30.0)
            assert started, f"the controller process never subscribed action ({log_path})"
            assert wait_for(lambda: len(cmd.messages()) > 0, 10.0), "no cmd_vel from it"
            assert _drive_forward(action_pub, base, 10.0), (
                f"the robot never moved; results {[m.data for m in results.messages()]}, "
                f"log: {log_path.read_text()[-2000:]}"
            )
            t0 = time.monotonic()
            process.send_signal(signum)
            code = process.wait(timeout=10.0)
            exited = time.monotonic() - t0
            zero = cmd.wait_for(is_zero, 2.0, since=t0)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert code == 0, f"exit status {code} after {signum!r} ({log_path})"
    assert zero, f"no zero twist after {signum!r} ({log_path})"
    assert base.command() == (0.0, 0.0)
    assert all(is_zero(msg) for msg in cmd.messages(since=zero[0]))
    return zero[0] - t0, exited


@pytest.mark.parametrize(
    ("form", "signum"),
    [("console_script", signal.SIGINT), ("python_m", signal.SIGTERM)],
    ids=["console-script-SIGINT", "python-m-SIGTERM"],
)
def test_signal_publishes_a_zero_twist_and_exits_within_2s(ros_domain_id, tmp_path, form, signum):
    """The node as a process (the console script, or `python -m`), driving at 0.5 m/s: SIGINT
    or SIGTERM leaves a zero twist on cmd_vel and the process exits with status 0 within 2 s."""
    namespace = f"/signal_{os.getpid()}"  # discovery reaches other processes in this test
    env = {**os.environ, "ROS_DOMAIN_ID": str(ros_domain_id)}
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if form == "console_script":
        command = [str(Path(sys.executable).parent / "nvila-nav-motion-controller")]
    else:
        command = [sys.executable, "-m", "nvila_nav.nodes.motion_controller"]
    results = []
    for attempt in range(SIGNAL_TRIES):
        context = rclpy.Context()
        rclpy.init(
            args=["--ros-args", "-r", f"__ns:={namespace}"],
            context=context,
            domain_id=ros_domain_id,
        )
        try:
            log_path = tmp_path / f"controller_{attempt}.log"
            results.append(_run_and_signal(command, signum, context, namespace, env, log_path))
        finally:
            rclpy.try_shutdown(context=context)
    zero_s = [r[0] for r in results]
    exit_s = [r[1] for r in results]
    print(
        f"{form} {signal.Signals(signum).name}: {len(results)}/{SIGNAL_TRIES} clean; zero twist "
        f"after {max(zero_s) * 1000:.0f} ms at most, exit after {max(exit_s):.2f} s at most"
    )
    assert max(exit_s) <= 2.0


def test_release_then_instruction_back_to_back_resumes(graph):
    """What voice_teleop does before its next instruction: release the e-stop it engaged, then
    publish the instruction at once (two publishers). The instruction comes after the release,
    so it resumes."""
    bench = Bench(graph)
    bench.start_controller()
    instruction_pub = bench.probe.create_publisher(String, "instruction", RELIABLE)
    assert wait_for(lambda: instruction_pub.get_subscription_count() >= 2, 5.0)
    for attempt in range(3):
        t0 = bench.estop(True)
        bench.wait_state("estopped", since=t0)
        t1 = bench.estop(False)
        instruction_pub.publish(String(data=f"go to the door number {attempt}"))
        bench.wait_state("ready", since=t1)
    bench.send("move forward 25 cm")
    bench.wait_result("succeeded move forward 25 cm")
