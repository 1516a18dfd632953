"""Study definitions: TOML (or ``Study(...)``) -> a validated ``Study`` / ``Execution``, and its config hash.

Rules of this module
- A study is defined by a TOML file (``Study.from_toml``; stdlib ``tomllib``, nothing is
  evaluated) or by ``Study(...)`` in Python. Everything is validated -- unknown keys, types,
  every ``TrialSpec`` of the grid, data files -- *before* anything is created; errors are
  ``StudySpecError`` naming the key and, for files, the line (``_key_lines``). (The store path is
  checked by ``rmt_engine.study.plan.check_store``.)
- The *config hash* is the SHA-256 of the canonical JSON of the scientific definition (grid, t,
  trials, seed, dtype, block_rows, deltas, C, chi_max, backend, save_spectrum, the data file's
  SHA-256; accuracy, ntk, data_seed and width_path where they differ from their defaults: a width
  path sums the same rows in another order, so its cube differs from the per-width one by
  rounding and is another study): comments, whitespace, key order, ``name``/``description`` and the ``[execution]`` /
  ``[cluster]`` tables do not change it, because they do not change a single number of the cube.
- Named derived rules (``DERIVED_RULES``, e.g. ``w2 = "eq19"``) and linked axes
  (``[grid.linked]``) are resolved here, into the grid points and the cube's axes.
- Validated ranges: ``eq19_scale`` in ``EQ19_SCALE_RANGE`` = [1e-290, 1e20]; every grid point's w1
  and w2 (given or derived) in ``montecarlo.spec.W1_RANGE`` / ``W2_RANGE`` (reasons in the messages).
- This module imports nothing of the other ``rmt_engine.study`` modules (imports flow
  spec <- plan <- tasks <- run). ``Study.check_store`` and ``Study.run`` call the functions that
  ``plan`` and ``run`` register in ``_ENTRY_POINTS`` when the package is imported.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np

from . import store as _store
from .cluster import SLURM_ENGINE_KEYS, _slurm_options  # noqa: F401 - SLURM_ENGINE_KEYS re-exported
from ..montecarlo.fields import SYMBOLIC_T
from ..montecarlo.spec import DTYPES, MAX_T, TRIAL_SPEC_DEFAULTS, W2_RANGE, TrialSpec, is_integer
from .store import ALL_AXES, CASE_DIM, GRID_AXES, OPTIONAL_AXES

#: Accepted range of ``[study] eq19_scale`` (the constant of ``w2 = "eq19"``): with w1 in [1e-3, 100]
#: and d0 d1 >= 1, the derived w2 = eq19_scale / (w1 sqrt(d0 d1)) stays near ``W2_RANGE``; each grid
#: point's derived w2 is then checked against ``W2_RANGE`` itself (an error naming the point).
EQ19_SCALE_RANGE = (1e-290, 1e20)

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
    "accuracy": ("float", TRIAL_SPEC_DEFAULTS["accuracy"]),
    "ntk": ("bool", False),
    "data_seed": ("nonnegint", None),
    "width_path": ("bool", False),
}
AXIS_KINDS = {"activation": "str", "data": "str", "n": "posint", "d0": "posint", "d1": "posint",
              "d2": "posint", "w1": "float", "w2": "float", "data_seed": "nonnegint"}
#: A [grid] may list every axis of ``store.ALL_AXES``: ``GRID_AXES`` (always cube dimensions) and
#: ``OPTIONAL_AXES`` (dimensions only when listed: ``data_seed``, several draws of X in one cube).
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
    "no_workers_timeout": ("float", None),
}
#: [cluster.slurm] keys that put shell commands (or a program) into the submitted job script: a
#: shared study file must not run commands on the reader's cluster, so they come from a site file
#: (``--slurm-config FILE`` / $RMT_ENGINE_SLURM_CONFIG, a TOML with a [slurm] table) unless the run
#: passes ``--allow-shell-in-study``.
SITE_ONLY_SLURM_KEYS = ("job_script_prologue", "python", "shebang", "job_extra_directives", "worker_extra_args")
#: [cluster.slurm] keys passed to dask_jobqueue.SLURMCluster, plus the engine's own: ``jobs`` (a
#: fixed count) or ``minimum_jobs`` / ``maximum_jobs`` (dask-jobqueue's adaptive mode), and
#: ``join_timeout`` (seconds to wait for the first worker to join).
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

#: ``Study.check_store`` -> ``plan.check_store`` and ``Study.run`` -> ``run.run_study``, registered by
#: those modules (``rmt_engine.study`` imports them, and importing this module imports the package
#: first): the methods stay here without this module importing the ones above it.
_ENTRY_POINTS: dict = {}


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



def _is_num(v) -> bool:
    return (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            and math.isfinite(float(v)))


def _describe(v) -> str:
    return f"{v!r} ({type(v).__name__})"


def _check_value(kind: str, v, key: tuple):
    """Check and normalize one value; raises StudySpecError naming ``key``."""
    if kind == "posint":
        if not is_integer(v) or v < 1:
            raise StudySpecError(f"expected a positive integer, got {_describe(v)}", key)
        return int(v)
    if kind == "nonnegint":
        if not is_integer(v) or v < 0:
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
            raise StudySpecError('expected a non-empty list of Khatri-Rao orders (integers >= 1, "auto" or "best")',
                                 key)
        out = []
        for x in vals:
            if isinstance(x, str) and x.strip().lower() in SYMBOLIC_T:
                out.append(x.strip().lower())
            elif is_integer(x) and 1 <= x <= MAX_T:
                out.append(int(x))
            else:
                raise StudySpecError(f'expected "auto", "best" or an integer Khatri-Rao order in [1, {MAX_T}], '
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
    no_workers_timeout: float | None = None
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
        if self.no_workers_timeout is not None and not self.no_workers_timeout > 0:
            raise StudySpecError(f"no_workers_timeout must be > 0 seconds, got {self.no_workers_timeout}",
                                 ("execution", "no_workers_timeout"))
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
        try:
            _slurm_options(slurm)  # the cluster's own split of the engine keys: one set of checks
        except ValueError as e:
            bad = next((k for k in ("minimum_jobs", "maximum_jobs", "join_timeout") if k in slurm), "jobs")
            raise StudySpecError(str(e), ("cluster", "slurm", bad)) from None
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
    accuracy: float = TRIAL_SPEC_DEFAULTS["accuracy"]
    ntk: bool = False  # record the NTK at initialization (d2 = 1 only): fields.NTK_FIELDS
    data_seed: int | None = None  # the seed of X alone (default: seed); one cube per data draw
    width_path: bool = False  # one task computes every d1 of its grid point by one pass (run_trial_path)
    train: object = None  # a TrainSpec (or its table): every trial also trains by GD (rmt_engine.montecarlo.train)
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
        if not EQ19_SCALE_RANGE[0] <= self.eq19_scale <= EQ19_SCALE_RANGE[1]:  # NaN fails too
            raise StudySpecError(
                f"eq19_scale = {self.eq19_scale!r} is outside [{EQ19_SCALE_RANGE[0]:g}, {EQ19_SCALE_RANGE[1]:g}]: the "
                f"derived w2 = eq19_scale / (w1 sqrt(d0 d1)) must stay within w2's range [{W2_RANGE[0]:g}, "
                f"{W2_RANGE[1]:g}] (below it sigma_max(V0) leaves float64's normal range, above it the Eq. 9 margin "
                "underflows to 0 and h0 overflows)", ("study", "eq19_scale"))
        if self.ntk and any(int(d) != 1 for d in self.grid.get("d2", [1])):
            raise StudySpecError("ntk = true records the NTK of a single-output network: every d2 of the grid must be "
                                 "1 (for d2 > 1 the NTK is (d2 n) x (d2 n); training computes it densely)",
                                 ("study", "ntk"))
        if self.data_seed is not None and "data_seed" in grid:
            raise StudySpecError("data_seed is given twice: as [study] data_seed and as a grid axis; keep one (the "
                                 "axis for several draws of X in one cube)", ("study", "data_seed"))
        if self.width_path and "d1" in linked:
            raise StudySpecError("width_path = true computes the whole d1 axis of a grid point in one pass: d1 must "
                                 "be an axis of its own, not a linked one (link the other axes, or set width_path = "
                                 "false)", ("study", "width_path"))
        if not 0 < self.accuracy <= 1:
            raise StudySpecError(f"accuracy (the relative error accepted on sigma_min_F before the accurate QR route "
                                 f"is taken) must lie in (0, 1], got {self.accuracy!r}", ("study", "accuracy"))
        if self.save_spectrum and "n" in linked:
            raise StudySpecError("save_spectrum stores one variable per value of n: n cannot be a linked axis "
                                 "then (link d0 with another axis, or set save_spectrum = false)", ("grid", "linked"))
        if self.train is not None:
            from ..montecarlo.train import TrainSpec  # noqa: PLC0415

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
            if p.is_dir():
                raise StudySpecError(f"data file {str(p)!r} is a directory, not a .npy or .npz file",
                                     ("study", "data_path"))
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
                from ..sampling.data import make_data  # noqa: PLC0415

                try:
                    make_data(spec.data, spec.d0, spec.n, spec.data_draw_seed, path=spec.data_path)
                except (ValueError, OSError, ImportError) as e:
                    key = ("study", "data_path") if spec.data == "file" else ("grid", "data")
                    raise StudySpecError(f"data kind {spec.data!r} at d0={spec.d0}, n={spec.n}: {e}", key) from None

    def _normalized(self) -> bool:
        """True when ``grid`` is already this class's normal form (a copy made by dataclasses.replace)."""
        g = self.grid
        return (isinstance(g, dict) and set(GRID_AXES) <= set(g) <= set(ALL_AXES)
                and all(isinstance(v, tuple) for v in g.values())
                and all(len(g[a]) == len(g[self.linked[0]]) for a in self.linked)
                and all(g[a] == (r,) for a, r in self.derived.items()))

    def _dims(self) -> list:
        """``(dim, values)`` of the cube's grid dimensions, in order (module store: ``CubeAxes``)."""
        out = []
        for a in ALL_AXES:
            if a in self.derived or a not in self.grid:
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
        from ..theory import orders  # noqa: PLC0415

        out = []
        for t in self.t:
            bad = {}
            for labels in self.points():
                key = (labels["activation"], labels["w1"], labels["n"], labels["d0"])
                if key in bad:
                    continue
                if t in SYMBOLIC_T:  # best exists exactly when auto does (auto is the smallest admissible)
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
            yield {a: labels[a] for a in ALL_AXES if a in labels}

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
            bound_delta2=self.bound_delta2, C=self.C, chi_max=self.chi_max, backend=self.backend,
            accuracy=self.accuracy, ntk=self.ntk,
            data_seed=int(labels["data_seed"]) if "data_seed" in labels else self.data_seed)

    def canonical(self) -> dict:
        """The scientific definition (what the config hash covers)."""
        data_sha = None
        if self.data_path:
            data_sha = hashlib.sha256(Path(self.data_path).read_bytes()).hexdigest()
        return {
            "grid": {a: list(self.grid[a]) for a in ALL_AXES if a in self.grid}, "t": list(self.t),
            "trials": self.trials,
            "seed": self.seed, "dtype": self.dtype, "block_rows": self.block_rows,
            "save_spectrum": self.save_spectrum, "allow_d1_below_n": self.allow_d1_below_n,
            "bound_delta1": self.bound_delta1, "bound_delta2": self.bound_delta2, "C": self.C, "chi_max": self.chi_max,
            "backend": self.backend, "data_file_sha256": data_sha,
        } | ({"train": self.train.to_dict()} if self.train is not None else {}) | (
            {"linked": list(self.linked)} if self.linked else {}) | (
            {"derived": dict(self.derived), "eq19_scale": self.eq19_scale} if self.derived else {}) | (
            {"accuracy": self.accuracy} if self.accuracy != TRIAL_SPEC_DEFAULTS["accuracy"] else {}) | (
            {"ntk": True} if self.ntk else {}) | (
            {"data_seed": self.data_seed} if self.data_seed is not None else {}) | (
            {"width_path": True} if self.width_path else {})

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
                                 for a in ALL_AXES if a in self.grid and a not in self.linked]
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
        return _ENTRY_POINTS["check_store"](self, store, resume=resume)

    def resource_problems(self) -> list[str]:
        """The resource limits this study exceeds (``rmt_engine.study.resources``; empty when none)."""
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
        return _ENTRY_POINTS["run_study"](self, store, client=client, resume=resume, progress=progress,
                                          workers=workers, cluster=cluster, scheduler=scheduler,
                                          scheduler_file=scheduler_file, echo=echo, force=force)


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
    _check_unknown(grid, ALL_AXES + ("linked",), ("grid",), "[grid]")
    linked: dict = {}
    if linked_tab is not None:
        linked_tab = _check_table(linked_tab, ("grid", "linked"))
        _check_unknown(linked_tab, ALL_AXES, ("grid", "linked"), "[grid.linked]")
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
    for a in ALL_AXES:
        if a in linked:
            out[a] = linked[a]
            continue
        if a in OPTIONAL_AXES and a not in grid:
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
    return out, tuple(a for a in ALL_AXES if a in linked), derived


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
        from ..theory.activations import available_activations  # noqa: PLC0415

        names = available_activations()
        for x in norm:
            if x not in names:
                raise StudySpecError(f"unknown activation {x!r}; available: {', '.join(names)}", key)
    if a == "data":
        from ..sampling.data import DATA_KINDS  # noqa: PLC0415

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


_store.STUDY_PARSER[0] = Study.from_toml_text  # the cube format rebuilds a store's template from its study_toml
