"""asymptotics: the deterministic equivalent of the spectrum of M0/d1 against closed forms,
independent polynomial edges, its own quantiles/density, and Gaussian-feature Monte Carlo."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

from rmt_engine.theory.asymptotics import (
    ASYM_FIELDS,
    DeterministicEquivalent,
    deterministic_equivalent,
    deterministic_equivalent_from_eigenvalues,
    predict_record,
)
from rmt_engine.sampling.data import make_data
from rmt_engine.theory.expected import expected_gram


def mp_edges(gamma):
    return (1 - math.sqrt(gamma)) ** 2, (1 + math.sqrt(gamma)) ** 2


def mp_density(x, gamma):
    """Continuous part of the Marchenko-Pastur law of (1/d1) Z^T Z, Z d1 x n, gamma = n/d1."""
    a, b = mp_edges(gamma)
    x = np.asarray(x, dtype=float)
    out = np.zeros_like(x)
    m = (x > a) & (x < b)
    out[m] = np.sqrt((b - x[m]) * (x[m] - a)) / (2 * np.pi * gamma * x[m])
    return out


def two_atom_edges(a, p, b, q, d1):
    """Support edges for the population {a (x p), b (x q)} from the u-plane map
    z(u) = -1/u + (1/d1) (p a/(1 + a u) + q b/(1 + b u)): z'(u) = 0 with the denominators
    cleared is the quartic (1+au)^2 (1+bu)^2 - (u^2/d1) (p a^2 (1+bu)^2 + q b^2 (1+au)^2) = 0;
    the edges are z at its real roots."""
    P = np.polynomial.polynomial
    A2, B2 = P.polypow([1.0, a], 2), P.polypow([1.0, b], 2)
    quartic = P.polysub(P.polymul(A2, B2), P.polymul([0.0, 0.0, 1.0 / d1], P.polyadd(p * a * a * B2, q * b * b * A2)))
    r = np.roots(quartic[::-1])
    r = r[np.abs(r.imag) <= 1e-10 * np.abs(r)].real
    return np.sort(-1.0 / r + (p * a / (1 + a * r) + q * b / (1 + b * r)) / d1)


def flat_edges(de):
    return np.array([e for c in de.edges for e in c[:2]])


def gaussian_spectra(K, d1, trials, seed):
    """Eigenvalues of F^T F/d1 with rows f_i ~ N(0, K) (Gaussian surrogate features)."""
    w, U = np.linalg.eigh(K)
    S = U * np.sqrt(np.clip(w, 0, None))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(trials):
        F = rng.standard_normal((d1, K.shape[0])) @ S.T
        out.append(scipy.linalg.eigvalsh(F.T @ F / d1))
    return np.array(out)


# ----------------------------------------------------------------------------------------------
# closed forms
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, d1", [(100, 400), (200, 400), (90, 1000)])
def test_identity_is_marchenko_pastur(n, d1):
    gamma = n / d1
    de = deterministic_equivalent(np.eye(n), d1)
    a, b = mp_edges(gamma)
    assert de.atom_at_zero == 0 and de.spikes == [] and de.n_clusters == 1
    assert len(de.edges) == 1 and de.edges[0][2] == n
    assert de.lambda_min == pytest.approx(a, rel=1e-12) and de.lambda_max == pytest.approx(b, rel=1e-12)
    assert de.lambda_bulk_max == de.lambda_max == de.lambda_2
    x = np.linspace(a, b, 2001)
    f, ref = de.density(x), mp_density(x, gamma)
    assert np.max(np.abs(f - ref)) <= 1e-8 * ref.max()
    inner = ref > 1e-3 * ref.max()
    assert np.max(np.abs(f[inner] / ref[inner] - 1)) <= 1e-8
    assert np.all(de.density([a - 1e-9, b + 1e-9, -1.0, 0.0]) == 0.0)


@pytest.mark.parametrize("n, d1", [(400, 100), (300, 200)])
def test_identity_with_d1_below_n_has_the_zero_atom(n, d1):
    gamma = n / d1
    de = deterministic_equivalent(np.eye(n), d1)
    a, b = mp_edges(gamma)
    assert de.atom_at_zero == n - d1
    assert de.edges[0][2] == d1 and len(de.edges) == 1
    assert de.lambda_min == pytest.approx(a, rel=1e-12) and de.lambda_max == pytest.approx(b, rel=1e-12)
    x = np.linspace(a, b, 1001)
    ref = mp_density(x, gamma)
    assert np.max(np.abs(de.density(x) - ref)) <= 1e-8 * ref.max()
    assert de.cdf(0.0) == pytest.approx(1 - d1 / n, abs=1e-15)
    assert de.cdf(-1e-12) == 0.0
    assert de.quantiles(0.5 * (1 - d1 / n)) == 0.0
    assert predict_record(np.eye(n), d1)["asym_lambda_min"] == 0.0  # lambda_min(M0) = 0 exactly


def test_hard_edge_at_rank_equal_d1():
    n = d1 = 300
    de = deterministic_equivalent(np.eye(n), d1)
    assert de.lambda_min == 0.0 and de.atom_at_zero == 0
    x = np.linspace(1e-6, 4, 801)
    ref = mp_density(x, 1.0)
    m = ref > 1e-3
    assert np.max(np.abs(de.density(x)[m] / ref[m] - 1)) <= 1e-8
    # near the hard edge cdf ~ (2/pi) sqrt(x)
    assert de.cdf(1e-10) == pytest.approx(2 / math.pi * 1e-5, rel=1e-4)


@pytest.mark.parametrize("a, p, b, q, d1, ncomp", [
    (1.0, 200, 10.0, 100, 1200, 2),   # two components
    (1.0, 200, 3.0, 100, 1200, 2),    # two components, close
    (1.0, 200, 10.0, 100, 200, 1),    # d1 < n: one component and a zero atom
    (1.0, 150, 1.6, 150, 600, 1),     # merged
    (0.5, 50, 20.0, 1, 400, 2),       # a single spike atom: an isolated component of count 1
    (2.0, 10, 0.02, 300, 2000, 2),    # small atom with the larger multiplicity
])
def test_two_atom_population_edges_match_the_quartic(a, p, b, q, d1, ncomp):
    t = np.r_[np.full(p, a), np.full(q, b)]
    de = deterministic_equivalent_from_eigenvalues(np.random.default_rng(0).permutation(t), d1)
    ref = two_atom_edges(a, p, b, q, d1)
    assert len(de.edges) == ncomp and ref.size == 2 * ncomp
    np.testing.assert_allclose(flat_edges(de), ref, rtol=1e-9, atol=0)
    counts = [c[2] for c in de.edges]
    assert sum(counts) == min(p + q, d1) == p + q - de.atom_at_zero
    if ncomp == 2:
        assert counts == ([p, q] if a < b else [q, p])
    for c in de.components:
        assert c.mass == pytest.approx(c.count, rel=1e-11)


# ----------------------------------------------------------------------------------------------
# density, quantiles, counts: consistency by independent quadrature
# ----------------------------------------------------------------------------------------------


def _integrate(de, lo, hi):
    """Integral of de.density over [lo, hi] by adaptive quadrature with the sqrt edges removed
    (x = lo + (hi - lo) (1 - cos phi)/2)."""
    def f(phi):
        x = lo + 0.5 * (hi - lo) * (1 - math.cos(phi))
        return float(de.density(np.array([x]))[0]) * 0.5 * (hi - lo) * math.sin(phi)
    val, err = scipy.integrate.quad(f, 0.0, math.pi, epsabs=1e-13, epsrel=1e-11, limit=200)
    return val


@pytest.fixture(scope="module")
def gelu_de():
    K = expected_gram(make_data("sphere", 20, 200, 3), "gelu")
    return deterministic_equivalent(K, 800)


@pytest.mark.parametrize("case", ["gelu", "two_atom_d1_below_n"])
def test_density_integrates_to_counts_and_quantiles_invert_it(case, gelu_de):
    if case == "gelu":
        de = gelu_de
    else:
        de = deterministic_equivalent_from_eigenvalues(np.r_[np.full(120, 1.0), np.full(40, 6.0)], 100)
        assert de.atom_at_zero == 60
    assert len(de.components) >= (2 if case == "gelu" else 1)
    total = 0.0
    for c in de.components:
        part = _integrate(de, c.lower, c.upper) * de.n
        assert part == pytest.approx(c.count, rel=1e-7)
        total += part
    assert total / de.n == pytest.approx(1 - de.atom_at_zero / de.n, rel=1e-7)
    # quantiles: the integral of the density up to Q(q) is q (atom included), to 1e-6
    bulk = max(de.components, key=lambda c: c.count)
    a0 = de.atom_at_zero / de.n
    levels = a0 + (1 - a0) * np.array([0.003, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999])
    Q = de.quantiles(levels)
    assert np.all(np.diff(Q) > 0)
    for qq, x in zip(levels, Q):
        mass = a0
        for c in de.components:
            if x >= c.upper:
                mass += c.count / de.n
            elif x > c.lower:
                mass += _integrate(de, c.lower, x)
        assert mass == pytest.approx(qq, rel=1e-6)
    np.testing.assert_allclose(de.cdf(Q), levels, rtol=1e-10)
    assert de.quantiles(1.0) == pytest.approx(de.lambda_max, rel=1e-14)
    assert de.quantiles(0.0) == (0.0 if de.atom_at_zero else de.lambda_min)
    assert bulk.lower <= bulk.median <= bulk.upper


def _llc_stieltjes(t, d1, z, iters=20000):
    """m(z) = (1/n) tr Qbar(z) from the Louart-Liao-Couillet fixed point, by damped iteration:
    Qbar = (K/(1 + delta) - z)^{-1}, delta = (1/d1) tr(K Qbar), in K's eigenbasis."""
    delta = 0.0 + 0.0j
    for _ in range(iters):
        new = np.sum(t / (t / (1 + delta) - z)) / d1
        if abs(new - delta) <= 1e-15 * abs(new):
            break
        delta = 0.5 * delta + 0.5 * new
    return np.mean(1.0 / (t / (1 + delta) - z))


@pytest.mark.parametrize("case", ["gelu", "d1_below_n"])
def test_density_is_the_louart_liao_couillet_fixed_point(case, gelu_de):
    """Independent check of the Silverstein-Choi construction (s = z (1 + delta)): the Stieltjes
    transform of density + atom equals the LLC m(z) off the real axis."""
    if case == "gelu":
        t = np.linalg.eigvalsh(expected_gram(make_data("sphere", 20, 200, 3), "gelu"))
        de, d1 = gelu_de, 800
    else:
        t, d1 = np.r_[np.full(120, 1.0), np.full(40, 6.0)], 100
        de = deterministic_equivalent_from_eigenvalues(t, d1)
    xg, wg = np.polynomial.legendre.leggauss(600)
    phi = 0.5 * math.pi * (xg + 1)
    for x0 in (0.5 * de.lambda_min, 0.3 * de.lambda_bulk_max + 0.7 * de.lambda_min, de.lambda_bulk_max):
        z = x0 + 0.05j * de.lambda_bulk_max
        m = de.atom_at_zero / de.n / (0.0 - z)
        for c in de.components:
            lam = c.lower + 0.5 * (c.upper - c.lower) * (1 - np.cos(phi))
            jac = 0.5 * (c.upper - c.lower) * np.sin(phi) * 0.5 * math.pi
            m += np.sum(wg * jac * de.density(lam) / (lam - z))
        ref = _llc_stieltjes(np.clip(t, 0, None), d1, z)
        assert abs(m - ref) <= 1e-10 * abs(ref), (x0, m, ref)  # measured <= 1.3e-13


def test_spike_rules():
    bulk = np.full(200, 1.0)  # MP(0.1) at d1 = 2000: top edge 1.73
    d1 = 2000
    de = deterministic_equivalent_from_eigenvalues(np.r_[bulk, 2.2], d1)
    assert [c.count for c in de.components] == [200, 1]  # isolated, but only 1.3x above the bulk
    assert de.spikes == [] and de.lambda_bulk_max == de.lambda_max
    assert de.lambda_2 == de.components[0].upper < de.lambda_max  # lambda_2 is the top of the bulk
    de = deterministic_equivalent_from_eigenvalues(np.r_[bulk, 10.0, 10.0, 10.0, 30.0], d1)
    assert [c.count for c in de.components] == [200, 3, 1]
    assert [c.count for c in de.spikes] == [1] and de.lambda_bulk_max == de.components[1].upper
    de3 = deterministic_equivalent_from_eigenvalues(np.r_[bulk, 10.0, 10.0, 10.0, 30.0], d1, spike_max_count=3)
    assert [c.count for c in de3.spikes] == [3, 1] and de3.lambda_bulk_max == de3.components[0].upper
    assert de3.lambda_2 == de3.components[1].upper
    # the location of a count-1 spike: near the BBP value l (1 + (1/d1) sum_j t_j/(l - t_j))
    bbp = 30.0 * (1 + (200 / (30 - 1.0) + 3 * 10 / (30 - 10.0)) / d1)
    assert de.spikes[0].median == pytest.approx(bbp, rel=1e-3)
    # no spike can be the bulk: a population of one atom
    assert deterministic_equivalent_from_eigenvalues(np.array([5.0]), 10).spikes == []


def test_quantiles_and_density_shapes_and_levels(gelu_de):
    de = gelu_de
    q = np.array([[0.1, 0.2], [0.3, 0.4]])
    assert de.quantiles(q).shape == (2, 2) and de.density(q).shape == (2, 2) and de.cdf(q).shape == (2, 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        de.quantiles([0.5, 1.5])


def test_scale_invariance_and_clustering():
    K = expected_gram(make_data("sphere", 10, 120, 1), "tanh")
    de, de7 = deterministic_equivalent(K, 500), deterministic_equivalent(7.0 * K, 500)
    np.testing.assert_allclose(flat_edges(de7), 7.0 * flat_edges(de), rtol=1e-12)
    x = np.linspace(0, de.lambda_max, 50)
    np.testing.assert_allclose(de7.density(7 * x), de.density(x) / 7, rtol=1e-9, atol=1e-14)
    # identity perturbed at rounding level: one cluster, the MP answer
    rng = np.random.default_rng(2)
    E = rng.standard_normal((80, 80)) * 1e-15
    de_i = deterministic_equivalent(np.eye(80) + (E + E.T), 320)
    assert de_i.n_clusters == 1
    np.testing.assert_allclose(flat_edges(de_i), mp_edges(0.25), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Monte Carlo with Gaussian surrogate features f_i ~ N(0, K)
# ----------------------------------------------------------------------------------------------


def test_monte_carlo_lambda_min_and_spike_gelu():
    errs = {}
    for n in (100, 400):
        K = expected_gram(make_data("sphere", 20, n, 1), "gelu")
        d1 = 4 * n
        de = deterministic_equivalent(K, d1)
        ev = gaussian_spectra(K, d1, trials=8, seed=n)
        errs[n] = abs(ev[:, 0].mean() / de.lambda_min - 1)
        if n == 400:
            assert len(de.spikes) == 1 and de.spikes[0].count == 1
            spike = de.spikes[0]
            top = ev[:, -1].mean()
            assert top == pytest.approx(spike.median, rel=0.03)
            assert spike.lower <= top <= spike.upper
            assert ev[:, -2].mean() == pytest.approx(de.lambda_bulk_max, rel=0.05)
            assert de.lambda_bulk_max == de.lambda_2 < spike.lower
            # the spike sits near the top eigenvalue of K, pushed up by the rest of the spectrum
            tK = np.linalg.eigvalsh(K)
            assert tK[-1] < spike.median < tK[-1] + tK[:-1].sum() / d1 * 1.5
            np.testing.assert_allclose(de.quantiles([0.1, 0.5, 0.9]), np.quantile(ev, [0.1, 0.5, 0.9]), rtol=0.03)
    assert errs[400] < 0.04  # measured 0.023
    assert errs[400] < errs[100]  # measured 0.175 -> 0.023


# ----------------------------------------------------------------------------------------------
# robustness
# ----------------------------------------------------------------------------------------------


def test_singular_K_gives_an_atom_at_zero():
    rng = np.random.default_rng(5)
    n, r, d1 = 150, 60, 400
    Q, _ = np.linalg.qr(rng.standard_normal((n, r)))
    K = Q @ Q.T  # a projection of rank r: the nonzero part is MP with ratio r/d1
    de = deterministic_equivalent(K, d1)
    assert de.rank == r and de.atom_at_zero == n - r
    np.testing.assert_allclose(flat_edges(de), mp_edges(r / d1), rtol=1e-9)
    x = np.linspace(*mp_edges(r / d1), 301)
    np.testing.assert_allclose(de.density(x), mp_density(x, r / d1) * r / n, atol=1e-8)
    # d1 below the rank: n - d1 zeros
    de2 = deterministic_equivalent(K, 40)
    assert de2.atom_at_zero == n - 40 and sum(c[2] for c in de2.edges) == 40
    np.testing.assert_allclose(flat_edges(de2), mp_edges(r / 40), rtol=1e-9)
    # nearly singular: eigenvalues at 1e-18 relative count as zeros, at 1e-6 relative they stay
    t = np.r_[np.full(100, 1.0), np.full(20, 1e-18), np.full(30, 1e-6)]
    de3 = deterministic_equivalent_from_eigenvalues(t, 1000)
    assert de3.rank == 130 and de3.atom_at_zero == 20
    assert [c[2] for c in de3.edges] == [30, 100]
    assert 1e-7 < de3.lambda_min < 1e-6 < 0.4 < de3.components[1].lower
    # the small atoms see d1 - 100 effective samples (the Schur complement of the large ones):
    # 0.9 x 1e-6 x MP(30/900); the large ones are MP(100/1000) up to ~1e-7
    lower = 0.9e-6 * np.array(mp_edges(30 / 900))
    np.testing.assert_allclose(flat_edges(de3), np.r_[lower, mp_edges(0.1)], rtol=1e-5)


def test_rank_deficient_kernel_from_data():
    # an even activation has c_1 = 0; with d0 = 3 the Khatri-Rao ranks are small, and a quadratic
    # kernel G o G on n > C(d0+1, 2) points is singular (rank 6)
    X = make_data("sphere", 3, 40, 0)
    G = X.T @ X
    de = deterministic_equivalent(G * G, 200)
    assert de.rank == 6 and de.atom_at_zero == 34 and sum(c[2] for c in de.edges) == 6


def test_tanh_has_no_spike_gelu_and_sigmoid_have_one():
    X = make_data("sphere", 20, 200, 0)
    for act, nspikes in (("tanh", 0), ("gelu", 1), ("sigmoid", 1)):
        de = deterministic_equivalent(expected_gram(X, act), 800)
        assert len(de.spikes) == nspikes, act
        rec = predict_record(expected_gram(X, act), 800)
        if nspikes:
            assert rec["asym_lambda_spike"] == pytest.approx(800 * de.spikes[0].median, rel=1e-14)
            assert rec["asym_lambda_max"] == pytest.approx(800 * de.spikes[0].upper, rel=1e-14)
            assert de.spikes[0].count == 1
        else:
            assert math.isnan(rec["asym_lambda_spike"])
            assert rec["asym_lambda_bulk_max"] == rec["asym_lambda_max"]


def test_gelu_with_d1_below_n():
    K = expected_gram(make_data("sphere", 20, 200, 0), "gelu")
    de = deterministic_equivalent(K, 120)
    assert de.atom_at_zero == 80 and sum(c[2] for c in de.edges) == 120
    assert de.lambda_min > 0
    ev = gaussian_spectra(K, 120, trials=2, seed=0)
    assert np.all(np.abs(ev[:, :80]) < 1e-10 * ev[:, -1:])  # the zero atom
    assert ev[:, 80].mean() == pytest.approx(de.lambda_min, rel=0.25)


def test_predict_record_units_and_paths():
    K = expected_gram(make_data("sphere", 20, 150, 0), "gelu")
    d1 = 600
    de = deterministic_equivalent(K, d1)
    rec = predict_record(K, d1)
    assert set(rec) == set(ASYM_FIELDS)
    assert all(isinstance(v, float) for v in rec.values())
    assert rec["asym_lambda_min"] == rec["asym_lambda_min_nonzero"] == pytest.approx(d1 * de.lambda_min, rel=1e-14)
    assert rec["asym_lambda_bulk_max"] == pytest.approx(d1 * de.lambda_bulk_max, rel=1e-14)
    assert rec["asym_lambda_2"] == pytest.approx(d1 * de.lambda_2, rel=1e-14)
    assert rec["asym_atom_at_zero"] == 0.0
    assert rec["asym_lambda_2_classical"] == pytest.approx(d1 * de.quantiles(1 - 1.5 / 150), rel=1e-14)
    assert rec["asym_lambda_min_classical"] == pytest.approx(d1 * de.quantiles(0.5 / 150), rel=1e-14)
    assert de.lambda_min < rec["asym_lambda_min_classical"] / d1 < de.quantiles(1.5 / 150)
    assert rec["asym_lambda_2_classical"] < rec["asym_lambda_2"]
    with pytest.raises(ValueError, match="k must"):
        de.classical(0)
    rec2 = predict_record(None, d1, eigenvalues=np.linalg.eigvalsh(K))
    for k in rec:
        assert rec2[k] == pytest.approx(rec[k], rel=1e-9, nan_ok=True)
    assert predict_record(None, d1, de=de) == rec


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("K, match", [
    (np.ones((3, 4)), "square"),
    (np.ones(5), "square"),
    (np.zeros((0, 0)), "square"),
    (np.array([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN"),
    (np.array([[1.0, np.inf], [np.inf, 1.0]]), "NaN"),
    (np.array([[1.0, 2.0], [2.0, 1.0]]), "semidefinite"),
    (np.eye(2) * (1 + 1j), "real"),
])
def test_bad_K(K, match):
    with pytest.raises(ValueError, match=match):
        deterministic_equivalent(K, 10)


@pytest.mark.parametrize("d1", [0, -3, 2.5, True, "10", None])
def test_bad_d1(d1):
    with pytest.raises(ValueError, match="d1"):
        deterministic_equivalent(np.eye(3), d1)
    with pytest.raises(ValueError, match="d1"):
        deterministic_equivalent_from_eigenvalues(np.ones(3), d1)


@pytest.mark.parametrize("t, match", [
    (np.array([1.0, np.nan]), "NaN"), (np.ones((2, 2)), "1-D"), (np.array([]), "1-D"),
    (np.array([1.0, -0.5]), "semidefinite"), (np.array([-1.0, -2.0]), "semidefinite"),
])
def test_bad_eigenvalues(t, match):
    with pytest.raises(ValueError, match=match):
        deterministic_equivalent_from_eigenvalues(t, 10)


def test_zero_K_has_only_the_atom():
    de = deterministic_equivalent(np.zeros((5, 5)), 10)
    assert isinstance(de, DeterministicEquivalent)
    assert de.atom_at_zero == 5 and de.edges == [] and math.isnan(de.lambda_min)
    assert np.all(de.quantiles([0.0, 0.5, 1.0]) == 0.0) and de.cdf(0.0) == 1.0


@pytest.mark.parametrize("act", ["gelu", "tanh", "sigmoid"])
def test_extreme_edges_agree_with_the_full_deterministic_equivalent(act):
    """The O(n) outer roots of psi(s) = 1 against the class that finds every gap (two methods)."""
    from rmt_engine.theory.asymptotics import deterministic_equivalent_from_eigenvalues, extreme_edges

    X = make_data("sphere", 10, 60, 4)
    ev = np.linalg.eigvalsh(expected_gram(X, act))
    for d1 in (61, 90, 600, 6000, 60000):
        de = deterministic_equivalent_from_eigenvalues(ev, d1)
        lo, hi = extreme_edges(ev, d1)
        assert lo == pytest.approx(de.lambda_min, rel=1e-12) and hi == pytest.approx(de.lambda_max, rel=1e-12)
    with pytest.raises(ValueError, match="d1 > n"):
        extreme_edges(ev, 60)
    with pytest.raises(ValueError, match="full rank"):
        extreme_edges(np.r_[0.0, ev[1:]], 600)
