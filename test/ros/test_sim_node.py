"""sim node over real rclpy and Fast DDS: sensors, motion, collisions, command timeout, episodes.

The node renders with MuJoCo through EGL (Mesa on CPU), so the camera is kept at 160×120, and it
runs at 4× real time; assertions use the stamps (sim time), never the wall clock.
"""

import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from ros_harness import RELIABLE, Collector, ros_graph, wait_for
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from nvila_nav.image_conversion import image_to_rgb
from nvila_nav.nodes.simulator import PARAMETERS, SimulatorNode
from nvila_nav.sim.episodes import Episode, Goal, generate_episodes, write_episodes
from nvila_nav.sim.episodes import yaw_to_quaternion as quaternion
from nvila_nav.sim.world import WALL_THICKNESS

pytestmark = pytest.mark.ros

CONFIG = Path(__file__).parents[2] / "config" / "sim.yaml"
SCENE = "nvsim/scene_0000"
ROOM_Y = 2.6  # the study of scene 0 spans x 0..8.7, y 0..5.2, with no furniture on this line
WIDTH, HEIGHT, HFOV_DEG = 160, 120, 79.0
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def straight_episode(episode_id: str, x: float, yaw: float) -> Episode:
    """An episode in the study of scene 0: start at (x, ROOM_Y) facing `yaw`, goal 2 m ahead."""
    goal = (x + 2.0 * math.cos(yaw), ROOM_Y + 2.0 * math.sin(yaw), 0.0)
    return Episode(
        episode_id=episode_id,
        trajectory_id=0,
        scene_id=SCENE,
        start_position=(x, ROOM_Y, 0.0),
        start_rotation=quaternion(yaw),
        goals=(Goal(goal, 1.5),),
        reference_path=((x, ROOM_Y, 0.0), goal),
        instruction_text=f"Walk to the point two metres ahead ({episode_id}).",
        info={"geodesic_distance": 2.0},
    )


@pytest.fixture(scope="module")
def episodes_file(tmp_path_factory) -> Path:
    episodes = [
        straight_episode("east", 4.35, 0.0),
        straight_episode("west", 1.5, math.pi),
        *generate_episodes("val_unseen", 1, seed=0),
    ]
    return write_episodes(tmp_path_factory.mktemp("episodes") / "episodes.json.gz", episodes)


def stamp_s(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def pose_of(msg: Odometry) -> tuple[float, float, float]:
    q = msg.pose.pose.orientation
    return msg.pose.pose.position.x, msg.pose.pose.position.y, 2.0 * math.atan2(q.z, q.w)


class SimBench:
    """The sim node and the test's endpoints: sensor collectors, cmd_vel and the services."""

    def __init__(self, graph, episodes_file: Path, **parameters):
        self.graph = graph
        probe = graph.node("probe")
        self.rgb = Collector(probe, Image, "rgb", qos_profile_sensor_data)
        self.info = Collector(probe, CameraInfo, "camera_info", qos_profile_sensor_data)
        self.odom = Collector(probe, Odometry, "odom")
        self.clock = Collector(probe, Clock, "clock")
        self.stamped = parameters.get("use_stamped", False)
        self.cmd_pub = probe.create_publisher(
            TwistStamped if self.stamped else Twist, "cmd_vel", RELIABLE
        )
        self.set_parameters = probe.create_client(SetParameters, "sim/set_parameters")
        self.load = probe.create_client(Trigger, "sim/load_episode")
        self.probe = probe
        self._command: Twist | TwistStamped | None = None
        # Commands repeat every 20 ms of wall time (80 ms of sim time at 4×), well inside the
        # sim's 0.5 s command timeout, like a controller's loop.
        probe.create_timer(0.02, self._republish)
        overrides = {
            "episodes_file": str(episodes_file),
            "episode_id": "east",
            "width": WIDTH,
            "height": HEIGHT,
            "hfov_deg": HFOV_DEG,
            "real_time_factor": 4.0,
            **parameters,
        }
        self.sim = graph.add(
            SimulatorNode(
                context=graph.context,
                parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
            )
        )
        assert self.odom.wait_for(lambda _msg: True, 10.0), "no odometry"
        assert wait_for(lambda: self.cmd_pub.get_subscription_count() > 0, 10.0)

    def _republish(self) -> None:
        if self._command is not None:
            self.cmd_pub.publish(self._command)

    def command(self, vx: float, wz: float = 0.0) -> Twist | TwistStamped:
        """A cmd_vel message of the type the sim expects."""
        twist = Twist()
        twist.linear.x, twist.angular.z = vx, wz
        if not self.stamped:
            return twist
        stamped = TwistStamped(twist=twist)
        stamped.header.frame_id = "base_link"
        return stamped

    def drive(self, vx: float, wz: float = 0.0) -> None:
        """Keep commanding (vx, wz) until `release()`."""
        self._command = self.command(vx, wz)

    def release(self) -> None:
        self._command = None

    def call(self, client, request, timeout: float = 15.0):
        assert client.wait_for_service(timeout_sec=10.0), f"no {client.srv_name}"
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f"{client.srv_name} did not answer"
        return future.result()

    def load_episode(self, episode_id: str) -> Trigger.Response:
        parameter = Parameter("episode_id", value=episode_id).to_parameter_msg()
        result = self.call(self.set_parameters, SetParameters.Request(parameters=[parameter]))
        assert result.results[0].successful, result.results[0].reason
        return self.call(self.load, Trigger.Request())

    def last_pose(self) -> tuple[float, float, float]:
        return pose_of(self.odom.messages()[-1])

    def odom_after(self, t: float, timeout: float = 10.0) -> Odometry:
        """The first odometry stamped at or after sim time `t`."""
        found = self.odom.wait_for(lambda msg: stamp_s(msg) >= t - 1e-6, timeout)
        assert found, f"no odometry at sim time {t:.2f}"
        return found[1]

    def wait_at_rest(self, timeout: float = 10.0) -> Odometry:
        """Odometry once the base has not moved for 0.3 s of sim time."""

        def resting() -> bool:
            recent = self.odom.messages()[-20:]
            if len(recent) < 20 or stamp_s(recent[-1]) - stamp_s(recent[0]) < 0.3:
                return False
            last = pose_of(recent[-1])
            return all(
                np.allclose(pose_of(m), last, atol=1e-4)
                and abs(m.twist.twist.linear.x) < 1e-3
                and abs(m.twist.twist.angular.z) < 1e-3
                for m in recent
            )

        assert wait_for(resting, timeout), f"robot still moving at {self.last_pose()}"
        return self.odom.messages()[-1]


@pytest.fixture
def bench(ros_context, episodes_file):
    with ros_graph(ros_context) as graph:
        yield SimBench(graph, episodes_file)


def test_parameters_and_yaml_agree():
    loaded = yaml.safe_load(CONFIG.read_text())["sim"]["ros__parameters"]
    declared = {spec.name: spec.default for spec in PARAMETERS}
    assert loaded == declared
    assert all(type(loaded[name]) is type(value) for name, value in declared.items())
    assert all(spec.description for spec in PARAMETERS)


def test_publishes_camera_odometry_and_clock(bench):
    image_found = bench.rgb.wait_for(lambda _msg: True, 10.0)
    assert image_found and bench.info.wait_for(lambda _msg: True, 5.0)
    image = image_found[1]
    assert (image.width, image.height, image.encoding) == (WIDTH, HEIGHT, "rgb8")
    assert image.header.frame_id == "sim_camera"
    rgb = image_to_rgb(image)
    assert rgb.shape == (HEIGHT, WIDTH, 3) and rgb.std() > 5.0

    info = bench.info.messages()[0]
    fx = WIDTH / 2 / math.tan(math.radians(HFOV_DEG) / 2)
    assert (info.width, info.height, info.header.frame_id) == (WIDTH, HEIGHT, "sim_camera")
    assert info.k[0] == pytest.approx(fx) and info.k[4] == pytest.approx(fx)
    assert info.k[2] == pytest.approx((WIDTH - 1) / 2) and info.k[5] == pytest.approx(59.5)
    assert list(info.p) == [info.k[0], 0, info.k[2], 0, 0, info.k[4], info.k[5], 0, 0, 0, 1, 0]
    assert info.distortion_model == "plumb_bob" and list(info.d) == [0.0] * 5
    # Every image has its camera_info, with the same sim-time stamp.
    info_stamps = {stamp_s(m) for m in bench.info.messages()}
    assert stamp_s(image) in info_stamps

    odom = bench.odom.messages()[-1]
    assert (odom.header.frame_id, odom.child_frame_id) == ("odom", "base_link")
    x, y, yaw = pose_of(odom)
    assert (x, y, yaw) == pytest.approx((4.35, ROOM_Y, 0.0), abs=1e-3)

    assert bench.clock.wait_for(lambda msg: msg.clock.sec >= 1, 10.0), "sim time never reached 1 s"
    clocks = [m.clock.sec + m.clock.nanosec * 1e-9 for m in bench.clock.messages()]
    assert np.all(np.diff(clocks) > 0)
    assert np.allclose(np.diff(clocks), 0.02)  # one clock per 20 ms control tick
    stamps = [stamp_s(m) for m in bench.odom.messages()]
    assert np.allclose(np.diff(stamps), 0.02)
    images = [stamp_s(m) for m in bench.rgb.messages()]
    assert np.allclose(np.diff(images), 0.1)  # 10 Hz of sim time


def test_forward_twist_moves_along_the_heading(bench):
    bench.drive(0.5)
    start = bench.odom.wait_for(lambda msg: msg.twist.twist.linear.x > 0.49, 10.0)
    assert start, "the robot never reached 0.5 m/s"
    t0, first = stamp_s(start[1]), start[1]
    later = bench.odom_after(t0 + 1.0)
    bench.release()
    (x0, y0, yaw0), (x1, y1, yaw1) = pose_of(first), pose_of(later)
    elapsed = stamp_s(later) - t0
    assert elapsed == pytest.approx(1.0, abs=0.021)
    assert x1 - x0 == pytest.approx(0.5 * elapsed, abs=0.01)  # heading is +x
    assert y1 == pytest.approx(y0, abs=1e-3) and yaw1 == pytest.approx(yaw0, abs=1e-3)
    assert later.twist.twist.linear.x == pytest.approx(0.5, abs=0.01)


def test_driving_into_a_wall_does_not_pass_through(bench):
    assert bench.load_episode("west").success
    bench.drive(1.0)  # 1.25 m to the wall: about 1.3 s of sim time
    bench.odom.wait_for(lambda msg: msg.twist.twist.linear.x > 0.9, 10.0)
    rest = bench.wait_at_rest()
    bench.release()
    x, y, _ = pose_of(rest)
    wall_face = WALL_THICKNESS / 2
    assert x - wall_face == pytest.approx(0.25, abs=0.015)  # the robot's radius
    assert min(pose_of(m)[0] for m in bench.odom.messages()) >= wall_face + 0.24
    assert y == pytest.approx(ROOM_Y, abs=1e-3)


def test_cmd_vel_timeout_stops_the_base(bench):
    first = bench.odom.messages()[-1]
    bench.cmd_pub.publish(bench.command(0.5))  # once: held for cmd_vel_timeout_s = 0.5 s
    moving = bench.odom.wait_for(lambda msg: msg.twist.twist.linear.x > 0.4, 10.0)
    assert moving, "the single command never moved the robot"
    rest = bench.wait_at_rest()
    travelled = pose_of(rest)[0] - pose_of(first)[0]
    assert travelled == pytest.approx(0.25, abs=0.03)  # 0.5 m/s × 0.5 s
    moving_stamps = [stamp_s(m) for m in bench.odom.messages() if m.twist.twist.linear.x > 0.25]
    assert moving_stamps[-1] - moving_stamps[0] == pytest.approx(0.5, abs=0.05)


def test_stamped_commands_drive_the_base(ros_context, episodes_file):
    with ros_graph(ros_context) as graph:
        bench = SimBench(graph, episodes_file, use_stamped=True)
        bench.cmd_pub.publish(bench.command(0.0, 1.0))  # once: held for 0.5 s of sim time
        turning = bench.odom.wait_for(lambda msg: msg.twist.twist.angular.z > 0.9, 10.0)
        assert turning, "TwistStamped did not turn the robot"
        rest = bench.wait_at_rest()
        assert pose_of(rest)[2] == pytest.approx(0.5, abs=0.03)  # 1 rad/s for 0.5 s


def test_load_episode_through_the_parameter_service(bench, episodes_file):
    episode = generate_episodes("val_unseen", 1, seed=0)[0]
    bench.drive(0.3, 0.2)
    bench.odom.wait_for(lambda msg: msg.twist.twist.linear.x > 0.25, 10.0)
    # The last command is still held (0.5 s of sim time) when the load arrives: it must stop.
    bench.release()
    response = bench.load_episode(episode.episode_id)
    assert response.success, response.message
    assert episode.episode_id in response.message and episode.instruction_text in response.message
    assert bench.sim.get_parameter("episode_id").value == episode.episode_id

    # Latched: a subscriber that joins after the load still gets the episode.
    late = Collector(bench.graph.node("late"), String, "sim/episode", LATCHED)
    found = late.wait_for(lambda msg: json.loads(msg.data)["episode_id"] == episode.episode_id, 5.0)
    assert found, "no sim/episode for the loaded episode"
    announced = json.loads(found[1].data)
    assert announced["scene_id"] == episode.scene_id
    assert announced["instruction"] == episode.instruction_text
    assert announced["goal"] == list(episode.goal.position)
    assert announced["radius"] == episode.goal.radius
    assert announced["reference_path"] == [list(p) for p in episode.reference_path]
    assert announced["gt_locations"] == [list(p) for p in episode.gt_locations]
    assert announced["geodesic_distance"] == episode.info["geodesic_distance"]

    start = bench.odom_after(announced["start_time"] + 0.02)
    x, y, yaw = pose_of(start)
    assert (x, y) == pytest.approx(episode.start_position[:2], abs=0.005)
    assert math.remainder(yaw - episode.start_yaw, math.tau) == pytest.approx(0.0, abs=0.01)
    rest = bench.wait_at_rest()
    assert math.dist(pose_of(rest)[:2], episode.start_position[:2]) < 0.01


def test_unknown_episode_fails_cleanly(bench):
    before = bench.last_pose()
    response = bench.load_episode("no-such-episode")
    assert not response.success
    assert "'no-such-episode' is not in episodes.json.gz" in response.message
    # The node goes on in the episode it had.
    t = stamp_s(bench.odom.messages()[-1])
    assert bench.last_pose() == pytest.approx(before, abs=1e-6)
    bench.odom_after(t + 0.2)
    assert bench.sim.current_episode.episode_id == "east"
    reset = bench.call(
        bench.graph.node("resetter").create_client(Trigger, "sim/reset"), Trigger.Request()
    )
    assert reset.success and "east" in reset.message


def test_a_missing_episodes_file_fails_construction_and_destroys_cleanly(ros_context, tmp_path):
    node = None

    class Recorded(SimulatorNode):
        def __init__(self, **kwargs):
            nonlocal node
            node = self
            super().__init__(**kwargs)

    missing = tmp_path / "missing.json.gz"
    overrides = [Parameter("episodes_file", value=str(missing))]
    with pytest.raises(ValueError, match=f"episodes_file {missing} does not exist"):
        Recorded(context=ros_context, parameter_overrides=overrides)
    node.destroy_node()  # used to raise AttributeError: no _stopping


def test_navigator_querying_holds_the_world_until_released(ros_context, episodes_file):
    """While navigator/querying is true nothing moves and the clock stands still, even under a
    forward command; false (or, with hold_while_querying off, nothing) lets it run."""
    latched = QoSProfile(
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    overrides = [
        Parameter("episodes_file", value=str(episodes_file)),
        Parameter("width", value=64),
        Parameter("height", value=48),
        Parameter("cmd_vel_timeout_s", value=0.0),
    ]
    with ros_graph(ros_context) as graph:
        sim = graph.add(SimulatorNode(context=ros_context, parameter_overrides=overrides))
        probe = graph.node("probe")
        clock = Collector(probe, Clock, "clock")
        odom = Collector(probe, Odometry, "odom")
        hold = probe.create_publisher(Bool, "navigator/querying", latched)
        cmd = probe.create_publisher(Twist, "cmd_vel", RELIABLE)
        assert wait_for(lambda: len(clock.messages()) > 5, 10.0)
        hold.publish(Bool(data=True))
        assert wait_for(lambda: sim.held_s > 0.1, 5.0)
        twist = Twist()
        twist.linear.x = 0.3
        cmd.publish(twist)
        held_at = len(clock.messages())
        pose_held = pose_of(odom.messages()[-1])
        time.sleep(1.0)
        assert len(clock.messages()) - held_at <= 2  # at most what was in flight
        assert pose_of(odom.messages()[-1]) == pytest.approx(pose_held, abs=1e-6)
        hold.publish(Bool(data=False))
        assert wait_for(
            lambda: math.dist(pose_of(odom.messages()[-1])[:2], pose_held[:2]) > 0.1, 5.0
        )
        stamps = [m.clock.sec + m.clock.nanosec * 1e-9 for m in clock.messages()]
        assert max(b - a for a, b in itertools.pairwise(stamps)) < 0.05  # no jump over the hold
        cmd.publish(Twist())
