"""Layer 3, ``sampling``: the random inputs, reproducible by counter.

- ``rng``: counter-based Philox keys per (seed, trial, stream, row block): the same numbers on any
  worker, in any task order, on NumPy or CuPy.
- ``data``: the data matrix X (d0 x n, unit columns; sphere, Gaussian, digits or a user file) and
  its checks.

Rule: imports only ``backend`` (and nothing of ``linalg`` or above). ``theory.expected`` calls
``data.check_data``, so data sits below the math.
"""
