"""Natural teleop commands → instructions in the action grammar's words.

NaVILA's mid-level actions move 25/50/75 cm and turn 15/30/45 degrees; people say "go forward
two meters", "turn left ninety degrees", "turn around", "back up a little". The voice pipeline
publishes such a command as an instruction in the navigator's own wording ("Move forward 200
cm.", "Turn left 90 degrees.", "Turn left 180 degrees.") and reports, in the transcript's
`command`, the sequence of grammar actions that carries it out ("move forward 75 cm, move
forward 75 cm, move forward 50 cm"). Backward motion is not in the grammar: "back up a little"
becomes "Move backward 25 cm." with an empty `command`, and the navigator's model decides.
Anything that is not a teleop command passes through unchanged (digits, sentence case).
"""

from __future__ import annotations

import re

from nvila_nav.actions import FORWARD_CM, TURN_DEG
from nvila_nav.voice.text import to_written, words_to_digits

_MOVE = r"(?:go|move|drive|walk|head|roll)"
_UNIT_CM = {"meter": 100, "meters": 100, "metre": 100, "metres": 100, "centimeters": 1, "cm": 1}
_A_LITTLE = r"(?:a little(?: bit)?|a bit|slightly|a touch)"


def _steps(total: int, sizes: tuple[int, ...]) -> list[int]:
    """`total` as grammar amounts, largest first, the rest rounded to the nearest smallest one."""
    steps = []
    for size in sorted(sizes, reverse=True):
        while total >= size:
            steps.append(size)
            total -= size
    if total >= sizes[0] / 2:
        steps.append(min(sizes))
    return steps


def _forward(cm: int) -> tuple[str, str]:
    steps = _steps(cm, FORWARD_CM)
    return f"Move forward {cm} cm.", ", ".join(f"move forward {s} cm" for s in steps)


def _turn(side: str, degrees: int) -> tuple[str, str]:
    steps = _steps(degrees, TURN_DEG)
    return f"Turn {side} {degrees} degrees.", ", ".join(f"turn {side} {s} degrees" for s in steps)


def canonical_instruction(words: list[str]) -> tuple[str, str]:
    """(instruction text, grammar actions or "") for recognised words (wake phrase removed)."""
    text = " ".join(words_to_digits(words)).removeprefix("please ").removesuffix(" please")
    match = re.fullmatch(rf"{_MOVE} (?:forward|ahead|straight)(?: (?:by )?(a|an|\d+) (\w+))?", text)
    if match and match.group(1):
        amount = 1 if match.group(1) in ("a", "an") else int(match.group(1))
        unit = _UNIT_CM.get(match.group(2))
        if unit:
            return _forward(amount * unit)
    if match:
        return _forward(FORWARD_CM[-1])
    match = re.fullmatch(
        r"(?:turn|rotate)(?: to the| to your)? (left|right)(?: by)?(?: (\d+) degrees?| (a little(?: bit)?|a bit|slightly))?",
        text,
    )
    if match:
        side, degrees, little = match.groups()
        return _turn(side, int(degrees) if degrees else TURN_DEG[0] if little else 90)
    if re.fullmatch(r"turn (?:around|back)|turn 180 degrees", text):
        return _turn("left", 180)
    match = re.fullmatch(
        rf"(?:back up|{_MOVE} back(?:ward|wards)?|reverse)(?: {_A_LITTLE}| (\d+) (\w+))?", text
    )
    if match:
        amount, unit = match.groups()
        cm = int(amount) * _UNIT_CM.get(unit, 0) if amount else FORWARD_CM[0]
        if cm > 0:
            return f"Move backward {cm} cm.", ""
    return to_written(words), ""
