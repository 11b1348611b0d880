"""Tests for VLN-CE metrics on small hand-made trajectories with hand-computed values."""

import json
import math

import numpy as np
import pytest

from nvila_nav.metrics import (
    EpisodeMetrics,
    aggregate,
    dtw,
    episode_metrics,
    format_table,
    path_length,
)

RADIUS = 3.0


def test_straight_line_overshoot_spl_is_shortest_over_travelled():
    # Goal 3 m ahead, agent walks 4 m and stops 1 m past it: success, SPL = 3 / 4.
    trajectory = [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0)]
    m = episode_metrics(trajectory, [(0, 0), (3, 0)], (3, 0), RADIUS, stopped=True)
    assert m.success
    assert m.osr
    assert m.ne == pytest.approx(1.0)
    assert m.path_length == pytest.approx(4.0)
    assert m.spl == pytest.approx(0.75)
    assert m.steps == 4


def test_stopping_short_inside_radius_gives_spl_one():
    # d_start = 5 > path length 4, so SPL = 5 / max(5, 4) = 1.
    m = episode_metrics([(0, 0), (4, 0)], [(0, 0), (5, 0)], (5, 0), RADIUS, stopped=True)
    assert m.success
    assert m.spl == pytest.approx(1.0)


def test_detour_lowers_spl():
    # Up 3, across 4, down 3 to a goal 4 m from the start: SPL = 4 / 10.
    trajectory = [(0, 0), (0, 3), (4, 3), (4, 0)]
    m = episode_metrics(trajectory, [(0, 0), (4, 0)], (4, 0), RADIUS, stopped=True)
    assert m.success
    assert m.path_length == pytest.approx(10.0)
    assert m.spl == pytest.approx(0.4)
    assert m.spl < 1.0


def test_stop_outside_radius_after_passing_goal():
    trajectory = [(0, 0), (5, 0), (10, 0)]
    m = episode_metrics(trajectory, [(0, 0), (5, 0)], (5, 0), RADIUS, stopped=True)
    assert not m.success
    assert m.osr
    assert m.ne == pytest.approx(5.0)
    assert m.spl == 0.0
    assert m.sdtw == 0.0
    assert m.ndtw > 0.0


def test_no_stop_means_no_success_even_at_goal():
    m = episode_metrics([(0, 0), (4, 0)], [(0, 0), (4, 0)], (4, 0), RADIUS, stopped=False)
    assert not m.success
    assert m.osr
    assert m.spl == 0.0
    assert m.sdtw == 0.0
    assert m.ndtw == pytest.approx(1.0)


def test_success_radius_is_strict():
    m = episode_metrics([(0, 0)], [(0, 0)], (3, 0), RADIUS, stopped=True)
    assert m.ne == pytest.approx(3.0)
    assert not m.success
    assert not m.osr


def test_identical_paths_have_ndtw_one_and_sdtw_equals_success():
    path = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (2, 1, 0)]
    m = episode_metrics(path, path, path[-1], RADIUS, stopped=True)
    assert m.ndtw == pytest.approx(1.0)
    assert m.sdtw == pytest.approx(1.0)
    assert m.success


def test_dtw_collinear_hand_computed():
    # a = (0,0) (1,0) (2,0), b = (0,0) (2,0). Point costs c[i][j]:
    #   a0: 0 2 | a1: 1 1 | a2: 2 0
    # Accumulated D: D00=0, D01=2, D10=1, D11=1+min(2,1,0)=1, D20=3, D21=0+min(1,3,1)=1.
    a = [(0, 0), (1, 0), (2, 0)]
    b = [(0, 0), (2, 0)]
    assert dtw(a, b) == pytest.approx(1.0)
    assert dtw(b, a) == pytest.approx(1.0)
    m = episode_metrics(a, b, (2, 0), RADIUS, stopped=True)
    assert m.ndtw == pytest.approx(math.exp(-1.0 / (2 * RADIUS)))


def test_dtw_parallel_offset_hand_computed():
    # a = (0,0) (0,1) (0,2), b = (1,0) (1,2). Point costs:
    #   a0: 1 √5 | a1: √2 √2 | a2: √5 1
    # D00=1, D01=1+√5, D10=1+√2, D11=√2+min(1+√5, 1+√2, 1)=1+√2,
    # D20=1+√2+√5, D21=1+min(D11, D20, D10)=2+√2.
    a = [(0, 0), (0, 1), (0, 2)]
    b = [(1, 0), (1, 2)]
    assert dtw(a, b) == pytest.approx(2 + math.sqrt(2))


def test_dtw_single_reference_point_sums_all_distances():
    # Every path point must align with the only reference point: 0 + 5.
    assert dtw([(0, 0), (3, 4)], [(0, 0)]) == pytest.approx(5.0)


def test_dtw_matches_naive_recursion_on_random_paths():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 3))
    b = rng.normal(size=(5, 3))
    acc = np.full((8, 6), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, 8):
        for j in range(1, 6):
            step = min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
            acc[i, j] = np.linalg.norm(a[i - 1] - b[j - 1]) + step
    assert dtw(a, b) == pytest.approx(acc[7, 5])


def test_path_length():
    assert path_length([(0, 0), (3, 4), (3, 0)]) == pytest.approx(9.0)
    assert path_length([(1, 2, 3)]) == 0.0


def test_explicit_steps_override():
    m = episode_metrics([(0, 0), (1, 0)], [(0, 0)], (1, 0), RADIUS, stopped=True, steps=12)
    assert m.steps == 12


def test_geodesic_distance_function_and_start_distance():
    # A wall forces the geodesic to be longer: pretend it is the Manhattan distance.
    goal = np.array([3.0, 4.0])

    def manhattan(p):
        return float(np.abs(goal - p).sum())

    trajectory = [(0, 0), (3, 0), (3, 4)]
    m = episode_metrics(trajectory, trajectory, goal, RADIUS, stopped=True, distance_fn=manhattan)
    assert m.success
    assert m.ne == 0.0
    assert m.spl == pytest.approx(1.0)  # geodesic d_start = 7 = path length
    m = episode_metrics(trajectory, trajectory, goal, RADIUS, stopped=True, start_goal_distance=3.5)
    assert m.spl == pytest.approx(3.5 / 7.0)


def test_unreachable_goal_gives_nonfinite_ne_and_spl():
    m = episode_metrics(
        [(0, 0), (1, 0)], [(0, 0)], (9, 9), RADIUS, stopped=True, distance_fn=lambda p: math.inf
    )
    assert math.isinf(m.ne)
    assert math.isnan(m.spl)
    assert not m.success


def test_start_on_goal_and_stop_is_perfect():
    m = episode_metrics([(2, 2)], [(2, 2)], (2, 2), RADIUS, stopped=True)
    assert m.success
    assert m.spl == 1.0
    assert m.steps == 0


@pytest.mark.parametrize(
    ("trajectory", "reference", "goal"),
    [
        ([], [(0, 0)], (0, 0)),
        ([(0, 0)], [], (0, 0)),
        ([(0, 0)], [(0, 0, 0)], (0, 0)),
        ([(0, 0)], [(0, 0)], (0, 0, 0)),
        ([0.0, 1.0], [(0, 0)], (0, 0)),
    ],
)
def test_bad_inputs_raise(trajectory, reference, goal):
    with pytest.raises(ValueError):
        episode_metrics(trajectory, reference, goal, RADIUS, stopped=True)


def test_non_positive_radius_raises():
    with pytest.raises(ValueError):
        episode_metrics([(0, 0)], [(0, 0)], (0, 0), 0.0, stopped=True)


def test_to_dict_is_json_serialisable():
    m = episode_metrics([(0, 0), (4, 0)], [(0, 0), (4, 0)], (4, 0), RADIUS, stopped=True)
    d = json.loads(json.dumps(m.to_dict()))
    assert d == {
        "success": True,
        "spl": 1.0,
        "ne": 0.0,
        "osr": True,
        "ndtw": 1.0,
        "sdtw": 1.0,
        "path_length": 4.0,
        "steps": 1,
    }


def _episode(success, spl, ne, ndtw=0.5, path=4.0, steps=10):
    return EpisodeMetrics(
        success=success,
        spl=spl,
        ne=ne,
        osr=success,
        ndtw=ndtw,
        sdtw=ndtw if success else 0.0,
        path_length=path,
        steps=steps,
    )


def test_aggregate_skips_nonfinite_ne_and_spl():
    episodes = [
        _episode(True, 0.8, 1.0, ndtw=0.9, path=5.0, steps=20),
        _episode(False, 0.0, 5.0, ndtw=0.3, path=7.0, steps=30),
        _episode(False, math.nan, math.inf, ndtw=0.0, path=0.0, steps=40),
    ]
    agg = aggregate(episodes)
    assert agg["count"] == 3
    assert agg["sr"] == pytest.approx(1 / 3)
    assert agg["osr"] == pytest.approx(1 / 3)
    assert agg["spl"] == pytest.approx(0.4)  # (0.8 + 0.0) / 2, NaN skipped
    assert agg["ne"] == pytest.approx(3.0)  # (1 + 5) / 2, inf skipped
    assert agg["spl_nonfinite"] == 1
    assert agg["ne_nonfinite"] == 1
    assert agg["ndtw"] == pytest.approx(0.4)
    assert agg["sdtw"] == pytest.approx(0.3)
    assert agg["path_length"] == pytest.approx(4.0)
    assert agg["steps"] == pytest.approx(30.0)


def test_aggregate_all_nonfinite_is_nan():
    agg = aggregate([_episode(False, math.nan, math.inf)])
    assert math.isnan(agg["spl"])
    assert math.isnan(agg["ne"])
    assert agg["ne_nonfinite"] == 1


def test_aggregate_empty_raises():
    with pytest.raises(ValueError):
        aggregate([])


def test_format_table():
    good = aggregate([_episode(True, 0.8, 1.0, ndtw=0.9, path=5.0, steps=20)])
    bad = aggregate([_episode(False, math.nan, math.inf)])
    table = format_table({"navila": good, "random_walk_policy": bad})
    lines = table.splitlines()
    assert len(lines) == 4
    assert len({len(line) for line in lines}) == 1  # fixed width
    assert lines[0].split() == [
        "Policy",
        "N",
        "SR%",
        "SPL%",
        "OSR%",
        "nDTW%",
        "SDTW%",
        "NE(m)",
        "TL(m)",
        "Steps",
    ]
    assert lines[2].split() == [
        "navila",
        "1",
        "100.0",
        "80.0",
        "100.0",
        "90.0",
        "90.0",
        "1.00",
        "5.00",
        "20.0",
    ]
    assert lines[3].split()[:4] == ["random_walk_policy", "1", "0.0", "n/a"]
    assert lines[3].split()[7] == "n/a"
