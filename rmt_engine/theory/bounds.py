"""The paper's bounds as small pure functions of scalars (equation numbers in each docstring).

Conventions: ``c0, c1, cinf2, ct`` are Hermite coefficients (MATH.md); ``smin_xkr`` is
sigma_min(X^{*t}); ``smax_X`` is sigma_max(X). ``r1``/``r2`` may be ``None`` (the activation has
no such homogeneity constant): a paper-form bound that needs ``w1**r`` is then NaN unless
``w1 == 1``, where the factor is exactly 1. The constants of Eq. 9/13 are alpha_f = beta_f = 2
(the loss is ||.||_F^2).
"""

from __future__ import annotations

import math

ALPHA_F = 2.0
BETA_F = 2.0


def homogeneity_factor(w1: float, r: float | None, power: float = 1.0) -> float:
    """``w1 ** (power * r)``; 1 at w1 = 1 whatever r; NaN when r does not exist (Theorem 3)."""
    if w1 == 1.0:
        return 1.0
    if r is None:
        return math.nan
    return w1 ** (power * r)


def homogeneity_exponents(w1: float, r1: float | None, r2: float | None) -> tuple:
    """``(lower, upper)`` exponents ``r`` with ``w1^lower |phi(z)| <= |phi(w1 z)| <= w1^upper |phi(z)|``.

    Theorem 3 assumes ``tau^{r1} |phi(a)| <= |phi(tau a)| <= tau^{r2} |phi(a)|`` for ``0 < tau < 1``.
    For ``w1 <= 1`` take ``tau = w1``, ``a = z``: the exponents are ``(r1, r2)``, as in the paper.
    For ``w1 > 1`` take ``tau = 1/w1`` and ``a = w1 z``: ``w1^{-r1} |phi(w1 z)| <= |phi(z)| <=
    w1^{-r2} |phi(w1 z)|``, i.e. ``w1^{r2} |phi(z)| <= |phi(w1 z)| <= w1^{r1} |phi(z)|``: the roles
    swap, ``(r2, r1)``. (The paper only states ``w1 < 1``; using ``(r1, r2)`` at ``w1 > 1`` puts the
    small power on the upper end: tanh at ``w1 = 2`` then has lambda_max(E[M0]) 1.39x its "bound".)
    """
    return (r1, r2) if w1 <= 1.0 else (r2, r1)


def normalized_coefficient(ct: float, t: int) -> float:
    """``c_t / sqrt(t!)`` without overflow (``c_t`` itself overflows near t = 300)."""
    if ct == 0.0:
        return 0.0
    if not math.isfinite(ct):
        return math.nan
    return math.copysign(math.exp(math.log(abs(ct)) - 0.5 * math.lgamma(t + 1.0)), ct)


def eq58_lower_normalized(d1: int, a_t: float, smin_xkr: float, factor: float = 1.0) -> float:
    """``factor * d1 * a_t^2 * sigma_min(X^{*t})^2`` with ``a_t = c_t/sqrt(t!)`` (Eq. 58 left end)."""
    return factor * d1 * a_t**2 * smin_xkr**2


def eq58_lower(d1: int, ct: float, t: int, smin_xkr: float, w1: float = 1.0, r1: float | None = 1.0,
               r2: float | None = None) -> float:
    """Eq. 58 left end: ``w1^{2 r} d1 c_t^2 / t! sigma_min(X^{*t})^2``, ``r = r1`` (w1 <= 1) or ``r2`` (w1 > 1).

    With ``ct = c_t(w1)`` and ``w1 = 1`` this is the sharp form, an exact lower bound on
    lambda_min(E[M0]) (every Hermite term of Eq. 56 is PSD). The paper form (``c_t`` of ``phi``
    and the factor) is not a bound in general: a pointwise bound on ``|phi|`` does not carry over
    to one Hermite coefficient (README, "Where the paper and this engine part ways").
    """
    lower_r, _ = homogeneity_exponents(w1, r1, r2)
    return eq58_lower_normalized(d1, normalized_coefficient(ct, t), smin_xkr, homogeneity_factor(w1, lower_r, 2.0))


def eq58_upper(d1: int, n: int, c0: float, c1: float, cinf2: float, smax_X: float,
               w1: float = 1.0, r2: float | None = 0.0, r1: float | None = None) -> float:
    """Eq. 58 right end: ``w1^{2 r} d1 (n c0^2 + (c1^2 + cinf^2) sigma_max(X)^2)``, ``r = r2`` (w1 <= 1) or ``r1`` (w1 > 1).

    With ``c_i(w1)`` and ``w1 = 1`` it is exact: lambda_max(A o B) <= max_i A_ii lambda_max(B)
    (Schur) and diag(G) = 1 give lambda_max(G^{o i}) <= sigma_max(X)^2.
    """
    _, upper_r = homogeneity_exponents(w1, r1, r2)
    return homogeneity_factor(w1, upper_r, 2.0) * d1 * (n * c0**2 + (c1**2 + cinf2) * smax_X**2)


def hadamard_lower(d1: int, block_weights, lam_min) -> float:
    """Full sharp Eq. 58 lower bound ``d1 * sum_i a_i lambda_min(G^{o i})`` over every order i >= 0.

    ``a_i = c_i(w1)^2 / i!``. The orders are split in blocks ``[i_k, i_{k+1})`` at evaluated orders
    ``i_0 = 0 < i_1 < ... < i_K`` (the last block is ``[i_K, inf)``); ``block_weights[k]`` is the sum
    of ``a_i`` over block k (the last one is ``E[phi(w1 z)^2] - sum_{i < i_K} a_i``, the whole tail)
    and ``lam_min[k] = lambda_min(G^{o i_k})``. Returns ``d1 * sum_k block_weights[k] * lam_min[k]``.

    Why it is an exact lower bound on lambda_min(E[M0]): E[M0] = d1 sum_i a_i G^{o i} (Eq. 56)
    with every term PSD, so lambda_min of the sum is at least the sum of the lambda_min (Weyl);
    and ``lambda_min(G^{o i})`` is nondecreasing in ``i`` (Schur: ``lambda_min(G o B) >= min_j G_jj
    lambda_min(B) = lambda_min(B)``, diag G = 1), so each order of a block is given the lambda_min of
    the block's first order, which is no larger. Nothing is truncated. Negative rounding in
    ``lam_min`` is clamped to 0.
    """
    return d1 * float(sum(w * max(lam, 0.0) for w, lam in zip(block_weights, lam_min)))


def eq67_lower(eq58_lower_value: float, delta1: float) -> float:
    """Eq. 67/68: ``w1^{r1} sqrt((1 - delta1) c_t^2/t! d1) sigma_min(X^{*t}) = sqrt((1-delta1) * Eq.58 lower)``."""
    return math.sqrt((1.0 - delta1) * eq58_lower_value) if eq58_lower_value >= 0 else math.nan


def eq67_upper(d1: int, n: int, c0: float, c1: float, cinf2: float, smax_X: float, delta2: float,
               w1: float = 1.0, r2: float | None = 0.0, r1: float | None = None) -> float:
    """Eq. 67 right: ``sqrt(1+delta2) w1^{r} (sqrt((c1^2 + cinf^2) d1) sigma_max(X) + |c0| sqrt(d1 n))``,
    ``r = r2`` for w1 <= 1, ``r1`` for w1 > 1 (``homogeneity_exponents``)."""
    _, upper_r = homogeneity_exponents(w1, r1, r2)
    return (math.sqrt(1.0 + delta2) * homogeneity_factor(w1, upper_r)
            * (math.sqrt((c1**2 + cinf2) * d1) * smax_X + abs(c0) * math.sqrt(d1 * n)))


def eq67_upper_sharp(eq58_upper_sharp_value: float, delta2: float) -> float:
    """``sqrt((1 + delta2) * sharp Eq. 58 upper)``: lambda_max(M0) <= (1+delta2) lambda_max(E[M0])."""
    return math.sqrt((1.0 + delta2) * eq58_upper_sharp_value)


def eq69_bound(w2: float, d1: int, d2: int) -> float:
    """Eq. 69: ``sigma_max(V0) <= w2 (2 sqrt(d1) + sqrt(d2))`` w.h.p."""
    return w2 * (2.0 * math.sqrt(d1) + math.sqrt(d2))


def _sqrt_dim_log_d1(dim: int, d1: int) -> float:
    return math.sqrt(dim * math.log(d1)) if d1 >= 2 else math.nan


def eq60_k(max_norm: float, w: float, dim: int, d1: int) -> float:
    """Eq. 60: ``k = max_i ||row (or column) i|| / (w sqrt(dim log d1))`` (NaN for d1 < 2)."""
    return max_norm / (w * _sqrt_dim_log_d1(dim, d1))


def lemma6_kappa(dphi_max: float, smax_X: float, k1: float, w1: float, d0: int, d1: int) -> float:
    """Lemma 6 as printed: ``kappa = 4 phidot_max^2 sigma_max(X)^2 k1 w1 sqrt(d0 log d1)``.

    This is the Lipschitz constant of one row's term ``f_i f_i^T`` in its own row of W0. M0 sums
    d1 such terms, each depending on a different row, so M0 is ``kappa sqrt(d1)``-Lipschitz in W0
    (Cauchy-Schwarz over the rows): see ``lemma6_kappa_sqrt_d1``. Measured (gelu, n = 100):
    ``dev_M0 / kappa`` grows from 1.5 to 9.3 as d1 goes 500 -> 32000, ``dev_M0 / sqrt(d1)`` is flat.
    """
    return 4.0 * dphi_max**2 * smax_X**2 * k1 * w1 * _sqrt_dim_log_d1(d0, d1)


def lemma6_kappa_sqrt_d1(kappa: float, d1: int) -> float:
    """The Lipschitz constant of M0 in the whole of W0: ``kappa sqrt(d1)`` (see ``lemma6_kappa``)."""
    return kappa * math.sqrt(d1)


def lemma3(sigma_min_F: float, sigma_max_F: float, smax_X: float, smax_V0: float,
           dphi_max: float, ddphi_max: float, chi_max: float) -> tuple[float, float, float]:
    """Eq. 18: ``(mu, nu, beta)``.

    mu = sigma_min(phi(W0 X)); nu = phidot_max sigma_max(X) sigma_max(V0) + sigma_max(phi(W0 X));
    beta = sqrt(2) sigma_max(X) (phidot_max + phiddot_max chi_max).
    """
    mu = sigma_min_F
    nu = dphi_max * smax_X * smax_V0 + sigma_max_F
    beta = math.sqrt(2.0) * smax_X * (dphi_max + ddphi_max * chi_max)
    return mu, nu, beta


def measured_ratio(a: float, b: float) -> float:
    """``a / b`` for a measurement over a positive finite reference, NaN otherwise (no ratio with 0)."""
    return a / b if b > 0 and math.isfinite(b) else math.nan


def _ratio(num: float, den: float) -> float:
    if den == 0.0:
        return math.inf if num > 0 else math.nan
    return num / den


def eq9_margin(mu: float, nu: float, beta: float, h0: float, C: float = 1.0) -> float:
    """Eq. 9 margin ``C alpha_f mu^6 / (beta^2 nu^2 h(Theta0))``: > 1 means the condition holds."""
    return _ratio(C * ALPHA_F * mu**6, beta**2 * nu**2 * h0)


def eq13_step(mu: float, nu: float, beta: float, h0: float) -> float:
    """Eq. 13: ``1 / (beta ||grad f(Phi(w0))|| + beta_f mu^2 + beta_f nu^2)``, ``||grad f|| = 2 sqrt(h0)``."""
    return 1.0 / (beta * 2.0 * math.sqrt(h0) + BETA_F * mu**2 + BETA_F * nu**2)


def eq14_rate(eta: float, mu: float, C: float = 1.0) -> float:
    """Eq. 14: per-step contraction factor ``1 - C eta alpha_f mu^2``."""
    return 1.0 - C * eta * ALPHA_F * mu**2


def eq6_radius(mu: float, beta: float) -> float:
    """Eq. 6: ``rho = mu / (2 beta)``."""
    return _ratio(mu, 2.0 * beta)


def eq20_width(smax_X: float, n: int, smin_xkr: float) -> float:
    """Eq. 20/79 with xi = 1: ``sigma_max(X)^2 sqrt(n) / sigma_min(X^{*t})^3`` (inf when sigma_min = 0)."""
    return _ratio(smax_X**2 * math.sqrt(n), smin_xkr**3)


def eq19_scale(w1: float, w2: float, d0: int, d1: int) -> float:
    """Eq. 19: ``w1 w2 sqrt(d0 d1)``; the theorem asks for it to be O(1)."""
    return w1 * w2 * math.sqrt(d0 * d1)


def lazy_ratio(beta: float, nu: float) -> float:
    """Appendix F, Eq. 82-85: ``Lip(grad Phi) / Lip(Phi)^2 ~ beta / nu^2``."""
    return _ratio(beta, nu**2)
