"""Voice-instruction teleop on a robot: voice_teleop + navigator + motion_controller.

    ros2 launch nvila_nav voice_teleop.launch.py voice_params_file:=/path/to/my_voice.yaml

voice_teleop listens to the microphone by default (config/voice_teleop.yaml: audio_source;
docs/voice.md for the audio topic format). For the keyboard fallback run it in a terminal of
its own instead: `ros2 run nvila_nav voice_teleop`. The same node set starts without ROS launch
as `nvila-nav-bringup voice` (nvila_nav/nodes/bringup.py); test/test_launch_graphs.py keeps the
two identical.
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
    voice_params_file = LaunchConfiguration("voice_params_file")
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
                "voice_params_file",
                default_value=PathJoinSubstitution([config, "voice_teleop.yaml"]),
                description="voice_teleop parameters (audio source, backend, wake phrase, ...): "
                "a copy of config/voice_teleop.yaml with your changes",
            ),
            Node(
                package="nvila_nav",
                executable="voice_teleop",
                name="voice_teleop",
                parameters=[voice_params_file],
                remappings=[("cmd_vel", cmd_vel_topic)],
                output="screen",
            ),
            Node(
                package="nvila_nav",
                executable="navigator",
                name="navigator",
                parameters=[PathJoinSubstitution([config, "navigator.yaml"])],
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
