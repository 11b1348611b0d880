"""One picture of sim_eval runs: a row per policy, a column per episode.

Each cell is the episode's top-down map (walls, landmarks, the reference path, the goal and its
success radius, the start) with the robot's trajectory, and under it the outcome: success or
failure, why the episode ended, the final distance to the goal and the number of actions. The
instruction heads each column. `make demo` writes one for its runs (`outputs/demo/overview.png`);
for other evaluator folders:

    python -m nvila_nav.overview --run expert=DIR1 --run nvila=DIR2 --episodes EPISODES --out F.png

The runs are evaluator output folders (`nvila-nav-bringup sim_eval --output-dir DIR`), read with
`nvila_nav.report.load_run`; an episode a run did not cover gets an empty map marked "not run".
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from nvila_nav.report import ReportError, Run, _run_arg, load_run
from nvila_nav.sim.episodes import Episode, read_episodes
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.topdown import draw_topdown
from nvila_nav.sim.world import world_for_scene

CELL_IN = 3.6
"""Width and map height of one cell, in inches."""
WRAP = 46
"""Characters per line of the wrapped instruction at the head of a column."""
SUCCESS_COLOUR, FAILURE_COLOUR = "#1a7f37", "#c62828"


def outcome(result: dict) -> str:
    """One line per cell: 'SUCCESS: stop, 0.12 m to goal, 18 actions'."""
    metrics = result["metrics"]
    verdict = "SUCCESS" if metrics["success"] else "FAILURE"
    return (
        f"{verdict}: {result['end_reason']}, {metrics['ne']:.2f} m to goal, "
        f"{metrics['steps']} action{'' if metrics['steps'] == 1 else 's'}"
    )


def _aspect(episode: Episode) -> float:
    """Height over width of the episode's map (1 when there is none), within 0.4..1.2."""
    try:
        width, depth = world_for_scene(episode.scene_id).size[:2]
    except ValueError:
        return 1.0
    return min(1.2, max(0.4, depth / width))


def _draw_cell(ax, episode: Episode, result: dict | None) -> None:
    trajectory = [row[1:3] for row in result["trajectory"]] if result else None
    robot = Pose(*result["trajectory"][-1][1:4]) if result else None
    try:
        world = world_for_scene(episode.scene_id)
    except ValueError:  # not an embedded-simulator scene (e.g. Matterport): no map to draw
        world = None
    if world is not None:
        draw_topdown(ax, world, episode, trajectory=trajectory, robot=robot, labels=False)
    else:
        goal = episode.goal
        ax.add_patch(Circle(goal.position[:2], goal.radius or 3.0, color="gold", alpha=0.25))
        ax.plot(*goal.position[:2], marker="*", color="goldenrod", ms=12, mec="k", mew=0.5)
        if trajectory:
            ax.plot(*zip(*trajectory, strict=True), "-", color="tab:red", lw=1.6)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.5, 0.02, f"no map of {episode.scene_id}", transform=ax.transAxes,
                ha="center", fontsize=7, color="0.4")  # fmt: skip
    if result is None:
        ax.set_xlabel("not run", fontsize=8, color="0.45")
        return
    colour = SUCCESS_COLOUR if result["metrics"]["success"] else FAILURE_COLOUR
    ax.set_xlabel(outcome(result), fontsize=7.5, color=colour, fontweight="bold")
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(2.0)


def draw_overview(runs: Sequence[Run], episodes: Sequence[Episode], title: str = "") -> Figure:
    """The overview figure of `runs` (one row each) on `episodes` (one column each)."""
    if not runs or not episodes:
        raise ReportError("an overview needs at least one run and one episode")
    lines = max(len(textwrap.wrap(e.instruction_text, WRAP)) for e in episodes) + 1
    header_in = 0.16 * lines + 0.3
    map_in = CELL_IN * max(_aspect(e) for e in episodes)
    figure = Figure(
        figsize=(CELL_IN * len(episodes) + 1.0, (map_in + 0.45) * len(runs) + header_in + 0.9),
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(runs), len(episodes), squeeze=False)
    for column, episode in enumerate(episodes):
        instruction = "\n".join(textwrap.wrap(episode.instruction_text, WRAP))
        axes[0][column].set_title(
            f"{episode.episode_id}\n{instruction}", fontsize=7.5, loc="left", wrap=False
        )
        for row, run in enumerate(runs):
            _draw_cell(axes[row][column], episode, run.results.get(episode.episode_id))
    for row, run in enumerate(runs):
        covered = [run.results[e.episode_id] for e in episodes if e.episode_id in run.results]
        reached = sum(bool(r["metrics"]["success"]) for r in covered)
        axes[row][0].set_ylabel(
            f"{run.name}\n{reached} of {len(covered)} reached the goal",
            fontsize=10,
            fontweight="bold",
        )
    legend = [
        Line2D([], [], ls="--", color="tab:blue", lw=1.4, label="reference path (expert's route)"),
        Line2D([], [], color="tab:red", lw=1.6, label="robot trajectory (red dot: end pose)"),
        Line2D([], [], ls="", marker="o", color="tab:green", mec="k", label="start"),
        Line2D([], [], ls="", marker="*", ms=12, color="goldenrod", mec="k", label="goal"),
        Line2D([], [], ls="", marker="o", ms=12, color="gold", alpha=0.4, label="success radius"),
    ]
    figure.legend(handles=legend, loc="outside lower center", ncols=len(legend), fontsize=8)
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


def write_overview(
    path: str | Path, runs: Sequence[Run], episodes: Sequence[Episode], title: str = ""
) -> Path:
    """Draw the overview and save it as PNG at `path`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dpi = 90 if len(episodes) * len(runs) > 20 else 110
    draw_overview(runs, episodes, title).savefig(path, dpi=dpi)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nvila_nav.overview", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--run",
        action="append",
        type=_run_arg,
        required=True,
        metavar="NAME=DIR",
        help="a sim_eval output folder and its row label (repeat per run)",
    )
    parser.add_argument("--episodes", type=Path, required=True, help="the runs' episodes file")
    parser.add_argument("--out", type=Path, default=Path("outputs/overview.png"))
    parser.add_argument(
        "--max-episodes", type=int, default=8, help="columns: the first N episodes of the file"
    )
    parser.add_argument("--title", default="")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        runs = [load_run(name, folder) for name, folder in args.run]
    except ReportError as exc:
        print(f"overview: error: {exc}", file=sys.stderr)
        return 1
    episodes = read_episodes(args.episodes)[: max(1, args.max_episodes)]
    path = write_overview(args.out, runs, episodes, args.title)
    print(f"wrote {path} ({len(runs)} runs x {len(episodes)} episodes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
