"""The demo's overview picture, drawn from evaluator output files, and the demo's model choice."""

import json

import numpy as np
import pytest
from PIL import Image

from nvila_nav import demo, overview
from nvila_nav.evaluation import (
    EpisodeRecorder,
    evaluate_episode,
    plot_episode,
    write_episode_result,
    write_summary,
)
from nvila_nav.report import ReportError, load_run
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


def _write_run(folder, episodes, results, label):
    """An evaluator output folder as the evaluator node writes it: JSON, plots, summary."""
    for episode, result in zip(episodes, results, strict=False):
        write_episode_result(result, folder)
        plot_episode(episode, result, folder)
    write_summary(results, folder, label)
    return folder


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """expert: both episodes reached along the reference route; model: episode 0 cut by the
    action limit at the start, episode 1 never run (a run that covers fewer episodes)."""
    root = tmp_path_factory.mktemp("overview")
    episodes = generate_episodes("val_unseen", 2, seed=0)
    expert = [
        _result(e, [p[:2] for p in e.gt_locations], [FORWARD, FORWARD, STOP], "expert")
        for e in episodes
    ]
    start = episodes[0].start_position[:2]
    model = [_result(episodes[0], [start] * 4, [LEFT, LEFT, FORWARD], "model", max_actions=2)]
    return {
        "episodes": episodes,
        "episodes_file": write_episodes(root / "episodes.json.gz", episodes),
        "expert": _write_run(root / "expert", episodes, expert, "expert"),
        "model": _write_run(root / "model", episodes, model, "model"),
        "results": {"expert": expert, "model": model},
    }


def _colour_pixels(image: np.ndarray, hex_colour: str, tolerance: int = 12) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(image[..., :3].astype(int) - rgb).max(axis=-1) <= tolerance).sum())


def test_overview_from_evaluator_files_shows_every_episode_and_outcome(evaluated, tmp_path):
    results = evaluated["results"]
    assert all(r["metrics"]["success"] for r in results["expert"])
    assert results["model"][0]["end_reason"] == "action_limit"
    assert not results["model"][0]["metrics"]["success"]

    runs = [load_run("expert", evaluated["expert"]), load_run("model", evaluated["model"])]
    figure = overview.draw_overview(runs, evaluated["episodes"], title="two runs")
    axes = figure.axes
    assert len(axes) == 4  # 2 runs x 2 episodes
    first, second = evaluated["episodes"]
    assert first.episode_id in axes[0].get_title(loc="left")
    # the instruction is wrapped into the column head, word for word
    assert axes[1].get_title(loc="left").split()[1:] == second.instruction_text.split()
    labels = [ax.get_xlabel() for ax in axes]
    assert labels[0] == overview.outcome(results["expert"][0])
    expert_end = results["expert"][0]["end_reason"]
    assert labels[0].startswith(f"SUCCESS: {expert_end}, ") and labels[0].endswith(" actions")
    assert labels[2].startswith("FAILURE: action_limit, ")
    assert f"{results['model'][0]['metrics']['ne']:.2f} m to goal" in labels[2]
    assert labels[3] == "not run"
    assert axes[0].get_ylabel() == "expert\n2 of 2 reached the goal"
    assert axes[2].get_ylabel() == "model\n0 of 1 reached the goal"
    # each drawn trajectory is the recorded one
    drawn = [line for line in axes[0].lines if line.get_label() == "robot"]
    recorded = np.asarray(results["expert"][0]["trajectory"])[:, 1:3]
    assert len(drawn) == 1 and np.allclose(drawn[0].get_xydata(), recorded)
    assert not [line for line in axes[3].lines if line.get_label() == "robot"]

    path = overview.write_overview(tmp_path / "sub" / "overview.png", runs, evaluated["episodes"])
    assert path.stat().st_size > 50_000
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[1] > 800 and image.shape[0] > 600
    assert np.unique(image.reshape(-1, 3), axis=0).shape[0] > 200
    assert _colour_pixels(image, overview.SUCCESS_COLOUR) > 500  # green frames: successes
    assert _colour_pixels(image, overview.FAILURE_COLOUR) > 500  # red frame: the failure


def test_overview_cli(evaluated, tmp_path, capsys):
    out = tmp_path / "o.png"
    args = [
        f"--run=expert={evaluated['expert']}",
        f"--run=model={evaluated['model']}",
        "--episodes",
        str(evaluated["episodes_file"]),
        "--out",
        str(out),
    ]
    assert overview.main(args) == 0
    assert f"wrote {out} (2 runs x 2 episodes)" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.width > 800
    empty = tmp_path / "empty"
    empty.mkdir()
    assert overview.main([f"--run=x={empty}", "--episodes", str(evaluated["episodes_file"])]) == 1
    assert "no evaluator results" in capsys.readouterr().err
    with pytest.raises(ReportError):
        overview.draw_overview([], evaluated["episodes"])


def test_demo_uses_navila_nano_when_present_else_tiny(tmp_path):
    nano = tmp_path / "models" / "navila-nano"
    assert demo.default_model(nano) == "tiny"
    nano.mkdir(parents=True)
    assert demo.default_model(nano) == "tiny"  # an empty folder is no checkpoint
    (nano / "config.json").write_text(json.dumps({"model_type": "llava_llama"}))
    assert demo.default_model(nano) == str(nano)


def test_demo_refuses_an_unknown_model_before_starting_a_graph(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--model", str(tmp_path / "missing"), "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert "is neither a checkpoint folder nor a model preset" in error and "tiny" in error
    assert "Traceback" not in error
    assert not out.exists()
    demo.check_model("tiny")
    demo.check_model(str(tmp_path))
