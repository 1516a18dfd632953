"""Faults on a real Dask cluster of separate processes: a worker and the driver killed mid-run.

Each test starts ``dask scheduler --scheduler-file F`` and two ``dask worker --scheduler-file F
--nthreads 1 --nworkers 1`` processes (each in its own session, PIDs recorded, SIGKILLed with
their process group at teardown), then runs ``rmt-engine run --scheduler-file F`` of the reduced
quickstart of ``tests/cluster/cluster_helpers.py`` (16 tasks, slowed with
``RMT_ENGINE_TEST_TASK_DELAY`` so that there is a "mid-run"), and compares the cube bitwise with
the ``--cluster local`` run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "cluster"))
import cluster_helpers as H  # noqa: E402

pytestmark = pytest.mark.cluster

#: seconds for the scheduler to write its file and for the workers to join
START_S = 60


class DaskProcesses:
    """A scheduler and its workers, each a ``cluster_helpers.Proc`` (own session, killed by PID)."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path
        self.file = tmp_path / "scheduler.json"
        self.env = H.cli_env()
        self.procs: list[H.Proc] = []
        self.workers: list[H.Proc] = []
        self.scheduler = self._start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--scheduler-file",
                                      self.file, "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"])
        if not H.wait_until(lambda: self.file.exists() and self.file.stat().st_size > 0, START_S):
            raise RuntimeError(f"the scheduler wrote no {self.file}:\n{self.scheduler.output}")

    def _start(self, cmd) -> H.Proc:
        p = H.Proc(cmd, env=self.env, cwd=self.dir)
        self.procs.append(p)
        return p

    def start_worker(self) -> H.Proc:
        local = self.dir / f"worker{len(self.workers)}"
        w = self._start([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", self.file,
                         "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--local-directory", local])
        self.workers.append(w)
        return w

    def n_workers(self) -> int:
        from distributed import Client

        with Client(scheduler_file=str(self.file), timeout=30) as c:
            return len(c.scheduler_info(n_workers=-1)["workers"])

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(scheduler_file=str(self.file), timeout=30) as c:
            c.wait_for_workers(n, timeout=START_S)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.kill()
        alive = [p.pid for p in self.procs if p.p.poll() is None]
        assert not alive, f"processes left running: {alive}"


@pytest.fixture
def dask_processes(tmp_path):
    d = DaskProcesses(tmp_path)
    try:
        d.start_worker()
        d.start_worker()
        d.wait_for_workers(2)
        yield d
    finally:
        d.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return H.reference_cube(tmp_path_factory)


def _driver(study, store, scheduler_file, *extra, delay=0.4) -> H.Proc:
    return H.Proc(H.rmt_engine_cmd("run", study, "--store", store, "--scheduler-file", scheduler_file,
                                   "--no-progress", *extra),
                  env=H.cli_env(RMT_ENGINE_TEST_TASK_DELAY=delay))


def test_worker_killed_mid_run_is_replaced_and_the_cube_is_complete(dask_processes, tmp_path, reference):
    study, store = H.write_study(tmp_path / "study.toml"), tmp_path / "cube.zarr"
    p = _driver(study, store, dask_processes.file)
    try:
        assert H.wait_until(lambda: H.regions_done(store) >= 3, START_S), p.output
        victim = dask_processes.workers[0]
        os.killpg(victim.pid, signal.SIGKILL)  # the worker (and its nanny) die at once
        victim.kill()
        dask_processes.start_worker()  # a replacement joins while the run goes on
        rc = p.wait(180)
        out = p.output
    finally:
        p.kill()
    assert rc == 0, out
    # _WorkerWatch: "rmt-engine: worker tcp://... lost; the scheduler retries its tasks on the N remaining worker(s)"
    assert "lost" in out and "worker" in out, out
    H.assert_same_cube(reference, store)


def test_driver_killed_mid_run_then_resume_computes_only_the_missing_regions(dask_processes, tmp_path, reference):
    study, store = H.write_study(tmp_path / "study.toml"), tmp_path / "cube.zarr"
    p = _driver(study, store, dask_processes.file)
    try:
        assert H.wait_until(lambda: H.regions_done(store) >= 4, START_S), p.output
        os.killpg(p.pid, signal.SIGKILL)  # kill -9 of the driver: no cleanup, its lock stays
        p.kill()
    finally:
        p.kill()
    at_kill = H.regions_done(store)
    assert 4 <= at_kill < H.N_TASKS, p.output
    summary = tmp_path / "resume.json"
    r = H.run_cli("run", study, "--store", store, "--scheduler-file", dask_processes.file, "--resume",
                  "--no-progress", "--summary-json", summary, env=H.cli_env())
    assert r.returncode == 0, r.stdout
    assert "stale lock" in r.stdout, r.stdout  # the dead driver's lock is broken, not waited for
    s = json.loads(summary.read_text())
    # tasks the dead driver had started may still finish on the workers: at least the regions done
    # at the kill are skipped, and exactly the others are computed
    assert s["regions_skipped"] >= at_kill and s["regions_computed"] == H.N_TASKS - s["regions_skipped"], s
    assert s["regions_computed"] < H.N_TASKS and s["regions_failed"] == 0, s
    H.assert_same_cube(reference, store)
    assert dask_processes.n_workers() == 2  # the workers survived the driver
