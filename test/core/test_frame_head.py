"""Frame heads: fitted on visual tokens, kept in the model folder (safetensors + JSON), loaded by
the engine, reading the same tokens a navigation query reads; `nvila-core train-head` end to end
on a real (random-weights) checkpoint."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nvila_core.cli import main as core_main
from nvila_core.model.checkpoint import save_checkpoint
from nvila_core.model.frame_head import (
    HEADS_DIR,
    FrameHead,
    FrameHeadError,
    accuracy,
    copy_heads,
    fit_frame_head,
    load_heads,
)
from nvila_core.runtime.engine import Engine, TorchBackend
from test.helpers.compact_models import compact_model

ANSWERS = ["Left.", "Right."]


def _clusters(n, seed):
    """Two separable clouds of 24 features: label 0 around -1, label 1 around +1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    features = rng.normal(0, 0.7, (n, 24)) + np.where(labels[:, None] == 1, 1.0, -1.0)
    return torch.tensor(features, dtype=torch.float32), labels.tolist()


def test_a_fitted_head_generalises_and_survives_its_files(tmp_path):
    features, labels = _clusters(400, 0)
    held, held_labels = _clusters(200, 1)
    head = fit_frame_head("side", "<image>\nWhich way?", ANSWERS, features, labels, epochs=5)
    assert accuracy(head, held, held_labels) > 0.95
    assert head.info["train_samples"] == 400 and head.num_features == 24
    path = head.save(tmp_path / "model")
    assert path == tmp_path / "model" / HEADS_DIR / "side.safetensors"
    loaded = load_heads(tmp_path / "model")["side"]
    assert (loaded.prompt, loaded.answers, loaded.info) == (head.prompt, ANSWERS, head.info)
    # kept in half precision, read back as float32: the answers stay
    assert {t.dtype for t in load_file(str(path)).values()} == {torch.float16}
    assert all(t.dtype == torch.float32 for t in (loaded.mean, loaded.scale, loaded.net[0].weight))
    for row in held:
        assert loaded.probabilities(row) == pytest.approx(head.probabilities(row), abs=1e-3)
        assert loaded.answer(row)[0] == head.answer(row)[0]
    pair = fit_frame_head("pair", "q", ANSWERS, features, labels, epochs=1, frames=2)
    pair.save(tmp_path / "model")
    assert copy_heads(tmp_path / "model", tmp_path / "export") == ["pair", "side"]
    exported = load_heads(tmp_path / "export")
    assert exported["side"].answers == ANSWERS
    assert (exported["side"].frames, exported["pair"].frames) == (1, 2)
    with pytest.raises(FrameHeadError, match="do not split into 5 frames"):
        fit_frame_head("x", "q", ANSWERS, features, labels, frames=5)
    assert load_heads(tmp_path / "nothing") == {}
    with pytest.raises(FrameHeadError, match="reads 24 features"):
        head.probabilities(torch.zeros(23))


def test_bad_heads_and_bad_training_data_are_refused(tmp_path):
    features, labels = _clusters(20, 2)
    with pytest.raises(FrameHeadError, match="at least two"):
        fit_frame_head("x", "q", ["Left."], features, [0] * 20)
    with pytest.raises(FrameHeadError, match="index the 2 answers"):
        fit_frame_head("x", "q", ANSWERS, features, [2] * 20)
    with pytest.raises(FrameHeadError, match="N labels"):
        fit_frame_head("x", "q", ANSWERS, features, labels[:-1])
    head = fit_frame_head("side", "q", ANSWERS, features, labels, epochs=1)
    head.save(tmp_path)
    meta = tmp_path / HEADS_DIR / "side.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "answers": ["A", "B", "C"]}))
    with pytest.raises(FrameHeadError, match="do not match its answers"):
        FrameHead.load(tmp_path, "side")
    (tmp_path / HEADS_DIR / "side.safetensors").write_bytes(b"not tensors")
    with pytest.raises(FrameHeadError, match="not a readable frame head"):
        FrameHead.load(tmp_path, "side")


def test_the_engine_reads_a_head_on_the_tokens_a_navigation_query_reads(tmp_path, make_frames):
    model, config, tokenizer = compact_model()
    engine = Engine(TorchBackend(model), config, tokenizer)
    frames = make_frames(3, height=48, width=64)
    engine.navigate("Go to the door.", frames, frame_keys=[1, 2, 3])
    encoded = engine.cache_info()
    tokens = engine.frame_tokens(frames[-1], frame_key=3)
    assert engine.cache_info()["hits"] == encoded["hits"] + 1  # the query's own features
    assert engine.cache_info()["misses"] == encoded["misses"]
    assert torch.equal(tokens, engine.frame_tokens(frames[-1]))  # by content, the same tokens
    features = torch.stack([tokens.reshape(-1), -tokens.reshape(-1)])
    head = fit_frame_head("side", "q", ANSWERS, features, [0, 1], epochs=50)
    save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    head.save(tmp_path / "ckpt")
    loaded = Engine.from_pretrained(tmp_path / "ckpt")
    assert sorted(loaded.heads) == ["side"]
    answer, probs = loaded.ask_head("side", frames[-1], frame_keys=7)
    expected, expected_probs = head.answer(tokens)
    assert answer == expected and probs == pytest.approx(expected_probs, abs=1e-6)
    assert sum(probs) == pytest.approx(1.0)
    with pytest.raises(KeyError, match="no frame head 'other'"):
        loaded.ask_head("other", frames[-1])
    assert Engine.from_pretrained("tiny").heads == {}


def _half_bright(rng, left):
    pixels = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
    pixels[:, :32] += 150 if left else 0
    pixels[:, 32:] += 0 if left else 150
    return pixels


def _questions(folder, n, seed, prompt="<image>\nWhich way does the route turn?", frames=1):
    """n 64x48 frames bright on the left ("Left.") or the right ("Right."), LLaVA JSON. With
    frames=2 each record shows that frame first, then one bright on a random side: only the
    older frame carries the answer."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        left = bool(rng.integers(0, 2))
        Image.fromarray(_half_bright(rng, left)).save(folder / f"{i}.png")
        images = [f"{i}.png"]
        if frames == 2:
            Image.fromarray(_half_bright(rng, bool(rng.integers(0, 2)))).save(folder / f"{i}b.png")
            images.append(f"{i}b.png")
        records.append(
            {
                "id": str(i),
                "image": images[0] if frames == 1 else images,
                "conversations": [
                    {"from": "human", "value": prompt},
                    {"from": "gpt", "value": "Left." if left else "Right."},
                ],
            }
        )
    (folder / "q.json").write_text(json.dumps(records))
    return folder / "q.json"


NAMED_TEMPLATE = "<image>\nWhere is {name}?"


def named_questions(folder, n, seed):
    """`_questions` asked by name: "Where is the bright side?" (the bright half's side) or
    "Where is the dark side?" (the other half's), alternately."""
    path = _questions(folder, n, seed)
    records = json.loads(path.read_text())
    for i, record in enumerate(records):
        name = ("the bright side", "the dark side")[i % 2]
        said = record["conversations"][1]["value"]
        if i % 2:
            said = "Right." if said == "Left." else "Left."
        record["name"] = name
        record["conversations"] = [
            {"from": "human", "value": NAMED_TEMPLATE.format(name=name)},
            {"from": "gpt", "value": said},
        ]
    path.write_text(json.dumps(records))
    return path


def test_nvila_core_train_head_writes_a_head_the_model_folder_then_carries(tmp_path, capsys):
    model, _, tokenizer = compact_model()
    save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    train, val = _questions(tmp_path / "train", 80, 0), _questions(tmp_path / "val", 30, 1)
    args = ["train-head", "--model", str(tmp_path / "ckpt"), "--data", str(train)]
    args += ["--val", str(val), "--name", "turn_side", "--epochs", "20"]
    assert core_main(args) == 0
    info = json.loads((tmp_path / "ckpt" / HEADS_DIR / "turn_side.json").read_text())
    assert info["answers"] == ANSWERS and info["train_samples"] == 80
    assert info["val_samples"] == 30 and info["val_accuracy"] >= 0.9
    assert '"val_accuracy"' in capsys.readouterr().out
    engine = Engine.from_pretrained(tmp_path / "ckpt")
    bright_left = np.zeros((48, 64, 3), dtype=np.uint8)
    bright_left[:, :32] = 200
    assert engine.ask_head("turn_side", bright_left)[0] == "Left."
    mixed = _questions(tmp_path / "mixed", 4, 2, prompt="<image>\nWhat is close ahead?")
    records = json.loads(train.read_text()) + json.loads(mixed.read_text())
    for record in records[-4:]:
        record["image"] = f"../mixed/{record['image']}"
    train.write_text(json.dumps(records))
    assert core_main([*args[:5], "--name", "again"]) == 2
    assert "a head answers one question, found 2 prompts" in capsys.readouterr().err


def test_a_head_on_two_decision_frames_reads_the_older_one_too(tmp_path, capsys):
    """`train-head` on records of two frames (the answer in the older one only) writes a head
    that reads both, oldest first; the engine asks it with both and refuses one frame; a val
    file with another number of frames is refused."""
    model, _, tokenizer = compact_model()
    save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    prompt = "<image>\n<image>\nWhich way does the route turn?"
    train = _questions(tmp_path / "train", 120, 0, prompt=prompt, frames=2)
    val = _questions(tmp_path / "val", 40, 1, prompt=prompt, frames=2)
    args = ["train-head", "--model", str(tmp_path / "ckpt"), "--data", str(train)]
    assert core_main([*args, "--val", str(val), "--name", "turn_side", "--epochs", "20"]) == 0
    info = json.loads((tmp_path / "ckpt" / HEADS_DIR / "turn_side.json").read_text())
    assert info["frames"] == 2 and info["prompt"] == prompt and info["val_accuracy"] >= 0.85
    engine = Engine.from_pretrained(tmp_path / "ckpt")
    head = engine.heads["turn_side"]
    assert (
        head.frames == 2
        and head.num_features == 2 * engine.frame_tokens(np.zeros((48, 64, 3), np.uint8)).numel()
    )
    rng = np.random.default_rng(5)
    for left in (True, False):
        for current in (True, False):
            older, newer = _half_bright(rng, left), _half_bright(rng, current)
            answer, _ = engine.ask_head("turn_side", [older, newer], [None, None])
            assert answer == ("Left." if left else "Right.")
    with pytest.raises(ValueError, match="reads 2 frame"):
        engine.ask_head("turn_side", newer)
    one = _questions(tmp_path / "one", 10, 2, prompt=prompt.replace("<image>\n", "", 1))
    assert core_main([*args, "--val", str(one), "--name", "again"]) == 2
    assert "another number of frames" in capsys.readouterr().err


def test_a_named_head_answers_each_name_from_its_own_group(tmp_path):
    """One hidden layer, one answer group per name: "the red door" is on the side of the
    cloud, "the blue door" on the other; each row trains only its own name's group."""
    features, labels = _clusters(600, 3)
    names = ["the blue door", "the red door"]
    asked = [i % 2 for i in range(600)]
    named_labels = [label if name else 1 - label for label, name in zip(labels, asked, strict=True)]
    head = fit_frame_head(
        "where", "<image>\nWhere is {name}?", ANSWERS, features, named_labels, epochs=10,
        names=names, asked=asked,
    )  # fmt: skip
    held, held_labels = _clusters(200, 4)
    red, blue = [1] * 200, [0] * 200
    assert accuracy(head, held, held_labels, red) > 0.95
    assert accuracy(head, held, [1 - label for label in held_labels], blue) > 0.95
    head.save(tmp_path)
    loaded = FrameHead.load(tmp_path, "where")
    assert (
        loaded.names == names
        and json.loads((tmp_path / HEADS_DIR / "where.json").read_text())["names"] == names
    )
    row = held[0]
    for name in names:
        assert loaded.probabilities(row, name) == pytest.approx(
            head.probabilities(row, name), abs=1e-3
        )
    assert loaded.answer(row, "the red door")[0] != loaded.answer(row, "the blue door")[0]
    with pytest.raises(FrameHeadError, match="no answers about 'the green door'"):
        loaded.answer(row, "the green door")
    with pytest.raises(FrameHeadError, match="no answers about None"):
        loaded.answer(row)
    unnamed = fit_frame_head("side", "q", ANSWERS, features, labels, epochs=1)
    with pytest.raises(FrameHeadError, match="asks about no name"):
        unnamed.answer(row, "the red door")
    with pytest.raises(FrameHeadError, match="one of the 2 names"):
        fit_frame_head("x", "q", ANSWERS, features, labels, names=names, asked=[2] * 600)
    with pytest.raises(FrameHeadError, match="the head has none"):
        fit_frame_head("x", "q", ANSWERS, features, labels, asked=asked)


def test_nvila_core_train_head_fits_a_named_question(tmp_path, capsys):
    """Records that carry the name they ask about ("the bright side" or "the dark side" of a
    frame bright on one half) train a named head; the engine answers `about` each name."""
    model, _, tokenizer = compact_model()
    save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    template = NAMED_TEMPLATE
    for split, n, seed in (("train", 160, 0), ("val", 40, 1)):
        named_questions(tmp_path / split, n, seed)
    args = [
        "train-head",
        "--model",
        str(tmp_path / "ckpt"),
        "--data",
        str(tmp_path / "train/q.json"),
    ]
    assert (
        core_main(
            [*args, "--val", str(tmp_path / "val/q.json"), "--name", "where", "--epochs", "30"]
        )
        == 0
    )
    info = json.loads((tmp_path / "ckpt" / HEADS_DIR / "where.json").read_text())
    assert info["prompt"] == template and info["names"] == ["the bright side", "the dark side"]
    assert info["val_accuracy"] >= 0.85
    engine = Engine.from_pretrained(tmp_path / "ckpt")
    bright_left = np.zeros((48, 64, 3), dtype=np.uint8)
    bright_left[:, :32] = 200
    assert engine.ask_head("where", bright_left, about="the bright side")[0] == "Left."
    assert engine.ask_head("where", bright_left, about="the dark side")[0] == "Right."
    # the token layout: each side looked for at every token ("Right." where it is not left)
    tokens = [*args, "--val", str(tmp_path / "val/q.json"), "--layout", "tokens"]
    assert core_main([*tokens, "--name", "where_tokens", "--absent", "Right."]) == 0
    info = json.loads((tmp_path / "ckpt" / HEADS_DIR / "where_tokens.json").read_text())
    assert (info["layout"], info["absent"]) == ("tokens", "Right.")
    assert info["val_accuracy"] >= 0.85
    engine = Engine.from_pretrained(tmp_path / "ckpt")
    assert engine.ask_head("where_tokens", bright_left, about="the bright side")[0] == "Left."
    assert core_main([*tokens, "--name", "again", "--absent", "Gone."]) == 2
    assert "needs names, one frame per record and --absent among" in capsys.readouterr().err
    records = json.loads((tmp_path / "train/q.json").read_text())
    records[3]["conversations"][0]["value"] = "<image>\nWhat is the dark side?"
    (tmp_path / "train/q.json").write_text(json.dumps(records))
    assert core_main([*args, "--name", "again"]) == 2
    assert "not '<image>\\nWhere is {name}?'" in capsys.readouterr().err
    del records[3]["name"]
    (tmp_path / "train/q.json").write_text(json.dumps(records))
    assert core_main([*args, "--name", "again"]) == 2
    assert "have no name" in capsys.readouterr().err


def _tokens_with_a_thing(n, seed, tokens=9, dim=16, names=3):
    """[n, tokens * dim] tokens in which, per row, the asked-about name's mark (+3 on its own
    dimension) sits at one token, or nowhere; the answer is the mark's column of a 3-wide grid
    ("Left." / "Ahead." / "Right.") or "Not in view."."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, tokens, dim)).astype(np.float32)
    asked = rng.integers(0, names, n).tolist()
    labels = []
    for row, name in enumerate(asked):
        where = int(rng.integers(-1, tokens))
        if where >= 0:
            x[row, where, name] += 3.0
        labels.append(WHERE.index("Not in view.") if where < 0 else (1, 0, 3)[where % 3])
    return torch.tensor(x.reshape(n, -1)), labels, asked


WHERE = ["Ahead.", "Left.", "Not in view.", "Right."]


def test_a_token_detector_finds_a_named_thing_at_any_token_and_survives_its_files(tmp_path):
    """The token layout looks for the name at every token with one shared net: on held-out
    rows it places the mark far better than the flat net fitted the same way, and its files
    (layout and absent answer in the JSON, half-precision tensors) give back the same answers."""
    names = ["the blue door", "the red box", "the green bed"]
    features, labels, asked = _tokens_with_a_thing(3000, 0)
    held, held_labels, held_asked = _tokens_with_a_thing(600, 1)
    fit = {"hidden": 16, "epochs": 20, "names": names, "asked": asked}
    head = fit_frame_head(
        "where", "<image>\nWhere is {name}?", WHERE, features, labels, tokens=9,
        absent="Not in view.", **fit,
    )  # fmt: skip
    flat = fit_frame_head("where", "<image>\nWhere is {name}?", WHERE, features, labels, **fit)
    placed = accuracy(head, held, held_labels, held_asked)
    assert placed > 0.75 and placed > accuracy(flat, held, held_labels, held_asked) + 0.1
    head.save(tmp_path)
    meta = json.loads((tmp_path / HEADS_DIR / "where.json").read_text())
    assert (meta["layout"], meta["absent"]) == ("tokens", "Not in view.")
    loaded = FrameHead.load(tmp_path, "where")
    assert loaded.layout == "tokens" and loaded.info == head.info
    for row, name in zip(held[:20], held_asked[:20], strict=True):
        assert loaded.probabilities(row, names[name]) == pytest.approx(
            head.probabilities(row, names[name]), abs=2e-3
        )
    assert copy_heads(tmp_path, tmp_path / "export") == ["where"]
    assert load_heads(tmp_path / "export")["where"].layout == "tokens"
    with pytest.raises(FrameHeadError, match="reads one frame of 9 tokens"):
        fit_frame_head("x", "q", WHERE, features, labels, tokens=9, absent="Gone.", **fit)
    with pytest.raises(FrameHeadError, match="reads one frame of 9 tokens"):
        fit_frame_head("x", "q", WHERE, features, labels, tokens=9, absent="Not in view.",
                       frames=2, **fit)  # fmt: skip
    tensors = load_file(str(tmp_path / HEADS_DIR / "where.safetensors"))
    tensors["frame.2.bias"] = tensors["frame.2.bias"][:-1]
    save_file(tensors, str(tmp_path / HEADS_DIR / "where.safetensors"))
    with pytest.raises(FrameHeadError, match="its tensors do not match"):
        FrameHead.load(tmp_path, "where")
    meta["layout"] = "grid"
    (tmp_path / HEADS_DIR / "where.json").write_text(json.dumps(meta))
    with pytest.raises(FrameHeadError, match="neither 'flat' nor 'tokens'"):
        FrameHead.load(tmp_path, "where")
