"""Store integrity: damaged chunks found and recomputed on resume, chunks bound to their place,
an atomic store lock, SIGTERM, a full disk, and clear errors for damaged or unwritable stores.

Each test fails on the engine before ``region_check`` / the flock-based ``StoreLock``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from rmt_engine.cli import main
from rmt_engine.study import Study, create_store, execute_task, make_job, plan_tasks
from rmt_engine.study import store as st

GRID = {"activation": ["gelu"], "n": [8], "d0": [4], "d1": [16, 32]}
TOML = ('name = "integrity"\n[study]\ntrials = 4\nseed = 5\nt = [2]\nsave_spectrum = true\n[grid]\n'
        'activation = ["gelu"]\nn = [8]\nd0 = [4]\nd1 = [16, 32]\n[execution]\ntrials_per_task = 2\nworkers = 1\n')
GOLDEN = Path(__file__).resolve().parent / "regression" / "golden_cube"


def _study():
    return Study.from_toml_text(TOML)


def _fill(study, path):
    """The complete cube, its tasks executed in this process exactly as a worker runs them."""
    create_store(study, path)
    tpt = st.store_attrs(path)["trials_per_task"]
    variables = st.layout(study.cube_axes(), study.t, study.trials, tpt, study.save_spectrum, study.train)
    for task in plan_tasks(study, tpt)[0]:
        execute_task(make_job(study, path, task, variables, tpt))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _fill(_study(), tmp_path_factory.mktemp("integrity") / "ref.zarr")


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    c = Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None)
    yield c
    c.close()


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _chunks(store, var):
    return sorted(p for p in (store / var / "c").rglob("*") if p.is_file())


def _flip(f):
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0x01
    f.write_bytes(bytes(b))


def _swap(a, b):
    x = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(x)


def _assert_bitwise_equal(a_path, b_path):
    a, b = st.open_results(a_path), st.open_results(b_path)
    names = sorted(set(a.data_vars))
    assert names == sorted(set(b.data_vars)) and len(names) > 40
    for k in names:
        x, y = a[k].values, b[k].values
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert x.tobytes() == y.tobytes(), k


def _damage(kind, s):
    """Damage the store ``s``; return how many regions must be recomputed."""
    if kind == "flipped byte":
        _flip(_chunks(s, "sigma_min_F")[0])
        return 1
    if kind == "empty chunk":
        _chunks(s, "delta1")[1].write_bytes(b"")
        return 1
    if kind == "deleted chunk":
        _chunks(s, "margin")[2].unlink()
        return 1
    if kind == "deleted variable metadata":
        (s / "sigma_max_F" / "zarr.json").unlink()
        return 0  # its chunks are still there and match their records
    if kind == "deleted variable":
        shutil.rmtree(s / "sigma_max_F")
        return 4
    if kind == "swapped chunks":
        a, b = _chunks(s, "sigma_min_F")[0], _chunks(s, "sigma_min_F")[3]  # two grid points
        _swap(a, b)
        return 2
    if kind == "flipped done flag":
        _flip(_chunks(s, "done")[0])
        return 0  # rebuilt from the region's record
    if kind == "deleted done metadata":
        (s / "done" / "zarr.json").unlink()
        return 0
    if kind == "flipped done flag and data":
        _flip(_chunks(s, "done")[0])
        _flip(_chunks(s, "delta1")[0])
        return 1
    if kind == "flipped region record":
        _flip(_chunks(s, st.CHECK_NAME)[1])
        return 1
    raise AssertionError(kind)


KINDS = ["flipped byte", "empty chunk", "deleted chunk", "deleted variable metadata", "deleted variable",
         "swapped chunks", "flipped done flag", "deleted done metadata", "flipped done flag and data",
         "flipped region record"]


@pytest.mark.parametrize("kind", KINDS)
def test_resume_recomputes_exactly_the_damaged_regions(kind, reference, client, tmp_path):
    s = _copy(reference, tmp_path / "s.zarr")
    expect = _damage(kind, s)
    if kind not in ("deleted variable metadata", "flipped done flag", "deleted done metadata"):
        assert st.verify_store(s), "verify must see the damage"
    msgs = []
    summary = _study().run(s, client=client, resume=True, progress=False, echo=msgs.append)
    assert summary.ok, summary.failures
    assert summary.regions_computed == expect, (summary.line(), msgs)
    assert summary.regions_skipped == summary.regions_total - expect
    assert st.verify_store(s) == []
    _assert_bitwise_equal(s, reference)


def test_swapped_chunks_fail_verify_and_open_results_checks_sizes(reference, tmp_path, capsys):
    s = _copy(reference, tmp_path / "swap.zarr")
    a, b = _chunks(s, "sigma_min_F")[0], _chunks(s, "sigma_min_F")[3]
    _swap(a, b)
    assert main(["verify", str(s)]) == 1
    assert "swapped with another region's chunk" in capsys.readouterr().out
    # chunks of different sizes swapped: already the cheap check of open_results sees it
    s2 = _copy(reference, tmp_path / "swap2.zarr")
    a, b = _chunks(s2, "sigma_min_F")[0], _chunks(s2, "spectrum_n8")[0]
    assert a.stat().st_size != b.stat().st_size
    _swap(a, b)
    with pytest.raises(st.IncompleteStoreError, match="not as their task wrote them"):
        st.open_results(s2)


def test_old_stores_without_region_check_still_read_verify_and_resume(reference, client, tmp_path, capsys):
    # the committed golden cube predates region_check: verified by presence and CRC-32C, as before
    assert not st.has_region_checks(GOLDEN)
    assert st.verify_store(GOLDEN) == []
    st.open_results(GOLDEN)
    assert main(["verify", str(GOLDEN)]) == 0
    assert "checked by presence and CRC-32C only" in capsys.readouterr().out
    # an old store of this study: no region_check array, no entry in the variables attribute
    s = _copy(reference, tmp_path / "old.zarr")
    shutil.rmtree(s / st.CHECK_NAME)
    import zarr

    g = zarr.open_group(str(s), mode="r+")
    g.attrs["variables"] = [v for v in g.attrs["variables"] if v != st.CHECK_NAME]
    assert st.verify_store(s) == []
    _flip(_chunks(s, "sigma_min_F")[1])
    _chunks(s, "delta1")[2].write_bytes(b"")
    msgs = []
    summary = _study().run(s, client=client, resume=True, progress=False, echo=msgs.append)
    assert summary.ok and summary.regions_computed == 2, (summary.line(), msgs)
    assert any("checked by CRC-32C only" in m for m in msgs), msgs
    assert not (s / st.CHECK_NAME).exists()  # an old store stays an old store
    assert st.verify_store(s) == []
    _assert_bitwise_equal(s, reference)


def test_cli_resume_of_a_damaged_store_recomputes_instead_of_nothing_to_compute(reference, tmp_path, capsys):
    s = _copy(reference, tmp_path / "cli.zarr")
    _flip(_chunks(s, "sigma_min_F")[0])
    (s / "margin" / "zarr.json").unlink()
    toml = tmp_path / "s.toml"
    toml.write_text(TOML)
    rc = main(["run", str(toml), "--store", str(s), "--resume", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "nothing to compute" not in out
    assert "recreated the metadata of margin" in err and "1 damaged region(s) will be recomputed" in err
    assert "1 computed, 3 skipped" in out
    _assert_bitwise_equal(s, reference)


# --------------------------------------------------------------------------- lock


def test_racing_acquisitions_never_give_two_holders(tmp_path):
    """200 processes race for the lock; each one that gets it dies while holding it (os._exit), so
    every acquisition after the first takes over from a dead driver."""
    store = tmp_path / "race.zarr"
    marker, log = tmp_path / "holder", tmp_path / "log"
    n, wave = 200, 25
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped at once: their PIDs are dead
    pids = []
    try:
        for start in range(0, n, wave):
            batch = []
            for _ in range(min(wave, n - start)):
                pid = os.fork()
                if pid == 0:  # child
                    code = 1
                    try:
                        deadline = time.monotonic() + 120
                        while time.monotonic() < deadline:
                            try:
                                st.StoreLock(store).acquire()
                            except st.StoreLockedError:
                                time.sleep(0.001)
                                continue
                            try:
                                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                                os.close(fd)
                            except FileExistsError:
                                with open(log, "a") as f:
                                    f.write("TWO HOLDERS\n")
                                code = 3
                                break
                            time.sleep(0.002)
                            os.unlink(marker)
                            with open(log, "a") as f:
                                f.write("ok\n")
                            code = 0
                            break
                    finally:
                        os._exit(code)  # dies holding the lock
                batch.append(pid)
            pids += batch
            deadline = time.monotonic() + 180
            while any(_alive(p) for p in batch):
                assert time.monotonic() < deadline, "acquisitions did not finish"
                time.sleep(0.01)
    finally:
        signal.signal(signal.SIGCHLD, old)
    lines = log.read_text().splitlines()
    assert "TWO HOLDERS" not in lines
    assert lines.count("ok") == n


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_lock_of_a_live_driver_is_kept_and_a_dead_ones_record_replaced(tmp_path):
    path = tmp_path / "s.zarr"
    with st.StoreLock(path):
        info = json.loads(st.lock_path(path).read_text())
        assert info["pid"] == os.getpid()
        with pytest.raises(st.StoreLockedError, match=f"PID {os.getpid()}"):
            st.StoreLock(path).acquire()
    assert not st.lock_path(path).exists()
    # a record left by a driver of another host is not broken (it may still run)
    st.lock_path(path).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "since": "x"}))
    with pytest.raises(st.StoreLockedError, match="elsewhere.example"):
        st.StoreLock(path).acquire()


def test_lock_in_a_read_only_directory_is_a_clear_error():
    base = Path(tempfile.mkdtemp(prefix="rmt_ro_"))
    try:
        base.chmod(0o555)
        with _unprivileged(), pytest.raises(st.StoreWriteError, match="cannot lock the store.*writable"):
            st.StoreLock(base / "s.zarr").acquire()
    finally:
        base.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text(TOML)
    store = tmp_path / "t.zarr"
    env = dict(os.environ, RMT_ENGINE_TEST_TASK_DELAY="1.5")
    proc = subprocess.Popen([sys.executable, "-m", "rmt_engine.cli", "run", str(toml), "--store", str(store),
                             "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (store / "done" / "zarr.json").exists() or not _done_count(store):  # tasks are running
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "terminated by signal SIGTERM" in err and "--resume" in err
    assert "Traceback" not in err
    assert not st.lock_path(store).exists()  # released
    assert st.store_attrs(store)["runs"][-1]["status"] == "interrupted"
    assert 1 <= _done_count(store) < 4  # finished regions kept
    st.StoreLock(store).acquire().release()


def _done_count(store):
    try:
        return int(st.read_done(store).sum())
    except Exception:  # noqa: BLE001 - the template is being written
        return 0


# --------------------------------------------------------------------------- full disk


def test_full_disk_names_the_store_the_failed_regions_and_resume(tmp_path, capsys, monkeypatch):
    import errno

    toml = tmp_path / "s.toml"
    toml.write_text(TOML)
    store = tmp_path / "full.zarr"
    monkeypatch.setenv("RMT_ENGINE_TEST_FAIL", "enospc:d1=32")  # the tasks' writes fail as on a full disk
    real = st.update_attrs

    def full_at_the_end(path, **attrs):  # ... and so does the driver's last bookkeeping write
        if "complete" in attrs:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, **attrs)

    monkeypatch.setattr(st, "update_attrs", full_at_the_end)
    rc = main(["run", str(toml), "--store", str(store), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert f"no space left on the device of {store}" in err
    assert "2 region(s) could not be written" in err and "--resume" in err
    assert err.count("FAILED") == 2 and "Traceback" not in err
    monkeypatch.delenv("RMT_ENGINE_TEST_FAIL")
    monkeypatch.setattr(st, "update_attrs", real)
    assert main(["run", str(toml), "--store", str(store), "--resume", "--no-progress"]) == 0
    assert "2 computed, 2 skipped" in capsys.readouterr().out


# --------------------------------------------------------------------------- clear errors


def test_show_and_report_on_a_damaged_store_are_clear_errors(reference, tmp_path, capsys):
    s = _copy(reference, tmp_path / "bad.zarr")
    _flip(_chunks(s, "sigma_min_F")[0])
    assert main(["show", str(s)]) == 2
    err = capsys.readouterr().err
    assert "damaged store" in err and "sigma_min_F" in err and "--resume" in err
    assert main(["report", str(s), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "damaged store" in err and "sigma_min_F" in err


@contextlib.contextmanager
def _unprivileged():
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def _unprivileged_readable(base):
    for p in [base, *base.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def test_resume_on_a_read_only_store_is_a_clear_error(reference, capsys):
    base = Path(tempfile.mkdtemp(prefix="rmt_ro_"))  # /tmp: reachable by the unprivileged user
    try:
        toml = base / "s.toml"
        toml.write_text(TOML)
        s = _copy(reference, base / "ro.zarr")
        _unprivileged_readable(base)
        for p in [s, *s.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        with _unprivileged():
            rc = main(["run", str(toml), "--store", str(s), "--resume", "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert f"cannot resume the store {s}" in err and "not writable" in err
        # its parent too (the lock file goes there)
        for p in [s, *s.rglob("*")]:
            p.chmod(0o777 if p.is_dir() else 0o666)  # the store itself is writable, its directory is not
        base.chmod(0o555)
        with _unprivileged():
            rc = main(["run", str(toml), "--store", str(s), "--resume", "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and f"cannot lock the store {s}" in err, err
    finally:
        _unprivileged_readable(base)
        shutil.rmtree(base, ignore_errors=True)


def test_report_into_an_unwritable_directory_is_a_clear_error(reference, capsys):
    base = Path(tempfile.mkdtemp(prefix="rmt_ro_"))
    try:
        s = _copy(reference, base / "r.zarr")
        _unprivileged_readable(base)
        out = base / "locked"
        out.mkdir()
        out.chmod(0o555)
        with _unprivileged():
            rc = main(["report", str(s), "--out", str(out / "report")])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert f"--out {out / 'report'}: cannot write in {out}" in err
    finally:
        _unprivileged_readable(base)
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- coordinates, metadata, layout


def _complete_copy(reference, dst):
    """A copy of the reference as a finished run leaves it: marked complete, metadata consolidated."""
    s = _copy(reference, dst)
    st.update_attrs(s, complete=True)
    st.consolidate(s)
    assert st._is_consolidated(s)
    return s


def _same_files(a, b, name):
    fa = sorted(p.relative_to(a) for p in (a / name).rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in (b / name).rglob("*") if p.is_file())
    assert fa == fb, name
    for f in fa:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_coordinates_are_checksummed_checked_against_the_grid_and_rewritten_on_resume(reference, client, tmp_path):
    for name in ("d1", "n", "trial", "trial_block", "t", "activation"):
        codecs = json.loads((reference / name / "zarr.json").read_text())["codecs"]
        assert any(c["name"] == "crc32c" for c in codecs), name
    s = _complete_copy(reference, tmp_path / "c.zarr")
    _flip(_chunks(s, "d1")[0])  # CRC-32C mismatch
    import zarr

    zarr.open_array(str(s / "t"), mode="r+")[...] = np.array([7])  # a readable coordinate with wrong values
    problems = st.verify_store(s)
    assert any("coordinate d1" in p for p in problems), problems
    assert any("coordinate t" in p and "not the study's grid" in p for p in problems), problems
    for partial in (False, True):
        with pytest.raises(st.StoreError, match="coordinate (d1|t)"):
            st.open_results(s, allow_partial=partial)
    msgs = []
    summary = _study().run(s, client=client, resume=True, progress=False, echo=msgs.append)
    assert summary.ok and summary.regions_computed == 0, (summary.line(), msgs)
    assert any("coordinate d1" in m and "coordinate t" in m for m in msgs), msgs
    assert st.verify_store(s) == []
    for name in ("d1", "t"):
        _same_files(s, reference, name)
    ds = st.open_results(s)
    assert ds["d1"].values.tolist() == [16, 32] and ds["t"].values.tolist() == [2]
    _assert_bitwise_equal(s, reference)


@pytest.mark.parametrize("what,expect", [("sigma_min_F/zarr.json", 0), ("sigma_min_F", 4), ("done/zarr.json", 0),
                                         (f"{st.CHECK_NAME}/zarr.json", 0)])
def test_deleted_metadata_of_a_complete_consolidated_store_is_restored(what, expect, reference, client, tmp_path):
    s = _complete_copy(reference, tmp_path / "m.zarr")
    target = s / what
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    msgs = []
    summary = _study().run(s, client=client, resume=True, progress=False, echo=msgs.append)
    assert summary.ok, summary.failures
    assert summary.regions_computed == expect, (summary.line(), msgs)
    assert any("recreated the metadata of" in m for m in msgs), msgs
    assert st.verify_store(s) == []
    assert st._is_consolidated(s)
    import xarray as xr

    assert "sigma_min_F" in xr.open_zarr(str(s), consolidated=True)  # the consolidated metadata is whole again
    _assert_bitwise_equal(s, reference)


def test_resume_refuses_a_store_with_another_set_of_variables(reference, client, tmp_path):
    import zarr

    s = _copy(reference, tmp_path / "v.zarr")  # as written by an engine without the field "margin"
    shutil.rmtree(s / "margin")
    g = zarr.open_group(str(s), mode="r+")
    g.attrs["variables"] = [v for v in g.attrs["variables"] if v != "margin"] + ["retired_field"]
    with pytest.raises(st.IncompatibleStoreError, match="margin") as e:
        _study().run(s, client=client, resume=True, progress=False, echo=lambda m: None)
    assert "retired_field" in str(e.value) and "new store" in str(e.value)
    from rmt_engine.study.plan import check_store

    with pytest.raises(st.IncompatibleStoreError, match="missing 1 variable"):
        check_store(_study(), s, resume=True)  # up front: nothing was written
    assert "margin" not in os.listdir(s) and not st.lock_path(s).exists()


def test_metadata_that_differs_from_the_template_is_an_error_and_rewritten_on_resume(reference, client, tmp_path):
    s = _complete_copy(reference, tmp_path / "d.zarr")
    f = s / "delta1" / "zarr.json"
    meta = json.loads(f.read_text())
    meta["data_type"] = "float32"
    f.write_text(json.dumps(meta))
    f2 = s / "done" / "zarr.json"
    meta2 = json.loads(f2.read_text())
    meta2["codecs"] = [c for c in meta2["codecs"] if c["name"] != "crc32c"]
    f2.write_text(json.dumps(meta2))
    problems = st.verify_store(s)
    assert any("delta1" in p and "data_type" in p for p in problems), problems
    assert any("done" in p and "codecs" in p for p in problems), problems
    with pytest.raises(st.StoreError, match="delta1.*data_type"):
        st.open_results(s)
    msgs = []
    summary = _study().run(s, client=client, resume=True, progress=False, echo=msgs.append)
    assert summary.ok and summary.regions_computed == 0, (summary.line(), msgs)
    assert st.verify_store(s) == []
    assert f.read_bytes() == (reference / "delta1" / "zarr.json").read_bytes()
    _assert_bitwise_equal(s, reference)


def test_open_results_allow_partial_masks_regions_that_are_not_done(reference, tmp_path):
    s = _copy(reference, tmp_path / "p.zarr")
    import zarr

    done = zarr.open_array(str(s / "done"), mode="r+")
    idx_a = (0,) * 4 + (1,) + (0,) * 3  # d1 = 32
    done[idx_a + (0,)] = False  # block 0 of d1 = 32: its trials and its per-point values
    done[(0,) * 8 + (1,)] = False  # block 1 of d1 = 16: its trials only
    ref = st.open_results(reference)
    ds = st.open_results(s, allow_partial=True)
    sa, sb = (0, 0, 0, 1, 0, 0, 0), (0,) * 7  # spectrum_n8 has no n dimension
    v, r = ds["spectrum_n8"].values, ref["spectrum_n8"].values
    assert np.isnan(v[sa][:2]).all() and np.isnan(v[sb][2:4]).all()
    assert v[sb][:2].tobytes() == r[sb][:2].tobytes() and v[sa][2:4].tobytes() == r[sa][2:4].tobytes()
    for name in ("sigma_min_F", "delta1", "sigma_min_xkr"):
        v, r = ds[name].values, ref[name].values
        assert np.isnan(v[idx_a][:2]).all() and np.isnan(v[(0,) * 8][2:4]).all(), name
        assert v[(0,) * 8][:2].tobytes() == r[(0,) * 8][:2].tobytes(), name
        assert v[idx_a][2:4].tobytes() == r[idx_a][2:4].tobytes(), name
    for name in ("lambda_min_EM0", "eq67_lower_sharp"):
        v, r = ds[name].values, ref[name].values
        assert np.isnan(v[idx_a]).all(), name  # per-point values of d1 = 32: block 0 not done
        assert v[(0,) * 8].tobytes() == r[(0,) * 8].tobytes(), name
    assert int(ds["done"].values.sum()) == 2
    notes = []
    assert st.verify_store(s, notes=notes) == []  # a partial store is no error ...
    assert notes and "2 of 4 regions" in notes[0] and "not done" in notes[0]  # ... but verify says so


def test_write_task_writes_all_nan_chunks_without_touching_zarrs_global_config(reference, tmp_path, monkeypatch):
    """CI once failed here: ``zarr.config.set`` is process-wide, so a second worker thread restored
    ``write_empty_chunks = False`` while the first was writing and an all-NaN chunk was skipped. The
    store now sets it per array; with the global left at zarr's default (False) and ``config.set``
    forbidden, a task whose ``asym_ratio_spike`` is all NaN still writes that chunk, and the store verifies."""
    import zarr

    from rmt_engine.study import tasks

    s = _copy(reference, tmp_path / "s.zarr")
    study = _study()
    tpt = st.store_attrs(s)["trials_per_task"]
    variables = st.layout(study.cube_axes(), study.t, study.trials, tpt, study.save_spectrum, study.train)
    task = plan_tasks(study, tpt)[0][0]
    name = "asym_ratio_spike"
    var = {v.name: v for v in variables}[name]
    keys = st._region_chunk_keys(zarr.open_group(s, mode="r")[name],
                                 st.region(var, task.point, task.block, study.trials, tpt))
    for k in keys:
        (s / name / k).unlink()
    write = st.write_task

    def all_nan(path, variables, point, block, trials, tpt, values):
        values = dict(values, **{name: np.full_like(values[name], np.nan)})
        return write(path, variables, point, block, trials, tpt, values)

    def forbidden(*a, **k):
        raise AssertionError("write_task must not change zarr's process-wide config")

    monkeypatch.setattr(tasks._store, "write_task", all_nan)
    monkeypatch.setattr(zarr.config, "set", forbidden)
    assert zarr.config.get("array.write_empty_chunks") is False
    execute_task(make_job(study, s, task, variables, tpt))
    assert all((s / name / k).is_file() for k in keys), "an all-NaN chunk of a done region was skipped"
    assert not st.verify_store(s)
