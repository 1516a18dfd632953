"""The result cube without Dask: template, region writes by ``execute_task``, open_results, lock file.

Tasks are executed in this process (``execute_task(make_job(...))``), exactly as a worker runs them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from rmt_engine.study import store as st
from rmt_engine.montecarlo.fields import FIELDS, record_fields
from rmt_engine.montecarlo.spec import TrialSpec
from rmt_engine.study import Study, create_store, execute_task, make_job, plan_tasks
from rmt_engine.montecarlo.trial import run_trial

GRID = {"activation": ["gelu", "sigmoid"], "n": [12, 16], "d0": [5], "d1": [40]}


def _study(**kw):
    opts = dict(grid=GRID, trials=5, seed=11, t=(2, 3), save_spectrum=True, name="store-test",
                execution={"trials_per_task": 2})
    opts.update(kw)
    return Study(**opts)


def _fill(study, path, skip=()):
    tpt = st.store_attrs(path)["trials_per_task"]
    variables = st.layout(study.grid, study.t, study.trials, tpt, study.save_spectrum)
    tasks, total = plan_tasks(study, tpt)
    for i, task in enumerate(tasks):
        if i not in skip:
            execute_task(make_job(study, path, task, variables, tpt))
    return tasks, total


@pytest.fixture(scope="module")
def complete(tmp_path_factory):
    path = tmp_path_factory.mktemp("cube") / "c.zarr"
    study = _study()
    create_store(study, path)
    _fill(study, path)
    return study, path


def test_round_trip_dims_attrs_provenance(complete):
    study, path = complete
    ds = st.open_results(path)
    grid_dims = st.GRID_AXES
    # every grid axis is a dimension, also the length-1 ones
    for a in grid_dims:
        assert ds.sizes[a] == len(study.grid[a])
    assert list(ds["activation"].values) == ["gelu", "sigmoid"]
    assert ds.sizes["trial"] == 5 and list(ds["t"].values) == [2, 3]
    # per-trial, per-point and per-t layout
    assert ds["sigma_min_F"].dims == grid_dims + ("trial",)
    assert ds["lambda_min_EM0"].dims == grid_dims
    assert ds["eq58_lower"].dims == grid_dims + ("t",)
    assert ds["spectrum_n12"].dims == tuple(a for a in grid_dims if a != "n") + ("trial", "eig_n12")
    assert ds["spectrum_n16"].sizes["eig_n16"] == 16
    assert set(FIELDS) <= set(ds.data_vars)
    for k, info in FIELDS.items():
        assert ds[k].attrs["long_name"].startswith(info.long_name)
        assert ds[k].attrs["equation"] == info.equation
        assert ds[k].attrs["units"] == info.units
    a = ds.attrs
    assert a["rmt_engine_store_version"] == st.STORE_VERSION
    assert a["config_hash"] == study.config_hash()
    assert Study.from_toml_text(a["study_toml"]).config_hash() == study.config_hash()
    assert a["seed_entropy"] == str(np.random.SeedSequence(11).entropy)
    for pkg in ("numpy", "scipy", "dask", "xarray", "zarr", "rmt_engine"):
        assert pkg in a["versions"]
    assert a["backend"] == "numpy" and a["started"]
    assert bool(ds["done"].all())
    # lazy
    assert ds["sigma_min_F"].chunks is not None


def test_cube_values_are_run_trial_records(complete):
    study, path = complete
    ds = st.open_results(path)
    spec = TrialSpec(activation="sigmoid", n=16, d0=5, d1=40, t=(2, 3), seed=11)
    rec, eig = run_trial(spec, 3, spectrum=True)
    pt = ds.sel(activation="sigmoid", n=16).squeeze()
    for k in record_fields((2, 3)):
        base, _, tt = k.rpartition("_t")
        if k not in FIELDS and FIELDS.get(base, None) is not None and FIELDS[base].per_t:
            v = pt[base].sel(t=int(tt))
        else:
            v = pt[k]
        if "trial" in v.dims:
            v = v.sel(trial=3)
        assert np.array_equal(float(v), rec[k], equal_nan=True), k
    assert np.array_equal(ds["spectrum_n16"].sel(activation="sigmoid").squeeze().sel(trial=3).values, eig)


def test_open_results_refuses_partial_store(tmp_path):
    study = _study()
    path = tmp_path / "p.zarr"
    create_store(study, path)
    with pytest.raises(st.IncompleteStoreError, match="12 of 12 regions"):
        st.open_results(path)
    tasks, total = _fill(study, path, skip={1, 5})
    with pytest.raises(st.IncompleteStoreError, match="2 of 12"):
        st.open_results(path)
    ds = st.open_results(path, allow_partial=True)
    assert int((~ds["done"].values).sum()) == 2
    # the skipped regions read as NaN
    t1 = tasks[1]
    idx = t1.point + (slice(t1.start, t1.stop),)
    assert np.isnan(ds["sigma_min_F"].values[idx]).all()


def test_open_results_refuses_other_versions_and_foreign_stores(complete, tmp_path):
    _, path = complete
    import shutil

    copy = tmp_path / "old.zarr"
    shutil.copytree(path, copy)
    zarr.open_group(str(copy), mode="r+").attrs["rmt_engine_store_version"] = 999
    with pytest.raises(st.IncompatibleStoreError, match="version 999"):
        st.open_results(copy)
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(str(foreign), mode="w").attrs["hello"] = 1
    with pytest.raises(st.StoreError, match="not an rmt_engine result cube"):
        st.open_results(foreign)
    with pytest.raises(FileNotFoundError):
        st.open_results(tmp_path / "nothing.zarr")


def test_partial_last_block_and_alignment_check():
    vars_ = st.layout({a: [1] if a != "activation" else ["gelu"] for a in st.GRID_AXES}, (2,), 7, 3, False)
    sig = next(v for v in vars_ if v.name == "sigma_min_F")
    assert st.n_blocks(7, 3) == 3 and st.block_range(2, 7, 3) == (6, 7)
    idx = st.region(sig, (0,) * 8, 2, 7, 3)
    st.check_region_alignment(idx, sig.shape, sig.chunks)  # the short last chunk is fine
    bad = idx[:-1] + (slice(4, 7),)
    with pytest.raises(RuntimeError, match="does not align"):
        st.check_region_alignment(bad, sig.shape, sig.chunks)


def test_lock_file_refuses_a_live_driver_and_breaks_a_dead_ones_lock(tmp_path):
    path = tmp_path / "s.zarr"
    with st.StoreLock(path):
        with pytest.raises(st.StoreLockedError, match=f"PID {os.getpid()}"):
            st.StoreLock(path).acquire()
    assert not st.lock_path(path).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    st.lock_path(path).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    msgs = []
    with st.StoreLock(path, on_message=msgs.append):
        assert json.loads(st.lock_path(path).read_text())["pid"] == os.getpid()
    assert msgs and "stale lock" in msgs[0]


def _one_task_values(study, path):
    """The job and the values of the first task, as execute_task would write them."""
    tpt = st.store_attrs(path)["trials_per_task"]
    variables = st.layout(study.grid, study.t, study.trials, tpt, study.save_spectrum)
    task = plan_tasks(study, tpt)[0][0]
    names = [v.name for v in variables if v.name not in ("done", st.CHECK_NAME) and not v.name.startswith("spectrum")]
    values = {}
    for v in variables:
        if v.name in names:
            shape = tuple(s.stop - s.start for s in st.region(v, task.point, task.block, study.trials, tpt))
            values[v.name] = np.arange(math.prod(shape), dtype=np.float64).reshape(shape) + 1.0
    return variables, task, tpt, values


def test_concurrent_and_serial_writes_store_the_same_region(tmp_path):
    """write_task's asynchronous path (the normal one) and its fallback inside a running event loop agree."""
    import asyncio

    study = _study()
    paths = [tmp_path / "async.zarr", tmp_path / "serial.zarr"]
    for path in paths:
        create_store(study, path)
    variables, task, tpt, values = _one_task_values(study, paths[0])
    st.write_task(paths[0], variables, task.point, task.block, study.trials, tpt, values)

    async def inside_a_loop():  # as a notebook cell would call it
        st.write_task(paths[1], variables, task.point, task.block, study.trials, tpt, values)

    asyncio.run(inside_a_loop())
    a, b = (zarr.open_group(str(p), mode="r") for p in paths)
    for name in list(values) + ["done"]:
        assert np.array_equal(a[name][...], b[name][...], equal_nan=name != "done"), name
    done = a["done"][...]
    assert done.sum() == 1 and done[task.point + (task.block,)]
    sig = a["sigma_min_F"][...][task.point + (slice(task.start, task.stop),)]
    assert np.array_equal(sig, values["sigma_min_F"].reshape(sig.shape))


def test_a_misaligned_region_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    study = _study()
    path = tmp_path / "m.zarr"
    create_store(study, path)
    variables, task, tpt, values = _one_task_values(study, path)
    real_region = st.region

    def shifted(var, point, block, trials, trials_per_task):  # one variable's region off by one trial
        idx = real_region(var, point, block, trials, trials_per_task)
        if var.name == "h0":
            idx = idx[:len(point)] + (slice(idx[len(point)].start + 1, idx[len(point)].stop + 1),) + idx[len(point) + 1:]
        return idx

    monkeypatch.setattr(st, "region", shifted)
    with pytest.raises(RuntimeError, match="h0.*does not align|does not align.*h0"):
        st.write_task(path, variables, task.point, task.block, study.trials, tpt, values)
    g = zarr.open_group(str(path), mode="r")
    assert not g["done"][...].any()
    assert all(np.isnan(g[name][...]).all() for name in values), "nothing may be written"
