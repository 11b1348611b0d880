"""The plugin module imports without tensorrt, refuses clearly without it, and wires the AOT kernels.

No TensorRT in CI: the registration is exercised against a stand-in ``tensorrt.plugin`` that records
what the decorated functions return, with concrete shapes in place of symbolic ones.
"""

import importlib
import math
import sys
import types

import pytest

from trt_kernels import plugin


def test_module_imports_without_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    importlib.reload(plugin)
    assert plugin.GEMM_PLUGIN == "w4a16_gemm" and plugin.PLUGIN_NAMESPACE == "trt_kernels"


def test_missing_tensorrt_gives_the_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(plugin.TensorRTUnavailable, match=r"TensorRT >= 10\.9.*JetPack 6"):
        plugin.register_plugins()


def test_tensorrt_10_3_is_refused_with_the_same_advice(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0.30"))
    with pytest.raises(
        plugin.TensorRTUnavailable, match=r"found TensorRT 10\.3\.0\.30.*DequantizeLinear"
    ):
        plugin.register_plugins()


@pytest.mark.parametrize(
    ("version", "supported"),
    [("10.3.0.30", False), ("10.8.0", False), ("10.9.0.34", True), ("11.4.0.106", True)],
)
def test_plugin_support_starts_at_tensorrt_10_9(version, supported):
    assert plugin.plugin_supported(version) is supported


class _Shape(list):
    def numel(self):
        return math.prod(self)


class _Desc:
    def __init__(self, *shape):
        self.shape_expr = _Shape(shape)
        self.ndim = len(shape)

    def like(self):
        return _Desc(*self.shape_expr)


def _fake_tensorrt():
    """Just the tensorrt.plugin surface register_plugins uses, recording the decorated functions."""
    funcs = {}

    def decorator(kind):
        return lambda plugin_id: lambda fn: funcs.setdefault((kind, plugin_id), fn)

    class LaunchParams:
        grid_x = grid_y = grid_z = block_x = shared_mem = None

    trtp = types.SimpleNamespace(
        TensorDesc=_Desc,
        register=decorator("register"),
        autotune=decorator("autotune"),
        aot_impl=decorator("aot_impl"),
        AutoTuneCombination=lambda types_, layouts: (types_, layouts),
        KernelLaunchParams=LaunchParams,
        SymIntExprs=types.SimpleNamespace(from_tuple=tuple),
        SymInt32=int,
        cdiv=lambda a, b: -(-a // b),
        from_shape_expr=lambda shape, dtype: (tuple(shape), dtype),
    )
    trt = types.SimpleNamespace(__version__="10.9.0.34", float16="HALF", plugin=trtp)
    return trt, trtp, funcs


def test_registration_launches_the_manifest_kernels(monkeypatch, aot_artifacts):
    trt, trtp, funcs = _fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    plugin.register_plugins(aot_artifacts)
    gemm, gemv = (f"trt_kernels::{name}" for name in ("w4a16_gemm", "w4a16_gemv"))
    x, qweight, scales = _Desc(2, 3, 256), _Desc(256, 96), _Desc(2, 192)  # M = 6, N = 192, K = 256

    assert funcs[("register", gemm)](x, qweight, scales).shape_expr == [2, 3, 192]
    assert funcs[("autotune", gemm)](x, qweight, scales, ()) == [
        ("FP16, INT8, FP16, FP16", "LINEAR")
    ]
    name, ptx, params, args = funcs[("aot_impl", gemm)](x, qweight, scales, ())
    assert name == b"w4a16_gemm_kernel"
    assert ptx == (aot_artifacts / "w4a16_gemm.ptx").read_bytes()
    assert (params.grid_x, params.grid_y, params.grid_z, params.block_x) == (1, 3, 1, 128)
    assert args == (6, 192, 256)

    assert funcs[("register", gemv)](x, qweight, scales, 4) == ((4, 2, 3, 192), "HALF")
    name, ptx, params, args = funcs[("aot_impl", gemv)](x, qweight, scales, 4, ())
    assert name == b"w4a16_gemv_kernel" and b".target sm_87" in ptx
    assert (params.grid_x, params.grid_y, params.grid_z) == (2, 4, 6)
    assert args == (6, 192, 256)
