"""SigLIP vision tower, dynamic-S2 feature merge, and the image/frame -> LLM-embedding glue.

Feature flow for one NVILA-8B image (nvila.md §2.3): ViT on all tiles -> per scale, the tiles are
laid back into one feature map -> every map is area-resized to the last scale's size -> channels
concatenated in ascending scale order -> the map is cut into 32 x 32 blocks -> the projector merges
2 x 2 patches inside each block -> blocks are laid back into one row-major token map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.image_processing import ProcessedImage
from nvila_core.model.projector import MultimodalProjector


class VisionTower(nn.Module):
    """SigLIP run up to the layer `mm_vision_select_layer` picks.

    `self.vision_model` is a HF `SiglipVisionModel` (no pooling head), so the state-dict keys are
    the checkpoint's (`vision_model.embeddings.*`, `vision_model.encoder.layers.N.*`,
    `vision_model.post_layernorm.*`). The blocks after the selected one and `post_layernorm` are
    kept for loading but never run: their output is discarded by NVILA anyway.
    """

    def __init__(self, config: NVILAConfig):
        super().__init__()
        siglip_config = SiglipVisionConfig(**{**config.vision_config, "vision_use_head": False})
        self.vision_model = SiglipVisionModel(siglip_config)
        total = siglip_config.num_hidden_layers
        select = config.mm_vision_select_layer
        # hidden_states[i] is the output after i blocks (index 0: the embeddings).
        self._num_layers_run = total + 1 + select if select < 0 else select
        if not 1 <= self._num_layers_run <= total:
            raise ValueError(f"mm_vision_select_layer {select} selects no block of {total}")

    @property
    def num_layers_run(self) -> int:
        """Encoder blocks actually executed (26 of 27 for select layer -2)."""
        return self._num_layers_run

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> [N, grid*grid, C] patch features of the selected block."""
        hidden = self.vision_model.embeddings(pixel_values)
        for layer in self.vision_model.encoder.layers[: self._num_layers_run]:
            hidden = layer(hidden, None)
        return hidden


def _tiles_to_map(tiles: torch.Tensor, rows: int, cols: int, grid: int) -> torch.Tensor:
    """[rows*cols, grid*grid, C] row-major tiles -> one [C, rows*grid, cols*grid] map (chessboard merge)."""
    channels = tiles.shape[-1]
    laid = tiles.reshape(rows, cols, grid, grid, channels).permute(4, 0, 2, 1, 3)
    return laid.reshape(channels, rows * grid, cols * grid)


def _map_to_tiles(feature_map: torch.Tensor, rows: int, cols: int, grid: int) -> torch.Tensor:
    """[C, rows*grid, cols*grid] -> [rows*cols, grid*grid, C], blocks row-major (inverse of the merge)."""
    channels = feature_map.shape[0]
    blocks = feature_map.reshape(channels, rows, grid, cols, grid).permute(1, 3, 2, 4, 0)
    return blocks.reshape(rows * cols, grid * grid, channels)


def merge_dynamic_s2(
    features: torch.Tensor, block_size: tuple[int, int], config: NVILAConfig
) -> torch.Tensor:
    """[N_tiles, P, C] ViT features of one dynamic-S2 image -> [rows*cols, P, C*num_scales].

    Tiles are ordered as `ImageProcessor.process_image` cuts them: the k x k tiles of each square
    scale, then the rows x cols tiles of the last scale. Every scale's map is area-resized (in
    float32) to the last scale's map, so a 448 tile's patch covers the same image area as the
    1344 grid's patches it lands on.
    """
    rows, cols = block_size
    grid = config.patch_grid
    tile = config.tile_size
    scales = config.s2_scales
    if config.s2_resize_output_to_scale_idx % len(scales) != len(scales) - 1:
        raise ValueError(
            "dynamic-S2 output must be at the last scale (s2_resize_output_to_scale_idx -1), got "
            f"{config.s2_resize_output_to_scale_idx}"
        )
    layouts = [(scale // tile, scale // tile) for scale in scales[:-1]] + [(rows, cols)]
    expected = sum(r * c for r, c in layouts)
    if features.shape[0] != expected or features.shape[1] != grid * grid:
        raise ValueError(
            f"expected [{expected}, {grid * grid}, C] features for scales {scales} and block size "
            f"{block_size}, got {list(features.shape)}"
        )
    out_size = (rows * grid, cols * grid)
    maps = []
    start = 0
    for scale_rows, scale_cols in layouts:
        count = scale_rows * scale_cols
        scale_map = _tiles_to_map(features[start : start + count], scale_rows, scale_cols, grid)
        start += count
        resized = F.interpolate(scale_map[None].float(), size=out_size, mode="area")
        maps.append(resized[0].to(features.dtype))
    return _map_to_tiles(torch.cat(maps, dim=0), rows, cols, grid)


def repeat_scales(features: torch.Tensor, num_scales: int) -> torch.Tensor:
    """[N, P, C] -> [N, P, C*num_scales]: an untiled image of a dynamic-S2 model fills every scale's channels."""
    return features.repeat(1, 1, num_scales) if num_scales > 1 else features


def merge_blocks(tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[rows*cols, T, D] projected blocks (T a square) -> [rows*cols*T, D], one row-major token map."""
    count, per_block, dim = tokens.shape
    side = math.isqrt(per_block)
    if count != rows * cols or side * side != per_block:
        raise ValueError(
            f"cannot lay {count} blocks of {per_block} tokens out as a {rows} x {cols} square grid"
        )
    laid = tokens.reshape(rows, cols, side, side, dim).permute(0, 2, 1, 3, 4)
    return laid.reshape(count * per_block, dim)


def encode_image(
    vision_tower: VisionTower,
    projector: MultimodalProjector,
    processed: ProcessedImage,
    config: NVILAConfig,
) -> list[torch.Tensor]:
    """One [n_i, D] embedding tensor per <image> block of a processed image.

    dynamic-S2: one block of tokens_per_tile*rows*cols tokens; "dynamic": one block per tile
    (thumbnail last); "resize": one block.
    """
    features = vision_tower(processed.pixel_values)
    if processed.block_size is not None:
        rows, cols = processed.block_size
        projected = projector(merge_dynamic_s2(features, processed.block_size, config))
        return [merge_blocks(projected, rows, cols)]
    projected = projector(repeat_scales(features, config.num_scales))
    if projected.shape[0] != processed.num_blocks:
        raise ValueError(
            f"{projected.shape[0]} tiles cannot fill {processed.num_blocks} <image> blocks"
        )
    return list(projected.unbind(0))


def encode_frames(
    vision_tower: VisionTower,
    projector: MultimodalProjector,
    pixel_values: torch.Tensor,
    config: NVILAConfig,
) -> torch.Tensor:
    """[T, 3, S, S] -> [T, tokens_per_tile, D]; frames never interact, so results can be cached per frame."""
    return projector(repeat_scales(vision_tower(pixel_values), config.num_scales))
