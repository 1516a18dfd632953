"""Regression tests on the bounds: holding rates with confidence intervals, exact inequalities, golden cubes.

Three assertions for result cubes (``rmt_engine.study.store.open_results``, or any ``xarray.Dataset``
with the same variable names and dims):

``assert_bound_holds(ds, bound, *, delta=None, min_rate=0.95, confidence=0.95, where=None, t=None)``
    For every grid point (and every ``t`` of t-dependent bounds), the fraction of trials in which
    the named bound holds, with its two-sided Clopper-Pearson interval at ``confidence``. Per
    point the outcome is

    * ``"holds"``        the lower end of the interval is above ``min_rate``;
    * ``"violated"``     the upper end of the interval is below ``min_rate``;
    * ``"inconclusive"`` ``min_rate`` lies inside the interval (add trials), or trials whose margin
      to the bound is inside the numerical error of the measured value (``sigma_min_F_relerr``;
      ``report.analysis.bound_verdicts``) could tip it: such a trial counts as a failure for
      "holds" and as a success for "violated", so neither verdict rests on rounding;
    * ``"undefined"``    some trial (or a per-point field) of the point is NaN, or the bound
      itself is undefined there (``lower_undefined != 0``: c_t(w1) = 0 or n > C(d0+t-1, t));
      an undefined bound is never counted as held.

    The assertion returns the ``BoundCheck`` when every point holds and otherwise raises, in
    this order of precedence: ``BoundViolated`` (some point violated), ``BoundUndefined`` (some
    point undefined), ``BoundInconclusive`` (some point inconclusive). All three subclass
    ``BoundCheckError(AssertionError)``, so a plain pytest test fails on any of them, and
    ``except BoundInconclusive`` separates "add trials" from a real failure. The message lists
    the failing points with their rates, intervals and trial counts. ``check_bound`` computes
    the same ``BoundCheck`` without raising.

``assert_exact_bounds(ds, rtol=1e-9)``
    The deterministic inequalities at every grid point (see ``EXACT_CHECKS``).

``assert_cubes_close(new, golden, rtol=..., atol=..., variables=None, bitwise=False)``
    Two cubes have the same dims and coordinates, NaN at the same places, and values within
    tolerance (``|new - golden| <= atol + rtol * |golden|``), or identical bits with ``bitwise``.

The bound names are the closed set ``BOUNDS``, named after the cube variable of each bound (an unknown
name is a ``ValueError`` that lists them; the names of 0.1 -- ``eq67_lower_paper``, ``eq67_upper_paper``,
``eq9_margin`` -- map with a DeprecationWarning, and ``eq67_lower``/``eq67_upper``, which meant the
sharp forms in 0.1's ``check``, warn where they now differ from them, i.e. where w1 != 1):

=================== ============================================================ ==========
name                event per trial                                              ``delta``
=================== ============================================================ ==========
eq67_lower_sharp    sigma_min_F >= sqrt((1 - delta) eq58_lower_sharp)   (per t)  required
eq67_lower_hadamard sigma_min_F >= sqrt((1 - delta) eq58_lower_hadamard)         required
eq67_lower_series   sigma_min_F >= sqrt((1 - delta) eq58_lower_series)           required
eq67_lower          sigma_min_F >= sqrt((1 - delta) eq58_lower) (paper) (per t)  required
eq67_upper_sharp    sigma_max_F <= sqrt((1 + delta) eq58_upper_sharp)            required
eq67_upper          sigma_max_F <= sqrt(1 + delta) w1^{r2} (sqrt((c1^2 + cinf2) d1) sigma_max_X
                    + |c0| sqrt(d1 n)) (paper); w1^{r2} recovered from eq58_upper required
eq69                eq69_ratio <= 1 (sigma_max(V0) <= w2 (2 sqrt(d1) + sqrt(d2)))  unused
margin              margin > 1 (Eq. 9 holds at the initialization)                unused
delta1              measured delta1 <= delta                                     required
delta2              measured delta2 <= delta                                     required
=================== ============================================================ ==========

Eq. 58 concerns E[M0], which is deterministic: it belongs to ``assert_exact_bounds``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

__all__ = [
    "BOUNDS", "EXACT_CHECKS", "BoundCheck", "BoundCheckError", "BoundViolated", "BoundInconclusive",
    "BoundUndefined", "CubesDiffer", "PointResult", "assert_bound_holds", "assert_cubes_close",
    "assert_exact_bounds", "check_bound", "clopper_pearson",
]


class BoundCheckError(AssertionError):
    """Base class of the failures of ``assert_bound_holds``; ``.result`` is the ``BoundCheck``."""

    def __init__(self, message: str, result: "BoundCheck | None" = None):
        super().__init__(message)
        self.result = result


class BoundViolated(BoundCheckError):
    """Some grid point holds the bound at a rate significantly below ``min_rate`` (or an exact bound fails)."""


class BoundInconclusive(BoundCheckError):
    """No point is violated, but for some ``min_rate`` is inside the confidence interval: add trials."""


class BoundUndefined(BoundCheckError):
    """No point is violated, but some point has NaN in a field the bound needs."""


class CubesDiffer(AssertionError):
    """Two cubes differ in dims, coordinates, variables, NaN positions or values."""


# --------------------------------------------------------------------------- bound events


@dataclass(frozen=True)
class _Bound:
    description: str
    needs_delta: bool
    event: Callable  # (ds, delta) -> DataArray: 1.0 holds, 0.0 fails, NaN undefined


def _holds(cond, *operands):
    """1.0 where ``cond``, 0.0 where not, NaN where any operand is NaN."""
    out = cond.astype(float)
    for o in operands:
        out = out.where(~np.isnan(o))
    return out


def _verdict(name):
    """The per-trial verdict codes of ``report.analysis.bound_verdicts[name]`` (1 held, 0 violated,
    -1 inconclusive: the margin is inside the numerical error, NaN undefined or missing): the report,
    ``rmt-engine check`` and these assertions share one definition of every event."""
    def ev(ds, delta):
        from .report.analysis import bound_verdicts  # noqa: PLC0415

        return bound_verdicts(ds, 0.2 if delta is None else delta, names=[name])[name]
    return ev


#: The bounds that depend on the Khatri-Rao order t.
PER_T_BOUNDS = ("eq67_lower_sharp", "eq67_lower")

#: The closed set of bound names of ``assert_bound_holds`` / ``rmt-engine check``: the names of the cube
#: variables of the bounds (``report.analysis.VERDICTS``; earlier names in ``RENAMED_EVENTS``).
BOUNDS: dict[str, _Bound] = {
    "eq67_lower_sharp": _Bound("sigma_min_F >= sqrt((1-delta) eq58_lower_sharp) (Eq. 67, sharp constant), per t",
                               True, _verdict("eq67_lower_sharp")),
    "eq67_lower_hadamard": _Bound("sigma_min_F >= sqrt((1-delta) eq58_lower_hadamard) (Eq. 67 with the full sharp "
                                  "Eq. 58 lower bound over every Hermite order)", True, _verdict("eq67_lower_hadamard")),
    "eq67_lower_series": _Bound("sigma_min_F >= sqrt((1-delta) eq58_lower_series) (Eq. 67 with lambda_min of the "
                                "Hermite series to order 16 plus its tail: the sharpest all-orders bound)", True,
                                _verdict("eq67_lower_series")),
    "eq67_lower": _Bound("sigma_min_F >= sqrt((1-delta) eq58_lower) (Eq. 67/68, paper form; = sharp at w1 = 1), per t",
                         True, _verdict("eq67_lower")),
    "eq67_upper_sharp": _Bound("sigma_max_F <= sqrt((1+delta) eq58_upper_sharp) (Eq. 67, sharp constant)",
                               True, _verdict("eq67_upper_sharp")),
    "eq67_upper": _Bound("sigma_max_F <= sqrt(1+delta) w1^r2 (sqrt((c1^2+cinf2) d1) sigma_max_X "
                         "+ |c0| sqrt(d1 n)) (Eq. 67, paper form)", True, _verdict("eq67_upper")),
    "eq69": _Bound("eq69_ratio <= 1: sigma_max(V0) <= w2 (2 sqrt(d1) + sqrt(d2)) (Eq. 69)", False, _verdict("eq69")),
    "margin": _Bound("margin > 1: Eq. 9 holds at initialization", False, _verdict("margin")),
    "delta1": _Bound("measured delta1 <= delta (Eq. 67 lower deviation)", True, _verdict("delta1")),
    "delta2": _Bound("measured delta2 <= delta (Eq. 67 upper deviation)", True, _verdict("delta2")),
}


def _bound(name: str) -> _Bound:
    from .report.analysis import RENAMED_EVENTS, event_name  # noqa: PLC0415

    if name in RENAMED_EVENTS:
        name = event_name(name)
    try:
        return BOUNDS[name]
    except KeyError:
        raise ValueError(f"unknown bound {name!r}; valid bounds: {', '.join(BOUNDS)}") from None


# --------------------------------------------------------------------------- statistics


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval for ``k`` successes in ``n`` trials (beta quantiles)."""
    from scipy.stats import beta  # noqa: PLC0415

    if n <= 0:
        return 0.0, 1.0
    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


@dataclass
class PointResult:
    """One grid point (and t) of a ``BoundCheck``."""

    coords: dict
    holds: int
    trials: int
    rate: float
    lo: float
    hi: float
    status: str  # holds | violated | inconclusive | undefined
    within_error: int = 0  # trials whose margin to the bound is inside the numerical error
    t_used: float | None = None  # the Khatri-Rao order of a t-dependent bound at this point

    def label(self, axes) -> str:
        return ", ".join(f"{a}={self.coords[a]}" for a in axes if a in self.coords) + (
            f" (t={self.t_used:g})" if self.t_used is not None and math.isfinite(self.t_used) else "")


_PRECEDENCE = ("violated", "undefined", "inconclusive", "holds")


@dataclass
class BoundCheck:
    """The outcome of ``check_bound``: per point results and the overall ``status``."""

    bound: str
    delta: float | None
    min_rate: float
    confidence: float
    points: list[PointResult]
    axes: list[str] = field(default_factory=list)  # the dims that vary (shown in labels)
    t: object = None  # the Khatri-Rao order checked ("auto": each point's t_auto, shown per point)

    @property
    def status(self) -> str:
        found = {p.status for p in self.points}
        for s in _PRECEDENCE:
            if s in found:
                return s
        return "holds"  # no points at all

    def count(self, status: str) -> int:
        return sum(p.status == status for p in self.points)

    def header(self) -> str:
        d = "" if self.delta is None else f", delta={self.delta:g}"
        t = f", t={self.t}" if self.t is not None else ""
        out = (f"bound {self.bound}{d}{t}: min_rate={self.min_rate:g}, {100 * self.confidence:g}% Clopper-Pearson "
               f"intervals; {len(self.points)} points: " +
               ", ".join(f"{self.count(s)} {s}" for s in _PRECEDENCE if self.count(s)))
        need = trials_needed(self.min_rate, self.confidence)
        fewest = min((p.trials for p in self.points), default=0)
        if self.points and fewest < need:
            out += (f"\n  note: 'holds' needs >= {need} trials per point to show rate > {self.min_rate:g} at "
                    f"{100 * self.confidence:g}% (these points have {fewest}): add trials or lower min_rate")
        return out

    def format(self, statuses=None) -> str:
        rows = [p for p in self.points if statuses is None or p.status in statuses]
        lines = [self.header()]
        for p in rows:
            rate = "nan" if math.isnan(p.rate) else f"{p.rate:.4f}"
            inc = (f"; {p.within_error} inconclusive (margin inside the numerical error, counted as failures "
                   f"for 'holds' and as successes for 'violated')" if p.within_error else "")
            lines.append(f"  {p.status:12s} {p.label(self.axes)}: rate {rate} ({p.holds}/{p.trials} trials), "
                         f"interval [{p.lo:.4f}, {p.hi:.4f}]{inc}")
        return "\n".join(lines)

    def raise_for_status(self) -> "BoundCheck":
        s = self.status
        if s == "holds":
            return self
        cls = {"violated": BoundViolated, "undefined": BoundUndefined, "inconclusive": BoundInconclusive}[s]
        msg = self.format(statuses=("violated", "undefined", "inconclusive"))
        if s == "inconclusive":
            msg = "inconclusive: add trials\n" + msg
        raise cls(msg, self)


def _item(x):
    return x.item() if hasattr(x, "item") else x


def _select(ds, where):
    if not where:
        return ds
    sel = {}
    for k, v in where.items():
        if k not in ds.dims:
            raise ValueError(f"where: {k!r} is not a dimension of the cube (dims: {', '.join(map(str, ds.dims))})")
        sel[k] = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
    try:
        return ds.sel(sel)
    except KeyError as e:
        raise ValueError(f"where={where!r} selects a value not in the cube: {e}") from None


def cube_delta(ds, bound: str) -> float | None:
    """The delta the cube's Eq. 67 bounds were computed at: ``bound_delta2`` for the upper bounds and
    delta2, ``bound_delta1`` otherwise (from the cube's attributes or its ``config_canonical``)."""
    import json  # noqa: PLC0415

    key = "bound_delta2" if ("upper" in bound or bound == "delta2") else "bound_delta1"
    if key in ds.attrs:
        return float(ds.attrs[key])
    try:
        canon = json.loads(ds.attrs.get("config_canonical", "{}"))
    except (TypeError, ValueError):
        return None
    return float(canon[key]) if key in canon else None


def trials_needed(min_rate: float, confidence: float = 0.95) -> int:
    """The fewest trials N for which N holds out of N can show ``rate > min_rate``: the two-sided
    Clopper-Pearson lower end ``((1 - confidence) / 2)^(1/N)`` must exceed ``min_rate``."""
    if min_rate <= 0:
        return 1
    if min_rate >= 1:
        return math.inf
    return int(math.floor(math.log((1.0 - confidence) / 2.0) / math.log(min_rate))) + 1


def check_bound(ds, bound: str, *, delta: float | None = None, min_rate: float = 0.95, confidence: float = 0.95,
                where: Mapping | None = None, t=None) -> BoundCheck:
    """The ``BoundCheck`` of ``assert_bound_holds`` without raising (see the module docstring)."""
    import xarray as xr  # noqa: PLC0415

    from .report.analysis import event_name  # noqa: PLC0415

    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"check_bound needs an xarray.Dataset (a result cube, rmt_engine.open_results), "
                        f"got {type(ds).__name__}")
    bound = event_name(bound, ds)  # earlier names map (with a DeprecationWarning)
    b = _bound(bound)
    if not 0.0 <= min_rate <= 1.0 or not 0.0 < confidence < 1.0:
        raise ValueError("min_rate must be in [0, 1] and confidence in (0, 1)")
    if b.needs_delta and delta is None:
        delta = cube_delta(ds, bound)
        if delta is None:
            raise ValueError(f"bound {bound!r} needs delta= (the cube does not record the delta it was computed at)")
    from .report.analysis import AUTO_T, at_t, available_t  # noqa: PLC0415

    sub = _select(ds, where)
    t_checked = None
    if isinstance(t, str):
        sub, t_checked = at_t(sub, t), t
    elif t is not None and "t" in sub.dims:
        sub = _select(sub, {"t": t})
        t_checked = t
    elif t is None and AUTO_T in available_t(sub):
        sub, t_checked = at_t(sub, AUTO_T), AUTO_T  # the default order: t_auto per point, as the report's headline
    per_t = bound in PER_T_BOUNDS
    sym = t_checked if isinstance(t_checked, str) and f"t_{t_checked}" in sub else None  # "auto" / "best"
    t_auto = sub[f"t_{sym}"].load() if per_t and sym else None  # the order each point used
    ev = b.event(sub, delta).load()
    if "trial" not in ev.dims:
        raise ValueError(f"bound {bound!r}: the cube has no trial dimension")
    if ev.sizes["trial"] == 0:
        raise ValueError(f"bound {bound!r}: the cube has no trials (trial dimension of length 0)")
    others = [d for d in ev.dims if d != "trial"]
    ev = ev.transpose(*others, "trial")
    vals = np.asarray(ev.values, dtype=float).reshape(-1, ev.sizes["trial"])
    ntr = vals.shape[1]
    axes = [d for d in others if ev.sizes[d] > 1]
    points = []
    for i, idx in enumerate(np.ndindex(*[ev.sizes[d] for d in others])):
        coords = {d: _item(ev[d].values[j]) for d, j in zip(others, idx)}
        t_used = None
        if t_auto is not None:
            t_used = float(t_auto.isel({d: j for d, j in zip(others, idx) if d in t_auto.dims}).values)
        elif per_t and t_checked is not None and not isinstance(t_checked, str):
            t_used = float(coords.get("t", t_checked)) if not isinstance(t_checked, (list, tuple)) else None
        elif per_t and "t" in coords:
            t_used = float(coords["t"])
        row = vals[i]
        if np.isnan(row).any():
            k = int(np.nansum(row == 1.0))
            points.append(PointResult(coords, k, ntr, math.nan, 0.0, 1.0, "undefined", 0, t_used))
            continue
        k = int((row == 1.0).sum())
        k_inc = int((row == -1.0).sum())  # margin inside the numerical error: neither held nor violated
        lo, _ = clopper_pearson(k, ntr, confidence)  # inconclusive trials counted as failures ...
        _, hi = clopper_pearson(k + k_inc, ntr, confidence)  # ... and as successes: both verdicts are sure
        status = "holds" if lo > min_rate else "violated" if hi < min_rate else "inconclusive"
        points.append(PointResult(coords, k, ntr, k / ntr if ntr else math.nan, lo, hi, status, k_inc, t_used))
    return BoundCheck(bound, delta, min_rate, confidence, points, axes, t_checked if per_t else None)


def assert_bound_holds(ds, bound: str, *, delta: float | None = None, min_rate: float = 0.95,
                       confidence: float = 0.95, where: Mapping | None = None, t=None) -> BoundCheck:
    """Assert that ``bound`` holds in at least ``min_rate`` of the trials at every selected grid point.

    ``where``: a dict for ``ds.sel`` (a value or a list of values per dimension); ``t``: the
    Khatri-Rao order(s) of t-dependent bounds (default: every t of the cube). Returns the
    ``BoundCheck`` when every point holds; raises ``BoundViolated``, ``BoundUndefined`` or
    ``BoundInconclusive`` (all ``AssertionError``) otherwise -- see the module docstring.
    """
    return check_bound(ds, bound, delta=delta, min_rate=min_rate, confidence=confidence, where=where,
                       t=t).raise_for_status()


# --------------------------------------------------------------------------- exact bounds


def _exact_checks(ds, rtol):
    lmin, lmax = ds["lambda_min_EM0"], ds["lambda_max_EM0"]
    scale = np.abs(lmax)
    out = [
        ("eq58_lower_sharp <= lambda_min_EM0 + rtol*lambda_max_EM0",
         lambda: _holds(ds["eq58_lower_sharp"] <= lmin + rtol * scale, ds["eq58_lower_sharp"], lmin, lmax)),
        ("lambda_max_EM0 <= eq58_upper_sharp (1 + rtol)",
         lambda: _holds(lmax <= ds["eq58_upper_sharp"] * (1 + rtol), lmax, ds["eq58_upper_sharp"])),
        ("lambda_min_EM0 >= -rtol*lambda_max_EM0 (E[M0] is PSD)",
         lambda: _holds(lmin >= -rtol * scale, lmin, lmax)),
    ]
    for bound in ("eq58_lower_hadamard", "eq58_lower_series"):
        if bound in ds:
            out.append((f"{bound} <= lambda_min_EM0 + rtol*lambda_max_EM0",
                        lambda b=bound: _holds(ds[b] <= lmin + rtol * scale, ds[b], lmin, lmax)))
    if "eq58_lower_series" in ds and "eq58_lower_hadamard" in ds:
        out.append(("eq58_lower_series >= eq58_lower_hadamard (1 - rtol)",
                    lambda: _holds(ds["eq58_lower_series"] >= ds["eq58_lower_hadamard"] * (1 - rtol),
                                   ds["eq58_lower_series"], ds["eq58_lower_hadamard"])))
    if "xkr_rank_deficient" in ds and "sigma_min_xkr" in ds:
        rd, smin = ds["xkr_rank_deficient"], ds["sigma_min_xkr"]
        tol = rtol * (np.abs(ds["sigma_max_xkr"]) if "sigma_max_xkr" in ds else 1.0)
        out.append(("xkr_rank_deficient == 1 => sigma_min_xkr <= rtol*sigma_max_xkr",
                    lambda: _holds((rd != 1) | (np.abs(smin) <= tol), rd, smin)))
    return out


#: The inequalities of ``assert_exact_bounds`` (tolerance ``rtol``, relative to the named scale).
EXACT_CHECKS = (
    "eq58_lower_sharp <= lambda_min_EM0 + rtol*lambda_max_EM0",
    "lambda_max_EM0 <= eq58_upper_sharp (1 + rtol)",
    "lambda_min_EM0 >= -rtol*lambda_max_EM0 (E[M0] is PSD)",
    "eq58_lower_hadamard <= lambda_min_EM0 + rtol*lambda_max_EM0",
    "eq58_lower_series <= lambda_min_EM0 + rtol*lambda_max_EM0",
    "eq58_lower_series >= eq58_lower_hadamard (1 - rtol)",
    "xkr_rank_deficient == 1 => sigma_min_xkr <= rtol*sigma_max_xkr",
)


def assert_exact_bounds(ds, rtol: float = 1e-9) -> None:
    """Assert the deterministic inequalities ``EXACT_CHECKS`` at every grid point.

    Tolerance: the sharp Eq. 58 lower bound and PSD-ness are checked up to ``rtol *
    lambda_max(E[M0])`` (eigenvalues of E[M0] are accurate to a multiple of eps * ||E[M0]||),
    the upper bound up to a factor ``1 + rtol``, the rank-deficient zeros up to
    ``rtol * sigma_max(X^{*t})``. A NaN in any of these fields fails the point as undefined.
    Raises ``BoundViolated`` listing every failing (check, grid point, values).
    """
    failures = []
    for name, fn in _exact_checks(ds, rtol):
        ev = fn().load()
        vals = np.asarray(ev.values, dtype=float)
        for idx in zip(*np.nonzero(~(vals == 1.0))):
            coords = {d: _item(ev[d].values[j]) for d, j in zip(ev.dims, idx)}
            kind = "undefined (NaN)" if np.isnan(vals[idx]) else "violated"
            sel = {d: v for d, v in coords.items()}
            fields = {v: float(ds[v].sel({k: c for k, c in sel.items() if k in ds[v].dims}).values)
                      for v in ("eq58_lower_sharp", "lambda_min_EM0", "lambda_max_EM0", "eq58_upper_sharp")
                      if v in ds}
            failures.append(f"  {name}: {kind} at "
                            f"{', '.join(f'{d}={c}' for d, c in coords.items() if ev.sizes[d] > 1) or 'the only point'}"
                            f": {', '.join(f'{k}={v:.6g}' for k, v in fields.items())}")
    if failures:
        raise BoundViolated(f"{len(failures)} exact-bound failures (rtol={rtol:g}):\n" + "\n".join(failures))


# --------------------------------------------------------------------------- golden cubes


def _tol(spec, var, default):
    if spec is None:
        return default
    if isinstance(spec, Mapping):
        return spec.get(var, spec.get("*", default))
    return float(spec)


def assert_cubes_close(new, golden, rtol=1e-9, atol=0.0, variables=None, bitwise: bool = False,
                       max_report: int = 10) -> None:
    """Assert that cube ``new`` equals ``golden`` within tolerance.

    Dims, sizes and coordinates must be identical and the compared variables present in both
    (without ``variables``, the two sets of data variables must be equal). ``rtol``/``atol``: a
    number or a dict ``{variable: tol}`` (key ``"*"`` for the rest; default rtol 1e-9, atol 0);
    a cell passes when ``|new - golden| <= atol + rtol * |golden|``. NaN must be at the same
    places (and infinities equal). ``bitwise=True`` requires identical bytes instead. Attributes
    (provenance, timestamps) are not compared. Raises ``CubesDiffer`` with the worst cells.
    """
    problems = []
    if dict(new.sizes) != dict(golden.sizes):
        raise CubesDiffer(f"dims differ: new {dict(new.sizes)} vs golden {dict(golden.sizes)}")
    for c in sorted(set(new.coords) | set(golden.coords)):
        if c not in new.coords or c not in golden.coords:
            problems.append(f"coordinate {c!r} only in {'new' if c in new.coords else 'golden'}")
        elif not np.array_equal(np.asarray(new[c].values), np.asarray(golden[c].values)):
            problems.append(f"coordinate {c!r} differs: new {new[c].values.tolist()} vs golden "
                            f"{golden[c].values.tolist()}")
    if variables is None:
        nv, gv = set(new.data_vars), set(golden.data_vars)
        if nv != gv:
            problems.append(f"variables differ: only in new {sorted(nv - gv)}, only in golden {sorted(gv - nv)}")
        variables = sorted(nv & gv)
    else:
        variables = list(variables)
        for v in variables:
            if v not in new.data_vars or v not in golden.data_vars:
                problems.append(f"variable {v!r} missing from {'new' if v not in new.data_vars else 'golden'}")
        variables = [v for v in variables if v in new.data_vars and v in golden.data_vars]
    if problems:
        raise CubesDiffer("cubes differ in layout:\n  " + "\n  ".join(problems))

    bad = []  # (score, variable, coords, new, golden, abs err, rel err)
    nbad = {}
    for v in variables:
        a_da, b_da = new[v], golden[v].transpose(*new[v].dims)
        if a_da.dims != golden[v].dims and set(a_da.dims) != set(golden[v].dims):
            problems.append(f"{v}: dims {a_da.dims} vs {golden[v].dims}")
            continue
        a, b = np.asarray(a_da.values), np.asarray(b_da.values)
        if a.dtype != b.dtype and bitwise:
            problems.append(f"{v}: dtype {a.dtype} vs {b.dtype}")
            continue
        if bitwise or not np.issubdtype(a.dtype, np.floating):
            if bitwise:
                diff = (np.ascontiguousarray(a).view(np.uint8).reshape(*a.shape, -1)
                        != np.ascontiguousarray(b).view(np.uint8).reshape(*b.shape, -1)).any(axis=-1)
            else:
                diff = a != b
            score = np.where(diff, np.inf, 0.0)
        else:
            r, t = _tol(rtol, v, 1e-9), _tol(atol, v, 0.0)
            af, bf = a.astype(float), b.astype(float)
            nan_mismatch = np.isnan(af) != np.isnan(bf)
            with np.errstate(invalid="ignore", over="ignore"):
                err = np.abs(af - bf)
                both_inf_equal = np.isinf(af) & (af == bf)
                err = np.where(both_inf_equal | (np.isnan(af) & np.isnan(bf)), 0.0, err)
                lim = t + r * np.abs(bf)
                score = np.where(nan_mismatch, np.inf, np.where(err > lim, np.where(lim > 0, err / lim, np.inf), 0.0))
            diff = score > 0
        nbad[v] = int(diff.sum())
        for idx in zip(*np.nonzero(diff)):
            x, y = a[idx], b[idx]
            with np.errstate(all="ignore"):
                ae = abs(float(x) - float(y)) if np.issubdtype(a.dtype, np.number) else math.nan
                re = ae / abs(float(y)) if np.issubdtype(a.dtype, np.number) and float(y) != 0 else math.inf
            coords = {d: _item(a_da[d].values[j]) for d, j in zip(a_da.dims, idx) if d in a_da.coords}
            bad.append((float(score[idx]), v, coords, x, y, ae, re))
    if problems or bad:
        bad.sort(key=lambda z: (-z[0], z[1]))
        lines = list(problems)
        if bad:
            lines.append(f"{len(bad)} cells differ ({', '.join(f'{v}: {k}' for v, k in nbad.items() if k)}); "
                         f"{'bitwise' if bitwise else f'rtol={rtol}, atol={atol}'}; worst {min(len(bad), max_report)}:")
            for s, v, coords, x, y, ae, re in bad[:max_report]:
                where = ", ".join(f"{d}={c}" for d, c in coords.items())
                lines.append(f"  {v} [{where}]: new {x!r} vs golden {y!r} (abs err {ae:.3g}, rel err {re:.3g})")
        raise CubesDiffer("cubes differ:\n  " + "\n  ".join(lines))
