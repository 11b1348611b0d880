"""The ONNX rewrite swaps exactly the INT4 block-DQ → MatMul pairs the plugin can run, reversibly."""

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trt_kernels import onnx_rewrite
from trt_kernels.plugin import GEMM_PLUGIN, GEMV_PLUGIN, PLUGIN_NAMESPACE

K, N = 256, 64
RNG = np.random.default_rng(0)


def _int4(name, k, n):
    codes = RNG.integers(-8, 8, (k, n), dtype=np.int8)
    return numpy_helper.from_array(codes.astype(ml_dtypes.int4), name)


def _fp16(name, shape, scale=0.02):
    return numpy_helper.from_array((RNG.uniform(0.5, 1.5, shape) * scale).astype(np.float16), name)


def _dq(weight, scales, out, block_size=128):
    return helper.make_node(
        "DequantizeLinear", [weight, scales], [out], f"dq_{weight}", axis=0, block_size=block_size
    )


def build_model() -> onnx.ModelProto:
    """Three replaceable pairs (mm1, and mm7a/mm7b sharing one weight) among six look-alikes."""
    inits = [
        _int4("w1", K, N), _fp16("s1", (2, N)),
        _int4("w7", K, N), _fp16("s7", (2, N)),
        _int4("w3", K, N), _fp16("s3", (4, N)),  # block size 64
        numpy_helper.from_array(RNG.integers(-127, 128, (N, N), dtype=np.int8), "w2"),
        _fp16("s2", ()),  # INT8, per tensor
        _fp16("w4", (N, N)),  # plain fp16 weight
        _int4("w6", K, N), _fp16("s6", (2, N)),  # consumed by a Transpose
        _int4("w8", K, 40), _fp16("s8", (2, 40)),  # N = 40: not 16-aligned
        _int4("w9", K, N), _fp16("s9", (2, N)),  # with a zero-point input
        numpy_helper.from_array(np.zeros((2, N), ml_dtypes.int4), "z9"),
    ]  # fmt: skip
    nodes = [
        _dq("w1", "s1", "d1"),
        helper.make_node("MatMul", ["x", "d1"], ["y1"], "mm1"),
        _dq("w7", "s7", "d7"),
        helper.make_node("MatMul", ["x", "d7"], ["y7a"], "mm7a"),
        helper.make_node("MatMul", ["x2", "d7"], ["y7b"], "mm7b"),
        _dq("w3", "s3", "d3", block_size=64),
        helper.make_node("MatMul", ["x", "d3"], ["y3"], "mm3"),
        helper.make_node("DequantizeLinear", ["w2", "s2"], ["d2"], "dq_w2"),
        helper.make_node("MatMul", ["y1", "d2"], ["y2"], "mm2"),
        helper.make_node("MatMul", ["y2", "w4"], ["y4"], "mm4"),
        _dq("w6", "s6", "d6"),
        helper.make_node("Transpose", ["d6"], ["t6"], "tr6"),
        helper.make_node("MatMul", ["y1", "t6"], ["y6"], "mm6"),
        _dq("w8", "s8", "d8"),
        helper.make_node("MatMul", ["x", "d8"], ["y8"], "mm8"),
        helper.make_node("DequantizeLinear", ["w9", "s9", "z9"], ["d9"], axis=0, block_size=128),
        helper.make_node("MatMul", ["x", "d9"], ["y9"], "mm9"),
    ]
    fp16 = TensorProto.FLOAT16
    graph = helper.make_graph(
        nodes,
        "w4a16_pairs",
        [
            helper.make_tensor_value_info("x", fp16, [2, K]),
            helper.make_tensor_value_info("x2", fp16, [3, K]),
        ],
        [
            helper.make_tensor_value_info(name, fp16, shape)
            for name, shape in [
                ("y3", [2, N]),
                ("y4", [2, N]),
                ("y6", [2, K]),
                ("y7a", [2, N]),
                ("y7b", [3, N]),
                ("y8", [2, 40]),
                ("y9", [2, N]),
            ]
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def model():
    return build_model()


def _ops(model):
    return [(n.domain, n.op_type, n.name) for n in model.graph.node]


def test_gemm_rewrite_replaces_exactly_the_int4_block_pairs(model):
    rewritten, replaced = onnx_rewrite.rewrite(model)
    assert sorted(replaced) == ["mm1", "mm7a", "mm7b"]
    plugins = [n for n in rewritten.graph.node if n.domain == PLUGIN_NAMESPACE]
    assert sorted(n.name for n in plugins) == ["mm1", "mm7a", "mm7b"]
    for node in plugins:
        assert node.op_type == GEMM_PLUGIN
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == {"plugin_namespace": PLUGIN_NAMESPACE.encode(), "aot": 1}
    kept = {(op, name) for _, op, name in _ops(rewritten) if op != GEMM_PLUGIN}
    assert kept == {(op, name) for _, op, name in _ops(model) if name not in
                    {"mm1", "mm7a", "mm7b", "dq_w1", "dq_w7"}}  # fmt: skip
    inits = {i.name: i for i in rewritten.graph.initializer}
    assert "w1" not in inits and "w7" not in inits and {"s1", "s7", "w3", "w6", "w8"} <= set(inits)
    packed = numpy_helper.to_array(inits["w1_w4a16"])
    assert packed.dtype == np.int8 and packed.shape == (K, N // 2)
    original_w1 = next(i for i in model.graph.initializer if i.name == "w1")
    assert packed.tobytes() == original_w1.raw_data
    assert next(node.input for node in plugins if node.name == "mm7b") == ["x2", "w7_w4a16", "s7"]
    assert helper.make_opsetid(PLUGIN_NAMESPACE, 1) in rewritten.opset_import
    onnx.checker.check_model(rewritten)
    onnx_rewrite.check_inverse(model, rewritten)


def test_gemv_rewrite_adds_the_split_k_reduction(model):
    rewritten, replaced = onnx_rewrite.rewrite(model, kernel="gemv", split_k=2)
    assert sorted(replaced) == ["mm1", "mm7a", "mm7b"]
    nodes = list(rewritten.graph.node)
    for i, node in enumerate(nodes):
        if node.op_type == GEMV_PLUGIN:
            assert {a.name: a.i for a in node.attribute}["split_k"] == 2
            reduce = nodes[i + 1]
            assert reduce.op_type == "ReduceSum" and reduce.input[0] == node.output[0]
    onnx_rewrite.check_inverse(model, rewritten)
    # split_k * 64 must divide K: 256 allows 4 but not 8, so nothing is replaced then
    assert onnx_rewrite.rewrite(model, kernel="gemv", split_k=8)[1] == []


def test_restored_graph_computes_the_same_in_onnxruntime(model):
    ort = pytest.importorskip("onnxruntime")
    feeds = {
        "x": RNG.uniform(-1, 1, (2, K)).astype(np.float16),
        "x2": RNG.uniform(-1, 1, (3, K)).astype(np.float16),
    }

    def run(m):
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, feeds)

    for kernel in ("gemm", "gemv"):
        restored = onnx_rewrite.restore(onnx_rewrite.rewrite(model, kernel=kernel)[0])
        for before, after in zip(run(model), run(restored), strict=True):
            np.testing.assert_array_equal(before, after)


def test_inverse_check_catches_a_changed_weight(model):
    rewritten, _ = onnx_rewrite.rewrite(model)
    packed = next(i for i in rewritten.graph.initializer if i.name == "w1_w4a16")
    raw = bytearray(packed.raw_data)
    raw[0] ^= 0x01
    packed.raw_data = bytes(raw)
    with pytest.raises(ValueError, match="w1"):
        onnx_rewrite.check_inverse(model, rewritten)


def test_cli_keeps_the_dq_graph_for_tensorrt_10_3(model, tmp_path):
    source = tmp_path / "model.onnx"
    onnx.save(model, source)
    with pytest.raises(SystemExit, match=r"10\.3.*DequantizeLinear"):
        onnx_rewrite.main(
            [str(source), str(tmp_path / "out.onnx"), "--tensorrt-version", "10.3.0.30"]
        )
    assert not (tmp_path / "out.onnx").exists()
    onnx_rewrite.main([str(source), str(tmp_path / "out.onnx"), "--tensorrt-version", "10.9.0.34"])
    written = onnx.load(tmp_path / "out.onnx")
    assert sum(n.op_type == GEMM_PLUGIN for n in written.graph.node) == 3
