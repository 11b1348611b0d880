# nvila_nav — two commands on a fresh machine: `make demo` and `make test`.
VENV      ?= .venv
PY        := $(VENV)/bin/python
# A second environment with ROS 2 Jazzy's rclpy wheels (robots on JetPack 7 run Jazzy), for the
# tests that touch ROS: `make test-jazzy`.
JAZZY_VENV  ?= .venv-jazzy
JAZZY_TESTS := test/ros test/voice/test_voice_graph.py test/test_package.py test/test_launch_graphs.py
export MUJOCO_GL ?= egl
export PYTHONUNBUFFERED := 1

.PHONY: venv venv-jazzy demo test test-jazzy lint format bench train-nano clean

venv:
	@bash scripts/setup_env.sh

demo: venv
	$(PY) -m nvila_nav.demo

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest

# The Jazzy wheels, never a sourced ROS install: its PYTHONPATH/libraries would shadow them.
venv-jazzy:
	@env -u ROS_DISTRO -u PYTHONPATH -u AMENT_PREFIX_PATH -u LD_LIBRARY_PATH \
	  NVILA_VENV=$(abspath $(JAZZY_VENV)) ROS_REQUIREMENTS=requirements-ros-jazzy.txt \
	  bash scripts/setup_env.sh

test-jazzy: venv-jazzy
	env -u ROS_DISTRO -u PYTHONPATH -u AMENT_PREFIX_PATH -u LD_LIBRARY_PATH \
	  $(JAZZY_VENV)/bin/python -m pytest $(JAZZY_TESTS)

train-nano: venv
	bash scripts/train_navila_nano.sh

bench: venv
	$(PY) -m nvila_nav.bench

clean:
	rm -rf $(VENV) $(JAZZY_VENV) build *.egg-info .pytest_cache .ruff_cache
