"""run_trial_path: one pass over W0 gives the record of every width of a path, each equal to an
independent run_trial at that width up to rounding (the same rows summed in another order)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

import rmt_engine as rmt
from rmt_engine.montecarlo.gram import accumulate, accumulate_path, path_blocks
from rmt_engine.montecarlo.trial import point_data
from rmt_engine.sampling import rng

#: Fields whose relative rounding error is amplified by cond(M0) (GeLU's c_0 spike): they may differ
#: by the error bound both computations carry (``sigma_min_F_relerr``; margin ~ mu^6: 6x, lambda: 2x);
#: everything else at 1e-10.
ILL_CONDITIONED = {"lambda_min_M0", "sigma_min_F", "mu", "rho", "margin", "sigma_min_F_relerr", "delta1",
                   "asym_ratio_lambda_min", "rate", "eta_max"}


def _compare(path_rec, ref):
    assert set(path_rec) == set(ref)
    for k, b in ref.items():
        a = path_rec[k]
        if math.isnan(b) or math.isinf(b):
            assert a == b or (math.isnan(a) and math.isnan(b)), k
            continue
        tol = max(1e-10, 12 * (ref["sigma_min_F_relerr"] + path_rec["sigma_min_F_relerr"])) \
            if k in ILL_CONDITIONED else 1e-10
        assert abs(a - b) <= tol * abs(b) + 1e-300, (k, a, b)


@pytest.mark.parametrize("act,d2", [("gelu", 1), ("tanh", 3), ("sigmoid", 2)])
def test_path_records_equal_independent_trials(act, d2):
    spec = rmt.TrialSpec(activation=act, n=40, d0=8, d1=1, d2=d2, t=(2, "auto"))
    d1s = [40, 64, 150, 500, 1200]
    w2s = [2.0 / (spec.w1 * math.sqrt(spec.d0 * d)) for d in d1s]  # the Eq. 19 rule: w2 depends on d1
    recs = rmt.run_trial_path(spec, 3, d1s, w2s=w2s, cache={})
    assert len(recs) == len(d1s)
    for rec, d, w in zip(recs, d1s, w2s):
        _compare(rec, rmt.run_trial(replace(spec, d1=d, w2=w), 3, cache={}))


def test_path_below_n_and_fixed_w2():
    spec = rmt.TrialSpec(activation="gelu", n=50, d0=6, d1=1)
    d1s = [20, 49, 50, 300]
    recs = rmt.run_trial_path(spec, 0, d1s, cache={})
    assert recs[0]["sigma_min_F"] == 0.0 and recs[1]["sigma_min_F"] == 0.0 and recs[2]["sigma_min_F"] > 0
    for rec, d in zip(recs, d1s):
        _compare(rec, rmt.run_trial(replace(spec, d1=d), 0, cache={}))


def test_checkpoint_sums_are_prefix_sums_of_the_rows():
    spec = rmt.TrialSpec(activation="tanh", n=12, d0=4, d1=1, d2=2)
    X = point_data(replace(spec, d1=100), {}).X
    kW, kV = rng.stream_key(0, "W0", 1), rng.stream_key(0, "V0", 1)
    for d, sums in accumulate_path(X, "tanh", [7, 33, 100], key_W=kW, d2=2, key_V=kV, block_rows=16):
        ref = accumulate(X, "tanh", d, key_W=kW, d2=2, w2=1.0, key_V=kV, block_rows=16)
        np.testing.assert_allclose(sums.M0, ref.M0, rtol=1e-13, atol=1e-13 * float(np.abs(ref.M0).max()))
        np.testing.assert_allclose(sums.VF, ref.VF, rtol=1e-12, atol=1e-13)
        assert sums.max_row_norm_W0 == ref.max_row_norm_W0  # a max over the same rows: exact
        assert sums.max_col_norm_V0 == ref.max_col_norm_V0


def test_path_blocks_cut_at_every_checkpoint():
    blocks = path_blocks([10, 25, 64], 16, True)
    assert blocks[0][0] == 0 and blocks[-1][1] == 64
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert {10, 25, 64} <= {b[1] for b in blocks}


def test_bad_paths_are_clear_errors():
    spec = rmt.TrialSpec(activation="gelu", n=10, d0=4, d1=1)
    with pytest.raises(ValueError, match="strictly increasing"):
        rmt.run_trial_path(spec, 0, [100, 50])
    with pytest.raises(ValueError, match="strictly increasing"):
        rmt.run_trial_path(spec, 0, [])
    with pytest.raises(ValueError, match="w2s has 1 values for 2 widths"):
        rmt.run_trial_path(spec, 0, [20, 40], w2s=[1.0])
    with pytest.raises(ValueError, match="trial"):
        rmt.run_trial_path(spec, -1, [20])


def test_path_blocks_below_a_checkpoint_do_not_depend_on_the_widths_above_it():
    full = path_blocks([16, 40, 64, 5000], 4096, True)
    for k in range(1, 4):
        short = path_blocks([16, 40, 64, 5000][:k], 4096, True)
        assert full[:len(short)] == short
    assert path_blocks([100, 300], 64, True)[:4] == [(0, 32), (32, 64), (64, 96), (96, 100)]


def test_a_path_cut_short_gives_the_same_bits_at_its_checkpoints():
    spec = rmt.TrialSpec(activation="tanh", n=30, d0=5, d1=1, t=(2,))
    long = rmt.run_trial_path(spec, 2, [30, 70, 200, 900], cache={})
    short = rmt.run_trial_path(spec, 2, [30, 70], cache={})
    for a, b in zip(short, long):
        assert {k: np.float64(v).tobytes() for k, v in a.items()} == {k: np.float64(v).tobytes() for k, v in b.items()}
    # the first segment is the Gram pass's own blocks: bitwise equal to run_trial there
    first = rmt.run_trial(replace(spec, d1=30), 2, cache={})
    assert long[0]["lambda_min_M0"] == first["lambda_min_M0"] and long[0]["lambda_max_M0"] == first["lambda_max_M0"]
