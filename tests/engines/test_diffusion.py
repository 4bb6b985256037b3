"""Diffusion samplers (pis, dds, cmcd, asbs): log Z with bounds against exact values,
moments and mode weights within Monte Carlo error, a trained sampler that draws again
after save/load, checkpointed training, and clear failures."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest

import helmholtz
from helmholtz.boltzmann import boltzmann
from helmholtz.diagnostics import mode_weights
from helmholtz.errors import InitializationError, ModelError, OptionError
from helmholtz.models import get
from helmholtz.result import Result

ENGINES = ("pis", "dds", "cmcd", "asbs")
# small problems: 2-d targets, 32 time steps, 128 paths per step
OPTIONS = {"num_steps": 32, "num_gradient_samples": 128, "num_optimizer_steps": 400,
           "num_samples": 2000, "num_eubo_samples": 1000, "learning_rate": 5e-3,
           "hidden_dim": 32}
PER_ENGINE = {"asbs": {"num_optimizer_steps": 800, "stage_steps": 200}}

MIXTURE_MEANS = np.array([[-3.0, 0.0], [3.0, 1.0]])
MIXTURE_WEIGHTS = np.array([0.25, 0.75])
MIXTURE_SCALE = 0.6


def gaussian_mixture(means, weights, scale, base_scale):
    """A 2-d Gaussian mixture as a Boltzmann model (log Z = 0) with exact draws."""
    means, weights = np.asarray(means), np.asarray(weights)

    def energy(x):
        sq = jnp.sum((x[None, :] - jnp.asarray(means)) ** 2, axis=-1)
        log_comp = (jnp.log(jnp.asarray(weights)) - 0.5 * sq / scale**2
                    - 2 * math.log(scale) - math.log(2 * math.pi))
        return -jax.scipy.special.logsumexp(log_comp)

    def sampler(rng_key, num):
        k1, k2 = jax.random.split(rng_key)
        comp = jax.random.choice(k1, len(weights), (num,), p=jnp.asarray(weights))
        return {"x": jnp.asarray(means)[comp] + scale * jax.random.normal(k2, (num, 2))}

    model = boltzmann(energy, dist.Normal(0.0, base_scale).expand([2]).to_event(1),
                      log_z=0.0)
    model.exact_sampler = sampler
    return model


mixture = gaussian_mixture(MIXTURE_MEANS, MIXTURE_WEIGHTS, MIXTURE_SCALE, 4.0)


def _run(target, engine, seed=0, **extra):
    return helmholtz.infer(target, engine, seed=seed,
                           **{**OPTIONS, **PER_ENGINE.get(engine, {}), **extra})


@pytest.fixture(scope="module")
def gaussian():
    target = get("gaussian_2d").target()
    return target, {e: _run(target, e) for e in ENGINES}


@pytest.fixture(scope="module")
def bimodal():
    target = helmholtz.Target.from_model(mixture)
    return target, {e: _run(target, e) for e in ENGINES}


@pytest.mark.parametrize("engine", ENGINES)
def test_log_z_with_bounds_on_a_correlated_gaussian(gaussian, engine):
    target, results = gaussian
    r = results[engine]
    assert r.status.ok, r.status
    est = r.estimates
    log_z = target.log_z
    is_err = est["is"].log_z - log_z
    assert abs(is_err) < 3 * est["is"].se and abs(is_err) < 0.05, (is_err, est["is"].se)
    assert est["elbo"].log_z + 3 * est["elbo"].se < log_z, est["elbo"]
    assert est["eubo"].log_z - 3 * est["eubo"].se > log_z, est["eubo"]
    assert r.free_energy is est["is"]
    # the training trace: loss, ELBO and ESS per iteration, the ELBO improving
    elbo = r.trace["elbo"]
    assert elbo.shape == (r.config["num_optimizer_steps"],) and "ess" in r.trace
    assert elbo[-50:].mean() > elbo[:10].mean() + 1.0


@pytest.mark.parametrize("engine", ENGINES)
def test_weighted_moments_on_a_correlated_gaussian(gaussian, engine):
    target, results = gaussian
    r = results[engine]
    mean, cov = (np.asarray(a) for a in get("gaussian_2d").exact_posterior()["x"])
    x = r.samples["x"][0]
    lw = r.log_weights[0]
    w = np.exp(lw - lw.max())
    w /= w.sum()
    ess = 1 / np.sum(w**2)
    m = w @ x
    c = (w[:, None] * (x - m)).T @ (x - m)
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(m - mean) < 4 * sd / np.sqrt(ess)), (m, mean, ess)
    band = 4 * np.sqrt((np.outer(sd**2, sd**2) + cov**2) / ess)
    assert np.all(np.abs(c - cov) < band), (c, cov, ess)


@pytest.mark.parametrize("engine", ENGINES)
def test_every_mode_of_an_unequal_mixture_is_found_with_its_weight(bimodal, engine):
    target, results = bimodal
    r = results[engine]
    x = r.samples["x"][0]
    raw = mode_weights(x, MIXTURE_MEANS)
    assert np.all(raw * len(x) >= 10), raw  # every mode receives samples
    weighted = mode_weights(x, MIXTURE_MEANS, r.log_weights[0])
    np.testing.assert_allclose(weighted, MIXTURE_WEIGHTS, atol=0.05)
    is_err = r.estimates["is"].log_z - target.log_z
    assert abs(is_err) < max(3 * r.estimates["is"].se, 0.02), r.estimates["is"]
    assert r.estimates["eubo"].log_z + 3 * r.estimates["eubo"].se > target.log_z


def test_a_lost_mode_is_flagged_by_the_reverse_estimate():
    """A sampler that never reaches a far mode (weight 1/4, 12 sd away): its forward
    weights look healthy, log Ẑ is about log(3/4) low, and only exact draws run
    backwards reveal it. (The untrained PIS: its paths end in N(0, 1.2²).)"""
    far = gaussian_mixture([[0.0, 0.0], [12.0, 0.0]], [0.75, 0.25], 1.0, 8.0)
    target = helmholtz.Target.from_model(far)
    r = helmholtz.infer(target, "pis", seed=0, reference_scale=1.2,
                        **dict(OPTIONS, num_optimizer_steps=1, learning_rate=1e-9))
    fe = r.estimates["is"]
    assert abs(fe.log_z - math.log(0.75)) < 0.15, fe  # the right mode alone
    assert "misses target mass" in fe.warning and r.status.code == "unreliable"
    assert r.estimates["reverse_is"].log_z > target.log_z


@pytest.mark.parametrize("engine", ENGINES)
def test_path_weights_are_exact_for_any_control(engine):
    """Untrained samplers with random (nonzero) controls: E_Q[w] = Z within Monte Carlo
    error. (Backwards, E_P[1/w] = 1/Z holds too, but 1/w has infinite variance wherever
    the sampler is broader than the target, so the EUBO is checked on trained samplers.)"""
    target = get("gaussian_2d").target()
    sampler = helmholtz.get_engine(engine, num_steps=8, hidden_dim=8)
    params = sampler.init_params(jax.random.key(0), target)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [x + 0.02 * jax.random.normal(k, x.shape, x.dtype)
             for x, k in zip(leaves, keys, strict=True)]
    fixed = {k: params[k] for k in ("scale", "log_step") if k in params}
    params = {**jax.tree_util.tree_unflatten(treedef, noisy), **fixed}
    draw = jax.jit(lambda p, k: sampler.simulate(p, k, target, 20_000, detach=True))
    log_w = np.asarray(draw(params, jax.random.key(2)).log_weight, np.float64)
    zero = {**jax.tree_util.tree_map(jnp.zeros_like, params), **fixed}
    log_w0 = np.asarray(draw(zero, jax.random.key(2)).log_weight, np.float64)
    assert np.std(log_w - log_w0) > 0.1  # the control does change the weights
    top = log_w.max()
    w = np.exp(log_w - top)
    estimate = top + np.log(w.mean())
    se = w.std() / w.mean() / np.sqrt(w.size)
    assert w.sum() ** 2 / np.sum(w**2) > 300  # enough weight for the se to hold
    assert abs(estimate - target.log_z) < 4 * se + 0.01, (estimate, se)


def test_a_saved_trained_sampler_draws_the_same_again(gaussian, tmp_path):
    target, results = gaussian
    for engine in ("dds", "cmcd", "asbs"):
        r = results[engine]
        first = r.fitted.sample(jax.random.key(5), 64)
        again = r.fitted.sample(jax.random.key(5), 64)
        np.testing.assert_array_equal(first["x"], again["x"])
        path = tmp_path / f"{engine}.nc"
        r.save(path)
        loaded = Result.load(path, target=target)
        drawn = loaded.fitted.sample(jax.random.key(5), 64)
        np.testing.assert_array_equal(first["x"], drawn["x"])
        np.testing.assert_array_equal(first["log_weight"], drawn["log_weight"])
        # the fresh draws are the trained sampler's: their IS estimate agrees
        fresh = loaded.fitted.sample(jax.random.key(6), 2000)["log_weight"]
        log_z = np.log(np.mean(np.exp(fresh - fresh.max()))) + fresh.max()
        assert abs(log_z - target.log_z) < 0.1


def test_interrupted_training_resumes_to_the_same_parameters(tmp_path, interrupted):
    target = get("gaussian_2d").target()
    options = dict(OPTIONS, num_optimizer_steps=200, num_samples=100)
    full = helmholtz.infer(target, "pis", seed=3, checkpoint=str(tmp_path / "a.ckpt"),
                           **options)
    # the start, then 3 of the training's 10 chunks
    interrupted(5, lambda: helmholtz.infer(target, "pis", seed=3,
                                           checkpoint=str(tmp_path / "b.ckpt"), **options))
    saved = helmholtz.Checkpoint(tmp_path / "b.ckpt").open(
        helmholtz.get_engine("pis", **options), target, jax.random.key(3))
    assert saved.phase == 0 and 0 < saved.done < 200, (saved.phase, saved.done)
    resumed = helmholtz.infer(target, "pis", seed=3, checkpoint=str(tmp_path / "b.ckpt"),
                              **options)
    for a, b in zip(jax.tree_util.tree_leaves(full.fitted.params),
                    jax.tree_util.tree_leaves(resumed.fitted.params), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(full.trace["loss"], resumed.trace["loss"])


def _poisoned_adam(step, factor=jnp.nan):
    adam = optax.adam(1e-3)

    def init(params):
        return (adam.init(params), jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        inner, count = state
        updates, inner = adam.update(updates, inner, params)
        bad = jnp.where(count == step, factor, 1.0)
        return jax.tree_util.tree_map(lambda u: u * bad, updates), (inner, count + 1)

    return optax.GradientTransformation(init, update)


def test_a_nan_during_training_stops_at_the_last_good_parameters():
    target = get("gaussian_2d").target()
    r = helmholtz.infer(target, "dds", seed=0, optimizer=_poisoned_adam(40),
                        **dict(OPTIONS, num_optimizer_steps=100, num_samples=200))
    assert r.status.code == "nan" and "step 40" in r.status.message
    assert all(np.all(np.isfinite(np.asarray(v)))
               for v in jax.tree_util.tree_leaves(r.fitted.params))
    assert np.all(np.isfinite(r.log_weights))


def test_exploding_weights_stop_training_at_the_last_good_parameters():
    target = get("gaussian_2d").target()
    options = dict(OPTIONS, num_optimizer_steps=100, num_samples=2000)
    # step 40's update is 1000 times too large: finite parameters, a runaway drift
    r = helmholtz.infer(target, "dds", seed=0, optimizer=_poisoned_adam(40, 1e3), **options)
    assert r.status.code == "diverged" and "step 41" in r.status.message, r.status
    elbo = r.trace["elbo"]
    assert elbo[41] < -1e3 and np.all(elbo[:41] > -30)
    # training went back to the parameters before that update, and stayed there
    assert np.all(elbo[42:] > -30)
    assert all(np.all(np.isfinite(np.asarray(v)))
               for v in jax.tree_util.tree_leaves(r.fitted.params))
    fe = r.estimates["is"]
    assert abs(fe.log_z - target.log_z) < 4 * fe.se + 0.02, fe


def _improper():
    numpyro.sample("x", dist.ImproperUniform(dist.constraints.real_vector, (), (2,)))


def _bad_score():
    x = numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.factor("f", jnp.sum(jnp.sqrt(jnp.abs(x)) * 0.0 + jnp.where(x > 0, jnp.sqrt(x),
                                                                         jnp.nan)))


def test_bad_input_gives_clear_errors():
    with pytest.raises(OptionError, match="unknown objective"):
        helmholtz.infer(get("gaussian_2d").target(), "pis", objective="elbo")
    with pytest.raises(OptionError, match="num_gradient_samples"):
        helmholtz.infer(get("gaussian_2d").target(), "dds", num_gradient_samples=1)
    with pytest.raises(ModelError, match="no proper reference"):
        helmholtz.infer(helmholtz.Target.from_model(_improper), "pis")
    with pytest.raises(InitializationError, match="not finite at"):
        helmholtz.infer(helmholtz.Target.from_model(_bad_score), "cmcd")


def test_float64_on_request(x64):
    target = get("gaussian_2d").target()
    r = helmholtz.infer(target, "pis", seed=0, dtype="float64",
                        **dict(OPTIONS, num_optimizer_steps=100, num_samples=1000))
    assert all(np.asarray(v).dtype == np.float64
               for v in jax.tree_util.tree_leaves(r.fitted.params))
    fe = r.estimates["is"]
    assert abs(fe.log_z - target.log_z) < 4 * fe.se, fe


def test_float64_without_x64_is_refused():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(OptionError, match="jax_enable_x64"):
            helmholtz.infer(get("gaussian_2d").target(), "dds", dtype="float64")
    finally:
        jax.config.update("jax_enable_x64", previous)
