"""Contrast episodes: real expert rollouts, another landmark named, the states near the goal
relabelled by the expert for it, everything before kept as history."""

import json
import math

import numpy as np
import pytest

from nvila_core.train.data import DataError, read_episodes
from nvila_nav.actions import parse_action
from nvila_nav.sim import cli as sim_cli
from nvila_nav.sim.captions import goal_phrase, readout_answer
from nvila_nav.sim.contrast import contrast_meta, pick_other
from nvila_nav.sim.dataset import load_dataset
from nvila_nav.sim.episodes import Episode
from nvila_nav.sim.expert import Expert
from nvila_nav.sim.furniture import KINDS
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.sight import CLOSE_AHEAD, landmarks_in_view
from nvila_nav.sim.world import world_for_scene
from test.helpers.sim_rollouts import write_sim_rollouts


@pytest.fixture(scope="module")
def rollout(tmp_path_factory):
    """Four tier A expert rollouts, one 64x48 frame per decision, written by `nvila-sim`."""
    return write_sim_rollouts(tmp_path_factory.mktemp("contrast"), 4, "--decision-frames", tier="A")


def _metas(root):
    index = json.loads((root / "index.json").read_text())
    return [json.loads((root / e["dir"] / "meta.json").read_text()) for e in index["episodes"]]


def test_goal_phrase_is_the_last_naming_of_the_goal():
    world = world_for_scene("nvsim/scene_0003")
    goal = world.landmarks[0]
    noun = max(KINDS[goal.kind].nouns, key=len)
    named = f"the {goal.colour} {noun}"
    text = f"Walk past {named}, turn left, then stop next to {named}."
    found = goal_phrase(text, goal)
    assert found is not None and found.end() == len(text) - 1
    assert goal_phrase("Stop next to the door.", goal) is None


def test_other_landmark_is_never_the_goal_and_often_shares_a_word():
    world = world_for_scene("nvsim/scene_0003")
    goal = world.landmarks[0]
    picks = [pick_other(world, goal, np.random.default_rng(s)) for s in range(200)]
    assert all(p is not None and p.name != goal.name for p in picks)
    hard = [p.kind == goal.kind or p.colour == goal.colour for p in picks]
    if any(lm.kind == goal.kind or lm.colour == goal.colour for lm in world.landmarks[1:]):
        assert sum(hard) >= 80  # half of the draws go to the hard pool when there is one


def test_states_near_the_goal_are_relabelled_for_the_other_landmark(rollout):
    radius = 1.0
    checked = 0
    for k, meta in enumerate(_metas(rollout)):
        world = world_for_scene(meta["episode"]["scene_id"])
        contrast = contrast_meta(meta, world, np.random.default_rng(k), radius)
        if contrast is None:
            continue
        checked += 1
        original = Episode.from_dict(meta["episode"])
        other = world.landmark(contrast["episode"]["info"]["goal_landmark"])
        assert other.name != original.info["goal_landmark"]
        # only the stop clause's name changed
        named = goal_phrase(meta["instruction"], world.landmark(original.info["goal_landmark"]))
        assert contrast["instruction"].startswith(meta["instruction"][: named.start()])
        assert contrast["instruction"].endswith(meta["instruction"][named.end() :])
        assert other.colour in contrast["instruction"][named.start() :]
        assert contrast["episode"]["goals"][0]["position"][:2] == list(other.approach)
        # what was driven is unchanged: the frames still show the same run
        driven = [parse_action(a.get("executed") or a["text"]) for a in contrast["actions"]]
        assert driven == [parse_action(a.get("executed") or a["text"]) for a in meta["actions"]]
        expert = Expert(world, Episode.from_dict(contrast["episode"]))
        gx, gy = original.goal.position[:2]
        for a, before in zip(contrast["actions"], meta["actions"], strict=True):
            near = math.hypot(a["pose"][0] - gx, a["pose"][1] - gy) <= radius
            assert a.get("context", False) is (not near)
            if near:
                assert parse_action(a["text"]) == expert.next_action(Pose(*a["pose"]))
            else:
                assert a["text"] == before["text"]
        # the original stop, seen with the other name, is not a stop (the other goal is far)
        if math.dist(contrast["actions"][-1]["pose"][:2], other.approach) > 0.5:
            assert contrast["actions"][-1]["text"] != "stop"
        assert meta["actions"][-1]["text"] == "stop"
        assert contrast["result"]["success"] is False
        # the statements ask about the landmark now named: at the original stop, "No."
        assert goal_phrase(contrast["instruction"], other) is not None
        asked = "the " + readout_answer(other).removeprefix("The ").removesuffix(".")
        assert all(f"Is {asked} close ahead?" in a["statement"] for a in contrast["actions"])
        assert meta["actions"][-1]["statement"].endswith("Yes.")
        end = Pose(*contrast["actions"][-1]["pose"])
        close = [n for d, n, _ in landmarks_in_view(world, end, 79.0) if d <= CLOSE_AHEAD]
        assert contrast["actions"][-1]["statement"].endswith(
            "Yes." if other.name in close else "No."
        )
    assert checked >= 3


def test_written_contrast_dataset_trains_only_on_relabelled_states(rollout, tmp_path):
    out = tmp_path / "contrast"
    args = ["contrast", "--data", str(rollout), "--out", str(out), "--radius", "1.0"]
    assert sim_cli.main(args) == 0
    metas = _metas(out)
    assert metas
    index = json.loads((out / "index.json").read_text())
    index_entries = {e["episode_id"]: e for e in index["episodes"]}
    episodes = read_episodes(out, "contrast", num_frames=5, history="recent")
    for meta, samples in zip(metas, episodes, strict=True):
        kept = [k for k, a in enumerate(meta["actions"]) if not a.get("context", False)]
        assert index_entries[meta["episode"]["episode_id"]]["num_samples"] == len(kept)
        assert [int(s.sample_id.rsplit("/", 1)[1]) for s in samples] == kept
        for k, sample in zip(kept, samples, strict=True):
            # context actions still make up the history: previous actions and frames
            executed = [a.get("executed") or a["text"] for a in meta["actions"][:k]]
            assert list(sample.previous_actions) == executed
            assert parse_action(sample.answer) == parse_action(meta["actions"][k]["text"])
            assert sample.frame_paths[-1].name == f"{meta['actions'][k]['frame_index']:06d}.jpg"
            assert sample.frame_paths[0].name == "000000.jpg"
    for frame in out.rglob("*.jpg"):
        assert frame.stat().st_size > 0
    # the simulator's own reader agrees
    assert len(load_dataset(out).samples()) == sum(len(samples) for samples in episodes)


def test_context_must_be_a_boolean(rollout, tmp_path):
    meta = _metas(rollout)[0]
    index = json.loads((rollout / "index.json").read_text())
    folder = tmp_path / "data" / index["episodes"][0]["dir"]
    folder.mkdir(parents=True)
    meta["actions"][0]["context"] = "yes"
    (folder / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "data" / "index.json").write_text(
        json.dumps(index | {"episodes": index["episodes"][:1]})
    )
    with pytest.raises(DataError, match="context"):
        read_episodes(tmp_path / "data", "bad", num_frames=5, history="recent")
