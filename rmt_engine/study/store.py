"""The result cube: one zarr store per study, written region by region, read with xarray.

Rules of this module
- Layout (``STORE_VERSION = 2``). Dimensions are *every* grid axis of ``GRID_AXES`` (also the
  ones with a single value, so every cube has the same dims and ``ds.sel(w2=1.0)`` always works),
  then ``trial``; variables of t-dependent fields get a trailing ``t`` dimension (the explicit
  Khatri-Rao orders of the study) instead of one variable per ``_t{t}`` suffix; with ``t = "auto"``
  in the study each such field also has a variable ``{field}_auto`` without ``t`` (its value at
  the per-point order ``t_auto``), likewise ``{field}_best`` (and ``t_best``) with ``t = "best"``.
  * per-trial fields: dims ``GRID_AXES + ("trial",) [+ ("t",)]``;
  * per-grid-point fields (``FieldInfo.per_point``): dims ``GRID_AXES [+ ("t",)]``, no ``trial``;
  * ``done``: bool, dims ``GRID_AXES + ("trial_block",)``: block ``b`` holds trials
    ``[b * trials_per_task, min((b + 1) * trials_per_task, trials))``;
  * spectra (``save_spectrum``): one variable ``spectrum_n{n}`` per value of n, dims
    ``GRID_AXES without n + ("trial", "eig_n{n}")`` (ascending eigenvalues of M0), so different
    n never share a padded axis.
- Chunks: 1 along every grid axis, ``trials_per_task`` along ``trial``, whole along ``t`` and
  ``eig_*``, 1 along ``trial_block``. One task = one (grid point, trial block) = exactly one
  chunk of every variable it writes; per-point variables are written by the task of block 0
  only. ``check_region_alignment`` verifies this against the arrays' real chunk (or shard) shape
  before any write, because zarr/xarray do not check NumPy region writes.
- A task writes its data first, then its row of ``region_check``, and marks ``done`` in a separate,
  later write. zarr's LocalStore writes each chunk to a temporary file and renames it, so a killed
  task leaves whole old or new chunks, and a region is complete exactly when its ``done`` flag is
  set *and* its chunks are the ones its task recorded.
- Integrity, per chunk and per region. Every chunk ends in a CRC-32C of its bytes (``_compressors``):
  a flipped byte fails the read. ``region_check`` (uint64, dims ``GRID_AXES + ("trial_block",
  "check_variable", "check_field")``, one chunk per region; its attribute ``checked_variables``
  names the variables along ``check_variable``) binds each chunk to its variable and place: for
  every variable a task wrote, ``[blake2b-64 of (variable name, chunk key, the chunk file's bytes),
  the file's size]`` (``[0, 0]``: not written by that region). A chunk swapped with another region's,
  truncated, emptied or deleted then no longer matches its record. ``audit_regions`` checks the done
  regions: presence and size of every chunk (cheap: ``open_results``) and their digests (deep:
  ``verify_store`` and every resume, which recomputes exactly the damaged regions). A ``done``
  chunk that cannot be read is rebuilt from the region's record when the data match it, else the
  region is recomputed. Stores written before ``region_check`` existed (same layout version; their
  ``variables`` attribute lacks it) are checked by presence and the CRC-32C codec only: a chunk
  swapped between two regions of such a store is not detected.
- Coordinates and metadata. Coordinate arrays carry the same CRC-32C codec (stores made before that
  have none), and ``check_template`` compares every coordinate's values (and dims) with the grid of
  the study recorded in the store's attributes (``study_toml``: ``study_template``) and every
  variable's ``zarr.json`` (``TEMPLATE_META_KEYS``: shape, dtype, chunks, dims, fill value, codecs;
  not its attributes) with the template's: ``verify_store`` reports a difference, ``open_results``
  refuses it (``StoreError`` naming it), and a resume rewrites it from the template.
- The driver (never a task) recreates the metadata (``zarr.json``) of a deleted variable, metadata
  that differs from the template's and damaged coordinate arrays from the study's template
  (``restore_metadata``) before an audit and before any task writes, then rewrites the consolidated
  metadata of a complete store. The engine reads its stores without the consolidated metadata
  (``_open_group``, ``open_results``): a stale one is never trusted.
- A store whose set of variables is not the one this engine writes for its study (written by another
  rmt_engine, same config hash) is refused on resume (``plan.check_store``: ``IncompatibleStoreError``
  naming the missing and extra variables); it stays readable, the study is run into a new store.
- Unwritten chunks read as the fill value (NaN for floats, False for ``done``).
- The root attribute ``template_complete`` is set last when the template is created: a store
  without it was interrupted before any task could run, and the next run recreates it.
- Root attributes hold the provenance (``PROVENANCE_KEYS``) and ``rmt_engine_store_version``;
  only the driver writes attributes, tasks never do.
- The template is created with ``xarray.Dataset.to_zarr(compute=False)`` (metadata and
  coordinates only, no consolidated metadata); tasks write with zarr directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..montecarlo.fields import AUTO_T, BEST_T, FIELDS, SYMBOLIC_T, field_name, fields_of, int_orders, record_fields

#: Bumped whenever the layout changes incompatibly; ``open_results`` refuses other versions.
STORE_VERSION = 2
GRID_AXES = ("activation", "data", "n", "d0", "d1", "d2", "w1", "w2")
#: Grid axes that are a cube dimension only when the study's [grid] lists them (after ``GRID_AXES``):
#: ``data_seed``, the seed of the data X alone (several draws of X per case, one cube).
OPTIONAL_AXES = ("data_seed",)
#: Every axis a cube may have as a grid dimension or coordinate.
ALL_AXES = GRID_AXES + OPTIONAL_AXES
#: The cube dimension of linked axes ([grid.linked]).
CASE_DIM = "case"
STRING_AXES = ("activation", "data")
FLOAT_AXES = ("w1", "w2")

#: (long_name, units) of the grid coordinates.
COORD_ATTRS = {
    "activation": ("activation phi", ""), "data": ("data kind of X", ""),
    "n": ("number of data points (columns of X)", "1"), "d0": ("input dimension (rows of X)", "1"),
    "d1": ("hidden width (rows of W0)", "1"), "d2": ("output dimension (rows of V0)", "1"),
    "w1": ("standard deviation of the entries of W0 (Eq. 17)", "1"),
    "w2": ("standard deviation of the entries of V0 (Eq. 17)", "1"),
    CASE_DIM: ("case of the linked axes ([grid.linked]): one value of each linked axis", "1"),
}
PROVENANCE_KEYS = (
    "rmt_engine_store_version", "rmt_engine_version", "study_name", "study_toml", "study_source",
    "config_hash", "config_canonical", "seed", "seed_entropy", "trials", "trials_per_task",
    "versions", "blas", "engine_git_commit", "backend", "device", "started", "finished", "runs",
)


class StoreError(RuntimeError):
    """A store cannot be used as asked (not an rmt_engine store, another study, ...)."""


class IncompleteStoreError(StoreError):
    """Some regions of the store are not marked done (pass ``allow_partial=True`` to read anyway)."""


class IncompatibleStoreError(StoreError):
    """The store was written with another layout version."""


class StoreLockedError(StoreError):
    """Another driver holds the store's lock file."""


class StoreWriteError(StoreError):
    """The store (or its lock) cannot be written: a read-only directory, a full disk."""


#: The per-region record of the chunks its task wrote (see the module docstring).
CHECK_NAME = "region_check"
CHECK_FIELDS = ("blake2b_64", "nbytes")


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Variable:
    """One data variable of the cube: its dims, chunk shape and attributes."""

    name: str
    base: str  # field name (or "spectrum" / "done")
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    per_point: bool
    per_t: bool  # has a trailing ``t`` dimension
    n: int | None = None  # for spectrum variables
    t_values: tuple = ()  # the record's t keys this variable holds (ints along ``t``, or ("auto",))
    point_index: tuple | None = None  # which entries of a task's grid point index it spans (None: all)
    checked: tuple = ()  # region_check only: the variables along its ``check_variable`` dim


@dataclass(frozen=True)
class CubeAxes:
    """The grid dimensions of a cube and their coordinates.

    A plain study has every axis of ``GRID_AXES`` as a dimension. Linked axes (``[grid.linked]``)
    share one dimension ``case`` (each is a coordinate along it); a derived axis (``w2 = "eq19"``)
    is no dimension, only a coordinate over the dimensions it depends on. ``coords``: name ->
    ``(dims, values)``.
    """

    dims: tuple
    sizes: tuple
    coords: dict

    @classmethod
    def from_grid(cls, grid: dict) -> "CubeAxes":
        return cls(tuple(GRID_AXES), tuple(len(grid[a]) for a in GRID_AXES),
                   {a: ((a,), _coord_values(a, grid[a])) for a in GRID_AXES})


def _axes(grid) -> CubeAxes:
    return grid if isinstance(grid, CubeAxes) else CubeAxes.from_grid(grid)


def n_blocks(trials: int, trials_per_task: int) -> int:
    return math.ceil(trials / trials_per_task)


def block_range(block: int, trials: int, trials_per_task: int) -> tuple[int, int]:
    start = block * trials_per_task
    return start, min(start + trials_per_task, trials)


def layout(grid: dict, t_values, trials: int, trials_per_task: int, save_spectrum: bool,
           train=None, ntk: bool = False) -> list[Variable]:
    """Every variable of the cube (fields in record order, then training, spectra, then ``done``).

    ``ntk``: the study records the NTK at initialization (``fields.NTK_FIELDS``).
    ``train``: the study's ``TrainSpec`` (or None): adds the per-trial ``TRAIN_FIELDS`` and the loss
    curve ``gd_loss`` (dims grid + ``trial`` + ``iteration``).
    """
    axes = _axes(grid)
    gdims = axes.dims
    gshape = axes.sizes
    gchunks = (1,) * len(gdims)
    orders = int_orders(t_values)
    nt = len(orders)
    out = []
    for base, info in fields_of(ntk, BEST_T in tuple(t_values)).items():
        dims, shape, chunks = gdims, gshape, gchunks
        if not info.per_point:
            dims, shape, chunks = dims + ("trial",), shape + (trials,), chunks + (trials_per_task,)
        if not info.per_t:
            out.append(Variable(base, base, dims, shape, chunks, info.per_point, False))
            continue
        if nt:
            out.append(Variable(base, base, dims + ("t",), shape + (nt,), chunks + (nt,), info.per_point, True,
                                t_values=orders))
        for sym in SYMBOLIC_T:  # one variable per symbolic order the study asks ("auto", "best")
            if sym in t_values:
                out.append(Variable(field_name(base, sym), base, dims, shape, chunks, info.per_point, False,
                                    t_values=(sym,)))
    if train is not None:
        from ..montecarlo.train import CURVE_DIM, CURVE_NAME, TRAIN_FIELDS, curve_iterations  # noqa: PLC0415

        tdims, tshape, tchunks = gdims + ("trial",), gshape + (trials,), gchunks + (trials_per_task,)
        for base in TRAIN_FIELDS:
            out.append(Variable(base, base, tdims, tshape, tchunks, False, False))
        ni = len(curve_iterations(train))
        out.append(Variable(CURVE_NAME, CURVE_NAME, tdims + (CURVE_DIM,), tshape + (ni,), tchunks + (ni,),
                            False, False))
    if save_spectrum:
        if "n" not in gdims:
            raise ValueError("save_spectrum needs n as a grid dimension (not a linked axis)")
        i_n = gdims.index("n")
        for n in axes.coords["n"][1]:
            dims = gdims[:i_n] + gdims[i_n + 1:] + ("trial", f"eig_n{n}")
            shape = gshape[:i_n] + gshape[i_n + 1:] + (trials, int(n))
            chunks = (1,) * (len(gdims) - 1) + (trials_per_task, int(n))
            out.append(Variable(spectrum_name(n), "spectrum", dims, shape, chunks, False, False, int(n),
                                point_index=tuple(k for k in range(len(gdims)) if k != i_n)))
    nb = n_blocks(trials, trials_per_task)
    checked = tuple(v.name for v in out)
    out.append(Variable(CHECK_NAME, CHECK_NAME, gdims + ("trial_block", "check_variable", "check_field"),
                        gshape + (nb, len(checked), len(CHECK_FIELDS)), gchunks + (1, len(checked), len(CHECK_FIELDS)),
                        False, False, checked=checked))
    out.append(Variable("done", "done", gdims + ("trial_block",), gshape + (nb,), gchunks + (1,), False, False))
    return out


def spectrum_name(n: int) -> str:
    return f"spectrum_n{int(n)}"


def region(var: Variable, point: tuple[int, ...], block: int, trials: int, trials_per_task: int) -> tuple[slice, ...]:
    """The index of ``var`` written by the task (``point``, ``block``) (a tuple of slices)."""
    if var.base in ("done", CHECK_NAME):
        idx = tuple(slice(i, i + 1) for i in point) + (slice(block, block + 1),)
        return idx + tuple(slice(0, s) for s in var.shape[len(idx):])
    pt = point if var.point_index is None else tuple(point[k] for k in var.point_index)
    idx = tuple(slice(i, i + 1) for i in pt)
    if var.base == "spectrum" or not var.per_point:
        a, b = block_range(block, trials, trials_per_task)
        idx = idx + (slice(a, b),)
    return idx + tuple(slice(0, s) for s in var.shape[len(idx):])


def check_region_alignment(idx: tuple[slice, ...], shape, chunks, name: str = "") -> None:
    """Raise if ``idx`` does not cover whole chunks of an array of ``shape`` chunked by ``chunks``.

    A region write that covers part of a chunk read-modify-writes it and races with any other
    writer of the same chunk (zarr/xarray only check this for dask data): the engine never does it.
    """
    for d, (s, size, c) in enumerate(zip(idx, shape, chunks)):
        start, stop = s.start or 0, size if s.stop is None else s.stop
        if start % c or (stop % c and stop != size):
            raise RuntimeError(
                f"region {idx} of {name or 'array'} does not align with its chunks {tuple(chunks)} "
                f"along axis {d} (start {start}, stop {stop}, size {size}): refusing a partial-chunk write")


def write_chunk_shape(arr) -> tuple[int, ...]:
    """The unit of an atomic write of a zarr array: its shard shape if sharded, else its chunks."""
    shards = getattr(arr, "shards", None)
    return tuple(shards) if shards else tuple(arr.chunks)


# --------------------------------------------------------------------------- template


def _coord_values(axis: str, values):
    if axis in STRING_AXES:
        return np.array([str(v) for v in values], dtype=object)
    if axis in FLOAT_AXES:
        return np.array([float(v) for v in values], dtype=np.float64)
    return np.array([int(v) for v in values], dtype=np.int64)


def _attrs_for(var: Variable) -> dict:
    if var.base == CHECK_NAME:
        return {"long_name": "per region: [blake2b-64 of (variable, chunk key, chunk bytes), chunk bytes] of "
                             "every variable its task wrote ([0, 0]: none)",
                "checked_variables": list(var.checked), "check_fields": list(CHECK_FIELDS)}
    if var.base == "done":
        return {"long_name": "1 where the trial block's region is written completely",
                "description": "block b holds trials [b*trials_per_task, (b+1)*trials_per_task)"}
    if var.base == "spectrum":
        return {"long_name": f"eigenvalues of M0 = phi(W0 X)^T phi(W0 X), ascending (n = {var.n})",
                "equation": "Eq. 59", "units": "1"}
    all_fields = fields_of(ntk=True, best=True)
    if var.base not in all_fields:
        from ..montecarlo.train import CURVE_FIELD, CURVE_NAME, TRAIN_FIELDS  # noqa: PLC0415

        info = CURVE_FIELD if var.base == CURVE_NAME else TRAIN_FIELDS[var.base]
        return {"long_name": info.long_name, "equation": info.equation, "units": info.units, "per_grid_point": 0}
    info = all_fields[var.base]
    attrs = {"long_name": info.long_name, "equation": info.equation, "units": info.units,
             "per_grid_point": int(info.per_point)}
    if var.per_t:
        attrs["long_name"] = info.long_name + " (per Khatri-Rao order t)"
    elif var.t_values == (AUTO_T,):
        attrs["long_name"] = info.long_name + " (at t = t_auto, the smallest informative order)"
    elif var.t_values == (BEST_T,):
        attrs["long_name"] = info.long_name + " (at t = t_best, the admissible order with the largest sharp bound)"
    return attrs


def create_template(path, grid: dict, t_values, trials: int, trials_per_task: int,
                    save_spectrum: bool, attrs: dict, train=None, ntk: bool = False) -> None:
    """Write the metadata, the coordinates and an all-False ``done`` mask; fails if ``path`` exists."""
    ds, encoding = template_dataset(grid, t_values, trials, trials_per_task, save_spectrum, attrs, train, ntk)
    ds.to_zarr(os.fspath(path), mode="w-", compute=False, consolidated=False, encoding=encoding)
    # the numpy 'done' mask may or may not be written eagerly; make it explicit
    g = _open_group(path, "r+")
    g["done"][...] = np.zeros(g["done"].shape, dtype=bool)
    g.attrs["variables"] = sorted(ds.data_vars)  # what verify_store expects to find
    g.attrs["cube_dims"] = list(_axes(grid).dims)
    g.attrs["template_complete"] = True  # last: a template interrupted before this is recreated


def restore_metadata(path, grid: dict, t_values, trials: int, trials_per_task: int, save_spectrum: bool,
                     train=None, ntk: bool = False) -> list[str]:
    """Driver-only: bring the store's metadata and coordinates back to the study's template; returns
    what it rewrote (variable names, and ``coordinate NAME`` for coordinates).

    - the ``zarr.json`` of every variable of the store's ``variables`` attribute whose metadata is
      gone, or differs from the template's (``TEMPLATE_META_KEYS``: shape, dtype, chunks, dims, fill
      value, codecs), is rewritten; its chunk files stay and are audited afterwards (their digests
      decide which regions are recomputed);
    - every coordinate array that is missing, unreadable or not the study's grid (``check_template``)
      is replaced as a whole by the template's.
    The template is written into a temporary directory beside the store and copied over, so what is
    restored is byte for byte what ``create_template`` writes. The consolidated metadata of a
    complete store is rewritten afterwards (``reconsolidate``).
    """
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    p = Path(path)
    expected = (store_attrs(p) or {}).get("variables") or []
    lost = [name for name in expected if not (p / name / "zarr.json").is_file()]
    ds, encoding = template_dataset(grid, t_values, trials, trials_per_task, save_spectrum, {}, train, ntk)
    unknown = [name for name in lost if name not in ds]
    if unknown:
        raise StoreError(f"{p}: the metadata of {', '.join(unknown)} is gone and this study's template has no such "
                         "variable")
    check = check_template(p, (ds, encoding, _template_meta(ds, encoding)))
    meta_names = lost + [n for n in check.meta if n not in lost and n in expected]
    coord_names = list(check.coords)
    if not meta_names and not coord_names:
        return []
    try:
        with tempfile.TemporaryDirectory(prefix=".rmt_engine_template_", dir=p.parent) as tmp:
            t = Path(tmp) / "t.zarr"
            ds.to_zarr(os.fspath(t), mode="w-", compute=False, consolidated=False, encoding=encoding)
            for name in meta_names:
                (p / name).mkdir(exist_ok=True)
                tmp_meta = p / name / ".zarr.json.restoring"
                shutil.copyfile(t / name / "zarr.json", tmp_meta)
                os.replace(tmp_meta, p / name / "zarr.json")
            for name in coord_names:
                staged = p / f".{name}.restoring"
                shutil.rmtree(staged, ignore_errors=True)
                shutil.copytree(t / name, staged)
                old = p / f".{name}.damaged"
                shutil.rmtree(old, ignore_errors=True)
                if (p / name).exists():
                    os.replace(p / name, old)
                os.replace(staged, p / name)
                shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        what = ", ".join(meta_names + coord_names)
        raise StoreWriteError(f"cannot recreate the metadata of {what} in {p}: {e.strerror or e}") from None
    reconsolidate(p)
    return meta_names + [f"coordinate {n}" for n in coord_names]


#: The keys of an array's ``zarr.json`` that must be the template's (its attributes may differ).
TEMPLATE_META_KEYS = ("shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs",
                      "dimension_names")


@dataclass
class TemplateCheck:
    """What ``check_template`` found: ``coords``: coordinate -> reason (missing, unreadable, not the
    study's grid); ``meta``: variable -> reason (its ``zarr.json`` differs from the template's);
    ``known``: whether the study's template could be built from the store's attributes."""

    coords: dict
    meta: dict
    known: bool = True

    def problems(self) -> list[str]:
        return ([f"coordinate {n}: {r}" for n, r in self.coords.items()]
                + [f"variable {n}: {r}" for n, r in self.meta.items()])


def _template_meta(ds, encoding) -> dict:
    """name -> the ``zarr.json`` (a dict) the template writes for every variable and coordinate."""
    import zarr  # noqa: PLC0415
    from zarr.storage import MemoryStore  # noqa: PLC0415

    mem = MemoryStore()
    ds.to_zarr(mem, mode="w-", compute=False, consolidated=False, encoding=encoding)
    out = {}
    for name in ds.variables:
        buf = mem._store_dict.get(f"{name}/zarr.json")
        if buf is not None:
            out[name] = json.loads(buf.to_bytes())
    return out


_TEMPLATE_CACHE: dict = {}
#: The study-file parser (``Study.from_toml_text``), registered by ``study.spec`` when it is imported: the
#: cube format sits below the study chain and never imports it (``tests/test_import_graph.py``).
STUDY_PARSER: list = [None]


def study_template(attrs: dict):
    """``(Dataset, encoding, metadata)`` of the template of the study recorded in a store's attributes
    (``study_toml``, ``trials_per_task``), or None when it cannot be rebuilt from them."""
    toml = attrs.get("study_toml")
    if not isinstance(toml, str) or not toml:
        return None
    key = (toml, attrs.get("study_source"), attrs.get("trials_per_task"))
    if key in _TEMPLATE_CACHE:
        return _TEMPLATE_CACHE[key]
    if STUDY_PARSER[0] is None:
        return None
    try:
        study = STUDY_PARSER[0](toml, source=attrs.get("study_source") or None)
        tpt = int(attrs.get("trials_per_task") or study.trials_per_task())
        ds, encoding = template_dataset(study.cube_axes(), study.t, study.trials, tpt, study.save_spectrum, {},
                                        study.train, study.ntk)
        out = (ds, encoding, _template_meta(ds, encoding))
    except Exception:  # noqa: BLE001 - a study this engine cannot read back: no template to compare with
        out = None
    if len(_TEMPLATE_CACHE) > 16:
        _TEMPLATE_CACHE.clear()
    _TEMPLATE_CACHE[key] = out
    return out


def _canon(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _coord_problem(g, p: Path, name: str, expected) -> str | None:
    if not (p / name / "zarr.json").is_file():
        return "missing (its zarr.json is gone)"
    try:
        arr = g[name]
        values = np.asarray(arr[...])
    except Exception as e:  # noqa: BLE001 - a CRC mismatch, undecodable bytes, a missing chunk
        return f"cannot be read ({type(e).__name__}: {e})"
    dims = tuple(arr.metadata.dimension_names or ())
    if dims != tuple(expected.dims):
        return f"has dims {dims}, the study's grid {tuple(expected.dims)}"
    want = np.asarray(expected.values)
    if values.shape != want.shape:
        return f"has shape {values.shape}, the study's grid {want.shape}"
    if want.dtype == object:
        same = [str(v) for v in values.ravel()] == [str(v) for v in want.ravel()]
    else:
        same = values.dtype == want.dtype and np.array_equal(values, want, equal_nan=want.dtype.kind == "f")
    if not same:
        shown = values.ravel()[:8].tolist()
        return f"values {shown} are not the study's grid {want.ravel()[:8].tolist()} (damaged)"
    return None


def check_template(path, template=None) -> TemplateCheck:
    """Compare the store's coordinates (values, dims) and the metadata of its variables
    (``TEMPLATE_META_KEYS``) with the template of its study (``study_template`` of the store's
    attributes, or ``template``); variables of the template the store does not have are left to
    ``audit_regions`` / ``plan.check_store``."""
    p = Path(path)
    if template is None:
        template = study_template(store_attrs(p) or {})
    if template is None:
        return TemplateCheck({}, {}, known=False)
    ds, _, meta = template
    g = _open_group(p, "r")
    coords = {}
    for name in ds.coords:
        reason = _coord_problem(g, p, name, ds[name])
        if reason:
            coords[name] = reason
    bad = {}
    for name in ds.data_vars:
        f = p / name / "zarr.json"
        if not f.is_file() or name not in meta:
            continue
        try:
            have = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            bad[name] = f"its zarr.json cannot be read ({e})"
            continue
        if not isinstance(have, dict):
            bad[name] = "its zarr.json is not a JSON object"
            continue
        diffs = [f"{k} {have.get(k)!r} (template {meta[name].get(k)!r})" for k in TEMPLATE_META_KEYS
                 if _canon(have.get(k)) != _canon(meta[name].get(k))]
        if diffs:
            bad[name] = "metadata differs from the study's template: " + "; ".join(diffs)
    return TemplateCheck(coords, bad)


def reconsolidate(path) -> None:
    """Rewrite the consolidated metadata of a store that has it (after its metadata changed)."""
    if _is_consolidated(path):
        consolidate(path)


def template_dataset(grid: dict, t_values, trials: int, trials_per_task: int, save_spectrum: bool, attrs: dict,
                     train=None, ntk: bool = False):
    """``(xarray.Dataset, encoding)`` of a study's empty cube (lazy data: ``to_zarr(compute=False)``)."""
    import dask.array as da  # noqa: PLC0415
    import xarray as xr  # noqa: PLC0415

    variables = {}
    encoding = {}
    for var in layout(grid, t_values, trials, trials_per_task, save_spectrum, train, ntk):
        if var.base == "done":
            data = np.zeros(var.shape, dtype=bool)
        elif var.base == CHECK_NAME:
            data = da.zeros(var.shape, dtype=np.uint64, chunks=var.chunks)
        else:
            data = da.full(var.shape, np.nan, dtype=np.float64, chunks=var.chunks)
        variables[var.name] = xr.Variable(var.dims, data, attrs=_attrs_for(var))
        encoding[var.name] = {"chunks": var.chunks, "compressors": _compressors()}
    axes = _axes(grid)
    coords = {}
    for name, (cdims, values) in axes.coords.items():
        attrs_c = dict(zip(("long_name", "units"), COORD_ATTRS.get(name, (name, "1"))))
        coords[name] = (cdims, np.asarray(values), attrs_c)
    coords["trial"] = ("trial", np.arange(trials, dtype=np.int64),
                       {"long_name": "trial index (W0, V0 drawn from SeedSequence(seed, spawn_key=(stream, trial)))",
                        "units": "1"})
    if train is not None:
        from ..montecarlo.train import CURVE_DIM, curve_iterations  # noqa: PLC0415

        coords[CURVE_DIM] = (CURVE_DIM, curve_iterations(train),
                             {"long_name": "gradient-descent iteration k of the recorded loss", "units": "1"})
    if save_spectrum:
        for n in axes.coords["n"][1]:
            coords[f"eig_n{n}"] = (f"eig_n{n}", np.arange(int(n), dtype=np.int64),
                                   {"long_name": f"eigenvalue index of M0, ascending (n = {n})", "units": "1"})
    if int_orders(t_values):
        coords["t"] = ("t", np.array(int_orders(t_values), dtype=np.int64),
                       {"long_name": "Khatri-Rao order t (Eq. 20, 58)", "units": "1"})
    nb = n_blocks(trials, trials_per_task)
    coords["trial_block"] = ("trial_block", np.arange(nb, dtype=np.int64),
                             {"long_name": "block of trials_per_task trials (one task, one chunk)",
                              "trials_per_task": int(trials_per_task)})
    for name in coords:  # coordinates are checksummed too: a flipped byte fails the read
        encoding[name] = {"compressors": _compressors()}
    return xr.Dataset(variables, coords=coords, attrs=_jsonable_attrs(attrs)), encoding


def _compressors():
    """Zstd, then a CRC-32C checksum of every chunk: a flipped byte fails the read instead of
    reading back as a number (``verify_store`` reads every chunk)."""
    from zarr.codecs import Crc32cCodec, ZstdCodec  # noqa: PLC0415

    return [ZstdCodec(), Crc32cCodec()]


def _jsonable_attrs(attrs: dict) -> dict:
    return json.loads(json.dumps(attrs, default=str))


# --------------------------------------------------------------------------- reading / writing


def _open_group(path, mode="r"):
    """The store's root group, read from the arrays' own ``zarr.json`` (never from the consolidated
    metadata, which a deleted or restored variable leaves stale)."""
    import zarr  # noqa: PLC0415

    return zarr.open_group(os.fspath(path), mode=mode, use_consolidated=False)


def store_attrs(path) -> dict | None:
    """Root attributes of the zarr group at ``path``, or None if there is no zarr group there."""
    p = Path(path)
    if not p.exists():
        return None
    try:
        return dict(_open_group(p, "r").attrs)
    except Exception:
        return None


def is_rmt_store(path) -> bool:
    attrs = store_attrs(path)
    return attrs is not None and "rmt_engine_store_version" in attrs


def update_attrs(path, **attrs) -> None:
    """Driver-only: update root attributes (and the consolidated metadata, if the store has it)."""
    g = _open_group(path, "r+")
    g.attrs.update(_jsonable_attrs(attrs))
    if _is_consolidated(path):
        consolidate(path)


def consolidate(path) -> None:
    """Write zarr's consolidated metadata (done at completion; metadata only, the ``done`` flags
    are still read from their chunks)."""
    import warnings  # noqa: PLC0415

    import zarr  # noqa: PLC0415

    with warnings.catch_warnings():  # zarr notes that v3 has no consolidated metadata in its spec yet
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(os.fspath(path))


def _is_consolidated(path) -> bool:
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(meta.get("consolidated_metadata"))


def has_computed_data(path) -> bool:
    """True if any data variable of the store at ``path`` has a chunk written (coordinates and
    ``done`` are written with the template and do not count)."""
    p = Path(path)
    attrs = store_attrs(p) or {}
    names = attrs.get("variables")
    if names is None:  # an older template: every directory that is not a coordinate
        skip = set(GRID_AXES) | {"trial", "t", "trial_block", "done", "iteration", CASE_DIM}
        names = [c.name for c in p.iterdir() if c.is_dir() and c.name not in skip
                 and not c.name.startswith("eig_n")] if p.is_dir() else []
    for name in names:
        c = p / name / "c"
        if name not in ("done", CHECK_NAME) and c.is_dir() and any(f.is_file() for f in c.rglob("*")):
            return True
    return False


def read_done(path) -> np.ndarray:
    """The ``done`` mask (grid dims x trial_block) as a NumPy bool array."""
    return np.asarray(_open_group(path, "r")["done"][...], dtype=bool)


def write_task(path, variables: list[Variable], point: tuple[int, ...], block: int, trials: int,
               trials_per_task: int, values: dict[str, np.ndarray]) -> None:
    """Write one task's region of every variable in ``values``, then its ``region_check`` row, then
    mark it done.

    ``values[name]`` has the shape of the region without the length-1 grid axes. Every region
    (``done``'s too) is checked to cover whole chunks (or shards) of its array before anything is
    written. The variables are opened and written concurrently with zarr's asynchronous API (a
    task writes ~50 small chunks: about 2x faster than one after the other); the record of the
    chunk files just written (``region_check``, if ``variables`` has it: stores made before it
    existed do not) follows, ``done`` is written after all of them. Inside a running event loop (a
    notebook cell calling this directly) they are written one after the other instead.
    """
    by_name = {v.name: v for v in variables}
    writes = [(name, region(by_name[name], point, block, trials, trials_per_task), data)
              for name, data in values.items()]
    check = by_name.get(CHECK_NAME)
    check_idx = region(check, point, block, trials, trials_per_task) if check is not None else None
    done_idx = region(by_name["done"], point, block, trials, trials_per_task)
    _write_all(path, writes, check, check_idx, done_idx)


def _write_all(path, writes, check, check_idx, done_idx) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_write_regions_async(os.fspath(path), writes, check, check_idx, done_idx))
        return
    g = _open_group(path, "r+")
    data_regions = [_checked_region(g[name], name, idx, data) for name, idx, data in writes]
    done = g["done"]
    check_arr = g[CHECK_NAME] if check is not None else None
    _check_done_regions(done, done_idx, check_arr, check_idx)
    for arr, idx_, data in data_regions:
        arr[idx_] = data
    if check_arr is not None:
        check_arr[check_idx] = _region_record(path, check, check_idx, [w[0] for w in writes], data_regions)
    done[done_idx] = np.ones(_region_shape(done_idx), dtype=bool)


def _region_shape(idx) -> tuple:
    return tuple(s.stop - s.start for s in idx)


def _check_done_regions(done, done_idx, check_arr, check_idx) -> None:
    check_region_alignment(done_idx, done.shape, write_chunk_shape(done), "done")
    if check_arr is not None:
        check_region_alignment(check_idx, check_arr.shape, write_chunk_shape(check_arr), CHECK_NAME)


def _checked_region(arr, name: str, idx: tuple, data):
    """``(arr, idx, data shaped as the region)`` after checking that ``idx`` covers whole chunks of ``arr``.

    The returned array writes every chunk, also an all-NaN one (zarr skips chunks equal to the fill
    value by default), so that a missing chunk file of a done region always means lost data
    (``audit_regions``). The setting is the array's own (``with_config``), not zarr's process-wide
    ``config.set``: that one is a global that a second worker thread restores under the first's feet
    (seen in CI: an all-NaN ``asym_ratio_spike`` chunk skipped, its region record refused).
    """
    check_region_alignment(idx, arr.shape, write_chunk_shape(arr), name)
    arr = arr.with_config({"write_empty_chunks": True})
    return arr, idx, np.asarray(data, dtype=arr.dtype).reshape(_region_shape(idx))


async def _write_regions_async(path: str, writes: list, check, check_idx, done_idx) -> None:
    """``write_task``'s writes: the data concurrently, then the region's record, then ``done``."""
    import zarr.api.asynchronous as zasync  # noqa: PLC0415

    g = await zasync.open_group(store=path, mode="r+")
    extra = ["done"] + ([CHECK_NAME] if check is not None else [])
    arrays = await asyncio.gather(*(g.getitem(name) for name, _, _ in writes), *(g.getitem(n) for n in extra))
    done, check_arr = arrays[len(writes)], (arrays[len(writes) + 1] if check is not None else None)
    data_regions = [_checked_region(arr, *w) for arr, w in zip(arrays, writes)]
    _check_done_regions(done, done_idx, check_arr, check_idx)
    await asyncio.gather(*(arr.setitem(idx_, data) for arr, idx_, data in data_regions))
    if check_arr is not None:
        await check_arr.setitem(check_idx, _region_record(path, check, check_idx, [w[0] for w in writes], data_regions))
    await done.setitem(done_idx, np.ones(_region_shape(done_idx), dtype=bool))


def _chunk_digest(name: str, key: str, data: bytes, h=None):
    """blake2b-64 of (variable name, chunk key, chunk bytes): binds the bytes to their place."""
    h = h or hashlib.blake2b(digest_size=8)
    h.update(name.encode() + b"\0" + key.encode() + b"\0" + len(data).to_bytes(8, "little"))
    h.update(data)
    return h


def _region_chunk_keys(arr, idx) -> list[str]:
    """The keys (``c/0/1/...``) of the write chunks (or shards) that the region ``idx`` of ``arr`` covers."""
    shape = write_chunk_shape(arr)
    ranges = [range(s.start // c, -(-s.stop // c)) for s, c in zip(idx, shape)]
    return [arr.metadata.encode_chunk_key(tuple(c)) for c in itertools.product(*ranges)]


def _record_of(path: Path, name: str, keys: list[str]) -> tuple[int, int]:
    """``(digest, nbytes)`` of the chunk files ``keys`` of variable ``name`` (KeyError: one is missing)."""
    h, nbytes = None, 0
    for key in keys:
        f = path / name / key
        try:
            data = f.read_bytes()
        except FileNotFoundError:
            raise KeyError(f"{name} chunk {key}") from None
        h = _chunk_digest(name, key, data, h)
        nbytes += len(data)
    return int.from_bytes(h.digest(), "little"), nbytes


def _region_record(path, check: Variable, check_idx, names, data_regions) -> np.ndarray:
    """The ``region_check`` row of a region: the record of every chunk file it has just written."""
    row = np.zeros(_region_shape(check_idx), dtype=np.uint64)
    flat = row.reshape(len(check.checked), len(CHECK_FIELDS))
    pos = {name: j for j, name in enumerate(check.checked)}
    p = Path(path)
    for name, (arr, idx, _) in zip(names, data_regions):
        if name not in pos:
            continue
        try:
            digest, nbytes = _record_of(p, name, _region_chunk_keys(arr, idx))
        except KeyError as e:
            raise OSError(f"{e.args[0]} of {p} is missing right after it was written") from None
        flat[pos[name]] = (digest, nbytes)
    return row


def check_version(attrs: dict, path) -> None:
    version = attrs.get("rmt_engine_store_version")
    if version is None:
        raise StoreError(f"{path} is a zarr store but not an rmt_engine result cube (no rmt_engine_store_version)")
    if version != STORE_VERSION:
        raise IncompatibleStoreError(
            f"{path} was written with store layout version {version} (by rmt_engine "
            f"{attrs.get('rmt_engine_version', '?')}); this rmt_engine reads version {STORE_VERSION} only")


def _chunk_key(var_dir: Path, index: tuple) -> Path:
    return var_dir.joinpath("c", *map(str, index))


def _crc_ok(data: bytes) -> bool:
    """The chunk file ends in the CRC-32C of the bytes before it (zarr's ``Crc32cCodec``)."""
    import google_crc32c  # noqa: PLC0415

    return len(data) > 4 and google_crc32c.value(data[:-4]) == int.from_bytes(data[-4:], "little")


def _read_flags(g, name: str, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``(values, unreadable)`` of an array chunked one element per region along its leading dims:
    one read, or region by region when a chunk cannot be decoded (a flipped byte, an empty file)."""
    arr = g[name]
    try:
        return np.asarray(arr[...]), np.zeros(shape, dtype=bool)
    except Exception:  # noqa: BLE001 - a CRC mismatch or an undecodable chunk: find which
        pass
    values = np.zeros(arr.shape, dtype=arr.dtype)
    bad = np.zeros(shape, dtype=bool)
    for idx in np.ndindex(*shape):
        try:
            values[idx] = arr[idx]
        except Exception:  # noqa: BLE001
            bad[idx] = True
    return values, bad


@dataclass
class RegionAudit:
    """What ``audit_regions`` found. Regions are ``(grid point indices..., trial block)`` tuples.

    ``done``: the done flags to trust (a set flag of a damaged region is cleared; an unreadable
    flag is set again when the region's chunks match its record); ``damaged``: region -> reasons,
    for regions marked done (or with an unreadable flag) whose data are not whole; ``rebuilt``:
    regions whose unreadable flag the data's records vouch for; ``deleted``: variables whose
    metadata is gone; ``checked``: whether the store has ``region_check`` records.
    """

    done: np.ndarray
    damaged: dict
    rebuilt: list
    deleted: list
    checked: bool
    flags_set: np.ndarray  # the done flags as read (unreadable ones False)


def _region_label(region: tuple) -> str:
    return f"grid point {tuple(int(i) for i in region[:-1])}, trial block {int(region[-1])}"


def audit_regions(path, *, deep: bool = True, flags_lost: bool = False, limit: int | None = None) -> RegionAudit:
    """Audit every region marked done (or whose flag is unreadable) against its chunks.

    Cheap (``deep=False``): every chunk the region's task wrote is present, and its size is the
    recorded one (stores without ``region_check``: present and not empty). Deep: also the digest of
    each chunk file (stores without ``region_check``: its CRC-32C). ``flags_lost``: the ``done``
    array was recreated, so every region is judged by its record alone. ``limit``: stop after that
    many damaged regions (a quick refusal). Reads only; ``mark_done`` applies the outcome.
    """
    p = Path(path)
    g = _open_group(p, "r")
    attrs = dict(g.attrs)
    tpt = int(attrs.get("trials_per_task", 1))
    cube_dims = tuple(attrs.get("cube_dims", GRID_AXES))
    names = list(attrs.get("variables") or [n for n in g.array_keys()])
    deleted = [n for n in names if not (p / n / "zarr.json").is_file()]
    if "done" in deleted:
        raise StoreError(f"{p}: the metadata of the done flags (done/zarr.json) is gone; resume the run to "
                         "recreate it (rmt-engine run STUDY.toml --store ... --resume)")
    done_arr = g["done"]
    grid_shape = tuple(done_arr.shape)
    flags, unreadable = _read_flags(g, "done", grid_shape)
    flags = flags.astype(bool) & ~unreadable
    if flags_lost:
        unreadable = np.ones(grid_shape, dtype=bool)
        flags = np.zeros(grid_shape, dtype=bool)
    checked = CHECK_NAME in names and CHECK_NAME not in deleted
    records = rec_bad = None
    checked_names: list = []
    if checked:
        carr = g[CHECK_NAME]
        checked_names = list(carr.attrs.get("checked_variables", []))
        records, rec_bad = _read_flags(g, CHECK_NAME, grid_shape)
    n_values = [int(v) for v in g["n"][...]] if "n" in cube_dims else []
    chunk_of = {}
    for name in names:
        if name in ("done", CHECK_NAME) or name in deleted:
            continue
        arr = g[name]
        dims = tuple(arr.metadata.dimension_names or ())
        chunk_of[name] = (arr, dims, write_chunk_shape(arr))

    def keys_of(name, region):
        arr, dims, shape = chunk_of[name]
        point, block = region[:-1], region[-1]
        if "trial" not in dims and block != 0:
            return None  # a per-point variable: written by the task of block 0
        if name.startswith("spectrum_n") and "n" in cube_dims and "n" not in dims:
            if n_values[point[cube_dims.index("n")]] != int(name[len("spectrum_n"):]):
                return None
        c = [0] * len(dims)
        for a, i in zip(cube_dims, point):
            if a in dims:
                c[dims.index(a)] = int(i) // shape[dims.index(a)]
        if "trial" in dims:
            k = dims.index("trial")
            c[k] = block * tpt // shape[k]
        return arr.metadata.encode_chunk_key(tuple(c))

    def judge(region) -> list[str]:
        reasons = []
        rec = None
        if checked:
            if rec_bad[region]:
                return [f"its {CHECK_NAME} record cannot be read"]
            rec = records[region].reshape(len(checked_names), len(CHECK_FIELDS))
        for name in chunk_of:
            key = keys_of(name, region)
            if key is None:
                continue
            f = p / name / key
            try:
                size = f.stat().st_size
            except FileNotFoundError:
                reasons.append(f"{name} chunk {key} missing")
                continue
            if rec is not None and name in checked_names:
                digest, nbytes = (int(x) for x in rec[checked_names.index(name)])
                if nbytes == 0:
                    reasons.append(f"{name} chunk {key} is not in the region's record (never written by its task)")
                elif size != nbytes:
                    reasons.append(f"{name} chunk {key} has {size} bytes, its task wrote {nbytes} "
                                   "(truncated or replaced)")
                elif deep and _record_of(p, name, [key])[0] != digest:
                    reasons.append(f"{name} chunk {key} differs from what its task wrote (altered, or swapped "
                                   "with another region's chunk)")
            elif size == 0:
                reasons.append(f"{name} chunk {key} is empty")
            elif deep and not _crc_ok(f.read_bytes()):
                reasons.append(f"{name} chunk {key} fails its CRC-32C checksum")
        return reasons

    todo = [tuple(int(i) for i in r) for r in zip(*np.nonzero(flags | unreadable))]
    damaged, rebuilt = {}, []
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for region, reasons in zip(todo, pool.map(judge, todo)):
            if unreadable[region]:
                if reasons or not checked:
                    what = "its done flag cannot be read" if not flags_lost else "its done flag was lost"
                    damaged[region] = [what] + (reasons or ["no record to rebuild it from (a store written before "
                                                            f"{CHECK_NAME})"])
                elif not (records[region] != 0).any():
                    continue  # never written: simply not done
                else:
                    rebuilt.append(region)
            elif reasons:
                damaged[region] = reasons
            if limit is not None and len(damaged) >= limit:
                break
    done = flags.copy()
    for region in damaged:
        done[region] = False
    for region in rebuilt:
        done[region] = True
    return RegionAudit(done, damaged, rebuilt, deleted, checked, flags)


def mark_done(path, audit: RegionAudit) -> None:
    """Driver-only: write the outcome of ``audit_regions``: clear the flags of damaged regions (so
    that a failed recomputation cannot leave them looking done) and set the rebuilt ones."""
    if not audit.damaged and not audit.rebuilt:
        return
    g = _open_group(path, "r+")
    done = g["done"]
    for region, value in [(r, False) for r in audit.damaged] + [(r, True) for r in audit.rebuilt]:
        idx = tuple(slice(i, i + 1) for i in region)
        done[idx] = np.full((1,) * len(region), value)


def has_region_checks(path) -> bool:
    """Whether the store records a digest of every chunk (``region_check``); older stores do not."""
    return CHECK_NAME in ((store_attrs(path) or {}).get("variables") or [])


def missing_chunks(path, limit: int = 20) -> list[str]:
    """Chunks of done regions that are missing or not as their task wrote them (presence and size):
    the cheap audit of ``open_results``. Returns up to ``limit`` descriptions."""
    audit = audit_regions(path, deep=False, limit=limit)
    out = [f"variable {v} (deleted)" for v in audit.deleted]
    out += [f"{_region_label(r)}: {'; '.join(reasons)}" for r, reasons in audit.damaged.items()]
    return out[:limit]


def verify_store(path, notes: list | None = None) -> list[str]:
    """Audit every done region (every chunk present, of its recorded size and digest), compare the
    coordinates and every variable's metadata with the study's template (``check_template``) and
    read every chunk of every array (CRC-32C checked): the problems found.

    An empty list means every region marked done is whole and unaltered. A store written before
    ``region_check`` is checked by presence and CRC-32C only (``has_region_checks``). ``notes``: a
    list that receives what is no error but worth saying (``not_done_note``: regions not done, i.e.
    a partial store). ``rmt-engine verify STORE``.
    """
    p = Path(path)
    try:
        tcheck = check_template(p)
    except Exception as e:  # noqa: BLE001 - not even the root group reads
        return [f"corrupt: {type(e).__name__}: {e}"]
    problems = [f"corrupt: {x} (a resume rewrites it from the study's template)" for x in tcheck.problems()]
    try:
        audit = audit_regions(p, deep=True)
    except Exception as e:  # noqa: BLE001 - done flags or their metadata gone or unreadable
        return problems + [f"missing: {e}"]
    if notes is not None:
        note = not_done_note(audit)
        if note:
            notes.append(note)
    problems += [f"missing: variable {v} (deleted)" for v in audit.deleted]
    for region, reasons in audit.damaged.items():
        problems.append(f"damaged: {_region_label(region)}: {'; '.join(reasons)}")
    for region in audit.rebuilt:
        problems.append(f"corrupt: the done flag of {_region_label(region)} cannot be read (its data match "
                        "their record: a resume rebuilds it)")
    g = _open_group(p, "r")
    for name in g.array_keys():
        if name in tcheck.coords or name in tcheck.meta:
            continue  # already said
        try:
            g[name][...]
        except Exception as e:  # a checksum mismatch, a truncated or garbage chunk
            problems.append(f"corrupt: {name}: {type(e).__name__}: {e}")
    return problems


def not_done_note(audit: "RegionAudit") -> str | None:
    """A line saying how many regions are not done (a partial store), or None if all are."""
    done = audit.done
    n = int((~done).sum())
    if not n:
        return None
    first = tuple(int(i) for i in np.argwhere(~done)[0])
    return (f"not done: {n} of {done.size} regions (grid point x trial block) are not done, e.g. "
            f"{_region_label(first)} (a partial store: resume the run to compute them)")


def explain_read_error(path, error: BaseException) -> StoreError | None:
    """A ``StoreError`` naming the damaged chunks of the store at ``path`` when ``error`` (raised
    while reading it) comes from a damaged chunk; None when the store's chunks are all whole."""
    try:
        problems = verify_store(path)
    except Exception:  # noqa: BLE001 - not even the audit can read it
        problems = []
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return StoreError(f"{path}: damaged store, its data cannot be read ({type(error).__name__}: {error}): "
                      f"{problems[0]}{more}. Run rmt-engine verify {path} for the list, then rerun the study "
                      f"with --store {path} --resume to recompute the damaged regions")


def open_results(path, *, allow_partial: bool = False, chunks="auto", squeeze: bool = False):
    """The study's cube as a lazy ``xarray.Dataset`` (dask arrays; ``chunks`` as in ``xarray.open_zarr``).

    Refuses a store whose regions are not all done (``IncompleteStoreError``; pass
    ``allow_partial=True`` to read it: every per-trial value of a region that is not done, or whose
    chunks fail the cheap audit, reads as NaN, and so do the per-point values of a grid point whose
    block 0 (the task that writes them) is not done; ``ds.done`` says which regions are done), a store
    whose coordinates are not its study's grid or whose metadata differs from the template's
    (``StoreError`` naming it: a resume repairs it),
    a store of another layout version (``IncompatibleStoreError``) and anything that is not an
    rmt_engine cube (``StoreError``). The provenance is in ``ds.attrs``, and the deviations the
    Eq. 67 bounds were computed at as ``ds.attrs["bound_delta1"]``, ``ds.attrs["bound_delta2"]``
    (also inside ``config_canonical``). ``squeeze=True``: every grid dimension of length 1 becomes a
    scalar coordinate (``ds.n`` stays readable; ``ds.sel(n=...)`` is then not needed).
    """
    import xarray as xr  # noqa: PLC0415

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no result store at {p}")
    attrs = store_attrs(p)
    if attrs is None:
        raise StoreError(f"{p} is not a zarr store")
    check_version(attrs, p)
    if not attrs.get("template_complete"):
        raise IncompleteStoreError(f"{p} was interrupted while its template was being created: no data in it; "
                                   "rerun the study to recreate it")
    try:
        tcheck = check_template(p)
    except Exception as e:  # noqa: BLE001 - the root group or its coordinates do not read at all
        raise StoreError(f"{p}: damaged store, its coordinates cannot be read ({type(e).__name__}: {e}); run "
                         f"rmt-engine verify {p}, then resume the run (--store {p} --resume) to repair it") from None
    bad = tcheck.problems()
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise StoreError(f"{p}: damaged store: {bad[0]}{more}. Its values would be wrong: resume the run "
                         f"(rmt-engine run STUDY.toml --store {p} --resume) to rewrite it from the study's template")
    ds = xr.open_zarr(os.fspath(p), consolidated=False, chunks=chunks)
    ds = ds.drop_vars([CHECK_NAME], errors="ignore")  # the store's own bookkeeping, not a result
    try:
        canon = json.loads(ds.attrs.get("config_canonical", "{}"))
    except (TypeError, ValueError):
        canon = {}
    for key in ("bound_delta1", "bound_delta2"):
        if key in canon and key not in ds.attrs:
            ds.attrs[key] = float(canon[key])
    if allow_partial:
        ds = _mask_not_done(p, ds, attrs)
    if squeeze:
        ds = ds.squeeze([d for d in (*ALL_AXES, CASE_DIM) if d in ds.dims and ds.sizes[d] == 1])
    if not allow_partial:
        try:
            audit = audit_regions(p, deep=False, limit=20)
        except Exception as e:  # noqa: BLE001 - metadata gone, chunks of the done flags unreadable
            raise IncompleteStoreError(f"{p}: its done flags cannot be read ({e}); run rmt-engine verify on it "
                                       "and resume the run to repair it") from None
        done = audit.flags_set
        bad = [f"variable {v} (deleted)" for v in audit.deleted]
        bad += [f"{_region_label(r)}: {'; '.join(reasons)}" for r, reasons in audit.damaged.items()]
        if bad:
            n = len(bad)
            raise IncompleteStoreError(
                f"{p}: {n}{'+' if n >= 20 else ''} region(s) marked done have chunks missing or not as their "
                f"task wrote them (e.g. {bad[0]}): its data were deleted, damaged or never written. "
                f"Run rmt-engine verify on it, then resume the run (--store {p} --resume) to recompute them; pass "
                "allow_partial=True to read what is there")
        if not done.all():
            raise IncompleteStoreError(
                f"{p} is incomplete: {int((~done).sum())} of {done.size} regions (grid point x trial "
                f"block) are not done; resume the run (rmt-engine run STUDY.toml --store {p} --resume) "
                "or pass allow_partial=True")
    return ds


def _mask_not_done(p: Path, ds, attrs: dict):
    """``ds`` with every value not backed by a done region set to NaN: per-trial variables by the done
    flag of their trial's block, per-point variables by that of block 0 (whose task writes them).
    A region whose chunks fail the cheap audit (``audit_regions(deep=False)``) counts as not done."""
    import xarray as xr  # noqa: PLC0415

    if "done" not in ds or "trial_block" not in ds["done"].dims:
        return ds
    try:
        done_np = audit_regions(p, deep=False).done
    except Exception:  # noqa: BLE001 - unreadable flags: nothing can be vouched for
        done_np = np.zeros(ds["done"].shape, dtype=bool)
    done = xr.DataArray(done_np, dims=ds["done"].dims)
    tpt = int(attrs.get("trials_per_task", ds.sizes.get("trial", 1)) or 1)
    out = ds.copy()
    out["done"] = ds["done"].copy(data=done_np)
    trial_done = None
    if "trial" in ds.dims:
        blocks = xr.DataArray(np.arange(ds.sizes["trial"]) // tpt, dims="trial")
        trial_done = done.isel(trial_block=blocks)
    point_done = done.isel(trial_block=0)
    for name, var in ds.data_vars.items():
        if name == "done":
            continue
        if "trial" in var.dims:
            mask = trial_done
            if name.startswith("spectrum_n") and "n" in mask.dims and "n" not in var.dims:
                n_vals = [int(v) for v in np.ravel(ds["n"].values)]
                mask = mask.isel(n=n_vals.index(int(name[len("spectrum_n"):])))
        else:
            mask = point_done
        mask = mask.drop_vars(list(mask.coords), errors="ignore")
        if var.dtype.kind == "f":
            out[name] = var.where(mask)
        elif var.dtype.kind in "iub":  # no NaN: as float, NaN where not done
            out[name] = var.astype(np.float64).where(mask)
        out[name].attrs = dict(var.attrs)
        out[name].encoding = dict(var.encoding)
    return out


# --------------------------------------------------------------------------- lock file


def lock_path(path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".lock")


def _process_start_time(pid: int) -> float | None:
    try:
        import psutil  # noqa: PLC0415

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def _pid_alive(pid: int, start_time: float | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start_time is not None:
        now = _process_start_time(pid)
        if now is not None and abs(now - start_time) > 1.0:
            return False  # the PID was reused by another process
    return True


def flock_path(path) -> Path:
    """The file the OS lock (flock) of a store is taken on, beside the store; it stays in place."""
    p = Path(path)
    return p.with_name(p.name + ".flock")


class StoreLock:
    """One driver per store: an OS lock on ``PATH.flock``, and the record ``PATH.lock`` of who holds it.

    Acquisition is atomic: ``filelock.FileLock`` takes ``flock(LOCK_EX | LOCK_NB)`` on
    ``PATH.flock`` (a file that stays in place, so every contender locks the same inode), and the
    OS releases it when its process dies, however it dies: no stale lock is ever *broken*, two
    drivers can never hold the store at once. The holder then writes ``PATH.lock`` (JSON: PID,
    host, process start time, since; written to a temporary file and renamed) for the "in use by"
    message, and removes it before it lets the OS lock go. A ``PATH.lock`` found by the new holder
    was left by a driver that died (SIGKILL, a crash): ``on_message`` is told and it is replaced.
    A ``PATH.lock`` of another host, or of a live process on this host without the OS lock (an
    rmt_engine older than this lock), still refuses the store: delete it by hand if no driver runs.

    File systems without flock (some NFS mounts, FUSE file systems): filelock then falls back to its
    ``SoftFileLock`` (an exclusively created marker file recording the owner; a marker of a dead
    owner on the same host is removed by filelock) and warns "flock not supported on this
    filesystem"; that warning is passed to ``on_message``. On such a file system a driver killed
    on *another* host leaves its marker, and acquiring is only as atomic as exclusive file creation
    there. NFS mounts with working locking (lockd, NFSv4) serve flock through byte-range locks,
    which hold across hosts.
    """

    def __init__(self, path, on_message=None):
        self.path = lock_path(path)
        self.flock = flock_path(path)
        self.on_message = on_message or (lambda msg: None)
        self.held = False
        self._os_lock = None

    def _info(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "process_start": _process_start_time(os.getpid()), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def _read_info(self) -> dict | None:
        try:
            info = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def _locked_error(self, info: dict | None) -> StoreLockedError:
        info = info or {}
        pid, host = info.get("pid"), info.get("host")
        who = f"PID {pid} on host {host}" if pid is not None else "an unknown process"
        return StoreLockedError(
            f"the store is in use by another driver ({who}, since {info.get('since', '?')}): lock file "
            f"{self.path}. If no driver is running, delete that file and rerun.")

    def acquire(self) -> "StoreLock":
        import warnings  # noqa: PLC0415

        from filelock import FileLock, Timeout  # noqa: PLC0415

        lock = FileLock(os.fspath(self.flock), timeout=0, thread_local=False)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                lock.acquire()
        except Timeout:
            raise self._locked_error(self._read_info()) from None
        except NotImplementedError as e:  # an older filelock on a file system without flock
            raise StoreWriteError(f"cannot lock the store: the file system of {self.flock} has no flock ({e}); "
                                  "upgrade filelock (it then falls back to an exclusively created file)") from None
        except OSError as e:
            raise StoreWriteError(f"cannot lock the store: cannot create or open {self.flock} "
                                  f"({e.strerror or e}); is its directory {self.flock.parent} writable?") from None
        for w in caught:
            self.on_message(f"warning: {w.message} ({self.flock}): the store lock is an exclusively created file "
                            "there, not an OS lock (see rmt_engine.study.store.StoreLock)")
        self._os_lock = lock
        try:
            self._take_over(self._read_info())
            self._write_info()
        except BaseException:
            lock.release()
            self._os_lock = None
            raise
        self.held = True
        return self

    def _take_over(self, info: dict | None) -> None:
        """We hold the OS lock; ``info`` is a record found in ``PATH.lock`` (None: none)."""
        if info is None:
            return
        pid, host = info.get("pid"), info.get("host")
        if isinstance(pid, int) and host == socket.gethostname():
            if pid != os.getpid() and _pid_alive(pid, info.get("process_start")):
                raise self._locked_error(info)  # a live driver of an older rmt_engine (no OS lock)
            self.on_message(f"breaking stale lock {self.path} (driver PID {pid} on {host} is gone)")
        elif host is not None and host != socket.gethostname():
            raise self._locked_error(info)  # cannot tell whether it still runs
        else:
            self.on_message(f"replacing unreadable lock record {self.path} (its driver is gone: the OS lock was free)")

    def _write_info(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self._info()))
            os.replace(tmp, self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise StoreWriteError(f"cannot write the lock file {self.path}: {e.strerror or e}") from None

    def release(self) -> None:
        if self.held:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            finally:
                self.held = False
                if self._os_lock is not None:
                    self._os_lock.release()
                    self._os_lock = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def all_record_keys(t_values) -> list[str]:
    return list(record_fields(t_values))


# --------------------------------------------------------------------------- summaries

#: Per-trial quantities summarized by ``summarize`` (median and 5%/95% quantiles over trials).
SUMMARY_TRIAL_FIELDS = ("sigma_min_F", "sigma_max_F", "delta1", "delta2", "margin")
#: Per-grid-point quantities shown beside them (t-dependent lower bounds: the largest over t).
SUMMARY_POINT_FIELDS = ("lambda_min_EM0", "eq67_lower_sharp", "eq67_upper_sharp")


def summarize(path, quantiles=(0.05, 0.5, 0.95), fields=None) -> dict:
    """A plain-data summary of a cube (also a partial one) for ``rmt-engine show``.

    Returns ``{"attrs", "grid", "varying", "regions_done", "regions_total", "trials_done",
    "trials_total", "points": [{"labels", "trials_done", "stats": {field: (q...)},
    "point": {field: value}}]}``; not-done trials are left out of the statistics.
    """
    try:
        return _summarize(path, quantiles, fields)
    except StoreError:
        raise
    except Exception as e:  # a damaged chunk read by dask (CRC mismatch, undecodable bytes)
        clear = explain_read_error(path, e)
        if clear is None:
            raise
        raise clear from None


def _summarize(path, quantiles, fields) -> dict:
    ds = open_results(path, allow_partial=True)
    attrs = dict(ds.attrs)
    cube_dims = list(attrs.get("cube_dims", GRID_AXES))
    grid = {a: [v.item() if hasattr(v, "item") else v for v in np.ravel(ds[a].values)] for a in ALL_AXES
            if a in ds.coords}
    dim_values = {d: [v.item() if hasattr(v, "item") else v for v in ds[d].values] for d in cube_dims}
    linked = [a for a in ALL_AXES if a in ds.coords and ds[a].dims == (CASE_DIM,)]
    done = np.asarray(ds["done"].values, dtype=bool)
    trials = ds.sizes["trial"]
    tpt = int(attrs.get("trials_per_task", trials))
    # trial-level mask from the block-level mask
    blocks = np.arange(trials) // tpt
    tmask = done[..., blocks]  # grid dims x trial
    if fields is not None:
        unknown = [k for k in fields if k not in ds]
        if unknown:
            raise StoreError(f"unknown field(s) {unknown}; the cube has: {', '.join(sorted(ds.data_vars))}")
        trial_fields = [k for k in fields if "trial" in ds[k].dims]
        point_fields = [k for k in fields if "trial" not in ds[k].dims]
    else:
        trial_fields, point_fields = SUMMARY_TRIAL_FIELDS, SUMMARY_POINT_FIELDS
    stats = {k: np.asarray(ds[k].max("t", skipna=True).values if "t" in ds[k].dims else ds[k].values)
             for k in trial_fields if k in ds}
    point = {}
    for k in point_fields:
        if k in ds:
            v = ds[k]
            if "t" in v.dims:
                point[f"{k}(max over t)"] = np.asarray(v.max("t", skipna=True).values)
            else:
                point[k] = np.asarray(v.values)
    rows = []
    for idx in np.ndindex(*tmask.shape[:-1]):
        m = tmask[idx]
        labels = {d: dim_values[d][i] for d, i in zip(cube_dims, idx) if d != CASE_DIM}
        if CASE_DIM in cube_dims:
            k = idx[cube_dims.index(CASE_DIM)]
            labels.update({a: ds[a].values[k].item() for a in linked})
        row = {"labels": labels, "trials_done": int(m.sum()),
               "stats": {}, "point": {}}
        for k, arr in stats.items():
            vals = arr[idx][m]
            vals = vals[~np.isnan(vals)]
            row["stats"][k] = tuple(float(q) for q in np.quantile(vals, quantiles)) if vals.size else None
        for k, arr in point.items():
            row["point"][k] = float(arr[idx]) if done[idx][0] else None
        rows.append(row)
    varying = [a for a in ALL_AXES if (a in linked and len(dim_values.get(CASE_DIM, [])) > 1)
               or (a in dim_values and len(dim_values[a]) > 1)]
    return {"attrs": attrs, "grid": grid, "varying": varying,
            "regions_done": int(done.sum()), "regions_total": int(done.size), "trials_done": int(tmask.sum()),
            "trials_total": int(tmask.size), "quantiles": tuple(quantiles), "points": rows}
