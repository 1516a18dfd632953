"""The CUDA kernels on a real device against the NumPy references (skipped without CuPy + GPU).

Tolerances: Philox words, Khatri-Rao products and G*G bit for bit; normals within 8 ulp (CUDA's
log is within 1 ulp, sin/cos within 2, of the exact value; NumPy's within ~1); activations within
16 eps of the value's natural scale (CUDA's erfc is within 5 ulp; see _act_scale for the cases where
that scale is not |value|); G**t (t >= 3) within 4 ulp (CUDA's pow vs libm's).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from rmt_engine.sampling import rng
from rmt_engine.backend.xp import gpu_available

pytestmark = pytest.mark.gpu
cp = pytest.importorskip("cupy", reason="CuPy is not installed")
if not gpu_available():
    pytest.skip("CuPy is installed but no CUDA device is usable", allow_module_level=True)

from rmt_engine.backend import cuda as _cuda, kernels as gpu  # noqa: E402
from _reference import PHILOX_KAT, ulp_distance  # noqa: E402

EPS = np.finfo(np.float64).eps


def assert_normals_close(got, ref, scale=1.0, ulps=8):
    got = cp.asnumpy(got)
    assert got.shape == ref.shape and got.dtype == np.float64
    if got.size == 0:
        return
    u = ulp_distance(got, ref)
    ok = (u <= ulps) | (np.abs(got - ref) <= 1e-15 * abs(scale))
    k = int(np.argmax(u))
    assert ok.all(), f"max ulp {u.max()} at flat index {k}: {got.ravel()[k]!r} vs {ref.ravel()[k]!r}"


# ------------------------------------------------------------------------------------------------
# sampling


@pytest.mark.parametrize("ctr,key,expected", PHILOX_KAT)
def test_philox_known_answers(ctr, key, expected):
    out = gpu.philox_words_gpu(np.array(ctr, dtype=np.uint32), np.array(key, dtype=np.uint32))
    assert tuple(int(w) for w in cp.asnumpy(out)) == expected


def test_philox_words_bitwise():
    ctr = np.random.default_rng(0).integers(0, 2**32, size=(100_000, 4), dtype=np.uint32)
    key = rng.stream_key(7, "W0", 3)
    got = cp.asnumpy(gpu.philox_words_gpu(cp.asarray(ctr), key))
    assert np.array_equal(got, rng.philox4x32(ctr, key))


def test_box_muller():
    words = np.random.default_rng(1).integers(0, 2**32, size=(100_000, 4), dtype=np.uint32)
    words[:4] = [[0, 0, 0, 0], [0xFFFFFFFF, 0xFFFFFFFF, 0, 0], [1, 2, 0xFFFFFFFF, 0xFFFFFFFF], [1, 2, 0x40000000, 0]]
    got = gpu.box_muller_gpu(words)
    assert float(got[1, 0]) == 0.0 and float(got[1, 1]) == 0.0
    assert_normals_close(got, rng.box_muller(words))


@pytest.mark.parametrize("row_start,row_stop,ncols,scale", [
    (0, 1000, 101, 1.0), (2**32 - 3, 2**32 + 3, 7, 0.37), (123456789, 123457789, 64, 1 / np.sqrt(50)),
    (5, 5, 3, 1.0), (0, 3, 1, 2.0),
])
def test_normal_rows_gpu_matches_reference(row_start, row_stop, ncols, scale):
    key = rng.stream_key(11, "W0", 5)
    got = gpu.normal_rows_gpu(key, row_start, row_stop, ncols, scale)
    assert isinstance(got, cp.ndarray) and got.flags.c_contiguous
    assert_normals_close(got, rng.normal_rows(key, row_start, row_stop, ncols, scale), scale)


def test_normal_rows_gpu_blocks_are_bitwise_the_whole():
    key = rng.stream_key(3, "V0", 1)
    whole = gpu.normal_rows_gpu(key, 0, 2003, 33, 0.5)
    parts = cp.vstack([gpu.normal_rows_gpu(key, a, b, 33, 0.5) for a, b in rng.row_blocks(2003, 256)])
    assert bool(cp.all(whole == parts))
    assert bool(cp.all(gpu.normal_rows_gpu(key, 0, 2003, 34, 0.5)[:, :33] == whole))


def test_normal_rows_gpu_large_block_statistics():
    z = gpu.normal_rows_gpu(rng.stream_key(2024, "W0", 0), 0, 4000, 2500)  # 1e7 draws
    m = z.size
    assert abs(float(z.mean())) < 5 / np.sqrt(m)
    assert abs(float(z.var()) - 1) < 5 * np.sqrt(2 / m)


def test_normal_rows_gpu_errors():
    key = rng.stream_key(0, "W0", 0)
    with pytest.raises(ValueError, match="row_start <= row_stop"):
        gpu.normal_rows_gpu(key, 5, 2, 3)
    with pytest.raises(ValueError, match="ncols must be >= 1"):
        gpu.normal_rows_gpu(key, 0, 2, 0)
    with pytest.raises(ValueError, match="2 uint32 words"):
        gpu.normal_rows_gpu(np.zeros(3, np.uint32), 0, 2, 2)


def test_modules_are_memoized_per_device():
    assert _cuda.get_module("sample.cu") is _cuda.get_module("sample.cu")


# ------------------------------------------------------------------------------------------------
# activations


def _grid() -> np.ndarray:
    mag = np.geomspace(1e-300, 1e2, 1500)
    return np.concatenate([np.linspace(-40, 40, 80001), np.linspace(-4, 4, 80001), np.linspace(-0.76, -0.74, 401),
                           mag, -mag, [0.0, -0.0, 708.0, -708.0, 745.0, -745.0, 800.0, -800.0]])


def _act_scale(name, deriv, x, ref):
    """As in tests/test_kernels.py: cancellation in gelu' and scipy's x^2-ulp ndtr left tail."""
    from scipy import special  # noqa: PLC0415

    scale = np.abs(ref)
    if name == "gelu" and deriv == 1:
        scale = np.abs(special.ndtr(x)) + np.abs(x) * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    if name == "gelu" and deriv in (0, 1):
        scale = scale * np.where(x < 0, np.maximum(4.0, x * x), 1.0)
    return scale


@pytest.mark.parametrize("name", sorted(gpu.ACTIVATION_IDS))
@pytest.mark.parametrize("deriv", [0, 1, 2])
def test_activation_kernels_match_reference(name, deriv):
    acts = pytest.importorskip("rmt_engine.theory.activations")
    x = _grid()
    with np.errstate(all="ignore"):
        ref = np.asarray((acts.activation(name).phi, acts.activation(name).dphi, acts.activation(name).ddphi)[deriv](x))
    got = cp.asnumpy(gpu.apply_activation_gpu(name, cp.asarray(x), deriv))
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    fin = ~np.isnan(ref)
    err = np.abs(got[fin] - ref[fin])
    tol = 16 * EPS * _act_scale(name, deriv, x[fin], ref[fin]) + 1e-300
    assert not (err > tol).any(), f"{name}^({deriv}): worst x = {x[fin][np.argmax(err / tol)]!r}"


def test_activation_in_place_and_fused():
    x = cp.asarray(np.random.default_rng(0).standard_normal((300, 257)))
    phi, d1, d2 = gpu.activation_all_gpu("gelu", x)
    for k, ref in enumerate((phi, d1, d2)):
        assert bool(cp.all(gpu.apply_activation_gpu("gelu", x, k) == ref))
    y = x.copy()
    assert gpu.apply_activation_gpu("tanh", y, out=y) is y
    assert bool(cp.all(y == gpu.apply_activation_gpu("tanh", x)))
    assert bool(cp.all(x == cp.asarray(cp.asnumpy(x))))  # out=None left x alone
    xt = x.T  # not contiguous: converted, result written back into out
    out = cp.empty_like(xt)
    gpu.apply_activation_gpu("erf", xt, out=out)
    assert bool(cp.all(out == gpu.apply_activation_gpu("erf", cp.ascontiguousarray(xt))))
    f32 = gpu.apply_activation_gpu("sigmoid", x.astype(cp.float32))
    assert f32.dtype == cp.float64


# ------------------------------------------------------------------------------------------------
# Khatri-Rao and Hadamard powers


@pytest.mark.parametrize("t", [0, 1, 2, 3])
def test_khatri_rao_gpu_bitwise_kron_chain(t):
    X = np.random.default_rng(t).standard_normal((5, 37))
    got = cp.asnumpy(gpu.khatri_rao_gpu(cp.asarray(X), t))
    ref = np.stack([functools.reduce(np.kron, [X[:, a]] * t, np.ones(1)) for a in range(X.shape[1])], axis=1)
    assert got.shape == (5**t, 37)
    assert np.array_equal(got, ref)
    kr = pytest.importorskip("rmt_engine.theory.khatri_rao")
    assert np.array_equal(got, kr.khatri_rao(X, t))


def test_khatri_rao_gpu_gram_is_hadamard_power_and_refuses_huge():
    X = np.random.default_rng(0).standard_normal((6, 20))
    K = gpu.khatri_rao_gpu(cp.asarray(X), 3)
    G = cp.asarray(X.T @ X)
    assert cp.allclose(K.T @ K, gpu.hadamard_power_gpu(G, 3), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="max_bytes"):
        gpu.khatri_rao_gpu(cp.asarray(X), 12)


@pytest.mark.parametrize("t", [0, 1, 2, 3, 5])
def test_hadamard_power_gpu(t):
    G = np.random.default_rng(t).uniform(-1, 1, size=(300, 300))
    got = cp.asnumpy(gpu.hadamard_power_gpu(cp.asarray(G), t))
    ref = G**t
    if t <= 2:
        assert np.array_equal(got, ref)
    else:
        assert (ulp_distance(got, ref) <= 4).all()
    Gd = cp.asarray(G)
    assert gpu.hadamard_power_gpu(Gd, t, out=Gd) is Gd
    assert np.array_equal(cp.asnumpy(Gd), got)
