"""Closed-loop episodes without ROS (evaluation and DAgger): real MuJoCo, the evaluator's
metrics, expert labels on every visited state, and one DAgger iteration end to end."""

import dataclasses
import json

import numpy as np
import pytest
import yaml

from nvila_core.model.checkpoint import save_checkpoint
from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.tokenizer import build_tokenizer
from nvila_nav.actions import Action, parse_action
from nvila_nav.closed_loop import END_POLICY_FAILED, evaluate, run_policy, score
from nvila_nav.dagger import (
    DaggerSettings,
    base_stop_band,
    collect,
    navigation_data,
    run_dagger,
    stage_recipe,
)
from nvila_nav.evaluation import END_ACTION_LIMIT, END_STOP
from nvila_nav.policies import ExpertPolicy, ForwardPolicy, PolicyDecision
from nvila_nav.sim.dataset import load_dataset
from nvila_nav.sim.env import RenderingUnavailable, Simulator
from nvila_nav.sim.episodes import generate_episodes
from nvila_nav.sim.expert import in_stop_band
from nvila_nav.sim.robot import CameraConfig


@pytest.fixture(scope="module")
def sim():
    with Simulator(CameraConfig(width=64, height=48)) as s:
        try:
            s.reset(generate_episodes("val_unseen", 1, tier="A")[0], render=True)
        except RenderingUnavailable as exc:
            pytest.skip(str(exc))
        yield s


@pytest.fixture(scope="module")
def episodes():
    return generate_episodes("val_unseen", 3, seed=5, tier="A")


class RecentRecorder:
    """A "recent" history policy that drives a fixed script and keeps every request."""

    name = "scripted"
    history = "recent"

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests = []

    def reset(self):
        self.requests.clear()

    def decide(self, request):
        self.requests.append(request)
        text = self.answers.pop(0) if self.answers else "stop"
        return PolicyDecision(text, parse_action(text), 0.0)

    def close(self):
        pass


def test_expert_policy_reaches_every_goal_and_is_scored_like_the_evaluator(sim, episodes, tmp_path):
    summary = evaluate(ExpertPolicy(), episodes, tmp_path, "expert", width=64, height=48)
    assert summary["metrics"]["sr"] == 1.0
    assert {e["end_reason"] for e in summary["episodes"]} == {END_STOP}
    result = json.loads(next((tmp_path / "episodes").glob("*.json")).read_text())
    assert result["expert_agreement"] == 1.0
    assert result["metrics"]["success"] and result["distance"] == "geodesic"
    assert (tmp_path / "summary.txt").is_file() and list((tmp_path / "plots").glob("*.png"))


def test_requests_carry_one_frame_per_decision_and_the_executed_actions(sim, episodes):
    policy = RecentRecorder("turn left 30 degrees", "move forward 50 cm", "stop")
    result = run_policy(sim, episodes[0], policy)
    assert result.end_reason == END_STOP
    assert [len(r.frames) for r in policy.requests] == [1, 2, 3]
    assert policy.requests[2].previous_actions == ("turn left 30 degrees", "move forward 50 cm")
    assert not np.array_equal(policy.requests[1].frames[1], policy.requests[1].frames[0])
    labels = [step.action for step in result.run.actions]
    driven = [step.executed or step.action for step in result.run.actions]
    assert driven == [
        parse_action(t) for t in ("turn left 30 degrees", "move forward 50 cm", "stop")
    ]
    assert all(isinstance(label, Action) for label in labels)
    # the evaluator's rules: an early stop is the agent's own stop, and far from the goal it fails
    scored = score(result, "scripted")
    assert scored["end_reason"] == END_STOP and not scored["metrics"]["success"]


def test_action_limit_and_policy_failure_end_episodes(sim, episodes):
    result = run_policy(sim, episodes[1], ForwardPolicy(), max_actions=6, render=False)
    assert result.end_reason == END_ACTION_LIMIT and len(result.run.actions) == 6
    silent = RecentRecorder("hmm", "nothing to see")
    assert run_policy(sim, episodes[1], silent).end_reason == END_POLICY_FAILED
    assert len(silent.requests) == 2  # one re-query, as the navigator does


def test_with_the_expert_finishing_an_early_stop_is_not_executed(sim, episodes):
    policy = RecentRecorder("move forward 25 cm", "stop", "turn left 45 degrees")
    result = run_policy(sim, episodes[0], policy, expert_finishes=True)
    steps = result.run.actions
    # the model's early stop (its 2nd decision) was replaced by the expert's action, and from
    # there on the expert drove, to its own stop at the goal, without asking the model again
    assert len(policy.requests) == 2 and result.end_reason == END_STOP
    assert steps[1].executed is None and not steps[1].action.is_stop
    assert all(step.executed is None for step in steps[1:]) and steps[-1].action.is_stop
    assert result.run.success and len(steps) > 3
    # without it the same script ends the episode at the model's stop
    policy = RecentRecorder("move forward 25 cm", "stop")
    assert len(run_policy(sim, episodes[0], policy).run.actions) == 2


def test_beta_one_drives_the_expert(sim, episodes):
    result = run_policy(sim, episodes[2], ForwardPolicy(), beta=1.0, render=False)
    assert result.run.success and all(step.executed is None for step in result.run.actions)


def test_a_wider_stop_band_labels_the_stop_earlier_inside_the_success_radius(sim, episodes):
    narrow = run_policy(sim, episodes[2], ForwardPolicy(), beta=1.0, render=False).run
    wide = run_policy(
        sim, episodes[2], ForwardPolicy(), beta=1.0, render=False, stop_distance=1.0
    ).run
    assert narrow.success and wide.success and wide.actions[-1].action.is_stop
    assert narrow.distance_to_goal <= 0.35 < wide.distance_to_goal <= 1.05
    assert len(wide.actions) < len(narrow.actions)


def test_with_a_stop_band_the_labelling_expert_stops_where_the_goal_is_close_ahead(sim, episodes):
    plain = run_policy(sim, episodes[2], ForwardPolicy(), beta=1.0, render=False).run
    banded = run_policy(
        sim, episodes[2], ForwardPolicy(), beta=1.0, render=False, stop_band=1.2
    ).run
    world = sim.load_scene(episodes[2].scene_id)
    hfov = sim.camera.hfov_deg
    stop = banded.actions[-1]
    assert banded.success and stop.action.is_stop and len(banded.actions) < len(plain.actions)
    assert in_stop_band(world, episodes[2], stop.pose, 1.2, hfov)
    # the first such state: the expert drove as without the band up to there
    assert [s.action for s in banded.actions[:-1]] == [
        s.action for s in plain.actions[: len(banded.actions) - 1]
    ]
    assert not any(in_stop_band(world, episodes[2], s.pose, 1.2, hfov) for s in banded.actions[:-1])


def _rollout_index(folder, **fields):
    folder.mkdir()
    (folder / "index.json").write_text(json.dumps({"episodes": [], **fields}))
    return str(folder)


def test_dagger_labels_with_the_stop_band_of_the_data_the_model_came_from(tmp_path):
    banded = _rollout_index(tmp_path / "banded", stop_band=0.8)
    contrast = _rollout_index(tmp_path / "contrast", stop_band=0.8, contrast={"radius": 1.5})
    plain = _rollout_index(tmp_path / "plain")
    val = _rollout_index(tmp_path / "val")
    captions = {"name": "readout", "path": str(tmp_path / "readout.json"), "split": "train"}
    stage_data = {
        "datasets": [
            {"name": "a", "path": banded, "split": "train"},
            {"name": "c", "path": contrast, "split": "train"},
            captions,
            {"name": "v", "path": val, "split": "val"},
        ]
    }
    recipe = {
        "data": {"datasets": [captions]},
        "stages": [{"name": "readout"}, {"name": "navigation", "data": stage_data}],
    }
    # the last stage's own data (a statement recipe); a recipe's data where it has none
    assert navigation_data(recipe) == stage_data
    assert navigation_data({**recipe, "stages": [{"name": "nav"}]}) == recipe["data"]
    assert base_stop_band(stage_data) == 0.8
    assert base_stop_band({"datasets": [{"name": "p", "path": plain, "split": "train"}]}) is None
    mixed = {"datasets": [*stage_data["datasets"], {"name": "p", "path": plain}]}
    with pytest.raises(ValueError, match="different stop bands"):
        base_stop_band(mixed)


@pytest.fixture(scope="module")
def compact_model(tmp_path_factory):
    config = dataclasses.replace(
        NVILAConfig.preset("tiny"),
        num_video_frames=3,
        nav_prompt="compact",
        nav_history="recent",
        nav_previous_actions=2,
    )
    tokenizer = build_tokenizer(config.llm_config["vocab_size"], config.chat_template)
    model = NVILAModel.from_config(config, seed=0, tokenizer=tokenizer)
    folder = tmp_path_factory.mktemp("compact") / "model"
    save_checkpoint(model, tokenizer, folder)
    return folder


def test_dagger_collects_expert_labels_and_fine_tunes(compact_model, tmp_path):
    settings = DaggerSettings(
        iterations=1, episodes=2, max_actions=4, steps=2, width=64, height=48, seed=3
    )
    data = tmp_path / "data"
    stats = collect(compact_model, generate_episodes("train", 2, tier="A"), data, 0.5, settings, 1)
    assert stats["episodes"] == 2 and stats["steps"] >= 2
    # the same rollouts in one process: the dataset does not depend on the number of workers
    one = tmp_path / "one-worker"
    single = dataclasses.replace(settings, workers=1)
    assert (
        collect(compact_model, generate_episodes("train", 2, tier="A"), one, 0.5, single, 1)
        == stats
    )
    index = json.loads((data / "index.json").read_text())["episodes"]
    assert json.loads((one / "index.json").read_text())["episodes"] == index
    # a labelling band is recorded like a rollout's, for the steps that read the data later
    banded = tmp_path / "banded"
    collect(compact_model, generate_episodes("train", 1, tier="A"), banded, 0.5, single, 1, 1.2)
    assert json.loads((banded / "index.json").read_text())["stop_band"] == 1.2
    assert yaml.safe_load((banded / "dagger.json").read_text())["stop_band"] == 1.2
    dataset = load_dataset(data)
    for episode in dataset.episodes:
        assert [a.frame_index for a in episode.actions] == list(range(len(episode.actions)))
    base = {
        "name": "compact",
        "seed": 0,
        "data": {
            "num_frames": 3,
            "history": "recent",
            "datasets": [{"name": "base", "path": str(data), "split": "train"}],
        },
        "defaults": {
            "batch_size": 2,
            "num_workers": 0,
            "device": "cpu",
            "log_every": 1,
            "eval_generate_samples": 0,
        },
        "stages": [{"name": "nav", "lr": 1e-3, "max_steps": 1}],
    }
    spec = stage_recipe(base, compact_model, [data], settings, "compact-dagger-1")
    assert [d["name"] for d in spec["data"]["datasets"]] == ["base", "dagger-1"]
    assert spec["data"]["datasets"][0]["weight"] == settings.base_weight
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(base))
    final = run_dagger(recipe_path, compact_model, tmp_path / "dagger", settings)
    assert (final / "config.json").is_file()
    # resumable: a second run finds the data and the finished stage and returns the same model
    assert run_dagger(recipe_path, compact_model, tmp_path / "dagger", settings) == final
