"""NaVILA-Bench's loop on the embedded simulator, end to end over TCP against the server:
the expert-backed server (which must reach every goal) and the shipped navila-nano model."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from nvila_core.serve.protocol import ANSWERS, bench_command
from nvila_nav.navila_bench import (
    CONTROL_DT,
    END_STOP,
    BenchClient,
    ExpertResponder,
    ServerThread,
    main,
    run_episode,
    run_episodes,
)
from nvila_nav.sim.env import Simulator
from nvila_nav.sim.episodes import generate_episodes
from nvila_nav.sim.robot import CameraConfig
from nvila_nav.vln_ce_isaac import MEASURES, read_any_episodes, read_isaac_episodes

NANO = Path(__file__).resolve().parents[2] / "models" / "navila-nano"


@pytest.fixture(scope="module")
def episodes():
    return generate_episodes("val_unseen", 2, tier="A")


class Recording:
    """A responder wrapper that keeps what each request carried."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.seen = []

    def respond(self, request):
        self.seen.append((request.padding, [im.size for im in request.images]))
        return self.inner.respond(request)

    def record_reply(self, request, reply):
        self.inner.record_reply(request, reply)


def test_expert_server_loop_reaches_every_goal_with_navila_bench_timing(episodes, tmp_path):
    responder = Recording(ExpertResponder(episodes))
    with ServerThread(responder) as server:
        client = BenchClient("127.0.0.1", server.port)
        summary = run_episodes(episodes, client, tmp_path, "expert", side_channel=True)
        stats = server.server.stats
    assert summary["metrics"]["success"] == 1.0 and summary["metrics"]["count"] == 2
    assert summary["metrics"]["spl"] > 0.8
    assert summary["ended"] == {END_STOP: 2}
    assert summary["default_replies"] == 0
    assert stats.fallbacks == 0 and stats.errors == 0 and stats.rejected == 0
    # requests as NaVILA-Bench sends them: 8 frames of 512x512, black padding in front
    first_padding, sizes = responder.seen[0]
    assert first_padding == 7 and sizes == [(512, 512)] * 8
    written = sorted(p.name for p in (tmp_path / "episodes").iterdir())
    assert written == sorted(f"{e.episode_id}.json" for e in episodes)
    # a frame every 0.5 s of sim time: after an action of d seconds, 2*d more real frames
    first = json.loads((tmp_path / "episodes" / f"{episodes[0].episode_id}.json").read_text())
    real = 1
    for (padding, _), decision in zip(responder.seen, first["decisions"], strict=False):
        assert padding == max(8 - real, 0)
        real += round(decision["duration_s"] / 0.5)
    assert (tmp_path / "summary.json").is_file()


def test_actions_run_for_navila_bench_durations(episodes):
    (episode,) = episodes[:1]
    with (
        ServerThread(ExpertResponder(episodes)) as server,
        Simulator(CameraConfig(width=512, height=512)) as sim,
    ):
        result = run_episode(sim, episode, BenchClient("127.0.0.1", server.port), True)
    decisions = result.decisions
    for now, after in itertools.pairwise(decisions):
        command = bench_command(now.reply)
        assert after.step - now.step == int(command.duration_s / CONTROL_DT)  # 25/50/75 steps
    # a stop runs two zero-velocity control steps, then the episode ends (measured with stop)
    assert decisions[-1].reply == ANSWERS[-1]
    assert result.steps == decisions[-1].step + 2
    assert result.measurements["success"] == 1.0
    assert list(result.measurements) == list(MEASURES)
    # the executed motion: a turn of 45 degrees is pi/6 rad/s for 1.5 s
    trajectory = np.asarray(result.trajectory)
    assert len(trajectory) == result.steps + 1
    travelled = float(np.linalg.norm(np.diff(trajectory, axis=0), axis=1).sum())
    assert travelled == pytest.approx(result.measurements["path_length"], rel=1e-6)
    forward = sum(bench_command(d.reply).duration_s for d in decisions if "forward" in d.reply)
    assert travelled == pytest.approx(0.5 * forward, rel=0.1)


def test_expert_without_the_side_channel_gets_the_fallback_not_a_crash(episodes):
    frame = np.zeros((64, 64, 3), np.uint8) + 80
    with ServerThread(ExpertResponder(episodes)) as server:
        reply = BenchClient("127.0.0.1", server.port).ask([frame], "go to the sofa")
        assert reply == "The next action is turn left 15 degrees."
        assert server.server.stats.errors == 1


@pytest.mark.skipif(not (NANO / "config.json").is_file(), reason="models/navila-nano is absent")
def test_model_server_loop_with_navila_nano(episodes, tmp_path, capsys):
    from nvila_core.runtime.engine import Engine
    from nvila_core.serve.engine_responder import EngineResponder

    responder = EngineResponder(Engine.from_pretrained(NANO), decoding="choose")
    with ServerThread(responder) as server:
        client = BenchClient("127.0.0.1", server.port)
        summary = run_episodes(episodes[:1], client, tmp_path, "navila-nano")
        stats = server.server.stats
    assert summary["decisions"] == stats.replies >= 1
    assert summary["default_replies"] == 0 and stats.errors == 0 and stats.rejected == 0
    metrics = summary["metrics"]
    assert set(MEASURES) <= set(metrics) and 0.0 <= metrics["spl"] <= metrics["success"] <= 1.0
    assert math.isfinite(metrics["distance_to_goal"])


def test_convert_command_round_trips(episodes, tmp_path, capsys):
    from nvila_nav.sim.episodes import write_episodes

    r2r = write_episodes(tmp_path / "r2r.json.gz", episodes)
    isaac = tmp_path / "vln_ce_isaac_v1.json.gz"
    assert main(["convert", str(r2r), str(isaac)]) == 0
    raw = read_isaac_episodes(isaac)
    assert [e["episode_id"] for e in raw] == [1, 2]
    back = tmp_path / "back.json.gz"
    assert main(["convert", str(isaac), str(back), "--to", "r2r"]) == 0
    assert read_any_episodes(back) == episodes
    assert "2 episodes" in capsys.readouterr().out


def test_summarize_reads_navila_bench_and_loop_results(tmp_path, capsys):
    bench_dir = tmp_path / "measurements"
    bench_dir.mkdir()
    for index, (success, dtg) in enumerate([(1.0, 0.5), (0.0, 4.5)]):
        measures = {
            "path_length": 6.0,
            "distance_to_goal": dtg,
            "success": success,
            "spl": 0.8 * success,
            "oracle_navigation_error": 0.5,
            "oracle_success": 1.0,
        }
        (bench_dir / f"{index}.json").write_text(json.dumps(measures))
    assert main(["summarize", str(bench_dir), "--label", "go2"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("go2"))
    assert row.split()[1:] == ["2", "50.0", "40.0", "100.0", "2.50", "0.50", "6.00"]
    (bench_dir / "bad.json").write_text("{}")
    assert main(["summarize", str(bench_dir)]) == 2
    assert "not a measurements file" in capsys.readouterr().err


def test_loop_command_runs_the_expert_server(episodes, tmp_path, capsys):
    from nvila_nav.sim.episodes import write_episodes

    path = write_episodes(tmp_path / "eps.json.gz", episodes)
    assert (
        main(
            [
                "loop",
                "--episodes",
                str(path),
                "--limit",
                "1",
                "--server",
                "expert",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "VLN-CE-Isaac" in out and "expert server" in out and "'fallbacks': 0" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["metrics"]["success"] == 1.0 and summary["server"]["rejected"] == 0


def test_serve_expert_and_run_commands_in_separate_processes(episodes, tmp_path):
    """The two commands as a user runs them: a server process, a client process, SIGTERM."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    from nvila_nav.sim.episodes import write_episodes

    path = write_episodes(tmp_path / "eps.json.gz", episodes[:1])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "nvila_nav.navila_bench"]
    server = subprocess.Popen(
        [*command, "serve-expert", "--episodes", str(path), "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert f"127.0.0.1:{port}" in server.stderr.readline()
        client = subprocess.run(
            [
                *command,
                "run",
                "--episodes",
                str(path),
                "--port",
                str(port),
                "--side-channel",
                "--out",
                str(tmp_path / "out"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert client.returncode == 0, client.stderr
        assert "100.0" in client.stdout  # the expert reached the goal
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    log = server.stderr.read()
    assert "reply='The next action is stop.'" in log and "server stopped" in log
