"""Figures of the gradient-descent fields of a result cube (the report's training section).

Rule of this module: the conventions of ``rmt_engine.report.plots`` -- each function draws one figure
(``matplotlib.figure.Figure``, no pyplot), one column of panels per activation that has something to
show, one colour per remaining grid combination, bands are the 5-95% quantiles over trials around the
median, log axes carry a labelled tick at every grid value, titles say what is drawn and under which
settings, and when nothing can be drawn ``NothingToDraw`` is raised with the reason instead of empty
axes. The numbers come from ``rmt_engine.report.training.numbers``; nothing is computed here that it does not define.
"""

from __future__ import annotations

import math

import numpy as np

from .. import analysis as A
from . import numbers as TR
from ..plots import (BAND, NothingToDraw, _colors, _computed_panels, _grid_ticks, _panels, _save, _series, _style_legend,
                     fixed_words as _fixed_words)
from ...study.store import ALL_AXES

__all__ = ["plot_convergence", "plot_gd_thresholds", "plot_rate_ratio", "plot_ball", "plot_lazy",
           "plot_loss_curves", "NothingToDraw"]

_SYM = {"n": "n", "d0": "d_0", "d1": "d_1", "d2": "d_2", "w1": "w_1", "w2": "w_2", "data_seed": r"\mathrm{data\_seed}"}


def _grid_figure(nrows, ncols, width=4.8, height=3.9):
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _settings_words(ds) -> str:
    tr = ds.attrs.get("train") or {}
    lr = tr.get("lr")
    scale = tr.get("lr_scale", 1.0)
    step = (f"lr = {scale:g} x Eq. 13" if lr is None else f"lr = {scale:g} x {lr:g}")
    return f"GD: tol = {tr.get('tol', '?')}, max_iters = {tr.get('max_iters', '?')}, {step}"


def _need_widths(ds, what):
    if "d1" not in ds.dims or ds.sizes["d1"] < 2:
        v = np.ravel(np.asarray(ds["d1"].values)) if "d1" in ds.coords else []
        raise NothingToDraw(f"the cube has one width (d1 = {', '.join(f'{x:g}' for x in v)}): {what} against d1 "
                            "needs two or more")


def _ratio_ticks(ax, values, axis="x"):
    """A labelled tick at every value of a derived log axis (3 significant digits)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator  # noqa: PLC0415

    vals = sorted({float(v) for v in np.ravel(values) if np.isfinite(v) and v > 0})
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(FixedLocator(vals))
    a.set_ticklabels([f"{v:.3g}" for v in vals])
    a.set_minor_locator(NullLocator())
    a.set_minor_formatter(NullFormatter())


def _log_y(ax):
    """Plain labels (0.5, 2, 10, 1e-06) on a log y axis: 1-2-5 ticks over <= 3 decades, decades beyond."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: PLC0415

    lo, hi = ax.get_ylim()
    if not (lo > 0 and hi > lo):
        return
    subs = (1.0, 2.0, 5.0) if math.log10(hi / lo) <= 3 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _x_ticks(ax, values):
    """``_grid_ticks`` on x, with small rotated labels when neighbouring grid values are close (< x1.6)."""
    _grid_ticks(ax, values)
    vals = sorted({float(v) for v in np.ravel(values) if np.isfinite(v) and v > 0})
    if len(vals) > 1 and min(b / a for a, b in zip(vals, vals[1:])) < 1.6:
        ax.tick_params(axis="x", labelsize=7, labelrotation=45)


def _wrap(text, fig) -> str:
    """``text`` wrapped to the figure's width (about 14 characters per inch at fontsize 9)."""
    import textwrap  # noqa: PLC0415

    return "\n".join(textwrap.wrap(text, max(40, int(fig.get_figwidth() * 14))))


def _v(x) -> str:
    return f"{x:g}" if isinstance(x, (int, float, np.number)) else str(x)


def _ntrials(ds) -> int:
    return int(ds.sizes.get("trial", 0))


# ------------------------------------------------------------------------------------------------
# (a) convergence against width


def plot_convergence(ds, path=None, *, rates=None, thresholds=None, level=0.95, confidence=0.95):
    """P(GD converged) (circles, solid) and P(Eq. 9 margin > 1) (squares, dashed) against d1 with
    intervals (``analysis.interval_label``: 95% Clopper-Pearson by default); vertical lines at the two width thresholds d1* (dotted: GD, dashed: margin);
    the legend gives their ratio per series. Needs two or more widths."""
    from matplotlib.lines import Line2D  # noqa: PLC0415

    _need_widths(ds, "the convergence probability")
    rates = (rates if rates is not None else TR.convergence_rates(ds, confidence)).compute()
    thr = (thresholds if thresholds is not None else TR.gd_thresholds(ds, level)).compute()
    conf = rates.attrs.get("confidence", confidence)
    panels = _computed_panels(rates["conv_rate"])  # a partial cube: activations not computed yet are left out
    fig, axes = _grid_figure(1, len(panels))
    for ax, (act, _) in zip(axes[0], panels):
        pick = (lambda v: v.sel(activation=act)) if act else (lambda v: v)
        sub, tsub = pick(rates), pick(thr)
        ser = _series(sub["conv_rate"], "d1")
        cols = _colors(len(ser))
        get = {k: dict(_series(sub[k], "d1")) for k in sub.data_vars}
        tget = {k: dict(_series(tsub[k], "d1")) for k in tsub.data_vars}
        labels, texts = [], []
        for si, (c, (label, _)) in enumerate(zip(cols, ser)):
            for j, (p, marker, ls) in enumerate((("conv", "o", "-"), ("margin", "s", "--"))):
                s = get[f"{p}_rate"][label]
                off = 1.0 + 0.035 * (2 * si + j - (2 * len(ser) - 1) / 2)  # side by side, so the bars do not overlap
                x = s["d1"].values.astype(float)
                r = np.asarray(s.values, float)
                err = np.vstack([r - np.asarray(get[f"{p}_lo"][label].values, float),
                                 np.asarray(get[f"{p}_hi"][label].values, float) - r])
                ax.errorbar(x * off, r, yerr=np.nan_to_num(err), fmt="none", ecolor=c, elinewidth=0.8, alpha=0.55,
                            capsize=1.5)
                ax.plot(x, r, marker=marker, ms=4, ls=ls, lw=1.3, color=c, mfc=c if p == "conv" else "white")
            g = float(np.ravel(tget["d1_star_gd"][label].values)[0])
            m = float(np.ravel(tget["d1_star_margin"][label].values)[0])
            if np.isfinite(g):
                ax.axvline(g, color=c, ls=":", lw=1.3)
            if np.isfinite(m):
                ax.axvline(m, color=c, ls="--", lw=0.8, alpha=0.7)
            code = int(np.ravel(tget["ratio_bound"][label].values)[0])
            ratio = float(np.ravel(tget["ratio"][label].values)[0])
            rtxt = "undefined" if code == TR.RATIO_UNDEFINED else f"{TR.RATIO_WORDS[code]} {ratio:.3g}"
            labels.append(label)
            texts.append(f"{label + ' ' if label else ''}{rtxt}")
        ax.axhline(level, color="0.5", lw=0.8)
        if not np.nanmax(np.asarray(sub["conv_rate"].values, float), initial=0.0) > 0:
            fl = pick(ds["gd_final_loss"]) if "gd_final_loss" in ds else None
            med = float(np.nanmedian(np.asarray(fl.values, float))) if fl is not None else math.nan
            ax.text(0.5, 0.5, f"no trial converged within max_iters\n(median h_K / h_0 = {med:.2g})",
                    transform=ax.transAxes, ha="center", va="center", fontsize=8,
                    bbox=dict(facecolor="white", edgecolor="0.7", pad=3))
        ax.set_xscale("log")
        _x_ticks(ax, rates["d1"].values)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(r"width $d_1$")
        ax.set_ylabel(f"fraction of trials (bars: {A.interval_label(conf)} interval)")
        head = f"{act}: P(GD converged), P(Eq. 9 margin > 1)" if act else "P(GD converged), P(margin > 1)"
        ax.set_title(head + "\nd1*(margin) / d1*(GD): " + "; ".join(texts), fontsize=8.5)
        style = [(Line2D([], [], color="k", marker="o", ls="-", ms=4), r"GD converged: $h_K \leq$ tol $h_0$"),
                 (Line2D([], [], color="k", marker="s", ls="--", ms=4, mfc="white"), "Eq. 9 margin > 1 (C = 1)"),
                 (Line2D([], [], color="k", ls=":", lw=1.3), f"d1*(GD): {level:.0%} converged"),
                 (Line2D([], [], color="k", ls="--", lw=0.8), f"d1*(margin): {level:.0%} margin > 1"),
                 (Line2D([], [], color="0.5", lw=0.8), f"level {level:.0%}")]
        _style_legend(ax, style, [lab for lab in labels if lab], cols)
    fixed = _fixed_words(ds, exclude=("d1",))
    fig.suptitle(_wrap(f"{_settings_words(ds)}; {_ntrials(ds)} trials per point" + (f"; {fixed}" if fixed else ""), fig),
                 fontsize=9)
    return _save(fig, path)


def plot_gd_thresholds(thr, path=None):
    """d1*(GD) (circles) and d1*(margin) (squares) against n, log-log, with an n^{3/2} (Eq. 21) guide.

    Hollow markers: censored (at or below the smallest d1, drawn at it); a triangle at the largest d1:
    never reached on the grid. Needs two or more n and a threshold reached somewhere.
    """
    from matplotlib.lines import Line2D  # noqa: PLC0415

    thr = thr.compute()
    if "n" not in thr.dims or thr.sizes["n"] < 2:
        raise NothingToDraw("the study has one value of n: the thresholds against n need two or more")
    fin = np.isfinite(np.asarray(thr["d1_star_gd"].values, float)) | np.isfinite(
        np.asarray(thr["d1_star_margin"].values, float))
    if not fin.any():
        raise NothingToDraw("neither GD nor the margin reached the level at any width of the grid")
    d1_max = float(thr.attrs.get("d1_max", np.nan))
    fin_da = np.isfinite(thr["d1_star_gd"]) | np.isfinite(thr["d1_star_margin"])
    panels = [(a, p) for a, p in _panels(fin_da) if bool(np.asarray(p.values).any())]
    fig, axes = _grid_figure(1, len(panels))
    for ax, (act, _) in zip(axes[0], panels):
        sub = thr.sel(activation=act) if act else thr
        ser = _series(sub["d1_star_gd"], "n")
        cols = _colors(len(ser))
        cen = {k: dict(_series(sub[k], "n")) for k in sub.data_vars}
        ymax_seen = []
        for c, (label, _) in zip(cols, ser):
            for key, marker, ls in (("gd", "o", ":"), ("margin", "s", "--")):
                y = np.asarray(cen[f"d1_star_{key}"][label].values, float)
                cz = np.asarray(cen[f"censored_{key}"][label].values, bool)
                x = cen[f"d1_star_{key}"][label]["n"].values.astype(float)
                ax.plot(x, np.where(np.isfinite(y), y, np.nan), ls=ls, color=c, lw=1)
                ok = np.isfinite(y) & ~cz
                ax.plot(x[ok], y[ok], marker, color=c, ms=6)
                ax.plot(x[np.isfinite(y) & cz], y[np.isfinite(y) & cz], marker, color=c, ms=6, mfc="white")
                if np.isfinite(d1_max):
                    nr = ~np.isfinite(y)
                    ax.plot(x[nr], np.full(nr.sum(), d1_max), "^", color=c, ms=7, mfc="white")
                ymax_seen += list(y[np.isfinite(y)])
        m = np.asarray(sub["d1_star_margin"].values, float)
        nn = np.geomspace(float(sub["n"].min()), float(sub["n"].max()), 20)
        if np.isfinite(m).any():
            mm = np.where(np.isfinite(m), m, np.nan)
            j = np.unravel_index(int(np.nanargmin(mm)), mm.shape)
            n0 = float(np.broadcast_to(sub["n"].values.reshape([-1 if k == "n" else 1 for k in sub["d1_star_margin"].dims]),
                                       mm.shape)[j])
            ax.plot(nn, mm[j] * (nn / n0) ** 1.5, color="k", lw=0.8, alpha=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _grid_ticks(ax, sub["n"].values)
        ax.set_xlabel("$n$")
        _log_y(ax)
        ax.set_ylabel(f"$d_1^*$ (event in {100 * thr.attrs.get('level', 0.95):g}% of trials)")
        ax.set_title(f"{act}: width thresholds, GD vs Eq. 9" if act else "width thresholds", fontsize=9)
        style = [(Line2D([], [], color="k", marker="o", ls=":"), "d1*(GD converged)"),
                 (Line2D([], [], color="k", marker="s", ls="--"), "d1*(margin > 1)"),
                 (Line2D([], [], color="k", marker="o", ls="none", mfc="white"), "at or below the smallest d1"),
                 (Line2D([], [], color="k", marker="^", ls="none", mfc="white"), "not reached: above the largest d1"),
                 (Line2D([], [], color="k", lw=0.8, alpha=0.6), r"$\propto n^{3/2}$ (Eq. 21)")]
        _style_legend(ax, style, [lab for lab, _ in ser], cols)
    left = [str(a) for a, p in _panels(fin_da) if a and not bool(np.asarray(p.values).any())]
    fig.suptitle(f"smallest width with GD converged / with Eq. 9 margin > 1 in {thr.attrs.get('level', 0.95):.0%} of trials"
                 + (f"; not reached at any n (no panel): {', '.join(left)}" if left else ""), fontsize=9)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------
# (b) the rate


def plot_rate_ratio(lrr, path=None, *, predicted=None):
    """log(gd_rate) / log(gd_rate_theory) against d1 (log-log): median and 5-95% band over trials; the
    line at 1 is Eq. 14 exactly (C = 1); above it GD contracts faster than the theorem says.
    ``predicted`` (``train_report.ntk_rate_ratio``): its median, dashed, the slowest mode of GD
    linearized at Theta_K."""
    from matplotlib.lines import Line2D  # noqa: PLC0415

    _need_widths(lrr, "the rate ratio")
    q = TR.quantiles(lrr, (BAND[0], 0.5, BAND[1])).compute()
    pq = TR.quantiles(predicted, (0.5,)).sel(quantile=0.5, drop=True).compute() if predicted is not None else None
    panels = [(a, p) for a, p in _panels(q) if np.isfinite(np.asarray(p.values, float)).any()]
    if not panels:
        raise NothingToDraw("no trial has both gd_rate and gd_rate_theory in (0, 1)")
    fig, axes = _grid_figure(1, len(panels))
    for ax, (act, sub) in zip(axes[0], panels):
        ser = _series(sub, "d1")
        cols = _colors(len(ser))
        pser = dict(_series(pq.sel(activation=act) if act else pq, "d1")) if pq is not None else {}
        for c, (label, s) in zip(cols, ser):
            x = s["d1"].values
            ax.fill_between(x, s.sel(quantile=BAND[0]), s.sel(quantile=BAND[1]), color=c, alpha=0.25, lw=0)
            ax.plot(x, s.sel(quantile=0.5), "o-", ms=4, color=c)
            if label in pser:
                ax.plot(x, np.asarray(pser[label].values, float), ls="--", lw=1.1, color=c)
        ax.axhline(1.0, color="C3", lw=0.9, ls=":")
        ax.axhline(2.0, color="0.4", lw=0.7, ls="-.")
        style = [(Line2D([], [], color="k", marker="o", ms=4), "measured: median, 5-95% band"),
                 (Line2D([], [], color="k", ls="--", lw=1.1), r"linearized GD at $\Theta_K$, slowest mode (median)"),
                 (Line2D([], [], color="0.4", ls="-.", lw=0.7), r"2: $(1 - 2\,\mathrm{lr}\,\mu^2)^2$, loss = residual$^2$"),
                 (Line2D([], [], color="C3", ls=":", lw=0.9), "1: exactly the Eq. 14 rate (C = 1)")]
        if pq is None:
            style.pop(1)
        _style_legend(ax, style, [lab for lab, _ in ser if lab], cols)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _x_ticks(ax, lrr["d1"].values)
        _log_y(ax)
        ax.set_xlabel(r"width $d_1$")
        ax.set_ylabel(r"$\log(\mathrm{gd\_rate}) / \log(1 - 2\,\mathrm{lr}\,\mu^2)$")
        ax.set_title(f"{act}: measured / Eq. 14 contraction per step, in log" if act else "rate ratio", fontsize=9)
    fixed = _fixed_words(lrr, exclude=("d1",))
    fig.suptitle(_wrap(f"how many Eq. 14 steps one GD step is worth; {_settings_words(lrr)}"
                       + (f"; {fixed}" if fixed else ""), fig), fontsize=9)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------
# (c) the ball of Eq. 6 and the bound on V of Eq. 18


def plot_ball(ds, path=None):
    """Top: max_k ||Theta_k - Theta_0|| / rho (Eq. 6; <= 1: GD stayed in the ball); bottom:
    max_k sigma_max(V_k) / chi_max (Eq. 18); against d1, median and 5-95% band, log y."""
    _need_widths(ds, "the distance travelled")
    rows = [("gd_max_dist_over_rho", r"$\max_k\|\Theta_k - \Theta_0\|_F\,/\,\rho$,  $\rho = \mu/(2\beta)$",
             "1: the radius of Eq. 6"),
            ("gd_max_sigma_V_over_chi", r"$\max_k \sigma_{\max}(V_k)\,/\,\chi_{\max}$", r"1: $\chi_{\max}$ of Eq. 18")]
    qs = {k: TR.quantiles(ds[k], (BAND[0], 0.5, BAND[1])).compute() for k, _, _ in rows}
    panels = _panels(qs[rows[0][0]])
    fig, axes = _grid_figure(2, len(panels))
    for j, (act, _) in enumerate(panels):
        for i, (key, ylabel, ref) in enumerate(rows):
            ax = axes[i, j]
            sub = qs[key].sel(activation=act) if act else qs[key]
            ser = _series(sub, "d1")
            for c, (label, s) in zip(_colors(len(ser)), ser):
                x = s["d1"].values
                ax.fill_between(x, s.sel(quantile=BAND[0]), s.sel(quantile=BAND[1]), color=c, alpha=0.25, lw=0)
                ax.plot(x, s.sel(quantile=0.5), "o-", ms=4, color=c, label=(label + ": " if label else "") + "median, 5-95%")
            ax.axhline(1.0, color="C3", lw=0.9, ls="--", label=ref)
            ax.set_xscale("log")
            ax.set_yscale("log")
            _x_ticks(ax, ds["d1"].values)
            _log_y(ax)
            ax.set_xlabel(r"width $d_1$")
            ax.set_ylabel(ylabel)
            what = "distance travelled / Eq. 6 radius" if i == 0 else "growth of V / Eq. 18 bound"
            ax.set_title(f"{act}: {what}" if act else what, fontsize=9)
            ax.legend(fontsize=7, handlelength=4.0)
    fixed = _fixed_words(ds, exclude=("d1",))
    fig.suptitle(_wrap(f"does GD stay near Theta_0?  {_settings_words(ds)}" + (f"; {fixed}" if fixed else ""), fig),
                 fontsize=9)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------
# (d) lazy training


_LAZY_TITLES = {"gd_rel_change_W": "relative change of W", "gd_rel_change_V": "relative change of V",
                "ntk_rel_change": "relative change of the NTK Gram",
                "lazy_ratio": "beta / nu^2 at Theta_0 (App. F, Eq. 82-85)"}


def plot_lazy(ds, path=None, *, groups=None):
    """Lazy-training measures against w2 / w1 at fixed products w1 w2 (App. F): one row per measure
    (relative change of W, of V, of the NTK Gram; beta / nu^2 at Theta_0), one column per activation.
    One colour per product (ordered by product; label: w1 w2 sqrt(d0 d1), Eq. 19's scale); the product
    shared by the most pairs is drawn thick with its 5-95% band; a dotted vertical line marks He's
    ratio sqrt(d0 / d1) (w1 = sqrt(2/d0), w2 = sqrt(2/d1)) when d0 and d1 are fixed. Needs a product
    shared by two or more (w1, w2) pairs."""
    from matplotlib.lines import Line2D  # noqa: PLC0415

    groups = TR.lazy_groups(ds) if groups is None else groups
    if not groups:
        nw1, nw2 = ds.sizes.get("w1", 1), ds.sizes.get("w2", 1)
        raise NothingToDraw(f"no two (w1, w2) pairs of the grid ({nw1} w1 x {nw2} w2) share the product w1 w2: App. F "
                            "compares initializations at fixed w1 w2")
    main = groups[0]
    shown = TR.shown_groups(groups)
    measures = [k for k in TR.LAZY_MEASURES if k in ds]
    subs = [(g, TR.along_product(ds, g)) for g in shown]
    panels = _panels(subs[0][1]["gd_status"])
    fig, axes = _grid_figure(len(measures), len(panels), height=3.3)
    cols = _colors(len(shown))
    other_styles = ["-", "--", ":", "-."]
    he = None
    if all(d in ds.coords and np.asarray(ds[d].values).size == 1 for d in ("d0", "d1")):
        he = math.sqrt(float(np.ravel(ds["d0"].values)[0]) / float(np.ravel(ds["d1"].values)[0]))
    other_labels = []
    for j, (act, _) in enumerate(panels):
        for i, key in enumerate(measures):
            ax = axes[i, j]
            for gi, (g, sub) in enumerate(subs):
                is_main = g is main
                da = sub[key].sel(activation=act) if act else sub[key]
                q = TR.quantiles(da, (BAND[0], 0.5, BAND[1]))
                ser = _series(q, "w2_over_w1")
                other_labels = [lab for lab, _ in ser]
                for si, (label, s) in enumerate(ser):
                    x = s["w2_over_w1"].values
                    ls = other_styles[si % len(other_styles)]
                    if is_main:
                        ax.fill_between(x, s.sel(quantile=BAND[0]), s.sel(quantile=BAND[1]), color=cols[gi],
                                        alpha=0.25, lw=0)
                    ax.plot(x, s.sel(quantile=0.5), marker="o", ms=3.5 if is_main else 2.5, ls=ls,
                            lw=2.0 if is_main else 0.9, color=cols[gi], zorder=3 if is_main else 2)
            if he is not None:
                ax.axvline(he, color="C3", ls=":", lw=1)
            ax.set_xscale("log")
            ax.set_yscale("log")
            _ratio_ticks(ax, main["ratios"])
            _log_y(ax)
            ax.tick_params(axis="x", labelsize=7)
            ax.set_xlabel(r"$w_2 / w_1$")
            ax.set_ylabel(TR.LAZY_MEASURES[key], fontsize=8)
            ax.set_title(f"{act}: {_LAZY_TITLES.get(key, key)}" if act else _LAZY_TITLES.get(key, key), fontsize=9)
    handles, labels = [], []
    for gi, (g, sub) in enumerate(subs):
        e = sub["eq19_scale"] if "eq19_scale" in sub else None
        ev = np.unique(np.round(np.ravel(np.asarray(e.values, float)), 6)) if e is not None else []
        etxt = ", ".join(f"{x:.3g}" for x in ev[:3]) + ("..." if len(ev) > 3 else "")
        thick = g is main
        handles.append(Line2D([], [], color=cols[gi], lw=2.0 if thick else 0.9, marker="o", ms=3))
        labels.append(f"$w_1w_2$ = {g['product']:.3g} ($w_1w_2\\sqrt{{d_0d_1}}$ = {etxt}), {len(g['pairs'])} pairs"
                      + (", band 5-95%" if thick else ""))
    for si, lab in enumerate(other_labels):
        if lab:
            handles.append(Line2D([], [], color="k", ls=other_styles[si % 4]))
            labels.append(lab)
    if he is not None:
        handles.append(Line2D([], [], color="C3", ls=":", lw=1))
        labels.append(f"He: $w_2/w_1 = \\sqrt{{d_0/d_1}}$ = {he:.3g}")
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=2, frameon=False)
    fixed = _fixed_words(ds, exclude=("w1", "w2"))
    fig.suptitle(f"lazy training (App. F): median over trials at fixed $w_1 w_2$\n{_settings_words(ds)}"
                 + (f"; {fixed}" if fixed else ""), fontsize=9)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------
# (e) loss curves

_MAX_PANELS = 12


def plot_loss_curves(ds, path=None, *, tol=None, line_dim="d1"):
    """Median over trials of h_k / h_0 (held at the final value after a trial stopped) against k, one
    colour per value of ``line_dim`` ("d1", or "w2_over_w1" for ``train_report.along_product``),
    5-95% band, with the Eq. 14 envelope (1 - 2 lr mu^2)^k at the median theory rate (dotted) and
    tol (grey). One column per activation, one row per combination of the other varying axes."""
    from matplotlib.lines import Line2D  # noqa: PLC0415

    if "gd_loss" not in ds:
        raise NothingToDraw("the cube has no loss curves (gd_loss)")
    held = TR.held_curves(ds).clip(max=1e6)
    rows_dims = [d for d in ALL_AXES if d in held.dims and held.sizes[d] > 1 and d not in ("activation", line_dim)]
    nrows = int(np.prod([held.sizes[d] for d in rows_dims])) if rows_dims else 1
    acts = [str(a) for a in np.ravel(held["activation"].values)] if "activation" in held.dims else [""]
    if nrows * len(acts) > _MAX_PANELS:
        raise NothingToDraw(f"{nrows} combinations of {', '.join(rows_dims)} x {len(acts)} activations would need "
                            f"{nrows * len(acts)} panels (at most {_MAX_PANELS}); the lazy-training curves are drawn "
                            "along w2/w1 instead")
    some = held.count("trial") > 0
    q = held.where(some, 0.0).quantile([BAND[0], 0.5, BAND[1]], dim="trial").where(some).compute()
    th = ds["gd_rate_theory"]
    th = th.where((th > 0) & (th <= 1))
    th_med = TR.quantiles(th, (0.5,)).sel(quantile=0.5, drop=True).compute()
    combos = list(TR._index_rows(held, rows_dims)) if rows_dims else [{}]
    fig, axes = _grid_figure(len(combos), len(acts), height=3.6)
    k = q["iteration"].values.astype(float)
    for j, act in enumerate(acts):
        for i, lab in enumerate(combos):
            ax = axes[i, j]
            sel = dict(lab, **({"activation": act} if act else {}))
            s0 = A.squeeze_grid(TR._sel(q, sel))
            t0 = A.squeeze_grid(TR._sel(th_med, sel))
            lines = np.ravel(np.asarray(s0[line_dim].values)) if line_dim in s0.dims else [None]
            cols = _colors(len(lines))
            kmax = 1.0
            for c, lv in zip(cols, lines):
                s = s0.sel({line_dim: lv}) if lv is not None else s0
                tr = float(np.ravel((t0.sel({line_dim: lv}) if lv is not None else t0).values)[0])
                med = np.asarray(s.sel(quantile=0.5).values, float)
                lo = np.asarray(s.sel(quantile=BAND[0]).values, float)
                hi = np.asarray(s.sel(quantile=BAND[1]).values, float)
                if tol:  # a held curve sits at its final value <= tol: draw each quantile until it first gets there
                    for arr in (med, lo, hi):
                        hit = np.nonzero(np.isfinite(arr) & (arr <= tol))[0]
                        if hit.size:
                            arr[hit[0] + 1:] = np.nan
                    below = np.nonzero(np.isfinite(hi) & (hi <= tol))[0]
                    kstop = k[below[0]] if below.size else k[-1]
                    lo = np.where(np.isnan(lo) & np.isfinite(hi), tol, lo)
                else:
                    kstop = k[-1]
                ax.fill_between(k, lo, hi, color=c, alpha=0.18, lw=0)
                ax.plot(k, med, color=c, lw=1.4)
                kmax = max(kmax, kstop)
                if np.isfinite(tr):
                    ax.plot(k, np.exp(k * math.log(tr)) if tr > 0 else np.zeros_like(k), color=c, ls=":", lw=1.1)
            if tol:
                ax.axhline(tol, color="0.5", lw=0.8)
            ax.set_yscale("log")
            ax.set_xlim(0, kmax * 1.05)
            ax.set_ylim(min(tol / 10, 1e-2) if tol else None, 2.0)
            ax.set_xlabel("iteration $k$")
            ax.set_ylabel(r"$h(\Theta_k) / h(\Theta_0)$")
            where = ", ".join(f"${_SYM.get(d, d)}$={_v(lab[d])}" for d in rows_dims)
            ax.set_title(", ".join(p for p in (act, where) if p) + ": loss curves (median, 5-95%)", fontsize=9)
            if i == 0 and j == 0:
                sym = {"d1": "$d_1$", "w2_over_w1": "$w_2/w_1$"}.get(line_dim, line_dim)
                style = [(Line2D([], [], color="k", lw=1.4), "GD, median over trials"),
                         (Line2D([], [], color="k", ls=":", lw=1.1), r"Eq. 14: $(1 - 2\,\mathrm{lr}\,\mu^2)^k$, median"),
                         (Line2D([], [], color="0.5", lw=0.8), f"tol = {tol:g}" if tol else "tol")]
                names = ([f"{sym} = {_v(v) if line_dim == 'd1' else f'{v:.3g}'}" for v in lines]
                         if lines[0] is not None else [""])
                _style_legend(ax, style, names, cols)
    fixed = _fixed_words(ds, exclude=(line_dim,))
    extra = ""
    if line_dim == "w2_over_w1" and "product" in ds.attrs:
        extra = f"; at $w_1 w_2$ = {ds.attrs['product']:.3g}"
    fig.suptitle(_wrap(f"{_settings_words(ds)}; each curve ends where it reaches tol, the x-axis where the 95% "
                       "quantile does" + extra + (f"; {fixed}" if fixed else ""), fig), fontsize=9)
    return _save(fig, path)
