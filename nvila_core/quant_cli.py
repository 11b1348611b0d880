"""`nvila-core quantize | export | build-engine`: the deployment commands (wired by cli.py).

    nvila-core quantize --model CKPT --recipe both --calib data/sim/train_rollouts --out q/
    nvila-core export --model q/ --out deploy/ --dtype float16
    nvila-core build-engine deploy/          # on the Jetson / a GPU box with TensorRT

Each `add_*_cli(subparsers)` registers one subcommand whose handler returns the exit code.
torch, transformers and the model code are imported inside the handlers, so `nvila-core --help`
and `nvila-core quantize --help` answer at once. Long steps print stage lines and progress on
stderr (nvila_core/progress.py); the JSON report goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nvila_core.progress import stage_reporter

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from nvila_core.model.modeling import NVILAModel
    from nvila_core.quant import QuantState

log = logging.getLogger(__name__)
EXIT_COMPARE_FAILED = 1
EXIT_NO_TENSORRT = 3
# nvila_core.quant.RECIPES, spelled out so that building the parser imports no torch
# (test/deploy/test_quant_cli.py checks that the two agree).
RECIPES = ("w4a16", "w8a8", "both")
Report = Callable[[str], None]


def _load(
    model: str, device: str, dtype: str | None, seed: int
) -> tuple[NVILAModel, PreTrainedTokenizerBase, QuantState | None]:
    """A checkpoint folder (with its quantization state, if any), or a preset's random model."""
    from nvila_core.model.configuration import ConfigError, NVILAConfig, list_presets
    from nvila_core.model.modeling import NVILAModel
    from nvila_core.model.tokenizer import build_tokenizer
    from nvila_core.quant import load_quantized

    if Path(model).is_dir():
        return load_quantized(model, device=device, dtype=dtype)
    if model not in list_presets():
        raise ConfigError(
            f"{model!r} is neither a checkpoint folder nor a model preset "
            f"(presets: {', '.join(list_presets())})"
        )
    config = NVILAConfig.preset(model)
    tokenizer = build_tokenizer(int(config.llm_config["vocab_size"]), config.chat_template)
    log.warning("preset %r: RANDOM weights (seed %d)", model, seed)
    nvila = NVILAModel.from_config(
        config, device=device, dtype=dtype, seed=seed, tokenizer=tokenizer
    )
    return nvila, tokenizer, None


def _quantize(
    model: NVILAModel,
    tokenizer: PreTrainedTokenizerBase,
    recipe: str,
    calib: str,
    args: argparse.Namespace,
    report: Report,
) -> QuantState:
    from nvila_core.model.processing import NVILAProcessor
    from nvila_core.quant import quantize_model
    from nvila_core.quant.calibration import load_calibration

    report(f"calibration: reading up to {args.samples} queries from {calib}")
    samples = load_calibration(calib, NVILAProcessor(model.config, tokenizer), args.samples)
    steps = {
        "w8a8": "W8A8 SmoothQuant of the vision tower and projector",
        "w4a16": "W4A16 AWQ scale search over the LLM's decoder layers",
        "both": "W8A8 SmoothQuant (vision tower, projector), then W4A16 AWQ (LLM)",
    }
    report(f"{len(samples)} calibration queries; {steps[recipe]}")
    state = quantize_model(model, samples, recipe, args.block_size, args.alpha)
    report(f"quantized {len(state.linears)} linears")
    return state


def _load_reported(
    args: argparse.Namespace, report: Report
) -> tuple[NVILAModel, PreTrainedTokenizerBase, QuantState | None]:
    report(f"loading {args.model} on {args.device}")
    loaded = _load(args.model, args.device, args.dtype, args.seed)
    report(f"loaded {loaded[0].config.name}")
    return loaded


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", help="float32 or float16 (default: the checkpoint's)")
    parser.add_argument("--seed", type=int, default=0, help="seed for preset random weights")


def _add_quant_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--samples", type=int, default=16, help="calibration queries (8 frames each)"
    )
    parser.add_argument(
        "--block-size", type=int, default=128, help="INT4 block along the input dim"
    )
    parser.add_argument("--alpha", type=float, default=0.3, help="SmoothQuant migration strength")


def _print(report: dict[str, Any]) -> None:
    print(json.dumps(report, indent=2))


# ---------------------------------------------------------------- quantize
def cmd_quantize(args: argparse.Namespace) -> int:
    from nvila_core.model.frame_head import copy_heads
    from nvila_core.quant import save_quantized

    report = stage_reporter("nvila-core quantize")
    model, tokenizer, existing = _load_reported(args, report)
    if existing is not None:
        raise ValueError(f"{args.model} is already quantized ({existing.recipe.get('recipe')})")
    state = _quantize(model, tokenizer, args.recipe, args.calib, args, report)
    out = Path(args.out or f"outputs/quantized/{model.config.name}-{args.recipe}")
    report(f"writing {out}")
    save_quantized(model, tokenizer, state, out)
    heads = copy_heads(args.model, out)
    report(f"done (frame heads copied: {', '.join(heads) or 'none'})")
    schemes: dict[str, int] = {}
    for q in state.linears.values():
        schemes[q.scheme] = schemes.get(q.scheme, 0) + 1
    _print({"out": str(out), "recipe": args.recipe, "quantized_linears": schemes})
    return 0


def add_quantize_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "quantize",
        help="post-training quantization: W4A16 AWQ (LLM), W8A8 SmoothQuant (vision), or both",
    )
    parser.add_argument("--model", required=True, help="checkpoint folder or preset name")
    parser.add_argument("--recipe", required=True, choices=RECIPES)
    parser.add_argument(
        "--calib",
        required=True,
        metavar="DATA",
        help="folder of calibration images, e.g. an episode dataset (instructions.txt optional)",
    )
    parser.add_argument(
        "--out", help="output checkpoint folder (default: outputs/quantized/<model>-<recipe>)"
    )
    _add_quant_options(parser)
    _add_model_options(parser)
    parser.set_defaults(handler=cmd_quantize)
    return parser


# ---------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    from nvila_core.export import export_model
    from nvila_core.model.frame_head import copy_heads

    report = stage_reporter("nvila-core export")
    model, tokenizer, state = _load_reported(args, report)
    if args.quant == "none":
        state = None
    elif args.quant in RECIPES:
        if state is not None:
            raise ValueError(f"{args.model} is already quantized; use --quant auto or none")
        if not args.calib:
            raise ValueError(f"--quant {args.quant} needs --calib DATA")
        state = _quantize(model, tokenizer, args.quant, args.calib, args, report)
    precision = state.recipe.get("recipe") if state is not None else "float"
    report(f"exporting ONNX graphs ({precision}) to {args.out}")
    metadata = export_model(model, tokenizer, args.out, state, report=report)
    heads = copy_heads(args.model, args.out)
    report(f"done (frame heads copied: {', '.join(heads) or 'none'})")
    _print(
        {
            "out": args.out,
            "graphs": {
                name: {
                    "precision": graph["precision"],
                    "dtype": graph["dtype"],
                    "opset": graph["opset"],
                    "torch_relative_error": max(graph["torch_relative_error"].values()),
                }
                for name, graph in metadata["graphs"].items()
            },
        }
    )
    return 0


def add_export_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export", help="ONNX graphs (+ metadata, Polygraphy reference data) for ORT / TensorRT"
    )
    parser.add_argument(
        "--model", required=True, help="checkpoint folder (a `quantize` output too) or preset"
    )
    parser.add_argument(
        "--quant",
        default="auto",
        choices=("auto", "none", *RECIPES),
        help="auto: the checkpoint's own quantization if it has one; a recipe: quantize now "
        "(needs --calib)",
    )
    parser.add_argument("--calib", metavar="DATA", help="calibration images for --quant RECIPE")
    parser.add_argument("--out", required=True, help="export folder")
    _add_quant_options(parser)
    _add_model_options(parser)
    parser.set_defaults(handler=cmd_export)
    return parser


# ---------------------------------------------------------------- build-engine
def cmd_build_engine(args: argparse.Namespace) -> int:
    from nvila_core.export.build_engine import TensorRTUnavailable, build_engines

    try:
        report = build_engines(args.export_dir, args.out, args.workspace_gb, not args.no_compare)
    except TensorRTUnavailable as err:
        print(f"nvila-core build-engine: {err}", file=sys.stderr)
        return EXIT_NO_TENSORRT
    _print(report)
    failed = [name for name, entry in report.items() if entry.get("passed") is False]
    if failed:
        print(
            f"nvila-core build-engine: {', '.join(failed)} outside tolerance of the reference",
            file=sys.stderr,
        )
        return EXIT_COMPARE_FAILED
    return 0


def add_build_engine_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "build-engine",
        help="TensorRT engines from an export folder, compared with its reference outputs",
    )
    parser.add_argument("export_dir", metavar="DIR", help="an `nvila-core export` folder")
    parser.add_argument("--out", help="where to write <graph>.engine (default: DIR)")
    parser.add_argument("--workspace-gb", type=float, default=4.0)
    parser.add_argument(
        "--no-compare", action="store_true", help="build only, skip the reference check"
    )
    parser.set_defaults(handler=cmd_build_engine)
    return parser
