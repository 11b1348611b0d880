"""Through the doorway the instruction names: once the statement says it is close ahead, head for
its opening.

"Pass through the blue doorway into the hallway" names the doorway the route takes, and the
robot often starts next to it or comes close to it, sees it (navila-nano's statement says "Close
ahead: the blue door.") and walks past it into another room: "close ahead" reaches 2 m and the
whole field of view, and the navigation answer does not say where in the view the doorway is. A
small head on the model's visual tokens does ("Where is what is close ahead?": "Left.",
"Ahead." within `AHEAD_DEG`, "Right."; trained at every rollout state whose statement names a
landmark close ahead, `nvila-sim close-side`, then `nvila-core train-head`). A model folder with
the `close_side` head, where the statement names a doorway the instruction says to go through
and the robot has not gone through it yet, moves forward where it is ahead and turns 15° toward
it otherwise, at most `DOORWAY_STEPS` decisions per doorway; the colours are compared in words,
as the engine compares the goal's name. It leaves the instruction's opening turn alone: until
that turn is made (`nvila_nav.initial_turn`) the doorway waits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from nvila_nav.actions import FORWARD_CM, TURN_DEG, Action, ActionKind, parse_action

CLOSE_SIDE_HEAD = "close_side"
"""The frame head's name in a model folder (`nvila_core.model.frame_head`)."""
CLOSE_SIDE_PROMPT = "<image>\nWhere is what is close ahead?"
CLOSE_SIDE_ANSWERS: dict[ActionKind | None, str] = {
    ActionKind.TURN_LEFT: "Left.",
    None: "Ahead.",
    ActionKind.TURN_RIGHT: "Right.",
}
AHEAD_DEG = 15.0
"""What is close ahead is "Ahead." where its centre is within this many degrees of the heading
(one smallest turn of the robot)."""
DOORWAY_MOVE = Action.forward(max(FORWARD_CM))
"""The move through a doorway that is ahead."""
DOORWAY_TURN_DEG = min(TURN_DEG)
"""The turn toward a doorway to one side."""
DOORWAY_STEPS = 8
"""Decisions per doorway at most that the doorway steers; after them the model decides."""

_THROUGH = re.compile(r"\bthrough the (\w+) door(?:way)?\b", re.IGNORECASE)
_DOOR = re.compile(r"the (\w+) door", re.IGNORECASE)


def close_side_answer(bearing: float) -> str:
    """The question's answer for what is close ahead at `bearing` (radians from the heading,
    + left)."""
    if abs(math.degrees(bearing)) < AHEAD_DEG:
        return CLOSE_SIDE_ANSWERS[None]
    return CLOSE_SIDE_ANSWERS[ActionKind.TURN_LEFT if bearing > 0 else ActionKind.TURN_RIGHT]


def side_of_close(answer: str) -> ActionKind | None:
    """The turn toward what is close ahead that an answer names (None: it is ahead)."""
    for side, said in CLOSE_SIDE_ANSWERS.items():
        if said == answer:
            return side
    raise ValueError(f"{answer!r} is not an answer of {CLOSE_SIDE_PROMPT!r}")


def doorways_to_pass(instruction: str) -> list[str]:
    """Colours of the doorways the instruction says to go through ("walk through the blue
    door", "pass through the red doorway"), in order, each once."""
    colours: list[str] = []
    for match in _THROUGH.finditer(instruction):
        colour = match[1].lower()
        if colour not in colours:
            colours.append(colour)
    return colours


def doorway_colour(name: str | None) -> str | None:
    """The colour of a doorway as a statement names it ("the blue door"), None for anything
    else (furniture, nothing)."""
    match = None if name is None else _DOOR.fullmatch(name)
    return None if match is None else match[1].lower()


def toward_doorway(side: ActionKind | None) -> Action:
    """Forward through a doorway that is ahead, else the smallest turn toward it."""
    return DOORWAY_MOVE if side is None else Action(side, DOORWAY_TURN_DEG)


class DoorwayGuide:
    """Which named doorway, if any, steers the current decision; one per episode (`reset`).

    A doorway counts as gone through once the robot, steered toward it, moved forward and the
    statement no longer names it: it is then behind the robot, and the instruction's next
    doorway (or none) takes over."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._passed: set[str] = set()
        self._steps: dict[str, int] = {}
        self._last: str | None = None

    def doorway(
        self,
        instruction: str,
        close_ahead: str | None,
        previous_actions: Sequence[str],
        opening_turn_done: bool = True,
    ) -> str | None:
        """The colour of the doorway to head for at this decision, or None. `close_ahead` is
        what the statement says is close ahead; call it at every decision, so that a doorway
        gone through is recognised."""
        door = doorway_colour(close_ahead)
        last = self._last
        self._last = door
        moved = bool(previous_actions) and _is_move(previous_actions[-1])
        if last is not None and last != door and moved and self._steps.get(last, 0) > 0:
            self._passed.add(last)
        if (
            door is None
            or not opening_turn_done
            or door not in doorways_to_pass(instruction)
            or door in self._passed
            or self._steps.get(door, 0) >= DOORWAY_STEPS
        ):
            return None
        self._steps[door] = self._steps.get(door, 0) + 1
        return door


def _is_move(text: str) -> bool:
    action = parse_action(text)
    if action is None:
        raise ValueError(f"previous actions must be actions, got {text!r}")
    return action.kind is ActionKind.FORWARD
