"""Finite-D training of the solvable attention model (JAX + optax) and the campaign scripts."""

from .simulate import (FinetuneSimulation, PretrainSimulation, SimulationResult, simulate,
                       simulate_variants)

__all__ = ["simulate", "simulate_variants", "SimulationResult", "PretrainSimulation", "FinetuneSimulation"]
