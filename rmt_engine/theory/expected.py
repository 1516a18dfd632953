"""The expectation ``E[M0]/d1`` of the Gram matrix of ``phi(W0 X)`` (Eq. 49-56).

``E[M0]/d1 = sum_i a_i^2 G^{o i}`` with ``G = X^T X``, ``a_i = c_i(w1)/sqrt(i!)`` the normalized
Hermite coefficients of ``phi(w1 .)`` (Eq. 56 with ``c_i(w1)``, MATH.md), equivalently
``[E[M0]/d1]_ab = k(G_ab)`` with the dual kernel ``k(rho) = E[phi(w1 u) phi(w1 v)]``.
Two independent methods compute it:

``method="series"`` (default, fast; NumPy or CuPy)
    Hadamard Horner: ``K = a_N^2; K = K o G + a_{N-1}^2; ...; K = K o G + a_0^2``. The order N is
    the smallest one with an exact a-priori bound on the neglected tail below
    ``SERIES_TOL_REL * E[phi(w1 z)^2]`` (1e-13 relative) for every off-diagonal entry:
    ``|sum_{i>N} a_i^2 rho^i| <= R_N |rho|^{N+1}`` with ``R_N = E[phi^2] - sum_{i<=N} a_i^2``
    known exactly (second moment minus the partial Parseval sum) and ``|rho| <= max_{a!=b} |G_ab|``.
    The diagonal (``rho = 1``) is set to ``E[phi(w1 z)^2]`` exactly. If the bound needs
    ``N > SERIES_CAP`` (2000; max off-diagonal ``|rho|`` very close to 1 and a slowly decaying
    ``R_N``, e.g. near-duplicate columns at large ``w1``), N is capped, and the entries whose
    ``|rho|`` exceeds the level where the capped bound still meets the tolerance (and only those)
    are computed by the 2-D dual-kernel quadrature of :func:`rmt_engine.theory.hermite.dual_kernel`.
    Cost: ``O(N n^2)`` elementwise operations. Measured (2 CPU cores, NumPy) for sphere data
    n = 2000, d0 = 45 (max off-diagonal |rho| = 0.68): GeLU N = 24 / 0.14 s at w1 = 1,
    N = 52 / 0.24 s at w1 = 4; tanh N = 35 / 0.18 s and N = 59 / 0.27 s (coefficients memoized;
    the first call adds ~0.1 s).

``method="quadrature"`` (the independent cross-check; NumPy on the host)
    ``k(G_ab)`` by 2-D quadrature for each distinct value of the upper triangle (diagonal
    included, at ``rho = 1``): ``O(n^2 nodes^2)``, i.e. up to ``n(n+1)/2`` values at 2e4
    (``w1 <= 1``) to 3.2e5 (``w1 = 4``) evaluations of ``phi`` each; use it for small n only.
    Measured agreement with the series, max entry difference on sphere data (n = 12, d0 = 5),
    every built-in: <= 1e-13 for w1 <= 2, <= 4e-13 at w1 = 4 (GeLU, softplus: E[phi^2] ~ 8 there),
    i.e. within the series' 1e-13 E[phi^2] tolerance; tests/test_expected.py asks for 1e-10.

``X`` (``d0 x n``) must be 2-D, real floating, finite, with unit columns (``|norm - 1| <= 1e-10``;
:func:`rmt_engine.sampling.data.check_data`). Coefficients are computed on the host with NumPy and moved
with ``xp.asarray``; the returned matrix is float64 in ``X``'s namespace.
"""

from __future__ import annotations

import numpy as np

from ..backend.xp import array_namespace, to_numpy
from .activations import activation as _get_activation
from ..sampling.data import check_data
from .hermite import _check_w1, dual_kernel, normalized_hermite_coefficients, second_moment

__all__ = ["expected_gram", "expected_ntk_gram", "METHODS", "SERIES_CAP", "SERIES_TOL_REL"]

METHODS = ("series", "quadrature")
#: Largest series order before entries fall back to the dual-kernel quadrature.
SERIES_CAP = 2000
#: Target absolute accuracy of every entry, relative to E[phi(w1 z)^2].
SERIES_TOL_REL = 1e-13


def _series_plan(act, w1: float, rho_max: float, m2: float) -> tuple[np.ndarray, float]:
    """``(a_0^2..a_N^2, rho_cut)``: the series order N and the |rho| above which to use quadrature.

    ``rho_cut = inf`` when the series of order ``N <= SERIES_CAP`` meets the tolerance for
    every ``|rho| <= rho_max``.
    """
    tol = SERIES_TOL_REL * m2
    order = 64
    while True:
        order = min(order, SERIES_CAP)
        a2 = normalized_hermite_coefficients(act, order, w1) ** 2
        R = np.maximum(m2 - np.cumsum(a2), 0.0)  # R_N for N = 0..order (exact up to rounding)
        with np.errstate(under="ignore"):
            bound = R * rho_max ** np.arange(1.0, order + 2.0)
        ok = np.flatnonzero(bound <= tol)
        if ok.size:
            N = int(ok[0])
            return a2[: N + 1], np.inf
        if order == SERIES_CAP:
            # R_cap * rho^(cap+1) <= tol  <=>  rho <= (tol/R_cap)^(1/(cap+1))
            return a2, float((tol / R[-1]) ** (1.0 / (SERIES_CAP + 1)))
        order *= 2


def _as_array(X):
    if not hasattr(X, "ndim"):
        X = np.asarray(X, dtype=np.float64)
    return X


def _gram_of(X):
    """``G = X^T X`` in float64, exactly symmetric, clipped to [-1, 1], unit diagonal."""
    xp = array_namespace(X)
    X = xp.asarray(X, dtype=xp.float64)
    G = X.T @ X
    G = 0.5 * (G + G.T)
    G = xp.clip(G, -1.0, 1.0)
    n = G.shape[0]
    idx = xp.arange(n)
    G[idx, idx] = 1.0
    return G


def _fill_by_quadrature(K, G, mask, act, w1: float) -> None:
    """``K[mask] = k(G[mask])`` with the 2-D quadrature, once per distinct value."""
    xp = array_namespace(K)
    vals = to_numpy(G[mask])
    uniq, inv = np.unique(vals, return_inverse=True)
    kv = np.asarray(dual_kernel(act, uniq, w1), dtype=np.float64).reshape(-1)
    K[mask] = xp.asarray(kv[inv.reshape(-1)])


def expected_gram(X, activation, w1: float = 1.0, method: str = "series"):
    """``E[M0]/d1`` (n x n) for data ``X`` (d0 x n, unit columns) and ``phi(w1 .)`` (Eq. 56).

    ``activation`` is a name or an :class:`rmt_engine.theory.activations.Activation`; ``method`` is
    ``"series"`` (Hadamard Horner with an exact tail bound, 1e-13 relative accuracy) or
    ``"quadrature"`` (2-D dual-kernel quadrature, independent); see the module docstring.

    Cost: ``"series"`` is a few Hadamard products of the n x n Gram (0.1 s at n = 400); ``"quadrature"``
    evaluates one 2-D quadrature per pair of columns, n(n+1)/2 of them, so its time grows as n^2:
    measured 9 s at n = 60 and 146 s at n = 400 (2-core machine under load). Use it to check the
    series at small n, not inside a study.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    act = _get_activation(activation)
    w1 = _check_w1(w1)
    X = _as_array(X)
    check_data(X)
    xp = array_namespace(X)
    G = _gram_of(X)
    n = G.shape[0]
    idx = xp.arange(n)

    if method == "quadrature":
        Gh = to_numpy(G)
        iu = np.triu_indices(n)
        uniq, inv = np.unique(Gh[iu], return_inverse=True)
        kv = np.asarray(dual_kernel(act, uniq, w1), dtype=np.float64).reshape(-1)[inv.reshape(-1)]
        K = np.empty((n, n))
        K[iu] = kv
        K[(iu[1], iu[0])] = kv
        return xp.asarray(K)

    m2 = second_moment(act, w1)
    if n == 1:
        return xp.full((1, 1), m2, dtype=xp.float64)
    absG = xp.abs(G)
    absG[idx, idx] = 0.0
    rho_max = float(xp.max(absG))
    a2, rho_cut = _series_plan(act, w1, rho_max, m2)

    K = xp.full((n, n), float(a2[-1]), dtype=xp.float64)
    for c in a2[-2::-1]:
        xp.multiply(K, G, out=K)
        K += float(c)
    K[idx, idx] = m2
    if np.isfinite(rho_cut):
        far = absG > rho_cut  # off-diagonal entries beyond the capped series' reach
        if bool(xp.any(far)):
            _fill_by_quadrature(K, G, far, act, w1)
    return K


def expected_ntk_gram(X, activation, w1: float = 1.0, w2: float = 1.0, method: str = "series"):
    """``E[J J^T] / d1`` (n x n) of the network ``x -> v^T phi(W x)`` (d2 = 1) at its Gaussian
    initialization: ``K + w2^2 (X^T X) o K'`` with ``K = E[M0]/d1`` (Eq. 56) and
    ``K' = E[phi'(w^T x_i) phi'(w^T x_j)]``, w ~ N(0, w1^2 I), from the Hermite coefficients of phi'
    (``method="series"``) or by 2-D quadrature of its dual kernel (``"quadrature"``): two methods that
    must agree, as for E[M0]. ``J J^T = phi(W X)^T phi(W X) + (X^T X) o sum_k v_k^2 phi'(w_k^T X)^T
    phi'(w_k^T X)``: the V-layer part (M0) plus the W-layer part.
    """
    from .activations import derivative_activation  # noqa: PLC0415

    act = _get_activation(activation)
    K = expected_gram(X, act, w1=w1, method=method)
    Kd = expected_gram(X, derivative_activation(act), w1=w1, method=method)
    G = _gram_of(_as_array(X))
    Kd *= G
    Kd *= float(w2) * float(w2)
    Kd += K
    return Kd
