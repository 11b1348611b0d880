"""`make demo`: the sim_eval graph on a handful of val_unseen episodes, through the bringup.

It runs what `ros2 launch nvila_nav sim_eval.launch.py` runs — the embedded simulator, the
navigator, the motion controller and the evaluator as ROS 2 nodes talking over DDS — once per
policy, then prints the VLN-CE metrics table and where the per-episode JSON and top-down plots are.

Policies: `expert` is the simulator's oracle (it tests the graph independently of model quality);
`nvila` runs the NVILA engine on `models/navila-nano`, the navigation model trained in this
repository, when that checkpoint is present, and otherwise on the `tiny` preset (random weights,
not expected to succeed): frames → history → engine → parsed action → controller. Point --model
at another checkpoint or preset to run that instead.

Everything goes to `--out` (outputs/demo): per policy the evaluator's per-episode JSON and
top-down plots, and `overview.png`, one picture of every episode of every policy
(nvila_nav/overview.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from nvila_nav.metrics import format_table
from nvila_nav.overview import write_overview
from nvila_nav.policies import DECODINGS
from nvila_nav.report import load_run
from nvila_nav.sim.episodes import TIERS, generate_episodes, write_episodes

NANO = Path(__file__).resolve().parent.parent / "models" / "navila-nano"
FALLBACK = "tiny"


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why (printed without a traceback)."""


def default_model(nano: Path = NANO) -> str:
    """models/navila-nano when it holds a checkpoint (its config.json), else the tiny preset."""
    return str(nano) if (nano / "config.json").is_file() else FALLBACK


def check_model(model: str) -> None:
    """Refuse a --model that is neither a folder nor a preset before any graph starts."""
    from nvila_core.model.configuration import list_presets  # light: yaml only, no torch

    if Path(model).is_dir() or model in list_presets():
        return
    raise DemoError(
        f"--model {model!r} is neither a checkpoint folder nor a model preset "
        f"(presets: {', '.join(list_presets())})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nvila-nav-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=5, help="val_unseen episodes to run")
    parser.add_argument(
        "--tier",
        choices=sorted(TIERS),
        default="A",
        help="route tier: A goal in the start room or the next one (<= 5 m), B one doorway, "
        "C all routes (3-22 m)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"nvila policy: checkpoint dir or preset (default: {NANO.parent.name}/{NANO.name} "
        f"when present, else the {FALLBACK!r} preset with random weights)",
    )
    parser.add_argument(
        "--model-episodes", type=int, default=5, help="episodes for the nvila policy (0: skip)"
    )
    parser.add_argument("--model-max-actions", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--real-time-factor", type=float, default=3.0)
    parser.add_argument(
        "--decoding",
        choices=DECODINGS,
        default="choose_kind",
        help="navigator decoding for the nvila policy: choose_kind (the most probable kind of "
        "action, then its most probable amount; how navila-nano is evaluated), choose (the most "
        "probable of the ten actions) or generate (NaVILA's greedy text)",
    )
    return parser


def run_policy(
    policy: str,
    label: str,
    episodes: Path,
    out: Path,
    args,
    evaluator: dict | None = None,
    navigator: dict | None = None,
) -> dict:
    """One `nvila-nav-bringup sim_eval` run; returns the evaluator's summary."""
    out.mkdir(parents=True, exist_ok=True)
    # the camera at navila-nano's training resolution (the model resizes to 96 px tiles)
    params = {"evaluator": evaluator or {}, "sim": {"width": 128, "height": 96}}
    if navigator:
        params["navigator"] = navigator
    params_file = out / "demo_params.yaml"
    params_file.write_text(json.dumps({n: {"ros__parameters": v} for n, v in params.items()}))
    options = [
        "--policy",
        policy,
        *(["--model", args.model] if policy == "nvila" else []),
        "--label",
        label,
        "--episodes",
        str(episodes),
        "--output-dir",
        str(out),
        "--real-time-factor",
        str(args.real_time_factor),
        "--params-file",
        str(params_file),
    ]
    command = [sys.executable, "-m", "nvila_nav.nodes.bringup", "sim_eval", *options]
    print(f"\n$ nvila-nav-bringup sim_eval {shlex.join(options)}", flush=True)
    done = subprocess.run(
        [*command, "--ros-args", "--log-level", "warn"], env={**os.environ, "MUJOCO_GL": "egl"}
    )
    summary = out / "summary.json"
    if done.returncode != 0 or not summary.is_file():
        raise DemoError(
            f"the {policy} run failed (nvila-nav-bringup exit status {done.returncode}); "
            "its messages are above"
        )
    return json.loads(summary.read_text())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _demo(args)
    except DemoError as exc:
        print(f"\nmake demo: error: {exc}", file=sys.stderr)
        return 1


def _demo(args: argparse.Namespace) -> int:
    if args.model is None:
        args.model = default_model()
        if args.model == FALLBACK and args.model_episodes > 0:
            print(
                f"{NANO} is not here: the nvila policy runs the "
                f"{FALLBACK!r} preset, the NVILA engine with RANDOM weights. It shows the model path "
                "end to end and is not expected to reach a goal."
            )
    if args.model_episodes > 0:
        check_model(args.model)
    episodes = generate_episodes("val_unseen", args.episodes, seed=0, tier=args.tier)
    episodes_file = write_episodes(args.out / "val_unseen.json.gz", episodes)
    print(
        f"{len(episodes)} val_unseen tier {args.tier} episodes (scenes never used for training): "
        f"{episodes_file}"
    )
    for episode in episodes:
        print(f"  {episode.episode_id}: {episode.instruction_text}")

    results, folders = {}, {}
    label = "expert (oracle)"
    expert = run_policy("expert", label, episodes_file, args.out / "expert", args)
    results[label], folders[label] = expert["metrics"], args.out / "expert"
    if args.model_episodes > 0:
        label = f"nvila ({Path(args.model).name})"
        navigator = {"decoding": args.decoding}
        if not Path(args.model).is_dir():  # a preset: random weights, asked for explicitly
            navigator["allow_random_weights"] = True
        model_episodes = write_episodes(
            args.out / "val_unseen_model.json.gz", episodes[: args.model_episodes]
        )
        nvila = run_policy(
            "nvila",
            label,
            model_episodes,
            args.out / "nvila",
            args,
            evaluator={"max_actions": args.model_max_actions},
            navigator=navigator,
        )
        results[label], folders[label] = nvila["metrics"], args.out / "nvila"

    print(f"\nVLN-CE metrics on val_unseen tier {args.tier} (success radius 1.5 m):")
    print(format_table(results))
    runs = [load_run(name, folder) for name, folder in folders.items()]
    title = (
        f"make demo: {len(episodes)} val_unseen tier {args.tier} episodes "
        "(scenes never used for training)"
    )
    overview = write_overview(args.out / "overview.png", runs, episodes, title)
    print("\nwhat ran: the sim_eval graph (simulator, navigator, motion controller, evaluator as")
    print("ROS 2 nodes over DDS) once per policy:")
    print("  expert (oracle): the simulator's oracle driver; it tests the graph, not a model")
    if args.model_episodes > 0:
        random = " with RANDOM weights, not expected to succeed" if args.model == FALLBACK else ""
        print(f"  {label}: the NVILA engine on {args.model}{random}")
    print("\npictures:")
    print(f"  {overview}   <- every episode: map, trajectory, instruction, outcome")
    for name, folder in folders.items():
        print(f"  {folder}/plots/*.png   <- {name}, one map per episode")
    print(f"per-episode JSON: {', '.join(f'{f}/episodes/' for f in folders.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
