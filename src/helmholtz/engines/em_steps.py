"""The E-steps of the ``em`` engine (:mod:`helmholtz.engines.em`): Q from discrete
latents summed by enumeration (:class:`Exact`), from draws (:class:`MonteCarlo`), or a
mean-field Gaussian (:class:`Variational`); and E_Q[log p(x, z | θ)] of a held Q at
another θ, which the M-step and the work/heat split need. Kept apart from the engine, so
that each of the two modules reads on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from numpyro import handlers

from helmholtz.engines.base import _positive_int, _positive_number

__all__ = ["Exact", "MonteCarlo", "Variational", "E_STEPS", "enumerated_marginals",
           "conjugate", "e_step", "expected_at", "e_init"]


# --------------------------------------------------------------------------- enumeration
class _Shift(numpyro.primitives.Messenger):
    """Adds ``shifts[name]`` to the log probability of the named sample sites."""

    def __init__(self, fn, shifts):
        self.shifts = shifts
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["name"] in self.shifts:
            msg["fn"] = _Shifted(msg["fn"], self.shifts[msg["name"]])


class _Shifted(dist.Distribution):
    """A distribution whose log_prob is its base's plus a constant tensor."""

    def __init__(self, base, shift):
        self.base, self.shift = base, shift
        super().__init__(base.batch_shape, base.event_shape)

    @property
    def support(self):
        return self.base.support

    @property
    def has_enumerate_support(self):
        return self.base.has_enumerate_support

    def enumerate_support(self, expand=True):
        return self.base.enumerate_support(expand)

    def sample(self, key, sample_shape=()):
        return self.base.sample(key, sample_shape)

    def log_prob(self, value, *args, **kwargs):
        return self.base.log_prob(value, *args, **kwargs) + self.shift


def _enum_trace(target, u_theta, shifts=None):
    """log p(x | θ) summed over the discrete latents (numpyro.contrib.funsor) and the
    enumerated trace."""
    from numpyro.contrib.funsor import config_enumerate, enum, log_density

    t = target.with_params(target.constrain_params(u_theta))
    model = t._bound_model()
    if shifts:
        model = _Shift(model, shifts)
    model = enum(config_enumerate(handlers.seed(model, jax.random.key(0))),
                 first_available_dim=-target._spec.max_plate_nesting - 1)
    args, kwargs = target.model_args
    with handlers.block():
        return log_density(model, args, kwargs, {})


def _site_log_probs(trace) -> dict:
    """Every sample site's log-probability tensor, unscaled: the marginals, as gradients
    of the scaled sum–product, already carry a site's scale (a subsampled plate's N/B)."""
    out = {}
    for name, site in trace.items():
        if site["type"] == "sample":
            fn = site["fn"].base if isinstance(site["fn"], _Shifted) else site["fn"]
            out[name] = fn.log_prob(site["value"])
    return out


def enumerated_marginals(target, u_theta):
    """``(log p(x | θ), marginals, log_probs)`` for a model whose latents are discrete.

    ``marginals[site]`` is the posterior marginal of the enumerated variables the site's
    factor depends on, laid out as numpyro's enumeration lays out that site's log_prob
    (enumeration dimensions left of the plates): the responsibilities of a mixture's
    assignment site, the pairwise marginals of a chain's transition site. It is
    ∂ log p(x | θ) / ∂ shift_site, the shift added to the site's log probability, by the
    gradient identity of sum–product (Darwiche 2003). ``log_probs`` are the sites'
    log-probability tensors at θ, so that E_Q[log p(x, z | θ)] = Σ marginals · log_probs.
    """
    shapes = jax.eval_shape(lambda: _site_log_probs(_enum_trace(target, u_theta)[1]))
    zeros = {k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items()}

    def log_z_and_log_probs(shifts):
        log_z, trace = _enum_trace(target, u_theta, shifts)
        return log_z, _site_log_probs(trace)

    # one forward and one backward pass of the sum–product per E-step
    (log_z, log_probs), marginals = jax.value_and_grad(log_z_and_log_probs, has_aux=True)(
        zeros)
    return log_z, marginals, log_probs


def _expected(marginals, log_probs):
    total = 0.0
    for k, m in marginals.items():
        lp = log_probs[k]
        total = total + jnp.sum(jnp.where(m > 0, m * lp, 0.0))
    return total


# --------------------------------------------------------------------------- E-steps
@dataclass(frozen=True)
class Exact:
    """The exact E-step: Q = p(z | x, θ).

    Discrete latents are summed by enumeration (Q kept as its factors' marginals); a
    model function with attributes ``gaussian_posterior(θ, *args, **kwargs)``,
    ``expected_log_joint(θ, posterior, *args, **kwargs)`` and
    ``posterior_entropy(posterior)`` (conjugate Gaussian latents, as
    :func:`helmholtz.models.latent.ppca`) uses those closed forms instead.
    """

    name = "exact"


@dataclass(frozen=True)
class MonteCarlo:
    """A Monte Carlo E-step: ``num_samples`` draws of z per iteration.

    Discrete latents (a model with no continuous latent site) are drawn exactly from
    p(z | x, θ) by numpyro's ``infer_discrete``; continuous latents by ``num_samples``
    chains of ``move`` (an MCMC engine such as ``HMC(num_integration_steps=5)``, or a
    preset ``"hmc"``, ``"mala"``, ``"nuts"``), ``num_mcmc_steps`` transitions per
    iteration, each chain warm-started where the last iteration left it, the step size
    following the acceptance rate (discrete sites, if any, summed by enumeration).
    """

    num_samples: int = 64
    move: Any = "hmc"
    num_mcmc_steps: int = 5
    step_size: float = 0.1
    name = "monte-carlo"

    def __post_init__(self):
        from helmholtz.engines.annealing import move_preset

        _positive_int(self, "num_samples", "num_mcmc_steps")
        _positive_number(self, "step_size")
        move_preset(self.move)  # an unknown move is named here, not inside a trace


@dataclass(frozen=True)
class Variational:
    """A variational E-step: a mean-field Gaussian over the continuous latents (discrete
    ones summed by enumeration), ``num_steps`` Adam steps (``learning_rate``) per
    iteration on the ELBO with ``num_draws`` reparametrised draws, fixed within an
    iteration (common random numbers, so that work and heat are computed on one F)."""

    num_steps: int = 20
    learning_rate: float = 0.05
    num_draws: int = 16
    name = "variational"

    def __post_init__(self):
        _positive_int(self, "num_steps", "num_draws")
        _positive_number(self, "learning_rate")


E_STEPS = {"exact": Exact, "monte-carlo": MonteCarlo, "variational": Variational}


def conjugate(e, target) -> bool:
    """Whether the exact E-step ``e`` uses the model's closed forms (conjugate Gaussian
    latents: ``gaussian_posterior``, ``expected_log_joint``, ``posterior_entropy``)."""
    m = target.model
    return isinstance(e, Exact) and all(
        callable(getattr(m, a, None)) for a in ("gaussian_posterior",
                                                "expected_log_joint",
                                                "posterior_entropy"))


def e_step(e, rng_key, target, u_theta, e_state):
    """(posterior, E_Q log p(x,z|θ) at θ, S(Q), new e_state, the sites' log-prob
    tensors at θ for an enumerated E-step, else None)."""
    args, kwargs = target.model_args
    if isinstance(e, Exact):
        if conjugate(e, target):
            theta = target.constrain_params(u_theta)
            post = target.model.gaussian_posterior(theta, *args, **kwargs)
            expected = target.model.expected_log_joint(theta, post, *args, **kwargs)
            return post, expected, target.model.posterior_entropy(post), e_state, None
        log_z, marginals, log_probs = enumerated_marginals(target, u_theta)
        expected = _expected(marginals, log_probs)
        return marginals, expected, log_z - expected, e_state, log_probs
    if isinstance(e, MonteCarlo):
        draws, e_state = _mc_draws(e, rng_key, target, u_theta, e_state)
        expected = jnp.mean(jax.vmap(lambda d: _log_joint_at(target, u_theta, d))(draws))
        return draws, expected, jnp.asarray(jnp.nan, expected.dtype), e_state, None
    # variational
    guide, opt_state, eps = e_state
    eps = jax.random.normal(rng_key, eps.shape, eps.dtype)
    opt = optax.adam(e.learning_rate)

    def loss(g):
        return -_elbo(target, u_theta, g, eps)

    def body(c, _):
        g, s = c
        grads = jax.grad(loss)(g)
        updates, s = opt.update(grads, s, g)
        return (optax.apply_updates(g, updates), s), None

    (guide, opt_state), _ = jax.lax.scan(body, (guide, opt_state), None,
                                         length=e.num_steps)
    entropy = _gaussian_entropy(guide)
    expected = _elbo(target, u_theta, guide, eps) - entropy
    return (guide, eps), expected, entropy, (guide, opt_state, eps), None


def expected_at(e, target, posterior, u_theta, eps=None):
    """E_Q[log p(x, z | θ)] for the held Q at another θ (a variational Q's estimate
    with the draws ``eps`` when given, else with those it was fitted on)."""
    args, kwargs = target.model_args
    if isinstance(e, Exact):
        if conjugate(e, target):
            theta = target.constrain_params(u_theta)
            return target.model.expected_log_joint(theta, posterior, *args, **kwargs)
        _, trace = _enum_trace(target, u_theta)
        return _expected(posterior, _site_log_probs(trace))
    if isinstance(e, MonteCarlo):
        return jnp.mean(jax.vmap(lambda d: _log_joint_at(target, u_theta, d))(posterior))
    guide, fitted_eps = posterior
    eps = fitted_eps if eps is None else eps
    entropy = _gaussian_entropy(guide)
    return _elbo(target, u_theta, guide, eps) - entropy


# --------------------------------------------------------------------------- MC and VI
def _log_joint_at(target, u_theta, draw):
    """log p(x, z | θ) at one draw: a flat vector of continuous latents (discrete ones
    summed by enumeration), or a dict of discrete site values."""
    if isinstance(draw, dict):
        from numpyro.infer.util import log_density

        t = target.with_params(target.constrain_params(u_theta))
        args, kwargs = target.model_args
        model = handlers.substitute(t._bound_model(), data=draw)
        with handlers.block():
            return log_density(model, args, kwargs, {})[0]
    return target.log_joint(u_theta, draw)


def e_init(e, rng_key, target, u_theta):
    """The E-step's own starting state: chains, or a guide and its optimiser state."""
    dtype = jnp.result_type(float)
    if isinstance(e, MonteCarlo):
        if target.dim == 0:
            return ()
        z = target.sample_reference(rng_key, e.num_samples)
        return (z, jnp.asarray(e.step_size, dtype))
    if isinstance(e, Variational):
        d = target.dim
        guide = {"loc": jnp.zeros((d,), dtype), "log_scale": jnp.full((d,), -1.0, dtype)}
        if d:
            guide["loc"] = target.sample_reference(rng_key)
        eps = jnp.zeros((e.num_draws, d), dtype)
        return (guide, optax.adam(e.learning_rate).init(guide), eps)
    return ()


def _elbo(target, u_theta, guide, eps):
    z = guide["loc"] + jnp.exp(guide["log_scale"]) * eps
    if z.shape[-1] == 0:
        return target.log_joint(u_theta, z[0])
    lp = jax.vmap(lambda zz: target.log_joint(u_theta, zz))(z)
    return jnp.mean(lp) + _gaussian_entropy(guide)


def _gaussian_entropy(guide):
    """Entropy of the mean-field Gaussian N(loc, diag(exp(log_scale))²)."""
    return jnp.sum(guide["log_scale"]) + 0.5 * guide["loc"].size * (1.0 + jnp.log(2 * jnp.pi))


def _mc_draws(e, rng_key, target, u_theta, e_state):
    if target.dim == 0:  # discrete latents: exact draws by infer_discrete
        t = target.with_params(target.constrain_params(u_theta))
        z0 = jnp.zeros((0,), jnp.result_type(float))
        draws = jax.vmap(lambda k: t.sample_discrete(k, z0))(
            jax.random.split(rng_key, e.num_samples))
        return draws, e_state
    from helmholtz.engines.annealing import _acceptance, move_preset

    move = move_preset(e.move)
    init_fn, step_fn = move.transition()
    z, step_size = e_state
    logdensity = lambda zz: target.log_joint(u_theta, zz)
    imm = jnp.ones((target.dim,), z.dtype)

    def chain(key, z0):
        def body(s, k):
            s, info = step_fn(k, s, logdensity, step_size, imm)
            return s, _acceptance(info)

        s, acc = jax.lax.scan(body, init_fn(z0, logdensity),
                              jax.random.split(key, e.num_mcmc_steps))
        return s.position, jnp.mean(acc)

    z, acc = jax.vmap(chain)(jax.random.split(rng_key, z.shape[0]), z)
    target_acc = move.target_acceptance_rate
    step_size = (step_size * jnp.exp(jnp.mean(acc) - target_acc)).astype(z.dtype)
    return z, (z, step_size)
