"""Hermite coefficients and dual kernel, checked against independent computations."""

import math
import warnings
from decimal import Decimal, getcontext

import numpy as np
import pytest
from numpy.polynomial import hermite_e
from scipy.integrate import IntegrationWarning, quad
from scipy.special import eval_hermitenorm, gammaln

from rmt_engine.theory.activations import activation
from rmt_engine.theory.hermite import (
    dual_kernel,
    hermite_coefficients,
    hermite_tail,
    normalized_hermite_coefficients,
    second_moment,
)

BUILTINS = ("erf", "gelu", "sigmoid", "softplus", "tanh")
SQRT2PI = math.sqrt(2 * math.pi)


# ---- independent references --------------------------------------------------------------------

def _quad_coefficients(name, w1, order):
    """c_i = E[phi(w1 z) He_i(z)] by scipy.integrate.quad (He_i from scipy.special).

    quad asked for 1e-14 may report roundoff instead of reaching it (IntegrationWarning, ignored
    here); the comparisons carry their own tolerances.
    """
    phi = activation(name).phi
    # break points: the panels where the Gaussian matters, narrower near 0 for the poles of tanh(w1 z)
    edges = [-14, -8, -5, -3, -1.5, 0, 1.5, 3, 5, 8, 14]
    out = []
    for i in range(order + 1):
        f = lambda z, i=i: phi(w1 * z) * eval_hermitenorm(i, z) * math.exp(-0.5 * z * z) / SQRT2PI  # noqa: E731
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IntegrationWarning)
            out.append(sum(quad(f, lo, hi, epsabs=1e-15, epsrel=1e-14, limit=200)[0]
                           for lo, hi in zip(edges[:-1], edges[1:])))
    return np.array(out)


getcontext().prec = 50
_PI = Decimal("3.14159265358979323846264338327950288419716939937510582")


def _erf_exact(order, a):
    """Normalized a_i of erf(a z) from k(rho) = (2/pi) arcsin(beta rho), beta = 2a^2/(1+2a^2):
    a_{2k+1}^2 = (2/pi) (2k)!/(4^k k!^2 (2k+1)) beta^{2k+1}, sign (-1)^k (50-digit decimal)."""
    a = Decimal(repr(a))
    beta = 2 * a * a / (1 + 2 * a * a)
    out = [Decimal(0)] * (order + 1)
    c = Decimal(1)
    for k in range((order - 1) // 2 + 1):
        if k:
            c = c * (2 * k - 1) / (2 * k)
        v = (2 / _PI * c / (2 * k + 1) * beta ** (2 * k + 1)).sqrt()
        out[2 * k + 1] = v if k % 2 == 0 else -v
    return np.array([float(x) for x in out])


def _gelu_exact(order, w):
    """Normalized a_i of w z Phi(w z): z He_i = He_{i+1} + i He_{i-1} and
    E[Phi(wz) He_j] = (w/sqrt(2 pi)) E[e^{-w^2 z^2/2} He_{j-1}] with
    E[e^{-t z^2/2} He_{2l}] = (-t)^l (2l-1)!!/(1+t)^{l+1/2} (50-digit decimal)."""
    w = Decimal(repr(w))
    t = w * w
    p = [Decimal(0)] * (order + 3)  # p_j = E[Phi(wz) He_j]/sqrt(j!)
    p[0] = Decimal("0.5")
    q = w / (2 * _PI).sqrt() / (1 + t).sqrt()
    for j in range(1, order + 3, 2):
        l = (j - 1) // 2
        if l:
            q = q * (-t / (1 + t)) * (2 * l - 1) / (Decimal(2 * l) * (2 * l + 1)).sqrt()
        p[j] = q
    return np.array([float(w * (Decimal(i + 1).sqrt() * p[i + 1] + (Decimal(i).sqrt() * p[i - 1] if i else 0)))
                     for i in range(order + 1)])


# ---- accuracy contract ----------------------------------------------------------------------------

@pytest.mark.parametrize("w1", [0.25, 1.0, 4.0])
@pytest.mark.parametrize("name", BUILTINS)
def test_coefficients_match_quad(name, w1):
    order = 12
    c = hermite_coefficients(name, order, w1)
    ref = _quad_coefficients(name, w1, order)
    scale = np.sqrt([math.factorial(i) for i in range(order + 1)])
    err = np.abs(c - ref) / scale  # = error of the normalized a_i
    assert err.max() <= 1e-12, (name, w1, err.max())


@pytest.mark.parametrize("w1", [0.25, 1.0, 4.0])
def test_high_order_against_closed_forms(w1):
    # erf up to order 2000 and GeLU up to 400: absolute error of a_i ~ 1e-16 (contract: 1e-14)
    a = normalized_hermite_coefficients("erf", 2000, w1)
    assert np.abs(a - _erf_exact(2000, w1)).max() <= 1e-15
    g = normalized_hermite_coefficients("gelu", 400, w1)
    assert np.abs(g - _gelu_exact(400, w1)).max() <= 2e-15


@pytest.mark.parametrize("w1", [0.5, 2.0, 8.0])
def test_relations_between_activations(w1):
    # sigmoid(x) = 1/2 + tanh(x/2)/2 and softplus' = sigmoid (Stein: c_i[f] = c_{i-1}[f'])
    s = normalized_hermite_coefficients("sigmoid", 600, w1)
    t = normalized_hermite_coefficients("tanh", 600, w1 / 2)
    assert np.abs(s - (t / 2 + np.r_[0.5, np.zeros(600)])).max() <= 1e-15
    sp = normalized_hermite_coefficients("softplus", 600, w1)
    i = np.arange(1, 601)
    assert np.abs(sp[1:] - w1 * s[:-1] / np.sqrt(i)).max() <= 2e-15


def test_symmetries_zero_coefficients():
    for w1 in (0.5, 1.0, 3.0):
        for name in ("tanh", "erf"):  # odd: c_0 = 0 and every even c_i = 0 (footnote 5)
            a = normalized_hermite_coefficients(name, 200, w1)
            assert np.all(a[0::2] == 0.0)  # exactly: the rule pairs z and -z
            assert np.abs(a[1::2]).max() > 1e-3
        a = normalized_hermite_coefficients("sigmoid", 200, w1)  # sigmoid - 1/2 is odd
        assert a[0] == pytest.approx(0.5, abs=1e-15)
        assert np.abs(a[2::2]).max() <= 1e-16
        a = normalized_hermite_coefficients("gelu", 200, w1)  # gelu(x) - x/2 = x (Phi(x) - 1/2) is even
        assert a[1] == pytest.approx(w1 / 2, rel=1e-15)
        assert np.abs(a[3::2]).max() <= 1e-15
        a = normalized_hermite_coefficients("softplus", 200, w1)  # softplus(x) - x/2 is even
        assert a[1] == pytest.approx(w1 / 2, rel=1e-15)
        assert np.abs(a[3::2]).max() <= 1e-15


@pytest.mark.parametrize("w1", [0.25, 1.0, 2.5])
def test_gelu_low_coefficients_exact(w1):
    # c_1 = E[w z * z Phi(w z)] = w E[z^2]/2 = w/2 (z^2 (Phi - 1/2) is odd); c_0 = w E[z Phi(wz)] = w^2/sqrt(2 pi (1+w^2))
    c = hermite_coefficients("gelu", 1, w1)
    assert c[1] == pytest.approx(w1 / 2, abs=1e-15)
    assert c[0] == pytest.approx(w1**2 / math.sqrt(2 * math.pi * (1 + w1**2)), abs=1e-15)


@pytest.mark.parametrize("w1", [0.5, 1.0])
@pytest.mark.parametrize("name", BUILTINS)
def test_series_reconstructs_phi(name, w1):
    """phi(w1 x) = sum_i c_i/i! He_i(x) on |x| <= 3, two ways.

    (1) NumPy's hermeval (unnormalized He_i: checks the convention) with N = 300 terms; skipped
        for tanh at w1 = 1, whose poles at +-i pi/2 leave a truncation error ~1e-11 at N = 300
        (and hermeval's Clenshaw sum stalls there with more terms).
    (2) the textbook normalized recurrence h_{i+1} = (x h_i - sqrt(i) h_{i-1})/sqrt(i+1) with
        N = 1000 terms, where the truncation error is below 1e-14 for every built-in at these w1.
    """
    x = np.linspace(-3, 3, 121)
    target = activation(name).phi(w1 * x)
    if not (name == "tanh" and w1 == 1.0):
        N = 300
        a = normalized_hermite_coefficients(name, N, w1)
        coef = a * np.exp(-0.5 * gammaln(np.arange(N + 1) + 1.0))  # c_i/i! = a_i/sqrt(i!)
        np.testing.assert_allclose(hermite_e.hermeval(x, coef), target, rtol=0, atol=1e-13)
    N = 1000
    a = normalized_hermite_coefficients(name, N, w1)
    h_prev, h = np.zeros_like(x), np.ones_like(x)
    total = a[0] * h
    for i in range(N):
        h_prev, h = h, (x * h - math.sqrt(i) * h_prev) / math.sqrt(i + 1)
        total += a[i + 1] * h
    np.testing.assert_allclose(total, target, rtol=0, atol=1e-13)


@pytest.mark.parametrize("w1", [0.25, 1.0, 4.0])
@pytest.mark.parametrize("name", BUILTINS)
# quad asked for 1e-14 may report roundoff instead of reaching it; the assertion carries its own tolerance
@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
def test_parseval(name, w1):
    a = normalized_hermite_coefficients(name, 2000, w1)
    m2 = second_moment(name, w1)
    partial = np.cumsum(a * a)
    assert np.all(np.diff(partial) >= 0)
    assert partial.max() <= m2 * (1 + 1e-14)  # never overshoots E[phi^2]
    assert partial[-1] == pytest.approx(m2, rel=1e-13)
    # an independent second moment
    ref = quad(lambda z: activation(name).phi(w1 * z) ** 2 * math.exp(-z * z / 2) / SQRT2PI, -40, 40,
               epsabs=1e-15, epsrel=1e-14, limit=400, points=[0.0])[0]
    assert m2 == pytest.approx(ref, rel=1e-12)
    tail = hermite_tail(name, w1)
    assert tail == pytest.approx(m2 - a[0] ** 2 - a[1] ** 2, abs=1e-15 * m2)
    assert tail == pytest.approx(partial[-1] - partial[1], abs=1e-13 * m2)


# ---- dual kernel ---------------------------------------------------------------------------------

RHOS = np.array([-1.0, -0.9, -0.35, 0.0, 0.2, 0.66, 0.95, 1.0])


@pytest.mark.parametrize("w1", [0.3, 1.0, 2.0, 4.0])
def test_erf_dual_kernel_closed_form(w1):
    # E[erf(a u) erf(a v)] = (2/pi) arcsin(2 a^2 rho / (1 + 2 a^2))
    k = dual_kernel("erf", RHOS, w1)
    ref = 2 / np.pi * np.arcsin(2 * w1**2 * RHOS / (1 + 2 * w1**2))
    assert np.abs(k - ref).max() <= 1e-14


@pytest.mark.parametrize("w1", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("name", BUILTINS)
def test_dual_kernel_equals_series(name, w1):
    a2 = normalized_hermite_coefficients(name, 2000, w1) ** 2
    rho = RHOS[1:-1]
    series = np.array([np.sum(a2 * r ** np.arange(a2.size)) for r in rho])
    k = dual_kernel(name, rho, w1)
    m2 = second_moment(name, w1)
    assert np.abs(k - series).max() <= 1e-12 * m2
    assert dual_kernel(name, 1.0, w1) == pytest.approx(m2, rel=1e-14)
    assert isinstance(dual_kernel(name, 0.3, w1), float)
    assert dual_kernel(name, rho.reshape(2, 3), w1).shape == (2, 3)


def test_dual_kernel_minus_one():
    # k(-1) = E[phi(w1 z) phi(-w1 z)] (odd phi: -E[phi^2])
    assert dual_kernel("tanh", -1.0, 1.5) == pytest.approx(-second_moment("tanh", 1.5), rel=1e-14)


# ---- argument checks -----------------------------------------------------------------------------

def test_bad_arguments():
    with pytest.raises(ValueError, match="order must be a non-negative integer, got order=-1"):
        hermite_coefficients("tanh", -1)
    with pytest.raises(ValueError, match="order=2.5"):
        normalized_hermite_coefficients("tanh", 2.5)
    with pytest.raises(ValueError, match="order=True"):
        normalized_hermite_coefficients("tanh", True)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"w1 must be a positive finite number, got w1="):
            hermite_coefficients("gelu", 3, bad)
        with pytest.raises(ValueError, match="w1"):
            dual_kernel("gelu", 0.5, bad)
        with pytest.raises(ValueError, match="w1"):
            second_moment("gelu", bad)
    with pytest.raises(ValueError, match=r"rho must lie in \[-1, 1\]"):
        dual_kernel("gelu", 1.5)
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        second_moment("relu")


def test_types_and_overflow():
    a = normalized_hermite_coefficients("tanh", 5, np.float32(1.0))
    assert a.dtype == np.float64 and a.shape == (6,)
    assert normalized_hermite_coefficients("tanh", np.int64(3)).shape == (4,)
    a[0] = 99.0  # a copy: the memo is not corrupted
    assert normalized_hermite_coefficients("tanh", 5)[0] == 0.0 or abs(normalized_hermite_coefficients("tanh", 5)[0]) < 1e-16
    c = hermite_coefficients("sigmoid", 400, 4.0)
    assert np.all(np.isfinite(c[:171])) and not np.any(np.isnan(c))
