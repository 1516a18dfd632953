"""The ladder's report (rmt_engine.report.ladder_section): fits recomputed from the thresholds (checked
against numpy.polyfit), verdicts that say `consistent` only inside the interval, the CLI entry, and
clear errors for files that are not a ladder.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from rmt_engine.cli import main
from rmt_engine.report import ladder_section as L


def _synthetic(b=1.5, noise=0.02, seed=0):
    rs = np.random.default_rng(seed)
    rows = []
    for t, cases in ((2, [(16, 8), (64, 16), (256, 32), (1024, 64)]), (3, [(64, 16), (216, 24), (512, 32)])):
        for n, d0 in cases:
            y = 30.0 * n ** b * math.exp(rs.normal(0, noise))
            for ev, src, f in (("margin", "de", 1.0), ("ck", "de", 0.03), ("margin", "mc", 0.9)):
                d1 = f * y / d0
                rows.append({"activation": "gelu", "n": n, "d0": d0, "t": t, "event": ev, "source": src,
                             "d1_star": d1, "lo": 0.8 * d1, "hi": 1.2 * d1})
    rows.append({"activation": "gelu", "n": 16, "d0": 8, "t": 2, "event": "gd", "source": "mc", "d1_star": 24.0,
                 "lo": 24.0, "hi": 36.0, "upper_bound": True})
    return rows


def test_fits_are_least_squares_on_logs_with_a_t_interval():
    th = _synthetic()
    fs = L.fits(th)
    f = next(f for f in fs if (f["event"], f["source"], f["t"], f["window"]) == ("margin", "de", 2, "all n"))
    rows = [r for r in th if (r["event"], r["source"], r["t"]) == ("margin", "de", 2)]
    x = np.log([r["n"] for r in rows])
    y = np.log([r["d0"] * r["d1_star"] for r in rows])
    (b, a), res, *_ = np.polyfit(x, y, 1, full=True)[:2] + (None,)
    assert f["b"] == pytest.approx(b, rel=1e-12)
    resid = y - (a + b * x)
    se = math.sqrt(float(resid @ resid) / (len(x) - 2) / float(((x - x.mean()) ** 2).sum()))
    assert f["hi"] - f["b"] == pytest.approx(stats.t.ppf(0.975, len(x) - 2) * se, rel=1e-10)
    # the n >= 256 window of a 4-case line has 2 points: no fit; the GD event has one case: no fit
    assert not [f for f in fs if f["window"] == "n >= 256" and f["t"] == 2]
    assert not [f for f in fs if f["event"] == "gd"]


def test_claims_say_consistent_only_inside_the_interval():
    fs = [{"activation": "gelu", "event": "margin", "source": "de", "t": 2, "window": "all n", "b": 1.45,
           "lo": 1.43, "hi": 1.47, "n_min": 16, "n_max": 4096, "points": 9},
          {"activation": "tanh", "event": "ck", "source": "mc", "t": 2, "window": "all n", "b": 1.2,
           "lo": 0.5, "hi": 1.9, "n_min": 16, "n_max": 64, "points": 3}]
    rows = L.claims_table(fs)
    assert "| shallower | steeper | yes |" in rows[2]
    assert "| consistent | consistent | no: consistent with both |" in rows[3]


def test_report_cli_on_a_ladder_folder(tmp_path, capsys):
    (tmp_path / "lad").mkdir()
    (tmp_path / "lad" / "ladder.json").write_text(json.dumps({"thresholds": _synthetic(), "seconds": 12.0}))
    assert main(["report", str(tmp_path / "lad"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Claims" in md and "the paper's sufficient width" in md and "| <= 24 |" in md
    assert (tmp_path / "rep" / "ladder.png").stat().st_size > 20_000
    (tmp_path / "bad.json").write_text(json.dumps({"thresholds": [{"activation": "gelu"}]}))
    assert main(["report", str(tmp_path / "bad.json"), "--out", str(tmp_path / "rep2")]) == 2
    assert "lacks n, d0, t, event, source, d1_star, lo, hi" in capsys.readouterr().err


def test_report_shows_the_norm_route_when_the_ladder_has_it(tmp_path):
    nr = {"delta": 0.2, "fits": [{"activation": "gelu", "t": 2, "prefactor": 13.0, "a": 1.0, "a_half": 0.02,
                                  "c": -0.5, "c_half": 0.01, "width_exponent": 2.0, "width_exponent_half": 0.05,
                                  "points": 35, "n_max": 256}]}
    (tmp_path / "ladder.json").write_text(json.dumps({"thresholds": _synthetic(), "norm_route": nr}))
    md = L.write_ladder_report(tmp_path, tmp_path / "rep").read_text()
    assert "## The proof's norm route" in md and "| gelu | 2 | 13 | 1.000 +- 0.020 | -0.500 +- 0.010 | 2.00 +- 0.05 |" in md
