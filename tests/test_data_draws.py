"""Several draws of X per case: data_seed (TrialSpec, [study]) and the X/W split of threshold spread."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import rmt_engine as rmt
from rmt_engine.report.scaling import data_draw_variance, hierarchical_bootstrap_threshold


def test_data_seed_draws_x_alone():
    base = rmt.TrialSpec(activation="gelu", n=20, d0=5, d1=100)
    a = rmt.run_trial(base, 0, cache={})
    same = rmt.run_trial(rmt.TrialSpec(activation="gelu", n=20, d0=5, d1=100, data_seed=0), 0, cache={})
    other = rmt.run_trial(rmt.TrialSpec(activation="gelu", n=20, d0=5, d1=100, data_seed=3), 0, cache={})
    assert all(a[k] == same[k] or (np.isnan(a[k]) and np.isnan(same[k])) for k in a)  # the default is seed
    assert other["sigma_max_X"] != a["sigma_max_X"] and other["sigma_min_F"] != a["sigma_min_F"]
    X3 = rmt.make_data("sphere", 5, 20, 3)
    assert other["sigma_max_X"] == pytest.approx(np.linalg.svd(X3, compute_uv=False)[0], rel=1e-12)
    with pytest.raises(ValueError, match="data_seed"):
        rmt.TrialSpec(activation="gelu", n=20, d0=5, d1=100, data_seed=-1)


def test_study_data_seed_key_changes_the_hash_only_when_set():
    g = {"activation": ["gelu"], "n": [16], "d0": [4], "d1": [64]}
    a = rmt.Study(grid=g, trials=2, seed=1)
    b = rmt.Study(grid=g, trials=2, seed=1, data_seed=1)
    assert "data_seed" not in a.canonical() and b.canonical()["data_seed"] == 1
    assert b.trial_spec(next(b.points())).data_seed == 1


def _synthetic(between_sd, within_sd, draws=6, trials=40, cases=1, seed=0):
    rs = np.random.default_rng(seed)
    eff = rs.normal(0, between_sd, (cases, draws, 1))
    lw = 5.0 + eff + rs.normal(0, within_sd, (cases, draws, trials))
    return xr.DataArray(np.exp(lw), dims=("case", "data_draw", "trial"))


def test_variance_split_recovers_known_components():
    est_b, est_w = [], []
    for rep in range(40):
        v = data_draw_variance(_synthetic(0.6, 0.3, draws=8, trials=30, seed=rep))
        est_b.append(float(v["between"].squeeze()))
        est_w.append(float(v["within"].squeeze()))
    assert np.mean(est_w) == pytest.approx(0.09, rel=0.05)
    assert np.mean(est_b) == pytest.approx(0.36, rel=0.2)  # 8 draws a time: a noisy estimate, unbiased
    v = data_draw_variance(_synthetic(0.0, 0.3, seed=1))
    assert float(v["fraction_between"].squeeze()) < 0.2
    with pytest.raises(ValueError, match="data_draw"):
        data_draw_variance(xr.DataArray(np.ones((3, 4)), dims=("x", "trial")))


def test_hierarchical_interval_carries_the_draw_spread():
    w = _synthetic(0.6, 0.1, draws=6, trials=40, seed=3)
    h = hierarchical_bootstrap_threshold(w, 0.5, n_boot=400)
    flat = xr.DataArray(w.values.reshape(1, 1, -1), dims=("case", "data_draw", "trial"))  # one "draw": trials only
    only_w = hierarchical_bootstrap_threshold(flat, 0.5, n_boot=400)
    width_h = float(np.log(h["hi"] / h["lo"]).squeeze())
    width_w = float(np.log(only_w["hi"] / only_w["lo"]).squeeze())
    assert width_h > 3 * width_w  # the draws dominate: an interval over trials alone is far too narrow
    a = hierarchical_bootstrap_threshold(w, 0.5, n_boot=200, seed=5)
    b = hierarchical_bootstrap_threshold(w, 0.5, n_boot=200, seed=5)
    assert a.identical(b)


def test_hierarchical_bootstrap_covers_the_population_median_mostly():
    # population median of log widths is 5.0 (normal draw effects and noise); nominal 95%
    cover = 0
    reps = 60
    for rep in range(reps):
        w = _synthetic(0.5, 0.2, draws=10, trials=20, seed=100 + rep)
        h = hierarchical_bootstrap_threshold(w, 0.5, n_boot=300, seed=rep)
        cover += float(np.log(h["lo"]).squeeze()) <= 5.0 <= float(np.log(h["hi"]).squeeze())
    assert cover / reps >= 0.8  # two-stage percentile bootstraps under-cover with 10 draws; not grossly


DRAWS_TOML = """\
name = "draws"
[study]
trials = 4
seed = 2
t = ["auto"]
[grid]
activation = ["tanh"]
n = [10]
d0 = [5]
d1 = [40, 160]
{axis}
[execution]
trials_per_task = 2
"""


def _fill(study, path):
    from rmt_engine.study import create_store, execute_task, make_job, plan_tasks
    from rmt_engine.study import store as st

    create_store(study, path)
    tpt = st.store_attrs(path)["trials_per_task"]
    variables = st.layout(study.cube_axes(), study.t, study.trials, tpt, study.save_spectrum, study.train)
    for task in plan_tasks(study, tpt)[0]:
        execute_task(make_job(study, path, task, variables, tpt))
    return rmt.open_results(path, squeeze=False)


def test_data_seed_grid_axis_is_a_cube_dimension_equal_to_one_study_per_seed(tmp_path):
    """``data_seed = [...]`` in [grid] (or linked): one cube with a data_seed dimension, each slice
    bitwise the cube of the study with that ``[study] data_seed``; the variance split reads it."""
    study = rmt.Study.from_toml_text(DRAWS_TOML.format(axis="data_seed = [0, 7, 9]"))
    assert [d for d, _ in study._dims()][-1] == "data_seed"
    assert study.canonical()["grid"]["data_seed"] == [0, 7, 9]
    ds = _fill(study, tmp_path / "axis.zarr")
    assert ds.sizes["data_seed"] == 3 and list(ds["data_seed"].values) == [0, 7, 9]
    for k, seed in enumerate((0, 7, 9)):
        one = rmt.Study.from_toml_text(DRAWS_TOML.format(axis="").replace("[study]\n", f"[study]\ndata_seed = {seed}\n"))
        ref = _fill(one, tmp_path / f"one{seed}.zarr")
        for v in ("sigma_min_F", "lambda_min_M0", "sigma_max_X", "margin", "lambda_min_EM0"):
            a = ds[v].isel(data_seed=k).values
            assert np.array_equal(a.view(np.uint64), ref[v].values.view(np.uint64)), (v, seed)
    # X differs between draws, W does not: sigma_max(X) is per draw, lambda_min(E[M0]) changes too
    assert len(set(ds["sigma_max_X"].values.reshape(-1))) == 3
    from rmt_engine.report.scaling import crossing_widths

    widths = crossing_widths(var=ds["lambda_min_M0"], threshold=float(np.nanmedian(ds["lambda_min_M0"].values)), sense=">")
    widths = widths["d1_cross"] if hasattr(widths, "data_vars") else widths
    split = data_draw_variance(widths, draw_dim="data_seed")
    assert {"within", "between", "fraction_between"} <= set(split.data_vars)
    assert int(split["draws"].max()) <= 3


def test_data_seed_axis_linked_and_given_twice(tmp_path):
    linked = DRAWS_TOML.format(axis="[grid.linked]\nw1 = [1.0, 2.0]\ndata_seed = [4, 5]").replace(
        "activation", "activation", 1)
    study = rmt.Study.from_toml_text(linked)
    assert study.linked == ("w1", "data_seed")
    specs = [study.trial_spec(lab) for lab in study.points()]
    assert {(s.w1, s.data_seed) for s in specs} == {(1.0, 4), (2.0, 5)}
    with pytest.raises(rmt.StudySpecError, match="data_seed is given twice"):
        rmt.Study.from_toml_text(DRAWS_TOML.format(axis="data_seed = [1, 2]").replace(
            "[study]\n", "[study]\ndata_seed = 3\n"))
    with pytest.raises(rmt.StudySpecError, match="data_seed"):
        rmt.Study.from_toml_text(DRAWS_TOML.format(axis="data_seed = [-1, 2]"))


def test_hierarchical_bootstrap_keeps_censored_above_as_not_reached():
    rs = np.random.default_rng(1)
    w = np.exp(rs.normal(5, 0.3, (4, 50)))
    w[:, :5] = np.inf  # 10% of the trials never cross up to the largest width
    da = xr.DataArray(w, dims=("data_draw", "trial"))
    hi = hierarchical_bootstrap_threshold(da, 0.95, n_boot=200)
    assert np.isinf(float(hi["d_star"])) and np.isinf(float(hi["hi"]))
    med = hierarchical_bootstrap_threshold(da, 0.5, n_boot=200)
    finite = np.sort(w[np.isfinite(w)])
    assert float(med["d_star"]) > float(np.quantile(finite, 0.5))  # not biased low by dropping the slowest
    assert np.isfinite(float(med["lo"])) and float(med["lo"]) <= float(med["d_star"]) <= float(med["hi"])


def test_widths_for_quantiles_marks_censored_above_as_not_reached():
    from rmt_engine.report.scaling import crossing_widths, widths_for_quantiles

    var = xr.DataArray([[0.5, 0.8, 2.0, 3.0], [2.0, 3.0, 4.0, 5.0], [0.1, 0.2, 0.3, 0.4]], dims=("trial", "d1"),
                       coords={"d1": [10.0, 20.0, 40.0, 80.0]})
    cw = crossing_widths(var=var, threshold=1.0, sense=">")
    w = widths_for_quantiles(cw).values
    assert 20 <= w[0] <= 40 and w[1] == 10.0 and np.isinf(w[2])  # crossed, censored below, never reached
