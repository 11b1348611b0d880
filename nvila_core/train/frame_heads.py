"""`nvila-core train-head`: a frame head (`nvila_core.model.frame_head`) for a trained model.

The data is LLaVA-format frame questions with closed answers (e.g. `nvila-sim turn-sides`): one
prompt for every record, the same number of images each (usually one; a head reads them oldest
first, the current last). A named question's records each carry the `name` they ask about
("the blue door") and the prompt with that name filled in ("Where is the blue door?"). The
model's weights do not change: each frame goes through its ViT and projector once (the tokens
its LLM would read), and the head is fitted on those tokens, so a head costs minutes on a CPU
where teaching the LLM the same question does not fit in the training budget.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI's --help imports this module, and must not import torch
    import torch


def read_head_questions(
    path: str | Path,
) -> tuple[str, list[tuple[Path, ...]], list[str], list[str] | None]:
    """(prompt, the frames of each record, answers, the name each record asks about) of a frame
    question dataset. A named question's prompt is the template (`{name}` where its records
    put the name); a question without names gets None for the names."""
    from nvila_core.model.frame_head import FrameHeadError
    from nvila_core.train.data import read_llava_dataset

    samples = [s for group in read_llava_dataset(path, "head") for s in group]
    if not samples:
        raise FrameHeadError(f"{path}: no records")
    if not samples[0].frame_paths:  # every prompt has the first one's <image> count
        raise FrameHeadError(f"{path}: the question shows no frame")
    frames, said = [tuple(s.frame_paths) for s in samples], [s.answer for s in samples]
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    names = [r.get("name") for r in records]
    if all(n is None for n in names):
        prompts = {s.prompt for s in samples}
        if len(prompts) != 1:
            raise FrameHeadError(
                f"{path}: a head answers one question, found {len(prompts)} prompts"
            )
        return prompts.pop(), frames, said, None
    if not all(isinstance(n, str) and n for n in names):
        raise FrameHeadError(f"{path}: some records of a named question have no name")
    template = samples[0].prompt.replace(names[0], "{name}")
    for sample, name in zip(samples, names, strict=True):
        if "{name}" not in template or sample.prompt != template.format(name=name):
            raise FrameHeadError(
                f"{path}: record {sample.sample_id} asks {sample.prompt!r}, not {template!r} "
                f"about {name!r}"
            )
    return template, frames, said, names


def frame_features(engine, records: list[tuple[Path, ...]], desc: str) -> torch.Tensor:
    """[N, F]: each record's frames' visual tokens, flattened and concatenated in order (a frame
    two records share is encoded once)."""
    import torch

    from nvila_core.progress import Progress
    from nvila_core.train.data import load_frame

    tokens: dict[Path, torch.Tensor] = {}
    rows = []
    with Progress(len(records), desc, "records") as bar:
        for frames in records:
            for path in frames:
                if path not in tokens:
                    tokens[path] = engine.frame_tokens(load_frame(path)).reshape(-1).float()
            rows.append(torch.cat([tokens[path] for path in frames]))
            bar.update(1)
    return torch.stack(rows)


def frame_pixels(
    engine, records: list[tuple[Path, ...]], desc: str
) -> tuple[torch.Tensor, list[int]]:
    """The processed pixels of each distinct frame of one-frame records ([U, 3, S, S], float16
    to halve the memory of a large question set) and each record's row in them."""
    import torch

    from nvila_core.model.processing import IMAGE_TOKEN
    from nvila_core.progress import Progress
    from nvila_core.train.data import load_frame

    seen: dict[Path, int] = {}
    pixels, rows = [], []
    with Progress(len(records), desc, "records") as bar:
        for (path,) in records:
            if path not in seen:
                seen[path] = len(pixels)
                media = engine.processor(IMAGE_TOKEN, frames=[load_frame(path)]).media
                pixels.append(media[0].pixel_values[0].to(torch.float16))
            rows.append(seen[path])
            bar.update(1)
    return torch.stack(pixels), rows


def tuned_features(vision, pixels: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """[N, F]: each row's frame's tokens through a head's tuned vision, flattened."""
    import torch

    with torch.inference_mode():
        tokens = torch.cat([vision(pixels[i : i + 256]) for i in range(0, len(pixels), 256)])
    return tokens.reshape(len(tokens), -1)[torch.as_tensor(rows)]


def cmd_train_head(args: argparse.Namespace) -> int:
    from nvila_core.model.frame_head import TOKENS, FrameHeadError, accuracy
    from nvila_core.runtime.engine import Engine
    from nvila_core.train.data import load_frame

    if args.tune_vision and args.layout != TOKENS:
        raise FrameHeadError(f"--tune-vision trains a --layout {TOKENS} head")
    engine = Engine.from_pretrained(args.model, cache_frames=0, threads=args.threads)
    prompt, frames, said, asked_names = read_head_questions(args.data)
    answers = sorted(set(said))
    labels = [answers.index(a) for a in said]
    names = sorted(set(asked_names or []))
    asked = None if asked_names is None else [names.index(n) for n in asked_names]
    tokens = None
    if args.layout == TOKENS:
        if args.absent not in answers or asked_names is None or len(frames[0]) != 1:
            raise FrameHeadError(
                f"--layout {TOKENS} looks for a named thing in one frame: {args.data} needs names, "
                f"one frame per record and --absent among its answers {answers}"
            )
        tokens = engine.frame_tokens(load_frame(frames[0][0])).shape[0]
    if args.tune_vision:
        head, features = _fit_tuned(args, engine, frames, prompt, answers, labels, names, asked)
        val_features_of = lambda records: tuned_features(  # noqa: E731
            head.vision, *frame_pixels(engine, records, f"{args.name}: val frames")
        )
    else:
        head, features = _fit_on_model_tokens(
            args, engine, frames, prompt, answers, labels, names, asked, tokens
        )
        val_features_of = lambda records: frame_features(  # noqa: E731
            engine, records, f"{args.name}: val frames"
        )
    head.info["data"] = str(args.data)
    head.info["train_accuracy"] = round(accuracy(head, features, labels, asked), 4)
    if args.val:
        val_prompt, val_frames, val_said, val_names = read_head_questions(args.val)
        if (
            val_prompt != prompt
            or not set(val_said) <= set(answers)
            or len(val_frames[0]) != head.frames
            or (val_names is None) != (asked_names is None)
            or not set(val_names or []) <= set(names)
        ):
            raise FrameHeadError(
                f"{args.val}: another question, other answers or names, or another number of "
                f"frames than {args.data}"
            )
        val_features = val_features_of(val_frames)
        val_labels = [answers.index(a) for a in val_said]
        val_asked = None if val_names is None else [names.index(n) for n in val_names]
        head.info["val_data"] = str(args.val)
        head.info["val_samples"] = len(val_labels)
        head.info["val_accuracy"] = round(accuracy(head, val_features, val_labels, val_asked), 4)
        majority = max(val_labels.count(i) for i in range(len(answers))) / len(val_labels)
        head.info["val_majority"] = round(majority, 4)
    path = head.save(args.out or args.model)
    print(json.dumps({"head": str(path), **head.info}, indent=1))
    return 0


def _fit_on_model_tokens(args, engine, frames, prompt, answers, labels, names, asked, tokens):
    """The head fitted on the model's own tokens, and those tokens [N, F]."""
    from nvila_core.model.frame_head import fit_frame_head
    from nvila_core.progress import Progress

    features = frame_features(engine, frames, f"{args.name}: train frames")
    with Progress(args.epochs, f"{args.name}: fitting", "epochs") as bar:
        head = fit_frame_head(
            args.name,
            prompt,
            answers,
            features,
            labels,
            hidden=args.hidden,
            epochs=args.epochs,
            seed=args.seed,
            progress=bar.update,
            frames=len(frames[0]),
            names=names,
            asked=asked,
            tokens=tokens,
            absent=args.absent if tokens else None,
        )
    return head, features


def _fit_tuned(args, engine, frames, prompt, answers, labels, names, asked):
    """The head fitted together with its own tuned vision (`--tune-vision`), and the tokens
    [N, F] of its training frames through that vision."""
    from nvila_core.model.checkpoint import load_vision_parts
    from nvila_core.model.frame_head import fit_tuned_frame_head
    from nvila_core.model.head_vision import HeadVision
    from nvila_core.progress import Progress

    tower, projector = load_vision_parts(args.model, engine.config)
    vision = HeadVision(engine.config, tower, projector, args.tune_vision, args.tune_blocks)
    pixels, rows = frame_pixels(engine, frames, f"{args.name}: train frames")
    with Progress(args.epochs, f"{args.name}: fitting with its vision", "epochs") as bar:
        head = fit_tuned_frame_head(
            args.name,
            prompt,
            answers,
            pixels,
            rows,
            labels,
            vision,
            names,
            asked,
            args.absent,
            hidden=args.hidden,
            epochs=args.epochs,
            seed=args.seed,
            progress=bar.update,
            frame_hidden=args.frame_hidden,
        )
    head.info["vision_rank"] = args.tune_vision
    head.info["vision_blocks"] = args.tune_blocks
    return head, tuned_features(head.vision, pixels, rows)


def add_train_head_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `nvila-core train-head --model DIR --data Q.json --name NAME [--val V.json]`."""
    parser = subparsers.add_parser(
        "train-head",
        help="fit a frame head (one closed-set question about a frame, or the latest decision "
        "frames) on a model's visual tokens; written to <model>/heads/",
    )
    parser.add_argument("--model", required=True, help="checkpoint folder (its weights stay)")
    parser.add_argument("--data", required=True, help="frame questions (LLaVA JSON)")
    parser.add_argument("--val", help="held-out questions: accuracy written to the head's JSON")
    parser.add_argument("--name", required=True, help="head name, e.g. turn_side")
    parser.add_argument("--out", help="model folder to write the head into (default: --model)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden units (default 128)")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the data (30)")
    parser.add_argument(
        "--layout",
        choices=("flat", "tokens"),
        default="flat",
        help="flat: one net over the flattened tokens (default); tokens: a named question about "
        "where a thing is, looked for at every token of one frame (TokenDetector)",
    )
    parser.add_argument(
        "--absent", help="with --layout tokens: the answer that says the thing is not in view"
    )
    parser.add_argument(
        "--tune-vision",
        type=int,
        default=0,
        metavar="RANK",
        help="with --layout tokens: train the head together with its own copy of the vision "
        "tower and projector, through rank-RANK updates of their linear layers (kept with the "
        "head; the model's tokens stay as they are); 0: read the model's tokens (default)",
    )
    parser.add_argument(
        "--tune-blocks",
        type=int,
        default=1,
        help="with --tune-vision: the vision tower's last blocks that get updates (default 1)",
    )
    parser.add_argument(
        "--frame-hidden",
        type=int,
        default=64,
        help="with --tune-vision: hidden units of the head's net over the whole frame (64)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.set_defaults(handler=cmd_train_head)
    return parser
