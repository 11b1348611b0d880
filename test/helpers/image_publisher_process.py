"""A separate ROS 2 process that publishes one known sensor_msgs/Image until it is acknowledged.

Used by test_ros_environment.py to prove that two processes exchange images over DDS.
"""

import sys

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from sensor_msgs.msg import Image
from std_msgs.msg import String


def make_image(height: int, width: int) -> Image:
    rows = np.arange(height, dtype=np.uint16)[:, None, None]
    cols = np.arange(width, dtype=np.uint16)[None, :, None]
    chans = np.arange(3, dtype=np.uint16)[None, None, :]
    pixels = ((rows * 7 + cols * 3 + chans * 50) % 256).astype(np.uint8)
    msg = Image()
    msg.header.frame_id = "camera"
    msg.height, msg.width = height, width
    msg.encoding = "rgb8"
    msg.step = width * 3
    msg.data = pixels.tobytes()
    return msg


def main() -> None:
    domain_id = int(sys.argv[1])
    rclpy.init(domain_id=domain_id)
    node = rclpy.create_node("image_publisher_process")
    publisher = node.create_publisher(Image, "camera/image", 10)
    image = make_image(48, 64)
    done = []
    node.create_subscription(String, "ack", lambda msg: done.append(msg.data), 10)

    def publish() -> None:
        image.header.stamp = node.get_clock().now().to_msg()
        publisher.publish(image)

    node.create_timer(0.05, publish)
    try:
        while rclpy.ok() and not done:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
