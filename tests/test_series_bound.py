"""eq58_lower_series: a valid lower bound on lambda_min(E[M0]) that dominates the all-orders Weyl sum."""

from __future__ import annotations

import numpy as np
import pytest

import rmt_engine as rmt
from rmt_engine.theory.expected import expected_gram
from rmt_engine.theory.hadamard import hadamard_lower_bound, series_lower_bound


@pytest.mark.parametrize("act", ["gelu", "tanh", "sigmoid", "softplus", "erf"])
@pytest.mark.parametrize("n,d0,w1", [(40, 8, 1.0), (100, 16, 1.0), (60, 6, 2.0), (30, 12, 0.5)])
def test_series_bound_holds_and_dominates_the_weyl_sum(act, n, d0, w1):
    X = rmt.make_data("sphere", d0, n, 4)
    d1 = 1000
    lam_E = d1 * float(np.linalg.eigvalsh(expected_gram(X, act, w1=w1))[0])
    series = series_lower_bound(X, act, w1, d1)
    weyl, _ = hadamard_lower_bound(X, act, w1, d1)
    assert series <= lam_E * (1 + 1e-12) + 1e-12  # a lower bound (independent: the exact E[M0]'s eigenvalue)
    assert series >= weyl * (1 - 1e-12)  # at least the Weyl sum over single orders
    assert series >= 0


def test_series_bound_is_nearly_tight_for_smooth_activations():
    X = rmt.make_data("sphere", 16, 100, 0)
    lam_E = 1000 * float(np.linalg.eigvalsh(expected_gram(X, "gelu"))[0])
    series = series_lower_bound(X, "gelu", 1.0, 1000)
    weyl, _ = hadamard_lower_bound(X, "gelu", 1.0, 1000)
    assert series >= 0.999 * lam_E and weyl < 0.6 * lam_E  # the Weyl sum loses 47% here, the series 0.1%


def test_series_bound_is_zero_for_duplicate_columns():
    X = rmt.make_data("sphere", 8, 20, 1)
    X[:, 1] = X[:, 0]
    assert series_lower_bound(X, "gelu", 1.0, 100) == 0.0
