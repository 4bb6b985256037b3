"""Stochastic variational inference: numpyro's ``Trace_ELBO`` and autoguides, optax optimisers.

The engine sees only the Target. It hands numpyro a one-site model over the Target's flat
unconstrained vector ``z`` (an improper flat site plus a factor equal to the Target's log
density), so every autoguide works unchanged on any model, and the ELBO it maximises is
E_q[log p(z) − log q(z)] ≤ log Z, i.e. −ELBO is an upper bound on the free energy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import SVI as NumpyroSVI
from numpyro.infer import Trace_ELBO, autoguide, init_to_value
from numpyro.optim import optax_to_numpyro

from helmholtz.driver import Timer, compiled, run_steps
from helmholtz.engines._assemble import assemble as _assemble
from helmholtz.engines.base import Engine, _positive_int, register
from helmholtz.errors import OptionError
from helmholtz.initialize import (
    engine_initial_positions,
    validate_init_options,
    without_init_options,
)
from helmholtz.result import FreeEnergy

__all__ = ["SVI", "GUIDES", "flat_model"]


def flat_model(target):
    """The Target as a one-site numpyro model: ∫ exp(log_density(z)) dz = Z."""
    z = numpyro.sample(
        "z", dist.ImproperUniform(dist.constraints.real_vector, (), (target.dim,)))
    numpyro.factor("log_density", target.log_density(z))


def _guide(kind: str, rank, hidden, num_flows, init):
    init_loc_fn = init_to_value(values={"z": init})
    if kind == "normal":
        return autoguide.AutoNormal(flat_model, init_loc_fn=init_loc_fn, init_scale=0.1)
    if kind == "mvn":
        return autoguide.AutoMultivariateNormal(flat_model, init_loc_fn=init_loc_fn,
                                                init_scale=0.1)
    if kind == "lowrank":
        return autoguide.AutoLowRankMultivariateNormal(flat_model, init_loc_fn=init_loc_fn,
                                                       init_scale=0.1, rank=rank)
    if kind == "iaf":
        return autoguide.AutoIAFNormal(flat_model, init_loc_fn=init_loc_fn,
                                       num_flows=num_flows, hidden_dims=[hidden, hidden])
    if kind == "bnaf":
        return autoguide.AutoBNAFNormal(flat_model, init_loc_fn=init_loc_fn,
                                        num_flows=num_flows, hidden_factors=[8, 8])
    raise AssertionError(kind)


GUIDES = {
    "normal": "mean-field normal (AutoNormal)",
    "mvn": "full-rank multivariate normal (AutoMultivariateNormal)",
    "lowrank": "low-rank plus diagonal normal (AutoLowRankMultivariateNormal)",
    "iaf": "normalizing flow: inverse autoregressive flow (AutoIAFNormal)",
    "bnaf": "normalizing flow: block neural autoregressive flow (AutoBNAFNormal)",
}


@register
@dataclass(frozen=True)
class SVI(Engine):
    """Stochastic variational inference (Hoffman et al. 2013; Kucukelbir et al. 2017).

    Options
    -------
    guide: one of ``GUIDES`` (``"normal"``, ``"mvn"``, ``"lowrank"``, ``"iaf"``, ``"bnaf"``).
    optimizer: an optax ``GradientTransformation``; default Adam, its learning rate decayed
    from ``learning_rate`` to 1% of it along a cosine
    (``decay="cosine"``) or held (``decay="constant"``). Stochastic gradients need the
    decay (Robbins & Monro 1951) for the ELBO to settle rather than hover at the noise
    level. (No gradient clipping by default: clipping a stochastic gradient changes its
    expectation and moves the optimum; measured here it left the full-rank covariance
    20–50% too wide.)
    num_steps: optimisation steps; num_particles: ELBO particles per step.
    num_samples: posterior draws returned; num_elbo_samples: fresh draws for the final
    ELBO estimate and its standard error (not the last noisy loss).
    init_strategy, init_values, init_jitter: where the guide's location starts
    (:mod:`helmholtz.initialize`); the sites in ``init_values`` ({site: constrained
    value}) start exactly there unless jittered.
    """

    name = "svi"
    description = "stochastic variational inference (numpyro ELBO + autoguides, optax)"
    guide: str = "normal"
    num_steps: int = 5000
    learning_rate: float = 0.01
    decay: str = "cosine"
    optimizer: optax.GradientTransformation | None = None
    num_particles: int = 1
    num_samples: int = 1000
    num_elbo_samples: int = 4000
    rank: int | None = None
    hidden_dim: int = 32
    num_flows: int = 2
    init_strategy: str = "uniform"
    init_values: Any = None
    init_jitter: float = 0.0

    def validate(self):
        if self.guide not in GUIDES:
            raise OptionError(
                f"svi: unknown guide {self.guide!r}; valid guides: {', '.join(GUIDES)}")
        _positive_int(self, "num_steps", "num_particles", "num_samples", "num_elbo_samples",
                      "hidden_dim", "num_flows")
        if self.rank is not None:
            _positive_int(self, "rank")
        if not (isinstance(self.learning_rate, int | float) and self.learning_rate > 0):
            raise OptionError(f"svi: learning_rate must be positive, got {self.learning_rate!r}")
        if self.optimizer is not None and not isinstance(self.optimizer,
                                                         optax.GradientTransformation):
            raise OptionError(
                "svi: optimizer must be an optax GradientTransformation (e.g. optax.adam(1e-2)),"
                f" got {type(self.optimizer).__name__}")
        if self.decay not in ("cosine", "constant"):
            raise OptionError(f"svi: decay must be 'cosine' or 'constant', got {self.decay!r}")
        validate_init_options(self)

    def _optimizer(self):
        if self.optimizer is not None:
            return self.optimizer
        lr = self.learning_rate
        if self.decay == "cosine":
            lr = optax.cosine_decay_schedule(self.learning_rate, self.num_steps, alpha=0.01)
        return optax.adam(lr)

    def _svi(self, z0) -> tuple[NumpyroSVI, Callable]:
        guide = _guide(self.guide, self.rank, self.hidden_dim, self.num_flows, z0)
        svi = NumpyroSVI(flat_model, guide, optax_to_numpyro(self._optimizer()),
                         Trace_ELBO(num_particles=self.num_particles))
        return svi, guide

    def run(self, target, rng_key, *, progress_bar: bool = False, checkpoint=None):
        timer = Timer()
        k_init, k_svi, k_elbo, k_draw = jax.random.split(rng_key, 4)
        z0 = engine_initial_positions(self, target, k_init, 1, timer)[0]
        key = (without_init_options(self), target.compile_key)

        # numpyro's SVI object learns its parameter constraints during ``init`` (state
        # kept on the object), so one object serves init, the steps and the final ELBO.
        svi, guide = self._svi(z0)
        t0 = time.perf_counter()
        state = svi.init(k_svi, target)
        timer.run_seconds += time.perf_counter() - t0

        def step(t, _k, s, _x):
            return svi.update(s, t)

        state, losses = run_steps(
            ("svi", key), step, target, state, k_svi, jnp.zeros((self.num_steps,)),
            per_chain=False, timer=timer, label="svi", progress_bar=progress_bar,
            checkpoint=checkpoint)

        def finish(t, s, k_elbo, k_draw):
            params = svi.get_params(s)
            keys = jax.random.split(k_elbo, self.num_elbo_samples)
            neg_elbo = jax.lax.map(
                lambda k: Trace_ELBO().loss(k, params, flat_model, guide, t), keys,
                batch_size=min(256, self.num_elbo_samples))
            z = guide.sample_posterior(k_draw, params, sample_shape=(self.num_samples,))["z"]
            lp = jax.vmap(t.log_density)(z)
            return neg_elbo, z, lp

        exe = compiled(("svi-finish", key), finish, target, state, k_elbo, k_draw, timer=timer)
        neg_elbo, z, lp = timer.run(exe, target, state, k_elbo, k_draw)
        neg_elbo = np.asarray(neg_elbo, dtype=np.float64)
        finite = np.isfinite(neg_elbo)
        value = float(np.mean(neg_elbo[finite]))
        se = float(np.std(neg_elbo[finite], ddof=1) / np.sqrt(finite.sum()))
        note = "" if finite.all() else f"{(~finite).sum()} non-finite ELBO draws dropped"
        grad_evals = self.num_steps * self.num_particles
        result = _assemble(self, target, z[None], {"lp": np.asarray(lp)[None]}, timer,
                           grad_evals, FreeEnergy(value, se, "lower bound", note))
        result.trace["loss"] = np.asarray(losses)
        return result
