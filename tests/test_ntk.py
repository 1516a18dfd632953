"""The streamed NTK at initialization (TrialSpec.ntk, issue 24 item 3) against independent computations:
the dense Jacobian Gram of training (closed form), a finite-difference Jacobian, and its exact
expectation by two methods (Hermite series of phi' and 2-D quadrature) and by Monte Carlo."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

import rmt_engine as rmt
from rmt_engine.montecarlo.train import initial_weights, ntk_gram
from rmt_engine.montecarlo.trial import point_data
from rmt_engine.theory.activations import activation
from rmt_engine.theory.expected import expected_ntk_gram


@pytest.mark.parametrize("act,w2", [("tanh", 0.8), ("gelu", 1.0), ("sigmoid", 1.7)])
def test_streamed_ntk_equals_the_dense_jacobian_gram(act, w2):
    spec = rmt.TrialSpec(activation=act, n=30, d0=6, d1=200, w2=w2, ntk=True)
    rec = rmt.run_trial(spec, 1, cache={})
    X = point_data(spec, {}).X
    W0, V0 = initial_weights(spec, 1)
    ev = np.linalg.eigvalsh(ntk_gram(X, W0, V0, activation(act)))
    assert rec["lambda_min_ntk"] == pytest.approx(ev[0], rel=1e-10)
    assert rec["lambda_max_ntk"] == pytest.approx(ev[-1], rel=1e-10)
    assert rec["mu_ntk0"] == pytest.approx(math.sqrt(ev[0]), rel=1e-10)
    assert rec["mu_ntk0"] >= rec["mu"]  # the NTK contains M0 (Weyl)
    assert rec["delta_ntk"] == pytest.approx(1 - rec["lambda_min_ntk"] / rec["lambda_min_E_ntk"], rel=1e-12)


def test_ntk_matches_a_finite_difference_jacobian():
    spec = rmt.TrialSpec(activation="tanh", n=8, d0=3, d1=40, ntk=True)
    rec = rmt.run_trial(spec, 0, cache={})
    X = np.asarray(point_data(spec, {}).X)
    W0, V0 = (np.asarray(a) for a in initial_weights(spec, 0))

    def f(theta):
        W = theta[:W0.size].reshape(W0.shape)
        V = theta[W0.size:].reshape(V0.shape)
        return (V @ np.tanh(W @ X)).ravel()

    theta = np.concatenate([W0.ravel(), V0.ravel()])
    h = 1e-6
    J = np.empty((X.shape[1], theta.size))
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = h
        J[:, j] = (f(theta + e) - f(theta - e)) / (2 * h)
    ev = np.linalg.eigvalsh(J @ J.T)
    assert rec["lambda_min_ntk"] == pytest.approx(ev[0], rel=1e-6)
    assert rec["lambda_max_ntk"] == pytest.approx(ev[-1], rel=1e-6)


@pytest.mark.parametrize("act", ["gelu", "tanh", "sigmoid", "softplus"])
def test_expected_ntk_series_and_quadrature_agree(act):
    X = rmt.make_data("sphere", 6, 16, 2)
    a = expected_ntk_gram(X, act, w1=1.3, w2=0.7)
    b = expected_ntk_gram(X, act, w1=1.3, w2=0.7, method="quadrature")
    assert np.abs(a - b).max() <= 1e-11 * np.abs(b).max()


def test_expected_ntk_is_the_monte_carlo_mean():
    spec = rmt.TrialSpec(activation="gelu", n=10, d0=4, d1=400, w2=0.9)
    X = np.asarray(point_data(spec, {}).X)
    E = expected_ntk_gram(X, "gelu", w1=1.0, w2=0.9) * spec.d1
    trials = 300
    acc = np.zeros_like(E)
    sq = np.zeros_like(E)
    for k in range(trials):
        W0, V0 = initial_weights(spec, k)
        g = ntk_gram(X, W0, V0, activation("gelu"))
        acc += g
        sq += g * g
    mean = acc / trials
    se = np.sqrt(np.maximum(sq / trials - mean**2, 0) / trials)
    z = np.abs(mean - E) / np.maximum(se, 1e-300)
    assert z.max() < 5.0, z.max()  # every entry within 5 standard errors (n^2 = 100 entries)


def test_ntk_on_a_width_path_and_only_where_asked():
    spec = rmt.TrialSpec(activation="tanh", n=20, d0=5, d1=1, ntk=True)
    d1s = [20, 60, 300]
    recs = rmt.run_trial_path(spec, 0, d1s, w2s=[0.5, 0.7, 0.9], cache={})
    for rec, d, w in zip(recs, d1s, [0.5, 0.7, 0.9]):
        ref = rmt.run_trial(replace(spec, d1=d, w2=w), 0, cache={})
        for k in ("lambda_min_ntk", "lambda_max_ntk", "lambda_min_E_ntk", "delta_ntk"):
            assert rec[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k
    plain = rmt.run_trial(replace(spec, d1=60, ntk=False), 0, cache={})
    assert "lambda_min_ntk" not in plain
    with pytest.raises(ValueError, match="d2 must be 1"):
        rmt.TrialSpec(activation="tanh", n=20, d0=5, d1=60, d2=2, ntk=True)


def test_ntk_study_records_the_fields(tmp_path):
    study = rmt.Study(grid={"activation": ["gelu"], "n": [16], "d0": [4], "d1": [64, 256]}, trials=3, seed=0,
                      ntk=True)
    assert study.run(tmp_path / "ntk.zarr", progress=False, workers=1).ok
    ds = rmt.open_results(tmp_path / "ntk.zarr")
    assert {"lambda_min_ntk", "delta_ntk", "lambda_min_E_ntk", "mu_ntk0"} <= set(ds.data_vars)
    assert "trial" not in ds["lambda_min_E_ntk"].dims
    assert bool((ds["mu_ntk0"] >= ds["mu"]).all())
    with pytest.raises(rmt.StudySpecError, match="d2"):
        rmt.Study(grid={"activation": ["gelu"], "n": [16], "d0": [4], "d1": [64], "d2": [2]}, trials=3, seed=0,
                  ntk=True)
