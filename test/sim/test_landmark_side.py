"""The landmark-side question: written by `nvila-sim landmark-side` from real rollouts, at every
state one record per landmark in view and two about landmarks that are not (one of them like
one in view, where the scene has such a one), answered by where
the landmark's centre is, on the frame of that state; read back as a named head's data."""

import json
import math

import pytest

from nvila_core.train.frame_heads import read_head_questions
from nvila_nav.landmark_side import LANDMARK_SIDE_PROMPT, NOT_IN_VIEW
from nvila_nav.sim import cli as sim_cli
from nvila_nav.sim.furniture import KINDS
from nvila_nav.sim.landmark_side_questions import LANDMARK_SIDE
from nvila_nav.sim.sight import CAMERA_FORWARD
from nvila_nav.sim.world import scene_id, world_for_scene
from test.helpers.sim_rollouts import write_sim_rollouts


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    """Six perturbed tier A rollouts (one 64x48 frame per decision) written by `nvila-sim`."""
    root = tmp_path_factory.mktemp("landmark_side")
    return write_sim_rollouts(root, 6, "--perturb", "0.2", "--decision-frames", tier="A")


def _by_hand(world, pose, hfov_deg):
    """{statement words: answer} of every landmark in view at `pose`, from the geometry: centre
    within hfov/2 of the camera's heading, footprint within 8 m, no wall on the line to it."""
    x, y, yaw = pose
    cx, cy = x + CAMERA_FORWARD * math.cos(yaw), y + CAMERA_FORWARD * math.sin(yaw)
    seen = {}
    for lm in world.landmarks:
        bearing = math.degrees(math.atan2(lm.y - cy, lm.x - cx) - yaw)
        bearing = (bearing + 180.0) % 360.0 - 180.0
        near = lm.footprint.distance_to(cx, cy) <= 8.0
        if abs(bearing) <= hfov_deg / 2 and near and world.nav.visible((cx, cy), (lm.x, lm.y)):
            words = f"the {lm.colour} {KINDS[lm.kind].nouns[0]}"
            seen[words] = "Ahead." if abs(bearing) < 15 else ("Left." if bearing > 0 else "Right.")
    return seen


def test_every_landmark_in_view_and_two_out_of_view_are_asked_about_at_every_state(
    rollouts, tmp_path, capsys
):
    out = tmp_path / "landmark_side"
    assert sim_cli.main(["landmark-side", "--data", str(rollouts), "--out", str(out)]) == 0
    assert "landmark_side questions" in capsys.readouterr().out
    records = json.loads((out / "landmark_side.json").read_text())
    template, frames, answers, names = read_head_questions(out / "landmark_side.json")
    assert template == LANDMARK_SIDE_PROMPT and len(frames) == len(records) == len(names)
    asked: dict[str, dict[str, str]] = {}
    for record, shown, answer, name in zip(records, frames, answers, names, strict=True):
        state = record["id"].rsplit("/", 1)[0]
        assert record["id"] == f"{state}/{name}" and name not in asked.get(state, {})
        asked.setdefault(state, {})[name] = answer
        _, episode, k = state.split("/")
        meta = json.loads((rollouts / episode / "meta.json").read_text())
        frame = rollouts / episode / meta["frames"][meta["actions"][int(k)]["frame_index"]]["file"]
        assert shown[0].read_bytes() == frame.read_bytes()
    states = 0
    for entry in json.loads((rollouts / "index.json").read_text())["episodes"]:
        meta = json.loads((rollouts / entry["dir"] / "meta.json").read_text())
        world = world_for_scene(meta["episode"]["scene_id"])
        for k, action in enumerate(meta["actions"]):
            said = asked[f"{rollouts.name}/{entry['dir']}/{k:04d}"]
            seen = _by_hand(world, action["pose"], meta["camera"]["hfov_deg"])
            out_of_view = {name for name, answer in said.items() if answer == NOT_IN_VIEW}
            assert {n: a for n, a in said.items() if a != NOT_IN_VIEW} == seen
            words = {f"the {lm.colour} {KINDS[lm.kind].nouns[0]}": lm for lm in world.landmarks}
            in_view = [words[name] for name in seen]
            alike = {
                name
                for name, lm in words.items()
                if name not in seen
                and any(lm.colour == s.colour or lm.kind == s.kind for s in in_view)
            }
            unseen = len(words) - len(seen)
            assert len(out_of_view) == min(unseen, 2 if alike else 1)
            assert not out_of_view & set(seen) and (not alike or out_of_view & alike)
            states += 1
    assert states == len(asked)
    assert set(answers) == {"Left.", "Ahead.", "Right.", NOT_IN_VIEW}


def test_history_only_actions_are_not_asked_about_and_the_draw_is_repeatable():
    world = world_for_scene(scene_id(0))
    door = next(lm for lm in world.landmarks if lm.kind == "door")
    x, y = door.x - 1.0 - CAMERA_FORWARD, door.y
    meta = {
        "episode": {"scene_id": scene_id(0), "episode_id": "e"},
        "camera": {"hfov_deg": 79.0},
        "actions": [
            {"text": "move forward 75 cm", "pose": [x, y, 0.0], "context": True},
            {"text": "move forward 75 cm", "pose": [x, y, 0.0]},
            {"text": "turn left 15 degrees", "pose": [x, y, -math.radians(25)]},
        ],
    }
    states = LANDMARK_SIDE.states(meta)
    assert {k for k, *_ in states} == {1, 2}
    assert (1, "Ahead.", f"the {door.colour} door") in states
    assert (2, "Left.", f"the {door.colour} door") in states
    assert LANDMARK_SIDE.states(meta) == states
