"""Provenance of a run: library versions, the BLAS in use, the engine's git commit, timestamps.

Rules of this module
- Nothing here may stop a run: every probe that can fail returns ``"unknown"`` or ``""``.
- It imports nothing of the engine but its version, so every other module (the study driver,
  ``cluster.environment_info``) can take provenance from here without an import circle.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .._version import __version__


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    out = {"python": sys.version.split()[0], "rmt_engine": __version__}
    for pkg in ("numpy", "scipy", "dask", "distributed", "xarray", "zarr", "cupy-cuda12x", "dask-jobqueue",
                "dask-cuda", "threadpoolctl"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def blas_description() -> str:
    """The BLAS/LAPACK libraries NumPy uses (threadpoolctl), e.g. 'openblas 0.3.27 (pthreads)'."""
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415

        libs = [f"{d.get('internal_api')} {d.get('version')} ({d.get('threading_layer', '?')})"
                for d in threadpool_info() if d.get("user_api") == "blas"]
        return "; ".join(sorted(set(libs))) or "unknown"
    except Exception:  # provenance must never stop a run
        return "unknown"


def engine_git_commit() -> str:
    """The git commit of the rmt_engine source when it runs from a git checkout ('' otherwise)."""
    import subprocess  # noqa: PLC0415

    src = Path(__file__).resolve().parents[1]  # the rmt_engine package (this file is in study/)
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    if out.returncode != 0:
        return ""
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
