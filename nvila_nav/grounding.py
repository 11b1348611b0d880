"""`nvila-nav-grounding`: does the model's stop read which landmark the instruction names?

At the expert's stop of each episode (the goal landmark ahead, close) the model is asked twice
over the same frames and previous actions: with the instruction as given, and with the stop
clause naming another landmark of the scene (`contrast.pick_other`: the same kind or colour
half of the time). A model that grounds the name stops in the first case and not in the second;
a model that stops whenever furniture fills the view stops in both. The report gives, for each
case, the mean probability of "stop" and how often the model's decision (`choose_kind`) is
"stop"; for a model that states what it sees before it acts (`nav_statement`), also what it
said at the stop and how often that was the simulator's statement there (`statement_right`).

    nvila-nav-grounding --model models/navila-nano --episodes data/sim/eval_A.json.gz --limit 50
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nvila_core.progress import track
from nvila_nav.actions import ALL_ACTIONS
from nvila_nav.policies import choose_by_kind
from nvila_nav.sim.captions import stop_statement
from nvila_nav.sim.contrast import name_other, pick_other
from nvila_nav.sim.episodes import Episode, read_episodes
from nvila_nav.sim.robot import CameraConfig
from nvila_nav.sim.world import World, world_for_scene

STOP_INDEX = next(i for i, a in enumerate(ALL_ACTIONS) if a.is_stop)


def other_instructions(
    episode: Episode, world: World, rng: np.random.Generator, draws: int
) -> list[str]:
    """The instruction with its stop clause naming another landmark, `draws` times (fewer when
    the instruction does not name the goal)."""
    goal = world.landmark(episode.info["goal_landmark"])
    texts = []
    for _ in range(draws):
        other = pick_other(world, goal, rng)
        text = None if other is None else name_other(episode.instruction_text, goal, other, rng)
        if text is None:
            break
        texts.append(text)
    return texts


def _stop(engine, answers, instruction, frames, previous) -> tuple[float, bool, str | None]:
    """P(stop) over the ten answers, whether `choose_kind` decides "stop", and what a
    `nav_statement` model said before it chose (None for other models)."""
    result = engine.navigate(instruction, frames, None, answers=answers, previous_actions=previous)
    scores = np.asarray(result.answer_log_probs, dtype=float)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    decided = choose_by_kind(result.answer_log_probs) == STOP_INDEX
    return float(probs[STOP_INDEX]), decided, result.statement


def measure(
    model: str,
    episodes_file: str | Path,
    backend: str = "torch",
    limit: int | None = None,
    draws: int = 3,
    camera: CameraConfig | None = None,
    seed: int = 0,
) -> dict:
    """The grounding summary over the episodes (those whose expert stops and whose instruction
    names the goal), plus one row per episode."""
    from nvila_core.runtime.engine import Engine
    from nvila_nav.sim.env import Simulator
    from nvila_nav.sim.expert import run_expert

    engine = Engine.from_pretrained(model, backend=backend)
    answers = [engine.processor.navigation_answer(a.to_text()) for a in ALL_ACTIONS]
    decision_frames = engine.config.nav_history == "recent"
    rng = np.random.default_rng(seed)
    rows = []
    with Simulator(camera or CameraConfig(width=128, height=96)) as sim:
        for episode in track(read_episodes(episodes_file)[:limit], "episodes", "ep"):
            others = other_instructions(episode, world_for_scene(episode.scene_id), rng, draws)
            run = run_expert(sim, episode, render=True, decision_frames=decision_frames)
            if not others or not run.stopped:
                continue
            last = run.actions[-1]
            frames = run.frames[: last.frame_index + 1]
            previous = [s.action.to_text() for s in run.actions[:-1]]
            engine.clear_cache()
            named = _stop(engine, answers, episode.instruction_text, frames, previous)
            swapped = [_stop(engine, answers, text, frames, previous) for text in others]
            row = {
                "episode_id": episode.episode_id,
                "p_stop_named": round(named[0], 4),
                "stops_named": named[1],
                "p_stop_other": round(float(np.mean([p for p, _, _ in swapped])), 4),
                "stops_other": round(float(np.mean([s for _, s, _ in swapped])), 4),
            }
            if engine.config.nav_statement:
                world = world_for_scene(episode.scene_id)
                goal = world.landmark(episode.info["goal_landmark"])
                truth = stop_statement(world, last.pose, sim.camera.hfov_deg, goal)
                row["statement"] = named[2]
                row["statement_right"] = named[2] == truth
            rows.append(row)
    summary = {
        "episodes": len(rows),
        "draws": draws,
        **{
            key: round(float(np.mean([r[key] for r in rows])), 4) if rows else math.nan
            for key in ("p_stop_named", "stops_named", "p_stop_other", "stops_other")
        },
    }
    if rows and "statement_right" in rows[0]:
        summary["statement_right"] = round(float(np.mean([r["statement_right"] for r in rows])), 4)
    return {"summary": summary, "episodes": rows}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nvila-nav-grounding", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", required=True, help="checkpoint folder or preset")
    parser.add_argument("--backend", default="torch", help="torch | onnxruntime")
    parser.add_argument("--episodes", required=True, type=Path, help="R2R-format episodes file")
    parser.add_argument("--limit", type=int, default=None, help="only the first N episodes")
    parser.add_argument("--draws", type=int, default=3, help="other landmarks per episode")
    parser.add_argument("--seed", type=int, default=0, help="which other landmarks are named")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.draws < 1:
        print("--draws must be at least 1", file=sys.stderr)
        return 2
    report = measure(
        args.model,
        args.episodes,
        backend=args.backend,
        limit=args.limit,
        draws=args.draws,
        camera=CameraConfig(width=args.width, height=args.height),
        seed=args.seed,
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
