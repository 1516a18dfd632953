"""Dask clusters for a study: embedded LocalCluster, an existing scheduler, SLURM, CUDA.

Rules of this module
- Dask is the only scheduler. ``connect(execution, ...)`` yields a ``distributed.Client`` and
  closes what it started (an existing scheduler is only disconnected from).
- Embedded (default): ``LocalCluster(n_workers=min(cores, workers), threads_per_worker=1,
  processes=True)``. BLAS threads: each worker process runs one task at a time, and every task
  limits BLAS to ``blas_threads`` (default 1) with threadpoolctl; the workers the engine starts
  also get ``OMP/OPENBLAS/MKL_NUM_THREADS = blas_threads`` before NumPy loads. One BLAS thread
  per worker and one worker per core keep the machine busy without oversubscription, and make a
  trial's floating-point reductions independent of how many workers run (bitwise-reproducible
  cubes).
- ``--cluster slurm``: ``dask_jobqueue.SLURMCluster(**[cluster.slurm])`` less the engine's own
  keys: ``jobs`` (a fixed count, default 1: ``cluster.scale(jobs=...)``) or ``minimum_jobs`` +
  ``maximum_jobs`` (dask-jobqueue's adaptive mode: ``cluster.adapt(minimum_jobs=...,
  maximum_jobs=...)``), and ``join_timeout`` (seconds to wait for the first worker, default
  ``SLURM_JOIN_TIMEOUT_S``; then ``ConnectionFailed`` says what ``squeue`` says of the jobs).
  ``slurm_job_script`` shows the job script without submitting anything.
- ``--cluster cuda``: ``dask_cuda.LocalCUDACluster``, one worker per visible GPU; the study's
  backend must be ``cupy`` or ``auto`` for the trials to run on the GPUs.
- The optional packages (dask-jobqueue, dask-cuda: extra ``[cluster]``) are imported only here,
  only when asked for.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

#: Seconds to wait for an existing scheduler before giving up with a clear error.
CONNECT_TIMEOUT_S = 30
#: Seconds to wait for the first SLURM worker to join (``[cluster.slurm] join_timeout`` overrides).
SLURM_JOIN_TIMEOUT_S = 300.0
#: The [cluster.slurm] keys the engine reads itself (never passed to ``SLURMCluster``).
SLURM_ENGINE_KEYS = ("jobs", "minimum_jobs", "maximum_jobs", "join_timeout")


class ConnectionFailed(RuntimeError):
    """No Dask scheduler could be reached, or no cluster started (the message says which and why)."""


def _check_scheduler_file(path) -> None:
    import json  # noqa: PLC0415

    try:
        with open(path) as f:
            info = json.load(f)
    except FileNotFoundError:
        raise ConnectionFailed(f"--scheduler-file {path}: no such file (start the scheduler with "
                               f"`dask scheduler --scheduler-file {path}` first)") from None
    except (OSError, ValueError) as e:
        raise ConnectionFailed(f"--scheduler-file {path}: not a Dask scheduler file ({e})") from None
    if not isinstance(info, dict) or "address" not in info:
        raise ConnectionFailed(f"--scheduler-file {path}: not a Dask scheduler file (no 'address' in it)")


def _check_address(address: str) -> None:
    if "://" not in address and ":" not in address:
        raise ConnectionFailed(f"--scheduler {address!r}: not a scheduler address (expected e.g. tcp://host:8786)")


def _client(scheduler=None, scheduler_file=None):
    from distributed import Client  # noqa: PLC0415

    what = f"--scheduler {scheduler}" if scheduler else f"--scheduler-file {scheduler_file}"
    try:
        if scheduler:
            _check_address(scheduler)
            return Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        _check_scheduler_file(scheduler_file)
        return Client(scheduler_file=scheduler_file, timeout=CONNECT_TIMEOUT_S)
    except ConnectionFailed:
        raise
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        raise ConnectionFailed(f"{what}: could not connect within {CONNECT_TIMEOUT_S} s: {type(e).__name__}: {e}") from None


BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
            "NUMEXPR_NUM_THREADS")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def blas_env(blas_threads: int = 1) -> dict:
    return {k: str(int(blas_threads)) for k in BLAS_ENV}


def local_cluster(workers: int | None = None, blas_threads: int = 1, **kwargs):
    """A ``distributed.LocalCluster`` of processes, one thread each (see the module rules)."""
    from distributed import LocalCluster  # noqa: PLC0415

    cores = available_cores()
    n = max(1, min(cores, workers or cores))
    opts = dict(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                env=blas_env(blas_threads))
    opts.update(kwargs)
    return LocalCluster(**opts)


@dataclass(frozen=True)
class SlurmPlan:
    """How many SLURM jobs to run: a fixed count, or adaptive between two counts."""

    jobs: int = 1
    minimum_jobs: int | None = None
    maximum_jobs: int | None = None
    join_timeout: float = SLURM_JOIN_TIMEOUT_S

    @property
    def adaptive(self) -> bool:
        return self.maximum_jobs is not None

    def describe(self) -> str:
        if self.adaptive:
            return f"adaptive {self.minimum_jobs}..{self.maximum_jobs} jobs"
        return f"{self.jobs} job{'' if self.jobs == 1 else 's'} (fixed)"

    def apply(self, cluster) -> None:
        """Submit the jobs: ``scale`` for a fixed count, ``adapt`` for the adaptive mode."""
        if self.adaptive:
            cluster.adapt(minimum_jobs=self.minimum_jobs, maximum_jobs=self.maximum_jobs)
        else:
            cluster.scale(jobs=self.jobs)


def _slurm_options(slurm: dict) -> tuple[dict, SlurmPlan]:
    """``[cluster.slurm]`` split into ``SLURMCluster`` keyword arguments and the engine's plan."""
    opts = dict(slurm)
    eng = {k: opts.pop(k) for k in SLURM_ENGINE_KEYS if k in opts}
    lo, hi = eng.get("minimum_jobs"), eng.get("maximum_jobs")
    if (lo is None) != (hi is None):  # the study spec refuses these; a Python caller may not have
        raise ValueError("[cluster.slurm]: minimum_jobs and maximum_jobs go together (adaptive mode)")
    if hi is not None and "jobs" in eng:
        raise ValueError("[cluster.slurm]: give jobs (a fixed count) or minimum_jobs/maximum_jobs, not both")
    if hi is not None and int(lo) > int(hi):
        raise ValueError(f"[cluster.slurm]: minimum_jobs = {lo} > maximum_jobs = {hi}")
    timeout = float(eng.get("join_timeout", SLURM_JOIN_TIMEOUT_S))
    if not timeout > 0:
        raise ValueError(f"[cluster.slurm] join_timeout must be > 0 seconds, got {timeout}")
    plan = SlurmPlan(jobs=int(eng.get("jobs", 1)), minimum_jobs=None if lo is None else int(lo),
                     maximum_jobs=None if hi is None else int(hi), join_timeout=timeout)
    opts.setdefault("cores", 1)
    opts.setdefault("memory", "4GB")
    return opts, plan


def _import_jobqueue():
    """``dask_jobqueue``, without its import-time ``signal.signal(SIGINT, lambda *_: sys.exit())``
    (dask_jobqueue.runner): that turns Ctrl-C into a silent exit with status 0 (SystemExit, not
    KeyboardInterrupt), so the driver would neither stop its tasks nor say that it was interrupted."""
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    before = signal.getsignal(signal.SIGINT)
    try:
        import dask_jobqueue  # noqa: PLC0415
    except ImportError as e:
        raise RuntimeError("--cluster slurm needs dask-jobqueue: pip install 'rmt-engine[cluster]'") from e
    now = signal.getsignal(signal.SIGINT)
    if getattr(now, "__module__", None) == "dask_jobqueue.runner" and threading.current_thread() is threading.main_thread():
        keep = before if getattr(before, "__module__", None) != "dask_jobqueue.runner" else signal.default_int_handler
        signal.signal(signal.SIGINT, keep if keep is not None else signal.default_int_handler)
    return dask_jobqueue


def slurm_cluster(slurm: dict, blas_threads: int = 1):
    """A ``dask_jobqueue.SLURMCluster`` from the ``[cluster.slurm]`` table (nothing submitted yet)
    and its ``SlurmPlan`` (``plan.apply(cluster)`` submits the jobs)."""
    SLURMCluster = _import_jobqueue().SLURMCluster  # noqa: N806
    opts, plan = _slurm_options(slurm)
    prologue = list(opts.pop("job_script_prologue", []))
    prologue += [f"export {k}={v}" for k, v in blas_env(blas_threads).items()]
    return SLURMCluster(job_script_prologue=prologue, **opts), plan


def slurm_job_script(slurm: dict, blas_threads: int = 1) -> str:
    """The job script ``--cluster slurm`` would submit (nothing is submitted)."""
    cluster, _ = slurm_cluster(slurm, blas_threads)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def _save_job_script(cluster, echo=None) -> str | None:
    """Write the job script being submitted to ``log_directory/<job_name>.job.sh`` (beside the jobs'
    logs, for the record; the jobs differ only in their worker ``--name``). Returns the path."""
    job = getattr(cluster, "_dummy_job", None)
    logdir = getattr(job, "log_directory", None)
    if not logdir:
        return None
    path = os.path.join(logdir, f"{getattr(job, 'job_name', None) or 'dask-worker'}.job.sh")
    try:
        os.makedirs(logdir, exist_ok=True)
        with open(path, "w") as f:
            f.write(cluster.job_script())
    except OSError as e:
        if echo is not None:
            echo(f"slurm: could not save the job script in {logdir}: {e}")
        return None
    if echo is not None:
        echo(f"slurm: job script {path}; job logs in {logdir}")
    return path


def _slurm_job_ids(cluster) -> list[str]:
    ids = []
    for job in list(getattr(cluster, "workers", {}).values()):
        jid = getattr(job, "job_id", None)
        if jid:
            ids.append(str(jid))
    return ids


def _run_quiet(cmd, timeout=15):
    import subprocess  # noqa: PLC0415

    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _check_sbatch(cluster) -> None:
    """``sbatch --test-only`` of the job script: a script Slurm refuses (unknown partition or
    account, more memory or cores than a node has, ...) is a clear error now, not a silent wait."""
    import shlex  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    job = cluster._dummy_job
    cmd = shlex.split(getattr(job, "submit_command", None) or "sbatch")
    if shutil.which(cmd[0]) is None:
        raise ConnectionFailed(f"--cluster slurm: no {cmd[0]} on PATH (is this a Slurm submit host?)")
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="rmt-engine-job-") as f:
        f.write(cluster.job_script())
        f.flush()
        try:
            out = _run_quiet(cmd + ["--test-only", f.name])
        except (OSError, subprocess.SubprocessError):
            return  # cannot tell: the real submission will say
    if out.returncode != 0:
        why = " ".join((out.stderr or out.stdout).split()) or f"exit code {out.returncode}"
        raise ConnectionFailed(f"--cluster slurm: Slurm refuses the job script ({why}); see it with "
                               "rmt-engine run STUDY --job-script")


def _squeue(job_ids) -> dict | None:
    """``{job_id: "STATE (REASON)"}`` for the jobs ``squeue`` still lists; None if it cannot say."""
    import shutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    if not job_ids or shutil.which("squeue") is None:
        return None
    try:
        out = _run_quiet(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T (%r)"])
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    states = {}
    for line in out.stdout.splitlines():
        jid, _, state = line.strip().partition(" ")
        if jid:
            states[jid] = state
    return states


def _describe_jobs(job_ids, states) -> str:
    if not job_ids:
        return "no job was submitted (did sbatch fail? its error is logged above)"
    if states is None:
        return f"jobs {', '.join(job_ids)} (squeue could not tell their state)"
    return "; ".join(f"job {j} {states[j]}" if j in states else f"job {j} gone from squeue (ended)" for j in job_ids)


def _log_tail(cluster, job_ids, lines: int = 5) -> str:
    job = getattr(cluster, "_dummy_job", None)
    logdir = getattr(job, "log_directory", None)
    if not logdir:
        return ""
    tails = []
    for jid in job_ids[:1]:
        path = os.path.join(logdir, f"{getattr(job, 'job_name', None) or 'dask-worker'}-{jid}.err")
        try:
            with open(path, errors="replace") as f:
                tail = [ln.rstrip() for ln in f.readlines()[-lines:]]
        except OSError:
            continue
        if tail:
            tails.append(f"; the end of {path}: " + " | ".join(tail))
    return "".join(tails) or f"; job logs in {logdir}"


def pending_slurm_jobs(client) -> list[str] | None:
    """The jobs of ``client``'s SLURM cluster (one ``connect`` started) that may still bring workers:
    those ``squeue`` lists as pending or starting. ``None`` when the client's cluster is not such a
    cluster or squeue cannot tell. For a driver deciding whether "no workers left" is final (a
    fixed count whose jobs all ended) or a wait (adaptive mode resubmitting, a job in the queue)."""
    cluster = getattr(client, "cluster", None)
    if cluster is None or type(cluster).__name__ != "SLURMCluster":
        return None
    ids = _slurm_job_ids(cluster)
    states = _squeue(ids)
    if states is None:
        return None
    return [j for j in ids if j in states and states[j].split()[0] in ("PENDING", "CONFIGURING", "REQUEUED",
                                                                          "RESIZING")]


def _wait_for_slurm_worker(client, cluster, plan: SlurmPlan, echo=None, poll_s: float = 2.0) -> None:
    """Wait up to ``plan.join_timeout`` for the first worker. ``ConnectionFailed`` (naming the jobs'
    state) if none joins in time, or, with a fixed count, as soon as every job has left the queue."""
    import time  # noqa: PLC0415

    t0 = time.monotonic()
    deadline = t0 + plan.join_timeout
    gone_twice = 0
    while True:
        try:
            client.wait_for_workers(1, timeout=max(0.1, min(poll_s, deadline - time.monotonic())))
            break
        except TimeoutError:
            pass
        ids = _slurm_job_ids(cluster)
        if time.monotonic() >= deadline:
            raise ConnectionFailed(f"--cluster slurm: no worker joined within {plan.join_timeout:g} s "
                                   f"({plan.describe()}): {_describe_jobs(ids, _squeue(ids))}"
                                   + _log_tail(cluster, ids)) from None
        if not plan.adaptive and ids and len(ids) >= plan.jobs:
            states = _squeue(ids)
            gone_twice = gone_twice + 1 if states == {} else 0
            if gone_twice >= 2:  # every job ended (or was cancelled) before its worker joined
                raise ConnectionFailed(f"--cluster slurm: every job ended before a worker joined "
                                       f"({plan.describe()}): {_describe_jobs(ids, states)}"
                                       + _log_tail(cluster, ids)) from None
    if echo is not None:
        waited = time.monotonic() - t0
        ids = _slurm_job_ids(cluster)
        n = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        k = len(ids) or plan.jobs
        what = plan.describe() if plan.adaptive else f"{k} job{'' if k == 1 else 's'} submitted (fixed)"
        echo(f"slurm: {what}{' [' + ', '.join(ids) + ']' if ids else ''}; {n} worker{'' if n == 1 else 's'} "
             f"joined after {waited:.1f} s")


def cuda_cluster(workers: int | None = None, blas_threads: int = 1):
    """A ``dask_cuda.LocalCUDACluster``: one worker per visible GPU (``workers`` caps the count)."""
    try:
        from dask_cuda import LocalCUDACluster  # noqa: PLC0415
    except ImportError as e:
        raise RuntimeError("--cluster cuda needs dask-cuda: pip install 'rmt-engine[cluster]'") from e
    opts = dict(threads_per_worker=1, dashboard_address=":0", env=blas_env(blas_threads))
    if workers:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(_gpu_count())]
        opts["CUDA_VISIBLE_DEVICES"] = ",".join(ids[:workers])
    return LocalCUDACluster(**opts)


def _gpu_count() -> int:
    from ..backend.xp import _cupy_or_none  # noqa: PLC0415

    cp = _cupy_or_none()
    return cp.cuda.runtime.getDeviceCount() if cp is not None else 0


@contextlib.contextmanager
def connect(execution=None, *, client=None, workers=None, cluster=None, scheduler=None, scheduler_file=None,
            echo=None):
    """Yield a ``distributed.Client`` for a study run and close what was started here.

    Precedence: an explicit ``client``; then ``scheduler`` / ``scheduler_file`` (arguments, then
    the study's ``[execution]``); then the cluster kind (argument, then ``[execution].cluster``).
    ``echo`` (a callable taking one line), when given, is told what was started (SLURM: the jobs
    submitted and when the first worker joined).
    """
    from distributed import Client  # noqa: PLC0415

    if client is not None:
        yield client
        return
    ex = execution
    workers = workers or (ex.workers if ex else None)
    blas = ex.blas_threads if ex else 1
    if not (scheduler or scheduler_file) and not cluster:
        scheduler, scheduler_file = (ex.scheduler, ex.scheduler_file) if ex else (None, None)
    if scheduler or scheduler_file:
        cl = _client(scheduler, scheduler_file)
        try:
            yield cl
        finally:
            cl.close()
        return
    kind = cluster or (ex.cluster if ex else "local")
    if kind == "local":
        lc = local_cluster(workers, blas)
    elif kind == "slurm":
        lc, plan = slurm_cluster(ex.slurm if ex else {}, blas)
        try:
            _check_sbatch(lc)
            _save_job_script(lc, echo)
            plan.apply(lc)
        except BaseException:
            lc.close()
            raise
    elif kind == "cuda":
        try:
            ngpu = _gpu_count()
        except Exception:  # CuPy present but no driver
            ngpu = 0
        if ngpu == 0:
            raise ConnectionFailed("--cluster cuda: no CUDA device is visible (CuPy missing or no GPU); use "
                                   "--cluster local on this machine")
        lc = cuda_cluster(workers, blas)
    else:
        raise ValueError(f"unknown cluster kind {kind!r}; expected local, slurm or cuda")
    try:
        cl = Client(lc)
        try:
            if kind == "slurm":
                _wait_for_slurm_worker(cl, lc, plan, echo)
            yield cl
        finally:
            cl.close()
    finally:
        lc.close()


def environment_info() -> dict:
    """What ``rmt-engine info`` prints: versions, cores, BLAS, backends and GPU devices."""
    import sys  # noqa: PLC0415
    from importlib.util import find_spec  # noqa: PLC0415

    from ..backend.xp import _cupy_or_none  # noqa: PLC0415
    from .provenance import library_versions  # noqa: PLC0415

    info = {"versions": library_versions(), "python": sys.executable, "cores": available_cores(),
            "backends": {"numpy": True, "cupy": False}, "gpus": [], "blas": [],
            "cluster_kinds": {"local": True, "slurm": find_spec("dask_jobqueue") is not None,
                              "cuda": find_spec("dask_cuda") is not None}}
    cp = _cupy_or_none()
    if cp is not None:
        info["backends"]["cupy"] = True
        for i in range(cp.cuda.runtime.getDeviceCount()):
            p = cp.cuda.runtime.getDeviceProperties(i)
            name = p["name"].decode() if isinstance(p["name"], bytes) else str(p["name"])
            info["gpus"].append({"id": i, "name": name, "memory_GiB": round(p["totalGlobalMem"] / 2**30, 1)})
    elif find_spec("cupy") is not None:
        info["backends"]["cupy"] = "installed, but no usable CUDA device"
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415

        info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer")}
                        for d in threadpool_info()]
    except ImportError:
        pass
    from ..linalg.blas import gil_free_syrk  # noqa: PLC0415
    from ..montecarlo.gram import LANES  # noqa: PLC0415

    info["gram_pass"] = {"lanes": LANES, "gil_free_dsyrk": gil_free_syrk()}
    return info
