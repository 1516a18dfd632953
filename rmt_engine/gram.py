"""Streamed accumulation of ``M0 = phi(W0 X)^T phi(W0 X)`` over row blocks of W0 (Eq. 59).

Neither ``W0`` (d1 x d0) nor ``F = phi(W0 X)`` (d1 x n) ever exists whole: rows
``[r0, r1)`` of W0 are generated from their counters (``rng``), ``F_b = phi(W0_b X)`` is formed
and ``M0 += F_b^T F_b`` is one BLAS-3 call (``dsyrk`` on the CPU, updating one triangle in
place). Memory: the n x n accumulator plus one block. The same pass accumulates what the rest
of the chain needs from V0 (d2 x d1, N(0, w2^2)): ``V0 phi(W0 X)`` (d2 x n), ``V0 V0^T``
(d2 x d2) and the largest row norm of W0 / column norm of V0 (Eq. 60).

Accuracy: the Gram is accumulated in float64. Its smallest eigenvalue has absolute error about
``eps * lambda_max(M0)`` (relative error ~ eps * cond(M0), eps = 2.2e-16), so
``sigma_min(F) = sqrt(lambda_min(M0))`` is trustworthy while cond(M0) << 1e16. With
``dtype="float32"`` the block product ``W0_b X`` and ``phi`` run in float32 (errors ~ 1e-7
relative per entry of F, hence ~ 1e-7 * cond(M0) on lambda_min even with float64 accumulation):
do not use it near d1 ~ n.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import rng
from ._backend import array_namespace, backend_name
from .activations import Activation, activation as _activation


@dataclass
class TrialSums:
    """What one pass over the row blocks of W0 (and the columns of V0) produces.

    ``M0`` (n x n, float64, symmetric), ``VF = V0 phi(W0 X)`` (d2 x n) or None,
    ``VVt = V0 V0^T`` (d2 x d2) or None, ``max_row_norm_W0`` and ``max_col_norm_V0`` (floats).
    """

    M0: object
    VF: object | None
    VVt: object | None
    max_row_norm_W0: float
    max_col_norm_V0: float


def normal_block(xp, key, row_start: int, row_stop: int, ncols: int, scale: float = 1.0):
    """Rows of a counter-based Gaussian matrix on the backend ``xp`` (CuPy uses the CUDA kernel)."""
    if backend_name(xp) == "cupy":
        from .gpu import normal_rows_gpu  # noqa: PLC0415 - GPU-only path

        return normal_rows_gpu(key, row_start, row_stop, ncols, scale)
    return rng.normal_rows(key, row_start, row_stop, ncols, scale)


def _syrk_update(M, F) -> None:
    """``M += F^T F`` (upper triangle only on NumPy: dsyrk in place; full product elsewhere)."""
    xp = array_namespace(M)
    if backend_name(xp) == "numpy":
        from scipy.linalg.blas import dsyrk  # noqa: PLC0415

        # F is C-contiguous (b x n) so F.T is Fortran-contiguous (n x b): no copy. C = A A^T.
        out = dsyrk(1.0, F.T, beta=1.0, c=M, trans=0, lower=0, overwrite_c=1)
        if out is not M:  # pragma: no cover - scipy copied (should not happen for F-ordered M)
            M[...] = out
    else:
        M += F.T @ F


def blas_threads() -> int:
    """Threads of the BLAS pool of this process (1 inside study workers, which pin it)."""
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return 1
    counts = [p.get("num_threads", 1) for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(1, min(counts)) if counts else 1


@functools.lru_cache(maxsize=4)
def _phi_pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rmt-phi")


#: Elements of one piece of a block in ``_apply_phi`` (2 MiB of float64).
_PHI_CHUNK_ELEMS = 2**18


def _apply_phi(act: Activation, Z, threads: int = 1):
    """``phi(Z)`` in place where possible.

    On CuPy the built-ins use the exact CUDA kernel in place (the only GPU-specific branch).
    On NumPy the rows are processed in pieces of about 2 MiB (so the activation's temporaries
    stay small: peak memory is M0 plus one block) and, with ``threads > 1``, over a thread pool:
    NumPy/SciPy ufuncs release the GIL, and the activation (not BLAS) is the largest cost above
    the flop limit. The result is elementwise, hence bitwise independent of ``threads``.
    """
    xp = array_namespace(Z)
    if backend_name(xp) == "cupy":
        if act.builtin and Z.dtype == xp.float64:
            from .gpu import ACTIVATION_IDS, apply_activation_gpu  # noqa: PLC0415

            if act.name in ACTIVATION_IDS:
                return apply_activation_gpu(act.name, Z, out=Z)
        return act.phi(Z)
    rows = Z.shape[0]
    step = max(1, _PHI_CHUNK_ELEMS // max(1, Z.shape[1]))  # small pieces: temporaries stay small
    pieces = [(a, min(a + step, rows)) for a in range(0, rows, step)]

    def work(piece):
        a, b = piece
        Z[a:b] = act.phi(Z[a:b])

    if threads <= 1 or len(pieces) == 1:
        for piece in pieces:
            work(piece)
    else:
        list(_phi_pool(threads).map(work, pieces))
    return Z


def _symmetrize_from_upper(M):
    xp = array_namespace(M)
    if backend_name(xp) == "numpy":
        iu = np.triu_indices_from(M, k=1)
        M[(iu[1], iu[0])] = M[iu]
        return M
    return M  # the full product was accumulated


def accumulate(X, act: Activation | str, d1: int, *, w1: float = 1.0, key_W=None,
               d2: int = 0, w2: float = 1.0, key_V=None, block_rows: int = 4096,
               dtype: str = "float64") -> TrialSums:
    """One pass over the row blocks of W0 (and the matching columns of V0 when ``d2 > 0``).

    X: ``d0 x n`` (NumPy or CuPy, float64). Returns :class:`TrialSums`.
    """
    act = _activation(act)
    xp = array_namespace(X)
    d0, n = X.shape
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    work = xp.float32 if dtype == "float32" else xp.float64
    Xw = X.astype(work)
    if backend_name(xp) == "numpy":
        M = np.zeros((n, n), dtype=np.float64, order="F")
    else:
        M = xp.zeros((n, n), dtype=xp.float64)
    VF = xp.zeros((d2, n), dtype=xp.float64) if d2 else None
    VVt = xp.zeros((d2, d2), dtype=xp.float64) if d2 else None
    max_w = 0.0
    max_v = 0.0
    threads = blas_threads()
    for r0, r1 in rng.row_blocks(d1, block_rows):
        W = normal_block(xp, key_W, r0, r1, d0, w1)
        max_w = max(max_w, float(xp.sqrt(xp.max(xp.sum(W * W, axis=1)))))
        F = _apply_phi(act, W.astype(work) @ Xw, threads)
        if F.dtype != xp.float64:
            F = F.astype(xp.float64)
        _syrk_update(M, F)
        if d2:
            Vt = normal_block(xp, key_V, r0, r1, d2, w2)  # rows r0:r1 of V0^T = columns of V0
            max_v = max(max_v, float(xp.sqrt(xp.max(xp.sum(Vt * Vt, axis=1)))))
            VF += Vt.T @ F
            VVt += Vt.T @ Vt
        del W, F  # free this block before the next one is allocated: peak = M0 + one block
    M = _symmetrize_from_upper(M)
    return TrialSums(M, VF, VVt, max_w, max_v)


def gram(X, activation, d1: int, *, w1: float = 1.0, seed: int = 0, trial: int = 0,
         block_rows: int | None = None, dtype: str = "float64"):
    """``M0 = phi(W0 X)^T phi(W0 X)`` (n x n, float64) for trial ``trial`` of ``seed``.

    W0 is ``d1 x d0`` with N(0, w1^2) entries drawn from the counter-based stream
    ``("W0", trial)``: the result does not depend on ``block_rows`` beyond floating-point
    summation order. See the module docstring for memory and accuracy.
    """
    from .data import check_data  # noqa: PLC0415

    check_data(X)
    if not isinstance(d1, (int, np.integer)) or d1 < 1:
        raise ValueError(f"d1 must be a positive integer, got {d1!r}")
    if not (w1 > 0 and np.isfinite(w1)):
        raise ValueError(f"w1 must be a finite number > 0, got {w1!r}")
    n = X.shape[1]
    if block_rows is None:
        block_rows = int(min(d1, max(64, 2**22 // n)))
    sums = accumulate(X, activation, int(d1), w1=w1, key_W=rng.stream_key(seed, "W0", trial),
                      block_rows=block_rows, dtype=dtype)
    return sums.M0
