"""Benchmark: certified extremes (rmt_engine.linalg.extremes) against the dense reduction, in one run.

    python studies/benchmark_extremes.py                  # n = 1000, 1500, 2000, 4000; accuracy at n = 1000
    python studies/benchmark_extremes.py --quick          # n = 1000, 1500, 2000; accuracy at n = 600
    python studies/benchmark_extremes.py --sizes 8000 --threads 2 --no-accuracy
    python studies/benchmark_extremes.py --json out.json

Speed (gelu, sphere data, M0 from ``rmt_engine.montecarlo.gram.accumulate`` as in ``run_trial``; d0, d1 as in
README "Performance"): for each n and BLAS thread count (1 = a study worker, 2 = one process on
this machine, ``--threads 1,2``; on a loaded shared machine 2-thread timings are meaningless), the
best of ``--reps`` interleaved repetitions of
- today's reduction: ``spectra.eigvalsh(M0)`` (dense) and ``spectra.spectral_norm_sym(M0 - E[M0])``
  (ARPACK, uncertified);
- the new one: ``extremes(M0)`` (lambda_min, lambda_max, lambda_2, certified) and
  ``spectral_norm_certified(M0, K, beta=d1)`` (certified; and ``certify=False``, Lanczos only);
- one Cholesky (``dpotrf``) of M0, to show what the certified route is made of.
Every ratio compares timings of the same run. The crossover is where ``extremes`` and the dense
``eigvalsh`` cost the same (log-log interpolation between the measured sizes).

Accuracy: relative difference from dense ``scipy.linalg.eigvalsh`` of lambda_min, lambda_max,
lambda_2 and ||M0 - E[M0]||_2 (certified route forced) for gelu / tanh / sigmoid and
d1 in {1.05 n, 4 n, 64 n}, with the relative bracket widths and cond(M0).

Memory: the largest n whose trial fits (M0, E[M0] and one workspace: 3 n^2 doubles, plus one row
block and the Krylov basis) on a 24 GiB machine and on a 139 GiB GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import scipy.linalg as sl
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from rmt_engine.linalg import extremes as ext
from rmt_engine.sampling import rng
from rmt_engine.sampling.data import make_data
from rmt_engine.theory.expected import expected_gram
from rmt_engine.montecarlo.gram import accumulate
from rmt_engine.montecarlo.spec import DEFAULT_BLOCK_BYTES
from rmt_engine.linalg.spectra import eigvalsh, spectral_norm_sym

D0_D1 = {1000: (32, 4000), 1500: (38, 6000), 2000: (45, 8000), 3000: (55, 12000),
         4000: (64, 16000), 8000: (90, 32000)}
SIZES = [1000, 1500, 2000, 4000]
QUICK = [1000, 1500, 2000]
ACTS = ("gelu", "tanh", "sigmoid")
RATIOS = (1.05, 4.0, 64.0)


def _dims(n):
    if n in D0_D1:
        return D0_D1[n]
    return int(round(math.sqrt(n))), 4 * n


def _t(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _trial_matrices(n, d0, d1, act="gelu", seed=0):
    X = make_data("sphere", d0, n, seed=seed)
    sums = accumulate(X, act, d1, key_W=rng.stream_key(seed, "W0", 0), block_rows=max(64, DEFAULT_BLOCK_BYTES // (8 * n)))
    K = expected_gram(X, act)
    return X, sums.M0, K


def speed(n, threads, reps):
    d0, d1 = _dims(n)
    M0, K = _trial_matrices(n, d0, d1)[1:]
    D = K * (-d1)
    D += M0  # run_trial's deviation (for today's ARPACK baseline only)
    work = np.empty_like(M0)
    key = rng.stream_key(0, "W0", 0)

    def chol():
        work[...] = M0
        info = lapack.dpotrf(work.T, lower=0, clean=0, overwrite_a=1)[1]
        assert info == 0

    ops = {
        "dense": lambda: eigvalsh(M0),
        "arpack": lambda: spectral_norm_sym(D),
        "extremes": lambda: ext.extremes(M0, method="certified", work=work, seed_key=key),
        "norm_cert": lambda: ext.spectral_norm_certified(M0, K, beta=d1, method="certified", work=work,
                                                         seed_key=key),
        "norm_lanczos": lambda: ext.spectral_norm_certified(M0, K, beta=d1, method="certified",
                                                            certify=False, seed_key=key),
        "cholesky": chol,
    }
    best = {k: math.inf for k in ops}
    outs = {}
    with threadpool_limits(threads, user_api="blas"):
        for _ in range(reps):
            for k, fn in ops.items():
                t, out = _t(fn)
                best[k] = min(best[k], t)
                outs[k] = out
    ev = np.asarray(outs["dense"])
    e, nc = outs["extremes"], outs["norm_cert"]
    rel = {"min": (e["min"].value - ev[0]) / abs(ev[0]), "max": (e["max"].value - ev[-1]) / ev[-1],
           "second": (e["second"].value - ev[-2]) / ev[-2],
           "norm": (nc.value - outs["arpack"]) / outs["arpack"]}
    return {"n": n, "d0": d0, "d1": d1, "threads": threads, "seconds": best,
            "extremes_route": e.route, "extremes_iterations": e.iterations, "norm_route": nc.route,
            "norm_iterations": nc.iterations, "rel_vs_today": rel}


def crossover(rows, threads):
    """n where extremes and dense eigvalsh cost the same (log-log interpolation), or a bound."""
    pts = sorted((r["n"], r["seconds"]["extremes"] / r["seconds"]["dense"]) for r in rows
                 if r["threads"] == threads)
    for (n0, q0), (n1, q1) in zip(pts, pts[1:]):
        if q0 >= 1.0 > q1:
            f = math.log(q0) / (math.log(q0) - math.log(q1))
            return float(math.exp(math.log(n0) + f * (math.log(n1) - math.log(n0)))), "interpolated"
    if pts and pts[0][1] < 1.0:
        return float(pts[0][0]), "certified faster already at the smallest size"
    if pts:
        return float(pts[-1][0]), "dense faster at every size measured"
    return math.nan, "no data"


def accuracy(n):
    d0 = 32
    X = make_data("sphere", d0, n, seed=1)
    rows = []
    for act in ACTS:
        K = expected_gram(X, act)
        for ratio in RATIOS:
            d1 = int(round(ratio * n))
            sums = accumulate(X, act, d1, key_W=rng.stream_key(1, "W0", 0))
            M0 = sums.M0
            ev = sl.eigvalsh(M0, driver="evd")
            D = K * (-d1)
            D += M0
            evd = sl.eigvalsh(D, driver="evd")
            del D
            e = ext.extremes(M0, method="certified")
            nr = ext.spectral_norm_certified(M0, K, beta=d1, method="certified")
            nref = max(-evd[0], evd[-1])
            ref = {"min": ev[0], "max": ev[-1], "second": ev[-2]}
            row = {"act": act, "d1/n": ratio, "cond": ev[-1] / ev[0], "route": e.route, "norm_route": nr.route}
            for k in ("min", "max", "second"):
                row[k] = (e[k].value - ref[k]) / abs(ref[k])
                row[k + "_width"] = e[k].width / abs(ref[k])
                row[k + "_contains"] = bool(e[k].lo <= ref[k] <= e[k].hi)
            row["norm"] = (nr.value - nref) / nref
            row["norm_width"] = nr.bracket.width / nref
            row["norm_contains"] = bool(nr.bracket.lo <= nref <= nr.bracket.hi)
            rows.append(row)
    return rows


def largest_n(mem_bytes, basis=ext.MAX_BASIS + 8):
    """Largest n with 3 n^2 doubles + one row block (DEFAULT_BLOCK_BYTES) + Krylov basis <= mem."""
    a, b, c = 24.0, 8.0 * basis, DEFAULT_BLOCK_BYTES - mem_bytes
    return int((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, accuracy at n = 600")
    ap.add_argument("--sizes", type=str, default=None, help="comma-separated n (d0, d1 from the table)")
    ap.add_argument("--threads", type=str, default="1",
                    help="BLAS thread counts, comma-separated (1 = a study worker; add 2 on an idle machine)")
    ap.add_argument("--reps", type=int, default=2, help="repetitions (best is kept)")
    ap.add_argument("--accuracy-n", type=int, default=None)
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (QUICK if args.quick else SIZES)
    threads = [int(t) for t in args.threads.split(",")]
    acc_n = args.accuracy_n or (600 if args.quick else 1000)
    print(f"load average at start: {os.getloadavg()}  (the machine is shared: timings are best of {args.reps})")
    rows = []
    for n in sizes:
        for th in threads:
            r = speed(n, th, args.reps)
            rows.append(r)
            s = r["seconds"]
            print(f"n={n} threads={th}: " + ", ".join(f"{k} {v:.3f}s" for k, v in s.items()), flush=True)
    print("\n| n, d0, d1 | BLAS threads | dense eigvalsh | certified extremes | dense / extremes | one Cholesky "
          "| ARPACK norm | certified norm | Lanczos norm | today (dense+ARPACK) | new, certified | today / new "
          "| new, Lanczos norm | today / that | extremes factorizations, vectors |")
    print("|" + "---|" * 15)
    for r in rows:
        s = r["seconds"]
        today = s["dense"] + s["arpack"]
        new = s["extremes"] + s["norm_cert"]
        newl = s["extremes"] + s["norm_lanczos"]
        it = r["extremes_iterations"]
        print(f"| {r['n']}, {r['d0']}, {r['d1']} | {r['threads']} | {s['dense']:.3f} s | {s['extremes']:.3f} s "
              f"| {s['dense'] / s['extremes']:.2f}x | {s['cholesky']:.3f} s | {s['arpack']:.3f} s "
              f"| {s['norm_cert']:.3f} s | {s['norm_lanczos']:.3f} s | {today:.3f} s | {new:.3f} s "
              f"| {today / new:.2f}x | {newl:.3f} s | {today / newl:.2f}x "
              f"| {it['factorizations']}, {it['vectors']} ({r['extremes_route']}) |")
    print("\nrelative difference from today's values (dense eigvalsh; ARPACK for the norm):")
    for r in rows:
        print(f"  n={r['n']} threads={r['threads']}: " + ", ".join(f"{k} {v:+.1e}" for k, v in r["rel_vs_today"].items()))
    cross = {}
    for th in threads:
        c, how = crossover(rows, th)
        cross[th] = (c, how)
        print(f"crossover (extremes = dense eigvalsh), {th} BLAS thread(s): n ~ {c:.0f} ({how}); "
              f"module constant DENSE_BELOW_N = {ext.DENSE_BELOW_N}")
    acc = []
    if not args.no_accuracy:
        acc = accuracy(acc_n)
        print(f"\naccuracy at n = {acc_n}, d0 = 32 (relative difference from dense scipy eigvalsh; "
              "bracket width relative; 'in' = bracket contains the dense value):")
        print("| activation | d1/n | cond(M0) | lambda_min | width | lambda_max | width | lambda_2 | width "
              "| ‖M0-E[M0]‖ | width | routes | all in |")
        print("|" + "---|" * 13)
        for a in acc:
            ins = all(a[k + "_contains"] for k in ("min", "max", "second", "norm"))
            print(f"| {a['act']} | {a['d1/n']} | {a['cond']:.2g} | {a['min']:+.1e} | {a['min_width']:.1e} "
                  f"| {a['max']:+.1e} | {a['max_width']:.1e} | {a['second']:+.1e} | {a['second_width']:.1e} "
                  f"| {a['norm']:+.1e} | {a['norm_width']:.1e} | {a['route']}/{a['norm_route']} | {ins} |")
    mem = {"24 GiB": 24 * 2**30, "139 GiB GPU": 139 * 2**30}
    print("\nlargest n by the allocation plan (3 n^2 doubles + one row block + Krylov basis):")
    for k, v in mem.items():
        print(f"  {k}: n = {largest_n(v)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"speed": rows, "crossover": cross, "accuracy": acc,
                       "largest_n": {k: largest_n(v) for k, v in mem.items()}}, f, indent=1, default=float)


if __name__ == "__main__":
    main()
