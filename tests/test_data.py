"""Data: sphere/file/digits generation, unit-norm validation and its error messages."""

import numpy as np
import pytest

from rmt_engine.sampling.data import DATA_KINDS, check_data, make_data, normalize_columns


def _np(a):
    return np.asarray(a.get() if hasattr(a, "get") else a)


def _unit(X):
    np.testing.assert_allclose(np.linalg.norm(X, axis=0), 1.0, rtol=0, atol=1e-14)


def test_kinds():
    assert DATA_KINDS == ("sphere", "file", "digits")


def test_sphere_unit_prefix_reproducible_seeded():
    X = make_data("sphere", 5, 20, seed=3)
    assert X.shape == (5, 20) and X.dtype == np.float64 and X.flags.c_contiguous
    _unit(X)
    np.testing.assert_array_equal(make_data("sphere", 5, 10, seed=3), X[:, :10])  # prefix property
    np.testing.assert_array_equal(make_data("sphere", 5, 20, seed=3), X)  # reproducible
    assert not np.allclose(make_data("sphere", 5, 20, seed=4), X)  # seeds differ
    # roughly uniform on the sphere: mean close to 0, second moment close to I/d0
    Y = make_data("sphere", 3, 4000, seed=0)
    np.testing.assert_allclose(Y.mean(axis=1), 0, atol=0.05)
    np.testing.assert_allclose(Y @ Y.T / 4000, np.eye(3) / 3, atol=0.03)


def test_sphere_d0_one():
    X = make_data("sphere", 1, 6, seed=0)
    np.testing.assert_array_equal(np.abs(X), 1.0)


@pytest.mark.parametrize("ext", ["npy", "npz", "npz_single"])
def test_file_round_trip(tmp_path, ext):
    X = make_data("sphere", 4, 9, seed=1)
    if ext == "npy":
        p = tmp_path / "x.npy"
        np.save(p, X)
    elif ext == "npz":
        p = tmp_path / "x.npz"
        np.savez(p, X=X, other=np.zeros(3))
    else:
        p = tmp_path / "x.npz"
        np.savez(p, data=X)
    np.testing.assert_array_equal(make_data("file", 4, 9, path=p), X)
    np.testing.assert_array_equal(make_data("file", 4, 5, path=str(p)), X[:, :5])  # first n columns


def test_file_normalize(tmp_path):
    A = np.random.default_rng(0).standard_normal((3, 6)) * 7
    p = tmp_path / "raw.npy"
    np.save(p, A)
    with pytest.raises(ValueError, match=r"unit-norm columns.*column \d+ with norm.*normalize=True"):
        make_data("file", 3, 6, path=p)
    X = make_data("file", 3, 6, path=p, normalize=True)
    _unit(X)
    np.testing.assert_allclose(X, A / np.linalg.norm(A, axis=0), rtol=1e-15)
    np.save(p, np.arange(18).reshape(3, 6))  # integers are accepted when normalized
    _unit(make_data("file", 3, 6, path=p, normalize=True))


def test_file_errors(tmp_path):
    X = make_data("sphere", 4, 9, seed=1)
    p = tmp_path / "x.npy"
    np.save(p, X)
    with pytest.raises(ValueError, match=r"shape \(4, 9\); need 5 rows \(d0\)"):
        make_data("file", 5, 9, path=p)
    with pytest.raises(ValueError, match=r"at least 10 columns"):
        make_data("file", 4, 10, path=p)
    with pytest.raises(ValueError, match="needs path"):
        make_data("file", 4, 9)
    with pytest.raises(FileNotFoundError):
        make_data("file", 4, 9, path=tmp_path / "missing.npy")
    q = tmp_path / "two.npz"
    np.savez(q, a=X, b=X)
    with pytest.raises(ValueError, match=r"key 'X' or a single array"):
        make_data("file", 4, 9, path=q)
    r = tmp_path / "x.txt"
    r.write_text("1 2 3")
    with pytest.raises(ValueError, match=r"\.npy or \.npz"):
        make_data("file", 4, 9, path=r)
    Z = X.copy()
    Z[:, 2] = 0
    np.save(p, Z)
    with pytest.raises(ValueError, match=r"1 zero column\(s\) \(the first is column 2\)"):
        make_data("file", 4, 9, path=p, normalize=True)
    np.save(p, np.ones((4, 9, 1)))
    with pytest.raises(ValueError, match="2-D"):
        make_data("file", 4, 9, path=p)


def test_digits():
    pytest.importorskip("sklearn", reason="scikit-learn (the 'data' extra) is not installed")
    X = make_data("digits", 64, 50, seed=0)
    assert X.shape == (64, 50) and X.dtype == np.float64
    _unit(X)
    np.testing.assert_array_equal(make_data("digits", 64, 20, seed=0), X[:, :20])  # prefix
    assert not np.allclose(make_data("digits", 64, 50, seed=1), X)
    assert (X < 0).any(axis=0).all()  # centered: no column confined to the positive orthant
    with pytest.raises(ValueError, match=r"d0 = 64.*got d0=32"):
        make_data("digits", 32, 10)
    with pytest.raises(ValueError, match="1797 images"):
        make_data("digits", 64, 1798)


def test_digits_without_sklearn(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("no sklearn")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install rmt-engine\[data\]"):
        make_data("digits", 64, 10)


@pytest.mark.parametrize(
    "args,match",
    [
        (("cube", 3, 4), r"unknown data kind 'cube'; expected one of \('sphere', 'file', 'digits'\)"),
        (("sphere", 0, 4), "d0 must be a positive integer"),
        (("sphere", 3, 0), "n must be a positive integer"),
        (("sphere", 3.0, 4), "d0 must be a positive integer"),
        (("sphere", 3, True), "n must be a positive integer"),
        (("sphere", 3, 4, -1), "seed must be a non-negative integer"),
    ],
)
def test_make_data_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        make_data(*args)


def test_check_data_accepts_and_returns(xp):
    X = xp.asarray(make_data("sphere", 3, 5))
    assert check_data(X) is X


def test_check_data_errors(xp):
    X = make_data("sphere", 3, 5)
    with pytest.raises(ValueError, match=r"2-D.*ndim=1"):
        check_data(xp.asarray(X[:, 0]))
    with pytest.raises(ValueError, match="real floating dtype"):
        check_data(xp.asarray(np.ones((3, 5), dtype=int)))
    Y = X.copy()
    Y[1, 3] = np.nan
    Y[2, 4] = np.nan
    Y[0, 4] = np.inf
    with pytest.raises(ValueError, match=r"3 non-finite entries \(2 NaN, 1 inf\); the first \(scanning column by column\) is X\[1, 3\] = nan \(column 3\)"):
        check_data(xp.asarray(Y))
    Y = X.copy()
    Y[:, 2] *= 1.5
    Y[:, 4] *= 1 + 1e-9
    with pytest.raises(ValueError, match=r"2 of 5 columns .* worst is column 2 with norm 1\.5.*normalize_columns\(X\)"):
        check_data(xp.asarray(Y))
    check_data(xp.asarray(Y), atol=0.6)
    Y[:, 1] = 0
    with pytest.raises(ValueError, match=r"zero column.*column 1"):
        check_data(xp.asarray(Y), name="data")
    with pytest.raises(ValueError, match=r"data has 1 zero column"):
        check_data(xp.asarray(Y), name="data")


def test_normalize_columns(xp):
    A = np.random.default_rng(2).standard_normal((4, 6))
    A[:, 0] *= 1e-200  # would underflow to a zero norm if squared directly
    A[:, 1] *= 1e200  # would overflow
    Xn = _np(normalize_columns(xp.asarray(A)))
    _unit(Xn)
    np.testing.assert_allclose(Xn[:, 2:], A[:, 2:] / np.linalg.norm(A[:, 2:], axis=0), rtol=1e-15)
    A[:, 3] = 0
    with pytest.raises(ValueError, match=r"zero column.*column 3"):
        normalize_columns(xp.asarray(A))
    A[0, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        normalize_columns(xp.asarray(A))
