"""How much of the expert's label can a model predict from what it is given? A label audit.

Behaviour cloning can only learn the part of a label that is a function of the model's inputs.
This audit rolls the expert out (perturbed, without rendering) and describes each decision by
cues a model could read from its inputs, computed exactly from the world instead of learnt:

- camera: how far the base can drive along five headings inside the field of view, whether the
  goal landmark and the nearest doorway are in view (bearing, distance);
- instruction: the stated initial turn (side and size, by the words of the first clause);
- previous actions: the three latest executed actions, and the step index.

A small classifier is fitted on 80 % of the episodes and tested on the rest. Its held-out
accuracy is an estimate of the teacher-forced ceiling of a model with those inputs (a learnt
model reads pixels, not these numbers, so it can do a little better by seeing more, or worse);
the prior (always the most frequent label) is the floor.

    python -m nvila_nav.sim.label_audit --episodes 800 --out outputs/label_audit.json
    python -m nvila_nav.sim.label_audit --episodes 800 --approach   # the approach-cone expert
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nvila_nav.actions import ALL_ACTIONS, Action
from nvila_nav.sim.geometry import Pose, wrap_angle

HALF_FOV = math.radians(39.5)
VIEW_RANGE = 8.0
HEADINGS_DEG = (-30, -15, 0, 15, 30)
LABELS = [a.to_text() for a in ALL_ACTIONS]
_TURN_WORDS = re.compile(r"\b(around|back|u-turn|slightly|a little|bear|left|right)\b")


def _free_distance(world, pose: Pose, heading: float, limit: float = 5.0) -> float:
    step = 0.1
    d = 0.0
    while d < limit:
        x = pose.x + math.cos(heading) * (d + step)
        y = pose.y + math.sin(heading) * (d + step)
        if world.nav.clearance_at(x, y) < 0.25:
            break
        d += step
    return d


def _in_view(world, pose: Pose, target: tuple[float, float]) -> tuple[float, float, float]:
    """(visible, bearing, distance) of a point from the camera."""
    dx, dy = target[0] - pose.x, target[1] - pose.y
    distance = math.hypot(dx, dy)
    bearing = wrap_angle(math.atan2(dy, dx) - pose.yaw)
    visible = (
        abs(bearing) <= HALF_FOV
        and distance <= VIEW_RANGE
        and world.nav.visible((pose.x, pose.y), target)
    )
    return (1.0, bearing, distance / VIEW_RANGE) if visible else (0.0, 0.0, 0.0)


def instruction_cues(text: str) -> list[float]:
    """The first clause's turn words: around / slight / left / right, as flags."""
    first = re.split(r"[,.]", text.lower(), maxsplit=1)[0]
    words = set(_TURN_WORDS.findall(first))
    return [
        float(bool(words & {"around", "back", "u-turn"})),
        float(bool(words & {"slightly", "a little", "bear"})),
        float("left" in words),
        float("right" in words),
    ]


def _one_hot(action: Action | None) -> list[float]:
    row = [0.0] * (len(LABELS) + 1)
    row[LABELS.index(action.to_text()) if action is not None else len(LABELS)] = 1.0
    return row


def features(world, episode, pose: Pose, done: Sequence[Action], step: int) -> list[float]:
    row = [_free_distance(world, pose, pose.yaw + math.radians(h)) / 5.0 for h in HEADINGS_DEG]
    name = episode.info.get("goal_landmark")
    goal = next((lm for lm in world.landmarks if lm.name == name), None)
    row += _in_view(world, pose, (goal.x, goal.y)) if goal else [0.0, 0.0, 0.0]
    door = min(world.doorways, key=lambda d: math.hypot(d.x - pose.x, d.y - pose.y))
    row += _in_view(world, pose, (door.x, door.y))
    row += instruction_cues(episode.instruction_text)
    for k in (1, 2, 3):
        row += _one_hot(done[-k] if len(done) >= k else None)
    row += [min(step, 40) / 40.0, float(step == 0)]
    return row


def collect(
    n: int, perturb: float, seed: int, approach: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and episode index of every expert decision on `n` train episodes;
    `approach`: the expert comes in towards the named landmark (`run_expert(approach=True)`)."""
    from nvila_nav.sim.env import Simulator
    from nvila_nav.sim.episodes import generate_episodes
    from nvila_nav.sim.expert import run_expert
    from nvila_nav.sim.world import world_for_scene

    rows, labels, groups = [], [], []
    with Simulator() as sim:
        for e, episode in enumerate(generate_episodes("train", n, seed=seed)):
            run = run_expert(sim, episode, render=False, perturb=perturb, seed=e, approach=approach)
            world = world_for_scene(episode.scene_id)
            done: list[Action] = []
            for k, step in enumerate(run.actions):
                rows.append(features(world, episode, step.pose, done, k))
                labels.append(LABELS.index(step.action.to_text()))
                groups.append(e)
                done.append(step.executed or step.action)
    return np.asarray(rows, np.float32), np.asarray(labels), np.asarray(groups)


def _kind(labels: np.ndarray) -> np.ndarray:
    kinds = np.array([a.kind.value for a in ALL_ACTIONS])
    return np.unique(kinds, return_inverse=True)[1][labels]


def fit_and_score(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> dict:
    """Held-out accuracy (action and kind) of an MLP on 80/20 episode splits vs the prior."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    episodes = np.unique(groups)
    test = set(rng.permutation(episodes)[: max(1, len(episodes) // 5)].tolist())
    is_test = np.array([g in test for g in groups])
    mean, std = x[~is_test].mean(0), x[~is_test].std(0) + 1e-6
    xt = torch.tensor((x - mean) / std)
    yt = torch.tensor(y)
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, len(LABELS)),
    )
    optimizer = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=1e-3)
    train_idx = np.nonzero(~is_test)[0]
    for _ in range(60):
        for batch in np.array_split(rng.permutation(train_idx), max(1, len(train_idx) // 256)):
            loss = torch.nn.functional.cross_entropy(model(xt[batch]), yt[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = model(xt[is_test]).argmax(1).numpy()
    truth = y[is_test]
    prior = np.bincount(y[~is_test], minlength=len(LABELS)).argmax()
    stop = LABELS.index("stop")
    said_stop, is_stop = predicted == stop, truth == stop
    return {
        "decisions": len(y),
        "test_decisions": int(is_test.sum()),
        "accuracy": round(float((predicted == truth).mean()), 4),
        "kind_accuracy": round(float((_kind(predicted) == _kind(truth)).mean()), 4),
        "prior_accuracy": round(float((truth == prior).mean()), 4),
        "prior_kind_accuracy": round(
            float((_kind(truth) == _kind(np.full_like(truth, prior))).mean()), 4
        ),
        # the label that ends an episode: how many of the expert's stops, and how exactly
        "stop_recall": round(float(said_stop[is_stop].mean()), 4) if is_stop.any() else None,
        "stop_precision": (round(float(is_stop[said_stop].mean()), 4) if said_stop.any() else None),
        "label_shares": {
            LABELS[i]: round(float(c) / len(y), 4)
            for i, c in enumerate(np.bincount(y, minlength=len(LABELS)))
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nvila_nav.sim.label_audit", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--episodes", type=int, default=800)
    parser.add_argument("--perturb", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--approach", action="store_true", help="the expert's approach cone (rollout --approach)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    args = parser.parse_args(argv)
    x, y, groups = collect(args.episodes, args.perturb, args.seed, args.approach)
    result = {
        "episodes": args.episodes,
        "perturb": args.perturb,
        "approach": args.approach,
        **fit_and_score(x, y, groups),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
