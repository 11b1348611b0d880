"""A frame head with its own tuned vision: trained together with low-rank updates of a copy of
the model's vision tower and projector, kept as those updates in the model folder and as the
whole tuned copy in an export, answering the same on torch and onnxruntime; the model's own
weights and tokens never change."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nvila_core.cli import main as core_main
from nvila_core.model.checkpoint import load_vision_parts, save_checkpoint
from nvila_core.model.frame_head import HEADS_DIR, FrameHeadError, load_heads
from nvila_core.model.head_vision import ADAPTER_PREFIX, TUNED_PREFIX, HeadVision
from nvila_core.model.vision import encode_frames
from nvila_core.runtime.engine import Engine
from test.core.test_frame_head import named_questions
from test.helpers.compact_models import compact_model


def test_updates_start_at_the_model_and_fold_into_the_same_outputs():
    model, config, _ = compact_model()
    vision = HeadVision(config, model.vision_tower, model.mm_projector, rank=4, blocks=1)
    pixels = torch.rand(3, 3, config.tile_size, config.tile_size) * 2 - 1
    with torch.no_grad():
        own = encode_frames(model.vision_tower, model.mm_projector, pixels.float(), config)
        assert torch.allclose(vision(pixels), own.float(), atol=1e-6)
        for factor in vision.trainable():
            factor.normal_(0, 0.05)
        tuned = vision(pixels)
        assert (tuned - own).abs().max() > 1e-3
        assert torch.allclose(vision.fold()(pixels), tuned, atol=1e-5)
    assert vision.trainable() == [] and vision.adapter_tensors() == {}
    with pytest.raises(ValueError, match="tuned blocks"):
        HeadVision(config, model.vision_tower, model.mm_projector, rank=4, blocks=99)


def test_train_head_tunes_its_own_vision_keeps_only_updates_and_its_export_answers_alike(
    tmp_path, capsys
):
    model, _, tokenizer = compact_model()
    ckpt = tmp_path / "ckpt"
    save_checkpoint(model, tokenizer, ckpt)
    before = {p: p.read_bytes() for p in sorted(ckpt.rglob("*.safetensors"))}
    train = named_questions(tmp_path / "train", 120, 0)
    val = named_questions(tmp_path / "val", 40, 1)
    args = ["train-head", "--model", str(ckpt), "--data", str(train), "--val", str(val)]
    args += ["--layout", "tokens", "--absent", "Right.", "--epochs", "20"]
    assert core_main([*args, "--name", "where", "--tune-vision", "4"]) == 0
    info = json.loads((ckpt / HEADS_DIR / "where.json").read_text())
    assert (info["vision_rank"], info["vision_blocks"], info["vision"]["rank"]) == (4, 1, 4)
    assert info["val_accuracy"] >= 0.85
    # the model's own weights are untouched; the head keeps only the updates' factors
    assert {p: p.read_bytes() for p in before} == before
    stored = load_file(str(ckpt / HEADS_DIR / "where.safetensors"))
    factors = [k for k in stored if k.startswith(ADAPTER_PREFIX)]
    assert factors and not any(k.startswith(TUNED_PREFIX) for k in stored)
    assert any(stored[k].abs().max() > 0 for k in factors if k.endswith(".b"))

    engine = Engine.from_pretrained(ckpt)
    bright_left = np.zeros((48, 64, 3), dtype=np.uint8)
    bright_left[:, :32] = 200
    assert engine.ask_head("where", bright_left, about="the bright side")[0] == "Left."
    assert engine.ask_head("where", bright_left, about="the dark side")[0] == "Right."
    head = engine.heads["where"]
    own = engine.frame_tokens(bright_left, frame_key=5)
    seen = engine.head_frame_tokens(head, bright_left, frame_key=5)
    assert seen.shape == own.shape and (seen - own).abs().max() > 1e-3
    assert torch.equal(engine.head_frame_tokens(head, bright_left, frame_key=5), seen)
    assert engine.head_frame_cache.info()["hits"] >= 1

    # an export keeps the whole tuned copy (it has no float vision tower of its own)
    deploy = tmp_path / "deploy"
    export = ["export", "--model", str(ckpt), "--quant", "none", "--out", str(deploy)]
    assert core_main(export) == 0
    copied = load_file(str(deploy / HEADS_DIR / "where.safetensors"))
    assert any(k.startswith(TUNED_PREFIX) for k in copied)
    assert not any(k.startswith(ADAPTER_PREFIX) for k in copied)
    onnx_engine = Engine.from_pretrained(deploy, backend="onnxruntime")
    for about in ("the bright side", "the dark side"):
        answer, probs = onnx_engine.ask_head("where", bright_left, about=about)
        expected = engine.ask_head("where", bright_left, about=about)
        assert answer == expected[0] and probs == pytest.approx(expected[1], abs=2e-3)

    # only a head that looks for a named thing at every token tunes its vision
    flat = [a for a in args if a not in ("--layout", "tokens", "--absent", "Right.")]
    assert core_main([*flat, "--name", "flat", "--tune-vision", "4"]) == 2
    assert "--tune-vision trains a --layout tokens head" in capsys.readouterr().err
    # factors that do not fit the model's layers are refused with the head's name
    broken = dict(stored)
    del broken[factors[0]]
    save_file(broken, str(ckpt / HEADS_DIR / "where.safetensors"))
    with pytest.raises(FrameHeadError, match="where: its tensors do not match"):
        load_heads(ckpt)


def test_the_vision_parts_load_without_the_llm(tmp_path):
    model, config, tokenizer = compact_model()
    save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    tower, projector = load_vision_parts(tmp_path / "ckpt")
    pixels = torch.rand(2, 3, config.tile_size, config.tile_size)
    with torch.no_grad():
        expected = encode_frames(model.vision_tower, model.mm_projector, pixels, config)
        assert torch.allclose(encode_frames(tower, projector, pixels, config), expected.float())
