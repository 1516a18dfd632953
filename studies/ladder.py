"""The overparameterization ladder: the widths the paper's chain needs along n = d0^2/4, side by side.

    python studies/ladder.py --quick --out ladder_quick      # about 2-4 min on 2 cores
    python studies/ladder.py --out ladder                    # the CPU run (see README for its time)

Per activation and case (n, d0) on the line n = d0^2 / 4 (t = 2), with w2 by the Eq. 19 rule
(w1 w2 sqrt(d0 d1) = 1) and C = 1, three width thresholds d1*:

- ``margin``: the paper's sufficient width, Eq. 9 margin > 1 (Theorem 1's condition at Theta_0);
- ``ck``: conjugate-kernel concentration, delta1 = 1 - lambda_min(M0)/lambda_min(E[M0]) <= 1/2;
- ``ntk``: NTK concentration, delta_ntk = 1 - lambda_min(J J^T)/lambda_min(E[J J^T]) <= 1/2 (Monte Carlo only).

Two sources for each:

- ``de``: deterministic predictions, no Monte Carlo: lambda_min(M0) and lambda_max(M0) from the
  deterministic equivalent of M0 (``theory.asymptotics``, Louart-Liao-Couillet 2018) for the exact
  K = E[M0]/d1 of the data; sigma_max(V0) ~ w2 sqrt(d1) (d2 = 1); h0 ~ w2^2 d1 tr(K) + ||Y||^2 (its
  expectation); then the margin of Eq. 9 and delta1 as functions of d1, solved for the crossing by
  bisection in log d1. Up to n = 4096 in the full run (one eigen-solve of K per case and data draw).
- ``mc``: Monte Carlo with width paths (``run_trial_path``, one pass per trial over a doubling d1
  grid, the NTK in the same pass): per trial the crossing width (``scaling.crossing_widths``), the
  median over trials and data draws (``data_seed``) with a hierarchical bootstrap interval (draws,
  then trials: the interval carries the X-draw variance).

Fits ``d0 d1* ~ n^b`` per threshold, activation and source (``scaling.fit_scaling``), against 1 (the
parameter count, the minimum-overparameterization line) and 3/2 (the paper). Writes ``ladder.json``
(``{"thresholds": [...], "fits": [...]}``) and ``ladder.png`` (the headline figure) into ``--out``;
``rmt-engine report OUT --out DIR`` writes the ladder's report (figure, claims table, thresholds:
``rmt_engine.report.ladder_section``, which also holds the fits and the figure).
- ``gd`` and ``gd_eq13`` (Monte Carlo at the smallest cases): gradient descent from Theta_0 reaching
  h <= 1e-4 h0, with the NTK step and a budget scaled to the linearized prediction, and with the
  theorem's Eq. 13 step in a fixed budget (``GD_*`` below say why and how).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

import rmt_engine as rmt
from rmt_engine.linalg.spectra import eigvalsh
from rmt_engine.report import scaling as S
from rmt_engine.report.ladder_section import EVENTS, FIT_WINDOWS, fits, ladder_figure  # noqa: F401
from rmt_engine.theory import bounds
from rmt_engine.theory.activations import activation as get_activation
from rmt_engine.theory.asymptotics import deterministic_equivalent_from_eigenvalues, extreme_edges, predict_record
from rmt_engine.theory.expected import expected_gram

LEVEL = 0.5  # the median crossing width: what a deterministic prediction describes
CK_DELTA = 0.5


def w2_eq19(w1, d0, d1, scale=1.0):
    return scale / (w1 * math.sqrt(d0 * d1))


def de_point(act_name, n, d0, data_seed):
    """What the deterministic predictions need of one data draw: the eigenvalues of K = E[M0]/d1
    (exact, Hermite series), sigma_max(X) and tr K."""
    X = rmt.make_data("sphere", d0, n, data_seed)
    ev = np.clip(np.asarray(eigvalsh(expected_gram(X, act_name))), 0.0, None)
    return ev, float(np.linalg.svd(X, compute_uv=False)[0]), float(ev.sum())


def de_curves(act_name, point, d0, d1):
    """Deterministic Eq. 9 margin and delta1 at width ``d1`` for one data draw (``de_point``)."""
    act = get_activation(act_name)
    ev, smax_X, trK = point
    d = float(d1)
    if int(round(d)) > ev.size and ev[0] > 0:  # the O(n) outer edges (full rank K, d1 > n)
        lo, hi = extreme_edges(ev, int(round(d)))
        lam_min, lam_max = lo * d, hi * d
    else:  # the zero atom or the hard edge: the full deterministic equivalent
        pr = predict_record(None, int(round(d)), de=deterministic_equivalent_from_eigenvalues(ev, int(round(d))))
        lam_min, lam_max = pr["asym_lambda_min"], pr["asym_lambda_max"]
    w2 = w2_eq19(1.0, d0, d)
    smax_V = w2 * (math.sqrt(d) + 1.0)  # d2 = 1: ||v|| ~ w2 sqrt(d1)
    h0 = w2 * w2 * d * trK + 1.0  # E ||v^T F - Y||^2 = w2^2 tr E[M0] + ||Y||^2
    mu, nu, beta = bounds.lemma3(math.sqrt(max(lam_min, 0.0)), math.sqrt(max(lam_max, 0.0)), smax_X, smax_V,
                                 act.dphi_max, act.ddphi_max, smax_V)
    margin = bounds.eq9_margin(mu, nu, beta, h0, 1.0)
    delta1 = 1.0 - lam_min / (d * float(ev[0])) if ev[0] > 0 else math.nan
    return margin, delta1


def _bisect(f, a, b, fa, iters):
    """Bisection in log d1 on [a, b] (f changes sign there; fa = f(a))."""
    la, lb = math.log(a), math.log(b)
    for _ in range(iters):
        m = 0.5 * (la + lb)
        fm = f(math.exp(m))
        if fm * fa > 0:
            la, fa = m, fm
        else:
            lb = m
    return math.exp(0.5 * (la + lb))


def de_thresholds(act, n, d0, draws, *, iters=10, max_ratio=2.0**24):
    """Per data draw the d1 where the deterministic margin crosses 1 and delta1 crosses 1/2: a scan over
    d1 = 1.05 n sqrt(2)^k brackets both, then bisection in log d1 (relative precision ~ 3e-4)."""
    out = {"margin": [], "ck": []}
    for s in range(draws):
        pt = de_point(act, n, d0, 1000 + s)
        cache = {}

        def curves(d):
            if d not in cache:
                cache[d] = de_curves(act, pt, d0, d)
            return cache[d]

        funcs = {"margin": lambda d: math.log(max(curves(d)[0], 1e-300)),
                 "ck": lambda d: curves(d)[1] - CK_DELTA}
        found = {}
        prev = None
        d = 1.05 * n  # above the hard edge at d1 = n (lambda_min(M0) -> 0 there)
        while len(found) < 2 and d <= max_ratio * n:
            vals = {e: f(d) for e, f in funcs.items()}
            if prev is not None:
                for e in funcs:
                    if e not in found and np.isfinite(vals[e]) and np.isfinite(prev[1][e]) and \
                            vals[e] * prev[1][e] <= 0:
                        found[e] = _bisect(funcs[e], prev[0], d, prev[1][e], iters)
            prev = (d, vals)
            d *= math.sqrt(2.0)
        for e in funcs:
            out[e].append(found.get(e, math.nan))
    return out


def mc_widths(act, n, d0, d1s, trials, draws, norm_rows=None, t=2):
    """Per (draw, trial) crossing widths of the three events from width paths (NaN where censored).
    ``norm_rows``: a list that receives, per checkpoint, the quantiles over draws and trials of the
    proof's norm-route ratio ``||M0 - E M0|| / lambda_min(E M0)`` (``norm_route_fit`` fits them)."""
    import xarray as xr  # noqa: PLC0415

    spec = rmt.TrialSpec(activation=act, n=n, d0=d0, d1=d1s[-1], ntk=True)
    w2s = [w2_eq19(1.0, d0, d) for d in d1s]
    cube = {e: np.full((draws, trials, len(d1s)), np.nan) for e in ("margin", "delta1", "delta_ntk", "norm")}
    for s in range(draws):
        sp = rmt.TrialSpec(**{**spec.__dict__, "data_seed": 1000 + s, "extra": {}})
        cache = {}
        for k in range(trials):
            for j, rec in enumerate(rmt.run_trial_path(sp, k, d1s, w2s=w2s, cache=cache)):
                for e in ("margin", "delta1", "delta_ntk"):
                    cube[e][s, k, j] = rec[e]
                cube["norm"][s, k, j] = rec["dev_M0"] / rec["lambda_min_EM0"] if rec["lambda_min_EM0"] > 0 else np.nan
    if norm_rows is not None:
        for j, d in enumerate(d1s):
            v = cube["norm"][:, :, j].ravel()
            v = v[np.isfinite(v)]
            if v.size:
                q05, med, q95 = np.quantile(v, [0.05, 0.5, 0.95])
                norm_rows.append({"activation": act, "n": n, "d0": d0, "t": t, "d1": d, "median": float(med),
                                  "q05": float(q05), "q95": float(q95), "trials": int(v.size)})
    coords = {"data_draw": np.arange(draws), "trial": np.arange(trials), "d1": np.asarray(d1s, float)}
    das = {e: xr.DataArray(v, dims=("data_draw", "trial", "d1"), coords=coords) for e, v in cube.items()}
    widths = {
        "margin": S.crossing_widths(var=das["margin"], threshold=1.0, sense=">"),
        "ck": S.crossing_widths(var=das["delta1"], threshold=CK_DELTA, sense="<=", var_scale="linear"),
        "ntk": S.crossing_widths(var=das["delta_ntk"], threshold=CK_DELTA, sense="<=", var_scale="linear"),
    }
    return {e: _censored_widths(w) for e, w in widths.items()}


def _censored_widths(w):
    """``(widths, censored)``: the widths as the quantiles take them (``scaling.widths_for_quantiles``)."""
    return S.widths_for_quantiles(w), w["censored"]


#: Gradient descent (the fourth threshold): reach h <= GD_TOL h0. The NTK step lr = 1/(2 lambda_max(J J^T))
#: at Theta_0 -- the engine's loss is h = ||r||^2 (gradient 2 J^T r), so the linearized residual obeys
#: r <- (I - 2 lr J J^T) r, whose factors 1 - lambda/lambda_max lie in [0, 1 - 1/kappa]: stable and
#: monotone for every mode (it is the familiar 1/lambda_max step of the loss ||r||^2 / 2). Its budget
#: scales with the linearized prediction k* = ln(1/GD_TOL) / (-2 ln(1 - 1/kappa)) (kappa = cond(J J^T)):
#: GD_BUDGET_FACTOR k*, capped at GD_MAX_ITERS (a width whose budget the cap cuts is not decided:
#: NaN). The theorem's own Eq. 13 step (``eta_max`` of the record) runs with a fixed budget
#: GD_EQ13_ITERS; where it walls, no width suffices and the threshold reads "not reached".
GD_TOL = 1e-4
GD_BUDGET_FACTOR = 4.0
GD_MAX_ITERS = 20000
GD_EQ13_ITERS = 2000


def gd_widths(act, n, d0, d1s, trials, draws):
    """Per (draw, trial) crossing widths of GD convergence with the NTK step and with Eq. 13's step."""
    from dataclasses import replace  # noqa: PLC0415

    import xarray as xr  # noqa: PLC0415

    from rmt_engine.montecarlo.train import TrainSpec, gradient_descent, initial_weights  # noqa: PLC0415
    from rmt_engine.montecarlo.trial import point_data  # noqa: PLC0415

    spec = rmt.TrialSpec(activation=act, n=n, d0=d0, d1=d1s[-1], ntk=True)
    w2s = [w2_eq19(1.0, d0, d) for d in d1s]
    ev = {e: np.full((draws, trials, len(d1s)), np.nan) for e in ("gd", "gd_eq13")}
    for s in range(draws):
        sp = replace(spec, data_seed=1000 + s)
        cache = {}
        for k in range(trials):
            for j, rec in enumerate(rmt.run_trial_path(sp, k, d1s, w2s=w2s, cache=cache)):
                spd = replace(sp, d1=d1s[j], w2=w2s[j])
                lmin, lmax = rec["lambda_min_ntk"], rec["lambda_max_ntk"]
                if not (lmin > 0 and lmax > 0):
                    continue
                pd = point_data(spd, cache)
                W0, V0 = initial_weights(spd, k)
                kappa = lmax / lmin
                pred = math.log(1.0 / GD_TOL) / (-2.0 * math.log1p(-1.0 / kappa)) if kappa > 1 else 1.0
                budget = math.ceil(GD_BUDGET_FACTOR * pred)
                if budget <= GD_MAX_ITERS:
                    r = gradient_descent(pd.X, pd.Y, W0, V0, act, 0.5 / lmax,
                                         TrainSpec(max_iters=budget, tol=GD_TOL), ntk=False)
                    ev["gd"][s, k, j] = float(r.status == 0)
                r = gradient_descent(pd.X, pd.Y, W0, V0, act, rec["eta_max"],
                                     TrainSpec(max_iters=GD_EQ13_ITERS, tol=GD_TOL), ntk=False)
                ev["gd_eq13"][s, k, j] = float(r.status == 0)
    coords = {"data_draw": np.arange(draws), "trial": np.arange(trials), "d1": np.asarray(d1s, float)}
    return {e: _censored_widths(S.crossing_widths(xr.DataArray(v, dims=("data_draw", "trial", "d1"), coords=coords)))
            for e, v in ev.items()}


#: The deviation at which the proof's route is read: delta1 <= NORM_DELTA through the norm needs
#: ||M0 - E M0|| / lambda_min(E M0) <= NORM_DELTA (Eq. 66-67).
NORM_DELTA = 0.2


def norm_route_fit(rows):
    """Per activation and t, ``log r = alpha + a log n + c log d1`` for the median norm-route ratio r over
    every (n, d1) checkpoint (``scaling.fit_power_law_2d``: least squares; 95% Student-t intervals on a and
    c), and the width the route needs, ``r <= NORM_DELTA``: ``d1 ~ n^{-a/c}`` (its exponent with the interval
    of -a/c by the delta method). Only checkpoints with d1 >= 4 n enter (below, lambda_min(M0) is near its
    hard edge)."""
    import xarray as xr  # noqa: PLC0415
    from scipy import stats  # noqa: PLC0415

    out = []
    for act, t in sorted({(r["activation"], r["t"]) for r in rows}):
        pts = [r for r in rows if (r["activation"], r["t"]) == (act, t) and r["d1"] >= 4 * r["n"] and r["median"] > 0]
        if len(pts) < 5 or len({r["n"] for r in pts}) < 2:
            continue
        r_ = xr.DataArray([r["median"] for r in pts], dims="point",
                          coords={"n": ("point", [float(r["n"]) for r in pts]),
                                  "d1": ("point", [float(r["d1"]) for r in pts])})
        f = S.fit_power_law_2d(r_, "n", "d1")
        a, c = float(f["b"]), float(f["c"])
        tq = float(stats.t.ppf(0.975, len(pts) - 3))
        var_e = (float(f["stderr_b"]) ** 2 / c**2 + a**2 * float(f["stderr_c"]) ** 2 / c**4
                 - 2 * a * float(f["cov_bc"]) / c**3)  # delta method for e = -a/c
        out.append({"activation": act, "t": t, "a": a, "a_half": tq * float(f["stderr_b"]), "c": c,
                    "c_half": tq * float(f["stderr_c"]), "prefactor": float(f["prefactor"]),
                    "width_exponent": -a / c, "width_exponent_half": tq * math.sqrt(var_e), "points": len(pts),
                    "n_max": max(r["n"] for r in pts)})
    return out


def _mc_row(act, n, d0, t, event, widths, censored, d1s, n_boot) -> dict:
    """One Monte Carlo threshold: the median crossing width over draws and trials with its hierarchical
    bootstrap interval; ``upper_bound`` when at least half the trials are censored below (the event held
    from their first decided width on: the median is that width or less)."""
    hb = S.hierarchical_bootstrap_threshold(widths, LEVEL, n_boot=n_boot)
    return {"activation": act, "n": n, "d0": d0, "t": t, "event": event, "source": "mc",
            "d1_star": float(hb["d_star"]), "lo": float(hb["lo"]), "hi": float(hb["hi"]),
            "censored": int((censored != 0).sum()), "censored_below": int((censored < 0).sum()),
            "trials": int(censored.size), "upper_bound": bool(2 * int((censored < 0).sum()) >= censored.size)}


def run(cases, activations, *, de_draws, mc_cases, mc_d1_factors, trials, mc_draws, n_boot, gd_cases=(),
        gd_d1_factors=(), gd_trials=0, gd_draws=0, log=print, norm_rows=None):
    thresholds, t0 = [], time.perf_counter()
    for act in activations:
        for n, d0, t in cases:
            th = de_thresholds(act, n, d0, de_draws)
            for e, vals in th.items():
                v = np.asarray(vals, float)
                ok = v[np.isfinite(v)]
                thresholds.append({"activation": act, "n": n, "d0": d0, "t": t, "event": e, "source": "de",
                                   "d1_star": float(np.median(ok)) if ok.size else math.nan,
                                   "lo": float(ok.min()) if ok.size else math.nan,
                                   "hi": float(ok.max()) if ok.size else math.nan, "draws": int(ok.size)})
            log(f"de {act} t={t} n={n}: " + ", ".join(f"{e} {thresholds[-k]['d1_star']:.4g}"
                                                for k, e in ((2, 'margin'), (1, 'ck'))) +
                f"  ({time.perf_counter() - t0:.0f} s)")
        for kind, cases_, factors, widths_of in (
                ("mc", mc_cases, mc_d1_factors,
                 lambda n, d0, d1s, t: mc_widths(act, n, d0, d1s, trials, mc_draws, norm_rows, t)),
                ("gd", gd_cases, gd_d1_factors, lambda n, d0, d1s, t: gd_widths(act, n, d0, d1s, gd_trials, gd_draws))):
            for n, d0, t in cases_:
                d1s = [int(round(n * f)) for f in factors]
                rows = [_mc_row(act, n, d0, t, e, d, cens, d1s, n_boot)
                        for e, (d, cens) in widths_of(n, d0, d1s, t).items()]
                thresholds += rows
                log(f"{kind} {act} t={t} n={n}: " + ", ".join(f"{r['event']} {r['d1_star']:.4g} [{r['lo']:.4g}, "
                                                            f"{r['hi']:.4g}]" for r in rows)
                    + f"  ({time.perf_counter() - t0:.0f} s)")
    return thresholds


#: Cases ``(n, d0, t)``: the line n = d0^2/4 (t = 2: n <= C(d0+1, 2), X^{*2} of full rank) and the
#: line n = d0^3/64 (t = 3: n <= C(d0+2, 3)).
T2 = [(16, 8, 2), (36, 12, 2), (64, 16, 2), (144, 24, 2), (256, 32, 2), (576, 48, 2), (1024, 64, 2),
      (2304, 96, 2), (4096, 128, 2)]
T3 = [(64, 16, 3), (216, 24, 3), (512, 32, 3), (1000, 40, 3), (1728, 48, 3), (4096, 64, 3)]
QUICK = dict(cases=T2[:5] + T3[:2], activations=["gelu", "tanh"],
             de_draws=2, mc_cases=T2[:3],
             mc_d1_factors=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512], trials=8, mc_draws=2, n_boot=300,
             gd_cases=T2[:2], gd_d1_factors=[1.5, 3, 6, 12, 24, 48], gd_trials=4, gd_draws=2)
#: A smoke run for the test suite (seconds): every code path, no claim.
TINY = dict(cases=T2[:3] + T3[:1], activations=["gelu"], de_draws=1, mc_cases=T2[:1],
            mc_d1_factors=[1, 4, 16, 64, 256], trials=3, mc_draws=2, n_boot=50,
            gd_cases=T2[:1], gd_d1_factors=[1.5, 6, 24], gd_trials=2, gd_draws=2)
#: The CPU run: deterministic thresholds on both lines up to n = 4096 (3 draws of X each), Monte Carlo
#: width paths to d1 = 256 n up to n = 256 (t = 2) and n = 216 (t = 3) (sigmoid's and softplus's margins
#: lie beyond 256 n: censored, reported as not reached), GD at n = 16, 36.
FULL = dict(cases=T2 + T3, activations=["gelu", "tanh", "sigmoid", "softplus"], de_draws=3,
            mc_cases=T2[:5] + T3[:2],
            mc_d1_factors=[1, 2, 4, 8, 16, 32, 64, 128, 256], trials=20, mc_draws=3, n_boot=2000,
            gd_cases=T2[:2], gd_d1_factors=[1.5, 3, 6, 12, 24, 48, 96], gd_trials=6, gd_draws=3)
#: The proof's norm route alone (``--norm-route``): ||M0 - E M0|| / lambda_min(E M0) along t = 2 to n = 256
#: (the Monte Carlo thresholds come with it; no deterministic line, no GD).
NORM = dict(cases=[], activations=["gelu", "tanh", "sigmoid", "softplus"], de_draws=0, mc_cases=T2[:5],
            mc_d1_factors=[4, 8, 16, 32, 64, 128, 256], trials=4, mc_draws=2, n_boot=300)
#: The GPU / cluster size (the same script; minutes per case on one GPU): Monte Carlo to n = 1024.
CLUSTER = dict(FULL, mc_cases=T2[:7] + T3[:4], trials=50, mc_draws=5)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small cases (a few minutes on 2 cores)")
    ap.add_argument("--tiny", action="store_true", help="a smoke run of every code path (seconds; no claim)")
    ap.add_argument("--cluster", action="store_true", help="the GPU / cluster size (Monte Carlo to n = 1024)")
    ap.add_argument("--de-only", action="store_true", help="the deterministic thresholds alone (no Monte Carlo)")
    ap.add_argument("--norm-route", action="store_true", help="the proof's norm-route ratio along t = 2 (minutes)")
    ap.add_argument("--out", default="ladder", help="output folder (ladder.json, ladder.png)")
    args = ap.parse_args(argv)
    cfg = (TINY if args.tiny else QUICK if args.quick else CLUSTER if args.cluster else NORM if args.norm_route
           else FULL)
    if args.de_only:
        cfg = dict(cfg, mc_cases=[], gd_cases=[])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    norm_rows: list = []
    th = run(**cfg, norm_rows=norm_rows)
    if not th:
        raise SystemExit("nothing measured (an empty configuration)")
    fs = fits(th)
    nf = norm_route_fit(norm_rows)
    (out / "ladder.json").write_text(json.dumps({"thresholds": th, "fits": fs, "norm_route": {
        "points": norm_rows, "fits": nf, "delta": NORM_DELTA}, "config": {k: v for k, v in cfg.items()},
        "seconds": time.perf_counter() - t0}, indent=1, default=float))
    ladder_figure(th, fs, out / "ladder.png")
    for f in fs:
        print(f"fit {f['activation']:8s} t={f['t']} {f['event']:6s} {f['source']} [{f['window']}]: b = {f['b']:.3f} "
              f"({f['lo']:.3f}, {f['hi']:.3f}) "
              f"over n in [{f['n_min']:g}, {f['n_max']:g}]; vs 1: {f['verdict_1']}, vs 3/2: {f['verdict_3_2']}")
    for f in nf:
        print(f"norm route {f['activation']:8s} t={f['t']}: ||M0 - E M0|| / lambda_min(E M0) ~ {f['prefactor']:.3g} "
              f"n^{f['a']:.3f}(+-{f['a_half']:.3f}) d1^{f['c']:.3f}(+-{f['c_half']:.3f}); <= {NORM_DELTA} needs "
              f"d1 ~ n^{f['width_exponent']:.2f} (+-{f['width_exponent_half']:.2f})")
    print(f"wrote {out / 'ladder.json'} and {out / 'ladder.png'} in {time.perf_counter() - t0:.0f} s")
    return th, fs


if __name__ == "__main__":
    main()
