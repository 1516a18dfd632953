"""CUDA kernel sources: find ``kernels/``, inline the project headers, compile once per device.

Rules of this module
- Never imports CuPy at module import; only :func:`get_module` / :func:`get_function` do, and
  only through ``rmt_engine.backend.xp`` (so a machine without CuPy can import and test the rest).
- The kernel directory is ``rmt_engine/_kernels`` in an installed wheel (pyproject force-includes
  the top-level ``kernels/`` there) and ``<repo>/kernels`` in a source or editable checkout;
  ``RMT_ENGINE_KERNEL_DIR`` overrides both (for kernel development).
- :func:`kernel_source` returns the source with every ``#include "name"`` of a project header
  replaced by that file's text, recursively, once per header (``#pragma once`` semantics), with
  ``#line`` directives so compiler errors still name the original file and line. Why: CuPy's
  on-disk kernel cache hashes the source text and options only, not headers found through
  ``-I``; an edited header would otherwise reuse a stale binary. System includes (``<...>``)
  are left alone (NVRTC has none; the headers guard theirs with ``__CUDACC_RTC__``).
- One ``cupy.RawModule`` per (kernel file, compile options, device id), memoized for the process.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

#: The kernel files CuPy compiles (``host_check.cu`` is a CPU test harness, not listed).
KERNEL_FILES = ("sample.cu", "activations.cu", "khatri_rao.cu")
#: Headers every kernel directory must hold (used to recognise one).
HEADER_FILES = ("philox.cuh", "activations.cuh")
#: Compile options passed to NVRTC (through CuPy). Keep FMA contraction on: the headers avoid
#: contractible expressions where it would change results (see activations.cuh).
DEFAULT_OPTIONS: tuple[str, ...] = ("--std=c++17",)

_INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[^\n]*$', re.MULTILINE)
_PRAGMA_ONCE_RE = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+once[ \t]*$", re.MULTILINE)


class KernelSourceError(RuntimeError):
    """A kernel file or a project header it includes cannot be found or read."""


def _candidate_dirs() -> list[Path]:
    here = Path(__file__).resolve().parents[1]  # the rmt_engine package (this file is in backend/)
    dirs = []
    env = os.environ.get("RMT_ENGINE_KERNEL_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(here / "_kernels")  # installed wheel
    dirs.append(here.parent / "kernels")  # source / editable checkout
    return dirs


def kernel_dir() -> Path:
    """The directory holding the ``.cu``/``.cuh`` files (see the module docstring for the order)."""
    tried = _candidate_dirs()
    for d in tried:
        if (d / "philox.cuh").is_file():
            return d
    raise KernelSourceError(
        "CUDA kernel sources not found; looked for philox.cuh in: "
        + ", ".join(str(d) for d in tried)
        + " (a wheel ships them as rmt_engine/_kernels; a checkout has them in <repo>/kernels)"
    )


def kernel_path(name: str) -> Path:
    path = kernel_dir() / name
    if not path.is_file():
        raise KernelSourceError(f"kernel file {name!r} not found in {path.parent}")
    return path


def _inline(path: Path, seen: set[Path], stack: tuple[Path, ...]) -> str:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(p.name for p in (*stack, path))
        raise KernelSourceError(f"circular #include of project headers: {chain}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KernelSourceError(f"cannot read kernel source {path}: {exc}") from exc
    has_once = bool(_PRAGMA_ONCE_RE.search(text))
    if has_once:
        if path in seen:
            return ""
        text = _PRAGMA_ONCE_RE.sub("// #pragma once (inlined by rmt_engine.backend.cuda)", text)
    seen.add(path)

    out: list[str] = []
    pos = 0
    for m in _INCLUDE_RE.finditer(text):
        out.append(text[pos:m.start()])
        target = path.parent / m.group(1)
        if not target.is_file():
            line = text.count("\n", 0, m.start()) + 1
            raise KernelSourceError(f'{path.name}:{line}: #include "{m.group(1)}" not found in {path.parent}')
        body = _inline(target, seen, (*stack, path))
        line_after = text.count("\n", 0, m.end()) + 2  # the line following the directive
        out.append(
            f"// ---- begin {m.group(1)} (inlined) ----\n"
            f'#line 1 "{target.name}"\n'
            f"{body}"
            f"{'' if body.endswith(chr(10)) or not body else chr(10)}"
            f"// ---- end {m.group(1)} ----\n"
            f'#line {line_after} "{path.name}"'
        )
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


@functools.lru_cache(maxsize=None)
def _kernel_source_cached(path: str, mtimes: tuple) -> str:
    return _inline(Path(path), set(), ())


def kernel_source(name: str) -> str:
    """The full source of kernel file ``name`` (e.g. ``"sample.cu"``) with project headers inlined.

    Pure Python: usable (and tested) without CuPy or a GPU.
    """
    path = kernel_path(name)
    # key the cache on the modification times of the directory's files: edits are picked up
    mtimes = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in path.parent.iterdir() if p.suffix in (".cu", ".cuh")))
    return _kernel_source_cached(str(path), mtimes)


def _cupy():
    from .xp import get_xp  # noqa: PLC0415

    return get_xp("cupy")  # raises RuntimeError with a clear message without CuPy / device


@functools.lru_cache(maxsize=None)
def _module(source: str, options: tuple[str, ...], device_id: int):
    cp = _cupy()
    with cp.cuda.Device(device_id):
        mod = cp.RawModule(code=source, options=options)
        mod.compile()  # compile now so that errors surface here, not at the first launch
    return mod


def get_module(name: str, options: tuple[str, ...] = DEFAULT_OPTIONS):
    """The ``cupy.RawModule`` of kernel file ``name`` on the current device (compiled once)."""
    cp = _cupy()
    return _module(kernel_source(name), tuple(options), cp.cuda.Device().id)


def get_function(name: str, function: str, options: tuple[str, ...] = DEFAULT_OPTIONS):
    """Kernel ``function`` (an ``extern "C"`` name) of kernel file ``name`` on the current device."""
    return get_module(name, options).get_function(function)


def clear_cache() -> None:
    """Forget compiled modules and inlined sources (tests, kernel development)."""
    _module.cache_clear()
    _kernel_source_cached.cache_clear()
