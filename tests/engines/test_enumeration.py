"""A Gaussian mixture written as numpyro users write it, with a discrete assignment site
per observation, runs under ``nuts`` and ``svi``: the assignment is summed out by
numpyro's enumeration, and the draws of the component means match the exact posterior,
computed on a grid."""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

import helmholtz

Y = np.array([-2.6, -1.9, -2.2, -1.1, 1.8, 2.4, 2.1, 3.0, 1.5])
WEIGHTS = np.array([0.4, 0.6])
PRIOR_MEANS = np.array([-2.0, 2.0])  # distinct priors: no label switching
# the component-swapped mode holds e^-16 of the mass but can trap a chain that starts in
# it; mixtures start near the prior's labelling, as numpyro users start them
START = dict(init_values={"mu": PRIOR_MEANS}, init_jitter=0.3)


def mixture(y):
    mu = numpyro.sample("mu", dist.Normal(jnp.asarray(PRIOR_MEANS), 1.0).to_event(1))
    with numpyro.plate("data", y.shape[0]):
        k = numpyro.sample("k", dist.Categorical(jnp.asarray(WEIGHTS)))
        numpyro.sample("y", dist.Normal(mu[k], 0.7), obs=y)


@pytest.fixture(scope="module")
def exact():
    """Posterior means and sds of (mu_0, mu_1) by quadrature on a 2-d grid."""
    grid = np.linspace(-6, 6, 601)
    m0, m1 = np.meshgrid(grid, grid, indexing="ij")
    log_p = norm.logpdf(m0, PRIOR_MEANS[0], 1) + norm.logpdf(m1, PRIOR_MEANS[1], 1)
    comp = np.stack([np.log(WEIGHTS[0]) + norm.logpdf(Y[:, None, None], m0, 0.7),
                     np.log(WEIGHTS[1]) + norm.logpdf(Y[:, None, None], m1, 0.7)])
    log_p = log_p + logsumexp(comp, axis=0).sum(0)
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    mean = np.array([(p * m0).sum(), (p * m1).sum()])
    sd = np.sqrt(np.array([(p * m0**2).sum(), (p * m1**2).sum()]) - mean**2)
    return mean, sd


def test_nuts_on_an_enumerated_mixture_matches_the_grid_posterior(exact):
    import arviz as az

    mean, sd = exact
    r = helmholtz.infer(mixture, "nuts", seed=0, model_args=(Y,), num_warmup=300,
                        num_samples=500, num_chains=2, **START)
    draws = r.samples["mu"]
    assert draws.shape == (2, 500, 2) and "k" not in r.samples
    ess = np.array([float(az.ess(draws[..., i], method="mean")) for i in range(2)])
    z = (draws.reshape(-1, 2).mean(0) - mean) / (sd / np.sqrt(ess))
    assert np.all(np.abs(z) < 5), z
    np.testing.assert_allclose(draws.reshape(-1, 2).std(0), sd, rtol=0.15)


def test_svi_on_an_enumerated_mixture_matches_the_grid_posterior(exact):
    """A mean-field normal guide over the continuous sites: its mean within 0.25
    posterior sds of the exact mean (the guide is approximate)."""
    mean, sd = exact
    r = helmholtz.infer(mixture, "svi", seed=0, model_args=(Y,), num_optimizer_steps=3000,
                        learning_rate=0.03, num_samples=2000, **START)
    got = r.samples["mu"].reshape(-1, 2).mean(0)
    np.testing.assert_array_less(np.abs(got - mean), 0.25 * sd + 5 * sd / np.sqrt(2000))
    assert r.status.ok and np.isfinite(r.free_energy.value)


def test_enumerated_results_convert_to_arviz_without_pointwise_log_likelihood(tmp_path):
    r = helmholtz.infer(mixture, "nuts", seed=1, model_args=(Y,), num_warmup=50,
                        num_samples=50, num_chains=2, **START)
    assert dict(r.log_likelihood) == {}
    loaded = helmholtz.Result.load(r.save(tmp_path / "mix.nc"))
    np.testing.assert_array_equal(loaded.samples["mu"], r.samples["mu"])
