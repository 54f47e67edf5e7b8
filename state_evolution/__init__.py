"""Asymptotic (D → ∞) theory of the solvable attention model: the state evolution.

Prior (spectral) side: :mod:`state_evolution.spectral_prior` (+ :mod:`free_probability`);
output channels: :mod:`channel_identity` (closed form), :mod:`channel_monte_carlo` (Monte Carlo);
fixed-point solver: :mod:`fixed_point`; stages: :mod:`pretraining`.
"""

from .bayes_optimal import BayesOptimalSolution, bayes_optimal
from .fixed_point import ConvergenceWarning
from .finetuning import FinetuningSolution, solve_finetuning
from .pretraining import PretrainingSolution, solve_pretraining, sweep_pretraining
from .two_stage import StateEvolutionSolution, solve_state_evolution, sweep_state_evolution

__all__ = ["solve_state_evolution", "solve_finetuning", "sweep_state_evolution", "FinetuningSolution", "StateEvolutionSolution",
           "solve_pretraining", "sweep_pretraining", "PretrainingSolution", "ConvergenceWarning", "bayes_optimal",
           "BayesOptimalSolution"]
