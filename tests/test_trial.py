"""run_trial: every field against an independent dense computation or an exact inequality."""

import math

import numpy as np
import pytest

import rmt_engine as rmt

from rmt_engine.sampling import rng
from rmt_engine.theory.activations import activation
from rmt_engine.sampling.data import make_data
from rmt_engine.theory.expected import expected_gram
from rmt_engine.montecarlo.fields import record_fields
from rmt_engine.montecarlo.spec import TrialSpec
from rmt_engine.montecarlo.trial import make_labels, run_trial

SMALL = dict(n=24, d0=8, d1=150, d2=3)  # n <= C(d0+1, 2) = 36: sigma_min(X^{*2}) > 0


def dense_reference(spec, trial):
    """The trial recomputed with whole matrices and numpy.linalg (no streaming, no scipy BLAS)."""
    X = make_data(spec.data, spec.d0, spec.n, spec.seed)
    W = rng.normal_rows(rng.stream_key(spec.seed, "W0", trial), 0, spec.d1, spec.d0, spec.w1)
    V = rng.normal_rows(rng.stream_key(spec.seed, "V0", trial), 0, spec.d1, spec.d2, spec.w2).T
    F = activation(spec.activation).phi(W @ X)
    Y = make_labels(spec)
    EM0 = spec.d1 * expected_gram(X, spec.activation, w1=spec.w1, method="quadrature")
    return X, W, V, F, Y, EM0


@pytest.mark.parametrize("name", ["gelu", "tanh", "sigmoid", "softplus", "erf"])
def test_record_matches_dense_computation(name):
    spec = TrialSpec(activation=name, w1=1.3, w2=0.2, t=(1, 2), seed=3, block_rows=37, **SMALL)
    rec = run_trial(spec, 5)
    assert list(rec) == list(record_fields(spec.t))
    X, W, V, F, Y, EM0 = dense_reference(spec, 5)
    s = np.linalg.svd(F, compute_uv=False)
    act = activation(name)
    assert rec["sigma_min_F"] == pytest.approx(s[-1], rel=1e-8)
    assert rec["sigma_max_F"] == pytest.approx(s[0], rel=1e-12)
    lam = np.linalg.eigvalsh(F.T @ F)
    assert rec["lambda_2_M0"] == pytest.approx(lam[-2], rel=1e-10)
    lamE = np.linalg.eigvalsh(EM0)
    assert rec["lambda_min_EM0"] == pytest.approx(lamE[0], rel=1e-8)
    assert rec["lambda_max_EM0"] == pytest.approx(lamE[-1], rel=1e-10)
    assert rec["delta1"] == pytest.approx(1 - lam[0] / lamE[0], rel=1e-6, abs=1e-9)
    assert rec["delta2"] == pytest.approx(lam[-1] / lamE[-1] - 1, rel=1e-8, abs=1e-12)
    assert rec["dev_M0"] == pytest.approx(np.linalg.norm(F.T @ F - EM0, 2), rel=1e-8)
    assert rec["sigma_max_V0"] == pytest.approx(np.linalg.norm(V, 2), rel=1e-12)
    assert rec["h0"] == pytest.approx(np.linalg.norm(V @ F - Y) ** 2, rel=1e-12)
    assert rec["k1"] == pytest.approx(np.linalg.norm(W, axis=1).max() / (spec.w1 * math.sqrt(spec.d0 * math.log(spec.d1))))
    assert rec["k2"] == pytest.approx(np.linalg.norm(V, axis=0).max() / (spec.w2 * math.sqrt(spec.d2 * math.log(spec.d1))))
    sX = np.linalg.svd(X, compute_uv=False)
    assert rec["sigma_max_X"] == pytest.approx(sX[0], rel=1e-12)
    assert rec["sigma_min_xkr_t1"] == 0.0 and rec["xkr_rank_deficient_t1"] == 1.0  # n > d0
    G2 = (X.T @ X) ** 2  # Gram of the explicit Khatri-Rao square
    assert rec["sigma_min_xkr_t2"] == pytest.approx(math.sqrt(np.linalg.eigvalsh(G2)[0]), rel=1e-9)
    nu = act.dphi_max * sX[0] * np.linalg.norm(V, 2) + s[0]
    beta = math.sqrt(2) * sX[0] * (act.dphi_max + act.ddphi_max * np.linalg.norm(V, 2))
    h0 = np.linalg.norm(V @ F - Y) ** 2
    assert rec["margin"] == pytest.approx(2 * s[-1] ** 6 / (beta**2 * nu**2 * h0), rel=1e-6)
    assert rec["lazy_ratio"] == pytest.approx(beta / nu**2, rel=1e-10)


@pytest.mark.parametrize("name", ["gelu", "tanh", "sigmoid", "softplus", "erf"])
@pytest.mark.parametrize("w1", [0.5, 1.0, 2.5])
def test_sharp_eq58_holds_exactly(name, w1):
    spec = TrialSpec(activation=name, n=20, d0=5, d1=100, w1=w1, t=(1, 2, 3))
    rec = run_trial(spec, 0)
    tol = 1e-9 * rec["lambda_max_EM0"]
    for t in spec.t:
        assert rec[f"eq58_lower_sharp_t{t}"] <= rec["lambda_min_EM0"] + tol
    assert rec["lambda_max_EM0"] <= rec["eq58_upper_sharp"] + tol
    if w1 == 1.0:  # the paper's form coincides with the sharp form at w1 = 1
        assert rec["eq58_upper"] == pytest.approx(rec["eq58_upper_sharp"], rel=1e-14)


def test_d1_below_n_reports_zero_sigma_min():
    spec = TrialSpec(activation="gelu", n=30, d0=5, d1=20)
    rec = run_trial(spec, 1)
    assert rec["d1_below_n"] == 1.0 and rec["sigma_min_F"] == 0.0 and rec["mu"] == 0.0
    assert rec["delta1"] == 1.0 and rec["margin"] == 0.0


def test_symmetric_rank_deficiency_recorded():
    spec = TrialSpec(activation="tanh", n=12, d0=3, d1=50, t=(2, 3))  # C(4,2) = 6 and C(5,3) = 10 are both < 12
    rec = run_trial(spec, 0)
    assert rec["xkr_rank_deficient_t2"] == 1.0 and rec["sigma_min_xkr_t2"] == 0.0
    assert rec["xkr_rank_deficient_t3"] == 1.0 and rec["eq20_width_t3"] == math.inf


def test_reproducible_cache_blocks_and_spectrum():
    spec = TrialSpec(activation="gelu", t=(2,), **SMALL)
    cache = {}
    a = run_trial(spec, 2, cache=cache)
    b = run_trial(spec, 2, cache=cache)
    c = run_trial(spec, 2)
    assert np.array(list(a.values())).tobytes() == np.array(list(b.values())).tobytes() \
        == np.array(list(c.values())).tobytes() and list(a) == list(b) == list(c)  # bitwise, NaN included
    other = run_trial(spec.replace(block_rows=1), 2)
    for k in a:
        assert other[k] == pytest.approx(a[k], rel=1e-9, abs=1e-12, nan_ok=True), k
    rec, eig = run_trial(spec, 2, spectrum=True)
    assert eig.shape == (spec.n,) and np.all(np.diff(eig) >= 0)
    assert (eig[0], eig[-2], eig[-1]) == (rec["lambda_min_M0"], rec["lambda_2_M0"], rec["lambda_max_M0"])
    assert run_trial(spec, 3) != a


def test_trials_share_data_but_not_weights():
    spec = TrialSpec(activation="erf", **SMALL)
    a, b = run_trial(spec, 0), run_trial(spec, 1)
    assert a["sigma_max_X"] == b["sigma_max_X"] and a["lambda_min_EM0"] == b["lambda_min_EM0"]
    assert a["sigma_min_F"] != b["sigma_min_F"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(activation="relu"), "relu"),
    (dict(w1=0.0), "w1 must be a finite number > 0"),
    (dict(w2=-1.0), "w2 must be a finite number > 0"),
    (dict(t=(0,)), "an integer in \\[1, 1000\\], got 0"),
    (dict(d1=0), "d1 must be a positive integer"),
    (dict(n=2.5), "n must be a positive integer"),
    (dict(data="mnist"), "unknown data kind 'mnist'"),
    (dict(dtype="float16"), "unknown dtype 'float16'"),
    (dict(bound_delta1=1.0), "bound_delta1 must lie in"),
    (dict(data="file"), "needs data_path"),
])
def test_spec_errors_name_the_problem(kwargs, match):
    base = dict(activation="gelu", n=10, d0=4, d1=20)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        TrialSpec(**base)


def test_trial_index_errors():
    spec = TrialSpec(activation="gelu", n=10, d0=4, d1=20)
    with pytest.raises(ValueError, match="trial must be a non-negative integer"):
        run_trial(spec, -1)
    with pytest.raises(TypeError, match="TrialSpec"):
        run_trial(dict(activation="gelu"), 0)


def test_point_record_solves_each_khatri_rao_order_once(monkeypatch):
    """t = ("auto", 2) with t_auto = 2: the order-2 eigen-solve serves the search for t_auto and the
    bound (it was run twice), and the record is unchanged."""
    import rmt_engine.montecarlo.trial as tr
    import rmt_engine.theory.orders as orders_mod

    spec = TrialSpec(activation="gelu", n=20, d0=8, d1=80, t=("auto", 2))
    ref = tr.point_record(spec, {})
    calls = []
    real = tr.khatri_rao_extremes_checked

    def counting(X, t):
        calls.append(t)
        return real(X, t)

    monkeypatch.setattr(tr, "khatri_rao_extremes_checked", counting)
    monkeypatch.setattr(orders_mod, "khatri_rao_extremes_checked", counting)
    again = tr.point_record(spec, {})
    assert sorted(calls) == sorted(set(calls)), calls
    assert ref["t_auto"] == 2.0 and {k: np.float64(v).tobytes() for k, v in again.items()} == \
        {k: np.float64(v).tobytes() for k, v in ref.items()}


def test_t_best_is_the_admissible_order_with_the_largest_sharp_bound():
    """t = "best" against the explicit orders 1..BEST_T_MAX computed as separate fields (two routes):
    the largest defined eq58_lower_sharp among them; above t_auto's where another order wins."""
    from rmt_engine.montecarlo.fields import BEST_T_MAX

    orders_ = tuple(range(1, BEST_T_MAX + 1))
    spec = TrialSpec(activation="gelu", n=100, d0=16, d1=2000, t=("auto", "best") + orders_)
    r = run_trial(spec, 0, cache={})
    defined = {t: r[f"eq58_lower_sharp_t{t}"] for t in orders_
               if r[f"lower_undefined_t{t}"] == 0 and r[f"xkr_rank_deficient_t{t}"] == 0}
    t_star = max(defined, key=defined.get)
    assert r["t_best"] == t_star and r["eq58_lower_sharp_best"] == defined[t_star]
    assert r["eq67_lower_sharp_best"] == r[f"eq67_lower_sharp_t{t_star}"]
    assert r["t_auto"] == min(defined) == 2 and t_star == 4  # the smallest admissible order is not the best
    assert r["eq58_lower_sharp_best"] > 1.5 * r["eq58_lower_sharp_auto"]
    # without "best" the record keeps its fields (no t_best: cubes of earlier studies are unchanged)
    plain = run_trial(TrialSpec(activation="gelu", n=100, d0=16, d1=2000, t=("auto",)), 0, cache={})
    assert "t_best" not in plain and not any(k.endswith("_best") for k in plain)
    with pytest.raises(ValueError, match="'best'"):
        TrialSpec(activation="gelu", n=10, d0=4, d1=40, t=("bets",))


def test_t_best_in_a_study_cube_report_and_check(tmp_path, capsys):
    from rmt_engine.cli import main
    from rmt_engine.study import Study

    study = Study(grid={"activation": ["gelu"], "n": [100], "d0": [16], "d1": [2000]}, trials=2, seed=0,
                  t=("auto", "best"))
    assert study.run(tmp_path / "b.zarr", workers=1, progress=False).ok
    ds = rmt.open_results(tmp_path / "b.zarr", squeeze=True)
    assert np.all(ds["t_best"].values == 4.0) and "eq67_lower_sharp_best" in ds
    assert "t_best" in ds["eq58_lower_sharp_best"].attrs["long_name"]
    b = ds.rmt.bound("eq67_lower_sharp", t="best")
    assert np.all(b.t_used.values == 4.0) and np.allclose(b.values, ds["eq67_lower_sharp_best"].values)
    code = main(["check", str(tmp_path / "b.zarr"), "--bound", "eq67_lower_sharp", "--t", "best"])
    out = capsys.readouterr().out
    assert code == 2 and "t=best" in out and "│ 4 │" in out  # inconclusive with 2 trials; each point at t_best = 4
