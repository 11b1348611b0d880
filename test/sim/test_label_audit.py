"""The label audit: cues a model could read, and a held-out classifier score against the prior."""

import numpy as np

from nvila_nav.sim.label_audit import LABELS, collect, fit_and_score, instruction_cues


def test_instruction_cues_read_the_first_clause_only():
    assert instruction_cues("Turn around to your left. Walk past the sofa.") == [1, 0, 1, 0]
    assert instruction_cues("Turn slightly right, then turn left at the door.") == [0, 1, 0, 1]
    assert instruction_cues("Walk forward, then turn left.") == [0, 0, 0, 0]


def test_audit_scores_a_classifier_on_held_out_episodes():
    x, y, groups = collect(6, perturb=0.2, seed=1)
    assert len(x) == len(y) == len(groups) and x.shape[1] > 40
    assert set(np.unique(groups)) == set(range(6))
    assert y.min() >= 0 and y.max() < len(LABELS)
    result = fit_and_score(x, y, groups)
    assert 0 < result["test_decisions"] < result["decisions"]
    assert 0.0 <= result["prior_accuracy"] <= result["prior_kind_accuracy"] <= 1.0
    assert abs(sum(result["label_shares"].values()) - 1.0) < 1e-3
    stops = (result["stop_recall"], result["stop_precision"])
    assert all(v is None or 0.0 <= v <= 1.0 for v in stops)


def test_audit_of_the_approach_cone_expert_changes_the_last_metres_only_where_needed():
    plain = collect(6, perturb=0.0, seed=1)
    cone = collect(6, perturb=0.0, seed=1, approach=True)
    changed = 0
    for g in range(6):
        before, after = plain[1][plain[2] == g], cone[1][cone[2] == g]
        assert before[-1] == after[-1] == LABELS.index("stop")  # both end with the stop
        changed += len(before) != len(after) or bool((before != after).any())
    assert 0 < changed < 6
