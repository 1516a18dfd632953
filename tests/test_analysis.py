"""rmt_engine.report.analysis on synthetic cubes with known answers."""

import numpy as np
import pytest
import xarray as xr

from rmt_engine.report import analysis as A
from rmt_engine.study.store import GRID_AXES


def _cube(shape_over, trials, seed=0):
    """A Dataset skeleton with every grid axis (size 1 unless given) and a trial dim."""
    coords = {"activation": ["gelu"], "data": ["sphere"], "n": [20], "d0": [8], "d1": [100], "d2": [1],
              "w1": [1.0], "w2": [1.0]}
    coords.update(shape_over)
    coords["trial"] = np.arange(trials)
    return coords


def _da(coords, values, dims=GRID_AXES + ("trial",)):
    return xr.DataArray(values, dims=dims, coords={d: coords[d] for d in dims})


def test_fit_exact_power_law_returns_exponent():
    d1 = np.array([100, 200, 400, 800, 1600])
    coords = _cube({"d1": d1, "n": [10, 40]}, trials=3)
    shape = [len(coords[d]) for d in GRID_AXES + ("trial",)]
    n = np.asarray(coords["n"])[None, None, :, None, None, None, None, None, None]
    d = d1[None, None, None, None, :, None, None, None, None]
    vals = np.broadcast_to(2.5 * d ** 1.0 * n ** 0.5, shape)
    da = _da(coords, vals).chunk({"trial": 1})  # lazy input, several chunks along trial
    fit = A.fit_power_law(da, "d1").compute()
    np.testing.assert_allclose(fit.exponent, 1.0, rtol=1e-10)
    np.testing.assert_allclose(fit.stderr, 0.0, atol=1e-10)
    np.testing.assert_allclose(fit.prefactor.squeeze(), 2.5 * np.sqrt([10, 40]), rtol=1e-10)
    assert (fit.npoints == 15).all()
    fit_n = A.fit_power_law(da, "n").compute()
    np.testing.assert_allclose(fit_n.exponent, 0.5, rtol=1e-10)


def test_fit_noisy_power_law_stderr_covers_truth():
    rng = np.random.default_rng(1)
    x = np.geomspace(10, 1e4, 12)
    y = 3 * x ** 1.5 * np.exp(rng.normal(0, 0.05, x.size))
    da = xr.DataArray(y, dims=["n"], coords={"n": x})
    fit = A.fit_power_law(da, "n").compute()
    assert abs(float(fit.exponent) - 1.5) < 3 * float(fit.stderr)
    assert 0 < float(fit.stderr) < 0.05
    # custom regressor: y against x^2 has exponent 0.75
    fit2 = A.fit_power_law(da, "n", x=da["n"] ** 2).compute()
    np.testing.assert_allclose(float(fit2.exponent), float(fit.exponent) / 2, rtol=1e-10)


@pytest.mark.parametrize("method", ["wilson", "clopper-pearson"])
def test_violation_rate_of_known_bernoulli_lands_in_ci(method):
    rng = np.random.default_rng(7)
    p = np.array([0.02, 0.3, 0.7])
    trials = 2000
    ev = (rng.random((3, trials)) < p[:, None]).astype(float)
    ev[:, :10] = np.nan  # missing trials are not counted
    da = xr.DataArray(ev, dims=["d1", "trial"], coords={"d1": [1, 2, 3]})
    v = A.violation_rate(da, method=method, confidence=0.99).compute()
    assert (v.trials == trials - 10).all()
    assert ((v.lo <= 1 - p) & (1 - p <= v.hi)).all()
    h = A.holding_rate(da, method=method, confidence=0.99).compute()
    np.testing.assert_allclose(h.rate + v.rate, 1.0)
    assert ((h.lo <= p) & (p <= h.hi)).all()


def test_binomial_interval_edges():
    lo, hi = A.binomial_interval([0, 10], [10, 10], method="clopper-pearson")
    assert lo[0] == 0 and hi[1] == 1 and 0 < hi[0] < 0.4 and 0.6 < lo[1] < 1
    # Wilson 95% for 5/10 is (0.2366, 0.7634); Clopper-Pearson (the default) (0.1871, 0.8129)
    lo, hi = A.binomial_interval(5, 10, method="wilson")
    np.testing.assert_allclose([lo, hi], [0.23659, 0.76341], atol=1e-4)
    lo, hi = A.binomial_interval(5, 10)
    np.testing.assert_allclose([lo, hi], [0.18709, 0.81291], atol=1e-4)
    lo, hi = A.binomial_interval(0, 0)
    assert np.isnan(lo) and np.isnan(hi)


def test_width_threshold_known_crossing_and_exponent():
    # fraction of trials with margin > 1 rises linearly in log d1; crossing 0.95 at d1* = 0.5 n^1.5
    n = np.array([16, 64, 256])
    d1 = np.geomspace(1, 1e5, 21)
    trials = 400
    coords = _cube({"n": n, "d1": d1}, trials)
    dstar = 0.5 * n ** 1.5
    # p(d1) = 0.95 + 0.2 * log10(d1 / d1*), clipped; realised exactly by the first round(p*trials) trials
    p = np.clip(0.95 + 0.2 * np.log10(d1[None, :] / dstar[:, None]), 0, 1)
    k = np.round(p * trials).astype(int)
    margin = np.where(np.arange(trials)[None, None, :] < k[:, :, None], 2.0, 0.5)
    shape = [len(coords[d]) for d in GRID_AXES + ("trial",)]
    vals = margin.reshape(shape)
    ds = xr.Dataset({"margin": _da(coords, vals)}).chunk({"trial": 100})
    thr = A.width_threshold(ds, level=0.95).compute()
    got = thr.d1_star.squeeze().values
    # exact up to the rounding of k/trials (1/400 in p = 0.0125 decades)
    np.testing.assert_allclose(np.log10(got), np.log10(dstar), atol=0.02)
    assert not thr.censored.any()
    fit = A.fit_threshold_exponent(thr).compute()
    np.testing.assert_allclose(float(fit.exponent.squeeze()), 1.5, atol=0.02)
    assert bool(fit.consistent_eq21.squeeze()) or np.isnan(float(fit.z_eq21.squeeze()))
    lines = A.threshold_verdict(fit)
    assert len(lines) == 1 and "b = 1.5" in lines[0]
    # never reached -> NaN; reached at the smallest d1 -> censored
    thr2 = A.width_threshold(ds, level=0.95, threshold=5.0).compute()
    assert np.isnan(thr2.d1_star).all()
    thr3 = A.width_threshold(ds, level=0.95, threshold=0.0).compute()
    assert thr3.censored.all() and (thr3.d1_star == d1[0]).all()


def _fake_cube(trials=50, seed=3):
    rng = np.random.default_rng(seed)
    coords = _cube({"d1": [100, 400], "activation": ["gelu", "tanh"]}, trials)
    coords["t"] = [2]
    shape = [len(coords[d]) for d in GRID_AXES + ("trial",)]
    pshape = shape[:-1]
    lower = np.full(pshape + [1], 4.0)
    upper = np.full(pshape, 100.0)
    smin = np.sqrt(4.0 * (1 + rng.normal(0, 0.1, shape)))
    smax = np.sqrt(100.0 * (1 + rng.normal(0, 0.05, shape)))
    pdims = GRID_AXES
    c0 = np.zeros(pshape)
    c0[0] = 0.3
    ds = xr.Dataset({
        "sigma_min_F": _da(coords, smin), "sigma_max_F": _da(coords, smax),
        "eq58_lower_sharp": _da(coords, lower, pdims + ("t",)),
        "eq58_upper_sharp": _da(coords, upper, pdims),
        "eq67_lower_sharp": _da(coords, np.sqrt(0.8 * lower), pdims + ("t",)),
        "eq67_upper_sharp": _da(coords, np.sqrt(1.2 * upper), pdims),
        "delta1": _da(coords, 1 - smin ** 2 / 4.0), "delta2": _da(coords, smax ** 2 / 100.0 - 1),
        "margin": _da(coords, rng.random(shape) * 2),
        "lambda_max_M0": _da(coords, smax ** 2), "c0_w": _da(coords, c0, pdims),
    })
    return ds


def test_concentration_summary_and_events():
    ds = _fake_cube()
    s = A.concentration_summary(ds.chunk({"trial": 10}), t=2).compute()
    assert set(s["lower_ratio_q"].dims) >= {"quantile"}
    med = s.lower_ratio_q.sel(quantile=0.5)
    np.testing.assert_allclose(med, np.sqrt(1 / 0.8), rtol=0.05)
    np.testing.assert_allclose(s.delta1_mean, 0, atol=0.05)
    np.testing.assert_allclose(s.delta1_std, 0.1, rtol=0.4)
    ev = A.bound_events(ds, delta=0.2, t=2)
    # delta1 ~ N(0, 0.1): P(delta1 > 0.2) ~ 2.3%
    v = A.violation_rate(ds, "delta1", delta=0.2, t=2).compute()
    assert float(v.rate.mean()) < 0.1
    np.testing.assert_array_equal(ev["eq67_lower_sharp"].values, ev["delta1"].values)


def test_c0_spike():
    ds = _fake_cube()
    sp = A.c0_spike(ds).compute()
    assert np.isnan(sp.spike_ratio_q.sel(activation="tanh")).all()
    assert np.isfinite(sp.spike_ratio_q.sel(activation="gelu")).all()
