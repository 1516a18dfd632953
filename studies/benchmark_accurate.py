"""Benchmark: the accurate sigma_min route (streamed TSQR of F) against the Gram route, in one run.

    python studies/benchmark_accurate.py                  # the issue's sizes, 3 repetitions
    python studies/benchmark_accurate.py --size 300,12,1200 --reps 1 --json out.json

For each (n, d0, d1), GeLU, sphere data, one trial, medians over repetitions of
- gram: ``run_trial`` with ``accuracy = 1`` (the Gram route; the QR route only where the Gram route
  cannot resolve sigma_min at all);
- accurate: ``run_trial`` with ``accuracy = 1e-300`` (the QR route forced: the Gram pass, then the
  second pass over W0 into a streamed R and the SVD of R);
- qr_pass: the QR pass alone (``trial.accurate_sigma_extremes``);
and the ratios accurate / gram and qr_pass / gram, the two sigma_min values, their difference relative
to the recorded error bounds. Per-grid-point work is cached (as in a study) before the clock starts; the three are timed in
alternation, round by round, so a change of load on a shared machine hits them alike.
Only ratios against baselines of the same run are printed: the machine's speed cancels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import rmt_engine as rmt
from rmt_engine.montecarlo.trial import accurate_sigma_extremes, point_data
from rmt_engine.sampling import rng
from rmt_engine.theory.activations import activation

SIZES = [(2000, 45, 8000), (1000, 16, 1050)]


def _interleaved(fns: dict, reps: int) -> tuple[dict, dict]:
    """Median seconds of each callable over ``reps`` rounds, the callables alternating within a round
    (a load change on a shared machine then hits every route alike); the last result of each."""
    times = {k: [] for k in fns}
    out = {}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            out[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, out


def bench(n, d0, d1, reps):
    spec = rmt.TrialSpec(activation="gelu", n=n, d0=d0, d1=d1)
    gram_spec, acc_spec = replace(spec, accuracy=1.0), replace(spec, accuracy=1e-300)
    cache = {}
    rmt.run_trial(gram_spec, 0, cache=cache)  # warm the per-point cache of both specs before the clock
    rmt.run_trial(acc_spec, 0, cache=cache)
    pd = point_data(spec, cache)
    key = rng.stream_key(spec.seed, "W0", 0)
    t, out = _interleaved({
        "gram": lambda: rmt.run_trial(gram_spec, 0, cache=cache),
        "accurate": lambda: rmt.run_trial(acc_spec, 0, cache=cache),
        "qr_pass": lambda: accurate_sigma_extremes(pd.X, activation("gelu"), spec, key),
    }, reps)
    rec_g, rec_a = out["gram"], out["accurate"]
    t_gram, t_acc, t_qr = t["gram"], t["accurate"], t["qr_pass"]
    diff = abs(rec_g["sigma_min_F"] - rec_a["sigma_min_F"]) / rec_a["sigma_min_F"]
    return {
        "n": n, "d0": d0, "d1": d1, "gram_s": t_gram, "accurate_s": t_acc, "qr_pass_s": t_qr,
        "accurate_over_gram": t_acc / t_gram, "qr_pass_over_gram": t_qr / t_gram,
        "route_gram": rec_g["sigma_min_F_route"], "route_accurate": rec_a["sigma_min_F_route"],
        "sigma_min_gram": rec_g["sigma_min_F"], "sigma_min_qr": rec_a["sigma_min_F"],
        "relerr_gram": rec_g["sigma_min_F_relerr"], "relerr_qr": rec_a["sigma_min_F_relerr"],
        "relative_difference": diff,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", action="append", metavar="N,D0,D1", help="run only these sizes (repeatable)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args(argv)
    sizes = [tuple(int(x) for x in s.split(",")) for s in args.size] if args.size else SIZES
    rows = [bench(*s, args.reps) for s in sizes]
    print("| n | d0 | d1 | accurate / gram | QR pass / gram | sigma_min gram | sigma_min QR | |diff| / sigma | "
          "bound gram | bound QR |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['d0']} | {r['d1']} | {r['accurate_over_gram']:.2f} | {r['qr_pass_over_gram']:.2f} | "
              f"{r['sigma_min_gram']:.10g} | {r['sigma_min_qr']:.10g} | {r['relative_difference']:.1e} | "
              f"{r['relerr_gram']:.1e} | {r['relerr_qr']:.1e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
