"""NUTS, HMC and MALA against the exact linear-Gaussian posterior, with MC error bars."""

import warnings

import arviz as az
import numpy as np
import pytest

import helmholtz
from helmholtz.driver import TRACE_COUNT
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


@pytest.mark.parametrize("engine", ["nuts", "hmc", "mala"])
def test_chains_start_at_init_values(engine, linear_gaussian):
    """With no warmup and a step size of 1e-12 (MALA moves by √(2ε) ξ), the first draw
    sits at the start."""
    target, mean, sd = linear_gaussian
    start = mean + 20 * sd
    r = helmholtz.infer(target, engine, seed=0, num_warmup=0, num_samples=1, num_chains=3,
                        step_size=1e-12, init_values={"w": start})
    np.testing.assert_allclose(r.samples["w"][:, 0], np.broadcast_to(start, (3, 3)),
                               atol=1e-4)
    r = helmholtz.infer(target, engine, seed=0, num_warmup=0, num_samples=1, num_chains=3,
                        step_size=1e-12, init_values={"w": start}, init_jitter=0.5)
    dev = r.samples["w"][:, 0] - start
    assert np.all(np.abs(dev) < 0.5 + 1e-4) and np.unique(dev[:, 0]).size == 3


def test_nuts_from_far_init_values_matches_the_exact_posterior(linear_gaussian):
    """Chains started 20 posterior sds away (jittered) still give the exact moments, and
    the start changes no compiled function but the one that finds it."""
    target, mean, sd = linear_gaussian
    helmholtz.infer(target, "nuts", seed=11, **SETTINGS)  # compiled by now
    before = TRACE_COUNT["n"]
    result = helmholtz.infer(target, "nuts", seed=12, init_values={"w": mean + 20 * sd},
                             init_jitter=1.0, **SETTINGS)
    assert TRACE_COUNT["n"] - before <= 1  # only the initialisation was traced
    draws = result.samples["w"]
    mcse_mean, mcse_sd = np.array([_mcse_mean_sd(draws[..., i]) for i in range(mean.size)]).T
    w = draws.reshape(-1, mean.size)
    assert np.all(np.abs((w.mean(0) - mean) / mcse_mean) < 4), (w.mean(0) - mean) / mcse_mean
    assert np.all(np.abs((w.std(0) - sd) / mcse_sd) < 4), (w.std(0) - sd) / mcse_sd
    assert result.diagnostics()["max_rhat"] < 1.02
    assert dict(result.config["init_values"])["w"] == pytest.approx(mean + 20 * sd)
