"""Swap INT4 ``DequantizeLinear → MatMul`` pairs of an ONNX graph for the W4A16 plugin node, and back.

Opt-in, for TensorRT >= 10.9 only: the plain DQ graph stays the default and is what TensorRT 10.3
(JetPack 6) builds natively. A pair is replaced only when all of these hold, otherwise it is left:

* ``DequantizeLinear`` of an INT4 initializer ``[K, N]`` with FLOAT16 scale initializer
  ``[K / 128, N]``, ``axis=0``, ``block_size=128``, no zero-point input;
* K a multiple of 128 (and of ``split_k * 64`` for the GEMV), N a multiple of 16 (the alignment
  the AOT kernels are compiled for);
* every consumer of the dequantised weight is a ``MatMul`` taking it as its second input.

The plugin node (op ``w4a16_gemm``/``w4a16_gemv``, attribute ``plugin_namespace``, ``aot=1``, the
form TensorRT's ONNX parser maps to a registered QDP) takes ``(x, qweight, scales)``. ``restore``
is the inverse; ``check_inverse`` proves a rewrite lost nothing.

    python -m trt_kernels.onnx_rewrite in.onnx out.onnx --tensorrt-version 10.9 [--kernel gemv]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trt_kernels.packing import GROUP_SIZE, PackedW4, from_onnx_dq, to_onnx_int4
from trt_kernels.plugin import GEMM_PLUGIN, GEMV_PLUGIN, PLUGIN_NAMESPACE, plugin_supported
from trt_kernels.w4a16 import GEMV_CONFIG

N_ALIGN = 16
PACKED_SUFFIX = "_w4a16"
_AXES0 = "trt_kernels_reduce_axes0"


def _attr(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _packable(node: onnx.NodeProto, inits: dict, split_k: int | None) -> PackedW4 | None:
    """The weight of an INT4 block DQ the kernels can run, else None."""
    if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
        return None
    if len(node.input) > 2 and node.input[2]:
        return None  # a zero point: TensorRT's INT4 path and the kernels are symmetric only
    weight, scales = (inits.get(name) for name in node.input[:2])
    if weight is None or scales is None or len(weight.dims) != 2:
        return None
    if weight.data_type != TensorProto.INT4 or scales.data_type != TensorProto.FLOAT16:
        return None
    if _attr(node, "axis", 1) != 0 or _attr(node, "block_size", 0) != GROUP_SIZE:
        return None
    k, n = weight.dims
    k_align = (
        GROUP_SIZE if split_k is None else np.lcm(GROUP_SIZE, split_k * GEMV_CONFIG["BLOCK_K"])
    )
    if k % k_align or n % N_ALIGN:
        return None
    return from_onnx_dq(weight, scales, GROUP_SIZE)


def _consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            uses.setdefault(name, []).append((node, index))
    return uses


def rewrite(
    model: onnx.ModelProto, kernel: str = "gemm", split_k: int = 4
) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` with the eligible pairs replaced, and the names of the replaced MatMuls.

    ``kernel="gemv"`` (decode graphs, one token) emits the split-K plugin + ``ReduceSum``.
    """
    if kernel not in ("gemm", "gemv"):
        raise ValueError(f"kernel must be 'gemm' or 'gemv', not {kernel!r}")
    model = copy.deepcopy(model)
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    uses = _consumers(graph)
    graph_outputs = {output.name for output in graph.output}
    replaced: list[str] = []
    new_nodes: list[onnx.NodeProto] = []
    dropped: set[str] = set()
    plugin_for: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        packed = _packable(node, inits, split_k if kernel == "gemv" else None)
        users = uses.get(node.output[0], [])
        if packed is None or not users or node.output[0] in graph_outputs:
            continue
        if any(user.op_type != "MatMul" or index != 1 for user, index in users):
            continue
        weight_name, scales_name = node.input[:2]
        packed_name = weight_name + PACKED_SUFFIX
        graph.initializer.append(numpy_helper.from_array(packed.qweight, packed_name))
        dropped.update({id(node)} | {id(user) for user, _ in users})
        for user, _ in users:
            plugin_for[id(user)] = _plugin_nodes(user, packed_name, scales_name, kernel, split_k)
            replaced.append(user.name)
    for node in graph.node:
        if id(node) in plugin_for:
            new_nodes.extend(plugin_for[id(node)])
        elif id(node) not in dropped:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    if replaced:
        if kernel == "gemv":
            graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), _AXES0))
        _drop_unused_initializers(graph)
        model.opset_import.append(helper.make_opsetid(PLUGIN_NAMESPACE, 1))
    return model, replaced


def _plugin_nodes(matmul, packed_name, scales_name, kernel, split_k) -> list[onnx.NodeProto]:
    inputs = [matmul.input[0], packed_name, scales_name]
    common = {"plugin_namespace": PLUGIN_NAMESPACE, "aot": 1}
    if kernel == "gemm":
        node = helper.make_node(
            GEMM_PLUGIN, inputs, list(matmul.output), matmul.name, domain=PLUGIN_NAMESPACE, **common
        )
        return [node]
    partials = matmul.output[0] + "_partials"
    plugin = helper.make_node(
        GEMV_PLUGIN,
        inputs,
        [partials],
        matmul.name,
        domain=PLUGIN_NAMESPACE,
        split_k=split_k,
        **common,
    )
    reduce = helper.make_node(
        "ReduceSum", [partials, _AXES0], list(matmul.output), matmul.name + "_splitk", keepdims=0
    )
    return [plugin, reduce]


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def restore(model: onnx.ModelProto) -> onnx.ModelProto:
    """The inverse of :func:`rewrite`: plugin nodes back to INT4 ``DequantizeLinear → MatMul``."""
    model = copy.deepcopy(model)
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    reduce_of = {
        node.input[0]: node
        for node in graph.node
        if node.op_type == "ReduceSum" and node.input[1:] == [_AXES0]
    }
    new_nodes: list[onnx.NodeProto] = []
    skip: set[str] = set()
    restored: dict[str, PackedW4] = {}
    for node in graph.node:
        if node.name in skip:
            continue
        if node.domain != PLUGIN_NAMESPACE or node.op_type not in (GEMM_PLUGIN, GEMV_PLUGIN):
            new_nodes.append(node)
            continue
        x, packed_name, scales_name = node.input
        weight_name = packed_name.removesuffix(PACKED_SUFFIX)
        if weight_name not in restored:
            qweight = numpy_helper.to_array(inits[packed_name])
            scales = numpy_helper.to_array(inits[scales_name])
            restored[weight_name] = PackedW4(qweight, scales)
            new_nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [weight_name, scales_name],
                    [weight_name + "_dq"],
                    weight_name + "_DequantizeLinear",
                    axis=0,
                    block_size=GROUP_SIZE,
                )
            )
        output = node.output[0]
        if node.op_type == GEMV_PLUGIN:
            reduce = reduce_of[output]
            skip.add(reduce.name)
            output = reduce.output[0]
        new_nodes.append(helper.make_node("MatMul", [x, weight_name + "_dq"], [output], node.name))
    for weight_name, packed in restored.items():
        graph.initializer.append(to_onnx_int4(packed, weight_name))
    del graph.node[:]
    graph.node.extend(new_nodes)
    _drop_unused_initializers(graph)
    kept = [op for op in model.opset_import if op.domain != PLUGIN_NAMESPACE]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def _canonical(model: onnx.ModelProto) -> list[str]:
    """The nodes without their names, each DQ output named after its weight, in a fixed order."""
    dq_out = {
        n.output[0]: f"dq({n.input[0]})"
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
    }
    nodes = []
    for node in model.graph.node:
        attrs = sorted((a.name, helper.get_attribute_value(a)) for a in node.attribute)
        inputs = [dq_out.get(name, name) for name in node.input]
        outputs = [dq_out.get(name, name) for name in node.output]
        nodes.append(repr((node.domain, node.op_type, inputs, outputs, attrs)))
    return sorted(nodes)


def check_inverse(original: onnx.ModelProto, rewritten: onnx.ModelProto) -> None:
    """Raise unless ``restore(rewritten)`` has the original's nodes, INT4 codes and scales."""
    restored = restore(rewritten)
    if _canonical(original) != _canonical(restored):
        raise ValueError("the rewritten graph does not restore to the original's nodes")
    before = {i.name: numpy_helper.to_array(i) for i in original.graph.initializer}
    for init in restored.graph.initializer:
        value = numpy_helper.to_array(init)
        if init.name not in before or not np.array_equal(before[init.name], value):
            raise ValueError(f"initializer {init.name} differs after the round trip")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument(
        "--tensorrt-version", required=True, help="of the TensorRT that will build it"
    )
    parser.add_argument("--kernel", choices=("gemm", "gemv"), default="gemm")
    parser.add_argument("--split-k", type=int, default=4, help="K slices of the GEMV")
    args = parser.parse_args(argv)
    if not plugin_supported(args.tensorrt_version):
        raise SystemExit(
            f"TensorRT {args.tensorrt_version} has no AOT Python plugins (needs >= 10.9): keep the "
            "INT4 DequantizeLinear -> MatMul graph, which it builds natively."
        )
    model = onnx.load(args.source)
    rewritten, replaced = rewrite(model, args.kernel, args.split_k)
    check_inverse(model, rewritten)
    large = rewritten.ByteSize() > 2**31 - 2**26  # protobuf's 2 GiB limit, with some margin
    onnx.save(
        rewritten, args.target, save_as_external_data=large, location=args.target.name + ".data"
    )
    print(
        f"replaced {len(replaced)} INT4 DequantizeLinear -> MatMul pairs with {args.kernel} plugins"
    )


if __name__ == "__main__":
    main()
