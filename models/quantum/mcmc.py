"""Walkers sampling |ψ|²: Metropolis (Gaussian all-electron moves) and MALA, vmapped over
walkers with one step size tuned towards a target acceptance.

The kernels are blackjax's (``random_walk.build_additive_step`` and ``mala``); what is
written here is the population around them, which blackjax leaves to the user: every
walker shares one step size, adjusted after each sweep by the acceptance measured over
all walkers (FermiNet adjusts its proposal width the same way, towards ≈ 0.5), walkers
start near the nuclei with electrons assigned to atoms by charge, and a walker whose
|ψ|² is not finite is moved onto a finite one and counted, not averaged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.mcmc import mala, random_walk

__all__ = ["init_walkers", "sweep", "SAMPLERS", "adapt_step_size"]

SAMPLERS = ("metropolis", "mala")


def _assignment(system) -> np.ndarray:
    """Which nucleus each electron starts near: nuclei's slots (one per unit of charge)
    taken in turn, spins alternating, so both spins spread over the atoms."""
    z = np.rint(system.z).astype(int)
    slots = np.concatenate([np.full(k, i) for i, k in enumerate(z)])
    n = system.n_electrons
    order = np.resize(slots, n)          # charged systems wrap round
    up = order[0::2][: system.n_up]
    down = order[1::2][: system.n_down]
    if len(up) < system.n_up:            # more up than down electrons: the rest in turn
        up = np.concatenate([up, np.resize(slots, system.n_up - len(up))])
    if len(down) < system.n_down:
        down = np.concatenate([down, np.resize(slots, system.n_down - len(down))])
    return np.concatenate([up, down])


def init_walkers(rng_key, system, num_walkers: int, dtype=None):
    """Starting configurations (W, n_particles, dim): each electron Gaussian (1 bohr) about
    its assigned nucleus; for a system without nuclei, standard normal."""
    dtype = dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    n = system.n_particles
    noise = jax.random.normal(rng_key, (num_walkers, n, system.dim), dtype)
    if not hasattr(system, "nuclei"):
        return noise
    centres = jnp.asarray(system.nuclei[_assignment(system)], dtype)
    return centres[None] + noise


def adapt_step_size(step_size, acceptance, target: float, rate: float = 0.5):
    """log s ← log s + rate·(acceptance − target), kept within [1e-3, 10] bohr."""
    return jnp.clip(step_size * jnp.exp(rate * (acceptance - target)), 1e-3, 10.0)


def sweep(rng_key, log_psi, positions, step_size, num_steps: int, sampler: str = "metropolis"):
    """``num_steps`` moves of every walker on q = |ψ|² = exp(2 log|ψ|).

    Returns (positions, mean acceptance, number of walkers that were not finite and were
    moved onto a finite walker). ``step_size`` is the proposal's standard deviation per
    coordinate (Metropolis) or MALA's step ε (x' = x + ε ∇log q + √(2ε) ξ).
    """
    logq = lambda x: 2.0 * log_psi(x)
    if sampler == "mala":
        kernel = mala.build_kernel()
        init = jax.vmap(lambda x: mala.init(x, logq))
        step = lambda k, s: kernel(k, s, logq, step_size)
    else:
        kernel = random_walk.build_additive_step()

        def proposal(k, x):
            return jax.tree_util.tree_map(
                lambda a: step_size * jax.random.normal(k, a.shape, a.dtype), x)

        init = jax.vmap(lambda x: random_walk.init(x, logq))
        step = lambda k, s: kernel(k, s, logq, proposal)
    states = init(positions)
    num = positions.shape[0]

    def body(carry, k):
        s, acc = carry
        s, info = jax.vmap(step)(jax.random.split(k, num), s)
        return (s, acc + jnp.mean(info.is_accepted.astype(positions.dtype))), None

    (states, acc), _ = jax.lax.scan(body, (states, jnp.zeros((), positions.dtype)),
                                    jax.random.split(rng_key, num_steps))
    x = states.position
    bad = ~(jnp.isfinite(states.logdensity) & jnp.all(jnp.isfinite(x), axis=(1, 2)))
    x = replace_bad(x, bad)
    return x, acc / num_steps, jnp.sum(bad)


def replace_bad(x, bad):
    """Walkers flagged ``bad`` take the position of the first good walker (unchanged when
    none is bad; when all are, nothing can be done and the caller reports it)."""
    idx = jnp.arange(x.shape[0])
    first_good = jnp.argmax(~bad)
    return x[jnp.where(bad, first_good, idx)]
