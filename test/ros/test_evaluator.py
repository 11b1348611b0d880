"""evaluator + sim + a scripted navigator in one process, over real rclpy and Fast DDS.

The scripted navigator stands in for NaVILA: for one episode it follows the announced ground-truth
route with cmd_vel and says "stop" at the goal (a success); for the other it keeps sending
movement actions without moving until the evaluator's action limit ends the episode (a failure).
The simulator runs at 4× real time with a 160×120 camera.
"""

import itertools
import json
import math
from pathlib import Path

import pytest
import yaml
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_harness import RELIABLE, Collector, ros_graph
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from nvila_nav.nodes.evaluator import PARAMETERS, EvaluatorNode
from nvila_nav.nodes.simulator import SimulatorNode
from nvila_nav.sim.episodes import generate_episodes, write_episodes
from nvila_nav.sim.world import world_for_scene

pytestmark = pytest.mark.ros

CONFIG = Path(__file__).parents[2] / "config" / "evaluator.yaml"
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
MAX_ACTIONS = 3


class ScriptedNavigator(Node):
    """Serves navigator/reset and navigator/stop, and answers each instruction with a script.

    Episodes in `stall` get "move forward 25 cm" every 0.1 s of wall time and no motion; the
    others are driven along the announced `gt_locations` (turn in place, then drive with
    proportional steering) until the goal, where it sends "stop".
    """

    def __init__(
        self,
        context,
        stall: set[str],
        ends: dict[str, str] | None = None,
        hold_s: float = 0.0,
    ):
        super().__init__("navigator", context=context)
        self.stall = stall
        self.ends = ends
        """Episode id → the end it reports on navigator/outcome at the goal (None: no outcomes,
        like a navigator that does not report them)."""
        self.hold_s = hold_s
        """Hold the simulator (navigator/querying) this long after the first instruction."""
        self.hold_timer = None
        self.reset_calls = 0
        self.stop_calls: list[str] = []
        self.instructions: list[tuple[str, str]] = []  # (episode id, instruction heard)
        self.episode: dict | None = None
        self.route: list[tuple[float, float]] = []
        self.mode = "idle"
        self.cmd_pub = self.create_publisher(Twist, "cmd_vel", RELIABLE)
        self.action_pub = self.create_publisher(String, "action", RELIABLE)
        self.create_subscription(String, "sim/episode", self._on_episode, LATCHED)
        self.create_subscription(String, "instruction", self._on_instruction, RELIABLE)
        self.create_subscription(Odometry, "odom", self._on_odom, RELIABLE)
        self.create_service(Trigger, "navigator/reset", self._on_reset)
        self.create_service(Trigger, "navigator/stop", self._on_stop)
        self.create_timer(0.1, self._on_stall_timer)
        if ends is not None:
            self.outcome_pub = self.create_publisher(String, "navigator/outcome", RELIABLE)
            self.querying_pub = self.create_publisher(Bool, "navigator/querying", LATCHED)

    def _on_episode(self, msg: String) -> None:
        self.episode = json.loads(msg.data)

    def _on_reset(self, _request, response):
        self.reset_calls += 1
        self.mode = "idle"
        response.success = True
        return response

    def _on_stop(self, _request, response):
        self.stop_calls.append(self.episode["episode_id"])
        self.mode = "idle"
        self.action_pub.publish(String(data="stop"))
        self.cmd_pub.publish(Twist())
        response.success = True
        return response

    def _on_instruction(self, msg: String) -> None:
        self.instructions.append((self.episode["episode_id"], msg.data))
        if self.episode["episode_id"] in self.stall:
            self.mode = "stall"
        else:
            self.route = [tuple(p[:2]) for p in self.episode["gt_locations"]]
            self.mode = "follow"
        if self.hold_s and self.hold_timer is None:
            # like a slow first decision: the world must wait, and nobody may call it silence
            self.querying_pub.publish(Bool(data=True))
            self.hold_timer = self.create_timer(self.hold_s, self._release)

    def _release(self) -> None:
        self.querying_pub.publish(Bool(data=False))
        self.hold_timer.cancel()

    def _end(self) -> None:
        """At the goal: "stop", with the outcome before it (a give-up) or after it."""
        end = None if self.ends is None else self.ends.get(self.episode["episode_id"])
        outcome = String(data=json.dumps({"end": end, "instruction": self.instructions[-1][1]}))
        if end is not None and end != "agent_stopped":
            self.outcome_pub.publish(outcome)
        self.action_pub.publish(String(data="stop"))
        if end == "agent_stopped":
            self.outcome_pub.publish(outcome)

    def _on_stall_timer(self) -> None:
        if self.mode == "stall":
            self.action_pub.publish(String(data="move forward 25 cm"))

    def _on_odom(self, msg: Odometry) -> None:
        if self.mode != "follow":
            return
        q = msg.pose.pose.orientation
        x, y, yaw = msg.pose.pose.position.x, msg.pose.pose.position.y, 2 * math.atan2(q.z, q.w)
        while len(self.route) > 1 and math.dist((x, y), self.route[0]) < 0.1:
            self.route.pop(0)
        target = self.route[0]
        distance = math.dist((x, y), target)
        twist = Twist()
        if len(self.route) == 1 and distance < 0.1:
            self.mode = "idle"
            self.cmd_pub.publish(twist)
            self._end()
            return
        error = math.remainder(math.atan2(target[1] - y, target[0] - x) - yaw, math.tau)
        twist.angular.z = max(-2.0, min(2.0, 3.0 * error))
        if abs(error) < 0.3:
            twist.linear.x = min(0.8, 2.0 * distance)
        self.cmd_pub.publish(twist)


@pytest.fixture(scope="module")
def episodes():
    """Three short val_unseen routes in one scene, so no episode rebuilds the MuJoCo model."""
    chosen = [generate_episodes("val_unseen", 5, seed=0)[i] for i in (0, 4, 3)]
    assert len({e.scene_id for e in chosen}) == 1
    return chosen


def test_parameters_and_yaml_agree():
    loaded = yaml.safe_load(CONFIG.read_text())["evaluator"]["ros__parameters"]
    declared = {spec.name: spec.default for spec in PARAMETERS}
    assert loaded == declared
    assert all(type(loaded[name]) is type(value) for name, value in declared.items())
    assert all(spec.description for spec in PARAMETERS)


@pytest.mark.parametrize(
    ("episodes_file", "message"),
    [("", "parameter episodes_file is required"), ("missing.json", "does not exist")],
)
def test_a_missing_episodes_file_fails_construction_with_a_clear_error(
    ros_context, tmp_path, episodes_file, message
):
    """Construction fails with one clear ValueError, and the half-built node can be destroyed
    (it used to raise AttributeError '_stopping' from destroy_node)."""
    node = None
    path = str(tmp_path / episodes_file) if episodes_file else ""
    overrides = [Parameter("episodes_file", value=path)]

    class Recorded(EvaluatorNode):
        def __init__(self, **kwargs):
            nonlocal node
            node = self
            super().__init__(**kwargs)

    with pytest.raises(ValueError, match=message) as raised:
        Recorded(context=ros_context, parameter_overrides=overrides)
    if not episodes_file:
        assert "episodes:=FILE" in str(raised.value) and "--episodes FILE" in str(raised.value)
    node.destroy_node()


def test_unknown_episode_ids_are_refused_at_start(ros_context, episodes, tmp_path):
    path = write_episodes(tmp_path / "episodes.json", episodes)
    overrides = [
        Parameter("episodes_file", value=str(path)),
        Parameter("episode_ids", value=f"{episodes[0].episode_id},missing-one"),
    ]
    with pytest.raises(ValueError, match="unknown episode ids: missing-one"):
        EvaluatorNode(context=ros_context, parameter_overrides=overrides)


def test_a_missing_graph_aborts_with_an_error_status(ros_context, episodes, tmp_path):
    path = write_episodes(tmp_path / "episodes.json", episodes)
    overrides = [
        Parameter("episodes_file", value=str(path)),
        Parameter("output_dir", value=str(tmp_path / "results")),
        Parameter("startup_timeout_s", value=0.5),
    ]
    with ros_graph(ros_context) as graph:
        status = Collector(graph.node("probe"), String, "evaluator/status", LATCHED)
        evaluator = graph.add(EvaluatorNode(context=ros_context, parameter_overrides=overrides))
        assert evaluator.finished.wait(10.0)
        found = status.wait_for(lambda msg: json.loads(msg.data)["state"] == "error", 5.0)
    assert evaluator.error == "no sim/set_parameters within startup_timeout_s=0.5 s"
    assert found and json.loads(found[1].data)["error"] == evaluator.error
    assert evaluator.results == [] and evaluator.summary is None
    assert not (tmp_path / "results").exists()


def test_two_episodes_through_the_live_graph(ros_context, episodes, tmp_path):
    path = write_episodes(tmp_path / "episodes.json.gz", episodes)
    success, failure = episodes[0], episodes[1]
    output = tmp_path / "results"
    sim_parameters = {
        "episodes_file": str(path),
        "width": 160,
        "height": 120,
        "real_time_factor": 4.0,
    }
    evaluator_parameters = {
        "episodes_file": str(path),
        "episode_ids": f"{success.episode_id} {failure.episode_id}",
        "max_actions": MAX_ACTIONS,
        "max_episode_time_s": 60.0,
        "output_dir": str(output),
        "policy_label": "scripted",
        "settle_time_s": 0.3,
    }
    with ros_graph(ros_context) as graph:
        sim = graph.add(
            SimulatorNode(
                context=ros_context,
                parameter_overrides=[Parameter(k, value=v) for k, v in sim_parameters.items()],
            )
        )
        navigator = graph.add(ScriptedNavigator(ros_context, stall={failure.episode_id}))
        status = Collector(graph.node("probe"), String, "evaluator/status", LATCHED)
        evaluator = graph.add(
            EvaluatorNode(
                context=ros_context,
                parameter_overrides=[
                    Parameter(k, value=v) for k, v in evaluator_parameters.items()
                ],
            )
        )
        assert evaluator.finished.wait(60.0), "the evaluation did not finish within 60 s"
        assert evaluator.error is None, evaluator.error
        done = status.wait_for(lambda msg: json.loads(msg.data)["state"] == "done", 5.0)
        assert done, "no done status"
        assert sim.current_episode.episode_id == failure.episode_id

    final = json.loads(done[1].data)
    assert final["completed"] == final["total"] == 2 and final["summary"]["sr"] == 0.5
    assert navigator.reset_calls == 2
    assert navigator.instructions == [
        (success.episode_id, success.instruction_text),
        (failure.episode_id, failure.instruction_text),
    ]
    assert navigator.stop_calls == [failure.episode_id]  # only the limit calls navigator/stop

    results = {r["episode_id"]: r for r in evaluator.results}
    assert list(results) == [success.episode_id, failure.episode_id]

    won = results[success.episode_id]
    metrics = won["metrics"]
    geodesic = success.info["geodesic_distance"]
    assert won["end_reason"] == "agent_stopped" and won["policy"] == "scripted"
    assert metrics["success"] and metrics["osr"] and metrics["steps"] == 1
    assert metrics["ne"] < 0.3
    assert geodesic - 0.3 < metrics["path_length"] < geodesic + 0.5
    assert metrics["spl"] == pytest.approx(geodesic / max(geodesic, metrics["path_length"]))
    assert metrics["spl"] > 0.85 and metrics["ndtw"] > 0.8
    first_t, x0, y0, _ = won["trajectory"][0]
    assert (x0, y0) == pytest.approx(success.start_position[:2], abs=0.01)
    assert won["trajectory"][-1][0] - first_t == pytest.approx(won["elapsed_s"], abs=1e-3)

    lost = results[failure.episode_id]
    metrics = lost["metrics"]
    start = failure.start_position[:2]
    field = world_for_scene(failure.scene_id).nav.geodesic(failure.goal.position[:2])
    assert lost["end_reason"] == "action_limit"
    assert not metrics["success"] and not metrics["osr"] and metrics["spl"] == 0.0
    assert metrics["steps"] == MAX_ACTIONS
    assert [a["text"] for a in lost["actions"]] == ["move forward 25 cm"] * MAX_ACTIONS
    assert metrics["ne"] == pytest.approx(field.at(*start), abs=0.05)
    assert metrics["path_length"] < 0.01

    for episode_id, result in results.items():
        stored = json.loads((output / "episodes" / f"{episode_id}.json").read_text())
        assert stored == json.loads(json.dumps(result))
        assert (output / "plots" / f"{episode_id}.png").stat().st_size > 10_000
    summary = json.loads((output / "summary.json").read_text())
    assert summary == json.loads(json.dumps(evaluator.summary))
    assert summary["metrics"]["count"] == 2 and summary["metrics"]["sr"] == 0.5
    assert summary["end_reasons"] == {"agent_stopped": 1, "action_limit": 1}
    assert "scripted" in (output / "summary.txt").read_text()


def test_a_navigator_stop_after_failures_is_not_the_agents_stop(ros_context, episodes, tmp_path):
    """Both episodes end at the goal with "stop", but the navigator says the second stop was its
    own, after controller failures: no success, and the stop is no step of the agent. The first
    instruction also holds the simulator for 2.5 s of wall time (a slow model): the world and
    its clock stand still, and the evaluator (odom_timeout_s 1 s) does not take that for a
    dead simulator."""
    path = write_episodes(tmp_path / "episodes.json.gz", episodes)
    agent, gave_up = episodes[0], episodes[2]
    output = tmp_path / "results"
    sim_parameters = {"episodes_file": str(path), "width": 160, "height": 120}
    evaluator_parameters = {
        "episodes_file": str(path),
        "episode_ids": f"{agent.episode_id} {gave_up.episode_id}",
        "max_episode_time_s": 60.0,
        "output_dir": str(output),
        "policy_label": "scripted",
        "settle_time_s": 0.3,
        "odom_timeout_s": 1.0,
    }
    ends = {agent.episode_id: "agent_stopped", gave_up.episode_id: "controller_failures"}
    with ros_graph(ros_context) as graph:
        sim = graph.add(
            SimulatorNode(
                context=ros_context,
                parameter_overrides=[Parameter(k, value=v) for k, v in sim_parameters.items()],
            )
        )
        navigator = graph.add(ScriptedNavigator(ros_context, set(), ends=ends, hold_s=2.5))
        odom = Collector(graph.node("probe"), Odometry, "odom")
        evaluator = graph.add(
            EvaluatorNode(
                context=ros_context,
                parameter_overrides=[
                    Parameter(k, value=v) for k, v in evaluator_parameters.items()
                ],
            )
        )
        assert evaluator.finished.wait(90.0), "the evaluation did not finish within 90 s"
        assert evaluator.error is None, evaluator.error
        assert sim.held_s >= 2.0
        # while held, no odometry and no sim time: the longest gap in sim stamps is one tick
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in odom.messages()]
        arrivals = [t for t, _ in odom.timed()]
        assert max(b - a for a, b in itertools.pairwise(arrivals)) > 2.0
        assert max(b - a for a, b in itertools.pairwise(stamps)) < 0.1
    assert navigator.stop_calls == []  # the navigator stopped itself both times

    results = {r["episode_id"]: r for r in evaluator.results}
    won, lost = results[agent.episode_id], results[gave_up.episode_id]
    assert won["end_reason"] == "agent_stopped" and won["metrics"]["success"]
    assert won["metrics"]["steps"] == 1 and won["actions"][-1]["text"] == "stop"
    assert lost["end_reason"] == "controller_failures"
    assert not lost["metrics"]["success"] and lost["metrics"]["osr"]
    assert lost["metrics"]["ne"] < 0.3  # at the goal, and still a failure
    assert lost["metrics"]["steps"] == 0 and lost["actions"] == []
    assert evaluator.summary["end_reasons"] == {"agent_stopped": 1, "controller_failures": 1}
    assert "Ended: agent_stopped 1, controller_failures 1" in (output / "summary.txt").read_text()
