"""The doorway an instruction says to go through: which doorways it names, the close-side
answers, and which decisions the named doorway close ahead steers (`DoorwayGuide`)."""

import math

import pytest

from nvila_nav.actions import Action, ActionKind
from nvila_nav.doorway import (
    DOORWAY_STEPS,
    DoorwayGuide,
    close_side_answer,
    doorway_colour,
    doorways_to_pass,
    side_of_close,
    toward_doorway,
)
from nvila_nav.sim.episodes import generate_episode
from nvila_nav.sim.world import world_for_scene

MOVE = "move forward 75 cm"
TURN = "turn left 45 degrees"


def test_the_doorways_an_instruction_says_to_go_through_in_order():
    said = (
        "Pass through the blue doorway into the hallway, walk past the red door, then go "
        "through the Green door and walk through the blue door again. Stop at the red chair."
    )
    assert doorways_to_pass(said) == ["blue", "green"]
    assert doorways_to_pass("Walk through the door into the office, then stop.") == []
    assert doorways_to_pass("Turn left at the yellow door and stop by the sofa.") == []
    assert doorways_to_pass("Go through the doorways") == []


def test_every_framed_doorway_of_generated_routes_is_read_by_its_colour():
    """On generated val_unseen episodes of every tier, every colour read is a door frame of the
    scene, and doorways are read in many of them."""
    read = 0
    for tier, seed in (("A", 7), ("B", 7), ("C", 7)):
        for index in range(40):
            episode = generate_episode("val_unseen", index, seed=seed, tier=tier)
            doors = {
                lm.colour for lm in world_for_scene(episode.scene_id).landmarks if lm.kind == "door"
            }
            colours = doorways_to_pass(episode.instruction_text)
            assert set(colours) <= doors, episode.instruction_text
            read += bool(colours)
    assert read >= 20


def test_what_the_statement_names_is_a_doorway_by_its_colour():
    assert doorway_colour("the blue door") == "blue"
    assert doorway_colour("the Red door") == "red"
    for other in ("the blue chair", "nothing", None, "the blue doorway shelf"):
        assert doorway_colour(other) is None


def test_close_side_answers_by_the_bearing_and_back():
    assert close_side_answer(0.0) == "Ahead."
    assert close_side_answer(math.radians(14.9)) == "Ahead."
    assert close_side_answer(math.radians(15.1)) == "Left."
    assert close_side_answer(math.radians(-40.0)) == "Right."
    assert side_of_close("Left.") is ActionKind.TURN_LEFT
    assert side_of_close("Right.") is ActionKind.TURN_RIGHT
    assert side_of_close("Ahead.") is None
    with pytest.raises(ValueError, match="not an answer"):
        side_of_close("Yes.")
    assert toward_doorway(None) == Action.forward(75)
    assert toward_doorway(ActionKind.TURN_LEFT) == Action.left(15)


def test_the_named_doorway_close_ahead_steers_until_it_is_gone_through():
    instruction = "Go through the blue doorway, then through the green door. Stop at the sofa."
    guide = DoorwayGuide()
    assert guide.doorway(instruction, "the red door", ()) is None  # not named
    assert guide.doorway(instruction, "nothing", ()) is None
    assert guide.doorway(instruction, "the green door", (TURN,)) == "green"
    assert guide.doorway(instruction, "the blue door", (TURN,)) == "blue"
    # steered toward, moved, and the statement no longer names it: it is behind the robot
    assert guide.doorway(instruction, "the blue door", (TURN, MOVE)) == "blue"
    assert guide.doorway(instruction, None, (TURN, MOVE, MOVE)) is None
    assert guide.doorway(instruction, "the blue door", (TURN, MOVE, MOVE, TURN)) is None
    assert guide.doorway(instruction, "the green door", (TURN,) * 5) == "green"
    guide.reset()
    assert guide.doorway(instruction, "the blue door", ()) == "blue"


def test_a_doorway_out_of_sight_after_a_turn_is_not_gone_through():
    instruction = "Walk through the blue door and stop by the bed."
    guide = DoorwayGuide()
    assert guide.doorway(instruction, "the blue door", ()) == "blue"
    assert guide.doorway(instruction, None, (TURN,)) is None
    assert guide.doorway(instruction, "the blue door", (TURN, TURN)) == "blue"


def test_a_doorway_steers_a_bounded_number_of_decisions_and_waits_for_the_opening_turn():
    instruction = "Turn left and pass through the blue doorway. Stop by the bed."
    guide = DoorwayGuide()
    assert guide.doorway(instruction, "the blue door", (), opening_turn_done=False) is None
    steered = [guide.doorway(instruction, "the blue door", (TURN,)) for _ in range(20)]
    assert steered == ["blue"] * DOORWAY_STEPS + [None] * (20 - DOORWAY_STEPS)
    with pytest.raises(ValueError, match="must be actions"):
        guide.doorway(instruction, "the blue door", ("fly",))
