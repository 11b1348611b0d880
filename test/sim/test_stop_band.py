"""The expert's stop band: real rollouts with it stop where the named landmark is close ahead
near the goal, and rollouts without it ended there (`nvila-sim stop-band`) are the same data."""

import json
import math

import numpy as np
import pytest

from nvila_nav.sim import cli as sim_cli
from nvila_nav.sim.contrast import contrast_meta
from nvila_nav.sim.episodes import Episode
from nvila_nav.sim.expert import Expert
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.sight import landmarks_close_ahead
from nvila_nav.sim.stop_band import write_stop_band_dataset
from nvila_nav.sim.world import world_for_scene

BAND = 1.2
HFOV = 79.0


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    """Six perturbed tier A rollouts (one 64x48 frame per decision) written by `nvila-sim`,
    without and with a stop band, same episodes and seed."""
    root = tmp_path_factory.mktemp("stop_band")
    episodes = root / "eps.json.gz"
    args = ["episodes", "--split", "train", "--tier", "A", "--n", "6", "--out", str(episodes)]
    assert sim_cli.main(args) == 0
    out = {}
    for name, extra in (("plain", []), ("banded", ["--stop-band", str(BAND)])):
        out[name] = root / name
        args = ["rollout", "--episodes", str(episodes), "--out", str(out[name]), "--perturb", "0.2"]
        args += ["--decision-frames", "--width", "64", "--height", "48", *extra]
        assert sim_cli.main(args) == 0
    return out


def _metas(root):
    index = json.loads((root / "index.json").read_text())
    return [json.loads((root / e["dir"] / "meta.json").read_text()) for e in index["episodes"]]


def _in_band(meta, pose):
    episode = Episode.from_dict(meta["episode"])
    gx, gy = episode.goal.position[:2]
    world = world_for_scene(episode.scene_id)
    near = math.hypot(pose[0] - gx, pose[1] - gy) <= BAND
    return near and episode.info["goal_landmark"] in landmarks_close_ahead(world, Pose(*pose), HFOV)


def test_banded_expert_stops_at_the_first_state_where_the_goal_is_close_ahead_and_near(rollouts):
    plain, banded = _metas(rollouts["plain"]), _metas(rollouts["banded"])
    assert json.loads((rollouts["banded"] / "index.json").read_text())["stop_band"] == BAND
    assert "stop_band" not in json.loads((rollouts["plain"] / "index.json").read_text())
    earlier = 0
    for before, meta in zip(plain, banded, strict=True):
        actions = meta["actions"]
        assert actions[-1]["kind"] == "stop" and meta["result"]["stopped"]
        assert meta["result"]["success"]
        assert not any(_in_band(meta, a["pose"]) for a in actions[:-1])
        if len(actions) < len(before["actions"]):
            earlier += 1
            assert _in_band(meta, actions[-1]["pose"])
            assert actions[-1]["statement"].endswith("Yes.")
        # up to its stop the banded expert drove as the plain one
        for a, b in zip(actions[:-1], before["actions"], strict=False):
            assert (a["text"], a["pose"], a.get("executed")) == (
                b["text"],
                b["pose"],
                b.get("executed"),
            )
    assert earlier >= 3


def test_rollouts_ended_at_the_band_are_the_banded_rollouts(rollouts, tmp_path):
    out = tmp_path / "cut"
    args = ["stop-band", "--data", str(rollouts["plain"]), "--out", str(out), "--band", str(BAND)]
    assert sim_cli.main(args) == 0
    index = json.loads((out / "index.json").read_text())
    expected_index = json.loads((rollouts["banded"] / "index.json").read_text())
    assert index["stop_band"] == BAND
    assert index["episodes"] == expected_index["episodes"]
    for cut, expected in zip(_metas(out), _metas(rollouts["banded"]), strict=True):
        assert cut["actions"] == expected["actions"]
        assert [f["file"] for f in cut["frames"]] == [f["file"] for f in expected["frames"]]
        assert len(cut["trajectory"]) == len(expected["trajectory"])
        assert cut["result"]["success"] == expected["result"]["success"]
        for key in ("distance_to_goal", "path_length"):
            assert cut["result"][key] == pytest.approx(expected["result"][key], abs=2e-3)
        folder = out / cut["episode"]["episode_id"]
        on_disk = sorted(p.name for p in (folder / "frames").iterdir())
        assert on_disk == [f["file"].split("/")[-1] for f in cut["frames"]]


def test_a_band_cannot_be_narrowed_nor_contrast_episodes_cut(rollouts, tmp_path):
    with pytest.raises(ValueError, match="goal radius"):
        write_stop_band_dataset(rollouts["plain"], tmp_path / "wide", 1.5)
    with pytest.raises(ValueError, match="narrower"):
        write_stop_band_dataset(rollouts["banded"], tmp_path / "narrow", BAND - 0.2)
    cut, removed = write_stop_band_dataset(rollouts["banded"], tmp_path / "same", BAND)
    assert (cut, removed) == (0, 0)
    contrast = tmp_path / "contrast"
    args = [
        "contrast",
        "--data",
        str(rollouts["banded"]),
        "--out",
        str(contrast),
        "--radius",
        "1.5",
    ]
    assert sim_cli.main(args) == 0
    assert json.loads((contrast / "index.json").read_text())["stop_band"] == BAND
    with pytest.raises(ValueError, match="contrast"):
        write_stop_band_dataset(contrast, tmp_path / "x", BAND)


def test_contrast_relabelling_uses_the_rollouts_band(rollouts):
    """Near the original goal the contrast expert stops for the other landmark exactly where a
    banded expert for it would (or at its own 0.3 m stop)."""
    checked = 0
    for k, meta in enumerate(_metas(rollouts["banded"])):
        world = world_for_scene(meta["episode"]["scene_id"])
        contrast = contrast_meta(meta, world, np.random.default_rng(k), 1.5, stop_band=BAND)
        if contrast is None:
            continue
        other = Episode.from_dict(contrast["episode"])
        for action in contrast["actions"]:
            if action.get("context"):
                continue
            checked += 1
            expert = Expert(world, other, stop_band=BAND, hfov_deg=HFOV)
            if expert.in_stop_band(Pose(*action["pose"])):
                assert action["kind"] == "stop"
    assert checked > 0


def test_band_must_lie_inside_the_goal_radius():
    world = world_for_scene("nvsim/scene_0003")
    episode = Episode.from_dict(
        {
            "episode_id": "x",
            "scene_id": "nvsim/scene_0003",
            "start_position": [*world.landmarks[0].approach, 0.0],
            "start_rotation": [0.0, 0.0, 0.0, 1.0],
            "goals": [{"position": [*world.landmarks[0].approach, 0.0], "radius": 1.5}],
            "instruction": {"instruction_text": "Stop."},
            "info": {"goal_landmark": world.landmarks[0].name},
        }
    )
    for band in (0.0, 1.5, 2.0):
        with pytest.raises(ValueError, match="stop_band"):
            Expert(world, episode, stop_band=band)
    assert Expert(world, episode, stop_band=1.0).stop_band == 1.0
