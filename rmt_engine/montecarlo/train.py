"""Full-batch gradient descent on ``h(Theta) = ||V phi(W X) - Y||_F^2`` from the record's own Theta0.

Rule of this module: the weights trained are BITWISE the matrices the record's streamed pass
(``run_trial``) used -- ``W0`` (d1 x d0, N(0, w1^2)) from the stream ``("W0", trial)`` and ``V0``
(d2 x d1, N(0, w2^2)) from ``("V0", trial)``, generated whole here by the same counter-based
sampler (``gram.normal_block``: every element depends only on (key, row, column)) -- and every
array operation is written against the inputs' namespace ``xp`` (NumPy or CuPy).

Shapes: X ``d0 x n`` (unit columns), Y ``d2 x n``, W ``d1 x d0``, V ``d2 x d1``, F = phi(W X) and
D = phi'(W X) ``d1 x n``, residual ``R = V F - Y`` (``d2 x n``).

Equations (the paper's numbers)
- Loss (Eq. 16, no 1/2): ``h = ||R||_F^2``; gradients ``grad_V = 2 R F^T``, ``grad_W = 2 ((V^T R) o D) X^T``.
  Both layers step together (Eq. 12): ``Theta_{k+1} = Theta_k - lr grad h(Theta_k)``.
- Step (Eq. 13 with beta_f = 2, ||grad f(Phi(Theta0))|| = 2 sqrt(h0)): ``lr=None`` means
  ``lr = lr_scale * eta_max``, ``eta_max = 1 / (2 beta sqrt(h0) + 2 mu^2 + 2 nu^2)`` with mu, nu, beta of
  Eq. 18 exactly as the record computes them (its ``eta_max``); a float ``lr`` is multiplied by
  ``lr_scale`` too (default 1, so it is used as is).
- Rate (Eq. 14 with C = 1, alpha_f = 2): ``gd_rate_theory = 1 - 2 lr mu^2`` at the lr used, against the
  fitted per-step contraction ``gd_rate``.
- Radius (Eq. 6): ``rho = mu / (2 beta)``; ``gd_max_dist_over_rho = max_k ||Theta_k - Theta0||_F / rho``.
  Condition (Eq. 9) is the record's ``margin``; the width law (Eq. 20/21) is what a study measures.
- Bound on V (Eq. 18): ``chi_max >= sigma_max(V_k)``; ``gd_max_sigma_V_over_chi`` checks it.
- NTK: the Jacobian J of ``Phi(Theta) = vec(V F)`` (d2 n outputs, output index ``p n + a`` for row p
  of V F and sample a, i.e. row-major vec) with respect to all of Theta = (W, V). Its Gram matrix
  ``K = J J^T`` is ``(d2 n) x (d2 n)`` with block (p, q) = ``G o (D^T diag(V_p o V_q) D) + delta_pq M``,
  ``G = X^T X``, ``M = F^T F`` (for d2 = 1: ``G o (D^T diag(v^2) D) + M0``). Every block term is PSD,
  so ``K >= I (x) M`` and ``mu_ntk = sigma_min(J) >= sigma_min(F) = mu`` (Weyl).

Stopping: converged (status 0) at the first k with ``h_k <= tol h_0``; max_iters (1) when
k = max_iters is reached without it; diverged (2) when h_k is not finite or ``h_k > 1e6 h_0``. K, the
last iterate evaluated, is ``gd_iterations`` (= the number of steps taken).

Memory (float64, held whole): F and D (2 d1 n); W0, W, grad_W and one temporary for ||W - W0|| (4 d1 d0);
V0, V, grad_V (3 d2 d1); the NTK Grams of Theta_0 (kept for ``ntk_rel_change``) and of Theta_K
(2 (d2 n)^2, plus one d1 x n temporary while each is formed); the loss of every iteration
(max_iters + 1 floats). On NumPy ``W X`` never exists whole: each iteration is two passes of row
pieces of ~512 KiB over W, F and D -- forward: ``W_b X``, phi, phi' and ``V F += V_b F_b``; backward:
the columns ``R F_b^T`` of grad_V and the rows ``((V_b^T R) o D_b) X^T`` of grad_W -- so every piece is
still in cache when it is reused. On CuPy the products are whole (+ d1 n for W X and d1 n for the
activation kernel's phi''). Cost per iteration: ``4 d1 d0 n + 6 d1 d2 n`` flops of GEMM (W X,
grad_W; V F, R F^T, V^T R) plus ``d1 n`` evaluations of phi and phi' (for small d0 these dominate:
studies/benchmark_train.py); the NTK Grams cost ``d2 (d2 + 1) d1 n^2 + 2 d1 n^2`` flops each.

Determinism: ``train_trial`` and ``gradient_descent`` run with BLAS limited to one thread (threadpoolctl)
and use no threads of their own, so the same (spec, trial) gives the bitwise same curve in any
process, on any number of workers (on one backend and machine). Training always runs in float64
(``spec.dtype = "float32"`` concerns only the record's streamed pass).

Not built: ``gradient_descent_batched`` (a leading trial axis to run several small trials per GPU
kernel): each trial stops at its own iteration and has its own lr, so it needs masked updates and
per-trial histories; one trial per call is what this module offers.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field, fields
from numbers import Real

import numpy as np

from ..theory import bounds
from ..sampling import rng
from ..backend.xp import array_namespace, backend_name, get_xp
from ..theory.activations import Activation, activation as get_activation
from .fields import FieldInfo
from .gram import normal_block
from .spec import TrialSpec, is_integer
from ..linalg.spectra import eigvalsh, spectral_norm_sym

__all__ = [
    "TrainSpec", "GDResult", "TRAIN_FIELDS", "CURVE_NAME", "CURVE_DIM", "CURVE_FIELD", "STATUS_NAMES",
    "DIVERGENCE_FACTOR", "loss_and_grads", "gradient_descent", "train_trial", "add_training", "curve_iterations",
    "curve_on_grid", "initial_weights", "step_size", "ntk_gram", "fitted_rate",
]

#: ``gd_status`` codes.
CONVERGED, MAX_ITERS, DIVERGED = 0, 1, 2
STATUS_NAMES = {CONVERGED: "converged", MAX_ITERS: "max_iters", DIVERGED: "diverged"}
#: Divergence: h_k > DIVERGENCE_FACTOR * h_0 (or h_k not finite).
DIVERGENCE_FACTOR = 1e6
#: Log-spaced recording: points per decade of iterations.
POINTS_PER_DECADE = 20
#: Elements of one row piece of ``W X`` mapped through phi and phi' at a time (NumPy).
_CHUNK_ELEMS = 2**16
_LAYERS = ("W", "V")


# ------------------------------------------------------------------------------------------------
# the settings



def _is_real(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class TrainSpec:
    """How to train one trial.

    ``max_iters``: most GD steps (>= 1). ``tol``: stop when ``h_k <= tol h_0`` (0 < tol < 1).
    ``lr``: None for Eq. 13's step at initialization (the record's ``eta_max``), else a step > 0;
    either is multiplied by ``lr_scale`` (> 0, default 1). ``record_every``: ``"log"`` records the
    loss at about 20 log-spaced iterations per decade, an int k at every k-th iteration; the last
    iteration is always recorded (see :func:`curve_iterations`).
    """

    max_iters: int = 20000
    tol: float = 1e-6
    lr: float | None = None
    lr_scale: float = 1.0
    record_every: str | int = "log"

    def __post_init__(self):
        if not is_integer(self.max_iters) or self.max_iters < 1:
            raise ValueError(f"TrainSpec.max_iters must be an integer >= 1, got {self.max_iters!r}")
        object.__setattr__(self, "max_iters", int(self.max_iters))
        if not _is_real(self.tol) or not math.isfinite(self.tol) or not (0.0 < self.tol < 1.0):
            raise ValueError(f"TrainSpec.tol must be a finite number with 0 < tol < 1 (stop when "
                             f"h_k <= tol h_0), got {self.tol!r}")
        if self.lr is not None and (not _is_real(self.lr) or not math.isfinite(self.lr) or self.lr <= 0):
            raise ValueError(f"TrainSpec.lr must be a finite number > 0 or None (Eq. 13's step), got {self.lr!r}")
        if not _is_real(self.lr_scale) or not math.isfinite(self.lr_scale) or self.lr_scale <= 0:
            raise ValueError(f"TrainSpec.lr_scale must be a finite number > 0, got {self.lr_scale!r}")
        r = self.record_every
        if not (r == "log" if isinstance(r, str) else is_integer(r) and r >= 1):
            raise ValueError(f"TrainSpec.record_every must be 'log' or a positive integer, got {r!r}")
        if not isinstance(r, str):
            object.__setattr__(self, "record_every", int(r))

    @classmethod
    def from_dict(cls, table: dict) -> "TrainSpec":
        """From a mapping (e.g. a ``[train]`` TOML table); unknown keys are a ValueError naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - names)
        if unknown:
            raise ValueError(f"unknown TrainSpec key(s) {unknown}; expected some of {sorted(names)}")
        return cls(**dict(table))

    def to_dict(self) -> dict:
        return asdict(self)


def step_size(train: TrainSpec, eta_max: float) -> float:
    """The lr ``train`` asks for: ``lr_scale * (eta_max if train.lr is None else train.lr)``."""
    base = eta_max if train.lr is None else train.lr
    return float(train.lr_scale * base)


def curve_iterations(train: TrainSpec) -> np.ndarray:
    """The iterations at which a trial's loss is recorded (int64, ascending, unique, 0 and max_iters included).

    ``"log"``: 0 and ``round(10 ** (j / 20))`` for j = 0, 1, ... up to max_iters (so 0, 1, ..., 9, 10, 11,
    13, 14, 16, 18, 20, 22, 25, ...), then max_iters; an int k: 0, k, 2k, ..., then max_iters. Every
    trial of a study shares this grid; a trial that stops at K < max_iters has its loss on the grid
    points <= K (:func:`curve_on_grid` puts NaN after).
    """
    m = train.max_iters
    if train.record_every == "log":
        top = int(math.floor(POINTS_PER_DECADE * math.log10(m))) + 1
        pts = np.floor(10.0 ** (np.arange(top + 1) / POINTS_PER_DECADE) + 0.5).astype(np.int64)
        pts = pts[pts <= m]
    else:
        pts = np.arange(0, m + 1, train.record_every, dtype=np.int64)
    return np.unique(np.concatenate([[0], pts, [m]]).astype(np.int64))


def curve_on_grid(train: TrainSpec, iterations, losses) -> np.ndarray:
    """A trial's curve (``iterations``, ``losses``) on the shared grid ``curve_iterations(train)``:
    float64, NaN at grid points the trial did not reach (after it stopped). A trial's own last
    iteration K, when it is not a grid point, has no place on the grid (it is ``gd_final_loss``)."""
    grid = curve_iterations(train)
    out = np.full(grid.shape, np.nan)
    it = np.asarray(iterations, dtype=np.int64)
    pos = np.searchsorted(grid, it)
    ok = (pos < grid.size) & (grid[np.minimum(pos, grid.size - 1)] == it)
    out[pos[ok]] = np.asarray(losses, dtype=np.float64)[ok]
    return out


# ------------------------------------------------------------------------------------------------
# fields of the record


def _f(long_name, equation="", units="1"):
    return FieldInfo(long_name, equation, units, per_point=False, per_t=False)


#: The fields ``train_trial`` adds to the record (name -> FieldInfo(long_name, equation, units)), in order.
TRAIN_FIELDS: dict[str, FieldInfo] = {
    "gd_status": _f("gradient descent outcome: 0 converged (h_K <= tol h_0), 1 max_iters, 2 diverged", "Eq. 12"),
    "gd_iterations": _f("K, the last iterate evaluated (= GD steps taken)", "Eq. 12", "iterations"),
    "gd_final_loss": _f("h(Theta_K) / h(Theta_0)", "Eq. 14, 16"),
    "gd_rate": _f("fitted per-step contraction exp(slope of log h_k vs k) over k in [K//10, K]", "Eq. 14",
                  "1/iteration"),
    "gd_rate_theory": _f("Eq. 14 contraction 1 - lr alpha_f mu^2 (C = 1, alpha_f = 2) at the lr used", "Eq. 14",
                         "1/iteration"),
    "gd_lr": _f("learning rate used: lr_scale * (eta_max of Eq. 13, or the given lr)", "Eq. 13"),
    "gd_path_length": _f("sum_k ||Theta_{k+1} - Theta_k||_F, Theta = (W, V)", "Lemma 2, Eq. 10"),
    "gd_max_dist": _f("max_k ||Theta_k - Theta_0||_F", "Eq. 10, 11"),
    "gd_max_dist_over_rho": _f("max_k ||Theta_k - Theta_0||_F / rho, rho = mu / (2 beta)", "Eq. 6, 11"),
    "gd_max_sigma_V": _f("max_k sigma_max(V_k)", "Eq. 18"),
    "gd_max_sigma_V_over_chi": _f("max_k sigma_max(V_k) / chi_max (spec.chi_max or sigma_max(V0))", "Eq. 18"),
    "gd_rel_change_W": _f("||W_K - W_0||_F / ||W_0||_F", "App. F"),
    "gd_rel_change_V": _f("||V_K - V_0||_F / ||V_0||_F", "App. F"),
    "mu_ntk": _f("sigma_min of the Jacobian of Phi(Theta) = vec(V phi(W X)) at Theta_0 (>= mu)", "Def. 1, Lemma 3"),
    "mu_ntk_final": _f("sigma_min of the Jacobian of Phi at Theta_K", "Def. 1, Eq. 5"),
    "ntk_rel_change": _f("||J_K J_K^T - J_0 J_0^T||_2 / ||J_0 J_0^T||_2", "App. F"),
}
#: The loss curve: one variable ``CURVE_NAME`` with dimension ``CURVE_DIM`` (coordinate ``curve_iterations``).
CURVE_NAME = "gd_loss"
CURVE_DIM = "iteration"
CURVE_FIELD = _f("h(Theta_k) / h(Theta_0) at the recorded iterations k (NaN after the trial stopped)", "Eq. 14")


# ------------------------------------------------------------------------------------------------
# the loss, its gradient and phi / phi'


@contextlib.contextmanager
def _single_thread_blas():
    """BLAS pools limited to one thread for the block (bitwise-reproducible reductions)."""
    from .gram import _blas_controller  # noqa: PLC0415 - one cached threadpoolctl controller per process

    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


def _pieces(nrows: int, n: int):
    """Row ranges of about ``_CHUNK_ELEMS`` elements of a ``nrows x n`` matrix (fixed by the shape)."""
    step = max(1, _CHUNK_ELEMS // max(1, n))
    return [(a, min(a + step, nrows)) for a in range(0, nrows, step)]


def _phi_dphi_numpy(act: Activation, W, X, F, D, V=None):
    """``F = phi(W X)``, ``D = phi'(W X)`` in row pieces (the product piece is still in cache for phi);
    with ``V`` also returns ``V F`` accumulated piece by piece (the piece of F is still in cache)."""
    n = X.shape[1]
    pieces = _pieces(W.shape[0], n)
    Z = np.empty((pieces[0][1] - pieces[0][0], n))
    P = None if V is None else np.zeros((V.shape[0], n))
    gelu = act.builtin and act.name == "gelu"
    if gelu:
        import scipy.special as sp  # noqa: PLC0415
    for a, b in pieces:
        z = np.matmul(W[a:b], X, out=Z[: b - a])
        if gelu:  # shares Phi(z); the same expressions (hence bits) as activations._gelu / _gelu_d
            cdf = sp.ndtr(z)
            np.multiply(z, cdf, out=F[a:b])
            D[a:b] = cdf + z * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        else:
            F[a:b] = act.phi(z)
            D[a:b] = act.dphi(z)
        if P is not None:
            P += V[:, a:b] @ F[a:b]
    return P


def _phi_dphi(act: Activation, W, X, F=None, D=None):
    """``(F, D) = (phi(W X), phi'(W X))``, into ``F`` and ``D`` when given (NumPy)."""
    F, D, _ = _forward(act, W, X, None, F, D)
    return F, D


def _forward(act: Activation, W, X, V, F=None, D=None):
    """``(F, D, V F)`` with F = phi(W X), D = phi'(W X) (``V F`` is None when V is None); on NumPy into
    ``F`` and ``D`` when given, in one pass of row pieces over W."""
    xp = array_namespace(W, X)
    if backend_name(xp) == "numpy":
        if F is None:
            F = np.empty((W.shape[0], X.shape[1]))
            D = np.empty_like(F)
        P = _phi_dphi_numpy(act, W, X, F, D, V)
        return F, D, P
    Z = W @ X
    Fz = Dz = None
    if act.builtin and Z.dtype == xp.float64:
        from ..backend.kernels import ACTIVATION_IDS, activation_all_gpu  # noqa: PLC0415

        if act.name in ACTIVATION_IDS:
            Fz, Dz, _ = activation_all_gpu(act.name, Z)
    if Fz is None:
        Fz, Dz = act.phi(Z), act.dphi(Z)
    return Fz, Dz, None if V is None else V @ Fz


def _backward(V, R, F, D, X, step_W: bool = True, step_V: bool = True):
    """``(grad_W / 2, grad_V / 2) = (((V^T R) o D) X^T, R F^T)`` (None for a layer not asked for); overwrites D.

    On NumPy one pass of row pieces over F and D: each piece gives its own columns of grad_V and
    rows of grad_W (no sum runs across pieces, so the numbers are those of the whole products)."""
    xp = array_namespace(V, R, F, D, X)
    if backend_name(xp) != "numpy":
        gV = R @ F.T if step_V else None
        gW = None
        if step_W:
            D *= V.T @ R
            gW = D @ X.T
        return gW, gV
    d1, d0 = D.shape[0], X.shape[0]
    gW = np.empty((d1, d0)) if step_W else None
    gV = np.empty((V.shape[0], d1)) if step_V else None
    Xt = X.T
    for a, b in _pieces(d1, X.shape[1]):
        if step_V:
            np.matmul(R, F[a:b].T, out=gV[:, a:b])
        if step_W:
            Da = D[a:b]
            Da *= V[:, a:b].T @ R
            np.matmul(Da, Xt, out=gW[a:b])
    return gW, gV


def _fro_norm(a) -> float:
    """``||a||_F`` scaled by ``max |a_ij|`` first, so that it neither underflows nor overflows where
    ``||a||_F^2`` would (V0 at w2 = 1e-300: its squares are 0)."""
    xp = array_namespace(a)
    s = float(xp.max(xp.abs(a))) if a.size else 0.0
    return s * math.sqrt(float(_sqnorm(a / s))) if 0.0 < s < math.inf else s


def _sqnorm(a):
    """``||a||_F^2`` as a 0-d array / scalar of the backend (BLAS dot; no temporary)."""
    xp = array_namespace(a)
    flat = a.reshape(-1)
    return xp.vdot(flat, flat)


def _check_shapes(X, Y, W, V):
    for name, A in (("X", X), ("Y", Y), ("W", W), ("V", V)):
        if getattr(A, "ndim", None) != 2:
            raise ValueError(f"{name} must be a 2-D array, got shape {getattr(A, 'shape', None)}")
    d0, n = X.shape
    d1 = W.shape[0]
    d2 = V.shape[0]
    if W.shape != (d1, d0):
        raise ValueError(f"W must be d1 x d0 = ? x {d0} (X is {d0} x {n}), got {W.shape}")
    if V.shape != (d2, d1):
        raise ValueError(f"V must be d2 x d1 = ? x {d1} (W is {W.shape}), got {V.shape}")
    if Y.shape != (d2, n):
        raise ValueError(f"Y must be d2 x n = {d2} x {n}, got {Y.shape}")


def loss_and_grads(X, Y, W, V, act):
    """``(h, grad_W, grad_V)`` at Theta = (W, V): ``h = ||V phi(W X) - Y||_F^2`` (Python float),
    ``grad_W = 2 ((V^T R) o phi'(W X)) X^T`` (d1 x d0), ``grad_V = 2 R phi(W X)^T`` (d2 x d1),
    ``R = V phi(W X) - Y``; arrays on the inputs' backend."""
    act = get_activation(act)
    _check_shapes(X, Y, W, V)
    F, D, R = _forward(act, W, X, V)
    R -= Y
    h = float(_sqnorm(R))
    gW, gV = _backward(V, R, F, D, X)
    return h, 2.0 * gW, 2.0 * gV


# ------------------------------------------------------------------------------------------------
# the NTK Gram


def _ntk_gram_from(G, F, D, V):
    """``J J^T`` ((d2 n) x (d2 n)) from G = X^T X, F, D = phi'(W X) and V (module docstring)."""
    xp = array_namespace(F)
    d2, n = V.shape[0], F.shape[1]
    M = F.T @ F
    if d2 == 1:
        v = V[0]
        K = D.T @ (D * (v * v)[:, None])
        K *= G
        K += M
        return K
    K = xp.empty((d2 * n, d2 * n), dtype=xp.float64)
    for p in range(d2):
        for q in range(p, d2):
            blk = D.T @ (D * (V[p] * V[q])[:, None])
            blk *= G
            if p == q:
                blk += M
                K[p * n:(p + 1) * n, p * n:(p + 1) * n] = blk
            else:
                K[p * n:(p + 1) * n, q * n:(q + 1) * n] = blk
                K[q * n:(q + 1) * n, p * n:(p + 1) * n] = blk.T
    return K


def ntk_gram(X, W, V, act):
    """The NTK Gram ``J J^T`` ((d2 n) x (d2 n), output index p n + a) of ``Phi(Theta) = vec(V phi(W X))``
    at Theta = (W, V); block (p, q) = ``(X^T X) o (phi'^T diag(V_p o V_q) phi') + delta_pq phi^T phi``."""
    act = get_activation(act)
    F, D = _phi_dphi(act, W, X)
    return _ntk_gram_from(X.T @ X, F, D, V)


def _sigma_min_from_gram(ev) -> float:
    return math.sqrt(max(float(ev[0]), 0.0))


# ------------------------------------------------------------------------------------------------
# the loop


@dataclass
class GDResult:
    """What :func:`gradient_descent` returns.

    ``status`` (0 converged, 1 max_iters, 2 diverged; ``status_name``), ``iterations`` K, ``lr``,
    ``h0``, ``final_loss`` = h_K / h_0, ``loss_history`` (h_k / h_0 for k = 0..K, float64),
    ``curve_iterations`` (int64: the grid points <= K, then K) and ``curve_losses`` (h_k / h_0 there),
    ``rate`` (fitted contraction, NaN with < 2 usable points), ``path_length``, ``max_dist``,
    ``max_sigma_V``, ``rel_change_W``, ``rel_change_V``, ``mu_ntk``, ``mu_ntk_final``,
    ``ntk_rel_change`` (NaN when ``ntk=False``), the final ``W``, ``V`` (backend arrays) and ``seconds``.
    """

    status: int
    iterations: int
    lr: float
    h0: float
    final_loss: float
    loss_history: np.ndarray
    curve_iterations: np.ndarray
    curve_losses: np.ndarray
    rate: float
    path_length: float
    max_dist: float
    max_sigma_V: float
    rel_change_W: float
    rel_change_V: float
    mu_ntk: float = math.nan
    mu_ntk_final: float = math.nan
    ntk_rel_change: float = math.nan
    W: object = field(default=None, repr=False)
    V: object = field(default=None, repr=False)
    seconds: float = 0.0

    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.status]


def fitted_rate(loss_history) -> float:
    """``exp(slope)`` of the least-squares line of ``log h_k`` vs ``k`` over ``k in [K // 10, K]``
    (the last decade of iterations; non-finite and zero losses left out); NaN with < 2 points."""
    h = np.asarray(loss_history, dtype=np.float64)
    K = h.size - 1
    k = np.arange(K // 10, K + 1)
    y = h[k]
    ok = np.isfinite(y) & (y > 0)
    if ok.sum() < 2:
        return math.nan
    k, y = k[ok].astype(np.float64), np.log(y[ok])
    kc = k - k.mean()
    return float(math.exp(np.dot(kc, y - y.mean()) / np.dot(kc, kc)))


def _host_vector(xp, parts) -> np.ndarray:
    """The backend arrays/scalars ``parts`` flattened into one float64 host vector (one transfer on CuPy)."""
    if backend_name(xp) == "numpy":
        return np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts])
    return np.asarray(xp.asnumpy(xp.concatenate([xp.asarray(p, dtype=xp.float64).reshape(-1) for p in parts])),
                      dtype=np.float64)


def gradient_descent(X, Y, W0, V0, act, lr: float, train: TrainSpec | None = None, *,
                     train_layers=_LAYERS, ntk: bool = True) -> GDResult:
    """Full-batch GD on ``h(W, V) = ||V phi(W X) - Y||_F^2`` from (W0, V0) with step ``lr`` (used as is).

    X ``d0 x n``, Y ``d2 x n``, W0 ``d1 x d0``, V0 ``d2 x d1`` (float64, one backend; not modified).
    From ``train`` only ``max_iters``, ``tol`` and ``record_every`` are read (its ``lr``/``lr_scale``
    are resolved by :func:`step_size` in :func:`train_trial`). ``train_layers``: the layers that
    step, ``("W", "V")`` (default), ``("W",)`` or ``("V",)``; the other stays at its initial value.
    ``ntk``: compute the NTK Gram of all of Theta (both layers, whatever ``train_layers``) at Theta_0
    and Theta_K (``mu_ntk``, ``mu_ntk_final``, ``ntk_rel_change``; NaN otherwise). Runs with BLAS on
    one thread; one device-to-host transfer of a few scalars per iteration on CuPy (the stopping
    test). See the module docstring for memory and cost.
    """
    t_start = time.perf_counter()
    act = get_activation(act)
    train = TrainSpec() if train is None else train
    if not isinstance(train, TrainSpec):
        raise TypeError(f"train must be a TrainSpec, got {type(train).__name__}")
    if not _is_real(lr) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    layers = (train_layers,) if isinstance(train_layers, str) else tuple(train_layers)
    if not layers or any(L not in _LAYERS for L in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"train_layers must be a non-empty subset of {_LAYERS}, got {train_layers!r}")
    _check_shapes(X, Y, W0, V0)
    xp = array_namespace(X, Y, W0, V0)
    step_W, step_V = "W" in layers, "V" in layers
    lr = float(lr)
    two_lr = 2.0 * lr  # the 2 of both gradients folded into the step (exact: a power of two)
    d2 = V0.shape[0]
    with _single_thread_blas():
        W = xp.array(W0, dtype=xp.float64, copy=True)
        V = xp.array(V0, dtype=xp.float64, copy=True)
        F = D = None
        if backend_name(xp) == "numpy":
            F = np.empty((W.shape[0], X.shape[1]))
            D = np.empty_like(F)
        G = X.T @ X if ntk else None
        normW0, normV0 = _fro_norm(W0), _fro_norm(V0)
        history: list[float] = []
        path = max_dist = max_sigma_V = 0.0
        step2 = 0.0  # ||Theta_k - Theta_{k-1}||_F^2, brought to the host with the next iteration's scalars
        K0 = None
        mu_ntk = h0 = math.nan
        k = 0
        while True:
            F, D, R = _forward(act, W, X, V, F, D)
            R -= Y
            dW2 = _sqnorm(W - W0) if step_W and k else 0.0
            dV2 = _sqnorm(V - V0) if step_V and k else 0.0
            VVt = _sqnorm(V) if d2 == 1 else V @ V.T
            vals = _host_vector(xp, [_sqnorm(R), dW2, dV2, step2, VVt])
            h, dW2, dV2 = float(vals[0]), float(vals[1]), float(vals[2])
            if k:
                path += math.sqrt(max(float(vals[3]), 0.0))
            if d2 == 1:
                sigma_V = math.sqrt(max(float(vals[4]), 0.0))
            else:
                VVt_host = vals[4:].reshape(d2, d2)
                # a diverging step makes V V^T inf/NaN: no eigenvalue then (LinAlgError); h is not finite
                # either, so the divergence check below records gd_status = 2 as for d2 = 1
                sigma_V = (math.sqrt(max(float(np.linalg.eigvalsh(VVt_host)[-1]), 0.0))
                           if np.isfinite(VVt_host).all() else math.inf)
            if k == 0:
                h0 = h
                if ntk:
                    K0 = _ntk_gram_from(G, F, D, V)
                    mu_ntk = _sigma_min_from_gram(eigvalsh(K0))
            history.append(h)
            max_dist = max(max_dist, math.sqrt(dW2 + dV2))
            max_sigma_V = max(max_sigma_V, sigma_V)
            if not math.isfinite(h) or h > DIVERGENCE_FACTOR * h0:
                status = DIVERGED
                break
            if h <= train.tol * h0:
                status = CONVERGED
                break
            if k >= train.max_iters:
                status = MAX_ITERS
                break
            gW, gV = _backward(V, R, F, D, X, step_W, step_V)  # grad / 2 at Theta_k; D is overwritten
            step2 = 0.0
            if step_W:
                gW *= two_lr
                step2 = _sqnorm(gW)
                W -= gW
            if step_V:
                gV *= two_lr
                step2 = step2 + _sqnorm(gV)
                V -= gV
            k += 1
        K = k
        mu_ntk_final = ntk_change = math.nan
        if ntk and math.isfinite(h):
            KK = _ntk_gram_from(G, F, D, V)  # F, D of Theta_K: the loop stopped before overwriting D
            mu_ntk_final = _sigma_min_from_gram(eigvalsh(KK))
            lam0 = float(eigvalsh(K0)[-1])
            KK -= K0
            ntk_change = spectral_norm_sym(KK) / lam0 if lam0 > 0 else math.nan
            del KK
    hist = np.asarray(history, dtype=np.float64)
    rel = hist / h0 if h0 > 0 else np.where(hist == 0, 0.0, np.inf)
    grid = curve_iterations(train)
    its = grid[grid <= K]
    if its[-1] != K:
        its = np.append(its, np.int64(K))
    return GDResult(
        status=status, iterations=K, lr=lr, h0=h0, final_loss=float(rel[-1]), loss_history=rel,
        curve_iterations=its.astype(np.int64), curve_losses=rel[its].astype(np.float64),
        rate=fitted_rate(rel), path_length=path, max_dist=max_dist, max_sigma_V=max_sigma_V,
        rel_change_W=math.sqrt(dW2) / normW0 if normW0 > 0 else math.nan,
        rel_change_V=math.sqrt(dV2) / normV0 if normV0 > 0 else math.nan,
        mu_ntk=mu_ntk, mu_ntk_final=mu_ntk_final, ntk_rel_change=ntk_change, W=W, V=V,
        seconds=time.perf_counter() - t_start,
    )


# ------------------------------------------------------------------------------------------------
# one trial


def initial_weights(spec: TrialSpec, trial: int):
    """``(W0, V0)`` of ``(spec, trial)`` whole on the spec's backend: W0 ``d1 x d0`` from
    ``rng.stream_key(seed, "W0", trial)`` (scale w1), V0 ``d2 x d1`` the transpose of the ``d1 x d2``
    rows of ``("V0", trial)`` (scale w2) -- bitwise the rows ``run_trial``'s streamed pass draws block by block."""
    xp = get_xp(spec.backend)
    W0 = normal_block(xp, rng.stream_key(spec.seed, "W0", trial), 0, spec.d1, spec.d0, spec.w1)
    Vt = normal_block(xp, rng.stream_key(spec.seed, "V0", trial), 0, spec.d1, spec.d2, spec.w2)
    return W0, xp.ascontiguousarray(Vt.T)


def train_trial(spec: TrialSpec, trial: int, train: TrainSpec | None = None, cache: dict | None = None, *,
                return_curve: bool = False):
    """The record of ``run_trial(spec, trial, cache=cache)`` plus the fields ``TRAIN_FIELDS`` of GD
    from that trial's own (W0, V0, X, Y).

    ``train``: a :class:`TrainSpec` (default ``TrainSpec()``); lr = ``step_size(train, record["eta_max"])``.
    Returns the record (``dict[str, float]``); with ``return_curve=True`` returns
    ``(record, iterations int64, losses float64 = h_k / h_0)`` (grid points <= K, then K; put it on the
    study's shared grid with :func:`curve_on_grid`). Raises ValueError when ``spec.d1 < spec.n``.
    """
    if not isinstance(spec, TrialSpec):
        raise TypeError(f"spec must be a TrialSpec, got {type(spec).__name__}")
    train = TrainSpec() if train is None else train
    if not isinstance(train, TrainSpec):
        raise TypeError(f"train must be a TrainSpec, got {type(train).__name__}")
    if spec.d1 < spec.n:
        raise ValueError(
            f"train_trial needs d1 >= n (got d1 = {spec.d1} < n = {spec.n}): below it sigma_min(phi(W0 X)) = mu = 0, "
            "the Eq. 13/14 step and rate degenerate and the GD theory (Lemma 3, Theorem 3) says nothing")
    from .trial import run_trial  # noqa: PLC0415

    cache = {} if cache is None else cache
    with _single_thread_blas():
        rec = run_trial(spec, trial, cache=cache)
    rec, its, losses = add_training(spec, trial, rec, train, cache)
    if return_curve:
        return rec, its, losses
    return rec


def add_training(spec: TrialSpec, trial: int, rec: dict, train: TrainSpec, cache: dict | None = None):
    """``(record + TRAIN_FIELDS, iterations, losses)``: GD from the trial's Theta0 next to its record
    ``rec`` (``run_trial(spec, trial)``'s, e.g. with ``spectrum=True`` in a study task)."""
    from .trial import point_data  # noqa: PLC0415

    if spec.d1 < spec.n:
        raise ValueError(f"training needs d1 >= n (got d1 = {spec.d1} < n = {spec.n})")
    rec = dict(rec)
    with _single_thread_blas():
        pd = point_data(spec, cache)
        W0, V0 = initial_weights(spec, trial)
        lr = step_size(train, rec["eta_max"])
        res = gradient_descent(pd.X, pd.Y, W0, V0, spec.activation, lr, train)
    chi = spec.chi_max if spec.chi_max is not None else rec["sigma_max_V0"]
    rec.update({
        "gd_status": float(res.status), "gd_iterations": float(res.iterations),
        "gd_final_loss": res.final_loss, "gd_rate": res.rate,
        "gd_rate_theory": bounds.eq14_rate(lr, rec["mu"], 1.0), "gd_lr": lr,
        "gd_path_length": res.path_length, "gd_max_dist": res.max_dist,
        "gd_max_dist_over_rho": bounds.measured_ratio(res.max_dist, rec["rho"]),
        "gd_max_sigma_V": res.max_sigma_V, "gd_max_sigma_V_over_chi": bounds.measured_ratio(res.max_sigma_V, chi),
        "gd_rel_change_W": res.rel_change_W, "gd_rel_change_V": res.rel_change_V,
        "mu_ntk": res.mu_ntk, "mu_ntk_final": res.mu_ntk_final, "ntk_rel_change": res.ntk_rel_change,
    })
    rec = {k: float(v) for k, v in rec.items()}
    return rec, res.curve_iterations, res.curve_losses
