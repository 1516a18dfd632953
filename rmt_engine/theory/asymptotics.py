"""Deterministic equivalent of the spectrum of ``M0/d1`` (Louart-Liao-Couillet 2018; Silverstein-Choi 1995).

Rule of this module
- Input: ``K = E[M0]/d1`` (n x n, from :func:`rmt_engine.expected_gram`) and ``d1``, nothing
  random. Output: the limiting (n, d1 -> inf, n/d1 fixed) law of the n eigenvalues of
  ``M0/d1 = F^T F/d1`` as a :class:`DeterministicEquivalent`. **Every value it returns is in
  units of M0/d1** (multiply by ``d1`` for M0; :func:`predict_record` does, for the record).
- Only the eigenvalues ``t_j`` of K matter. ``deterministic_equivalent(K, d1)`` checks K and
  runs the symmetric eigendecomposition in K's namespace (cuSOLVER for a CuPy K, via
  ``spectra.eigvalsh``); everything after it is O(n)-per-evaluation vectorized NumPy on the
  host. ``deterministic_equivalent_from_eigenvalues(t, d1)`` starts from the eigenvalues.
- Bad input raises ValueError (non-square/non-real/non-finite/non-symmetric/non-PSD K,
  ``d1`` not a positive integer).

Equations
- Louart, Liao, Couillet (2018), "A random matrix approach to neural networks": rows f_i of
  F i.i.d. given X with second moment K; the resolvent of ``F^T F/d1`` is close to
  ``Qbar(z) = (K/(1 + delta(z)) - z I)^{-1}``, ``delta(z) = (1/d1) tr(K Qbar(z))``. In K's
  eigenbasis ``m(z) = (1/n) sum_j 1/(t_j/(1+delta) - z)``: the generalized Marchenko-Pastur law
  of a sample covariance with population spectrum {t_j}, dimension n, d1 samples,
  ``gamma = n/d1``. Its companion (the d1 x d1 ``F F^T/d1``) has Stieltjes transform
  ``underline_m = -(1 - gamma)/z + gamma m = -1/(z (1 + delta))``.
- Silverstein and Choi (1995): with ``s = -1/underline_m = z (1 + delta(z))`` the inverse map is
  ``z(s) = s + (1/d1) sum_j t_j + (1/d1) sum_j t_j^2/(s - t_j)``  (the u-form
  ``z(u) = -1/u + (1/d1) sum_j t_j/(1 + t_j u)`` with ``u = underline_m = -1/s``), and
  ``z'(s) = 1 - psi(s)``, ``psi(s) = (1/d1) sum_j t_j^2/(s - t_j)^2``. The complement of the
  support is ``z({s real, s != t_j : psi(s) < 1})``, so the **edges are z at the real roots of
  psi(s) = 1**: one below the smallest t (lowest edge), one above the largest (top edge), and 0
  or 2 in each interval between consecutive distinct t's (2: a gap). ``h = psi^{-1/2} - 1`` is
  concave between consecutive atoms (a power mean of exponent -2 of affine functions), equals -1
  at each atom with slope ``+-(d1/w_j)^{1/2}/t_j`` beside it, so Newton from each atom reaches the
  adjacent root monotonically, without overshoot. An interval is searched only when the
  two-neighbour lower bound ``(A_k^{1/3} + A_{k+1}^{1/3})^3/(t_{k+1} - t_k)^2`` of min psi
  (``A_j = w_j t_j^2/d1``) is below 1; each evaluation of psi is O(#atoms).
- Counts (Bai-Silverstein exact separation): a component holds as many eigenvalues as atoms
  t_j lie in its s-interval; the lowest one holds the rest of ``min(rank, d1)``. These integers
  are cross-checked at build time against the closed-form counting function below (agreement
  <= 1e-13 per component at n = 400, 1.2e-11 at n = 4000).
- Density: inside a component ``w = s + i b`` with ``b > 0`` solving
  ``(1/d1) sum_j t_j^2/((s - t_j)^2 + b^2) = 1`` (Newton in b^2 from 0: monotone, 1/Phi is
  concave in b^2), ``lam(s) = Re z(w)`` is strictly increasing (``dlam/ds = |z'|^2/Re z'``,
  ``Re z' = (2 b^2/d1) sum_j t_j^2/|w - t_j|^4 > 0``), and the density of the n eigenvalues is
  ``(d1/(pi n)) Im(-1/w) = (d1/(pi n)) b/(s^2 + b^2)``. ``density(x)`` solves ``lam(s) = x`` by a
  bracketed Newton iteration in ``theta`` (``s = s_lo + (s_hi - s_lo) sin^2(theta/2)``).
- Counting function (exact integral of the density, no quadrature): ``-z'(w)/w`` has the
  antiderivative ``Psi(w) = -(1 - rank/d1) log w - (1/d1) sum_j log(w - t_j) - (1/d1) sum_j
  t_j/(w - t_j)``, so the number of eigenvalues of a component below x is
  ``(d1/pi) [Im Psi(w(x)) - Im Psi(s_lo)]`` (principal arguments; continuous in the upper half
  plane). ``cdf`` evaluates it; ``quantiles`` inverts it by bracketed Newton in theta (derivative
  = the density). Tested against adaptive quadrature of the density (1e-7) and the LLC fixed
  point itself (Stieltjes transform of density + atom off the axis: 1e-13 measured).

Conventions
- ``density`` is the continuous part of the law of the n eigenvalues of M0/d1; it integrates to
  ``1 - atom_at_zero/n``. ``atom_at_zero = n - min(rank K, d1)`` is a count: ``d1 < n`` gives
  ``n - d1`` zero eigenvalues, a singular K (rank r) gives ``n - r``. ``lambda_min`` is the lowest
  edge of the *continuous* support (the atom is kept apart); ``predict_record`` reports
  ``asym_lambda_min = 0`` when there is an atom, as lambda_min(M0) = 0 then exactly.
  ``cdf`` and ``quantiles`` include the atom (``quantiles(q) = 0`` for ``q <= atom/n``).
- ``rank = d1`` exactly (e.g. d1 = n, K full rank) is the hard edge: lambda_min = 0, density
  ~ x^{-1/2}; differences that cancel near s = 0 are written around ``1 - rank/d1`` (exact),
  so this case and edges close to 0 keep full relative accuracy.
- ``lambda_max``: top edge. ``lambda_2``: top edge of the component holding the second largest
  eigenvalue. ``spikes``: components above the largest-count component with ``count <=
  spike_max_count`` (1) whose lower edge is above ``(1 + spike_gap)`` (1.5) times the upper edge
  below, scanned from the top: the c0 spike (K's eigenvalue ~ n c0^2 along the all-ones
  direction: gelu, sigmoid) qualifies; the small components the d0 "linear" eigenvalues of K
  split into when n >> d0 do not, so tanh (c0 = 0) has none. ``lambda_bulk_max``: top edge of
  the support without the spikes (the lambda_2 prediction with the c0 spike). A spike's
  location is its component's median (``Component.median``; near the BBP value
  ``l (1 + (1/d1) sum_{j != spike} t_j/(l - t_j))``). ``classical(k)``: the classical location
  ``quantiles(1 - (k - 1/2)/n)`` of the k-th largest eigenvalue.
- Numerics: t is scaled by t_max internally; eigenvalues ``<= 64 n eps t_max`` (``zero_rtol``)
  count as exact zeros (eigensolver noise; K from expected_gram is PSD exactly); the most negative
  eigenvalue allowed is ``-1e-8 t_max``. Consecutive eigenvalues within ``1e-10`` relative
  (``cluster_rtol``) merge into one atom at their mean (changes results by ~1e-10 relative;
  K = I up to rounding is one atom). Temporaries are chunked to 2^20 elements.
- Cost (2 shared CPU cores, n = 4000, ~4000 distinct t, gelu/tanh K): build 0.05-0.25 s after
  the eigendecomposition (3-9 s), 101 quantiles 0.1 s, density at 1000 points 0.6 s.

Stated limit (measured)
- Exact in the limit for Gaussian features ``f_i ~ N(0, K)``; at finite n the edges carry the
  usual Tracy-Widom offsets: with Gaussian surrogate rows, n = 400, d1 = 4000 (16 trials), the
  mean lambda_min lies 1.3-2.1% above the edge (the classical location ``quantiles(0.5/n)`` is
  within 0.5%), lambda_2 lies 2.3-2.4% below the top edge of its component when that
  component is the bulk under a spike, 6-7% below it when the top component is sparse (tanh),
  and within 0.6% of ``classical(2)`` in every case; bulk quantiles agree within 1.1%.
- The real features ``phi(W0 X)`` are not Gaussian. Measured with ``run_trial`` (n = 400,
  d1 = 4000, sphere data, 16 trials): mean lambda_min(M0) relative to ``d1 lambda_min``
  is +0.8% (gelu), -0.3% (tanh), -2.5% (sigmoid) at d0 = 100 (n/d0 = 4), and -7.7% (gelu), -1.9%
  (tanh), -4.9% (sigmoid) at d0 = 20 (n/d0 = 20), i.e. 1-4% and 4-9% below the Gaussian
  surrogate of the same K. **In the regime n >> d0 (d0 < n/4) the deterministic equivalent
  over-states lambda_min by several percent: it is anti-conservative** as a stand-in for a
  lower bound. The c0 spike (lambda_max) agrees within 0.2%, lambda_2 with ``classical(2)``
  within 0.4%, the 10%/50%/90% quantiles within 2.7%/0.2%/1.0% at d0 = 100 and
  6.5%/2.3%/4.2% at d0 = 20 (the low quantiles are over-stated as lambda_min is).
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral
from typing import NamedTuple

import numpy as np

from ..backend.xp import array_namespace, backend_name, to_numpy

__all__ = [
    "ASYM_FIELDS", "CLUSTER_RTOL", "Component", "DeterministicEquivalent", "deterministic_equivalent",
    "deterministic_equivalent_from_eigenvalues", "extreme_edges", "predict_record",
]

#: Consecutive population eigenvalues closer than this (relative) are merged into one atom.
CLUSTER_RTOL = 1e-10
#: Symmetry tolerance: ``max |K - K^T| <= SYM_RTOL * max |K|``.
SYM_RTOL = 1e-10
#: Most negative eigenvalue accepted (relative to the largest) before K is called not PSD.
PSD_RTOL = 1e-8
#: Default rule for zero eigenvalues: ``t <= ZERO_RTOL_PER_N * n * eps * t_max`` counts as 0.
ZERO_RTOL_PER_N = 64.0
#: Warn when a component's counting-function mass differs from its integer count by more (relative).
MASS_ATOL = 1e-8
_EPS = np.finfo(np.float64).eps
_CHUNK = 1 << 20  # elements of one (points x atoms) temporary
_D_FLOOR = 1e-140  # floor of |w - t|^2 (only reached when a node sits exactly on an atom)


class Component(NamedTuple):
    """One connected component of the continuous support of the eigenvalue law of ``M0/d1``.

    ``lower``, ``upper``: its edges (M0/d1 units); ``count``: the integer number of eigenvalues it
    holds in the limit (Bai-Silverstein exact separation); ``mass``: the same number from the
    closed-form counting function, i.e. the integral of the density (a check: equal to ``count``
    to ~1e-13 at n = 400); ``median``: the point splitting its eigenvalues in half (for a count-1
    component, e.g. the c0 spike: the predicted location of that eigenvalue); ``s_lower``,
    ``s_upper``: the real roots of ``psi(s) = 1`` bounding it in the ``s = -1/underline_m`` plane
    (divided by t_max; internal).
    """

    lower: float
    upper: float
    count: int
    mass: float
    median: float
    s_lower: float
    s_upper: float


# --------------------------------------------------------------------------------------------
# population: nonzero eigenvalues of K, scaled by t_max, clustered
# --------------------------------------------------------------------------------------------


def _cluster(t: np.ndarray, rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positive values -> (distinct values, multiplicities): consecutive values whose
    gap is ``<= rtol * value`` join one atom placed at their mean."""
    if t.size == 0:
        return t, t
    brk = np.flatnonzero(np.diff(t) > rtol * t[1:]) + 1
    starts = np.concatenate(([0], brk))
    w = np.diff(np.concatenate((starts, [t.size]))).astype(np.float64)
    v = np.add.reduceat(t, starts) / w
    return v, w


def _rows(m: int, k: int) -> int:
    return max(1, _CHUNK // max(k, 1))


class _Pop:
    """The scaled population (atoms ``v_j``, max 1, multiplicities ``w_j``) and the maps of the
    Silverstein-Choi construction in the variable ``s = -1/underline_m``:

    ``psi(s) = sum_j A_j/(s - v_j)^2``, ``z(s) = s + B + sum_j A_j/(s - v_j)``, with
    ``A_j = w_j v_j^2/d1``, ``B = sum_j w_j v_j/d1``. Every difference that cancels near s = 0
    (where psi(0) = rank/d1 and z(0) = 0) is rewritten around s = 0 with ``1 - rank/d1`` exact,
    so the hard edge of rank = d1 and edges close to 0 keep their relative accuracy.
    """

    def __init__(self, v: np.ndarray, w: np.ndarray, d1: int):
        self.v, self.w, self.d1 = v, w, d1
        self.A = w * v * v / d1
        self.Wd = w / d1
        self.Wv = w * v / d1
        self.B = float(np.sum(self.Wv))
        self.one_minus_c = (d1 - float(np.sum(w))) / d1  # 1 - rank/d1, exact for integer weights

    # -- real axis ---------------------------------------------------------------------------
    def h_and_dh(self, s: np.ndarray):
        """``h = psi^{-1/2} - 1`` (concave between consecutive atoms) and ``h'``."""
        h = np.empty_like(s)
        dh = np.empty_like(s)
        step = _rows(s.size, self.v.size)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for i in range(0, s.size, step):
                si = s[i:i + step]
                x = si[:, None] - self.v[None, :]
                inv = 1.0 / x
                inv2 = inv * inv
                psi = inv2 @ self.A
                # 1 - psi(s) = (1 - rank/d1) - s sum_j Wd_j (2 v_j - s)/(s - v_j)^2
                one_m_psi = self.one_minus_c - si * ((2.0 * self.v[None, :] - si[:, None]) * inv2 @ self.Wd)
                r = np.sqrt(psi)
                h[i:i + step] = np.where(np.isfinite(psi), one_m_psi / (r * (1.0 + r)), -1.0)
                c3 = (inv2 * inv) @ self.A
                dh[i:i + step] = c3 / (psi * r)
        return h, dh

    def z_real(self, s: np.ndarray) -> np.ndarray:
        """``z(s) = s [(1 - rank/d1) + s sum_j Wd_j/(s - v_j)]`` on the real axis."""
        out = np.empty_like(s)
        step = _rows(s.size, self.v.size)
        for i in range(0, s.size, step):
            si = s[i:i + step]
            x = si[:, None] - self.v[None, :]
            out[i:i + step] = si * (self.one_minus_c + si * ((1.0 / x) @ self.Wd))
        return out

    # -- forward map on the upper half plane -------------------------------------------------
    def _sums(self, s, beta, full=False):
        """``1 - Phi``, ``Phi = sum A/D``, ``P = sum A/D^2`` (and ``Q = sum A (s-v)/D^2``, ``lam``),
        ``D = (s-v)^2 + beta``."""
        m = s.size
        omP, Phi, P = np.empty(m), np.empty(m), np.empty(m)
        Q = np.empty(m) if full else None
        lam = np.empty(m) if full else None
        step = _rows(m, self.v.size)
        for i in range(0, m, step):
            si, bi = s[i:i + step, None], beta[i:i + step, None]
            x = si - self.v[None, :]
            D = np.maximum(x * x + bi, _D_FLOOR)
            invD = 1.0 / D
            Phi[i:i + step] = invD @ self.A
            # 1 - Phi = (1 - rank/d1) - sum_j Wd_j (s (2 v_j - s) - beta)/D_j
            omP[i:i + step] = self.one_minus_c - ((si * (2.0 * self.v[None, :] - si) - bi) * invD) @ self.Wd
            invD2 = invD * invD
            P[i:i + step] = invD2 @ self.A
            if full:
                Q[i:i + step] = (invD2 * x) @ self.A
                # lam = s (1 - rank/d1) + s sum Wd (s (s-v) + beta)/D + beta sum Wv/D
                ss = s[i:i + step]
                lam[i:i + step] = (ss * self.one_minus_c + ss * (((si * x + bi) * invD) @ self.Wd)
                                   + beta[i:i + step] * (invD @ self.Wv))
        return omP, Phi, P, Q, lam

    def forward(self, s: np.ndarray):
        """For real ``s``: ``b >= 0`` with ``Phi(s, b^2) = 1`` (0 where ``psi(s) <= 1``), and
        ``lam = Re z(s + ib)``, ``dlam/ds``, ``rho = (d1/pi) b/|s+ib|^2`` (eigenvalues per unit lam).

        ``b^2`` solves ``G(beta) = 1/Phi(s, beta) - 1 = 0``; G is increasing and concave in beta
        (a parallel sum of linear functions), so Newton from beta = 0 increases monotonically to
        the root without overshoot.
        """
        s = np.asarray(s, dtype=np.float64).ravel()
        beta = np.zeros_like(s)
        active = np.ones(s.size, dtype=bool)
        for _ in range(200):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            omP, Phi, P, _, _ = self._sums(s[idx], beta[idx])
            step = -omP * Phi / P  # -G/G' with G = (1 - Phi)/Phi, G' = P/Phi^2
            done = (omP >= 0.0) | (step <= 4.0 * _EPS * beta[idx])
            beta[idx] = np.where(omP < 0.0, beta[idx] + step, beta[idx])
            active[idx[done]] = False
        else:  # pragma: no cover - defensive
            raise RuntimeError("the b-equation Newton iteration did not converge")
        b = np.sqrt(beta)
        _, _, P, Q, lam = self._sums(s, beta, full=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            dlam = 2.0 * beta * P + 2.0 * Q * Q / P
            rho = np.where(b > 0.0, (self.d1 / math.pi) * b / (s * s + beta), 0.0)
        return b, lam, dlam, rho

    def xi(self, s: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``Xi(w) = Im Psi(w)`` at ``w = s + ib`` (b >= 0, the limit from the upper half plane):
        ``Psi(w) = -(1 - rank/d1) log w - sum_j Wd_j log(w - v_j) - sum_j Wv_j/(w - v_j)`` is an
        antiderivative of ``-z'(w)/w = underline_m(z(w)) dz/dw``, so along the curve w(lam) the
        count of eigenvalues in ``[lam_a, lam_b]`` is ``(d1/pi) (Xi(w(lam_b)) - Xi(w(lam_a)))``
        (principal arguments, continuous in the upper half plane)."""
        out = np.empty_like(s)
        step = _rows(s.size, self.v.size)
        for i in range(0, s.size, step):
            si, bi = s[i:i + step], b[i:i + step]
            x = si[:, None] - self.v[None, :]
            D = np.maximum(x * x + bi[:, None] ** 2, _D_FLOOR)
            out[i:i + step] = (-self.one_minus_c * np.arctan2(bi, si)
                               - np.arctan2(bi[:, None], x) @ self.Wd + bi * ((1.0 / D) @ self.Wv))
        return out


# --------------------------------------------------------------------------------------------
# support edges (Silverstein-Choi)
# --------------------------------------------------------------------------------------------


def _newton_from_pole(pop: _Pop, start: np.ndarray, A0: np.ndarray, direction: np.ndarray,
                      limit: np.ndarray) -> np.ndarray:
    """Root of the concave ``h = psi^{-1/2} - 1`` next to the atom ``start`` (weight A0) in
    ``direction`` (+1 right, -1 left), before ``limit`` (the next atom, or +-inf).

    h = -1 at an atom, h' = +-A0^{-1/2} just beside it. Newton from the h < 0 side of a concave
    function moves monotonically toward the root and never overshoots it; NaN where there is
    no root before ``limit`` (the iterate passes the maximum of h or the next atom).
    """
    s = start + direction * np.sqrt(A0)
    out = np.full(start.shape, np.nan)
    active = np.ones(start.shape, dtype=bool)
    # the first step may already jump past the next atom: then there is no root on this side
    bad = (s - limit) * direction >= 0.0
    active &= ~bad
    for _ in range(200):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        h, dh = pop.h_and_dh(s[idx])
        dirn = direction[idx]
        failed = ~(dh * dirn > 0.0) | ~np.isfinite(h)
        conv = (h >= 0.0) & ~failed
        step = -h / dh
        new = s[idx] + np.where(failed | conv, 0.0, step)
        tiny = np.abs(new - s[idx]) <= 2.0 * _EPS * np.maximum(np.abs(new), 1e-300)
        past = (new - limit[idx]) * dirn >= 0.0
        fin = conv | (tiny & ~failed & ~past)
        out[idx[fin]] = new[fin]
        s[idx] = new
        active[idx[fin | failed | past]] = False
    return out


def _find_gaps(pop: _Pop) -> tuple[float, float, list[tuple[float, float, int]]]:
    """``(s_bottom, s_top, gaps)``: the outer roots of psi = 1 and, for every interval between
    consecutive atoms k, k+1 where psi dips below 1, its two roots ``(a, b, k)``."""
    v, A = pop.v, pop.A
    K = v.size
    one = np.ones(1)
    s_top = _newton_from_pole(pop, v[-1:].copy(), A[-1:], one, np.full(1, np.inf))[0]
    if pop.one_minus_c == 0.0:  # rank = d1: psi(0) = 1 exactly, the hard edge at lam = 0
        s_bot = 0.0
    else:
        s_bot = _newton_from_pole(pop, v[:1].copy(), A[:1], -one, np.full(1, -np.inf))[0]
    gaps = []
    if K >= 2:
        dv = np.diff(v)
        # psi >= A_k/(s-v_k)^2 + A_{k+1}/(v_{k+1}-s)^2 >= (A_k^{1/3} + A_{k+1}^{1/3})^3 / dv^2
        bound = (np.cbrt(A[:-1]) + np.cbrt(A[1:])) ** 3 / (dv * dv)
        cand = np.flatnonzero(bound < 1.0)
        if cand.size:
            a = _newton_from_pole(pop, v[cand].copy(), A[cand], np.ones(cand.size), v[cand + 1])
            b = _newton_from_pole(pop, v[cand + 1].copy(), A[cand + 1], -np.ones(cand.size), v[cand])
            for k, ak, bk in zip(cand, a, b):
                if np.isfinite(ak) and np.isfinite(bk) and ak < bk:
                    gaps.append((float(ak), float(bk), int(k)))
    if not (np.isfinite(s_top) and np.isfinite(s_bot)):  # pragma: no cover - defensive
        raise RuntimeError("the outer support edges did not converge")
    return float(s_bot), float(s_top), gaps


# --------------------------------------------------------------------------------------------
# one component: trapezoid rule in theta (s = S_L + L sin^2(theta/2))
# --------------------------------------------------------------------------------------------


class _Comp:
    """One component, parametrized by ``theta in [0, pi]``, ``s = s_lo + L sin^2(theta/2)``
    (``L = s_hi - s_lo``): ``w(theta) = s + i b(s)`` runs along the curve ``Im z(w) = 0`` from
    the lower edge (theta = 0) to the upper edge (theta = pi); lam and the count below lam are
    strictly increasing in theta. A table of ``TABLE_NODES + 1`` equally spaced theta (lam and
    count at each) only brackets the Newton iterations; every returned value is computed at its
    own theta from the exact maps, not interpolated.
    """

    TABLE_NODES = 128

    def __init__(self, pop: _Pop, s_lo: float, s_hi: float, lam_lo: float, lam_hi: float):
        self.pop, self.s_lo, self.s_hi = pop, s_lo, s_hi
        self.L = s_hi - s_lo
        self.lam_lo, self.lam_hi = lam_lo, lam_hi
        self.xi_lo = float(pop.xi(np.array([s_lo]), np.zeros(1))[0])
        theta = np.linspace(0.0, math.pi, self.TABLE_NODES + 1)
        lam, cum, _ = self.at(theta)
        self.theta, self.lam_tab, self.cum_tab = theta, lam, cum
        self.mass = float(cum[-1])  # = the exact-separation count up to rounding (tested)

    def s_of(self, theta):
        return self.s_lo + self.L * np.sin(0.5 * theta) ** 2

    def at(self, theta: np.ndarray):
        """``(lam, count below lam, d count/d theta)`` at ``theta`` (exact maps)."""
        theta = np.asarray(theta, dtype=np.float64).ravel()
        s = self.s_of(theta)
        b, lam, dlam, rho = self.pop.forward(s)
        cum = (self.pop.d1 / math.pi) * (self.pop.xi(s, b) - self.xi_lo)
        lam = np.where(theta <= 0.0, self.lam_lo, np.where(theta >= math.pi, self.lam_hi, lam))
        with np.errstate(invalid="ignore"):
            dcum = np.where(b > 0.0, rho * dlam, 0.0) * 0.5 * self.L * np.sin(theta)
        return lam, cum, dcum

    def _solve(self, target: np.ndarray, table: np.ndarray, which: int) -> np.ndarray:
        """theta with ``f(theta) = target`` for the increasing f = lam (which=0) or count (1):
        Newton on theta, kept inside its bracket (bisection when a step leaves it)."""
        target = np.asarray(target, dtype=np.float64).ravel()
        j = np.clip(np.searchsorted(table, target), 1, self.TABLE_NODES)
        lo, hi = self.theta[j - 1].copy(), self.theta[j].copy()
        flo, fhi = table[j - 1], table[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.clip(np.where(fhi > flo, (target - flo) / (fhi - flo), 0.5), 0.0, 1.0)
        th = lo + frac * (hi - lo)
        if which == 0:
            tol = 4.0 * _EPS * np.abs(target)  # lam is computed with relative accuracy (also near 0)
        else:
            tol = 1e-13 * max(self.mass, 1.0)
        active = np.ones(target.size, dtype=bool)
        for _ in range(100):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            t = th[idx]
            s = self.s_of(t)
            b, lam, dlam, rho = self.pop.forward(s)
            ds = 0.5 * self.L * np.sin(t)
            if which == 0:
                f, df = lam - target[idx], dlam * ds
            else:
                f = (self.pop.d1 / math.pi) * (self.pop.xi(s, b) - self.xi_lo) - target[idx]
                df = rho * dlam * ds
            lo[idx] = np.where(f < 0, t, lo[idx])
            hi[idx] = np.where(f > 0, t, hi[idx])
            with np.errstate(divide="ignore", invalid="ignore"):
                new = t - f / df
            bad = ~np.isfinite(new) | (new <= lo[idx]) | (new >= hi[idx])
            new = np.where(bad, 0.5 * (lo[idx] + hi[idx]), new)
            done = (np.abs(f) <= (tol[idx] if which == 0 else tol)) | (hi[idx] - lo[idx] <= 4.0 * _EPS)
            th[idx] = np.where(done, t, new)
            active[idx[done]] = False
        return th

    def theta_of_lam(self, x):
        return self._solve(x, self.lam_tab, 0)

    def theta_of_count(self, c):
        return self._solve(c, self.cum_tab, 1)


# --------------------------------------------------------------------------------------------
# public object
# --------------------------------------------------------------------------------------------


class DeterministicEquivalent:
    """The limiting eigenvalue law of ``M0/d1`` (``n`` eigenvalues) for population spectrum ``t``.

    Build it with :func:`deterministic_equivalent` or
    :func:`deterministic_equivalent_from_eigenvalues`. Every value is in units of ``M0/d1``;
    multiply by ``d1`` (``.d1``) for ``M0`` (or use :func:`predict_record`). Attributes:

    ``n``, ``d1``, ``gamma = n/d1``, ``rank`` (nonzero population eigenvalues kept),
    ``atom_at_zero`` (count of zero eigenvalues: ``n - min(rank, d1)``), ``components``
    (:class:`Component` list, ascending), ``edges`` (``(lower, upper, count)`` list),
    ``lambda_min`` (lowest edge of the continuous support; the zero atom, when there is one, is
    not part of it), ``lambda_max`` (top edge), ``lambda_2`` (top edge of the component that holds
    the second largest eigenvalue), ``spikes`` (isolated top components, see below),
    ``lambda_bulk_max`` (top edge of the support without the spikes: the lambda_2 prediction when
    the c0 spike is present), ``n_clusters`` (distinct atoms after clustering).

    Spikes: components above the largest-count component with ``count <= spike_max_count`` whose
    lower edge exceeds ``(1 + spike_gap)`` times the upper edge of the component below, scanned
    from the top (defaults 1 and 0.5: the c0 spike ~ n c0^2 qualifies; the small components that
    the d0 "linear" eigenvalues of K split into when n >> d0 do not).
    """

    def __init__(self, t: np.ndarray, d1: int, *, zero_rtol: float | None = None,
                 cluster_rtol: float = CLUSTER_RTOL, spike_max_count: int = 1, spike_gap: float = 0.5):
        t = np.sort(np.asarray(t, dtype=np.float64).ravel())
        n = t.size
        self.n, self.d1 = int(n), int(d1)
        self.gamma = n / d1
        tmax = float(t[-1]) if n else 0.0
        self.population_max = tmax
        if zero_rtol is None:
            zero_rtol = ZERO_RTOL_PER_N * max(n, 1) * _EPS
        self.zero_rtol = float(zero_rtol)
        pos = t[t > self.zero_rtol * tmax] if tmax > 0 else t[:0]
        self.rank = int(pos.size)
        self.scale = tmax if tmax > 0 else 1.0
        v, w = _cluster(pos / self.scale, cluster_rtol)
        self.n_clusters = int(v.size)
        self.atom_at_zero = int(n - min(self.rank, self.d1))
        self._comps: list[_Comp] = []
        self.components: list[Component] = []
        if self.rank:
            self._pop = _Pop(v, w, self.d1)
            self._build_components()
        self.edges = [(c.lower, c.upper, c.count) for c in self.components]
        self._spikes(spike_max_count, spike_gap)

    # -- construction ------------------------------------------------------------------------------
    def _build_components(self):
        pop = self._pop
        s_bot, s_top, gaps = _find_gaps(pop)
        bounds = [s_bot]
        for a, b, _ in gaps:
            bounds += [a, b]
        bounds.append(s_top)
        s_edges = np.array(bounds).reshape(-1, 2)
        lam_edges = np.maximum(pop.z_real(np.array(bounds)), 0.0).reshape(-1, 2)
        # exact separation: the count of a component is the number of atoms inside its s-interval;
        # the lowest one takes the rest of min(rank, d1) (it differs when rank > d1)
        cw = np.concatenate(([0.0], np.cumsum(pop.w)))
        counts = []
        for slo, shi in s_edges:
            i0, i1 = np.searchsorted(pop.v, [slo, shi])
            counts.append(int(round(cw[i1] - cw[i0])))
        counts[0] = min(self.rank, self.d1) - sum(counts[1:])
        sc = self.scale
        for (slo, shi), (llo, lhi), cnt in zip(s_edges, lam_edges, counts):
            comp = _Comp(pop, float(slo), float(shi), float(llo), float(lhi))
            if not abs(comp.mass - cnt) <= MASS_ATOL * max(cnt, 1):  # pragma: no cover - defensive
                warnings.warn(f"support component [{llo * sc:.6g}, {lhi * sc:.6g}]: the counting function gives "
                              f"{comp.mass:.12g} eigenvalues, exact separation {cnt}", RuntimeWarning, stacklevel=3)
            comp.count = cnt
            th = comp.theta_of_count(np.array([0.5 * comp.mass]))
            median = float(comp.at(th)[0][0])
            self._comps.append(comp)
            self.components.append(Component(float(llo * sc), float(lhi * sc), int(cnt), comp.mass,
                                              median * sc, float(slo), float(shi)))

    def _spikes(self, max_count: int, gap: float):
        comps = self.components
        self.spikes: list[Component] = []
        if not comps:
            self.lambda_min = self.lambda_max = self.lambda_2 = self.lambda_bulk_max = math.nan
            return
        self.lambda_min = comps[0].lower
        self.lambda_max = comps[-1].upper
        big = int(np.argmax([c.count for c in comps]))
        i = len(comps) - 1
        while i > big and comps[i].count <= max_count and comps[i].lower > (1.0 + gap) * comps[i - 1].upper:
            self.spikes.insert(0, comps[i])
            i -= 1
        self.lambda_bulk_max = comps[i].upper
        # the component holding the second largest eigenvalue
        above = 0
        self.lambda_2 = 0.0 if self.n >= 2 else math.nan
        for c in reversed(comps):
            above += c.count
            if above >= 2:
                self.lambda_2 = c.upper
                break

    # -- evaluation --------------------------------------------------------------------------------
    def density(self, x):
        """Density of the limiting eigenvalue distribution ``(1/n) sum_i delta(lambda_i(M0/d1))``
        at ``x`` (continuous part; it integrates to ``1 - atom_at_zero/n``). Same shape as ``x``."""
        x = np.asarray(x, dtype=np.float64)
        flat = x.ravel() / self.scale
        out = np.zeros(flat.size)
        for comp in self._comps:
            inside = np.flatnonzero((flat > comp.lam_lo) & (flat < comp.lam_hi))
            if inside.size:
                th = comp.theta_of_lam(flat[inside])
                _, _, _, rho = self._pop.forward(comp.s_of(th))
                out[inside] = rho / (self.n * self.scale)
        return out.reshape(x.shape)

    def cdf(self, x):
        """Fraction of the n eigenvalues of ``M0/d1`` at or below ``x`` (the zero atom included)."""
        x = np.asarray(x, dtype=np.float64)
        flat = x.ravel() / self.scale
        cnt = np.where(flat >= 0.0, float(self.atom_at_zero), 0.0)
        for comp in self._comps:
            cnt += np.where(flat >= comp.lam_hi, comp.count, 0.0)
            inside = np.flatnonzero((flat > comp.lam_lo) & (flat < comp.lam_hi))
            if inside.size:
                th = comp.theta_of_lam(flat[inside])
                cnt[inside] += comp.at(th)[1] * (comp.count / comp.mass)
        return (cnt / self.n).reshape(x.shape)

    def quantiles(self, q):
        """``inf{x : cdf(x) >= q}`` for ``q`` in [0, 1] (the zero atom included: 0 for
        ``q <= atom_at_zero/n``). Same shape as ``q``. Accuracy ~1e-10 relative (measured)."""
        q = np.asarray(q, dtype=np.float64)
        if not np.all((q >= 0.0) & (q <= 1.0)):
            raise ValueError("quantile levels must lie in [0, 1]")
        tau = q.ravel() * self.n
        out = np.zeros(tau.size)
        if not self._comps:
            return out.reshape(q.shape)
        counts = np.array([c.count for c in self._comps], dtype=np.float64)
        cum_hi = self.atom_at_zero + np.cumsum(counts)
        cum_lo = cum_hi - counts
        k = np.searchsorted(cum_hi, tau, side="left")
        first = self._comps[0]
        out[:] = 0.0 if self.atom_at_zero else first.lam_lo
        for i, comp in enumerate(self._comps):
            sel = np.flatnonzero((k == i) & (tau > cum_lo[i]))
            if sel.size == 0:
                continue
            target = (tau[sel] - cum_lo[i]) * (comp.mass / comp.count)
            th = comp.theta_of_count(np.clip(target, 0.0, comp.mass))
            out[sel] = np.clip(comp.at(th)[0], comp.lam_lo, comp.lam_hi)
        return (out * self.scale).reshape(q.shape)

    def classical(self, k, *, smallest: bool = False):
        """Classical location of the k-th largest eigenvalue (k = 1, 2, ..., n):
        ``quantiles(1 - (k - 1/2)/n)``; with ``smallest=True`` of the k-th smallest,
        ``quantiles((k - 1/2)/n)``. Near an edge with few eigenvalues (the top of a sparse top
        component) this predicts lambda_k better than the edge (see the module docstring)."""
        k = np.asarray(k, dtype=np.float64)
        if not np.all((k >= 1) & (k <= self.n)):
            raise ValueError(f"k must lie in [1, n = {self.n}]")
        return self.quantiles((k - 0.5) / self.n if smallest else 1.0 - (k - 0.5) / self.n)

    def __repr__(self):
        comps = ", ".join(f"[{c.lower:.6g}, {c.upper:.6g}]x{c.count}" for c in self.components)
        return (f"DeterministicEquivalent(n={self.n}, d1={self.d1}, atom_at_zero={self.atom_at_zero}, "
                f"components={comps})")


# --------------------------------------------------------------------------------------------
# constructors, input checks, record
# --------------------------------------------------------------------------------------------


def _check_d1(d1) -> int:
    if isinstance(d1, bool) or not isinstance(d1, Integral) or d1 < 1:
        raise ValueError(f"d1 must be a positive integer (the number of rows of F), got {d1!r}")
    return int(d1)


def _check_eigenvalues(t) -> np.ndarray:
    t = np.asarray(to_numpy(t))
    if t.ndim != 1 or t.size < 1:
        raise ValueError(f"eigenvalues must be a non-empty 1-D array, got shape {t.shape}")
    if t.dtype.kind not in "fiu" or t.dtype.kind == "b":
        raise ValueError(f"eigenvalues must be real numbers, got dtype {t.dtype}")
    t = t.astype(np.float64)
    if not np.all(np.isfinite(t)):
        raise ValueError(f"eigenvalues contain {int((~np.isfinite(t)).sum())} NaN/inf values")
    tmax = float(t.max())
    if tmax < 0 or float(t.min()) < -PSD_RTOL * max(tmax, 0.0):
        raise ValueError(f"K is not positive semidefinite: smallest eigenvalue {float(t.min())!r}, "
                         f"largest {tmax!r} (tolerance {PSD_RTOL:g} relative)")
    return t


def deterministic_equivalent_from_eigenvalues(t, d1: int, **options) -> DeterministicEquivalent:
    """The deterministic equivalent for population eigenvalues ``t`` (the n eigenvalues of
    ``K = E[M0]/d1``) and ``d1`` rows. ``options``: ``zero_rtol``, ``cluster_rtol``,
    ``spike_max_count``, ``spike_gap`` (see :class:`DeterministicEquivalent`)."""
    d1 = _check_d1(d1)
    return DeterministicEquivalent(_check_eigenvalues(t), d1, **options)


def extreme_edges(t, d1: int) -> tuple[float, float]:
    """``(lambda_min, lambda_max)`` of the deterministic equivalent, in M0/d1 units, in O(n) per
    evaluation: only the two outer roots of ``psi(s) = 1`` (module docstring), not every gap.

    ``DeterministicEquivalent`` searches each interval between consecutive atoms for a gap: at large
    d1 nearly every atom separates and the build costs O(n^2) (0.56 s at n = 1024, d1 = 2e5), which a
    threshold search evaluating dozens of widths per case cannot afford. The extremes need only
    the root below the smallest eigenvalue (``psi`` increases on ``(-inf, t_min)`` from
    ``psi(0) = rank/d1 < 1``: one root in ``(0, t_min)``) and the one above the largest (``psi``
    decreases on ``(t_max, inf)``, below ``sum t^2/(d1 (s - t_max)^2)``: one root in ``(t_max,
    t_max + (sum t^2/d1)^{1/2}]``), found by Brent's method to full precision, then ``z(s) =
    s (1 + (1/d1) sum_j t_j/(s - t_j))``. Agrees with ``DeterministicEquivalent`` to 1e-12
    (``tests/test_asymptotics.py``). Needs K of full rank and d1 > n (no zero atom, no hard edge:
    use the class there; ValueError otherwise).
    """
    from scipy.optimize import brentq  # noqa: PLC0415

    d1 = _check_d1(d1)
    t = np.sort(_check_eigenvalues(t))
    n = t.size
    tmax = float(t[-1])
    if d1 <= n or tmax <= 0 or float(t[0]) <= ZERO_RTOL_PER_N * n * _EPS * tmax:
        raise ValueError(f"extreme_edges needs d1 > n and K of full rank (d1 = {d1}, n = {n}, smallest "
                         f"eigenvalue {float(t[0])!r}): use DeterministicEquivalent, which handles the zero "
                         "atom and the hard edge")
    u = t / tmax  # scaled: the roots and z scale with tmax

    def psi_minus_1(s):
        return float(np.sum((u / (s - u)) ** 2)) / d1 - 1.0

    def z(s):
        return s * (1.0 + float(np.sum(u / (s - u))) / d1)

    lo = brentq(psi_minus_1, 0.0, float(u[0]) * (1 - 4 * _EPS), xtol=1e-300, rtol=4 * _EPS, maxiter=500)
    top = 1.0 + math.sqrt(float(np.sum(u * u)) / d1)
    hi = brentq(psi_minus_1, 1.0 * (1 + 4 * _EPS), top * (1 + 4 * _EPS), xtol=1e-300, rtol=4 * _EPS, maxiter=500)
    return max(z(lo), 0.0) * tmax, z(hi) * tmax


def deterministic_equivalent(K, d1: int, *, xp=None, **options) -> DeterministicEquivalent:
    """The deterministic equivalent of the spectrum of ``M0/d1`` for ``K = E[M0]/d1`` (n x n).

    ``K`` may be NumPy or CuPy (``xp`` defaults to its namespace): the checks and the symmetric
    eigendecomposition run there (cuSOLVER on a device), everything after it on the host.
    Raises ValueError for a non-square, non-real, non-finite, non-symmetric
    (``max|K - K^T| > 1e-10 max|K|``) or non-PSD K and for ``d1`` not a positive integer.
    """
    d1 = _check_d1(d1)
    if xp is None:
        xp = array_namespace(K)
    if not hasattr(K, "ndim"):
        K = np.asarray(K)
    K = xp.asarray(K)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 1:
        raise ValueError(f"K must be a non-empty square matrix, got shape {K.shape}")
    if K.dtype.kind not in "fiu" or K.dtype.kind == "b":
        raise ValueError(f"K must be real, got dtype {K.dtype}")
    K = K.astype(xp.float64)
    nbad = int((~xp.isfinite(K)).sum())
    if nbad:
        raise ValueError(f"K has {nbad} NaN/inf entries")
    kmax = float(xp.max(xp.abs(K)))
    asym = float(xp.max(xp.abs(K - K.T)))
    if asym > SYM_RTOL * kmax:
        raise ValueError(f"K is not symmetric: max |K - K^T| = {asym:.3g} > {SYM_RTOL:g} * max |K| = "
                         f"{SYM_RTOL * kmax:.3g}")
    from ..linalg.spectra import eigvalsh  # noqa: PLC0415

    t = eigvalsh(0.5 * (K + K.T))
    if backend_name(xp) != "numpy":
        t = to_numpy(t)
    return deterministic_equivalent_from_eigenvalues(np.asarray(t, dtype=np.float64), d1, **options)


#: Record fields of :func:`predict_record` (all per grid point, M0 units): name -> (long name, reference).
ASYM_FIELDS = {
    "asym_lambda_min": ("deterministic-equivalent lambda_min(M0) (0 when there is a zero atom)", "LLC 2018, SC 1995"),
    "asym_lambda_min_nonzero": ("deterministic-equivalent lowest edge of the continuous support of M0",
                                "LLC 2018, SC 1995"),
    "asym_lambda_min_classical": ("classical location of lambda_min(M0): d1 Q(0.5/n) (0 with a zero atom)", "LLC 2018"),
    "asym_lambda_2": ("deterministic-equivalent lambda_2(M0) (top edge of the component holding it)", "LLC 2018"),
    "asym_lambda_2_classical": ("classical location of lambda_2(M0): d1 Q(1 - 1.5/n)", "LLC 2018"),
    "asym_lambda_bulk_max": ("deterministic-equivalent top edge of the bulk of M0 (support minus spikes)", "LLC 2018"),
    "asym_lambda_max": ("deterministic-equivalent top edge of the support of M0", "LLC 2018"),
    "asym_lambda_spike": ("deterministic-equivalent location of the top spike of M0 (NaN if none)", "LLC 2018"),
    "asym_atom_at_zero": ("predicted number of zero eigenvalues of M0: n - min(rank K, d1)", "LLC 2018"),
}


def predict_record(K, d1: int, *, eigenvalues=None, de: DeterministicEquivalent | None = None,
                   **options) -> dict[str, float]:
    """The :data:`ASYM_FIELDS` of a grid point, in ``M0`` units (``d1`` times the ``M0/d1`` values).

    Give ``K = E[M0]/d1``, or its ``eigenvalues`` (then ``K`` may be None), or a prebuilt ``de``.
    """
    if de is None:
        if eigenvalues is not None:
            de = deterministic_equivalent_from_eigenvalues(eigenvalues, d1, **options)
        else:
            de = deterministic_equivalent(K, d1, **options)
    d1 = de.d1
    spike = de.spikes[-1].median if de.spikes else math.nan
    nonzero = d1 * de.lambda_min
    return {
        "asym_lambda_min": 0.0 if de.atom_at_zero else nonzero,
        "asym_lambda_min_nonzero": nonzero,
        "asym_lambda_min_classical": d1 * float(de.classical(1, smallest=True)),
        "asym_lambda_2": d1 * de.lambda_2,
        "asym_lambda_2_classical": d1 * float(de.classical(2)) if de.n >= 2 else math.nan,
        "asym_lambda_bulk_max": d1 * de.lambda_bulk_max,
        "asym_lambda_max": d1 * de.lambda_max,
        "asym_lambda_spike": d1 * spike,
        "asym_atom_at_zero": float(de.atom_at_zero),
    }
