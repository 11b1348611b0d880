# nvila_nav — two commands on a fresh machine: `make demo` and `make test`.
VENV      ?= .venv
PY        := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export PYTHONUNBUFFERED := 1

.PHONY: venv demo test lint format bench clean

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

bench: venv
	$(PY) -m nvila_nav.bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
