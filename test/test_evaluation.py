"""Evaluation bookkeeping without ROS: recorder limits, VLN-CE scoring, result files and plots."""

import dataclasses
import json
import math

import numpy as np
import pytest
from matplotlib.image import imread

from nvila_nav.evaluation import (
    END_ACTION_LIMIT,
    END_AGENT_STOPPED,
    END_REASONS,
    END_STOP,
    END_TIME_LIMIT,
    EpisodeRecorder,
    end_reason_counts,
    evaluate_episode,
    plot_episode,
    select_episodes,
    summary_table,
    thin_path,
    write_episode_result,
    write_summary,
)
from nvila_nav.navigation import END_CONTROLLER_FAILURES
from nvila_nav.sim.episodes import generate_episodes
from nvila_nav.sim.geometry import polyline_length, resample
from nvila_nav.sim.world import world_for_scene


@pytest.fixture(scope="module")
def episode():
    return generate_episodes("val_unseen", 1, seed=0)[0]


def dense(points, spacing=0.01):
    """Positions every `spacing` metres along a polyline, as 50 Hz odometry would give."""
    return resample([tuple(p[:2]) for p in points], spacing)


def record(points, actions=(), start_time=0.0, dt=0.02, **limits) -> EpisodeRecorder:
    recorder = EpisodeRecorder(start_time=start_time, **limits)
    for k, (x, y) in enumerate(points):
        recorder.add_pose(start_time + k * dt, x, y, 0.0)
    t = start_time + len(points) * dt
    for text in actions:
        recorder.add_action(t, text)
    return recorder


def test_stop_ends_the_episode_and_later_input_is_ignored():
    recorder = EpisodeRecorder(start_time=5.0)
    recorder.add_pose(4.9, 9.0, 9.0, 0.0)  # before the episode: ignored
    recorder.add_pose(5.0, 1.0, 2.0, 0.0)
    recorder.add_action(5.0, "move forward 25 cm")
    recorder.add_pose(5.5, 1.25, 2.0, 0.0)
    recorder.add_action(5.5, "The next action is stop.")
    assert recorder.done and recorder.stopped and recorder.end_reason == END_STOP
    recorder.add_pose(6.0, 3.0, 3.0, 0.0)
    recorder.add_action(6.0, "turn left 15 degrees")
    assert [p[1:3] for p in recorder.trajectory] == [(1.0, 2.0), (1.25, 2.0)]
    assert [text for _, text in recorder.actions] == [
        "move forward 25 cm",
        "The next action is stop.",
    ]
    assert recorder.elapsed_s == pytest.approx(0.5)


def test_action_limit_ends_before_the_extra_action():
    recorder = EpisodeRecorder(max_actions=2)
    recorder.add_pose(0.0, 0.0, 0.0, 0.0)
    for text in ("move forward 75 cm", "turn left 30 degrees"):
        recorder.add_action(1.0, text)
        assert not recorder.done
    recorder.add_action(2.0, "move forward 25 cm")
    assert recorder.done and not recorder.stopped and recorder.end_reason == END_ACTION_LIMIT
    assert recorder.movement_actions == 2 and len(recorder.actions) == 2
    recorder.add_action(2.0, "stop")  # too late: the limit already ended the episode
    assert not recorder.stopped


def test_stop_is_accepted_at_the_action_limit():
    recorder = EpisodeRecorder(max_actions=1)
    recorder.add_action(0.0, "move forward 25 cm")
    recorder.add_action(0.5, "stop")
    assert recorder.stopped and len(recorder.actions) == 2


def test_time_limit_counts_from_the_start_time():
    recorder = EpisodeRecorder(max_time_s=2.0, start_time=10.0)
    for t in (10.0, 11.0, 11.98):
        recorder.add_pose(t, t, 0.0, 0.0)
    assert not recorder.done
    recorder.add_pose(12.0, 12.0, 0.0, 0.0)
    assert recorder.end_reason == END_TIME_LIMIT and not recorder.stopped
    recorder.add_pose(12.5, 12.5, 0.0, 0.0)
    assert len(recorder.trajectory) == 4


def test_no_limits_and_bad_limits():
    recorder = EpisodeRecorder()
    for k in range(1000):
        recorder.add_action(k, "move forward 25 cm")
        recorder.add_pose(k, 0.0, 0.0, 0.0)
    assert not recorder.done
    with pytest.raises(ValueError):
        EpisodeRecorder(max_actions=-1)


def test_select_episodes_keeps_the_given_order_and_limit():
    episodes = generate_episodes("val_unseen", 4, seed=0)
    ids = [e.episode_id for e in episodes]
    assert select_episodes(episodes) == episodes
    assert select_episodes(episodes, limit=2) == episodes[:2]
    chosen = select_episodes(episodes, f"{ids[3]}, {ids[1]} {ids[0]}", limit=2)
    assert [e.episode_id for e in chosen] == [ids[3], ids[1]]
    with pytest.raises(ValueError, match="nope"):
        select_episodes(episodes, f"{ids[0]},nope")


def test_thin_path_keeps_points_a_step_apart_and_the_end():
    points = [(0.01 * k, 0.0) for k in range(101)]  # 1 m in 1 cm steps
    thinned = thin_path(points)
    assert [round(p[0], 2) for p in thinned] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert thin_path([(0.0, 0.0), (0.1, 0.0)]) == [(0.0, 0.0), (0.1, 0.0)]
    assert thin_path([(1.0, 2.0)]) == [(1.0, 2.0)]


def test_following_the_route_with_a_detour_succeeds_with_the_expected_spl(episode):
    route = [p[:2] for p in episode.gt_locations]
    # Walk about a metre of the route, come back, then walk it all.
    detour = resample(route, 0.05)[:21]
    path = dense(detour) + dense(detour[::-1])[1:] + dense(route)[1:]
    recorder = record(path, ["move forward 75 cm"] * 8 + ["stop"])
    result = evaluate_episode(episode, recorder, "hand")
    metrics = result["metrics"]
    geodesic = episode.info["geodesic_distance"]
    travelled = polyline_length(path)
    assert travelled == pytest.approx(geodesic + 2 * polyline_length(detour), abs=0.01)
    assert travelled > geodesic + 1.5
    assert metrics["success"] and metrics["osr"]
    assert metrics["ne"] < 0.15  # geodesic on the 10 cm nav grid
    assert metrics["path_length"] == pytest.approx(travelled)
    assert metrics["spl"] == pytest.approx(geodesic / travelled, abs=0.01)
    assert metrics["sdtw"] == metrics["ndtw"] and 0.5 < metrics["ndtw"] < 1.0
    assert metrics["steps"] == 9
    assert result["end_reason"] == END_STOP and result["distance"] == "geodesic"
    assert result["start_goal_distance"] == geodesic
    assert result["policy"] == "hand" and result["instruction"] == episode.instruction_text
    assert len(result["trajectory"]) == len(path) and len(result["actions"]) == 9

    exact = evaluate_episode(episode, record(dense(route), ["stop"]), "hand")["metrics"]
    assert exact["spl"] == pytest.approx(1.0, abs=0.01)
    assert exact["ndtw"] > 0.95  # thinned points fall between the 25 cm gt points


def test_stopping_at_the_start_fails_with_the_geodesic_error(episode):
    start = episode.start_position[:2]
    result = evaluate_episode(episode, record([start], ["stop"]), "lazy")
    metrics = result["metrics"]
    field = world_for_scene(episode.scene_id).nav.geodesic(episode.goal.position[:2])
    assert not metrics["success"] and not metrics["osr"]
    assert metrics["spl"] == 0.0 and metrics["sdtw"] == 0.0
    assert metrics["ne"] == pytest.approx(field.at(*start))
    assert metrics["ne"] > episode.info["geodesic_distance"] > episode.goal.radius
    assert metrics["path_length"] == 0.0 and metrics["steps"] == 1


def test_reaching_the_goal_without_stopping_is_not_a_success(episode):
    route = dense(episode.gt_locations)
    recorder = record(route, max_time_s=1.0)
    assert recorder.end_reason == END_TIME_LIMIT
    metrics = evaluate_episode(episode, recorder, "p")["metrics"]
    assert not metrics["success"]
    recorder = record(route)
    recorder.finish(END_TIME_LIMIT)
    metrics = evaluate_episode(episode, recorder, "p")["metrics"]
    assert metrics["osr"] and metrics["ne"] < 0.15 and not metrics["success"]
    assert metrics["spl"] == 0.0


def test_other_datasets_use_euclidean_distances_and_default_radius(episode):
    matterport = dataclasses.replace(
        episode,
        scene_id="mp3d/zsNo4HB9uLZ/zsNo4HB9uLZ.glb",
        goals=(dataclasses.replace(episode.goal, radius=None),),
        info={},
    )
    start, goal = episode.start_position[:2], episode.goal.position[:2]
    result = evaluate_episode(matterport, record([start], ["stop"]), "p")
    assert result["distance"] == "euclidean" and result["radius"] == 3.0
    assert result["metrics"]["ne"] == pytest.approx(math.dist(start, goal))
    assert plot_episode(matterport, result, "unused") is None


def test_files_are_written_and_readable(episode, tmp_path):
    route = [p[:2] for p in episode.gt_locations]
    success = evaluate_episode(episode, record(dense(route), ["stop"]), "hand")
    other = dataclasses.replace(episode, episode_id="val_unseen/odd id")
    failure = evaluate_episode(other, record([route[0]], ["stop"]), "hand")

    paths = [write_episode_result(r, tmp_path) for r in (success, failure)]
    assert [p.name for p in paths] == [f"{episode.episode_id}.json", "val_unseen_odd_id.json"]
    assert json.loads(paths[0].read_text()) == json.loads(json.dumps(success))

    summary = write_summary([success, failure], tmp_path, "hand")
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored == json.loads(json.dumps(summary))
    assert stored["policy"] == "hand" and stored["metrics"]["count"] == 2
    assert stored["metrics"]["sr"] == 0.5
    assert [e["success"] for e in stored["episodes"]] == [True, False]
    table = (tmp_path / "summary.txt").read_text()
    assert table == summary_table(summary) + "\n"
    header, _, row, ended = table.splitlines()
    assert header.split()[:3] == ["Policy", "N", "SR%"]
    assert row.split()[:3] == ["hand", "2", "50.0"]
    assert ended == "Ended: agent_stopped 2" and stored["end_reasons"] == {"agent_stopped": 2}


def test_plot_shows_the_map_and_the_trajectory(episode, tmp_path):
    route = [p[:2] for p in episode.gt_locations]
    result = evaluate_episode(episode, record(dense(route), ["stop"]), "hand")
    path = plot_episode(episode, result, tmp_path)
    assert path == tmp_path / "plots" / f"{episode.episode_id}.png"
    assert path.stat().st_size > 20_000
    image = imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert np.unique(image.reshape(-1, image.shape[2]), axis=0).shape[0] > 50


def test_navigator_outcome_decides_whose_stop_it_was():
    """With await_outcome the navigator says why it stopped: its own stop after controller
    failures is no agent stop (no success, not a step); the outcome may come before or after
    the "stop" on action."""
    for order in ("stop first", "outcome first"):
        recorder = EpisodeRecorder(await_outcome=True)
        recorder.add_pose(0.0, 0.0, 0.0, 0.0)
        recorder.add_action(0.5, "move forward 75 cm")
        recorder.add_result("timed_out move forward 75 cm")
        if order == "stop first":
            recorder.add_action(1.0, "stop")
            assert recorder.stop_seen and not recorder.done
        recorder.add_outcome(1.0, END_CONTROLLER_FAILURES)
        recorder.add_action(1.0, "stop")  # the late one is ignored
        assert recorder.end_reason == END_CONTROLLER_FAILURES and not recorder.stopped
        assert [text for _, text in recorder.actions] == ["move forward 75 cm"]

    for order in ("stop first", "outcome first"):
        recorder = EpisodeRecorder(await_outcome=True)
        recorder.add_action(0.5, "turn left 15 degrees")
        if order == "stop first":
            recorder.add_action(1.0, "stop")
        recorder.add_outcome(1.0, END_AGENT_STOPPED)
        recorder.add_action(1.0, "stop")
        assert recorder.stopped and recorder.end_reason == END_AGENT_STOPPED
        assert [text for _, text in recorder.actions] == ["turn left 15 degrees", "stop"]

    recorder = EpisodeRecorder(await_outcome=True)
    recorder.add_action(1.0, "stop")
    recorder.finish(END_AGENT_STOPPED)  # no outcome came: the evaluator's fallback
    assert recorder.stopped
    with pytest.raises(ValueError, match="unknown end reason"):
        EpisodeRecorder().add_outcome(0.0, "bored")


def test_blocked_moves_are_counted_actions():
    recorder = EpisodeRecorder(max_actions=2)
    recorder.add_action(0.0, "move forward 75 cm")
    recorder.add_result("blocked move forward 75 cm")
    recorder.add_action(1.0, "move forward 75 cm")
    recorder.add_result("succeeded move forward 75 cm")
    recorder.add_action(2.0, "move forward 75 cm")
    assert recorder.end_reason == END_ACTION_LIMIT and recorder.blocked_actions == 1


def test_summary_counts_episodes_per_end_reason(tmp_path):
    results = [
        {"end_reason": END_ACTION_LIMIT},
        {"end_reason": END_AGENT_STOPPED},
        {"end_reason": "policy_failed"},
        {"end_reason": END_CONTROLLER_FAILURES},
        {"end_reason": END_AGENT_STOPPED},
    ]
    counts = end_reason_counts(results)
    assert list(counts.items()) == [
        (END_AGENT_STOPPED, 2),
        (END_ACTION_LIMIT, 1),
        (END_CONTROLLER_FAILURES, 1),
        ("policy_failed", 1),
    ]
    text = summary_table({"policy": "p", "metrics": {"count": 5}, "end_reasons": counts})
    assert text.splitlines()[-1] == (
        "Ended: agent_stopped 2, action_limit 1, controller_failures 1, policy_failed 1"
    )
    assert set(END_REASONS) >= {END_AGENT_STOPPED, END_ACTION_LIMIT, END_TIME_LIMIT}
    assert set(END_REASONS) >= {END_CONTROLLER_FAILURES, "no_usable_action", "stop_requested"}
