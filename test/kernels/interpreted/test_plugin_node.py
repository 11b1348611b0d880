"""End to end on CPU: what the rewritten plugin node computes (the W4A16 kernel on its packed
inputs) matches what onnxruntime computes for the original INT4 DequantizeLinear → MatMul."""

import ml_dtypes
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from trt_kernels import aot, onnx_rewrite
from trt_kernels.w4a16 import FP16_UNIT_ROUNDOFF, error_bound, w4a16_gemm, w4a16_gemv

K, N = 256, 64


def _model(rng) -> onnx.ModelProto:
    codes = rng.integers(-8, 8, (K, N), dtype=np.int8)
    scales = rng.uniform(5e-3, 2e-2, (K // 128, N)).astype(np.float16)
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["w", "s"], ["d"], axis=0, block_size=128),
            helper.make_node("MatMul", ["x", "d"], ["y"], "mm"),
        ],
        "one_pair",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4, N])],
        [
            numpy_helper.from_array(codes.astype(ml_dtypes.int4), "w"),
            numpy_helper.from_array(scales, "s"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


@pytest.mark.parametrize("kernel", ["gemm", "gemv"])
def test_plugin_inputs_reproduce_onnxruntime(kernel):
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    model = _model(rng)
    x = rng.uniform(-1, 1, (4, K)).astype(np.float16)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})

    rewritten, _ = onnx_rewrite.rewrite(model, kernel=kernel, split_k=2)
    node = next(n for n in rewritten.graph.node if n.domain == "trt_kernels")
    inits = {i.name: numpy_helper.to_array(i) for i in rewritten.graph.initializer}
    qweight, scales = (torch.tensor(inits[name]) for name in node.input[1:])
    if kernel == "gemm":
        y = w4a16_gemm(torch.from_numpy(x), qweight, scales)
    else:
        y = w4a16_gemv(torch.from_numpy(x), qweight, scales, split_k=2)

    w = numpy_helper.to_array(model.graph.initializer[0]).astype(np.float64)
    w *= np.repeat(
        numpy_helper.to_array(model.graph.initializer[1]).astype(np.float64), 128, axis=0
    )
    exact = x.astype(np.float64) @ w
    # both sides round: the kernel within error_bound, onnxruntime at least once to fp16
    bound = error_bound(np.abs(x.astype(np.float64)) @ np.abs(w), K) * 2
    bound += FP16_UNIT_ROUNDOFF * np.abs(exact)
    assert (np.abs(y.numpy().astype(np.float64) - expected) <= bound).all()


def test_aot_refuses_interpreted_kernels():
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        aot.compile_kernel(aot.SPECS["w4a16_gemm"])
