"""`nvila-sim`: generate episodes, roll out the expert into a dataset, view a rollout.

nvila-sim episodes --split train --n 500 --seed 0 --out data/sim/train.json.gz
nvila-sim rollout --episodes data/sim/train.json.gz --out data/sim/train_rollouts --perturb 0.15
nvila-sim view --episodes data/sim/train.json.gz --index 0 --out outputs/view.png
nvila-sim captions --split train --n 20000 --seed 0 --out data/sim/train_captions
nvila-sim stop-band --data data/sim/train_rollouts --out data/sim/train_band --band 1.2
nvila-sim contrast --data data/sim/train_rollouts --out data/sim/train_contrast
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from nvila_core.progress import Progress
from nvila_nav.sim.episodes import (
    SPLIT_SCENES,
    TIERS,
    generate_episodes,
    read_episodes,
    write_episodes,
)
from nvila_nav.sim.robot import CameraConfig

# Simulator, expert and plotting modules are imported by the commands that need them, so that
# `episodes` works without loading MuJoCo or matplotlib.


def _camera(args: argparse.Namespace) -> CameraConfig:
    return CameraConfig(width=args.width, height=args.height, hfov_deg=args.hfov)


def _cmd_episodes(args: argparse.Namespace) -> int:
    episodes = generate_episodes(args.split, args.n, seed=args.seed, tier=args.tier)
    path = write_episodes(args.out, episodes)
    scenes = len({e.scene_id for e in episodes})
    print(
        f"wrote {len(episodes)} {args.split} tier {args.tier} episodes from {scenes} scenes "
        f"to {path}"
    )
    return 0


def _cmd_rollout(args: argparse.Namespace) -> int:
    from nvila_nav.sim.rollouts import RolloutSettings, write_rollouts

    episodes = read_episodes(args.episodes)[: args.limit]
    out = Path(args.out)
    settings = RolloutSettings(
        camera=_camera(args),
        frame_hz=args.frame_hz,
        perturb=args.perturb,
        seed=args.seed,
        image_format=args.image_format,
        decision_frames=args.decision_frames,
        approach=args.approach,
        stop_band=args.stop_band,
    )
    with Progress(len(episodes), "rollout", "ep") as bar:
        entries = write_rollouts(episodes, out, settings, args.workers, progress=bar.update)
    ok = sum(e["success"] for e in entries)
    frames = sum(e["num_frames"] for e in entries)
    print(
        f"wrote {len(entries)} episodes ({frames} frames, expert success {ok}/{len(entries)}) to {out}"
    )
    return 0


def _cmd_view(args: argparse.Namespace) -> int:
    from nvila_nav.sim.env import Simulator
    from nvila_nav.sim.expert import run_expert
    from nvila_nav.sim.view import save_gif, save_strip

    episodes = read_episodes(args.episodes)
    if not 0 <= args.index < len(episodes):
        print(f"--index must be in [0, {len(episodes)}), got {args.index}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".gif"):
        print(f"--out must end in .png or .gif, got {out}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    with Simulator(_camera(args)) as sim:
        run = run_expert(sim, episodes[args.index], render=True, frame_hz=args.frame_hz)
        world = sim.world
        if out.suffix.lower() == ".gif":
            save_gif(out, run, world)
        else:
            save_strip(out, run, world)
    print(f"{run.episode.instruction_text}\nwrote {out} ({len(run.frames)} frames)")
    return 0


def _cmd_captions(args: argparse.Namespace) -> int:
    from nvila_nav.sim.captions import write_caption_dataset

    task = next(
        (t for t in ("where", "match", "readout", "compare", "copy") if getattr(args, t)),
        "captions",
    )
    path = write_caption_dataset(
        args.out,
        args.split,
        args.n,
        seed=args.seed,
        camera=_camera(args),
        task=task,
        same_kind=args.same_kind,
    )
    print(f"wrote {args.n} {args.split} frames ({task}) to {path}")
    return 0


def _cmd_contrast(args: argparse.Namespace) -> int:
    from nvila_nav.sim.contrast import write_contrast_dataset

    data = Path(args.data)
    total = len(json.loads((data / "index.json").read_text(encoding="utf-8"))["episodes"])
    with Progress(total, "contrast episodes", "ep") as bar:
        entries = write_contrast_dataset(
            data, args.out, radius=args.radius, seed=args.seed, progress=bar.update
        )
    samples = sum(e["num_samples"] for e in entries)
    print(
        f"wrote {len(entries)} contrast episodes of {total} rollouts ({samples} samples) to {args.out}"
    )
    return 0


def _cmd_statements(args: argparse.Namespace) -> int:
    from nvila_nav.sim.dataset import add_statements

    for data in args.data:
        print(f"{data}: wrote the statements of {add_statements(data)} actions")
    return 0


def _cmd_stop_band(args: argparse.Namespace) -> int:
    from nvila_nav.sim.stop_band import write_stop_band_dataset

    data = Path(args.data)
    total = len(json.loads((data / "index.json").read_text(encoding="utf-8"))["episodes"])
    with Progress(total, "stop band", "ep") as bar:
        cut, removed = write_stop_band_dataset(data, args.out, args.band, progress=bar.update)
    print(f"wrote {total} episodes to {args.out}: {cut} stop earlier, {removed} actions fewer")
    return 0


def _cmd_frame_question(args: argparse.Namespace) -> int:
    from nvila_nav.sim.landmark_side_questions import LANDMARK_SIDE
    from nvila_nav.sim.stop_reach_questions import STOP_REACH
    from nvila_nav.sim.turn_sides import ROUTE_AHEAD, TURN_SIDE, write_question_dataset

    question = {
        "turn-sides": TURN_SIDE,
        "route-ahead": ROUTE_AHEAD,
        "stop-reach": STOP_REACH,
        "landmark-side": LANDMARK_SIDE,
    }[args.command]
    total = sum(
        len(json.loads((Path(d) / "index.json").read_text(encoding="utf-8"))["episodes"])
        for d in args.data
    )
    with Progress(total, args.command.replace("-", " "), "ep") as bar:
        path, counts = write_question_dataset(question, args.data, args.out, progress=bar.update)
    said = ", ".join(f"{n} {answer!r}" for answer, n in counts.items())
    print(f"wrote {sum(counts.values())} {question.head} questions ({said}) to {path}")
    return 0


def _add_camera_args(
    p: argparse.ArgumentParser, width: int, height: int, frame_hz: bool = True
) -> None:
    """Camera options; `frame_hz` only for commands that record frames over sim time."""
    p.add_argument("--width", type=int, default=width, help="camera width in pixels")
    p.add_argument("--height", type=int, default=height, help="camera height in pixels")
    p.add_argument("--hfov", type=float, default=79.0, help="horizontal field of view, degrees")
    if frame_hz:
        p.add_argument(
            "--frame-hz", type=float, default=2.0, help="frame rate in sim time (NaVILA: 2)"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nvila-sim", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("episodes", help="generate R2R-format episodes")
    p.add_argument("--split", required=True, choices=sorted(SPLIT_SCENES))
    p.add_argument("--n", type=int, required=True, help="number of episodes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tier",
        choices=sorted(TIERS),
        default="C",
        help="route tier: A goal in the start room or the next one (<= 5 m), B one doorway, "
        "C all routes (3-22 m)",
    )
    p.add_argument("--out", required=True, help="output .json or .json.gz")
    p.set_defaults(func=_cmd_episodes)

    p = sub.add_parser("rollout", help="run the expert on episodes and write a training dataset")
    p.add_argument("--episodes", required=True, help="episodes .json(.gz)")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--limit", type=int, default=None, help="only the first N episodes")
    p.add_argument("--image-format", choices=("jpg", "png"), default="jpg")
    p.add_argument(
        "--perturb",
        type=float,
        default=0.0,
        help="probability that a step executes a random action instead of the expert's (DART); "
        "labels stay the expert's",
    )
    p.add_argument("--seed", type=int, default=0, help="perturbation seed")
    p.add_argument(
        "--decision-frames",
        action="store_true",
        help="one frame per decision instead of frames at --frame-hz (for recent-history models)",
    )
    p.add_argument(
        "--approach",
        action="store_true",
        help="the expert comes in towards the named landmark for the last 1.5 m (docs/simulator.md)",
    )
    p.add_argument(
        "--stop-band",
        type=float,
        default=None,
        metavar="M",
        help="the expert also stops where the named landmark is close ahead and the goal point "
        "within M metres (docs/simulator.md)",
    )
    p.add_argument("--workers", type=int, default=1, help="parallel simulator processes")
    _add_camera_args(p, 640, 480)
    p.set_defaults(func=_cmd_rollout)

    p = sub.add_parser("view", help="render one expert rollout as PNG (strip + map) or GIF")
    p.add_argument("--episodes", required=True, help="episodes .json(.gz)")
    p.add_argument("--index", type=int, default=0, help="episode index in the file")
    p.add_argument("--out", required=True, help="output .png or .gif")
    _add_camera_args(p, 640, 480)
    p.set_defaults(func=_cmd_view)

    p = sub.add_parser("captions", help="render captioned frames at random poses (LLaVA JSON)")
    p.add_argument("--split", required=True, choices=sorted(SPLIT_SCENES))
    p.add_argument("--n", type=int, required=True, help="number of captioned frames")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory")
    task = p.add_mutually_exclusive_group()
    task.add_argument(
        "--questions",
        dest="where",
        action="store_true",
        help='"Where is the <landmark>?" with true answers instead of captions, half of them '
        "close to a landmark (questions.json)",
    )
    task.add_argument(
        "--match",
        action="store_true",
        help='"Is the <landmark> close ahead?" yes/no questions instead of captions, the same '
        "frame asked with its close landmark and with another one (match.json)",
    )
    task.add_argument(
        "--readout",
        action="store_true",
        help='"What is close ahead?" answered with the landmark\'s colour and kind, on the '
        "frames --match renders (readout.json)",
    )
    task.add_argument(
        "--compare",
        action="store_true",
        help="--match's questions with the landmark close ahead written first, \"Close ahead: "
        'the orange shelf. Is the pink bookshelf close ahead?" (compare.json)',
    )
    task.add_argument(
        "--copy",
        action="store_true",
        help="--compare's questions answered by repeating both names, \"Close ahead: the "
        'orange shelf. Asked: the pink bookshelf." (copy.json)',
    )
    p.add_argument(
        "--same-kind",
        type=float,
        default=0.0,
        help="--match/--compare/--copy: chance that the negative is a landmark of the same kind "
        "(only its colour differs), when the scene has one; 0 keeps the default mix",
    )
    _add_camera_args(p, 320, 240, frame_hz=False)
    p.set_defaults(func=_cmd_captions)

    p = sub.add_parser(
        "contrast",
        help="contrast episodes of a rollout dataset: another landmark named, states near the "
        "goal relabelled for it",
    )
    p.add_argument("--data", required=True, help="rollout dataset directory (nvila-sim rollout)")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument(
        "--radius",
        type=float,
        default=1.5,
        help="relabel the states within this distance (m) of the original goal point",
    )
    p.add_argument("--seed", type=int, default=0, help="which other landmark each episode names")
    p.set_defaults(func=_cmd_contrast)

    p = sub.add_parser(
        "statements",
        help="write what a reasoning model says before each action (what is close ahead, is "
        "the goal) into rollout datasets written before rollouts recorded it (in place)",
    )
    p.add_argument("--data", required=True, nargs="+", help="rollout dataset directories")
    p.set_defaults(func=_cmd_statements)

    p = sub.add_parser(
        "stop-band",
        help="a rollout dataset ended where an expert with --stop-band stops (the data "
        "rollout --stop-band writes, without rendering again)",
    )
    p.add_argument("--data", required=True, help="rollout dataset directory (nvila-sim rollout)")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--band", type=float, required=True, metavar="M", help="as rollout --stop-band")
    p.set_defaults(func=_cmd_stop_band)

    for command, question, where in (
        ("turn-sides", "Which way does the route turn?", "the expert turns after a move"),
        ("route-ahead", "Is the route straight ahead?", "the expert acts after a turn"),
        ("stop-reach", "Is the goal within reach?", "the named landmark is close ahead"),
        ("landmark-side", "Where is the <landmark>?", "landmarks are in view, and one not"),
    ):
        p = sub.add_parser(
            command,
            help=f'the question "{question}" on the frames of rollout datasets where {where} '
            "(LLaVA JSON)",
        )
        p.add_argument("--data", required=True, nargs="+", help="rollout dataset directories")
        p.add_argument("--out", required=True, help="output directory (JSON, frames)")
        p.set_defaults(func=_cmd_frame_question)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
