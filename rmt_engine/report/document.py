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
from .format import fmt


_fmt = fmt  # the reports' one number format (rmt_engine.report.format)


def _table(ds, columns):
    """Markdown table of a Dataset over its (squeezed) grid dims: index columns then ``columns``."""
    ds = A.squeeze_grid(ds, keep_one=True)
    df = ds[list(columns)].to_dataframe().reset_index()
    idx = [c for c in df.columns if c not in columns and c in ds.dims]
    cols = idx + list(columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(str(row[c]) if c in idx else _fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


class ReportError(RuntimeError):
    """A figure of the report could not be drawn (``failures`` lists them); the report is still written."""

    def __init__(self, message, path, failures):
        super().__init__(message)
        self.path, self.failures = path, failures


def _undefined_table(ds, t) -> str:
    """Where the lower bound at ``t`` is undefined, and why (``rmt_engine.theory.orders`` reason codes)."""
    from ..theory.orders import describe  # noqa: PLC0415

    v = A.at_t(ds, t)
    if "lower_undefined" not in v:
        return ""
    codes = A.squeeze_grid(v["lower_undefined"], keep_one=True).compute()
    df = codes.to_dataframe().reset_index()
    bad = df[df["lower_undefined"] != 0]
    if bad.empty:
        return ""
    idx = [c for c in df.columns if c in codes.dims]
    lines = [f"Lower bound **undefined** at {len(bad)} of {len(df)} grid points (never counted as held):", "",
             "| " + " | ".join(idx + ["reason"]) + " |", "|" + "---|" * (len(idx) + 1)]
    for _, row in bad.iterrows():
        lines.append("| " + " | ".join(str(row[c]) for c in idx) + f" | {describe(row['lower_undefined'])} |")
    return "\n".join(lines) + "\n"


def write_report(store, out, *, delta=None, level=0.95, t=None, confidence=0.95) -> Path:
    """Write ``report.md`` and figures for the cube at ``store`` into directory ``out``; return the .md path.

    ``t``: one Khatri-Rao order (an int or ``"auto"``); default every order of the cube. A figure
    that has nothing to show is not drawn and the report says why; a figure that fails (e.g.
    matplotlib missing) raises ``ReportError`` after ``report.md`` is written, naming it.
    """
    from ..study.store import IncompleteStoreError, open_results  # noqa: PLC0415
    from . import plots as P  # noqa: PLC0415

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    partial = False
    try:
        ds = open_results(store)
    except IncompleteStoreError:
        ds = open_results(store, allow_partial=True)
        partial = True
    attrs = ds.attrs
    ts = A.available_t(ds) if t is None else [t if t == A.AUTO_T else int(t)]
    for tt in ts:
        A.at_t(ds, tt)  # a ValueError naming the cube's orders for a t it does not have
    if delta is None:
        delta = 0.2
    if not (0.0 <= float(delta) < 1.0):
        raise ValueError(f"delta must lie in [0, 1), got {delta!r}")
    md = [f"# Report: {attrs.get('study_name', Path(store).name)}", ""]
    if attrs.get("study_description"):
        md += [str(attrs["study_description"]), ""]
    md += [f"- store: `{store}`" + (" (**partial**: missing trials read as NaN)" if partial else ""),
           f"- trials per grid point: {ds.sizes.get('trial')}; Khatri-Rao orders: "
           + "; ".join(A.t_label(ds, tt) for tt in ts) + f"; delta = {delta}",
           f"- rmt_engine {attrs.get('rmt_engine_version', '?')}, config hash `{attrs.get('config_hash', '?')}`",
           "- grid: " + ", ".join(f"{d}={list(np.asarray(ds[d].values).tolist())}" for d in A.GRID_AXES), ""]

    figs, failures, skipped = {}, [], []

    def fig(name, fn, *a, **k):
        path = out / f"{name}.png"
        try:
            fn(*a, path=path, **k)
            figs[name] = path.name
        except P.NothingToDraw as e:
            skipped.append(f"{name}: not drawn, {e}")
        except Exception as e:  # a figure that cannot be drawn must not lose the report
            failures.append(f"{name}: {type(e).__name__}: {e}")

    # 1. the answer first: how do the bounds stand against the measurement
    md += ["## Summary: the Eq. 67 lower bounds against the measured sigma_min(phi(W0 X))", "",
           f"Per activation, over every grid point where the bound is defined: the fraction of trials in which "
           f"sigma_min(phi(W0 X)) >= sqrt((1 - {delta}) * bound) (held), and the median of measured / bound "
           "(slack). Undefined bounds are left out and counted separately.", "",
           "| activation | bound | points defined | trials held | median slack |", "|---|---|---|---|---|"]
    for act in ds["activation"].values:
        sub = ds.sel(activation=[act])
        rows = [(f"sharp, {A.t_label(sub, tt)}", A.at_t(sub, tt), "eq58_lower_sharp") for tt in ts]
        rows.append(("all Hermite orders", sub, "eq58_lower_hadamard"))
        for label, v, key in rows:
            defined = (A.lower_defined(v) if key == "eq58_lower_sharp" else v[key] > 0) & (v[key] > 0)
            b = np.sqrt((1 - delta) * v[key]).where(defined)
            ratio = (v["sigma_min_F"] / b).compute()
            vals = np.asarray(ratio.values, float).ravel()
            vals = vals[np.isfinite(vals)]
            npts = int(np.asarray(defined.values).sum())
            tot = int(np.asarray(defined.values).size)
            held = f"{int((vals >= 1).sum())}/{vals.size}" if vals.size else "undefined"
            med = _fmt(np.median(vals)) if vals.size else "undefined"
            md.append(f"| {act} | {label} | {npts}/{tot} | {held} | {med} |")
    md.append("")
    fig("lower_bound_slack", P.plot_lower_bound_tightness, ds, delta=delta)

    # 2. concentration, per t
    for tt in ts:
        conc = A.concentration_summary(ds, quantiles=(0.05, 0.5, 0.95), t=tt).compute()
        tab = conc[["lower_ratio_mean", "hadamard_ratio_mean", "upper_ratio_mean", "delta1_mean", "delta2_mean"]].copy()
        for name in ("lower_ratio", "upper_ratio", "delta1", "delta2"):
            for q in (0.05, 0.95):
                tab[f"{name}_q{int(q * 100):02d}"] = conc[f"{name}_q"].sel(quantile=q, drop=True)
        md += [f"## Eq. 67 at {A.t_label(ds, tt)}: measured singular values against the sharp bounds", "",
               "`lower_ratio` = sigma_min(phi(W0 X)) / eq67_lower_sharp (bound holds if >= 1; `undefined` where "
               "the bound is), `hadamard_ratio` the same against the all-orders bound, `upper_ratio` = "
               "sigma_max(phi(W0 X)) / eq67_upper_sharp (holds if <= 1); the bounds are at the study's "
               "bound_delta1/2. Measured delta1, delta2 of Eq. 67. Mean and 5%/95% quantiles over trials.", "",
               _table(tab, ["lower_ratio_q05", "lower_ratio_mean", "hadamard_ratio_mean", "upper_ratio_mean",
                            "upper_ratio_q95", "delta1_mean", "delta1_q95", "delta2_mean", "delta2_q95"]), "",
               _undefined_table(ds, tt)]
        suffix = "" if len(ts) == 1 else f"_t{tt}"
        fig(f"bounds_vs_width{suffix}", P.plot_bounds_vs_width, ds, t=tt, delta=delta)
    fig("delta_distributions", P.plot_delta_distributions, ds)

    # 3. violation rates
    md += [f"## Violation rates at delta = {delta} ({int(confidence * 100)}% Wilson intervals)", "",
           "`undefined`: the bound is undefined at that grid point (no trial is counted).", ""]
    events = [(ev, tt, text) for tt in ts for ev, text in
              (("eq67_lower", f"sigma_min(F) < sqrt((1-delta) eq58_lower_sharp), {A.t_label(ds, tt)}"),)]
    events += [("eq67_lower_hadamard", None, "sigma_min(F) < sqrt((1-delta) eq58_lower_hadamard)"),
               ("eq67_upper", None, "sigma_max(F) > sqrt((1+delta) eq58_upper_sharp)"),
               ("conc_lower", None, "delta1 > delta"), ("conc_upper", None, "delta2 > delta")]
    for ev, tt, text in events:
        v = A.violation_rate(ds, ev, delta=delta, t=tt if tt is not None else ts[0] if ts else None,
                             confidence=confidence).compute()
        name = ev if tt is None or len(ts) == 1 else f"{ev}_t{tt}"
        md += [f"### {name}: {text}", "", _rate_table(v), ""]
        fig(f"violations_{name}", P.plot_violation_rates, v, title=f"violations at delta = {delta}: {text}")

    # 4. power laws
    md += ["## Power laws in d1 (least squares on logs, trials pooled)", "",
           "lambda_min(M0) and lambda_max(M0) against d1: E[M0] is linear in d1 (Eq. 56), so both "
           "exponents tend to 1 once d1 >> n.", ""]
    if ds.sizes["d1"] >= 2:
        for var in ("lambda_min_M0", "lambda_max_M0"):
            f = A.fit_power_law(ds[var], "d1").compute()
            md += [f"### {var}", "", _table(f, ["exponent", "stderr", "prefactor", "npoints", "r2"]), ""]
    else:
        md += ["_one d1 value: no fit_", ""]

    # 5. width threshold
    thr = A.width_threshold(ds, level=level).compute()
    md += [f"## Width threshold: smallest d1 with margin > 1 (Eq. 9) in {level:.0%} of trials", "",
           "Interpolated on the log-d1 grid; NaN: never reached on the grid; censored: reached at the smallest "
           "d1. Paper: d1* ~ n^{3/2} (Eq. 21), n^{5/3} without the bound on V_k (App. E).", "",
           _table(thr.drop_vars("fraction"), ["d1_star", "censored"]), ""]
    if "n" in ds.dims and ds.sizes["n"] >= 2:
        fit_ = A.fit_threshold_exponent(thr).compute()
        md += ["Fitted exponent of d1* in n:", ""] + [f"- {line}" for line in A.threshold_verdict(fit_)] + [""]
        fig("width_threshold", P.plot_threshold_fit, thr, fit_)
    elif A.CASE_DIM in ds.dims and ds.sizes[A.CASE_DIM] >= 2:
        md += ["The width law along the linked cases is fitted in the next section.", ""]
    else:
        skipped.append("width_threshold: not drawn, the study has one value of n (the exponent needs two or more)")

    # 5b. the scaling claims with intervals (rmt_engine.report.scaling)
    from .scaling_section import scaling_section  # noqa: PLC0415

    md += scaling_section(ds, fig, level=level)

    # 6. c0 spike
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

    # 7. the deterministic equivalent of the spectrum (rmt_engine.theory.asymptotics)
    from .asymptotics_section import asymptotics_section  # noqa: PLC0415

    md += asymptotics_section(ds, fig, _table, delta=delta)

    # 8. gradient descent from the same initialization (studies with a [train] table)
    if "gd_status" in ds:
        from .training.section import training_section  # noqa: PLC0415

        md += training_section(ds, fig, level=level, confidence=confidence)

    md += ["## Figures", ""] + [f"![{k}]({v})" for k, v in figs.items()] + [""]
    if skipped:
        md += ["Figures left out:", ""] + [f"- {s}" for s in skipped] + [""]
    if failures:
        md += ["**Figures that FAILED:**", ""] + [f"- {s}" for s in failures] + [""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    if failures:
        raise ReportError(f"{len(failures)} figure(s) failed: " + "; ".join(failures), path, failures)
    return path


def _rate_table(v) -> str:
    """A violation-rate table in which a grid point with no counted trial reads ``undefined``."""
    v = A.squeeze_grid(v, keep_one=True)
    df = v[["rate", "lo", "hi", "successes", "trials"]].to_dataframe().reset_index()
    idx = [c for c in df.columns if c in v.dims]
    cols = idx + ["rate", "lo", "hi", "violations/trials"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        if not row["trials"] > 0:
            vals = ["undefined"] * 4
        else:
            vals = [_fmt(row["rate"]), _fmt(row["lo"]), _fmt(row["hi"]), f"{int(row['successes'])}/{int(row['trials'])}"]
        lines.append("| " + " | ".join([str(row[c]) for c in idx] + vals) + " |")
    return "\n".join(lines)
