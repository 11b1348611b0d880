"""Isaac Sim through its ROS 2 bridge: navigator + motion_controller, every node on /clock.

    ros2 launch nvila_nav isaac_sim.launch.py model:=/path/to/checkpoint
    ros2 launch nvila_nav isaac_sim.launch.py model:=/path/to/checkpoint \
        camera_topic:=/go2/rgb odom_topic:=/go2/odom cmd_vel_topic:=/go2/cmd_vel
    ros2 topic pub --once /instruction std_msgs/String "data: 'Walk to the sofa and stop.'"

The topic arguments default to the bridge's own defaults: the ROS2 Camera Helper's `rgb` (and
`camera_info`, which these nodes do not need), ROS2 Publish Odometry's `odom`, ROS2 Subscribe
Twist's `cmd_vel` (geometry_msgs/Twist: config/isaac_sim.yaml keeps use_stamped false) and ROS2
Publish Clock's `/clock`, which every node follows (use_sim_time: true in config/isaac_sim.yaml).
docs/isaac.md wires a Go2 or H1 scene's Action Graph to it. The same graph starts without ROS
launch as `nvila-nav-bringup isaac_sim name:=value ...`; see launch/navigation.launch.py for how
the tables below become nodes.
"""

from nvila_nav.nodes.launch_support import launch_description

# name: (default, kind, description); an empty default means: the params files decide
ARGUMENTS = {
    "params_file": (
        "",
        "path",
        "ROS params file applied to every node after config/ (and the graph's "
        "overrides): sections name nodes (navigator:, motion_controller:, ...) or /** "
        "for all",
    ),
    "controller_params_file": (
        "",
        "path",
        "motion_controller params file applied after config/motion_controller.yaml",
    ),
    "model": (
        "",
        "str",
        "navigator model: a checkpoint directory (or an nvila_core preset: random weights, "
        "refused unless allow_random_weights); empty: the params files' (tiny)",
    ),
    "policy": ("", "str", "navigator policy: nvila | expert | random | forward; empty: nvila"),
    "allow_random_weights": (
        "",
        "bool",
        "true lets the navigator run a preset's random weights (tests, demos); empty: false",
    ),
    "camera_topic": ("rgb", "str", "sensor_msgs/Image the navigator follows"),
    "odom_topic": ("odom", "str", "nav_msgs/Odometry of the robot"),
    "cmd_vel_topic": ("cmd_vel", "str", "velocity output (point it at a twist_mux / safety input)"),
    "cmd_vel_stamped": (
        "",
        "bool",
        "true: cmd_vel is geometry_msgs/TwistStamped (Nav2, ros2_control); false: "
        "Twist (Isaac Sim); empty: the params files' (Twist)",
    ),
    "use_sim_time": (
        "",
        "bool",
        "true: every node runs on /clock (a simulator); empty: the params files'",
    ),
    "rviz": (
        "false",
        "bool",
        "true: also start RViz with config/rviz/nvila_nav.rviz (ros2 launch only; "
        "nvila-nav-bringup prints the rviz2 command instead)",
    ),
}
NODES = (
    {
        "executable": "navigator",
        "name": "navigator",
        "params_files": ("navigator.yaml",),
        "file_arguments": (),
        "parameters": {
            "model": "model",
            "policy": "policy",
            "allow_random_weights": "allow_random_weights",
            "use_sim_time": "use_sim_time",
        },
        "remappings": {"rgb": "camera_topic", "odom": "odom_topic"},
    },
    {
        "executable": "motion_controller",
        "name": "motion_controller",
        "params_files": ("motion_controller.yaml",),
        "file_arguments": ("controller_params_file",),
        "parameters": {"use_stamped": "cmd_vel_stamped", "use_sim_time": "use_sim_time"},
        "remappings": {"cmd_vel": "cmd_vel_topic", "odom": "odom_topic"},
    },
)
FALLBACKS = {}
OVERRIDES_FILE = "isaac_sim.yaml"
SHUTDOWN_ON_EXIT = ()


def generate_launch_description():
    return launch_description(ARGUMENTS, NODES, FALLBACKS, OVERRIDES_FILE, SHUTDOWN_ON_EXIT)
