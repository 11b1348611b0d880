"""Simulator throughput: rendered frames and physics steps per second, per camera resolution.

    python -m nvila_nav.sim.bench --out outputs/bench

For each resolution the robot drives a slow arc through a generated scene (bumping into walls
now and then, as a policy would) and three loops are timed: render only, step only (one 50 ms
control step = 10 physics steps at 200 Hz) and step + render, the loop a policy sees. Results go
to sim_bench.csv and sim_bench.png in the output directory.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

from nvila_nav.sim.env import Simulator
from nvila_nav.sim.episodes import generate_episode
from nvila_nav.sim.robot import CameraConfig

GOAL_FPS = 30.0
CONTROL_DT = 0.05


def _timed(n: int, body) -> float:
    start = time.perf_counter()
    for _ in range(n):
        body()
    return time.perf_counter() - start


def measure(width: int, height: int, frames: int) -> list[dict]:
    """Rows of (resolution, mode, frames, seconds, fps) for one camera size."""
    episode = generate_episode("val_unseen", 0, seed=0)
    rows = []
    with Simulator(CameraConfig(width=width, height=height)) as sim:
        sim.reset(episode)
        for _ in range(10):  # warm-up: GL context, texture upload, caches
            sim.step(0.3, 0.4, CONTROL_DT, render=True)
        loops = {
            "render": sim.render,
            "step": lambda: sim.step(0.3, 0.4, CONTROL_DT, render=False),
            "step+render": lambda: sim.step(0.3, 0.4, CONTROL_DT, render=True),
        }
        for mode, body in loops.items():
            seconds = _timed(frames, body)
            rows.append(
                {
                    "resolution": f"{width}x{height}",
                    "mode": mode,
                    "frames": frames,
                    "seconds": round(seconds, 4),
                    "fps": round(frames / seconds, 1),
                    "ms_per_frame": round(1000 * seconds / frames, 2),
                }
            )
    return rows


def _plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    resolutions = list(dict.fromkeys(r["resolution"] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(modes)
    for m, mode in enumerate(modes):
        values = [
            next(r["fps"] for r in rows if r["resolution"] == res and r["mode"] == mode)
            for res in resolutions
        ]
        xs = [k + (m - (len(modes) - 1) / 2) * width for k in range(len(resolutions))]
        bars = ax.bar(xs, values, width, label=mode)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.axhline(GOAL_FPS, color="k", ls="--", lw=1, label=f"goal {GOAL_FPS:.0f} fps")
    ax.set_xticks(range(len(resolutions)), resolutions)
    ax.set_ylabel("frames (or 50 ms steps) per second")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nvila_nav.sim.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default="outputs/bench", help="output directory")
    parser.add_argument("--frames", type=int, default=300, help="iterations per loop")
    parser.add_argument(
        "--sizes", default="224x224,640x480", help="comma-separated WIDTHxHEIGHT camera sizes"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.lower().split("x"))
        rows += measure(width, height, args.frames)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, MUJOCO_GL={os.environ.get('MUJOCO_GL')}"
    )
    with open(out / "sim_bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _plot(rows, out / "sim_bench.png", f"nvila_nav.sim throughput ({machine})")
    print(f"machine: {machine}")
    for r in rows:
        print(
            f"{r['resolution']:>9} {r['mode']:<12} {r['fps']:8.1f} fps  {r['ms_per_frame']:7.2f} ms"
        )
    print(f"wrote {out / 'sim_bench.csv'} and {out / 'sim_bench.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
