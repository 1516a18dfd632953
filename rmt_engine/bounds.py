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


def eq58_lower(d1: int, ct: float, t: int, smin_xkr: float, w1: float = 1.0, r1: float | None = 1.0) -> float:
    """Eq. 58 left end: ``w1^{2 r1} d1 c_t^2 / t! sigma_min(X^{*t})^2``.

    With ``ct = c_t(w1)`` and ``w1 = 1`` this is the sharp form, an exact lower bound on
    lambda_min(E[M0]) (every Hermite term of Eq. 56 is PSD).
    """
    return homogeneity_factor(w1, r1, 2.0) * d1 * ct**2 / math.factorial(t) * smin_xkr**2


def eq58_upper(d1: int, n: int, c0: float, c1: float, cinf2: float, smax_X: float,
               w1: float = 1.0, r2: float | None = 0.0) -> float:
    """Eq. 58 right end: ``w1^{2 r2} d1 (n c0^2 + (c1^2 + cinf^2) sigma_max(X)^2)``.

    With ``c_i(w1)`` and ``w1 = 1`` it is exact: lambda_max(A o B) <= max_i A_ii lambda_max(B)
    (Schur) and diag(G) = 1 give lambda_max(G^{o i}) <= sigma_max(X)^2.
    """
    return homogeneity_factor(w1, r2, 2.0) * d1 * (n * c0**2 + (c1**2 + cinf2) * smax_X**2)


def eq67_lower(eq58_lower_value: float, delta1: float) -> float:
    """Eq. 67/68: ``w1^{r1} sqrt((1 - delta1) c_t^2/t! d1) sigma_min(X^{*t}) = sqrt((1-delta1) * Eq.58 lower)``."""
    return math.sqrt((1.0 - delta1) * eq58_lower_value) if eq58_lower_value >= 0 else math.nan


def eq67_upper(d1: int, n: int, c0: float, c1: float, cinf2: float, smax_X: float, delta2: float,
               w1: float = 1.0, r2: float | None = 0.0) -> float:
    """Eq. 67 right: ``sqrt(1+delta2) w1^{r2} (sqrt((c1^2 + cinf^2) d1) sigma_max(X) + |c0| sqrt(d1 n))``."""
    return (math.sqrt(1.0 + delta2) * homogeneity_factor(w1, r2)
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
    """Lemma 6: ``kappa = 4 phidot_max^2 sigma_max(X)^2 k1 w1 sqrt(d0 log d1)``."""
    return 4.0 * dphi_max**2 * smax_X**2 * k1 * w1 * _sqrt_dim_log_d1(d0, d1)


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
