"""`nvila-core` command line, run in-process."""

import json

import numpy as np
import pytest
from PIL import Image

from nvila_core.cli import main


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
