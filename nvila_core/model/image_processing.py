"""Pixels -> normalised ViT tiles, and how many tiles/tokens an image costs.

Three single-image modes, chosen by `config.image_aspect_ratio` (nvila.md §2.1-2.4):
- "resize": one square tile (NaVILA, and every frame of a video or multi-image prompt);
- "dynamic_s2": NVILA-8B. Every S2 scale but the last is a square resize cut into k x k tiles; the
  last scale keeps the aspect ratio through a (cols x rows) grid of at least (last/first)^2 tiles;
- "dynamic": NVILA-Lite. InternVL-style grid of tiles plus a thumbnail when there is more than one.
Tiles are cut row-major and normalised like SigLIP: bicubic resize, x/255, (x - mean) / std.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from nvila_core.model.configuration import NVILAConfig

ImageLike = Image.Image | np.ndarray


def to_pil(image: ImageLike) -> Image.Image:
    """An RGB PIL image from a PIL image or an H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA) uint8 array."""
    if isinstance(image, Image.Image):
        pil = image
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"image arrays must be uint8, got dtype {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise ValueError(
                f"image array must be H x W, H x W x 3 or H x W x 4, got shape {image.shape}"
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"image has no pixels (shape {image.shape})")
        pil = Image.fromarray(np.ascontiguousarray(image))  # L, RGB or RGBA from the shape
    else:
        raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    if pil.width == 0 or pil.height == 0:
        raise ValueError(f"image has no pixels (size {pil.width} x {pil.height})")
    return pil if pil.mode == "RGB" else pil.convert("RGB")


def normalize_tile(image: Image.Image, size: int, mean, std) -> torch.Tensor:
    """[3, size, size] float32 ViT input: bicubic resize (a no-op for an exact tile), x/255, (x - mean)/std."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((pixels - mean_t) / std_t).contiguous()


def find_closest_grid(
    width: int, height: int, min_tiles: int, max_tiles: int, *, tile_size: int
) -> tuple[int, int]:
    """(cols, rows) of the tile grid whose aspect ratio is closest to the image's.

    Candidates are all grids with min_tiles <= cols*rows <= max_tiles, visited by ascending tile
    count. Within one tile count the order is CPython's iteration order of a set of int tuples,
    which is deterministic and is what the reference implementation visits. A candidate with the
    same ratio distance as the current best replaces it only when the image area exceeds half the
    candidate's pixel area (0.5 * tile_size^2 * cols * rows), so small images keep small grids.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    candidates = {
        (cols, rows)
        for cols in range(1, max_tiles + 1)
        for rows in range(1, max_tiles + 1)
        if min_tiles <= cols * rows <= max_tiles
    }
    if not candidates:
        raise ValueError(f"no tile grid has between {min_tiles} and {max_tiles} tiles")
    aspect = width / height
    area = width * height
    best, best_distance = (1, 1), float("inf")
    for cols, rows in sorted(candidates, key=lambda grid: grid[0] * grid[1]):
        distance = abs(aspect - cols / rows)
        if distance < best_distance:
            best, best_distance = (cols, rows), distance
        elif distance == best_distance and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def s2_min_tiles(config: NVILAConfig) -> int:
    """Tiles of the last dynamic-S2 scale are at least (last scale / first scale)^2."""
    return (config.s2_scales[-1] // config.s2_scales[0]) ** 2


def cut_tiles(image: Image.Image, cols: int, rows: int, tile: int) -> list[Image.Image]:
    """Resize to (tile*cols, tile*rows), aspect ratio not kept, and cut row-major tiles."""
    resized = image.resize((tile * cols, tile * rows), Image.Resampling.BICUBIC)
    return [
        resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile))
        for r in range(rows)
        for c in range(cols)
    ]


@dataclass
class ProcessedImage:
    """ViT input for one image and what the prompt needs to know about it."""

    pixel_values: torch.Tensor  # [N, 3, S, S]
    block_size: tuple[int, int] | None  # (rows, cols) of the last dynamic-S2 scale
    num_blocks: int  # <image> token blocks this image becomes in the prompt


class ImageProcessor:
    """Turns images and frames into normalised tiles for one model configuration."""

    def __init__(self, config: NVILAConfig):
        self.config = config
        self.tile_size = config.tile_size

    def _normalize(self, tiles: Sequence[Image.Image]) -> torch.Tensor:
        cfg = self.config
        return torch.stack(
            [normalize_tile(t, self.tile_size, cfg.image_mean, cfg.image_std) for t in tiles]
        )

    def process_image(self, image: ImageLike) -> ProcessedImage:
        """Tiles of a prompt's only image, following `config.image_aspect_ratio`."""
        pil = to_pil(image)
        cfg, tile = self.config, self.tile_size
        mode = cfg.image_aspect_ratio
        if mode == "resize":
            return ProcessedImage(self._normalize([pil]), None, 1)
        if mode == "dynamic_s2":
            tiles: list[Image.Image] = []
            for scale in cfg.s2_scales[:-1]:
                per_side = scale // tile
                tiles += cut_tiles(pil, per_side, per_side, tile)
            cols, rows = find_closest_grid(
                pil.width, pil.height, s2_min_tiles(cfg), cfg.max_tiles, tile_size=tile
            )
            tiles += cut_tiles(pil, cols, rows, tile)
            return ProcessedImage(self._normalize(tiles), (rows, cols), 1)
        cols, rows = find_closest_grid(
            pil.width, pil.height, cfg.min_tiles, cfg.max_tiles, tile_size=tile
        )
        tiles = cut_tiles(pil, cols, rows, tile)
        if len(tiles) > 1:
            tiles.append(pil)
        return ProcessedImage(self._normalize(tiles), None, len(tiles))

    def process_frames(self, frames: Sequence[ImageLike]) -> torch.Tensor:
        """[T, 3, S, S]: one resized tile per frame (video and multi-image prompts never tile)."""
        if len(frames) == 0:
            raise ValueError("process_frames needs at least one frame")
        return self._normalize([to_pil(frame) for frame in frames])


@dataclass
class ImagePlan:
    """What an image or a set of frames costs, known before any model runs."""

    vit_passes: int  # tiles through the ViT
    tokens: int  # visual tokens spliced into the prompt, "\n" separators excluded
    grid: tuple[int, int] | None  # (rows, cols) of the tile grid, None without tiling
    blocks: int  # <image> token blocks in the prompt


def plan_image(config: NVILAConfig, width: int, height: int) -> ImagePlan:
    """The cost of `ImageProcessor.process_image` on a width x height image."""
    per_tile = config.tokens_per_tile
    tile = config.tile_size
    mode = config.image_aspect_ratio
    if mode == "resize":
        return ImagePlan(vit_passes=1, tokens=per_tile, grid=None, blocks=1)
    if mode == "dynamic_s2":
        cols, rows = find_closest_grid(
            width, height, s2_min_tiles(config), config.max_tiles, tile_size=tile
        )
        square_tiles = sum((scale // tile) ** 2 for scale in config.s2_scales[:-1])
        return ImagePlan(
            vit_passes=square_tiles + rows * cols,
            tokens=per_tile * rows * cols,
            grid=(rows, cols),
            blocks=1,
        )
    cols, rows = find_closest_grid(
        width, height, config.min_tiles, config.max_tiles, tile_size=tile
    )
    tiles = rows * cols + (1 if rows * cols > 1 else 0)
    return ImagePlan(vit_passes=tiles, tokens=per_tile * tiles, grid=(rows, cols), blocks=tiles)


def plan_frames(config: NVILAConfig, num_frames: int) -> ImagePlan:
    """The cost of `process_frames` on num_frames frames, before any temporal pooling."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return ImagePlan(
        vit_passes=num_frames,
        tokens=num_frames * config.tokens_per_tile,
        grid=None,
        blocks=num_frames,
    )
