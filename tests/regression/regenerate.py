"""Regenerate the golden cube of the regression suite ON PURPOSE (after an intended numerics change).

    python -m tests.regression.regenerate

Runs studies/regression.toml (one worker, BLAS threads 1) into tests/regression/golden_cube,
replacing it. Commit the new cube together with the change that explains it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOML = ROOT / "studies" / "regression.toml"
GOLDEN = Path(__file__).resolve().parent / "golden_cube"


def main() -> None:
    from rmt_engine.study.store import open_results
    from rmt_engine.study import Study

    with tempfile.TemporaryDirectory() as d:
        store = Path(d) / "golden_cube"
        Study.from_toml(TOML).run(store, workers=1, progress=False)
        open_results(store)  # complete and readable
        if GOLDEN.exists():
            shutil.rmtree(GOLDEN)
        shutil.copytree(store, GOLDEN)
    size = sum(f.stat().st_size for f in GOLDEN.rglob("*") if f.is_file())
    print(f"wrote {GOLDEN} ({size / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
