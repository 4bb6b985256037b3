"""SVI: exact recovery where the family contains the posterior; guides; the ELBO estimate."""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import helmholtz
from helmholtz.models import get


@pytest.fixture(scope="module")
def linear_gaussian():
    entry = get("linear_gaussian")
    args, kwargs = entry.args(seed=0)
    mean, cov = entry.exact_posterior(*args, **kwargs)["w"]
    return entry.target(seed=0), mean, cov, entry.log_z(seed=0)


@pytest.fixture(scope="module")
def full_rank(linear_gaussian):
    target = linear_gaussian[0]
    return helmholtz.infer(target, "svi", seed=0, guide="mvn", num_steps=4000,
                           learning_rate=0.02, num_samples=20000)


def test_full_rank_recovers_mean_and_covariance(linear_gaussian, full_rank):
    _, mean, cov, _ = linear_gaussian
    w = full_rank.samples["w"].reshape(-1, mean.size)
    n = w.shape[0]
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(w.mean(0) - mean) < 4 * sd / np.sqrt(n) + 0.02 * sd)
    # covariance entries: standard error of a sample covariance is sqrt((s_ii s_jj + s_ij²)/n)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(np.cov(w.T) - cov) < 4 * se_cov + 0.03 * np.abs(cov).max())


def test_full_rank_elbo_matches_log_z(linear_gaussian, full_rank):
    log_z = linear_gaussian[3]
    fe = full_rank.free_energy
    assert fe.kind == "lower bound"
    assert abs(fe.value - (-log_z)) < 0.05, (fe.value, -log_z)
    # a bound: −ELBO ≥ −log Z up to its Monte Carlo error
    assert fe.value > -log_z - 4 * fe.se
    assert 0 < fe.se < 0.05
    assert full_rank.trace["loss"].shape == (4000,)
    # the loss fell: its last hundred steps average below its first hundred
    assert full_rank.trace["loss"][-100:].mean() < full_rank.trace["loss"][:100].mean()


@pytest.mark.parametrize("guide", ["normal", "lowrank", "iaf"])
def test_other_guides_bound_log_z_from_above(guide, linear_gaussian):
    target, _, _, log_z = linear_gaussian
    r = helmholtz.infer(target, "svi", seed=1, guide=guide, num_steps=1500,
                        learning_rate=0.02, num_samples=200, num_elbo_samples=2000)
    # −ELBO = −log Z + KL(q‖p) ≥ −log Z; with a reasonable fit the gap is under 2 nats
    assert -log_z - 4 * r.free_energy.se < r.free_energy.value < -log_z + 2.0


@pytest.mark.parametrize("guide, init_scale", [("normal", None), ("mvn", 0.003)])
def test_guide_starts_at_init_values(guide, init_scale):
    """One step at learning rate 1e-9: the guide is still its initial self, a normal of
    scale ``init_scale`` (numpyro's 0.1 by default) around the unconstrained init values
    (log s for the positive site)."""
    def model(y=None):
        s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        numpyro.sample("y", dist.Normal(mu, s), obs=y)

    target = helmholtz.Target.from_model(model, y=jnp.array([0.3, -0.2]))
    scale = {} if init_scale is None else {"init_scale": init_scale}
    r = helmholtz.infer(target, "svi", seed=0, guide=guide, num_steps=1, learning_rate=1e-9,
                        num_samples=4000, num_elbo_samples=10,
                        init_values={"s": 2.5, "mu": -7.0}, **scale)
    expected = init_scale or 0.1
    log_s, mu = np.log(r.samples["s"].ravel()), r.samples["mu"].ravel()
    se = expected / np.sqrt(log_s.size)
    assert abs(log_s.mean() - np.log(2.5)) < 4 * se and abs(mu.mean() + 7.0) < 4 * se
    # the sd of 4000 normal draws is within 5% of the scale (its relative se is 1.1%)
    for draws in (log_s, mu):
        assert 0.95 * expected < draws.std() < 1.05 * expected


@pytest.mark.parametrize("options, message", [
    ({"init_scale": 0.0}, "option init_scale must be a finite number positive"),
    ({"init_scale": float("nan")}, "option init_scale must be a finite number positive"),
    ({"init_scale": True}, "option init_scale must be a finite number positive"),
    ({"init_scale": 0.01, "guide": "iaf"}, "'iaf' flow has none"),
])
def test_bad_init_scale_is_refused(options, message):
    from helmholtz.errors import OptionError

    with pytest.raises(OptionError, match=message):
        helmholtz.infer("linear_gaussian", "svi", seed=0, num_steps=1, **options)
