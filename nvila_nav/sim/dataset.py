"""Expert-rollout datasets on disk: JSON metadata plus one image file per frame.

Layout (format "nvila_nav.sim.dataset", version 1)::

    DIR/index.json                  {"format", "version", "frame_hz", "camera", ["stop_band",]
                                     "episodes": [{"episode_id", "dir", "scene_id",
                                       "num_frames", "num_actions", "success"}]}
    DIR/<dir>/meta.json             one episode, see below
    DIR/<dir>/frames/000000.jpg     frames in time order (JPEG or PNG)

meta.json holds "episode" (the R2R episode dict), "instruction", "frame_hz", "camera",
"frames_at" ("clock": frames every 1/frame_hz s; "decisions": one frame per action),
"frames" [{"file", "t", "pose": [x, y, yaw]}], "actions" [{"t", "text", "kind", "amount",
"frame_index", "pose"[, "statement"][, "executed"]}], "trajectory" [[t, x, y, yaw], ...] every 50 ms and "result"
{"success", "stopped", "distance_to_goal", "path_length"}. "text" is always the expert's action,
the training label; "executed" appears where a perturbed rollout (`run_expert(perturb=...)`)
drove something else from that state; "statement" (where the instruction names its goal) is
what a `nav_statement` model says before the action at that pose (`captions.stop_statement`:
"Close ahead: the pink shelf. Is the blue potted plant close ahead? No."); "context": true (contrast episodes, `contrast.py`) marks
an action that only builds later samples' history and is no training sample itself. A NaVILA training sample is one
action: its input frames are frames[0 .. frame_index] (NaVILA samples 8 of them), its target is
`Action.to_answer()`, e.g. "The next action is move forward 75 cm.".
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from nvila_nav.actions import Action, ActionKind
from nvila_nav.sim.captions import goal_phrase, stop_statement
from nvila_nav.sim.episodes import Episode
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.world import World, world_for_scene

if TYPE_CHECKING:
    from nvila_nav.sim.expert import ExpertRun
    from nvila_nav.sim.robot import CameraConfig

FORMAT = "nvila_nav.sim.dataset"
VERSION = 1
IMAGE_FORMATS = ("jpg", "png")


@dataclass(frozen=True)
class FrameRecord:
    path: Path
    t: float
    pose: Pose


@dataclass(frozen=True)
class ActionRecord:
    t: float
    action: Action
    frame_index: int
    pose: Pose
    context: bool = False
    """History only: its frame and action shape later samples, it is no sample itself."""


@dataclass(frozen=True)
class TrainingSample:
    """One supervised step: all frames seen so far, the instruction and the answer text."""

    instruction: str
    frames: tuple[Path, ...]
    answer: str


@dataclass(frozen=True)
class DatasetEpisode:
    episode: Episode
    frames: tuple[FrameRecord, ...]
    actions: tuple[ActionRecord, ...]
    trajectory: np.ndarray
    success: bool
    distance_to_goal: float

    @property
    def instruction(self) -> str:
        return self.episode.instruction_text

    def image(self, index: int) -> np.ndarray:
        """Frame `index` as HxWx3 uint8."""
        with Image.open(self.frames[index].path) as im:
            return np.asarray(im.convert("RGB"))

    def samples(self) -> list[TrainingSample]:
        return [
            TrainingSample(
                instruction=self.instruction,
                frames=tuple(f.path for f in self.frames[: a.frame_index + 1]),
                answer=a.action.to_answer(),
            )
            for a in self.actions
            if not a.context
        ]


@dataclass(frozen=True)
class Dataset:
    root: Path
    frame_hz: float
    camera: dict
    episodes: tuple[DatasetEpisode, ...]

    def samples(self) -> list[TrainingSample]:
        return [s for e in self.episodes for s in e.samples()]


def _pose(p: Pose) -> list[float]:
    return [round(p.x, 4), round(p.y, 4), round(p.yaw, 5)]


def episode_dir_name(episode_id: str) -> str:
    """File-system-safe folder name for an episode id (real R2R ids are plain integers)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", episode_id)


def write_episode(
    root: str | Path, run: ExpertRun, camera: CameraConfig, image_format: str = "jpg"
) -> dict:
    """Write one rollout under root/<episode dir>/; returns its index.json entry."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    if len(run.frames) != len(run.frame_times):
        raise ValueError("the run was made without rendering; it has no frames to write")
    name = episode_dir_name(run.episode.episode_id)
    folder = Path(root) / name
    (folder / "frames").mkdir(parents=True, exist_ok=True)
    frames = []
    for k, (rgb, t, pose) in enumerate(
        zip(run.frames, run.frame_times, run.frame_poses, strict=True)
    ):
        rel = f"frames/{k:06d}.{image_format}"
        options = {"quality": 92} if image_format == "jpg" else {}
        Image.fromarray(rgb).save(folder / rel, **options)
        frames.append({"file": rel, "t": t, "pose": _pose(pose)})
    world = world_for_scene(run.episode.scene_id)
    meta = {
        "episode": run.episode.to_dict(),
        "instruction": run.episode.instruction_text,
        "frame_hz": run.frame_hz,
        "frames_at": "decisions" if run.decision_frames else "clock",
        "camera": asdict(camera),
        "frames": frames,
        "actions": [
            {
                "t": a.t,
                "text": a.action.to_text(),
                "kind": a.action.kind.value,
                "amount": a.action.amount,
                "frame_index": a.frame_index,
                "pose": _pose(a.pose),
                **({"executed": a.executed.to_text()} if a.executed is not None else {}),
            }
            for a in run.actions
        ],
        "trajectory": [[round(v, 5) for v in row] for row in run.trajectory],
        "result": {
            "success": run.success,
            "stopped": run.stopped,
            "distance_to_goal": round(run.distance_to_goal, 4),
            "path_length": round(run.path_length, 4),
        },
    }
    set_statements(meta, world)
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return {
        "episode_id": run.episode.episode_id,
        "dir": name,
        "scene_id": run.episode.scene_id,
        "num_frames": len(frames),
        "num_actions": len(run.actions),
        "success": run.success,
    }


def set_statements(meta: dict, world: World) -> None:
    """Give every action of an episode's meta.json its "statement" (`captions.stop_statement`
    about the goal landmark), in place; an episode whose instruction does not name its goal
    landmark gets none (the model could not tell which landmark to ask about)."""
    name = meta["episode"].get("info", {}).get("goal_landmark")
    goal = None if name is None else world.landmark(name)
    named = goal is not None and goal_phrase(meta["instruction"], goal) is not None
    hfov = float(meta["camera"]["hfov_deg"])
    for action in meta["actions"]:
        action.pop("statement", None)
        if named:
            action["statement"] = stop_statement(world, Pose(*action["pose"]), hfov, goal)


def add_statements(root: str | Path) -> int:
    """Write the statements (`set_statements`) into a rollout dataset written before rollouts
    recorded them, in place; returns the number of actions that have one. Running it again
    rewrites the same values."""
    root = Path(root)
    path = root / "index.json"
    index = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(f"{root} is not a {FORMAT} v{VERSION} dataset")
    count = 0
    for entry in index["episodes"]:
        path = root / entry["dir"] / "meta.json"
        meta = json.loads(path.read_text(encoding="utf-8"))
        set_statements(meta, world_for_scene(meta["episode"]["scene_id"]))
        count += sum("statement" in a for a in meta["actions"])
        path.write_text(json.dumps(meta), encoding="utf-8")
    return count


def link_frames(src: Path, dst: Path, files: list[str] | None = None) -> None:
    """Put an episode's frame files (all, or the `files` named relative to it) under `dst`:
    hard links where the file system allows (no second copy of the pixels), copies otherwise."""
    names = files if files is not None else [f"frames/{p.name}" for p in (src / "frames").iterdir()]
    (dst / "frames").mkdir(parents=True, exist_ok=True)
    for name in sorted(names):
        target = dst / name
        if target.exists():
            target.unlink()
        try:
            os.link(src / name, target)
        except OSError:
            shutil.copy2(src / name, target)


def write_index(
    root: str | Path,
    entries: list[dict],
    frame_hz: float,
    camera: CameraConfig,
    stop_band: float | None = None,
) -> Path:
    """`stop_band`: the rollouts' expert stopped there (`Expert`); later steps read it."""
    path = Path(root) / "index.json"
    index = {
        "format": FORMAT,
        "version": VERSION,
        "frame_hz": frame_hz,
        "camera": asdict(camera),
        **({"stop_band": stop_band} if stop_band is not None else {}),
        "episodes": entries,
    }
    path.write_text(json.dumps(index, indent=1), encoding="utf-8")
    return path


def load_dataset(root: str | Path) -> Dataset:
    """Read index.json and every episode's meta.json (images are opened lazily)."""
    root = Path(root)
    index = json.loads((root / "index.json").read_text(encoding="utf-8"))
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(f"{root} is not a {FORMAT} v{VERSION} dataset")
    episodes = tuple(load_episode(root / entry["dir"]) for entry in index["episodes"])
    return Dataset(root, float(index["frame_hz"]), dict(index["camera"]), episodes)


def load_episode(folder: str | Path) -> DatasetEpisode:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    return DatasetEpisode(
        episode=Episode.from_dict(meta["episode"]),
        frames=tuple(
            FrameRecord(folder / f["file"], float(f["t"]), Pose(*f["pose"])) for f in meta["frames"]
        ),
        actions=tuple(
            ActionRecord(
                float(a["t"]),
                Action(ActionKind(a["kind"]), a["amount"]),
                int(a["frame_index"]),
                Pose(*a["pose"]),
                bool(a.get("context", False)),
            )
            for a in meta["actions"]
        ),
        trajectory=np.asarray(meta["trajectory"], dtype=float).reshape(-1, 4),
        success=bool(meta["result"]["success"]),
        distance_to_goal=float(meta["result"]["distance_to_goal"]),
    )
