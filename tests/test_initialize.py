"""Starting points: strategies, init_values (numpyro's init_to_value), jitter, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import helmholtz
from helmholtz.errors import InitializationError, OptionError
from helmholtz.initialize import initial_positions, normalize_init_values

KEY = jax.random.key(0)


def two_sites(y=1.0):
    mu = numpyro.sample("mu", dist.Normal(3.0, 0.1))
    s = numpyro.sample("s", dist.LogNormal(1.0, 0.1))
    theta = numpyro.sample("theta", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.sample("y", dist.Normal(mu + theta.sum(), s), obs=y)


def dependent_support():
    """The support of x depends on another latent site: x ~ Uniform(0, scale)."""
    scale = numpyro.sample("scale", dist.HalfNormal(1.0))
    numpyro.sample("x", dist.Uniform(0.0, scale))


@pytest.fixture(scope="module")
def target():
    return helmholtz.Target.from_model(two_sites)


def _site(target, z, name):
    s = next(s for s in target.sites if s.name == name)
    return np.asarray(z)[:, s.offset:s.offset + s.size].reshape((-1,) + s.shape)


def test_given_sites_start_exactly_at_their_unconstrained_values(target):
    z = initial_positions(target, KEY, 5, values={"s": 2.0, "theta": [0.5, -1.5]})
    np.testing.assert_allclose(_site(target, z, "s"), np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(_site(target, z, "theta"), [[0.5, -1.5]] * 5, rtol=1e-6)
    # the other site comes from the default strategy, Uniform(−2, 2), different per chain
    mu = _site(target, z, "mu")
    assert np.all(np.abs(mu) < 2) and np.unique(mu).size == 5
    # and the constrained values are the ones asked for
    np.testing.assert_allclose(target.constrain(z[0])["s"], 2.0, rtol=1e-6)


def test_jitter_spreads_the_given_sites_within_the_radius(target):
    z = initial_positions(target, KEY, 50, values={"s": 2.0, "mu": 3.2}, jitter=0.1)
    for name, centre in (("s", np.log(2.0)), ("mu", 3.2)):
        dev = _site(target, z, name) - centre
        assert np.all(np.abs(dev) <= 0.1 + 1e-6)
        assert dev.std() > 0.04  # Uniform(−0.1, 0.1) has sd 0.058


def test_median_strategy_is_the_prior_median_in_unconstrained_space(target):
    z = np.asarray(initial_positions(target, KEY, 4, "median"))
    assert np.all(z == z[0])  # every chain at the same point
    # medians 3 (Normal(3, 0.1)), log s: 1 (LogNormal(1, 0.1)), 0, 0 (Normal(0, 1)); the
    # sample median of 101 draws has sd ≈ 1.25 σ / √101 = 0.125 σ
    err = np.abs(z[0] - [3.0, 1.0, 0.0, 0.0]) / (0.125 * np.array([0.1, 0.1, 1.0, 1.0]))
    assert np.all(err < 4), err
    jittered = np.asarray(initial_positions(target, KEY, 4, "median", jitter=0.5))
    assert np.all(np.abs(jittered - z) <= 0.5) and np.unique(jittered[:, 0]).size == 4


def test_supports_that_depend_on_other_sites_are_honoured():
    target = helmholtz.Target.from_model(dependent_support)
    z = initial_positions(target, KEY, 20, "prior", values={"x": 0.5})
    for zz in z:
        c = target.constrain(zz)
        assert float(c["scale"]) > 0.5  # points with scale < x were rejected
        np.testing.assert_allclose(c["x"], 0.5, rtol=1e-5)


@pytest.mark.parametrize("values, error, match", [
    ({"sigma": 1.0}, OptionError, r"no latent site 'sigma'; its latent sites are: mu, s, theta"),
    ({"y": 1.0}, OptionError, "no latent site 'y'"),
    ({"theta": [1.0, 2.0, 3.0]}, OptionError, r"shape \(3,\); site 'theta' .* shape \(2,\)"),
    ({"s": -1.0}, OptionError, r"init_values\['s'\] = -1. lies outside the support Positive"),
    ({"s": 0.0}, OptionError, "outside the support"),
    ({"mu": float("nan")}, OptionError, r"init_values\['mu'\] is not finite"),
    ({"mu": "abc"}, OptionError, "must be a number or an array of numbers"),
])
def test_bad_init_values_raise_clear_errors(target, values, error, match):
    with pytest.raises(error, match=match):
        initial_positions(target, KEY, 2, values=values)


def test_value_on_the_boundary_of_a_closed_support_is_refused():
    def model():
        numpyro.sample("p", dist.Uniform(0.0, 1.0))

    with pytest.raises(OptionError, match=r"on the boundary of the support Interval"):
        initial_positions(helmholtz.Target.from_model(model), KEY, 2, values={"p": 1.0})


def test_non_finite_log_density_at_init_values_names_the_term():
    def model(obs=2.0):
        scale = numpyro.sample("scale", dist.HalfNormal(3.0))
        numpyro.sample("obs", dist.Uniform(0.0, scale), obs=obs)

    target = helmholtz.Target.from_model(model, jnp.asarray(2.0))
    with pytest.raises(InitializationError,
                       match=r"NaN or -inf at init_values \(scale; .*Non-finite terms: obs"):
        initial_positions(target, KEY, 2, values={"scale": 1.0})
    z = initial_positions(target, KEY, 2, values={"scale": 2.5})  # inside: fine
    np.testing.assert_allclose(z[:, 0], np.log(2.5), rtol=1e-6)


def test_init_values_option_is_normalised_to_a_hashable_value():
    a = helmholtz.get_engine("nuts", init_values={"w": np.array([1, 2, 3]), "a": 0.5})
    b = helmholtz.get_engine("nuts", init_values={"a": 0.5, "w": jnp.array([1.0, 2.0, 3.0])})
    assert a == b and hash(a) == hash(b)
    assert dict(a.init_values) == {"a": 0.5, "w": (1.0, 2.0, 3.0)}
    # strings as the CLI would pass them: site=value pairs or a JSON object
    for text in ("a=0.5,w=[1,2,3]", '{"w": [1, 2, 3], "a": 0.5}'):
        assert helmholtz.get_engine("svi", init_values=text).init_values == a.init_values
    assert normalize_init_values("nuts", "none") is None
    assert a.replace(num_samples=10).init_values == a.init_values


@pytest.mark.parametrize("engine", ["nuts", "hmc", "mala", "svi", "ti"])
@pytest.mark.parametrize("options, match", [
    ({"init_values": "w=[1,2"}, "cannot read init_values"),
    ({"init_values": 3.0}, "init_values must be a dict"),
    ({"init_jitter": -0.1}, "init_jitter must be a finite number ≥ 0"),
    ({"init_strategy": "middle"}, r"init_strategy must be one of \('uniform', 'prior', 'median'\)"),
])
def test_bad_init_options_raise_option_error(engine, options, match):
    with pytest.raises(OptionError, match=match):
        helmholtz.get_engine(engine, **options)
