"""NVILAConfig: presets, real VILA config.json parsing, validation errors."""

import dataclasses
import json

import pytest

from nvila_core.model.configuration import ConfigError, NVILAConfig, list_presets

# The top-level NVILA-8B config.json as published (keys that matter here; nvila.md §1.2).
NVILA_8B_CONFIG_JSON = {
    "architectures": ["LlavaLlamaModel"],
    "model_type": "llava_llama",
    "hidden_size": 3584,
    "mm_hidden_size": 3456,
    "image_aspect_ratio": "dynamic_s2",
    "dynamic_s2": True,
    "s2": False,
    "s2_scales": "448,896,1344",
    "s2_max_split_size": 448,
    "s2_resize_output_to_scale_idx": -1,
    "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "cls_patch",
    "num_video_frames": 8,
    "llm_cfg": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-06,
        "max_position_embeddings": 32768,
        "model_max_length": 8192,
        "tie_word_embeddings": False,
        "vocab_size": 151648,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision_tower_cfg": {
        "architectures": ["SiglipVisionModel"],
        "model_type": "siglip_vision_model",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "patch_size": 14,
        "image_size": 448,
        "layer_norm_eps": 1e-06,
        "hidden_act": "gelu_pytorch_tanh",
        "num_image_tokens": 256,
        "projection_dim": 2048,
    },
    "mm_projector_cfg": {
        "architectures": ["MultimodalProjector"],
        "model_type": "v2l_projector",
        "mm_projector_type": "mlp_downsample",
    },
}


def test_every_preset_loads_and_validates():
    names = list_presets()
    assert {"tiny", "nvila-8b", "nvila-lite-2b", "nvila-lite-8b", "navila-8b"} <= set(names)
    for name in names:
        assert NVILAConfig.preset(name).name == name


def test_preset_derived_quantities():
    nvila = NVILAConfig.preset("nvila-8b")
    assert (nvila.tile_size, nvila.patch_grid, nvila.mm_hidden_size) == (448, 32, 3456)
    assert nvila.tokens_per_tile == 256 and nvila.appends_newline_embedding
    lite = NVILAConfig.preset("nvila-lite-8b")
    assert (lite.mm_hidden_size, lite.downsample_rate, lite.tokens_per_tile) == (1152, 3, 121)
    navila = NVILAConfig.preset("navila-8b")
    assert (navila.patch_grid, navila.tokens_per_tile) == (27, 196)
    assert navila.llm_type == "llama" and not navila.appends_newline_embedding


def test_reads_real_nvila_config_json():
    cfg = NVILAConfig.from_vila_config(NVILA_8B_CONFIG_JSON, name="NVILA-8B")
    preset = NVILAConfig.preset("nvila-8b")
    assert cfg.image_aspect_ratio == "dynamic_s2" and cfg.s2_scales == [448, 896, 1344]
    assert cfg.mm_hidden_size == NVILA_8B_CONFIG_JSON["mm_hidden_size"]
    assert cfg.llm_config["vocab_size"] == 151648 and cfg.llm_type == "qwen2"
    assert cfg.model_max_length == 8192 and cfg.chat_template == "qwen2"
    assert cfg.vision_config == {k: preset.vision_config[k] for k in cfg.vision_config}
    assert "projection_dim" not in cfg.vision_config  # PaliGemma leftovers are dropped


def test_vila_config_round_trip():
    cfg = NVILAConfig.preset("nvila-lite-2b")
    vila = json.loads(json.dumps(cfg.to_vila_config()))
    back = NVILAConfig.from_vila_config(vila, name=cfg.name)
    for key in ("mm_projector_type", "image_aspect_ratio", "s2_scales", "video_pool_sizes"):
        assert getattr(back, key) == getattr(cfg, key), key
    assert back.llm_config == cfg.llm_config


def test_tsp_video_encoder_pool_sizes_are_read():
    data = dict(NVILA_8B_CONFIG_JSON)
    data["video_encoder"] = json.dumps(
        {"_target_": "llava.model.encoders.TSPVideoEncoder", "pool_sizes": [[8, 1, 1]]}
    )
    assert NVILAConfig.from_vila_config(data).video_pool_sizes == [[8, 1, 1]]


def test_navila_style_config_is_vila15():
    data = dict(NVILA_8B_CONFIG_JSON)
    data["llm_cfg"] = {**data["llm_cfg"], "model_type": "llama", "vocab_size": 128256}
    data["image_aspect_ratio"] = "resize"
    data["vision_tower_cfg"] = {**data["vision_tower_cfg"], "image_size": 384}
    cfg = NVILAConfig.from_vila_config(data)
    assert cfg.architecture == "vila1.5" and cfg.chat_template == "llama_3"
    assert cfg.tokens_per_tile == 196


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mm_projector_type": "mlp_magic"}, "unknown projector type 'mlp_magic'"),
        ({"image_aspect_ratio": "stretch"}, "image_aspect_ratio"),
        ({"s2_scales": [448, 900]}, "s2_scales"),
        ({"video_pool_sizes": [[0, 1, 1]]}, "video_pool_sizes"),
        ({"mm_vision_select_layer": -40}, "mm_vision_select_layer"),
        ({"max_tiles": 8}, "max_tiles 8 < 9"),
    ],
)
def test_invalid_configs_are_rejected_with_the_reason(change, message):
    data = NVILAConfig.preset("nvila-8b").to_dict() | change
    with pytest.raises(ConfigError, match=message):
        NVILAConfig.from_dict(data)


def test_unknown_keys_and_missing_presets_are_named():
    with pytest.raises(ConfigError, match="unknown model config keys: bogus"):
        NVILAConfig.from_dict({**NVILAConfig.preset("tiny").to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="no model preset 'nvila-900b'"):
        NVILAConfig.preset("nvila-900b")
    with pytest.raises(ConfigError, match="no vision tower config"):
        NVILAConfig.from_vila_config({"llm_cfg": NVILA_8B_CONFIG_JSON["llm_cfg"]})


def test_projector_token_order_defaults_to_the_lineage():
    nvila, navila = NVILAConfig.preset("nvila-8b"), NVILAConfig.preset("navila-8b")
    assert (nvila.projector_token_order, nvila.token_order) == ("auto", "row_major")
    assert (navila.projector_token_order, navila.token_order) == ("auto", "column_major")
    # "auto" follows the architecture, also after a replace
    assert dataclasses.replace(navila, architecture="nvila").token_order == "row_major"
    explicit = dataclasses.replace(navila, projector_token_order="row_major")
    assert explicit.token_order == "row_major"
    assert NVILAConfig.from_dict(explicit.to_dict()).token_order == "row_major"
    with pytest.raises(ConfigError, match="projector_token_order"):
        dataclasses.replace(nvila, projector_token_order="diagonal")
    with pytest.raises(ConfigError, match=r"dynamic_s2 .* row_major"):
        dataclasses.replace(nvila, projector_token_order="column_major")
