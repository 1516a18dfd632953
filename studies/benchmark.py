"""Benchmark: rmt_engine against the route it replaced, the naive script and the BLAS limit, in one run.

    python studies/benchmark.py                 # the sizes of the performance issues, 3 repetitions
    python studies/benchmark.py --quick         # smaller sizes, for a smoke run
    python studies/benchmark.py --size 8000,90,32000 --reps 3 --no-workers
    python studies/benchmark.py --json out.json

For each (n, d0, d1), gelu, sphere data, it reports medians over repetitions of
- naive: ``W = rng.standard_normal((d1, d0)); F = gelu(W @ X); svd(F, compute_uv=False)`` (skipped
  where its estimate exceeds ``NAIVE_MAX_S``);
- today: ``rmt_engine.montecarlo.gram.accumulate`` + one dense symmetric eigenvalue reduction of M0 (the
  route every trial took before ``rmt_engine.linalg.extremes``);
- extremes: ``accumulate`` + ``extremes.extremes`` (lambda_min, lambda_max, lambda_2, certified
  from ``DENSE_BELOW_N`` on) in the Gram pass's spare buffer, as ``run_trial`` does now;
- full: ``run_trial`` (per-grid-point work cached, as in a study);
- limits: flops / the float64 GEMM rate measured just before the size: ``2 d1 d0 n`` (W X) +
  ``d1 n^2`` (syrk) + ``k n^3 / 3`` with k the Cholesky factorizations the route needed (counted
  from the results; a dense reduction counts 4/3 n^3, i.e. k = 4);
- the largest relative difference of the three eigenvalues from the dense reduction;
- peak memory (tracemalloc: NumPy reports its buffers to it) against the plan ``3 n^2`` doubles +
  the lanes' row blocks, and the time per stage of the Gram pass (``TrialSums.stage_seconds``:
  thread-seconds of sampling, W X, phi and the Gram update, summed over the lanes);
- trials/s of a study (embedded below) on a LocalCluster of 1 and of 2 workers, started before
  the clock and warmed up by one run, so only the study's own work is timed.
All ratios are measured against baselines of the same run; nothing is compared with absolute times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.special as sp

import rmt_engine as rmt
from rmt_engine.sampling import rng
from rmt_engine.montecarlo.gram import accumulate
from rmt_engine.linalg.spectra import eigvalsh

SIZES = [(2000, 45, 8000), (4000, 64, 16000), (8000, 90, 32000), (1000, 32, 4000), (1000, 32, 64000)]
QUICK = [(500, 16, 2000), (1000, 32, 4000), (500, 16, 32000)]


def gelu(z):
    return z * sp.ndtr(z)


def timed(fn, reps):
    times, peaks, out = [], [], None
    for _ in range(reps):
        tracemalloc.start()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return statistics.median(times), max(peaks), out


def gemm_rate(n=2000, reps=3):
    a = np.random.default_rng(0).standard_normal((n, n))
    best = min(_t(lambda: a @ a) for _ in range(reps))
    return 2 * n**3 / best


def _t(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


#: The naive script is skipped where its estimated time (SVD of the d1 x n matrix phi(W X):
#: ~ 4 d1 n^2 + 8 n^3 flops at the GEMM rate x NAIVE_SLOWDOWN) exceeds NAIVE_MAX_S.
NAIVE_MAX_S = 60.0
NAIVE_SLOWDOWN = 4.0


def _counting(monkey_target, name, counts):
    """Wrap ``monkey_target.name`` so every call adds its Cholesky count and route to ``counts``."""
    fn = getattr(monkey_target, name)

    def wrapped(*a, **k):
        out = fn(*a, **k)
        counts["factorizations"] += out.iterations.get("factorizations", 0)
        counts["routes"].append(f"{name}:{out.route}")
        return out

    setattr(monkey_target, name, wrapped)
    return fn


def bench(n, d0, d1, reps, rate):
    import rmt_engine.montecarlo.trial as trial_mod
    from rmt_engine.linalg.extremes import extremes as certified_extremes

    X = rmt.make_data("sphere", d0, n, seed=0)
    spec = rmt.TrialSpec(activation="gelu", n=n, d0=d0, d1=d1)
    r = np.random.default_rng(0)

    def naive():
        W = r.standard_normal((d1, d0))
        s = np.linalg.svd(gelu(W @ X), compute_uv=False)
        return s[-1], s[0]

    key = rng.stream_key(0, "W0", 0)
    stages, ext_info = {}, {}

    def today():  # the route before rmt_engine.linalg.extremes: the Gram pass + one dense reduction
        t0 = time.perf_counter()
        sums = accumulate(X, "gelu", d1, key_W=key, block_rows=spec.rows_per_block)
        t1 = time.perf_counter()
        lam = eigvalsh(sums.M0)
        stages["today_eigenvalues"] = round(time.perf_counter() - t1, 4)
        stages["accumulate_wall"] = round(t1 - t0, 4)
        return float(lam[0]), float(lam[-1]), float(lam[-2])

    def extremes():  # what run_trial does now: the Gram pass + certified extremes in the spare buffer
        t0 = time.perf_counter()
        sums = accumulate(X, "gelu", d1, key_W=key, block_rows=spec.rows_per_block)
        t1 = time.perf_counter()
        res = certified_extremes(sums.M0, seed_key=key, work=sums.spare)
        stages.update({k: round(v, 4) for k, v in sums.stage_seconds.items() if v},
                      accumulate_wall=round(t1 - t0, 4), extremes=round(time.perf_counter() - t1, 4))
        ext_info.update(route=res.route, factorizations=res.iterations["factorizations"], reason=res.reason)
        return res["min"].value, res["max"].value, res["second"].value

    cache = {}
    rmt.run_trial(spec, 0, cache=cache)  # per-grid-point work (E[M0], data) is done once per study point
    trial = iter(range(1, 10**6))

    naive_est = (4.0 * d1 * n * n + 8.0 * n**3) / rate * NAIVE_SLOWDOWN
    t_naive = m_naive = None
    if naive_est <= NAIVE_MAX_S:
        t_naive, m_naive, _ = timed(naive, reps)
    t_today, m_today, v_today = timed(today, reps)
    t_ext, m_ext, v_ext = timed(extremes, reps)
    full_counts = {"factorizations": 0, "routes": []}
    originals = [_counting(trial_mod, "extremes", full_counts),
                 _counting(trial_mod, "spectral_norm_certified", full_counts)]
    try:
        t_full, m_full, _ = timed(lambda: rmt.run_trial(spec, next(trial), cache=cache), reps)
    finally:
        trial_mod.extremes, trial_mod.spectral_norm_certified = originals
    gram_flops = 2 * d1 * d0 * n + d1 * n**2
    k_ext = ext_info["factorizations"] if ext_info["route"] == "certified" else 4  # dense: 4/3 n^3
    k_full = full_counts["factorizations"] / reps
    if any(r.endswith(":dense") for r in full_counts["routes"]):
        k_full += 4 * sum(r.endswith(":dense") for r in full_counts["routes"]) / reps
    flops_ext = gram_flops + k_ext * n**3 / 3
    flops_full = gram_flops + k_full * n**3 / 3
    rel = [abs(a - b) / abs(b) for a, b in zip(v_ext, v_today)]
    return dict(
        n=n, d0=d0, d1=d1, naive_s=t_naive, today_s=t_today, extremes_s=t_ext, full_s=t_full,
        route=ext_info["route"], k_extremes=k_ext, k_full=k_full, full_routes=sorted(set(full_counts["routes"])),
        limit_extremes_s=flops_ext / rate, limit_full_s=flops_full / rate,
        extremes_over_limit=t_ext * rate / flops_ext, full_over_limit=t_full * rate / flops_full,
        extremes_over_today=t_ext / t_today,
        naive_over_extremes=t_naive / t_ext if t_naive else None,
        rel_diff_vs_dense={"lambda_min": rel[0], "lambda_max": rel[1], "lambda_2": rel[2]},
        peak_naive_MB=m_naive / 2**20 if m_naive else None, peak_today_MB=m_today / 2**20,
        peak_extremes_MB=m_ext / 2**20, peak_full_MB=m_full / 2**20,
        peak_extremes_over_n2=m_ext / (8 * n * n),
        # the memory target: 3 n^2 doubles + one row block (the lanes' blocks: 2 b n + b d0 doubles)
        peak_extremes_over_target=m_ext / (8 * (3 * n * n + 2 * spec.rows_per_block * n + spec.rows_per_block * d0)),
        peak_full_over_target=m_full / (8 * (3 * n * n + 2 * spec.rows_per_block * n + spec.rows_per_block * d0)),
        stage_s=dict(stages),
    )


WORKER_STUDY = """
name = "benchmark-workers"
[study]
trials = 96
seed = 5
t = [2]
[grid]
activation = ["gelu", "tanh"]
n = [200]
d0 = [16]
d1 = [2000, 4000]
[execution]
trials_per_task = 8
"""


def worker_scaling(counts=(1, 2)) -> dict:
    """Trials/s of the embedded study on a LocalCluster of each size (startup not timed)."""
    from distributed import Client

    from rmt_engine.study.cluster import local_cluster
    from rmt_engine.study import Study

    study = Study.from_toml_text(WORKER_STUDY)
    out = {}
    for workers in counts:
        with tempfile.TemporaryDirectory() as tmp, local_cluster(workers) as cluster, Client(cluster) as client:
            study.run(Path(tmp) / "warmup.zarr", client=client, progress=False)  # imports, caches
            summary = study.run(Path(tmp) / "timed.zarr", client=client, progress=False)
            out[workers] = summary.trials_per_s
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run")
    ap.add_argument("--size", action="append", metavar="N,D0,D1", help="run only these sizes (repeatable)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--no-workers", action="store_true", help="skip the 1 vs 2 worker study")
    args = ap.parse_args(argv)
    print("float64 GEMM rate measured before each size (2000^3 GEMM, numpy's threads); limits use it")
    hdr = ("n", "d0", "d1", "GFLOP/s", "naive s", "today s", "extremes s", "full s", "route (k)", "ext/limit",
           "full/limit", "ext/today", "naive/ext", "max rel diff", "peak ext/(3n^2+block)", "peak full/(3n^2+block)")
    print(" | ".join(hdr))
    rows = []
    sizes = [tuple(int(v) for v in s.split(",")) for s in args.size] if args.size else (QUICK if args.quick else SIZES)
    for n, d0, d1 in sizes:
        rate = gemm_rate()
        row = bench(n, d0, d1, args.reps, rate)
        row["gemm_flops"] = rate
        rows.append(row)
        cells = (row["n"], row["d0"], row["d1"], rate / 1e9, row["naive_s"] or "skipped", row["today_s"],
                 row["extremes_s"], row["full_s"], f"{row['route']} ({row['k_extremes']}; full {row['k_full']:g})",
                 row["extremes_over_limit"], row["full_over_limit"], row["extremes_over_today"],
                 row["naive_over_extremes"] or "-", max(row["rel_diff_vs_dense"].values()),
                 row["peak_extremes_over_target"], row["peak_full_over_target"])
        print(" | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in cells), flush=True)
        busy = {k: v for k, v in row["stage_s"].items() if k in ("sampling", "WX", "phi", "gram", "V0")}
        total = sum(busy.values()) or 1.0
        print("   share of the Gram pass's thread-seconds: "
              + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in busy.items()))
        print("   stage seconds (last repetition):", row["stage_s"])
    scaling = {}
    if not args.no_workers:
        scaling = worker_scaling()
        print("study trials/s: " + ", ".join(f"{k} worker{'s' * (k > 1)} {v:.1f}" for k, v in scaling.items())
              + (f"; 2 vs 1: {scaling[2] / scaling[1]:.2f}x" if 1 in scaling and 2 in scaling else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, study_trials_per_s=scaling), f, indent=2)


if __name__ == "__main__":
    main()
