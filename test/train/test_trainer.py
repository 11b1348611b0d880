"""Trainer: learning, per-stage freezing, LR groups, exact resume, checkpoints, recipes."""

import csv
import dataclasses
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from nvila_core.model.checkpoint import load_checkpoint
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.processing import NVILAProcessor
from nvila_core.train.data import NavDataset, collate, make_loader, read_episode_dataset
from nvila_core.train.distributed import EpochSampler
from nvila_core.train.recipe import RecipeError, load_recipe, recipe_from_dict, run_recipe
from nvila_core.train.trainer import (
    MODULES,
    LossModule,
    TrainConfig,
    Trainer,
    answer_cross_entropy,
    is_complete,
    lr_multiplier,
    normalize_action,
    param_groups,
    set_trainable,
)
from test.helpers.sim_rollouts import write_sim_rollouts

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "config" / "train"


@pytest.fixture(scope="module")
def rollout(tmp_path_factory):
    return write_sim_rollouts(tmp_path_factory.mktemp("rollout"), 2)


@pytest.fixture(scope="module")
def samples(rollout):
    return read_episode_dataset(rollout, "sim")


def _model(tiny_config, tiny_tokenizer, seed=0):
    return NVILAModel.from_config(tiny_config, seed=seed, tokenizer=tiny_tokenizer)


def _trainer(tmp_path, tiny_config, tiny_tokenizer, samples, val=None, seed=0, workers=0, **cfg):
    settings = {"batch_size": 2, "lr": 3e-3, "log_every": 1, "save_every": 0, "device": "cpu"}
    config = TrainConfig(**{**settings, **cfg})
    processor = NVILAProcessor(tiny_config, tiny_tokenizer)
    loader = make_loader(
        NavDataset(samples, processor), config.batch_size, seed=1, num_workers=workers
    )
    val_loader = None
    if val is not None:
        val_loader = make_loader(
            NavDataset(val, processor), 4, shuffle=False, num_workers=0, drop_last=False
        )
    model = _model(tiny_config, tiny_tokenizer, seed)
    return Trainer(model, tiny_tokenizer, config, loader, val_loader, out_dir=tmp_path)


def test_loss_falls_by_more_than_half_when_overfitting_four_samples(
    tmp_path, tiny_config, tiny_tokenizer, samples
):
    four = [samples[0], samples[3], samples[9], samples[13]]  # turns, forward moves and a stop
    trainer = _trainer(
        tmp_path, tiny_config, tiny_tokenizer, four, val=four, batch_size=4, max_steps=30
    )
    result = trainer.train()
    losses = [row["loss"] for row in trainer.history]
    assert len(losses) == 30 and losses[-1] < 0.5 * losses[0], losses
    assert result["val_loss"] < 0.5 * losses[0]
    assert result["val_accuracy"] >= 0.75  # greedy answers name the right next action
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 31)) and rows[-1]["val_loss"]
    assert float(rows[0]["tokens_per_s"]) > 0
    assert (tmp_path / "loss.png").stat().st_size > 1000
    model, _ = load_checkpoint(result["final"])
    assert torch.equal(
        model.mm_projector.layers[2].weight, trainer.model.mm_projector.layers[2].weight
    )


def _stage_trainables():
    return {s.name: s.train.trainable for s in load_recipe(RECIPES / "nvila-stages.yaml").stages}


@pytest.mark.parametrize(
    "stage", ["projector-align", "vision-pretrain", "llm-pretrain", "image-sft"]
)
def test_each_nvila_stage_trains_exactly_its_modules(
    stage, tmp_path, tiny_config, tiny_tokenizer, samples
):
    trainable = _stage_trainables()[stage]
    trainer = _trainer(
        tmp_path, tiny_config, tiny_tokenizer, samples[:4], trainable=trainable, max_steps=2
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    tower = trainer.model.vision_tower
    never_run = {
        f"vision_tower.vision_model.encoder.layers.{i}."
        for i in range(tower.num_layers_run, len(tower.vision_model.encoder.layers))
    } | {"vision_tower.vision_model.post_layernorm."}
    for name, param in trainer.model.named_parameters():
        module = name.split(".")[0]
        changed = not torch.equal(before[name], param.detach())
        if module in trainable and not name.startswith(tuple(never_run)):
            assert param.requires_grad and changed, f"{stage}: {name} did not train"
        else:
            assert not param.requires_grad and not changed, f"{stage}: {name} changed"


def test_lr_groups_follow_the_config(tiny_config, tiny_tokenizer):
    model = _model(tiny_config, tiny_tokenizer)
    cfg = TrainConfig(lr=2e-5, vision_lr_ratio=10, projector_lr=1e-4)
    set_trainable(model, cfg.trainable)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    assert set(groups) == set(MODULES)
    assert math.isclose(groups["vision_tower"]["lr"], 2e-6)
    assert groups["mm_projector"]["lr"] == 1e-4 and groups["llm"]["lr"] == 2e-5
    counted = sum(len(g["params"]) for g in groups.values())
    assert counted == sum(p.requires_grad for p in model.parameters())
    set_trainable(model, ["mm_projector"])
    assert [g["name"] for g in param_groups(model, cfg)] == ["mm_projector"]
    decayed = TrainConfig(weight_decay=0.1, trainable=["mm_projector"])
    by_name = {g["name"]: g for g in param_groups(model, decayed)}
    assert by_name["mm_projector"]["weight_decay"] == 0.1
    assert by_name["mm_projector.no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim == 1 for p in by_name["mm_projector.no_decay"]["params"])


def test_schedule_warms_up_then_decays_to_zero_on_cosine():
    assert lr_multiplier(0, 100, 0.03) == pytest.approx(1 / 3)
    assert lr_multiplier(2, 100, 0.03) == 1.0
    assert lr_multiplier(51, 100, 0.03) == pytest.approx(0.5, abs=0.02)
    assert lr_multiplier(99, 100, 0.03) < 1e-3
    assert lr_multiplier(99, 100, 0.03, "constant") == 1.0


def test_scheduled_lrs_keep_the_vision_ratio(tmp_path, tiny_config, tiny_tokenizer, samples):
    trainer = _trainer(
        tmp_path, tiny_config, tiny_tokenizer, samples[:4], max_steps=4, warmup_ratio=0.5
    )
    trainer.train()
    lrs = [row["lr_llm"] for row in trainer.history]
    assert lrs[0] == pytest.approx(1.5e-3) and lrs[1] == pytest.approx(3e-3) and lrs[3] < lrs[2]
    for row in trainer.history:
        assert row["lr_vision_tower"] == pytest.approx(row["lr_llm"] / 10)
        assert row["lr_mm_projector"] == row["lr_llm"]


def _no_pickles(folder: Path) -> None:
    allowed = {".json", ".safetensors", ".csv", ".png", ".jinja"}
    for path in folder.rglob("*"):
        if path.is_file():
            assert path.suffix in allowed, path
            head = path.read_bytes()[:4]
            assert not head.startswith((b"\x80", b"PK\x03\x04")), f"{path} looks like a pickle"


def test_resume_from_a_mid_run_checkpoint_continues_identically(
    tmp_path, tiny_config, tiny_tokenizer, samples
):
    data = samples[:8]  # 4 batches per epoch: 7 steps cross an epoch boundary
    common = {"max_steps": 7, "save_every": 3, "warmup_ratio": 0.2}
    full = _trainer(tmp_path / "full", tiny_config, tiny_tokenizer, data, **common)
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-000003"
    assert (checkpoint / "trainer_state.json").is_file() and is_complete(tmp_path / "full")
    # a different random init and DataLoader workers: the checkpoint decides everything
    resumed = _trainer(
        tmp_path / "resumed", tiny_config, tiny_tokenizer, data, seed=5, workers=2, **common
    )
    resumed.train(resume_from=checkpoint)
    expected = [(r["step"], r["loss"], r["grad_norm"]) for r in full.history[3:]]
    assert [(r["step"], r["loss"], r["grad_norm"]) for r in resumed.history] == expected
    for name, tensor in full.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    _no_pickles(tmp_path)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
        ),
    ],
)
def test_resume_restores_a_partly_filled_logging_window_on_the_training_device(
    device, tmp_path, tiny_config, tiny_tokenizer, samples
):
    """A checkpoint taken between two log rows carries the window's sums; they go onto the
    training device (on a GPU they once stayed on the CPU and the resumed run failed)."""
    data = samples[:8]
    common = {"max_steps": 5, "save_every": 3, "log_every": 2, "device": device}
    _trainer(tmp_path / "full", tiny_config, tiny_tokenizer, data, **common).train()
    resumed = _trainer(tmp_path / "resumed", tiny_config, tiny_tokenizer, data, **common)
    resumed.train(resume_from=tmp_path / "full" / "checkpoint-000003")
    assert resumed.history and resumed.history[0]["step"] == 4
    assert all(math.isfinite(row["loss"]) for row in resumed.history)


def test_resume_refuses_a_different_batch_layout(tmp_path, tiny_config, tiny_tokenizer, samples):
    first = _trainer(
        tmp_path / "a", tiny_config, tiny_tokenizer, samples[:8], max_steps=2, save_every=1
    )
    first.train()
    other = _trainer(
        tmp_path / "b", tiny_config, tiny_tokenizer, samples[:8], max_steps=2, grad_accum=2
    )
    with pytest.raises(ValueError, match="grad_accum"):
        other.train(resume_from=tmp_path / "a" / "checkpoint-000001")


def test_hooks_prepare_the_model_and_replace_the_loss(
    tmp_path, tiny_config, tiny_tokenizer, samples
):
    plain = _trainer(tmp_path / "plain", tiny_config, tiny_tokenizer, samples[:2], max_steps=1)
    plain.train()
    calls = []

    def prepare(model, cfg):
        calls.append(cfg.name)
        model.vision_tower.requires_grad_(False)
        return model

    processor = NVILAProcessor(tiny_config, tiny_tokenizer)
    loader = make_loader(NavDataset(samples[:2], processor), 2, seed=1, num_workers=0)
    cfg = TrainConfig(batch_size=2, max_steps=1, log_every=1, save_every=0, device="cpu")
    hooked = Trainer(
        _model(tiny_config, tiny_tokenizer),
        tiny_tokenizer,
        cfg,
        loader,
        out_dir=tmp_path / "hooked",
        prepare_model=prepare,
        loss_fn=lambda out: 2 * answer_cross_entropy(out),
    )
    hooked.train()
    assert calls == ["train"]
    assert "lr_vision_tower" not in hooked.history[0]
    assert hooked.history[0]["loss"] == pytest.approx(2 * plain.history[0]["loss"], rel=1e-6)


def test_batched_loss_equals_per_sample_loss_and_checkpointing_changes_nothing(
    tiny_config, tiny_tokenizer, samples
):
    model = _model(tiny_config, tiny_tokenizer)
    dataset = NavDataset(samples[:3], NVILAProcessor(tiny_config, tiny_tokenizer))
    batch = collate([dataset[i] for i in range(3)])
    module = LossModule(model)
    together = module(batch)["losses"]
    alone = torch.cat([module(collate([dataset[i]]))["losses"] for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    aligned = LossModule(model, pad_to_multiple=16)(batch)  # FP8's padding changes nothing
    torch.testing.assert_close(aligned["losses"], together, rtol=1e-5, atol=1e-6)
    set_trainable(model, MODULES)
    together.sum().backward()
    plain = model.llm.lm_head.weight.grad.clone()
    model.zero_grad()
    model.llm.activation_checkpointing_enable()
    model.vision_tower.vision_model.activation_checkpointing_enable()
    module(batch)["losses"].sum().backward()
    torch.testing.assert_close(model.llm.lm_head.weight.grad, plain)


def test_normalize_action_reads_navila_answers():
    assert normalize_action("The next action is move forward 75 cm.") == "forward 75"
    assert normalize_action("the next action is Turn Left 30 degrees") == "turn left 30"
    assert normalize_action("The next action is stop.") == "stop"
    assert normalize_action("I do not know") is None


def test_shipped_recipes_load_with_nvila_stage_settings():
    stages = load_recipe(RECIPES / "nvila-stages.yaml").stages
    table = [
        (s.name, sorted(s.train.trainable), s.train.lr, s.train.global_batch_size) for s in stages
    ]
    assert table == [
        ("projector-align", ["mm_projector"], 1e-3, 512),
        ("vision-pretrain", ["mm_projector", "vision_tower"], 2e-5, 1024),
        ("llm-pretrain", ["llm", "mm_projector"], 2e-5, 1024),
        ("image-sft", ["llm", "mm_projector", "vision_tower"], 1.5e-5, 1024),
        ("video-sft", ["llm", "mm_projector", "vision_tower"], 2e-5, 2048),
    ]
    assert stages[4].model_overrides["video_pool_sizes"] == [[8, 1, 1]]
    nano = load_recipe(RECIPES / "navila-nano.yaml")
    assert [s.name for s in nano.stages] == ["captions", "navigation", "navigation-runs"]
    assert nano.stages[0].data.num_frames == 1 and nano.stages[1].data.num_frames == 5
    assert nano.stages[1].data.history == nano.stages[2].data.history == "recent"
    assert nano.stages[2].model_overrides == {"nav_merge_actions": True, "nav_previous_actions": 4}
    contrast = load_recipe(RECIPES / "navila-nano-contrast.yaml")
    assert contrast.model == {"checkpoint": "outputs/train/navila-nano/03-navigation-runs/final"}
    paths = {str(d.path) for d in contrast.stages[0].data.datasets}
    assert {str(d.path) for d in nano.stages[2].data.datasets} < paths  # its rollouts, and
    assert {f"data/nano/contrast_{t}" for t in "ABC"} < paths  # their contrast episodes
    vision = load_recipe(RECIPES / "navila-nano-vision.yaml")
    names = ["captions", "captions-questions", "navigation", "navigation-runs"]
    assert [s.name for s in vision.stages] == names and vision.model == nano.model
    for stage, same in zip([vision.stages[0], *vision.stages[2:]], nano.stages, strict=True):
        data = dataclasses.replace(stage.data, source=same.data.source)  # only where it was read
        assert (stage.train, data, stage.model_overrides) == (
            same.train,
            same.data,
            same.model_overrides,
        )
    extra = {str(d.path) for d in vision.stages[1].data.datasets}
    assert "data/nano/questions/questions.json" in extra
    match = load_recipe(RECIPES / "navila-nano-match.yaml")
    readout = load_recipe(RECIPES / "navila-nano-readout.yaml")
    assert [s.name for s in readout.stages] == ["readout", "match"]
    assert readout.stages[1].data == dataclasses.replace(
        match.stages[0].data, source=readout.stages[1].data.source
    )  # the same yes/no questions, after the readout stage
    for stage in (*match.stages, *readout.stages):
        assert stage.data.num_frames == 1 and stage.train.max_steps == 500
    ahead = load_recipe(RECIPES / "navila-nano-statement.yaml")
    assert [s.name for s in ahead.stages] == ["readout", "navigation-statement", "navigation-band"]
    assert ahead.stages[0].data == dataclasses.replace(
        readout.stages[0].data, source=ahead.stages[0].data.source
    )  # the readout stage of navila-nano-readout.yaml
    navigation = ahead.stages[1]
    # the model states both names and the engine compares them (nav_verdict: names)
    assert navigation.model_overrides == {"nav_statement": True, "nav_verdict": "names"}
    assert navigation.data.num_frames == nano.stages[1].data.num_frames == 5
    assert navigation.data.history == "recent"
    paths = {str(d.path) for d in navigation.data.datasets}
    assert {str(d.path) for d in nano.stages[1].data.datasets} <= paths
    assert {"data/nano/contrast_A", "data/nano/readout/readout.json"} <= paths
    # then the same navigation on the rollouts ended at the 0.8 m stop band, from that model
    band = ahead.stages[2]
    assert (band.data.num_frames, band.data.history) == (5, "recent")
    assert band.train.lr < navigation.train.lr
    assert band.model_overrides == {"nav_initial_turn": "stated"}
    band_paths = {str(d.path) for d in band.data.datasets}
    assert {f"data/nano/band08_{t}" for t in "ABC"} | {"data/nano/band08_val_C"} <= band_paths
    assert {f"data/nano/contrast08_{t}" for t in "ABC"} <= band_paths
    assert band_paths.isdisjoint({f"data/nano/train_{t}" for t in "ABC"})


def _tiny_recipe(rollout, **stage_extra):
    return {
        "name": "tiny",
        "model": {"preset": "tiny"},
        "data": {"datasets": [{"name": "sim", "path": str(rollout)}]},
        "defaults": {"batch_size": 2, "max_steps": 2, "device": "cpu", "num_workers": 0},
        "stages": [
            {"name": "align", "trainable": ["mm_projector"], "lr": 1e-2, **stage_extra},
            {"name": "language", "trainable": ["llm"]},
        ],
    }


def test_a_recipe_with_a_base_states_only_what_differs(tmp_path):
    blind = load_recipe(RECIPES / "navila-nano-blind.yaml")
    nano = load_recipe(RECIPES / "navila-nano.yaml")
    assert blind.name == "navila-nano-blind" and blind.model == nano.model
    assert blind.stages[0].train == nano.stages[0].train  # the caption stage is shared
    differs = dataclasses.replace(blind.stages[1].train, max_steps=nano.stages[1].train.max_steps)
    assert differs == nano.stages[1].train  # navigation differs only in its length
    assert blind.stages[-1].data.blank_frames and not nano.stages[-1].data.blank_frames
    assert blind.stages[-1].data.datasets == nano.stages[-1].data.datasets
    (tmp_path / "a.yaml").write_text("base: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\n")
    with pytest.raises(RecipeError, match="loops"):
        load_recipe(tmp_path / "a.yaml")


def test_run_recipe_chains_stages_and_skips_finished_ones(tmp_path, rollout, tiny_config):
    recipe = recipe_from_dict(_tiny_recipe(rollout))
    final = run_recipe(recipe, tmp_path)
    assert final == tmp_path / "02-language" / "final"
    aligned, _ = load_checkpoint(tmp_path / "01-align" / "final")
    done, _ = load_checkpoint(final)
    initial = NVILAModel.from_config(tiny_config, seed=0)
    weight = "layers.2.weight"
    stage1 = aligned.mm_projector.state_dict()[weight]
    assert not torch.equal(stage1, initial.mm_projector.state_dict()[weight])
    assert torch.equal(done.mm_projector.state_dict()[weight], stage1)  # frozen in stage 2
    assert not torch.equal(done.llm.lm_head.weight, aligned.llm.lm_head.weight)
    stamp = (final / "trainer_state.json").stat().st_mtime_ns
    assert run_recipe(recipe, tmp_path) == final
    assert (final / "trainer_state.json").stat().st_mtime_ns == stamp


def test_run_recipe_resumes_an_interrupted_stage(tmp_path, rollout):
    recipe = recipe_from_dict(_tiny_recipe(rollout, max_steps=4, save_every=2))
    run_recipe(recipe, tmp_path, stage="align")
    stage_dir = tmp_path / "01-align"
    with (stage_dir / "metrics.csv").open() as f:
        uninterrupted = [r["loss"] for r in csv.DictReader(f)]
    reference = load_checkpoint(stage_dir / "final")[0].mm_projector.state_dict()
    shutil.rmtree(stage_dir / "final")  # as if killed after the step-2 checkpoint
    run_recipe(recipe, tmp_path, stage="align")
    with (stage_dir / "metrics.csv").open() as f:
        assert [r["loss"] for r in csv.DictReader(f)] == uninterrupted
    resumed = load_checkpoint(stage_dir / "final")[0].mm_projector.state_dict()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_recipe_errors_name_the_stage(tmp_path, rollout):
    data = _tiny_recipe(rollout)
    data["stages"][1]["lr_typo"] = 1.0
    with pytest.raises(ValueError, match=r"stage 2 \(language\).*lr_typo"):
        recipe_from_dict(data)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(_tiny_recipe(rollout)))
    recipe = load_recipe(tmp_path / "r.yaml")
    with pytest.raises(ValueError, match="not finished"):
        run_recipe(recipe, tmp_path / "out", stage="language")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_fp8_stage_refuses_on_cpu_before_training(tmp_path, tiny_config, tiny_tokenizer, samples):
    with pytest.raises(RuntimeError, match=r"compute capability >= 8\.9.*no CUDA device"):
        _trainer(tmp_path, tiny_config, tiny_tokenizer, samples, fp8=True, fp8_min_features=64)
    assert not any(tmp_path.iterdir())


def test_a_stage_that_would_repeat_an_earlier_stages_sample_order_is_named(rollout, caplog):
    """Two stages on the same data with the same seed draw the same order (the second revisits
    the first's samples before any other); loading such a recipe says so, and a stage `seed`
    gives the later stage an order of its own."""
    with caplog.at_level(logging.WARNING, logger="nvila_core.train.recipe"):
        repeated = recipe_from_dict(_tiny_recipe(rollout))
    assert "stage language draws the same training-sample order as stage align" in caplog.text
    orders = [list(EpochSampler(100, 10, seed=s.train.seed))[:10] for s in repeated.stages]
    assert orders[0] == orders[1]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nvila_core.train.recipe"):
        load_recipe(RECIPES / "navila-nano.yaml")  # its two navigation stages share an order
    assert "stage navigation-runs draws the same training-sample order as stage navigation" in (
        caplog.text
    )
    caplog.clear()
    reseeded = _tiny_recipe(rollout)
    reseeded["stages"][1]["seed"] = 1
    with caplog.at_level(logging.WARNING, logger="nvila_core.train.recipe"):
        recipe = recipe_from_dict(reseeded)
    assert "same training-sample order" not in caplog.text
    orders = [list(EpochSampler(100, 10, seed=s.train.seed))[:10] for s in recipe.stages]
    assert orders[0] != orders[1]
