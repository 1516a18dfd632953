"""The few eigenvalues a trial needs, certified, without the dense O(n^3) tridiagonal reduction.

``extremes(M)`` returns ``lambda_min``, ``lambda_max`` and ``lambda_2`` (the second largest) of a
symmetric positive definite n x n ``M`` (``M0 = F^T F``), each with a bracket ``[lo, hi]``;
``spectral_norm_certified(A, B, beta=...)`` returns ``||A - beta B||_2`` of a symmetric
indefinite matrix (``M0 - E[M0]``) with a bracket, without forming ``A - beta B`` outside the
one workspace. Both fall back to the dense reduction (``route == "dense"``) below
``DENSE_BELOW_N`` (``NORM_DENSE_BELOW_N``) and whenever they cannot certify.

Rules of this module
- Arrays may be NumPy or CuPy (``array_namespace``); the large work is GEMM (``P @ M``),
  Cholesky (LAPACK / cuSOLVER ``potrf``) and triangular solves (``potrs``), called in place on
  one n x n workspace. The small projected problems (a few hundred rows) are solved on the host
  with NumPy/SciPy. The CuPy branch calls cuSOLVER's ``potrf``/``potrs`` directly (CuPy's own
  ``cholesky`` copies its input and does not report failure); it was not run in the session that
  wrote this module (no GPU there).
- Symmetric input: both triangles are read (GEMM) and must agree; the first row slab is checked.
- Deterministic: the start blocks come from ``Generator(Philox(SeedSequence(seed_key,
  spawn_key=(purpose,))))``; with the same inputs, BLAS and thread count, every bit repeats.

Method (chosen by measurement: ``studies/benchmark_extremes.py``; 1 BLAS thread as in a study
worker, shared 2-core machine, OpenBLAS)
- Top (lambda_max, lambda_2): block Lanczos on ``M`` (blocks of ``TOP_BLOCK`` = 8: ``P @ M``
  reads M once per block, 3.6 ms for 8 vectors against 1.05 ms for one GEMV at n = 2000), full
  reorthogonalization, then a Rayleigh-Ritz step on the converged Ritz vectors.
- Bottom (lambda_min): one Cholesky ``M = L L^T`` (its failure sends a singular or indefinite M
  to the dense route), block Lanczos on ``M^{-1}`` (``potrs``: shift-invert at shift 0, blocks
  of ``BOTTOM_BLOCK`` = 8), one more inverse-iteration step, and the Rayleigh quotient of that
  vector in M itself. The bottom of M0's spectrum is a soft edge (relative gaps 0.1-1% at
  d1 >= 4n): 30-51 blocks at n = 2000-4000, 12 at d1 = 1.05 n. Re-factoring at a shift close
  below a rough estimate (3 factorizations instead of 2) saves about 30 of those blocks:
  0.27 s against one factorization of 0.12 s at n = 2000, but 0.75 s against 0.8-1.1 s at
  n = 4000, and the factorization grows as n^3 while a block solve is memory-bound (n^2): the
  single shift wins where the route is used at all (n >= DENSE_BELOW_N).
- Certificates: one more Cholesky per one-sided bound that no Ritz value gives: 3 in all for
  ("min", "max", "second"), 1 for the top alone, 2 for the bottom alone, 2 for the norm. They
  dominate the cost (3 x 0.8 s of 2.6 s at n = 4000; dense eigvalsh 5.1 s there): the certified
  route is 2x faster than the dense reduction at n = 4000 and crosses it at n ~ 2300
  (``DENSE_BELOW_N``). Measured and rejected: a Frobenius-norm bound on the deflated top
  (||M||_F^2 - sum theta_i^2, no factorization) -- it certifies tanh/sigmoid spectra but never
  gelu's (the quadratic Hermite component makes the bulk's Frobenius norm exceed lambda_2).

Which inequality gives each end of a bracket (exact arithmetic; rounding below)
- lambda_min: hi = theta = x^T M x / x^T x (Courant-Fischer: lambda_min <= any Rayleigh quotient);
  lo = s where the Cholesky of ``M - s I`` succeeded (then ``M - s I`` is positive definite);
  s = min(theta, 1/nu_1) - max(rtol/2 |theta|, 4 d) - tau, d = (rho_T^2 / (nu_1 - nu_2)) / nu_1^2
  the Kato-Temple estimate of the error carried over from M^{-1} (nu: its Ritz values, rho_T: the
  residual there). The residual of x in M itself is useless for this (1e-3..1e-2 while theta is
  right to 1e-12: the Ritz vector's tiny components along the top eigenvectors, times lambda_max).
- lambda_2 (second largest): lo = theta_2, the second Ritz value of a Rayleigh-Ritz step on an
  orthonormal block (Cauchy interlacing: theta_2 <= lambda_2); hi = s where the Cholesky of
  ``s I - M + gamma y y^T`` succeeded, y the top Ritz vector: ``M - gamma y y^T`` is a rank-one
  negative update of M, so lambda_2(M) <= lambda_max(M - gamma y y^T) < s (Weyl interlacing).
- lambda_max: lo = theta_1 (Courant-Fischer); hi = theta_1 + rho_1^2 / (theta_1 - s)
  (Kato-Temple with the interval (s, inf), which holds lambda_max alone once lambda_2 < s is
  certified; Weyl's theta_1 + rho_1 if that is smaller), or, when lambda_2 is not asked for or
  lies within the tolerance of lambda_max, hi = s where the Cholesky of ``s I - M`` succeeded.
- ||D||_2, D = A - beta B: lo = max |theta| over Ritz values of D (each is a Rayleigh quotient,
  so |theta| <= ||D||_2); hi = s where the Cholesky of both ``s I - D`` and ``s I + D`` succeeded.
  (``certify=False``: the same lo, an estimated hi, no factorization.)

Rounding. Every end is widened by ``tau = C_ROUND * sqrt(n) * eps * scale`` (C_ROUND = 1;
scale = ||M||_2 or, for the norm, ``max(||D||_2, (||A||_F + |beta| ||B||_F) / sqrt(n))``): the
size of the dense solver's own error, which the brackets must hold to contain the dense values.
Measured: the dense lambda_max differs from the Ritz value by up to 7 eps lambda_max at n = 1000;
the largest s at which the Cholesky of ``M - s I`` still succeeds equals the dense lambda_min to
0.02 eps lambda_max (bisection, n = 1000, cond up to 9e8); Rayleigh quotients of unit vectors
are computed to ~ eps lambda_max / n here. A floating-point Cholesky success proves positive
definiteness of ``M - s I + E`` with ``||E||_2 <= gamma_{n+1} tr(M - s I)`` only (Demmel 1989,
worst case, gamma_k = k u / (1 - k u)); that worst-case slack is reported as
``Bracket.worst_slack`` for whoever needs the pessimistic statement (~ n u tr(M): 1e-9 to 1e-6
relative to lambda_min for the trial's matrices, far above any error seen).

Accuracy. The returned value is a Rayleigh quotient (theta above). Its distance to the exact
eigenvalue of the stored M is at most ``hi - lo``, which the method keeps below
``rtol |value| + 4 tau`` (else it falls back to dense): for lambda_max, lambda_2 and the norm
that is rtol (default 1e-10); for lambda_min it is rtol or ~ 3 sqrt(n) eps cond(M), whichever is
larger (cond = lambda_max / lambda_min; the dense solver's own error is ~ eps cond(M)). Measured
against dense eigvalsh (n = 1000, gelu/tanh/sigmoid, d1 = 1.05n..64n, cond up to 8.6e8): value
differences <= 1.5e-11 relative where cond <= 1.6e7, 1.3e-10 at cond = 8.6e8; every bracket
contained the dense value.

Memory (the trial's budget: M0, E[M0] and one more n x n buffer, plus one row block)
- ``extremes`` uses the one n x n workspace ``work`` (allocated if not given; pass the trial's
  spare buffer): it holds M's Cholesky factor during the bottom Lanczos, then each certificate
  ``M - s I`` / ``s I - M + gamma y y^T`` in turn (factored in place). The dense fallback copies
  M into ``work`` and reduces it in place (``overwrite_a``).
- ``spectral_norm_certified(A, B, beta=b)`` forms ``D = A - b B`` only inside ``work`` (slab by
  slab, in run_trial's rounding), runs the Krylov iteration on it, then overwrites it with
  ``s I - D`` and ``s I + D`` in turn. Without a workspace (``certify=False``) the products are
  ``P @ A - b (P @ B)`` and nothing n x n is allocated.
- Besides: the Krylov basis (grown by doubling, at most ``MAX_BASIS + 8`` vectors of n doubles:
  <= 1.6 x its final size while it grows; 150-420 vectors measured at n = 1000-4000), blocks of
  8 vectors and row slabs of 256 x n. Nothing allocates n x n besides ``work``
  (``tests/test_extremes.py`` checks the peak with tracemalloc).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np

from ..backend.xp import array_namespace, backend_name, to_numpy
from .spectra import eigvalsh

__all__ = [
    "Bracket", "ExtremesResult", "NormResult", "extremes", "spectral_norm_certified",
    "DENSE_BELOW_N", "NORM_DENSE_BELOW_N", "C_ROUND", "MAX_BASIS", "WHICH",
]

EPS = float(np.finfo(np.float64).eps)
#: Below this n ``extremes`` uses the dense reduction: the measured crossover with dense
#: ``eigvalsh`` (1 BLAS thread, as in a study worker; ``studies/benchmark_extremes.py``).
DENSE_BELOW_N = 2200
#: The same for ``spectral_norm_certified`` against dense ``eigvalsh`` of the difference.
NORM_DENSE_BELOW_N = 1000
#: Rounding allowance ``tau = C_ROUND * sqrt(n) * eps * ||M||_2`` added to every bracket end.
C_ROUND = 1.0
#: Block sizes of the three Krylov runs.
TOP_BLOCK = 8
BOTTOM_BLOCK = 8
NORM_BLOCK = 8
#: Most Krylov basis vectors per run; not converged by then -> dense fallback.
MAX_BASIS = 640
#: The eigenvalues ``extremes`` can return.
WHICH = ("min", "max", "second")
#: Krylov convergence target, as a fraction of rtol.
_KRYLOV_FRACTION = 1.0 / 16.0
_PURPOSE = {"top": 1, "bottom": 2, "norm": 3}
_DEFAULT_ENTROPY = 0x5EED_0E47
_SLAB = 256


class _CannotCertify(Exception):
    """Raised inside the certified route; the caller falls back to the dense reduction."""


@dataclass(frozen=True)
class Bracket:
    """One eigenvalue (or norm): ``value`` and ``lo <= exact <= hi`` (see the module docstring).

    ``lo_by`` / ``hi_by`` name the inequality behind each end; ``residual`` is ``||M x - value x||``
    of the unit Ritz vector (NaN on the dense route); ``worst_slack`` is the worst-case widening
    a floating-point Cholesky certificate would need (Demmel's bound; 0 for ends not given by one).
    """

    value: float
    lo: float
    hi: float
    lo_by: str
    hi_by: str
    residual: float = math.nan
    worst_slack: float = 0.0

    @property
    def width(self) -> float:
        return self.hi - self.lo


@dataclass(frozen=True)
class ExtremesResult:
    """What ``extremes`` returns: ``brackets`` by name ("min", "max", "second"), the ``route``
    ("certified" or "dense"), why it is dense (``reason``), counts of the work done
    (``iterations``: block steps and basis size per Krylov run, ``vectors`` = operator applications
    to single vectors, ``factorizations`` = Cholesky calls including ``failed_factorizations``)
    and the rounding allowance ``tau``."""

    brackets: dict
    route: str
    reason: str
    iterations: dict
    tau: float

    def __getitem__(self, name: str) -> Bracket:
        return self.brackets[name]

    @property
    def values(self) -> dict:
        return {k: b.value for k, b in self.brackets.items()}


@dataclass(frozen=True)
class NormResult:
    """What ``spectral_norm_certified`` returns: the norm as a :class:`Bracket` plus route, reason,
    iteration counts and the rounding allowance (as in :class:`ExtremesResult`)."""

    bracket: Bracket
    route: str
    reason: str
    iterations: dict
    tau: float

    @property
    def value(self) -> float:
        return self.bracket.value


# --------------------------------------------------------------------------- validation


def _check_square(M, name: str):
    if getattr(M, "ndim", None) != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be a square 2-D matrix, got shape {getattr(M, 'shape', None)}")
    if M.shape[0] < 1:
        raise ValueError(f"{name} is empty (shape {M.shape})")
    if M.dtype != np.float64:
        raise ValueError(f"{name} must be float64, got {M.dtype}")


def _check_finite_symmetric(xp, M, name: str):
    n = M.shape[0]
    if not math.isfinite(float(xp.sum(M))):  # one pass; a finite sum means finite entries
        for r0 in range(0, n, _SLAB):  # overflow or a real NaN/inf: look, slab by slab
            if not bool(xp.isfinite(M[r0:r0 + _SLAB]).all()):
                raise ValueError(f"{name} contains NaN or inf")
    s = min(_SLAB, n)
    top = M[:s, :]
    scale = float(xp.abs(top).max())
    diff = top - M[:, :s].T
    xp.abs(diff, out=diff)
    asym = float(diff.max())
    if asym > 1e-12 * max(scale, np.finfo(np.float64).tiny):
        raise ValueError(f"{name} is not symmetric (first {s} rows differ from the first {s} "
                         f"columns by {asym:.3g}, entries up to {scale:.3g}); pass (M + M.T) / 2")


def _frobenius(xp, A) -> float:
    """||A||_F without an n x n temporary (a dot product of the contiguous buffer with itself)."""
    a = A.ravel(order="K") if (A.flags.c_contiguous or A.flags.f_contiguous) else None
    if a is None:
        return float(sum(float((A[r0:r0 + _SLAB] ** 2).sum()) for r0 in range(0, A.shape[0], _SLAB)) ** 0.5)
    return float(xp.sqrt(xp.dot(a, a)))


def _check_rtol(rtol) -> float:
    if isinstance(rtol, bool) or not isinstance(rtol, Real) or not (1e-14 <= float(rtol) <= 1e-2):
        raise ValueError(f"rtol must be a number in [1e-14, 1e-2], got {rtol!r}")
    return float(rtol)


def _entropy(seed_key) -> list[int]:
    if seed_key is None:
        return [_DEFAULT_ENTROPY]
    if isinstance(seed_key, (bool, np.bool_)):
        raise ValueError(f"seed_key must be a uint32 key array or a non-negative int, got {seed_key!r}")
    if isinstance(seed_key, Integral):
        if seed_key < 0:
            raise ValueError(f"seed_key must be non-negative, got {seed_key!r}")
        return [int(seed_key)]
    key = np.asarray(seed_key)
    if key.dtype != np.uint32 or key.ndim != 1 or key.size < 1:
        raise ValueError("seed_key must be a 1-D uint32 array (e.g. rmt_engine.sampling.rng.stream_key(...)) "
                         f"or a non-negative int, got dtype {key.dtype} shape {key.shape}")
    return [int(k) for k in key]


def _start_block(entropy, purpose: str, b: int, n: int) -> np.ndarray:
    ss = np.random.SeedSequence(entropy, spawn_key=(_PURPOSE[purpose],))
    return np.random.Generator(np.random.Philox(ss)).standard_normal((b, n))


def _workspace(xp, n: int, work, inputs):
    if work is None:
        return xp.empty((n, n), dtype=xp.float64)
    if array_namespace(work) is not xp:
        raise ValueError("work must live on the same backend as the matrix")
    if getattr(work, "shape", None) != (n, n) or work.dtype != np.float64:
        raise ValueError(f"work must be a float64 ({n}, {n}) array, got "
                         f"{getattr(work, 'dtype', None)} {getattr(work, 'shape', None)}")
    if not (work.flags.c_contiguous or work.flags.f_contiguous):
        raise ValueError("work must be C- or F-contiguous")
    for a in inputs:
        if a is not None and _shares_memory(xp, work, a):
            raise ValueError("work must not share memory with the input matrices (it is overwritten)")
    return work


def _shares_memory(xp, a, b) -> bool:
    if backend_name(xp) == "numpy":
        return bool(np.shares_memory(a, b))
    return bool(xp.shares_memory(a, b)) if hasattr(xp, "shares_memory") else a.data.ptr == b.data.ptr


# --------------------------------------------------------------------------- in-place Cholesky


class _Factor:
    """The n x n workspace as a factorization: ``fill`` it, ``factor()`` it in place, ``solve``."""

    def __init__(self, xp, work):
        self.xp = xp
        self.work = work
        self.numpy = backend_name(xp) == "numpy"
        # LAPACK sees the column-major view; the matrix is symmetric, so W and W.T are the same.
        self.colmajor = work if work.flags.f_contiguous else work.T
        self.count = 0
        self.failed = 0

    def factor(self) -> bool:
        self.count += 1
        if self.numpy:
            from scipy.linalg import lapack  # noqa: PLC0415

            c, info = lapack.dpotrf(self.colmajor, lower=0, clean=0, overwrite_a=1)
            if not np.shares_memory(c, self.work):  # pragma: no cover - f2py contract
                raise RuntimeError("dpotrf did not factor the workspace in place")
        else:
            info = _cupy_potrf(self.xp, self.colmajor)
        if info != 0:
            self.failed += 1
        return info == 0

    def solve(self, P):
        """``(M - s I)^{-1} P^T``, transposed back: P is (b, n), so is the result."""
        if self.numpy:
            from scipy.linalg import lapack  # noqa: PLC0415

            x, info = lapack.dpotrs(self.colmajor, P.T, lower=0)
            if info != 0:  # pragma: no cover - only for invalid arguments
                raise RuntimeError(f"dpotrs failed (info={info})")
            return x.T
        return _cupy_potrs(self.xp, self.colmajor, P)


def _cusolver_modules():
    try:
        from cupy_backends.cuda.libs import cublas, cusolver  # noqa: PLC0415
    except ImportError:  # older CuPy
        from cupy.cuda import cublas, cusolver  # noqa: PLC0415
    from cupy.cuda import device  # noqa: PLC0415

    return cublas, cusolver, device


def _cupy_potrf(cp, A) -> int:
    """cuSOLVER dpotrf on the column-major ``A`` (its upper triangle), in place; returns info."""
    cublas, cusolver, device = _cusolver_modules()
    handle = device.get_cusolver_handle()
    n = A.shape[0]
    uplo = cublas.CUBLAS_FILL_MODE_UPPER
    ptr = A.data.ptr
    lwork = cusolver.dpotrf_bufferSize(handle, uplo, n, ptr, n)
    ws = cp.empty(max(1, lwork), dtype=cp.float64)
    info = cp.zeros(1, dtype=cp.int32)
    cusolver.dpotrf(handle, uplo, n, ptr, n, ws.data.ptr, lwork, info.data.ptr)
    return int(info.get()[0])


def _cupy_potrs(cp, A, P):
    cublas, cusolver, device = _cusolver_modules()
    handle = device.get_cusolver_handle()
    n = A.shape[0]
    X = cp.array(P, dtype=cp.float64, order="C", copy=True)  # (b, n) C = (n, b) column-major
    info = cp.zeros(1, dtype=cp.int32)
    cusolver.dpotrs(handle, cublas.CUBLAS_FILL_MODE_UPPER, n, X.shape[0], A.data.ptr, n,
                    X.data.ptr, n, info.data.ptr)
    return X


def _fill(xp, work, A, B=None, beta=0.0, sign=1.0, shift=0.0):
    """``work = sign * (A - beta B) + shift I``, slab by slab (temporaries of one slab of rows).

    The difference is rounded as ``run_trial``'s ``K * (-d1) + M0``: ``fl(A - fl(beta B))``.
    """
    n = A.shape[0]
    tmp = xp.empty((min(_SLAB, n), n), dtype=xp.float64) if B is not None else None
    for r0 in range(0, n, _SLAB):
        r1 = min(n, r0 + _SLAB)
        w = work[r0:r1]
        if B is None:
            if sign < 0:
                xp.negative(A[r0:r1], out=w)
            else:
                w[...] = A[r0:r1]
            continue
        t = tmp[:r1 - r0]
        xp.multiply(B[r0:r1], beta, out=t)
        if sign < 0:
            xp.subtract(t, A[r0:r1], out=w)
        else:
            xp.subtract(A[r0:r1], t, out=w)
    if shift:
        idx = xp.arange(n)
        work[idx, idx] += shift


def _add_rank_one(work, y, gamma: float):
    """``work += gamma y y^T`` slab by slab."""
    n = work.shape[0]
    for r0 in range(0, n, _SLAB):
        r1 = min(n, r0 + _SLAB)
        work[r0:r1] += (gamma * y[r0:r1])[:, None] * y[None, :]


def _worst_slack(n: int, trace_abs: float) -> float:
    """Demmel's bound gamma_{n+1} tr(A) on the backward error of a successful Cholesky of A."""
    u = EPS / 2
    g = (n + 1) * u / (1 - (n + 1) * u)
    return g * trace_abs


def _trace(xp, M) -> float:
    return float(xp.trace(M))


# --------------------------------------------------------------------------- block Lanczos


@dataclass
class _Krylov:
    """A finished block Lanczos run: Ritz vectors (rows), values, residual estimates, counts."""

    vectors: object = None  # (k_sel, n) on the backend
    values: np.ndarray = None
    steps: int = 0
    basis: int = 0
    converged: bool = False
    breakdown: bool = False
    extra: dict = field(default_factory=dict)


def _band_ritz(band, k, R, lo, hi):
    """Eigenpairs ``lo..hi`` (ascending indices) of the k x k band matrix, with Lanczos residual norms."""
    from scipy.linalg import eig_banded  # noqa: PLC0415

    b = band.shape[0] - 1
    w, s = eig_banded(band[:, :k], lower=True, select="i", select_range=(lo, hi), check_finite=False)
    res = np.linalg.norm(R @ s[k - b:k, :], axis=0) if R is not None else np.zeros(len(w))
    return w, s, res


def _errors(w, res, all_w):
    """Error estimates ``min(rho, rho^2 / gap)`` of Ritz values ``w`` with residuals ``res``.

    ``gap``: distance to the nearest other Ritz value of ``all_w`` (the one closest to the value
    itself -- the same Ritz value, possibly recomputed -- is left out). A Kato-Temple-type
    estimate, used only to decide when to stop and where to put a shift; the certificates check it.
    """
    all_w = np.asarray(all_w, dtype=float)
    err = np.empty(len(w))
    for i, (t, r) in enumerate(zip(w, res)):
        d = np.abs(all_w - t)
        if d.size:
            d = np.delete(d, int(np.argmin(d)))
        gap = float(np.min(d)) if d.size else math.inf
        err[i] = min(r, r * r / gap) if gap > 0 else r
    return err


def _lanczos(xp, op, start, *, ends, tol, max_dim, scale_fn):
    """Block Lanczos with full reorthogonalization (classical Gram-Schmidt, twice).

    ``op(P)`` maps a (b, n) block of row vectors to ``(Op P^T)^T``. ``ends``: ``{"top": c, "bottom": c}``
    wanted Ritz counts at each end. Converged when every wanted Ritz value's error estimate
    ``min(rho, rho^2/gap)`` is below ``tol * scale_fn(values)``. Checks run every step for the
    first 8 blocks, then every ~k/8 vectors (the projected eigenproblem is cheap but not free).
    """
    b, n = start.shape
    max_dim = max(b, (min(max_dim, n - b) // b) * b)
    cap = min(max_dim + b, 16 * b)  # the basis grows by doubling: memory follows the need
    Q = xp.empty((cap, n), dtype=xp.float64)
    q0, _ = xp.linalg.qr(xp.asarray(start).T)
    Q[:b] = q0.T
    band = np.zeros((b + 1, max_dim + b))
    k, steps, next_check = 0, 0, 0
    out = _Krylov()
    anorm = 0.0
    while True:
        j0, k = k, k + b
        W = op(Q[j0:k])
        C = W @ Q[:k].T
        W -= C @ Q[:k]
        C2 = W @ Q[:k].T
        W -= C2 @ Q[:k]
        A = to_numpy(C[:, j0:k] + C2[:, j0:k])
        A = (A + A.T) / 2
        for c in range(b):
            band[0:b - c, j0 + c] = A[c:, c]
        q, R = xp.linalg.qr(W.T)
        R = np.asarray(to_numpy(R))
        steps += 1
        anorm = max(anorm, float(np.abs(A).max()), float(np.abs(R).max()))
        breakdown = float(np.min(np.abs(np.diag(R)))) <= 1e-12 * anorm
        last = k + b > max_dim
        if breakdown or last or k >= next_check:
            next_check = k + b * max(1, k // (8 * b)) if k >= 8 * b else k + b
            sel, vals, coords, res = [], [], [], []
            top, bottom = ends.get("top", 0), ends.get("bottom", 0)
            spare = 2  # neighbours for the gap estimates
            if top:
                hi = k - 1
                lo = max(0, k - top - spare)
                w, s, r = _band_ritz(band, k, R, lo, hi)
                vals.append(w), coords.append(s), res.append(r)
                sel.append(("top", w, s, r, top))
            if bottom:
                lo, hi = 0, min(k - 1, bottom + spare - 1)
                w, s, r = _band_ritz(band, k, R, lo, hi)
                sel.append(("bottom", w, s, r, bottom))
            all_w = np.concatenate([x[1] for x in sel])
            scale = scale_fn(all_w)
            ok = True
            for end, w, s, r, cnt in sel:
                err = _errors(w, r, all_w)
                idx = np.arange(len(w) - cnt, len(w)) if end == "top" else np.arange(cnt)
                ok &= bool(np.all(err[idx] <= tol * np.maximum(scale(w[idx]), np.finfo(float).tiny)))
            if ok or breakdown or last:
                vecs, values = [], []
                for end, w, s, r, cnt in sel:
                    idx = np.arange(len(w) - cnt, len(w)) if end == "top" else np.arange(cnt)
                    vecs.append(s[:, idx])
                    values.append(w[idx])
                S = np.concatenate(vecs, axis=1)
                out.vectors = xp.asarray(S.T) @ Q[:k]
                out.values = np.concatenate(values)
                out.steps, out.basis, out.converged, out.breakdown = steps, k, ok, breakdown
                out.extra = {end: (w, r) for end, w, s, r, cnt in sel}
                return out
        if k + b > cap:
            cap = min(max_dim + b, 2 * cap)
            grown = xp.empty((cap, n), dtype=xp.float64)
            grown[:k] = Q[:k]
            Q = grown
        Q[k:k + b] = q.T
        for c in range(b):
            for a in range(c + 1):
                band[b + a - c, j0 + c] = R[a, c]


def _per_value(all_w):
    """Convergence scale: each Ritz value itself (relative accuracy of every wanted value)."""
    return np.abs


def _largest(all_w):
    """Convergence scale: the largest |Ritz value| (the norm), for every wanted value."""
    top = float(np.max(np.abs(all_w)))
    return lambda v: np.full(len(v), top)


def _rayleigh_ritz(xp, apply, X):
    """Orthonormalize the rows of X, Rayleigh-Ritz with ``apply``: values (descending), unit
    vectors (rows), explicit residual norms ``||Op y - theta y||``."""
    q, _ = xp.linalg.qr(X.T)
    Y = q.T
    AY = apply(Y)
    H = np.asarray(to_numpy(Y @ AY.T))
    H = (H + H.T) / 2
    theta, S = np.linalg.eigh(H)
    order = np.argsort(theta)[::-1]
    theta, S = theta[order], S[:, order]
    Sd = xp.asarray(S.T)
    Yr = Sd @ Y
    AYr = Sd @ AY
    Rm = AYr - xp.asarray(theta)[:, None] * Yr
    rho = np.asarray(to_numpy(xp.sqrt((Rm * Rm).sum(axis=1))))
    return theta, Yr, rho


# --------------------------------------------------------------------------- dense route


def _dense_eigvalsh_inplace(xp, work):
    """All eigenvalues (ascending, host) of the symmetric matrix in ``work``, overwriting it."""
    return np.asarray(to_numpy(eigvalsh(work, overwrite=True)))


def _dense_bracket(v: float, tau: float) -> Bracket:
    by = "dense eigvalsh: value +- tau (the solver's normwise error level, not a certificate)"
    return Bracket(float(v), float(v) - tau, float(v) + tau, by, by)


def _tau(n: int, scale: float) -> float:
    return C_ROUND * math.sqrt(n) * EPS * scale


def _dense_extremes(xp, M, which, work, reason, counts) -> ExtremesResult:
    n = M.shape[0]
    if work is None:
        work = xp.empty((n, n), dtype=xp.float64)
    work[...] = M
    ev = _dense_eigvalsh_inplace(xp, work)
    tau = _tau(n, float(max(abs(ev[0]), abs(ev[-1]))))
    named = {"min": ev[0], "max": ev[-1], "second": ev[-2] if n >= 2 else math.nan}
    brackets = {w: _dense_bracket(named[w], tau) for w in which}
    return ExtremesResult(brackets, "dense", reason, counts, tau)


# --------------------------------------------------------------------------- extremes


def _which(which) -> tuple:
    if isinstance(which, str):
        which = (which,)
    try:
        names = tuple(dict.fromkeys(which))
    except TypeError:
        raise ValueError(f"which must be a sequence of {WHICH}, got {which!r}") from None
    bad = [w for w in names if w not in WHICH]
    if bad or not names:
        raise ValueError(f"which must be a non-empty subset of {WHICH}, got {which!r}")
    return names


def _check_method(method):
    if method not in ("auto", "certified", "dense"):
        raise ValueError(f"unknown method {method!r}; expected 'auto', 'certified' or 'dense'")


def extremes(M, which=WHICH, *, seed_key=None, rtol: float = 1e-10, work=None,
             method: str = "auto") -> ExtremesResult:
    """``lambda_min`` ("min"), ``lambda_max`` ("max"), ``lambda_2`` ("second", the second largest)
    of the symmetric positive definite n x n ``M`` (NumPy or CuPy, float64), with brackets.

    ``rtol``: target relative width of each bracket (1e-14 .. 1e-2); the achieved width is at most
    ``rtol |value| + 4 tau`` (tau: module docstring), else the dense route is taken.
    ``seed_key``: the start vectors' key (``rmt_engine.sampling.rng.stream_key(...)``, a 1-D uint32 array,
    or a non-negative int; None: a fixed default), so results repeat bitwise.
    ``work``: an optional float64 n x n C- or F-contiguous buffer, overwritten (the Cholesky
    factors live there); allocated if None.
    ``method``: "auto" (dense below ``DENSE_BELOW_N``, certified otherwise, dense if that
    cannot certify), "certified" (no size switch; still falls back), or "dense".
    Returns an :class:`ExtremesResult`; ``result["min"].value`` etc. Raises ValueError for a
    non-square, non-float64, empty, non-finite or non-symmetric M and for bad arguments.
    """
    xp = array_namespace(M)
    _check_square(M, "M")
    names = _which(which)
    rtol = _check_rtol(rtol)
    _check_method(method)
    entropy = _entropy(seed_key)
    n = M.shape[0]
    work = _workspace(xp, n, work, (M,))
    _check_finite_symmetric(xp, M, "M")
    counts = {"vectors": 0, "factorizations": 0, "failed_factorizations": 0}
    if method == "dense" or (method == "auto" and n < DENSE_BELOW_N) or n < 4 * max(TOP_BLOCK, BOTTOM_BLOCK):
        reason = "method='dense'" if method == "dense" else f"n = {n} < DENSE_BELOW_N = {DENSE_BELOW_N}"
        return _dense_extremes(xp, M, names, work, reason, counts)
    fac = _Factor(xp, work)
    try:
        brackets, tau = _certified_extremes(xp, M, names, rtol, entropy, fac, counts)
    except _CannotCertify as exc:
        counts["factorizations"], counts["failed_factorizations"] = fac.count, fac.failed
        return _dense_extremes(xp, M, names, work, str(exc), counts)
    counts["factorizations"], counts["failed_factorizations"] = fac.count, fac.failed
    return ExtremesResult(brackets, "certified", "", counts, tau)


def _matmul_op(M, counts):
    def op(P):
        counts["vectors"] += P.shape[0]
        return P @ M
    return op


def _certified_extremes(xp, M, names, rtol, entropy, fac, counts):
    n = M.shape[0]
    want_top = "max" in names or "second" in names
    tol = rtol * _KRYLOV_FRACTION
    apply_M = _matmul_op(M, counts)
    # ---- top: block Lanczos on M (also the scale of the rounding allowance)
    top_count = 2 if "second" in names else 1
    kr = _lanczos(xp, apply_M, _start_block(entropy, "top", TOP_BLOCK, n),
                  ends={"top": top_count}, tol=tol if want_top else 1e-2, max_dim=MAX_BASIS,
                  scale_fn=_per_value)
    counts["top"] = {"steps": kr.steps, "basis": kr.basis}
    if want_top and not kr.converged:
        raise _CannotCertify(f"top Krylov run did not converge within {kr.basis} vectors")
    theta_top, Y, rho_top = _rayleigh_ritz(xp, apply_M, kr.vectors)
    scale = float(abs(theta_top[0]))
    brackets = {}
    if "min" in names:
        brackets["min"], scale = _certify_bottom(xp, M, rtol, tol, entropy, fac, counts, apply_M, scale)
    tau = _tau(n, scale)
    if want_top:
        brackets.update(_certify_top(xp, M, names, rtol, theta_top, Y, rho_top, kr, fac, tau))
    if "min" in names:  # its rounding allowance needed the scale; add it now
        b = brackets["min"]
        brackets["min"] = Bracket(b.value, b.lo - tau, b.hi + tau, b.lo_by, b.hi_by, b.residual, b.worst_slack)
        _check_width(brackets["min"], rtol, tau, "lambda_min")
    return {k: brackets[k] for k in names}, tau


def _check_width(b: Bracket, rtol: float, tau: float, label: str):
    if not (b.lo <= b.value <= b.hi) or b.width > rtol * abs(b.value) + 4 * tau:
        raise _CannotCertify(f"{label}: bracket [{b.lo:.17g}, {b.hi:.17g}] wider than rtol |value| + 4 tau")


def _certify_bottom(xp, M, rtol, tol, entropy, fac, counts, apply_M, scale):
    """Cholesky of M, block Lanczos on M^{-1}, certificate Cholesky of M - s I."""
    n = M.shape[0]
    fac.work[...] = M
    if not fac.factor():
        raise _CannotCertify("Cholesky of M failed: M is not numerically positive definite "
                             "(singular, e.g. d1 < n, or indefinite)")

    def op(P):
        counts["vectors"] += P.shape[0]
        return fac.solve(P)

    kr = _lanczos(xp, op, _start_block(entropy, "bottom", BOTTOM_BLOCK, n), ends={"top": 1},
                  tol=tol, max_dim=MAX_BASIS, scale_fn=_per_value)
    counts["bottom"] = {"steps": kr.steps, "basis": kr.basis}
    if not kr.converged:
        raise _CannotCertify(f"bottom Krylov run (on M^-1) did not converge within {kr.basis} vectors")
    nu, r_nu = kr.extra["top"]
    x = kr.vectors[-1:]
    # One more inverse-iteration step damps the Ritz vector's components along eigenvalue
    # lambda_i by lambda_min / lambda_i: they are what limits the Rayleigh quotient in M
    # (measured at n = 1000, d1 = 1.05 n: 3e-9 relative before, ~1e-13 after).
    x = op(x)
    x = x / xp.sqrt((x * x).sum())
    Mx = apply_M(x)
    theta = float((x * Mx).sum())  # Rayleigh quotient in M itself: the upper end
    rho = float(xp.sqrt(((Mx - theta * x) ** 2).sum()))
    # Where to put the certificate shift. The residual in M is dominated by the Ritz vector's
    # (tiny) components along the top eigenvectors, amplified by lambda_max: measured 1e-3..1e-2
    # while theta was already right to 1e-12, so its Kato-Temple estimate is useless here. The
    # estimate in M^{-1} is sharp: d(nu) ~ rho_T^2 / (nu_1 - nu_2), d(lambda) ~ d(nu) / nu_1^2.
    nu1, nu2 = float(nu[-1]), (float(nu[-2]) if len(nu) >= 2 else 0.0)
    d_nu = float(_errors(np.array([nu1]), np.array([r_nu[-1]]), nu)[0])
    d_lam = d_nu / (nu1 * nu1)
    scale = max(scale, abs(theta))
    tau = _tau(n, scale)
    margin = max(rtol / 2 * abs(theta), 4 * d_lam) + tau
    base = min(theta, 1.0 / nu1)
    for attempt in range(2):
        s = base - margin
        _fill(xp, fac.work, M, shift=-s)
        if fac.factor():
            slack = _worst_slack(n, _trace(xp, M) - n * s)
            return Bracket(theta, s, theta,
                           "Cholesky of M - s I succeeded (M - s I positive definite)",
                           "Rayleigh quotient of the Ritz vector (Courant-Fischer)", rho, slack), scale
        margin *= 16
    raise _CannotCertify("certificate Cholesky of M - s I failed twice (lambda_min estimate not certified)")


def _certify_top(xp, M, names, rtol, theta, Y, rho, kr, fac, tau):
    """One certificate Cholesky: ``s I - M + gamma y y^T`` (lambda_2 < s) or ``s I - M``."""
    n = M.shape[0]
    w_all, r_all = kr.extra["top"]
    all_w = np.asarray(w_all)
    out = {}
    t1, r1 = float(theta[0]), float(rho[0])
    err = lambda t, r: float(_errors(np.array([t]), np.array([r]), all_w)[0])  # noqa: E731
    if "second" in names and len(theta) >= 2:
        t2, r2 = float(theta[1]), float(rho[1])
        margin = max(rtol / 2 * abs(t2), 4 * err(t2, r2)) + tau
        deflate = t1 - (t2 + margin) > max(rtol * abs(t1), 4 * tau)
    else:
        t2 = r2 = math.nan
        deflate = False
    tr = _trace(xp, M)
    for attempt in range(2):
        if deflate:
            s = t2 + margin
            gap = t1 - t2
            gamma = gap + max(gap, abs(t2), tau)
            _fill(xp, fac.work, M, sign=-1.0, shift=s)
            _add_rank_one(fac.work, Y[0], gamma)
            if fac.factor():
                slack = _worst_slack(n, n * s - tr + gamma)
                kt = t1 + r1 * r1 / (t1 - s)
                hi_max, hi_by = kt, "Kato-Temple: (s, inf) holds lambda_max alone, lambda_2 < s certified"
                if r1 < t1 - s and t1 + r1 < kt:  # Weyl is sharper when rho_1 is not small
                    hi_max, hi_by = t1 + r1, "Weyl: an eigenvalue within rho_1 of theta_1, above s > lambda_2"
                out["max"] = Bracket(t1, t1 - tau, hi_max + tau, "Rayleigh quotient (Courant-Fischer)",
                                     hi_by, r1, 0.0)
                out["second"] = Bracket(t2, t2 - tau, s + tau,
                                        "second Ritz value (Cauchy interlacing)",
                                        "Cholesky of s I - M + gamma y y^T succeeded (rank-one interlacing)",
                                        r2, slack)
                break
            margin *= 16
            continue
        margin1 = max(rtol / 2 * abs(t1), 4 * err(t1, r1)) + tau
        s = t1 + margin1 * (16 ** attempt)
        _fill(xp, fac.work, M, sign=-1.0, shift=s)
        if fac.factor():
            slack = _worst_slack(n, n * s - tr)
            by = "Cholesky of s I - M succeeded (lambda_max < s)"
            out["max"] = Bracket(t1, t1 - tau, s + tau, "Rayleigh quotient (Courant-Fischer)", by, r1, slack)
            if "second" in names:
                out["second"] = Bracket(t2, t2 - tau, s + tau, "second Ritz value (Cauchy interlacing)",
                                        by + " and lambda_2 <= lambda_max", r2, slack)
            break
    else:
        raise _CannotCertify("certificate Cholesky for the top eigenvalues failed twice")
    for key, label in (("max", "lambda_max"), ("second", "lambda_2")):
        if key in out and key in names:
            _check_width(out[key], rtol, tau, label)
    return {k: v for k, v in out.items() if k in names}


# --------------------------------------------------------------------------- spectral norm


def spectral_norm_certified(A, B=None, *, beta: float = 1.0, seed_key=None, rtol: float = 1e-10,
                            work=None, method: str = "auto", certify: bool = True) -> NormResult:
    """``||A - beta B||_2`` (largest |eigenvalue|) of symmetric n x n ``A`` (and ``B``), with a bracket.

    ``A - beta B`` is never formed except inside ``work`` (float64 n x n, overwritten; allocated if
    None): the Krylov products are ``P @ A - beta (P @ B)``, the certificates fill ``work`` with
    ``s I -+ (A - beta B)`` in the rounding of ``run_trial``'s ``K * (-d1) + M0``. Method: block
    Lanczos on the difference (both ends), then Cholesky certificates of ``s I - D`` and
    ``s I + D`` (two factorizations). ``rtol``, ``seed_key``, ``method``: as in :func:`extremes`.
    ``certify=False`` skips the two factorizations (``work`` is then neither needed nor touched
    unless the dense fallback runs): the same Krylov value, route ``"lanczos"``, bracket
    ``[|theta| - tau, |theta| + 4 err + tau]`` whose upper end is only an estimate (err =
    min(rho, rho^2 / Ritz gap), Kato-Temple with the Ritz gap standing in for the true one) --
    about the cost of ARPACK, with a proven lower end.
    Returns a :class:`NormResult` (``.value``, ``.bracket``, ``.route``).
    """
    xp = array_namespace(A) if B is None else array_namespace(A, B)
    _check_square(A, "A")
    if B is not None:
        _check_square(B, "B")
        if B.shape != A.shape:
            raise ValueError(f"A and B must have the same shape, got {A.shape} and {B.shape}")
        if isinstance(beta, bool) or not isinstance(beta, Real) or not math.isfinite(beta):
            raise ValueError(f"beta must be a finite real number, got {beta!r}")
    rtol = _check_rtol(rtol)
    _check_method(method)
    entropy = _entropy(seed_key)
    if not isinstance(certify, (bool, np.bool_)):
        raise ValueError(f"certify must be True or False, got {certify!r}")
    n = A.shape[0]
    small = method == "dense" or (method == "auto" and n < NORM_DENSE_BELOW_N) or n < 4 * NORM_BLOCK
    if certify or work is not None or small:
        work = _workspace(xp, n, work, (A, B))
    _check_finite_symmetric(xp, A, "A")
    if B is not None:
        _check_finite_symmetric(xp, B, "B")
    beta = float(beta)
    counts = {"vectors": 0, "factorizations": 0, "failed_factorizations": 0}
    if small:
        reason = "method='dense'" if method == "dense" else f"n = {n} < NORM_DENSE_BELOW_N = {NORM_DENSE_BELOW_N}"
        return _dense_norm(xp, A, B, beta, work, reason, counts)
    fac = _Factor(xp, work) if work is not None else None
    try:
        bracket, tau = _certified_norm(xp, A, B, beta, rtol, entropy, fac, counts, bool(certify))
    except _CannotCertify as exc:
        if fac is not None:
            counts["factorizations"], counts["failed_factorizations"] = fac.count, fac.failed
        else:
            work = _workspace(xp, n, None, ())
        return _dense_norm(xp, A, B, beta, work, str(exc), counts)
    if fac is not None:
        counts["factorizations"], counts["failed_factorizations"] = fac.count, fac.failed
    return NormResult(bracket, "certified" if certify else "lanczos", "", counts, tau)


def _dense_norm(xp, A, B, beta, work, reason, counts) -> NormResult:
    n = A.shape[0]
    _fill(xp, work, A, B, beta)
    ev = _dense_eigvalsh_inplace(xp, work)
    v = float(max(abs(ev[0]), abs(ev[-1])))
    tau = _tau(n, v)
    return NormResult(_dense_bracket(v, tau), "dense", reason, counts, tau)


def _certified_norm(xp, A, B, beta, rtol, entropy, fac, counts, certify):
    n = A.shape[0]
    tol = rtol * _KRYLOV_FRACTION

    if fac is not None and B is not None:
        # The workspace holds D = fl(A - fl(beta B)) while the Krylov run needs it (one GEMM per
        # block instead of two; the same rounding as run_trial's deviation); the certificates
        # below overwrite it.
        _fill(xp, fac.work, A, B, beta)
        D = fac.work
    else:
        D = A if B is None else None

    def op(P):
        counts["vectors"] += P.shape[0]
        if D is not None:
            return P @ D
        out = P @ A
        out -= beta * (P @ B)
        return out

    kr = _lanczos(xp, op, _start_block(entropy, "norm", NORM_BLOCK, n), ends={"top": 1, "bottom": 1},
                  tol=tol, max_dim=MAX_BASIS,
                  scale_fn=_largest)
    counts["norm"] = {"steps": kr.steps, "basis": kr.basis}
    if not kr.converged:
        raise _CannotCertify(f"Krylov run on A - beta B did not converge within {kr.basis} vectors")
    theta, Y, rho = _rayleigh_ritz(xp, op, kr.vectors)
    t_hi, t_lo = float(theta[0]), float(theta[-1])
    r_hi, r_lo = float(rho[0]), float(rho[-1])
    norm = max(abs(t_hi), abs(t_lo))
    fro = _frobenius(xp, A) + (abs(beta) * _frobenius(xp, B) if B is not None else 0.0)
    tau = _tau(n, max(norm, fro / math.sqrt(n)))
    w_top, _ = kr.extra["top"]
    w_bot, _ = kr.extra["bottom"]
    all_w = np.concatenate([w_top, w_bot])
    e_hi = float(_errors(np.array([t_hi]), np.array([r_hi]), all_w)[0])
    e_lo = float(_errors(np.array([t_lo]), np.array([r_lo]), all_w)[0])
    margin = max(rtol / 2 * norm, 4 * (e_hi if abs(t_hi) >= abs(t_lo) else e_lo)) + tau
    s = max(norm + margin, abs(t_hi) + 4 * e_hi + tau, abs(t_lo) + 4 * e_lo + tau)
    if not certify:
        i = 0 if abs(t_hi) >= abs(t_lo) else -1
        e = e_hi if i == 0 else e_lo
        b = Bracket(norm, norm - tau, norm + 4 * e + tau,
                    "|Rayleigh quotient| of a Ritz vector <= ||D||_2",
                    "ESTIMATE, not a bound: 4 min(rho, rho^2 / Ritz gap) (Kato-Temple with the Ritz gap)",
                    float(rho[i]), 0.0)
        _check_width(b, rtol, tau, "||D||_2 (Lanczos)")
        return b, tau
    tr = float(xp.trace(A)) - (beta * float(xp.trace(B)) if B is not None else 0.0)
    for attempt in range(2):
        ok = True
        for sign in (-1.0, 1.0):  # s I - D, then s I + D
            _fill(xp, fac.work, A, B, beta, sign=sign, shift=s)
            if not fac.factor():
                ok = False
                break
        if ok:
            slack = _worst_slack(n, n * s + abs(tr))
            i = 0 if abs(t_hi) >= abs(t_lo) else -1
            b = Bracket(norm, norm - tau, s + tau, "|Rayleigh quotient| of a Ritz vector <= ||D||_2",
                        "Cholesky of s I - D and of s I + D succeeded (-s < eigenvalues < s)",
                        float(rho[i]), slack)
            _check_width(b, rtol, tau, "||D||_2")
            return b, tau
        s = norm + (s - norm) * 16
    raise _CannotCertify("certificate Cholesky of s I -+ D failed twice")
