"""Image-caption pairs from the simulator, for grounding pretraining before navigation training.

A model trained from scratch cannot learn what a "red door" looks like from next-action labels
alone, so NVILA's recipe first trains on image-text pairs. Here every caption is computed from
the world itself, so it is true by construction: the room the robot stands in, how far it can
drive straight ahead, and the landmarks in view with their side and distance. The wording is
fixed (no paraphrases) so that the only thing to learn is the image. Question files on the same
footing ask about one named landmark ("Where is ...?", "Is ... close ahead?") or the landmark
in front ("What is close ahead?"), the parts of the stop decision.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from nvila_core.progress import Progress
from nvila_nav.sim.env import Simulator
from nvila_nav.sim.episodes import SPLIT_SCENES
from nvila_nav.sim.furniture import KINDS
from nvila_nav.sim.geometry import Pose, wrap_angle
from nvila_nav.sim.navgrid import ROBOT_RADIUS
from nvila_nav.sim.robot import CameraConfig
from nvila_nav.sim.sight import landmarks_close_ahead, landmarks_in_view
from nvila_nav.sim.world import Landmark, World, scene_id, world_for_scene

MAX_LANDMARKS = 4
PROMPT = "<image>\nDescribe what you see."
_STEP = 0.05
"""March step (m) for the clear-ahead distance: half a nav-grid cell."""


def describe_view(world: World, pose: Pose, hfov_deg: float, max_range: float = 8.0) -> str:
    """The true caption of the camera view at `pose`, e.g. "In the bedroom. Clear ahead for
    2.5 m. I see the blue sofa ahead, 2 m, and the red door on the left, 4.5 m."

    Landmarks are listed when the bearing of their centre, seen from the camera, is within
    hfov/2 of the heading, the nearest point of their footprint is within `max_range`, and no
    wall (furniture does not count) blocks the line from the camera to them; the 4 nearest.
    """
    parts = []
    room = world.room_at(pose.x, pose.y)
    if room is not None:
        parts.append(f"In the {room.name}.")
    clear = _clear_ahead(world, pose, max_range)
    parts.append("Blocked ahead." if clear < 0.5 else f"Clear ahead for {_metres(clear)} m.")
    half = math.radians(hfov_deg) / 2
    seen = landmarks_in_view(world, pose, hfov_deg, max_range)
    items = [
        f"the {name} {_side(bearing, half)}, {_metres(d)} m"
        for d, name, bearing in seen[:MAX_LANDMARKS]
    ]
    if not items:
        parts.append("I see no landmark.")
    elif len(items) == 1:
        parts.append(f"I see {items[0]}.")
    else:
        parts.append(f"I see {', '.join(items[:-1])}, and {items[-1]}.")
    return " ".join(parts)


def ask_where(
    world: World, pose: Pose, hfov_deg: float, rng: np.random.Generator
) -> tuple[str, str]:
    """A question that names a landmark and its true answer: "Where is the pink shelf?" ->
    "On the left, 1.5 m." or "Not in view.". Half the questions (when any is in view) name a
    landmark in view; the others name one that is not, sharing the kind or the colour of one in
    view where the scene has such, so that both words of the name must be read."""
    if not world.landmarks:
        raise ValueError(f"{world.scene_id} has no landmark to ask about")
    seen = landmarks_in_view(world, pose, hfov_deg)
    by_name = {lm.name: lm for lm in world.landmarks}
    half = math.radians(hfov_deg) / 2
    if seen and rng.random() < 0.5:
        distance, name, bearing = seen[int(rng.integers(len(seen)))]
        side = _side(bearing, half)
        answer = f"{side[0].upper()}{side[1:]}, {_metres(distance)} m."
    else:
        shown = {name for _, name, _ in seen}
        unseen = [lm for lm in world.landmarks if lm.name not in shown]
        if not unseen:  # every landmark of the scene is in view: ask about one of them
            return ask_where(world, pose, hfov_deg, rng)
        near = [
            lm
            for lm in unseen
            if any(lm.kind == by_name[n].kind or lm.colour == by_name[n].colour for n in shown)
        ]
        pool = near if near and rng.random() < 0.5 else unseen
        name = pool[int(rng.integers(len(pool)))].name
        answer = "Not in view."
    return f"<image>\nWhere is the {_spoken(by_name[name], rng)}?", answer


def ask_match(
    world: World, pose: Pose, hfov_deg: float, rng: np.random.Generator, same_kind: float = 0.0
) -> list[tuple[str, str]]:
    """The stop decision as yes/no questions on one view: "Is the pink shelf close ahead?".

    When a landmark is close ahead (in view, within CLOSE_AHEAD), two questions: its name,
    answered "Yes.", and another landmark's name that is not close ahead, answered "No.", a
    hard negative (the same kind or colour) half the time; otherwise one question, "No.". The
    frame alone does not tell the answer, only the name read against the view does. With
    `same_kind` > 0, the negative is first drawn with that probability among the landmarks of the
    same kind, where the colour alone tells them apart (`_match_names`).
    """
    return [
        (f"<image>\nIs the {name} close ahead?", answer)
        for name, answer in _match_names(world, pose, hfov_deg, rng, same_kind)
    ]


def ask_compare(
    world: World,
    pose: Pose,
    hfov_deg: float,
    rng: np.random.Generator,
    copy: bool = False,
    same_kind: float = 0.0,
) -> list[tuple[str, str]]:
    """`ask_match`'s questions with the landmark close ahead written before them: "Close ahead:
    the orange shelf. Is the pink bookshelf close ahead?" -> "No.", a comparison of two names in
    text. With `copy`, the answer repeats both names instead ("Close ahead: the orange shelf.
    Asked: the pink bookshelf."): a dense signal that teaches the model to find both spans, the step
    before it learns to compare them. The same rng draws as `ask_match`, so that a seed gives
    the same frames and names in all three files.
    """
    stated = f"Close ahead: {close_ahead_phrase(world, pose, hfov_deg)}."
    return [
        (
            f"<image>\n{stated} Is the {name} close ahead?",
            f"{stated} Asked: the {name}." if copy else answer,
        )
        for name, answer in _match_names(world, pose, hfov_deg, rng, same_kind)
    ]


def _match_names(
    world: World, pose: Pose, hfov_deg: float, rng: np.random.Generator, same_kind: float = 0.0
) -> list[tuple[str, str]]:
    """The spoken names `ask_match` asks about, with their answers. `same_kind` is the chance
    that the negative has the target's kind when the scene has one: a model that compares kinds
    and not colours answers those "Yes.". At 0 the draws are those of files written without it."""
    if not world.landmarks:
        raise ValueError(f"{world.scene_id} has no landmark to ask about")
    close = set(landmarks_close_ahead(world, pose, hfov_deg))
    asked = []
    if close:
        target = world.landmark(sorted(close)[int(rng.integers(len(close)))])
        asked.append((target, "Yes."))
    else:
        target = world.landmarks[int(rng.integers(len(world.landmarks)))]
    others = [lm for lm in world.landmarks if lm.name not in close and lm.name != target.name]
    if target.name not in close:
        others.append(target)
    same = [lm for lm in others if lm.kind == target.kind]
    hard = [lm for lm in others if lm.kind == target.kind or lm.colour == target.colour]
    if same_kind and same and rng.random() < same_kind:
        pool = same
    else:
        pool = hard if hard and rng.random() < 0.5 else others
    if pool:
        asked.append((pool[int(rng.integers(len(pool)))], "No."))
    return [(_spoken(lm, rng), answer) for lm, answer in asked]


READOUT_PROMPT = "<image>\nWhat is close ahead?"


def read_out(world: World, pose: Pose, hfov_deg: float) -> str:
    """The true answer to READOUT_PROMPT: the nearest landmark close ahead, "The pink shelf.",
    or "Nothing."; the kind's first noun, so that each landmark has one answer."""
    return _readout(world, landmarks_close_ahead(world, pose, hfov_deg))


def _readout(world: World, close: list[str]) -> str:
    return readout_answer(world.landmark(close[0])) if close else "Nothing."


def _phrase(said: str) -> str:
    """A readout as a statement's phrase: "The pink shelf." -> "the pink shelf"."""
    return said[0].lower() + said[1:-1]


def landmark_phrase(landmark: Landmark) -> str:
    """How a statement names a landmark, in the readout's words: "the pink shelf"."""
    return _phrase(readout_answer(landmark))


def close_ahead_phrase(world: World, pose: Pose, hfov_deg: float) -> str:
    """What is close ahead as a prompt or a navigation answer states it, "the pink shelf" or
    "nothing": `read_out` without its capital and period."""
    return _phrase(read_out(world, pose, hfov_deg))


def goal_phrase(text: str, goal: Landmark) -> re.Match[str] | None:
    """The last "the <colour> <noun>" naming `goal` in `text` (the stop clause comes last)."""
    nouns = sorted(KINDS[goal.kind].nouns, key=len, reverse=True)
    pattern = rf"\bthe {re.escape(goal.colour)} (?:{'|'.join(map(re.escape, nouns))})\b"
    matches = list(re.finditer(pattern, text, flags=re.IGNORECASE))
    return matches[-1] if matches else None


def stop_statement(world: World, pose: Pose, hfov_deg: float, goal: Landmark) -> str:
    """What a navigation model that reasons before it acts says at `pose`: what is close ahead,
    then whether the landmark its instruction stops at is: "Close ahead: the pink shelf. Is the
    blue potted plant close ahead? No.", "Yes." when `goal` is close ahead. Both names in the
    readout's words (`readout_answer`), whatever synonym the instruction used ("bookshelf",
    "plant"), so that the same landmark is always written the same and the verdict is exactly
    whether the two names are equal (the model option nav_verdict: names). So when the goal is
    close ahead it is the landmark stated, even with another one nearer; otherwise the nearest."""
    close = landmarks_close_ahead(world, pose, hfov_deg)
    goal_close = goal.name in close
    said = landmark_phrase(goal) if goal_close else _phrase(_readout(world, close))
    answer = "Yes." if goal_close else "No."
    return f"Close ahead: {said}. Is {landmark_phrase(goal)} close ahead? {answer}"


def readout_answer(landmark: Landmark) -> str:
    """How the readout names a landmark: "The pink shelf." (the kind's first noun)."""
    return f"The {landmark.colour} {KINDS[landmark.kind].nouns[0]}."


def _spoken(landmark: Landmark, rng: np.random.Generator) -> str:
    nouns = KINDS[landmark.kind].nouns
    return f"{landmark.colour} {nouns[int(rng.integers(len(nouns)))]}"


def close_view_poses(world: World, n: int, rng: np.random.Generator) -> list[Pose]:
    """n poses close to a landmark and roughly facing it (from 0.6 m nearer to 1.1 m farther
    than its stopping point, 0.4 m to either side, within 30 degrees), where the robot fits: the
    views in which a navigator decides to stop."""
    poses: list[Pose] = []
    while len(poses) < n:
        lm = world.landmarks[int(rng.integers(len(world.landmarks)))]
        ax, ay = lm.approach
        away = math.atan2(ay - lm.y, ax - lm.x)
        back = float(rng.uniform(-0.6, 1.1))
        side = float(rng.uniform(-0.4, 0.4))
        x = ax + back * math.cos(away) - side * math.sin(away)
        y = ay + back * math.sin(away) + side * math.cos(away)
        if world.nav.clearance_at(x, y) < ROBOT_RADIUS:
            continue
        yaw = math.atan2(lm.y - y, lm.x - x) + float(rng.uniform(-0.5, 0.5))
        poses.append(Pose(round(x, 4), round(y, 4), round(wrap_angle(yaw), 5)))
    return poses


def _clear_ahead(world: World, pose: Pose, max_range: float) -> float:
    """How far the base can drive straight on before its body would touch a wall or furniture."""
    dx, dy = math.cos(pose.yaw), math.sin(pose.yaw)
    clear = 0.0
    for t in np.arange(0.0, max_range + 1e-9, _STEP):
        if world.nav.clearance_at(pose.x + t * dx, pose.y + t * dy) < ROBOT_RADIUS:
            break
        clear = float(t)
    return clear


def _side(bearing: float, half: float) -> str:
    """The field of view split into five equal sectors; bearing is positive to the left."""
    fifth = 2 * half / 5
    if abs(bearing) <= fifth / 2:
        return "ahead"
    side = "left" if bearing > 0 else "right"
    return f"on the {side}" if abs(bearing) <= 1.5 * fifth else f"on the far {side}"


def _metres(d: float) -> str:
    """Rounded to 0.5 m, at least 0.5 m: "0.5", "2", "4.5"."""
    return f"{max(0.5, math.floor(d * 2 + 0.5) / 2):g}"


def random_view_poses(world: World, n: int, rng: np.random.Generator) -> list[Pose]:
    """n poses where the robot fits (clearance >= its radius), uniform over that floor area.

    One draw per pose, in order, so a larger n only appends poses.
    """
    nav = world.nav
    rows, cols = np.nonzero(nav.clearance >= ROBOT_RADIUS)
    poses = []
    for _ in range(n):
        k = int(rng.integers(len(rows)))
        # Inside the cell's middle, so the pose never rounds into a neighbouring cell.
        u, v = rng.uniform(0.1, 0.9, 2)
        yaw = float(rng.uniform(-math.pi, math.pi))
        x = nav.origin[0] + (cols[k] + u) * nav.res
        y = nav.origin[1] + (rows[k] + v) * nav.res
        poses.append(Pose(round(float(x), 4), round(float(y), 4), round(yaw, 5)))
    return poses


TASKS = {
    "captions": "captions.json",
    "where": "questions.json",
    "match": "match.json",
    "readout": "readout.json",
    "compare": "compare.json",
    "copy": "copy.json",
}
"""What `write_caption_dataset` writes, and the file it writes it to."""


def write_caption_dataset(
    out_dir: str | Path,
    split: str,
    n: int,
    seed: int = 0,
    camera: CameraConfig | None = None,
    task: str = "captions",
    same_kind: float = 0.0,
) -> Path:
    """Render n frames from the split's scenes; returns the LLaVA-format JSON's path.

    `task` (TASKS): "captions", one true caption per frame (`describe_view`); "where", one
    "Where is the <landmark>?" question per frame (`ask_where`), half of the frames close to a
    landmark (`close_view_poses`); "match", one or two "Is the <landmark> close ahead?"
    questions per frame (`ask_match`), three quarters of the frames close to a landmark;
    "readout", "What is close ahead?" (`read_out`) on the same frames as "match"; "compare" and
    "copy", the match questions with the landmark close ahead written in the prompt
    (`ask_compare`), the same frames and names as "match" for the same seed. `same_kind` weights
    the negatives of "match", "compare" and "copy" towards the target's kind (`ask_match`).

    Frame k is drawn in scene k mod (number of scenes), so every scene gets its share, and each
    scene's poses come from its own generator seeded by (seed, split, scene): val_seen reuses the
    training scenes but not their views. Rendering is grouped by scene so each MuJoCo model is
    built once.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {sorted(TASKS)}")
    if not 0.0 <= same_kind <= 1.0:
        raise ValueError(f"same_kind is a probability in [0, 1], got {same_kind}")
    close_share = {"captions": 0.0, "where": 0.5}.get(task, 0.75)
    camera = camera or CameraConfig(width=320, height=240)
    scenes = [scene_id(i) for i in SPLIT_SCENES[split]]
    out = Path(out_dir)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    by_scene: dict[str, list[int]] = {}
    for k in range(n):
        by_scene.setdefault(scenes[k % len(scenes)], []).append(k)
    records: list[list[dict]] = [[] for _ in range(n)]
    with Simulator(camera) as sim, Progress(n, task, "img") as bar:
        for scene, ks in by_scene.items():
            world = world_for_scene(scene)
            rng = np.random.default_rng([seed, zlib.crc32(split.encode()), world.index])
            poses = random_view_poses(world, len(ks), rng)
            if close_share:
                close = close_view_poses(world, len(ks), rng)
                poses = [
                    c if rng.random() < close_share else p
                    for p, c in zip(poses, close, strict=True)
                ]
            for k, pose in zip(ks, poses, strict=True):
                rel = f"frames/{scene.rsplit('/', 1)[-1]}_{k:06d}.jpg"
                Image.fromarray(sim.reset_to(scene, pose).rgb).save(out / rel, quality=92)
                if task == "match":
                    asked = ask_match(world, pose, camera.hfov_deg, rng, same_kind)
                elif task in ("compare", "copy"):
                    asked = ask_compare(
                        world, pose, camera.hfov_deg, rng, task == "copy", same_kind
                    )
                elif task == "readout":
                    asked = [(READOUT_PROMPT, read_out(world, pose, camera.hfov_deg))]
                elif task == "where":
                    asked = [ask_where(world, pose, camera.hfov_deg, rng)]
                else:
                    asked = [(PROMPT, describe_view(world, pose, camera.hfov_deg))]
                for q, (prompt, answer) in enumerate(asked):
                    records[k].append(
                        {
                            "id": f"{scene}/{k}" if len(asked) == 1 else f"{scene}/{k}/{q}",
                            "image": rel,
                            "conversations": [
                                {"from": "human", "value": prompt},
                                {"from": "gpt", "value": answer},
                            ],
                            "scene_id": scene,
                            "pose": [pose.x, pose.y, pose.yaw],
                        }
                    )
                bar.update()
    path = out / TASKS[task]
    path.write_text(json.dumps([r for frame in records for r in frame], indent=1))
    return path
