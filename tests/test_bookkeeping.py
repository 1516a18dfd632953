"""Exact bound bookkeeping: parity zeros, undefined bounds, t = auto, the all-orders bound, w1 > 1, kappa sqrt(d1)."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rmt_engine as rmt
from rmt_engine.theory import bounds, orders
from rmt_engine.theory.activations import ParityWarning, _unregister_activation, parity_residual, register_activation
from rmt_engine.theory.hadamard import hadamard_lower_bound
from rmt_engine.theory.khatri_rao import khatri_rao_extremes

PARITY = {"gelu": ("odd", 3), "softplus": ("odd", 3), "tanh": ("even", 0), "erf": ("even", 0), "sigmoid": ("even", 2)}


@pytest.mark.parametrize("name", sorted(PARITY))
@pytest.mark.parametrize("w1", [0.5, 1.0, 2.0])
def test_declared_parity_zeros_are_exact_and_only_those(name, w1):
    act = rmt.activation(name)
    assert act.parity_zeros == PARITY[name]
    assert parity_residual(act.phi, act.parity_zeros) < 1e-12  # the declaration is true of phi
    a = rmt.normalized_hermite_coefficients(name, 40, w1)
    for i in range(41):
        if act.coefficient_is_zero(i):
            assert a[i] == 0.0, (name, i)  # exactly, not 5e-17 of quadrature noise
        elif i <= 12:
            assert abs(a[i]) > 1e-9, (name, i)  # the others are genuinely nonzero


def test_register_activation_parity_declaration_checked():
    try:
        act = register_activation("shifted_tanh", lambda x: np.tanh(x) + 0.3, lambda x: 1 - np.tanh(x) ** 2,
                                  lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2), parity_zeros=("even", 2))
        assert act.parity_zeros == ("even", 2)
        c = rmt.normalized_hermite_coefficients(act, 8)
        assert c[0] == pytest.approx(0.3) and c[2] == 0.0 and c[4] == 0.0 and c[3] != 0.0
        with pytest.warns(ParityWarning, match="does not hold"):
            bad = register_activation("shifted_tanh", lambda x: np.tanh(x) + 0.3, lambda x: 1 - np.tanh(x) ** 2,
                                      lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2), parity_zeros=("even", 0),
                                      overwrite=True)
        assert bad.parity_zeros is None
        with pytest.raises(ValueError, match="parity_zeros parity must be"):
            register_activation("x2", np.sin, np.cos, lambda x: -np.sin(x), parity_zeros=("sideways", 0))
        for kw in (dict(dphi_max=-1.0), dict(ddphi_max=math.nan), dict(r1=math.inf)):
            with pytest.raises(ValueError, match="must be a finite number >= 0"):
                register_activation("x3", np.sin, np.cos, lambda x: -np.sin(x), **kw)
    finally:
        _unregister_activation("shifted_tanh")


def test_undefined_bounds_are_zero_with_their_reason():
    # gelu, t = 3: c_3 = 0; t = 2 at n = 200 > C(17, 2) = 136: rank deficient
    rec = rmt.run_trial(rmt.TrialSpec(activation="gelu", n=200, d0=16, d1=400, t=("auto", 2, 3)), 0)
    assert rec["eq58_lower_sharp_t3"] == 0.0 and rec["ct_w_t3"] == 0.0
    assert rec["lower_undefined_t3"] == orders.COEFFICIENT_ZERO
    assert rec["eq58_lower_sharp_t2"] == 0.0 and rec["lower_undefined_t2"] == orders.RANK_DEFICIENT
    assert rec["t_auto"] == 4 and rec["lower_undefined_auto"] == 0 and rec["eq58_lower_sharp_auto"] > 0
    rec = rmt.run_trial(rmt.TrialSpec(activation="tanh", n=200, d0=16, d1=400, t=(2,)), 0)
    assert rec["lower_undefined_t2"] == orders.COEFFICIENT_ZERO | orders.RANK_DEFICIENT


@pytest.mark.parametrize("act, n, d0, expected", [("gelu", 100, 16, 2), ("gelu", 200, 16, 4), ("tanh", 100, 16, 3),
                                                  ("sigmoid", 100, 16, 3), ("tanh", 8, 16, 1), ("gelu", 900, 16, 4)])
def test_informative_t(act, n, d0, expected):
    assert orders.informative_t(act, 1.0, n, d0) == expected


def test_validate_warns_for_a_t_without_bound():
    s = rmt.Study(grid={"activation": ["gelu", "tanh"], "n": [50], "d0": [12], "d1": [100]}, trials=2, seed=1, t=(2, 3))
    w = s.bound_warnings()
    assert len(w) == 2
    assert "t = 2" in w[0] and "activation=tanh" in w[0] and "parity" in w[0] and "gelu" not in w[0]
    assert "t = 3" in w[1] and "activation=gelu" in w[1]


@settings(max_examples=25, deadline=None)
@given(act=st.sampled_from(["gelu", "tanh", "sigmoid", "softplus", "erf"]), w1=st.floats(0.3, 3.0),
       d0=st.integers(3, 10), n=st.integers(2, 40), seed=st.integers(0, 10**6))
def test_hadamard_bound_holds_exactly_and_dominates_single_t(act, w1, d0, n, seed):
    X = rmt.make_data("sphere", d0=d0, n=n, seed=seed)
    d1 = 1000
    bound, order = hadamard_lower_bound(X, act, w1, d1, min_order=6)
    K = rmt.expected_gram(X, act, w1=w1)
    ev = np.linalg.eigvalsh(K)
    lam_min_EM0 = d1 * ev[0]
    tol = 1e3 * n * np.finfo(float).eps * d1 * ev[-1]  # rounding of both eigenvalue computations
    assert bound <= lam_min_EM0 + tol
    a = rmt.normalized_hermite_coefficients(act, 6, w1)
    for t in range(1, 7):
        smin = khatri_rao_extremes(X, t)[0] if n <= rmt.symmetric_tensor_dim(d0, t) else 0.0
        single = bounds.eq58_lower_normalized(d1, a[t], smin)
        assert bound >= single - tol


def test_hadamard_bound_close_to_lambda_min_when_terms_are_well_conditioned():
    X = rmt.make_data("sphere", d0=16, n=100, seed=0)
    bound, order = hadamard_lower_bound(X, "tanh", 1.0, 1)
    lam = np.linalg.eigvalsh(rmt.expected_gram(X, "tanh"))[0]
    assert 0.8 * lam <= bound <= lam * (1 + 1e-9)


def test_w1_above_one_swaps_the_exponents():
    assert bounds.homogeneity_exponents(0.5, 1.0, 0.0) == (1.0, 0.0)
    assert bounds.homogeneity_exponents(2.0, 1.0, 0.0) == (0.0, 1.0)
    # tanh at w1 = 2: with (r1, r2) as for w1 < 1, lambda_max(E[M0]) was 1.39x its "upper bound"
    rec = rmt.run_trial(rmt.TrialSpec(activation="tanh", n=50, d0=8, d1=1000, w1=2.0, t=(3,)), 0)
    assert rec["lambda_max_EM0"] <= rec["eq58_upper"]
    assert rec["lambda_max_EM0"] <= rec["eq58_upper_sharp"] * (1 + 1e-12)


@pytest.mark.parametrize("act, t, ratio", [("gelu", 4, 0.390), ("tanh", 3, 0.609), ("sigmoid", 3, 0.0655)])
def test_paper_form_lower_bound_fails_at_w1_one_half(act, t, ratio):
    """A pointwise bound on |phi| does not carry over to one Hermite coefficient: the paper form
    w1^{2 r1} d1 c_t^2/t! sigma_min(X^{*t})^2 exceeds lambda_min(E[M0]); the sharp form holds."""
    rec = rmt.run_trial(rmt.TrialSpec(activation=act, n=60, d0=8, d1=1000, w1=0.5, t=(t,)), 0)
    assert rec["lambda_min_EM0"] / rec[f"eq58_lower_t{t}"] == pytest.approx(ratio, rel=2e-3)
    assert rec["lambda_min_EM0"] >= rec[f"eq58_lower_sharp_t{t}"]


def test_kappa_sqrt_d1_is_the_scale_of_the_deviation():
    """dev_M0 / kappa grows with d1 (Lemma 6 misses sqrt(d1)); dev_M0 / (kappa sqrt(d1)) does not."""
    r = {}
    for d1 in (500, 8000):
        recs = [rmt.run_trial(rmt.TrialSpec(activation="gelu", n=30, d0=8, d1=d1), k) for k in range(3)]
        r[d1] = (np.mean([x["dev_M0"] / x["kappa"] for x in recs]),
                 np.mean([x["dev_M0"] / x["kappa_sqrt_d1"] for x in recs]))
        assert all(x["kappa_sqrt_d1"] == pytest.approx(x["kappa"] * math.sqrt(d1), rel=1e-15) for x in recs)
    assert r[8000][0] / r[500][0] > 2.5  # sqrt(16) = 4, up to the sqrt(log d1) of kappa
    assert 0.5 < r[8000][1] / r[500][1] < 1.5


def test_delta1_is_nan_when_E_M0_is_numerically_singular():
    X = rmt.make_data("sphere", d0=6, n=10, seed=1)
    X[:, 1] = X[:, 0]  # a repeated data column: E[M0] is singular
    np.save("/tmp/_rmt_dup.npy", X)
    rec = rmt.run_trial(rmt.TrialSpec(activation="gelu", n=10, d0=6, d1=200, data="file",
                                      data_path="/tmp/_rmt_dup.npy"), 0)
    assert rec["EM0_singular"] == 1.0 and math.isnan(rec["delta1"])


def test_t_and_w1_out_of_range_are_clear_errors():
    with pytest.raises(ValueError, match=r"integer in \[1, 1000\]"):
        rmt.TrialSpec(activation="gelu", n=10, d0=4, d1=20, t=(171000,))
    for w1 in (1e-300, 1e5):
        with pytest.raises(ValueError, match="w1 = .* is outside"):
            rmt.TrialSpec(activation="gelu", n=10, d0=4, d1=20, w1=w1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec = rmt.run_trial(rmt.TrialSpec(activation="gelu", n=10, d0=4, d1=20, t=(171, "auto")), 0)
    assert math.isfinite(rec["eq58_lower_sharp_t171"])
