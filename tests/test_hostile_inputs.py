"""Hostile inputs end in clear errors naming the problem (never a traceback, never a silently wrong number)."""

import io
import math
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import rmt_engine as rmt

from rmt_engine import TrainSpec, TrialSpec, register_activation, run_trial, train_trial
from rmt_engine.cli import main
from rmt_engine.montecarlo.spec import W2_RANGE
from rmt_engine.sampling.data import make_data
from rmt_engine.study import Study, StudySpecError
from rmt_engine.study.resources import trial_flops, trial_memory_bytes
from rmt_engine.theory.activations import _unregister_activation

BASE = """
name = "hostile"
[study]
trials = 2
seed = 1
{study}
[grid]
activation = ["gelu"{acts}]
n = [16]
d0 = [6]
d1 = [64, 128]
{grid}
{train}
[execution]
workers = 1
trials_per_task = 2
"""


def _toml(tmp_path, name="s.toml", study="", grid="", train="", acts=""):
    p = tmp_path / name
    p.write_text(BASE.format(study=study, grid=grid, train=train, acts=acts))
    return p


# ----------------------------------------------------------------- 8. w2 out of float64's reach


@pytest.mark.parametrize("w2", [1e-200, 1e-300])
def test_tiny_w2_is_computed_scale_free(w2):
    ref = run_trial(TrialSpec(activation="gelu", n=16, d0=6, d1=64, d2=3), 0)
    rec = run_trial(TrialSpec(activation="gelu", n=16, d0=6, d1=64, d2=3, w2=w2), 0)
    assert rec["sigma_max_V0"] == pytest.approx(w2 * ref["sigma_max_V0"], rel=1e-12)
    assert rec["eq69_ratio"] == pytest.approx(ref["eq69_ratio"], rel=1e-12)
    assert rec["k2"] == pytest.approx(ref["k2"], rel=1e-12)
    for k, v in rec.items():  # nothing that is finite and non-zero at w2 = 1 is 0 or inf at this w2
        if math.isfinite(ref[k]) and ref[k] != 0:
            assert math.isfinite(v) and v != 0, k


def test_w2_range_edges_keep_every_field_finite_and_nonzero():
    ref = run_trial(TrialSpec(activation="gelu", n=16, d0=6, d1=64, d2=3), 0)
    for w2 in W2_RANGE:
        rec = run_trial(TrialSpec(activation="gelu", n=16, d0=6, d1=64, d2=3, w2=w2), 0)
        bad = [k for k, v in rec.items() if math.isfinite(ref[k]) and ref[k] != 0 and not (math.isfinite(v) and v)]
        assert not bad, (w2, bad)


@pytest.mark.parametrize("w2", [1e-302, 1e21, 1e300, 1e308])
def test_w2_outside_its_range_is_refused_with_the_reason(w2):
    with pytest.raises(ValueError, match=r"TrialSpec\.w2 .* outside .*margin"):
        TrialSpec(activation="gelu", n=16, d0=6, d1=64, w2=w2)


@pytest.mark.parametrize("scale", ["1e-300", "1e300"])
def test_eq19_scale_out_of_range_is_refused(tmp_path, capsys, scale):
    p = _toml(tmp_path, study=f"eq19_scale = {scale}", grid='w2 = "eq19"')
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert "eq19_scale" in err and "outside" in err and "Traceback" not in err


def test_huge_w2_in_a_study_is_refused_before_running(tmp_path, capsys):
    p = _toml(tmp_path, grid="w2 = [1e308]")
    assert main(["validate", str(p)]) == 2
    assert "w2 = 1e+308 is outside" in capsys.readouterr().err


def test_tiny_w2_training_norms_do_not_underflow():
    rec = train_trial(TrialSpec(activation="gelu", n=16, d0=6, d1=64, d2=3, w2=1e-300), 0, TrainSpec(max_iters=20))
    assert math.isfinite(rec["gd_rel_change_V"]) and rec["gd_rel_change_V"] > 0


# ----------------------------------------------------------------- 9. d2 and training in the estimate


def test_d2_counts_in_memory_and_time(tmp_path, capsys):
    small, big = (TrialSpec(activation="gelu", n=16, d0=6, d1=64, d2=d2) for d2 in (1, 200_000))
    assert trial_memory_bytes(big) > 320e9  # V0 V0^T alone is 320 GB
    assert trial_flops(big) > 64 * 200_000**2  # d1 d2^2
    assert trial_memory_bytes(small) < 1e6
    p = _toml(tmp_path, grid="d2 = [200000]")
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert "over the resource limits" in err and "d2=200000" in err


def test_training_iterations_count_in_time():
    spec = TrialSpec(activation="gelu", n=16, d0=6, d1=64)
    hours = trial_flops(spec, TrainSpec(max_iters=200_000_000)) / 20e9 / 3600
    assert hours > 1.0  # measured about 2-4 h (the fixed cost of an iteration dominates at these sizes)


# ----------------------------------------------------------------- 10. probabilities of report / check


@pytest.mark.parametrize("args", [["--level", "2"], ["--level", "nan"], ["--level", "0"], ["--level", "1"]])
def test_report_level_outside_0_1_is_refused(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "out")] + args)
    assert e.value.code == 2
    assert "--level" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("opt", ["--confidence", "--min-rate"])
def test_check_probabilities_outside_0_1_are_refused(opt, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["check", str(tmp_path / "none.zarr"), "--bound", "eq67_lower_sharp", opt, "1.5"])
    assert e.value.code == 3  # a bad argument of check (2 means inconclusive)
    assert opt in capsys.readouterr().err


# ----------------------------------------------------------------- 11. user activations

def _dtanh(x):
    return 1 - np.tanh(x) ** 2


def _ddtanh(x):
    return -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)


@pytest.mark.parametrize("name, phi, dphi, match", [
    ("h_nan", lambda x: np.where(x > 3, np.nan, np.tanh(x)), _dtanh, "not finite"),
    ("h_transposed", lambda x: np.tanh(x).T, lambda x: _dtanh(x).T, "elementwise"),
    ("h_wrong_shape", lambda x: np.tanh(x).ravel()[:-1], _dtanh, "elementwise"),
    ("h_scalar", lambda x: 0.5, lambda x: np.zeros_like(x), "elementwise"),
    ("h_zero", lambda x: np.zeros_like(x), lambda x: np.zeros_like(x), "identically 0"),
])
def test_bad_user_activations_are_refused_at_registration(name, phi, dphi, match):
    try:
        with pytest.raises(ValueError, match=rf"activation '{name}'.*{match}"):
            register_activation(name, phi, dphi, _ddtanh)
    finally:
        _unregister_activation(name)


def test_a_later_failure_of_a_user_activation_names_it():
    far = 60.0
    try:
        register_activation("h_far", lambda x: np.where(np.abs(x) > far, np.nan, np.tanh(x)),
                            lambda x: np.where(np.abs(x) > far, np.nan, _dtanh(x)), _ddtanh)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ValueError, match="activation 'h_far'.*not finite"):
                run_trial(TrialSpec(activation="h_far", n=16, d0=6, d1=64, w1=100.0), 0)
    finally:
        _unregister_activation("h_far")


# ----------------------------------------------------------------- data files


def _huge_header():
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    return buf.getvalue() + b"\0" * 64


@pytest.fixture
def bad_files(tmp_path):
    with zipfile.ZipFile(tmp_path / "garbage.npz", "w") as z:
        z.writestr("X.npy", b"this is not an npy file at all")
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "huge.npy").write_bytes(_huge_header())
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        z.writestr("X.npy", _huge_header())
    return tmp_path


@pytest.mark.parametrize("fname, match", [("garbage.npz", "not a readable .npy"), ("empty.npy", "not a readable .npy"),
                                          ("huge.npy", "truncated"), ("huge.npz", "GiB")])
def test_bad_data_files_are_clear_errors(bad_files, fname, match, capsys):
    path = bad_files / fname
    with pytest.raises(ValueError, match=match):
        make_data("file", 6, 16, path=path)
    study = BASE.format(study=f'data_path = "{path}"', grid='data = ["file"]', train="", acts="")
    with pytest.raises(StudySpecError, match=match):
        Study.from_toml_text(study)
    rc = main(["trial", "--activation", "gelu", "--n", "16", "--d0", "6", "--d1", "64", "--data", "file",
               "--data-path", str(path)])
    assert rc == 2
    assert match.split()[0] in capsys.readouterr().err


# ----------------------------------------------------------------- report / show on odd cubes


@pytest.fixture(scope="module")
def d1_only_stores(tmp_path_factory):
    """A complete cube where only d1 varies, and a partial one (tanh at d1 = 128 never computed)."""
    import os

    from rmt_engine.study.tasks import TEST_FAIL_ENV

    d = tmp_path_factory.mktemp("hostile_report")
    full = Study.from_toml_text(BASE.format(study="save_spectrum = true", grid="", train="", acts=""))
    assert full.run(d / "full.zarr", workers=1, progress=False).ok
    part = Study.from_toml_text(BASE.format(study="save_spectrum = true", grid="", train="", acts=', "tanh"'))
    os.environ[TEST_FAIL_ENV] = "raise:activation=tanh,d1=128"
    try:
        part.run(d / "part.zarr", workers=1, progress=False)
    finally:
        del os.environ[TEST_FAIL_ENV]
    return d / "full.zarr", d / "part.zarr"


def test_report_on_a_cube_where_only_d1_varies(d1_only_stores, tmp_path, capsys):
    full, _ = d1_only_stores
    assert main(["report", str(full), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| d1_star | censored |" in md


def test_report_on_a_partial_cube_says_not_computed(d1_only_stores, tmp_path, capsys):
    _, part = d1_only_stores
    rc = main(["report", str(part), "--out", str(tmp_path / "r")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    md = (tmp_path / "r" / "report.md").read_text()
    assert "unknown code nan" not in md
    assert "not computed" in md.lower()
    assert "IndexError" not in md and "FAILED" not in md


@pytest.mark.parametrize("field, match", [("spectrum_n16", "spectrum"), ("done", "bookkeeping"), ("d1", "grid axis")])
def test_show_fields_that_are_not_record_fields(d1_only_stores, field, match, capsys):
    full, _ = d1_only_stores
    assert main(["show", str(full), "--fields", field]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


# ----------------------------------------------------------------- training divergence with d2 > 1


@pytest.mark.parametrize("d2", [1, 3])
def test_huge_lr_is_a_recorded_divergence_for_every_d2(d2):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = train_trial(TrialSpec(activation="gelu", n=16, d0=6, d1=64, d2=d2), 0, TrainSpec(max_iters=50, lr=1e300))
    assert rec["gd_status"] == 2.0


# --------------------------------------------------------------------------- the second hostile pass


def test_check_usage_errors_exit_3_not_the_inconclusive_2(capsys):
    from rmt_engine.cli import main

    golden = str(Path(__file__).resolve().parent / "regression" / "golden_cube")
    for argv in (["check", golden], ["check", golden, "--bound", "margin", "--delta", "nan"],
                 ["check", golden, "--bound", "margin", "--min-rate", "1.5"],
                 ["check", golden, "--bound", "eq67_lower_sharp", "--t", "-1"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 3, argv
    capsys.readouterr()


def test_api_ranges_match_the_cli():
    import rmt_engine  # noqa: F401 - the accessor
    from rmt_engine.report import analysis as A
    from rmt_engine.study.store import open_results
    from rmt_engine.testing import assert_bound_holds, check_bound

    ds = open_results(Path(__file__).resolve().parent / "regression" / "golden_cube")
    for delta in (-0.5, 1.0, float("nan"), "0.2", True):
        with pytest.raises(ValueError, match="delta"):
            assert_bound_holds(ds, "eq67_lower_sharp", delta=delta, min_rate=0.5)
    with pytest.raises(ValueError, match="delta"):
        ds.rmt.verdicts(delta=2.0)
    assert check_bound(ds, "eq67_upper_sharp", delta=2.0, min_rate=0.5).delta == 2.0  # upper bounds: delta >= 0
    for level in (1.5, float("nan"), 0.0):
        with pytest.raises(ValueError, match="level"):
            ds.rmt.threshold(level=level)
    with pytest.raises(TypeError, match="xarray.Dataset"):
        check_bound({"a": 1}, "margin")
    with pytest.raises(ValueError, match="needs the variables"):
        A.bound_verdicts(ds[["sigma_min_F"]], names=["eq67_lower_sharp"])


def test_run_trial_path_refuses_what_trialspec_refuses():
    spec = rmt.TrialSpec(activation="gelu", n=8, d0=4, d1=16)
    for d1s in ([16.7, 32], [True, 32], ["a"], [[16, 32]]):
        with pytest.raises(ValueError, match="d1s"):
            rmt.run_trial_path(spec, 0, d1s)
    with pytest.raises(ValueError, match="w2s"):
        rmt.run_trial_path(spec, 0, [16, 32], w2s=[True, 1.0])
    assert len(rmt.run_trial_path(spec, 0, np.array([16, 32]), cache={})) == 2  # NumPy integers are fine


def test_a_directory_as_data_file_is_named_as_such(tmp_path):
    from rmt_engine.sampling.data import make_data

    with pytest.raises(ValueError, match="is a directory"):
        make_data("file", 4, 8, path=str(tmp_path))


@pytest.mark.parametrize("kw, match", [
    ({"t": 2.0}, r"TrialSpec\.t must be a Khatri-Rao order .* got 2\.0 \(float\)"),
    ({"data_path": 123}, r"TrialSpec\.data_path must be a path .* got 123 \(int\)"),
    ({"data_path": "x.npy"}, r"data_path is set .* but data = 'sphere' does not read a file"),
    ({"activation": 3}, r"TrialSpec\.activation must be a name"),
])
def test_trial_spec_types_are_named_in_the_error(kw, match):
    import rmt_engine as rmt

    base = {"activation": "gelu", "n": 10, "d0": 4, "d1": 40, **kw}
    with pytest.raises(ValueError, match=match):
        rmt.TrialSpec(**base)


def test_trial_spec_names_are_trimmed():
    import rmt_engine as rmt

    s = rmt.TrialSpec(activation=" GeLU ", n=10, d0=4, d1=40, t=(" Auto ", 2))
    assert s.activation == "gelu" and s.t == ("auto", 2)
