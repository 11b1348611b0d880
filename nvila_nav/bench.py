"""`make bench`: simulator throughput, model speed (nvila_core.bench), where a decode step's time
goes (nvila_core.decode_profile), then decision latency through the ROS 2 graph
(nvila_nav.faults.decision_bench), into one folder.

python -m nvila_nav.bench [--out outputs/bench] [--quick]

The graph benchmark runs navila-nano on torch and on an onnxruntime fp32 export, the model
benchmark's 152 M-parameter NaVILA-shaped model (random weights, NaVILA's prompt and 8 frames)
on torch (both written under `<out>/exports/` on first use), and the deployed W8A8 + W4A16
navila-nano when `outputs/deploy/navila-nano-w8a8-w4a16` exists
(`scripts/evaluate_navila_nano.sh` writes it; its quantization calibrates on the training data).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import nvila_core.bench
import nvila_core.decode_profile
import nvila_nav.faults.decision_bench
import nvila_nav.sim.bench
from nvila_core.export import ExportError, load_metadata

NANO = "models/navila-nano"
DEPLOYED = Path("outputs/deploy/navila-nano-w8a8-w4a16")


def decision_variants(out: Path, navila_shaped: bool = True) -> list[str]:
    """--variant arguments for the graph benchmark; writes the fp32 ONNX set and the
    NaVILA-shaped checkpoint if missing."""
    fp32 = out / "exports" / "navila-nano-fp32"
    if not export_is_current(fp32, NANO):
        command = [sys.executable, "-m", "nvila_core", "export", "--model", NANO]
        subprocess.run([*command, "--quant", "none", "--out", str(fp32)], check=True)
    variants = [f"torch fp32={NANO}:torch", f"ORT fp32={fp32}:onnxruntime"]
    if export_is_current(DEPLOYED, NANO):
        variants.append(f"ORT W8A8+W4A16={DEPLOYED}:onnxruntime")
    elif (DEPLOYED / "export.json").is_file():
        print(
            f"[bench] {DEPLOYED} is older than {NANO}'s weights or in another export format: "
            "the deployed form is not in the graph benchmark until it is built again "
            "(docs/deployment.md)"
        )
    else:
        print(f"[bench] {DEPLOYED} not found: the deployed form is not in the graph benchmark")
    if navila_shaped:
        variants.append(f"152 M NaVILA-shaped, torch fp32={navila_shaped_checkpoint(out)}:torch")
    return variants


def export_is_current(export: str | Path, model: str | Path) -> bool:
    """Whether `export` (an `nvila-core export` folder) was written after every weight file of
    the checkpoint `model` (a pulled or retrained model makes an older export stale), in the
    export format this nvila-core reads."""
    written = Path(export) / "export.json"
    weights = list(Path(model).glob("*/model.safetensors"))
    if not written.is_file():
        return False
    try:
        load_metadata(export)
    except ExportError:
        return False
    return all(written.stat().st_mtime >= w.stat().st_mtime for w in weights)


def navila_shaped_checkpoint(out: Path) -> Path:
    """The model benchmark's NaVILA-shaped model saved as a checkpoint folder (random weights)."""
    from nvila_core.model.checkpoint import save_checkpoint
    from nvila_core.model.modeling import NVILAModel
    from nvila_core.model.tokenizer import build_tokenizer

    folder = out / "exports" / "navila-shaped-152m"
    if not (folder / "config.json").is_file():
        config = nvila_core.bench.bench_config(nvila_core.bench.FULL)
        vocab = int(config.llm_config["vocab_size"])
        tokenizer = build_tokenizer(vocab, config.chat_template)
        model = NVILAModel.from_config(config, seed=0, tokenizer=tokenizer)
        save_checkpoint(model, tokenizer, folder)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nvila_nav.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default="outputs/bench", help="output directory")
    parser.add_argument("--quick", action="store_true", help="model bench in smoke mode")
    args = parser.parse_args(argv)
    nvila_nav.sim.bench.main(["--out", args.out])
    quick = ["--quick"] if args.quick else []
    nvila_core.bench.main(["--out", args.out, *quick])
    nvila_core.decode_profile.main(["--out", args.out, *quick])
    chosen = decision_variants(Path(args.out), navila_shaped=not args.quick)
    variants = [a for v in chosen for a in ("--variant", v)]
    decisions = ["--decisions", "5", "--warmup", "1"] if args.quick else []
    nvila_nav.faults.decision_bench.main([*variants, *decisions, "--out", args.out])
    print(
        f"benchmarks in {args.out}/: sim_bench.{{csv,png}}, model_bench.{{csv,png}}, "
        "decode_profile.{csv,png}, decision_bench.{csv,json,png}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
