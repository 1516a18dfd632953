"""Which Khatri-Rao orders t give an informative Eq. 58/67 lower bound, and why the others do not.

Rule of this module: the lower bound ``d1 c_t(w1)^2/t! sigma_min(X^{*t})^2`` (Eq. 58) is *undefined*
-- identically 0, whatever the trial -- exactly when ``c_t(w1) = 0`` (a parity zero declared by the
activation, e.g. GeLU's odd ``t >= 3``), when ``n > C(d0 + t - 1, t)`` (the columns of ``X^{*t}`` lie
in the symmetric tensors of that dimension, so ``sigma_min(X^{*t}) = 0`` for any data), or, given
the data X, when ``X^{*t}`` is numerically rank deficient for these data (duplicate columns, or
antipodal ones at even t: ``khatri_rao.khatri_rao_extremes_checked``). Such a bound is recorded as 0 with its reason code (``lower_undefined``, bit flags) and never enters a ratio or a
holding count. ``t = "auto"`` picks the smallest order that is not undefined.
"""

from __future__ import annotations

from .hermite import normalized_hermite_coefficients
from .khatri_rao import khatri_rao_extremes_checked, symmetric_tensor_dim

#: ``t = "auto"`` searches t = 1..T_AUTO_MAX.
T_AUTO_MAX = 64
#: Reason codes of ``lower_undefined`` (bit flags, combined with |; NO_ORDER only for t = "auto").
DEFINED, COEFFICIENT_ZERO, RANK_DEFICIENT, NO_ORDER, DATA_RANK_DEFICIENT = 0, 1, 2, 4, 8
REASONS = {COEFFICIENT_ZERO: "c_t(w1) = 0 (parity)",
           RANK_DEFICIENT: "n > C(d0+t-1, t): sigma_min(X^{*t}) = 0 for any data",
           NO_ORDER: f"no informative t <= {T_AUTO_MAX}",
           DATA_RANK_DEFICIENT: "X^{*t} numerically rank deficient for these data (duplicate or antipodal columns)"}


def lower_undefined(activation, w1: float, n: int, d0: int, t: int, X=None, checked=None) -> int:
    """The reason code (module docstring) of the Eq. 58 lower bound at order ``t``: 0 if defined.

    With the data ``X`` (d0 x n) the numerical rank of ``X^{*t}`` is tested too (one eigen-solve of
    the n x n ``G^{o t}``); without it only the count ``n > C(d0+t-1, t)``. ``checked``: ``t ->
    khatri_rao_extremes_checked(X, t)``, to share that eigen-solve with a caller that needs it too."""
    a_t = normalized_hermite_coefficients(activation, int(t), w1)[int(t)]
    code = COEFFICIENT_ZERO if a_t == 0.0 else DEFINED
    if n > symmetric_tensor_dim(d0, int(t)):
        code |= RANK_DEFICIENT
    elif X is not None and (checked(int(t)) if checked is not None else khatri_rao_extremes_checked(X, int(t)))[3]:
        code |= DATA_RANK_DEFICIENT
    return code


def informative_t(activation, w1: float, n: int, d0: int, max_t: int = T_AUTO_MAX, X=None,
                  checked=None) -> int | None:
    """The smallest ``t`` in ``1..max_t`` with ``c_t(w1) != 0`` and ``n <= C(d0+t-1, t)`` (and, given
    the data ``X``, ``X^{*t}`` not numerically rank deficient), else None. ``checked``: ``t ->
    khatri_rao_extremes_checked(X, t)``, to share the eigen-solves with a caller that needs them too."""
    a = normalized_hermite_coefficients(activation, max_t, w1)
    for t in range(1, max_t + 1):
        if a[t] != 0.0 and n <= symmetric_tensor_dim(d0, t):
            if X is not None and (checked(t) if checked is not None else khatri_rao_extremes_checked(X, t))[3]:
                continue
            return t
    return None


def describe(code) -> str:
    """Words for a ``lower_undefined`` code (each bit set, joined by '; '); 'not computed' for NaN."""
    try:
        c = float(code)
    except (ValueError, TypeError):
        return f"unknown code {code!r}"
    if c != c:
        return "not computed"
    if c != int(c) or c < 0:
        return f"unknown code {code!r}"
    c = int(c)
    if c == DEFINED:
        return "defined"
    words = [REASONS[b] for b in sorted(REASONS) if c & b]
    rest = c & ~sum(REASONS)
    if rest:
        words.append(f"unknown code {rest}")
    return "; ".join(words)
