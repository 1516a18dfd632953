"""A run whose workers all leave stops by itself (NoWorkersLeft) and --resume completes it, bitwise."""

import threading
import time

import numpy as np
import pytest

from rmt_engine.study.store import open_results
from rmt_engine.study import NoWorkersLeft, Study, StudySpecError

STUDY = """
[study]
trials = 8
seed = 3
t = [2]
[grid]
activation = ["gelu", "tanh"]
n = [20]
d0 = [6]
d1 = [60, 120]
[execution]
trials_per_task = 2
no_workers_timeout = 3
"""


def test_all_workers_gone_stops_the_run_and_resume_completes(tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    study = Study.from_toml_text(STUDY)
    ref = tmp_path / "ref.zarr"
    study.run(ref, workers=1, progress=False)
    monkeypatch.setenv("RMT_ENGINE_TEST_TASK_DELAY", "0.5")
    store = tmp_path / "cube.zarr"
    messages = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        threading.Timer(2.0, lambda: cluster.scale(0)).start()
        t0 = time.monotonic()
        with pytest.raises(NoWorkersLeft, match="rerun with --resume"):
            study.run(store, client=client, progress=False, echo=messages.append)
        elapsed = time.monotonic() - t0
    assert elapsed < 30, elapsed
    assert any("no workers left" in m for m in messages), messages
    assert any("no workers for 3 s" in m for m in messages), messages
    ds = open_results(store, allow_partial=True)
    runs = ds.attrs["runs"]
    assert runs[-1]["status"] == "aborted" and "no workers" in runs[-1]["reason"]
    done_before = int(np.asarray(ds["done"]).sum())
    assert 0 < done_before < ds["done"].size  # some regions finished before the workers left, not all
    monkeypatch.delenv("RMT_ENGINE_TEST_TASK_DELAY")
    summary = study.run(store, resume=True, workers=1, progress=False)
    assert summary.regions_skipped == done_before and summary.ok
    a, b = open_results(store).load(), open_results(ref).load()
    for v in b.data_vars:
        assert np.array_equal(a[v].values, b[v].values, equal_nan=a[v].dtype.kind == "f"), v


def test_no_workers_timeout_must_be_positive():
    with pytest.raises(StudySpecError, match="no_workers_timeout"):
        Study.from_toml_text(STUDY.replace("no_workers_timeout = 3", "no_workers_timeout = 0"))


class _NoWorkerClient:
    def nthreads(self):
        return {}


def test_pending_slurm_jobs_keep_the_driver_waiting():
    from rmt_engine.study.run import _WorkerWatch

    queue = [["12"], ["12"], []]  # two checks see a pending job, then the queue is empty
    messages, aborted = [], []
    watch = _WorkerWatch(_NoWorkerClient(), messages.append, interval=0.05, no_workers_timeout=0.2,
                         on_abort=lambda: aborted.append(time.monotonic()), pending=lambda: queue.pop(0) if queue else [])
    t0 = time.monotonic()
    deadline = t0 + 10
    while not aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    watch.stop()
    assert aborted and aborted[0] - t0 >= 3 * 0.2  # waited through the two pending checks
    assert sum("pending (12)" in m for m in messages) == 2, messages
    assert watch.aborted and any("stopping the run" in m for m in messages)


def test_run_summary_says_which_worker_ran_each_region(tmp_path):
    study = Study.from_toml_text(STUDY)
    summary = study.run(tmp_path / "c.zarr", workers=2, progress=False)
    assert sum(summary.workers_used.values()) == summary.regions_computed == 16
    assert all(":" in w for w in summary.workers_used)
    assert open_results(tmp_path / "c.zarr").attrs["runs"][-1]["workers_used"] == summary.workers_used
