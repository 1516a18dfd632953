# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # rmt_engine quickstart: a study from Python, its cube in xarray, and a regression test
#
# The paper (*Subquadratic Overparameterization for Shallow Neural Networks*) needs the smallest
# singular value of `F = phi(W0 X)` to stay above the Eq. 67 lower bound
# `sqrt((1 - delta) d1 c_t(w1)^2 / t! sigma_min(X^{*t})^2)`. Here we measure how often it does,
# for GeLU and tanh, on a small grid that runs in seconds on a laptop.
#
# This file is `examples/quickstart.py` (jupytext percent format); `examples/quickstart.ipynb` is
# generated from it (`jupytext --to ipynb examples/quickstart.py`) and executed by the test suite.

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

import rmt_engine as rmt

# %% [markdown]
# ## 1. A study: a grid of parameters times trials
# Every grid point gets `trials` independent draws of the weights; the data X are drawn once per
# point (`data = "sphere"`, unit columns). `t = "auto"` picks, per point, the smallest Khatri-Rao
# order with an informative (non-zero) Eq. 58 lower bound.

# %%
study = rmt.Study(
    grid={"activation": ["gelu", "tanh"], "n": [40], "d0": [8], "d1": [40, 80, 160, 640]},
    trials=12, seed=1, t=("auto",),
)
store = Path(tempfile.mkdtemp()) / "quickstart.zarr"
summary = study.run(store, progress=False, workers=1)
print(summary.line())

# %% [markdown]
# ## 2. The cube in xarray
# `open_results` refuses a store with unfinished regions; `ds.rmt` holds the analyses of the report.

# %%
ds = rmt.open_results(store)
print(ds.rmt.deltas)
ds.rmt.squeeze()[["sigma_min_F", "sigma_min_F_relerr"]]

# %% [markdown]
# The Eq. 67 lower bound at `t_auto` (NaN where undefined; the order used is the coordinate `t_used`):

# %%
bound = ds.rmt.bound("eq67_lower_sharp")
bound.squeeze().to_dataframe(name="eq67_lower_sharp")[["eq67_lower_sharp", "t_used"]]

# %% [markdown]
# ## 3. How often the bound held, with 95% Clopper-Pearson intervals
# A trial whose margin to the bound is inside the numerical error of `sigma_min_F` counts as
# *inconclusive* (neither held nor violated).

# %%
rate = ds.rmt.holding_rate("eq67_lower_sharp").squeeze().compute()
rate.to_dataframe()[["rate", "lo", "hi", "successes", "trials", "inconclusive"]]

# %%
fig, ax = plt.subplots(figsize=(5, 3.2))
for k, act in enumerate(rate["activation"].values):
    r = rate.sel(activation=act)
    x = r["d1"] * (1.04 if k else 1 / 1.04)  # side by side where the rates coincide
    ax.errorbar(x, r["rate"], yerr=[r["rate"] - r["lo"], r["hi"] - r["rate"]], marker="os"[k % 2], capsize=3,
                label=f"{act} (t = {int(ds['t_auto'].sel(activation=act).max())})")
ax.set_xscale("log")
ax.set_xticks(rate["d1"].values, [str(int(v)) for v in rate["d1"].values])
ax.minorticks_off()
ax.set_ylim(-0.05, 1.05)
ax.set_xlabel("width d1")
ax.set_ylabel("fraction of trials (95% CP)")
ax.set_title("Eq. 67 lower bound held (t = t_auto, delta = 0.2, n = 40)", fontsize=9)
ax.legend()
fig.tight_layout()

# %% [markdown]
# ## 4. Measured sigma_min(F) against the bound

# %%
ratio = (ds["sigma_min_F"] / bound).squeeze()
fig, ax = plt.subplots(figsize=(5, 3.2))
for act in ratio["activation"].values:
    q = ratio.sel(activation=act).quantile([0.05, 0.5, 0.95], dim="trial")
    ax.plot(q["d1"], q.sel(quantile=0.5), marker="o", label=f"{act} (median, 5-95% band)")
    ax.fill_between(q["d1"], q.sel(quantile=0.05), q.sel(quantile=0.95), alpha=0.25)
ax.axhline(1.0, color="k", lw=0.8, ls="--")
ax.set_xscale("log")
ax.set_xticks(ratio["d1"].values, [str(int(v)) for v in ratio["d1"].values])
ax.minorticks_off()
ax.set_xlabel("width d1")
ax.set_ylabel("sigma_min(F) / Eq. 67 bound")
ax.set_title("slack of the Eq. 67 lower bound (t = t_auto, delta = 0.2, n = 40)", fontsize=9)
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## 5. The regression-test pattern
# In a test suite: `assert_bound_holds` raises `BoundViolated`, `BoundUndefined` or
# `BoundInconclusive` (all `AssertionError`s). With 12 trials a rate of 0.95 cannot be shown
# (72 trials are needed), so we ask for 0.5 at the widest width, d1 = 640.

# %%
from rmt_engine.testing import BoundInconclusive, assert_bound_holds, check_bound

result = check_bound(ds, "eq67_lower_sharp", min_rate=0.5, where={"d1": 640})
print(result.format())
try:
    assert_bound_holds(ds, "eq67_lower_sharp", min_rate=0.5, where={"d1": 640})
except BoundInconclusive as e:
    print("inconclusive:", e)
