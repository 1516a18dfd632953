"""``rmt-engine report``: figures and a Markdown report of a result cube.

``write_report(store, out)`` opens the cube (``open_results``; a partial cube is read with
``allow_partial=True`` and said so), runs the ``analysis`` functions and writes into ``out``:
``report.md`` (tables of the Eq. 67 ratios, violation rates with confidence intervals, the
power-law fit of lambda_min(M0) in d1, the width threshold and its exponent against 3/2 and
5/3, the c_0 spike) and the PNG figures of ``plots``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import analysis as A


def _fmt(x, digits=3):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not np.isfinite(x):
        return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.{digits}g}"


def _table(ds, columns):
    """Markdown table of a Dataset over its (squeezed) grid dims: index columns then ``columns``."""
    ds = A.squeeze_grid(ds)
    df = ds[list(columns)].to_dataframe().reset_index()
    idx = [c for c in df.columns if c not in columns and c in ds.dims]
    cols = idx + list(columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(str(row[c]) if c in idx else _fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def write_report(store, out, *, delta=None, level=0.95, t=None, confidence=0.95) -> Path:
    """Write ``report.md`` and figures for the cube at ``store`` into directory ``out``; return the .md path."""
    from .store import IncompleteStoreError, open_results  # noqa: PLC0415
    from . import plots as P  # noqa: PLC0415

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    partial = False
    try:
        ds = open_results(store)
    except IncompleteStoreError:
        ds = open_results(store, allow_partial=True)
        partial = True
    attrs = ds.attrs
    if t is None and "t" in ds.dims:
        t = int(ds["t"].values[0])
    if delta is None:
        delta = 0.2
    md = [f"# Report: {attrs.get('study_name', Path(store).name)}", ""]
    if attrs.get("study_description"):
        md += [str(attrs["study_description"]), ""]
    md += [f"- store: `{store}`" + (" (**partial**: missing trials read as NaN)" if partial else ""),
           f"- trials per grid point: {ds.sizes.get('trial')}; Khatri-Rao order t = {t}; delta = {delta}",
           f"- rmt_engine {attrs.get('rmt_engine_version', '?')}, config hash `{attrs.get('config_hash', '?')}`",
           f"- grid: " + ", ".join(f"{d}={list(np.asarray(ds[d].values).tolist())}" for d in A.GRID_AXES), ""]

    figs = {}

    def fig(name, fn, *a, **k):
        path = out / f"{name}.png"
        try:
            fn(*a, path=path, **k)
            figs[name] = path.name
        except Exception as e:  # a figure that cannot be drawn must not lose the report
            md.append(f"_figure {name} failed: {type(e).__name__}: {e}_\n")

    # 1. concentration
    conc = A.concentration_summary(ds, quantiles=(0.05, 0.5, 0.95), t=t).compute()
    tab = conc[["lower_ratio_mean", "upper_ratio_mean", "delta1_mean", "delta2_mean"]].copy()
    for name in ("lower_ratio", "upper_ratio", "delta1", "delta2"):
        for q in (0.05, 0.95):
            tab[f"{name}_q{int(q * 100):02d}"] = conc[f"{name}_q"].sel(quantile=q, drop=True)
    md += ["## Eq. 67: empirical singular values against the sharp bounds", "",
           "`lower_ratio` = sigma_min(phi(W0 X)) / eq67_lower_sharp (bound holds if >= 1), "
           "`upper_ratio` = sigma_max(phi(W0 X)) / eq67_upper_sharp (holds if <= 1); empirical delta1, delta2 "
           "of Eq. 67. Mean and 5%/95% quantiles over trials. A NaN lower ratio means the Eq. 58 lower "
           "bound is 0 (c_t = 0 or n > C(d0+t-1, t)).", "",
           _table(tab, ["lower_ratio_q05", "lower_ratio_mean", "lower_ratio_q95", "upper_ratio_mean",
                        "upper_ratio_q95", "delta1_mean", "delta1_q95", "delta2_mean", "delta2_q95"]), ""]
    fig("bounds_vs_width", P.plot_bounds_vs_width, ds, t=t)
    fig("delta_distributions", P.plot_delta_distributions, ds)

    # 2. violation rates
    md += [f"## Violation rates at delta = {delta} ({int(confidence * 100)}% Wilson intervals)", ""]
    for ev, text in (("eq67_lower", "sigma_min(F) < sqrt((1-delta) eq58_lower_sharp)"),
                     ("eq67_upper", "sigma_max(F) > sqrt((1+delta) eq58_upper_sharp)"),
                     ("conc_lower", "delta1 > delta"), ("conc_upper", "delta2 > delta")):
        v = A.violation_rate(ds, ev, delta=delta, t=t, confidence=confidence).compute()
        md += [f"### {ev}: {text}", "", _table(v, ["rate", "lo", "hi", "successes", "trials"]), ""]
        fig(f"violations_{ev}", P.plot_violation_rates, v, title=f"violations: {text}")

    # 3. power laws
    md += ["## Power laws in d1 (least squares on logs, trials pooled)", "",
           "lambda_min(M0) and lambda_max(M0) against d1: E[M0] is linear in d1 (Eq. 56), so both "
           "exponents tend to 1 once d1 >> n.", ""]
    if ds.sizes["d1"] >= 2:
        for var in ("lambda_min_M0", "lambda_max_M0"):
            f = A.fit_power_law(ds[var], "d1").compute()
            md += [f"### {var}", "", _table(f, ["exponent", "stderr", "prefactor", "npoints", "r2"]), ""]
    else:
        md += ["_one d1 value: no fit_", ""]

    # 4. width threshold
    thr = A.width_threshold(ds, level=level, t=t).compute()
    md += [f"## Width threshold: smallest d1 with margin > 1 (Eq. 9) in {level:.0%} of trials", "",
           "Interpolated on the log-d1 grid; NaN: never reached on the grid; censored: reached at the smallest "
           "d1. Paper: d1* ~ n^{3/2} (Eq. 21), n^{5/3} without the bound on V_k (App. E).", "",
           _table(thr.drop_vars("fraction"), ["d1_star", "censored"]), ""]
    if ds.sizes["n"] >= 2:
        fit = A.fit_threshold_exponent(thr).compute()
        md += ["Fitted exponent of d1* in n:", ""] + [f"- {line}" for line in A.threshold_verdict(fit)] + [""]
        fig("width_threshold", P.plot_threshold_fit, thr, fit)
    else:
        md += ["_one n value: no exponent fit_", ""]

    # 5. c0 spike
    sp = A.c0_spike(ds).compute()
    sp_t = sp[["prediction", "spike_fraction"]].copy()
    for q in sp["quantile"].values:
        sp_t[f"ratio_q{int(round(q * 100)):02d}"] = sp["spike_ratio_q"].sel(quantile=q, drop=True)
    md += ["## The c_0 spike (Eq. 56)", "",
           "ratio = lambda_max(M0) / (d1 c_0(w1)^2 n): tends to 1 when the all-ones term of E[M0] dominates; "
           "NaN where c_0(w1) = 0 (odd activations: no spike). spike_fraction = d1 c_0^2 n / eq58_upper_sharp.", "",
           _table(sp_t, ["prediction", "spike_fraction"] + [f"ratio_q{int(round(q * 100)):02d}"
                                                            for q in sp["quantile"].values]), ""]
    fig("c0_spike", P.plot_c0_spike, ds)

    md += ["## Figures", ""] + [f"![{k}]({v})" for k, v in figs.items()] + [""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
