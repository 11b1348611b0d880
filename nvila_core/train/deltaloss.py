"""DeltaLoss data pruning (NVILA paper Eq. 1, nvila.md §5.2).

Each SFT sample x is scored with a large and a small model of the same family:

    score(x) = mean over answer tokens t of  log p_large(t) - log p_small(t)

(when the two tokenizers differ, the difference of the two per-model means). Near 0: both models
agree (too easy, or hopeless for both); negative: the small model is right and the large one wrong
(a distracting sample); positive: hard for the small model but learnable. The top `keep_fraction`
of every sub-dataset is kept (paper: 50% keeps accuracy and beats random or cluster pruning).

"Answer tokens" are the positions a batch labels (`labels != -100`): the answer and its end
token, exactly what fine-tuning trains on. A batch is anything with the attributes
`input_ids`, `labels` (one 1-D sequence per sample) and `media` (one `MediaItem` list per sample),
such as `nvila_core.train.data.collate`'s `Batch`; labelled positions must come after every media
position.

Pruned-mixture file (YAML, `write_pruned_mixture` / `read_pruned_mixture`)::

    format: nvila_core.pruned_mixture
    version: 1
    method: deltaloss
    keep_fraction: 0.5
    provenance: {large: CKPT, small: CKPT, mixture: MIXTURE.yaml}   # free-form strings
    datasets:
      <source name>:            # a mixture dataset name (NavSample.source)
        total: 1200             # samples scored
        kept: [<sample_id>, ...]  # kept sample ids, in dataset order

A dataset the file does not list is not pruned (`filter_samples` passes it through whole).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import yaml

from nvila_core.progress import track

if TYPE_CHECKING:  # torch is imported where it is used: `nvila-core --help` lists `prune`
    import torch

    from nvila_core.model.modeling import NVILAModel
    from nvila_core.model.processing import MediaItem

PRUNED_FORMAT = "nvila_core.pruned_mixture"
PRUNED_VERSION = 1
IGNORE_INDEX = -100

S = TypeVar("S")


class AnswerBatch(Protocol):
    input_ids: Sequence[Sequence[int] | torch.Tensor]
    labels: Sequence[Sequence[int] | torch.Tensor]
    media: Sequence[Sequence[MediaItem]]


MakeInputs = Callable[["NVILAModel", Sequence[Any]], AnswerBatch]


# ---------------------------------------------------------------- scoring
def _as_list(values: Sequence[int] | torch.Tensor) -> list[int]:
    return values.tolist() if hasattr(values, "tolist") else [int(v) for v in values]


def answer_logprobs(model: NVILAModel, batch: AnswerBatch) -> list[float]:
    """Per sample, the mean log-probability `model` gives its labelled (answer) tokens.

    The samples are spliced, left-padded into one batch (explicit position ids, so padding
    changes nothing) and only the tail of the sequence that holds answer tokens gets logits.
    Call it on a model in eval mode (dropout would make the scores noisy).
    """
    import torch

    with torch.no_grad():
        return _answer_logprobs(model, batch)


def _answer_logprobs(model: NVILAModel, batch: AnswerBatch) -> list[float]:
    import torch
    import torch.nn.functional as F

    embeds, targets = [], []
    for n, (ids, labels, media) in enumerate(
        zip(batch.input_ids, batch.labels, batch.media, strict=True)
    ):
        ids, labels = _as_list(ids), _as_list(labels)
        if len(ids) != len(labels):
            raise ValueError(f"sample {n}: {len(ids)} input ids but {len(labels)} labels")
        answer = [p for p, label in enumerate(labels) if label != IGNORE_INDEX]
        if not answer or answer[0] == 0:
            raise ValueError(f"sample {n}: needs labelled answer tokens after a prompt")
        positions = model.media_positions(ids, media)
        if positions and answer[0] <= positions[-1]:
            raise ValueError(f"sample {n}: an answer token precedes a media position")
        embedded = model.embed_inputs(ids, media)[0]
        shift = embedded.shape[0] - len(ids)  # media expansion, all of it before the answer
        embeds.append(embedded)
        targets.append([(p + shift, labels[p]) for p in answer])
    length = max(e.shape[0] for e in embeds)
    # logits are needed from the first answer position's predecessor to the end
    keep = max(e.shape[0] - t[0][0] + 1 for e, t in zip(embeds, targets, strict=True))
    padded = embeds[0].new_zeros(len(embeds), length, embeds[0].shape[-1])
    mask = torch.zeros(len(embeds), length, dtype=torch.long, device=padded.device)
    for i, e in enumerate(embeds):
        padded[i, length - e.shape[0] :] = e
        mask[i, length - e.shape[0] :] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        inputs_embeds=padded,
        attention_mask=mask,
        position_ids=position_ids,
        logits_to_keep=keep,
    ).logits
    log_probs = F.log_softmax(logits.float(), dim=-1)
    scores = []
    for i, (e, sample_targets) in enumerate(zip(embeds, targets, strict=True)):
        start = length - keep - (length - e.shape[0])  # sample position of logits row 0
        rows = torch.tensor([q - 1 - start for q, _ in sample_targets], device=logits.device)
        tokens = torch.tensor([t for _, t in sample_targets], device=logits.device)
        scores.append(float(log_probs[i, rows, tokens].mean()))
    return scores


def score_answers(
    model: NVILAModel,
    samples: Sequence[S],
    make_inputs: MakeInputs,
    batch_size: int = 4,
    desc: str | None = None,
) -> list[float]:
    """`answer_logprobs` of every sample, `batch_size` at a time; `desc` shows a progress bar."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = range(0, len(samples), batch_size)
    scores: list[float] = []
    for start in track(chunks, desc=desc or "", unit="batches", disable=desc is None):
        chunk = samples[start : start + batch_size]
        scores += answer_logprobs(model, make_inputs(model, chunk))
    return scores


def delta_loss_scores(
    large_model: NVILAModel,
    small_model: NVILAModel,
    samples: Sequence[S],
    make_inputs: MakeInputs,
    batch_size: int = 4,
) -> list[float]:
    """DeltaLoss of every sample: mean answer log-prob under the large minus the small model.

    `make_inputs(model, samples)` builds the batch for that model (each model may have its own
    processor and tokenizer).
    """
    large = score_answers(large_model, samples, make_inputs, batch_size)
    small = score_answers(small_model, samples, make_inputs, batch_size)
    return [a - b for a, b in zip(large, small, strict=True)]


# ---------------------------------------------------------------- pruning
def kept_count(total: int, keep_fraction: float) -> int:
    """How many of `total` samples a sub-dataset keeps (rounded up, so none empties)."""
    return math.ceil(round(keep_fraction * total, 6))


def prune(
    samples: Sequence[S],
    scores: Sequence[float],
    keep_fraction: float,
    group_key: Callable[[S], Hashable] = attrgetter("source"),
) -> list[S]:
    """The highest-scoring `keep_fraction` of every group (sub-dataset), in the input order.

    Ties keep the earlier sample.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    if len(samples) != len(scores):
        raise ValueError(f"{len(samples)} samples but {len(scores)} scores")
    if any(math.isnan(s) for s in scores):
        raise ValueError("a DeltaLoss score is NaN")
    groups: dict[Hashable, list[int]] = {}
    for i, sample in enumerate(samples):
        groups.setdefault(group_key(sample), []).append(i)
    kept: set[int] = set()
    for members in groups.values():
        ranked = sorted(members, key=lambda i: -scores[i])  # stable: ties keep input order
        kept.update(ranked[: kept_count(len(members), keep_fraction)])
    return [samples[i] for i in sorted(kept)]


def source_and_answer_kind(sample: Any) -> tuple[str, str]:
    """Group key that prunes each action kind of each dataset separately: the kept data keeps
    the answer prior ("forward", "turn left", "turn right", "stop"; "other" without an action)."""
    from nvila_core.train.trainer import normalize_action

    action = normalize_action(sample.answer)  # "forward 75", "turn left 30", "stop" or None
    if action is None:
        return sample.source, "other"
    words = action.split()
    return sample.source, " ".join(words[:2]) if words[0] == "turn" else words[0]


GROUPINGS: dict[str, Callable[[Any], Hashable]] = {
    "dataset": attrgetter("source"),
    "answer": source_and_answer_kind,
}


# ---------------------------------------------------------------- pruned-mixture file
@dataclass
class PrunedMixture:
    """Which samples of each sub-dataset survived pruning (file format in the module docstring)."""

    keep_fraction: float
    kept: dict[str, list[str]]  # source -> kept sample ids, in dataset order
    totals: dict[str, int]  # source -> samples scored
    provenance: dict[str, str] = field(default_factory=dict)
    method: str = "deltaloss"

    @classmethod
    def from_samples(
        cls,
        samples: Sequence[Any],
        kept: Sequence[Any],
        keep_fraction: float,
        provenance: dict[str, str] | None = None,
    ) -> PrunedMixture:
        """From the scored samples and the kept ones (objects with `source` and `sample_id`)."""
        totals: dict[str, int] = {}
        for sample in samples:
            totals[sample.source] = totals.get(sample.source, 0) + 1
        kept_ids: dict[str, list[str]] = {source: [] for source in totals}
        for sample in kept:
            kept_ids[sample.source].append(str(sample.sample_id))
        return cls(keep_fraction, kept_ids, totals, dict(provenance or {}))

    def filter_samples(self, samples: Sequence[S]) -> list[S]:
        """The samples the pruning kept; samples of datasets this file does not list pass."""
        kept = {source: set(ids) for source, ids in self.kept.items()}
        return [s for s in samples if s.source not in kept or str(s.sample_id) in kept[s.source]]


def write_pruned_mixture(path: str | Path, pruned: PrunedMixture) -> Path:
    path = Path(path)
    data = {
        "format": PRUNED_FORMAT,
        "version": PRUNED_VERSION,
        "method": pruned.method,
        "keep_fraction": float(pruned.keep_fraction),
        "provenance": {str(k): str(v) for k, v in pruned.provenance.items()},
        "datasets": {
            source: {"total": int(pruned.totals[source]), "kept": list(pruned.kept[source])}
            for source in pruned.totals
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_pruned_mixture(path: str | Path) -> PrunedMixture:
    """A pruned-mixture file; anything malformed raises ValueError naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read pruned mixture {path}: {err}") from err
    if not isinstance(data, dict) or data.get("format") != PRUNED_FORMAT:
        raise ValueError(f"{path}: not a {PRUNED_FORMAT} file")
    if data.get("version") != PRUNED_VERSION:
        raise ValueError(f"{path}: version {data.get('version')!r}, expected {PRUNED_VERSION}")
    datasets = data.get("datasets")
    if not isinstance(datasets, dict):
        raise ValueError(f"{path}: 'datasets' must be a mapping")
    kept, totals = {}, {}
    for source, entry in datasets.items():
        ids = entry.get("kept") if isinstance(entry, dict) else None
        total = entry.get("total") if isinstance(entry, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{path}: dataset {source!r} needs 'kept', a list of sample ids")
        if not isinstance(total, int) or total < len(ids):
            raise ValueError(f"{path}: dataset {source!r} needs an integer 'total' >= kept")
        kept[str(source)], totals[str(source)] = ids, total
    provenance = data.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise ValueError(f"{path}: 'provenance' must be a mapping")
    return PrunedMixture(
        keep_fraction=float(data.get("keep_fraction", 1.0)),
        kept=kept,
        totals=totals,
        provenance={str(k): str(v) for k, v in provenance.items()},
        method=str(data.get("method", "deltaloss")),
    )


# ---------------------------------------------------------------- CLI
def _navigation_inputs(processor) -> MakeInputs:
    """make_inputs for NavSamples, built exactly as fine-tuning builds them (NavDataset)."""
    from nvila_core.train.data import NavDataset, collate

    def make(model: NVILAModel, samples: Sequence[Any]) -> AnswerBatch:
        dataset = NavDataset(samples, processor)
        return collate([dataset[i] for i in range(len(dataset))])

    return make


def _score_checkpoint(
    path: str, samples: Sequence[Any], args: argparse.Namespace, blank_frames: bool = False
) -> list[float]:
    """Load one checkpoint, score every sample (on black frames with `blank_frames`), and let
    the model go before the next one."""
    from nvila_core.model.checkpoint import load_checkpoint
    from nvila_core.model.processing import NVILAProcessor
    from nvila_core.train.data import with_blank_frames

    if blank_frames:
        samples = [with_blank_frames(s) for s in samples]

    model, tokenizer = load_checkpoint(path, device=args.device, dtype=args.dtype)
    make = _navigation_inputs(NVILAProcessor(model.config, tokenizer))
    return score_answers(model, samples, make, args.batch_size, desc=f"scoring with {path}")


def cmd_prune(args: argparse.Namespace) -> int:
    from nvila_core.train.data import load_mixture, read_episode_dataset

    mixture = load_mixture(args.mixture)
    samples = [
        sample
        for spec in mixture.datasets
        if spec.split != "val"  # held-out data is evaluated, never pruned
        for sample in read_episode_dataset(spec.path, spec.name, mixture.num_frames)
    ]
    if not samples:
        raise ValueError(f"{args.mixture}: no training samples to prune")
    large = _score_checkpoint(args.large, samples, args)
    small = _score_checkpoint(args.small, samples, args, args.small_blank_frames)
    scores = [a - b for a, b in zip(large, small, strict=True)]
    kept = prune(samples, scores, args.keep, GROUPINGS[args.group_by])
    provenance = {"large": args.large, "small": args.small, "mixture": args.mixture}
    provenance["group_by"] = args.group_by
    if args.small_blank_frames:
        provenance["small_input"] = "blank frames"
    pruned = PrunedMixture.from_samples(samples, kept, args.keep, provenance)
    write_pruned_mixture(args.out, pruned)
    for source, total in pruned.totals.items():
        print(f"{source}: kept {len(pruned.kept[source])} of {total}")
    print(f"wrote {args.out}")
    return 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def add_prune_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `nvila-core prune --large CKPT --small CKPT --mixture M --keep 0.5 --out F`."""
    parser = subparsers.add_parser(
        "prune", help="DeltaLoss pruning: keep the samples a small model finds hard to learn"
    )
    parser.add_argument("--large", required=True, metavar="CKPT", help="large model checkpoint")
    parser.add_argument("--small", required=True, metavar="CKPT", help="small model checkpoint")
    parser.add_argument("--mixture", required=True, metavar="YAML", help="training mixture")
    parser.add_argument(
        "--small-blank-frames",
        action="store_true",
        help="score the small model on black frames (an instruction-only model as the weak one)",
    )
    parser.add_argument(
        "--keep", type=_fraction, default=0.5, help="fraction kept per dataset (default 0.5)"
    )
    parser.add_argument(
        "--group-by",
        choices=sorted(GROUPINGS),
        default="dataset",
        help="keep the fraction per dataset (NVILA) or per dataset and action kind (keeps the "
        "answer prior of navigation data)",
    )
    parser.add_argument("--out", required=True, metavar="YAML", help="pruned-mixture file")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", help="float32, float16 or bfloat16 (default: checkpoint's)")
    parser.set_defaults(handler=cmd_prune)
    return parser
