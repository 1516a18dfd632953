"""extremes: certified lambda_min / lambda_max / lambda_2 and ||A - beta B||_2 against dense eigvalsh.

The matrices are small (n = 300-480), below ``DENSE_BELOW_N``, so the certified route is asked
for explicitly (``method="certified"``); the size switch itself has its own test.
"""

import math
import tracemalloc

import numpy as np
import pytest
import scipy.linalg as sl

import rmt_engine.linalg.extremes as ext
from rmt_engine.sampling import rng
from rmt_engine.sampling.data import make_data
from rmt_engine.theory.expected import expected_gram
from rmt_engine.linalg.extremes import (
    DENSE_BELOW_N,
    EPS,
    extremes,
    spectral_norm_certified,
)
from rmt_engine.montecarlo.gram import gram

N = 400
D0 = 20
RTOL = 1e-10


def _host(a):
    return np.asarray(a.get() if hasattr(a, "get") else a)


def _close(value, ref, scale, n):
    """The accuracy claim: rtol relative, or the rounding level sqrt(n) eps ||M|| where larger."""
    return abs(value - ref) <= max(RTOL * abs(ref), 4 * math.sqrt(n) * EPS * scale)


_CACHE = {}


def _m0(act, ratio, n=N):
    key = (act, ratio, n)
    if key not in _CACHE:
        X = make_data("sphere", D0, n, seed=3)
        d1 = int(round(ratio * n))
        M = gram(X, act, d1, seed=3, trial=0)
        _CACHE[key] = (X, d1, M, sl.eigvalsh(M, driver="evd"))
    return _CACHE[key]


@pytest.mark.parametrize("act", ["gelu", "tanh"])
@pytest.mark.parametrize("ratio", [1.05, 4.0, 64.0])
def test_certified_extremes_match_dense_and_brackets_hold(act, ratio):
    _, _, M, ev = _m0(act, ratio)
    res = extremes(M, method="certified", seed_key=rng.stream_key(5, "W0", 0))
    assert res.route == "certified", res.reason
    ref = {"min": ev[0], "max": ev[-1], "second": ev[-2]}
    assert set(res.brackets) == {"min", "max", "second"}
    for name, b in res.brackets.items():
        assert _close(b.value, ref[name], ev[-1], N), (name, b, ref[name])
        assert b.lo <= ref[name] <= b.hi, (name, b, ref[name])
        assert b.lo <= b.value <= b.hi
        assert b.width <= RTOL * abs(b.value) + 4 * res.tau
    # three factorizations: M (the shift-invert operator), M - s I, s I - M + gamma y y^T
    assert res.iterations["factorizations"] == 3
    assert res.iterations["vectors"] > 0


def test_min_bracket_is_a_cholesky_certificate():
    """The lower end of lambda_min is a shift at which M - s I is positive definite, and it is
    tight: moving the shift past the upper end makes the Cholesky fail."""
    _, _, M, ev = _m0("gelu", 4.0)
    b = extremes(M, ("min",), method="certified")["min"]
    np.linalg.cholesky(M - b.lo * np.eye(N))
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(M - (b.hi + 10 * (b.hi - b.lo)) * np.eye(N))
    assert "Cholesky" in b.lo_by and "Courant-Fischer" in b.hi_by
    assert b.worst_slack > 0


def test_second_bracket_upper_end_is_certified():
    _, _, M, ev = _m0("tanh", 4.0)
    res = extremes(M, ("max", "second"), method="certified")
    b2, b1 = res["second"], res["max"]
    assert "interlacing" in b2.hi_by
    assert b1.lo <= ev[-1] <= b1.hi and b2.lo <= ev[-2] <= b2.hi
    # exactly one eigenvalue above the certified upper end of lambda_2
    assert int(np.sum(ev > b2.hi)) == 1


def test_which_subsets_and_single_top():
    _, _, M, ev = _m0("gelu", 4.0)
    full = extremes(M, method="certified")
    for which in (("min",), ("max",), ("second",), ("max", "min")):
        res = extremes(M, which, method="certified")
        assert tuple(res.brackets) == which
        for w in which:
            assert _close(res[w].value, full[w].value, ev[-1], N)
    assert extremes(M, "max", method="certified").iterations["factorizations"] == 1
    assert extremes(M, ("max",), method="certified")["max"].hi_by.startswith("Cholesky of s I - M")


def test_deterministic_bitwise():
    _, _, M, _ = _m0("tanh", 1.05)
    key = rng.stream_key(11, "W0", 2)
    a = extremes(M, method="certified", seed_key=key)
    b = extremes(M, method="certified", seed_key=key.copy())
    assert a.brackets == b.brackets  # dataclass equality: every float bit
    assert a.iterations == b.iterations
    c = extremes(M, method="certified", seed_key=rng.stream_key(11, "W0", 3))
    assert c.route == "certified"
    for w in a.brackets:  # another start block: the same numbers within the brackets
        assert c[w].lo <= a[w].hi and a[w].lo <= c[w].hi
    K = expected_gram(_m0("tanh", 1.05)[0], "tanh")
    d1 = _m0("tanh", 1.05)[1]
    n1 = spectral_norm_certified(M, K, beta=d1, method="certified", seed_key=key)
    n2 = spectral_norm_certified(M, K, beta=d1, method="certified", seed_key=key)
    assert n1.bracket == n2.bracket


@pytest.mark.parametrize("act,ratio", [("gelu", 4.0), ("tanh", 64.0), ("sigmoid", 1.05)])
def test_spectral_norm_certified_matches_dense(act, ratio):
    X, d1, M, _ = _m0(act, ratio)
    K = expected_gram(X, act)
    D = K * (-d1)
    D += M  # run_trial's rounding
    evd = sl.eigvalsh(D, driver="evd")
    ref = max(-evd[0], evd[-1])
    work = np.empty_like(M)
    res = spectral_norm_certified(M, K, beta=d1, method="certified", work=work)
    assert res.route == "certified", res.reason
    b = res.bracket
    assert _close(b.value, ref, ref, N)
    assert b.lo <= ref <= b.hi
    assert res.iterations["factorizations"] == 2
    fast = spectral_norm_certified(M, K, beta=d1, method="certified", certify=False)
    assert fast.route == "lanczos" and fast.iterations["factorizations"] == 0
    assert _close(fast.value, b.value, ref, N) and fast.bracket.lo <= ref  # two GEMMs, no workspace
    same = spectral_norm_certified(M, K, beta=d1, method="certified", certify=False, work=work)
    assert same.value == b.value  # with the workspace: the same Krylov run on the stored D, bit for bit
    plain = spectral_norm_certified(D, method="certified")  # B omitted: ||A||_2
    assert _close(plain.value, ref, ref, N)


def test_exactly_repeated_bottom_eigenvalue_is_certified():
    """A bottom eigenvalue of multiplicity 12 (> block size): the value is still certified."""
    g = np.random.default_rng(4)
    n = 300
    Q, _ = np.linalg.qr(g.standard_normal((n, n)))
    lam = np.concatenate([np.full(12, 1.0), np.linspace(1.5, 50.0, n - 13), [4000.0]])
    M = (Q * lam) @ Q.T
    M = (M + M.T) / 2
    res = extremes(M, method="certified")
    assert res.route == "certified", res.reason
    ev = sl.eigvalsh(M)
    for name, ref in (("min", ev[0]), ("max", ev[-1]), ("second", ev[-2])):
        assert res[name].lo <= ref <= res[name].hi
        assert _close(res[name].value, ref, ev[-1], n)


def test_fallback_singular_matrix():
    X = make_data("sphere", D0, N, seed=3)
    M = gram(X, "tanh", N // 2, seed=3, trial=0)  # d1 < n: rank n / 2
    res = extremes(M, method="certified")
    assert res.route == "dense"
    assert "Cholesky of M failed" in res.reason
    ev = sl.eigvalsh(M, driver="evd")
    assert res["min"].value == ev[0] and res["max"].value == ev[-1] and res["second"].value == ev[-2]
    assert res.iterations["failed_factorizations"] == 1


def test_bottom_cluster_certified_or_dense_when_krylov_is_cut(monkeypatch):
    """40 eigenvalues within 4e-9 relative at the bottom (spacing 1e-10 = rtol). Block Lanczos on
    M^{-1} still resolves lambda_min (the bulk is filtered out, then the cluster is all that is
    left), and the certificate holds. With the basis capped at 24 vectors it cannot converge:
    the dense route answers, with the reason."""
    g = np.random.default_rng(7)
    n = 480
    Q, _ = np.linalg.qr(g.standard_normal((n, n)))
    lam = np.concatenate([1.0 + 1e-10 * np.arange(40), np.linspace(2.0, 30.0, n - 40)])
    M = (Q * lam) @ Q.T
    M = (M + M.T) / 2
    ev = sl.eigvalsh(M)
    res = extremes(M, ("min",), method="certified")
    assert res.route == "certified", res.reason
    assert res["min"].lo <= ev[0] <= res["min"].hi
    assert res["min"].hi - res["min"].lo < 1e-10  # narrower than the cluster's spacing
    monkeypatch.setattr(ext, "MAX_BASIS", 24)
    cut = extremes(M, ("min",), method="certified")
    assert cut.route == "dense"
    assert "did not converge" in cut.reason
    assert cut["min"].value == ev[0] or abs(cut["min"].value - ev[0]) < 1e-14


def test_fallback_indefinite_and_size_switch():
    g = np.random.default_rng(2)
    A = g.standard_normal((200, 200))
    A = (A + A.T) / 2
    res = extremes(A, method="certified")
    assert res.route == "dense" and "not numerically positive definite" in res.reason
    ev = sl.eigvalsh(A, driver="evd")
    assert res["min"].value == ev[0]
    auto = extremes(A)  # n < DENSE_BELOW_N: dense without trying
    assert auto.route == "dense" and str(DENSE_BELOW_N) in auto.reason
    assert auto.iterations["factorizations"] == 0
    assert spectral_norm_certified(A).route == "dense"  # n = 200 < NORM_DENSE_BELOW_N
    d = extremes(A, method="dense")
    assert d.route == "dense" and d["max"].lo < d["max"].value < d["max"].hi


def test_n_one_and_tiny():
    r = extremes(np.array([[3.0]]))
    assert r["min"].value == r["max"].value == 3.0 and math.isnan(r["second"].value)
    assert spectral_norm_certified(np.array([[-2.0]])).value == 2.0


def test_memory_stays_in_the_workspace():
    """With the workspace given, the route allocates no n x n array: only the Krylov basis
    (a few hundred vectors) and blocks. tracemalloc sees NumPy's buffers."""
    n = 900
    X = make_data("sphere", D0, n, seed=3)
    M = gram(X, "gelu", 4 * n, seed=3, trial=0)
    K = expected_gram(X, "gelu")
    work = np.empty_like(M)
    extremes(M, method="certified", work=work)  # warm-up (imports, caches)
    tracemalloc.start()
    res = extremes(M, method="certified", work=work)
    peak_e = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    tracemalloc.start()
    nres = spectral_norm_certified(M, K, beta=4 * n, method="certified", work=work)
    peak_n = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert res.route == "certified" and nres.route == "certified"
    assert peak_e < 0.5 * n * n * 8, peak_e
    assert peak_n < 0.5 * n * n * 8, peak_n


def test_bad_inputs():
    M = np.eye(5)
    with pytest.raises(ValueError, match="square"):
        extremes(np.ones((3, 4)))
    with pytest.raises(ValueError, match="square"):
        extremes(np.ones(4))
    with pytest.raises(ValueError, match="empty"):
        extremes(np.ones((0, 0)))
    with pytest.raises(ValueError, match="float64"):
        extremes(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="float64"):
        extremes(np.eye(4, dtype=int))
    bad = np.eye(4)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        extremes(bad)
    up = np.triu(np.ones((6, 6)))
    with pytest.raises(ValueError, match="not symmetric"):
        extremes(up)
    with pytest.raises(ValueError, match="which"):
        extremes(M, ("min", "median"))
    with pytest.raises(ValueError, match="which"):
        extremes(M, ())
    for rtol in (0.0, 1.0, -1e-10, float("nan"), True, "1e-10"):
        with pytest.raises(ValueError, match="rtol"):
            extremes(M, rtol=rtol)
    for key in (np.array([1.5]), np.array([1, 2], dtype=np.int64), -3, True, np.zeros((2, 2), np.uint32)):
        with pytest.raises(ValueError, match="seed_key"):
            extremes(M, seed_key=key)
    with pytest.raises(ValueError, match="method"):
        extremes(M, method="lanczos")
    with pytest.raises(ValueError, match="work"):
        extremes(M, work=np.empty((4, 4)))
    with pytest.raises(ValueError, match="work"):
        extremes(M, work=M)
    with pytest.raises(ValueError, match="work"):
        extremes(M, work=np.empty((5, 10))[:, ::2])
    with pytest.raises(ValueError, match="same shape"):
        spectral_norm_certified(M, np.eye(4))
    with pytest.raises(ValueError, match="beta"):
        spectral_norm_certified(M, M.copy(), beta=float("inf"))
    with pytest.raises(ValueError, match="certify"):
        spectral_norm_certified(M, certify="yes")
    with pytest.raises(ValueError, match="not symmetric"):
        spectral_norm_certified(M, up[:5, :5].copy())


def test_backends_agree(xp):
    """The certified route on NumPy and (where available) CuPy: same brackets within rounding."""
    _, _, M, ev = _m0("gelu", 4.0)
    res = extremes(xp.asarray(M), method="certified")
    assert res.route == "certified", res.reason
    for name, ref in (("min", ev[0]), ("max", ev[-1]), ("second", ev[-2])):
        assert res[name].lo <= ref <= res[name].hi
    Md = xp.asarray(M)
    nres = spectral_norm_certified(Md, Md * 0.5, beta=1.0, method="certified")
    assert nres.route == "certified"
    assert nres.bracket.lo <= 0.5 * ev[-1] <= nres.bracket.hi


def test_constants_are_sane():
    assert ext.MAX_BASIS % ext.BOTTOM_BLOCK == 0 and ext.MAX_BASIS % ext.TOP_BLOCK == 0
    assert 500 <= DENSE_BELOW_N <= 8000


def _bench_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "studies" / "benchmark_extremes.py"
    spec = importlib.util.spec_from_file_location("rmt_benchmark_extremes", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_helpers():
    """The benchmark's memory arithmetic and crossover interpolation (the figures it prints)."""
    mod = _bench_module()
    basis = ext.MAX_BASIS + 8

    def need(n):
        return 24 * n * n + 8 * basis * n + mod.DEFAULT_BLOCK_BYTES

    for mem in (24 * 2**30, 139 * 2**30):
        n = mod.largest_n(mem)
        assert need(n) <= mem < need(n + 1)
    rows = [{"n": n, "threads": 1, "seconds": {"extremes": e, "dense": d}}
            for n, e, d in ((1000, 2.0, 1.0), (2000, 1.0, 1.0 / 0.5), (4000, 1.0, 3.0))]
    c, how = mod.crossover(rows, 1)
    assert how == "interpolated" and 1000 < c < 2000
    assert abs(c - math.exp(math.log(1000) + 0.5 * math.log(2))) < 1e-6  # log-log midpoint: ratio 2 -> 0.5
