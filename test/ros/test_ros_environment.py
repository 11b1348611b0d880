"""The ROS 2 environment works: real rclpy, real Fast DDS, two processes exchanging an Image."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from image_publisher_process import make_image
from sensor_msgs.msg import Image
from std_msgs.msg import String

pytestmark = pytest.mark.ros


def test_rmw_is_fast_dds():
    assert rclpy.get_rmw_implementation_identifier() == "rmw_fastrtps_cpp"


def test_two_processes_exchange_an_image(ros_context, ros_domain_id):
    publisher = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).parents[1] / "helpers" / "image_publisher_process.py"),
            str(ros_domain_id),
        ],
    )
    node = rclpy.create_node("image_subscriber", context=ros_context)
    received: list[Image] = []
    node.create_subscription(Image, "camera/image", received.append, 10)
    ack = node.create_publisher(String, "ack", 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 30.0
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert received, "no Image arrived from the publisher process within 30 s"
        for _ in range(20):
            ack.publish(String(data="got it"))
            executor.spin_once(timeout_sec=0.05)
        publisher.wait(timeout=15)
    finally:
        if publisher.poll() is None:
            publisher.kill()
        executor.shutdown()
        node.destroy_node()

    msg = received[0]
    expected = make_image(48, 64)
    assert (msg.height, msg.width, msg.encoding, msg.step) == (48, 64, "rgb8", 64 * 3)
    assert msg.header.frame_id == "camera"
    got = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(48, 64, 3)
    want = np.frombuffer(bytes(expected.data), dtype=np.uint8).reshape(48, 64, 3)
    np.testing.assert_array_equal(got, want)
    assert publisher.returncode == 0


def test_in_process_nodes_exchange_image_with_sensor_qos(ros_context):
    """Two nodes in one process (how bringup composes nodes) with sensor-data QoS on the subscriber."""
    talker = rclpy.create_node("talker", context=ros_context)
    listener = rclpy.create_node("listener", context=ros_context)
    pub = talker.create_publisher(Image, "rgb", 10)
    received: list[Image] = []
    listener.create_subscription(Image, "rgb", received.append, rclpy.qos.qos_profile_sensor_data)
    executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
    executor.add_node(talker)
    executor.add_node(listener)
    try:
        image = make_image(4, 5)
        deadline = time.monotonic() + 20.0
        while not received and time.monotonic() < deadline:
            pub.publish(image)
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
    assert received and bytes(received[0].data) == bytes(make_image(4, 5).data)
