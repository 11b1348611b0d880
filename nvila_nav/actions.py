"""NaVILA mid-level action grammar: forward 25/50/75 cm, turn left/right 15/30/45 deg, stop.

The model answers in text ("The next action is move forward 75 cm."); this module is the single
place that turns that text into typed actions and back, so the model wrapper, the simulator's
expert and the controller all agree on one grammar.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum


class ActionKind(str, Enum):
    """The four NaVILA mid-level actions (the VLN-CE discrete action space)."""

    FORWARD = "forward"
    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    STOP = "stop"


FORWARD_CM = (25, 50, 75)
TURN_DEG = (15, 30, 45)
FORWARD_UNIT_CM = FORWARD_CM[0]
TURN_UNIT_DEG = TURN_DEG[0]

_ANSWER_PREFIX = "The next action is "
_TURNS = (ActionKind.TURN_LEFT, ActionKind.TURN_RIGHT)


def _allowed_amounts(kind: ActionKind) -> tuple[int, ...]:
    if kind is ActionKind.FORWARD:
        return FORWARD_CM
    if kind in _TURNS:
        return TURN_DEG
    return (0,)


def _snap(value: float, allowed: tuple[int, ...]) -> int:
    """Nearest allowed amount; ties go to the smaller one (min keeps the first minimum)."""
    return min(allowed, key=lambda a: abs(a - value))


@dataclass(frozen=True)
class Action:
    """One mid-level action; `amount` is cm for FORWARD, degrees for turns and 0 for STOP.

    Amounts are restricted to the grammar (FORWARD_CM / TURN_DEG) so every Action can be spoken
    back to the model verbatim; use `parse_action` or the quantize helpers to get there from
    arbitrary text or motion.
    """

    kind: ActionKind
    amount: float = 0.0

    def __post_init__(self) -> None:
        allowed = _allowed_amounts(self.kind)
        if self.amount not in allowed:
            raise ValueError(
                f"{self.kind.value} amount must be one of {allowed}, got {self.amount}"
            )
        # Normalise ints to float so equal actions compare and hash equal.
        object.__setattr__(self, "amount", float(self.amount))

    @classmethod
    def forward(cls, cm: float) -> Action:
        return cls(ActionKind.FORWARD, cm)

    @classmethod
    def left(cls, deg: float) -> Action:
        return cls(ActionKind.TURN_LEFT, deg)

    @classmethod
    def right(cls, deg: float) -> Action:
        return cls(ActionKind.TURN_RIGHT, deg)

    @classmethod
    def stop(cls) -> Action:
        return cls(ActionKind.STOP)

    @property
    def is_stop(self) -> bool:
        return self.kind is ActionKind.STOP

    @property
    def distance_m(self) -> float:
        """Metres travelled forward (0 for turns and stop)."""
        return self.amount / 100.0 if self.kind is ActionKind.FORWARD else 0.0

    @property
    def yaw_rad(self) -> float:
        """Signed yaw change in radians, counter-clockwise (left) positive as in ROS REP 103."""
        if self.kind is ActionKind.TURN_LEFT:
            return math.radians(self.amount)
        if self.kind is ActionKind.TURN_RIGHT:
            return -math.radians(self.amount)
        return 0.0

    def to_text(self) -> str:
        """Canonical phrase, exactly as in NaVILA's training targets."""
        amount = round(self.amount)
        match self.kind:
            case ActionKind.FORWARD:
                return f"move forward {amount} cm"
            case ActionKind.TURN_LEFT:
                return f"turn left {amount} degrees"
            case ActionKind.TURN_RIGHT:
                return f"turn right {amount} degrees"
            case _:
                return "stop"

    def to_answer(self) -> str:
        """Full NaVILA answer sentence, used as the supervised target when building data."""
        return f"{_ANSWER_PREFIX}{self.to_text()}."

    def primitives(self) -> list[Action]:
        """Unit steps (25 cm / 15 deg) that NaVILA's Habitat loop executes for this action.

        NaVILA runs the first unit and queues the rest without re-querying the model.
        """
        if self.is_stop:
            return [self]
        unit = FORWARD_UNIT_CM if self.kind is ActionKind.FORWARD else TURN_UNIT_DEG
        return [Action(self.kind, unit)] * round(self.amount / unit)


ALL_ACTIONS: tuple[Action, ...] = (
    *(Action.forward(cm) for cm in FORWARD_CM),
    *(Action.left(deg) for deg in TURN_DEG),
    *(Action.right(deg) for deg in TURN_DEG),
    Action.stop(),
)

ACTION_VOCABULARY: tuple[str, ...] = tuple(
    dict.fromkeys(word for action in ALL_ACTIONS for word in action.to_text().split())
)
"""Every word of the canonical phrases, in first-use order (e.g. for a speech-recognition grammar)."""


_NUMBER = r"(\d+(?:\.\d+)?)"
_STOP_RE = re.compile(r"\bstop\b", re.IGNORECASE)
# NaVILA's Habitat parser only accepts the phrase right after "is"; checked first, in its order.
_PREFIXED = (
    (ActionKind.FORWARD, re.compile(r"\bis\s+move\s+forward\b", re.IGNORECASE)),
    (ActionKind.TURN_LEFT, re.compile(r"\bis\s+turn\s+left\b", re.IGNORECASE)),
    (ActionKind.TURN_RIGHT, re.compile(r"\bis\s+turn\s+right\b", re.IGNORECASE)),
)
_BARE = re.compile(r"\b(move\s+forward|turn\s+left|turn\s+right)\b", re.IGNORECASE)
_BARE_KIND = {
    "move forward": ActionKind.FORWARD,
    "turn left": ActionKind.TURN_LEFT,
    "turn right": ActionKind.TURN_RIGHT,
}
_FORWARD_AMOUNT = re.compile(
    rf"move\s+forward\s+{_NUMBER}\s*(cm|centimet(?:er|re)s?|m|met(?:er|re)s?)\b", re.IGNORECASE
)
_TURN_AMOUNT = {
    kind: re.compile(rf"turn\s+{side}\s+{_NUMBER}\s*(?:degree|deg|°)", re.IGNORECASE)
    for kind, side in ((ActionKind.TURN_LEFT, "left"), (ActionKind.TURN_RIGHT, "right"))
}


def _find_kind(text: str) -> ActionKind | None:
    if _STOP_RE.search(text):
        return ActionKind.STOP
    for kind, pattern in _PREFIXED:
        if pattern.search(text):
            return kind
    bare = _BARE.search(text)
    if bare is None:
        return None
    return _BARE_KIND[" ".join(bare.group(1).lower().split())]


def parse_action(text: str) -> Action | None:
    """Parse model output into an Action, or None when the text names no action.

    Follows NaVILA's Habitat parser: case-insensitive, a standalone "stop" wins over everything,
    then "is move forward" / "is turn left" / "is turn right". It also accepts the phrase without
    "The next action is" (the earliest one in the text wins), snaps amounts to the nearest grammar
    value, and defaults to 25 cm / 15 deg when no number is given. It never guesses an action:
    on None the caller picks the fallback (NaVILA's Isaac loop moves forward, Habitat's stalls).
    """
    kind = _find_kind(text)
    if kind is None:
        return None
    if kind is ActionKind.STOP:
        return Action.stop()
    if kind is ActionKind.FORWARD:
        match = _FORWARD_AMOUNT.search(text)
        if match is None:
            return Action.forward(FORWARD_UNIT_CM)
        value = float(match.group(1))
        cm = value if match.group(2).lower().startswith("c") else value * 100.0
        return Action.forward(_snap(cm, FORWARD_CM))
    match = _TURN_AMOUNT[kind].search(text)
    deg = TURN_UNIT_DEG if match is None else _snap(float(match.group(1)), TURN_DEG)
    return Action(kind, deg)


def _greedy(kind: ActionKind, units: int, allowed: tuple[int, ...]) -> list[Action]:
    """Split `units` unit steps into as few grammar actions as possible, largest first."""
    unit = allowed[0]
    actions = []
    for amount in sorted(allowed, reverse=True):
        count, units = divmod(units, amount // unit)
        actions += [Action(kind, amount)] * count
    return actions


def _round_half_up(x: float) -> int:
    """Deterministic rounding (Python's round() is banker's rounding)."""
    return math.floor(x + 0.5)


def quantize_forward(distance_m: float) -> list[Action]:
    """Forward actions covering `distance_m`, rounded to the nearest 25 cm (largest steps first).

    Returns [] when the distance rounds to zero; the grammar has no backward motion, so a
    negative distance is a caller error.
    """
    if not math.isfinite(distance_m) or distance_m < 0:
        raise ValueError(f"distance_m must be finite and >= 0, got {distance_m}")
    units = _round_half_up(distance_m * 100.0 / FORWARD_UNIT_CM)
    return _greedy(ActionKind.FORWARD, units, FORWARD_CM)


def quantize_turn(yaw_rad: float) -> list[Action]:
    """Turn actions for a yaw change (left positive), rounded to the nearest 15 deg.

    The angle is wrapped to [-180, 180) deg first so the robot always takes the shorter turn.
    """
    if not math.isfinite(yaw_rad):
        raise ValueError(f"yaw_rad must be finite, got {yaw_rad}")
    deg = (math.degrees(yaw_rad) + 180.0) % 360.0 - 180.0
    kind = ActionKind.TURN_LEFT if deg > 0 else ActionKind.TURN_RIGHT
    units = _round_half_up(abs(deg) / TURN_UNIT_DEG)
    return _greedy(kind, units, TURN_DEG)
