"""On a robot: navigator (NVILA policy) + motion_controller.

    ros2 launch nvila_nav navigation.launch.py camera_topic:=/camera/color/image_raw \
        cmd_vel_topic:=/cmd_vel_vlm params_file:=/path/to/my_robot.yaml

The same node set starts without ROS launch as `nvila-nav-bringup navigation`
(nvila_nav/nodes/bringup.py); test/test_launch_graphs.py keeps the two identical.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare("nvila_nav"), "config"])
    camera_topic = LaunchConfiguration("camera_topic")
    cmd_vel_topic = LaunchConfiguration("cmd_vel_topic")
    params_file = LaunchConfiguration("params_file")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "camera_topic", default_value="rgb", description="sensor_msgs/Image to follow"
            ),
            DeclareLaunchArgument(
                "cmd_vel_topic",
                default_value="cmd_vel",
                description="velocity output (point it at a twist_mux / safety input)",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([config, "navigator.yaml"]),
                description="navigator parameters (model path, policy, ...): a copy of "
                "config/navigator.yaml with your changes",
            ),
            Node(
                package="nvila_nav",
                executable="navigator",
                name="navigator",
                parameters=[params_file],
                remappings=[("rgb", camera_topic)],
                output="screen",
            ),
            Node(
                package="nvila_nav",
                executable="motion_controller",
                name="motion_controller",
                parameters=[PathJoinSubstitution([config, "motion_controller.yaml"])],
                remappings=[("cmd_vel", cmd_vel_topic)],
                output="screen",
            ),
        ]
    )
