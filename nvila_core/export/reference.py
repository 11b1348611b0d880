"""Reference inputs and outputs in Polygraphy's JSON format, and onnxruntime sessions.

CI has no GPU, so every exported graph is run once with onnxruntime on seeded inputs and both
sides are saved the way `polygraphy run --save-inputs/--save-outputs` writes them. On the GPU box
`polygraphy run model.onnx --trt --load-inputs X.inputs.json --load-outputs X.outputs.json`
(or `nvila-core build-engine`) compares TensorRT against exactly these numbers (trt.md §1.8).

Format (polygraphy/json/serde.py, comparator/struct.py): an array is
`{"array": base64(.npy bytes, saved without pickle), "polygraphy_class": "ndarray"}`;
`--load-inputs` takes a JSON list of feed dicts (one per iteration); `--load-outputs` takes a
`RunResults`: `{"lst": [[runner, [IterationResult...]]], "polygraphy_class": "RunResults"}`.
"""

from __future__ import annotations

import base64
import io
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

RUNNER_NAME = "onnxrt-runner-N0-nvila_core"
MATMULNBITS_ACCURACY_KEY = "session.qdq_matmulnbits_accuracy_level"
ALLOW_SPINNING_KEY = "session.intra_op.allow_spinning"
QDQ_FUSION_OFF_KEY = "session.disable_quant_qdq"
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
_CLASS = "polygraphy_class"

Feed = dict[str, np.ndarray]


def encode_array(array: np.ndarray) -> dict[str, str]:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return {"array": base64.b64encode(buffer.getvalue()).decode(), _CLASS: "ndarray"}


def decode_array(data: dict[str, Any]) -> np.ndarray:
    if data.get(_CLASS) != "ndarray":
        raise ValueError(f"not a Polygraphy ndarray: {sorted(data)}")
    raw = base64.b64decode(data["array"].encode(), validate=True)
    return np.load(io.BytesIO(raw), allow_pickle=False)


def save_inputs(feeds: Sequence[Feed], path: Path) -> None:
    """A `--load-inputs` file: one feed dict per iteration."""
    data = [{name: encode_array(value) for name, value in feed.items()} for feed in feeds]
    path.write_text(json.dumps(data, indent=1) + "\n")


def load_inputs(path: Path) -> list[Feed]:
    return [
        {name: decode_array(value) for name, value in feed.items()}
        for feed in json.loads(path.read_text())
    ]


def save_outputs(outputs: Sequence[Feed], path: Path, runner: str = RUNNER_NAME) -> None:
    """A `--load-outputs` file: one `IterationResult` per iteration of `runner`."""
    iterations = [
        {
            "outputs": {
                name: {"values": encode_array(value), _CLASS: "LazyArray"}
                for name, value in result.items()
            },
            "runtime": None,
            "runner_name": runner,
            _CLASS: "IterationResult",
        }
        for result in outputs
    ]
    data = {"lst": [[runner, iterations]], _CLASS: "RunResults"}
    path.write_text(json.dumps(data, indent=1) + "\n")


def load_outputs(path: Path) -> list[Feed]:
    """The iterations of the first runner in a `RunResults` file."""
    data = json.loads(path.read_text())
    if data.get(_CLASS) != "RunResults" or not data.get("lst"):
        raise ValueError(f"{path}: not a Polygraphy RunResults file")
    _, iterations = data["lst"][0]
    return [
        {name: decode_array(value["values"]) for name, value in it["outputs"].items()}
        for it in iterations
    ]


def int8_matmul_saturates(machine: str | None = None, cpu_flags: set[str] | None = None) -> bool:
    """Whether onnxruntime's fused INT8 kernels can saturate on this CPU.

    On x86-64 without VNNI, onnxruntime multiplies uint8 activations by int8 weights with
    VPMADDUBSW, which adds pairs of products into int16 and saturates (onnxruntime's
    quantization guide); a W8A8 MatMul fused from our symmetric int8 Q/DQ pairs was then off by
    up to 26 % of its largest output. ARM (the Jetson's CPU) and VNNI CPUs accumulate in int32.
    `machine` / `cpu_flags` default to this machine's (`platform.machine()`, /proc/cpuinfo).
    """
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return False
    if cpu_flags is None:
        cpu_flags = _cpu_flags()
        if cpu_flags is None:  # no /proc/cpuinfo (macOS, Windows): assume the worst
            return True
    return not (cpu_flags & _VNNI_FLAGS)


def _cpu_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


def quantizes_activations(path: Path) -> bool:
    """A graph with QuantizeLinear nodes rounds activations to int8 at run time (W8A8)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return any(node.op_type == "QuantizeLinear" for node in proto.graph.node)


def make_session(
    path: Path,
    threads: int = 0,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    optimized_path: Path | None = None,
    profile_prefix: str | None = None,
    int4_accuracy: int = 1,
):
    """An onnxruntime session (`threads` 0: onnxruntime's default).

    onnxruntime fuses each INT4 DequantizeLinear -> MatMul into `MatMulNBits`, by default at
    accuracy level 4, which quantizes the activations to INT8 per block: W4A8, not the W4A16
    the graph says (1e-2 relative error). Level 1 computes in float32, as the graph and TensorRT
    do (`int4_accuracy` 4 is there to measure what that costs, never to deploy).
    `optimized_path`: where onnxruntime writes the graph it actually runs. `profile_prefix`:
    onnxruntime's per-node profile goes to `<prefix>_<date>.json` (`session.end_profiling()`).

    W8A8 graphs on a CPU whose INT8 kernels saturate (`int8_matmul_saturates`) run without
    onnxruntime's Q/DQ fusions: every DequantizeLinear feeds a float MatMul, exactly the
    arithmetic the graph states (and TensorRT's INT8 kernels compute), slower than fused INT8.
    That also turns off the INT4 fusion, so only graphs that quantize activations get it.

    Worker threads do not spin between ops: a robot's CPU is shared (drivers, DDS, the
    controller), and a spinning thread pool on a busy core waits for its own preempted threads
    (docs/deployment.md: a navila-nano decision took 2x as long under load while spinning).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # the default (warning) floods logs with constant-folding notes
    options.add_session_config_entry(MATMULNBITS_ACCURACY_KEY, str(int4_accuracy))
    options.add_session_config_entry(ALLOW_SPINNING_KEY, "0")
    cpu = providers[0] == "CPUExecutionProvider"
    if cpu and int8_matmul_saturates() and quantizes_activations(path):
        options.add_session_config_entry(QDQ_FUSION_OFF_KEY, "1")
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=list(providers))


def run_session(session, feeds: Sequence[Feed]) -> list[Feed]:
    names = [output.name for output in session.get_outputs()]
    return [dict(zip(names, session.run(names, feed), strict=True)) for feed in feeds]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: one scale-free number per tensor."""
    expected = np.asarray(expected, dtype=np.float64)
    diff = np.abs(np.asarray(actual, dtype=np.float64) - expected)
    if diff.size == 0:
        return 0.0
    return float(diff.max() / max(float(np.abs(expected).max()), 1e-12))
