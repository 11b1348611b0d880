"""Vision-to-language projector: spatial-to-channel token merge, then an MLP (nvila.md §2.5).

`layers` reproduces the checkpoint's `nn.Sequential` index for index, so an `mm_projector/`
state dict (`layers.{i}.weight|bias`) loads unchanged. Index 0 is the parameter-free merge.

The merge emits its tokens in the order of the checkpoint's lineage (`TOKEN_ORDERS`): NVILA's
VILA code emits the merged cells row-major (left to right, then top to bottom); the VILA-1.5
code NaVILA was trained with emits them column-major (top to bottom, then left to right). The
channels inside a token are the same in both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nvila_core.model.configuration import PROJECTOR_TYPES, TOKEN_ORDERS, NVILAConfig


def space_to_channel(x: torch.Tensor, k: int, order: str = "row_major") -> torch.Tensor:
    """[B, side*side, C] -> [B, ceil(side/k)^2, k*k*C]: each k x k patch window becomes one token.

    The row-major side x side map is zero-padded at the bottom and right to a multiple of k; the
    output channel (a*k + b)*C + c holds channel c of the patch at row offset a, column offset b.
    `order` is the order of the output cells (i, j): "row_major" puts cell (i, j) at i*n + j
    (NVILA), "column_major" at j*n + i (NaVILA / VILA-1.5), with n = ceil(side/k).
    """
    if order not in TOKEN_ORDERS:
        raise ValueError(f"unknown token order {order!r} (known: {', '.join(TOKEN_ORDERS)})")
    batch, tokens, channels = x.shape
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"space_to_channel needs a square token map, got {tokens} tokens")
    grid = x.reshape(batch, side, side, channels)
    pad = -side % k
    if pad:
        grid = F.pad(grid, (0, 0, 0, pad, 0, pad))
    out_side = (side + pad) // k
    windows = grid.reshape(batch, out_side, k, out_side, k, channels)
    # dims (batch, i, a, j, b, c) -> (batch, cell, a, b, c): the cell dims first, in `order`
    cells = (1, 3) if order == "row_major" else (3, 1)
    windows = windows.permute(0, *cells, 2, 4, 5)
    return windows.reshape(batch, out_side * out_side, k * k * channels)


class SpaceToChannel(nn.Module):
    """`space_to_channel` as a layer, so it can sit at index 0 of the projector stack."""

    def __init__(self, k: int, order: str = "row_major"):
        super().__init__()
        if order not in TOKEN_ORDERS:
            raise ValueError(f"unknown token order {order!r} (known: {', '.join(TOKEN_ORDERS)})")
        self.k = k
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return space_to_channel(x, self.k, self.order)

    def extra_repr(self) -> str:
        return f"k={self.k}, order={self.order}"


class MultimodalProjector(nn.Module):
    """[B, N, mm_hidden] vision features -> [B, N', llm_hidden] LLM embeddings.

    `token_order` is the merge's output order (`space_to_channel`); the layers and their weights
    do not depend on it.
    """

    def __init__(
        self,
        projector_type: str,
        mm_hidden_size: int,
        llm_hidden_size: int,
        token_order: str = "row_major",
    ):
        super().__init__()
        if projector_type in ("mlp_downsample", "mlp_downsample_2x2_fix"):
            merged = 4 * mm_hidden_size
            layers: list[nn.Module] = [
                SpaceToChannel(2, token_order),
                nn.LayerNorm(merged),
                nn.Linear(merged, llm_hidden_size),
                nn.GELU(),
                nn.Linear(llm_hidden_size, llm_hidden_size),
            ]
        elif projector_type == "mlp_downsample_3x3_fix":
            merged, middle = 9 * mm_hidden_size, 3 * mm_hidden_size
            layers = [
                SpaceToChannel(3, token_order),
                nn.LayerNorm(merged),
                nn.Linear(merged, middle),
                nn.GELU(),
                nn.LayerNorm(middle),
                nn.Linear(middle, llm_hidden_size),
                nn.GELU(),
                nn.Linear(llm_hidden_size, llm_hidden_size),
            ]
        else:
            raise ValueError(
                f"unknown projector type {projector_type!r} (known: {', '.join(PROJECTOR_TYPES)})"
            )
        self.projector_type = projector_type
        self.layers = nn.Sequential(*layers)

    @classmethod
    def from_config(cls, config: NVILAConfig) -> MultimodalProjector:
        return cls(
            config.mm_projector_type,
            config.mm_hidden_size,
            config.llm_hidden_size,
            config.token_order,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Vision features may arrive in the ViT's dtype; the MLP runs in its own.
        return self.layers(x.to(self.layers[1].weight.dtype))
