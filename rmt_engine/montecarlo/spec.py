"""``TrialSpec``: everything that defines one grid point of a study (one trial = one draw of W0, V0)."""

from __future__ import annotations

import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from numbers import Integral

import numpy as np

from .fields import SYMBOLIC_T

DTYPES = ("float64", "float32")
#: Largest explicit Khatri-Rao order (the Hermite coefficients are accurate to order 2000; beyond
#: a few dozen, G^{o t} is the identity to rounding for any data without repeated columns).
MAX_T = 1000
#: Accepted range of w1 (the std of W0 entries); see ``validate_spec``.
W1_RANGE = (1e-3, 100.0)
#: Accepted range of w2 (the std of V0 entries); see ``validate_spec``. V0 is drawn with unit variance
#: and w2 multiplied in at the end (``gram.accumulate``), so no w2^2 is formed inside a sum: below,
#: sigma_max(V0) ~ w2 sqrt(d1) and eq19_scale = w1 w2 sqrt(d0 d1) would leave the normal float64
#: range (2.2e-308); above, the Eq. 9 margin (~ w2^-6: beta, nu ~ w2, h0 ~ w2^2) underflows to 0
#: (at w2 ~ 1e45 for n = 16, earlier for larger sizes) and h0 ~ w2^2 d2 d1 n grows toward overflow.
W2_RANGE = (1e-300, 1e20)
#: Default bytes of one row block ``phi(W0_b X)`` (block_rows = this / (8 n), clamped).
DEFAULT_BLOCK_BYTES = 32 * 2**20


def is_integer(v) -> bool:
    """True for a Python or NumPy integer, False for a bool (``True`` is not a width); the one
    integer test of the engine's input checks (spec, study file, training spec)."""
    return isinstance(v, Integral) and not isinstance(v, (bool, np.bool_))


@dataclass(frozen=True)
class TrialSpec:
    """One grid point.

    Shapes: X is ``d0 x n`` (unit columns), W0 ``d1 x d0`` with N(0, w1^2) entries, V0 ``d2 x d1``
    with N(0, w2^2) entries (Eq. 17), Y ``d2 x n`` with ``||Y||_F = 1`` (Eq. 16).
    Validated ranges: ``w1`` in ``W1_RANGE`` = [1e-3, 100], ``w2`` in ``W2_RANGE`` = [1e-300, 1e20]
    (the reasons are in ``validate_spec``'s messages and beside the constants).
    ``t`` are the Khatri-Rao orders of Eq. 58/67: integers ``1..MAX_T`` and/or ``"auto"`` (the
    default: the smallest informative order of the grid point, ``t_auto`` in the record) and/or
    ``"best"`` (the admissible order up to ``fields.BEST_T_MAX`` with the largest sharp bound, ``t_best``).
    ``bound_delta1``, ``bound_delta2`` are the deviations at which Eq. 67's bounds are reported
    (not the measured ``delta1``, ``delta2`` of a trial); ``C`` is the user constant of Eq. 9 (margin = C alpha_f mu^6 /
    (beta^2 nu^2 h)); ``chi_max`` bounds sigma_max(V_k) in beta (Eq. 18; default sigma_max(V0)).
    ``block_rows`` rows of W0 are processed at once (``None``: about 32 MiB per block).
    ``accuracy``: the largest relative error bound of ``sigma_min_F`` accepted from the Gram route
    (lambda_min of M0 = F^T F squares cond(F)); above it the trial takes the accurate route, a
    streamed QR of F (``sigma_min_F_route = 1``). In (0, 1]; with ``1`` the QR route is taken only
    where the Gram route cannot resolve sigma_min at all (its error bound is infinite).
    ``data_seed``: the seed of the data X (and only of X: labels and weights keep ``seed``), so one
    study can draw several X per case with the same weights' seeds; ``None`` (default) uses ``seed``.
    ``ntk``: also record the NTK at initialization (``fields.NTK_FIELDS``; d2 = 1 only): the same pass
    accumulates its W-layer part (one more ``dsyrk`` per block and one n x n sum per lane).
    """

    activation: str
    n: int
    d0: int
    d1: int
    d2: int = 1
    w1: float = 1.0
    w2: float = 1.0
    t: tuple = ("auto",)
    data: str = "sphere"
    data_path: str | None = None
    seed: int = 0
    dtype: str = "float64"
    block_rows: int | None = None
    bound_delta1: float = 0.2
    bound_delta2: float = 0.2
    C: float = 1.0
    chi_max: float | None = None
    backend: str = "numpy"
    accuracy: float = 1e-6
    ntk: bool = False
    data_seed: int | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self):
        t = self.t
        if is_integer(t) or isinstance(t, str):
            t = (t,)
        if not isinstance(t, (tuple, list)):
            raise ValueError(f"TrialSpec.t must be a Khatri-Rao order (an integer >= 1, 'auto' or 'best') or a "
                             f"sequence of them, got {t!r} ({type(t).__name__})")
        object.__setattr__(self, "t", tuple(int(x) if is_integer(x) else x.strip().lower() if isinstance(x, str)
                                            else x for x in t))
        if not isinstance(self.activation, str):
            raise ValueError(f"TrialSpec.activation must be a name (a string), got {self.activation!r}")
        object.__setattr__(self, "activation", self.activation.strip().lower())
        validate_spec(self)

    @property
    def rows_per_block(self) -> int:
        if self.block_rows is not None:
            return min(self.block_rows, self.d1)
        return int(min(self.d1, max(64, DEFAULT_BLOCK_BYTES // (8 * self.n))))

    def replace(self, **changes) -> "TrialSpec":
        d = asdict(self)
        d.update(changes)
        return TrialSpec(**d)

    @property
    def data_draw_seed(self) -> int:
        """The seed X is drawn with: ``data_seed``, or ``seed`` when it is None."""
        return self.seed if self.data_seed is None else self.data_seed

    def data_key(self) -> tuple:
        """What X depends on (for caching per grid point)."""
        return (self.data, self.data_path, self.d0, self.n, self.data_draw_seed)


#: The default of every optional TrialSpec field: the one place the study files and the CLI take them from.
TRIAL_SPEC_DEFAULTS = {f.name: f.default for f in fields(TrialSpec) if f.default is not MISSING}


def validate_spec(spec: TrialSpec) -> None:
    """Raise ValueError naming the first bad field of ``spec``."""
    from ..theory.activations import activation as _activation  # noqa: PLC0415 (avoid an import cycle)
    from ..sampling.data import DATA_KINDS  # noqa: PLC0415
    from ..backend.xp import BACKENDS  # noqa: PLC0415

    for name in ("n", "d0", "d1", "d2"):
        v = getattr(spec, name)
        if not is_integer(v) or v < 1:
            raise ValueError(f"TrialSpec.{name} must be a positive integer, got {v!r}")
    for name in ("w1", "w2"):
        v = getattr(spec, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"TrialSpec.{name} must be a finite number > 0, got {v!r}")
    if not W1_RANGE[0] <= spec.w1 <= W1_RANGE[1]:
        raise ValueError(
            f"TrialSpec.w1 = {spec.w1!r} is outside [{W1_RANGE[0]:g}, {W1_RANGE[1]:g}]: below, E[M0] is "
            "numerically singular (its lambda_min scales like w1^(2t)) and delta1 is rounding noise; above, "
            "the Hermite quadrature needs panels of width 1/w1 (cost and memory grow like w1)")
    if not W2_RANGE[0] <= spec.w2 <= W2_RANGE[1]:
        raise ValueError(
            f"TrialSpec.w2 = {spec.w2!r} is outside [{W2_RANGE[0]:g}, {W2_RANGE[1]:g}]: below, sigma_max(V0) ~ w2 "
            "sqrt(d1) and eq19_scale = w1 w2 sqrt(d0 d1) leave float64's normal range; above, the Eq. 9 margin "
            "(~ w2^-6) underflows to 0 and h0 (~ w2^2 d2 d1 n) heads for overflow")
    if not spec.t:
        raise ValueError("TrialSpec.t must name at least one Khatri-Rao order t >= 1, 'auto' or 'best'")
    for t in spec.t:
        if t in SYMBOLIC_T:
            continue
        if not is_integer(t) or not 1 <= t <= MAX_T:
            raise ValueError(f"TrialSpec.t: every Khatri-Rao order must be 'auto', 'best' or an integer in [1, {MAX_T}], "
                             f"got {t!r}")
    if len(set(spec.t)) != len(spec.t):
        raise ValueError(f"TrialSpec.t has repeated orders: {spec.t}")
    _activation(spec.activation)  # raises with the list of valid names
    if spec.data not in DATA_KINDS:
        raise ValueError(f"TrialSpec.data: unknown data kind {spec.data!r}; expected one of {DATA_KINDS}")
    if spec.data_path is not None and not isinstance(spec.data_path, (str, os.PathLike)):
        raise ValueError(f"TrialSpec.data_path must be a path (a string), got {spec.data_path!r} "
                         f"({type(spec.data_path).__name__})")
    if spec.data == "file" and not spec.data_path:
        raise ValueError("TrialSpec.data = 'file' needs data_path (a .npy or .npz file)")
    if spec.data != "file" and spec.data_path is not None:
        raise ValueError(f"TrialSpec.data_path is set ({spec.data_path!r}) but data = {spec.data!r} does not read a "
                         "file: set data = 'file', or drop data_path")
    if not is_integer(spec.seed) or spec.seed < 0:
        raise ValueError(f"TrialSpec.seed must be a non-negative integer, got {spec.seed!r}")
    if spec.data_seed is not None and (not is_integer(spec.data_seed) or spec.data_seed < 0):
        raise ValueError(f"TrialSpec.data_seed must be a non-negative integer or None, got {spec.data_seed!r}")
    if spec.dtype not in DTYPES:
        raise ValueError(f"TrialSpec.dtype: unknown dtype {spec.dtype!r}; expected one of {DTYPES}")
    if spec.block_rows is not None and (not is_integer(spec.block_rows) or spec.block_rows < 1):
        raise ValueError(f"TrialSpec.block_rows must be a positive integer or None, got {spec.block_rows!r}")
    for name in ("bound_delta1", "bound_delta2", "C"):
        v = getattr(spec, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"TrialSpec.{name} must be a number, got {v!r} ({type(v).__name__})")
    if not (0.0 <= spec.bound_delta1 < 1.0):
        raise ValueError(f"TrialSpec.bound_delta1 must lie in [0, 1), got {spec.bound_delta1!r}")
    if not (0.0 <= spec.bound_delta2 < math.inf):
        raise ValueError(f"TrialSpec.bound_delta2 must be finite and >= 0, got {spec.bound_delta2!r}")
    if isinstance(spec.accuracy, bool) or not isinstance(spec.accuracy, (int, float)) or not 0 < spec.accuracy <= 1:
        raise ValueError(f"TrialSpec.accuracy (the relative error accepted on sigma_min_F before the accurate QR "
                         f"route is taken) must lie in (0, 1], got {spec.accuracy!r}")
    if not isinstance(spec.ntk, (bool, np.bool_)):
        raise ValueError(f"TrialSpec.ntk must be true or false, got {spec.ntk!r}")
    if spec.ntk and spec.d2 != 1:
        raise ValueError(f"TrialSpec.ntk records the NTK of a single-output network: d2 must be 1, got {spec.d2}")
    if not (0 < spec.C < math.inf):
        raise ValueError(f"TrialSpec.C must be finite and > 0, got {spec.C!r}")
    if spec.chi_max is not None and (isinstance(spec.chi_max, bool) or not isinstance(spec.chi_max, (int, float))
                                     or not 0 < spec.chi_max < math.inf):
        raise ValueError(f"TrialSpec.chi_max must be finite and > 0 or None, got {spec.chi_max!r}")
    if spec.backend not in BACKENDS:
        raise ValueError(f"TrialSpec.backend: unknown backend {spec.backend!r}; expected one of {BACKENDS}")
