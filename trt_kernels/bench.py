"""GPU benchmark: the W4A16 and W8A8 kernels against torch's FP16 matmul, written as CSV + PNG.

    python -m trt_kernels.bench --out outputs/trt_kernels_bench [--tokens 1 16 128] [--quick]

Needs a CUDA GPU (and TRITON_INTERPRET unset) and refuses clearly otherwise. The kernels are
JIT-compiled for the GPU at hand, which need not be an Orin: numbers from a desktop GPU say how
the kernels compare with cuBLAS there, not what Orin will do. For every Qwen2 linear shape and
token count it checks each kernel against the exact product (``w4a16.error_bound``; W8A8: one FP16
rounding) and times it against ``x @ W`` in FP16 with the same dequantised weight. Both FP16 and
FP32 accumulation are timed, which measures the NVILA FP16-accumulation speed-up directly.
Exits 1 if any result is outside its bound.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np
import torch
import triton.testing

from trt_kernels import packing
from trt_kernels.w4a16 import choose_split_k, error_bound, w4a16_gemm, w4a16_gemv
from trt_kernels.w8a8 import w8a8_linear

SHAPES = {  # layer: (N, K) of the Qwen2 decoder linears (y = x @ W, W is K x N)
    "1.5B qkv": (2048, 1536),
    "1.5B o": (1536, 1536),
    "1.5B gate_up": (17920, 1536),
    "1.5B down": (1536, 8960),
    "7B qkv": (4608, 3584),
    "7B down": (3584, 18944),
}
QUICK = ("1.5B qkv", "1.5B down")
GEMV_MAX_TOKENS = 16
FIELDS = (
    "device", "kernel", "layer", "M", "N", "K", "ms", "torch_fp16_ms", "speedup",
    "max_abs_err", "within_bound", "torch_fp16_max_abs_err",
)  # fmt: skip


def _require_gpu() -> None:
    if not torch.cuda.is_available():
        raise SystemExit(
            "trt_kernels.bench needs a CUDA GPU, and torch.cuda.is_available() is False "
            f"(torch {torch.__version__}). Not run. On CPU, check the kernels with "
            "`pytest test/kernels` (Triton interpreter)."
        )
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("unset TRITON_INTERPRET: the benchmark times compiled kernels")


def _time(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def _w4a16_rows(layer, n, k, tokens, sms, rng):
    packed = packing.quantize(rng.standard_normal((k, n)).astype(np.float32) * 0.02)
    qweight = torch.from_numpy(packed.qweight).cuda()
    scales = torch.from_numpy(packed.scales).cuda()
    w = torch.from_numpy(packed.dequantize()).cuda()
    w_fp16 = w.half()
    split = choose_split_k(n, k, sms)
    for m in tokens:
        x = (torch.rand(m, k, device="cuda") * 2 - 1).half()
        exact = x.double() @ w.double()
        abs_dot = x.double().abs() @ w.double().abs()
        base_ms = _time(lambda x=x: x @ w_fp16)
        base_err = ((x @ w_fp16).double() - exact).abs().max().item()
        candidates = {
            "w4a16_gemm": (lambda x=x: w4a16_gemm(x, qweight, scales), True),
            "w4a16_gemm_fp32acc": (
                lambda x=x: w4a16_gemm(x, qweight, scales, acc_fp16=False),
                False,
            ),
        }
        if m <= GEMV_MAX_TOKENS:
            candidates[f"w4a16_gemv_split{split}"] = (
                lambda x=x: w4a16_gemv(x, qweight, scales, split_k=split),
                True,
            )
            candidates[f"w4a16_gemv_split{split}_fp32acc"] = (
                lambda x=x: w4a16_gemv(x, qweight, scales, split_k=split, acc_fp16=False),
                False,
            )
        for kernel, (fn, acc_fp16) in candidates.items():
            err = (fn().double() - exact).abs()
            within = bool((err <= error_bound(abs_dot, k, acc_fp16)).all())
            yield _row(
                kernel, layer, m, n, k, _time(fn), base_ms, err.max().item(), within, base_err
            )


def _w8a8_rows(layer, n, k, tokens):
    b = torch.randint(-127, 128, (n, k), dtype=torch.int8, device="cuda")
    b_scale = torch.rand(n, device="cuda") * 1e-3 + 1e-4
    w_fp16 = (b.float() * b_scale[:, None]).t().contiguous().half()
    for m in tokens:
        a = torch.randint(-127, 128, (m, k), dtype=torch.int8, device="cuda")
        a_scale = torch.rand(m, device="cuda") * 1e-2 + 1e-3
        x = (a.float() * a_scale[:, None]).half()
        exact = (
            (a.double() @ b.double().t()) * a_scale.double()[:, None] * b_scale.double()[None, :]
        )
        err = (w8a8_linear(a, a_scale, b, b_scale).double() - exact).abs()
        within = bool((err <= (2.0**-11 + 3 * 2.0**-24) * exact.abs() + 2.0**-25).all())
        base_ms = _time(lambda x=x: x @ w_fp16)
        ms = _time(lambda a=a, a_scale=a_scale: w8a8_linear(a, a_scale, b, b_scale))
        yield _row("w8a8_gemm", layer, m, n, k, ms, base_ms, err.max().item(), within, float("nan"))


def _row(kernel, layer, m, n, k, ms, base_ms, err, within, base_err) -> dict:
    return {
        "device": torch.cuda.get_device_name(),
        "kernel": kernel,
        "layer": layer,
        "M": m,
        "N": n,
        "K": k,
        "ms": round(ms, 5),
        "torch_fp16_ms": round(base_ms, 5),
        "speedup": round(base_ms / ms, 3),
        "max_abs_err": f"{err:.3g}",
        "within_bound": within,
        "torch_fp16_max_abs_err": f"{base_err:.3g}",
    }


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted({(r["layer"], r["M"]) for r in rows}, key=lambda c: (c[1], c[0]))
    kernels = sorted({r["kernel"] for r in rows})
    speed = {(r["kernel"], r["layer"], r["M"]): r["speedup"] for r in rows}
    width = 0.8 / len(kernels)
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(cases) * len(kernels) / 2), 5))
    for i, kernel in enumerate(kernels):
        values = [speed.get((kernel, layer, m), 0.0) for layer, m in cases]
        ax.bar(np.arange(len(cases)) + i * width, values, width, label=kernel)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(cases)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{layer}\nM={m}" for layer, m in cases], fontsize=7)
    ax.set_ylabel("speed-up vs torch fp16 matmul")
    ax.set_title(f"trt_kernels on {rows[0]['device']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/trt_kernels_bench"))
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 4, 16, 128, 512])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    args = parser.parse_args(argv)
    _require_gpu()
    args.out.mkdir(parents=True, exist_ok=True)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rng = np.random.default_rng(0)
    rows = []
    for layer in QUICK if args.quick else SHAPES:
        n, k = SHAPES[layer]
        for row in (
            *_w4a16_rows(layer, n, k, args.tokens, sms, rng),
            *_w8a8_rows(layer, n, k, args.tokens),
        ):
            rows.append(row)
            print(
                ", ".join(f"{key}={row[key]}" for key in ("kernel", "layer", "M", "ms", "speedup"))
            )
    with open(args.out / "bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    _plot(rows, args.out / "bench.png")
    bad = [r for r in rows if not r["within_bound"]]
    print(
        f"wrote {args.out / 'bench.csv'} and bench.png: {len(rows)} rows, {len(bad)} out of bound"
    )
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
