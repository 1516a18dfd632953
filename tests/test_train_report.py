"""The report's gradient-descent section: its statistics against independent computations, its figures
on a tiny real [train] study (and the ones that cannot be drawn, reported as such), and the core of
studies/digits_generalization.py on a tiny case."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from rmt_engine.report.training import numbers as TR
from rmt_engine.report.training.section import training_section
from rmt_engine.study.store import GRID_AXES
from rmt_engine.study import Study

ROOT = Path(__file__).resolve().parents[1]

TOML = """
name = "tiny_train_report"
[study]
trials = 6
seed = 5
[grid]
activation = ["gelu", "tanh"]
n = [8]
d0 = [4]
d1 = [16, 64]
w2 = [0.1]
[train]
max_iters = 300
tol = 1e-4
[execution]
trials_per_task = 6
workers = 1
"""

# one width, (w1, w2) on a geometric grid: (1, 0.05) and (0.5, 0.1) share w1 w2 = 0.05
LAZY_TOML = """
name = "tiny_lazy"
[study]
trials = 3
seed = 6
[grid]
activation = ["gelu"]
n = [8]
d0 = [4]
d1 = [32]
w1 = [1.0, 0.5]
w2 = [0.05, 0.1]
[train]
max_iters = 200
tol = 1e-3
[execution]
trials_per_task = 3
workers = 1
"""


def _run(tmp, name, text):
    (tmp / f"{name}.toml").write_text(text)
    s = Study.from_toml(tmp / f"{name}.toml")
    assert s.run(tmp / f"{name}.zarr", workers=1, progress=False).ok
    return tmp / f"{name}.zarr"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_report")
    return _run(d, "width", TOML), _run(d, "lazy", LAZY_TOML)


# ------------------------------------------------------------------------------------------------
# the report on real cubes


def test_report_has_the_training_section_and_its_figures(stores, tmp_path):
    pytest.importorskip("matplotlib")
    from rmt_engine.report.document import write_report

    out = tmp_path / "rep"
    md = write_report(stores[0], out).read_text()
    sec = md.split("## Gradient descent from the same initialization")[1].split("## Figures")[0]
    for head in ("### Summary", "### Convergence against width", "### Width thresholds", "### Rate:",
                 "### Staying near Theta_0", "### Lazy training", "### Loss curves"):
        assert head in sec, head
    for png in ("gd_convergence", "gd_rate_vs_theory", "gd_ball", "gd_loss_curves"):
        assert (out / f"{png}.png").stat().st_size > 5000, png
        assert f"({png}.png)" in md, png
    # a figure that cannot be drawn is named with its reason, and no empty file is written
    assert "lazy_training: not drawn, no two (w1, w2) pairs" in md
    assert "gd_threshold_vs_n: not drawn, the study has one value of n" in md
    assert not (out / "lazy_training.png").exists() and not (out / "gd_threshold_vs_n.png").exists()
    assert "FAILED" not in md
    # the counts in the table are the cube's own: 6 trials per grid point
    assert "| gelu | 16 |" in sec and "/6 |" in sec


def test_lazy_cube_draws_the_lazy_figure_and_not_the_width_figures(stores, tmp_path):
    pytest.importorskip("matplotlib")
    import rmt_engine
    from rmt_engine.report.plots import NothingToDraw

    ds = TR._load(rmt_engine.open_results(stores[1]))
    drawn, skipped = {}, {}

    def fig(name, fn, *a, **k):
        try:
            fn(*a, path=tmp_path / f"{name}.png", **k)
            drawn[name] = True
        except NothingToDraw as e:
            skipped[name] = str(e)

    md = "\n".join(training_section(ds, fig))
    assert drawn.get("lazy_training") and (tmp_path / "lazy_training.png").stat().st_size > 5000
    assert "gd_convergence" in skipped and "one width" in skipped["gd_convergence"]
    assert "w2/w1" in md and "| 0.05 |" in md  # the shared product's row of the lazy table
    # along the product, the pairs are ordered by w2/w1 and hold the cube's values
    (g,) = TR.lazy_groups(ds)
    assert g["pairs"] == [(1.0, 0.05), (0.5, 0.1)]
    sub = TR.along_product(ds, g)
    for i, (a, b) in enumerate(g["pairs"]):
        np.testing.assert_array_equal(sub["gd_rel_change_W"].isel(w2_over_w1=i).values,
                                      ds["gd_rel_change_W"].sel(w1=a, w2=b).values)


# ------------------------------------------------------------------------------------------------
# the statistics against independent computations (synthetic cubes)


def _cube(shape_d1=(10, 20, 40, 80), trials=20, **fields):
    """A cube with the grid axes (all of length 1 but d1) and per-trial ``fields`` given as (d1, trial) arrays."""
    coords = {"activation": ["gelu"], "data": ["sphere"], "n": [8], "d0": [4], "d1": list(shape_d1), "d2": [1],
              "w1": [1.0], "w2": [0.1], "trial": np.arange(trials)}
    dims = GRID_AXES + ("trial",)
    out = xr.Dataset(coords=coords)
    for k, v in fields.items():
        v = np.asarray(v, dtype=float).reshape((1, 1, 1, 1, len(shape_d1), 1, 1, 1, trials))
        out[k] = (dims, v)
    return out


def _fractions(fr_gd, fr_margin, trials=20):
    """Per-d1 0/1 arrays with the given fractions of ones (first k trials)."""
    st = np.ones((len(fr_gd), trials))
    mg = np.full((len(fr_gd), trials), 0.5)
    for i, (a, b) in enumerate(zip(fr_gd, fr_margin)):
        st[i, : int(round(a * trials))] = 0  # gd_status 0 = converged
        mg[i, : int(round(b * trials))] = 2.0  # margin > 1
    return st, mg


def test_convergence_rates_match_a_direct_count_and_the_clopper_pearson_formula():
    from scipy import stats

    rng = np.random.default_rng(0)
    st = rng.choice([0.0, 1.0, 2.0], size=(4, 20), p=[0.6, 0.3, 0.1])
    st[1, :5] = np.nan  # unwritten trials: not counted
    mg = rng.lognormal(0.0, 1.0, size=(4, 20))
    mg[2, 3] = np.nan
    ds = _cube(gd_status=st, margin=mg)
    r = TR.convergence_rates(ds, confidence=0.9).compute()
    for i in range(4):
        for pre, ok in (("conv", np.isfinite(st[i])), ("margin", np.isfinite(mg[i]))):
            k = int((st[i][ok] == 0).sum()) if pre == "conv" else int((mg[i][ok] > 1).sum())
            n = int(ok.sum())
            sel = r.isel(d1=i).squeeze()
            assert int(sel[f"{pre}_successes"]) == k and int(sel[f"{pre}_trials"]) == n
            # the exact (Clopper-Pearson) interval, written out from beta quantiles: the report's one interval
            lo = stats.beta.ppf(0.05, k, n - k + 1) if k > 0 else 0.0
            hi = stats.beta.ppf(0.95, k + 1, n - k) if k < n else 1.0
            assert float(sel[f"{pre}_lo"]) == pytest.approx(lo, abs=1e-12)
            assert float(sel[f"{pre}_hi"]) == pytest.approx(hi, abs=1e-12)


def test_thresholds_and_their_ratio_with_censoring():
    # GD: 50% at d1 = 10, 100% from 20 -> log-interpolated 10 * 2^0.9; margin: 50% at 40, 100% at 80 -> 40 * 2^0.9
    st, mg = _fractions([0.5, 1, 1, 1], [0, 0, 0.5, 1])
    thr = TR.gd_thresholds(_cube(gd_status=st, margin=mg), level=0.95).squeeze()
    assert float(thr["d1_star_gd"]) == pytest.approx(10 * 2 ** 0.9)
    assert float(thr["d1_star_margin"]) == pytest.approx(40 * 2 ** 0.9)
    assert float(thr["ratio"]) == pytest.approx(4.0) and int(thr["ratio_bound"]) == TR.RATIO_EXACT
    # GD already at the smallest width: the ratio is a lower bound
    st, mg = _fractions([1, 1, 1, 1], [0, 0, 0.5, 1])
    thr = TR.gd_thresholds(_cube(gd_status=st, margin=mg), level=0.95).squeeze()
    assert bool(thr["censored_gd"]) and int(thr["ratio_bound"]) == TR.RATIO_AT_LEAST
    assert float(thr["ratio"]) == pytest.approx(40 * 2 ** 0.9 / 10)
    # the margin never reaches the level: ratio >= d1_max / d1*(GD)
    st, mg = _fractions([0.5, 1, 1, 1], [0, 0, 0, 0.5])
    thr = TR.gd_thresholds(_cube(gd_status=st, margin=mg), level=0.95).squeeze()
    assert np.isnan(float(thr["d1_star_margin"])) and int(thr["ratio_bound"]) == TR.RATIO_AT_LEAST
    assert float(thr["ratio"]) == pytest.approx(80 / (10 * 2 ** 0.9))
    # neither: undefined
    st, mg = _fractions([0, 0, 0, 0], [0, 0, 0, 0])
    thr = TR.gd_thresholds(_cube(gd_status=st, margin=mg), level=0.95).squeeze()
    assert int(thr["ratio_bound"]) == TR.RATIO_UNDEFINED and np.isnan(float(thr["ratio"]))


def test_log_rate_ratio_is_nan_outside_the_unit_interval():
    r = np.array([[0.9, np.nan, 1.0, 0.5]])
    th = np.array([[0.99, 0.99, 0.99, 1.0]])
    ds = _cube(shape_d1=(10,), trials=4, gd_rate=r, gd_rate_theory=th)
    v = TR.log_rate_ratio(ds).values.ravel()
    assert v[0] == pytest.approx(math.log(0.9) / math.log(0.99))
    assert np.isnan(v[1:]).all()


def _with_curves(curves, rates, final):
    ds = _cube(shape_d1=(10,), trials=len(curves), gd_rate_theory=np.asarray(rates)[None],
               gd_final_loss=np.asarray(final)[None])
    its = np.array([0, 1, 2, 5, 10])
    ds = ds.assign_coords(iteration=its)
    ds["gd_loss"] = (GRID_AXES + ("trial", "iteration"),
                     np.asarray(curves, float).reshape((1,) * 4 + (1,) + (1,) * 3 + (len(curves), its.size)))
    return ds, its


def test_eq14_envelope_and_held_curves():
    th = 0.8
    below = th ** np.array([0, 1, 2, 5, 10]) * 0.5
    below[0] = 1.0
    above = below.copy()
    above[3] = th ** 5 * 1.5  # above the envelope at k = 5
    stopped = below.copy()
    stopped[3:] = np.nan  # stopped after k = 2: only k <= 2 counts
    ds, _ = _with_curves([below, above, stopped], [th, th, th], [below[-1], above[-1], 1e-5])
    env = TR.eq14_envelope(ds).values.ravel()
    assert env.tolist() == [1.0, 0.0, 1.0]
    held = TR.held_curves(ds).values.reshape(3, -1)
    np.testing.assert_array_equal(held[0], below)
    np.testing.assert_array_equal(held[2, :3], stopped[:3])
    assert (held[2, 3:] == 1e-5).all()  # held at h_K / h_0 after the trial stopped


def test_lazy_groups_group_by_product_and_sort_by_ratio():
    ds = xr.Dataset(coords={"w1": [1.0, 0.5, 0.25], "w2": [0.25, 0.5, 1.0]})
    groups = TR.lazy_groups(ds)
    prods = [round(g["product"], 12) for g in groups]
    assert prods == [0.25, 0.125, 0.5]  # most pairs first, then by product
    assert groups[0]["pairs"] == [(1.0, 0.25), (0.5, 0.5), (0.25, 1.0)]
    assert groups[0]["ratios"] == [0.25, 1.0, 4.0]
    assert TR.lazy_groups(xr.Dataset(coords={"w1": [1.0], "w2": [0.1, 0.2]})) == []


# ------------------------------------------------------------------------------------------------
# studies/digits_generalization.py


def _digits():
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("digits_gen", ROOT / "studies" / "digits_generalization.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def test_digits_classes_match_the_documented_permutation():
    m = _digits()
    from sklearn.datasets import load_digits

    from rmt_engine import make_data

    X = make_data("digits", 64, 40, 3)
    # data.py documents the permutation: Generator(Philox(SeedSequence(seed, spawn_key=(2,))))
    gen = np.random.Generator(np.random.Philox(np.random.SeedSequence(3, spawn_key=(2,))))
    expected = load_digits().target[gen.permutation(1797)[:40]]
    np.testing.assert_array_equal(m.true_classes(X), expected)


def test_digits_core_on_a_tiny_case():
    m = _digits()
    w1, w2 = m.scales(4.0, 0.01)
    assert w1 * w2 == pytest.approx(0.01) and w2 / w1 == pytest.approx(4.0)
    assert np.linalg.norm(m.one_hot([0, 3, 3, 9])) == pytest.approx(1.0)
    res = m.run(n_train=24, n_test=30, d1=32, ratios=[0.1, 10.0], seeds=2, teacher="random", teacher_width=16,
                max_iters=40, tol=1e-3, log=lambda *a: None)
    rows = res["results"]
    assert len(rows) == 4 and {r["ratio"] for r in rows} == {0.1, 10.0}
    for r in rows:
        assert 0.0 <= r["train_error"] <= 1.0 and 0.0 <= r["test_error"] <= 1.0
        assert r["w1"] * r["w2"] == pytest.approx(res["config"]["product"])
        assert r["status"] in ("converged", "max_iters", "diverged") and 1 <= r["iterations"] <= 40
    summary = m.summarize(rows)
    assert [s["runs"] for s in summary] == [2, 2]
    te = np.mean([r["test_error"] for r in rows if r["ratio"] == 0.1])
    assert summary[0]["test_error"] == pytest.approx(te)
    # GD moved the weights: the student is not its initialization
    assert all(r["rel_change_W"] > 0 and r["rel_change_V"] > 0 for r in rows)
