"""The wheel ships the CUDA sources (top-level kernels/ -> rmt_engine/_kernels) and, installed,
``rmt_engine.backend.cuda`` finds and inlines them there.

Builds the wheel once per session with ``python -m build --wheel``: without build isolation when
hatchling is already importable (offline, well under a second), with it otherwise (needs the
package index, as CI's fresh venv has).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("philox.cuh", "activations.cuh", "sample.cu", "activations.cu", "khatri_rao.cu")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    if importlib.util.find_spec("build") is None:
        pytest.skip("the 'build' package is not installed (it is in the [test] extra)")
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out)]
    if importlib.util.find_spec("hatchling") is not None:
        cmd.append("--no-isolation")
    r = subprocess.run([*cmd, str(REPO)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"wheel build failed:\n{r.stdout}\n{r.stderr}"
    (whl,) = out.glob("rmt_engine-*.whl")
    return whl


def test_wheel_contains_the_kernel_sources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f"rmt_engine/_kernels/{f}" for f in SHIPPED if f"rmt_engine/_kernels/{f}" not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert "rmt_engine/backend/cuda.py" in names and "rmt_engine/backend/kernels.py" in names
    # every kernel file of the checkout is shipped (a new .cu/.cuh needs no packaging change)
    for p in (REPO / "kernels").iterdir():
        if p.suffix in (".cu", ".cuh"):
            assert f"rmt_engine/_kernels/{p.name}" in names, p.name


def test_wheel_contains_every_module_of_the_checkout(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    pkg = REPO / "rmt_engine"
    missing = [f"rmt_engine/{p.relative_to(pkg).as_posix()}" for p in pkg.rglob("*.py")
               if f"rmt_engine/{p.relative_to(pkg).as_posix()}" not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert {"rmt_engine/study/__init__.py", "rmt_engine/study/spec.py", "rmt_engine/study/run.py"} <= names


def test_installed_layout_finds_and_inlines_kernels(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys, rmt_engine.backend.cuda as c; from pathlib import Path\n"
        "assert Path(c.__file__).is_relative_to(Path(sys.argv[1])), c.__file__\n"
        "d = c.kernel_dir(); assert d == Path(sys.argv[1]) / 'rmt_engine' / '_kernels', d\n"
        "s = c.kernel_source('sample.cu'); assert 'rmt_philox4x32_10' in s and '#include \"' not in s\n"
        "print('ok')\n"
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    r = subprocess.run([sys.executable, "-c", code, str(site)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_installed_wheel_imports_every_subpackage_and_runs_a_trial(wheel, tmp_path):
    """The wheel alone (no checkout on the path) holds every layer and the command line runs."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    pkg = REPO / "rmt_engine"
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                     for p in pkg.rglob("*.py"))
    code = (
        "import importlib, sys\n"
        "from pathlib import Path\n"
        f"mods = {modules!r}\n"
        "for m in mods:\n"
        "    mod = importlib.import_module(m)\n"
        "    assert Path(mod.__file__).is_relative_to(Path(sys.argv[1])), mod.__file__\n"
        "from rmt_engine.cli import main\n"
        "sys.exit(main(['trial', '--activation', 'gelu', '--n', '12', '--d0', '4', '--d1', '64']))\n"
    )
    # the dependencies come from this venv's site-packages, the engine only from the extracted wheel
    import numpy  # noqa: PLC0415

    deps = str(Path(numpy.__file__).resolve().parents[1])
    env = {"PYTHONPATH": f"{site}:{deps}", "PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1", "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, "-c", code, str(site)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "sigma_min_F" in r.stdout
