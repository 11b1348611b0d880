"""The turn questions on rollout frames (LLaVA format), one record per state the question asks
about, on the latest decisions' frames up to the state's (oldest first; `TurnQuestion.frames`):

- turn side, "Which way does the route turn?" -> "Left."/"Right.": every expert turn whose
  previous executed action was a move;
- route ahead, "Is the route straight ahead?" -> "Yes."/"No.": every expert move or turn whose
  previous executed action was a turn ("Yes." where the expert moves on).

A navigation model learns from these to read the turn from the frames (`nvila_nav.turn_side`),
which its navigation query, fed its own executed actions, does not. `write_question_dataset`
writes any such frame question (also `nvila_nav.sim.stop_reach_questions`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nvila_nav.actions import Action, ActionKind, parse_action
from nvila_nav.sim.dataset import FORMAT, VERSION, link_frames
from nvila_nav.turn_side import (
    ROUTE_AHEAD_ANSWERS,
    ROUTE_AHEAD_FRAMES,
    ROUTE_AHEAD_HEAD,
    ROUTE_AHEAD_PROMPT,
    TURN_SIDE_ANSWERS,
    TURN_SIDE_FRAMES,
    TURN_SIDE_HEAD,
    TURN_SIDE_PROMPT,
    TURNS,
    follows_move,
    follows_turn,
    route_ahead_answer,
    turn_side_answer,
)


class FrameQuestion(Protocol):
    """What `write_question_dataset` needs of a question: its head's name, prompt, answers, the
    file the dataset is written to, how many decision frames a record shows (the state's and
    the ones before it), and the states of an episode it asks about."""

    head: str
    prompt: str
    answers: tuple[str, ...]
    file: str
    frames: int

    def states(self, meta: dict) -> Sequence[tuple[int, str] | tuple[int, str, str]]:
        """(action index, answer) of every state of an episode's meta.json asked about; for a
        named question (prompt with `{name}`), (action index, answer, name), a state once per
        name asked about."""
        ...


@dataclass(frozen=True)
class TurnQuestion:
    """One question: its head's name, prompt, answers, the file the dataset is written to,
    which labels it asks about (`asks(label, executed)`, executed: the actions before it) with
    what answer (`answer(label)`), and the decision frames a record shows."""

    head: str
    prompt: str
    answers: tuple[str, ...]
    file: str
    asks: Callable[[Action, Sequence[str]], bool]
    answer: Callable[[Action], str]
    frames: int = 1

    def states(self, meta: dict) -> list[tuple[int, str]]:
        return question_states(meta, self)


TURN_SIDE = TurnQuestion(
    TURN_SIDE_HEAD,
    TURN_SIDE_PROMPT,
    tuple(TURN_SIDE_ANSWERS.values()),
    "turn_sides.json",
    lambda label, executed: label.kind in TURNS and follows_move(executed),
    turn_side_answer,
    TURN_SIDE_FRAMES,
)
ROUTE_AHEAD = TurnQuestion(
    ROUTE_AHEAD_HEAD,
    ROUTE_AHEAD_PROMPT,
    tuple(ROUTE_AHEAD_ANSWERS.values()),
    "route_ahead.json",
    lambda label, executed: label.kind is not ActionKind.STOP and follows_turn(executed),
    route_ahead_answer,
    ROUTE_AHEAD_FRAMES,
)


def question_states(meta: dict, question: TurnQuestion) -> list[tuple[int, str]]:
    """(action index, answer) of every label of an episode's meta.json that `question` asks
    about, given the actions executed before it (the perturbation where one was driven instead
    of the label). History-only actions (contrast episodes' "context") are never labels."""
    found = []
    executed: list[str] = []
    for k, action in enumerate(meta["actions"]):
        label = parse_action(action["text"])
        if label is None:
            raise ValueError(f"action {k} ({action['text']!r}) is not an action")
        if not action.get("context", False) and question.asks(label, executed):
            found.append((k, question.answer(label)))
        executed.append(action.get("executed") or action["text"])
    return found


def stated_states(meta: dict) -> list[tuple[int, dict]]:
    """(action index, action) of every state of an episode's meta.json a statement question
    may ask about: history-only actions (contrast episodes' "context") are never asked about,
    and every other one must have its statement."""
    found = []
    for k, action in enumerate(meta["actions"]):
        if action.get("context", False):
            continue
        if "statement" not in action:
            raise ValueError(
                f"action {k} has no statement: write them first (nvila-sim statements)"
            )
        found.append((k, action))
    return found


def write_question_dataset(
    question: FrameQuestion,
    datasets: Sequence[str | Path],
    out: str | Path,
    progress: Callable[[int], object] | None = None,
) -> tuple[Path, dict[str, int]]:
    """Write `out/<question.file>` from rollout datasets (their frames linked under
    `out/<dataset folder>/`); returns its path and the number of records per answer. A record
    shows the frames of the latest `question.frames` decisions, oldest first (the first
    decision's frame standing for those before it, as at run time:
    `nvila_nav.history.latest_decision_slots`)."""
    out = Path(out)
    roots = [Path(d) for d in datasets]
    names = [r.name for r in roots]
    if len(set(names)) != len(names):
        raise ValueError(f"rollout datasets need distinct folder names, got {names}")
    records, counts = [], dict.fromkeys(question.answers, 0)
    for root in roots:
        index = json.loads((root / "index.json").read_text(encoding="utf-8"))
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise ValueError(f"{root} is not a {FORMAT} v{VERSION} dataset")
        for entry in index["episodes"]:
            meta = json.loads((root / entry["dir"] / "meta.json").read_text(encoding="utf-8"))
            states = question.states(meta)
            shown = [
                [decision_file(meta, max(i, 0)) for i in range(k - question.frames + 1, k + 1)]
                for k, *_ in states
            ]
            if shown:
                link_frames(
                    root / entry["dir"],
                    out / root.name / entry["dir"],
                    sorted({file for files in shown for file in files}),
                )
            for (k, answer, *named), files in zip(states, shown, strict=True):
                images = [f"{root.name}/{entry['dir']}/{file}" for file in files]
                record = {
                    "id": f"{root.name}/{entry['dir']}/{k:04d}",
                    "image": images[0] if len(images) == 1 else images,
                    "conversations": [
                        {"from": "human", "value": question.prompt.format(name=named[0])}
                        if named
                        else {"from": "human", "value": question.prompt},
                        {"from": "gpt", "value": answer},
                    ],
                }
                if named:
                    record["id"] += f"/{named[0]}"
                    record["name"] = named[0]
                records.append(record)
                counts[answer] += 1
            if progress is not None:
                progress(1)
    path = out / question.file
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records), encoding="utf-8")
    return path, counts


def decision_file(meta: dict, k: int) -> str:
    """The frame file the expert decided action `k` of an episode's meta.json on."""
    return meta["frames"][meta["actions"][k]["frame_index"]]["file"]
