"""Route descriptions in the style of R2R: turns, doorways and landmarks actually seen en route.

The route is walked in 25 cm samples. A landmark may be named only if it was in the camera's
field of view (±38° of the walking direction, within 5 m, no wall in between) at some sample.
Events (initial turn, doorways, turns, landmarks passed) become clauses, each drawn from a small
paraphrase grammar, and clauses are joined into one to three sentences with varied connectives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nvila_nav.sim.furniture import KINDS
from nvila_nav.sim.geometry import Point, resample, wrap_angle
from nvila_nav.sim.world import Landmark, World

_VIEW_HALF_ANGLE = math.radians(38.0)
_VIEW_RANGE = 5.0
_NEAR = 1.6
"""A landmark this close to the path (m, to its footprint) can be passed or anchor a turn."""


@dataclass
class _Event:
    s: float
    kind: str  # "turn" | "door" | "pass"
    angle: float = 0.0
    landmark: Landmark | None = None
    rooms: tuple[int, int] = (-1, -1)
    side: str = ""
    before_turn: _Event | None = None
    then_turn: _Event | None = None


INITIAL_TURN_MIN = math.radians(15.0)
"""An initial turn at least this large (one lattice step of the robot) is always stated, with its
side: the side of a turn the camera cannot show must come from the instruction."""


@dataclass(frozen=True)
class RouteDescription:
    """The instruction and the initial turn it states (radians, + left; 0 when none is stated).

    The expert turns to the side stated here, so its first actions follow from the text."""

    text: str
    initial_turn: float


def describe_route(
    world: World, route: list[Point], start_yaw: float, goal: Landmark, rng: np.random.Generator
) -> RouteDescription:
    """One natural-language instruction for walking `route` from heading `start_yaw` to `goal`."""
    samples = resample(route, 0.25)
    headings = _headings(samples)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(np.asarray(samples), axis=0).T))])
    seen = _seen_landmarks(world, samples, headings, goal)
    events = _turn_events(route) + _door_events(world, samples, arc)
    events.sort(key=lambda e: e.s)
    events = _merge_door_turns(events)
    first_turn = wrap_angle(headings[0] - start_yaw)
    # A corner right after the start is part of the initial turn, not a second one.
    if events and events[0].kind == "turn" and events[0].s < 1.5:
        first_turn = wrap_angle(first_turn + events.pop(0).angle)
    elif events and events[0].before_turn is not None and events[0].before_turn.s < 1.5:
        first_turn = wrap_angle(first_turn + events[0].before_turn.angle)
        events[0].before_turn = None
    _anchor_turns(events, seen, samples, arc)
    used = {e.landmark.name for e in events if e.landmark is not None}
    events += _pass_events(rng, seen, events, used, arc)
    events.sort(key=lambda e: e.s)

    g = _Grammar(world, rng)
    clauses = []
    initial_turn = 0.0
    if abs(first_turn) >= INITIAL_TURN_MIN:
        # Around 180° either side is about as short; the text picks one (the angle then runs
        # past ±180°) and the expert turns that way.
        if abs(first_turn) >= math.radians(170) and rng.random() < 0.5:
            first_turn -= math.copysign(2 * math.pi, first_turn)
        initial_turn = first_turn
        clauses.append(g.initial_turn(first_turn))
    start_room = world.room_at(*samples[0])
    first_s = events[0].s if events else arc[-1]
    if first_s > 3.0:
        clauses.append(g.straight(start_room.name if start_room else ""))
    for i, event in enumerate(events):
        clauses.append(g.clause(event, first=i == 0))
        nxt = events[i + 1].s if i + 1 < len(events) else arc[-1]
        if nxt - event.s > 5.0:
            ahead = min(int(np.searchsorted(arc, event.s + 1.0)), len(samples) - 1)
            room = world.room_at(*samples[ahead])
            clauses.append(g.straight(room.name if room else ""))
    goal_room = world.rooms[goal.room]
    same_room = start_room is not None and start_room.index == goal_room.index
    clauses.append(g.goal(goal, "" if same_room else goal_room.name, " ".join(clauses)))
    return RouteDescription(g.join(clauses), round(math.degrees(initial_turn), 1))


def _headings(samples: list[Point]) -> list[float]:
    out = []
    for k in range(len(samples)):
        a, b = (
            (samples[k], samples[k + 1]) if k + 1 < len(samples) else (samples[k - 1], samples[k])
        )
        out.append(math.atan2(b[1] - a[1], b[0] - a[0]))
    return out


def _seen_landmarks(
    world: World, samples: list[Point], headings: list[float], goal: Landmark
) -> dict[str, tuple[Landmark, int, float, str]]:
    """name -> (landmark, closest sample index, distance, side) for landmarks in view."""
    seen = {}
    pts = np.asarray(samples)
    for lm in world.landmarks:
        if lm.name == goal.name:
            continue
        d = np.array([lm.footprint.distance_to(x, y) for x, y in samples])
        bearing = np.arctan2(lm.y - pts[:, 1], lm.x - pts[:, 0])
        off = np.abs((bearing - np.asarray(headings) + math.pi) % (2 * math.pi) - math.pi)
        candidates = np.nonzero((d <= _VIEW_RANGE) & (off <= _VIEW_HALF_ANGLE))[0]
        if any(world.nav.visible(samples[k], (lm.x, lm.y)) for k in candidates):
            k = int(np.argmin(d))
            cross = math.cos(headings[k]) * (lm.y - pts[k, 1]) - math.sin(headings[k]) * (
                lm.x - pts[k, 0]
            )
            seen[lm.name] = (lm, k, float(d[k]), "left" if cross > 0 else "right")
    return seen


def _turn_events(route: list[Point]) -> list[_Event]:
    """Heading changes at route corners; corners less than 1 m apart merge into one turn."""
    events: list[_Event] = []
    s = 0.0
    last_s = -10.0
    for k in range(1, len(route) - 1):
        s += math.dist(route[k - 1], route[k])
        h_in = math.atan2(route[k][1] - route[k - 1][1], route[k][0] - route[k - 1][0])
        h_out = math.atan2(route[k + 1][1] - route[k][1], route[k + 1][0] - route[k][0])
        delta = wrap_angle(h_out - h_in)
        if events and s - last_s < 1.0:
            events[-1].angle += delta
        else:
            events.append(_Event(s, "turn", angle=delta))
        last_s = s
    return [e for e in events if abs(e.angle) >= math.radians(25)]


def _door_events(world: World, samples: list[Point], arc: np.ndarray) -> list[_Event]:
    events = []
    current = world.room_at(*samples[0])
    for k, p in enumerate(samples[1:], start=1):
        room = world.room_at(*p)
        if room is None or current is None or room.index == current.index:
            current = room or current
            continue
        door = min(world.doorways, key=lambda d: math.hypot(d.x - p[0], d.y - p[1]))
        frame = next(
            (
                lm
                for lm in world.landmarks
                if lm.kind == "door" and (lm.x, lm.y) == (door.x, door.y)
            ),
            None,
        )
        events.append(
            _Event(float(arc[k]), "door", landmark=frame, rooms=(current.index, room.index))
        )
        current = room
    return events


def _merge_door_turns(events: list[_Event]) -> list[_Event]:
    """Turns just before or just after a doorway become part of the doorway clause."""
    out: list[_Event] = []
    for e in events:
        prev = out[-1] if out else None
        if prev is not None and e.s - prev.s < 1.5:
            if e.kind == "turn" and prev.kind == "door" and prev.then_turn is None:
                prev.then_turn = e
                continue
            if e.kind == "door" and prev.kind == "turn":
                e.before_turn = out.pop()
        out.append(e)
    return out


def _anchor_turns(
    events: list[_Event],
    seen: dict[str, tuple[Landmark, int, float, str]],
    samples: list[Point],
    arc: np.ndarray,
) -> None:
    """Attach the nearest seen landmark to each turn that has one close by."""
    taken: set[str] = set()
    for e in events:
        if e.kind != "turn":
            continue
        k = int(np.searchsorted(arc, e.s))
        p = samples[min(k, len(samples) - 1)]
        best = None
        for name, (lm, *_) in seen.items():
            d = lm.footprint.distance_to(*p)
            if name not in taken and d <= _NEAR and (best is None or d < best[0]):
                best = (d, lm)
        if best is not None:
            e.landmark = best[1]
            taken.add(best[1].name)


def _pass_events(
    rng: np.random.Generator,
    seen: dict[str, tuple[Landmark, int, float, str]],
    events: list[_Event],
    used: set[str],
    arc: np.ndarray,
) -> list[_Event]:
    """Up to two landmarks walked past, away from other events so clauses stay in order."""
    out = []
    for name, (lm, k, d, side) in seen.items():
        s = float(arc[k])
        if name in used or lm.kind == "door" or d > _NEAR:
            continue
        if any(abs(e.s - s) < 1.0 for e in events):
            continue
        out.append(_Event(s, "pass", landmark=lm, side=side))
    picks = sorted(rng.permutation(len(out))[: int(rng.integers(1, 3))]) if out else []
    return [out[int(i)] for i in picks]


class _Grammar:
    """Paraphrase templates; every choice goes through the episode's rng (deterministic)."""

    def __init__(self, world: World, rng: np.random.Generator) -> None:
        self.world = world
        self.rng = rng
        self.unique_rooms = world.unique_room_names()

    def pick(self, options: list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def lm(self, landmark: Landmark) -> str:
        noun = self.pick(list(KINDS[landmark.kind].nouns))
        return f"the {landmark.colour} {noun}"

    def room(self, index: int) -> str:
        """ "the <type>" if that room type is unique in the scene, else "" (ambiguous)."""
        name = self.world.rooms[index].name
        return f"the {name}" if name in self.unique_rooms else ""

    def initial_turn(self, angle: float) -> str:
        """Always with its side: "turn around" alone would leave the model to guess it."""
        d = "left" if angle > 0 else "right"
        if abs(angle) >= math.radians(135):
            return self.pick(
                [
                    f"turn around to your {d}",
                    f"turn all the way around to the {d}",
                    f"turn {d} all the way around",
                    f"turn back over your {d} shoulder",
                ]
            )
        if abs(angle) < math.radians(40):
            return self.pick([f"turn slightly {d}", f"turn a little to the {d}", f"bear {d}"])
        return self.pick([f"turn {d}", f"turn to your {d}", f"face {d}", f"turn to the {d}"])

    def straight(self, room_name: str) -> str:
        options = [
            "walk straight",
            "go straight ahead",
            "walk forward",
            "continue straight",
            "head forward",
        ]
        if room_name == "hallway":
            options += ["walk down the hallway", "continue along the hallway"]
        return self.pick(options)

    def turn(self, angle: float, landmark: Landmark | None) -> str:
        d = "left" if angle > 0 else "right"
        if abs(angle) >= math.radians(150):
            base = self.pick([f"turn around to your {d}", f"make a u-turn to the {d}"])
        elif abs(angle) < math.radians(55):
            base = self.pick([f"bear {d}", f"veer {d}", f"turn slightly {d}", f"keep {d}"])
        else:
            base = self.pick(
                [f"turn {d}", f"take a {d}", f"make a {d} turn", f"go {d}", f"hang a {d}"]
            )
        if landmark is None:
            return base
        name = self.lm(landmark)
        return self.pick(
            [
                f"{base} at {name}",
                f"at {name}, {base}",
                f"when you reach {name}, {base}",
                f"walk to {name} and {base}",
                f"{base} when you get to {name}",
            ]
        )

    def door(self, event: _Event, first: bool) -> str:
        src, dst = (self.room(i) for i in event.rooms)
        into = f" into {dst}" if dst and self.rng.random() < 0.7 else ""
        if event.landmark is not None:
            name = self.lm(event.landmark)
            text = self.pick([f"go through {name}", f"walk through {name}", f"pass through {name}"])
            text += into
        else:
            options = [f"go through the doorway{into}", f"walk through the door{into}"]
            if dst:
                options += [f"enter {dst}", f"walk into {dst}", f"head into {dst}"]
            if src and first:
                options += [f"exit {src}", f"leave {src}", f"walk out of {src}"]
            text = self.pick(options)
        if event.before_turn is not None:
            text = self.turn(event.before_turn.angle, None) + " and " + text
        if event.then_turn is not None:
            text += " and " + self.turn(event.then_turn.angle, None)
        return text

    def passing(self, landmark: Landmark, side: str) -> str:
        name = self.lm(landmark)
        return self.pick(
            [
                f"pass {name} on your {side}",
                f"keep {name} on your {side}",
                f"walk past {name}",
                f"go past {name}",
                f"continue past {name}",
                f"walk by {name}",
                f"pass {name}",
            ]
        )

    def clause(self, event: _Event, first: bool) -> str:
        if event.kind == "turn":
            return self.turn(event.angle, event.landmark)
        if event.kind == "door":
            return self.door(event, first)
        return self.passing(event.landmark, event.side)  # type: ignore[arg-type]

    def goal(self, landmark: Landmark, room_name: str, said: str) -> str:
        """Stop clause; names the goal's room half the time, unless `said` already did."""
        name = self.lm(landmark)
        where = ""
        if room_name in self.unique_rooms and f"the {room_name}" not in said:
            where = f" in the {room_name}" if self.rng.random() < 0.5 else ""
        return self.pick(
            [
                f"stop next to {name}{where}",
                f"stop in front of {name}{where}",
                f"wait by {name}{where}",
                f"stop when you reach {name}{where}",
                f"stop beside {name}{where}",
                f"stand next to {name}{where}",
                f"your goal is {name}{where}",
                f"stop near {name}{where}",
            ]
        )

    def join(self, clauses: list[str]) -> str:
        """Group clauses into sentences of one to three, with varied connectives."""
        sentences = []
        i = 0
        while i < len(clauses):
            n = min(int(self.rng.integers(1, 4)), len(clauses) - i)
            group = clauses[i : i + n]
            body = group[0]
            if n > 1:
                glue = self.pick([", and ", ", then ", " and then ", ", and then "])
                body = ", ".join(group[:-1]) + glue + group[-1]
            if sentences and self.rng.random() < 0.4:
                body = self.pick(["then ", "next, ", "after that, ", "from there, "]) + body
            sentences.append(body[0].upper() + body[1:] + ".")
            i += n
        return " ".join(sentences)
