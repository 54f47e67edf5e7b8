"""The solvable attention model (MODEL.md): parameters, attention map, activations, teachers and data,
metrics, and the theory-vs-simulation comparison layer — shared by theory and simulation.

Importing the package caps the BLAS/LAPACK libraries bundled with numpy/scipy at one thread
(:func:`solvable_attention.runtime.limit_blas_threads`): jaxlib's CPU LAPACK calls deadlocked or
slowed down 40× otherwise on small machines.
"""

import os as _os

# Must precede the first import of numpy/jaxlib to take effect (threadpoolctl below covers the case
# where they were imported before us, for speed; only the environment variable prevented the hang).
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .runtime import limit_blas_threads  # noqa: E402

_blas_limits = limit_blas_threads(1)
