"""Statistics of a result cube: xarray in, xarray out, reducing over ``trial``.

Every function takes the cube of ``open_results`` (or any Dataset/DataArray with the same
dims: ``GRID_AXES + ("trial",) [+ ("t",)]``) and returns an ``xarray`` object over the grid
axes that remain. Dask-backed inputs stay lazy: reductions are xarray reductions and the
per-grid-point kernels run through ``xarray.apply_ufunc(..., dask="parallelized")`` (the
core dimension is rechunked to one chunk first). Call ``.compute()`` on the result.

Equations (the paper's numbers, see MATH.md):

- ``concentration_summary``: ``sigma_min(phi(W0 X)) / eq67_lower_sharp`` and
  ``sigma_max(phi(W0 X)) / eq67_upper_sharp`` (Eq. 67, sharp form of Eq. 58), and the
  empirical ``delta1``, ``delta2`` of Eq. 67.
- ``bound_verdicts`` / ``bound_events`` / ``holding_rate`` / ``violation_rate``: per-trial events
  such as ``sigma_min(F) >= sqrt((1 - delta) * eq58_lower_sharp)`` (Eq. 58 + 67), each measured
  value taken with its numerical error (a margin inside it is *inconclusive*, never a violation),
  with a binomial confidence interval (95% Clopper-Pearson by default: ``RATE_METHOD``). ``rmt_engine.testing`` and
  ``rmt-engine check`` use the same verdicts.
- ``fit_power_law``: least squares on logs, e.g. ``lambda_min(M0) ~ d1^1`` (Eq. 58: E[M0]
  is linear in d1).
- ``width_threshold`` / ``fit_threshold_exponent``: the smallest ``d1`` at which the margin
  of Eq. 9 exceeds 1 in a fraction ``level`` of trials, and its exponent in ``n``: Eq. 21
  predicts 3/2, Appendix E (no bound on V_k) 5/3.
- ``c0_spike``: ``lambda_max(M0) / (d1 c_0(w1)^2 n)``: when ``c_0 != 0`` the all-ones term
  ``d1 c_0^2 11^T`` of E[M0] (Eq. 56) gives an outlier eigenvalue ``~ d1 c_0^2 n``.
"""

from __future__ import annotations

import math

import numpy as np

from ..montecarlo.fields import AUTO_T, FIELDS, SYMBOLIC_T
from ..study.store import ALL_AXES, CASE_DIM, GRID_AXES  # noqa: F401 - re-exported: A.GRID_AXES, A.ALL_AXES

PER_T_FIELDS = tuple(b for b, info in FIELDS.items() if info.per_t)

DEFAULT_QUANTILES = (0.01, 0.05, 0.5, 0.95, 0.99)
#: The one interval of a holding rate across the report, ``rmt-engine check``, ``rmt_engine.testing``
#: and ``ds.rmt``: two-sided exact (Clopper-Pearson) at 95% (it never under-covers; Wilson can).
RATE_METHOD, RATE_CONFIDENCE = "clopper-pearson", 0.95


def interval_label(confidence: float = RATE_CONFIDENCE, method: str = RATE_METHOD) -> str:
    """``"95% Clopper-Pearson"``: how every output names its interval."""
    name = {"clopper-pearson": "Clopper-Pearson", "exact": "Clopper-Pearson", "wilson": "Wilson"}.get(method, method)
    return f"{100 * confidence:g}% {name}"
#: Exponents of the width threshold d1*(n) predicted by the paper.
THRESHOLD_EXPONENTS = {"Eq. 21": 1.5, "App. E": 5.0 / 3.0}


def _xr():
    import xarray as xr  # noqa: PLC0415

    return xr


def _single_chunk(obj, dims):
    """Rechunk ``obj`` so each of ``dims`` is one chunk (needed by apply_ufunc/quantile on dask)."""
    if getattr(obj, "chunks", None):
        return obj.chunk({d: -1 for d in dims if d in obj.dims})
    return obj


def available_t(ds) -> list:
    """The Khatri-Rao orders of a cube: its explicit ``t`` coordinate, then ``"auto"`` and ``"best"`` if stored."""
    out = [int(t) for t in ds["t"].values] if "t" in ds.dims else []
    for sym in SYMBOLIC_T:
        if f"lower_undefined_{sym}" in ds or f"eq58_lower_sharp_{sym}" in ds:
            out.append(sym)
    return out


def t_label(ds, t) -> str:
    """``"t = 3"``, or for ``"auto"`` / ``"best"`` the orders it took: ``"t = t_auto (2, 4)"`` (report and
    figure titles)."""
    if t in SYMBOLIC_T and f"t_{t}" in ds:
        vals = sorted({int(v) for v in np.ravel(ds[f"t_{t}"].values) if np.isfinite(v)})
        return f"t = t_{t} (" + (", ".join(map(str, vals)) or "none") + ")"
    return f"t = {t}"


def default_t(ds):
    """``"auto"`` when the cube has it, else its first explicit order (None if it has neither)."""
    ts = available_t(ds)
    return AUTO_T if AUTO_T in ts else (ts[0] if ts else None)


def at_t(ds, t):
    """``ds`` with every t-dependent field at one Khatri-Rao order, under its base name.

    ``t``: an explicit order (``ds.sel(t=t)``) or ``"auto"`` / ``"best"`` (the ``*_auto`` / ``*_best``
    variables, each at its grid point's ``t_auto`` / ``t_best``). ``None`` returns ``ds`` unchanged. A
    ValueError names the orders the cube has when ``t`` is not one of them.
    """
    if t is None:
        return ds
    if isinstance(t, str) and t.lower() in SYMBOLIC_T:
        sym = t.lower()
        ren = {f"{b}_{sym}": b for b in PER_T_FIELDS if f"{b}_{sym}" in ds}
        if not ren:
            raise ValueError(f"t = {sym!r} is not in this cube (its orders: {available_t(ds)})")
        return ds.drop_vars([b for b in ren.values() if b in ds]).rename(ren)
    try:
        ti = int(t)
    except (TypeError, ValueError):
        raise ValueError(f"t must be an integer order, 'auto' or 'best', got {t!r}") from None
    if "t" not in ds.dims or ti not in set(int(x) for x in ds["t"].values):
        raise ValueError(f"t = {t!r} is not in this cube (its orders: {available_t(ds)})")
    return ds.sel(t=ti)



def lower_defined(ds):
    """True where the Eq. 58/67 lower bound at the selected t is defined (``lower_undefined == 0``).

    An undefined bound (``c_t(w1) = 0`` or ``n > C(d0+t-1, t)``, see ``rmt_engine.theory.orders``) is 0 by
    construction: it never enters a ratio or a holding count. Cubes without the reason field fall
    back to ``eq58_lower_sharp > 0``.
    """
    if "lower_undefined" in ds:
        return ds["lower_undefined"] == 0
    return ds["eq58_lower_sharp"] > 0


def _stats(da, quantiles, dim="trial"):
    """mean, std, quantiles of ``da`` over ``dim`` (NaN and inf ignored), as a Dataset.

    A slice with no finite value gives NaN (std: fewer than two), computed without dividing by
    zero, so no RuntimeWarning is raised from inside dask.
    """
    xr = _xr()
    da = _single_chunk(da, [dim])
    finite = da.where(np.isfinite(da))
    count = finite.count(dim)
    mean = finite.sum(dim) / count.where(count > 0)
    var = ((finite - mean) ** 2).sum(dim) / (count - 1).where(count > 1)
    return xr.Dataset({"mean": mean, "std": np.sqrt(var), "q": _quantiles(finite, quantiles, dim), "count": count})


def _quantiles(da, quantiles, dim):
    """NaN-skipping quantiles of ``da`` over ``dim`` (a ``quantile`` dim); NaN for all-NaN slices.

    Such a slice is filled with zeros for the computation and masked after it, so NumPy's
    "All-NaN slice" warning is not raised.
    """
    some = da.count(dim) > 0
    return da.where(some, 0.0).quantile(list(quantiles), dim=dim).where(some)


# --------------------------------------------------------------------------- concentration


def concentration_summary(ds, quantiles=DEFAULT_QUANTILES, *, t=None, dim="trial"):
    """Per grid point distribution of the Eq. 67 ratios and of delta1, delta2.

    Returns a Dataset with, for each quantity ``Q`` in
    ``lower_ratio = sigma_min_F / eq67_lower_sharp`` (Eq. 67 lower bound, sharp form; the
    bound holds in a trial when the ratio is >= 1; NaN where the bound is 0, e.g. c_t = 0 or
    n > C(d0+t-1, t): there is nothing to compare with), ``upper_ratio = sigma_max_F /
    eq67_upper_sharp`` (Eq. 67 upper bound; holds when <= 1), ``delta1``, ``delta2`` (the
    empirical deviations of Eq. 67: ``1 - lambda_min(M0)/lambda_min(E[M0])`` and
    ``lambda_max(M0)/lambda_max(E[M0]) - 1``): ``Q_mean``, ``Q_std``, ``Q_q`` (along a
    ``quantile`` dim) and ``Q_count`` (finite trials). ``t`` selects one Khatri-Rao order
    (else the lower ratio keeps the ``t`` dim).
    """
    xr = _xr()
    ds = at_t(ds, t)
    defined = lower_defined(ds) & (ds["eq67_lower_sharp"] > 0)
    quantities = {
        "lower_ratio": ds["sigma_min_F"] / ds["eq67_lower_sharp"].where(defined),
        "upper_ratio": ds["sigma_max_F"] / ds["eq67_upper_sharp"],
        "delta1": ds["delta1"],
        "delta2": ds["delta2"],
    }
    if "eq67_lower_hadamard" in ds:
        had = ds["eq67_lower_hadamard"]
        quantities["hadamard_ratio"] = ds["sigma_min_F"] / had.where(had > 0)
    out = xr.Dataset()
    for name, da in quantities.items():
        s = _stats(da, quantiles, dim)
        for k in s.data_vars:
            out[f"{name}_{k}"] = s[k]
    out.attrs["equations"] = "Eq. 58 (sharp), Eq. 67"
    out.attrs["description"] = ("lower_ratio = sigma_min(phi(W0X)) / sqrt((1-delta1) eq58_lower_sharp), "
                                "upper_ratio = sigma_max(phi(W0X)) / sqrt((1+delta2) eq58_upper_sharp)")
    return out


# --------------------------------------------------------------------------- events and rates


def _event(cond, *inputs):
    """``cond`` as float 1/0, NaN where any input is NaN (an unwritten or undefined trial)."""
    valid = None
    for x in inputs:
        v = np.isfinite(x)
        valid = v if valid is None else valid & v
    return cond.astype(float).where(valid)


#: Per-trial verdict codes of ``bound_verdicts`` (NaN: missing, or the bound is undefined there).
HELD, VIOLATED, INCONCLUSIVE = 1.0, 0.0, -1.0
_EPS = float(np.finfo(np.float64).eps)
_SAFETY = 4.0  # the constant of rmt_engine.linalg.tsqr's error bounds


def compare_with_error(measured, bound, sense: str, relerr=0.0, bound_relerr=0.0):
    """The verdict code per entry of ``measured >= bound`` (``sense=">="``) or ``<=``, each side
    known to a relative error: ``HELD`` when the inequality holds for every value inside the errors,
    ``VIOLATED`` when it fails for every value inside them, ``INCONCLUSIVE`` when the margin is within
    the errors (never counted as either), NaN where an input is NaN.

    ``relerr``, ``bound_relerr``: bounds on ``|computed - exact| / exact`` (``inf`` = unknown)."""
    xr = _xr()
    m_lo = xr.where(np.isinf(relerr), -np.inf, measured * (1.0 - relerr))
    m_hi = xr.where(np.isinf(relerr), np.inf, measured * (1.0 + relerr))
    b_lo = xr.where(np.isinf(bound_relerr), -np.inf, bound * (1.0 - bound_relerr))
    b_hi = xr.where(np.isinf(bound_relerr), np.inf, bound * (1.0 + bound_relerr))
    if sense == ">=":
        held, violated = m_lo >= b_hi, m_hi < b_lo
    elif sense == "<=":
        held, violated = m_hi <= b_lo, m_lo > b_hi
    elif sense == ">":
        held, violated = m_lo > b_hi, m_hi <= b_lo
    else:
        raise ValueError(f"sense must be '>=', '<=' or '>', got {sense!r}")
    code = xr.where(held, HELD, xr.where(violated, VIOLATED, INCONCLUSIVE))
    valid = np.isfinite(measured) & np.isfinite(bound)
    return code.where(valid)


def sigma_min_relerr(ds):
    """The relative error bound of ``sigma_min_F`` per trial: the cube's ``sigma_min_F_relerr``, or for
    cubes written before it was recorded the Gram route's bound ``4 (sqrt(d1) + n) eps
    lambda_max(M0) / lambda_min(M0)`` (``linalg.tsqr.gram_relative_error``; 0 where d1 < n: exactly 0);
    0 for a Dataset that carries neither (hand-made test data: the values are taken as exact)."""
    if "sigma_min_F_relerr" in ds:
        return ds["sigma_min_F_relerr"]
    if not {"lambda_min_M0", "lambda_max_M0", "n", "d1"} <= set(ds.variables):
        return 0.0
    d1, n = ds["d1"].astype(float), ds["n"].astype(float)
    err = _SAFETY * (np.sqrt(d1) + n) * _EPS * ds["lambda_max_M0"]
    lam = ds["lambda_min_M0"]
    rel = (err / lam).where(lam > err, np.inf)
    return rel.where(d1 >= n, 0.0)


def _eigen_relerr(ds, rows=None):
    """Relative error bound of a well-conditioned extreme eigenvalue (lambda_max of M0 or E[M0]):
    ``4 (sqrt(rows) + n) eps`` (0 without ``n``: hand-made data)."""
    if "n" not in ds.variables:
        return 0.0
    rows = 0.0 if rows is None else rows
    return _SAFETY * (np.sqrt(rows) + ds["n"].astype(float)) * _EPS


def _em0_min_relerr(ds):
    """Relative error bound of lambda_min(E[M0]) (eigen-solve of an n x n matrix)."""
    if not {"n", "lambda_max_EM0"} <= set(ds.variables):
        return 0.0
    lam = ds["lambda_min_EM0"]
    err = _SAFETY * ds["n"].astype(float) * _EPS * ds["lambda_max_EM0"]
    return (err / lam).where(lam > err, np.inf)


def _v_eq67_lower(key):
    def verdict(ds, delta, thr):
        all_orders = key in ("eq58_lower_hadamard", "eq58_lower_series")  # 0 = undefined; no t, no xkr error
        defined = ds[key] > 0 if all_orders else lower_defined(ds)
        lo = np.sqrt((1.0 - delta) * ds[key]).where(defined)
        r_xkr = ds["sigma_min_xkr_relerr"] if not all_orders and "sigma_min_xkr_relerr" in ds else 0.0
        return compare_with_error(ds["sigma_min_F"], lo, ">=", sigma_min_relerr(ds), r_xkr)
    return verdict


def _v_eq67_upper(ds, delta, thr):
    hi = np.sqrt((1.0 + delta) * ds["eq58_upper_sharp"])
    return compare_with_error(ds["sigma_max_F"], hi, "<=", _eigen_relerr(ds, ds["d1"].astype(float)))


def _v_eq67_upper_paper(ds, delta, thr):
    d1, n = ds["d1"].astype(float), ds["n"].astype(float)
    c0, c1, cinf2, smax = ds["c0"], ds["c1"], ds["cinf2"], ds["sigma_max_X"]
    # eq58_upper = w1^{2 r2} d1 (n c0^2 + (c1^2 + cinf2) sigma_max_X^2): the homogeneity factor w1^{r2}
    # of the paper's Eq. 67 upper bound (1 at w1 = 1) follows from it exactly.
    hom = np.sqrt(ds["eq58_upper"] / (d1 * (n * c0**2 + (c1**2 + cinf2) * smax**2)))
    hi = math.sqrt(1.0 + delta) * hom * (np.sqrt((c1**2 + cinf2) * d1) * smax + np.abs(c0) * np.sqrt(d1 * n))
    return compare_with_error(ds["sigma_max_F"], hi, "<=", _eigen_relerr(ds, d1))


def _v_conc_lower(ds, delta, thr):
    if not {"lambda_min_M0", "lambda_min_EM0"} <= set(ds.variables):  # hand-made data with delta1 only
        return compare_with_error(ds["delta1"], _xr().full_like(ds["delta1"], delta), "<=")
    r = sigma_min_relerr(ds)
    lam_min_E = ds["lambda_min_EM0"]
    if "EM0_singular" in ds:
        lam_min_E = lam_min_E.where(ds["EM0_singular"] != 1)  # delta1 is NaN there: undefined
    return compare_with_error(ds["lambda_min_M0"], (1.0 - delta) * lam_min_E, ">=", 2.0 * r + r * r,
                              _em0_min_relerr(ds))


def _v_conc_upper(ds, delta, thr):
    if not {"lambda_max_M0", "lambda_max_EM0"} <= set(ds.variables):
        return compare_with_error(ds["delta2"], _xr().full_like(ds["delta2"], delta), "<=")
    return compare_with_error(ds["lambda_max_M0"], (1.0 + delta) * ds["lambda_max_EM0"], "<=",
                              _eigen_relerr(ds, ds["d1"].astype(float)), _eigen_relerr(ds))


def _v_margin(ds, delta, thr):
    # margin = C alpha mu^6 / (beta^2 nu^2 h): 6x the relative error of mu = sigma_min_F, plus nu's
    r = 6.0 * sigma_min_relerr(ds) + 2.0 * _eigen_relerr(ds)
    return compare_with_error(ds["margin"], _xr().full_like(ds["margin"], thr), ">", r)


def _v_eq69(ds, delta, thr):
    return compare_with_error(ds["eq69_ratio"], _xr().full_like(ds["eq69_ratio"], 1.0), "<=", _eigen_relerr(ds))


#: Every event of ``bound_verdicts``: name -> (variables it needs, verdict function).
VERDICTS = {
    "eq67_lower_sharp": (("sigma_min_F", "eq58_lower_sharp"), _v_eq67_lower("eq58_lower_sharp")),
    "eq67_lower": (("sigma_min_F", "eq58_lower"), _v_eq67_lower("eq58_lower")),
    "eq67_lower_hadamard": (("sigma_min_F", "eq58_lower_hadamard"), _v_eq67_lower("eq58_lower_hadamard")),
    "eq67_lower_series": (("sigma_min_F", "eq58_lower_series"), _v_eq67_lower("eq58_lower_series")),
    "eq67_upper_sharp": (("sigma_max_F", "eq58_upper_sharp"), _v_eq67_upper),
    "eq67_upper": (("sigma_max_F", "eq58_upper", "c0", "c1", "cinf2", "sigma_max_X"), _v_eq67_upper_paper),
    "delta1": (("delta1",), _v_conc_lower),
    "delta2": (("delta2",), _v_conc_upper),
    "margin": (("margin",), _v_margin),
    "eq69": (("eq69_ratio",), _v_eq69),
}


#: Event names of earlier versions -> the cube's names (one vocabulary: an event is named after the
#: cube variable of its bound). A DeprecationWarning names the new one.
RENAMED_EVENTS = {"eq67_lower_paper": "eq67_lower", "eq67_upper_paper": "eq67_upper", "conc_lower": "delta1",
                  "conc_upper": "delta2", "eq9_margin": "margin"}


def event_name(name: str, ds=None) -> str:
    """The canonical name of an event (``VERDICTS``): renamed names map with a DeprecationWarning, and
    ``eq67_lower`` / ``eq67_upper`` warn where they differ from the sharp form (w1 != 1): until 0.2
    ``check`` called the sharp bounds by these names; they are the cube's paper-form variables now."""
    import warnings  # noqa: PLC0415

    if name in RENAMED_EVENTS:
        warnings.warn(f"event {name!r} is now {RENAMED_EVENTS[name]!r} (the cube variable's name)", DeprecationWarning,
                      stacklevel=3)
        return RENAMED_EVENTS[name]
    if name in ("eq67_lower", "eq67_upper") and ds is not None and "w1" in getattr(ds, "coords", {}):
        w1 = np.asarray(ds["w1"].values, dtype=float)
        if np.any(w1 != 1.0):
            warnings.warn(f"{name!r} is the paper's form (the cube's {name}: w1^r factors, not a bound in general for "
                          f"w1 != 1); the sharp bound is {name}_sharp (check's {name} before rmt_engine 0.2)",
                          UserWarning, stacklevel=3)
    return name


def check_delta(delta, upper_only: bool = False) -> float:
    """``delta`` as a float, or a ValueError: in [0, 1) for the lower bounds (sqrt(1 - delta)), >= 0 and
    finite for the upper ones only (``upper_only``) -- the ranges ``rmt-engine check`` enforces."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float, np.integer, np.floating)):
        raise ValueError(f"delta must be a number, got {delta!r}")
    d = float(delta)
    if upper_only:
        if not (0.0 <= d < math.inf):
            raise ValueError(f"delta must be finite and >= 0, got {delta!r}")
    elif not (0.0 <= d < 1.0):
        raise ValueError(f"delta must lie in [0, 1) (the lower bounds use sqrt(1 - delta)), got {delta!r}")
    return d


def bound_verdicts(ds, delta=0.2, *, t=None, margin_threshold=1.0, names=None):
    """Per-trial verdict codes (``HELD`` 1, ``VIOLATED`` 0, ``INCONCLUSIVE`` -1, NaN = missing or
    undefined) of the paper's bounds, each measured value taken with its error
    (``compare_with_error``): a trial whose margin to the bound is inside the numerical error of the
    measured value (``sigma_min_F_relerr``: M0 = F^T F squares cond(F); the accurate QR route is taken
    above ``[study] accuracy``) or of the bound (``sigma_min_xkr_relerr``) is inconclusive, never
    violated. Where the cube flags ``EM0_singular``, delta1 is NaN and ``conc_lower`` undefined.
    ``names``: the events to compute (default: every one whose variables the Dataset has).

    Each event is named after the cube variable of its bound (``RENAMED_EVENTS`` maps earlier names):

    - ``eq67_lower_sharp``: ``sigma_min(F) >= sqrt((1 - delta) * eq58_lower_sharp)`` (Eq. 58 + 67, sharp);
      NaN (undefined, never held) where the bound is undefined at that t (``lower_defined``);
    - ``eq67_lower``: the same with the paper's form ``eq58_lower`` (equal to the sharp one at w1 = 1);
    - ``eq67_lower_hadamard``: the same with the full sharp bound ``eq58_lower_hadamard`` (0 = undefined);
    - ``eq67_lower_series``: the same with the sharper all-orders bound ``eq58_lower_series``;
    - ``eq67_upper_sharp``: ``sigma_max(F) <= sqrt((1 + delta) * eq58_upper_sharp)`` (Eq. 58 + 67);
    - ``eq67_upper``: ``sigma_max(F) <= sqrt(1 + delta) w1^r2 (sqrt((c1^2 + cinf2) d1) sigma_max(X)
      + |c0| sqrt(d1 n))`` (Eq. 67 as printed; w1^r2 recovered from ``eq58_upper``);
    - ``delta1``: ``lambda_min(M0) >= (1 - delta) lambda_min(E[M0])`` (Eq. 67, i.e. delta1 <= delta);
    - ``delta2``: ``lambda_max(M0) <= (1 + delta) lambda_max(E[M0])`` (Eq. 67, delta2 <= delta);
    - ``margin``: ``margin > margin_threshold`` (Eq. 9; margin ~ mu^6, so 6x sigma_min_F's error);
    - ``eq69``: ``eq69_ratio <= 1`` (sigma_max(V0) <= w2 (2 sqrt(d1) + sqrt(d2))).
    """
    xr = _xr()
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"bound_verdicts needs an xarray.Dataset (a result cube), got {type(ds).__name__}")
    check_delta(delta, upper_only=names is not None and all(
        RENAMED_EVENTS.get(k, k) in ("eq67_upper", "eq67_upper_sharp", "delta2") for k in names))
    ds = at_t(ds, t)
    if names is None:
        names = [k for k, (need, _) in VERDICTS.items() if all(v in ds.variables for v in need)]
    else:
        names = [event_name(k, ds) for k in names]
        for k in names:
            missing = [v for v in VERDICTS.get(k, ((), None))[0] if v not in ds.variables]
            if missing:
                raise ValueError(f"event {k!r} needs the variables {missing}, which this Dataset does not have")
    unknown = [k for k in names if k not in VERDICTS]
    if unknown:
        raise ValueError(f"unknown event(s) {unknown}; valid events: {', '.join(VERDICTS)}")
    out = xr.Dataset({k: VERDICTS[k][1](ds, delta, margin_threshold) for k in names})
    out.attrs["delta"] = float(delta)
    return out


def bound_events(ds, delta=0.2, *, t=None, margin_threshold=1.0):
    """Per-trial events (1 = holds, 0 = fails, NaN = missing, undefined or inconclusive) of the
    paper's bounds: ``bound_verdicts`` with its inconclusive trials (margin inside the numerical
    error) set to NaN, so they are counted neither as held nor as violated."""
    v = bound_verdicts(ds, delta, t=t, margin_threshold=margin_threshold)
    out = v.where(v != INCONCLUSIVE)
    out.attrs.update(v.attrs)
    return out


def binomial_interval(k, n, confidence=RATE_CONFIDENCE, method=RATE_METHOD):
    """Two-sided confidence interval ``(lo, hi)`` of a binomial proportion (NumPy arrays).

    ``method``: ``"wilson"`` (score interval) or ``"clopper-pearson"`` (exact, via the beta
    distribution, ``scipy.stats.beta``). NaN where ``n == 0``.
    """
    from scipy import stats  # noqa: PLC0415

    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "wilson":
            z = stats.norm.ppf(1.0 - alpha / 2.0)
            p = k / n
            den = 1.0 + z * z / n
            center = (p + z * z / (2 * n)) / den
            half = z / den * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
            lo, hi = np.clip(center - half, 0, 1), np.clip(center + half, 0, 1)
        elif method in ("clopper-pearson", "exact"):
            lo = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
            hi = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
        else:
            raise ValueError(f"unknown method {method!r}: wilson or clopper-pearson")
    bad = ~(n > 0)
    lo = np.where(bad, np.nan, lo)
    hi = np.where(bad, np.nan, hi)
    return lo, hi


def _rate(event, confidence, method, dim, inconclusive=None):
    xr = _xr()
    k = event.sum(dim, skipna=True)
    n = event.count(dim)
    lo, hi = xr.apply_ufunc(binomial_interval, k, n, kwargs={"confidence": confidence, "method": method},
                            output_core_dims=[[], []], dask="parallelized", output_dtypes=[float, float])
    out = xr.Dataset({"rate": k / n.where(n > 0), "lo": lo, "hi": hi, "successes": k, "trials": n})
    if inconclusive is not None:
        out["inconclusive"] = inconclusive.sum(dim)
    out.attrs.update(confidence=float(confidence), method=method)
    return out


def holding_rate(ds, event="eq67_lower_sharp", *, delta=0.2, t=None, confidence=RATE_CONFIDENCE, method=RATE_METHOD,
                 dim="trial"):
    """Fraction of trials in which ``event`` holds, with a binomial confidence interval.

    ``ds``: the cube (then ``event`` names one of ``bound_verdicts(ds, delta)``) or a DataArray of
    per-trial events (1/0/NaN or bool, or verdict codes with -1 = inconclusive). Returns a Dataset
    ``rate, lo, hi, successes, trials`` (and ``inconclusive``: trials whose margin to the bound is
    inside the numerical error, counted in neither) over the remaining dims; NaN trials are not counted.
    """
    ev, inc = _as_event(ds, event, delta, t)
    return _rate(ev, confidence, method, dim, inc)


def violation_rate(ds, event="eq67_lower_sharp", *, delta=0.2, t=None, confidence=RATE_CONFIDENCE, method=RATE_METHOD,
                   dim="trial"):
    """Fraction of trials in which ``event`` fails (``1 - holding_rate``), with its CI."""
    ev, inc = _as_event(ds, event, delta, t)
    out = _rate(1.0 - ev, confidence, method, dim, inc)
    out.attrs["event"] = f"not {event}" if isinstance(event, str) else "violation"
    return out


def _as_event(ds, event, delta, t):
    """(events 1/0/NaN, inconclusive mask or None)."""
    xr = _xr()
    if isinstance(ds, xr.Dataset):
        event = event_name(event, ds)
        ev = bound_verdicts(ds, delta, t=t, names=[event])[event]
    else:
        ev = ds
    if ev.dtype == bool:
        return ev.astype(float), None
    inc = ev == INCONCLUSIVE
    return ev.where(~inc), inc


# --------------------------------------------------------------------------- power laws


def _loglinfit(x, y):
    """Least squares ``log y = a + b log x`` on the finite positive pairs: (b, se_b, exp(a), m, r2)."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    m = int(ok.sum())
    nan = (np.nan, np.nan, np.nan, float(m), np.nan)
    if m < 2:
        return nan
    lx, ly = np.log(x[ok]), np.log(y[ok])
    mx, my = lx.mean(), ly.mean()
    sxx = float(((lx - mx) ** 2).sum())
    if sxx <= 0:
        return nan
    b = float(((lx - mx) * (ly - my)).sum() / sxx)
    a = my - b * mx
    res = ly - (a + b * lx)
    ssr = float((res ** 2).sum())
    sst = float(((ly - my) ** 2).sum())
    se = math.sqrt(ssr / (m - 2) / sxx) if m > 2 else np.nan
    r2 = 1.0 - ssr / sst if sst > 0 else 1.0
    return b, se, math.exp(a), float(m), r2


def _fit_kernel(x, y):
    # x, y: (..., m) stacked observations; loop over the leading grid
    shape = y.shape[:-1]
    x = np.broadcast_to(x, y.shape)
    outs = [np.empty(shape) for _ in range(5)]
    for idx in np.ndindex(*shape):
        r = _loglinfit(x[idx], y[idx])
        for o, v in zip(outs, r):
            o[idx] = v
    return tuple(outs)


def fit_power_law(da, dim, *, x=None, pool_dims=("trial",)):
    """Fit ``da ~ A * x^b`` along ``dim`` by least squares on logs.

    ``x``: the regressor (default the coordinate ``dim``; may be a DataArray broadcastable to
    ``da``, e.g. ``d1 * c0_w**2 * n``). Dims in ``pool_dims`` present in ``da`` (default
    ``trial``) are pooled as repeated observations. Non-positive and non-finite values are
    dropped. Returns a Dataset ``exponent``, ``stderr`` (standard error of the slope, from the
    residuals; NaN with 2 points), ``prefactor`` (A), ``npoints``, ``r2`` over the other dims.
    """
    xr = _xr()
    if x is None:
        x = da[dim]
    x = x.broadcast_like(da) if isinstance(x, xr.DataArray) else xr.DataArray(x, dims=[dim]).broadcast_like(da)
    core = [dim] + [d for d in pool_dims if d in da.dims and d != dim]
    stack = "_obs"
    ys = _single_chunk(da.astype(float), core).stack({stack: core})
    xs = _single_chunk(x.astype(float), core).stack({stack: core})
    ys = ys.drop_vars([c for c in ys.coords if c in core + [stack]], errors="ignore")
    xs = xs.drop_vars([c for c in xs.coords if c in core + [stack]], errors="ignore")
    res = xr.apply_ufunc(_fit_kernel, xs, ys, input_core_dims=[[stack], [stack]],
                         output_core_dims=[[]] * 5, dask="parallelized", output_dtypes=[float] * 5)
    out = xr.Dataset(dict(zip(("exponent", "stderr", "prefactor", "npoints", "r2"), res)))
    out.attrs["fit"] = f"log y = log A + b log x along {dim} (least squares; pooled over {core[1:]})"
    return out


def compare_exponent(fit, expected):
    """z-score ``(exponent - expected) / stderr`` of a ``fit_power_law`` result."""
    return (fit["exponent"] - expected) / fit["stderr"]


# --------------------------------------------------------------------------- width threshold


def _crossing(x, p, level):
    """Smallest x (log-interpolated) where p first reaches ``level``; (x*, censored_below)."""
    x = np.asarray(x, dtype=float)
    p = np.asarray(p, dtype=float)
    order = np.argsort(x)
    x, p = x[order], p[order]
    hit = np.nonzero(np.isfinite(p) & (p >= level))[0]
    if hit.size == 0:
        return np.nan, False
    k = int(hit[0])
    if k == 0:
        return x[0], True
    p0, p1 = p[k - 1], p[k]
    if not np.isfinite(p0) or p1 == p0:
        return x[k], False
    f = (level - p0) / (p1 - p0)
    return float(np.exp(np.log(x[k - 1]) + f * (np.log(x[k]) - np.log(x[k - 1])))), False


def _crossing_kernel(x, p, level):
    shape = p.shape[:-1]
    xs = np.empty(shape)
    cs = np.empty(shape, dtype=bool)
    for idx in np.ndindex(*shape):
        xs[idx], cs[idx] = _crossing(x, p[idx], level)
    return xs, cs


def width_threshold(ds, level=0.95, *, var="margin", threshold=1.0, event=None, dim="d1", t=None):
    """Smallest width ``d1`` at which ``var > threshold`` in at least ``level`` of the trials.

    For each grid point other than ``d1`` (n, d0, activation, ...): the holding fraction
    ``p(d1)`` over trials, and the first ``d1`` of the grid with ``p >= level``, interpolated
    linearly in ``log d1`` between that grid value and the one below it. NaN where ``level`` is
    never reached on the grid; ``censored`` is True where it is already reached at the smallest
    ``d1`` (the true threshold is at or below it). Default: the margin of Eq. 9 exceeding 1
    (MATH.md: the paper predicts ``d1* ~ n^{3/2}``, Eq. 21). ``event``: a per-trial 1/0/NaN
    DataArray to use instead of ``var > threshold``.

    Returns a Dataset ``d1_star``, ``censored``, ``fraction`` (p along ``d1``).
    """
    xr = _xr()
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1 (a fraction of trials), got {level!r}")
    label = "event"
    if event is None:
        label = f"{var} > {threshold}"
        ds = at_t(ds, t)
        v = ds[var]
        event = _event(v > threshold, v)
    frac = event.mean("trial", skipna=True) if "trial" in event.dims else event
    fr = _single_chunk(frac, [dim])
    xcoord = np.asarray(frac[dim].values, dtype=float)
    d1s, cens = xr.apply_ufunc(_crossing_kernel, xcoord, fr.drop_vars(dim),
                               kwargs={"level": level},
                               input_core_dims=[[dim], [dim]], output_core_dims=[[], []],
                               dask="parallelized", output_dtypes=[float, bool])
    out = xr.Dataset({"d1_star": d1s, "censored": cens, "fraction": frac})
    out.attrs.update(level=float(level), event=label)
    return out


def fit_threshold_exponent(thr, dim="n", *, exponents=THRESHOLD_EXPONENTS):
    """Fit ``d1* ~ n^b`` on ``width_threshold(...)["d1_star"]`` (censored points dropped), or on the
    quantile thresholds of per-trial crossing widths (``scaling.threshold(..., method="quantile")``:
    ``d_star``, censored where ``censored_below``/``censored_above``).

    Adds, for each prediction (Eq. 21: 3/2; App. E: 5/3), the z-score of the fitted exponent
    (``z_eq21``, ``z_appE``) and ``consistent_*`` (|z| <= 2). With exactly two n values the
    standard error is NaN and the z-scores are NaN: report the exponent only.
    """
    if "d1_star" in thr:
        d = thr["d1_star"]
        if "censored" in thr:
            d = d.where(~thr["censored"].astype(bool))
    else:
        d = thr["d_star"]
        for flag in ("censored_below", "censored_above"):
            if flag in thr:
                d = d.where(~thr[flag].astype(bool))
    fit = fit_power_law(d, dim, pool_dims=())
    for label, b in exponents.items():
        key = "eq21" if "21" in label else "appE"
        z = compare_exponent(fit, b)
        fit[f"z_{key}"] = z
        fit[f"consistent_{key}"] = abs(z) <= 2
    fit.attrs["predictions"] = ", ".join(f"{k}: {v:.4g}" for k, v in exponents.items())
    return fit


def threshold_verdict(fit):
    """One line per fitted grid point: exponent +- se, and whether it disagrees with 3/2 / 5/3."""
    lines = []
    f = fit.compute() if hasattr(fit, "compute") else fit
    flat = f[["exponent", "stderr", "npoints"]].to_dataframe().reset_index()
    for _, row in flat.iterrows():
        label = ", ".join(f"{k}={row[k]}" for k in flat.columns if k not in ("exponent", "stderr", "npoints"))
        b, se, m = row["exponent"], row["stderr"], int(row["npoints"])
        if not np.isfinite(b):
            lines.append(f"{label}: no fit ({m} n values with a threshold on the grid)")
            continue
        parts = []
        for name, ref in THRESHOLD_EXPONENTS.items():
            if np.isfinite(se) and se > 0:
                z = (b - ref) / se
                parts.append(f"{name} {ref:.3g}: z={z:+.1f} ({'disagrees' if abs(z) > 2 else 'consistent'})")
            else:
                parts.append(f"{name} {ref:.3g}: diff {b - ref:+.2f} (no stderr)")
        lines.append(f"{label}: b = {b:.3f} +- {se:.3f} ({m} n values); " + "; ".join(parts))
    return lines


# --------------------------------------------------------------------------- c0 spike


def c0_spike(ds, quantiles=(0.05, 0.5, 0.95), *, min_c0=1e-8):
    """``lambda_max(M0) / (d1 c_0(w1)^2 n)`` per grid point (quantiles over trials).

    Eq. 56: E[M0] contains ``d1 c_0(w1)^2 11^T`` whose eigenvalue is ``d1 c_0^2 n``; when it
    dominates, ``lambda_max(M0)`` follows it and the ratio tends to 1 from above (the rest of
    E[M0] adds at most ``eq58_upper_sharp - d1 n c_0^2``). NaN where ``|c_0(w1)| < min_c0``
    (odd activations such as tanh: no spike). Returns ``spike_ratio_q`` (over ``quantile``),
    ``prediction`` (``d1 c_0^2 n``), ``spike_fraction`` (prediction / eq58_upper_sharp: how
    much of the upper bound is the spike).
    """
    xr = _xr()
    c0 = ds["c0_w"]
    pred = (ds["d1"] * c0 ** 2 * ds["n"]).where(abs(c0) >= min_c0)
    ratio = _single_chunk(ds["lambda_max_M0"] / pred, ["trial"])
    return xr.Dataset({
        "spike_ratio_q": _quantiles(ratio, quantiles, "trial"),
        "prediction": pred,
        "spike_fraction": pred / ds["eq58_upper_sharp"],
    })


def squeeze_grid(obj, keep_one: bool = False):
    """Drop the grid axes of length one (kept as scalar coordinates).

    ``keep_one``: keep ``activation`` when every axis has length one (a one-point cube), so
    the result still has a dimension (tables need one)."""
    dims = [d for d in ALL_AXES + ("t", CASE_DIM) if d in obj.dims and obj.sizes[d] == 1]
    if keep_one and set(obj.dims) <= set(dims) and "activation" in dims:
        dims.remove("activation")
    return obj.squeeze(dims)
