"""Robot recordings (rosbag2 MCAP) -> the episode-folder training format, without ROS.

A team teleoperates or runs the navigator, records `ros2 bag record -s mcap rgb instruction action
action_result odom`, and fine-tunes on the result. This module replays such a bag the way the
navigator saw it and writes the same layout as the simulator's rollouts (format
"nvila_nav.sim.dataset", version 1), so one trainer reads simulated and real data:

    OUT/index.json                 {"format", "version", "frame_hz", "camera", "episodes": [...]}
    OUT/<bag>-0003/meta.json       "episode", "instruction", "frame_hz", "camera", "frames",
                                   "actions", "result"
    OUT/<bag>-0003/frames/000000.jpg ...

Replay rules, taken from the navigator (nvila_nav/navigation.py and history.py):

- An instruction starts an episode; the next instruction, a "stop"/"halt" instruction, a "stop"
  action, a camera clock jump back or the end of the bag ends it. A new episode's history starts
  with the newest frame seen before its instruction.
- Frames are kept at `frame_hz` of their stamps (header stamp, or log time when the header is
  zero), the first one always. The newest frame before each action is written too, as the
  navigator shows it to the model as the current view; the action's `frame_index` points at it.
- Actions are std_msgs/String without a stamp: their log time is moved onto the camera clock by
  the newest frame's stamp - log time offset, so "t" of frames and actions compare.
- A "stop" right after an instruction, before any other action, is the navigator stopping the
  preempted instruction, not an answer to the new one, and is dropped.

Malformed images, unparseable actions and actions outside any episode are skipped, counted, and
warned about once per kind; nothing in a bag crashes the import. Only JSON and images are
written, never pickle. Images are decoded here in numpy because nvila_core must not import
nvila_nav (its converter is the model of this one).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mcap.exceptions import McapError
from mcap.reader import NonSeekingReader, SeekingReader
from mcap_ros2.decoder import DecoderFactory
from PIL import Image

log = logging.getLogger(__name__)

FORMAT = "nvila_nav.sim.dataset"
VERSION = 1
IMAGE_FORMATS = ("jpg", "png")

STOP_INSTRUCTIONS = frozenset({"stop", "halt"})
"""Instruction texts (case and punctuation aside) that end the current one, as in the navigator."""

CLOCK_JUMP_S = 1.0
"""A frame stamped this much before the newest one means the clock restarted (a simulator reset):
the frames before it belong to another run, so the episode ends there, as the navigator's
history restarts."""

PREEMPT_STOP_S = 0.25
"""The navigator publishes the preempting "stop" in the instruction callback, within
milliseconds; a model's own "stop" needs a model query, which takes far longer than this."""

_STAMP_EPSILON_NS = 1000
"""Absorbs rounding in stamps so a frame exactly one keep period later is not rejected."""

_FORWARD_CM = (25, 50, 75)
_TURN_DEG = (15, 30, 45)
_ACTION_RE = re.compile(
    r"^\s*(?:the\s+next\s+action\s+is\s+)?"
    r"(?:move\s+forward\s+(?P<cm>\d+(?:\.\d+)?)\s*cm"
    r"|turn\s+(?P<side>left|right)\s+(?P<deg>\d+(?:\.\d+)?)\s*degrees?"
    r"|(?P<stop>stop))\s*\.?\s*$",
    re.IGNORECASE,
)

# encoding -> (stored channels, stored channel of R, G, B)
_LAYOUTS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
SUPPORTED_ENCODINGS = tuple(_LAYOUTS)

_IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/Image")
_STRING_TYPES = ("std_msgs/msg/String", "std_msgs/String")
_ODOM_TYPES = ("nav_msgs/msg/Odometry", "nav_msgs/Odometry")


class MalformedImageError(ValueError):
    """An Image message whose fields do not describe its data; the message says which field."""


def image_to_rgb(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image (any object with its fields) as a new H×W×3 uint8 RGB array.

    Rows are read through `step`, so padded rows are fine; `data` must hold exactly
    step × height bytes, as the message definition requires (a truncated frame is rejected).
    """
    layout = _LAYOUTS.get(msg.encoding)
    if layout is None:
        raise MalformedImageError(
            f"unsupported encoding {msg.encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    channels, rgb_channels = layout
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise MalformedImageError(f"image size must be positive, got {width}x{height}")
    if step < width * channels:
        raise MalformedImageError(f"step {step} < width {width} × {channels} channels")
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size != step * height:
        raise MalformedImageError(
            f"data holds {data.size} bytes, expected step × height = {step} × {height}"
        )
    pixels = data.reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    return np.ascontiguousarray(pixels[:, :, list(rgb_channels)])


def parse_action(text: str) -> tuple[str, float, str] | None:
    """(kind, amount, canonical text) of one NaVILA action, or None outside its grammar.

    Kinds are those of nvila_nav.actions.ActionKind. Amounts must be grammar values (25/50/75 cm,
    15/30/45 degrees): the model can only ever say those, so anything else is not a label for it.
    """
    match = _ACTION_RE.match(text)
    if match is None:
        return None
    if match["stop"]:
        return "stop", 0.0, "stop"
    if match["cm"] is not None:
        cm = float(match["cm"])
        return ("forward", cm, f"move forward {round(cm)} cm") if cm in _FORWARD_CM else None
    deg, side = float(match["deg"]), match["side"].lower()
    return (f"turn_{side}", deg, f"turn {side} {round(deg)} degrees") if deg in _TURN_DEG else None


def _is_stop_instruction(text: str) -> bool:
    return re.sub(r"[^a-z]", "", text.lower()) in STOP_INSTRUCTIONS


def _stamp_ns(header: Any, log_time_ns: int) -> int:
    ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
    return ns if ns > 0 else log_time_ns


def _yaw(q: Any) -> float:
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def _seconds(ns: int) -> float:
    return round(ns * 1e-9, 6)


def _episode_dir_name(episode_id: str) -> str:
    """The simulator's file-system-safe folder name for an episode id."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", episode_id)


@dataclass
class _Frame:
    rgb: np.ndarray
    stamp_ns: int
    log_ns: int
    pose: list[float] | None
    encoding: str


@dataclass
class _Episode:
    """One instruction being replayed; frames are written as they are kept."""

    episode_id: str
    instruction: str
    start_log_ns: int
    folder: Path
    frames: list[dict] = field(default_factory=list)
    actions: list[dict] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    first_stamp_ns: int | None = None
    last_kept_ns: int | None = None
    pending: _Frame | None = None
    current_index: int | None = None
    camera: dict | None = None


class _Replay:
    """Feeds bag messages, in log-time order, through the navigator's episode rules."""

    def __init__(
        self, bag_name: str, out_dir: Path, frame_hz: float, image_format: str, camera_topic: str
    ):
        self.bag_name = bag_name
        self.out_dir = out_dir
        self.period_ns = round(1e9 / frame_hz)
        self.frame_hz = frame_hz
        self.image_format = image_format
        self.camera_topic = camera_topic
        self.latest: _Frame | None = None
        self.pose: list[float] | None = None
        self.episode: _Episode | None = None
        self.started = 0
        self.entries: list[dict] = []
        self.camera: dict | None = None
        self.skipped: Counter = Counter()

    # --- bookkeeping -----------------------------------------------------------------------
    def skip(self, kind: str, detail: str) -> None:
        """Count a skipped message (globally and in the open episode); warn on its first kind."""
        if not self.skipped[kind]:
            log.warning(
                "%s: skipped %s (%s); further ones are only counted",
                self.bag_name,
                kind.replace("_", " "),
                detail,
            )
        self.skipped[kind] += 1
        if self.episode is not None:
            self.episode.skipped[kind] += 1

    def clock_ns(self, log_ns: int) -> int:
        """A log time moved onto the camera clock by the newest frame's stamp - log offset."""
        offset = 0 if self.latest is None else self.latest.stamp_ns - self.latest.log_ns
        return log_ns + offset

    # --- messages --------------------------------------------------------------------------
    def on_instruction(self, text: str, log_ns: int) -> None:
        text = text.strip()
        if not text:
            return
        self.finish("instruction")
        if _is_stop_instruction(text):
            return
        episode_id = f"{self.bag_name}-{self.started:04d}"
        self.started += 1
        folder = self.out_dir / _episode_dir_name(episode_id)
        if folder.exists():  # re-importing a bag replaces its episodes
            shutil.rmtree(folder)
        self.episode = _Episode(episode_id, text, log_ns, folder)
        if self.latest is not None:
            self._offer(self.latest)

    def on_image(self, msg: Any, log_ns: int) -> None:
        try:
            rgb = image_to_rgb(msg)
        except (AttributeError, TypeError, ValueError) as error:  # MalformedImageError too
            self.skip("malformed_images", str(error))
            return
        frame = _Frame(rgb, _stamp_ns(msg.header, log_ns), log_ns, self.pose, msg.encoding)
        if self.latest is not None and frame.stamp_ns < self.latest.stamp_ns:
            if self.latest.stamp_ns - frame.stamp_ns <= CLOCK_JUMP_S * 1e9:
                self.skip("out_of_order_images", "stamped before the newest frame")
                return
            log.warning("%s: camera clock jumped back; the current episode ends", self.bag_name)
            self.finish("clock_jump")
        self.latest = frame
        if self.episode is not None:
            self._offer(frame)

    def on_action(self, text: str, log_ns: int) -> None:
        episode = self.episode
        if episode is None:
            self.skip("actions_outside_episodes", repr(text))
            return
        parsed = parse_action(text)
        if parsed is None:
            self.skip("unparseable_actions", repr(text))
            return
        kind, amount, canonical = parsed
        if (
            kind == "stop"
            and not episode.actions
            and log_ns - episode.start_log_ns < (PREEMPT_STOP_S * 1e9)
        ):
            self.skip("preemption_stops", "stop right after a new instruction")
            return
        if episode.pending is not None:
            self._write(episode, episode.pending)
            episode.pending = None
        if episode.current_index is None:
            self.skip("actions_before_a_frame", repr(text))
            return
        action = {
            "t": _seconds(self.clock_ns(log_ns) - episode.first_stamp_ns),
            "text": canonical,
            "kind": kind,
            "amount": amount,
            "frame_index": episode.current_index,
        }
        if self.pose is not None:
            action["pose"] = self.pose
        episode.actions.append(action)
        if kind == "stop":
            self.finish("stop")

    def on_action_result(self, text: str) -> None:
        """Mark the newest action of that text with the controller's "<state> <action text>"."""
        state, _, action_text = text.strip().partition(" ")
        parsed = parse_action(action_text)
        if self.episode is None or parsed is None:
            return
        action = next((a for a in reversed(self.episode.actions) if a["text"] == parsed[2]), None)
        if action is not None:
            action.setdefault("result", state)

    def on_odom(self, msg: Any) -> None:
        pose = msg.pose.pose
        self.pose = [
            round(float(pose.position.x), 4),
            round(float(pose.position.y), 4),
            round(_yaw(pose.orientation), 5),
        ]

    # --- episodes --------------------------------------------------------------------------
    def _offer(self, frame: _Frame) -> None:
        """The navigator's FrameHistory.offer: keep the frame when a keep period has passed."""
        episode = self.episode
        due = (
            episode.last_kept_ns is None
            or frame.stamp_ns - episode.last_kept_ns >= self.period_ns - _STAMP_EPSILON_NS
        )
        if due:
            episode.last_kept_ns = frame.stamp_ns
            episode.pending = None
            self._write(episode, frame)
        else:
            episode.pending = frame
            episode.current_index = None

    def _write(self, episode: _Episode, frame: _Frame) -> None:
        if episode.first_stamp_ns is None:
            episode.first_stamp_ns = frame.stamp_ns
            height, width = frame.rgb.shape[:2]
            episode.camera = {
                "topic": self.camera_topic,
                "width": width,
                "height": height,
                "encoding": frame.encoding,
            }
            (episode.folder / "frames").mkdir(parents=True, exist_ok=True)
        rel = f"frames/{len(episode.frames):06d}.{self.image_format}"
        options = {"quality": 92} if self.image_format == "jpg" else {}
        Image.fromarray(frame.rgb).save(episode.folder / rel, **options)
        record = {"file": rel, "t": _seconds(frame.stamp_ns - episode.first_stamp_ns)}
        if frame.pose is not None:
            record["pose"] = frame.pose
        episode.frames.append(record)
        episode.current_index = len(episode.frames) - 1

    def finish(self, reason: str) -> None:
        """Close the open episode: write meta.json, or drop it when it holds no action."""
        episode, self.episode = self.episode, None
        if episode is None:
            return
        if not episode.actions:
            log.warning(
                "%s: episode %s has no action; not written", self.bag_name, episode.episode_id
            )
            if episode.folder.exists():
                shutil.rmtree(episode.folder)
            return
        stopped = reason == "stop"
        meta = {
            "episode": {
                "episode_id": episode.episode_id,
                "scene_id": f"real:{self.bag_name}",
                "instruction": {"instruction_text": episode.instruction},
                "info": {
                    "source": "mcap",
                    "bag": self.bag_name,
                    "start_stamp": _seconds(episode.first_stamp_ns),
                    "skipped": dict(episode.skipped),
                },
            },
            "instruction": episode.instruction,
            "frame_hz": self.frame_hz,
            "camera": episode.camera,
            "frames": episode.frames,
            "actions": episode.actions,
            "result": {"success": stopped, "stopped": stopped, "ended_by": reason},
        }
        (episode.folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        self.camera = self.camera or episode.camera
        self.entries.append(
            {
                "episode_id": episode.episode_id,
                "dir": episode.folder.name,
                "scene_id": f"real:{self.bag_name}",
                "num_frames": len(episode.frames),
                "num_actions": len(episode.actions),
                "success": stopped,
            }
        )


def _bag_files(bag_path: Path) -> list[Path]:
    """The .mcap files of a bag: one file, or a rosbag2 folder's splits in their numeric order."""
    if bag_path.is_file():
        return [bag_path]
    files = sorted(
        bag_path.glob("*.mcap"),
        key=lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)],
    )
    if not files:
        raise ValueError(f"{bag_path} holds no .mcap file")
    return files


def _read_messages(path: Path) -> Iterator[tuple[Any, Any, Any]]:
    """(schema, channel, message) records, in log-time order where the file has an index.

    A bag whose recorder was killed has no index; it is read front to back (rosbag2 writes in
    arrival order). Damaged data ends the file with a warning: what came before is still used.
    """
    with path.open("rb") as stream:
        try:
            reader = SeekingReader(stream)
            summary = reader.get_summary()
        except (McapError, struct.error, ValueError):
            summary = None
        try:
            if summary is not None and summary.chunk_indexes:
                yield from reader.iter_messages(log_time_order=True)
            else:
                stream.seek(0)
                yield from NonSeekingReader(stream).iter_messages(log_time_order=False)
        except Exception as error:  # truncation, bad lengths, bad compression: all mean "damaged"
            log.warning(
                "%s: the recording is damaged or cut short (%s: %s); read up to there",
                path.name,
                type(error).__name__,
                error,
            )


def _topic_key(name: str) -> str:
    """One spelling for a topic as typed ("rgb") or as recorded ("/rgb")."""
    return "/" + name.lstrip("/")


def _decoder(channel: Any, schema: Any) -> Any:
    """The CDR decoder of a channel; a topic that cannot be decoded at all is a bad bag."""
    try:
        decoder = DecoderFactory().decoder_for(channel.message_encoding, schema)
    except McapError as error:
        raise ValueError(f"{channel.topic}: cannot parse its schema: {error}") from error
    if decoder is None:
        raise ValueError(
            f"{channel.topic} is {channel.message_encoding!r} without a ros2msg schema; "
            "only CDR messages with ros2msg schemas (rosbag2's MCAP) can be read"
        )
    return decoder


def _merge_index(out_dir: Path, entries: list[dict], frame_hz: float, camera: dict | None) -> None:
    """Append entries to index.json (replacing same-id ones, so re-imports are idempotent)."""
    path = out_dir / "index.json"
    if path.exists():
        index = json.loads(path.read_text(encoding="utf-8"))
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise ValueError(f"{path} is not a {FORMAT} v{VERSION} index")
        if not math.isclose(float(index["frame_hz"]), frame_hz):
            raise ValueError(
                f"{path} holds frames at {index['frame_hz']} Hz; cannot add {frame_hz} Hz ones"
            )
    else:
        index = {
            "format": FORMAT,
            "version": VERSION,
            "frame_hz": frame_hz,
            "camera": camera,
            "episodes": [],
        }
    new_ids = {e["episode_id"] for e in entries}
    index["episodes"] = [e for e in index["episodes"] if e["episode_id"] not in new_ids] + entries
    if index.get("camera") is None:
        index["camera"] = camera
    path.write_text(json.dumps(index, indent=1), encoding="utf-8")


def import_mcap(
    bag_path: str | Path,
    out_dir: str | Path,
    camera_topic: str = "rgb",
    instruction_topic: str = "instruction",
    action_topic: str = "action",
    frame_hz: float = 2.0,
    image_format: str = "jpg",
    odom_topic: str = "odom",
    result_topic: str = "action_result",
) -> list[dict]:
    """Write a bag's episodes under out_dir and add them to its index.json; returns their entries.

    `bag_path` is an .mcap file or a rosbag2 folder. Episode ids are "<bag name>-NNNN" (NNNN
    counts the bag's instructions) and scene ids "real:<bag name>". The odom and action_result
    topics are optional: with them, frames and actions carry "pose" [x, y, yaw] and actions their
    controller "result" state. An episode counts as a success when it ended with a "stop" action
    (the operator or policy declared arrival). Raises ValueError when a required topic is
    missing or has the wrong type.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    if not (math.isfinite(frame_hz) and frame_hz > 0):
        raise ValueError(f"frame_hz must be finite and > 0, got {frame_hz}")
    bag_path, out_dir = Path(bag_path), Path(out_dir)
    files = _bag_files(bag_path)
    bag_name = _episode_dir_name(bag_path.stem if bag_path.is_file() else bag_path.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    replay = _Replay(bag_name, out_dir, frame_hz, image_format, camera_topic)
    roles = {
        _topic_key(topic): (name, types)
        for topic, name, types in (
            (camera_topic, "camera", _IMAGE_TYPES),
            (instruction_topic, "instruction", _STRING_TYPES),
            (action_topic, "action", _STRING_TYPES),
            (odom_topic, "odom", _ODOM_TYPES),
            (result_topic, "result", _STRING_TYPES),
        )
    }
    if len(roles) < 5:
        raise ValueError("the camera, instruction, action, odom and result topics must differ")
    seen: dict[str, str] = {}
    for path in files:
        decoders: dict[int, Any] = {}  # per file: schema ids are only unique within one file
        for schema, channel, message in _read_messages(path):
            role = roles.get(_topic_key(channel.topic))
            schema_name = schema.name if schema is not None else "(no schema)"
            seen[channel.topic] = schema_name
            if role is None:
                continue
            name, types = role
            if schema_name not in types:
                raise ValueError(
                    f"{channel.topic} carries {schema_name}, expected {types[0]} for the {name}"
                )
            if channel.id not in decoders:
                decoders[channel.id] = _decoder(channel, schema)
            try:
                msg = decoders[channel.id](message.data)
            except Exception as error:  # any CDR failure is one bad message, not a bad bag
                replay.skip("undecodable_messages", f"{channel.topic}: {error}")
                continue
            log_ns = message.log_time
            if name == "camera":
                replay.on_image(msg, log_ns)
            elif name == "instruction":
                replay.on_instruction(msg.data, log_ns)
            elif name == "action":
                replay.on_action(msg.data, log_ns)
            elif name == "odom":
                replay.on_odom(msg)
            else:
                replay.on_action_result(msg.data)
    replay.finish("end_of_bag")
    for topic in (camera_topic, instruction_topic, action_topic):
        if not any(_topic_key(topic) == _topic_key(t) for t in seen):
            raise ValueError(
                f"{bag_path} has no {topic!r} topic; it has: "
                + ", ".join(f"{t} ({s})" for t, s in sorted(seen.items()))
            )
    if replay.skipped:
        log.warning(
            "%s: skipped %s",
            bag_name,
            ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in replay.skipped.items()),
        )
    _merge_index(out_dir, replay.entries, frame_hz, replay.camera)
    return replay.entries


def cmd_import_bag(args: argparse.Namespace) -> int:
    entries = import_mcap(
        args.bag,
        args.out,
        camera_topic=args.camera_topic,
        instruction_topic=args.instruction_topic,
        action_topic=args.action_topic,
        frame_hz=args.frame_hz,
        image_format=args.image_format,
        odom_topic=args.odom_topic,
        result_topic=args.result_topic,
    )
    frames = sum(e["num_frames"] for e in entries)
    actions = sum(e["num_actions"] for e in entries)
    print(f"{len(entries)} episodes, {frames} frames, {actions} actions -> {args.out}")
    return 0


def add_import_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register `nvila-core import-bag BAG --out DIR` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "import-bag", help="turn a rosbag2 MCAP recording into training episodes"
    )
    parser.add_argument("bag", help="an .mcap file or a rosbag2 folder")
    parser.add_argument("--out", required=True, help="dataset folder (index.json is appended)")
    parser.add_argument("--camera-topic", default="rgb")
    parser.add_argument("--instruction-topic", default="instruction")
    parser.add_argument("--action-topic", default="action")
    parser.add_argument("--odom-topic", default="odom", help="optional: poses")
    parser.add_argument("--result-topic", default="action_result", help="optional: results")
    parser.add_argument("--frame-hz", type=float, default=2.0, help="kept frame rate")
    parser.add_argument("--image-format", choices=IMAGE_FORMATS, default="jpg")
    parser.set_defaults(handler=cmd_import_bag)
    return parser
