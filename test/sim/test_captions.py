"""Captions: true statements about the view, and the LLaVA-format caption dataset."""

import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from nvila_core.model.prompting import names_verdict
from nvila_nav.sim import cli
from nvila_nav.sim.captions import (
    PROMPT,
    ask_compare,
    ask_match,
    ask_where,
    close_view_poses,
    describe_view,
    random_view_poses,
    read_out,
    readout_answer,
    stop_statement,
    write_caption_dataset,
)
from nvila_nav.sim.env import RenderingUnavailable, Simulator
from nvila_nav.sim.furniture import KINDS
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.navgrid import ROBOT_RADIUS
from nvila_nav.sim.robot import CameraConfig
from nvila_nav.sim.sight import CAMERA_FORWARD, CLOSE_AHEAD, landmarks_in_view
from nvila_nav.sim.world import world_for_scene

HFOV = 79.0
SCENE = "nvsim/scene_1000"


@pytest.fixture(scope="module")
def world():
    return world_for_scene(SCENE)


def _facing(x, y, lm):
    return Pose(x, y, math.atan2(lm.y - y, lm.x - x))


def test_landmark_in_front_is_ahead_and_gone_when_turned_around(world):
    furniture = [lm for lm in world.landmarks if lm.kind != "door"]
    assert len(furniture) >= 10
    for lm in furniture:
        pose = _facing(*lm.approach, lm)
        caption = describe_view(world, pose, HFOV)
        # The approach point is 0.9 m in front of the landmark; the camera is 0.2 m nearer.
        assert re.search(rf"the {lm.name} ahead, (0\.5|1) m", caption), caption
        turned = Pose(pose.x, pose.y, pose.yaw + math.pi)
        assert lm.name not in describe_view(world, turned, HFOV)


def test_landmark_behind_a_wall_is_not_listed(world):
    nav = world.nav
    rows, cols = np.nonzero(nav.clearance >= ROBOT_RADIUS)
    checked = 0
    for lm in world.landmarks:
        for i, j in zip(rows[::37], cols[::37], strict=True):
            x, y = nav.centre(i, j)
            room = world.room_at(x, y)
            pose = _facing(x, y, lm)
            cam = (x + CAMERA_FORWARD * math.cos(pose.yaw), y + CAMERA_FORWARD * math.sin(pose.yaw))
            if (
                room is None
                or room.index == lm.room
                or math.dist((x, y), (lm.x, lm.y)) > 6
                or nav.visible(cam, (lm.x, lm.y))
            ):
                continue
            assert lm.name not in describe_view(world, pose, HFOV)
            checked += 1
    assert checked > 50


def test_clear_ahead_is_shorter_facing_a_near_wall(world):
    hall = next(r for r in world.rooms if r.name == "hallway").rect
    x, y = hall.x0 + 0.6, (hall.y0 + hall.y1) / 2
    assert world.nav.clearance_at(x, y) >= ROBOT_RADIUS

    def clear(yaw):
        caption = describe_view(world, Pose(x, y, yaw), HFOV)
        match = re.search(r"Clear ahead for ([\d.]+) m\.", caption)
        return float(match.group(1)) if match else 0.0

    assert clear(math.pi) <= 0.5  # the hallway's end wall, 0.54 m from the base centre
    assert clear(0.0) >= 4.0  # down the hallway's length


def test_caption_names_the_room_and_camera_offset_matches_the_model(world):
    lm = next(lm for lm in world.landmarks if lm.kind == "bed")
    caption = describe_view(world, _facing(*lm.approach, lm), HFOV)
    assert caption.startswith(f"In the {world.rooms[lm.room].name}. ")
    with Simulator(CameraConfig(64, 48)) as sim:
        sim.load_scene(SCENE)
        assert sim.model.camera("head").pos[0] == pytest.approx(CAMERA_FORWARD)


def test_random_poses_fit_the_robot_and_more_poses_only_append(world):
    poses = random_view_poses(world, 50, np.random.default_rng(3))
    assert all(world.nav.clearance_at(p.x, p.y) >= ROBOT_RADIUS for p in poses)
    assert len({world.room_at(p.x, p.y).index for p in poses if world.room_at(p.x, p.y)}) >= 4
    assert random_view_poses(world, 20, np.random.default_rng(3)) == poses[:20]


def test_cli_captions_defaults_to_320x240_without_frame_rate():
    args = cli.build_parser().parse_args(["captions", "--split", "train", "--n", "3", "--out", "x"])
    assert (args.width, args.height, args.hfov) == (320, 240, HFOV)
    assert not hasattr(args, "frame_hz")
    assert not (args.where or args.match or args.readout or args.compare or args.copy)  # captions
    base = ["captions", "--split", "train", "--n", "3", "--out", "x"]
    for flag, dest in (
        ("--questions", "where"),
        ("--match", "match"),
        ("--readout", "readout"),
        ("--compare", "compare"),
        ("--copy", "copy"),
    ):
        assert getattr(cli.build_parser().parse_args([*base, flag]), dest)
    with pytest.raises(SystemExit):  # one question file at a time
        cli.build_parser().parse_args([*base, "--match", "--readout"])


def test_caption_dataset_is_llava_json_matching_describe_view(tmp_path):
    try:
        path = write_caption_dataset(tmp_path, "val_unseen", 4, seed=1, camera=CameraConfig(64, 48))
    except RenderingUnavailable as exc:
        pytest.skip(str(exc))
    records = json.loads(path.read_text())
    assert len(records) == 4 and len({r["id"] for r in records}) == 4
    for r in records:
        human, gpt = r["conversations"]
        assert human == {"from": "human", "value": PROMPT}
        assert gpt["from"] == "gpt"
        assert r["id"].startswith(r["scene_id"] + "/")
        world = world_for_scene(r["scene_id"])
        assert gpt["value"] == describe_view(world, Pose(*r["pose"]), HFOV)
        with Image.open(path.parent / r["image"]) as im:
            assert im.format == "JPEG" and im.size == (64, 48)
    assert len({r["scene_id"] for r in records}) == 4


def test_where_questions_answer_from_the_view_and_the_name(world):
    rng = np.random.default_rng(0)
    answers = []
    for pose in close_view_poses(world, 60, rng) + random_view_poses(world, 60, rng):
        question, answer = ask_where(world, pose, HFOV, rng)
        match = re.fullmatch(r"<image>\nWhere is the (\w+) ([\w ]+)\?", question)
        assert match, question
        colour, noun = match.groups()
        named = [
            lm for lm in world.landmarks if lm.colour == colour and noun in KINDS[lm.kind].nouns
        ]
        assert len(named) == 1
        seen = {name: (d, b) for d, name, b in landmarks_in_view(world, pose, HFOV)}
        if named[0].name in seen:
            assert re.fullmatch(r"(Ahead|On the (far )?(left|right)), \d+(\.5)? m\.", answer)
            assert (
                f"the {named[0].name} {answer[0].lower()}{answer[1:-1]}"
                in describe_view(world, pose, HFOV)
                or len(seen) > 4
            )  # captions list the 4 nearest only
        else:
            assert answer == "Not in view."
        answers.append(answer)
    in_view = sum(a != "Not in view." for a in answers)
    assert 20 <= in_view <= 100  # both kinds of answer are common


def test_close_view_poses_fit_the_robot_and_face_a_landmark(world):
    poses = close_view_poses(world, 50, np.random.default_rng(1))
    assert len(poses) == 50
    for pose in poses:
        assert world.nav.clearance_at(pose.x, pose.y) >= ROBOT_RADIUS
    seen = [landmarks_in_view(world, p, HFOV) for p in poses]
    assert sum(bool(s) and s[0][0] < 2.5 for s in seen) >= 35  # mostly a landmark close ahead


def test_match_questions_pair_the_close_landmark_with_another(world):
    rng = np.random.default_rng(2)
    pairs = hard = 0
    for pose in close_view_poses(world, 80, rng) + random_view_poses(world, 20, rng):
        asked = ask_match(world, pose, HFOV, rng)
        close = {n for d, n, _ in landmarks_in_view(world, pose, HFOV) if d <= CLOSE_AHEAD}
        named = []
        for question, answer in asked:
            found = re.fullmatch(r"<image>\nIs the (\w+) ([\w ]+) close ahead\?", question)
            assert found, question
            colour, noun = found.groups()
            (lm,) = [
                lm for lm in world.landmarks if lm.colour == colour and noun in KINDS[lm.kind].nouns
            ]
            assert answer == ("Yes." if lm.name in close else "No.")
            named.append(lm)
        # a frame with a landmark close ahead is asked about it and about one that is not
        assert [a for _, a in asked] == (["Yes.", "No."] if close else ["No."])
        if close:
            pairs += 1
            hard += named[1].kind == named[0].kind or named[1].colour == named[0].colour
    assert pairs >= 40 and 0.25 * pairs <= hard <= 0.9 * pairs


def test_same_kind_negatives_differ_from_the_landmark_in_front_by_colour_alone(world):
    poses = close_view_poses(world, 60, np.random.default_rng(3))
    same = 0
    for k, pose in enumerate(poses):
        default = ask_match(world, pose, HFOV, np.random.default_rng(k))
        assert ask_match(world, pose, HFOV, np.random.default_rng(k), same_kind=0.0) == default
        asked = ask_match(world, pose, HFOV, np.random.default_rng(k), same_kind=1.0)
        if len(asked) < 2:
            continue
        (target,), (other,) = (
            [
                lm
                for lm in world.landmarks
                if re.search(rf"Is the {lm.colour} ({'|'.join(KINDS[lm.kind].nouns)}) close", q)
            ]
            for q, _ in asked
        )
        close = {n for d, n, _ in landmarks_in_view(world, pose, HFOV) if d <= CLOSE_AHEAD}
        if any(lm.kind == target.kind and lm.name not in close for lm in world.landmarks):
            assert other.kind == target.kind and other.colour != target.colour
            assert asked[1][1] == "No."
            same += 1
    assert same >= 20


def test_compare_questions_state_the_readout_before_the_match_question(world):
    poses = close_view_poses(world, 30, np.random.default_rng(5))
    for pose in poses:
        seed = int(1000 * pose.x) % 97
        matched = ask_match(world, pose, HFOV, np.random.default_rng(seed))
        compared = ask_compare(world, pose, HFOV, np.random.default_rng(seed))
        copied = ask_compare(world, pose, HFOV, np.random.default_rng(seed), copy=True)
        said = read_out(world, pose, HFOV)  # "The pink shelf." or "Nothing."
        stated = "Close ahead: " + said[0].lower() + said[1:]
        for (mq, ma), (cq, ca), (pq, pa) in zip(matched, compared, copied, strict=True):
            # the same name and truth as the match question, the readout written first
            assert cq == pq == mq.replace("<image>\n", f"<image>\n{stated} ") and ca == ma
            name = re.fullmatch(r".*Is the ([\w ]+) close ahead\?", mq, re.S).group(1)
            assert pa == f"{stated} Asked: the {name}."
    assert any(read_out(world, p, HFOV) != "Nothing." for p in poses)


def test_match_dataset_asks_each_close_frame_twice(tmp_path):
    try:
        path = write_caption_dataset(
            tmp_path, "val_unseen", 12, seed=1, camera=CameraConfig(64, 48), task="match"
        )
    except RenderingUnavailable as exc:
        pytest.skip(str(exc))
    assert path.name == "match.json"
    with pytest.raises(ValueError, match="same_kind is a probability"):
        write_caption_dataset(tmp_path / "bad", "val_unseen", 2, task="match", same_kind=1.5)
    records = json.loads(path.read_text())
    by_frame: dict[str, list[str]] = {}
    for r in records:
        by_frame.setdefault(r["image"], []).append(r["conversations"][1]["value"])
        assert (tmp_path / r["image"]).is_file()
    assert len(by_frame) == 12 and len({r["id"] for r in records}) == len(records)
    assert all(answers in (["Yes.", "No."], ["No."]) for answers in by_frame.values())
    with pytest.raises(ValueError, match="unknown task"):
        write_caption_dataset(tmp_path, "val_unseen", 1, task="riddles")


def test_readout_names_the_nearest_close_landmark(world):
    rng = np.random.default_rng(4)
    said = set()
    for pose in close_view_poses(world, 40, rng) + random_view_poses(world, 20, rng):
        close = [n for d, n, _ in landmarks_in_view(world, pose, HFOV) if d <= CLOSE_AHEAD]
        answer = read_out(world, pose, HFOV)
        if close:
            lm = world.landmark(close[0])
            assert answer == f"The {lm.colour} {KINDS[lm.kind].nouns[0]}."
        else:
            assert answer == "Nothing."
        said.add(answer == "Nothing.")
    assert said == {True, False}
    # at a piece of furniture's stopping point, facing it: a landmark within 2 m is named (a door's
    # stopping point is the doorway itself, from where the door is not ahead)
    for lm in (lm for lm in world.landmarks if lm.kind != "door"):
        ax, ay = lm.approach
        answer = read_out(world, _facing(ax, ay, lm), HFOV)
        named = [
            o for o in world.landmarks if answer == f"The {o.colour} {KINDS[o.kind].nouns[0]}."
        ]
        assert len(named) == 1 and named[0].footprint.distance_to(ax, ay) <= CLOSE_AHEAD + 0.3


def test_statement_names_the_goal_when_it_is_close_ahead_behind_a_nearer_landmark(world):
    """The names verdict ("Yes." iff the two names are equal) must agree with every statement:
    with two landmarks close ahead, the goal is the one stated, even when it is the farther."""
    rng = np.random.default_rng(5)
    poses = close_view_poses(world, 300, rng) + random_view_poses(world, 100, rng)
    two_close = 0
    for pose in poses:
        close = [n for d, n, _ in landmarks_in_view(world, pose, HFOV) if d <= CLOSE_AHEAD]
        for goal in world.landmarks:
            said = stop_statement(world, pose, HFOV, goal)
            assert names_verdict(said) == said
            assert said.endswith("Yes.") == (goal.name in close)
        if len(close) >= 2:
            two_close += 1
            farther = world.landmark(close[1])
            said = stop_statement(world, pose, HFOV, farther)
            named = readout_answer(farther).removesuffix(".").lower()
            assert said.startswith(f"Close ahead: {named}.") and said.endswith("Yes.")
            other = next(lm for lm in world.landmarks if lm.name not in close)
            assert stop_statement(world, pose, HFOV, other).startswith(
                f"Close ahead: {readout_answer(world.landmark(close[0])).removesuffix('.').lower()}."
            )
    assert two_close >= 3
