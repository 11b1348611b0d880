"""nvila-sim command line and the throughput benchmark, at toy sizes."""

import csv
import subprocess
import sys

import pytest
from PIL import Image

from nvila_nav.sim import bench, cli
from nvila_nav.sim.dataset import load_dataset
from nvila_nav.sim.episodes import read_episodes


@pytest.fixture(scope="module")
def episodes_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("eps") / "val_unseen.json.gz"
    assert (
        cli.main(
            ["episodes", "--split", "val_unseen", "--n", "3", "--seed", "1", "--out", str(path)]
        )
        == 0
    )
    return path


def test_episodes_command_writes_readable_episodes(episodes_file):
    episodes = read_episodes(episodes_file)
    assert len(episodes) == 3 and all(e.scene_id.startswith("nvsim/scene_1") for e in episodes)


def test_rollout_command_writes_a_dataset(tmp_path, episodes_file, capsys):
    out = tmp_path / "data"
    args = ["rollout", "--episodes", str(episodes_file), "--out", str(out), "--limit", "2"]
    assert cli.main([*args, "--width", "48", "--height", "36"]) == 0
    data = load_dataset(out)
    assert [e.episode.episode_id for e in data.episodes] == [
        e.episode_id for e in read_episodes(episodes_file)[:2]
    ]
    assert all(e.success for e in data.episodes)
    progress = capsys.readouterr().err  # not a terminal: whole lines, no redrawn bar
    assert "\r" not in progress
    assert progress.splitlines()[0] == "rollout: 0/2 ep"
    assert progress.splitlines()[-1].startswith("rollout: done, 2 ep in ")


def test_python_m_nvila_nav_sim_cli_runs_the_command(tmp_path):
    out = tmp_path / "eps.json.gz"
    argv = ["episodes", "--split", "val_unseen", "--n", "2", "--seed", "3", "--out", str(out)]
    subprocess.run([sys.executable, "-m", "nvila_nav.sim.cli", *argv], check=True, timeout=120)
    assert len(read_episodes(out)) == 2


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_view_command_draws_strip_or_animation(tmp_path, episodes_file, suffix):
    out = tmp_path / f"view{suffix}"
    args = ["view", "--episodes", str(episodes_file), "--index", "1", "--out", str(out)]
    assert cli.main([*args, "--width", "64", "--height", "48"]) == 0
    with Image.open(out) as im:
        assert im.width > 300
        if suffix == ".gif":
            assert im.n_frames > 4


def test_view_rejects_bad_index_and_extension(episodes_file, tmp_path):
    assert (
        cli.main(
            [
                "view",
                "--episodes",
                str(episodes_file),
                "--index",
                "9",
                "--out",
                str(tmp_path / "a.png"),
            ]
        )
        == 2
    )
    assert (
        cli.main(["view", "--episodes", str(episodes_file), "--out", str(tmp_path / "a.mp4")]) == 2
    )


def test_module_entry_point_prints_help():
    result = subprocess.run(
        [sys.executable, "-m", "nvila_nav.sim", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "rollout" in result.stdout


def test_bench_writes_csv_and_chart(tmp_path):
    assert bench.main(["--out", str(tmp_path), "--frames", "3", "--sizes", "32x24"]) == 0
    with open(tmp_path / "sim_bench.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["mode"] for r in rows} == {"render", "step", "step+render"}
    assert all(float(r["fps"]) > 0 for r in rows)
    assert (tmp_path / "sim_bench.png").stat().st_size > 1000
