"""Training data ``X`` (d0 x n, unit-norm columns, float64) and its validation.

Rules of this module
- ``make_data`` always returns a host (NumPy) float64 C-contiguous array; move it to a device
  with ``xp.asarray``. ``check_data`` and ``normalize_columns`` are array-generic (NumPy/CuPy).
- Every problem with the data raises ``ValueError`` with a message that names it (where, how
  many, what to do). ``make_data(kind="digits")`` raises ``ImportError`` without scikit-learn.

Data kinds (``DATA_KINDS``)
- ``"sphere"``: column i is row i of ``normal_rows(stream_key(seed, "data"), 0, n, d0)``
  normalized, i.e. uniform on the unit sphere S^{d0-1}. Prefix property: the data of n columns
  are the first n columns of the data of any larger n (same seed and d0), so an n sweep
  uses nested data sets. Changing d0 changes every column.
- ``"file"``: a ``.npy`` (the d0 x m array) or ``.npz`` (key ``"X"``, or its only array) file
  with m >= n columns; the first n columns are used (the same prefix rule as "sphere": one file
  serves an n sweep). The row count must equal d0. Columns must already have unit norm (within
  1e-10) unless ``normalize=True``, which normalizes them (and refuses zero columns).
- ``"digits"``: scikit-learn's bundled 8x8 digits (1797 images, no download; needs the
  ``data`` extra). d0 must be 64. The pixel mean over all 1797 images is subtracted (so the
  points are not all in the positive orthant; the mean does not depend on n), then columns are
  normalized. The columns are the first n of a fixed permutation drawn from
  ``Generator(Philox(SeedSequence(seed, spawn_key=(2,))))`` (2 = the "data" stream id), so the
  prefix property holds here too. Pixels 0, 32, 39 are 0 in every image: after centering the
  data span only 61 dimensions, which caps the rank of X^{*t} at C(61 + t - 1, t), not C(64 + t - 1, t).
"""

from __future__ import annotations

import os
from numbers import Integral

import numpy as np

from ..backend.xp import array_namespace
from .rng import STREAMS, normal_rows, stream_key

DATA_KINDS = ("sphere", "file", "digits")
#: Default tolerance on | ||x_a|| - 1 | for every column.
UNIT_NORM_ATOL = 1e-10
DIGITS_D0 = 64
DIGITS_N = 1797
#: Largest array a data file may hold (bytes of its header's shape x itemsize) before anything is
#: loaded: an .npz member is read whole (a .npy is memory-mapped, only its first n columns copied),
#: so a header claiming (1e6, 1e6) is refused with its size instead of a MemoryError.
MAX_DATA_FILE_BYTES = 4 * 2**30


def _first_index(mask) -> tuple[int, ...]:
    """Index (row, column) of the first True of a 2-D boolean mask, column by column."""
    xp = array_namespace(mask)
    flat = int(xp.argmax(mask.T.reshape(-1)))
    j, i = np.unravel_index(flat, mask.shape[::-1])
    return int(i), int(j)


def _check_matrix(X, name: str) -> None:
    if getattr(X, "ndim", None) != 2:
        shape = getattr(X, "shape", None)
        raise ValueError(f"{name} must be a 2-D array (d0 x n), got ndim={getattr(X, 'ndim', None)} shape={shape}")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column, got shape {X.shape}")
    if X.dtype.kind != "f":
        raise ValueError(f"{name} must have a real floating dtype, got {X.dtype}")


def _check_finite(X, name: str) -> None:
    xp = array_namespace(X)
    bad = ~xp.isfinite(X)
    nbad = int(bad.sum())
    if nbad:
        nnan = int(xp.isnan(X).sum())
        i, j = _first_index(bad)
        raise ValueError(
            f"{name} has {nbad} non-finite entries ({nnan} NaN, {nbad - nnan} inf); "
            f"the first (scanning column by column) is {name}[{i}, {j}] = {float(X[i, j])!r} (column {j})"
        )


def _column_scale_and_norms(X):
    """Per-column max |x| and Euclidean norm, computed without overflow/underflow."""
    xp = array_namespace(X)
    scale = xp.max(xp.abs(X), axis=0)
    safe = xp.where(scale > 0, scale, xp.ones_like(scale))
    Y = X / safe[None, :]
    return scale, safe * xp.sqrt(xp.sum(Y * Y, axis=0))


def _check_nonzero_columns(scale, name: str) -> None:
    xp = array_namespace(scale)
    zero = scale == 0
    nzero = int(zero.sum())
    if nzero:
        j = int(xp.argmax(zero))
        raise ValueError(
            f"{name} has {nzero} zero column(s) (the first is column {j}); a zero column cannot be "
            f"normalized to the unit sphere: remove it"
        )


def normalize_columns(X, *, name: str = "X"):
    """``X`` with every column divided by its Euclidean norm (same backend and dtype).

    Raises ValueError for a non-2-D or non-floating ``X``, NaN/inf entries, or zero columns.
    Norms are computed after scaling each column by its max |entry| (no overflow/underflow).
    """
    _check_matrix(X, name)
    _check_finite(X, name)
    scale, norms = _column_scale_and_norms(X)
    _check_nonzero_columns(scale, name)
    return X / norms[None, :]


def check_data(X, *, name: str = "X", atol: float = UNIT_NORM_ATOL):
    """Validate data ``X`` (d0 x n): 2-D, real floating, finite, no zero column, unit-norm columns.

    ``| ||x_a||_2 - 1 | <= atol`` for every column a. Returns ``X`` unchanged; raises ValueError
    naming the problem (the count and first position of NaN/inf, the worst column and its norm).
    """
    _check_matrix(X, name)
    _check_finite(X, name)
    xp = array_namespace(X)
    scale, norms = _column_scale_and_norms(X)
    _check_nonzero_columns(scale, name)
    dev = xp.abs(norms - 1.0)
    j = int(xp.argmax(dev))
    worst = float(dev[j])
    if not worst <= atol:
        nbad = int((dev > atol).sum())
        raise ValueError(
            f"{name} must have unit-norm columns: {nbad} of {X.shape[1]} columns deviate by more than "
            f"atol={atol:g}; the worst is column {j} with norm {float(norms[j])!r} "
            f"(|norm - 1| = {worst:.3g}). Pass normalize=True to make_data or call normalize_columns({name})"
        )
    return X


def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {v!r}")
    return int(v)


def make_data(kind: str, d0: int, n: int, seed: int = 0, *, path=None, normalize: bool = False) -> np.ndarray:
    """Data ``X``: float64 NumPy array of shape ``(d0, n)`` with unit-norm columns.

    ``kind`` in ``DATA_KINDS`` (see the module docstring for each kind and its prefix property);
    ``seed`` selects the "sphere" points and the "digits" subset (unused for "file");
    ``path`` is the .npy/.npz file of kind "file"; ``normalize`` (kind "file") normalizes the
    file's columns instead of requiring them to be unit already ("sphere" and "digits" are
    always normalized). Raises ValueError for bad arguments or data, FileNotFoundError for a
    missing file, ImportError for "digits" without scikit-learn.
    """
    if kind not in DATA_KINDS:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {DATA_KINDS}")
    d0 = _positive_int(d0, "d0")
    n = _positive_int(n, "n")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if kind != "file" and path is not None:
        raise ValueError(f"path is only used by kind='file', got path={path!r} with kind={kind!r}")
    if kind == "sphere":
        Z = normal_rows(stream_key(int(seed), "data"), 0, n, d0)  # (n, d0): row i -> column i
        X = normalize_columns(np.ascontiguousarray(Z.T))
    elif kind == "file":
        X = _load_file(path, d0, n, normalize)
    else:
        X = _digits(d0, n, int(seed))
    X = np.ascontiguousarray(X, dtype=np.float64)
    return check_data(X)


def _npz_member(path: str, zf) -> str:
    """The member of the .npz archive ``zf`` holding X: ``X.npy``, or its only member."""
    names = zf.namelist()
    if "X.npy" in names:
        return "X.npy"
    if len(names) == 1:
        return names[0]
    keys = [m[:-4] if m.endswith(".npy") else m for m in names]
    raise ValueError(f"{path!r}: an .npz data file needs a key 'X' or a single array; it has {keys}")


def _read_header(f, where: str):
    """(shape, dtype, fortran_order, header bytes) of the .npy stream ``f``; ValueError naming ``where``."""
    from numpy.lib import format as npf  # noqa: PLC0415

    try:
        version = npf.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npf.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npf.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, EOFError, OSError, SyntaxError, UnicodeDecodeError, TypeError) as e:
        raise ValueError(f"{where} is not a readable .npy array (empty, truncated or another format: {e})") from None
    return tuple(shape), dtype, fortran, f.tell()


def data_file_header(path) -> tuple[tuple, np.dtype]:
    """``(shape, dtype)`` of X in the .npy/.npz data file ``path``, read from its header alone
    (nothing loaded). ValueError naming the file when it is empty, truncated, not a NumPy array
    file, holds an object array, or claims more than ``MAX_DATA_FILE_BYTES``."""
    import zipfile  # noqa: PLC0415

    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"data file {path!r} is a directory, not a .npy or .npz file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} does not exist")
    if path.endswith(".npz"):
        try:
            with zipfile.ZipFile(path) as zf:
                member = _npz_member(path, zf)
                with zf.open(member) as f:
                    shape, dtype, _, _ = _read_header(f, f"data file {path!r}, member {member!r},")
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ValueError(f"data file {path!r} is not a readable .npz archive ({e})") from None
    elif path.endswith(".npy"):
        with open(path, "rb") as f:
            shape, dtype, _, offset = _read_header(f, f"data file {path!r}")
        if dtype.hasobject:
            raise ValueError(f"data file {path!r} holds Python objects (dtype {dtype}); X must be real numbers")
        need = offset + int(np.prod(shape, dtype=object)) * dtype.itemsize
        size = os.path.getsize(path)
        if size < need:
            raise ValueError(f"data file {path!r} is truncated: its header claims shape {shape} of {dtype} "
                             f"({need} bytes with the header) but the file has {size} bytes")
    else:
        raise ValueError(f"data file {path!r}: expected a .npy or .npz file")
    if dtype.hasobject:
        raise ValueError(f"data file {path!r} holds Python objects (dtype {dtype}); X must be real numbers")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes > MAX_DATA_FILE_BYTES:
        raise ValueError(f"data file {path!r}: its header claims an array of shape {shape} ({dtype}, "
                         f"{nbytes / 2**30:.3g} GiB) > the {MAX_DATA_FILE_BYTES / 2**30:g} GiB a data file may hold "
                         "(X is d0 x m with m >= n; keep only the columns a study uses)")
    return shape, dtype


def _check_header(path: str, shape: tuple, dtype, d0: int, n: int) -> str:
    name = f"X from {os.path.basename(path)!r}"
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D array (d0 x n), got shape {shape}")
    if dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {dtype}")
    if shape[0] != d0 or shape[1] < n:
        raise ValueError(
            f"{name} has shape {shape}; need {d0} rows (d0) and at least {n} columns (n) "
            f"(the first n columns are used)"
        )
    return name


def check_data_file(path, d0: int, n: int) -> None:
    """Check the data file ``path`` against ``d0`` and ``n`` from its header alone (``validate``
    and the study spec call it before anything runs); ValueError naming the problem."""
    path = os.fspath(path)
    shape, dtype = data_file_header(path)
    _check_header(path, shape, dtype, d0, n)


def _load_file(path, d0: int, n: int, normalize: bool) -> np.ndarray:
    if path is None:
        raise ValueError("kind='file' needs path= (a .npy or .npz file holding X, d0 x n)")
    path = os.fspath(path)
    shape, dtype = data_file_header(path)  # every header problem, before anything is loaded
    name = _check_header(path, shape, dtype, d0, n)
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                A = z["X"] if "X" in keys else z[keys[0]]
        else:
            A = np.load(path, allow_pickle=False, mmap_mode="r")  # only the first n columns are read
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"data file {path!r} could not be read: {e}") from None
    if not isinstance(A, np.ndarray):  # an .npz member that is not an .npy array comes back as bytes
        raise ValueError(f"data file {path!r}: its array member is not a .npy array")
    X = np.ascontiguousarray(A[:, :n], dtype=np.float64)
    del A
    if normalize:
        return normalize_columns(X, name=name)
    return check_data(X, name=name)


def _digits(d0: int, n: int, seed: int) -> np.ndarray:
    if d0 != DIGITS_D0:
        raise ValueError(f"kind='digits' has d0 = {DIGITS_D0} (8x8 pixels), got d0={d0}")
    if n > DIGITS_N:
        raise ValueError(f"kind='digits' has {DIGITS_N} images, got n={n}")
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415 - optional extra
    except ImportError as e:
        raise ImportError(
            "data kind 'digits' needs scikit-learn: pip install rmt-engine[data]"
        ) from e
    images = np.asarray(load_digits().data, dtype=np.float64)  # (1797, 64)
    centered = images - images.mean(axis=0, keepdims=True)
    gen = np.random.Generator(np.random.Philox(np.random.SeedSequence(seed, spawn_key=(STREAMS["data"],))))
    idx = gen.permutation(DIGITS_N)[:n]
    return normalize_columns(np.ascontiguousarray(centered[idx].T))
