"""DAgger (Ross et al. 2011) for navigation models trained here: on-policy data without ROS.

A model trained on expert rollouts only has seen the states the expert (and its perturbations)
visits; once it errs it is somewhere it never trained. Each iteration:

1. roll the current model out on fresh training episodes (`closed_loop.run_policy`); with
   probability beta the expert's action is driven instead (beta decays per iteration);
2. label every visited state with the expert's action: blocked moves, detours and early stops
   included (off the route the expert's cost field leads back, it never says "stop" away from
   the goal); where the base rollouts' expert stopped in a band (`Expert` `stop_band`), the
   labelling expert does too, so the new labels agree with the data they join;
3. aggregate: the iteration's episodes join the base data and every earlier iteration's (the
   data of the recipe's last stage, the one the model came from);
4. fine-tune the current model on the aggregate (an `nvila-core` recipe stage).

Everything is resumable: an iteration whose dataset index exists is not collected again, and
its training stage resumes or is skipped like any recipe stage.

    nvila-nav-dagger --recipe config/train/navila-nano.yaml \\
        --from outputs/train/navila-nano/03-navigation-runs/final --out outputs/train/navila-nano-dagger
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nvila_nav.sim.episodes import TIERS, Episode, generate_episode
from nvila_nav.sim.expert import STOP_DISTANCE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DaggerSettings:
    iterations: int = 1
    episodes: int = 240
    """Training episodes rolled out per iteration, spread evenly over the tiers."""
    beta: float = 0.3
    """Probability of driving the expert's action in the first iteration."""
    beta_decay: float = 0.5
    max_actions: int = 60
    steps: int = 250
    lr: float = 2.0e-4
    base_weight: float = 1.0
    """Sampling weight of the base (expert) datasets in the aggregate."""
    seed: int = 100
    width: int = 128
    height: int = 96
    decoding: str = "choose_kind"
    """How the rolled-out model decides: the decoding it is evaluated and deployed with."""
    expert_finishes: bool = True
    """A model "stop" away from the goal is not executed: the expert drives on to its own stop
    (`run_policy`), so the aggregate keeps one stop label per run instead of diluting it."""
    stop_distance: float = STOP_DISTANCE
    """The labelling expert faces the landmark and stops within this distance (m) of the goal
    point. The rollouts' 0.3 m puts every stop label at one spot; a band well inside the 1.5 m
    success radius labels "stop" where the learner's own stop would already count."""
    workers: int = 2


def iteration_episodes(settings: DaggerSettings, iteration: int) -> list[Episode]:
    """Fresh training episodes for one iteration (their own seed, every tier in turn)."""
    tiers = sorted(TIERS)
    return [
        generate_episode("train", i, seed=settings.seed + iteration, tier=tiers[i % len(tiers)])
        for i in range(settings.episodes)
    ]


def collect(
    model: str | Path,
    episodes: Sequence[Episode],
    out: str | Path,
    beta: float,
    settings: DaggerSettings,
    iteration: int,
    stop_band: float | None = None,
) -> dict[str, float]:
    """Roll `model` out on `episodes` and write them as an expert-labelled training dataset;
    `stop_band`: the labelling expert's (`Expert`), recorded in the index like a rollout's.

    `settings.workers` processes (one torch thread each) take the episodes in small chunks; the
    index keeps the episodes' order, so the dataset does not depend on the number of workers."""
    from nvila_core.progress import Progress
    from nvila_nav.sim.dataset import write_index
    from nvila_nav.sim.robot import CameraConfig

    camera = CameraConfig(width=settings.width, height=settings.height)
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    workers = max(1, min(settings.workers, len(episodes)))
    size = max(1, min(8, len(episodes) // (workers * 4)))
    chunks = [
        (
            str(model),
            partial,
            beta,
            settings,
            iteration,
            stop_band,
            [(i, episodes[i]) for i in range(k, min(k + size, len(episodes)))],
        )
        for k in range(0, len(episodes), size)
    ]
    results: dict[int, _Collected] = {}
    with Progress(len(episodes), f"dagger {iteration}", "ep") as bar:

        def gather(done: dict[int, _Collected]) -> None:
            results.update(done)
            bar.update(len(done))
            successes = sum(r.success for r in results.values())
            bar.set_postfix(success=f"{successes}/{len(results)}")

        if workers == 1:
            for chunk in chunks:
                gather(_collect_chunk(chunk))
        else:
            # spawn: a forked EGL context or MuJoCo renderer from the parent is not safe to reuse.
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for done in pool.imap_unordered(_collect_chunk, chunks):
                    gather(done)
    collected = [results[i] for i in sorted(results)]
    write_index(partial, [r.entry for r in collected], 2.0, camera, stop_band)
    partial.rename(out)
    steps = sum(r.steps for r in collected)
    stats = {
        "episodes": len(episodes),
        "steps": steps,
        "driven_equals_label": round(sum(r.agree for r in collected) / max(steps, 1), 4),
        "success": round(sum(r.success for r in collected) / max(len(episodes), 1), 4),
        "stop_labels": sum(r.stops for r in collected),
    }
    summary = {
        "beta": beta,
        "decoding": settings.decoding,
        "expert_finishes": settings.expert_finishes,
        "stop_distance": settings.stop_distance,
        "stop_band": stop_band,
        **stats,
    }
    (out / "dagger.json").write_text(yaml.safe_dump(summary), encoding="utf-8")
    return stats


@dataclass(frozen=True)
class _Collected:
    """One collected episode: its index entry and counts for the iteration's statistics."""

    entry: dict
    steps: int
    agree: int
    """Steps whose driven action was the expert's label."""
    success: bool
    stops: int


def _collect_chunk(chunk: tuple) -> dict[int, _Collected]:
    """Roll out a few episodes in this process (its own simulator, policy, one torch thread)."""
    import torch

    from nvila_nav.closed_loop import run_policy
    from nvila_nav.policies import make_policy
    from nvila_nav.sim.dataset import write_episode
    from nvila_nav.sim.env import Simulator
    from nvila_nav.sim.robot import CameraConfig

    model, partial, beta, settings, iteration, stop_band, items = chunk
    if multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)
    camera = CameraConfig(width=settings.width, height=settings.height)
    policy = make_policy("nvila", model=model, decoding=settings.decoding, device="cpu")
    results = {}
    with Simulator(camera) as sim:
        for i, episode in items:
            result = run_policy(
                sim,
                episode,
                policy,
                max_actions=settings.max_actions,
                beta=beta,
                seed=(settings.seed + iteration) * 1_000_003 + i,
                expert_finishes=settings.expert_finishes,
                stop_distance=settings.stop_distance,
                stop_band=stop_band,
            )
            run = result.run
            results[i] = _Collected(
                entry=write_episode(partial, run, camera),
                steps=len(run.actions),
                agree=sum(step.executed is None for step in run.actions),
                success=bool(run.success),
                stops=sum(step.action.is_stop for step in run.actions),
            )
    return results


def navigation_data(base: dict[str, Any]) -> dict[str, Any]:
    """The data `base`'s last stage trained on (its own `data`, else the recipe's): the data of
    the model DAgger starts from."""
    stages = base.get("stages") or []
    return dict((stages[-1].get("data") if stages else None) or base["data"])


def base_stop_band(data: dict[str, Any]) -> float | None:
    """The stop band that the rollout datasets of `data` were labelled with (their index's
    `stop_band`; None: the plain expert). Datasets that disagree are refused: on-policy labels
    can agree with only one of them."""
    bands = set()
    for spec in data["datasets"]:
        index = Path(spec["path"]) / "index.json"
        if spec.get("split") != "val" and index.is_file():
            bands.add(json.loads(index.read_text(encoding="utf-8")).get("stop_band"))
    if len(bands) > 1:
        raise ValueError(f"the base rollouts were labelled with different stop bands: {bands}")
    return bands.pop() if bands else None


def stage_recipe(
    base: dict[str, Any], model: Path, datasets: list[Path], settings: DaggerSettings, name: str
) -> dict[str, Any]:
    """A one-stage recipe: fine-tune `model` on the base navigation data and the DAgger data."""
    data = navigation_data(base)
    base_sets = [
        {**d, "weight": settings.base_weight} if d.get("split") != "val" else d
        for d in data["datasets"]
    ]
    on_policy = [
        {"name": f"dagger-{k + 1}", "path": str(path), "weight": 1.0, "split": "train"}
        for k, path in enumerate(datasets)
    ]
    return {
        "name": name,
        "seed": base.get("seed", 0),
        "model": {"checkpoint": str(model)},
        "data": {**data, "blank_frames": False, "datasets": base_sets + on_policy},
        "defaults": dict(base.get("defaults") or {}),
        "stages": [
            {
                "name": "dagger",
                "trainable": ["vision_tower", "mm_projector", "llm"],
                "lr": settings.lr,
                "vision_lr_ratio": 1.0,
                "max_steps": settings.steps,
            }
        ],
    }


def run_dagger(
    recipe_path: str | Path, start: str | Path, out: str | Path, settings: DaggerSettings
) -> Path:
    """Run the iterations; returns the last iteration's final model folder."""
    from nvila_core.train.recipe import read_recipe_data, recipe_from_dict, run_recipe

    base = read_recipe_data(Path(recipe_path))
    out = Path(out)
    current = Path(start)
    stop_band = base_stop_band(navigation_data(base))
    datasets: list[Path] = []
    for k in range(1, settings.iterations + 1):
        folder = out / f"iter-{k}"
        data_dir = folder / "data"
        beta = settings.beta * settings.beta_decay ** (k - 1)
        if not (data_dir / "index.json").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            episodes = iteration_episodes(settings, k)
            stats = collect(current, episodes, data_dir, beta, settings, k, stop_band)
            log.info("dagger iteration %d: collected %s", k, stats)
        datasets.append(data_dir)
        spec = stage_recipe(base, current, datasets, settings, f"{base['name']}-dagger-{k}")
        recipe = recipe_from_dict(spec, source=str(folder / "recipe.yaml"))
        (folder / "recipe.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        current = run_recipe(recipe, folder / "train")
    return current


def build_parser() -> argparse.ArgumentParser:
    defaults = DaggerSettings()
    parser = argparse.ArgumentParser(prog="nvila-nav-dagger", description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, help="the model's training recipe (its data)")
    parser.add_argument("--from", dest="start", required=True, help="model folder to start from")
    parser.add_argument("--out", required=True, help="output folder (iter-N/ per iteration)")
    for name, value in vars(defaults).items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k not in ("recipe", "start", "out")}
    final = run_dagger(args.recipe, args.start, args.out, DaggerSettings(**fields))
    print(f"final model: {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
