"""Studies on Dask: bitwise reproducibility, failing tasks and dying workers, kill -9 and resume.

One LocalCluster of 2 worker processes is shared by the module (the 1-worker run starts its own
embedded cluster through ``Study.run(workers=1)``). Everything runs the real ``run_trial`` on a
tiny grid (8 points, n <= 30), so a trial takes about a millisecond.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import pytest

from rmt_engine.study import store as st
from rmt_engine.cli import main
from rmt_engine.study.cluster import local_cluster
from rmt_engine.study import TEST_DELAY_ENV, TEST_FAIL_ENV, Study

TOML = """\
name = "tiny-run"

[study]
trials = 6
seed = 5
t = [2, 3]
save_spectrum = true

[grid]
activation = ["gelu", "tanh"]
n = [20, 30]
d0 = [6]
d1 = [60, 90]

[execution]
trials_per_task = {tpt}
"""


def _study(tpt: int) -> Study:
    return Study.from_toml_text(TOML.format(tpt=tpt))


def _toml(tmp_path: Path, tpt: int) -> Path:
    p = tmp_path / f"tiny_{tpt}.toml"
    p.write_text(TOML.format(tpt=tpt))
    return p


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    # one retry after a worker death (the default is 3): the dying-worker test then fails fast
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = local_cluster(2)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def reference(client, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    summary = _study(3).run(path, client=client, progress=False)
    assert summary.ok and summary.regions_computed == 16 and summary.trials_computed == 48
    return st.open_results(path).load()


def assert_cubes_bitwise_equal(a, b):
    names = sorted(set(a.data_vars) - {"done"})
    assert names == sorted(set(b.data_vars) - {"done"})
    assert len(names) > 40
    for k in names:
        x, y = a[k].values, b[k].values
        assert x.dtype == y.dtype == np.float64, k
        assert x.shape == y.shape, k
        # bitwise, NaN positions (and payloads) included
        assert np.array_equal(x.view(np.uint64), y.view(np.uint64)), k
    for c in set(a.coords) - {"trial_block"}:  # the blocks follow trials_per_task
        assert np.array_equal(a[c].values, b[c].values), c


def test_reference_is_complete_and_sane(reference):
    assert bool(reference["done"].all())
    smin = reference["sigma_min_F"].values
    assert np.isfinite(smin).all() and (smin > 0).all()


def test_bitwise_equal_for_1_and_2_workers_and_any_trials_per_task(reference, client, tmp_path):
    # 1 worker (embedded LocalCluster started and closed by the run), 2 trials per task
    s1 = _study(2).run(tmp_path / "w1.zarr", workers=1, progress=False)
    assert s1.ok and s1.workers == 1 and s1.regions_computed == 24
    assert_cubes_bitwise_equal(reference, st.open_results(tmp_path / "w1.zarr"))
    # 2 workers, one task per grid point (6 trials per task)
    s6 = _study(6).run(tmp_path / "w2.zarr", client=client, progress=False)
    assert s6.ok and s6.workers == 2 and s6.regions_computed == 8
    assert_cubes_bitwise_equal(reference, st.open_results(tmp_path / "w2.zarr"))


def test_rerun_of_complete_store_computes_nothing(reference, client, tmp_path):
    path = tmp_path / "again.zarr"
    study = _study(4)
    assert study.run(path, client=client, progress=False).regions_computed == 16
    again = study.run(path, client=client, progress=False)
    assert again.regions_computed == 0 and again.regions_skipped == 16 and again.trials_computed == 0
    assert len(st.store_attrs(path)["runs"]) == 2
    assert_cubes_bitwise_equal(reference, st.open_results(path))


def test_failing_task_exits_nonzero_naming_the_point_and_rerun_completes(reference, client, tmp_path, capsys,
                                                                         monkeypatch):
    toml, path = _toml(tmp_path, 3), tmp_path / "fail.zarr"
    argv = ["run", str(toml), "--store", str(path), "--no-progress", "--scheduler", client.scheduler.address]
    monkeypatch.setenv(TEST_FAIL_ENV, "raise:activation=tanh,n=30,d1=90")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "2 task(s) failed" in err
    assert err.count("FAILED (activation=tanh, data=sphere, n=30, d0=6, d1=90") == 2
    assert "injected failure" in err
    done = st.read_done(path)
    assert int((~done).sum()) == 2
    with pytest.raises(st.IncompleteStoreError):
        st.open_results(path)
    monkeypatch.delenv(TEST_FAIL_ENV)
    assert main(argv + ["--summary-json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["regions_computed"] == 2 and summary["regions_skipped"] == 14
    assert_cubes_bitwise_equal(reference, st.open_results(path))


def test_dying_worker_is_reported_and_rerun_completes(reference, client, tmp_path, monkeypatch):
    path = tmp_path / "die.zarr"
    study = _study(6)
    monkeypatch.setenv(TEST_FAIL_ENV, "exit:activation=gelu,n=20,d1=60")
    msgs = []
    summary = study.run(path, client=client, progress=False, echo=msgs.append)
    assert not summary.ok
    failed = [str(f) for f in summary.failures]
    assert any("activation=gelu, data=sphere, n=20, d0=6, d1=60" in f and "KilledWorker" in f for f in failed), failed
    assert not any(f.deterministic for f in summary.failures)  # a lost worker: a rerun may succeed
    assert any("lost; the scheduler retries its tasks" in m for m in msgs), msgs  # the client says so
    assert not st.read_done(path).all()
    monkeypatch.delenv(TEST_FAIL_ENV)
    client.wait_for_workers(2, timeout=60)
    again = study.run(path, client=client, progress=False)
    assert again.ok and again.regions_computed == len(failed)
    assert_cubes_bitwise_equal(reference, st.open_results(path))


def test_kill_minus_9_then_resume_is_bitwise_equal_and_computes_only_missing(reference, client, tmp_path, capsys):
    toml, path = _toml(tmp_path, 2), tmp_path / "kill.zarr"
    env = dict(os.environ, **{TEST_DELAY_ENV: "0.3"})
    log = tmp_path / "killed_run.log"
    with open(log, "w") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "rmt_engine.cli", "run", str(toml), "--store", str(path),
                                 "--workers", "2", "--no-progress"], env=env, start_new_session=True,
                                stdout=logf, stderr=subprocess.STDOUT)
    total = 8 * 3
    done = None
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the run ended before it could be killed: {log.read_text()}"
            if (path / "done" / "zarr.json").exists():
                try:
                    done = st.read_done(path)
                except Exception:  # template being written
                    done = None
                if done is not None and 3 <= done.sum() <= total - 6:
                    break
            time.sleep(0.02)
        else:
            pytest.fail("no regions done within 90 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its nannies and its workers
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = st.read_done(path)  # may have grown between the poll and the kill
    missing = int((~done_before).sum())
    assert 0 < missing < total
    assert st.lock_path(path).exists()  # the killed driver could not remove its lock
    rc = main(["run", str(toml), "--store", str(path), "--resume", "--no-progress", "--scheduler",
               client.scheduler.address, "--summary-json", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "breaking stale lock" in err and "resuming" in err
    summary = json.loads((tmp_path / "s.json").read_text())
    print(f"kill/resume: killed with {total - missing}/{total} regions done; resume computed "
          f"{summary['regions_computed']}, skipped {summary['regions_skipped']}")
    assert summary["regions_computed"] == missing
    assert summary["regions_skipped"] == total - missing
    assert not st.lock_path(path).exists()
    assert_cubes_bitwise_equal(reference, st.open_results(path))
    runs = st.store_attrs(path)["runs"]  # the killed run is recorded by the resume that followed it
    assert [r["status"] for r in runs] == ["killed", "finished"], runs
    assert "killed; found by the run started" in runs[0]["finished"]


def test_store_conventions_coordinates_provenance_consolidated(reference, client, tmp_path):
    """Complete cubes open with plain xarray.open_zarr without a warning; coordinates are labelled."""
    import warnings

    import xarray as xr

    path = tmp_path / "conv.zarr"
    study = Study(grid={"activation": ["gelu"], "n": [6], "d0": [4], "d1": [12]}, trials=3, seed=2,
                  save_spectrum=True)
    assert study.run(path, client=client, progress=False).ok
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(str(path))
    for c in ("n", "d0", "d1", "d2", "w1", "w2", "trial", "eig_n6"):
        assert ds[c].attrs.get("long_name") and "units" in ds[c].attrs, c
    assert list(ds["eig_n6"].values) == list(range(6))
    assert ds.attrs["blas"] and "unknown" not in ds.attrs["blas"]
    assert ds.attrs["engine_git_commit"] == "" or len(ds.attrs["engine_git_commit"].split()[0]) == 40
    assert ds.attrs["runs"][-1]["status"] == "finished"
    # a rerun updates the attributes and keeps the consolidated metadata current
    assert study.run(path, client=client, progress=False).regions_computed == 0
    assert len(xr.open_zarr(str(path)).attrs["runs"]) == 2


def test_store_without_template_flag_but_with_data_is_never_deleted(reference, client, tmp_path):
    import zarr

    path = tmp_path / "keep.zarr"
    study = _study(3)
    assert study.run(path, client=client, progress=False).ok
    zarr.open_group(str(path), mode="r+").attrs["template_complete"] = False
    with pytest.raises(st.StoreError, match="holds computed data: refusing to delete it"):
        study.run(path, client=client, progress=False)
    assert path.exists() and st.has_computed_data(path)


def test_second_driver_on_the_same_store_is_refused(client, tmp_path, capsys):
    toml, path = _toml(tmp_path, 3), tmp_path / "locked.zarr"
    with st.StoreLock(path):
        rc = main(["run", str(toml), "--store", str(path), "--no-progress", "--scheduler", client.scheduler.address])
    assert rc == 2
    err = capsys.readouterr().err
    assert "in use by another driver" in err and f"PID {os.getpid()}" in err
    assert not path.exists()


def test_store_whose_template_creation_was_interrupted_is_recreated(reference, client, tmp_path):
    import zarr

    from rmt_engine.study import create_store

    path = tmp_path / "tpl.zarr"
    study = _study(3)
    create_store(study, path)
    zarr.open_group(str(path), mode="r+").attrs["template_complete"] = False  # as if killed mid-creation
    with pytest.raises(st.IncompleteStoreError, match="interrupted"):
        st.open_results(path)
    msgs = []
    summary = study.run(path, client=client, progress=False, echo=msgs.append)
    assert summary.ok and summary.regions_computed == 16
    assert any("recreating" in m for m in msgs)
    assert_cubes_bitwise_equal(reference, st.open_results(path))
