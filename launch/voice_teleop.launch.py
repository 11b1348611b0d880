"""Voice-instruction teleop on a robot: voice_teleop + navigator + motion_controller.

    ros2 launch nvila_nav voice_teleop.launch.py model:=/path/to/checkpoint
    ros2 launch nvila_nav voice_teleop.launch.py model:=/path/to/checkpoint \
        audio_source:=topic voice_params_file:=/path/to/my_voice.yaml

voice_teleop listens to the microphone by default (audio_source; docs/voice.md for the audio
topic format); without one it stops at once naming audio_source (file, topic, none). For the
keyboard fallback run it in a terminal of its own instead: `ros2 run nvila_nav voice_teleop`.
An instruction spoken while the navigator still loads its model is kept and started when it is
active. The same graph starts without ROS launch as `nvila-nav-bringup voice name:=value ...`;
see launch/navigation.launch.py for how the tables below become nodes.
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
    "voice_params_file": (
        "",
        "path",
        "voice_teleop params file applied after config/voice_teleop.yaml",
    ),
    "audio_source": ("", "str", "voice_teleop: microphone | file | topic | none"),
    "audio_file": ("", "path", "voice_teleop: WAV file when audio_source is file"),
}
NODES = (
    {
        "executable": "voice_teleop",
        "name": "voice_teleop",
        "params_files": ("voice_teleop.yaml",),
        "file_arguments": ("voice_params_file",),
        "parameters": {
            "audio_source": "audio_source",
            "audio_file": "audio_file",
            "cmd_vel_stamped": "cmd_vel_stamped",
            "use_sim_time": "use_sim_time",
        },
        "remappings": {"cmd_vel": "cmd_vel_topic"},
    },
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
