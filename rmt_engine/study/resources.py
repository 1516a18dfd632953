"""What a trial and a study will cost, estimated before anything runs, and the limits that refuse them.

Rule of this module: estimates come from the allocation plan and the flop counts of the code, not
from running anything; a study over a limit is refused by ``rmt-engine validate`` and ``run``
unless ``--force`` (limits in ``[execution]``: ``max_trial_memory_gb``, ``max_cpu_hours``,
``max_grid_points``, ``max_trials``), so a typo such as ``d1 = 1e12`` fails in a second, not after
hours or with a MemoryError.

Memory of one trial (float64, bytes = 8 x; ``trial.run_trial``'s plan): the two lane sums of M0
(2 n^2; the second becomes the workspace of ``extremes`` and of the dense reduction afterwards),
E[M0]/d1 (n^2); one row block of W0 X and phi(W0_b X) (2 b n + b d0, b = rows per block), X
(d0 n), two row slabs of 256 x n (the symmetry check, certificates), O(n) vectors and the Krylov
basis (at most ``extremes.MAX_BASIS + 8`` vectors of n); the V0 part: V0 phi(W0 X) and V0 V0^T per
lane with their temporaries (6 d2 n + 8 d2^2 + b d2: d2 = 200000 alone needs 8 x 320 GB). The
per-point work before the first trial (E[M0]: the result and two temporaries; G and G^{o i} for
the Hadamard bound, solved in place) stays within the same 3 n^2. With training: W, W0, grad_W (3 d1 d0),
F and phi'(W X) (2 d1 n), two NTK Grams ((d2 n)^2 each) and the loss history (max_iters).
Compute: 2 d1 d0 n + d1 n^2 (the Gram pass) + 4/3 n^3 per dense reduction (two) per trial (an
upper estimate: from ``extremes.DENSE_BELOW_N`` on the certified route needs about 5 n^3 / 3), plus
the V0 products 2 d1 d2 n + 2 d1 d2^2 and sigma_max(V0) (10 d2^3); training
adds max_iters x (4 d1 d0 n + 6 d1 d2 n + 40 d1 n (the elementwise phi, phi' counted as 20 flops each),
+ 2 d1 d2^2 + 10 d2^3 when d2 > 1 (sigma_max(V_k) each iteration), + the fixed per-iteration
overhead ``TRAIN_ITERATION_OVERHEAD_S`` as flop-equivalents: ``max_iters = 2e8`` is hours even at
tiny sizes) and 2 (d2 (d2 + 1) + 2) d1 n^2 for the NTK. Hours assume ``ASSUMED_GFLOPS`` per worker core.

Width paths (``[study] width_path = true``): a task streams W0 once to the largest d1 of the grid and
reduces at every checkpoint, so a grid point's trial costs its checkpoint's reductions (the dense
reductions, sigma_max(V0), the NTK's extremes: ``trial_flops - pass_flops``), and only the largest
width pays its pass (``pass_flops``: the blocks W0_b X, phi, the Gram and V0 sums). Memory: a path
holds what one trial at its largest width holds (``trial_memory_bytes`` there).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..linalg.extremes import _SLAB, MAX_BASIS  # the row slabs and Krylov basis of the certified route

#: Sustained float64 rate assumed per core for the time estimate (measured 20-50 GFLOP/s here).
ASSUMED_GFLOPS = 20.0
#: Words of the V0 part of a trial: per d2 n (each lane's V0 phi(W0 X), the product's temporary, the
#: residual, Y) and per d2^2 (each lane's V0 V0^T, the product's temporary, the scaled copy, the
#: eigenvalue solver's workspace).
V0_WORDS_PER_D2N = 6
V0_WORDS_PER_D2SQ = 8
#: Flops of the dense eigenvalues of a d2 x d2 symmetric matrix, per d2^3 (tridiagonalization is
#: memory-bound; measured slower than its 4/3 d2^3 BLAS-3 count suggests).
EIG_FLOPS_PER_D2CUBE = 10.0
#: Fixed seconds of one GD iteration beyond its flops (about 20 NumPy calls and the loss brought to
#: the host; measured 3.8e-5 s per iteration at n = 16, d0 = 6, d1 = 64, where the flops take 4e-6 s).
TRAIN_ITERATION_OVERHEAD_S = 5e-5
DEFAULT_LIMITS = {"max_trial_memory_gb": None, "max_cpu_hours": 1000.0, "max_grid_points": 100_000,
                  "max_trials": 100_000_000}


def machine_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def trial_memory_bytes(spec, train=None) -> int:
    """Peak bytes of one trial of the ``TrialSpec`` (module docstring)."""
    n, d0, d1, d2 = spec.n, spec.d0, spec.d1, spec.d2
    b = spec.rows_per_block
    words = 3 * n * n + 2 * min(b, d1) * n + min(b, d1) * d0 + d0 * n + (2 * _SLAB + MAX_BASIS + 8 + 16) * n
    words += V0_WORDS_PER_D2N * d2 * n + V0_WORDS_PER_D2SQ * d2 * d2 + min(b, d1) * d2  # the V0 sums (docstring)
    if getattr(spec, "ntk", False):  # one NTK sum per lane (2 n^2), phi' of a block, E[J J^T] at the point
        words += 3 * n * n + min(b, d1) * n
    if train is not None:
        words += 3 * d1 * d0 + 2 * d1 * n + 2 * (d2 * n) ** 2 + train.max_iters
        words += 3 * d2 * d1 + 2 * d2 * n + 2 * d2 * d2  # V, V0, its gradient; R, Y; V V^T per iteration
    return 8 * words


def trial_flops(spec, train=None) -> float:
    """Floating-point operations of one trial (module docstring): its pass (``pass_flops``), then the
    reductions at its width (the dense ones of M0, sigma_max(V0), the NTK's) and the training."""
    n, d0, d1, d2 = spec.n, spec.d0, spec.d1, spec.d2
    f = pass_flops(spec) + 2 * (4.0 / 3.0) * n**3 + EIG_FLOPS_PER_D2CUBE * float(d2) ** 3  # M0's, V0 V0^T's eig
    if getattr(spec, "ntk", False):  # the Hadamard with X^T X, the NTK's extremes (its dsyrk is in the pass)
        f += 2.0 * d0 * n * n + (4.0 / 3.0) * n**3
    if train is not None:
        f += train.max_iters * train_iteration_flops(spec)
        f += 2.0 * (d2 * (d2 + 1) + 2) * d1 * n * n
    return f


def pass_flops(spec) -> float:
    """The part of ``trial_flops`` that streams the rows of W0 (the row blocks, phi, the Gram, V0 phi(W0 X)
    and V0 V0^T, the NTK's dsyrk): what a width path pays once, at its largest width."""
    n, d0, d1, d2 = spec.n, spec.d0, spec.d1, spec.d2
    f = 2.0 * d1 * d0 * n + d1 * n * n + 2.0 * d1 * d2 * n + 2.0 * d1 * d2 * d2
    if getattr(spec, "ntk", False):
        f += d1 * n * n
    return f


def train_iteration_flops(spec) -> float:
    """Flops (and flop-equivalents of the fixed per-iteration overhead) of one GD iteration (docstring)."""
    n, d0, d1, d2 = spec.n, spec.d0, spec.d1, spec.d2
    f = 4.0 * d1 * d0 * n + 6.0 * d1 * d2 * n + 40.0 * d1 * n
    if d2 > 1:  # sigma_max(V_k) every iteration: V V^T and its eigenvalues
        f += 2.0 * d1 * d2 * d2 + EIG_FLOPS_PER_D2CUBE * float(d2) ** 3
    return f + TRAIN_ITERATION_OVERHEAD_S * ASSUMED_GFLOPS * 1e9


def largest_n(memory_bytes: float, d0: int, d1_per_n: float = 4.0, rows_per_block: int | None = None) -> int:
    """The largest n whose trial (``trial_memory_bytes``, no training) fits in ``memory_bytes``,
    with d1 = ``d1_per_n`` n and the default row block (``TrialSpec.rows_per_block``)."""
    from ..montecarlo.spec import TrialSpec  # noqa: PLC0415

    def need(n):
        spec = TrialSpec(activation="gelu", n=n, d0=d0, d1=max(1, int(d1_per_n * n)),
                         **({"block_rows": rows_per_block} if rows_per_block else {}))
        return trial_memory_bytes(spec)

    lo, hi = 1, max(2, int(math.sqrt(memory_bytes / 24.0)) + 1)
    if need(lo) > memory_bytes:
        return 0
    while need(hi) <= memory_bytes:
        hi *= 2
    while hi - lo > 1:  # need(lo) fits, need(hi) does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if need(mid) <= memory_bytes else (lo, mid)
    return lo


@dataclass
class StudyEstimate:
    grid_points: int
    trials: int
    max_trial_memory_bytes: int
    worst_point: str
    total_flops: float

    @property
    def cpu_hours(self) -> float:
        return self.total_flops / (ASSUMED_GFLOPS * 1e9) / 3600.0

    def line(self) -> str:
        return (f"estimate: {self.grid_points} grid points, {self.trials} trials, at most "
                f"{self.max_trial_memory_bytes / 2**30:.3g} GiB per trial ({self.worst_point}), "
                f"{self.cpu_hours:.3g} CPU-hours at {ASSUMED_GFLOPS:g} GFLOP/s per core")


def estimate_study(study) -> StudyEstimate:
    """Memory and compute of ``study`` from its grid (no trial runs); refuses nothing."""
    worst, where, flops = 0, "", 0.0
    top = max(study.grid["d1"]) if getattr(study, "width_path", False) else None
    for labels in study.points():
        spec = study.trial_spec(labels)
        m = trial_memory_bytes(spec, study.train)
        if m > worst:
            worst, where = m, f"n={spec.n}, d0={spec.d0}, d1={spec.d1}" + (f", d2={spec.d2}" if spec.d2 > 1 else "")
        f = trial_flops(spec, study.train)
        if top is not None and spec.d1 != top:  # a checkpoint of a path: its reductions only
            f -= pass_flops(spec)
        flops += f * study.trials
    return StudyEstimate(study.n_points, study.n_points * study.trials, worst, where, flops)


def slurm_worker_memory_bytes(study) -> float | None:
    """``[cluster.slurm] memory / processes`` in bytes when the study runs on Slurm with a memory set."""
    ex = getattr(study, "execution", None)
    if ex is None or ex.cluster != "slurm" or "memory" not in ex.slurm:
        return None
    from dask.utils import parse_bytes  # noqa: PLC0415

    try:
        total = parse_bytes(ex.slurm["memory"])
    except (ValueError, TypeError):
        return None  # dask-jobqueue reports the bad value when the cluster starts
    return total / max(1, int(ex.slurm.get("processes", 1)))


def check_limits(study, limits: dict) -> list[str]:
    """The limits ``study`` exceeds (empty when none), as sentences naming the limit to raise."""
    lim = dict(DEFAULT_LIMITS, **{k: v for k, v in limits.items() if v is not None})
    out = []
    if study.n_points > lim["max_grid_points"]:
        out.append(f"{study.n_points} grid points > max_grid_points = {lim['max_grid_points']}")
        return out  # the per-point estimate itself would be slow
    if study.n_points * study.trials > lim["max_trials"]:
        out.append(f"{study.n_points * study.trials} trials > max_trials = {lim['max_trials']}")
        return out
    est = estimate_study(study)
    mem_limit = lim["max_trial_memory_gb"]
    mem_limit_b = mem_limit * 2**30 if mem_limit is not None else 0.8 * machine_memory_bytes()
    what = (f"max_trial_memory_gb = {mem_limit}" if mem_limit is not None
            else f"80% of this machine's memory ({mem_limit_b / 2**30:.3g} GiB; set max_trial_memory_gb)")
    worker = slurm_worker_memory_bytes(study)
    if worker is not None and mem_limit is None and worker < mem_limit_b:
        mem_limit_b = worker
        what = (f"the memory of one Slurm worker ([cluster.slurm] memory / processes = "
                f"{worker / 2**30:.3g} GiB)")
    if est.max_trial_memory_bytes > mem_limit_b:
        out.append(f"one trial needs about {est.max_trial_memory_bytes / 2**30:.3g} GiB at {est.worst_point} > {what}")
    if est.cpu_hours > lim["max_cpu_hours"]:
        out.append(f"about {est.cpu_hours:.3g} CPU-hours > max_cpu_hours = {lim['max_cpu_hours']}")
    return out
