"""`nvila-core`: inspect and run NVILA models from the shell, without ROS.

    nvila-core describe nvila-8b --image-size 640x480
    nvila-core generate --model tiny --image photo.png --prompt "Describe the scene."
    nvila-core train --recipe config/train/navila-nano.yaml --out outputs/train/navila-nano
    nvila-core serve --model models/navila-nano --decoding choose     # NaVILA-Bench server

One function per subcommand (`cmd_<name>`), registered in `build_parser`. Building the parser
imports no torch, transformers or model code (each handler imports what it runs), so `--help`
answers at once; test/core/test_cli.py checks that.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nvila_core.quant_cli import add_build_engine_cli, add_export_cli, add_quantize_cli
from nvila_core.roofline import DEVICES
from nvila_core.serve.cli import add_serve_cli
from nvila_core.train.deltaloss import add_prune_cli
from nvila_core.train.finetune_options import FinetuneConfig, add_finetune_cli
from nvila_core.train.frame_heads import add_train_head_cli
from nvila_core.train.mcap_import import add_import_cli

if TYPE_CHECKING:
    from PIL import Image

    from nvila_core.model.configuration import NVILAConfig
    from nvila_core.model.image_processing import ImagePlan


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
    from nvila_core.model.checkpoint import read_config
    from nvila_core.model.configuration import NVILAConfig

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
    from nvila_core.model.image_processing import plan_frames, plan_image
    from nvila_core.model.modeling import NVILAModel

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


# ---------------------------------------------------------------- roofline
def cmd_roofline(args: argparse.Namespace) -> int:
    from nvila_core import roofline

    config = _load_config(args.model)
    device = roofline.DEVICES[args.device]
    phases = roofline.project(
        config, device, args.frames, args.context, args.answer, args.choose or None, args.reused
    )
    print(roofline.format_table(config.name or args.model, device, phases))
    print(f"\npeaks: {device.source}")
    if args.csv:
        rows = roofline.phase_rows(config.name or args.model, device, phases)
        roofline.write_csv(rows, Path(args.csv))
        print(f"written {args.csv}")
    return 0


def _answers(text: str) -> tuple[int, int]:
    """ "10x8" -> (10, 8)."""
    try:
        answers, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ANSWERSxTOKENS, got {text!r}") from None
    if answers < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"answers and tokens must be positive, got {text!r}")
    return answers, width


# ---------------------------------------------------------------- generate
def _open_image(path: str) -> Image.Image:
    from PIL import Image

    from nvila_core.model.configuration import ConfigError

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


# ---------------------------------------------------------------- train
SMOKE_SUFFIX = "-smoke"


def default_out(base: str | Path, max_steps: int | None) -> Path:
    """The default output folder: `base`, or `base-smoke` for a `--max-steps` (smoke) run, so
    that a smoke run never leaves finished stages where the full run looks for them."""
    base = Path(base)
    return base if max_steps is None else base.with_name(base.name + SMOKE_SUFFIX)


def _announce_smoke(command: str, out: Path, max_steps: int | None) -> None:
    if max_steps is not None:
        print(
            f"nvila-core {command}: smoke run, {max_steps} step(s) per stage and a shortened "
            f"evaluation, into {out}",
            file=sys.stderr,
        )


def cmd_train(args: argparse.Namespace) -> int:
    from nvila_core.train.distributed import init_distributed, shutdown_distributed
    from nvila_core.train.recipe import load_recipe, run_recipe

    logging.getLogger("nvila_core.train").setLevel(logging.INFO)
    recipe = load_recipe(args.recipe)
    if args.from_checkpoint:
        recipe = dataclasses.replace(recipe, model={"checkpoint": args.from_checkpoint})
    out = (
        Path(args.out)
        if args.out
        else default_out(Path("outputs/train") / recipe.name, args.max_steps)
    )
    first = recipe.stage(args.stage) if args.stage else recipe.stages[0]
    ctx = init_distributed(first.train.device)  # torchrun sets the environment it reads
    if ctx.is_main:
        _announce_smoke("train", out, args.max_steps)
    final = run_recipe(
        recipe,
        out,
        resume=args.resume,
        stage=args.stage,
        max_steps=args.max_steps,
        ctx=ctx,
        smoke=args.max_steps is not None,
    )
    shutdown_distributed()
    if ctx.is_main:
        print(f"final model: {final}")
    return 0


def cmd_finetune(args: argparse.Namespace, finetune: FinetuneConfig) -> int:
    """A one-stage recipe: start from --from, train --data with the chosen fine-tuning modes;
    LoRA adapters are merged into the final checkpoint (a plain VILA split layout)."""
    from nvila_core.train.distributed import init_distributed, shutdown_distributed
    from nvila_core.train.recipe import recipe_from_dict, run_recipe

    logging.getLogger("nvila_core.train").setLevel(logging.INFO)
    stage: dict[str, Any] = {
        "name": "finetune",
        "finetune": {
            "llm": finetune.llm,
            "vision_tower": finetune.vision_tower,
            "lora_r": finetune.lora_r,
            "lora_alpha": finetune.lora_alpha,
            "lora_dropout": finetune.lora_dropout,
        },
        "lr": args.lr,
        "vision_lr_ratio": finetune.vision_lr_ratio,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "device": args.device,
    }
    if finetune.projector_lr is not None:
        stage["projector_lr"] = finetune.projector_lr
    if args.max_steps:
        stage["max_steps"] = args.max_steps
    recipe = recipe_from_dict(
        {
            "name": "finetune",
            "model": {"checkpoint": str(args.from_checkpoint)},
            "data": str(args.data),
            "stages": [stage],
        },
        source="nvila-core finetune",
    )
    out = Path(args.out) if args.out else default_out("outputs/finetune", args.max_steps)
    ctx = init_distributed(args.device)
    if ctx.is_main:
        _announce_smoke("finetune", out, args.max_steps)
    final = run_recipe(recipe, out, resume=args.resume, ctx=ctx, smoke=args.max_steps is not None)
    shutdown_distributed()
    if ctx.is_main:
        print(f"final model: {final}")
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

    roofline_parser = commands.add_parser(
        "roofline",
        help="floor time of one query on a target GPU from the model's FLOPs and bytes (no weights)",
    )
    roofline_parser.add_argument("model", help="preset name (e.g. navila-8b) or checkpoint folder")
    roofline_parser.add_argument("--device", default="agx-orin-64gb", choices=sorted(DEVICES))
    roofline_parser.add_argument(
        "--frames", type=int, default=8, help="frames through the ViT per query (1 with the cache)"
    )
    roofline_parser.add_argument(
        "--context", type=_positive, default=1737, help="prompt tokens, visual tokens included"
    )
    roofline_parser.add_argument("--answer", type=int, default=10, help="greedy answer tokens")
    roofline_parser.add_argument(
        "--choose",
        type=_answers,
        metavar="ANSWERSxTOKENS",
        help="score a closed set of answers in one forward over their prefix tree, not decoding",
    )
    roofline_parser.add_argument(
        "--reused",
        type=int,
        default=0,
        metavar="N",
        help="leading prompt tokens whose KV cache the last prompt left (not prefilled)",
    )
    roofline_parser.add_argument("--csv", help="also write the phases as CSV")
    roofline_parser.set_defaults(handler=cmd_roofline)

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

    train_parser = commands.add_parser(
        "train", help="run a training recipe: its stages in order, resumable (torchrun-ready)"
    )
    train_parser.add_argument("--recipe", required=True, help="recipe YAML (config/train/)")
    train_parser.add_argument(
        "--out",
        help="output folder (default: outputs/train/<recipe>, or outputs/train/<recipe>-smoke "
        "with --max-steps)",
    )
    train_parser.add_argument("--stage", help="run only this stage (its predecessor must be done)")
    train_parser.add_argument(
        "--from",
        dest="from_checkpoint",
        help="start from this checkpoint instead of the recipe's model",
    )
    train_parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip finished stages and continue from the newest checkpoint (default: on)",
    )
    train_parser.add_argument(
        "--max-steps",
        type=_positive,
        metavar="N",
        help="smoke run: every stage for N optimizer steps and a shortened end-of-stage "
        "evaluation (default --out: outputs/train/<recipe>-smoke)",
    )
    train_parser.set_defaults(handler=cmd_train)

    finetune_parser = add_finetune_cli(commands, cmd_finetune)
    finetune_parser.add_argument(
        "--from", dest="from_checkpoint", required=True, help="checkpoint to start from"
    )
    finetune_parser.add_argument("--data", required=True, help="mixture YAML (docs/training.md)")
    finetune_parser.add_argument(
        "--out",
        help="output folder (default: outputs/finetune, outputs/finetune-smoke with --max-steps)",
    )
    finetune_parser.add_argument("--lr", type=float, default=1e-4, help="LLM learning rate")
    finetune_parser.add_argument("--batch-size", type=_positive, default=8)
    finetune_parser.add_argument("--epochs", type=float, default=1.0)
    finetune_parser.add_argument(
        "--max-steps",
        type=_positive,
        metavar="N",
        help="smoke run: N optimizer steps, a shortened evaluation",
    )
    finetune_parser.add_argument("--device", default="auto")
    finetune_parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)

    add_prune_cli(commands)
    add_train_head_cli(commands)
    add_import_cli(commands)
    add_quantize_cli(commands)
    add_export_cli(commands)
    add_build_engine_cli(commands)
    add_serve_cli(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, OSError) as err:  # bad model names, checkpoints, images, dtypes
        print(f"nvila-core {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
