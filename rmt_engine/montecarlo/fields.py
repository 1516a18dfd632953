"""The fields of a trial record: names, meaning, units and the paper's equation numbers.

A record (``run_trial``) is a flat ``dict[str, float]``. Fields that depend on the Khatri-Rao
order ``t`` carry the suffix ``_t{t}`` (``sigma_min_xkr_t2``); for ``t = "auto"`` (the smallest
informative order of the grid point, stored in ``t_auto``) the suffix is ``_auto``. Fields marked ``per_point``
depend only on the grid point (data, activation, widths, w1, w2), not on the trial's random
weights: a study stores them without the ``trial`` dimension.

Naming: ``*_sharp`` is the exact form of a bound, with the coefficients ``c_i(w1)`` of
``phi(w1 z)`` in place of ``w1^r c_i`` (MATH.md): it holds without hidden constants.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..theory.asymptotics import ASYM_FIELDS


@dataclass(frozen=True)
class FieldInfo:
    long_name: str
    equation: str = ""
    units: str = "1"
    per_point: bool = False
    per_t: bool = False


def _p(long_name, equation="", units="1", per_t=False):
    return FieldInfo(long_name, equation, units, per_point=True, per_t=per_t)


def _r(long_name, equation="", units="1", per_t=False):
    return FieldInfo(long_name, equation, units, per_point=False, per_t=per_t)


#: Base field names (before the ``_t{t}`` suffix) in record order.
FIELDS: dict[str, FieldInfo] = {
    # data and Khatri-Rao power (per grid point)
    "sigma_max_X": _p("largest singular value of the data X", "Eq. 20"),
    "sigma_min_X": _p("smallest (n-th) singular value of the data X", "Eq. 20"),
    "sigma_min_xkr": _p("n-th singular value of the Khatri-Rao power X^{*t}", "Eq. 20, 58", per_t=True),
    "sigma_max_xkr": _p("largest singular value of the Khatri-Rao power X^{*t}", "Eq. 53-55", per_t=True),
    "xkr_rank_deficient": _p("1 if sigma_min(X^{*t}) = 0: n > C(d0+t-1, t) (any data), or numerically for these "
                             "data (duplicate or antipodal columns; rmt_engine.theory.khatri_rao.XKR_RANK_RTOL)",
                             "Eq. 20", per_t=True),
    "sigma_min_xkr_relerr": _p("a-posteriori bound on the relative error of sigma_min_xkr (rounding of G^{o t} and "
                               "its eigen-solve; inf where sigma_min_xkr is not resolved)", "Eq. 20, 58", per_t=True),
    "t_auto": _p("smallest t >= 1 with c_t(w1) != 0 and sigma_min(X^{*t}) > 0 (by count and numerically for "
                 "these data; NaN if none up to 64)", "Eq. 58, 67"),
    "lower_undefined": _p("why the Eq. 58/67 lower bound at t is 0 (undefined), bit flags: 0 defined, 1 c_t(w1) = 0 "
                          "(parity), 2 n > C(d0+t-1, t), 4 no informative t (auto), 8 X^{*t} numerically rank "
                          "deficient for these data (duplicate or antipodal columns)", "Eq. 58, 67", per_t=True),
    "d1_below_n": _p("1 if d1 < n, so sigma_min(phi(W0 X)) = 0", "Lemma 3"),
    # Hermite coefficients of phi (paper form, w1 = 1) and of phi(w1 .) (sharp form)
    "c0": _p("Hermite coefficient c_0 of phi", "Def. 4, Eq. 56"),
    "c1": _p("Hermite coefficient c_1 of phi", "Def. 4, Eq. 56"),
    "cinf2": _p("c_inf^2 = E[phi(z)^2] - c_0^2 - c_1^2", "Eq. 57"),
    "ct": _p("Hermite coefficient c_t of phi", "Eq. 58", per_t=True),
    "c0_w": _p("Hermite coefficient c_0(w1) of phi(w1 z)", "Eq. 56"),
    "c1_w": _p("Hermite coefficient c_1(w1) of phi(w1 z)", "Eq. 56"),
    "cinf2_w": _p("c_inf(w1)^2 of phi(w1 z)", "Eq. 57"),
    "ct_w": _p("Hermite coefficient c_t(w1) of phi(w1 z)", "Eq. 58", per_t=True),
    # Eq. 58: the expectation E[M0]
    "lambda_min_EM0": _p("smallest eigenvalue of E[M0]", "Eq. 56, 58"),
    "lambda_max_EM0": _p("largest eigenvalue of E[M0]", "Eq. 56, 58"),
    "EM0_singular": _p("1 if lambda_min(E[M0]) <= 64 eps n lambda_max(E[M0]) (numerically singular, e.g. "
                       "repeated data columns): delta1 is then NaN", "Eq. 56"),
    "eq58_lower": _p("Eq. 58 lower bound w1^{2 r} d1 c_t^2/t! sigma_min(X^{*t})^2 (paper form; r = r1 for "
                     "w1 <= 1, r2 for w1 > 1; not a bound in general)", "Eq. 58", per_t=True),
    "eq58_upper": _p("Eq. 58 upper bound w1^{2 r2} d1 (n c0^2 + (c1^2 + cinf^2) sigma_max(X)^2) (paper form)", "Eq. 58"),
    "eq58_lower_sharp": _p("sharp Eq. 58 lower bound d1 c_t(w1)^2/t! sigma_min(X^{*t})^2", "Eq. 58", per_t=True),
    "eq58_lower_hadamard": _p("full sharp lower bound d1 sum_i c_i(w1)^2/i! lambda_min(G^{o i}) (Weyl, every order; each "
                              "lambda_min less its rounding bound, so 0 = undefined where none is resolved)",
                              "Eq. 56, 58"),
    "eq58_lower_series": _p("sharper all-orders lower bound d1 [lambda_min(sum_{i<=16} a_i G^{o i}) + tail "
                            "lambda_min(G^{o 17})] (Weyl on two terms; >= eq58_lower_hadamard)", "Eq. 56, 58"),
    "eq58_lower_hadamard_order": _p("last order i at which lambda_min(G^{o i}) was evaluated for eq58_lower_hadamard",
                                    "Eq. 56, 58"),
    "eq58_upper_sharp": _p("sharp Eq. 58 upper bound d1 (n c0(w1)^2 + (c1(w1)^2 + cinf(w1)^2) sigma_max(X)^2)", "Eq. 58"),
    # Eq. 67: phi(W0 X) itself
    "eq67_lower": _p("Eq. 67 lower bound on sigma_min(phi(W0 X)) at the deviation bound_delta1 (paper form)", "Eq. 67, 68", per_t=True),
    "eq67_upper": _p("Eq. 67 upper bound on sigma_max(phi(W0 X)) at the deviation bound_delta2 (paper form)", "Eq. 67"),
    "eq67_lower_sharp": _p("sharp Eq. 67 lower bound sqrt((1 - bound_delta1) * eq58_lower_sharp)", "Eq. 67", per_t=True),
    "eq67_lower_hadamard": _p("sqrt((1 - bound_delta1) * eq58_lower_hadamard)", "Eq. 67"),
    "eq67_upper_sharp": _p("sharp Eq. 67 upper bound sqrt((1 + bound_delta2) * eq58_upper_sharp)", "Eq. 67"),
    "eq20_width": _p("Eq. 20 width scale sigma_max(X)^2 sqrt(n) / sigma_min(X^{*t})^3 (xi = 1)", "Eq. 20, 79", per_t=True),
    "eq19_scale": _p("w1 w2 sqrt(d0 d1) (Eq. 19 asks for O(1))", "Eq. 19"),
    # the deterministic equivalent of the spectrum of M0 (rmt_engine.theory.asymptotics), per grid point
    **{k: _p(v[0], v[1]) for k, v in ASYM_FIELDS.items()},
    # per trial: spectra of M0 = phi(W0 X)^T phi(W0 X)
    "sigma_min_F": _r("sigma_min(phi(W0 X)): sqrt(lambda_min(M0)) on the Gram route, sigma_min(R) of a streamed "
                      "QR of phi(W0 X) on the accurate route (sigma_min_F_route)", "Eq. 67"),
    "sigma_min_F_relerr": _r("a-posteriori bound on the relative error of sigma_min_F (0 when d1 < n: exactly 0; "
                             "inf where not resolved); verdicts inside it are inconclusive", "Eq. 67"),
    "sigma_min_F_route": _r("how sigma_min_F was computed: 0 Gram route (lambda_min(M0)), 1 accurate route "
                            "(streamed TSQR, taken when the Gram route's error bound exceeds the accuracy)"),
    "sigma_max_F": _r("sigma_max(phi(W0 X)) = sqrt(lambda_max(M0))", "Eq. 67"),
    "lambda_min_M0": _r("smallest eigenvalue of M0 (sigma_min_F^2 on the accurate route)", "Eq. 59"),
    "lambda_max_M0": _r("largest eigenvalue of M0 (the c_0 spike when c_0 != 0)", "Eq. 59"),
    "lambda_2_M0": _r("second largest eigenvalue of M0 (bulk edge)", "Eq. 59"),
    "asym_ratio_lambda_min": _r("lambda_min(M0) / asym_lambda_min (NaN when the prediction is 0)", "LLC 2018"),
    "asym_ratio_lambda_2": _r("lambda_2(M0) / asym_lambda_2_classical", "LLC 2018"),
    "asym_ratio_spike": _r("lambda_max(M0) / asym_lambda_spike (NaN without a spike)", "LLC 2018"),
    "delta1": _r("measured deviation delta1 = 1 - lambda_min(M0)/lambda_min(E[M0]) (not the bound's bound_delta1)", "Eq. 67"),
    "delta2": _r("measured deviation delta2 = lambda_max(M0)/lambda_max(E[M0]) - 1 (not the bound's bound_delta2)", "Eq. 67"),
    "dev_M0": _r("||M0 - E[M0]||_2", "Eq. 66"),
    "extremes_route": _r("how lambda_min/max/2 of M0 were computed: 0 dense reduction, 1 certified "
                         "(Krylov + Cholesky brackets, rmt_engine.linalg.extremes)"),
    "dev_M0_route": _r("how ||M0 - E[M0]||_2 was computed: 0 dense reduction, 1 certified"),
    "kappa": _r("Lemma 6 scale 4 phidot_max^2 sigma_max(X)^2 k1 w1 sqrt(d0 log d1)", "Lemma 6, Eq. 66"),
    "kappa_sqrt_d1": _r("kappa sqrt(d1): the Lipschitz constant of M0 in all of W0 (Lemma 6 misses sqrt(d1))",
                        "Lemma 6"),
    "k1": _r("max_i ||W0 row i|| / (w1 sqrt(d0 log d1))", "Eq. 60"),
    "k2": _r("max_i ||V0 column i|| / (w2 sqrt(d2 log d1))", "Eq. 60"),
    "sigma_max_V0": _r("largest singular value of V0", "Eq. 69"),
    "eq69_ratio": _r("sigma_max(V0) / (w2 (2 sqrt(d1) + sqrt(d2)))", "Eq. 69"),
    # per trial: the convergence chain
    "h0": _r("h(Theta0) = ||V0 phi(W0 X) - Y||_F^2", "Eq. 16, 70"),
    "mu": _r("mu = sigma_min(phi(W0 X))", "Eq. 18"),
    "nu": _r("nu = phidot_max sigma_max(X) sigma_max(V0) + sigma_max(phi(W0 X))", "Eq. 18"),
    "beta": _r("beta = sqrt(2) sigma_max(X) (phidot_max + phiddot_max chi_max)", "Eq. 18"),
    "margin": _r("C alpha_f mu^6 / (beta^2 nu^2 h(Theta0)); > 1 means Eq. 9 holds", "Eq. 9"),
    "eta_max": _r("step-size bound 1/(beta ||grad f|| + beta_f mu^2 + beta_f nu^2)", "Eq. 13"),
    "rate": _r("per-step contraction 1 - C eta alpha_f mu^2 at eta = eta_max", "Eq. 14"),
    "rho": _r("radius mu / (2 beta)", "Eq. 6"),
    "lazy_ratio": _r("beta / nu^2", "App. F, Eq. 82-85"),
}


#: The NTK at initialization (``TrialSpec.ntk``, ``[study] ntk = true``; d2 = 1): recorded only where the
#: study asks (it doubles the Gram work). ``J J^T = M0 + (X^T X) o A``, ``A = sum_k v_k^2 phi'(w_k^T X)^T
#: phi'(w_k^T X)``; its expectation ``E[J J^T] = d1 (K + w2^2 (X^T X) o K')``, K' the dual kernel of phi'.
NTK_FIELDS: dict[str, FieldInfo] = {
    "lambda_min_E_ntk": _p("smallest eigenvalue of E[J J^T] = d1 (K + w2^2 (X^T X) o K') (exact, Hermite series "
                           "of phi')", "Def. 1; MZ 2022, BAM 2022"),
    "lambda_max_E_ntk": _p("largest eigenvalue of E[J J^T]", "Def. 1"),
    "lambda_min_ntk": _r("smallest eigenvalue of the NTK J J^T at Theta0 (both layers; certified)", "Def. 1, Lemma 3"),
    "lambda_max_ntk": _r("largest eigenvalue of the NTK J J^T at Theta0", "Def. 1"),
    "mu_ntk0": _r("sigma_min(J) = sqrt(lambda_min_ntk) at Theta0 (>= mu: the NTK contains M0)", "Def. 1, Lemma 3"),
    "delta_ntk": _r("NTK deviation 1 - lambda_min(J J^T) / lambda_min(E[J J^T]) (the NTK's delta1)", "Eq. 67 analogue"),
    "ntk_route": _r("how the NTK extremes were computed: 0 dense reduction, 1 certified"),
}

AUTO_T = "auto"
#: ``t = "best"``: the admissible order (c_t(w1) != 0, X^{*t} of full rank) in 1..``BEST_T_MAX`` with the
#: largest sharp Eq. 58 lower bound (``t_auto`` is the smallest admissible one, not the best: gelu at
#: n = 100, d0 = 16 has t_best = 4, a 1.89x larger bound than t_auto = 2; ``tests/test_trial.py``).
BEST_T = "best"
BEST_T_MAX = 8
#: The symbolic orders: each per-t field has one variable ``{field}_{name}`` for each that a study asks.
SYMBOLIC_T = (AUTO_T, BEST_T)
#: Fields recorded only when ``t`` holds ``"best"`` (a study without it keeps its variables).
BEST_FIELDS = {
    "t_best": _p(f"the admissible t in 1..{BEST_T_MAX} (c_t(w1) != 0, X^{{*t}} of full rank by count and "
                 "numerically) with the largest sharp Eq. 58 lower bound; NaN if none", "Eq. 58, 67"),
}


def field_name(base: str, t: int | str | None = None) -> str:
    """The record key of ``base`` (``_t{t}`` appended for t-dependent fields, ``_auto`` for t = "auto")."""
    info = FIELDS[base] if base in FIELDS else NTK_FIELDS[base]
    if info.per_t:
        if t is None:
            raise ValueError(f"field {base!r} depends on t: pass t")
        if t in SYMBOLIC_T:
            return f"{base}_{t}"
        return f"{base}_t{int(t)}"
    return base


def int_orders(t_values) -> tuple[int, ...]:
    """The explicit Khatri-Rao orders of ``t_values`` (without "auto" and "best")."""
    return tuple(int(t) for t in t_values if t not in SYMBOLIC_T)


def fields_of(ntk: bool = False, best: bool = False) -> dict[str, FieldInfo]:
    """The base fields of a record: ``FIELDS``, ``BEST_FIELDS`` when t holds "best", and ``NTK_FIELDS``
    when the NTK is asked for."""
    return {**FIELDS, **(BEST_FIELDS if best else {}), **(NTK_FIELDS if ntk else {})}


def record_fields(t_values, ntk: bool = False) -> dict[str, FieldInfo]:
    """All record keys for Khatri-Rao orders ``t_values``, in record order, with their info
    (``ntk``: with the NTK fields)."""
    out: dict[str, FieldInfo] = {}
    for base, info in fields_of(ntk, BEST_T in tuple(t_values)).items():
        if info.per_t:
            for t in t_values:
                out[field_name(base, t)] = info
        else:
            out[base] = info
    return out
