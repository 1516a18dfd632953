"""A bounded, process-level cache of per-grid-point work (data, E[M0]/d1, the point record).

Rules of this module
- A value is cached under a key that names everything it depends on (``trial.point_data`` and
  ``trial.point_record`` build the keys): two grid points that share data share X, two that
  differ only in d1 share E[M0]/d1 (K = E[M0]/d1 does not depend on d1), and so on. A value
  never depends on anything outside its key, so a hit returns exactly what a recomputation would
  (bitwise: every computation is deterministic).
- Bounded by bytes (``nbytes`` of the NumPy/CuPy arrays a value holds, recursively through
  tuples, lists, dicts and dataclasses; other objects count 64 bytes): least recently used
  entries are evicted first; a value larger than the whole bound is returned but not kept.
  The bound is ``RMT_ENGINE_POINT_CACHE_MB`` (MiB; default 1024; 0 disables the cache) read when
  the process-level cache is first used, or ``PointCache(max_bytes=...)``.
- ``run_trial(spec, k)`` without ``cache=`` uses the process-level cache (``process_cache()``),
  so a loop over trials of one point computes its per-point work once; a caller that passes
  its own ``cache=`` dict (a study task) keeps full control. Thread-safe (one lock; the
  computation runs outside it, so two threads may compute the same value once each).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import OrderedDict

CACHE_ENV = "RMT_ENGINE_POINT_CACHE_MB"
DEFAULT_MB = 1024


def nbytes(value) -> int:
    """Bytes held by ``value``'s arrays (module rules)."""
    if hasattr(value, "nbytes") and hasattr(value, "shape"):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(nbytes(k) + nbytes(v) for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 64


class PointCache:
    """A least-recently-used mapping bounded by ``max_bytes`` (module rules)."""

    def __init__(self, max_bytes: int):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict = OrderedDict()
        self._sizes: dict = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def bytes(self) -> int:
        return sum(self._sizes.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    def get(self, key, compute):
        """The cached value of ``key``, or ``compute()`` (then kept if it fits)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
        value = compute()
        size = nbytes(value)
        if size > self.max_bytes:
            return value
        with self._lock:
            if key not in self._entries:
                self._entries[key] = value
                self._sizes[key] = size
            while sum(self._sizes.values()) > self.max_bytes:
                old, _ = self._entries.popitem(last=False)
                del self._sizes[old]
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self.hits = self.misses = 0


def _bound_from_env() -> int:
    raw = os.environ.get(CACHE_ENV, "")
    if not raw.strip():
        return DEFAULT_MB * 2**20
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"${CACHE_ENV} must be a number of MiB (0 disables the cache), got {raw!r}") from None
    if not (mb >= 0 and mb < 2**40):
        raise ValueError(f"${CACHE_ENV} must be a number of MiB >= 0, got {raw!r}")
    return int(mb * 2**20)


_PROCESS_CACHE: list = []


def process_cache() -> PointCache:
    """The process-level cache (created on first use with the bound of ``RMT_ENGINE_POINT_CACHE_MB``)."""
    if not _PROCESS_CACHE:
        _PROCESS_CACHE.append(PointCache(_bound_from_env()))
    return _PROCESS_CACHE[0]


class _Layered:
    """One call's view of a shared cache: what the call computed stays for the call even when the
    shared cache does not keep it (too large, or the cache disabled), so nothing is computed twice
    within one ``run_trial``."""

    def __init__(self, shared: PointCache):
        self.shared = shared
        self.local: dict = {}

    def get(self, key, compute):
        if key not in self.local:
            self.local[key] = self.shared.get(key, compute)
        return self.local[key]


def layered(shared: PointCache) -> _Layered:
    """A per-call view of ``shared`` (see ``_Layered``)."""
    return _Layered(shared)
