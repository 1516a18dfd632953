"""run_trial's eigenvalue routes (certified vs dense), its memory plan and the process-level point cache.

The certified route (``rmt_engine.linalg.extremes``) only runs from ``DENSE_BELOW_N`` ~ 2200 on; the
tests lower the switch so that it runs at small n, and compare its record with the dense route's
on the same trial (independent computations of the same eigenvalues).
"""

import math
import tracemalloc

import numpy as np
import pytest

import rmt_engine as rmt
import rmt_engine.linalg.extremes as ext
import rmt_engine.montecarlo.trial as trial_mod
from rmt_engine.montecarlo import point_cache
from rmt_engine.montecarlo.point_cache import PointCache
from rmt_engine.study.resources import largest_n, trial_memory_bytes

EPS = np.finfo(np.float64).eps
DIRECT = ("lambda_min_M0", "lambda_max_M0", "lambda_2_M0", "dev_M0")


@pytest.fixture
def certified(monkeypatch):
    monkeypatch.setattr(ext, "DENSE_BELOW_N", 64)
    monkeypatch.setattr(ext, "NORM_DENSE_BELOW_N", 64)


def _dense_record(spec, trial):
    return rmt.run_trial(spec, trial, cache={})


@pytest.mark.parametrize("act, ratio", [("gelu", 4.0), ("tanh", 1.05), ("sigmoid", 16.0)])
def test_certified_route_matches_dense_route(act, ratio, monkeypatch):
    spec = rmt.TrialSpec(activation=act, n=300, d0=16, d1=int(ratio * 300))
    dense = _dense_record(spec, 3)
    assert dense["extremes_route"] == 0 and dense["dev_M0_route"] == 0
    monkeypatch.setattr(ext, "DENSE_BELOW_N", 64)
    monkeypatch.setattr(ext, "NORM_DENSE_BELOW_N", 64)
    cert = rmt.run_trial(spec, 3, cache={})
    assert cert["extremes_route"] == 1 and cert["dev_M0_route"] == 1
    cond = dense["lambda_max_M0"] / dense["lambda_min_M0"]
    tol = {"lambda_min_M0": max(1e-10, 3 * math.sqrt(spec.n) * EPS * cond)}
    for f in DIRECT:
        rel = abs(cert[f] - dense[f]) / abs(dense[f])
        assert rel <= tol.get(f, 1e-10), (f, rel, cond)
    # everything not derived from these four is bitwise the same
    derived = {"sigma_min_F", "sigma_max_F", "delta1", "delta2", "mu", "nu", "beta", "margin", "eta_max", "rate",
               "rho", "lazy_ratio", "asym_ratio_lambda_min", "asym_ratio_lambda_2", "asym_ratio_spike",
               "extremes_route", "dev_M0_route", "sigma_min_F_relerr", *DIRECT}
    for f in set(dense) - derived:
        assert (cert[f] == dense[f]) or (math.isnan(cert[f]) and math.isnan(dense[f])), f


def test_certified_route_is_bitwise_repeatable(certified):
    spec = rmt.TrialSpec(activation="gelu", n=256, d0=12, d1=1024)
    a, b = rmt.run_trial(spec, 5, cache={}), rmt.run_trial(spec, 5, cache={})
    assert a["extremes_route"] == 1
    assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_rank_deficient_trial_records_exact_zero_and_the_top(certified):
    spec = rmt.TrialSpec(activation="gelu", n=300, d0=16, d1=200)  # rank(M0) <= 200 < 300
    rec = rmt.run_trial(spec, 0, cache={})
    assert rec["lambda_min_M0"] == 0.0 and rec["sigma_min_F"] == 0.0 and rec["delta1"] == 1.0
    assert rec["extremes_route"] == 1
    _, eig = rmt.run_trial(spec, 0, cache={}, spectrum=True)  # the dense spectrum of the same M0
    assert abs(eig[0]) <= 1e-9 * eig[-1]  # rounding noise, recorded as the exact 0
    assert rec["lambda_max_M0"] == pytest.approx(eig[-1], rel=1e-10)
    assert rec["lambda_2_M0"] == pytest.approx(eig[-2], rel=1e-10)


def test_spectrum_route_is_dense_and_agrees_with_the_record(certified):
    spec = rmt.TrialSpec(activation="tanh", n=200, d0=12, d1=800)
    rec, eig = rmt.run_trial(spec, 1, cache={}, spectrum=True)
    assert rec["extremes_route"] == 0
    assert (rec["lambda_min_M0"], rec["lambda_max_M0"], rec["lambda_2_M0"]) == (eig[0], eig[-1], eig[-2])
    # and the certified route on the same trial gives the same values to its accuracy
    cert = rmt.run_trial(spec, 1, cache={})
    assert cert["lambda_max_M0"] == pytest.approx(eig[-1], rel=1e-10)
    assert cert["lambda_2_M0"] == pytest.approx(eig[-2], rel=1e-10)


@pytest.mark.parametrize("route", ["dense", "certified"])
def test_trial_peak_memory_is_three_n2_plus_the_row_blocks(route, monkeypatch):
    if route == "certified":
        monkeypatch.setattr(ext, "DENSE_BELOW_N", 64)
        monkeypatch.setattr(ext, "NORM_DENSE_BELOW_N", 64)
    n, d0, d1 = 1000, 16, 2000
    spec = rmt.TrialSpec(activation="gelu", n=n, d0=d0, d1=d1, block_rows=64)
    rmt.run_trial(spec, 0, cache={})  # quadrature rules and imports
    tracemalloc.start()
    rmt.run_trial(spec, 1, cache={})  # the per-point work included
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    plan = 8 * (3 * n * n + 2 * 64 * n + 64 * d0)
    # M0's two lane sums and E[M0]/d1 are alive together: the plan cannot be beaten ...
    assert peak >= 8 * 3 * n * n
    # ... and nothing else of size n^2 is allocated (row slabs of 256 x n, the Krylov basis, vectors:
    # < 0.5 n^2 at this n)
    assert peak <= plan + 8 * 0.5 * n * n, peak / (8 * n * n)
    assert peak <= trial_memory_bytes(spec)


def test_largest_n_inverts_the_memory_estimate():
    for mem in (24 * 2**30, 139 * 2**30):
        n = largest_n(mem, d0=90)
        spec = lambda m: rmt.TrialSpec(activation="gelu", n=m, d0=90, d1=4 * m)  # noqa: E731
        assert trial_memory_bytes(spec(n)) <= mem < trial_memory_bytes(spec(n + 1))
        assert 0.98 * math.sqrt(mem / 24) < n < math.sqrt(mem / 24)  # 3 n^2 doubles dominate
    assert largest_n(1000, d0=8) == 0


def test_run_trial_without_cache_uses_the_process_cache(monkeypatch):
    calls = []
    real = trial_mod.expected_gram
    monkeypatch.setattr(trial_mod, "expected_gram", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(point_cache, "_PROCESS_CACHE", [PointCache(64 * 2**20)])
    spec = rmt.TrialSpec(activation="gelu", n=120, d0=10, d1=480, seed=11)
    first = [rmt.run_trial(spec, i) for i in range(3)]
    assert len(calls) == 1  # E[M0] once for the three trials
    cache = point_cache.process_cache()
    assert cache.hits >= 4 and len(cache) >= 3
    # another d1 shares X and K = E[M0]/d1 (K does not depend on d1), not the point record
    rmt.run_trial(rmt.TrialSpec(activation="gelu", n=120, d0=10, d1=960, seed=11), 0)
    assert len(calls) == 1
    # the cached values are exactly what a fresh computation gives
    own = {}
    fresh = [rmt.run_trial(spec, i, cache=own) for i in range(3)]
    assert len(calls) == 2
    for a, b in zip(first, fresh):
        assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_disabled_process_cache_still_computes_each_point_once_per_trial(monkeypatch):
    calls = []
    real = trial_mod.expected_gram
    monkeypatch.setattr(trial_mod, "expected_gram", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(point_cache, "_PROCESS_CACHE", [PointCache(0)])
    spec = rmt.TrialSpec(activation="tanh", n=80, d0=8, d1=320)
    rmt.run_trial(spec, 0)
    rmt.run_trial(spec, 1)
    assert len(calls) == 2 and len(point_cache.process_cache()) == 0


def test_rewritten_data_file_is_new_data(tmp_path, monkeypatch):
    monkeypatch.setattr(point_cache, "_PROCESS_CACHE", [PointCache(64 * 2**20)])
    rng = np.random.default_rng(0)
    path = tmp_path / "x.npy"
    unit = lambda: (lambda Z: Z / np.linalg.norm(Z, axis=0))(rng.standard_normal((8, 50)))  # noqa: E731
    np.save(path, unit())
    spec = rmt.TrialSpec(activation="gelu", n=50, d0=8, d1=200, data="file", data_path=str(path))
    a = rmt.run_trial(spec, 0)
    import os
    np.save(path, unit())
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime even on coarse clocks
    b = rmt.run_trial(spec, 0)
    assert a["sigma_max_X"] != b["sigma_max_X"]


def test_point_cache_is_lru_and_bounded_by_bytes():
    c = PointCache(3 * 800)
    arr = lambda: np.zeros(100)  # noqa: E731  (800 bytes)
    for k in "abc":
        c.get(k, arr)
    assert len(c) == 3 and c.bytes == 2400
    c.get("a", arr)  # a is now the most recent
    c.get("d", arr)  # evicts b, the least recently used
    assert "b" not in c and {"a", "c", "d"} <= set(c._entries)
    big = c.get("big", lambda: np.zeros(1000))  # larger than the bound: returned, not kept
    assert big.shape == (1000,) and "big" not in c and c.bytes <= 2400
    assert c.hits == 1 and c.misses == 5
    with pytest.raises(ValueError, match="max_bytes"):
        PointCache(-1)


def test_point_cache_bound_from_the_environment(monkeypatch):
    monkeypatch.setenv(point_cache.CACHE_ENV, "2")
    assert point_cache._bound_from_env() == 2 * 2**20
    monkeypatch.setenv(point_cache.CACHE_ENV, "lots")
    with pytest.raises(ValueError, match="RMT_ENGINE_POINT_CACHE_MB"):
        point_cache._bound_from_env()
    monkeypatch.setenv(point_cache.CACHE_ENV, "-5")
    with pytest.raises(ValueError, match="RMT_ENGINE_POINT_CACHE_MB"):
        point_cache._bound_from_env()
    monkeypatch.delenv(point_cache.CACHE_ENV)
    assert point_cache._bound_from_env() == point_cache.DEFAULT_MB * 2**20


def test_gram_pass_hands_over_its_spare_buffer():
    from rmt_engine.sampling import rng
    from rmt_engine.montecarlo.gram import accumulate

    X = rmt.make_data("sphere", 8, 64, seed=0)
    sums = accumulate(X, "gelu", 256, key_W=rng.stream_key(0, "W0", 0), block_rows=32)
    assert sums.spare is not None and sums.spare.shape == (64, 64)
    assert not np.shares_memory(sums.spare, sums.M0)


def _study(n, extra=""):
    from rmt_engine.study import Study

    return Study.from_toml_text(f'[study]\ntrials = 2\nseed = 0\n[grid]\nactivation = ["gelu"]\nn = [{n}]\nd0 = [32]\n'
                                f'd1 = [{4 * n}]\n{extra}')


def test_validate_refuses_trials_that_cannot_fit():
    from rmt_engine.study.resources import check_limits, machine_memory_bytes

    too_big = int(math.sqrt(machine_memory_bytes() / 24)) + 1000  # 3 n^2 doubles > the machine
    problems = check_limits(_study(too_big), {"max_cpu_hours": 1e12})
    assert any("one trial needs about" in p and "80% of this machine" in p for p in problems), problems
    assert check_limits(_study(2000), {}) == []
    # on Slurm the worker's share of the job's memory is the limit
    slurm = '[execution]\ncluster = "slurm"\n[cluster.slurm]\njobs = 1\nprocesses = 2\nmemory = "{}"\n'
    n = 8000  # 3 n^2 doubles = 1.43 GiB
    refused = check_limits(_study(n, slurm.format("2GB")), {"max_cpu_hours": 1e12})  # 1 GB per worker
    assert any("Slurm worker" in p for p in refused), refused
    assert check_limits(_study(n, slurm.format("8GB")), {"max_cpu_hours": 1e12}) == []
