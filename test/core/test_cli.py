"""`nvila-core` command line, run in-process."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nvila_core.cli import default_out, main


def run_json(capsys, *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_describe_nvila_8b_parameters_and_image_budget(capsys):
    report = run_json(capsys, "describe", "nvila-8b", "--image-size", "640x480")
    params = report["parameters"]
    # Qwen2.5-7B with a 151648 vocab (7.6 B) + SigLIP-so400m (0.41 B) + projector (0.062 B).
    assert abs(params["total"] - 8.1e9) <= 0.1e9
    assert abs(params["mm_projector"] - 62.4e6) <= 0.1e6
    assert params["total"] == params["llm"] + params["vision_tower"] + params["mm_projector"]
    image = report["image"]
    assert (image["visual_tokens"], image["vit_passes"]) == (3072, 17)
    assert image["grid"] == [3, 4] and image["newline_tokens"] == 1


def test_describe_navila_frames_budget(capsys):
    report = run_json(capsys, "describe", "navila-8b", "--frames", "8")
    assert report["architecture"] == "vila1.5"
    assert report["frames"]["visual_tokens"] == 8 * 196
    assert report["frames"]["vit_passes"] == 8
    assert report["frames"]["newline_tokens"] == 0


def test_describe_human_output_is_a_table(capsys):
    assert main(["describe", "nvila-lite-2b", "--image-size", "448x448"]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "total" in out and "ViT passes" in out
    assert "mlp_downsample_3x3_fix" in out


def test_describe_a_checkpoint_folder(capsys, tiny_checkpoint, tiny_model):
    report = run_json(capsys, "describe", str(tiny_checkpoint))
    assert report["parameters"] == tiny_model.num_parameters()


def test_generate_with_the_tiny_preset_prints_text_and_timings(capsys, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    image = tmp_path / "scene.png"
    Image.fromarray(pixels).save(image)
    argv = ["generate", "--model", "tiny", "--image", str(image), "--prompt", "Describe it."]
    assert main([*argv, "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "prefill_ms" in out and "vit_passes" in out
    result = run_json(capsys, *argv, "--max-new-tokens", "3")
    assert len(result["token_ids"]) <= 3
    assert result["timings"]["vit_passes"] > 1


def test_errors_go_to_stderr_with_status_2(capsys):
    assert main(["describe", "no-such-model"]) == 2
    assert "no model preset 'no-such-model'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["describe", "tiny", "--image-size", "big"])


HEAVY = ("torch", "transformers")
_HELP_IMPORTS = """
import argparse
import sys
from nvila_core.cli import build_parser, main

parser = build_parser()
commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
for argv in (["--help"], *([name, "--help"] for name in commands)):
    try:
        main(argv)
    except SystemExit as exit:
        assert exit.code == 0, argv
print(",".join(sorted(commands)))
print(",".join(sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[1:]))))
"""


def test_help_imports_no_torch_or_transformers():
    """`nvila-core --help` (python -m nvila_core) in a fresh interpreter, module by module."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nvila_core", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.startswith("usage: nvila-core")
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "nvila_core.cli" in imported
    assert not {name for name in imported if name.split(".")[0] in HEAVY}


def test_every_subcommand_help_imports_no_torch_or_transformers():
    done = subprocess.run(
        [sys.executable, "-c", _HELP_IMPORTS, *HEAVY],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    commands, heavy = done.stdout.splitlines()[-2:]
    assert {"describe", "generate", "train", "finetune", "quantize", "export"} <= set(
        commands.split(",")
    )
    assert heavy == ""


def test_python_m_nvila_core_cli_runs_the_command_line():
    done = subprocess.run(
        [sys.executable, "-m", "nvila_core.cli", "describe", "tiny", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout)["name"] == "tiny"


def test_a_smoke_run_defaults_to_its_own_folder():
    assert default_out("outputs/train/navila-nano", None) == Path("outputs/train/navila-nano")
    assert default_out("outputs/train/navila-nano", 2) == Path("outputs/train/navila-nano-smoke")
