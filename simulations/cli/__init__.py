"""Command line interface: ``solvable-attention <command> [options]`` (also ``python -m simulations.cli``).

Commands, one module each:

* ``simulate`` (:mod:`.simulate`): train both stages of the model at finite ``D`` over several seeds
  (:func:`simulations.simulate`); print mean ± standard error of every metric; ``--json`` writes
  parameters, per-seed results, summary, versions, machine and timings, atomically.
* ``solve`` (:mod:`.solve`): the state-evolution theory (``D → ∞``) at one setting or a grid
  (Cartesian product of ``--alpha``, ``--alpha-prime``, ``--delta``, ``--lam``, ``--lam-prime``); prints
  one row per point; ``--json``/``--csv`` write every parameter, metric and solver status.
* ``reproduce FIGURE`` (:mod:`.reproduce`): one of the paper's figures (:mod:`simulations.figures`).
* ``convergence`` (:mod:`.convergence`): theory vs simulation as ``D`` grows at one setting
  (:mod:`simulations.campaigns.convergence`).

Shared flags (the model's parameters, docs/model.md §5; seeds; executors) live in :mod:`.arguments`;
the parser, the registry and :func:`main` in :mod:`.main`.

Exit status: 0 success; 1 ``solve`` with a point that did not converge; 2 bad arguments (one line
``error: <message>`` on stderr, naming the flag). ``solvable-attention --version`` prints the version.
"""

from ..campaigns.records import write_json_atomic
from .arguments import EXIT_USAGE, UsageError
from .main import COMMANDS, build_parser, flag_message, main

__all__ = ["main", "build_parser", "flag_message", "UsageError", "EXIT_USAGE", "COMMANDS", "write_json_atomic"]
