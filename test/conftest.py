"""Shared fixtures: one tiny random NVILA model (float32, CPU) per session, and its checkpoint.

Session-scoped objects are shared between tests: tests must not modify them.
"""

import dataclasses

import numpy as np
import pytest
import torch

from nvila_core.model.checkpoint import save_checkpoint
from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.tokenizer import build_tokenizer

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine spinning OpenMP
# workers make them 10-30x slower; one thread keeps the suite fast and its timing stable.
torch.set_num_threads(1)

TINY_LLAMA = {
    "model_type": "llama",
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1.0e-5,
    "tie_word_embeddings": False,
    "initializer_range": 0.1,
}


@pytest.fixture(scope="session")
def tiny_config() -> NVILAConfig:
    return NVILAConfig.preset("tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_config):
    return build_tokenizer(tiny_config.llm_config["vocab_size"], tiny_config.chat_template)


@pytest.fixture(scope="session")
def tiny_model(tiny_config, tiny_tokenizer) -> NVILAModel:
    return NVILAModel.from_config(tiny_config, seed=0, tokenizer=tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_vila15_config(tiny_config) -> NVILAConfig:
    """A NaVILA-shaped tiny model: Llama LLM, -200 splicing, no "\\n", one resized tile."""
    return dataclasses.replace(
        tiny_config,
        name="tiny-vila1.5",
        architecture="vila1.5",
        chat_template="llama_3",
        llm_config=dict(TINY_LLAMA),
        image_aspect_ratio="resize",
        s2_scales=[tiny_config.tile_size],
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model, tiny_tokenizer):
    """The tiny model saved in the VILA split layout."""
    return save_checkpoint(tiny_model, tiny_tokenizer, tmp_path_factory.mktemp("tiny-vila"))


@pytest.fixture
def make_frames():
    """A function returning `count` random RGB uint8 frames (seeded, so tests are repeatable)."""
    rng = np.random.default_rng(0)

    def make(count: int, height: int = 60, width: int = 80) -> list[np.ndarray]:
        return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]

    return make
