"""The report is shaped by the study: only what varies, identical rows collapsed, no contradictions,
figures whose tick labels never overlap and no two of which are the same picture; the CLI's trial/show text."""

import itertools

import numpy as np
import pytest

from rmt_engine.report.format import collapse_rows, markdown_table
from rmt_engine.study import Study

SHAPE = """
name = "shape"
[study]
trials = 4
seed = 5
t = [2, "auto"]
[grid]
activation = ["gelu", "tanh"]
n = [12]
d0 = [8]
d1 = [60, 240, 12000, 20000]
w2 = [0.5, 1.0]
[execution]
trials_per_task = 4
workers = 1
"""


def test_collapse_rows_merges_only_identical_values():
    rows = [[a, w, "1.5" if a == "gelu" else "2"] for a in ("gelu", "tanh") for w in ("0.5", "1", "2")]
    rows[-1][-1] = "3"  # tanh at w2 = 2 differs: kept apart
    out = collapse_rows(rows, 2, [["gelu", "tanh"], ["0.5", "1", "2"]])
    assert ["gelu", "all 3 values", "1.5"] in out and ["tanh", "0.5, 1", "2"] in out and ["tanh", "2", "3"] in out
    lines = markdown_table(["activation", "w2"], ["x"], [r for r in rows[:3]] + [["tanh", w, "2"] for w in "abc"],
                           [["gelu", "tanh"], ["0.5", "1", "2"]])
    assert lines[0] == "| activation | w2 | x |"  # w2 is not "all" in every row: tanh's labels differ


def test_markdown_table_drops_an_axis_that_changes_nothing():
    rows = [[a, w, a + "v"] for a in ("gelu", "tanh") for w in map(str, range(8))]
    lines = markdown_table(["activation", "w2"], ["x"], rows, [["gelu", "tanh"], list(map(str, range(8)))])
    assert lines[0] == "| activation | x |" and len([ln for ln in lines if ln.startswith("| ")]) == 3
    assert "w2 (8 values)" in lines[-1]


@pytest.fixture(scope="module")
def shape_report(tmp_path_factory):
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    from rmt_engine.report import write_report

    d = tmp_path_factory.mktemp("shape")
    (d / "s.toml").write_text(SHAPE)
    assert Study.from_toml(d / "s.toml").run(d / "s.zarr", workers=1, progress=False).ok
    figs = []
    orig = matplotlib.figure.Figure.savefig

    def record(self, *a, **k):
        figs.append(self)
        return orig(self, *a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(matplotlib.figure.Figure, "savefig", record)
    try:
        path = write_report(d / "s.zarr", d / "out")
    finally:
        mp.undo()
    return path, figs


def test_report_lists_what_varies_and_says_undefined(shape_report):
    path, _ = shape_report
    md = path.read_text()
    # phi(W0 X) does not depend on w2: the Eq. 67 table has one row per (activation, d1), the w2 axis said once
    eq67 = md.split("## Eq. 67")[1].split("## Violation")[0]
    assert "Identical for every value of w2 (2 values)" in eq67
    main = eq67.split("Lower bound at")[0]
    assert len([ln for ln in main.splitlines() if ln.startswith("| gelu") or ln.startswith("| tanh")]) <= 8
    # tanh at t = 2: c_2 = 0; the table says undefined and why, never nan
    tanh = [ln for ln in main.splitlines() if ln.startswith("| tanh")]
    assert tanh and all("undefined (c_t(w1) = 0 (parity))" in ln for ln in tanh)
    assert "| nan" not in eq67
    assert "Wilson" not in md and "95% Clopper-Pearson" in md
    # no fit across different t, every prediction with its source
    assert "sigma_min(X^{*t_auto})" not in md
    if "delta1 ~ (n/d1)^a" in md:
        assert "matrix-concentration scale" in md


def test_figures_have_no_overlapping_tick_labels(shape_report):
    from rmt_engine.report.plots import visible_ticklabels

    _, figs = shape_report
    assert len(figs) >= 5
    for fig in figs:
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            for axis in (ax.xaxis, ax.yaxis):
                boxes = [t.get_window_extent(r) for t in visible_ticklabels(axis)]
                for a, b in itertools.combinations(boxes, 2):
                    assert not a.overlaps(b), (fig.get_suptitle(), ax.get_title(), [t.get_text() for t in
                                                                                     visible_ticklabels(axis)])


def test_no_two_figures_are_the_same_picture(shape_report):
    from matplotlib.image import imread

    path, _ = shape_report
    pngs = sorted(path.parent.glob("*.png"))
    assert len(pngs) >= 5
    imgs = {p.name: imread(p) for p in pngs}
    for (a, x), (b, y) in itertools.combinations(imgs.items(), 2):
        assert x.shape != y.shape or not np.array_equal(x, y), (a, b)
    # t = 2 and t_auto: one bounds figure and one eq67_lower violation figure, naming both orders
    assert "bounds_vs_width.png" in imgs and "violations_eq67_lower_sharp.png" in imgs
    assert not any(n.startswith("bounds_vs_width_t") for n in imgs)


def test_trial_fills_auto_fields_and_show_help_percent(capsys):
    from rmt_engine.cli import _trial_field_words, main
    from rmt_engine.montecarlo.fields import FIELDS

    eq, meaning = _trial_field_words("eq58_lower_sharp_auto", FIELDS)
    assert eq and meaning.endswith("(at t = t_auto)")
    eq3, m3 = _trial_field_words("eq58_lower_sharp_t3", FIELDS)
    assert eq3 == eq and m3.endswith("(at t = 3)")
    with pytest.raises(SystemExit):
        main(["show", "--help"])
    out = capsys.readouterr().out
    assert "5%/95%" in out and "5%%" not in out


def test_show_at_100_columns_never_cuts_a_number(capsys, monkeypatch):
    """Item 11: the q05 .. q95 cells wrap between numbers; nothing is cut with an ellipsis."""
    import re
    from pathlib import Path

    from rmt_engine.cli import main

    monkeypatch.setenv("COLUMNS", "100")
    golden = Path(__file__).resolve().parent / "regression" / "golden_cube"
    assert main(["show", str(golden)]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    # every number of the table is whole: mantissa, exponent and all
    for cell in re.findall(r"\d\.\d*e[-+]?$", out, flags=re.M):
        raise AssertionError(f"a number cut at the line end: {cell}")
