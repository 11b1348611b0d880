"""Tiling, normalisation and token/ViT-pass budgets of the three image modes."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.image_processing import (
    ImagePlan,
    ImageProcessor,
    find_closest_grid,
    normalize_tile,
    plan_frames,
    plan_image,
    to_pil,
)

TINY = NVILAConfig.preset("tiny")
TINY_DYNAMIC = dataclasses.replace(
    TINY, image_aspect_ratio="dynamic", s2_scales=[56], mm_projector_type="mlp_downsample_3x3_fix"
)
TINY_RESIZE = dataclasses.replace(TINY, image_aspect_ratio="resize", s2_scales=[56])


def textured_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


# ------------------------------------------------------------------ input conversion
def test_to_pil_accepts_gray_rgb_rgba():
    gray = np.full((5, 7), 200, dtype=np.uint8)
    assert np.array_equal(np.asarray(to_pil(gray)), np.full((5, 7, 3), 200, dtype=np.uint8))
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 9
    converted = to_pil(rgba)
    assert converted.mode == "RGB" and converted.size == (6, 4)
    assert np.asarray(converted)[0, 0].tolist() == [9, 0, 0]
    assert to_pil(Image.new("L", (3, 3))).mode == "RGB"


def test_to_pil_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        to_pil(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        to_pil(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="no pixels"):
        to_pil(np.zeros((0, 4, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match="str"):
        to_pil("camera.png")


# ------------------------------------------------------------------ normalisation
def test_normalize_constant_colour():
    image = Image.new("RGB", (30, 20), (255, 0, 51))
    tile = normalize_tile(image, 56, [0.5] * 3, [0.5] * 3)
    assert tile.shape == (3, 56, 56) and tile.dtype == torch.float32
    assert torch.all(tile[0] == 1.0) and torch.all(tile[1] == -1.0)
    torch.testing.assert_close(tile[2], torch.full((56, 56), 51 / 255 * 2 - 1))


def test_normalize_uses_bicubic_resize_and_per_channel_stats():
    image = textured_image(40, 30)
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    tile = normalize_tile(image, 56, mean, std)
    resized = np.asarray(image.resize((56, 56), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    expected = (resized - np.array(mean, np.float32)) / np.array(std, np.float32)
    torch.testing.assert_close(tile, torch.from_numpy(expected).permute(2, 0, 1))


# ------------------------------------------------------------------ grid choice
@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (640, 480, (4, 3)),
        (1024, 1024, (3, 3)),
        (100, 100, (3, 3)),
        (1280, 720, (4, 3)),
        (480, 640, (3, 4)),
        (2000, 400, (6, 2)),
        (400, 2000, (1, 9)),  # distance is in width/height: |0.2 - 1/9| < |0.2 - 1/3|
        (5000, 100, (12, 1)),
    ],
)
def test_dynamic_s2_grid(width, height, expected):
    assert find_closest_grid(width, height, 9, 12, tile_size=448) == expected


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        # squares tie on (1,1), (2,2), (3,3): a larger grid wins only above half its pixel area
        (300, 300, (1, 1)),
        (633, 633, (1, 1)),  # 633^2 = 400689 <= 0.5 * 448^2 * 4 = 401408
        (634, 634, (2, 2)),  # 634^2 = 401956 > 401408
        (700, 700, (2, 2)),
        (1000, 1000, (3, 3)),
        # 1:2 ties between (1,2) and (2,4)
        (448, 896, (1, 2)),
        (896, 1792, (2, 4)),
    ],
)
def test_tie_rule(width, height, expected):
    assert find_closest_grid(width, height, 1, 12, tile_size=448) == expected


def test_no_candidate_grid():
    with pytest.raises(ValueError, match="between 9 and 4 tiles"):
        find_closest_grid(640, 480, 9, 4, tile_size=448)


# ------------------------------------------------------------------ processing
def test_dynamic_s2_tiles_in_order():
    processed = ImageProcessor(TINY).process_image(textured_image(64, 48))
    assert processed.pixel_values.shape == (17, 3, 56, 56)  # 1 + 4 + 4*3
    assert processed.block_size == (3, 4) and processed.num_blocks == 1
    image = textured_image(64, 48)
    stats = (TINY.image_mean, TINY.image_std)
    torch.testing.assert_close(processed.pixel_values[0], normalize_tile(image, 56, *stats))
    square = image.resize((112, 112), Image.Resampling.BICUBIC)
    top_right = square.crop((56, 0, 112, 56))
    torch.testing.assert_close(processed.pixel_values[2], normalize_tile(top_right, 56, *stats))
    grid = image.resize((224, 168), Image.Resampling.BICUBIC)
    row1_col2 = grid.crop((112, 56, 168, 112))
    torch.testing.assert_close(processed.pixel_values[5 + 6], normalize_tile(row1_col2, 56, *stats))


def test_dynamic_s2_square_and_tall():
    processor = ImageProcessor(TINY)
    assert processor.process_image(textured_image(80, 80)).pixel_values.shape[0] == 14
    tall = processor.process_image(np.zeros((64, 48, 3), dtype=np.uint8))
    assert tall.block_size == (4, 3) and tall.pixel_values.shape[0] == 17


def test_dynamic_mode_adds_thumbnail():
    image = textured_image(640, 480)
    processed = ImageProcessor(TINY_DYNAMIC).process_image(image)
    assert processed.pixel_values.shape == (13, 3, 56, 56)
    assert processed.block_size is None and processed.num_blocks == 13
    thumbnail = normalize_tile(image, 56, TINY.image_mean, TINY.image_std)
    torch.testing.assert_close(processed.pixel_values[-1], thumbnail)
    single = ImageProcessor(TINY_DYNAMIC).process_image(textured_image(40, 40))
    assert single.pixel_values.shape[0] == 1 and single.num_blocks == 1


def test_resize_mode_and_frames():
    processed = ImageProcessor(TINY_RESIZE).process_image(textured_image(64, 48))
    assert processed.pixel_values.shape == (1, 3, 56, 56) and processed.num_blocks == 1
    frames = [textured_image(64, 48), np.zeros((10, 20), np.uint8), textured_image(56, 56)]
    pixels = ImageProcessor(TINY).process_frames(frames)
    assert pixels.shape == (3, 3, 56, 56)
    assert torch.all(pixels[1] == -1.0)
    with pytest.raises(ValueError, match="at least one frame"):
        ImageProcessor(TINY).process_frames([])


# ------------------------------------------------------------------ budgets of the real presets
def test_plan_nvila_8b():
    config = NVILAConfig.preset("nvila-8b")
    assert plan_image(config, 640, 480) == ImagePlan(
        vit_passes=17, tokens=3072, grid=(3, 4), blocks=1
    )
    assert plan_image(config, 1280, 720) == ImagePlan(17, 3072, (3, 4), 1)
    assert plan_image(config, 1024, 1024) == ImagePlan(14, 2304, (3, 3), 1)
    assert plan_frames(config, 1) == ImagePlan(1, 256, None, 1)
    assert plan_frames(config, 8).tokens == 2048


def test_plan_navila_8b():
    config = NVILAConfig.preset("navila-8b")
    assert plan_frames(config, 1).tokens == 196
    assert plan_frames(config, 8) == ImagePlan(8, 1568, None, 8)
    assert plan_image(config, 640, 480) == ImagePlan(1, 196, None, 1)


def test_plan_nvila_lite():
    config = NVILAConfig.preset("nvila-lite-8b")
    assert plan_image(config, 640, 480) == ImagePlan(13, 121 * 13, (3, 4), 13)
    assert plan_image(NVILAConfig.preset("nvila-lite-2b"), 1024, 1024) == ImagePlan(
        10, 1210, (3, 3), 10
    )
    assert plan_image(config, 300, 300) == ImagePlan(1, 121, (1, 1), 1)


@pytest.mark.parametrize(
    "config", [TINY, TINY_DYNAMIC, TINY_RESIZE], ids=lambda c: c.image_aspect_ratio
)
@pytest.mark.parametrize("size", [(64, 48), (48, 64), (80, 80), (200, 40), (20, 20)])
def test_plan_matches_processing(config, size):
    processed = ImageProcessor(config).process_image(textured_image(*size))
    plan = plan_image(config, *size)
    assert plan.vit_passes == processed.pixel_values.shape[0]
    assert plan.blocks == processed.num_blocks
    if config.image_aspect_ratio == "dynamic_s2":
        assert plan.grid == processed.block_size
