"""nvila-nav-close-ahead: readout and yes/no match questions about the landmark close ahead."""

import json
import math

import pytest

from nvila_nav import close_ahead
from nvila_nav.sim.captions import write_caption_dataset
from nvila_nav.sim.env import RenderingUnavailable
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.robot import CameraConfig
from nvila_nav.sim.sight import CLOSE_AHEAD, landmarks_in_view
from nvila_nav.sim.world import world_for_scene


def test_relation_names_how_the_question_relates_to_the_close_landmark():
    world = world_for_scene("nvsim/scene_1000")
    lm = next(lm for lm in world.landmarks if lm.kind != "door")
    ax, ay = lm.approach
    pose = Pose(ax, ay, math.atan2(lm.y - ay, lm.x - ax))
    close = [n for d, n, _ in landmarks_in_view(world, pose, 79.0) if d <= CLOSE_AHEAD]
    assert lm.name in close
    question = f"<image>\nIs the {lm.colour} {lm.kind} close ahead?"
    assert close_ahead.named_landmark(world, question) == lm
    assert close_ahead.relation(world, pose, question, 79.0) == "named"
    stated = f"<image>\nClose ahead: the {lm.colour} {lm.kind}. Is the {lm.colour} {lm.kind} close ahead?"
    assert close_ahead.named_landmark(world, stated) == lm  # the compare file's questions
    nearest = world.landmark(close[0])
    for other in world.landmarks:
        if other.name in close:
            continue
        expected = (
            "same kind"
            if other.kind == nearest.kind
            else "same colour"
            if other.colour == nearest.colour
            else "other"
        )
        text = f"<image>\nIs the {other.colour} {other.kind} close ahead?"
        assert close_ahead.relation(world, pose, text, 79.0) == expected
    behind = Pose(pose.x, pose.y, pose.yaw + math.pi)
    if not [d for d, _, _ in landmarks_in_view(world, behind, 79.0) if d <= CLOSE_AHEAD]:
        assert close_ahead.relation(world, behind, question, 79.0) == "none close"
    with pytest.raises(ValueError, match="not a match question"):
        close_ahead.named_landmark(world, "Where is the red chair?")


def _rendered(folder, task, n=10):
    try:
        return write_caption_dataset(
            folder, "val_unseen", n, camera=CameraConfig(64, 48), task=task
        )
    except RenderingUnavailable as error:
        pytest.skip(str(error))


def _report(data, out):
    """nvila-nav-close-ahead on `data` with the tiny random model; its JSON report."""
    assert close_ahead.main(["--model", "tiny", "--data", str(data), "--out", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("task", ["match", "compare"])
def test_report_on_rendered_questions(tmp_path, capsys, task):
    data = _rendered(tmp_path, task)
    records = json.loads(data.read_text())
    report = _report(data, tmp_path / "report.json")
    assert report["questions"] == len(records)
    assert report["pairs"] == sum(r["conversations"][1]["value"] == "Yes." for r in records)
    assert sum(v["n"] for v in report["by_relation"].values()) == len(records)
    assert 0.0 <= report["accuracy"] <= 1.0 and 0.0 <= report["p_yes_when_no"] <= 1.0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report


def test_readout_report_on_rendered_questions(tmp_path):
    data = _rendered(tmp_path, "readout")
    records = json.loads(data.read_text())
    report = _report(data, tmp_path / "report.json")
    close = sum(r["conversations"][1]["value"] != "Nothing." for r in records)
    assert report["questions"] == len(records) == 10 and report["close"] == close
    assert all(report[k] is None or 0.0 <= report[k] <= 1.0 for k in ("landmark", "colour"))
    match = _rendered(tmp_path / "m", "match", n=2)
    with pytest.raises(ValueError, match="not a readout record"):
        close_ahead.score_readout(None, match, 2)
