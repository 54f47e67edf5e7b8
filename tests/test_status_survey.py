"""The status survey's drawing and bookkeeping (simulations/campaigns/status_survey.py), without solving."""

import math

from simulations.campaigns.status_survey import RANGES, draw_points, summarise


def test_points_are_reproducible_and_inside_the_ranges():
    a, b = draw_points(20, seed=1), draw_points(20, seed=1)
    assert a == b and draw_points(20, seed=2) != a
    for p in a:
        for name, (lo, hi, _) in RANGES.items():
            assert lo <= p[name] <= hi, (name, p[name])
        assert p["activation"] in ("softmax", "identity")


def test_summary_counts_statuses_gaps_and_wrong_branches():
    """Synthetic records with known answers: two statuses; one successful point whose sibling branch has a
    lower objective (must be listed); relative gaps (0.9 − 1)/1 = −10 % and (1.1 − 1)/1 = +10 %."""
    points = draw_points(3, seed=0)
    theory = {0: {"status": "converged", "converged": True, "test_error": 1.0, "alignment": 0.5, "objective": 0.3,
                  "branches": [{"objective": 0.2, "alignment": 0.1, "test_error": 2.0}]},
              1: {"status": "converged", "converged": True, "test_error": 1.0, "alignment": 0.5, "objective": 0.3,
                  "branches": [{"objective": 0.4, "alignment": 0.1, "test_error": 2.0}]},
              2: {"status": "max_iterations", "converged": False}}
    sims = {0: [{"test_error": 0.9, "alignment": 0.5, "status": "converged"}] * 2,
            1: [{"test_error": 1.1, "alignment": 0.5, "status": "converged"}] * 2}
    md, numbers = summarise(points, theory, sims)
    assert numbers["status_counts"] == {"converged": 2, "max_iterations": 1}
    assert numbers["wrong_branch"] == [0]
    assert numbers["n_compared"]["test_error"] == 2
    assert math.isclose(numbers["median_abs_rel_gap"]["test_error"], 0.1, rel_tol=1e-9)
    assert "| max_iterations | 1 |" in md
    assert numbers["unresolved_selection"] == []


def test_summary_lists_unresolved_selections_and_gives_no_relative_gap_to_zero():
    """A successful point whose message says the selection is not resolved is listed; a theory alignment of 0
    (the uninformative branch) gets the difference, not a relative gap, and is not counted in the gap statistics."""
    points = draw_points(1, seed=0)
    theory = {0: {"status": "converged", "converged": True, "test_error": 1.0, "alignment": 0.0, "objective": 0.3,
                  "message": "residual 1e-6; selection not resolved: another fixed point ...", "branches": []}}
    sims = {0: [{"test_error": 1.0, "alignment": 0.17, "status": "converged"}] * 2}
    md, numbers = summarise(points, theory, sims)
    assert numbers["unresolved_selection"] == [0]
    assert numbers["n_compared"]["alignment"] == 0 and numbers["n_compared"]["test_error"] == 1
    assert "(difference +0.17)" in md


def test_summary_reads_the_selection_field_of_new_records():
    """Records with ``selection_resolved`` are judged by the field, whatever their message says."""
    points = draw_points(2, seed=0)
    base = {"status": "converged", "converged": True, "test_error": 1.0, "alignment": 0.5, "objective": 0.3,
            "message": "residual 1e-6", "branches": []}
    theory = {0: dict(base, selection_resolved=False), 1: dict(base, selection_resolved=True)}
    _, numbers = summarise(points, theory, {})
    assert numbers["unresolved_selection"] == [0]
