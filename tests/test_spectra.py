"""spectra: dense/Lanczos eigenvalue routes against numpy.linalg references."""

import math

import numpy as np
import pytest

from rmt_engine.linalg.spectra import (
    LANCZOS_MIN_N,
    eigvalsh,
    extreme_eigenvalues,
    extreme_singular_values,
    spectral_norm_sym,
)


def _sym(rng, n):
    A = rng.standard_normal((n, n))
    return (A + A.T) / 2


def test_eigvalsh_matches_numpy_and_keeps_backend(xp):
    rng = np.random.default_rng(1)
    M = _sym(rng, 30)
    ev = eigvalsh(xp.asarray(M))
    assert type(ev) is type(xp.asarray(M))
    ev = np.asarray(ev.get() if hasattr(ev, "get") else ev)
    np.testing.assert_allclose(ev, np.linalg.eigvalsh(M), rtol=0, atol=1e-12)
    assert np.all(np.diff(ev) >= 0)


@pytest.mark.parametrize("n", [1, 2, 7, 60])
def test_extreme_eigenvalues(xp, n):
    rng = np.random.default_rng(n)
    M = _sym(rng, n)
    ref = np.linalg.eigvalsh(M)
    out = extreme_eigenvalues(xp.asarray(M), second=True)
    assert set(out) == {"lambda_min", "lambda_max", "lambda_2"}
    assert all(isinstance(v, float) for v in out.values())
    assert out["lambda_min"] == pytest.approx(ref[0], abs=1e-12)
    assert out["lambda_max"] == pytest.approx(ref[-1], abs=1e-12)
    if n >= 2:
        assert out["lambda_2"] == pytest.approx(ref[-2], abs=1e-12)
    else:
        assert math.isnan(out["lambda_2"])
    assert set(extreme_eigenvalues(xp.asarray(M))) == {"lambda_min", "lambda_max"}


@pytest.mark.parametrize("method", ["dense", "lanczos", "auto"])
@pytest.mark.parametrize("kind", ["psd", "indefinite", "negative_dominant"])
def test_spectral_norm_sym(method, kind):
    rng = np.random.default_rng(3)
    n = LANCZOS_MIN_N  # "auto" takes the Lanczos route here
    if kind == "psd":
        A = rng.standard_normal((n, n // 2))
        M = A @ A.T
    else:
        M = _sym(rng, n)
        if kind == "negative_dominant":
            M -= 5 * np.outer(np.ones(n), np.ones(n)) / n * np.sqrt(n)  # large negative eigenvalue
    ref = np.abs(np.linalg.eigvalsh(M)).max()
    got = spectral_norm_sym(M, method=method)
    assert isinstance(got, float)
    assert got == pytest.approx(ref, rel=1e-10)


def test_spectral_norm_sym_small_and_backend(xp):
    M = np.diag([1.0, -3.0, 2.0])
    assert spectral_norm_sym(xp.asarray(M)) == pytest.approx(3.0, rel=1e-14)


def test_spectral_norm_bad_input():
    with pytest.raises(ValueError, match="method"):
        spectral_norm_sym(np.eye(3), method="power")
    with pytest.raises(ValueError, match="square"):
        spectral_norm_sym(np.ones((2, 3)))
    M = np.eye(LANCZOS_MIN_N)
    M[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        spectral_norm_sym(M)


@pytest.mark.parametrize("shape", [(40, 15), (15, 15), (9, 25)])
def test_extreme_singular_values_vs_svd(xp, shape):
    d, n = shape
    rng = np.random.default_rng(d * 100 + n)
    A = rng.standard_normal(shape)
    s = np.linalg.svd(A, compute_uv=False)
    smin_ref = 0.0 if d < n else s[n - 1]
    smin, smax = extreme_singular_values(xp.asarray(A))
    assert isinstance(smin, float) and isinstance(smax, float)
    assert smax == pytest.approx(s[0], rel=1e-12)
    if d < n:
        assert smin == 0.0  # exactly: the n-th singular value does not exist
    else:
        assert smin == pytest.approx(smin_ref, rel=1e-10)
    gmin, gmax = extreme_singular_values(gram=xp.asarray(A.T @ A), nrows=d)
    assert gmax == pytest.approx(s[0], rel=1e-12)
    if d < n:
        assert gmin == 0.0
    else:
        assert gmin == pytest.approx(smin_ref, rel=1e-10)


def test_gram_route_clips_negative_rounding():
    # rank-1 Gram: rounding can make lambda_min slightly negative; without nrows it clips to 0
    x = np.random.default_rng(0).standard_normal(20)
    G = np.outer(x, x)
    assert np.linalg.eigvalsh(G)[0] < 1e-12
    smin, smax = extreme_singular_values(gram=G)
    assert 0.0 <= smin < 1e-6
    assert smax == pytest.approx(np.linalg.norm(x), rel=1e-12)
    assert extreme_singular_values(gram=-np.eye(3)) == (0.0, 0.0)


def test_extreme_singular_values_bad_input():
    A = np.ones((3, 2))
    with pytest.raises(ValueError, match="exactly one"):
        extreme_singular_values()
    with pytest.raises(ValueError, match="exactly one"):
        extreme_singular_values(A, gram=A.T @ A)
    with pytest.raises(ValueError, match="nrows is only"):
        extreme_singular_values(A, nrows=3)
    with pytest.raises(ValueError, match="nrows"):
        extreme_singular_values(gram=np.eye(2), nrows=0)
    with pytest.raises(ValueError, match="square"):
        extreme_singular_values(gram=A)
    with pytest.raises(ValueError, match="2-D"):
        extreme_singular_values(np.ones(3))


def test_lanczos_falls_back_to_dense(monkeypatch):
    import scipy.sparse.linalg as ssl

    n = LANCZOS_MIN_N
    assert spectral_norm_sym(np.zeros((n, n))) == 0.0  # ARPACK refuses a zero operator

    def no_convergence(*args, **kwargs):
        raise ssl.ArpackNoConvergence("no convergence", np.empty(0), np.empty((n, 0)))

    monkeypatch.setattr(ssl, "eigsh", no_convergence)
    M = np.diag(np.linspace(-4.0, 2.0, n))
    assert spectral_norm_sym(M, method="lanczos") == pytest.approx(4.0, rel=1e-14)
