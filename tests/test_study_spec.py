"""Study specifications: TOML parsing, validation with key and line, config hash, bad specs.

Every bad spec goes through the real CLI (``rmt-engine run``) and must exit 2 with a message
naming the problem, and create nothing (or leave an existing store byte-for-byte untouched).
No Dask cluster is started here: validation happens before anything else.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from rmt_engine.cli import main
from rmt_engine.study import Study, StudySpecError, create_store

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
name = "tiny"
description = "a tiny study for the tests"

[study]
trials = 5
seed = 7
t = [2, 3]

[grid]
activation = ["gelu", "tanh"]
n = [20, 30]
d0 = [6]
d1 = [60, 90]

[execution]
trials_per_task = 2
workers = 2
"""


def _with(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# (id, toml text, fragment the message must contain)
BAD_SPECS = [
    ("unknown-top-level-key", "colour = 'red'\n" + GOOD, "unknown key 'colour'"),
    ("unknown-study-key", _with(GOOD, "trials = 5", "trials = 5\ntrails = 5"), "unknown key 'trails'"),
    ("unknown-grid-axis", _with(GOOD, "d0 = [6]", "d0 = [6]\nd3 = [4]"), "unknown key 'd3'"),
    ("unknown-execution-key", _with(GOOD, "workers = 2", "workers = 2\nthreads = 4"), "unknown key 'threads'"),
    ("unknown-slurm-key", GOOD + "\n[cluster.slurm]\nqeue = 'long'\n", "unknown key 'qeue'"),
    ("trials-is-a-string", _with(GOOD, "trials = 5", 'trials = "5"'), "study.trials: expected a positive integer"),
    ("trials-is-a-bool", _with(GOOD, "trials = 5", "trials = true"), "study.trials: expected a positive integer"),
    ("negative-trials", _with(GOOD, "trials = 5", "trials = -3"), "study.trials: expected a positive integer"),
    ("n-not-integer", _with(GOOD, "n = [20, 30]", "n = [20.5, 30]"), "grid.n: expected a positive integer"),
    ("empty-grid-axis", _with(GOOD, "d1 = [60, 90]", "d1 = []"), "grid.d1: empty grid axis"),
    ("missing-grid-axis", _with(GOOD, "d1 = [60, 90]\n", ""), "missing required grid axis 'd1'"),
    ("missing-grid-table", GOOD.split("[grid]")[0], "missing the [grid] table"),
    ("d1-below-n", _with(GOOD, "d1 = [60, 90]", "d1 = [10, 90]"), "d1 < n"),
    ("unknown-activation", _with(GOOD, '"tanh"]', '"relu6x"]'), "unknown activation 'relu6x'"),
    ("unknown-data-kind", _with(GOOD, "d0 = [6]", 'd0 = [6]\ndata = ["cube"]'), "unknown data kind 'cube'"),
    ("t-zero", _with(GOOD, "t = [2, 3]", "t = [0]"), "study.t: expected \"auto\", \"best\" or an integer Khatri-Rao order in [1, 1000], got 0"),
    ("bad-dtype", _with(GOOD, "t = [2, 3]", 't = [2, 3]\ndtype = "float16"'), "unknown dtype 'float16'"),
    ("zero-trials-per-task", _with(GOOD, "trials_per_task = 2", "trials_per_task = 0"),
     "execution.trials_per_task: expected a positive integer"),
    ("repeated-axis-values", _with(GOOD, "n = [20, 30]", "n = [20, 20]"), "repeated values"),
    ("file-data-without-path", _with(GOOD, "d0 = [6]", 'd0 = [6]\ndata = ["file"]'), "set study.data_path"),
    ("missing-data-file", _with(_with(GOOD, "d0 = [6]", 'd0 = [6]\ndata = ["file"]'), "seed = 7",
                                'seed = 7\ndata_path = "nope.npy"'), "does not exist"),
    ("unknown-cluster-kind", _with(GOOD, "workers = 2", 'workers = 2\ncluster = "kubernetes"'),
     "unknown cluster kind 'kubernetes'"),
    ("missing-seed", _with(GOOD, "seed = 7\n", ""), "missing required key 'seed'"),
    ("negative-seed", _with(GOOD, "seed = 7", "seed = -1"), "study.seed: expected a non-negative integer"),
    ("negative-w1", _with(GOOD, "d0 = [6]", "d0 = [6]\nw1 = [-1.0]"), "grid.w1: every value must be > 0"),
    ("grid-not-a-table", "grid = 3\n" + GOOD.split("[grid]")[0], "grid: expected a table"),
    ("toml-syntax-error", _with(GOOD, "n = [20, 30]", "n = [20, 30"), "not valid TOML"),
]


def _snapshot(path: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name,text,fragment", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_is_refused_and_creates_nothing(tmp_path, capsys, name, text, fragment):
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    store = tmp_path / "out.zarr"
    before = sorted(os.listdir(tmp_path))
    rc = main(["run", str(toml), "--store", str(store), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert fragment in err, err
    assert str(toml) in err  # the message names the file ...
    assert sorted(os.listdir(tmp_path)) == before  # ... and nothing was created (no store, no lock)


def test_at_least_15_distinct_bad_specs():
    assert len({b[0] for b in BAD_SPECS}) >= 15
    assert len({b[1] for b in BAD_SPECS}) == len(BAD_SPECS)


@pytest.mark.parametrize("old,new,line", [
    ("trials = 5", "trials = 5\ntrails = 5", 6),
    ("n = [20, 30]", "n = [20.5, 30]", 11),
    ("d1 = [60, 90]", "d1 = [10, 90]", 13),
    ("trials_per_task = 2", "trials_per_task = 0", 16),
])
def test_errors_name_the_line(old, new, line):
    with pytest.raises(StudySpecError) as e:
        Study.from_toml_text(_with(GOOD, old, new), source="s.toml")
    assert e.value.line == line
    assert str(e.value).startswith(f"s.toml:{line}: ")


def test_toml_syntax_error_names_the_line():
    # tomllib reports the line where it noticed the problem (the unclosed array of line 11)
    with pytest.raises(StudySpecError, match=r"s\.toml:1[12]: not valid TOML: Unclosed array"):
        Study.from_toml_text(_with(GOOD, "n = [20, 30]", "n = [20, 30"), source="s.toml")


def _store_cases(tmp_path):
    other = Study.from_toml_text(_with(GOOD, "seed = 7", "seed = 8"))
    existing = tmp_path / "other.zarr"
    create_store(other, existing)
    afile = tmp_path / "afile"
    afile.write_text("x")
    notzarr = tmp_path / "notzarr"
    notzarr.mkdir()
    (notzarr / "data.txt").write_text("x")
    return [
        ("parent-does-not-exist", tmp_path / "nodir" / "s.zarr", [], "does not exist"),
        ("parent-is-a-file", afile / "s.zarr", [], "is not a directory"),
        ("store-is-a-file", afile, [], "is not a zarr store"),
        ("store-is-another-directory", notzarr, [], "is not a zarr store"),
        ("store-of-another-study", existing, [], "holds another study"),
        ("resume-without-store", tmp_path / "missing.zarr", ["--resume"], "no store"),
    ]


def test_bad_store_paths_are_refused_and_left_untouched(tmp_path, capsys):
    toml = tmp_path / "good.toml"
    toml.write_text(GOOD)
    for name, store, extra, fragment in _store_cases(tmp_path):
        before = _snapshot(tmp_path)
        listing = sorted(os.listdir(tmp_path))
        rc = main(["run", str(toml), "--store", str(store), "--no-progress", *extra])
        err = capsys.readouterr().err
        assert rc == 2, (name, err)
        assert fragment in err, (name, err)
        assert sorted(os.listdir(tmp_path)) == listing, name
        assert _snapshot(tmp_path) == before, name


def test_another_study_message_lists_the_differing_keys(tmp_path):
    a = Study.from_toml_text(GOOD)
    create_store(a, tmp_path / "a.zarr")
    b = Study.from_toml_text(_with(_with(GOOD, "seed = 7", "seed = 8"), "d1 = [60, 90]", "d1 = [60, 120]"))
    with pytest.raises(Exception) as e:
        b.check_store(tmp_path / "a.zarr")
    msg = str(e.value)
    assert "seed: store has 7, study has 8" in msg
    assert "grid.d1: store has [60, 90], study has [60, 120]" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only directories")
def test_read_only_directory_is_refused(tmp_path, capsys):
    toml = tmp_path / "good.toml"
    toml.write_text(GOOD)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["run", str(toml), "--store", str(ro / "s.zarr"), "--no-progress"]) == 2
        assert "not writable" in capsys.readouterr().err
        assert not any(ro.iterdir())
    finally:
        ro.chmod(0o700)


def test_config_hash_ignores_comments_order_name_and_execution():
    a = Study.from_toml_text(GOOD)
    reordered = """# a comment
[grid]
d1 = [60, 90]   # widths
d0 = [6]
n = [20, 30]
activation = ["GeLU", "tanh"]
d2 = 1

[execution]
trials_per_task = 5
cluster = "local"

[study]
t = [2, 3]
seed = 7
trials = 5
"""
    b = Study.from_toml_text(reordered)
    assert a.config_hash() == b.config_hash()
    assert a.trials_per_task() == 2 and b.trials_per_task() == 5
    c = Study.from_toml_text(_with(GOOD, "t = [2, 3]", "t = [2]"))
    assert c.config_hash() != a.config_hash()


def test_python_constructor_equals_toml_and_to_toml_round_trips():
    a = Study.from_toml_text(GOOD)
    b = Study(grid={"activation": ["gelu", "tanh"], "n": [20, 30], "d0": [6], "d1": [60, 90]}, trials=5, seed=7,
              t=(2, 3), name="tiny", execution={"trials_per_task": 2, "workers": 2})
    assert a.config_hash() == b.config_hash()
    assert Study.from_toml_text(b.to_toml()) == b
    assert b.n_points == 8
    assert b.grid["data"] == ("sphere",) and b.grid["w1"] == (1.0,)
    with pytest.raises(StudySpecError, match="grid.n"):
        Study(grid={"activation": ["gelu"], "n": ["20"], "d0": [6], "d1": [60]}, trials=5, seed=7)


def test_d1_below_n_allowed_when_asked():
    s = Study.from_toml_text(_with(_with(GOOD, "d1 = [60, 90]", "d1 = [10, 90]"), "seed = 7",
                                   "seed = 7\nallow_d1_below_n = true"))
    assert 10 in s.grid["d1"]


def test_data_file_relative_to_the_toml_and_hashed(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 30))
    X /= np.linalg.norm(X, axis=0)
    np.save(tmp_path / "X.npy", X)
    text = _with(_with(GOOD, "d0 = [6]", 'd0 = [6]\ndata = ["file"]'), "seed = 7", 'seed = 7\ndata_path = "X.npy"')
    (tmp_path / "s.toml").write_text(text)
    s = Study.from_toml(tmp_path / "s.toml")
    assert s.data_path == str(tmp_path / "X.npy")
    h = s.config_hash()
    np.save(tmp_path / "X.npy", X[:, ::-1].copy())
    assert Study.from_toml(tmp_path / "s.toml").config_hash() != h


def test_quickstart_study_is_valid():
    s = Study.from_toml(ROOT / "studies" / "quickstart.toml")
    assert set(s.grid["activation"]) == {"gelu", "tanh", "sigmoid"}
    assert len(s.grid["n"]) == 2 and len(s.grid["d1"]) >= 3
    assert 10 <= s.trials <= 50
    assert "auto" in s.t  # every activation gets an informative lower bound (issue: the front door)
    from rmt_engine.theory.orders import informative_t

    for labels in s.points():
        assert informative_t(labels["activation"], labels["w1"], labels["n"], labels["d0"]) is not None
    assert re.fullmatch(r"[0-9a-f]{64}", s.config_hash())


def test_a_minimal_study_gives_the_trial_spec_defaults():
    from rmt_engine.montecarlo.spec import TrialSpec

    study = Study(grid={"activation": ["gelu"], "n": [10], "d0": [4], "d1": [40]}, trials=2, seed=3)
    (labels,) = list(study.points())
    assert study.trial_spec(labels) == TrialSpec(activation="gelu", n=10, d0=4, d1=40, seed=3)


@pytest.mark.parametrize("table, key, match", [
    ('minimum_jobs = 2', "minimum_jobs", "go together"),
    ('minimum_jobs = 3\nmaximum_jobs = 2', "minimum_jobs", "minimum_jobs = 3 > maximum_jobs = 2"),
    ('jobs = 1\nminimum_jobs = 1\nmaximum_jobs = 2', "minimum_jobs", "not both"),
    ('jobs = 2\njoin_timeout = -1.0', "join_timeout", "join_timeout must be > 0"),
])
def test_bad_slurm_job_counts_are_study_errors_naming_the_key(table, key, match):
    from rmt_engine.study import Study, StudySpecError

    text = ('[study]\ntrials = 2\nseed = 0\n[grid]\nactivation = ["gelu"]\nn = [10]\nd0 = [4]\nd1 = [40]\n'
            f'[execution]\ncluster = "slurm"\n[cluster.slurm]\n{table}\n')
    with pytest.raises(StudySpecError, match=match) as err:
        Study.from_toml_text(text)
    assert err.value.key == ("cluster", "slurm", key)


def test_quickstart_toml_documents_every_study_key():
    from rmt_engine.study.spec import STUDY_KEYS

    text = (ROOT / "studies" / "quickstart.toml").read_text()
    missing = [k for k in STUDY_KEYS if not re.search(rf"^#? ?{k} = ", text, re.M)]
    assert not missing, f"studies/quickstart.toml does not document [study] {missing}"
