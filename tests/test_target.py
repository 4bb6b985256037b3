"""Target: log density against numpyro's own potential, the prior/likelihood split,
reference draws, constrain/unconstrain, params, conditioning and data swaps."""

import functools
import threading

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


# ---------------------------------------------------------------- issue 9 item 5: views


def _counting(model):
    """``model`` wrapped so that each run (each trace) is counted."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return model(*args, **kwargs)

    counted.__name__ = model.__name__
    return counted, calls


def test_one_trace_gives_the_prior_likelihood_split(x64):
    counted, calls = _counting(constrained_model)
    t = Target.from_model(counted, y=Y)
    zs = jax.random.normal(jax.random.key(5), (4, t.dim))
    one = jax.jit(jax.vmap(t.log_prior_and_likelihood))(zs)
    two = jax.jit(jax.vmap(lambda z: (t.log_prior(z), t.log_likelihood(z),
                                      t.log_density(z))))(zs)
    np.testing.assert_allclose(one[0], two[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(one[1], two[1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(one[0] + one[1], two[2], rtol=0, atol=1e-12)
    calls.clear()
    jax.make_jaxpr(t.log_prior_and_likelihood)(zs[0])
    assert len(calls) == 1
    calls.clear()
    jax.make_jaxpr(lambda z: (t.log_prior(z), t.log_likelihood(z)))(zs[0])
    assert len(calls) == 2
    calls.clear()
    jax.make_jaxpr(t.tempered(0.3).log_density)(zs[0])
    assert len(calls) == 1


def test_tempered_view_is_prior_plus_beta_likelihood_and_beta_does_not_retrace(target):
    z = jax.random.normal(jax.random.key(6), (target.dim,))
    prior, lik = target.log_prior(z), target.log_likelihood(z)
    for beta in (0.0, 0.37, 1.0):
        view = target.tempered(beta)
        np.testing.assert_allclose(view.log_density(z), prior + beta * lik, rtol=1e-6)
        np.testing.assert_allclose(view.log_likelihood(z), lik, rtol=1e-6)
        np.testing.assert_allclose(jax.jit(type(view).grad_log_density)(view, z),
                                   jax.jit(jax.grad(lambda x, b: target.log_prior(x)
                                                    + b * target.log_likelihood(x)))(z, beta),
                                   rtol=1e-5)
    assert target.tempered(0.5).dim == target.dim
    np.testing.assert_allclose(target.tempered(0.5).constrain(z)["sigma"],
                               target.constrain(z)["sigma"])
    traces = []

    @jax.jit
    def f(view, z):
        traces.append(1)
        return view.log_density(z)

    values = [float(f(target.tempered(b), z)) for b in (0.1, 0.5, 0.9)]
    assert len(traces) == 1
    np.testing.assert_allclose(values, [float(prior + b * lik) for b in (0.1, 0.5, 0.9)],
                               rtol=1e-5)


def test_bridge_endpoints_and_dimension_check():
    def model_a():
        numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))

    def model_b():
        numpyro.sample("x", dist.StudentT(4.0, 1.0, 2.0).expand([2]).to_event(1))

    a, b = Target.from_model(model_a), Target.from_model(model_b)
    path = helmholtz.target.bridge(a, b)
    z = jnp.array([0.4, -1.3])
    la, lb = a.log_density(z), b.log_density(z)
    prior, lik = path.log_prior_and_likelihood(z)
    np.testing.assert_allclose([prior, lik], [la, lb - la], rtol=1e-6)
    np.testing.assert_allclose(path.tempered(0.0).log_density(z), la, rtol=1e-6)
    np.testing.assert_allclose(path.tempered(1.0).log_density(z), lb, rtol=1e-6)
    np.testing.assert_allclose(path.tempered(0.25).log_density(z), 0.75 * la + 0.25 * lb,
                               rtol=1e-6)
    np.testing.assert_allclose(path.log_density(z), lb, rtol=1e-6)
    assert path.dim == 2
    # a pytree: jit through it; a new bridge of the same pair reuses the compilation
    traces = []

    @jax.jit
    def g(p, beta, z):
        traces.append(1)
        return p.tempered(beta).log_density(z)

    np.testing.assert_allclose(g(path, 0.5, z), 0.5 * (la + lb), rtol=1e-6)
    np.testing.assert_allclose(g(helmholtz.target.bridge(a, b), 0.1, z), 0.9 * la + 0.1 * lb,
                               rtol=1e-6)
    assert len(traces) == 1
    np.testing.assert_allclose(helmholtz.target.bridge(b, a).log_likelihood(z), la - lb,
                               rtol=1e-6)

    def model_c():
        numpyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))

    with pytest.raises(helmholtz.ModelError, match=r"cannot bridge 'model_a' \(dim 2\) and "
                                                   r"'model_c' \(dim 3\)"):
        helmholtz.target.bridge(a, Target.from_model(model_c))


def _param_model(y=None):
    scale = numpyro.param("scale", 2.0, constraint=dist.constraints.positive)
    w = numpyro.param("w", jnp.array([0.2, 0.3, 0.5]), constraint=dist.constraints.simplex)
    x = numpyro.sample("x", dist.Normal(0.0, scale))
    with numpyro.plate("n", 3):
        numpyro.sample("y", dist.Normal(x * w, 1.0), obs=y)


def test_param_sites_constraints_and_log_joint_gradient(x64):
    y = jnp.array([0.5, -0.2, 1.1])
    t = Target.from_model(_param_model, y=y)
    info = {p.name: p for p in t.param_sites}
    assert info["w"].shape == (3,) and info["w"].unconstrained_shape == (2,)
    assert info["scale"].constraint is dist.constraints.positive
    u = t.unconstrain_params(t.params)
    np.testing.assert_allclose(u["scale"], np.log(2.0), rtol=1e-12)
    back = t.constrain_params(u)
    np.testing.assert_allclose(back["w"], [0.2, 0.3, 0.5], rtol=1e-12)
    z = jnp.array([0.8])
    np.testing.assert_allclose(t.log_joint(u, z), t.log_density(z), rtol=1e-12)
    # ∂/∂log s of log N(x; 0, s) = x²/s² − 1 (no Jacobian of θ)
    g = jax.grad(t.log_joint)(u, z)
    np.testing.assert_allclose(g["scale"], 0.8**2 / 2.0**2 - 1.0, rtol=1e-10)
    # and the simplex coordinates against central finite differences
    eps = 1e-6
    for i in range(2):
        e = jnp.zeros(2).at[i].set(eps)
        fd = (t.log_joint({**u, "w": u["w"] + e}, z)
              - t.log_joint({**u, "w": u["w"] - e}, z)) / (2 * eps)
        np.testing.assert_allclose(g["w"][i], fd, rtol=1e-6)
    # a rebuilt Target (new data) keeps the spec equal: constraints compared by value
    assert t.compile_key == t.with_data(y=y + 1.0).compile_key
    with pytest.raises(ValueError, match="unknown param sites"):
        t.log_joint({"loc": 0.0}, z)


def test_jacobian_false_gives_constrained_modes(x64):
    def model():
        numpyro.sample("s", dist.LogNormal(0.3, 0.5))
        numpyro.sample("g", dist.Gamma(3.0, 2.0))
        numpyro.sample("b", dist.Beta(3.0, 5.0))

    def argmax(target):
        grad = jax.jit(jax.grad(target.log_density))
        z = jnp.zeros(target.dim)
        for _ in range(3000):
            z = z + 0.05 * grad(z)
        return target.constrain(z)

    t = Target.from_model(model)
    map_x = argmax(t.without_jacobian())
    # modes of the constrained densities
    np.testing.assert_allclose(map_x["s"], np.exp(0.3 - 0.5**2), rtol=1e-6)
    np.testing.assert_allclose(map_x["g"], (3.0 - 1.0) / 2.0, rtol=1e-6)
    np.testing.assert_allclose(map_x["b"], (3.0 - 1.0) / (3.0 + 5.0 - 2.0), rtol=1e-6)
    # with the Jacobian: modes in log / logit space
    map_z = argmax(t)
    np.testing.assert_allclose(map_z["s"], np.exp(0.3), rtol=1e-6)
    np.testing.assert_allclose(map_z["g"], 3.0 / 2.0, rtol=1e-6)
    np.testing.assert_allclose(map_z["b"], 3.0 / 8.0, rtol=1e-6)
    # the keyword form, a model keyword named `jacobian`, and the compile key
    t2 = Target.from_model(model, jacobian=False)
    assert not t2.jacobian and t2.compile_key != t.compile_key
    assert t2.compile_key == t.without_jacobian().compile_key

    def with_kw(jacobian=1.0):
        numpyro.sample("x", dist.Normal(jacobian, 1.0))

    t3 = Target.from_model(with_kw, model_kwargs={"jacobian": 4.0})
    np.testing.assert_allclose(t3.log_density(jnp.array([4.0])), -0.5 * np.log(2 * np.pi))


def test_plated_constrained_site_counts_its_jacobian_once():
    def model():
        with numpyro.plate("n", 4):
            numpyro.sample("s", dist.LogNormal(0.0, 1.0))

    t = Target.from_model(model)
    z = jnp.array([0.0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(t.log_density(z),
                               -potential_energy(model, (), {}, {"s": z}), rtol=1e-6)
    np.testing.assert_allclose(t.log_density(z), dist.Normal(0, 1).log_prob(z).sum(),
                               rtol=1e-6)


Y_MIX = np.array([-1.2, -0.4, 0.1, 2.2, 2.9, 3.4])


def gmm(y, marked=True):
    w = numpyro.sample("w", dist.Dirichlet(jnp.ones(2)))
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
    with numpyro.plate("n", y.shape[0]):
        infer = {"enumerate": "parallel"} if marked else {}
        k = numpyro.sample("k", dist.Categorical(w), infer=infer)
        numpyro.sample("y", dist.Normal(mu[k], 1.0), obs=y)


def _gmm_by_hand(c):
    w, mu = c["w"], c["mu"]
    prior = dist.Dirichlet(jnp.ones(2)).log_prob(w) + dist.Normal(0, 3).log_prob(mu).sum()
    lik = jax.nn.logsumexp(jnp.log(w) + dist.Normal(mu, 1.0).log_prob(Y_MIX[:, None]), -1)
    return prior, lik.sum()


@pytest.mark.parametrize("marked", [True, False])
def test_enumerated_mixture_marginal_matches_logsumexp_and_numpyro(x64, marked):
    from numpyro.contrib.funsor import config_enumerate, enum
    from numpyro.contrib.funsor import log_density as enum_log_density
    from numpyro.infer.util import potential_energy as numpyro_potential

    t = Target.from_model(gmm, Y_MIX, marked=marked)
    assert t.dim == 1 + 2 and t.enumerated_names == ("k",)
    zs = jax.random.normal(jax.random.key(7), (4, t.dim))
    for z in zs:
        c = t.constrain(z)
        prior, lik = _gmm_by_hand(c)
        jac = float(t.log_density(z) - t.without_jacobian().log_density(z))
        np.testing.assert_allclose(t.log_density(z) - jac, prior + lik, rtol=1e-12)
        ours_prior, ours_lik = t.log_prior_and_likelihood(z)
        np.testing.assert_allclose(ours_lik, lik, rtol=1e-12)
        np.testing.assert_allclose(ours_prior - jac, prior, rtol=1e-12)
        theirs, _ = enum_log_density(enum(config_enumerate(gmm), -2), (Y_MIX,),
                                     {"marked": marked}, c)
        np.testing.assert_allclose(t.without_jacobian().log_density(z), theirs, rtol=1e-12)
        np.testing.assert_allclose(
            t.log_density(z), -numpyro_potential(enum(config_enumerate(gmm), -2), (Y_MIX,),
                                                 {"marked": marked}, t.unravel(z), enum=True),
            rtol=1e-12)
    grad = jax.jit(jax.grad(t.log_density))
    g = grad(zs[0])
    eps = 1e-6
    for i in range(t.dim):
        e = jnp.zeros(t.dim).at[i].set(eps)
        fd = (t.log_density(zs[0] + e) - t.log_density(zs[0] - e)) / (2 * eps)
        np.testing.assert_allclose(g[i], fd, rtol=1e-6)


def test_enumerated_prior_when_a_continuous_site_depends_on_a_discrete_one(x64):
    def model():
        k = numpyro.sample("k", dist.Bernoulli(0.3))
        x = numpyro.sample("x", dist.Normal(3.0 * k, 1.0))
        numpyro.sample("y", dist.Normal(x, 0.5), obs=1.0)

    t = Target.from_model(model)
    for x in (-0.7, 1.4, 3.2):
        z = jnp.array([x])
        prior = jnp.logaddexp(np.log(0.7) + dist.Normal(0.0, 1.0).log_prob(x),
                              np.log(0.3) + dist.Normal(3.0, 1.0).log_prob(x))
        lp, ll = t.log_prior_and_likelihood(z)
        np.testing.assert_allclose(lp, prior, rtol=1e-12)
        np.testing.assert_allclose(ll, dist.Normal(x, 0.5).log_prob(1.0), rtol=1e-12)


def test_sample_discrete_draws_the_conditional_posterior(x64):
    t = Target.from_model(gmm, Y_MIX)
    z = t.unconstrain({"w": jnp.array([0.4, 0.6]), "mu": jnp.array([-0.5, 3.0])})
    logits = jnp.log(jnp.array([0.4, 0.6])) + dist.Normal(jnp.array([-0.5, 3.0]),
                                                          1.0).log_prob(Y_MIX[:, None])
    p1 = jax.nn.softmax(logits, -1)[:, 1]
    n = 2000
    ks = jax.jit(jax.vmap(lambda key: t.sample_discrete(key, z)["k"]))(
        jax.random.split(jax.random.key(8), n))
    freq = np.asarray(ks).mean(0)
    se = np.sqrt(np.asarray(p1) * (1 - np.asarray(p1)) / n) + 1e-3
    assert np.all(np.abs(freq - p1) < 4 * se), (freq, p1)


def test_discrete_sites_that_cannot_be_enumerated_are_named():
    def poisson():
        n = numpyro.sample("n_events", dist.Poisson(3.0))
        numpyro.sample("x", dist.Normal(n, 1.0))

    def sequential():
        numpyro.sample("k", dist.Bernoulli(0.5), infer={"enumerate": "sequential"})
        numpyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(helmholtz.ModelError,
                       match=r"discrete latent site 'n_events' \(Poisson\) with infinite "
                             r"support.*Categorical over a finite range"):
        Target.from_model(poisson)
    with pytest.raises(helmholtz.ModelError, match="'k' is marked enumerate='sequential'"):
        Target.from_model(sequential)


def test_improper_reference_error_names_the_site():
    def model():
        numpyro.sample("a", dist.Normal(0.0, 1.0))
        numpyro.sample("flat", dist.ImproperUniform(dist.constraints.positive, (), ()))

    t = Target.from_model(model)
    with pytest.raises(helmholtz.ModelError, match=r"no proper reference.*\['flat'\]"):
        t.sample_reference(jax.random.key(0))


def test_simulate_passes_the_exact_sample_to_the_constructor():
    X, y = classic.linear_gaussian_data(0)
    target = Target.from_model(classic.linear_gaussian, X, y=y)
    assert target.exact_sample is None
    sim, z_true = target.simulate(jax.random.key(3))
    assert sim.exact_sample is z_true
    # host-side only: not a pytree leaf, and gone after a round trip or a data swap
    assert not any(leaf is z_true for leaf in jax.tree_util.tree_leaves(sim))
    assert jax.tree_util.tree_map(lambda x: x, sim).exact_sample is None
    assert sim.with_params({}).exact_sample is None


def test_observed_data_are_the_data_and_a_computed_observation_is_traced():
    """Data given to the model come back as they are (read from an abstract trace); an
    observed value the model computes from a latent draw is what an eager trace of the
    model (key 0, as before) gives it, not a placeholder."""
    def model(x, y):
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(x, s), obs=y)
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.sample("w", dist.Normal(0.0, 1.0), obs=2.0 * z + 1.0)

    x = np.linspace(0.0, 1.0, 5)
    y = x**2 - 0.3
    observed = Target.from_model(model, x, y).observed_data()
    np.testing.assert_array_equal(observed["y"], jnp.asarray(y))  # float32 unless x64
    eager = numpyro.handlers.trace(numpyro.handlers.seed(model, jax.random.key(0))).get_trace(x, y)
    assert observed["w"] == pytest.approx(float(eager["w"]["value"]))
    assert observed["w"] != 1.0  # the latent draw is in it


_COMPILES: list = []  # [thread id, count] while a test listens (jax.monitoring events)


def _count_compile(event, *_, **__):
    # counted on the test's own thread only: a compile worker of an earlier test's run
    # may still be compiling a program it was given
    if (event == "/jax/core/compile/backend_compile_duration" and _COMPILES
            and _COMPILES[0] == threading.get_ident()):
        _COMPILES[1] += 1


@functools.lru_cache
def _cached_grid(n):
    return jnp.linspace(0.0, 1.0, n)


def test_the_prototype_trace_compiles_what_depends_on_draws_never():
    """The model's layout is read from a trace with an abstract key, so building a Target
    compiles none of the model's operations on draws (an eager trace compiles one program
    per primitive: 14, about 0.5 s in a fresh process, for a ten-line regression; what
    is left are scalar conversions of constants). A model that branches on a drawn value
    gets the eager trace, and the same layout and density as the model without the
    branch. Shapes no other test uses, so no program is cached from before."""
    x = np.linspace(-1.0, 1.0, 37 * 3).reshape(37, 3)

    def regression(x, y):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(x @ w, s), obs=y)

    def branching(x, y):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        loc = x @ w if float(s) > 0 else -(x @ w)  # needs a concrete draw
        numpyro.sample("y", dist.Normal(loc, s), obs=y)

    jax.monitoring.register_event_duration_secs_listener(_count_compile)
    _COMPILES[:] = [threading.get_ident(), 0]
    try:
        abstract = Target.from_model(regression, x, x[:, 0])
        compiles_abstract = _COMPILES[1]
        eager = Target.from_model(branching, x, x[:, 0])
        compiles_eager = _COMPILES[1] - compiles_abstract
    finally:
        _COMPILES.clear()
    assert compiles_abstract <= 2  # Uniform(-2, 2)'s bounds cast, where not yet cached
    assert compiles_eager >= 6  # the eager fallback ran: matmul, the draws, ...
    assert [(s.name, s.shape) for s in eager.sites] == [(s.name, s.shape)
                                                        for s in abstract.sites]
    z = jnp.array([0.3, -0.2, 0.5, 0.1])
    np.testing.assert_allclose(eager.log_density(z), abstract.log_density(z), rtol=1e-6)


def test_a_value_the_model_caches_from_constants_is_concrete():
    """What a model computes from constants alone is evaluated while its sites are found,
    as in numpyro's eager first trace: a grid cached on the model's first call holds an
    array, not a tracer of that trace, and the density equals the one with the grid
    given as data."""
    y = np.linspace(0.0, 2.0, 41)

    def cached(y):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(a * _cached_grid(41), 1.0), obs=y)

    def given(grid, y):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(a * grid, 1.0), obs=y)

    t = Target.from_model(cached, y)
    assert not isinstance(_cached_grid(41), jax.core.Tracer)
    z = jnp.array([0.7])
    reference = Target.from_model(given, np.linspace(0.0, 1.0, 41), y).log_density(z)
    np.testing.assert_allclose(t.log_density(z), reference, rtol=1e-6)
