"""Evaluation in the embedded simulator: sim + navigator + motion_controller + evaluator.

    nvila-sim episodes --split val_unseen --n 5 --out episodes.json.gz   # or any R2R file
    ros2 launch nvila_nav sim_eval.launch.py episodes:=episodes.json.gz policy:=expert \
        output_dir:=outputs/eval
    ros2 launch nvila_nav sim_eval.launch.py episodes:=episodes.json.gz model:=/path/to/ckpt

The launch ends when the evaluator is done (summary in output_dir). Every node runs on the
simulator's clock (config/sim_eval.yaml sets use_sim_time), and the simulator holds its clock
while the navigator's policy decides. The same graph starts without ROS launch as
`nvila-nav-bringup sim_eval name:=value ...` (or --episodes F --output-dir D ...); see
launch/navigation.launch.py for how the tables below become nodes.
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
    "episodes": (
        "",
        "path",
        "R2R-format episodes (.json/.json.gz) for the sim and the evaluator (required; "
        "`nvila-sim episodes` makes them)",
    ),
    "output_dir": ("", "path", "evaluator output folder; empty: outputs/evaluation"),
    "label": ("", "str", "evaluator policy_label; empty: the policy argument, else nvila"),
    "max_episodes": ("", "int", "episodes to run; empty or 0: all"),
    "real_time_factor": ("", "float", "sim speed-up (sim s per wall s); empty: 1.0"),
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
        "executable": "sim",
        "name": "sim",
        "params_files": ("sim.yaml",),
        "file_arguments": (),
        "parameters": {
            "episodes_file": "episodes",
            "real_time_factor": "real_time_factor",
            "use_stamped": "cmd_vel_stamped",
            "use_sim_time": "use_sim_time",
        },
        "remappings": {"rgb": "camera_topic", "odom": "odom_topic", "cmd_vel": "cmd_vel_topic"},
    },
    {
        "executable": "motion_controller",
        "name": "motion_controller",
        "params_files": ("motion_controller.yaml",),
        "file_arguments": ("controller_params_file",),
        "parameters": {"use_stamped": "cmd_vel_stamped", "use_sim_time": "use_sim_time"},
        "remappings": {"cmd_vel": "cmd_vel_topic", "odom": "odom_topic"},
    },
    {
        "executable": "evaluator",
        "name": "evaluator",
        "params_files": ("evaluator.yaml",),
        "file_arguments": (),
        "parameters": {
            "episodes_file": "episodes",
            "output_dir": "output_dir",
            "policy_label": "label",
            "max_episodes": "max_episodes",
            "use_sim_time": "use_sim_time",
        },
        "remappings": {"odom": "odom_topic"},
    },
)
FALLBACKS = {"label": "policy"}
OVERRIDES_FILE = "sim_eval.yaml"
SHUTDOWN_ON_EXIT = ("evaluator",)


def generate_launch_description():
    return launch_description(ARGUMENTS, NODES, FALLBACKS, OVERRIDES_FILE, SHUTDOWN_ON_EXIT)
