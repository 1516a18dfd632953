"""``ds.rmt`` (report/accessor.py) returns what the functions it wraps return, with the cube's defaults."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import rmt_engine  # noqa: F401 - registers the accessor
from rmt_engine.report import analysis as A
from rmt_engine.study.store import open_results
from rmt_engine.testing import check_bound

GOLDEN = Path(__file__).resolve().parent / "regression" / "golden_cube"


@pytest.fixture(scope="module")
def ds():
    return open_results(GOLDEN).load()


def test_deltas_are_the_cubes(ds):
    assert ds.rmt.deltas == {"bound_delta1": 0.2, "bound_delta2": 0.2}


def test_bound_masks_undefined_and_names_t(ds):
    b = ds.rmt.bound("eq67_lower_sharp")  # t = auto by default
    raw = ds["eq67_lower_sharp_auto"]
    undefined = ds["lower_undefined_auto"] != 0
    assert bool(np.isnan(b.where(undefined)).all()) or not bool(undefined.any())
    np.testing.assert_array_equal(b.where(~undefined).values, raw.where(~undefined).values)
    np.testing.assert_array_equal(b["t_used"].values, ds["t_auto"].values)
    assert b.attrs["t"] == "auto"
    b2 = ds.rmt.bound("eq67_lower_sharp", t=2)
    assert set(np.unique(b2["t_used"].values)) == {2.0}
    with pytest.raises(ValueError, match="unknown field"):
        ds.rmt.bound("eq67_lower_nonsense")


def test_holding_rate_is_analysis_holding_rate_with_the_cube_delta(ds):
    a = ds.rmt.holding_rate("eq67_lower_sharp")
    b = A.holding_rate(ds, "eq67_lower_sharp", delta=0.2, t="auto")
    for v in ("rate", "lo", "hi", "successes", "trials", "inconclusive"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    assert a.attrs["method"] == "clopper-pearson" and a.attrs["confidence"] == 0.95


def test_verdicts_agree_with_check(ds):
    v = ds.rmt.verdicts(names=["eq67_lower_sharp"])["eq67_lower_sharp"]
    res = check_bound(ds, "eq67_lower_sharp", min_rate=0.5)  # delta and t from the cube: 0.2, auto
    assert res.delta == 0.2 and res.t == "auto"
    held = {tuple(p.coords[d] for d in ("activation", "d1")): p.holds for p in res.points}
    for act in ds["activation"].values:
        for d1 in ds["d1"].values:
            k = int((v.sel(activation=act, d1=d1) == A.HELD).sum())
            assert held[(str(act), int(d1))] == k


def test_threshold_is_width_threshold(ds):
    a = ds.rmt.threshold(level=0.5)
    b = A.width_threshold(ds, 0.5, t="auto")
    np.testing.assert_array_equal(a["d1_star"].values, b["d1_star"].values)


def test_check_says_how_many_trials_a_rate_needs():
    from rmt_engine.testing import trials_needed  # noqa: PLC0415

    n = trials_needed(0.95, 0.95)
    assert 0.025 ** (1 / n) > 0.95 >= 0.025 ** (1 / (n - 1))  # N/N clears 0.95, (N-1)/(N-1) does not
    assert n == 72
    assert trials_needed(0.0) == 1 and math.isinf(trials_needed(1.0))


def test_open_results_squeeze_and_delta_attributes():
    ds = open_results(GOLDEN, squeeze=True)
    assert ds.attrs["bound_delta1"] == 0.2 and ds.attrs["bound_delta2"] == 0.2
    assert "n" not in ds.dims and float(ds["n"]) == 30.0  # length-1 axes: scalar coordinates
    assert "d1" in ds.dims and "activation" in ds.dims
    full = open_results(GOLDEN)
    np.testing.assert_array_equal(ds["sigma_min_F"].values, full["sigma_min_F"].squeeze().values)


def test_long_names_do_not_call_the_bound_delta_delta1():
    from rmt_engine.montecarlo.fields import FIELDS  # noqa: PLC0415

    for name in ("eq67_lower", "eq67_lower_sharp", "eq67_lower_hadamard"):
        assert "bound_delta1" in FIELDS[name].long_name
    assert "not the bound" in FIELDS["delta1"].long_name
