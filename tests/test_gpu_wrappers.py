"""``rmt_engine.backend.kernels`` plumbing checked on the CPU with a fake ``cupy`` (no GPU needed).

What a CPU can still catch before the first GPU session: each wrapper passes its kernel the
right NUMBER, ORDER and C TYPES of arguments (a Python int where the kernel takes ``int`` or
``unsigned long long`` would be read as garbage by the device), C-contiguous buffers of the right
dtype, and sane launch shapes; the in-place / copy semantics; and the GPU test module itself
runs (no typos waiting for the GPU). The fake ``cupy`` is NumPy with a ``RawModule`` whose
kernels check their arguments against the ``extern "C"`` signatures parsed from the inlined
source and then emulate the kernel with the NumPy reference. Agreement of the real kernels with
the references is tests/test_kernels.py (host-compiled) and tests/test_gpu_kernels.py (device).
"""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from rmt_engine.backend import cuda as _cuda
from rmt_engine.sampling import rng

HERE = Path(__file__).resolve().parent

_C_TYPES = {  # C parameter type -> ("ptr", dtype) or ("scalar", numpy scalar type)
    "double*": ("ptr", np.float64), "const double*": ("ptr", np.float64),
    "unsigned int*": ("ptr", np.uint32), "const unsigned int*": ("ptr", np.uint32),
    "unsigned int": ("scalar", np.uint32), "unsigned long long": ("scalar", np.uint64),
    "long long": ("scalar", np.int64), "int": ("scalar", np.int32), "double": ("scalar", np.float64),
}


def kernel_signatures(source: str) -> dict[str, list[tuple[str, str]]]:
    """``{kernel: [(C type, name), ...]}`` of every ``extern "C" __global__`` function."""
    sigs = {}
    for m in re.finditer(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', source):
        params = []
        for p in m.group(2).split(","):
            p = re.sub(r"\s+", " ", p.replace("__restrict__", "")).strip()
            pm = re.match(r"(.*?)\s*(\w+)$", p)
            ctype = pm.group(1).replace(" *", "*").strip()
            params.append((ctype, pm.group(2)))
        sigs[m.group(1)] = params
    return sigs


class FakeArray(np.ndarray):
    """A NumPy array that ``rmt_engine.backend.xp.is_cupy_array`` takes for a CuPy one."""

    def get(self):
        """CuPy's device-to-host copy."""
        return np.asarray(self).view(np.ndarray).copy()


FakeArray.__module__ = "cupy"


def _fake(a):
    return a.view(FakeArray) if isinstance(a, np.ndarray) else a


def _emulate(name, a):
    """What each kernel does, in NumPy (arguments as the kernel receives them)."""
    if name == "rmt_normal_rows":
        out, k0, k1, r0, nrows, ncols, scale = a
        key = np.array([k0, k1], dtype=np.uint32)
        out[...] = rng.normal_rows(key, int(r0), int(r0) + int(nrows), int(ncols), float(scale))
    elif name == "rmt_philox_words":
        ctr, words, n, k0, k1 = a
        words.reshape(-1)[: 4 * n] = rng.philox4x32(ctr.reshape(-1)[: 4 * n].reshape(-1, 4),
                                                    np.array([k0, k1], np.uint32)).reshape(-1)
    elif name == "rmt_box_muller":
        words, out, n = a
        out.reshape(-1)[: 2 * n] = rng.box_muller(words.reshape(-1)[: 4 * n].reshape(-1, 4)).reshape(-1)
    elif name in ("rmt_activation_inplace", "rmt_activation_all"):
        from rmt_engine.theory.activations import activation  # noqa: PLC0415
        from rmt_engine.backend.kernels import ACTIVATION_IDS  # noqa: PLC0415

        ids = {v: k for k, v in ACTIVATION_IDS.items()}
        if name == "rmt_activation_inplace":
            x, n, act, deriv = a
            funcs = {int(deriv): x}
        else:
            x, d1, d2, n, act = a
            funcs = {1: d1, 2: d2, 0: x}  # x last: the kernel reads it first
        act = activation(ids[int(act)])
        v = np.asarray(x).reshape(-1)[:n].copy()
        for d, dst in funcs.items():
            dst.reshape(-1)[:n] = (act.phi, act.dphi, act.ddphi)[d](v)
    elif name == "rmt_khatri_rao":
        X, out, d0, n, t, rows = a
        Xm = np.asarray(X).reshape(int(d0), int(n))
        K = np.ones((1, int(n)))
        for _ in range(int(t)):
            K = np.einsum("in,jn->ijn", K, Xm).reshape(-1, int(n))
        out.reshape(int(rows), int(n))[...] = K
    elif name == "rmt_hadamard_power":
        G, out, n, t = a
        out.reshape(-1)[:n] = np.asarray(G).reshape(-1)[:n] ** int(t)
    else:  # pragma: no cover
        raise AssertionError(f"no emulation for kernel {name}")


class FakeFunction:
    def __init__(self, name, params, log):
        self.name, self.params, self.log = name, params, log

    def __call__(self, grid, block, args):
        assert isinstance(grid, tuple) and isinstance(block, tuple), "grid and block must be tuples"
        assert all(isinstance(g, int) and 1 <= g < 2**31 for g in grid), grid
        assert all(isinstance(b, int) and 1 <= b <= 1024 for b in block), block
        assert len(args) == len(self.params), f"{self.name}: {len(args)} args for {len(self.params)} parameters"
        for arg, (ctype, pname) in zip(args, self.params):
            kind, dt = _C_TYPES[ctype]
            if kind == "ptr":
                assert isinstance(arg, FakeArray), f"{self.name}({pname}): expected a device array, got {type(arg)}"
                assert arg.dtype == dt, f"{self.name}({pname}): {ctype} needs {np.dtype(dt)}, got {arg.dtype}"
                assert arg.flags.c_contiguous, f"{self.name}({pname}): buffer not C-contiguous"
            else:
                assert type(arg) is dt, f"{self.name}({pname}): {ctype} needs {dt.__name__}, got {type(arg).__name__}"
        self.log.append(self.name)
        _emulate(self.name, args)


class _FakeCupyModule(types.ModuleType):
    """Anything not defined explicitly falls back to NumPy (functions return FakeArray)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        f = getattr(np, name)
        if isinstance(f, (types.FunctionType, types.BuiltinFunctionType, np.ufunc)):
            return _wrap(f)
        return f


def _wrap(f):
    def g(*a, **k):
        out = f(*a, **k)
        return tuple(_fake(o) for o in out) if isinstance(out, tuple) else _fake(out)
    return g


def make_fake_cupy(log=None) -> types.ModuleType:
    """A ``cupy`` stand-in: NumPy functions returning FakeArray, a checking RawModule, one device."""
    log = [] if log is None else log
    mod = _FakeCupyModule("cupy")
    mod.__version__ = "0+fake"

    # like CuPy: a device array that needs no conversion is returned itself, not a new view
    def asarray(a, dtype=None):
        if isinstance(a, FakeArray) and (dtype is None or a.dtype == np.dtype(dtype)):
            return a
        return _fake(np.array(a, dtype=dtype))

    def ascontiguousarray(a, dtype=None):
        a = asarray(a, dtype)
        return a if a.flags.c_contiguous else _fake(np.ascontiguousarray(a))

    mod.asarray, mod.ascontiguousarray = asarray, ascontiguousarray
    mod.ndarray = FakeArray
    mod.asnumpy = lambda a: np.array(a).view(np.ndarray)
    mod.linalg = types.SimpleNamespace(eigvalsh=_wrap(np.linalg.eigvalsh), eigh=_wrap(np.linalg.eigh),
                                       svd=_wrap(np.linalg.svd), norm=_wrap(np.linalg.norm))

    class _Gen:
        def __init__(self, seed=None):
            self.g = np.random.default_rng(seed)

        def __getattr__(self, name):
            return _wrap(getattr(self.g, name))

    mod.random = types.SimpleNamespace(default_rng=_Gen)

    class _Pool:
        def free_all_blocks(self):
            return None

        def total_bytes(self):
            return 0

        def used_bytes(self):
            return 0

    mod.get_default_memory_pool = _Pool

    class RawModule:
        def __init__(self, code, options=()):
            assert not re.search(r'^\s*#\s*include\s*"', code, re.MULTILINE), "headers must be inlined"
            self.sigs = kernel_signatures(code)

        def compile(self):
            return None

        def get_function(self, name):
            assert name in self.sigs, f"no extern \"C\" kernel {name} in the module"
            return FakeFunction(name, self.sigs[name], log)

    class Device:
        def __init__(self, i=0):
            self.id = i

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def synchronize(self):
            return None

    mod.RawModule = RawModule
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1, memGetInfo=lambda: (2**34, 2**35), runtimeGetVersion=lambda: 0,
        driverGetVersion=lambda: 0,
        getDeviceProperties=lambda i: {"name": b"fake CPU device", "major": 0, "minor": 0, "multiProcessorCount": 1})
    mod.cuda = types.SimpleNamespace(Device=Device, runtime=runtime)
    mod.log = log
    return mod


def install_fake_cupy(modules: dict) -> types.ModuleType:
    """Put a fake ``cupy`` (and ``cupyx.scipy.special`` = SciPy's) into ``modules`` (sys.modules)."""
    import scipy.special  # noqa: PLC0415

    fake = make_fake_cupy()
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy.special = scipy.special
    modules.update({"cupy": fake, "cupyx": cupyx, "cupyx.scipy": cupyx.scipy, "cupyx.scipy.special": scipy.special})
    return fake


@pytest.fixture
def fake_cupy(monkeypatch):
    from rmt_engine.backend import xp as _backend

    fake = make_fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    _backend._cupy_or_none.cache_clear()
    _cuda.clear_cache()
    yield fake
    _backend._cupy_or_none.cache_clear()
    _cuda.clear_cache()


def test_signature_parser_sees_every_kernel():
    sigs = {}
    for f in _cuda.KERNEL_FILES:
        sigs.update(kernel_signatures(_cuda.kernel_source(f)))
    assert set(sigs) == {"rmt_normal_rows", "rmt_philox_words", "rmt_box_muller", "rmt_activation_inplace",
                         "rmt_activation_all", "rmt_khatri_rao", "rmt_hadamard_power"}
    for name, params in sigs.items():
        for ctype, pname in params:
            assert ctype in _C_TYPES, f"{name}({pname}): C type {ctype!r} unknown to this test; add it"


def test_wrappers_pass_typed_arguments(fake_cupy):
    from rmt_engine.backend import kernels as gpu

    key = rng.stream_key(1, "W0", 2)
    z = gpu.normal_rows_gpu(key, 2**32 - 1, 2**32 + 2, 5, 0.5)
    assert isinstance(z, FakeArray) and z.shape == (3, 5)
    assert np.array_equal(np.asarray(z), rng.normal_rows(key, 2**32 - 1, 2**32 + 2, 5, 0.5))
    assert gpu.normal_rows_gpu(key, np.int64(4), np.int64(4), np.int64(3)).shape == (0, 3)
    w = gpu.philox_words_gpu(np.zeros((2, 3, 4), np.uint32), [0, 0])
    assert w.shape == (2, 3, 4) and w.dtype == np.uint32 and int(w[0, 0, 0]) == 0x6627E8D5
    assert gpu.box_muller_gpu(np.zeros((3, 4), np.uint32)).shape == (3, 2)
    x = fake_cupy.asarray(np.linspace(-3, 3, 12).reshape(3, 4))
    y = gpu.apply_activation_gpu("gelu", x, 1)
    assert y is not x and not np.array_equal(np.asarray(y), np.asarray(x))
    assert gpu.apply_activation_gpu("tanh", x, out=x) is x
    phi, d1, d2 = gpu.activation_all_gpu("erf", x)
    assert phi.shape == d1.shape == d2.shape == (3, 4)
    K = gpu.khatri_rao_gpu(fake_cupy.asarray(np.arange(6.0).reshape(2, 3)), 2)
    assert K.shape == (4, 3)
    G = fake_cupy.asarray(np.linspace(-1, 1, 9).reshape(3, 3))
    assert gpu.hadamard_power_gpu(G, 3, out=G) is G
    assert set(fake_cupy.log) == {"rmt_normal_rows", "rmt_philox_words", "rmt_box_muller", "rmt_activation_inplace",
                                  "rmt_activation_all", "rmt_khatri_rao", "rmt_hadamard_power"}


def test_wrapper_argument_errors(fake_cupy):
    from rmt_engine.backend import kernels as gpu

    with pytest.raises(ValueError, match="Philox key words must be in"):
        gpu.normal_rows_gpu(np.array([-1, 0]), 0, 1, 1)
    with pytest.raises(ValueError, match="derivative must be 0, 1 or 2"):
        gpu.apply_activation_gpu("gelu", np.zeros(3), 3)
    with pytest.raises(TypeError, match="real floating dtype"):
        gpu.apply_activation_gpu("gelu", fake_cupy.asarray(np.zeros(3, np.int64)))
    with pytest.raises(ValueError, match="Khatri-Rao order t must be an integer >= 0"):
        gpu.khatri_rao_gpu(fake_cupy.asarray(np.zeros((2, 2))), -1)
    with pytest.raises(ValueError, match="trailing axis of 4"):
        gpu.philox_words_gpu(np.zeros((2, 3), np.uint32), [0, 0])


def test_gpu_test_module_runs_on_the_fake():
    """tests/test_gpu_kernels.py itself runs end to end (emulated kernels): no typos await the GPU."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_gpu_wrappers as w;"
        "w.install_fake_cupy(sys.modules); import pytest;"
        "sys.exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider', '-p', 'no:randomly', '-k', 'not statistics', sys.argv[2]]))"
    )
    r = subprocess.run([sys.executable, "-c", code, str(HERE), str(HERE / "test_gpu_kernels.py")],
                       capture_output=True, text=True, timeout=300, cwd=HERE.parent)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "skipped" not in r.stdout.splitlines()[-1], r.stdout[-2000:]


def test_the_fake_rejects_mistyped_arguments(fake_cupy):
    """The checker itself: a Python int for ``unsigned int`` or a float32 buffer must be refused."""
    fn = fake_cupy.RawModule(_cuda.kernel_source("sample.cu")).get_function("rmt_normal_rows")
    out = fake_cupy.empty((2, 3), dtype=np.float64)
    good = (out, np.uint32(1), np.uint32(2), np.uint64(0), np.int64(2), np.int64(3), np.float64(1.0))
    fn((1,), (32,), good)
    with pytest.raises(AssertionError, match=r"k0\): unsigned int needs uint32, got int"):
        fn((1,), (32,), (out, 1, *good[2:]))
    with pytest.raises(AssertionError, match="needs float64, got float32"):
        fn((1,), (32,), (fake_cupy.empty((2, 3), dtype=np.float32), *good[1:]))
    with pytest.raises(AssertionError, match="6 args for 7 parameters"):
        fn((1,), (32,), good[:-1])


def test_gpu_check_script_runs_on_the_fake(tmp_path):
    """studies/gpu_check.py --tiny with the fake cupy: its own code paths run and report (no GPU figures)."""
    import json  # noqa: PLC0415

    out = tmp_path / "check.json"
    code = (
        "import sys, runpy; sys.path.insert(0, sys.argv[1]); import test_gpu_wrappers as w;"
        "w.install_fake_cupy(sys.modules); script = sys.argv[2];"
        "sys.argv = [script, '--tiny', '--skip', 'pytest', '--json', sys.argv[3]];"
        "runpy.run_path(script, run_name='__main__')"
    )
    r = subprocess.run([sys.executable, "-c", code, str(HERE), str(HERE.parent / "studies" / "gpu_check.py"), str(out)],
                       capture_output=True, text=True, timeout=120, cwd=HERE.parent)
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    # sections that only need CuPy's API (and the project's gpu/_cuda/gram/spectra modules)
    # (trials and full also run the lead's trial code on the fake; reported, not asserted here)
    for name in ("env", "compile", "sampling", "gemm", "accumulate", "eigvalsh", "memory"):
        assert res[name]["status"] == "ok", (name, res[name], r.stdout[-3000:])
    assert res["pytest"]["status"] == "skipped"


def test_accumulate_and_run_trial_on_the_fake_match_numpy(fake_cupy):
    """The CuPy branch of the Gram pass (one lane, kernels for sampling and phi) against NumPy's two lanes."""
    from rmt_engine import TrialSpec, run_trial
    from rmt_engine.sampling.data import make_data
    from rmt_engine.montecarlo.gram import accumulate

    X = make_data("sphere", 6, 40, seed=2)
    kW, kV = rng.stream_key(4, "W0", 3), rng.stream_key(4, "V0", 3)
    ref = accumulate(X, "gelu", 301, w1=1.2, key_W=kW, d2=2, w2=0.7, key_V=kV, block_rows=64)
    fake = accumulate(fake_cupy.asarray(X), "gelu", 301, w1=1.2, key_W=kW, d2=2, w2=0.7, key_V=kV, block_rows=64)
    assert isinstance(fake.M0, FakeArray)
    assert "rmt_normal_rows" in fake_cupy.log and "rmt_activation_inplace" in fake_cupy.log
    for name in ("M0", "VF", "VVt"):
        np.testing.assert_allclose(np.asarray(getattr(fake, name)), getattr(ref, name), rtol=1e-12,
                                   atol=1e-12 * np.abs(getattr(ref, name)).max())
    assert fake.max_row_norm_W0 == ref.max_row_norm_W0 and fake.max_col_norm_V0 == ref.max_col_norm_V0
    spec = TrialSpec(activation="tanh", n=30, d0=5, d1=200, d2=2, t=(2, 3))
    on_cpu = run_trial(spec, 1)
    fake_cupy.log.clear()
    on_fake = run_trial(spec.replace(backend="cupy"), 1)
    assert "rmt_normal_rows" in fake_cupy.log and "rmt_activation_inplace" in fake_cupy.log  # it ran the GPU path
    for k, v in on_cpu.items():
        assert on_fake[k] == pytest.approx(v, rel=1e-9, abs=1e-12, nan_ok=True), k
