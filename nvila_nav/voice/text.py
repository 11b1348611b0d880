"""Spoken-form text: normalisation, numbers as words and back, and word error rate.

Recognisers hear words, not digits or punctuation, so everything that is compared or used to
build a language model goes through `normalize` first ("Turn 30°, then 75 cm." → "turn thirty
degrees then seventy five centimeters"). `to_written` turns recognised words back into the form
the navigator's instructions use (digits, sentence case).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_UNITS = {"cm": "centimeters", "m": "meters", "deg": "degrees", "°": " degrees"}
_NUMBER_WORDS = {word: value for value, word in enumerate(_ONES)} | {
    word: 10 * value for value, word in enumerate(_TENS) if word != "_"
}


def number_to_words(value: int) -> str:
    """0 ≤ value < 1000 in words ("forty five", "one hundred twenty")."""
    if not 0 <= value < 1000:
        raise ValueError(f"{value} is out of range for spoken numbers")
    if value < 20:
        return _ONES[value]
    if value < 100:
        tens, ones = divmod(value, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    hundreds, rest = divmod(value, 100)
    return f"{_ONES[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")


def normalize(text: str) -> str:
    """Lower-case words only: digits spelled out, units expanded, punctuation and hyphens gone."""
    text = text.lower().replace("°", " degrees ")
    text = re.sub(r"(\d+)\s*(cm|m|deg)\b", lambda m: f"{m.group(1)} {_UNITS[m.group(2)]}", text)
    text = re.sub(r"\d+", lambda m: f" {number_to_words(int(m.group()))} ", text)
    text = re.sub(r"[^a-z']+", " ", text)
    return " ".join(word.strip("'") for word in text.split() if word.strip("'"))


def _extends(value: int, number: int) -> bool:
    """Whether `number` continues the spoken number `value` ("one hundred" + "twenty" + "five")."""
    rest = value % 100
    if value >= 100 and rest == 0:
        return 0 < number < 100
    return rest >= 20 and rest % 10 == 0 and 0 < number < 10


def words_to_digits(words: list[str]) -> list[str]:
    """Runs of number words become digits ("seventy five" → "75"); other words pass through."""
    out: list[str] = []
    value: int | None = None
    for word in words:
        number = _NUMBER_WORDS.get(word)
        if value is not None and word == "hundred" and 0 < value < 10:
            value *= 100
        elif value is not None and number is not None and _extends(value, number):
            value += number
        else:
            if value is not None:
                out.append(str(value))
            value = number
            if number is None:
                out.append(word)
    if value is not None:
        out.append(str(value))
    return out


def to_written(words: list[str]) -> str:
    """Recognised words as an instruction: digits for numbers, a capital and a full stop."""
    text = " ".join(words_to_digits(words))
    return text[:1].upper() + text[1:] + "." if text else ""


def edit_distance(a: Sequence[object], b: Sequence[object]) -> int:
    """Levenshtein distance between two sequences (of words, or the characters of a string)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference length) after `normalize`."""
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    return edit_distance(ref, hyp), len(ref)


def word_error_rate(pairs: list[tuple[str, str]]) -> float:
    """Corpus WER over (reference, hypothesis) pairs: total errors / total reference words."""
    errors = total = 0
    for reference, hypothesis in pairs:
        e, n = word_errors(reference, hypothesis)
        errors, total = errors + e, total + n
    return errors / max(total, 1)
