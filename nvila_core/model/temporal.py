"""Temporal-spatial pooling of projected video tokens (NVILA's TSP video encoder, nvila.md §3.2).

Each pool size [t, h, w] turns [T, side*side, D] frame tokens into one stream of T/t pooled frames
of (side/h)*(side/w) tokens: a plain mean over non-overlapping windows of t consecutive frames and
h x w neighbouring tokens. [[1, 1, 1]] (every released checkpoint but NVILA-8B-Video) is a no-op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class TemporalPooler:
    """Average-pools projected frame tokens over time and space, one output per pool size."""

    def __init__(self, pool_sizes: Sequence[Sequence[int]]):
        if not pool_sizes or any(len(size) != 3 or min(size) < 1 for size in pool_sizes):
            raise ValueError(
                f"pool_sizes must be a non-empty list of [t, h, w] >= 1, got {pool_sizes}"
            )
        self.pool_sizes = [(int(t), int(h), int(w)) for t, h, w in pool_sizes]

    @property
    def is_identity(self) -> bool:
        return self.pool_sizes == [(1, 1, 1)]

    def output_frames(self, num_frames: int) -> int:
        """Pooled frames over all streams (each gets its own "\\n" in the prompt)."""
        total = 0
        for t, _, _ in self.pool_sizes:
            _check_divisible(num_frames, t, "frames", "temporal")
            total += num_frames // t
        return total

    def tokens_per_frame(self, side: int) -> list[int]:
        """Tokens of one pooled frame of each stream, for a side x side token map."""
        counts = []
        for _, h, w in self.pool_sizes:
            _check_divisible(side, h, "token rows", "height")
            _check_divisible(side, w, "token columns", "width")
            counts.append((side // h) * (side // w))
        return counts

    def __call__(self, frame_tokens: torch.Tensor) -> list[torch.Tensor]:
        """[T, side*side, D] -> one [T/t, (side/h)*(side/w), D] tensor per pool size."""
        frames, tokens, dim = frame_tokens.shape
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(f"temporal pooling needs a square token map per frame, got {tokens}")
        grid = frame_tokens.reshape(frames, side, side, dim)
        streams = []
        for t, h, w in self.pool_sizes:
            _check_divisible(frames, t, "frames", "temporal")
            _check_divisible(side, h, "token rows", "height")
            _check_divisible(side, w, "token columns", "width")
            pooled = grid.reshape(frames // t, t, side, side, dim).mean(dim=1)
            pooled = pooled.reshape(frames // t, side // h, h, side, dim).mean(dim=2)
            pooled = pooled.reshape(frames // t, side // h, side // w, w, dim).mean(dim=3)
            streams.append(pooled.reshape(frames // t, (side // h) * (side // w), dim))
        return streams


def _check_divisible(count: int, window: int, what: str, axis: str) -> None:
    if count % window:
        raise ValueError(f"{count} {what} are not divisible by the {axis} pool window {window}")
