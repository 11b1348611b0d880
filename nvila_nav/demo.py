"""`make demo`: the sim_eval graph on a handful of val_unseen episodes, through the bringup.

It runs what `ros2 launch nvila_nav sim_eval.launch.py` runs — the embedded simulator, the
navigator, the motion controller and the evaluator as ROS 2 nodes talking over DDS — once per
policy, then prints the VLN-CE metrics table and where the per-episode JSON and top-down plots are.

Policies: `expert` is the simulator's oracle (it tests the graph independently of model quality);
`nvila` runs the NVILA engine on `models/navila-nano`, the navigation model trained in this
repository, when that checkpoint is present, and otherwise on the `tiny` preset (random weights,
not expected to succeed): frames → history → engine → parsed action → controller. Point --model
at another checkpoint or preset to run that instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from nvila_nav.metrics import format_table
from nvila_nav.sim.episodes import generate_episodes, write_episodes

NANO = Path(__file__).resolve().parent.parent / "models" / "navila-nano"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nvila-nav-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=5, help="val_unseen episodes to run")
    parser.add_argument("--model", default=str(NANO), help="nvila policy: checkpoint dir or preset")
    parser.add_argument(
        "--model-episodes", type=int, default=5, help="episodes for the nvila policy (0: skip)"
    )
    parser.add_argument("--model-max-actions", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--real-time-factor", type=float, default=3.0)
    return parser


def run_policy(
    policy: str, label: str, episodes: Path, out: Path, args, extra: dict | None = None
) -> dict:
    """One `nvila-nav-bringup sim_eval` run; returns the evaluator's summary."""
    out.mkdir(parents=True, exist_ok=True)
    params = {"evaluator": extra or {}}
    params_file = out / "demo_params.yaml"
    params_file.write_text(json.dumps({n: {"ros__parameters": v} for n, v in params.items()}))
    command = [
        sys.executable,
        "-m",
        "nvila_nav.nodes.bringup",
        "sim_eval",
        "--policy",
        policy,
        "--model",
        args.model,
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
        "--ros-args",
        "--log-level",
        "warn",
    ]
    print(f"\n$ nvila-nav-bringup sim_eval --policy {policy} --model {args.model} ...", flush=True)
    subprocess.run(command, check=True, env={**os.environ, "MUJOCO_GL": "egl"})
    return json.loads((out / "summary.json").read_text())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    episodes = generate_episodes("val_unseen", args.episodes, seed=0)
    episodes_file = write_episodes(args.out / "val_unseen.json.gz", episodes)
    print(f"{len(episodes)} val_unseen episodes (scenes never used for training): {episodes_file}")
    for episode in episodes:
        print(f"  {episode.episode_id}: {episode.instruction_text}")

    results = {}
    expert = run_policy("expert", "expert (oracle)", episodes_file, args.out / "expert", args)
    results["expert (oracle)"] = expert["metrics"]
    if args.model_episodes > 0:
        label = f"nvila ({Path(args.model).name})"
        model_episodes = write_episodes(
            args.out / "val_unseen_model.json.gz", episodes[: args.model_episodes]
        )
        nvila = run_policy(
            "nvila",
            label,
            model_episodes,
            args.out / "nvila",
            args,
            extra={"max_actions": args.model_max_actions},
        )
        results[label] = nvila["metrics"]

    print("\nVLN-CE metrics on val_unseen (success radius 1.5 m):")
    print(format_table(results))
    print(
        f"\nper-episode JSON and top-down plots: {args.out}/expert/{{episodes,plots}}/"
        + (f", {args.out}/nvila/" if args.model_episodes > 0 else "")
    )
    if args.model == "tiny":
        print(
            "policies: expert = the simulator's oracle driver; nvila (tiny) = the NVILA engine "
            "with RANDOM weights, so it is not expected to succeed."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
