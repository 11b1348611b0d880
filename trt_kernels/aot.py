"""Ahead-of-time compilation of the kernels to Orin PTX + cubin, runnable on a machine without a GPU.

Orin is sm_87. PTX ISA 8.5 because Triton's default (8.8, from its bundled CUDA 12.9 ptxas) cannot
be JIT-compiled by the CUDA 12.6 driver of JetPack 6 (trt.md §1.6); newer drivers load 8.5 too.
Output: ``<kernel>.ptx``, ``<kernel>.cubin`` and ``manifest.json`` describing how to launch each
kernel (the TensorRT plugin reads the PTX and launch rules from it).

    python -m trt_kernels.aot --out build/trt_kernels [--arch 87] [--ptx-version 85]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from trt_kernels.packing import GROUP_SIZE
from trt_kernels.w4a16 import GEMM_CONFIG, GEMV_CONFIG, w4a16_gemm_kernel, w4a16_gemv_kernel
from trt_kernels.w8a8 import INT8_CONFIG, int8_gemm_kernel

ORIN_ARCH = 87
JETPACK6_PTX_VERSION = 85
MANIFEST = "manifest.json"
_LAUNCH_KEYS = ("num_warps", "num_stages")


@dataclass(frozen=True)
class KernelSpec:
    """One kernel to compile: the runtime arguments in launch order and the fixed meta-parameters.

    ``aligned`` lists the arguments promised to be multiples of 16 (pointers: 16-byte aligned),
    which lets Triton vectorise loads; callers must honour it, so it is part of the manifest.
    """

    name: str
    fn: object
    signature: dict[str, str]
    config: dict[str, int]
    grid: tuple[str, str, str]
    aligned: tuple[str, ...]
    extra_constexprs: dict[str, int | bool] = field(default_factory=dict)

    @property
    def constexprs(self) -> dict[str, int | bool]:
        meta = {k: v for k, v in self.config.items() if k not in _LAUNCH_KEYS}
        return {**meta, **self.extra_constexprs}


_W4_SIGNATURE = {
    "x_ptr": "*fp16",
    "w_ptr": "*i8",
    "s_ptr": "*fp16",
    "M": "i32",
    "N": "i32",
    "K": "i32",
}

SPECS = {
    spec.name: spec
    for spec in (
        KernelSpec(
            name="w4a16_gemm",
            fn=w4a16_gemm_kernel,
            signature={**_W4_SIGNATURE, "y_ptr": "*fp16"},
            config=GEMM_CONFIG,
            grid=(f"cdiv(M, {GEMM_CONFIG['BLOCK_M']})", f"cdiv(N, {GEMM_CONFIG['BLOCK_N']})", "1"),
            aligned=("x_ptr", "w_ptr", "s_ptr", "y_ptr", "N", "K"),
            extra_constexprs={"GROUP": GROUP_SIZE, "ACC_FP16": True},
        ),
        KernelSpec(
            name="w4a16_gemv",
            fn=w4a16_gemv_kernel,
            signature={**_W4_SIGNATURE, "p_ptr": "*fp16"},
            config=GEMV_CONFIG,
            grid=(f"cdiv(N, {GEMV_CONFIG['BLOCK_N']})", "split_k", "M"),
            aligned=("x_ptr", "w_ptr", "s_ptr", "p_ptr", "N", "K"),
            extra_constexprs={"GROUP": GROUP_SIZE, "ACC_FP16": True},
        ),
        KernelSpec(
            name="w8a8_gemm",
            fn=int8_gemm_kernel,
            signature={
                "a_ptr": "*i8",
                "b_ptr": "*i8",
                "a_scale_ptr": "*fp32",
                "b_scale_ptr": "*fp32",
                "M": "i32",
                "N": "i32",
                "K": "i32",
                "c_ptr": "*fp16",
            },
            config=INT8_CONFIG,
            grid=(f"cdiv(M, {INT8_CONFIG['BLOCK_M']})", f"cdiv(N, {INT8_CONFIG['BLOCK_N']})", "1"),
            aligned=("a_ptr", "b_ptr", "a_scale_ptr", "b_scale_ptr", "c_ptr", "N", "K"),
            extra_constexprs={"SCALED": True},
        ),
    )
}


def compile_kernel(
    spec: KernelSpec, arch: int = ORIN_ARCH, ptx_version: int = JETPACK6_PTX_VERSION
):
    """Compile one kernel for ``sm_<arch>``; returns Triton's CompiledKernel (``.asm``, ``.metadata``)."""
    if not isinstance(spec.fn, triton.runtime.JITFunction):
        raise RuntimeError(
            "the kernels were defined under TRITON_INTERPRET=1, which cannot compile; "
            "run the AOT build in a process without TRITON_INTERPRET"
        )
    constexprs = spec.constexprs
    signature = {**spec.signature, **dict.fromkeys(constexprs, "constexpr")}
    attrs = {(spec.fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in spec.aligned}
    options = {
        "num_warps": spec.config["num_warps"],
        "num_stages": spec.config["num_stages"],
        "ptx_version": ptx_version,
        "enable_fp_fusion": True,  # fma.rn.f16x2 in the dequant-multiply-add chain
    }
    return triton.compile(
        ASTSource(spec.fn, signature, constexprs, attrs),
        target=GPUTarget("cuda", arch, 32),
        options=options,
    )


def ptx_entry_params(ptx: str) -> int:
    """Number of parameters of the PTX entry: Triton appends two scratch pointers to the signature."""
    entry = re.search(r"\.entry\s+\w+\s*\((.*?)\)", ptx, re.S)
    if entry is None:
        raise ValueError("no .entry in the PTX")
    return entry.group(1).count(".param")


def describe(spec: KernelSpec, kernel, arch: int, ptx_version: int) -> dict:
    """The manifest entry of one compiled kernel (files are named after ``spec.name``)."""
    meta = kernel.metadata
    ptx = kernel.asm["ptx"]
    return {
        "entry": meta.name,
        "ptx": f"{spec.name}.ptx",
        "cubin": f"{spec.name}.cubin",
        "ptx_sha256": hashlib.sha256(ptx.encode()).hexdigest(),
        "target": f"sm_{arch}",
        "ptx_version": f"{ptx_version // 10}.{ptx_version % 10}",
        "signature": [{"name": k, "type": v} for k, v in spec.signature.items()],
        "ptx_params": ptx_entry_params(ptx),
        "constexprs": spec.constexprs,
        "aligned_16": list(spec.aligned),
        "grid": list(spec.grid),
        "block": [meta.num_warps * 32, 1, 1],
        "num_warps": meta.num_warps,
        "num_stages": spec.config["num_stages"],
        "shared_mem": meta.shared,
        "global_scratch_size": meta.global_scratch_size,
    }


def build(
    out_dir: Path,
    arch: int = ORIN_ARCH,
    ptx_version: int = JETPACK6_PTX_VERSION,
    names: tuple[str, ...] = tuple(SPECS),
) -> dict:
    """Compile ``names`` into ``out_dir`` and write the manifest; returns it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kernels = {}
    for name in names:
        spec = SPECS[name]
        kernel = compile_kernel(spec, arch, ptx_version)
        if kernel.metadata.global_scratch_size:
            raise RuntimeError(f"{name} needs global scratch memory, which no AOT launcher passes")
        (out_dir / f"{name}.ptx").write_text(kernel.asm["ptx"])
        (out_dir / f"{name}.cubin").write_bytes(kernel.asm["cubin"])
        kernels[name] = describe(spec, kernel, arch, ptx_version)
    manifest = {"triton": triton.__version__, "kernels": kernels}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load(out_dir: Path, name: str) -> tuple[dict, str]:
    """A kernel's manifest entry and PTX text from a directory written by :func:`build`."""
    out_dir = Path(out_dir)
    entry = json.loads((out_dir / MANIFEST).read_text())["kernels"][name]
    ptx = (out_dir / entry["ptx"]).read_text()
    if hashlib.sha256(ptx.encode()).hexdigest() != entry["ptx_sha256"]:
        raise ValueError(f"{out_dir / entry['ptx']} does not match its manifest entry")
    return entry, ptx


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="directory for PTX, cubin, manifest"
    )
    parser.add_argument("--arch", type=int, default=ORIN_ARCH, help="SM version (87 = Orin)")
    parser.add_argument("--ptx-version", type=int, default=JETPACK6_PTX_VERSION, help="85 = 8.5")
    parser.add_argument("--kernels", nargs="+", choices=sorted(SPECS), default=list(SPECS))
    args = parser.parse_args(argv)
    manifest = build(args.out, args.arch, args.ptx_version, tuple(args.kernels))
    for name, entry in manifest["kernels"].items():
        print(f"{name}: {entry['target']} PTX {entry['ptx_version']}, smem {entry['shared_mem']} B")


if __name__ == "__main__":
    main()
