"""Integer weight formats shared by AWQ, SmoothQuant and the ONNX exporter.

Both are symmetric (no zero points) because TensorRT's explicit quantization only accepts zero
points that are absent or all zero (trt.md §1.3-1.4):
- "int4_block" (W4A16): codes in [-8, 7], one FP16 scale per block of `block_size` input
  channels of each output row; the ONNX form is `DequantizeLinear(INT4, scales, axis=0,
  block_size)` feeding `MatMul` (the FP16 scales stored in the graph's float type).
- "int8_channel" (W8A8): codes in [-127, 127], one scale per output channel, plus one static
  per-tensor INT8 scale for the linear's input activation.

`QuantState` is what `nvila-core quantize` writes next to the (scale-folded) checkpoint:
`quantization.json` (recipe, per-linear scheme) and `quantization.safetensors` (codes, scales).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

SCHEMES = ("int4_block", "int8_channel")
INT4_MAX = 7
INT8_MAX = 127
QUANT_JSON = "quantization.json"
QUANT_TENSORS = "quantization.safetensors"
FORMAT_VERSION = 1
_MIN_SCALE = 1e-5  # an all-zero block or channel still gets a finite, FP16-representable scale


def quantize_int4_blocks(
    weight: torch.Tensor, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] -> int8 codes in [-8, 7] [out, in] and FP16 scales [out, in / block_size].

    The codes are computed with the FP16-rounded scales, so dequantizing with the stored scales
    reproduces exactly what the ONNX graph computes.
    """
    out_features, in_features = weight.shape
    if block_size < 1 or in_features % block_size:
        raise ValueError(f"in_features {in_features} is not a multiple of block size {block_size}")
    blocks = weight.detach().float().reshape(out_features, in_features // block_size, block_size)
    scales = (blocks.abs().amax(dim=-1) / INT4_MAX).clamp_min(_MIN_SCALE).half()
    codes = torch.round(blocks / scales.float()[..., None]).clamp(-INT4_MAX - 1, INT4_MAX)
    return codes.reshape(out_features, in_features).to(torch.int8), scales


def dequantize_int4_blocks(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """float32 [out, in] from int4 codes and per-block FP16 scales, exactly.

    A 4-bit code times an FP16 scale fits float32's mantissa, so this is what a float32 graph's
    DequantizeLinear (scales widened to float32) computes; rounding it to FP16 gives what a
    float16 graph's computes.
    """
    out_features, in_features = codes.shape
    block_size = in_features // scales.shape[1]
    blocks = codes.float().reshape(out_features, -1, block_size) * scales.float()[..., None]
    return blocks.reshape(out_features, in_features)


def quantize_int8_channels(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] -> int8 codes in [-127, 127] and float32 per-output-channel scales [out]."""
    w = weight.detach().float()
    scales = (w.abs().amax(dim=1) / INT8_MAX).clamp_min(_MIN_SCALE)
    codes = torch.round(w / scales[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return codes, scales


def activation_scale(absmax: float) -> float:
    """Per-tensor symmetric INT8 scale of an activation whose calibrated max |x| is `absmax`."""
    return max(float(absmax), _MIN_SCALE) / INT8_MAX


def fake_quantize_int8(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x through QuantizeLinear -> DequantizeLinear with an INT8 zero point of 0.

    torch.round and ONNX QuantizeLinear both round half to even, and ONNX saturates to [-128, 127].
    """
    return (torch.round(x.float() / scale).clamp(-INT8_MAX - 1, INT8_MAX) * scale).to(x.dtype)


@dataclass
class QuantizedLinear:
    """One quantized nn.Linear, named by its module path inside `NVILAModel`."""

    name: str
    scheme: str
    qweight: torch.Tensor  # int8 [out, in] (int4 codes are held in int8)
    scales: torch.Tensor  # int4_block: fp16 [out, in / block]; int8_channel: fp32 [out]
    block_size: int = 0
    act_scale: float | None = None  # int8_channel: per-tensor input scale

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown quantization scheme {self.scheme!r} (known: {SCHEMES})")

    def dequantize(self) -> torch.Tensor:
        """float32 [out, in] weight the quantized graph actually multiplies with."""
        if self.scheme == "int4_block":
            return dequantize_int4_blocks(self.qweight, self.scales)
        return self.qweight.float() * self.scales.float()[:, None]

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"scheme": self.scheme, "shape": list(self.qweight.shape)}
        if self.scheme == "int4_block":
            info["block_size"] = self.block_size
        else:
            info["act_scale"] = self.act_scale
        return info


@dataclass
class QuantState:
    """Every quantized linear of a model, and the recipe that produced them (JSON-able)."""

    recipe: dict[str, Any] = field(default_factory=dict)
    linears: dict[str, QuantizedLinear] = field(default_factory=dict)

    def select(self, prefix: str) -> dict[str, QuantizedLinear]:
        """The linears whose module path starts with `prefix` (e.g. "llm.")."""
        return {n: q for n, q in self.linears.items() if n.startswith(prefix)}

    def save(self, folder: str | Path) -> None:
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for name, q in self.linears.items():
            tensors[f"{name}.qweight"] = q.qweight.contiguous()
            tensors[f"{name}.scales"] = q.scales.contiguous()
        save_file(tensors, str(root / QUANT_TENSORS), metadata={"format": "pt"})
        data = {
            "format_version": FORMAT_VERSION,
            "recipe": self.recipe,
            "linears": {name: q.describe() for name, q in self.linears.items()},
        }
        (root / QUANT_JSON).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> QuantState:
        root = Path(folder)
        data = json.loads((root / QUANT_JSON).read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{root / QUANT_JSON}: unsupported format_version")
        tensors = load_file(str(root / QUANT_TENSORS))
        linears = {
            name: QuantizedLinear(
                name=name,
                scheme=info["scheme"],
                qweight=tensors[f"{name}.qweight"],
                scales=tensors[f"{name}.scales"],
                block_size=int(info.get("block_size", 0)),
                act_scale=info.get("act_scale"),
            )
            for name, info in data["linears"].items()
        }
        return cls(recipe=data["recipe"], linears=linears)

    @staticmethod
    def exists(folder: str | Path) -> bool:
        return (Path(folder) / QUANT_JSON).is_file()


@contextlib.contextmanager
@torch.no_grad()
def simulated(model: nn.Module, state: QuantState) -> Iterator[nn.Module]:
    """`model` computing what the quantized graphs compute: dequantized weights, and INT8
    fake-quantized inputs for W8A8 linears. Restores the float weights on exit."""
    saved: list[tuple[nn.Linear, torch.Tensor]] = []
    hooks = []
    try:
        for name, q in state.linears.items():
            linear = model.get_submodule(name)
            saved.append((linear, linear.weight.detach().clone()))
            linear.weight.copy_(q.dequantize().to(linear.weight.dtype))
            if q.act_scale is not None:
                scale = q.act_scale
                hooks.append(
                    linear.register_forward_pre_hook(
                        lambda _m, args, s=scale: (fake_quantize_int8(args[0], s), *args[1:])
                    )
                )
        yield model
    finally:
        for hook in hooks:
            hook.remove()
        for linear, weight in saved:
            linear.weight.copy_(weight)
