"""`nvila-core`: inspect and run NVILA models from the shell, without ROS.

    nvila-core describe nvila-8b --image-size 640x480
    nvila-core generate --model tiny --image photo.png --prompt "Describe the scene."

One function per subcommand (`cmd_<name>`), registered in `build_parser`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from nvila_core.model.checkpoint import read_config
from nvila_core.model.configuration import ConfigError, NVILAConfig
from nvila_core.model.image_processing import ImagePlan, plan_frames, plan_image
from nvila_core.model.modeling import NVILAModel


def _image_size(text: str) -> tuple[int, int]:
    """ "640x480" -> (640, 480)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text!r}")
    return width, height


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _load_config(model: str) -> NVILAConfig:
    """A checkpoint folder's config, or a preset's."""
    return read_config(model) if Path(model).is_dir() else NVILAConfig.preset(model)


def _print_table(rows: Sequence[tuple[str, Any]]) -> None:
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


# ---------------------------------------------------------------- describe
def _plan_report(config: NVILAConfig, plan: ImagePlan) -> dict[str, Any]:
    newlines = plan.blocks if config.appends_newline_embedding else 0
    return {
        "vit_passes": plan.vit_passes,
        "visual_tokens": plan.tokens,
        "newline_tokens": newlines,
        "llm_tokens": plan.tokens + newlines,
        "grid": list(plan.grid) if plan.grid else None,
        "blocks": plan.blocks,
    }


def describe(
    model: str, image_size: tuple[int, int] | None = None, frames: int | None = None
) -> dict[str, Any]:
    """Architecture, parameter counts (from a weightless meta-device build) and media budgets."""
    config = _load_config(model)
    meta_model = NVILAModel.from_config(config, device="meta")
    llm, vision = config.llm_config, config.vision_config
    report: dict[str, Any] = {
        "name": config.name,
        "architecture": config.architecture,
        "llm": {
            "type": config.llm_type,
            "layers": llm["num_hidden_layers"],
            "hidden_size": llm["hidden_size"],
            "attention_heads": llm["num_attention_heads"],
            "kv_heads": llm.get("num_key_value_heads", llm["num_attention_heads"]),
            "vocab_size": llm["vocab_size"],
        },
        "vision_tower": {
            "layers": vision["num_hidden_layers"],
            "layers_run": meta_model.vision_tower.num_layers_run,
            "hidden_size": vision["hidden_size"],
            "tile_size": config.tile_size,
            "patch_size": vision["patch_size"],
        },
        "mm_projector": {
            "type": config.mm_projector_type,
            "mm_hidden_size": config.mm_hidden_size,
            "tokens_per_tile": config.tokens_per_tile,
        },
        "image_mode": config.image_aspect_ratio,
        "chat_template": config.chat_template,
        "dtype": config.torch_dtype,
        "parameters": meta_model.num_parameters(),
    }
    if image_size is not None:
        width, height = image_size
        plan = plan_image(config, width, height)
        report["image"] = {"width": width, "height": height, **_plan_report(config, plan)}
    if frames is not None:
        report["frames"] = {"count": frames, **_plan_report(config, plan_frames(config, frames))}
    return report


def _print_describe(report: dict[str, Any]) -> None:
    llm, vision, projector = report["llm"], report["vision_tower"], report["mm_projector"]
    params = report["parameters"]
    print(f"{report['name']} ({report['architecture']})")
    _print_table(
        [
            (
                "LLM",
                f"{llm['type']}: {llm['layers']} layers, hidden {llm['hidden_size']}, "
                f"{llm['attention_heads']} heads / {llm['kv_heads']} KV, vocab {llm['vocab_size']}",
            ),
            (
                "vision tower",
                f"SigLIP: {vision['layers_run']} of {vision['layers']} layers run, hidden "
                f"{vision['hidden_size']}, {vision['tile_size']}px tiles of "
                f"{vision['patch_size']}px patches",
            ),
            (
                "projector",
                f"{projector['type']}: {projector['mm_hidden_size']} -> {llm['hidden_size']}, "
                f"{projector['tokens_per_tile']} tokens per tile",
            ),
            ("image mode", report["image_mode"]),
            ("chat template", report["chat_template"]),
            ("dtype", report["dtype"]),
        ]
    )
    print("parameters")
    _print_table([(part, f"{count:>15,}  ({count / 1e9:.3f} B)") for part, count in params.items()])
    for key, title in (("image", "image {width}x{height}"), ("frames", "{count} frames")):
        if key in report:
            entry = report[key]
            print(title.format(**entry))
            grid = entry["grid"]
            _print_table(
                [
                    ("ViT passes", entry["vit_passes"]),
                    ("visual tokens", entry["visual_tokens"]),
                    ('"\\n" tokens', entry["newline_tokens"]),
                    ("LLM tokens", entry["llm_tokens"]),
                    ("tile grid", f"{grid[0]} rows x {grid[1]} cols" if grid else "none"),
                ]
            )


def cmd_describe(args: argparse.Namespace) -> int:
    report = describe(args.model, args.image_size, args.frames)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_describe(report)
    return 0


# ---------------------------------------------------------------- generate
def _open_image(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as err:
        raise ConfigError(f"cannot read image {path}: {err}") from err


def cmd_generate(args: argparse.Namespace) -> int:
    from nvila_core.runtime.engine import Engine  # the engine pulls in torch model code

    engine = Engine.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, seed=args.seed
    )
    images = [_open_image(args.image)] if args.image else []
    frames = [_open_image(path) for path in args.frames or ()]
    result = engine.generate(
        args.prompt, images=images, frames=frames, max_new_tokens=args.max_new_tokens
    )
    if args.json:
        print(
            json.dumps(
                {
                    "text": result.text,
                    "token_ids": result.token_ids,
                    "stopped_by": result.stopped_by,
                    "timings": result.timings,
                },
                indent=2,
            )
        )
        return 0
    print(result.text)
    print(f"timings (stopped by {result.stopped_by})")
    _print_table(
        [
            (name, f"{value:.1f}" if isinstance(value, float) else value)
            for name, value in result.timings.items()
        ]
    )
    return 0


# ---------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nvila-core", description="Inspect and run NVILA / NaVILA models (no ROS needed)."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    describe_parser = commands.add_parser(
        "describe", help="architecture, parameter counts and visual token budget (no weights)"
    )
    describe_parser.add_argument("model", help="preset name (e.g. nvila-8b) or checkpoint folder")
    describe_parser.add_argument(
        "--image-size", type=_image_size, metavar="WxH", help="budget for one image of this size"
    )
    describe_parser.add_argument(
        "--frames", type=_positive, metavar="N", help="budget for N video/history frames"
    )
    describe_parser.add_argument("--json", action="store_true", help="machine-readable output")
    describe_parser.set_defaults(handler=cmd_describe)

    generate_parser = commands.add_parser("generate", help="answer a prompt about images")
    generate_parser.add_argument(
        "--model", required=True, help="checkpoint folder, or a preset name (random weights)"
    )
    media = generate_parser.add_mutually_exclusive_group(required=True)
    media.add_argument("--image", metavar="FILE", help="one image")
    media.add_argument("--frames", nargs="+", metavar="FILE", help="video/history frames")
    generate_parser.add_argument("--prompt", required=True)
    generate_parser.add_argument("--max-new-tokens", type=_positive, default=32)
    generate_parser.add_argument("--device", default="cpu")
    generate_parser.add_argument(
        "--dtype", help="float32, float16 or bfloat16 (default: checkpoint's)"
    )
    generate_parser.add_argument(
        "--seed", type=int, default=0, help="seed for preset random weights"
    )
    generate_parser.add_argument("--json", action="store_true", help="machine-readable output")
    generate_parser.set_defaults(handler=cmd_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, OSError) as err:  # bad model names, checkpoints, images, dtypes
        print(f"nvila-core {args.command}: error: {err}", file=sys.stderr)
        return 2
