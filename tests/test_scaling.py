"""rmt_engine.report.scaling on synthetic data with known answers: thresholds, their coverage, exponent fits.

Coverage tolerances: a coverage measured over R repetitions has Monte Carlo standard error
sqrt(c (1 - c) / R) (0.012 at c = 0.94, R = 400; 0.0034 at c = 0.95, R = 4000). Every seed
is fixed, so the tests are deterministic; each bound is set at least 4 such standard errors
from the coverage the method has in that setting (measured once over 4000 repetitions, quoted
at each assertion), so a correct method passes for essentially any seed while an interval
that is too narrow (nominal 50%: checked to fall below the same bound) or too wide fails.
"""

import numpy as np
import pytest
import xarray as xr
from scipy import stats
from scipy.special import expit, logit

from rmt_engine.report import analysis as A
from rmt_engine.report import scaling as S

GRID = 100.0 * 2.0 ** np.arange(8)  # 8 widths, a factor 2 apart
TRUTH = 100.0 * 2.0 ** 4.5          # true 95% point, between grid values 4 and 5


def _curve(level, slope, truth=TRUTH, x=GRID):
    """P(event at x): logistic in log x, equal to ``level`` at ``truth``."""
    return expit(slope * (np.log(x) - np.log(truth)) + logit(level))


def _events(reps, trials, level, slope, seed):
    """``reps`` independent synthetic cubes (dims rep, d1, trial) of Bernoulli events."""
    p = _curve(level, slope)
    rng = np.random.default_rng(seed)
    ev = (rng.random((reps, GRID.size, trials)) < p[None, :, None]).astype(float)
    return xr.DataArray(ev, dims=["rep", "d1", "trial"], coords={"d1": GRID, "rep": np.arange(reps)})


def _coverage(thr, truth=TRUTH):
    lo, hi = thr["lo"].values, thr["hi"].values
    return float(np.mean((lo <= truth) & (truth <= hi)))


# --------------------------------------------------------------------------- threshold


def test_vectorized_crossing_equals_analysis_crossing():
    rng = np.random.default_rng(0)
    p = np.sort(rng.random((300, GRID.size)), axis=1)
    p[::3] = rng.random((100, GRID.size))  # non-monotone curves too
    xs, below, above, empty = S._crossings(GRID, p, 0.8)
    for i in range(p.shape[0]):
        ref, cens = A._crossing(GRID, p[i], 0.8)
        np.testing.assert_allclose(xs[i], ref, rtol=1e-12, equal_nan=True)
        assert below[i] == cens
        assert above[i] == (not np.isfinite(ref))
    assert not empty.any()


def test_threshold_brief_setup_point_estimate_and_coverage():
    """400 cubes of 40 trials on 8 widths, level 0.95 (the paper's)."""
    ev = _events(400, 40, 0.95, slope=2.0, seed=11)
    thr = S.threshold(ev, level=0.95, interval="bootstrap", n_boot=400, seed=3)
    d = thr["d_star"].values
    assert np.isfinite(d).all()
    # close on average (measured mean log ratio ~ +0.01; a wrong level, 0.9, would give -0.37)
    assert abs(np.mean(np.log(d / TRUTH))) < 0.1
    assert 0.8 < np.median(d / TRUTH) < 1.25
    # percentile bootstrap: 0.941 at this slope (4000 repetitions), nominal 0.95
    cov_boot = _coverage(thr)
    assert 0.88 <= cov_boot <= 0.99, cov_boot
    binom = S.threshold(ev, level=0.95, interval="binomial")
    np.testing.assert_array_equal(binom["d_star"].values, d)  # same point estimate
    assert (binom["lo"] <= binom["d_star"]).all() and (binom["d_star"] <= binom["hi"]).all()
    # 40 trials cannot certify p >= 0.95: the exact lower bound at 40/40 is 0.025^(1/40) = 0.912
    assert float(binom["p_lo"].max()) == pytest.approx(0.025 ** (1 / 40), rel=1e-9)
    assert np.isinf(binom["hi"].values).all()
    assert _coverage(binom) >= 0.95  # 0.988: one-sided, and conservative


@pytest.mark.parametrize("interval", ["binomial", "bootstrap"])
def test_threshold_interval_coverage_both_ends_informative(interval):
    """Level 0.8 with 40 trials: both ends of both intervals are finite most of the time."""
    ev = _events(400, 40, 0.8, slope=2.0, seed=12)
    thr = S.threshold(ev, level=0.8, interval=interval, n_boot=300, seed=1)
    cov = _coverage(thr)
    hi, lo = thr["hi"].values, thr["lo"].values
    assert np.mean(np.isfinite(hi) & (lo > 0)) > 0.95
    # 4000 repetitions: binomial 0.989 (exact bands are conservative), bootstrap 0.928
    lower, upper = (0.95, 1.0) if interval == "binomial" else (0.87, 0.98)
    assert lower <= cov <= upper, cov
    # informative: the median interval spans less than two grid steps (log 4)
    assert np.median(np.log(hi / lo)) < np.log(4.0)
    # power: a nominal-50% interval (coverage 0.72 binomial, 0.46 bootstrap) fails the same bound
    narrow = S.threshold(ev, level=0.8, interval=interval, confidence=0.5, n_boot=300, seed=1)
    assert _coverage(narrow) < lower - 0.1


def test_threshold_logit_interpolation_removes_the_grid_bias():
    """Near-exact probabilities (10^4 trials, counts = round(p m)): linear interpolation of p
    between grid values overestimates d* where the curve is concave (near p = 1); logit
    interpolation is exact for a logistic curve."""
    m = 10_000
    p = _curve(0.95, slope=3.0)
    k = np.round(p * m).astype(int)
    ev = np.zeros((GRID.size, m))
    for i, ki in enumerate(k):
        ev[i, :ki] = 1.0
    da = xr.DataArray(ev, dims=["d1", "trial"], coords={"d1": GRID})
    lin = float(S.threshold(da, 0.95)["d_star"])
    lgt = float(S.threshold(da, 0.95, method="logit")["d_star"])
    assert lgt == pytest.approx(TRUTH, rel=0.01)
    assert lin / TRUTH > 1.05


def test_threshold_censoring_missing_data_and_linked_case_coordinates():
    d0 = np.array([8, 12, 16, 24])
    n = d0 ** 2 // 4
    ev = np.full((4, GRID.size, 10), np.nan)
    ev[0] = 1.0                      # holds everywhere: reached at the smallest width
    ev[1] = 0.0                      # never holds
    ev[2, 3:] = 1.0                  # no trials below index 3, holds from there
    ev[3, :, :] = 0.0                # an ordinary crossing between index 5 and 6
    ev[3, 5, :8] = 1.0
    ev[3, 6:, :] = 1.0
    da = xr.DataArray(ev, dims=["case", "d1", "trial"],
                      coords={"d1": GRID, "n": ("case", n), "d0": ("case", d0)})
    thr = S.threshold(da, level=0.95)
    assert thr["d_star"].dims == ("case",)
    np.testing.assert_array_equal(thr["n"].values, n)
    np.testing.assert_array_equal(thr["d0"].values, d0)
    assert list(thr["reason"].values) == ["censored below", "censored above", "censored below", "ok"]
    assert list(thr["censored_below"].values) == [True, False, True, False]
    assert list(thr["censored_above"].values) == [False, True, False, False]
    assert float(thr["d_star"][0]) == GRID[0] and float(thr["lo"][0]) == 0.0
    assert np.isnan(float(thr["d_star"][1]))
    assert float(thr["lo"][1]) == GRID[-1] and np.isinf(float(thr["hi"][1]))
    assert float(thr["d_star"][2]) == GRID[3] and float(thr["lo"][2]) == 0.0
    f = (0.95 - 0.8) / (1.0 - 0.8)
    expect = np.exp(np.log(GRID[5]) + f * (np.log(GRID[6]) - np.log(GRID[5])))
    assert float(thr["d_star"][3]) == pytest.approx(expect, rel=1e-12)
    # no trials at all
    empty = S.threshold(da.where(False), level=0.95)
    assert (empty["reason"] == "no data").all()
    assert not empty["censored_below"].any() and not empty["censored_above"].any()
    assert np.isnan(empty["lo"]).all()


def test_threshold_bootstrap_is_deterministic_and_chunking_free():
    ev = _events(6, 30, 0.9, slope=1.5, seed=5)
    a = S.threshold(ev, 0.9, interval="bootstrap", seed=7)
    b = S.threshold(ev.chunk({"rep": 2, "trial": 7}), 0.9, interval="bootstrap", seed=7)
    c = S.threshold(ev, 0.9, interval="bootstrap", seed=8)
    for v in ("d_star", "lo", "hi"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    assert not np.array_equal(a["lo"].values, c["lo"].values) or not np.array_equal(a["hi"].values, c["hi"].values)
    # bool events and unsorted d1 give the same answer
    rev = (ev > 0.5).isel(d1=slice(None, None, -1))
    np.testing.assert_array_equal(S.threshold(rev, 0.9)["d_star"].values, S.threshold(ev, 0.9)["d_star"].values)


def test_bootstrap_equals_explicit_resampling_of_trials():
    """k* ~ Binomial(m, k/m) is resampling the trials with replacement: the interval ends are
    the (1 -+ confidence)/2 quantiles of the crossings of explicitly resampled cubes."""
    rng = np.random.default_rng(2)
    ev = (rng.random((GRID.size, 40)) < _curve(0.8, slope=1.5)[:, None]).astype(float)
    da = xr.DataArray(ev, dims=["d1", "trial"], coords={"d1": GRID})
    thr = S.threshold(da, 0.8, interval="bootstrap", n_boot=10_000, seed=0)
    idx = rng.integers(0, 40, size=(10_000, GRID.size, 40))
    p = np.take_along_axis(np.broadcast_to(ev, idx.shape), idx, -1).mean(-1)
    xs, below, above, _ = S._crossings(GRID, p, 0.8)
    v = np.where(below, 0.0, np.where(above, np.inf, xs))
    q = np.quantile(v, [0.025, 0.975])
    # 3%: the Monte Carlo error of these quantiles is < 1%; the 5% / 95% quantiles differ by ~6%
    assert float(thr["lo"]) == pytest.approx(q[0], rel=0.03)
    assert float(thr["hi"]) == pytest.approx(q[1], rel=0.03)
    assert float(thr["boot_below"]) == pytest.approx(np.mean(below), abs=0.01)


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.1])
def test_threshold_rejects_level_outside_unit_interval(level):
    ev = _events(1, 5, 0.9, slope=1.0, seed=0)
    with pytest.raises(ValueError, match="level"):
        S.threshold(ev, level=level)


def test_threshold_rejects_bad_events_and_options():
    ev = _events(1, 5, 0.9, slope=1.0, seed=0)
    with pytest.raises(ValueError, match="1, 0 or NaN"):
        S.threshold(ev * 2, 0.9)
    with pytest.raises(ValueError, match="no 'n' dim"):
        S.threshold(ev, 0.9, dim="n")
    with pytest.raises(ValueError, match="interval"):
        S.threshold(ev, 0.9, interval="wald")
    with pytest.raises(ValueError, match="method"):
        S.threshold(ev, 0.9, method="spline")
    with pytest.raises(ValueError, match="confidence"):
        S.threshold(ev, 0.9, confidence=1.0)
    with pytest.raises(ValueError, match="positive"):
        S.threshold(ev.assign_coords(d1=GRID - 100.0), 0.9)


def test_scaling_events():
    ds = xr.Dataset({"margin": ("trial", [0.5, 2.0, np.nan]), "gd_status": ("trial", [0.0, 1.0, 2.0])})
    ev = S.scaling_events(ds)
    np.testing.assert_array_equal(ev["margin"].values, [0.0, 1.0, np.nan])
    np.testing.assert_array_equal(ev["gd_converged"].values, [1.0, 0.0, 0.0])


# --------------------------------------------------------------------------- fit_scaling


def _power_law(reps, b, x, sigma, seed, a=0.7):
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 1.0, (reps, x.size)) * sigma
    y = np.exp(a) * x ** b * np.exp(noise)
    return xr.DataArray(y, dims=["rep", "n"], coords={"n": x})


def test_fit_scaling_unweighted_coverage_and_residuals():
    x = np.geomspace(16, 1024, 6)
    y = _power_law(4000, 1.5, x, 0.1, seed=21)
    f = S.fit_scaling(y, "n")
    b, se = f["exponent"].values, f["stderr"].values
    assert (f["dof"] == 4).all() and (f["reason"] == "ok").all()
    # Student t interval (dof 4): exact 95% for Gaussian noise
    cov_t = np.mean((f["ci_lo"].values <= 1.5) & (1.5 <= f["ci_hi"].values))
    assert 0.93 <= cov_t <= 0.97, cov_t
    # +-1.96 se with 4 dof covers only P(|t_4| < 1.96) = 0.879
    cov_z = np.mean(np.abs(b - 1.5) <= 1.96 * se)
    assert abs(cov_z - (1 - 2 * stats.t.sf(1.96, 4))) < 0.03
    # within one standard error: P(|t_4| < 1) = 0.626
    assert abs(np.mean(np.abs(b - 1.5) <= se) - (1 - 2 * stats.t.sf(1.0, 4))) < 0.04
    np.testing.assert_allclose(f["residuals"].sum("n").values, 0.0, atol=1e-10)
    assert f["residuals"].dims == ("rep", "n")
    assert abs(np.median(np.log(f["prefactor"].values)) - 0.7) < 0.05


def test_fit_scaling_weighted_by_intervals_coverage():
    x = np.geomspace(16, 1024, 7)
    sig = np.array([0.3, 0.05, 0.2, 0.1, 0.4, 0.08, 0.15])  # heteroscedastic, known
    y = _power_law(4000, 1.5, x, sig, seed=22)
    z = stats.norm.ppf(0.975)
    lo, hi = y * np.exp(-z * sig), y * np.exp(z * sig)
    f = S.fit_scaling(y, "n", lo=lo, hi=hi)
    b, se, se_abs = (f[v].values for v in ("exponent", "stderr", "stderr_abs"))
    # stderr_abs is exact for known Gaussian errors: coverage 0.95; stderr (inflated by
    # sqrt(max(1, chi2/dof))) is conservative: measured ~0.97
    cov_abs = np.mean(np.abs(b - 1.5) <= z * se_abs)
    cov = np.mean(np.abs(b - 1.5) <= z * se)
    assert 0.93 <= cov_abs <= 0.97, cov_abs
    assert 0.94 <= cov <= 0.99, cov
    assert abs(float(f["chi2_dof"].mean()) - 1.0) < 0.05  # E[chi2/dof] = 1, sd of the mean 0.009
    # weighted normal equations: sum r / sigma^2 = 0
    np.testing.assert_allclose((f["residuals"] / xr.DataArray(sig ** 2, dims=["n"])).sum("n").values,
                               0.0, atol=1e-8)
    # weighting helps: the spread of b is smaller than ordinary least squares'
    ols = S.fit_scaling(y, "n")
    assert np.std(b) < 0.8 * np.std(ols["exponent"].values)
    # intervals that understate the scatter threefold: the chi^2 inflation restores most of the
    # coverage (like a t interval with 5 dof: 0.89), stderr_abs alone would cover ~0.5
    g = S.fit_scaling(y, "n", lo=y * np.exp(-z * sig / 3), hi=y * np.exp(z * sig / 3))
    assert 0.85 <= np.mean(np.abs(g["exponent"] - 1.5) <= z * g["stderr"]) <= 0.93
    assert np.mean(np.abs(g["exponent"] - 1.5) <= z * g["stderr_abs"]) < 0.6
    # an unbounded interval carries no weight: that point is left out
    hi2 = hi.copy()
    hi2[:, 0] = np.inf
    f2 = S.fit_scaling(y, "n", lo=lo, hi=hi2)
    assert (f2["npoints"] == 6).all() and (f2["unweighted_dropped"] == 1).all()
    assert np.isnan(f2["residuals"].isel(n=0)).all()


def test_fit_scaling_verdicts_and_linked_case_from_threshold_dataset():
    d0 = np.array([8, 12, 16, 24, 32])
    n = d0 ** 2 / 4
    rng = np.random.default_rng(3)
    for b_true, want in ((1.5, ["consistent", "disagrees"]), (5 / 3, ["disagrees", "consistent"])):
        y = 2.0 * n ** b_true * np.exp(rng.normal(0, 0.01, n.size)) / d0  # d1* with d0 d1* ~ n^b
        thr = xr.Dataset({"d_star": ("case", y), "lo": ("case", y * 0.98), "hi": ("case", y * 1.02),
                          "censored_below": ("case", np.zeros(5, bool)),
                          "censored_above": ("case", np.zeros(5, bool))},
                         coords={"n": ("case", n), "d0": ("case", d0)})
        f = S.fit_scaling(thr, "n", y_factor="d0")
        assert f.attrs["dim"] == "case" and f.attrs["weighted"]
        assert list(f["prediction"].values) == ["Eq. 21", "App. E"]
        assert list(f["verdict"].values) == want
        assert abs(float(f["exponent"]) - b_true) < 3 * float(f["stderr"])
        # censored points are dropped
        thr["censored_below"][0] = True
        assert int(S.fit_scaling(thr, "n", y_factor="d0")["npoints"]) == 4
    # custom predictions and z_crit
    f = S.fit_scaling(thr["d_star"] * thr["d0"], "n", predictions={"half": 0.5}, z_crit=1e9)
    assert list(f["verdict"].values) == ["consistent"]


def test_fit_scaling_too_few_points_gives_nan_with_reason():
    one = xr.DataArray([10.0, np.nan, -1.0], dims=["n"], coords={"n": [4.0, 8.0, 16.0]})
    f = S.fit_scaling(one, "n")
    assert np.isnan(float(f["exponent"])) and "need >= 2" in str(f["reason"].item())
    assert (f["verdict"] == "undetermined").all()
    two = xr.DataArray([1.0, 8.0], dims=["n"], coords={"n": [1.0, 2.0]})
    f = S.fit_scaling(two, "n")
    assert float(f["exponent"]) == pytest.approx(3.0)
    assert np.isnan(float(f["stderr"])) and "no standard error" in str(f["reason"].item())
    flat = xr.DataArray([1.0, 2.0, 3.0], dims=["n"], coords={"n": [5.0, 5.0, 5.0]})
    assert str(S.fit_scaling(flat, "n")["reason"].item()) == "no spread in x"
    with pytest.raises(ValueError, match="lo and hi"):
        S.fit_scaling(two, "n", lo=two)
    with pytest.raises(ValueError, match="confidence"):
        S.fit_scaling(two, "n", confidence=0)


def test_fit_power_law_2d_recovers_both_exponents():
    ns = np.array([20.0, 40, 80, 160, 320])
    d0s = np.array([8.0, 16, 32])
    N, D = np.meshgrid(ns, d0s, indexing="ij")
    rng = np.random.default_rng(4)
    reps = 2000
    y = 2.0 * N ** 1.5 / D * np.exp(rng.normal(0, 0.1, (reps,) + N.shape))
    da = xr.DataArray(y, dims=["rep", "n", "d0"], coords={"n": ns, "d0": d0s})
    f = S.fit_power_law_2d(da, "n", "d0")
    b, c = f["b"].values, f["c"].values
    assert f["b"].dims == ("rep",) and (f["npoints"] == 15).all() and (f["reason"] == "ok").all()
    tq = stats.t.ppf(0.975, 15 - 3)
    cov_b = np.mean(np.abs(b - 1.5) <= tq * f["stderr_b"].values)
    cov_c = np.mean(np.abs(c + 1.0) <= tq * f["stderr_c"].values)
    assert 0.93 <= cov_b <= 0.97 and 0.93 <= cov_c <= 0.97, (cov_b, cov_c)  # exact 0.95, se 0.005
    assert abs(np.mean(b) - 1.5) < 0.01 and abs(np.mean(c) + 1.0) < 0.02
    np.testing.assert_allclose(f["residuals"].sum(("n", "d0")).values, 0.0, atol=1e-9)
    # along a linked axis the two exponents are not identifiable
    d0 = np.array([8.0, 12, 16, 24])
    lin = xr.DataArray(d0 ** 2, dims=["case"], coords={"n": ("case", d0 ** 2 / 4), "d0": ("case", d0)})
    g = S.fit_power_law_2d(lin, "n", "d0")
    assert np.isnan(float(g["b"])) and "collinear" in str(g["reason"].item())
    assert "need >= 3" in str(S.fit_power_law_2d(lin.isel(case=[0, 1]), "n", "d0")["reason"].item())


# --------------------------------------------------------------------------- concentration law


def test_concentration_law_recovers_exponent_per_activation():
    rng = np.random.default_rng(6)
    n = np.array([20.0, 40, 80])
    d1 = np.array([10.0, 100, 200, 400, 800, 1600, 3200])
    a_true = xr.DataArray([0.5, 0.8], dims=["activation"], coords={"activation": ["gelu", "tanh"]})
    nn = xr.DataArray(n, dims=["n"], coords={"n": n})
    dd = xr.DataArray(d1, dims=["d1"], coords={"d1": d1})
    noise = xr.DataArray(np.exp(rng.normal(0, 0.2, (2, 3, 7, 50))), dims=["activation", "n", "d1", "trial"])
    delta1 = 1.7 * (nn / dd) ** a_true * noise
    delta1 = delta1.where(dd > nn, 1.0).transpose("activation", "n", "d1", "trial")  # d1 < n: delta1 = 1
    delta1[0, 0, 3, :5] = -0.01                              # lambda_min above its mean: not in a log fit
    ds = xr.Dataset({"delta1": delta1})
    f = S.concentration_law(ds)
    b, se = f["exponent"].values, f["stderr"].values
    assert np.all(np.abs(b - a_true.values) < 3 * se), (b, se)
    assert list(f["verdict"].values) == ["consistent", "disagrees"]
    assert abs(float(f["prefactor"][0]) - 1.7) < 0.1
    assert list(f["dropped"].values) == [5, 0]
    assert list(f["npoints"].values) == [3 * 6 * 50 - 5, 3 * 6 * 50]   # d1 = 10 < n is left out
    assert f["residuals"].dims == ds["delta1"].dims
    assert np.isnan(f["residuals"].sel(d1=10.0)).all()
    np.testing.assert_allclose(f["residuals"].sum(("n", "d1", "trial")).values, 0.0, atol=1e-8)
    # the same law through x = "n/d1", or an explicit regressor
    np.testing.assert_allclose(S.concentration_law(ds, x="n/d1")["exponent"].values, b)
    g = S.concentration_law(ds, x=(nn / dd) ** 2)
    np.testing.assert_allclose(g["exponent"].values, b / 2, rtol=1e-10)
    with pytest.raises(ValueError, match="x must be"):
        S.concentration_law(ds, x="d1*n")


# --------------------------------------------------------------------------- claims table


def test_claims_table_markdown():
    rows = [{"claim": "d0 d1* ~ n^b | margin", "prediction": 1.5, "measured": 1.523, "lo": 1.41, "hi": 1.63,
             "verdict": "consistent"},
            {"claim": "delta1 ~ (n/d1)^a", "prediction": 0.5, "measured": 0.48, "stderr": 0.012},
            {"claim": "no fit", "prediction": 5 / 3, "measured": np.nan, "verdict": "undetermined",
             "note": "1 point(s)"}]
    md = S.claims_table(rows).splitlines()
    assert md[0] == "| claim | prediction | measured (interval) | verdict |"
    assert md[1] == "|---|---|---|---|"
    assert md[2] == "| d0 d1* ~ n^b \\| margin | 1.5 | 1.52 (1.41, 1.63) | consistent |"
    assert md[3] == "| delta1 ~ (n/d1)^a | 0.5 | 0.48 +- 0.012 | undetermined |"
    assert md[4] == "| no fit | 1.67 | n/a | undetermined (1 point(s)) |"


def test_end_to_end_linked_case_threshold_then_fit():
    """Events whose 95% width obeys d1* = 2 n^{3/2} / d0 along n = d0^2/4: the pipeline report.py
    runs (threshold along d1 per case, then d0 d1* against n) finds 3/2 and rejects 5/3."""
    d0 = np.array([8.0, 12, 16, 24, 32])
    n = d0 ** 2 / 4
    dstar = 2.0 * n ** 1.5 / d0
    d1 = np.geomspace(4, 1024, 17)
    p = expit(3.0 * (np.log(d1)[None, :] - np.log(dstar)[:, None]) + logit(0.95))
    rng = np.random.default_rng(8)
    ev = (rng.random((5, d1.size, 400)) < p[:, :, None]).astype(float)
    da = xr.DataArray(ev, dims=["case", "d1", "trial"], coords={"d1": d1, "n": ("case", n), "d0": ("case", d0)})
    thr = S.threshold(da, 0.95)
    assert (thr["reason"] == "ok").all()
    f = S.fit_scaling(thr, "n", y_factor="d0")
    assert abs(float(f["exponent"]) - 1.5) < 3 * float(f["stderr"])
    assert str(f["verdict"].sel(prediction="Eq. 21").item()) == "consistent"
    md = S.claims_table(S.fit_rows(f, "d0 d1* ~ n^b"))
    assert "| d0 d1* ~ n^b vs Eq. 21 | 1.5 |" in md and "vs App. E" in md


@pytest.mark.parametrize("npts", [3, 4, 8])
def test_ols_verdict_says_what_the_interval_says(npts):
    # few points: the Student-t quantile (12.7 at 1 dof) makes the interval wide; a verdict from
    # |z| <= 2 would call "disagrees" a prediction that lies inside the 95% interval
    rng = np.random.default_rng(npts)
    n = np.geomspace(16, 256, npts)
    y = xr.DataArray(3.0 * n**1.9 * np.exp(rng.normal(0, 0.15, npts)), dims=["case"], coords={"n": ("case", n)})
    preds = {f"b={b}": b for b in np.linspace(0.5, 3.5, 31)}
    f = S.fit_scaling(y, "n", predictions=preds)
    lo, hi = float(f["ci_lo"]), float(f["ci_hi"])
    assert np.isfinite(lo) and lo < float(f["exponent"]) < hi
    for label, b in preds.items():
        inside = lo <= b <= hi
        assert (str(f["verdict"].sel(prediction=label).item()) == "consistent") == inside, (label, lo, hi)
