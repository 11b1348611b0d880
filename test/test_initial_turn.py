"""The initial turn an instruction states: parsed from the simulator's own instructions, and the
bounds it puts on the robot's first turn."""

import pytest

from nvila_nav.actions import Action, ActionKind
from nvila_nav.initial_turn import StatedTurn, bound_initial_turn, stated_initial_turn
from nvila_nav.sim.episodes import generate_episodes

LEFT, RIGHT = ActionKind.TURN_LEFT, ActionKind.TURN_RIGHT


@pytest.mark.parametrize("tier", ["A", "C"])
def test_every_initial_turn_the_simulator_states_is_read_with_its_side_and_size(tier):
    episodes = generate_episodes("val_unseen", 60, seed=3, tier=tier)
    stated_turns = 0
    for episode in episodes:
        degrees = episode.info.get("initial_turn_deg", 0.0)
        stated = stated_initial_turn(episode.instruction_text)
        if degrees == 0.0:
            # no turn stated: the opening words are no initial turn either
            assert stated is None, episode.instruction_text
            continue
        stated_turns += 1
        assert stated is not None, episode.instruction_text
        assert stated.side is (LEFT if degrees > 0 else RIGHT), episode.instruction_text
        # the expert turns on a 15-degree lattice: within half a step of the range
        assert stated.min_deg - 7.5 <= abs(degrees) <= stated.max_deg + 7.5, (
            episode.instruction_text
        )
    assert stated_turns >= 40


def test_the_opening_words_alone_state_the_initial_turn():
    assert stated_initial_turn("Turn around to your left. Stop at the sofa.") == StatedTurn(
        LEFT, 135, 195
    )
    assert stated_initial_turn("turn around and walk to the door") == StatedTurn(None, 135, 195)
    assert stated_initial_turn("Make a U-turn, then stop.") == StatedTurn(None, 135, 195)
    assert stated_initial_turn("Face right, then go through the door.") == StatedTurn(
        RIGHT, 45, 135
    )
    assert stated_initial_turn("Turn left and then stop.") == StatedTurn(LEFT, 45, 135)
    assert stated_initial_turn("Bear right. Stop at the table.") == StatedTurn(RIGHT, 15, 45)
    assert stated_initial_turn("Turn a little to the left") == StatedTurn(LEFT, 15, 45)
    # phrasings people use that the simulator's instructions do not
    assert stated_initial_turn("Turn slightly to your left and walk to the table.") == StatedTurn(
        LEFT, 15, 45
    )
    assert stated_initial_turn("Veer to the right, then stop.") == StatedTurn(RIGHT, 15, 45)
    assert stated_initial_turn("Turn around and walk out of the room.") == StatedTurn(
        None, 135, 195
    )
    assert stated_initial_turn("  face to the left; stop at the bed") == StatedTurn(LEFT, 45, 135)
    assert stated_initial_turn("Turn left 90 degrees and stop.") is None  # an angle: not read
    # a later turn, not the initial one; or no turn at all
    assert stated_initial_turn("Turn left at the sofa and stop.") is None
    assert stated_initial_turn("Walk past the sofa, then turn left.") is None
    assert stated_initial_turn("Turn leftwards") is None
    assert stated_initial_turn("") is None


AROUND_LEFT = StatedTurn(LEFT, 135, 195)


def test_short_of_the_stated_range_the_robot_turns_to_the_stated_side():
    assert bound_initial_turn(AROUND_LEFT, [], Action.forward(75)) == Action.left(45)
    assert bound_initial_turn(AROUND_LEFT, [], Action.stop()) == Action.left(45)
    assert bound_initial_turn(AROUND_LEFT, [], Action.right(30)) == Action.left(30)
    turned = ["turn left 45 degrees", "turn left 45 degrees"]
    # 45 degrees to go: a 45-degree step; 15 to go: a 15-degree step
    assert bound_initial_turn(AROUND_LEFT, turned, Action.forward(50)) == Action.left(45)
    turned.append("turn left 30 degrees")
    assert bound_initial_turn(AROUND_LEFT, turned, Action.forward(50)) == Action.left(15)
    # a turn to the other side counts back
    assert bound_initial_turn(
        StatedTurn(RIGHT, 45, 135), ["turn left 45 degrees"], Action.forward(25)
    ) == Action.right(45)


def test_within_the_stated_range_the_model_decides_and_past_it_the_robot_moves_on():
    turned = ["turn left 45 degrees"] * 3  # 135: the range of "turn around" begins
    assert bound_initial_turn(AROUND_LEFT, turned, Action.forward(25)) == Action.forward(25)
    assert bound_initial_turn(AROUND_LEFT, turned, Action.stop()) == Action.stop()
    assert bound_initial_turn(AROUND_LEFT, turned, Action.left(30)) == Action.left(30)
    assert bound_initial_turn(AROUND_LEFT, turned, Action.right(15)) == Action.left(15)
    near_end = [*turned, "turn left 45 degrees"]  # 180: 15 left to the range's end
    assert bound_initial_turn(AROUND_LEFT, near_end, Action.left(45)) == Action.left(15)
    at_end = [*near_end, "turn left 15 degrees"]
    assert bound_initial_turn(AROUND_LEFT, at_end, Action.left(45)) == Action.forward(75)
    # after the first move the model decides alone
    moved = [*turned, "move forward 75 cm"]
    assert bound_initial_turn(AROUND_LEFT, moved, Action.right(45)) == Action.right(45)
    assert (
        bound_initial_turn(StatedTurn(RIGHT, 15, 45), ["move forward 25 cm"], Action.stop())
        == Action.stop()
    )


def test_a_side_the_instruction_leaves_open_is_the_side_of_the_first_turn():
    around = StatedTurn(None, 135, 195)
    assert bound_initial_turn(around, [], Action.right(45)) == Action.right(45)
    assert bound_initial_turn(around, [], Action.forward(75)) == Action.left(45)
    assert bound_initial_turn(around, ["turn right 45 degrees"], Action.left(30)) == Action.right(
        30
    )
    with pytest.raises(ValueError, match="previous actions"):
        bound_initial_turn(around, ["dance"], Action.left(30))
