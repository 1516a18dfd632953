"""Figures of a result cube (matplotlib, a core dependency; imported lazily).

Rule of this module: each function draws one figure -- one panel per activation that has
something to show, one colour per remaining grid combination (n, d0, ...) -- saves it as PNG when
``path`` is given and returns the ``matplotlib.figure.Figure``; when no panel has anything to
show it raises ``NothingToDraw`` (with the reason) instead of drawing empty axes. Bands are always
the 5-95% quantiles over trials around the median; log axes carry a labelled tick at every grid
value, and no two tick labels of an axis overlap (``_save`` thins them, ``declutter_ticks``); titles
say which t and delta, and the suptitle the grid axes that have one value (n, d0, ...); panels that
would be identical for two Khatri-Rao orders are drawn once, the title naming both; legend line
samples are long enough to tell dashed from dash-dot. No pyplot: figures are
``matplotlib.figure.Figure`` objects, so nothing depends on a display or global state.
"""

from __future__ import annotations

import numpy as np

from . import analysis as A

_SYMBOL = {"n": "n", "d0": "d_0", "d1": "d_1", "d2": "d_2", "w1": "w_1", "w2": "w_2", "t": "t", "data_seed": r"\mathrm{data\_seed}"}
#: Every band in every figure: these quantiles over trials, around the median.
BAND = (0.05, 0.95)


class NothingToDraw(ValueError):
    """The cube has nothing this figure could show (the message says why)."""


def _need_axis(obj, dim="d1"):
    """Figures against ``dim`` need two or more of its values."""
    if dim not in obj.dims or obj.sizes[dim] < 2:
        raise NothingToDraw(f"the cube has a single value of {dim} (a figure against {dim} needs two or more)")


def _figure(ncols, width=4.8, height=4.4):
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _grid_ticks(ax, values, axis="x"):
    """A labelled tick at every grid value of a log axis (no minor labels, which overlap)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator  # noqa: PLC0415

    vals = sorted({float(v) for v in np.ravel(values) if np.isfinite(v) and v > 0})
    if not vals:
        return
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(FixedLocator(vals))
    a.set_ticklabels([f"{v:g}" for v in vals])
    a.set_minor_locator(NullLocator())
    a.set_minor_formatter(NullFormatter())


#: Legend line samples, in font sizes: long enough to tell "--" from "-." and ":".
HANDLELENGTH = 4.0


def _overlaps(labels, renderer) -> bool:
    boxes = [t.get_window_extent(renderer) for t in labels]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def visible_ticklabels(axis):
    """The tick labels of a matplotlib ``Axis`` that are drawn: visible, with text, inside the view."""
    lo, hi = sorted(axis.get_view_interval())
    out = []
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        lab = tick.label1
        if lab.get_visible() and lab.get_text() and tick.get_visible() and lo * (1 - 1e-9) <= tick.get_loc() <= hi * (1 + 1e-9):
            out.append(lab)
    return out


def declutter_ticks(fig, max_rounds: int = 6):
    """Hide tick labels until no two labels of an axis overlap (every other one first, keeping the
    first and last; then every third...); the tick marks stay. Draws the figure (on an Agg canvas)."""
    if not hasattr(fig.canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415

        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for _ in range(max_rounds):
        changed = False
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                labels = visible_ticklabels(axis)
                if len(labels) < 2 or not _overlaps(labels, renderer):
                    continue
                for k in range(2, len(labels) + 1):  # keep every k-th label (and the last one when it fits)
                    keep = set(range(0, len(labels), k))
                    for i, lab in enumerate(labels):
                        lab.set_visible(i in keep)
                    if not _overlaps([lab for i, lab in enumerate(labels) if i in keep], renderer):
                        break
                changed = True
        if not changed:
            return fig
        fig.canvas.draw()
    return fig


def _save(fig, path):
    declutter_ticks(fig)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def fixed_words(ds, exclude=()) -> str:
    """``"n = 16, d0 = 32, d1 = 512"``: the grid axes with one value (data and d2 only when not the default)."""
    parts = []
    for d in A.ALL_AXES:
        if d in exclude or d == "activation" or d not in ds.coords:
            continue
        vals = np.ravel(np.asarray(ds[d].values))
        if vals.size != 1:
            continue
        v = vals[0]
        if (d == "data" and str(v) == "sphere") or (d == "d2" and int(v) == 1):
            continue
        parts.append(f"{d} = {v:.4g}" if isinstance(v, (float, np.floating)) else f"{d} = {v}")
    return ", ".join(parts)


def _suptitle(fig, text, ds=None, exclude=()):
    """The figure's title: ``text`` and the grid axes with one value, wrapped to the figure's width."""
    import textwrap  # noqa: PLC0415

    fixed = fixed_words(ds, exclude) if ds is not None else ""
    full = "; ".join(p for p in (text, fixed) if p)
    if full:
        fig.suptitle("\n".join(textwrap.wrap(full, max(50, int(fig.get_figwidth() * 13)))), fontsize=9)


def _panels(obj):
    """(activation, sub-object) per activation."""
    if "activation" in obj.dims:
        return [(str(a), obj.sel(activation=a)) for a in obj["activation"].values]
    return [("", obj)]


def _computed_panels(obj):
    """``_panels`` less the activations with no computed value (a partial cube's grid points not
    computed yet read as NaN); ``NothingToDraw`` when no grid point is computed."""
    panels = [(a, p) for a, p in _panels(obj) if np.isfinite(np.asarray(p.values, float)).any()]
    if not panels:
        raise NothingToDraw("no grid point it shows is computed yet (a partial cube)")
    return panels


def _label(s, dims) -> str:
    parts = []
    for d in dims:
        if d == A.CASE_DIM:  # a linked case: label it with its linked axes (coordinates along case)
            parts += [f"${_SYMBOL.get(c, c)}$={np.asarray(s[c].values).item():g}" for c in ("n", "d0")
                      if c in s.coords and c not in dims and np.ndim(s[c].values) == 0]
            continue
        v = np.asarray(s[d].values).item()
        parts.append(f"${_SYMBOL.get(d, d)}$={v:g}" if isinstance(v, (int, float, np.number)) else f"{d}={v}")
    return ", ".join(parts)


def _series(obj, x):
    """(label, 1-D slice along x) for every combination of the other non-singleton dims."""
    obj = A.squeeze_grid(obj)
    other = [d for d in obj.dims if d not in (x, "trial", "quantile") and obj.sizes[d] > 1]
    if not other:
        return [("", obj)]
    stacked = obj.stack(_combo=other)
    out = []
    for i in range(stacked.sizes["_combo"]):
        s = stacked.isel(_combo=i)
        out.append((_label(s, other), s.drop_vars(["_combo"] + other, errors="ignore")))
    return out


def _colors(k):
    from matplotlib import colormaps  # noqa: PLC0415

    cmap = colormaps["viridis"]
    return [cmap(v) for v in np.linspace(0.0, 0.85, max(k, 1))]


def _q(da, q=(BAND[0], 0.5, BAND[1])):
    return A._single_chunk(da, ["trial"]).quantile(list(q), dim="trial").compute()


def _style_legend(ax, handles_labels, series_labels, colors):
    """One legend below the whole figure: a colour per series, then the line styles (drawn once)."""
    from matplotlib.lines import Line2D  # noqa: PLC0415

    fig = ax.figure
    if getattr(fig, "_rmt_legend", False):
        return
    handles = [Line2D([], [], color=c, lw=6, alpha=0.6) for c in colors if series_labels]
    labels = [lab for lab in series_labels if lab]
    h = handles[:len(labels)] + [hl[0] for hl in handles_labels]
    lab = labels + [hl[1] for hl in handles_labels]
    # as many columns as the longest entry lets fit across the figure (about 15 characters per inch at
    # fontsize 8, plus the handle): long entries never run off the figure's edge
    longest = max((len(str(x)) for x in lab), default=1) + HANDLELENGTH + 3
    ncols = max(1, min(len(lab), 4, int(fig.get_figwidth() * 15 // longest)))
    fig.legend(h, lab, fontsize=8, loc="outside lower center", ncols=ncols, frameon=False,
               handlelength=HANDLELENGTH)
    fig._rmt_legend = True


def _same(a, b) -> bool:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def _t_groups(curves):
    """``[(labels, curve)]``: the curves (``[(label, array)]``) grouped where they are identical."""
    groups = []
    for lab, c in curves:
        for g in groups:
            if _same(g[1], c):
                g[0].append(lab)
                break
        else:
            groups.append(([lab], c))
    return groups


#: Line styles of the single-t lower bounds of one panel (the first t, a second distinct t).
_LOWER_STYLES = ["--", (0, (7, 2, 1, 2, 1, 2))]


def plot_bounds_vs_width(ds, path=None, *, t=None, ts=None, delta=0.2):
    """sigma_min / sigma_max of phi(W0 X) against d1 (log-log) between the Eq. 67 bounds.

    Measured: median (markers) and 5-95% band over trials. Bounds at ``delta``: the sharp
    single-t lower bound ``sqrt((1-delta) eq58_lower_sharp)`` (dashed; absent where undefined) at
    each order of ``ts`` (default: ``t``) -- orders whose bound is the same in a panel are one line,
    the title naming them all, orders undefined in a panel are named there --, the all-orders lower
    bound ``sqrt((1-delta) eq58_lower_hadamard)`` (dash-dot) and the sharp upper bound
    ``sqrt((1+delta) eq58_upper_sharp)`` (dotted).
    """
    _need_axis(ds)
    from matplotlib.lines import Line2D  # noqa: PLC0415

    ts = list(ts) if ts is not None else [A.default_t(ds) if t is None else t]
    base = A.at_t(ds, ts[0]) if ts[0] is not None else ds
    smin, smax = _q(base["sigma_min_F"]), _q(base["sigma_max_F"])
    lows = []
    for tt in ts:
        v = A.at_t(ds, tt) if tt is not None else ds
        lows.append((tt, np.sqrt((1 - delta) * v["eq58_lower_sharp"]).where(A.lower_defined(v)).compute()))
    had = np.sqrt((1 - delta) * base["eq58_lower_hadamard"]).compute()
    hi = np.sqrt((1 + delta) * base["eq58_upper_sharp"]).compute()
    panels = _computed_panels(smin)
    fig, axes = _figure(len(panels))
    second = False
    for ax, (act, _) in zip(axes, panels):
        pick = (lambda v: v.sel(activation=act)) if act else (lambda v: v)
        sub = ds.sel(activation=[act]) if act else ds
        ser = _series(pick(smin), "d1")
        cols = _colors(len(ser))
        smax_s, had_s, hi_s = (dict(_series(pick(v), "d1")) for v in (smax, had, hi))
        curves = [(A.t_label(sub, tt) if tt is not None else "t", pick(lo)) for tt, lo in lows]
        groups = _t_groups([(lab, np.asarray(c.values, float)) for lab, c in curves])
        defined = [g for g in groups if np.isfinite(g[1]).any()]
        undefined = [lab for g in groups if not np.isfinite(g[1]).any() for lab in g[0]]
        for c, (label, s) in zip(cols, ser):
            x = s["d1"].values
            for cur, marker in ((s, "o"), (smax_s[label], "s")):
                ax.fill_between(x, cur.sel(quantile=BAND[0]), cur.sel(quantile=BAND[1]), color=c, alpha=0.25, lw=0)
                ax.plot(x, cur.sel(quantile=0.5), marker=marker, color=c, ms=4, lw=1)
            for k, (labs, _) in enumerate(defined[:2]):
                lo_s = dict(_series(dict(curves)[labs[0]], "d1"))
                ax.plot(x, np.asarray(lo_s[label].values, dtype=float), ls=_LOWER_STYLES[k], color=c, lw=1.2)
                second |= k == 1
            ax.plot(x, np.asarray(had_s[label].values, dtype=float), ls="-.", color=c, lw=1)
            ax.plot(x, np.asarray(hi_s[label].values, dtype=float), ls=":", color=c, lw=1.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _grid_ticks(ax, smin["d1"].values)
        ax.set_xlabel(r"width $d_1$")
        ax.set_ylabel(r"singular value of $\phi(W_0X)$")
        words = ["single-t lower at " + " = ".join(labs) for labs, _ in defined[:2]]
        if undefined:
            words.append("undefined at " + ", ".join(undefined))
        ax.set_title(f"{act + ': ' if act else ''}Eq. 67 bounds, $\\delta$ = {delta:g}\n" + "; ".join(words), fontsize=8)
        k = "k"
        style = [(Line2D([], [], color=k, marker="o", lw=1, ms=4), r"$\sigma_{\min}$ measured: median, 5-95% band"),
                 (Line2D([], [], color=k, marker="s", lw=1, ms=4), r"$\sigma_{\max}$ measured: median, 5-95% band"),
                 (Line2D([], [], color=k, ls="--"), "Eq. 67 lower, sharp (single t: the first named in the title)"),
                 (Line2D([], [], color=k, ls="-."), "Eq. 67 lower, all Hermite orders"),
                 (Line2D([], [], color=k, ls=":"), "Eq. 67 upper, sharp")]
        if len(ts) > 1 and ax is axes[-1] and second:
            style.insert(3, (Line2D([], [], color=k, ls=_LOWER_STYLES[1]), "Eq. 67 lower, sharp (the second t named)"))
        if ax is axes[-1]:
            _style_legend(ax, style, [lab for lab, _ in ser], cols)
    _suptitle(fig, "", ds, exclude=("d1",))
    return _save(fig, path)


def plot_delta_distributions(ds, path=None, *, delta=0.2):
    """Empirical delta1 and delta2 of Eq. 67 against d1: median and 5-95% band per series, with a
    reference line at the report's ``delta`` (above it: a ``conc_lower``/``conc_upper`` violation)."""
    _need_axis(ds)
    d = {k: _q(ds[k]) for k in ("delta1", "delta2")}
    panels = _computed_panels(d["delta1"])
    fig, axes = _figure(len(panels))
    from matplotlib.lines import Line2D  # noqa: PLC0415

    for ax, (act, _) in zip(axes, panels):
        labels, cols = [], []
        for key, ls in (("delta1", "-"), ("delta2", ":")):
            da = d[key].sel(activation=act) if act else d[key]
            ser = _series(da, "d1")
            cols = _colors(len(ser))
            labels = [lab for lab, _ in ser]
            for c, (label, s) in zip(cols, ser):
                x = s["d1"].values
                ax.fill_between(x, s.sel(quantile=BAND[0]), s.sel(quantile=BAND[1]), color=c, alpha=0.2, lw=0)
                ax.plot(x, s.sel(quantile=0.5), ls=ls, marker="o", ms=3, color=c)
        ax.axhline(0, color="k", lw=0.5)
        ax.axhline(delta, color="C3", lw=0.9, ls="--")
        ax.set_xscale("log")
        _grid_ticks(ax, d["delta1"]["d1"].values)
        ax.set_xlabel(r"width $d_1$")
        ax.set_ylabel("empirical deviation")
        ax.set_title(f"{act}: Eq. 67 deviations (median, 5-95% band)" if act else "Eq. 67 deviations", fontsize=9)
        style = [(Line2D([], [], color="k", ls="-", marker="o", ms=3),
                  r"$\delta_1 = 1 - \lambda_{\min}(M_0)/\lambda_{\min}(E M_0)$"),
                 (Line2D([], [], color="k", ls=":", marker="o", ms=3),
                  r"$\delta_2 = \lambda_{\max}(M_0)/\lambda_{\max}(E M_0) - 1$"),
                 (Line2D([], [], color="C3", ls="--", lw=0.9), f"$\\delta$ = {delta:g}: above it, a violation")]
        _style_legend(ax, style, labels, cols)
    _suptitle(fig, "", ds, exclude=("d1",))
    return _save(fig, path)


def plot_violation_rates(rates, path=None, *, title="violation rate", why_undefined=None):
    """A ``violation_rate``/``holding_rate`` Dataset against d1 with its confidence bars.

    ``rates`` may also be ``[(t_label, Dataset)]`` (one event at several Khatri-Rao orders): in each
    panel the orders with identical rates are one series named by all of them. Panels whose bound is
    undefined everywhere (no trial counted) are left out and the title says which and why
    (``why_undefined``: ``{(activation, t_label): reason}``); if every panel is, ``NothingToDraw``.
    """
    multi = isinstance(rates, list)
    parts = [(lab, r.compute()) for lab, r in rates] if multi else [("", rates.compute())]
    _need_axis(parts[0][1])
    why_undefined = why_undefined or {}
    acts = [a for a, _ in _panels(parts[0][1]["rate"])]
    panels, left = [], []
    for act in acts:
        groups = []  # (t labels, Dataset) with identical rates
        for lab, r in parts:
            sub = r.sel(activation=act) if act else r
            if not np.isfinite(np.asarray(sub["rate"].values, float)).any():
                continue
            for g in groups:
                if all(_same(g[1][k].values, sub[k].values) for k in ("rate", "lo", "hi")):
                    g[0].append(lab)
                    break
            else:
                groups.append(([lab], sub))
        undefined = [lab for lab, r in parts if lab and not np.isfinite(np.asarray(
            (r["rate"].sel(activation=act) if act else r["rate"]).values, float)).any()]
        if groups:
            panels.append((act, groups, undefined))
        else:
            left.append(act)
    if not panels:
        raise NothingToDraw("the bound is undefined at every grid point (no trial counted)")
    fig, axes = _figure(len(panels))
    markers = ["o", "s", "^"]
    for ax, (act, groups, undefined) in zip(axes, panels):
        for gi, (labs, sub) in enumerate(groups):
            ser = _series(sub, "d1")
            for i, (c, (label, s)) in enumerate(zip(_colors(len(ser)), ser)):
                x = s["d1"].values * (1 + 0.04 * (i + len(ser) * gi))  # small offset so bars do not overlap
                r = s["rate"].values
                err = np.clip(np.vstack([r - s["lo"].values, s["hi"].values - r]), 0.0, None)  # rounding
                name = ", ".join(p for p in (label, " = ".join(lab for lab in labs if lab)) if p)
                ax.errorbar(x, r, yerr=np.nan_to_num(err), marker=markers[gi % 3], ms=4, capsize=3, color=c,
                            ls="-" if gi == 0 else "--", label=name or "violation rate")
        ax.set_xscale("log")
        _grid_ticks(ax, parts[0][1]["d1"].values)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(r"width $d_1$")
        r0 = parts[0][1]
        ax.set_ylabel(f"fraction of trials ({int(100 * r0.attrs.get('confidence', 0.95))}% "
                      f"{r0.attrs.get('method', '')} interval)")
        note = "; ".join(f"{lab}: undefined ({why_undefined.get((act, lab), 'no trial counted')})" for lab in undefined)
        import textwrap  # noqa: PLC0415

        ax.set_title("\n".join(textwrap.wrap(f"{act}" + (f" -- {note}" if note else ""), 60)), fontsize=8)
        ax.legend(fontsize=7, handlelength=HANDLELENGTH)
    if left:
        reasons = "; ".join(f"{a}: " + ", ".join(f"{lab} {why_undefined[(a, lab)]}" for lab, _ in parts
                                                 if (a, lab) in why_undefined) for a in left)
        title += f". No panel for {', '.join(left)}: the bound is undefined at every grid point" + (
            f" ({reasons})" if reasons.strip(": ") else "")
    _suptitle(fig, title, r0, exclude=("d1",))
    return _save(fig, path)


def plot_threshold_fit(thr, fit=None, path=None):
    """d1* against n (log-log) with the fitted line and the 3/2 (Eq. 21) and 5/3 (App. E) slopes.

    Only activations with a threshold at two or more n are drawn; ``NothingToDraw`` otherwise.
    """
    thr = thr.compute()
    fit = (fit if fit is not None else A.fit_threshold_exponent(thr)).compute()
    panels = [(a, d) for a, d in _panels(thr["d1_star"]) if np.isfinite(np.asarray(d.values, float)).sum() >= 2]
    if not panels:
        raise NothingToDraw("the threshold is reached at fewer than two values of n for every activation")
    fig, axes = _figure(len(panels))
    for ax, (act, d) in zip(axes, panels):
        f = fit.sel(activation=act) if "activation" in fit.dims else fit
        ser = _series(d, "n")
        for c, (label, s) in zip(_colors(len(ser)), ser):
            ax.plot(s["n"].values.astype(float), s.values.astype(float), "o", color=c,
                    label=f"$d_1^*$ {label}".strip())
        fs = A.squeeze_grid(f)
        nn = np.geomspace(float(d["n"].min()), float(d["n"].max()), 20)
        for bi, ai, si in zip(*(np.ravel(fs[k].values) for k in ("exponent", "prefactor", "stderr"))):
            if np.isfinite(bi):
                ax.plot(nn, ai * nn ** bi, "-", color="C3", label=f"fit: $b$={bi:.2f}$\\pm${si:.2f}")
        ok = np.isfinite(d.values)
        n0 = float(np.broadcast_to(d["n"].values.reshape([-1 if k == "n" else 1 for k in d.dims]), d.shape)[ok].min())
        y0 = float(np.nanmin(np.where(ok, d.values, np.nan)))
        ax.plot(nn, y0 * (nn / n0) ** 1.5, "--", color="k", lw=1, label=r"$n^{3/2}$ (Eq. 21)")
        ax.plot(nn, y0 * (nn / n0) ** (5 / 3), ":", color="k", lw=1, label=r"$n^{5/3}$ (App. E)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _grid_ticks(ax, d["n"].values)
        ax.set_xlabel("$n$")
        ax.set_ylabel(r"$d_1^*$: " + str(thr.attrs.get("event", "margin > 1")).replace("_", " ")
                      + f" in {100 * thr.attrs.get('level', 0.95):g}% of trials")
        ax.set_title(f"{act}: width threshold" if act else "width threshold", fontsize=9)
        ax.legend(fontsize=7, handlelength=HANDLELENGTH)
    return _save(fig, path)


def plot_c0_spike(ds, path=None):
    """lambda_max(M0) / (d1 c_0(w1)^2 n) against d1 (median, 5-95%): tends to 1 when c_0 != 0.

    Activations with ``c_0(w1) = 0`` (tanh, erf: no spike) get no panel; ``NothingToDraw`` if none is left.
    """
    _need_axis(ds)
    sp = A.c0_spike(ds, quantiles=(BAND[0], 0.5, BAND[1])).compute()["spike_ratio_q"]
    panels = [(a, s) for a, s in _panels(sp) if np.isfinite(np.asarray(s.values, float)).any()]
    if not panels:
        raise NothingToDraw("c_0(w1) = 0 for every activation of the cube: there is no spike")
    fig, axes = _figure(len(panels))
    for ax, (act, s0) in zip(axes, panels):
        ser = _series(s0, "d1")
        for c, (label, s) in zip(_colors(len(ser)), ser):
            x = s["d1"].values
            ax.fill_between(x, s.sel(quantile=BAND[0]), s.sel(quantile=BAND[1]), color=c, alpha=0.25, lw=0)
            ax.plot(x, s.sel(quantile=0.5), "o-", ms=4, color=c, label=(label or "median") + ", 5-95% band")
        ax.axhline(1, color="k", lw=0.8, ls="--", label="1 (spike = $d_1 c_0^2 n$)")
        ax.set_xscale("log")
        _grid_ticks(ax, sp["d1"].values)
        ax.set_xlabel(r"width $d_1$")
        ax.set_ylabel(r"$\lambda_{\max}(M_0)\,/\,(d_1 c_0(w_1)^2 n)$")
        ax.set_title(f"{act}: $c_0$ spike (Eq. 56)" if act else "$c_0$ spike (Eq. 56)", fontsize=9)
        ax.legend(fontsize=7, handlelength=HANDLELENGTH)
    left = [a for a, s in _panels(sp) if a and not np.isfinite(np.asarray(s.values, float)).any()]
    _suptitle(fig, f"no panel for {', '.join(left)}: c_0(w1) = 0, no spike" if left else "", ds, exclude=("d1",))
    return _save(fig, path)


def plot_lower_bound_tightness(ds, path=None, *, delta=0.2):
    """How loose each lower bound is: median sigma_min(phi(W0 X)) / bound against d1.

    One line style per bound: the single-t sharp bound at each t of the cube (t_auto included)
    and the all-orders bound. Ratios >= 1 mean the bound held; NaN where it is undefined.
    """
    _need_axis(ds)
    ts = A.available_t(ds)
    entries = []
    for t in ts:
        v = A.at_t(ds, t)
        b = np.sqrt((1 - delta) * v["eq58_lower_sharp"]).where(A.lower_defined(v) & (v["eq58_lower_sharp"] > 0))
        entries.append((f"single t: {A.t_label(ds, t)}", (v["sigma_min_F"] / b)))
    b = np.sqrt((1 - delta) * ds["eq58_lower_hadamard"]).where(ds["eq58_lower_hadamard"] > 0)
    entries.append(("all Hermite orders", ds["sigma_min_F"] / b))
    meds = [(lab, _q(r, (0.5,)).sel(quantile=0.5, drop=True)) for lab, r in entries]
    meds = [(lab, m) for lab, m in meds if np.isfinite(np.asarray(m.values, float)).any()]
    merged = []
    for lab, m in meds:  # two orders with the same bound everywhere (t = 3 = t_auto): one line
        for i, (l2, m2) in enumerate(merged):
            if _same(m2.values, m.values):
                merged[i] = (f"{l2} = {lab.replace('single t: ', '')}", m2)
                break
        else:
            merged.append((lab, m))
    meds = merged
    if not meds:
        raise NothingToDraw("no lower bound is defined at any grid point")
    panels = _panels(meds[0][1])
    fig, axes = _figure(len(panels))
    styles = ["--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1))]
    from matplotlib.lines import Line2D  # noqa: PLC0415

    for ax, (act, _) in zip(axes, panels):
        style = []
        cols, labels = [], []
        drawn, same = [], []
        for k, (lab, m) in enumerate(meds):
            ls = "-" if lab.startswith("all") else styles[k % len(styles)]
            mm = m.sel(activation=act) if act else m
            style.append((Line2D([], [], color="k", ls=ls, marker="o", ms=3), lab))
            twin = [l2 for l2, m2 in drawn if _same(m2.values, mm.values)]
            if twin:  # the same bound as a line already drawn (t = 3 = t_auto here): drawn once
                same.append(f"{lab.replace('single t: ', '')} = {twin[0].replace('single t: ', '')}")
                continue
            drawn.append((lab, mm))
            ser = _series(mm, "d1")
            cols, labels = _colors(len(ser)), [s for s, _ in ser]
            for c, (_, s) in zip(cols, ser):
                ax.plot(s["d1"].values, s.values, ls=ls, marker="o", ms=3, color=c)
        ax.axhline(1, color="C3", lw=0.8)
        ax.text(0.99, 0.01, "below the red line: the bound failed (median trial)", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7, color="C3")
        ax.set_xscale("log")
        _grid_ticks(ax, ds["d1"].values)
        ax.set_xlabel(r"width $d_1$")
        ax.set_ylabel(r"median $\sigma_{\min}(\phi(W_0X))$ / Eq. 67 lower bound")
        ax.set_title((f"{act}: slack of the lower bounds, $\\delta$ = {delta:g}" if act else "slack")
                     + (f"\n(one line: {'; '.join(same)})" if same else ""), fontsize=9)
        _style_legend(ax, style, labels, cols)
    _suptitle(fig, "", ds, exclude=("d1",))
    return _save(fig, path)
