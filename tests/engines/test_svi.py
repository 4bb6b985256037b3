"""SVI: exact recovery where the family contains the posterior; guides; the ELBO estimate."""

import numpy as np
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
