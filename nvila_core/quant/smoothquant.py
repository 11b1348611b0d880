"""W8A8 SmoothQuant for the vision tower and projector (nvila.md §6.2).

TinyChat smooths SigLIP with alpha = 0.3 and runs INT8 GEMMs. For TensorRT the activations get
one static per-tensor INT8 scale each (TRT's explicit quantization takes per-channel scales only
on constant weights, trt.md §1.3) instead of TinyChat's per-token dynamic scales; smoothing is
what keeps a per-tensor scale usable, by moving outlier channels' range into the weights:
s_j = max|x_j|^alpha / max|W_:,j|^(1-alpha), folded into the LayerNorm in front.

Smoothed: layer_norm1 -> q/k/v, layer_norm2 -> fc1, projector LayerNorm -> next Linear.
Quantized without smoothing (no foldable op in front): out_proj, fc2, projector Linears after
GELU. Weights are INT8 symmetric per output channel. The patch-embedding Conv stays in float.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nvila_core.model.modeling import NVILAModel
from nvila_core.model.processing import ModelInputs
from nvila_core.progress import track
from nvila_core.quant.calibration import record_inputs, run_vision
from nvila_core.quant.folding import fold_into_norm, scale_inputs
from nvila_core.quant.formats import QuantizedLinear, activation_scale, quantize_int8_channels

DEFAULT_ALPHA = 0.3
ENCODER_PREFIX = "vision_tower.vision_model.encoder.layers"


def smoothing_scales(
    act_absmax: torch.Tensor, weights: Sequence[torch.Tensor], alpha: float = DEFAULT_ALPHA
) -> torch.Tensor:
    """Per-input-channel s = max|x|^alpha / max|W|^(1 - alpha) over the group's weights."""
    w_absmax = torch.stack([w.detach().float().abs().amax(dim=0) for w in weights]).amax(dim=0)
    s = act_absmax.float().clamp_min(1e-5).pow(alpha) / w_absmax.clamp_min(1e-5).pow(1 - alpha)
    return s.clamp_min(1e-5)


def vision_groups(model: NVILAModel) -> list[tuple[str | None, list[str]]]:
    """(LayerNorm to fold into or None, linears sharing its output) over ViT and projector."""
    groups: list[tuple[str | None, list[str]]] = []
    for i in range(model.vision_tower.num_layers_run):
        layer = f"{ENCODER_PREFIX}.{i}"
        groups += [
            (f"{layer}.layer_norm1", [f"{layer}.self_attn.{p}_proj" for p in "qkv"]),
            (None, [f"{layer}.self_attn.out_proj"]),
            (f"{layer}.layer_norm2", [f"{layer}.mlp.fc1"]),
            (None, [f"{layer}.mlp.fc2"]),
        ]
    stack = model.mm_projector.layers
    for index, module in enumerate(stack):
        if isinstance(module, nn.Linear):
            norm = isinstance(stack[index - 1], nn.LayerNorm)
            groups.append(
                (
                    f"mm_projector.layers.{index - 1}" if norm else None,
                    [f"mm_projector.layers.{index}"],
                )
            )
    return groups


@torch.no_grad()
def smoothquant_vision(
    model: NVILAModel, samples: Sequence[ModelInputs], alpha: float = DEFAULT_ALPHA
) -> dict[str, QuantizedLinear]:
    """Fold smoothing scales into `model` (in place); INT8 weights and static input scales."""
    groups = vision_groups(model)
    stats = record_inputs(model, [names[0] for _, names in groups], run_vision(model, samples))
    quantized = {}
    for norm, names in track(groups, "SmoothQuant (vision tower, projector)", "groups"):
        linears: list[nn.Linear] = [model.get_submodule(name) for name in names]
        absmax = stats[names[0]].absmax
        if norm is not None:
            scales = smoothing_scales(absmax, [m.weight for m in linears], alpha)
            fold_into_norm(model.get_submodule(norm), scales)
            for linear in linears:
                scale_inputs(linear, scales)
            absmax = absmax / scales
        act_scale = activation_scale(float(absmax.max()))
        for name, linear in zip(names, linears, strict=True):
            codes, scales_w = quantize_int8_channels(linear.weight)
            quantized[name] = QuantizedLinear(name, "int8_channel", codes, scales_w, 0, act_scale)
    return quantized
