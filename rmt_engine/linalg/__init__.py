"""Layer 2, ``linalg``: numerical linear algebra that knows nothing of the paper.

- ``spectra``: the one eigen-solver dispatch (dense ``eigvalsh`` in place, extreme eigenvalues and
  singular values, spectral norms), NumPy or CuPy through ``xp``.
- ``extremes``: certified lambda_min / lambda_max / lambda_2 and spectral norms (Cholesky
  certificates, Rayleigh/Kato-Temple brackets, block Lanczos, dense fallback).
- ``blas``: ``dsyrk`` through SciPy's Cython BLAS with the GIL released.

Rule: imports only ``backend``. It sits below the math because ``theory`` (Khatri-Rao, Hadamard,
the deterministic equivalent) calls ``spectra``.
"""
