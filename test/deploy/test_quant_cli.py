"""`nvila-core quantize | export | build-engine` through their argparse registrations."""

import argparse
import json
import sys

import numpy as np
import pytest
from PIL import Image

from nvila_core import quant
from nvila_core.export import load_metadata
from nvila_core.export.reference import load_inputs, load_outputs
from nvila_core.quant import QuantState
from nvila_core.quant_cli import (
    EXIT_NO_TENSORRT,
    RECIPES,
    add_build_engine_cli,
    add_export_cli,
    add_quantize_cli,
)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="nvila-core")
    commands = parser.add_subparsers(dest="command", required=True)
    add_quantize_cli(commands)
    add_export_cli(commands)
    add_build_engine_cli(commands)
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture
def calib_dir(tmp_path, calib_images):
    folder = tmp_path / "calib" / "episode_000"
    folder.mkdir(parents=True)
    for i, image in enumerate(calib_images[:8]):
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    (tmp_path / "calib" / "instructions.txt").write_text("go to the red door\n")
    return tmp_path / "calib"


def test_quantize_then_export_then_build_engine_without_tensorrt(
    tmp_path, calib_dir, capsys, monkeypatch
):
    quantized = tmp_path / "quantized"
    assert (
        run_cli(
            "quantize",
            "--model",
            "tiny",
            "--recipe",
            "both",
            "--calib",
            str(calib_dir),
            "--out",
            str(quantized),
        )
        == 0
    )
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["quantized_linears"] == {"int8_channel": 14, "int4_block": 14}
    stages = captured.err  # stage lines and progress on stderr as the work happens
    for step in (
        "nvila-core quantize [",
        "] calibration: reading up to 16 queries",
        "calibration pass (vision): 0/1 queries",
        "SmoothQuant (vision tower, projector): done, ",
        "AWQ scale search (2 LLM layers): done, 6 groups in ",
        f"] writing {quantized}",
    ):
        assert step in stages, step
    assert QuantState.exists(quantized) and (quantized / "config.json").is_file()
    assert not list(quantized.rglob("*.bin")) and not list(quantized.rglob("*.pt"))

    deploy = tmp_path / "deploy"
    assert run_cli("export", "--model", str(quantized), "--out", str(deploy)) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "] graph 1/" in captured.err and "] writing embeddings, tokenizer" in captured.err
    assert report["graphs"]["llm"]["precision"] == ["int4_block"]
    metadata = load_metadata(deploy)
    assert metadata["quantization"]["recipe"] == "both"
    for graph in metadata["graphs"].values():
        assert load_inputs(deploy / graph["reference_inputs"])
        assert load_outputs(deploy / graph["reference_outputs"])

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    assert run_cli("build-engine", str(deploy)) == EXIT_NO_TENSORRT != 0
    err = capsys.readouterr().err
    assert "TensorRT is not available" in err and "JetPack" in err
    assert not list(deploy.glob("*.engine"))


def test_the_parser_lists_the_quantization_recipes_without_importing_them():
    assert RECIPES == quant.RECIPES


def test_export_with_an_inline_recipe_needs_calibration(tmp_path):
    with pytest.raises(ValueError, match="needs --calib"):
        run_cli("export", "--model", "tiny", "--quant", "w4a16", "--out", str(tmp_path / "x"))


def test_float_export_of_a_preset(tmp_path, capsys):
    assert (
        run_cli("export", "--model", "tiny", "--quant", "none", "--out", str(tmp_path / "fp")) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert {g["precision"][0] for g in report["graphs"].values()} == {"float32"}
    assert all(g["torch_relative_error"] < 1e-4 for g in report["graphs"].values())
    assert np.isfinite(report["graphs"]["llm"]["torch_relative_error"])


def test_an_export_carries_the_frame_heads_and_onnxruntime_answers_them(tmp_path, capsys):
    """A frame head written into a checkpoint goes with its export; on onnxruntime it reads the
    exported ViT's tokens and gives the torch model's probabilities."""
    import torch

    from nvila_core.model.checkpoint import save_checkpoint
    from nvila_core.model.frame_head import fit_frame_head, load_heads
    from nvila_core.runtime.engine import Engine
    from test.helpers.compact_models import compact_model

    model, _, tokenizer = compact_model()
    save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    torch_engine = Engine.from_pretrained(tmp_path / "ckpt")
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    tokens = torch_engine.frame_tokens(frame).reshape(-1)
    head = fit_frame_head(
        "turn_side", "q", ["Left.", "Right."], torch.stack([tokens, -tokens]), [0, 1], epochs=50
    )
    head.save(tmp_path / "ckpt")
    deploy = tmp_path / "deploy"
    args = ["export", "--model", str(tmp_path / "ckpt"), "--quant", "none", "--out", str(deploy)]
    assert run_cli(*args) == 0
    assert "frame heads copied: turn_side" in capsys.readouterr().err
    assert sorted(load_heads(deploy)) == ["turn_side"]
    onnx_engine = Engine.from_pretrained(deploy, backend="onnxruntime")
    answer, probs = onnx_engine.ask_head("turn_side", frame)
    expected = Engine.from_pretrained(tmp_path / "ckpt").ask_head("turn_side", frame)
    assert answer == expected[0] and probs == pytest.approx(expected[1], abs=1e-3)
