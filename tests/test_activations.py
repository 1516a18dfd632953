"""Activations: formulas, closed-form suprema, r1/r2 of Theorem 3, lookup and registration."""

import math

import numpy as np
import pytest
import scipy.special as sp
from scipy.stats import norm

from rmt_engine.theory import activations as A
from rmt_engine.backend.xp import to_numpy
from rmt_engine.theory.activations import activation, available_activations, register_activation

BUILTINS = ("erf", "gelu", "sigmoid", "softplus", "tanh")

# independent reference formulas (plain numpy / scipy.stats)
REF = {
    "gelu": lambda x: x * norm.cdf(x),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "erf": sp.erf,
}


def test_available_and_lookup():
    assert available_activations() == BUILTINS
    for name in BUILTINS:
        assert activation(name.upper()).name == name
        assert activation(activation(name)) is activation(name)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown activation 'relu'.*erf, gelu, sigmoid, softplus, tanh"):
        activation("relu")


@pytest.mark.parametrize("name", BUILTINS)
def test_phi_matches_reference_and_derivatives(name):
    act = activation(name)
    x = np.linspace(-8.0, 8.0, 1601)
    np.testing.assert_allclose(act.phi(x), REF[name](x), rtol=1e-13, atol=1e-15)
    h = 1e-5
    fd1 = (act.phi(x + h) - act.phi(x - h)) / (2 * h)
    fd2 = (act.dphi(x + h) - act.dphi(x - h)) / (2 * h)
    np.testing.assert_allclose(act.dphi(x), fd1, atol=1e-8)
    np.testing.assert_allclose(act.ddphi(x), fd2, atol=1e-8)
    assert act.phi0 == float(act.phi(np.zeros(1))[0])
    assert act.phi0_zero == (act.phi0 == 0.0) == act.satisfies_phi0_zero
    # odd flag
    assert act.odd == bool(np.allclose(act.phi(-x), -act.phi(x), atol=1e-15))


def test_gelu_is_exact_not_tanh_approximation():
    x = np.array([1.0, -1.5])
    approx = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    assert np.all(np.abs(activation("gelu").phi(x) - approx) > 1e-5)
    np.testing.assert_allclose(activation("gelu").phi(x), x * norm.cdf(x), rtol=1e-15)


def test_stable_tails():
    x = np.array([-800.0, -40.0, 40.0, 800.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        sp_ = activation("softplus").phi(x)
        t1 = activation("tanh").dphi(x)
    np.testing.assert_allclose(sp_, [np.exp(-800.0), np.exp(-40.0), 40.0, 800.0], rtol=1e-14)
    np.testing.assert_allclose(t1[1], 4 * np.exp(-80.0), rtol=1e-12)  # sech^2 keeps relative accuracy
    assert np.isfinite(activation("sigmoid").ddphi(x)).all()


CLOSED = {
    "gelu": (norm.cdf(math.sqrt(2)) + math.sqrt(2) * norm.pdf(math.sqrt(2)), 2 * norm.pdf(0.0)),
    "tanh": (1.0, 4 / (3 * math.sqrt(3))),
    "sigmoid": (0.25, math.sqrt(3) / 18),
    "softplus": (1.0, 0.25),
    "erf": (2 / math.sqrt(math.pi), 2 * math.sqrt(2 / math.pi) * math.exp(-0.5)),
}


@pytest.mark.parametrize("name", BUILTINS)
def test_suprema_closed_forms_vs_dense_grid(name):
    act = activation(name)
    d1, d2 = CLOSED[name]
    assert act.dphi_max == pytest.approx(d1, rel=1e-14)
    assert act.ddphi_max == pytest.approx(d2, rel=1e-14)
    x = np.linspace(-60.0, 60.0, 1_200_001)
    g1 = np.abs(act.dphi(x)).max()
    g2 = np.abs(act.ddphi(x)).max()
    assert g1 <= act.dphi_max * (1 + 1e-12) and g2 <= act.ddphi_max * (1 + 1e-12)
    assert g1 == pytest.approx(act.dphi_max, rel=1e-8)
    assert g2 == pytest.approx(act.ddphi_max, rel=1e-8)


def test_facts_and_paper_assumptions():
    assert activation("gelu").dphi_max == pytest.approx(1.1289, abs=1e-4)
    assert activation("gelu").ddphi_max == pytest.approx(0.7979, abs=1e-4)
    assert not activation("sigmoid").phi0_zero and not activation("softplus").phi0_zero
    assert activation("tanh").odd and activation("erf").odd
    for name in BUILTINS:
        f = activation(name).facts()
        assert {"name", "phi0", "phi0_zero", "odd", "dphi_max", "ddphi_max", "r1", "r2", "r1_note", "r2_note"} <= set(f)
        assert f["r1_note"] and f["r2_note"]
    assert "footnote 3" in activation("sigmoid").r2_note


# --- r1, r2 -------------------------------------------------------------------------------------

def _f_grid(act):
    """f(a, tau) on a grid that includes tau near 1, small and large |a|."""
    a = np.concatenate([np.linspace(-6, 6, 1201), np.geomspace(1e-4, 1e-2, 5), -np.geomspace(1e-4, 1e-2, 5),
                        np.geomspace(10, 300, 10), -np.geomspace(10, 300, 10)])
    a = a[a != 0.0]
    tau = np.concatenate([np.linspace(0.01, 0.99, 50), [0.995, 0.999, 0.9999]])
    A_, T = np.meshgrid(a, tau, indexing="ij")
    return np.abs(act.phi(T * A_)), np.abs(act.phi(A_)), T


@pytest.mark.parametrize("name", BUILTINS)
def test_r1_r2_hold_and_are_tight(name):
    act = activation(name)
    lhs_tau_a, phi_a, T = _f_grid(act)
    assert act.r1 is not None
    # lower inequality holds with r1 (relative slack for rounding) and fails with r1 - 1e-3
    assert np.all(T**act.r1 * phi_a <= lhs_tau_a * (1 + 1e-12) + 1e-300)
    assert np.any(T ** (act.r1 - 1e-3) * phi_a > lhs_tau_a)
    if act.r2 is None:
        # the ratio is unbounded: no power of tau bounds it (large ratios at a << 0)
        ok = phi_a > 0
        assert np.max(lhs_tau_a[ok] / phi_a[ok]) > 1e10
    else:
        assert np.all(lhs_tau_a <= T**act.r2 * phi_a * (1 + 1e-12))
        assert np.any(lhs_tau_a > T ** (act.r2 + 1e-3) * phi_a)


def test_expected_r_values():
    assert (activation("tanh").r1, activation("tanh").r2) == (1.0, 0.0)
    assert (activation("erf").r1, activation("erf").r2) == (1.0, 0.0)
    assert (activation("softplus").r1, activation("softplus").r2) == (1.0, None)
    assert activation("sigmoid").r2 is None and activation("gelu").r2 is None
    # sigmoid: sup_a a (1 - s(a)) = W(1/e), an independent closed form
    assert activation("sigmoid").r1 == pytest.approx(sp.lambertw(1 / math.e).real, abs=1e-10)
    # gelu: 1 + max_(a>0) a pdf(a)/Phi(a), checked on a fine grid
    a = np.linspace(0.5, 1.2, 700_001)
    assert activation("gelu").r1 == pytest.approx(1 + np.max(a * norm.pdf(a) / norm.cdf(a)), abs=1e-11)
    assert activation("gelu").r1 > 1.29


# --- registration -------------------------------------------------------------------------------

@pytest.fixture
def cleanup():
    names = []
    yield names
    for n in names:
        A._unregister_activation(n)


def test_register_user_activation(cleanup):
    cleanup.append("cube_tanh")
    act = register_activation("Cube_Tanh", lambda x: np.tanh(x) ** 3,
                              lambda x: 3 * np.tanh(x) ** 2 / np.cosh(x) ** 2,
                              lambda x: (6 * np.tanh(x) - 12 * np.tanh(x) ** 3) / np.cosh(x) ** 2)
    assert activation("cube_tanh") is act and "cube_tanh" in available_activations()
    assert act.odd and act.phi0_zero and act.r1 is None and act.r2 is None
    x = np.linspace(-3, 3, 600001)
    assert act.dphi_max == pytest.approx(np.abs(act.dphi(x)).max(), rel=1e-6)
    assert "estimated" in act.sup_note
    with pytest.raises(ValueError, match="already registered.*overwrite=True"):
        register_activation("cube_tanh", act.phi, act.dphi, act.ddphi)
    register_activation("cube_tanh", act.phi, act.dphi, act.ddphi, overwrite=True, dphi_max=1.0, r1=3.0)
    assert activation("cube_tanh").r1 == 3.0 and "supplied" in activation("cube_tanh").sup_note


def test_register_refuses_builtin_and_bad_input(cleanup):
    with pytest.raises(ValueError, match="'tanh' is a built-in.*overwrite=True"):
        register_activation("tanh", np.tanh, lambda x: 1 / np.cosh(x) ** 2, lambda x: -2 * np.tanh(x) / np.cosh(x) ** 2)
    with pytest.raises(TypeError, match="dphi must be callable"):
        register_activation("bad", np.tanh, 1.0, np.tanh)
    # swapped derivatives are caught
    with pytest.raises(ValueError, match="dphi is not the derivative of phi.*wrong order"):
        register_activation("swapped", np.sin, lambda x: -np.sin(x), np.cos)
    with pytest.raises(ValueError, match="ddphi is not the derivative of dphi"):
        register_activation("wrong2", np.sin, np.cos, np.sin)
    assert "swapped" not in available_activations()
    cleanup.append("tanh")
    act = register_activation("tanh", np.tanh, lambda x: 1 / np.cosh(x) ** 2,
                              lambda x: -2 * np.tanh(x) / np.cosh(x) ** 2, overwrite=True)
    assert activation("tanh") is act and not act.builtin


@pytest.mark.parametrize("name", BUILTINS)
def test_xp_generic(xp, name):
    act = activation(name)
    x = xp.linspace(-4.0, 4.0, 33)
    for f in (act.phi, act.dphi, act.ddphi):
        y = f(x)
        assert type(y) is type(x)
        np.testing.assert_allclose(to_numpy(y), f(np.linspace(-4.0, 4.0, 33)), rtol=1e-12, atol=1e-15)
