"""Layer 6, ``study``: a grid of ``TrialSpec`` parameters times a number of trials, run on Dask into one cube.

The package follows the data flow of a run, one rule per module (each module's docstring states it):

- ``spec``: TOML (or ``Study(...)``) -> a validated ``Study`` / ``Execution``; ``StudySpecError``
  with key and line; the keys tables, named derived rules, the config hash, ``to_toml``.
- ``plan``: study x store -> the regions still to compute (``Task``, ``plan_tasks``) and the store
  checks (``check_store``); nothing talks to Dask.
- ``tasks``: what runs on a worker (``make_job``, ``execute_task``): its trials, its region, the
  BLAS limit, shipped activations, the data file's SHA-256 check, the test-only hooks.
- ``store_setup``: a new cube's provenance attributes and empty template (``create_store``).
- ``run``: the driver (``run_study``: lock, cluster from ``study.cluster``, submit, progress,
  worker watch, ``RunSummary``).

Beside the chain, the services it uses:

- ``store``: the zarr cube on disk (layout, checksums, ``done`` regions, ``open_results``).
- ``cluster``: local, CUDA and Slurm Dask clusters (the optional packages are imported only there).
- ``provenance``: library versions, BLAS, the engine's git commit.
- ``resources``: memory and time per trial and per study; the limits ``validate`` enforces.

Rule: imports ``backend`` .. ``montecarlo`` and this folder; nothing of ``report``. Inside, imports
flow one way: spec <- plan <- tasks <- run (``store_setup`` imports only ``spec``; ``run`` imports
them all; nothing imports ``run``); ``store``, ``cluster``, ``provenance`` and ``resources`` import
none of the chain. ``Study.check_store`` and ``Study.run`` reach ``plan.check_store`` and
``run.run_study`` through ``spec._ENTRY_POINTS``, which those modules fill when this package is
imported.

Every name that ``rmt_engine.study`` had as a single module is importable from here. Module-level
settings live in their own module and are read there: patch ``rmt_engine.study.run.PROGRESS_INTERVAL_S``
(or set $RMT_ENGINE_PROGRESS_INTERVAL), and use ``allow_shell_in_study()`` rather than
``_ALLOW_SHELL_IN_STUDY``.
"""

from .spec import (AXIS_DEFAULTS, AXIS_KINDS, CLUSTER_KINDS, DEFAULT_TRIALS_PER_TASK, DERIVED_RULES, EXECUTION_KEYS,
                   RENAMED_STUDY_KEYS, REQUIRED_AXES, SITE_ONLY_SLURM_KEYS, SLURM_ENGINE_KEYS, SLURM_KEYS, STUDY_KEYS,
                   TOP_KEYS, Execution, Study, StudySpecError, _check_value, allow_shell_in_study)
from .plan import Task, check_store, plan_tasks
from .tasks import TEST_DELAY_ENV, TEST_FAIL_ENV, execute_task, make_job
from .store_setup import create_store, provenance
from .run import (NO_WORKERS_TIMEOUT_S, PROGRESS_INTERVAL_ENV, PROGRESS_INTERVAL_S, NoWorkersLeft, RunSummary,
                  TaskFailure, run_study)

# names the single-module rmt_engine.study imported from elsewhere in the engine (their home is there)
from .._version import __version__  # noqa: F401
from ..montecarlo.fields import FIELDS, field_name  # noqa: F401
from .provenance import blas_description, engine_git_commit, library_versions  # noqa: F401
from ..montecarlo.spec import DTYPES, MAX_T, TRIAL_SPEC_DEFAULTS, TrialSpec  # noqa: F401
from .store import CASE_DIM, GRID_AXES  # noqa: F401

__all__ = [
    "AXIS_DEFAULTS", "AXIS_KINDS", "CLUSTER_KINDS", "DEFAULT_TRIALS_PER_TASK", "DERIVED_RULES", "EXECUTION_KEYS",
    "RENAMED_STUDY_KEYS", "REQUIRED_AXES", "SITE_ONLY_SLURM_KEYS", "SLURM_ENGINE_KEYS", "SLURM_KEYS", "STUDY_KEYS",
    "TOP_KEYS", "Execution", "Study", "StudySpecError", "allow_shell_in_study",
    "Task", "check_store", "plan_tasks",
    "TEST_DELAY_ENV", "TEST_FAIL_ENV", "execute_task", "make_job",
    "create_store", "provenance",
    "NO_WORKERS_TIMEOUT_S", "NoWorkersLeft", "PROGRESS_INTERVAL_ENV", "PROGRESS_INTERVAL_S", "RunSummary",
    "TaskFailure", "run_study",
]
