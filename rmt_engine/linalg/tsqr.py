"""Streamed TSQR: the R factor of a tall matrix fed in row blocks, and its accurate extreme singular values.

Rules of this module
- ``StreamedR`` keeps one n x n upper-triangular ``R`` with ``R^T R = F^T F`` for the rows fed so
  far (``add_block(F_b)``, blocks in a fixed order: the bits of R depend on the block order and
  sizes, never on threads or workers). On NumPy each block is folded in with LAPACK ``dgeqrf``
  (the first block) and ``dtpqrt`` (the triangle-pentagon QR of ``[R; F_b]``, which exploits R's
  zeros) through ``scipy.linalg.lapack``; on CuPy with ``xp.linalg.qr(..., mode="r")`` of the
  stacked ``[R; F_b]`` (the same Householder QR, without the structure).
- Why: ``sigma_min(F)`` from ``lambda_min(F^T F)`` carries an absolute error of about
  ``eps * sigma_max(F)^2`` on ``sigma_min(F)^2`` (the Gram squares cond(F)); Householder QR is
  backward stable on F itself, so ``sigma_min(R)`` is within about ``eps * sigma_max(F)`` of
  ``sigma_min(F)`` (relative error ~ eps cond(F), not eps cond(F)^2).
- ``qr_relative_error`` and ``gram_relative_error`` are the a-posteriori error bounds the trial
  records (``sigma_min_F_relerr``); their constants are stated there.

Memory: R (n^2 doubles) plus one block and LAPACK's small T factor. Cost per block of b rows:
about 2 b n^2 flops (twice a ``dsyrk`` of the same block).
"""

from __future__ import annotations

import math

import numpy as np

from ..backend.xp import array_namespace, backend_name, to_numpy

EPS = float(np.finfo(np.float64).eps)
#: Safety factor of the a-posteriori error bounds (rounding constants of Householder QR, of the
#: blocked Gram accumulation and of the final dense SVD / eigen-solve, taken generously).
ERROR_SAFETY = 4.0


def _rounding_depth(rows: int, n: int) -> float:
    """The effective length of the sums that the rounding errors accumulate over: sqrt(rows) + n.

    Rounding errors of sums of ``rows`` terms grow like sqrt(rows) * eps with high probability
    (Higham & Mary, SIAM J. Sci. Comput. 2019, probabilistic rounding error analysis), and the
    final dense decomposition of an n x n matrix adds about n * eps (normwise).
    """
    return math.sqrt(max(rows, 1)) + n


def qr_relative_error(sigma_min: float, sigma_max: float, rows: int, n: int) -> float:
    """Bound on ``|sigma_min(R) - sigma_min(F)| / sigma_min(F)`` for a streamed QR of F (rows x n).

    The computed R is the exact R of ``F + dF`` with ``||dF||_2 <= c eps ||F||_2``,
    ``c = ERROR_SAFETY (sqrt(rows) + n)``; by Weyl's inequality the singular values move by at
    most ``||dF||_2``. ``inf`` where ``sigma_min == 0``.
    """
    if not sigma_min > 0:
        return math.inf
    return ERROR_SAFETY * _rounding_depth(rows, n) * EPS * sigma_max / sigma_min


def gram_relative_error(lambda_min: float, lambda_max: float, rows: int, n: int) -> float:
    """Bound on the relative error of ``sqrt(lambda_min(M))`` where ``M = F^T F`` was accumulated in
    float64 from ``rows`` rows and its extreme eigenvalues computed from M.

    ``|lambda_min(fl(M)) - lambda_min(F^T F)| <= c eps lambda_max``, ``c = ERROR_SAFETY (sqrt(rows) + n)``
    (rounding of the Gram sums, then of the eigen-solver, both normwise in ``lambda_max``); for
    the square root, ``|d sigma| / sigma <= |d lambda| / lambda`` (since sqrt(1 + x) - 1 <= x for
    x >= -1, ``|sqrt(l + dl) - sqrt(l)| <= |dl| / sqrt(l)``). ``inf`` where ``lambda_min`` is not
    larger than that error (the Gram cannot resolve sigma_min at all).
    """
    err = ERROR_SAFETY * _rounding_depth(rows, n) * EPS * max(lambda_max, 0.0)
    if not lambda_min > err:
        return math.inf
    return err / lambda_min


EPS32 = float(np.finfo(np.float32).eps)


def float32_relative_error(sigma_min: float, sigma_max: float, d0: int, n: int) -> float:
    """Bound on the relative error of sigma_min(F) when ``F = phi(W X)`` is formed in float32.

    Each entry of ``W X`` (d0 terms) and of phi carries a relative error of about ``(d0 + 8) eps32``,
    so ``||dF||_2 <= ||dF||_F <= c eps32 ||F||_F <= c eps32 sqrt(n) sigma_max``,
    ``c = ERROR_SAFETY (d0 + 8)``; Weyl then bounds the change of sigma_min. ``inf`` where
    ``sigma_min == 0``.
    """
    if not sigma_min > 0:
        return math.inf
    return ERROR_SAFETY * (d0 + 8) * EPS32 * math.sqrt(n) * sigma_max / sigma_min


class StreamedR:
    """The R factor of ``F`` (rows x n) accumulated from row blocks; see the module rules.

    ``add_block(F_b)`` folds ``F_b`` (b x n, float64, NumPy or CuPy) in; ``R`` is the current
    n x n upper-triangular factor (rows with fewer than n rows fed so far are padded with zeros);
    ``singular_values()`` returns the n singular values of R (= those of F up to rounding), ascending.
    """

    def __init__(self, n: int, xp=None):
        self.n = int(n)
        self.rows = 0
        self.xp = np if xp is None else xp
        self.R = None

    def add_block(self, F) -> None:
        xp = array_namespace(F)
        b, n = F.shape
        if n != self.n:
            raise ValueError(f"a block of {n} columns fed to the R factor of {self.n} columns")
        if b == 0:
            return
        self.rows += b
        if backend_name(xp) != "numpy":
            stacked = F if self.R is None else xp.concatenate([self.R, F], axis=0)
            R = xp.linalg.qr(stacked, mode="r")
            self.R = _square_upper(xp, R, n)
            return
        from scipy.linalg import lapack  # noqa: PLC0415

        if self.R is None:
            qr, _tau, _work, info = lapack.dgeqrf(np.array(F, dtype=np.float64, order="F"), overwrite_a=1)
            _check(info, "dgeqrf")
            self.R = _square_upper(np, np.triu(qr[: min(b, n)]), n)
            return
        B = np.array(F, dtype=np.float64, order="F")
        nb = max(1, min(n, 64))
        R, _B, _T, info = lapack.dtpqrt(0, nb, self.R, B, overwrite_a=1, overwrite_b=1)
        _check(info, "dtpqrt")
        self.R = np.triu(R)

    def singular_values(self):
        """Singular values of R, ascending (float64 NumPy array of length n; zeros while rows < n)."""
        if self.R is None:
            return np.zeros(self.n)
        xp = array_namespace(self.R)
        s = xp.linalg.svd(self.R, compute_uv=False)
        return np.sort(np.asarray(to_numpy(s), dtype=np.float64))


def _square_upper(xp, R, n: int):
    """R padded with zero rows to n x n (fewer rows than columns fed so far), upper triangle kept."""
    R = xp.triu(R)
    if R.shape[0] < n:
        R = xp.concatenate([R, xp.zeros((n - R.shape[0], n), dtype=R.dtype)], axis=0)
    return xp.asfortranarray(R) if backend_name(xp) == "numpy" else R


def _check(info: int, name: str) -> None:
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK {name} failed (info = {info})")
