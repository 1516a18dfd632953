"""Thin CuPy wrappers around the custom CUDA kernels (``kernels/*.cu``): the only GPU-specific code.

Rules of this module
- Importing it never imports CuPy; every function gets CuPy through ``rmt_engine.backend.xp``
  (``get_xp("cupy")``, which raises a clear RuntimeError without CuPy or a device).
- Each function has the same contract as its NumPy reference, and the results agree:
  ``normal_rows_gpu`` <-> ``rng.normal_rows`` (Philox words bit for bit, normals to a few ulp),
  ``philox_words_gpu`` <-> ``rng.philox4x32``, ``box_muller_gpu`` <-> ``rng.box_muller``,
  ``apply_activation_gpu`` <-> ``activations.activation(name).phi/dphi/ddphi``,
  ``khatri_rao_gpu`` <-> ``khatri_rao.khatri_rao`` (bitwise), ``hadamard_power_gpu`` <-> ``G**t``.
- Kernels take float64, C-contiguous device arrays; inputs of another dtype or layout are
  converted (copied) first and the conversion is documented per function.
- Launches use a grid-stride loop (``_launch``) with 64-bit element counts, so any size fits.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from . import cuda as _cuda

#: Activation ids of ``kernels/activations.cuh`` (RMT_ACT_*). A test checks the two agree.
ACTIVATION_IDS: dict[str, int] = {"gelu": 0, "tanh": 1, "sigmoid": 2, "softplus": 3, "erf": 4}

_THREADS = 256
_MAX_BLOCKS = 65535 * 16  # grid-stride loops cover the rest


def _cp():
    from .xp import get_xp  # noqa: PLC0415

    return get_xp("cupy")


def _launch(kernel, n: int, args: tuple) -> None:
    if n <= 0:
        return
    blocks = min((n + _THREADS - 1) // _THREADS, _MAX_BLOCKS)
    kernel((blocks,), (_THREADS,), args)


def _key_words(key) -> tuple[np.uint32, np.uint32]:
    k = np.asarray(key)
    if k.size != 2:
        raise ValueError(f"a Philox key is 2 uint32 words, got shape {k.shape}")
    if k.dtype.kind not in "ui":
        raise ValueError(f"a Philox key must hold integers, got dtype {k.dtype}")
    k = k.reshape(2).astype(np.int64)
    if np.any(k < 0) or np.any(k > 0xFFFFFFFF):
        raise ValueError(f"Philox key words must be in [0, 2**32), got {k.tolist()}")
    return np.uint32(k[0]), np.uint32(k[1])


def _float64_contiguous(cp, a, name: str):
    if not hasattr(a, "dtype"):
        a = cp.asarray(a)
    if a.dtype.kind != "f":
        raise TypeError(f"{name} must have a real floating dtype, got {a.dtype}")
    return cp.ascontiguousarray(cp.asarray(a, dtype=cp.float64))


def _int_arg(v, name: str, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, Integral) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


# ------------------------------------------------------------------------------------------------
# sampling (kernels/sample.cu)


def normal_rows_gpu(key, row_start: int, row_stop: int, ncols: int, scale: float = 1.0):
    """Rows ``row_start:row_stop`` of the ``(?, ncols)`` standard-normal matrix of ``key``, times ``scale``.

    Same contract as :func:`rmt_engine.sampling.rng.normal_rows`; returns a C-contiguous float64 CuPy
    array of shape ``(row_stop - row_start, ncols)`` written directly by the kernel (no host copy).
    """
    if not (isinstance(row_start, Integral) and isinstance(row_stop, Integral) and 0 <= row_start <= row_stop):
        raise ValueError(f"need 0 <= row_start <= row_stop, got {row_start}, {row_stop}")
    if not isinstance(ncols, Integral) or ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    k0, k1 = _key_words(key)
    cp = _cp()
    nrows = int(row_stop) - int(row_start)
    out = cp.empty((nrows, int(ncols)), dtype=cp.float64)
    npairs = (int(ncols) + 1) // 2
    fn = _cuda.get_function("sample.cu", "rmt_normal_rows")
    _launch(fn, nrows * npairs, (out, k0, k1, np.uint64(row_start), np.int64(nrows), np.int64(ncols),
                                 np.float64(scale)))
    return out


def philox_words_gpu(counter, key):
    """Philox4x32-10 of ``counter`` (shape ``(..., 4)``, uint32; host or device) under ``key``.

    Same contract as :func:`rmt_engine.sampling.rng.philox4x32` (10 rounds); returns a uint32 CuPy array.
    """
    cp = _cp()
    ctr = cp.ascontiguousarray(cp.asarray(counter, dtype=cp.uint32))
    if ctr.shape[-1:] != (4,):
        raise ValueError(f"counter must have a trailing axis of 4 words, got shape {ctr.shape}")
    k0, k1 = _key_words(key)
    out = cp.empty_like(ctr)
    n = ctr.size // 4
    _launch(_cuda.get_function("sample.cu", "rmt_philox_words"), n, (ctr, out, np.int64(n), k0, k1))
    return out


def box_muller_gpu(words):
    """Two standard normals from each block of four uint32 words (``(..., 4)`` -> ``(..., 2)`` float64).

    Same contract as :func:`rmt_engine.sampling.rng.box_muller`.
    """
    cp = _cp()
    w = cp.ascontiguousarray(cp.asarray(words, dtype=cp.uint32))
    if w.shape[-1:] != (4,):
        raise ValueError(f"words must have a trailing axis of 4, got shape {w.shape}")
    out = cp.empty(w.shape[:-1] + (2,), dtype=cp.float64)
    n = w.size // 4
    _launch(_cuda.get_function("sample.cu", "rmt_box_muller"), n, (w, out, np.int64(n)))
    return out


# ------------------------------------------------------------------------------------------------
# activations (kernels/activations.cu)


def activation_id(name: str) -> int:
    """The kernel id of a built-in activation (``ValueError`` naming the valid ones otherwise)."""
    if not isinstance(name, str) or name.strip().lower() not in ACTIVATION_IDS:
        raise ValueError(
            f"no CUDA kernel for activation {name!r}; kernels exist for: {', '.join(sorted(ACTIVATION_IDS))} "
            "(a user-registered activation runs through its own xp-generic phi instead)"
        )
    return ACTIVATION_IDS[name.strip().lower()]


def apply_activation_gpu(name: str, x, derivative: int = 0, *, out=None):
    """``phi^(derivative)(x)`` elementwise (``derivative`` in 0, 1, 2) with the CUDA kernel.

    ``x``: CuPy array (any real dtype; computed in float64). ``out=None`` returns a new float64
    array; ``out=x`` (a C-contiguous float64 array) overwrites x in place, the cheap way to form
    ``F_b = phi(W0_b X)`` on the GEMM output. ``out`` of another dtype receives the float64
    values cast to it.
    """
    act = activation_id(name)
    if derivative not in (0, 1, 2) or isinstance(derivative, bool):
        raise ValueError(f"derivative must be 0, 1 or 2, got {derivative!r}")
    cp = _cp()
    fn = _cuda.get_function("activations.cu", "rmt_activation_inplace")
    inplace = (out is not None and out is x and out.dtype == cp.float64 and out.flags.c_contiguous)
    buf = x if inplace else _float64_contiguous(cp, x, "x")
    if buf is x and not inplace:
        buf = buf.copy()  # x was already float64 and contiguous: do not overwrite it
    _launch(fn, buf.size, (buf, np.int64(buf.size), np.int32(act), np.int32(derivative)))
    if out is None or out is buf:
        return buf
    out[...] = buf
    return out


def activation_all_gpu(name: str, x):
    """``(phi(x), phi'(x), phi''(x))`` as three new float64 CuPy arrays, in one kernel pass."""
    act = activation_id(name)
    cp = _cp()
    phi = _float64_contiguous(cp, x, "x")
    if phi is x:
        phi = phi.copy()
    d1 = cp.empty_like(phi)
    d2 = cp.empty_like(phi)
    _launch(_cuda.get_function("activations.cu", "rmt_activation_all"), phi.size,
            (phi, d1, d2, np.int64(phi.size), np.int32(act)))
    return phi, d1, d2


# ------------------------------------------------------------------------------------------------
# Khatri-Rao and Hadamard powers (kernels/khatri_rao.cu)


def khatri_rao_gpu(X, t: int, *, max_bytes: int = 2**30):
    """The explicit ``X^{*t}`` (``d0**t x n``, float64 CuPy) of ``X`` (``d0 x n``); for verification.

    Column a is ``vec(x_a kron ... kron x_a)`` in ``np.kron`` order, products taken left to right
    as in :func:`rmt_engine.theory.khatri_rao.khatri_rao` (bitwise equal). ``t = 0`` gives the 1 x n
    row of ones. Refuses (ValueError) results above ``max_bytes``: use ``hadamard_power_gpu``
    on ``G = X^T X`` for the Gram matrix instead.
    """
    t = _int_arg(t, "the Khatri-Rao order t", 0)
    cp = _cp()
    if getattr(X, "ndim", None) != 2 or min(X.shape) < 1:
        raise ValueError(f"X must be a non-empty 2-D array (d0 x n), got shape {getattr(X, 'shape', None)}")
    Xc = _float64_contiguous(cp, X, "X")
    d0, n = Xc.shape
    rows = d0**t
    nbytes = rows * n * 8
    if nbytes > max_bytes:
        raise ValueError(
            f"khatri_rao_gpu(X, t={t}) would be {d0}^{t} x {n} float64 = {nbytes} bytes > max_bytes={max_bytes}; "
            "use hadamard_power_gpu(X.T @ X, t) for its Gram matrix"
        )
    out = cp.empty((rows, n), dtype=cp.float64)
    _launch(_cuda.get_function("khatri_rao.cu", "rmt_khatri_rao"), rows * n,
            (Xc, out, np.int64(d0), np.int64(n), np.int32(t), np.int64(rows)))
    return out


def hadamard_power_gpu(G, t: int, *, out=None):
    """``G^{o t}`` elementwise (float64 CuPy; ``out=G`` works in place for float64 contiguous G).

    t = 2 is ``G * G`` bitwise; t >= 3 uses CUDA's ``pow`` (within 2 ulp of NumPy's ``G**t``).
    """
    t = _int_arg(t, "the Hadamard power t", 0)
    cp = _cp()
    inplace = out is not None and out is G and G.dtype == cp.float64 and G.flags.c_contiguous
    src = G if inplace else _float64_contiguous(cp, G, "G")
    dst = src if inplace else cp.empty_like(src)
    _launch(_cuda.get_function("khatri_rao.cu", "rmt_hadamard_power"), src.size,
            (src, dst, np.int64(src.size), np.int32(t)))
    if out is None or out is dst:
        return dst
    out[...] = dst
    return out
