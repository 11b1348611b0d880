"""The close-side question: written by `nvila-sim close-side` from real rollouts, one record per
state whose statement names a landmark close ahead, answered by where that landmark's centre is
in the view, on the frame of that state, read back as training samples."""

import json
import math

import pytest

from nvila_nav.doorway import CLOSE_SIDE_PROMPT
from nvila_nav.sim.close_side_questions import CLOSE_SIDE
from nvila_nav.sim.furniture import KINDS
from nvila_nav.sim.sight import CAMERA_FORWARD
from nvila_nav.sim.world import scene_id, world_for_scene
from test.helpers.frame_questions import assert_cli_questions
from test.helpers.sim_rollouts import write_sim_rollouts


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    """Six perturbed tier A rollouts (one 64x48 frame per decision) written by `nvila-sim`."""
    root = tmp_path_factory.mktemp("close_side")
    return write_sim_rollouts(root, 6, "--perturb", "0.2", "--decision-frames", tier="A")


def test_every_state_with_a_landmark_close_ahead_is_a_question_on_its_frame(
    rollouts, tmp_path, capsys
):
    """The answers are recomputed here from the statement's words and the pose by hand: the
    landmark of that colour and noun, its bearing from the camera, 15 degrees either side."""
    index = json.loads((rollouts / "index.json").read_text())
    expected = {}
    for entry in index["episodes"]:
        meta = json.loads((rollouts / entry["dir"] / "meta.json").read_text())
        world = world_for_scene(meta["episode"]["scene_id"])
        for k, action in enumerate(meta["actions"]):
            said = action["statement"].split(". Is ")[0].removeprefix("Close ahead: ")
            if said == "nothing":
                continue
            colour, noun = said.removeprefix("the ").split(" ", 1)
            (landmark,) = [
                lm
                for lm in world.landmarks
                if lm.colour == colour and KINDS[lm.kind].nouns[0] == noun
            ]
            x, y, yaw = action["pose"][:3]
            cx, cy = x + CAMERA_FORWARD * math.cos(yaw), y + CAMERA_FORWARD * math.sin(yaw)
            bearing = math.degrees(math.atan2(landmark.y - cy, landmark.x - cx) - yaw)
            bearing = (bearing + 180.0) % 360.0 - 180.0
            answer = "Ahead." if abs(bearing) < 15 else ("Left." if bearing > 0 else "Right.")
            frame = rollouts / entry["dir"] / meta["frames"][action["frame_index"]]["file"]
            expected[f"data/{entry['dir']}/{k:04d}"] = ((frame.read_bytes(),), answer)
    assert {a for _, a in expected.values()} == {"Left.", "Ahead.", "Right."}

    assert_cli_questions(
        "close-side",
        rollouts,
        tmp_path / "close_side",
        capsys,
        "close_side.json",
        CLOSE_SIDE_PROMPT,
        expected,
    )


def test_history_only_actions_are_no_questions_and_statements_are_needed():
    world = world_for_scene(scene_id(0))
    door = next(lm for lm in world.landmarks if lm.kind == "door")
    said = f"Close ahead: the {door.colour} door. Is the red chair close ahead? No."
    nothing = "Close ahead: nothing. Is the red chair close ahead? No."
    # facing the door's centre from 1 m along each axis: ahead; then with it 90 degrees left
    x, y = door.x - 1.0 - CAMERA_FORWARD, door.y
    meta = {
        "episode": {"scene_id": scene_id(0)},
        "actions": [
            {"text": "move forward 75 cm", "pose": [x, y, 0.0], "statement": nothing},
            {"text": "move forward 75 cm", "pose": [x, y, 0.0], "statement": said},
            {"text": "turn left 15 degrees", "pose": [x, y, 0.0], "statement": said,
             "context": True},
            {"text": "turn left 15 degrees", "pose": [x, y, -math.pi / 2], "statement": said},
            {"text": "turn left 15 degrees", "pose": [x, y, math.pi / 2], "statement": said},
        ],
    }  # fmt: skip
    assert CLOSE_SIDE.states(meta) == [(1, "Ahead."), (3, "Left."), (4, "Right.")]
    with pytest.raises(ValueError, match="no statement"):
        CLOSE_SIDE.states(meta | {"actions": [{"text": "stop", "pose": [x, y, 0.0]}]})
    unknown = said.replace(door.colour, "nonexistent")
    with pytest.raises(ValueError, match="lacks"):
        CLOSE_SIDE.states(meta | {"actions": [{"text": "stop", "pose": [x, y, 0.0],
                                               "statement": unknown}]})  # fmt: skip
