"""Example: regression tests on the bounds of your own study (run with: pytest studies/test_bounds_example.py).

The ``rmt_study`` fixture comes with rmt_engine (a pytest11 plugin): it runs a study TOML once
per pytest session into a temporary directory and returns the cube. Pick the trial count so the
Clopper-Pearson interval can clear ``min_rate``: with all N trials holding, the lower end at
confidence c is ((1 - c) / 2) ** (1 / N) -- 0.876 for N = 40 at c = 0.99, above 0.95 from N = 104.
A ``BoundInconclusive`` failure means exactly that: add trials.
"""

from pathlib import Path

import pytest

from rmt_engine.testing import assert_bound_holds, assert_exact_bounds

STUDY = Path(__file__).with_name("regression.toml")


@pytest.fixture
def ds(rmt_study):
    return rmt_study(STUDY)


@pytest.mark.parametrize("activation", ["gelu", "tanh", "sigmoid"])
def test_eq67_lower_holds(ds, activation):
    # "for these configurations, Eq. 67's lower bound with delta1 = 0.2 holds in at least 80% of trials"
    assert_bound_holds(ds, "eq67_lower_sharp", delta=0.2, min_rate=0.8, where={"activation": activation})


def test_eq67_upper_at_the_wide_layer(ds):
    assert_bound_holds(ds, "eq67_upper_sharp", delta=0.2, min_rate=0.8, where={"d1": 240})


def test_sharp_eq58_holds_exactly(ds):
    assert_exact_bounds(ds)
