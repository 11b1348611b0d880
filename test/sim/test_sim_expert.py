"""The shortest-path expert: success on every split, NaVILA action grammar, frame timing."""

import numpy as np
import pytest

from nvila_nav.actions import FORWARD_CM, TURN_DEG, ActionKind, parse_action
from nvila_nav.metrics import episode_metrics
from nvila_nav.sim.env import RenderingUnavailable, Simulator
from nvila_nav.sim.episodes import generate_episodes
from nvila_nav.sim.expert import PERTURBATIONS, run_expert
from nvila_nav.sim.robot import CameraConfig


@pytest.fixture(scope="module")
def sim():
    with Simulator() as s:
        yield s


@pytest.mark.parametrize("split", ["train", "val_seen", "val_unseen"])
def test_expert_succeeds_on_50_episodes(sim, split):
    ndtw = []
    for episode in generate_episodes(split, 50, seed=0):
        run = run_expert(sim, episode, render=False)
        path = [(x, y) for _, x, y, _ in run.trajectory[::10]]  # one point per 0.5 s
        m = episode_metrics(
            path,
            [p[:2] for p in episode.gt_locations],
            episode.goal.position[:2],
            episode.goal.radius,
            stopped=run.stopped,
        )
        assert m.success, f"{episode.episode_id}: {run.distance_to_goal:.2f} m from goal"
        assert run.success and run.distance_to_goal <= 0.3
        ndtw.append(m.ndtw)
        for step in run.actions:
            a = step.action
            assert parse_action(a.to_answer()) == a
            assert (
                a.amount in (FORWARD_CM if a.kind is ActionKind.FORWARD else TURN_DEG) or a.is_stop
            )
        assert run.actions[-1].action.is_stop and sum(s.action.is_stop for s in run.actions) == 1
    assert np.mean(ndtw) > 0.8  # it follows the described route, not just any route


def test_perturbed_rollouts_label_with_the_expert_and_recover(sim):
    episodes = generate_episodes("train", 10, seed=3)
    runs = [run_expert(sim, e, render=False, perturb=0.3, seed=i) for i, e in enumerate(episodes)]
    perturbed = [s for run in runs for s in run.actions if s.executed is not None]
    steps = sum(len(run.actions) for run in runs)
    assert 0.15 * steps < len(perturbed) < 0.35 * steps
    assert all(s.executed in PERTURBATIONS and s.executed != s.action for s in perturbed)
    assert not any(s.action.is_stop for s in perturbed)  # a stop is never replaced
    assert sum(run.success for run in runs) >= 9  # the expert recovers from the detours
    # the same seed replays the same perturbations; the labels are the expert's in that state
    again = run_expert(sim, episodes[0], render=False, perturb=0.3, seed=0)
    assert [(s.action, s.executed) for s in again.actions] == [
        (s.action, s.executed) for s in runs[0].actions
    ]
    with pytest.raises(ValueError, match="perturb"):
        run_expert(sim, episodes[0], render=False, perturb=1.0)


def test_every_decision_has_the_frame_taken_at_that_instant(sim):
    episode = generate_episodes("val_unseen", 1, seed=1)[0]
    run = run_expert(sim, episode, render=False)
    assert np.allclose(np.diff(run.frame_times), 0.5)
    for step in run.actions:
        assert run.frame_times[step.frame_index] == pytest.approx(step.t)
        pose = run.frame_poses[step.frame_index]
        assert (pose.x, pose.y) == pytest.approx((step.pose.x, step.pose.y))


def test_rendered_rollout_records_one_frame_per_half_second():
    episode = generate_episodes("train", 1, seed=2)[0]
    with Simulator(CameraConfig(width=48, height=32)) as s:
        try:
            run = run_expert(s, episode, render=True)
        except RenderingUnavailable as exc:
            pytest.skip(str(exc))
    assert len(run.frames) == len(run.frame_times) > 4
    assert run.frames[0].shape == (32, 48, 3)
    assert run.frame_times[-1] == pytest.approx(run.actions[-1].t)
