"""A frame head's own view of its frame: the model's vision tower and projector with low-rank
updates trained for the head's question (LoRA), so the LLM's tokens stay as they are.

A head that must tell on which side a thin doorway post stands in a 96 px frame finds little of
it in tokens trained for the LLM: tuned together with the head, the same tower finds much more.
The head keeps a copy of the tower and projector whose linear layers (those of the last
`blocks` encoder blocks, and the projector's) each add a rank-`rank` update `B @ A`. Stored
with the head in a model folder are only A and B (about a hundred kilobytes for navila-nano);
the rest is the folder's own vision tower and projector. Where a head is copied to a folder
without them (an export), it keeps the whole tuned copy instead. At run time the updates are
folded into the copy's weights: one more pass of the vision tower per frame.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.projector import MultimodalProjector
from nvila_core.model.vision import VisionTower, encode_frames

ADAPTER_PREFIX = "vision.adapter."
"""Head tensors of the low-rank updates: `vision.adapter.<layer>.a` / `.b`."""
TUNED_PREFIX = "vision.tuned."
"""Head tensors of a whole tuned copy: `vision.tuned.vision_tower.*` / `.mm_projector.*`."""


class LowRankLinear(nn.Module):
    """A frozen linear layer plus a trained rank-r update: y = W x + b + B (A x)."""

    def __init__(self, base: nn.Linear, rank: int) -> None:
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.a = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)
        self.b = nn.Parameter(torch.zeros(base.out_features, rank))  # starts as the base layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.a.T) @ self.b.T

    def folded(self) -> nn.Linear:
        """A plain linear layer with the update added to its weight."""
        layer = copy.deepcopy(self.base)
        with torch.no_grad():
            layer.weight += self.b @ self.a
        return layer


class HeadVision(nn.Module):
    """[T, 3, S, S] frames -> [T, tokens, D] tokens, as the model's `frame_features` but through
    the head's tuned copy of the vision tower and projector."""

    def __init__(
        self,
        config: NVILAConfig,
        vision_tower: VisionTower,
        projector: MultimodalProjector,
        rank: int = 0,
        blocks: int = 1,
    ) -> None:
        super().__init__()
        self.config = config
        self.vision_tower = copy.deepcopy(vision_tower).float()
        self.mm_projector = copy.deepcopy(projector).float()
        self.rank, self.blocks = rank, blocks
        for p in self.parameters():
            p.requires_grad_(False)
        if rank > 0:
            run = self.vision_tower.num_layers_run
            if not 1 <= blocks <= run:
                raise ValueError(f"{blocks} tuned blocks of the {run} the vision tower runs")
            layers = self.vision_tower.vision_model.encoder.layers[run - blocks : run]
            for parent in [*layers, self.mm_projector]:
                _adapt_linears(parent, rank)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return encode_frames(
            self.vision_tower, self.mm_projector, pixel_values.float(), self.config
        )

    def adapters(self) -> dict[str, LowRankLinear]:
        return {n: m for n, m in self.named_modules() if isinstance(m, LowRankLinear)}

    def trainable(self) -> list[nn.Parameter]:
        return [p for m in self.adapters().values() for p in (m.a, m.b)]

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """The updates' factors, by head tensor name."""
        out = {}
        for name, layer in self.adapters().items():
            out[f"{ADAPTER_PREFIX}{name}.a"] = layer.a
            out[f"{ADAPTER_PREFIX}{name}.b"] = layer.b
        return out

    def load_adapter_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Fill the updates from a head's tensors; every factor must be there, in its shape."""
        ours = self.adapter_tensors()
        theirs = {k: v for k, v in tensors.items() if k.startswith(ADAPTER_PREFIX)}
        if set(ours) != set(theirs):
            missing = sorted(set(ours) ^ set(theirs))
            raise ValueError(f"vision updates do not match the model's layers ({missing[0]})")
        with torch.no_grad():
            for key, target in ours.items():
                if theirs[key].shape != target.shape:
                    raise ValueError(
                        f"{key}: shape {tuple(theirs[key].shape)}, expected {tuple(target.shape)}"
                    )
                target.copy_(theirs[key])

    def fold(self) -> HeadVision:
        """Fold the updates into the copy's weights (for inference: as fast as the model's own
        tower); returns itself, without trainable updates."""
        for name, layer in self.adapters().items():
            parent_name, _, child = name.rpartition(".")
            setattr(self.get_submodule(parent_name), child, layer.folded())
        return self.eval()

    def tuned_tensors(self) -> dict[str, torch.Tensor]:
        """The whole tuned copy (updates folded in), by head tensor name."""
        folded = copy.deepcopy(self).fold()
        return {
            f"{TUNED_PREFIX}{part}.{k}": v
            for part in ("vision_tower", "mm_projector")
            for k, v in getattr(folded, part).state_dict().items()
        }

    def spec(self) -> dict[str, Any]:
        """What the head's JSON keeps to build it again."""
        return {"rank": self.rank, "blocks": self.blocks, "config": self.config.to_dict()}


def _adapt_linears(parent: nn.Module, rank: int) -> None:
    for _, module in list(parent.named_modules()):
        for name, layer in list(module.named_children()):
            if isinstance(layer, nn.Linear):
                setattr(module, name, LowRankLinear(layer, rank))


def load_head_vision(
    spec: dict[str, Any], tensors: dict[str, torch.Tensor], model_dir: str | Path
) -> HeadVision:
    """A head's tuned vision, folded for inference: from its whole tuned copy where the head
    keeps one, else from the updates on `model_dir`'s own vision tower and projector."""
    config = NVILAConfig.from_dict(spec["config"])
    tuned = {k[len(TUNED_PREFIX) :]: v for k, v in tensors.items() if k.startswith(TUNED_PREFIX)}
    if tuned:
        vision = HeadVision(config, VisionTower(config), MultimodalProjector.from_config(config))
        for part in ("vision_tower", "mm_projector"):
            state = {k[len(part) + 1 :]: v for k, v in tuned.items() if k.startswith(part + ".")}
            getattr(vision, part).load_state_dict(state)
        return vision.eval()
    from nvila_core.model.checkpoint import load_vision_parts

    tower, projector = load_vision_parts(model_dir, config)
    vision = HeadVision(config, tower, projector, int(spec["rank"]), int(spec["blocks"]))
    vision.load_adapter_tensors(tensors)
    return vision.fold()
