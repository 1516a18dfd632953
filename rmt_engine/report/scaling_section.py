"""The report's scaling section: the paper's width law and the estimates of Sec. 5.3, with intervals.

Rule of this module: every claim is measured with an interval and set against its prediction in
one table "claim | prediction | measured (interval) | verdict" (``scaling.claims_table``), and
each fit is drawn with the prediction and its residuals. Along linked axes (a ``case`` dim with
coordinates n, d0; e.g. n = d0^2/4) the width threshold d1* (smallest d1 with P(event) >= level,
exact binomial interval) is fitted as ``d0 d1* ~ n^b`` (Eq. 21: b = 3/2; App. E: 5/3); on a plain
grid the report's width-threshold section fits d1* in n. The concentration ``delta1 ~ (n/d1)^a``
(a = 1/2 expected) and Sec. 5.3's ``sigma_max(X) ~ sqrt(n/d0)`` and ``sigma_min(X^{*t}) ~ 1``
along ``n ~ d0^t`` are fitted the same way -- the last only along values of the geometry that
share one order t (a fit across different t is dropped and the report says so); every prediction
says where it comes from.
"""

from __future__ import annotations

import numpy as np

from . import analysis as A
from .format import fmt
from . import scaling as S
from .plots import NothingToDraw, _colors, _figure, _grid_ticks, _save


def _has_cases(ds) -> bool:
    return A.CASE_DIM in ds.dims and ds.sizes[A.CASE_DIM] >= 2 and "n" in ds.coords and "d0" in ds.coords


def plot_width_law(thr, fit, path=None, *, title="margin > 1", level=0.95):
    """d0 d1* against n along the linked cases (binomial intervals), the fit, the 3/2 and 5/3
    slopes through the first point, and the fit's residuals in log."""
    acts = [str(a) for a in thr["activation"].values] if "activation" in thr.dims else [""]
    y_all = (thr["d_star"] * thr["d0"]).compute()
    if not np.isfinite(np.asarray(y_all.values, float)).any():
        raise NothingToDraw(f"the threshold ({title}) is not reached at any case")
    fig, axes = _figure(2, height=4.0)
    ax, axr = axes
    for c, act in zip(_colors(len(acts)), acts):
        sel = (lambda o: o.sel(activation=act)) if act else (lambda o: o)
        t = A.squeeze_grid(sel(thr))
        n = np.asarray(t["n"].values, float)
        d0 = np.asarray(t["d0"].values, float)
        y, lo, hi = (np.ravel(np.asarray(t[k].values, float)) * d0 for k in ("d_star", "lo", "hi"))
        cens = (np.ravel(np.asarray(t["censored_below"].values, bool)) if "censored_below" in t
                else np.zeros(y.shape, bool))
        if (cens & np.isfinite(y)).any():  # reached at the first grid value: only an upper bound, not fitted
            ax.plot(n[cens], y[cens], "v", mfc="none", color=c, ms=8,
                    label=f"{act}: reached at the first d1 (upper bound, not fitted)")
        ok = np.isfinite(y) & ~cens
        if not ok.any():
            continue
        hi_c = np.where(np.isfinite(hi), hi, y * 3)
        open_above = bool((~np.isfinite(hi[ok])).any())
        ax.errorbar(n[ok], y[ok], yerr=[y[ok] - lo[ok], hi_c[ok] - y[ok]], fmt="o", color=c, capsize=3,
                    label=f"{act}: $d_0 d_1^*$ (95% binomial interval"
                          + ("; unbounded above: bar cut at 3x" if open_above else "") + ")")
        f = A.squeeze_grid(sel(fit))
        b = float(np.ravel(f["exponent"].values)[0])
        if np.isfinite(b):
            a = float(np.ravel(f["prefactor"].values)[0])
            se = float(np.ravel(f["stderr"].values)[0])
            nn = np.geomspace(n.min(), n.max(), 30)
            err = f"$\\pm$ {se:.2f}" if np.isfinite(se) else f"({int(ok.sum())} points: no error)"
            ax.plot(nn, a * nn ** b, "-", color=c, lw=1, label=f"{act}: fit $b$ = {b:.2f} {err}")
            res = np.ravel(np.asarray(f["residuals"].values, float)) if "residuals" in f else np.full(n.shape, np.nan)
            axr.plot(n, res, "o-", color=c, label=act)
        i0 = int(np.argmax(ok))
        for p, ls in ((1.5, "--"), (5 / 3, ":")):
            nn = np.geomspace(n.min(), n.max(), 30)
            ax.plot(nn, y[i0] * (nn / n[i0]) ** p, ls, color=c, lw=0.8)
    ax.plot([], [], "k--", lw=0.8, label=r"$n^{3/2}$ (Eq. 21)")
    ax.plot([], [], "k:", lw=0.8, label=r"$n^{5/3}$ (App. E)")
    for a_ in (ax, axr):
        a_.set_xscale("log")
        _grid_ticks(a_, np.asarray(thr["n"].values, float))
        a_.set_xlabel("$n$ (linked with $d_0$)")
    ax.set_yscale("log")
    ax.set_ylabel(f"$d_0 d_1^*$ (P = {level:g})")
    ax.set_title(f"$d_1^*$: smallest d1 with {title} in {level:.0%} of trials", fontsize=9)
    ax.legend(fontsize=7, handlelength=4.0)
    axr.axhline(0, color="k", lw=0.6)
    axr.set_ylabel("residual of log($d_0 d_1^*$) from the fit")
    axr.set_title("fit residuals", fontsize=9)
    if axr.get_legend_handles_labels()[0]:
        axr.legend(fontsize=7, handlelength=4.0)
    return _save(fig, path)


def scaling_section(ds, fig, *, level=0.95) -> list[str]:
    """Markdown lines (figures through ``fig``) for the width law, concentration and Sec. 5.3."""
    rows, md = [], []
    ds = A.squeeze_grid(ds, keep_one=True)  # claims are labelled by the axes that vary only
    events = S.scaling_events(ds)
    notes = []
    if _has_cases(ds):
        for name, title in (("margin", "Eq. 9 margin > 1"), ("gd_converged", "GD converged")):
            if name not in events:
                continue
            thr = S.threshold(events[name], level)
            fit = S.fit_scaling(thr, "n", y_factor="d0")
            rows += S.fit_rows(fit, f"d0 d1* ~ n^b ({title}, level {level:g}, weighted by the d1* intervals)")
            # the same without weights: the binomial intervals ignore the d1 grid's resolution, so a case
            # whose probability jumps between two grid values gets a tight interval and dominates
            ols = S.fit_scaling(thr["d_star"].where(~thr["censored_below"]), "n", y_factor="d0")
            rows += S.fit_rows(ols, f"d0 d1* ~ n^b ({title}, level {level:g}, unweighted)")
            fig(f"width_law_{name}", plot_width_law, thr, fit, title=title, level=level)
            tab = A.squeeze_grid(thr[["d_star", "lo", "hi"]]).compute()
            notes.append(f"d1* ({title}) per case: " + "; ".join(
                f"{act} " + ", ".join(f"n={int(n)}: {fmt(d)} [{fmt(l)}, {fmt(h)}]" for n, d, l, h in zip(
                    np.ravel(tab["n"].values), *(np.ravel((tab[k].sel(activation=act) if "activation" in tab[k].dims
                                                           else tab[k]).values) for k in ("d_star", "lo", "hi"))))
                for act in np.atleast_1d(tab["activation"].values)))
    geo_dim = A.CASE_DIM if _has_cases(ds) else ("n" if "n" in ds.dims and ds.sizes["n"] >= 2 else None)
    if geo_dim is not None:
        # Sec. 5.3: sigma_max(X) ~ sqrt(n/d0) and sigma_min(X^{*t}) ~ 1 (along n ~ d0^t when linked)
        geo = {d: 0 for d in ("activation", "d1", "w1", "d2") if d in ds.dims}  # X depends on (data, n, d0) only
        sx = ds["sigma_max_X"].isel(geo)
        u = (ds["n"] / ds["d0"]).broadcast_like(sx)
        f = S.fit_scaling(sx, u, dim=geo_dim, predictions={"Sec. 5.3": 0.5})
        rows += S.fit_rows(f, "sigma_max(X) ~ (n/d0)^a")
        if "sigma_min_xkr_auto" in ds and "t_auto" in ds:
            # X^{*t} depends on (data, n, d0, t) only: one fit per order t_auto that stays the same along the
            # geometry; an activation whose t_auto changes along it is not fitted (the exponent would mix orders)
            sm = ds["sigma_min_xkr_auto"].isel({d: 0 for d in ("d1", "d2") if d in ds.dims})
            ta = ds["t_auto"].isel({d: 0 for d in ("d1", "d2") if d in ds.dims}).compute()
            acts = [str(a) for a in np.atleast_1d(ds["activation"].values)] if "activation" in ds.dims else [None]
            by_t, mixed = {}, []
            for act in acts:
                tv = np.asarray((ta.sel(activation=act) if act else ta).values, float).ravel()
                tv = np.unique(tv[np.isfinite(tv)])
                if tv.size == 1:
                    by_t.setdefault(int(tv[0]), []).append(act)
                elif tv.size > 1:
                    mixed.append(f"{act} (t_auto = {', '.join(str(int(x)) for x in tv)})")
            for tval, group in sorted(by_t.items()):
                s1 = sm.sel(activation=group[0]) if group[0] else sm
                s1 = s1.where(s1 > 0)
                f = S.fit_scaling(s1, ds["n"].broadcast_like(s1), dim=geo_dim, predictions={"Sec. 5.3": 0.0})
                who = f" [{', '.join(group)}]" if group[0] else ""
                rows += S.fit_rows(f, f"sigma_min(X^{{*{tval}}}) ~ n^a (t_auto = {tval}{who})")
            if mixed:
                notes.append("sigma_min(X^{*t_auto}) ~ n^a not fitted for " + "; ".join(mixed) + ": t_auto changes "
                             f"along {geo_dim}, and an exponent across different t means nothing")
    if "delta1" in ds and ds.sizes.get("d1", 0) >= 2:
        rows += S.fit_rows(S.concentration_law(ds), "delta1 ~ (n/d1)^a vs (n/d1)^{1/2}")
        notes.append("delta1 ~ (n/d1)^a: the prediction 1/2 is the matrix-concentration scale of Eq. 66-67 "
                     "(||M0 - E[M0]|| / lambda_min(E[M0]) ~ sqrt(n/d1) up to logs, matrix Chernoff/Bernstein; "
                     "`scaling.CONCENTRATION_EXPONENT`), a bound's rate: a larger measured exponent means delta1 "
                     "falls faster than that bound, not that the bound fails")
    if not rows:
        return []
    md = ["## The paper's scaling claims, measured", "",
          "Each exponent with its interval (binomial intervals of d1* as weights; t-interval of the fit) "
          "against the prediction; `disagrees` means |z| > 2.", "", S.claims_table(rows)] + md
    md += [f"- {x}" for x in notes] + [""]
    return md

