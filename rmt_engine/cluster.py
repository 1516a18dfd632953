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
- ``--cluster slurm``: ``dask_jobqueue.SLURMCluster(**[cluster.slurm])`` scaled to ``jobs`` jobs
  (``slurm_job_script`` shows the job script without submitting anything).
- ``--cluster cuda``: ``dask_cuda.LocalCUDACluster``, one worker per visible GPU; the study's
  backend must be ``cupy`` or ``auto`` for the trials to run on the GPUs.
- The optional packages (dask-jobqueue, dask-cuda: extra ``[cluster]``) are imported only here,
  only when asked for.
"""

from __future__ import annotations

import contextlib
import os

#: Seconds to wait for an existing scheduler before giving up with a clear error.
CONNECT_TIMEOUT_S = 30


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


def _slurm_options(slurm: dict) -> tuple[dict, int]:
    opts = dict(slurm)
    jobs = int(opts.pop("jobs", 1))
    if "job_name" in opts:
        opts["job_name"] = opts.pop("job_name")
    opts.setdefault("cores", 1)
    opts.setdefault("memory", "4GB")
    return opts, jobs


def slurm_cluster(slurm: dict, blas_threads: int = 1):
    """A ``dask_jobqueue.SLURMCluster`` from the ``[cluster.slurm]`` table (not yet scaled)."""
    try:
        from dask_jobqueue import SLURMCluster  # noqa: PLC0415
    except ImportError as e:
        raise RuntimeError("--cluster slurm needs dask-jobqueue: pip install 'rmt-engine[cluster]'") from e
    opts, jobs = _slurm_options(slurm)
    prologue = list(opts.pop("job_script_prologue", []))
    prologue += [f"export {k}={v}" for k, v in blas_env(blas_threads).items()]
    return SLURMCluster(job_script_prologue=prologue, **opts), jobs


def slurm_job_script(slurm: dict, blas_threads: int = 1) -> str:
    """The job script ``--cluster slurm`` would submit (nothing is submitted)."""
    cluster, _ = slurm_cluster(slurm, blas_threads)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


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
    from ._backend import _cupy_or_none  # noqa: PLC0415

    cp = _cupy_or_none()
    return cp.cuda.runtime.getDeviceCount() if cp is not None else 0


@contextlib.contextmanager
def connect(execution=None, *, client=None, workers=None, cluster=None, scheduler=None, scheduler_file=None):
    """Yield a ``distributed.Client`` for a study run and close what was started here.

    Precedence: an explicit ``client``; then ``scheduler`` / ``scheduler_file`` (arguments, then
    the study's ``[execution]``); then the cluster kind (argument, then ``[execution].cluster``).
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
        lc, jobs = slurm_cluster(ex.slurm if ex else {}, blas)
        lc.scale(jobs=jobs)
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
                cl.wait_for_workers(1)
            yield cl
        finally:
            cl.close()
    finally:
        lc.close()


def environment_info() -> dict:
    """What ``rmt-engine info`` prints: versions, cores, BLAS, backends and GPU devices."""
    import sys  # noqa: PLC0415
    from importlib.util import find_spec  # noqa: PLC0415

    from ._backend import _cupy_or_none  # noqa: PLC0415
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
    from ._blas import gil_free_syrk  # noqa: PLC0415
    from .gram import LANES  # noqa: PLC0415

    info["gram_pass"] = {"lanes": LANES, "gil_free_dsyrk": gil_free_syrk()}
    return info
