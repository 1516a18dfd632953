"""What runs on a worker: one task's trials, written into its own region of the cube.

Rules of this module
- ``make_job`` packs everything a task needs into a small picklable dict (no data);
  ``execute_task`` runs its trials, writes its region itself and marks it done, and returns only a
  small status dict: results never travel through the scheduler. A width-path task
  (``Task.path``) runs each trial once over its whole d1 axis (``run_trial_path``) and writes one
  region per width it owns, each marked done after its own data.
- Trial ``i`` of a grid point depends only on ``(TrialSpec, i)`` (counter-based keys): the cube
  is bitwise identical whatever the number of workers, trials per task, task order or number of
  interruptions. BLAS runs single-threaded inside every task (``blas_threads = 1`` by default,
  enforced with threadpoolctl where installed, and by OMP/OPENBLAS/MKL_NUM_THREADS in the
  workers the engine starts), so a worker never splits a reduction differently from another.
- A user-registered activation travels with the task (a worker's registry has only the
  built-ins); a data file travels as its path and SHA-256, checked on the worker before use.
- Test-only hooks, read by the *driver* from its environment (``_test_hooks``) and passed to every
  task (so they work on any cluster): ``RMT_ENGINE_TEST_TASK_DELAY=SECONDS`` sleeps at the start
  of each task; ``RMT_ENGINE_TEST_FAIL="raise:AXIS=VALUE,..."`` makes the tasks of matching grid
  points raise, ``"exit:AXIS=VALUE,..."`` makes them kill their worker process (``os._exit``),
  ``"enospc:AXIS=VALUE,..."`` makes their write to the store fail as on a full disk
  (``OSError(ENOSPC)``, after the trials ran, before anything is written).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time

import numpy as np

from . import store as _store
from ..montecarlo.fields import field_name
from ..montecarlo.spec import TrialSpec
from .plan import Task
from .spec import Study

TEST_DELAY_ENV = "RMT_ENGINE_TEST_TASK_DELAY"
TEST_FAIL_ENV = "RMT_ENGINE_TEST_FAIL"


def _test_hooks() -> dict:
    hooks = {}
    delay = os.environ.get(TEST_DELAY_ENV)
    if delay:
        hooks["delay"] = float(delay)
    fail = os.environ.get(TEST_FAIL_ENV)
    if fail:
        mode, _, cond = fail.partition(":")
        if mode not in ("raise", "exit", "enospc"):
            raise ValueError(f"{TEST_FAIL_ENV} must look like 'raise:AXIS=VALUE,...', 'exit:...' or 'enospc:...', "
                             f"got {fail!r}")
        match = dict(kv.split("=", 1) for kv in cond.split(",") if kv)
        hooks["fail"] = (mode, match)
    return hooks


def _matches(labels: dict, match: dict) -> bool:
    for k, v in match.items():
        x = labels.get(k)
        if isinstance(x, str):
            if x != v.lower():
                return False
        elif x is None or float(x) != float(v):
            return False
    return True


def _blas_limit(n: int):
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        return threadpool_limits(limits=n)
    except ImportError:
        import contextlib  # noqa: PLC0415

        return contextlib.nullcontext()


_DEVICE = {}


def _device_of(backend: str) -> tuple[str, str]:
    if backend not in _DEVICE:
        from ..backend.xp import backend_name, device_description, get_xp  # noqa: PLC0415

        xp = get_xp(backend)
        _DEVICE[backend] = (backend_name(xp), device_description(xp))
    return _DEVICE[backend]


def _shipped_activation(name: str):
    """A user-registered activation travels with the task (workers are other processes: their
    registry only has the built-ins); a built-in travels as its name."""
    from ..theory.activations import activation  # noqa: PLC0415

    act = activation(name)
    return None if act.builtin else act


def _file_sha256(path: str) -> str:
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if key in _SHA_CACHE:
        return _SHA_CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


_SHA_CACHE: dict = {}


def make_job(study: Study, store, task: Task, variables, trials_per_task: int, hooks: dict | None = None,
             data_sha256: str | None = None) -> dict:
    """Everything ``execute_task`` needs (small and picklable: no data)."""
    return {"task": task, "spec": study.spec_kwargs(task.labels), "store": str(store), "variables": variables,
            "trials": study.trials, "trials_per_task": trials_per_task, "save_spectrum": study.save_spectrum,
            "train": study.train.to_dict() if study.train is not None else None,
            "data_sha256": data_sha256 if task.labels["data"] == "file" else None,
            "activation": _shipped_activation(task.labels["activation"]),
            "blas_threads": study.execution.blas_threads, "hooks": hooks or {}}


def _run_trials(spec: TrialSpec, task: Task, save: bool, train) -> list[tuple[list, list, list]]:
    """``[(records, spectra, loss curves)]`` of the task's trials: one item for a per-width task, one
    per width of ``task.path`` for a width path (``run_trial_path``: one pass over W0 per trial). Only
    the widths the task writes (``task.writes``) keep their records and train: a done width below
    them is streamed through (the path needs its rows), never trained again."""
    from dataclasses import replace  # noqa: PLC0415

    from ..montecarlo.trial import run_trial, run_trial_path  # noqa: PLC0415

    if task.path:
        specs = [replace(spec, d1=int(lab["d1"]), w2=float(lab["w2"])) for _, lab in task.path]
    else:
        specs = [spec]
    out = [([], [], []) for _ in specs]
    keep = set(task.writes) if task.path else {0}
    cache: dict = {}
    for i in range(task.start, task.stop):
        if task.path:
            items = run_trial_path(spec, i, [s.d1 for s in specs], w2s=[s.w2 for s in specs], cache=cache,
                                   spectrum=save)
        else:
            items = [run_trial(spec, i, spectrum=save, cache=cache)]
        for j, (sp, item, (records, eigs, curves)) in enumerate(zip(specs, items, out)):
            if j not in keep:
                continue
            rec = item
            if save:
                rec, eig = item
                eigs.append(np.asarray(eig, dtype=np.float64))
            if train is not None:
                from ..montecarlo.train import add_training, curve_on_grid  # noqa: PLC0415

                rec, its, losses = add_training(sp, i, rec, train, cache)
                curves.append(curve_on_grid(train, its, losses))
            records.append(rec)
    return out


def _region_values(variables, n: int, block: int, records: list, eigs: list, curves: list) -> dict:
    """The arrays of one region (one grid point, one trial block) from its trials' records."""
    values = {}
    for var in variables:
        if var.base in ("done", _store.CHECK_NAME):
            continue  # written by write_task itself, after the data
        if var.base == "spectrum":
            if var.n == n:
                values[var.name] = np.stack(eigs)
            continue
        if var.base == "gd_loss":
            values[var.name] = np.stack(curves)
            continue
        if var.per_point and block != 0:
            continue  # exactly one writer per chunk: the task of block 0
        keys = [field_name(var.base, t) for t in var.t_values] if var.t_values else [var.base]
        rows = records[:1] if var.per_point else records
        arr = np.array([[float(r[k]) for k in keys] for r in rows], dtype=np.float64)
        if var.per_point:
            arr = arr[0]
        if not var.per_t:
            arr = arr[..., 0]
        values[var.name] = arr
    return values


def execute_task(job: dict) -> dict:
    """Run one task on a worker: its trials, then write its region and mark it done.

    Returns a small status dict; the data go to the store, never through the scheduler.
    """
    task: Task = job["task"]
    hooks = job.get("hooks", {})
    if hooks.get("delay"):
        time.sleep(hooks["delay"])
    if "fail" in hooks:
        mode, match = hooks["fail"]
        if _matches(task.labels, match):
            if mode == "exit":
                os._exit(13)
            if mode == "raise":
                raise RuntimeError(f"{TEST_FAIL_ENV}: injected failure")
    t0 = time.perf_counter()
    if job.get("activation") is not None:
        from ..theory.activations import _REGISTRY  # noqa: PLC0415

        _REGISTRY[job["activation"].name] = job["activation"]  # the driver's registration, also over a built-in name
    if job.get("data_sha256"):
        got = _file_sha256(job["spec"]["data_path"])
        if got != job["data_sha256"]:
            raise RuntimeError(f"the data file {job['spec']['data_path']} changed since the study was defined "
                               f"(SHA-256 {got[:12]} != {job['data_sha256'][:12]}): refusing to mix two data sets "
                               "in one cube")
    spec = TrialSpec(**job["spec"])
    save = job["save_spectrum"]
    train = None
    if job.get("train") is not None:
        from ..montecarlo.train import TrainSpec  # noqa: PLC0415

        train = TrainSpec.from_dict(job["train"])
    with _blas_limit(job["blas_threads"]):
        outputs = _run_trials(spec, task, save, train)
    regions = [(task.point, outputs[0])] if not task.path else [(task.path[i][0], outputs[i]) for i in task.writes]
    if "fail" in hooks and hooks["fail"][0] == "enospc" and _matches(task.labels, hooks["fail"][1]):
        import errno  # noqa: PLC0415

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), job["store"])
    for point, (records, eigs, curves) in regions:
        values = _region_values(job["variables"], spec.n, task.block, records, eigs, curves)
        _store.write_task(job["store"], job["variables"], point, task.block, job["trials"],
                          job["trials_per_task"], values)
    backend, device = _device_of(spec.backend)
    return {"point": task.point, "block": task.block, "trials": (task.stop - task.start) * len(regions),
            "regions": len(regions),
            "seconds": time.perf_counter() - t0, "host": socket.gethostname(), "pid": os.getpid(),
            "backend": backend, "device": device}
