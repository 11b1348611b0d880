"""Vision tower vs HF SigLIP, dynamic-S2 merge placement and area resize, end-to-end token counts."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import SiglipVisionConfig, SiglipVisionModel

from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.image_processing import ImageProcessor, plan_frames, plan_image
from nvila_core.model.projector import MultimodalProjector
from nvila_core.model.vision import (
    VisionTower,
    encode_frames,
    encode_image,
    merge_blocks,
    merge_dynamic_s2,
    repeat_scales,
)

TINY = NVILAConfig.preset("tiny")
TINY_DYNAMIC = dataclasses.replace(
    TINY, image_aspect_ratio="dynamic", s2_scales=[56], mm_projector_type="mlp_downsample_3x3_fix"
)
TINY_RESIZE = dataclasses.replace(TINY, image_aspect_ratio="resize", s2_scales=[56])


def hf_siglip(config: NVILAConfig) -> SiglipVisionModel:
    return SiglipVisionModel(SiglipVisionConfig(**config.vision_config, vision_use_head=False))


# ------------------------------------------------------------------ vision tower
def test_state_dict_keys_are_hf_siglip_names():
    torch.manual_seed(0)
    tower = VisionTower(TINY)
    keys = set(tower.state_dict())
    assert keys == {f"vision_model.{k}" for k in hf_siglip(TINY).state_dict()}
    assert "vision_model.embeddings.patch_embedding.weight" in keys
    assert "vision_model.encoder.layers.2.mlp.fc2.weight" in keys
    assert "vision_model.post_layernorm.weight" in keys
    assert not any(".head." in k for k in keys)


def test_forward_equals_hf_hidden_states_minus_two():
    torch.manual_seed(0)
    reference = hf_siglip(TINY).eval()
    tower = VisionTower(TINY).eval()
    tower.load_state_dict({f"vision_model.{k}": v for k, v in reference.state_dict().items()})
    pixels = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        ours = tower(pixels)
        theirs = reference(pixels, output_hidden_states=True).hidden_states
    assert len(theirs) == 4  # embeddings + 3 blocks
    assert tower.num_layers_run == 2
    assert ours.shape == (3, 16, 32)
    torch.testing.assert_close(ours, theirs[-2])


def test_positive_select_layer_and_skipped_blocks():
    torch.manual_seed(0)
    tower = VisionTower(dataclasses.replace(TINY, mm_vision_select_layer=1)).eval()
    assert tower.num_layers_run == 1
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        theirs = tower.vision_model(pixels, output_hidden_states=True).hidden_states
        torch.testing.assert_close(tower(pixels), theirs[1])
        # Blocks after the selected one and post_layernorm never run: poisoning them changes nothing.
        for p in [*tower.vision_model.encoder.layers[1:].parameters()]:
            p.fill_(float("nan"))
        tower.vision_model.post_layernorm.weight.fill_(float("nan"))
        torch.testing.assert_close(tower(pixels), theirs[1])


def test_real_tower_shapes_on_meta_device():
    with torch.device("meta"):
        tower = VisionTower(NVILAConfig.preset("nvila-8b"))
    state = tower.state_dict()
    assert tower.num_layers_run == 26  # of 27: select layer -2
    assert state["vision_model.embeddings.patch_embedding.weight"].shape == (1152, 3, 14, 14)
    assert state["vision_model.embeddings.position_embedding.weight"].shape == (1024, 1152)
    assert sum(t.numel() for t in state.values()) == 413_327_088  # 827 MB in bf16, no head


# ------------------------------------------------------------------ dynamic-S2 merge
def per_tile_constants(count: int, grid: int = 4, channels: int = 2) -> torch.Tensor:
    """[count, grid*grid, channels] where every feature of tile i equals i + 1."""
    values = torch.arange(1, count + 1, dtype=torch.float32)
    return values[:, None, None].expand(count, grid * grid, channels).clone()


def test_merge_places_blocks_and_scales():
    merged = merge_dynamic_s2(per_tile_constants(17), (3, 4), TINY)
    assert merged.shape == (12, 16, 6)  # 3x4 blocks of a 4x4 grid, 2 channels x 3 scales
    # scale 56: one tile (value 1) spread over the whole 12x16 map
    assert torch.all(merged[..., 0:2] == 1)
    # scale 168: block b is last-scale tile b (values 6..17), untouched
    for block in range(12):
        assert torch.all(merged[block, :, 4:6] == block + 6)
    # scale 112: the 2x2 tiles (values 2,3 / 4,5) form an 8x8 map resized to 12x16, so the
    # top tile covers map rows 0-5 and the left tile map columns 0-7.
    scale_112 = merged[..., 2]
    assert torch.all(scale_112[0] == 2) and torch.all(scale_112[1] == 2)
    assert torch.all(scale_112[2] == 3) and torch.all(scale_112[3] == 3)
    block_1_0 = scale_112[4].reshape(4, 4)  # map rows 4-7, columns 0-3
    torch.testing.assert_close(
        block_1_0, torch.tensor([[2.0] * 4, [2.0] * 4, [4.0] * 4, [4.0] * 4])
    )
    assert torch.all(scale_112[11] == 5)


def full_map(merged: torch.Tensor, channel: int) -> torch.Tensor:
    """One channel of a merged [12 blocks, 16, C] tiny output as its 12 x 16 feature map."""
    return merged[..., channel].reshape(3, 4, 4, 4).permute(0, 2, 1, 3).reshape(12, 16)


def test_merge_area_interpolation():
    features = torch.zeros(17, 16, 2)
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    features[0, :, 0] = (rows * 4 + cols).flatten()  # 56-scale patch (y, x) holds 4y + x
    for tile in range(4):  # 112-scale map: each patch holds its map row 0..7
        features[1 + tile, :, 0] = (rows + 4 * (tile // 2)).flatten()
    merged = merge_dynamic_s2(features, (3, 4), TINY)
    # 4x4 -> 12x16 is an integer 3x / 4x upsample: plain replication
    map_rows, map_cols = torch.meshgrid(torch.arange(12), torch.arange(16), indexing="ij")
    torch.testing.assert_close(full_map(merged, 0), ((map_rows // 3) * 4 + map_cols // 4).float())
    # 8 -> 12 rows is 1.5x: output row i averages input rows floor(8i/12) .. ceil(8(i+1)/12) - 1
    rows_112 = torch.tensor([0, 0.5, 1, 2, 2.5, 3, 4, 4.5, 5, 6, 6.5, 7])
    torch.testing.assert_close(full_map(merged, 2), rows_112[:, None].expand(12, 16))


def test_merge_rejects_wrong_tile_count():
    with pytest.raises(ValueError, match=r"expected \[17, 16, C\]"):
        merge_dynamic_s2(per_tile_constants(14), (3, 4), TINY)


def test_repeat_scales_and_merge_blocks():
    x = torch.tensor([[[1.0, 2.0]]])
    torch.testing.assert_close(
        repeat_scales(x, 3), torch.tensor([[[1.0, 2.0, 1.0, 2.0, 1.0, 2.0]]])
    )
    # two blocks side by side, 2x2 tokens each: a0 a1 / a2 a3 and b0 b1 / b2 b3
    blocks = torch.tensor([[[10.0], [11.0], [12.0], [13.0]], [[20.0], [21.0], [22.0], [23.0]]])
    laid = merge_blocks(blocks, 1, 2)[:, 0].tolist()
    assert laid == [10.0, 11.0, 20.0, 21.0, 12.0, 13.0, 22.0, 23.0]


# ------------------------------------------------------------------ end to end on tiny models
def build(config: NVILAConfig) -> tuple[VisionTower, MultimodalProjector]:
    torch.manual_seed(0)
    return VisionTower(config).eval(), MultimodalProjector.from_config(config).eval()


def camera_image(width: int, height: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "config", [TINY, TINY_DYNAMIC, TINY_RESIZE], ids=lambda c: c.image_aspect_ratio
)
@pytest.mark.parametrize("size", [(64, 48), (80, 80), (48, 64)])
def test_encode_image_token_counts_match_plan(config, size):
    tower, projector = build(config)
    processed = ImageProcessor(config).process_image(camera_image(*size))
    with torch.no_grad():
        blocks = encode_image(tower, projector, processed, config)
    plan = plan_image(config, *size)
    assert len(blocks) == plan.blocks
    assert sum(b.shape[0] for b in blocks) == plan.tokens
    assert all(b.shape[1] == config.llm_hidden_size for b in blocks)


def test_encode_image_dynamic_s2_is_merged_blocks():
    tower, projector = build(TINY)
    processed = ImageProcessor(TINY).process_image(camera_image(64, 48))
    with torch.no_grad():
        (tokens,) = encode_image(tower, projector, processed, TINY)
        per_block = projector(merge_dynamic_s2(tower(processed.pixel_values), (3, 4), TINY))
    assert tokens.shape == (48, 64)
    # token map is 6 x 8 (2x2 tokens per block): token (row 2, col 3) is block (1, 1), token (0, 1)
    torch.testing.assert_close(tokens[2 * 8 + 3], per_block[1 * 4 + 1, 1])


def test_encode_frames_is_per_frame():
    tower, projector = build(TINY)
    frames = [Image.new("RGB", (64, 48), (i * 60, 30, 200)) for i in range(3)]
    pixels = ImageProcessor(TINY).process_frames(frames)
    with torch.no_grad():
        all_frames = encode_frames(tower, projector, pixels, TINY)
        middle = encode_frames(tower, projector, pixels[1:2], TINY)
    assert all_frames.shape == (3, TINY.tokens_per_tile, 64)
    assert all_frames.shape[0] * all_frames.shape[1] == plan_frames(TINY, 3).tokens
    torch.testing.assert_close(all_frames[1], middle[0], atol=1e-5, rtol=1e-5)
