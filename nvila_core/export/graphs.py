"""The three torch graphs of a deployment export and their ONNX export (TorchScript exporter).

- vision: `pixel_values` [frames, 3, S, S] -> `tokens` [frames, tokens_per_tile, D] (what the
  engine caches per frame) and `features` [frames, P, C] (raw ViT output, for dynamic-S2 images);
- projector (dynamic-S2 models only): merged multi-scale `features` [blocks, P, C*scales] ->
  `tokens` [blocks, tokens_per_tile, D];
- llm: `inputs_embeds` [1, seq, D], `attention_mask` [1, 1, seq, past+seq] (1: the query
  position attends to that key; the host states causality, so one call can also carry an answer
  set's prefix tree), `position_ids` [1, seq], `logits_index` [1, k] (the new positions whose
  logits come back) and `past_key_values.{i}.{key,value}` [1, kv_heads, past, head_dim] ->
  `logits` [1, k, vocab] (a decode step asks for its last position only; a full-sequence vocab
  tensor would be hundreds of MB on Orin) and `present.{i}.{key,value}`. One sequence per call:
  the engine never batches (a choice's answers ride as a tree). Embedding lookup stays on the
  host so media embeddings can be spliced in. `llm_feed` builds one call's inputs.

The TorchScript exporter (dynamo=False) is used: it exports the tiny model in under a second per
graph on CPU, with plain ONNX ops only (trt.md §6.2). The decoder is written out for the export
(`LLMGraph`) so that its shapes are constants; the vision tower is HF's, with eager attention.
Every nn.Linear runs as `MatMul(x, weight_t)` on a view of its weight named
`<module path>.weight_t`, so the quantizer finds each linear's MatMul by name.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nvila_core.model.modeling import NVILAModel
from nvila_core.model.vision import repeat_scales

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


@contextlib.contextmanager
def eager_attention(root: nn.Module) -> Iterator[None]:
    """HF models under `root` (the vision tower) switched to eager attention while exporting.

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
            config._attn_implementation = "eager"
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


STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
"""RoPE variants whose frequencies are fixed at load time (dynamic ones change with length)."""


def _rotate_half(x: torch.Tensor, half: int) -> torch.Tensor:
    """The halves of the last axis swapped, the second one negated: RoPE's pair rotation
    (`half` given, not read from the tensor, so the graph slices at constants)."""
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LLMGraph(nn.Module):
    """The decoder written out for export, every shape a constant but the sequence lengths.

    It computes what HF's Qwen2/Llama decoder computes, with the model's own norms, MLPs and
    linears, but its reshapes name their sizes instead of reading them from tensors: a trace of
    HF's modules writes a Shape/Gather/Unsqueeze/Concat chain for every view (navila-nano: 536
    nodes after onnxruntime's optimizations, 291 so). Attention does not repeat the KV heads:
    the query heads sharing a KV head are the rows of one product with it, so the graph reads
    the cache as it is (HF's `repeat_kv` copies it once per query head every step)."""

    def __init__(self, model: NVILAModel):
        super().__init__()
        self.llm = model.llm
        decoder = model.llm.get_decoder()
        dims = llm_dims(model)
        self.heads = dims["num_attention_heads"]
        self.kv_heads = dims["num_key_value_heads"]
        self.head_dim = dims["head_dim"]
        rotary = decoder.rotary_emb
        if rotary.rope_type not in STATIC_ROPE_TYPES:
            raise ValueError(
                f"RoPE type {rotary.rope_type!r} changes with the sequence length; exports take "
                f"one of {', '.join(STATIC_ROPE_TYPES)}"
            )
        windows = [getattr(layer.self_attn, "sliding_window", None) for layer in decoder.layers]
        if any(window is not None for window in windows):
            raise ValueError("sliding-window attention layers are not exported")
        self.register_buffer("inv_freq", rotary.inv_freq.detach().float(), persistent=False)
        self.rope_scaling = float(rotary.attention_scaling)
        self.attention_scaling = float(decoder.layers[0].self_attn.scaling)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        logits_index: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        decoder = self.llm.get_decoder()
        dtype = inputs_embeds.dtype
        group = self.heads // self.kv_heads
        half = self.head_dim // 2
        # additive mask, once per call; a query row of the grouped attention is (head in
        # group, position), so the mask repeats per head of a group
        bias = (1 - attention_mask.to(dtype)) * torch.finfo(dtype).min
        bias = bias.repeat(1, 1, group, 1)
        # RoPE as HF computes it (float32, then the model's dtype); the attention scale is
        # applied to the query through its cos/sin
        freqs = position_ids[..., None].float() * self.inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # [1, 1, seq, head_dim]
        cos = (angles.cos() * self.rope_scaling).to(dtype)
        sin = (angles.sin() * self.rope_scaling).to(dtype)
        query_cos = (cos * self.attention_scaling)[:, :, None]  # [1, 1, 1, seq, head_dim]
        query_sin = (sin * self.attention_scaling)[:, :, None]
        hidden = inputs_embeds
        present = []
        for index, layer in enumerate(decoder.layers):
            attention = layer.self_attn
            normed = layer.input_layernorm(hidden)
            # [1, seq, kv_heads * group * dim] -> [1, kv_heads, group, seq, dim]
            query = attention.q_proj(normed).view(1, -1, self.kv_heads, group, self.head_dim)
            query = query.permute(0, 2, 3, 1, 4)
            query = query * query_cos + _rotate_half(query, half) * query_sin
            key = attention.k_proj(normed).view(1, -1, self.kv_heads, self.head_dim)
            key = key.transpose(1, 2)
            key = key * cos + _rotate_half(key, half) * sin
            value = attention.v_proj(normed).view(1, -1, self.kv_heads, self.head_dim)
            key = torch.cat((past[2 * index], key), dim=2)
            value = torch.cat((past[2 * index + 1], value.transpose(1, 2)), dim=2)
            present += [key, value]
            rows = query.reshape(1, self.kv_heads, -1, self.head_dim)  # [1, kv, group*seq, dim]
            scores = torch.matmul(rows, key.transpose(2, 3)) + bias
            weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(dtype)
            out = torch.matmul(weights, value).view(1, self.kv_heads, group, -1, self.head_dim)
            out = out.permute(0, 3, 1, 2, 4).reshape(1, -1, self.heads * self.head_dim)
            hidden = hidden + attention.o_proj(out)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        hidden = decoder.norm(hidden)
        picked = hidden[0].index_select(0, logits_index[0])
        logits = self.llm.get_output_embeddings()(picked)[None]
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
