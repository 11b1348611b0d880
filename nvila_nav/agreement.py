"""`nvila-nav-agreement`: do two models choose the same next action on the same inputs?

A quantized or exported model is judged against the model it came from on exactly the inputs
NaVILA sees: every step of expert rollouts on simulator episodes (frames rendered here, the
expert's history at each step, i.e. teacher forcing), each model's answer parsed with the action
grammar. It reports, per model, how often its action equals the reference model's (the first
`--model`) and the expert's, and writes the per-step table as CSV. Closed-loop success is a
different question, answered by the sim_eval graph (`scripts/evaluate_navila_nano.sh`).

    nvila-nav-agreement --model fp32=models/navila-nano \\
        --model w8a8-w4a16=outputs/deploy/navila-nano:onnxruntime \\
        --episodes data/sim/eval_val_unseen.json.gz --out outputs/agreement
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nvila_core.progress import track
from nvila_nav.actions import ALL_ACTIONS, Action, parse_action
from nvila_nav.policies import DECODINGS, decided_text
from nvila_nav.sim.episodes import read_episodes
from nvila_nav.sim.robot import CameraConfig


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: str
    backend: str = "torch"

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """NAME=PATH or NAME=PATH:BACKEND (torch | onnxruntime)."""
        name, sep, rest = text.partition("=")
        if not sep or not name or not rest:
            raise ValueError(f"--model takes NAME=PATH[:BACKEND], got {text!r}")
        path, _, backend = rest.partition(":")
        return cls(name, path, backend or "torch")


@dataclass(frozen=True)
class StepRecord:
    """One step: the expert's action and each model's raw answer and its parsed action."""

    episode_id: str
    step: int
    expert: Action
    answers: dict[str, Action | None]
    texts: dict[str, str]


def compare(
    specs: Sequence[ModelSpec],
    episodes_file: str | Path,
    limit: int | None = None,
    camera: CameraConfig | None = None,
    decoding: str = "generate",
) -> list[StepRecord]:
    """Every model's parsed answer at every step of the expert's rollout of each episode;
    `decoding` as the navigator's parameter (generate | choose)."""
    from nvila_core.runtime.engine import Engine
    from nvila_nav.sim.env import Simulator
    from nvila_nav.sim.expert import run_expert

    engines = {s.name: Engine.from_pretrained(s.path, backend=s.backend) for s in specs}
    histories = {engine.config.nav_history for engine in engines.values()}
    if len(histories) > 1:
        raise ValueError(
            f"models with different frame histories cannot share rollouts: {histories}"
        )
    decision_frames = histories == {"recent"}
    answers = {
        name: [engine.processor.navigation_answer(a.to_text()) for a in ALL_ACTIONS]
        if decoding in ("choose", "choose_kind")
        else None
        for name, engine in engines.items()
    }
    episodes = read_episodes(episodes_file)[:limit]
    records = []
    with Simulator(camera or CameraConfig(width=320, height=240)) as sim:
        for episode in track(episodes, "episodes", "ep"):
            run = run_expert(sim, episode, render=True, decision_frames=decision_frames)
            for engine in engines.values():
                engine.clear_cache()
            for k, step in enumerate(run.actions):
                frames = run.frames[: step.frame_index + 1]
                keys = list(range(len(frames)))
                done = [s.action.to_text() for s in run.actions[:k]]
                texts = {}
                for name, engine in engines.items():
                    result = engine.navigate(
                        episode.instruction_text,
                        frames,
                        keys,
                        answers=answers[name],
                        previous_actions=done,
                    )
                    texts[name] = decided_text(result, answers[name], decoding == "choose_kind")
                parsed = {name: parse_action(text) for name, text in texts.items()}
                records.append(StepRecord(episode.episode_id, k, step.action, parsed, texts))
    return records


def summarize(records: Sequence[StepRecord], reference: str) -> dict[str, dict[str, float]]:
    """Per model: the fraction of steps whose action equals the reference model's and the
    expert's (an unparseable answer agrees with nothing), and whose raw text equals the
    reference model's."""
    names = list(records[0].answers) if records else []
    summary = {}
    for name in names:
        same = sum(
            r.answers[name] is not None and r.answers[name] == r.answers[reference] for r in records
        )
        expert = sum(r.answers[name] == r.expert for r in records)
        text = sum(r.texts[name] == r.texts[reference] for r in records)
        summary[name] = {
            "steps": len(records),
            "agreement_with_reference": same / len(records),
            "agreement_with_expert": expert / len(records),
            "same_text_as_reference": text / len(records),
        }
    return summary


def _text(action: Action | None) -> str:
    return "" if action is None else action.to_text()


def write_outputs(records: Sequence[StepRecord], summary: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = list(summary)
    with (out / "steps.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["episode_id", "step", "expert", *names])
        for r in records:
            writer.writerow(
                [r.episode_id, r.step, _text(r.expert), *(_text(r.answers[n]) for n in names)]
            )
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nvila-nav-agreement", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        type=ModelSpec.parse,
        help="NAME=PATH[:BACKEND]; the first is the reference (repeatable)",
    )
    parser.add_argument("--episodes", required=True, type=Path, help="R2R-format episodes file")
    parser.add_argument("--limit", type=int, default=None, help="only the first N episodes")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument(
        "--decoding",
        choices=DECODINGS,
        default="generate",
        help="generate: greedy text, parsed; choose: the most probable of the ten actions; "
        "choose_kind: the most probable kind, then its most probable amount",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/agreement"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [s.name for s in args.model]
    if len(set(names)) != len(names):
        print(f"model names must be unique, got {names}", file=sys.stderr)
        return 2
    camera = CameraConfig(width=args.width, height=args.height)
    records = compare(args.model, args.episodes, args.limit, camera, args.decoding)
    summary = summarize(records, names[0])
    write_outputs(records, summary, args.out)
    print(f"{'model':<24} {'steps':>6} {'= ' + names[0]:>14} {'= expert':>10} {'same text':>10}")
    for name, row in summary.items():
        print(
            f"{name:<24} {row['steps']:>6} {100 * row['agreement_with_reference']:>13.1f}% "
            f"{100 * row['agreement_with_expert']:>9.1f}% {100 * row['same_text_as_reference']:>9.1f}%"
        )
    print(f"per-step answers: {args.out / 'steps.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
