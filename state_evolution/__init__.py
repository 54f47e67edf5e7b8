"""Asymptotic (D → ∞) theory of the solvable attention model: the state evolution (docs/theory.md).

* prior (spectral) side: :mod:`.spectral_prior` with :mod:`.free_probability` (docs/theory.md §2.2);
* pre-training output channels: :mod:`.channel_identity` (closed form, §2.3), :mod:`.channel_monte_carlo`
  (Monte Carlo, §2.4), chosen by :mod:`.channels`; their per-sample prox: :mod:`.prox_newton`;
* the LoRA channel :mod:`.channel_lora` (§4) and its rank-r form :mod:`.channel_lora_rank` (§7.1);
* the fixed-point solver :mod:`.fixed_point` (§2.6); the stages :mod:`.pretraining` (§2),
  :mod:`.finetuning` (§4), :mod:`.finetuning_rank` (§7.1), both by :mod:`.two_stage` (:func:`solve_state_evolution`);
* reuse and active selection :mod:`.selection` (§5); the Bayes-optimal baseline :mod:`.bayes_optimal` (§3).

It imports the model (:mod:`solvable_attention`), never :mod:`simulations`. Every solve reports whether
it converged (``.converged``) and warns with :class:`ConvergenceWarning` instead of raising; a LoRA solve whose
choice between two fixed points the Monte Carlo error cannot decide says so (``.selection_resolved``) and warns
with :class:`BranchSelectionWarning`.
"""

from .bayes_optimal import BayesOptimalSolution, bayes_optimal
from .branch_selection import BranchSelectionWarning
from .fixed_point import ConvergenceWarning
from .finetuning import FinetuningSolution, solve_finetuning
from .finetuning_rank import RankFinetuningSolution, solve_finetuning_rank
from .pretraining import PretrainingSolution, solve_pretraining, sweep_pretraining
from .two_stage import StateEvolutionSolution, solve_state_evolution, sweep_state_evolution

__all__ = ["solve_state_evolution", "solve_finetuning", "sweep_state_evolution", "FinetuningSolution", "StateEvolutionSolution",
           "solve_pretraining", "sweep_pretraining", "PretrainingSolution", "ConvergenceWarning", "bayes_optimal",
           "BayesOptimalSolution", "solve_finetuning_rank", "RankFinetuningSolution", "BranchSelectionWarning"]
