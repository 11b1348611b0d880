"""Robot recordings -> training episodes: a real rosbag2-style MCAP bag written here, imported back.

The bag holds what `ros2 bag record` would store for a navigator run: 10 Hz camera frames (rgb8
and bgr8, one with padded rows, one truncated, one with a zero header stamp), two instructions,
actions, a stop, odometry and action results, with ros2msg schemas as rosbag2 writes them.
"""

import json
import logging
import types
from pathlib import Path

import numpy as np
import pytest
from mcap_ros2.writer import Writer
from PIL import Image

from nvila_core.train.mcap_import import (
    FORMAT,
    MalformedImageError,
    add_import_cli,
    image_to_rgb,
    import_mcap,
    parse_action,
)

SEP = "\n" + "=" * 80 + "\n"
TIME_MSG = """# This message communicates ROS Time defined here:
# https://design.ros2.org/articles/clock_and_time.html

# The seconds component, valid over all int32 values.
int32 sec

# The nanoseconds component, valid in the range [0, 1e9).
uint32 nanosec
"""
HEADER_MSG = """# Standard metadata for higher-level stamped data types.
# This is generally used to communicate timestamped data
# in a particular coordinate frame.

# Two-integer timestamp that is expressed as seconds and nanoseconds.
builtin_interfaces/Time stamp

# Transform frame with which this data is associated.
string frame_id
"""
IMAGE_SCHEMA = (
    """# This message contains an uncompressed image
# (0, 0) is at top-left corner of image

std_msgs/Header header # Header timestamp should be acquisition time of image

uint32 height                # image height, that is, number of rows
uint32 width                 # image width, that is, number of columns

string encoding       # Encoding of pixels -- channel meaning, ordering, size

uint8 is_bigendian    # is this data bigendian?
uint32 step           # Full row length in bytes
uint8[] data          # actual matrix data, size is (step * rows)
"""
    + SEP
    + "MSG: std_msgs/Header\n"
    + HEADER_MSG
    + SEP
    + "MSG: builtin_interfaces/Time\n"
    + TIME_MSG
)
STRING_SCHEMA = "# This was originally provided as an example message.\n\nstring data\n"
ODOM_SCHEMA = SEP.join(
    [
        "std_msgs/Header header\nstring child_frame_id\n"
        "geometry_msgs/PoseWithCovariance pose\ngeometry_msgs/TwistWithCovariance twist\n",
        "MSG: std_msgs/Header\n" + HEADER_MSG,
        "MSG: builtin_interfaces/Time\n" + TIME_MSG,
        "MSG: geometry_msgs/PoseWithCovariance\nPose pose\nfloat64[36] covariance\n",
        "MSG: geometry_msgs/Pose\nPoint position\nQuaternion orientation\n",
        "MSG: geometry_msgs/Point\nfloat64 x\nfloat64 y\nfloat64 z\n",
        "MSG: geometry_msgs/Quaternion\nfloat64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1\n",
        "MSG: geometry_msgs/TwistWithCovariance\nTwist twist\nfloat64[36] covariance\n",
        "MSG: geometry_msgs/Twist\nVector3  linear\nVector3  angular\n",
        "MSG: geometry_msgs/Vector3\nfloat64 x\nfloat64 y\nfloat64 z\n",
    ]
)

T0_NS = 1_700_000_000 * 10**9
FRAME_LATENCY_NS = 20_000_000  # the recorder logs each frame 20 ms after its header stamp
H, W = 12, 16
BGR_FRAMES = {31, 35}  # frame 35 also has padded rows
PADDED_FRAME, TRUNCATED_FRAME, ZERO_STAMP_FRAME = 35, 34, 42


def picture(k: int) -> np.ndarray:
    """Frame k: red = 4k names the frame, green/blue gradients pin down rows and columns."""
    rgb = np.empty((H, W, 3), np.uint8)
    rgb[..., 0] = 4 * k
    rgb[..., 1] = (np.arange(H) * 20)[:, None]
    rgb[..., 2] = (np.arange(W) * 15)[None, :]
    return rgb


def image_msg(k: int, stamp_ns: int) -> dict:
    rgb = picture(k)
    encoding = "bgr8" if k in BGR_FRAMES else "rgb8"
    pixels = rgb[..., ::-1] if encoding == "bgr8" else rgb
    step = W * 3 + (5 if k == PADDED_FRAME else 0)
    rows = np.zeros((H, step), np.uint8)
    rows[:, : W * 3] = pixels.reshape(H, W * 3)
    data = rows.tobytes()
    if k == TRUNCATED_FRAME:
        data = data[: len(data) // 2]
    return {
        "header": {
            "stamp": {"sec": stamp_ns // 10**9, "nanosec": stamp_ns % 10**9},
            "frame_id": "camera",
        },
        "height": H,
        "width": W,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": step,
        "data": data,
    }


def odom_msg(t: float) -> dict:
    yaw = 0.1 * t
    return {
        "header": {"stamp": {"sec": 0, "nanosec": 0}, "frame_id": "odom"},
        "child_frame_id": "base_link",
        "pose": {
            "pose": {
                "position": {"x": 0.5 * t, "y": 0.0, "z": 0.0},
                "orientation": {"x": 0.0, "y": 0.0, "z": np.sin(yaw / 2), "w": np.cos(yaw / 2)},
            },
            "covariance": [0.0] * 36,
        },
        "twist": {
            "twist": {"linear": {"x": 0, "y": 0, "z": 0}, "angular": {"x": 0, "y": 0, "z": 0}},
            "covariance": [0.0] * 36,
        },
    }


def at(seconds: float) -> int:
    return T0_NS + round(seconds * 1e9)


# (log time in s after T0, topic, text): what the operator, navigator and controller published.
STRINGS = [
    (0.05, "/instruction", "Walk to the kitchen."),
    (0.75, "/action", "move forward 75 cm"),
    (1.40, "/action_result", "succeeded move forward 75 cm"),
    (1.53, "/action", "turn left 30 degrees"),
    (1.60, "/action", "dance a little"),
    (2.03, "/action", "stop"),
    (2.50, "/action", "move forward 25 cm"),  # no instruction is active: dropped
    (3.04, "/instruction", "Turn around and stop at the door."),
    (3.05, "/action", "stop"),  # the navigator stopping the preempted instruction
    (3.57, "/action", "turn right 45 degrees"),
    (4.26, "/action", "The next action is move forward 50 cm."),
]


def write_bag(path: Path, chunk_size: int = 1024 * 1024) -> Path:
    """Frames 0..60 at 10 Hz (t = k / 10 s), odometry just before each, the strings above."""
    records = []
    for k in range(61):
        stamp = at(k / 10)
        if k == ZERO_STAMP_FRAME:  # a driver without stamps: the importer uses the log time
            records.append((stamp + FRAME_LATENCY_NS, "/rgb", image_msg(k, 0)))
        else:
            records.append((stamp + FRAME_LATENCY_NS, "/rgb", image_msg(k, stamp)))
        records.append((stamp + 10_000_000, "/odom", odom_msg(k / 10)))
    records += [(at(t), topic, {"data": text}) for t, topic, text in STRINGS]
    records.sort(key=lambda r: r[0])
    with path.open("wb") as stream, Writer(stream, chunk_size=chunk_size) as writer:
        schemas = {
            "/rgb": writer.register_msgdef("sensor_msgs/msg/Image", IMAGE_SCHEMA),
            "/odom": writer.register_msgdef("nav_msgs/msg/Odometry", ODOM_SCHEMA),
        }
        string = writer.register_msgdef("std_msgs/msg/String", STRING_SCHEMA)
        for log_ns, topic, msg in records:
            writer.write_message(topic, schemas.get(topic, string), msg, log_time=log_ns)
    return path


@pytest.fixture
def bag(tmp_path) -> Path:
    return write_bag(tmp_path / "walk.mcap")


def load(out: Path) -> tuple[dict, list[dict]]:
    index = json.loads((out / "index.json").read_text())
    metas = [json.loads((out / e["dir"] / "meta.json").read_text()) for e in index["episodes"]]
    return index, metas


def red_of(folder: Path, frame: dict) -> int:
    """Which source frame was written: its red level / 4."""
    return int(np.asarray(Image.open(folder / frame["file"]))[0, 0, 0]) // 4


def test_import_splits_episodes_keeps_2hz_frames_and_aligns_actions(bag, tmp_path, caplog):
    out = tmp_path / "data"
    with caplog.at_level(logging.WARNING):
        entries = import_mcap(bag, out, image_format="png")

    index, (first, second) = load(out)
    assert index["format"] == FORMAT and index["version"] == 1 and index["frame_hz"] == 2.0
    assert index["episodes"] == entries
    assert [e["episode_id"] for e in entries] == ["walk-0000", "walk-0001"]
    assert {e["scene_id"] for e in entries} == {"real:walk"}
    assert index["camera"] == {"topic": "rgb", "width": W, "height": H, "encoding": "rgb8"}

    # Episode 1 starts with frame 0 (the view when the instruction came), keeps 2 Hz frames and
    # also the frame current at 0.75 s (frame 7); it ends at the stop.
    folder = out / "walk-0000"
    assert first["instruction"] == "Walk to the kitchen."
    assert first["episode"]["episode_id"] == "walk-0000"
    assert first["episode"]["instruction"] == {"instruction_text": "Walk to the kitchen."}
    assert [red_of(folder, f) for f in first["frames"]] == [0, 5, 7, 10, 15, 20]
    assert [f["t"] for f in first["frames"]] == [0.0, 0.5, 0.7, 1.0, 1.5, 2.0]
    assert [f["file"] for f in first["frames"]][:2] == ["frames/000000.png", "frames/000001.png"]
    actions = first["actions"]
    assert [(a["text"], a["kind"], a["amount"], a["frame_index"]) for a in actions] == [
        ("move forward 75 cm", "forward", 75.0, 2),
        ("turn left 30 degrees", "turn_left", 30.0, 4),
        ("stop", "stop", 0.0, 5),
    ]
    # Action log times moved onto the camera clock (frames are logged 20 ms after their stamp).
    assert [a["t"] for a in actions] == pytest.approx([0.73, 1.51, 2.01])
    assert actions[0]["result"] == "succeeded" and "result" not in actions[1]
    assert first["frames"][1]["pose"] == pytest.approx([0.25, 0.0, 0.05])
    assert actions[0]["pose"] == pytest.approx([0.35, 0.0, 0.07])
    assert first["result"] == {"success": True, "stopped": True, "ended_by": "stop"}
    assert entries[0]["num_frames"] == 6 and entries[0]["num_actions"] == 3

    # Episode 2: frame 30, then 35 (bgr8 and padded; 34 was truncated), 40, the zero-stamped
    # frame 42 current at 4.26 s (stamped by its log time, 4.22 s), then 2 Hz to the bag's end.
    folder = out / "walk-0001"
    assert [red_of(folder, f) for f in second["frames"]] == [30, 35, 40, 42, 45, 50, 55, 60]
    assert [f["t"] for f in second["frames"]] == pytest.approx(
        [0.0, 0.5, 1.0, 1.22, 1.5, 2.0, 2.5, 3.0]
    )
    assert [(a["text"], a["frame_index"]) for a in second["actions"]] == [
        ("turn right 45 degrees", 1),
        ("move forward 50 cm", 3),
    ]
    assert second["actions"][1]["t"] == pytest.approx(1.26)  # zero offset after frame 42
    assert second["result"]["ended_by"] == "end_of_bag" and entries[1]["success"] is False
    skipped = second["episode"]["info"]["skipped"]
    assert skipped == {"preemption_stops": 1, "malformed_images": 1}
    assert first["episode"]["info"]["skipped"] == {"unparseable_actions": 1}

    # Decoded pixels: bgr8 with padded rows comes out in RGB order with the right gradients.
    for k, frame in ((35, second["frames"][1]), (40, second["frames"][2])):
        np.testing.assert_array_equal(np.asarray(Image.open(folder / frame["file"])), picture(k))

    summary = [r.getMessage() for r in caplog.records if "skipped 1 unparseable" in r.getMessage()]
    assert summary and "1 malformed images" in summary[0]
    assert "1 actions outside episodes" in summary[0]


def test_written_dataset_round_trips_through_the_trainer_reader(bag, tmp_path):
    out = tmp_path / "data"
    import_mcap(bag, out)
    index, metas = load(out)
    for entry, meta in zip(index["episodes"], metas, strict=True):
        folder = out / entry["dir"]
        assert len(meta["frames"]) == entry["num_frames"]
        assert len(meta["actions"]) == entry["num_actions"]
        for frame in meta["frames"]:
            with Image.open(folder / frame["file"]) as im:
                assert im.format == "JPEG" and im.size == (W, H)
        for action in meta["actions"]:
            assert 0 <= action["frame_index"] < len(meta["frames"])
            assert meta["frames"][action["frame_index"]]["t"] <= action["t"]
            assert parse_action(action["text"])[:2] == (action["kind"], action["amount"])
        # JPEG keeps the colours of bgr8 frames in RGB order, within compression noise.
    rgb = np.asarray(Image.open(out / "walk-0001" / metas[1]["frames"][1]["file"]), dtype=int)
    assert abs(rgb[..., 0].mean() - 4 * 35) < 4


def test_reimport_replaces_and_other_bags_append(bag, tmp_path):
    out = tmp_path / "data"
    import_mcap(bag, out)
    import_mcap(bag, out)
    other = tmp_path / "rosbag2_2026_01_02" / "rosbag2_2026_01_02_0.mcap"
    other.parent.mkdir()
    write_bag(other)
    entries = import_mcap(other.parent, out)
    assert [e["episode_id"] for e in entries] == [
        "rosbag2_2026_01_02-0000",
        "rosbag2_2026_01_02-0001",
    ]
    index, _ = load(out)
    assert [e["episode_id"] for e in index["episodes"]] == [
        "walk-0000",
        "walk-0001",
        "rosbag2_2026_01_02-0000",
        "rosbag2_2026_01_02-0001",
    ]
    with pytest.raises(ValueError, match="Hz"):
        import_mcap(bag, out, frame_hz=4.0)


def test_bag_cut_short_is_read_up_to_where_it_stops(tmp_path, caplog):
    bag = write_bag(tmp_path / "cut.mcap", chunk_size=4096)
    data = bag.read_bytes()
    bag.write_bytes(data[: len(data) * 6 // 10])  # no summary, no footer, a torn chunk
    with caplog.at_level(logging.WARNING):
        entries = import_mcap(bag, tmp_path / "data")
    assert entries[0]["episode_id"] == "cut-0000" and entries[0]["num_actions"] == 3
    assert any("cut short" in r.getMessage() for r in caplog.records)


def test_missing_or_mistyped_topics_are_named(bag, tmp_path):
    with pytest.raises(ValueError, match=r"no '/front/rgb' topic.*/rgb \(sensor_msgs/msg/Image\)"):
        import_mcap(bag, tmp_path / "a", camera_topic="/front/rgb")
    with pytest.raises(ValueError, match="/odom carries nav_msgs/msg/Odometry, expected sensor"):
        import_mcap(bag, tmp_path / "b", camera_topic="odom", odom_topic="pose")
    with pytest.raises(ValueError, match="must differ"):
        import_mcap(bag, tmp_path / "c", action_topic="/instruction")


def test_cli_imports_a_bag(bag, tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    add_import_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["import-bag", str(bag), "--out", str(tmp_path / "d")])
    assert args.handler(args) == 0
    assert "2 episodes, 14 frames, 5 actions" in capsys.readouterr().out


def fields(rgb: np.ndarray, encoding: str, pad: int = 0) -> types.SimpleNamespace:
    stored = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
        "bgra8": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 9, np.uint8)]),
        "mono8": rgb[..., :1],
    }[encoding]
    h, w, c = stored.shape
    rows = np.zeros((h, w * c + pad), np.uint8)
    rows[:, : w * c] = stored.reshape(h, w * c)
    return types.SimpleNamespace(
        height=h, width=w, encoding=encoding, step=w * c + pad, data=rows.tobytes()
    )


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
@pytest.mark.parametrize("pad", [0, 3])
def test_image_encodings_and_padded_rows(encoding, pad):
    rgb = picture(7)
    if encoding == "mono8":
        rgb = np.repeat(rgb[..., 1:2], 3, axis=2)
    np.testing.assert_array_equal(image_to_rgb(fields(rgb, encoding, pad)), rgb)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"encoding": "yuv422"}, "unsupported encoding"),
        ({"height": 0}, "size must be positive"),
        ({"step": W * 3 - 1}, "step"),
        ({"data": b"\x00" * 10}, "data holds 10 bytes"),
    ],
)
def test_malformed_images_are_rejected(change, message):
    msg = fields(picture(1), "rgb8")
    for name, value in change.items():
        setattr(msg, name, value)
    with pytest.raises(MalformedImageError, match=message):
        image_to_rgb(msg)


def test_action_grammar():
    assert parse_action("move forward 75 cm") == ("forward", 75.0, "move forward 75 cm")
    assert parse_action("Turn Right 15 degrees.") == ("turn_right", 15.0, "turn right 15 degrees")
    assert parse_action("The next action is stop.") == ("stop", 0.0, "stop")
    for text in ("move forward 100 cm", "turn left 20 degrees", "dance", "move forward", ""):
        assert parse_action(text) is None
