"""Command names: what pip puts on PATH, what `ros2 run` finds, and what usage lines promise.

- Every console script carries the project prefix (no `navigator` or `sim` on PATH).
- `ros2 run nvila_nav <node>` (and launch files' `executable=`) finds a wrapper that setup.py
  installs to lib/nvila_nav and that runs the node's nvila-nav-<node> console script, in a colcon
  install (script next to it) and a pip install (script in <prefix>/bin).
- Every argparse `prog=` and every `python -m` in our sources names a command that exists, and
  every module with a `main()` runs it under `python -m`.
"""

import ast
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools

from nvila_nav.nodes.bringup import GRAPHS, NODE_CLASSES

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nvila_core", "nvila_nav", "trt_kernels")
WRAPPERS = ROOT / "resource" / "executables"
PYTHON_M = re.compile(r"python3? -m ([A-Za-z_][\w.]*)")


@pytest.fixture(scope="module")
def setup_kwargs(monkeypatch_module):
    """The keyword arguments setup.py passes to setuptools.setup (data_files evaluated)."""
    captured = {}
    monkeypatch_module.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch_module.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    return captured


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def console_scripts(setup_kwargs):
    entries = setup_kwargs["entry_points"]["console_scripts"]
    return dict(tuple(part.strip() for part in entry.split("=")) for entry in entries)


def _sources():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runs_as_main(module: str) -> bool:
    """Whether `python -m module` does something: a __main__ guard, or a package __main__.py."""
    path = ROOT / Path(*module.split("."))
    if (path / "__main__.py").is_file():
        return True
    file = path.with_suffix(".py")
    return file.is_file() and _has_main_guard(ast.parse(file.read_text()))


def _has_main_guard(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.If)
        and "__name__" in ast.unparse(node.test)
        and "__main__" in ast.unparse(node.test)
        for node in tree.body
    )


def _wrapper_target(name: str) -> str:
    return re.search(r"^exec (\S+) ", (WRAPPERS / name).read_text(), re.MULTILINE).group(1)


# ---------------------------------------------------------------- PATH and ros2 run
def test_console_scripts_on_path_carry_the_project_prefix(console_scripts):
    generic = sorted(name for name in console_scripts if not name.startswith("nvila-"))
    assert not generic, f"console scripts without the nvila- prefix: {generic}"


def test_every_node_has_a_ros2_run_wrapper_installed_to_lib_nvila_nav(
    setup_kwargs, console_scripts
):
    installed = {
        Path(file).name: Path(file)
        for folder, files in setup_kwargs["data_files"]
        if folder == "lib/nvila_nav"
        for file in files
    }
    used = {spec.executable for graph in GRAPHS.values() for spec in graph.nodes}
    assert used <= set(NODE_CLASSES)
    assert set(installed) == set(NODE_CLASSES)
    for name in NODE_CLASSES:
        wrapper = ROOT / installed[name]
        assert os.access(wrapper, os.X_OK), f"{wrapper} is not executable"
        subprocess.run(["sh", "-n", str(wrapper)], check=True)
        script = _wrapper_target(name)
        assert script == "nvila-nav-" + name.replace("_", "-")
        module, func = console_scripts[script].split(":")
        assert (module, func) == (NODE_CLASSES[name].split(":")[0], "main")


def _fake_script(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/bin/sh\necho "ran $0 with $*"\n')
    path.chmod(0o755)


@pytest.mark.parametrize("layout", ["colcon", "pip", "PATH"])
def test_a_wrapper_runs_its_console_script_with_the_arguments(tmp_path, layout):
    prefix = tmp_path / "prefix"
    wrapper = prefix / "lib" / "nvila_nav" / "navigator"
    wrapper.parent.mkdir(parents=True)
    shutil.copy2(WRAPPERS / "navigator", wrapper)
    script = {
        "colcon": prefix / "lib" / "nvila_nav" / "nvila-nav-navigator",
        "pip": prefix / "bin" / "nvila-nav-navigator",
        "PATH": tmp_path / "elsewhere" / "nvila-nav-navigator",
    }[layout]
    _fake_script(script)
    path = os.environ["PATH"]
    if layout == "PATH":  # neither next to the wrapper nor in <prefix>/bin: the PATH's
        path = f"{script.parent}{os.pathsep}{path}"
    done = subprocess.run(
        [str(wrapper), "--ros-args", "-p", "autostart:=false"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path},
        check=True,
        timeout=30,
    )
    ran, arguments = done.stdout.strip().removeprefix("ran ").split(" with ")
    assert Path(ran).resolve() == script.resolve()
    assert arguments == "--ros-args -p autostart:=false"


# ---------------------------------------------------------------- usage lines
def _progs():
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg == "prog":
                        yield path, keyword.value


def test_every_argparse_prog_names_a_command_that_exists(console_scripts):
    found = list(_progs())
    assert len(found) >= 5
    for path, value in found:
        where = path.relative_to(ROOT)
        assert isinstance(value, ast.Constant) and isinstance(value.value, str), where
        prog = value.value
        if prog in console_scripts:
            module = console_scripts[prog].split(":")[0]
            assert module == _module_name(path), f"{where}: prog {prog!r} runs {module}"
            continue
        match = re.fullmatch(r"python -m ([\w.]+)", prog)
        assert match, f"{where}: prog {prog!r} is neither a console script nor `python -m ...`"
        assert _runs_as_main(match.group(1)), f"{where}: `{prog}` does not run anything"


def test_every_python_m_in_our_sources_runs_something():
    for path in _sources():
        for module in PYTHON_M.findall(path.read_text()):
            if module.split(".")[0] in PACKAGES:
                assert _runs_as_main(module), f"{path.relative_to(ROOT)}: python -m {module}"


def test_every_module_with_a_main_runs_it_under_python_m():
    missing = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
        if has_main and not _has_main_guard(tree):
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"main() but no `if __name__ == '__main__':` in {missing}"


def test_python_m_forms_of_the_clis_print_their_usage():
    for module, prog in (("nvila_nav.sim.cli", "nvila-sim"), ("nvila_core.cli", "nvila-core")):
        done = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert done.stdout.startswith(f"usage: {prog} "), module
