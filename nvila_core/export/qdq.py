"""Graph surgery that turns a float ONNX export into its quantized form, Q/DQ written by hand.

Every quantized linear's MatMul is found by its weight initializer `<module path>.weight_t`
(see `graphs.matmul_linears`); its float weight is replaced by integer codes behind a
DequantizeLinear, in exactly the patterns TensorRT's explicit quantization imports (trt.md
§1.3-1.4) and onnxruntime's CPU provider runs:

- W8A8 (`int8_channel`): x -> QuantizeLinear(scale, zp=int8 0) -> DequantizeLinear -> MatMul,
  weight INT8 [K, N] -> DequantizeLinear(per-channel scale [N], zp=int8 0, axis=1) -> MatMul;
- W4A16 (`int4_block`): weight INT4 [K, N] -> DequantizeLinear(scales [K/B, N], axis=0,
  block_size=B, no zero point) -> MatMul, the scales in the MatMul's dtype (see `_int4_nodes`).

Block DequantizeLinear needs opset 21 and FP16 scales opset 19, so such graphs are re-stamped
from the exporter's opset 18: no op these graphs use changed semantics in 19-21 (the changes
were new types and attributes).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nvila_core.export.graphs import WEIGHT_SUFFIX
from nvila_core.quant.formats import QuantizedLinear

INT4_OPSET = 21
FP16_SCALE_OPSET = 19
INT4_IR_VERSION = 10
_EXTERNAL_DATA_BYTES = 1 << 30  # protobuf cannot hold 2 GB; keep well below


class ExportError(ValueError):
    """An export that cannot be produced or does not reproduce the torch model."""


def pack_int4(codes: np.ndarray) -> bytes:
    """Signed 4-bit codes, two per byte, first element in the low nibble (ONNX / TensorRT)."""
    flat = codes.astype(np.int8).ravel()
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.int8)])
    nibbles = (flat & 0x0F).astype(np.uint8)
    return (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes()


def int4_tensor(name: str, codes: np.ndarray) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.INT4, dims=list(codes.shape))
    tensor.raw_data = pack_int4(codes)
    return tensor


def graph_float_type(model: onnx.ModelProto) -> int:
    """The element type of the graph's first input (its activation precision)."""
    return model.graph.input[0].type.tensor_type.elem_type


def _int8_nodes(
    q: QuantizedLinear, matmul: onnx.NodeProto, np_float: np.dtype
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    base = q.name
    codes = q.qweight.numpy().T.copy()  # [K, N] as MatMul's B
    channels = codes.shape[1]
    inits = [
        numpy_helper.from_array(codes.astype(np.int8), f"{base}.weight_q"),
        numpy_helper.from_array(q.scales.numpy().astype(np_float), f"{base}.weight_scale"),
        numpy_helper.from_array(np.zeros(channels, np.int8), f"{base}.weight_zero_point"),
        numpy_helper.from_array(np.array(q.act_scale, dtype=np_float), f"{base}.input_scale"),
        numpy_helper.from_array(np.array(0, dtype=np.int8), f"{base}.input_zero_point"),
    ]
    x = matmul.input[0]
    nodes = [
        helper.make_node(
            "QuantizeLinear",
            [x, f"{base}.input_scale", f"{base}.input_zero_point"],
            [f"{base}.input_q"],
            name=f"{base}/input_quantize",
        ),
        helper.make_node(
            "DequantizeLinear",
            [f"{base}.input_q", f"{base}.input_scale", f"{base}.input_zero_point"],
            [f"{base}.input_dq"],
            name=f"{base}/input_dequantize",
        ),
        helper.make_node(
            "DequantizeLinear",
            [f"{base}.weight_q", f"{base}.weight_scale", f"{base}.weight_zero_point"],
            [f"{base}.weight_dq"],
            name=f"{base}/weight_dequantize",
            axis=1,
        ),
    ]
    matmul.input[0] = f"{base}.input_dq"
    matmul.input[1] = f"{base}.weight_dq"
    return nodes, inits


def _int4_nodes(
    q: QuantizedLinear, matmul: onnx.NodeProto, np_float: np.dtype
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """INT4 DequantizeLinear straight into the MatMul, its scales in the graph's float type.

    DequantizeLinear outputs its scales' type. onnxruntime fuses DQ -> MatMul into its 4-bit
    `MatMulNBits` only when nothing sits between them, so a Cast after FP16 scales in a float32
    graph left every decode step dequantizing every weight (12-15x slower than float32). Hence:
    float16 graphs, the TensorRT deployment form, keep FP16 scales (DQ outputs FP16, TensorRT's
    W4A16 pattern); float32 graphs store the same FP16 values widened to float32, losslessly
    (TensorRT takes 16- or 32-bit scales). Casting the activations to FP16 around the MatMul
    instead also fuses, but onnxruntime's CPU provider then drops that FP32 -> FP16 -> FP32 round
    trip, so it would not compute what TensorRT computes from the same file.
    """
    base = q.name
    codes = q.qweight.numpy().T  # [K, N]
    scales = q.scales.numpy().T.astype(np.float16).astype(np_float)  # [K / B, N]
    inits = [
        int4_tensor(f"{base}.weight_q", codes),
        numpy_helper.from_array(np.ascontiguousarray(scales), f"{base}.weight_scale"),
    ]
    node = helper.make_node(
        "DequantizeLinear",
        [f"{base}.weight_q", f"{base}.weight_scale"],
        [f"{base}.weight_dq"],
        name=f"{base}/weight_dequantize",
        axis=0,
        block_size=q.block_size,
    )
    matmul.input[1] = f"{base}.weight_dq"
    return [node], inits


def quantize_graph(model: onnx.ModelProto, linears: dict[str, QuantizedLinear]) -> onnx.ModelProto:
    """`model` with every linear of `linears` replaced by its Q/DQ pattern (in place)."""
    graph = model.graph
    float_type = graph_float_type(model)
    np_float = helper.tensor_dtype_to_np_dtype(float_type)
    nodes = list(graph.node)
    users: dict[str, list[int]] = defaultdict(list)
    for index, node in enumerate(nodes):
        for name in node.input:
            users[name].append(index)
    initializers = {init.name for init in graph.initializer}
    inserted: dict[int, list[onnx.NodeProto]] = defaultdict(list)
    new_inits: list[TensorProto] = []
    for name, q in linears.items():
        weight = name + WEIGHT_SUFFIX
        found = [nodes[i] for i in users.get(weight, [])]
        if weight not in initializers or len(found) != 1 or found[0].op_type != "MatMul":
            raise ExportError(
                f"{name}: expected one MatMul reading initializer {weight!r} in the exported "
                f"graph, found {[n.op_type for n in found]}"
            )
        matmul = found[0]
        if list(matmul.input).index(weight) != 1:
            raise ExportError(f"{name}: {weight!r} is not the MatMul's weight input")
        if q.scheme == "int8_channel":
            new_nodes, inits = _int8_nodes(q, matmul, np_float)
        else:
            new_nodes, inits = _int4_nodes(q, matmul, np_float)
        inserted[users[weight][0]].extend(new_nodes)
        new_inits.extend(inits)
    ordered = []
    for index, node in enumerate(nodes):
        for new in [*inserted.get(index, []), node]:
            copy = onnx.NodeProto()
            copy.CopyFrom(new)
            ordered.append(copy)
    del graph.node[:]
    graph.node.extend(ordered)
    removed = {name + WEIGHT_SUFFIX for name in linears}
    for index in reversed(range(len(graph.initializer))):
        if graph.initializer[index].name in removed:
            del graph.initializer[index]
    graph.initializer.extend(new_inits)
    if any(q.scheme == "int4_block" for q in linears.values()):
        _raise_opset(model, INT4_OPSET)
        model.ir_version = max(model.ir_version, INT4_IR_VERSION)
    elif linears and float_type == TensorProto.FLOAT16:
        _raise_opset(model, FP16_SCALE_OPSET)
    return model


def _raise_opset(model: onnx.ModelProto, version: int) -> None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, version)


def save_onnx(model: onnx.ModelProto, path: Path) -> list[str]:
    """Write `model`; weights go to `<name>.data` beside it when the file would be too large.

    Returns the file names written.
    """
    data = f"{path.name}.data"
    (path.parent / data).unlink(missing_ok=True)
    weight_bytes = sum(len(init.raw_data) for init in model.graph.initializer)
    if weight_bytes < _EXTERNAL_DATA_BYTES:
        onnx.save(model, str(path))
        return [path.name]
    onnx.save(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data
    )
    return [path.name, data]
