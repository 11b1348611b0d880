"""DeltaLoss scoring, per-dataset pruning, the pruned-mixture file and `nvila-core prune`."""

import argparse
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
import yaml
from episode_folders import write_episode_dataset
from torch import nn

from nvila_core.model.checkpoint import save_checkpoint
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.processing import NVILAProcessor
from nvila_core.train.data import load_mixture
from nvila_core.train.deltaloss import (
    GROUPINGS,
    IGNORE_INDEX,
    PrunedMixture,
    add_prune_cli,
    answer_logprobs,
    delta_loss_scores,
    kept_count,
    prune,
    read_pruned_mixture,
    source_and_answer_kind,
    write_pruned_mixture,
)

# regular-vocabulary tokens the constructed models favour
EASY, DISTRACTING, HELPFUL = 100, 101, 102


@dataclass
class TokenSample:
    sample_id: str
    source: str
    answer_ids: tuple[int, ...]
    num_frames: int = 3


def favouring(model: NVILAModel, tokens: set[int]) -> NVILAModel:
    """An lm_head that ignores its input and puts most probability on `tokens`."""
    hidden = model.llm.config.hidden_size
    vocab = model.llm.config.vocab_size
    head = nn.Linear(hidden, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[sorted(tokens)] = 8.0
    model.llm.lm_head = head
    return model.eval()


@pytest.fixture
def processor(tiny_config, tiny_tokenizer):
    return NVILAProcessor(tiny_config, tiny_tokenizer)


@pytest.fixture
def make_inputs(processor, make_frames, tiny_tokenizer):
    """Batches of navigation prompts whose labelled answer is `answer_ids` + `<|im_end|>`."""
    end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    newline = tiny_tokenizer("\n", add_special_tokens=False).input_ids
    frames = make_frames(9)  # the same pixels every time a sample is built

    def make(model, samples):
        ids, labels, media = [], [], []
        for sample in samples:
            inputs = processor.navigation("walk to the kitchen", frames[: sample.num_frames])
            answer = [*sample.answer_ids, end]
            ids.append(inputs.input_ids + answer + newline)
            labels.append([IGNORE_INDEX] * len(inputs.input_ids) + answer + [IGNORE_INDEX])
            media.append(inputs.media)
        return SimpleNamespace(input_ids=ids, labels=labels, media=media)

    return make


def test_delta_loss_ranks_easy_distracting_and_helpful_samples(
    tiny_config, tiny_tokenizer, make_inputs
):
    # large is right on HELPFUL, small on DISTRACTING, both on EASY
    large = NVILAModel.from_config(tiny_config, seed=0, tokenizer=tiny_tokenizer)
    small = NVILAModel.from_config(tiny_config, seed=1, tokenizer=tiny_tokenizer)
    large = favouring(large, {EASY, HELPFUL})
    small = favouring(small, {EASY, DISTRACTING})
    samples = [
        TokenSample("a/easy", "a", (EASY, EASY)),
        TokenSample("a/distracting", "a", (DISTRACTING, DISTRACTING)),
        TokenSample("a/helpful", "a", (HELPFUL, HELPFUL), num_frames=9),
    ]
    easy, distracting, helpful = delta_loss_scores(large, small, samples, make_inputs, 2)
    assert abs(easy) < 1e-4
    assert distracting < -1.0
    assert helpful > 1.0
    assert prune(samples, [easy, distracting, helpful], 1 / 3) == [samples[2]]
    assert prune(samples, [easy, distracting, helpful], 2 / 3) == [samples[0], samples[2]]


def test_batched_scores_equal_per_sample_and_direct_log_probs(
    tiny_config, tiny_tokenizer, make_inputs
):
    model = NVILAModel.from_config(tiny_config, seed=0, tokenizer=tiny_tokenizer).eval()
    samples = [
        TokenSample("a/0", "a", (EASY, 7, 9), num_frames=2),
        TokenSample("a/1", "a", (HELPFUL,), num_frames=9),
    ]
    batch = make_inputs(model, samples)
    batched = answer_logprobs(model, batch)
    for n, sample in enumerate(samples):
        single = make_inputs(model, [sample])
        assert answer_logprobs(model, single)[0] == pytest.approx(batched[n], abs=1e-5)
        # direct: full logits of the unpadded sequence, token p predicted at p - 1
        with torch.no_grad():
            embeds = model.embed_inputs(single.input_ids[0], single.media[0])
            log_probs = model(inputs_embeds=embeds).logits[0].log_softmax(-1)
        shift = embeds.shape[1] - len(single.input_ids[0])
        direct = [
            log_probs[p + shift - 1, label]
            for p, label in enumerate(single.labels[0])
            if label != IGNORE_INDEX
        ]
        assert len(direct) == len(sample.answer_ids) + 1
        assert float(torch.stack(direct).mean()) == pytest.approx(batched[n], abs=1e-5)


def test_answer_logprobs_rejects_unlabelled_samples(tiny_config, tiny_tokenizer, make_inputs):
    model = NVILAModel.from_config(tiny_config, seed=0, tokenizer=tiny_tokenizer).eval()
    batch = make_inputs(model, [TokenSample("a/0", "a", (EASY,))])
    batch.labels = [[IGNORE_INDEX] * len(batch.input_ids[0])]
    with pytest.raises(ValueError, match="needs labelled answer tokens"):
        answer_logprobs(model, batch)


def test_prune_keeps_the_top_fraction_of_each_dataset_in_order():
    samples = [
        SimpleNamespace(sample_id=f"{s}/{i}", source=s)
        for s, i in zip("aaaabbb", range(7), strict=True)
    ]
    scores = [0.1, 0.9, -0.5, 0.9, 2.0, -1.0, 0.3]
    kept = prune(samples, scores, 0.5)
    # a: top 2 of 4 (tie at 0.9 -> both), b: ceil(1.5) = 2 of 3
    assert [s.sample_id for s in kept] == ["a/1", "a/3", "b/4", "b/6"]
    assert prune(samples, scores, 1.0) == samples
    custom = prune(samples, scores, 0.25, group_key=lambda s: "all")
    assert [s.sample_id for s in custom] == ["a/1", "b/4"]
    assert kept_count(10, 0.7) == 7  # no float noise rounding up
    with pytest.raises(ValueError, match="keep_fraction"):
        prune(samples, scores, 0.0)
    with pytest.raises(ValueError, match="7 samples but 6 scores"):
        prune(samples, scores[:-1], 0.5)


def test_pruned_mixture_round_trip_and_filter(tmp_path):
    samples = [
        SimpleNamespace(sample_id=f"{s}/{i:03d}", source=s)
        for s, i in zip("aab", (1, 2, 3), strict=True)
    ]
    pruned = PrunedMixture.from_samples(
        samples, [samples[1], samples[2]], 0.5, {"large": "L", "small": "S"}
    )
    path = write_pruned_mixture(tmp_path / "pruned.yaml", pruned)
    data = yaml.safe_load(path.read_text())
    assert data["format"] == "nvila_core.pruned_mixture" and data["version"] == 1
    assert data["datasets"] == {
        "a": {"total": 2, "kept": ["a/002"]},
        "b": {"total": 1, "kept": ["b/003"]},
    }
    loaded = read_pruned_mixture(path)
    assert loaded == pruned
    other = SimpleNamespace(sample_id="c/1", source="c")  # unlisted dataset: not pruned
    assert loaded.filter_samples([*samples, other]) == [samples[1], samples[2], other]

    data["datasets"]["a"]["kept"] = [1, 2]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"pruned\.yaml: dataset 'a' needs 'kept'"):
        read_pruned_mixture(path)


# ---------------------------------------------------------------- nvila-core prune
@pytest.mark.timeout(120)
def test_prune_cli_writes_a_pruned_mixture(tmp_path, tiny_config, tiny_tokenizer):
    for name, seed in (("large", 0), ("small", 1)):
        model = NVILAModel.from_config(tiny_config, seed=seed, tokenizer=tiny_tokenizer)
        save_checkpoint(model, tiny_tokenizer, tmp_path / name)
    mixture = {
        "datasets": [
            {"name": "sim", "path": str(write_episode_dataset(tmp_path / "sim", 2, 3, 0))},
            {"name": "robot", "path": str(write_episode_dataset(tmp_path / "robot", 1, 3, 1))},
            {"name": "held", "path": str(tmp_path / "sim"), "split": "val"},
        ]
    }
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(mixture))
    parser = argparse.ArgumentParser()
    add_prune_cli(parser.add_subparsers())
    out = tmp_path / "pruned.yaml"
    args = parser.parse_args(
        [
            "prune",
            *("--large", str(tmp_path / "large"), "--small", str(tmp_path / "small")),
            *("--mixture", str(tmp_path / "mix.yaml"), "--keep", "0.5", "--out", str(out)),
        ]
    )
    assert args.handler(args) == 0
    pruned = read_pruned_mixture(out)
    assert pruned.totals == {"sim": 6, "robot": 3}  # the val dataset is not pruned
    assert {k: len(v) for k, v in pruned.kept.items()} == {"sim": 3, "robot": 2}
    assert all(i.startswith("sim/ep") for i in pruned.kept["sim"])
    assert pruned.provenance["large"] == str(tmp_path / "large")
    # a mixture naming the file trains on exactly the kept samples; validation is untouched
    (tmp_path / "mix-pruned.yaml").write_text(yaml.safe_dump({**mixture, "pruned": str(out)}))
    whole, kept = load_mixture(tmp_path / "mix.yaml"), load_mixture(tmp_path / "mix-pruned.yaml")
    trained = sorted((s.source, s.sample_id) for s in kept.train_samples())
    assert trained == sorted((src, i) for src, ids in pruned.kept.items() for i in ids)
    assert [s.sample_id for s in kept.val_samples()] == [s.sample_id for s in whole.val_samples()]
    # an instruction-only model as the weak one is scored on black frames, as it was trained
    blind = parser.parse_args(
        [
            "prune",
            *("--large", str(tmp_path / "large"), "--small", str(tmp_path / "large")),
            *("--mixture", str(tmp_path / "mix.yaml"), "--small-blank-frames"),
            *("--out", str(tmp_path / "blind.yaml")),
        ]
    )
    assert blind.handler(blind) == 0
    assert read_pruned_mixture(tmp_path / "blind.yaml").provenance["small_input"] == "blank frames"


def test_grouping_by_answer_kind_keeps_the_answer_prior():
    def sample(i, answer):
        return SimpleNamespace(sample_id=f"s/{i}", source="s", answer=answer)

    answers = ["move forward 75 cm", "move forward 25 cm", "turn left 30 degrees"] * 2
    answers += ["turn right 15 degrees", "stop", "Describe the room."]
    samples = [sample(i, f"The next action is {a}.") for i, a in enumerate(answers)]
    keys = [source_and_answer_kind(s)[1] for s in samples]
    assert keys == ["forward", "forward", "turn left"] * 2 + ["turn right", "stop", "other"]
    # the forward samples score highest, yet every kind keeps its half
    scores = [5.0 if k == "forward" else float(-i) for i, k in enumerate(keys)]
    kept = prune(samples, scores, 0.5, GROUPINGS["answer"])
    assert [source_and_answer_kind(s)[1] for s in kept].count("forward") == 2
    assert {source_and_answer_kind(s)[1] for s in kept} == set(keys)
    assert len(prune(samples, scores, 0.5, GROUPINGS["dataset"])) == 5
