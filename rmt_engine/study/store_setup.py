"""A study's new cube: its provenance attributes and its empty template.

Rules of this module
- ``create_store`` writes the empty cube of a study (metadata, coordinates, all-False ``done``)
  before any task starts; ``provenance`` is everything the cube records about the study that made
  it (its TOML, config hash and canonical definition, seed, versions, BLAS, git commit, ``runs``).
- Generic facts of the installation come from ``rmt_engine.study.provenance``; nothing here runs a task
  or talks to Dask. It imports only ``spec`` of this package.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import store as _store
from .._version import __version__
from .provenance import _now, blas_description, engine_git_commit, library_versions
from .spec import Study


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
                           provenance(study, tpt), train=study.train, ntk=study.ntk)
    return _store.store_attrs(store)
