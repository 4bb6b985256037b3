"""Two independent routes to the same hard-rod fluid: grand-canonical Monte Carlo and
Percus' exact functional, in three external potentials; and the data sets built on
GCMC, cached by seed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helmholtz.models.cdft import Grid, Percus, random_potential, solve
from helmholtz.models.cdft import data as cdft_data
from helmholtz.models.cdft.gcmc import Fluid, gcmc

LENGTH = 8.0
POTENTIALS = {
    "cosine modes, periodic": dict(walls=None, num_modes=4, amplitude=2.0),
    "cosine modes between walls": dict(walls=(1.0, 7.0), num_modes=4, amplitude=1.5),
    "linear pieces between walls": dict(walls=(1.0, 7.0), num_modes=1, amplitude=0.3,
                                        num_knots=4, knot_amplitude=2.5),
}
BETA_MU = {"cosine modes, periodic": 0.5, "cosine modes between walls": 1.5,
           "linear pieces between walls": 1.0}


@pytest.mark.parametrize("name", list(POTENTIALS))
def test_gcmc_mean_number_matches_percus_dft(name, x64):
    pot = random_potential(jax.random.key(11), LENGTH, **POTENTIALS[name])
    mc = gcmc(jax.random.key(5), Fluid.hard_rods(), pot, jnp.full(32, BETA_MU[name]),
              Grid(LENGTH, 0.05), num_sweeps=1000, num_blocks=10)
    mean = mc.mean_n.mean()
    se = np.sqrt(np.sum(mc.mean_n_se ** 2)) / mc.mean_n.size
    dft = solve(Percus(0.01), pot, BETA_MU[name])
    assert dft.status.ok
    z = (mean - dft.num_particles) / se
    assert abs(z) < 4, (name, mean, se, dft.num_particles)
    assert se < 0.01 * dft.num_particles   # the comparison has teeth: 1 % or better


def test_data_sets_are_cached_by_seed_and_regenerated_identically(tmp_path):
    kw = dict(num_sweeps=100, num_blocks=10, length=6.0, cache_dir=tmp_path,
              progress_bar=False)
    first = cdft_data.profiles(3, 4, **kw)
    files = list(tmp_path.glob("profiles-*.npz"))
    assert len(files) == 1
    again = cdft_data.profiles(3, 4, **kw)                       # from the file
    fresh = cdft_data.profiles(3, 4, **kw, regenerate=True)      # simulated again
    other = cdft_data.profiles(4, 4, **kw)                        # another seed
    for k in ("rho", "beta_v", "beta_mu", "mean_n"):
        np.testing.assert_array_equal(first[k], again[k])
        np.testing.assert_array_equal(first[k], fresh[k])
    assert not np.array_equal(first["rho"], other["rho"])
    assert len(list(tmp_path.glob("profiles-*.npz"))) == 2
    # the density integrates to ⟨N⟩, and walled systems have no density behind the walls
    np.testing.assert_allclose(first["rho"].sum(1) * 0.05, first["mean_n"], rtol=1e-6)
    assert np.all(first["rho"][1::2][first["weight"][1::2] == 0] == 0)


def test_float32_solves_to_its_own_precision():
    pot = random_potential(jax.random.key(3), 10.0, walls=(1.0, 9.0), num_modes=4,
                           amplitude=1.5)
    low = solve(Percus(0.05), pot, 1.5)          # default tol 1e-4 in float32
    assert low.status.ok and low.rho.dtype == jnp.float32 and low.residual < 1e-4
    with pytest.raises(ValueError, match="below what float32 resolves"):
        solve(Percus(0.05), pot, 1.5, tol=1e-10)
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        high = solve(Percus(0.05), pot, 1.5)
    finally:
        jax.config.update("jax_enable_x64", previous)
    assert high.status.ok and high.residual < 1e-10
    np.testing.assert_allclose(np.asarray(low.rho), np.asarray(high.rho), atol=1e-3)
