"""Finite-``D`` simulation of the solvable attention model, and what compares it with the theory.

* :mod:`simulations.simulator`: the simulator itself (imports the model, never the theory);
* :mod:`simulations.campaigns`: resumable runs, theory-vs-simulation statistics, finite-size
  (``convergence``) studies and validation campaigns (import both the simulator and the theory);
* :mod:`simulations.figures`: the paper's figures; :mod:`simulations.cli`: the command line.

``from simulations import simulate`` is the simulator's entry point.
"""

from .simulator import FinetuneSimulation, PretrainSimulation, SimulationResult, simulate, simulate_variants

__all__ = ["simulate", "simulate_variants", "SimulationResult", "PretrainSimulation", "FinetuneSimulation"]
