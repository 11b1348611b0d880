"""Static check of an ONNX file against TensorRT 10.3's explicit-quantization rules.

Jetson Orin on JetPack 6 is pinned to TensorRT 10.3 (trt.md §0), so an export is only useful if
that parser accepts it. Without a GPU in CI this check is the guard; it reports (never raises)
every violation of:

- opset: TensorRT 10.x documents opsets 9-20; opset 21 is accepted only for INT4 block
  DequantizeLinear (ModelOpt emits exactly that for TensorRT >= 10.0; not yet tried on a device);
- domains and ops: standard ONNX domain only, ops from the onnx-tensorrt support matrix;
- Q/DQ: zero points absent or all zero and INT8/INT4 typed (symmetric quantization only), scales
  and zero points constant, activation (QuantizeLinear) scales per tensor;
- weight DequantizeLinear feeding a MatMul's weight: per-tensor or per-channel along the output
  axis (N of [K, N]); Conv weights along axis 0;
- INT4: only as a constant DequantizeLinear input with `block_size`, scales of the input's rank
  blocked along K (axis 0), feeding MatMul (directly or through a Cast); no INT4 QuantizeLinear;
- no FP8/FP4/UINT8 quantized types (Orin is SM 8.7: FP8 needs SM 8.9+, trt.md §1.5).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

MIN_OPSET = 9
MAX_FLOAT_OPSET = 20
INT4_OPSET = 21

# onnx-tensorrt docs/operators.md ("Y" rows) for TensorRT 10.x, minus what Orin cannot run.
SUPPORTED_OPS = frozenset(
    [
        "Abs",
        "Acos",
        "Acosh",
        "Add",
        "And",
        "ArgMax",
        "ArgMin",
        "Asin",
        "Asinh",
        "Atan",
        "Atanh",
        "AveragePool",
        "BatchNormalization",
        "Cast",
        "CastLike",
        "Ceil",
        "Celu",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "ConvTranspose",
        "Cos",
        "Cosh",
        "CumSum",
        "DepthToSpace",
        "DequantizeLinear",
        "Div",
        "Dropout",
        "Einsum",
        "Elu",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "EyeLike",
        "Flatten",
        "Floor",
        "Gather",
        "GatherElements",
        "GatherND",
        "Gelu",
        "Gemm",
        "GlobalAveragePool",
        "GlobalLpPool",
        "GlobalMaxPool",
        "Greater",
        "GreaterOrEqual",
        "GridSample",
        "GroupNormalization",
        "GRU",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "If",
        "InstanceNormalization",
        "IsInf",
        "IsNaN",
        "LayerNormalization",
        "LeakyRelu",
        "Less",
        "LessOrEqual",
        "Log",
        "LogSoftmax",
        "Loop",
        "LRN",
        "LSTM",
        "LpNormalization",
        "LpPool",
        "MatMul",
        "Max",
        "MaxPool",
        "Mean",
        "Min",
        "Mish",
        "Mod",
        "Mul",
        "Neg",
        "NonMaxSuppression",
        "NonZero",
        "Not",
        "OneHot",
        "Or",
        "Pad",
        "ParametricSoftplus",
        "Pow",
        "PRelu",
        "QuantizeLinear",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Range",
        "Reciprocal",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceProd",
        "ReduceSum",
        "ReduceSumSquare",
        "Relu",
        "Reshape",
        "Resize",
        "ReverseSequence",
        "RNN",
        "RoiAlign",
        "Round",
        "ScaledTanh",
        "Scan",
        "Scatter",
        "ScatterElements",
        "ScatterND",
        "Selu",
        "Shape",
        "Shrink",
        "Sigmoid",
        "Sign",
        "Sin",
        "Sinh",
        "Size",
        "Slice",
        "Softmax",
        "Softplus",
        "Softsign",
        "SpaceToDepth",
        "Split",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Sum",
        "Tan",
        "Tanh",
        "ThresholdedRelu",
        "Tile",
        "TopK",
        "Transpose",
        "Trilu",
        "Unsqueeze",
        "Upsample",
        "Where",
        "Xor",
    ]
)
QUANTIZED_TYPES = {TensorProto.INT8, TensorProto.INT4}


class _Graph:
    """Constants, producers and consumers of one ONNX graph."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.constants: dict[str, TensorProto] = {i.name: i for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self.constants[node.output[0]] = attr.t
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)

    def constant(self, name: str) -> TensorProto | None:
        return self.constants.get(name)

    def array(self, name: str) -> np.ndarray | None:
        tensor = self.constants.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def _matmul_weight_users(graph: _Graph, output: str) -> list[onnx.NodeProto]:
    """MatMul / Gemm / Conv nodes that take `output` (possibly through a Cast) as weight."""
    users = []
    for node in graph.consumers.get(output, []):
        if node.op_type == "Cast":
            users += _matmul_weight_users(graph, node.output[0])
        elif node.op_type in ("MatMul", "Gemm", "Conv") and list(node.input).index(output) == 1:
            users.append(node)
    return users


def _check_qdq(node: onnx.NodeProto, graph: _Graph, opset: int) -> list[str]:
    where = f"{node.op_type} {node.name or node.output[0]!r}"
    problems = []
    scale = graph.constant(node.input[1]) if len(node.input) > 1 else None
    if scale is None:
        return [f"{where}: scale must be a constant initializer"]
    zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    zp_type = None
    if zero_point:
        zp = graph.constant(zero_point)
        if zp is None:
            problems.append(f"{where}: zero point must be a constant initializer")
        else:
            zp_type = zp.data_type
            if np.any(numpy_helper.to_array(zp).astype(np.int64) != 0):
                problems.append(f"{where}: non-zero zero point (TensorRT is symmetric only)")
    block_size = _attr(node, "block_size", 0)
    axis = _attr(node, "axis", 1)
    scale_shape = list(scale.dims)
    if node.op_type == "QuantizeLinear":
        out_type = (
            zp_type if zp_type is not None else _attr(node, "output_dtype", TensorProto.UINT8)
        )
        if out_type == TensorProto.INT4:
            problems.append(
                f"{where}: INT4 QuantizeLinear (INT4 is weight-only, via DequantizeLinear)"
            )
        elif out_type not in QUANTIZED_TYPES:
            problems.append(
                f"{where}: quantizes to {TensorProto.DataType.Name(out_type)}; TensorRT on Orin "
                "takes INT8 with an explicit int8 zero point of 0"
            )
        if int(np.prod(scale_shape, dtype=np.int64)) != 1 or block_size:
            problems.append(
                f"{where}: activation scale must be per-tensor, got shape {scale_shape}"
            )
        return problems
    data = graph.constant(node.input[0])
    in_type = data.data_type if data is not None else zp_type
    if in_type is not None and in_type not in QUANTIZED_TYPES:
        problems.append(
            f"{where}: dequantizes {TensorProto.DataType.Name(in_type)}; only INT8 and INT4 are "
            "supported on Orin"
        )
    if data is None:  # activation DQ after a QuantizeLinear
        if int(np.prod(scale_shape, dtype=np.int64)) != 1:
            problems.append(
                f"{where}: activation scale must be per-tensor, got shape {scale_shape}"
            )
        return problems
    rank = len(data.dims)
    users = _matmul_weight_users(graph, node.output[0])
    if data.data_type == TensorProto.INT4:
        if not block_size:
            return [
                *problems,
                f"{where}: INT4 weights need block quantization (block_size attribute, opset "
                f"{INT4_OPSET}); per-tensor / per-channel INT4 is not supported",
            ]
        if opset < INT4_OPSET:
            problems.append(f"{where}: block_size needs opset {INT4_OPSET}, model is {opset}")
        if len(scale_shape) != rank or rank != 2:
            problems.append(
                f"{where}: block scales must have the weight's rank 2, got {scale_shape}"
            )
        elif (axis % rank) != 0 or scale_shape[1] != data.dims[1]:
            problems.append(f"{where}: INT4 blocks must run along K (axis 0 of [K, N])")
        elif data.dims[0] != scale_shape[0] * block_size:
            problems.append(
                f"{where}: {scale_shape[0]} blocks of {block_size} do not cover K={data.dims[0]}"
            )
        if not users or any(u.op_type != "MatMul" for u in users):
            problems.append(f"{where}: INT4 weights must feed a MatMul's weight input")
        return problems
    if block_size:
        problems.append(f"{where}: block quantization is only supported for INT4 weights here")
    if len(scale_shape) == 0 or int(np.prod(scale_shape, dtype=np.int64)) == 1:
        return problems
    if len(scale_shape) != 1:
        return [*problems, f"{where}: per-channel scale must be 1-D, got {scale_shape}"]
    for user in users:
        want = {"MatMul": rank - 1, "Gemm": 0 if _attr(user, "transB", 0) else 1, "Conv": 0}
        if axis % rank != want[user.op_type]:
            problems.append(
                f"{where}: per-channel axis {axis} of weight {list(data.dims)} is not the output "
                f"channel axis {want[user.op_type]} of its {user.op_type}"
            )
    if scale_shape[0] != data.dims[axis % rank]:
        problems.append(
            f"{where}: {scale_shape[0]} scales for axis of size {data.dims[axis % rank]}"
        )
    return problems


def check_model(model: onnx.ModelProto) -> list[str]:
    """Every TensorRT 10.3 rule `model` breaks, as readable lines (empty: it passes)."""
    problems = []
    opset = 0
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            opset = entry.version
        else:
            problems.append(f"opset import of custom domain {entry.domain!r} (not for TensorRT)")
    graph = _Graph(model)
    has_int4 = False
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{node.op_type} {node.name!r}: custom domain {node.domain!r}")
            continue
        if node.op_type not in SUPPORTED_OPS:
            problems.append(f"{node.op_type} {node.name!r}: not supported by TensorRT 10.3")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            problems += _check_qdq(node, graph, opset)
            data = graph.constant(node.input[0])
            has_int4 |= data is not None and data.data_type == TensorProto.INT4
    if not MIN_OPSET <= opset <= INT4_OPSET:
        problems.append(f"opset {opset} outside TensorRT 10.3's {MIN_OPSET}-{MAX_FLOAT_OPSET}")
    elif opset == INT4_OPSET and not has_int4:
        problems.append(
            f"opset {INT4_OPSET} without INT4 block weights: export at <= {MAX_FLOAT_OPSET}, "
            "TensorRT 10.3's documented range"
        )
    return problems


def check_file(path: str | Path) -> list[str]:
    return check_model(onnx.load(str(path)))
