"""The repository is a well-formed ament_python package and keeps its architecture rules."""

import ast
import configparser
import importlib
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

REQUIRED_EXEC_DEPENDS = {
    "rclpy",
    "std_msgs",
    "sensor_msgs",
    "geometry_msgs",
    "nav_msgs",
    "diagnostic_msgs",
    "std_srvs",
    "visualization_msgs",
    "lifecycle_msgs",
    "launch",
    "launch_ros",
    "ros2launch",
}

# Imported Python modules -> their standard rosdep key (ros/rosdistro rosdep/python.yaml, Debian
# packages). Modules without such a key come from requirements.txt into a virtual environment.
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "yaml": "python3-yaml",
    "PIL": "python3-pil",
    "matplotlib": "python3-matplotlib",
    "tqdm": "python3-tqdm",
}
# Keys that must stay out: Ubuntu's python3-torch is a CPU build that would shadow a CUDA or
# Jetson torch; "-pip" keys install unpinned versions system-wide.
FORBIDDEN_KEYS = {"python3-torch", "python3-transformers-pip", "python3-onnxruntime-pip"}


def test_package_xml_is_format_3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "nvila_nav"
    for tag in ("version", "description", "maintainer", "license"):
        assert (root.findtext(tag) or "").strip(), f"package.xml lacks <{tag}>"
    assert root.find("maintainer").get("email")
    exec_depends = {e.text for e in root.findall("exec_depend")}
    assert exec_depends >= REQUIRED_EXEC_DEPENDS
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}
    assert root.findtext("export/build_type") == "ament_python"


def _ros_interface_package(module: str) -> bool:
    return module.endswith(("_msgs", "_srvs", "_interfaces")) or module == "rclpy"


def test_package_xml_declares_what_the_code_imports():
    """Every ROS package imported by the code and launch files, and every imported Python module
    with a standard rosdep key, is an exec_depend, so `rosdep install` provides it."""
    declared = {e.text for e in ET.parse(ROOT / "package.xml").getroot().findall("exec_depend")}
    sources = [*(ROOT / "nvila_nav").rglob("*.py"), *(ROOT / "launch").glob("*.py")]
    imported = set().union(*(_imports(p) for p in sources))
    for folder in ("nvila_core", "trt_kernels"):
        imported |= set().union(*(_imports(p) for p in (ROOT / folder).rglob("*.py")))
    ros = {m for m in imported if _ros_interface_package(m)} | ({"launch", "launch_ros"} & imported)
    assert ros >= {"rclpy", "std_msgs", "launch_ros"}  # the scan sees the nodes and launch files
    assert not ros - declared, f"ROS packages imported but not in package.xml: {ros - declared}"
    keyed = {ROSDEP_KEYS[m] for m in imported & ROSDEP_KEYS.keys()}
    assert keyed == set(ROSDEP_KEYS.values()), "a ROSDEP_KEYS module is no longer imported"
    assert not keyed - declared, f"rosdep keys missing from package.xml: {keyed - declared}"
    assert not declared & FORBIDDEN_KEYS


def test_setup_cfg_installs_executables_where_ros2_run_looks():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/nvila_nav"
    assert cfg["install"]["install_scripts"] == "$base/lib/nvila_nav"


def test_resource_marker_and_top_level_folders_exist():
    assert (ROOT / "resource" / "nvila_nav").is_file()
    for folder in ("nvila_nav", "nvila_core", "trt_kernels", "launch", "config", "test"):
        assert (ROOT / folder).is_dir(), folder


def _setup_call() -> ast.Call:
    tree = ast.parse((ROOT / "setup.py").read_text())
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"
    ]
    assert len(calls) == 1
    return calls[0]


def test_setup_py_declares_console_scripts_and_test_extras():
    call = _setup_call()
    keywords = {k.arg: k.value for k in call.keywords}
    scripts = ast.literal_eval(keywords["entry_points"])["console_scripts"]
    names = {s.split("=")[0].strip(): s.split("=")[1].strip() for s in scripts}
    assert names["nvila-core"] == "nvila_core.cli:main"
    for target in names.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target
    assert "test" in ast.literal_eval(keywords["extras_require"])
    assert "tests_require" not in keywords


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_nvila_core_never_imports_ros_or_the_robot_side():
    for path in (ROOT / "nvila_core").rglob("*.py"):
        bad = _imports(path) & {"rclpy", "nvila_nav"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_trt_kernels_depend_on_nothing_of_ours():
    for path in (ROOT / "trt_kernels").rglob("*.py"):
        bad = _imports(path) & {"rclpy", "nvila_nav", "nvila_core"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_robot_logic_outside_nodes_is_ros_free():
    """rclpy only in the nodes and in the fault-injection tools that drive them."""
    for path in (ROOT / "nvila_nav").rglob("*.py"):
        if {"nodes", "faults"} & set(path.relative_to(ROOT).parts):
            continue
        assert "rclpy" not in _imports(path), f"{path.relative_to(ROOT)} imports rclpy"
