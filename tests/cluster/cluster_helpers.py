"""Shared by tests/test_slurm.py and tests/test_cluster_faults.py: a small study, the CLI in a
subprocess, bitwise comparison of two cubes, processes killed by PID.

The study is studies/quickstart.toml with its grid reduced (2 activations x n = 100 x 2 widths,
20 trials in tasks of 5: 16 tasks, about 3 s of compute on 2 cores), so that the reference cube
(``--cluster local``) is computed once per test session and shared by both files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "studies" / "quickstart.toml"
#: (grid points, tasks) of the reduced study
N_TASKS = 16
N_TRIALS = 80

_GRID = {
    'activation = ["gelu", "tanh", "sigmoid"]': 'activation = ["gelu", "tanh"]',
    "n = [100, 200]": "n = [100]",
    "d1 = [400, 1600, 6400, 25600]": "d1 = [400, 1600]",
    "trials_per_task = 10": "trials_per_task = 5",
}


def study_text(slurm: dict | None = None, execution: dict | None = None) -> str:
    """The reduced quickstart, with a ``[cluster.slurm]`` table from ``slurm`` and more
    ``[execution]`` keys from ``execution`` if given (neither changes the cube: not in its hash)."""
    text = QUICKSTART.read_text()
    for old, new in _GRID.items():
        assert old in text, f"studies/quickstart.toml changed: {old!r} not found (update tests/cluster/cluster_helpers.py)"
        text = text.replace(old, new)
    if execution:
        head, sep, tail = text.partition("\n[execution]")
        assert sep, "studies/quickstart.toml has no [execution] table (update tests/cluster/cluster_helpers.py)"
        first, nl, rest = tail.partition("\n")
        text = head + sep + first + nl + "".join(f"{k} = {_toml(v)}\n" for k, v in execution.items()) + rest
    if slurm:
        lines = ["", "[cluster.slurm]"]
        for k, v in slurm.items():
            lines.append(f"{k} = {_toml(v)}")
        text += "\n".join(lines) + "\n"
    return text


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_study(path: Path, slurm: dict | None = None, execution: dict | None = None) -> Path:
    path.write_text(study_text(slurm, execution))
    return path


def cli_env(**extra) -> dict:
    """The environment of a driver or worker: one BLAS thread, plain progress lines."""
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "NUMEXPR_NUM_THREADS"):
        env[k] = "1"
    for k in ("RMT_ENGINE_TEST_TASK_DELAY", "RMT_ENGINE_TEST_FAIL"):
        env.pop(k, None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def rmt_engine_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "rmt_engine.cli", *map(str, args)]


class Proc:
    """A subprocess in its own session (killed with its whole process group by PID at the end),
    its stdout+stderr collected by a thread (readable while it runs)."""

    def __init__(self, cmd, env=None, cwd=None):
        self.cmd = [str(c) for c in cmd]
        self.p = subprocess.Popen(self.cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, start_new_session=True)
        self.pid = self.p.pid
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout) -> int:
        rc = self.p.wait(timeout=timeout)
        self._t.join(timeout=5)
        return rc

    def wait_for_output(self, text: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.output:
                return True
            if self.p.poll() is not None:
                self._t.join(timeout=2)
                return text in self.output
            time.sleep(0.1)
        return False

    def signal(self, sig) -> None:
        if self.p.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the process group (the session this process leads) and reap it."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._t.join(timeout=2)


def run_cli(*args, env=None, timeout=240) -> subprocess.CompletedProcess:
    """``rmt-engine ARGS`` in a subprocess (its own session, killed on timeout)."""
    p = Proc(rmt_engine_cmd(*args), env=env or cli_env())
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError(f"rmt-engine {' '.join(map(str, args))} still running after {timeout} s:\n{p.output}") from None
    finally:
        if p.p.poll() is None:
            p.kill()
    return subprocess.CompletedProcess(p.cmd, rc, p.output, "")


def regions_done(store) -> int:
    """Regions marked done so far (0 while the store does not exist or is being created)."""
    from rmt_engine.study import store as st

    try:
        return int(np.asarray(st.read_done(store)).sum())
    except Exception:
        return 0


def wait_until(pred, timeout: float, interval: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


def assert_same_cube(a, b) -> None:
    """Every data variable and coordinate of the two cubes bitwise equal (NaN where NaN), same names."""
    import rmt_engine

    x, y = rmt_engine.open_results(a), rmt_engine.open_results(b)
    assert set(x.data_vars) == set(y.data_vars), set(x.data_vars) ^ set(y.data_vars)
    assert set(x.coords) == set(y.coords)
    for name in list(x.data_vars) + list(x.coords):
        u, v = x[name].values, y[name].values
        assert u.dtype == v.dtype and u.shape == v.shape, name
        if u.dtype.kind in "fc":
            assert np.array_equal(u, v, equal_nan=True), f"{name} differs between {a} and {b}"
        else:
            assert np.array_equal(u, v), f"{name} differs between {a} and {b}"
    assert bool(np.asarray(x["done"].values).all()) and bool(np.asarray(y["done"].values).all())


_REFERENCE: dict = {}


def reference_cube(tmp_path_factory) -> Path:
    """The reduced study's cube from ``--cluster local`` (computed once per session)."""
    if "path" not in _REFERENCE:
        d = tmp_path_factory.mktemp("reference")
        toml = write_study(d / "study.toml")
        store = d / "local.zarr"
        r = run_cli("run", toml, "--store", store, "--cluster", "local", "--no-progress")
        assert r.returncode == 0, r.stdout
        _REFERENCE["path"] = store
    return _REFERENCE["path"]
