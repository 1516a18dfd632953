"""Benchmark: the engine against a peer library, neural-tangents, side by side in one run.

    python studies/benchmark_peer.py --peer-python /path/to/nt-venv/bin/python          # (2000, 45, 8000)
    python studies/benchmark_peer.py --peer-python ... --quick                          # (300, 12, 1200)

The peer runs in its own virtual environment (its pinned jax needs numpy < 2), made once with::

    python3 -m venv nt-venv && nt-venv/bin/pip install neural-tangents "jax==0.4.26" "jaxlib==0.4.26" \\
        "numpy<2" "scipy<1.14" "tf2jax==0.3.6"

Both sides compute the same matrices from the same numbers: the engine writes its X, W0 and V0 of
trial 0 (``montecarlo.train.initial_weights``: bitwise the rows its streamed pass draws) and the peer
builds ``stax.serial(Dense(d1, W_std=sqrt(d0), parameterization="ntk"), Gelu(approximate=False),
Dense(1, parameterization="standard"))`` with exactly those weights, so that

- its ``empirical_nngp_fn`` of the hidden layer is ``M0 / d1`` (M0 = phi(W0 X)^T phi(W0 X)), and
- its ``empirical_ntk_fn`` of the network is the engine's ``J J^T = M0 + (X^T X) o A`` (d2 = 1).

Timed per trial (the median of ``--reps`` rounds; the peer's kernel functions are jitted and warmed
first, its x64 mode on): the peer's kernel + ``numpy.linalg.eigvalsh`` (the peer has no extremes
solver) against the engine's extremes path (Gram pass + certified extremes), its full record
(``run_trial``: + the certified ``||M0 - E M0||``, the bound chain) and, with ``--ntk``, the record
with the streamed NTK. The extremes of both sides are compared (relative difference: the same
matrices, so about eps cond). The engine is timed before and after the peer (a change of load shows
as a difference between the two). Only ratios are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --------------------------------------------------------------------------- the peer (its own venv)
def peer_worker(npz: str, reps: int, ntk: bool) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import neural_tangents as nt
    from neural_tangents import stax

    z = np.load(npz)
    X, W0, V0 = z["X"], z["W0"], z["V0"]  # X: n x d0 (rows are points), W0: d1 x d0, V0: 1 x d1
    n, d0 = X.shape
    d1 = W0.shape[0]
    hidden = stax.serial(stax.Dense(d1, W_std=float(np.sqrt(d0)), b_std=None, parameterization="ntk"),
                         stax.Gelu(approximate=False))
    net = stax.serial(hidden, stax.Dense(1, W_std=1.0, b_std=None, parameterization="standard"))
    p_hidden = [(jnp.asarray(W0.T), None), ()]
    p_net = [p_hidden, (jnp.asarray(V0.T), None)]
    x = jnp.asarray(X)
    nngp = jax.jit(nt.empirical_nngp_fn(hidden[1]))
    out = {"versions": {"neural_tangents": nt.__version__, "jax": jax.__version__}}

    def run_nngp():
        K = np.asarray(nngp(x, None, p_hidden))
        ev = np.linalg.eigvalsh(K)
        return ev[0] * d1, ev[-1] * d1

    out["nngp_extremes"] = run_nngp()  # warm (compile)
    out["nngp_s"] = _median_time(run_nngp, reps)
    if ntk:
        ntk_fn = jax.jit(nt.empirical_ntk_fn(net[1], trace_axes=(), implementation=1))

        def run_ntk():
            T = np.asarray(ntk_fn(x, None, p_net)).reshape(n, n)
            ev = np.linalg.eigvalsh(T)
            return ev[0], ev[-1]

        out["ntk_extremes"] = run_ntk()
        out["ntk_s"] = _median_time(run_ntk, reps)
    return out


# --------------------------------------------------------------------------- the engine
def engine_times(n: int, d0: int, d1: int, reps: int, ntk: bool) -> tuple[dict, dict]:
    import numpy as np

    import rmt_engine as rmt
    from rmt_engine.linalg.extremes import extremes
    from rmt_engine.montecarlo.gram import accumulate
    from rmt_engine.montecarlo.trial import point_data
    from rmt_engine.sampling import rng

    spec = rmt.TrialSpec(activation="gelu", n=n, d0=d0, d1=d1)
    cache: dict = {}
    rec = rmt.run_trial(spec, 0, cache=cache)  # warms the grid point's cache (E[M0], the bounds)
    pd = point_data(spec, cache)
    key = rng.stream_key(spec.seed, "W0", 0)

    def extremes_path():
        sums = accumulate(pd.X, "gelu", d1, w1=spec.w1, key_W=key, block_rows=spec.rows_per_block)
        return extremes(sums.M0, ("min", "max"), seed_key=key, work=sums.spare)

    t = {"extremes_s": _median_time(extremes_path, reps),
         "record_s": _median_time(lambda: rmt.run_trial(spec, 0, cache=cache), reps)}
    ref = {"lambda_min_M0": rec["lambda_min_M0"], "lambda_max_M0": rec["lambda_max_M0"]}
    if ntk:
        on = rmt.TrialSpec(activation="gelu", n=n, d0=d0, d1=d1, ntk=True)
        r = rmt.run_trial(on, 0, cache=cache)
        t["ntk_record_s"] = _median_time(lambda: rmt.run_trial(on, 0, cache=cache), reps)
        ref.update(lambda_min_ntk=r["lambda_min_ntk"], lambda_max_ntk=r["lambda_max_ntk"])
    del np
    return t, ref


def write_inputs(n: int, d0: int, d1: int, path: str) -> None:
    import numpy as np

    import rmt_engine as rmt
    from rmt_engine.montecarlo.train import initial_weights
    from rmt_engine.montecarlo.trial import point_data

    spec = rmt.TrialSpec(activation="gelu", n=n, d0=d0, d1=d1)
    X = point_data(spec, {}).X
    W0, V0 = initial_weights(spec, 0)
    np.savez(path, X=np.ascontiguousarray(np.asarray(X).T), W0=np.asarray(W0), V0=np.asarray(V0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-python", help="the python of a venv with neural-tangents (see above)")
    ap.add_argument("--quick", action="store_true", help="(300, 12, 1200): seconds")
    ap.add_argument("--size", type=int, nargs=3, metavar=("N", "D0", "D1"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ntk", action="store_true", help="also the NTK (the peer's Jacobian contraction, "
                    "implementation 1: it holds n^2 d1 floats -- 33 GB at (1000, 24, 4000) -- so use a smaller --size)")
    ap.add_argument("--json", help="write the numbers here")
    ap.add_argument("--peer-worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.peer_worker:
        print(json.dumps(peer_worker(a.peer_worker, a.reps, a.ntk)))
        return 0
    if not a.peer_python:
        ap.error("--peer-python is required (the peer needs its own venv: see the docstring)")
    n, d0, d1 = a.size or ((300, 12, 1200) if a.quick else (2000, 45, 8000))
    with tempfile.TemporaryDirectory() as tmp:
        npz = str(Path(tmp) / "inputs.npz")
        write_inputs(n, d0, d1, npz)
        before, ref = engine_times(n, d0, d1, a.reps, a.ntk)
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        cmd = [a.peer_python, str(Path(__file__).resolve()), "--peer-worker", npz, "--reps", str(a.reps)]
        cmd += ["--ntk"] if a.ntk else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        peer = json.loads(proc.stdout.strip().splitlines()[-1])
        after, _ = engine_times(n, d0, d1, a.reps, a.ntk)
    eng = {k: min(before[k], after[k]) for k in before}
    res = {"n": n, "d0": d0, "d1": d1, "reps": a.reps, "engine_before": before, "engine_after": after,
           "peer": peer, "reference": ref,
           "peer_over_engine_extremes": peer["nngp_s"] / eng["extremes_s"],
           "peer_over_engine_record": peer["nngp_s"] / eng["record_s"],
           "agree_lambda_min_M0": abs(peer["nngp_extremes"][0] - ref["lambda_min_M0"]) / ref["lambda_min_M0"],
           "agree_lambda_max_M0": abs(peer["nngp_extremes"][1] - ref["lambda_max_M0"]) / ref["lambda_max_M0"]}
    if a.ntk:
        res["peer_ntk_over_engine_ntk_record"] = peer["ntk_s"] / eng["ntk_record_s"]
        res["agree_lambda_min_ntk"] = abs(peer["ntk_extremes"][0] - ref["lambda_min_ntk"]) / ref["lambda_min_ntk"]
        res["agree_lambda_max_ntk"] = abs(peer["ntk_extremes"][1] - ref["lambda_max_ntk"]) / ref["lambda_max_ntk"]
    print(f"(n, d0, d1) = ({n}, {d0}, {d1}), GeLU, float64, one trial; medians of {a.reps} rounds; "
          f"neural-tangents {peer['versions']['neural_tangents']}, jax {peer['versions']['jax']}")
    print(f"  peer kernel + eigvalsh:          {peer['nngp_s']:.3f} s")
    print(f"  engine extremes path:            {eng['extremes_s']:.3f} s  -> engine {res['peer_over_engine_extremes']:.2f}x "
          f"ahead (before/after the peer: {before['extremes_s']:.3f} / {after['extremes_s']:.3f} s)")
    print(f"  engine full record:              {eng['record_s']:.3f} s  -> engine {res['peer_over_engine_record']:.2f}x ahead")
    print(f"  same M0: lambda_min agrees to {res['agree_lambda_min_M0']:.1e}, lambda_max to {res['agree_lambda_max_M0']:.1e}")
    if a.ntk:
        print(f"  peer NTK + eigvalsh:             {peer['ntk_s']:.3f} s; engine record with the NTK "
              f"{eng['ntk_record_s']:.3f} s -> engine {res['peer_ntk_over_engine_ntk_record']:.2f}x ahead")
        print(f"  same NTK: lambda_min agrees to {res['agree_lambda_min_ntk']:.1e}, "
              f"lambda_max to {res['agree_lambda_max_ntk']:.1e}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
