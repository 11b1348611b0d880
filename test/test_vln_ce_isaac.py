"""VLN-CE-Isaac measures on hand-made paths with known answers, and its episode files."""

import gzip
import json
import math

import pytest

from nvila_nav.sim.episodes import Episode, Goal, read_episodes, write_episodes, yaw_to_quaternion
from nvila_nav.vln_ce_isaac import (
    MEASURES,
    IsaacMeasures,
    aggregate,
    distance_to_goal,
    episode_measures,
    format_table,
    from_isaac,
    read_any_episodes,
    read_isaac_episodes,
    to_isaac,
    write_isaac_episodes,
    wxyz_to_xyzw,
    xyzw_to_wxyz,
)

# An L-shaped route: 4 m east, then 3 m north; points every metre (7 m long).
L_PATH = [[float(x), 0.0, 0.0] for x in range(5)] + [[4.0, float(y), 0.0] for y in range(1, 4)]


def test_distance_to_goal_is_nearest_point_plus_remaining_polyline():
    # on the route's start: the whole 7 m
    assert distance_to_goal([0, 0, 0], L_PATH) == pytest.approx(7.0)
    # 0.5 m beside the point (2, 0): 0.5 + 2 east + 3 north
    assert distance_to_goal([2, -0.5, 0], L_PATH) == pytest.approx(5.5)
    # the goal itself, and 1 m past it (not Euclidean, not geodesic: nearest point + rest)
    assert distance_to_goal([4, 3, 0], L_PATH) == pytest.approx(0.0)
    assert distance_to_goal([4, 4, 0], L_PATH) == pytest.approx(1.0)
    # from (0, 3) the goal is 4 m away in a straight line; the nearest route point is the
    # start (3 m; (1, 0) is 3.16 m, the goal 4 m), so the distance is 3 + 7
    assert distance_to_goal([0, 3, 0], L_PATH) == pytest.approx(10.0)
    # height counts (3-D root position): 0.4 m above the route's end
    assert distance_to_goal([4, 3, 0.4], L_PATH) == pytest.approx(0.4)
    # equally near points: the first wins (here (1,0) and (2,0) from (1.5, 1))
    assert distance_to_goal([1.5, 1.0, 0], L_PATH) == pytest.approx(math.hypot(0.5, 1) + 6)


def test_measures_of_a_run_that_stops_at_the_goal():
    # walk the route in 0.5 m steps, stop 0.2 m short of its end
    positions = [[x / 2, 0.0, 0.0] for x in range(9)] + [[4.0, y / 2, 0.0] for y in range(1, 6)]
    positions.append([4.0, 2.8, 0.0])
    flags = [False] * (len(positions) - 2) + [True]
    m = episode_measures(positions, L_PATH, radius=1.0, stop_called=flags)
    assert m["path_length"] == pytest.approx(6.8)
    assert m["distance_to_goal"] == pytest.approx(0.2)
    assert m["success"] == 1.0
    assert m["spl"] == pytest.approx(7.0 / 7.0)  # shorter than d0: SPL is 1
    assert m["oracle_navigation_error"] == pytest.approx(0.2)
    assert m["oracle_success"] == 1.0
    assert list(m) == list(MEASURES)


def test_detour_lowers_spl_and_a_stop_far_away_fails():
    # out 2 m west and back, then along the route to 0.4 m short of the goal: 4 + 6.6 m
    positions = [[0, 0, 0], [-1, 0, 0], [-2, 0, 0], [-1, 0, 0], [0, 0, 0]]
    positions += [[x, 0, 0] for x in range(1, 5)] + [[4, 1, 0], [4, 2, 0], [4, 2.6, 0]]
    m = episode_measures(positions, L_PATH, radius=1.0, stop_called=True)
    assert m["success"] == 1.0
    assert m["distance_to_goal"] == pytest.approx(0.4)
    assert m["path_length"] == pytest.approx(10.6)
    assert m["spl"] == pytest.approx(7.0 / 10.6)
    # walks past the goal (oracle success), comes back and stops 2 m away
    positions = [[4, 0, 0], [4, 1, 0], [4, 2, 0], [4, 3, 0], [4, 2, 0], [4, 1, 0]]
    m = episode_measures(positions, L_PATH, radius=1.0, stop_called=True)
    assert m["success"] == 0.0 and m["spl"] == 0.0
    assert m["distance_to_goal"] == pytest.approx(2.0)
    assert m["oracle_success"] == 1.0 and m["oracle_navigation_error"] == pytest.approx(0.0)


def test_success_needs_the_stop_and_a_distance_below_the_radius():
    at_goal = [[4, 0, 0], [4, 1, 0], [4, 2, 0], [4, 2.7, 0]]
    # halfway between two route points the earlier one in gt_locations counts:
    # (4, 2.5) is 0.5 from (4, 2) and (4, 3), so 0.5 + 1 m of route remain
    assert distance_to_goal([4, 2.5, 0], L_PATH) == pytest.approx(1.5)
    assert episode_measures(at_goal, L_PATH, 1.0, stop_called=False)["success"] == 0.0
    assert episode_measures(at_goal, L_PATH, 1.0, stop_called=True)["success"] == 1.0
    # exactly on the radius is not inside it (strict <)
    on_radius = [[4, 0, 0], [4, 2, 0]]
    assert episode_measures(on_radius, L_PATH, 1.0, stop_called=True)["success"] == 0.0
    # the stop flag of an earlier step does not count if the agent then moved away
    m = episode_measures([*at_goal, [4, 0, 0]], L_PATH, 1.0, [False, False, True, False])
    assert m["success"] == 0.0


def test_distance_is_only_recomputed_after_a_move_of_more_than_1e_4():
    tracker = IsaacMeasures(L_PATH, 1.0)
    tracker.reset([2, 0, 0])
    tracker.update([2, 0.00009, 0], False)  # within allclose's atol: the metric stays
    assert tracker.distance_to_goal == pytest.approx(5.0)
    tracker.update([2, 0.5, 0], False)
    assert tracker.distance_to_goal == pytest.approx(5.5)
    with pytest.raises(RuntimeError):
        IsaacMeasures(L_PATH, 1.0).update([0, 0, 0], False)
    with pytest.raises(ValueError):
        IsaacMeasures(L_PATH, 0.0)


def test_aggregate_and_table():
    runs = [
        episode_measures([[4, 2, 0], [4, 2.6, 0]], L_PATH, 1.0, True),
        episode_measures([[0, 0, 0], [1, 0, 0]], L_PATH, 1.0, True),
    ]
    summary = aggregate(runs)
    assert summary["count"] == 2 and summary["success"] == 0.5
    assert summary["distance_to_goal"] == pytest.approx((0.4 + 6.0) / 2)
    table = format_table({"expert": summary})
    assert "SR%" in table and "50.0" in table and "NE(m)" in table


def _episode() -> Episode:
    return Episode(
        episode_id="val_unseen-A0-00007",
        trajectory_id=7,
        scene_id="scene_01003",
        start_position=(1.0, 2.0, 0.0),
        start_rotation=tuple(yaw_to_quaternion(0.7)),
        goals=(Goal((4.0, 2.0, 0.0), 1.5),),
        reference_path=((1.0, 2.0, 0.0), (2.0, 2.0, 0.0), (4.0, 2.0, 0.0)),
        instruction_text="Walk to the sofa and stop.",
        info={"goal_landmark": "sofa", "initial_turn_deg": 0.0},
    )


def test_episodes_convert_to_vln_ce_isaac_and_back(tmp_path):
    episode = _episode()
    isaac = to_isaac(episode, 1)
    assert isaac["episode_id"] == 1 and isaac["scene_id"] == "scene_01003"
    x, y, z, w = episode.start_rotation
    assert isaac["start_rotation"] == pytest.approx([w, x, y, z])  # Isaac Lab order
    assert isaac["goals"] == [{"position": [4.0, 2.0, 0.0], "radius": 1.5}]
    assert isaac["instruction"] == {"instruction_text": "Walk to the sofa and stop."}
    # gt_locations made every 25 cm along the reference path (3 m: 13 points)
    assert len(isaac["gt_locations"]) == 13
    assert isaac["gt_locations"][1] == pytest.approx([1.25, 2.0, 0.0])
    path = write_isaac_episodes(tmp_path / "vln_ce_isaac_v1.json.gz", [isaac])
    with gzip.open(path, "rt") as handle:
        assert json.load(handle)["episodes"][0]["episode_id"] == 1
    (back,) = [from_isaac(e) for e in read_isaac_episodes(path)]
    assert back.episode_id == episode.episode_id
    assert back.start_rotation == pytest.approx(episode.start_rotation)
    assert back.goals == episode.goals and back.reference_path == episode.reference_path
    assert back.info == episode.info and back.instruction_text == episode.instruction_text
    # either format is read by read_any_episodes
    r2r = write_episodes(tmp_path / "r2r.json.gz", [episode])
    assert read_any_episodes(r2r)[0].episode_id == episode.episode_id
    assert read_any_episodes(path)[0].gt_locations == back.gt_locations
    assert read_episodes(r2r)[0] == episode
    assert wxyz_to_xyzw(xyzw_to_wxyz([0.1, 0.2, 0.3, 0.9])) == [0.1, 0.2, 0.3, 0.9]


def test_episode_files_missing_what_navila_bench_reads_are_refused(tmp_path):
    isaac = to_isaac(_episode(), 1)
    for key in ("gt_locations", "start_rotation", "instruction"):
        broken = {k: v for k, v in isaac.items() if k != key}
        with pytest.raises(ValueError, match=key):
            write_isaac_episodes(tmp_path / "x.json", [broken])
    no_radius = dict(isaac, goals=[{"position": [0, 0, 0], "radius": None}])
    with pytest.raises(ValueError, match="radius"):
        write_isaac_episodes(tmp_path / "x.json", [no_radius])
    with pytest.raises(ValueError, match="radius"):
        to_isaac(Episode.from_dict(dict(_episode().to_dict(), goals=[{"position": [0, 0, 0]}])), 1)
