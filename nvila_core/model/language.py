"""The language model half of NVILA: a plain HF causal LM built from `NVILAConfig.llm_config`.

NVILA uses Qwen2 (Qwen2.5-1.5B/7B/14B) and NaVILA uses Llama-3-8B; both are stock transformers
classes, so the LLM's state dict is exactly the checkpoint's `llm/` folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from nvila_core.model.configuration import NVILAConfig

_LLM_CLASSES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "llama": (LlamaConfig, LlamaForCausalLM),
}
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


def resolve_dtype(dtype: torch.dtype | str | None, config: NVILAConfig) -> torch.dtype:
    """`dtype` as a torch dtype; None means the config's `torch_dtype` (the checkpoint's own)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype or config.torch_dtype).removeprefix("torch.")
    resolved = getattr(torch, name, None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"unknown floating-point dtype {dtype!r}")
    return resolved


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create parameters directly in `dtype`, so an 8B model never exists in float32 first."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def hf_llm_config(config: NVILAConfig, attn_implementation: str = "sdpa") -> PretrainedConfig:
    """The transformers config (Qwen2Config / LlamaConfig) of the LLM."""
    if attn_implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, got "
            f"{attn_implementation!r}"
        )
    config_class, _ = _LLM_CLASSES[config.llm_type]
    values = {k: v for k, v in config.llm_config.items() if k != "model_type"}
    hf_config = config_class(**values)
    hf_config._attn_implementation = attn_implementation
    return hf_config


def build_llm(
    config: NVILAConfig,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    attn_implementation: str = "sdpa",
) -> PreTrainedModel:
    """A randomly initialised Qwen2ForCausalLM / LlamaForCausalLM for `config`.

    `device="meta"` builds the module tree without memory (for parameter counts); the RNG is
    whatever the caller seeded.
    """
    hf_config = hf_llm_config(config, attn_implementation)
    _, model_class = _LLM_CLASSES[config.llm_type]
    torch_dtype = resolve_dtype(dtype, config)
    with torch.device(device or "cpu"):
        model = model_class._from_config(
            hf_config, dtype=torch_dtype, attn_implementation=attn_implementation
        )
    # Tying happens inside HF's weight init; tie again in case the caller skipped init.
    model.tie_weights()
    return model.eval()
