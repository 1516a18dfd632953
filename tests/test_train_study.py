"""Studies with a [train] table: the cube holds GD next to the bounds, bitwise equal on 1 and 2 workers."""

import numpy as np
import pytest

from rmt_engine.study.store import open_results
from rmt_engine.study import Study, StudySpecError
from rmt_engine.montecarlo.train import TRAIN_FIELDS, TrainSpec, curve_iterations, train_trial

TOML = """
name = "tiny_train"
[study]
trials = 4
seed = 11
save_spectrum = true
[grid]
activation = ["gelu", "tanh"]
n = [8]
d0 = [4]
d1 = [16, 64]
w2 = [0.1]
[train]
max_iters = 300
tol = 1e-4
[execution]
trials_per_task = 2
"""


@pytest.fixture(scope="module")
def cubes(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    (d / "s.toml").write_text(TOML)
    s = Study.from_toml(d / "s.toml")
    assert s.train == TrainSpec(max_iters=300, tol=1e-4)
    out = {}
    for w in (1, 2):
        summary = s.run(d / f"w{w}.zarr", workers=w, progress=False)
        assert summary.ok
        out[w] = open_results(d / f"w{w}.zarr").load()
    return s, out


def test_train_cube_layout_and_values(cubes):
    s, out = cubes
    ds = out[1]
    for k in TRAIN_FIELDS:
        assert ds[k].dims == ("activation", "data", "n", "d0", "d1", "d2", "w1", "w2", "trial"), k
    assert list(ds["iteration"].values) == list(curve_iterations(s.train))
    assert ds["gd_loss"].dims[-1] == "iteration"
    assert np.all(ds["gd_loss"].isel(iteration=0).values == 1.0)  # h_0 / h_0
    # the cube holds exactly what train_trial returns for the same (spec, trial)
    labels = next(iter(s.points()))
    rec = train_trial(s.trial_spec(labels), 3, s.train)
    sel = ds.sel(activation=labels["activation"], d1=labels["d1"]).squeeze().sel(trial=3)
    for k in TRAIN_FIELDS:
        assert float(sel[k]) == rec[k] or (np.isnan(rec[k]) and np.isnan(float(sel[k]))), k
    assert ds.attrs["train"]["max_iters"] == 300


def test_train_cubes_bitwise_equal_on_one_and_two_workers(cubes):
    _, out = cubes
    a, b = out[1], out[2]
    for v in list(TRAIN_FIELDS) + ["gd_loss", "sigma_min_F"]:
        x, y = np.asarray(a[v].values), np.asarray(b[v].values)
        assert x.tobytes() == y.tobytes(), v


def test_train_table_errors_are_clear(tmp_path):
    bad = {"max_iters = 300": "max_iters = 0", "tol = 1e-4": "tol = -1.0"}
    for old, new in bad.items():
        (tmp_path / "b.toml").write_text(TOML.replace(old, new))
        with pytest.raises(StudySpecError, match=r"train\.(max_iters|tol)"):
            Study.from_toml(tmp_path / "b.toml")
    (tmp_path / "b.toml").write_text(TOML.replace("tol = 1e-4", "tol = 1e-4\nlr = 0.0"))
    with pytest.raises(StudySpecError, match="lr must be"):
        Study.from_toml(tmp_path / "b.toml")
    (tmp_path / "b.toml").write_text(TOML.replace("tol = 1e-4", "tol = 1e-4\nsteps = 3"))
    with pytest.raises(StudySpecError, match="unknown TrainSpec key"):
        Study.from_toml(tmp_path / "b.toml")
    (tmp_path / "b.toml").write_text(TOML.replace("d1 = [16, 64]", "d1 = [4, 64]").replace(
        "[study]", "[study]\nallow_d1_below_n = true"))
    with pytest.raises(StudySpecError, match="with \\[train\\] needs d1 >= n"):
        Study.from_toml(tmp_path / "b.toml")


def test_train_changes_the_config_hash(tmp_path):
    (tmp_path / "a.toml").write_text(TOML)
    (tmp_path / "b.toml").write_text(TOML.replace("max_iters = 300", "max_iters = 301"))
    (tmp_path / "c.toml").write_text(TOML.split("[train]")[0] + "[execution]\ntrials_per_task = 2\n")
    hashes = {Study.from_toml(tmp_path / f"{k}.toml").config_hash() for k in "abc"}
    assert len(hashes) == 3
