"""Training data: real simulator rollouts -> NaVILA samples -> mixtures -> model inputs."""

import dataclasses
import json

import pytest
import torch
import yaml
from PIL import Image

from nvila_core.model.processing import NVILAProcessor
from nvila_core.model.prompting import sample_history_indices
from nvila_core.model.tokenizer import build_tokenizer
from nvila_core.train.data import (
    IGNORE_INDEX,
    DataError,
    Mixture,
    NavDataset,
    collate,
    load_mixture,
    make_loader,
    read_episode_dataset,
)
from nvila_core.train.distributed import EpochSampler
from nvila_nav.sim.dataset import load_dataset
from test.helpers.sim_rollouts import write_sim_rollouts


@pytest.fixture(scope="module")
def rollout(tmp_path_factory):
    """Two real expert rollouts at 64x48, written by `nvila-sim rollout`."""
    return write_sim_rollouts(tmp_path_factory.mktemp("rollout"), 2)


def test_one_sample_per_action_with_navila_frames_and_exact_answers(rollout):
    samples = read_episode_dataset(rollout, "sim")
    reference = load_dataset(rollout)  # the simulator's own reader
    expected = [s for e in reference.episodes for s in e.samples()]
    index = json.loads((rollout / "index.json").read_text())
    assert len(samples) == len(expected) == sum(e["num_actions"] for e in index["episodes"])
    for sample, ref in zip(samples, expected, strict=True):
        assert sample.source == "sim"
        assert sample.instruction == ref.instruction
        assert sample.answer == ref.answer  # Action.to_answer(), e.g. "... move forward 75 cm."
        picks = sample_history_indices(len(ref.frames), 8)
        assert sample.frame_paths == tuple(None if i is None else ref.frames[i] for i in picks)
    first = samples[0]  # the first action sees only frame 0: 7 black pads, then frame 0
    assert first.frame_paths[:7] == (None,) * 7 and first.frame_paths[7].name == "000000.jpg"
    late = next(s for s, r in zip(samples, expected, strict=True) if len(r.frames) > 20)
    assert late.frame_paths[0].name == "000000.jpg" and None not in late.frame_paths
    assert late.answer.startswith("The next action is ") and late.answer.endswith(".")
    assert samples[0].sample_id != samples[1].sample_id


def test_other_formats_are_refused(tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(DataError, match=r"not a nvila_nav\.sim\.dataset v1"):
        read_episode_dataset(tmp_path, "x")


def _write_mixture(path, rollout, **extra):
    data = {
        "seed": 3,
        "datasets": [
            {"name": "twice", "path": str(rollout), "weight": 2},
            {"name": "half", "path": str(rollout), "weight": 0.5, "split": "train"},
            {"name": "held-out", "path": str(rollout), "split": "val"},
        ],
        **extra,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_mixture_weights_split_and_deterministic_order(rollout, tmp_path):
    count = len(read_episode_dataset(rollout, "x"))
    mixture = load_mixture(_write_mixture(tmp_path / "mix.yaml", rollout))
    train = mixture.train_samples()
    sources = [s.source for s in train]
    assert sources.count("twice") == 2 * count and sources.count("half") == round(0.5 * count)
    assert [s.sample_id for s in mixture.val_samples()] == [
        s.sample_id for s in read_episode_dataset(rollout, "held-out")
    ]
    again = load_mixture(tmp_path / "mix.yaml").train_samples()
    assert [s.sample_id for s in again] == [s.sample_id for s in train]
    reseeded = load_mixture(_write_mixture(tmp_path / "mix2.yaml", rollout, seed=4))
    assert [s.sample_id for s in reseeded.train_samples()] != [s.sample_id for s in train]
    assert sources[: 2 * count] != ["twice"] * (2 * count)  # shuffled across datasets


def test_val_fraction_holds_out_whole_episodes(rollout, tmp_path):
    path = tmp_path / "mix.yaml"
    data = {"val_fraction": 0.5, "datasets": [{"name": "sim", "path": str(rollout)}]}
    path.write_text(yaml.safe_dump(data))
    mixture = load_mixture(path)
    train_eps = {s.episode_key for s in mixture.train_samples()}
    val_eps = {s.episode_key for s in mixture.val_samples()}
    assert len(train_eps) == len(val_eps) == 1 and not train_eps & val_eps


def test_bad_mixtures_name_the_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"datasets": [{"name": "a", "path": "x", "wieght": 2}]}))
    with pytest.raises(DataError, match="unknown keys"):
        load_mixture(path)
    path.write_text(yaml.safe_dump({"datasets": [{"name": "a", "path": "x", "split": "test"}]}))
    with pytest.raises(DataError, match="split"):
        load_mixture(path)


@pytest.fixture(scope="module")
def nav_dataset(rollout, tiny_config, tiny_tokenizer):
    return NavDataset(
        read_episode_dataset(rollout, "sim")[:12], NVILAProcessor(tiny_config, tiny_tokenizer)
    )


def test_labels_mask_everything_but_the_answer_and_its_end_token(nav_dataset, tiny_tokenizer):
    example = nav_dataset[9]
    labelled = [int(t) for t in example.labels if t != IGNORE_INDEX]
    assert tiny_tokenizer.decode(labelled) == example.answer + "<|im_end|>"
    assert (example.labels[: example.prompt_length] == IGNORE_INDEX).all()
    # the ids end with the end token (the template's trailing "\n" is not fed): every id after
    # the prompt is labelled with itself, exactly what `Engine.choose` scores
    answer_ids = example.input_ids[example.prompt_length :]
    assert example.labels[example.prompt_length :].tolist() == answer_ids.tolist() == labelled
    assert labelled == nav_dataset.processor.answer_ids(example.answer)


def test_prompt_is_exactly_what_inference_builds(nav_dataset, rollout):
    """Training prompt ids and pixels = `NVILAProcessor.navigation` on the episode so far."""
    example = nav_dataset[9]
    sample = nav_dataset.samples[9]
    episode = load_dataset(rollout).episodes[0]
    action = episode.actions[9]
    frames = [episode.image(i) for i in range(action.frame_index + 1)]
    inputs = nav_dataset.processor.navigation(sample.instruction, frames)
    assert example.input_ids[: example.prompt_length].tolist() == inputs.input_ids
    assert len(example.media) == len(inputs.media) == 8
    for ours, theirs in zip(example.media, inputs.media, strict=True):
        assert ours.kind == theirs.kind == "frame"
        assert torch.equal(ours.pixel_values, theirs.pixel_values)


def test_black_pad_frames_for_a_young_episode(nav_dataset):
    example = nav_dataset[0]
    pads = [m.pixel_values for m in example.media[:7]]
    assert all(torch.all(p == -1.0) for p in pads)  # black after SigLIP normalisation
    assert not torch.all(example.media[7].pixel_values == -1.0)


def test_blank_frames_mixture_keeps_answers_and_blacks_every_frame(
    rollout, tiny_config, tiny_tokenizer
):
    spec = {"datasets": [{"name": "sim", "path": str(rollout)}], "blank_frames": True}
    blank = Mixture.from_dict(spec).train_samples()
    sighted = Mixture.from_dict({**spec, "blank_frames": False}).train_samples()
    assert [(s.sample_id, s.answer) for s in blank] == [(s.sample_id, s.answer) for s in sighted]
    assert all(p is None for s in blank for p in s.frame_paths)
    example = NavDataset(blank[:1], NVILAProcessor(tiny_config, tiny_tokenizer))[0]
    assert len(example.media) == 8
    assert all(torch.all(m.pixel_values == -1.0) for m in example.media)


def test_previous_actions_dropout_withholds_them_in_a_seeded_share_of_training_samples(
    rollout, tiny_config, tiny_tokenizer
):
    spec = {"datasets": [{"name": "sim", "path": str(rollout)}], "seed": 3}
    kept = Mixture.from_dict(spec).train_samples()
    dropped = Mixture.from_dict({**spec, "previous_actions_dropout": 0.5}).train_samples()
    # the same samples in the same order, only the previous actions differ
    assert [(s.sample_id, s.answer) for s in dropped] == [(s.sample_id, s.answer) for s in kept]
    had = [k.previous_actions != () for k in kept]
    withheld = [h and d.previous_actions == () for h, d in zip(had, dropped, strict=True)]
    assert 0 < sum(withheld) < sum(had)
    assert all(
        d.previous_actions in ((), k.previous_actions) for k, d in zip(kept, dropped, strict=True)
    )
    again = Mixture.from_dict({**spec, "previous_actions_dropout": 0.5}).train_samples()
    assert [s.previous_actions for s in again] == [s.previous_actions for s in dropped]
    assert all(
        s.previous_actions == ()
        for s in Mixture.from_dict({**spec, "previous_actions_dropout": 1.0}).train_samples()
    )
    # what the model trains on: the prompt inference builds at an episode's first step ("Done:
    # nothing"), where the same sample without dropout has the executed actions
    config = dataclasses.replace(tiny_config, nav_prompt="compact", nav_previous_actions=2)
    processor = NVILAProcessor(config, tiny_tokenizer)
    k = withheld.index(True)
    example = NavDataset([dropped[k]], processor)[0]
    original = NavDataset([kept[k]], processor)[0]
    frames = [Image.open(p).convert("RGB") for p in dropped[k].frame_paths if p is not None]
    for previous, trained in (([], example), (list(kept[k].previous_actions), original)):
        inputs = processor.navigation(dropped[k].instruction, frames, previous_actions=previous)
        assert trained.input_ids[: trained.prompt_length].tolist() == inputs.input_ids
    assert example.input_ids.tolist() != original.input_ids.tolist()
    with pytest.raises(DataError, match="previous_actions_dropout"):
        Mixture.from_dict({**spec, "previous_actions_dropout": 1.5})


def test_llama3_template_labels_end_with_end_of_text(rollout, tiny_vila15_config):
    tokenizer = build_tokenizer(512, "llama_3")
    dataset = NavDataset(
        read_episode_dataset(rollout, "sim")[:2], NVILAProcessor(tiny_vila15_config, tokenizer)
    )
    example = dataset[1]
    labelled = [int(t) for t in example.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(labelled) == example.answer + "<|end_of_text|>"
    assert example.input_ids.tolist().count(-200) == 8


def test_collate_keeps_samples_side_by_side(nav_dataset):
    batch = collate([nav_dataset[0], nav_dataset[5]])
    assert len(batch) == 2 and [len(m) for m in batch.media] == [8, 8]
    assert batch.answers == [nav_dataset.samples[0].answer, nav_dataset.samples[5].answer]
    assert all(len(i) == len(lab) for i, lab in zip(batch.input_ids, batch.labels, strict=True))


def test_loader_order_depends_on_seed_and_epoch_not_on_workers(nav_dataset):
    def epoch_ids(workers, epoch=0, seed=1):
        loader = make_loader(nav_dataset, 3, seed=seed, num_workers=workers)
        loader.sampler.set_epoch(epoch)
        return [i for batch in loader for i in batch.sample_ids]

    single = epoch_ids(0)
    assert epoch_ids(2) == single
    assert sorted(single) == sorted(s.sample_id for s in nav_dataset.samples)
    assert epoch_ids(0, epoch=1) != single and epoch_ids(0, seed=2) != single


def test_sampler_shards_global_batches_and_skips_for_resume():
    single = list(EpochSampler(10, batch_size=4, seed=5))
    ranks = [list(EpochSampler(10, batch_size=2, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    assert len(single) == 8 and all(len(r) == 4 for r in ranks)
    for k in range(2):  # global batch k = rank 0's batch k + rank 1's batch k
        assert sorted(ranks[0][2 * k : 2 * k + 2] + ranks[1][2 * k : 2 * k + 2]) == sorted(
            single[4 * k : 4 * k + 4]
        )
    skipping = EpochSampler(10, batch_size=4, seed=5)
    skipping.set_start(1)
    assert list(skipping) == single[4:] and len(skipping) == 4
    padded = EpochSampler(5, batch_size=2, shuffle=False, rank=1, world_size=2, drop_last=False)
    assert list(padded) == [1, 3, 0] and padded.num_batches == 2


def test_unreadable_frames_are_reported(tmp_path, tiny_config, tiny_tokenizer, rollout):
    sample = read_episode_dataset(rollout, "sim")[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    bad = type(sample)(sample.sample_id, "x", sample.instruction, (broken,), sample.answer)
    dataset = NavDataset([bad], NVILAProcessor(tiny_config, tiny_tokenizer))
    with pytest.raises(DataError, match="cannot read frame"):
        dataset[0]
    Image.new("RGB", (4, 4)).save(broken)
    assert len(dataset[0].media) == 1


def _write_llava(folder, records):
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for k in range(2):
        Image.new("RGB", (32, 24), (200, 30 * k, 10)).save(folder / "img" / f"{k}.jpg")
    path = folder / "captions.json"
    path.write_text(json.dumps(records))
    return path


def test_llava_image_text_samples_are_frames_with_their_own_prompt(
    tmp_path, rollout, tiny_config, tiny_tokenizer
):
    human = {"from": "human", "value": "<image>\nDescribe what you see."}
    records = [
        {
            "id": f"r{k}",
            "image": f"img/{k}.jpg",
            "conversations": [human, {"from": "gpt", "value": f"A red wall {k}."}],
        }
        for k in range(2)
    ]
    records.append(
        {
            "id": "text",
            "conversations": [
                {"from": "human", "value": "Say hi."},
                {"from": "gpt", "value": "Hi."},
            ],
        }
    )
    path = _write_llava(tmp_path, records)
    spec = {"datasets": [{"name": "cap", "path": str(path)}, {"name": "nav", "path": str(rollout)}]}
    samples = {s.sample_id: s for s in Mixture.from_dict(spec).train_samples()}
    assert samples["cap/r1"].frame_paths == (tmp_path / "img" / "1.jpg",)
    processor = NVILAProcessor(tiny_config, tiny_tokenizer)
    dataset = NavDataset([samples["cap/r1"], samples["cap/text"]], processor)
    image, text = dataset[0], dataset[1]
    # the same single resized "frame" item a navigation frame is, and exactly what inference builds
    expected = processor(
        "<image>\nDescribe what you see.", frames=[Image.open(samples["cap/r1"].frame_paths[0])]
    )
    assert [m.kind for m in image.media] == ["frame"]
    assert image.input_ids[: image.prompt_length].tolist() == expected.input_ids
    answer = image.labels[image.labels != IGNORE_INDEX]
    assert tiny_tokenizer.decode(answer[:-1]) == "A red wall 1."
    assert (
        text.media == []
        and tiny_tokenizer.decode(text.labels[text.labels != IGNORE_INDEX][:-1]) == "Hi."
    )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {
                "id": "a",
                "image": "img/0.jpg",
                "conversations": [
                    {"from": "human", "value": "no placeholder"},
                    {"from": "gpt", "value": "x"},
                ],
            },
            "0 <image> for 1 images",
        ),
        (
            {
                "id": "b",
                "conversations": [
                    {"from": "human", "value": "q"},
                    {"from": "gpt", "value": "a"},
                    {"from": "human", "value": "q2"},
                ],
            },
            "one human turn",
        ),
        ({"id": "c", "conversations": "oops"}, "malformed"),
    ],
)
def test_bad_llava_records_name_the_record(tmp_path, record, message):
    path = _write_llava(tmp_path, [record])
    with pytest.raises(DataError, match=message):
        Mixture.from_dict({"datasets": [{"name": "x", "path": str(path)}]}).train_samples()
