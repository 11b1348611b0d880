"""motion_controller node in closed loop with a kinematic base, over real rclpy and Fast DDS.

The test's KinematicBase integrates the published cmd_vel and publishes odom at 50 Hz, so the
node is checked the way a robot sees it: where the robot ends up, what reaches cmd_vel and when.
"""

import math
import time
from pathlib import Path

import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_harness import (
    RELIABLE,
    Collector,
    KinematicBase,
    isolated_context,
    ros_graph,
    wait_for,
)
from std_msgs.msg import Bool, String

from nvila_nav.nodes.motion_controller import PARAMETERS, MotionControllerNode

pytestmark = pytest.mark.ros

CONFIG = Path(__file__).parents[2] / "config" / "motion_controller.yaml"
CONTROL_PERIOD_S = 1.0 / 20.0
# DDS delivery and thread scheduling on a loaded test machine, on top of one control period.
MARGIN_S = 0.1
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


class Bench:
    """The controller under test, a kinematic base, and the test's own endpoints on one graph."""

    def __init__(
        self,
        graph,
        stamped: bool = False,
        heartbeat: bool = True,
        sim_time: bool = False,
        **parameters,
    ):
        self.graph = graph
        self.robot = graph.add(KinematicBase(graph.context, stamped=stamped, sim_time=sim_time))
        probe = graph.node("probe")
        self.action_pub = probe.create_publisher(String, "action", RELIABLE)
        self.estop_pub = probe.create_publisher(Bool, "e_stop", LATCHED)
        self.results = Collector(probe, String, "action_result")
        self.cmd = Collector(probe, TwistStamped if stamped else Twist, "cmd_vel")
        self.diagnostics = Collector(probe, DiagnosticArray, "diagnostics")
        if heartbeat:
            status_pub = probe.create_publisher(DiagnosticArray, "navigator/status", RELIABLE)
            probe.create_timer(0.1, lambda: status_pub.publish(DiagnosticArray()))
        self.parameters = {
            "diagnostics_rate_hz": 10.0,
            "use_stamped": stamped,
            "use_sim_time": sim_time,
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
    # Released: nothing resumes by itself, a new action runs again.
    t2 = bench.estop(False)
    bench.wait_diag(lambda values: values["e_stop"] == "false", since=t2 + 0.05)
    assert all(is_zero(msg) for msg in bench.cmd.messages(since=t0 + CONTROL_PERIOD_S + MARGIN_S))
    bench.assert_robot_stops()
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


def test_unparseable_action_is_rejected_without_motion(graph):
    bench = Bench(graph)
    bench.start_controller()
    t0 = bench.send("dance like nobody is watching")
    t1 = bench.wait_result("rejected dance like nobody is watching")
    bench.wait_diag(lambda values: values["state"] == "idle", since=t1 + 0.15)
    assert all(is_zero(msg) for msg in bench.cmd.messages(since=t0))
    assert bench.robot.pose() == (0.0, 0.0, 0.0)
    # While moving, garbage still stops the robot: the sender meant to replace the action.
    bench.send("move forward 75 cm")
    bench.wait_moving()
    t2 = bench.send("42")
    bench.assert_stopped_after(t2)
    bench.wait_result("rejected 42")
    assert [msg.data for msg in bench.results.messages()] == [
        "rejected dance like nobody is watching",
        "cancelled move forward 75 cm",
        "rejected 42",
    ]


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
