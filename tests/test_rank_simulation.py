"""``simulate`` beyond rank one (docs/model.md §6): rank-r LoRA, a rank-r* shift, full fine-tuning."""

import math

import pytest

from simulations import simulate, simulate_variants

SMALL = dict(D=14, alpha=0.3, alpha_prime=4.0, delta=0.5, lam=0.05, n_test=2000, seed=1)


def _sim(**kw):
    args = dict(SMALL, **kw)
    return simulate(args.pop("D"), args.pop("alpha"), args.pop("alpha_prime"), args.pop("delta"), args.pop("lam"),
                    **args)


def test_variants_of_rank_and_method_share_one_pretraining():
    """One pre-training fine-tuned by LoRA of ranks 1, 2, 4 and both full methods (identity, r* = 2): all
    converge, share E'_0, report their update's rank, and the rank-one variant keeps its rank-one metrics."""
    variants = [dict(lam_prime=0.5, rank=r) for r in (1, 2, 4)] + [
        dict(lam_prime=0.5, finetune="full_nuclear"), dict(lam_prime=0.5, finetune="full_ridge"),
        dict(lam_prime=math.inf, rank=2)]
    args = dict(SMALL)
    res = simulate_variants(args.pop("D"), args.pop("alpha"), args.pop("alpha_prime"), args.pop("delta"),
                            args.pop("lam"), variants=variants, activation="identity", shift_rank=2, **args)
    base = res[0].finetune.test_error_baseline
    for r in res:
        f = r.finetune
        assert f.converged and f.shift_rank == 2 and f.test_error_baseline == base, f.status_message
    one, two, four, nuc, ridge, none = (r.finetune for r in res)
    assert one.rank == 1 and not math.isnan(one.alignment) and one.order_parameters is None
    assert one.update_rank == 1 and two.update_rank <= 2 and four.update_rank <= 4
    assert len(two.order_parameters["Q_eigenvalues"]) == 2 and len(two.order_parameters["MtM"]) == 2
    assert math.isnan(two.alignment) and math.isnan(nuc.q)
    assert ridge.update_rank > 4  # no rank constraint: the ridge update is full rank
    assert none.test_error == base and none.update_alignment == 0.0
    # LoRA's objective cannot increase with the rank (a rank-r update is a rank-(r+1) one), up to the solver's
    # tolerance; nuclear full fine-tuning is the r → ∞ end of the same family (docs/model.md §6)
    assert two.objective <= one.objective * (1 + 1e-6) and four.objective <= two.objective * (1 + 1e-6)
    assert nuc.objective <= four.objective * (1 + 1e-6)


def test_bad_rank_and_method_are_named():
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        _sim(rank=0)
    with pytest.raises(ValueError, match="finetune must be one of"):
        _sim(finetune="full")
    with pytest.raises(ValueError, match="shift_rank must be an integer >= 1"):
        _sim(shift_rank=1.5)
    with pytest.raises(ValueError, match="rank applies to finetune='lora' only"):
        _sim(rank=2, finetune="full_nuclear")
    with pytest.raises(ValueError, match="recalibrate=True is implemented for the rank-one LoRA only"):
        _sim(rank=2, recalibrate=True)
    with pytest.raises(ValueError, match="full_ridge needs lam_prime > 0"):
        _sim(finetune="full_ridge", lam_prime=0.0)
