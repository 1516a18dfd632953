"""CUDA kernel sources, checked without a GPU.

- ``rmt_engine.backend.cuda`` finds ``kernels/``, inlines the project headers (with ``#line`` so errors
  still point at the header) and never imports CuPy.
- Every ``kernels/*.cu`` compiles with ``nvcc -ptx -arch=sm_90`` as written (``-I kernels``), and
  the header-inlined sources that CuPy would compile build to sm_90 cubins: a syntax error fails CI.
- ``kernels/host_check.cu`` compiles the ``__host__ __device__`` math of ``philox.cuh`` and
  ``activations.cuh`` for the CPU; its Philox words must equal ``rng.philox4x32`` bit for bit,
  its normals ``rng.box_muller`` / ``rng.normal_rows`` to 4 ulp, its activations the NumPy
  reference ``rmt_engine.theory.activations`` to 4 ulp of the value's natural scale (see ``_act_scale``).
nvcc is needed (CI has it; these tests skip, saying so, where it is absent). All compilations run
in parallel in one session fixture (a few seconds).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rmt_engine.backend import cuda as _cuda
from rmt_engine.sampling import rng
from rmt_engine.backend.kernels import ACTIVATION_IDS
from _reference import PHILOX_KAT, ulp_distance

EPS = np.finfo(np.float64).eps
REPO = Path(__file__).resolve().parents[1]


def _find_nvcc() -> str | None:
    for cand in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


NVCC = _find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) not found on PATH or in /usr/local/cuda/bin")

KERNEL_DIR = _cuda.kernel_dir()
ALL_CU = sorted(p.name for p in KERNEL_DIR.glob("*.cu"))


# ------------------------------------------------------------------------------------------------
# pure Python: directory lookup, header inlining, no CuPy at import


def test_kernel_dir_is_the_checkout_and_holds_every_file():
    assert KERNEL_DIR == REPO / "kernels"
    for name in (*_cuda.KERNEL_FILES, *_cuda.HEADER_FILES, "host_check.cu"):
        assert (KERNEL_DIR / name).is_file(), name


@pytest.mark.parametrize("name", _cuda.KERNEL_FILES)
def test_kernel_source_inlines_project_headers(name):
    src = _cuda.kernel_source(name)
    assert not re.search(r'^\s*#\s*include\s*"', src, re.MULTILINE), "a project header was left as #include"
    assert "#pragma once" not in re.sub(r"//.*", "", src)
    raw = (KERNEL_DIR / name).read_text()
    for header in re.findall(r'#include "([^"]+)"', raw):
        body = (KERNEL_DIR / header).read_text()
        # the header's code (first function) is present, once
        first = re.search(r"__host__ __device__[^\n]*", body).group(0)
        assert src.count(first) == 1
        assert f'#line 1 "{header}"' in src
    assert "extern \"C\" __global__" in src


def test_headers_included_twice_are_inlined_once(tmp_path, monkeypatch):
    (tmp_path / "philox.cuh").write_text("#pragma once\nint philox_marker;\n")
    (tmp_path / "a.cuh").write_text('#pragma once\n#include "philox.cuh"\nint a_marker;\n')
    (tmp_path / "k.cu").write_text('#include "a.cuh"\n#include "philox.cuh"\n#include <math.h>\nint k;\n')
    monkeypatch.setenv("RMT_ENGINE_KERNEL_DIR", str(tmp_path))
    src = _cuda.kernel_source("k.cu")
    assert src.count("int philox_marker;") == 1 and src.count("int a_marker;") == 1
    assert "#include <math.h>" in src  # system headers are left to the compiler
    # line mapping: after the inlined headers the kernel's own line 4 is announced as line 3 + 1
    assert '#line 4 "k.cu"\n#include <math.h>' not in src and '#line 3 "k.cu"\n#include <math.h>' in src


def test_missing_and_circular_headers_are_named(tmp_path, monkeypatch):
    (tmp_path / "philox.cuh").write_text('#include "philox.cuh"\n')
    (tmp_path / "bad.cu").write_text('int x;\n#include "nowhere.cuh"\n')
    monkeypatch.setenv("RMT_ENGINE_KERNEL_DIR", str(tmp_path))
    with pytest.raises(_cuda.KernelSourceError, match=r'bad.cu:2: #include "nowhere.cuh" not found'):
        _cuda.kernel_source("bad.cu")
    with pytest.raises(_cuda.KernelSourceError, match="circular #include"):
        _cuda.kernel_source("philox.cuh")
    with pytest.raises(_cuda.KernelSourceError, match="kernel file 'absent.cu' not found"):
        _cuda.kernel_source("absent.cu")
    monkeypatch.setenv("RMT_ENGINE_KERNEL_DIR", str(tmp_path / "void"))
    monkeypatch.setattr(_cuda, "_candidate_dirs", lambda: [tmp_path / "void"])
    with pytest.raises(_cuda.KernelSourceError, match="CUDA kernel sources not found"):
        _cuda.kernel_dir()


def test_edited_header_is_picked_up(tmp_path, monkeypatch):
    for p in KERNEL_DIR.iterdir():
        shutil.copy(p, tmp_path / p.name)
    monkeypatch.setenv("RMT_ENGINE_KERNEL_DIR", str(tmp_path))
    before = _cuda.kernel_source("sample.cu")
    h = tmp_path / "philox.cuh"
    h.write_text(h.read_text() + "\n// edited\n")
    os.utime(h, ns=(h.stat().st_atime_ns, h.stat().st_mtime_ns + 10**9))
    assert _cuda.kernel_source("sample.cu") != before


def test_importing_gpu_modules_does_not_import_cupy():
    code = "import sys, rmt_engine.backend.cuda, rmt_engine.backend.kernels; sys.exit('cupy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_activation_ids_match_the_header_and_the_reference():
    text = (KERNEL_DIR / "activations.cuh").read_text()
    ids = {m.group(1).lower(): int(m.group(2)) for m in re.finditer(r"#define RMT_ACT_(\w+) (\d+)", text)}
    count = ids.pop("count")
    assert ids == ACTIVATION_IDS
    assert count == len(ACTIVATION_IDS)
    acts = pytest.importorskip("rmt_engine.theory.activations")
    builtins = {n for n in acts.available_activations() if acts.activation(n).builtin}
    assert builtins == set(ACTIVATION_IDS), "every built-in activation needs a CUDA kernel id"


@pytest.mark.skipif(__import__("rmt_engine.backend.xp", fromlist=["x"]).gpu_available(), reason="a GPU is present")
def test_gpu_wrappers_fail_clearly_without_cupy():
    from rmt_engine.backend import kernels as gpu

    with pytest.raises(RuntimeError, match="CuPy or a CUDA device is not available"):
        gpu.normal_rows_gpu(rng.stream_key(0, "W0", 0), 0, 2, 3)
    with pytest.raises(ValueError, match="no CUDA kernel for activation 'relu'"):
        gpu.apply_activation_gpu("relu", np.zeros(2))
    with pytest.raises(ValueError, match="row_start <= row_stop"):
        gpu.normal_rows_gpu(rng.stream_key(0, "W0", 0), 3, 2, 3)


# ------------------------------------------------------------------------------------------------
# nvcc: compile everything once, in parallel


@pytest.fixture(scope="session")
def compiled(tmp_path_factory):
    """Run every nvcc job at once; map job name -> (returncode, stderr, output path)."""
    if NVCC is None:
        pytest.skip("nvcc (CUDA toolkit) not found on PATH or in /usr/local/cuda/bin")
    tmp = tmp_path_factory.mktemp("nvcc")
    jobs = {}
    for name in ALL_CU:  # as written, headers through -I
        out = tmp / f"raw_{name}.ptx"
        jobs[f"raw:{name}"] = ([NVCC, "-ptx", "-arch=sm_90", "-I", str(KERNEL_DIR), str(KERNEL_DIR / name),
                                "-o", str(out)], out)
    for name in _cuda.KERNEL_FILES:  # exactly the text CuPy compiles, no include path
        src = tmp / f"inlined_{name}"
        src.write_text(_cuda.kernel_source(name))
        out = tmp / f"inlined_{name}.cubin"
        jobs[f"inlined:{name}"] = ([NVCC, "-cubin", "-arch=sm_90", str(src), "-o", str(out)], out)
    src = tmp / "host_check_inlined.cu"
    src.write_text(_cuda.kernel_source("host_check.cu"))
    exe = tmp / "host_check"
    jobs["host"] = ([NVCC, "-O2", str(src), "-o", str(exe)], exe)
    procs = {k: (subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), out)
             for k, (cmd, out) in jobs.items()}
    results = {}
    for k, (p, out) in procs.items():
        log, _ = p.communicate(timeout=300)
        results[k] = (p.returncode, log, out)
    return results


@needs_nvcc
@pytest.mark.parametrize("job", [f"raw:{n}" for n in ALL_CU] + [f"inlined:{n}" for n in _cuda.KERNEL_FILES])
def test_kernels_compile_for_sm90(compiled, job):
    rc, log, out = compiled[job]
    assert rc == 0, f"nvcc failed for {job}:\n{log}"
    assert out.stat().st_size > 0


@needs_nvcc
def test_exported_kernels_exist(compiled):
    names = {"sample.cu": ["rmt_normal_rows", "rmt_philox_words", "rmt_box_muller"],
             "activations.cu": ["rmt_activation_inplace", "rmt_activation_all"],
             "khatri_rao.cu": ["rmt_khatri_rao", "rmt_hadamard_power"]}
    for name, funcs in names.items():
        ptx = compiled[f"raw:{name}"][2].read_text()
        for f in funcs:
            assert f".entry {f}(" in ptx, f"{f} missing from {name} (extern \"C\" name changed?)"


@needs_nvcc
def test_compile_errors_point_at_the_header_line(tmp_path, monkeypatch):
    for p in KERNEL_DIR.iterdir():
        shutil.copy(p, tmp_path / p.name)
    h = tmp_path / "philox.cuh"
    lines = h.read_text().splitlines()
    bad_line = next(i for i, s in enumerate(lines) if "rmt_u32 hi0, lo0, hi1, lo1;" in s) + 1
    lines[bad_line - 1] = lines[bad_line - 1].replace(";", "")  # syntax error
    h.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("RMT_ENGINE_KERNEL_DIR", str(tmp_path))
    src = tmp_path / "inlined.cu"
    src.write_text(_cuda.kernel_source("sample.cu"))
    r = subprocess.run([NVCC, "-ptx", "-arch=sm_90", str(src), "-o", str(tmp_path / "x.ptx")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert re.search(rf"philox\.cuh\({bad_line + 1}|philox\.cuh\({bad_line}", r.stderr + r.stdout), r.stderr


# ------------------------------------------------------------------------------------------------
# host-compiled math vs the NumPy reference


def _run_host(compiled, lines: list[str]) -> list[str]:
    rc, log, exe = compiled["host"]
    assert rc == 0, f"host harness failed to compile:\n{log}"
    r = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split("\n")[:-1]


def _f64(hexes) -> np.ndarray:
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64).view(np.float64)


def _hex(x: float) -> str:
    return f"{np.float64(x).view(np.uint64):016x}"


@needs_nvcc
def test_host_philox_known_answers(compiled):
    lines = [f"P {k[0]:x} {k[1]:x} " + " ".join(f"{c:x}" for c in ctr) for ctr, k, _ in PHILOX_KAT]
    out = _run_host(compiled, lines)
    assert [tuple(int(w, 16) for w in line.split()) for line in out] == [e for _, _, e in PHILOX_KAT]


@needs_nvcc
def test_host_philox_words_bitwise(compiled):
    g = np.random.default_rng(1)
    ctr = g.integers(0, 2**32, size=(3000, 4), dtype=np.uint32)
    keys = g.integers(0, 2**32, size=(3000, 2), dtype=np.uint32)
    out = _run_host(compiled, [f"P {k[0]:x} {k[1]:x} " + " ".join(f"{w:x}" for w in c) for c, k in zip(ctr, keys)])
    got = np.array([[int(w, 16) for w in line.split()] for line in out], dtype=np.uint32)
    ref = np.stack([rng.philox4x32(c, k) for c, k in zip(ctr[:50], keys[:50])])
    assert np.array_equal(got[:50], ref)
    key = rng.stream_key(7, "W0", 3)  # the vectorized reference under one key, all 3000 counters
    out = _run_host(compiled, [f"P {key[0]:x} {key[1]:x} " + " ".join(f"{w:x}" for w in c) for c in ctr])
    got = np.array([[int(w, 16) for w in line.split()] for line in out], dtype=np.uint32)
    assert np.array_equal(got, rng.philox4x32(ctr, key))


def _assert_normals_close(got, ref, scale=1.0):
    if got.size == 0:
        assert ref.size == 0
        return 0
    u = ulp_distance(got, ref)
    # 4 ulp, or 1e-15 of the sample scale for values near 0 (cos/sin near a root)
    ok = (u <= 4) | (np.abs(got - ref) <= 1e-15 * abs(scale))
    assert ok.all(), f"max ulp {u.max()} at {np.argmax(u)}: {got.ravel()[np.argmax(u)]!r} vs {ref.ravel()[np.argmax(u)]!r}"
    return int(u.max())


@needs_nvcc
def test_host_box_muller(compiled):
    g = np.random.default_rng(2)
    words = g.integers(0, 2**32, size=(4000, 4), dtype=np.uint32)
    edge = np.array([[0, 0, 0, 0],  # u1 = 2^-53: the largest radius, sqrt(-2 log 2^-53) = 8.57
                     [0xFFFFFFFF, 0xFFFFFFFF, 0, 0],  # u1 = 1: exact zeros
                     [0x12345678, 0x9ABCDEF0, 0xFFFFFFFF, 0xFFFFFFFF],  # u2 just below 1
                     [0x12345678, 0x9ABCDEF0, 0x40000000, 0]],  # theta = pi/2: cos near 0
                    dtype=np.uint32)
    words = np.vstack([edge, words])
    out = _run_host(compiled, ["B " + " ".join(f"{w:x}" for w in row) for row in words])
    got = _f64(" ".join(out).split()).reshape(-1, 2)
    ref = rng.box_muller(words)
    assert got[1, 0] == 0.0 and got[1, 1] == 0.0 and np.all(np.isfinite(got))
    _assert_normals_close(got, ref)


@needs_nvcc
@pytest.mark.parametrize("row_start,row_stop,ncols,scale", [
    (0, 150, 101, 1.0),                    # odd ncols: the last pair is cut
    (2**32 - 3, 2**32 + 3, 7, 0.37),        # rows across the 32-bit boundary (counter word 2)
    (123456789, 123456889, 64, 1 / np.sqrt(50)),
    (5, 5, 3, 1.0),                         # empty block
])
def test_host_normal_rows(compiled, row_start, row_stop, ncols, scale):
    key = rng.stream_key(7, "W0", 3)
    out = _run_host(compiled, [f"N {key[0]:x} {key[1]:x} {row_start:x} {row_stop:x} {ncols:x} {_hex(scale)}"])
    got = _f64(out).reshape(row_stop - row_start, ncols)
    ref = rng.normal_rows(key, row_start, row_stop, ncols, scale)
    _assert_normals_close(got, ref, scale)


def _act_grid() -> np.ndarray:
    mag = np.geomspace(1e-300, 1e2, 1500)
    return np.concatenate([
        np.linspace(-40.0, 40.0, 8001), np.linspace(-4.0, 4.0, 8001),
        np.linspace(-0.76, -0.74, 401),  # the root of gelu'
        np.linspace(1.40, 1.43, 401), -np.linspace(1.40, 1.43, 401),  # the roots of gelu''
        mag, -mag, [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 708.0, -708.0, 745.0, -745.0, 800.0, -800.0],
    ])


def _act_scale(name: str, deriv: int, x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The magnitude the tolerance is relative to: |ref|, or the terms a formula cancels.

    - gelu' = Phi(x) + x pdf(x) has a root near -0.75: scale |Phi| + |x pdf|.
    - gelu, gelu' use ndtr; scipy's (cephes) erfc computes exp(-z^2) from a rounded z^2, so the
      REFERENCE's relative error grows like x^2 ulp on the left (measured against a long-double
      erfc: 8 ulp at x = -1.4, where glibc's is within 3.5; about 500 ulp at x = -33; glibc's and
      CUDA's erfc do not lose it): for x < 0, scale times max(4, x^2).
    """
    from scipy import special  # noqa: PLC0415

    scale = np.abs(ref)
    if name == "gelu" and deriv == 1:
        scale = np.abs(special.ndtr(x)) + np.abs(x) * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    if name == "gelu" and deriv in (0, 1):
        scale = scale * np.where(x < 0, np.maximum(4.0, x * x), 1.0)
    return scale


@pytest.fixture(scope="module")
def host_activations(compiled):
    x = _act_grid()
    lines = [f"A {i:x} {d:x} {b:016x}" for i in ACTIVATION_IDS.values() for d in range(3) for b in x.view(np.uint64)]
    lines += [f"A 9 0 {_hex(1.0)}", f"A 0 3 {_hex(1.0)}"]  # unknown id / order -> NaN
    vals = _f64(_run_host(compiled, lines))
    return x, vals[:-2].reshape(len(ACTIVATION_IDS), 3, x.size), vals[-2:]


@needs_nvcc
@pytest.mark.parametrize("name", sorted(ACTIVATION_IDS))
@pytest.mark.parametrize("deriv", [0, 1, 2])
def test_host_activations_match_reference(host_activations, name, deriv):
    acts = pytest.importorskip("rmt_engine.theory.activations", reason="NumPy reference rmt_engine.theory.activations missing")
    x, vals, _ = host_activations
    act = acts.activation(name)
    with np.errstate(all="ignore"):
        ref = np.asarray((act.phi, act.dphi, act.ddphi)[deriv](x), dtype=np.float64)
    got = vals[ACTIVATION_IDS[name], deriv]
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    fin = ~np.isnan(ref)
    err = np.abs(got[fin] - ref[fin])
    tol = 4 * EPS * _act_scale(name, deriv, x[fin], ref[fin]) + 1e-300  # + underflow of the tails
    bad = err > tol
    assert not bad.any(), (
        f"{name} phi^({deriv}): {bad.sum()} values off, worst x = {x[fin][bad][np.argmax(err[bad] / tol[bad])]!r}"
    )


@needs_nvcc
def test_host_activation_unknown_id_is_nan(host_activations):
    assert np.isnan(host_activations[2]).all()
