"""The overparameterization ladder's report: its fits, headline figure and claims table, from ``ladder.json``.

``studies/ladder.py`` measures, per activation and case (n, d0) on the lines n = d0^2/4 (t = 2) and
n = d0^3/64 (t = 3), the width thresholds d1* of five events (``EVENTS``: the Eq. 9 margin, CK and
NTK concentration, gradient descent with the NTK step and with Eq. 13's) from two sources
(``de``: the deterministic equivalent, ``mc``: Monte Carlo with width paths and data draws), and
writes them to ``ladder.json`` = ``{"thresholds": [{"activation", "n", "d0", "t", "event", "source",
"d1_star", "lo", "hi", ...}], "fits": [...], ...}``. This module turns them into what a reader needs:

- ``fits(thresholds)``: ``d0 d1* ~ n^b`` per (activation, event, source, t) and window
  (``FIT_WINDOWS``), least squares on logs with a Student-t 95% interval;
- ``ladder_figure``: d0 d1* against n, one panel per activation and t, deterministic curves, Monte
  Carlo points with their intervals, reference slopes 1 and 3/2;
- ``claims_table``: one row per fit, "claim | prediction | measured (interval) | verdict | power";
- ``write_ladder_report(path, out)``: ``report.md`` and ``ladder.png`` (``rmt-engine report
  LADDER_DIR --out DIR`` calls it when the path holds a ``ladder.json``).

Rule: reads a ladder.json and nothing else (no cube, no Monte Carlo); the fits are recomputed from
the thresholds, never taken from the file, by ``scaling.fit_scaling`` (the report's one power-law fit).
Imports ``scaling`` of this folder, and matplotlib for the figure.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from . import scaling as S

LADDER_FILE = "ladder.json"
EVENTS = ("margin", "ck", "ntk", "gd", "gd_eq13")
#: What each event's threshold is (the claims table's words).
EVENT_WORDS = {
    "margin": "the paper's sufficient width (Eq. 9 margin > 1, C = 1)",
    "ck": "conjugate-kernel concentration (delta1 <= 1/2)",
    "ntk": "NTK concentration (delta_ntk <= 1/2)",
    "gd": "GD reaches 1e-4 h0 (NTK step, budget 4x linearized)",
    "gd_eq13": "GD reaches 1e-4 h0 with Eq. 13's step (fixed budget)",
}
SOURCE_WORDS = {"de": "deterministic equivalent", "mc": "Monte Carlo"}
REQUIRED_KEYS = ("activation", "n", "d0", "t", "event", "source", "d1_star", "lo", "hi")


class LadderError(ValueError):
    """A ladder.json that is not one (names the file and what is wrong)."""


#: The fits: over every case of a line, and over its large-n end only (the local slope rises with n
#: before the asymptotic regime: the audit saw gelu's 1.29 -> 1.54): ``(name, smallest n)``.
FIT_WINDOWS = (("all n", 0), ("n >= 256", 256))


def fits(thresholds) -> list[dict]:
    """``d0 d1* ~ n^b`` per (activation, event, source, t) and window (``FIT_WINDOWS``), at least 3 points:
    ``scaling.fit_scaling`` unweighted (least squares on logs, a Student-t 95% interval; the points' own
    intervals enter the figure, not the weights: the de "intervals" are ranges over data draws);
    verdicts against 1 and 3/2 say ``consistent`` only when the value lies inside the interval."""
    import xarray as xr  # noqa: PLC0415

    out = []
    keys = sorted({(r["activation"], r["event"], r["source"], r["t"]) for r in thresholds})
    for act, ev, src, t in keys:
        for window, n_from in FIT_WINDOWS:
            rows = [r for r in thresholds if (r["activation"], r["event"], r["source"], r["t"]) == (act, ev, src, t)
                    and np.isfinite(r["d1_star"]) and r["n"] >= n_from]
            if len(rows) < 3:
                continue
            n = np.array([r["n"] for r in rows], float)
            d1 = xr.DataArray([r["d1_star"] for r in rows], dims="case",
                              coords={"n": ("case", n), "d0": ("case", [float(r["d0"]) for r in rows])})
            f = S.fit_scaling(d1, "n", y_factor="d0")
            b, lo, hi = (float(f[k]) for k in ("exponent", "ci_lo", "ci_hi"))
            half = hi - b
            out.append({"activation": act, "event": ev, "source": src, "t": t, "window": window, "b": b,
                        "lo": lo, "hi": hi, "n_min": float(n.min()), "n_max": float(n.max()),
                        "points": len(rows), "verdict_1": _verdict(b, half, 1.0), "verdict_3_2": _verdict(b, half, 1.5)})
    return out


def _verdict(b, half, pred):
    if not math.isfinite(half):
        return "no interval (2 points)"
    return "consistent" if abs(b - pred) <= half else ("steeper" if b > pred else "shallower")


def ladder_figure(thresholds, fits_, path):
    """The headline figure: d0 d1* against n (log-log) per activation, the deterministic curves, the Monte
    Carlo points with their intervals, reference slopes 1 and 3/2; one legend below the panels."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import NullFormatter  # noqa: PLC0415

    acts = sorted({r["activation"] for r in thresholds})
    ts = sorted({r["t"] for r in thresholds})
    fig, axes = plt.subplots(len(ts), len(acts), figsize=(4.6 * len(acts), 4.2 * len(ts) + 1.2), squeeze=False)
    line = {2: "n = d0^2/4", 3: "n = d0^3/64"}
    colors = {"margin": "C3", "ck": "C0", "ntk": "C2", "gd": "C1", "gd_eq13": "C4"}
    labels = {"margin": "Eq. 9 margin > 1 (the paper's sufficient width)", "ck": "CK concentration: delta1 <= 1/2",
              "ntk": "NTK concentration: delta_ntk <= 1/2",
              "gd": "GD to 1e-4 h0, NTK step, 4x linearized budget",
              "gd_eq13": "GD to 1e-4 h0, Eq. 13's step, fixed budget"}
    shift = {"margin": 1.0, "ck": 1 / 1.06, "ntk": 1.06, "gd": 1 / 1.12, "gd_eq13": 1.12}  # side by side
    handles = {}
    panels = [(axes[i, j], act, t) for i, t in enumerate(ts) for j, act in enumerate(acts)]
    for ax, act, t in panels:
        mine = [r for r in thresholds if r["activation"] == act and r["t"] == t]
        if not mine:
            ax.set_axis_off()
            continue
        ns = sorted({r["n"] for r in mine})
        for ev in EVENTS:
            de = sorted((r for r in mine if r["event"] == ev and r["source"] == "de" and np.isfinite(r["d1_star"])),
                        key=lambda r: r["n"])
            mc = [r for r in mine if r["event"] == ev and r["source"] == "mc" and np.isfinite(r["d1_star"])
                  and np.isfinite(r["lo"]) and not r.get("upper_bound")]
            ub = [r for r in mine if r["event"] == ev and r["source"] == "mc" and r.get("upper_bound")]
            if ub:  # the median trial converged at the first width: d1* is at most that (an upper bound)
                h = ax.plot([r["n"] * shift[ev] for r in ub], [r["d0"] * r["d1_star"] for r in ub], "v",
                            color=colors[ev], ms=7, mfc="white")[0]
                handles.setdefault(labels[ev] + " (v: at most: the first decided width)", h)
            if de:
                (h,) = ax.plot([r["n"] for r in de], [r["d0"] * r["d1_star"] for r in de], "-", color=colors[ev], lw=1.5)
                handles[labels[ev]] = h
            if mc:
                x = np.array([r["n"] for r in mc], float) * shift[ev]
                y = np.array([r["d0"] * r["d1_star"] for r in mc])
                lo = np.array([r["d0"] * r["lo"] for r in mc])
                hi = np.array([r["d0"] * r["hi"] for r in mc])
                hi = np.where(np.isfinite(hi), hi, y * 1.5)  # an open upper end drawn as a short bar
                h = ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="os^Dv"[EVENTS.index(ev)], color=colors[ev], ms=5,
                                capsize=3, mfc="white" if ev == "ntk" else colors[ev])
                handles.setdefault(labels[ev], h)
        ck = sorted((r for r in mine if r["event"] == "ck" and r["source"] == "de" and np.isfinite(r["d1_star"])),
                    key=lambda r: r["n"])
        if ck:
            n0, y0 = ck[0]["n"], ck[0]["d0"] * ck[0]["d1_star"]
            xs = np.array([ns[0], ns[-1]], float)
            (h1,) = ax.plot(xs, y0 * (xs / n0) ** 1.0, "k:", lw=1)
            (h2,) = ax.plot(xs, y0 * (xs / n0) ** 1.5, "k--", lw=1)
            handles["slope 1 (parameter count d0 d1 ~ n)"] = h1
            handles["slope 3/2 (the paper: d0 d1 ~ n^{3/2})"] = h2
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = ns if len(ns) <= 6 else ns[::2] + ([ns[-1]] if len(ns) % 2 == 0 else [])
        ax.set_xticks(ticks, [str(v) for v in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("n (samples); d0 = " + ("2 sqrt(n)" if t == 2 else "4 n^(1/3)"))
        ax.set_ylabel("d0 d1* (first-layer parameters)")
        fit = [f for f in fits_ if (f["activation"], f["event"], f["source"], f["t"], f["window"]) ==
               (act, "margin", "de", t, "n >= 256")]
        extra = f"\nmargin (det.), n >= 256: b = {fit[0]['b']:.2f} +- {fit[0]['hi'] - fit[0]['b']:.2f}" \
            if fit and math.isfinite(fit[0]["hi"]) else ""
        ax.set_title(f"{act}, t = {t}: along {line.get(t, f't = {t}')}{extra}", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    from matplotlib.lines import Line2D  # noqa: PLC0415

    handles["lines: deterministic equivalent (no Monte Carlo)"] = Line2D([], [], color="0.4", lw=1.5)
    if any(r["source"] == "mc" for r in thresholds):
        handles["markers: Monte Carlo median, 95% hierarchical bootstrap (X draws, then trials)"] = Line2D(
            [], [], color="0.4", marker="o", ls="none")
    import textwrap  # noqa: PLC0415

    width = fig.get_figwidth()
    longest = max(len(k) for k in handles) + 6
    ncol = max(1, min(3, int(width * 14 // longest)))  # entries never run off the figure's edge
    rows = -(-len(handles) // ncol)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=ncol, fontsize=8,
               handlelength=3.5, frameon=False)
    title = ("Width thresholds d0 d1* against n (C = 1; w2 by the Eq. 19 rule w1 w2 sqrt(d0 d1) = 1; "
             "b: slope of log d0 d1* in log n, 95% t-interval)")
    fig.suptitle("\n".join(textwrap.wrap(title, int(width * 13))), fontsize=10)
    fig.tight_layout(rect=(0, (0.25 + 0.16 * rows) / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def is_ladder(path) -> bool:
    """True when ``path`` is a ladder.json or a folder holding one."""
    p = Path(path)
    return (p.is_file() and p.suffix == ".json") or (p.is_dir() and (p / LADDER_FILE).is_file())


def load_ladder(path) -> dict:
    """The ladder's thresholds from ``path`` (a ladder.json or its folder), checked."""
    p = Path(path)
    f = p / LADDER_FILE if p.is_dir() else p
    try:
        data = json.loads(f.read_text())
    except FileNotFoundError:
        raise LadderError(f"{f}: no such file (write it with python studies/ladder.py --out DIR)") from None
    except (OSError, ValueError) as e:
        raise LadderError(f"{f}: not a readable ladder.json ({e})") from None
    th = data.get("thresholds") if isinstance(data, dict) else None
    if not isinstance(th, list) or not th:
        raise LadderError(f"{f}: no 'thresholds' list (is this a ladder.json of studies/ladder.py?)")
    for i, r in enumerate(th):
        missing = [k for k in REQUIRED_KEYS if not isinstance(r, dict) or k not in r]
        if missing:
            raise LadderError(f"{f}: thresholds[{i}] lacks {', '.join(missing)}")
        if r["event"] not in EVENTS or r["source"] not in SOURCE_WORDS:
            raise LadderError(f"{f}: thresholds[{i}] has event {r['event']!r} / source {r['source']!r}; expected "
                              f"one of {EVENTS} / {tuple(SOURCE_WORDS)}")
        for k in ("d1_star", "lo", "hi"):
            r[k] = math.nan if r[k] is None else float(r[k])
    return {"path": str(f), "thresholds": th, "seconds": data.get("seconds"), "config": data.get("config", {}),
            "norm_route": data.get("norm_route") or {}}


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "not reached" if x > 0 else "-inf"
    return f"{x:.3g}"


def claims_table(fits_: list[dict]) -> list[str]:
    """Markdown rows "claim | prediction | measured (interval) | verdict | power" of the ladder's fits."""
    rows = ["| claim: d0 d1* ~ n^b for | t | source, window | measured b (95%) | vs 3/2 (paper) | "
            "vs 1 (parameter count) | resolves 1 from 3/2 | power (half-width) | points |",
            "|---|---|---|---|---|---|---|---|---|"]
    order = {e: i for i, e in enumerate(EVENTS)}
    for f in sorted(fits_, key=lambda f: (order[f["event"]], f["activation"], f["t"], f["source"], f["window"])):
        half = f["hi"] - f["b"] if math.isfinite(f["hi"]) else math.nan
        v32, v1 = _verdict(f["b"], half, 1.5), _verdict(f["b"], half, 1.0)
        resolved = "no interval" if not math.isfinite(half) else (
            "no: consistent with both" if v32 == v1 == "consistent" else "yes")
        rows.append(
            f"| {EVENT_WORDS[f['event']]}, {f['activation']} | {f['t']} | {SOURCE_WORDS[f['source']]}, {f['window']} "
            f"(n = {f['n_min']:g} .. {f['n_max']:g}) | {f['b']:.3f} ({_fmt(f['lo'])}, {_fmt(f['hi'])}) | {v32} | {v1} | "
            f"{resolved} | {_fmt(half)} | {f['points']} |")
    return rows


def write_ladder_report(path, out) -> Path:
    """``report.md`` and ``ladder.png`` of a ladder (``path``: ladder.json or its folder) in ``out``."""
    lad = load_ladder(path)
    th = lad["thresholds"]
    fs = fits(th)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ladder_figure(th, fs, out / "ladder.png")
    md = ["# Report: the overparameterization ladder", "",
          f"- source: `{lad['path']}`" + (f" ({lad['seconds']:.0f} s to compute)" if lad.get("seconds") else ""),
          f"- activations: {', '.join(sorted({r['activation'] for r in th}))}; lines: "
          + ", ".join(f"t = {t} (n = {', '.join(str(n) for n in sorted({r['n'] for r in th if r['t'] == t}))})"
                      for t in sorted({r["t"] for r in th})), "",
          "Width thresholds d1* of each event (rows: activation, t, n), from the deterministic equivalent (`de`: the "
          "median over data draws, their range as interval) and Monte Carlo (`mc`: the median crossing width, 95% "
          "hierarchical bootstrap over data draws then trials; not reached: beyond the largest width).", "",
          "![ladder](ladder.png)", "", "## Claims", "",
          "Fits of d0 d1* ~ n^b recomputed from the thresholds below (least squares on logs, 95% Student-t "
          "interval). A verdict says `consistent` only when the prediction lies inside the interval; the power "
          "column is the interval's half-width (what the design can resolve).", ""]
    md += claims_table(fs)
    nr = lad["norm_route"].get("fits") or []
    if nr:
        delta = lad["norm_route"].get("delta", 0.2)
        md += ["", "## The proof's norm route", "",
               f"Eq. 66-67 bound delta1 through r = ||M0 - E M0|| / lambda_min(E M0); delta1 <= {delta} by that route "
               f"needs r <= {delta}. Fit of the median r over the Monte Carlo checkpoints with d1 >= 4 n: "
               "r ~ A n^a d1^c (95% intervals), so the route needs d1 ~ n^(-a/c).", "",
               "| activation | t | A | a | c | route needs d1 ~ n^e, e | checkpoints (n <= ) |", "|---|---|---|---|---|---|---|"]
        for f in nr:
            md.append(f"| {f['activation']} | {f['t']} | {f['prefactor']:.3g} | {f['a']:.3f} +- {f['a_half']:.3f} | "
                      f"{f['c']:.3f} +- {f['c_half']:.3f} | {f['width_exponent']:.2f} +- {f['width_exponent_half']:.2f} | "
                      f"{f['points']} ({f['n_max']}) |")
    md += ["", "## Thresholds", "", "| activation | t | n | d0 | event | source | d1* | interval | d1*/n |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(th, key=lambda r: (r["activation"], r["t"], r["n"], EVENTS.index(r["event"]), r["source"])):
        bound = "<= " if r.get("upper_bound") else ""
        md.append(f"| {r['activation']} | {r['t']} | {r['n']} | {r['d0']} | {r['event']} | {r['source']} | "
                  f"{bound}{_fmt(r['d1_star'])} | [{_fmt(r['lo'])}, {_fmt(r['hi'])}] | "
                  f"{_fmt(r['d1_star'] / r['n'] if math.isfinite(r['d1_star']) else math.nan)} |")
    p = out / "report.md"
    p.write_text("\n".join(md) + "\n")
    return p
