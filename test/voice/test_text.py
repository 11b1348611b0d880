"""Spoken-form normalisation, numbers and word error rate."""

import pytest

from nvila_nav.voice.text import (
    edit_distance,
    normalize,
    number_to_words,
    to_written,
    word_error_rate,
    word_errors,
    words_to_digits,
)


def test_normalize_spells_out_numbers_units_and_drops_punctuation():
    text = "Turn 30°, then move forward 75 cm. Make a U-turn; it's 120 m!"
    assert normalize(text) == (
        "turn thirty degrees then move forward seventy five centimeters make a u turn it's "
        "one hundred twenty meters"
    )


@pytest.mark.parametrize(
    ("words", "digits"),
    [
        ("seventy five centimeters", ["75", "centimeters"]),
        ("one hundred twenty five", ["125"]),
        ("turn left thirty degrees and forty five", ["turn", "left", "30", "degrees", "and", "45"]),
        ("twenty twenty", ["20", "20"]),
        ("five fifty", ["5", "50"]),
    ],
)
def test_number_words_become_digits(words, digits):
    assert words_to_digits(words.split()) == digits


def test_numbers_round_trip():
    for value in (0, 7, 15, 45, 75, 90, 100, 180, 999):
        assert words_to_digits(number_to_words(value).split()) == [str(value)]


def test_written_form_is_a_sentence_with_digits():
    assert to_written(["move", "forward", "fifty", "centimeters"]) == "Move forward 50 centimeters."
    assert to_written([]) == ""


def test_word_errors_count_substitutions_deletions_and_insertions():
    assert word_errors("Turn left 30 degrees.", "turn left thirty degrees") == (0, 4)
    assert word_errors("turn left thirty degrees", "turn right thirty degrees please") == (2, 4)
    assert word_errors("go to the red chair", "") == (5, 5)
    assert word_error_rate([("a b c d", "a b c d"), ("a b", "a x")]) == pytest.approx(1 / 6)


def test_edit_distance_on_characters_and_words():
    """Textbook values: kitten → sitting is 3 edits; the word form counts whole words."""
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("herobot", "heyrobot") == 1
    assert edit_distance(["go", "to", "the", "door"], ["go", "to", "door", "now"]) == 2
    assert edit_distance("", "abc") == 3
