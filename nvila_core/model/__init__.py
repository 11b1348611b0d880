"""NVILA model code: configuration, pre-processing, vision tower, projector, LLM, checkpoints.

The public names below are re-exported lazily: `from nvila_core.model import NVILAModel` works,
while importing only `nvila_core.model.configuration` does not pull in torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "configuration": ("NVILAConfig", "ConfigError", "list_presets"),
    "image_processing": (
        "ImageProcessor",
        "ProcessedImage",
        "ImagePlan",
        "plan_image",
        "plan_frames",
    ),
    "vision": ("VisionTower", "encode_image", "encode_frames"),
    "projector": ("MultimodalProjector",),
    "temporal": ("TemporalPooler",),
    "tokenizer": ("build_tokenizer", "load_tokenizer", "media_token_ids"),
    "prompting": (
        "apply_chat_template",
        "navigation_prompt",
        "stop_token_ids",
        "IMAGE_TOKEN_INDEX",
    ),
    "processing": ("NVILAProcessor", "ModelInputs", "MediaItem"),
    "language": ("build_llm",),
    "modeling": ("NVILAModel", "EncodedMedia"),
    "generation": ("GenerationResult", "generate", "greedy_decode"),
    "checkpoint": ("CheckpointError", "load_checkpoint", "save_checkpoint", "read_config"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
