"""nvila-nav-landmark-probe: linear probes of a model's visual tokens on simulator views."""

import json

import numpy as np
import pytest

from nvila_nav import landmark_probe
from nvila_nav.sim.captions import write_caption_dataset
from nvila_nav.sim.env import RenderingUnavailable
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.robot import CameraConfig
from nvila_nav.sim.sight import landmarks_in_view
from nvila_nav.sim.world import world_for_scene


def test_probe_separates_separable_classes_and_majority_counts():
    rng = np.random.default_rng(0)
    labels = ["red", "blue", "green"] * 40
    centres = {"red": (0.0, 0.0), "blue": (4.0, 0.0), "green": (0.0, 4.0)}
    x = np.array([np.add(centres[c], rng.normal(0, 0.3, 2)) for c in labels])
    accuracy = landmark_probe.probe_accuracy(x[:90], labels[:90], x[90:], labels[90:])
    assert accuracy == 1.0
    shuffled = list(rng.permutation(labels))
    noise = landmark_probe.probe_accuracy(x[:90], shuffled[:90], x[90:], shuffled[90:])
    assert noise < 0.7
    assert landmark_probe.majority(["a", "a", "b"], ["a", "b", "b", "b"]) == 0.25


def test_report_on_rendered_views(tmp_path, capsys):
    try:
        train = write_caption_dataset(
            tmp_path / "train", "train", 24, camera=CameraConfig(64, 48), task="where"
        )
        val = write_caption_dataset(
            tmp_path / "val", "val_unseen", 12, camera=CameraConfig(64, 48), task="where"
        )
    except RenderingUnavailable as error:
        pytest.skip(str(error))
    rows = landmark_probe.nearest_landmarks(train, 24, 3.0)
    for row in rows:  # the truth is the nearest landmark in view, within the distance
        record = next(r for r in json.loads(train.read_text()) if row["image"].name in r["image"])
        world = world_for_scene(record["scene_id"])
        distance, name, _ = landmarks_in_view(world, Pose(*record["pose"]), 79.0)[0]
        assert distance <= 3.0 and name == f"{row['colour']} {row['kind']}"
    out = tmp_path / "probe.json"
    args = ["--model", "tiny", "--train", str(train), "--val", str(val), "--out", str(out)]
    assert landmark_probe.main(args) == 0
    report = json.loads(out.read_text())
    assert report["train_views"] == len(rows) >= 4 and report["val_views"] >= 1
    for target in ("colour", "kind"):
        assert set(report[target]) == {"tokens", "thumbnail", "majority"}
        assert all(0.0 <= v <= 1.0 for v in report[target].values())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
