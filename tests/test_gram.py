"""Streamed Gram accumulation against dense products, SVDs and the exact expectation."""

import numpy as np
import pytest

from rmt_engine.sampling import rng
from rmt_engine.theory.activations import activation
from rmt_engine.sampling.data import make_data
from rmt_engine.theory.expected import expected_gram
from rmt_engine.montecarlo.gram import accumulate, gram


def dense_F(X, name, d1, w1, seed, trial):
    W = rng.normal_rows(rng.stream_key(seed, "W0", trial), 0, d1, X.shape[0], w1)
    return activation(name).phi(W @ X)


@pytest.mark.parametrize("name", ["gelu", "tanh", "sigmoid"])
def test_streamed_gram_equals_dense_product(name):
    X = make_data("sphere", 6, 30, seed=1)
    F = dense_F(X, name, 257, 1.5, 0, 4)
    M = gram(X, name, 257, w1=1.5, seed=0, trial=4, block_rows=19)
    np.testing.assert_allclose(M, F.T @ F, rtol=1e-12, atol=1e-12 * np.abs(F.T @ F).max())
    assert np.array_equal(M, M.T)


def test_block_size_changes_only_summation_order():
    X = make_data("sphere", 5, 20, seed=2)
    ref = gram(X, "gelu", 300, block_rows=300)
    for b in (1, 7, 64):
        np.testing.assert_allclose(gram(X, "gelu", 300, block_rows=b), ref, rtol=1e-13, atol=1e-12)


def test_sigma_min_via_gram_matches_dense_svd():
    X = make_data("sphere", 8, 40, seed=3)
    F = dense_F(X, "tanh", 120, 1.0, 5, 0)
    s = np.linalg.svd(F, compute_uv=False)
    lam = np.linalg.eigvalsh(gram(X, "tanh", 120, seed=5, trial=0, block_rows=33))
    assert np.sqrt(lam[0]) == pytest.approx(s[-1], rel=1e-9)
    assert np.sqrt(lam[-1]) == pytest.approx(s[0], rel=1e-12)


def test_v0_sums_match_dense_matrices():
    X = make_data("sphere", 4, 15, seed=0)
    kW, kV = rng.stream_key(0, "W0", 2), rng.stream_key(0, "V0", 2)
    s = accumulate(X, "sigmoid", 90, w1=0.7, key_W=kW, d2=3, w2=0.4, key_V=kV, block_rows=16)
    W = rng.normal_rows(kW, 0, 90, 4, 0.7)
    V = rng.normal_rows(kV, 0, 90, 3, 0.4).T  # d2 x d1: column i of V0 is row i of the stream
    F = activation("sigmoid").phi(W @ X)
    np.testing.assert_allclose(s.VF, V @ F, rtol=1e-12)
    np.testing.assert_allclose(s.VVt, V @ V.T, rtol=1e-12)
    assert s.max_row_norm_W0 == pytest.approx(np.linalg.norm(W, axis=1).max(), rel=1e-14)
    assert s.max_col_norm_V0 == pytest.approx(np.linalg.norm(V, axis=0).max(), rel=1e-14)


def test_float32_blocks_are_close_but_not_float64():
    X = make_data("sphere", 6, 25, seed=4)
    M64 = gram(X, "gelu", 200)
    M32 = gram(X, "gelu", 200, dtype="float32")
    np.testing.assert_allclose(M32, M64, rtol=1e-4, atol=1e-4 * np.abs(M64).max())
    assert not np.array_equal(M32, M64)


@pytest.mark.parametrize("name,w1", [("gelu", 1.0), ("tanh", 2.0), ("sigmoid", 0.5)])
def test_monte_carlo_mean_matches_expected_gram(name, w1):
    """mean over trials of M0/d1 -> E[M0]/d1 (Eq. 56), within 4 standard errors entrywise."""
    X = make_data("sphere", 5, 12, seed=9)
    d1, trials = 400, 40
    samples = np.stack([gram(X, name, d1, w1=w1, seed=1, trial=k) / d1 for k in range(trials)])
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / np.sqrt(trials)
    K = expected_gram(X, name, w1=w1)
    z = np.abs(mean - K) / np.maximum(se, 1e-15)
    assert z.max() < 4.0, f"max z-score {z.max():.2f}"


def test_gram_rejects_bad_input():
    X = make_data("sphere", 4, 10, seed=0)
    with pytest.raises(ValueError, match="d1 must be a positive integer"):
        gram(X, "gelu", 0)
    with pytest.raises(ValueError, match="w1 must be a finite number > 0"):
        gram(X, "gelu", 10, w1=-1.0)
    with pytest.raises(ValueError, match="unit"):
        gram(2 * X, "gelu", 10)
    with pytest.raises(ValueError, match="relu"):
        gram(X, "relu", 10)


@pytest.mark.parametrize("name", ["gelu", "softplus"])
def test_lanes_give_the_same_bits_on_one_or_two_threads(name):
    """The lanes' summation order is fixed: the thread count cannot change any number."""
    from threadpoolctl import threadpool_limits

    X = make_data("sphere", 7, 60, seed=5)
    kW, kV = rng.stream_key(3, "W0", 1), rng.stream_key(3, "V0", 1)
    runs = []
    for threads in (1, 2, 3):
        with threadpool_limits(threads, user_api="blas"):
            runs.append(accumulate(X, name, 1001, w1=1.3, key_W=kW, d2=2, w2=0.5, key_V=kV, block_rows=64))
    for other in runs[1:]:
        for field in ("M0", "VF", "VVt"):
            assert np.array_equal(getattr(other, field), getattr(runs[0], field))
        assert other.max_row_norm_W0 == runs[0].max_row_norm_W0
        assert other.max_col_norm_V0 == runs[0].max_col_norm_V0
    assert set(runs[0].stage_seconds) == {"sampling", "WX", "phi", "gram", "V0"}
    assert all(v > 0 for v in runs[0].stage_seconds.values())


def test_blocks_are_dealt_to_lanes_and_summed_in_lane_order():
    """M0 = (sum of the even blocks) + (sum of the odd blocks), each summed in block order."""
    from rmt_engine.montecarlo.gram import LANES

    X = make_data("sphere", 5, 40, seed=6)
    key = rng.stream_key(0, "W0", 0)
    F = dense_F(X, "tanh", 100, 1.0, 0, 0)
    s = accumulate(X, "tanh", 100, key_W=key, block_rows=2 * LANES * 10)  # lane blocks of 20 rows
    lanes = [sum(F[r:r + 20].T @ F[r:r + 20] for r in range(lane * 20, 100, 20 * LANES)) for lane in range(LANES)]
    np.testing.assert_allclose(s.M0, sum(lanes), rtol=1e-13, atol=1e-13 * np.abs(s.M0).max())


def test_one_row_block_is_still_split_over_the_lanes():
    """d1 <= block_rows: the rows are cut into LANES blocks, so both lanes get work."""
    X = make_data("sphere", 4, 10, seed=7)
    key = rng.stream_key(0, "W0", 0)
    s = accumulate(X, "gelu", 9, key_W=key, block_rows=4096)
    F = dense_F(X, "gelu", 9, 1.0, 0, 0)
    np.testing.assert_allclose(s.M0, F[:5].T @ F[:5] + F[5:].T @ F[5:], rtol=1e-14, atol=1e-14)


def test_product_and_activation_in_pieces_match_the_whole_block():
    from rmt_engine.montecarlo.gram import _phi_of_product

    X = make_data("sphere", 9, 400, seed=8)  # 163 rows per 512 KiB piece: ten pieces below
    W = rng.normal_rows(rng.stream_key(1, "W0", 0), 0, 1500, 9)
    seconds = dict(WX=0.0, phi=0.0)
    F = _phi_of_product(activation("gelu"), W, X, seconds)
    ref = activation("gelu").phi(W @ X)
    np.testing.assert_allclose(F, ref, rtol=1e-14, atol=1e-15)
    assert seconds["WX"] > 0 and seconds["phi"] > 0


def test_gil_free_syrk_is_scipy_dsyrk_bit_for_bit():
    from scipy.linalg.blas import dsyrk

    from rmt_engine.linalg.blas import syrk_upper_update

    A = np.random.default_rng(0).standard_normal((301, 123))
    C0 = np.asfortranarray(np.random.default_rng(1).standard_normal((123, 123)))
    C = C0.copy(order="F")
    syrk_upper_update(C, A)
    ref = dsyrk(1.0, A.T, beta=1.0, c=C0, trans=0, lower=0)
    assert np.array_equal(np.triu(C), np.triu(ref))
    assert np.array_equal(np.tril(C, -1), np.tril(C0, -1))  # the lower triangle is not touched
    with pytest.raises(ValueError, match="Fortran-ordered"):
        syrk_upper_update(np.ascontiguousarray(C0), A)
    with pytest.raises(ValueError, match="C-contiguous"):
        syrk_upper_update(C, np.asfortranarray(A))
    with pytest.raises(ValueError, match=r"\(k, 123\)"):
        syrk_upper_update(C, A[:, :100].copy())


def test_syrk_falls_back_to_f2py_when_the_cython_signature_differs(monkeypatch):
    from rmt_engine.linalg import blas as _blas

    A = np.random.default_rng(2).standard_normal((50, 20))
    C_fast = np.zeros((20, 20), order="F")
    _blas.syrk_upper_update(C_fast, A)
    monkeypatch.setattr(_blas, "_dsyrk_pointer", lambda: None)
    C_f2py = np.zeros((20, 20), order="F")
    _blas.syrk_upper_update(C_f2py, A)
    assert np.array_equal(C_fast, C_f2py)




@pytest.mark.parametrize("n", [1, 2, 7, 255, 256, 257, 600])
def test_symmetrize_copies_the_upper_triangle_down(n):
    from rmt_engine.montecarlo.gram import _symmetrize_from_upper

    A = np.asfortranarray(np.random.default_rng(n).standard_normal((n, n)))
    expected = np.triu(A) + np.triu(A, 1).T
    out = _symmetrize_from_upper(A.copy(order="F"))
    assert np.array_equal(out, expected)
