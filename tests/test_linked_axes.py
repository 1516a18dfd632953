"""Linked grid axes ([grid.linked] -> one dimension 'case') and the derived rule w2 = "eq19"."""

import math

import numpy as np
import pytest

from rmt_engine.study import store as st
from rmt_engine.study import Study, StudySpecError

TOML = """
[study]
trials = 4
seed = 7
eq19_scale = 0.5
[grid]
activation = ["gelu"]
d1 = [48, 96]
w2 = "eq19"
[grid.linked]
d0 = [4, 6, 8]
n = [4, 9, 16]
[execution]
trials_per_task = 2
"""


@pytest.fixture(scope="module")
def linked(tmp_path_factory):
    d = tmp_path_factory.mktemp("linked")
    s = Study.from_toml_text(TOML)
    assert s.run(d / "a.zarr", workers=1, progress=False).ok
    return s, d


def test_points_follow_the_cases_and_the_rule():
    s = Study.from_toml_text(TOML)
    assert s.linked == ("n", "d0") and s.derived == {"w2": "eq19"} and s.n_points == 6
    pts = list(s.points())
    assert [(p["n"], p["d0"], p["d1"]) for p in pts] == [(4, 4, 48), (4, 4, 96), (9, 6, 48), (9, 6, 96),
                                                          (16, 8, 48), (16, 8, 96)]
    for p in pts:  # the Eq. 19 scale is held fixed as d1 varies
        assert p["w1"] * p["w2"] * math.sqrt(p["d0"] * p["d1"]) == pytest.approx(0.5, rel=1e-15)


def test_cube_layout(linked):
    s, d = linked
    ds = st.open_results(d / "a.zarr")
    assert ds["sigma_min_F"].dims == ("activation", "data", "case", "d1", "d2", "w1", "trial")
    assert ds["n"].dims == ("case",) and list(ds["n"].values) == [4, 9, 16] and list(ds["d0"].values) == [4, 6, 8]
    assert ds["w2"].dims == ("activation", "data", "case", "d1", "d2", "w1")
    np.testing.assert_allclose(ds["eq19_scale"].values, 0.5, rtol=1e-14)  # the record's own w1 w2 sqrt(d0 d1)
    assert ds["case"].attrs["long_name"].startswith("case of the linked axes")


def test_resume_after_losing_regions_is_bitwise_equal(linked, tmp_path):
    import shutil

    import zarr

    s, d = linked
    b = tmp_path / "b.zarr"
    shutil.copytree(d / "a.zarr", b)
    g = zarr.open_group(str(b), mode="r+")
    done = g["done"][...]
    done[..., 1, :, :, :, :] = False  # the middle case: as if those tasks never ran
    g["done"][...] = done
    summary = s.run(b, workers=1, progress=False, resume=True)
    assert summary.ok and summary.regions_computed == 4 and summary.regions_skipped == 8
    a_, b_ = st.open_results(d / "a.zarr"), st.open_results(b)
    for v in ("sigma_min_F", "margin", "eq58_lower_sharp_auto", "w2"):
        assert np.asarray(a_[v].values).tobytes() == np.asarray(b_[v].values).tobytes(), v


def test_linking_changes_the_config_hash():
    plain = TOML.replace('w2 = "eq19"\n', "w2 = [0.1]\n")
    assert Study.from_toml_text(TOML).config_hash() != Study.from_toml_text(plain).config_hash()
    assert Study.from_toml_text(TOML).config_hash() != Study.from_toml_text(TOML.replace("0.5", "0.25")).config_hash()


@pytest.mark.parametrize("text, match", [
    (TOML.replace("n = [4, 9, 16]", "n = [4, 9]"), "equal lengths, got d0: 3, n: 2"),
    (TOML.replace('w2 = "eq19"', 'w2 = "eq20"'), "unknown rule 'eq20' for axis 'w2'"),
    (TOML.replace('d1 = [48, 96]', 'd1 = [48, 96]\nn = [4]'), "axis 'n' is both linked"),
    (TOML.replace("n = [4, 9, 16]\n", ""), "two or more axes"),
    (TOML.replace("[grid.linked]", "[grid.linked]\nbogus = [1, 2, 3]"), "unknown key 'bogus'"),
    (TOML.replace("n = [4, 9, 16]", "n = [4, 4, 16]").replace("d0 = [4, 6, 8]", "d0 = [4, 4, 8]"), "repeats a case"),
    (TOML.replace("eq19_scale = 0.5", "eq19_scale = -1.0"), "eq19_scale = -1.0 is outside"),
    (TOML.replace("[study]", "[study]\nsave_spectrum = true"), "n cannot be a linked axis"),
    (TOML.replace('activation = ["gelu"]', 'activation = "gelu"\nd0 = "eq19"').replace(
        "d0 = [4, 6, 8]\n", "d2 = [1, 1, 1]\n"), "unknown rule 'eq19' for axis 'd0'"),
])
def test_bad_linked_tables_are_clear_errors(text, match):
    with pytest.raises(StudySpecError, match=match):
        Study.from_toml_text(text)


def test_report_fits_along_the_cases(linked, tmp_path):
    from rmt_engine.report.document import write_report

    _, d = linked
    md = write_report(d / "a.zarr", tmp_path / "r").read_text()
    assert "The paper's scaling claims, measured" in md and "d0 d1* ~ n^b" in md and "sigma_max(X) ~ (n/d0)^a" in md
    assert "| claim | prediction | measured (interval) | verdict |" in md
