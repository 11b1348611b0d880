"""Exact re-parameterisations used by AWQ and SmoothQuant: y = W x = (W diag(s)) (x / s).

Dividing the op that produces x by s and multiplying the consumer's input columns by s changes
no float output; it only moves range between activations and weights before quantization.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def fold_into_norm(norm: nn.Module, scales: torch.Tensor) -> None:
    """x / s produced by a LayerNorm / RMSNorm: its gain (and bias) divided by s."""
    norm.weight.div_(scales.to(norm.weight.dtype))
    bias = getattr(norm, "bias", None)
    if bias is not None:
        bias.div_(scales.to(bias.dtype))


@torch.no_grad()
def fold_into_rows(linear: nn.Linear, scales: torch.Tensor) -> None:
    """x / s produced by a linear (e.g. up_proj feeding down_proj through a product)."""
    linear.weight.div_(scales.to(linear.weight.dtype)[:, None])
    if linear.bias is not None:
        linear.bias.div_(scales.to(linear.bias.dtype))


@torch.no_grad()
def scale_inputs(linear: nn.Linear, scales: torch.Tensor) -> None:
    """W diag(s): the consumer's input columns multiplied by s."""
    linear.weight.mul_(scales.to(linear.weight.dtype)[None, :])
