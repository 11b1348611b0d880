"""Deployment export: ONNX graphs (float and Q/DQ-quantized) that onnxruntime runs in CI and
TensorRT builds on the robot, with metadata and Polygraphy reference data beside them."""

from nvila_core.export.exporter import (
    METADATA_FILE,
    export_model,
    load_metadata,
)
from nvila_core.export.qdq import ExportError

__all__ = ["METADATA_FILE", "ExportError", "export_model", "load_metadata"]
