"""Pictures of an expert rollout: a PNG (camera strip + map) or an animated GIF."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from nvila_nav.sim.expert import ExpertRun
from nvila_nav.sim.topdown import draw_topdown
from nvila_nav.sim.world import World


def _action_at(run: ExpertRun, frame_index: int) -> str:
    """The action being executed (or decided) when frame `frame_index` was taken."""
    t = run.frame_times[frame_index]
    current = [a for a in run.actions if a.t <= t + 1e-9]
    return current[-1].action.to_text() if current else ""


def save_strip(path: str | Path, run: ExpertRun, world: World, n_frames: int = 6) -> None:
    """PNG: `n_frames` evenly spaced camera frames (time and decided action) above the map."""
    picks = np.linspace(0, len(run.frames) - 1, min(n_frames, len(run.frames))).round().astype(int)
    width = 2.6 * len(picks)
    frame_h = width / len(picks) * run.frames[0].shape[0] / run.frames[0].shape[1]
    map_h = min(7.0, width * world.size[1] / world.size[0])
    fig = plt.figure(figsize=(width, frame_h + map_h + 1.0))
    grid = fig.add_gridspec(2, len(picks), height_ratios=[frame_h + 0.3, map_h])
    for col, k in enumerate(picks):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(run.frames[k])
        ax.set_title(f"t={run.frame_times[k]:.1f}s  {_action_at(run, int(k))}", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    draw_topdown(
        ax,
        world,
        run.episode,
        trajectory=[row[1:3] for row in run.trajectory],
        robot=run.final_pose,
    )
    fig.suptitle(_title(run), fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def save_gif(path: str | Path, run: ExpertRun, world: World, fps: float | None = None) -> None:
    """GIF: each camera frame beside the map with the trajectory so far; real time by default."""
    height, width = run.frames[0].shape[:2]
    cam_w, panel_h = 5.0, 5.0 * height / width
    map_w = min(10.0, max(4.0, panel_h * world.size[0] / world.size[1]))
    fig, (cam, top) = plt.subplots(
        1, 2, figsize=(cam_w + map_w, panel_h + 0.9), gridspec_kw={"width_ratios": [cam_w, map_w]}
    )
    fig.suptitle(_title(run, width=110), fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.84, wspace=0.04)
    image = cam.imshow(run.frames[0])
    cam.axis("off")
    label = cam.set_title("", fontsize=9)
    draw_topdown(top, world, run.episode, labels=True)
    (line,) = top.plot([], [], "-", color="tab:red", lw=1.6, zorder=6)
    (dot,) = top.plot([], [], "o", color="tab:red", mec="k", ms=7, zorder=8)
    times = np.array([row[0] for row in run.trajectory])
    pictures = []
    for k, rgb in enumerate(run.frames):
        image.set_data(rgb)
        label.set_text(f"t={run.frame_times[k]:.1f}s  {_action_at(run, k)}")
        upto = int(np.searchsorted(times, run.frame_times[k], side="right"))
        xs = [row[1] for row in run.trajectory[:upto]]
        ys = [row[2] for row in run.trajectory[:upto]]
        line.set_data(xs, ys)
        dot.set_data(xs[-1:], ys[-1:])
        fig.canvas.draw()
        pictures.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()))
    plt.close(fig)
    duration_ms = int(1000 / (fps or run.frame_hz))
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0)


def _title(run: ExpertRun, width: int = 150) -> str:
    e = run.episode
    status = "success" if run.success else "failure"
    head = f"{e.episode_id}  {e.scene_id}  ({status}, {run.distance_to_goal:.2f} m from goal)"
    return head + "\n" + "\n".join(textwrap.wrap(e.instruction_text, width))
