"""`nvila-nav-close-ahead`: does a model see which landmark is close ahead, and match a name to it?

Two question files of `nvila-sim captions`, on the same frames, answered by `Engine.choose`:

- readout.json (`--readout`), "What is close ahead?": the choice is among the scene's landmarks
  and "Nothing."; the report gives how often the colour, the kind and both are right.
- match.json (`--match`), "Is the <landmark> close ahead?": "Yes." or "No.". The frames with a
  landmark close ahead are asked twice, with its name and with another one, so a model that
  answers from the frame alone gets exactly one of the pair right: the pair accuracy, both
  answers right, says the name is read against the view (0 for such a model, 25 % for coin
  flips). Answers are broken down by how the named landmark relates to the one close ahead:
  itself, same kind (the colour must be read), same colour (the kind must be read), or neither.
- compare.json (`--compare`): the same questions with the landmark close ahead written before
  them ("Close ahead: the orange shelf. Is the pink bookshelf close ahead?"), a comparison of two
  names in text, scored like match.json.

    nvila-nav-close-ahead --model models/navila-nano --data data/nano/val_match/match.json
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from nvila_core.progress import track
from nvila_nav.sim.captions import READOUT_PROMPT, readout_answer
from nvila_nav.sim.furniture import KINDS
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.robot import CameraConfig
from nvila_nav.sim.sight import landmarks_close_ahead
from nvila_nav.sim.world import World, world_for_scene

ANSWERS = ("Yes.", "No.")
_QUESTION = re.compile(
    r"(?:<image>\n)?(?:Close ahead: [\w ]+\. )?Is the (\w+) ([\w ]+) close ahead\?(?:\n<image>)?"
)


def named_landmark(world: World, question: str):
    """The landmark of `world` a match question names."""
    found = _QUESTION.fullmatch(question)
    if found is None:
        raise ValueError(f"not a match question: {question!r}")
    colour, noun = found.groups()
    for lm in world.landmarks:
        if lm.colour == colour and noun in KINDS[lm.kind].nouns:
            return lm
    raise ValueError(f"{world.scene_id} has no {colour} {noun}")


def relation(world: World, pose: Pose, question: str, hfov_deg: float) -> str:
    """How the named landmark relates to the nearest landmark close ahead: "named" (it is that
    one), "same kind", "same colour", "other", or "none close" (no landmark close ahead)."""
    close = landmarks_close_ahead(world, pose, hfov_deg)
    if not close:
        return "none close"
    named, nearest = named_landmark(world, question), world.landmark(close[0])
    if named.name in close:
        return "named"
    if named.kind == nearest.kind:
        return "same kind"
    return "same colour" if named.colour == nearest.colour else "other"


def _frame(path: Path, record: dict) -> np.ndarray:
    with Image.open(path.parent / record["image"]) as im:
        return np.asarray(im.convert("RGB"))


def score_readout(engine, path: Path, limit: int) -> dict:
    """How often `engine` names the landmark close ahead (or "Nothing.") in a readout file."""
    records = json.loads(path.read_text())[:limit]
    right: dict[str, list[bool]] = defaultdict(list)
    for record in track(records, "questions", "q"):
        question, answer = (turn["value"] for turn in record["conversations"])
        if question != READOUT_PROMPT:
            raise ValueError(f"{path}: {record['id']} is not a readout record ({question!r})")
        world = world_for_scene(record["scene_id"])
        answers = [readout_answer(lm) for lm in world.landmarks]
        inputs = engine.processor(question, frames=[_frame(path, record)])
        said = engine.choose(inputs, [*answers, "Nothing."]).text
        if answer == "Nothing.":
            right["nothing"].append(said == answer)
            continue
        truth, got = answer.split(" ", 2), said.split(" ", 2)
        right["landmark"].append(said == answer)
        right["colour"].append(len(got) == 3 and got[1] == truth[1])
        right["kind"].append(len(got) == 3 and got[2] == truth[2])
    return {
        "questions": len(records),
        "close": len(right["landmark"]),
        **{k: _mean(right[k]) for k in ("landmark", "colour", "kind", "nothing")},
    }


def score_match(engine, path: Path, limit: int, hfov_deg: float) -> dict:
    """Accuracy of `engine` on the first `limit` records of a match file, and its breakdown."""
    records = json.loads(path.read_text())[:limit]
    by_relation: dict[str, list[bool]] = defaultdict(list)
    by_frame: dict[str, list[bool]] = defaultdict(list)
    p_yes = {"Yes.": [], "No.": []}
    for record in track(records, "questions", "q"):
        question, answer = (turn["value"] for turn in record["conversations"])
        if answer not in ANSWERS:
            raise ValueError(f"{path}: {record['id']} is not a yes/no record ({answer!r})")
        world = world_for_scene(record["scene_id"])
        pose = Pose(*record["pose"])
        result = engine.choose(engine.processor(question, frames=[_frame(path, record)]), ANSWERS)
        yes, no = result.answer_log_probs
        p_yes[answer].append(1.0 / (1.0 + math.exp(no - yes)))
        right = result.text == answer
        by_relation[relation(world, pose, question, hfov_deg)].append(right)
        by_frame[record["image"]].append(right)
    pairs = [all(v) for v in by_frame.values() if len(v) == 2]
    everything = [r for v in by_relation.values() for r in v]
    return {
        "questions": len(everything),
        "accuracy": _mean(everything),
        "pairs": len(pairs),
        "pair_accuracy": _mean(pairs),
        "p_yes_when_yes": _mean(p_yes["Yes."]),
        "p_yes_when_no": _mean(p_yes["No."]),
        "by_relation": {k: {"n": len(v), "accuracy": _mean(v)} for k, v in by_relation.items()},
    }


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nvila-nav-close-ahead", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", required=True, help="checkpoint folder or preset")
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="match.json, compare.json or readout.json (nvila-sim captions)",
    )
    parser.add_argument("--limit", type=int, default=1000, help="records scored")
    parser.add_argument("--hfov", type=float, default=CameraConfig().hfov_deg, help="degrees")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    from nvila_core.runtime.engine import Engine

    engine = Engine.from_pretrained(args.model)
    if args.data.name == "readout.json":
        report = score_readout(engine, args.data, args.limit)
    else:
        report = score_match(engine, args.data, args.limit, args.hfov)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
