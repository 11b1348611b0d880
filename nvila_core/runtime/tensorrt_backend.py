"""`TensorRTBackend`: an export folder's TensorRT engines (`nvila-core build-engine DIR`).

The engines are built from the export's own ONNX files, so this backend runs what
`OnnxRuntimeBackend` runs in CI, with the same host logic (`ExportBackend`). Each graph call
copies its inputs to the GPU and its outputs back, the KV cache included: simple and exact, not
the fastest decode loop (a device-resident cache would skip two copies per step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nvila_core.export.build_engine import EngineSession, import_tensorrt
from nvila_core.runtime.export_backend import ExportBackend, GraphSession


class TensorRTBackend(ExportBackend):
    """Vision, projector and LLM engines, one TensorRT execution context each."""

    name = "tensorrt"

    def __init__(self, export_dir: str | Path, device: torch.device | str = "cuda"):
        self.trt = import_tensorrt()
        super().__init__(export_dir, device)

    def open_session(
        self, root: Path, name: str, graph: dict[str, Any], device: torch.device
    ) -> GraphSession:
        path = root / f"{name}.engine"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: build the engines on this device first "
                f"(`nvila-core build-engine {root}`)"
            )
        return EngineSession(self.trt, path.read_bytes(), device.type)
