"""E[M0]/d1: series vs quadrature, PSD, the sharp Eq. 58, Monte Carlo, input checks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmt_engine.theory import expected as E
from rmt_engine.backend.xp import to_numpy
from rmt_engine.theory.activations import activation
from rmt_engine.theory.expected import expected_gram
from rmt_engine.theory.hermite import hermite_tail, normalized_hermite_coefficients, second_moment

BUILTINS = ("erf", "gelu", "sigmoid", "softplus", "tanh")


def sphere(d0, n, seed):
    X = np.random.default_rng(seed).standard_normal((d0, n))
    return X / np.linalg.norm(X, axis=0)


@pytest.mark.parametrize("w1", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("name", BUILTINS)
def test_series_matches_quadrature(name, w1):
    d0, n = {0.5: (3, 12), 1.0: (8, 16), 2.0: (5, 14)}[w1]
    X = sphere(d0, n, seed=hash((name, w1)) % 2**32)
    Ks = expected_gram(X, name, w1)
    Kq = expected_gram(X, name, w1, method="quadrature")
    assert Ks.shape == (n, n) and Ks.dtype == np.float64
    assert np.abs(Ks - Kq).max() <= 1e-10
    np.testing.assert_array_equal(Ks, Ks.T)
    assert np.all(np.diag(Ks) == second_moment(name, w1))


def test_series_against_direct_sum_and_closed_form():
    X = sphere(6, 30, seed=3)
    G = X.T @ X
    # erf: k(rho) = (2/pi) arcsin(2 w^2 rho/(1 + 2 w^2))
    w = 1.7
    ref = 2 / np.pi * np.arcsin(np.clip(2 * w * w * G / (1 + 2 * w * w), -1, 1))
    np.fill_diagonal(ref, 2 / np.pi * np.arcsin(2 * w * w / (1 + 2 * w * w)))
    assert np.abs(expected_gram(X, "erf", w) - ref).max() <= 1e-13
    # a plain sum of Hadamard powers, 400 terms
    a2 = normalized_hermite_coefficients("softplus", 400, 1.3) ** 2
    direct = sum(c * G**i for i, c in enumerate(a2))
    np.fill_diagonal(direct, second_moment("softplus", 1.3))
    assert np.abs(expected_gram(X, "softplus", 1.3) - direct).max() <= 1e-13


def test_near_duplicates_and_capped_series(monkeypatch):
    # columns 0/1 nearly equal, 2/3 exactly opposite: rho close to +-1 needs many terms
    X = sphere(4, 10, seed=5)
    X[:, 1] = X[:, 0] + 1e-7 * X[:, 2]
    X[:, 3] = -X[:, 2]
    X /= np.linalg.norm(X, axis=0)
    for name, w1, cap in (("gelu", 2.0, 100), ("tanh", 3.0, 200)):
        Kq = expected_gram(X, name, w1, method="quadrature")
        assert np.abs(expected_gram(X, name, w1) - Kq).max() <= 1e-10
        # with a small cap (both cases would need N > cap at |rho| = 1), only the entries beyond
        # the capped series' reach (here the pairs (0, 1) and (2, 3)) go to the quadrature
        calls = []
        real = E.dual_kernel

        def spy(act, rho, w, calls=calls, real=real):
            calls.append(np.size(rho))
            return real(act, rho, w)

        monkeypatch.setattr(E, "dual_kernel", spy)
        monkeypatch.setattr(E, "SERIES_CAP", cap)
        K = expected_gram(X, name, w1)
        monkeypatch.undo()
        assert calls == [2]  # the distinct values G01 and G23 = -1 (G is exactly symmetric)
        assert np.abs(K - Kq).max() <= 1e-10


@pytest.mark.parametrize("name", BUILTINS)
def test_psd_and_scaling_of_N(name):
    X = sphere(5, 60, seed=11)
    for w1 in (0.5, 1.0, 3.0):
        K = expected_gram(X, name, w1)
        lam = np.linalg.eigvalsh(K)
        assert lam[0] >= -1e-12 * lam[-1]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    d0=st.integers(2, 6),
    n=st.integers(2, 24),
    name=st.sampled_from(BUILTINS),
    w1=st.floats(0.25, 4.0),
    t=st.integers(1, 4),
    duplicate=st.booleans(),
)
def test_sharp_eq58(seed, d0, n, name, w1, t, duplicate):
    """lambda_min(E[M0]/d1) >= c_t(w1)^2/t! lambda_min(G^{o t}) and
    lambda_max(E[M0]/d1) <= n c_0(w1)^2 + (c_1(w1)^2 + c_inf(w1)^2) lambda_max(G)."""
    X = sphere(d0, n, seed)
    if duplicate:
        X[:, -1] = X[:, 0]
    G = X.T @ X
    K = expected_gram(X, name, w1)
    lam = np.linalg.eigvalsh(K)
    m2 = second_moment(name, w1)
    slack = 1e-12 * n * m2
    a = normalized_hermite_coefficients(name, t, w1)
    assert lam[0] >= -slack  # PSD
    assert lam[0] >= a[t] ** 2 * np.linalg.eigvalsh(G**t)[0] - slack
    upper = n * a[0] ** 2 + (a[1] ** 2 + hermite_tail(name, w1)) * np.linalg.eigvalsh(G)[-1]
    assert lam[-1] <= upper + slack


@pytest.mark.parametrize("w1", [0.6, 1.8])
@pytest.mark.parametrize("name", BUILTINS)
def test_monte_carlo(name, w1):
    # mean over trials of phi(W X)^T phi(W X)/d1, W ~ N(0, w1^2) (d1 x d0), within 4 standard errors
    n, d0, d1, trials = 5, 3, 500, 200
    X = sphere(d0, n, seed=21)
    rng = np.random.default_rng(1234)
    phi = activation(name).phi
    samples = np.empty((trials, n, n))
    for k in range(trials):
        F = phi(w1 * rng.standard_normal((d1, d0)) @ X)
        samples[k] = F.T @ F / d1
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / np.sqrt(trials)
    K = expected_gram(X, name, w1)
    z = np.abs(mean - K) / se
    assert z.max() <= 4.0, (name, w1, z.max())


def test_bad_inputs():
    X = sphere(3, 5, seed=0)
    with pytest.raises(ValueError, match="2-D array"):
        expected_gram(X[:, 0], "tanh")
    Y = X.copy()
    Y[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*NaN"):
        expected_gram(Y, "tanh")
    with pytest.raises(ValueError, match=r"unit-norm columns.*column 4"):
        expected_gram(X * np.array([1, 1, 1, 1, 1.01]), "tanh")
    with pytest.raises(ValueError, match=r"unknown method 'exact'; valid methods: series, quadrature"):
        expected_gram(X, "tanh", method="exact")
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        expected_gram(X, "relu")
    with pytest.raises(ValueError, match="w1 must be a positive finite number"):
        expected_gram(X, "tanh", w1=-1.0)
    with pytest.raises(ValueError, match="floating dtype"):
        expected_gram(np.eye(3, dtype=int), "tanh")


def test_small_cases():
    X = sphere(3, 1, seed=0)
    assert expected_gram(X, "gelu").shape == (1, 1)
    assert expected_gram(X, "gelu")[0, 0] == second_moment("gelu", 1.0)
    # orthogonal columns: off-diagonal k(0) = c_0^2
    K = expected_gram(np.eye(4), "softplus", 1.5)
    a0 = normalized_hermite_coefficients("softplus", 0, 1.5)[0]
    assert np.abs(K[~np.eye(4, dtype=bool)] - a0**2).max() <= 1e-15
    # a list and a float32 array are accepted
    assert expected_gram(np.eye(3).tolist(), "tanh").shape == (3, 3)
    X32 = np.eye(4, dtype=np.float32)[:, [0, 1, 2, 3, 0]]  # exactly unit columns, a duplicate
    K32 = expected_gram(X32, "tanh")
    assert K32.dtype == np.float64 and K32[0, 4] == pytest.approx(second_moment("tanh", 1.0), rel=1e-13)


@pytest.mark.parametrize("method", ["series", "quadrature"])
def test_xp_generic(xp, method):
    X = sphere(4, 9, seed=2)
    K = expected_gram(xp.asarray(X), "gelu", 1.3, method=method)
    assert type(K) is type(xp.asarray(X))
    np.testing.assert_allclose(to_numpy(K), expected_gram(X, "gelu", 1.3, method=method), rtol=0, atol=1e-14)
