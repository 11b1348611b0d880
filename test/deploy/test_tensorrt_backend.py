"""`Engine(backend="tensorrt")` over engines built from an export folder.

No TensorRT in CI: the engines are run by a stand-in `tensorrt` runtime (`standin_tensorrt`,
onnxruntime underneath, reading and writing the addresses it is given), so these tests check the
backend's bindings (names, shapes, dtypes, buffers, the KV cache round trip) and its errors; a
real engine build and run is `nvila-core build-engine` on the device.
"""

import importlib.util
import shutil
import sys

import pytest
import standin_tensorrt
import torch

from nvila_core.export.build_engine import TensorRTUnavailable
from nvila_core.runtime.engine import Engine
from nvila_core.runtime.tensorrt_backend import TensorRTBackend

INSTRUCTION = "walk past the sofa and stop at the kitchen door"
ANSWERS = ["The next action is move forward 75 cm.", "The next action is stop."]


@pytest.fixture
def engines(tmp_path, fp32_export, monkeypatch):
    """A copy of the export with one stand-in "engine" per graph, and the stand-in runtime."""
    folder = shutil.copytree(fp32_export, tmp_path / "export")
    for onnx_file in folder.glob("*.onnx"):
        (folder / f"{onnx_file.stem}.engine").write_bytes(str(onnx_file).encode())
    monkeypatch.setitem(sys.modules, "tensorrt", standin_tensorrt)
    return folder


def test_engines_answer_like_onnxruntime(engines, make_frames):
    trt_engine = Engine.from_pretrained(engines, backend="tensorrt", device="cpu")
    ort_engine = Engine.from_pretrained(engines, backend="onnxruntime")
    assert isinstance(trt_engine.backend, TensorRTBackend) and trt_engine.backend_name == "tensorrt"
    history = make_frames(9)
    for step in (1, 5, 9):
        frames, keys = history[:step], list(range(step))
        ours = trt_engine.navigate(INSTRUCTION, frames, keys, max_new_tokens=6, output_logits=True)
        ref = ort_engine.navigate(INSTRUCTION, frames, keys, max_new_tokens=6, output_logits=True)
        assert ours.token_ids == ref.token_ids and len(ours.token_ids) == 6
        torch.testing.assert_close(ours.logits, ref.logits, rtol=0, atol=1e-6)
    chosen = trt_engine.navigate(INSTRUCTION, history, answers=ANSWERS)
    reference = ort_engine.navigate(INSTRUCTION, history, answers=ANSWERS)
    assert chosen.text == reference.text
    assert chosen.answer_log_probs == pytest.approx(reference.answer_log_probs, abs=1e-6)


def test_a_missing_engine_names_the_build_command(engines):
    (engines / "llm.engine").unlink()
    with pytest.raises(FileNotFoundError, match="nvila-core build-engine"):
        Engine.from_pretrained(engines, backend="tensorrt", device="cpu")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT present")
def test_without_tensorrt_the_backend_says_where_engines_run(fp32_export):
    with pytest.raises(TensorRTUnavailable, match="python3-libnvinfer"):
        Engine.from_pretrained(fp32_export, backend="tensorrt")
