"""Seeded procedural indoor worlds: rooms on a grid, doorways, two-coloured walls and landmarks.

A world is a pure function of its scene index, so a scene id in an episode file is all that is
needed to rebuild it. Coordinates are metres in a z-up frame: x east, y north, the world's
south-west outer corner at the origin. Landmark yaw is the direction its front faces (0 = +x).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from nvila_nav.sim.furniture import COLOURS, KINDS, RGB
from nvila_nav.sim.geometry import Rect
from nvila_nav.sim.navgrid import CLEARANCE, NavGrid

WALL_HEIGHT = 2.5
WALL_THICKNESS = 0.12
DOOR_HEIGHT = 2.1
WORLD_VERSION = 1
"""Bump when generation changes, so that old episode files are not silently re-interpreted."""

SCENE_PREFIX = "nvsim/scene_"
_SCENE_RE = re.compile(r"^nvsim/scene_(\d+)$")

WALL_COLOURS: tuple[RGB, ...] = (
    (0.92, 0.88, 0.78),  # cream
    (0.74, 0.82, 0.90),  # pale blue
    (0.76, 0.84, 0.72),  # sage
    (0.95, 0.80, 0.70),  # peach
    (0.82, 0.78, 0.90),  # lavender
    (0.72, 0.90, 0.85),  # mint
    (0.86, 0.76, 0.62),  # sand
    (0.80, 0.80, 0.78),  # light grey
    (0.93, 0.86, 0.60),  # butter
)
EXTERIOR_RGB: RGB = (0.55, 0.55, 0.55)
FLOOR_STYLES = ("wood", "oak", "tiles", "slate", "carpet_blue", "carpet_red")

ROOM_RECIPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bedroom": (("bed",), ("shelf", "plant", "chair", "box")),
    "living room": (("sofa",), ("table", "plant", "shelf", "chair")),
    "office": (("table", "chair"), ("shelf", "plant", "box")),
    "dining room": (("table", "chair"), ("chair", "plant", "shelf")),
    "storage room": (("box", "shelf"), ("box", "plant")),
    "study": (("shelf", "chair"), ("table", "plant", "box")),
    "hallway": ((), ("plant", "box", "shelf")),
}
"""Room type -> (landmark kinds it always has, kinds it may add). Beds make bedrooms readable."""

_APPROACH_GAP = 0.9
"""Distance from a landmark's front to where the robot stands "next to" it."""


@dataclass(frozen=True)
class Room:
    """A room or hallway; `name` is its type as instructions say it ("bedroom", "hallway")."""

    index: int
    name: str
    rect: Rect
    wall_rgb: RGB
    floor: str


@dataclass(frozen=True)
class Doorway:
    """An opening of `width` in a wall; `along_x` when that wall runs along x (crossed along y)."""

    x: float
    y: float
    width: float
    along_x: bool
    rooms: tuple[int, int]


@dataclass(frozen=True)
class Landmark:
    """A nameable object. `footprint` is its collision box; `approach` is where to stop by it."""

    kind: str
    colour: str
    x: float
    y: float
    yaw: float
    footprint: Rect
    room: int
    approach: tuple[float, float]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class WallPiece:
    """A straight wall box; the two long faces take the colours of the rooms they face."""

    along_x: bool
    c: float
    lo: float
    hi: float
    z0: float
    z1: float
    rgb_lo: RGB
    rgb_hi: RGB

    @property
    def rect(self) -> Rect:
        t = WALL_THICKNESS / 2
        if self.along_x:
            return Rect(self.lo, self.c - t, self.hi, self.c + t)
        return Rect(self.c - t, self.lo, self.c + t, self.hi)


@dataclass(frozen=True)
class World:
    """One generated scene. Build it with `world_for_scene` (cached) or `generate_world`."""

    scene_id: str
    index: int
    size: tuple[float, float]
    rooms: tuple[Room, ...]
    doorways: tuple[Doorway, ...]
    walls: tuple[WallPiece, ...]
    landmarks: tuple[Landmark, ...]
    nav: NavGrid = field(repr=False, compare=False)

    def room_at(self, x: float, y: float) -> Room | None:
        """The room whose interior holds (x, y); None inside walls or outside the house."""
        t = WALL_THICKNESS / 2
        for room in self.rooms:
            if room.rect.grown(-t).contains(x, y):
                return room
        return None

    def landmark(self, name: str) -> Landmark:
        for lm in self.landmarks:
            if lm.name == name:
                return lm
        raise KeyError(f"{self.scene_id} has no landmark {name!r}")

    def unique_room_names(self) -> set[str]:
        """Room types that occur once, so an instruction may name them without ambiguity."""
        names = [r.name for r in self.rooms]
        return {n for n in names if names.count(n) == 1}


def scene_id(index: int) -> str:
    return f"{SCENE_PREFIX}{index:04d}"


def scene_index(scene: str) -> int:
    """Index of an embedded-simulator scene id; ValueError for other datasets' scenes."""
    match = _SCENE_RE.match(scene)
    if match is None:
        raise ValueError(
            f"{scene!r} is not an embedded-simulator scene (expected {SCENE_PREFIX}NNNN); "
            "Matterport scenes need Habitat or Isaac Sim"
        )
    return int(match.group(1))


@functools.lru_cache(maxsize=32)
def world_for_scene(scene: str) -> World:
    """Cached world of a scene id; generation is deterministic, so caching is safe."""
    return generate_world(scene_index(scene))


def generate_world(index: int) -> World:
    """Build scene `index`: layout, doorways, walls, furniture and the navigation grid."""
    rng = np.random.default_rng([WORLD_VERSION, 7919, index])
    spaces = _layout(rng)
    doorways = _doorways(rng, spaces)
    rooms = _name_rooms(rng, spaces)
    size = (max(r.rect.x1 for r in rooms), max(r.rect.y1 for r in rooms))
    walls = _walls(rooms, doorways)
    landmarks = _door_frames(rng, doorways) + _furnish(rng, rooms, doorways)
    nav = NavGrid.build(
        size,
        walls=[w.rect for w in walls if w.z0 == 0.0],
        obstacles=[lm.footprint for lm in landmarks if lm.kind != "door"],
    )
    return World(
        scene_id=scene_id(index),
        index=index,
        size=size,
        rooms=tuple(rooms),
        doorways=tuple(doorways),
        walls=tuple(walls),
        landmarks=tuple(landmarks),
        nav=nav,
    )


def _layout(rng: np.random.Generator) -> list[tuple[str, Rect]]:
    """Bands of rooms stacked along y, optionally with a full-width hallway between them."""
    ncols = int(rng.integers(2, 5))
    widths = np.round(rng.uniform(3.6, 5.6, ncols), 1)
    xs = np.round(np.concatenate([[0.0], np.cumsum(widths)]), 3)
    two_bands = bool(rng.random() < 0.65)
    if two_bands:
        bands = ["rooms", "hallway", "rooms"] if rng.random() < 0.75 else ["rooms", "rooms"]
    elif ncols == 2 or rng.random() < 0.6:
        bands = ["rooms", "hallway"] if rng.random() < 0.5 else ["hallway", "rooms"]
    else:
        bands = ["rooms"]
    spaces: list[tuple[str, Rect]] = []
    y = 0.0
    for band in bands:
        if band == "hallway":
            h = round(float(rng.uniform(1.7, 2.1)), 1)
            spaces.append(("hallway", Rect(0.0, y, float(xs[-1]), round(y + h, 3))))
        else:
            h = round(float(rng.uniform(3.6, 5.4)), 1)
            cuts = [float(xs[0])]
            for x in xs[1:-1]:
                merge = two_bands and ncols >= 3 and rng.random() < 0.2 and x - cuts[-1] < 5.0
                if not merge:
                    cuts.append(float(x))
            cuts.append(float(xs[-1]))
            spaces += [("room", Rect(a, y, b, round(y + h, 3))) for a, b in pairwise(cuts)]
        y = round(y + h, 3)
    return spaces


def _shared_edge(a: Rect, b: Rect) -> tuple[bool, float, float, float] | None:
    """(along_x, c, lo, hi) of the wall two rectangles share, or None if not adjacent."""
    for along_x, (a_lo, a_hi, a0, a1), (b_lo, b_hi, b0, b1) in (
        (True, (a.y0, a.y1, a.x0, a.x1), (b.y0, b.y1, b.x0, b.x1)),
        (False, (a.x0, a.x1, a.y0, a.y1), (b.x0, b.x1, b.y0, b.y1)),
    ):
        for c_a, c_b in ((a_hi, b_lo), (a_lo, b_hi)):
            if abs(c_a - c_b) < 1e-6:
                lo, hi = max(a0, b0), min(a1, b1)
                if hi - lo > 1e-6:
                    return along_x, c_a, lo, hi
    return None


def _doorways(rng: np.random.Generator, spaces: list[tuple[str, Rect]]) -> list[Doorway]:
    """A random spanning tree of door connections plus a few loops, hallways favoured."""
    edges = []
    for i in range(len(spaces)):
        for j in range(i + 1, len(spaces)):
            shared = _shared_edge(spaces[i][1], spaces[j][1])
            if shared is not None and shared[3] - shared[2] >= 2.2:
                edges.append((i, j, shared))
    order = rng.permutation(len(edges))
    parent = list(range(len(spaces)))

    def root(k: int) -> int:
        while parent[k] != k:
            k = parent[k]
        return k

    chosen = []
    for e in order:
        i, j, shared = edges[e]
        hallway = "hallway" in (spaces[i][0], spaces[j][0])
        if root(i) != root(j):
            parent[root(i)] = root(j)
            chosen.append((i, j, shared))
        elif rng.random() < (0.7 if hallway else 0.25):
            chosen.append((i, j, shared))
    doors = []
    for i, j, (along_x, c, lo, hi) in sorted(chosen):
        width = round(float(rng.uniform(1.0, 1.2)), 2)
        centre = float(rng.uniform(lo + 0.5 + width / 2, hi - 0.5 - width / 2))
        x, y = (centre, c) if along_x else (c, centre)
        doors.append(Doorway(round(x, 3), round(y, 3), width, along_x, (i, j)))
    return doors


def _name_rooms(rng: np.random.Generator, spaces: list[tuple[str, Rect]]) -> list[Room]:
    types = [t for t in ROOM_RECIPES if t != "hallway"]
    order = [types[k] for k in rng.permutation(len(types))]
    colours = [WALL_COLOURS[k] for k in rng.permutation(len(WALL_COLOURS))]
    rooms = []
    n_named = 0
    for index, (kind, rect) in enumerate(spaces):
        if kind == "hallway":
            name = "hallway"
        else:
            name = order[n_named % len(order)]
            n_named += 1
        floor = FLOOR_STYLES[int(rng.integers(len(FLOOR_STYLES)))]
        rooms.append(Room(index, name, rect, colours[index % len(colours)], floor))
    return rooms


def _walls(rooms: list[Room], doorways: list[Doorway]) -> list[WallPiece]:
    """Wall boxes along every room edge, split where rooms change and cut open at doorways.

    Walls along x are stretched by half a thickness at their ends and walls along y shortened by
    the same, so corners are closed exactly once.
    """
    lines: dict[tuple[bool, float], list[tuple[float, float]]] = {}
    for room in rooms:
        r = room.rect
        for along_x, c, lo, hi in (
            (True, r.y0, r.x0, r.x1),
            (True, r.y1, r.x0, r.x1),
            (False, r.x0, r.y0, r.y1),
            (False, r.x1, r.y0, r.y1),
        ):
            lines.setdefault((along_x, round(c, 6)), []).append((lo, hi))
    t = WALL_THICKNESS / 2
    pieces = []
    for (along_x, c), spans in sorted(lines.items()):
        cuts = sorted({v for span in spans for v in span})
        gaps = [
            (d.x if along_x else d.y, d.width)
            for d in doorways
            if d.along_x == along_x and abs((d.y if along_x else d.x) - c) < 1e-6
        ]
        for lo, hi in pairwise(cuts):
            mid = (lo + hi) / 2
            if not any(a <= mid <= b for a, b in spans):
                continue
            side_lo = _room_colour(rooms, along_x, c - t * 2, mid)
            side_hi = _room_colour(rooms, along_x, c + t * 2, mid)
            ends = [(lo, False)]
            for centre, width in sorted(gaps):
                if lo < centre < hi:
                    ends += [(centre - width / 2, True), (centre + width / 2, True)]
                    pieces.append(
                        WallPiece(
                            along_x, c, centre - width / 2, centre + width / 2,
                            DOOR_HEIGHT, WALL_HEIGHT, side_lo, side_hi,
                        )
                    )  # fmt: skip
            ends.append((hi, False))
            for (a, a_door), (b, b_door) in zip(ends[::2], ends[1::2], strict=True):
                stretch = t if along_x else -t
                a2 = a if a_door else a - stretch
                b2 = b if b_door else b + stretch
                if b2 - a2 > 1e-3:
                    pieces.append(WallPiece(along_x, c, a2, b2, 0.0, WALL_HEIGHT, side_lo, side_hi))
    return pieces


def _room_colour(rooms: list[Room], along_x: bool, c: float, s: float) -> RGB:
    x, y = (s, c) if along_x else (c, s)
    for room in rooms:
        if room.rect.contains(x, y):
            return room.wall_rgb
    return EXTERIOR_RGB


def _pick_colour(rng: np.random.Generator, kind: str, used: set[tuple[str, str]]) -> str | None:
    free = [c for c in COLOURS if (kind, c) not in used]
    return free[int(rng.integers(len(free)))] if free else None


def _door_frames(rng: np.random.Generator, doorways: list[Doorway]) -> list[Landmark]:
    """Coloured frames around some doorways: "turn left at the blue door"."""
    frames = []
    used: set[tuple[str, str]] = set()
    for d in doorways:
        if rng.random() >= 0.6:
            continue
        colour = _pick_colour(rng, "door", used)
        if colour is None:
            continue
        used.add(("door", colour))
        half_along, half_across = d.width / 2 + 0.08, WALL_THICKNESS / 2 + 0.03
        hx, hy = (half_along, half_across) if d.along_x else (half_across, half_along)
        yaw = math.pi / 2 if d.along_x else 0.0
        footprint = Rect(d.x - hx, d.y - hy, d.x + hx, d.y + hy)
        frames.append(Landmark("door", colour, d.x, d.y, yaw, footprint, d.rooms[0], (d.x, d.y)))
    return frames


def _furnish(
    rng: np.random.Generator, rooms: list[Room], doorways: list[Doorway]
) -> list[Landmark]:
    """Furniture per room type, against walls, never blocking a doorway or another's approach."""
    used: set[tuple[str, str]] = set()
    placed: list[Landmark] = []
    for room in rooms:
        required, optional = ROOM_RECIPES[room.name]
        extra = int(rng.integers(1, 3))
        picks = list(required) + [optional[int(k)] for k in rng.permutation(len(optional))[:extra]]
        doors = [d for d in doorways if room.index in d.rooms]
        in_room: list[Landmark] = []
        for kind in picks:
            colour = _pick_colour(rng, kind, used)
            if colour is None:
                continue
            lm = _place(rng, kind, colour, room, doors, in_room)
            if lm is not None:
                used.add((kind, colour))
                in_room.append(lm)
        placed += in_room
    return placed


def _place(
    rng: np.random.Generator,
    kind: str,
    colour: str,
    room: Room,
    doors: list[Doorway],
    others: list[Landmark],
) -> Landmark | None:
    spec = KINDS[kind]
    inner = room.rect.grown(-(WALL_THICKNESS / 2 + 0.03))
    keep_out = [_door_zone(d) for d in doors]
    for _ in range(40):
        side = int(rng.integers(4))
        hd, hw = spec.half_depth, spec.half_width
        if side < 2:  # against the south (facing north) or north (facing south) wall
            hx, hy = hw, hd
            if inner.width < 2 * hx + 0.2:
                continue
            x = float(rng.uniform(inner.x0 + hx + 0.1, inner.x1 - hx - 0.1))
            y = inner.y0 + hy if side == 0 else inner.y1 - hy
            yaw = math.pi / 2 if side == 0 else -math.pi / 2
        else:  # against the west (facing east) or east (facing west) wall
            hx, hy = hd, hw
            if inner.depth < 2 * hy + 0.2:
                continue
            y = float(rng.uniform(inner.y0 + hy + 0.1, inner.y1 - hy - 0.1))
            x = inner.x0 + hx if side == 2 else inner.x1 - hx
            yaw = 0.0 if side == 2 else math.pi
        x, y = round(x, 3), round(y, 3)
        footprint = Rect(x - hx, y - hy, x + hx, y + hy)
        gap = hd + _APPROACH_GAP
        approach = (round(x + gap * math.cos(yaw), 3), round(y + gap * math.sin(yaw), 3))
        if any(footprint.overlaps(z) for z in keep_out):
            continue
        if any(footprint.grown(0.3).overlaps(o.footprint) for o in others):
            continue
        if not inner.grown(-0.45).contains(*approach):
            continue
        if any(o.footprint.grown(0.45).contains(*approach) for o in others):
            continue
        candidate = Landmark(kind, colour, x, y, yaw, footprint, room.index, approach)
        if _room_connected(room, doors, [*others, candidate]):
            return candidate
    return None


def _door_zone(d: Doorway) -> Rect:
    """Space kept clear on both sides of a doorway so it can always be walked through."""
    along, across = d.width / 2 + 0.35, 1.3
    hx, hy = (along, across) if d.along_x else (across, along)
    return Rect(d.x - hx, d.y - hy, d.x + hx, d.y + hy)


def _door_entry(d: Doorway, room: Room) -> tuple[float, float]:
    cx, cy = room.rect.centre
    if d.along_x:
        return d.x, d.y + (0.65 if cy > d.y else -0.65)
    return d.x + (0.65 if cx > d.x else -0.65), d.y


def _room_connected(room: Room, doors: list[Doorway], landmarks: list[Landmark]) -> bool:
    """Every doorway and every landmark's approach point are mutually reachable in the room.

    Checked on a 10 cm grid with the robot's clearance (plus 5 cm, as the global planner measures
    clearance between cell centres).
    """
    res, r = 0.1, CLEARANCE + 0.05
    rect = room.rect
    xs = np.arange(rect.x0 + res / 2, rect.x1, res)
    ys = np.arange(rect.y0 + res / 2, rect.y1, res)
    gx, gy = np.meshgrid(xs, ys)
    inner = rect.grown(-(WALL_THICKNESS / 2 + r))
    free = (gx >= inner.x0) & (gx <= inner.x1) & (gy >= inner.y0) & (gy <= inner.y1)
    for lm in landmarks:
        f = lm.footprint.grown(r)
        free &= ~((gx >= f.x0) & (gx <= f.x1) & (gy >= f.y0) & (gy <= f.y1))
    targets = [_door_entry(d, room) for d in doors] + [lm.approach for lm in landmarks]
    cells = []
    for x, y in targets:
        i = min(int((y - rect.y0) / res), len(ys) - 1)
        j = min(int((x - rect.x0) / res), len(xs) - 1)
        if not free[i, j]:
            return False
        cells.append((i, j))
    reached = np.zeros_like(free)
    reached[cells[0]] = True
    while True:
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= free
        if np.array_equal(grown, reached):
            break
        reached = grown
    return all(reached[c] for c in cells)
