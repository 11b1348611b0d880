"""On a robot: navigator (NVILA policy) + motion_controller.

    ros2 launch nvila_nav navigation.launch.py model:=/path/to/checkpoint \
        camera_topic:=/camera/color/image_raw odom_topic:=/odom cmd_vel_topic:=/cmd_vel_vlm
    ros2 launch nvila_nav navigation.launch.py params_file:=/path/to/my_robot.yaml rviz:=true
    ros2 launch nvila_nav navigation.launch.py -s        # every argument, with its default

The navigator refuses a preset with random weights (the default model, tiny) unless
allow_random_weights:=true: point model at a checkpoint. Empty arguments leave the parameter to
the params files (config/*.yaml, then params_file). The same graph starts without ROS launch
as `nvila-nav-bringup navigation name:=value ...` (nvila_nav/nodes/bringup.py, same arguments
and defaults); test/test_launch_graphs.py keeps the tables below equal to bringup's, and
nvila_nav/nodes/launch_support.py turns them into Node actions.
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
OVERRIDES_FILE = None
SHUTDOWN_ON_EXIT = ()


def generate_launch_description():
    return launch_description(ARGUMENTS, NODES, FALLBACKS, OVERRIDES_FILE, SHUTDOWN_ON_EXIT)
