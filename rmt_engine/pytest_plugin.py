"""pytest plugin of rmt_engine (entry point ``pytest11``): the ``rmt_study`` fixture.

``rmt_study(toml_path)`` runs the study of a TOML file into a session temporary directory (one
embedded worker, no progress bar) and returns its cube opened with ``open_results``. Runs are
cached per session by (resolved path, file content), so several tests of one study share a run::

    from rmt_engine.testing import assert_bound_holds

    def test_eq67(rmt_study):
        ds = rmt_study("studies/regression.toml")
        assert_bound_holds(ds, "eq67_lower_sharp", min_rate=0.8)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def rmt_study(tmp_path_factory):
    """Factory fixture: ``rmt_study(toml_path) -> xarray.Dataset`` (the study's cube, cached per session)."""
    from .study.store import open_results  # noqa: PLC0415
    from .study import Study  # noqa: PLC0415

    cache: dict = {}

    def run(toml_path) -> "xarray.Dataset":  # noqa: F821
        p = Path(toml_path).resolve()
        key = (str(p), hashlib.sha256(p.read_bytes()).hexdigest())
        if key not in cache:
            store = tmp_path_factory.mktemp("rmt_study") / f"{p.stem}.zarr"
            Study.from_toml(p).run(store, workers=1, progress=False)
            cache[key] = store
        return open_results(cache[key])

    return run
