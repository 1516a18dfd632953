"""Layer 5, ``montecarlo``: what one trial does.

- ``spec``: ``TrialSpec``, the parameters of one grid point, validated.
- ``fields``: the names, meanings and equations of every field a record carries.
- ``gram``: the streamed pass over row blocks of W0: M0 = phi(W0 X)^T phi(W0 X) (Eq. 59) and the
  V0-dependent sums, on NumPy or CuPy.
- ``point_cache``: the bounded process-level cache of per-point work (X, E[M0]/d1, point record).
- ``trial``: ``run_trial(spec, k)``: one record of every quantity of the paper's chain.
- ``train``: gradient descent from Theta0 (Eq. 12-14), ``train_trial``.

Rule: imports ``backend``, ``linalg``, ``sampling``, ``theory`` and this folder; nothing of
``study`` or ``report``. A trial is a pure function of its spec and its trial number.
"""
