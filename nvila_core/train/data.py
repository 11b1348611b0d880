"""Training data: navigation episode folders -> NaVILA samples -> weighted mixtures -> batches.

Episode folders are the format `nvila-sim rollout` writes (docs/simulator.md "Dataset";
`mcap_import` writes the same). nvila_core reads that JSON itself: it must not depend on the
robot-side package. One action of an episode is one sample (navila.md §1.2-1.4): the frames seen
up to that action, sampled NaVILA-style to 8 (7 history + current, black frames in front when the
episode is young), the instruction, and the answer "The next action is move forward 75 cm.".
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from nvila_core.model.processing import MediaItem, NVILAProcessor
from nvila_core.model.prompting import (
    action_phrase,
    sample_history_indices,
    sample_recent_indices,
    statement_answer,
)
from nvila_core.model.tokenizer import IMAGE_TOKEN
from nvila_core.train.deltaloss import read_pruned_mixture
from nvila_core.train.distributed import EpochSampler

EPISODE_FORMAT = "nvila_nav.sim.dataset"
EPISODE_FORMAT_VERSION = 1
ANSWER_PREFIX = "The next action is "
IGNORE_INDEX = -100  # label of every position that is not an answer token
SPLITS = ("train", "val")
HISTORIES = ("navila", "recent")


class DataError(ValueError):
    """A dataset or mixture file that cannot be read; the message names the file."""


@dataclass(frozen=True)
class NavSample:
    """One supervised navigation step, frames already sampled (None = a black pad frame)."""

    sample_id: str  # "<source>/<episode dir>/<action index>" or "<source>/<record id>"
    source: str
    instruction: str
    frame_paths: tuple[Path | None, ...]
    answer: str
    prompt: str | None = None
    """None: the model's navigation prompt around `instruction`. Otherwise an image-text sample
    (LLaVA format): this user text, whose `<image>` placeholders take `frame_paths` in order."""
    previous_actions: tuple[str, ...] = ()
    """Action phrases executed before this step, oldest first (what a perturbed rollout drove,
    not the label), for models whose prompt states them."""
    statement: str | None = None
    """What a `nav_statement` model says before this step's action, from the episode's action
    record ("Close ahead: the pink shelf. Is the blue potted plant close ahead? No.")."""

    @property
    def episode_key(self) -> str:
        return self.sample_id.rsplit("/", 1)[0]


# ---------------------------------------------------------------- episode folders
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read JSON ({err})") from err
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def _episode_samples(
    folder: Path, source: str, num_frames: int, history: str = "navila"
) -> list[NavSample]:
    meta_path = folder / "meta.json"
    meta = _read_json(meta_path)
    try:
        frames = [folder / f["file"] for f in meta["frames"]]
        instruction = str(meta["instruction"])
        actions = [
            (str(a["text"]), int(a["frame_index"]), str(a.get("executed") or a["text"]))
            for a in meta["actions"]
        ]
        statements = [a.get("statement") for a in meta["actions"]]
        if not all(c is None or isinstance(c, str) for c in statements):
            raise ValueError("an action's 'statement' must be a string")
        # "context": true marks an action that is history only (contrast episodes)
        context = [a.get("context", False) for a in meta["actions"]]
        if not all(isinstance(c, bool) for c in context):
            raise ValueError("an action's 'context' must be true or false")
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{meta_path}: malformed episode ({err!r})") from err
    decision_frames = [frame_index for _, frame_index, _ in actions]
    executed = tuple(done for _, _, done in actions)
    samples = []
    for k, (text, frame_index, _) in enumerate(actions):
        if not text or not 0 <= frame_index < len(frames):
            raise DataError(
                f"{meta_path}: action {k} ({text!r}) shows frame {frame_index} of {len(frames)}"
            )
        if context[k]:
            continue
        if history == "recent":
            picks = sample_recent_indices(k + 1, num_frames)
            indices = [None if i is None else decision_frames[i] for i in picks]
        else:
            indices = sample_history_indices(frame_index + 1, num_frames)
        samples.append(
            NavSample(
                sample_id=f"{source}/{folder.name}/{k:04d}",
                source=source,
                instruction=instruction,
                frame_paths=tuple(None if i is None else frames[i] for i in indices),
                answer=f"{ANSWER_PREFIX}{text}.",
                previous_actions=executed[:k],
                statement=statements[k],
            )
        )
    return samples


def read_episodes(
    root: str | Path, source_name: str, num_frames: int = 8, history: str = "navila"
) -> list[list[NavSample]]:
    """The samples of every episode of an episode-folder dataset, one list per episode.

    history "navila": each step shows frames 0..frame_index sampled over the whole episode;
    "recent": the first decision's frame, the latest decisions' frames and the current one."""
    if history not in HISTORIES:
        raise DataError(f"history must be one of {HISTORIES}, got {history!r}")
    root = Path(root)
    index = _read_json(root / "index.json")
    if index.get("format") != EPISODE_FORMAT or index.get("version") != EPISODE_FORMAT_VERSION:
        raise DataError(
            f"{root / 'index.json'}: not a {EPISODE_FORMAT} v{EPISODE_FORMAT_VERSION} dataset "
            f"(format {index.get('format')!r}, version {index.get('version')!r})"
        )
    episodes = []
    for entry in index.get("episodes", []):
        episodes.append(_episode_samples(root / entry["dir"], source_name, num_frames, history))
    return episodes


def read_llava_dataset(path: str | Path, source_name: str) -> list[list[NavSample]]:
    """Image-text samples from a LLaVA-format JSON list (the format of NVILA's image data):
    `{"id", "image": path relative to the file | [paths], "conversations": [{"from": "human",
    "value": "<image>\\n..."}, {"from": "gpt", "value": ...}]}`, one group per record.

    Every image is shown as one resized frame, exactly as navigation frames are, so what a model
    learns to see here is what it sees when it navigates. Multi-turn records are refused, not
    silently cut."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read JSON ({err})") from err
    if not isinstance(records, list):
        raise DataError(f"{path}: a LLaVA-format file is a JSON list of records")
    groups = []
    for n, record in enumerate(records):
        where = f"{path} record {n} ({record.get('id', '?') if isinstance(record, dict) else '?'})"
        try:
            turns = record["conversations"]
            images = record.get("image") or []
            images = [images] if isinstance(images, str) else list(images)
            speakers = [t["from"] for t in turns]
            prompt, answer = str(turns[0]["value"]), str(turns[1]["value"])
        except (KeyError, TypeError, IndexError, AttributeError) as err:
            raise DataError(f"{where}: malformed record ({err!r})") from err
        if speakers != ["human", "gpt"]:
            raise DataError(f"{where}: one human turn then one gpt turn expected, got {speakers}")
        if prompt.count(IMAGE_TOKEN) != len(images):
            raise DataError(
                f"{where}: {prompt.count(IMAGE_TOKEN)} {IMAGE_TOKEN} for {len(images)} images"
            )
        sample_id = f"{source_name}/{record.get('id', n)}"
        frames = tuple(path.parent / p for p in images)
        groups.append([NavSample(sample_id, source_name, "", frames, answer, prompt)])
    return groups


def _read_groups(
    spec: DatasetSpec, num_frames: int, history: str = "navila"
) -> list[list[NavSample]]:
    """A mixture entry's samples grouped by episode: a `.json` file is LLaVA image-text data,
    a folder holds navigation episodes."""
    if spec.path.suffix == ".json":
        return read_llava_dataset(spec.path, spec.name)
    return read_episodes(spec.path, spec.name, num_frames, history)


def read_episode_dataset(
    root: str | Path, source_name: str, num_frames: int = 8
) -> list[NavSample]:
    """One sample per action of every episode, frames 0..frame_index sampled NaVILA-style."""
    return [s for episode in read_episodes(root, source_name, num_frames) for s in episode]


# ---------------------------------------------------------------- mixtures
@dataclass(frozen=True)
class DatasetSpec:
    """One entry of a mixture: an episode folder, its sampling weight and its split."""

    name: str
    path: Path
    weight: float = 1.0
    split: str | None = None  # "train", "val", or None: episodes split by val_fraction


@dataclass
class Mixture:
    """Weighted datasets with a deterministic train/val split and order.

    `weight` is a sampling multiplicity per epoch: 2 shows every sample twice, 0.5 a seeded half.
    Datasets without a `split` hold out `val_fraction` of their episodes (whole episodes, so no
    episode is in both). Everything depends on `seed` only.
    """

    datasets: list[DatasetSpec]
    seed: int = 0
    val_fraction: float = 0.0
    num_frames: int = 8
    max_val_samples: int | None = None
    blank_frames: bool = False
    """Instruction-only ablation: every frame is black (the no-image baseline, docs/training.md)."""
    history: str = "navila"
    """Which frames a navigation sample shows; must match the model's `nav_history`."""
    pruned: Path | None = None
    """A `nvila-core prune` file: only its kept samples of the datasets it lists are trained on."""
    previous_actions_dropout: float = 0.0
    """Probability that a training sample's previous actions are withheld ("Done: nothing"):
    a model that always sees them learns to repeat its last turn's side (in the closed loop its
    own turns then feed it, and it circles) instead of reading the side from the frames."""
    source: str = "<inline>"

    def __post_init__(self) -> None:
        if not self.datasets:
            raise DataError(f"{self.source}: a mixture needs at least one dataset")
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise DataError(f"{self.source}: dataset names must be unique, got {names}")
        for spec in self.datasets:
            if spec.weight < 0:
                raise DataError(f"{self.source}: dataset {spec.name!r} has a negative weight")
            if spec.split is not None and spec.split not in SPLITS:
                raise DataError(
                    f"{self.source}: dataset {spec.name!r} split must be one of {SPLITS}"
                )
        if not 0.0 <= self.val_fraction < 1.0:
            raise DataError(f"{self.source}: val_fraction must be in [0, 1)")
        if self.num_frames < 1:
            raise DataError(f"{self.source}: num_frames must be >= 1")
        if self.history not in HISTORIES:
            raise DataError(f"{self.source}: history must be one of {HISTORIES}")
        if not 0.0 <= self.previous_actions_dropout <= 1.0:
            raise DataError(f"{self.source}: previous_actions_dropout must be in [0, 1]")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<inline>") -> Mixture:
        """A mixture from its YAML mapping; relative dataset paths are relative to the cwd."""
        if not isinstance(data, dict) or not isinstance(data.get("datasets"), list):
            raise DataError(f"{source}: a mixture is a mapping with a 'datasets' list")
        known = {
            "datasets",
            "seed",
            "val_fraction",
            "num_frames",
            "max_val_samples",
            "blank_frames",
            "history",
            "pruned",
            "previous_actions_dropout",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"{source}: unknown mixture keys {unknown} (known: {sorted(known)})")
        specs = []
        for entry in data["datasets"]:
            if not isinstance(entry, dict) or "name" not in entry or "path" not in entry:
                raise DataError(f"{source}: every dataset needs 'name' and 'path', got {entry!r}")
            extra = sorted(set(entry) - {"name", "path", "weight", "split"})
            if extra:
                raise DataError(f"{source}: dataset {entry['name']!r} has unknown keys {extra}")
            specs.append(
                DatasetSpec(
                    name=str(entry["name"]),
                    path=Path(entry["path"]),
                    weight=float(entry.get("weight", 1.0)),
                    split=entry.get("split"),
                )
            )
        return cls(
            datasets=specs,
            seed=int(data.get("seed", 0)),
            val_fraction=float(data.get("val_fraction", 0.0)),
            num_frames=int(data.get("num_frames", 8)),
            max_val_samples=data.get("max_val_samples"),
            blank_frames=bool(data.get("blank_frames", False)),
            history=str(data.get("history", "navila")),
            pruned=Path(data["pruned"]) if data.get("pruned") else None,
            previous_actions_dropout=float(data.get("previous_actions_dropout", 0.0)),
            source=source,
        )

    @cached_property
    def _splits(self) -> tuple[list[NavSample], list[NavSample]]:
        rng = np.random.default_rng(self.seed)
        pruned = None if self.pruned is None else read_pruned_mixture(self.pruned)
        train: list[NavSample] = []
        val: list[NavSample] = []
        for spec in self.datasets:
            episodes = _read_groups(spec, self.num_frames, self.history)
            if spec.split == "val":
                val += [s for e in episodes for s in e]
                continue
            if spec.split is None and self.val_fraction > 0:
                # per-dataset seed: adding a dataset does not reshuffle the others' splits
                split_rng = np.random.default_rng([self.seed, zlib.crc32(spec.name.encode())])
                held = round(self.val_fraction * len(episodes))
                order = split_rng.permutation(len(episodes))
                val += [s for i in sorted(order[:held]) for s in episodes[i]]
                episodes = [episodes[i] for i in sorted(order[held:])]
            samples = [s for e in episodes for s in e]
            if pruned is not None:
                samples = pruned.filter_samples(samples)
            whole, fraction = divmod(spec.weight, 1.0)
            train += samples * int(whole)
            extra = round(fraction * len(samples))
            if extra:
                picked = rng.choice(len(samples), size=extra, replace=False)
                train += [samples[i] for i in sorted(picked)]
        order = rng.permutation(len(train))
        train = [train[i] for i in order]
        if self.max_val_samples is not None:
            val = val[: int(self.max_val_samples)]
        if self.blank_frames:
            train, val = ([with_blank_frames(s) for s in part] for part in (train, val))
        if self.previous_actions_dropout > 0.0:
            # its own generator: the order and the split stay those of the same seed without it
            drop = np.random.default_rng([self.seed, 1]).random(len(train))
            train = [
                dataclasses.replace(s, previous_actions=())
                if d < self.previous_actions_dropout
                else s
                for s, d in zip(train, drop, strict=True)
            ]
        return train, val

    def train_samples(self) -> list[NavSample]:
        """Weighted training samples in the mixture's seeded order."""
        return list(self._splits[0])

    def val_samples(self) -> list[NavSample]:
        """Held-out samples in file order (at most `max_val_samples`)."""
        return list(self._splits[1])


def with_blank_frames(sample: NavSample) -> NavSample:
    """The sample with every frame black (the instruction-only model's input)."""
    return dataclasses.replace(sample, frame_paths=(None,) * len(sample.frame_paths))


def load_mixture(path: str | Path) -> Mixture:
    """A mixture from its YAML file (format in docs/training.md)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"cannot read mixture {path}: {err}") from err
    return Mixture.from_dict(data, source=str(path))


# ---------------------------------------------------------------- model inputs
@dataclass
class Example:
    """One sample as model inputs; `labels[i]` is the target of position i (-100: none)."""

    input_ids: torch.Tensor  # [L] prompt + answer ids, one id per media item
    labels: torch.Tensor  # [L] the answer ids and the end token, IGNORE_INDEX elsewhere
    media: list[MediaItem]
    prompt_length: int  # ids before the answer: exactly what inference feeds the model
    answer: str
    sample_id: str


@dataclass
class Batch:
    """Examples side by side; the model pads after splicing (media lengths differ per sample)."""

    input_ids: list[torch.Tensor]
    labels: list[torch.Tensor]
    media: list[list[MediaItem]]
    prompt_lengths: list[int]
    answers: list[str]
    sample_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


def load_frame(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as err:
        raise DataError(f"cannot read frame {path}: {err}") from err


class NavDataset(Dataset):
    """NavSamples -> `Example`s: frames loaded with PIL and resized to ViT tiles on the fly.

    The prompt ids are the processor's, exactly as `Engine.navigate` builds them, so a trained
    model sees at inference what it was trained on; the answer and its end token follow as
    rendered by `apply_chat_template(..., assistant=answer)` (`NVILAProcessor.answer_ids`).
    """

    def __init__(self, samples: Sequence[NavSample], processor: NVILAProcessor):
        self.samples = list(samples)
        self.processor = processor

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Example:
        sample = self.samples[index]
        present = [load_frame(p) for p in sample.frame_paths if p is not None]
        # all None: a blank_frames mixture; the processor resizes the black frame to its tiles
        black = Image.new("RGB", present[-1].size if present else (64, 64))
        loaded = iter(present)
        frames = [black if p is None else next(loaded) for p in sample.frame_paths]
        prompt, answer = sample.prompt, sample.answer
        if prompt is None:
            prompt = self.processor.navigation_text(
                sample.instruction, len(frames), sample.previous_actions
            )
            answer = self.processor.navigation_answer(action_phrase(sample.answer))
            if self.processor.config.nav_statement:
                if sample.statement is None:
                    raise DataError(
                        f"sample {sample.sample_id}: the model states something before its "
                        "action (nav_statement), its episode's actions have no 'statement' "
                        "(nvila-sim statements adds them to simulator rollouts)"
                    )
                try:
                    answer = statement_answer(sample.statement, answer)
                except ValueError as err:
                    raise DataError(f"sample {sample.sample_id}: {err}") from err
        try:
            inputs = self.processor(prompt, frames=frames)
        except ValueError as err:
            raise DataError(f"sample {sample.sample_id}: {err}") from err
        try:
            answer_ids = self.processor.answer_ids(answer)  # the answer and its end token
        except ValueError as err:
            raise DataError(f"sample {sample.sample_id}: {err}") from err
        ids = inputs.input_ids + answer_ids
        limit = self.processor.config.model_max_length
        if len(ids) > limit:
            raise DataError(f"sample {sample.sample_id}: {len(ids)} ids > model_max_length {limit}")
        labels = [IGNORE_INDEX] * len(inputs.input_ids) + answer_ids
        return Example(
            input_ids=torch.tensor(ids, dtype=torch.long),
            labels=torch.tensor(labels, dtype=torch.long),
            media=inputs.media,
            prompt_length=len(inputs.input_ids),
            answer=answer,
            sample_id=sample.sample_id,
        )


def collate(examples: Sequence[Example]) -> Batch:
    return Batch(
        input_ids=[e.input_ids for e in examples],
        labels=[e.labels for e in examples],
        media=[e.media for e in examples],
        prompt_lengths=[e.prompt_length for e in examples],
        answers=[e.answer for e in examples],
        sample_ids=[e.sample_id for e in examples],
    )


def make_loader(
    dataset: NavDataset,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_workers: int = 2,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
) -> DataLoader:
    """A DataLoader over `dataset` whose order depends on (seed, epoch) only.

    Two workers keep both CPU cores busy decoding JPEGs while the model trains; the seeded
    `EpochSampler` makes the order independent of the worker count and shards it over ranks.
    """
    sampler = EpochSampler(
        len(dataset),
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=drop_last,
    )
