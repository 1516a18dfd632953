"""``ds.rmt``: the analyses of a result cube in one line each (an xarray accessor, as cf-xarray,
MetPy and ArviZ do).

Rule of this module: every method is a thin call of the function the report, ``rmt-engine check``
and ``rmt_engine.testing`` use (``report.analysis``), with the cube's own settings as defaults (the
bound deltas it was computed with, ``t = "auto"`` when stored); nothing here computes a number of its
own. Registered when ``rmt_engine`` is imported.

    import rmt_engine
    ds = rmt_engine.open_results("quickstart.zarr")
    ds.rmt.bound("eq67_lower_sharp")          # the bound at t_auto, NaN where undefined; t as a coordinate
    ds.rmt.holding_rate("eq67_lower_sharp")   # rate, 95% Clopper-Pearson interval, inconclusive count
    ds.rmt.verdicts()                         # per-trial codes: 1 held, 0 violated, -1 inconclusive
    ds.rmt.threshold(level=0.95)              # smallest d1 with margin > 1 in 95% of the trials
    ds.rmt.deltas                             # {"bound_delta1": 0.2, "bound_delta2": 0.2}
"""

from __future__ import annotations

import json

import xarray as xr

from . import analysis as A
from ..montecarlo.fields import FIELDS, SYMBOLIC_T

#: The bounds ``bound()`` masks where undefined (the Eq. 58/67 lower bounds: 0 means undefined).
LOWER_BOUNDS = ("eq58_lower", "eq58_lower_sharp", "eq67_lower", "eq67_lower_sharp")


@xr.register_dataset_accessor("rmt")
class RmtAccessor:
    """``ds.rmt``: see the module docstring."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    # ------------------------------------------------------------------ settings of the cube
    @property
    def deltas(self) -> dict:
        """The deviations the cube's Eq. 67 bounds were computed at (``bound_delta1``, ``bound_delta2``)."""
        ds = self._ds
        out = {}
        canon = {}
        if "config_canonical" in ds.attrs:
            try:
                canon = json.loads(ds.attrs["config_canonical"])
            except (TypeError, ValueError):
                canon = {}
        for k in ("bound_delta1", "bound_delta2"):
            v = ds.attrs.get(k, canon.get(k))
            out[k] = float(v) if v is not None else 0.2
        return out

    def _t(self, t):
        if t is None:
            return A.default_t(self._ds)
        return t

    # ------------------------------------------------------------------ bounds and events
    def bound(self, name: str, t=None) -> xr.DataArray:
        """The cube's bound ``name`` at order ``t`` (default ``"auto"`` when stored), NaN where it is
        undefined (``lower_undefined != 0``), with the order used as a coordinate ``t_used``."""
        ds = self._ds
        info = FIELDS.get(name)
        if info is None:
            raise ValueError(f"unknown field {name!r}; fields: {', '.join(FIELDS)}")
        if not info.per_t:
            return ds[name]
        t = self._t(t)
        sub = A.at_t(ds, t)
        da = sub[name]
        if name in LOWER_BOUNDS:
            da = da.where(A.lower_defined(sub))
        sym = t.lower() if isinstance(t, str) and t.lower() in SYMBOLIC_T else None
        used = sub[f"t_{sym}"] if sym and f"t_{sym}" in sub else xr.full_like(da, float(t)).isel(
            {d: 0 for d in da.dims if d == "trial"}, missing_dims="ignore")
        da = da.assign_coords(t_used=used)
        da.attrs.update(ds[f"{name}_{sym}" if sym else name].attrs)
        da.attrs["t"] = str(t)
        return da

    def verdicts(self, delta: float | None = None, t=None, names=None) -> xr.Dataset:
        """Per-trial verdict codes of every bound (``analysis.bound_verdicts``): 1 held, 0 violated,
        -1 inconclusive (margin inside the numerical error), NaN missing or undefined."""
        delta = self.deltas["bound_delta1"] if delta is None else delta
        return A.bound_verdicts(self._ds, delta, t=self._t(t), names=names)

    def holding_rate(self, event: str = "eq67_lower_sharp", delta: float | None = None, t=None,
                     confidence: float = A.RATE_CONFIDENCE, method: str = A.RATE_METHOD) -> xr.Dataset:
        """Fraction of trials in which ``event`` holds (an event of ``verdicts``), with its interval
        (default 95% Clopper-Pearson, as in ``check`` and the report) and the inconclusive count."""
        delta = self.deltas["bound_delta1"] if delta is None else delta
        return A.holding_rate(self._ds, event, delta=delta, t=self._t(t), confidence=confidence, method=method)

    def threshold(self, level: float = 0.95, var: str = "margin", threshold: float = 1.0, t=None) -> xr.Dataset:
        """Smallest d1 at which ``var > threshold`` in a fraction ``level`` of the trials
        (``analysis.width_threshold``; default: the Eq. 9 margin above 1)."""
        return A.width_threshold(self._ds, level, var=var, threshold=threshold, t=self._t(t))

    def concentration(self, t=None) -> xr.Dataset:
        """Quantiles of measured / bound ratios and of delta1, delta2 (``analysis.concentration_summary``)."""
        return A.concentration_summary(self._ds, t=self._t(t))

    def squeeze(self) -> xr.Dataset:
        """The cube with its length-1 grid dims kept as scalar coordinates (``analysis.squeeze_grid``)."""
        return A.squeeze_grid(self._ds)
