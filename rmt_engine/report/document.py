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
from .format import fmt, markdown_table


_fmt = fmt  # the reports' one number format (rmt_engine.report.format)


def _rows(ds, columns, cell=None, hidden=()):
    """``(index, rows, levels)`` of a Dataset over its (squeezed) grid dims: the varying axes label the
    rows, then ``columns``; ``cell(column, row)`` may give a cell's text (None: the number format) and
    may read the ``hidden`` variables, which are not shown."""
    ds = A.squeeze_grid(ds, keep_one=True)
    sub = ds[list(columns) + list(hidden)]
    if not sub.dims:  # a reduction over the only varying axis (e.g. d1* when only d1 varies): one row
        sub = sub.expand_dims("_row")
    df = sub.to_dataframe().reset_index()
    idx = [c for c in df.columns if c not in columns and c not in hidden and c in ds.dims]
    levels = [[str(v) for v in np.asarray(ds[c].values).tolist()] for c in idx]
    rows = []
    for _, row in df.iterrows():
        vals = []
        for c in columns:
            txt = cell(c, row) if cell is not None else None
            vals.append(_fmt(row[c]) if txt is None else txt)
        rows.append([str(row[c]) for c in idx] + vals)
    return idx, rows, levels


def _table(ds, columns, cell=None, hidden=()):
    """Markdown table of a Dataset over its (squeezed) grid dims: index columns then ``columns``; rows
    identical across the values of an axis are one row (``format.markdown_table``)."""
    idx, rows, levels = _rows(ds, columns, cell, hidden)
    return "\n".join(markdown_table(idx, list(columns), rows, levels))


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
    idx = [c for c in df.columns if c in codes.dims]
    missing = df[df["lower_undefined"].isna()]  # a partial cube's grid points not computed yet: no code at all
    bad = df[df["lower_undefined"].notna() & (df["lower_undefined"] != 0)]
    lines = []
    if not bad.empty:
        levels = [[str(v) for v in np.asarray(codes[c].values).tolist()] for c in idx]
        rows = [[str(row[c]) for c in idx] + [describe(row["lower_undefined"])] for _, row in bad.iterrows()]
        lines += [f"Lower bound at {A.t_label(ds, t)} **undefined** at {len(bad)} of {len(df) - len(missing)} computed "
                  "grid points (never counted as held):", ""] + markdown_table(idx, ["reason"], rows, levels) + [""]
    if not missing.empty:
        where = "; ".join(", ".join(f"{c}={row[c]}" for c in idx) for _, row in missing.iterrows())
        lines += [f"**Not computed** yet (partial cube): {len(missing)} of {len(df)} grid points ({where}).", ""]
    return "\n".join(lines)


def write_report(store, out, *, delta=None, level=0.95, t=None, confidence=0.95) -> Path:
    """Write ``report.md`` and figures for the cube at ``store`` into directory ``out``; return the .md path.

    ``t``: one Khatri-Rao order (an int or ``"auto"``); default every order of the cube. A figure
    that has nothing to show is not drawn and the report says why; a figure that fails (e.g.
    matplotlib missing) raises ``ReportError`` after ``report.md`` is written, naming it.
    ``level`` (the trial fraction of the width thresholds) and ``confidence`` (of the intervals) lie
    strictly in (0, 1); ``delta`` in [0, 1) (ValueError otherwise).
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
    ts = A.available_t(ds) if t is None else [t if t in A.SYMBOLIC_T else int(t)]
    for tt in ts:
        A.at_t(ds, tt)  # a ValueError naming the cube's orders for a t it does not have
    if delta is None:
        delta = 0.2
    if not (0.0 <= float(delta) < 1.0):
        raise ValueError(f"delta must lie in [0, 1), got {delta!r}")
    for name, p in (("level", level), ("confidence", confidence)):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p < 1.0:
            raise ValueError(f"{name} is a fraction of trials and must lie strictly between 0 and 1, got {p!r}")
    md = [f"# Report: {attrs.get('study_name', Path(store).name)}", ""]
    if attrs.get("study_description"):
        md += [str(attrs["study_description"]), ""]
    md += [f"- store: `{store}`" + (" (**partial**: missing trials read as NaN)" if partial else ""),
           f"- trials per grid point: {ds.sizes.get('trial')}; Khatri-Rao orders: "
           + "; ".join(A.t_label(ds, tt) for tt in ts) + f"; delta = {delta}",
           f"- rmt_engine {attrs.get('rmt_engine_version', '?')}, config hash `{attrs.get('config_hash', '?')}`",
           "- grid: " + ", ".join(f"{d}={list(np.asarray(ds[d].values).tolist())}" for d in A.ALL_AXES
                                  if d in ds.coords), ""]

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
        if partial and "done" in sub and not bool(sub["done"].any()):
            md.append(f"| {act} | every bound | not computed | not computed | not computed |")
            continue
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

    # 2. the Eq. 67 ratios: one table, a lower-bound column pair per t, the t-independent columns once
    md += _eq67_section(ds, ts, partial)
    fig("bounds_vs_width", P.plot_bounds_vs_width, ds, ts=ts, delta=delta)
    fig("delta_distributions", P.plot_delta_distributions, ds, delta=delta)

    # 3. violation rates: one table, a column per event
    md += [f"## Violation rates at delta = {delta} ({A.interval_label(confidence)} intervals)", "",
           "Each cell: violations/trials [interval of the rate]; `undefined`: the bound is undefined at that grid "
           "point (no trial is counted)"
           + ("; `not computed`: no trial of that grid point has run yet (partial cube)." if partial else "."), ""]
    computed = ds["done"].any("trial_block") if partial and "done" in ds else None
    events = [(ev, tt, text) for tt in ts for ev, text in
              (("eq67_lower_sharp", f"sigma_min(F) < sqrt((1-delta) eq58_lower_sharp), {A.t_label(ds, tt)}"),)]
    events += [("eq67_lower_hadamard", None, "sigma_min(F) < sqrt((1-delta) eq58_lower_hadamard)"),
               ("eq67_upper_sharp", None, "sigma_max(F) > sqrt((1+delta) eq58_upper_sharp)"),
               ("delta1", None, "delta1 > delta"), ("delta2", None, "delta2 > delta")]
    rates = []
    for ev, tt, text in events:
        v = A.violation_rate(ds, ev, delta=delta, t=tt if tt is not None else ts[0] if ts else None,
                             confidence=confidence).compute()
        name = ev if tt is None or len(ts) == 1 else f"{ev}_t{tt}"
        rates.append((name, ev, tt, text, v))
        md.append(f"- `{name}`: {text}")
    md += ["", _rate_table([(name, v) for name, _, _, _, v in rates], computed if partial else None), ""]
    lower = [(A.t_label(ds, tt), v) for name, ev, tt, _, v in rates if ev == "eq67_lower_sharp"]
    why = _undefined_words(ds, ts)
    fig("violations_eq67_lower_sharp", P.plot_violation_rates, lower if len(lower) > 1 else lower[0][1],
        title=f"violations at delta = {delta}: sigma_min(F) < sqrt((1-delta) eq58_lower_sharp)", why_undefined=why)
    for name, ev, tt, text, v in rates:
        if ev != "eq67_lower_sharp":
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
        md = md[:-4] + [f"## Power laws in d1: not fitted, the study has one width (d1 = {int(ds['d1'].values[0])})", ""]

    # 5. width threshold (a threshold in d1 needs two or more widths)
    if ds.sizes["d1"] < 2:
        skipped.append(f"width_threshold: not drawn, the study has one width (d1 = {int(ds['d1'].values[0])}): "
                       "no width threshold")
        thr = None
    else:
        thr = A.width_threshold(ds, level=level).compute()
        md += [f"## Width threshold: smallest d1 with margin > 1 (Eq. 9) in {level:.0%} of trials", "",
               "Interpolated on the log-d1 grid; NaN: never reached on the grid; censored: reached at the smallest "
               "d1. Paper: d1* ~ n^{3/2} (Eq. 21), n^{5/3} without the bound on V_k (App. E).", "",
               _table(thr.drop_vars("fraction"), ["d1_star", "censored"]), ""]
    if thr is None:
        pass
    elif "n" in ds.dims and ds.sizes["n"] >= 2:
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


def _short_t(ds, t) -> str:
    return f"t_{t}" if t in A.SYMBOLIC_T else f"t={t}"


def _undefined_words(ds, ts) -> dict:
    """``{(activation, t_label): reason}`` where the single-t lower bound at t is undefined at every grid point."""
    from ..theory.orders import describe  # noqa: PLC0415

    out = {}
    for tt in ts:
        v = A.at_t(ds, tt)
        if "lower_undefined" not in v:
            continue
        for act in np.asarray(ds["activation"].values).tolist():
            c = np.asarray(v["lower_undefined"].sel(activation=act).values, float).ravel()
            c = c[np.isfinite(c)]
            if c.size and (c != 0).all():
                out[(str(act), A.t_label(ds, tt))] = "; ".join(sorted({describe(int(x)) for x in c}))
    return out


def _eq67_section(ds, ts, partial) -> list[str]:
    """The Eq. 67 table: the lower ratio (q05, mean) per Khatri-Rao order, ``undefined (reason)`` where
    the bound is; then the t-independent ratios and deviations once."""
    from ..theory.orders import describe  # noqa: PLC0415
    import xarray as xr  # noqa: PLC0415

    tab, cols, codes = {}, [], {}
    for tt in ts:
        conc = A.concentration_summary(ds, quantiles=(0.05, 0.95), t=tt).compute()
        k = _short_t(ds, tt)
        tab[f"lower q05 {k}"] = conc["lower_ratio_q"].sel(quantile=0.05, drop=True)
        tab[f"lower mean {k}"] = conc["lower_ratio_mean"]
        cols += [f"lower q05 {k}", f"lower mean {k}"]
        v = A.at_t(ds, tt)
        if "lower_undefined" in v:
            tab[f"_code {k}"] = v["lower_undefined"].compute()
            codes[f"lower q05 {k}"] = codes[f"lower mean {k}"] = f"_code {k}"
    conc = A.concentration_summary(ds, quantiles=(0.05, 0.95), t=ts[0] if ts else None).compute()
    tab["hadamard mean"] = conc["hadamard_ratio_mean"]
    tab["upper mean"] = conc["upper_ratio_mean"]
    tab["upper q95"] = conc["upper_ratio_q"].sel(quantile=0.95, drop=True)
    for name in ("delta1", "delta2"):
        tab[f"{name} mean"] = conc[f"{name}_mean"]
        tab[f"{name} q95"] = conc[f"{name}_q"].sel(quantile=0.95, drop=True)
    cols += ["hadamard mean", "upper mean", "upper q95", "delta1 mean", "delta1 q95", "delta2 mean", "delta2 q95"]
    tab = xr.Dataset(tab)

    def cell(c, row):
        code = row.get(codes[c]) if c in codes else None
        if code is not None and np.isfinite(code) and code != 0 and not np.isfinite(row[c]):
            return f"undefined ({describe(int(code))})"
        return None

    head = ", ".join(A.t_label(ds, tt) for tt in ts)
    md = ["## Eq. 67: measured singular values against the sharp bounds", "",
          f"`lower` = sigma_min(phi(W0 X)) / eq67_lower_sharp per Khatri-Rao order ({head}; holds if >= 1; "
          "`undefined (reason)` where the bound is), `hadamard` the same against the all-orders bound, `upper` = "
          "sigma_max(phi(W0 X)) / eq67_upper_sharp (holds if <= 1); the bounds are at the study's bound_delta1/2. "
          "Measured delta1, delta2 of Eq. 67. Mean and 5%/95% quantiles over trials.", "",
          _table(tab, cols, cell=cell, hidden=sorted(set(codes.values()))), ""]
    for tt in ts:
        md.append(_undefined_table(ds, tt))
    return md


def _rate_table(rates, computed=None) -> str:
    """One violation-rate table, a column per event (``rates``: ``[(name, Dataset)]``, or one Dataset): each
    cell ``k/N [lo, hi]``; a grid point with no counted trial reads ``undefined``, or ``not computed``
    where ``computed`` (a boolean over the grid: any trial done) is False. Rows are collapsed."""
    if not isinstance(rates, list):
        rates = [("rate", rates)]
    cells, idx, levels, keys = {}, None, None, []
    for name, v in rates:
        i, rows, lev = _rate_rows(v, computed)
        if idx is None:
            idx, levels = i, lev
        for r in rows:
            lab = dict(zip(i, r[:len(i)]))  # the events' tables may order their axes differently
            key = tuple(lab.get(c, "") for c in idx)
            if key not in cells:
                keys.append(key)
                cells[key] = []
            cells[key].append(r[len(i)])
    rows = [list(k) + cells[k] for k in keys]
    return "\n".join(markdown_table(idx, [name for name, _ in rates], rows, levels))


def _rate_rows(v, computed=None):
    """(index, rows, levels) of one violation rate: a cell ``k/N [lo, hi]``, ``undefined`` or ``not computed``."""
    cols_in = ["rate", "lo", "hi", "successes", "trials"]
    order = [d for d in A.squeeze_grid(v, keep_one=True)[cols_in].dims]  # the table's columns, as without the mask
    if computed is not None:
        v = v.assign(computed=computed.broadcast_like(v["trials"]).transpose(*v["trials"].dims))
        cols_in.append("computed")
    v = A.squeeze_grid(v, keep_one=True)
    df = v[cols_in].to_dataframe(dim_order=order).reset_index()
    idx = [c for c in df.columns if c in v.dims]
    levels = [[str(x) for x in np.asarray(v[c].values).tolist()] for c in idx]
    rows = []
    for _, row in df.iterrows():
        if computed is not None and not row["computed"]:
            val = "not computed"
        elif not row["trials"] > 0:
            val = "undefined"
        else:
            val = f"{int(row['successes'])}/{int(row['trials'])} [{_fmt(row['lo'])}, {_fmt(row['hi'])}]"
        rows.append([str(row[c]) for c in idx] + [val])
    return idx, rows, levels
