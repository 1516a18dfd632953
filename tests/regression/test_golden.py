"""The regression suite: recompute studies/regression.toml and compare with the committed golden cube.

An intended numerics change regenerates the cube on purpose:  python -m tests.regression.regenerate
"""

from pathlib import Path

import pytest

from rmt_engine.study.store import open_results
from rmt_engine.testing import CubesDiffer, assert_cubes_close, assert_exact_bounds

HERE = Path(__file__).resolve().parent
TOML = HERE.parents[1] / "studies" / "regression.toml"
GOLDEN = HERE / "golden_cube"

# Tolerances. On one machine with blas_threads = 1 the cube is bitwise reproducible; across
# machines BLAS kernels (blocking, FMA, SIMD width) change rounding. Quantities computed from
# well-conditioned operations (largest eigen/singular values, norms, Hermite coefficients by
# quadrature, Gram products) then move by a few ulp times the dimension: rtol 1e-9 leaves a
# margin of ~1e4 over 30 * eps but catches any real change (a 1e-6 perturbation, a changed
# constant). Smallest eigenvalues (and everything derived from them) carry an absolute error of
# ~ n * eps * lambda_max, i.e. a relative error of ~ n * eps * cond; the regression cube has
# cond(M0) up to 7e5 (sigmoid's c_0 spike), so ~ 30 * 2.2e-16 * 7e5 = 5e-9: rtol 1e-7 for those.
LAMBDA_MIN_DERIVED = (
    "lambda_min_M0", "sigma_min_F", "mu", "delta1", "margin", "eta_max", "rate", "rho", "lambda_min_EM0",
    "sigma_min_X", "sigma_min_xkr", "eq58_lower", "eq58_lower_sharp", "eq67_lower", "eq67_lower_sharp",
    "eq20_width", "lazy_ratio",
)
RTOL = {"*": 1e-9, **{v: 1e-7 for v in LAMBDA_MIN_DERIVED}}
ATOL = {"*": 1e-300, "c0": 1e-15, "c0_w": 1e-15}  # c0 of tanh is 0 up to quadrature rounding


def test_golden_cube_is_small_and_committed():
    size = sum(f.stat().st_size for f in GOLDEN.rglob("*") if f.is_file())
    assert 0 < size < 1_000_000, size


#: Fields added after the golden cube was written: recomputed cubes carry them, the golden one does
#: not; every variable the golden cube has is compared.
FIELDS_NEWER_THAN_GOLDEN = {"sigma_min_F_relerr", "sigma_min_F_route", "sigma_min_xkr_relerr",
                            "sigma_min_xkr_relerr_auto", "eq58_lower_series"}


def test_recomputed_cube_matches_golden(rmt_study):
    new = rmt_study(TOML).load()
    golden = open_results(GOLDEN).load()
    assert set(new.data_vars) - set(golden.data_vars) == FIELDS_NEWER_THAN_GOLDEN
    assert_cubes_close(new, golden, rtol=RTOL, atol=ATOL, variables=list(golden.data_vars))
    # on the regression grid the Gram route is accurate enough everywhere (no QR route taken)
    assert float(new["sigma_min_F_route"].max()) == 0.0
    assert float(new["sigma_min_F_relerr"].max()) < 1e-6


def test_exact_bounds_on_golden():
    assert_exact_bounds(open_results(GOLDEN))


@pytest.mark.parametrize("var", ["sigma_max_F", "lambda_min_M0", "eq58_lower_sharp", "c1"])
def test_planted_1e6_change_in_golden_is_caught(var):
    golden = open_results(GOLDEN).load()
    new = golden.copy(deep=True)
    idx = (0,) * new[var].ndim
    new[var][idx] = new[var][idx] * (1 + 1e-6)
    assert_cubes_close(golden.copy(deep=True), golden, rtol=RTOL, atol=ATOL)
    with pytest.raises(CubesDiffer, match=var):
        assert_cubes_close(new, golden, rtol=RTOL, atol=ATOL)
