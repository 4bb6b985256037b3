"""Target: log density against numpyro's own potential, the prior/likelihood split,
reference draws, constrain/unconstrain, params, conditioning and data swaps."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import potential_energy

import helmholtz
from helmholtz import Target
from helmholtz.models import classic


def constrained_model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.LogNormal(0.0, 0.5))
    p = numpyro.sample("p", dist.Beta(2.0, 3.0))
    simplex = numpyro.sample("simplex", dist.Dirichlet(jnp.ones(3)))
    numpyro.deterministic("scale2", sigma**2)
    with numpyro.plate("n", 5):
        numpyro.sample("y", dist.Normal(mu + p * simplex[0], sigma), obs=y)


Y = np.array([0.3, -1.2, 0.8, 2.0, 0.1])


@pytest.fixture(scope="module")
def target():
    return Target.from_model(constrained_model, y=Y)


def test_layout(target):
    # simplex of 3 lives in 2 unconstrained coordinates
    assert target.dim == 1 + 1 + 1 + 2
    assert [s.name for s in target.sites] == ["mu", "sigma", "p", "simplex"]
    assert target.observed_names == ("y",)


def test_log_density_matches_numpyro_potential(target):
    """An independent code path: numpyro's potential_energy on the same unconstrained point."""
    zs = jax.random.normal(jax.random.key(1), (5, target.dim))
    for z in zs:
        ours = target.log_density(z)
        theirs = -potential_energy(constrained_model, (), {"y": Y}, target.unravel(z))
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(target.log_prior(z) + target.log_likelihood(z), ours,
                                   rtol=1e-5, atol=1e-4)


def test_likelihood_part_is_the_observation_density(target):
    z = jax.random.normal(jax.random.key(2), (target.dim,))
    c = target.constrain(z)
    expected = dist.Normal(c["mu"] + c["p"] * c["simplex"][0], c["sigma"]).log_prob(Y).sum()
    np.testing.assert_allclose(target.log_likelihood(z), expected, rtol=1e-5)
    np.testing.assert_allclose(target.pointwise_log_likelihood(z)["y"],
                               dist.Normal(c["mu"] + c["p"] * c["simplex"][0],
                                           c["sigma"]).log_prob(Y), rtol=1e-5)
    np.testing.assert_allclose(c["scale2"], c["sigma"] ** 2, rtol=1e-6)


def test_constrain_unconstrain_round_trip(target):
    z = jax.random.normal(jax.random.key(3), (target.dim,))
    c = target.constrain(z)
    assert 0 < float(c["p"]) < 1 and float(c["sigma"]) > 0
    np.testing.assert_allclose(float(jnp.sum(c["simplex"])), 1.0, rtol=1e-6)
    np.testing.assert_allclose(target.unconstrain(c), z, rtol=1e-4, atol=1e-5)


def test_reference_draws_follow_the_prior(target):
    n = 4000
    z = jax.jit(lambda k: target.sample_reference(k, n))(jax.random.key(4))
    c = jax.jit(jax.vmap(target.constrain))(z)
    # Beta(2, 3): mean 0.4, sd 0.2; Normal(0, 2): mean 0, sd 2  (4 standard errors)
    assert abs(float(c["p"].mean()) - 0.4) < 4 * 0.2 / np.sqrt(n)
    assert abs(float(c["mu"].mean())) < 4 * 2.0 / np.sqrt(n)
    assert abs(float(c["mu"].std()) - 2.0) < 4 * 2.0 / np.sqrt(2 * n)


def test_params_are_held_and_can_be_set():
    def model(y=None):
        loc = numpyro.param("loc", 1.5)
        x = numpyro.sample("x", dist.Normal(loc, 1.0))
        numpyro.sample("y", dist.Normal(x, 1.0), obs=y)

    t = Target.from_model(model, y=0.0)
    assert t.dim == 1 and t.params == {"loc": 1.5}
    z = jnp.array([0.7])
    expected = dist.Normal(1.5, 1.0).log_prob(0.7) + dist.Normal(0.7, 1.0).log_prob(0.0)
    np.testing.assert_allclose(t.log_density(z), expected, rtol=1e-6)
    t2 = t.with_params({"loc": -1.0})
    expected2 = dist.Normal(-1.0, 1.0).log_prob(0.7) + dist.Normal(0.7, 1.0).log_prob(0.0)
    np.testing.assert_allclose(t2.log_density(z), expected2, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown param sites"):
        t.with_params({"scale": 2.0})


def test_condition_moves_a_site_to_the_likelihood():
    def model():
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        numpyro.sample("b", dist.Normal(a, 1.0))

    t = Target.from_model(model)
    assert t.dim == 2
    tc = t.condition({"b": 1.0})
    assert tc.dim == 1 and tc.observed_names == ("b",)
    z = jnp.array([0.3])
    np.testing.assert_allclose(tc.log_likelihood(z), dist.Normal(0.3, 1.0).log_prob(1.0),
                               rtol=1e-6)


def test_with_data_keeps_structure_and_exact_log_z():
    args, kwargs = helmholtz.models.get("linear_gaussian").args(seed=0)
    t = Target.from_model(classic.linear_gaussian, *args, **kwargs)
    t2 = t.with_data(args[0], y=kwargs["y"] + 1.0)
    assert t.compile_key == t2.compile_key
    assert t.log_z == pytest.approx(classic.linear_gaussian_log_z(*args, **kwargs))
    assert t2.log_z == pytest.approx(classic.linear_gaussian_log_z(args[0], y=kwargs["y"] + 1))
    assert t2.log_z != pytest.approx(t.log_z)


def test_boltzmann_joint_is_exp_minus_u_over_kt():
    energy = lambda x: 0.5 * jnp.sum(x**2) + jnp.sum(x**4)
    base = dist.Normal(0.0, 3.0).expand([2]).to_event(1)
    t = Target.from_model(helmholtz.boltzmann(energy, base, temperature=2.0))
    x = jnp.array([0.4, -1.1])
    np.testing.assert_allclose(t.log_density(x), -energy(x) / 2.0, rtol=1e-6)
    np.testing.assert_allclose(t.log_prior(x), base.log_prob(x), rtol=1e-6)


def test_model_that_raises_while_tracing_names_the_model():
    def broken(y=None):
        x = numpyro.sample("x", dist.Normal(0, 1))
        numpyro.sample("y", dist.Normal(x, 1), obs=y)
        raise RuntimeError("boom")

    with pytest.raises(helmholtz.ModelError, match="model 'broken' raised RuntimeError.*boom"):
        Target.from_model(broken)


def test_discrete_latent_and_empty_models_are_rejected():
    def discrete():
        numpyro.sample("k", dist.Poisson(3.0))

    def empty():
        numpyro.deterministic("c", jnp.ones(2))

    with pytest.raises(helmholtz.ModelError, match="discrete latent site 'k'"):
        Target.from_model(discrete)
    with pytest.raises(helmholtz.ModelError, match="no latent sample sites"):
        Target.from_model(empty)


def test_improper_prior_has_no_reference():
    def improper():
        numpyro.sample("x", dist.ImproperUniform(dist.constraints.real, (), ()))

    t = Target.from_model(improper)
    with pytest.raises(helmholtz.ModelError, match="no proper reference"):
        t.sample_reference(jax.random.key(0))


def test_simulated_data_come_with_an_exact_posterior_draw():
    # z* drawn from the prior and y* ~ p(y | z*) make z* an exact draw of p(z | y*): whitened
    # by the exact posterior of the simulated y*, the z* over many data sets are N(0, I)
    X, y = classic.linear_gaussian_data(0)
    target = Target.from_model(classic.linear_gaussian, X, y=y)
    white = []
    for i in range(150):
        sim, z_true = target.simulate(jax.random.key(i))
        assert sim.exact_sample is z_true and sim.log_z is None
        mean, cov = classic.linear_gaussian_posterior(X, np.asarray(sim.observed["y"]))["w"]
        white.append(np.linalg.solve(np.linalg.cholesky(cov), np.asarray(z_true) - mean))
    white = np.asarray(white)
    n = len(white)
    assert np.all(np.abs(white.mean(0)) < 4 / np.sqrt(n)), white.mean(0)
    assert np.all(np.abs(white.var(0) - 1) < 4 * np.sqrt(2 / n)), white.var(0)
    # the simulated Target scores the simulated data, not the original ones
    sim, z_true = target.simulate(jax.random.key(0))
    resid = np.asarray(sim.observed["y"]) - X @ np.asarray(z_true)
    expected = float(np.sum(-0.5 * (resid / 0.5) ** 2 - np.log(0.5) - 0.5 * np.log(2 * np.pi)))
    assert float(sim.log_likelihood(z_true)) == pytest.approx(expected, rel=1e-5)


def test_simulate_needs_observed_sample_sites():
    with pytest.raises(helmholtz.errors.ModelError, match="no observed sites"):
        helmholtz.models.get("funnel").target().simulate(jax.random.key(0))
    with pytest.raises(helmholtz.errors.ModelError, match="no observed sites"):
        helmholtz.models.get("double_well").target().simulate(jax.random.key(0))  # a factor

    def with_factor():
        w = numpyro.sample("w", dist.Normal())
        numpyro.sample("y", dist.Normal(w, 1.0), obs=1.0)
        numpyro.factor("penalty", -w**2)

    with pytest.raises(helmholtz.errors.ModelError, match="factor terms"):
        Target.from_model(with_factor).simulate(jax.random.key(0))
