"""Estimators for the paper's scaling claims: width thresholds with intervals, exponent fits, verdicts.

The claim (Eq. 20-21, MATH.md "Width"): the smallest width ``d1*`` at which an event holds
with probability ``>= level`` (default: the Eq. 9 margin exceeds 1 in 95% of the trials)
obeys ``d0 d1* ~ n^{3/2}`` along ``n ~ d0^t`` (``n^{5/3}`` without the bound on ``V_k``,
Appendix E). And the concentration of Eq. 67: ``delta1 ~ (n / d1)^{1/2}``.

Pipeline (xarray in, xarray out; every result carries its coordinates):

1. ``threshold(event)``: per grid point (every dim of ``event`` but ``dim`` and ``trial``) the
   crossing ``d*`` of ``level`` by the empirical probability ``p(dim)``, interpolated in
   ``log dim``, with an interval (exact binomial bands or a bootstrap over trials) and
   censoring flags.
   ``threshold(event, method="quantile")`` instead: the ``level``-quantile of the per-trial
   crossing widths (``crossing_widths``: per trial, the smallest width from which the event holds
   at every larger grid width) with an exact, distribution-free order-statistic interval.
2. ``fit_scaling(thr, "n", y_factor="d0")``: weighted least squares ``log y = a + b log x``
   (``y = d0 d1*``), the interval widths as the weights, with a z-score and a verdict per
   prediction (Eq. 21: 3/2, App. E: 5/3). ``fit_power_law_2d`` separates ``d1* ~ A n^b d0^c``
   on a grid where n and d0 vary independently.
   Several draws of the data X per case (cubes that differ in ``data_seed``, concatenated along a
   ``data_draw`` dim): ``data_draw_variance`` splits the spread of log crossing widths into its X
   and W parts, and ``hierarchical_bootstrap_threshold`` gives a threshold interval that resamples
   both (data draws, then trials).
3. ``concentration_law(ds)``: ``delta1 ~ C (n/d1)^a`` per activation (expected ``a = 1/2``).
4. ``claims_table(rows)``: a Markdown table "claim | prediction | measured (interval) | verdict";
   ``fit_rows(fit, claim)`` builds its rows from a fit.

Censoring: a threshold reached at the smallest grid value is only known to be ``<=`` it
(``censored_below``; its interval's lower end is 0); one never reached on the grid is NaN
(``censored_above``; its interval is ``[largest grid value, inf)``). An interval end that the
data cannot fix is 0 or ``inf``, never a grid value pretending to be a bound: such a point
carries no weight in ``fit_scaling`` and is left out of the weighted fit.

A note on ``level = 0.95``: the exact (Clopper-Pearson) lower confidence bound on a
proportion with all ``m`` trials successful is ``((1 - confidence)/2)^(1/m)``, which is
below 0.95 for ``m < 72`` at ``confidence = 0.95`` (0.912 at m = 40). With fewer trials per
grid value the binomial interval of ``d*`` is unbounded above (``hi = inf``) whatever the
data: plan >= 100 trials per grid value, or use the bootstrap interval (which is narrower
but covers less than nominal, 0.84-0.95 in the synthetic settings of ``threshold``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .analysis import THRESHOLD_EXPONENTS, binomial_interval

#: Predictions of the exponent of ``d0 d1*`` in ``n`` (Eq. 21; App. E without the V_k bound).
SCALING_PREDICTIONS = dict(THRESHOLD_EXPONENTS)
#: Expected exponent ``a`` of ``delta1 ~ C (n/d1)^a`` (Eq. 67 concentration; matrix Chernoff scale).
CONCENTRATION_EXPONENT = 0.5


def _xr():
    import xarray as xr  # noqa: PLC0415

    return xr


def _check_prob(name, v):
    v = float(v)
    if not (0.0 < v < 1.0):
        raise ValueError(f"{name} must be strictly between 0 and 1, got {v!r}")
    return v


def _zcrit(confidence):
    from scipy import stats  # noqa: PLC0415

    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def _load(da):
    return da.compute() if getattr(da, "chunks", None) else da


# --------------------------------------------------------------------------- threshold


def _crossings(x, p, level, eps=None):
    """Vectorized first crossing of ``level`` by ``p`` along its last axis (x ascending, > 0).

    ``x``: (G,); ``p``: (..., G), NaN = no data at that grid value. For each curve: the first
    index ``k`` with ``p[k] >= level``; the crossing is interpolated linearly in ``log x``
    between ``k`` and the last grid value ``j < k`` with data (``p[j] < level`` there). Returns
    ``(x_star, below, above, empty)``:

    - ``x_star``: the crossing (``x[k]`` when there is no ``j``); NaN when never reached;
    - ``below``: reached at the first grid value with data (the truth is ``<= x_star``);
    - ``above``: never reached although some grid value has data;
    - ``empty``: no grid value has data.

    Equal to ``analysis._crossing`` on curves without NaN (tested).
    """
    x = np.asarray(x, dtype=float)
    p = np.asarray(p, dtype=float)
    g = x.shape[0]
    lx = np.log(x)
    fin = np.isfinite(p)
    hit = fin & (p >= level)
    any_hit = hit.any(-1)
    k = np.argmax(hit, axis=-1)
    idx = np.where(fin, np.arange(g), -1)
    last = np.maximum.accumulate(idx, axis=-1)
    prev = np.concatenate([np.full(last.shape[:-1] + (1,), -1), last[..., :-1]], axis=-1)
    j = np.take_along_axis(prev, k[..., None], -1)[..., 0]
    jj = np.maximum(j, 0)
    p1 = np.take_along_axis(p, k[..., None], -1)[..., 0]
    p0 = np.take_along_axis(p, jj[..., None], -1)[..., 0]
    interp = any_hit & (j >= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        if eps is None:
            f = (level - p0) / (p1 - p0)
        else:
            e = np.broadcast_to(eps, p.shape)
            e1 = np.take_along_axis(e, k[..., None], -1)[..., 0]
            e0 = np.take_along_axis(e, jj[..., None], -1)[..., 0]
            g1 = _logit(np.clip(p1, e1, 1 - e1))
            g0 = _logit(np.clip(p0, e0, 1 - e0))
            f = np.clip((_logit(level) - g0) / (g1 - g0), 0.0, 1.0)
        xi = np.exp(lx[jj] + f * (lx[k] - lx[jj]))
    xs = np.where(interp, xi, x[k])
    xs = np.where(any_hit, xs, np.nan)
    empty = ~fin.any(-1)
    return xs, any_hit & (j < 0), ~any_hit & ~empty, empty


def _logit(p):
    return np.log(p) - np.log1p(-p)


def _band_interval(x, pl, ph, level, eps=None):
    """Interval of the crossing from the pointwise bands: ``[crossing(ph), crossing(pl)]``.

    The upper band reaches ``level`` first, so its crossing is the lower end. Unfixable ends:
    lower end 0 when ``ph`` already reaches ``level`` at the first grid value, ``x_max`` (of the
    grid values with data) when ``ph`` never does; upper end ``inf`` when ``pl`` never does.
    """
    xl, bl, al, _ = _crossings(x, ph, level, eps)
    xh, _, ah, _ = _crossings(x, pl, level, eps)
    xmax = _last_with_data(x, ph)
    lo = np.where(bl, 0.0, np.where(al, xmax, xl))
    hi = np.where(ah, np.inf, xh)
    return lo, hi


def _last_with_data(x, p):
    fin = np.isfinite(p)
    g = x.shape[0]
    last = np.where(fin, np.arange(g), -1).max(-1)
    return np.where(last >= 0, np.asarray(x, float)[np.maximum(last, 0)], np.nan)


def _bootstrap_interval(x, k, m, level, confidence, n_boot, seed, eps=None):
    """Percentile bootstrap over trials of the crossing; ``k, m``: (..., G) successes, trials.

    Resampling the ``m`` valid trials of a grid value with replacement gives a success count
    ``k* ~ Binomial(m, k/m)`` exactly, independently per grid value: that is how it is drawn
    (``numpy.random.default_rng(seed)``; one stream for the whole call, so the result does not
    depend on chunking). Replicates reached at the first grid value count as 0, never reached
    as ``inf``; the interval is the ``(1 -+ confidence)/2`` order statistics (``lower`` /
    ``higher``: never interpolated across a censored replicate). Also returns the fractions of
    replicates censored below / above.
    """
    rng = np.random.default_rng(seed)
    mm = np.asarray(m, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        phat = np.where(mm > 0, k / np.maximum(mm, 1), 0.0)
    kb = rng.binomial(np.broadcast_to(mm, (n_boot,) + mm.shape), np.broadcast_to(phat, (n_boot,) + mm.shape))
    with np.errstate(invalid="ignore", divide="ignore"):
        pb = np.where(mm > 0, kb / np.maximum(mm, 1), np.nan)
    xs, below, above, empty = _crossings(x, pb, level, eps)
    vals = np.where(below, 0.0, np.where(above, np.inf, xs))
    a = 1.0 - confidence
    lo = np.quantile(vals, a / 2.0, axis=0, method="lower")
    hi = np.quantile(vals, 1.0 - a / 2.0, axis=0, method="higher")
    none = empty.all(0)
    lo = np.where(none, np.nan, lo)
    hi = np.where(none, np.nan, hi)
    return lo, hi, below.mean(0), above.mean(0)


def threshold(event, level=0.95, dim="d1", *, method="interp", interval="binomial", confidence=0.95,
              n_boot=400, seed=0, trial_dim="trial"):
    """Smallest ``dim`` value at which ``P(event)`` reaches ``level``, with a confidence interval.

    ``event``: per-trial DataArray, 1 = holds, 0 = fails, NaN = missing (bool accepted), dims
    ``(..., dim, trial)``, e.g. ``analysis.bound_events(ds)["margin"]`` (Eq. 9 margin > 1) or
    ``scaling_events(ds)["gd_converged"]``. Over the remaining dims ``R`` (e.g. activation, n,
    d0, or a linked ``case``; their coordinates, such as ``n`` and ``d0`` along ``case``, are
    kept):

    - ``p(x) = k(x) / m(x)``: successes over valid trials at each grid value ``x`` of ``dim``;
    - ``d_star``: the first crossing of ``level`` by ``p``, ``x`` ascending, interpolated
      between the first grid value with ``p >= level`` and the grid value below it, in
      ``log x``. ``method="interp"``: ``p`` linear in ``log x`` (the rule of
      ``analysis.width_threshold``; grid values without trials are skipped). Where the curve
      is concave (near p = 1) this overestimates ``d*`` by up to a grid step (+11% for a
      logistic of slope 3 in log x on a factor-2 grid). ``method="logit"``: ``logit p``
      linear in ``log x`` (exact for a logistic curve), ``p`` clipped to ``[1/(2m), 1 -
      1/(2m)]``; less biased with many trials (>= 100), more with few (the clip pulls a
      ``p = 1`` point down). ``method="quantile"``: a different estimator, the ``level``-quantile
      of the per-trial crossing widths (``crossing_widths``) with an exact order-statistic
      interval: see ``_quantile_threshold`` below for its input, output and conventions (it
      takes ``event`` or a ``crossing_widths`` Dataset; ``interval`` must stay "binomial");
    - ``[lo, hi]``, ``interval="binomial"``: Clopper-Pearson bands ``p_lo(x) <= p <= p_hi(x)``
      (two-sided ``confidence`` at each x) inverted: ``lo`` = crossing of ``p_hi``, ``hi`` =
      crossing of ``p_lo``, so ``lo <= d_star <= hi``. Conservative: measured coverage of the
      true point 0.94-1.00 (levels 0.8 and 0.95, logistic curves of slope 1-3 in log d1,
      40-200 trials, 8 widths a factor 2 apart; lowest, 0.936, on the steepest curve, where
      the interpolation bias above is largest against the interval's width; 0.997-0.999 with
      ``method="logit"``). ``hi = inf`` when ``p_lo`` never reaches ``level``: always
      so when ``m < 72`` at level = confidence = 0.95 (module docstring);
    - ``[lo, hi]``, ``interval="bootstrap"``: percentile interval of the crossing over
      ``n_boot`` resamplings of the trials at each grid value (deterministic ``seed``).
      Narrower, and always finite-ended when the data allow, but it covers less than
      nominal: measured 0.90-0.95 in the settings above, 0.84 with 40 trials on a shallow
      curve (slope 1) where ``p = 1`` grid values have no bootstrap variability, and
      0.81-0.92 with ``method="logit"``;
    - ``censored_below``: ``d_star`` is the first grid value (truth ``<= d_star``; ``lo = 0``);
      ``censored_above``: never reached (``d_star`` NaN, ``lo`` = largest grid value,
      ``hi = inf``). Neither flag where there are no trials at all (``reason = "no data"``).

    Returns a Dataset over ``R``: ``d_star, lo, hi, censored_below, censored_above, reason``
    (``"ok" | "censored below" | "censored above" | "no data"``) and over ``R + (dim,)``: the
    curve ``p``, its bands ``p_lo, p_hi``, ``successes``, ``trials``. Bootstrap adds
    ``boot_below, boot_above`` (fractions of censored replicates). Dask inputs are reduced
    over trials and loaded (the result is the size of the grid).
    """
    xr = _xr()
    level = _check_prob("level", level)
    confidence = _check_prob("confidence", confidence)
    if method == "quantile":
        return _quantile_threshold(event, level, dim, interval, confidence, trial_dim)
    if method not in ("interp", "logit"):
        raise ValueError(f"unknown method {method!r}: 'interp' (p linear in log x), 'logit' or 'quantile'")
    if interval not in ("binomial", "bootstrap"):
        raise ValueError(f"unknown interval {interval!r}: 'binomial' or 'bootstrap'")
    if not isinstance(event, xr.DataArray):
        raise TypeError("event must be a per-trial xarray.DataArray (1/0/NaN)")
    for d in (dim, trial_dim):
        if d not in event.dims:
            raise ValueError(f"event has no {d!r} dim (its dims: {event.dims})")
    if interval == "bootstrap" and int(n_boot) < 1:
        raise ValueError("n_boot must be >= 1")
    ev = event.astype(float) if event.dtype == bool else event
    if dim not in ev.coords:
        raise ValueError(f"event has no coordinate for {dim!r}")
    ev = ev.sortby(dim)
    x = np.asarray(ev[dim].values, dtype=float)
    if not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise ValueError(f"the {dim!r} coordinate must be positive and finite (log interpolation)")
    valid = ev.notnull()
    k = _load(ev.where(valid, 0.0).sum(trial_dim))
    m = _load(valid.sum(trial_dim))
    bad = _load(((ev != 0) & (ev != 1) & valid).any())
    if bool(bad):
        raise ValueError("event must hold only 1, 0 or NaN")
    rest = [d for d in k.dims if d != dim]
    k = k.transpose(*rest, dim)
    m = m.transpose(*rest, dim)
    K = np.asarray(k.values, dtype=float)
    M = np.asarray(m.values, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        P = np.where(M > 0, K / np.where(M > 0, M, 1.0), np.nan)
    pl, ph = binomial_interval(K, M, confidence, method="clopper-pearson")
    eps = 0.5 / np.where(M > 0, M, 1.0) if method == "logit" else None
    xs, below, above, empty = _crossings(x, P, level, eps)
    if interval == "binomial":
        lo, hi = _band_interval(x, pl, ph, level, eps)
        extra = {}
    else:
        lo, hi, bb, ba = _bootstrap_interval(x, K, M, level, confidence, int(n_boot), seed, eps)
        extra = {"boot_below": bb, "boot_above": ba}
    lo = np.where(empty, np.nan, lo)
    hi = np.where(empty, np.nan, hi)
    reason = np.where(empty, "no data", np.where(below, "censored below", np.where(above, "censored above", "ok")))

    template = k.isel({dim: 0}, drop=True)
    template = template.drop_vars([c for c in template.coords if dim in k[c].dims], errors="ignore")

    def grid(a):
        return template.copy(data=np.asarray(a))

    def curve(a):
        return k.copy(data=np.asarray(a, dtype=float))

    out = xr.Dataset({"d_star": grid(xs), "lo": grid(lo), "hi": grid(hi),
                      "censored_below": grid(below), "censored_above": grid(above),
                      "reason": grid(reason.astype(str)),
                      **{n: grid(v) for n, v in extra.items()},
                      "p": curve(P), "p_lo": curve(pl), "p_hi": curve(ph),
                      "successes": curve(K), "trials": curve(M)})
    out.attrs.update(level=level, dim=dim, method=method, interval=interval, confidence=confidence,
                     equation="Eq. 9 / Eq. 21: smallest width at which the event holds with probability >= level")
    if interval == "bootstrap":
        out.attrs.update(n_boot=int(n_boot), seed=int(seed))
    return out


def scaling_events(ds, *, margin_threshold=1.0):
    """Per-trial events (1/0/NaN) for ``threshold``: those the cube's fields allow.

    - ``margin``: ``margin > margin_threshold`` (Eq. 9 convergence condition);
    - ``gd_converged``: ``gd_status == 0`` (gradient descent reached its tolerance; needs a
      ``[train]`` study).
    """
    xr = _xr()
    out = xr.Dataset()
    if "margin" in ds:
        v = ds["margin"]
        out["margin"] = (v > margin_threshold).astype(float).where(np.isfinite(v))
    if "gd_status" in ds:
        g = ds["gd_status"]
        out["gd_converged"] = (g == 0).astype(float).where(np.isfinite(g))
    return out


# --------------------------------------------------------------------------- per-trial crossing widths

#: Comparisons ``crossing_widths`` accepts for ``var <sense> threshold``.
_SENSES = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}


def _check_grid(da, dim, what="event"):
    """The ``dim`` coordinate of ``da`` as floats, after the checks log interpolation needs."""
    if dim not in da.dims:
        raise ValueError(f"{what} has no {dim!r} dim (its dims: {da.dims})")
    if dim not in da.coords:
        raise ValueError(f"{what} has no coordinate for {dim!r}")
    x = np.asarray(da[dim].values, dtype=float)
    if x.size < 2:
        raise ValueError(f"need at least 2 {dim!r} values (checkpoints) for a crossing, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise ValueError(f"the {dim!r} coordinate must be positive and finite (log interpolation)")
    if np.unique(x).size != x.size:
        raise ValueError(f"the {dim!r} coordinate has repeated values")
    return x


def _path_crossings(x, e, h=None):
    """Per-path crossing: the smallest ``x`` from which the event holds at every later checkpoint.

    ``x``: (G,) ascending, > 0. ``e``: (..., G) 1 = holds, 0 = fails, NaN = not observed (skipped:
    the checkpoints of a path are its observed grid values). ``h``: None or (..., G), a continuous
    variable with the event ``h > 0`` at the observed checkpoints (``log var - log threshold``);
    used for the interpolation. Per path, with ``j`` its last failing checkpoint and ``k`` the next
    observed one:

    - interior (``j`` exists, ``k`` exists): ``x`` interpolated in ``log x`` between ``x[j]`` and
      ``x[k]``: where ``h`` is finite at both with ``h[j] <= 0 < h[k]`` (``f = -h[j] / (h[k] -
      h[j])`` in ``[0, 1]``), ``log x = (1 - f) log x[j] + f log x[k]``, else the geometric midpoint
      ``sqrt(x[j] x[k])``; bracket ``(x[j], x[k])``;
    - below (no failure): the first observed checkpoint ``x0``, truth ``<= x0``; bracket ``(0, x0)``;
    - above (fails at the last observed checkpoint ``x1``): ``x1``, truth ``> x1``; bracket ``(x1, inf)``;
    - empty (no observed checkpoint): NaN everywhere, ``censored = 0``.

    Returns ``(cross, censored, lo, hi, used_var, nobs)``, each (...,): ``censored`` int8 -1
    below, +1 above, 0 otherwise; ``used_var`` True where the variable's interpolation was used.
    """
    x = np.asarray(x, dtype=float)
    e = np.asarray(e, dtype=float)
    g = x.shape[0]
    idx = np.arange(g)
    obs = np.isfinite(e)
    fail = obs & (e == 0)
    nobs = obs.sum(-1)
    anyfail = fail.any(-1)
    j = np.where(anyfail, g - 1 - np.argmax(fail[..., ::-1], -1), -1)
    first = np.argmax(obs, -1)
    last = g - 1 - np.argmax(obs[..., ::-1], -1)
    nxt = np.minimum.accumulate(np.where(obs, idx, g)[..., ::-1], -1)[..., ::-1]  # next observed at or after i
    nxt_after = np.concatenate([nxt[..., 1:], np.full(nxt.shape[:-1] + (1,), g)], -1)
    jj = np.maximum(j, 0)
    kk = np.minimum(np.take_along_axis(nxt_after, jj[..., None], -1)[..., 0], g - 1)
    empty = nobs == 0
    below = ~empty & ~anyfail
    above = ~empty & anyfail & (j == last)
    inner = ~empty & anyfail & (j < last)
    lx = np.log(x)
    l0, l1 = lx[jj], lx[kk]
    lc = 0.5 * (l0 + l1)
    used = np.zeros(e.shape[:-1], dtype=bool)
    if h is not None:
        h = np.broadcast_to(np.asarray(h, dtype=float), e.shape)
        h0 = np.take_along_axis(h, jj[..., None], -1)[..., 0]
        h1 = np.take_along_axis(h, kk[..., None], -1)[..., 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            f = -h0 / (h1 - h0)
            used = inner & np.isfinite(f) & (h0 <= 0) & (h1 > 0) & (f >= 0) & (f <= 1)
        lc = np.where(used, l0 + np.where(used, f, 0.0) * (l1 - l0), lc)
    x0, x1 = x[first], x[last]
    cross = np.where(inner, np.exp(lc), np.where(below, x0, np.where(above, x1, np.nan)))
    lo = np.where(inner, x[jj], np.where(below, 0.0, np.where(above, x1, np.nan)))
    hi = np.where(inner, x[kk], np.where(below, x0, np.where(above, np.inf, np.nan)))
    cens = np.where(below, -1, np.where(above, 1, 0)).astype(np.int8)
    return cross, cens, lo, hi, used, nobs


def crossing_widths(event=None, dim="d1", *, var=None, threshold=None, sense=">", var_scale="log"):
    """Per-trial crossing widths: the smallest ``dim`` after which the event holds at every later checkpoint.

    The rmt_engine studies sample counter-based: the weights of a (seed, trial) at a larger d1
    extend those at a smaller d1, so each trial is one path over the grid and "from which width on
    does the event hold for this trial" is meaningful. Per trial (each index of every dim but
    ``dim``), with the grid values ``x_1 < ... < x_G`` of ``dim`` (at least 2) as checkpoints:

    - the crossing lies after the last checkpoint ``x_j`` where the event fails and at or before
      the next checkpoint ``x_k`` (where it holds, as at every later one). ``d1_cross`` is
      interpolated in ``log dim`` between the two: with a continuous ``var``, the point where
      ``g(var) - g(threshold)`` (``g = log``, or the identity with ``var_scale="linear"``),
      interpolated linearly in ``log dim`` between ``x_j`` and ``x_k``, changes sign (e.g. the
      margin in log scale crossing 1: exact for a power law ``var ~ d1^a``); without ``var``, or
      where ``var`` does not change sign between the two (an event not derived from it, a
      non-positive value in log scale), the geometric midpoint ``sqrt(x_j x_k)``;
    - ``censored = -1`` (below): the event holds at every checkpoint; the crossing is only known
      to be ``<=`` the smallest, and ``d1_cross`` is that smallest checkpoint;
    - ``censored = +1`` (above): the event fails at the largest checkpoint (never holds, or does
      not hold at the largest); the crossing is only known to be ``>`` the largest, and
      ``d1_cross`` is that largest checkpoint. So ``d1_cross`` is always a grid-range value and
      ``censored`` says on which side of it the truth lies (read both: a plain mean or quantile of
      ``d1_cross`` treats censored trials as exact);
    - missing values (NaN) are not checkpoints of that trial: the grid values where the trial has
      an observation are its checkpoints (the first / last of them bound censored trials); a trial
      with none has ``d1_cross`` NaN, ``censored = 0``, ``checkpoints = 0``.

    Input (one of):

    - ``event``: DataArray 1 = holds, 0 = fails, NaN = missing (bool accepted), dims ``(...,
      dim, ...)``, e.g. ``analysis.bound_events(ds)["margin"]`` or ``scaling_events(ds)["margin"]``;
      with ``var`` and ``threshold`` too, ``var`` is used only to interpolate;
    - ``var`` (DataArray) and ``threshold`` (scalar or DataArray broadcastable to ``var``): the
      event is ``var <sense> threshold`` (``sense``: ``">"``, ``">="``, ``"<"``, ``"<="``), NaN
      where ``var`` is not finite; e.g. ``crossing_widths(var=ds["margin"], threshold=1.0)``;
    - ``event`` a cube Dataset: ``var`` names its variable (default ``"margin"``), ``threshold``
      defaults to 1.0 (Eq. 9: margin > 1).

    Returns a Dataset over the dims of the input but ``dim`` (``(..., trial)``; coordinates not
    along ``dim`` are kept): ``d1_cross`` (float), ``censored`` (int8: -1 below, 0 none, +1 above),
    ``d1_lo, d1_hi`` (the checkpoints around the crossing: ``(x_j, x_k)``; ``(0, x_1)`` below;
    ``(x_G, inf)`` above), ``interpolated`` (True where ``var`` gave the point, False for the
    midpoint and for censored trials) and ``checkpoints`` (observed grid values of the trial).
    ``threshold(result, level, method="quantile")`` turns it into a width threshold. Dask inputs
    are loaded.
    """
    xr = _xr()
    if sense not in _SENSES:
        raise ValueError(f"unknown sense {sense!r}: one of {', '.join(_SENSES)}")
    if var_scale not in ("log", "linear"):
        raise ValueError(f"unknown var_scale {var_scale!r}: 'log' or 'linear'")
    if isinstance(event, xr.Dataset):
        name = "margin" if var is None else var
        if not isinstance(name, str):
            raise TypeError("with a cube Dataset, var is the name of one of its variables")
        if name not in event:
            raise ValueError(f"the Dataset has no variable {name!r}")
        var, event = event[name], None
        threshold = 1.0 if threshold is None else threshold
    if var is not None and not isinstance(var, xr.DataArray):
        raise TypeError("var must be an xarray.DataArray (or a variable name with a cube Dataset)")
    if event is None and var is None:
        raise ValueError("give event (1/0/NaN), or var and threshold")
    if var is not None and threshold is None:
        raise ValueError("var needs a threshold (the event is var <sense> threshold)")
    if event is not None and not isinstance(event, xr.DataArray):
        raise TypeError("event must be a per-trial xarray.DataArray (1/0/NaN) or a cube Dataset")
    thr = None
    if var is not None:
        v = _load(var).astype(float)
        thr = threshold if isinstance(threshold, xr.DataArray) else xr.DataArray(float(threshold))
        v, thr = xr.broadcast(v, _load(thr).astype(float))
        if event is None:
            ok = np.isfinite(v) & np.isfinite(thr)
            event = xr.where(ok, _SENSES[sense](v, thr).astype(float), np.nan)
            event = event.transpose(*v.dims)
    ev = _load(event).astype(float)
    _check_grid(ev, dim, "event" if var is None else "var")
    vals = ev.values
    if np.any(np.isfinite(vals) & (vals != 0) & (vals != 1)):
        raise ValueError("event must hold only 1, 0 or NaN")
    ev = ev.sortby(dim)
    x = np.asarray(ev[dim].values, dtype=float)
    rest = [d for d in ev.dims if d != dim]
    ev = ev.transpose(*rest, dim)
    h = None
    if var is not None:
        v = v.sortby(dim)
        thr = thr.sortby(dim) if dim in thr.dims else thr
        if set(v.dims) - set(ev.dims):
            raise ValueError(f"var (with threshold) has dims {v.dims} the event {ev.dims} does not have")
        v, thr, ev = xr.broadcast(v, thr, ev)
        V = v.transpose(*rest, dim).values
        T = thr.transpose(*rest, dim).values
        with np.errstate(invalid="ignore", divide="ignore"):
            h = (np.log(V) - np.log(T)) if var_scale == "log" else (V - T)
        if sense in ("<", "<="):
            h = -h
        ev = ev.transpose(*rest, dim)
    cross, cens, lo, hi, used, nobs = _path_crossings(x, ev.values, h)
    template = ev.isel({dim: 0}, drop=True)
    template = template.drop_vars([c for c in template.coords if dim in ev[c].dims], errors="ignore")

    def g(a):
        return template.copy(data=np.asarray(a))

    out = xr.Dataset({"d1_cross": g(cross), "censored": g(cens), "d1_lo": g(lo), "d1_hi": g(hi),
                      "interpolated": g(used), "checkpoints": g(nobs)})
    out.attrs.update(dim=dim, grid_min=float(x[0]), grid_max=float(x[-1]),
                     interpolation=("linear in log " + dim + " of " + ("log " if var_scale == "log" else "")
                                    + "var - threshold" if var is not None else "geometric midpoint"),
                     censoring="-1: crossing <= d1_cross (holds at every checkpoint); "
                               "+1: crossing > d1_cross (fails at the last checkpoint)")
    return out


def order_statistic_interval(n, q, confidence=0.95):
    """Distribution-free confidence interval of the ``q``-quantile from ``n`` samples: order indices.

    Convention (1-based order statistics ``X_(1) <= ... <= X_(n)``, ``B ~ Binomial(n, q)``, ``F``
    its cdf, ``alpha = 1 - confidence``): for a continuous distribution ``P(X_(l) > xi_q) = F(l -
    1)`` and ``P(X_(u) < xi_q) = 1 - F(u - 1)``, so the equal-tailed choice

    - ``l`` = the largest ``l >= 1`` with ``F(l - 1) <= alpha/2`` (0 = none: the lower end is open),
    - ``u`` = the smallest ``u <= n`` with ``1 - F(u - 1) <= alpha/2`` (``n + 1`` = none: open),

    gives ``P(X_(l) <= xi_q <= X_(u)) = F(u - 1) - F(l - 1) >= confidence`` (each tail at most
    ``alpha/2``; exact, not asymptotic; an open end has tail probability 0). ``n``: int or integer
    array; returns ``(l, u, coverage)`` arrays of its shape, ``coverage = F(u - 1) - F(l - 1)`` the
    exact coverage for continuous data (with ``F(-1) = 0``, ``F(n) = 1``); NaN for ``n = 0``.
    """
    from scipy import stats  # noqa: PLC0415

    q = _check_prob("q", q)
    confidence = _check_prob("confidence", confidence)
    n = np.asarray(n)
    if np.any(n < 0) or not np.all(np.equal(np.mod(n, 1), 0)):
        raise ValueError("n must be non-negative integers")
    n = n.astype(np.int64)
    a2 = (1.0 - confidence) / 2.0
    L = np.zeros(n.shape, dtype=np.int64)
    U = np.zeros(n.shape, dtype=np.int64)
    cov = np.full(n.shape, np.nan)
    for m in np.unique(n):
        sel = n == m
        if m == 0:
            L[sel], U[sel] = 0, 1
            continue
        F = stats.binom.cdf(np.arange(m + 1), m, q)  # F[i] = P(B <= i), i = 0..m
        ok_l = np.nonzero(F[:m] <= a2)[0]           # candidates l - 1 in 0..m-1
        lv = int(ok_l[-1]) + 1 if ok_l.size else 0
        ok_u = np.nonzero(1.0 - F[:m] <= a2)[0]     # candidates u - 1 in 0..m-1
        uv = int(ok_u[0]) + 1 if ok_u.size else m + 1
        Fl = F[lv - 1] if lv >= 1 else 0.0
        Fu = F[uv - 1] if uv <= m else 1.0
        L[sel], U[sel], cov[sel] = lv, uv, Fu - Fl
    return L, U, cov


def _quantile_threshold(obj, level, dim, interval, confidence, trial_dim):
    """``threshold(..., method="quantile")``: the ``level``-quantile of the per-trial crossing widths.

    ``obj``: a ``crossing_widths`` Dataset (``d1_cross, censored`` with a ``trial_dim`` dim), or
    what ``crossing_widths`` takes as its first argument (an event DataArray with dims ``(...,
    dim, trial)``, or a cube Dataset: margin > 1), turned into one with the geometric-midpoint (or
    margin) interpolation. Over the remaining dims ``R``, with the ``N`` trials that have a
    crossing (``d1_cross`` finite) and ``k = ceil(level N)``:

    - bounds per trial: ``L = 0`` for a trial censored below (crossing ``<=`` its ``d1_cross``),
      else ``d1_cross``; ``U = inf`` for one censored above (crossing ``>`` its ``d1_cross``), else
      ``d1_cross``. So left-censored widths sort below every other, right-censored above;
    - ``d_star``: the sample ``level``-quantile, ``X_(k)`` (inverse of the empirical cdf: the
      smallest width reached by at least ``level`` of the trials' crossings). ``censored_below``
      where at least ``k`` trials are censored below: ``d_star`` is then the ``k``-th smallest
      upper bound (the smallest grid value on a common grid) and only an upper bound;
      ``censored_above`` where more than ``N - k`` are censored above: ``d_star`` NaN;
    - ``[lo, hi] = [L_(l), U_(u)]`` with ``(l, u) = order_statistic_interval(N, level,
      confidence)`` widened, if needed, to contain ``k``: exact, distribution-free, coverage
      ``>= confidence`` for continuous crossing widths whatever the censoring (``L <= X <= U``
      trial by trial, so the order statistics are too; with interpolated crossings only as far
      as the interpolation is right). ``lo = 0`` (``lo_open``) where the lower end falls among
      the trials censored below or ``l`` does not exist (``(1 - level)^N > (1 - confidence)/2``);
      ``hi = inf`` (``hi_open``) where the upper end falls among the trials censored above or
      ``u`` does not exist (``level^N > (1 - confidence)/2``: ``N < 72`` at level = confidence =
      0.95, as for the binomial bands). A lower end among right-censored trials is the largest
      grid value, an upper end among left-censored ones the smallest: both genuine bounds.

    Returns a Dataset over ``R`` (coordinates kept) with the variable names of ``threshold``:
    ``d_star, lo, hi, censored_below, censored_above, reason`` (``"ok" | "censored below" |
    "censored above" | "no data"``), so ``fit_scaling`` / ``fit_power_law_2d`` take it as they
    take the other methods' output; and ``lo_open, hi_open, trials`` (N), ``n_below, n_above``
    (censored trials), ``order_k, order_lo, order_hi`` (``k, l, u``; 0 / N + 1 for none),
    ``coverage`` (the exact coverage of ``[X_(l), X_(u)]``, ``>= confidence``). Attributes:
    ``level, dim, method="quantile", interval, confidence``.
    """
    xr = _xr()
    if interval != "binomial":
        raise ValueError("method='quantile' has its own exact interval (order statistics, binomial): "
                         f"leave interval='binomial', got {interval!r}")
    if isinstance(obj, xr.Dataset) and "d1_cross" in obj:
        cw = obj
        if "censored" not in cw:
            raise ValueError("a crossing_widths Dataset needs a 'censored' variable (-1/0/+1)")
        dim = cw.attrs.get("dim", dim)
    else:
        if isinstance(obj, xr.DataArray) and trial_dim not in obj.dims:
            raise ValueError(f"event has no {trial_dim!r} dim (its dims: {obj.dims})")
        cw = crossing_widths(obj, dim)
    w, c = xr.broadcast(cw["d1_cross"], cw["censored"])
    if trial_dim not in w.dims:
        raise ValueError(f"the crossing widths have no {trial_dim!r} dim (their dims: {w.dims})")
    rest = [d for d in w.dims if d != trial_dim]
    W = np.asarray(_load(w).transpose(*rest, trial_dim).values, dtype=float)
    C = np.asarray(_load(c).transpose(*rest, trial_dim).values, dtype=float)
    valid = np.isfinite(W)
    if np.any(valid & ~np.isin(C, (-1, 0, 1))):
        raise ValueError("censored must hold only -1, 0 or +1")
    if np.any(valid & (W <= 0)):
        raise ValueError("crossing widths must be positive")
    below_t = valid & (C == -1)
    above_t = valid & (C == 1)
    Ls = np.sort(np.where(valid, np.where(below_t, 0.0, W), np.nan), -1)
    Us = np.sort(np.where(valid, np.where(above_t, np.inf, W), np.nan), -1)
    Vs = np.sort(np.where(valid, W, np.nan), -1)
    N = valid.sum(-1)
    nb = below_t.sum(-1)
    na = above_t.sum(-1)
    k = np.ceil(np.round(level * N, 9)).astype(np.int64)  # round: 0.95 * 100 is 95.00000000000001
    lidx, uidx, cov = order_statistic_interval(N, level, confidence)
    has = N > 0
    lidx = np.where(has & (lidx >= 1), np.minimum(lidx, k), lidx)
    uidx = np.where(has, np.maximum(uidx, k), uidx)

    def take(a, i):
        return np.take_along_axis(a, np.clip(i - 1, 0, a.shape[-1] - 1)[..., None], -1)[..., 0]

    lo = np.where(lidx >= 1, take(Ls, lidx), 0.0)
    hi = np.where(uidx <= N, take(Us, uidx), np.inf)
    below = has & (nb >= k)
    above = has & (na > N - k)
    d_star = np.where(below, take(Us, k), np.where(above, np.nan, take(Vs, k)))
    d_star = np.where(has, d_star, np.nan)
    lo = np.where(has, lo, np.nan)
    hi = np.where(has, hi, np.nan)
    reason = np.where(~has, "no data", np.where(below, "censored below", np.where(above, "censored above", "ok")))

    template = w.isel({trial_dim: 0}, drop=True)
    template = template.drop_vars([v for v in template.coords if trial_dim in w[v].dims], errors="ignore")

    def g(a):
        return template.copy(data=np.asarray(a))

    out = xr.Dataset({"d_star": g(d_star), "lo": g(lo), "hi": g(hi), "censored_below": g(below),
                      "censored_above": g(above), "reason": g(reason.astype(str)),
                      "lo_open": g(has & (lo == 0.0)), "hi_open": g(has & np.isinf(hi)),
                      "trials": g(N), "n_below": g(nb), "n_above": g(na), "order_k": g(np.where(has, k, 0)),
                      "order_lo": g(lidx), "order_hi": g(uidx), "coverage": g(cov)})
    out.attrs.update(level=level, dim=dim, method="quantile", confidence=confidence,
                     interval="exact order-statistic interval [X_(l), X_(u)] (Binomial(N, level) tails "
                              "<= (1 - confidence)/2 each)",
                     equation="Eq. 21: the width from which the event holds, per trial; its level-quantile")
    return out


# --------------------------------------------------------------------------- exponent fits


def data_draw_variance(widths, draw_dim: str = "data_draw", trial_dim: str = "trial"):
    """How much of the spread of per-trial crossing widths comes from the data X, how much from W.

    ``widths``: per-trial widths with dims ``(..., draw_dim, trial_dim)`` (``crossing_widths(...)``
    of several cubes that differ only in ``data_seed``, concatenated along ``draw_dim``; censored
    values should be NaN). One-way random-effects analysis of variance of ``log d1_cross``
    (method of moments, unequal group sizes allowed): ``within`` = the pooled variance across
    trials of one X (the weights W), ``between`` = max(0, var(draw means) - mean(within/m_j)), the
    variance of the draw effect (the data X); ``fraction_between = between / (between + within)``.
    Returns a Dataset over the other dims with ``within``, ``between``, ``fraction_between``,
    ``draws`` and ``trials`` (usable counts).
    """
    xr = _xr()
    da = _load(widths)
    if draw_dim not in da.dims or trial_dim not in da.dims:
        raise ValueError(f"widths need dims {draw_dim!r} and {trial_dim!r}, got {da.dims}")
    lw = np.log(da.where(da > 0))
    m = lw.count(trial_dim)
    mean = lw.mean(trial_dim, skipna=True)
    ss_within = ((lw - mean) ** 2).sum(trial_dim, skipna=True)
    dof_within = (m - 1).clip(min=0).sum(draw_dim)
    within = ss_within.sum(draw_dim) / dof_within.where(dof_within > 0)
    ok = m > 0
    draws = ok.sum(draw_dim)
    var_means = mean.where(ok).var(draw_dim, ddof=1, skipna=True)
    noise = (within / m.where(ok)).mean(draw_dim, skipna=True)
    between = (var_means - noise).clip(min=0.0).where(draws >= 2)
    out = xr.Dataset({"within": within, "between": between,
                      "fraction_between": between / (between + within), "draws": draws, "trials": m.sum(draw_dim)})
    out.attrs["scale"] = "log d1_cross"
    return out


def widths_for_quantiles(cw):
    """The per-trial widths of a ``crossing_widths`` result as the quantile estimators take them: a
    trial censored above (the event never held up to the largest width) is ``+inf`` -- so a quantile
    among such trials reads "not reached" instead of a number biased low by dropping the slowest
    trials -- and one censored below keeps its first checkpoint (an upper bound, conservative for a
    threshold). Feed it to ``hierarchical_bootstrap_threshold``."""
    return cw["d1_cross"].where(cw["censored"] <= 0, np.inf)


def hierarchical_bootstrap_threshold(widths, level: float = 0.5, draw_dim: str = "data_draw",
                                     trial_dim: str = "trial", *, confidence: float = 0.95, n_boot: int = 2000,
                                     seed: int = 0):
    """The ``level``-quantile of per-trial crossing widths pooled over data draws, with a percentile
    interval from a two-stage (hierarchical) bootstrap: resample the data draws with replacement,
    then the trials within each chosen draw, so the interval carries both sources of spread (X and
    W); a bootstrap over trials alone would treat the one X of a case as fixed. ``widths`` as in
    ``data_draw_variance``: NaN = missing, dropped; ``+inf`` = censored above (the event never held
    up to the largest width), kept, so that a quantile falling among them is ``inf`` ("not reached")
    rather than a number biased low by dropping the slowest trials. (Give censored-below trials their
    first checkpoint: an upper bound, conservative for a threshold.) Returns ``d_star``, ``lo``,
    ``hi`` over the other dims. Deterministic for a given ``seed``.
    """
    _check_prob("level", level)
    _check_prob("confidence", confidence)
    xr = _xr()
    da = _load(widths)
    if draw_dim not in da.dims or trial_dim not in da.dims:
        raise ValueError(f"widths need dims {draw_dim!r} and {trial_dim!r}, got {da.dims}")
    alpha = 1.0 - confidence

    def quantile(x, q):  # +inf entries allowed: inf - inf interpolates to NaN, which means inf here
        with np.errstate(invalid="ignore"):
            v = float(np.quantile(x, q))
        return math.inf if math.isnan(v) else v

    def kernel(a):  # a: (draws, trials)
        groups = [g[~np.isnan(g)] for g in a]
        groups = [g for g in groups if g.size]
        if not groups:
            return np.nan, np.nan, np.nan
        pooled = np.concatenate(groups)
        est = quantile(pooled, level)
        rs = np.random.default_rng(seed)
        stats_ = np.empty(n_boot)
        for b in range(n_boot):
            pick = rs.integers(0, len(groups), len(groups))
            sample = np.concatenate([groups[j][rs.integers(0, groups[j].size, groups[j].size)] for j in pick])
            stats_[b] = quantile(sample, level)
        return est, quantile(stats_, alpha / 2), quantile(stats_, 1 - alpha / 2)

    est, lo, hi = xr.apply_ufunc(kernel, da, input_core_dims=[[draw_dim, trial_dim]], output_core_dims=[[], [], []],
                                 vectorize=True)
    out = xr.Dataset({"d_star": est, "lo": lo, "hi": hi})
    out.attrs.update(level=float(level), confidence=float(confidence), method="hierarchical bootstrap",
                     n_boot=int(n_boot))
    return out


def _resolve(obj, v, name):
    """A regressor given as a coordinate/variable name of ``obj``, a DataArray, or a scalar."""
    xr = _xr()
    if v is None:
        return None
    if isinstance(v, str):
        if v in obj.coords or (isinstance(obj, xr.Dataset) and v in obj):
            return obj[v]
        raise ValueError(f"{name} = {v!r} is neither a coordinate nor a variable of the input")
    if isinstance(v, xr.DataArray):
        return v
    if np.ndim(v) == 0:
        return xr.DataArray(float(v))
    raise TypeError(f"{name} must be a name, a DataArray or a scalar")


def _wls(lx, ly, w):
    """Vectorized weighted least squares of ``ly = a + b lx`` along the last axis.

    ``w``: weights, 0 for an unused point. Returns a dict of arrays over the leading axes:
    ``b, a, sxx, S, mx, chi2`` (``sum w r^2``), ``m`` (points used) and ``r`` (residuals, NaN
    where unused).
    """
    use = w > 0
    lx0 = np.where(use, lx, 0.0)
    ly0 = np.where(use, ly, 0.0)
    S = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * lx0).sum(-1) / S
        my = (w * ly0).sum(-1) / S
        dx = np.where(use, lx0 - mx[..., None], 0.0)
        dy = np.where(use, ly0 - my[..., None], 0.0)
        sxx = (w * dx * dx).sum(-1)
        b = (w * dx * dy).sum(-1) / sxx
        a = my - b * mx
        r = np.where(use, ly0 - a[..., None] - b[..., None] * lx0, np.nan)
        chi2 = np.where(use, w * np.where(use, r, 0.0) ** 2, 0.0).sum(-1)
    return {"b": b, "a": a, "sxx": sxx, "S": S, "mx": mx, "chi2": chi2, "m": use.sum(-1), "r": r}


def _pvalue(z, dof, student):
    from scipy import stats  # noqa: PLC0415

    z = np.abs(np.asarray(z, float))
    with np.errstate(invalid="ignore"):
        if student:
            return np.where(dof > 0, 2 * stats.t.sf(z, np.maximum(dof, 1)), np.nan)
        return 2 * stats.norm.sf(z)


def fit_scaling(d_star, x, *, dim=None, y_factor=None, lo=None, hi=None, predictions=None,
                confidence=0.95, z_crit=2.0, drop_censored=True):
    """Fit ``log y = a + b log x`` with ``y = d_star * y_factor``: the exponent of a scaling law.

    E.g. ``fit_scaling(thr, "n", y_factor="d0")`` fits ``d0 d1* ~ A n^b`` (Eq. 21: b = 3/2;
    App. E: 5/3) on ``thr = threshold(event)`` over a linked ``case`` dim (coordinates ``n``,
    ``d0``).

    ``d_star``: a DataArray, or a ``threshold`` Dataset (then ``lo``, ``hi`` default to its
    interval and, with ``drop_censored``, censored points are left out: a point censored below
    is only an upper bound). ``x``, ``y_factor``: names of coordinates/variables of
    ``d_star``, DataArrays, or scalars (``y_factor``). ``dim``: the dim fitted along (default:
    the dim of ``x``, when it has exactly one); every other dim gets its own fit.

    Weights: with ``lo, hi`` (interval of ``d_star`` at ``confidence``), the standard deviation
    of ``log y`` is taken as ``sigma = (log hi - log lo) / (2 z)`` with ``z = Phi^-1((1 +
    confidence)/2)`` (1.96), and the fit minimizes ``chi^2 = sum ((log y - a - b log x) /
    sigma)^2``. A point with an unbounded interval (``lo = 0`` or ``hi = inf``) or a degenerate
    one (``hi <= lo``) has no weight and is left out (counted in ``unweighted_dropped``). The
    standard error of ``b`` is ``sqrt(((X^T W X)^-1)_bb) * sqrt(max(1, chi^2/dof))`` (the
    interval widths, inflated when the scatter exceeds them); ``stderr_abs`` is without the
    inflation; z-scores use the normal distribution. Without ``lo, hi``: ordinary least squares,
    the standard error from the residual variance ``RSS/(m-2)``, p-values and ``ci`` from
    Student's t with ``m - 2`` degrees of freedom.

    Returns a Dataset over the other dims: ``exponent`` (b), ``stderr``, ``stderr_abs``
    (weighted only), ``ci_lo, ci_hi`` (``confidence`` interval of b), ``prefactor`` (``A =
    exp(a)``), ``npoints``, ``dof`` (m - 2), ``chi2``, ``chi2_dof`` (weighted only, else NaN),
    ``reason`` (``"ok"``, or why the exponent / its error is NaN: fewer than 2 points, 2 points,
    no spread in x); ``residuals`` (``log y - a - b log x``) along ``dim``; and along a
    ``prediction`` dim (labels of ``predictions``, default ``SCALING_PREDICTIONS``):
    ``predicted``, ``z = (b - predicted)/stderr``, ``p_value`` and ``verdict``
    (``"consistent"`` if ``|z| <= z_crit`` -- for least squares ``|z| <=`` the Student-t quantile of
    ``ci_lo, ci_hi`` when that is larger, so the verdict says the same as the interval --,
    ``"disagrees"``, ``"undetermined"`` without a standard error). Weighted residuals satisfy ``sum r / sigma^2 = 0``, unweighted ``sum r = 0``.
    """
    xr = _xr()
    from scipy import stats  # noqa: PLC0415

    confidence = _check_prob("confidence", confidence)
    predictions = SCALING_PREDICTIONS if predictions is None else dict(predictions)
    src = d_star
    if isinstance(d_star, xr.Dataset):
        if "d_star" not in d_star:
            raise ValueError("a Dataset d_star must be a threshold() result (with a d_star variable)")
        ds = d_star
        d_star = ds["d_star"]
        if lo is None and "lo" in ds:
            lo = ds["lo"]
        if hi is None and "hi" in ds:
            hi = ds["hi"]
        if drop_censored:
            cens = (ds["censored_below"].astype(bool) if "censored_below" in ds else False)
            cens = cens | (ds["censored_above"].astype(bool) if "censored_above" in ds else False)
            d_star = d_star.where(~cens)
    if (lo is None) != (hi is None):
        raise ValueError("give both lo and hi (the interval of d_star), or neither")
    xa = _resolve(src, x, "x")
    yf = _resolve(src, y_factor, "y_factor")
    if dim is None:
        if xa.ndim == 1:
            dim = xa.dims[0]
        elif d_star.ndim == 1:
            dim = d_star.dims[0]
        else:
            raise ValueError("give dim: x does not have exactly one dim")
    if dim not in d_star.dims:
        raise ValueError(f"d_star has no {dim!r} dim (its dims: {d_star.dims})")
    y = d_star.astype(float) * (yf if yf is not None else 1.0)
    weighted = lo is not None
    arrays = [y, xa.astype(float)] + ([lo.astype(float), hi.astype(float)] if weighted else [])
    arrays = [_load(a) for a in arrays]
    arrays = xr.broadcast(*arrays)
    rest = [d for d in arrays[0].dims if d != dim]
    arrays = [a.transpose(*rest, dim) for a in arrays]
    Y = arrays[0].values
    X = arrays[1].values
    with np.errstate(invalid="ignore", divide="ignore"):
        ly, lx = np.log(Y), np.log(X)
        ok = np.isfinite(ly) & np.isfinite(lx)
        zc = _zcrit(confidence)
        if weighted:
            L, H = arrays[2].values, arrays[3].values
            sig = (np.log(H) - np.log(L)) / (2.0 * zc)
            wok = ok & np.isfinite(sig) & (sig > 0)
            w = np.where(wok, 1.0 / np.where(wok, sig, 1.0) ** 2, 0.0)
            dropped = (ok & ~wok).sum(-1)
        else:
            w = ok.astype(float)
            dropped = np.zeros(ok.shape[:-1], dtype=int)
    f = _wls(lx, ly, w)
    m = f["m"]
    dof = m - 2
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = f["sxx"] > 1e-300
        fitted = (m >= 2) & spread
        b = np.where(fitted, f["b"], np.nan)
        a = np.where(fitted, f["a"], np.nan)
        resid = np.where(fitted[..., None], f["r"], np.nan)
        chi2 = np.where(fitted & (dof > 0), f["chi2"], np.nan)
        if weighted:
            se_abs = np.where(fitted, np.sqrt(1.0 / f["sxx"]), np.nan)
            chi2_dof = chi2 / np.where(dof > 0, dof, np.nan)
            se = np.where(dof > 0, se_abs * np.sqrt(np.maximum(1.0, chi2_dof)), np.nan)
            q = np.full(b.shape, zc)
        else:
            se_abs = np.full(b.shape, np.nan)
            chi2_dof = np.full(b.shape, np.nan)
            s2 = f["chi2"] / np.where(dof > 0, dof, np.nan)
            se = np.where(fitted & (dof > 0), np.sqrt(s2 / f["sxx"]), np.nan)
            q = stats.t.ppf(0.5 + confidence / 2.0, np.maximum(dof, 1))
        ci_lo, ci_hi = b - q * se, b + q * se
    reason = np.where(m < 2, np.char.add(np.char.add(m.astype(str), " point(s) with a finite positive "
                                                     "value" + (" and a bounded interval" if weighted else "")),
                                         ": need >= 2"),
                      np.where(~spread, "no spread in x", np.where(m == 2, "2 points: no standard error", "ok")))

    tmpl = arrays[0].isel({dim: 0}, drop=True)
    tmpl = tmpl.drop_vars([c for c in tmpl.coords if dim in arrays[0][c].dims], errors="ignore")

    def g(v):
        return tmpl.copy(data=np.asarray(v))

    out = xr.Dataset({"exponent": g(b), "stderr": g(se), "stderr_abs": g(se_abs), "ci_lo": g(ci_lo),
                      "ci_hi": g(ci_hi), "prefactor": g(np.exp(a)), "npoints": g(m), "dof": g(dof),
                      "chi2": g(chi2), "chi2_dof": g(chi2_dof), "unweighted_dropped": g(dropped),
                      "reason": g(reason.astype(str)),
                      "residuals": arrays[0].copy(data=resid)})
    labels = list(predictions)
    pv = np.array([float(predictions[k]) for k in labels])
    shape = (len(labels),) + b.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (b[None] - pv.reshape((-1,) + (1,) * b.ndim)) / se[None]
    pval = _pvalue(z, np.broadcast_to(dof, shape), student=not weighted)
    # the verdict agrees with the interval: |z| <= z_crit for the weighted fit (normal), the same
    # Student-t quantile as ci_lo, ci_hi for least squares (with 1 dof it is 12.7, not 2)
    crit = np.full(b.shape, float(z_crit)) if weighted else np.maximum(float(z_crit), q)
    verdict = np.where(~np.isfinite(z), "undetermined",
                       np.where(np.abs(z) <= crit[None], "consistent", "disagrees"))
    pdims = ("prediction",) + tuple(tmpl.dims)
    pcoords = {"prediction": labels}
    out["predicted"] = xr.DataArray(pv, dims=["prediction"], coords=pcoords)
    out["z"] = xr.DataArray(z, dims=pdims, coords=pcoords).assign_coords(tmpl.coords)
    out["p_value"] = xr.DataArray(pval, dims=pdims, coords=pcoords).assign_coords(tmpl.coords)
    out["verdict"] = xr.DataArray(verdict.astype(str), dims=pdims, coords=pcoords).assign_coords(tmpl.coords)
    out.attrs.update(fit=f"log y = log A + b log x along {dim!r} ("
                     + ("weighted by the interval widths" if weighted else "ordinary least squares") + ")",
                     confidence=confidence, z_crit=float(z_crit), weighted=bool(weighted), dim=dim)
    return out


def fit_power_law_2d(y, n, d0, *, dims=None, pool_dims=("trial",)):
    """Least squares ``log y = log A + b log n + c log d0``: e.g. ``d1* ~ A n^b d0^c``.

    Eq. 21 predicts ``b = 3/2, c = -1`` (``d1* ~ n^{3/2}/d0``). ``y``: a DataArray (or a
    ``threshold`` Dataset: its ``d_star``, censored points dropped); ``n``, ``d0``: names of
    coordinates of ``y`` or DataArrays broadcastable to it. ``dims``: the dims pooled into one
    fit (default: those of ``n`` and ``d0``, plus ``pool_dims`` present); each other dim gets
    its own fit. Non-finite and non-positive values are dropped.

    Standard errors: ``s^2 (X^T X)^-1`` with ``s^2 = RSS / (m - 3)``, ``X = [1, log n, log d0]``.
    Along a linked axis (``n ~ d0^t``) log n and log d0 are collinear and only a combination is
    identifiable: then the result is NaN with ``reason`` saying so (fit ``y * d0`` against ``n``
    with ``fit_scaling`` instead). Returns a Dataset: ``b, c, stderr_b, stderr_c, cov_bc,
    prefactor, npoints, reason`` and ``residuals`` shaped like ``y``.
    """
    xr = _xr()
    src = y
    if isinstance(y, xr.Dataset):
        cens = y["censored_below"].astype(bool) | y["censored_above"].astype(bool)
        y = y["d_star"].where(~cens)
    na = _resolve(src, n, "n")
    da = _resolve(src, d0, "d0")
    if dims is None:
        dims = list(dict.fromkeys(list(na.dims) + list(da.dims) + [d for d in pool_dims if d in y.dims]))
    dims = list(dims)
    if not dims:
        raise ValueError("give dims: n and d0 have no dims to fit along")
    Y, N, D = (_load(v) for v in xr.broadcast(y.astype(float), na.astype(float), da.astype(float)))
    rest = [d for d in Y.dims if d not in dims]
    order = rest + dims
    Y, N, D = (v.transpose(*order) for v in (Y, N, D))
    lead = Y.shape[:len(rest)]
    flat = (int(np.prod(lead, dtype=int)), -1)
    yv, nv, dv = (v.values.reshape(flat) for v in (Y, N, D))
    outs = {k: np.full(flat[0], np.nan) for k in ("b", "c", "stderr_b", "stderr_c", "cov_bc", "prefactor")}
    npts = np.zeros(flat[0], dtype=int)
    reasons = np.empty(flat[0], dtype=object)
    resid = np.full(yv.shape, np.nan)
    for i in range(flat[0]):
        with np.errstate(invalid="ignore", divide="ignore"):
            ly, ln, ld = np.log(yv[i]), np.log(nv[i]), np.log(dv[i])
        ok = np.isfinite(ly) & np.isfinite(ln) & np.isfinite(ld)
        m = int(ok.sum())
        npts[i] = m
        if m < 3:
            reasons[i] = f"{m} point(s): need >= 3 for two exponents"
            continue
        A = np.column_stack([np.ones(m), ln[ok], ld[ok]])
        sv = np.linalg.svd(A - np.r_[0.0, A[:, 1:].mean(0)], compute_uv=False)
        if sv[-1] <= 1e-9 * sv[0]:
            reasons[i] = "log n and log d0 are collinear (linked axis): only a combination is identifiable"
            continue
        coef, *_ = np.linalg.lstsq(A, ly[ok], rcond=None)
        r = ly[ok] - A @ coef
        resid[i, ok] = r
        outs["b"][i], outs["c"][i], outs["prefactor"][i] = coef[1], coef[2], math.exp(coef[0])
        if m == 3:
            reasons[i] = "3 points: no standard error"
            continue
        cov = float(r @ r) / (m - 3) * np.linalg.inv(A.T @ A)
        outs["stderr_b"][i], outs["stderr_c"][i] = math.sqrt(cov[1, 1]), math.sqrt(cov[2, 2])
        outs["cov_bc"][i] = cov[1, 2]
        reasons[i] = "ok"
    tmpl = Y.isel({d: 0 for d in dims}, drop=True)
    tmpl = tmpl.drop_vars([c for c in tmpl.coords if set(Y[c].dims) & set(dims)], errors="ignore")

    def g(v):
        return tmpl.copy(data=np.asarray(v).reshape(lead))

    out = xr.Dataset({k: g(v) for k, v in outs.items()})
    out["npoints"] = g(npts)
    out["reason"] = g(reasons.astype(str))
    out["residuals"] = Y.copy(data=resid.reshape(Y.shape))
    out.attrs["fit"] = f"log y = log A + b log n + c log d0, pooled over {dims}"
    return out


def concentration_law(ds, var="delta1", x="d1/n", *, by=("activation",), min_ratio=1.0,
                      expected=CONCENTRATION_EXPONENT, z_crit=2.0):
    """Fit ``var ~ C (n/d1)^a`` (the concentration of Eq. 67; expected ``a = 1/2``).

    ``ds``: the cube (``var`` and coordinates ``n``, ``d1``; ``n`` may be a coordinate along a
    linked ``case`` dim). ``x``: ``"d1/n"`` or ``"n/d1"`` (the same law; the exponent is always
    that of ``n/d1``) or a DataArray ``u`` (then ``var ~ C u^a``). Every dim not in ``by``
    (trials and grid points) is pooled: one ordinary least-squares fit on logs per value of
    ``by``. Used: finite positive ``var`` (a negative ``delta1``, ``lambda_min(M0)`` above its
    expectation, cannot enter a log fit: ``dropped`` counts them, a selection bias when they
    are many) at grid points with ``d1/n > min_ratio`` (default 1: for ``d1 < n``,
    ``lambda_min(M0) = 0`` and ``delta1 = 1`` identically, not a fluctuation).

    Returns a Dataset over ``by``: ``exponent`` (a), ``stderr`` (residual variance; the trials
    are independent, the grid points share nothing), ``prefactor`` (C), ``npoints``,
    ``dropped``, ``r2``, ``z = (a - expected)/stderr``, ``verdict``, ``reason``; and
    ``residuals`` shaped like ``ds[var]`` (NaN where unused).
    """
    xr = _xr()
    v = ds[var].astype(float)
    if isinstance(x, str):
        if x not in ("d1/n", "n/d1"):
            raise ValueError(f"x must be 'd1/n', 'n/d1' or a DataArray, got {x!r}")
        u = ds["n"].astype(float) / ds["d1"].astype(float)
        ratio = 1.0 / u
    else:
        u = x.astype(float)
        ratio = ds["d1"].astype(float) / ds["n"].astype(float) if "d1" in ds.coords and "n" in ds.coords else None
    v, u = xr.broadcast(_load(v), _load(u))
    keep = np.isfinite(v) & np.isfinite(u) & (u > 0)
    if ratio is not None and min_ratio is not None:
        keep = keep & (xr.broadcast(_load(ratio), v)[0] > min_ratio)
    pos = keep & (v > 0)
    dropped = (keep & ~pos)
    by = [d for d in by if d in v.dims]
    pool = [d for d in v.dims if d not in by]
    if not pool:
        raise ValueError("nothing to pool: every dim of var is in by")
    V = v.where(pos).transpose(*by, *pool)
    U = u.where(pos).transpose(*by, *pool)
    lead = V.shape[:len(by)]
    flat = (int(np.prod(lead, dtype=int)), -1)
    yv = V.values.reshape(flat)
    xv = U.values.reshape(flat)
    with np.errstate(invalid="ignore", divide="ignore"):
        ly, lx = np.log(yv), np.log(xv)
    ok = np.isfinite(ly) & np.isfinite(lx)
    f = _wls(lx, ly, ok.astype(float))
    m = f["m"]
    dof = m - 2
    with np.errstate(invalid="ignore", divide="ignore"):
        fitted = (m >= 2) & (f["sxx"] > 1e-300)
        b = np.where(fitted, f["b"], np.nan)
        se = np.where(fitted & (dof > 0), np.sqrt(f["chi2"] / np.where(dof > 0, dof, np.nan) / f["sxx"]), np.nan)
        my = np.where(ok, ly, 0.0).sum(-1) / m
        sst = np.where(ok, (np.where(ok, ly, 0.0) - my[..., None]) ** 2, 0.0).sum(-1)
        r2 = np.where(fitted, 1.0 - f["chi2"] / np.where(sst > 0, sst, np.nan), np.nan)
        z = (b - expected) / se
    reason = np.where(m < 2, "fewer than 2 usable values", np.where(~fitted, "no spread in the ratio",
                      np.where(m == 2, "2 points: no standard error", "ok")))
    verdict = np.where(~np.isfinite(z), "undetermined", np.where(np.abs(z) <= z_crit, "consistent", "disagrees"))
    tmpl = V.isel({d: 0 for d in pool}, drop=True)
    tmpl = tmpl.drop_vars([c for c in tmpl.coords if set(V[c].dims) & set(pool)], errors="ignore")

    def g(a):
        return tmpl.copy(data=np.asarray(a).reshape(lead))

    out = xr.Dataset({"exponent": g(b), "stderr": g(se), "prefactor": g(np.exp(np.where(fitted, f["a"], np.nan))),
                      "npoints": g(m), "dropped": g(dropped.sum(pool).transpose(*by).values), "r2": g(r2),
                      "z": g(z), "verdict": g(verdict.astype(str)), "reason": g(reason.astype(str))})
    out["residuals"] = V.copy(data=f["r"].reshape(V.shape)).transpose(*v.dims)
    out.attrs.update(fit=f"log {var} = log C + a log(n/d1), pooled over {pool}", expected=float(expected),
                     equation="Eq. 67 concentration")
    return out


# --------------------------------------------------------------------------- claims table


def _f(v, digits=3):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not np.isfinite(v):
        return "inf" if v == np.inf else ("-inf" if v == -np.inf else "n/a")
    return f"{v:.{digits}g}"


def _cell(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def claims_table(rows: Sequence[Mapping]) -> str:
    """A Markdown table ``claim | prediction | measured (interval) | verdict``.

    Each row: a mapping with ``claim`` (text), ``prediction`` (number or text), ``measured``
    (number, NaN for none), optionally ``lo, hi`` (the interval, shown in parentheses) or
    ``stderr`` (shown as ``+- se``), ``verdict`` (text; default ``"undetermined"``) and
    ``note`` (appended to the verdict, e.g. the reason a fit is NaN). ``fit_rows`` builds
    rows from a ``fit_scaling`` / ``concentration_law`` result.
    """
    out = ["| claim | prediction | measured (interval) | verdict |", "|---|---|---|---|"]
    for r in rows:
        meas = _f(r.get("measured", np.nan))
        if r.get("lo") is not None and r.get("hi") is not None:
            meas += f" ({_f(r['lo'])}, {_f(r['hi'])})"
        elif r.get("stderr") is not None:
            meas += f" +- {_f(r['stderr'], 2)}"
        verdict = r.get("verdict") or "undetermined"
        if r.get("note"):
            verdict = f"{verdict} ({r['note']})"
        out.append("| " + " | ".join(_cell(c) for c in (r.get("claim", ""), _f(r.get("prediction", "")),
                                                           meas, verdict)) + " |")
    return "\n".join(out) + "\n"


def fit_rows(fit, claim, *, prediction=None):
    """Rows for ``claims_table`` from a ``fit_scaling`` (one per prediction and per value of the
    other dims) or ``concentration_law`` result (one per activation). The claim text gets the
    labels of the other dims; the interval is ``ci_lo, ci_hi`` when present."""
    rows = []
    if "prediction" in fit.dims:
        preds = [prediction] if prediction is not None else list(fit["prediction"].values)
    else:
        preds = [None]
    grid_dims = [d for d in fit["exponent"].dims]
    idxs = list(np.ndindex(*[fit.sizes[d] for d in grid_dims])) if grid_dims else [()]
    for p in preds:
        f = fit.sel(prediction=p) if p is not None else fit
        for idx in idxs:
            pt = f.isel(dict(zip(grid_dims, idx)))
            label = ", ".join(f"{d}={pt[d].item()}" for d in grid_dims if d in pt.coords)
            reason = str(pt["reason"].item()) if "reason" in pt else "ok"
            row = {"claim": claim + (f" [{label}]" if label else ""),
                   "prediction": float(pt["predicted"]) if "predicted" in pt else fit.attrs.get("expected", ""),
                   "measured": float(pt["exponent"]),
                   "verdict": str(pt["verdict"].item()) if "verdict" in pt else None,
                   "note": None if reason == "ok" else reason}
            if p is not None:
                row["claim"] += f" vs {p}"
            if "ci_lo" in pt and np.isfinite(float(pt["ci_lo"])):
                row["lo"], row["hi"] = float(pt["ci_lo"]), float(pt["ci_hi"])
            elif "stderr" in pt:
                row["stderr"] = float(pt["stderr"])
            rows.append(row)
    return rows
