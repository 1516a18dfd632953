"""Bound regression tests on the fixed regression study (40 trials per grid point), written as a user would.

With 40 trials and 99% confidence, 40/40 holding gives a Clopper-Pearson lower end of 0.876, so
these tests ask for min_rate 0.8 (0.95 would need ~100 trials to be conclusive). Holding counts
of the golden cube (out of 40; d1 = 60 / 240):

  bound (delta)        gelu     tanh     sigmoid
  eq67_lower (0.2)     40/40    3/40     0/40       (t = auto: 2, 3, 3; also eq67_lower_paper;
                       40/40    40/40    33/40       t = 2 is undefined for tanh, sigmoid: c_2 = 0,
                                                   and read 40/40 "held" before that was recorded)
  eq67_lower_hadamard  31/40    0/40     0/40
                       40/40    23/40    20/40
  eq67_upper (0.2)     40/40    35/40    40/40      (also eq67_upper_paper)
  eq69                 40/40    40/40    40/40
  delta2 (0.2)         34/39    32/40    40/40
  delta1 (0.2)         0/19     0/21     0/16
  delta1 (0.6)         8/40     5/40     2/40
  eq9_margin           0/0      0/0      0/0        (d1 is far below the Eq. 9 width)
"""

from pathlib import Path

import pytest

from rmt_engine.testing import (BoundInconclusive, BoundUndefined, BoundViolated, assert_bound_holds,
                                assert_exact_bounds)

TOML = Path(__file__).resolve().parents[2] / "studies" / "regression.toml"
ACTIVATIONS = ["gelu", "tanh", "sigmoid"]


@pytest.fixture
def ds(rmt_study):
    return rmt_study(TOML)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_eq69_holds(ds, activation):
    assert_bound_holds(ds, "eq69", min_rate=0.8, where={"activation": activation})


def test_eq67_lower_at_the_informative_t(ds):
    """t = auto (gelu 2, tanh/sigmoid 3): holds for gelu; for tanh and sigmoid it fails at d1 = 2n,
    where delta1 ~ 0.6 > 0.2, and holds (tanh) or is borderline (sigmoid, 33/40) at d1 = 8n."""
    for act in ("gelu",):
        assert_bound_holds(ds, "eq67_lower_sharp", delta=0.2, min_rate=0.8, where={"activation": act}, t="auto")
        assert_bound_holds(ds, "eq67_lower", delta=0.2, min_rate=0.8, where={"activation": act}, t="auto")
    assert_bound_holds(ds, "eq67_lower_sharp", delta=0.2, min_rate=0.8, where={"activation": "tanh", "d1": 240}, t="auto")
    for act in ("tanh", "sigmoid"):
        with pytest.raises(BoundViolated):
            assert_bound_holds(ds, "eq67_lower_sharp", delta=0.2, min_rate=0.8, where={"activation": act, "d1": 60},
                               t="auto")
    with pytest.raises(BoundInconclusive, match=r"33/40 trials"):
        assert_bound_holds(ds, "eq67_lower_sharp", delta=0.2, min_rate=0.8, where={"activation": "sigmoid", "d1": 240},
                           t="auto")


def test_eq67_lower_all_orders_is_tighter_and_fails_more(ds):
    """The all-orders bound is larger than the single-t one, so at delta = 0.2 it fails more often:
    holds for gelu at d1 = 240 only; violated for tanh and sigmoid at both widths."""
    assert_bound_holds(ds, "eq67_lower_hadamard", delta=0.2, min_rate=0.8, where={"activation": "gelu", "d1": 240})
    for act in ("tanh", "sigmoid"):
        with pytest.raises(BoundViolated):
            assert_bound_holds(ds, "eq67_lower_hadamard", delta=0.2, min_rate=0.8, where={"activation": act})


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_eq67_lower_at_a_parity_zero_is_undefined_not_held(ds, activation):
    """c_2 = 0 for tanh and sigmoid: the t = 2 bound is 0, and 0 <= sigma_min is no evidence of anything."""
    with pytest.raises(BoundUndefined, match="undefined"):
        assert_bound_holds(ds, "eq67_lower_sharp", delta=0.2, min_rate=0.8, where={"activation": activation}, t=2)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_eq67_upper_and_delta2_hold_at_the_wide_layer(ds, activation):
    where = {"activation": activation, "d1": 240}
    assert_bound_holds(ds, "eq67_upper_sharp", delta=0.2, min_rate=0.8, where=where)
    assert_bound_holds(ds, "eq67_upper", delta=0.2, min_rate=0.8, where=where)
    assert_bound_holds(ds, "delta2", delta=0.2, min_rate=0.8, where=where)
    assert_bound_holds(ds, "delta1", delta=0.6, min_rate=0.8, where=where)


def test_eq67_upper_for_tanh_at_d1_60_needs_more_trials(ds):
    with pytest.raises(BoundInconclusive, match=r"35/40 trials"):
        assert_bound_holds(ds, "eq67_upper_sharp", delta=0.2, min_rate=0.8, where={"activation": "tanh", "d1": 60})


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_lambda_min_does_not_concentrate(ds, activation):
    """lambda_min(M0) stays far below lambda_min(E[M0]) at these widths: empirical delta1 <= 0.2 fails."""
    with pytest.raises(BoundViolated):
        assert_bound_holds(ds, "delta1", delta=0.2, min_rate=0.8, where={"activation": activation})
    with pytest.raises(BoundViolated):
        assert_bound_holds(ds, "margin", min_rate=0.8, where={"activation": activation})


def test_sharp_eq58_exact(ds):
    assert_exact_bounds(ds)
