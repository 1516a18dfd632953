"""The ``rmt-engine`` command line: help, info, trial, validate, check, show, and the SLURM job script."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rmt_engine.study import store as st
from rmt_engine.cli import build_parser, main
from rmt_engine.montecarlo.fields import record_fields
from rmt_engine.study import Study, create_store, execute_task, make_job, plan_tasks

ROOT = Path(__file__).resolve().parents[1]

TOML = """\
name = "cli-test"
[study]
trials = 4
seed = 2
[grid]
activation = ["gelu", "sigmoid"]
n = [10]
d0 = [4]
d1 = [30, 40]
[execution]
trials_per_task = 2
"""


@pytest.mark.parametrize("sub", ["run", "validate", "check", "info", "show", "trial"])
def test_help_of_every_subcommand(sub, capsys):
    with pytest.raises(SystemExit) as e:
        main([sub, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"rmt-engine {sub}" in out


def test_run_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for opt in ("--store", "--resume", "--workers", "--cluster", "--scheduler", "--scheduler-file", "--job-script"):
        assert opt in out


def test_console_script_entry_point():
    # the module runs as a program (the console script calls the same main)
    r = subprocess.run([sys.executable, "-m", "rmt_engine.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("rmt-engine ")


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for pkg in ("numpy", "scipy", "dask", "xarray", "zarr"):
        assert pkg in info["versions"]
    assert info["backends"]["numpy"] is True
    assert isinstance(info["gpus"], list) and info["cores"] >= 1
    assert info["gram_pass"] == {"lanes": 2, "gil_free_dsyrk": True}  # SciPy's Cython BLAS signature is recognized


def test_info_table(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "GPU" in out and "cluster kinds" in out and "GIL released" in out


def test_trial_json_has_every_field(capsys):
    assert main(["trial", "--activation", "gelu", "--n", "12", "--d0", "5", "--d1", "60", "--t", "2", "3",
                 "--seed", "4", "--trial", "1", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert list(rec) == list(record_fields((2, 3)))
    assert rec["sigma_min_F"] > 0 and math.isfinite(rec["margin"])


def test_trial_table_and_bad_input(capsys):
    assert main(["trial", "--activation", "tanh", "--n", "12", "--d0", "5", "--d1", "60"]) == 0
    out = capsys.readouterr().out
    assert "sigma_min_F" in out and "Eq. 67" in out
    assert main(["trial", "--activation", "nope", "--n", "12", "--d0", "5", "--d1", "60"]) == 2
    assert "nope" in capsys.readouterr().err


def test_validate(tmp_path, capsys):
    toml = tmp_path / "s.toml"
    toml.write_text(TOML)
    assert main(["validate", str(toml), "--store", str(tmp_path / "x.zarr")]) == 0
    out = capsys.readouterr().out
    assert "OK: 4 grid points x 4 trials = 16 trials in 8 tasks" in out
    assert not (tmp_path / "x.zarr").exists()
    toml.write_text(TOML.replace("trials = 4", "trials = 0"))
    assert main(["validate", str(toml)]) == 2
    assert "study.trials" in capsys.readouterr().err


def test_show_partial_and_complete(tmp_path, capsys):
    study = Study.from_toml_text(TOML)
    path = tmp_path / "c.zarr"
    create_store(study, path)
    variables = st.layout(study.grid, study.t, study.trials, 2, False)
    tasks, _ = plan_tasks(study, 2)
    execute_task(make_job(study, path, tasks[0], variables, 2))
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "complete: 1/8 regions (12%), 2/16 trials" in out
    for t in tasks[1:]:
        execute_task(make_job(study, path, t, variables, 2))
    assert main(["show", str(path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["regions_done"] == s["regions_total"] == 8 and s["varying"] == ["activation", "d1"]
    med = s["points"][0]["stats"]["sigma_min_F"][1]
    ds = st.open_results(path)
    assert med == pytest.approx(float(np.median(ds["sigma_min_F"].isel(activation=0, d1=0).values)))
    assert main(["show", str(tmp_path / "missing.zarr")]) == 2


def test_slurm_job_script_without_submitting(tmp_path, capsys):
    pytest.importorskip("dask_jobqueue")
    toml = tmp_path / "s.toml"
    toml.write_text(TOML + '\n[cluster.slurm]\njobs = 3\nqueue = "gpu-long"\ncores = 4\nprocesses = 4\n'
                           'memory = "16GB"\nwalltime = "02:00:00"\naccount = "rmt"\n')
    assert main(["run", str(toml), "--cluster", "slurm", "--job-script"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!")
    for line in ("#SBATCH -p gpu-long", "#SBATCH -A rmt", "#SBATCH -t 02:00:00", "--nworkers 4", "--nthreads 1"):
        assert line in script, line
    assert "export OPENBLAS_NUM_THREADS=1" in script
    assert "#SBATCH --mem=15G" in script or "#SBATCH --mem=" in script


def test_readme_style_run_of_the_cli_entry(tmp_path):
    """``rmt-engine run`` as a user types it, in a fresh process, on a tiny study."""
    toml = tmp_path / "s.toml"
    toml.write_text(TOML)
    exe = Path(sys.executable).with_name("rmt-engine")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rmt_engine.cli"]
    r = subprocess.run(cmd + ["run", str(toml), "--store", str(tmp_path / "q.zarr"), "--workers", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "16 trials in" in r.stdout and "trials/s" in r.stdout
    assert st.open_results(tmp_path / "q.zarr").sizes["trial"] == 4
