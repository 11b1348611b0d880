"""The three torch graphs of a deployment export and their ONNX export (TorchScript exporter).

- vision: `pixel_values` [frames, 3, S, S] -> `tokens` [frames, tokens_per_tile, D] (what the
  engine caches per frame) and `features` [frames, P, C] (raw ViT output, for dynamic-S2 images);
- projector (dynamic-S2 models only): merged multi-scale `features` [blocks, P, C*scales] ->
  `tokens` [blocks, tokens_per_tile, D];
- llm: `inputs_embeds` [batch, seq, D], `attention_mask` [batch, 1, seq, past+seq] (1: the
  query position attends to that key; the host states causality, so one call can also carry an
  answer set's prefix tree), `position_ids` [batch, seq], `logits_index` [batch, k] (the new
  positions whose logits come back) and `past_key_values.{i}.{key,value}` [batch, kv_heads, past,
  head_dim] -> `logits` [batch, k, vocab] (a decode step asks for its last position only; a
  full-sequence vocab tensor would be hundreds of MB on Orin) and `present.{i}.{key,value}`.
  Embedding lookup stays on the host so media embeddings can be spliced in. `llm_feed` builds
  one call's inputs.

The TorchScript exporter (dynamo=False) is used: it exports the tiny model in under a second per
graph on CPU, with plain ONNX ops only (trt.md §6.2). Attention is exported eager, without
repeated KV heads (`grouped_eager_attention`), and every nn.Linear runs as `MatMul(x, weight_t)`
on a view of its weight named `<module path>.weight_t`, so the quantizer finds each linear's
MatMul by name.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AttentionInterface, DynamicCache

from nvila_core.model.modeling import NVILAModel
from nvila_core.model.vision import repeat_scales
from nvila_core.transformers_compat import cache_argument

FLOAT_OPSET = 18  # inside TensorRT 10.3's documented opset range (9-20)
WEIGHT_SUFFIX = ".weight_t"


class _MatMulLinear(nn.Module):
    """nn.Linear as x @ W^T + b with W^T a named parameter (a view, no copy)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight_t = nn.Parameter(linear.weight.detach().t(), requires_grad=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(x, self.weight_t)
        return y if self.bias is None else y + self.bias


GROUPED_ATTENTION = "nvila_grouped_eager"


def grouped_eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's eager attention without repeating the KV heads: the query heads that share a KV head
    are the rows of one product with it. The graph then reads the KV cache as it is, where HF's
    `repeat_kv` exports as an Expand that copies the whole cache for every query head on every
    decode step. Same arithmetic, softmax in float32 as in training."""
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    scores = torch.matmul(query.reshape(batch, kv_heads, group * length, dim), key.transpose(2, 3))
    scores = scores * scaling
    if attention_mask is not None:
        grouped = scores.view(batch, kv_heads, group, length, -1) + attention_mask[:, :, None]
        scores = grouped.view(batch, kv_heads, group * length, -1)
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).view(batch, heads, length, dim)
    return out.transpose(1, 2).contiguous(), weights


AttentionInterface.register(GROUPED_ATTENTION, grouped_eager_attention)


@contextlib.contextmanager
def eager_attention(root: nn.Module) -> Iterator[None]:
    """HF models under `root` switched to eager attention (`grouped_eager_attention`) while
    exporting.

    The TorchScript SDPA symbolic builds a float32 mask and so runs a float16 model's attention
    and o_proj in float32 (with a folded float32 copy of o_proj's weight); eager attention keeps
    the model's dtype, with the softmax in float32 as in training.
    """
    configs = {
        id(m.config): m.config
        for m in root.modules()
        if hasattr(getattr(m, "config", None), "_attn_implementation")
    }
    saved = {key: config._attn_implementation for key, config in configs.items()}
    try:
        for config in configs.values():
            config._attn_implementation = GROUPED_ATTENTION
        yield
    finally:
        for key, config in configs.items():
            config._attn_implementation = saved[key]


@contextlib.contextmanager
def matmul_linears(root: nn.Module) -> Iterator[None]:
    """Every nn.Linear under `root` swapped for `_MatMulLinear`, restored on exit."""
    swapped = []
    for name, module in list(root.named_modules()):
        if isinstance(module, nn.Linear):
            parent_name, _, child = name.rpartition(".")
            parent = root.get_submodule(parent_name)
            setattr(parent, child, _MatMulLinear(module))
            swapped.append((parent, child, module))
    try:
        yield
    finally:
        for parent, child, module in swapped:
            setattr(parent, child, module)


class VisionGraph(nn.Module):
    def __init__(self, model: NVILAModel):
        super().__init__()
        self.vision_tower = model.vision_tower
        self.mm_projector = model.mm_projector
        self.config = model.config

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.vision_tower(pixel_values)
        tokens = self.mm_projector(repeat_scales(features, self.config.num_scales))
        return tokens, features


class ProjectorGraph(nn.Module):
    def __init__(self, model: NVILAModel):
        super().__init__()
        self.mm_projector = model.mm_projector

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mm_projector(features)


def kv_names(num_layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


class LLMGraph(nn.Module):
    def __init__(self, model: NVILAModel):
        super().__init__()
        self.llm = model.llm
        self.num_layers = int(model.llm.config.num_hidden_layers)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        logits_index: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        cache = DynamicCache(config=self.llm.config)
        for layer in range(self.num_layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        dtype = inputs_embeds.dtype
        # a 4D mask reaches attention as is: the additive bias of HF's own masks
        bias = (1 - attention_mask.to(dtype)) * torch.finfo(dtype).min
        hidden = self.llm.get_decoder()(
            inputs_embeds=inputs_embeds,
            attention_mask=bias,
            position_ids=position_ids,
            **cache_argument(cache),
            use_cache=True,
        ).last_hidden_state
        index = logits_index[..., None].expand(-1, -1, hidden.shape[-1])
        logits = self.llm.get_output_embeddings()(hidden.gather(1, index))
        present = [
            t for layer in cache.layers for t in (layer.keys, layer.values)
        ]  # filled in place
        return (logits, *present)


def causal_mask(new: int, past_length: int) -> np.ndarray:
    """int64 [1, 1, new, past_length + new]: each new position sees the cache and itself and the
    new positions before it."""
    mask = np.ones((new, past_length + new), dtype=np.int64)
    mask[:, past_length:] = np.tri(new, dtype=np.int64)
    return mask[None, None]


def llm_feed(
    embeds: np.ndarray,
    past_length: int,
    past: dict[str, np.ndarray],
    mask: np.ndarray | None = None,
    positions: np.ndarray | None = None,
    logits_index: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """One LLM call on `embeds` [1, new, D] after `past_length` cached positions. By default the
    new positions are causal, continue the cache's positions, and only the last one's logits
    come back (prefill and decode); `mask` (bool or 0/1 [new, past_length + new]), `positions`
    ([new], absolute) and `logits_index` (new positions) say otherwise."""
    new = embeds.shape[1]
    if mask is None:
        full_mask = causal_mask(new, past_length)
    else:
        full_mask = np.asarray(mask, dtype=np.int64)[None, None]
    if positions is None:
        positions = np.arange(past_length, past_length + new)
    return {
        "inputs_embeds": embeds,
        "attention_mask": full_mask,
        "position_ids": np.asarray(positions, dtype=np.int64)[None],
        "logits_index": np.asarray([new - 1] if logits_index is None else logits_index, np.int64)[
            None
        ],
        **past,
    }


def llm_dims(model: NVILAModel) -> dict[str, int]:
    """The LLM sizes an ONNX runtime needs to build empty caches and feeds."""
    config = model.llm.config
    heads = int(config.num_attention_heads)
    return {
        "num_layers": int(config.num_hidden_layers),
        "hidden_size": int(config.hidden_size),
        "num_attention_heads": heads,
        "num_key_value_heads": int(getattr(config, "num_key_value_heads", None) or heads),
        "head_dim": int(getattr(config, "head_dim", None) or config.hidden_size // heads),
        "vocab_size": int(config.vocab_size),
    }


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    with (
        torch.no_grad(),
        matmul_linears(module),
        eager_attention(module),
        warnings.catch_warnings(),
    ):
        # The tracer warns about every Python branch on a shape; the graphs are checked
        # against torch at other shapes than the traced ones instead.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=FLOAT_OPSET,
        )


def export_vision(model: NVILAModel, path: Path) -> None:
    size = model.config.tile_size
    pixels = torch.zeros(2, 3, size, size, dtype=model.vision_dtype, device=model.device)
    frames = {0: "frames"}
    _export(
        VisionGraph(model),
        (pixels,),
        path,
        ["pixel_values"],
        ["tokens", "features"],
        {"pixel_values": frames, "tokens": frames, "features": frames},
    )


def export_projector(model: NVILAModel, path: Path) -> None:
    config = model.config
    shape = (2, config.patch_grid**2, config.mm_hidden_size)
    features = torch.zeros(shape, dtype=model.vision_dtype, device=model.device)
    blocks = {0: "blocks"}
    _export(
        ProjectorGraph(model),
        (features,),
        path,
        ["features"],
        ["tokens"],
        {"features": blocks, "tokens": blocks},
    )


def export_llm(model: NVILAModel, path: Path) -> None:
    dims = llm_dims(model)
    past_len, seq = 3, 2  # traced with a non-empty cache and more than one new token
    kv_shape = (1, dims["num_key_value_heads"], past_len, dims["head_dim"])
    options = {"dtype": model.dtype, "device": model.device}
    past = [torch.zeros(kv_shape, **options) for _ in range(2 * dims["num_layers"])]
    embeds = torch.zeros(1, seq, dims["hidden_size"], **options)
    mask = torch.from_numpy(causal_mask(seq, past_len)).to(model.device)
    positions = torch.arange(past_len, past_len + seq, device=model.device)[None]
    logits_index = torch.arange(seq, device=model.device)[None]
    past_names = kv_names(dims["num_layers"], "past_key_values")
    present_names = kv_names(dims["num_layers"], "present")
    axes = {
        "inputs_embeds": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 2: "sequence", 3: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits_index": {0: "batch", 1: "logits_positions"},
        "logits": {0: "batch", 1: "logits_positions"},
    }
    axes.update({name: {0: "batch", 2: "past_sequence"} for name in past_names})
    axes.update({name: {0: "batch", 2: "total_sequence"} for name in present_names})
    _export(
        LLMGraph(model),
        (embeds, mask, positions, logits_index, *past),
        path,
        ["inputs_embeds", "attention_mask", "position_ids", "logits_index", *past_names],
        ["logits", *present_names],
        axes,
    )
