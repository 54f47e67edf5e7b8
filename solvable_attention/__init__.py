"""The solvable attention model (MODEL.md): parameters, attention map, activations, teachers and data,
metrics, and the theory-vs-simulation comparison layer — shared by theory and simulation.

Importing the package caps the BLAS/LAPACK libraries bundled with numpy/scipy at one thread
(:func:`solvable_attention.runtime.limit_blas_threads`): jaxlib's CPU LAPACK calls deadlocked or
slowed down 40× otherwise on small machines.
"""

from .runtime import limit_blas_threads

_blas_limits = limit_blas_threads(1)
