"""Parameter-efficient fine-tuning of an NVILAModel: per-side modes, LR groups, LoRA merge.

NVILA's fine-tuning recipe (nvila.md §5.4, VILA `finetuning/README.md`):
- each side (`llm`, `vision_tower`) is trained fully, with LoRA, with QLoRA (LoRA on 4-bit nf4
  base weights), LayerNorm-only, or not at all; the projector is always trained fully;
- LoRA targets every `nn.Linear` of a LoRA'd side except `lm_head` (VILA `find_all_linear_names`),
  with r=64, alpha=16, dropout 0.05;
- LayerNorm-only leaves just the normalisation layers trainable (for SigLIP: `layer_norm1/2` of
  every block and `post_layernorm`, as `train_ln.py`); it is about as good as LoRA on the ViT and
  ~25% faster;
- with PEFT on both sides the ViT learning rate should be 5-50x smaller than the LLM's.

LoRA is injected in place with peft, so `model.llm` / `model.vision_tower` keep their type and
`NVILAModel.forward` is unchanged; only the adapted linears become peft wrappers. Call
`merge_lora` before `save_checkpoint`: it folds the adapters into plain `nn.Linear`s, giving the
normal checkpoint layout. peft and bitsandbytes are imported only when needed (peft adds seconds to
every import, and bitsandbytes exists only on CUDA machines).
"""

from __future__ import annotations

import torch
from torch import nn

from nvila_core.model.modeling import NVILAModel
from nvila_core.train.finetune_options import (  # the torch-free part, re-exported
    MODES,
    SIDES,
    FinetuneConfig,
    add_finetune_arguments,
    add_finetune_cli,
    finetune_config_from_args,
)

__all__ = [
    "BITSANDBYTES_PIN",
    "LORA_EXCLUDED",
    "MODES",
    "PROJECTOR",
    "SIDES",
    "FinetuneConfig",
    "add_finetune_arguments",
    "add_finetune_cli",
    "apply_finetune",
    "finetune_config_from_args",
    "finetune_param_groups",
    "lora_target_names",
    "merge_lora",
    "norm_parameter_names",
    "trainable_parameter_names",
]

PROJECTOR = "mm_projector"
LORA_EXCLUDED = ("lm_head",)  # the output embedding stays frozen under LoRA (VILA)
BITSANDBYTES_PIN = "bitsandbytes==0.50.2"


# ---------------------------------------------------------------- module selection
def lora_target_names(side: nn.Module) -> list[str]:
    """Names (relative to `side`) of the linears LoRA adapts: all but `lm_head`."""
    return [
        name
        for name, module in side.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] not in LORA_EXCLUDED
    ]


def _is_norm(module: nn.Module) -> bool:
    """LayerNorm (SigLIP) or RMSNorm (Qwen2 / Llama, whose classes are per-model)."""
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")


def norm_parameter_names(side: nn.Module) -> list[str]:
    """Names (relative to `side`) of the parameters of its normalisation layers."""
    return [
        f"{name}.{param_name}" if name else param_name
        for name, module in side.named_modules()
        if _is_norm(module)
        for param_name, _ in module.named_parameters(recurse=False)
    ]


# ---------------------------------------------------------------- QLoRA base weights
def _check_qlora(model: NVILAModel) -> None:
    """QLoRA needs bitsandbytes' CUDA nf4 kernels; refuse clearly anywhere else."""
    if model.device.type != "cuda":
        raise RuntimeError(
            "QLoRA (4-bit nf4 base weights) needs bitsandbytes on a CUDA GPU, but the model is "
            f"on {model.device.type}; use mode 'lora' here, or load the model with device='cuda' "
            f"on a GPU machine with {BITSANDBYTES_PIN} installed"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise RuntimeError(
            f"QLoRA needs bitsandbytes; install it on this GPU machine with "
            f"`pip install {BITSANDBYTES_PIN}`"
        ) from err


def _quantize_nf4(side: nn.Module, names: list[str]) -> None:
    """Replace each named linear by a bitsandbytes nf4 Linear4bit with double quantisation
    (QLoRA's base weights); computation stays in the original weight dtype."""
    import bitsandbytes as bnb

    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = side.get_submodule(parent_name)
        linear: nn.Linear = getattr(parent, child)
        device = linear.weight.device
        quantized = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=linear.weight.dtype,
            compress_statistics=True,
            quant_type="nf4",
            device="meta",
        )
        quantized.weight = bnb.nn.Params4bit(
            linear.weight.data,
            requires_grad=False,
            compress_statistics=True,
            quant_type="nf4",
            module=quantized,
        ).to(device)
        if linear.bias is not None:
            quantized.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        setattr(parent, child, quantized)


# ---------------------------------------------------------------- applying a recipe
def _inject_lora(side: nn.Module, names: list[str], cfg: FinetuneConfig) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=names,
        bias="none",
    )
    inject_adapter_in_model(lora, side)
    side.train(side.training)  # new dropout modules start in train mode; follow the side


def apply_finetune(model: NVILAModel, cfg: FinetuneConfig) -> NVILAModel:
    """Set up `model` in place for fine-tuning with `cfg` and return it.

    Exactly these parameters end up trainable: the whole projector, plus per side everything
    (full), the LoRA adapters (lora / qlora), the normalisation layers (layernorm) or nothing
    (frozen). Blocks that NVILA never runs (SigLIP's last block, `post_layernorm`) follow the same
    rule; they simply get no gradient.
    """
    if "qlora" in (cfg.llm, cfg.vision_tower):
        _check_qlora(model)
    model.requires_grad_(False)
    for side_name in SIDES:
        side: nn.Module = getattr(model, side_name)
        mode = cfg.mode(side_name)
        if mode == "full":
            side.requires_grad_(True)
        elif mode == "layernorm":
            for name in norm_parameter_names(side):
                side.get_parameter(name).requires_grad_(True)
        elif mode in ("lora", "qlora"):
            names = lora_target_names(side)
            if not names:
                raise ValueError(f"{side_name} has no nn.Linear for LoRA to adapt")
            if mode == "qlora":
                _quantize_nf4(side, names)
            _inject_lora(side, names, cfg)
            for name, param in side.named_parameters():
                param.requires_grad_(".lora_" in name)
    getattr(model, PROJECTOR).requires_grad_(True)
    return model


def trainable_parameter_names(model: nn.Module) -> list[str]:
    return [name for name, param in model.named_parameters() if param.requires_grad]


def finetune_param_groups(model: NVILAModel, cfg: FinetuneConfig, lr: float) -> list[dict]:
    """Optimizer groups of the trainable parameters: `llm` at `lr`, `vision_tower` at
    `lr / cfg.vision_lr_ratio`, `mm_projector` at `cfg.projector_lr` (default `lr`).

    Each group carries its `name`; empty groups are left out.
    """
    lrs = {
        "llm": lr,
        "vision_tower": lr / cfg.vision_lr_ratio,
        PROJECTOR: lr if cfg.projector_lr is None else cfg.projector_lr,
    }
    params: dict[str, list[nn.Parameter]] = {name: [] for name in lrs}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = name.split(".", 1)[0]
        if part not in params:
            raise ValueError(f"trainable parameter {name!r} belongs to no learning-rate group")
        params[part].append(param)
    return [
        {"name": part, "params": group, "lr": lrs[part]} for part, group in params.items() if group
    ]


# ---------------------------------------------------------------- merging
def _dense_weight(base: nn.Module) -> torch.Tensor:
    """The base layer's weight as a dense tensor (dequantised for bitsandbytes nf4)."""
    weight = base.weight
    if type(weight).__name__ == "Params4bit":
        import bitsandbytes.functional as bnb_functional

        return bnb_functional.dequantize_4bit(weight.data, weight.quant_state)
    return weight.data


@torch.no_grad()
def _merged_linear(layer: nn.Module) -> nn.Linear:
    """A plain nn.Linear holding base weight + every active, not yet merged LoRA delta."""
    base = layer.get_base_layer()
    weight = _dense_weight(base).clone()
    for adapter in layer.active_adapters:
        if adapter in layer.lora_A and adapter not in layer.merged_adapters:
            weight += layer.get_delta_weight(adapter).to(weight.dtype)
    linear = nn.Linear(
        weight.shape[1],
        weight.shape[0],
        bias=base.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    linear.weight.copy_(weight)
    if base.bias is not None:
        linear.bias.copy_(base.bias)
    linear.requires_grad_(False)
    return linear


def merge_lora(model: NVILAModel) -> NVILAModel:
    """Fold every LoRA adapter into its base weight, in place, and return `model`.

    The result has only plain modules (no peft wrappers, no `peft_config`), so its state dict has
    the normal checkpoint names and `save_checkpoint` writes the usual layout. QLoRA bases are
    dequantised first, so the merged weights are dense in the original dtype.
    """
    from peft.tuners.lora import LoraLayer

    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]
    for name, layer in layers:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, _merged_linear(layer))
    for side_name in SIDES:
        side = getattr(model, side_name)
        if "peft_config" in vars(side):
            del side.peft_config
    return model
