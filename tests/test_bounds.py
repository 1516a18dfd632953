"""The scalar bound functions against independent transcriptions and exact inequalities."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rmt_engine.theory import bounds

pos = st.floats(0.05, 20.0)


def test_homogeneity_factor_rules():
    assert bounds.homogeneity_factor(1.0, None, 2.0) == 1.0  # w1 = 1: no constant needed
    assert math.isnan(bounds.homogeneity_factor(2.0, None))
    assert bounds.homogeneity_factor(2.0, 1.5, 2.0) == 2.0**3


@settings(max_examples=50, deadline=None)
@given(w1=pos, ct=pos, smin=pos, d1=st.integers(1, 10**6), t=st.integers(1, 6), delta=st.floats(0, 0.99))
def test_eq67_lower_is_paper_formula(w1, ct, smin, d1, t, delta):
    r1, r2 = 1.3, 0.4
    r = r1 if w1 <= 1 else r2  # w1 > 1: tau = 1/w1 swaps the exponents (bounds.homogeneity_exponents)
    paper = w1**r * math.sqrt((1 - delta) * ct**2 / math.factorial(t) * d1) * smin  # Eq. 68 verbatim
    got = bounds.eq67_lower(bounds.eq58_lower(d1, ct, t, smin, w1, r1, r2), delta)
    assert got == pytest.approx(paper, rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(c0=st.floats(-3, 3, allow_subnormal=False), c1=st.floats(-3, 3, allow_subnormal=False),
       cinf2=st.floats(0, 5, allow_subnormal=False), smax=pos,
       d1=st.integers(1, 10**6), n=st.integers(1, 10**4), delta=st.floats(0, 3))
def test_eq67_upper_dominates_sqrt_of_eq58_upper(c0, c1, cinf2, smax, d1, n, delta):
    # sqrt(a + b) <= sqrt(a) + sqrt(b): the paper's Eq. 67 upper bound is never tighter than
    # sqrt((1 + delta2) * Eq. 58 upper), which is what lambda_max(M0) <= (1+delta2) lambda_max(E[M0]) gives.
    paper = bounds.eq67_upper(d1, n, c0, c1, cinf2, smax, delta)
    sharp = bounds.eq67_upper_sharp(bounds.eq58_upper(d1, n, c0, c1, cinf2, smax), delta)
    # (below 1e-150 the square roots of subnormal sums have lost their relative accuracy)
    assert sharp <= paper * (1 + 1e-12) + 1e-150


def test_eq60_k_and_kappa_by_hand():
    assert bounds.eq60_k(6.0, 2.0, 9, 100) == pytest.approx(6.0 / (2.0 * math.sqrt(9 * math.log(100))))
    assert math.isnan(bounds.eq60_k(1.0, 1.0, 3, 1))  # log d1 = 0
    assert bounds.lemma6_kappa(0.5, 3.0, 1.2, 0.7, 16, 500) == pytest.approx(
        4 * 0.25 * 9.0 * 1.2 * 0.7 * math.sqrt(16 * math.log(500)))


def test_lemma3_and_eq9_chain_by_hand():
    mu, nu, beta = bounds.lemma3(2.0, 10.0, 3.0, 4.0, 1.1, 0.8, 5.0)
    assert (mu, nu) == (2.0, 1.1 * 3.0 * 4.0 + 10.0)
    assert beta == pytest.approx(math.sqrt(2) * 3.0 * (1.1 + 0.8 * 5.0))
    h = 0.7
    assert bounds.eq9_margin(mu, nu, beta, h, C=3.0) == pytest.approx(3.0 * 2 * mu**6 / (beta**2 * nu**2 * h))
    eta = bounds.eq13_step(mu, nu, beta, h)
    assert eta == pytest.approx(1 / (beta * 2 * math.sqrt(h) + 2 * mu**2 + 2 * nu**2))
    # Eq. 13's step keeps Eq. 14's factor in (0, 1): eta * alpha_f * mu^2 < 1 since beta_f nu^2 >= beta_f mu^2
    assert 0.0 < bounds.eq14_rate(eta, mu) < 1.0
    assert bounds.eq6_radius(mu, beta) == pytest.approx(mu / (2 * beta))
    assert bounds.lazy_ratio(beta, nu) == pytest.approx(beta / nu**2)


def test_degenerate_values_do_not_raise():
    assert bounds.eq20_width(2.0, 100, 0.0) == math.inf
    assert bounds.eq9_margin(0.0, 1.0, 1.0, 0.5) == 0.0
    assert bounds.eq6_radius(1.0, 0.0) == math.inf


def test_eq69_bound_holds_for_gaussian_matrices():
    rng = np.random.default_rng(0)
    for d1, d2, w2 in [(400, 1, 0.3), (300, 20, 2.0), (50, 50, 1.0)]:
        V = w2 * rng.standard_normal((d2, d1))
        assert np.linalg.norm(V, 2) <= bounds.eq69_bound(w2, d1, d2)
