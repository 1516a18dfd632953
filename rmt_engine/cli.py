"""The ``rmt-engine`` command line: argument parsing and printing only (logic lives in study/store/cluster).

Exit codes: 0 success; 1 a run finished with failed tasks (listed; rerun to retry them);
2 a bad study, store or argument (nothing was created or changed); 130 interrupted.
``check STORE --bound B`` (rmt_engine.testing) instead: 0 the bound holds, 1 violated or undefined (NaN),
2 inconclusive (add trials), 3 a bad store or argument.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from ._version import __version__
from .study.cluster import ConnectionFailed
from .montecarlo.fields import SYMBOLIC_T
from .montecarlo.spec import DTYPES, TRIAL_SPEC_DEFAULTS

EXIT_OK, EXIT_FAILED_TASKS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _err(msg: str) -> None:
    print(f"rmt-engine: error: {msg}", file=sys.stderr, flush=True)


def _console(stderr: bool = False, width: int | None = None):
    from rich.console import Console  # noqa: PLC0415

    import os  # noqa: PLC0415

    tty = (sys.stderr if stderr else sys.stdout).isatty()
    if width is None:
        width = None if tty else int(os.environ.get("COLUMNS", 200))
    return Console(stderr=stderr, highlight=False, markup=False, soft_wrap=False, width=width)


# --------------------------------------------------------------------------- run / check


def _load_study(path):
    from .study import Study  # noqa: PLC0415

    return Study.from_toml(path)


def _with_site_slurm(study, path):
    """``study`` with the [slurm] table of the site file ``path`` (or $RMT_ENGINE_SLURM_CONFIG) merged in."""
    import dataclasses  # noqa: PLC0415
    import os  # noqa: PLC0415
    import tomllib  # noqa: PLC0415

    from .study import SLURM_KEYS, StudySpecError, _check_value  # noqa: PLC0415

    path = path or os.environ.get("RMT_ENGINE_SLURM_CONFIG")
    if not path:
        return study
    try:
        with open(path, "rb") as f:
            site = tomllib.load(f).get("slurm", {})
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StudySpecError(f"--slurm-config {path}: {e}") from None
    if not isinstance(site, dict):
        raise StudySpecError(f"--slurm-config {path}: [slurm] must be a table")
    slurm = dict(study.execution.slurm)
    for k, v in site.items():
        if k not in SLURM_KEYS:
            raise StudySpecError(f"--slurm-config {path}: unknown key {k!r} in [slurm]; allowed: {', '.join(SLURM_KEYS)}")
        v = _check_value(SLURM_KEYS[k], v, ("slurm", k))
        slurm[k] = list(v) if isinstance(v, tuple) else v
    ex = dataclasses.replace(study.execution)
    object.__setattr__(ex, "slurm", slurm)
    return dataclasses.replace(study, execution=ex)


def _int_at_least(low: int, what: str):
    """An argparse type: an integer >= ``low`` (``what`` names it in the error)."""

    def parse(v: str) -> int:
        try:
            i = int(v)
        except ValueError:
            i = None
        if i is None or i < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v!r}")
        return i

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")


def cmd_verify(args) -> int:
    """``verify STORE``: read every chunk (checksums) and audit that every done region is whole."""
    from .study.store import StoreError, store_attrs, verify_store  # noqa: PLC0415

    try:
        if store_attrs(args.store) is None:
            raise StoreError(f"{args.store} is not a zarr store")
        notes: list = []
        problems = verify_store(args.store, notes=notes)
    except (StoreError, FileNotFoundError) as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    for note in notes:  # e.g. regions not done yet: not a problem of a partial store, but said
        print(f"rmt-engine: note: {note}")
    if problems:
        print(f"rmt-engine: {args.store}: {len(problems)} problem(s):")
        for p in problems[:50]:
            print(f"  {p}")
        return EXIT_FAILED_TASKS
    print(f"rmt-engine: {args.store}: every chunk reads back and passes its checksum; every done region is whole")
    from .study.store import has_region_checks  # noqa: PLC0415

    if not has_region_checks(args.store):
        print(f"rmt-engine: note: {args.store} was written before per-chunk digests (region_check): checked by "
              "presence and CRC-32C only (a chunk swapped between regions is not detected)")
    return EXIT_OK


def cmd_run(args) -> int:
    from .study.store import StoreError  # noqa: PLC0415
    from .study import NoWorkersLeft, StudySpecError  # noqa: PLC0415

    try:
        if args.allow_shell_in_study:
            from .study import allow_shell_in_study  # noqa: PLC0415

            allow_shell_in_study(True)
        study = _load_study(args.study)
        study = _with_site_slurm(study, args.slurm_config)
        if args.job_script:
            from .study.cluster import slurm_job_script  # noqa: PLC0415

            print(slurm_job_script(study.execution.slurm, study.execution.blas_threads))
            return EXIT_OK
        if args.store is None:
            _err("run needs --store PATH")
            return EXIT_BAD_INPUT
        study.check_store(args.store, resume=args.resume)
    except (StudySpecError, StoreError, RuntimeError) as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    if args.summary_json:  # before the run: an unwritable path must not be found after hours of compute
        try:
            with open(args.summary_json, "a"):
                pass
        except OSError as e:
            _err(f"--summary-json {args.summary_json}: cannot write there ({e.strerror or e})")
            return EXIT_BAD_INPUT
    try:
        summary = study.run(args.store, resume=args.resume, progress=not args.no_progress, workers=args.workers,
                            cluster=args.cluster, scheduler=args.scheduler, scheduler_file=args.scheduler_file,
                            force=args.force)
    except (StudySpecError, StoreError) as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    except ConnectionFailed as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    except NoWorkersLeft as e:
        _err(str(e))
        return EXIT_FAILED_TASKS
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (study.run.Terminated)
        _err(f"{e if getattr(e, 'exit_code', None) else 'interrupted'}; finished regions are kept and the store's "
             "lock is released: rerun with --resume to continue")
        return getattr(e, "exit_code", EXIT_INTERRUPTED)
    print(f"rmt-engine: {summary.line()}", flush=True)
    if args.summary_json:
        try:
            with open(args.summary_json, "w") as f:
                json.dump(summary.to_dict(), f, indent=2)
        except OSError as e:
            _err(f"--summary-json {args.summary_json}: {e.strerror or e} (the cube itself is written)")
    if summary.failures:
        det = [f for f in summary.failures if f.deterministic]
        print(f"rmt-engine: {len(summary.failures)} task(s) failed; their regions are not done.", file=sys.stderr)
        for f in summary.failures:
            kind = "will fail again (an error in the task itself)" if f.deterministic else "rerun to retry"
            print(f"  FAILED {f}  [{kind}]", file=sys.stderr)
        if len(det) < len(summary.failures):
            print("rmt-engine: rerun the same command to retry the others (lost workers, I/O errors).",
                  file=sys.stderr)
        if det:
            print(f"rmt-engine: {len(det)} failure(s) are errors raised by the computation: rerunning repeats them; "
                  "fix the cause first.", file=sys.stderr)
        return EXIT_FAILED_TASKS
    print(f"rmt-engine: complete cube at {summary.store} (open with rmt_engine.open_results)", flush=True)
    return EXIT_OK


def cmd_validate(args) -> int:
    from .study.store import StoreError  # noqa: PLC0415
    from .study import StudySpecError  # noqa: PLC0415

    try:
        study = _load_study(args.study)
        if args.store:
            study.check_store(args.store)
    except (StudySpecError, StoreError) as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    tpt = study.trials_per_task()
    from .study.store import n_blocks  # noqa: PLC0415

    print(f"{args.study}: OK: {study.n_points} grid points x {study.trials} trials = "
          f"{study.n_points * study.trials} trials in {study.n_points * n_blocks(study.trials, tpt)} tasks "
          f"of <= {tpt} trials; config hash {study.config_hash()[:12]}")
    for w in study.bound_warnings():
        print(f"rmt-engine: warning: {w}", file=sys.stderr)
    from .study.resources import estimate_study  # noqa: PLC0415

    problems = study.resource_problems()
    if study.n_points <= 100_000:
        print(estimate_study(study).line())
    if problems:
        _err("over the resource limits: " + "; ".join(problems) + " (raise them in [execution], or run with --force)")
        return EXIT_BAD_INPUT
    return EXIT_OK


def _parse_value(v: str):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def cmd_check(args) -> int:
    """``check STORE --bound B``: exit 0 holds, 1 violated/undefined, 2 inconclusive, 3 bad input."""
    from .study.store import StoreError, open_results  # noqa: PLC0415
    from .testing import check_bound  # noqa: PLC0415

    where = {}
    for item in args.where:
        if "=" not in item:
            _err(f"--where {item!r}: expected KEY=VALUE")
            return 3
        k, v = item.split("=", 1)
        vals = [_parse_value(x) for x in v.split(",")]
        where[k] = vals if len(vals) > 1 else vals[0]
    try:
        ds = open_results(args.store)
        t = args.t
        for sym in SYMBOLIC_T:
            if t and sym in t:
                if len(t) > 1:
                    raise ValueError(f"--t {sym} cannot be combined with other orders")
                t = sym
        res = check_bound(ds, args.bound, delta=args.delta, min_rate=args.min_rate, confidence=args.confidence,
                          where=where or None, t=t)
    except (StoreError, FileNotFoundError, ValueError, KeyError) as e:
        _err(str(e))
        return 3
    from rich.table import Table  # noqa: PLC0415

    con = _console()
    t = Table(title=res.header())
    for ax in res.axes:
        t.add_column(ax)
    show_t = any(p.t_used is not None for p in res.points)
    show_inc = any(p.within_error for p in res.points)
    for col in (["t"] if show_t else []) + ["holds/trials", "rate", "interval"] + (
            ["within error"] if show_inc else []) + ["status"]:
        t.add_column(col)
    for p in res.points:
        rate = "nan" if math.isnan(p.rate) else f"{p.rate:.4f}"
        t_cell = ([("-" if p.t_used is None or math.isnan(p.t_used) else f"{p.t_used:g}")] if show_t else [])
        t.add_row(*[str(p.coords[a]) for a in res.axes], *t_cell, f"{p.holds}/{p.trials}", rate,
                  f"[{p.lo:.4f}, {p.hi:.4f}]", *([str(p.within_error)] if show_inc else []), p.status)
    con.print(t)
    head = res.header().splitlines()
    for line in head[1:]:  # the notes under the header (trials needed for min_rate)
        con.print(line.strip())
    status = res.status
    if status == "inconclusive":
        con.print("inconclusive: add trials" + (" (or some trials are within the numerical error of the bound)"
                                                if show_inc else ""))
    return {"holds": 0, "violated": 1, "undefined": 1, "inconclusive": 2}[status]


# --------------------------------------------------------------------------- info / show


def cmd_info(args) -> int:
    from .study.cluster import environment_info  # noqa: PLC0415

    info = environment_info()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return EXIT_OK
    from rich.table import Table  # noqa: PLC0415

    con = _console()
    con.print(f"rmt-engine {__version__}  ({info['python']})")
    t = Table(title="versions", show_header=False)
    for k, v in info["versions"].items():
        t.add_row(k, str(v))
    con.print(t)
    con.print(f"CPU cores available: {info['cores']}")
    for b in info["blas"]:
        con.print(f"BLAS: {b.get('internal_api')} {b.get('version')} ({b.get('num_threads')} threads here; "
                  "study tasks use execution.blas_threads, default 1)")
    gp = info["gram_pass"]
    con.print(f"Gram pass (CPU): {gp['lanes']} lanes on up to {gp['lanes']} threads; dsyrk "
              + ("via SciPy's Cython BLAS, GIL released" if gp["gil_free_dsyrk"]
                 else "via scipy.linalg.blas (holds the GIL: the lanes cannot overlap)"))
    con.print("backends: " + ", ".join(f"{k}: {'yes' if v is True else (v or 'no')}" for k, v in info["backends"].items()))
    if info["gpus"]:
        for g in info["gpus"]:
            con.print(f"GPU {g['id']}: {g['name']} ({g['memory_GiB']} GiB)")
    else:
        con.print("GPU devices: none found")
    con.print("cluster kinds: " + ", ".join(f"{k} ({'available' if v else 'needs rmt-engine[cluster]'})"
                                           for k, v in info["cluster_kinds"].items()))
    return EXIT_OK


def _fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}"


#: ``rmt-engine show`` columns by default (they fit 100 columns); ``--fields`` chooses others.
SHOW_DEFAULT_FIELDS = ("sigma_min_F", "delta1", "margin", "lambda_min_EM0")


def _check_show_fields(store, fields) -> None:
    """StoreError unless every name of ``show --fields`` is a field of the record (one number per
    trial or per grid point): not a grid axis, the ``done`` mask, or a stored spectrum."""
    from .study.store import GRID_AXES, StoreError, open_results  # noqa: PLC0415

    ds = open_results(store, allow_partial=True)
    cube = set(ds.attrs.get("cube_dims", GRID_AXES)) | {"trial", "t"}
    shown = sorted(k for k in ds.data_vars if k != "done" and set(ds[k].dims) <= cube)
    for k in fields:
        if k in shown:
            continue
        if k in GRID_AXES or k in ds.coords:
            why = "is a grid axis (its values are the grid table's and each row's labels), not a field"
        elif k == "done":
            why = "is the bookkeeping mask of computed regions (the 'complete' line counts it), not a field"
        elif k in ds.data_vars:
            why = (f"has dimensions {ds[k].dims} beyond the grid and trials (a stored spectrum or curve: read it with "
                   "rmt_engine.open_results), not one number per trial")
        else:
            why = "is not in the cube"
        raise StoreError(f"--fields: {k!r} {why}; fields: {', '.join(shown)}")


def cmd_show(args) -> int:
    from .study.store import StoreError, summarize  # noqa: PLC0415

    try:
        fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
        if fields is None and not args.json:
            fields = list(SHOW_DEFAULT_FIELDS)
        if fields:
            _check_show_fields(args.store, fields)
        s = summarize(args.store, fields=fields)
    except (StoreError, FileNotFoundError) as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return EXIT_OK
    from rich.table import Table  # noqa: PLC0415

    a = s["attrs"]
    con = _console(width=args.width)
    con.print(f"{a.get('study_name', '?')}  {args.store}  (rmt_engine {a.get('rmt_engine_version')}, "
              f"config {str(a.get('config_hash'))[:12]}, seed {a.get('seed')}, t = {a.get('t')})")
    pct = 100.0 * s["regions_done"] / max(s["regions_total"], 1)
    con.print(f"complete: {s['regions_done']}/{s['regions_total']} regions ({pct:.0f}%), "
              f"{s['trials_done']}/{s['trials_total']} trials; started {a.get('started')}, "
              f"finished {a.get('finished') or '-'}; device {a.get('device') or '-'}")
    g = Table(title="grid", show_header=True)
    g.add_column("axis")
    g.add_column("values")
    for ax, vals in s["grid"].items():
        g.add_row(ax, ", ".join(map(str, vals)))
    con.print(g)
    q = s["quantiles"]
    t = Table(title=f"per grid point: median (q{q[0]:g} .. q{q[-1]:g}) over done trials; bounds per point")
    for ax in s["varying"]:
        t.add_column(ax)
    t.add_column("trials")
    keys = list(s["points"][0]["stats"]) if s["points"] else []
    pkeys = list(s["points"][0]["point"]) if s["points"] else []
    for k in keys + pkeys:
        t.add_column(k, overflow="fold")  # wrap between numbers (the range has spaces), never cut with an ellipsis
    rows = s["points"][: args.max_rows] if args.max_rows else s["points"]
    for p in rows:
        cells = [str(p["labels"][ax]) for ax in s["varying"]] + [str(p["trials_done"])]
        for k in keys:
            st = p["stats"][k]
            cells.append("-" if st is None else f"{_fmt(st[1])} ({_fmt(st[0], 3)} .. {_fmt(st[-1], 3)})")
        cells += [_fmt(p["point"][k]) for k in pkeys]
        t.add_row(*cells)
    con.print(t)
    if args.max_rows and len(s["points"]) > args.max_rows:
        con.print(f"... {len(s['points']) - args.max_rows} more grid points (--max-rows 0 shows all)")
    return EXIT_OK


# --------------------------------------------------------------------------- trial


def _trial_field_words(key, fields) -> tuple[str, str]:
    """(equation, meaning) of a record field for ``rmt-engine trial``: a per-order field ``NAME_t3`` or
    ``NAME_auto`` takes NAME's entry and says which order (``auto``: the record's ``t_auto``)."""
    if key in fields:
        return fields[key].equation, fields[key].long_name
    base, sep, order = key.rpartition("_")
    if sep and base in fields:
        if order in SYMBOLIC_T:
            return fields[base].equation, f"{fields[base].long_name} (at t = t_{order})"
        if order.startswith("t") and order[1:].isdigit():
            return fields[base].equation, f"{fields[base].long_name} (at t = {order[1:]})"
    return "", ""


def cmd_trial(args) -> int:
    from .montecarlo.fields import FIELDS  # noqa: PLC0415
    from .montecarlo.spec import TrialSpec  # noqa: PLC0415

    try:
        spec = TrialSpec(activation=args.activation, n=args.n, d0=args.d0, d1=args.d1, d2=args.d2, w1=args.w1,
                         w2=args.w2, t=tuple(args.t), data=args.data, data_path=args.data_path, seed=args.seed,
                         dtype=args.dtype, block_rows=args.block_rows, backend=args.backend)
    except ValueError as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    from .montecarlo.trial import run_trial  # noqa: PLC0415

    try:
        record = run_trial(spec, args.trial)
    except (ValueError, OSError, ImportError) as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()},
                         indent=2))
        return EXIT_OK
    from rich.table import Table  # noqa: PLC0415

    t = Table(title=f"trial {args.trial} of {spec.activation}, n={spec.n}, d0={spec.d0}, d1={spec.d1}, "
                    f"d2={spec.d2}, w1={spec.w1:g}, w2={spec.w2:g}, data={spec.data}, seed={spec.seed}")
    for c in ("field", "value", "equation", "meaning"):
        t.add_column(c)
    for k, v in record.items():
        eq, meaning = _trial_field_words(k, FIELDS)
        t.add_row(k, f"{v:.6g}", eq, meaning)
    _console().print(t)
    return EXIT_OK


def cmd_report(args) -> int:
    from .report.document import ReportError, write_report  # noqa: PLC0415
    from .study.store import StoreError, explain_read_error  # noqa: PLC0415

    problem = _unwritable_dir(args.out)
    if problem:
        _err(f"--out {args.out}: {problem}")
        return EXIT_BAD_INPUT
    from .report.ladder_section import LadderError, is_ladder, write_ladder_report  # noqa: PLC0415

    if is_ladder(args.store):  # a ladder's folder (or its ladder.json): the ladder's report
        try:
            print(write_ladder_report(args.store, args.out))
        except LadderError as e:
            _err(str(e))
            return EXIT_BAD_INPUT
        return EXIT_OK
    try:
        path = write_report(args.store, args.out, delta=args.delta, level=args.level, t=args.t)
    except ReportError as e:
        print(e.path)
        hint = (" Is matplotlib installed (pip install matplotlib)?" if any("matplotlib" in f for f in e.failures)
                else "")
        _err(f"{e}.{hint} The report was written without them.")
        return EXIT_FAILED_TASKS
    except (StoreError, FileNotFoundError, FileExistsError, ValueError) as e:
        _err(str(explain_read_error(args.store, e) or e) if not isinstance(e, StoreError) else str(e))
        return EXIT_BAD_INPUT
    print(path)
    return EXIT_OK


def _unwritable_dir(path) -> str | None:
    """Why the directory ``path`` (created if missing) cannot hold new files, or None."""
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    p = Path(path).absolute()
    existing = next((q for q in [p, *p.parents] if q.exists()), None)
    if existing is None or not existing.is_dir():
        return f"{existing} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(prefix=".rmt_engine_probe_", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"cannot write in {existing} ({e.strerror or e})"
    return None


def _t_arg(v: str):
    """A Khatri-Rao order on the command line: an integer >= 1, 'auto' or 'best'."""
    if v.strip().lower() in SYMBOLIC_T:
        return v.strip().lower()
    return _int_at_least(1, "an integer order >= 1, 'auto' or 'best'")(v)


def _probability_arg(what: str):
    """An argparse type: a probability strictly inside (0, 1) (``what`` names the option in the error)."""

    def parse(v: str) -> float:
        try:
            p = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number in (0, 1), got {v!r}") from None
        if not 0.0 < p < 1.0:  # NaN fails too
            raise argparse.ArgumentTypeError(f"{what} is a fraction of trials and must lie strictly between 0 and 1 "
                                             f"(e.g. 0.95), got {v!r}")
        return p

    return parse


def _delta_arg(v: str) -> float:
    try:
        d = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {v!r}") from None
    if not 0.0 <= d < 1.0:
        raise argparse.ArgumentTypeError(f"delta must lie in [0, 1), got {v!r}")
    return d


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rmt-engine", description="Random-matrix Monte Carlo for the bounds of "
                                "'Subquadratic Overparameterization for Shallow Neural Networks'.")
    p.add_argument("--version", action="version", version=f"rmt-engine {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run (or resume) a study into a zarr cube",
                       description="Run a study TOML into a zarr result cube on Dask. An existing store of the "
                                   "same study (same config hash) is resumed: only regions not marked done are "
                                   "computed. Exit status 1 if some tasks failed (rerun to retry them), 2 for a "
                                   "bad study or store.")
    r.add_argument("study", metavar="STUDY.toml", help="study specification")
    r.add_argument("--store", metavar="PATH", help="zarr store to create or resume (required unless --job-script)")
    r.add_argument("--resume", action="store_true", help="require PATH to exist and continue it")
    r.add_argument("--slurm-config", metavar="FILE",
                   help="site settings for --cluster slurm: a TOML file with a [slurm] table (job_script_prologue, "
                        "python, queue, account, ...), merged over the study's [cluster.slurm]; default "
                        "$RMT_ENGINE_SLURM_CONFIG")
    r.add_argument("--allow-shell-in-study", action="store_true",
                   help="accept job_script_prologue, python, shebang, ... in the study file's [cluster.slurm] "
                        "(they become shell commands in the submitted job script)")
    r.add_argument("--force", action="store_true",
                   help="run even when the estimated memory per trial or compute time exceeds the limits")
    r.add_argument("--workers", type=_positive_int, metavar="N",
                   help="worker processes of the embedded LocalCluster (default: execution.workers, else all cores; "
                        "capped at the cores available), or GPUs of --cluster cuda")
    r.add_argument("--cluster", choices=("local", "slurm", "cuda"),
                   help="local: embedded LocalCluster (default); slurm: dask_jobqueue.SLURMCluster from "
                        "[cluster.slurm]; cuda: dask_cuda.LocalCUDACluster, one worker per GPU")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--scheduler", metavar="ADDRESS", help="use an existing Dask scheduler (e.g. tcp://host:8786)")
    g.add_argument("--scheduler-file", metavar="F", help="use an existing Dask scheduler described by file F")
    r.add_argument("--job-script", action="store_true",
                   help="print the SLURM job script built from [cluster.slurm] and exit (submits nothing)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--summary-json", metavar="FILE", help="also write the run summary as JSON to FILE")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("validate", help="validate a study TOML (and optionally a store path) without running",
                       description="Validate a study: keys, types, every grid point, data files; with --store, "
                                   "also that the store can be created or resumed. Creates nothing.")
    c.add_argument("study", metavar="STUDY.toml")
    c.add_argument("--store", metavar="PATH")
    c.set_defaults(func=cmd_validate)

    from .testing import BOUNDS  # noqa: PLC0415

    ck = sub.add_parser("check", help="test a bound's holding rate per grid point of a result cube",
                        description="For every grid point (and t) of STORE, the fraction of trials in which the "
                                    "bound holds, with its Clopper-Pearson interval (rmt_engine.testing). Exit "
                                    "status 0: holds everywhere (interval above --min-rate); 1: violated somewhere "
                                    "(interval below) or undefined (NaN); 2: inconclusive somewhere (add trials); "
                                    "3: bad store or argument. Bounds: " + ", ".join(BOUNDS) + ".")
    ck.add_argument("store", metavar="STORE")
    ck.add_argument("--bound", required=True, help="bound name: " + ", ".join(BOUNDS))
    ck.add_argument("--delta", type=_delta_arg, help="deviation delta (eq67_*, delta1, delta2; default: the cube's "
                                                      "bound_delta1, or bound_delta2 for the upper bounds)")
    ck.add_argument("--min-rate", type=_probability_arg("--min-rate"), default=0.95, help="required holding rate (default 0.95)")
    ck.add_argument("--confidence", type=_probability_arg("--confidence"), default=0.95,
                    help="confidence of the two-sided Clopper-Pearson intervals (default 0.95, as the report)")
    ck.add_argument("--where", nargs="+", default=[], metavar="KEY=VALUE",
                    help="select grid points (ds.sel); VALUE may be a comma-separated list")
    ck.add_argument("--t", type=_t_arg, nargs="+", metavar="T",
                    help="Khatri-Rao orders: integers, or 'auto' alone (default: 'auto' when the cube stores it, "
                         "each point at its t_auto, shown per point; else every explicit order)")
    ck.set_defaults(func=cmd_check)

    i = sub.add_parser("info", help="versions, BLAS, backends and GPU devices found",
                       description="Print versions, CPU cores, BLAS, array backends, GPU devices and cluster kinds.")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_info)

    s = sub.add_parser("show", help="summary table of a result cube",
                       description="Summarize a cube (also a partial one): grid, completeness, and per grid point "
                                   "the median and 5%/95% quantiles of the main per-trial quantities, with the "
                                   "per-point bounds beside them.")
    s.add_argument("store", metavar="PATH")
    s.add_argument("--max-rows", type=_nonneg_int, default=50, metavar="N", help="grid points shown (0: all; default 50)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--fields", metavar="F1,F2,...",
                   help="variables to show (default: " + ",".join(SHOW_DEFAULT_FIELDS) + "; per-trial ones as median "
                        "(q05..q95), per-point ones as values; t-dependent ones as the max over t)")
    s.add_argument("--width", type=_positive_int, default=100, help="table width in columns (default 100)")
    s.set_defaults(func=cmd_show)

    v = sub.add_parser("verify", help="audit a store: every chunk read back with its checksum, every done region whole",
                       description="Exit 0: the store is whole; 1: problems (listed); 2: not a store.")
    v.add_argument("store", metavar="STORE")
    v.set_defaults(func=cmd_verify)

    t = sub.add_parser("trial", help="run one trial of one grid point and print its record",
                       description="Build a TrialSpec, run one trial (run_trial) and print every field of the "
                                   "record with its equation number.")
    t.add_argument("--activation", required=True, help="activation name (e.g. gelu, tanh, sigmoid)")
    t.add_argument("--n", type=int, required=True, help="number of data points")
    t.add_argument("--d0", type=int, required=True, help="input dimension")
    t.add_argument("--d1", type=int, required=True, help="hidden width")
    D = TRIAL_SPEC_DEFAULTS
    t.add_argument("--d2", type=int, default=D["d2"], help=f"output dimension (default {D['d2']})")
    t.add_argument("--w1", type=float, default=D["w1"], help=f"std of W0 entries (default {D['w1']})")
    t.add_argument("--w2", type=float, default=D["w2"], help=f"std of V0 entries (default {D['w2']})")
    t.add_argument("--t", type=_t_arg, nargs="+", default=list(D["t"]), metavar="T",
                   help=f"Khatri-Rao orders (default {' '.join(map(str, D['t']))})")
    t.add_argument("--data", default=D["data"], help=f"data kind: sphere, file or digits (default {D['data']})")
    t.add_argument("--data-path", help="the .npy/.npz file of --data file")
    t.add_argument("--seed", type=int, default=D["seed"], help=f"study seed (default {D['seed']})")
    t.add_argument("--trial", type=int, default=0, help="trial index (default 0)")
    t.add_argument("--dtype", default=D["dtype"], choices=DTYPES, help="block product dtype")
    t.add_argument("--block-rows", type=int, help="rows of W0 per block (default about 32 MiB)")
    t.add_argument("--backend", default=D["backend"], choices=("numpy", "cupy", "auto"), help="array backend")
    t.add_argument("--json", action="store_true", help="print the record as JSON (NaN as null)")
    t.set_defaults(func=cmd_trial)
    rp = sub.add_parser("report", help="figures and a Markdown report of a result cube (or of a ladder)",
                        description="Write report.md (Eq. 67 ratios, violation rates with confidence intervals, "
                                    "power-law fits, width threshold vs n^{3/2}, c_0 spike) and PNG figures into "
                                    "--out. Given the folder of studies/ladder.py (or its ladder.json), the ladder's "
                                    "report: the headline figure, the claims table and every threshold. Needs "
                                    "matplotlib (the 'plot' extra).")
    rp.add_argument("store", metavar="STORE")
    rp.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    rp.add_argument("--delta", type=_delta_arg, default=None, help="deviation delta of the bound events (default 0.2)")
    rp.add_argument("--t", type=_t_arg, default=None, metavar="T",
                    help="one Khatri-Rao order (an integer or 'auto'; default: every order of the cube)")
    rp.add_argument("--level", type=_probability_arg("--level"), default=0.95, help="trial fraction of the width threshold (default 0.95)")
    rp.set_defaults(func=cmd_report)
    return p


def main(argv=None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(words)
    except SystemExit as e:
        # check reserves exit status 2 for "inconclusive": its usage errors exit 3 ("bad store or argument")
        if e.code == 2 and next((w for w in words if not w.startswith("-")), None) == "check":
            raise SystemExit(3) from None
        raise
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
