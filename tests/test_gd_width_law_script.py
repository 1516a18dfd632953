"""studies/gd_width_law.py: per-case studies, thresholds joined along ``case`` with their n and d0."""

import importlib.util
from pathlib import Path

import numpy as np

from rmt_engine.report import scaling as S

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("gd_width_law", ROOT / "studies" / "gd_width_law.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_case_studies_and_joined_thresholds(tmp_path, monkeypatch):
    gd = _load()
    monkeypatch.setattr(gd, "RATIOS", [1, 2, 4])
    cases = [(4, 6), (6, 9)]
    study = gd.case_study(6, 9, trials=4, acts=("gelu",))
    assert [int(v) for v in study.grid["d1"]] == [9, 18, 36] and study.train is not None
    cubes = gd.run_cases(tmp_path, cases, trials=4, acts=("gelu",), workers=1)
    thr = gd.thresholds(cubes, 0.5)
    assert thr.sizes["case"] == 2
    assert list(thr["n"].values) == [6, 9] and list(thr["d0"].values) == [4, 6]
    for i, ds in enumerate(cubes):  # each case's threshold is the one scaling.threshold gives on its own cube
        ev = S.scaling_events(ds)["gd_converged"].squeeze(drop=True)
        one = S.threshold(ev, 0.5)
        a, b = float(thr["d_star"].isel(case=i).squeeze()), float(one["d_star"].squeeze())
        assert (a == b) or (np.isnan(a) and np.isnan(b))
