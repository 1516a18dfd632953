"""studies/ladder.py: the tiny configuration runs every code path and writes the documented JSON; the
deterministic thresholds are the crossings of the deterministic curves they come from."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("rmt_ladder", ROOT / "studies" / "ladder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_ladder_writes_the_documented_json(tmp_path):
    lad = _load()
    lad.main(["--tiny", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "ladder.json").read_text())
    keys = {"activation", "n", "d0", "t", "event", "source", "d1_star", "lo", "hi"}
    assert data["thresholds"] and all(keys <= set(r) for r in data["thresholds"])
    assert {r["source"] for r in data["thresholds"]} == {"de", "mc"}
    assert {r["event"] for r in data["thresholds"] if r["source"] == "mc"} == {"margin", "ck", "ntk", "gd", "gd_eq13"}
    assert {r["t"] for r in data["thresholds"]} == {2, 3}
    for f in data["fits"]:
        assert {"activation", "event", "source", "t", "window", "b", "lo", "hi", "n_min", "n_max"} <= set(f)
    assert (tmp_path / "ladder.png").stat().st_size > 10_000


def test_deterministic_thresholds_are_crossings_of_their_curves():
    lad = _load()
    th = lad.de_thresholds("gelu", 36, 12, 1)
    pt = lad.de_point("gelu", 36, 12, 1000)
    m_star, c_star = th["margin"][0], th["ck"][0]
    lo_m, hi_m = lad.de_curves("gelu", pt, 12, m_star / 1.01)[0], lad.de_curves("gelu", pt, 12, m_star * 1.01)[0]
    assert lo_m < 1.0 < hi_m
    lo_c, hi_c = lad.de_curves("gelu", pt, 12, c_star / 1.01)[1], lad.de_curves("gelu", pt, 12, c_star * 1.01)[1]
    assert lo_c > 0.5 > hi_c
    assert math.isfinite(m_star) and m_star > c_star  # the sufficient margin needs far more width than CK


def test_gd_ntk_step_converges_within_the_linearized_prediction_when_wide():
    """The NTK step lr = 1/(2 lambda_max(J J^T)) of the ladder's GD threshold: in the lazy regime (d1 = 48 n)
    GD reaches 1e-4 h0 within the linearized prediction k* = ln(1e4) / (-2 ln(1 - 1/kappa)) -- the
    slowest mode's decay bounds the loss's -- and the ladder's event agrees with a direct run."""
    import rmt_engine as rmt
    from rmt_engine.montecarlo.train import TrainSpec, gradient_descent, initial_weights
    from rmt_engine.montecarlo.trial import point_data

    lad = _load()
    n, d0 = 16, 8
    d1 = 48 * n
    spec = rmt.TrialSpec(activation="gelu", n=n, d0=d0, d1=d1, w2=lad.w2_eq19(1.0, d0, d1), ntk=True, data_seed=1000)
    rec = rmt.run_trial(spec, 0, cache={})
    kappa = rec["lambda_max_ntk"] / rec["lambda_min_ntk"]
    k_star = math.log(1 / lad.GD_TOL) / (-2 * math.log1p(-1 / kappa))
    pd = point_data(spec, {})
    W0, V0 = initial_weights(spec, 0)
    r = gradient_descent(pd.X, pd.Y, W0, V0, "gelu", 0.5 / rec["lambda_max_ntk"],
                         TrainSpec(max_iters=int(4 * k_star) + 1, tol=lad.GD_TOL), ntk=False)
    assert r.status == 0 and r.iterations <= k_star
    widths = lad.gd_widths("gelu", n, d0, [d1 // 2, d1], 1, 1)
    w, cens = widths["gd"]
    assert float(w.values.ravel()[0]) <= d1  # converged at the wide checkpoint, as the direct run did


def test_norm_route_fit_recovers_a_known_law_and_the_width_it_needs():
    """r = 13 n / sqrt(d1) (the measured gelu scale) with 3% noise: a ~ 1, c ~ -1/2, and r <= 0.2 needs
    d1 ~ n^2 (the proof's route is quadratic where delta1 itself is not); checkpoints below 4 n are left out."""
    import numpy as np

    lad = _load()
    rs = np.random.default_rng(3)
    rows = [{"activation": "gelu", "n": n, "d0": 8, "t": 2, "d1": n * f,
             "median": 13 * n / math.sqrt(n * f) * math.exp(rs.normal(0, 0.03)), "q05": 0, "q95": 0, "trials": 8}
            for n in (16, 36, 64, 144, 256) for f in (1, 2, 4, 8, 16, 32, 64, 128, 256)]
    rows[0]["median"] = 1e6  # at d1 = n (the hard edge): must not enter
    (f,) = lad.norm_route_fit(rows)
    assert abs(f["a"] - 1.0) <= f["a_half"] and abs(f["c"] + 0.5) <= f["c_half"] and f["a_half"] < 0.05
    assert abs(f["width_exponent"] - 2.0) <= f["width_exponent_half"] < 0.15
    assert f["points"] == 5 * 7 and f["prefactor"] == pytest.approx(13, rel=0.1)
