"""rmt_engine.montecarlo.train: gradient descent from the record's own Theta0 (loss, gradients, NTK, stopping, determinism)."""

from __future__ import annotations

import functools
import math
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from rmt_engine import TrialSpec, run_trial
from rmt_engine.sampling import rng
from rmt_engine.theory.activations import _unregister_activation, activation, register_activation
from rmt_engine.sampling.data import make_data
import rmt_engine.montecarlo.train as train_module
from rmt_engine.montecarlo.train import (TRAIN_FIELDS, TrainSpec, curve_iterations, curve_on_grid, gradient_descent,
                              initial_weights, loss_and_grads, ntk_gram, train_trial)

BUILTINS = ("gelu", "tanh", "sigmoid", "softplus", "erf")


def _problem(d0, n, d1, d2, seed=0, wscale=1.0):
    r = np.random.default_rng(seed)
    X = make_data("sphere", d0, n, seed=seed)
    W = r.standard_normal((d1, d0)) * wscale
    V = r.standard_normal((d2, d1)) / math.sqrt(d1)
    Y = r.standard_normal((d2, n))
    return X, Y / np.linalg.norm(Y), W, V


# ------------------------------------------------------------------------------------------------
# settings


@pytest.mark.parametrize("kwargs, match", [
    (dict(tol=0.0), "TrainSpec.tol"), (dict(tol=-1e-3), "TrainSpec.tol"), (dict(tol=math.nan), "TrainSpec.tol"),
    (dict(tol=math.inf), "TrainSpec.tol"), (dict(tol=1.0), "TrainSpec.tol"),
    (dict(max_iters=0), "TrainSpec.max_iters"), (dict(max_iters=2.5), "TrainSpec.max_iters"),
    (dict(max_iters=True), "TrainSpec.max_iters"),
    (dict(lr=0.0), "TrainSpec.lr must"), (dict(lr=-0.1), "TrainSpec.lr must"), (dict(lr=math.inf), "TrainSpec.lr must"),
    (dict(lr_scale=0.0), "TrainSpec.lr_scale"), (dict(lr_scale=math.nan), "TrainSpec.lr_scale"),
    (dict(record_every="lin"), "TrainSpec.record_every"), (dict(record_every=0), "TrainSpec.record_every"),
])
def test_trainspec_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainSpec(**kwargs)


def test_trainspec_from_dict_and_bad_calls():
    assert TrainSpec.from_dict({"max_iters": 10, "tol": 1e-3}) == TrainSpec(max_iters=10, tol=1e-3)
    with pytest.raises(ValueError, match=r"unknown TrainSpec key\(s\) \['lr_max'\]"):
        TrainSpec.from_dict({"lr_max": 1.0})
    X, Y, W, V = _problem(3, 4, 5, 1)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        gradient_descent(X, Y, W, V, "gelu", 0.0, TrainSpec(max_iters=2))
    with pytest.raises(ValueError, match="train_layers"):
        gradient_descent(X, Y, W, V, "gelu", 0.1, TrainSpec(max_iters=2), train_layers=("U",))
    with pytest.raises(ValueError, match=r"V must be d2 x d1"):
        gradient_descent(X, Y, W, V[:, :3], "gelu", 0.1)
    with pytest.raises(ValueError, match=r"train_trial needs d1 >= n \(got d1 = 10 < n = 12\)"):
        train_trial(TrialSpec(activation="gelu", n=12, d0=4, d1=10), 0, TrainSpec(max_iters=2))


def test_curve_iterations_grid():
    g = curve_iterations(TrainSpec(max_iters=20000))
    assert g.dtype == np.int64 and g[0] == 0 and g[-1] == 20000
    assert np.all(np.diff(g) > 0)
    assert list(g[:11]) == list(range(11))
    per_decade = [np.sum((g >= 10**e) & (g < 10**(e + 1))) for e in (2, 3)]
    assert all(18 <= c <= 21 for c in per_decade), per_decade
    g = curve_iterations(TrainSpec(max_iters=25, record_every=10))
    assert list(g) == [0, 10, 20, 25]
    assert list(curve_iterations(TrainSpec(max_iters=1))) == [0, 1]
    # a trial's own curve onto the grid: NaN after it stopped; K off the grid is dropped
    vals = curve_on_grid(TrainSpec(max_iters=25, record_every=10), [0, 10, 13], [1.0, 0.5, 0.25])
    assert vals[:2].tolist() == [1.0, 0.5] and np.isnan(vals[2:]).all()


# ------------------------------------------------------------------------------------------------
# loss and gradients


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("d2", [1, 3])
def test_gradients_match_central_differences(name, d2):
    X, Y, W, V = _problem(3, 4, 5, d2, seed=d2)
    act = activation(name)

    def h(W, V):
        return float(np.sum((V @ act.phi(W @ X) - Y) ** 2))

    h0, gW, gV = loss_and_grads(X, Y, W, V, name)
    assert h0 == pytest.approx(h(W, V), rel=1e-14)
    eps = 1e-6
    for A, g in ((W, gW), (V, gV)):
        fd = np.empty_like(A)
        for idx in np.ndindex(A.shape):
            a0 = A[idx]
            A[idx] = a0 + eps
            hp = h(W, V)
            A[idx] = a0 - eps
            hm = h(W, V)
            A[idx] = a0
            fd[idx] = (hp - hm) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())


# ------------------------------------------------------------------------------------------------
# closed form: phi = identity and one layer trained is linear least squares


@pytest.fixture
def identity_act():
    act = register_activation("identity_test", lambda x: x, lambda x: 1.0 + 0.0 * x, lambda x: 0.0 * x,
                              odd=True, dphi_max=1.0, ddphi_max=0.0)
    yield act
    _unregister_activation("identity_test")


@pytest.mark.parametrize("d2", [1, 2])
def test_one_layer_identity_matches_closed_form(identity_act, d2):
    """V fixed: R_{k+1} = R_k - 2 lr (V V^T) R_k G with G = X^T X, so in the eigenbases S = P s P^T of V V^T
    and G = Q g Q^T the entries of P^T R Q shrink by (1 - 2 lr s_i g_j) each step. W fixed: R_{k+1} = R_k (I - 2 lr M),
    M = F^T F with F = W0 X."""
    X, Y, W0, V0 = _problem(4, 6, 5, d2, seed=7)
    steps = 100
    train = TrainSpec(max_iters=steps, tol=1e-300)
    G = X.T @ X
    g, Q = np.linalg.eigh(G)
    R0 = V0 @ W0 @ X - Y
    k = np.arange(steps + 1)[:, None, None]

    s, P = np.linalg.eigh(V0 @ V0.T)
    lr = 0.3 / (s.max() * g.max())
    res = gradient_descent(X, Y, W0, V0, identity_act, lr, train, train_layers=("W",), ntk=False)
    C = P.T @ R0 @ Q
    h = np.sum(C[None] ** 2 * (1.0 - 2.0 * lr * s[:, None] * g[None, :])[None] ** (2 * k), axis=(1, 2))
    assert res.iterations == steps and res.status == 1 and res.rel_change_V == 0.0
    np.testing.assert_allclose(res.loss_history, h / h[0], rtol=1e-10, atol=0)
    assert res.loss_history[-1] < 0.9  # the curve did move

    F = W0 @ X
    m, QM = np.linalg.eigh(F.T @ F)
    lr = 0.3 / m.max()
    res = gradient_descent(X, Y, W0, V0, identity_act, lr, train, train_layers=("V",), ntk=False)
    C = R0 @ QM
    h = np.sum(C[None] ** 2 * (1.0 - 2.0 * lr * m[None, :])[None] ** (2 * k), axis=(1, 2))
    assert res.rel_change_W == 0.0
    np.testing.assert_allclose(res.loss_history, h / h[0], rtol=1e-10, atol=0)
    assert res.loss_history[-1] < 0.9


# ------------------------------------------------------------------------------------------------
# against a dense reference loop, from the engine's own sampler


@pytest.mark.parametrize("chunk", [None, 13], ids=["one-piece", "row-pieces"])
def test_matches_dense_reference_loop(chunk, monkeypatch):
    if chunk is not None:  # W X, phi, phi' and V^T R in pieces of 13 // n = 2 rows
        monkeypatch.setattr(train_module, "_CHUNK_ELEMS", chunk)
    spec = TrialSpec(activation="gelu", n=6, d0=4, d1=12, d2=2, w2=0.3, block_rows=5)
    trial, steps = 3, 40
    # W0, V0 as the record's streamed pass draws them: row blocks of the counter-based streams
    kW, kV = rng.stream_key(spec.seed, "W0", trial), rng.stream_key(spec.seed, "V0", trial)
    blocks = list(rng.row_blocks(spec.d1, 2))
    W0 = np.concatenate([rng.normal_rows(kW, a, b, spec.d0, spec.w1) for a, b in blocks])
    V0 = np.concatenate([rng.normal_rows(kV, a, b, spec.d2, spec.w2) for a, b in blocks]).T
    W0e, V0e = initial_weights(spec, trial)
    assert np.array_equal(W0, W0e) and np.array_equal(V0, V0e)  # bitwise the record's matrices

    rec, its, losses = train_trial(spec, trial, TrainSpec(max_iters=steps, tol=1e-300), return_curve=True)
    lr = rec["gd_lr"]
    assert lr == pytest.approx(1.0 / (2 * rec["beta"] * math.sqrt(rec["h0"]) + 2 * rec["mu"] ** 2 + 2 * rec["nu"] ** 2),
                               rel=1e-15)
    act = activation("gelu")
    X = make_data("sphere", spec.d0, spec.n, spec.seed)
    from rmt_engine.montecarlo.trial import make_labels

    Y = make_labels(spec)
    W, V = W0.copy(), V0.copy()
    hist, path, dist, sig = [], 0.0, [], []
    for k in range(steps + 1):
        Z = W @ X
        R = V @ act.phi(Z) - Y
        hist.append(np.sum(R * R))
        dist.append(math.sqrt(np.sum((W - W0) ** 2) + np.sum((V - V0) ** 2)))
        sig.append(np.linalg.norm(V, 2))
        if k == steps:
            break
        gV = 2 * R @ act.phi(Z).T
        gW = 2 * ((V.T @ R) * act.dphi(Z)) @ X.T
        path += lr * math.sqrt(np.sum(gW**2) + np.sum(gV**2))
        W, V = W - lr * gW, V - lr * gV
    hist = np.array(hist)
    assert hist[0] == pytest.approx(rec["h0"], rel=1e-12)  # the record's h0 is the training's h0
    assert rec["gd_status"] == 1 and rec["gd_iterations"] == steps
    assert list(its) == list(curve_iterations(TrainSpec(max_iters=steps)))
    np.testing.assert_allclose(losses, hist[its] / hist[0], rtol=1e-12)
    assert rec["gd_final_loss"] == pytest.approx(hist[-1] / hist[0], rel=1e-12)
    assert rec["gd_path_length"] == pytest.approx(path, rel=1e-12)
    assert rec["gd_max_dist"] == pytest.approx(max(dist), rel=1e-12)
    assert rec["gd_max_dist_over_rho"] == pytest.approx(max(dist) / (rec["mu"] / (2 * rec["beta"])), rel=1e-12)
    assert rec["gd_max_sigma_V"] == pytest.approx(max(sig), rel=1e-12)
    assert rec["gd_max_sigma_V_over_chi"] == pytest.approx(max(sig) / rec["sigma_max_V0"], rel=1e-12)
    assert rec["gd_rel_change_W"] == pytest.approx(np.linalg.norm(W - W0) / np.linalg.norm(W0), rel=1e-10)
    assert rec["gd_rel_change_V"] == pytest.approx(np.linalg.norm(V - V0) / np.linalg.norm(V0), rel=1e-10)
    assert rec["gd_rate_theory"] == pytest.approx(1 - 2 * lr * rec["mu"] ** 2, rel=1e-15)
    slope = np.polyfit(np.arange(steps // 10, steps + 1), np.log(hist[steps // 10:]), 1)[0]
    assert rec["gd_rate"] == pytest.approx(math.exp(slope), rel=1e-10)
    assert list(rec) == list(run_trial(spec, trial)) + list(TRAIN_FIELDS)  # the record, then the GD fields in order


def test_lr_scale_and_given_lr():
    spec = TrialSpec(activation="tanh", n=5, d0=3, d1=10, w2=0.3)
    base = train_trial(spec, 0, TrainSpec(max_iters=3))
    half = train_trial(spec, 0, TrainSpec(max_iters=3, lr_scale=0.5))
    assert half["gd_lr"] == 0.5 * base["gd_lr"] == 0.5 * base["eta_max"]
    given = train_trial(spec, 0, TrainSpec(max_iters=3, lr=0.02, lr_scale=0.5))
    assert given["gd_lr"] == 0.01


# ------------------------------------------------------------------------------------------------
# the NTK


@pytest.mark.parametrize("d2", [1, 2])
def test_ntk_gram_is_the_jacobian_gram(d2):
    X, Y, W, V = _problem(3, 5, 8, d2, seed=11)
    act = activation("tanh")

    def Phi(W, V):
        return (V @ act.phi(W @ X)).reshape(-1)  # row-major vec: output index p n + a

    eps = 1e-6
    cols = []
    for A in (W, V):
        for idx in np.ndindex(A.shape):
            a0 = A[idx]
            A[idx] = a0 + eps
            fp = Phi(W, V)
            A[idx] = a0 - eps
            fm = Phi(W, V)
            A[idx] = a0
            cols.append((fp - fm) / (2 * eps))
    J = np.stack(cols, axis=1)
    K = ntk_gram(X, W, V, act)
    np.testing.assert_allclose(K, J @ J.T, rtol=1e-7, atol=1e-8 * np.abs(K).max())
    sv = np.linalg.svd(J, compute_uv=False)
    ev = np.linalg.eigvalsh(K)
    assert math.sqrt(ev[0]) == pytest.approx(sv[-1], rel=1e-6)
    res = gradient_descent(X, Y, W, V, act, 1e-3, TrainSpec(max_iters=1))
    assert res.mu_ntk == pytest.approx(sv[-1], rel=1e-6)


@pytest.mark.parametrize("name, d2", [("gelu", 1), ("sigmoid", 1), ("tanh", 3)])
def test_mu_ntk_at_least_mu(name, d2):
    spec = TrialSpec(activation=name, n=10, d0=4, d1=30, d2=d2, w2=0.2)
    rec = train_trial(spec, 1, TrainSpec(max_iters=20))
    assert rec["mu_ntk"] >= rec["mu"] > 0
    assert rec["mu_ntk_final"] > 0 and 0 < rec["ntk_rel_change"] < 1


# ------------------------------------------------------------------------------------------------
# determinism


def test_curves_are_bitwise_reproducible_across_processes():
    spec = TrialSpec(activation="gelu", n=8, d0=4, d1=40, w2=0.2)
    train = TrainSpec(max_iters=300)
    first = train_trial(spec, 2, train, return_curve=True)
    again = train_trial(spec, 2, train, return_curve=True)
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, not forks of this one
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        remote = list(pool.map(functools.partial(train_trial, return_curve=True), [spec, spec], [2, 2], [train, train]))
    for rec, its, ls in [again, *remote]:
        assert np.array_equal(its, first[1]) and np.array_equal(ls, first[2])  # bitwise
        assert rec.keys() == first[0].keys()
        for k, v in rec.items():
            assert v == first[0][k] or (math.isnan(v) and math.isnan(first[0][k])), k


# ------------------------------------------------------------------------------------------------
# the CuPy branch on the fake cupy of test_gpu_wrappers


@pytest.fixture
def fake_cupy(monkeypatch):
    import scipy.special
    import types

    from rmt_engine.backend import xp as _backend, cuda as _cuda
    from test_gpu_wrappers import make_fake_cupy

    fake = make_fake_cupy()
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy.special = scipy.special
    for name, mod in (("cupy", fake), ("cupyx", cupyx), ("cupyx.scipy", cupyx.scipy),
                      ("cupyx.scipy.special", scipy.special)):
        monkeypatch.setitem(sys.modules, name, mod)
    _backend._cupy_or_none.cache_clear()
    _cuda.clear_cache()
    yield fake
    _backend._cupy_or_none.cache_clear()
    _cuda.clear_cache()


def test_fake_cupy_path_matches_numpy(fake_cupy):
    from test_gpu_wrappers import FakeArray

    spec = TrialSpec(activation="erf", n=8, d0=4, d1=30, d2=2, w2=0.2)
    train = TrainSpec(max_iters=60)
    ref, its, ls = train_trial(spec, 1, train, return_curve=True)
    fake_cupy.log.clear()
    got, its_f, ls_f = train_trial(spec.replace(backend="cupy"), 1, train, return_curve=True)
    assert "rmt_activation_all" in fake_cupy.log and "rmt_normal_rows" in fake_cupy.log  # the GPU branches ran
    assert np.array_equal(its, its_f)
    np.testing.assert_allclose(ls_f, ls, rtol=1e-10)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-8, abs=1e-12, nan_ok=True), k
    W0, V0 = initial_weights(spec.replace(backend="cupy"), 1)
    assert isinstance(W0, FakeArray)
    X, Y = fake_cupy.asarray(make_data("sphere", 4, 8, 0)), fake_cupy.asarray(np.ones((2, 8)) / 4)
    res = gradient_descent(X, Y, W0, V0, "erf", 1e-3, TrainSpec(max_iters=5))
    assert isinstance(res.W, FakeArray) and res.iterations == 5


# ------------------------------------------------------------------------------------------------
# convergence and divergence


def test_wide_gelu_converges():
    spec = TrialSpec(activation="gelu", n=20, d0=8, d1=400, w2=0.05)
    train = TrainSpec(max_iters=5000)
    rec, its, ls = train_trial(spec, 0, train, return_curve=True)
    print(f"\nwide gelu: status {rec['gd_status']:.0f} after {rec['gd_iterations']:.0f} steps, "
          f"rate {rec['gd_rate']:.5f} vs Eq. 14 {rec['gd_rate_theory']:.5f}, margin {rec['margin']:.3g}, "
          f"max dist / rho {rec['gd_max_dist_over_rho']:.3g}, mu {rec['mu']:.4g} <= mu_ntk {rec['mu_ntk']:.4g}")
    assert rec["gd_status"] == 0 and rec["gd_final_loss"] <= train.tol
    assert ls[-1] == rec["gd_final_loss"] and its[-1] == rec["gd_iterations"]
    assert np.all(np.diff(ls) <= 0)  # the Eq. 13 step is small: monotone descent
    assert 0 < rec["gd_rate"] < 1 and 0 < rec["gd_rate_theory"] < 1
    grid = curve_on_grid(train, its, ls)
    assert np.isnan(grid[curve_iterations(train) > rec["gd_iterations"]]).all()


def test_divergence_is_reported():
    spec = TrialSpec(activation="gelu", n=6, d0=4, d1=12, w2=0.3)
    rec = train_trial(spec, 0, TrainSpec(max_iters=200, lr=10.0))
    assert rec["gd_status"] == 2 and rec["gd_iterations"] < 200
    assert not rec["gd_final_loss"] <= 1e6  # > 1e6 or not finite


def test_stopping_rule_is_exact():
    X, Y, W, V = _problem(4, 6, 30, 1, seed=5)
    res = gradient_descent(X, Y, W, V, "gelu", 0.01, TrainSpec(max_iters=5000, tol=1e-4), ntk=False)
    h = res.loss_history
    assert res.status == 0 and res.status_name == "converged" and res.iterations == h.size - 1
    assert h[-1] <= 1e-4 < h[:-1].min()  # stopped at the first k with h_k <= tol h_0
    capped = gradient_descent(X, Y, W, V, "gelu", 0.01, TrainSpec(max_iters=res.iterations - 1, tol=1e-4), ntk=False)
    assert capped.status == 1 and capped.iterations == res.iterations - 1
    assert np.array_equal(capped.loss_history, h[:-1])
