"""Roofline projection: the meta-device counts are the real model's, and the bounds add up."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import DynamicCache

from nvila_core import roofline
from nvila_core.cli import main as cli_main
from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.modeling import NVILAModel
from nvila_core.transformers_compat import cache_argument

ORIN = roofline.DEVICES["agx-orin-64gb"]


@pytest.fixture(scope="module")
def tiny_config() -> NVILAConfig:
    return NVILAConfig.preset("tiny")


def _real_flops(fn) -> float:
    # The math attention backend: FlopCounterMode does not count CPU's fused SDPA kernels.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def test_meta_counts_equal_a_real_forward_of_the_same_model(tiny_config):
    meta = NVILAModel.from_config(tiny_config, device="meta")
    real = NVILAModel.from_config(tiny_config, seed=0)
    size = tiny_config.tile_size
    pixels = torch.rand(2, 3, size, size)
    with torch.inference_mode():
        vision = _real_flops(lambda: real.frame_features(pixels))
    assert roofline.vision_flops(meta, 2) == vision > 0

    hidden = tiny_config.llm_config["hidden_size"]
    embeds = torch.randn(1, 40, hidden)

    def prefill() -> None:
        states = real.llm.model(inputs_embeds=embeds, use_cache=True).last_hidden_state
        real.llm.lm_head(states[:, -1:])

    with torch.inference_mode():
        assert roofline.prefill_flops(meta, 40) == _real_flops(prefill)

    # the last 10 positions fed after a kept cache of 30
    with torch.inference_mode():
        cache = DynamicCache(config=real.llm.config)
        real.llm.model(inputs_embeds=embeds[:, :30], use_cache=True, **cache_argument(cache))

        def prefill_tail() -> None:
            states = real.llm.model(
                inputs_embeds=embeds[:, 30:], use_cache=True, **cache_argument(cache)
            ).last_hidden_state
            real.llm.lm_head(states[:, -1:])

        assert roofline.prefill_flops(meta, 40, reused=30) == _real_flops(prefill_tail)


def test_prefill_flops_are_two_per_weight_per_token_plus_attention(tiny_config):
    meta = NVILAModel.from_config(tiny_config, device="meta")
    layers = meta.llm.model.layers
    linear = sum(m.weight.numel() for m in layers.modules() if isinstance(m, nn.Linear))
    tokens = 64
    flops = roofline.prefill_flops(meta, tokens)
    lm_head = 2 * meta.llm.lm_head.weight.numel()
    llm = tiny_config.llm_config
    attention = 4 * tokens * tokens * llm["hidden_size"] * llm["num_hidden_layers"]
    assert flops == pytest.approx(2 * tokens * linear + lm_head + attention, rel=0.01)
    # one decode step: the same weights for one token, attention over the cache
    step = roofline.decode_flops(meta, tokens)
    assert 2 * linear < step < 2 * linear + lm_head + attention


def test_weight_bytes_follow_the_deployed_formats(tiny_config):
    meta = NVILAModel.from_config(tiny_config, device="meta")
    bytes_ = roofline.weight_bytes(meta)
    expected = 0.0
    for module in meta.llm.model.layers.modules():
        if isinstance(module, nn.Linear):
            blocks = -(-module.in_features // roofline.W4_BLOCK)
            expected += module.weight.numel() / 2 + module.out_features * blocks * 2
            if module.bias is not None:
                expected += module.bias.numel() * 2
        elif not list(module.children()):
            expected += sum(p.numel() * 2 for p in module.parameters(recurse=False))
    expected += meta.llm.model.norm.weight.numel() * 2
    assert bytes_["decoder"] == pytest.approx(expected)
    hidden = tiny_config.llm_config["hidden_size"]
    assert bytes_["embedding_row"] == hidden * 2
    llm = tiny_config.llm_config
    kv_heads = llm.get("num_key_value_heads") or llm["num_attention_heads"]
    head_dim = hidden // llm["num_attention_heads"]
    assert (
        roofline.kv_cache_bytes(tiny_config, 10)
        == 2 * llm["num_hidden_layers"] * kv_heads * head_dim * 10 * 2
    )


def test_navila_8b_on_orin_prefill_is_compute_bound_and_decode_memory_bound():
    config = NVILAConfig.preset("navila-8b")
    vision, prefill, decode = roofline.project(config, ORIN, frames=8, context=1737, answer=10)
    assert (vision.limit, prefill.limit, decode.limit) == ("compute", "compute", "memory")
    assert vision.precision == "int8" and prefill.precision == "fp16"
    # a decode step reads every int4 decoder weight and the FP16 lm_head once
    assert 4.0e9 < decode.bytes / 10 < 5.5e9
    assert decode.bound_s == pytest.approx(decode.bytes / (ORIN.bandwidth_gbs * 1e9))
    chosen = roofline.project(config, ORIN, 1, 1737, 10, choose=(10, 8))
    assert chosen[-1].name.startswith("choose") and chosen[-1].bound_s < decode.bound_s / 3
    with pytest.raises(ValueError, match="choose"):
        roofline.project(config, ORIN, 1, 1737, 10, choose=(0, 8))
    # the last prompt's beginning kept: only the rest is prefilled, attending to all of it
    reusing = roofline.project(config, ORIN, 1, 1737, 10, choose=(10, 8), reused=700)
    assert reusing[1].name == "prefill (1037 of 1737 tokens)"
    assert 1037 / 1737 < reusing[1].flops / chosen[1].flops < 1.0
    with pytest.raises(ValueError, match="reused"):
        roofline.project(config, ORIN, 1, 1737, 10, reused=1737)


def test_cli_prints_the_table_and_writes_csv(capsys, tmp_path):
    out = tmp_path / "roofline.csv"
    assert (
        cli_main(["roofline", "tiny", "--frames", "2", "--context", "50", "--csv", str(out)]) == 0
    )
    text = capsys.readouterr().out
    assert "| prefill (50 tokens) | fp16 |" in text and "queries/s" in text
    rows = list(csv.DictReader(out.open()))
    assert [r["name"] for r in rows] == [
        "vision (2 frames)",
        "prefill (50 tokens)",
        "decode (10 tokens)",
    ]
    assert all(float(r["bound_s"]) > 0 for r in rows)
