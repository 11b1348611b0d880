"""VLN-CE (R2R) episodes: the reader/writer and the generator for embedded-simulator scenes.

Files are `{"episodes": [...]}` JSON, gzipped when the name ends in `.gz`, with the R2R-VLNCE
episode fields (navila.md §2.2). The reader also takes real R2R-VLNCE / RxR-VLNCE files:
episode ids become strings, unknown keys are ignored, a missing goal radius stays None.

Frame convention of generated episodes: z-up, metres, x east, y north (Habitat's Matterport
episodes are y-up; ours are not). `start_rotation` is a quaternion [x, y, z, w] about +z, so
yaw = 2·atan2(z, w), 0 facing +x, counter-clockwise positive. Positions are on the floor (z=0).
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nvila_nav.sim.geometry import Point, polyline_length, resample
from nvila_nav.sim.instructions import describe_route
from nvila_nav.sim.world import Landmark, World, scene_id, world_for_scene

SUCCESS_RADIUS = 1.5
"""Goal radius (m) of generated episodes; docs/simulator.md explains the choice."""

SPLIT_SCENES: dict[str, tuple[int, ...]] = {
    "train": tuple(range(0, 1000)),
    "val_seen": tuple(range(0, 1000)),
    "val_unseen": tuple(range(1000, 1012)),
}
"""Scene indices per split. Worlds are procedural and cost ~20 ms to build, so training draws
from 1000 of them; val_seen reuses the training scenes with new routes (as in R2R); val_unseen
scenes are a disjoint index range that no training episode can draw."""

_SPLIT_SALT = {"train": 11, "val_seen": 23, "val_unseen": 37}


@dataclass(frozen=True)
class Tier:
    """A curriculum tier: route length range (m), doorways crossed, and the start-distance
    targets the sampler aims at (cost-to-go, m)."""

    name: str
    route_length: tuple[float, float]
    doorways: tuple[int, int]
    start_target: tuple[float, float]
    other_room: float
    """Probability of asking for a start outside the goal's room."""


TIERS: dict[str, Tier] = {
    "A": Tier("A", (1.5, 5.0), (0, 1), (1.5, 5.0), 0.5),
    "B": Tier("B", (3.0, 12.0), (1, 1), (3.0, 10.0), 1.0),
    "C": Tier("C", (3.0, 22.0), (0, 99), (4.0, 18.0), 0.85),
}
"""A: goal in the start room or the next one, at most 5 m; B: exactly one doorway; C: the full
distribution of routes (3–22 m, any number of rooms)."""


@dataclass(frozen=True)
class Goal:
    position: tuple[float, float, float]
    radius: float | None


@dataclass(frozen=True)
class Episode:
    """One instruction-following episode in R2R-VLNCE form."""

    episode_id: str
    trajectory_id: int | str
    scene_id: str
    start_position: tuple[float, float, float]
    start_rotation: tuple[float, float, float, float]
    goals: tuple[Goal, ...]
    reference_path: tuple[tuple[float, float, float], ...]
    instruction_text: str
    info: dict[str, Any] = field(default_factory=dict)
    gt_locations: tuple[tuple[float, float, float], ...] = ()
    """Dense ground-truth route (one point per 25 cm), for nDTW; VLN-CE keeps it in a separate
    {split}_gt.json.gz, VLN-CE-Isaac in the episode. Empty when the file has none."""

    @property
    def goal(self) -> Goal:
        return self.goals[0]

    @property
    def start_yaw(self) -> float:
        return quaternion_to_yaw(self.start_rotation)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Episode:
        instruction = d["instruction"]
        text = instruction if isinstance(instruction, str) else instruction["instruction_text"]
        return cls(
            episode_id=str(d["episode_id"]),
            trajectory_id=d.get("trajectory_id", d["episode_id"]),
            scene_id=str(d["scene_id"]),
            start_position=_floats(d["start_position"], 3),
            start_rotation=_floats(d["start_rotation"], 4),
            goals=tuple(
                Goal(
                    _floats(g["position"], 3),
                    None if g.get("radius") is None else float(g["radius"]),
                )
                for g in d.get("goals", [])
            ),
            reference_path=tuple(_floats(p, 3) for p in d.get("reference_path") or []),
            instruction_text=str(text),
            info=dict(d.get("info") or {}),
            gt_locations=tuple(_floats(p, 3) for p in d.get("gt_locations") or []),
        )

    def to_dict(self) -> dict[str, Any]:
        d = {
            "episode_id": self.episode_id,
            "trajectory_id": self.trajectory_id,
            "scene_id": self.scene_id,
            "start_position": list(self.start_position),
            "start_rotation": list(self.start_rotation),
            "goals": [{"position": list(g.position), "radius": g.radius} for g in self.goals],
            "reference_path": [list(p) for p in self.reference_path],
            "instruction": {"instruction_text": self.instruction_text},
            "info": self.info,
        }
        if self.gt_locations:
            d["gt_locations"] = [list(p) for p in self.gt_locations]
        return d


def _floats(values: Sequence[float], n: int) -> tuple[float, ...]:
    if len(values) != n:
        raise ValueError(f"expected {n} numbers, got {values!r}")
    return tuple(float(v) for v in values)


def yaw_to_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """[x, y, z, w] of a rotation by `yaw` about +z."""
    return (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))


def quaternion_to_yaw(q: Sequence[float]) -> float:
    """Heading about +z of an [x, y, z, w] quaternion (its projection on the floor)."""
    x, y, z, w = q
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def read_episodes(path: str | Path) -> list[Episode]:
    """Episodes of an R2R-style JSON or JSON.gz file (ours or real R2R/RxR-VLNCE)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    return [Episode.from_dict(e) for e in data["episodes"]]


def write_episodes(path: str | Path, episodes: Iterable[Episode]) -> Path:
    """Write `{"episodes": [...]}`; gzip when the name ends in .gz. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"episodes": [e.to_dict() for e in episodes]}, indent=1)
    if path.suffix == ".gz":
        # No name and mtime in the header: identical episodes give identical bytes.
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f,
        ):
            f.write(text.encode("utf-8"))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def generate_episodes(split: str, n: int, seed: int = 0, tier: str = "C") -> list[Episode]:
    """`n` episodes of `split`; episode i depends only on (split, tier, seed, i), not on n."""
    return [generate_episode(split, i, seed, tier) for i in range(n)]


def generate_episode(split: str, index: int, seed: int = 0, tier: str = "C") -> Episode:
    """Sample a scene, a goal landmark and a start at a random route length; describe the route.

    `tier` (TIERS) bounds the route: A and B draw from their own random streams and carry the
    tier in the episode id (`val_unseen-A0-00003`); C keeps the plain ids (`val_unseen-0-00003`).
    """
    if split not in SPLIT_SCENES:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLIT_SCENES)}")
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; choose from {', '.join(TIERS)}")
    spec = TIERS[tier]
    stream = [seed, _SPLIT_SALT[split], index] + ([] if tier == "C" else [ord(tier)])
    rng = np.random.default_rng(stream)
    pool = SPLIT_SCENES[split]
    for _ in range(400):
        world = world_for_scene(scene_id(pool[int(rng.integers(len(pool)))]))
        goals = [lm for lm in world.landmarks if lm.kind != "door"]
        goal = goals[int(rng.integers(len(goals)))]
        start = _sample_start(rng, world, goal, spec)
        if start is None:
            continue
        route = world.nav.route(start, goal.approach)
        if route is None:
            continue
        length = polyline_length(route)
        if not spec.route_length[0] <= length <= spec.route_length[1]:
            continue
        doorways = doorways_crossed(world, route)
        if not spec.doorways[0] <= doorways <= spec.doorways[1]:
            continue
        yaw = round(float(rng.uniform(-math.pi, math.pi)), 4)
        described = describe_route(world, route, yaw, goal, rng)
        gx, gy = goal.approach
        prefix = f"{split}-{seed}" if tier == "C" else f"{split}-{tier}{seed}"
        return Episode(
            episode_id=f"{prefix}-{index:05d}",
            trajectory_id=index,
            scene_id=world.scene_id,
            start_position=(start[0], start[1], 0.0),
            start_rotation=tuple(round(v, 6) for v in yaw_to_quaternion(yaw)),  # type: ignore[arg-type]
            goals=(Goal((gx, gy, 0.0), SUCCESS_RADIUS),),
            reference_path=_xyz(resample(route, 1.0)),
            gt_locations=_xyz(resample(route, 0.25)),
            instruction_text=described.text,
            info={
                "geodesic_distance": round(length, 3),
                "goal_landmark": goal.name,
                "split": split,
                "tier": tier,
                "doorways": doorways,
                "initial_turn_deg": described.initial_turn,
            },
        )
    raise RuntimeError(
        f"could not sample a tier {tier} route for {split} episode {index} (seed {seed})"
    )


def doorways_crossed(world: World, route: list[Point]) -> int:
    """How many times the route (walked in 25 cm samples) passes from one room into another."""
    count, current = 0, None
    for p in resample(route, 0.25):
        room = world.room_at(*p)
        if room is None:
            continue
        if current is not None and room.index != current:
            count += 1
        current = room.index
    return count


def _xyz(points: list[Point]) -> tuple[tuple[float, float, float], ...]:
    return tuple((round(x, 3), round(y, 3), 0.0) for x, y in points)


def _sample_start(
    rng: np.random.Generator, world: World, goal: Landmark, tier: Tier
) -> Point | None:
    """A roomy free cell whose cost-to-go is near a random target, usually in another room."""
    nav = world.nav
    field = nav.distance_field(goal.approach).values
    target = float(rng.uniform(*tier.start_target))
    band = min(2.0, target / 3)
    ok = np.isfinite(field) & (nav.clearance >= 0.5) & (np.abs(field - target) < band)
    ii, jj = np.nonzero(ok)
    if len(ii) == 0:
        return None
    other_room = rng.random() < tier.other_room
    for k in rng.permutation(len(ii))[:40]:
        x, y = nav.centre(int(ii[k]), int(jj[k]))
        room = world.room_at(x, y)
        if room is None or (other_room and room.index == goal.room):
            continue
        return round(x, 3), round(y, 3)
    return None
