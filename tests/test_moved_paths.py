"""The flat module paths of 0.1 still import (``rmt_engine._moved``), warn with the new path, and are the
same module objects; the public API is unchanged."""

from __future__ import annotations

import importlib
import subprocess
import sys

import rmt_engine
from rmt_engine._moved import MOVED

#: ``rmt_engine.__all__`` before the layered layout (0.1): every name must still import from the top.
API_01 = [
    "__version__", "Activation", "activation", "available_activations", "register_activation",
    "DATA_KINDS", "check_data", "make_data", "normalize_columns", "expected_gram", "FIELDS",
    "record_fields", "gram", "dual_kernel", "hermite_coefficients", "hermite_tail",
    "normalized_hermite_coefficients", "second_moment", "RankDeficiencyWarning", "khatri_rao",
    "khatri_rao_extremes", "khatri_rao_gram", "symmetric_tensor_dim", "TrialSpec",
    "extreme_eigenvalues", "extreme_singular_values", "IncompatibleStoreError",
    "IncompleteStoreError", "StoreError", "open_results", "RunSummary", "Study", "StudySpecError",
    "run_trial", "deterministic_equivalent", "predict_record", "TrainSpec", "train_trial",
]


def test_public_api_of_01_still_imports():
    missing = [name for name in API_01 if not hasattr(rmt_engine, name)]
    assert not missing
    assert set(API_01) <= set(rmt_engine.__all__)


def test_old_paths_warn_and_are_the_new_modules():
    """In a fresh interpreter (nothing imported yet): each old path warns, naming the new one, and binds it."""
    code = (
        "import warnings, importlib\n"
        "from rmt_engine._moved import MOVED\n"
        "warnings.simplefilter('always')\n"
        "for old, new in sorted(MOVED.items()):\n"
        "    with warnings.catch_warnings(record=True) as w:\n"
        "        warnings.simplefilter('always')\n"
        "        mod = importlib.import_module(old)\n"
        "    assert mod is importlib.import_module(new), (old, mod)\n"
        "    msgs = [str(x.message) for x in w if issubclass(x.category, DeprecationWarning)]\n"
        "    assert any(new in m for m in msgs), (old, msgs)\n"
        "print('ok', len(MOVED))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"ok {len(MOVED)}", r.stderr


def test_every_moved_target_exists_and_no_flat_module_is_left():
    for old, new in MOVED.items():
        importlib.import_module(new)
        flat = old.removeprefix("rmt_engine.")
        assert not (rmt_engine.__path__ and __import__("pathlib").Path(rmt_engine.__path__[0], flat + ".py").exists())


def test_monkeypatching_through_the_old_path_patches_the_real_module(monkeypatch):
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import rmt_engine.extremes as old  # noqa: PLC0415
    import rmt_engine.linalg.extremes as new  # noqa: PLC0415

    monkeypatch.setattr(old, "DENSE_BELOW_N", 7)
    assert new.DENSE_BELOW_N == 7
