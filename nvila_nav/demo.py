"""`make demo`: the NVILA model end to end on frames from the embedded simulator.

A simulated robot follows one val_unseen episode with the expert driver, so the camera sees a
real route; at every decision point the model gets NaVILA's query (8-frame history sampler, the
navigation prompt with the episode's instruction) and answers. The default model is the `tiny`
preset with random weights: its words are meaningless — the demo shows the data path (frames →
per-frame feature cache → vision tower → projector → prompt splicing → KV-cache decoding →
action parser) and its timings. Point --model at a checkpoint directory to run a trained model.
"""

from __future__ import annotations

import argparse
import logging
import sys

from nvila_core.runtime import Engine
from nvila_nav.actions import parse_action
from nvila_nav.sim.env import Simulator
from nvila_nav.sim.episodes import generate_episode
from nvila_nav.sim.expert import run_expert
from nvila_nav.sim.robot import CameraConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nvila-nav-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="checkpoint directory or preset name")
    parser.add_argument("--episode", type=int, default=0, help="val_unseen episode index")
    parser.add_argument("--queries", type=int, default=6, help="decision points to query")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    episode = generate_episode("val_unseen", args.episode, seed=0)
    print(
        f"episode {episode.episode_id} in scene {episode.scene_id} (val_unseen: never trained on)"
    )
    print(f'instruction: "{episode.instruction_text}"')
    with Simulator(CameraConfig(width=args.width, height=args.height)) as sim:
        run = run_expert(sim, episode, render=True)
    print(
        f"expert drove {len(run.actions)} actions, {run.path_length:.1f} m, "
        f"{len(run.frames)} frames at {run.frame_hz:g} Hz, success={run.success}"
    )

    engine = Engine.from_pretrained(args.model)
    random_weights = engine.random_weights
    print(
        f"model: {engine.config.name} ({engine.backend_name} backend)"
        + (
            " — RANDOM weights: the answers below are meaningless by design"
            if random_weights
            else ""
        )
    )

    steps = run.actions[:-1] or run.actions
    stride = max(1, len(steps) // max(1, args.queries))
    print(
        f"\n{'step':>4} {'frames':>6} {'ViT':>4} {'vision ms':>9} {'prefill ms':>10} "
        f"{'decode tok/s':>12}  model output -> parsed action   (expert did)"
    )
    for step in steps[::stride][: args.queries]:
        history = run.frames[: step.frame_index + 1]
        keys = list(range(len(history)))
        result = engine.navigate(
            episode.instruction_text, history, frame_keys=keys, max_new_tokens=args.max_new_tokens
        )
        action = parse_action(result.text)
        t = result.timings
        parsed = action.to_text() if action else "unparseable (navigator would re-query, then stop)"
        print(
            f"{step.frame_index:>4} {len(history):>6} {t['vit_passes']:>4} {t['vision_ms']:>9.1f} "
            f"{t['prefill_ms']:>10.1f} {t['decode_tokens_per_s']:>12.1f}  "
            f"{result.text[:40]!r} -> {parsed}   ({step.action.to_text()})"
        )
    print(f"\nfeature cache: {engine.cache_info()}")
    print(
        "ViT = frames encoded for that query: frames seen by an earlier query come from the "
        "per-frame feature cache. The ROS 2 navigation graph and the trained model replace this "
        "demo as they land."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
