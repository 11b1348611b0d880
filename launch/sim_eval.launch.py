"""Evaluation in the embedded simulator: sim + navigator + motion_controller + evaluator.

    ros2 launch nvila_nav sim_eval.launch.py

Set the episodes file, policy and model in config/ or in a params file passed to each node. The
same node set starts without ROS launch as `nvila-nav-bringup sim_eval` (nvila_nav/nodes/bringup.py);
test/test_launch_graphs.py keeps the two identical. Every node runs on the simulator's clock
(config/sim_eval.yaml sets use_sim_time).
"""

from launch import LaunchDescription
from launch.substitutions import PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare("nvila_nav"), "config"])
    sim_eval = PathJoinSubstitution([config, "sim_eval.yaml"])
    return LaunchDescription(
        [
            Node(
                package="nvila_nav",
                executable="navigator",
                name="navigator",
                parameters=[PathJoinSubstitution([config, "navigator.yaml"]), sim_eval],
                remappings=[("rgb", "rgb")],
                output="screen",
            ),
            Node(
                package="nvila_nav",
                executable="sim",
                name="sim",
                parameters=[PathJoinSubstitution([config, "sim.yaml"]), sim_eval],
                output="screen",
            ),
            Node(
                package="nvila_nav",
                executable="motion_controller",
                name="motion_controller",
                parameters=[PathJoinSubstitution([config, "motion_controller.yaml"]), sim_eval],
                remappings=[("cmd_vel", "cmd_vel")],
                output="screen",
            ),
            Node(
                package="nvila_nav",
                executable="evaluator",
                name="evaluator",
                parameters=[PathJoinSubstitution([config, "evaluator.yaml"]), sim_eval],
                output="screen",
            ),
        ]
    )
