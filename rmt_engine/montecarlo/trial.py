"""One Monte Carlo trial: draw W0, V0 for ``(spec, trial)``, measure everything of MATH.md.

``run_trial(spec, trial)`` returns a flat record ``dict[str, float]`` whose keys are
``fields.record_fields(spec.t)``. Per-grid-point work (data X and labels Y, E[M0]/d1 and its
extreme eigenvalues, Khatri-Rao spectra, Hermite coefficients, the deterministic bounds) is
done once per grid point: in the process-level bounded cache (``point_cache``) by default, or
in the ``cache`` dict the caller passes to several trials.

Per trial: one streamed pass over W0 (``gram.accumulate``), then the three eigenvalues of M0
and ``||M0 - E[M0]||_2`` from ``extremes`` (certified Krylov + Cholesky from
``extremes.DENSE_BELOW_N`` on, the dense reduction below it and whenever it cannot certify;
``spectrum=True`` always takes the dense reduction, and so does CuPy until the certified route is
measured on a GPU). The route each trial took is recorded (``extremes_route``, ``dev_M0_route``:
0 dense, 1 certified).

Memory (float64): M0, K = E[M0]/d1 and one n x n workspace -- the Gram pass's second partial sum
(``TrialSums.spare``) on NumPy, allocated on CuPy -- plus one row block: 3 n^2 + O(b n) doubles.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import numpy as np

from ..theory import bounds, orders
from ..sampling import rng
from ..backend.xp import backend_name, get_xp, to_numpy
from ..theory.activations import activation as get_activation
from ..sampling.data import make_data
from ..theory.expected import expected_gram, expected_ntk_gram
from .fields import AUTO_T, BEST_T, BEST_T_MAX, FIELDS, field_name, int_orders, record_fields
from .gram import accumulate, accumulate_path, phi_blocks
from ..theory.asymptotics import predict_record
from ..theory.hadamard import hadamard_lower_bound, series_lower_bound
from ..theory.hermite import hermite_coefficients, hermite_tail, normalized_hermite_coefficients
from ..theory.khatri_rao import data_extremes, khatri_rao_extremes_checked
from .spec import TrialSpec, is_integer, validate_spec
from ..linalg.extremes import extremes, spectral_norm_certified
from .point_cache import layered, process_cache
from ..linalg.spectra import eigvalsh, extreme_eigenvalues
from ..linalg.tsqr import StreamedR, float32_relative_error, gram_relative_error, qr_relative_error


@dataclass
class PointData:
    """Per-grid-point arrays on the trial's backend: X (d0 x n), Y (d2 x n, ||Y||_F = 1),
    K = E[M0]/d1 (n x n)."""

    X: object
    Y: object
    K: object


def make_labels(spec: TrialSpec) -> np.ndarray:
    """Labels ``Y`` (d2 x n) with i.i.d. Gaussian entries scaled to ``||Y||_F = 1`` (so ||Y||_2 <= 1, Eq. 16)."""
    Z = rng.normal_rows(rng.stream_key(spec.seed, "labels"), 0, spec.n, spec.d2)
    return np.ascontiguousarray(Z.T / np.linalg.norm(Z))


def _cached(cache, key, compute):
    if cache is None:
        return compute()
    if not isinstance(cache, dict):  # a PointCache (or a trial's layered view of one)
        return cache.get(key, compute)
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def _data_identity(spec: TrialSpec) -> tuple:
    """What X depends on, with a data file's size and modification time (a rewritten file is new data)."""
    if not spec.data_path:
        return spec.data_key()
    try:
        st = os.stat(spec.data_path)
        return spec.data_key() + (st.st_size, st.st_mtime_ns)
    except OSError:
        return spec.data_key()  # make_data raises the clear error


def point_data(spec: TrialSpec, cache: dict | None = None) -> PointData:
    """X, Y and E[M0]/d1 of the grid point (cached by what each depends on)."""
    xp = get_xp(spec.backend)

    def data():
        X = make_data(spec.data, spec.d0, spec.n, spec.data_draw_seed, path=spec.data_path)
        return xp.asarray(X), xp.asarray(make_labels(spec))

    data_id = _data_identity(spec)
    X, Y = _cached(cache, ("data", data_id, spec.d2, spec.backend), data)
    K = _cached(cache, ("K", data_id, get_activation(spec.activation), spec.w1, spec.backend),
                lambda: expected_gram(X, spec.activation, w1=spec.w1))
    return PointData(X, Y, K)


def point_record(spec: TrialSpec, cache: dict | None = None) -> dict[str, float]:
    """The per-grid-point fields of the record (no randomness beyond the data)."""
    key = ("point", spec, get_activation(spec.activation), _data_identity(spec))
    return dict(_cached(cache, key, lambda: _point_record(spec, cache)))


def _point_record(spec: TrialSpec, cache) -> dict[str, float]:
    act = get_activation(spec.activation)
    pd = point_data(spec, cache)
    n, d0, d1, w1 = spec.n, spec.d0, spec.d1, spec.w1
    kr: dict = {}  # t -> khatri_rao_extremes_checked(X, t): one eigen-solve per order, shared with t_auto's search

    def checked(t):
        if t not in kr:
            kr[t] = khatri_rao_extremes_checked(pd.X, t)
        return kr[t]

    t_auto = orders.informative_t(act, w1, n, d0, X=pd.X, checked=checked)  # skips orders singular for these data
    explicit = int_orders(spec.t)
    best = BEST_T in spec.t
    order = max(explicit + (t_auto or 1, 1) + ((BEST_T_MAX,) if best else ()))
    c = hermite_coefficients(act, order, 1.0)
    cw = hermite_coefficients(act, order, w1)
    a = normalized_hermite_coefficients(act, order, 1.0)
    aw = normalized_hermite_coefficients(act, order, w1)
    cinf2, cinf2_w = hermite_tail(act, 1.0), hermite_tail(act, w1)
    smin_X, smax_X = data_extremes(pd.X)
    ev_K = np.asarray(to_numpy(eigvalsh(pd.K)), dtype=np.float64)  # once: extremes and the deterministic equivalent
    lam_min_K, lam_max_K = float(ev_K[0]), float(ev_K[-1])
    lower_r, _ = bounds.homogeneity_exponents(w1, act.r1, act.r2)
    paper_factor = bounds.homogeneity_factor(w1, lower_r, 2.0)
    hadamard, hadamard_order = hadamard_lower_bound(pd.X, act, w1, d1, min_order=order)
    em0_singular = lam_min_K <= EM0_SINGULAR_RTOL * n * lam_max_K
    rec = {
        "sigma_max_X": smax_X, "sigma_min_X": smin_X, "d1_below_n": float(d1 < n),
        "t_auto": float(t_auto) if t_auto is not None else math.nan,
        "c0": c[0], "c1": c[1], "cinf2": cinf2, "c0_w": cw[0], "c1_w": cw[1], "cinf2_w": cinf2_w,
        "lambda_min_EM0": d1 * lam_min_K, "lambda_max_EM0": d1 * lam_max_K,
        "EM0_singular": float(em0_singular),
        "eq58_upper": bounds.eq58_upper(d1, n, c[0], c[1], cinf2, smax_X, w1, act.r2, act.r1),
        "eq58_upper_sharp": bounds.eq58_upper(d1, n, cw[0], cw[1], cinf2_w, smax_X),
        "eq58_lower_hadamard": hadamard, "eq58_lower_hadamard_order": float(hadamard_order),
        "eq58_lower_series": series_lower_bound(pd.X, act, w1, d1),
        "eq67_lower_hadamard": bounds.eq67_lower(hadamard, spec.bound_delta1),
        "eq67_upper": bounds.eq67_upper(d1, n, c[0], c[1], cinf2, smax_X, spec.bound_delta2, w1, act.r2, act.r1),
        "eq19_scale": bounds.eq19_scale(w1, spec.w2, d0, d1),
        **predict_record(None, d1, eigenvalues=np.clip(ev_K, 0.0, None)),
    }
    rec["eq67_upper_sharp"] = bounds.eq67_upper_sharp(rec["eq58_upper_sharp"], spec.bound_delta2)
    t_best = _best_order(act, w1, n, d0, aw, checked, d1) if best else None
    if best:
        rec["t_best"] = float(t_best) if t_best is not None else math.nan
    if spec.ntk:  # E[J J^T] = d1 (K + w2^2 (X^T X) o K'), exact (Hermite series of phi')
        E_ntk = expected_ntk_gram(pd.X, act, w1=w1, w2=spec.w2)
        ev_E = np.asarray(to_numpy(eigvalsh(E_ntk, overwrite=True)), dtype=np.float64)
        rec["lambda_min_E_ntk"], rec["lambda_max_E_ntk"] = d1 * float(ev_E[0]), d1 * float(ev_E[-1])
        del E_ntk
    for key in spec.t:
        t = t_auto if key == AUTO_T else t_best if key == BEST_T else key
        if t is None:  # no informative order: every bound field of "auto" / "best" is undefined
            rec.update({field_name(b, key): math.nan for b in _PER_T_BASES})
            rec[field_name("lower_undefined", key)] = float(orders.NO_ORDER)
            continue
        # sigma_min(X^{*t}) = 0 by the count n > C(d0+t-1, t) or numerically for these data (then 0.0 exactly)
        smin_t, smax_t, relerr_t, deficient = checked(t)
        code = orders.lower_undefined(act, w1, n, d0, t, X=pd.X, checked=checked)  # bit 8 from the data
        lower = bounds.eq58_lower_normalized(d1, a[t], smin_t, paper_factor) if not code else 0.0
        lower_sharp = bounds.eq58_lower_normalized(d1, aw[t], smin_t) if not code else 0.0
        rec.update({
            field_name("sigma_min_xkr", key): smin_t, field_name("sigma_max_xkr", key): smax_t,
            field_name("sigma_min_xkr_relerr", key): relerr_t,
            field_name("xkr_rank_deficient", key): float(deficient),
            field_name("lower_undefined", key): float(code),
            field_name("ct", key): c[t], field_name("ct_w", key): cw[t],
            field_name("eq58_lower", key): lower, field_name("eq58_lower_sharp", key): lower_sharp,
            field_name("eq67_lower", key): bounds.eq67_lower(lower, spec.bound_delta1),
            field_name("eq67_lower_sharp", key): bounds.eq67_lower(lower_sharp, spec.bound_delta1),
            field_name("eq20_width", key): bounds.eq20_width(smax_X, n, smin_t),
        })
    return {k: float(v) for k, v in rec.items()}


_PER_T_BASES = [b for b, info in FIELDS.items() if info.per_t]


def _best_order(act, w1: float, n: int, d0: int, aw, checked, d1: int) -> int | None:
    """``t = "best"``: the order in 1..``BEST_T_MAX`` whose sharp Eq. 58 lower bound ``d1 a_t(w1)^2
    sigma_min(X^{*t})^2`` is largest among the admissible ones (``orders.lower_undefined`` = 0 and X^{*t}
    not numerically rank deficient: the orders ``t = "auto"`` may take); None when none is. Ties go
    to the smaller t. ``checked``: the point's shared ``khatri_rao_extremes_checked``."""
    best, value = None, -1.0
    for t in range(1, BEST_T_MAX + 1):
        if orders.lower_undefined(act, w1, n, d0, t):
            continue
        smin, _smax, _rel, deficient = checked(t)
        if deficient:
            continue
        v = bounds.eq58_lower_normalized(d1, aw[t], smin)
        if v > value:
            best, value = t, v
    return best


#: Codes of the ``sigma_min_F_route`` field.
SIGMA_MIN_ROUTES = {"gram": 0, "qr": 1}


def accurate_sigma_extremes(X, act, spec: TrialSpec, key_W) -> tuple[float, float]:
    """``(sigma_min, sigma_max)`` of ``F = phi(W0 X)`` from a streamed QR of F (``linalg.tsqr``).

    The rows of F are regenerated block by block exactly as the Gram pass made them
    (``gram.phi_blocks``: same keys, same blocks), so the route is as reproducible as the Gram
    route. Cost: one more pass over W0 plus about 2 d1 n^2 flops of Householder QR and one dense SVD
    of the n x n factor R. Memory: R and one row block.
    """
    R = StreamedR(spec.n)
    for _r0, _r1, F in phi_blocks(X, act, spec.d1, w1=spec.w1, key_W=key_W, block_rows=spec.rows_per_block,
                                  dtype=spec.dtype):
        R.add_block(F)
    s = R.singular_values()
    return float(s[0]), float(s[-1])


#: Codes of the ``extremes_route`` / ``dev_M0_route`` fields.
ROUTES = {"dense": 0, "certified": 1, "lanczos": 2}

#: E[M0] counts as numerically singular when lambda_min <= this * n * lambda_max (then delta1 is NaN).
EM0_SINGULAR_RTOL = 64 * 2.2e-16


def run_trial(spec: TrialSpec, trial: int, *, spectrum: bool = False, cache: dict | None = None):
    """Every per-trial quantity of MATH.md for trial ``trial`` of the grid point ``spec``.

    Returns the record (``dict[str, float]``, keys ``record_fields(spec.t)``); with
    ``spectrum=True`` returns ``(record, eigenvalues of M0 ascending, float64 (n,))``.
    ``cache``: a dict shared by several calls (a study task), or None for the process-level
    bounded cache (``point_cache.process_cache()``).
    Cost: one streamed pass over W0 (2 d1 d0 n + d1 n^2 flops); lambda_min, lambda_max and
    lambda_2 of M0 (``extremes.extremes``: up to 3 Cholesky factorizations, n^3 / 3 flops each,
    from ``DENSE_BELOW_N`` on; one dense reduction below) and ||M0 - E[M0]||_2
    (``extremes.spectral_norm_certified``: 2 more factorizations, or dense below its crossover).
    If d1 < n, M0 has rank <= d1 < n: lambda_min(M0) is recorded as 0 exactly (not the rounding
    noise of a solver) and only the top of the spectrum is computed.
    """
    if not isinstance(spec, TrialSpec):
        raise TypeError(f"spec must be a TrialSpec, got {type(spec).__name__}")
    if isinstance(trial, bool) or not isinstance(trial, (int, np.integer)) or trial < 0:
        raise ValueError(f"trial must be a non-negative integer, got {trial!r}")
    act = get_activation(spec.activation)
    cache = layered(process_cache()) if cache is None else cache
    rec = point_record(spec, cache)
    pd = point_data(spec, cache)
    n, d0, d1, d2 = spec.n, spec.d0, spec.d1, spec.d2
    key_W = rng.stream_key(spec.seed, "W0", trial)
    sums = accumulate(pd.X, act, d1, w1=spec.w1, key_W=key_W,
                      d2=d2, w2=spec.w2, key_V=rng.stream_key(spec.seed, "V0", trial),
                      block_rows=spec.rows_per_block, dtype=spec.dtype, ntk=spec.ntk)
    return _record_from_sums(spec, act, rec, pd, sums, key_W, spectrum, owns_sums=True)


def run_trial_path(spec: TrialSpec, trial: int, d1s, *, w2s=None, cache: dict | None = None,
                   spectrum: bool = False) -> list:
    """Records of trial ``trial`` at every width of ``d1s`` from one streamed pass over W0 (a *width path*).

    ``d1s``: strictly increasing widths; ``spec.d1`` is ignored. For one (seed, trial) the rows of W0
    and the columns of V0 of a larger width extend those of a smaller one (counter-based keys), so
    ``M0(d1)`` is a prefix sum over rows: one pass to ``max(d1s)`` (``gram.accumulate_path``) gives every
    checkpoint, and each record is ``run_trial(replace(spec, d1=d, w2=w2), trial)`` up to rounding (the
    same rows summed in another order: about 1e-13 relative on lambda_min/lambda_max at the sizes of
    the tests; ``tests/test_width_path.py`` holds every float field to 1e-10 relative where the
    quantity is well conditioned). Fields that depend on d1 or on V0 (h0, nu, beta, margin, eq69, the
    point bounds) are those of the checkpoint: V0 is accumulated with unit variance and scaled by the
    checkpoint's ``w2``. ``w2s``: one w2 per checkpoint (e.g. the Eq. 19 rule ``w2 = s / (w1 sqrt(d0
    d1))``), default ``spec.w2`` everywhere. ``spectrum``: each item is ``(record, eigenvalues of M0)``
    as ``run_trial(..., spectrum=True)`` returns (a dense reduction per checkpoint).

    Cost: one pass to ``max(d1s)`` plus one eigen-reduction (``extremes``) and one ``||M0 - E[M0]||`` per
    checkpoint; a checkpoint whose Gram route is not accurate enough also takes the QR route (its own
    pass to that width). Memory: that of one trial at the largest width.
    """
    if not isinstance(spec, TrialSpec):
        raise TypeError(f"spec must be a TrialSpec, got {type(spec).__name__}")
    if isinstance(trial, bool) or not isinstance(trial, (int, np.integer)) or trial < 0:
        raise ValueError(f"trial must be a non-negative integer, got {trial!r}")
    d1s = list(np.asarray(d1s, dtype=object).reshape(-1)) if np.ndim(d1s) == 1 else d1s
    if np.ndim(d1s) != 1 or not all(is_integer(d) for d in d1s):
        raise ValueError(f"d1s must be a 1-D sequence of integer widths (no bools, no fractions), got {d1s!r}")
    d1s = [int(d) for d in d1s]
    if not d1s or any(d < 1 for d in d1s) or any(b <= a for a, b in zip(d1s, d1s[1:])):
        raise ValueError(f"d1s must be strictly increasing positive widths, got {d1s}")
    w2s = [spec.w2] * len(d1s) if w2s is None else list(w2s)
    if len(w2s) != len(d1s):
        raise ValueError(f"w2s has {len(w2s)} values for {len(d1s)} widths")
    if any(isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, float, np.integer, np.floating)) for w in w2s):
        raise ValueError(f"w2s must be numbers (one w2 per width), got {w2s!r}")
    w2s = [float(w) for w in w2s]
    specs = [replace(spec, d1=d, w2=w) for d, w in zip(d1s, w2s)]
    for sp in specs:
        validate_spec(sp)
    act = get_activation(spec.activation)
    cache = layered(process_cache()) if cache is None else cache
    pd = point_data(specs[-1], cache)
    key_W = rng.stream_key(spec.seed, "W0", trial)
    out = []
    path = accumulate_path(pd.X, act, d1s, w1=spec.w1, key_W=key_W, d2=spec.d2,
                           key_V=rng.stream_key(spec.seed, "V0", trial), block_rows=specs[-1].rows_per_block,
                           dtype=spec.dtype, ntk=spec.ntk)
    for sp, (d, sums) in zip(specs, path):
        assert d == sp.d1
        if sums.VF is not None:  # unit-variance V0 in the pass: the checkpoint's w2 comes last
            sums.VF *= sp.w2
            sums.VVt = sums.VVt * (sp.w2 * sp.w2)
            sums.max_col_norm_V0 *= sp.w2
        if sums.A is not None:
            sums.A *= sp.w2 * sp.w2
        out.append(_record_from_sums(sp, act, point_record(sp, cache), pd, sums, key_W, spectrum=spectrum))
    return out


def _ntk_fields(spec: TrialSpec, rec: dict, pd: PointData, M0, A, key_W, work, method: str) -> dict:
    """The NTK at initialization from the pass's W-layer sum ``A`` (``gram.accumulate(ntk=True)``):
    ``J J^T = M0 + (X^T X) o A`` is formed in ``A`` itself (row blocks of ``X^T X``, no n x n temporary),
    its extremes certified like M0's (``linalg.extremes``, ``work`` as the workspace), and compared with
    the exact ``lambda_min(E[J J^T])`` of the grid point (``rec``)."""
    X = pd.X
    n = spec.n
    step = max(1, min(n, 2**20 // max(1, n)))
    for a in range(0, n, step):
        A[a:a + step] *= X[:, a:a + step].T @ X
    A += M0
    ext = extremes(A, ("min", "max"), seed_key=key_W, work=work, method=method)
    lam_min, lam_max = ext["min"].value, ext["max"].value
    lam_E = rec["lambda_min_E_ntk"]
    return {"lambda_min_ntk": lam_min, "lambda_max_ntk": lam_max, "mu_ntk0": math.sqrt(max(lam_min, 0.0)),
            "delta_ntk": 1.0 - lam_min / lam_E if lam_E > 0 else math.nan,
            "ntk_route": float(ROUTES[ext.route])}


def _record_from_sums(spec: TrialSpec, act, rec: dict, pd: PointData, sums, key_W, spectrum: bool = False,
                      owns_sums: bool = False):
    """The trial's record from the sums of its pass (``gram.accumulate`` or a checkpoint of
    ``gram.accumulate_path``): extremes of M0, the accurate route where needed, the bound chain.
    ``sums.M0`` is read, never written; ``sums.spare`` (if any) is used as the workspace;
    ``owns_sums``: M0 may be released (``sums.M0 = None``) once it is no longer needed."""
    n, d0, d1, d2 = spec.n, spec.d0, spec.d1, spec.d2
    M0 = sums.M0
    xp = get_xp(spec.backend)
    work = sums.spare if sums.spare is not None else xp.empty((n, n), dtype=xp.float64)
    sums.spare = None
    rank_deficient = d1 < n
    # The certified route's CuPy branch has not run on a GPU yet (no device in the sessions that
    # built it): on CuPy every trial takes cuSOLVER's dense syevd until it is measured there.
    method = "auto" if backend_name(xp) == "numpy" else "dense"
    eig = None
    if spectrum:
        work[...] = M0
        eig = eigvalsh(work, overwrite=True)  # the dense reduction inside the workspace
        lam_min, lam_max = float(eig[0]), float(eig[-1])
        lam_2 = float(eig[-2]) if n >= 2 else math.nan
        extremes_route = ROUTES["dense"]
    else:
        which = ("max", "second") if rank_deficient else ("min", "max", "second")
        if n < 2:
            which = ("min", "max")
        ext = extremes(M0, which, seed_key=key_W, work=work, method=method)
        lam_max = ext["max"].value
        lam_min = ext["min"].value if "min" in ext.brackets else 0.0  # not asked when rank deficient
        lam_2 = ext["second"].value if "second" in ext.brackets else math.nan
        extremes_route = ROUTES[ext.route]
    if rank_deficient:
        lam_min = 0.0  # rank(M0) <= d1 < n: exactly 0
    norm = spectral_norm_certified(M0, pd.K, beta=float(d1), seed_key=key_W, work=work, method=method)
    dev = norm.value
    ntk_rec = _ntk_fields(spec, rec, pd, M0, sums.A, key_W, work, method) if spec.ntk else {}
    sums.A = None
    del work
    sigma_max_F = math.sqrt(max(lam_max, 0.0))
    if rank_deficient:
        sigma_min_F, relerr, smin_route = 0.0, 0.0, SIGMA_MIN_ROUTES["gram"]  # exactly 0, no error
    else:
        sigma_min_F = math.sqrt(max(lam_min, 0.0))
        relerr, smin_route = gram_relative_error(lam_min, lam_max, d1, n), SIGMA_MIN_ROUTES["gram"]
        if relerr > spec.accuracy:
            # M0 = F^T F squared cond(F): redo sigma_min on F itself (the same rows, a streamed QR).
            # M0 is no longer needed: R takes its place in memory (3 n^2 at most, as before).
            M0 = None  # R takes M0's place in memory where the sums are ours
            if owns_sums:
                sums.M0 = None
            sigma_min_F, sigma_max_qr = accurate_sigma_extremes(pd.X, act, spec, key_W)
            lam_min = sigma_min_F * sigma_min_F
            relerr, smin_route = qr_relative_error(sigma_min_F, sigma_max_qr, d1, n), SIGMA_MIN_ROUTES["qr"]
        if spec.dtype == "float32":  # F itself carries float32 rounding: no route removes it
            relerr += float32_relative_error(sigma_min_F, sigma_max_F, d0, n)
    smax_X = rec["sigma_max_X"]
    smax_V0 = spec.w2 * math.sqrt(max(float(extreme_eigenvalues(sums.VVt_unit)["lambda_max"]), 0.0))
    k1 = bounds.eq60_k(sums.max_row_norm_W0, spec.w1, d0, d1)
    k2 = bounds.eq60_k(sums.max_col_norm_V0, spec.w2, d2, d1)
    kappa = bounds.lemma6_kappa(act.dphi_max, smax_X, k1, spec.w1, d0, d1)
    resid = sums.VF - pd.Y
    h0 = float((resid * resid).sum())
    chi_max = spec.chi_max if spec.chi_max is not None else smax_V0
    mu, nu, beta = bounds.lemma3(sigma_min_F, sigma_max_F, smax_X, smax_V0, act.dphi_max, act.ddphi_max, chi_max)
    eta = bounds.eq13_step(mu, nu, beta, h0)
    rec.update({
        "sigma_min_F": sigma_min_F, "sigma_min_F_relerr": relerr, "sigma_min_F_route": float(smin_route),
        "sigma_max_F": sigma_max_F,
        "lambda_min_M0": lam_min, "lambda_max_M0": lam_max, "lambda_2_M0": lam_2,
        "asym_ratio_lambda_min": bounds.measured_ratio(lam_min, rec["asym_lambda_min"]),
        "asym_ratio_lambda_2": bounds.measured_ratio(lam_2, rec["asym_lambda_2_classical"]),
        "asym_ratio_spike": bounds.measured_ratio(lam_max, rec["asym_lambda_spike"]),
        "delta1": (math.nan if rec["EM0_singular"] else
                   1.0 - lam_min / rec["lambda_min_EM0"]),
        "delta2": lam_max / rec["lambda_max_EM0"] - 1.0,
        "dev_M0": dev, "extremes_route": float(extremes_route), "dev_M0_route": float(ROUTES[norm.route]),
        "kappa": kappa, "kappa_sqrt_d1": bounds.lemma6_kappa_sqrt_d1(kappa, d1),
        "k1": k1, "k2": k2, "sigma_max_V0": smax_V0,
        "eq69_ratio": smax_V0 / bounds.eq69_bound(spec.w2, d1, d2),
        "h0": h0, "mu": mu, "nu": nu, "beta": beta,
        "margin": bounds.eq9_margin(mu, nu, beta, h0, spec.C), "eta_max": eta,
        "rate": bounds.eq14_rate(eta, mu, spec.C), "rho": bounds.eq6_radius(mu, beta),
        "lazy_ratio": bounds.lazy_ratio(beta, nu),
    })
    rec.update(ntk_rec)
    record = {k: float(rec[k]) for k in record_fields(spec.t, spec.ntk)}
    if spectrum:
        return record, np.asarray(to_numpy(eig), dtype=np.float64)
    return record
