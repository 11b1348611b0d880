"""The stop-reach question: written by `nvila-sim stop-reach` from real rollouts, one record per
state whose statement says the named landmark is close ahead, answered by how far the goal
point is, on the frame of that state, read back as training samples."""

import json
import math

import pytest

from nvila_nav.sim.stop_reach_questions import STOP_REACH
from nvila_nav.stop_reach import REACH_CONFIDENCE, STOP_REACH_PROMPT, reach_answer, within_reach
from test.helpers.frame_questions import assert_cli_questions
from test.helpers.sim_rollouts import write_sim_rollouts


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    """Six perturbed tier A rollouts (one 64x48 frame per decision) written by `nvila-sim`."""
    root = tmp_path_factory.mktemp("stop_reach")
    return write_sim_rollouts(root, 6, "--perturb", "0.2", "--decision-frames", tier="A")


def test_within_reach_is_the_goal_point_at_most_1_2_m_away():
    assert reach_answer(0.0) == "Yes." and reach_answer(1.2) == "Yes."
    assert reach_answer(1.21) == "No." and reach_answer(2.0) == "No."
    assert within_reach("Yes.") and not within_reach("No.")
    assert within_reach("Yes.", REACH_CONFIDENCE) and not within_reach("Yes.", 0.6)
    assert not within_reach("No.", 0.99)
    with pytest.raises(ValueError, match="never negative"):
        reach_answer(-0.1)
    with pytest.raises(ValueError, match="not an answer"):
        within_reach("Left.")


def test_every_state_with_the_goal_close_ahead_is_a_question_on_its_frame(
    rollouts, tmp_path, capsys
):
    index = json.loads((rollouts / "index.json").read_text())
    expected = {}
    for entry in index["episodes"]:
        meta = json.loads((rollouts / entry["dir"] / "meta.json").read_text())
        gx, gy = meta["episode"]["goals"][0]["position"][:2]
        for k, action in enumerate(meta["actions"]):
            if action["statement"].split("?")[-1].strip() == "Yes.":
                x, y = action["pose"][:2]
                frame = rollouts / entry["dir"] / meta["frames"][action["frame_index"]]["file"]
                answer = "Yes." if math.hypot(x - gx, y - gy) <= 1.2 else "No."
                expected[f"data/{entry['dir']}/{k:04d}"] = ((frame.read_bytes(),), answer)
    assert {a for _, a in expected.values()} == {"Yes.", "No."}, "near and far close-ahead states"

    assert_cli_questions(
        "stop-reach",
        rollouts,
        tmp_path / "reach",
        capsys,
        "stop_reach.json",
        STOP_REACH_PROMPT,
        expected,
    )


def test_history_only_actions_are_no_questions_and_statements_are_needed():
    goal = {"episode": {"goals": [{"position": [3.0, 0.0, 0.0]}]}}
    yes = "Close ahead: the red chair. Is the red chair close ahead? Yes."
    no = "Close ahead: nothing. Is the red chair close ahead? No."
    meta = goal | {
        "actions": [
            {"text": "move forward 75 cm", "pose": [0.0, 0.0, 0.0], "statement": no},
            {"text": "move forward 75 cm", "pose": [1.0, 0.0, 0.0], "statement": yes},
            {"text": "move forward 75 cm", "pose": [1.5, 0.0, 0.0], "statement": yes,
             "context": True},
            {"text": "move forward 25 cm", "pose": [2.0, 0.0, 0.0], "statement": yes},
            {"text": "stop", "pose": [2.7, 0.0, 0.0], "statement": yes},
        ]
    }  # fmt: skip
    assert STOP_REACH.states(meta) == [(1, "No."), (3, "Yes."), (4, "Yes.")]
    unsaid = goal | {"actions": [{"text": "stop", "pose": [2.7, 0.0, 0.0]}]}
    with pytest.raises(ValueError, match="no statement"):
        STOP_REACH.states(unsaid)
