"""The W4A16 kernels as TensorRT plugins (``tensorrt.plugin`` QDP with AOT implementations).

Two plugins in namespace ``trt_kernels``, both taking ``(x fp16 [..., K], qweight int8 [K, N/2],
scales fp16 [K/128, N])``, the layout of :mod:`trt_kernels.packing`:

* ``w4a16_gemm``: output fp16 ``[..., N]`` (any number of tokens, tensor cores);
* ``w4a16_gemv``: output fp16 ``[split_k, ..., N]``, the split-K partial sums, which the ONNX
  rewrite follows with a ``ReduceSum`` over axis 0 (decode graphs, one token).

The AOT implementation hands TensorRT the sm_87 PTX of :mod:`trt_kernels.aot`, so the engine runs
in plain C++ TensorRT with no Python. That needs TensorRT >= 10.9 (QDP: 10.6, AOT QDP: 10.9),
i.e. JetPack >= 7.2 on Orin. JetPack 6 ships TensorRT 10.3: there the graph keeps TensorRT's native
INT4 ``DequantizeLinear → MatMul``, which is the default. tensorrt is imported only inside
:func:`register_plugins`, so this module imports anywhere.

Not verified on a device (no GPU in CI): that TensorRT's AOT launcher tolerates the two trailing
scratch-pointer parameters Triton adds to every PTX entry (``ptx_params`` in the manifest; both are
unused, the kernels need no scratch memory).

Deliberately no ``from __future__ import annotations``: ``tensorrt.plugin`` reads the annotations
of the registered functions as objects.
"""

from pathlib import Path

PLUGIN_NAMESPACE = "trt_kernels"
GEMM_PLUGIN = "w4a16_gemm"
GEMV_PLUGIN = "w4a16_gemv"
MIN_TENSORRT = (10, 9)

_MISSING = (
    "The W4A16 TensorRT plugins need the `tensorrt` Python package, TensorRT >= 10.9 "
    "(tensorrt.plugin with AOT implementations). On JetPack 6 (TensorRT 10.3) keep the default "
    "INT4 DequantizeLinear -> MatMul graph, which TensorRT runs natively, and do not apply "
    "trt_kernels.onnx_rewrite."
)


class TensorRTUnavailable(ImportError):
    """tensorrt is missing or older than 10.9; the message says what to do instead."""


def plugin_supported(tensorrt_version: str) -> bool:
    """True when a TensorRT of this version (e.g. ``"10.3.0.30"``) has AOT Python plugins."""
    major, minor = (int(part) for part in tensorrt_version.split(".")[:2])
    return (major, minor) >= MIN_TENSORRT


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as err:
        raise TensorRTUnavailable(_MISSING) from err
    if not plugin_supported(trt.__version__):
        raise TensorRTUnavailable(f"found TensorRT {trt.__version__}. {_MISSING}")
    import tensorrt.plugin as trtp

    return trt, trtp


def _kernel(name: str, artifacts: Path | None, arch: int) -> tuple[dict, str]:
    """Manifest entry and PTX: read from ``artifacts`` (``python -m trt_kernels.aot``) or compiled now."""
    from trt_kernels import aot

    if artifacts is not None:
        return aot.load(artifacts, name)
    spec = aot.SPECS[name]
    kernel = aot.compile_kernel(spec, arch)
    return aot.describe(spec, kernel, arch, aot.JETPACK6_PTX_VERSION), kernel.asm["ptx"]


def register_plugins(artifacts: Path | None = None, arch: int = 87) -> None:
    """Register both plugins with TensorRT's plugin registry (call once, before parsing the ONNX).

    ``artifacts``: a directory from ``python -m trt_kernels.aot``; without it the kernels are
    compiled here for ``sm_<arch>``.
    """
    trt, trtp = _import_tensorrt()
    kernels = {name: _kernel(name, artifacts, arch) for name in (GEMM_PLUGIN, GEMV_PLUGIN)}
    io_types = trtp.AutoTuneCombination("FP16, INT8, FP16, FP16", "LINEAR")

    def launch(name: str, grid: tuple, extra: tuple):
        """The aot_impl result: kernel name, PTX, launch shape, then the i32 args (M, N, K)."""
        entry, ptx = kernels[name]
        params = trtp.KernelLaunchParams()
        params.grid_x, params.grid_y, params.grid_z = grid
        params.block_x = entry["block"][0]
        params.shared_mem = entry["shared_mem"]
        args = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in extra])
        return entry["entry"].encode(), ptx.encode(), params, args

    def dims(x, qweight):
        """(M, N, K): the rows of x, twice the packed weight's width, x's last dimension."""
        k = x.shape_expr[x.ndim - 1]
        return x.shape_expr.numel() // k, qweight.shape_expr[1] * 2, k

    @trtp.register(f"{PLUGIN_NAMESPACE}::{GEMM_PLUGIN}")
    def gemm_desc(
        x: trtp.TensorDesc, qweight: trtp.TensorDesc, scales: trtp.TensorDesc
    ) -> trtp.TensorDesc:
        out = x.like()
        out.shape_expr[x.ndim - 1] = qweight.shape_expr[1] * 2
        return out

    @trtp.autotune(f"{PLUGIN_NAMESPACE}::{GEMM_PLUGIN}")
    def gemm_autotune(x, qweight, scales, outputs):
        return [io_types]

    @trtp.aot_impl(f"{PLUGIN_NAMESPACE}::{GEMM_PLUGIN}")
    def gemm_aot(x, qweight, scales, outputs):
        meta = kernels[GEMM_PLUGIN][0]["constexprs"]
        m, n, k = dims(x, qweight)
        grid = (trtp.cdiv(m, meta["BLOCK_M"]), trtp.cdiv(n, meta["BLOCK_N"]), 1)
        return launch(GEMM_PLUGIN, grid, (m, n, k))

    @trtp.register(f"{PLUGIN_NAMESPACE}::{GEMV_PLUGIN}")
    def gemv_desc(
        x: trtp.TensorDesc, qweight: trtp.TensorDesc, scales: trtp.TensorDesc, split_k: int
    ) -> trtp.TensorDesc:
        rows = [x.shape_expr[i] for i in range(x.ndim - 1)]
        shape = (split_k, *rows, qweight.shape_expr[1] * 2)
        return trtp.from_shape_expr(shape, dtype=trt.float16)

    @trtp.autotune(f"{PLUGIN_NAMESPACE}::{GEMV_PLUGIN}")
    def gemv_autotune(x, qweight, scales, split_k, outputs):
        return [io_types]

    @trtp.aot_impl(f"{PLUGIN_NAMESPACE}::{GEMV_PLUGIN}")
    def gemv_aot(x, qweight, scales, split_k, outputs):
        meta = kernels[GEMV_PLUGIN][0]["constexprs"]
        m, n, k = dims(x, qweight)
        grid = (trtp.cdiv(n, meta["BLOCK_N"]), split_k, m)
        return launch(GEMV_PLUGIN, grid, (m, n, k))
