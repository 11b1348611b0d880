"""Frame heads: a closed-set question about a frame, answered from the model's visual tokens.

Some questions a navigation model needs answered are in its visual tokens, yet its LLM does not
learn to read them within the steps a CPU affords: which way a route turns at the current frame
is readable from the projected tokens of that frame by a small net (about 70 % on unseen scenes),
while the LLM, trained on the same states, stays at chance. A frame head is that small net,
kept with the model (`heads/<name>.safetensors` and `heads/<name>.json` in its folder): the
flattened visual tokens of its frames, standardised with its training set's statistics, through
one hidden layer to a score per answer. Most heads read the current frame; one may read the
latest `frames` decision frames (oldest first, the current last), where what changed between
them carries the answer. A named question ("Where is the {name}?") asks about one of several
things in the frame; its head keeps one group of answer scores per name over the same hidden
layer. A named question about where a thing is may instead look for it at every token
(`layout` "tokens", `TokenDetector`): one small net shared by the tokens of a frame, so what it
learns of a blue door at the left of a frame serves at its right too. It reads the tokens the
engine already computed for the frames, so an answer costs a few hundred thousand multiply-adds;
a token head may instead read its own tuned copy of the vision tower and projector
(`nvila_core.model.head_vision`), one more vision pass per frame.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nvila_core.model.head_vision import HeadVision, load_head_vision

HEADS_DIR = "heads"
FLAT, TOKENS = "flat", "tokens"
"""A head's layouts: one net over the flattened tokens of its frames, or `TokenDetector`."""
STORED_DTYPE = torch.float16
"""How a head file keeps its tensors (loaded as float32): half the bytes of float32. Rounding
moved no answer of navila-nano's four heads on their 1,619 held-out questions (their
probabilities by less than 0.001), and keeps the model folder small enough to ship in git."""


class FrameHeadError(ValueError):
    """A frame head that cannot be trained or read; the message says why."""


@dataclass
class FrameHead:
    """One question (`prompt`, for the record), its `answers`, and the net that picks one."""

    name: str
    prompt: str
    answers: list[str]
    mean: torch.Tensor  # [F] per-feature mean of the training tokens
    scale: torch.Tensor  # [F] per-feature standard deviation (floored)
    net: torch.nn.Sequential
    info: dict[str, Any] = field(default_factory=dict)
    """What it was trained on and how well it did (written to its JSON, never read back as code)."""
    frames: int = 1
    """Decision frames it reads, oldest first, the current one last."""
    names: list[str] = field(default_factory=list)
    """A named question's names (its prompt's `{name}`), one answer group each; empty for a
    question without a name."""
    layout: str = FLAT
    """`FLAT` (`net` is Linear-ReLU-Linear on the flattened tokens) or `TOKENS` (`net` is a
    `TokenDetector`)."""
    vision: HeadVision | None = None
    """The head's own tuned vision tower and projector (`nvila_core.model.head_vision`), which
    make the tokens it reads; None: it reads the model's own tokens."""

    @property
    def num_features(self) -> int:
        return int(self.mean.numel())

    def probabilities(self, tokens: torch.Tensor, name: str | None = None) -> list[float]:
        """P(answer) for the visual tokens of its frames ([tokens, D] per frame, concatenated
        oldest first; or already flat [F]); a named question's head needs the `name` asked
        about."""
        group = self._group(name)
        flat = tokens.detach().reshape(-1).float().cpu()
        if flat.numel() != self.num_features:
            raise FrameHeadError(
                f"head {self.name!r} reads {self.num_features} features ({self.frames} "
                f"frame(s)), got {flat.numel()} (tokens of another model, or another number "
                "of frames?)"
            )
        with torch.inference_mode():
            logits = self.net(((flat - self.mean) / self.scale)[None])[0]
        width = len(self.answers)
        return torch.softmax(logits[group * width : (group + 1) * width], dim=0).tolist()

    def answer(self, tokens: torch.Tensor, name: str | None = None) -> tuple[str, list[float]]:
        """The most probable answer for its frames' visual tokens (about `name`, for a named
        question), and every answer's P."""
        probs = self.probabilities(tokens, name)
        return self.answers[max(range(len(probs)), key=probs.__getitem__)], probs

    def _group(self, name: str | None) -> int:
        """The answer group of `name` (0 for a question without names)."""
        if not self.names:
            if name is not None:
                raise FrameHeadError(f"head {self.name!r} asks about no name, got {name!r}")
            return 0
        if name not in self.names:
            raise FrameHeadError(f"head {self.name!r} has no answers about {name!r}")
        return self.names.index(name)

    def save(self, model_dir: str | Path) -> Path:
        """Write `heads/<name>.safetensors` (tensors in `STORED_DTYPE`) and `heads/<name>.json`
        under `model_dir`."""
        folder = Path(model_dir) / HEADS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(self.net, TokenDetector):
            first, second = self.net.hidden, self.net.out
            extra = {
                "route": self.net.route,
                "absent_score": self.net.absent_score,
                **{f"frame.{k}": v for k, v in self.net.frame.state_dict().items()},
            }
            layout = {"layout": TOKENS, "absent": self.answers[self.net.absent]}
        else:
            first, _, second = self.net
            extra, layout = {}, {}
        if self.vision is not None:
            # freshly trained: its updates on the folder's own vision; else the tuned copy
            tuned = self.vision.adapter_tensors() or self.vision.tuned_tensors()
            extra |= tuned
            layout["vision"] = self.vision.spec()
        tensors = {
            "mean": self.mean,
            "scale": self.scale,
            "hidden.weight": first.weight,
            "hidden.bias": first.bias,
            "out.weight": second.weight,
            "out.bias": second.bias,
            **extra,
        }
        save_file(
            {k: v.detach().contiguous().to(STORED_DTYPE) for k, v in tensors.items()},
            str(folder / f"{self.name}.safetensors"),
        )
        meta = {
            "name": self.name,
            "prompt": self.prompt,
            "answers": self.answers,
            "frames": self.frames,
            **({"names": self.names} if self.names else {}),
            **layout,
            **self.info,
        }
        (folder / f"{self.name}.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return folder / f"{self.name}.safetensors"

    @classmethod
    def load(cls, model_dir: str | Path, name: str) -> FrameHead:
        folder = Path(model_dir) / HEADS_DIR
        try:
            meta = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
            tensors = {
                k: v.float() for k, v in load_file(str(folder / f"{name}.safetensors")).items()
            }
            answers = [str(a) for a in meta["answers"]]
            prompt = str(meta["prompt"])
            frames = int(meta.get("frames", 1))
            names = [str(n) for n in meta.get("names", [])]
            layout = str(meta.get("layout", FLAT))
            hidden_w, out_w = tensors["hidden.weight"], tensors["out.weight"]
            features = tensors["mean"].numel()
            if layout == TOKENS:
                route = tensors["route"]
                net = TokenDetector(
                    route.shape[1],
                    hidden_w.shape[1],
                    hidden_w.shape[0],
                    max(1, len(names)),
                    len(answers),
                    answers.index(str(meta["absent"])),
                    tensors["frame.0.weight"].shape[0],
                )
                fits = route.shape[0] == len(answers) and features == net.num_features
            elif layout == FLAT:
                net = _net(hidden_w.shape[1], hidden_w.shape[0], out_w.shape[0])
                fits = hidden_w.shape[1] == features
            else:
                raise ValueError(f"layout {layout!r} is neither {FLAT!r} nor {TOKENS!r}")
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
            raise FrameHeadError(f"{folder / name}: not a readable frame head ({err!r})") from err
        groups = max(1, len(names))
        if not fits or out_w.shape[0] != (groups if layout == TOKENS else len(answers) * groups):
            raise FrameHeadError(f"{folder / name}: its tensors do not match its answers")
        if frames < 1 or features % frames or (layout == TOKENS and frames != 1):
            raise FrameHeadError(f"{folder / name}: {frames} frames do not split its features")
        state = {
            key: tensors[key] for key in ("hidden.weight", "hidden.bias", "out.weight", "out.bias")
        }
        if layout == TOKENS:
            state |= {
                k: v for k, v in tensors.items() if k.startswith(("route", "absent", "frame."))
            }
        else:
            state = {k.replace("hidden", "0").replace("out", "2"): v for k, v in state.items()}
        try:
            net.load_state_dict(state)
            vision = (
                None
                if "vision" not in meta
                else load_head_vision(meta["vision"], tensors, model_dir)
            )
        except (RuntimeError, ValueError, KeyError, TypeError, OSError) as err:
            raise FrameHeadError(f"{folder / name}: its tensors do not match ({err})") from err
        net.eval()
        kept = ("name", "prompt", "answers", "frames", "names", "layout", "absent", "vision")
        info = {k: v for k, v in meta.items() if k not in kept}
        return cls(
            name,
            prompt,
            answers,
            tensors["mean"],
            tensors["scale"],
            net,
            info,
            frames,
            names,
            layout,
            vision,
        )


def load_heads(model_dir: str | Path) -> dict[str, FrameHead]:
    """Every frame head kept in a model folder, by name (none: an empty dict)."""
    folder = Path(model_dir) / HEADS_DIR
    if not folder.is_dir():
        return {}
    return {p.stem: FrameHead.load(model_dir, p.stem) for p in sorted(folder.glob("*.json"))}


def copy_heads(model_dir: str | Path, out_dir: str | Path) -> list[str]:
    """Copy a model folder's frame heads into the folder made from it (a quantized checkpoint, an
    export); returns their names. A head reads the float model's tokens: on a quantized vision
    tower they differ by the quantization error. A head with its own tuned vision takes the
    whole tuned copy along (float, in `STORED_DTYPE`), so it sees what it was trained on."""
    heads = load_heads(model_dir) if Path(model_dir).is_dir() else {}
    for head in heads.values():
        head.save(out_dir)
    return sorted(heads)


def _net(features: int, hidden: int, answers: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, answers)
    )


class TokenDetector(torch.nn.Module):
    """Where a named thing is in a frame, looked for at every visual token.

    One hidden layer, shared by the frame's tokens, scores each name at each token (is it
    there?). An answer that places the thing ("Left.", "Ahead.", "Right.") pools its name's
    scores over the tokens (log-sum-exp) through a learnt weight per token, which learns the
    tokens that show that side; the `absent` answer ("Not in view.") scores a learnt constant
    per name. A flat net over all tokens must learn a blue door once per place it can appear;
    this one learns it once. A small flat net over the whole frame (`frame_hidden` units) adds
    its scores, for what no single token shows: a doorway's frame spread over several."""

    def __init__(
        self,
        tokens: int,
        dim: int,
        hidden: int,
        groups: int,
        answers: int,
        absent: int,
        frame_hidden: int = 64,
    ) -> None:
        super().__init__()
        if not 0 <= absent < answers or tokens < 1:
            raise FrameHeadError(f"absent answer {absent} of {answers}, {tokens} tokens")
        self.tokens, self.dim, self.absent = tokens, dim, absent
        self.hidden = torch.nn.Linear(dim, hidden)
        self.out = torch.nn.Linear(hidden, groups)
        # a random start, so that the answers' token weights part from the first step
        self.route = torch.nn.Parameter(torch.randn(answers, tokens) * 0.1)
        self.absent_score = torch.nn.Parameter(torch.zeros(groups))
        self.frame = _net(tokens * dim, frame_hidden, groups * answers)
        self.dropout = torch.nn.Dropout(0.3)

    @property
    def num_features(self) -> int:
        return self.tokens * self.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, groups * answers] scores, each group's answers together (as the flat net's),
        for standardised flattened tokens [B, tokens * dim]."""
        per_token = torch.relu(self.hidden(x.reshape(len(x), self.tokens, self.dim)))
        scores = self.out(self.dropout(per_token))  # [B, tokens, groups]
        placed = torch.logsumexp(scores[:, None] + self.route[None, :, :, None], dim=2)
        absent = self.absent_score.expand(len(x), -1)[:, None]  # [B, 1, groups]
        is_absent = torch.arange(len(self.route), device=x.device)[None, :, None] == self.absent
        logits = torch.where(is_absent, absent, placed)  # [B, answers, groups]
        first, relu, second = self.frame
        whole = second(self.dropout(relu(first(x))))
        return logits.transpose(1, 2).reshape(len(x), -1) + whole


def fit_frame_head(
    name: str,
    prompt: str,
    answers: Sequence[str],
    features: torch.Tensor,
    labels: Sequence[int],
    hidden: int = 128,
    epochs: int = 30,
    seed: int = 0,
    progress: Callable[[int], object] | None = None,
    frames: int = 1,
    names: Sequence[str] = (),
    asked: Sequence[int] | None = None,
    tokens: int | None = None,
    absent: str | None = None,
) -> FrameHead:
    """A head trained on `features` [N, F] (the flattened visual tokens of `frames` frames per
    row, oldest first) with `labels` (indices into `answers`): AdamW (lr 1e-3, weight decay
    1e-2), batches of 128, dropout 0.3 on the hidden layer while training, `epochs` passes in a
    seeded order; `progress` gets 1 per epoch. A named question's head gets its `names` and,
    per row, the index of the name `asked` about; each row trains its name's answer group.
    With `tokens` (per frame) and the `absent` answer, the head is a `TokenDetector` on one
    frame, its features standardised per token dimension."""
    answers, names = list(answers), list(names)
    y = torch.as_tensor(list(labels), dtype=torch.long)
    if features.ndim != 2 or features.shape[0] != y.numel() or y.numel() == 0:
        raise FrameHeadError(f"need [N, F] features and N labels, got {tuple(features.shape)}")
    if len(answers) < 2 or y.min() < 0 or y.max() >= len(answers):
        raise FrameHeadError(f"labels must index the {len(answers)} answers (at least two)")
    if frames < 1 or features.shape[1] % frames:
        raise FrameHeadError(f"{features.shape[1]} features do not split into {frames} frames")
    groups = _asked_groups(names, asked, len(y))
    if tokens is not None and (frames != 1 or absent not in answers or features.shape[1] % tokens):
        raise FrameHeadError(
            f"a head that looks at every token reads one frame of {tokens} tokens and needs "
            f"its absent answer among {answers}, got {frames} frames, {absent!r}, "
            f"{features.shape[1]} features"
        )
    x = features.float()
    if tokens is None:
        mean, scale = x.mean(0), x.std(0).clamp_min(1e-3)
    else:
        per_dim = x.reshape(-1, features.shape[1] // tokens)
        mean = per_dim.mean(0).repeat(tokens)
        scale = per_dim.std(0).clamp_min(1e-3).repeat(tokens)
    x = (x - mean) / scale
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    width = len(answers)
    if tokens is None:
        net = _net(x.shape[1], hidden, width * max(1, len(names)))
        dropout = torch.nn.Dropout(0.3)
        forward = lambda rows: net[2](dropout(net[1](net[0](rows))))  # noqa: E731
    else:
        net = TokenDetector(
            tokens, x.shape[1] // tokens, hidden, max(1, len(names)), width, answers.index(absent)
        )
        forward = net
    _fit(net, lambda idx: forward(x[idx]), y, groups, width, epochs, generator, progress)
    info = {"hidden": hidden, "epochs": epochs, "seed": seed, "train_samples": len(x)}
    layout = FLAT if tokens is None else TOKENS
    return FrameHead(name, prompt, answers, mean, scale, net, info, frames, names, layout)


def fit_tuned_frame_head(
    name: str,
    prompt: str,
    answers: Sequence[str],
    pixels: torch.Tensor,
    rows: Sequence[int],
    labels: Sequence[int],
    vision: HeadVision,
    names: Sequence[str],
    asked: Sequence[int],
    absent: str,
    hidden: int = 256,
    epochs: int = 3,
    seed: int = 0,
    progress: Callable[[int], object] | None = None,
    frame_hidden: int = 64,
) -> FrameHead:
    """A `TokenDetector` head on one frame, trained together with the low-rank updates of its
    own `vision` (`HeadVision`, lr 1e-3 without weight decay; the detector as in
    `fit_frame_head`, its whole-frame net `frame_hidden` wide): each row's frame is
    `pixels[rows[i]]` ([U, 3, S, S], frames that rows share stored once) and goes through the
    tuned vision at every step. Its tokens are standardised with the statistics of the untuned
    vision's tokens of every frame."""
    answers, names = list(answers), list(names)
    y = torch.as_tensor(list(labels), dtype=torch.long)
    index = torch.as_tensor(list(rows), dtype=torch.long)
    if y.numel() == 0 or index.numel() != y.numel() or absent not in answers:
        raise FrameHeadError(
            f"need a frame per label and the absent answer among {answers}, got "
            f"{index.numel()} frames, {y.numel()} labels, {absent!r}"
        )
    if y.min() < 0 or y.max() >= len(answers) or index.min() < 0 or index.max() >= len(pixels):
        raise FrameHeadError(f"labels must index the {len(answers)} answers, rows the frames")
    if not vision.trainable():
        raise FrameHeadError("the head's vision has no updates to train (rank 0)")
    groups = _asked_groups(names, asked, len(y))
    with torch.inference_mode():
        untuned = torch.cat([vision(pixels[i : i + 256]) for i in range(0, len(pixels), 256)])
    tokens, dim = untuned.shape[1], untuned.shape[2]
    per_dim = untuned.reshape(-1, dim)
    mean = per_dim.mean(0).repeat(tokens)
    scale = per_dim.std(0).clamp_min(1e-3).repeat(tokens)
    del untuned, per_dim
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    width = len(answers)
    net = TokenDetector(
        tokens, dim, hidden, max(1, len(names)), width, answers.index(absent), frame_hidden
    )

    def forward(idx: torch.Tensor) -> torch.Tensor:
        found = vision(pixels[index[idx]]).reshape(len(idx), -1)
        return net((found - mean) / scale)

    extra = [{"params": vision.trainable(), "lr": 1e-3, "weight_decay": 0.0}]
    _fit(net, forward, y, groups, width, epochs, generator, progress, extra, vision)
    info = {"hidden": hidden, "frame_hidden": frame_hidden, "epochs": epochs, "seed": seed}
    info["train_samples"] = len(y)
    head = FrameHead(name, prompt, answers, mean, scale, net, info, 1, names, TOKENS)
    head.vision = vision.eval()
    return head


def _fit(
    net: torch.nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    groups: torch.Tensor,
    width: int,
    epochs: int,
    generator: torch.Generator,
    progress: Callable[[int], object] | None,
    extra_groups: Sequence[dict[str, Any]] = (),
    also_train: torch.nn.Module | None = None,
) -> None:
    """AdamW (lr 1e-3, weight decay 1e-2) over `net` (and `extra_groups`), batches of 128 rows
    (`forward(row indices)` -> logits) in a seeded order, `epochs` passes."""
    optimizer = torch.optim.AdamW(
        [*_parameter_groups(net), *extra_groups], lr=1e-3, weight_decay=1e-2
    )
    for _ in range(epochs):
        net.train()
        if also_train is not None:
            also_train.train()
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 128):
            idx = order[start : start + 128]
            loss = torch.nn.functional.cross_entropy(
                _asked_logits(forward(idx), groups[idx], width), y[idx]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if progress is not None:
            progress(1)
    net.eval()
    if also_train is not None:
        also_train.eval()


def _parameter_groups(net: torch.nn.Module) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: a `TokenDetector`'s token weights and absent scores,
    a few numbers each that must travel several units, learn 30 times faster and without
    weight decay."""
    if not isinstance(net, TokenDetector):
        return [{"params": list(net.parameters())}]
    pooling = [net.route, net.absent_score]
    rest = [p for p in net.parameters() if all(p is not q for q in pooling)]
    return [{"params": rest}, {"params": pooling, "lr": 3e-2, "weight_decay": 0.0}]


def _asked_groups(names: list[str], asked: Sequence[int] | None, rows: int) -> torch.Tensor:
    """[rows]: the answer group each row trains (all 0 without names)."""
    if not names:
        if asked is not None:
            raise FrameHeadError("rows ask about names, but the head has none")
        return torch.zeros(rows, dtype=torch.long)
    groups = torch.as_tensor(list(asked or []), dtype=torch.long)
    if groups.numel() != rows or groups.min() < 0 or groups.max() >= len(names):
        raise FrameHeadError(
            f"each of the {rows} rows must ask about one of the {len(names)} names"
        )
    return groups


def _asked_logits(logits: torch.Tensor, groups: torch.Tensor, width: int) -> torch.Tensor:
    """[B, width]: each row's scores of the answer group it asks about."""
    return logits.reshape(len(logits), -1, width)[torch.arange(len(logits)), groups]


def accuracy(
    head: FrameHead,
    features: torch.Tensor,
    labels: Sequence[int],
    asked: Sequence[int] | None = None,
) -> float:
    """The share of rows of `features` [N, F] whose most probable answer (about the name each
    row `asked` about, for a named question) is the label."""
    if len(labels) == 0:
        return math.nan
    groups = _asked_groups(head.names, asked, len(labels))
    x = (features.float() - head.mean) / head.scale
    with torch.inference_mode():
        picked = _asked_logits(head.net(x), groups, len(head.answers)).argmax(dim=1)
    return float((picked == torch.as_tensor(list(labels))).float().mean())
