"""Percus DFT against exact hard-rod results; Picard vs Anderson; DDFT as a Wasserstein
flow; failures that report instead of returning NaN."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helmholtz.flows import WFR, FisherRao
from helmholtz.models.cdft import (
    Anderson,
    Grid,
    GridError,
    Percus,
    Picard,
    bulk_density,
    flat,
    random_potential,
    solve,
)
from helmholtz.models.cdft.ddft import ddft
from helmholtz.models.cdft.gcmc import Fluid, exact_beta_mu, exact_pressure, hard_rod_g

pytestmark = pytest.mark.usefixtures("x64_module")


def tonks_beta_mu(rho):
    eta = rho
    return np.log(rho / (1 - eta)) + eta / (1 - eta)


@pytest.fixture(scope="module")
def wall():
    """Hard rods at a hard wall, ρ_b = 0.5 (βμ = 1), on a grid of σ/4000."""
    return solve(Percus(2.5e-4), flat(16.0, walls=(1.0, 15.0)), tonks_beta_mu(0.5), tol=1e-11)


def test_percus_matches_the_exact_hard_wall_profile(wall):
    # the exact profile: the wall acts as a rod fixed at −σ, so ρ(x) = ρ_b g(x + σ)
    # (Percus 1976); compared over 4σ from the wall, 10σ from the other (its effect < 1e-6)
    assert wall.status.ok and wall.residual < 1e-11
    x = np.asarray(wall.x) - 1.0
    near = (x > 1e-9) & (x < 4.0)
    exact = 0.5 * hard_rod_g(x[near] + 1.0, 0.5)
    dev = np.abs(np.asarray(wall.rho)[near] - exact)
    assert dev.max() < 1e-4, dev.max()
    # first order only at the node x = σ (the window of n1 ends on the wall's jump there)
    assert np.delete(dev, np.argmax(dev)).max() < 2e-5


def test_contact_theorem_and_bulk_pressure(wall):
    # ρ(0⁺) = βp = ρ/(1 − η) = 1 at both walls (Tonks)
    np.testing.assert_allclose(wall.contact_density(), 1.0, atol=1e-7)
    # the grand potential of the uniform fluid is −βp L
    for rho_b in (0.2, 0.5, 0.8):
        sol = solve(Percus(0.05), flat(4.0), tonks_beta_mu(rho_b), tol=1e-12)
        assert sol.status.ok
        np.testing.assert_allclose(np.asarray(sol.rho), rho_b, rtol=1e-10)
        np.testing.assert_allclose(sol.grand_potential() / 4.0, -rho_b / (1 - rho_b),
                                   rtol=1e-10)


def test_bulk_equation_of_state_is_tonks():
    f = Percus(0.05)
    for rho in (0.05, 0.3, 0.5, 0.7, 0.9):
        mu = tonks_beta_mu(rho)
        np.testing.assert_allclose(bulk_density(f, mu), rho, rtol=1e-10)
        np.testing.assert_allclose(float(exact_beta_mu(Fluid.hard_rods(), rho)), mu,
                                   rtol=1e-12)
    np.testing.assert_allclose(float(exact_pressure(Fluid.hard_rods(), tonks_beta_mu(0.5))),
                               1.0, rtol=1e-10)


@pytest.fixture(scope="module")
def rough():
    """Hard rods between walls in a random potential, solved both ways."""
    pot = random_potential(jax.random.key(3), 10.0, walls=(1.0, 9.0), num_modes=4,
                           amplitude=1.5)
    f = Percus(0.025)
    return (solve(f, pot, 1.5, solver=Anderson()), solve(f, pot, 1.5, solver=Picard(0.05)),
            pot)


def test_anderson_needs_fewer_iterations_than_picard(rough):
    anderson, picard, _ = rough
    assert anderson.status.ok and picard.status.ok
    assert anderson.residual < 1e-10 and picard.residual < 1e-10
    assert anderson.iterations * 5 < picard.iterations, (anderson.iterations,
                                                         picard.iterations)
    np.testing.assert_allclose(np.asarray(anderson.rho), np.asarray(picard.rho), atol=1e-9)
    # the residuals are recorded per iteration, ending below the tolerance
    assert len(anderson.residuals) == anderson.iterations
    assert anderson.residuals[-1] < 1e-10 < anderson.residuals[0]


def test_grand_potential_slope_is_minus_n(rough):
    # dΩ/dμ = −⟨N⟩: the grand potential's derivative by finite differences
    anderson, _, pot = rough
    f = Percus(0.025)
    h = 1e-4
    up, down = solve(f, pot, 1.5 + h), solve(f, pot, 1.5 - h)
    slope = (up.grand_potential() - down.grand_potential()) / (2 * h)
    np.testing.assert_allclose(slope, -anderson.num_particles, rtol=1e-7)


def test_adsorption_at_a_hard_wall_is_exact(wall):
    # Γ per wall = ρ_b ∫_0^∞ (g(x + σ) − 1) dx, by the midpoint rule on the exact g out
    # to 30σ (it comes to ρ_b²σ/2 = 0.125 to 1e-14); the slit's far wall, 14σ away,
    # shifts the DFT's Γ by about 1e-6
    dx = 1e-4
    x = np.arange(dx / 2, 30.0, dx)
    exact = 2 * 0.5 * np.sum(hard_rod_g(x + 1.0, 0.5) - 1.0) * dx
    np.testing.assert_allclose(exact, 0.25, rtol=1e-12)
    np.testing.assert_allclose(wall.adsorption(0.5), exact, rtol=2e-5)


def test_soft_walls_feel_the_bulk_pressure():
    # a slit between harmonic walls: the force the fluid exerts on each wall is βp of the
    # bulk in the middle (mechanical equilibrium), here against Tonks' βp = ρ/(1 − η)
    f = Percus(0.02)
    grid = Grid(16.0, 0.02)
    x = np.asarray(grid.x)
    beta_v = 20.0 * (np.clip(2.0 - x, 0, None) ** 2 + np.clip(x - 14.0, 0, None) ** 2)
    sol = solve(f, jnp.asarray(beta_v), tonks_beta_mu(0.5), grid=grid)
    assert sol.status.ok
    # second order in dx: off by 1.1e-3 and 2.2e-3 here, 2.7e-4 and 5.4e-4 at dx = 0.01
    np.testing.assert_allclose(sol.wall_force(0.0, 2.0), -1.0, rtol=3e-3)   # pushes to −x
    np.testing.assert_allclose(sol.wall_force(14.0, 16.0), 1.0, rtol=3e-3)


def test_a_failing_solver_reports_its_residual_instead_of_nan():
    pot = random_potential(jax.random.key(3), 10.0, walls=(1.0, 9.0), num_modes=4,
                           amplitude=1.5)
    f = Percus(0.025)
    # undamped Picard at high packing oscillates
    bad = solve(f, pot, 4.0, solver=Picard(1.0), max_iterations=300)
    assert not bad.status.ok and bad.status.code in ("diverged", "max_steps")
    assert "residual" in bad.status.message
    assert np.all(np.isfinite(np.asarray(bad.rho))) and np.isfinite(bad.residual)
    assert bad.residual > 1e-3
    # every iterate stayed in the functional's domain (step limiting): n1 < 1
    assert float(jnp.max(f.packing(bad.rho))) < 1.0
    # too few iterations: max_steps with the last residual
    short = solve(f, pot, 1.5, max_iterations=3)
    assert short.status.code == "max_steps" and "3 iterations" in short.status.message
    # packing near 1 (βμ = 25, η_bulk = 0.96): Anderson diverges (measured: the residual
    # grows to 5e10 after 48 iterations); the status says so, the best iterate is kept
    dense = solve(f, pot, 25.0, max_iterations=2000)
    assert dense.status.code == "diverged" and "residual grew" in dense.status.message
    assert np.all(np.isfinite(np.asarray(dense.rho))) and np.isfinite(dense.residual)
    assert float(jnp.max(f.packing(dense.rho))) < 1.0
    # βμ beyond what a functional reaches below its largest density
    with pytest.raises(ValueError, match="beyond this functional's range"):
        bulk_density(f, 5.0, max_density=0.5)


def test_grid_mismatches_raise_one_clear_error():
    f = Percus(0.05)
    with pytest.raises(GridError, match="dx = 0.05"):
        solve(f, jnp.zeros(100), 0.0, grid=Grid(10.0, 0.1))
    with pytest.raises(GridError, match="shape"):
        solve(f, jnp.zeros(100), 0.0, grid=Grid(10.0, 0.05))
    with pytest.raises(GridError, match="whole number"):
        Percus(0.03)
    with pytest.raises(GridError, match="wall at 1.01"):
        solve(f, flat(10.0, walls=(1.01, 9.0)), 0.0)
    with pytest.raises(GridError, match="whole number"):
        Grid(10.0, 0.3)
    with pytest.raises(GridError, match="lo < hi < length"):
        flat(10.0, walls=(1.0, 10.0))
    with pytest.raises(GridError, match="periodic boundary"):
        solve(f, flat(10.0, walls=(0.5, 9.8)), 0.0)


@pytest.fixture(scope="module")
def relaxation():
    """Percus hard rods in a periodic potential: the equilibrium at βμ = 0.5 and DDFT
    from a uniform profile of the same mass (closed) and of another mass (open)."""
    f = Percus(0.1)
    pot = random_potential(jax.random.key(1), 6.0, num_modes=3, amplitude=1.5)
    eq = solve(f, pot, 0.5, tol=1e-12, solver=Picard(0.05))
    n = eq.grid.n
    # Kvaerno3 compiles in 7 s where the default Kvaerno5 takes 10 (same answers to 1e-12)
    closed = ddft(f, pot, jnp.full(n, eq.num_particles / 6.0), t1=100.0, num_saves=12,
                  solver=diffrax.Kvaerno3())
    opened = ddft(f, pot, jnp.full(n, 0.2), t1=100.0, num_saves=12, beta_mu=0.5,
                  metric=WFR(fisher_rao=FisherRao(conserve_mass=False)),
                  solver=diffrax.Kvaerno3())
    return eq, closed, opened


def test_ddft_conserves_mass_and_relaxes_to_the_picard_solution(relaxation):
    eq, closed, _ = relaxation
    assert closed.status.ok
    np.testing.assert_allclose(closed.mass, eq.num_particles, rtol=1e-12)
    np.testing.assert_allclose(closed.rho[-1], np.asarray(eq.rho), atol=1e-8)
    # Ω is a Lyapunov function of the Wasserstein flow
    assert np.all(np.diff(closed.omega) <= 1e-10)


def test_open_ddft_relaxes_to_the_grand_canonical_profile(relaxation):
    eq, _, opened = relaxation
    assert opened.status.ok
    assert abs(opened.mass[0] - 1.2) < 1e-12 and abs(opened.mass[-1] - eq.num_particles) < 1e-8
    np.testing.assert_allclose(opened.rho[-1], np.asarray(eq.rho), atol=1e-8)
    assert np.all(np.diff(opened.omega) <= 1e-10)
    np.testing.assert_allclose(opened.omega[-1], eq.grand_potential(), rtol=1e-10)


def test_ddft_bad_input():
    f = Percus(0.05)
    pot = flat(6.0)
    with pytest.raises(ValueError, match="beta_mu"):
        ddft(f, pot, jnp.full(120, 0.3), t1=1.0, metric=FisherRao(conserve_mass=False))
    with pytest.raises(GridError, match="120 nodes"):
        ddft(f, pot, jnp.full(100, 0.3), t1=1.0)
