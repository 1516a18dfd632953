"""studies/width_law_draws.py and studies/benchmark_peer.py: the tiny/quick configurations run every
code path the engine side has, and their numbers are checked against independent computations."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"rmt_{name}", ROOT / "studies" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("wl")
    mod = _load("width_law_draws")
    assert mod.main(["--tiny", "--out", str(out), "--workers", "2", "--n-boot", "100"]) == 0
    return mod, out, json.loads((out / "width_law_draws.json").read_text())


def test_tiny_run_writes_three_designs_and_the_documented_json(tiny):
    mod, out, res = tiny
    assert set(res["wall"]) == {"points", "path", "draws"}
    assert res["grid"]["data_seed"][0] == 20211209 and len(res["grid"]["data_seed"]) == 3
    rows = res["draws"]["rows"]
    assert len(rows) == 2 * 3 and all({"q95", "q50", "per_draw_q95", "fraction_between"} <= set(r) for r in rows)
    assert (out / "width_law_draws.md").read_text().startswith("# Width law")
    # the path design gives the per-width design's thresholds (same numbers up to rounding)
    for key, (d, lo, hi) in res["points"].items():
        p = res["path"][key]
        for a, b in zip((d, lo, hi), p):
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6)


def test_pooled_quantile_is_the_quantile_of_the_crossing_widths(tiny):
    """Recomputed from the cube: per trial, the first checkpoint after which margin > 1 holds at every
    later one brackets the script's crossing width, and the pooled median is their sample median."""
    import rmt_engine as rmt

    mod, out, res = tiny
    ds = rmt.open_results(out / "draws.zarr")
    ds = ds.squeeze([d for d in ds.dims if ds.sizes[d] == 1 and d not in ("activation", "case", "trial")])
    cw, w = mod.crossing(ds)
    d1 = ds["d1"].values
    m = ds["margin"].transpose("activation", "case", "data_seed", "trial", "d1").values
    W = w.transpose("activation", "case", "data_seed", "trial").values
    for idx in np.ndindex(*m.shape[:-1]):
        holds = m[idx] > 1
        after = [j for j in range(len(d1)) if holds[j:].all()]
        if not after:
            assert np.isinf(W[idx])
        elif after[0] == 0:
            assert W[idx] <= d1[0]
        else:
            assert d1[after[0] - 1] <= W[idx] <= d1[after[0]]
    for k, r in enumerate(res["draws"]["rows"]):
        a = list(ds["activation"].values).index(r["activation"])
        c = [int(n) for n in np.ravel(ds["n"].values)].index(r["n"])
        pooled = W[a, c].reshape(-1)
        with np.errstate(invalid="ignore"):
            q = float(np.quantile(pooled, 0.5))
        q = math.inf if math.isnan(q) else q
        assert r["q50"][0] == pytest.approx(q) or (math.isinf(q) and math.isinf(r["q50"][0]))


def test_peer_benchmark_gives_the_peer_the_engines_very_matrices(tmp_path):
    """The peer (neural-tangents, its own venv) is handed X, W0, V0 from write_inputs: recomputing M0 and
    J J^T from them in NumPy gives the engine's lambda_min/max (so the timing compares the same work)."""
    from scipy.special import erf

    import rmt_engine as rmt

    mod = _load("benchmark_peer")
    with pytest.raises(SystemExit):
        mod.main(["--quick"])  # --peer-python is required
    n, d0, d1 = 40, 6, 200
    mod.write_inputs(n, d0, d1, str(tmp_path / "in.npz"))
    z = np.load(tmp_path / "in.npz")
    X, W0, V0 = z["X"], z["W0"], z["V0"]
    assert X.shape == (n, d0) and W0.shape == (d1, d0) and V0.shape == (1, d1)
    Z = X @ W0.T
    F = 0.5 * Z * (1 + erf(Z / math.sqrt(2)))
    D = 0.5 * (1 + erf(Z / math.sqrt(2))) + Z * np.exp(-Z * Z / 2) / math.sqrt(2 * math.pi)
    M0 = F @ F.T
    ntk = M0 + (X @ X.T) * ((D * V0) @ (D * V0).T)
    rec = rmt.run_trial(rmt.TrialSpec(activation="gelu", n=n, d0=d0, d1=d1, ntk=True), 0, cache={})
    ev, et = np.linalg.eigvalsh(M0), np.linalg.eigvalsh(ntk)
    assert ev[0] == pytest.approx(rec["lambda_min_M0"], rel=1e-9) and ev[-1] == pytest.approx(rec["lambda_max_M0"], rel=1e-12)
    assert et[0] == pytest.approx(rec["lambda_min_ntk"], rel=1e-9) and et[-1] == pytest.approx(rec["lambda_max_ntk"], rel=1e-12)
