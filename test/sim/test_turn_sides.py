"""The turn-side question: written from real perturbed rollouts, one record per expert turn that
follows an executed move, on the frame the expert turned at, read back as training samples."""

import json

import pytest

from nvila_core.train.data import read_llava_dataset
from nvila_nav.actions import Action, ActionKind, parse_action
from nvila_nav.sim import cli as sim_cli
from nvila_nav.sim.turn_sides import TURN_SIDES_FILE, turn_states, write_turn_side_dataset
from nvila_nav.turn_side import (
    TURN_SIDE_PROMPT,
    follows_move,
    turn_side_answer,
    with_side,
)
from test.helpers.sim_rollouts import write_sim_rollouts


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


def test_every_turn_after_an_executed_move_is_a_question_on_its_frame(rollouts, tmp_path):
    index = json.loads((rollouts / "index.json").read_text())
    expected = {}
    for entry in index["episodes"]:
        meta = json.loads((rollouts / entry["dir"] / "meta.json").read_text())
        executed = [a.get("executed") or a["text"] for a in meta["actions"]]
        for k, action in enumerate(meta["actions"]):
            label = parse_action(action["text"])
            after_move = k > 0 and parse_action(executed[k - 1]).kind is ActionKind.FORWARD
            if label.kind in (ActionKind.TURN_LEFT, ActionKind.TURN_RIGHT) and after_move:
                frame = rollouts / entry["dir"] / meta["frames"][action["frame_index"]]["file"]
                answer = "Left." if label.kind is ActionKind.TURN_LEFT else "Right."
                expected[f"data/{entry['dir']}/{k:04d}"] = (frame.read_bytes(), answer)
    assert len({a for _, a in expected.values()}) == 2, "the rollouts turn both ways after moves"

    path, counts = write_turn_side_dataset([rollouts], tmp_path / "sides")
    assert path == tmp_path / "sides" / TURN_SIDES_FILE
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
        (frame,) = sample.frame_paths
        assert frame.read_bytes() == pixels  # the frame the expert turned at


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
    assert turn_states(meta) == [(5, "Right.")]
    with pytest.raises(ValueError, match="not an action"):
        turn_states({"actions": [{"text": "dance"}]})


def test_nvila_sim_turn_sides_writes_the_dataset(rollouts, tmp_path, capsys):
    out = tmp_path / "cli"
    assert sim_cli.main(["turn-sides", "--data", str(rollouts), "--out", str(out)]) == 0
    assert "turn-side questions" in capsys.readouterr().out
    assert json.loads((out / TURN_SIDES_FILE).read_text())
    with pytest.raises(ValueError, match="distinct folder names"):
        write_turn_side_dataset([rollouts, rollouts], tmp_path / "twice")
