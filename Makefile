# nvila_nav — two commands on a fresh machine: `make demo` and `make test`.
VENV      ?= .venv
PY        := $(VENV)/bin/python
# A second environment with ROS 2 Jazzy's rclpy wheels (robots on JetPack 7 run Jazzy), for the
# tests that touch ROS: `make test-jazzy`.
JAZZY_VENV  ?= .venv-jazzy
JAZZY_TESTS := test/ros test/voice/test_voice_graph.py test/test_package.py test/test_launch_graphs.py
# A Python 3.10 environment with the robot profile (requirements-robot.txt: numpy < 2, the newest
# transformers / onnxruntime for 3.10) as on JetPack 6 + Humble, plus the simulator for the graph
# tests (requirements-py310-test.txt), for the robot-side tests: `make test-py310`. Humble's rclpy
# is not on PyPI; Jazzy's wheels (cp310) stand in. torch: 2.8.0, the release NVIDIA builds for
# JetPack 6, CPU build by default (PY310_TORCH_INDEX= takes pip's index: a CUDA build on x86-64).
PY310             ?= python3.10
PY310_VENV        ?= .venv-py310
PY310_TORCH       ?= torch==2.8.0
PY310_TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PY310_TORCH_CUDA  ?= 0
PY310_TESTS := test/test_actions.py test/test_controller.py test/test_history.py \
	test/test_image_conversion.py test/test_metrics.py test/test_navigation.py test/test_policies.py \
	test/core test/deploy test/voice test/ros test/test_package.py test/test_launch_graphs.py
export MUJOCO_GL ?= egl
export PYTHONUNBUFFERED := 1

.PHONY: venv venv-jazzy venv-py310 demo test test-jazzy test-py310 lint format bench faults soak train-nano clean

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

venv-py310:
	@env -u ROS_DISTRO -u PYTHONPATH -u AMENT_PREFIX_PATH -u LD_LIBRARY_PATH \
	  PYTHON=$(PY310) NVILA_VENV=$(abspath $(PY310_VENV)) NVILA_PROFILE=robot \
	  ROS_REQUIREMENTS=requirements-ros-jazzy.txt TORCH_SPEC=$(PY310_TORCH) \
	  TORCH_INDEX=$(PY310_TORCH_INDEX) TORCH_CUDA=$(PY310_TORCH_CUDA) \
	  bash scripts/setup_env.sh
	@$(PY310_VENV)/bin/python -m pip install -q -r requirements-py310-test.txt \
	  -c $(PY310_VENV)/torch-constraint.txt

test-py310: venv-py310
	env -u ROS_DISTRO -u PYTHONPATH -u AMENT_PREFIX_PATH -u LD_LIBRARY_PATH \
	  $(PY310_VENV)/bin/python -m pytest $(PY310_TESTS)

# Fault injection on the navigation graph (docs/ros_interfaces.md#fault-injection): the table goes
# to outputs/faults/ and into docs/ros_interfaces.md. The soak runs 10 minutes (not in make test).
faults: venv
	$(PY) -m nvila_nav.faults --update-docs

soak: venv
	$(PY) -m nvila_nav.faults.soak

train-nano: venv
	bash scripts/train_navila_nano.sh

bench: venv
	$(PY) -m nvila_nav.bench

clean:
	rm -rf $(VENV) $(JAZZY_VENV) $(PY310_VENV) build *.egg-info .pytest_cache .ruff_cache
