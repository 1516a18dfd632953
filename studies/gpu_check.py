#!/usr/bin/env python
"""One prepared GPU check for rmt_engine: correctness and speed figures in under 5 minutes.

Run from the repository root on a machine with one CUDA GPU (written for an H200, 141 GB) and
CuPy installed (``pip install -e .[gpu,test]``):

    python studies/gpu_check.py                 # everything, about 3-4 minutes on an H200
    python studies/gpu_check.py --quick         # smaller sizes, well under a minute
    python studies/gpu_check.py --json out.json # also write every figure as JSON

Sections (each runs on its own: a missing piece or an error is reported and the rest goes on):
  env        versions, device, memory
  compile    each kernels/*.cu through NVRTC (rmt_engine.backend.cuda), compile time
  pytest     ``pytest -m gpu`` (the GPU tests: kernels vs NumPy references, bitwise / few ulp)
  trials     run_trial(spec, trial) with backend "numpy" and "cupy": every record field compared
  sampling   normal_rows_gpu throughput (GB/s of float64 written) vs cupy.random for context
  gemm       float64 GEMM TFLOP/s (cuBLAS, the reference) and the Gram update M += F^T F at
             n = 2e4 (TFLOP/s, and as a fraction of the GEMM figure); syrk if CuPy has it
  accumulate one streamed pass of rmt_engine.montecarlo.gram.accumulate (sample + W X + phi + Gram)
  eigvalsh   dense eigenvalues at n = 1e4 and 2e4 (cuSOLVER syevd through rmt_engine.linalg.spectra)
  full       one full trial at n = 2e4, d1 = 2e5, d0 = 200 (point data + trial, timed apart)
  memory     device memory: CuPy pool high-water mark per section, device free / total
A deadline (``--deadline``, default 285 s) skips sections that would not finish in time and
says so. Exit status: 0 when nothing FAILED (skipped or missing pieces are reported, not failed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS: dict[str, dict] = {}
T0 = time.perf_counter()


def log(msg: str = "") -> None:
    print(msg, flush=True)


def elapsed() -> float:
    return time.perf_counter() - T0


def run_section(name: str, func, args, estimate_s: float) -> None:
    """Run one section; record status ok / FAILED / skipped / missing and its figures."""
    log(f"\n=== {name} " + "=" * max(0, 70 - len(name)))
    left = args.deadline - elapsed()
    if name in args.skip:
        RESULTS[name] = {"status": "skipped", "why": "--skip"}
        log("skipped (--skip)")
        return
    if estimate_s > left:
        RESULTS[name] = {"status": "skipped", "why": f"needs ~{estimate_s:.0f} s, {left:.0f} s left before the deadline"}
        log(f"skipped: needs ~{estimate_s:.0f} s, only {left:.0f} s left before --deadline {args.deadline:.0f} s")
        return
    pool_before = _pool_reset()
    t = time.perf_counter()
    res: dict = {}
    try:
        out = func(args, res)
        status = out if isinstance(out, str) else "ok"
    except _Missing as exc:
        status = "missing"
        res["why"] = str(exc)
        log(f"MISSING: {exc}")
    except Exception as exc:  # noqa: BLE001 - report and go on
        status = "FAILED"
        res["error"] = f"{type(exc).__name__}: {exc}"
        log(f"FAILED: {type(exc).__name__}: {exc}")
        log(traceback.format_exc(limit=6))
    res["status"] = status
    res["seconds"] = round(time.perf_counter() - t, 2)
    peak = _pool_peak()
    if peak is not None:
        res["pool_peak_GiB"] = round(peak / 2**30, 3)
    RESULTS[name] = res
    log(f"--- {name}: {status} in {res['seconds']} s" + (f", CuPy pool peak {res['pool_peak_GiB']} GiB" if peak else "")
        + (f" (pool before: {pool_before / 2**30:.2f} GiB)" if pool_before else ""))


class _Missing(RuntimeError):
    """A piece of the project or of the environment this section needs is not there."""


def _cupy():
    try:
        import cupy  # noqa: PLC0415

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise _Missing("CuPy imports but sees no CUDA device")
        return cupy
    except ImportError as exc:
        raise _Missing(f"CuPy is not importable: {exc}") from None


def _pool_reset() -> int:
    try:
        import cupy  # noqa: PLC0415

        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
        return pool.total_bytes()
    except Exception:  # noqa: BLE001
        return 0


def _pool_peak():
    try:
        import cupy  # noqa: PLC0415

        return cupy.get_default_memory_pool().total_bytes()  # blocks are kept until freed: a high-water mark
    except Exception:  # noqa: BLE001
        return None


def _sync(cp) -> None:
    cp.cuda.Device().synchronize()


def _time_gpu(cp, fn, reps: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``fn()`` over ``reps`` runs, device synchronized (seconds)."""
    for _ in range(warmup):
        fn()
    _sync(cp)
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync(cp)
        best = min(best, time.perf_counter() - t)
    return best


def _pick(args, full, quick, tiny):
    """The size of a section for --quick / --tiny / full runs."""
    return {"full": full, "quick": quick, "tiny": tiny}[args.size]


def _import(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise _Missing(f"{module} is not importable: {exc}") from None


# ------------------------------------------------------------------------------------------------
# sections


def s_env(args, res):
    import numpy as np  # noqa: PLC0415

    res["python"] = platform.python_version()
    res["numpy"] = np.__version__
    try:
        import scipy  # noqa: PLC0415

        res["scipy"] = scipy.__version__
    except ImportError:
        res["scipy"] = None
    try:
        rmt = _import("rmt_engine")
        res["rmt_engine"] = getattr(rmt, "__version__", "?")
    except _Missing as exc:
        res["rmt_engine"] = str(exc)
    for k, v in res.items():
        log(f"  {k:20s} {v}")
    cp = _cupy()
    res["cupy"] = cp.__version__
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    free, total = cp.cuda.runtime.memGetInfo()
    res.update({
        "device": name, "compute_capability": f"{props['major']}.{props['minor']}",
        "sm_count": props["multiProcessorCount"], "device_memory_GiB": round(total / 2**30, 1),
        "free_GiB_at_start": round(free / 2**30, 1),
        "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(), "cuda_driver": cp.cuda.runtime.driverGetVersion(),
    })
    for k in ("cupy", "device", "compute_capability", "sm_count", "device_memory_GiB", "free_GiB_at_start",
              "cuda_runtime", "cuda_driver"):
        log(f"  {k:20s} {res[k]}")


def s_compile(args, res):
    _cupy()
    cuda = _import("rmt_engine.backend.cuda")
    res["kernel_dir"] = str(cuda.kernel_dir())
    log(f"  kernel dir: {res['kernel_dir']}")
    for f in cuda.KERNEL_FILES:
        t = time.perf_counter()
        cuda.get_module(f)
        res[f"{f}_s"] = round(time.perf_counter() - t, 3)
        log(f"  {f:18s} compiled (or loaded from CuPy's cache) in {res[f'{f}_s']:.2f} s")


def s_pytest(args, res):
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rfEs", "tests"]
    timeout = max(30.0, min(150.0, args.deadline - elapsed() - 60.0))
    log(f"  {' '.join(cmd)}   (timeout {timeout:.0f} s)")
    try:
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise _Missing(str(exc)) from None
    tail = (r.stdout + r.stderr).strip().splitlines()
    for line in tail[-25:]:
        log("  | " + line)
    res["returncode"] = r.returncode
    res["summary"] = tail[-1] if tail else ""
    if r.returncode == 5:
        raise _Missing("pytest collected no GPU tests")
    if r.returncode != 0:
        return "FAILED"
    if " passed" not in res["summary"]:
        raise _Missing(f"no GPU test ran (CuPy or the device unusable for pytest?): {res['summary']}")
    return "ok"


def _compare_records(a: dict, b: dict, rtol=1e-8, atol=1e-10):
    import numpy as np  # noqa: PLC0415

    rows = []
    for k in a:
        x, y = float(a[k]), float(b.get(k, math.nan))
        if (math.isnan(x) and math.isnan(y)) or x == y:
            rel = 0.0
        else:
            rel = abs(x - y) / max(abs(x), abs(y), 1e-300)
        ok = x == y or (math.isnan(x) and math.isnan(y)) or abs(x - y) <= atol + rtol * max(abs(x), abs(y))
        rows.append((k, x, y, rel, ok))
    rows.sort(key=lambda r: (r[4], -r[3]))
    return rows, float(np.max([r[3] for r in rows])) if rows else 0.0


def s_trials(args, res):
    _cupy()
    spec_mod = _import("rmt_engine.montecarlo.spec")
    trial_mod = _import("rmt_engine.montecarlo.trial")
    cases = _pick(args, [("gelu", 0), ("tanh", 1), ("sigmoid", 0)], [("gelu", 0)], [("gelu", 0)])
    n, d0, d1 = _pick(args, (600, 30, 6000), (300, 20, 2000), (40, 6, 200))
    all_ok = True
    for act, trial in cases:
        kw = dict(activation=act, n=n, d0=d0, d1=d1, d2=2, t=(2,), seed=3, block_rows=512)
        try:
            spec_np = spec_mod.TrialSpec(**kw, backend="numpy")
            spec_cp = spec_mod.TrialSpec(**kw, backend="cupy")
        except TypeError as exc:
            raise _Missing(f"TrialSpec has no backend switch yet: {exc}") from None
        t = time.perf_counter()
        rec_np = trial_mod.run_trial(spec_np, trial)
        t_np = time.perf_counter() - t
        t = time.perf_counter()
        rec_cp = trial_mod.run_trial(spec_cp, trial)
        t_cp = time.perf_counter() - t
        rows, worst = _compare_records(rec_np, rec_cp)
        bad = [r for r in rows if not r[4]]
        all_ok &= not bad
        key = f"{act}_n{n}_d0{d0}_d1{d1}_trial{trial}"
        res[key] = {"fields": len(rows), "max_rel_diff": worst, "not_close": [r[0] for r in bad],
                    "numpy_s": round(t_np, 2), "cupy_s": round(t_cp, 2)}
        log(f"  {key}: {len(rows)} fields, max relative difference {worst:.2e}, "
            f"{len(bad)} beyond rtol 1e-8/atol 1e-10; numpy {t_np:.2f} s, cupy {t_cp:.2f} s (incl. compile)")
        for k, x, y, rel, ok in rows[:6]:
            log(f"      {'  ' if ok else '!!'} {k:28s} numpy {x: .15e}  cupy {y: .15e}  rel {rel:.1e}")
    return "ok" if all_ok else "FAILED"


def s_sampling(args, res):
    cp = _cupy()
    gpu = _import("rmt_engine.backend.kernels")
    rng = _import("rmt_engine.sampling.rng")
    key = rng.stream_key(0, "W0", 0)
    rows, cols = _pick(args, (16384, 8192), (4096, 4096), (64, 33))  # 1 GiB / 128 MiB of float64
    nbytes = rows * cols * 8
    t = _time_gpu(cp, lambda: gpu.normal_rows_gpu(key, 0, rows, cols, 0.1))
    res["normal_rows_gpu_GBps"] = round(nbytes / t / 1e9, 1)
    res["normal_rows_gpu_Gsamples_per_s"] = round(rows * cols / t / 1e9, 2)
    log(f"  normal_rows_gpu {rows} x {cols} float64 ({nbytes / 2**30:.2f} GiB): {t * 1e3:.2f} ms = "
        f"{res['normal_rows_gpu_GBps']} GB/s, {res['normal_rows_gpu_Gsamples_per_s']} G normals/s")
    g = cp.random.default_rng(0)
    t2 = _time_gpu(cp, lambda: g.standard_normal((rows, cols), dtype=cp.float64))
    res["cupy_random_GBps"] = round(nbytes / t2 / 1e9, 1)
    log(f"  cupy.random.default_rng().standard_normal, same size (context, not reproducible per block): "
        f"{res['cupy_random_GBps']} GB/s")
    # a spot check of agreement on a corner of the big block
    ref = rng.normal_rows(key, rows - 3, rows, cols, 0.1)
    got = cp.asnumpy(gpu.normal_rows_gpu(key, rows - 3, rows, cols, 0.1))
    import numpy as np  # noqa: PLC0415

    res["spot_max_abs_diff"] = float(np.max(np.abs(got - ref)))
    log(f"  spot check of the last 3 rows vs rng.normal_rows: max |diff| = {res['spot_max_abs_diff']:.2e}")


def s_gemm(args, res):
    cp = _cupy()
    m = _pick(args, 8192, 4096, 128)
    A = cp.random.default_rng(1).standard_normal((m, m))
    B = cp.random.default_rng(2).standard_normal((m, m))
    t = _time_gpu(cp, lambda: A @ B)
    gemm_tf = 2 * m**3 / t / 1e12
    res["gemm_n"] = m
    res["gemm_TFLOPs"] = round(gemm_tf, 2)
    log(f"  float64 GEMM {m}^3: {t * 1e3:.1f} ms = {gemm_tf:.2f} TFLOP/s (cuBLAS reference)")
    del A, B
    n, b = _pick(args, (20000, 4096), (5000, 4096), (100, 64))
    F = cp.random.default_rng(3).standard_normal((b, n))
    M = cp.zeros((n, n))

    def update():
        M.__iadd__(F.T @ F)  # what rmt_engine.montecarlo.gram does on CuPy (full product, then an add)

    t_full = _time_gpu(cp, update, reps=2)
    flops = 2 * b * n * n
    upd_tf = flops / t_full / 1e12
    res["gram_update_n"], res["gram_update_rows"] = n, b
    res["gram_update_TFLOPs"] = round(upd_tf, 2)
    res["gram_update_fraction_of_gemm"] = round(upd_tf / gemm_tf, 3)
    log(f"  Gram update M += F^T F, F {b} x {n}: {t_full * 1e3:.1f} ms = {upd_tf:.2f} TFLOP/s "
        f"({upd_tf / gemm_tf:.0%} of the GEMM figure; counts the full 2 b n^2 flops)")
    try:
        from cupy import cublas  # noqa: PLC0415

        if hasattr(cublas, "syrk"):
            Fc = cp.asfortranarray(F)  # syrk wants column-major; M^T = M
            Mf = cp.zeros((n, n), order="F")
            t = _time_gpu(cp, lambda: cublas.syrk("T", Fc, out=Mf, alpha=1.0, beta=1.0), reps=2)
            res["syrk_TFLOPs_useful"] = round(b * n * n / t / 1e12, 2)
            res["syrk_speedup_vs_full_product"] = round(t_full / t, 2)
            log(f"  cupy.cublas.syrk (one triangle): {t * 1e3:.1f} ms, {res['syrk_speedup_vs_full_product']}x "
                f"the full product's speed ({res['syrk_TFLOPs_useful']} TFLOP/s of useful b n^2 work)")
    except Exception as exc:  # noqa: BLE001
        res["syrk"] = f"not measured: {type(exc).__name__}: {exc}"
        log(f"  syrk not measured: {exc}")


def s_accumulate(args, res):
    cp = _cupy()
    gram = _import("rmt_engine.montecarlo.gram")
    data = _import("rmt_engine.sampling.data")
    rng = _import("rmt_engine.sampling.rng")
    n, d0, d1, b = _pick(args, (20000, 200, 32768, 4096), (4000, 100, 16384, 4096), (50, 5, 300, 64))
    X = cp.asarray(data.make_data("sphere", d0, n, 0))
    key = rng.stream_key(0, "W0", 0)

    def once():
        return gram.accumulate(X, "gelu", d1, key_W=key, block_rows=b)

    t = _time_gpu(cp, once, reps=1)
    flops = 2 * d1 * d0 * n + 2 * d1 * n * n
    res.update({"n": n, "d0": d0, "d1": d1, "block_rows": b, "seconds": round(t, 3),
                "effective_TFLOPs": round(flops / t / 1e12, 2)})
    log(f"  accumulate(X {d0} x {n}, gelu, d1={d1}, block_rows={b}): {t:.2f} s = "
        f"{res['effective_TFLOPs']} TFLOP/s effective (2 d1 d0 n + 2 d1 n^2 flops)")


def s_eigvalsh(args, res):
    cp = _cupy()
    try:
        from rmt_engine.linalg.spectra import eigvalsh  # noqa: PLC0415

        which = "rmt_engine.linalg.spectra.eigvalsh"
    except ImportError:
        eigvalsh = cp.linalg.eigvalsh
        which = "cupy.linalg.eigvalsh (rmt_engine.linalg.spectra missing)"
    sizes = _pick(args, (10000, 20000), (2000, 5000), (30, 60))
    for n in sizes:
        A = cp.random.default_rng(n).standard_normal((n, n))
        A = (A + A.T) * 0.5
        t = _time_gpu(cp, lambda: eigvalsh(A), reps=1, warmup=0 if n > 10000 else 1)
        res[f"n{n}_s"] = round(t, 2)
        log(f"  {which} n = {n}: {t:.2f} s")
        del A


def s_full(args, res):
    _cupy()
    spec_mod = _import("rmt_engine.montecarlo.spec")
    trial_mod = _import("rmt_engine.montecarlo.trial")
    n, d0, d1 = _pick(args, (20000, 200, 200000), (5000, 100, 20000), (40, 10, 500))
    try:
        spec = spec_mod.TrialSpec(activation="gelu", n=n, d0=d0, d1=d1, d2=1, t=(2,), seed=0,
                                  block_rows=_pick(args, 4096, 4096, 128), backend="cupy")
    except TypeError as exc:
        raise _Missing(f"TrialSpec has no backend switch yet: {exc}") from None
    cache: dict = {}
    t = time.perf_counter()
    point = trial_mod.point_record(spec, cache) if hasattr(trial_mod, "point_record") else None
    t_point = time.perf_counter() - t
    t = time.perf_counter()
    rec = trial_mod.run_trial(spec, 0, cache=cache)
    t_trial = time.perf_counter() - t
    res.update({"n": n, "d0": d0, "d1": d1, "block_rows": spec.block_rows, "point_data_s": round(t_point, 2),
                "trial_s": round(t_trial, 2), "total_s": round(t_point + t_trial, 2)})
    log(f"  gelu n={n} d0={d0} d1={d1}: grid-point data (X, E[M0], Khatri-Rao spectra) {t_point:.1f} s, "
        f"trial (W0 pass, eigvalsh, ||M0 - E M0||) {t_trial:.1f} s")
    for k in ("lambda_min_M0", "lambda_max_M0", "lambda_min_EM0", "delta1", "delta2", "margin"):
        if k in rec:
            res[k] = rec[k]
            log(f"      {k:16s} {rec[k]: .6e}")
    if point is None:
        log("      (trial.point_record missing: the per-point work is inside the trial time)")


def s_memory(args, res):
    cp = _cupy()
    free, total = cp.cuda.runtime.memGetInfo()
    pool = cp.get_default_memory_pool()
    res.update({"device_free_GiB": round(free / 2**30, 2), "device_total_GiB": round(total / 2**30, 2),
                "pool_used_GiB": round(pool.used_bytes() / 2**30, 3),
                "max_section_pool_peak_GiB": max((r.get("pool_peak_GiB", 0.0) for r in RESULTS.values()), default=0.0)})
    for k, v in res.items():
        log(f"  {k:28s} {v}")


SECTIONS = [  # name, function, rough seconds on an H200 (full size), quick size
    ("env", s_env, 5, 5),
    ("compile", s_compile, 30, 30),
    ("pytest", s_pytest, 90, 90),
    ("trials", s_trials, 30, 15),
    ("sampling", s_sampling, 10, 5),
    ("gemm", s_gemm, 15, 5),
    ("accumulate", s_accumulate, 15, 5),
    ("eigvalsh", s_eigvalsh, 40, 5),
    ("full", s_full, 90, 20),
    ("memory", s_memory, 1, 1),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test, < 1 minute)")
    p.add_argument("--tiny", action="store_true",
                   help="toy sizes, to test this script itself (e.g. with a fake cupy on a CPU)")
    p.add_argument("--deadline", type=float, default=285.0, help="skip sections that would end after this many seconds")
    p.add_argument("--skip", nargs="*", default=[], choices=[s[0] for s in SECTIONS], help="sections to skip")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    args.skip = set(args.skip)
    args.size = "tiny" if args.tiny else "quick" if args.quick else "full"
    log(f"rmt_engine GPU check ({args.size} sizes), deadline {args.deadline:.0f} s, "
        f"repo {REPO}, host {platform.node()}")
    os.environ.setdefault("CUPY_CACHE_SAVE_CUDA_SOURCE", "0")
    for name, func, est_full, est_quick in SECTIONS:
        run_section(name, func, args, {"full": est_full, "quick": est_quick, "tiny": 1}[args.size])

    log("\n=== summary " + "=" * 59)
    headline = {
        "pytest": lambda r: r.get("summary", ""),
        "trials": lambda r: ", ".join(f"{k.split('_')[0]} rel {v['max_rel_diff']:.1e}" for k, v in r.items()
                                      if isinstance(v, dict)),
        "sampling": lambda r: f"{r.get('normal_rows_gpu_GBps')} GB/s",
        "gemm": lambda r: f"GEMM {r.get('gemm_TFLOPs')} TF/s, Gram update {r.get('gram_update_TFLOPs')} TF/s",
        "accumulate": lambda r: f"{r.get('effective_TFLOPs')} TF/s effective",
        "eigvalsh": lambda r: ", ".join(f"{k[:-2]}: {v} s" for k, v in r.items() if k.endswith("_s")),
        "full": lambda r: f"{r.get('total_s')} s (point {r.get('point_data_s')} s + trial {r.get('trial_s')} s)",
        "memory": lambda r: f"max pool {r.get('max_section_pool_peak_GiB')} GiB",
    }
    failed = False
    for name, *_ in SECTIONS:
        r = RESULTS.get(name, {"status": "not run"})
        failed |= r["status"] == "FAILED"
        extra = r.get("why") or r.get("error") or ""
        if r["status"] == "ok" and name in headline:
            try:
                extra = headline[name](r)
            except Exception:  # noqa: BLE001
                extra = ""
        log(f"  {name:11s} {r['status']:8s} {extra}")
    log(f"  total {elapsed():.0f} s")
    if args.json:
        args.json.write_text(json.dumps(RESULTS, indent=2, default=str))
        log(f"  results written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
