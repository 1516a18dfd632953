"""The full sharp lower bound of Eq. 58: every Hermite order of E[M0] at once (Weyl).

Rule of this module: ``eq58_lower_hadamard = d1 sum_{i >= 0} a_i lambda_min(G^{o i})`` with
``a_i = c_i(w1)^2 / i!`` is computed *without truncation* (``bounds.hadamard_lower``): the orders
``0..DENSE_ORDERS`` are evaluated one by one, then 16, 32, 64, ... (doubling); every order that is
not evaluated gets the lambda_min of the evaluated order below it, which is a valid lower bound
because ``lambda_min(G^{o i})`` is nondecreasing in ``i`` (Schur product with diag G = 1), and the
weight of all orders past the last evaluated one is ``E[phi(w1 z)^2] - sum a_i`` (exact).
Evaluation stops at the first order ``i_K >= min_order`` where what more orders could still add,
``tail(i_K) * (1 - lambda_min(G^{o i_K}))``, is below ``RTOL`` times the bound (or at MAX_ORDER).
Orders with ``n > C(d0+i-1, i)`` have ``lambda_min = 0`` exactly and cost nothing; each other
evaluated order costs one dense eigenvalue reduction of an n x n matrix (about 12-16 per grid point).
Rounding: each computed ``lambda_min(G^{o i})`` is lowered by its a-posteriori error bound
``4 (sqrt(d0) + n) eps lambda_max``, with ``lambda_max <= trace = n`` (``linalg.tsqr``'s constant),
and clipped at 0, so the bound stays a bound: for duplicate columns (every G^{o i} singular) it is
exactly 0, i.e. undefined, never rounding noise above lambda_min(E[M0]) = 0.
"""

from __future__ import annotations

import numpy as np

from . import bounds
from ..backend.xp import array_namespace
from .hermite import normalized_hermite_coefficients, second_moment
from .khatri_rao import symmetric_tensor_dim
from ..linalg.spectra import extreme_eigenvalues
from ..linalg.tsqr import EPS, ERROR_SAFETY

DENSE_ORDERS = 10
MAX_ORDER = 1024
RTOL = 1e-12


def evaluated_orders(max_order: int = MAX_ORDER):
    """0, 1, ..., DENSE_ORDERS, 16, 32, 64, ... up to ``max_order``."""
    i = 0
    while i <= max_order:
        yield i
        i = i + 1 if i < DENSE_ORDERS else (16 if i < 16 else 2 * i)


def hadamard_lower_bound(X, activation, w1: float, d1: int, *, min_order: int = 0) -> tuple[float, int]:
    """``(eq58_lower_hadamard, last evaluated order)`` for data X (d0 x n, unit columns).

    An exact lower bound on lambda_min(E[M0]) (module docstring); it is >= every single-t sharp
    bound ``d1 a_t lambda_min(G^{o t})`` for ``t <= last evaluated order`` (pass ``min_order`` to
    make sure the orders you compare with are evaluated).
    """
    xp = array_namespace(X)
    d0, n = X.shape
    a2 = normalized_hermite_coefficients(activation, MAX_ORDER, w1) ** 2
    m2 = second_moment(activation, w1)
    G = X.T @ X
    P = None  # one buffer for every power G^{o i}, destroyed by the eigenvalue solver in place
    orders, lams = [], []
    for i in evaluated_orders():
        if i == 0:
            lam = 0.0 if n > 1 else 1.0  # 11^T
        elif n > symmetric_tensor_dim(d0, i):
            lam = 0.0
        else:
            if P is None:
                P = xp.empty_like(G)
            P[...] = G
            if i > 1:
                P **= i
            rounding = ERROR_SAFETY * (np.sqrt(d0) + n) * EPS * n  # lambda_max(G^{o i}) <= trace = n
            lam = max(extreme_eigenvalues(P, overwrite=True)["lambda_min"] - rounding, 0.0)
        orders.append(i)
        lams.append(min(lam, 1.0))  # lambda_min(G^{o i}) <= trace / n = 1
        weights = _block_weights(a2, orders, m2)
        bound = bounds.hadamard_lower(d1, weights, lams)
        tail = weights[-1]
        if i >= min_order and (tail * (1.0 - lams[-1]) * d1 <= RTOL * bound or lams[-1] >= 1.0 - RTOL
                               or tail <= RTOL * m2 * 1e-3):
            break
    del G, P, xp
    return bound, orders[-1]


def _block_weights(a2: np.ndarray, orders: list, m2: float) -> list:
    """Sums of ``a2`` over ``[orders[k], orders[k+1])``; the last block takes the exact tail."""
    w = [float(a2[orders[k]:orders[k + 1]].sum()) for k in range(len(orders) - 1)]
    w.append(max(m2 - float(a2[:orders[-1]].sum()), 0.0))
    return w


#: Orders summed exactly by ``series_lower_bound`` before its tail term.
SERIES_ORDERS = 16


def series_lower_bound(X, activation, w1: float, d1: int, *, orders: int = SERIES_ORDERS) -> float:
    """``eq58_lower_series = d1 [lambda_min(S_N) + tail_N lambda_min(G^{o (N+1)})]`` with
    ``S_N = sum_{i <= N} a_i G^{o i}``, ``a_i = c_i(w1)^2 / i!``, ``tail_N = E[phi(w1 z)^2] - sum_{i <= N} a_i``.

    A valid lower bound on lambda_min(E[M0]) (Eq. 56): ``E[M0]/d1 = S_N + sum_{i > N} a_i G^{o i}`` and
    every ``G^{o i}`` with ``i > N`` is ``>= lambda_min(G^{o (N+1)}) I`` (lambda_min is nondecreasing in
    i, see ``bounds.hadamard_lower``), so Weyl applied once, to two terms, gives it. It is at least the
    all-orders Weyl sum ``eq58_lower_hadamard`` (which splits S_N into its terms as well: lambda_min of a
    sum is >= the sum of the lambda_min), at the cost of one more eigen-solve. Each computed
    lambda_min is lowered by its rounding bound ``4 (sqrt(d0) + n) eps lambda_max`` and clipped at 0,
    as in ``hadamard_lower_bound``; ``N = orders``.
    """
    xp = array_namespace(X)
    d0, n = X.shape
    a2 = normalized_hermite_coefficients(activation, orders + 1, w1) ** 2
    m2 = second_moment(activation, w1)
    G = X.T @ X
    S = xp.full_like(G, float(a2[orders]))  # Horner: S = (...((a_N G + a_{N-1}) o G + ...) o G) + a_0
    for i in range(orders - 1, -1, -1):
        S *= G
        S += float(a2[i])
    lam_S = extreme_eigenvalues(S, overwrite=True)  # S is destroyed: two n x n arrays at most (G, S)
    del S
    rounding_S = ERROR_SAFETY * (np.sqrt(d0) + n) * EPS * max(float(lam_S["lambda_max"]), 0.0)
    lam_S_min = max(float(lam_S["lambda_min"]) - rounding_S, 0.0)
    tail = max(m2 - float(a2[: orders + 1].sum()), 0.0)
    lam_next = 0.0
    if tail > 0 and n <= symmetric_tensor_dim(d0, orders + 1):
        G **= orders + 1  # G^{o (N+1)}, in place
        rounding = ERROR_SAFETY * (np.sqrt(d0) + n) * EPS * n
        lam_next = max(float(extreme_eigenvalues(G, overwrite=True)["lambda_min"]) - rounding, 0.0)
    return d1 * (lam_S_min + tail * min(lam_next, 1.0))
