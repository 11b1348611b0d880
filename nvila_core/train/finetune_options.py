"""Fine-tuning settings and their command-line options, without torch (nvila_core/train/finetune.py
applies them to a model). `nvila-core --help` imports this module, so it stays torch-free.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

MODES = ("full", "lora", "qlora", "layernorm", "frozen")
SIDES = ("llm", "vision_tower")


@dataclass
class FinetuneConfig:
    """What is trained on each side, LoRA hyper-parameters and the learning-rate ratios.

    `vision_lr_ratio`: the ViT learns at `lr / vision_lr_ratio` (NVILA: 5-50x smaller than the LLM).
    `projector_lr`: the projector's own learning rate (None: the LLM's).
    """

    llm: str = "lora"
    vision_tower: str = "layernorm"
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    vision_lr_ratio: float = 10.0
    projector_lr: float | None = None

    def __post_init__(self) -> None:
        for side in SIDES:
            if getattr(self, side) not in MODES:
                raise ValueError(
                    f"unknown {side} fine-tuning mode {getattr(self, side)!r} "
                    f"(known: {', '.join(MODES)})"
                )
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1, got {self.lora_r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.vision_lr_ratio <= 0:
            raise ValueError(f"vision_lr_ratio must be > 0, got {self.vision_lr_ratio}")
        if self.projector_lr is not None and self.projector_lr <= 0:
            raise ValueError(f"projector_lr must be > 0, got {self.projector_lr}")

    def mode(self, side: str) -> str:
        return getattr(self, side)


# ---------------------------------------------------------------- CLI registration
def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    """The FinetuneConfig options, for any command that trains."""
    defaults = FinetuneConfig()
    group = parser.add_argument_group("fine-tuning (nvila.md §5.4)")
    group.add_argument("--llm-mode", choices=MODES, default=defaults.llm)
    group.add_argument("--vision-mode", choices=MODES, default=defaults.vision_tower)
    group.add_argument("--lora-r", type=int, default=defaults.lora_r)
    group.add_argument("--lora-alpha", type=int, default=defaults.lora_alpha)
    group.add_argument("--lora-dropout", type=float, default=defaults.lora_dropout)
    group.add_argument(
        "--vision-lr-ratio",
        type=float,
        default=defaults.vision_lr_ratio,
        help="ViT lr = LLM lr / this (NVILA: 5-50)",
    )
    group.add_argument("--projector-lr", type=float, help="projector lr (default: the LLM lr)")


def finetune_config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    return FinetuneConfig(
        llm=args.llm_mode,
        vision_tower=args.vision_mode,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        vision_lr_ratio=args.vision_lr_ratio,
        projector_lr=args.projector_lr,
    )


def add_finetune_cli(
    subparsers: argparse._SubParsersAction,
    run: Callable[[argparse.Namespace, FinetuneConfig], int],
) -> argparse.ArgumentParser:
    """Register `nvila-core finetune`; `run(args, finetune_config)` does the training.

    Returns the sub-parser so the caller adds its training options (model, data, steps, ...).
    """
    parser = subparsers.add_parser(
        "finetune", help="fine-tune with full / LoRA / QLoRA / LayerNorm-only per side"
    )
    add_finetune_arguments(parser)
    parser.set_defaults(handler=lambda args: run(args, finetune_config_from_args(args)))
    return parser
