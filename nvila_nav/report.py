"""`nvila-nav-report`: several sim_eval runs side by side, ready for the README.

Each run is an evaluator output folder (`nvila-nav-bringup sim_eval --output-dir DIR`, see
nvila_nav/nodes/evaluator.py). The report writes into `--out`:

- `table.md` / `table.csv`: the VLN-CE metrics table (`metrics.COLUMNS`) per run, aggregated from the
  per-episode results with `metrics.aggregate` (so an unfinished run without summary.json works);
- `episode_lengths.png`: actions and path length per episode, per run, beside the expert's
  reference path length from the episodes file;
- `failures.md` and `failures/<id>.gif` for one run: every failed episode, and for the first N
  by id an animation of the robot's camera (re-rendered at the recorded poses) beside the map.

Runs are compared only on identical episode sets: a run that covers fewer episodes is an error
that names what is missing, never a silently different average.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from nvila_nav.metrics import COLUMNS, EpisodeMetrics, aggregate, metric_cells
from nvila_nav.sim.episodes import Episode, read_episodes
from nvila_nav.sim.geometry import Pose, polyline_length

if TYPE_CHECKING:
    # Type-only: MuJoCo is needed for GIFs alone, and it picks its GL backend when imported.
    from nvila_nav.sim.env import Simulator

MAX_GIF_FRAMES = 120
"""A 500-action episode would make a GIF of hundreds of MB; longer ones are evenly thinned."""
FRAME_MS, LAST_FRAME_MS = 600, 2500


class ReportError(ValueError):
    """The runs cannot be compared as given; the message says why."""


@dataclass
class Run:
    """One evaluator folder: its results by episode id, and remarks for the user."""

    name: str
    folder: Path
    results: dict[str, dict]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [self.results[i] for i in sorted(self.results) if not _success(self.results[i])]


def _success(result: dict) -> bool:
    return bool(result["metrics"]["success"])


def load_run(name: str, folder: str | Path) -> Run:
    """Read `folder/episodes/*.json`, limited to the ids in summary.json when it exists.

    summary.json is the authoritative list: the evaluator overwrites episode files but never
    deletes them, so a reused folder can hold stale episodes of an earlier run.
    """
    folder = Path(folder)
    files = sorted((folder / "episodes").glob("*.json"))
    if not files:
        raise ReportError(f"run {name}: no evaluator results in {folder}/episodes/")
    results = {}
    for path in files:
        result = json.loads(path.read_text(encoding="utf-8"))
        results[result["episode_id"]] = result
    run = Run(name, folder, results)
    summary_path = folder / "summary.json"
    if not summary_path.exists():
        run.notes.append(
            f"run {name}: no summary.json in {folder} (the evaluation did not finish); "
            f"using its {len(results)} episode files"
        )
        return run
    listed = [e["episode_id"] for e in json.loads(summary_path.read_text())["episodes"]]
    missing = [i for i in listed if i not in results]
    if missing:
        raise ReportError(f"run {name}: summary.json lists episodes without files: {_ids(missing)}")
    stale = len(results) - len(listed)
    if stale:
        run.notes.append(f"run {name}: ignoring {stale} episode files not in its summary.json")
    run.results = {i: results[i] for i in sorted(listed)}
    return run


def _ids(ids: list[str], shown: int = 6) -> str:
    """A readable list of ids: the first few, then how many more."""
    head = ", ".join(ids[:shown])
    return head + (f" ... ({len(ids)} in all)" if len(ids) > shown else "")


def check_coverage(runs: list[Run], episodes: dict[str, Episode]) -> list[str]:
    """The episode ids every run covers; raises ReportError naming each run's missing ids, or
    the episodes whose instruction is not the episodes file's (a run of another file)."""
    union = sorted(set().union(*(r.results for r in runs)))
    unknown = [i for i in union if i not in episodes]
    if unknown:
        raise ReportError(f"episodes missing from the episodes file: {_ids(unknown)}")
    for run in runs:
        other = [
            i for i, r in run.results.items() if r["instruction"] != episodes[i].instruction_text
        ]
        if other:
            raise ReportError(
                f"run {run.name} was evaluated on another episodes file: the instructions of "
                f"{_ids(other)} differ"
            )
    short = [r for r in runs if len(r.results) < len(union)]
    if short:
        lines = [f"runs cover different episodes ({len(union)} in all):"]
        for run in runs:
            missing = [i for i in union if i not in run.results]
            gap = f", missing {_ids(missing)}" if missing else ""
            lines.append(f"  {run.name}: {len(run.results)} of {len(union)}{gap}")
        raise ReportError("\n".join(lines))
    return union


def table(runs: list[Run]) -> list[list[str]]:
    """Header row, then one row per run, with the numbers as printed and how episodes ended."""
    from nvila_nav.evaluation import end_reason_counts

    rows = [["Policy", *(header for header, *_ in COLUMNS), "Ended"]]
    for run in runs:
        results = list(run.results.values())
        metrics = aggregate([EpisodeMetrics(**r["metrics"]) for r in results])
        ended = ", ".join(f"{reason} {n}" for reason, n in end_reason_counts(results).items())
        rows.append([run.name, *metric_cells(metrics), ended])
    return rows


def markdown_table(rows: list[list[str]]) -> str:
    align = ["---", *("---:" for _ in rows[0][1:])]
    lines = [rows[0], align, *rows[1:]]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def plot_lengths(runs: list[Run], episodes: list[Episode], path: Path) -> None:
    """Two panels of step histograms: actions per episode and path length, per run.

    The reference path length (the expert's route) goes into the second panel when every
    episode has a reference_path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # plotting only: fast --help
    from matplotlib.figure import Figure

    actions = {
        r.name: [r.results[e.episode_id]["metrics"]["steps"] for e in episodes] for r in runs
    }
    lengths = {
        r.name: [r.results[e.episode_id]["metrics"]["path_length"] for e in episodes] for r in runs
    }
    if all(len(e.reference_path) > 1 for e in episodes):
        lengths["reference path"] = [polyline_length(e.reference_path) for e in episodes]
    most = max(max(v) for v in actions.values())
    width = max(1, math.ceil((most + 1) / 40))
    action_bins = np.arange(0, most + width + 1, width) - 0.5
    length_bins = np.histogram_bin_edges(np.concatenate(list(lengths.values())), bins=30)

    figure = Figure(figsize=(11, 4))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    for ax, data, bins, unit in (
        (left, actions, action_bins, "actions"),
        (right, lengths, length_bins, "path length (m)"),
    ):
        for name, values in data.items():
            style = {"color": "k", "ls": "--"} if name == "reference path" else {}
            label = f"{name} (mean {np.mean(values):.1f})"
            ax.hist(values, bins=bins, histtype="step", lw=1.6, label=label, **style)
        ax.set_xlabel(f"{unit} per episode")
        ax.set_ylabel("episodes")
        ax.legend(fontsize=8)
    figure.suptitle(f"Episode length on the same {len(episodes)} episodes", fontsize=10)
    figure.savefig(path, dpi=110, bbox_inches="tight")


def write_failures(run: Run, gifs: dict[str, Path], path: Path) -> None:
    """failures.md: each failed episode with its instruction, why it ended and how far off."""
    failed = run.failed
    reasons = Counter(r["end_reason"] for r in failed)
    counts = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
    lines = [
        f"# Failures of {run.name}",
        "",
        f"{len(failed)} of {len(run.results)} episodes failed (end reasons: {counts or 'none'}); "
        f"results in `{run.folder}`.",
        "",
        "| episode | end reason | final distance m | actions | instruction |",
        "|---|---|---:|---:|---|",
    ]
    for r in failed:
        episode = r["episode_id"]
        if episode in gifs:
            episode = f"[{episode}]({gifs[episode].relative_to(path.parent).as_posix()})"
        instruction = r["instruction"].replace("|", "\\|")
        lines.append(
            f"| {episode} | {r['end_reason']} | {r['metrics']['ne']:.2f} "
            f"| {r['metrics']['steps']} | {instruction} |"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def gif_frames(result: dict, max_frames: int = MAX_GIF_FRAMES) -> list[tuple[float, str]]:
    """(time, caption) per GIF frame: the moment each action was issued, then the episode's end.

    At an action's time the robot sees what the policy saw when it chose that action.
    """
    start, end = result["trajectory"][0][0], result["trajectory"][-1][0]
    actions = result["actions"]
    frames = [
        (a["t"], f"t={a['t'] - start:.1f}s  action {k + 1}/{len(actions)}: {a['text']}")
        for k, a in enumerate(actions)
    ]
    if len(frames) >= max_frames:
        keep = np.linspace(0, len(frames) - 1, max_frames - 1).round().astype(int)
        frames = [frames[k] for k in keep]
    ending = f"t={end - start:.1f}s  end: {result['end_reason']}, {result['metrics']['ne']:.2f} m"
    return [*frames, (end, ending + " from goal")]


def save_failure_gif(
    path: Path, run_name: str, result: dict, episode: Episode, sim: Simulator, dpi: int = 80
) -> int:
    """Animate one episode: the head camera at each recorded pose beside the map, the path so far,
    the goal and its success radius. The camera of `sim` sets the frame size. Returns the number of
    frames."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from nvila_nav.sim.topdown import draw_topdown

    trajectory = np.asarray(result["trajectory"], dtype=float)
    frames = gif_frames(result)
    world = sim.load_scene(episode.scene_id)
    height, width = sim.camera.height, sim.camera.width
    cam_w, panel_h = 5.0, 5.0 * height / width
    map_w = min(10.0, max(4.0, panel_h * world.size[0] / world.size[1]))
    figure = Figure(figsize=(cam_w + map_w, panel_h + 1.1), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    cam, top = figure.subplots(1, 2, gridspec_kw={"width_ratios": [cam_w, map_w]})
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.8, wspace=0.04)
    metrics = result["metrics"]
    head = (
        f"{run_name}: {episode.episode_id}  {episode.scene_id}  (failure, {result['end_reason']}, "
        f"{metrics['ne']:.2f} m from goal, success radius {result['radius']:g} m)"
    )
    figure.suptitle(
        head + "\n" + "\n".join(textwrap.wrap(episode.instruction_text, 110)), fontsize=8
    )
    image = cam.imshow(np.zeros((height, width, 3), np.uint8))
    cam.axis("off")
    caption = cam.set_title("", fontsize=9)
    draw_topdown(top, world, episode, labels=True)
    (line,) = top.plot([], [], "-", color="tab:red", lw=1.6, zorder=6, label=run_name)
    (heading,) = top.plot([], [], "-", color="k", lw=2.0, zorder=9)
    (dot,) = top.plot([], [], "o", color="tab:red", mec="k", ms=7, zorder=8)
    top.legend(loc="upper right", fontsize=6)
    pictures = []
    for t, text in frames:
        upto = max(1, int(np.searchsorted(trajectory[:, 0], t, side="right")))
        _, x, y, yaw = trajectory[upto - 1]
        image.set_data(sim.reset_to(episode.scene_id, Pose(x, y, yaw)).rgb)
        caption.set_text(text)
        line.set_data(trajectory[:upto, 1], trajectory[:upto, 2])
        heading.set_data([x, x + 0.6 * math.cos(yaw)], [y, y + 0.6 * math.sin(yaw)])
        dot.set_data([x], [y])
        canvas.draw()
        pictures.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy()))
    durations = [FRAME_MS] * (len(pictures) - 1) + [LAST_FRAME_MS]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
    return len(pictures)


def _run_arg(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, Path(folder)


def _size_arg(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nvila-nav-report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        action="append",
        type=_run_arg,
        required=True,
        metavar="NAME=DIR",
        help="a sim_eval output folder and the name it gets in the report (repeat per run)",
    )
    parser.add_argument("--episodes", type=Path, required=True, help="the runs' episodes file")
    parser.add_argument("--out", type=Path, default=Path("outputs/report"))
    parser.add_argument("--gifs", type=int, default=3, help="failure GIFs to write (0: none)")
    parser.add_argument("--gif-run", help="run whose failures are listed and animated (first run)")
    parser.add_argument(
        "--gif-size", type=_size_arg, default=(320, 240), help="camera WxH (sim_eval's: 320x240)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _report(args)
    except ReportError as exc:
        print(f"nvila-nav-report: error: {exc}", file=sys.stderr)
        return 1


def _report(args: argparse.Namespace) -> int:
    names = [name for name, _ in args.run]
    if len(set(names)) != len(names):
        raise ReportError(f"run names must differ: {', '.join(names)}")
    gif_run = args.gif_run or names[0]
    if gif_run not in names:
        raise ReportError(f"--gif-run {gif_run!r} is none of the runs: {', '.join(names)}")
    runs = [load_run(name, folder) for name, folder in args.run]
    for run in runs:
        for note in run.notes:
            print(f"note: {note}")
    by_id = {e.episode_id: e for e in read_episodes(args.episodes)}
    ids = check_coverage(runs, by_id)
    if len(ids) < len(by_id):
        print(f"note: the runs cover {len(ids)} of the {len(by_id)} episodes in {args.episodes}")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    rows = table(runs)
    text = markdown_table(rows)
    (out / "table.md").write_text(text + "\n", encoding="utf-8")
    with open(out / "table.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    print(text)
    plot_lengths(runs, [by_id[i] for i in ids], out / "episode_lengths.png")

    run = runs[names.index(gif_run)]
    gifs: dict[str, Path] = {}
    chosen = run.failed[: max(0, args.gifs)]
    if chosen:
        from nvila_nav.sim.env import Simulator  # MuJoCo only when GIFs are asked for
        from nvila_nav.sim.robot import CameraConfig

        (out / "failures").mkdir(exist_ok=True)
        width, height = args.gif_size
        with Simulator(CameraConfig(width=width, height=height)) as sim:
            for result in chosen:
                episode = by_id[result["episode_id"]]
                try:
                    sim.load_scene(episode.scene_id)
                except ValueError as exc:  # not an embedded-simulator scene (e.g. Matterport)
                    print(f"note: no GIF for {episode.episode_id}: {exc}")
                    continue
                path = out / "failures" / f"{_stem(episode.episode_id)}.gif"
                n = save_failure_gif(path, run.name, result, episode, sim)
                gifs[episode.episode_id] = path
                print(f"wrote {path} ({n} frames)")
    write_failures(run, gifs, out / "failures.md")
    print(f"wrote {out}/table.md, table.csv, episode_lengths.png, failures.md")
    return 0


def _stem(episode_id: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in episode_id)


if __name__ == "__main__":
    sys.exit(main())
