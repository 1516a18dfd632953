"""Hermite coefficients of ``phi(w1 z)`` (Def. 4, Eq. 47-48, 56-57) and its dual kernel.

Conventions (MATH.md): probabilists' Hermite polynomials ``He_i`` with ``<He_i, He_j> = i! delta_ij``
under ``z ~ N(0, 1)``; ``c_i(w1) = E[phi(w1 z) He_i(z)]``, ``phi(w1 x) = sum_i c_i/i! He_i(x)``,
``E[phi(w1 z)^2] = sum_i c_i^2/i!``. The stable quantities are the normalized coefficients
``a_i = c_i/sqrt(i!) = E[phi(w1 z) h_i(z)]`` with ``h_i = He_i/sqrt(i!)`` orthonormal; everything
here computes ``a_i`` and derives ``c_i`` from it.

One-dimensional rule (coefficients, second moment)
    ``a_i = sum_k W_k phi(w1 z_k) g(z_k) psi_i(z_k)`` where ``psi_i(z) = h_i(z) g(z)``,
    ``g(z) = (2 pi)^{-1/4} e^{-z^2/4}`` (so ``h_i pdf = psi_i g``) and ``W_k`` are the weights of a
    composite Gauss-Legendre rule on ``[-L, L]``, ``L = 20``, panels of equal width
    ``<= min(1, 1/w1, 4/sqrt(order + 1))`` with 0 as a panel edge, 20 nodes per panel
    (``numpy.polynomial.legendre.leggauss``; rules memoized). The Hermite functions ``psi_i``
    come from the normalized three-term recurrence
    ``psi_{i+1} = (z psi_i - sqrt(i) psi_{i-1})/sqrt(i+1)``, which never overflows: Cramer's
    inequality ``|He_i(z)| <= 1.0865 sqrt(i!) e^{z^2/4}`` gives ``|psi_i| <= 0.69`` for every i and z.
    Why these choices: the same inequality bounds the integrand beyond ``|z| = L`` by
    ``0.69 |phi(w1 z)| g(z)``, below 1e-40 at ``L = 20`` for every order, so one finite interval
    serves all orders; panel width ``<= 1/w1`` keeps the Bernstein ellipse of each panel clear of
    the poles of ``tanh(w1 z)`` at distance ``pi/(2 w1)`` (0.39 at ``w1 = 4``, where plain
    Gauss-Hermite converges slowly) and of sigmoid/softplus at ``pi/w1``; width
    ``<= 4/sqrt(order+1)`` resolves the oscillation of ``psi_i`` (local frequency ``<= sqrt(i)``).
    The rule is symmetric and ``psi_i`` has the parity of ``i``, so the sums run over ``z > 0``
    with the even/odd part of ``phi``: an odd ``phi`` gets exactly zero even coefficients.
    Coefficients that the activation's ``parity_zeros`` declares zero (GeLU's odd ``i >= 3``,
    sigmoid's even ``i >= 2``, ...) are set to exactly 0.0: the quadrature would leave ~1e-17 of
    rounding there, and a bound built on such a coefficient must read as undefined, not tiny.

Two-dimensional rule (dual kernel, ``k(rho) = E[phi(w1 u) phi(w1 v)]``, ``corr(u, v) = rho``)
    ``u = z1``, ``v = rho z1 + sqrt(1 - rho^2) z2`` with ``z1, z2`` independent; tensor product of
    the composite Gauss-Legendre rule on ``[-10, 10]`` (panel width ``<= min(2, 2/w1)``, 16 nodes)
    restricted to the disc ``z1^2 + z2^2 <= 100`` (the Gaussian mass outside is ``e^{-50}``);
    sums are pairwise (``np.sum``): a BLAS dot over ~1e6 terms loses ~1e-13.
    Cost: ``O(nodes^2)`` evaluations of ``phi`` per value of ``rho`` (2.0e4 at ``w1 <= 1``,
    8.0e4 at ``w1 = 2``, 3.2e5 at ``w1 = 4``; ~0.3-8 ms per value): this is the independent
    cross-check, not the fast path. Halving the panel width changes nothing above 1e-15.

Measured accuracy (tests/test_hermite.py reproduces each number's check)
    Normalized coefficients, max ``|a_i - reference|`` (= ``|c_i - ref|/sqrt(i!)``):
    ``i <= 12`` against ``scipy.integrate.quad``, every built-in, ``w1`` in {0.25, 1, 4}:
    <= 9e-16 (gelu, softplus at ``w1 = 4``), <= 3.3e-16 otherwise;
    ``i <= 2000`` against 50-digit closed forms: erf <= 2.2e-16, GeLU <= 4.4e-16 (``w1 = 4``);
    sigmoid vs ``(1 + tanh(x/2))/2`` and softplus vs sigmoid (``c_i[f] = c_{i-1}[f']``) up to
    order 600: <= 2e-15. Parseval ``sum_{i<=2000} a_i^2`` vs ``E[phi^2]``: relative <= 1e-15.
    Dual kernel vs ``sum_i a_i^2 rho^i`` and vs erf's arcsin formula, ``w1`` <= 4:
    <= 4e-16 relative to ``E[phi^2]``.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
from scipy.special import gammaln

from .activations import Activation
from .activations import activation as _get_activation

__all__ = [
    "hermite_coefficients",
    "normalized_hermite_coefficients",
    "second_moment",
    "hermite_tail",
    "dual_kernel",
]

_L1 = 20.0  # half-length of the 1-D rule
_NODES1 = 20
_L2 = 10.0  # half-length of the 2-D rule
_NODES2 = 16
_G0 = (2.0 * math.pi) ** -0.25


def _check_w1(w1) -> float:
    try:
        w = float(w1)
    except (TypeError, ValueError):
        raise ValueError(f"w1 must be a positive finite number, got {w1!r}") from None
    if not math.isfinite(w) or w <= 0.0:
        raise ValueError(f"w1 must be a positive finite number, got w1={w1!r}")
    return w


def _check_order(order) -> int:
    if isinstance(order, bool) or not isinstance(order, numbers.Integral):
        raise ValueError(f"order must be a non-negative integer, got order={order!r}")
    if order < 0:
        raise ValueError(f"order must be a non-negative integer, got order={order!r}")
    return int(order)


@functools.lru_cache(maxsize=64)
def _composite_gl(half_length: float, panels_per_side: int, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes/weights on [-half_length, half_length], 0 a panel edge."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    edges = np.linspace(-half_length, half_length, 2 * panels_per_side + 1)
    h = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    z = (mid[:, None] + h[:, None] * x[None, :]).ravel()
    wt = (h[:, None] * w[None, :]).ravel()
    z.flags.writeable = False
    wt.flags.writeable = False
    return z, wt


def _panels(half_length: float, width: float) -> int:
    return max(1, math.ceil(half_length / width - 1e-9))


def _rule_1d(w1: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    width = min(1.0, 1.0 / w1, 4.0 / math.sqrt(order + 1.0))
    return _composite_gl(_L1, _panels(_L1, width), _NODES1)


def _order_bucket(order: int) -> int:
    """Orders are computed in power-of-two buckets (>= 32) so that the memo is reused."""
    return max(32, 1 << (int(order) - 1).bit_length()) if order > 0 else 32


@functools.lru_cache(maxsize=256)
def _normalized_cached(act: Activation, w1: float, bucket: int) -> np.ndarray:
    z, w = _rule_1d(w1, bucket)
    # The rule is symmetric and psi_i has the parity of i: sum over z > 0 only, pairing the even
    # part of phi with even i and the odd part with odd i (exact zeros for an odd phi, half the work).
    pos = z > 0.0
    z, w = z[pos], w[pos]
    g = _G0 * np.exp(-0.25 * z * z)
    p_plus = np.asarray(act.phi(w1 * z), dtype=np.float64)
    p_minus = np.asarray(act.phi(-w1 * z), dtype=np.float64)
    f_even = w * g * (p_plus + p_minus)  # 2 W_k g(z_k) (even part of phi(w1 z_k))
    f_odd = w * g * (p_plus - p_minus)
    a = np.empty(bucket + 1)
    psi_prev = np.zeros_like(z)
    psi = g.copy()
    a[0] = np.sum(f_even * psi)  # np.sum: pairwise summation, rounding error O(log(nodes) eps)
    for i in range(bucket):
        psi_prev, psi = psi, (z * psi - math.sqrt(i) * psi_prev) / math.sqrt(i + 1.0)
        a[i + 1] = np.sum((f_odd if i % 2 == 0 else f_even) * psi)
    if act.parity_zeros is not None:
        a[[i for i in range(bucket + 1) if act.coefficient_is_zero(i)]] = 0.0
    a.flags.writeable = False
    return a


def normalized_hermite_coefficients(activation, order: int, w1: float = 1.0) -> np.ndarray:
    """``a_i = c_i(w1)/sqrt(i!) = E[phi(w1 z) h_i(z)]`` for ``i = 0..order`` (float64 NumPy array).

    ``sum_i a_i^2 = E[phi(w1 z)^2]`` (Parseval) and ``E[M0]/d1 = sum_i a_i^2 G^{o i}`` (Eq. 56).
    Absolute error about 1e-15 up to order 2000 (module docstring).
    """
    act = _get_activation(activation)
    order = _check_order(order)
    w1 = _check_w1(w1)
    return np.array(_normalized_cached(act, w1, _order_bucket(order))[: order + 1])


def hermite_coefficients(activation, order: int, w1: float = 1.0) -> np.ndarray:
    """``c_i(w1) = E[phi(w1 z) He_i(z)]`` for ``i = 0..order`` (Def. 4), unnormalized.

    Computed as ``a_i sqrt(i!)``; the absolute error is about ``1e-15 sqrt(i!)``. ``sqrt(i!)``
    exceeds the float64 range near ``i = 300``: entries that overflow are ``+-inf``; use
    :func:`normalized_hermite_coefficients` for high orders.
    """
    a = normalized_hermite_coefficients(activation, order, w1)
    i = np.arange(a.size)
    with np.errstate(over="ignore", divide="ignore"):
        mag = np.exp(np.log(np.abs(a)) + 0.5 * gammaln(i + 1.0))
    return np.where(a == 0.0, 0.0, np.sign(a) * mag)


@functools.lru_cache(maxsize=256)
def _second_moment_cached(act: Activation, w1: float) -> float:
    z, w = _rule_1d(w1, 0)
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    p = np.asarray(act.phi(w1 * z), dtype=np.float64)
    return float(np.sum((w * pdf) * (p * p)))


def second_moment(activation, w1: float = 1.0) -> float:
    """``E[phi(w1 z)^2]`` (= ``sum_i c_i^2/i!`` = the dual kernel at ``rho = 1``)."""
    return _second_moment_cached(_get_activation(activation), _check_w1(w1))


def hermite_tail(activation, w1: float = 1.0) -> float:
    """``c_inf(w1)^2 = E[phi(w1 z)^2] - c_0^2 - c_1^2`` (below Eq. 57), computed this exact way.

    Clamped at 0 from below (a linear ``phi`` would otherwise give a rounding-level negative).
    """
    a = normalized_hermite_coefficients(activation, 1, w1)
    return max(second_moment(activation, w1) - a[0] ** 2 - a[1] ** 2, 0.0)


@functools.lru_cache(maxsize=16)
def _rule_2d(w1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tensor composite Gauss-Legendre rule on the disc of radius ``_L2``, Gaussian-weighted."""
    z, w = _composite_gl(_L2, _panels(_L2, min(2.0, 2.0 / w1)), _NODES2)
    W = w * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    Z1, Z2 = np.meshgrid(z, z, indexing="ij")
    keep = Z1 * Z1 + Z2 * Z2 <= _L2 * _L2
    out = (Z1[keep].copy(), Z2[keep].copy(), np.outer(W, W)[keep].copy())
    for arr in out:
        arr.flags.writeable = False
    return out


def _dual_kernel_values(act: Activation, rho: np.ndarray, w1: float, chunk_elems: int = 4_000_000) -> np.ndarray:
    """``k(rho)`` for a 1-D float64 array ``rho`` in [-1, 1] (vectorized over chunks of rho)."""
    z1, z2, w12 = _rule_2d(w1)
    base = w12 * np.asarray(act.phi(w1 * z1), dtype=np.float64)  # W1 W2 phi(w1 u)
    out = np.empty(rho.size)
    step = max(1, chunk_elems // z1.size)
    for lo in range(0, rho.size, step):
        r = rho[lo : lo + step, None]
        s = np.sqrt(np.maximum(1.0 - r * r, 0.0))
        v = r * z1[None, :] + s * z2[None, :]
        # np.sum along the contiguous axis sums pairwise: a BLAS dot over 1e6 terms loses ~1e-13
        out[lo : lo + step] = np.sum(np.asarray(act.phi(w1 * v), dtype=np.float64) * base, axis=-1)
    return out


def dual_kernel(activation, rho, w1: float = 1.0):
    """``k(rho) = E[phi(w1 u) phi(w1 v)]`` with ``(u, v)`` standard normal, correlation ``rho``.

    Direct 2-D quadrature (module docstring), independent of the Hermite series; ``rho`` is a
    scalar (returns a float) or an array (returns an array of its shape), every value in [-1, 1]
    (values within 1e-12 outside are clipped).
    """
    act = _get_activation(activation)
    w1 = _check_w1(w1)
    r = np.asarray(rho, dtype=np.float64)
    if not np.all(np.isfinite(r)) or np.any(np.abs(r) > 1.0 + 1e-12):
        raise ValueError(f"rho must lie in [-1, 1], got rho={rho!r}")
    vals = _dual_kernel_values(act, np.clip(r, -1.0, 1.0).ravel(), w1).reshape(r.shape)
    return float(vals) if vals.ndim == 0 else vals
