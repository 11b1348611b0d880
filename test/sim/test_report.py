"""nvila-nav-report on two small evaluator folders written by nvila_nav.evaluation itself."""

import csv

import numpy as np
import pytest
from PIL import Image

from nvila_nav import report
from nvila_nav.evaluation import (
    END_AGENT_STOPPED,
    EpisodeRecorder,
    evaluate_episode,
    write_episode_result,
    write_summary,
)
from nvila_nav.sim.env import RenderingUnavailable
from nvila_nav.sim.episodes import generate_episodes, write_episodes

FORWARD, LEFT, STOP = "move forward 75 cm", "turn left 45 degrees", "stop"


def _result(episode, points, texts, label, max_actions=0):
    """Score an episode in which the robot passes `points` while `texts` go out evenly spread."""
    recorder = EpisodeRecorder(max_actions=max_actions, start_time=10.0)
    at = dict(
        zip(np.linspace(0, len(points) - 1, len(texts)).round().astype(int), texts, strict=True)
    )
    for k, (x, y) in enumerate(points):
        recorder.add_pose(10.0 + 0.5 * k, x, y, 0.0)
        if k in at:
            recorder.add_action(10.0 + 0.5 * k, at[k])
    if not recorder.done:
        recorder.add_action(10.0 + 0.5 * len(points), FORWARD)
    return evaluate_episode(episode, recorder, label)


def _write_run(folder, results, label):
    for result in results:
        write_episode_result(result, folder)
    write_summary(results, folder, label)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """good: episode 0 reached (4 actions), episode 1 given up at the start (2 actions);
    bad: episode 0 cut by the action limit (2 moves), episode 1 as good's."""
    root = tmp_path_factory.mktemp("report")
    episodes = generate_episodes("val_unseen", 2, seed=0)
    start = [e.start_position[:2] for e in episodes]
    route = [p[:2] for p in episodes[0].gt_locations]
    good = [
        _result(episodes[0], route, [FORWARD, FORWARD, FORWARD, STOP], "good"),
        _result(episodes[1], [start[1]] * 3, [LEFT, STOP], "good"),
    ]
    bad = [
        _result(episodes[0], [start[0]] * 4, [LEFT, LEFT, FORWARD], "bad", max_actions=2),
        _result(episodes[1], [start[1]] * 3, [LEFT, STOP], "bad"),
    ]
    return {
        "episodes": write_episodes(root / "episodes.json.gz", episodes),
        "good": _write_run(root / "good", good, "good"),
        "bad": _write_run(root / "bad", bad, "bad"),
        "short": _write_run(root / "short", good[:1], "good"),
        "results": {"good": good, "bad": bad},
        "ids": [e.episode_id for e in episodes],
    }


def _args(runs, out, *names, gifs=0):
    args = [f"--run={name}={runs[name]}" for name in names]
    return [*args, "--episodes", str(runs["episodes"]), "--out", str(out), "--gifs", str(gifs)]


def test_table_plot_and_failure_list(runs, tmp_path, capsys):
    assert report.main(_args(runs, tmp_path, "good", "bad")) == 0
    good, bad = runs["results"]["good"], runs["results"]["bad"]
    ended = [END_AGENT_STOPPED, END_AGENT_STOPPED, "action_limit", END_AGENT_STOPPED]
    assert [r["end_reason"] for r in good + bad] == ended
    assert good[0]["metrics"]["success"] and not good[1]["metrics"]["success"]

    def mean(results, key, scale=1):
        return np.mean([r["metrics"][key] for r in results]) * scale

    def row(name, results, sr, osr, steps, ended):
        return [
            name,
            "2",
            sr,
            f"{mean(results, 'spl', 100):.1f}",
            osr,
            f"{mean(results, 'ndtw', 100):.1f}",
            f"{mean(results, 'sdtw', 100):.1f}",
            f"{mean(results, 'ne'):.2f}",
            f"{mean(results, 'path_length'):.2f}",
            steps,
            ended,
        ]

    header = ["Policy", "N", "SR%", "SPL%", "OSR%", "nDTW%", "SDTW%", "NE(m)", "TL(m)", "Steps"]
    expected = [
        [*header, "Ended"],
        row("good", good, "50.0", "50.0", "3.0", f"{END_AGENT_STOPPED} 2"),
        row("bad", bad, "0.0", "0.0", "2.0", f"{END_AGENT_STOPPED} 1, action_limit 1"),
    ]
    with open(tmp_path / "table.csv", newline="") as f:
        assert list(csv.reader(f)) == expected
    markdown = (tmp_path / "table.md").read_text()
    assert markdown.splitlines()[2] == "| " + " | ".join(expected[1]) + " |"
    assert markdown.strip() in capsys.readouterr().out

    with Image.open(tmp_path / "episode_lengths.png") as im:
        assert im.width > 600 and im.height > 200
    failures = (tmp_path / "failures.md").read_text()
    assert "1 of 2 episodes failed" in failures and runs["ids"][1] in failures
    assert runs["ids"][0] not in failures


def test_runs_on_different_episodes_are_refused(runs, tmp_path, capsys):
    assert report.main(_args(runs, tmp_path, "good", "short")) == 1
    error = capsys.readouterr().err
    assert "short: 1 of 2, missing " + runs["ids"][1] in error and "good: 2 of 2" in error
    assert not (tmp_path / "table.md").exists()


def test_failure_gif_shows_camera_and_map(runs, tmp_path):
    args = [
        *_args(runs, tmp_path, "good", "bad", gifs=1),
        "--gif-run",
        "bad",
        "--gif-size",
        "64x48",
    ]
    try:
        assert report.main(args) == 0
    except RenderingUnavailable as exc:
        pytest.skip(str(exc))
    gifs = sorted((tmp_path / "failures").glob("*.gif"))
    assert [p.stem for p in gifs] == [runs["ids"][0]]  # the first failure by id, and only one
    with Image.open(gifs[0]) as im:
        assert im.n_frames == 3  # two actions, then the end
        assert im.width > 300
    assert f"(failures/{runs['ids'][0]}.gif)" in (tmp_path / "failures.md").read_text()
