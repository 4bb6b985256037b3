"""GCMC of 1-d fluids against exact results: Tonks / Takahashi bulk equations of state,
Percus' hard-rod g(r) and c(r), and a box that holds at most two rods, where the grand
partition function is three terms computed by quadrature."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import gammainc

import helmholtz.models.cdft.gcmc as gcmc_module
from helmholtz.models.cdft.gcmc import (
    Fluid,
    direct_correlation,
    exact_beta_mu,
    exact_density,
    exact_pressure,
    gcmc,
    gcmc_numpy,
    hard_rod_c,
    hard_rod_g,
)
from helmholtz.models.cdft.potentials import ExternalPotential, Grid, GridError, flat

HARD_RODS = Fluid.hard_rods()
SQUARE_WELL = Fluid.square_well(epsilon=1.0, well_width=1.5)


def pooled(mean, se):
    """Mean over independent systems (axis 0) and its standard error."""
    return mean.mean(0), np.sqrt(np.sum(se**2, 0)) / mean.shape[0]


# ------------------------------------------------------------------ exact EOS


@pytest.mark.parametrize("sigma", [1.0, 0.7])
def test_hard_rod_eos_is_tonks(sigma):
    rho = np.linspace(0.02, 0.98, 49) / sigma
    eta = rho * sigma
    beta_mu = np.log(rho / (1 - eta)) + eta / (1 - eta)
    fluid = Fluid.hard_rods(sigma)
    np.testing.assert_allclose(exact_density(fluid, beta_mu), rho, rtol=1e-10, atol=0)
    np.testing.assert_allclose(exact_pressure(fluid, beta_mu), rho / (1 - eta), rtol=1e-10)
    np.testing.assert_allclose(exact_beta_mu(fluid, rho), beta_mu, rtol=0, atol=1e-10)
    assert np.ndim(exact_density(fluid, 1.0)) == 0


@pytest.mark.parametrize("fluid", [SQUARE_WELL, Fluid.square_well(-0.7, 2.0, 0.8),
                                   Fluid.square_well(3.0, 1.2)])
def test_square_well_eos_is_consistent(fluid):
    beta_mu = np.linspace(-3.0, 4.0, 15)
    beta_p = exact_pressure(fluid, beta_mu)
    # the closed form of Δ against quadrature: βμ = −ln ∫ exp(−βp s − βu(s)) ds
    for bm, bp in zip(beta_mu[::4], beta_p[::4], strict=True):
        s0, s1 = fluid.sigma, fluid.sigma * fluid.well_width
        delta = (quad(lambda s, p: math.exp(-p * s + fluid.epsilon), s0, s1, args=(bp,))[0]
                 + quad(lambda s, p: math.exp(-p * s), s1, np.inf, args=(bp,))[0])
        assert -math.log(delta) == pytest.approx(bm, abs=1e-9)
    rho = exact_density(fluid, beta_mu)
    assert np.all(np.diff(rho) > 0) and np.all(rho * fluid.sigma < 1)
    np.testing.assert_allclose(exact_beta_mu(fluid, rho), beta_mu, rtol=0, atol=1e-9)
    # Gibbs–Duhem: ρ = d(βp)/d(βμ), by a central difference
    h = 1e-5
    slope = (exact_pressure(fluid, beta_mu + h) - exact_pressure(fluid, beta_mu - h)) / (2 * h)
    np.testing.assert_allclose(rho, slope, rtol=1e-7)


# ------------------------------------------------------------------ bulk GCMC

BULK_GRID = Grid(10.0, 0.1)
NUM_SYSTEMS = 64


def binned_hard_rod_g(r, rho, dr, sigma=1.0):
    """The exact g averaged over the GCMC bins [r − dr/2, r + dr/2) (from 0 for r = 0):
    the k-th neighbour's Gamma density integrates to a regularised incomplete Γ."""
    lo, hi = np.maximum(r - dr / 2, 0), r + dr / 2
    beta_p = rho / (1 - rho * sigma)
    total = np.zeros_like(r)
    for k in range(1, int(hi.max() / sigma) + 1):
        total += (gammainc(k, beta_p * np.maximum(hi - k * sigma, 0))
                  - gammainc(k, beta_p * np.maximum(lo - k * sigma, 0)))
    return total / (rho * (hi - lo))


@pytest.fixture(scope="module")
def hard_rod_run():
    # L = 10 at βμ = 1: the finite ring's ⟨N⟩/L differs from Tonks' 0.5 by 2e-7
    return gcmc(jax.random.key(0), HARD_RODS, None, jnp.ones(NUM_SYSTEMS), BULK_GRID,
                num_sweeps=400, num_equilibration=40, pair_range=5.0)


def test_hard_rod_gcmc_density_is_tonks(hard_rod_run):
    res = hard_rod_run
    rho, se = pooled(res.mean_n / BULK_GRID.length, res.mean_n_se / BULK_GRID.length)
    exact = exact_density(HARD_RODS, 1.0)
    assert exact == pytest.approx(0.5, abs=1e-12)
    assert abs(rho - exact) < 4 * se, (rho, se)
    assert se < 2e-3
    # the binned profile is flat at ρ, node by node
    profile, profile_se = pooled(res.density, res.density_se)
    assert np.max(np.abs(profile - exact) / profile_se) < 5
    assert np.all(res.capacity_binds == 0)
    assert np.all((res.acceptance > 0.1) & (res.acceptance < 0.95))


def test_hard_rod_g_is_percus(hard_rod_run):
    res = hard_rod_run
    r = res.pair_r
    assert r[-1] == pytest.approx(4.9) and r[1] == pytest.approx(0.1)
    assert np.all(res.g[:, r < 0.95] == 0)  # no pair closer than σ
    g, g_se = pooled(res.g, res.g_se)
    contact = r > 0.95
    z = (g - binned_hard_rod_g(r, 0.5, BULK_GRID.dx))[contact] / g_se[contact]
    assert np.max(np.abs(z)) < 5
    assert np.mean(z**2) < 2  # 40 correlated bins: about 1 ± 0.3 with right error bars


def test_direct_correlation_of_exact_g_is_percus():
    # c and h both jump at |r| = σ: the discrete convolution is first order there
    errors = []
    for dr in (0.02, 0.01):
        r = np.arange(int(round(20 / dr))) * dr
        c = direct_correlation(r, hard_rod_g(r, 0.5), 0.5)
        errors.append(np.max(np.abs(c - hard_rod_c(r, 0.5))))
        assert errors[-1] < 1.2 * dr
        assert np.max(np.abs(c[r > 1.05])) < 0.6 * dr  # short-ranged: zero beyond σ
    assert errors[0] / errors[1] == pytest.approx(2.0, rel=0.1)
    assert hard_rod_c(0.0, 0.5) == pytest.approx(-4.0)  # −1/(1−η) − ρσ/(1−η)²


def test_direct_correlation_of_gcmc_g(hard_rod_run):
    res = hard_rod_run
    r = res.pair_r
    c = direct_correlation(r, res.g.mean(0), float(res.mean_n.mean()) / BULK_GRID.length)
    # the same OZ on the exact bin averages isolates the Monte Carlo error …
    reference = direct_correlation(r, binned_hard_rod_g(r, 0.5, BULK_GRID.dx), 0.5)
    assert np.max(np.abs(c - reference)) < 0.1
    # … and its distance from Percus' c is the grid's (dr = 0.1) plus that
    assert np.max(np.abs(c - hard_rod_c(r, 0.5))) < 0.25


def test_square_well_gcmc_density_is_takahashi():
    # βμ = 0: the ring's correlation length is 1.15σ, so L = 10 shifts ρ by ~1e-4
    # the shapes of hard_rod_run's: the fluid is traced, so this reuses its program
    res = gcmc(jax.random.key(1), SQUARE_WELL, None, jnp.zeros(NUM_SYSTEMS), BULK_GRID,
               num_sweeps=400, num_equilibration=40, pair_range=5.0)
    rho, se = pooled(res.mean_n / BULK_GRID.length, res.mean_n_se / BULK_GRID.length)
    exact = exact_density(SQUARE_WELL, 0.0)
    assert abs(exact - exact_density(HARD_RODS, 0.0)) > 0.1  # the well matters
    assert abs(rho - exact) < 4 * se, (rho, se, exact)


# ------------------------------------------------------------------ a box of two rods

SMALL_LENGTH, WALLS = 4.0, (1.0, 2.8)  # centres in a slit 1.8σ wide: N ≤ 2
SMALL_GRID = Grid(SMALL_LENGTH, 0.1)
AMPLITUDES, PHASE = (0.0, 1.5), 0.3
BETA_MUS = (-2.5, -0.5, 1.0, 3.5)  # dilute, where L e^{βμ}/(N+1) < 1, to full


def small_box_potentials():
    amps = jnp.asarray(AMPLITUDES)[:, None]
    empty = jnp.zeros((len(AMPLITUDES), 0))
    return ExternalPotential(SMALL_LENGTH, amps, jnp.full_like(amps, PHASE), empty, empty,
                             WALLS)


def small_box_exact(fluid, beta_mu, amplitude, capacity=2, h=1e-4):
    """⟨N⟩ and the binned ρ(x) from Ξ = 1 + z Z₁ + z² Z₂ by quadrature.

    With b = e^{−βV} and F(x) = ∫_lo^x b, an ordered pair x₂ < x₁ − σ weighs b(x₂)
    e^{−βu}, so Z₂ = ∫ b(x₁) [e^{βε} F(x₁ − σ) + (1 − e^{βε}) F(x₁ − λσ)] dx₁; the grid
    step divides σ and λσ, so the shifts land on nodes and the trapezoid rule is O(h²).
    """
    lo, hi = WALLS
    x = np.linspace(lo, hi, int(round((hi - lo) / h)) + 1)
    b = np.exp(-amplitude * np.cos(2 * np.pi * x / SMALL_LENGTH + PHASE))
    cum = np.concatenate([[0.0], np.cumsum((b[1:] + b[:-1]) / 2) * h])

    def F(shift):  # F(x + shift) on the nodes, clipped to [0, F(hi)]
        m = int(round(shift / h))
        out = np.full_like(cum, cum[-1] if m > 0 else 0.0)
        if m >= 0:
            out[:len(cum) - m] = cum[m:]
        else:
            out[-m:] = cum[:len(cum) + m]
        return out

    def trap(f):
        return (np.sum(f) - (f[0] + f[-1]) / 2) * h

    e, s, ls = math.exp(fluid.epsilon), fluid.sigma, fluid.sigma * fluid.well_width
    below = e * F(-s) + (1 - e) * F(-ls)
    partners = below + e * (cum[-1] - F(s)) + (1 - e) * (cum[-1] - F(ls))
    z = math.exp(beta_mu)
    z1, z2 = cum[-1], trap(b * below)
    two = capacity >= 2
    xi = 1 + z * z1 + two * z**2 * z2
    rho = (z * b + two * z**2 * b * partners) / xi
    mean_n = (z * z1 + two * 2 * z**2 * z2) / xi
    # bin averages over [x_i − dx/2, x_i + dx/2)
    cum_rho = np.concatenate([[0.0], np.cumsum((rho[1:] + rho[:-1]) / 2) * h])
    nodes = np.asarray(SMALL_GRID.x, np.float64)
    edges = np.clip(np.stack([nodes - 0.05, nodes + 0.05]), lo, hi)
    at = np.interp(edges, x, cum_rho)
    return mean_n, (at[1] - at[0]) / SMALL_GRID.dx


def small_box_batch(num_replicas):
    """Every (amplitude, βμ) pair, ``num_replicas`` systems each: batched βV and βμ."""
    pots = small_box_potentials()
    pairs = [(a, m) for a in range(len(AMPLITUDES)) for m in range(len(BETA_MUS))]
    index = np.repeat([a for a, _ in pairs], num_replicas)
    beta_mu = np.repeat([BETA_MUS[m] for _, m in pairs], num_replicas)
    return pairs, jax.tree.map(lambda v: v[index], pots), jnp.asarray(beta_mu)


def test_two_rod_box_is_exact():
    replicas = 8
    pairs, pots, beta_mu = small_box_batch(replicas)
    res = gcmc(jax.random.key(2), SQUARE_WELL, pots, beta_mu, SMALL_GRID, num_sweeps=1000,
               num_equilibration=20)
    assert res.mean_n.shape == (len(pairs) * replicas,)
    assert np.all(res.capacity_binds == 0)
    z_n, z_rho = [], []
    for p, (a, m) in enumerate(pairs):
        rows = slice(p * replicas, (p + 1) * replicas)
        exact_n, exact_rho = small_box_exact(SQUARE_WELL, BETA_MUS[m], AMPLITUDES[a])
        n, n_se = pooled(res.mean_n[rows], res.mean_n_se[rows])
        z_n.append((n - exact_n) / n_se)
        rho, rho_se = pooled(res.density[rows], res.density_se[rows])
        inside = exact_rho > 0
        assert np.all(rho[~inside] == 0)
        z_rho.append((rho - exact_rho)[inside] / rho_se[inside])
        assert np.sum(exact_rho) * SMALL_GRID.dx == pytest.approx(exact_n, rel=1e-6)
        if m == len(BETA_MUS) - 1:
            assert n > 1.6  # the capacity N = 2 is where the system spends most sweeps
    assert np.max(np.abs(z_n)) < 4, z_n
    assert np.max(np.abs(np.concatenate(z_rho))) < 5


def test_numpy_reference_is_exact():
    a, beta_mu = AMPLITUDES[1], 2.0
    lo, hi = WALLS

    def potential_fn(x):
        return a * math.cos(2 * math.pi * x / SMALL_LENGTH + PHASE) if lo <= x <= hi else math.inf

    res = gcmc_numpy(3, SQUARE_WELL, potential_fn, beta_mu, SMALL_LENGTH, 2000)
    exact_n, _ = small_box_exact(SQUARE_WELL, beta_mu, a)
    assert abs(res.mean_n - exact_n) < 4 * res.mean_n_se, (res.mean_n, res.mean_n_se, exact_n)
    assert res.n_trace.max() == 2


def test_too_small_capacity_warns_and_truncates():
    # capacity 1 samples the truncated ensemble Ξ = 1 + z Z₁ exactly, and says so; one
    # system, unbatched: its batch means give the error bar
    pots = jax.tree.map(lambda v: v[1], small_box_potentials())
    with pytest.warns(UserWarning, match="max_particles = 1"):
        res = gcmc(jax.random.key(4), SQUARE_WELL, pots, 2.0, SMALL_GRID, num_sweeps=2000,
                   max_particles=1)
    assert res.mean_n.shape == () and res.density.shape == (SMALL_GRID.n,)
    assert res.capacity_binds > 0 and res.g is None
    exact_n, _ = small_box_exact(SQUARE_WELL, 2.0, AMPLITUDES[1], capacity=1)
    assert abs(res.mean_n - exact_n) < 4 * res.mean_n_se, (res.mean_n, res.mean_n_se, exact_n)


def test_new_values_do_not_recompile():
    # the shapes of test_two_rod_box_is_exact's; new βV, βμ and fluid reuse the program
    _, pots, beta_mu = small_box_batch(8)
    kw = dict(num_sweeps=20, num_equilibration=5, num_blocks=2)
    gcmc(jax.random.key(5), SQUARE_WELL, pots, beta_mu, SMALL_GRID, **kw)
    traces = gcmc_module._trace_count
    pots = jax.tree.map(lambda v: v + 0.1, pots)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = gcmc(jax.random.key(6), HARD_RODS, pots, beta_mu - 1, SMALL_GRID, **kw)
    assert gcmc_module._trace_count == traces
    assert res.density.shape == (beta_mu.shape[0], SMALL_GRID.n)


# ------------------------------------------------------------------ bad input


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="well_width"):
        Fluid(epsilon=1.0, well_width=2.5)
    with pytest.raises(ValueError, match="well_width"):
        Fluid.square_well(well_width=0.9)
    key = jax.random.key(0)
    kw = dict(num_sweeps=20, num_blocks=2)
    with pytest.raises(ValueError, match="num_sweeps"):
        gcmc(key, HARD_RODS, None, 1.0, BULK_GRID, num_sweeps=-5)
    with pytest.raises(ValueError, match="multiple of num_blocks"):
        gcmc(key, HARD_RODS, None, 1.0, BULK_GRID, num_sweeps=30, num_blocks=20)
    with pytest.raises(GridError, match="length 8.0"):
        gcmc(key, HARD_RODS, flat(8.0), 1.0, BULK_GRID, **kw)
    with pytest.raises(ValueError, match="pair_range"):
        gcmc(key, HARD_RODS, flat(10.0, walls=(1.0, 8.0)), 1.0, BULK_GRID, pair_range=2.0,
             **kw)
    with pytest.raises(ValueError, match="pair_range"):
        gcmc(key, HARD_RODS, None, 1.0, BULK_GRID, pair_range=6.0, **kw)
    with pytest.raises(ValueError, match="system axes disagree"):
        gcmc(key, SQUARE_WELL, small_box_potentials(), jnp.zeros(3), SMALL_GRID, **kw)
    with pytest.raises(ValueError, match="twice the interaction range"):
        gcmc(key, SQUARE_WELL, None, 0.0, Grid(2.5, 0.1), **kw)
    with pytest.raises(ValueError, match="rho"):
        exact_beta_mu(HARD_RODS, 1.2)
