"""Figures of a result cube (matplotlib, the optional extra ``plot``; imported lazily).

Each function takes the cube (or an ``analysis`` result), draws one figure with one panel per
activation, one line per remaining grid combination (n, d0, ...), saves it as PNG when ``path``
is given and returns the ``matplotlib.figure.Figure``. No pyplot: figures are built with
``matplotlib.figure.Figure`` so nothing depends on a display or global state.
"""

from __future__ import annotations

import numpy as np

from . import analysis as A

_SYMBOL = {"n": "n", "d0": "d_0", "d1": "d_1", "d2": "d_2", "w1": "w_1", "w2": "w_2", "t": "t"}


def _figure(ncols, width=4.6, height=3.6):
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig, path):
    from matplotlib.ticker import NullFormatter  # noqa: PLC0415

    for ax in fig.axes:  # minor-tick labels of short log axes overlap ("3x10^1 4x10^1"): drop them
        if ax.get_xscale() == "log":
            ax.xaxis.set_minor_formatter(NullFormatter())
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _panels(obj):
    """(title, sub-object) per activation."""
    if "activation" in obj.dims:
        return [(str(a), obj.sel(activation=a)) for a in obj["activation"].values]
    return [("", obj)]


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
        label = ", ".join(f"${_SYMBOL.get(d, d)}$={s[d].values.item():g}"
                          if np.issubdtype(np.asarray(s[d].values).dtype, np.number)
                          else f"{d}={s[d].values.item()}" for d in other)
        out.append((label, s.drop_vars(["_combo"] + other, errors="ignore")))
    return out


def _colors(k):
    from matplotlib import colormaps  # noqa: PLC0415

    cmap = colormaps["viridis"]
    return [cmap(v) for v in np.linspace(0.0, 0.85, max(k, 1))]


def plot_bounds_vs_width(ds, path=None, *, t=None, band=(0.05, 0.95)):
    """sigma_min / sigma_max of phi(W0 X) against d1 (log-log): median with a quantile band,
    and the sharp Eq. 67 bounds as dashed lines (same colour)."""
    ds = A._select_t(ds, t if t is not None else (int(ds["t"].values[0]) if "t" in ds.dims else None))
    if "t" in ds.dims:
        ds = ds.isel(t=0)
    q = (band[0], 0.5, band[1])
    fields = {
        "smin": A._single_chunk(ds["sigma_min_F"], ["trial"]).quantile(q, dim="trial").compute(),
        "smax": A._single_chunk(ds["sigma_max_F"], ["trial"]).quantile(q, dim="trial").compute(),
        "lo": ds["eq67_lower_sharp"].compute(), "hi": ds["eq67_upper_sharp"].compute(),
    }
    panels = _panels(fields["smin"])
    fig, axes = _figure(len(panels))
    for ax, (act, _) in zip(axes, panels):
        sel = {k: (v.sel(activation=act) if "activation" in v.dims else v) for k, v in fields.items()}
        ser = _series(sel["smin"], "d1")
        cols = _colors(len(ser))
        ser_max = dict(_series(sel["smax"], "d1"))
        lo_s, hi_s = dict(_series(sel["lo"], "d1")), dict(_series(sel["hi"], "d1"))
        for c, (label, s) in zip(cols, ser):
            x = s["d1"].values
            for key, marker, bnd in (("smin", "o", lo_s.get(label)), ("smax", "s", hi_s.get(label))):
                cur = s if key == "smin" else ser_max[label]
                ax.fill_between(x, cur.sel(quantile=q[0]), cur.sel(quantile=q[2]), color=c, alpha=0.2, lw=0)
                ax.plot(x, cur.sel(quantile=0.5), marker=marker, color=c, ms=4,
                        label=(label or "empirical") if key == "smin" else None)
                if bnd is not None:
                    y = np.asarray(bnd.values, dtype=float)
                    y = np.where(y > 0, y, np.nan)
                    ax.plot(x, y, ls="--", color=c)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"width $d_1$")
        ax.set_ylabel(r"$\sigma_{\min}(\phi(W_0X))$ (o), $\sigma_{\max}$ (s)")
        ax.set_title(f"{act}: Eq. 67 bounds (dashed)" if act else "Eq. 67 bounds (dashed)", fontsize=10)
        ax.legend(fontsize=7, title=f"median, {int(band[0]*100)}-{int(band[1]*100)}% band", title_fontsize=7)
    return _save(fig, path)


def plot_delta_distributions(ds, path=None):
    """Empirical delta1 and delta2 of Eq. 67 against d1: median and 1-99% band per series."""
    q = (0.01, 0.5, 0.99)
    d = {k: A._single_chunk(ds[k], ["trial"]).quantile(q, dim="trial").compute() for k in ("delta1", "delta2")}
    panels = _panels(d["delta1"])
    fig, axes = _figure(len(panels))
    for ax, (act, _) in zip(axes, panels):
        for key, ls, sym in (("delta1", "-", r"$\delta_1$"), ("delta2", ":", r"$\delta_2$")):
            da = d[key].sel(activation=act) if "activation" in d[key].dims else d[key]
            ser = _series(da, "d1")
            for c, (label, s) in zip(_colors(len(ser)), ser):
                x = s["d1"].values
                ax.fill_between(x, s.sel(quantile=q[0]), s.sel(quantile=q[2]), color=c, alpha=0.15, lw=0)
                ax.plot(x, s.sel(quantile=0.5), ls=ls, marker="o", ms=3, color=c,
                        label=f"{sym} {label}".strip())
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xscale("log")
        ax.set_xlabel(r"width $d_1$")
        ax.set_ylabel(r"empirical $\delta_1$ (solid), $\delta_2$ (dotted)")
        ax.set_title(f"{act}: Eq. 67 deviations (median, 1-99%)" if act else "Eq. 67 deviations", fontsize=10)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_violation_rates(rates, path=None, *, title="violation rate"):
    """A ``violation_rate``/``holding_rate`` Dataset against d1 with its confidence bars."""
    rates = rates.compute()
    panels = _panels(rates["rate"])
    fig, axes = _figure(len(panels))
    for ax, (act, _) in zip(axes, panels):
        sub = rates.sel(activation=act) if "activation" in rates.dims else rates
        ser = _series(sub, "d1")
        for i, (c, (label, s)) in enumerate(zip(_colors(len(ser)), ser)):
            x = s["d1"].values * (1 + 0.03 * i)  # small offset so bars do not overlap
            r = s["rate"].values
            err = np.vstack([r - s["lo"].values, s["hi"].values - r])
            ax.errorbar(x, r, yerr=np.nan_to_num(err), marker="o", ms=4, capsize=3, color=c, label=label or None)
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(r"width $d_1$")
        ax.set_ylabel(f"rate ({int(100 * rates.attrs.get('confidence', 0.95))}% {rates.attrs.get('method', '')} CI)")
        ax.set_title(f"{act}: {title}" if act else title, fontsize=10)
        if len(ser) > 1 or ser[0][0]:
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_threshold_fit(thr, fit=None, path=None):
    """d1* against n (log-log) with the fitted line and the 3/2 (Eq. 21) and 5/3 (App. E) slopes."""
    thr = thr.compute()
    fit = (fit if fit is not None else A.fit_threshold_exponent(thr)).compute()
    panels = _panels(thr["d1_star"])
    fig, axes = _figure(len(panels))
    for ax, (act, d) in zip(axes, panels):
        f = fit.sel(activation=act) if "activation" in fit.dims else fit
        ser = _series(d, "n")
        for c, (label, s) in zip(_colors(len(ser)), ser):
            n = s["n"].values.astype(float)
            y = s.values.astype(float)
            ax.plot(n, y, "o", color=c, label=f"$d_1^*$ {label}".strip())
        fs = A.squeeze_grid(f)
        b, a = np.ravel(fs["exponent"].values), np.ravel(fs["prefactor"].values)
        se = np.ravel(fs["stderr"].values)
        nn = np.geomspace(float(d["n"].min()), float(d["n"].max()), 20)
        for bi, ai, si in zip(b, a, se):
            if np.isfinite(bi):
                ax.plot(nn, ai * nn ** bi, "-", color="C3", label=f"fit: $b$={bi:.2f}$\\pm${si:.2f}")
        ok = np.isfinite(d.values)
        if ok.any():
            n0 = float(np.asarray(np.broadcast_to(d["n"].values.reshape([-1 if k == "n" else 1 for k in d.dims]),
                                                  d.shape))[ok].min())
            y0 = float(np.nanmin(np.where(ok, d.values, np.nan)))
            ax.plot(nn, y0 * (nn / n0) ** 1.5, "--", color="k", lw=1, label=r"$n^{3/2}$ (Eq. 21)")
            ax.plot(nn, y0 * (nn / n0) ** (5 / 3), ":", color="k", lw=1, label=r"$n^{5/3}$ (App. E)")
        else:
            ax.text(0.5, 0.5, f"threshold not reached\n(level {thr.attrs.get('level', 0.95):g})",
                    transform=ax.transAxes, ha="center", va="center")
            ax.set_xticks([])
            ax.set_yticks([])
        if ok.any():
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("$n$")
        ax.set_ylabel(r"$d_1^*$: " + str(thr.attrs.get("event", "margin > 1")).replace("_", " ")
                      + f" in {100 * thr.attrs.get('level', 0.95):g}% of trials")
        ax.set_title(f"{act}: width threshold" if act else "width threshold", fontsize=10)
        if ok.any():
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_c0_spike(ds, path=None):
    """lambda_max(M0) / (d1 c_0(w1)^2 n) against d1 (median, 5-95%): tends to 1 when c_0 != 0."""
    sp = A.c0_spike(ds).compute()["spike_ratio_q"]
    panels = _panels(sp)
    fig, axes = _figure(len(panels))
    for ax, (act, s0) in zip(axes, panels):
        ser = _series(s0, "d1")
        drew = False
        for c, (label, s) in zip(_colors(len(ser)), ser):
            if not np.isfinite(s.values).any():
                continue
            drew = True
            x = s["d1"].values
            qs = s["quantile"].values
            ax.fill_between(x, s.sel(quantile=qs[0]), s.sel(quantile=qs[-1]), color=c, alpha=0.2, lw=0)
            ax.plot(x, s.sel(quantile=0.5), "o-", ms=4, color=c, label=label or None)
        if not drew:
            ax.text(0.5, 0.5, "$c_0(w_1) = 0$: no spike", transform=ax.transAxes, ha="center", va="center")
            ax.set_xticks([])
            ax.set_yticks([])
        ax.axhline(1, color="k", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel(r"width $d_1$")
        ax.set_ylabel(r"$\lambda_{\max}(M_0)\,/\,(d_1 c_0^2 n)$")
        ax.set_title(f"{act}: $c_0$ spike (Eq. 56)" if act else "$c_0$ spike (Eq. 56)", fontsize=10)
        if drew and (len(ser) > 1 or ser[0][0]):
            ax.legend(fontsize=7)
    return _save(fig, path)
