"""GPU benchmark: a training step of NVILA's LLM decoder layers in bf16 vs FP8 (CSV + PNG).

    python -m nvila_core.train.fp8_bench --out outputs/fp8_bench [--preset nvila-8b] [--layers 4]

Times what `TrainConfig(fp8=True)` changes: the trainer's float32 master weights under bf16
autocast, with and without `enable_fp8` on the decoder linears, forward + backward + AdamW on
random `inputs_embeds`. Only the decoder stack runs (embeddings and `lm_head` stay bf16 in both
modes and would dilute the comparison); a few layers of the real width stand in for the full
depth, since every layer is the same. Each mode runs eager and under `torch.compile` (torchao's
float8 casts are fused only when compiled). The first and last loss of the same steps on the same
data are recorded per mode, so a numerics problem shows beside the speed. Needs
`fp8_supported()` and refuses clearly otherwise.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

import torch

from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.modeling import NVILAModel
from nvila_core.train.fp8 import DEFAULT_MIN_FEATURES, enable_fp8, fp8_linear_names, fp8_supported

MODES = ("bf16", "fp8", "bf16-compiled", "fp8-compiled")
FIELDS = (
    "device", "preset", "mode", "layers", "batch", "seq", "fp8_linears", "step_ms", "tokens_per_s",
    "speedup_vs_bf16", "peak_mem_gib", "first_loss", "last_loss",
)  # fmt: skip


def _decoder_model(preset: str, layers: int) -> NVILAModel:
    config = NVILAConfig.preset(preset)
    config = dataclasses.replace(
        config, llm_config={**config.llm_config, "num_hidden_layers": layers}
    )
    return NVILAModel.from_config(config, device="cuda", dtype=torch.float32, seed=0)


def time_mode(
    preset: str, mode: str, layers: int, batch: int, seq: int, steps: int, warmup: int
) -> dict:
    """One mode's median step time; a fresh model per mode so optimiser state does not carry over."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = _decoder_model(preset, layers)
    fp8 = mode.startswith("fp8")
    converted = len(fp8_linear_names(model)) if fp8 else 0
    if fp8:
        enable_fp8(model, DEFAULT_MIN_FEATURES)
    decoder = model.llm.get_decoder()
    params = [p for p in decoder.layers.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    step_fn = torch.compile(decoder) if mode.endswith("compiled") else decoder
    hidden = model.config.llm_config["hidden_size"]
    generator = torch.Generator("cuda").manual_seed(0)
    embeds = torch.randn(batch, seq, hidden, device="cuda", generator=generator)
    # a regression target: the output is RMS-normalised, so a norm-based loss has no gradient
    target = torch.randn(batch, seq, hidden, device="cuda", generator=generator)
    losses, times = [], []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = step_fn(inputs_embeds=embeds).last_hidden_state
        loss = (out.float() - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
        losses.append(loss.item())
    step_s = sorted(times)[len(times) // 2]
    row = {
        "device": torch.cuda.get_device_name(),
        "preset": preset,
        "mode": mode,
        "layers": layers,
        "batch": batch,
        "seq": seq,
        "fp8_linears": converted,
        "step_ms": round(step_s * 1e3, 2),
        "tokens_per_s": round(batch * seq / step_s),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "first_loss": round(losses[0], 6),
        "last_loss": round(losses[-1], 6),
    }
    del model, decoder, step_fn, optimizer, params
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([r["mode"] for r in rows], [r["step_ms"] for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        ax.text(i, r["step_ms"], f"{r['speedup_vs_bf16']:.2f}x", ha="center", va="bottom")
    first = rows[0]
    ax.set_ylabel("training step (ms)")
    ax.set_title(
        f"{first['preset']}: {first['layers']} decoder layers, {first['batch']}x{first['seq']} "
        f"tokens\n{first['device']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for fp8_bench.csv/png")
    parser.add_argument("--preset", default="nvila-8b", help="model preset (config/models)")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the real width")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args(argv)
    ok, reason = fp8_supported()
    if not ok:
        raise SystemExit(f"fp8_bench needs an FP8-capable CUDA GPU and torchao: {reason}. Not run.")
    print(f"fp8_bench on {reason}")
    rows = []
    for mode in args.modes:
        row = time_mode(
            args.preset, mode, args.layers, args.batch, args.seq, args.steps, args.warmup
        )
        rows.append(row)
        print(
            ", ".join(
                f"{k}={row[k]}"
                for k in ("mode", "step_ms", "tokens_per_s", "first_loss", "last_loss")
            )
        )
    for row in rows:
        base = next((r for r in rows if r["mode"] == row["mode"].replace("fp8", "bf16")), row)
        row["speedup_vs_bf16"] = round(base["step_ms"] / row["step_ms"], 3)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "fp8_bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "fp8_bench.png")
    print(f"wrote {args.out / 'fp8_bench.csv'} and fp8_bench.png")


if __name__ == "__main__":
    main()
