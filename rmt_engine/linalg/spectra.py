"""Eigenvalues and singular values of the engine's symmetric matrices (M0, E[M0], G^{o t}, ...).

Rules of this module
- Arrays may be NumPy or CuPy; the namespace comes from the inputs (``array_namespace``).
  The one place that picks a dense symmetric solver per backend is ``_dense_eigvalsh``:
  ``scipy.linalg.eigvalsh(driver="evd")`` on NumPy, ``xp.linalg.eigvalsh`` on CuPy.
- Symmetric inputs: like LAPACK, the solvers read one triangle only (the lower one). If the two
  triangles of a matrix can differ by more than rounding, pass ``(M + M.T) / 2``.
- Scalars come back as Python floats; whole spectra stay on the input's backend.

Accuracy (Weyl / backward stability of the dense solvers): every eigenvalue of an n x n symmetric
``M`` is computed with absolute error ``~ c(n) eps ||M||_2`` (eps = 2.2e-16 in float64), so the
relative error of ``lambda_min`` is ``~ eps * cond(M)``. A singular value obtained from a Gram
matrix ``A^T A`` therefore has relative error ``~ eps * cond(A)^2 / 2``; ``extreme_singular_values``
with ``A`` given uses an SVD of ``A`` instead (relative error ``~ eps * cond(A)``).

Timings that chose the routes (this repo's 2-core CPU, OpenBLAS, n = 2000, best of 3,
PSD Wishart-like matrix; 1000 / 500 in brackets):
- full ``scipy.linalg.eigvalsh(driver="evd")``: 376 ms (49 ms, 15 ms); numpy's eigvalsh 369 ms;
- two ``subset_by_index`` calls with driver "evr" (lambda_min; lambda_2, lambda_max): 615 ms
  (68 ms, 13 ms): each call repeats the O(n^3) tridiagonal reduction, so subsets never pay here;
- ``scipy.sparse.linalg.eigsh(k=1, which="LM", tol=1e-12)``: 87 ms (33 ms, 4.9 ms) on the PSD
  matrix, 124 ms (25 ms, 7.1 ms) on a GOE-like indefinite one (dense: 373 ms), relative error
  <= 7e-15 in every case measured. Hence ``spectral_norm_sym`` uses Lanczos from n = 500 on NumPy.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np

from ..backend.xp import array_namespace, backend_name

#: From this size on, ``spectral_norm_sym`` uses ARPACK Lanczos on NumPy (3-4x faster at n=2000).
LANCZOS_MIN_N = 500
#: Lanczos stopping tolerance (ARPACK: residual <= tol * |Ritz value|).
LANCZOS_TOL = 1e-12
_V0_SEED = 0x5EED  # fixed start vector: spectral_norm_sym is deterministic


def _square(M, name: str = "M"):
    if getattr(M, "ndim", None) != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be a square 2-D matrix, got shape {getattr(M, 'shape', None)}")
    if M.shape[0] < 1:
        raise ValueError(f"{name} is empty (shape {M.shape})")
    if M.dtype.kind not in "fc":
        raise ValueError(f"{name} must have a floating dtype, got {M.dtype}")


def _dense_eigvalsh(M, overwrite: bool = False):
    """All eigenvalues, ascending, on the input's backend (the one backend dispatch).

    ``overwrite`` (NumPy, C- or F-contiguous float64): LAPACK works in ``M`` itself (a C-contiguous
    M is passed as its transpose, the same symmetric matrix). CuPy ignores it.
    """
    xp = array_namespace(M)
    if backend_name(xp) == "cupy":
        return xp.linalg.eigvalsh(M)
    import scipy.linalg  # noqa: PLC0415

    if overwrite and M.dtype == np.float64 and (M.flags.c_contiguous or M.flags.f_contiguous):
        return scipy.linalg.eigvalsh(M if M.flags.f_contiguous else M.T, overwrite_a=True, driver="evd")
    return scipy.linalg.eigvalsh(M, driver="evd")


def eigvalsh(M, *, overwrite: bool = False):
    """Ascending eigenvalues (shape ``(n,)``, same backend as ``M``) of the symmetric n x n ``M``.

    Dense divide and conquer (LAPACK ``syevd`` / cuSOLVER ``syevd``); only the lower triangle is
    read. Each eigenvalue has absolute error ~ eps ||M||_2, i.e. relative error of lambda_min
    ~ eps * cond(M). Raises ValueError for a non-square input (and SciPy's ValueError for NaN/inf).
    ``overwrite=True`` (NumPy, C- or F-contiguous float64 ``M``): LAPACK works in ``M`` itself,
    which is destroyed, instead of in an n x n copy (a C-contiguous M is passed as its transpose,
    the same symmetric matrix, so the upper triangle is read then). On CuPy it is ignored.
    """
    _square(M)
    return _dense_eigvalsh(M, overwrite)


def extreme_eigenvalues(M, *, second: bool = False, overwrite: bool = False) -> dict[str, float]:
    """``{"lambda_min", "lambda_max"}`` (and ``"lambda_2"``, the second largest, if ``second``).

    ``M`` is symmetric n x n (NumPy or CuPy); values are Python floats (``lambda_2`` is NaN for
    n = 1). Route: one full dense ``eigvalsh`` -- measured faster than two ``subset_by_index``
    calls at n = 500 to 2000 (see the module docstring). Accuracy: absolute ~ eps ||M||_2 each,
    so lambda_min has relative error ~ eps * cond(M). ``overwrite``: as in :func:`eigvalsh`.
    """
    ev = eigvalsh(M, overwrite=overwrite)
    n = M.shape[0]
    out = {"lambda_min": float(ev[0]), "lambda_max": float(ev[-1])}
    if second:
        out["lambda_2"] = float(ev[-2]) if n >= 2 else math.nan
    return out


def _lanczos_norm(M) -> float | None:
    import scipy.sparse.linalg as ssl  # noqa: PLC0415

    n = M.shape[0]
    v0 = np.random.Generator(np.random.PCG64(_V0_SEED)).standard_normal(n)
    # ~19 matrix-vector products per restart; this cap keeps a non-converging run (then the
    # dense fallback) under about twice the dense cost. Measured need at n = 2000: 120-350 products.
    maxiter = max(20, n // 50)
    try:
        val = ssl.eigsh(M, k=1, which="LM", tol=LANCZOS_TOL, v0=v0, maxiter=maxiter,
                        return_eigenvectors=False)
    except ssl.ArpackError:  # includes ArpackNoConvergence; also a zero M ("starting vector is zero")
        return None
    return float(abs(val[0]))


def spectral_norm_sym(M, *, method: str = "auto") -> float:
    """``||M||_2 = max |eigenvalue|`` of the symmetric n x n ``M`` (Python float).

    ``method``: ``"dense"`` (all eigenvalues; absolute error ~ eps ||M||_2), ``"lanczos"``
    (ARPACK ``eigsh(k=1, which="LM", tol=1e-12)`` from a fixed start vector, NumPy only; relative
    error <= 1e-12 by the stopping rule, <= 1e-14 measured on Wishart and GOE-like matrices of
    n = 500 to 2000; falls back to dense if ARPACK fails, e.g. no convergence within ~0.4 n
    matrix-vector products, or a zero M), or ``"auto"``: Lanczos
    on NumPy when n >= ``LANCZOS_MIN_N`` (3-4x faster at n = 2000), dense otherwise and on CuPy.
    """
    if method not in ("auto", "dense", "lanczos"):
        raise ValueError(f"unknown method {method!r}; expected 'auto', 'dense' or 'lanczos'")
    _square(M)
    xp = array_namespace(M)
    on_numpy = backend_name(xp) == "numpy"
    if method == "lanczos" and not on_numpy:
        raise ValueError("method='lanczos' is NumPy only; use 'dense' or 'auto' for CuPy arrays")
    n = M.shape[0]
    use_lanczos = method == "lanczos" or (method == "auto" and on_numpy and n >= LANCZOS_MIN_N)
    if use_lanczos and n >= 3:  # ARPACK needs k < n - 1
        if not np.all(np.isfinite(M)):
            raise ValueError("M contains NaN or inf")
        val = _lanczos_norm(M)
        if val is not None:
            return val
    ev = eigvalsh(M)
    return float(max(abs(float(ev[0])), abs(float(ev[-1]))))


def _svdvals(A):
    """Singular values, descending, on the input's backend."""
    xp = array_namespace(A)
    if backend_name(xp) == "cupy":
        return xp.linalg.svd(A, compute_uv=False)
    import scipy.linalg  # noqa: PLC0415

    return scipy.linalg.svdvals(A)


def extreme_singular_values(A=None, *, gram=None, nrows: int | None = None,
                            overwrite_gram: bool = False) -> tuple[float, float]:
    """``(sigma_min, sigma_max)`` of a d x n matrix, where sigma_min is the **n-th** singular value.

    Give either ``A`` (d x n): computed from an SVD of ``A`` (relative error ~ eps * cond(A));
    sigma_min is exactly 0.0 when d < n. Or ``gram = A^T A`` (n x n, symmetric PSD) and, if known,
    ``nrows = d``: computed as the square roots of its extreme eigenvalues, negative rounding
    clipped to 0 (relative error of sigma_min ~ eps * cond(A)^2 / 2, i.e. absolute error
    ~ sqrt(eps) sigma_max when A is singular); sigma_min is exactly 0.0 when ``nrows < n``
    (rank deficiency known a priori: no rounding-level noise is reported as a singular value).
    Python floats are returned. ``overwrite_gram``: the solver may destroy ``gram`` (no n x n copy).
    """
    if (A is None) == (gram is None):
        raise ValueError("give exactly one of A (d x n) or gram (= A^T A, n x n)")
    if A is not None:
        if nrows is not None:
            raise ValueError("nrows is only for gram=...; with A the row count is A.shape[0]")
        if getattr(A, "ndim", None) != 2 or min(A.shape) < 1:
            raise ValueError(f"A must be a non-empty 2-D matrix, got shape {getattr(A, 'shape', None)}")
        if A.dtype.kind not in "fc":
            raise ValueError(f"A must have a floating dtype, got {A.dtype}")
        d, n = A.shape
        s = _svdvals(A)
        smax = float(s[0])
        smin = 0.0 if d < n else float(s[n - 1])
        return smin, smax
    _square(gram, "gram")
    n = gram.shape[0]
    if nrows is not None and (isinstance(nrows, bool) or not isinstance(nrows, Integral) or nrows < 1):
        raise ValueError(f"nrows must be a positive integer (the row count d of A), got {nrows!r}")
    ext = extreme_eigenvalues(gram, overwrite=overwrite_gram)
    smax = math.sqrt(max(ext["lambda_max"], 0.0))
    if nrows is not None and nrows < n:
        return 0.0, smax
    return math.sqrt(max(ext["lambda_min"], 0.0)), smax
