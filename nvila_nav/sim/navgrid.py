"""Navigation grid: occupancy, clearance, shortest paths and line of sight on a 10 cm raster.

The expert and the episode generator plan here rather than in MuJoCo: a cost field from the goal
(Dijkstra, 8-connected) is followed downhill and then string-pulled into a few straight legs.
Cells are free when their centre is at least CLEARANCE from every obstacle cell centre, and the
step cost grows near obstacles so routes keep to the middle of doorways and hallways.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from nvila_nav.sim.geometry import Point, Rect

ROBOT_RADIUS = 0.25
CLEARANCE = ROBOT_RADIUS + 0.1
"""Planner margin over the robot radius; covers rasterisation error (≤ res·√2/2) and aiming error."""
RESOLUTION = 0.1
_COMFORT = 0.8
"""Clearance (m) beyond which a cell costs no more than its length."""
CORRIDOR_WIDTH = 1.0
"""Half-width (m) of the band around a reference route that the expert keeps to."""
OFF_CORRIDOR_COST = 4.0
"""Cost factor of cells outside the corridor: a detour must be 4x shorter to leave the route."""
OFF_APPROACH_COST = 10.0
"""Cost factor of cells near the goal but outside its approach cone (see `Approach`)."""
_MAX_RANGE = 1.2
_PAD = 0.5


@dataclass(frozen=True)
class Approach:
    """The way in to a goal: within `radius` (m) of it, only cells inside the cone of
    `half_angle` (rad) around `direction` (a unit vector from the goal outwards) are cheap, so
    the last `radius` metres of every route run along the cone towards the goal."""

    direction: Point
    radius: float = 1.5
    half_angle: float = math.radians(40)


class NavGrid:
    """Occupancy raster of one world; row i is y, column j is x, cell centres at half steps."""

    def __init__(self, origin: Point, res: float, occupied: np.ndarray, walls: np.ndarray) -> None:
        self.origin = origin
        self.res = res
        self.occupied = occupied
        self.walls = walls
        self.clearance = _clearance(occupied, res, _MAX_RANGE)
        self.free = self.clearance >= CLEARANCE
        self._cost = 1.0 + 1.5 * np.clip((_COMFORT - self.clearance) / _COMFORT, 0.0, None)
        self._fields: OrderedDict[tuple, CostField] = OrderedDict()

    @classmethod
    def build(
        cls,
        size: tuple[float, float],
        walls: Iterable[Rect],
        obstacles: Iterable[Rect],
        res: float = RESOLUTION,
    ) -> NavGrid:
        """Rasterise walls and furniture footprints; everything outside [0, X]×[0, Y] is blocked."""
        ox, oy = -_PAD, -_PAD
        nx = math.ceil((size[0] + 2 * _PAD) / res)
        ny = math.ceil((size[1] + 2 * _PAD) / res)
        xs = ox + (np.arange(nx) + 0.5) * res
        ys = oy + (np.arange(ny) + 0.5) * res
        outside = (
            (xs[None, :] < 0)
            | (xs[None, :] > size[0])
            | (ys[:, None] < 0)
            | (ys[:, None] > size[1])
        )
        wall_mask = np.zeros((ny, nx), dtype=bool)
        for r in walls:
            _fill(wall_mask, r, xs, ys, res)
        occupied = wall_mask | outside
        for r in obstacles:
            _fill(occupied, r, xs, ys, res)
        return cls((ox, oy), res, occupied, wall_mask)

    def cell(self, x: float, y: float) -> tuple[int, int]:
        h, w = self.occupied.shape
        i = min(max(int((y - self.origin[1]) / self.res), 0), h - 1)
        j = min(max(int((x - self.origin[0]) / self.res), 0), w - 1)
        return i, j

    def centre(self, i: int, j: int) -> Point:
        return (self.origin[0] + (j + 0.5) * self.res, self.origin[1] + (i + 0.5) * self.res)

    def clearance_at(self, x: float, y: float) -> float:
        return float(self.clearance[self.cell(x, y)])

    def nearest_free(self, x: float, y: float) -> tuple[int, int]:
        """The free cell closest to (x, y), for starts and goals that sit just off the free space."""
        i, j = self.cell(x, y)
        if self.free[i, j]:
            return i, j
        ii, jj = np.nonzero(self.free)
        k = int(np.argmin((ii - i) ** 2 + (jj - j) ** 2))
        return int(ii[k]), int(jj[k])

    def segment_clear(self, p: Point, q: Point, min_clearance: float = CLEARANCE - 0.02) -> bool:
        """True when every point of p→q keeps `min_clearance` from obstacles."""
        i, j = self._samples(p, q, math.dist(p, q))
        return bool(np.all(self.clearance[i, j] >= min_clearance))

    def visible(self, p: Point, q: Point, skip_end: float = 0.35) -> bool:
        """Walls-only line of sight from p to within `skip_end` of q (furniture does not block)."""
        length = math.dist(p, q) - skip_end
        if length <= 0:
            return True
        i, j = self._samples(p, q, length)
        return not bool(np.any(self.walls[i, j]))

    def _samples(self, p: Point, q: Point, length: float) -> tuple[np.ndarray, np.ndarray]:
        d = math.dist(p, q)
        n = max(2, math.ceil(length / (self.res / 2)) + 1)
        t = np.linspace(0.0, length / d if d > 0 else 0.0, n)
        x = p[0] + (q[0] - p[0]) * t
        y = p[1] + (q[1] - p[1]) * t
        h, w = self.occupied.shape
        i = np.clip(((y - self.origin[1]) / self.res).astype(int), 0, h - 1)
        j = np.clip(((x - self.origin[0]) / self.res).astype(int), 0, w - 1)
        return i, j

    def distance_field(
        self,
        goal: Point,
        corridor: Sequence[Point] | None = None,
        approach: Approach | None = None,
    ) -> CostField:
        """Cost-to-go (m, weighted near obstacles) from every reachable cell to `goal`.

        With a `corridor` polyline, cells farther than CORRIDOR_WIDTH from it cost
        OFF_CORRIDOR_COST times more, so following the field retraces that route instead of any
        equally short alternative, and from anywhere off it (a robot that strayed) the field
        still leads back towards the route and the goal instead of being undefined.
        With an `approach`, cells near the goal outside its cone cost OFF_APPROACH_COST times
        more: routes come in along the cone (the field stays finite everywhere).
        Fields are cached per (goal cell, corridor, approach).
        """
        key = (self.nearest_free(*goal), tuple(corridor) if corridor else (), approach)
        cached = self._fields.get(key)
        if cached is not None:
            self._fields.move_to_end(key)
            return cached
        cost = self._cost * self.res
        if corridor:
            allowed = self.clearance >= ROBOT_RADIUS + 0.03
            outside = self._distance_to_polyline(corridor) > CORRIDOR_WIDTH
            cost = np.where(outside, cost * OFF_CORRIDOR_COST, cost)
        else:
            allowed = self.free
        if approach is not None:
            cost = np.where(self._off_approach(goal, approach), cost * OFF_APPROACH_COST, cost)
        field = CostField(self, _dijkstra(allowed, cost, key[0]))
        self._fields[key] = field
        if len(self._fields) > 16:
            self._fields.popitem(last=False)
        return field

    def _off_approach(self, goal: Point, approach: Approach) -> np.ndarray:
        """Cells within the approach radius of `goal` but outside its cone."""
        gx, gy = self._cell_centres()
        dx, dy = gx - goal[0], gy - goal[1]
        dist = np.hypot(dx, dy)
        along = (dx * approach.direction[0] + dy * approach.direction[1]) / np.maximum(dist, 1e-9)
        inside = along >= math.cos(approach.half_angle)
        return (dist <= approach.radius) & ~inside & (dist > self.res)

    def geodesic(self, goal: Point) -> CostField:
        """Shortest walkable distance (m) to `goal` from every cell the robot can stand on.

        Unweighted, unlike `distance_field`: this is the geodesic that VLN-CE uses for NE and
        success, e.g. `metrics.episode_metrics(..., distance_fn=lambda p: field.at(*p[:2]))`.
        """
        key = (self.nearest_free(*goal), "geodesic")
        if key not in self._fields:
            allowed = self.clearance >= ROBOT_RADIUS
            cost = np.full(allowed.shape, self.res)
            self._fields[key] = CostField(self, _dijkstra(allowed, cost, key[0]))
            if len(self._fields) > 16:
                self._fields.popitem(last=False)
        return self._fields[key]

    def _cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.occupied.shape
        x = self.origin[0] + (np.arange(w) + 0.5) * self.res
        y = self.origin[1] + (np.arange(h) + 0.5) * self.res
        return np.meshgrid(x, y)

    def _distance_to_polyline(self, points: Sequence[Point]) -> np.ndarray:
        gx, gy = self._cell_centres()
        best = np.full(gx.shape, np.inf)
        for (ax, ay), (bx, by) in itertools.pairwise(points):
            dx, dy = bx - ax, by - ay
            length2 = dx * dx + dy * dy
            t = np.clip(((gx - ax) * dx + (gy - ay) * dy) / length2, 0, 1) if length2 else 0.0
            np.minimum(best, np.hypot(gx - ax - t * dx, gy - ay - t * dy), out=best)
        return best

    def route(self, start: Point, goal: Point) -> list[Point] | None:
        """Shortest collision-free polyline start → goal (string-pulled), None if unreachable."""
        field = self.distance_field(goal).values
        cell = self.nearest_free(*start)
        if not math.isfinite(field[cell]):
            return None
        cells = [cell]
        while field[cell] > 0:
            i, j = cell
            best = min(
                ((i + di, j + dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if di or dj),
                key=lambda c: field[c],
            )
            if field[best] >= field[cell]:
                return None
            cell = best
            cells.append(cell)
        points = [start, *(self.centre(*c) for c in cells[1:-1]), goal]
        return self.pull_string(points)

    def pull_string(self, points: list[Point]) -> list[Point]:
        """Drop every point that a straight, clear segment can skip (greedy, in order)."""
        out = [points[0]]
        i = 0
        while i < len(points) - 1:
            j = i + 1
            while j + 1 < len(points) and self.segment_clear(points[i], points[j + 1]):
                j += 1
            out.append(points[j])
            i = j
        return out


class CostField:
    """Cost-to-go values on a grid (inf where unreachable) with lookup at any point."""

    def __init__(self, grid: NavGrid, values: np.ndarray) -> None:
        self.grid = grid
        self.values = values
        self._reachable = np.nonzero(np.isfinite(values))

    def at(self, x: float, y: float) -> float:
        """Value at (x, y); off the reachable cells, the nearest one's value plus the gap."""
        i, j = self.grid.cell(x, y)
        if math.isfinite(self.values[i, j]):
            return float(self.values[i, j])
        ii, jj = self._reachable
        k = int(np.argmin((ii - i) ** 2 + (jj - j) ** 2))
        near = (int(ii[k]), int(jj[k]))
        return float(self.values[near]) + math.dist((x, y), self.grid.centre(*near))


def _dijkstra(allowed: np.ndarray, cost: np.ndarray, source: tuple[int, int]) -> np.ndarray:
    """8-connected Dijkstra over `allowed` cells; an edge costs its length × mean cell cost."""
    h, w = allowed.shape
    free = allowed.ravel().tolist()
    weight = cost.ravel().tolist()
    dist = [math.inf] * (h * w)
    start = source[0] * w + source[1]
    dist[start] = 0.0
    heap = [(0.0, start)]
    s2 = math.sqrt(2.0) / 2
    steps = (
        (-w - 1, s2),
        (-w, 0.5),
        (-w + 1, s2),
        (-1, 0.5),
        (1, 0.5),
        (w - 1, s2),
        (w, 0.5),
        (w + 1, s2),
    )
    while heap:
        d, c = heapq.heappop(heap)
        if d > dist[c]:
            continue
        wc = weight[c]
        for off, length in steps:
            n = c + off
            if free[n]:
                nd = d + length * (wc + weight[n])
                if nd < dist[n]:
                    dist[n] = nd
                    heapq.heappush(heap, (nd, n))
    return np.asarray(dist).reshape(h, w)


def _fill(mask: np.ndarray, r: Rect, xs: np.ndarray, ys: np.ndarray, res: float) -> None:
    """Mark cells whose centre is within half a cell of the rectangle (conservative)."""
    cols = (xs >= r.x0 - res / 2) & (xs <= r.x1 + res / 2)
    rows = (ys >= r.y0 - res / 2) & (ys <= r.y1 + res / 2)
    mask[np.ix_(rows, cols)] = True


def _clearance(occupied: np.ndarray, res: float, max_range: float) -> np.ndarray:
    """Distance from each cell centre to the nearest occupied one, capped at `max_range`."""
    k = int(max_range / res)
    h, w = occupied.shape
    padded = np.pad(occupied, k, constant_values=True)
    best = np.where(occupied, 0.0, max_range)
    offsets = sorted(
        (math.hypot(di, dj) * res, di, dj)
        for di in range(-k, k + 1)
        for dj in range(-k, k + 1)
        if 0 < di * di + dj * dj <= k * k
    )
    for d, di, dj in offsets:
        hit = padded[k + di : k + di + h, k + dj : k + dj + w]
        np.minimum(best, np.where(hit, d, max_range), out=best)
    return best
