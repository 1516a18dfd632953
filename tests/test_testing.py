"""rmt_engine.testing on synthetic cubes: outcomes, interval coverage, exact bounds, cube comparison."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from rmt_engine.testing import (BOUNDS, BoundInconclusive, BoundUndefined, BoundViolated, CubesDiffer,
                                assert_bound_holds, assert_cubes_close, assert_exact_bounds, check_bound,
                                clopper_pearson)


def cube(holds, *, d1=None, t=None):
    """A cube with dims (activation, d1, trial): delta1 = 0.1 where ``holds`` else 0.5 (bound delta1, delta 0.2)."""
    holds = np.asarray(holds, dtype=bool)
    if holds.ndim == 1:
        holds = holds[None, :]
    d1 = list(range(60, 60 + holds.shape[0])) if d1 is None else d1
    vals = np.where(holds, 0.1, 0.5)[None]
    return xr.Dataset({"delta1": (("activation", "d1", "trial"), vals)},
                      coords={"activation": ["gelu"], "d1": d1, "trial": np.arange(holds.shape[1])})


def test_clear_pass_fail_inconclusive():
    rng = np.random.default_rng(0)
    ok = assert_bound_holds(cube(rng.random(400) < 0.999), "delta1", delta=0.2, min_rate=0.95)
    assert ok.status == "holds" and ok.points[0].lo > 0.95
    with pytest.raises(BoundViolated) as e:
        assert_bound_holds(cube(rng.random(400) < 0.80), "delta1", delta=0.2, min_rate=0.95)
    msg = str(e.value)
    assert "violated     activation=gelu" not in msg  # one-valued axes are not repeated...
    assert "violated" in msg and "rate 0.7" in msg or "rate 0.8" in msg
    assert "/400 trials" in msg and "interval [" in msg
    assert e.value.result.points[0].hi < 0.95
    with pytest.raises(BoundInconclusive) as e:  # 20/20 holds: the interval still reaches below 0.95
        assert_bound_holds(cube(np.ones(20)), "delta1", delta=0.2, min_rate=0.95)
    assert "inconclusive: add trials" in str(e.value)
    assert not isinstance(e.value, BoundViolated) and isinstance(e.value, AssertionError)


def test_failure_lists_every_failing_point_and_violated_wins():
    h = np.ones((3, 200), dtype=bool)
    h[1, :100] = False  # point d1=61: rate 0.5 -> violated
    h[2, :195] = True
    h[2, 195:] = False  # 195/200 = 0.975 -> inconclusive at 0.95
    with pytest.raises(BoundViolated) as e:
        assert_bound_holds(cube(h), "delta1", delta=0.2, min_rate=0.95)
    msg = str(e.value)
    assert "d1=61: rate 0.5000 (100/200 trials)" in msg and "inconclusive" in msg and "d1=60" not in msg
    r = check_bound(cube(h), "delta1", delta=0.2, min_rate=0.95)
    assert [p.status for p in r.points] == ["holds", "violated", "inconclusive"]
    assert_bound_holds(cube(h), "delta1", delta=0.2, min_rate=0.95, where={"d1": 60})


def test_nan_is_undefined_not_passing():
    ds = cube(np.ones((2, 500)))
    ds["delta1"][0, 0, 3] = np.nan
    with pytest.raises(BoundUndefined) as e:
        assert_bound_holds(ds, "delta1", delta=0.2, min_rate=0.5)
    assert "undefined" in str(e.value) and "d1=60" in str(e.value)


def test_unknown_bound_and_missing_delta():
    with pytest.raises(ValueError) as e:
        check_bound(cube(np.ones(5)), "eq99", delta=0.2)
    for name in ("eq67_lower_sharp", "eq67_upper", "eq69", "margin", "delta1", "delta2"):
        assert name in str(e.value) and name in BOUNDS
    with pytest.raises(ValueError, match="delta"):
        check_bound(cube(np.ones(5)), "delta1")


def test_interval_coverage_in_seeded_simulation():
    """400 grid points with true holding rate 0.9, 60 trials each: the 90% intervals cover 0.9 at >= ~90%."""
    rng = np.random.default_rng(12345)
    p, reps, n, conf = 0.9, 400, 60, 0.9
    r = check_bound(cube(rng.random((reps, n)) < p), "delta1", delta=0.2, min_rate=0.5, confidence=conf)
    cover = np.mean([pt.lo <= p <= pt.hi for pt in r.points])
    se = np.sqrt(conf * (1 - conf) / reps)
    assert conf - 3 * se <= cover <= 0.995, cover  # Clopper-Pearson is conservative, not wildly so
    assert clopper_pearson(0, 10, 0.95)[0] == 0.0 and clopper_pearson(10, 10, 0.95)[1] == 1.0
    lo, hi = clopper_pearson(5, 10, 0.95)
    assert lo == pytest.approx(0.187086, abs=1e-5) and hi == pytest.approx(0.812914, abs=1e-5)


def test_t_dependent_bound_evaluates_every_t():
    trial, t = np.arange(50), [2, 3]
    smin = xr.DataArray(np.full((1, 50), 2.0), dims=("d1", "trial"), coords={"d1": [60], "trial": trial})
    lower = xr.DataArray([[1.0, 9.0]], dims=("d1", "t"), coords={"d1": [60], "t": t})  # sqrt(.8*9) > 2 at t=3
    ds = xr.Dataset({"sigma_min_F": smin, "eq58_lower_sharp": lower})
    r = check_bound(ds, "eq67_lower_sharp", delta=0.2, min_rate=0.5)
    assert [(p.coords["t"], p.status) for p in r.points] == [(2, "holds"), (3, "violated")]
    assert_bound_holds(ds, "eq67_lower_sharp", delta=0.2, min_rate=0.5, t=2)


def _exact_cube(**over):
    v = dict(eq58_lower_sharp=1.0, lambda_min_EM0=2.0, lambda_max_EM0=10.0, eq58_upper_sharp=11.0,
             xkr_rank_deficient=0.0, sigma_min_xkr=0.5, sigma_max_xkr=3.0)
    v.update(over)
    return xr.Dataset({k: (("d1",), [x]) for k, x in v.items()}, coords={"d1": [60]})


def test_exact_bounds():
    assert_exact_bounds(_exact_cube())
    assert_exact_bounds(_exact_cube(eq58_lower_sharp=2.0 + 5e-9))  # within rtol * lambda_max
    assert_exact_bounds(_exact_cube(xkr_rank_deficient=1.0, sigma_min_xkr=1e-12))
    for bad in (dict(eq58_lower_sharp=2.1), dict(eq58_upper_sharp=9.0), dict(lambda_min_EM0=-1e-6),
                dict(xkr_rank_deficient=1.0), dict(lambda_min_EM0=np.nan)):
        with pytest.raises(BoundViolated):
            assert_exact_bounds(_exact_cube(**bad))


def _golden_like():
    rng = np.random.default_rng(1)
    a = rng.random((2, 3, 4)) + 0.5
    a[0, 0, 0] = np.nan
    return xr.Dataset({"sigma_max_F": (("activation", "d1", "trial"), a),
                       "lambda_min_M0": (("activation", "d1", "trial"), a * 1e-3)},
                      coords={"activation": ["gelu", "tanh"], "d1": [60, 120, 240], "trial": np.arange(4)})


def test_planted_change_is_caught():
    g = _golden_like()
    assert_cubes_close(g.copy(deep=True), g, bitwise=True)
    new = g.copy(deep=True)
    new["sigma_max_F"][1, 2, 3] *= 1 + 1e-6
    with pytest.raises(CubesDiffer) as e:
        assert_cubes_close(new, g, rtol={"*": 1e-9, "lambda_min_M0": 1e-7})
    msg = str(e.value)
    assert "sigma_max_F [activation=tanh, d1=240, trial=3]" in msg and "rel err 1e-06" in msg
    assert_cubes_close(new, g, rtol=1e-5)
    with pytest.raises(CubesDiffer):
        assert_cubes_close(new, g, rtol=1e-5, bitwise=True)
    new = g.copy(deep=True)
    new["lambda_min_M0"][0, 1, 1] *= 1 + 1e-6  # also caught under the looser lambda_min tolerance
    with pytest.raises(CubesDiffer, match="lambda_min_M0"):
        assert_cubes_close(new, g, rtol={"*": 1e-9, "lambda_min_M0": 1e-7})


def test_cube_layout_and_nan_differences():
    g = _golden_like()
    new = g.copy(deep=True)
    new["sigma_max_F"][0, 0, 0] = 1.0
    with pytest.raises(CubesDiffer, match="sigma_max_F"):
        assert_cubes_close(new, g)
    with pytest.raises(CubesDiffer, match="dims differ"):
        assert_cubes_close(g.isel(trial=slice(0, 3)), g)
    with pytest.raises(CubesDiffer, match="coordinate 'd1' differs"):
        assert_cubes_close(g.assign_coords(d1=[60, 120, 480]), g)
    with pytest.raises(CubesDiffer, match="only in golden"):
        assert_cubes_close(g.drop_vars("lambda_min_M0"), g)
    assert_cubes_close(g.drop_vars("lambda_min_M0"), g, variables=["sigma_max_F"])


def test_one_vocabulary_and_the_names_of_01():
    """Events are named after the cube variables of their bounds; 0.1's names map with a warning."""
    import warnings

    from rmt_engine.report import analysis as A
    from rmt_engine.study.store import open_results

    assert set(BOUNDS) == set(A.VERDICTS)
    ds = open_results(Path(__file__).resolve().parent / "regression" / "golden_cube")
    with pytest.warns(DeprecationWarning, match="'eq9_margin' is now 'margin'"):
        old = check_bound(ds, "eq9_margin", min_rate=0.5)
    assert old.bound == "margin" and [p.holds for p in old.points] == [p.holds for p in
                                                                         check_bound(ds, "margin", min_rate=0.5).points]
    with pytest.warns(DeprecationWarning, match="eq67_lower_paper"):
        check_bound(ds, "eq67_lower_paper", min_rate=0.5, t=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # w1 = 1 everywhere: paper and sharp forms agree, no warning
        a = check_bound(ds, "eq67_lower", min_rate=0.5, t=2)
    b = check_bound(ds, "eq67_lower_sharp", min_rate=0.5, t=2)
    assert [p.holds for p in a.points] == [p.holds for p in b.points]
    w1 = ds.assign_coords(w1=[2.0])
    with pytest.warns(UserWarning, match="paper's form"):
        A.holding_rate(w1, "eq67_lower", t=2)
