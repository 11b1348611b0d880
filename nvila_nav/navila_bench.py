"""NaVILA-Bench's evaluation loop on the embedded MuJoCo simulator, against a VLM server.

NaVILA-Bench (Isaac Sim) asks a VLM server over TCP for every mid-level action
(`nvila_core.serve.protocol`). This module is its client, played on the embedded simulator, so
the whole loop runs without Isaac: the same 512x512 frames every 0.5 s of sim time, the same
black-frame padding and `int(i*(n-1)/7)` sampling, the same substring parser, the same timed
velocity commands (45/30/15 deg or 75/50/25 cm held for 1.5/1.0/0.5 s at pi/6 rad/s or 0.5 m/s,
in 50 Hz control steps), the same episode ends (stop; 2500 control steps; 1000 steps without
moving) and the VLN-CE-Isaac measures (`nvila_nav.vln_ce_isaac`) updated every step.

One timing detail is NaVILA-Bench's and is kept: a frame is stored after control steps
0, 25, 50, ..., and the server is asked before the step at which an action ends, so the
"current" frame a request carries was taken 24 control steps (0.48 s) before the decision.

Servers: any NaVILA-Bench server (`nvila-core serve` on a checkpoint, NaVILA's own
vlm_server.py), or the simulator's expert (`ExpertResponder`), which needs each request's
episode and pose: with `side_channel` the client adds them to the request JSON under the key
"nvila_nav" ({"episode_id": ..., "pose": [x, y, yaw]}). Servers that do not know the key ignore
it; NaVILA-Bench's own client never sends it.

    nvila-nav-navila-bench loop --episodes eps.json.gz --server expert --out outputs/nb/expert
    nvila-nav-navila-bench loop --episodes eps.json.gz --server model --model models/navila-nano \\
        --decoding choose --out outputs/nb/nano
    nvila-core serve --model models/navila-nano --decoding choose &     # a separate server
    nvila-nav-navila-bench run --episodes eps.json.gz --port 54321 --out outputs/nb/nano
    nvila-nav-navila-bench convert eps.json.gz vln_ce_isaac_v1.json.gz   # R2R -> VLN-CE-Isaac
    nvila-nav-navila-bench summarize eval_results/go2_matterport_vision_loco_RUN/measurements
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nvila_core.serve.protocol import (
    DEFAULT_PORT,
    FRAME_SIZE,
    HEADER_BYTES,
    BenchCommand,
    BenchRequest,
    bench_command,
    encode_request,
)
from nvila_nav import vln_ce_isaac
from nvila_nav.sim.episodes import Episode

log = logging.getLogger("nvila_nav.navila_bench")

SIDE_CHANNEL_KEY = "nvila_nav"
CONTROL_DT = 0.005 * 4
"""NaVILA-Bench's control step: sim dt 0.005 s, decimation 4 (50 Hz)."""
FRAME_PERIOD_STEPS = 0.5 / CONTROL_DT
"""A frame every 0.5 s of sim time (25 control steps), as NaVILA-Bench's `steps_per_image`."""
MAX_EPISODE_STEPS = 100 * 0.5 / CONTROL_DT
"""2500 control steps (50 s of sim time)."""
SAME_POSITION_STEPS = 1000
"""The episode ends after this many consecutive steps without moving (VLNEnvWrapper)."""

END_STOP = "stop"
END_STEP_LIMIT = "step_limit"
END_STUCK = "stuck"


class ServerError(RuntimeError):
    """The server closed the connection without a reply, or replied with something that is
    not a JSON string: NaVILA-Bench's client would end the evaluation here."""


# ---------------------------------------------------------------- client
@dataclass
class BenchClient:
    """One connection per request, as NaVILA-Bench's client."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    timeout_s: float = 300.0
    token: str | None = None

    def ask(self, frames: Sequence[np.ndarray], query: str, extra: dict | None = None) -> str:
        extra = dict(extra or {})
        if self.token is not None:
            extra["token"] = self.token
        request = encode_request(list(frames), query, extra)
        with socket.create_connection((self.host, self.port), timeout=self.timeout_s) as conn:
            conn.sendall(request)
            size = int.from_bytes(_recv_exact(conn, HEADER_BYTES), "big")
            body = _recv_exact(conn, size)
        try:
            reply = json.loads(body.decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ServerError(f"the reply is not JSON: {err}") from None
        if not isinstance(reply, str) or not reply:
            raise ServerError(f"the reply is not a non-empty JSON string: {reply!r}")
        return reply


def _recv_exact(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(min(count - len(data), 1 << 16))
        if not chunk:
            raise ServerError(
                f"the server closed the connection after {len(data)} of {count} bytes"
            )
        data += chunk
    return data


# ---------------------------------------------------------------- the episode loop
@dataclass
class Decision:
    step: int
    reply: str
    command: BenchCommand
    latency_s: float


@dataclass
class BenchEpisode:
    """One episode of the loop: its VLN-CE-Isaac measures, how it ended, what was decided."""

    episode: Episode
    measurements: dict[str, float]
    end_reason: str
    steps: int
    decisions: list[Decision] = field(default_factory=list)
    trajectory: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def default_replies(self) -> int:
        """Replies NaVILA-Bench's parser only understood through its silent forward default."""
        return sum(d.command.default for d in self.decisions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "episode_id": self.episode.episode_id,
            "scene_id": self.episode.scene_id,
            "instruction": self.episode.instruction_text,
            "measurements": self.measurements,
            "end_reason": self.end_reason,
            "control_steps": self.steps,
            "decisions": [
                {
                    "step": d.step,
                    "reply": d.reply,
                    "branch": d.command.branch,
                    "duration_s": d.command.duration_s,
                    "latency_s": round(d.latency_s, 4),
                }
                for d in self.decisions
            ],
            "default_replies": self.default_replies,
            "trajectory": [[round(v, 4) for v in p] for p in self.trajectory],
        }


def _position(sim) -> tuple[float, float, float]:
    pose = sim.pose
    return (pose.x, pose.y, 0.0)


def run_episode(
    sim, episode: Episode, client: BenchClient, side_channel: bool = False
) -> BenchEpisode:
    """NaVILA-Bench's navila_eval.py main loop on `sim` (a Simulator with a 512x512 camera)."""
    if not episode.goals or episode.goal.radius is None:
        raise ValueError(f"episode {episode.episode_id}: VLN-CE-Isaac needs a goal radius")
    gt = episode.gt_locations or vln_ce_isaac.to_isaac(episode, 1)["gt_locations"]
    measures = vln_ce_isaac.IsaacMeasures(gt, episode.goal.radius)
    obs = sim.reset(episode, render=True)
    measures.reset(_position(sim))
    frames = [obs.rgb]
    result = BenchEpisode(episode, {}, END_STEP_LIMIT, 0, trajectory=[_position(sim)])
    num_steps = target_steps = steps_to_go = same_position = 0
    command = bench_command("stop")
    stop_called = False
    previous = np.asarray(_position(sim))
    while True:
        if num_steps == target_steps:
            extra = None
            if side_channel:
                pose = sim.pose
                extra = {
                    SIDE_CHANNEL_KEY: {
                        "episode_id": episode.episode_id,
                        "pose": [pose.x, pose.y, pose.yaw],
                    }
                }
            start = time.perf_counter()
            reply = client.ask(frames, episode.instruction_text, extra)
            command = bench_command(reply)
            result.decisions.append(
                Decision(num_steps, reply, command, time.perf_counter() - start)
            )
            steps_to_go = int(command.duration_s / CONTROL_DT)
            target_steps = num_steps + steps_to_go
        vx, _vy, wz = command.velocity
        frame_due = num_steps % FRAME_PERIOD_STEPS == 0
        obs = sim.step(vx, wz, CONTROL_DT, render=frame_due)
        position = _position(sim)
        measures.update(position, stop_called)
        result.trajectory.append(position)
        current = np.asarray(position)
        speed = math.hypot(*obs.velocity)
        same_position = (
            same_position + 1 if (np.linalg.norm(current - previous) < 0.01 and speed < 0.1) else 0
        )
        previous = current
        if stop_called:
            result.end_reason = END_STOP
            break
        if same_position >= SAME_POSITION_STEPS:
            result.end_reason = END_STUCK
            break
        if num_steps > MAX_EPISODE_STEPS:
            result.end_reason = END_STEP_LIMIT
            break
        if frame_due:
            frames.append(obs.rgb)
        num_steps += 1
        if steps_to_go == 0:
            stop_called = True
    result.steps = num_steps + 1
    result.measurements = measures.measurements()
    return result


def run_episodes(
    episodes: Sequence[Episode],
    client: BenchClient,
    out: str | Path | None = None,
    label: str = "server",
    side_channel: bool = False,
    camera_size: int = FRAME_SIZE,
) -> dict[str, Any]:
    """Every episode through the loop; per-episode JSON under out/episodes/ and a summary
    (VLN-CE-Isaac means, end reasons, replies only the forward default understood)."""
    from nvila_core.progress import Progress
    from nvila_nav.sim.env import Simulator
    from nvila_nav.sim.robot import CameraConfig

    results = []
    out_dir = Path(out) if out else None
    with (
        Simulator(CameraConfig(width=camera_size, height=camera_size)) as sim,
        Progress(len(episodes), f"NaVILA-Bench loop {label}", "ep") as bar,
    ):
        for episode in episodes:
            result = run_episode(sim, episode, client, side_channel)
            results.append(result)
            if out_dir is not None:
                path = out_dir / "episodes" / f"{episode.episode_id}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(result.to_dict(), indent=1))
            successes = sum(r.measurements["success"] for r in results)
            bar.set_postfix(SR=f"{successes:.0f}/{len(results)}")
            bar.update(1)
    summary = summarize(results, label)
    if out_dir is not None:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def summarize(results: Sequence[BenchEpisode], label: str) -> dict[str, Any]:
    ends: dict[str, int] = {}
    for r in results:
        ends[r.end_reason] = ends.get(r.end_reason, 0) + 1
    latencies = [d.latency_s for r in results for d in r.decisions]
    return {
        "label": label,
        "metrics": vln_ce_isaac.aggregate([r.measurements for r in results]),
        "ended": ends,
        "decisions": len(latencies),
        "default_replies": sum(r.default_replies for r in results),
        "mean_request_s": float(np.mean(latencies)) if latencies else 0.0,
    }


def summary_lines(summaries: Sequence[dict[str, Any]]) -> str:
    table = vln_ce_isaac.format_table({s["label"]: s["metrics"] for s in summaries})
    notes = [
        f"{s['label']}: ended {s['ended']}, {s['decisions']} requests "
        f"({s['mean_request_s'] * 1e3:.0f} ms mean), {s['default_replies']} replies only the "
        "parser's forward default understood"
        for s in summaries
    ]
    return "\n".join(
        ["VLN-CE-Isaac measures (NaVILA-Bench loop, embedded simulator)", table, *notes]
    )


# ---------------------------------------------------------------- the expert behind a server
class ExpertResponder:
    """The simulator's expert as a NaVILA-Bench server: answers from the episode and pose the
    client's side channel names (requests without it fail, and the server answers its
    fallback and logs why). A request with one real frame starts the episode afresh."""

    name = "simulator expert"

    def __init__(self, episodes: Sequence[Episode]) -> None:
        self.episodes = {e.episode_id: e for e in episodes}
        self._experts: dict[str, Any] = {}

    def respond(self, request: BenchRequest) -> str:
        from nvila_nav.sim.expert import Expert
        from nvila_nav.sim.geometry import Pose
        from nvila_nav.sim.world import world_for_scene

        channel = request.extra.get(SIDE_CHANNEL_KEY)
        if not isinstance(channel, dict):
            raise ValueError(
                f'the expert needs the "{SIDE_CHANNEL_KEY}" side channel in the request'
            )
        episode_id, pose = channel.get("episode_id"), channel.get("pose")
        episode = self.episodes.get(episode_id)
        if episode is None:
            raise ValueError(f"unknown episode {episode_id!r}")
        if not (
            isinstance(pose, list)
            and len(pose) == 3
            and all(isinstance(v, (int, float)) for v in pose)
        ):
            raise ValueError(f"pose must be [x, y, yaw], got {pose!r}")
        new_episode = request.padding == len(request.images_b64) - 1
        if new_episode or episode_id not in self._experts:
            self._experts = {episode_id: Expert(world_for_scene(episode.scene_id), episode)}
        return self._experts[episode_id].next_action(Pose(*map(float, pose))).to_answer()

    def record_reply(self, request: BenchRequest, reply: str) -> None:
        """The expert keeps its own state."""


class ServerThread:
    """A BenchServer on 127.0.0.1 (a free port by default) in a background thread."""

    def __init__(self, responder, port: int = 0, **config: Any) -> None:
        from nvila_core.serve.server import BenchServer, ServerConfig

        self.server = BenchServer(responder, ServerConfig(host="127.0.0.1", port=port, **config))
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="bench server", daemon=True
        )

    @property
    def port(self) -> int:
        return self.server.address[1]

    def __enter__(self) -> ServerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10.0)


# ---------------------------------------------------------------- command line
def _episodes(args: argparse.Namespace) -> list[Episode]:
    episodes = vln_ce_isaac.read_any_episodes(args.episodes)
    if args.limit > 0:
        episodes = episodes[: args.limit]
    if not episodes:
        raise ValueError(f"{args.episodes}: no episodes")
    return episodes


def cmd_run(args: argparse.Namespace) -> int:
    episodes = _episodes(args)
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    client = BenchClient(args.host, args.port, args.timeout, token)
    summary = run_episodes(episodes, client, args.out, args.label, args.side_channel, args.size)
    print(summary_lines([summary]))
    return 0


def cmd_loop(args: argparse.Namespace) -> int:
    episodes = _episodes(args)
    logging.getLogger("nvila_core.serve").setLevel(
        logging.INFO if args.verbose else logging.WARNING
    )
    if args.server == "expert":
        responder = ExpertResponder(episodes)
        label, side_channel = args.label or "expert server", True
    else:
        from nvila_core.runtime.engine import Engine
        from nvila_core.serve.engine_responder import EngineResponder

        # The model stack loads before the simulator's EGL renderer (the other order can crash).
        engine = Engine.from_pretrained(args.model, backend=args.backend, device=args.device)
        if engine.random_weights and not args.allow_random_weights:
            raise ValueError(f"{args.model!r} has random weights; pass a checkpoint folder")
        responder = EngineResponder(engine, decoding=args.decoding, history=args.history)
        label, side_channel = args.label or f"model server ({Path(args.model).name})", False
    with ServerThread(responder) as server:
        client = BenchClient("127.0.0.1", server.port, args.timeout)
        summary = run_episodes(episodes, client, args.out, label, side_channel, args.size)
        summary["server"] = server.server.stats.as_dict()
    if args.out:
        Path(args.out, "summary.json").write_text(json.dumps(summary, indent=1))
    print(summary_lines([summary]))
    print(f"server: {summary['server']}")
    return 0


def cmd_serve_expert(args: argparse.Namespace) -> int:
    from nvila_core.serve.cli import run_server, server_config

    episodes = vln_ce_isaac.read_any_episodes(args.episodes)
    return run_server(ExpertResponder(episodes), server_config(args))


def cmd_convert(args: argparse.Namespace) -> int:
    from nvila_nav.sim.episodes import write_episodes

    episodes = vln_ce_isaac.read_any_episodes(args.source)
    if args.to == "isaac":
        vln_ce_isaac.write_isaac_episodes(
            args.target, [vln_ce_isaac.to_isaac(e, i + 1) for i, e in enumerate(episodes)]
        )
    else:
        write_episodes(args.target, episodes)
    print(f"{len(episodes)} episodes -> {args.target} ({args.to})")
    return 0


def read_measurements(paths: Sequence[str | Path]) -> list[dict[str, float]]:
    """Per-episode VLN-CE-Isaac measures from NaVILA-Bench's result files
    (eval_results/<run>/measurements/<i>.json: the measures themselves) or this loop's
    (episodes/<id>.json: under "measurements"); folders are read file by file, sorted."""
    files: list[Path] = []
    for path in map(Path, paths):
        files += sorted(path.glob("*.json")) if path.is_dir() else [path]
    results = []
    for file in files:
        data = json.loads(file.read_text())
        data = data.get("measurements", data) if isinstance(data, dict) else data
        missing = [name for name in vln_ce_isaac.MEASURES if name not in data]
        if missing:
            raise ValueError(f"{file}: no {', '.join(missing)} (not a measurements file)")
        results.append({name: float(data[name]) for name in vln_ce_isaac.MEASURES})
    if not results:
        raise ValueError("no measurement files found")
    return results


def cmd_summarize(args: argparse.Namespace) -> int:
    summary = vln_ce_isaac.aggregate(read_measurements(args.paths))
    print(vln_ce_isaac.format_table({args.label or "run": summary}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from nvila_core.serve.cli import add_server_options

    parser = argparse.ArgumentParser(
        prog="nvila-nav-navila-bench",
        description="NaVILA-Bench's evaluation loop on the embedded simulator (no Isaac), its "
        "expert-backed server, and VLN-CE-Isaac episode conversion.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def episode_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--episodes", required=True, help="R2R-format or VLN-CE-Isaac .json(.gz)")
        p.add_argument("--limit", type=int, default=0, help="first N episodes (0: all)")
        p.add_argument("--out", help="folder for per-episode JSON and summary.json")
        p.add_argument("--label", default="", help="name of the run in the table")
        p.add_argument("--size", type=int, default=FRAME_SIZE, help="camera frames SIZExSIZE")
        p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")

    run = commands.add_parser("run", help="play NaVILA-Bench's client against a running server")
    episode_options(run)
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=DEFAULT_PORT)
    run.add_argument("--token-file", help="send this file's text as the request's token")
    run.add_argument(
        "--side-channel",
        action="store_true",
        help=f'add the episode and pose under "{SIDE_CHANNEL_KEY}" (for serve-expert)',
    )
    run.set_defaults(handler=cmd_run)

    loop = commands.add_parser("loop", help="start a server in this process and run the loop")
    episode_options(loop)
    loop.add_argument("--server", choices=("expert", "model"), required=True)
    loop.add_argument("--model", default="models/navila-nano", help="model server: checkpoint")
    loop.add_argument("--backend", default="torch", help="torch | onnxruntime | tensorrt")
    loop.add_argument("--device", default="cpu")
    loop.add_argument("--decoding", default="choose", choices=("generate", "choose"))
    loop.add_argument(
        "--history",
        default="auto",
        choices=("auto", "episode", "request"),
        help="model server: as nvila-core serve --history",
    )
    loop.add_argument("--allow-random-weights", action="store_true")
    loop.add_argument("--verbose", action="store_true", help="log every request")
    loop.set_defaults(handler=cmd_loop)

    serve = commands.add_parser(
        "serve-expert", help="a NaVILA-Bench server answering with the simulator's expert"
    )
    serve.add_argument("--episodes", required=True, help="the episodes the client runs")
    add_server_options(serve)
    serve.set_defaults(handler=cmd_serve_expert)

    convert = commands.add_parser(
        "convert", help="episodes between R2R format and VLN-CE-Isaac's vln_ce_isaac_v1.json.gz"
    )
    convert.add_argument("source", help="R2R-format or VLN-CE-Isaac file")
    convert.add_argument("target", help="output .json or .json.gz")
    convert.add_argument("--to", choices=("isaac", "r2r"), default="isaac")
    convert.set_defaults(handler=cmd_convert)

    summarize = commands.add_parser(
        "summarize",
        help="VLN-CE-Isaac table of NaVILA-Bench's measurement files (or this loop's episodes/)",
    )
    summarize.add_argument("paths", nargs="+", help="measurement .json files or folders")
    summarize.add_argument("--label", default="", help="row name")
    summarize.set_defaults(handler=cmd_summarize)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, OSError, ServerError) as err:
        print(f"nvila-nav-navila-bench {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
