"""Path measures: SDEs, their discretisations, exact path log densities, Girsanov ratios.

A discretised SDE dX = b(t, X) dt + g(t) dW on a time grid t_0 < … < t_K is a Markov
chain whose Euler–Maruyama transitions are Gaussian,

    X_{k+1} | X_k ~ N(X_k + b(t_k, X_k) δ_k, g(t_k)² δ_k I),   δ_k = t_{k+1} − t_k,

so the law of a path x_{0:K} given x_0 has the exact log density Σ_k log N(…), and the
Radon–Nikodym derivative between a controlled chain (drift b + g u) and the uncontrolled
one on the same grid is the discrete Girsanov sum Σ_k [u·(Δx_k − b δ_k)/g − ½|u|² δ_k].
Both are what the path engines (:mod:`helmholtz.engines.diffusion`) weigh paths with,
and what the transition-path models are written in.

A path measure is also an ordinary numpyro model (:func:`path_model`): the path is one
sample site with the distribution :class:`DiscretisedPath`, with an optional terminal
factor or a soft endpoint condition, so ``nuts`` or ``smc`` sample it like any model.

Why written here rather than taken from diffrax: diffrax integrates SDEs (and its
``VirtualBrownianTree`` gives continuous noise), but it has no density of a discretised
path, no Girsanov weight and no numpyro distribution over paths; those need the
Gaussian transition of each step, which is three lines once the step is ours. For
Langevin dynamics the splitting integrators (BAOAB, OBABO; Leimkuhler & Matthews 2013)
are also here, with the log density of the velocity refreshments that carry their noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

__all__ = ["SDE", "euler_maruyama", "transition_log_density", "path_log_density",
           "girsanov_log_ratio", "ornstein_uhlenbeck", "overdamped_langevin",
           "LangevinPath", "underdamped_langevin", "DiscretisedPath", "path_model"]


class SDE(eqx.Module):
    """dX = drift_fn(t, X) dt + diffusion_fn(t) dW on the grid ``ts``.

    Parameters
    ----------
    drift_fn
        ``b(t, x) -> (d,)`` for one state ``x`` of shape ``(d,)``.
    diffusion_fn
        ``g(t)``, a scalar or a ``(d,)`` vector (diagonal noise).
    ts
        The time grid t_0 < … < t_K, shape ``(K + 1,)``.
    """

    drift_fn: Callable = eqx.field(static=True)
    diffusion_fn: Callable = eqx.field(static=True)
    ts: jax.Array

    @property
    def num_steps(self) -> int:
        return self.ts.shape[0] - 1


def _step_moments(sde: SDE, t, dt, x):
    mean = x + sde.drift_fn(t, x) * dt
    g = jnp.broadcast_to(jnp.asarray(sde.diffusion_fn(t), x.dtype), x.shape)
    return mean, g * jnp.sqrt(dt)


def _normal_log_density(x, mean, scale):
    z = (x - mean) / scale
    return jnp.sum(-0.5 * z**2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi), axis=-1)


def euler_maruyama(rng_key, sde: SDE, x0, noise=None) -> jax.Array:
    """One Euler–Maruyama path from ``x0`` (shape ``(d,)``): returns ``(K + 1, d)``.

    ``noise``: the standard normal increments ``(K, d)`` to use instead of drawing them
    from ``rng_key`` (common random numbers across discretisations). Batch over paths
    with ``jax.vmap`` over keys (and starts).
    """
    ts = sde.ts
    if noise is None:
        noise = jax.random.normal(rng_key, (ts.shape[0] - 1,) + jnp.shape(x0),
                                  jnp.result_type(x0))

    def body(x, inp):
        t, dt, eps = inp
        mean, scale = _step_moments(sde, t, dt, x)
        x = mean + scale * eps
        return x, x

    _, xs = jax.lax.scan(body, x0, (ts[:-1], jnp.diff(ts), noise))
    return jnp.concatenate([x0[None], xs])


def transition_log_density(sde: SDE, t, dt, x, x_next):
    """log N(x_next; x + b(t, x) δ, g(t)² δ I): one Euler–Maruyama transition."""
    mean, scale = _step_moments(sde, t, dt, x)
    return _normal_log_density(x_next, mean, scale)


def path_log_density(sde: SDE, path) -> jax.Array:
    """Σ_k log p(x_{k+1} | x_k): the exact log density of a discretised path given x_0.

    ``path``: ``(K + 1, d)``, as :func:`euler_maruyama` returns it.
    """
    ts = sde.ts
    steps = jax.vmap(lambda t, dt, x, y: transition_log_density(sde, t, dt, x, y))
    return jnp.sum(steps(ts[:-1], jnp.diff(ts), path[:-1], path[1:]))


def girsanov_log_ratio(control_fn: Callable, sde: SDE, path) -> jax.Array:
    """log dQ^u/dP of a discretised path: the controlled chain (drift b + g·u) against
    the uncontrolled one (drift b), both Euler–Maruyama on the grid of ``sde``.

    Σ_k [u_k · (Δx_k − b_k δ_k)/g_k − ½ |u_k|² δ_k] with u_k = control_fn(t_k, x_k): the
    discrete Girsanov theorem, exact for the discretisation (it is the difference of the
    two chains' Gaussian transition log densities, computed without them).
    """
    ts = sde.ts

    def one(t, dt, x, y):
        u = control_fn(t, x)
        g = jnp.broadcast_to(jnp.asarray(sde.diffusion_fn(t), x.dtype), x.shape)
        residual = y - x - sde.drift_fn(t, x) * dt
        return jnp.sum(u * residual / g) - 0.5 * jnp.sum(u**2) * dt

    return jnp.sum(jax.vmap(one)(ts[:-1], jnp.diff(ts), path[:-1], path[1:]))


def ornstein_uhlenbeck(theta: float, sigma: float, ts, mu: float = 0.0) -> SDE:
    """dX = θ(μ − X) dt + σ dW on the grid ``ts``; stationary law N(μ, σ²/(2θ))."""
    return SDE(lambda t, x: theta * (mu - x), lambda t: sigma, jnp.asarray(ts))


def overdamped_langevin(energy_fn: Callable, ts, temperature: float = 1.0,
                        friction: float = 1.0) -> SDE:
    """γ dX = −∇U(X) dt + √(2 γ kT) dW: overdamped Langevin dynamics at temperature kT.

    Its stationary law is exp(−U/kT)/Z; Euler–Maruyama of it is the unadjusted Langevin
    algorithm with step δ/γ.
    """
    grad = jax.grad(lambda x: jnp.sum(energy_fn(x)))
    return SDE(lambda t, x: -grad(x) / friction,
               lambda t: math.sqrt(2.0 * temperature / friction), jnp.asarray(ts))


class LangevinPath(NamedTuple):
    """An underdamped Langevin path: positions and velocities ``(K + 1, d)`` and the log
    density of its velocity refreshments (the only random parts of a splitting step)."""

    positions: jax.Array
    velocities: jax.Array
    log_density: jax.Array


def underdamped_langevin(rng_key, energy_fn: Callable, x0, v0, *, step_size: float,
                         num_steps: int, friction: float = 1.0, mass: Any = 1.0,
                         temperature: float = 1.0, scheme: str = "baoab") -> LangevinPath:
    """Underdamped Langevin dynamics M dV = −∇U dt − γ M V dt + √(2 γ M kT) dW by a
    splitting integrator (Leimkuhler & Matthews 2013, "Rational construction of
    stochastic numerical methods for molecular sampling").

    ``scheme="baoab"``: half kick (B), half drift (A), the exact Ornstein–Uhlenbeck
    velocity refreshment (O) v ← c v + √((1 − c²) kT/M) ξ with c = e^{−γδ}, half drift,
    half kick; ``"obabo"``: two half-step refreshments around a velocity-Verlet step.
    BAOAB samples a harmonic oscillator's positions exactly at any stable step; OBABO
    samples velocity Verlet's shadow law. The returned ``log_density`` sums
    log N(v'; c v, (1 − c²) kT/M) over every refreshment: the log density of the path's
    noise, which differs from a density of the recorded states by a Jacobian that
    depends only on the step and the mass, so it serves ratios between paths (or path
    measures) of the same integrator and step, as in path sampling.
    """
    if scheme not in ("baoab", "obabo"):
        raise ValueError(f"underdamped_langevin: scheme must be 'baoab' or 'obabo', got "
                         f"{scheme!r}")
    grad = jax.grad(lambda x: jnp.sum(energy_fn(x)))
    h = step_size
    mass = jnp.asarray(mass, jnp.result_type(x0))
    refresh_time = h if scheme == "baoab" else h / 2
    c = jnp.exp(-friction * refresh_time)
    scale = jnp.sqrt((1.0 - c**2) * temperature / mass)

    def refresh(v, eps):
        v_new = c * v + scale * eps
        return v_new, _normal_log_density(v_new, c * v, jnp.broadcast_to(scale, v.shape))

    def step(carry, eps):
        x, v = carry
        if scheme == "baoab":
            v = v - 0.5 * h * grad(x) / mass
            x = x + 0.5 * h * v
            v, lp = refresh(v, eps[0])
            x = x + 0.5 * h * v
            v = v - 0.5 * h * grad(x) / mass
        else:
            v, lp0 = refresh(v, eps[0])
            v = v - 0.5 * h * grad(x) / mass
            x = x + h * v
            v = v - 0.5 * h * grad(x) / mass
            v, lp1 = refresh(v, eps[1])
            lp = lp0 + lp1
        return (x, v), (x, v, lp)

    noise = jax.random.normal(rng_key, (num_steps, 2) + jnp.shape(x0), jnp.result_type(x0))
    _, (xs, vs, lps) = jax.lax.scan(step, (x0, v0), noise)
    return LangevinPath(jnp.concatenate([x0[None], xs]), jnp.concatenate([v0[None], vs]),
                        jnp.sum(lps))


class DiscretisedPath(dist.Distribution):
    """The law of x_{1:K} for the Euler–Maruyama chain of ``sde`` from the fixed ``x0``.

    ``sample`` runs :func:`euler_maruyama`; ``log_prob`` is :func:`path_log_density`.
    Event shape ``(K, d)``; support all of ℝ^{K×d}, so engines move the path freely.
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 2)

    def __init__(self, sde: SDE, x0, *, validate_args=None):
        self.sde, self.x0 = sde, jnp.asarray(x0)
        super().__init__(batch_shape=(), event_shape=(sde.num_steps,) + self.x0.shape,
                         validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        n = math.prod(sample_shape)
        keys = jax.random.split(key, max(n, 1))
        paths = jax.vmap(lambda k: euler_maruyama(k, self.sde, self.x0)[1:])(keys)
        return paths.reshape(sample_shape + self.event_shape)

    def log_prob(self, value):
        def one(v):
            return path_log_density(self.sde, jnp.concatenate([self.x0[None], v]))

        batch = value.shape[:-2]
        flat = value.reshape((-1,) + self.event_shape)
        return jax.vmap(one)(flat).reshape(batch)


def path_model(sde: SDE, x0, terminal_log_factor: Callable | None = None,
               endpoint=None, endpoint_scale: float = 0.1) -> None:
    """A numpyro model of a discretised path from ``x0``: site ``"path"`` (``(K, d)``).

    ``terminal_log_factor(x_K)`` adds a factor on the end point (a reward, a committor,
    a target density); ``endpoint`` softly conditions it on a state,
    x_K ~ N(endpoint, endpoint_scale² I) (a bridge as the scale goes to 0). Engines that
    take any model (``nuts``, ``smc``, ``ais``) sample the path measure through it.
    """
    path = numpyro.sample("path", DiscretisedPath(sde, x0))
    end = path[-1]
    if terminal_log_factor is not None:
        numpyro.factor("terminal", terminal_log_factor(end))
    if endpoint is not None:
        numpyro.factor("endpoint", jnp.sum(dist.Normal(jnp.asarray(endpoint),
                                                       endpoint_scale).log_prob(end)))


from helmholtz.paths.transition import (  # noqa: E402  (after the SDE machinery it uses)
    TransitionPath,
    rollout,
    transition_path_model,
)

__all__ += ["TransitionPath", "rollout", "transition_path_model"]
