"""The width law (Eq. 9, 21) with width paths and three draws of X, beside today's design.

``studies/width_law.toml`` measures, per case (n = d0^2 / 4, linked), the smallest d1 at which the
Eq. 9 margin exceeds 1 in 95% of trials: one draw of X per case, every width computed from scratch,
a yes/no per trial at each grid width (a binomial threshold at the resolution of a factor-2 grid).
This script runs three designs of the same grid and prints them side by side:

1. ``points``: the study as written; the binomial 95% threshold (``scaling.threshold``, as the report).
2. ``path``: the same study with ``width_path = true`` (one pass per trial over the d1 axis): the same
   numbers to rounding, so the same thresholds; the wall-time ratio of the two designs.
3. ``draws``: ``width_path = true`` and a ``data_seed`` axis of 3 draws of X (draw 0 is the X of
   designs 1 and 2). Per trial the crossing width of margin > 1 (``scaling.crossing_widths``,
   interpolated in log d1 between checkpoints); per case the 95% and 50% quantiles pooled over draws
   with a hierarchical bootstrap interval (draws, then trials), the per-draw 95% quantiles with their
   distribution-free order-statistic intervals, and the split of the variance of log d1_cross into
   between-X and within-X parts (``scaling.data_draw_variance``); per activation the fit of
   d0 d1* ~ n^b on the pooled thresholds (least squares on logs, Student-t interval: 4 cases, 2
   degrees of freedom) and the spread of b over the three draws.

Usage::

    python studies/width_law_draws.py --out wl_draws          # the full grid (minutes on 2 cores)
    python studies/width_law_draws.py --tiny --out /tmp/wl     # seconds (what the test runs)

Writes ``OUT/width_law_draws.json`` (every number) and ``OUT/width_law_draws.md`` (the tables), and
keeps the three cubes in ``OUT``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DRAW_SEEDS = (1, 2)  # the extra draws of X (draw 0 is the study's own seed)
LEVELS = (0.95, 0.5)

TINY = """\
name = "width_law_tiny"
[study]
trials = 6
seed = 20211209
t = ["auto"]
eq19_scale = 1.0
[grid]
activation = ["gelu", "tanh"]
d1 = [512, 1024, 2048, 4096, 8192]
w2 = "eq19"
[grid.linked]
d0 = [6, 8, 10]
n = [9, 16, 25]
[execution]
trials_per_task = 6
"""


def _with(text: str, study_lines: list[str], grid_lines: list[str]) -> str:
    """The study text with ``study_lines`` added to [study] and ``grid_lines`` to [grid]."""
    text = re.sub(r"^\[study\]\s*$", "[study]\n" + "\n".join(study_lines), text, count=1, flags=re.M)
    if grid_lines:
        text = re.sub(r"^\[grid\]\s*$", "[grid]\n" + "\n".join(grid_lines), text, count=1, flags=re.M)
    return text


def _run(text: str, store: Path, workers: int, log) -> tuple[object, float]:
    import rmt_engine as rmt

    study = rmt.Study.from_toml_text(text)
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    summary = study.run(store, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    if not summary.ok:
        raise RuntimeError(f"{store}: {summary.failures[:3]}")
    log(f"{store.name}: {summary.trials_computed} trial records in {wall:.1f} s")
    return study, wall


def _cases(ds) -> list[tuple[int, int]]:
    return [(int(n), int(d0)) for n, d0 in zip(np.ravel(ds["n"].values), np.ravel(ds["d0"].values))]


def binomial_thresholds(ds) -> dict:
    """(activation, n) -> (d_star, lo, hi): margin > 1 in 95% of trials, Clopper-Pearson inverted."""
    from rmt_engine.report import scaling as S

    m = ds["margin"]
    event = (m > 1).astype(float).where(np.isfinite(m))
    th = S.threshold(event, 0.95, "d1")
    out = {}
    for act in np.atleast_1d(ds["activation"].values):
        for k, (n, _) in enumerate(_cases(ds)):
            r = th.sel(activation=act).isel(case=k)
            out[(str(act), n)] = tuple(float(r[v]) for v in ("d_star", "lo", "hi"))
    return out


def crossing(ds):
    """Per-trial crossing widths of margin > 1: censored above -> inf, below -> the first checkpoint."""
    from rmt_engine.report import scaling as S

    cw = S.crossing_widths(var=ds["margin"], threshold=1.0, sense=">")
    return cw, S.widths_for_quantiles(cw)


def _fit(n, y):
    """d0 d1* ~ n^b over the cases (``y = d0 d1*``; at least 3 finite points): ``scaling.fit_scaling``,
    least squares on logs with its Student-t 95% interval."""
    import xarray as xr

    from rmt_engine.report import scaling as S

    y = np.asarray(y, float)
    ok = np.isfinite(y) & (y > 0)
    if ok.sum() < 3:
        return {"b": math.nan, "lo": math.nan, "hi": math.nan, "points": int(ok.sum())}
    f = S.fit_scaling(xr.DataArray(y[ok], dims="case", coords={"n": ("case", np.asarray(n, float)[ok])}), "n")
    return {"b": float(f["exponent"]), "lo": float(f["ci_lo"]), "hi": float(f["ci_hi"]), "points": int(ok.sum())}


def analyse_draws(ds, n_boot: int) -> dict:
    from rmt_engine.report import scaling as S

    cw, w = crossing(ds)
    finite = cw["d1_cross"].where(cw["censored"] == 0)
    split = S.data_draw_variance(finite, draw_dim="data_seed")
    per_draw = S.threshold(cw, 0.95, method="quantile")
    rows, fits = [], {}
    cases = _cases(ds)
    seeds = [int(s) for s in ds["data_seed"].values]
    for act in [str(a) for a in np.atleast_1d(ds["activation"].values)]:
        pooled = {lv: [] for lv in LEVELS}
        draw_th = {s: [] for s in seeds}
        for k, (n, d0) in enumerate(cases):
            row = {"activation": act, "n": n, "d0": d0}
            wk = w.sel(activation=act).isel(case=k)
            for lv in LEVELS:
                hb = S.hierarchical_bootstrap_threshold(wk, lv, draw_dim="data_seed", n_boot=n_boot)
                row[f"q{int(lv * 100)}"] = [float(hb[v]) for v in ("d_star", "lo", "hi")]
                pooled[lv].append(float(hb["d_star"]))
            pd_ = per_draw.sel(activation=act).isel(case=k)
            row["per_draw_q95"] = [[float(pd_["d_star"].sel(data_seed=s)), float(pd_["lo"].sel(data_seed=s)),
                                    float(pd_["hi"].sel(data_seed=s))] for s in seeds]
            for s, v in zip(seeds, row["per_draw_q95"]):
                draw_th[s].append(v[0])
            sp = split.sel(activation=act).isel(case=k)
            row["var_within"], row["var_between"] = float(sp["within"]), float(sp["between"])
            row["fraction_between"] = float(sp["fraction_between"])
            cens = cw["censored"].sel(activation=act).isel(case=k)
            row["censored_above"], row["censored_below"] = int((cens > 0).sum()), int((cens < 0).sum())
            row["trials"] = int(cens.size)
            rows.append(row)
        ns = [n for n, _ in cases]
        y = {lv: [d0 * v for (_, d0), v in zip(cases, pooled[lv])] for lv in LEVELS}
        fits[act] = {f"q{int(lv * 100)}": _fit(ns, y[lv]) for lv in LEVELS}
        fits[act]["per_draw_q95_b"] = [_fit(ns, [d0 * v for (_, d0), v in zip(cases, draw_th[s])])["b"] for s in seeds]
    return {"rows": rows, "fits": fits, "seeds": seeds}


def _fmt(v) -> str:
    return "not reached" if v is None or (isinstance(v, float) and math.isinf(v)) else (
        "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.3g}")


def markdown(res: dict) -> str:
    out = ["# Width law: today's design, width paths, three draws of X", "",
           f"Grid: {res['grid']}; {res['trials']} trials per case and draw.", "",
           "## Wall time", "", "| design | wall (s) | ratio to points |", "|---|---|---|"]
    for d in ("points", "path", "draws"):
        out.append(f"| {d} | {res['wall'][d]:.1f} | {res['wall'][d] / res['wall']['points']:.2f} |")
    out += ["", "## Thresholds: margin > 1 (Eq. 9) in 95% of trials", "",
            "`points` / `path`: binomial threshold on the d1 grid (one X), Clopper-Pearson interval. `draws`: 95% "
            "quantile of per-trial crossing widths pooled over 3 draws of X, hierarchical bootstrap interval; "
            "median (q50) likewise (not reached: above the largest d1 for that share of trials; per-draw nan: not reached); `X share`: the fraction of the variance of log d1_cross between draws of X.", "",
            "| activation | n | d0 | points d1* [CI] | path d1* [CI] | draws q95 [CI] | draws q50 [CI] | per-draw q95 | X share |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in res["draws"]["rows"]:
        key = f"{r['activation']}|{r['n']}"
        p, q = res["points"][key], res["path"][key]
        out.append(f"| {r['activation']} | {r['n']} | {r['d0']} | {_fmt(p[0])} [{_fmt(p[1])}, {_fmt(p[2])}] | "
                   f"{_fmt(q[0])} [{_fmt(q[1])}, {_fmt(q[2])}] | "
                   f"{_fmt(r['q95'][0])} [{_fmt(r['q95'][1])}, {_fmt(r['q95'][2])}] | "
                   f"{_fmt(r['q50'][0])} [{_fmt(r['q50'][1])}, {_fmt(r['q50'][2])}] | "
                   + ", ".join(_fmt(v[0]) for v in r["per_draw_q95"]) + f" | {r['fraction_between']:.2f} |")
    out += ["", "## Fits of d0 d1* ~ n^b (paper: 3/2, Eq. 21)", "",
            "| activation | b (q95, pooled) [95% t-interval] | b (q50, pooled) | b per draw (q95) |", "|---|---|---|---|"]
    for act, f in res["draws"]["fits"].items():
        a, m = f["q95"], f["q50"]
        out.append(f"| {act} | {_fmt(a['b'])} [{_fmt(a['lo'])}, {_fmt(a['hi'])}] | {_fmt(m['b'])} "
                   f"[{_fmt(m['lo'])}, {_fmt(m['hi'])}] | " + ", ".join(_fmt(b) for b in f["per_draw_q95_b"]) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="width_law_draws", help="output folder (cubes, json, md)")
    ap.add_argument("--tiny", action="store_true", help="a seconds-long grid (the test)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-boot", type=int, default=1000)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    text = TINY if a.tiny else (HERE / "width_law.toml").read_text()
    seed = int(re.search(r"^seed\s*=\s*(\d+)", text, re.M).group(1))
    import rmt_engine as rmt

    designs = {
        "points": text,
        "path": _with(text, ["width_path = true"], []),
        "draws": _with(text, ["width_path = true"], [f"data_seed = {[seed, *DRAW_SEEDS]}"]),
    }
    wall, cubes = {}, {}
    for name, t in designs.items():
        study, wall[name] = _run(t, out / f"{name}.zarr", a.workers, log)
        ds = rmt.open_results(out / f"{name}.zarr")
        cubes[name] = ds.squeeze([d for d in ds.dims if ds.sizes[d] == 1 and d not in ("activation", "case", "trial")])
    res = {"grid": {k: list(v) for k, v in study.grid.items() if k in ("activation", "n", "d0", "d1", "data_seed")},
           "trials": study.trials, "wall": wall}
    for name in ("points", "path"):
        res[name] = {f"{a_}|{n}": v for (a_, n), v in binomial_thresholds(cubes[name]).items()}
    res["draws"] = analyse_draws(cubes["draws"], a.n_boot)
    (out / "width_law_draws.json").write_text(json.dumps(res, indent=1, default=float))
    md = markdown(res)
    (out / "width_law_draws.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
