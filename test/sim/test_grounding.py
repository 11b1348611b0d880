"""nvila-nav-grounding: P(stop) at the expert's stop with the goal named and with another name."""

import json

import numpy as np
import pytest

from nvila_core.model.checkpoint import save_checkpoint
from nvila_nav import grounding
from nvila_nav.sim.captions import goal_phrase
from nvila_nav.sim.env import RenderingUnavailable
from nvila_nav.sim.episodes import generate_episodes, write_episodes
from nvila_nav.sim.robot import CameraConfig
from nvila_nav.sim.world import world_for_scene
from test.helpers.compact_models import compact_model


def test_other_instructions_change_only_the_goal_name():
    episode = generate_episodes("val_unseen", 1, seed=4, tier="A")[0]
    world = world_for_scene(episode.scene_id)
    goal = world.landmark(episode.info["goal_landmark"])
    found = goal_phrase(episode.instruction_text, goal)
    assert found is not None
    texts = grounding.other_instructions(episode, world, np.random.default_rng(0), draws=4)
    assert len(texts) == 4
    head, tail = episode.instruction_text[: found.start()], episode.instruction_text[found.end() :]
    for text in texts:
        assert text.startswith(head) and text.endswith(tail) and text != episode.instruction_text
        named = text[len(head) : len(text) - len(tail)]
        assert named.startswith("the ") and goal_phrase(named, goal) is None


def test_report_on_a_rendered_rollout(tmp_path, capsys):
    episodes = generate_episodes("val_unseen", 2, seed=4, tier="A")
    path = write_episodes(tmp_path / "eps.json.gz", episodes)
    out = tmp_path / "grounding.json"
    args = ["--model", "tiny", "--episodes", str(path), "--draws", "2"]
    args += ["--width", "64", "--height", "48", "--out", str(out)]
    try:
        assert grounding.main(args) == 0
    except RenderingUnavailable as error:
        pytest.skip(str(error))
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert summary["episodes"] == len(report["episodes"]) == 2 and summary["draws"] == 2
    for key in ("p_stop_named", "stops_named", "p_stop_other", "stops_other"):
        assert 0.0 <= summary[key] <= 1.0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary


def test_report_says_what_a_statement_model_said(tmp_path):
    model, _, tokenizer = compact_model(nav_statement=True)
    save_checkpoint(model, tokenizer, tmp_path / "model")
    path = write_episodes(
        tmp_path / "eps.json.gz", generate_episodes("val_unseen", 1, seed=4, tier="A")
    )
    try:
        report = grounding.measure(
            tmp_path / "model", path, draws=1, camera=CameraConfig(width=64, height=48)
        )
    except RenderingUnavailable as error:
        pytest.skip(str(error))
    (row,) = report["episodes"]
    # random weights do not say the simulator's statement at the goal
    assert "statement" in row and row["statement_right"] is False
    assert report["summary"]["statement_right"] == 0.0


def test_draws_must_be_positive(tmp_path, capsys):
    assert grounding.main(["--model", "tiny", "--episodes", "x.json", "--draws", "0"]) == 2
    assert "--draws" in capsys.readouterr().err
