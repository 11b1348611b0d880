"""`OnnxRuntimeBackend`: an export folder's ONNX files in onnxruntime sessions.

It runs the very ONNX files TensorRT builds on the robot, so CI (CPU only) exercises the deployed
graphs end to end; on a robot without TensorRT it is the CPU deployment path. Everything but the
sessions is `ExportBackend`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nvila_core.export.reference import make_session
from nvila_core.runtime.export_backend import ExportBackend, GraphSession

PROVIDERS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
}


class OnnxRuntimeBackend(ExportBackend):
    """Vision, projector and LLM ONNX graphs in onnxruntime sessions."""

    name = "onnxruntime"

    def __init__(
        self, export_dir: str | Path, device: torch.device | str = "cpu", threads: int = 0
    ):
        if torch.device(device).type not in PROVIDERS:
            raise ValueError(f"onnxruntime backend runs on {', '.join(PROVIDERS)}, not {device!r}")
        self.threads = threads
        super().__init__(export_dir, device)

    def open_session(
        self, root: Path, name: str, graph: dict[str, Any], device: torch.device
    ) -> GraphSession:
        return make_session(root / graph["files"][0], self.threads, PROVIDERS[device.type])
