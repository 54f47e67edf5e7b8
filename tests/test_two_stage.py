"""The two-stage state evolution of state_evolution/two_stage.py: ``sweep_state_evolution`` against single
solves."""

import math

import pytest
from theory_helpers import FAST


def test_sweep_state_evolution_warm_starts_agree_with_single_solves_and_report_each_lambda():
    """``sweep_state_evolution`` (identity, 3 λ × 2 λ', small channels): one ``on_point`` call per λ with
    its λ' solutions, λ-major order, and each converged point equal to a cold single solve on the same
    fixed samples within the LoRA acceptance tolerance (5e-4 relative residual ⇒ a few 1e-3 in m', q')."""
    from state_evolution import sweep_state_evolution
    from state_evolution.finetuning import make_lora_channel, solve_finetuning
    from solvable_attention.params import FinetuneParams

    lams, lps = [0.05, 0.1, 0.2], [1.0, math.inf]
    seen = []
    sols = sweep_state_evolution(0.1, 3.0, 0.5, lams, lps, activation="identity", progress=False, seed=4,
                                 on_point=lambda s: seen.append([(x.pretrain.params.lam, x.finetune.params.lam_prime)
                                                                 for x in s]), **FAST)
    assert seen == [[(lam, lp) for lp in lps] for lam in lams]
    assert [(s.pretrain.params.lam, s.finetune.params.lam_prime) for s in sols] == [p for row in seen for p in row]
    assert all(s.converged for s in sols)
    last = sols[-2]  # λ = 0.2, λ' = 1: warm-started from the secant of the two previous λ
    ch = make_lora_channel(last.pretrain, FinetuneParams(alpha_prime=3.0, lam_prime=1.0, delta_prime=0.5), seed=5, **FAST)
    cold = solve_finetuning(last.pretrain, 3.0, 1.0, channel=ch)
    assert cold.m == pytest.approx(last.finetune.m, rel=5e-3) and cold.q == pytest.approx(last.finetune.q, rel=1e-2)


def test_warm_sweeps_survive_a_failed_warm_start(monkeypatch):
    """A warm-started solve that raises InvalidIterate with a single previous point (the case that used to
    store ``None`` and crash) is retried from the previous fixed point, in both sweeps. Reference values: the
    same points solved cold, one by one (identity: closed-form pre-training; tolerance 1e-6 relative, the
    solvers' own tolerance)."""
    import state_evolution.pretraining as pretraining
    import state_evolution.two_stage as two_stage
    from state_evolution import solve_finetuning, solve_pretraining, sweep_state_evolution
    from state_evolution.fixed_point import InvalidIterate

    real_pre, real_fine = pretraining.solve_pretraining, two_stage.solve_finetuning
    forced = []

    def failing_pre(alpha, delta, lam, **k):
        if lam == 0.1 and "memory" in k:  # the warm start of the second λ (the retry passes no memory)
            forced.append("pre")
            raise InvalidIterate("forced")
        return real_pre(alpha, delta, lam, **k)

    def failing_fine(pre, *a, **k):
        if pre.params.lam == 0.1 and "memory" in k:
            forced.append("fine")
            raise InvalidIterate("forced")
        return real_fine(pre, *a, **k)

    monkeypatch.setattr(pretraining, "solve_pretraining", failing_pre)
    monkeypatch.setattr(two_stage, "solve_finetuning", failing_fine)
    sols = sweep_state_evolution(0.1, 3.0, 0.5, [0.05, 0.1], [1.0], activation="identity", progress=False,
                                 n_samples=2 ** 12, n_test_samples=2 ** 15)
    assert forced == ["pre", "fine"]
    assert len(sols) == 2 and all(s.converged for s in sols)
    cold_pre = solve_pretraining(0.1, 0.5, 0.1, activation="identity")
    cold = solve_finetuning(cold_pre, 3.0, 1.0, n_samples=2 ** 12, n_test_samples=2 ** 15, seed=1)
    assert sols[1].pretrain.q == pytest.approx(cold_pre.q, rel=1e-6)
    assert sols[1].finetune.q == pytest.approx(cold.q, rel=1e-3)  # same samples; LoRA tolerance 1e-5 × cond.
