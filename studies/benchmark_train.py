"""Benchmark: gradient-descent iterations/s of ``rmt_engine.montecarlo.train`` against the flop limit of one iteration.

    python studies/benchmark_train.py              # (n, d0, d1) = (200, 16, 2000), (1000, 32, 8000); gelu, d2 = 1
    python studies/benchmark_train.py --quick      # smaller sizes and fewer iterations, for a smoke run
    python studies/benchmark_train.py --json out.json

For each size it runs ``gradient_descent`` for a fixed number of iterations (tol = 1e-300, so it never
stops early; NTK off; lr = the record's Eq. 13 step eta_max; w2 = 1/sqrt(d1)) from the engine's own
W0, V0 and reports, all on ONE BLAS thread (training runs so: bitwise reproducibility):
- iterations/s (steps / wall time of the call, setup included);
- the GEMM limit: ``4 d1 d0 n + 6 d1 d2 n`` flops per iteration (W X and grad_W = (.) X^T; V F, R F^T
  and V^T R) at the float64 GEMM rate measured in the same run on one thread (an n0 x n0 product);
- the elementwise work, counted separately: phi and phi' of the d1 x n matrix ``W X`` as the engine
  evaluates them (its forward pass, row pieces of ~512 KiB, GeLU sharing Phi(z), timed alone, minus
  the W X product at the GEMM rate), plus ``(V^T R) o phi'`` (one d1 x n multiply, timed alone); and,
  for comparison, ``phi(Z), phi'(Z)`` called on the whole precomputed d1 x n matrix;
- ratios: time per iteration / GEMM limit, and / (GEMM limit + measured elementwise time): the
  second one is how far the loop is from "the products at GEMM rate plus the unavoidable
  elementwise passes"; the V-side products are GEMV-shaped for d2 = 1 (memory bound), so they never
  reach the GEMM rate.
- the NTK Gram of one Theta (done twice per trial by ``train_trial``), for scale.
All ratios are against baselines of the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from rmt_engine import TrialSpec, run_trial
from rmt_engine.theory.activations import activation
from rmt_engine.montecarlo.train import TrainSpec, _phi_dphi, _single_thread_blas, gradient_descent, initial_weights, ntk_gram
from rmt_engine.montecarlo.trial import point_data

SIZES = [(200, 16, 2000, 200), (1000, 32, 8000, 50)]  # (n, d0, d1, iterations)
QUICK = [(100, 8, 500, 100), (300, 16, 2000, 20)]


def _best(fn, reps):
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_rate(n0: int, reps: int = 3) -> float:
    a = np.random.default_rng(0).standard_normal((n0, n0))
    b = np.random.default_rng(1).standard_normal((n0, n0))
    return 2 * n0**3 / _best(lambda: a @ b, reps)


def bench(n, d0, d1, iters, rate, reps, d2=1, act_name="gelu"):
    spec = TrialSpec(activation=act_name, n=n, d0=d0, d1=d1, d2=d2, w2=1.0 / math.sqrt(d1))
    pd = point_data(spec)
    W0, V0 = initial_weights(spec, 0)
    act = activation(act_name)
    train = TrainSpec(max_iters=iters, tol=1e-300)
    lr = run_trial(spec, 0)["eta_max"]  # Eq. 13's step, as train_trial takes it
    gradient_descent(pd.X, pd.Y, W0, V0, act, lr, TrainSpec(max_iters=2, tol=1e-300), ntk=False)  # warm-up
    times = []
    for _ in range(reps):
        res = gradient_descent(pd.X, pd.Y, W0, V0, act, lr, train, ntk=False)
        if res.iterations != iters:
            raise RuntimeError(f"the benchmark run stopped after {res.iterations} of {iters} steps ({res.status_name})")
        times.append(res.seconds)
    t_run = min(times)
    per_iter = t_run / iters
    gemm_flops = 4 * d1 * d0 * n + 6 * d1 * d2 * n
    t_gemm = gemm_flops / rate
    F = np.empty((d1, n))
    D = np.empty_like(F)
    t_fwd = _best(lambda: _phi_dphi(act, W0, pd.X, F, D), reps)  # the engine's pass: W X in row pieces, phi, phi'
    t_wx = 2 * d1 * d0 * n / rate
    B = np.ones_like(F)
    t_mul = _best(lambda: np.multiply(B, D, out=B), reps)
    t_elem = max(t_fwd - t_wx, 0.0) + t_mul  # phi, phi' as the engine evaluates them + (V^T R) o phi'
    Z = W0 @ pd.X
    t_generic = _best(lambda: (act.phi(Z), act.dphi(Z)), reps)  # whole-array phi(Z), phi'(Z), for comparison
    t_ntk = _best(lambda: ntk_gram(pd.X, W0, V0, act), 1)
    return {
        "n": n, "d0": d0, "d1": d1, "d2": d2, "iterations": iters, "seconds": t_run,
        "iters_per_s": iters / t_run, "ms_per_iter": 1e3 * per_iter,
        "gemm_gflop_per_iter": gemm_flops / 1e9, "ms_gemm_limit": 1e3 * t_gemm,
        "ms_forward": 1e3 * t_fwd, "ms_mul": 1e3 * t_mul, "ms_elementwise": 1e3 * t_elem,
        "ms_generic_phi_dphi": 1e3 * t_generic,
        "ratio_to_gemm": per_iter / t_gemm, "ratio_to_gemm_plus_elem": per_iter / (t_gemm + t_elem),
        "ms_ntk_gram": 1e3 * t_ntk, "final_loss": float(res.final_loss),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer iterations")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (best taken; default 2, 1 with --quick)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else SIZES
    reps = args.reps or (1 if args.quick else 2)
    with _single_thread_blas():
        rate = gemm_rate(1000 if args.quick else 2000)
        print(f"float64 GEMM rate, 1 BLAS thread: {rate / 1e9:.1f} GFLOP/s")
        rows = [bench(n, d0, d1, it, rate, reps) for n, d0, d1, it in sizes]
    hdr = (f"{'n':>5} {'d0':>3} {'d1':>6} {'iters':>5} {'it/s':>8} {'ms/it':>8} {'GEMM ms':>8} {'elem ms':>8} "
           f"{'fwd ms':>8} {'whole ms':>8} {'x GEMM':>7} {'x(G+E)':>7} {'NTK ms':>8}")
    print(hdr)
    for r in rows:
        print(f"{r['n']:>5} {r['d0']:>3} {r['d1']:>6} {r['iterations']:>5} {r['iters_per_s']:>8.1f} "
              f"{r['ms_per_iter']:>8.2f} {r['ms_gemm_limit']:>8.2f} {r['ms_elementwise']:>8.2f} "
              f"{r['ms_forward']:>8.2f} {r['ms_generic_phi_dphi']:>8.2f} {r['ratio_to_gemm']:>7.2f} "
              f"{r['ratio_to_gemm_plus_elem']:>7.2f} {r['ms_ntk_gram']:>8.1f}")
    print("GEMM ms: 4 d1 d0 n + 6 d1 d2 n flops at the GEMM rate; elem ms: phi and phi' as the engine evaluates them\n"
          "(its forward pass 'fwd ms' minus W X at the GEMM rate) + one d1 x n multiply; whole ms: phi(Z), phi'(Z)\n"
          "called on the whole d1 x n matrix, for comparison; x GEMM = ms/it / GEMM ms; x(G+E) = ms/it / (GEMM + elem)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gemm_rate": rate, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
