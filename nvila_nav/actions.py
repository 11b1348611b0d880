"""NaVILA mid-level action grammar: forward 25/50/75 cm, turn left/right 15/30/45 deg, stop.

The model answers in text ("The next action is move forward 75 cm."); this module is the single
place that turns that text into typed actions and back, so the model wrapper, the simulator's
expert and the controller all agree on one grammar.

Two parsers: `parse_action` reads free model output the way NaVILA's Habitat parser does
(lenient: snaps amounts, defaults a missing amount), and `parse_command` checks a command that
will move a robot (the motion controller's `action` topic): exactly one action of the grammar,
or a `CommandRejected` that says why. Both refuse negated text ("do not move forward") and
amounts that are negative, zero or not a number.
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


# "do not", "don't", "never", ...: a negated action is never executed (a bare "stop" is kept).
_NEGATION_RE = re.compile(
    r"\b(?:not|no|never|without|avoid|cannot|dont|doesnt|shouldnt|mustnt)\b|n['\u2019]t\b",
    re.IGNORECASE,
)
# A number-like token after the action phrase: signed, decimal or exponent, nan and infinity.
_SIGNED_AMOUNT = re.compile(
    r"(?:move\s+forward|turn\s+(?:left|right))\s+"
    r"([-+\u2212]\s*\d+(?:\.\d+)?|\d+(?:\.\d+)?(?:e[-+]?\d+)?|nan|[-+]?inf(?:inity)?)"
    r"(?=\s|°|[a-z]|$)",
    re.IGNORECASE,
)


def _nonsense_amount(text: str) -> str | None:
    """Why the amount after the action phrase cannot be meant (negative, zero, NaN, infinite)."""
    match = _SIGNED_AMOUNT.search(text)
    if match is None:
        return None
    token = match.group(1).replace("\u2212", "-").replace(" ", "")
    try:
        value = float(token)
    except ValueError:
        return None
    if not math.isfinite(value):
        return f"amount {token!r} is not a finite number"
    if value < 0:
        return f"amount {token} is negative (the grammar has no backward motion)"
    if value == 0:
        return f"amount {token} is zero"
    return None


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
    A movement is None when the text is negated ("do not move forward 75 cm") or its amount is
    negative, zero, NaN or infinite: snapping those would invent a motion nobody asked for.
    """
    kind = _find_kind(text)
    if kind is None:
        return None
    if kind is ActionKind.STOP:
        return Action.stop()
    if _NEGATION_RE.search(text) or _nonsense_amount(text) is not None:
        return None
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


MAX_COMMAND_CHARS = 200
"""Longest text `parse_command` reads; the longest NaVILA answer has 46 characters."""


class CommandRejected(ValueError):
    """A command text that must not move the robot; the message says why."""


_COMMAND_PREFIX = re.compile(r"^(?:the\s+)?next\s+action\s+is\s*:?\s+", re.IGNORECASE)
_COMMAND_FORMS = (
    (ActionKind.STOP, re.compile(r"stop", re.IGNORECASE)),
    (ActionKind.FORWARD, re.compile(r"move\s+forward(?:\s*(?P<amount>.*))?", re.IGNORECASE)),
    (ActionKind.TURN_LEFT, re.compile(r"turn\s+left(?:\s*(?P<amount>.*))?", re.IGNORECASE)),
    (ActionKind.TURN_RIGHT, re.compile(r"turn\s+right(?:\s*(?P<amount>.*))?", re.IGNORECASE)),
)
_AMOUNT_RE = re.compile(
    r"(?P<number>[-+\u2212]?\s*(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?))"
    r"\s*(?P<unit>°|[^\s\d]*)\s*(?P<rest>.*)",
    re.IGNORECASE,
)
_FORWARD_UNITS = {
    **dict.fromkeys(("cm", "centimeter", "centimeters", "centimetre", "centimetres"), 1.0),
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), 100.0),
}
_TURN_UNITS = frozenset({"degree", "degrees", "deg", "°"})


def _grammar_text(kind: ActionKind) -> str:
    if kind is ActionKind.FORWARD:
        return f"{', '.join(map(str, FORWARD_CM))} cm"
    return f"{', '.join(map(str, TURN_DEG))} degrees"


def _command_amount(kind: ActionKind, phrase: str, amount_text: str) -> float:
    """The amount of a forward move [cm] or turn [deg], exactly one of the grammar's."""
    match = _AMOUNT_RE.fullmatch(amount_text)
    if match is None:
        raise CommandRejected(
            f"{phrase!r} must be followed by a number and its unit, or by nothing; "
            f"got {amount_text!r}"
        )
    number, unit = match.group("number"), match.group("unit").lower()
    if match.group("rest"):
        raise CommandRejected(f"extra words after {number} {unit}: {match.group('rest')!r}")
    value = float(number.replace("\u2212", "-").replace(" ", ""))
    if not math.isfinite(value):
        raise CommandRejected(f"amount {number!r} is not a finite number")
    if value < 0:
        raise CommandRejected(f"amount {number} is negative (the grammar has no backward motion)")
    if value == 0:
        raise CommandRejected(f"amount {number} is zero")
    if kind is ActionKind.FORWARD:
        if unit not in _FORWARD_UNITS:
            raise CommandRejected(f"unit {unit or '(none)'!r} is not a length (cm or m)")
        value *= _FORWARD_UNITS[unit]
        allowed: tuple[int, ...] = FORWARD_CM
    else:
        if unit not in _TURN_UNITS:
            raise CommandRejected(f"unit {unit or '(none)'!r} is not an angle (degrees)")
        allowed = TURN_DEG
    exact = [a for a in allowed if math.isclose(value, a, abs_tol=1e-6)]
    if not exact:
        raise CommandRejected(f"{number} {unit} is not in the grammar ({_grammar_text(kind)})")
    return float(exact[0])


def parse_command(text: str) -> Action:
    """Parse one command for the robot: exactly one NaVILA action, or CommandRejected.

    Accepted, case-insensitive, with any spacing and one optional final period: "stop",
    "move forward 25|50|75 cm", "turn left|right 15|30|45 degrees", NaVILA's full answer ("The
    next action is move forward 75 cm."), the units the model parser knows (centimeters, 0.5 m,
    degree, deg, °) and a move without amount (one unit: 25 cm / 15 degrees, as NaVILA's parser).
    Everything else is rejected with the reason: no action, extra words (two actions, chatter),
    negation, an amount that is negative, zero, not a finite number or not in the grammar (no
    snapping: a command is executed exactly as written or not at all), a wrong unit, and text
    longer than MAX_COMMAND_CHARS.
    """
    if len(text) > MAX_COMMAND_CHARS:
        raise CommandRejected(f"longer than {MAX_COMMAND_CHARS} characters ({len(text)})")
    stripped = " ".join(text.split())
    if not stripped:
        raise CommandRejected("empty")
    if _NEGATION_RE.search(stripped):
        raise CommandRejected("negated: a command names the action to take, never one to avoid")
    body = _COMMAND_PREFIX.sub("", stripped, count=1)
    body = body[:-1].rstrip() if body.endswith(".") else body
    for kind, form in _COMMAND_FORMS:
        match = form.fullmatch(body)
        if match is None:
            continue
        if kind is ActionKind.STOP:
            return Action.stop()
        amount_text = match.group("amount") or ""
        phrase = " ".join(body[: len(body) - len(amount_text)].split()).lower()
        if not amount_text:
            return Action(kind, FORWARD_UNIT_CM if kind is ActionKind.FORWARD else TURN_UNIT_DEG)
        return Action(kind, _command_amount(kind, phrase, amount_text))
    if _find_kind(stripped) is not None:
        raise CommandRejected(
            "not exactly one action: extra words around it, or more than one action"
        )
    raise CommandRejected(
        "no NaVILA action (move forward 25|50|75 cm, turn left|right 15|30|45 degrees, stop)"
    )


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
