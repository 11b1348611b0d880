"""`python -m nvila_core.decode_profile`: where a batch-1 decode step's time goes in onnxruntime.

`make bench` reports decode tokens/s as a fraction of bandwidth / weight bytes; this says why a
variant stays below that bound. It builds the benchmark's model (`nvila_core.bench`: random
weights, 152 M-parameter Qwen2 LLM), exports it in float32 and with the W4A16 LLM, and decodes
the benchmark's navigation prompt with onnxruntime's per-node profiler on. Per decoded token:

- each operator type's kernel time (`MatMulNBits` is the 4-bit linear, `MatMul` a float one),
  and for the linears the weight bytes they read over that time (effective GB/s);
- `onnxruntime outside kernels`: the session's run time not spent in a kernel (input and output
  copies, the executor);
- `host`: the profiled decode loop's wall time outside the session (the Python loop, the embedding
  lookup, feeding the KV cache back as arrays).

Variants: float32; W4A16 as deployed (`MatMulNBits` accuracy level 1: float32 arithmetic, as the
graph and TensorRT compute); W4A16 at accuracy level 4 (int8 activations per block, about 1e-2
off: never deployed, measured to show what the 4-bit kernel costs on this CPU). Written to
`<out>/decode_profile.csv` (variant, part, metric, value, unit) and `decode_profile.png`.
"""

from __future__ import annotations

import argparse
import bisect
import copy
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from nvila_core.bench import (
    FULL,
    INSTRUCTION,
    QUICK,
    BenchSize,
    Rows,
    bench_bandwidth,
    bench_config,
    frames,
    llm_weight_bytes,
    machine_summary,
    write_csv,
)
from nvila_core.export import export_model
from nvila_core.export.reference import make_session
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.processing import ModelInputs, NVILAProcessor
from nvila_core.model.tokenizer import build_tokenizer
from nvila_core.quant import QuantState, quantize_model
from nvila_core.quant.calibration import calibration_inputs
from nvila_core.runtime.onnx_backend import OnnxRuntimeBackend

CSV_NAME = "decode_profile.csv"
PNG_NAME = "decode_profile.png"
TOP_OPS = 6
"""Operator types listed by name; the rest are summed as "other operators"."""
LINEAR_OPS = ("MatMulNBits", "MatMul")


@dataclass(frozen=True)
class Variant:
    name: str
    export: str
    """Export folder under the work directory."""
    int4_accuracy: int = 1


VARIANTS = (
    Variant("onnxruntime fp32", "fp32"),
    Variant("onnxruntime w4a16", "w4a16"),
    Variant("onnxruntime w4a16, accuracy 4 (not deployed)", "w4a16", int4_accuracy=4),
)


def linear_weight_bytes(model: NVILAModel, state: QuantState | None) -> dict[str, int]:
    """Weight bytes a decode step reads through each linear operator type: the 4-bit linears
    (int4 codes + fp16 block scales) through MatMulNBits, float32 ones (the LM head) through
    MatMul."""
    int4 = {
        f"{name}.weight": q
        for name, q in (state.linears if state else {}).items()
        if q.scheme == "int4_block"
    }
    embedding = model.llm.get_input_embeddings().weight
    read = {op: 0 for op in LINEAR_OPS}
    for name, param in model.named_parameters():
        if not name.startswith("llm.") or param.dim() != 2 or param is embedding:
            continue
        q = int4.get(name)
        if q is None:
            read["MatMul"] += param.numel() * param.element_size()
        else:
            read["MatMulNBits"] += q.qweight.numel() // 2 + q.scales.numel() * 2
    return read


def parse_trace(path: str, new_tokens: int, skip_calls: int) -> tuple[dict[str, float], float]:
    """From an onnxruntime profile: mean kernel microseconds per operator type and mean session
    run microseconds, over the decode steps (not the prefill) of the calls after `skip_calls`."""
    events = json.loads(Path(path).read_text())
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    decode_runs = [
        run
        for index, run in enumerate(runs)
        if index // new_tokens >= skip_calls and index % new_tokens > 0
    ]
    if not decode_runs:
        raise ValueError(f"{path}: no decode steps in the profile ({len(runs)} runs)")
    starts = [run["ts"] for run in decode_runs]  # sorted, runs do not overlap
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        ts = event["ts"]
        index = bisect.bisect_right(starts, ts) - 1  # the last run that began before it
        if index >= 0 and ts <= starts[index] + decode_runs[index]["dur"]:
            per_op[event.get("args", {}).get("op_name", "?")] += event["dur"]
    count = len(decode_runs)
    return (
        {op: total / count for op, total in per_op.items()},
        sum(run["dur"] for run in decode_runs) / count,
    )


def profile_variant(
    rows: Rows,
    variant: Variant,
    workdir: Path,
    inputs: ModelInputs,
    size: BenchSize,
    threads: int,
    linear_bytes: dict[str, int],
    weight_bytes: int,
    bandwidth: float,
) -> None:
    export_dir = workdir / variant.export
    backend = OnnxRuntimeBackend(export_dir, "cpu", threads=threads)
    llm_file = export_dir / backend.metadata["graphs"]["llm"]["files"][0]
    steps = size.new_tokens - 1

    def decode_ms_per_token() -> float:
        """Median wall ms per decoded token of the repeats (after the warm-up calls)."""
        with torch.inference_mode():
            results = [
                backend.decode(inputs, embeds, (), size.new_tokens, False)
                for _ in range(size.warmup + size.repeats)
            ]
        return statistics.median(r.decode_ms / steps for r in results[size.warmup :])

    with torch.inference_mode():
        embeds = backend.encode_media(inputs.media, [None] * len(inputs.media)).embeds
    # without the profiler first: it adds a little to every node
    backend.sessions["llm"] = make_session(llm_file, threads, int4_accuracy=variant.int4_accuracy)
    plain_ms = decode_ms_per_token()
    prefix = workdir / f"profile-{variant.export}-{variant.int4_accuracy}"
    backend.sessions["llm"] = make_session(
        llm_file, threads, profile_prefix=str(prefix), int4_accuracy=variant.int4_accuracy
    )
    wall_ms = decode_ms_per_token()
    trace = backend.sessions["llm"].end_profiling()
    per_op, run_us = parse_trace(trace, size.new_tokens, size.warmup)
    kernels_ms = sum(per_op.values()) / 1e3
    ranked = sorted(per_op.items(), key=lambda item: -item[1])
    for op, us in ranked[:TOP_OPS]:
        rows.add("decode_profile", variant.name, op, us / 1e3, "ms/token")
    rows.add(
        "decode_profile",
        variant.name,
        "other operators",
        sum(us for _, us in ranked[TOP_OPS:]) / 1e3,
        "ms/token",
    )
    rows.add(
        "decode_profile",
        variant.name,
        "onnxruntime outside kernels",
        max(run_us / 1e3 - kernels_ms, 0.0),
        "ms/token",
    )
    rows.add("decode_profile", variant.name, "host", max(wall_ms - run_us / 1e3, 0.0), "ms/token")
    rows.add("decode_summary", variant.name, "wall, profiled", wall_ms, "ms/token")
    rows.add("decode_summary", variant.name, "wall", plain_ms, "ms/token")
    rows.add("decode_summary", variant.name, "tokens_per_s", 1e3 / plain_ms, "tokens/s")
    bound = bandwidth * 1e9 / weight_bytes
    rows.add("decode_summary", variant.name, "bandwidth_bound", bound, "tokens/s")
    rows.add(
        "decode_summary", variant.name, "fraction_of_bound", 1e3 / plain_ms / bound, "fraction"
    )
    for op in LINEAR_OPS:
        us = per_op.get(op, 0.0)
        if us > 0 and linear_bytes[op] > 0:
            rows.add(
                "decode_summary",
                variant.name,
                f"{op} effective bandwidth",
                linear_bytes[op] / (us / 1e6) / 1e9,
                "GB/s",
            )


def run(size: BenchSize, threads: int, workdir: Path) -> Rows:
    rows = Rows()
    config = bench_config(size)
    tokenizer = build_tokenizer(int(config.llm_config["vocab_size"]), config.chat_template)
    model = NVILAModel.from_config(config, seed=0, tokenizer=tokenizer)
    processor = NVILAProcessor(config, tokenizer)
    samples = calibration_inputs(processor, frames(8, size, seed=3), max_samples=1)
    quantized = copy.deepcopy(model)
    state = quantize_model(quantized, samples, "w4a16", grid=4)
    export_model(model, tokenizer, workdir / "fp32")
    export_model(quantized, tokenizer, workdir / "w4a16", state)
    bandwidth = bench_bandwidth(rows, size)
    inputs = processor.navigation(INSTRUCTION, frames(8, size, seed=5))
    for variant in VARIANTS:
        quant = state if variant.export == "w4a16" else None
        print(f"profiling {variant.name} ...", flush=True)
        profile_variant(
            rows,
            variant,
            workdir,
            inputs,
            size,
            threads,
            linear_weight_bytes(quantized if quant else model, quant),
            llm_weight_bytes(quantized if quant else model, quant),
            bandwidth,
        )
    return rows


def plot(rows: Rows, path: Path, title: str) -> None:
    """One stacked bar per variant: ms per decoded token by part."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [r for r in rows.rows if r["benchmark"] == "decode_profile"]
    variants = list(dict.fromkeys(r["variant"] for r in parts))
    names = list(dict.fromkeys(r["metric"] for r in parts))
    fig, ax = plt.subplots(figsize=(12, 1.6 + 0.9 * len(variants)))
    colors = plt.get_cmap("tab20").colors
    for y, variant in enumerate(variants):
        left = 0.0
        for index, name in enumerate(names):
            value = next(
                (r["value"] for r in parts if r["variant"] == variant and r["metric"] == name), 0.0
            )
            label = name if y == 0 or name not in names[:index] else None
            ax.barh(y, value, left=left, color=colors[index % len(colors)], label=label)
            left += value
    ax.set_yticks(range(len(variants)), variants)
    ax.invert_yaxis()
    ax.set_xlabel("ms per decoded token")
    ax.set_title(title, fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(
        unique.values(), unique.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0)
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nvila_core.decode_profile", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default="outputs/bench", help="output directory")
    parser.add_argument("--quick", action="store_true", help="tiny model (smoke test)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="onnxruntime threads"
    )
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nvila-decode-profile-") as workdir:
        rows = run(size, args.threads, Path(workdir))
    machine = machine_summary(args.threads)
    write_csv(rows, out / CSV_NAME)
    mode = "quick" if args.quick else "full"
    plot(rows, out / PNG_NAME, f"decode profile ({mode}, random weights) - {machine}")
    print(f"machine: {machine}; {time.perf_counter() - start:.0f} s")
    for r in rows.rows:
        print(
            f"{r['benchmark']:>16} {r['variant']:<46} {r['metric']:<30} {r['value']:>10} {r['unit']}"
        )
    print(f"wrote {out / CSV_NAME} and {out / PNG_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
