"""torchrun on CPU: two gloo processes reach the weights of one process on the same data."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from nvila_core import cli
from nvila_core.model.modeling import NVILAModel
from test.helpers.sim_rollouts import write_sim_rollouts

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("llm", "vision_tower", "mm_projector")


@pytest.fixture(scope="module")
def rollout(tmp_path_factory):
    return write_sim_rollouts(tmp_path_factory.mktemp("rollout"), 2)


def _recipe(path: Path, rollout: Path, strategy: str) -> Path:
    """Global batch 4: one process accumulates 2 micro-batches of 2, two ranks take 2 each."""
    recipe = {
        "name": "tiny-dist",
        "model": {"preset": "tiny"},
        "data": {"val_fraction": 0.5, "datasets": [{"name": "sim", "path": str(rollout)}]},
        "defaults": {
            "batch_size": 2,
            "global_batch_size": 4,
            "max_steps": 3,
            "lr": 3e-3,
            "log_every": 1,
            "save_every": 2,
            "eval_generate_samples": 2,
            "device": "cpu",
            "num_workers": 0,
            "strategy": strategy,
        },
        "stages": [{"name": "align", "trainable": ["mm_projector"]}, {"name": "full"}],
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {
        f"{part}.{k}": v
        for part in PARTS
        for k, v in load_file(str(folder / part / "model.safetensors")).items()
    }


def _losses(stage_dir: Path) -> list[float]:
    with (stage_dir / "metrics.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def single_process(rollout, tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    recipe = _recipe(root / "recipe.yaml", rollout, "ddp")
    assert cli.main(["train", "--recipe", str(recipe), "--out", str(root / "out")]) == 0
    return root / "out"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_processes_reach_the_single_process_weights(
    strategy, rollout, single_process, tmp_path, tiny_config
):
    recipe = _recipe(tmp_path / "recipe.yaml", rollout, strategy)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "nvila_core", "train"]
    command += ["--recipe", str(recipe), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("final model:") == 1  # rank 0 reports, rank 1 stays quiet

    final = Path("02-full") / "final"
    ours, theirs = _weights(out / final), _weights(single_process / final)
    initial = {
        f"{part}.{k}": v
        for part in PARTS
        for k, v in getattr(NVILAModel.from_config(tiny_config, seed=0), part).state_dict().items()
    }
    for part in PARTS:
        names = [n for n in ours if n.startswith(part + ".")]
        diff = max((ours[n] - theirs[n]).abs().max().item() for n in names)
        moved = max((theirs[n] - initial[n]).abs().max().item() for n in names)
        assert diff < 1e-4 and diff < 0.02 * moved, f"{strategy} {part}: {diff} vs {moved}"
    for stage in ("01-align", "02-full"):
        assert _losses(out / stage) == pytest.approx(_losses(single_process / stage), rel=1e-5)
        state = json.loads((out / stage / "final" / "trainer_state.json").read_text())
        assert state["world_size"] == 2 and state["grad_accum"] == 1
    single_state = json.loads((single_process / final / "trainer_state.json").read_text())
    assert single_state["world_size"] == 1 and single_state["grad_accum"] == 2
    assert (out / "02-full" / "checkpoint-000002" / "optimizer.safetensors").is_file()
