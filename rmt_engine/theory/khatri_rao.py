"""The Khatri-Rao power ``X^{*t}`` of the paper (Eq. 20, 53-55) and its extreme singular values.

``X`` is d0 x n (unit columns in the engine, though nothing here needs them). ``X^{*t}`` is
d0^t x n with column a equal to ``vec(x_a kron ... kron x_a)`` (t factors). Facts used:
- ``(X^{*t})^T X^{*t} = G^{o t}`` exactly, ``G = X^T X`` (Hadamard power), since
  ``<x_a^{kron t}, x_b^{kron t}> = <x_a, x_b>^t``: singular values of X^{*t} are square roots of
  the eigenvalues of the n x n matrix G^{o t}, and the d0^t x n matrix is never needed
  (``khatri_rao`` builds it only to verify, and refuses above ``max_bytes``).
- Column a is a symmetric tensor, so the columns lie in a space of dimension
  ``C(d0 + t - 1, t)`` (``symmetric_tensor_dim``): when n exceeds it, sigma_min(X^{*t})
  (the n-th singular value) is 0 whatever the data. ``khatri_rao_extremes`` then returns exactly
  0.0 and warns (``RankDeficiencyWarning``); ``khatri_rao_rank_deficient`` lets callers record
  the fact instead. If the data span only r < d0 dimensions, the same holds with C(r + t - 1, t).
- t = 0: the empty Kronecker product is the scalar 1, so ``khatri_rao(X, 0)`` is the 1 x n row of
  ones, whose Gram is the all-ones matrix 11^T (the paper's convention "X^{*0} = 11^T" of
  Appendix E.1 names that Gram, G^{o 0}). The Gram/extremes functions require t >= 1.
Arrays may be NumPy or CuPy (namespace derived from X).
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral

from ..backend.xp import array_namespace
from ..linalg.spectra import extreme_singular_values, spectral_norm_sym
from ..linalg.tsqr import gram_relative_error

#: Default cap on the bytes of an explicit ``khatri_rao`` result (1 GiB).
DEFAULT_MAX_BYTES = 2**30


class RankDeficiencyWarning(UserWarning):
    """sigma_min(X^{*t}) is 0 for every data set: n exceeds the symmetric-tensor dimension."""


def _order(t, minimum: int) -> int:
    if isinstance(t, bool) or not isinstance(t, Integral):
        raise ValueError(f"the Khatri-Rao order t must be an integer >= {minimum}, got t={t!r}")
    if t < minimum:
        raise ValueError(f"the Khatri-Rao order t must be an integer >= {minimum}, got t={t!r}")
    return int(t)


def _positive(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _matrix(X):
    if getattr(X, "ndim", None) != 2 or min(X.shape) < 1:
        raise ValueError(f"X must be a non-empty 2-D array (d0 x n), got shape {getattr(X, 'shape', None)}")
    if X.dtype.kind != "f":
        raise ValueError(f"X must have a real floating dtype, got {X.dtype}")


def symmetric_tensor_dim(d0: int, t: int) -> int:
    """``C(d0 + t - 1, t)``: dimension of the symmetric order-t tensors over R^{d0} (Python int)."""
    d0 = _positive(d0, "d0")
    t = _order(t, 0)
    return math.comb(d0 + t - 1, t)


def khatri_rao_rank_bound(d0: int, t: int, n: int) -> int:
    """Upper bound on rank(X^{*t}) for any d0 x n data: ``min(n, C(d0 + t - 1, t))``."""
    return min(_positive(n, "n"), symmetric_tensor_dim(d0, t))


def khatri_rao_rank_deficient(d0: int, t: int, n: int) -> bool:
    """True when ``n > C(d0 + t - 1, t)``, i.e. sigma_min(X^{*t}) = 0 for every data set."""
    return _positive(n, "n") > symmetric_tensor_dim(d0, t)


def khatri_rao(X, t: int, *, max_bytes: int = DEFAULT_MAX_BYTES):
    """The explicit ``X^{*t}`` (d0^t x n, same backend and dtype as X); for verification only.

    Row index of column a: ``i_1 d0^{t-1} + ... + i_t`` holds ``x_a[i_1] ... x_a[i_t]``, as
    ``np.kron(x_a, np.kron(x_a, ...))``. ``t = 0`` gives the 1 x n row of ones. Raises ValueError
    (with the size it would need) when the result exceeds ``max_bytes``: use
    ``khatri_rao_gram(X, t)`` (n x n) for its Gram matrix and singular values.
    """
    _matrix(X)
    t = _order(t, 0)
    xp = array_namespace(X)
    d0, n = X.shape
    rows = d0**t
    nbytes = rows * n * X.dtype.itemsize
    if nbytes > max_bytes:
        raise ValueError(
            f"khatri_rao(X, t={t}) would be {d0}^{t} x {n} = {rows} x {n} {X.dtype} = {nbytes} bytes "
            f"({nbytes / 2**30:.3g} GiB) > max_bytes={max_bytes}; use khatri_rao_gram(X, t) = (X^T X)^{{o t}} "
            f"(n x n) for its Gram matrix and singular values"
        )
    if t == 0:
        return xp.ones((1, n), dtype=X.dtype)
    K = X
    for _ in range(t - 1):
        K = xp.einsum("in,jn->ijn", K, X).reshape(K.shape[0] * d0, n)
    return K


def khatri_rao_gram(X, t: int):
    """``G^{o t} = (X^T X)^{o t}`` (n x n), equal to ``(X^{*t})^T X^{*t}`` exactly; t >= 0.

    ``t = 0`` gives the all-ones matrix ``11^T``, the Gram matrix of ``khatri_rao(X, 0)``.
    """
    _matrix(X)
    t = _order(t, 0)
    if t == 0:
        xp = array_namespace(X)
        return xp.ones((X.shape[1], X.shape[1]), dtype=X.dtype)
    G = X.T @ X
    if t > 1:
        G **= t  # in place: one n x n array
    return G


def khatri_rao_extremes(X, t: int) -> tuple[float, float]:
    """``(sigma_min, sigma_max)`` of X^{*t} (Python floats) from the eigenvalues of G^{o t}.

    sigma_min is the n-th singular value ``sqrt(max(lambda_min(G^{o t}), 0))``; its relative error
    is ~ eps * cond(X^{*t})^2 / 2 (absolute ~ 1e-8 sigma_max near rank deficiency). When
    ``n > C(d0 + t - 1, t)`` it is exactly 0.0 and a ``RankDeficiencyWarning`` is emitted (check
    ``khatri_rao_rank_deficient(d0, t, n)`` to record it instead); then only sigma_max is computed.
    """
    _matrix(X)
    t = _order(t, 0)
    d0, n = X.shape
    dim = symmetric_tensor_dim(d0, t)
    Gt = khatri_rao_gram(X, t)
    if n > dim:
        warnings.warn(
            f"sigma_min(X^{{*{t}}}) = 0 for any data: n={n} > C(d0 + t - 1, t) = C({d0 + t - 1}, {t}) = {dim}, "
            f"the dimension of symmetric order-{t} tensors over R^{d0} (d0={d0}, t={t})",
            RankDeficiencyWarning,
            stacklevel=2,
        )
        return 0.0, math.sqrt(spectral_norm_sym(Gt))  # G^{o t} is PSD: ||.||_2 = lambda_max
    return extreme_singular_values(gram=Gt, nrows=dim, overwrite_gram=True)  # Gt is ours: no copy


def khatri_rao_extremes_checked(X, t: int) -> tuple[float, float, float, bool]:
    """``(sigma_min, sigma_max, relerr, deficient)`` of X^{*t}: the extremes of ``khatri_rao_extremes``,
    the a-posteriori bound on the relative error of sigma_min, and whether sigma_min(X^{*t}) = 0.

    ``deficient``: ``n > C(d0+t-1, t)`` (any data), or *numerically* for these data: lambda_min(G^{o t})
    is not above the rounding error of G^{o t} and its eigen-solve,
    ``4 (sqrt(d0) + n) eps lambda_max(G^{o t})`` (``linalg.tsqr.gram_relative_error``; that is the
    tolerance: sigma_min(X^{*t}) <= sqrt(4 (sqrt(d0) + n) eps) sigma_max(X^{*t}), about 1.5e-7 sigma_max
    at n = 20). Duplicate columns make every X^{*t} singular, antipodal ones (x_b = -x_a) every even t.
    Then sigma_min is returned as 0.0 exactly and ``relerr`` is 0.0 (the value is exact: 0).
    """
    _matrix(X)
    t = _order(t, 1)
    d0, n = X.shape
    if n > symmetric_tensor_dim(d0, t):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RankDeficiencyWarning)
            return 0.0, khatri_rao_extremes(X, t)[1], 0.0, True
    smin, smax = khatri_rao_extremes(X, t)
    relerr = gram_relative_error(smin * smin, smax * smax, d0, n)
    if not math.isfinite(relerr):
        return 0.0, smax, 0.0, True
    return smin, smax, relerr, False


def data_extremes(X) -> tuple[float, float]:
    """``(sigma_min, sigma_max)`` of X itself (d0 x n; sigma_min the n-th, 0.0 when d0 < n), via SVD."""
    _matrix(X)
    return extreme_singular_values(X)
