"""navigator node over real rclpy and Fast DDS: lifecycle, the NVILA data path, the expert loop.

The test's probe node plays the camera, the user and the evaluator; a `TeleportingController`
plays the motion controller and the robot, so the navigator is checked in closed loop the way
the graph sees it: what reaches `action`, `action_goal`, the markers and the status, and when.
"""

import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from ros_harness import RELIABLE, Collector, isolated_context, ros_graph, wait_for
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from nvila_nav.actions import parse_action
from nvila_nav.image_conversion import rgb_to_image_fields
from nvila_nav.nodes.inputs import ArrivalStats
from nvila_nav.nodes.navigator import PARAMETERS, NavigatorNode
from nvila_nav.nodes.simulator import episode_message
from nvila_nav.policies import ExpertPolicy, PolicyRequest
from nvila_nav.sim.episodes import generate_episode

pytestmark = pytest.mark.ros

CONFIG = Path(__file__).parents[2] / "config" / "navigator.yaml"
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
CAMERA_PERIOD_S = 0.1
QUERYING_QOS = QoSProfile(
    depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
EPISODE = generate_episode("val_unseen", 0, seed=0)
START = (EPISODE.start_position[0], EPISODE.start_position[1], EPISODE.start_yaw)


def diag_values(msg: DiagnosticArray) -> dict[str, str]:
    return {kv.key: kv.value for kv in msg.status[0].values}


def advance(pose, action):
    """The pose after executing `action` exactly."""
    x, y, yaw = pose
    return (
        x + action.distance_m * math.cos(yaw),
        y + action.distance_m * math.sin(yaw),
        yaw + action.yaw_rad,
    )


class TeleportingController(Node):
    """Plays motion_controller and the robot: an action moves the pose at once and its
    "succeeded <action>" follows `delay_s` later, while odometry flows at 50 Hz. With
    `answer=False` it never answers, like a robot still executing."""

    def __init__(self, context, pose, delay_s: float = 0.1, answer: bool = True):
        super().__init__("teleporting_controller", context=context)
        self._lock = threading.Lock()
        self._pose = pose
        self._due: list[tuple[float, str]] = []
        self._delay_s = delay_s
        self._answer = answer
        self._odom_pub = self.create_publisher(Odometry, "odom", RELIABLE)
        self._result_pub = self.create_publisher(String, "action_result", RELIABLE)
        self.create_subscription(String, "action", self._on_action, RELIABLE)
        self.create_timer(0.02, self._tick)

    @property
    def pose(self):
        with self._lock:
            return self._pose

    def _on_action(self, msg: String) -> None:
        action = parse_action(msg.data)
        with self._lock:
            self._pose = advance(self._pose, action)
            self._publish_odom()
            if self._answer:
                self._due.append((time.monotonic() + self._delay_s, f"succeeded {msg.data}"))

    def _publish_odom(self) -> None:
        x, y, yaw = self._pose
        odom = Odometry()
        odom.header.stamp = self.get_clock().now().to_msg()
        odom.header.frame_id = "odom"
        odom.child_frame_id = "base_link"
        odom.pose.pose.position.x, odom.pose.pose.position.y = x, y
        odom.pose.pose.orientation.z = math.sin(yaw / 2)
        odom.pose.pose.orientation.w = math.cos(yaw / 2)
        self._odom_pub.publish(odom)

    def _tick(self) -> None:
        with self._lock:
            self._publish_odom()
            now = time.monotonic()
            due = [text for t, text in self._due if t <= now]
            self._due = [(t, text) for t, text in self._due if t > now]
        for text in due:
            self._result_pub.publish(String(data=text))


class Bench:
    """The navigator under test and the probe's endpoints: camera, instruction, collectors."""

    def __init__(self, graph, **parameters):
        self.graph = graph
        probe = graph.node("probe")
        self.probe = probe
        self.image_pub = probe.create_publisher(Image, "rgb", qos_profile_sensor_data)
        self.instruction_pub = probe.create_publisher(String, "instruction", RELIABLE)
        self.episode_pub = probe.create_publisher(String, "sim/episode", LATCHED)
        self.estop_pub = probe.create_publisher(Bool, "e_stop", LATCHED)
        self.actions = Collector(probe, String, "action")
        self.goals = Collector(probe, PoseStamped, "action_goal")
        self.markers = Collector(probe, MarkerArray, "navigator/markers")
        self.status = Collector(probe, DiagnosticArray, "navigator/status")
        self.diagnostics = Collector(probe, DiagnosticArray, "diagnostics")
        self.change_state = probe.create_client(ChangeState, "navigator/change_state")
        self.get_state = probe.create_client(GetState, "navigator/get_state")
        self.stop_client = probe.create_client(Trigger, "navigator/stop")
        self.reset_client = probe.create_client(Trigger, "navigator/reset")
        self._rng = np.random.default_rng(0)
        self.camera_on = False
        probe.create_timer(CAMERA_PERIOD_S, self._publish_frame)
        overrides = [Parameter(name, value=value) for name, value in parameters.items()]
        self.node = graph.add(NavigatorNode(context=graph.context, parameter_overrides=overrides))

    def _publish_frame(self) -> None:
        if not self.camera_on:
            return
        rgb = self._rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        image = Image(**rgb_to_image_fields(rgb))
        image.header.stamp = self.probe.get_clock().now().to_msg()
        image.header.frame_id = "camera"
        self.image_pub.publish(image)

    def call(self, client, request, timeout: float = 20.0):
        assert client.wait_for_service(timeout_sec=timeout), f"no service {client.srv_name}"
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f"{client.srv_name} did not answer"
        return future.result()

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition_id
        return self.call(self.change_state, request).success

    def state(self) -> int:
        return self.call(self.get_state, GetState.Request()).current_state.id

    def activate(self) -> None:
        assert self.transition(Transition.TRANSITION_CONFIGURE)
        assert self.transition(Transition.TRANSITION_ACTIVATE)
        assert wait_for(lambda: self.instruction_pub.get_subscription_count() > 0, 10.0)

    def instruct(self, text: str) -> float:
        self.instruction_pub.publish(String(data=text))
        return time.monotonic()

    def action_texts(self, since: float = -math.inf) -> list[str]:
        return [msg.data for msg in self.actions.messages(since)]

    def wait_actions(self, count: int, since: float = -math.inf, timeout: float = 10.0):
        ok = wait_for(lambda: len(self.action_texts(since)) >= count, timeout)
        assert ok, f"expected {count} actions, got {self.action_texts(since)}"
        return self.action_texts(since)

    def wait_status(self, predicate, since: float = -math.inf, timeout: float = 5.0):
        found = self.status.wait_for(lambda msg: predicate(diag_values(msg)), timeout, since)
        assert found, f"no matching status; last: {self.last_status()}"
        return diag_values(found[1])

    def last_status(self) -> dict[str, str]:
        messages = self.status.messages()
        return diag_values(messages[-1]) if messages else {}


@pytest.fixture
def context(ros_domain_id):
    with isolated_context(ros_domain_id) as context:
        yield context


@pytest.fixture
def graph(context):
    with ros_graph(context) as graph:
        yield graph


def expert_bench(graph, answer: bool = True) -> tuple[Bench, TeleportingController]:
    """Navigator on the expert policy, the episode on sim/episode, a robot at its start."""
    controller = graph.add(TeleportingController(graph.context, START, answer=answer))
    bench = Bench(graph, policy="expert")
    bench.episode_pub.publish(String(data=episode_message(EPISODE, 0.0, 1)))
    bench.camera_on = True
    bench.activate()
    bench.wait_status(lambda v: v["episode"] == EPISODE.episode_id and v["frame_age_s"] != "none")
    return bench, controller


def test_arrival_stats_percentiles():
    stats = ArrivalStats(limit_ms=1000)
    assert stats.summary() == "none" and stats.percentile(50) is None
    for ms in [33.4] * 98 + [350.0, 2500.0, float("nan"), -1.0]:
        stats.add(ms)
    assert stats.count == 100  # nan and negative values are no durations
    assert stats.percentile(50) == 33.0 and stats.percentile(99) == 350.0
    assert stats.percentile(100) == 1000.0 and stats.max_ms == 2500.0  # beyond the last bin
    assert stats.summary() == "p50 33 p90 33 p99 350 max 2500"


def test_parameters_and_yaml_agree():
    """config/navigator.yaml lists every declared parameter with its default, no more."""
    loaded = yaml.safe_load(CONFIG.read_text())["navigator"]["ros__parameters"]
    declared = {spec.name: spec.default for spec in PARAMETERS}
    assert loaded == declared
    assert all(type(loaded[name]) is type(value) for name, value in declared.items())
    assert all(spec.description for spec in PARAMETERS)


def test_node_loads_the_yaml_file(context):
    node = NavigatorNode(context=context, cli_args=["--ros-args", "--params-file", str(CONFIG)])
    try:
        for spec in PARAMETERS:
            assert node.get_parameter(spec.name).value == spec.default
            descriptor = node.describe_parameters([spec.name])[0]
            assert descriptor.description == spec.description
            assert descriptor.read_only == spec.read_only
        assert node.autostart and not node.configured
    finally:
        node.destroy_node()


def test_lifecycle_transitions_and_status_rate(graph):
    bench = Bench(graph, policy="expert", status_rate_hz=5.0)
    assert bench.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert bench.transition(Transition.TRANSITION_CONFIGURE)
    assert bench.state() == State.PRIMARY_STATE_INACTIVE
    # Inactive: diagnostics report it, the heartbeat stays silent.
    found = bench.diagnostics.wait_for(lambda msg: diag_values(msg)["active"] == "false", 5.0)
    assert found and found[1].status[0].message.startswith("inactive")
    assert bench.transition(Transition.TRANSITION_ACTIVATE)
    assert bench.state() == State.PRIMARY_STATE_ACTIVE
    t0 = time.monotonic()
    assert wait_for(lambda: len(bench.status.messages(t0)) >= 11, 4.0)
    stamps = [t for t, _ in bench.status.timed(t0)]
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert rate >= 4.0, f"navigator/status at {rate:.1f} Hz"
    assert max(np.diff(stamps)) < 0.5  # never silent long enough to trip the controller
    values = bench.last_status()
    assert values["active"] == "true" and values["state"] == "idle"
    assert values["policy"] == "expert" and bench.action_texts() == []

    t1 = time.monotonic()
    assert bench.transition(Transition.TRANSITION_DEACTIVATE)
    assert bench.state() == State.PRIMARY_STATE_INACTIVE
    assert bench.wait_actions(1, since=t1) == ["stop"]
    # Deactivated by an operator: instructions are ignored, never kept for later.
    t2 = bench.instruct("go to the kitchen")
    time.sleep(0.5)
    assert len(bench.status.messages(time.monotonic() - 0.3)) == 0
    assert bench.action_texts(t2) == []
    assert bench.transition(Transition.TRANSITION_CLEANUP)
    assert bench.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert not bench.node.configured


def test_configure_fails_cleanly_on_a_bad_model(graph):
    bench = Bench(graph, model="no-such-model")
    assert not bench.transition(Transition.TRANSITION_CONFIGURE)
    assert bench.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert "neither a checkpoint directory nor a preset" in bench.node.configure_error
    bench.node.set_parameters([Parameter("policy", value="expert")])
    assert bench.transition(Transition.TRANSITION_CONFIGURE)


def test_images_and_instruction_give_an_action_from_the_model(graph):
    bench = Bench(
        graph,
        policy="nvila",
        model="tiny",
        allow_random_weights=True,
        device="cpu",
        max_new_tokens=12,
    )
    bench.activate()
    malformed = Image(height=4, width=4, encoding="rgb8", step=3, data=bytes(12))
    bench.image_pub.publish(malformed)
    bench.camera_on = True
    bench.wait_status(lambda v: v["dropped_frames"] == "1" and v["frame_age_s"] != "none")
    instruction = "Walk past the sofa and stop at the red door."
    t0 = bench.instruct(instruction)
    (text,) = bench.wait_actions(1, since=t0, timeout=30.0)
    values = bench.wait_status(lambda v: v["last_action"] == text, since=t0)
    assert values["policy"] == "nvila" and values["model"] == "tiny"
    assert values["backend"] == "torch" and values["instruction"] == instruction
    assert values["last_latency_ms"] != "none" and values["vision_ms"] != "none"
    assert int(values["queries"]) >= 1 and int(values["history_length"]) >= 1
    assert values["cache_hit_rate"] != "none" and values["dropped_frames"] == "1"
    # every arrival counts (the malformed frame too), with the gaps between them
    assert int(values["camera_frames"]) >= 2 and values["camera_gap_ms"].startswith("p50 ")
    parsed = parse_action(values["last_output"])
    if parsed is None:  # random weights: the documented fallback after max_reparse re-queries
        assert text == "stop" and values["state"] == "stopped"
        assert (
            values["queries"] == "2"
            and "no usable action" in bench.status.messages()[-1].status[0].message
        )
    else:
        assert text == parsed.to_text()
        assert values["state"] == ("stopped" if parsed.is_stop else "executing")

    goal = bench.goals.wait_for(lambda msg: True, 5.0, since=t0)
    assert goal and goal[1].header.frame_id == "base_link"
    x, y, yaw = parse_action(text).distance_m, 0.0, parse_action(text).yaw_rad
    assert goal[1].pose.position.x == pytest.approx(x) and goal[1].pose.position.y == y
    assert 2 * math.atan2(goal[1].pose.orientation.z, goal[1].pose.orientation.w) == (
        pytest.approx(yaw)
    )
    markers = bench.markers.wait_for(lambda msg: True, 5.0, since=t0)
    assert markers
    label, arrow = markers[1].markers
    assert (
        label.type == Marker.TEXT_VIEW_FACING and instruction in label.text and text in label.text
    )
    assert arrow.type == Marker.ARROW
    assert arrow.action == (Marker.DELETE if text == "stop" else Marker.ADD)


def test_expert_policy_drives_the_episode_through_the_controller(graph):
    bench, controller = expert_bench(graph)
    outcomes = Collector(bench.probe, String, "navigator/outcome")
    querying = Collector(bench.probe, Bool, "navigator/querying", QUERYING_QOS)
    t0 = bench.instruct(EPISODE.instruction_text)
    assert wait_for(lambda: "stop" in bench.action_texts(t0), 30.0), bench.action_texts(t0)
    issued = bench.action_texts(t0)
    # the end goes out with its reason, and the simulator's hold rose and fell for every query
    found = outcomes.wait_for(lambda m: True, 5.0, since=t0)
    assert found, "no navigator/outcome"
    outcome = json.loads(found[1].data)
    assert outcome["end"] == "agent_stopped" and outcome["instruction"] == (
        EPISODE.instruction_text
    )
    assert wait_for(lambda: querying.messages() and not querying.messages()[-1].data, 5.0)
    assert sum(m.data for m in querying.messages(t0)) >= len(issued)
    # The same sequence the expert produces offline from the same start and message.
    policy, pose, expected = ExpertPolicy(), START, []
    data = json.loads(episode_message(EPISODE, 0.0, 1))
    while not expected or expected[-1] != "stop":
        action = policy.decide(PolicyRequest("", [], None, pose, data)).action
        expected.append(action.to_text())
        pose = advance(pose, action)
    assert issued == expected and len(issued) >= 5
    goal = EPISODE.goal.position
    x, y, _ = controller.pose
    assert math.hypot(x - goal[0], y - goal[1]) < 0.35
    values = bench.wait_status(lambda v: v["state"] == "stopped", since=t0)
    assert values["queries"] == str(len(expected)) and values["failures"] == "0"


def test_stop_service_and_new_instructions_preempt(graph):
    bench, _ = expert_bench(graph, answer=False)  # the robot never finishes an action
    t0 = bench.instruct("go to the kitchen")
    (first,) = bench.wait_actions(1, since=t0)
    assert first != "stop"
    bench.wait_status(lambda v: v["state"] == "executing", since=t0)

    # A new instruction: stop the running action first, then act on the new one.
    t1 = bench.instruct("go to the bedroom instead")
    second = bench.wait_actions(2, since=t1)
    assert second[0] == "stop" and second[1] != "stop"
    bench.wait_status(lambda v: v["instruction"] == "go to the bedroom instead", since=t1)

    t2 = time.monotonic()
    response = bench.call(bench.stop_client, Trigger.Request())
    assert response.success
    assert bench.wait_actions(1, since=t2) == ["stop"]
    bench.wait_status(lambda v: v["state"] == "stopped", since=t2)

    # Stopped: a new instruction starts without a stop; "halt" ends it.
    t3 = bench.instruct("go to the sofa")
    (third,) = bench.wait_actions(1, since=t3)
    assert third != "stop"
    t4 = bench.instruct("Halt!")
    assert bench.wait_actions(1, since=t4) == ["stop"]

    t5 = time.monotonic()
    assert bench.call(bench.reset_client, Trigger.Request()).success
    values = bench.wait_status(lambda v: v["state"] == "idle", since=t5)
    assert values["instruction"] == "" and values["queries"] == "0"
    time.sleep(0.3)
    assert bench.action_texts(t5) == []  # nothing was moving: nothing to stop


def test_estop_pauses_until_the_controller_resumes(graph):
    """Reset is not restart: an e-stop from a best-effort publisher pauses the instruction,
    the release alone moves nothing, the controller's "ready" after its resume continues it."""
    bench, _ = expert_bench(graph, answer=False)  # the robot never finishes an action
    best_effort = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    estop = bench.probe.create_publisher(Bool, "e_stop", best_effort)
    state = bench.probe.create_publisher(String, "motion_controller/state", LATCHED)
    state.publish(String(data="ready"))
    assert wait_for(lambda: estop.get_subscription_count() >= 1, 10.0)
    t0 = bench.instruct(EPISODE.instruction_text)
    assert bench.wait_actions(1, since=t0) != ["stop"]
    t1 = time.monotonic()
    estop.publish(Bool(data=True))
    state.publish(String(data="estopped"))
    values = bench.wait_status(lambda v: v["state"] == "paused", since=t1)
    assert values["e_stop"] == "true"
    estop.publish(Bool(data=False))
    state.publish(String(data="awaiting_resume"))
    bench.wait_status(lambda v: v["e_stop"] == "false", since=t1)
    time.sleep(1.5)
    assert bench.action_texts(t1) == []  # released: nothing moves
    assert bench.last_status()["state"] == "paused"
    assert "resume" in bench.status.messages()[-1].status[0].message
    t2 = time.monotonic()
    state.publish(String(data="ready"))  # the controller's explicit resume
    (second,) = bench.wait_actions(1, since=t2)
    assert second != "stop"


def test_instruction_given_during_the_estop_starts_on_release(graph):
    bench, _ = expert_bench(graph)
    bench.estop_pub.publish(Bool(data=True))
    bench.wait_status(lambda v: v["e_stop"] == "true")
    t0 = bench.instruct(EPISODE.instruction_text)
    values = bench.wait_status(lambda v: v["instruction"] != "" and v["state"] == "querying", t0)
    assert values["e_stop"] == "true"
    time.sleep(1.0)
    assert bench.action_texts(t0) == []
    t1 = time.monotonic()
    bench.estop_pub.publish(Bool(data=False))
    (first,) = bench.wait_actions(1, since=t1)[:1]
    assert first != "stop"


def test_instruction_sent_while_the_navigator_starts_is_kept_until_active(graph):
    """An instruction that arrives before configure (a model may load for minutes) is not lost:
    the navigator keeps it and starts it once active; a later one replaces it and "stop"
    discards it."""
    bench = Bench(graph, policy="forward")
    bench.camera_on = True
    assert wait_for(lambda: bench.instruction_pub.get_subscription_count() > 0, 10.0)
    outcomes = Collector(bench.probe, String, "navigator/outcome")
    bench.instruct("go to the kitchen")
    bench.instruct("stop")
    bench.instruct("go to the bedroom")
    assert wait_for(lambda: bench.node._pending_instruction == "go to the bedroom", 5.0)
    time.sleep(0.3)
    assert bench.action_texts() == []
    t0 = time.monotonic()
    assert bench.transition(Transition.TRANSITION_CONFIGURE)
    assert bench.transition(Transition.TRANSITION_ACTIVATE)
    assert bench.wait_actions(1, since=t0) == ["move forward 75 cm"]
    values = bench.wait_status(lambda v: v["instruction"] != "", since=t0)
    assert values["instruction"] == "go to the bedroom"
    # the stop service ends it with its own reason
    t1 = time.monotonic()
    assert bench.call(bench.stop_client, Trigger.Request()).success
    found = outcomes.wait_for(lambda m: True, 5.0, since=t1)
    assert found and json.loads(found[1].data)["end"] == "stop_requested"


def test_random_weights_are_refused_before_anything_loads(graph):
    """A robot must not drive on a preset's random weights: configure fails at once (no model
    is built), naming the parameter that allows it and how to point model at a checkpoint."""
    bench = Bench(graph, policy="nvila", model="tiny")
    t0 = time.monotonic()
    assert not bench.transition(Transition.TRANSITION_CONFIGURE)
    assert time.monotonic() - t0 < 5.0
    assert bench.state() == State.PRIMARY_STATE_UNCONFIGURED
    error = bench.node.configure_error
    assert "RANDOM weights" in error and "allow_random_weights: true" in error
    assert "model:=/path/to/checkpoint" in error and "--model /path/to/checkpoint" in error
    # the other policies never load a model, so they need no permission
    bench.node.set_parameters([Parameter("policy", value="random")])
    assert bench.transition(Transition.TRANSITION_CONFIGURE)
    assert bench.node.configure_error is None


def test_qos_mismatch_and_a_silent_camera_are_named_in_the_status(graph):
    """camera_qos reliable with a best-effort camera: nothing arrives, and the status says why,
    naming the topic and the publisher; the default (sensor_data) hears the same camera."""
    bench = Bench(
        graph, policy="forward", camera_qos="reliable", input_timeout_s=0.5, input_warn_period_s=0.5
    )
    bench.camera_on = True  # the probe's camera is best effort (sensor data)
    bench.activate()
    found = bench.status.wait_for(
        lambda msg: "QoS mismatch on /rgb" in msg.status[0].message, timeout=10.0
    )
    assert found, bench.status.messages()[-1].status[0].message
    message = found[1].status[0].message
    assert "/probe publishes best_effort" in message and "camera_qos" in message
    assert diag_values(found[1])["frame_age_s"] == "none"  # no frame got through

    bench.transition(Transition.TRANSITION_DEACTIVATE)
    bench.transition(Transition.TRANSITION_CLEANUP)
    bench.node.set_parameters([Parameter("camera_qos", value="sensor_data")])
    t0 = time.monotonic()
    bench.activate()
    values = bench.wait_status(lambda v: v["frame_age_s"] != "none", since=t0, timeout=10.0)
    assert values["input_problems"] == "0"
