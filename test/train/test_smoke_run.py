"""`nvila-core train --max-steps N` (the documented smoke run) leaves the full run's output alone.

It used to write into the full run's default folder, so the full run afterwards reported every
stage "already finished" and returned the N-step model.
"""

import json
from pathlib import Path

import pytest
import yaml
from episode_folders import write_episode_dataset

from nvila_core.cli import main
from nvila_core.train import recipe as recipe_module
from nvila_core.train.recipe import (
    SMOKE_GENERATE_SAMPLES,
    SMOKE_VAL_SAMPLES,
    RecipeError,
    recipe_from_dict,
    run_recipe,
)

FULL_STEPS = 3


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    return {
        "train": write_episode_dataset(root / "train", episodes=2, actions=4, seed=0),
        "val": write_episode_dataset(root / "val", episodes=3, actions=4, seed=1),
    }


def _recipe(episodes, **defaults) -> dict:
    return {
        "name": "tiny-smoke-test",
        "model": {"preset": "tiny"},
        "data": {
            "num_frames": 2,
            "datasets": [
                {"name": "train", "path": str(episodes["train"]), "split": "train"},
                {"name": "val", "path": str(episodes["val"]), "split": "val"},
            ],
        },
        "defaults": {
            "batch_size": 2,
            "max_steps": FULL_STEPS,
            "device": "cpu",
            "num_workers": 0,
            "save_every": 0,
            "eval_max_new_tokens": 2,
            **defaults,
        },
        "stages": [
            {"name": "align", "trainable": ["mm_projector"], "lr": 1e-2},
            {"name": "language", "trainable": ["llm"]},
        ],
    }


def _write_recipe(folder: Path, episodes) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(_recipe(episodes)))
    return path


def _steps(final: Path) -> int:
    return json.loads((final / "trainer_state.json").read_text())["step"]


@pytest.mark.slow
def test_smoke_run_then_full_run_trains_the_full_model(tmp_path, monkeypatch, episodes):
    monkeypatch.chdir(tmp_path)
    recipe = _write_recipe(tmp_path, episodes)
    assert main(["train", "--recipe", str(recipe), "--max-steps", "1"]) == 0
    smoke = tmp_path / "outputs/train/tiny-smoke-test-smoke"
    assert _steps(smoke / "02-language" / "final") == 1
    assert not (tmp_path / "outputs/train/tiny-smoke-test").exists()

    assert main(["train", "--recipe", str(recipe)]) == 0
    full = tmp_path / "outputs/train/tiny-smoke-test"
    for stage in ("01-align", "02-language"):
        assert _steps(full / stage / "final") == FULL_STEPS
        assert _steps(smoke / stage / "final") == 1


@pytest.mark.slow
def test_a_full_run_refuses_stages_a_smoke_run_finished_in_its_folder(tmp_path, capsys, episodes):
    recipe = _write_recipe(tmp_path, episodes)
    out = tmp_path / "out"
    train = ["train", "--recipe", str(recipe), "--out", str(out)]
    assert main([*train, "--max-steps", "1"]) == 0
    capsys.readouterr()
    assert main(train) == 2
    error = capsys.readouterr().err
    assert "stage 'align'" in error and f"max_steps=1 (this run: {FULL_STEPS})" in error
    assert "another --out" in error
    assert _steps(out / "01-align" / "final") == 1  # both left as they were
    assert _steps(out / "02-language" / "final") == 1


@pytest.mark.slow
def test_finished_stages_count_when_only_run_settings_differ(tmp_path, episodes):
    final = run_recipe(recipe_from_dict(_recipe(episodes)), tmp_path)
    stamp = (final / "trainer_state.json").stat().st_mtime_ns
    changed = recipe_from_dict(_recipe(episodes, log_every=5, eval_generate_samples=3))
    assert run_recipe(changed, tmp_path) == final  # logging and evaluation only: still done
    assert (final / "trainer_state.json").stat().st_mtime_ns == stamp
    with pytest.raises(RecipeError, match=r"lr=0\.01 \(this run: 0\.02\)"):
        data = _recipe(episodes)
        data["stages"][0]["lr"] = 2e-2
        run_recipe(recipe_from_dict(data), tmp_path)


@pytest.mark.slow
def test_a_smoke_run_evaluates_on_a_few_val_samples(tmp_path, monkeypatch, episodes):
    seen = []

    class SpyTrainer(recipe_module.Trainer):
        def __init__(self, model, tokenizer, cfg, train_loader, val_loader, **kwargs):
            seen.append((len(val_loader.dataset), cfg.eval_generate_samples))
            super().__init__(model, tokenizer, cfg, train_loader, val_loader, **kwargs)

    monkeypatch.setattr(recipe_module, "Trainer", SpyTrainer)
    recipe = recipe_from_dict(_recipe(episodes))
    run_recipe(recipe, tmp_path / "smoke", max_steps=1, smoke=True)
    run_recipe(recipe, tmp_path / "full", stage="align")
    val_samples = len(recipe.stages[0].data.val_samples())
    assert val_samples > SMOKE_VAL_SAMPLES
    assert seen == [
        (SMOKE_VAL_SAMPLES, SMOKE_GENERATE_SAMPLES),
        (SMOKE_VAL_SAMPLES, SMOKE_GENERATE_SAMPLES),
        (val_samples, 64),
    ]


@pytest.mark.slow
def test_train_from_a_checkpoint_starts_from_its_weights(tmp_path, episodes):
    import torch

    from nvila_core.model.checkpoint import load_checkpoint

    first = run_recipe(recipe_from_dict(_recipe(episodes)), tmp_path / "first")
    data = _recipe(episodes)
    data["stages"] = [{"name": "projector", "trainable": ["mm_projector"], "lr": 1e-2}]
    recipe = tmp_path / "projector.yaml"
    recipe.write_text(yaml.safe_dump(data))
    out = tmp_path / "second"
    assert main(["train", "--recipe", str(recipe), "--out", str(out), "--from", str(first)]) == 0
    source, _ = load_checkpoint(first, dtype=torch.float32)
    trained, _ = load_checkpoint(out / "01-projector" / "final", dtype=torch.float32)
    preset = run_recipe(recipe_from_dict(data), tmp_path / "preset")
    from_preset, _ = load_checkpoint(preset, dtype=torch.float32)
    # the frozen LLM is the checkpoint's (which the first recipe trained), not the preset's
    for name, weight in source.llm.state_dict().items():
        assert torch.equal(trained.llm.state_dict()[name], weight), name
    assert any(
        not torch.equal(from_preset.llm.state_dict()[name], weight)
        for name, weight in source.llm.state_dict().items()
    )
