"""The TensorRT 10.3 rules check accepts our exports and names what breaks the rules."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nvila_core.export.qdq import int4_tensor
from nvila_core.export.trt_rules import check_file, check_model


@pytest.mark.parametrize("export", ["fp32_export", "quant_export"])
@pytest.mark.parametrize("graph", ["vision", "projector", "llm"])
def test_our_exports_pass(request, export, graph):
    assert check_file(request.getfixturevalue(export) / f"{graph}.onnx") == []


def _int8_matmul(
    act_zero_point=0, weight_zero_point=0, act_zp_type=TensorProto.INT8, act_scale_shape=()
):
    """x -> Q -> DQ -> MatMul(DQ(int8 weight)): the W8A8 pattern, with knobs to break it."""
    k, n = 8, 4
    inits = [
        numpy_helper.from_array(np.ones(act_scale_shape, np.float32) * 0.1, "x_scale"),
        numpy_helper.from_array(
            np.full(act_scale_shape, act_zero_point, helper.tensor_dtype_to_np_dtype(act_zp_type)),
            "x_zp",
        ),
        numpy_helper.from_array(np.ones((k, n), np.int8), "w_q"),
        numpy_helper.from_array(np.full(n, 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.full(n, weight_zero_point, np.int8), "w_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="dq"),
        helper.make_node(
            "DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_dq", axis=1
        ),
        helper.make_node("MatMul", ["x_dq", "w"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, n])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def _int4_matmul(block_size=4, scale_shape=(2, 4), opset=21):
    k, n = 8, 4
    attrs = {"axis": 0, "block_size": block_size} if block_size else {}
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], name="w_dq", **attrs),
            helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, n])],
        [
            int4_tensor("w_q", np.ones((k, n), np.int8)),
            numpy_helper.from_array(np.full(scale_shape, 0.1, np.float16), "w_scale"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def test_symmetric_patterns_pass():
    assert check_model(_int8_matmul()) == []
    model = _int4_matmul()
    onnx.checker.check_model(model)
    assert check_model(model) == []


def test_non_zero_zero_point_fails():
    problems = check_model(_int8_matmul(act_zero_point=3))
    assert any("'q'" in p and "non-zero zero point" in p for p in problems)
    assert any("non-zero zero point" in p for p in check_model(_int8_matmul(weight_zero_point=1)))


def test_onnxruntime_default_uint8_activations_fail():
    problems = check_model(_int8_matmul(act_zero_point=128, act_zp_type=TensorProto.UINT8))
    assert any("UINT8" in p for p in problems)


def test_per_channel_activation_scale_fails():
    problems = check_model(_int8_matmul(act_scale_shape=(8,)))
    assert any("per-tensor" in p for p in problems)


def test_int4_without_block_size_fails():
    problems = check_model(_int4_matmul(block_size=0, scale_shape=()))
    assert any("INT4 weights need block quantization" in p for p in problems)


def test_int4_blocks_along_the_wrong_axis_fail():
    problems = check_model(_int4_matmul(block_size=2, scale_shape=(8, 2)))
    assert any("along K" in p for p in problems)


def test_opset_outside_the_trt_range_fails():
    assert any("opset 22" in p for p in check_model(_int4_matmul(opset=22)))
    model = _int8_matmul()
    model.opset_import[0].version = 21
    assert any("without INT4" in p for p in check_model(model))


def test_unsupported_op_and_custom_domain_fail():
    graph = helper.make_graph(
        [
            helper.make_node("NonMaxSuppressionV9", ["x"], ["y"], name="odd", domain="com.example"),
            helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dyn"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)]
    )
    problems = check_model(model)
    assert any("custom domain 'com.example'" in p for p in problems)
    assert any("DynamicQuantizeLinear" in p and "not supported" in p for p in problems)
