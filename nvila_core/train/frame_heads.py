"""`nvila-core train-head`: a frame head (`nvila_core.model.frame_head`) for a trained model.

The data is LLaVA-format single-frame questions with closed answers (e.g. `nvila-sim turn-sides`):
one prompt for every record, one image each. The model's weights do not change: each frame goes
through its ViT and projector once (the tokens its LLM would read), and the head is fitted on
those tokens, so a head costs minutes on a CPU where teaching the LLM the same question does not
fit in the training budget.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI's --help imports this module, and must not import torch
    import torch


def read_head_questions(path: str | Path) -> tuple[str, list[Path], list[str]]:
    """(prompt, one frame per record, answers) of a single-frame question dataset."""
    from nvila_core.model.frame_head import FrameHeadError
    from nvila_core.train.data import read_llava_dataset

    samples = [s for group in read_llava_dataset(path, "head") for s in group]
    if not samples:
        raise FrameHeadError(f"{path}: no records")
    prompts = {s.prompt for s in samples}
    if len(prompts) != 1:
        raise FrameHeadError(f"{path}: a head answers one question, found {len(prompts)} prompts")
    frames = []
    for sample in samples:
        if len(sample.frame_paths) != 1:
            raise FrameHeadError(f"{sample.sample_id}: a head reads one frame per record")
        frames.append(sample.frame_paths[0])
    return prompts.pop(), frames, [s.answer for s in samples]


def frame_features(engine, frames: list[Path], desc: str) -> torch.Tensor:
    """[N, F]: every frame's visual tokens, flattened (no cache: each frame is seen once)."""
    import torch

    from nvila_core.progress import Progress
    from nvila_core.train.data import load_frame

    rows = []
    with Progress(len(frames), desc, "frames") as bar:
        for path in frames:
            rows.append(engine.frame_tokens(load_frame(path)).reshape(-1).float())
            bar.update(1)
    return torch.stack(rows)


def cmd_train_head(args: argparse.Namespace) -> int:
    from nvila_core.model.frame_head import FrameHeadError, accuracy, fit_frame_head
    from nvila_core.progress import Progress
    from nvila_core.runtime.engine import Engine

    engine = Engine.from_pretrained(args.model, cache_frames=0, threads=args.threads)
    prompt, frames, said = read_head_questions(args.data)
    answers = sorted(set(said))
    labels = [answers.index(a) for a in said]
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
        )
    head.info["data"] = str(args.data)
    head.info["train_accuracy"] = round(accuracy(head, features, labels), 4)
    if args.val:
        val_prompt, val_frames, val_said = read_head_questions(args.val)
        if val_prompt != prompt or not set(val_said) <= set(answers):
            raise FrameHeadError(f"{args.val}: another question or other answers than {args.data}")
        val_features = frame_features(engine, val_frames, f"{args.name}: val frames")
        val_labels = [answers.index(a) for a in val_said]
        head.info["val_data"] = str(args.val)
        head.info["val_samples"] = len(val_labels)
        head.info["val_accuracy"] = round(accuracy(head, val_features, val_labels), 4)
        majority = max(val_labels.count(i) for i in range(len(answers))) / len(val_labels)
        head.info["val_majority"] = round(majority, 4)
    path = head.save(args.out or args.model)
    print(json.dumps({"head": str(path), **head.info}, indent=1))
    return 0


def add_train_head_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `nvila-core train-head --model DIR --data Q.json --name NAME [--val V.json]`."""
    parser = subparsers.add_parser(
        "train-head",
        help="fit a frame head (one closed-set question about one frame) on a model's visual "
        "tokens; written to <model>/heads/",
    )
    parser.add_argument("--model", required=True, help="checkpoint folder (its weights stay)")
    parser.add_argument("--data", required=True, help="single-frame questions (LLaVA JSON)")
    parser.add_argument("--val", help="held-out questions: accuracy written to the head's JSON")
    parser.add_argument("--name", required=True, help="head name, e.g. turn_side")
    parser.add_argument("--out", help="model folder to write the head into (default: --model)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden units (default 128)")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the data (30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.set_defaults(handler=cmd_train_head)
    return parser
