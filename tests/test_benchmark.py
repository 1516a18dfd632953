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
    assert data["study_trials_per_s"] == {}
    (row,) = data["rows"]
    assert (row["n"], row["d0"], row["d1"]) == (60, 5, 400)
    assert row["gemm_flops"] > 0
    assert row["route"] == "dense" and row["k_extremes"] == 4  # n = 60 < DENSE_BELOW_N
    flops = 2 * 400 * 5 * 60 + 400 * 60**2 + 4 / 3 * 60**3
    assert row["limit_extremes_s"] == pytest.approx(flops / row["gemm_flops"])
    assert row["extremes_over_limit"] == pytest.approx(row["extremes_s"] / row["limit_extremes_s"])
    assert row["extremes_over_today"] == pytest.approx(row["extremes_s"] / row["today_s"])
    assert row["limit_full_s"] > row["limit_extremes_s"]  # the full record adds ||M0 - E[M0]||
    assert max(row["rel_diff_vs_dense"].values()) < 1e-12  # the same dense reduction
    assert row["naive_s"] > 0 and row["peak_extremes_over_target"] > 0
    assert set(row["stage_s"]) >= {"sampling", "WX", "phi", "gram", "accumulate_wall", "extremes"}
    assert "60 | 5 | 400" in capsys.readouterr().out


def test_benchmark_certified_route_is_counted(tmp_path, monkeypatch):
    import rmt_engine.linalg.extremes as ext

    monkeypatch.setattr(ext, "DENSE_BELOW_N", 64)
    monkeypatch.setattr(ext, "NORM_DENSE_BELOW_N", 64)
    bench = _load_benchmark()
    out = tmp_path / "bench.json"
    bench.main(["--size", "300,16,1200", "--reps", "1", "--no-workers", "--json", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["route"] == "certified" and row["k_extremes"] >= 2
    assert row["k_full"] >= row["k_extremes"] + 2  # the certified norm adds two factorizations
    assert set(row["full_routes"]) == {"extremes:certified", "spectral_norm_certified:certified"}
    assert max(row["rel_diff_vs_dense"].values()) < 1e-9


def test_accurate_route_benchmark_tiny_size(tmp_path):
    spec = importlib.util.spec_from_file_location("rmt_bench_acc", ROOT / "studies" / "benchmark_accurate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "acc.json"
    (row,) = module.main(["--size", "40,6,200", "--reps", "1", "--json", str(out)])
    assert json.loads(out.read_text())["rows"][0]["n"] == 40
    assert (row["route_gram"], row["route_accurate"]) == (0.0, 1.0)
    assert row["accurate_over_gram"] == pytest.approx(row["accurate_s"] / row["gram_s"])
    # both routes agree within the sum of their recorded error bounds
    assert row["relative_difference"] <= row["relerr_gram"] + row["relerr_qr"]


def test_paths_benchmark_quick(tmp_path):
    spec = importlib.util.spec_from_file_location("rmt_bench_paths", ROOT / "studies" / "benchmark_paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--quick", "--reps", "1", "--json", str(tmp_path / "p.json")])
    p = out["path"]
    assert p["path_over_independent"] == pytest.approx(p["path_s"] / p["independent_s"])
    assert p["path_over_floor"] == pytest.approx(p["path_s"] / (p["largest_s"] + p["other_reductions_s"]))
    assert out["ntk"]["on_over_off"] == pytest.approx(out["ntk"]["ntk_on_s"] / out["ntk"]["ntk_off_s"])
    assert json.loads((tmp_path / "p.json").read_text())["checkpoint"][0]["n"] == 60
