"""Model speed on this machine: the numbers that decide what runs on the robot's CPU/GPU.

    python -m nvila_core.bench --out outputs/bench          # `make bench` runs it (a few minutes)
    python -m nvila_core.bench --quick --out /tmp/bench      # smoke mode, a tiny model (seconds)

Weights are random (speed does not depend on them), so the model is defined here: an
NVILA-architecture config with a ~150 M-parameter Qwen2 LLM and a 12-block SigLIP at 224 px.
It is quantized (W4A16 LLM + W8A8 ViT) and exported for onnxruntime: a float32 folder, a
W4A16-LLM folder and a W8A8 vision graph. Benchmarks (one CSV row per measurement, medians of the repeats):

- memory_bandwidth: a large copy (bytes read + written / time), the ceiling of batch-1 decoding;
- vit: the vision graph for 8 frames (a step without the cache) and 1 frame (with it);
- decode: tokens/s, and as a fraction of bandwidth / weight bytes read per token (per format);
- feature_cache: `Engine.navigate` per-step latency with and without the per-frame cache;
- compression: prompt tokens and prefill time with temporal pooling, a 3x3 projector,
  dynamic-S2 vs one tile;
- hf_generate: our greedy decoder vs transformers' `generate` on the same LLM and embeddings;
- decision: one navigation decision, `Engine.choose` over NaVILA's ten answers vs `generate` of
  an answer as long as the longest of them (same prompt embeddings); and from the camera frames,
  the episode going on: `Engine.navigate` (frame cache + choose) vs NaVILA's loop (every frame
  through the ViT, then `generate`).
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from nvila_core.export import export_model
from nvila_core.export.graphs import export_vision
from nvila_core.export.qdq import ExportError, quantize_graph, save_onnx
from nvila_core.export.reference import make_session
from nvila_core.export.trt_rules import check_model
from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.generation import greedy_decode, score_continuations
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.processing import ModelInputs, NVILAProcessor
from nvila_core.model.projector import MultimodalProjector
from nvila_core.model.tokenizer import build_tokenizer
from nvila_core.progress import Progress
from nvila_core.quant import QuantState, quantize_model
from nvila_core.quant.awq import DECODER_PREFIX
from nvila_core.quant.calibration import calibration_inputs
from nvila_core.runtime.engine import Engine, TorchBackend
from nvila_core.runtime.onnx_backend import OnnxRuntimeBackend

BENCHMARKS = (
    "model",
    "memory_bandwidth",
    "vit",
    "decode",
    "feature_cache",
    "compression",
    "hf_generate",
    "decision",
)
CSV_NAME = "model_bench.csv"
PNG_NAME = "model_bench.png"
PROMPT = "Describe what the robot sees."
INSTRUCTION = "Walk past the sofa, turn left into the kitchen and stop next to the fridge."
NAVILA_ACTIONS = (
    "move forward 25 cm",
    "move forward 50 cm",
    "move forward 75 cm",
    "turn left 15 degrees",
    "turn left 30 degrees",
    "turn left 45 degrees",
    "turn right 15 degrees",
    "turn right 30 degrees",
    "turn right 45 degrees",
    "stop",
)
"""NaVILA's ten mid-level actions: the closed answer set of a navigation decision."""


@dataclass(frozen=True)
class BenchSize:
    """Model shape and measurement effort of one mode."""

    llm: dict[str, Any]
    vision: dict[str, Any]
    warmup: int
    repeats: int
    new_tokens: int  # decoded per call in decode / hf_generate
    cache_steps: int  # navigation steps timed per feature-cache variant
    copy_mb: int  # memory-bandwidth buffer
    camera: tuple[int, int]  # (height, width) of the synthetic frames


FULL = BenchSize(
    # Qwen2 shape between Qwen2-0.5B and navila-nano: 12 x 1024, GQA 16/4, ~150 M parameters.
    llm={
        "model_type": "qwen2",
        "vocab_size": 8192,
        "hidden_size": 1024,
        "intermediate_size": 2816,
        "num_hidden_layers": 12,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "max_position_embeddings": 2048,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1.0e-6,
        "tie_word_embeddings": False,
        # wider than the 0.02 default, so random greedy decoding does not repeat one token and
        # the transformers-vs-ours token comparison means something
        "initializer_range": 0.05,
    },
    # SigLIP-small-like: 224 px, 16 px patches (14 x 14) -> 49 tokens per frame after 2x2.
    vision={
        "hidden_size": 384,
        "intermediate_size": 1536,
        "num_hidden_layers": 12,
        "num_attention_heads": 6,
        "image_size": 224,
        "patch_size": 16,
        "layer_norm_eps": 1.0e-6,
        "hidden_act": "gelu_pytorch_tanh",
    },
    warmup=1,
    repeats=3,
    new_tokens=32,
    cache_steps=5,
    copy_mb=512,
    camera=(480, 640),
)
QUICK = BenchSize(
    llm={
        **FULL.llm,
        "vocab_size": 1024,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    },
    vision={
        **FULL.vision,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 64,
    },
    warmup=1,
    repeats=1,
    new_tokens=4,
    cache_steps=2,
    copy_mb=32,
    camera=(60, 80),
)


def bench_config(size: BenchSize) -> NVILAConfig:
    """NaVILA's layout (8 frames, 2x2 projector, one resized tile per frame) at `size`."""
    tile = int(size.vision["image_size"])
    return NVILAConfig(
        name="bench",
        llm_config=dict(size.llm),
        vision_config=dict(size.vision),
        mm_projector_type="mlp_downsample",
        mm_vision_select_layer=-2,
        image_aspect_ratio="resize",
        s2_scales=[tile],
        num_video_frames=8,
        video_pool_sizes=[[1, 1, 1]],
        model_max_length=2048,
    )


# ---------------------------------------------------------------- measurement helpers
class Rows:
    """The CSV rows: benchmark, variant, metric, value, unit."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, benchmark: str, variant: str, metric: str, value: float, unit: str) -> None:
        self.rows.append(
            {
                "benchmark": benchmark,
                "variant": variant,
                "metric": metric,
                "value": round(float(value), 4),
                "unit": unit,
            }
        )

    def get(self, benchmark: str, variant: str, metric: str) -> float:
        return next(
            r["value"]
            for r in self.rows
            if (r["benchmark"], r["variant"], r["metric"]) == (benchmark, variant, metric)
        )

    def select(self, benchmark: str, metric: str) -> dict[str, float]:
        return {
            r["variant"]: r["value"]
            for r in self.rows
            if r["benchmark"] == benchmark and r["metric"] == metric
        }


def repeated(fn: Callable[[], Any], size: BenchSize) -> tuple[float, list[Any]]:
    """Median wall ms of `fn` over the repeats (after warm-up), and every repeat's result."""
    for _ in range(size.warmup):
        fn()
    times, results = [], []
    for _ in range(size.repeats):
        start = time.perf_counter()
        results.append(fn())
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), results


def median_of(results: Sequence[Any], field: str) -> float:
    return statistics.median(float(getattr(r, field)) for r in results)


def frames(count: int, size: BenchSize, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size.camera, 3), dtype=np.uint8) for _ in range(count)]


def llm_weight_bytes(model: NVILAModel, state: QuantState | None) -> int:
    """Weight bytes one decode step reads: every LLM parameter but the input embedding (one row
    is looked up), int4 codes + fp16 block scales for the W4A16 linears, float32 otherwise."""
    embedding = model.llm.get_input_embeddings().weight
    int4 = {
        f"{name}.weight": q
        for name, q in (state.linears if state else {}).items()
        if q.scheme == "int4_block"
    }
    total = 0
    for name, param in model.named_parameters():
        if not name.startswith("llm.") or param is embedding:
            continue
        q = int4.get(name)
        if q is None:
            total += param.numel() * param.element_size()
        else:
            total += q.qweight.numel() // 2 + q.scales.numel() * 2
    return total


# ---------------------------------------------------------------- benchmarks
def bench_bandwidth(rows: Rows, size: BenchSize) -> float:
    """Copy bandwidth in GB/s (the best of torch's threaded copy and numpy's), bytes read +
    written: a batch-1 decode step streams every weight once, so this bounds tokens/s."""
    count = size.copy_mb * 2**20 // 4
    src = torch.rand(count)
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * src.element_size()
    src_np, dst_np = src.numpy(), dst.numpy()
    variants = {
        f"torch copy_ ({torch.get_num_threads()} threads)": lambda: dst.copy_(src),
        "numpy copyto (1 thread)": lambda: np.copyto(dst_np, src_np),
    }
    best = 0.0
    for variant, fn in variants.items():
        ms, _ = repeated(fn, dataclasses.replace(size, repeats=max(size.repeats, 5)))
        gbps = moved / (ms / 1e3) / 1e9
        rows.add("memory_bandwidth", variant, "bandwidth", gbps, "GB/s")
        best = max(best, gbps)
    rows.add("memory_bandwidth", "best", "bandwidth", best, "GB/s")
    return best


def w8a8_vision(
    model: NVILAModel, state: QuantState, path: Path, threads: int
) -> Callable[[torch.Tensor], np.ndarray]:
    """The W8A8 vision graph, built as `export_model` builds it (export_vision, quantize_graph,
    the TensorRT rules) but without its torch-comparison gate: at this size, static INT8
    activations round differently after ORT's and torch's float sums in a few places, which
    a random 12-block ViT amplifies past the gate's 1e-4 (3e-2 measured)."""
    export_vision(model, path)
    proto = onnx.load(str(path))
    quantize_graph(proto, {**state.select("vision_tower."), **state.select("mm_projector.")})
    violations = check_model(proto)
    if violations:
        raise ExportError("W8A8 vision graph breaks TensorRT rules: " + "; ".join(violations))
    save_onnx(proto, path)
    session = make_session(path, threads)
    return lambda pixels: session.run(["tokens"], {"pixel_values": pixels.numpy()})[0]


def bench_vit(
    rows: Rows, size: BenchSize, encoders: dict[str, Callable], pixels: torch.Tensor
) -> None:
    """The vision path (ViT + projector) per backend: 8 frames at once and a single frame."""
    for variant, encode in encoders.items():
        for count in (8, 1):
            batch = pixels[:count]
            with torch.inference_mode():
                ms, _ = repeated(lambda f=encode, x=batch: f(x), size)
            rows.add("vit", variant, f"{count}_frames", ms, "ms")


def bench_decode(
    rows: Rows,
    size: BenchSize,
    backends: dict[str, Any],
    weight_bytes: dict[str, int],
    inputs: ModelInputs,
    bandwidth: float,
) -> None:
    """Greedy decode tokens/s (no stop tokens, so every call decodes `new_tokens`) against the
    bound bandwidth / weight bytes per token of the backend's weight format."""
    for variant, backend in backends.items():
        with torch.inference_mode():
            embeds = backend.encode_media(inputs.media, [None] * len(inputs.media)).embeds
            _, results = repeated(
                lambda b=backend, e=embeds: b.decode(inputs, e, (), size.new_tokens, False), size
            )
        steps = size.new_tokens - 1
        tokens_per_s = statistics.median(steps / (r.decode_ms / 1e3) for r in results)
        bound = bandwidth * 1e9 / weight_bytes[variant]
        rows.add("decode", variant, "prompt_tokens", results[0].prompt_tokens, "tokens")
        rows.add("decode", variant, "prefill_ms", median_of(results, "prefill_ms"), "ms")
        rows.add("decode", variant, "tokens_per_s", tokens_per_s, "tokens/s")
        rows.add("decode", variant, "weight_bytes_per_token", weight_bytes[variant] / 1e6, "MB")
        rows.add("decode", variant, "bandwidth_bound", bound, "tokens/s")
        rows.add("decode", variant, "fraction_of_bound", tokens_per_s / bound, "fraction")


def bench_feature_cache(
    rows: Rows, size: BenchSize, model: NVILAModel, tokenizer, config: NVILAConfig
) -> None:
    """Per-step latency of an episode (one new camera frame per step, 8 shown): with the cache
    only the new frame goes through the ViT. Stop tokens are off so every step decodes 8 tokens."""
    episode = frames(8 + size.warmup + size.cache_steps, size, seed=1)
    for variant, cache_frames in (("cache on", 128), ("cache off", 0)):
        engine = Engine(TorchBackend(model), config, tokenizer, cache_frames=cache_frames)
        engine.stop_token_ids = []
        results, times = [], []
        for step in range(8, len(episode) + 1):
            start = time.perf_counter()
            result = engine.navigate(
                INSTRUCTION, episode[:step], frame_keys=list(range(step)), max_new_tokens=8
            )
            if step >= 8 + size.warmup:
                times.append((time.perf_counter() - start) * 1e3)
                results.append(result.timings)
        rows.add("feature_cache", variant, "step_ms", statistics.median(times), "ms")
        for metric, unit in (("vision_ms", "ms"), ("prefill_ms", "ms"), ("decode_ms", "ms")):
            rows.add(
                "feature_cache",
                variant,
                metric,
                statistics.median(t[metric] for t in results),
                unit,
            )
        vit_passes = statistics.median(t["vit_passes"] for t in results)
        rows.add("feature_cache", variant, "vit_passes", vit_passes, "frames/step")


def compression_variants(
    model: NVILAModel, config: NVILAConfig
) -> dict[str, tuple[NVILAModel, str]]:
    """Models sharing the LLM (and the ViT where its input is unchanged), per compression
    setting, with the media kind each is fed: "video" (8 frames) or "image" (one camera image).
    A changed projector input is a fresh random projector: only its shape matters here."""
    tile = config.tile_size

    def variant(media: str, **changes: Any) -> tuple[NVILAModel, str]:
        cfg = dataclasses.replace(config, **changes)
        projector = model.mm_projector
        if cfg.mm_hidden_size != config.mm_hidden_size or cfg.downsample_rate != 2:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                projector = MultimodalProjector.from_config(cfg).eval()
        nvila = NVILAModel(cfg, model.llm, model.vision_tower, projector)
        nvila.image_token_id, nvila.video_token_id = model.image_token_id, model.video_token_id
        nvila.newline_token_id = model.newline_token_id
        return nvila, media

    return {
        "8 frames, none": variant("video"),
        "temporal [2,1,1]": variant("video", video_pool_sizes=[[2, 1, 1]]),
        "temporal [4,1,1]": variant("video", video_pool_sizes=[[4, 1, 1]]),
        "spatial 3x3 projector": variant("video", mm_projector_type="mlp_downsample_3x3_fix"),
        "image, 1 tile": variant("image"),
        "image, dynamic-S2": variant(
            "image", image_aspect_ratio="dynamic_s2", s2_scales=[tile, 2 * tile, 3 * tile]
        ),
    }


def bench_compression(
    rows: Rows, size: BenchSize, model: NVILAModel, tokenizer, config: NVILAConfig
) -> None:
    """Prompt tokens, vision and prefill time (1 new token, no cache) per compression setting."""
    video = frames(8, size, seed=2)
    for variant, (nvila, media) in compression_variants(model, config).items():
        engine = Engine(TorchBackend(nvila), nvila.config, tokenizer, cache_frames=0)
        kwargs = {"video": video} if media == "video" else {"images": video[-1:]}
        _, results = repeated(
            lambda e=engine, k=kwargs: e.generate(PROMPT, **k, max_new_tokens=1), size
        )
        timings = [r.timings for r in results]
        rows.add("compression", variant, "prompt_tokens", timings[0]["prompt_tokens"], "tokens")
        rows.add("compression", variant, "visual_tokens", timings[0]["visual_tokens"], "tokens")
        for metric in ("vision_ms", "prefill_ms"):
            rows.add(
                "compression", variant, metric, statistics.median(t[metric] for t in timings), "ms"
            )


def bench_hf_generate(
    rows: Rows,
    size: BenchSize,
    model: NVILAModel,
    processor: NVILAProcessor,
    inputs: ModelInputs,
) -> None:
    """Same embeddings, same weights: our KV-cached greedy loop vs `transformers` `generate`
    (prefill included in both), and whether they produce the same tokens. Then one navigation
    decision: `Engine.choose`'s scoring of the ten NaVILA answers (one prefill, one forward over
    the answers' prefix tree) vs `generate` of an answer as long as the longest one."""
    with torch.inference_mode():
        encoded = model.encode_media_items(inputs.media)
        embeds = model.embed_inputs(inputs.input_ids, inputs.media, encoded.embeds)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)

    def ours() -> list[int]:
        return greedy_decode(model, embeds, (), size.new_tokens).token_ids

    @torch.inference_mode()
    def hf() -> list[int]:
        out = model.llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=size.new_tokens,
            min_new_tokens=size.new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
        return out[0, -size.new_tokens :].tolist()

    tokens = {}
    for variant, fn in (("nvila_core greedy_decode", ours), ("transformers generate", hf)):
        ms, results = repeated(fn, size)
        tokens[variant] = results[0]
        rows.add("hf_generate", variant, "total_ms", ms, "ms")
        rows.add("hf_generate", variant, "tokens_per_s", size.new_tokens / (ms / 1e3), "tokens/s")
    same = tokens["nvila_core greedy_decode"] == tokens["transformers generate"]
    rows.add("hf_generate", "both", "tokens_identical", float(same), "bool")
    distinct = len(set(tokens["nvila_core greedy_decode"]))
    rows.add("hf_generate", "both", "distinct_tokens", distinct, "tokens")
    rows.add("hf_generate", "both", "new_tokens", size.new_tokens, "tokens")

    answers = [processor.answer_ids(processor.navigation_answer(a)) for a in NAVILA_ACTIONS]
    length = max(len(a) for a in answers)

    @torch.inference_mode()
    def choose() -> list[float]:
        return score_continuations(model, embeds, answers).log_probs

    @torch.inference_mode()
    def hf_answer() -> list[int]:
        out = model.llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=length,
            min_new_tokens=length,
            do_sample=False,
            pad_token_id=0,
        )
        return out[0, -length:].tolist()

    decision = {}
    for variant, fn in (("nvila_core choose", choose), ("transformers generate", hf_answer)):
        decision[variant], _ = repeated(fn, size)
        rows.add("decision", variant, "total_ms", decision[variant], "ms")
    ratio = decision["transformers generate"] / decision["nvila_core choose"]
    rows.add("decision", "choose vs generate", "speedup", ratio, "x")
    rows.add("decision", "both", "answer_tokens", length, "tokens")


def bench_navigation_decision(
    rows: Rows,
    size: BenchSize,
    model: NVILAModel,
    tokenizer,
    config: NVILAConfig,
) -> None:
    """A navigation decision from the camera frames, the episode going on (one new frame per
    decision, 8 shown): `Engine.navigate` (the frame cache: only the new frame through the ViT;
    the last prompt's KV cache for the beginning this one shares; `choose` over the ten
    answers) vs NaVILA's loop on the same weights (every frame through the ViT, then
    transformers' `generate` of an answer as long as the longest). The two alternate decision
    by decision, so a change in the machine's load hits both."""
    processor = NVILAProcessor(config, tokenizer)
    answers = [processor.navigation_answer(a) for a in NAVILA_ACTIONS]
    length = max(len(processor.answer_ids(a)) for a in answers)
    engine = Engine(TorchBackend(model), config, tokenizer, cache_frames=128)

    @torch.inference_mode()
    def navila_loop(frames_so_far: list[np.ndarray]) -> None:
        inputs = processor.navigation(INSTRUCTION, frames_so_far)
        encoded = model.encode_media_items(inputs.media)
        embeds = model.embed_inputs(inputs.input_ids, inputs.media, encoded.embeds)
        model.llm.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
            max_new_tokens=length,
            min_new_tokens=length,
            do_sample=False,
            pad_token_id=0,
        )

    episode = frames(8 + size.warmup + size.cache_steps, size, seed=6)
    times: dict[str, list[float]] = {"Engine.navigate": [], "NaVILA loop": []}
    for step in range(8, len(episode) + 1):
        start = time.perf_counter()
        engine.navigate(INSTRUCTION, episode[:step], frame_keys=list(range(step)), answers=answers)
        ours = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        navila_loop(episode[:step])
        theirs = (time.perf_counter() - start) * 1e3
        if step >= 8 + size.warmup:
            times["Engine.navigate"].append(ours)
            times["NaVILA loop"].append(theirs)
    medians = {variant: statistics.median(ms) for variant, ms in times.items()}
    rows.add(
        "decision",
        "Engine.navigate (frame cache, choose)",
        "from_frames_ms",
        medians["Engine.navigate"],
        "ms",
    )
    rows.add(
        "decision",
        "NaVILA loop (8 frames ViT, generate)",
        "from_frames_ms",
        medians["NaVILA loop"],
        "ms",
    )
    ratio = medians["NaVILA loop"] / medians["Engine.navigate"]
    rows.add("decision", "navigate vs NaVILA loop", "speedup", ratio, "x")


# ---------------------------------------------------------------- driver
def run(size: BenchSize, threads: int, workdir: Path) -> Rows:
    """Build, quantize and export the bench model, then run every benchmark."""
    rows = Rows()
    progress = Progress(9, "model bench", "stages")
    started: list[str] = []

    def stage(name: str) -> None:
        """Mark the previous stage done and show `name` as running."""
        progress.set_postfix(running=name)
        if started:
            progress.update(1)
        started.append(name)

    start = time.perf_counter()
    config = bench_config(size)
    tokenizer = build_tokenizer(int(config.llm_config["vocab_size"]), config.chat_template)
    model = NVILAModel.from_config(config, seed=0, tokenizer=tokenizer)
    params = model.num_parameters()
    for part in ("llm", "vision_tower", "mm_projector"):
        rows.add("model", part, "parameters", params[part] / 1e6, "M")
    rows.add("model", "torch", "threads", threads, "threads")
    processor = NVILAProcessor(config, tokenizer)
    # One calibration query and a 4-point AWQ grid: the scales found change accuracy, not speed,
    # and the default search (20 points, 1024 rows) alone takes minutes on two cores.
    samples = calibration_inputs(processor, frames(8, size, seed=3), max_samples=1)
    stage("quantize")
    quant_start = time.perf_counter()
    quantized = copy.deepcopy(model)
    state = quantize_model(quantized, samples, "both", grid=4)
    rows.add("model", "quantize (w4a16 + w8a8)", "seconds", time.perf_counter() - quant_start, "s")
    stage("export")
    export_start = time.perf_counter()
    export_model(model, tokenizer, workdir / "fp32")
    w4a16 = QuantState(state.recipe, state.select(DECODER_PREFIX))
    export_model(quantized, tokenizer, workdir / "w4a16", w4a16)
    vit_w8a8 = w8a8_vision(quantized, state, workdir / "vision-w8a8.onnx", threads)
    del quantized
    rows.add("model", "export (3 folders)", "seconds", time.perf_counter() - export_start, "s")
    rows.add("model", "build + quantize + export", "seconds", time.perf_counter() - start, "s")
    torch_fp32 = TorchBackend(model)
    ort_fp32 = OnnxRuntimeBackend(workdir / "fp32", "cpu", threads=threads)

    stage("memory bandwidth")
    bandwidth = bench_bandwidth(rows, size)
    stage("vit")
    pixels = processor.image_processor.process_frames(frames(8, size, seed=4))
    vit = {
        "torch fp32": torch_fp32.frame_features,
        "onnxruntime fp32": ort_fp32.frame_features,
        "onnxruntime w8a8": vit_w8a8,
    }
    bench_vit(rows, size, vit, pixels)
    stage("decode")
    nav_inputs = processor.navigation(INSTRUCTION, frames(8, size, seed=5))
    decoders = {
        "torch fp32": torch_fp32,
        "onnxruntime fp32": ort_fp32,
        "onnxruntime w4a16": OnnxRuntimeBackend(workdir / "w4a16", "cpu", threads=threads),
    }
    fp32_bytes = llm_weight_bytes(model, None)
    weight_bytes = {
        "torch fp32": fp32_bytes,
        "onnxruntime fp32": fp32_bytes,
        "onnxruntime w4a16": llm_weight_bytes(model, state),
    }
    bench_decode(rows, size, decoders, weight_bytes, nav_inputs, bandwidth)
    del vit, decoders, ort_fp32
    stage("feature cache")
    bench_feature_cache(rows, size, model, tokenizer, config)
    stage("compression")
    bench_compression(rows, size, model, tokenizer, config)
    stage("hf generate")
    bench_hf_generate(rows, size, model, processor, nav_inputs)
    stage("navigation decision")
    bench_navigation_decision(rows, size, model, tokenizer, config)
    progress.set_postfix()
    progress.update(1)
    progress.close()
    return rows


# ---------------------------------------------------------------- outputs
def write_csv(rows: Rows, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["benchmark", "variant", "metric", "value", "unit"])
        writer.writeheader()
        writer.writerows(rows.rows)


def _bars(ax, values: dict[str, float], fmt: str = "%.1f", **kwargs) -> None:
    bars = ax.barh(list(values), list(values.values()), **kwargs)
    ax.bar_label(bars, fmt=fmt, fontsize=7, padding=2)
    ax.invert_yaxis()
    ax.tick_params(labelsize=7)
    ax.margins(x=0.25)


def plot(rows: Rows, path: Path, title: str) -> None:
    """Six panels, one per benchmark question."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(12, 11))
    (vit, decode), (cache, compression), (hf, bandwidth) = axes

    per_frame = {v: ms / 8 for v, ms in rows.select("vit", "8_frames").items()}
    _bars(vit, per_frame, color="tab:blue")
    vit.set_title("ViT + projector, 8-frame batch (ms per frame)", fontsize=9)
    vit.set_xlabel("ms / frame", fontsize=8)

    speed = rows.select("decode", "tokens_per_s")
    bound = rows.select("decode", "bandwidth_bound")
    fraction = rows.select("decode", "fraction_of_bound")
    names = list(speed)
    decode.barh(names, [bound[n] for n in names], color="lightgray", label="bandwidth bound")
    bars = decode.barh(names, [speed[n] for n in names], color="tab:green", label="measured")
    decode.bar_label(
        bars, labels=[f"{speed[n]:.1f} ({fraction[n]:.1%})" for n in names], fontsize=7, padding=2
    )
    decode.invert_yaxis()
    decode.tick_params(labelsize=7)
    decode.set_xscale("log")
    decode.legend(fontsize=7, loc="lower right")
    decode.set_title("decode tokens/s (fraction of the memory-bandwidth bound)", fontsize=9)

    variants = list(rows.select("feature_cache", "step_ms"))
    left = np.zeros(len(variants))
    for metric, color in (("vision_ms", "tab:orange"), ("prefill_ms", "tab:purple")):
        part = np.array([rows.get("feature_cache", v, metric) for v in variants])
        cache.barh(variants, part, left=left, color=color, label=metric.removesuffix("_ms"))
        left += part
    total = np.array([rows.get("feature_cache", v, "step_ms") for v in variants])
    bars = cache.barh(variants, total - left, left=left, color="tab:gray", label="decode + rest")
    cache.bar_label(bars, labels=[f"{t:.0f} ms" for t in total], fontsize=7, padding=2)
    cache.invert_yaxis()
    cache.tick_params(labelsize=7)
    cache.margins(x=0.2)
    cache.legend(fontsize=7, loc="lower right")
    cache.set_title("navigation step latency (8 frames shown, 8 new tokens)", fontsize=9)

    tokens = rows.select("compression", "prompt_tokens")
    prefill = rows.select("compression", "prefill_ms")
    bars = compression.barh(list(prefill), list(prefill.values()), color="tab:purple")
    compression.bar_label(
        bars, labels=[f"{prefill[v]:.0f} ms, {tokens[v]:.0f} tok" for v in prefill], fontsize=7
    )
    compression.invert_yaxis()
    compression.tick_params(labelsize=7)
    compression.margins(x=0.35)
    compression.set_title("prefill ms and prompt tokens per visual compression", fontsize=9)

    same = rows.get("hf_generate", "both", "tokens_identical")
    decision = {
        f"{variant} (same prompt)": ms
        for variant, ms in rows.select("decision", "total_ms").items()
    }
    decision.update(rows.select("decision", "from_frames_ms"))
    _bars(hf, decision, fmt="%.0f", color="tab:red")
    hf.set_title(
        "a navigation decision (ms); greedy tokens identical to transformers: "
        f"{'yes' if same else 'NO'}",
        fontsize=9,
    )

    _bars(bandwidth, rows.select("memory_bandwidth", "bandwidth"), color="tab:cyan")
    bandwidth.set_title("memory copy bandwidth (read + write, GB/s)", fontsize=9)

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_summary(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} CPUs, {threads} threads, {gpu}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nvila_core.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default="outputs/bench", help="output directory")
    parser.add_argument("--quick", action="store_true", help="tiny model, one repeat (smoke test)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch / onnxruntime threads"
    )
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="nvila-bench-") as workdir:
            rows = run(size, args.threads, Path(workdir))
    finally:
        torch.set_num_threads(previous_threads)
    rows.add("model", "whole benchmark", "seconds", time.perf_counter() - start, "s")
    machine = machine_summary(args.threads)
    write_csv(rows, out / CSV_NAME)
    mode = "quick" if args.quick else "full"
    plot(rows, out / PNG_NAME, f"nvila_core model bench ({mode}, random weights) - {machine}")
    print(f"machine: {machine}")
    for r in rows.rows:
        print(
            f"{r['benchmark']:>16} {r['variant']:<28} {r['metric']:<24} {r['value']:>10} {r['unit']}"
        )
    print(f"wrote {out / CSV_NAME} and {out / PNG_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
