"""The report's gradient-descent section: the numbers of ``train_report`` as Markdown, the figures of ``train_plots``.

Rule of this module: it composes, it computes nothing -- every number comes from
``rmt_engine.report.training.numbers`` and every figure from ``rmt_engine.report.training.figures``, drawn through the
report's ``fig`` helper (a ``NothingToDraw`` is recorded as "not drawn"). It sits above both, so
neither imports the other's caller (no import cycle).
"""

from __future__ import annotations

import numpy as np

from .. import analysis as A
from . import figures as TP
from .numbers import (
    LAZY_MEASURES,
    QUANTILES,
    RATIO_UNDEFINED,
    RATIO_WORDS,
    _count,
    _event,
    _fmt,
    _frac_text,
    _index_rows,
    _load,
    _md,
    _pair_filter,
    _pooled_line,
    _scalar,
    _sel,
    _settings,
    _varying,
    along_product,
    converged,
    convergence_rates,
    eq14_envelope,
    gd_thresholds,
    lazy_groups,
    lazy_summary,
    log_rate_ratio,
    margin_exceeds,
    ntk_rate_ratio,
    quantiles,
    shown_groups,
)


def training_section(ds, fig, *, level=0.95, confidence=0.95) -> list[str]:
    """The Markdown lines of the report's gradient-descent section; draws its figures through ``fig``.

    ``fig(name, fn, *args, **kwargs)`` is ``report.write_report``'s figure helper (it calls
    ``fn(*args, path=..., **kwargs)`` and records a ``NothingToDraw`` as "not drawn").
    ``level``: the fraction of trials that defines a width threshold; ``confidence``: of the intervals
    (``analysis.interval_label``). Tables show only the axes that vary; the width thresholds need two or
    more widths (else one sentence says so); the lazy-training table has a column per activation.
    """
    ds = _load(ds)
    ntr = ds.sizes.get("trial", 0)
    md = ["## Gradient descent from the same initialization (Eq. 12-14, Theorem 2/3)", "",
          f"Every trial also ran full-batch GD on h = ||V phi(W X) - Y||_F^2 from its own Theta_0: {_settings(ds)}. "
          f"{ntr} trials per grid point. Fractions count only trials whose field is finite (the number used is "
          f"given); intervals are {A.interval_label(confidence)}.", ""]

    conv, marg = converged(ds), margin_exceeds(ds)
    env = eq14_envelope(ds) if "gd_loss" in ds else None
    ball = _event(ds["gd_max_dist_over_rho"] <= 1, ds["gd_max_dist_over_rho"])
    lrr = log_rate_ratio(ds)
    md += ["### Summary (all grid points pooled)", ""]
    md.append("- " + _pooled_line("GD converged, all trials", conv, confidence=confidence))
    md.append("- " + _pooled_line("GD converged where margin > 1 (Theorem 2 applies)", conv, marg, confidence))
    md.append("- " + _pooled_line("GD converged where margin <= 1 (no guarantee)", conv, 1 - marg, confidence))
    if env is not None:
        md.append("- " + _pooled_line("loss curve within the Eq. 14 envelope (1 - 2 lr mu^2)^k, all trials", env,
                                      confidence=confidence))
        md.append("- " + _pooled_line("... where margin > 1", env, marg, confidence))
    md.append("- " + _pooled_line("stayed in ball(Theta_0, rho) of Eq. 6, all trials", ball, confidence=confidence))
    md.append("- " + _pooled_line("... where margin > 1", ball, marg, confidence))
    v = np.asarray(lrr.values, float).ravel()
    v = v[np.isfinite(v)]
    if v.size:
        md.append(f"- log(gd_rate) / log(gd_rate_theory) (how many Eq. 14 steps one GD step is worth): median "
                  f"{np.median(v):.3g}, 5-95% [{np.quantile(v, 0.05):.3g}, {np.quantile(v, 0.95):.3g}] over "
                  f"{v.size} trials with both rates in (0, 1)")
    else:
        md.append("- log-rate ratio: no trial has both rates in (0, 1)")
    sv = np.asarray(ds["gd_max_sigma_V_over_chi"].values, float).ravel()
    sv = sv[np.isfinite(sv)]
    if sv.size:
        md.append(f"- max_k sigma_max(V_k) / chi_max (Eq. 18): median {np.median(sv):.3g}, max {sv.max():.3g} "
                  f"({int((sv <= 1).sum())}/{sv.size} trials <= 1; with the default chi_max = sigma_max(V0) it is >= 1 "
                  "by construction, = 1 where V never grew past V0)")
        svm = np.asarray(ds["gd_max_sigma_V_over_chi"].where(marg == 1).values, float).ravel()
        svm = svm[np.isfinite(svm)]
        if svm.size:
            md.append(f"- ... where margin > 1: median {np.median(svm):.3g}, max {svm.max():.3g} (> 1: V grew past the "
                      "chi_max the margin's beta was computed with)")
    md.append("")

    md += _convergence_tables(ds, fig, TP, level, confidence)
    md += _rate_table(ds, fig, TP, env, lrr)
    md += _ball_table(ds, fig, TP)
    md += _lazy_section(ds, fig, TP)
    md += _curves_section(ds, fig, TP)
    return md


def _convergence_tables(ds, fig, TP, level, confidence):
    rates = convergence_rates(ds, confidence).compute()
    dims = _varying(ds)
    md = [f"### Convergence against width: P(GD converged) beside P(Eq. 9 margin > 1)", "",
          "`converged`: h_K <= tol h_0 within max_iters steps (0 = converged of `gd_status`); `margin > 1`: Eq. 9 "
          f"holds (C = 1). k/N counts trials, [lo, hi] the {A.interval_label(confidence)} interval.", ""]
    med_margin = quantiles(ds["margin"], (0.5,)).sel(quantile=0.5, drop=True).compute()
    keep, note = _pair_filter(ds)
    if note:
        md += [note, ""]
    rows = []
    for lab in _index_rows(ds, dims, keep):
        r = [str(lab[d]) for d in dims]
        for p in ("conv", "margin"):
            k, n = _scalar(rates[f"{p}_successes"], lab), _scalar(rates[f"{p}_trials"], lab)
            r += [_frac_text(k, n), f"[{_fmt(_scalar(rates[f'{p}_lo'], lab))}, {_fmt(_scalar(rates[f'{p}_hi'], lab))}]"]
        r.append(_fmt(_scalar(med_margin, lab)))
        rows.append(r)
    md += _md(dims + ["converged", "interval", "margin > 1", "interval", "median margin"], rows) + [""]

    if ds.sizes.get("d1", 1) < 2:
        md += [f"### Width thresholds: not computed, the study has one width (d1 = {int(np.ravel(ds['d1'].values)[0])})",
               ""]
        fig("gd_convergence", TP.plot_convergence, ds, rates=rates, level=level)
        return md
    thr = gd_thresholds(ds, level)
    tdims = _varying(thr)
    md += [f"### Width thresholds: GD against Eq. 9 ({level:.0%} of trials)", "",
           f"d1*(GD): smallest d1 at which GD converged in {level:.0%} of trials; d1*(margin): the same for margin > 1 "
           "(the theory's sufficient width). Log-interpolated between grid widths; `<= d1_min`: reached at the smallest "
           "width; `> d1_max`: never reached on the grid. ratio = d1*(margin) / d1*(GD): how much wider the theorem "
           "needs the network than GD does (`>=`: a lower bound).", ""]
    d1min, d1max = float(np.min(ds["d1"].values)), float(np.max(ds["d1"].values))

    def where(v, c):
        if not np.isfinite(v):
            return f"> {d1max:g}"
        return f"<= {d1min:g}" if c else _fmt(v)

    rows = []
    for lab in _index_rows(thr, tdims):
        g, cg = _scalar(thr["d1_star_gd"], lab), bool(_scalar(thr["censored_gd"], lab))
        m, cm = _scalar(thr["d1_star_margin"], lab), bool(_scalar(thr["censored_margin"], lab))
        code = int(_scalar(thr["ratio_bound"], lab))
        ratio = RATIO_WORDS[code] if code == RATIO_UNDEFINED else f"{RATIO_WORDS[code]} {_fmt(_scalar(thr['ratio'], lab))}"
        rows.append([str(lab[d]) for d in tdims] + [where(g, cg), where(m, cm), ratio])
    md += _md(tdims + ["d1*(GD)", "d1*(margin)", "ratio"], rows) + [""]
    fig("gd_convergence", TP.plot_convergence, ds, rates=rates, thresholds=thr, level=level)
    fig("gd_threshold_vs_n", TP.plot_gd_thresholds, thr)
    return md


def _rate_table(ds, fig, TP, env, lrr):
    dims = _varying(ds)
    qr = quantiles(lrr).compute()
    qg = quantiles(ds["gd_rate"], (0.5,)).sel(quantile=0.5, drop=True).compute()
    qt = quantiles(ds["gd_rate_theory"], (0.5,)).sel(quantile=0.5, drop=True).compute()
    has_ntk = "mu_ntk_final" in ds and "mu_ntk" in ds
    if has_ntk:
        p0 = quantiles(ntk_rate_ratio(ds, final=False), (0.5,)).sel(quantile=0.5, drop=True).compute()
        pK = quantiles(ntk_rate_ratio(ds, final=True), (0.5,)).sel(quantile=0.5, drop=True).compute()
    md = ["### Rate: measured contraction against Eq. 14", "",
          "`gd_rate`: fitted per-step contraction of h_k over the last 90% of the iterations; `theory`: 1 - 2 lr mu^2 "
          "(Eq. 14, C = 1) at the lr used; `log ratio` = log(gd_rate) / log(theory) (> 1: GD contracts that many times "
          "faster than Eq. 14; NaN where a rate is not in (0, 1)); `in envelope`: trials whose whole recorded curve "
          "satisfies h_k/h_0 <= theory^k. `NTK pred.`: median of 2 log(1 - 2 lr sigma_min(J)^2) / log(theory), the ratio of "
          "linearized GD's slowest mode with the NTK at Theta_0 / Theta_K (>= 2: the loss is the squared residual; a "
          "measured ratio above it: GD reached tol before its residual was left in the slowest mode).", ""]
    keep, note = _pair_filter(ds)
    if note:
        md += [note, ""]
    rows = []
    for lab in _index_rows(ds, dims, keep):
        row = [str(lab[d]) for d in dims]
        row += [_fmt(_scalar(qg, lab), 6), _fmt(_scalar(qt, lab), 6)]
        row += [_fmt(_scalar(qr.sel(quantile=q, drop=True), lab)) for q in QUANTILES]
        if has_ntk:
            row += [_fmt(_scalar(p0, lab)), _fmt(_scalar(pK, lab))]
        if env is not None:
            k, n = _count(_sel(env, lab))
            row.append(_frac_text(k, n))
        rows.append(row)
    head = dims + ["median gd_rate", "median theory", "log ratio q05", "median", "q95"]
    head += ["NTK pred. Theta_0", "NTK pred. Theta_K"] if has_ntk else []
    md += _md(head + (["in envelope"] if env is not None else []), rows) + [""]
    fig("gd_rate_vs_theory", TP.plot_rate_ratio, lrr, predicted=ntk_rate_ratio(ds) if has_ntk else None)
    return md


def _ball_table(ds, fig, TP):
    dims = _varying(ds)
    md = ["### Staying near Theta_0: the ball of Eq. 6 and the bound on V of Eq. 18", "",
          "`dist/rho` = max_k ||Theta_k - Theta_0||_F / rho, rho = mu / (2 beta) (<= 1: GD stayed in the ball the "
          "theorem keeps it in); `sigma_V/chi` = max_k sigma_max(V_k) / chi_max. Median and 95% quantile over trials, "
          "k/N trials <= 1.", ""]
    qd = quantiles(ds["gd_max_dist_over_rho"]).compute()
    qv = quantiles(ds["gd_max_sigma_V_over_chi"]).compute()
    evd = _event(ds["gd_max_dist_over_rho"] <= 1, ds["gd_max_dist_over_rho"])
    keep, note = _pair_filter(ds)
    if note:
        md += [note, ""]
    rows = []
    for lab in _index_rows(ds, dims, keep):
        row = [str(lab[d]) for d in dims]
        row += [_fmt(_scalar(qd.sel(quantile=0.5, drop=True), lab)), _fmt(_scalar(qd.sel(quantile=0.95, drop=True), lab)),
                _frac_text(*_count(_sel(evd, lab)))]
        row += [_fmt(_scalar(qv.sel(quantile=0.5, drop=True), lab)), _fmt(_scalar(qv.sel(quantile=0.95, drop=True), lab))]
        rows.append(row)
    md += _md(dims + ["dist/rho median", "q95", "<= 1", "sigma_V/chi median", "q95"], rows) + [""]
    fig("gd_ball", TP.plot_ball, ds)
    return md


def _lazy_section(ds, fig, TP):
    groups = lazy_groups(ds)
    md = ["### Lazy training (App. F): relative change of the weights and of the NTK against w2 / w1", ""]
    if not groups:
        md += ["Not measured: no two (w1, w2) pairs of the grid share the product w1 w2 (App. F fixes it, Eq. 19); "
               "vary w1 and w2 on geometric grids with the same step so that anti-diagonals have a common product.", ""]
        fig("lazy_training", TP.plot_lazy, ds, groups=groups)
        return md
    md += ["Along each product w1 w2 shared by several (w1, w2) pairs of the grid (`eq19` = w1 w2 sqrt(d0 d1), "
           "Eq. 19 asks for O(1)): medians over trials of ||W_K - W_0|| / ||W_0||, ||V_K - V_0|| / ||V_0||, the NTK's "
           "relative change ||J_K J_K^T - J_0 J_0^T||_2 / ||J_0 J_0^T||_2, the record's beta / nu^2 (Eq. 82-85) and the "
           "converged fraction (a trial that hit max_iters has not finished moving).", ""]
    other = _varying(ds, exclude=("w1", "w2"))
    main = lazy_summary(ds, groups[0]).compute()
    r = groups[0]["ratios"]
    md += [f"Along w1 w2 = {groups[0]['product']:.4g} ({len(r)} pairs, w2/w1 from {r[0]:.3g} to {r[-1]:.3g}), medians:", ""]
    for lab in _index_rows(main, other):
        where = ", ".join(f"{d} = {lab[d]}" for d in other)
        parts = []
        for k, name in (("gd_rel_change_W", "||dW||/||W0||"), ("gd_rel_change_V", "||dV||/||V0||"),
                        ("ntk_rel_change", "NTK change"), ("lazy_ratio", "beta/nu^2")):
            if k not in main:
                continue
            v = np.asarray(_sel(main[k].sel(quantile=0.5, drop=True), lab).squeeze().values, float).ravel()
            if v.size != len(r) or not np.isfinite(v).any():
                continue
            j = int(np.nanargmax(v))
            parts.append(f"{name} {_fmt(v[0])} -> {_fmt(v[-1])} (largest {_fmt(v[j])} at w2/w1 = {r[j]:.3g})")
        md.append(f"- {where}: " + "; ".join(parts))
    table_groups = shown_groups(groups)
    md += ["", f"The {len(table_groups)} products drawn in `lazy_training.png` (the most shared one and its nearest "
           "neighbours with three or more pairs):", ""]
    acts = [str(a) for a in np.ravel(ds["activation"].values)] if "activation" in other else [None]
    rest = [d for d in other if d != "activation"]
    names = {"gd_rel_change_W": "W", "gd_rel_change_V": "V", "ntk_rel_change": "NTK", "lazy_ratio": "beta/nu^2"}
    rows = []
    for g in table_groups:
        s = lazy_summary(ds, g).compute()
        for lab in _index_rows(s, rest):
            for i, (a, b) in enumerate(g["pairs"]):
                sel = dict(lab, w2_over_w1=g["ratios"][i])
                row = [f"{g['product']:.4g}", _fmt(_scalar(s["eq19_scale"], sel)) if "eq19_scale" in s else "?"]
                row += [str(lab[d]) for d in rest] + [f"{a:.4g}", f"{b:.4g}", f"{b / a:.4g}"]
                conv = []
                for act in acts:
                    sa = dict(sel, activation=act) if act is not None else sel
                    for k in LAZY_MEASURES:
                        row.append(_fmt(_scalar(s[k].sel(quantile=0.5, drop=True), sa)) if k in s else "?")
                    conv.append(_fmt(_scalar(s["converged"], sa)))
                row.append(conv[0] if len(set(conv)) == 1 else " / ".join(conv))
                rows.append(row)
    head = [f"{names[k]} {act}" if act else names[k] for act in acts for k in LAZY_MEASURES]
    md += [f"Medians over trials: W, V = relative change of W, V; NTK = relative change of the NTK Gram; "
           f"beta/nu^2 at Theta_0; `converged`: fraction of trials (one number when the activations agree)"
           + (f"; one column group per activation ({', '.join(acts)})." if acts[0] else "."), ""]
    md += _md(["w1 w2", "eq19"] + rest + ["w1", "w2", "w2/w1"] + head + ["converged"], rows) + [""]
    fig("lazy_training", TP.plot_lazy, ds, groups=groups)
    return md


def _curves_section(ds, fig, TP):
    md = ["### Loss curves", "",
          "Median over trials of h_k / h_0 (a trial that stopped is held at its last value), 5-95% band, with the "
          "Eq. 14 envelope (1 - 2 lr mu^2)^k at the median theory rate (dotted).", ""]
    if "gd_loss" not in ds:
        return md + ["_no loss curves in this cube_", ""]
    tol = (ds.attrs.get("train") or {}).get("tol")
    fig("gd_loss_curves", TP.plot_loss_curves, ds, tol=tol)
    groups = lazy_groups(ds)
    if groups:
        fig("gd_loss_curves_lazy", TP.plot_loss_curves, along_product(ds, groups[0]), tol=tol, line_dim="w2_over_w1")
    return md
