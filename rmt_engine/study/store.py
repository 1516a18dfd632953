"""The result cube: one zarr store per study, written region by region, read with xarray.

Rules of this module
- Layout (``STORE_VERSION = 2``). Dimensions are *every* grid axis of ``GRID_AXES`` (also the
  ones with a single value, so every cube has the same dims and ``ds.sel(w2=1.0)`` always works),
  then ``trial``; variables of t-dependent fields get a trailing ``t`` dimension (the explicit
  Khatri-Rao orders of the study) instead of one variable per ``_t{t}`` suffix; with ``t = "auto"``
  in the study each such field also has a variable ``{field}_auto`` without ``t`` (its value at
  the per-point order ``t_auto``).
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
- A task writes its data first and marks ``done`` in a separate, later write. zarr's LocalStore
  writes each chunk to a temporary file and renames it, so a killed task leaves whole old or new
  chunks, and a region is complete exactly when its ``done`` flag is set.
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
import json
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..montecarlo.fields import AUTO_T, FIELDS, field_name, int_orders, record_fields

#: Bumped whenever the layout changes incompatibly; ``open_results`` refuses other versions.
STORE_VERSION = 2
GRID_AXES = ("activation", "data", "n", "d0", "d1", "d2", "w1", "w2")
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
           train=None) -> list[Variable]:
    """Every variable of the cube (fields in record order, then training, spectra, then ``done``).

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
    for base, info in FIELDS.items():
        dims, shape, chunks = gdims, gshape, gchunks
        if not info.per_point:
            dims, shape, chunks = dims + ("trial",), shape + (trials,), chunks + (trials_per_task,)
        if not info.per_t:
            out.append(Variable(base, base, dims, shape, chunks, info.per_point, False))
            continue
        if nt:
            out.append(Variable(base, base, dims + ("t",), shape + (nt,), chunks + (nt,), info.per_point, True,
                                t_values=orders))
        if AUTO_T in t_values:
            out.append(Variable(field_name(base, AUTO_T), base, dims, shape, chunks, info.per_point, False,
                                t_values=(AUTO_T,)))
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
    out.append(Variable("done", "done", gdims + ("trial_block",), gshape + (nb,), gchunks + (1,), False, False))
    return out


def spectrum_name(n: int) -> str:
    return f"spectrum_n{int(n)}"


def region(var: Variable, point: tuple[int, ...], block: int, trials: int, trials_per_task: int) -> tuple[slice, ...]:
    """The index of ``var`` written by the task (``point``, ``block``) (a tuple of slices)."""
    if var.base == "done":
        return tuple(slice(i, i + 1) for i in point) + (slice(block, block + 1),)
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
    if var.base == "done":
        return {"long_name": "1 where the trial block's region is written completely",
                "description": "block b holds trials [b*trials_per_task, (b+1)*trials_per_task)"}
    if var.base == "spectrum":
        return {"long_name": f"eigenvalues of M0 = phi(W0 X)^T phi(W0 X), ascending (n = {var.n})",
                "equation": "Eq. 59", "units": "1"}
    if var.base not in FIELDS:
        from ..montecarlo.train import CURVE_FIELD, CURVE_NAME, TRAIN_FIELDS  # noqa: PLC0415

        info = CURVE_FIELD if var.base == CURVE_NAME else TRAIN_FIELDS[var.base]
        return {"long_name": info.long_name, "equation": info.equation, "units": info.units, "per_grid_point": 0}
    info = FIELDS[var.base]
    attrs = {"long_name": info.long_name, "equation": info.equation, "units": info.units,
             "per_grid_point": int(info.per_point)}
    if var.per_t:
        attrs["long_name"] = info.long_name + " (per Khatri-Rao order t)"
    elif var.t_values == (AUTO_T,):
        attrs["long_name"] = info.long_name + " (at t = t_auto, the smallest informative order)"
    return attrs


def create_template(path, grid: dict, t_values, trials: int, trials_per_task: int,
                    save_spectrum: bool, attrs: dict, train=None) -> None:
    """Write the metadata, the coordinates and an all-False ``done`` mask; fails if ``path`` exists."""
    import dask.array as da  # noqa: PLC0415
    import xarray as xr  # noqa: PLC0415

    variables = {}
    encoding = {}
    for var in layout(grid, t_values, trials, trials_per_task, save_spectrum, train):
        if var.base == "done":
            data = np.zeros(var.shape, dtype=bool)
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
    ds = xr.Dataset(variables, coords=coords, attrs=_jsonable_attrs(attrs))
    ds.to_zarr(os.fspath(path), mode="w-", compute=False, consolidated=False, encoding=encoding)
    # the numpy 'done' mask may or may not be written eagerly; make it explicit
    g = _open_group(path, "r+")
    g["done"][...] = np.zeros(g["done"].shape, dtype=bool)
    g.attrs["variables"] = sorted(variables)  # what verify_store expects to find
    g.attrs["cube_dims"] = list(axes.dims)
    g.attrs["template_complete"] = True  # last: a template interrupted before this is recreated


def _compressors():
    """Zstd, then a CRC-32C checksum of every chunk: a flipped byte fails the read instead of
    reading back as a number (``verify_store`` reads every chunk)."""
    from zarr.codecs import Crc32cCodec, ZstdCodec  # noqa: PLC0415

    return [ZstdCodec(), Crc32cCodec()]


def _jsonable_attrs(attrs: dict) -> dict:
    return json.loads(json.dumps(attrs, default=str))


# --------------------------------------------------------------------------- reading / writing


def _open_group(path, mode="r"):
    import zarr  # noqa: PLC0415

    return zarr.open_group(os.fspath(path), mode=mode)


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
        if name != "done" and c.is_dir() and any(f.is_file() for f in c.rglob("*")):
            return True
    return False


def read_done(path) -> np.ndarray:
    """The ``done`` mask (grid dims x trial_block) as a NumPy bool array."""
    return np.asarray(_open_group(path, "r")["done"][...], dtype=bool)


def write_task(path, variables: list[Variable], point: tuple[int, ...], block: int, trials: int,
               trials_per_task: int, values: dict[str, np.ndarray]) -> None:
    """Write one task's region of every variable in ``values``, then mark it done.

    ``values[name]`` has the shape of the region without the length-1 grid axes. Every region
    (``done``'s too) is checked to cover whole chunks (or shards) of its array before anything is
    written. The variables are opened and written concurrently with zarr's asynchronous API (a
    task writes ~50 small chunks: about 2x faster than one after the other); ``done`` is written
    after all of them. Inside a running event loop (a notebook cell calling this directly) they
    are written one after the other instead.
    """
    by_name = {v.name: v for v in variables}
    writes = [(name, region(by_name[name], point, block, trials, trials_per_task), data)
              for name, data in values.items()]
    done_idx = region(by_name["done"], point, block, trials, trials_per_task)
    writes.append(("done", done_idx, np.ones(tuple(s.stop - s.start for s in done_idx), dtype=bool)))
    import zarr  # noqa: PLC0415

    # every chunk of a done region is stored, also an all-NaN one (zarr skips chunks equal to the
    # fill value by default): a missing chunk file then always means lost data (``missing_chunks``)
    with zarr.config.set({"array.write_empty_chunks": True}):
        _write_all(path, writes)


def _write_all(path, writes) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_write_regions_async(os.fspath(path), writes))
        return
    g = _open_group(path, "r+")
    *data_regions, (done, idx, ones) = [_checked_region(g[name], name, idx, data) for name, idx, data in writes]
    for arr, idx_, data in data_regions:
        arr[idx_] = data
    done[idx] = ones


def _checked_region(arr, name: str, idx: tuple, data):
    """``(arr, idx, data shaped as the region)`` after checking that ``idx`` covers whole chunks of ``arr``."""
    check_region_alignment(idx, arr.shape, write_chunk_shape(arr), name)
    return arr, idx, np.asarray(data, dtype=arr.dtype).reshape(tuple(s.stop - s.start for s in idx))


async def _write_regions_async(path: str, writes: list) -> None:
    """``write_task``'s writes (the last one is ``done``), the others concurrently and before it."""
    import zarr.api.asynchronous as zasync  # noqa: PLC0415

    g = await zasync.open_group(store=path, mode="r+")
    arrays = await asyncio.gather(*(g.getitem(name) for name, _, _ in writes))
    *data_regions, (done, idx, ones) = [_checked_region(arr, *w) for arr, w in zip(arrays, writes)]
    await asyncio.gather(*(arr.setitem(idx_, data) for arr, idx_, data in data_regions))
    await done.setitem(idx, ones)


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


def missing_chunks(path, limit: int = 20) -> list[str]:
    """Chunks of done regions whose file is missing (a deleted chunk would read as NaN): a cheap
    audit by file presence, run by ``open_results``. Returns up to ``limit`` descriptions."""
    p = Path(path)
    g = _open_group(p, "r")
    done = np.asarray(g["done"][...], dtype=bool)
    if not done.any():
        return []
    tpt = int(g.attrs.get("trials_per_task", 1))
    cube_dims = tuple(g.attrs.get("cube_dims", GRID_AXES))
    data_names = set(g.attrs.get("variables", g.array_keys()))
    out = [f"variable {v} (deleted)" for v in g.attrs.get("variables", []) if not (p / v / "zarr.json").is_file()]
    for name in g.array_keys():
        arr = g[name]
        dims = arr.metadata.dimension_names or ()
        if name == "done" or not set(cube_dims) <= set(dims) or name not in data_names:
            continue
        chunks = write_chunk_shape(arr)
        gi = [dims.index(a) for a in cube_dims]
        for idx in zip(*np.nonzero(done)):
            point, block = idx[:-1], idx[-1]
            if "trial" not in dims and block != 0:
                continue
            cidx = [0] * len(dims)
            for a, i in zip(gi, point):
                cidx[a] = int(i)
            if "trial" in dims:
                cidx[dims.index("trial")] = int(block * tpt // chunks[dims.index("trial")])
            if not _chunk_key(p / name, tuple(cidx)).is_file():
                out.append(f"{name} chunk {tuple(cidx)} (grid point {tuple(int(i) for i in point)}, trial block "
                           f"{int(block)})")
                if len(out) >= limit:
                    return out
    return out


def verify_store(path) -> list[str]:
    """Read every chunk of every variable (CRC-32C checked) and audit chunk presence: the problems found.

    An empty list means every region marked done is whole and unaltered. ``rmt-engine verify STORE``.
    """
    problems = [f"missing: {m}" for m in missing_chunks(path, limit=1000)]
    g = _open_group(path, "r")
    for name in g.array_keys():
        try:
            g[name][...]
        except Exception as e:  # a checksum mismatch, a truncated or garbage chunk
            problems.append(f"corrupt: {name}: {type(e).__name__}: {e}")
    return problems


def open_results(path, *, allow_partial: bool = False, chunks="auto"):
    """The study's cube as a lazy ``xarray.Dataset`` (dask arrays; ``chunks`` as in ``xarray.open_zarr``).

    Refuses a store whose regions are not all done (``IncompleteStoreError``; pass
    ``allow_partial=True`` to read it: not-done trials read as NaN and ``ds.done`` says which),
    a store of another layout version (``IncompatibleStoreError``) and anything that is not an
    rmt_engine cube (``StoreError``). The provenance is in ``ds.attrs``.
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
    ds = xr.open_zarr(os.fspath(p), consolidated=_is_consolidated(p), chunks=chunks)
    if not allow_partial:
        done = np.asarray(ds["done"].values, dtype=bool)
        missing = missing_chunks(p) if done.all() else []
        if missing:
            raise IncompleteStoreError(
                f"{p} is marked complete but {len(missing)}{'+' if len(missing) >= 20 else ''} chunk(s) of done "
                f"regions are missing (e.g. {missing[0]}): its data were deleted or never written. "
                "Run rmt-engine verify on it; pass allow_partial=True to read what is there")
        if not done.all():
            raise IncompleteStoreError(
                f"{p} is incomplete: {int((~done).sum())} of {done.size} regions (grid point x trial "
                f"block) are not done; resume the run (rmt-engine run STUDY.toml --store {p} --resume) "
                "or pass allow_partial=True")
    return ds


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


class StoreLock:
    """``PATH.lock`` beside the store, created exclusively (O_EXCL) with the driver's PID and host.

    A lock left by a dead driver on this host (a PID that no longer exists, or was reused) is
    broken, and ``on_message`` is told so; a live one (or one from another host) raises
    ``StoreLockedError``.
    """

    def __init__(self, path, on_message=None):
        self.path = lock_path(path)
        self.on_message = on_message or (lambda msg: None)
        self.held = False

    def _info(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "process_start": _process_start_time(os.getpid()), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def acquire(self) -> "StoreLock":
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self._info(), f)
            self.held = True
            return self
        raise StoreLockedError(f"could not acquire {self.path}")

    def _handle_existing(self) -> None:
        try:
            info = json.loads(self.path.read_text())
        except (OSError, ValueError):
            info = {}
        pid, host = info.get("pid"), info.get("host")
        if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid, info.get("process_start")):
            self.on_message(f"breaking stale lock {self.path} (driver PID {pid} on {host} is gone)")
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            return
        who = f"PID {pid} on host {host}" if pid is not None else "an unknown process"
        raise StoreLockedError(
            f"the store is in use by another driver ({who}, since {info.get('since', '?')}): lock file "
            f"{self.path}. If no driver is running, delete that file and rerun.")

    def release(self) -> None:
        if self.held:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            self.held = False

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
    ds = open_results(path, allow_partial=True)
    attrs = dict(ds.attrs)
    cube_dims = list(attrs.get("cube_dims", GRID_AXES))
    grid = {a: [v.item() if hasattr(v, "item") else v for v in np.ravel(ds[a].values)] for a in GRID_AXES}
    dim_values = {d: [v.item() if hasattr(v, "item") else v for v in ds[d].values] for d in cube_dims}
    linked = [a for a in GRID_AXES if a in ds.coords and ds[a].dims == (CASE_DIM,)]
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
    varying = [a for a in GRID_AXES if (a in linked and len(dim_values.get(CASE_DIM, [])) > 1)
               or (a in dim_values and len(dim_values[a]) > 1)]
    return {"attrs": attrs, "grid": grid, "varying": varying,
            "regions_done": int(done.sum()), "regions_total": int(done.size), "trials_done": int(tmask.sum()),
            "trials_total": int(tmask.size), "quantiles": tuple(quantiles), "points": rows}
