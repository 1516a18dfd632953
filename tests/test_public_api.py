"""The public names of the contract exist at the top level and are the owners' objects."""

import rmt_engine


def test_contract_names_are_exported():
    for name in ["activation", "register_activation", "hermite_coefficients", "hermite_tail",
                 "expected_gram", "khatri_rao", "khatri_rao_gram", "extreme_singular_values",
                 "make_data", "gram", "run_trial", "TrialSpec", "Study", "open_results"]:
        assert hasattr(rmt_engine, name), name
    assert set(rmt_engine.__all__) <= set(dir(rmt_engine))


def test_importing_does_not_import_cupy_or_matplotlib():
    import subprocess
    import sys

    code = "import sys, rmt_engine; print('cupy' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
