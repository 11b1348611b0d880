"""The turn-side question on rollout frames (LLaVA format): one record per expert turn that
follows a forward move, the frame the expert saw there, and the side it turned.

A navigation model learns from these to read a turn's side from the current frame alone
(`nvila_nav.turn_side`), which its navigation query, fed its own executed actions, does not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from nvila_nav.actions import parse_action
from nvila_nav.sim.dataset import FORMAT, VERSION, link_frames
from nvila_nav.turn_side import (
    TURN_SIDE_ANSWERS,
    TURN_SIDE_PROMPT,
    TURNS,
    follows_move,
    turn_side_answer,
)

TURN_SIDES_FILE = "turn_sides.json"


def turn_states(meta: dict) -> list[tuple[int, str]]:
    """(action index, answer) of every turn label of an episode's meta.json whose previous
    executed action (the perturbation where one was driven instead of the label) was a move.
    History-only actions (contrast episodes' "context") are never labels."""
    found = []
    executed: list[str] = []
    for k, action in enumerate(meta["actions"]):
        label = parse_action(action["text"])
        if label is None:
            raise ValueError(f"action {k} ({action['text']!r}) is not an action")
        if label.kind in TURNS and not action.get("context", False) and follows_move(executed):
            found.append((k, turn_side_answer(label)))
        executed.append(action.get("executed") or action["text"])
    return found


def write_turn_side_dataset(
    datasets: Sequence[str | Path],
    out: str | Path,
    progress: Callable[[int], object] | None = None,
) -> tuple[Path, dict[str, int]]:
    """Write `out/turn_sides.json` from rollout datasets (their frames linked under
    `out/<dataset folder>/`); returns its path and the number of records per answer."""
    out = Path(out)
    roots = [Path(d) for d in datasets]
    names = [r.name for r in roots]
    if len(set(names)) != len(names):
        raise ValueError(f"rollout datasets need distinct folder names, got {names}")
    records, counts = [], dict.fromkeys(TURN_SIDE_ANSWERS.values(), 0)
    for root in roots:
        index = json.loads((root / "index.json").read_text(encoding="utf-8"))
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise ValueError(f"{root} is not a {FORMAT} v{VERSION} dataset")
        for entry in index["episodes"]:
            meta = json.loads((root / entry["dir"] / "meta.json").read_text(encoding="utf-8"))
            states = turn_states(meta)
            files = [meta["frames"][meta["actions"][k]["frame_index"]]["file"] for k, _ in states]
            if files:
                link_frames(root / entry["dir"], out / root.name / entry["dir"], files)
            for (k, answer), file in zip(states, files, strict=True):
                records.append(
                    {
                        "id": f"{root.name}/{entry['dir']}/{k:04d}",
                        "image": f"{root.name}/{entry['dir']}/{file}",
                        "conversations": [
                            {"from": "human", "value": TURN_SIDE_PROMPT},
                            {"from": "gpt", "value": answer},
                        ],
                    }
                )
                counts[answer] += 1
            if progress is not None:
                progress(1)
    path = out / TURN_SIDES_FILE
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records), encoding="utf-8")
    return path, counts
