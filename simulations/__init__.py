"""Finite-D training of the solvable attention model (JAX + optax) and the campaign scripts."""

from .simulate import (FinetuneSimulation, PretrainSimulation, SimulationResult, simulate)

__all__ = ["simulate", "SimulationResult", "PretrainSimulation", "FinetuneSimulation"]
