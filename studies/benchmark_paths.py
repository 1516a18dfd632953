"""Benchmark: width paths and the streamed NTK against their baselines, ratios measured in one run.

    python studies/benchmark_paths.py                 # the issue's sizes
    python studies/benchmark_paths.py --quick         # small sizes (a smoke run, seconds)
    python studies/benchmark_paths.py --json out.json

- path: ``run_trial_path`` over 8 doubling checkpoints (default n = 300, d0 = 18, d1 = 512 .. 65536)
  against (a) the 8 independent ``run_trial`` calls (warm point cache) and (b) one ``run_trial`` at the
  largest width plus the 7 other checkpoints' reductions timed alone (what a path cannot avoid).
- checkpoint: the cost of one checkpoint's reduction (certified extremes + ||M0 - E[M0]||) at
  n = 500, 1000, 2000, against the pass it follows.
- ntk: ``run_trial`` with ``ntk=True`` against ``ntk=False`` (default n = 2000, d0 = 45, d1 = 8000).
Per-grid-point work is cached before the clock starts; the routes alternate round by round so a
change of load on a shared machine hits them alike. Only ratios are compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import rmt_engine as rmt
from rmt_engine.linalg.extremes import extremes, spectral_norm_certified
from rmt_engine.montecarlo.gram import accumulate
from rmt_engine.montecarlo.trial import point_data
from rmt_engine.sampling import rng


def _interleaved(fns: dict, reps: int) -> dict:
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _reduction(spec, cache):
    """One checkpoint's reduction alone: extremes + the certified norm on a ready M0."""
    pd = point_data(spec, cache)
    key = rng.stream_key(spec.seed, "W0", 0)
    sums = accumulate(pd.X, spec.activation, spec.d1, w1=spec.w1, key_W=key, block_rows=spec.rows_per_block)
    work = sums.spare

    def run():
        extremes(sums.M0, ("min", "max", "second"), seed_key=key, work=work)
        spectral_norm_certified(sums.M0, pd.K, beta=float(spec.d1), seed_key=key, work=work)
    return run, sums


def bench_path(n, d0, d1s, reps):
    spec = rmt.TrialSpec(activation="gelu", n=n, d0=d0, d1=d1s[-1])
    cache = {}
    specs = [replace(spec, d1=d) for d in d1s]
    for sp in specs:
        rmt.run_trial(sp, 0, cache=cache)  # warm every point's cache
    reductions = [_reduction(sp, cache)[0] for sp in specs[:-1]]
    t = _interleaved({
        "path": lambda: rmt.run_trial_path(spec, 0, d1s, cache=cache),
        "independent": lambda: [rmt.run_trial(sp, 0, cache=cache) for sp in specs],
        "largest": lambda: rmt.run_trial(specs[-1], 0, cache=cache),
        "other_reductions": lambda: [r() for r in reductions],
    }, reps)
    floor = t["largest"] + t["other_reductions"]
    return {"n": n, "d0": d0, "d1s": d1s, **{f"{k}_s": v for k, v in t.items()},
            "path_over_independent": t["path"] / t["independent"], "path_over_floor": t["path"] / floor}


def bench_checkpoint(n, d0, d1, reps):
    spec = rmt.TrialSpec(activation="gelu", n=n, d0=d0, d1=d1)
    cache = {}
    rmt.run_trial(spec, 0, cache=cache)
    run, _ = _reduction(spec, cache)
    pd = point_data(spec, cache)
    key = rng.stream_key(0, "W0", 0)
    t = _interleaved({"reduction": run,
                      "pass": lambda: accumulate(pd.X, "gelu", d1, key_W=key, block_rows=spec.rows_per_block)},
                     reps)
    return {"n": n, "d0": d0, "d1": d1, "reduction_s": t["reduction"], "pass_s": t["pass"],
            "reduction_over_pass": t["reduction"] / t["pass"]}


def bench_ntk(n, d0, d1, reps):
    spec = rmt.TrialSpec(activation="gelu", n=n, d0=d0, d1=d1)
    cache = {}
    on = replace(spec, ntk=True)
    rmt.run_trial(spec, 0, cache=cache)
    rmt.run_trial(on, 0, cache=cache)
    t = _interleaved({"off": lambda: rmt.run_trial(spec, 0, cache=cache),
                      "on": lambda: rmt.run_trial(on, 0, cache=cache)}, reps)
    return {"n": n, "d0": d0, "d1": d1, "ntk_off_s": t["off"], "ntk_on_s": t["on"], "on_over_off": t["on"] / t["off"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.quick:
        path_case, checkpoints, ntk_case = (40, 6, [64 * 2**k for k in range(4)]), [(60, 8, 240)], (60, 8, 240)
    else:
        path_case = (300, 18, [512 * 2**k for k in range(8)])
        checkpoints = [(500, 24, 2000), (1000, 32, 4000), (2000, 45, 8000)]
        ntk_case = (2000, 45, 8000)
    out = {"path": bench_path(*path_case, args.reps),
           "checkpoint": [bench_checkpoint(*c, args.reps) for c in checkpoints],
           "ntk": bench_ntk(*ntk_case, args.reps)}
    p = out["path"]
    print(f"path n={p['n']} d0={p['d0']} d1={p['d1s'][0]}..{p['d1s'][-1]} ({len(p['d1s'])} checkpoints): "
          f"{p['path_over_independent']:.2f}x the independent trials, {p['path_over_floor']:.2f}x one trial at the "
          f"largest width + the other reductions")
    for c in out["checkpoint"]:
        print(f"checkpoint reduction n={c['n']} (d1={c['d1']}): {c['reduction_s']:.3g} s = "
              f"{c['reduction_over_pass']:.2f}x the pass")
    k = out["ntk"]
    print(f"ntk n={k['n']} d0={k['d0']} d1={k['d1']}: {k['on_over_off']:.2f}x the M0-only trial")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
