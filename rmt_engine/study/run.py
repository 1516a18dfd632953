"""The driver: one run of a study on a store, from the store lock to the ``RunSummary``.

Rules of this module
- ``run_study`` validates the study's resource limits and the store (twice: before and after taking
  the store's lock, so nothing is created for a bad store), creates the cube or resumes it, plans
  the regions not yet done, and submits one task per region. Dask is the only scheduler; the
  cluster comes from ``rmt_engine.study.cluster`` (started from ``[execution]`` or an existing client).
- All tasks go to the scheduler in one graph update; the driver only collects the small status
  dicts, shows progress (a rich bar on a terminal, else a plain line at most every
  ``PROGRESS_INTERVAL_S``), reports workers that join or leave, and records the run in the store's
  ``runs`` attribute. A failed region is reported with whether a rerun can help; done regions are
  never recomputed, unless their data are damaged.
- Resuming an existing store first repairs it: the metadata of deleted variables, and metadata that
  differs from the template's, is recreated from the study's template and damaged coordinate arrays
  are rewritten from it (``store.restore_metadata``; the consolidated metadata of a complete store is
  rewritten after it), every region marked done is audited (presence,
  size and digest of each chunk: ``store.audit_regions``), the flags of damaged regions are cleared
  and unreadable flags rebuilt from the regions' records (``store.mark_done``); the plan then holds
  exactly the regions not done, damaged ones included, and their recomputation is bitwise what an
  uninterrupted run writes.
- SIGTERM (a batch system's cancel, ``kill``) is handled like Ctrl-C (``Terminated``, a
  ``KeyboardInterrupt``): running tasks are cancelled, the cluster closed, the run recorded as
  interrupted and the lock released; finished regions are kept.
- A full disk (``ENOSPC``/``EDQUOT``) in the tasks' writes is named with the store's path, the
  number of regions not written and ``--resume``; the driver's own bookkeeping writes failing at
  the end of a run are reported, never a traceback that hides the failed tasks.
- This module is the top of the package: it may import every other ``rmt_engine.study`` module,
  and none of them imports it.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import store as _store
from .provenance import _now
from .plan import Task, check_store, plan_tasks
from .spec import _ENTRY_POINTS, Study, StudySpecError
from .store_setup import create_store
from .tasks import _test_hooks, execute_task, make_job

#: Without a terminal the progress is a plain line at most this often (seconds; env override for tests).
PROGRESS_INTERVAL_S = 30.0
PROGRESS_INTERVAL_ENV = "RMT_ENGINE_PROGRESS_INTERVAL"


#: errno values of a full disk or an exhausted quota.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class Terminated(KeyboardInterrupt):
    """The driver received SIGTERM: handled like Ctrl-C (finished regions kept, lock released)."""

    exit_code = 128 + signal.SIGTERM

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(f"terminated by signal {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


class _sigterm_as_interrupt:
    """Within the block, SIGTERM raises ``Terminated`` in the main thread (elsewhere: unchanged)."""

    def __enter__(self):
        import threading  # noqa: PLC0415

        self.old = None
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                raise Terminated(signum)

            self.old = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)


@dataclass
class TaskFailure:
    task: Task
    error: str
    deterministic: bool = False  # raised by the computation itself: a rerun repeats it
    errno: int | None = None  # an OSError's errno (ENOSPC: the disk is full)

    def __str__(self):
        return f"{self.task.describe()}: {self.error}"


@dataclass
class RunSummary:
    """What ``Study.run`` did: regions are (grid point, trial block) pairs = tasks."""

    store: str
    regions_total: int
    regions_computed: int
    regions_skipped: int
    failures: list
    trials_computed: int
    wall_s: float
    workers: int | None = None
    devices: list = field(default_factory=list)
    #: regions computed per worker ("host:pid" of the process that ran the task)
    workers_used: dict = field(default_factory=dict)

    @property
    def regions_failed(self) -> int:
        return sum(len(f.task.regions) for f in self.failures)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def trials_per_s(self) -> float:
        return self.trials_computed / self.wall_s if self.wall_s > 0 else float("nan")

    def line(self) -> str:
        if self.regions_computed == 0 and not self.failures and self.workers is None:
            return (f"nothing to compute: all {self.regions_total} regions were already done "
                    f"({self.regions_skipped} skipped)")
        w = self.workers if self.workers is not None else "?"
        return (f"{self.trials_computed} trials in {self.wall_s:.1f} s ({self.trials_per_s:.1f} trials/s) on "
                f"{w} worker{'' if w == 1 else 's'}; regions: "
                f"{self.regions_computed} computed, {self.regions_skipped} skipped (already done), "
                f"{self.regions_failed} failed, of {self.regions_total}")

    def to_dict(self) -> dict:
        return {"store": self.store, "regions_total": self.regions_total, "regions_computed": self.regions_computed,
                "regions_skipped": self.regions_skipped, "regions_failed": self.regions_failed,
                "failures": [str(f) for f in self.failures], "trials_computed": self.trials_computed,
                "wall_s": self.wall_s, "trials_per_s": self.trials_per_s, "workers": self.workers,
                "devices": self.devices, "workers_used": self.workers_used}


def run_study(study: Study, store, *, client=None, resume: bool = False, progress: bool = True,
              workers: int | None = None, cluster: str | None = None, scheduler: str | None = None,
              scheduler_file: str | None = None, echo=None, force: bool = False) -> RunSummary:
    """See ``Study.run``."""
    from ..montecarlo.trial import run_trial  # noqa: F401, PLC0415 - a broken install fails here, before any store exists

    echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
    store = Path(store).absolute()
    if store.is_symlink() or any(p.is_symlink() for p in store.parents):
        store = store.resolve()  # one lock per real store, whatever path reaches it
    problems = study.resource_problems()
    if problems and not force:
        raise StudySpecError("refusing to run: " + "; ".join(problems) + ". Raise the limit in [execution] or "
                             "pass --force (rmt_engine.study.resources explains the estimate)", ("execution",))
    check_store(study, store, resume=resume)  # before the lock: never create anything for a bad store
    hooks = _test_hooks()
    with _sigterm_as_interrupt(), _store.StoreLock(store, on_message=echo):
        return _run_locked(study, store, client, resume, progress, workers, cluster, scheduler, scheduler_file,
                           echo, hooks)


def _run_locked(study, store, client, resume, progress, workers, cluster, scheduler, scheduler_file, echo,
                hooks) -> RunSummary:
    """``run_study`` once the store's lock is held."""
    from . import cluster as _cluster  # noqa: PLC0415

    attrs = check_store(study, store, resume=resume)  # again, now that we own the store
    if attrs is not None and not attrs.get("template_complete"):
        if _store.has_computed_data(store):
            raise _store.StoreError(
                f"{store} has no template_complete attribute but holds computed data: refusing to delete it. "
                "Inspect it (rmt_engine.open_results(..., allow_partial=True) fails on it), then move it "
                "away or choose another --store")
        # a driver died while creating the template: no task can have run, nothing is lost
        echo(f"recreating {store}: its creation was interrupted before any task ran")
        shutil.rmtree(store)
        attrs = None
    tpt = study.trials_per_task()
    created = attrs is None
    if attrs is None:
        try:
            attrs = create_store(study, store, tpt)
        except OSError as e:
            raise _store.StoreWriteError(f"cannot create the store {store}: {e.strerror or e}") from None
    else:
        stored_tpt = int(attrs["trials_per_task"])
        if stored_tpt != tpt:
            echo(f"note: the store is chunked by {stored_tpt} trials per task; using that (not {tpt})")
        tpt = stored_tpt
        echo(f"resuming {store} (same study, config hash {attrs['config_hash'][:12]})")
    runs = list(attrs.get("runs", []))
    for r in runs:  # a run still marked running was killed (its driver could not finish it)
        if r.get("status") == "running":
            r["status"] = "killed"
            r["finished"] = f"(killed; found by the run started {_now()})"
    driver = f"{socket.gethostname()}:{os.getpid()}"
    runs.append({"started": _now(), "finished": "", "status": "running", "driver": driver})
    try:
        _store.update_attrs(store, runs=runs)
        done = _store.read_done(store) if created else _repair(study, store, tpt, echo)
    except OSError as e:
        raise _store.StoreWriteError(f"cannot write to the store {store}: {e.strerror or e}; nothing was "
                                     "computed. Fix that (free space, permissions), then rerun with "
                                     "--resume") from None
    tasks, total = plan_tasks(study, tpt, done)
    variables = _store.layout(study.cube_axes(), study.t, study.trials, tpt, study.save_spectrum, study.train,
                              study.ntk)
    if not _store.has_region_checks(store):  # a store written before region_check: its tasks write none
        variables = [v for v in variables if v.name != _store.CHECK_NAME]
    # the alignment of every region with the real chunks is checked again in each write
    run_started = _now()
    t0 = time.perf_counter()
    results, failures = [], []
    n_workers = None
    if tasks:
        if (cluster or study.execution.cluster) == "cuda" and study.backend == "numpy":
            echo("warning: --cluster cuda with backend = \"numpy\": the trials run on the CPU; set "
                 "backend = \"cupy\" (or \"auto\") in [study] to use the GPUs")
        try:
            conn = _cluster.connect(study.execution, client=client, workers=workers, cluster=cluster,
                                    scheduler=scheduler, scheduler_file=scheduler_file, echo=echo)
            cl = conn.__enter__()
        except BaseException:
            if created and not _store.has_computed_data(store):
                shutil.rmtree(store, ignore_errors=True)  # nothing computed: leave no orphan store behind
            raise
        try:
            n_workers = len(cl.scheduler_info(n_workers=-1).get("workers", {})) if hasattr(cl, "scheduler_info") else None
            results, failures = _submit_and_wait(cl, study, store, tasks, variables, tpt, hooks, progress, echo)
        except BaseException as e:
            if isinstance(e, (NoWorkersLeft, KeyboardInterrupt)):
                status = "aborted" if isinstance(e, NoWorkersLeft) else "interrupted"
                runs[-1].update(status=status, finished=_now(), reason=str(e) or type(e).__name__)
                try:
                    _store.update_attrs(store, runs=runs)
                except Exception:  # noqa: BLE001 - a full disk: the next run marks it killed
                    pass
            conn.__exit__(type(e), e, e.__traceback__)
            raise
        conn.__exit__(None, None, None)
    wall = time.perf_counter() - t0
    devices = sorted({f"{r['backend']}: {r['device']} @ {r['host']}" for r in results})
    done_now = _store.read_done(store)
    # a task whose result was lost after it marked its region done (e.g. its worker died
    # later and the recomputation failed) did its job: only not-done regions are failures
    failures = [f for f in failures if not all(done_now[p + (f.task.block,)] for p in f.task.regions)]
    full = [f for f in failures if f.errno in DISK_FULL_ERRNOS]
    if full:
        echo(f"rmt-engine: no space left on the device of {store} ({_free_space(store)}): {len(full)} "
             f"region(s) could not be written and are not done ({len(failures)} failed in all); the done "
             f"regions are kept. Free space there, then rerun with --resume (rmt-engine run STUDY.toml "
             f"--store {store} --resume)")
    complete = bool(done_now.all())
    computed = sum(r.get("regions", 1) for r in results)
    skipped = total - sum(len(t.regions) for t in tasks)
    workers_used = dict(sorted(Counter(f"{r['host']}:{r['pid']}" for r in results).items()))
    runs[-1] = {"started": run_started, "finished": _now(), "status": "finished", "driver": driver,
                "workers": n_workers, "workers_used": workers_used, "regions_computed": computed, "regions_failed": len(failures),
                "regions_skipped": skipped, "wall_s": round(wall, 3), "devices": devices}
    upd = {"runs": runs, "complete": complete}
    if devices:
        prev = [d for d in str(attrs.get("device", "")).split("; ") if d]
        upd["device"] = "; ".join(sorted(set(prev) | set(devices)))
        upd["backend"] = ", ".join(sorted({r["backend"] for r in results} |
                                          set(filter(None, str(attrs.get("backend", "")).split(", ")))))
    if complete:
        upd["finished"] = _now()
    try:
        _store.update_attrs(store, **upd)
        if complete:
            _store.consolidate(store)  # xarray.open_zarr reads it without the "no consolidated metadata" warning
    except OSError as e:  # the data and done flags are written; only the run's record is missing
        echo(f"rmt-engine: warning: could not record this run in {store}'s attributes ({e.strerror or e}; "
             f"{_free_space(store)}); the computed regions and their done flags are written"
             + (f"; {len(failures)} region(s) failed: free space and rerun with --resume" if failures else ""))
    return RunSummary(str(store), total, computed, skipped, failures,
                      sum(r["trials"] for r in results), wall, n_workers, devices, workers_used)


def _free_space(store) -> str:
    try:
        return f"{shutil.disk_usage(store).free / 2**20:.0f} MiB free"
    except OSError:
        return "free space unknown"


def _repair(study, store, tpt, echo):
    """The done mask a resume may trust (see the module docstring): metadata restored, regions audited."""
    restored = _store.restore_metadata(store, study.cube_axes(), study.t, study.trials, tpt, study.save_spectrum,
                                       study.train, study.ntk)
    if restored:
        echo(f"rmt-engine: recreated the metadata of {', '.join(restored)} from the study's template")
    _store.reconsolidate(store)  # a complete store's consolidated metadata: every variable again
    audit = _store.audit_regions(store, deep=True, flags_lost="done" in restored)
    for region, reasons in list(audit.damaged.items())[:10]:
        echo(f"rmt-engine: damaged region ({_store._region_label(region)}): {'; '.join(reasons)}")
    if audit.damaged:
        echo(f"rmt-engine: {len(audit.damaged)} damaged region(s) will be recomputed"
             + ("" if audit.checked else " (this store predates per-chunk digests: checked by CRC-32C only)"))
    if audit.rebuilt:
        echo(f"rmt-engine: rebuilt {len(audit.rebuilt)} unreadable done flag(s) from the regions' chunk digests")
    _store.mark_done(store, audit)
    return audit.done


def _submit_and_wait(client, study, store, tasks, variables, tpt, hooks, progress, echo=None):
    from distributed import as_completed  # noqa: PLC0415

    token = uuid.uuid4().hex[:8]
    sha = study.canonical()["data_file_sha256"]
    jobs = [make_job(study, store, task, variables, tpt, hooks, sha) for task in tasks]
    keys = [f"rmt-task-{token}-{'-'.join(map(str, task.point))}-b{task.block}" for task in tasks]
    # one graph update for all tasks (a submit per task costs the scheduler ~15 ms each)
    futures = dict(zip(client.map(execute_task, jobs, key=keys, pure=False), tasks))
    results, failures = [], []
    timeout = study.execution.no_workers_timeout or NO_WORKERS_TIMEOUT_S
    from .cluster import pending_slurm_jobs  # noqa: PLC0415

    watch = _WorkerWatch(client, echo or (lambda m: print(m, file=sys.stderr, flush=True)),
                         no_workers_timeout=timeout, on_abort=lambda: client.cancel(list(futures)),
                         pending=lambda: pending_slurm_jobs(client))
    try:
        _collect(futures, results, failures, progress, tasks, as_completed)
    except BaseException:  # KeyboardInterrupt, lost scheduler: stop what still runs, keep what is done
        client.cancel(list(futures))
        raise
    finally:
        watch.stop()
    if watch.aborted:
        raise NoWorkersLeft(f"no workers for {timeout:g} s (all gone: jobs cancelled or ended?); "
                            f"{sum(r.get('regions', 1) for r in results)} of {sum(len(t.regions) for t in tasks)} regions of this run are done and kept: rerun with "
                            "--resume once workers can start")
    return results, failures


#: Seconds the driver waits with no worker at all before it gives up (``[execution]
#: no_workers_timeout`` overrides): long enough for a Slurm job to be requeued, short enough that a
#: run whose jobs were all cancelled ends by itself.
NO_WORKERS_TIMEOUT_S = 300.0


class NoWorkersLeft(RuntimeError):
    """Every worker left and none joined within the timeout: the run stopped (finished regions are kept)."""


class _WorkerWatch:
    """Says when a worker leaves while tasks run (the scheduler reruns its tasks elsewhere), and
    calls ``on_abort`` once when no worker at all has been there for ``no_workers_timeout`` s."""

    def __init__(self, client, echo, interval: float = 0.5, no_workers_timeout: float = NO_WORKERS_TIMEOUT_S,
                 on_abort=None, pending=None):
        import threading  # noqa: PLC0415

        self.client, self.echo, self.interval = client, echo, interval
        self.no_workers_timeout, self.on_abort, self.pending = no_workers_timeout, on_abort, pending
        self.zero_since: float | None = None
        self.aborted = False
        self._stop = threading.Event()
        self.known = self._workers() or {}
        self.missing: dict = {}
        self.thread = threading.Thread(target=self._run, name="rmt-worker-watch", daemon=True)
        self.thread.start()

    def _workers(self) -> dict | None:
        """The scheduler's workers now (a direct query, not the client's cached view), None if unknown."""
        try:
            return dict(self.client.nthreads())
        except Exception:
            return None

    def _check(self, final: bool = False):
        now = self._workers()
        if now is None:
            return
        joined = set(now) - set(self.known)
        for addr in set(self.known) - set(now):
            self.missing[addr] = self.missing.get(addr, 0) + 1
            # gone in two queries in a row, or replaced by a new worker, or still gone at the end: lost
            if self.missing[addr] >= 2 or joined or final:
                self.echo(f"rmt-engine: worker {addr} lost; the scheduler retries its tasks on the "
                          f"{len(now)} remaining worker(s)")
                del self.known[addr]
                del self.missing[addr]
        for addr in joined:
            self.echo(f"rmt-engine: worker {addr} joined ({len(now)} now)")
            self.known[addr] = now[addr]
        for addr in list(self.missing):
            if addr in now:
                del self.missing[addr]
        self._check_empty(now, final)

    def _check_empty(self, now: dict, final: bool):
        if now:
            if self.zero_since is not None:
                self.echo(f"rmt-engine: {len(now)} worker(s) again after "
                          f"{time.monotonic() - self.zero_since:.0f} s without any")
            self.zero_since = None
            return
        if final or self.aborted:
            return
        if self.zero_since is None:
            self.zero_since = time.monotonic()
            self.echo(f"rmt-engine: no workers left; waiting up to {self.no_workers_timeout:g} s for one to join "
                      "([execution] no_workers_timeout)")
        elif time.monotonic() - self.zero_since >= self.no_workers_timeout:
            queued = self.pending() if self.pending is not None else None
            if queued:  # Slurm jobs still in the queue (adaptive resubmission, a busy cluster): keep waiting
                self.echo(f"rmt-engine: no workers for {self.no_workers_timeout:g} s, but {len(queued)} Slurm job(s) "
                          f"are pending ({', '.join(map(str, queued))}): waiting for them")
                self.zero_since = time.monotonic()
                return
            self.aborted = True
            self.echo(f"rmt-engine: no workers for {self.no_workers_timeout:g} s: stopping the run "
                      "(finished regions are kept; rerun with --resume once workers can start)")
            if self.on_abort is not None:
                self.on_abort()

    def _run(self):
        while not self._stop.wait(self.interval):
            self._check()

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=5)
        self._check(final=True)


def _is_deterministic(e: BaseException) -> bool:
    """True for an error raised by the task's own computation (it would be raised again); False for
    lost workers, cancellations, timeouts and I/O errors (a rerun may succeed)."""
    transient = ("KilledWorker", "CommClosedError", "CancelledError", "FutureCancelledError", "TimeoutError")
    if type(e).__name__ in transient or isinstance(e, (OSError, MemoryError)):
        return False
    return True


def _collect(futures, results, failures, progress, tasks, as_completed):
    with _progress(progress, len(tasks), sum((t.stop - t.start) * len(t.regions) for t in tasks)) as advance:
        for fut in as_completed(list(futures)):
            task = futures[fut]
            try:
                res = fut.result()
            except Exception as e:  # task exception, KilledWorker, ...
                failures.append(TaskFailure(task, f"{type(e).__name__}: {e}", _is_deterministic(e),
                                            e.errno if isinstance(e, OSError) else None))
                advance(0, failed=True)
            else:
                results.append(res)
                advance(res["trials"])
            fut.release()


class _progress:
    """A rich progress bar over finished tasks on stderr (or nothing)."""

    def __init__(self, enabled: bool, n_tasks: int, n_trials: int):
        self.enabled, self.n_tasks, self.n_trials = enabled, n_tasks, n_trials

    def __enter__(self):
        if not self.enabled:
            return lambda trials, failed=False: None
        self.plain = not sys.stderr.isatty()
        if self.plain:  # a log file or a batch system: a plain line at most every PROGRESS_INTERVAL_S
            self.t0 = self.last = time.monotonic()
            self.done = self.trials = self.failed = 0
            interval = float(os.environ.get(PROGRESS_INTERVAL_ENV, PROGRESS_INTERVAL_S))

            def advance(trials, failed=False):
                self.done += 1
                self.trials += trials
                self.failed += int(failed)
                now = time.monotonic()
                if now - self.last >= interval or self.done == self.n_tasks:
                    self.last = now
                    print(self._line(now), file=sys.stderr, flush=True)

            return advance
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn  # noqa: PLC0415

        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("regions, {task.fields[trials]} trials, {task.fields[failed]} failed"),
                          TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self.p.__enter__()
        self.id = self.p.add_task("trials", total=self.n_tasks, trials=0, failed=0)
        self.trials = self.failed = 0

        def advance(trials, failed=False):
            self.trials += trials
            self.failed += int(failed)
            self.p.update(self.id, advance=1, trials=self.trials, failed=self.failed)

        return advance

    def _line(self, now) -> str:
        el = now - self.t0
        eta = el / self.done * (self.n_tasks - self.done) if self.done else float("nan")
        return (f"rmt-engine: progress {self.done}/{self.n_tasks} regions, {self.trials}/{self.n_trials} trials, "
                f"{self.failed} failed, elapsed {el:.0f} s, ETA {eta:.0f} s")

    def __exit__(self, *exc):
        if self.enabled and not self.plain:
            self.p.__exit__(*exc)


_ENTRY_POINTS["run_study"] = run_study  # Study.run
