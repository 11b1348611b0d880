"""The isaac_sim graph (launch/isaac_sim.launch.py, `nvila-nav-bringup isaac_sim`) against a
stand-in for Isaac Sim's ROS 2 bridge: /clock far from wall time, `rgb` images and `odom`
stamped on it, a base that obeys `cmd_vel` as geometry_msgs/Twist. The graph must run on sim
time (a node on the wall clock would see the stamps as hours old) and drive the base."""

import math
import threading

import numpy as np
import pytest
from geometry_msgs.msg import Twist
from rclpy.qos import qos_profile_sensor_data
from ros_harness import RELIABLE, Collector, KinematicBase, isolated_context, ros_graph, wait_for
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String

from nvila_nav.nodes.bringup import Bringup

pytestmark = pytest.mark.ros


class BridgeCamera:
    """Publishes `rgb` (rgb8, 64x48) at every 5th /clock tick, stamped with that clock."""

    def __init__(self, node) -> None:
        self._pub = node.create_publisher(Image, "rgb", qos_profile_sensor_data)
        self._lock = threading.Lock()
        self._ticks = 0
        self.published = 0
        pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        self._data = pixels.tobytes()
        node.create_subscription(Clock, "/clock", self._on_clock, RELIABLE)

    def _on_clock(self, msg: Clock) -> None:
        with self._lock:
            self._ticks += 1
            if self._ticks % 5:
                return
        image = Image(height=48, width=64, encoding="rgb8", step=64 * 3, data=self._data)
        image.header.stamp = msg.clock
        image.header.frame_id = "sim_camera"
        self._pub.publish(image)
        self.published += 1


def test_isaac_sim_graph_drives_a_bridge_on_sim_time(ros_domain_id):
    with isolated_context(ros_domain_id) as context:
        nodes = None
        try:
            # the bridge stand-in stops publishing (ros_graph closes) before the graph closes
            with ros_graph(context) as graph:
                base = graph.add(KinematicBase(context, stamped=False, rate_hz=50.0, sim_time=True))
                bridge = graph.node("isaac_bridge")
                camera = BridgeCamera(bridge)
                commands = Collector(bridge, Twist, "cmd_vel")
                instruction = bridge.create_publisher(String, "instruction", RELIABLE)
                nodes = Bringup("isaac_sim", context=context, arguments={"policy": "forward"})
                nodes.start()
                navigator = nodes.nodes["navigator"]
                controller = nodes.nodes["motion_controller"]
                assert navigator.get_parameter("use_sim_time").value
                assert controller.get_parameter("use_sim_time").value
                assert not controller.get_parameter("use_stamped").value
                assert wait_for(lambda: camera.published >= 5, 30.0)
                assert wait_for(lambda: instruction.get_subscription_count() >= 1, 10.0)
                instruction.publish(String(data="Walk forward down the hall."))
                moving = commands.wait_for(lambda m: m.linear.x > 0.05, timeout=60.0)
                assert moving is not None, "the graph never drove the base"
                # the base moves by the controller's Twist: at least one 25 cm step
                assert wait_for(lambda: math.hypot(*base.pose()[:2]) > 0.2, 60.0)
                # sim time: the navigator's clock is the bridge's (1000 s + ticks), not wall time
                now = navigator.get_clock().now().nanoseconds * 1e-9
                assert 1000.0 < now < 1000.0 + 3600.0
        finally:
            if nodes is not None:
                nodes.close()
