"""Activation functions and the facts about them that the paper's bounds use.

Every built-in carries exact, xp-generic (NumPy/CuPy) elementwise ``phi``, ``dphi`` and ``ddphi``
and the constants that appear in the paper:

- ``phi0 = phi(0)`` and ``phi0_zero`` (Assumption 2 asks for ``phi(0) = 0``; sigmoid and softplus
  violate it). ``odd``: tanh and erf are odd, so ``c_0 = 0`` and every even Hermite coefficient is
  zero (paper footnote 5).
- ``parity_zeros = (parity, start)``: the Hermite coefficients ``c_i`` with ``i`` of that parity
  and ``i >= start`` are exactly zero, because the even (or odd) part of ``phi`` is a polynomial of
  degree ``< start`` (``He_i`` has the parity of ``i`` and is orthogonal to lower degrees). Built-ins:
  tanh, erf odd: ``("even", 0)``; ``sigmoid - 1/2`` odd: ``("even", 2)``; ``x Phi(x) - x/2`` (GeLU)
  and ``softplus(x) - x/2`` even: ``("odd", 3)``. ``rmt_engine.theory.hermite`` stores these coefficients
  as exact 0.0 (not quadrature noise), so a bound built on one is recognised as undefined. The
  structure is the same for ``phi(w1 x)`` at every ``w1``.
- ``dphi_max = sup |phi'|`` and ``ddphi_max = sup |phi''|`` (Assumption 2, Eq. 18), closed forms.
- ``r1``, ``r2``: the exponents of Theorem 3, ``tau^r1 |phi(a)| <= |phi(tau a)| <= tau^r2 |phi(a)|``
  for all real ``a`` and ``0 < tau < 1``. Written as ``f(a, tau) = log(|phi(tau a)|/|phi(a)|)/log(tau)``,
  the tightest values are ``r1 = sup f`` and ``r2 = inf f`` (``None`` where infinite).
  Since ``a`` and ``tau a`` have the same sign, ``f`` is the secant slope of
  ``h(s) = log|phi(+-e^s)|`` over ``[s + log tau, s]``; the supremum (infimum) of secant slopes is
  the supremum (infimum) of the slope ``h'(s) = a phi'(a)/phi(a)`` (the elasticity of ``phi``),
  approached as ``tau -> 1``. ``r1_note``/``r2_note`` say how each value was obtained.

Paper statements these facts contradict (see the notes): footnote 3 says the ``r1, r2``
assumption holds for sigmoid; it does not, ``r2`` does not exist for sigmoid (nor for softplus or
GeLU) because ``phi(tau a)/phi(a) -> infinity`` as ``a -> -infinity``.

ELU is not provided: its ``phi''`` jumps at 0 (Assumption 2 asks for a twice-differentiable
``phi``), and the 2-D quadrature of ``rmt_engine.theory.hermite.dual_kernel`` would lose its accuracy on
the kink.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..backend.xp import array_namespace, special

__all__ = [
    "Activation",
    "activation",
    "available_activations",
    "register_activation",
    "ParityWarning",
    "parity_residual",
    "gelu",
    "tanh",
    "sigmoid",
    "softplus",
    "erf",
]

_SQRT2PI = math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRTPI = 2.0 / math.sqrt(math.pi)


@dataclass(frozen=True)
class Activation:
    """An activation ``phi`` with its first two derivatives and the facts the bounds need."""

    name: str
    phi: Callable = field(repr=False)
    dphi: Callable = field(repr=False)
    ddphi: Callable = field(repr=False)
    phi0: float = 0.0
    odd: bool = False
    dphi_max: float = math.nan
    ddphi_max: float = math.nan
    r1: float | None = None
    r2: float | None = None
    parity_zeros: tuple | None = None
    r1_note: str = ""
    r2_note: str = ""
    sup_note: str = ""
    builtin: bool = False

    @property
    def phi0_zero(self) -> bool:
        """True when ``phi(0) = 0`` (the paper's Assumption 2)."""
        return self.phi0 == 0.0

    # alias with the name used in the project brief
    satisfies_phi0_zero = phi0_zero

    def coefficient_is_zero(self, i: int) -> bool:
        """True when ``c_i(w1) = 0`` exactly for every ``w1`` by the declared parity structure."""
        if self.parity_zeros is None:
            return False
        parity, start = self.parity_zeros
        return i >= start and (i % 2 == 0) == (parity == "even")

    def phi_w(self, w1: float) -> Callable:
        """``x -> phi(w1 x)``, the activation seen by unit-variance weights."""
        return lambda x: self.phi(w1 * x)

    def facts(self) -> dict:
        """The facts as a flat dict, for reports."""
        return {
            "name": self.name,
            "phi0": self.phi0,
            "phi0_zero": self.phi0_zero,
            "odd": self.odd,
            "dphi_max": self.dphi_max,
            "ddphi_max": self.ddphi_max,
            "r1": self.r1,
            "r2": self.r2,
            "parity_zeros": self.parity_zeros,
            "r1_note": self.r1_note,
            "r2_note": self.r2_note,
            "sup_note": self.sup_note,
            "builtin": self.builtin,
        }


# ----------------------------------------------------------------------------------------------
# elementwise formulas (xp-generic)


def _gelu(x):
    xp = array_namespace(x)
    return x * special(xp).ndtr(x)


def _gelu_d(x):
    xp = array_namespace(x)
    return special(xp).ndtr(x) + x * xp.exp(-0.5 * x * x) / _SQRT2PI


def _gelu_dd(x):
    xp = array_namespace(x)
    return (2.0 - x * x) * xp.exp(-0.5 * x * x) / _SQRT2PI


def _tanh(x):
    xp = array_namespace(x)
    return xp.tanh(x)


def _sech2(x, xp):
    # sech^2 x = 4 e^{-2|x|} / (1 + e^{-2|x|})^2: no overflow, full relative accuracy in the tails
    e = xp.exp(-2.0 * xp.abs(x))
    return 4.0 * e / ((1.0 + e) * (1.0 + e))


def _tanh_d(x):
    xp = array_namespace(x)
    return _sech2(x, xp)


def _tanh_dd(x):
    xp = array_namespace(x)
    return -2.0 * xp.tanh(x) * _sech2(x, xp)


def _sigmoid(x):
    xp = array_namespace(x)
    return special(xp).expit(x)


def _sigmoid_d(x):
    xp = array_namespace(x)
    sp = special(xp)
    return sp.expit(x) * sp.expit(-x)


def _sigmoid_dd(x):
    # s (1 - s) (1 - 2 s) with 1 - 2 s(x) = -tanh(x / 2)
    xp = array_namespace(x)
    sp = special(xp)
    return -sp.expit(x) * sp.expit(-x) * xp.tanh(0.5 * x)


def _softplus(x):
    # log(1 + e^x) = max(x, 0) + log1p(e^{-|x|}): no overflow, accurate for x -> -infinity
    xp = array_namespace(x)
    return xp.maximum(x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))


# softplus' = sigmoid, so softplus'' = sigmoid'
_softplus_d = _sigmoid
_softplus_dd = _sigmoid_d


def _erf(x):
    xp = array_namespace(x)
    return special(xp).erf(x)


def _erf_d(x):
    xp = array_namespace(x)
    return _TWO_OVER_SQRTPI * xp.exp(-x * x)


def _erf_dd(x):
    xp = array_namespace(x)
    return -2.0 * _TWO_OVER_SQRTPI * x * xp.exp(-x * x)


# ----------------------------------------------------------------------------------------------
# numerical r1 (GeLU and sigmoid)


def _elasticity(phi, dphi, a):
    """``a phi'(a) / phi(a)``, the slope of ``log|phi(e^s)|`` in ``s = log|a|``."""
    return a * dphi(a) / phi(a)


@functools.lru_cache(maxsize=None)
def _numeric_r1(name: str) -> tuple[float, float, float]:
    """``(r1, argmax a, grid max)`` for the built-in ``name`` by grid search plus refinement.

    Step 1: ``f(a, tau) = log(|phi(tau a)|/|phi(a)|)/log(tau)`` on a grid of 801 values of ``a``
    (``+-logspace(-3, 1.5)``) times 241 values of ``tau`` (``1 - logspace(-6, -1e-3)``, from ~1e-6
    up to 1 - 1e-6); the grid maximum sits at the largest ``tau`` (the secant-slope argument of
    the module docstring). Step 2: refine the ``tau -> 1`` limit, the elasticity
    ``a phi'(a)/phi(a)``, with ``scipy.optimize.minimize_scalar`` (bounded, ``xatol=1e-12``) on the
    bracket of grid ``a`` values around the argmax. ``r1`` is the larger of the two.
    """
    from scipy.optimize import minimize_scalar  # noqa: PLC0415

    phi, dphi = _FORMULAS[name][:2]
    mag = np.logspace(-3.0, 1.5, 400)
    a = np.concatenate([-mag[::-1], [0.0], mag])
    a = a[a != 0.0]
    tau = 1.0 - np.logspace(-6.0, np.log10(1.0 - 1e-6), 241)
    A, T = np.meshgrid(a, tau, indexing="ij")
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.log(np.abs(phi(T * A)) / np.abs(phi(A))) / np.log(T)
    f = np.where(np.isfinite(f), f, -np.inf)
    i, _ = np.unravel_index(np.argmax(f), f.shape)
    grid_max = float(f.max())
    lo, hi = a[max(i - 1, 0)], a[min(i + 1, a.size - 1)]
    res = minimize_scalar(
        lambda x: -_elasticity(phi, dphi, x), bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}
    )
    r1 = max(grid_max, float(-res.fun))
    return r1, float(res.x), grid_max


_FORMULAS = {
    "gelu": (_gelu, _gelu_d, _gelu_dd),
    "tanh": (_tanh, _tanh_d, _tanh_dd),
    "sigmoid": (_sigmoid, _sigmoid_d, _sigmoid_dd),
    "softplus": (_softplus, _softplus_d, _softplus_dd),
    "erf": (_erf, _erf_d, _erf_dd),
}

_NUMERIC_R1_METHOD = (
    "computed numerically: maximum of f(a, tau) = log(|phi(tau a)|/|phi(a)|)/log(tau) on a "
    "801 x 241 grid (a in +-[1e-3, 10^1.5] log-spaced, tau in [1e-6, 1 - 1e-6]), whose maximum sits "
    "at tau -> 1, refined by maximizing the tau -> 1 limit a phi'(a)/phi(a) with "
    "scipy.optimize.minimize_scalar (bounded, xatol 1e-12)"
)


def _builtins() -> dict[str, Activation]:
    pdf0 = 1.0 / _SQRT2PI
    s2 = math.sqrt(2.0)
    gelu_r1, gelu_a, _ = _numeric_r1("gelu")
    sig_r1, sig_a, _ = _numeric_r1("sigmoid")
    acts = [
        Activation(
            "gelu",
            *_FORMULAS["gelu"],
            parity_zeros=("odd", 3),
            phi0=0.0,
            odd=False,
            # phi'' = (2 - x^2) pdf(x) vanishes at x = +-sqrt 2; phi' there: Phi(sqrt2) + sqrt2 pdf(sqrt2)
            dphi_max=0.5 * (1.0 + math.erf(1.0)) + s2 * math.exp(-1.0) * pdf0,
            # phi''' = (x^3 - 4x) pdf(x): |phi''| is largest at 0, where it is 2 pdf(0)
            ddphi_max=2.0 * pdf0,
            r1=gelu_r1,
            r2=None,
            r1_note=(
                f"{_NUMERIC_R1_METHOD}; r1 = 1 + max_(a>0) a pdf(a)/Phi(a), attained as tau -> 1 "
                f"at a = {gelu_a:.6f} (so r1 > 1: GeLU is not a power-law bounded by tau^1)"
            ),
            r2_note=(
                "does not exist: for a < 0, a phi'(a)/phi(a) = 1 + a pdf(a)/Phi(a) ~ 1 - a^2 -> -infinity, "
                "so phi(tau a)/phi(a) is not bounded by any power of tau (MATH.md)"
            ),
            sup_note="closed forms: sup|phi'| = Phi(sqrt2) + sqrt2 pdf(sqrt2), sup|phi''| = 2 pdf(0)",
            builtin=True,
        ),
        Activation(
            "tanh",
            *_FORMULAS["tanh"],
            parity_zeros=("even", 0),
            phi0=0.0,
            odd=True,
            dphi_max=1.0,
            ddphi_max=4.0 / (3.0 * math.sqrt(3.0)),
            r1=1.0,
            r2=0.0,
            r1_note=(
                "exact: tanh is concave on a > 0, so tanh(tau a) >= tau tanh(a) (odd: same for a < 0); "
                "the bound is tight as a -> 0"
            ),
            r2_note="exact: tanh is increasing, so |tanh(tau a)| <= |tanh(a)|; tight as |a| -> infinity",
            sup_note="closed forms: sup|phi'| = 1 at 0, sup|phi''| = 4/(3 sqrt3) at tanh(x) = 1/sqrt3",
            builtin=True,
        ),
        Activation(
            "sigmoid",
            *_FORMULAS["sigmoid"],
            parity_zeros=("even", 2),
            phi0=0.5,
            odd=False,
            dphi_max=0.25,
            ddphi_max=math.sqrt(3.0) / 18.0,
            r1=sig_r1,
            r2=None,
            r1_note=(
                f"{_NUMERIC_R1_METHOD}; attained as tau -> 1 at a = {sig_a:.6f}. Closed form: "
                "max_a a (1 - s(a)) = W(1/e) = 0.278464... (Lambert W), at a = 1 + W(1/e)"
            ),
            r2_note=(
                "does not exist: for a < 0, s(tau a)/s(a) ~ e^{(1 - tau)|a|} -> infinity as a -> -infinity. "
                "This contradicts the paper's footnote 3, which says the assumption holds for sigmoid"
            ),
            sup_note="closed forms: sup|phi'| = 1/4 at 0, sup|phi''| = sqrt3/18 at s = (3 -+ sqrt3)/6",
            builtin=True,
        ),
        Activation(
            "softplus",
            *_FORMULAS["softplus"],
            parity_zeros=("odd", 3),
            phi0=math.log(2.0),
            odd=False,
            dphi_max=1.0,
            ddphi_max=0.25,
            r1=1.0,
            r2=None,
            r1_note=(
                "exact: for a > 0, softplus(x)/x decreases, so softplus(tau a) >= tau softplus(a), tight as "
                "a -> infinity; for a < 0 the ratio exceeds 1 (f < 0)"
            ),
            r2_note=(
                "does not exist: for a < 0, softplus(tau a)/softplus(a) ~ e^{(1 - tau)|a|} -> infinity "
                "as a -> -infinity"
            ),
            sup_note=(
                "closed forms: sup|phi'| = 1 (a supremum, approached as x -> infinity, not attained), "
                "sup|phi''| = 1/4 at 0"
            ),
            builtin=True,
        ),
        Activation(
            "erf",
            *_FORMULAS["erf"],
            parity_zeros=("even", 0),
            phi0=0.0,
            odd=True,
            dphi_max=_TWO_OVER_SQRTPI,
            ddphi_max=2.0 * math.sqrt(2.0 / math.pi) * math.exp(-0.5),
            r1=1.0,
            r2=0.0,
            r1_note="exact: erf is concave on a > 0 and odd, so |erf(tau a)| >= tau |erf(a)|; tight as a -> 0",
            r2_note="exact: erf is increasing, so |erf(tau a)| <= |erf(a)|; tight as |a| -> infinity",
            sup_note="closed forms: sup|phi'| = 2/sqrt(pi) at 0, sup|phi''| = 2 sqrt(2/pi) e^{-1/2} at 1/sqrt2",
            builtin=True,
        ),
    ]
    return {a.name: a for a in acts}


_REGISTRY: dict[str, Activation] = _builtins()
_BUILTIN_NAMES = frozenset(_REGISTRY)

gelu = _REGISTRY["gelu"]
tanh = _REGISTRY["tanh"]
sigmoid = _REGISTRY["sigmoid"]
softplus = _REGISTRY["softplus"]
erf = _REGISTRY["erf"]


def available_activations() -> tuple[str, ...]:
    """Names accepted by :func:`activation`, sorted."""
    return tuple(sorted(_REGISTRY))


def activation(name_or_activation) -> Activation:
    """The :class:`Activation` named ``name_or_activation`` (case-insensitive), or the argument itself."""
    if isinstance(name_or_activation, Activation):
        return name_or_activation
    if not isinstance(name_or_activation, str):
        raise TypeError(
            f"activation must be a name or an Activation, got {type(name_or_activation).__name__}"
        )
    key = name_or_activation.strip().lower()
    try:
        return _REGISTRY[key]
    except KeyError:
        raise ValueError(
            f"unknown activation {name_or_activation!r}; valid names: {', '.join(available_activations())}"
        ) from None


_GRID_N = 200_001  # dense grid over [-50, 50] for estimated suprema (spacing 5e-4)


def _check_derivative(f, df, label: str, dlabel: str, name: str) -> None:
    """Raise if ``df`` does not match a central difference of ``f`` at a few points."""
    x = np.array([-2.3, -0.7, 0.35, 1.1, 2.9])
    h = 1e-5
    fd = (np.asarray(f(x + h), dtype=float) - np.asarray(f(x - h), dtype=float)) / (2.0 * h)
    d = np.asarray(df(x), dtype=float)
    if d.shape != x.shape or not np.all(np.isfinite(d)):
        raise ValueError(f"activation {name!r}: {dlabel}(x) must return finite values of x's shape")
    err = np.abs(fd - d)
    if np.any(err > 1e-4 * (1.0 + np.abs(fd))):
        k = int(np.argmax(err))
        raise ValueError(
            f"activation {name!r}: {dlabel} is not the derivative of {label}: at x = {x[k]}, "
            f"{dlabel}(x) = {d[k]:.6g} but the central difference of {label} gives {fd[k]:.6g} "
            "(were the derivatives passed in the wrong order?)"
        )


#: Probe inputs of ``register_activation``'s checks: a 1-D grid over [-50, 50] (the range of the
#: sup estimates) and a non-square 2-D array (a transposed or reshaped result does not pass).
_PROBE_1D = np.linspace(-50.0, 50.0, 2001)
_PROBE_2D = np.linspace(-3.0, 3.0, 21).reshape(3, 7)


def _check_elementwise(f, label: str, name: str, nonzero: bool) -> None:
    """Raise ValueError naming activation ``name`` unless ``f`` maps arrays elementwise: the result
    has the input's shape (1-D and a non-square 2-D probe), is finite on [-50, 50], agrees between the
    two shapes, and (``nonzero``) is not identically 0 there."""
    with np.errstate(all="ignore"):
        for x in (_PROBE_1D, _PROBE_2D):
            try:
                y = f(x.copy())
            except Exception as e:  # noqa: BLE001 - the user's code: name it, keep the cause
                raise ValueError(f"activation {name!r}: {label}(x) raised {type(e).__name__}: {e} on a float64 "
                                 f"array of shape {x.shape}") from e
            shape = getattr(y, "shape", None)
            if shape != x.shape:
                raise ValueError(f"activation {name!r}: {label} must be elementwise: for an input of shape {x.shape} "
                                 f"it returned {'shape ' + str(shape) if shape is not None else type(y).__name__} "
                                 "(a transposed, reshaped or reduced result, or a scalar)")
            y = np.asarray(y, dtype=float)
            bad = ~np.isfinite(y)
            if bad.any():
                raise ValueError(f"activation {name!r}: {label}(x) is not finite (NaN or inf) at x = "
                                 f"{float(x[bad].ravel()[0]):.6g} (checked on [-50, 50]); the Gram, the Hermite "
                                 "coefficients and the bounds need finite values")
            if x is _PROBE_1D:
                y1 = y
        y2 = np.asarray(f(_PROBE_2D.ravel().copy()), dtype=float)
        if y2.shape == (_PROBE_2D.size,) and not np.allclose(y2.reshape(_PROBE_2D.shape), y, rtol=1e-12, atol=1e-300):
            raise ValueError(f"activation {name!r}: {label} is not elementwise: a 2-D input and its flattened "
                             "copy give different values")
    if nonzero and not np.any(y1 != 0.0):
        what = ("phi is identically 0 (then phi(W0 X) = 0: sigma_min, sigma_max and every bound are 0 and the "
                "step sizes divide by 0)" if label == "phi" else
                "dphi is identically 0 (phi is constant: phi(W0 X) has rank 1 and no gradient)")
        raise ValueError(f"activation {name!r}: {what} on [-50, 50]")


def _named_checks(f, label: str, name: str):
    """``f`` wrapped so that a result of the wrong shape or not finite, at inputs of a later
    computation (a trial, the Hermite quadrature), raises a ValueError naming the activation."""

    def checked(z):
        y = f(z)
        shape, zshape = getattr(y, "shape", None), getattr(z, "shape", None)
        if zshape is None:  # a Python scalar in: nothing to compare
            return y
        if shape != zshape:
            raise ValueError(f"activation {name!r}: {label} returned shape {shape} for an input of shape {zshape} "
                             "(it must be elementwise)")
        xp = array_namespace(y)
        if not bool(xp.isfinite(y).all()):
            zf = z[~xp.isfinite(y)]
            at = float(zf.ravel()[0]) if getattr(zf, "size", 0) else math.nan
            raise ValueError(f"activation {name!r}: {label}(x) is not finite (NaN or inf) at x = {at:.6g}, "
                             "an input of this computation; make it finite for every real x")
        return y

    checked.__wrapped__ = f
    checked.__name__ = f"{name}_{label}_checked"
    return checked


class ParityWarning(UserWarning):
    """A declared parity zero of the Hermite coefficients is not one (``register_activation``)."""


def _check_parity_zeros(parity_zeros, name: str):
    """Normalize ``parity_zeros`` to ``(parity, start)`` or None; ValueError naming the problem."""
    if parity_zeros is None:
        return None
    try:
        parity, start = parity_zeros
    except (TypeError, ValueError):
        raise ValueError(f"activation {name!r}: parity_zeros must be (parity, start) such as ('odd', 3), "
                         f"got {parity_zeros!r}") from None
    if parity not in ("even", "odd"):
        raise ValueError(f"activation {name!r}: parity_zeros parity must be 'even' or 'odd', got {parity!r}")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"activation {name!r}: parity_zeros start must be an integer >= 0, got {start!r}")
    return (str(parity), int(start))


def parity_residual(phi: Callable, parity_zeros) -> float:
    """How far ``phi`` is from the declared structure (0 when it holds; relative to max |phi|).

    ``("even", s)`` says the even part ``(phi(x) + phi(-x))/2`` is a polynomial in ``x^2`` of degree
    ``< s`` (``("odd", s)``: the odd part, in odd powers): the residual of its least-squares fit on
    those powers over ``x in [0, 6]`` (401 points), divided by ``max |phi|`` there.
    """
    parity, start = parity_zeros
    x = np.linspace(0.0, 6.0, 401)
    with np.errstate(all="ignore"):
        p, m = np.asarray(phi(x), dtype=float), np.asarray(phi(-x), dtype=float)
    part = 0.5 * (p + m) if parity == "even" else 0.5 * (p - m)
    powers = [k for k in range(start) if (k % 2 == 0) == (parity == "even")]
    resid = part
    if powers:
        V = np.stack([x ** k for k in powers], axis=1)
        coef, *_ = np.linalg.lstsq(V, part, rcond=None)
        resid = part - V @ coef
    scale = float(np.max(np.abs(p))) or 1.0
    return float(np.max(np.abs(resid)) / scale) if np.all(np.isfinite(resid)) else math.inf


def _check_finite_nonneg(v, label: str, name: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"activation {name!r}: {label} must be a finite number >= 0, got {v!r}") from None
    if not math.isfinite(f) or f < 0:
        raise ValueError(f"activation {name!r}: {label} must be a finite number >= 0, got {v!r}")
    return f


def register_activation(
    name: str,
    phi: Callable,
    dphi: Callable,
    ddphi: Callable,
    *,
    odd: bool | None = None,
    parity_zeros: tuple | None = None,
    dphi_max: float | None = None,
    ddphi_max: float | None = None,
    r1: float | None = None,
    r2: float | None = None,
    overwrite: bool = False,
) -> Activation:
    """Register a user activation under ``name`` (case-insensitive) and return it.

    ``phi``, ``dphi``, ``ddphi`` are elementwise callables (they should accept NumPy arrays; use
    ``array_namespace``/``special`` from ``rmt_engine.backend.xp`` to make them CuPy-ready).
    ``dphi`` and ``ddphi`` are checked against central differences of ``phi`` and ``dphi``.
    Missing facts: ``odd`` is tested on a grid; ``dphi_max``/``ddphi_max`` are ESTIMATED as the
    maximum of ``|phi'|``/``|phi''|`` on a dense grid of 200001 points over [-50, 50] (a lower
    estimate of the supremum; ``sup_note`` says so); ``r1``/``r2`` stay ``None`` unless given.
    ``parity_zeros = (parity, start)`` declares exact zeros of the Hermite coefficients (module
    docstring); an odd ``phi`` implies ``("even", 0)``. A declaration that ``phi`` does not satisfy
    (``parity_residual > 1e-9``) raises a ``ParityWarning`` and is dropped.
    Refused (ValueError naming the activation): a ``phi``, ``dphi`` or ``ddphi`` that is not elementwise
    (a result of another shape than its input: transposed, reshaped, reduced, a scalar), is not finite
    somewhere on [-50, 50], or (``phi``, ``dphi``) is identically 0 there. The registered functions
    keep checking each later call (shape and finiteness), so a NaN at an input beyond the probe fails
    with the activation's name rather than deep inside a solver.
    Built-in names are protected unless ``overwrite=True``; so is an existing user name.
    A registration lives in this process; a study ships it to its workers with each task.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"activation name must be a non-empty string, got {name!r}")
    key = name.strip().lower()
    for label, f in (("phi", phi), ("dphi", dphi), ("ddphi", ddphi)):
        if not callable(f):
            raise TypeError(f"activation {key!r}: {label} must be callable, got {type(f).__name__}")
    if key in _REGISTRY and not overwrite:
        kind = "a built-in" if key in _BUILTIN_NAMES else "an already registered"
        raise ValueError(f"{key!r} is {kind} activation; pass overwrite=True to replace it")
    parity_zeros = _check_parity_zeros(parity_zeros, key)
    for label, v in (("dphi_max", dphi_max), ("ddphi_max", ddphi_max)):
        if v is not None:
            _check_finite_nonneg(v, label, key)
    for label, v in (("r1", r1), ("r2", r2)):
        if v is not None:
            _check_finite_nonneg(v, label, key)
    _check_elementwise(phi, "phi", key, nonzero=True)
    _check_elementwise(dphi, "dphi", key, nonzero=True)
    _check_elementwise(ddphi, "ddphi", key, nonzero=False)  # 0 for a linear phi
    _check_derivative(phi, dphi, "phi", "dphi", key)
    _check_derivative(dphi, ddphi, "dphi", "ddphi", key)
    phi, dphi, ddphi = (_named_checks(f, label, key) for f, label in ((phi, "phi"), (dphi, "dphi"), (ddphi, "ddphi")))

    grid = np.linspace(-50.0, 50.0, _GRID_N)
    with np.errstate(all="ignore"):
        phi0 = float(np.asarray(phi(np.zeros(1)), dtype=float)[0])
        if odd is None:
            g = grid[grid > 0][::100]
            odd = bool(np.allclose(np.asarray(phi(-g)), -np.asarray(phi(g)), rtol=1e-12, atol=1e-14))
        if parity_zeros is None and odd:
            parity_zeros = ("even", 0)
        if parity_zeros is not None:
            res = parity_residual(phi, parity_zeros)
            if not res <= 1e-9:
                import warnings  # noqa: PLC0415

                warnings.warn(f"activation {key!r}: declared parity_zeros={parity_zeros} does not hold (the "
                              f"{parity_zeros[0]} part of phi is not a polynomial of degree < {parity_zeros[1]}: "
                              f"relative residual {res:.2e}); ignoring it", ParityWarning, stacklevel=2)
                parity_zeros = None
        notes = []
        if dphi_max is None:
            dphi_max = float(np.max(np.abs(np.asarray(dphi(grid), dtype=float))))
            notes.append("sup|phi'| estimated as the max of |phi'| on a 200001-point grid over [-50, 50]")
        else:
            notes.append("sup|phi'| supplied by the user")
        if ddphi_max is None:
            ddphi_max = float(np.max(np.abs(np.asarray(ddphi(grid), dtype=float))))
            notes.append("sup|phi''| estimated as the max of |phi''| on a 200001-point grid over [-50, 50]")
        else:
            notes.append("sup|phi''| supplied by the user")
    for label, v in (("dphi_max", dphi_max), ("ddphi_max", ddphi_max)):
        if not math.isfinite(float(v)):
            raise ValueError(f"activation {key!r}: the estimated {label} is not finite ({v}); pass {label}=")
    act = Activation(
        key,
        phi,
        dphi,
        ddphi,
        phi0=phi0,
        odd=bool(odd),
        dphi_max=float(dphi_max),
        ddphi_max=float(ddphi_max),
        r1=None if r1 is None else float(r1),
        r2=None if r2 is None else float(r2),
        parity_zeros=parity_zeros,
        r1_note="supplied by the user" if r1 is not None else "not supplied (unknown)",
        r2_note="supplied by the user" if r2 is not None else "not supplied (unknown)",
        sup_note="; ".join(notes),
        builtin=False,
    )
    _REGISTRY[key] = act
    return act


def _unregister_activation(name: str) -> None:
    """Remove a user activation (tests); built-ins are restored rather than removed."""
    key = name.strip().lower()
    if key in _BUILTIN_NAMES:
        _REGISTRY[key] = {a.name: a for a in (gelu, tanh, sigmoid, softplus, erf)}[key]
    else:
        _REGISTRY.pop(key, None)


@functools.lru_cache(maxsize=64)
def derivative_activation(act: Activation) -> Activation:
    """``phi'`` as an :class:`Activation` (its Hermite coefficients give the NTK's kernel
    ``K' = E[phi'(w^T x_i) phi'(w^T x_j)]``); one object per activation, so the Hermite caches hit.
    Its own derivative is ``phi''``; ``phi'''`` is not known (NaN): only the kernel is asked of it."""
    nan = float("nan")
    return Activation(
        name=f"{act.name}'", phi=act.dphi, dphi=act.ddphi, ddphi=lambda x: x * nan,
        phi0=float(act.dphi(np.zeros(1))[0]), odd=False, dphi_max=act.ddphi_max, ddphi_max=nan,
        parity_zeros=None, builtin=False)
