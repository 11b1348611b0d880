"""scripts/setup_env.sh chooses the pinned packages by Python version and refuses what cannot
install, before it touches the system: the full profile (requirements.txt) needs Python >= 3.11,
the robot profile (requirements-robot.txt) is Python 3.10's, and nothing older is accepted.

The interpreter is a stand-in that reports a version (the script asks it nothing else before
deciding), so each case runs in milliseconds without that Python installed."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def run_setup(tmp_path: Path, version: str, **env: str) -> subprocess.CompletedProcess:
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\necho {version}\n")
    python.chmod(0o755)
    environment = {k: v for k, v in os.environ.items() if k != "NVILA_PROFILE"}
    environment.update(PYTHON=str(python), NVILA_VENV=str(tmp_path / "venv"))
    environment.update(env)
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup_env.sh")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_full_profile_on_python_3_10_is_refused_naming_the_robot_profile(tmp_path):
    result = run_setup(tmp_path, "3.10", NVILA_PROFILE="full")
    assert result.returncode == 1
    assert "the full profile (requirements.txt) needs Python >= 3.11 (found 3.10" in result.stdout
    assert "NVILA_PROFILE=robot" in result.stdout
    assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize("version", ["3.9", "2.7"])
def test_python_older_than_3_10_is_refused(tmp_path, version):
    result = run_setup(tmp_path, version)
    assert result.returncode == 1
    assert f"nvila_nav needs Python >= 3.10 (found {version}" in result.stdout
    assert not (tmp_path / "venv").exists()


def test_an_unknown_profile_is_refused(tmp_path):
    result = run_setup(tmp_path, "3.11", NVILA_PROFILE="desktop")
    assert result.returncode == 1
    assert "NVILA_PROFILE must be full or robot (got 'desktop')" in result.stdout


def test_an_interpreter_that_does_not_run_is_named(tmp_path):
    result = run_setup(tmp_path, "3.11", PYTHON=str(tmp_path / "missing-python"))
    assert result.returncode == 1
    assert "cannot run the interpreter PYTHON=" in result.stdout


def test_the_robot_profile_pins_numpy_below_2_and_leaves_out_the_simulator():
    pins = {
        line.split("==")[0].lower(): line.split("==")[1]
        for line in (ROOT / "requirements-robot.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert int(pins["numpy"].split(".")[0]) < 2  # Humble's message packages need numpy 1.x
    assert not {"mujoco", "matplotlib", "triton", "peft", "accelerate"} & set(pins)
    assert "torch" not in pins  # installed first and explicitly by setup_env.sh
