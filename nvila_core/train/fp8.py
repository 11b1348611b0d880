"""Gated FP8 training of the LLM's large linears (nvila.md §5.3).

NVILA trains in FP8 with COAT's `QLinearTE`: only while training, only linears with
`min(in_features, out_features) >= 3584`, E4M3 for activations and weights in the forward pass and
E5M2 for gradients in the backward pass. COAT's kernels are not a package, so this uses torchao's
float8 training (`Float8Linear`) with the same formats: dynamic per-tensor scaling, input and
weight cast to E4M3, grad_output to E5M2 (torchao's "tensorwise" recipe, spelled out below).
Conversion is restricted to the decoder layers of the LLM: embeddings, `lm_head`, the projector and
the vision tower stay in high precision, as in NVILA (`fp8Linear_qwen2` replaces only the Qwen2
decoder linears). Weights keep their dtype (FP8 is a cast around each matmul), so the state dict
and `save_checkpoint` are unchanged; unlike COAT, a converted layer also casts in eval mode.

FP8 matmuls (`torch._scaled_mm`) need an Ada or Hopper GPU (compute capability >= 8.9), and
torchao. torchao is NOT in requirements.txt: torchao 0.18.0 installs without touching torch 2.13,
but once installed transformers imports it on every model load (printing warnings about its CUDA
extensions on CPU machines) although only FP8 training uses it, so install it on the GPU machine
only: `pip install torchao==0.18.0`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

import torch
from torch import nn

from nvila_core.model.modeling import NVILAModel

TORCHAO_PIN = "torchao==0.18.0"
MIN_CAPABILITY = (8, 9)
# COAT applies FP8 to a linear only when min(in, out) >= 3584 (Qwen2.5-7B's hidden size), so small
# projections such as the 512-wide GQA k/v stay in bf16 where FP8 casts cost more than they save.
DEFAULT_MIN_FEATURES = 3584
# torch._scaled_mm needs both matrix dimensions to be multiples of 16.
FP8_ALIGNMENT = 16
REQUIREMENT = (
    f"FP8 training needs a CUDA GPU with compute capability >= {MIN_CAPABILITY[0]}."
    f"{MIN_CAPABILITY[1]} (Ada or Hopper, e.g. L4, RTX 4090, H100) and torchao "
    f"(`pip install {TORCHAO_PIN}`)"
)


def fp8_supported() -> tuple[bool, str]:
    """Whether FP8 training can run here, and why (or why not)."""
    if not torch.cuda.is_available():
        return False, "no CUDA device is available"
    capability = torch.cuda.get_device_capability()
    name = torch.cuda.get_device_name()
    if capability < MIN_CAPABILITY:
        return False, f"{name} has compute capability {capability[0]}.{capability[1]}"
    if importlib.util.find_spec("torchao") is None:
        return False, f"torchao is not installed (`pip install {TORCHAO_PIN}`)"
    version = importlib.metadata.version("torchao")
    return True, f"{name} (compute capability {capability[0]}.{capability[1]}), torchao {version}"


def fp8_linear_names(model: NVILAModel, min_features: int = DEFAULT_MIN_FEATURES) -> list[str]:
    """Names (in `model`) of the linears FP8 training converts.

    Plain `nn.Linear`s inside the LLM's decoder layers with `min(in, out) >= min_features` and both
    sizes multiples of 16. Subclasses (already converted layers, bitsandbytes 4-bit layers) and
    peft wrappers are skipped, so a LoRA base layer qualifies but its small adapters do not.
    """
    layers = model.llm.get_decoder().layers
    prefix = next(name for name, module in model.named_modules() if module is layers)
    return [
        f"{prefix}.{name}"
        for name, module in layers.named_modules()
        if type(module) is nn.Linear
        and min(module.in_features, module.out_features) >= min_features
        and module.in_features % FP8_ALIGNMENT == 0
        and module.out_features % FP8_ALIGNMENT == 0
    ]


def float8_config(emulate: bool = False):
    """torchao's dynamic per-tensor float8 recipe: E4M3 input and weight, E5M2 grad_output."""
    from torchao.float8 import CastConfig, Float8LinearConfig
    from torchao.float8.config import e4m3_dtype, e5m2_dtype

    return Float8LinearConfig(
        cast_config_input=CastConfig(target_dtype=e4m3_dtype),
        cast_config_weight=CastConfig(target_dtype=e4m3_dtype),
        cast_config_grad_output=CastConfig(target_dtype=e5m2_dtype),
        emulate=emulate,
    )


def enable_fp8(
    model: NVILAModel, min_features: int = DEFAULT_MIN_FEATURES, emulate: bool = False
) -> NVILAModel:
    """Swap the `fp8_linear_names` linears for torchao `Float8Linear`s, in place; returns `model`.

    Refuses (RuntimeError naming the requirement) unless `fp8_supported()` and the model is on
    the GPU. `emulate=True` skips the hardware check and runs FP8 casts with high-precision
    matmuls: for checking numerics on any device (it needs torchao, and is not faster).
    """
    if not emulate:
        ok, reason = fp8_supported()
        if not ok:
            raise RuntimeError(f"{REQUIREMENT}; here: {reason}")
        if model.device.type != "cuda":
            raise RuntimeError(f"{REQUIREMENT}; the model is on {model.device}, move it to CUDA")
    elif importlib.util.find_spec("torchao") is None:
        raise RuntimeError(f"FP8 emulation needs torchao (`pip install {TORCHAO_PIN}`)")
    from torchao.float8 import convert_to_float8_training

    selected = set(fp8_linear_names(model, min_features))
    if not selected:
        raise ValueError(f"no LLM decoder linear has min(in, out) >= {min_features}")
    convert_to_float8_training(
        model,
        module_filter_fn=lambda _module, name: name in selected,
        config=float8_config(emulate),
    )
    return model
