"""report on a tiny real study; plots; the four study TOMLs load."""

from pathlib import Path

import pytest

from rmt_engine.study import Study

ROOT = Path(__file__).resolve().parents[1]
TINY = """
name = "tiny_report"
[study]
trials = 6
seed = 3
t = [2]
[grid]
activation = ["gelu", "tanh"]
n = [12, 24]
d0 = [8]
d1 = [60, 240]
[execution]
trials_per_task = 6
workers = 1
"""


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("rep")
    (d / "tiny.toml").write_text(TINY)
    s = Study.from_toml(d / "tiny.toml")
    summary = s.run(d / "tiny.zarr", workers=1, progress=False)
    assert summary.ok
    return d / "tiny.zarr"


@pytest.mark.parametrize("name", ["concentration", "khatri_rao", "width_law", "lazy_ratio", "concentration_law",
                                  "data_geometry", "data_geometry_digits", "train_width", "lazy_training"])
def test_study_tomls_are_valid(name):
    s = Study.from_toml(ROOT / "studies" / f"{name}.toml")
    assert s.n_points >= 1


def test_report_cli_writes_files(tiny_store, tmp_path):
    pytest.importorskip("matplotlib")
    from rmt_engine.cli import main

    out = tmp_path / "out"
    assert main(["report", str(tiny_store), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    for png in ("bounds_vs_width", "delta_distributions", "violations_eq67_lower_sharp", "c0_spike", "lower_bound_slack"):
        assert (out / f"{png}.png").stat().st_size > 1000, png
        assert f"({png}.png)" in md
    assert "FAILED" not in md
    assert "Violation rates" in md and "lambda_min_M0" in md and "3/2" in md
    # the deterministic equivalent beside the measurement; no stored spectra here: that figure says why
    assert "Sharp asymptotics" in md and (out / "asymptotics_sigma_min.png").stat().st_size > 1000
    assert "asymptotics_spectra: not drawn, the cube has no stored spectra" in md
    # the threshold is never reached on this tiny grid: no empty figure, and the report says why
    assert not (out / "width_threshold.png").exists()
    assert "width_threshold: not drawn" in md
    # tanh at t = 2 has c_2 = 0: its lower bound is undefined, reported as such and never as "0 violations"
    assert "undefined" in md and "c_t(w1) = 0 (parity)" in md
    viol = md.split("## Violation rates")[1].split("## ")[0]
    head = next(r for r in viol.splitlines() if r.startswith("| activation"))
    col = [c.strip() for c in head.strip("|").split("|")].index("eq67_lower_sharp")
    tanh_rows = [r for r in viol.splitlines() if r.startswith("| tanh")]
    assert tanh_rows and all(r.strip("|").split("|")[col].strip() == "undefined" for r in tanh_rows), viol


def test_report_exits_nonzero_when_a_figure_fails(tiny_store, tmp_path, monkeypatch, capsys):
    """A figure that cannot be drawn (matplotlib missing) is named, and the exit code is not 0."""
    from rmt_engine.report import plots
    from rmt_engine.cli import main

    def broken(*a, **k):
        raise ModuleNotFoundError("No module named 'matplotlib'")

    monkeypatch.setattr(plots, "plot_c0_spike", broken)
    out = tmp_path / "out"
    assert main(["report", str(tiny_store), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "c0_spike" in err and "matplotlib" in err
    assert "FAILED" in (out / "report.md").read_text()


def test_report_out_naming_a_file_is_a_clear_error(tiny_store, tmp_path, capsys):
    from rmt_engine.cli import main

    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["report", str(tiny_store), "--out", str(f)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_report_t_option_and_bad_delta(tiny_store, tmp_path, capsys):
    from rmt_engine.cli import main

    assert main(["report", str(tiny_store), "--out", str(tmp_path / "o"), "--t", "5"]) == 2
    assert "t = 5 is not in this cube" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", str(tiny_store), "--out", str(tmp_path / "o"), "--delta", "-0.1"])


def test_report_cli_bad_store(tmp_path):
    from rmt_engine.cli import main

    assert main(["report", str(tmp_path / "nope.zarr"), "--out", str(tmp_path / "o")]) == 2


def test_plots_module_does_not_import_matplotlib_at_import():
    import subprocess
    import sys

    code = "import sys, rmt_engine.report.plots, rmt_engine.report, rmt_engine.report.analysis; print('matplotlib' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_zero_bounds_and_empty_slices_give_nan_without_warnings(tiny_store):
    """tanh has c_2 = 0, so its Eq. 58 lower bound at t = 2 is 0 and it has no c0 spike."""
    import warnings

    import numpy as np

    from rmt_engine.report import analysis as A
    from rmt_engine.study.store import open_results

    ds = open_results(tiny_store)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        conc = A.concentration_summary(ds, t=2).compute()
        spike = A.c0_spike(ds).compute()
    tanh, gelu = dict(activation="tanh"), dict(activation="gelu")
    assert np.isnan(conc["lower_ratio_mean"].sel(tanh)).all()
    assert np.isnan(conc["lower_ratio_q"].sel(tanh)).all() and (conc["lower_ratio_count"].sel(tanh) == 0).all()
    assert np.isfinite(conc["lower_ratio_mean"].sel(gelu)).all()
    g = ds.sel(gelu).sel(t=2, drop=True)
    ratio = (g["sigma_min_F"] / g["eq67_lower_sharp"]).compute()
    np.testing.assert_allclose(conc["lower_ratio_mean"].sel(gelu), ratio.mean("trial"), rtol=1e-12)
    np.testing.assert_allclose(conc["lower_ratio_std"].sel(gelu), ratio.std("trial", ddof=1), rtol=1e-10)
    assert np.isnan(spike["spike_ratio_q"].sel(tanh)).all() and np.isfinite(spike["spike_ratio_q"].sel(gelu)).all()
