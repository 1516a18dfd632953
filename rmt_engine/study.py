"""Studies: a grid of ``TrialSpec`` parameters times a number of trials, run on Dask into one cube.

Rules of this module
- A study is defined by a TOML file (``Study.from_toml``; stdlib ``tomllib``, nothing is
  evaluated) or by ``Study(...)`` in Python. Everything is validated -- unknown keys, types,
  every ``TrialSpec`` of the grid, data files, the store path -- *before* anything is created;
  errors are ``StudySpecError`` naming the key and, for files, the line.
- The *config hash* is the SHA-256 of the canonical JSON of the scientific definition (grid, t,
  trials, seed, dtype, block_rows, deltas, C, chi_max, backend, save_spectrum, the data file's
  SHA-256): comments, whitespace, key order, ``name``/``description`` and the ``[execution]`` /
  ``[cluster]`` tables do not change it, because they do not change a single number of the cube.
- One task = one trial block of one grid point = one chunk of every variable it writes (see
  ``store``). Tasks write their region themselves and return only a small status dict; results
  never travel through the scheduler. Dask is the only scheduler.
- Trial ``i`` of a grid point depends only on ``(TrialSpec, i)`` (counter-based keys): the cube
  is bitwise identical whatever the number of workers, trials per task, task order or number of
  interruptions. BLAS runs single-threaded inside every task (``blas_threads = 1`` by default,
  enforced with threadpoolctl where installed, and by OMP/OPENBLAS/MKL_NUM_THREADS in the
  workers the engine starts), so a worker never splits a reduction differently from another.
- Test-only hooks, read by the *driver* from its environment and passed to every task (so they
  work on any cluster): ``RMT_ENGINE_TEST_TASK_DELAY=SECONDS`` sleeps at the start of each task;
  ``RMT_ENGINE_TEST_FAIL="raise:AXIS=VALUE,..."`` makes the tasks of matching grid points raise,
  ``"exit:AXIS=VALUE,..."`` makes them kill their worker process (``os._exit``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np

from . import store as _store
from ._version import __version__
from .fields import FIELDS, field_name
from .provenance import _now, blas_description, engine_git_commit, library_versions
from .spec import DTYPES, MAX_T, TRIAL_SPEC_DEFAULTS, TrialSpec
from .store import CASE_DIM, GRID_AXES

REQUIRED_AXES = ("activation", "n", "d0", "d1")
AXIS_DEFAULTS = {a: (TRIAL_SPEC_DEFAULTS[a],) for a in ("data", "d2", "w1", "w2")}
CLUSTER_KINDS = ("local", "slurm", "cuda")
DEFAULT_TRIALS_PER_TASK = 10
TOP_KEYS = ("name", "description", "study", "grid", "train", "execution", "cluster")
#: [study] keys: name -> (kind, default). kinds: see ``_check_value``.
STUDY_KEYS = {
    "trials": ("posint", None),
    "seed": ("nonnegint", None),
    "t": ("t_list", TRIAL_SPEC_DEFAULTS["t"]),
    "dtype": ("str", TRIAL_SPEC_DEFAULTS["dtype"]),
    "block_rows": ("posint", TRIAL_SPEC_DEFAULTS["block_rows"]),
    "save_spectrum": ("bool", False),
    "allow_d1_below_n": ("bool", False),
    "data_path": ("str", TRIAL_SPEC_DEFAULTS["data_path"]),
    "bound_delta1": ("float", TRIAL_SPEC_DEFAULTS["bound_delta1"]),
    "bound_delta2": ("float", TRIAL_SPEC_DEFAULTS["bound_delta2"]),
    "C": ("float", TRIAL_SPEC_DEFAULTS["C"]),
    "chi_max": ("float", TRIAL_SPEC_DEFAULTS["chi_max"]),
    "backend": ("str", TRIAL_SPEC_DEFAULTS["backend"]),
    "eq19_scale": ("float", 1.0),
}
AXIS_KINDS = {"activation": "str", "data": "str", "n": "posint", "d0": "posint", "d1": "posint",
              "d2": "posint", "w1": "float", "w2": "float"}
EXECUTION_KEYS = {
    "cluster": ("str", "local"),
    "workers": ("posint", None),
    "trials_per_task": ("posint", None),
    "blas_threads": ("posint", 1),
    "scheduler": ("str", None),
    "scheduler_file": ("str", None),
    "max_trial_memory_gb": ("float", None),
    "max_cpu_hours": ("float", None),
    "max_grid_points": ("posint", None),
    "max_trials": ("posint", None),
}
#: [cluster.slurm] keys that put shell commands (or a program) into the submitted job script: a
#: shared study file must not run commands on the reader's cluster, so they come from a site file
#: (``--slurm-config FILE`` / $RMT_ENGINE_SLURM_CONFIG, a TOML with a [slurm] table) unless the run
#: passes ``--allow-shell-in-study``.
SITE_ONLY_SLURM_KEYS = ("job_script_prologue", "python", "shebang", "job_extra_directives", "worker_extra_args")
#: [cluster.slurm] keys passed to dask_jobqueue.SLURMCluster, plus the engine's own: ``jobs`` (a
#: fixed count) or ``minimum_jobs`` / ``maximum_jobs`` (dask-jobqueue's adaptive mode), and
#: ``join_timeout`` (seconds to wait for the first worker to join).
SLURM_ENGINE_KEYS = ("jobs", "minimum_jobs", "maximum_jobs", "join_timeout")
SLURM_KEYS = {
    "jobs": "posint", "minimum_jobs": "posint", "maximum_jobs": "posint", "join_timeout": "float",
    "queue": "str", "account": "str", "cores": "posint", "processes": "posint",
    "memory": "str", "walltime": "str", "job_extra_directives": "str_list",
    "job_script_prologue": "str_list", "job_directives_skip": "str_list", "local_directory": "str",
    "log_directory": "str", "interface": "str", "name": "str", "python": "str", "shebang": "str",
    "worker_extra_args": "str_list", "job_cpu": "posint", "job_mem": "str", "death_timeout": "float",
    "job_name": "str",
}
#: [study] keys of earlier versions -> their names now (a clear error, never a silent default).
RENAMED_STUDY_KEYS = {"delta1": "bound_delta1", "delta2": "bound_delta2"}
TEST_DELAY_ENV = "RMT_ENGINE_TEST_TASK_DELAY"
#: Without a terminal the progress is a plain line at most this often (seconds; env override for tests).
PROGRESS_INTERVAL_S = 30.0
PROGRESS_INTERVAL_ENV = "RMT_ENGINE_PROGRESS_INTERVAL"
TEST_FAIL_ENV = "RMT_ENGINE_TEST_FAIL"


_ALLOW_SHELL_IN_STUDY = [False]  # set by ``allow_shell_in_study()`` (the CLI's --allow-shell-in-study)


def allow_shell_in_study(allow: bool = True) -> None:
    """Accept the ``SITE_ONLY_SLURM_KEYS`` in study files of this process (they run shell commands)."""
    _ALLOW_SHELL_IN_STUDY[0] = bool(allow)


class StudySpecError(ValueError):
    """A malformed study definition. ``key`` is the dotted TOML key, ``line`` its line if known."""

    def __init__(self, message: str, key: tuple | None = None, source: str | None = None,
                 line: int | None = None):
        self.message, self.key, self.source, self.line = message, key, source, line
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.source or ""
        if self.line:
            where += f":{self.line}" if where else f"line {self.line}"
        key = ".".join(self.key) if self.key else ""
        parts = [p for p in (where, key) if p]
        return (": ".join(parts) + ": " if parts else "") + self.message

    def located(self, source: str | None, lines: dict) -> "StudySpecError":
        line = self.line
        if line is None and self.key:
            k = tuple(self.key)
            while k and line is None:
                line = lines.get(k)
                k = k[:-1]
        return StudySpecError(self.message, self.key, source, line)


# --------------------------------------------------------------------------- value checks


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_num(v) -> bool:
    return (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            and math.isfinite(float(v)))


def _describe(v) -> str:
    return f"{v!r} ({type(v).__name__})"


def _check_value(kind: str, v, key: tuple):
    """Check and normalize one value; raises StudySpecError naming ``key``."""
    if kind == "posint":
        if not _is_int(v) or v < 1:
            raise StudySpecError(f"expected a positive integer, got {_describe(v)}", key)
        return int(v)
    if kind == "nonnegint":
        if not _is_int(v) or v < 0:
            raise StudySpecError(f"expected a non-negative integer, got {_describe(v)}", key)
        return int(v)
    if kind == "float":
        if not _is_num(v):
            raise StudySpecError(f"expected a finite number, got {_describe(v)}", key)
        return float(v)
    if kind == "str":
        if not isinstance(v, str):
            raise StudySpecError(f"expected a string, got {_describe(v)}", key)
        return v
    if kind == "bool":
        if not isinstance(v, (bool, np.bool_)):
            raise StudySpecError(f"expected true or false, got {_describe(v)}", key)
        return bool(v)
    if kind == "t_list":
        vals = [v] if not isinstance(v, (list, tuple)) else list(v)
        if not vals:
            raise StudySpecError('expected a non-empty list of Khatri-Rao orders (integers >= 1 or "auto")', key)
        out = []
        for x in vals:
            if isinstance(x, str) and x.strip().lower() == "auto":
                out.append("auto")
            elif _is_int(x) and 1 <= x <= MAX_T:
                out.append(int(x))
            else:
                raise StudySpecError(f'expected "auto" or an integer Khatri-Rao order in [1, {MAX_T}], '
                                     f"got {_describe(x)}", key)
        if len(set(out)) != len(out):
            raise StudySpecError(f"repeated Khatri-Rao orders: {out}", key)
        return tuple(out)
    if kind in ("posint_list", "str_list"):
        item = kind[:-5]
        vals = [v] if not isinstance(v, (list, tuple)) else list(v)
        if kind == "str_list" and not isinstance(v, (list, tuple)):
            raise StudySpecError(f"expected a list of strings, got {_describe(v)}", key)
        if not vals:
            raise StudySpecError("expected a non-empty list", key)
        return tuple(_check_value(item, x, key) for x in vals)
    raise AssertionError(kind)


def _check_table(d, key: tuple) -> dict:
    if not isinstance(d, dict):
        raise StudySpecError(f"expected a table, got {_describe(d)}", key)
    return d


def _check_unknown(d: dict, allowed, key: tuple, what: str) -> None:
    for k in d:
        if k not in allowed:
            raise StudySpecError(
                f"unknown key {k!r} in {what}; allowed keys: {', '.join(allowed)}", key + (k,))


# --------------------------------------------------------------------------- the study


@dataclass(frozen=True)
class Execution:
    """How to run (never part of the config hash): see the ``[execution]`` table."""

    cluster: str = "local"
    workers: int | None = None
    trials_per_task: int | None = None
    blas_threads: int = 1
    scheduler: str | None = None
    scheduler_file: str | None = None
    max_trial_memory_gb: float | None = None
    max_cpu_hours: float | None = None
    max_grid_points: int | None = None
    max_trials: int | None = None
    slurm: dict = field(default_factory=dict)

    def limits(self) -> dict:
        return {k: getattr(self, k) for k in ("max_trial_memory_gb", "max_cpu_hours", "max_grid_points", "max_trials")}

    def __post_init__(self):
        for k, (kind, _) in EXECUTION_KEYS.items():
            v = getattr(self, k)
            if v is not None:
                object.__setattr__(self, k, _check_value(kind, v, ("execution", k)))
        if self.cluster not in CLUSTER_KINDS:
            raise StudySpecError(f"unknown cluster kind {self.cluster!r}; expected one of {CLUSTER_KINDS} "
                                 "(use scheduler / scheduler_file for an existing cluster)", ("execution", "cluster"))
        if self.scheduler and self.scheduler_file:
            raise StudySpecError("give scheduler or scheduler_file, not both", ("execution", "scheduler"))
        slurm = dict(_check_table(self.slurm, ("cluster", "slurm")))
        _check_unknown(slurm, list(SLURM_KEYS), ("cluster", "slurm"), "[cluster.slurm]")
        for k, v in slurm.items():
            if k in SITE_ONLY_SLURM_KEYS and not _ALLOW_SHELL_IN_STUDY[0]:
                raise StudySpecError(
                    f"[cluster.slurm] {k} puts commands into the submitted job script: it belongs in a site file "
                    "(rmt-engine run --slurm-config FILE, a TOML with a [slurm] table), not in a study file that "
                    "others run; pass --allow-shell-in-study to accept it here", ("cluster", "slurm", k))
            slurm[k] = _check_value(SLURM_KEYS[k], v, ("cluster", "slurm", k))
            if SLURM_KEYS[k] == "str_list":
                slurm[k] = list(slurm[k])
        adaptive = [k for k in ("minimum_jobs", "maximum_jobs") if k in slurm]
        if adaptive and "jobs" in slurm:
            raise StudySpecError("[cluster.slurm]: give jobs (a fixed count) or minimum_jobs/maximum_jobs (adaptive), "
                                 "not both", ("cluster", "slurm", adaptive[0]))
        if len(adaptive) == 1:
            raise StudySpecError(f"[cluster.slurm]: {adaptive[0]} needs "
                                 f"{({'minimum_jobs', 'maximum_jobs'} - set(adaptive)).pop()} too (adaptive mode)",
                                 ("cluster", "slurm", adaptive[0]))
        if adaptive and slurm["minimum_jobs"] > slurm["maximum_jobs"]:
            raise StudySpecError(f"[cluster.slurm]: minimum_jobs = {slurm['minimum_jobs']} > maximum_jobs = "
                                 f"{slurm['maximum_jobs']}", ("cluster", "slurm", "minimum_jobs"))
        if "join_timeout" in slurm and not slurm["join_timeout"] > 0:
            raise StudySpecError(f"[cluster.slurm] join_timeout must be > 0 seconds, got {slurm['join_timeout']}",
                                 ("cluster", "slurm", "join_timeout"))
        object.__setattr__(self, "slurm", slurm)


@dataclass(frozen=True)
class Study:
    """A grid of parameters (``grid``: axis -> values, axes of ``GRID_AXES``) times ``trials``.

    ``Study(grid={"activation": ["gelu"], "n": [50], "d0": [8], "d1": [500]}, trials=20, seed=1)``.
    Missing optional axes take ``AXIS_DEFAULTS``. ``execution`` says how to run it.
    """

    grid: dict
    trials: int
    seed: int
    t: tuple = TRIAL_SPEC_DEFAULTS["t"]
    dtype: str = TRIAL_SPEC_DEFAULTS["dtype"]
    block_rows: int | None = TRIAL_SPEC_DEFAULTS["block_rows"]
    save_spectrum: bool = False
    allow_d1_below_n: bool = False
    data_path: str | None = TRIAL_SPEC_DEFAULTS["data_path"]
    bound_delta1: float = TRIAL_SPEC_DEFAULTS["bound_delta1"]
    bound_delta2: float = TRIAL_SPEC_DEFAULTS["bound_delta2"]
    C: float = TRIAL_SPEC_DEFAULTS["C"]
    chi_max: float | None = TRIAL_SPEC_DEFAULTS["chi_max"]
    backend: str = TRIAL_SPEC_DEFAULTS["backend"]
    train: object = None  # a TrainSpec (or its table): every trial also trains by GD (rmt_engine.train)
    eq19_scale: float = 1.0  # the constant of the derived rule w2 = "eq19"
    linked: tuple = ()  # set from grid: the axes of [grid.linked]
    derived: dict = field(default_factory=dict)  # set from grid: axis -> rule
    name: str = "study"
    description: str = ""
    execution: Execution = field(default_factory=Execution)
    toml_text: str | None = field(default=None, compare=False, repr=False)
    source: str | None = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------ construction
    def __post_init__(self):
        if self.trials is None:
            raise StudySpecError("missing required key 'trials' (trials per grid point)", ("study", "trials"))
        if self.seed is None:
            raise StudySpecError("missing required key 'seed' (a non-negative integer; it makes the "
                                 "study reproducible)", ("study", "seed"))
        for k, (kind, _) in STUDY_KEYS.items():
            v = getattr(self, k)
            if v is not None:
                object.__setattr__(self, k, _check_value(kind, v, ("study", k)))
        for k in ("name", "description"):
            _check_value("str", getattr(self, k), (k,))
        if isinstance(self.execution, dict):
            object.__setattr__(self, "execution", _execution_from_dict(self.execution, {}))
        if not isinstance(self.execution, Execution):
            raise StudySpecError(f"execution must be an Execution or a table, got {_describe(self.execution)}",
                                 ("execution",))
        grid, linked, derived = _normalize_grid(self.grid) if not self._normalized() else (
            self.grid, self.linked, self.derived)
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "linked", linked)
        object.__setattr__(self, "derived", derived)
        if not self.eq19_scale > 0:
            raise StudySpecError(f"eq19_scale must be > 0, got {self.eq19_scale!r}", ("study", "eq19_scale"))
        if self.save_spectrum and "n" in linked:
            raise StudySpecError("save_spectrum stores one variable per value of n: n cannot be a linked axis "
                                 "then (link d0 with another axis, or set save_spectrum = false)", ("grid", "linked"))
        if self.train is not None:
            from .train import TrainSpec  # noqa: PLC0415

            if isinstance(self.train, dict):
                try:
                    object.__setattr__(self, "train", TrainSpec.from_dict(self.train))
                except (TypeError, ValueError) as e:
                    m = re.search(r"TrainSpec\.(\w+)", str(e))
                    raise StudySpecError(str(e), ("train",) + ((m.group(1),) if m else ())) from None
            if not isinstance(self.train, TrainSpec):
                raise StudySpecError(f"train must be a [train] table or a TrainSpec, got {_describe(self.train)}",
                                     ("train",))
        if self.dtype not in DTYPES:
            raise StudySpecError(f"unknown dtype {self.dtype!r}; expected one of {DTYPES}", ("study", "dtype"))
        if "file" in self.grid["data"]:
            if not self.data_path:
                raise StudySpecError("grid.data includes 'file': set study.data_path to a .npy/.npz file "
                                     "holding X (d0 x n)", ("study", "data_path"))
            p = Path(self.data_path)
            if not p.is_absolute() and self.source:
                p = Path(self.source).parent / p
            if not p.is_file():
                raise StudySpecError(f"data file {str(p)!r} does not exist", ("study", "data_path"))
            object.__setattr__(self, "data_path", str(p.absolute()))
        elif self.data_path is not None:
            raise StudySpecError("data_path is set but grid.data does not include 'file'", ("study", "data_path"))
        self._check_points()

    def _check_points(self) -> None:
        """Build every TrialSpec of the grid (and load every file/digits data set once)."""
        axes_of_field = {"activation": ("grid", "activation"), "data": ("grid", "data"), "n": ("grid", "n"),
                         "d0": ("grid", "d0"), "d1": ("grid", "d1"), "d2": ("grid", "d2"),
                         "w1": ("grid", "w1"), "w2": ("grid", "w2"), "data_path": ("study", "data_path")}
        seen_data = set()
        for labels in self.points():
            where = ", ".join(f"{a}={labels[a]}" for a in GRID_AXES)
            if labels["d1"] < labels["n"] and self.train is not None:
                raise StudySpecError(
                    f"grid point ({where}) has d1 < n: a study with [train] needs d1 >= n at every grid point "
                    "(mu = 0 there: the Eq. 13 step and the GD theory degenerate)", ("grid", "d1"))
            if labels["d1"] < labels["n"] and not self.allow_d1_below_n:
                raise StudySpecError(
                    f"grid point ({where}) has d1 < n, so sigma_min(phi(W0 X)) = 0 (Lemma 3); "
                    "set allow_d1_below_n = true in [study] to run it anyway", ("grid", "d1"))
            try:
                spec = self.trial_spec(labels)
            except ValueError as e:
                m = re.match(r"TrialSpec\.(\w+)", str(e))
                key = axes_of_field.get(m.group(1), ("study", m.group(1))) if m else ("grid",)
                raise StudySpecError(f"{e} (grid point {where})", key) from None
            dkey = (spec.data, spec.d0, spec.n)
            if spec.data in ("file", "digits") and dkey not in seen_data:
                seen_data.add(dkey)
                from .data import make_data  # noqa: PLC0415

                try:
                    make_data(spec.data, spec.d0, spec.n, spec.seed, path=spec.data_path)
                except (ValueError, OSError, ImportError) as e:
                    key = ("study", "data_path") if spec.data == "file" else ("grid", "data")
                    raise StudySpecError(f"data kind {spec.data!r} at d0={spec.d0}, n={spec.n}: {e}", key) from None

    def _normalized(self) -> bool:
        """True when ``grid`` is already this class's normal form (a copy made by dataclasses.replace)."""
        g = self.grid
        return (isinstance(g, dict) and set(g) == set(GRID_AXES) and all(isinstance(v, tuple) for v in g.values())
                and all(len(g[a]) == len(g[self.linked[0]]) for a in self.linked)
                and all(g[a] == (r,) for a, r in self.derived.items()))

    def _dims(self) -> list:
        """``(dim, values)`` of the cube's grid dimensions, in order (module store: ``CubeAxes``)."""
        out = []
        for a in GRID_AXES:
            if a in self.derived:
                continue
            if a in self.linked:
                if a == self.linked[0]:
                    out.append((CASE_DIM, [dict(zip(self.linked, c)) for c in zip(*(self.grid[x] for x in self.linked))]))
                continue
            out.append((a, list(self.grid[a])))
        return out

    def _derive(self, labels: dict) -> dict:
        if self.derived.get("w2") == "eq19":
            labels["w2"] = self.eq19_scale / (labels["w1"] * math.sqrt(labels["d0"] * labels["d1"]))
        return labels

    def cube_axes(self):
        """The cube's grid dimensions and coordinates (``store.CubeAxes``)."""
        dims = self._dims()
        names = tuple(d for d, _ in dims)
        sizes = tuple(len(v) for _, v in dims)
        coords = {}
        for d, vals in dims:
            if d == CASE_DIM:
                coords[CASE_DIM] = ((CASE_DIM,), np.arange(len(vals), dtype=np.int64))
                for a in self.linked:
                    coords[a] = ((CASE_DIM,), _store._coord_values(a, [v[a] for v in vals]))
            else:
                coords[d] = ((d,), _store._coord_values(d, vals))
        for a in self.derived:  # a coordinate over every grid dimension (no dimension of its own)
            vals = np.array([p[a] for p in self.points()], dtype=np.float64).reshape(sizes)
            coords[a] = (names, vals)
        return _store.CubeAxes(names, sizes, coords)

    def bound_warnings(self) -> list[str]:
        """One line per requested t that gives no Eq. 58/67 lower bound at some grid points (with why)."""
        from . import orders  # noqa: PLC0415

        out = []
        for t in self.t:
            bad = {}
            for labels in self.points():
                key = (labels["activation"], labels["w1"], labels["n"], labels["d0"])
                if key in bad:
                    continue
                if t == "auto":
                    code = orders.DEFINED if orders.informative_t(*key) is not None else orders.NO_ORDER
                else:
                    code = orders.lower_undefined(*key, t)
                if code:
                    bad[key] = code
            if bad:
                pts = "; ".join(f"activation={a}, w1={w1:g}, n={n}, d0={d0}: {orders.describe(c)}"
                                for (a, w1, n, d0), c in bad.items())
                out.append(f"t = {t} gives no lower bound at {len(bad)} grid point(s): {pts}")
        return out

    @classmethod
    def from_toml(cls, path) -> "Study":
        """Read and validate a study TOML file (errors name the key and the line)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise StudySpecError(f"cannot read the study file: {e.strerror or e}", source=str(path)) from None
        except UnicodeDecodeError as e:
            raise StudySpecError(f"the study file is not UTF-8 text (TOML requires UTF-8): byte {e.start}: {e.reason}",
                                 source=str(path)) from None
        return cls.from_toml_text(text, source=str(path))

    @classmethod
    def from_toml_text(cls, text: str, source: str | None = None) -> "Study":
        try:
            raw = tomllib.loads(text)
        except RecursionError:
            raise StudySpecError("not valid TOML for a study: nested too deeply", source=source) from None
        except tomllib.TOMLDecodeError as e:
            m = re.search(r"line (\d+)", str(e))
            raise StudySpecError(f"not valid TOML: {e}", source=source, line=int(m.group(1)) if m else None) from None
        lines = _key_lines(text)
        try:
            return cls.from_dict(raw, toml_text=text, source=source)
        except StudySpecError as e:
            raise e.located(source, lines) from None

    @classmethod
    def from_dict(cls, raw: dict, *, toml_text: str | None = None, source: str | None = None) -> "Study":
        """A study from the TOML structure (top-level name/description, [study], [grid], ...)."""
        _check_unknown(raw, TOP_KEYS, (), "the top level")
        study = dict(_check_table(raw.get("study", {}), ("study",)))
        for old, new in RENAMED_STUDY_KEYS.items():
            if old in study:
                raise StudySpecError(f"[study] {old} was renamed {new} (the deviation at which the Eq. 67 bounds "
                                     f"are reported; {old} is the measured deviation in the cube): write "
                                     f"{new} = {study[old]!r}", ("study", old))
        _check_unknown(study, list(STUDY_KEYS), ("study",), "[study]")
        if "grid" not in raw:
            raise StudySpecError("missing the [grid] table (activation, n, d0, d1 lists at least)", ("grid",))
        grid = _check_table(raw["grid"], ("grid",))
        execution = _check_table(raw.get("execution", {}), ("execution",))
        cluster = _check_table(raw.get("cluster", {}), ("cluster",))
        _check_unknown(cluster, ["slurm"], ("cluster",), "[cluster]")
        kwargs = {k: study[k] for k in STUDY_KEYS if k in study}
        kwargs.setdefault("trials", None)
        kwargs.setdefault("seed", None)
        if "train" in raw:
            kwargs["train"] = dict(_check_table(raw["train"], ("train",)))
        return cls(grid=grid, name=raw.get("name", "study"), description=raw.get("description", ""),
                   execution=_execution_from_dict(execution, cluster), toml_text=toml_text, source=source,
                   **kwargs)

    # ------------------------------------------------------------------ derived
    def points(self):
        """Every grid point as a dict axis -> value (all of GRID_AXES), in cube order (C order over the
        cube's dims: ``case`` for linked axes; derived axes computed)."""
        dims = self._dims()
        for combo in product(*(vals for _, vals in dims)):
            labels = {}
            for (d, _), v in zip(dims, combo):
                if d == CASE_DIM:
                    labels.update(v)
                else:
                    labels[d] = v
            labels = self._derive(labels)
            yield {a: labels[a] for a in GRID_AXES}

    def point_indices(self):
        yield from product(*(range(len(v)) for _, v in self._dims()))

    @property
    def n_points(self) -> int:
        return math.prod(len(v) for _, v in self._dims())

    def trial_spec(self, labels: dict) -> TrialSpec:
        return TrialSpec(**self.spec_kwargs(labels))

    def spec_kwargs(self, labels: dict) -> dict:
        return dict(
            activation=labels["activation"], n=int(labels["n"]), d0=int(labels["d0"]), d1=int(labels["d1"]),
            d2=int(labels["d2"]), w1=float(labels["w1"]), w2=float(labels["w2"]), t=tuple(self.t),
            data=labels["data"], data_path=self.data_path if labels["data"] == "file" else None,
            seed=self.seed, dtype=self.dtype, block_rows=self.block_rows, bound_delta1=self.bound_delta1,
            bound_delta2=self.bound_delta2, C=self.C, chi_max=self.chi_max, backend=self.backend)

    def canonical(self) -> dict:
        """The scientific definition (what the config hash covers)."""
        data_sha = None
        if self.data_path:
            data_sha = hashlib.sha256(Path(self.data_path).read_bytes()).hexdigest()
        return {
            "grid": {a: list(self.grid[a]) for a in GRID_AXES}, "t": list(self.t), "trials": self.trials,
            "seed": self.seed, "dtype": self.dtype, "block_rows": self.block_rows,
            "save_spectrum": self.save_spectrum, "allow_d1_below_n": self.allow_d1_below_n,
            "bound_delta1": self.bound_delta1, "bound_delta2": self.bound_delta2, "C": self.C, "chi_max": self.chi_max,
            "backend": self.backend, "data_file_sha256": data_sha,
        } | ({"train": self.train.to_dict()} if self.train is not None else {}) | (
            {"linked": list(self.linked)} if self.linked else {}) | (
            {"derived": dict(self.derived), "eq19_scale": self.eq19_scale} if self.derived else {})

    def config_hash(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def trials_per_task(self) -> int:
        tpt = self.execution.trials_per_task or DEFAULT_TRIALS_PER_TASK
        return min(tpt, self.trials)

    def to_toml(self) -> str:
        """A TOML text equivalent to this study (used as provenance for studies built in Python)."""
        out = [f"name = {_toml(self.name)}"]
        if self.description:
            out.append(f"description = {_toml(self.description)}")
        out += ["", "[study]"]
        for k, (_, default) in STUDY_KEYS.items():
            v = getattr(self, k)
            if v is not None and (k in ("trials", "seed", "t") or v != default):
                out.append(f"{k} = {_toml(list(v) if isinstance(v, tuple) else v)}")
        out += ["", "[grid]"] + [f"{a} = {_toml(self.derived[a] if a in self.derived else list(self.grid[a]))}"
                                 for a in GRID_AXES if a not in self.linked]
        if self.linked:
            out += ["", "[grid.linked]"] + [f"{a} = {_toml(list(self.grid[a]))}" for a in self.linked]
        if self.train is not None:
            out += ["", "[train]"] + [f"{k} = {_toml(v)}" for k, v in self.train.to_dict().items() if v is not None]
        ex = self.execution
        out += ["", "[execution]", f"cluster = {_toml(ex.cluster)}"]
        for k in ("workers", "trials_per_task", "blas_threads", "scheduler", "scheduler_file"):
            if getattr(ex, k) is not None:
                out.append(f"{k} = {_toml(getattr(ex, k))}")
        if ex.slurm:
            out += ["", "[cluster.slurm]"] + [f"{k} = {_toml(v)}" for k, v in ex.slurm.items()]
        return "\n".join(out) + "\n"

    # ------------------------------------------------------------------ running
    def check_store(self, store, *, resume: bool = False) -> dict | None:
        """Validate ``store`` for this study without writing; return its attrs if it exists."""
        return check_store(self, store, resume=resume)

    def resource_problems(self) -> list[str]:
        """The resource limits this study exceeds (``rmt_engine.resources``; empty when none)."""
        from .resources import check_limits  # noqa: PLC0415

        return check_limits(self, self.execution.limits())

    def run(self, store, client=None, *, resume: bool = False, progress: bool = True, workers: int | None = None,
            cluster: str | None = None, scheduler: str | None = None, scheduler_file: str | None = None,
            echo=None, force: bool = False) -> "RunSummary":
        """Compute every region of ``store`` not yet done and return a ``RunSummary``.

        ``client``: an existing ``distributed.Client`` (else a cluster is started from
        ``execution`` and the overrides ``workers``/``cluster``/``scheduler``/``scheduler_file``
        and closed at the end). A store of the same config hash is resumed; ``resume=True``
        additionally requires the store to exist. A store of another study is refused.
        """
        return run_study(self, store, client=client, resume=resume, progress=progress, workers=workers,
                         cluster=cluster, scheduler=scheduler, scheduler_file=scheduler_file, echo=echo,
                         force=force)


def _execution_from_dict(execution: dict, cluster: dict) -> Execution:
    execution = dict(execution)
    _check_unknown(execution, list(EXECUTION_KEYS), ("execution",), "[execution]")
    slurm = cluster.get("slurm", {})
    return Execution(slurm=slurm, **execution)


#: Named derived rules for a grid axis (never evaluated code): axis -> rule -> description.
DERIVED_RULES = {"w2": {"eq19": "w2 = eq19_scale / (w1 sqrt(d0 d1)): the Eq. 19 scale w1 w2 sqrt(d0 d1) held fixed"}}


def _normalize_grid(grid) -> tuple[dict, tuple, dict]:
    """``(axis -> values, linked axis names, derived axis -> rule)`` of a [grid] table.

    ``[grid.linked]``: equal-length lists of axes that vary together along one cube dimension
    ``case``; a string value such as ``w2 = "eq19"`` names a derived rule (``DERIVED_RULES``).
    """
    grid = dict(_check_table(grid, ("grid",)))
    linked_tab = grid.pop("linked", None)
    _check_unknown(grid, GRID_AXES + ("linked",), ("grid",), "[grid]")
    linked: dict = {}
    if linked_tab is not None:
        linked_tab = _check_table(linked_tab, ("grid", "linked"))
        _check_unknown(linked_tab, GRID_AXES, ("grid", "linked"), "[grid.linked]")
        if len(linked_tab) < 2:
            raise StudySpecError("[grid.linked] ties two or more axes together (e.g. d0 and n); with one axis, "
                                 "put it in [grid]", ("grid", "linked"))
        lengths = {}
        for a, v in linked_tab.items():
            if a in grid:
                raise StudySpecError(f"axis {a!r} is both linked ([grid.linked]) and plain ([grid]): give it once",
                                     ("grid", "linked", a))
            vals = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
            norm = _axis_values(a, vals, ("grid", "linked", a), allow_repeats=True)
            linked[a] = norm
            lengths[a] = len(norm)
        if len(set(lengths.values())) != 1:
            raise StudySpecError("[grid.linked] lists must have equal lengths, got "
                                 + ", ".join(f"{a}: {k}" for a, k in lengths.items()), ("grid", "linked"))
        cases = list(zip(*(linked[a] for a in linked)))
        if len(set(cases)) != len(cases):
            raise StudySpecError("[grid.linked] repeats a case (the same values of every linked axis)",
                                 ("grid", "linked"))
    out, derived = {}, {}
    for a in GRID_AXES:
        if a in linked:
            out[a] = linked[a]
            continue
        if a not in grid:
            if a in REQUIRED_AXES:
                raise StudySpecError(f"missing required grid axis {a!r} (a list of values)", ("grid", a))
            out[a] = AXIS_DEFAULTS[a]
            continue
        v = grid[a]
        if isinstance(v, str) and AXIS_KINDS[a] != "str":
            rules = DERIVED_RULES.get(a, {})
            if v not in rules:
                known = "; ".join(f"{ax} = \"{r}\" ({d})" for ax, rs in DERIVED_RULES.items() for r, d in rs.items())
                raise StudySpecError(f"unknown rule {v!r} for axis {a!r}; the named rules are: {known}", ("grid", a))
            derived[a] = v
            out[a] = (v,)
            continue
        vals = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
        out[a] = _axis_values(a, vals, ("grid", a))
    return out, tuple(a for a in GRID_AXES if a in linked), derived


def _axis_values(a: str, vals: list, key: tuple, allow_repeats: bool = False) -> tuple:
    """Checked, normalized values of grid axis ``a``."""
    if not vals:
        raise StudySpecError("empty grid axis: give at least one value", key)
    kind = AXIS_KINDS[a]
    norm = [_check_value(kind, x, key) for x in vals]
    if kind == "str":
        norm = [x.lower() for x in norm]
    if kind == "float" and any(x <= 0 for x in norm):
        raise StudySpecError(f"every value must be > 0, got {norm}", key)
    if len(set(norm)) != len(norm) and not allow_repeats:
        raise StudySpecError(f"repeated values in the grid axis: {norm}", key)
    if a == "activation":
        from .activations import available_activations  # noqa: PLC0415

        names = available_activations()
        for x in norm:
            if x not in names:
                raise StudySpecError(f"unknown activation {x!r}; available: {', '.join(names)}", key)
    if a == "data":
        from .data import DATA_KINDS  # noqa: PLC0415

        for x in norm:
            if x not in DATA_KINDS:
                raise StudySpecError(f"unknown data kind {x!r}; expected one of {DATA_KINDS}", key)
    return tuple(norm)


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    raise TypeError(type(v))


_HEADER = re.compile(r"^\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(r"^((?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*'))*)\s*=")


def _split_key(k: str) -> tuple:
    return tuple(p.strip().strip("\"'") for p in re.findall(r"\"[^\"]*\"|'[^']*'|[^.]+", k))


def _key_lines(text: str) -> dict:
    """Best-effort map from dotted key paths to the line that defines them (for messages)."""
    lines: dict = {}
    table: tuple = ()
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = _HEADER.match(s)
        if m:
            table = _split_key(m.group(1))
            lines.setdefault(table, no)
            continue
        m = _ASSIGN.match(s)
        if m:
            lines.setdefault(table + _split_key(m.group(1)), no)
    return lines


# --------------------------------------------------------------------------- store checks


def _check_parent_writable(store: Path) -> None:
    parent = store.parent
    if not parent.exists():
        raise _store.StoreError(f"cannot create the store {store}: its directory {parent} does not exist")
    if not parent.is_dir():
        raise _store.StoreError(f"cannot create the store {store}: {parent} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".rmt_engine_probe_", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _store.StoreError(f"cannot create the store {store}: directory {parent} is not writable "
                                f"({e.strerror or e})") from None


def _diff(a, b, prefix="") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, prefix + k + ".")
        elif va != vb:
            out.append(f"{prefix}{k}: store has {va!r}, study has {vb!r}")
    return out


def check_store(study: Study, store, *, resume: bool = False) -> dict | None:
    """Raise ``StoreError`` if ``study`` cannot write ``store``; return the store's attrs if it exists."""
    store = Path(store).absolute()
    if not store.exists():
        if resume:
            raise _store.StoreError(f"--resume: there is no store at {store} to resume")
        _check_parent_writable(store)
        return None
    if not store.is_dir():
        raise _store.StoreError(f"{store} exists and is not a zarr store (a file); choose another --store")
    attrs = _store.store_attrs(store)
    if attrs is None:
        if store.is_dir() and not any(store.iterdir()):
            raise _store.StoreError(f"{store} is an empty directory, not a result store; remove it or choose "
                                    "another --store")
        raise _store.StoreError(f"{store} exists and is not a zarr store; choose another --store")
    _store.check_version(attrs, store)
    if attrs.get("config_hash") != study.config_hash():
        try:
            diffs = _diff(json.loads(attrs.get("config_canonical", "{}")), study.canonical())
        except ValueError:
            diffs = []
        detail = ("; differences: " + "; ".join(diffs)) if diffs else ""
        raise _store.StoreError(
            f"{store} holds another study (config hash {str(attrs.get('config_hash'))[:12]}, this study "
            f"{study.config_hash()[:12]}){detail}. Use a new --store, or the study that wrote it.")
    return attrs


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    point: tuple  # indices along the cube's grid dims (Study.cube_axes().dims)
    labels: dict  # axis -> value
    block: int
    start: int
    stop: int

    def describe(self) -> str:
        pt = ", ".join(f"{a}={self.labels[a]}" for a in GRID_AXES)
        return f"({pt}) trials {self.start}-{self.stop - 1}"


@dataclass
class TaskFailure:
    task: Task
    error: str
    deterministic: bool = False  # raised by the computation itself: a rerun repeats it

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

    @property
    def regions_failed(self) -> int:
        return len(self.failures)

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
                "devices": self.devices}


def plan_tasks(study: Study, trials_per_task: int, done: np.ndarray | None = None) -> tuple[list[Task], int]:
    """The tasks whose region is not done (all if ``done`` is None) and the number of regions."""
    nb = _store.n_blocks(study.trials, trials_per_task)
    tasks = []
    total = 0
    for point, labels in zip(study.point_indices(), study.points()):
        for b in range(nb):
            total += 1
            if done is not None and done[point + (b,)]:
                continue
            a, e = _store.block_range(b, study.trials, trials_per_task)
            tasks.append(Task(point, labels, b, a, e))
    return tasks, total


def _test_hooks() -> dict:
    hooks = {}
    delay = os.environ.get(TEST_DELAY_ENV)
    if delay:
        hooks["delay"] = float(delay)
    fail = os.environ.get(TEST_FAIL_ENV)
    if fail:
        mode, _, cond = fail.partition(":")
        if mode not in ("raise", "exit"):
            raise ValueError(f"{TEST_FAIL_ENV} must look like 'raise:AXIS=VALUE,...' or 'exit:...', got {fail!r}")
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
        from ._backend import backend_name, device_description, get_xp  # noqa: PLC0415

        xp = get_xp(backend)
        _DEVICE[backend] = (backend_name(xp), device_description(xp))
    return _DEVICE[backend]


def _shipped_activation(name: str):
    """A user-registered activation travels with the task (workers are other processes: their
    registry only has the built-ins); a built-in travels as its name."""
    from .activations import activation  # noqa: PLC0415

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
            raise RuntimeError(f"{TEST_FAIL_ENV}: injected failure")
    from .trial import run_trial  # noqa: PLC0415

    t0 = time.perf_counter()
    if job.get("activation") is not None:
        from .activations import _REGISTRY  # noqa: PLC0415

        _REGISTRY[job["activation"].name] = job["activation"]  # the driver's registration, also over a built-in name
    if job.get("data_sha256"):
        got = _file_sha256(job["spec"]["data_path"])
        if got != job["data_sha256"]:
            raise RuntimeError(f"the data file {job['spec']['data_path']} changed since the study was defined "
                               f"(SHA-256 {got[:12]} != {job['data_sha256'][:12]}): refusing to mix two data sets "
                               "in one cube")
    spec = TrialSpec(**job["spec"])
    save = job["save_spectrum"]
    records, eigs, curves = [], [], []
    cache: dict = {}
    train = None
    if job.get("train") is not None:
        from .train import TrainSpec, add_training, curve_on_grid  # noqa: PLC0415

        train = TrainSpec.from_dict(job["train"])
    with _blas_limit(job["blas_threads"]):
        for i in range(task.start, task.stop):
            out = run_trial(spec, i, spectrum=save, cache=cache)
            if save:
                rec, eig = out
                eigs.append(np.asarray(eig, dtype=np.float64))
            else:
                rec = out
            if train is not None:
                rec, its, losses = add_training(spec, i, rec, train, cache)
                curves.append(curve_on_grid(train, its, losses))
            records.append(rec)
    values = {}
    for var in job["variables"]:
        if var.base == "done":
            continue
        if var.base == "spectrum":
            if var.n == spec.n:
                values[var.name] = np.stack(eigs)
            continue
        if var.base == "gd_loss":
            values[var.name] = np.stack(curves)
            continue
        if var.per_point and task.block != 0:
            continue  # exactly one writer per chunk: the task of block 0
        keys = [field_name(var.base, t) for t in var.t_values] if var.t_values else [var.base]
        rows = records[:1] if var.per_point else records
        arr = np.array([[float(r[k]) for k in keys] for r in rows], dtype=np.float64)
        if var.per_point:
            arr = arr[0]
        if not var.per_t:
            arr = arr[..., 0]
        values[var.name] = arr
    _store.write_task(job["store"], job["variables"], task.point, task.block, job["trials"],
                      job["trials_per_task"], values)
    backend, device = _device_of(spec.backend)
    return {"point": task.point, "block": task.block, "trials": task.stop - task.start,
            "seconds": time.perf_counter() - t0, "host": socket.gethostname(), "pid": os.getpid(),
            "backend": backend, "device": device}


# --------------------------------------------------------------------------- driver


def provenance(study: Study, trials_per_task: int) -> dict:
    return {
        "rmt_engine_store_version": _store.STORE_VERSION,
        "rmt_engine_version": __version__,
        "study_name": study.name,
        "study_description": study.description,
        "study_toml": study.toml_text if study.toml_text is not None else study.to_toml(),
        "study_source": str(Path(study.source).absolute()) if study.source else "",
        "config_hash": study.config_hash(),
        "config_canonical": json.dumps(study.canonical(), sort_keys=True),
        "seed": study.seed,
        "seed_entropy": str(np.random.SeedSequence(study.seed).entropy),
        "trials": study.trials,
        "trials_per_task": trials_per_task,
        "t": list(study.t),
        "train": study.train.to_dict() if study.train is not None else None,
        "layout": "dims = all grid axes (also length-1) + trial [+ t]; per-point fields without trial; "
                  "spectrum_n{n} per n; done = grid x trial_block",
        "versions": library_versions(),
        "blas": blas_description(),
        "engine_git_commit": engine_git_commit(),
        "backend": study.backend,
        "device": "",
        "started": _now(),
        "finished": "",
        "complete": False,
        "runs": [],
    }


def create_store(study: Study, store, trials_per_task: int | None = None) -> dict:
    """Create the empty cube of ``study`` at ``store`` (metadata, coordinates, all-False ``done``).

    Used by ``run`` before any task starts; returns the root attributes.
    """
    tpt = trials_per_task or study.trials_per_task()
    _store.create_template(store, study.cube_axes(), study.t, study.trials, tpt, study.save_spectrum,
                           provenance(study, tpt), train=study.train)
    return _store.store_attrs(store)


def run_study(study: Study, store, *, client=None, resume: bool = False, progress: bool = True,
              workers: int | None = None, cluster: str | None = None, scheduler: str | None = None,
              scheduler_file: str | None = None, echo=None, force: bool = False) -> RunSummary:
    """See ``Study.run``."""
    from . import cluster as _cluster  # noqa: PLC0415

    from .trial import run_trial  # noqa: F401, PLC0415 - a broken install fails here, before any store exists

    echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
    store = Path(store).absolute()
    if store.is_symlink() or any(p.is_symlink() for p in store.parents):
        store = store.resolve()  # one lock per real store, whatever path reaches it
    problems = study.resource_problems()
    if problems and not force:
        raise StudySpecError("refusing to run: " + "; ".join(problems) + ". Raise the limit in [execution] or "
                             "pass --force (rmt_engine.resources explains the estimate)", ("execution",))
    check_store(study, store, resume=resume)  # before the lock: never create anything for a bad store
    hooks = _test_hooks()
    with _store.StoreLock(store, on_message=echo):
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
            attrs = create_store(study, store, tpt)
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
        _store.update_attrs(store, runs=runs)
        done = _store.read_done(store)
        tasks, total = plan_tasks(study, tpt, done)
        variables = _store.layout(study.cube_axes(), study.t, study.trials, tpt, study.save_spectrum, study.train)
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
                                        scheduler=scheduler, scheduler_file=scheduler_file)
                cl = conn.__enter__()
            except BaseException:
                if created and not _store.has_computed_data(store):
                    shutil.rmtree(store, ignore_errors=True)  # nothing computed: leave no orphan store behind
                raise
            try:
                n_workers = len(cl.scheduler_info(n_workers=-1).get("workers", {})) if hasattr(cl, "scheduler_info") else None
                results, failures = _submit_and_wait(cl, study, store, tasks, variables, tpt, hooks, progress, echo)
            except BaseException as e:
                conn.__exit__(type(e), e, e.__traceback__)
                raise
            conn.__exit__(None, None, None)
        wall = time.perf_counter() - t0
        devices = sorted({f"{r['backend']}: {r['device']} @ {r['host']}" for r in results})
        done_now = _store.read_done(store)
        # a task whose result was lost after it marked its region done (e.g. its worker died
        # later and the recomputation failed) did its job: only not-done regions are failures
        failures = [f for f in failures if not done_now[f.task.point + (f.task.block,)]]
        complete = bool(done_now.all())
        runs[-1] = {"started": run_started, "finished": _now(), "status": "finished", "driver": driver,
                    "workers": n_workers, "regions_computed": len(results), "regions_failed": len(failures),
                    "regions_skipped": total - len(tasks), "wall_s": round(wall, 3), "devices": devices}
        upd = {"runs": runs, "complete": complete}
        if devices:
            prev = [d for d in str(attrs.get("device", "")).split("; ") if d]
            upd["device"] = "; ".join(sorted(set(prev) | set(devices)))
            upd["backend"] = ", ".join(sorted({r["backend"] for r in results} |
                                              set(filter(None, str(attrs.get("backend", "")).split(", ")))))
        if complete:
            upd["finished"] = _now()
        _store.update_attrs(store, **upd)
        if complete:
            _store.consolidate(store)  # xarray.open_zarr reads it without the "no consolidated metadata" warning
    return RunSummary(str(store), total, len(results), total - len(tasks), failures,
                      sum(r["trials"] for r in results), wall, n_workers, devices)


def _submit_and_wait(client, study, store, tasks, variables, tpt, hooks, progress, echo=None):
    from distributed import as_completed  # noqa: PLC0415

    token = uuid.uuid4().hex[:8]
    sha = study.canonical()["data_file_sha256"]
    jobs = [make_job(study, store, task, variables, tpt, hooks, sha) for task in tasks]
    keys = [f"rmt-task-{token}-{'-'.join(map(str, task.point))}-b{task.block}" for task in tasks]
    # one graph update for all tasks (a submit per task costs the scheduler ~15 ms each)
    futures = dict(zip(client.map(execute_task, jobs, key=keys, pure=False), tasks))
    results, failures = [], []
    watch = _WorkerWatch(client, echo or (lambda m: print(m, file=sys.stderr, flush=True)))
    try:
        _collect(futures, results, failures, progress, tasks, as_completed)
    except BaseException:  # KeyboardInterrupt, lost scheduler: stop what still runs, keep what is done
        client.cancel(list(futures))
        raise
    finally:
        watch.stop()
    return results, failures


class _WorkerWatch:
    """Says when a worker leaves while tasks run (the scheduler reruns its tasks elsewhere)."""

    def __init__(self, client, echo, interval: float = 0.5):
        import threading  # noqa: PLC0415

        self.client, self.echo, self.interval = client, echo, interval
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
    with _progress(progress, len(tasks), sum(t.stop - t.start for t in tasks)) as advance:
        for fut in as_completed(list(futures)):
            task = futures[fut]
            try:
                res = fut.result()
            except Exception as e:  # task exception, KilledWorker, ...
                failures.append(TaskFailure(task, f"{type(e).__name__}: {e}", _is_deterministic(e)))
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
