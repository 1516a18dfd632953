"""studies/ladder.py: the tiny configuration runs every code path and writes the documented JSON; the
deterministic thresholds are the crossings of the deterministic curves they come from."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("rmt_ladder", ROOT / "studies" / "ladder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_ladder_writes_the_documented_json(tmp_path):
    lad = _load()
    lad.main(["--tiny", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "ladder.json").read_text())
    keys = {"activation", "n", "d0", "t", "event", "source", "d1_star", "lo", "hi"}
    assert data["thresholds"] and all(keys <= set(r) for r in data["thresholds"])
    assert {r["source"] for r in data["thresholds"]} == {"de", "mc"}
    assert {r["event"] for r in data["thresholds"] if r["source"] == "mc"} == {"margin", "ck", "ntk"}
    for f in data["fits"]:
        assert {"activation", "event", "source", "b", "lo", "hi", "n_min", "n_max"} <= set(f)
    assert (tmp_path / "ladder.png").stat().st_size > 10_000


def test_deterministic_thresholds_are_crossings_of_their_curves():
    lad = _load()
    th = lad.de_thresholds("gelu", 36, 12, 1)
    pt = lad.de_point("gelu", 36, 12, 1000)
    m_star, c_star = th["margin"][0], th["ck"][0]
    lo_m, hi_m = lad.de_curves("gelu", pt, 12, m_star / 1.01)[0], lad.de_curves("gelu", pt, 12, m_star * 1.01)[0]
    assert lo_m < 1.0 < hi_m
    lo_c, hi_c = lad.de_curves("gelu", pt, 12, c_star / 1.01)[1], lad.de_curves("gelu", pt, 12, c_star * 1.01)[1]
    assert lo_c > 0.5 > hi_c
    assert math.isfinite(m_star) and m_star > c_star  # the sufficient margin needs far more width than CK
