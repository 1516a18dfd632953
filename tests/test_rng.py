"""Philox4x32-10 known answers, block invariance and the distribution of the Gaussian stream."""

import numpy as np
import pytest
from scipy import stats

from rmt_engine.sampling import rng
from _reference import PHILOX_KAT


@pytest.mark.parametrize("ctr,key,expected", PHILOX_KAT)
def test_philox_known_answers(ctr, key, expected):
    out = rng.philox4x32(np.array(ctr, dtype=np.uint32), np.array(key, dtype=np.uint32))
    assert tuple(int(x) for x in out) == expected


def test_philox_vectorized_equals_scalar_calls():
    key = rng.stream_key(7, "W0", 3)
    ctr = np.random.default_rng(0).integers(0, 2**32, size=(50, 4), dtype=np.uint32)
    batch = rng.philox4x32(ctr, key)
    for i in range(50):
        assert np.array_equal(batch[i], rng.philox4x32(ctr[i], key))


@pytest.mark.parametrize("block", [1, 3, 7, 64, 1000])
def test_row_blocks_are_bitwise_identical_to_whole_matrix(block):
    key = rng.stream_key(11, "W0", 5)
    whole = rng.normal_rows(key, 0, 203, 17, scale=0.5)
    parts = np.vstack([rng.normal_rows(key, a, b, 17, scale=0.5) for a, b in rng.row_blocks(203, block)])
    assert np.array_equal(whole, parts)


def test_any_element_depends_only_on_its_position():
    key = rng.stream_key(3, "V0", 0)
    full = rng.normal_rows(key, 0, 40, 9)
    assert np.array_equal(rng.normal_rows(key, 17, 18, 9)[0], full[17])
    # odd column counts truncate the last Box-Muller pair; wider matrices extend narrower ones
    assert np.array_equal(rng.normal_rows(key, 0, 40, 10)[:, :9], full)


def test_box_muller_matches_formula():
    words = np.array([[1, 2, 3, 4], [0xFFFFFFFF, 0xFFFFFFFF, 0, 0]], dtype=np.uint32)
    z = rng.box_muller(words)
    hi = (1 << 32 | 2) >> 11
    lo = (3 << 32 | 4) >> 11
    u1, u2 = (hi + 1) * 2.0**-53, lo * 2.0**-53
    r = np.sqrt(-2 * np.log(u1))
    assert z[0, 0] == r * np.cos(2 * np.pi * u2) and z[0, 1] == r * np.sin(2 * np.pi * u2)
    assert z[1, 0] == 0.0 and z[1, 1] == 0.0  # u1 = 1 exactly: log(1) = 0, no infinities


def test_streams_trials_and_seeds_differ():
    a = rng.normal_rows(rng.stream_key(0, "W0", 0), 0, 4, 4)
    for other in (rng.stream_key(0, "W0", 1), rng.stream_key(0, "V0", 0), rng.stream_key(1, "W0", 0),
                  rng.stream_key(0, "data")):
        assert not np.array_equal(a, rng.normal_rows(other, 0, 4, 4))


def test_key_is_seedsequence_spawn():
    expected = np.random.SeedSequence(5, spawn_key=(0, 9)).generate_state(2, dtype=np.uint32)
    assert np.array_equal(rng.stream_key(5, "W0", 9), expected)
    assert np.array_equal(rng.stream_key(5, "W0", 9),
                          np.random.SeedSequence(5).spawn(1)[0].spawn(10)[9].generate_state(2, np.uint32))


def test_gaussian_moments_and_normality():
    z = rng.normal_rows(rng.stream_key(2024, "W0", 0), 0, 400, 250, scale=1.0).ravel()  # 1e5 draws
    m = z.size
    assert abs(z.mean()) < 5 / np.sqrt(m)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / m)
    assert abs(stats.skew(z)) < 5 * np.sqrt(6 / m)
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24 / m)
    assert stats.kstest(z, "norm").pvalue > 1e-4
    # the two halves of a Box-Muller pair are uncorrelated
    pairs = rng.normal_rows(rng.stream_key(1, "W0", 0), 0, 50000, 2)
    assert abs(np.corrcoef(pairs.T)[0, 1]) < 5 / np.sqrt(50000)


def test_scale_multiplies_exactly():
    key = rng.stream_key(0, "W0", 0)
    assert np.array_equal(rng.normal_rows(key, 0, 5, 6, scale=0.25), 0.25 * rng.normal_rows(key, 0, 5, 6))


@pytest.mark.parametrize("args,match", [
    (dict(seed=0, stream="W1", trial=0), "unknown random stream 'W1'"),
    (dict(seed=-1, stream="W0", trial=0), "seed must be a non-negative integer"),
    (dict(seed=0, stream="W0", trial=None), "needs a non-negative trial index"),
    (dict(seed=0, stream="data", trial=2), "fixed per grid point"),
])
def test_stream_key_errors(args, match):
    with pytest.raises(ValueError, match=match):
        rng.stream_key(**args)


def test_normal_rows_errors():
    key = rng.stream_key(0, "W0", 0)
    with pytest.raises(ValueError, match="row_start <= row_stop"):
        rng.normal_rows(key, 5, 2, 3)
    with pytest.raises(ValueError, match="ncols must be >= 1"):
        rng.normal_rows(key, 0, 2, 0)
    with pytest.raises(ValueError, match="block_rows must be >= 1"):
        list(rng.row_blocks(10, 0))
