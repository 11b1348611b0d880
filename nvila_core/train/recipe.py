"""Stage recipes: a model, a tokenizer and an ordered list of training stages, as YAML.

NVILA is trained in five stages that differ in what is trainable, the learning rate, the data
and the media settings (nvila.md §5.1); a recipe writes that down once (`config/train/*.yaml`,
format in docs/training.md). `run_recipe` runs the stages in order, each starting from the
previous stage's final model, skips finished stages and resumes an interrupted one from its
newest checkpoint, so a killed run continues with `nvila-core train --recipe R` again.

A stage counts as finished only if its `final/trainer_state.json` records the training settings
this run asks for (`max_steps` included): a stage left by a `--max-steps` smoke run, or by an
edited recipe, is refused with a message instead of being passed on as the real model. A smoke
run (`smoke=True`) also shortens the end-of-stage evaluation to a few validation samples.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import PreTrainedTokenizerBase

from nvila_core.model.checkpoint import load_checkpoint
from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.processing import NVILAProcessor
from nvila_core.model.prompting import action_phrase
from nvila_core.model.temporal import TemporalPooler
from nvila_core.model.tokenizer import build_tokenizer, load_tokenizer
from nvila_core.train.data import Mixture, NavDataset, NavSample, load_mixture, make_loader
from nvila_core.train.distributed import DistContext, init_distributed
from nvila_core.train.trainer import (
    FINAL_DIR,
    STATE_FILE,
    TrainConfig,
    Trainer,
    is_complete,
    latest_checkpoint,
)

log = logging.getLogger(__name__)

MODEL_SOURCES = ("preset", "config", "checkpoint")
# Settings a stage may change without touching the weights' shapes (nvila.md §5.1: stage 5
# switches to resized frames, more of them, and temporal pooling).
MODEL_OVERRIDES = (
    "image_aspect_ratio",
    "num_video_frames",
    "video_pool_sizes",
    "model_max_length",
    "nav_merge_actions",
    "nav_previous_actions",
    "nav_statement",
    "nav_verdict",
    "nav_initial_turn",
)
_STAGE_KEYS = ("name", "data", "num_frames", "model_overrides")
_RECIPE_KEYS = ("name", "model", "tokenizer", "seed", "defaults", "data", "stages")
_BASE_KEY = "base"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# Fine-tuning learning-rate ratios live on the stage, so there is one source of truth.
_FINETUNE_LR_KEYS = ("vision_lr_ratio", "projector_lr")
# TrainConfig fields that change how a run is carried out, not the model it trains: a finished
# stage whose recorded settings differ only in these still counts as finished.
RUN_ONLY_SETTINGS = (
    "device",
    "strategy",
    "num_workers",
    "log_every",
    "save_every",
    "save_total_limit",
    "eval_every",
    "eval_generate_samples",
    "eval_max_new_tokens",
)
# A smoke run's end-of-stage evaluation: the val loss on this many samples, this many decoded.
SMOKE_VAL_SAMPLES = 8
SMOKE_GENERATE_SAMPLES = 2


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the file and the stage."""


@dataclass
class Stage:
    name: str
    train: TrainConfig
    data: Mixture
    model_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    name: str
    model: dict[str, Any]  # one of {preset: NAME}, {config: {...}}, {checkpoint: PATH}
    stages: list[Stage]
    tokenizer: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    source: str = "<inline>"

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        known = ", ".join(s.name for s in self.stages)
        raise RecipeError(f"{self.source}: no stage {name!r} (stages: {known})")


def _mixture(spec: Any, where: str) -> Mixture:
    if isinstance(spec, str):
        return load_mixture(spec)
    if isinstance(spec, dict):
        return Mixture.from_dict(spec, source=where)
    raise RecipeError(f"{where}: 'data' must be a mixture file path or a mixture mapping")


def recipe_from_dict(data: dict[str, Any], source: str = "<inline>") -> Recipe:
    """A recipe from its YAML mapping; every stage is validated, no data is read."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a mapping")
    unknown = sorted(set(data) - set(_RECIPE_KEYS))
    if unknown:
        raise RecipeError(f"{source}: unknown recipe keys {unknown} (known: {list(_RECIPE_KEYS)})")
    model = data.get("model")
    if not isinstance(model, dict) or len(set(model) & set(MODEL_SOURCES)) != 1:
        raise RecipeError(f"{source}: 'model' needs exactly one of {', '.join(MODEL_SOURCES)}")
    stages_data = data.get("stages")
    if not isinstance(stages_data, list) or not stages_data:
        raise RecipeError(f"{source}: 'stages' must be a non-empty list")
    defaults = dict(data.get("defaults") or {})
    stages = []
    for n, entry in enumerate(stages_data):
        merged = {**defaults, **(entry or {})}
        name = str(merged.get("name", ""))
        where = f"{source} stage {n + 1} ({name or 'unnamed'})"
        if not _NAME.match(name):
            raise RecipeError(f"{where}: a stage needs a name of letters, digits, '_', '.', '-'")
        if "data" not in merged and "data" not in data:
            raise RecipeError(f"{where}: no 'data' (per stage or at the top level)")
        overrides = dict(merged.get("model_overrides") or {})
        bad = sorted(set(overrides) - set(MODEL_OVERRIDES))
        if bad:
            raise RecipeError(
                f"{where}: model_overrides may set {list(MODEL_OVERRIDES)}, not {bad}"
            )
        train = {k: v for k, v in merged.items() if k not in _STAGE_KEYS}
        lr_keys = sorted(set(train.get("finetune") or {}) & set(_FINETUNE_LR_KEYS))
        if lr_keys:
            raise RecipeError(f"{where}: set {lr_keys} on the stage, not under 'finetune'")
        try:
            config = TrainConfig.from_dict({**train, "name": name})
            mixture = _mixture(merged.get("data", data.get("data")), where)
        except ValueError as err:
            raise RecipeError(f"{where}: {err}") from err
        if "num_frames" in merged:
            mixture = dataclasses.replace(mixture, num_frames=int(merged["num_frames"]))
        stages.append(Stage(name, config, mixture, overrides))
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise RecipeError(f"{source}: stage names must be unique, got {names}")
    _warn_repeated_orders(stages, source)
    return Recipe(
        name=str(data.get("name", Path(source).stem)),
        model=dict(model),
        stages=stages,
        tokenizer=dict(data.get("tokenizer") or {}),
        seed=int(data.get("seed", 0)),
        source=source,
    )


def _warn_repeated_orders(stages: list[Stage], source: str) -> None:
    """A stage on an earlier stage's training data with its seed draws the same sample order: two
    stages of part of an epoch each then train on the same leading part twice, never the rest."""
    for i, stage in enumerate(stages):
        for earlier in stages[:i]:
            same_data = stage.data.datasets == earlier.data.datasets
            if same_data and (stage.data.seed, stage.train.seed) == (
                earlier.data.seed,
                earlier.train.seed,
            ):
                log.warning(
                    "%s: stage %s draws the same training-sample order as stage %s (same data, "
                    "seed %d): its steps revisit %s's samples first; give it another 'seed' to "
                    "reach the others",
                    source,
                    stage.name,
                    earlier.name,
                    stage.train.seed,
                    earlier.name,
                )
                break


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """override on top of base: mappings merge key by key, anything else (lists too) replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_recipe_data(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file's mapping with its `base:` chain resolved (relative to the file)."""
    if path.resolve() in seen:
        raise RecipeError(f"recipe {path}: 'base' chain loops ({' -> '.join(map(str, seen))})")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise RecipeError(f"cannot read recipe {path}: {err}") from err
    if not isinstance(data, dict) or _BASE_KEY not in data:
        return data
    data = dict(data)
    base_path = path.parent / str(data.pop(_BASE_KEY))
    base = read_recipe_data(base_path, (*seen, path.resolve()))
    if not isinstance(base, dict):
        raise RecipeError(f"recipe {path}: base {base_path} is not a mapping")
    return _deep_merge(base, data)


def load_recipe(path: str | Path) -> Recipe:
    """A recipe file. `base: other.yaml` (relative to the file) starts from that recipe: the
    file's mappings merge into the base's key by key, its lists (stages, datasets) replace."""
    path = Path(path)
    return recipe_from_dict(read_recipe_data(path), source=str(path))


# ---------------------------------------------------------------- running
def _model_config(recipe: Recipe) -> NVILAConfig:
    spec = recipe.model
    if "preset" in spec:
        return NVILAConfig.preset(str(spec["preset"]))
    return NVILAConfig.from_dict({"name": recipe.name, **spec["config"]})


def initial_model(recipe: Recipe) -> tuple[NVILAModel, PreTrainedTokenizerBase]:
    """The first stage's starting point: a checkpoint, or random weights (seeded) and a BPE
    tokenizer built for the config's vocabulary (with `tokenizer.train_on_instructions`, the
    training texts of every stage join its corpus: navigation instructions, image-text prompts
    and answers)."""
    if "checkpoint" in recipe.model:
        return load_checkpoint(recipe.model["checkpoint"], dtype=torch.float32)
    config = _model_config(recipe)
    corpus: list[str] = []
    if recipe.tokenizer.get("train_on_instructions"):
        texts = {
            text
            for each in recipe.stages
            for s in each.data.train_samples()
            for text in _corpus_texts(s)
            if text
        }
        corpus = sorted(texts)
    tokenizer = build_tokenizer(int(config.llm_config["vocab_size"]), config.chat_template, corpus)
    model = NVILAModel.from_config(config, seed=recipe.seed, tokenizer=tokenizer, dtype="float32")
    return model, tokenizer


def _corpus_texts(sample: NavSample) -> tuple[str | None, ...]:
    """Texts of a training sample the tokenizer should encode compactly: image-text prompts and
    answers; for navigation, the instruction and the compact prompt's words and action phrases."""
    if sample.prompt is not None:
        return (sample.instruction, sample.prompt, sample.answer)
    return (
        f"Task: {sample.instruction}",
        "Done: " + (", ".join(sample.previous_actions) or "nothing") + "\nNext?",
        action_phrase(sample.answer),
    )


def apply_model_overrides(model: NVILAModel, overrides: dict[str, Any]) -> None:
    """A stage's media settings on the model (validated like any NVILAConfig).

    An image mode that changes the projector's input width (dynamic-S2 concatenates one ViT
    width per scale) would not fit the trained weights, so it is refused.
    """
    if not overrides:
        return
    config = dataclasses.replace(model.config, **overrides)
    if config.mm_hidden_size != model.config.mm_hidden_size:
        raise RecipeError(
            f"model_overrides {overrides} change the projector input from "
            f"{model.config.mm_hidden_size} to {config.mm_hidden_size} channels"
        )
    model.config = config
    model.temporal = TemporalPooler(config.video_pool_sizes)


def _finetune_hooks(cfg: TrainConfig) -> dict[str, Any]:
    """prepare/finalize hooks of a stage with a `finetune` section (LoRA, LayerNorm-only, ...)."""
    if not cfg.finetune:
        return {}
    from nvila_core.train.finetune import FinetuneConfig, apply_finetune, merge_lora

    def prepare(model: NVILAModel, stage_cfg: TrainConfig) -> NVILAModel:
        settings = FinetuneConfig(
            **stage_cfg.finetune,
            vision_lr_ratio=stage_cfg.vision_lr_ratio,
            projector_lr=stage_cfg.projector_lr,
        )
        return apply_finetune(model, settings)

    return {"prepare_model": prepare, "finalize_model": merge_lora}


def stage_dir(out_dir: str | Path, recipe: Recipe, stage: Stage) -> Path:
    return Path(out_dir) / f"{recipe.stages.index(stage) + 1:02d}-{stage.name}"


def stage_config(stage: Stage, max_steps: int | None = None, smoke: bool = False) -> TrainConfig:
    """The stage's TrainConfig for this run: `max_steps` overrides the recipe's; a smoke run
    decodes only SMOKE_GENERATE_SAMPLES val samples at the end."""
    cfg = stage.train
    if max_steps is not None:
        cfg = dataclasses.replace(cfg, max_steps=max_steps)
    if smoke:
        generate = min(cfg.eval_generate_samples, SMOKE_GENERATE_SAMPLES)
        cfg = dataclasses.replace(cfg, eval_generate_samples=generate)
    return cfg


def finished_config_differences(folder: str | Path, cfg: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """{setting: (recorded, requested)} for the training settings in which the finished stage
    in `folder` differs from `cfg`; RUN_ONLY_SETTINGS are not compared, and neither are
    settings the stage's state file does not record."""
    state = json.loads((Path(folder) / FINAL_DIR / STATE_FILE).read_text())
    recorded = state.get("config")
    if not isinstance(recorded, dict):
        return {}
    requested = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples as JSON lists
    return {
        key: (recorded[key], value)
        for key, value in requested.items()
        if key not in RUN_ONLY_SETTINGS and key in recorded and recorded[key] != value
    }


def check_finished_stage(folder: str | Path, stage: Stage, cfg: TrainConfig) -> None:
    """Refuse a finished stage that was trained with other settings than `cfg` asks for."""
    differences = finished_config_differences(folder, cfg)
    if not differences:
        return
    changes = ", ".join(
        f"{key}={recorded!r} (this run: {requested!r})"
        for key, (recorded, requested) in differences.items()
    )
    raise RecipeError(
        f"stage {stage.name!r} in {folder} was finished with other training settings: "
        f"{changes}. It is not this run's stage (a `--max-steps` smoke run, or an edited "
        f"recipe?): train into another --out, or delete {folder} and the stages after it to "
        "train them again"
    )


def run_stage(
    recipe: Recipe,
    stage: Stage,
    out_dir: str | Path,
    resume: bool = True,
    max_steps: int | None = None,
    ctx: DistContext | None = None,
    smoke: bool = False,
) -> Path:
    """Train one stage from the previous stage's final model; returns its final model folder.

    `smoke`: a quick check of the whole chain; the end-of-stage evaluation covers only
    SMOKE_VAL_SAMPLES val samples and decodes SMOKE_GENERATE_SAMPLES of them.
    """
    folder = stage_dir(out_dir, recipe, stage)
    index = recipe.stages.index(stage)
    checkpoint = latest_checkpoint(folder) if resume else None
    if not resume and folder.is_dir() and any(folder.iterdir()):
        raise RecipeError(f"{folder} already holds a run; resume it or pick another --out")
    cfg = stage_config(stage, max_steps, smoke)
    ctx = ctx or init_distributed(cfg.device)
    if index == 0:
        model, tokenizer = initial_model(recipe)
    else:
        previous = stage_dir(out_dir, recipe, recipe.stages[index - 1]) / FINAL_DIR
        if not is_complete(previous.parent):
            raise RecipeError(f"stage {stage.name!r} starts from {previous}, which is not finished")
        before = recipe.stages[index - 1]
        check_finished_stage(previous.parent, before, stage_config(before, max_steps, smoke))
        model, tokenizer = load_checkpoint(previous, dtype=torch.float32)
    if checkpoint is not None:
        tokenizer = load_tokenizer(checkpoint / "llm")
    apply_model_overrides(model, stage.model_overrides)
    navigation = [d.name for d in stage.data.datasets if d.path.suffix != ".json"]
    if navigation and stage.data.history != model.config.nav_history:
        raise RecipeError(
            f"stage {stage.name!r}: its data shows the {stage.data.history!r} frame history but "
            f"the model expects {model.config.nav_history!r} (set 'history' in the stage's data)"
        )
    processor = NVILAProcessor(model.config, tokenizer)
    train_loader = make_loader(
        NavDataset(stage.data.train_samples(), processor),
        cfg.batch_size,
        seed=cfg.seed,
        num_workers=cfg.num_workers,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    val_samples = stage.data.val_samples()
    if smoke:
        val_samples = val_samples[:SMOKE_VAL_SAMPLES]
    val_loader = None
    if val_samples:
        val_loader = make_loader(
            NavDataset(val_samples, processor),
            cfg.batch_size,
            shuffle=False,
            num_workers=cfg.num_workers,
            drop_last=False,
        )
    if ctx.is_main:
        where = f"resuming from {checkpoint}" if checkpoint else "starting"
        log.info("stage %s: %s (%d train samples)", stage.name, where, len(train_loader.dataset))
    trainer = Trainer(
        model,
        tokenizer,
        cfg,
        train_loader,
        val_loader,
        out_dir=folder,
        ctx=ctx,
        **_finetune_hooks(cfg),
    )
    trainer.train(resume_from=checkpoint)
    return folder / FINAL_DIR


def run_recipe(
    recipe: Recipe,
    out_dir: str | Path,
    resume: bool = True,
    stage: str | None = None,
    max_steps: int | None = None,
    ctx: DistContext | None = None,
    smoke: bool = False,
) -> Path:
    """Run the recipe's stages in order (or only `stage`) under `out_dir/NN-<stage>/`.

    With `resume`, finished stages are skipped and an interrupted stage continues from its
    newest checkpoint; a finished stage trained with other settings (`max_steps` included)
    raises RecipeError. `smoke` shortens each stage's final evaluation (`run_stage`). Returns
    the final model folder of the last stage run.
    """
    stages = [recipe.stage(stage)] if stage else recipe.stages
    ctx = ctx or init_distributed(stages[0].train.device)
    final = None
    for current in stages:
        folder = stage_dir(out_dir, recipe, current)
        if resume and is_complete(folder):
            check_finished_stage(folder, current, stage_config(current, max_steps, smoke))
            if ctx.is_main:
                log.info("stage %s: already finished in %s", current.name, folder)
            final = folder / FINAL_DIR
            continue
        final = run_stage(recipe, current, out_dir, resume, max_steps, ctx, smoke)
    return final
