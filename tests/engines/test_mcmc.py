"""NUTS, HMC and MALA against the exact linear-Gaussian posterior, with MC error bars."""

import warnings

import arviz as az
import numpy as np
import pytest

import helmholtz
from helmholtz.models import get

SETTINGS = dict(num_warmup=500, num_samples=1000, num_chains=4)


def _mcse_mean_sd(x):
    """Monte Carlo standard errors of the mean and of the sd of (chain, draw) draws.

    The sd's error comes from the ESS of the squared deviations (delta method); arviz's
    own ``mcse(method="sd")`` fails under numba in arviz 0.23.4.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess_mean = float(az.ess(x, method="mean"))
        dev2 = (x - x.mean()) ** 2
        ess_dev2 = float(az.ess(dev2, method="mean"))
    sd = x.std()
    mcse_var = dev2.std() / np.sqrt(ess_dev2)
    return sd / np.sqrt(ess_mean), mcse_var / (2 * sd)


@pytest.fixture(scope="module")
def linear_gaussian():
    entry = get("linear_gaussian")
    args, kwargs = entry.args(seed=0)
    mean, cov = entry.exact_posterior(*args, **kwargs)["w"]
    return entry.target(seed=0), mean, np.sqrt(np.diag(cov))


@pytest.mark.parametrize("engine", ["nuts", "hmc", "mala"])
def test_moments_within_four_mc_standard_errors(engine, linear_gaussian):
    target, mean, sd = linear_gaussian
    result = helmholtz.infer(target, engine, seed=11, **SETTINGS)
    draws = result.samples["w"]  # (chain, draw, 3)
    mcse_mean, mcse_sd = np.array([_mcse_mean_sd(draws[..., i]) for i in range(mean.size)]).T
    w = draws.reshape(-1, mean.size)
    z_mean = (w.mean(0) - mean) / mcse_mean
    z_sd = (w.std(0) - sd) / mcse_sd
    assert np.all(np.abs(z_mean) < 4), z_mean
    assert np.all(np.abs(z_sd) < 4), z_sd
    assert result.free_energy.kind == "none" and "ais" in result.free_energy.note
    assert result.num_divergent == 0
    # per-draw statistics have the (chain, draw) axes
    for key in ("diverging", "lp", "acceptance_rate", "step_size", "n_steps"):
        assert result.stats[key].shape == (4, 1000), key


def test_nuts_adapts_towards_target_acceptance(linear_gaussian):
    target, _, _ = linear_gaussian
    result = helmholtz.infer(target, "nuts", seed=11, **SETTINGS)
    # dual averaging aims at 0.8; the averaged step size lands a little above it
    assert 0.7 < result.stats["acceptance_rate"].mean() < 0.97


def test_same_seed_same_draws_and_different_seed_different_draws(linear_gaussian):
    target, _, _ = linear_gaussian
    a = helmholtz.infer(target, "mala", seed=3, **SETTINGS)
    b = helmholtz.infer(target, "mala", seed=3, **SETTINGS)
    c = helmholtz.infer(target, "mala", seed=4, **SETTINGS)
    np.testing.assert_array_equal(a.samples["w"], b.samples["w"])
    assert not np.allclose(a.samples["w"], c.samples["w"])


def test_dense_mass_matrix_learns_the_posterior_covariance(linear_gaussian):
    """With a dense metric, NUTS on a Gaussian needs only a few leapfrog steps."""
    target, _, _ = linear_gaussian
    dense = helmholtz.infer(target, "nuts", seed=5, dense_mass=True, **SETTINGS)
    assert np.median(dense.stats["n_steps"]) <= 7
