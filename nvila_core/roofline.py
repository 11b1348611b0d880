"""Roofline projection of one navigation query on a target GPU, from the model's own graph.

Nothing here is timed. FLOPs come from running the model's real forward code on the meta device
under `torch.utils.flop_counter.FlopCounterMode` (the ViT + projector for the new frames, the
LLM's prefill with logits for the last position only, one decode step against a KV cache of the
prompt's length), so they follow every shape the model code uses. Bytes are the weights each
phase reads in the deployed formats (`nvila_core.quant`): W8A8 ViT linears as int8 codes with
per-channel scales, W4A16 decoder linears as int4 codes with one FP16 scale per 128 inputs,
everything else (embeddings, norms, lm_head, patch embedding) FP16; a decode step also reads the
FP16 KV cache. A phase's bound is max(FLOPs / peak, bytes / bandwidth), with the peak of the
precision its matmuls run in (INT8 for the W8A8 ViT, FP16 for the LLM, whose W4A16 weights are
dequantized to FP16). Activation traffic and kernel launch overheads are left out, so a bound is
a floor: the measured figures `nvila-core roofline` prints beside it say how close real stacks get.

    nvila-core roofline navila-8b --device agx-orin-64gb --frames 8 --context 1737 --answer 10
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nvila_core.transformers_compat import cache_argument

if TYPE_CHECKING:
    from nvila_core.model.configuration import NVILAConfig

W4_BLOCK = 128
FP16 = 2


@dataclass(frozen=True)
class DeviceSpec:
    """A GPU's published peaks: dense (no structured sparsity) tensor-core rates."""

    name: str
    bandwidth_gbs: float
    fp16_tflops: float
    int8_tops: float
    source: str


DEVICES: dict[str, DeviceSpec] = {
    "agx-orin-64gb": DeviceSpec(
        "Jetson AGX Orin 64 GB",
        204.8,
        42.5,
        85.0,
        "NVIDIA Jetson AGX Orin data sheet / technical brief: 204.8 GB/s LPDDR5; GPU 170 INT8 "
        "TOPS with 2:4 sparsity, so 85 dense; Ampere tensor cores run FP16 at half the INT8 rate",
    ),
    "rtx-4090": DeviceSpec(
        "GeForce RTX 4090",
        1008.0,
        165.2,
        660.6,
        "NVIDIA Ada whitepaper: 1008 GB/s GDDR6X; dense FP16 tensor with FP32 accumulate 165.2 "
        "TFLOPS; dense INT8 660.6 TOPS",
    ),
}


@dataclass(frozen=True)
class Phase:
    """One phase of a query: its work, its traffic, and its floor time on a device."""

    name: str
    precision: str
    flops: float
    bytes: float
    compute_s: float
    memory_s: float

    @property
    def bound_s(self) -> float:
        return max(self.compute_s, self.memory_s)

    @property
    def limit(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "memory"


def _meta_model(config: NVILAConfig):
    from nvila_core.model.modeling import NVILAModel

    return NVILAModel.from_config(config, device="meta")


def _count_flops(fn) -> float:
    import warnings

    from torch.utils.flop_counter import FlopCounterMode

    with warnings.catch_warnings(), FlopCounterMode(display=False) as counter:
        # newer transformers rename `past_key_values`; the Jetson releases only know that name
        warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
        fn()
    return float(counter.get_total_flops())


def vision_flops(model, frames: int) -> float:
    """ViT + projector FLOPs for `frames` frames (one tile each)."""
    import torch

    size = model.config.tile_size
    pixels = torch.empty(frames, 3, size, size, device="meta", dtype=model.vision_dtype)
    return _count_flops(lambda: model.frame_features(pixels))


def _meta_cache(model, context: int):
    """A KV cache of `context` positions on the meta device."""
    import torch
    from transformers import DynamicCache

    llm = model.config.llm_config
    heads, kv_heads = llm["num_attention_heads"], llm.get("num_key_value_heads")
    head_dim = llm.get("head_dim") or llm["hidden_size"] // heads
    cache = DynamicCache()
    for layer in range(llm["num_hidden_layers"]):
        shape = (1, kv_heads or heads, context, head_dim)
        kv = torch.empty(shape, device="meta", dtype=model.dtype)
        cache.update(kv, kv, layer)
    return cache


def prefill_flops(model, tokens: int, reused: int = 0) -> float:
    """LLM FLOPs for a `tokens`-long prompt, logits for the last position only (as the engines
    compute them); the first `reused` positions' KV cache kept from the last prompt, so only
    the rest is fed (attending to all of it)."""
    import torch

    hidden = model.config.llm_config["hidden_size"]
    embeds = torch.empty(1, tokens - reused, hidden, device="meta", dtype=model.dtype)
    cache = _meta_cache(model, reused) if reused else None

    def run() -> None:
        states = model.llm.model(
            inputs_embeds=embeds, use_cache=True, **cache_argument(cache)
        ).last_hidden_state
        model.llm.lm_head(states[:, -1:])

    return _count_flops(run)


def decode_flops(model, context: int) -> float:
    """LLM FLOPs of one decode step after `context` tokens."""
    return choose_flops(model, context, 1)


def choose_flops(model, context: int, tokens: int) -> float:
    """FLOPs of `tokens` positions fed in one row against a cache of `context`: the answers'
    prefix tree of `Engine.choose` (`score_continuations`), or one decode step."""
    import torch

    hidden = model.config.llm_config["hidden_size"]
    embeds = torch.empty(1, tokens, hidden, device="meta", dtype=model.dtype)
    cache = _meta_cache(model, context)
    return _count_flops(lambda: model.llm(inputs_embeds=embeds, **cache_argument(cache)))


def kv_cache_bytes(config: NVILAConfig, context: int) -> float:
    """FP16 keys and values of `context` tokens over all layers."""
    llm = config.llm_config
    heads = llm["num_attention_heads"]
    kv_heads = llm.get("num_key_value_heads") or heads
    head_dim = llm.get("head_dim") or llm["hidden_size"] // heads
    return 2.0 * llm["num_hidden_layers"] * kv_heads * head_dim * context * FP16


def weight_bytes(model) -> dict[str, float]:
    """Bytes each part reads per pass in the deployed formats (module docstring)."""
    from torch import nn

    def linears(module: nn.Module) -> dict[int, nn.Linear]:
        return {id(m.weight): m for m in module.modules() if isinstance(m, nn.Linear)}

    def part(module: nn.Module, quantized: dict[int, nn.Linear], scheme: str) -> float:
        total = 0.0
        for param in module.parameters():
            linear = quantized.get(id(param))
            if linear is None:
                total += param.numel() * FP16
            elif scheme == "int8_channel":
                total += param.numel() + linear.out_features * FP16
            else:
                blocks = -(-linear.in_features // W4_BLOCK)
                total += param.numel() / 2 + linear.out_features * blocks * FP16
        return total

    embedding = model.llm.get_input_embeddings().weight
    decoder = model.llm.model.layers
    lm_head = model.llm.lm_head
    norm = model.llm.model.norm
    return {
        "vision_tower": part(model.vision_tower, linears(model.vision_tower), "int8_channel"),
        "mm_projector": part(model.mm_projector, {}, "fp16"),
        "decoder": part(decoder, linears(decoder), "int4_block") + part(norm, {}, "fp16"),
        "lm_head": 0.0 if lm_head.weight is embedding else lm_head.weight.numel() * FP16,
        "embedding_row": embedding.shape[1] * FP16,
    }


def project(
    config: NVILAConfig,
    device: DeviceSpec,
    frames: int,
    context: int,
    answer: int,
    choose: tuple[int, int] | None = None,
    reused: int = 0,
) -> list[Phase]:
    """Phases of one query: ViT for `frames` new frames, prefill of `context` tokens (of which
    the first `reused` keep the last prompt's KV cache and are not fed), then either `answer`
    greedy decode steps or, with `choose` = (answers, tokens per answer), `Engine.choose`'s one
    forward over the closed set of answers' prefix tree."""
    if frames < 0 or context < 1 or answer < 0:
        raise ValueError("frames >= 0, context >= 1 and answer >= 0 are required")
    if not 0 <= reused < context:
        raise ValueError(f"reused must be in [0, context), got {reused} of {context}")
    if choose is not None and (choose[0] < 1 or choose[1] < 1):
        raise ValueError(f"choose needs at least one answer of one token, got {choose}")
    model = _meta_model(config)
    weights = weight_bytes(model)
    fp16_peak, int8_peak, bandwidth = (
        device.fp16_tflops * 1e12,
        device.int8_tops * 1e12,
        device.bandwidth_gbs * 1e9,
    )

    def phase(name: str, precision: str, flops: float, traffic: float) -> Phase:
        peak = int8_peak if precision == "int8" else fp16_peak
        return Phase(name, precision, flops, traffic, flops / peak, traffic / bandwidth)

    phases = []
    if frames:
        vit_bytes = weights["vision_tower"] + weights["mm_projector"]
        phases.append(
            phase(f"vision ({frames} frames)", "int8", vision_flops(model, frames), vit_bytes)
        )
    llm_bytes = weights["decoder"] + weights["lm_head"]
    fed = context - reused
    prefill_traffic = llm_bytes + fed * weights["embedding_row"] + kv_cache_bytes(config, context)
    name = f"prefill ({context} tokens)" if not reused else f"prefill ({fed} of {context} tokens)"
    phases.append(phase(name, "fp16", prefill_flops(model, context, reused), prefill_traffic))
    if choose is not None:
        answers, width = choose
        # The first answer token's logits come with the prefill; the tree feeds the rest, at
        # most every other token of every answer (answers sharing words share nodes).
        fed = answers * max(width - 1, 1)
        traffic = llm_bytes + fed * weights["embedding_row"] + kv_cache_bytes(config, context)
        flops = choose_flops(model, context, fed)
        phases.append(phase(f"choose ({answers} answers x {width} tokens)", "fp16", flops, traffic))
    elif answer:
        # Decode cost grows with the cache; the mean context over the answer is exact for the
        # linear growth of attention FLOPs and KV bytes.
        mean_context = context + (answer - 1) / 2
        step_flops = decode_flops(model, round(mean_context))
        step_bytes = (
            llm_bytes + weights["embedding_row"] + kv_cache_bytes(config, round(mean_context))
        )
        phases.append(
            phase(f"decode ({answer} tokens)", "fp16", answer * step_flops, answer * step_bytes)
        )
    return phases


def decode_tokens_per_s(config: NVILAConfig, device: DeviceSpec, context: int) -> float:
    """The bandwidth/compute bound on batch-1 decode speed after `context` tokens."""
    step = project(config, device, 0, context, 1)[-1]
    return 1.0 / step.bound_s


def format_table(model_name: str, device: DeviceSpec, phases: Sequence[Phase]) -> str:
    """A Markdown table of the phases and their total."""
    lines = [
        f"{model_name} on {device.name} ({device.bandwidth_gbs:g} GB/s, "
        f"{device.fp16_tflops:g} FP16 TFLOPS, {device.int8_tops:g} INT8 TOPS, dense)",
        "",
        "| phase | precision | GFLOP | GB read | compute s | memory s | bound s | limit |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in phases:
        lines.append(
            f"| {p.name} | {p.precision} | {p.flops / 1e9:,.1f} | {p.bytes / 1e9:.3f} | "
            f"{p.compute_s:.4f} | {p.memory_s:.4f} | {p.bound_s:.4f} | {p.limit} |"
        )
    total = sum(p.bound_s for p in phases)
    lines.append(f"| query | | | | | | {total:.4f} | {1 / total:.2f} queries/s |")
    return "\n".join(lines)


def write_csv(rows: Sequence[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def phase_rows(model_name: str, device: DeviceSpec, phases: Sequence[Phase]) -> list[dict]:
    return [
        {
            "model": model_name,
            "device": device.name,
            **asdict(p),
            "bound_s": p.bound_s,
            "limit": p.limit,
        }
        for p in phases
    ]
