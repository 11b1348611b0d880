"""Tests for the NaVILA action grammar: parsing real model output, round trips, quantisation."""

import math
import re

import pytest

from nvila_nav.actions import (
    ACTION_VOCABULARY,
    ALL_ACTIONS,
    MAX_COMMAND_CHARS,
    Action,
    ActionKind,
    CommandRejected,
    parse_action,
    parse_command,
    quantize_forward,
    quantize_turn,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The next action is move forward 75 cm.", Action.forward(75)),
        ("The next action is turn left 45 degrees.", Action.left(45)),
        ("The next action is turn right 30 degrees.", Action.right(30)),
        ("The next action is stop.", Action.stop()),
        ("THE NEXT ACTION IS MOVE FORWARD 50 CM.", Action.forward(50)),
        ("the next action is turn right 15 degree", Action.right(15)),
        ("move forward 50 cm", Action.forward(50)),
        ("Turn right 30 degrees.", Action.right(30)),
        ("turn left 45 degrees", Action.left(45)),
        ("Stop.", Action.stop()),
        ("move  forward 75cm", Action.forward(75)),
        ("The next action is turn left 15°", Action.left(15)),
        ("move forward 0.5 m", Action.forward(50)),
        ("move forward 75 centimeters", Action.forward(75)),
    ],
)
def test_parse_phrase_forms(text, expected):
    assert parse_action(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("move forward 60 cm", Action.forward(50)),
        ("move forward 70 cm", Action.forward(75)),
        ("move forward 200 cm", Action.forward(75)),
        ("move forward 10 cm", Action.forward(25)),
        ("move forward 37.5 cm", Action.forward(25)),  # tie goes to the smaller step
        ("move forward 1 m", Action.forward(75)),
        ("turn left 13 degrees", Action.left(15)),
        ("turn left 40 degrees", Action.left(45)),
        ("turn right 90 degrees", Action.right(45)),
        ("turn right 25 degrees", Action.right(30)),
    ],
)
def test_amounts_snap_to_grammar(text, expected):
    assert parse_action(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The next action is move forward.", Action.forward(25)),
        ("turn left", Action.left(15)),
        ("The next action is turn right a little.", Action.right(15)),
        ("move forward some cm", Action.forward(25)),
    ],
)
def test_missing_amount_defaults_to_one_unit(text, expected):
    assert parse_action(text) == expected


def test_stop_word_wins_like_navila():
    # Habitat checks r"\bstop\b" before anything else, even when a move is also named.
    assert parse_action("The next action is move forward 75 cm and stop") == Action.stop()
    # ...but only as a whole word.
    assert parse_action("move forward 50 cm to the bus stops") == Action.forward(50)


def test_prefixed_phrase_wins_over_earlier_bare_phrase():
    text = "I could turn left, but the next action is move forward 50 cm."
    assert parse_action(text) == Action.forward(50)


def test_earliest_bare_phrase_wins():
    assert parse_action("turn right 30 degrees then move forward 75 cm") == Action.right(30)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "I am not sure where to go.",
        "forward",
        "go left",
        "move backward 50 cm",
        "stopped",
    ],
)
def test_unparseable_returns_none(text):
    assert parse_action(text) is None


@pytest.mark.parametrize("action", ALL_ACTIONS, ids=lambda a: a.to_text())
def test_text_round_trip(action):
    assert parse_action(action.to_text()) == action
    assert parse_action(action.to_answer()) == action


def test_all_actions_cover_grammar():
    assert len(ALL_ACTIONS) == 10
    assert {a.kind for a in ALL_ACTIONS} == set(ActionKind)


def test_text_forms():
    assert Action.forward(75).to_text() == "move forward 75 cm"
    assert Action.left(30).to_text() == "turn left 30 degrees"
    assert Action.right(15).to_text() == "turn right 15 degrees"
    assert Action.stop().to_text() == "stop"
    assert Action.forward(75).to_answer() == "The next action is move forward 75 cm."
    assert Action.stop().to_answer() == "The next action is stop."


def test_geometry():
    assert Action.forward(75).distance_m == pytest.approx(0.75)
    assert Action.forward(75).yaw_rad == 0.0
    assert Action.left(30).yaw_rad == pytest.approx(math.pi / 6)
    assert Action.right(45).yaw_rad == pytest.approx(-math.pi / 4)
    assert Action.right(45).distance_m == 0.0
    assert Action.stop().distance_m == 0.0
    assert Action.stop().yaw_rad == 0.0
    assert Action.stop().is_stop
    assert not Action.forward(25).is_stop


def test_amount_normalised_and_validated():
    assert Action.forward(50) == Action(ActionKind.FORWARD, 50.0)
    assert hash(Action.forward(50)) == hash(Action(ActionKind.FORWARD, 50.0))
    assert isinstance(Action.forward(50).amount, float)
    for bad in (lambda: Action.forward(100), lambda: Action.left(20), lambda: Action.right(0)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError):
        Action(ActionKind.STOP, 25)
    with pytest.raises(ValueError):
        Action(ActionKind.FORWARD)  # no default distance: the grammar has no 0 cm move


def test_action_kind_is_str():
    assert ActionKind.TURN_LEFT == "turn_left"
    assert ActionKind("stop") is ActionKind.STOP


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (Action.forward(25), [Action.forward(25)]),
        (Action.forward(75), [Action.forward(25)] * 3),
        (Action.left(30), [Action.left(15)] * 2),
        (Action.right(45), [Action.right(15)] * 3),
        (Action.stop(), [Action.stop()]),
    ],
)
def test_primitives(action, expected):
    assert action.primitives() == expected


def test_primitives_preserve_motion():
    for action in ALL_ACTIONS:
        steps = action.primitives()
        assert sum(s.distance_m for s in steps) == pytest.approx(action.distance_m)
        assert sum(s.yaw_rad for s in steps) == pytest.approx(action.yaw_rad)


@pytest.mark.parametrize(
    ("distance_m", "expected_cm"),
    [
        (0.0, []),
        (0.12, []),
        (0.125, [25]),  # half a step rounds up
        (0.25, [25]),
        (0.5, [50]),
        (0.8, [75]),
        (1.0, [75, 25]),
        (1.3, [75, 50]),
        (2.0, [75, 75, 50]),
    ],
)
def test_quantize_forward(distance_m, expected_cm):
    assert quantize_forward(distance_m) == [Action.forward(cm) for cm in expected_cm]


@pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf])
def test_quantize_forward_rejects_bad_distance(bad):
    with pytest.raises(ValueError):
        quantize_forward(bad)


@pytest.mark.parametrize(
    ("yaw_deg", "expected"),
    [
        (0.0, []),
        (7.0, []),
        (10.0, [Action.left(15)]),
        (-30.0, [Action.right(30)]),
        (60.0, [Action.left(45), Action.left(15)]),
        (-100.0, [Action.right(45), Action.right(45), Action.right(15)]),
        (90.0, [Action.left(45), Action.left(45)]),
        (350.0, [Action.right(15)]),  # wrapped: the short way round
        (-270.0, [Action.left(45), Action.left(45)]),
    ],
)
def test_quantize_turn(yaw_deg, expected):
    assert quantize_turn(math.radians(yaw_deg)) == expected


def test_quantize_turn_rejects_non_finite():
    with pytest.raises(ValueError):
        quantize_turn(math.nan)


def test_vocabulary_covers_every_canonical_phrase():
    assert set(ACTION_VOCABULARY) == {
        "move",
        "forward",
        "turn",
        "left",
        "right",
        "stop",
        "cm",
        "degrees",
        "25",
        "50",
        "75",
        "15",
        "30",
        "45",
    }
    assert len(ACTION_VOCABULARY) == len(set(ACTION_VOCABULARY))


@pytest.mark.parametrize(
    "text",
    [
        "move forward -75 cm",
        "The next action is move forward nan cm.",
        "move forward 0 cm",
        "turn left -45 degrees",
        "turn right inf degrees",
        "Do not move forward 75 cm",
        "don't turn left 30 degrees",
        "never turn right",
    ],
)
def test_model_parser_refuses_negation_and_impossible_amounts(text):
    # Snapping these would invent a motion nobody asked for (issue: all ran as forward 25 cm).
    assert parse_action(text) is None


def test_model_parser_still_lets_stop_win():
    assert parse_action("Do not move, stop.") == Action.stop()


COMMAND_PHRASES = [
    ("move forward 25 cm", Action.forward(25)),
    ("The next action is move forward 75 cm.", Action.forward(75)),
    ("THE NEXT ACTION IS MOVE FORWARD 50 CM.", Action.forward(50)),
    ("the next action is turn right 15 degree", Action.right(15)),
    ("Turn right 30 degrees.", Action.right(30)),
    ("turn left 45 degrees", Action.left(45)),
    ("  move  forward 75cm ", Action.forward(75)),
    ("The next action is turn left 15°", Action.left(15)),
    ("turn left 30 deg", Action.left(30)),
    ("move forward 0.5 m", Action.forward(50)),
    ("move forward 0.75 meters", Action.forward(75)),
    ("move forward 75 centimeters", Action.forward(75)),
    ("The next action is move forward.", Action.forward(25)),
    ("turn left", Action.left(15)),
    ("Stop.", Action.stop()),
    ("The next action is stop.", Action.stop()),
]


@pytest.mark.parametrize(("text", "expected"), COMMAND_PHRASES)
def test_command_accepts_navila_phrases_and_their_relatives(text, expected):
    assert parse_command(text) == expected
    assert parse_action(text) == expected  # the model parser agrees on every accepted command


@pytest.mark.parametrize("action", ALL_ACTIONS, ids=lambda a: a.to_text())
def test_command_accepts_every_canonical_text_and_answer(action):
    assert parse_command(action.to_text()) == action
    assert parse_command(action.to_answer()) == action


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("dance", "no NaVILA action"),
        ("-75 cm", "no NaVILA action"),
        ("move backward 50 cm", "no NaVILA action"),
        ("move forward -75 cm", "amount -75 is negative"),
        ("move forward \u221275 cm", "is negative"),
        ("move forward nan cm", "amount 'nan' is not a finite number"),
        ("move forward inf cm", "is not a finite number"),
        ("move forward 0 cm", "amount 0 is zero"),
        ("turn left -45 degrees", "amount -45 is negative"),
        ("turn left 0 degrees", "is zero"),
        ("Do not move forward 75 cm", "negated"),
        ("don't turn left", "negated"),
        ("do not stop", "negated"),
        ("move forward 60 cm", "60 cm is not in the grammar (25, 50, 75 cm)"),
        ("turn right 90 degrees", "90 degrees is not in the grammar (15, 30, 45 degrees)"),
        ("move forward 1e2 cm", "not in the grammar"),
        ("move forward 75", "is not a length"),
        ("turn left 30 cm", "is not an angle"),
        ("move forward some cm", "must be followed by a number and its unit, or by nothing"),
        ("move forward 75 cm and turn left", "extra words after 75 cm"),
        ("turn right 30 degrees then move forward 75 cm", "extra words after 30 degrees"),
        ("I could turn left, but the next action is move forward 50 cm.", "not exactly one"),
        ("stop stop", "not exactly one"),
        ("stopped", "no NaVILA action"),
    ],
)
def test_command_rejects_everything_else_with_a_reason(text, why):
    with pytest.raises(CommandRejected, match=re.escape(why)):
        parse_command(text)


def test_command_length_is_bounded():
    text = "move forward 25 cm" + " " * MAX_COMMAND_CHARS
    with pytest.raises(CommandRejected, match=f"longer than {MAX_COMMAND_CHARS} characters"):
        parse_command(text)
    assert parse_command(text.strip()) == Action.forward(25)
