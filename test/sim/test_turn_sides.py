"""The turn questions: written from real perturbed rollouts, one record per expert turn that
follows an executed move (turn side, on the frames of the decision before and of the state) or
per expert move or turn that follows an executed turn (route ahead, on the state's frame), read
back as training samples."""

import json

import pytest

from nvila_core.train.data import read_llava_dataset
from nvila_nav.actions import Action, ActionKind, parse_action
from nvila_nav.sim import cli as sim_cli
from nvila_nav.sim.turn_sides import (
    ROUTE_AHEAD,
    TURN_SIDE,
    question_states,
    write_question_dataset,
)
from nvila_nav.turn_side import (
    ROUTE_AHEAD_PROMPT,
    TURN_SIDE_PROMPT,
    follows_move,
    follows_turn,
    is_ahead,
    route_ahead_answer,
    turn_side_answer,
    with_side,
)
from test.helpers.frame_questions import assert_cli_questions
from test.helpers.sim_rollouts import write_sim_rollouts

TURN_KINDS = (ActionKind.TURN_LEFT, ActionKind.TURN_RIGHT)


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    """Eight perturbed tier B rollouts (one 64x48 frame per decision) written by `nvila-sim`."""
    root = tmp_path_factory.mktemp("turn_sides")
    return write_sim_rollouts(root, 8, "--perturb", "0.3", "--decision-frames", tier="B")


def test_a_turn_is_a_new_decision_only_after_a_move():
    assert follows_move(["turn left 30 degrees", "move forward 25 cm"])
    assert not follows_move([])
    assert not follows_move(["move forward 75 cm", "turn right 15 degrees"])
    assert not follows_move(["stop"])
    assert turn_side_answer(Action.left(45)) == "Left."
    assert turn_side_answer(Action.right(15)) == "Right."
    assert with_side(Action.left(30), ActionKind.TURN_RIGHT) == Action.right(30)
    with pytest.raises(ValueError, match="not a turn"):
        turn_side_answer(Action.forward(75))
    with pytest.raises(ValueError, match="cannot give"):
        with_side(Action.forward(75), ActionKind.TURN_LEFT)
    with pytest.raises(ValueError, match="cannot give"):
        with_side(Action.left(15), ActionKind.STOP)


def test_turning_on_is_a_decision_only_after_a_turn():
    assert follows_turn(["move forward 75 cm", "turn right 15 degrees"])
    assert not follows_turn([])
    assert not follows_turn(["turn left 30 degrees", "move forward 25 cm"])
    assert route_ahead_answer(Action.forward(25)) == "Yes."
    assert route_ahead_answer(Action.right(45)) == "No."
    assert is_ahead("Yes.") and not is_ahead("No.")
    with pytest.raises(ValueError, match="neither a move nor a turn"):
        route_ahead_answer(Action.stop())
    with pytest.raises(ValueError, match="not an answer"):
        is_ahead("Left.")


def expected_questions(rollouts, answer_of, frames=1) -> dict[str, tuple[tuple[bytes, ...], str]]:
    """Record id -> (frames' bytes, answer) read straight from the rollouts' meta.json:
    `answer_of(label kind, previous executed kind)` gives a state's answer, or None where the
    question does not ask; a record shows the frames of the latest `frames` decisions, oldest
    first (the first decision's standing for those before it)."""
    index = json.loads((rollouts / "index.json").read_text())
    expected = {}
    for entry in index["episodes"]:
        meta = json.loads((rollouts / entry["dir"] / "meta.json").read_text())
        executed = [a.get("executed") or a["text"] for a in meta["actions"]]
        shown = [
            rollouts / entry["dir"] / meta["frames"][a["frame_index"]]["file"]
            for a in meta["actions"]
        ]
        for k, action in enumerate(meta["actions"]):
            previous = parse_action(executed[k - 1]).kind if k > 0 else None
            answer = answer_of(parse_action(action["text"]).kind, previous)
            if answer is not None:
                pixels = tuple(shown[max(i, 0)].read_bytes() for i in range(k - frames + 1, k + 1))
                expected[f"data/{entry['dir']}/{k:04d}"] = (pixels, answer)
    return expected


def test_every_turn_after_an_executed_move_is_a_question_on_its_frame(rollouts, tmp_path):
    def side(kind, previous):
        if previous is ActionKind.FORWARD and kind in TURN_KINDS:
            return "Left." if kind is ActionKind.TURN_LEFT else "Right."
        return None

    expected = expected_questions(rollouts, side, frames=2)
    assert len({a for _, a in expected.values()}) == 2, "the rollouts turn both ways after moves"
    assert all(before != now for (before, now), _ in expected.values()), "two decisions' views"

    path, counts = write_question_dataset(TURN_SIDE, [rollouts], tmp_path / "sides")
    assert path == tmp_path / "sides" / "turn_sides.json"
    records = json.loads(path.read_text())
    assert {r["id"]: r["conversations"][1]["value"] for r in records} == {
        key: answer for key, (_, answer) in expected.items()
    }
    assert counts == {
        "Left.": sum(a == "Left." for _, a in expected.values()),
        "Right.": sum(a == "Right." for _, a in expected.values()),
    }
    samples = [s for group in read_llava_dataset(path, "sides") for s in group]
    assert len(samples) == len(expected)
    for sample in samples:
        pixels, answer = expected[sample.sample_id.removeprefix("sides/")]
        assert sample.prompt == TURN_SIDE_PROMPT and sample.answer == answer
        # the view before the move, then the one the expert turned at
        assert tuple(frame.read_bytes() for frame in sample.frame_paths) == pixels


def test_history_only_actions_and_perturbed_turns_are_no_questions():
    meta = {
        "actions": [
            {"text": "move forward 75 cm"},
            {"text": "turn left 30 degrees", "context": True},
            {"text": "move forward 75 cm", "executed": "turn right 15 degrees"},
            {"text": "turn right 30 degrees"},  # after an executed turn
            {"text": "move forward 75 cm"},
            {"text": "turn right 45 degrees"},
        ]
    }
    assert question_states(meta, TURN_SIDE) == [(5, "Right.")]
    # after the context turn (1): a move; after action 2's executed turn: a turn; then a move
    assert question_states(meta, ROUTE_AHEAD) == [(2, "Yes."), (3, "No."), (4, "Yes.")]
    with pytest.raises(ValueError, match="not an action"):
        question_states({"actions": [{"text": "dance"}]}, TURN_SIDE)


def test_nvila_sim_turn_sides_writes_the_dataset(rollouts, tmp_path, capsys):
    out = tmp_path / "cli"
    assert sim_cli.main(["turn-sides", "--data", str(rollouts), "--out", str(out)]) == 0
    assert "turn_side questions" in capsys.readouterr().out
    assert json.loads((out / "turn_sides.json").read_text())
    with pytest.raises(ValueError, match="distinct folder names"):
        write_question_dataset(TURN_SIDE, [rollouts, rollouts], tmp_path / "twice")


def test_every_action_after_an_executed_turn_is_a_route_ahead_question(rollouts, tmp_path, capsys):
    def ahead(kind, previous):
        if previous in TURN_KINDS and kind is not ActionKind.STOP:
            return "Yes." if kind is ActionKind.FORWARD else "No."
        return None

    expected = expected_questions(rollouts, ahead)
    assert len({a for _, a in expected.values()}) == 2, "the rollouts move and turn after turns"

    assert_cli_questions(
        "route-ahead",
        rollouts,
        tmp_path / "ahead",
        capsys,
        "route_ahead.json",
        ROUTE_AHEAD_PROMPT,
        expected,
    )
