"""Benchmark: rmt_engine against the naive script and the machine's BLAS limit, in one run.

    python studies/benchmark.py                 # the four sizes of the performance issue, 3 repetitions
    python studies/benchmark.py --quick         # smaller sizes, for a smoke run
    python studies/benchmark.py --json out.json

For each (n, d0, d1), gelu, sphere data, it reports medians over repetitions of
- naive: ``W = rng.standard_normal((d1, d0)); F = gelu(W @ X); svd(F, compute_uv=False)``;
- extremes: ``rmt_engine.gram.accumulate`` (what ``rmt_engine.gram`` runs) + one symmetric eigenvalue
  reduction (sigma_min, sigma_max of F);
- full: ``run_trial`` (per-grid-point work cached, as in a study);
- limits: flops / the float64 GEMM rate measured in the same run: ``2 d1 d0 n`` (W X) +
  ``d1 n^2`` (syrk) + ``4/3 n^3`` per eigenvalue reduction (one for the extremes, two for the full
  record, which also needs ||M0 - E[M0]||_2);
- peak memory (tracemalloc: NumPy reports its buffers to it) and the time per stage of the
  extremes path, measured inside the engine's own loop (``TrialSums.stage_seconds``: thread-seconds
  of sampling, W X, phi and the Gram update, summed over the lanes) plus the eigenvalue reduction;
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
from rmt_engine import rng
from rmt_engine.gram import accumulate
from rmt_engine.spectra import eigvalsh

SIZES = [(1000, 32, 4000), (2000, 45, 8000), (4000, 64, 16000), (1000, 32, 64000)]
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


def bench(n, d0, d1, reps, rate):
    X = rmt.make_data("sphere", d0, n, seed=0)
    spec = rmt.TrialSpec(activation="gelu", n=n, d0=d0, d1=d1)
    r = np.random.default_rng(0)

    def naive():
        W = r.standard_normal((d1, d0))
        s = np.linalg.svd(gelu(W @ X), compute_uv=False)
        return s[-1], s[0]

    key = rng.stream_key(0, "W0", 0)
    stages = {}

    def extremes():
        t0 = time.perf_counter()
        sums = accumulate(X, "gelu", d1, key_W=key, block_rows=spec.rows_per_block)
        t1 = time.perf_counter()
        lam = eigvalsh(sums.M0)
        stages.update({k: round(v, 4) for k, v in sums.stage_seconds.items() if v},
                      accumulate_wall=round(t1 - t0, 4), eigenvalues=round(time.perf_counter() - t1, 4))
        return np.sqrt(lam[0]), np.sqrt(lam[-1])

    cache = {}
    rmt.run_trial(spec, 0, cache=cache)  # per-grid-point work (E[M0], data) is done once per study point
    trial = iter(range(1, 10**6))

    t_naive, m_naive, _ = timed(naive, reps)
    t_ext, m_ext, _ = timed(extremes, reps)
    t_full, m_full, _ = timed(lambda: rmt.run_trial(spec, next(trial), cache=cache), reps)
    flops_ext = 2 * d1 * d0 * n + d1 * n**2 + 4 / 3 * n**3
    flops_full = flops_ext + 4 / 3 * n**3
    return dict(
        n=n, d0=d0, d1=d1, naive_s=t_naive, extremes_s=t_ext, full_s=t_full,
        limit_extremes_s=flops_ext / rate, limit_full_s=flops_full / rate,
        extremes_over_limit=t_ext * rate / flops_ext, full_over_limit=t_full * rate / flops_full,
        naive_over_extremes=t_naive / t_ext,
        peak_naive_MB=m_naive / 2**20, peak_extremes_MB=m_ext / 2**20, peak_full_MB=m_full / 2**20,
        peak_extremes_over_n2=m_ext / (8 * n * n),
        # the memory target: 3 n^2 doubles + one row block (rows_per_block x n doubles)
        peak_extremes_over_target=m_ext / (8 * (3 * n * n + spec.rows_per_block * n)),
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

    from rmt_engine.cluster import local_cluster
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
    rate = gemm_rate()
    print(f"float64 GEMM rate measured now: {rate / 1e9:.1f} GFLOP/s")
    hdr = ("n", "d0", "d1", "naive s", "extremes s", "full s", "ext/limit", "full/limit",
           "naive/ext", "peak naive MB", "peak ext MB", "ext peak/(n^2 doubles)", "ext peak/(3n^2+block)")
    print(" | ".join(hdr))
    rows = []
    sizes = [tuple(int(v) for v in s.split(",")) for s in args.size] if args.size else (QUICK if args.quick else SIZES)
    for n, d0, d1 in sizes:
        row = bench(n, d0, d1, args.reps, rate)
        rows.append(row)
        print(" | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in (
            row["n"], row["d0"], row["d1"], row["naive_s"], row["extremes_s"], row["full_s"],
            row["extremes_over_limit"], row["full_over_limit"], row["naive_over_extremes"],
            row["peak_naive_MB"], row["peak_extremes_MB"], row["peak_extremes_over_n2"],
            row["peak_extremes_over_target"])))
        busy = {k: v for k, v in row["stage_s"].items() if k != "accumulate_wall"}
        total = sum(busy.values())
        print("   share of the extremes path's thread-seconds: "
              + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in busy.items()))
        print("   stage seconds (extremes path; thread-seconds inside accumulate):", row["stage_s"])
    scaling = {}
    if not args.no_workers:
        scaling = worker_scaling()
        print("study trials/s: " + ", ".join(f"{k} worker{'s' * (k > 1)} {v:.1f}" for k, v in scaling.items())
              + (f"; 2 vs 1: {scaling[2] / scaling[1]:.2f}x" if 1 in scaling and 2 in scaling else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(gemm_flops=rate, rows=rows, study_trials_per_s=scaling), f, indent=2)


if __name__ == "__main__":
    main()
