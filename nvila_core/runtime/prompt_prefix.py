"""The KV cache of the last prompt, kept for the next prompt that begins the same way.

Consecutive navigation prompts share their beginning: the system text, and with NaVILA's
sampler the episode's first frame, which every decision shows first. Causal attention makes the
keys and values of those positions depend only on what comes before them, so a backend that
kept the last prompt's cache prefills only from the first position where the new prompt's
embeddings differ. Comparing embeddings (not token ids) covers the frames: a frame's rows are
equal only where its visual tokens are. Like the engine's frame cache, it assumes the weights do
not change while it is kept: `Engine.clear_cache` after changing them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

Rows = torch.Tensor | np.ndarray


def shared_rows(previous: Rows, current: Rows) -> int:
    """How many leading rows two [L, D] embedding matrices have equal."""
    count = min(previous.shape[0], current.shape[0])
    same = (previous[:count] == current[:count]).all(-1).tolist()
    return next((row for row, equal in enumerate(same) if not equal), count)


class PromptPrefixCache:
    """A backend's last prompt (its [L, D] embeddings) and that prompt's KV cache, in whatever
    form the backend keeps one (`kv`: per-layer tensors or a dict of arrays)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._embeds: Rows | None = None
        self._kv: Any = None

    def match(self, embeds: Rows) -> tuple[int, Any]:
        """How many leading positions of `embeds` [L, D] the kept prompt shares (at most L - 1:
        the last position is always prefilled, its logits are needed), and the kept KV cache
        (covering at least that many positions), or (0, None)."""
        if not self.enabled or self._embeds is None:
            return 0, None
        reused = min(shared_rows(self._embeds, embeds), embeds.shape[0] - 1)
        if reused == 0:
            return 0, None
        return reused, self._kv

    def keep(self, embeds: Rows, kv: Any) -> None:
        """Keep `embeds` [L, D] and the KV cache of exactly its L positions."""
        if self.enabled:
            self._embeds, self._kv = embeds, kv

    def clear(self) -> None:
        self._embeds = self._kv = None
