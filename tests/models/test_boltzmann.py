"""Tests for the Boltzmann targets and their exact log Z values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density
from scipy import integrate, optimize, stats

from helmholtz import models

bz = models.boltzmann


def _grid_log_z(energy_fn, lo, hi, h, temperature=1.0):
    """log ∫∫ exp(−U/kT) over a 2-d box by the trapezoid rule (numpy float64 sums)."""
    xs = np.arange(lo[0], hi[0] + h / 2, h)
    ys = np.arange(lo[1], hi[1] + h / 2, h)
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1)
    log_w = -np.asarray(energy_fn(jnp.asarray(grid)), dtype=np.float64) / temperature
    m = log_w.max()
    inner = np.trapezoid(np.exp(log_w - m), ys, axis=1)
    return m + np.log(np.trapezoid(inner, xs)), grid, log_w


BOLTZMANN_MODELS = {
    "double_well": (bz.double_well, 1, 1.5),
    "muller_brown": (bz.muller_brown, 2, 1.0),
    "gaussian_2d": (bz.gaussian_2d, 2, 2.0),
    "gaussian_20d": (bz.gaussian_20d, 20, 2.0),
    "gmm40": (bz.gmm40, 2, 30.0),
    "student_t_mixture": (bz.student_t_mixture, 2, 8.0),
    "many_well": (bz.many_well, 32, 2.0),
    "banana": (bz.banana, 10, 5.0),
    "unequal_mixture": (bz.unequal_mixture, 5, 3.0),
    "dw4": (bz.dw4, 8, 3.0),
    "lj13": (bz.lj13, 39, 1.0),
}


@pytest.mark.parametrize("name", sorted(BOLTZMANN_MODELS))
def test_joint_density_is_minus_energy_over_kT(name, x64):
    model, dim, scale = BOLTZMANN_MODELS[name]
    assert models.get(name).model is model
    rng = np.random.default_rng(0)
    xs = scale * rng.standard_normal((3, dim))
    batch = np.asarray(model.energy_fn(xs))
    assert batch.shape == (3,)
    for x, u in zip(xs, batch, strict=True):
        lp = float(log_density(model, (), {}, {"x": x})[0])
        u_single = float(model.energy_fn(x))
        assert u_single == pytest.approx(float(u), rel=1e-12, abs=1e-12)
        assert lp == pytest.approx(-u_single / model.temperature, rel=1e-10, abs=1e-9)


def test_funnel_density_and_energy(x64):
    rng = np.random.default_rng(1)
    v, x = 1.7, rng.standard_normal(9)
    lp = float(log_density(bz.funnel, (), {}, {"v": v, "x": x})[0])
    expected = stats.norm.logpdf(v, 0, 3) + stats.norm.logpdf(x, 0, np.exp(v / 2)).sum()
    assert lp == pytest.approx(expected, abs=1e-10)
    z = np.concatenate([[v], x])
    assert float(bz.funnel_energy(z)) == pytest.approx(-expected, abs=1e-10)
    assert models.get("funnel").log_z() == 0.0
    # the Boltzmann form: the same normalised density, split into a N(0, 3²) base and
    # a likelihood exp(−U)/base
    target = models.get("funnel_boltzmann").target()
    assert target.log_z == 0.0
    assert float(target.log_density(z)) == pytest.approx(expected, abs=1e-9)
    base = stats.norm.logpdf(z, 0, 3).sum()
    assert float(target.log_prior(z)) == pytest.approx(base, abs=1e-9)


def test_gmm40_is_normalised(x64):
    assert bz.GMM40_MEANS.shape == (40, 2)
    assert np.abs(bz.GMM40_MEANS).max() <= 40
    # Trapezoid on unit Gaussians: the error is ~exp(−2π²/h²), negligible at h = 0.25.
    log_z, _, _ = _grid_log_z(bz.gmm40_energy, (-52, -52), (52, 52), 0.25)
    assert log_z == pytest.approx(0.0, abs=1e-6)
    assert models.get("gmm40").log_z() == 0.0


def test_student_t_mixture_is_normalised(x64):
    half = 100.0
    # t(2) is analytic in |Im z| < √2, so the trapezoid error is ~exp(−2π√2/h) ≈ 1e-15.
    log_z_box, _, _ = _grid_log_z(bz.student_t_mixture_energy, (-half,) * 2, (half,) * 2, 0.25)
    # The df = 2 tails put ~1e-4 of the mass outside any practical box; account for it exactly.
    t = stats.t(df=2)
    mu = bz.STUDENT_T_MEANS
    inside = np.prod(t.cdf(half - mu) - t.cdf(-half - mu), axis=1).mean()
    assert log_z_box == pytest.approx(np.log(inside), abs=1e-6)
    assert abs(log_z_box) < 1e-3
    assert models.get("student_t_mixture").log_z() == 0.0


def test_gaussian_2d_log_z_and_moments_by_quadrature(x64):
    entry = models.get("gaussian_2d")
    mean, cov = entry.exact_posterior()["x"]
    log_z, grid, log_w = _grid_log_z(bz.gaussian_2d.energy_fn, mean - 12, mean + 12, 0.05)
    assert entry.log_z() == pytest.approx(log_z, abs=1e-8)
    assert entry.log_z() == pytest.approx(0.5 * np.log(np.linalg.det(2 * np.pi * cov)), abs=1e-12)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    m = np.einsum("ij,ijk->k", w, grid)
    c = np.einsum("ij,ijk,ijl->kl", w, grid - m, grid - m)
    np.testing.assert_allclose(m, mean, atol=1e-8)
    np.testing.assert_allclose(c, cov, atol=1e-8)
    assert abs(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])) > 0.8


def test_gaussian_target_is_seeded_and_log_z_matches_hessian(x64):
    model = bz.gaussian_target(5, seed=3)
    again = bz.gaussian_target(5, seed=3)
    np.testing.assert_array_equal(model.cov, again.cov)
    assert not np.allclose(model.cov, bz.gaussian_target(5, seed=4).cov)
    eig = np.linalg.eigvalsh(model.cov)
    assert eig.min() >= 0.1 - 1e-9 and eig.max() <= 10 + 1e-9
    hess = np.asarray(jax.hessian(model.energy_fn)(jnp.asarray(model.mean + 0.3)))
    np.testing.assert_allclose(hess @ model.cov, np.eye(5), atol=1e-9)
    log_z = 0.5 * (5 * np.log(2 * np.pi) - np.linalg.slogdet(hess)[1])
    assert model.exact_log_z == pytest.approx(log_z, abs=1e-9)
    entry = models.get("gaussian_20d")
    assert entry.exact_posterior()["x"][1].shape == (20, 20)
    assert entry.log_z() == pytest.approx(24.6241801, abs=1e-6)


# ---------------------------------------------------------------------------------------
# double well, many-well, Müller–Brown
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("barrier, kT", [(4.0, 1.0), (1.0, 2.0), (25.0, 0.5)])
def test_double_well_bessel_log_z_matches_quadrature(barrier, kT):
    value, _ = integrate.quad(
        lambda x: np.exp(-barrier * (x * x - 1) ** 2 / kT), -np.inf, np.inf, epsabs=0, epsrel=1e-13
    )
    assert bz.double_well_log_z(barrier, kT) == pytest.approx(np.log(value), abs=1e-10)


def test_double_well_entry():
    assert models.get("double_well").log_z() == pytest.approx(-0.0535718536, abs=1e-9)
    assert float(bz.double_well_energy(np.array([1.0]))) == 0.0
    assert float(bz.double_well_energy(np.array([0.0]))) == pytest.approx(4.0)


def test_many_well_block_and_total_log_z():
    value, _ = integrate.quad(
        lambda x: np.exp(-(x**4 - 6 * x**2 - 0.5 * x)), -np.inf, np.inf, epsabs=0, epsrel=1e-13
    )
    block = np.log(value) + 0.5 * np.log(2 * np.pi)
    assert block == pytest.approx(10.29348, abs=1e-4)
    assert bz.many_well_log_z(2) == pytest.approx(block, abs=1e-10)
    assert models.get("many_well").log_z() == pytest.approx(164.6957, abs=1e-3)
    assert models.get("many_well").log_z() == pytest.approx(16 * block, abs=1e-9)
    with pytest.raises(ValueError, match="even"):
        bz.many_well_log_z(3)


def test_many_well_energy_blocks():
    x = np.zeros(32)
    x[2:4] = [1.0, 2.0]  # block 1: 1 − 6 − 0.5 + 2
    x[30:32] = [-2.0, 0.0]  # block 15: 16 − 24 + 1
    assert float(bz.many_well_energy(x)) == pytest.approx(-3.5 - 7.0)


def test_muller_brown_minima():
    u = bz.muller_brown_energy(np.array([[-0.558, 1.442], [0.623, 0.028], [-0.050, 0.467]]))
    np.testing.assert_allclose(np.asarray(u), [-146.70, -108.17, -80.77], atol=0.01)
    res = optimize.minimize(
        lambda p: float(bz.muller_brown_energy(jnp.asarray(p, dtype=jnp.float32))),
        x0=[-0.5, 1.4],
        method="Nelder-Mead",
        options={"xatol": 1e-6, "fatol": 1e-6},
    )
    np.testing.assert_allclose(res.x, [-0.558, 1.442], atol=2e-3)
    assert res.fun == pytest.approx(-146.70, abs=0.01)


def test_muller_brown_log_z_matches_independent_quadrature(x64):
    entry = models.get("muller_brown")
    assert bz.muller_brown.temperature == bz.MULLER_BROWN_TEMPERATURE == 20.0
    log_z, _, _ = _grid_log_z(bz.muller_brown_energy, (-4.5, -3.3), (3.3, 5.0), 0.0123, 20.0)
    assert entry.log_z() == pytest.approx(log_z, abs=1e-9)
    assert entry.log_z() == pytest.approx(5.3661332, abs=1e-6)
    assert bz.muller_brown_log_z(10.0) == pytest.approx(
        _grid_log_z(bz.muller_brown_energy, (-4.5, -3.3), (3.3, 5.0), 0.0123, 10.0)[0], abs=1e-9
    )


# ---------------------------------------------------------------------------------------
# DW-4 and LJ-13
# ---------------------------------------------------------------------------------------


def _random_rigid_motion(pos, rng):
    q, r = np.linalg.qr(rng.standard_normal((pos.shape[-1],) * 2))
    q = q * np.sign(np.diag(r))
    return pos @ q.T + rng.standard_normal(pos.shape[-1])


@pytest.mark.parametrize(
    "energy_fn, n, dim",
    [
        (bz.multi_double_well_energy, 4, 2),
        (lambda x: bz.lennard_jones_energy(x, 13, 3), 13, 3),
    ],
)
def test_particle_energies_are_invariant(energy_fn, n, dim, x64):
    rng = np.random.default_rng(2)
    pos = 1.5 * rng.standard_normal((n, dim))
    u = float(energy_fn(pos.ravel()))
    moved = _random_rigid_motion(pos, rng)[rng.permutation(n)]
    assert float(energy_fn(moved.ravel())) == pytest.approx(u, rel=1e-10, abs=1e-10)


def test_dw4_pair_minimum_and_com_restraint(x64):
    d_min = 4 - math.sqrt(4 / 1.8)
    pair = np.array([0.0, 0.0, d_min, 0.0])
    assert float(bz.multi_double_well_energy(pair, 2, 2)) == pytest.approx(-16 / 3.6, abs=1e-12)
    x = np.random.default_rng(0).standard_normal(8)
    centre = x.reshape(4, 2).mean(0)
    assert float(bz.dw4_energy(x) - bz.multi_double_well_energy(x)) == pytest.approx(
        2.0 * np.sum(centre**2), abs=1e-12
    )
    assert models.get("dw4").exact_log_z is None and bz.dw4.exact_log_z is None


def test_lj13_icosahedron_is_the_known_minimum(x64):
    phi = (1 + math.sqrt(5)) / 2
    verts = np.array(
        [[0, s1, s2 * phi] for s1 in (1, -1) for s2 in (1, -1)]
        + [[s1, s2 * phi, 0] for s1 in (1, -1) for s2 in (1, -1)]
        + [[s2 * phi, 0, s1] for s1 in (1, -1) for s2 in (1, -1)],
        dtype=float,
    )
    verts /= np.linalg.norm(verts[0])

    def energy(radius):
        pos = np.concatenate([np.zeros((1, 3)), radius * verts])
        return float(bz.lennard_jones_energy(pos.ravel(), oscillator_scale=0.0))

    res = optimize.minimize_scalar(
        energy, bounds=(0.8, 1.2), method="bounded", options={"xatol": 1e-9}
    )
    assert res.fun == pytest.approx(-44.326801, abs=1e-5)


def test_lj_soft_core_is_continuous_and_finite(x64):
    d = jnp.array([0.5 - 1e-9, 0.5, 0.5 + 1e-9])
    vals = np.asarray(bz._lj_pair(d, 0.5))
    np.testing.assert_allclose(vals, 3968.0, atol=1e-3)
    assert float(bz._lj_pair(jnp.array(1.0), 0.5)) == pytest.approx(-1.0)
    x = np.random.default_rng(0).standard_normal(39)
    x[3:6] = x[0:3]  # two coincident particles
    u, g = jax.value_and_grad(bz.lj13_energy)(jnp.asarray(x))
    assert np.isfinite(float(u)) and float(u) > 3968
    assert np.all(np.isfinite(np.asarray(g)))
    lp = float(log_density(bz.lj13, (), {}, {"x": x})[0])
    assert lp == pytest.approx(-float(u), rel=1e-12)
    assert models.get("lj13").exact_log_z is None and bz.lj13.exact_log_z is None


def test_lj13_harmonic_terms_sum_to_half_square_norm(x64):
    x = 2.0 * np.random.default_rng(5).standard_normal(39)
    pure = bz.lennard_jones_energy(x, oscillator_scale=0.0)
    assert float(bz.lj13_energy(x) - pure) == pytest.approx(0.5 * np.sum(x**2), rel=1e-10)


def test_banana_is_the_twisted_gaussian(x64):
    """exp(−U) is N(0, diag(100, 1, …)) pushed through g_2 ↦ g_2 + b(g_1² − 100): the
    density at x = T(g) equals the Gaussian's at g, and draws of T(g) have the moments
    the twist implies (E x_2 = 0, var x_2 = 1 + 2b²·100²)."""
    rng = np.random.default_rng(3)
    g = rng.standard_normal((200_000, 10)) * np.r_[10.0, np.ones(9)]
    x = g.copy()
    x[:, 1] += bz.BANANA_TWIST * (g[:, 0] ** 2 - 100.0)
    gauss = stats.norm.logpdf(g, 0, np.r_[10.0, np.ones(9)]).sum(axis=1)
    np.testing.assert_allclose(-np.asarray(bz.banana_energy(x[:5])), gauss[:5], rtol=1e-12)
    assert abs(x[:, 1].mean()) < 4 * np.sqrt(201.0 / x.shape[0])
    assert models.get("banana").log_z() == 0.0


def test_unequal_mixture_matches_scipy_and_is_normalised(x64):
    rng = np.random.default_rng(4)
    x = 3.0 * rng.standard_normal((7, 5))
    ref = np.logaddexp.reduce([
        np.log(w) + stats.multivariate_normal(m, s**2 * np.eye(5)).logpdf(x)
        for w, m, s in zip(bz.UNEQUAL_WEIGHTS, bz.UNEQUAL_MEANS, bz.UNEQUAL_SCALES,
                           strict=True)], axis=0)
    np.testing.assert_allclose(-np.asarray(bz.unequal_mixture_energy(x)), ref, rtol=1e-12)
    assert models.get("unequal_mixture").log_z() == 0.0
