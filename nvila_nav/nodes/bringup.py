"""`nvila-nav-bringup <graph>`: the launch files' node sets in one process, without `ros2 launch`.

`launch` / `launch_ros` are not pip-installable, so a machine with only the rclpy wheels (CI, a
laptop) starts the same graph here: the same executables' node classes, the same parameter files
(passed to rcl exactly as `ros2 launch` passes them, `--params-file`), the same remappings, on one
executor thread. `GRAPHS` is the single description of both; a test checks that
`launch/*.launch.py` name the same executables, parameter files and remappings, so they cannot drift.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import rclpy
import yaml
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node

from nvila_nav.policies import POLICY_KINDS


@dataclass(frozen=True)
class NodeSpec:
    """One node of a graph, as a launch_ros `Node(...)` action names it."""

    executable: str
    name: str
    params_files: tuple[str, ...]
    remappings: tuple[tuple[str, str], ...] = ()
    lifecycle: bool = False


@dataclass(frozen=True)
class GraphSpec:
    nodes: tuple[NodeSpec, ...]
    description: str
    overrides_file: str | None = None
    """A params file applied to every node after its own (e.g. use_sim_time for simulation)."""
    done_when: str | None = None
    """Name of a node whose `finished` event ends the bringup (the evaluator)."""


# Where each console script's node class lives (setup.py: `<executable> = <module>:main`).
NODE_CLASSES = {
    "navigator": "nvila_nav.nodes.navigator:NavigatorNode",
    "motion_controller": "nvila_nav.nodes.motion_controller:MotionControllerNode",
    "sim": "nvila_nav.nodes.simulator:SimulatorNode",
    "evaluator": "nvila_nav.nodes.evaluator:EvaluatorNode",
    "voice_teleop": "nvila_nav.nodes.voice_teleop:VoiceTeleopNode",
}

# Robot-side remappings: the camera topic names differ per robot; these are the defaults the
# launch files expose as arguments.
NAVIGATOR = NodeSpec(
    executable="navigator",
    name="navigator",
    params_files=("navigator.yaml",),
    remappings=(("rgb", "rgb"),),
    lifecycle=True,
)
MOTION_CONTROLLER = NodeSpec(
    executable="motion_controller",
    name="motion_controller",
    params_files=("motion_controller.yaml",),
    remappings=(("cmd_vel", "cmd_vel"),),
)

GRAPHS: dict[str, GraphSpec] = {
    "navigation": GraphSpec(
        nodes=(NAVIGATOR, MOTION_CONTROLLER),
        description="on a robot: navigator + motion_controller",
    ),
    "sim_eval": GraphSpec(
        # The navigator comes first: configuring it loads the model stack (torch, and triton's
        # LLVM through transformers), which segfaults if Mesa's LLVM is already loaded by the
        # simulator's EGL renderer in this process; the other order works.
        nodes=(
            NAVIGATOR,
            NodeSpec(executable="sim", name="sim", params_files=("sim.yaml",)),
            MOTION_CONTROLLER,
            NodeSpec(executable="evaluator", name="evaluator", params_files=("evaluator.yaml",)),
        ),
        description="embedded simulator + navigator + motion_controller + evaluator",
        overrides_file="sim_eval.yaml",
        done_when="evaluator",
    ),
    "voice": GraphSpec(
        nodes=(
            NodeSpec(
                executable="voice_teleop",
                name="voice_teleop",
                params_files=("voice_teleop.yaml",),
                remappings=(("cmd_vel", "cmd_vel"),),
            ),
            NAVIGATOR,
            MOTION_CONTROLLER,
        ),
        description="voice instructions on a robot: voice_teleop + navigator + motion_controller",
    ),
}


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


def node_arguments(
    spec: NodeSpec, graph: GraphSpec, extra_params_files: list[Path] = ()
) -> list[str]:
    """The `--ros-args` a launch file would give this node: params files, then remappings."""
    args = ["--ros-args"]
    files = [config_dir() / f for f in spec.params_files]
    if graph.overrides_file:
        files.append(config_dir() / graph.overrides_file)
    files.extend(extra_params_files)
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"parameter file {path} (node {spec.name}) does not exist")
        args += ["--params-file", str(path)]
    for source, target in spec.remappings:
        args += ["-r", f"{source}:={target}"]
    return args


def create_node(spec: NodeSpec, graph: GraphSpec, context, extra_params_files=()) -> Node:
    module_name, class_name = NODE_CLASSES[spec.executable].split(":")
    node_class = getattr(importlib.import_module(module_name), class_name)
    return node_class(
        node_name=spec.name,
        context=context,
        cli_args=node_arguments(spec, graph, list(extra_params_files)),
    )


class Bringup:
    """Creates a graph's nodes in one process and spins them; `close()` tears them down."""

    def __init__(self, graph_name: str, context=None, extra_params_files=()):
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
        try:
            for spec in self.graph.nodes:
                node = create_node(spec, self.graph, context, extra_params_files)
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
                raise RuntimeError(
                    f"lifecycle node {node.get_name()}: {transition.__name__} failed"
                )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._spin, name="bringup-executor", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            self.executor.spin()

    def wait_done(self, timeout: float | None = None) -> bool:
        """Block until the graph's `done_when` node has finished (False on timeout)."""
        if self.graph.done_when is None:
            raise ValueError("this graph runs until interrupted")
        return self.nodes[self.graph.done_when].finished.wait(timeout)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        for node in reversed(list(self.nodes.values())):
            node.destroy_node()
        self.nodes.clear()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nvila-nav-bringup",
        description="Start a nvila_nav graph in one process (what `ros2 launch` starts).",
    )
    parser.add_argument("graph", choices=sorted(GRAPHS), help=" | ".join(sorted(GRAPHS)))
    parser.add_argument(
        "--params-file",
        action="append",
        default=[],
        type=Path,
        help="extra ROS params file applied to every node after the config/ files (repeatable)",
    )
    shortcuts = parser.add_argument_group(
        "shortcuts", "common parameters, written to one more params file after --params-file"
    )
    shortcuts.add_argument("--policy", choices=POLICY_KINDS, help="navigator policy")
    shortcuts.add_argument("--model", help="navigator model: checkpoint directory or preset")
    shortcuts.add_argument(
        "--label", help="sim_eval: the evaluator's policy_label (default: the --policy value)"
    )
    shortcuts.add_argument("--episodes", type=Path, help="sim_eval: R2R-format episodes file")
    shortcuts.add_argument("--max-episodes", type=int, help="sim_eval: episodes to run (0: all)")
    shortcuts.add_argument("--output-dir", type=Path, help="sim_eval: evaluator output folder")
    shortcuts.add_argument("--real-time-factor", type=float, help="sim_eval: sim speed-up")
    return parser


def shortcut_parameters(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """{node name: {parameter: value}} for the shortcut flags that were given."""
    params: dict[str, dict[str, object]] = {}

    def put(node: str, name: str, value: object) -> None:
        if value is not None:
            params.setdefault(node, {})[name] = value

    put("navigator", "policy", args.policy)
    put("navigator", "model", args.model)
    put("evaluator", "policy_label", args.label or args.policy)
    if args.episodes is not None:
        put("sim", "episodes_file", str(args.episodes.resolve()))
        put("evaluator", "episodes_file", str(args.episodes.resolve()))
    put("evaluator", "max_episodes", args.max_episodes)
    if args.output_dir is not None:
        put("evaluator", "output_dir", str(args.output_dir.resolve()))
    put("sim", "real_time_factor", args.real_time_factor)
    return params


def write_params_file(params: dict[str, dict[str, object]], path: Path) -> Path:
    """A ROS params YAML (`<node>: ros__parameters: ...`)."""
    data = {node: {"ros__parameters": values} for node, values in params.items()}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ros_args = rclpy.utilities.remove_ros_args(["bringup", *argv])[1:]
    args = build_parser().parse_args(ros_args)
    extra_files = list(args.params_file)
    shortcuts = shortcut_parameters(args)
    scratch = tempfile.TemporaryDirectory(prefix="nvila-nav-bringup-")
    if shortcuts:
        extra_files.append(write_params_file(shortcuts, Path(scratch.name) / "shortcuts.yaml"))
    rclpy.init(args=["bringup", *argv])
    bringup = None
    try:
        bringup = Bringup(args.graph, extra_params_files=extra_files)
        names = ", ".join(bringup.nodes)
        bringup.nodes[next(iter(bringup.nodes))].get_logger().info(
            f"graph {args.graph} up: {names}"
        )
        bringup.start()
        if bringup.graph.done_when:
            while not bringup.wait_done(timeout=1.0):
                pass
            evaluator = bringup.nodes[bringup.graph.done_when]
            return 1 if evaluator.error else 0
        threading.Event().wait()
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        if bringup is not None:
            bringup.close()
        rclpy.try_shutdown()
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
