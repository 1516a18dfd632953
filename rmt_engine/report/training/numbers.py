"""Gradient descent in a result cube: the statistics of a ``[train]`` study (its report section: ``train_section``).

Rule of this module: a trial whose field is NaN (a rate that could not be fitted, a cube region not
written, a ratio that is undefined) is never counted as a success nor as a failure -- it is left out,
and every fraction is reported with the number of trials it was computed from. Every statistic is a
function of the cube's per-trial fields (xarray in, xarray out, reducing over ``trial``); figures
(``rmt_engine.report.training.figures``) are drawn only where the cube's axes allow, else ``NothingToDraw``
says why.

What is compared with what (the paper's equations, see MATH.md and ``rmt_engine.montecarlo.train``):

- Convergence against width: ``P(gd_status == 0)`` (``h_K <= tol h_0`` within ``max_iters`` steps)
  beside ``P(margin > 1)`` (Eq. 9 with C = 1, the theorem's sufficient condition), with Clopper-Pearson
  intervals (``analysis.binomial_interval``). ``gd_thresholds``: the smallest d1 at which each
  reaches ``level`` (``analysis.width_threshold(event=...)``), and their ratio
  ``d1*(margin) / d1*(GD)`` -- how much wider the theory needs the network than GD does; with
  censoring (``ratio_bound``): a threshold at the smallest d1 is an upper bound on the true one, a
  threshold never reached is above the largest d1.
- Rate (Eq. 14): ``log(gd_rate) / log(gd_rate_theory)``, the number of Eq. 14 steps one measured
  step is worth (> 1: GD contracts faster than the theorem says); defined only where both rates lie
  in (0, 1). Beside it ``ntk_rate_ratio``, what linearized GD predicts for its slowest mode,
  ``2 log(1 - 2 lr sigma_min(J_K)^2) / log(1 - 2 lr mu^2) >= 2`` (the 2: the loss is the squared
  residual). ``eq14_envelope``: whether the recorded curve satisfies Eq. 14 itself,
  ``h_k / h_0 <= (1 - 2 lr mu^2)^k`` at every recorded k the trial reached.
- The ball of Eq. 6 (``gd_max_dist_over_rho <= 1``: Theorem 1/2's iterates never leave
  ``ball(Theta_0, rho)``) and Eq. 18's bound ``sigma_max(V_k) <= chi_max`` (``gd_max_sigma_V_over_chi``;
  with the default ``chi_max = sigma_max(V0)`` it is >= 1 by construction: the excess is what is measured).
- Lazy training (App. F): ``gd_rel_change_W``, ``gd_rel_change_V``, ``ntk_rel_change`` and the record's
  ``lazy_ratio = beta / nu^2`` against ``w2 / w1`` along the (w1, w2) pairs of the grid that share a
  product ``w1 w2`` (``lazy_groups``; the grid axes are crossed, so a product is fixed by selecting
  an anti-diagonal of a geometric (w1, w2) grid).
- Loss curves: median over trials of ``h_k / h_0`` (``held_curves``: a trial that stopped at K is held
  at ``h_K / h_0`` after K, so the median is not taken over the slow trials only).
"""

from __future__ import annotations

import math
from itertools import product as _product

import numpy as np

from .. import analysis as A
from ..format import fmt
from ...study.store import ALL_AXES

#: The per-trial fields the section reads besides the TRAIN_FIELDS (all optional but margin).
RECORD_FIELDS = ("margin", "mu", "rho", "lazy_ratio", "eq19_scale", "eta_max")
#: The lazy-training measures (App. F), in the order drawn.
LAZY_MEASURES = {
    "gd_rel_change_W": r"$\|W_K - W_0\|_F / \|W_0\|_F$",
    "gd_rel_change_V": r"$\|V_K - V_0\|_F / \|V_0\|_F$",
    "ntk_rel_change": r"$\|J_KJ_K^T - J_0J_0^T\|_2 / \|J_0J_0^T\|_2$",
    "lazy_ratio": r"$\beta / \nu^2$ at $\Theta_0$ (Eq. 82-85)",
}
#: ``ratio_bound`` codes of ``gd_thresholds``.
RATIO_EXACT, RATIO_AT_LEAST, RATIO_AT_MOST, RATIO_UNDEFINED = 0, 1, 2, 3
RATIO_WORDS = {RATIO_EXACT: "=", RATIO_AT_LEAST: ">=", RATIO_AT_MOST: "<=", RATIO_UNDEFINED: "undefined"}
QUANTILES = (0.05, 0.5, 0.95)
#: Relative slack for rounding in the Eq. 14 envelope test (h_k / h_0 is exact to ~1e-15).
ENVELOPE_RTOL = 1e-9


def _xr():
    import xarray as xr  # noqa: PLC0415

    return xr


# ------------------------------------------------------------------------------------------------
# per-trial events and quantities


_event = A._event  # ``cond`` as 1.0 / 0.0, NaN where any input is NaN


def converged(ds):
    """Per trial: 1 where GD converged (``gd_status == 0``), 0 where it did not (1 max_iters, 2 diverged), NaN unwritten."""
    s = ds["gd_status"]
    return _event(s == 0, s)


def margin_exceeds(ds, threshold=1.0):
    """Per trial: 1 where the Eq. 9 margin exceeds ``threshold``, 0 where not, NaN where it is NaN."""
    m = ds["margin"]
    return _event(m > threshold, m)


def rate(event, confidence=0.95):
    """Fraction of trials with ``event == 1`` and its Clopper-Pearson interval (``analysis.RATE_METHOD``): Dataset ``rate, lo, hi, successes, trials``."""
    return A.holding_rate(event, confidence=confidence, method=A.RATE_METHOD)


def convergence_rates(ds, confidence=0.95):
    """``conv_*`` (GD converged) and ``margin_*`` (margin > 1) rates per grid point, Clopper-Pearson intervals."""
    xr = _xr()
    out = xr.Dataset()
    for prefix, ev in (("conv", converged(ds)), ("margin", margin_exceeds(ds))):
        r = rate(ev, confidence)
        for k in r.data_vars:
            out[f"{prefix}_{k}"] = r[k]
    out.attrs.update(confidence=float(confidence), method=A.RATE_METHOD)
    return out


def _ratio_bound(gd, cg, mg, cm, d1_max):
    """(ratio, code) of ``d1*(margin) / d1*(GD)`` with the censoring of both thresholds."""
    gd_ok, m_ok = np.isfinite(gd), np.isfinite(mg)
    if gd_ok and m_ok:
        if cg and cm:
            return math.nan, RATIO_UNDEFINED
        if cm:  # the margin threshold is at or below the smallest d1
            return mg / gd, RATIO_AT_MOST
        return mg / gd, RATIO_AT_LEAST if cg else RATIO_EXACT
    if gd_ok:  # margin never reached: its threshold lies above the largest d1
        return d1_max / gd, RATIO_AT_LEAST
    if m_ok:  # GD never reached: its threshold lies above the largest d1
        return (mg / d1_max, RATIO_AT_MOST) if not cm else (math.nan, RATIO_UNDEFINED)
    return math.nan, RATIO_UNDEFINED


def gd_thresholds(ds, level=0.95):
    """The empirical GD width threshold beside the theory's (Eq. 9), per grid point other than d1.

    ``d1_star_gd``: smallest d1 (log-interpolated, ``analysis.width_threshold``) at which GD converged
    in a fraction ``level`` of trials; ``d1_star_margin``: the same for ``margin > 1``; ``censored_*``:
    reached at the smallest d1 already; ``ratio = d1_star_margin / d1_star_gd`` and ``ratio_bound``
    (``RATIO_WORDS``): "=" exact on the grid, ">=" a lower bound (GD censored, or the margin never
    reaching ``level``: then ``ratio = d1_max / d1_star_gd``), "<=" an upper bound, "undefined".
    """
    xr = _xr()
    g = A.width_threshold(ds, level=level, event=converged(ds))
    m = A.width_threshold(ds, level=level, event=margin_exceeds(ds))
    out = xr.Dataset({"d1_star_gd": g["d1_star"], "censored_gd": g["censored"],
                      "d1_star_margin": m["d1_star"], "censored_margin": m["censored"]}).compute()
    d1_max = float(np.max(ds["d1"].values))
    vals = [np.asarray(out[k].values) for k in ("d1_star_gd", "censored_gd", "d1_star_margin", "censored_margin")]
    ratio = np.full(vals[0].shape, np.nan)
    code = np.full(vals[0].shape, RATIO_UNDEFINED, dtype=np.int64)
    for idx in np.ndindex(*vals[0].shape):
        ratio[idx], code[idx] = _ratio_bound(*(float(v[idx]) for v in vals), d1_max)
    out["ratio"] = (out["d1_star_gd"].dims, ratio)
    out["ratio_bound"] = (out["d1_star_gd"].dims, code)
    out.attrs.update(level=float(level), d1_min=float(np.min(ds["d1"].values)), d1_max=d1_max)
    return out


def log_rate_ratio(ds):
    """Per trial ``log(gd_rate) / log(gd_rate_theory)``: how many Eq. 14 steps one GD step is worth.

    NaN unless both rates lie strictly in (0, 1) (a rate >= 1 does not contract; NaN: not fitted).
    """
    r, th = ds["gd_rate"], ds["gd_rate_theory"]
    ok = (r > 0) & (r < 1) & (th > 0) & (th < 1)
    out = (np.log(r.where(ok)) / np.log(th.where(ok))).where(ok).rename("log_rate_ratio")
    out.attrs = {"train": ds.attrs.get("train"), "long_name": "log(gd_rate) / log(gd_rate_theory)"}
    return out


def ntk_rate_ratio(ds, *, final=True):
    """Per trial: the log-rate ratio that GD linearized at Theta_K (``final``) or Theta_0 would have on its
    slowest mode, ``2 log(1 - 2 lr sigma_min(J)^2) / log(1 - 2 lr mu^2)``.

    On the quadratic loss the residual of linearized GD contracts by ``1 - 2 lr lambda`` per step along an
    eigenvector of ``J J^T`` with eigenvalue lambda, so the loss contracts by its square; the slowest mode has
    ``lambda = sigma_min(J)^2 = mu_ntk^2 >= mu^2`` (``rmt_engine.montecarlo.train``): this ratio is >= 2, and a measured
    ratio above it means GD stopped before its residual reached the slowest mode. NaN where a factor is not
    in (0, 1).
    """
    m = ds["mu_ntk_final" if final else "mu_ntk"]
    lr, mu = ds["gd_lr"], ds["mu"]
    a, b = 1 - 2 * lr * m**2, 1 - 2 * lr * mu**2
    ok = (a > 0) & (a < 1) & (b > 0) & (b < 1)
    return (2 * np.log(a.where(ok)) / np.log(b.where(ok))).where(ok).rename("ntk_rate_ratio")


def held_curves(ds):
    """``gd_loss`` with each trial held at its final value ``h_K / h_0`` (``gd_final_loss``) after it stopped.

    The curve of a trial is NaN after its last iteration K (``curve_on_grid``); holding it at
    ``h_K / h_0`` (<= tol for a converged trial, > 1e6 or inf for a diverged one) keeps stopped
    trials in the median instead of leaving only the slow ones. A trial without a curve stays NaN.
    """
    curve = ds["gd_loss"]
    last = ds["gd_final_loss"]
    held = curve.where(curve.notnull(), last)
    return held.where(np.isfinite(curve.isel(iteration=0, drop=True)))


def eq14_envelope(ds):
    """Per trial: 1 where ``h_k / h_0 <= (1 - 2 lr mu^2)^k`` (Eq. 14, C = 1) at every recorded k <= K, else 0.

    NaN where the trial has no curve or ``gd_rate_theory`` is not in (0, 1]. Only grid points the
    trial reached count (NaN after K); a slack of ``ENVELOPE_RTOL`` absorbs rounding.
    """
    curve = ds["gd_loss"]
    th = ds["gd_rate_theory"]
    k = curve["iteration"].astype(float)
    okth = (th > 0) & (th <= 1)
    env = np.exp(k * np.log(th.where(okth)))
    reached = curve.notnull()
    below = (curve <= env * (1 + ENVELOPE_RTOL)) | ~reached
    holds = below.all("iteration")
    valid = okth & reached.any("iteration")
    return holds.astype(float).where(valid)


def quantiles(da, q=QUANTILES, dim="trial"):
    """NaN-skipping quantiles over ``dim`` (a ``quantile`` dim); NaN where no trial is finite."""
    da = da.where(np.isfinite(da))
    some = da.count(dim) > 0
    return da.where(some, 0.0).quantile(list(q), dim=dim).where(some)


# ------------------------------------------------------------------------------------------------
# lazy training: the (w1, w2) pairs sharing a product


def lazy_groups(ds, *, min_pairs=2, rtol=1e-6):
    """The (w1, w2) pairs of the grid grouped by product ``w1 w2``: a list of dicts, most pairs first.

    Each: ``product``, ``pairs`` (list of (w1, w2), ascending in ``w2 / w1``), ``ratios``. Only
    products shared by at least ``min_pairs`` pairs with distinct ratios are returned. Products are
    matched in log scale to ``rtol``.
    """
    w1s = [float(v) for v in np.asarray(ds["w1"].values)]
    w2s = [float(v) for v in np.asarray(ds["w2"].values)]
    groups: list[dict] = []
    for a, b in _product(w1s, w2s):
        p = a * b
        for g in groups:
            if abs(math.log(p / g["product"])) <= rtol:
                g["pairs"].append((a, b))
                break
        else:
            groups.append({"product": p, "pairs": [(a, b)]})
    out = []
    for g in groups:
        pairs = sorted(g["pairs"], key=lambda ab: ab[1] / ab[0])
        ratios = [b / a for a, b in pairs]
        if len(set(round(math.log(r), 9) for r in ratios)) >= min_pairs:
            out.append({"product": g["product"], "pairs": pairs, "ratios": ratios})
    out.sort(key=lambda g: (-len(g["pairs"]), g["product"]))
    return out


def shown_groups(groups, most=5):
    """The product groups the figure and the table show, ascending in product: the one with the most pairs
    and up to ``most - 1`` others with >= 3 pairs, nearest to it in log product."""
    if not groups:
        return []
    main = groups[0]
    rest = [g for g in groups[1:] if len(g["pairs"]) >= 3]
    rest.sort(key=lambda g: abs(math.log(g["product"] / main["product"])))
    return sorted([main] + rest[: most - 1], key=lambda g: g["product"])


def along_product(ds, group):
    """``ds`` along the pairs of one ``lazy_groups`` entry: a new dim ``w2_over_w1`` replaces w1 and w2
    (their values stay as coordinates along it)."""
    xr = _xr()
    parts = [ds.sel(w1=a, w2=b) for a, b in group["pairs"]]
    out = xr.concat(parts, dim="w2_over_w1", coords="minimal", compat="override", join="override")
    out = out.assign_coords(w2_over_w1=("w2_over_w1", np.asarray(group["ratios"], dtype=float)),
                            w1=("w2_over_w1", np.asarray([a for a, _ in group["pairs"]], dtype=float)),
                            w2=("w2_over_w1", np.asarray([b for _, b in group["pairs"]], dtype=float)))
    out.attrs["product"] = float(group["product"])
    return out


def lazy_summary(ds, group, q=QUANTILES):
    """Quantiles over trials of the ``LAZY_MEASURES`` and the converged fraction along one product group."""
    xr = _xr()
    sub = along_product(ds, group)
    out = xr.Dataset()
    for k in LAZY_MEASURES:
        if k in sub:
            out[k] = quantiles(sub[k], q)
    out["converged"] = converged(sub).mean("trial", skipna=True)
    if "eq19_scale" in sub:
        e = sub["eq19_scale"]
        out["eq19_scale"] = e.isel(trial=0, drop=True) if "trial" in e.dims else e
    out.attrs["product"] = float(group["product"])
    return out


# ------------------------------------------------------------------------------------------------
# Markdown


_fmt = fmt  # the reports' one number format (rmt_engine.report.format)


def _varying(ds, exclude=()):
    """Grid axes of ``ds`` with more than one value (in GRID_AXES order), minus ``exclude``."""
    return [d for d in ALL_AXES if d in ds.dims and ds.sizes[d] > 1 and d not in exclude]


def _index_rows(ds, dims, keep=None):
    """Every combination of ``dims`` as a labels dict (those ``keep(labels)`` accepts, when given)."""
    values = [list(np.asarray(ds[d].values).tolist()) for d in dims]
    for combo in _product(*values):
        lab = dict(zip(dims, combo))
        if keep is None or keep(lab):
            yield lab


def _pair_filter(ds):
    """``(keep, note)``: with (w1, w2) pairs sharing a product, per-grid-point tables list only the pairs of
    the product shared by the most pairs (the lazy-training table has the rest); else no filter."""
    groups = lazy_groups(ds)
    if not groups:
        return None, ""
    main = {(round(a, 12), round(b, 12)) for a, b in groups[0]["pairs"]}

    def keep(lab):
        return (round(float(lab.get("w1", 1.0)), 12), round(float(lab.get("w2", 1.0)), 12)) in main \
            if "w1" in lab and "w2" in lab else True

    return keep, (f"Rows: only the (w1, w2) pairs with w1 w2 = {groups[0]['product']:.4g} (the product most pairs share); "
                  "the summary above pools every pair.")


def _md(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


def _sel(da, labels):
    use = {k: v for k, v in labels.items() if k in da.dims}
    return da.sel(use) if use else da


def _scalar(da, labels):
    v = _sel(da, labels)
    for d in ALL_AXES:
        if d in v.dims:
            v = v.isel({d: 0})
    return float(np.asarray(v.values).reshape(-1)[0]) if np.asarray(v.values).size else math.nan


def _frac_text(k, n):
    return f"{int(k)}/{int(n)}" if n > 0 else "0/0"


def _count(ev):
    """(successes, trials) of a 1/0/NaN event array, all trials pooled."""
    v = np.asarray(ev.values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    return int(v.sum()), int(v.size)


def _pooled_line(name, ev, mask=None, confidence=0.95):
    if mask is not None:
        ev = ev.where(mask == 1)
    k, n = _count(ev)
    if n == 0:
        return f"{name}: no trial"
    lo, hi = A.binomial_interval(k, n, confidence)
    return f"{name}: {k}/{n} = {k / n:.3g} ({A.interval_label(confidence)} [{float(lo):.3g}, {float(hi):.3g}])"


def _settings(ds):
    tr = ds.attrs.get("train") or {}
    lr = tr.get("lr")
    scale = tr.get("lr_scale", 1.0)
    step = (f"lr = {scale:g} x Eq. 13's eta_max" if lr is None else f"lr = {scale:g} x {lr:g}")
    return (f"max_iters = {tr.get('max_iters', '?')}, tol = {tr.get('tol', '?')} (converged: h_K <= tol h_0), "
            f"{step}, loss recorded at `{tr.get('record_every', '?')}` iterations")


def _load(ds):
    from ...montecarlo.train import CURVE_NAME, TRAIN_FIELDS  # noqa: PLC0415

    names = [k for k in list(TRAIN_FIELDS) + list(RECORD_FIELDS) + [CURVE_NAME] if k in ds]
    return ds[names].load()
