"""What the particle engines share (:mod:`helmholtz.engines.flows`,
:mod:`helmholtz.engines.fisher_rao`): the population state, its Kish ESS and resampling,
the start check, the collapse status and F[q] of weighted particles."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc import resampling
from jax.scipy.special import logsumexp

from helmholtz.errors import ModelError
from helmholtz.flows import knn_entropy
from helmholtz.result import FreeEnergy, Status

WEIGHT_COLLAPSE_ESS = 2.0
"""A weighted flow whose Kish ESS falls to this (one or two particles carry all the
weight) has collapsed: its Result gets status ``low_ess``, naming the step."""


class ParticleState(NamedTuple):
    """Particles ``(N, dim)``, log p̃ and its gradient there, normalised log weights
    (uniform for unweighted flows) and the optimiser state (SVGD; ``()`` otherwise)."""

    position: jax.Array
    log_density: jax.Array
    score: jax.Array
    log_weight: jax.Array
    opt_state: Any = ()


def _value_and_score(target, z):
    return jax.vmap(jax.value_and_grad(target.log_density))(z)


def _ess(log_w):
    return jnp.exp(2 * logsumexp(log_w) - logsumexp(2 * log_w))


def _resample_if(rng_key, state: ParticleState, threshold, extra=None):
    """Systematic resampling (blackjax) when the ESS is below ``threshold`` · N: the
    reweight–resample form of birth–death, which keeps the weighted measure unbiased."""
    n = state.log_weight.shape[0]
    ess = _ess(state.log_weight)
    idx = resampling.systematic(rng_key, jax.nn.softmax(state.log_weight), n)
    do = ess < threshold * n
    pick = lambda a: jnp.where(do, a[idx], a)
    uniform = jnp.full((n,), -jnp.log(n), state.log_weight.dtype)
    new = state._replace(position=pick(state.position), log_density=pick(state.log_density),
                         score=pick(state.score),
                         log_weight=jnp.where(do, uniform, state.log_weight))
    extra = None if extra is None else pick(extra)
    return new, do, extra


def _check_start(name, target, log_density):
    lp = np.asarray(log_density)
    bad = ~np.isfinite(lp)
    if bad.any():
        raise ModelError(f"{name}: log density of model '{target.name}' is not finite at "
                         f"{int(bad.sum())} of {lp.size} starting particles (first at "
                         f"particle {int(np.argmax(bad))}); start them inside the support")


def _collapse_status(name, ess, weighted) -> Status:
    if ess is None or not weighted:
        return Status()
    ess = np.asarray(ess)
    low = np.flatnonzero(ess <= WEIGHT_COLLAPSE_ESS)
    if low.size:
        return Status("low_ess", f"{name}: the weights collapsed onto ≤ "
                      f"{WEIGHT_COLLAPSE_ESS:.0f} particles at step {int(low[0])} (ESS "
                      f"{float(ess[low[0]]):.2f}); use a smaller step or more particles")
    return Status()


def _free_energy_of_q(x, log_w, log_density) -> FreeEnergy:
    """F[q] = E_q[−log p̃] − S(q) of the (weighted) particles."""
    w = np.exp(log_w - np.logaddexp.reduce(log_w))
    energy = float(-np.sum(w * log_density))
    s = knn_entropy(x, log_weights=log_w)
    se = float(np.sqrt(np.sum(w * (log_density + energy) ** 2) * np.sum(w**2)))
    return FreeEnergy(energy - s, se, "estimate",
                      f"E_q[U] − Ŝ(q) over {len(x)} particles, Ŝ the Kozachenko–Leonenko "
                      "entropy (its error, about 0.05 nats in 2-d at N = 1000, is not in "
                      "se)")
