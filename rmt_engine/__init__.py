"""rmt_engine: random-matrix Monte Carlo for the bounds of Subquadratic Overparameterization (NeurIPS 2021).

The package is layered by concern; each folder imports only the folders before it
(``tests/test_import_graph.py`` enforces it):

backend < linalg < sampling < theory < montecarlo < study < report
(then ``cli``, ``testing`` and ``pytest_plugin`` at the top, which may import any of them).

Public API (re-exports only; each name lives in the module that owns it):
theory.activations   activation, register_activation, available_activations, Activation
theory.hermite       hermite_coefficients, normalized_hermite_coefficients, hermite_tail, second_moment, dual_kernel
theory.expected      expected_gram                       (E[M0]/d1, Eq. 56)
theory.khatri_rao    khatri_rao, khatri_rao_gram, khatri_rao_extremes, symmetric_tensor_dim
linalg.spectra       extreme_singular_values, extreme_eigenvalues
sampling.data        make_data, check_data, normalize_columns
montecarlo.gram      gram                                (streamed M0, Eq. 59)
montecarlo.spec, .trial, .fields   TrialSpec, run_trial, run_trial_path, record_fields
study, study.store   Study, open_results
montecarlo.train     TrainSpec, train_trial              (gradient descent from Theta0, Eq. 12-14)
theory.asymptotics   deterministic_equivalent, predict_record (Louart-Liao-Couillet 2018)

The flat module paths of earlier versions (``rmt_engine.trial``, ``rmt_engine.store``, ...) still
import, with a DeprecationWarning naming the new path (``rmt_engine._moved``).
"""

from ._version import __version__
from . import _moved
from .theory.activations import Activation, activation, available_activations, register_activation
from .sampling.data import DATA_KINDS, check_data, make_data, normalize_columns
from .theory.expected import expected_gram
from .montecarlo.fields import FIELDS, record_fields
from .montecarlo.gram import gram
from .theory.hermite import dual_kernel, hermite_coefficients, hermite_tail, normalized_hermite_coefficients, second_moment
from .theory.khatri_rao import (RankDeficiencyWarning, khatri_rao, khatri_rao_extremes, khatri_rao_gram,
                                symmetric_tensor_dim)
from .montecarlo.spec import TrialSpec
from .linalg.spectra import extreme_eigenvalues, extreme_singular_values
from .study.store import IncompatibleStoreError, IncompleteStoreError, StoreError, open_results
from .study import RunSummary, Study, StudySpecError
from .montecarlo.trial import run_trial, run_trial_path
from .theory.asymptotics import deterministic_equivalent, predict_record
from .montecarlo.train import TrainSpec, train_trial
from .report import accessor as _accessor  # noqa: F401 - registers the ``ds.rmt`` xarray accessor

__all__ = [
    "__version__", "Activation", "activation", "available_activations", "register_activation",
    "DATA_KINDS", "check_data", "make_data", "normalize_columns", "expected_gram", "FIELDS",
    "record_fields", "gram", "dual_kernel", "hermite_coefficients", "hermite_tail",
    "normalized_hermite_coefficients", "second_moment", "RankDeficiencyWarning", "khatri_rao",
    "khatri_rao_extremes", "khatri_rao_gram", "symmetric_tensor_dim", "TrialSpec",
    "extreme_eigenvalues", "extreme_singular_values", "IncompatibleStoreError",
    "IncompleteStoreError", "StoreError", "open_results", "RunSummary", "Study", "StudySpecError",
    "run_trial", "run_trial_path", "deterministic_equivalent", "predict_record", "TrainSpec", "train_trial",
]

_moved.install()
