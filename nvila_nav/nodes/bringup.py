"""`nvila-nav-bringup <graph>`: the launch files' node sets in one process, without `ros2 launch`.

`launch` / `launch_ros` are not pip-installable, so a machine with only the rclpy wheels (CI, a
laptop) starts the same graph here: the same executables' node classes, the same parameter files
(passed to rcl exactly as `ros2 launch` passes them, `--params-file`), the same remappings, on one
executor thread. `GRAPHS` is the single description of both; a test checks that
`launch/*.launch.py` name the same executables, parameter files and remappings, so they cannot drift.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import rclpy
import yaml
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from nvila_nav.nodes.process import ShutdownRequest, spin_in_background, stop_executor


@dataclass(frozen=True)
class Argument:
    """A launch argument: `ros2 launch nvila_nav <graph>.launch.py name:=value`, and the same
    `name:=value` (or `--name value`) for `nvila-nav-bringup <graph>`.

    default "" means "not given": the parameter files decide. kind: str, path (made absolute),
    bool (true/false), int or float; it types the parameter the argument sets.
    """

    name: str
    description: str
    default: str = ""
    kind: str = "str"

    def convert(self, text: str) -> object:
        """The parameter value for a given (non-empty) argument text; ValueError if malformed."""
        if self.kind == "path":
            return os.path.abspath(os.path.expanduser(text))
        if self.kind == "bool":
            if text.lower() not in ("true", "false"):
                raise ValueError(f"argument {self.name} must be true or false, got {text!r}")
            return text.lower() == "true"
        if self.kind in ("int", "float"):
            try:
                return int(text) if self.kind == "int" else float(text)
            except ValueError:
                raise ValueError(
                    f"argument {self.name} must be {self.kind}, got {text!r}"
                ) from None
        return text


ARGUMENTS: dict[str, Argument] = {
    argument.name: argument
    for argument in (
        Argument(
            "params_file",
            "ROS params file applied to every node after config/ (and the graph's overrides): "
            "sections name nodes (navigator:, motion_controller:, ...) or /** for all",
            kind="path",
        ),
        Argument(
            "controller_params_file",
            "motion_controller params file applied after config/motion_controller.yaml",
            kind="path",
        ),
        Argument(
            "voice_params_file",
            "voice_teleop params file applied after config/voice_teleop.yaml",
            kind="path",
        ),
        Argument(
            "model",
            "navigator model: a checkpoint directory (or an nvila_core preset: random weights, "
            "refused unless allow_random_weights); empty: the params files' (tiny)",
        ),
        Argument("policy", "navigator policy: nvila | expert | random | forward; empty: nvila"),
        Argument(
            "allow_random_weights",
            "true lets the navigator run a preset's random weights (tests, demos); empty: false",
            kind="bool",
        ),
        Argument("camera_topic", "sensor_msgs/Image the navigator follows", default="rgb"),
        Argument("odom_topic", "nav_msgs/Odometry of the robot", default="odom"),
        Argument(
            "cmd_vel_topic",
            "velocity output (point it at a twist_mux / safety input)",
            default="cmd_vel",
        ),
        Argument(
            "cmd_vel_stamped",
            "true: cmd_vel is geometry_msgs/TwistStamped (Nav2, ros2_control); false: Twist "
            "(Isaac Sim); empty: the params files' (Twist)",
            kind="bool",
        ),
        Argument(
            "use_sim_time",
            "true: every node runs on /clock (a simulator); empty: the params files'",
            kind="bool",
        ),
        Argument(
            "rviz",
            "true: also start RViz with config/rviz/nvila_nav.rviz (ros2 launch only; "
            "nvila-nav-bringup prints the rviz2 command instead)",
            default="false",
            kind="bool",
        ),
        Argument(
            "episodes",
            "R2R-format episodes (.json/.json.gz) for the sim and the evaluator (required; "
            "`nvila-sim episodes` makes them)",
            kind="path",
        ),
        Argument("output_dir", "evaluator output folder; empty: outputs/evaluation", kind="path"),
        Argument("label", "evaluator policy_label; empty: the policy argument, else nvila"),
        Argument("max_episodes", "episodes to run; empty or 0: all", kind="int"),
        Argument("real_time_factor", "sim speed-up (sim s per wall s); empty: 1.0", kind="float"),
        Argument("audio_source", "voice_teleop: microphone | file | topic | none"),
        Argument("audio_file", "voice_teleop: WAV file when audio_source is file", kind="path"),
    )
}
FALLBACKS = {"label": "policy"}
"""An argument left empty takes this other argument's value (the evaluator's label)."""
ROBOT_ARGUMENTS = (
    "params_file",
    "controller_params_file",
    "model",
    "policy",
    "allow_random_weights",
    "camera_topic",
    "odom_topic",
    "cmd_vel_topic",
    "cmd_vel_stamped",
    "use_sim_time",
)


@dataclass(frozen=True)
class NodeSpec:
    """One node of a graph, as a launch_ros `Node(...)` action names it.

    params_files: config/ files, in order. file_arguments: arguments naming one more params
    file for this node, applied next when given. parameters: (parameter, argument) pairs set
    when the argument is given. remappings: (topic, argument): the topic is remapped to the
    argument's value (its default is the topic itself).
    """

    executable: str
    name: str
    params_files: tuple[str, ...]
    file_arguments: tuple[str, ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    lifecycle: bool = False


RCLError = rclpy_implementation.RCLError


@dataclass(frozen=True)
class GraphSpec:
    nodes: tuple[NodeSpec, ...]
    description: str
    overrides_file: str | None = None
    """A params file applied to every node after its own (e.g. use_sim_time for simulation)."""
    done_when: str | None = None
    """Name of a node whose `finished` event ends the bringup (the evaluator)."""
    arguments: tuple[str, ...] = ROBOT_ARGUMENTS
    """The launch arguments the graph declares (names in ARGUMENTS)."""
    launch_file: str = ""


# Where each console script's node class lives (setup.py: `<executable> = <module>:main`).
NODE_CLASSES = {
    "navigator": "nvila_nav.nodes.navigator:NavigatorNode",
    "motion_controller": "nvila_nav.nodes.motion_controller:MotionControllerNode",
    "sim": "nvila_nav.nodes.simulator:SimulatorNode",
    "evaluator": "nvila_nav.nodes.evaluator:EvaluatorNode",
    "voice_teleop": "nvila_nav.nodes.voice_teleop:VoiceTeleopNode",
}

_SIM_TIME = (("use_sim_time", "use_sim_time"),)
NAVIGATOR = NodeSpec(
    executable="navigator",
    name="navigator",
    params_files=("navigator.yaml",),
    parameters=(
        ("model", "model"),
        ("policy", "policy"),
        ("allow_random_weights", "allow_random_weights"),
        *_SIM_TIME,
    ),
    remappings=(("rgb", "camera_topic"), ("odom", "odom_topic")),
    lifecycle=True,
)
MOTION_CONTROLLER = NodeSpec(
    executable="motion_controller",
    name="motion_controller",
    params_files=("motion_controller.yaml",),
    file_arguments=("controller_params_file",),
    parameters=(("use_stamped", "cmd_vel_stamped"), *_SIM_TIME),
    remappings=(("cmd_vel", "cmd_vel_topic"), ("odom", "odom_topic")),
)
SIM = NodeSpec(
    executable="sim",
    name="sim",
    params_files=("sim.yaml",),
    parameters=(
        ("episodes_file", "episodes"),
        ("real_time_factor", "real_time_factor"),
        ("use_stamped", "cmd_vel_stamped"),
        *_SIM_TIME,
    ),
    remappings=(("rgb", "camera_topic"), ("odom", "odom_topic"), ("cmd_vel", "cmd_vel_topic")),
)
EVALUATOR = NodeSpec(
    executable="evaluator",
    name="evaluator",
    params_files=("evaluator.yaml",),
    parameters=(
        ("episodes_file", "episodes"),
        ("output_dir", "output_dir"),
        ("policy_label", "label"),
        ("max_episodes", "max_episodes"),
        *_SIM_TIME,
    ),
    remappings=(("odom", "odom_topic"),),
)
VOICE_TELEOP = NodeSpec(
    executable="voice_teleop",
    name="voice_teleop",
    params_files=("voice_teleop.yaml",),
    file_arguments=("voice_params_file",),
    parameters=(
        ("audio_source", "audio_source"),
        ("audio_file", "audio_file"),
        ("cmd_vel_stamped", "cmd_vel_stamped"),
        *_SIM_TIME,
    ),
    remappings=(("cmd_vel", "cmd_vel_topic"),),
)

GRAPHS: dict[str, GraphSpec] = {
    "navigation": GraphSpec(
        nodes=(NAVIGATOR, MOTION_CONTROLLER),
        description="on a robot: navigator + motion_controller",
        arguments=(*ROBOT_ARGUMENTS, "rviz"),
        launch_file="navigation.launch.py",
    ),
    "sim_eval": GraphSpec(
        # The navigator comes first: configuring it loads the model stack (torch, and triton's
        # LLVM through transformers), which segfaults if Mesa's LLVM is already loaded by the
        # simulator's EGL renderer in this process; the other order works.
        nodes=(NAVIGATOR, SIM, MOTION_CONTROLLER, EVALUATOR),
        description="embedded simulator + navigator + motion_controller + evaluator",
        overrides_file="sim_eval.yaml",
        done_when="evaluator",
        arguments=(
            *ROBOT_ARGUMENTS,
            "episodes",
            "output_dir",
            "label",
            "max_episodes",
            "real_time_factor",
            "rviz",
        ),
        launch_file="sim_eval.launch.py",
    ),
    "isaac_sim": GraphSpec(
        # Isaac Sim's ROS 2 bridge defaults are the graph's own topic names (rgb, camera_info,
        # odom, cmd_vel, /clock); isaac_sim.yaml puts every node on sim time.
        nodes=(NAVIGATOR, MOTION_CONTROLLER),
        description="Isaac Sim through its ROS 2 bridge: navigator + motion_controller on sim time",
        overrides_file="isaac_sim.yaml",
        arguments=(*ROBOT_ARGUMENTS, "rviz"),
        launch_file="isaac_sim.launch.py",
    ),
    "voice": GraphSpec(
        nodes=(VOICE_TELEOP, NAVIGATOR, MOTION_CONTROLLER),
        description="voice instructions on a robot: voice_teleop + navigator + motion_controller",
        arguments=(*ROBOT_ARGUMENTS, "voice_params_file", "audio_source", "audio_file"),
        launch_file="voice_teleop.launch.py",
    ),
}


STAMPED_FOLLOWERS = (("sim", "use_stamped"), ("voice_teleop", "cmd_vel_stamped"))
"""Parameters that must equal the motion controller's `use_stamped`: Twist and TwistStamped on
one topic cannot coexist in one process (creating the second fails), and across processes they
never match."""


class GraphStartError(RuntimeError):
    """The graph cannot start as configured (a missing file, a refused model, no microphone):
    one line for the user, no traceback."""


def launch_tables(graph_name: str) -> dict:
    """The literal tables a graph's launch file holds (ARGUMENTS, NODES, FALLBACKS,
    OVERRIDES_FILE), built from GRAPHS and ARGUMENTS; test/test_launch_graphs.py compares."""
    graph = GRAPHS[graph_name]
    return {
        "ARGUMENTS": {
            name: (ARGUMENTS[name].default, ARGUMENTS[name].kind, ARGUMENTS[name].description)
            for name in graph.arguments
        },
        "NODES": tuple(
            {
                "executable": spec.executable,
                "name": spec.name,
                "params_files": spec.params_files,
                "file_arguments": spec.file_arguments,
                "parameters": dict(spec.parameters),
                "remappings": dict(spec.remappings),
            }
            for spec in graph.nodes
        ),
        "FALLBACKS": {k: v for k, v in FALLBACKS.items() if k in graph.arguments},
        "OVERRIDES_FILE": graph.overrides_file,
    }


def argument_values(graph: GraphSpec, given: dict[str, str]) -> dict[str, str]:
    """Every declared argument's text: given, else its fallback argument's, else its default.
    Unknown names raise ValueError (a typo must not pass silently)."""
    unknown = sorted(set(given) - set(graph.arguments))
    if unknown:
        raise ValueError(
            f"unknown argument(s) {', '.join(unknown)} (this graph takes: "
            f"{', '.join(graph.arguments)})"
        )
    values = {name: given.get(name, ARGUMENTS[name].default) for name in graph.arguments}
    for name, other in FALLBACKS.items():
        if name in values and not values[name] and other in values:
            values[name] = values[other]
    return values


def argument_parameters(graph: GraphSpec, values: dict[str, str]) -> dict[str, dict]:
    """{node name: {parameter: typed value}} for the given (non-empty) arguments."""
    params: dict[str, dict] = {}
    for spec in graph.nodes:
        for parameter, name in spec.parameters:
            if values.get(name):
                params.setdefault(spec.name, {})[parameter] = ARGUMENTS[name].convert(values[name])
    return params


def matched_cmd_vel_types(
    graph: GraphSpec, extra_params_files=(), values: dict[str, str] | None = None
) -> tuple[dict[str, dict], list[str]]:
    """({node: {parameter: value}}, notes): the nodes of `graph` that read or write cmd_vel set
    to the motion controller's Twist / TwistStamped choice where their own params files say
    otherwise (e.g. `use_stamped: true` only in a controller params file)."""
    specs = {spec.name: spec for spec in graph.nodes}
    if "motion_controller" not in specs:
        return {}, []
    controller = effective_parameters(specs["motion_controller"], graph, extra_params_files, values)
    stamped = bool(controller.get("use_stamped", False))
    overrides: dict[str, dict] = {}
    notes = []
    for node, parameter in STAMPED_FOLLOWERS:
        if node not in specs:
            continue
        own = effective_parameters(specs[node], graph, extra_params_files, values)
        if bool(own.get(parameter, False)) != stamped:
            overrides[node] = {parameter: stamped}
            notes.append(
                f"{node} {parameter} set to {str(stamped).lower()} to match motion_controller "
                f"use_stamped ({'TwistStamped' if stamped else 'Twist'} on cmd_vel)"
            )
    return overrides, notes


def config_dir() -> Path:
    """config/ of the source tree, or share/nvila_nav/config of an installed package (colcon
    install space via AMENT_PREFIX_PATH, or a pip install's prefix)."""
    candidates = [Path(__file__).resolve().parents[2] / "config"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "nvila_nav" / "config")
    candidates.append(Path(sys.prefix) / "share" / "nvila_nav" / "config")
    for candidate in candidates:
        if (candidate / "navigator.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        "nvila_nav config/ not found in: " + ", ".join(str(c) for c in candidates)
    )


def params_files(
    spec: NodeSpec,
    graph: GraphSpec,
    extra_params_files=(),
    values: dict[str, str] | None = None,
) -> list[Path]:
    """The params files a launch file gives this node, in order: config/, the node's file
    arguments, the graph's overrides, params_file(s). (The argument parameters come last.)"""
    values = values or {}
    files = [config_dir() / f for f in spec.params_files]
    files += [Path(ARGUMENTS[a].convert(values[a])) for a in spec.file_arguments if values.get(a)]
    if graph.overrides_file:
        files.append(config_dir() / graph.overrides_file)
    files.extend(Path(f) for f in extra_params_files)
    if values.get("params_file"):
        files.append(Path(ARGUMENTS["params_file"].convert(values["params_file"])))
    return files


def node_arguments(
    spec: NodeSpec,
    graph: GraphSpec,
    extra_params_files=(),
    values: dict[str, str] | None = None,
    arguments_file: Path | None = None,
) -> list[str]:
    """The `--ros-args` a launch file would give this node: params files, then remappings."""
    values = values if values is not None else argument_values(graph, {})
    args = ["--ros-args"]
    files = params_files(spec, graph, extra_params_files, values)
    if arguments_file is not None:
        files.append(arguments_file)
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"parameter file {path} (node {spec.name}) does not exist")
        args += ["--params-file", str(path)]
    for topic, name in spec.remappings:
        args += ["-r", f"{topic}:={values.get(name) or topic}"]
    return args


def create_node(
    spec: NodeSpec,
    graph: GraphSpec,
    context,
    extra_params_files=(),
    values: dict[str, str] | None = None,
    arguments_file: Path | None = None,
) -> Node:
    module_name, class_name = NODE_CLASSES[spec.executable].split(":")
    node_class = getattr(importlib.import_module(module_name), class_name)
    return node_class(
        node_name=spec.name,
        context=context,
        cli_args=node_arguments(spec, graph, list(extra_params_files), values, arguments_file),
    )


def effective_parameters(
    spec: NodeSpec, graph: GraphSpec, extra_params_files=(), values: dict[str, str] | None = None
) -> dict[str, object]:
    """What the node's parameters will be, read from its params files the way rcl applies them
    (sections `/**`, `<name>`, `/<name>`, later files win) plus the argument parameters; for
    checks before any node (or model) starts."""
    values = values if values is not None else argument_values(graph, {})
    merged: dict[str, object] = {}
    for path in params_files(spec, graph, extra_params_files, values):
        if not path.is_file():
            raise GraphStartError(f"parameter file {path} (node {spec.name}) does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        for key in ("/**", spec.name, f"/{spec.name}"):
            section = data.get(key) or {}
            merged.update(section.get("ros__parameters") or {})
    merged.update(argument_parameters(graph, values).get(spec.name, {}))
    return merged


def preflight(graph_name: str, extra_params_files=(), given: dict[str, str] | None = None) -> list:
    """Check what would fail late, before anything starts (the evaluator's episodes file used
    to fail only after the navigator had loaded its model): raises GraphStartError with one line
    that says what to set. Returns notes for the user (e.g. about rviz)."""
    from nvila_nav.nodes.evaluator import check_episodes_file
    from nvila_nav.nodes.navigator import check_model
    from nvila_nav.nodes.voice_teleop import check_audio_source

    graph = GRAPHS[graph_name]
    try:
        values = argument_values(graph, given or {})
        for name, text in values.items():
            if text:
                ARGUMENTS[name].convert(text)
        params = {
            spec.name: effective_parameters(spec, graph, extra_params_files, values)
            for spec in graph.nodes
        }
    except ValueError as error:
        raise GraphStartError(str(error)) from None
    checks = []
    if "evaluator" in params:
        checks.append(("evaluator", lambda p: check_episodes_file(p.get("episodes_file", ""))))
    if "sim" in params:

        def check_sim(p: dict) -> None:
            path = p.get("episodes_file", "")
            if path and not Path(path).is_file():
                raise ValueError(f"episodes_file {path} does not exist")

        checks.append(("sim", check_sim))
    if "navigator" in params:
        checks.append(
            (
                "navigator",
                lambda p: check_model(
                    p.get("policy", "nvila"),
                    str(p.get("model", "tiny")),
                    p.get("backend", "torch"),
                    bool(p.get("allow_random_weights", False)),
                ),
            )
        )
    if "voice_teleop" in params:
        checks.append(("voice_teleop", check_audio_source))
    for node_name, check in checks:
        try:
            check(params[node_name])
        except ValueError as error:
            raise GraphStartError(f"{node_name}: {error}") from None
    notes = []
    if values.get("rviz") and ARGUMENTS["rviz"].convert(values["rviz"]):
        notes.append(
            "rviz:=true: nvila-nav-bringup does not start RViz (ros2 launch does); run "
            f"`rviz2 -d {config_dir() / 'rviz' / 'nvila_nav.rviz'}` in a ROS 2 shell"
        )
    return notes


class Bringup:
    """Creates a graph's nodes in one process and spins them; `close()` tears them down.

    `arguments` are launch arguments ({name: text}, as `name:=text`), `extra_params_files`
    more params files for every node (params_file). Nodes that cannot start raise
    GraphStartError (after the ones already made are destroyed).
    """

    def __init__(
        self,
        graph_name: str,
        context=None,
        extra_params_files=(),
        arguments: dict[str, str] | None = None,
    ):
        if graph_name not in GRAPHS:
            raise ValueError(f"unknown graph {graph_name!r} (known: {', '.join(GRAPHS)})")
        self.graph = GRAPHS[graph_name]
        self.context = context
        self.nodes: dict[str, Node] = {}
        # One executor thread: every slow job (model, simulation, evaluation) runs in its node's
        # own worker thread, so callbacks are short. rclpy's MultiThreadedExecutor can spin at
        # 100% CPU re-queueing tasks and starve callbacks for seconds (ros2/rclpy#1452).
        self.executor = SingleThreadedExecutor(context=context)
        self._thread: threading.Thread | None = None
        self._scratch = tempfile.TemporaryDirectory(prefix="nvila-nav-bringup-")
        try:
            values = argument_values(self.graph, arguments or {})
            params = argument_parameters(self.graph, values)
            try:
                matched, notes = matched_cmd_vel_types(self.graph, extra_params_files, values)
            except FileNotFoundError as error:
                raise GraphStartError(str(error)) from error
            for node_name, overrides in matched.items():
                params.setdefault(node_name, {}).update(overrides)
            for note in notes:
                sys.stderr.write(f"nvila-nav-bringup: {note}\n")
            arguments_file = None
            if params:
                arguments_file = write_params_file(params, Path(self._scratch.name) / "args.yaml")
            for spec in self.graph.nodes:
                try:
                    node = create_node(
                        spec, self.graph, context, extra_params_files, values, arguments_file
                    )
                except (ValueError, OSError, ParameterException, RCLError) as error:
                    raise GraphStartError(f"{spec.name}: {error}") from error
                self.nodes[spec.name] = node
                self.executor.add_node(node)
                if spec.lifecycle:
                    self._bring_up_lifecycle(node)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _bring_up_lifecycle(node) -> None:
        """configure + activate, as launch_ros's lifecycle events would (autostart does the same
        in a standalone process)."""
        for transition in (node.trigger_configure, node.trigger_activate):
            if transition() != TransitionCallbackReturn.SUCCESS:
                why = getattr(node, "configure_error", None) or "see the log above"
                raise GraphStartError(f"{node.get_name()}: {transition.__name__} failed: {why}")

    def start(self) -> None:
        self._thread = spin_in_background(self.executor, "bringup-executor")

    def wait_done(self, timeout: float | None = None) -> bool:
        """Block until the graph's `done_when` node has finished (False on timeout)."""
        if self.graph.done_when is None:
            raise ValueError("this graph runs until interrupted")
        return self.nodes[self.graph.done_when].finished.wait(timeout)

    @property
    def done(self) -> threading.Event | None:
        """The `done_when` node's finished event (None for graphs that run until interrupted)."""
        if self.graph.done_when is None or self.graph.done_when not in self.nodes:
            return None
        return self.nodes[self.graph.done_when].finished

    @property
    def executor_thread(self) -> threading.Thread | None:
        return self._thread

    def halt(self) -> None:
        """First step of a shutdown, while everything still spins: every node with a `halt()`
        stops, newest first: the evaluator drops its episode, the motion controller publishes a
        zero twist, the navigator publishes "stop" and asks nothing more."""
        for node in reversed(list(self.nodes.values())):  # the motion controller first
            halt = getattr(node, "halt", None)
            if callable(halt):
                try:
                    halt()
                except Exception as error:  # the shutdown goes on
                    node.get_logger().error(f"halt failed: {error}")

    def close(self) -> None:
        """Stop spinning, then destroy the nodes newest first (the motion controller's zero
        twist on destruction goes out before the navigator and the rest go away)."""
        stopped = stop_executor(self.executor, self._thread, timeout_s=1.0)
        if not stopped and self.nodes:
            next(iter(self.nodes.values())).get_logger().warning(
                "a callback did not return within 1 s; destroying the nodes anyway"
            )
        self._thread = None
        for node in reversed(list(self.nodes.values())):
            try:
                node.destroy_node()
            except Exception as error:
                sys.stderr.write(
                    f"nvila-nav-bringup: destroying {node.get_name()} failed: {error}\n"
                )
        self.nodes.clear()
        self._scratch.cleanup()


def build_parser(graph_name: str | None = None) -> argparse.ArgumentParser:
    """Options of `nvila-nav-bringup`: the graph, then its launch arguments as `name:=value` or
    `--name value` (dashes or underscores), and repeatable --params-file."""
    parser = argparse.ArgumentParser(
        prog="nvila-nav-bringup",
        description="Start a nvila_nav graph in one process (what `ros2 launch` starts). "
        "Arguments are the launch files' (`ros2 launch nvila_nav <graph>.launch.py -s`): "
        "give them as name:=value or --name value.",
    )
    parser.add_argument("graph", choices=sorted(GRAPHS), help=" | ".join(sorted(GRAPHS)))
    parser.add_argument(
        "--params-file",
        action="append",
        default=[],
        type=Path,
        help="params_file: ROS params file applied to every node after config/ and the graph's "
        "overrides (repeatable; name:=value form: one file)",
    )
    names = GRAPHS[graph_name].arguments if graph_name else tuple(ARGUMENTS)
    group = parser.add_argument_group(
        "launch arguments" + (f" of {graph_name}" if graph_name else ""),
        "empty: the params files decide",
    )
    for name in names:
        if name == "params_file":
            continue
        argument = ARGUMENTS[name]
        flags = [f"--{name.replace('_', '-')}"]
        if "_" in name:
            flags.append(f"--{name}")
        default = f" (default: {argument.default})" if argument.default else ""
        group.add_argument(
            *flags, dest=name, metavar=argument.kind.upper(), help=argument.description + default
        )
    return parser


def split_launch_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """(`name:=value` tokens outside any --ros-args section, the other tokens): rcl would take
    the first for (deprecated) remapping rules."""
    launch_style, others, in_ros_args = [], [], False
    for token in argv:
        if token == "--ros-args":
            in_ros_args = True
        elif token == "--" and in_ros_args:
            in_ros_args = False
        if not in_ros_args and ":=" in token and not token.startswith("-"):
            launch_style.append(token)
        else:
            others.append(token)
    return launch_style, others


def parse_command_line(argv: list[str]) -> tuple[str, dict[str, str], list[Path]]:
    """(graph, launch arguments given, extra params files) from the command line (ROS args
    already removed). `name:=value` tokens are launch-style arguments."""
    launch_style, rest = split_launch_arguments(argv)
    graph_name = next((a for a in rest if a in GRAPHS), None)
    args = build_parser(graph_name).parse_args(rest)
    given: dict[str, str] = {}
    for token in launch_style:
        name, _, value = token.partition(":=")
        given[name] = value
    for name in ARGUMENTS:
        value = None if name == "params_file" else getattr(args, name, None)
        if value is not None:
            given[name] = value
    return args.graph, given, list(args.params_file)


def write_params_file(params: dict[str, dict[str, object]], path: Path) -> Path:
    """A ROS params YAML (`<node>: ros__parameters: ...`)."""
    data = {node: {"ros__parameters": values} for node, values in params.items()}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    launch_style, argv = split_launch_arguments(argv)
    ros_args = rclpy.utilities.remove_ros_args(["bringup", *argv])[1:]
    graph_name, given, extra_files = parse_command_line([*ros_args, *launch_style])
    try:
        notes = preflight(graph_name, extra_files, given)
    except GraphStartError as error:
        print(f"nvila-nav-bringup {graph_name}: error: {error}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"nvila-nav-bringup {graph_name}: {note}", file=sys.stderr)
    # rclpy's signal handlers would shut the context down at once, before the nodes' final stop
    # and zero twist go out; SIGINT and SIGTERM end the graph through ShutdownRequest instead.
    rclpy.init(args=["bringup", *argv], signal_handler_options=SignalHandlerOptions.NO)
    request = ShutdownRequest(f"nvila-nav-bringup {graph_name}").install()
    code = 0
    bringup = None
    try:
        bringup = Bringup(graph_name, extra_params_files=extra_files, arguments=given)
        names = ", ".join(bringup.nodes)
        logger = bringup.nodes[next(iter(bringup.nodes))].get_logger()
        logger.info(f"graph {graph_name} up: {names}")
        request.running()
        bringup.start()
        why = request.wait(bringup.executor_thread, bringup.done)
        if why == "done":
            evaluator = bringup.nodes[bringup.graph.done_when]
            code = 1 if evaluator.error else 0
        elif why == "signal":
            logger.info(f"{request.signal_name}: stopping the robot and shutting down")
            bringup.halt()
        else:
            logger.error("the executor stopped; shutting down")
            code = 1
    except GraphStartError as error:
        print(f"nvila-nav-bringup {graph_name}: error: {error}", file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        code = 0
    finally:
        if bringup is not None:
            bringup.close()
        rclpy.try_shutdown()
    request.finish(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
