"""Array backends: the only module that imports CuPy, and only when asked.

Rules of this module
- ``get_xp(name)`` returns the array namespace (``numpy`` or ``cupy``); ``"auto"`` picks CuPy
  when a CUDA device is usable, NumPy otherwise.
- ``array_namespace(*arrays)`` finds the namespace of existing arrays without importing CuPy
  (it looks at the type's module name, as array-api-compat does).
- ``to_numpy(a)`` brings any array back to host memory.
Every other module receives ``xp`` as an argument or derives it from its inputs.
"""

from __future__ import annotations

import functools
import types

import numpy as np

BACKENDS = ("auto", "numpy", "cupy")


@functools.lru_cache(maxsize=1)
def _cupy_or_none():
    try:
        import cupy  # noqa: PLC0415 - deliberately lazy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # ImportError, CUDARuntimeError, missing driver ...
        return None


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return _cupy_or_none() is not None


def get_xp(backend: str = "numpy") -> types.ModuleType:
    """Return the array namespace for ``backend`` in ``BACKENDS``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "numpy":
        return np
    cp = _cupy_or_none()
    if cp is None:
        if backend == "cupy":
            raise RuntimeError("backend='cupy' requested but CuPy or a CUDA device is not available")
        return np
    return cp


def is_cupy_array(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def array_namespace(*arrays) -> types.ModuleType:
    """The namespace of ``arrays``: CuPy if any is a CuPy array, else NumPy."""
    for a in arrays:
        if is_cupy_array(a):
            return _cupy_or_none() or __import__("cupy")
    return np


def to_numpy(a) -> np.ndarray:
    """Host copy of ``a`` (a no-op for NumPy arrays)."""
    if is_cupy_array(a):
        return a.get()
    return np.asarray(a)


def backend_name(xp) -> str:
    return "cupy" if xp.__name__.split(".")[0] == "cupy" else "numpy"


def device_description(xp) -> str:
    """A human-readable device name for provenance."""
    if backend_name(xp) == "cupy":
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"


def special(xp) -> types.ModuleType:
    """``scipy.special`` for NumPy, ``cupyx.scipy.special`` for CuPy (erf, ndtr, expit, ...)."""
    if backend_name(xp) == "cupy":
        import cupyx.scipy.special as sp  # noqa: PLC0415

        return sp
    import scipy.special as sp  # noqa: PLC0415

    return sp
