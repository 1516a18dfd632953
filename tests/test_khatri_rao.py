"""Khatri-Rao power: explicit matrix vs Gram identity, symmetric-tensor rank bound."""

import functools
import warnings

import numpy as np
import pytest

from rmt_engine.sampling.data import make_data
from rmt_engine.theory.khatri_rao import (
    RankDeficiencyWarning,
    data_extremes,
    khatri_rao,
    khatri_rao_extremes,
    khatri_rao_gram,
    khatri_rao_rank_bound,
    khatri_rao_rank_deficient,
    symmetric_tensor_dim,
)


def _np(a):
    return np.asarray(a.get() if hasattr(a, "get") else a)


def _random_X(d0, n, seed=0):
    X = np.random.default_rng(seed).standard_normal((d0, n))
    return X / np.linalg.norm(X, axis=0)


@pytest.mark.parametrize("t", [1, 2, 3, 4])
def test_explicit_gram_equals_hadamard_power(xp, t):
    X = xp.asarray(_random_X(4, 7, seed=t))
    K = khatri_rao(X, t)
    assert K.shape == (4**t, 7)
    np.testing.assert_allclose(_np(K.T @ K), _np(khatri_rao_gram(X, t)), rtol=0, atol=1e-12)
    G = _np(X).T @ _np(X)
    np.testing.assert_allclose(_np(khatri_rao_gram(X, t)), G**t, rtol=0, atol=1e-15)


@pytest.mark.parametrize("t", [1, 2, 3])
def test_columns_are_kron_powers(t):
    X = np.random.default_rng(5).standard_normal((3, 5))  # unit norm not needed for the identity
    K = khatri_rao(X, t)
    for a in range(X.shape[1]):
        ref = functools.reduce(np.kron, [X[:, a]] * t)
        np.testing.assert_array_equal(K[:, a], ref)


def test_order_zero_is_ones_row():
    X = _random_X(3, 4)
    K = khatri_rao(X, 0)
    np.testing.assert_array_equal(K, np.ones((1, 4)))
    np.testing.assert_array_equal(K.T @ K, np.ones((4, 4)))  # the paper's X^{*0} = 11^T (its Gram)


def test_refuses_over_max_bytes():
    X = _random_X(10, 50)
    with pytest.raises(ValueError, match=r"10000 x 50 float64 = 4000000 bytes.*khatri_rao_gram"):
        khatri_rao(X, 4, max_bytes=2**20)
    assert khatri_rao(X, 4, max_bytes=4_000_000).shape == (10_000, 50)


def test_symmetric_tensor_dim_and_rank_helpers():
    assert symmetric_tensor_dim(3, 2) == 6
    assert symmetric_tensor_dim(64, 3) == 45760
    assert symmetric_tensor_dim(5, 0) == 1
    assert symmetric_tensor_dim(1, 7) == 1
    assert khatri_rao_rank_bound(3, 2, 7) == 6
    assert khatri_rao_rank_bound(3, 2, 5) == 5
    assert khatri_rao_rank_deficient(3, 2, 7)
    assert not khatri_rao_rank_deficient(3, 2, 6)


def test_rank_deficient_sigma_min_is_exactly_zero():
    d0, t, n = 3, 2, 7  # n > C(4, 2) = 6
    X = make_data("sphere", d0, n, seed=0)
    s = np.linalg.svd(khatri_rao(X, t), compute_uv=False)  # 9 singular values
    numerical_rank = int((s > 1e-12 * s[0]).sum())
    assert numerical_rank <= symmetric_tensor_dim(d0, t) < n
    with pytest.warns(RankDeficiencyWarning, match=r"n=7 > C\(d0 \+ t - 1, t\) = C\(4, 2\) = 6.*d0=3, t=2"):
        smin, smax = khatri_rao_extremes(X, t)
    assert smin == 0.0
    assert smax == pytest.approx(s[0], rel=1e-12)


@pytest.mark.parametrize("d0,t,n", [(3, 2, 6), (4, 2, 8), (3, 3, 9), (5, 2, 12)])
def test_full_rank_sigma_min_matches_svd(xp, d0, t, n):
    assert n <= symmetric_tensor_dim(d0, t)
    X = make_data("sphere", d0, n, seed=1)
    s = np.linalg.svd(khatri_rao(X, t), compute_uv=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankDeficiencyWarning)
        smin, smax = khatri_rao_extremes(xp.asarray(X), t)
    assert smin > 0
    assert smin == pytest.approx(s[n - 1], abs=1e-10)
    assert smax == pytest.approx(s[0], abs=1e-10)


def test_data_extremes():
    X = make_data("sphere", 5, 8, seed=2)  # d0 < n: sigma_min is exactly 0
    s = np.linalg.svd(X, compute_uv=False)
    assert data_extremes(X) == (0.0, pytest.approx(s[0], rel=1e-12))
    X = make_data("sphere", 8, 5, seed=2)
    s = np.linalg.svd(X, compute_uv=False)
    smin, smax = data_extremes(X)
    assert smin == pytest.approx(s[-1], rel=1e-12) and smax == pytest.approx(s[0], rel=1e-12)
    assert khatri_rao_extremes(X, 1) == (pytest.approx(smin, abs=1e-10), pytest.approx(smax, abs=1e-10))


@pytest.mark.parametrize("t", [-1, 2.0, 1.5, True, "2"])
def test_bad_order(t):
    X = _random_X(3, 4)
    with pytest.raises(ValueError, match=r"order t must be an integer >= 0, got t="):
        khatri_rao_gram(X, t)
    with pytest.raises(ValueError, match=r"order t must be an integer >= 0, got t="):
        khatri_rao_extremes(X, t)


def test_order_zero_agrees_across_the_three_functions():
    X = _random_X(3, 4)
    K = khatri_rao(X, 0)
    np.testing.assert_array_equal(khatri_rao_gram(X, 0), K.T @ K)
    with pytest.warns(RankDeficiencyWarning, match=r"C\(2, 0\) = 1"):
        smin, smax = khatri_rao_extremes(X, 0)  # the 1 x n row of ones: rank 1 < n
    assert smin == 0.0 and smax == pytest.approx(np.linalg.norm(K, 2), rel=1e-14)
    assert khatri_rao_extremes(X[:, :1], 0) == (pytest.approx(1.0), pytest.approx(1.0))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"order t must be an integer >= 0, got t=-1"):
        khatri_rao(_random_X(3, 4), -1)
    with pytest.raises(ValueError, match="2-D"):
        khatri_rao_gram(np.ones(3), 2)
    with pytest.raises(ValueError, match="floating"):
        khatri_rao_gram(np.ones((3, 2), dtype=int), 2)
    with pytest.raises(ValueError, match="d0 must be a positive integer"):
        symmetric_tensor_dim(0, 2)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        khatri_rao_rank_bound(3, 2, 0)
