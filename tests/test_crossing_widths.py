"""Per-trial crossing widths (``scaling.crossing_widths``) and their quantile thresholds
(``scaling.threshold(..., method="quantile")``) against hand-built paths, independent formulas
and simulation.

Coverage tolerances: a coverage measured over R = 400 repetitions has Monte Carlo standard error
sqrt(c (1 - c) / 400) (0.011 at c = 0.95). The order-statistic interval's exact coverage for
continuous data is known (``order_statistic_interval``'s ``coverage``, checked against the Beta
distribution of uniform order statistics), so the measured coverage must lie within 4 standard
errors of it; seeds are fixed, so the tests are deterministic.
"""

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from rmt_engine.report import scaling as S

GRID = np.array([100.0, 200.0, 400.0, 800.0])


def _paths(rows, grid=GRID):
    """A (trial, d1) event DataArray from a list of per-trial paths."""
    return xr.DataArray(np.array(rows, dtype=float), dims=["trial", "d1"], coords={"d1": grid})


def _widths_ds(w, cens=None):
    """A crossing_widths-shaped Dataset built directly from simulated widths: dims (rep, trial),
    or (trial,) for a single row."""
    cens = np.zeros(w.shape, dtype=np.int8) if cens is None else cens
    dims = ("rep", "trial")
    if w.shape[0] == 1:
        w, cens, dims = w[0], cens[0], ("trial",)
    return xr.Dataset({"d1_cross": (dims, w), "censored": (dims, cens)})


def _coverage(thr, truth):
    lo, hi = thr["lo"].values, thr["hi"].values
    return float(np.mean((lo <= truth) & (truth <= hi)))


# --------------------------------------------------------------------------- crossing_widths


def test_hand_built_paths_geometric_midpoint_and_censoring():
    nan = np.nan
    ev = _paths([[0, 0, 1, 1],        # fails up to 200, holds from 400: between 200 and 400
                 [1, 1, 0, 1],        # holds, fails at 400, holds again: between 400 and 800
                 [1, 1, 1, 1],        # holds everywhere: censored below
                 [1, 1, 1, 0],        # does not hold at the largest: censored above
                 [0, 0, 0, 0],        # never holds: censored above
                 [nan, 0, nan, 1],    # checkpoints 200 and 800 only
                 [nan, nan, nan, nan]])  # no data
    cw = S.crossing_widths(ev)
    assert cw["d1_cross"].dims == ("trial",)
    np.testing.assert_allclose(cw["d1_cross"].values,
                               [np.sqrt(200 * 400), np.sqrt(400 * 800), 100, 800, 800, 400, nan], rtol=1e-12)
    assert list(cw["censored"].values) == [0, 0, -1, 1, 1, 0, 0]
    np.testing.assert_array_equal(cw["d1_lo"].values, [200, 400, 0, 800, 800, 200, nan])
    np.testing.assert_array_equal(cw["d1_hi"].values, [400, 800, 100, np.inf, np.inf, 800, nan])
    assert list(cw["checkpoints"].values) == [4, 4, 4, 4, 4, 2, 0]
    assert not cw["interpolated"].any()
    # d1 unsorted, dims in another order, bool events: the same
    rev = (ev.isel(trial=slice(0, 5)) > 0.5).isel(d1=slice(None, None, -1)).transpose("d1", "trial")
    np.testing.assert_array_equal(S.crossing_widths(rev)["d1_cross"].values, cw["d1_cross"].values[:5])


def test_log_interpolation_of_the_variable():
    """margin in log scale crossing 1, linear in log d1 between the last failing checkpoint and
    the next one (hand computations)."""
    m = xr.DataArray([[0.1, 0.5, 4.0, 8.0],     # f = log 2 / log 8 = 1/3 between 200 and 400
                      [2.0, 0.9, 1.1, 3.0],     # fails at 200 (after holding at 100)
                      [2.0, 3.0, 4.0, 5.0],     # holds everywhere
                      [0.2, 0.3, 0.5, 0.9]],    # never
                     dims=["trial", "d1"], coords={"d1": GRID})
    cw = S.crossing_widths(var=m, threshold=1.0)
    f1 = -np.log(0.9) / (np.log(1.1) - np.log(0.9))
    np.testing.assert_allclose(cw["d1_cross"].values,
                               [200 * 2 ** (1 / 3), 200 * 2 ** f1, 100, 800], rtol=1e-12)
    assert list(cw["censored"].values) == [0, 0, -1, 1]
    assert list(cw["interpolated"].values) == [True, True, False, False]
    # a power law var = (d1 / W)^a is crossed exactly at W
    w = np.array([130.0, 333.0, 777.0])
    x = np.geomspace(100, 800, 7)
    pl = xr.DataArray((x[None, :] / w[:, None]) ** 1.7, dims=["trial", "d1"], coords={"d1": x})
    np.testing.assert_allclose(S.crossing_widths(var=pl, threshold=1.0)["d1_cross"].values, w, rtol=1e-12)
    # a threshold per trial (a DataArray) and the linear scale
    thr = xr.DataArray([2.0, 4.0, 6.0], dims=["trial"])
    lin = xr.DataArray(np.tile([1.0, 3.0, 5.0, 7.0], (3, 1)), dims=["trial", "d1"], coords={"d1": GRID})
    cl = S.crossing_widths(var=lin, threshold=thr, var_scale="linear")
    # 2 between 1 (100) and 3 (200): f = 1/2; 4 between 3 (200) and 5 (400); 6 between 5 and 7
    np.testing.assert_allclose(cl["d1_cross"].values, [100 * 2 ** 0.5, 200 * 2 ** 0.5, 400 * 2 ** 0.5])


def test_event_with_its_own_missing_values_and_a_holding_below_sense():
    m = xr.DataArray([[0.1, 0.5, 4.0, 8.0], [0.1, 0.5, 4.0, 8.0]], dims=["trial", "d1"], coords={"d1": GRID})
    # trial 0: inconclusive at 400 (NaN): the next checkpoint after the failure at 200 is 800,
    # log margin from log 0.5 to log 8: f = log 2 / log 16 = 1/4 of log 4
    # trial 1: the event says "fails" at 400 although margin > 1 there: no sign change of the
    # variable between 400 and 800, so the geometric midpoint
    ev = xr.DataArray([[0, 0, np.nan, 1], [0, 0, 0, 1]], dims=["trial", "d1"], coords={"d1": GRID})
    cw = S.crossing_widths(ev, var=m, threshold=1.0)
    np.testing.assert_allclose(cw["d1_cross"].values, [200 * 4 ** 0.25, np.sqrt(400 * 800)], rtol=1e-12)
    assert list(cw["interpolated"].values) == [True, False]
    # delta1 <= 0.2 (holds below the threshold)
    d = xr.DataArray([[0.5, 0.3, 0.1, 0.05]], dims=["trial", "d1"], coords={"d1": GRID})
    cd = S.crossing_widths(var=d, threshold=0.2, sense="<=")
    f = (np.log(0.3) - np.log(0.2)) / (np.log(0.3) - np.log(0.1))
    np.testing.assert_allclose(cd["d1_cross"].values, [200 * 2 ** f], rtol=1e-12)


def test_cube_dataset_and_coordinates_kept():
    rng = np.random.default_rng(0)
    d0 = np.array([8.0, 12.0])
    x = np.geomspace(50, 3200, 7)
    w = np.exp(rng.normal(np.log(400), 0.5, (2, 30)))
    margin = (x[None, :, None] / w[:, None, :]) ** 2.0
    ds = xr.Dataset({"margin": (("case", "d1", "trial"), margin)},
                    coords={"d1": x, "n": ("case", d0 ** 2 / 4), "d0": ("case", d0)})
    cw = S.crossing_widths(ds)
    assert cw["d1_cross"].dims == ("case", "trial")
    np.testing.assert_array_equal(cw["n"].values, d0 ** 2 / 4)
    inner = cw["censored"].values == 0
    np.testing.assert_allclose(cw["d1_cross"].values[inner], w[inner], rtol=1e-10)
    a = S.threshold(ds, 0.8, method="quantile")
    b = S.threshold(S.crossing_widths(var=ds["margin"], threshold=1.0), 0.8, method="quantile")
    for v in ("d_star", "lo", "hi"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    np.testing.assert_array_equal(a["d0"].values, d0)


# --------------------------------------------------------------------------- order statistics


def test_order_statistic_interval_hand_example():
    # N = 10, the median, 95%: F(1) = 11/1024 <= 0.025 < F(2) = 56/1024, so l = 2; symmetric u = 9
    l, u, cov = S.order_statistic_interval(10, 0.5, 0.95)
    assert (int(l), int(u)) == (2, 9)
    assert float(cov) == pytest.approx((1024 - 2 * 11) / 1024, rel=1e-12)
    # 40 samples cannot bound the 95% quantile above: 0.95^40 = 0.129 > 0.025
    l, u, _ = S.order_statistic_interval(40, 0.95, 0.95)
    assert int(u) == 41 and 1 <= int(l) < 38
    assert int(S.order_statistic_interval(72, 0.95, 0.95)[1]) == 72   # 0.95^72 = 0.0249
    assert int(S.order_statistic_interval(71, 0.95, 0.95)[1]) == 72   # none: 0.95^71 = 0.0262


@pytest.mark.parametrize("n,q,conf", [(10, 0.5, 0.95), (37, 0.9, 0.95), (100, 0.95, 0.9), (250, 0.3, 0.99),
                                      (5, 0.1, 0.8)])
def test_order_statistic_interval_against_beta_order_statistics(n, q, conf):
    """Independent: for uniforms, U_(i) ~ Beta(i, n - i + 1), so P(X_(i) <= xi_q) = I_q(i, n-i+1)."""
    def p_le(i):  # P(X_(i) <= xi_q)
        return 1.0 if i < 1 else (0.0 if i > n else stats.beta.cdf(q, i, n - i + 1))

    a2 = (1 - conf) / 2
    l, u, cov = (int(v) if i < 2 else float(v) for i, v in enumerate(S.order_statistic_interval(n, q, conf)))
    # each tail <= alpha/2, and the interval is the narrowest equal-tailed one
    assert 1 - p_le(l) <= a2 + 1e-12 and (l == n or 1 - p_le(l + 1) > a2)
    assert p_le(u) <= a2 + 1e-12 and (u == 1 or p_le(u - 1) > a2)
    assert cov == pytest.approx(p_le(l) - p_le(u), abs=1e-10)
    assert cov >= conf
    # vectorized over n
    L, U, C = S.order_statistic_interval(np.array([n, 0, n]), q, conf)
    assert list(L) == [l, 0, l] and list(U) == [u, 1, u] and np.isnan(C[1])


# --------------------------------------------------------------------------- threshold(method="quantile")


def test_quantile_threshold_hand_example_and_censoring():
    w = np.array([[130.0, 170.0, 110.0, 190.0, 150.0, 210.0, 250.0, 230.0, 120.0, 290.0]])
    thr = S.threshold(_widths_ds(w), 0.5, method="quantile")
    s = np.sort(w[0])
    # k = ceil(0.5 * 10) = 5; (l, u) = (2, 9) (test above)
    assert float(thr["d_star"]) == s[4] and float(thr["lo"]) == s[1] and float(thr["hi"]) == s[8]
    assert str(thr["reason"].item()) == "ok" and int(thr["trials"]) == 10
    assert (int(thr["order_k"]), int(thr["order_lo"]), int(thr["order_hi"])) == (5, 2, 9)
    # the two smallest only known to be <= 100 (censored below): the lower end falls among them
    c = np.zeros(w.shape, np.int8)
    w2 = w.copy()
    w2[0, [2, 8]] = 100.0
    c[0, [2, 8]] = -1
    t2 = S.threshold(_widths_ds(w2, c), 0.5, method="quantile")
    assert float(t2["lo"]) == 0.0 and bool(t2["lo_open"]) and not bool(t2["hi_open"])
    assert float(t2["d_star"]) == s[4] and float(t2["hi"]) == s[8]
    # the three largest only known to be > 300: the upper end is open; the 0.8-quantile too
    c3 = np.zeros(w.shape, np.int8)
    w3 = w.copy()
    big = np.argsort(w[0])[-3:]
    w3[0, big], c3[0, big] = 300.0, 1
    t3 = S.threshold(_widths_ds(w3, c3), 0.5, method="quantile")
    assert np.isinf(float(t3["hi"])) and bool(t3["hi_open"]) and float(t3["d_star"]) == s[4]
    t4 = S.threshold(_widths_ds(w3, c3), 0.8, method="quantile")
    assert str(t4["reason"].item()) == "censored above" and np.isnan(float(t4["d_star"]))
    # six of ten censored below at 100: the median is only known to be <= 100
    c5 = np.zeros(w.shape, np.int8)
    w5 = w.copy()
    small = np.argsort(w[0])[:6]
    w5[0, small], c5[0, small] = 100.0, -1
    t5 = S.threshold(_widths_ds(w5, c5), 0.5, method="quantile")
    assert str(t5["reason"].item()) == "censored below" and bool(t5["censored_below"])
    assert float(t5["d_star"]) == 100.0 and float(t5["lo"]) == 0.0
    # no trial with a crossing
    t6 = S.threshold(_widths_ds(np.full((1, 4), np.nan)), 0.5, method="quantile")
    assert str(t6["reason"].item()) == "no data" and np.isnan(float(t6["lo"]))


def test_quantile_threshold_from_events_matches_the_widths():
    ev = _paths([[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    thr = S.threshold(ev, 0.6, method="quantile", confidence=0.5)
    # widths: 283, 141, 566, <=100, >800; k = 3: sorted (<=100, 141, 283, 566, >800) -> 283
    assert float(thr["d_star"]) == pytest.approx(np.sqrt(200 * 400))
    assert int(thr["n_below"]) == 1 and int(thr["n_above"]) == 1
    assert thr.attrs["method"] == "quantile"


def test_quantile_interval_coverage_by_simulation():
    """Widths from a known continuous distribution (log-normal): the 95% interval covers the true
    quantile as often as the Binomial(N, q) computation says (>= 0.95)."""
    reps, n, q = 400, 100, 0.9
    rng = np.random.default_rng(1)
    mu, sd = np.log(1000.0), 0.5
    truth = np.exp(mu + sd * stats.norm.ppf(q))
    w = np.exp(rng.normal(mu, sd, (reps, n)))
    thr = S.threshold(_widths_ds(w), q, method="quantile", confidence=0.95)
    exact = float(thr["coverage"][0])
    assert 0.95 <= exact < 0.98
    se = np.sqrt(exact * (1 - exact) / reps)
    cov = _coverage(thr, truth)
    assert abs(cov - exact) <= 4 * se, (cov, exact)
    assert not thr["lo_open"].any() and not thr["hi_open"].any()
    # the point estimate is the sample quantile X_(90)
    np.testing.assert_array_equal(thr["d_star"].values, np.sort(w, -1)[:, 89])
    assert abs(np.median(np.log(thr["d_star"].values / truth))) < 0.05
    # power: a nominal-50% interval covers far less (its own exact coverage, ~0.55)
    narrow = S.threshold(_widths_ds(w), q, method="quantile", confidence=0.5)
    ex50 = float(narrow["coverage"][0])
    assert ex50 < 0.65 and abs(_coverage(narrow, truth) - ex50) <= 4 * np.sqrt(ex50 * (1 - ex50) / reps)
    assert _coverage(narrow, truth) < 0.95 - 0.2


def test_quantile_coverage_through_paths_with_censoring():
    """Per-trial margin paths (d1/W)^2 on a grid that cuts the distribution of W on both sides:
    the interpolated crossings are exact inside, censored outside; the interval of the 10% point,
    which lies below the grid, is [0, >= smallest grid value] and covers; the 80% point's interval
    keeps the exact coverage."""
    reps, n = 400, 120
    rng = np.random.default_rng(2)
    mu, sd = np.log(1000.0), 0.5
    x = 600.0 * 2.0 ** np.arange(4)                 # 600 .. 4800: P(W < 600) = 0.15, P(W > 4800) = 0.001
    w = np.exp(rng.normal(mu, sd, (reps, n)))
    margin = xr.DataArray((x[None, :, None] / w[:, None, :]) ** 2, dims=["rep", "d1", "trial"],
                          coords={"d1": x})
    cw = S.crossing_widths(var=margin, threshold=1.0)
    inner = cw["censored"].values == 0
    np.testing.assert_allclose(cw["d1_cross"].values[inner], w[inner], rtol=1e-10)
    assert 0.1 < np.mean(cw["censored"].values == -1) < 0.2
    for q in (0.1, 0.8):
        truth = np.exp(mu + sd * stats.norm.ppf(q))
        thr = S.threshold(cw, q, method="quantile")
        exact = float(thr["coverage"][0])
        cov = _coverage(thr, truth)
        assert cov >= exact - 4 * np.sqrt(exact * (1 - exact) / reps), (q, cov, exact)
        if q == 0.1:
            assert truth < x[0]
            # lower end among the trials censored below; the upper end is a grid value or above
            assert thr["lo_open"].all() and (thr["hi"] >= x[0]).all()
            assert thr["censored_below"].mean() > 0.9 and (thr["d_star"].where(thr["censored_below"]) == x[0]).sum() \
                == thr["censored_below"].sum()
        else:
            assert not thr["lo_open"].any() and abs(cov - exact) <= 4 * np.sqrt(exact * (1 - exact) / reps)


# --------------------------------------------------------------------------- fits take it


def test_fits_take_the_quantile_threshold():
    """The 95% point of the crossing widths obeys d1* = 2 n^{3/2} / d0 along n = d0^2/4: the
    weighted fit of d0 d1* in n finds 3/2 and not 5/3."""
    d0 = np.array([8.0, 12, 16, 24, 32])
    n = d0 ** 2 / 4
    dstar = 2.0 * n ** 1.5 / d0
    sd, q, trials = 0.3, 0.95, 300
    rng = np.random.default_rng(3)
    w = dstar[:, None] * np.exp(sd * (rng.normal(size=(5, trials)) - stats.norm.ppf(q)))
    x = np.geomspace(4, 2048, 19)
    margin = xr.DataArray((x[None, :, None] / w[:, None, :]) ** 3, dims=["case", "d1", "trial"],
                          coords={"d1": x, "n": ("case", n), "d0": ("case", d0)})
    thr = S.threshold(S.crossing_widths(var=margin, threshold=1.0), q, method="quantile")
    assert (thr["reason"] == "ok").all() and np.isfinite(thr["hi"]).all() and (thr["lo"] > 0).all()
    assert ((thr["lo"] <= thr["d_star"]) & (thr["d_star"] <= thr["hi"])).all()
    f = S.fit_scaling(thr, "n", y_factor="d0")
    assert int(f["npoints"]) == 5 and int(f["unweighted_dropped"]) == 0
    assert abs(float(f["exponent"]) - 1.5) < 3 * float(f["stderr"])
    assert str(f["verdict"].sel(prediction="Eq. 21").item()) == "consistent"
    assert str(f["verdict"].sel(prediction="App. E").item()) == "disagrees"
    g = S.fit_power_law_2d(thr, "n", "d0")  # linked axis: not identifiable, said so
    assert "collinear" in str(g["reason"].item())
    # the events alone (geometric midpoints) give the same law, within the grid's resolution
    ev = S.scaling_events(xr.Dataset({"margin": margin}))["margin"]
    te = S.threshold(ev, q, method="quantile")
    assert np.all(np.abs(np.log(te["d_star"].values / thr["d_star"].values)) <= np.log(x[1] / x[0]))
    fe = S.fit_scaling(te, "n", y_factor="d0")
    assert abs(float(fe["exponent"]) - 1.5) < 0.15


# --------------------------------------------------------------------------- errors


def test_bad_input_errors():
    ev = _paths([[0, 1, 1, 1]])
    with pytest.raises(ValueError, match="no 'n' dim"):
        S.crossing_widths(ev, dim="n")
    with pytest.raises(ValueError, match="at least 2"):
        S.crossing_widths(ev.isel(d1=[0]))
    with pytest.raises(ValueError, match="positive"):
        S.crossing_widths(ev.assign_coords(d1=GRID - 100))
    with pytest.raises(ValueError, match="repeated"):
        S.crossing_widths(ev.assign_coords(d1=[100.0, 100.0, 200.0, 400.0]))
    with pytest.raises(ValueError, match="1, 0 or NaN"):
        S.crossing_widths(ev * 2)
    with pytest.raises(ValueError, match="threshold"):
        S.crossing_widths(var=ev)
    with pytest.raises(ValueError, match="give event"):
        S.crossing_widths()
    with pytest.raises(ValueError, match="sense"):
        S.crossing_widths(var=ev, threshold=1.0, sense="=>")
    with pytest.raises(ValueError, match="no variable"):
        S.crossing_widths(xr.Dataset({"x": ev}))
    evt = ev.expand_dims(rep=2)
    for level in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="level"):
            S.threshold(evt, level, method="quantile")
    with pytest.raises(ValueError, match="interval"):
        S.threshold(evt, 0.9, method="quantile", interval="bootstrap")
    with pytest.raises(ValueError, match="no 'trial' dim"):
        S.threshold(evt.rename(trial="t"), 0.9, method="quantile")
    with pytest.raises(ValueError, match="no 'd1' dim"):
        S.threshold(evt.rename(d1="w"), 0.9, method="quantile")
    with pytest.raises(ValueError, match="at least 2"):
        S.threshold(evt.isel(d1=[1]), 0.9, method="quantile")
    with pytest.raises(ValueError, match="censored"):
        S.threshold(_widths_ds(np.ones((1, 3)), np.full((1, 3), 2, np.int8)), 0.5, method="quantile")
    with pytest.raises(ValueError, match="q must"):
        S.order_statistic_interval(10, 1.0)


def test_quantile_thresholds_feed_the_exponent_fit():
    """analysis.fit_threshold_exponent takes the quantile thresholds (d_star, censored_*) too."""
    import xarray as xr  # noqa: PLC0415

    from rmt_engine.report import analysis as A  # noqa: PLC0415

    ns = np.array([16.0, 36.0, 64.0, 144.0])
    thr = xr.Dataset({"d_star": ("n", 7.0 * ns**1.5), "censored_below": ("n", [False] * 4),
                      "censored_above": ("n", [False, False, False, True])}, coords={"n": ns})
    fit = A.fit_threshold_exponent(thr)
    assert float(fit["exponent"]) == pytest.approx(1.5, abs=1e-12)
