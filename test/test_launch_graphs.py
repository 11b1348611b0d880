"""launch/*.launch.py and `nvila-nav-bringup` start the same graph, and every parameter is declared.

`launch` / `launch_ros` are not installable here, so the launch files are read as Python syntax:
each `Node(...)` gives executable, name, parameter files and remappings (launch arguments resolved
to their defaults), which must equal `nvila_nav.nodes.bringup.GRAPHS`.
"""

import ast
import importlib
from pathlib import Path

import pytest
import yaml

from nvila_nav.nodes.bringup import GRAPHS, NODE_CLASSES, config_dir

ROOT = Path(__file__).resolve().parents[1]


class LaunchArgument(str):
    """A `LaunchConfiguration`, resolved to its declared default once all are known."""


def _resolve(value, defaults):
    if isinstance(value, LaunchArgument):
        return _resolve(defaults[str(value)], defaults)
    if isinstance(value, list):
        return [_resolve(v, defaults) for v in value]
    return value


def _literal(node, env):
    """Evaluate the small subset of expressions launch files use here."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(e, env) for e in node.elts]
    if isinstance(node, ast.Call):
        func = node.func.id
        if func == "PathJoinSubstitution":
            parts = _literal(node.args[0], env)
            return parts[-1]  # the file name inside share/nvila_nav/config
        if func == "FindPackageShare":
            return "share"
        if func == "LaunchConfiguration":
            return LaunchArgument(node.args[0].value)
    raise AssertionError(f"unsupported expression in launch file: {ast.dump(node)}")


def read_launch_file(path: Path) -> list[dict]:
    tree = ast.parse(path.read_text())
    (function,) = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    env = {}
    defaults = {}
    for statement in function.body:
        if isinstance(statement, ast.Assign):
            env[statement.targets[0].id] = _literal(statement.value, env)
    calls = [n for n in ast.walk(function) if isinstance(n, ast.Call) and hasattr(n.func, "id")]
    for call in calls:
        if call.func.id == "DeclareLaunchArgument":
            keywords = {k.arg: k.value for k in call.keywords}
            defaults[call.args[0].value] = _literal(keywords["default_value"], env)
    nodes = []
    for call in calls:
        if call.func.id != "Node":
            continue
        keywords = {k.arg: k.value for k in call.keywords}
        assert _literal(keywords["package"], env) == "nvila_nav"
        remappings = _resolve(_literal(keywords.get("remappings", ast.List([])), env), defaults)
        nodes.append(
            {
                "executable": _literal(keywords["executable"], env),
                "name": _literal(keywords["name"], env),
                "params_files": _resolve(_literal(keywords["parameters"], env), defaults),
                "remappings": [tuple(r) for r in remappings],
            }
        )
    return nodes


def bringup_nodes(graph_name: str) -> list[dict]:
    graph = GRAPHS[graph_name]
    overrides = [graph.overrides_file] if graph.overrides_file else []
    return [
        {
            "executable": spec.executable,
            "name": spec.name,
            "params_files": [*spec.params_files, *overrides],
            "remappings": list(spec.remappings),
        }
        for spec in graph.nodes
    ]


# Graphs whose launch file is not named after the graph.
LAUNCH_FILES = {"voice": "voice_teleop.launch.py"}


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_launch_file_and_bringup_start_the_same_graph(graph_name):
    launch_file = ROOT / "launch" / LAUNCH_FILES.get(graph_name, f"{graph_name}.launch.py")
    assert read_launch_file(launch_file) == bringup_nodes(graph_name)


def _console_scripts() -> dict[str, str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    (call,) = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"
    ]
    entry_points = ast.literal_eval({k.arg: k.value for k in call.keywords}["entry_points"])
    return {
        s.split("=")[0].strip(): s.split("=")[1].strip() for s in entry_points["console_scripts"]
    }


def test_every_graph_executable_is_a_console_script_of_the_same_node_class():
    scripts = _console_scripts()
    assert scripts["nvila-nav-bringup"] == "nvila_nav.nodes.bringup:main"
    for graph in GRAPHS.values():
        for spec in graph.nodes:
            module, func = scripts[spec.executable].split(":")
            assert func == "main"
            assert NODE_CLASSES[spec.executable].split(":")[0] == module


def _declared(executable: str) -> dict:
    module_name, _ = NODE_CLASSES[executable].split(":")
    return {p.name: p for p in importlib.import_module(module_name).PARAMETERS}


@pytest.mark.parametrize("executable", sorted(NODE_CLASSES))
def test_config_file_lists_every_declared_parameter_with_its_default(executable):
    declared = _declared(executable)
    data = yaml.safe_load((config_dir() / f"{executable}.yaml").read_text())
    values = data[executable]["ros__parameters"]
    assert set(values) == set(declared)
    for name, spec in declared.items():
        assert values[name] == spec.default, name
        assert spec.description, f"{executable}.{name} has no description"


def test_graph_overrides_only_set_declared_parameters():
    for graph in GRAPHS.values():
        if not graph.overrides_file:
            continue
        data = yaml.safe_load((config_dir() / graph.overrides_file).read_text())
        for node_name, section in data.items():
            for name in section["ros__parameters"]:
                if node_name == "/**":
                    assert name == "use_sim_time"
                else:
                    assert name in _declared(node_name), f"{node_name}.{name}"
