"""rmt_engine: random-matrix Monte Carlo for the bounds of Subquadratic Overparameterization (NeurIPS 2021).

Public API (re-exports only; each name lives in the module that owns it):
activations  activation, register_activation, available_activations, Activation
hermite      hermite_coefficients, normalized_hermite_coefficients, hermite_tail, second_moment, dual_kernel
expected     expected_gram                       (E[M0]/d1, Eq. 56)
khatri_rao   khatri_rao, khatri_rao_gram, khatri_rao_extremes, symmetric_tensor_dim
spectra      extreme_singular_values, extreme_eigenvalues
data         make_data, check_data, normalize_columns
gram         gram                                (streamed M0, Eq. 59)
spec, trial  TrialSpec, run_trial, record_fields
study, store Study, open_results
train        TrainSpec, train_trial              (gradient descent from Theta0, Eq. 12-14)
asymptotics  deterministic_equivalent, predict_record (Louart-Liao-Couillet 2018)
"""

from ._version import __version__
from .activations import Activation, activation, available_activations, register_activation
from .data import DATA_KINDS, check_data, make_data, normalize_columns
from .expected import expected_gram
from .fields import FIELDS, record_fields
from .gram import gram
from .hermite import dual_kernel, hermite_coefficients, hermite_tail, normalized_hermite_coefficients, second_moment
from .khatri_rao import (RankDeficiencyWarning, khatri_rao, khatri_rao_extremes, khatri_rao_gram,
                         symmetric_tensor_dim)
from .spec import TrialSpec
from .spectra import extreme_eigenvalues, extreme_singular_values
from .store import IncompatibleStoreError, IncompleteStoreError, StoreError, open_results
from .study import RunSummary, Study, StudySpecError
from .trial import run_trial
from .asymptotics import deterministic_equivalent, predict_record
from .train import TrainSpec, train_trial

__all__ = [
    "__version__", "Activation", "activation", "available_activations", "register_activation",
    "DATA_KINDS", "check_data", "make_data", "normalize_columns", "expected_gram", "FIELDS",
    "record_fields", "gram", "dual_kernel", "hermite_coefficients", "hermite_tail",
    "normalized_hermite_coefficients", "second_moment", "RankDeficiencyWarning", "khatri_rao",
    "khatri_rao_extremes", "khatri_rao_gram", "symmetric_tensor_dim", "TrialSpec",
    "extreme_eigenvalues", "extreme_singular_values", "IncompatibleStoreError",
    "IncompleteStoreError", "StoreError", "open_results", "RunSummary", "Study", "StudySpecError",
    "run_trial", "deterministic_equivalent", "predict_record", "TrainSpec", "train_trial",
]
