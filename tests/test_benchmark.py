"""Smoke test of studies/benchmark.py: it runs, and its figures are consistent with each other."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("rmt_benchmark", ROOT / "studies" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_tiny_size_writes_consistent_json(tmp_path, capsys):
    bench = _load_benchmark()
    out = tmp_path / "bench.json"
    bench.main(["--size", "60,5,400", "--reps", "1", "--no-workers", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["gemm_flops"] > 0 and data["study_trials_per_s"] == {}
    (row,) = data["rows"]
    assert (row["n"], row["d0"], row["d1"]) == (60, 5, 400)
    flops = 2 * 400 * 5 * 60 + 400 * 60**2 + 4 / 3 * 60**3
    assert row["limit_extremes_s"] == pytest.approx(flops / data["gemm_flops"])
    assert row["extremes_over_limit"] == pytest.approx(row["extremes_s"] / row["limit_extremes_s"])
    assert row["limit_full_s"] > row["limit_extremes_s"]
    assert set(row["stage_s"]) >= {"sampling", "WX", "phi", "gram", "accumulate_wall", "eigenvalues"}
    assert "60 | 5 | 400" in capsys.readouterr().out
