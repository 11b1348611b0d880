"""launch/*.launch.py and `nvila-nav-bringup` start the same graph with the same arguments.

Each launch file holds its graph as literal tables (ARGUMENTS, NODES, FALLBACKS, OVERRIDES_FILE,
SHUTDOWN_ON_EXIT) that nvila_nav/nodes/launch_support.py turns into launch actions. Checked:
- statically (ast): the tables equal `nvila_nav.nodes.bringup.launch_tables(graph)`, so both
  declare the same arguments (names, defaults, kinds, descriptions) and nodes;
- the builder: for the default arguments and for every argument given, the Node keyword
  arguments launch would pass (params files in order, typed overrides, remappings) equal what
  bringup gives each node, and rviz:=true adds RViz;
- the real launch files: loaded with launch/launch_ros where installed (a ROS 2 machine);
  elsewhere (launch is not pip-installable) they run against recording stand-ins of the
  launch API, so every line of them executes;
- the bringup command line: name:=value and --name value give the same arguments.
"""

import ast
import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
import yaml

from nvila_nav.nodes import launch_support
from nvila_nav.nodes.bringup import (
    ARGUMENTS,
    GRAPHS,
    NODE_CLASSES,
    argument_parameters,
    argument_values,
    config_dir,
    launch_tables,
    node_arguments,
    params_files,
    parse_command_line,
)

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("ARGUMENTS", "NODES", "FALLBACKS", "OVERRIDES_FILE")


def launch_file(graph_name: str) -> Path:
    return ROOT / "launch" / GRAPHS[graph_name].launch_file


def read_launch_file(path: Path) -> dict:
    """The launch file's module-level tables, read as Python literals (nothing executed)."""
    tables = {}
    for statement in ast.parse(path.read_text()).body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            name = statement.targets[0].id
            tables[name] = ast.literal_eval(statement.value)
    return tables


def bringup_nodes(graph_name: str, given: dict[str, str] | None = None) -> list[dict]:
    """What bringup gives each node for the launch arguments `given`: params files in order,
    the argument parameters, remappings."""
    graph = GRAPHS[graph_name]
    values = argument_values(graph, given or {})
    overrides = argument_parameters(graph, values)
    nodes = []
    for spec in graph.nodes:
        args = node_arguments(spec, graph, (), values)
        remaps = [tuple(a.split(":=")) for a in args if ":=" in a]
        nodes.append(
            {
                "executable": spec.executable,
                "name": spec.name,
                "files": [str(p) for p in params_files(spec, graph, (), values)],
                "overrides": overrides.get(spec.name, {}),
                "remappings": remaps,
            }
        )
    return nodes


def launch_nodes(graph_name: str, given: dict[str, str] | None = None) -> list[dict]:
    """The same, from the launch file's tables through launch_support (as ros2 launch would)."""
    tables = read_launch_file(launch_file(graph_name))
    values = {
        name: (given or {}).get(name, default)
        for name, (default, *_) in tables["ARGUMENTS"].items()
    }
    actions = launch_support.node_actions(
        values,
        tables["ARGUMENTS"],
        tables["NODES"],
        tables["FALLBACKS"],
        tables["OVERRIDES_FILE"],
        str(config_dir()),
        tables["SHUTDOWN_ON_EXIT"],
    )
    nodes = []
    for action in actions:
        if action["package"] != "nvila_nav":
            continue
        parameters = action["parameters"]
        overrides = parameters[-1] if parameters and isinstance(parameters[-1], dict) else {}
        nodes.append(
            {
                "executable": action["executable"],
                "name": action["name"],
                "files": [p for p in parameters if isinstance(p, str)],
                "overrides": overrides,
                "remappings": list(action["remappings"]),
            }
        )
    return nodes


def every_argument_given(graph_name: str, tmp_path: Path) -> dict[str, str]:
    """A non-default text for every argument of the graph (files that exist)."""
    texts = {"str": "custom", "bool": "true", "int": "3", "float": "2.5"}
    given = {}
    for name in GRAPHS[graph_name].arguments:
        kind = ARGUMENTS[name].kind
        if kind == "path":
            path = tmp_path / f"{name}.yaml"
            path.write_text("{}\n")
            given[name] = str(path)
        elif name.endswith("_topic"):
            given[name] = f"/robot/{name}"
        else:
            given[name] = texts[kind]
    given["policy"] = "expert"
    given.pop("label", None)  # falls back to the policy
    return given


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_launch_file_tables_equal_bringup(graph_name):
    tables = read_launch_file(launch_file(graph_name))
    expected = launch_tables(graph_name)
    for name in TABLES:
        assert tables[name] == expected[name], name
    done_when = GRAPHS[graph_name].done_when
    assert tables["SHUTDOWN_ON_EXIT"] == ((done_when,) if done_when else ())
    # the file hands exactly these tables to the shared builder
    function = next(
        n
        for n in ast.parse(launch_file(graph_name).read_text()).body
        if isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"
    )
    (returned,) = [n for n in ast.walk(function) if isinstance(n, ast.Return)]
    assert returned.value.func.id == "launch_description"
    assert [a.id for a in returned.value.args] == [*TABLES, "SHUTDOWN_ON_EXIT"]


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_launch_and_bringup_give_every_node_the_same_parameters_and_remappings(
    graph_name, tmp_path
):
    default = launch_nodes(graph_name)
    assert default == bringup_nodes(graph_name)
    assert [n["executable"] for n in default] == [s.executable for s in GRAPHS[graph_name].nodes]
    assert all(n["overrides"] == {} for n in default)  # nothing given, nothing overridden
    given = every_argument_given(graph_name, tmp_path)
    custom = launch_nodes(graph_name, given)
    assert custom == bringup_nodes(graph_name, given)
    # every argument reached a node, typed
    navigator = next(n for n in custom if n["name"] == "navigator")
    assert navigator["overrides"]["policy"] == "expert"
    assert navigator["overrides"]["allow_random_weights"] is True
    assert ("rgb", "/robot/camera_topic") in navigator["remappings"]
    assert ("odom", "/robot/odom_topic") in navigator["remappings"]
    assert navigator["files"][-1] == given["params_file"]
    controller = next(n for n in custom if n["name"] == "motion_controller")
    assert controller["overrides"]["use_stamped"] is True
    assert ("cmd_vel", "/robot/cmd_vel_topic") in controller["remappings"]
    assert given["controller_params_file"] in controller["files"]
    if graph_name == "sim_eval":
        evaluator = next(n for n in custom if n["name"] == "evaluator")
        assert evaluator["overrides"]["policy_label"] == "expert"
        assert evaluator["overrides"]["max_episodes"] == 3
        assert evaluator["overrides"]["episodes_file"] == given["episodes"]
        sim = next(n for n in custom if n["name"] == "sim")
        assert sim["overrides"]["real_time_factor"] == 2.5
        assert sim["files"][-2].endswith("sim_eval.yaml")


@pytest.mark.parametrize("graph_name", ["navigation", "sim_eval"])
def test_rviz_argument_adds_rviz_in_launch_only(graph_name):
    tables = read_launch_file(launch_file(graph_name))
    values = {name: default for name, (default, *_) in tables["ARGUMENTS"].items()}
    values.update(rviz="true", camera_topic="/cam/image")
    actions = launch_support.node_actions(
        values,
        tables["ARGUMENTS"],
        tables["NODES"],
        tables["FALLBACKS"],
        tables["OVERRIDES_FILE"],
        str(config_dir()),
    )
    rviz = actions[-1]
    assert rviz["executable"] == "rviz2"
    assert rviz["arguments"] == ["-d", str(config_dir() / "rviz" / "nvila_nav.rviz")]
    assert ("rgb", "/cam/image") in rviz["remappings"]
    assert (config_dir() / "rviz" / "nvila_nav.rviz").is_file()


class _Recorded:
    """A stand-in launch action that records how the launch file built it."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _stand_in_launch_api(monkeypatch, share: Path) -> dict:
    """Recording stand-ins for the parts of launch / launch_ros the launch files use."""
    made: dict = {"values": {}}

    class LaunchConfiguration(_Recorded):
        def perform(self, _context):
            return made["values"][self.args[0]]

    class FindPackageShare(_Recorded):
        def perform(self, _context):
            assert self.args == ("nvila_nav",)
            return str(share)

    modules = {
        "launch": {"LaunchDescription": type("LaunchDescription", (_Recorded,), {})},
        "launch.actions": {
            "DeclareLaunchArgument": type("DeclareLaunchArgument", (_Recorded,), {}),
            "OpaqueFunction": type("OpaqueFunction", (_Recorded,), {}),
            "Shutdown": type("Shutdown", (_Recorded,), {}),
        },
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch_ros.actions": {"Node": type("Node", (_Recorded,), {})},
        "launch_ros.substitutions": {"FindPackageShare": FindPackageShare},
    }
    for name in ("launch", "launch_ros"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    for name, members in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(members)
        monkeypatch.setitem(sys.modules, name, module)
    return made


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(
        f"launch_file_{path.stem.replace('.', '_')}", path
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_launch_files_run_against_the_launch_api(graph_name, monkeypatch, tmp_path):
    """With launch_ros installed: the real description's arguments. Without: the launch file
    runs on recording stand-ins, end to end (arguments declared, nodes built, shutdown)."""
    path = launch_file(graph_name)
    expected_arguments = {name: ARGUMENTS[name].default for name in GRAPHS[graph_name].arguments}
    try:
        import launch_ros
    except ImportError:
        launch_ros = None
    if launch_ros is not None:
        description = _load(path).generate_launch_description()
        declared = description.get_launch_arguments()
        assert {a.name: "".join(str(s.text) for s in a.default_value) for a in declared} == (
            expected_arguments
        )
        return
    made = _stand_in_launch_api(monkeypatch, config_dir().parent)
    description = _load(path).generate_launch_description()
    (entities,) = description.args
    *declared, opaque = entities
    assert {a.args[0]: a.kwargs["default_value"] for a in declared} == expected_arguments
    assert all(a.kwargs["description"] for a in declared)
    made["values"] = every_argument_given(graph_name, tmp_path)
    made["values"].setdefault("label", "")
    if "rviz" in made["values"]:
        made["values"]["rviz"] = "false"
    nodes = opaque.kwargs["function"](object())
    expected = launch_support.node_actions(
        made["values"],
        *[read_launch_file(path)[t] for t in TABLES],
        str(config_dir()),
        read_launch_file(path)["SHUTDOWN_ON_EXIT"],
    )
    assert len(nodes) == len(expected) == len(GRAPHS[graph_name].nodes)
    for node, kwargs in zip(nodes, expected, strict=True):
        shutdown = kwargs.pop("shutdown_on_exit", False)
        on_exit = node.kwargs.pop("on_exit", None)
        assert node.kwargs == kwargs
        assert (on_exit is not None) == shutdown == (kwargs["name"] == GRAPHS[graph_name].done_when)


@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_bringup_takes_every_launch_argument_in_both_forms(graph_name, tmp_path):
    given = every_argument_given(graph_name, tmp_path)
    launch_style = [f"{name}:={value}" for name, value in given.items()]
    graph, parsed, files = parse_command_line([graph_name, *launch_style])
    assert (graph, parsed, files) == (graph_name, given, [])
    flags = []
    for name, value in given.items():
        if name == "params_file":
            flags += ["--params-file", value]
        else:
            flags += [f"--{name.replace('_', '-')}", value]
    graph, parsed, files = parse_command_line([graph_name, *flags])
    assert files == [Path(given["params_file"])]
    assert parsed == {k: v for k, v in given.items() if k != "params_file"}
    with pytest.raises(ValueError, match="unknown argument"):
        argument_values(GRAPHS[graph_name], {"no_such_argument": "1"})


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


def _ros_run_target(executable: str) -> str:
    """The console script `ros2 run nvila_nav <executable>` runs: resource/executables/<name>,
    installed to lib/nvila_nav by setup.py, execs it (test/test_console_scripts.py)."""
    wrapper = (ROOT / "resource" / "executables" / executable).read_text()
    return re.search(r"^exec (\S+) ", wrapper, re.MULTILINE).group(1)


def test_every_graph_executable_is_a_console_script_of_the_same_node_class():
    scripts = _console_scripts()
    assert scripts["nvila-nav-bringup"] == "nvila_nav.nodes.bringup:main"
    for graph in GRAPHS.values():
        for spec in graph.nodes:
            module, func = scripts[_ros_run_target(spec.executable)].split(":")
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
