"""Supervised training of NVILA models on answer tokens, with exact resume and data parallelism.

Why it looks the way it does:
- The loss is cross-entropy on the answer (and end) tokens only; each sample weighs the same, so
  the loss of a global batch is a plain sum over its samples and splits exactly over gradient
  accumulation steps and ranks (one process and N ranks reach the same weights).
- Logits are computed only at answer positions: a 150k vocabulary times every prompt position
  would cost gigabytes for nothing.
- Trainable modules and learning rates follow NVILA (nvila.md §5): per-module requires_grad,
  one optimizer group per module, the vision tower at lr / vision_lr_ratio.
- Checkpoints are the VILA split layout (loadable by `load_checkpoint`) plus safetensors and JSON
  for the optimizer, RNG and loop state: never pickle. Resuming restores all of it and the data
  position, so a resumed run reproduces the uninterrupted loss sequence bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from nvila_core.model.checkpoint import save_checkpoint
from nvila_core.model.generation import greedy_decode
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.prompting import stop_token_ids
from nvila_core.progress import Progress, track
from nvila_core.train import distributed as dist_utils
from nvila_core.train.data import IGNORE_INDEX, Batch
from nvila_core.train.distributed import DistContext, EpochSampler
from nvila_core.train.fp8 import FP8_ALIGNMENT, enable_fp8

log = logging.getLogger(__name__)

MODULES = ("vision_tower", "mm_projector", "llm")
SCHEDULES = ("cosine", "constant")
DTYPES = ("float32", "bfloat16")
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng_state.safetensors"
METRICS_FILE = "metrics.csv"
FINAL_DIR = "final"
STATE_FORMAT = "nvila_core.train"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


# ---------------------------------------------------------------- configuration
@dataclass
class TrainConfig:
    """One training stage. Defaults follow NVILA's scripts (nvila.md §5.1)."""

    name: str = "train"
    trainable: list[str] = field(default_factory=lambda: list(MODULES))
    finetune: dict[str, Any] = field(default_factory=dict)  # read by a `prepare_model` hook
    max_steps: int | None = None  # optimizer steps; None: `epochs` over the data
    epochs: float = 1.0
    batch_size: int = 8  # per device and micro-batch
    grad_accum: int = 1
    global_batch_size: int | None = None  # if set, grad_accum = global / (batch_size * ranks)
    lr: float = 2e-5  # LLM learning rate (and every module's, ViT aside, unless set below)
    vision_lr_ratio: float = 10.0  # vision tower lr = lr / vision_lr_ratio
    projector_lr: float | None = None  # None: lr
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.03
    schedule: str = "cosine"
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    gradient_checkpointing: bool = False
    log_every: int = 10
    save_every: int = 500  # 0: only the final model
    save_total_limit: int = 2  # newest resumable checkpoints kept
    eval_every: int = 0  # 0: only after the last step
    eval_generate_samples: int = 64  # val samples greedily decoded for next-action accuracy
    eval_max_new_tokens: int = 24
    seed: int = 0
    dtype: str = "float32"  # autocast dtype; weights stay float32
    fp8: bool = False  # FP8 matmuls in the LLM's large decoder linears (train/fp8.py; GPU only)
    fp8_min_features: int = 3584  # COAT's threshold: min(in, out) of a linear converted to FP8
    device: str = "auto"
    strategy: str = "ddp"  # with several ranks: ddp | fsdp
    num_workers: int = 2  # DataLoader workers (used by the recipe runner)

    def __post_init__(self) -> None:
        self.trainable = list(self.trainable)
        self.adam_betas = (float(self.adam_betas[0]), float(self.adam_betas[1]))
        self.validate()

    def validate(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"train config {self.name!r}: {message}")

        unknown = sorted(set(self.trainable) - set(MODULES))
        check(not unknown, f"unknown trainable modules {unknown} (known: {', '.join(MODULES)})")
        check(bool(self.trainable) or bool(self.finetune), "nothing to train")
        check(self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1")
        check(self.epochs > 0, "epochs must be > 0")
        check(self.batch_size >= 1 and self.grad_accum >= 1, "batch_size, grad_accum >= 1")
        check(self.lr > 0 and self.vision_lr_ratio > 0, "lr and vision_lr_ratio must be > 0")
        check(0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)")
        check(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}")
        check(self.dtype in DTYPES, f"dtype must be one of {DTYPES}")
        check(self.fp8_min_features >= 1, "fp8_min_features must be >= 1")
        check(
            self.strategy in dist_utils.STRATEGIES,
            f"strategy must be one of {dist_utils.STRATEGIES}",
        )
        check(self.log_every >= 1, "log_every must be >= 1")
        check(min(self.save_every, self.eval_every, self.grad_clip) >= 0, "negative interval")
        check(self.save_total_limit >= 1, "save_total_limit must be >= 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown train config keys {unknown} (known: {sorted(known)})")
        return cls(**data)

    def module_lrs(self) -> dict[str, float]:
        return {
            "vision_tower": self.lr / self.vision_lr_ratio,
            "mm_projector": self.projector_lr if self.projector_lr is not None else self.lr,
            "llm": self.lr,
        }


# ---------------------------------------------------------------- trainable parts
def set_trainable(model: NVILAModel, modules: Sequence[str]) -> None:
    """requires_grad and train/eval mode per module; frozen modules stay in eval mode (as VILA).

    Vision blocks after the selected layer and the post-layernorm never run, so they get no
    gradient and stay frozen (DDP needs every trainable parameter to take part in forward).
    """
    unknown = sorted(set(modules) - set(MODULES))
    if unknown:
        raise ValueError(f"unknown modules {unknown} (known: {', '.join(MODULES)})")
    model.train()
    for name in MODULES:
        part = getattr(model, name)
        part.requires_grad_(name in modules)
        part.train(name in modules)
    freeze_unused(model)


def freeze_unused(model: NVILAModel) -> None:
    """Freeze what forward never runs: the vision blocks after the selected layer and the
    post-layernorm (they would get no gradient, which DDP rejects)."""
    tower = model.vision_tower.vision_model
    tower.encoder.layers[model.vision_tower.num_layers_run :].requires_grad_(False)
    tower.post_layernorm.requires_grad_(False)


def param_groups(model: NVILAModel, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Optimizer groups named after the top-level module ("vision_tower", "mm_projector",
    "llm"), each with its lr; frozen parameters are left out.

    With weight decay, 1-D tensors (biases, norms) go to a "<module>.no_decay" group.
    """
    lrs = cfg.module_lrs()
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        module = name.split(".")[0]
        decays = cfg.weight_decay > 0 and param.ndim >= 2
        key = module if decays or cfg.weight_decay == 0 else f"{module}.no_decay"
        lr = lrs.get(module, cfg.lr)
        group = groups.setdefault(
            key,
            {"name": key, "params": [], "lr": lr, "base_lr": lr, "weight_decay": 0.0},
        )
        if decays:
            group["weight_decay"] = cfg.weight_decay
        group["params"].append(param)
    if not groups:
        raise ValueError(f"train config {cfg.name!r}: the model has no trainable parameter")
    return list(groups.values())


def lr_multiplier(step: int, total: int, warmup_ratio: float, schedule: str = "cosine") -> float:
    """Linear warmup over ceil(warmup_ratio * total) steps, then cosine to 0 (or constant).

    `step` is the 0-based index of the optimizer step about to be taken.
    """
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- loss
@dataclass
class AnswerLogits:
    """Logits at the positions that predict an answer token, flattened over the batch."""

    logits: torch.Tensor  # [N, vocab]
    targets: torch.Tensor  # [N]
    sample_index: torch.Tensor  # [N] the sample each row belongs to
    batch_size: int


LossFn = Callable[[AnswerLogits], torch.Tensor]  # -> [batch] loss per sample


def answer_cross_entropy(out: AnswerLogits) -> torch.Tensor:
    """Per sample, the mean cross-entropy over its answer tokens."""
    token_loss = F.cross_entropy(out.logits.float(), out.targets, reduction="none")
    sums = token_loss.new_zeros(out.batch_size).index_add(0, out.sample_index, token_loss)
    counts = torch.bincount(out.sample_index, minlength=out.batch_size).clamp(min=1)
    return sums / counts


def splice_labels(
    labels: torch.Tensor, positions: Sequence[int], lengths: Sequence[int]
) -> torch.Tensor:
    """Labels for the spliced sequence: each media position becomes `length` ignored labels."""
    pieces, start = [], 0
    for pos, length in zip(positions, lengths, strict=True):
        pieces += [labels[start:pos], labels.new_full((length,), IGNORE_INDEX)]
        start = pos + 1
    pieces.append(labels[start:])
    return torch.cat(pieces)


class LossModule(nn.Module):
    """model + batch -> per-sample losses; the unit that DDP / FSDP wrap.

    All frames of the batch go through the vision tower together (pixel-identical ones once);
    the spliced sequences are right-padded into one LLM call (padding never reaches a real token
    under the causal mask), to a multiple of `pad_to_multiple` positions: FP8 matmuls need the
    token count of the weight gradient to be a multiple of 16.
    """

    def __init__(
        self, model: NVILAModel, loss_fn: LossFn = answer_cross_entropy, pad_to_multiple: int = 1
    ):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.pad_to_multiple = pad_to_multiple

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        model = self.model
        device = model.device
        flat = [item for media in batch.media for item in media]
        encoded = model.encode_media_items(flat, dedupe_frames=True).embeds if flat else []
        embeds, labels, start = [], [], 0
        for ids, sample_labels, media in zip(
            batch.input_ids, batch.labels, batch.media, strict=True
        ):
            id_list = ids.tolist()
            media_embeds = encoded[start : start + len(media)]
            start += len(media)
            embeds.append(model.embed_inputs(id_list, media, media_embeds)[0])
            positions = model.media_positions(id_list, media)
            lengths = [e.shape[0] for e in media_embeds]
            labels.append(splice_labels(sample_labels, positions, lengths))
        lengths = torch.tensor([e.shape[0] for e in embeds], device=device)
        inputs_embeds = nn.utils.rnn.pad_sequence(embeds, batch_first=True)
        padded = nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX)
        extra = -inputs_embeds.shape[1] % self.pad_to_multiple
        if extra:
            inputs_embeds = F.pad(inputs_embeds, (0, 0, 0, extra))
            padded = F.pad(padded, (0, extra), value=IGNORE_INDEX)
        mask = (torch.arange(inputs_embeds.shape[1], device=device)[None] < lengths[:, None]).long()
        padded = padded.to(device)
        hidden = model.llm.get_decoder()(
            inputs_embeds=inputs_embeds, attention_mask=mask, use_cache=False
        ).last_hidden_state
        targets = padded[:, 1:]
        select = targets != IGNORE_INDEX
        logits = model.llm.get_output_embeddings()(hidden[:, :-1][select])
        rows = torch.arange(len(embeds), device=device)[:, None].expand_as(targets)[select]
        losses = self.loss_fn(AnswerLogits(logits, targets[select], rows, len(embeds)))
        return {"losses": losses, "tokens": lengths.sum()}


# ---------------------------------------------------------------- answers
_ACTION = re.compile(
    r"\b(?:(stop)\b|move forward (\d+)\s*cm|turn (left|right) (\d+)\s*deg)", re.IGNORECASE
)


def normalize_action(text: str) -> str | None:
    """The first action phrase of a NaVILA answer in canonical form, or None if there is none.

    "The next action is turn left 30 degrees." -> "turn left 30"; nvila_core cannot use the
    robot's action grammar, so this is a regex over the answer text.
    """
    match = _ACTION.search(text)
    if match is None:
        return None
    stop, forward, side, degrees = match.groups()
    if stop:
        return "stop"
    if forward:
        return f"forward {int(forward)}"
    return f"turn {side.lower()} {int(degrees)}"


# ---------------------------------------------------------------- checkpoint helpers
def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete `checkpoint-N` folder under `out_dir`."""
    found = []
    for path in Path(out_dir).glob("checkpoint-*"):
        match = _CHECKPOINT.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def is_complete(out_dir: str | Path) -> bool:
    """Whether a training run in `out_dir` finished (its final model is saved)."""
    state = Path(out_dir) / FINAL_DIR / STATE_FILE
    return state.is_file() and bool(json.loads(state.read_text()).get("completed"))


def _tied_aliases(model: nn.Module) -> set[str]:
    seen: set[int] = set()
    aliases = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            aliases.add(name)
        seen.add(id(tensor))
    return aliases


def load_weights(model: nn.Module, folder: str | Path) -> None:
    """Every tensor of a VILA-layout checkpoint into `model`, strictly by name.

    Unlike `load_checkpoint` this fills an existing model, including modules a `prepare_model`
    hook added (their tensors are saved in the same files).
    """
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    for part in MODULES:
        files = sorted((folder / part).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{folder / part}: no safetensors weights")
        for file in files:
            tensors.update({f"{part}.{k}": v for k, v in load_file(str(file)).items()})
    result = model.load_state_dict(tensors, strict=False)
    missing = set(result.missing_keys) - _tied_aliases(model)
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{folder}: weights do not fit the model (missing {sorted(missing)[:3]}, unexpected "
            f"{sorted(result.unexpected_keys)[:3]})"
        )


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A name-keyed optimizer state as safetensors tensors ("<param>:<key>") plus JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for param, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}:{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{param}:{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        param, key = flat.rsplit(":", 1)
        state.setdefault(param, {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ---------------------------------------------------------------- trainer
class Trainer:
    """Trains one stage: `train()` runs the loop, `evaluate()` measures val loss and accuracy.

    Hooks: `prepare_model(model, cfg) -> model` runs after the trainable modules are set (LoRA,
    LayerNorm-only, FP8 layers: it decides requires_grad itself); `loss_fn(AnswerLogits) ->
    [batch]` replaces the per-sample loss; `finalize_model(model) -> model` runs on the model
    before the final save (e.g. merging adapters). Under torchrun, pass loaders built for this
    rank (`make_loader(..., rank, world_size)`); only rank 0 logs, evaluates and writes files.
    """

    def __init__(
        self,
        model: NVILAModel,
        tokenizer: PreTrainedTokenizerBase,
        cfg: TrainConfig,
        train_loader: DataLoader,
        val_loader: DataLoader | None = None,
        out_dir: str | Path = "outputs/train",
        prepare_model: Callable[[NVILAModel, TrainConfig], NVILAModel] | None = None,
        loss_fn: LossFn | None = None,
        finalize_model: Callable[[NVILAModel], NVILAModel] | None = None,
        ctx: DistContext | None = None,
    ):
        self.cfg = cfg
        self.ctx = ctx or dist_utils.current_context(cfg.device)
        self.tokenizer = tokenizer
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.out_dir = Path(out_dir)
        self.prepare_model = prepare_model
        self.loss_fn = loss_fn or answer_cross_entropy
        self.finalize_model = finalize_model
        sampler = train_loader.sampler
        if not isinstance(sampler, EpochSampler):
            raise TypeError("train_loader needs an EpochSampler (build it with make_loader)")
        if train_loader.batch_size != cfg.batch_size:
            raise ValueError(
                f"train_loader batch size {train_loader.batch_size} != cfg.batch_size {cfg.batch_size}"
            )
        self.sampler = sampler
        self.grad_accum = self._grad_accum()
        if sampler.num_batches == 0:
            raise ValueError(
                f"{sampler.num_samples} training samples cannot fill one batch of "
                f"{cfg.batch_size} x {self.ctx.world_size} ranks"
            )
        epoch_steps = sampler.num_batches / self.grad_accum
        self.total_steps = cfg.max_steps or max(1, math.floor(cfg.epochs * epoch_steps))
        set_trainable(model, cfg.trainable)
        model = model.to(self.ctx.device, torch.float32)
        if cfg.gradient_checkpointing:
            model.llm.activation_checkpointing_enable()
            model.vision_tower.vision_model.activation_checkpointing_enable()
        if prepare_model is not None:
            model = prepare_model(model, cfg)
            freeze_unused(model)
        if cfg.fp8:  # after the fine-tuning hook: LoRA base layers are converted, adapters not
            model = enable_fp8(model, cfg.fp8_min_features)
        model.bind_tokenizer(tokenizer)
        self.model = model
        self.loss_module = LossModule(
            model, self.loss_fn, pad_to_multiple=FP8_ALIGNMENT if cfg.fp8 else 1
        )
        self.wrapped: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.step = 0
        # loss sum, samples and tokens since the last metrics row (saved, so a resumed run
        # logs the same rows as an uninterrupted one)
        self._window = torch.zeros(3, dtype=torch.float64, device=self.ctx.device)
        self.history: list[dict[str, Any]] = []
        self._writer = None

    def _grad_accum(self) -> int:
        cfg = self.cfg
        if cfg.global_batch_size is None:
            return cfg.grad_accum
        per_step = cfg.batch_size * self.ctx.world_size
        if cfg.global_batch_size % per_step:
            raise ValueError(
                f"global_batch_size {cfg.global_batch_size} is not a multiple of batch_size "
                f"{cfg.batch_size} x {self.ctx.world_size} ranks"
            )
        return cfg.global_batch_size // per_step

    # ------------------------------------------------------------ setup and state
    def _setup(self, resume_from: str | Path | None) -> None:
        torch.manual_seed(self.cfg.seed + self.ctx.rank)
        state = None
        if resume_from is not None:
            state = self._check_resume(Path(resume_from))
            load_weights(self.model, resume_from)
        self.wrapped = dist_utils.wrap_model(self.loss_module, self.cfg.strategy, self.ctx)
        groups = param_groups(self.loss_module.model, self.cfg)
        self.optimizer = torch.optim.AdamW(
            groups, lr=self.cfg.lr, betas=self.cfg.adam_betas, weight_decay=self.cfg.weight_decay
        )
        if state is not None:
            folder = Path(resume_from)
            tensors = load_file(str(folder / OPTIMIZER_FILE))
            optim_state = _unflatten_optimizer(tensors, state["optimizer"])
            dist_utils.load_optimizer_state(self.loss_module, self.optimizer, optim_state)
            rng = load_file(str(folder / RNG_FILE))
            prefix = f"rank{self.ctx.rank}."
            own = {k.removeprefix(prefix): v for k, v in rng.items() if k.startswith(prefix)}
            if own:
                _set_rng_state(own, self.ctx.device)
            self.step = int(state["step"])
            if self.ctx.is_main:  # rows sum the window over ranks: rank 0 carries the total
                self._window += torch.tensor(
                    state["log_window"], dtype=torch.float64, device=self._window.device
                )
        self._open_metrics(resume=state is not None)

    def _check_resume(self, folder: Path) -> dict[str, Any]:
        state_path = folder / STATE_FILE
        if not state_path.is_file():
            raise FileNotFoundError(f"{folder}: not a training checkpoint (no {STATE_FILE})")
        state = json.loads(state_path.read_text())
        if state.get("format") != STATE_FORMAT or "optimizer" not in state:
            raise ValueError(f"{state_path}: not a resumable {STATE_FORMAT} checkpoint")
        saved = (state["world_size"], state["batch_size"], state["grad_accum"])
        now = (self.ctx.world_size, self.cfg.batch_size, self.grad_accum)
        if saved != now:
            raise ValueError(
                f"{folder}: saved with (ranks, batch_size, grad_accum) = {saved}, now {now}; "
                "the data position and batches would differ"
            )
        if state["total_steps"] != self.total_steps:
            log.warning(
                "%s: saved for %d steps, now %d: the LR schedule changes",
                folder,
                state["total_steps"],
                self.total_steps,
            )
        return state

    def _full_model(self) -> NVILAModel | None:
        """The whole model for evaluation and saving: the live one, or under FSDP a copy
        gathered onto rank 0 (None on other ranks). Every rank must call it."""
        if not dist_utils.is_sharded(self.cfg.strategy, self.ctx):
            return self.model
        state = dist_utils.full_state_dict(self.loss_module, self.cfg.strategy, self.ctx)
        if not self.ctx.is_main:
            return None
        copy = NVILAModel.from_config(
            self.model.config, device=self.ctx.device, dtype=torch.float32, init_weights=False
        )
        if self.prepare_model is not None:
            copy = self.prepare_model(copy, self.cfg)
        copy.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
        copy.bind_tokenizer(self.tokenizer)
        return copy.eval()

    def save(self, final: bool = False) -> Path | None:
        """A resumable `checkpoint-<step>` (or the final model) in the VILA layout plus loop
        state; written atomically by rank 0. Every rank must call it."""
        model = self._full_model()
        optim = None
        if not final:
            optim = dist_utils.optimizer_state(
                self.loss_module, self.optimizer, self.cfg.strategy, self.ctx
            )
        rngs = dist_utils.gather_objects(_rng_state(self.ctx.device), self.ctx)
        window = dist_utils.all_reduce_sum(self._window, self.ctx).tolist()
        folder = None
        if self.ctx.is_main:
            folder = self.out_dir / (FINAL_DIR if final else f"checkpoint-{self.step:06d}")
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            export = self.finalize_model(model) if final and self.finalize_model else model
            save_checkpoint(export, self.tokenizer, tmp)
            state: dict[str, Any] = {
                "format": STATE_FORMAT,
                "version": 1,
                "stage": self.cfg.name,
                "step": self.step,
                "total_steps": self.total_steps,
                "completed": final,
                "world_size": self.ctx.world_size,
                "batch_size": self.cfg.batch_size,
                "grad_accum": self.grad_accum,
                "config": asdict(self.cfg),
                "metrics": self.history[-1] if self.history else {},
                "log_window": window,
            }
            if optim is not None:
                tensors, meta = _flatten_optimizer(optim)
                save_file(tensors, str(tmp / OPTIMIZER_FILE))
                state["optimizer"] = meta
                flat_rng = {
                    f"rank{r}.{k}": v.cpu()
                    for r, entry in enumerate(rngs)
                    for k, v in entry.items()
                }
                save_file(flat_rng, str(tmp / RNG_FILE))
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
            self._prune_checkpoints()
        dist_utils.barrier(self.ctx)
        return folder

    def _prune_checkpoints(self) -> None:
        kept = sorted(
            (int(m.group(1)), p)
            for p in self.out_dir.glob("checkpoint-*")
            if (m := _CHECKPOINT.match(p.name))
        )
        for _, path in kept[: -self.cfg.save_total_limit]:
            shutil.rmtree(path)

    # ------------------------------------------------------------ metrics
    def _metric_columns(self) -> list[str]:
        groups = [g["name"] for g in self.optimizer.param_groups]
        return [
            "step",
            "epoch",
            "loss",
            *[f"lr_{g}" for g in groups],
            "grad_norm",
            "tokens_per_s",
            "samples_per_s",
            "val_loss",
            "val_accuracy",
            "elapsed_s",
        ]

    def _open_metrics(self, resume: bool) -> None:
        """metrics.csv with the rows up to the resumed step (later rows were never saved)."""
        if not self.ctx.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / METRICS_FILE
        rows = []
        if resume and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._metric_columns())
            writer.writeheader()
            writer.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            self._writer = None
        else:
            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))

    def _write_metrics(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if not self.ctx.is_main:
            return
        with (self.out_dir / METRICS_FILE).open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._metric_columns()).writerow(row)
        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, float):
                    self._writer.add_scalar(key, value, row["step"])

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with (self.out_dir / METRICS_FILE).open(newline="") as f:
            rows = list(csv.DictReader(f))
        fig, ax = plt.subplots(figsize=(7, 4))
        for key, style in (("loss", "-"), ("val_loss", "o-")):
            points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
            if points:
                ax.plot(*zip(*points, strict=True), style, label=key)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("answer cross-entropy")
        ax.set_title(self.cfg.name)
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.out_dir / "loss.png", dpi=100)
        plt.close(fig)

    # ------------------------------------------------------------ loop
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=getattr(torch, self.cfg.dtype))

    def _micro_batches(self, start: int) -> Iterator[Batch]:
        """Batches from micro-batch `start` on, epoch after epoch."""
        epoch, offset = divmod(start, self.sampler.num_batches)
        while True:
            self.sampler.set_epoch(epoch)
            self.sampler.set_start(offset)
            yield from self.train_loader
            epoch, offset = epoch + 1, 0

    def train(self, resume_from: str | Path | None = None) -> dict[str, Any]:
        """Run to `total_steps`; returns the last metrics and the final model's folder."""
        if self.optimizer is not None:
            raise RuntimeError("a Trainer trains once; build a new one for another run")
        self._setup(resume_from)
        cfg, ctx = self.cfg, self.ctx
        local_samples = cfg.batch_size * self.grad_accum
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        stream = self._micro_batches(self.step * self.grad_accum)
        progress = Progress(
            self.total_steps, cfg.name, "steps", initial=self.step, disable=not ctx.is_main
        )
        window_start = start_time = time.perf_counter()
        last: dict[str, Any] = {}
        while self.step < self.total_steps:
            for micro in range(self.grad_accum):
                batch = next(stream)
                sync = micro == self.grad_accum - 1
                with dist_utils.gradient_sync(self.wrapped, sync), self._autocast():
                    out = self.wrapped(batch)
                    loss = out["losses"].sum() / local_samples
                loss.backward()
                count = torch.tensor(float(len(batch)), dtype=torch.float64, device=ctx.device)
                losses = out["losses"].detach().double().sum()
                self._window += torch.stack([losses, count, out["tokens"].double()])
            norm = nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
            if hasattr(norm, "full_tensor"):
                norm = norm.full_tensor()
            scale = lr_multiplier(self.step, self.total_steps, cfg.warmup_ratio, cfg.schedule)
            for group in self.optimizer.param_groups:
                group["lr"] = group["base_lr"] * scale
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            progress.update(1)
            row: dict[str, Any] = {}
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                totals = dist_utils.all_reduce_sum(self._window, ctx).tolist()
                seconds = max(time.perf_counter() - window_start, 1e-9)
                row = {
                    "step": self.step,
                    "epoch": round(self.step * self.grad_accum / self.sampler.num_batches, 4),
                    "loss": totals[0] / totals[1],
                    **{f"lr_{g['name']}": g["lr"] for g in self.optimizer.param_groups},
                    "grad_norm": float(norm),
                    "tokens_per_s": totals[2] / seconds,
                    "samples_per_s": totals[1] / seconds,
                    "elapsed_s": round(time.perf_counter() - start_time, 3),
                }
                progress.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{scale * cfg.lr:.2e}")
                self._window.zero_()
                window_start = time.perf_counter()
            final = self.step == self.total_steps
            evaluate = cfg.eval_every and self.step % cfg.eval_every == 0
            if self.val_loader is not None and (evaluate or final):
                metrics = self.evaluate()
                row = {"step": self.step, **row, **metrics}
            if row:
                self._write_metrics(row)
                last.update(row)
            if cfg.save_every and self.step % cfg.save_every == 0 and not final:
                self.save()
        progress.close()
        folder = self.save(final=True)
        if ctx.is_main:
            self._plot()
            if self._writer is not None:
                self._writer.close()
        return {**last, "final": folder}

    # ------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        """Val loss (per-sample answer cross-entropy) and next-action accuracy of greedy
        answers on the first `eval_generate_samples` val samples. Runs on rank 0; every rank
        must call it and gets the result."""
        if self.val_loader is None:
            return {}
        model = self._full_model()
        result: dict[str, float] = {}
        if self.ctx.is_main:
            modes = {module: module.training for module in model.modules()}
            model.eval()
            try:
                result = self._evaluate_on(model)
            finally:
                for module, training in modes.items():
                    module.train(training)
        return dist_utils.broadcast_object(result, self.ctx)

    @torch.no_grad()
    def _evaluate_on(self, model: NVILAModel) -> dict[str, float]:
        loss_module = LossModule(model, self.loss_fn)
        stops = stop_token_ids(self.tokenizer, model.config.chat_template)
        loss_sum, samples, correct, decoded = 0.0, 0, 0, 0
        for batch in track(self.val_loader, f"{self.cfg.name} evaluation", "batches"):
            with self._autocast():
                loss_sum += float(loss_module(batch)["losses"].double().sum())
            samples += len(batch)
            for ids, length, media, answer in zip(
                batch.input_ids, batch.prompt_lengths, batch.media, batch.answers, strict=True
            ):
                if decoded >= self.cfg.eval_generate_samples:
                    break
                with self._autocast():
                    embeds = model.embed_inputs(ids[:length].tolist(), media)
                    out = greedy_decode(model, embeds, stops, self.cfg.eval_max_new_tokens)
                text = self.tokenizer.decode(out.token_ids, skip_special_tokens=True)
                target = normalize_action(answer)
                if target is None:  # an image-text answer (a caption): exact match
                    correct += int(text.strip() == answer.strip())
                else:
                    correct += int(normalize_action(text) == target)
                decoded += 1
        return {
            "val_loss": loss_sum / max(samples, 1),
            "val_accuracy": correct / max(decoded, 1),
        }
