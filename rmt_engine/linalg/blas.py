"""``dsyrk`` through SciPy's Cython BLAS API, called so that the GIL is released.

``scipy.linalg.blas.dsyrk`` (an f2py wrapper) holds the GIL for the whole call, so a thread
running it stops every other Python thread of the process, and the lanes of
:func:`rmt_engine.montecarlo.gram.accumulate` could not overlap. SciPy also publishes every BLAS routine
as a C function in ``scipy.linalg.cython_blas.__pyx_capi__`` (the route numba takes to reach
LAPACK); calling that pointer through ``ctypes`` releases the GIL for the duration of the call.
Same library, same routine, same numbers as ``scipy.linalg.blas.dsyrk``.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

_int_p = ctypes.POINTER(ctypes.c_int)
_dbl_p = ctypes.POINTER(ctypes.c_double)
# void dsyrk(char *uplo, char *trans, int *n, int *k, double *alpha, double *a, int *lda,
#            double *beta, double *c, int *ldc)   (Fortran BLAS, column-major)
_DSYRK = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, _int_p, _int_p, _dbl_p,
                          ctypes.c_void_p, _int_p, _dbl_p, ctypes.c_void_p, _int_p)


#: The C signature SciPy's Cython BLAS publishes for dsyrk (``d`` is its typedef of double).
_EXPECTED = ("void (char *, char *, int *, int *, {d} *, {d} *, int *, {d} *, {d} *, int *)")


@functools.lru_cache(maxsize=1)
def _dsyrk_pointer():
    """The GIL-free dsyrk, or None when this SciPy publishes another signature (then the f2py one is used)."""
    from scipy.linalg import cython_blas  # noqa: PLC0415

    capsule = cython_blas.__pyx_capi__.get("dsyrk")
    if capsule is None:  # pragma: no cover - every SciPy >= 0.16 has it
        return None
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    name = get_name(capsule)
    signature = name.decode()
    double = signature.split("int *, int *, ")[1].split(" *")[0] if "int *, int *, " in signature else "?"
    if signature != _EXPECTED.format(d=double):  # pragma: no cover - e.g. a 64-bit-integer BLAS
        return None
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return _DSYRK(get_pointer(capsule, name))


def gil_free_syrk() -> bool:
    """Whether ``syrk_upper_update`` releases the GIL here (SciPy's Cython BLAS signature recognized)."""
    return _dsyrk_pointer() is not None


def syrk_upper_update(C: np.ndarray, A: np.ndarray) -> None:
    """``C += A^T A`` on the upper triangle of ``C``, in place, GIL released.

    C: n x n float64, Fortran-ordered (only its upper triangle is read and written).
    A: k x n float64, C-contiguous (so ``A^T`` is the Fortran-ordered n x k operand).
    """
    n = C.shape[0]
    if C.shape != (n, n) or C.dtype != np.float64 or not C.flags.f_contiguous or not C.flags.writeable:
        raise ValueError(f"C must be a writable Fortran-ordered float64 square matrix, got {C.shape} {C.dtype}")
    if A.ndim != 2 or A.shape[1] != n or A.dtype != np.float64 or not A.flags.c_contiguous:
        raise ValueError(f"A must be a C-contiguous float64 (k, {n}) matrix, got {A.shape} {A.dtype}")
    k = A.shape[0]
    if k == 0 or n == 0:
        return
    dsyrk = _dsyrk_pointer()
    if dsyrk is None:  # the same routine through f2py, holding the GIL
        from scipy.linalg.blas import dsyrk as f2py_dsyrk  # noqa: PLC0415

        out = f2py_dsyrk(1.0, A.T, beta=1.0, c=C, trans=0, lower=0, overwrite_c=1)
        if out is not C:  # pragma: no cover - f2py works in place on a Fortran-ordered C
            C[...] = out
        return
    one = ctypes.c_double(1.0)
    nn, kk = ctypes.c_int(n), ctypes.c_int(k)
    # Column-major view: a = A^T is n x k with leading dimension n; C = 1 * a a^T + 1 * C.
    dsyrk(b"U", b"N", ctypes.byref(nn), ctypes.byref(kk), ctypes.byref(one),
          A.ctypes.data, ctypes.byref(nn), ctypes.byref(one), C.ctypes.data, ctypes.byref(nn))
