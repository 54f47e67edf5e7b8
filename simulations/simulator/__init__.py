"""The finite-``D`` simulator: both stages of the model trained by ERM in JAX (CPU or accelerator).

It depends on the model package (:mod:`solvable_attention`) only, never on the theory.
:func:`simulate` trains pre-training (:mod:`.pretraining_fit`: FISTA on ``S`` or L-BFGS on a factor)
and rank-one LoRA (:mod:`.lora_fit`) on the objectives of :mod:`.objectives`, and measures every
metric of docs/model.md §4 (:mod:`.two_stage`); :mod:`.summary` averages results over seeds.
"""

from .two_stage import (FinetuneSimulation, PretrainSimulation, SimulationResult, simulate, simulate_variants)

__all__ = ["simulate", "simulate_variants", "SimulationResult", "PretrainSimulation", "FinetuneSimulation"]
