"""Streamed accumulation of ``M0 = phi(W0 X)^T phi(W0 X)`` over row blocks of W0 (Eq. 59).

Neither ``W0`` (d1 x d0) nor ``F = phi(W0 X)`` (d1 x n) ever exists whole: rows
``[r0, r1)`` of W0 are generated from their counters (``rng``), ``F_b = phi(W0_b X)`` is formed
and ``M0 += F_b^T F_b`` is one BLAS-3 call (``dsyrk`` on the CPU, updating one triangle in
place, GIL released). On NumPy the blocks are dealt to ``LANES`` partial sums that run on
separate threads (see ``accumulate``). Memory: the n x n partial sums (two on NumPy, one on a
GPU) plus one row block. The same pass accumulates what the rest
of the chain needs from V0 (d2 x d1, N(0, w2^2)): ``V0 phi(W0 X)`` (d2 x n), ``V0 V0^T``
(d2 x d2) and the largest row norm of W0 / column norm of V0 (Eq. 60).

Accuracy: the Gram is accumulated in float64. Its smallest eigenvalue has absolute error about
``eps * lambda_max(M0)`` (relative error ~ eps * cond(M0), eps = 2.2e-16), so
``sigma_min(F) = sqrt(lambda_min(M0))`` is trustworthy while cond(M0) << 1e16. With
``dtype="float32"`` the block product ``W0_b X`` and ``phi`` run in float32 (errors ~ 1e-7
relative per entry of F, hence ~ 1e-7 * cond(M0) on lambda_min even with float64 accumulation):
do not use it near d1 ~ n.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..sampling import rng
from ..linalg.blas import syrk_upper_update
from ..backend.xp import array_namespace, backend_name
from ..theory.activations import Activation, activation as _activation


@dataclass
class TrialSums:
    """What one pass over the row blocks of W0 (and the columns of V0) produces.

    ``M0`` (n x n, float64, symmetric), ``VF = V0 phi(W0 X)`` (d2 x n) or None,
    ``VVt = V0 V0^T`` (d2 x d2) or None, ``max_row_norm_W0`` and ``max_col_norm_V0`` (floats),
    ``stage_seconds``: thread-seconds spent per stage (sampling, WX, phi, gram, V0), summed over lanes
    (on a GPU these are host-side times: kernels run asynchronously until the next synchronization).
    ``spare``: the second lane's n x n buffer once its sum has been added into M0 (NumPy; None on
    CuPy): garbage, free for the caller to use as a workspace (``run_trial`` hands it to
    ``extremes``), so a trial never holds more than M0, E[M0] and this one buffer.
    """

    M0: object
    VF: object | None
    VVt: object | None
    max_row_norm_W0: float
    max_col_norm_V0: float
    stage_seconds: dict = field(default_factory=dict)
    spare: object | None = None
    VVt_unit: object | None = None  # V0 V0^T / w2^2: sigma_max(V0) = w2 sqrt(lambda_max) whatever w2's scale
    A: object | None = None  # with ntk (d2 = 1): sum_k v_k^2 phi'(w_k^T X)^T phi'(w_k^T X) (n x n, symmetric)


#: Independent partial sums of the Gram matrix. Lane ``l`` accumulates row blocks
#: ``l, l + LANES, ...`` and ``M0 = lane_0 + lane_1`` (NumPy; on a GPU one lane: a second n x n
#: accumulator would only cost device memory). The number is fixed, so the summation
#: order (hence every bit of M0) does not depend on how many threads run the lanes.
LANES = 2

#: Elements of one piece of a block in ``_phi_of_product`` (512 KiB of float64: the piece and the
#: activation's temporaries stay in L2; 128 KiB to 2 MiB measured the same speed).
_PHI_CHUNK_ELEMS = 2**16


def normal_block(xp, key, row_start: int, row_stop: int, ncols: int, scale: float = 1.0):
    """Rows of a counter-based Gaussian matrix on the backend ``xp`` (CuPy uses the CUDA kernel)."""
    if backend_name(xp) == "cupy":
        from ..backend.kernels import normal_rows_gpu  # noqa: PLC0415 - GPU-only path

        return normal_rows_gpu(key, row_start, row_stop, ncols, scale)
    return rng.normal_rows(key, row_start, row_stop, ncols, scale)


def _syrk_update(M, F) -> None:
    """``M += F^T F`` (upper triangle only on NumPy: dsyrk in place, GIL released; full product elsewhere)."""
    xp = array_namespace(M)
    if backend_name(xp) == "numpy":
        syrk_upper_update(M, np.ascontiguousarray(F))
    else:
        M += F.T @ F


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """One threadpoolctl controller for the process (building one scans the loaded libraries)."""
    from scipy.linalg import cython_blas  # noqa: F401, PLC0415 - load SciPy's BLAS before the scan
    from threadpoolctl import ThreadpoolController  # noqa: PLC0415

    return ThreadpoolController()


def blas_threads() -> int:
    """Threads of the BLAS pools of this process now (1 inside study workers, which pin them)."""
    counts = [c.num_threads for c in _blas_controller().lib_controllers if c.user_api == "blas"]
    return max(1, min(counts)) if counts else 1


@functools.lru_cache(maxsize=4)
def _lane_pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rmt-lane")


def _apply_phi(act: Activation, Z):
    """``phi(Z)``, in place where possible. On CuPy the built-ins use the exact CUDA kernel in place
    (the only GPU-specific branch)."""
    xp = array_namespace(Z)
    if backend_name(xp) == "cupy" and act.builtin and Z.dtype == xp.float64:
        from ..backend.kernels import ACTIVATION_IDS, apply_activation_gpu  # noqa: PLC0415

        if act.name in ACTIVATION_IDS:
            return apply_activation_gpu(act.name, Z, out=Z)
    return act.phi(Z)


def _phi_of_product(act: Activation, W, Xw, seconds: dict, dphi_out=None):
    """``F = phi(W Xw)`` (rows x n) for a block of rows W (rows x d0).

    On NumPy the block is formed in pieces of about 512 KiB: each piece of ``W Xw`` is still in
    cache when ``phi`` reads it, and the activation's temporaries stay small. Elementwise, so
    the result does not depend on the pieces. Adds the seconds of the product and of phi to
    ``seconds["WX"]`` and ``seconds["phi"]``.
    """
    xp = array_namespace(W)
    clock = time.perf_counter
    if backend_name(xp) != "numpy":
        t0 = clock()
        Z = W @ Xw
        t1 = clock()
        if dphi_out is not None:
            dphi_out[...] = act.dphi(Z)
        Z = _apply_phi(act, Z)
        seconds["WX"] += t1 - t0
        seconds["phi"] += clock() - t1
        return Z
    rows, n = W.shape[0], Xw.shape[1]
    F = np.empty((rows, n), dtype=Xw.dtype)
    step = max(1, _PHI_CHUNK_ELEMS // max(1, n))
    for a in range(0, rows, step):
        t0 = clock()
        piece = np.matmul(W[a:a + step], Xw, out=F[a:a + step])
        t1 = clock()
        if dphi_out is not None:
            dphi_out[a:a + step] = act.dphi(piece)
        F[a:a + step] = act.phi(piece)
        seconds["WX"] += t1 - t0
        seconds["phi"] += clock() - t1
    return F


def _symmetrize_from_upper(M, block: int = 256):
    """Copy the upper triangle of the NumPy matrix ``M`` onto its lower one, in place.

    Block by block (a slab transpose below each diagonal block), about 6x faster than fancy
    indexing with ``triu_indices`` at n = 2000. On other backends the full product was
    accumulated and ``M`` is returned as it is.
    """
    xp = array_namespace(M)
    if backend_name(xp) != "numpy":
        return M
    n = M.shape[0]
    for a in range(0, n, block):
        b = min(a + block, n)
        M[b:, a:b] = M[a:b, b:].T
        upper = np.triu(M[a:b, a:b])
        M[a:b, a:b] = upper + np.triu(upper, 1).T
    return M


class _Lane:
    """One partial sum of the pass: its own M0 (and V0 products), fed whole row blocks."""

    def __init__(self, xp, n: int, d2: int):
        self.xp = xp
        if backend_name(xp) == "numpy":
            self.M = np.zeros((n, n), dtype=np.float64, order="F")  # dsyrk updates it in place
        else:
            self.M = xp.zeros((n, n), dtype=xp.float64)
        self.A = None  # the NTK's W-layer sum (set by the pass when it asks for it)
        self.VF = xp.zeros((d2, n), dtype=xp.float64) if d2 else None
        self.VVt = xp.zeros((d2, d2), dtype=xp.float64) if d2 else None
        self.max_w = 0.0
        self.max_v = 0.0
        self.seconds = dict(sampling=0.0, WX=0.0, phi=0.0, gram=0.0, V0=0.0)

    def add_block(self, p, r0: int, r1: int) -> None:
        """Rows ``r0:r1`` of W0 (and columns of V0): sample, ``F = phi(W X)``, ``M += F^T F``."""
        xp, clock, sec = self.xp, time.perf_counter, self.seconds
        t0 = clock()
        W = normal_block(xp, p.key_W, r0, r1, p.d0, p.w1)
        self.max_w = max(self.max_w, float(xp.sqrt(xp.max(xp.sum(W * W, axis=1)))))
        W = W.astype(p.work, copy=False)
        sec["sampling"] += clock() - t0
        D = xp.empty((r1 - r0, p.Xw.shape[1]), dtype=p.Xw.dtype) if p.ntk else None
        F = _phi_of_product(p.act, W, p.Xw, sec, dphi_out=D)
        if F.dtype != xp.float64:
            F = F.astype(xp.float64)
        t3 = clock()
        _syrk_update(self.M, F)
        t4 = clock()
        sec["gram"] += t4 - t3
        if p.d2:
            Vt = normal_block(xp, p.key_V, r0, r1, p.d2)  # rows r0:r1 of V0^T / w2 (unit variance; w2 at the end)
            if p.ntk:  # rows v_k phi'(w_k^T X) of the W-layer Jacobian (d2 = 1), unit-variance v
                if self.A is None:
                    self.A = xp.zeros_like(self.M)
                D = D.astype(xp.float64, copy=False)
                D *= Vt[:, :1]
                _syrk_update(self.A, D)
            self.max_v = max(self.max_v, float(xp.sqrt(xp.max(xp.sum(Vt * Vt, axis=1)))))
            self.VF += Vt.T @ F
            self.VVt += Vt.T @ Vt
            sec["V0"] += clock() - t4


@dataclass(frozen=True)
class _Pass:
    """The fixed inputs of one pass (shared read-only by the lanes)."""

    act: Activation
    Xw: object
    d0: int
    w1: float
    key_W: object
    d2: int
    w2: float
    key_V: object
    work: object
    ntk: bool = False  # also accumulate the W-layer part of the NTK (d2 = 1): A = sum_k v_k^2 phi'_k^T phi'_k


def pass_blocks(d1: int, block_rows: int, on_numpy: bool) -> list[tuple[int, int]]:
    """The row blocks ``[(r0, r1), ...]`` of W0 in the Gram pass (and the accurate route's QR pass):
    at most ``ceil(block_rows / LANES)`` rows on NumPy (at least ``LANES`` blocks when d1 allows),
    ``block_rows`` on CuPy. The bits of M0 and of R depend on these blocks, never on threads."""
    n_lanes = LANES if on_numpy else 1
    lane_rows = max(1, min(-(-block_rows // n_lanes), -(-d1 // n_lanes)))
    return list(rng.row_blocks(d1, lane_rows))


def phi_blocks(X, act: Activation | str, d1: int, *, w1: float = 1.0, key_W=None, block_rows: int = 4096,
               dtype: str = "float64"):
    """Yield ``(r0, r1, F_b)``, ``F_b = phi(W0[r0:r1] X)`` (float64, rows x n), in row order over the
    blocks of ``pass_blocks``: the very rows the Gram pass of ``accumulate`` folds into M0 (same keys,
    same blocks, same arithmetic), one block in memory at a time."""
    act = _activation(act)
    xp = array_namespace(X)
    d0, _n = X.shape
    work = xp.float32 if dtype == "float32" else xp.float64
    Xw = X.astype(work)
    seconds = dict(WX=0.0, phi=0.0)
    for r0, r1 in pass_blocks(d1, block_rows, backend_name(xp) == "numpy"):
        W = normal_block(xp, key_W, r0, r1, d0, w1).astype(work, copy=False)
        F = _phi_of_product(act, W, Xw, seconds)
        yield r0, r1, (F if F.dtype == xp.float64 else F.astype(xp.float64))


def _run_lanes(run, n_lanes: int, threads: int) -> None:
    """``run(lane)`` for every lane: on up to ``min(n_lanes, threads)`` threads, each with its share of the
    BLAS threads (no pool waits for or spins beside another), or one after the other."""
    if threads > 1 and n_lanes > 1:
        parallel = min(n_lanes, threads)
        with _blas_controller().limit(limits=max(1, threads // parallel), user_api="blas"):
            list(_lane_pool(parallel).map(run, range(n_lanes)))
    else:
        for lane_index in range(n_lanes):
            run(lane_index)


def accumulate(X, act: Activation | str, d1: int, *, w1: float = 1.0, key_W=None,
               d2: int = 0, w2: float = 1.0, key_V=None, block_rows: int = 4096,
               dtype: str = "float64", ntk: bool = False) -> TrialSums:
    """One pass over the row blocks of W0 (and the matching columns of V0 when ``d2 > 0``).

    X: ``d0 x n`` (NumPy or CuPy, float64). Returns :class:`TrialSums`.

    On NumPy the rows are cut into blocks of at most ``ceil(block_rows / LANES)`` rows (and at
    least ``LANES`` blocks when d1 allows); the blocks are dealt round-robin to ``LANES`` partial
    sums, which run on up to ``LANES`` threads, each with a single-threaded BLAS (with
    more BLAS threads than lanes, the surplus goes to each lane's BLAS): no thread ever waits
    for, or spins beside, another pool. The numbers depend on ``block_rows`` (summation order),
    never on the thread count. On CuPy: one lane, blocks of ``block_rows`` rows.
    ``ntk`` (d2 = 1 only): the same pass also accumulates ``A = sum_k v_k^2 phi'(w_k^T X)^T phi'(w_k^T X)``
    (``TrialSums.A``; one more n x n sum per lane and one more ``dsyrk`` per block), the W-layer part of
    the NTK: ``J J^T = M0 + (X^T X) o A``.
    """
    act = _activation(act)
    xp = array_namespace(X)
    d0, n = X.shape
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    if ntk and d2 != 1:
        raise ValueError(f"the streamed NTK needs d2 = 1 (got d2 = {d2})")
    work = xp.float32 if dtype == "float32" else xp.float64
    p = _Pass(act, X.astype(work), d0, w1, key_W, d2, w2, key_V, work, ntk)
    on_numpy = backend_name(xp) == "numpy"
    n_lanes = LANES if on_numpy else 1
    blocks = pass_blocks(d1, block_rows, on_numpy)
    lanes = [_Lane(xp, n, d2) for _ in range(n_lanes)]

    def run(lane_index: int) -> None:
        for r0, r1 in blocks[lane_index::n_lanes]:
            lanes[lane_index].add_block(p, r0, r1)

    _run_lanes(run, n_lanes, blas_threads() if on_numpy else 1)

    M = lanes[0].M
    for lane in lanes[1:]:
        M += lane.M
    M = _symmetrize_from_upper(M)
    VF = VVt = None
    if d2:
        VF, VVt = lanes[0].VF, lanes[0].VVt
        for lane in lanes[1:]:
            VF += lane.VF
            VVt += lane.VVt
        VF *= w2  # V0 = w2 V with unit-variance V: scalars last, so no w2^2 under/overflows in the sums
        VVt_unit, VVt = VVt, VVt * (w2 * w2)
    A = _fold_ntk(lanes, w2) if ntk else None
    seconds = {k: sum(lane.seconds[k] for lane in lanes) for k in lanes[0].seconds}
    spare = lanes[1].M if len(lanes) > 1 else None
    for lane in lanes:
        lane.M = None
    return TrialSums(M, VF, VVt, max(lane.max_w for lane in lanes), w2 * max(lane.max_v for lane in lanes),
                     seconds, spare, VVt_unit if d2 else None, A)


def _fold_ntk(lanes, w2: float, reset: bool = False):
    """The lanes' NTK sums added into the first (zeros if no block reached them), symmetrized, as a new
    array scaled by ``w2^2`` (V0 = w2 V with unit-variance V); ``reset`` zeroes the other lanes' sums."""
    first = lanes[0]
    if first.A is None:
        first.A = first.xp.zeros_like(first.M if first.M is not None else lanes[-1].M)
    for lane in lanes[1:]:
        if lane.A is not None:
            first.A += lane.A
            if reset:
                lane.A[...] = 0
            else:
                lane.A = None
    first.A = _symmetrize_from_upper(first.A)
    return first.A * (w2 * w2)


def gram(X, activation, d1: int, *, w1: float = 1.0, seed: int = 0, trial: int = 0,
         block_rows: int | None = None, dtype: str = "float64"):
    """``M0 = phi(W0 X)^T phi(W0 X)`` (n x n, float64) for trial ``trial`` of ``seed``.

    W0 is ``d1 x d0`` with N(0, w1^2) entries drawn from the counter-based stream
    ``("W0", trial)``: the result does not depend on ``block_rows`` beyond floating-point
    summation order. See the module docstring for memory and accuracy.
    """
    from ..sampling.data import check_data  # noqa: PLC0415

    check_data(X)
    if not isinstance(d1, (int, np.integer)) or d1 < 1:
        raise ValueError(f"d1 must be a positive integer, got {d1!r}")
    if not (w1 > 0 and np.isfinite(w1)):
        raise ValueError(f"w1 must be a finite number > 0, got {w1!r}")
    n = X.shape[1]
    if block_rows is None:
        block_rows = int(min(d1, max(64, 2**22 // n)))
    sums = accumulate(X, activation, int(d1), w1=w1, key_W=rng.stream_key(seed, "W0", trial),
                      block_rows=block_rows, dtype=dtype)
    return sums.M0


def path_blocks(d1s, block_rows: int, on_numpy: bool) -> list[tuple[int, int]]:
    """The row blocks of a width path to ``max(d1s)``: each segment between two checkpoints
    ``(d_{i-1}, d_i]`` (``d_0 = 0``) is cut as ``pass_blocks`` cuts a pass of its length, offset to its
    start. So every checkpoint is a block boundary (its partial sums exist), the blocks below a
    checkpoint depend on the checkpoints below it only (a path cut short at any checkpoint -- a resumed
    study task -- gives the same bits there), and the first segment is exactly ``pass_blocks(d1s[0])``."""
    out, start = [], 0
    for d in (int(x) for x in d1s):
        out += [(start + a, start + b) for a, b in pass_blocks(d - start, block_rows, on_numpy)]
        start = d
    return out


def accumulate_path(X, act: Activation | str, d1s, *, w1: float = 1.0, key_W=None, d2: int = 0,
                    key_V=None, block_rows: int = 4096, dtype: str = "float64", ntk: bool = False):
    """One pass over the rows of W0 up to ``max(d1s)``, yielding ``(d1, TrialSums)`` at each checkpoint.

    ``d1s``: strictly increasing positive widths. For one (seed, trial) the rows of W0 (and columns of
    V0) of a larger width extend those of a smaller one (counter-based keys), so the sums at a
    checkpoint d are those of ``accumulate(X, act, d, ...)`` up to rounding: the same rows, summed in
    another order (the blocks are ``path_blocks``, the lanes are folded at each checkpoint), hence equal
    to about ``eps * sqrt(d1) * lambda_max`` (not bitwise unless a single block reaches the first
    checkpoint). V0 is accumulated with unit variance: ``VF``, ``VVt`` and ``max_col_norm_V0`` are those
    of ``V0 / w2`` (``VVt_unit`` too), and the caller scales them by the checkpoint's w2.

    The yielded ``M0`` is the path's own accumulator (symmetrized in place) and ``spare`` the second
    lane's buffer: both are valid only until the generator is resumed; the consumer may use
    ``spare`` as a workspace (it is zeroed before the pass goes on) and must not write into ``M0``.
    Memory: that of one ``accumulate`` pass (2 n^2 + row blocks).
    """
    act = _activation(act)
    xp = array_namespace(X)
    d0, n = X.shape
    d1s = [int(d) for d in d1s]
    if not d1s or any(d < 1 for d in d1s) or any(b <= a for a, b in zip(d1s, d1s[1:])):
        raise ValueError(f"d1s must be strictly increasing positive widths, got {d1s}")
    work = xp.float32 if dtype == "float32" else xp.float64
    if ntk and d2 != 1:
        raise ValueError(f"the streamed NTK needs d2 = 1 (got d2 = {d2})")
    p = _Pass(act, X.astype(work), d0, w1, key_W, d2, 1.0, key_V, work, ntk)
    on_numpy = backend_name(xp) == "numpy"
    n_lanes = LANES if on_numpy else 1
    blocks = path_blocks(d1s, block_rows, on_numpy)
    lanes = [_Lane(xp, n, d2) for _ in range(n_lanes)]
    threads = blas_threads() if on_numpy else 1
    done = 0
    for d in d1s:
        todo = [(i, b) for i, b in enumerate(blocks) if done <= b[0] and b[1] <= d]

        def run(lane_index: int, todo=todo) -> None:
            for i, (r0, r1) in todo:
                if i % n_lanes == lane_index:
                    lanes[lane_index].add_block(p, r0, r1)

        _run_lanes(run, n_lanes, threads)
        done = d
        first = lanes[0]
        for lane in lanes[1:]:  # fold the other lanes into the first: it is the path's M0 from here on
            first.M += lane.M
            lane.M[...] = 0
            if d2:
                first.VF += lane.VF
                first.VVt += lane.VVt
                lane.VF[...] = 0
                lane.VVt[...] = 0
        M = _symmetrize_from_upper(first.M)
        max_w = max(lane.max_w for lane in lanes)
        max_v = max(lane.max_v for lane in lanes)
        seconds = {k: sum(lane.seconds[k] for lane in lanes) for k in lanes[0].seconds}
        spare = lanes[1].M if n_lanes > 1 else None
        VF = first.VF.copy() if d2 else None
        VVt = first.VVt.copy() if d2 else None
        A = _fold_ntk(lanes, 1.0, reset=True) if ntk else None  # unit-variance V: the caller scales by w2^2
        yield d, TrialSums(M, VF, VVt, max_w, max_v, seconds, spare, VVt.copy() if d2 else None, A)
        if spare is not None:
            spare[...] = 0  # it served as the consumer's workspace
