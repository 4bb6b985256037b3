"""Path measures: Girsanov ratio, Euler–Maruyama's weak order, splitting integrators, and
a discretised path as a numpyro model sampled by NUTS against its exact law."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helmholtz
from helmholtz.paths import (
    SDE,
    euler_maruyama,
    girsanov_log_ratio,
    ornstein_uhlenbeck,
    path_log_density,
    path_model,
    underdamped_langevin,
)


def _nonlinear_sde(ts):
    return SDE(lambda t, x: -x + jnp.sin(3 * x) * (1 + t), lambda t: 0.7 + 0.3 * t,
               jnp.asarray(ts))


def test_girsanov_log_ratio_is_the_difference_of_the_two_path_log_densities(x64):
    ts = np.linspace(0.0, 1.5, 41)
    base = _nonlinear_sde(ts)
    control = lambda t, x: jnp.tanh(x[::-1]) * jnp.cos(2 * t) - 0.5 * x
    g = lambda t: 0.7 + 0.3 * t
    controlled = SDE(lambda t, x: base.drift_fn(t, x) + g(t) * control(t, x), g,
                     jnp.asarray(ts))
    keys = jax.random.split(jax.random.key(0), 8)
    x0 = jnp.array([0.3, -1.2, 2.0])
    for sde in (base, controlled):  # paths of either measure
        for key in keys:
            path = euler_maruyama(key, sde, x0)
            direct = path_log_density(controlled, path) - path_log_density(base, path)
            ratio = girsanov_log_ratio(control, base, path)
            assert abs(float(ratio)) > 1e-3
            np.testing.assert_allclose(float(ratio), float(direct), rtol=1e-10, atol=1e-10)


def test_euler_maruyama_has_weak_order_one_on_ornstein_uhlenbeck(x64):
    theta, sigma, x0, horizon = 1.5, 0.8, 1.0, 1.0
    exact_mean = x0 * math.exp(-theta * horizon)
    exact_second = exact_mean**2 + sigma**2 / (2 * theta) * (1 - math.exp(-2 * theta * horizon))
    num_paths, finest = 400_000, 64
    fine = jax.random.normal(jax.random.key(1), (num_paths, finest))
    errors, steps = [], [4, 8, 16, 32]
    for k in steps:
        sde = ornstein_uhlenbeck(theta, sigma, np.linspace(0, horizon, k + 1))
        # common random numbers: the coarse increments are sums of the fine ones
        noise = fine.reshape(num_paths, k, finest // k).sum(-1) / math.sqrt(finest // k)
        run = jax.jit(jax.vmap(lambda e, sde=sde: euler_maruyama(None, sde, jnp.array(
            [x0]), noise=e[:, None])[-1, 0]))
        x_end = run(noise)
        errors.append(abs(float(jnp.mean(x_end)) - exact_mean)
                      + abs(float(jnp.mean(x_end**2)) - exact_second))
    slope = np.polyfit(np.log(horizon / np.array(steps)), np.log(errors), 1)[0]
    assert 0.85 < slope < 1.15, (errors, slope)


def test_euler_maruyama_matches_the_hand_written_recursion(x64):
    sde = ornstein_uhlenbeck(1.5, 0.8, np.linspace(0, 1, 11))
    key = jax.random.key(3)
    path = euler_maruyama(key, sde, jnp.array([1.0]))
    eps = jax.random.normal(key, (10, 1))
    x, expected = jnp.array([1.0]), [1.0]
    for e in eps:
        x = x - 1.5 * x * 0.1 + 0.8 * math.sqrt(0.1) * e
        expected.append(float(x[0]))
    np.testing.assert_allclose(np.asarray(path)[:, 0], expected, rtol=1e-12)


@pytest.mark.parametrize(("scheme", "shrink"), [("baoab", 0.0), ("obabo", 1.0)])
def test_underdamped_splittings_sample_the_harmonic_oscillator_as_predicted(scheme, shrink):
    # BAOAB samples a harmonic oscillator's positions exactly (Var x = kT) at any stable
    # step; OBABO samples velocity Verlet's shadow law, Var x = kT / (1 − h²/4)
    # (Leimkuhler & Matthews 2013, §4).
    h, kT, chains = 0.8, 2.0, 4000
    keys = jax.random.split(jax.random.key(4), chains)
    run = jax.jit(jax.vmap(lambda k: underdamped_langevin(
        k, lambda x: 0.5 * jnp.sum(x**2), jnp.zeros(1), jnp.zeros(1), step_size=h,
        num_steps=300, friction=1.0, temperature=kT, scheme=scheme).positions[-1, 0]))
    x = np.asarray(run(keys))
    expected = kT / (1 - shrink * h**2 / 4)
    se = expected * math.sqrt(2 / chains)
    assert abs(x.var() - expected) < 4 * se, (x.var(), expected)


def test_a_path_measure_with_a_terminal_factor_is_a_model_nuts_samples_exactly():
    theta, sigma, k = 1.0, 0.9, 6
    ts = np.linspace(0.0, 1.2, k + 1)
    sde = ornstein_uhlenbeck(theta, sigma, ts)
    target = helmholtz.Target.from_model(
        path_model, sde, jnp.array([1.5]),
        terminal_log_factor=lambda x: jnp.sum(-0.5 * ((x - 0.2) / 0.3) ** 2))
    r = helmholtz.infer(target, "nuts", seed=0, num_chains=4, num_warmup=500,
                        num_samples=1000)
    end = r.samples["path"][:, :, -1, 0]
    # the Euler chain is linear-Gaussian: x_k = a x_{k-1} + s ε with a = 1 − θδ
    dt = ts[1] - ts[0]
    a, s2 = 1 - theta * dt, sigma**2 * dt
    mean, var = 1.5 * a**k, sum(s2 * a ** (2 * j) for j in range(k))
    post_var = 1 / (1 / var + 1 / 0.09)
    post_mean = post_var * (mean / var + 0.2 / 0.09)
    draws = end.ravel()
    se = math.sqrt(post_var / (0.5 * draws.size))  # ESS at least half the draws
    assert abs(draws.mean() - post_mean) < 4 * se, (draws.mean(), post_mean)
    assert abs(draws.var() - post_var) < 4 * post_var * math.sqrt(2 / (0.5 * draws.size))
