"""Top-down map for plots: rooms, walls, landmarks, reference path, goal radius and trajectory."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Circle, Rectangle

from nvila_nav.sim.episodes import Episode
from nvila_nav.sim.furniture import COLOURS
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.world import World

_LETTER = {
    "chair": "C",
    "table": "T",
    "sofa": "S",
    "bed": "B",
    "plant": "P",
    "shelf": "Sh",
    "box": "X",
}


def draw_topdown(
    ax: Axes,
    world: World,
    episode: Episode | None = None,
    trajectory: Sequence[Sequence[float]] | None = None,
    robot: Pose | None = None,
    labels: bool = True,
) -> None:
    """Draw `world` on `ax`; trajectory rows are (x, y, ...) in metres."""
    for room in world.rooms:
        r = room.rect
        tint = tuple(0.55 + 0.45 * c for c in room.wall_rgb)
        ax.add_patch(
            Rectangle((r.x0, r.y0), r.width, r.depth, facecolor=tint, edgecolor="none", zorder=0)
        )
        if labels:
            ax.text(
                *r.centre, room.name, ha="center", va="center", fontsize=7, color="0.35", zorder=1
            )
    for w in world.walls:
        if w.z0 == 0.0:
            f = w.rect
            ax.add_patch(
                Rectangle(
                    (f.x0, f.y0), f.width, f.depth, facecolor="0.15", edgecolor="none", zorder=2
                )
            )
    for lm in world.landmarks:
        f = lm.footprint
        rgb = COLOURS[lm.colour]
        if lm.kind == "door":
            ax.add_patch(
                Rectangle((f.x0, f.y0), f.width, f.depth, facecolor=rgb, edgecolor="none", zorder=3)
            )
            continue
        ax.add_patch(
            Rectangle(
                (f.x0, f.y0), f.width, f.depth, facecolor=rgb, edgecolor="0.1", lw=0.6, zorder=3
            )
        )
        if labels:
            text_colour = "white" if sum(rgb) < 1.2 else "black"
            ax.text(
                *f.centre,
                _LETTER[lm.kind],
                ha="center",
                va="center",
                fontsize=6,
                color=text_colour,
                zorder=4,
            )
    if episode is not None:
        ref = [p[:2] for p in episode.reference_path]
        if ref:
            ax.plot(
                *zip(*ref, strict=True),
                "--",
                color="tab:blue",
                lw=1.4,
                zorder=5,
                label="reference path",
            )
        g = episode.goal
        radius = g.radius or 3.0
        ax.add_patch(
            Circle(
                g.position[:2],
                radius,
                facecolor="gold",
                alpha=0.25,
                edgecolor="goldenrod",
                zorder=4,
            )
        )
        ax.plot(*g.position[:2], marker="*", color="goldenrod", ms=12, mec="k", mew=0.5, zorder=7)
        sx, sy = episode.start_position[:2]
        _arrow(ax, Pose(sx, sy, episode.start_yaw), "tab:green")
    if trajectory is not None and len(trajectory) > 0:
        xs = [p[0] for p in trajectory]
        ys = [p[1] for p in trajectory]
        ax.plot(xs, ys, "-", color="tab:red", lw=1.6, zorder=6, label="robot")
    if robot is not None:
        _arrow(ax, robot, "tab:red")
    ax.set_xlim(-0.3, world.size[0] + 0.3)
    ax.set_ylim(-0.3, world.size[1] + 0.3)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def _arrow(ax: Axes, pose: Pose, colour: str) -> None:
    ax.add_patch(Circle((pose.x, pose.y), 0.25, facecolor=colour, edgecolor="k", lw=0.5, zorder=8))
    ax.arrow(
        pose.x, pose.y, 0.45 * math.cos(pose.yaw), 0.45 * math.sin(pose.yaw),
        width=0.06, head_width=0.2, color="k", zorder=9, length_includes_head=True,
    )  # fmt: skip


def save_topdown(path: str, world: World, episode: Episode | None = None, **kwargs) -> None:
    """One map as an image file (PNG/SVG/PDF by extension)."""
    fig, ax = plt.subplots(figsize=(0.45 * world.size[0] + 1, 0.45 * world.size[1] + 1))
    draw_topdown(ax, world, episode, **kwargs)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
