"""The report's asymptotics section: measured spectra of M0 against the deterministic equivalent.

Rule of this module: it compares what a cube measured with what ``rmt_engine.theory.asymptotics``
predicts from the same grid point's E[M0] (the ``asym_*`` fields of the record; for the density
figure, E[M0] is recomputed from the study definition stored in the cube), and it states the
prediction's limit wherever it shows it: the deterministic equivalent is exact for Gaussian
features; in the paper's regime n >> d0 (here flagged when n > 4 d0) the features of phi(W0 X)
are far from Gaussian and the prediction over-states lambda_min by several percent
(anti-conservatively): measured at n = 400, d1 = 4000, d0 = 20: -7.7% gelu, -4.9% sigmoid,
-1.9% tanh, against +1.3..2.1% for Gaussian features with the same covariance.
"""

from __future__ import annotations

import numpy as np

from . import analysis as A
from .plots import (BAND, HANDLELENGTH, NothingToDraw, _colors, _computed_panels, _figure, _grid_ticks, _need_axis, _q,
                    _save, _series, _suptitle)

#: The spectra figure shows the eigenvalues below this quantile (the d0 "linear" ones and the spike lie
#: above), or only the first predicted support interval when it holds most of them and ends below
#: that quantile (else the bulk would fill the first bins of a range set by the few large ones).
BULK_QUANTILE = 0.85
#: n / d0 above which the report warns that the prediction over-states lambda_min.
REGIME_RATIO = 4.0


def _regime_note(ds) -> str:
    n = np.asarray(ds["n"].values, dtype=float)
    d0 = np.asarray(ds["d0"].values, dtype=float)
    worst = float(n.max() / d0.min())
    if worst > REGIME_RATIO:
        return (f"**Regime warning:** n/d0 reaches {worst:.3g} > {REGIME_RATIO:g} in this cube. There the features are "
                "far from Gaussian and the deterministic equivalent over-states lambda_min by several percent "
                "(anti-conservative: do not use it as a lower bound).")
    return f"n/d0 <= {worst:.3g} everywhere: the regime where the prediction was measured within ~2.5%."


def plot_sigma_min_three_ways(ds, path=None, *, delta=0.2, t=None):
    """Measured sigma_min(phi(W0 X)) (median, 5-95% band), the deterministic-equivalent prediction
    sqrt(asym_lambda_min) and the sharp Eq. 67 lower bound against d1, per activation."""
    from matplotlib.lines import Line2D  # noqa: PLC0415

    _need_axis(ds)
    t = A.default_t(ds) if t is None else t
    v = A.at_t(ds, t)
    meas = _q(v["sigma_min_F"])
    pred = np.sqrt(v["asym_lambda_min"].where(v["asym_lambda_min"] > 0)).compute()
    bound = np.sqrt((1 - delta) * v["eq58_lower_sharp"]).where(A.lower_defined(v)).compute()
    panels = _computed_panels(meas)
    fig, axes = _figure(len(panels))
    for ax, (act, _) in zip(axes, panels):
        pick = (lambda o: o.sel(activation=act)) if act else (lambda o: o)
        ser = _series(pick(meas), "d1")
        cols = _colors(len(ser))
        pr, bd = dict(_series(pick(pred), "d1")), dict(_series(pick(bound), "d1"))
        for c, (label, s) in zip(cols, ser):
            x = s["d1"].values
            ax.fill_between(x, s.sel(quantile=BAND[0]), s.sel(quantile=BAND[1]), color=c, alpha=0.25, lw=0)
            ax.plot(x, s.sel(quantile=0.5), "o-", color=c, ms=4, lw=1)
            ax.plot(x, np.asarray(pr[label].values, float), "x:", color=c, ms=6)
            ax.plot(x, np.asarray(bd[label].values, float), "--", color=c)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _grid_ticks(ax, meas["d1"].values)
        ax.set_xlabel(r"width $d_1$")
        ax.set_ylabel(r"$\sigma_{\min}(\phi(W_0X))$")
        ax.set_title(f"{act}: measured vs prediction vs Eq. 67 bound\n({A.t_label(ds.sel(activation=[act]) if act else ds, t)},"
                     f" $\\delta$ = {delta:g})", fontsize=9)
    style = [(Line2D([], [], color="k", marker="o", ms=4), "measured: median, 5-95% band"),
             (Line2D([], [], color="k", marker="x", ls=":"), "deterministic equivalent (LLC 2018)"),
             (Line2D([], [], color="k", ls="--"), "Eq. 67 lower bound, sharp")]
    from .plots import _style_legend  # noqa: PLC0415

    _style_legend(axes[0], style, [lab for lab, _ in ser], cols)
    _suptitle(fig, "", ds, exclude=("d1",))
    return _save(fig, path)


def plot_lambda_min_accuracy(ds, path=None):
    """lambda_min(M0) measured / predicted (median, 5-95%) against d1/n and against n/d0: one panel per
    ratio that takes two or more values in the cube (``NothingToDraw`` when neither does: the
    report's table has the ratios)."""
    r = ds["asym_ratio_lambda_min"]
    if not np.isfinite(np.asarray(r.values, float)).any():
        raise NothingToDraw("no grid point has a nonzero lambda_min prediction (d1 < n everywhere?)")
    q = _q(r)
    med = q.sel(quantile=0.5, drop=True)
    x1 = (ds["d1"] / ds["n"]).broadcast_like(med)
    x2 = (ds["n"] / ds["d0"]).broadcast_like(med)
    specs = [(x, lab, which) for x, lab, which in ((x1, r"$d_1 / n$", "width"), (x2, r"$n / d_0$", "regime"))
             if np.unique(np.round(np.asarray(x.values, float), 9)).size >= 2]
    if not specs:
        raise NothingToDraw(f"d1/n and n/d0 take one value each ({float(np.ravel(x1.values)[0]):.3g}, "
                            f"{float(np.ravel(x2.values)[0]):.3g}): no trend to draw; the table has the ratio")
    fig, axes = _figure(len(specs))
    acts = [str(a) for a in ds["activation"].values]
    cols = _colors(len(acts))
    for ax, (x, lab, which) in zip(axes, specs):
        for c, act in zip(cols, acts):
            m = np.ravel(med.sel(activation=act).values)
            lo = np.ravel(q.sel(activation=act, quantile=BAND[0]).values)
            hi = np.ravel(q.sel(activation=act, quantile=BAND[1]).values)
            xx = np.ravel(x.sel(activation=act).values).astype(float)
            ok = np.isfinite(m)
            ax.errorbar(xx[ok], m[ok], yerr=[m[ok] - lo[ok], hi[ok] - m[ok]], fmt="o", color=c, ms=4, capsize=2,
                        label=act)
        ax.axhline(1, color="k", lw=0.8)
        ax.set_xscale("log")
        _grid_ticks(ax, np.ravel(x.values))
        ax.set_xlabel(lab)
        ax.set_ylabel(r"$\lambda_{\min}(M_0)$ measured / predicted")
        if which == "regime":
            xs = np.asarray(x.values, float)
            if np.nanmin(xs) < REGIME_RATIO < np.nanmax(xs):  # the line only where it lies inside the axis
                ax.axvline(REGIME_RATIO, color="C3", ls="--", lw=0.8, label="n = 4 d0: above it the prediction\n"
                           "over-states lambda_min")
            ax.set_title("vs the regime n / d0", fontsize=9)
        else:
            ax.set_title("accuracy of the deterministic equivalent vs width (median, 5-95%)", fontsize=9)
        ax.legend(fontsize=7, handlelength=HANDLELENGTH)
    _suptitle(fig, "", ds)
    return _save(fig, path)


def plot_spectra_with_density(ds, path=None, *, max_panels: int = 6):
    """Histograms of the stored spectra of M0/d1 (all trials pooled) with the predicted density and
    support edges, at up to ``max_panels`` grid points (per activation and n, the narrowest d1 >= 2n), on a
    grid of at most three panels per row."""
    from ..theory.asymptotics import deterministic_equivalent  # noqa: PLC0415
    from ..study.spec import Study  # noqa: PLC0415
    from ..montecarlo.trial import point_data  # noqa: PLC0415

    names = [v for v in ds.data_vars if str(v).startswith("spectrum_n")]
    if not names:
        raise NothingToDraw("the cube has no stored spectra (save_spectrum = false)")
    study = Study.from_toml_text(ds.attrs["study_toml"])
    picks = []
    for act in ds["activation"].values:
        for n in ds["n"].values:
            ok = [int(d) for d in ds["d1"].values if d >= 2 * n] or [int(ds["d1"].values.max())]
            picks.append((str(act), int(n), min(ok)))  # the narrowest width: the most random spectrum
    panels = []
    for act, n, d1 in picks:
        sp = ds[f"spectrum_n{n}"].sel(activation=act, d1=d1)
        sp = sp.isel({d: 0 for d in sp.dims if d not in ("trial", f"eig_n{n}")})
        eig = np.asarray(sp.values, float).ravel() / d1
        eig = eig[np.isfinite(eig)]
        if eig.size:  # a grid point of a partial cube not computed yet has only NaN
            panels.append((act, n, d1, sp, eig))
    if not panels:
        raise NothingToDraw("no grid point it would show has a computed spectrum (not computed yet: partial cube)")
    panels = panels[:max_panels]
    from matplotlib.figure import Figure  # noqa: PLC0415

    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, (act, n, d1, sp, eig) in zip(axes, panels):
        labels = {a: (act if a == "activation" else n if a == "n" else d1 if a == "d1" else
                      np.asarray(ds[a].values).tolist()[0]) for a in A.GRID_AXES}
        spec = study.trial_spec(labels)
        de = deterministic_equivalent(point_data(spec, {}).K, d1)
        top = float(np.quantile(eig, BULK_QUANTILE))
        first = de.edges[0] if de.edges else None
        if first is not None and first[1] < top and first[2] >= 0.5 * eig.size / sp.sizes["trial"]:
            # most eigenvalues in the first predicted interval, a gap above it: show that interval
            # (else it would be squeezed into the first bins of a range set by the few large ones)
            top = 1.15 * first[1]
        shown_frac = float(np.mean(eig <= top))
        bins = np.linspace(0.0, top, 61)
        w = np.full(eig.shape, 1.0 / (eig.size * (bins[1] - bins[0])))  # density of all n eigenvalues
        ax.hist(eig, bins=bins, weights=w, color="C0", alpha=0.5,
                label=f"measured ({sp.sizes['trial']} trials pooled)")
        xs = np.linspace(0.0, top, 800)
        ax.plot(xs, np.asarray(de.density(xs), float), color="C3", lw=1.2, label="deterministic equivalent")
        shown = [e for e in de.edges if e[0] < top][:3]
        for k, (lo, hi, cnt) in enumerate(shown):
            ax.axvline(lo, color="C3", ls=":", lw=0.9, label="predicted support edges" if k == 0 else None)
            if hi < top:
                ax.axvline(hi, color="C3", ls=":", lw=0.9)
        ax.set_xlim(0.0, top)
        ax.set_title(f"{act}: n = {n}, d0 = {spec.d0}, d1 = {d1}\n(lowest {100 * shown_frac:.0f}% of the eigenvalues shown)", fontsize=8)
        ax.set_xlabel(r"eigenvalue of $M_0/d_1$")
        ax.set_ylabel("density")
        ax.legend(fontsize=7, handlelength=HANDLELENGTH)
    _suptitle(fig, "", ds, exclude=("activation", "n", "d0", "d1"))
    return _save(fig, path)


def asymptotics_section(ds, fig, table, *, delta=0.2) -> list[str]:
    """Markdown lines (and figures through ``fig``) comparing the cube with the deterministic equivalent.

    ``fig(name, fn, *args, **kwargs)`` draws a figure, ``table(ds, columns)`` formats one (the report's)."""
    if "asym_lambda_min" not in ds:
        return []
    md = ["## Sharp asymptotics: the deterministic equivalent of the spectrum of M0", "",
          "Prediction from E[M0] alone (Louart-Liao-Couillet 2018; support edges by Silverstein-Choi 1995), "
          "against the measurement. Ratios measured / predicted: median and 5-95% over trials.", "",
          _regime_note(ds), ""]
    cols = {"asym_ratio_lambda_min": "lambda_min", "asym_ratio_lambda_2": "lambda_2", "asym_ratio_spike": "spike"}
    tab = {}
    for var, short in cols.items():
        q = _q(ds[var])
        for qq, name in ((0.5, "median"), (BAND[0], "q05"), (BAND[1], "q95")):
            tab[f"{short}_{name}"] = q.sel(quantile=qq, drop=True)
    import xarray as xr  # noqa: PLC0415

    t = xr.Dataset(tab)
    md += [table(t, [f"{s}_{k}" for s in cols.values() for k in ("median", "q05", "q95")]), ""]
    fig("asymptotics_sigma_min", plot_sigma_min_three_ways, ds, delta=delta)
    fig("asymptotics_accuracy", plot_lambda_min_accuracy, ds)
    fig("asymptotics_spectra", plot_spectra_with_density, ds)
    return md
