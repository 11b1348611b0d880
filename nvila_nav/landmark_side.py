"""Where a named landmark is in view: "Where is the blue door?" answered from the current frame.

An instruction names the doorways its route goes through ("... go through the blue door into the
hallway ...") and the landmark it stops at; navila-nano's statement names the goal in the
readout's words ("Is the pink table close ahead?"). Going toward the next of them wherever it is
in view, not only once it is close ahead, is most of following such a route. The landmark-side
head on the model's visual tokens answers, per landmark name, "Left." or "Right." (its centre
more than `AHEAD_DEG` to that side), "Ahead." or "Not in view." (outside the field of view,
farther than `VIEW_RANGE`, or behind a wall); it is trained on the rollouts' frames with the
answers computed from the world's geometry (`nvila-sim landmark-side`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nvila_nav.actions import FORWARD_CM, TURN_DEG, Action, ActionKind, parse_action

LANDMARK_SIDE_HEAD = "landmark_side"
"""The frame head's name in a model folder (`nvila_core.model.frame_head`)."""
LANDMARK_SIDE_PROMPT = "<image>\nWhere is {name}?"
"""The question; `{name}` is the landmark's name in the statement's words ("the blue door")."""
LANDMARK_SIDE_ANSWERS: dict[ActionKind | None, str] = {
    ActionKind.TURN_LEFT: "Left.",
    None: "Ahead.",
    ActionKind.TURN_RIGHT: "Right.",
}
NOT_IN_VIEW = "Not in view."
LANDMARK_SIDE_ANSWER_SET = (*LANDMARK_SIDE_ANSWERS.values(), NOT_IN_VIEW)
"""Every answer of the question: the sides, and not in view."""
AHEAD_DEG = 15.0
"""A landmark is "Ahead." where its centre is within this many degrees of the heading (one
smallest turn of the robot)."""
VIEW_RANGE = 8.0
"""Farther than this (m, to its footprint) a landmark counts as not in view: a few pixels of a
96-pixel frame."""


def landmark_side_answer(bearing: float | None) -> str:
    """The answer for a landmark in view at `bearing` (radians from the heading, + left), or
    `NOT_IN_VIEW` for None."""
    if bearing is None:
        return NOT_IN_VIEW
    if abs(math.degrees(bearing)) < AHEAD_DEG:
        return LANDMARK_SIDE_ANSWERS[None]
    return LANDMARK_SIDE_ANSWERS[ActionKind.TURN_LEFT if bearing > 0 else ActionKind.TURN_RIGHT]


SIDE_CONFIDENCE = 0.6
"""A side answer less probable than this steers nothing: a side toward something that is not
there walks the robot away from the route. At 0.6, on held-out tier C states, navila-nano's head
gives a side for 4.3 % of the furniture out of view and for 60 % of that in view, 98 % of those
right."""
DOORWAY_CONFIDENCE = 0.5
"""The same for a doorway ("the blue door"), which the head sees less often and less surely (a
frame of thin posts): at 0.5 it gives a side for 30 % of the doorways in view, 83 % of those
right (at 0.6: 17 %), and for 7.5 % of those out of view."""
GONE_THROUGH_CM = 200
"""Forward travel (cm) after the statement last said a doorway was close ahead beyond which
the doorway is behind the robot ("close ahead" reaches about 2 m). Replayed on navila-nano's
runs of 40 held-out tier C episodes, this marked 17 of the 23 doorways the robot went through
within three decisions after it did, and 3 before it or without it; waiting for the doorway to
leave the view right after it was close ahead (the rule it replaced) marked 3 on time and 13
too early."""
TURNED_AWAY_DEG = 90
"""A net turn this large after a doorway was close ahead turned the robot away from it: the
travel toward it starts again the next time the statement says it is close ahead."""
TARGET_STEPS = 20
"""Decisions per landmark at most that the guide steers; after them the model decides."""
TARGET_MOVE = Action.forward(max(FORWARD_CM))
"""The move toward a landmark that is ahead."""
TARGET_TURN_DEG = min(TURN_DEG)
"""The turn toward a landmark to one side."""
SEARCH_AFTER_GOAL = 4
"""Decisions in a row without the goal in view (after the opening turn, with the route's
doorways behind) before the guide looks around for it: the goal is then most often in the room,
beside or behind the robot."""
SEARCH_AFTER_DOORWAY = 8
"""The same for a doorway to go through: it is more often out of sight (around a corner, beyond
what the head sees), and looking around for it sooner cost more of the route's decisions than
it found doorways."""
SEARCH_TURN_DEG = max(TURN_DEG)
"""One turn of a look-around."""
SEARCH_TURNS = 360 // SEARCH_TURN_DEG - 1
"""Turns of one look-around: every heading once, the camera's field of view (79 degrees) wider
than a turn."""
SEARCH_ROUNDS = 3
"""Look-arounds per landmark at most."""


def side_of_landmark(answer: str) -> ActionKind | None:
    """The turn toward a landmark in view that an answer names (None: it is ahead)."""
    for side, said in LANDMARK_SIDE_ANSWERS.items():
        if said == answer:
            return side
    raise ValueError(f"{answer!r} is not a side of {LANDMARK_SIDE_PROMPT!r}")


def toward_landmark(answer: str) -> Action:
    """Forward toward a landmark that is ahead, else the smallest turn toward it."""
    side = side_of_landmark(answer)
    return TARGET_MOVE if side is None else Action(side, TARGET_TURN_DEG)


_THROUGH = re.compile(r"\bthrough the (\w+) door(?:way)?\b", re.IGNORECASE)


def doorways_to_pass(instruction: str) -> list[str]:
    """Colours of the doorways the instruction says to go through ("walk through the blue
    door", "pass through the red doorway"), in order, each once."""
    colours: list[str] = []
    for match in _THROUGH.finditer(instruction):
        colour = match[1].lower()
        if colour not in colours:
            colours.append(colour)
    return colours


def doorway_name(colour: str) -> str:
    """A doorway in the statements' words: "the blue door"."""
    return f"the {colour} door"


def is_doorway(name: str) -> bool:
    """Whether a landmark name in the statements' words names a doorway."""
    return name.startswith("the ") and name.endswith(" door")


def route_landmarks(instruction: str, goal: str | None) -> list[str]:
    """What the route heads for, in order, in the statement's words: each doorway the
    instruction says to go through ("the blue door"), then the goal (`goal`, as the statement
    names it), where known."""
    doors = [doorway_name(colour) for colour in doorways_to_pass(instruction)]
    return doors + ([goal] if goal is not None and goal not in doors else [])


@dataclass
class _TravelSince:
    """How far the robot has moved forward and turned (net, + left) since a doorway was last
    said to be close ahead."""

    forward_cm: float = 0.0
    turned_deg: float = 0.0


class RouteGuide:
    """Which landmark of the route the current decision heads for, and how; one per episode
    (`reset`).

    A doorway counts as gone through once the robot has moved `GONE_THROUGH_CM` forward (moves
    blocked on the way included) since the statement last said it was close ahead, without
    turning `TURNED_AWAY_DEG` away, and the statement no longer says so: it is behind the robot,
    and so is every doorway before it on the route; the next landmark takes over. The goal is
    headed for until the statement says it is close ahead, where the model's own stop decides.
    Where the next landmark has not been in view for `SEARCH_AFTER_GOAL` (the goal) or
    `SEARCH_AFTER_DOORWAY` decisions, the guide looks around for it: turns of `SEARCH_TURN_DEG`
    through every heading, toward the side it was last seen on, until it comes into view (then
    it is headed for)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._passed: set[str] = set()
        self._steps: dict[str, int] = {}
        self._since_close: dict[str, _TravelSince] = {}
        self._opening_turn_done = False
        self._unseen: dict[str, int] = {}
        self._rounds: dict[str, int] = {}
        self._last_side: dict[str, ActionKind] = {}
        self._search_turns = 0

    def passed(self, name: str) -> bool:
        """Whether the route's landmark `name` counts as gone through this episode."""
        return name in self._passed

    def steer(
        self,
        instruction: str,
        goal: str | None,
        close_ahead: str | None,
        previous_actions: Sequence[str],
        where: Callable[[str], tuple[str, float] | None],
        opening_turn_done: bool = True,
    ) -> tuple[str, Action] | None:
        """(landmark, action toward it) for this decision, or None where the model decides.
        `goal` and `close_ahead` are the names the statement asks about and says is close
        ahead; `where(name)` answers the landmark-side question about a name (the most probable
        answer and its probability; a side steers only at `SIDE_CONFIDENCE` or more, a
        doorway's at `DOORWAY_CONFIDENCE`), or None for a name it cannot look for (one the head
        never learnt): the model decides there. Nothing is steered until the instruction's opening
        turn has been made once (turning back toward a landmark afterwards does not undo it).
        Call it at every decision: the last of `previous_actions` is counted into the travel
        since a doorway was close ahead."""
        self._opening_turn_done = self._opening_turn_done or opening_turn_done
        if previous_actions:
            self._travel(previous_actions[-1])
        if close_ahead is not None and is_doorway(close_ahead):
            self._since_close[close_ahead] = _TravelSince()
        route = route_landmarks(instruction, goal)
        gone = [
            i
            for i, name in enumerate(route)
            if is_doorway(name) and name != goal and self._gone_through(name, close_ahead)
        ]
        if gone:
            self._passed.update(route[: max(gone) + 1])
        if goal is not None and goal == close_ahead:
            return None  # the model's own stop decides, whatever the route still holds
        for name in route:
            if name in self._passed:
                continue
            found = where(name)
            if found is None or not self._opening_turn_done:
                return None  # a landmark it cannot look for: the model decides
            answer, probability = found
            sure = DOORWAY_CONFIDENCE if is_doorway(name) else SIDE_CONFIDENCE
            if answer == NOT_IN_VIEW or probability < sure:
                return self._search(
                    name, SEARCH_AFTER_GOAL if name == goal else SEARCH_AFTER_DOORWAY
                )
            self._unseen[name], self._search_turns = 0, 0
            side = side_of_landmark(answer)
            if side is not None:
                self._last_side[name] = side
            if self._steps.get(name, 0) >= TARGET_STEPS:
                return None
            self._steps[name] = self._steps.get(name, 0) + 1
            return name, toward_landmark(answer)
        return None

    def _travel(self, executed: str) -> None:
        """Count the last executed action into the travel since each doorway was close ahead;
        a doorway turned away from is dropped."""
        action = parse_action(executed)
        if action is None:
            raise ValueError(f"previous actions must be actions, got {executed!r}")
        for name, since in list(self._since_close.items()):
            if action.kind is ActionKind.FORWARD:
                since.forward_cm += action.amount
            elif action.kind is ActionKind.TURN_LEFT:
                since.turned_deg += action.amount
            elif action.kind is ActionKind.TURN_RIGHT:
                since.turned_deg -= action.amount
            if abs(since.turned_deg) >= TURNED_AWAY_DEG:
                del self._since_close[name]

    def _gone_through(self, doorway: str, close_ahead: str | None) -> bool:
        """Whether the robot has gone through `doorway`: far enough on since it was close ahead,
        and no longer said to be."""
        since = self._since_close.get(doorway)
        return since is not None and doorway != close_ahead and since.forward_cm >= GONE_THROUGH_CM

    def _search(self, name: str, after: int) -> tuple[str, Action] | None:
        """The next turn of a look-around for `name`, which is not in view (begun after `after`
        decisions without it); None where the model decides."""
        self._unseen[name] = self._unseen.get(name, 0) + 1
        if self._search_turns == 0:
            if self._unseen[name] < after or self._rounds.get(name, 0) >= SEARCH_ROUNDS:
                return None
            self._rounds[name] = self._rounds.get(name, 0) + 1
            self._search_turns = SEARCH_TURNS
        self._search_turns -= 1
        if self._search_turns == 0:
            self._unseen[name] = 0
        side = self._last_side.get(name, ActionKind.TURN_LEFT)
        return name, Action(side, SEARCH_TURN_DEG)
