"""``dsyrk`` through SciPy's Cython BLAS API, called so that the GIL is released.

``scipy.linalg.blas.dsyrk`` (an f2py wrapper) holds the GIL for the whole call, so a thread
running it stops every other Python thread of the process, and the lanes of
:func:`rmt_engine.gram.accumulate` could not overlap. SciPy also publishes every BLAS routine
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


@functools.lru_cache(maxsize=1)
def _dsyrk_pointer():
    from scipy.linalg import cython_blas  # noqa: PLC0415

    capsule = cython_blas.__pyx_capi__["dsyrk"]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return _DSYRK(get_pointer(capsule, get_name(capsule)))


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
    one = ctypes.c_double(1.0)
    nn, kk = ctypes.c_int(n), ctypes.c_int(k)
    # Column-major view: a = A^T is n x k with leading dimension n; C = 1 * a a^T + 1 * C.
    _dsyrk_pointer()(b"U", b"N", ctypes.byref(nn), ctypes.byref(kk), ctypes.byref(one),
                     A.ctypes.data, ctypes.byref(nn), ctypes.byref(one), C.ctypes.data, ctypes.byref(nn))
