"""Dataset write → read round trip."""

import json

import numpy as np
import pytest

from nvila_core.model.prompting import names_verdict
from nvila_nav.actions import parse_action
from nvila_nav.sim import cli
from nvila_nav.sim.captions import goal_phrase, readout_answer, stop_statement
from nvila_nav.sim.dataset import add_statements, load_dataset, write_episode, write_index
from nvila_nav.sim.env import RenderingUnavailable, Simulator
from nvila_nav.sim.episodes import generate_episodes
from nvila_nav.sim.expert import run_expert
from nvila_nav.sim.robot import CameraConfig
from nvila_nav.sim.world import world_for_scene

CAMERA = CameraConfig(width=64, height=48)


@pytest.fixture(scope="module")
def runs():
    episodes = generate_episodes("val_seen", 2, seed=5)
    with Simulator(CAMERA) as sim:
        try:
            return [run_expert(sim, e, render=True) for e in episodes]
        except RenderingUnavailable as exc:
            pytest.skip(str(exc))


@pytest.mark.parametrize("image_format", ["jpg", "png"])
def test_dataset_round_trip(tmp_path, runs, image_format):
    entries = [write_episode(tmp_path, run, CAMERA, image_format=image_format) for run in runs]
    write_index(tmp_path, entries, 2.0, CAMERA)
    data = load_dataset(tmp_path)
    assert data.frame_hz == 2.0 and data.camera["width"] == 64
    assert len(data.episodes) == len(runs)
    for run, ep in zip(runs, data.episodes, strict=True):
        assert ep.episode == run.episode
        assert ep.success == run.success is True
        assert [a.action for a in ep.actions] == [a.action for a in run.actions]
        assert [a.t for a in ep.actions] == [a.t for a in run.actions]
        assert [a.frame_index for a in ep.actions] == [a.frame_index for a in run.actions]
        assert [f.t for f in ep.frames] == run.frame_times
        assert ep.trajectory.shape == (len(run.trajectory), 4)
        first, last = ep.image(0), ep.image(len(ep.frames) - 1)
        assert first.shape == (48, 64, 3) and first.dtype == np.uint8
        if image_format == "png":  # lossless
            assert np.array_equal(last, run.frames[-1])
        else:
            assert np.abs(last.astype(int) - run.frames[-1]).mean() < 12
    samples = data.samples()
    assert len(samples) == sum(len(r.actions) for r in runs)
    for s in samples:
        assert parse_action(s.answer) is not None and s.answer.startswith("The next action is ")
        assert all(p.is_file() for p in s.frames)
    assert samples[-1].answer == "The next action is stop."


def test_only_json_and_images_are_written(tmp_path, runs):
    entries = [write_episode(tmp_path, runs[0], CAMERA)]
    write_index(tmp_path, entries, 2.0, CAMERA)
    suffixes = {p.suffix for p in tmp_path.rglob("*") if p.is_file()}
    assert suffixes == {".json", ".jpg"}
    meta = json.loads((tmp_path / entries[0]["dir"] / "meta.json").read_text())
    assert meta["actions"][0]["text"] == runs[0].actions[0].action.to_text()


def test_actions_record_the_statement_at_their_pose(tmp_path, runs, capsys):
    entries = [write_episode(tmp_path, run, CAMERA) for run in runs]
    write_index(tmp_path, entries, 2.0, CAMERA)
    paths = [tmp_path / e["dir"] / "meta.json" for e in entries]
    written = [json.loads(p.read_text()) for p in paths]
    for run, meta in zip(runs, written, strict=True):
        world = world_for_scene(run.episode.scene_id)
        goal = world.landmark(run.episode.info["goal_landmark"])
        assert goal_phrase(run.episode.instruction_text, goal) is not None
        said = [a["statement"] for a in meta["actions"]]
        assert said == [stop_statement(world, a.pose, CAMERA.hfov_deg, goal) for a in run.actions]
        # the expert stops at its goal landmark, which is then close ahead; the question names it
        # in the readout's words ("the blue potted plant"), whichever noun the instruction used
        asked = "the " + readout_answer(goal).removeprefix("The ").removesuffix(".")
        assert said[-1].endswith(f"Is {asked} close ahead? Yes.")
        assert said[0].endswith("No.")
        assert all(names_verdict(s) == s for s in said)  # the verdict the engine gives agrees
    # a dataset written before rollouts recorded them gets the same values, in place
    for path in paths:
        meta = json.loads(path.read_text())
        for action in meta["actions"]:
            del action["statement"]
        path.write_text(json.dumps(meta))
    assert cli.main(["statements", "--data", str(tmp_path)]) == 0
    assert f"of {sum(len(r.actions) for r in runs)} actions" in capsys.readouterr().out
    assert [json.loads(p.read_text()) for p in paths] == written
    with pytest.raises(ValueError, match=r"nvila_nav\.sim\.dataset"):
        add_statements(tmp_path / entries[0]["dir"])


def test_loader_rejects_foreign_directories(tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match=r"nvila_nav\.sim\.dataset"):
        load_dataset(tmp_path)
