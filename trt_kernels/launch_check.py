"""GPU check of the AOT artifacts: launch the PTX exactly as the TensorRT plugin's manifest says.

    python -m trt_kernels.launch_check --out outputs/trt_kernels_launch [--arch 90]

TensorRT's AOT plugin path gets only what `aot.build` writes: the PTX (JIT-compiled by the
driver), the entry name, the grid rule, the block size, the shared-memory size, and the argument
order (tensor inputs, the i32 scalars, the output; Triton's two scratch pointers last). On Orin
that path cannot be tried without TensorRT; here the same manifest drives a raw driver launch
(cupy's `RawModule`, i.e. cuModuleLoad + cuLaunchKernel) on the GPU at hand, with PTX ISA 8.5 as
for JetPack 6, and the result is compared with the Triton-launched kernel and the exact product.
A wrong grid rule, block size, shared-memory size or argument order shows up as a mismatch.
Writes `launch_check.json`; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch

from trt_kernels import aot, packing
from trt_kernels.w4a16 import error_bound, gemv_partials, w4a16_gemm
from trt_kernels.w8a8 import w8a8_linear

CASES = {  # kernel: list of (M, N, K)
    "w4a16_gemm": [(128, 1536, 1536), (77, 2048, 1536)],
    "w4a16_gemv": [(1, 1536, 8960), (4, 2048, 1536)],
    "w8a8_gemm": [(197, 1152, 1152), (64, 4304, 1152)],
}
GEMV_SPLIT_K = 4


def grid_size(rule: str, values: dict[str, int]) -> int:
    """One manifest grid rule: an integer, a name (``M``, ``split_k``) or ``cdiv(NAME, INT)``."""
    rule = rule.strip()
    if rule.isdigit():
        return int(rule)
    if rule in values:
        return values[rule]
    match = re.fullmatch(r"cdiv\((\w+),\s*(\d+)\)", rule)
    if match is None or match.group(1) not in values:
        raise ValueError(f"unknown grid rule {rule!r}")
    return -(-values[match.group(1)] // int(match.group(2)))


def launch(entry: dict, module, tensors: dict[str, torch.Tensor], scalars: dict[str, int]) -> None:
    """cuLaunchKernel with the manifest's grid, block and shared memory, arguments by signature."""
    import cupy

    kernel = module.get_function(entry["entry"])
    if entry["shared_mem"] > 48 * 1024:
        kernel.max_dynamic_shared_size_bytes = entry["shared_mem"]
    args = []
    for param in entry["signature"]:
        name, kind = param["name"], param["type"]
        if kind.startswith("*"):
            args.append(np.uint64(tensors[name].data_ptr()))
        elif kind == "i32":
            args.append(np.int32(scalars[name]))
        else:
            raise ValueError(f"unsupported argument type {kind} for {name}")
    args += [np.uint64(0)] * (entry["ptx_params"] - len(entry["signature"]))  # scratch pointers
    grid = tuple(grid_size(rule, scalars) for rule in entry["grid"])
    torch.cuda.synchronize()
    kernel(grid, tuple(entry["block"]), tuple(args), shared_mem=entry["shared_mem"])
    cupy.cuda.runtime.deviceSynchronize()


def check_w4a16(entry, module, name: str, m: int, n: int, k: int, rng) -> dict:
    packed = packing.quantize(rng.standard_normal((k, n)).astype(np.float32) * 0.02)
    qweight = torch.from_numpy(packed.qweight).cuda()
    scales = torch.from_numpy(packed.scales).cuda()
    w = torch.from_numpy(packed.dequantize()).cuda().double()
    x = (torch.rand(m, k, device="cuda") * 2 - 1).half()
    tensors = {"x_ptr": x, "w_ptr": qweight, "s_ptr": scales}
    scalars = {"M": m, "N": n, "K": k}
    if name == "w4a16_gemm":
        out = torch.full((m, n), float("nan"), dtype=torch.float16, device="cuda")
        launch(entry, module, {**tensors, "y_ptr": out}, scalars)
        result, jit = out, w4a16_gemm(x, qweight, scales)
    else:
        out = torch.full((GEMV_SPLIT_K, m, n), float("nan"), dtype=torch.float16, device="cuda")
        launch(entry, module, {**tensors, "p_ptr": out}, {**scalars, "split_k": GEMV_SPLIT_K})
        jit = gemv_partials(x, qweight, scales, GEMV_SPLIT_K).sum(0, dtype=torch.float32)
        result = out.sum(0, dtype=torch.float32)
    exact = x.double() @ w
    bound = error_bound(x.double().abs() @ w.abs(), k, acc_fp16=True)  # the bench's bound
    return _row(name, m, n, k, result, jit, exact, bound)


def check_w8a8(entry, module, m: int, n: int, k: int) -> dict:
    a = torch.randint(-127, 128, (m, k), dtype=torch.int8, device="cuda")
    b = torch.randint(-127, 128, (n, k), dtype=torch.int8, device="cuda")
    a_scale = torch.rand(m, device="cuda") * 1e-2 + 1e-3
    b_scale = torch.rand(n, device="cuda") * 1e-3 + 1e-4
    out = torch.full((m, n), float("nan"), dtype=torch.float16, device="cuda")
    tensors = {"a_ptr": a, "b_ptr": b, "a_scale_ptr": a_scale, "b_scale_ptr": b_scale, "c_ptr": out}
    launch(entry, module, tensors, {"M": m, "N": n, "K": k})
    exact = (a.double() @ b.double().t()) * a_scale.double()[:, None] * b_scale.double()[None, :]
    bound = (2.0**-11 + 3 * 2.0**-24) * exact.abs() + 2.0**-25
    return _row("w8a8_gemm", m, n, k, out, w8a8_linear(a, a_scale, b, b_scale), exact, bound)


def _row(name, m, n, k, result, jit, exact, bound) -> dict:
    err = (result.double() - exact).abs()
    return {
        "kernel": name,
        "M": m,
        "N": n,
        "K": k,
        "finite": bool(torch.isfinite(result).all()),
        "within_bound": bool((err <= bound).all()),
        "max_abs_err": float(err.max()),
        "max_abs_diff_vs_triton_launch": float((result.float() - jit.float()).abs().max()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="artifacts + launch_check.json")
    parser.add_argument("--arch", type=int, help="SM version to build for (default: this GPU's)")
    parser.add_argument("--ptx-version", type=int, default=aot.JETPACK6_PTX_VERSION)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("trt_kernels.launch_check needs a CUDA GPU (and cupy). Not run.")
    import cupy

    major, minor = torch.cuda.get_device_capability()
    arch = args.arch or major * 10 + minor
    manifest = aot.build(args.out, arch, args.ptx_version)
    rng = np.random.default_rng(0)
    rows = []
    for name, cases in CASES.items():
        entry, _ = aot.load(args.out, name)
        module = cupy.RawModule(path=str(args.out / entry["ptx"]))  # the driver JITs the PTX
        for m, n, k in cases:
            row = (
                check_w8a8(entry, module, m, n, k)
                if name == "w8a8_gemm"
                else check_w4a16(entry, module, name, m, n, k, rng)
            )
            rows.append(row)
            print(", ".join(f"{key}={value}" for key, value in row.items()))
    report = {
        "device": torch.cuda.get_device_name(),
        "arch": f"sm_{arch}",
        "ptx_version": args.ptx_version,
        "triton": manifest["triton"],
        "rows": rows,
    }
    (args.out / "launch_check.json").write_text(json.dumps(report, indent=2) + "\n")
    bad = [r for r in rows if not (r["finite"] and r["within_bound"])]
    print(f"{len(rows)} launches, {len(bad)} wrong; wrote {args.out / 'launch_check.json'}")
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
