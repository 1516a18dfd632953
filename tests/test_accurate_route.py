"""sigma_min(phi(W0 X)) to the accuracy the data allow, and verdicts that never rest on rounding.

Issue 22: M0 = F^T F squares cond(F); at w1 = 1e-3 the Gram route gave sigma_min_F = 1.698e-10 (tanh;
an SVD of F gives 1.962e-10) and 0 for GeLU (true 5.7e-13), and `check` called the Eq. 67 lower bound
violated where an SVD shows it held. Independent references here: a float64 SVD of the explicitly
formed F (the same rows, rebuilt from the counter-based generator) and, for the streamed QR alone,
matrices with prescribed singular values.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

import rmt_engine as rmt
from rmt_engine.linalg.tsqr import StreamedR, gram_relative_error, qr_relative_error
from rmt_engine.montecarlo.gram import accumulate, phi_blocks
from rmt_engine.montecarlo.trial import point_data
from rmt_engine.report import analysis as A
from rmt_engine.sampling import rng
from rmt_engine.testing import check_bound


def _explicit_F(spec, trial=0):
    pd = point_data(spec, {})
    key = rng.stream_key(spec.seed, "W0", trial)
    return np.vstack([F for _, _, F in phi_blocks(pd.X, spec.activation, spec.d1, w1=spec.w1, key_W=key,
                                                  block_rows=spec.rows_per_block)])


@pytest.mark.parametrize("rows,block", [(500, 7), (500, 64), (40, 3), (20, 20)])
def test_streamed_r_has_the_singular_values_of_f(rows, block):
    rng_ = np.random.default_rng(rows + block)
    n = 20
    U, _ = np.linalg.qr(rng_.standard_normal((rows, n)))
    V, _ = np.linalg.qr(rng_.standard_normal((n, n)))
    s = np.logspace(0, -12, n)
    F = (U * s) @ V.T
    R = StreamedR(n)
    for a in range(0, rows, block):
        R.add_block(F[a:a + block])
    sv = R.singular_values()
    assert R.rows == rows
    # every singular value within ~ eps sigma_max (absolute): sigma_min = 1e-12 to ~1e-4 relative
    assert np.abs(sv - np.sort(s)).max() <= 50 * np.finfo(float).eps
    rel = abs(sv[0] - s[-1]) / s[-1]
    assert rel <= qr_relative_error(sv[0], sv[-1], rows, n)
    # the Gram route cannot resolve it at all: its own error bound says so
    lam = np.linalg.eigvalsh(F.T @ F)
    assert gram_relative_error(lam[0], lam[-1], rows, n) == math.inf


def test_streamed_r_with_blocks_shorter_than_n_and_bad_width():
    rng_ = np.random.default_rng(1)
    F = rng_.standard_normal((30, 12))
    R = StreamedR(12)
    for a in range(0, 30, 5):  # the first block has fewer rows than columns
        R.add_block(F[a:a + 5])
    np.testing.assert_allclose(R.singular_values(), np.sort(np.linalg.svd(F, compute_uv=False)), rtol=1e-13)
    with pytest.raises(ValueError, match="12 columns"):
        R.add_block(F[:, :5])


@pytest.mark.parametrize("act", ["tanh", "gelu", "sigmoid"])
def test_tiny_w1_sigma_min_matches_an_svd_of_f(act):
    spec = rmt.TrialSpec(activation=act, n=16, d0=4, d1=64, w1=1e-3)
    rec = rmt.run_trial(spec, 0, cache={})
    sv = np.linalg.svd(_explicit_F(spec), compute_uv=False)
    assert rec["sigma_min_F_route"] == 1.0  # the Gram route's own bound exceeded 1e-6: QR taken
    rel = abs(rec["sigma_min_F"] - sv[-1]) / sv[-1]
    assert rel <= rec["sigma_min_F_relerr"], (rec["sigma_min_F"], sv[-1], rec["sigma_min_F_relerr"])
    assert rec["sigma_min_F"] > 0
    assert rec["lambda_min_M0"] == pytest.approx(rec["sigma_min_F"] ** 2, rel=1e-15)


def test_tanh_tiny_w1_is_the_value_an_svd_and_high_precision_give():
    # the case: an SVD of F and 60-digit mpmath both give 1.962e-10 (the Gram route: 1.698e-10)
    spec = rmt.TrialSpec(activation="tanh", n=16, d0=4, d1=64, w1=1e-3)
    rec = rmt.run_trial(spec, 0, cache={})
    assert rec["sigma_min_F"] == pytest.approx(1.962e-10, rel=1e-3)
    assert rec["sigma_min_F_relerr"] < 1e-4


def test_well_conditioned_trials_keep_the_gram_route_and_its_bound_holds():
    spec = rmt.TrialSpec(activation="gelu", n=30, d0=8, d1=400)
    rec = rmt.run_trial(spec, 1, cache={})
    sv = np.linalg.svd(_explicit_F(spec, 1), compute_uv=False)
    assert rec["sigma_min_F_route"] == 0.0
    assert 0 < rec["sigma_min_F_relerr"] < 1e-6
    assert abs(rec["sigma_min_F"] - sv[-1]) / sv[-1] <= rec["sigma_min_F_relerr"]


def test_accuracy_knob_forces_the_accurate_route_and_both_routes_agree():
    spec = rmt.TrialSpec(activation="gelu", n=30, d0=8, d1=400, accuracy=1e-15)
    gram = rmt.run_trial(replace(spec, accuracy=1.0), 0, cache={})
    qr = rmt.run_trial(spec, 0, cache={})
    assert (gram["sigma_min_F_route"], qr["sigma_min_F_route"]) == (0.0, 1.0)
    assert abs(gram["sigma_min_F"] - qr["sigma_min_F"]) <= gram["sigma_min_F"] * (
        gram["sigma_min_F_relerr"] + qr["sigma_min_F_relerr"])
    with pytest.raises(ValueError, match="accuracy"):
        rmt.run_trial(replace(spec, accuracy=0.0), 0)


def test_d1_below_n_is_exactly_zero_with_no_error():
    rec = rmt.run_trial(rmt.TrialSpec(activation="gelu", n=30, d0=8, d1=20), 0, cache={})
    assert rec["sigma_min_F"] == 0.0 and rec["sigma_min_F_relerr"] == 0.0 and rec["sigma_min_F_route"] == 0.0


def test_accurate_route_rows_are_the_gram_pass_rows():
    spec = rmt.TrialSpec(activation="tanh", n=12, d0=5, d1=300, block_rows=64)
    pd = point_data(spec, {})
    key = rng.stream_key(0, "W0", 0)
    F = _explicit_F(spec)
    M0 = accumulate(pd.X, "tanh", 300, key_W=key, block_rows=spec.rows_per_block).M0
    np.testing.assert_allclose(F.T @ F, M0, rtol=1e-12)


# --------------------------------------------------------------------------- verdicts with errors


def _cube(smin, relerr, bound_sharp, trials):
    xr = pytest.importorskip("xarray")
    tr = np.arange(trials)
    ds = xr.Dataset({
        "sigma_min_F": ("trial", np.full(trials, smin)),
        "sigma_min_F_relerr": ("trial", np.full(trials, relerr)),
        "eq58_lower_sharp": ((), bound_sharp),
        "lower_undefined": ((), 0.0),
    }, coords={"trial": tr})
    return ds


def test_margin_inside_the_error_is_inconclusive_never_violated():
    # sigma_min_F is 1% below the bound but known only to 5%: neither held nor violated
    bound = 1.0 / (1 - 0.2)  # sqrt((1 - 0.2) * b) = 1
    ds = _cube(0.99, 0.05, bound, 30)
    v = A.bound_verdicts(ds, 0.2, names=["eq67_lower_sharp"])["eq67_lower_sharp"]
    assert set(np.unique(v.values)) == {A.INCONCLUSIVE}
    res = check_bound(ds, "eq67_lower_sharp", delta=0.2, min_rate=0.5, confidence=0.95)
    assert res.status == "inconclusive" and res.points[0].within_error == 30
    rate = A.holding_rate(ds, "eq67_lower_sharp", delta=0.2)
    assert int(rate["trials"]) == 0 and int(rate["inconclusive"]) == 30
    # the same margin with an exact value is a violation, and a value 10% above with 5% error holds
    assert check_bound(_cube(0.99, 0.0, bound, 30), "eq67_lower_sharp", delta=0.2, min_rate=0.5).status == "violated"
    assert check_bound(_cube(1.10, 0.05, bound, 30), "eq67_lower_sharp", delta=0.2, min_rate=0.5).status == "holds"
    # an unknown error (inf) is never a violation, whatever the value
    assert check_bound(_cube(1e-3, math.inf, bound, 30), "eq67_lower_sharp", delta=0.2, min_rate=0.5).status == \
        "inconclusive"


def test_tiny_w1_study_check_never_reports_a_false_violation(tmp_path):
    """The issue's reproduction: 10 trials at w1 = 1e-3; an SVD of each F decides the truth."""
    study = rmt.Study(grid={"activation": ["tanh"], "n": [16], "d0": [4], "d1": [64], "w1": [1e-3]},
                      trials=10, seed=0, t=(3,))
    summary = study.run(tmp_path / "s.zarr", progress=False, workers=1)
    assert summary.ok
    ds = rmt.open_results(tmp_path / "s.zarr").load()
    spec = study.trial_spec(next(study.points()))
    truth = []
    for k in range(10):
        sv = np.linalg.svd(_explicit_F(spec, k), compute_uv=False)[-1]
        truth.append(sv >= float(np.sqrt(0.8 * ds["eq58_lower_sharp"].sel(t=3).squeeze())))
    v = A.bound_verdicts(ds, 0.2, t=3, names=["eq67_lower_sharp"])["eq67_lower_sharp"].values.ravel()
    for k in range(10):
        if v[k] == A.VIOLATED:
            assert not truth[k], f"trial {k}: called violated, an SVD says it held"
        if v[k] == A.HELD:
            assert truth[k], f"trial {k}: called held, an SVD says it was violated"
    res = check_bound(ds, "eq67_lower_sharp", delta=0.2, min_rate=0.5, t=3)
    assert res.status != "violated" or not all(truth)


# --------------------------------------------------------------------------- data that make X^{*t} singular


def _data_file(tmp_path, kind):
    from rmt_engine.sampling.data import make_data  # noqa: PLC0415

    X = make_data("sphere", 8, 20, 3)
    if kind == "antipodal":
        X[:, 1] = -X[:, 0]
    else:
        X[:, 1] = X[:, 0]
    path = tmp_path / f"{kind}.npy"
    np.save(path, X)
    return str(path), X


def test_antipodal_columns_make_every_order_undefined_not_held(tmp_path):
    """x_1 = -x_0: x_1^{kron t} = (-1)^t x_0^{kron t}, so every X^{*t} is singular (equal columns at even
    t, opposite at odd t); the count n <= C(d0+t-1, t) says nothing about it."""
    from rmt_engine.theory import orders  # noqa: PLC0415
    from rmt_engine.theory.khatri_rao import khatri_rao, symmetric_tensor_dim  # noqa: PLC0415

    path, X = _data_file(tmp_path, "antipodal")
    spec = rmt.TrialSpec(activation="tanh", n=20, d0=8, d1=400, data="file", data_path=path, t=(2, 3, "auto"))
    rec = rmt.run_trial(spec, 0, cache={})
    for t in (2, 3):
        assert 20 <= symmetric_tensor_dim(8, t)
        assert np.linalg.svd(khatri_rao(X, t), compute_uv=False)[-1] < 1e-14  # the truth, by an explicit SVD
        assert rec[f"xkr_rank_deficient_t{t}"] == 1.0 and rec[f"sigma_min_xkr_t{t}"] == 0.0
        assert int(rec[f"lower_undefined_t{t}"]) & orders.DATA_RANK_DEFICIENT
        assert rec[f"eq58_lower_sharp_t{t}"] == 0.0 and rec[f"eq67_lower_sharp_t{t}"] == 0.0
    # t = auto skips every singular order: none is left up to 64
    assert math.isnan(rec["t_auto"]) and int(rec["lower_undefined_auto"]) == orders.NO_ORDER
    assert "numerically rank deficient" in orders.describe(rec["lower_undefined_t2"])
    # a pair that is only nearly antipodal stays defined (the tolerance is rounding, not geometry)
    X2 = X.copy()
    X2[:, 1] = -X[:, 0] + 1e-3 * X[:, 2]
    X2[:, 1] /= np.linalg.norm(X2[:, 1])
    np.save(tmp_path / "near.npy", X2)
    near = rmt.run_trial(replace(spec, data_path=str(tmp_path / "near.npy")), 0, cache={})
    assert near["xkr_rank_deficient_t2"] == 0.0 and near["t_auto"] == 1.0 or near["t_auto"] >= 2


def test_duplicate_columns_make_every_lower_bound_undefined(tmp_path):
    path, _ = _data_file(tmp_path, "duplicate")
    spec = rmt.TrialSpec(activation="gelu", n=20, d0=8, d1=400, data="file", data_path=path, t=(2, 4))
    rec = rmt.run_trial(spec, 0, cache={})
    assert rec["EM0_singular"] == 1.0
    assert rec["eq58_lower_hadamard"] == 0.0 and rec["eq67_lower_hadamard"] == 0.0  # undefined, not 4.6e-9
    for t in (2, 4):
        assert rec[f"eq58_lower_sharp_t{t}"] == 0.0 and rec[f"xkr_rank_deficient_t{t}"] == 1.0


def test_a_rank_deficient_study_is_undefined_in_check_never_held(tmp_path):
    path, _ = _data_file(tmp_path, "antipodal")
    study = rmt.Study(grid={"activation": ["tanh"], "n": [20], "d0": [8], "d1": [400], "data": ["file"]},
                      trials=4, seed=0, t=(2, 3), data_path=path)
    assert study.run(tmp_path / "a.zarr", progress=False, workers=1).ok
    ds = rmt.open_results(tmp_path / "a.zarr")
    for t in (2, 3):
        assert check_bound(ds, "eq67_lower_sharp", delta=0.2, min_rate=0.5, t=t).status == "undefined"
    # tanh is odd: phi(W0 x_1) = -phi(W0 x_0), so M0 and E[M0] are singular and no lower bound exists
    assert float(ds["EM0_singular"].max()) == 1.0 and float(ds["eq58_lower_hadamard"].max()) == 0.0
    assert check_bound(ds, "eq67_lower_hadamard", delta=0.2, min_rate=0.5).status == "undefined"
