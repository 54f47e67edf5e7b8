"""The solvable attention model (docs/model.md), the bottom layer shared by the theory and the simulator.

* :mod:`.params`: the validated settings ``PretrainParams``, ``FinetuneParams`` (docs/model.md §5);
* :mod:`.attention`, :mod:`.activations`: the attention map ``H(S; X)`` and ``σ`` (docs/model.md §1);
* :mod:`.data`, :mod:`.random_matrices`: teachers ``S0``, ``S1`` and data (docs/model.md §2–§3);
* :mod:`.metrics`: the finite-``D`` order parameters and test errors (docs/model.md §4);
* :mod:`.active`: selection strategies of active fine-tuning (docs/model.md §3, docs/theory.md §5.3);
* :mod:`.averages`: the one mean ± standard error; :mod:`.runtime`: float64 and BLAS threads.

It imports neither :mod:`state_evolution` nor :mod:`simulations`.

Importing the package sets ``OPENBLAS_NUM_THREADS=1`` unless already set (effective only when numpy
has not been imported yet): jaxlib's CPU LAPACK calls from XLA's threads slowed down 40× or hung
with multithreaded OpenBLAS on small machines (:mod:`solvable_attention.runtime`).
"""

import os as _os

_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
