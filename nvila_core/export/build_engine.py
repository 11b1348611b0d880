"""TensorRT engines from an export folder, checked against the onnxruntime reference outputs.

Runs where TensorRT and a GPU are (the Jetson, a dev GPU box); CI only checks that the ONNX
files obey TensorRT's rules (`trt_rules`). Engines are built strongly typed, so the ONNX file's
own types and Q/DQ nodes decide every precision and the same file also builds on TensorRT 11,
where weak typing is gone (trt.md §1.2). Each graph gets one optimisation profile from
`export.json` (frames for vision, blocks for the projector, sequence and past length for the
LLM). On Jetson use JetPack's TensorRT (`python3-libnvinfer`), never `pip install tensorrt`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nvila_core.export.exporter import load_metadata
from nvila_core.export.reference import Feed, load_inputs, load_outputs, relative_error

DEFAULT_WORKSPACE_GB = 4.0
TRT_MISSING = (
    "TensorRT is not available ({error}). Build engines where TensorRT and a GPU are: on Jetson "
    "(JetPack 6: TensorRT 10.3) with JetPack's python3-libnvinfer (a venv made with "
    "--system-site-packages sees it), on an x86 GPU box with `pip install tensorrt`. Without "
    "Python, `trtexec --onnx=DIR/llm.onnx --stronglyTyped` takes the same files."
)


class TensorRTUnavailable(RuntimeError):
    """`import tensorrt` failed, or no CUDA device is there to build and run engines."""


def import_tensorrt():
    """The `tensorrt` module, or `TensorRTUnavailable` with what to do instead."""
    try:
        import tensorrt
    except ImportError as err:
        raise TensorRTUnavailable(TRT_MISSING.format(error=f"import tensorrt: {err}")) from err
    return tensorrt


def build_serialized(trt, onnx_path: Path, profile: dict[str, Any], workspace_gb: float) -> bytes:
    """A strongly typed engine plan for `onnx_path` with one optimisation profile."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"{onnx_path}: TensorRT cannot parse it: {'; '.join(errors)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 2**30))
    optimization = builder.create_optimization_profile()
    for name, shapes in profile.items():
        optimization.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(optimization)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"{onnx_path}: TensorRT failed to build an engine (see its log)")
    return bytes(plan)


class EngineSession:
    """A deserialized engine with onnxruntime's `run(output_names, feed)`: host arrays in and out,
    device buffers (torch) in between, one execution context on its own stream.

    Engines run on CUDA; `device="cpu"` exists for a stand-in `tensorrt` module in tests.
    """

    def __init__(self, trt, plan: bytes, device: str = "cuda"):
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise TensorRTUnavailable(TRT_MISSING.format(error="no CUDA device visible to torch"))
        self.trt = trt
        self.device = device
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        if self.engine is None:
            raise RuntimeError(
                "TensorRT could not deserialize the engine (built by another version?)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.stream = torch.cuda.Stream() if device == "cuda" else None

    def run(self, output_names: Sequence[str], feed: Feed) -> list[np.ndarray]:
        import torch

        missing = sorted(set(self.inputs) - set(feed))
        if missing:
            raise ValueError(f"engine inputs not fed: {missing}")
        keep = []  # buffers must outlive the launch; empty tensors still get one element
        for name in self.inputs:
            value = np.ascontiguousarray(feed[name])
            buffer = torch.from_numpy(value.reshape(-1)).to(self.device)
            if buffer.numel() == 0:
                buffer = torch.zeros(1, dtype=buffer.dtype, device=self.device)
            keep.append(buffer)
            self.context.set_input_shape(name, value.shape)
            self.context.set_tensor_address(name, buffer.data_ptr())
        outputs = {}
        for name in output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
            size = max(1, int(np.prod(shape)))
            buffer = torch.empty(size, dtype=_torch_dtype(dtype), device=self.device)
            keep.append(buffer)
            self.context.set_tensor_address(name, buffer.data_ptr())
            outputs[name] = (buffer, shape)
        stream = self.stream.cuda_stream if self.stream is not None else 0
        if not self.context.execute_async_v3(stream):
            raise RuntimeError("TensorRT execution failed")
        if self.stream is not None:
            self.stream.synchronize()
        return [b[: int(np.prod(s))].cpu().numpy().reshape(s) for b, s in outputs.values()]


def run_plan(trt, plan: bytes, feeds: Sequence[Feed]) -> list[Feed]:
    """Outputs of the engine for each feed, every output by name."""
    session = EngineSession(trt, plan)
    names = session.outputs
    return [dict(zip(names, session.run(names, feed), strict=True)) for feed in feeds]


def _torch_dtype(dtype: np.dtype):
    import torch

    return torch.from_numpy(np.zeros(1, dtype=dtype)).dtype


def build_engines(
    export_dir: str | Path,
    out_dir: str | Path | None = None,
    workspace_gb: float = DEFAULT_WORKSPACE_GB,
    compare: bool = True,
) -> dict[str, dict[str, Any]]:
    """Build `<graph>.engine` for every graph of an export and compare with its reference.

    Returns per graph: the engine path, and (with `compare`) the relative max error per
    output, the tolerance and whether it passed.
    """
    trt = import_tensorrt()
    root = Path(export_dir)
    metadata = load_metadata(root)
    out = Path(out_dir) if out_dir else root
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict[str, Any]] = {}
    for name, graph in metadata["graphs"].items():
        plan = build_serialized(trt, root / graph["files"][0], graph["trt_profile"], workspace_gb)
        engine_path = out / f"{name}.engine"
        engine_path.write_bytes(plan)
        entry: dict[str, Any] = {"engine": str(engine_path)}
        if compare:
            feeds = load_inputs(root / graph["reference_inputs"])
            expected = load_outputs(root / graph["reference_outputs"])
            actual = run_plan(trt, plan, feeds)
            errors = {
                key: max(
                    relative_error(a[key], e[key]) for a, e in zip(actual, expected, strict=True)
                )
                for key in expected[0]
            }
            entry.update(
                errors=errors,
                tolerance=graph["trt_tolerance"],
                passed=max(errors.values()) <= graph["trt_tolerance"],
            )
        report[name] = entry
    return report
