"""Helpers for tests on real rclpy and Fast DDS: background spinning, waiting, collecting, a robot.

Tests drive real nodes over DDS on loopback (never mocks of ROS). These helpers keep them fast
and free of fixed sleeps: spin every node in a background executor, wait on predicates with a
deadline, record what arrives with its arrival time, and close the loop with a kinematic base.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import rclpy
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosgraph_msgs.msg import Clock

MsgT = TypeVar("MsgT")
NodeT = TypeVar("NodeT", bound=Node)

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Simulated time starts far from wall time, so a node on the wrong clock sees ancient odometry.
SIM_TIME_START_NS = 1_000 * 10**9
_DISCOVERY_RANGE = "ROS_AUTOMATIC_DISCOVERY_RANGE"


@contextmanager
def isolated_context(domain_id: int) -> Iterator[Context]:
    """A private rclpy context that discovers no other process, even on the same domain.

    Other test runs on this machine (another checkout, a parallel session) use the same topic
    names, and a shared domain would cross their wires. ROS_AUTOMATIC_DISCOVERY_RANGE=OFF (Iron+)
    is read when the context starts, so it is set only around rclpy.init; nodes of this context
    still talk to each other. Humble ignores the variable and relies on `domain_id` alone.
    """
    context = Context()
    previous = os.environ.get(_DISCOVERY_RANGE)
    os.environ[_DISCOVERY_RANGE] = "OFF"
    try:
        rclpy.init(context=context, domain_id=domain_id)
    finally:
        if previous is None:
            del os.environ[_DISCOVERY_RANGE]
        else:
            os.environ[_DISCOVERY_RANGE] = previous
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.005) -> bool:
    """Poll `predicate` until it is truthy or `timeout` seconds pass; True if it became truthy."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class RosGraph:
    """Nodes on one context, spun by one executor in a background thread.

    The test thread publishes, waits and asserts while callbacks run. A SingleThreadedExecutor,
    because rclpy's MultiThreadedExecutor can spin at 100% CPU re-queueing pending tasks and
    starve every callback for seconds (ros2/rclpy#1452, #1223; seen here with rclpy 9.1.2).
    `close()` stops spinning and destroys the nodes, newest first.
    """

    def __init__(self, context: Context):
        self.context = context
        self._executor = SingleThreadedExecutor(context=context)
        self._nodes: list[Node] = []
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def add(self, node: NodeT) -> NodeT:
        """Spin `node` from now on and destroy it on close."""
        self._nodes.append(node)
        self._executor.add_node(node)
        return node

    def node(self, name: str) -> Node:
        """A plain node on this context for the test's own publishers and subscriptions."""
        return self.add(rclpy.create_node(name, context=self.context))

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=5.0)
        self._thread.join(timeout=5.0)
        for node in reversed(self._nodes):
            node.destroy_node()
        self._nodes.clear()


@contextmanager
def ros_graph(context: Context) -> Iterator[RosGraph]:
    graph = RosGraph(context)
    try:
        yield graph
    finally:
        graph.close()


class Collector(Generic[MsgT]):
    """Subscribes to a topic and keeps every message with its arrival time (time.monotonic)."""

    def __init__(self, node: Node, msg_type: type[MsgT], topic: str, qos: QoSProfile = RELIABLE):
        self._lock = threading.Lock()
        self._items: list[tuple[float, MsgT]] = []
        node.create_subscription(msg_type, topic, self._on_message, qos)

    def _on_message(self, msg: MsgT) -> None:
        with self._lock:
            self._items.append((time.monotonic(), msg))

    def timed(self, since: float = -math.inf) -> list[tuple[float, MsgT]]:
        """(arrival time, message) pairs that arrived at or after `since`."""
        with self._lock:
            return [(t, msg) for t, msg in self._items if t >= since]

    def messages(self, since: float = -math.inf) -> list[MsgT]:
        return [msg for _, msg in self.timed(since)]

    def wait_for(
        self, predicate: Callable[[MsgT], bool], timeout: float, since: float = -math.inf
    ) -> tuple[float, MsgT] | None:
        """The first (arrival time, message) since `since` that satisfies `predicate`, or None."""
        found: list[tuple[float, MsgT]] = []

        def check() -> bool:
            found.extend(item for item in self.timed(since) if predicate(item[1]))
            return bool(found)

        return found[0] if wait_for(check, timeout) else None


class KinematicBase(Node):
    """A unicycle robot with a fixed physics step: a simulator standing in for the real base.

    Every tick of its timer (`rate_hz`) moves the body by the latest cmd_vel for exactly one step
    and publishes odom (frames odom/base_link). Stepping rather than integrating wall time keeps
    the motion independent of how busy the test machine is: a stalled process stalls the world
    too. With `sim_time` it also publishes /clock, one step per tick, and stamps odom with it,
    for nodes running with use_sim_time. `stop_odometry()` silences odom while the body keeps
    obeying cmd_vel, like a crashed odometry driver on a moving robot. `block()` puts a wall in
    front of it: the body no longer moves (odometry keeps flowing), like a robot pushing a wall.
    """

    def __init__(
        self,
        context: Context,
        stamped: bool = False,
        rate_hz: float = 50.0,
        sim_time: bool = False,
    ):
        super().__init__("kinematic_base", context=context)
        self._lock = threading.Lock()
        self._x = self._y = self._yaw = 0.0
        self._vx = self._wz = 0.0
        self._step_ns = round(1e9 / rate_hz)
        self._sim_ns = SIM_TIME_START_NS if sim_time else None
        self._publishing = True
        self._blocked = False
        self.last_odom_time = -math.inf
        self._odom_pub = self.create_publisher(Odometry, "odom", RELIABLE)
        self._clock_pub = self.create_publisher(Clock, "/clock", RELIABLE) if sim_time else None
        self.create_subscription(
            TwistStamped if stamped else Twist, "cmd_vel", self._on_cmd_vel, RELIABLE
        )
        self.create_timer(1.0 / rate_hz, self._step)

    def _on_cmd_vel(self, msg: Twist | TwistStamped) -> None:
        twist = msg.twist if isinstance(msg, TwistStamped) else msg
        with self._lock:
            self._vx, self._wz = twist.linear.x, twist.angular.z

    def _step(self) -> None:
        with self._lock:
            dt = self._step_ns * 1e-9
            if self._blocked:
                pass
            elif abs(self._wz) < 1e-9:
                self._x += self._vx * dt * math.cos(self._yaw)
                self._y += self._vx * dt * math.sin(self._yaw)
            else:  # Exact for a constant twist: an arc.
                yaw = self._yaw + self._wz * dt
                self._x += self._vx / self._wz * (math.sin(yaw) - math.sin(self._yaw))
                self._y -= self._vx / self._wz * (math.cos(yaw) - math.cos(self._yaw))
                self._yaw = yaw
            if self._sim_ns is None:
                stamp = self.get_clock().now().to_msg()
            else:
                self._sim_ns += self._step_ns
                stamp = Time(nanoseconds=self._sim_ns).to_msg()
                self._clock_pub.publish(Clock(clock=stamp))
            if not self._publishing:
                return
            odom = Odometry()
            odom.header.stamp = stamp
            odom.header.frame_id = "odom"
            odom.child_frame_id = "base_link"
            odom.pose.pose.position.x = self._x
            odom.pose.pose.position.y = self._y
            odom.pose.pose.orientation.z = math.sin(self._yaw / 2.0)
            odom.pose.pose.orientation.w = math.cos(self._yaw / 2.0)
            odom.twist.twist.linear.x = self._vx
            odom.twist.twist.angular.z = self._wz
            self._odom_pub.publish(odom)
            self.last_odom_time = time.monotonic()

    def pose(self) -> tuple[float, float, float]:
        """(x, y, yaw) in the odom frame, yaw unwrapped (radians, CCW positive)."""
        with self._lock:
            return self._x, self._y, self._yaw

    def command(self) -> tuple[float, float]:
        """The twist the base is executing: (linear x, angular z)."""
        with self._lock:
            return self._vx, self._wz

    def block(self) -> None:
        """From now on the body stays where it is, whatever it is commanded."""
        with self._lock:
            self._blocked = True

    def stop_odometry(self) -> float:
        """Stop publishing odom; returns the time.monotonic() of the last odom published."""
        with self._lock:
            self._publishing = False
            return self.last_odom_time
