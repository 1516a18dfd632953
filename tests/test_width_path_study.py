"""``[study] width_path = true``: one task computes the whole d1 axis of a grid point by one pass
(``run_trial_path``), writes one region per width, resumes region by region, and gives the same cube
bitwise on 1 and 2 workers and after any resume; the cube equals the per-width study's up to
rounding (the same rows of W0 summed in another order)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr

from rmt_engine.study import Study, StudySpecError, create_store, execute_task, make_job, plan_tasks
from rmt_engine.study import store as st

TOML = """\
name = "paths"
[study]
trials = 4
seed = 3
t = [2, "auto"]
save_spectrum = true
width_path = {wp}
[grid]
activation = ["gelu", "tanh"]
n = [12]
d0 = [6]
d1 = [64, 16, 40]
w2 = "eq19"
[execution]
trials_per_task = 2
"""


def _study(wp: bool = True) -> Study:
    return Study.from_toml_text(TOML.format(wp=str(wp).lower()))


def _variables(study, path):
    tpt = st.store_attrs(path)["trials_per_task"]
    return st.layout(study.cube_axes(), study.t, study.trials, tpt, study.save_spectrum, study.train,
                     study.ntk), tpt


def _execute(study, path, done=None):
    """The store's missing regions, computed in this process exactly as a worker computes them."""
    variables, tpt = _variables(study, path)
    tasks, _ = plan_tasks(study, tpt, done)
    for task in tasks:
        execute_task(make_job(study, path, task, variables, tpt))
    return tasks


def _fill(study, path):
    create_store(study, path)
    _execute(study, path)
    return path


@pytest.fixture(scope="module")
def cubes(tmp_path_factory):
    d = tmp_path_factory.mktemp("paths")
    return _fill(_study(True), d / "path.zarr"), _fill(_study(False), d / "points.zarr")


def _bitwise(a, b):
    names = sorted(set(a.data_vars) - {"done"})
    assert names == sorted(set(b.data_vars) - {"done"}) and len(names) > 40
    for k in names:
        x, y = a[k].values, b[k].values
        assert x.shape == y.shape and np.array_equal(x.view(np.uint64), y.view(np.uint64)), k


def test_plan_groups_the_d1_axis_of_each_point_and_sorts_it():
    study = _study(True)
    tasks, total = plan_tasks(study, 2)
    assert total == 2 * 3 * 2  # activations x widths x trial blocks: still counted in regions
    assert len(tasks) == 2 * 2  # one task per (activation, block): the 3 widths in one pass
    for t in tasks:
        assert [lab["d1"] for _, lab in t.path] == [16, 40, 64]
        assert t.writes == (0, 1, 2) and t.labels["d1"] == 64 and len(t.regions) == 3
        assert "d1=16..64 (path of 3)" in t.describe()
        # the Eq. 19 rule is per width: each region keeps its own derived w2
        w2s = [lab["w2"] for _, lab in t.path]
        assert w2s[0] > w2s[1] > w2s[2]


def test_path_cube_equals_the_per_width_cube_to_rounding(cubes):
    a, b = (st.open_results(p) for p in cubes)
    worst = 0.0
    for k in sorted(set(b.data_vars) - {"done"}):
        x, y = a[k].values, b[k].values
        assert np.array_equal(np.isnan(x), np.isnan(y)), k
        ok = np.isfinite(x) & np.isfinite(y) & (y != 0)
        assert np.array_equal(x[~ok & ~np.isnan(x)], y[~ok & ~np.isnan(y)]), k  # zeros and infinities exactly
        if ok.any():
            worst = max(worst, float(np.max(np.abs(x[ok] - y[ok]) / np.abs(y[ok]))))
    assert 0 < worst <= 1e-10  # not bitwise (another summation order), never more than rounding


def test_path_cube_bitwise_on_one_and_two_workers(cubes, tmp_path):
    from distributed import Client

    ref = st.open_results(cubes[0])
    study = _study(True)
    s1 = study.run(tmp_path / "w1.zarr", workers=1, progress=False)
    assert s1.ok and s1.regions_computed == 12 and s1.regions_total == 12
    _bitwise(ref, st.open_results(tmp_path / "w1.zarr"))
    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        s2 = study.run(tmp_path / "w2.zarr", client=c, progress=False)
    assert s2.ok and s2.regions_computed == 12
    _bitwise(ref, st.open_results(tmp_path / "w2.zarr"))


def test_resume_computes_the_path_up_to_its_last_missing_width_and_rewrites_no_done_region(cubes, tmp_path):
    ref = st.open_results(cubes[0])
    study = _study(True)
    path = tmp_path / "r.zarr"
    shutil.copytree(cubes[0], path)
    g = zarr.open_group(path, mode="r+")
    done = np.asarray(g["done"][...])
    dims = list(study.cube_axes().dims)
    k = dims.index("d1")
    d1_index = {d: i for i, d in enumerate(study.grid["d1"])}  # grid order: 64, 16, 40
    lost = np.zeros_like(done)
    idx = [0] * done.ndim
    idx[dims.index("activation")], idx[k], idx[-1] = 1, d1_index[40], 0  # tanh, d1 = 40, block 0
    lost[tuple(idx)] = True
    done[lost] = False
    g["done"][...] = done
    lam = g["lambda_min_M0"]
    vals = np.asarray(lam[...])
    vals[tuple(idx)] = np.nan  # its data lost as well
    lam[...] = vals
    before = {f: f.stat().st_mtime_ns for f in path.rglob("*") if f.is_file() and "/c/" in str(f)}
    tasks = _execute(study, path, done)
    assert len(tasks) == 1
    (t,) = tasks
    assert [lab["d1"] for _, lab in t.path] == [16, 40] and t.writes == (1,)  # not beyond d1 = 40
    _bitwise(ref, st.open_results(path))
    rewritten = {f for f, m in before.items() if f.exists() and f.stat().st_mtime_ns != m}
    # only chunks of the lost region (d1 = 40, tanh, block 0) and of the study-wide records
    assert rewritten and all(f"/{d1_index[40]}/" in str(f.relative_to(path)) or "done" in str(f) for f in rewritten)


def test_width_path_needs_d1_on_its_own_axis_and_changes_the_config_hash():
    linked = TOML.format(wp="true").replace('d1 = [64, 16, 40]\n', '').replace(
        '[execution]', '[grid.linked]\nd1 = [16, 40]\nw1 = [1.0, 2.0]\n[execution]')
    with pytest.raises(StudySpecError, match="width_path.*d1 must be an axis of its own"):
        Study.from_toml_text(linked)
    a, b = _study(True), _study(False)
    assert a.config_hash() != b.config_hash()
    assert "width_path = true" in a.to_toml() and Study.from_toml_text(a.to_toml()).config_hash() == a.config_hash()
    with pytest.raises(StudySpecError, match="width_path"):
        Study.from_toml_text(TOML.format(wp='"yes"'))


def test_the_estimate_of_a_path_study_pays_the_pass_once_per_point():
    from dataclasses import replace

    from rmt_engine.study.resources import estimate_study, pass_flops, trial_flops

    study = _study(False)
    path = _study(True)
    per_width, along = estimate_study(study), estimate_study(path)
    assert along.max_trial_memory_bytes == per_width.max_trial_memory_bytes  # one trial at the largest width
    saved = sum(pass_flops(study.trial_spec(lab)) for lab in study.points() if lab["d1"] != 64) * study.trials
    assert along.total_flops == pytest.approx(per_width.total_flops - saved, rel=1e-12)
    spec = study.trial_spec(next(iter(study.points())))
    assert 0 < pass_flops(spec) < trial_flops(spec)
    assert pass_flops(replace(spec, ntk=True)) > pass_flops(spec)


def test_width_path_with_training_trains_each_width_it_writes(tmp_path):
    """[train] with width_path: every width gets GD from its own Theta_0 (the same as the per-width
    study's up to the rounding of the Eq. 13 step), and a resume trains only the widths it writes."""
    text = TOML.format(wp="true").replace("save_spectrum = true\n", "").replace(
        '[execution]', '[train]\nmax_iters = 300\ntol = 1e-3\n[execution]')
    study, plain = Study.from_toml_text(text), Study.from_toml_text(text.replace("width_path = true", "width_path = false"))
    a = st.open_results(_fill(study, tmp_path / "p.zarr"))
    b = st.open_results(_fill(plain, tmp_path / "q.zarr"))
    assert np.array_equal(a["gd_status"].values, b["gd_status"].values)
    np.testing.assert_allclose(a["gd_final_loss"].values, b["gd_final_loss"].values, rtol=1e-6)
    from rmt_engine.montecarlo import train as tr

    calls = []
    real = tr.add_training

    def counting(spec, *args, **kw):
        calls.append(spec.d1)
        return real(spec, *args, **kw)

    g = zarr.open_group(tmp_path / "p.zarr", mode="r+")
    done = np.asarray(g["done"][...])
    idx = [0] * done.ndim
    idx[study.cube_axes().dims.index("d1")] = list(study.grid["d1"]).index(40)
    done[tuple(idx)] = False
    g["done"][...] = done
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tr, "add_training", counting)
        _execute(study, tmp_path / "p.zarr", done)
    assert calls and set(calls) == {40}  # d1 = 16 streamed through, not trained again
