"""nvila-nav-agreement: per-step answers of several models on expert rollouts."""

import json

import pytest

from nvila_nav import agreement
from nvila_nav.actions import Action
from nvila_nav.agreement import ModelSpec, StepRecord, summarize
from nvila_nav.sim.env import RenderingUnavailable
from nvila_nav.sim.episodes import generate_episodes, write_episodes


def test_model_specs_parse_name_path_and_backend():
    assert ModelSpec.parse("q=out/deploy:onnxruntime") == ModelSpec(
        "q", "out/deploy", "onnxruntime"
    )
    assert ModelSpec.parse("fp32=models/navila-nano").backend == "torch"
    with pytest.raises(ValueError, match="NAME=PATH"):
        ModelSpec.parse("models/navila-nano")


def test_summary_counts_agreement_with_the_reference_and_the_expert():
    fwd, left, stop = Action.forward(75), Action.left(30), Action.stop()

    def step(k, expert, ref, q):
        texts = {n: "?" if a is None else a.to_answer() for n, a in (("ref", ref), ("q", q))}
        return StepRecord("e", k, expert, {"ref": ref, "q": q}, texts)

    records = [
        step(0, fwd, fwd, fwd),
        step(1, left, fwd, left),
        step(2, stop, None, None),  # unparseable agrees with nothing
        step(3, stop, stop, stop),
    ]
    summary = summarize(records, "ref")
    assert summary["q"]["agreement_with_reference"] == 0.5
    assert summary["q"]["agreement_with_expert"] == 0.75
    assert summary["ref"]["agreement_with_reference"] == 0.75
    assert summary["ref"]["agreement_with_expert"] == 0.5
    assert summary["q"]["same_text_as_reference"] == 0.75


@pytest.mark.parametrize("decoding", ["generate", "choose", "choose_kind"])
def test_the_same_model_twice_agrees_with_itself_on_a_rendered_rollout(tmp_path, capsys, decoding):
    episodes = write_episodes(tmp_path / "eps.json.gz", generate_episodes("val_unseen", 1, seed=2))
    args = ["--model", "a=tiny", "--model", "b=tiny", "--episodes", str(episodes)]
    args += ["--width", "64", "--height", "48", "--out", str(tmp_path / "out")]
    args += ["--decoding", decoding]
    try:
        assert agreement.main(args) == 0
    except RenderingUnavailable as error:
        pytest.skip(str(error))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # the tiny preset has random weights, so its answers need not parse; the texts must match
    assert summary["b"]["same_text_as_reference"] == 1.0
    rows = (tmp_path / "out" / "steps.csv").read_text().splitlines()
    assert rows[0] == "episode_id,step,expert,a,b" and len(rows) - 1 == summary["a"]["steps"] > 5
    assert "= a" in capsys.readouterr().out
    if decoding != "generate":  # always one of the ten actions, so the two copies agree on actions
        assert summary["b"]["agreement_with_reference"] == 1.0
        assert all(row.split(",")[3] for row in rows[1:])
