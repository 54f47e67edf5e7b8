"""The solvable attention model (MODEL.md): parameters, attention map, activations, teachers and data,
metrics, and the theory-vs-simulation comparison layer — shared by theory and simulation.

Importing the package sets ``OPENBLAS_NUM_THREADS=1`` unless already set (effective only when numpy
has not been imported yet): jaxlib's CPU LAPACK calls from XLA's threads slowed down 40× or hung
with multithreaded OpenBLAS on small machines (:mod:`solvable_attention.runtime`).
"""

import os as _os

_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
