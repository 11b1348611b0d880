"""The turn an instruction opens with ("Turn around to your left.", "Face right, then ...",
"Bear left."): its side and how far, read from the opening words, bound the robot's first turn.

At the start the route is often behind or beside the robot, where the camera cannot show it;
only the instruction says which way to turn and roughly how far. A small navigation model reads
the side, but not the size: left to itself, navila-nano's first turn on val_unseen tier A was
more than 30° off the expert's in 20 of the 46 episodes that open with a turn, mostly one 45°
step where the instruction says "turn around". Nor can the frame tell when to stop turning: a
head on the visual tokens asked "Is the route straight ahead?" during the initial turn answers
no better than the majority answer. The opening words give a range instead ("turn around": 135–195°,
"turn left": 45–135°, "turn slightly left": 15–45°, as the simulator's instructions use them).
`bound_initial_turn` keeps the robot's turn before its first move on the stated side and within
that range, and leaves the model (its navigation answer and frame heads) to decide where in the
range to stop turning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from nvila_nav.actions import FORWARD_CM, TURN_DEG, Action, ActionKind, parse_action
from nvila_nav.turn_side import TURNS

_SIDE = r"(left|right)"
_END = r"(?=\s*(?:[.,;!]|and\b|then\b|$))"
"""The opening clause ends after its side: "Turn left at the sofa" names a later turn, not
the initial one."""
_PHRASES: tuple[tuple[str, int, int], ...] = (
    (
        rf"turn (?:all the way |back )?around(?: to (?:your|the) {_SIDE})?"
        rf"|turn {_SIDE} all the way around|turn back over your {_SIDE} shoulder"
        rf"|make a u-turn(?: to (?:your|the) {_SIDE})?",
        135,
        195,
    ),
    (
        rf"turn (?:slightly|a little|a bit)(?: to (?:your|the))? {_SIDE}"
        rf"|(?:bear|veer)(?: to (?:your|the))? {_SIDE}",
        15,
        45,
    ),
    (rf"turn(?: to (?:your|the))? {_SIDE}|face(?: to (?:your|the))? {_SIDE}", 45, 135),
)
_OPENINGS = tuple(
    (re.compile(rf"\s*(?:{phrase}){_END}", re.IGNORECASE), low, high)
    for phrase, low, high in _PHRASES
)
_SIDES = {"left": ActionKind.TURN_LEFT, "right": ActionKind.TURN_RIGHT}


@dataclass(frozen=True)
class StatedTurn:
    """The initial turn an instruction states: its side (None for "turn around" without one)
    and the range of its size in degrees."""

    side: ActionKind | None
    min_deg: int
    max_deg: int


def stated_initial_turn(instruction: str) -> StatedTurn | None:
    """The turn `instruction` opens with, or None where its first words state no turn."""
    for pattern, low, high in _OPENINGS:
        found = pattern.match(instruction)
        if found is not None:
            side = next((word.lower() for word in found.groups() if word), None)
            return StatedTurn(_SIDES.get(side), low, high)
    return None


def bound_initial_turn(
    stated: StatedTurn, previous_actions: Sequence[str], decided: Action
) -> Action:
    """The action to take instead of `decided` so the turn before the first move stays on the
    stated side and within the stated range; `decided` itself after the first move.

    Short of the range, a move or a stop becomes a turn (45°, or what is left to the range's
    start); a turn to the other side is turned to the stated one; a turn past the range's end is
    cut there, and once the range is turned, a turn becomes the longest move. A side that the
    instruction leaves open ("turn around") is the side of the first turn."""
    turns = _turns_before_first_move(previous_actions)
    if turns is None:
        return decided
    side = stated.side or (turns[0].kind if turns else None)
    if side is None:
        side = decided.kind if decided.kind in TURNS else ActionKind.TURN_LEFT
    turned = _turned(side, turns)
    if turned < stated.min_deg:
        step = decided.amount if decided.kind in TURNS else max(TURN_DEG)
        return Action(side, _step(min(step, stated.min_deg - turned)))
    if decided.kind not in TURNS:
        return decided
    if turned >= stated.max_deg:
        return Action.forward(max(FORWARD_CM))
    return Action(side, _step(min(decided.amount, stated.max_deg - turned)))


def short_of_stated_turn(stated: StatedTurn, previous_actions: Sequence[str]) -> bool:
    """Whether the robot has yet to turn the start of the stated range: no move executed, and
    less turned to the stated side (or, where the instruction leaves it open, to the side of the
    first turn) than `stated.min_deg`. Until then `bound_initial_turn` turns it on."""
    turns = _turns_before_first_move(previous_actions)
    if turns is None:
        return False
    side = stated.side or (turns[0].kind if turns else None)
    return side is None or _turned(side, turns) < stated.min_deg


def _turns_before_first_move(previous_actions: Sequence[str]) -> list[Action] | None:
    """The executed turns, or None once a move has been executed."""
    executed = [parse_action(text) for text in previous_actions]
    if any(action is None for action in executed):
        raise ValueError(f"previous actions must be actions, got {list(previous_actions)}")
    if any(action.kind is ActionKind.FORWARD for action in executed):
        return None
    return [action for action in executed if action.kind in TURNS]


def _turned(side: ActionKind, turns: Sequence[Action]) -> int:
    """Degrees turned to `side`, turns to the other side counted against it."""
    return sum(a.amount if a.kind is side else -a.amount for a in turns)


def _step(degrees: float) -> int:
    """The largest turn of the grammar not past `degrees` (at least the smallest)."""
    return max([TURN_DEG[0]] + [d for d in TURN_DEG if d <= degrees])
