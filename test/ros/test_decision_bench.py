"""nvila-nav-decision-bench: real navigator and controller processes, navila-nano deciding."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest

from nvila_core.export import exporter
from nvila_nav import bench
from nvila_nav.faults.decision_bench import Variant, main


def test_variant_parsing():
    assert Variant.parse("nano=models/navila-nano") == Variant("nano", "models/navila-nano")
    assert Variant.parse("ort=out/x:onnxruntime") == Variant("ort", "out/x", "onnxruntime")
    with pytest.raises(Exception, match="LABEL=MODEL"):
        Variant.parse("models/navila-nano")


def test_bench_times_each_decision_from_frame_to_first_motion(tmp_path, ros_domain_id):
    out = tmp_path / "bench"
    args = ["--decisions", "3", "--warmup", "1", "--threads", "1", "--camera", "160x120"]
    assert main([*args, "--out", str(out), "--domain-id", str(ros_domain_id)]) == 0
    rows = list(csv.DictReader((out / "decision_bench.csv").open()))
    assert len(rows) == 3
    for row in rows:
        parts = [float(row[f"{p}_s"]) for p in ("frame_wait", "model")]
        assert all(0.0 <= p < 10.0 for p in parts)
        if row["action"] != "stop":  # a move or turn: the base was driven after the action
            total = float(row["total_s"])
            assert math.isclose(total, sum(parts) + float(row["controller_s"]), rel_tol=1e-9)
        # the navigator's own timing of the same decision, at most the time we saw
        assert 0.0 < float(row["navigator_latency_ms"]) / 1e3 <= float(row["model_s"]) + 0.05
    summary = json.loads((out / "decision_bench.json").read_text())["navila-nano torch fp32"]
    assert summary["decisions"] == 3 and summary["model_ms"] > 0
    # the same query timed in a process of its own: a real decide, cheaper than the graph's
    assert 0.0 < summary["policy_alone_ms"] <= summary["model_ms"] + 50.0
    assert (out / "decision_bench.png").stat().st_size > 0


def test_make_bench_variants_export_onnx_once_and_run_it_through_the_graph(
    tmp_path, ros_domain_id, monkeypatch
):
    monkeypatch.setattr(bench, "DEPLOYED", tmp_path / "absent")
    variants = bench.decision_variants(tmp_path, navila_shaped=False)
    assert variants[0] == f"torch fp32={bench.NANO}:torch" and len(variants) == 2
    assert (tmp_path / "exports" / "navila-nano-fp32" / "export.json").is_file()
    assert bench.decision_variants(tmp_path, navila_shaped=False) == variants  # exported once
    out = tmp_path / "bench"
    args = ["--variant", variants[1], "--decisions", "2", "--warmup", "0", "--threads", "1"]
    assert main([*args, "--out", str(out), "--domain-id", str(ros_domain_id)]) == 0
    summary = json.loads((out / "decision_bench.json").read_text())
    assert summary["ORT fp32"]["decisions"] == 2 and summary["ORT fp32"]["model_ms"] > 0
    assert summary["ORT fp32"]["policy_alone_ms"] > 0


def test_an_export_older_than_the_models_weights_is_not_current(tmp_path):
    model, export = tmp_path / "model", tmp_path / "export"
    for part in ("llm", "vision_tower"):
        (model / part).mkdir(parents=True)
        (model / part / "model.safetensors").write_bytes(b"")
    assert not bench.export_is_current(export, model)  # none written yet
    export.mkdir()
    metadata = {"format": exporter.FORMAT, "format_version": exporter.FORMAT_VERSION}
    (export / "export.json").write_text(json.dumps(metadata))
    os.utime(model / "llm" / "model.safetensors", (1000, 1000))
    os.utime(model / "vision_tower" / "model.safetensors", (1000, 1000))
    os.utime(export / "export.json", (2000, 2000))
    assert bench.export_is_current(export, model)
    os.utime(model / "llm" / "model.safetensors", (3000, 3000))  # the model was retrained
    assert not bench.export_is_current(export, model)
    os.utime(model / "llm" / "model.safetensors", (1000, 1000))
    metadata["format_version"] -= 1  # written by an older nvila-core
    (export / "export.json").write_text(json.dumps(metadata))
    os.utime(export / "export.json", (2000, 2000))
    assert not bench.export_is_current(export, model)
