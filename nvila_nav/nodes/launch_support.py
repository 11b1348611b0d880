"""The launch files' shared builder: launch arguments and nvila_nav Node actions from tables.

Each `launch/*.launch.py` holds its graph as literal tables (ARGUMENTS, NODES, FALLBACKS,
OVERRIDES_FILE) and calls `launch_description` with them; `nvila-nav-bringup` holds the same
graph in nvila_nav/nodes/bringup.py, and test/test_launch_graphs.py checks that the tables are
equal and that this builder turns them into the Node actions bringup starts. Only `launch` and
`launch_ros` are imported (in a ROS 2 install); nothing of the model stack.

Semantics, the same as bringup's:
- An argument left empty ("") is not given: the params files decide. Given, it sets the node
  parameters the tables bind to it (typed by its kind: str, path (made absolute), bool, int,
  float), after every params file.
- Params files, in order: the node's config/ files, its file arguments (e.g.
  controller_params_file), the graph's overrides (sim_eval.yaml), params_file.
- Remappings take the topic arguments' values (their defaults are the topics themselves).
- rviz:=true adds RViz with config/rviz/nvila_nav.rviz on the same remappings and clock.
- A node marked `shutdown_on_exit` ends the launch when it exits (the evaluator of sim_eval).
"""

from __future__ import annotations

import os
from typing import Any

RVIZ_CONFIG = ("rviz", "nvila_nav.rviz")


def convert(name: str, kind: str, text: str) -> Any:
    """An argument's text as its parameter value (see the module docstring)."""
    if kind == "path":
        return os.path.abspath(os.path.expanduser(text))
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise ValueError(f"launch argument {name} must be true or false, got {text!r}")
        return text.lower() == "true"
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    return text


def node_actions(
    values: dict[str, str],
    arguments: dict[str, tuple[str, str, str]],
    nodes: tuple[dict, ...],
    fallbacks: dict[str, str],
    overrides_file: str | None,
    config: str,
    shutdown_on_exit: tuple[str, ...] = (),
) -> list[dict]:
    """The keyword arguments of each launch_ros Node for the argument texts `values`."""
    values = dict(values)
    for name, other in fallbacks.items():
        if not values.get(name):
            values[name] = values.get(other, "")
    given = {name: convert(name, arguments[name][1], text) for name, text in values.items() if text}
    actions = []
    for spec in nodes:
        files = [os.path.join(config, f) for f in spec["params_files"]]
        files += [given[name] for name in spec["file_arguments"] if name in given]
        if overrides_file:
            files.append(os.path.join(config, overrides_file))
        if "params_file" in given:
            files.append(given["params_file"])
        overrides = {p: given[a] for p, a in spec["parameters"].items() if a in given}
        node = {
            "package": "nvila_nav",
            "executable": spec["executable"],
            "name": spec["name"],
            "parameters": [*files, overrides] if overrides else files,
            "remappings": [(t, values.get(a) or t) for t, a in spec["remappings"].items()],
            "output": "screen",
        }
        if spec["name"] in shutdown_on_exit:
            node["shutdown_on_exit"] = True
        actions.append(node)
    if given.get("rviz"):
        remappings = {}
        for spec in nodes:
            remappings.update({t: values.get(a) or t for t, a in spec["remappings"].items()})
        actions.append(
            {
                "package": "rviz2",
                "executable": "rviz2",
                "name": "rviz2",
                "arguments": ["-d", os.path.join(config, *RVIZ_CONFIG)],
                "parameters": [{"use_sim_time": given.get("use_sim_time", False)}],
                "remappings": sorted(remappings.items()),
                "output": "screen",
            }
        )
    return actions


def launch_description(
    arguments: dict[str, tuple[str, str, str]],
    nodes: tuple[dict, ...],
    fallbacks: dict[str, str],
    overrides_file: str | None,
    shutdown_on_exit: tuple[str, ...] = (),
):
    """A LaunchDescription: one DeclareLaunchArgument per argument, then the nodes."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    from launch_ros.substitutions import FindPackageShare

    def build(context, *_args, **_kwargs):
        config = os.path.join(FindPackageShare("nvila_nav").perform(context), "config")
        values = {name: LaunchConfiguration(name).perform(context) for name in arguments}
        actions = []
        for kwargs in node_actions(
            values, arguments, nodes, fallbacks, overrides_file, config, shutdown_on_exit
        ):
            if kwargs.pop("shutdown_on_exit", False):
                kwargs["on_exit"] = Shutdown(reason=f"{kwargs['name']} exited")
            actions.append(Node(**kwargs))
        return actions

    declared = [
        DeclareLaunchArgument(name, default_value=default, description=f"{text} [{kind}]")
        for name, (default, kind, text) in arguments.items()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=build)])
