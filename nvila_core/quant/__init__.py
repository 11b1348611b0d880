"""Post-training quantization for deployment: W4A16 AWQ (LLM) and W8A8 SmoothQuant (vision).

`quantize_model` folds the scales into the float model (so the result is still an ordinary
checkpoint that any backend loads) and returns the integer weights and activation scales as a
`QuantState`; `nvila_core.export` turns both into Q/DQ ONNX graphs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from nvila_core.model.checkpoint import load_checkpoint, save_checkpoint
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.processing import ModelInputs
from nvila_core.quant.awq import DEFAULT_BLOCK_SIZE, DEFAULT_GRID, awq_quantize_llm
from nvila_core.quant.formats import QuantizedLinear, QuantState, simulated
from nvila_core.quant.smoothquant import DEFAULT_ALPHA, smoothquant_vision

RECIPES = ("w4a16", "w8a8", "both")

__all__ = [
    "RECIPES",
    "QuantState",
    "QuantizedLinear",
    "load_quantized",
    "quantize_model",
    "save_quantized",
    "simulated",
]


def quantize_model(
    model: NVILAModel,
    samples: Sequence[ModelInputs],
    recipe: str,
    block_size: int = DEFAULT_BLOCK_SIZE,
    alpha: float = DEFAULT_ALPHA,
    grid: int = DEFAULT_GRID,
) -> QuantState:
    """Quantize `model` in place for `recipe` ("w4a16" LLM, "w8a8" vision, or "both")."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r} (known: {', '.join(RECIPES)})")
    if not samples:
        raise ValueError("quantization needs at least one calibration sample")
    linears: dict[str, QuantizedLinear] = {}
    info: dict[str, Any] = {"recipe": recipe, "calibration_samples": len(samples)}
    if recipe in ("w8a8", "both"):
        linears.update(smoothquant_vision(model, samples, alpha))
        info["w8a8"] = {
            "algorithm": "smoothquant",
            "alpha": alpha,
            "scope": "vision tower encoder linears + projector linears",
            "weights": "int8, symmetric, per output channel",
            "activations": "int8, symmetric, per tensor, static (calibration max)",
        }
    if recipe in ("w4a16", "both"):
        awq_linears, alphas = awq_quantize_llm(model, samples, block_size, grid)
        linears.update(awq_linears)
        info["w4a16"] = {
            "algorithm": "awq",
            "scope": "LLM decoder-layer linears (embeddings and lm_head stay float)",
            "weights": "int4, symmetric, blocks along the input dimension",
            "block_size": block_size,
            "scale_dtype": "float16",
            "grid": grid,
            "alphas": alphas,
        }
    return QuantState(recipe=info, linears=linears)


def save_quantized(
    model: NVILAModel,
    tokenizer: PreTrainedTokenizerBase,
    state: QuantState,
    out_dir: str | Path,
) -> Path:
    """The scale-folded float checkpoint (VILA layout) plus `quantization.{json,safetensors}`."""
    root = save_checkpoint(model, tokenizer, out_dir)
    state.save(root)
    return root


def load_quantized(
    path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | str | None = None
) -> tuple[NVILAModel, PreTrainedTokenizerBase, QuantState | None]:
    """A checkpoint folder and, when `nvila-core quantize` wrote it, its quantization state."""
    model, tokenizer = load_checkpoint(path, device=device, dtype=dtype)
    state = QuantState.load(path) if QuantState.exists(path) else None
    return model, tokenizer, state
