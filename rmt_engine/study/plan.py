"""The plan of a run: which store a study may write, and which of its regions are still to compute.

Rules of this module
- One task = one trial block of one grid point = one chunk of every variable it writes (see
  ``rmt_engine.study.store``); ``plan_tasks`` lists the tasks whose region is not yet ``done``, in cube
  order, so a resumed run computes exactly the regions an interrupted one left.
- ``check_store`` refuses, before anything is created, a store that this study cannot write: a
  missing store on ``--resume``, an unwritable directory (the store's, or the one beside it that
  holds its lock), a file, an empty or foreign directory, a store of another version or of another
  config hash (with the differing keys), and a store whose set of variables is not the one this
  engine writes for the study (``IncompatibleStoreError`` naming the missing and extra variables: such
  a store is not extended in place, the study is run into a new store).
- With ``[study] width_path = true`` one task spans the d1 axis of a grid point (``Task.path``): it
  writes one region per width, each the same chunks as a per-width task's.
- ``plan_tasks`` takes the done mask it is given: on a resume the driver passes the audited one
  (``store.audit_regions``: a region whose chunks are damaged is not done).
- Nothing here writes to a store or talks to Dask (``check_store`` only probes that the directory
  is writable); it imports only ``spec`` of this package.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import store as _store
from .store import GRID_AXES
from .spec import _ENTRY_POINTS, Study

# --------------------------------------------------------------------------- store checks


def _check_parent_writable(store: Path) -> None:
    parent = store.parent
    if not parent.exists():
        raise _store.StoreError(f"cannot create the store {store}: its directory {parent} does not exist")
    if not parent.is_dir():
        raise _store.StoreError(f"cannot create the store {store}: {parent} is not a directory")
    _probe_writable(parent, f"cannot create the store {store}")


def _probe_writable(directory: Path, what: str) -> None:
    """Raise ``StoreWriteError`` (naming ``directory``) unless a file can be created in it."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".rmt_engine_probe_", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _store.StoreWriteError(f"{what}: directory {directory} is not writable ({e.strerror or e})") from None


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
    if attrs.get("template_complete"):
        _check_variables(study, store, attrs)
    _probe_writable(store, f"cannot resume the store {store}")  # its chunks and attributes
    _probe_writable(store.parent, f"cannot lock the store {store} (its lock file goes beside it)")
    return attrs


def _check_variables(study: Study, store: Path, attrs: dict) -> None:
    """Refuse (``IncompatibleStoreError``) a store whose variables are not the ones this engine writes
    for the study: one written by an rmt_engine with another set of fields (same config hash). Such a
    store is never extended in place (its done regions lack the new variables, and every task would
    fail on the missing ones): it stays readable with ``open_results``, and the study is run into a new
    store. A store written before ``region_check`` existed (no ``region_check`` in its ``variables``
    attribute) is still resumed, as before."""
    recorded = attrs.get("variables")
    if not isinstance(recorded, list):
        return  # a template older than the attribute: audited region by region
    tpt = int(attrs.get("trials_per_task") or study.trials_per_task())
    expected = [v.name for v in _store.layout(study.cube_axes(), study.t, study.trials, tpt, study.save_spectrum,
                                              study.train, study.ntk)]
    have = set(recorded)
    missing = [n for n in expected if n not in have and n != _store.CHECK_NAME]
    extra = sorted(have - set(expected))
    if not missing and not extra:
        return
    what = []
    if missing:
        what.append(f"missing {len(missing)} variable(s) this rmt_engine writes: {', '.join(missing)}")
    if extra:
        what.append(f"{len(extra)} variable(s) this rmt_engine does not write: {', '.join(extra)}")
    raise _store.IncompatibleStoreError(
        f"{store} was written by an rmt_engine with another set of variables (rmt_engine "
        f"{attrs.get('rmt_engine_version', '?')}): {'; '.join(what)}. "
        "It cannot be resumed by this rmt_engine (it stays readable with open_results). Run the study into a "
        "new store (--store NEW.zarr), or resume it with the rmt_engine that wrote it.")


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """One trial block of one grid point (``path`` empty), or, with ``[study] width_path = true``, one
    trial block of a whole d1 axis: ``path`` lists ``(point, labels)`` of every width the task
    computes in increasing d1 (one pass, ``run_trial_path``), ``writes`` the indices into ``path`` of
    the regions it writes (those not done); ``point``/``labels`` are the path's last (largest) width."""

    point: tuple  # indices along the cube's grid dims (Study.cube_axes().dims)
    labels: dict  # axis -> value
    block: int
    start: int
    stop: int
    path: tuple = ()
    writes: tuple = ()

    @property
    def regions(self) -> list[tuple]:
        """The grid points whose region (trial block ``block``) this task writes."""
        return [self.path[i][0] for i in self.writes] if self.path else [self.point]

    def describe(self) -> str:
        labels = dict(self.labels)
        if self.path:
            d1s = [lab["d1"] for _, lab in self.path]
            labels["d1"] = f"{d1s[0]}..{d1s[-1]} (path of {len(d1s)})" if len(d1s) > 1 else d1s[0]
        pt = ", ".join(f"{a}={labels[a]}" for a in GRID_AXES)
        return f"({pt}) trials {self.start}-{self.stop - 1}"


def plan_tasks(study: Study, trials_per_task: int, done: np.ndarray | None = None) -> tuple[list[Task], int]:
    """The tasks whose region is not done (all if ``done`` is None) and the number of regions.

    With ``study.width_path`` a task spans the d1 axis of its grid point (the points that differ only
    in d1), is planned when any of its regions is not done, computes the path up to the largest
    width it writes and writes only the regions that are not done (a done region is never rewritten)."""
    nb = _store.n_blocks(study.trials, trials_per_task)
    points = list(zip(study.point_indices(), study.points()))
    total = len(points) * nb
    if study.width_path:
        return _plan_paths(study, points, nb, trials_per_task, done), total
    tasks = []
    for point, labels in points:
        for b in range(nb):
            if done is not None and done[point + (b,)]:
                continue
            a, e = _store.block_range(b, study.trials, trials_per_task)
            tasks.append(Task(point, labels, b, a, e))
    return tasks, total


def _plan_paths(study: Study, points: list, nb: int, trials_per_task: int, done) -> list[Task]:
    k = study.cube_axes().dims.index("d1")
    groups: dict = {}
    for point, labels in points:
        groups.setdefault(point[:k] + point[k + 1:], []).append((point, labels))
    tasks = []
    for members in groups.values():
        members.sort(key=lambda pl: pl[1]["d1"])
        for b in range(nb):
            todo = [i for i, (p, _) in enumerate(members) if done is None or not done[p + (b,)]]
            if not todo:
                continue
            path = tuple(members[:todo[-1] + 1])
            a, e = _store.block_range(b, study.trials, trials_per_task)
            tasks.append(Task(path[-1][0], path[-1][1], b, a, e, path, tuple(todo)))
    return tasks


_ENTRY_POINTS["check_store"] = check_store  # Study.check_store
