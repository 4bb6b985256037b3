"""Walkers sampling |ψ|²: Metropolis (Gaussian all-electron moves) and MALA, vmapped over
walkers with one step size tuned towards a target acceptance.

The kernels are blackjax's (``random_walk.build_additive_step`` and ``mala``); what is
written here is the population around them, which blackjax leaves to the user: every
walker shares one step size, adjusted after each sweep by the acceptance measured over
all walkers (FermiNet adjusts its proposal width the same way, towards ≈ 0.5), walkers
start near the nuclei with electrons assigned to atoms by charge (also FermiNet's
pretraining walkers), and a walker whose
|ψ|² is not finite is moved onto a finite one and counted, not averaged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.mcmc import mala, random_walk

__all__ = ["init_walkers", "electron_sites", "sweep", "SAMPLERS", "adapt_step_size",
           "nuclear_scale"]

SAMPLERS = ("metropolis", "mala")


def electron_sites(system) -> np.ndarray:
    """The nucleus each electron starts near (n_el,) ints: each nucleus gets about Z_I
    electrons (the surplus or deficit of an ion taken from or given to the largest
    charges), split between the spins alternately, the up electrons first."""
    z = np.asarray(system.z, np.float64)
    n_up, n_down = system.n_up, system.n_down
    counts = np.round(z).astype(int)
    order = np.argsort(-z, kind="stable")
    i = 0
    while counts.sum() > n_up + n_down:
        j = order[i % len(z)]
        if counts[j] > 0:
            counts[j] -= 1
        i += 1
    i = 0
    while counts.sum() < n_up + n_down:
        counts[order[i % len(z)]] += 1
        i += 1
    up, down = [], []
    for nucleus, c in enumerate(counts):
        u = (c + 1) // 2 if len(up) <= len(down) else c // 2
        up += [nucleus] * u
        down += [nucleus] * (c - u)
    while len(up) > n_up:
        down.append(up.pop())
    while len(up) < n_up:
        up.append(down.pop())
    return np.asarray(up + down, dtype=int)


def init_walkers(rng_key, system, num_walkers: int, dtype=None, *, width: float = 1.0):
    """Walkers (num_walkers, n_el, 3): each electron a Gaussian of standard deviation
    ``width`` (bohr) around the nucleus :func:`electron_sites` gives it (for a system
    without nuclei, Gaussians about the origin)."""
    dtype = dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    if not hasattr(system, "nuclei"):          # the oscillator: standard normal
        return width * jax.random.normal(rng_key, (num_walkers, system.n_particles,
                                                   system.dim), dtype)
    centres = jnp.asarray(system.nuclei[electron_sites(system)], dtype)
    noise = jax.random.normal(rng_key, (num_walkers, *centres.shape), centres.dtype)
    return centres + width * noise


def adapt_step_size(step_size, acceptance, target: float, rate: float = 0.5):
    """log s ← log s + rate·(acceptance − target), kept within [1e-3, 10] bohr."""
    return jnp.clip(step_size * jnp.exp(rate * (acceptance - target)), 1e-3, 10.0)


def nuclear_scale(x, nuclei):
    """Per-electron proposal scale (n_el, 1): the harmonic mean of the electron's distances
    to the nuclei, N / Σ_I 1/|r − R_I| (FermiNet's ``scale_by_nuclear_distance``), so
    that core electrons take small steps and valence and outlying ones large ones."""
    d = jnp.sqrt(jnp.sum((x[:, None, :] - nuclei[None]) ** 2, axis=-1))
    return (nuclei.shape[0] / jnp.sum(1.0 / jnp.maximum(d, 1e-12), axis=-1))[:, None]


def sweep(rng_key, log_psi, positions, step_size, num_steps: int, sampler: str = "metropolis",
          nuclei=None):
    """``num_steps`` moves of every walker on q = |ψ|² = exp(2 log|ψ|).

    Returns (positions, mean acceptance, number of walkers that were not finite and were
    moved onto a finite walker). ``step_size`` is the proposal's standard deviation per
    coordinate (Metropolis) or MALA's step ε (x' = x + ε ∇log q + √(2ε) ξ). With
    ``nuclei`` (N, 3), Metropolis scales each electron's proposal by
    :func:`nuclear_scale` at the current position, and the Hastings ratio (blackjax's
    ``rmh`` with the proposal's log density) corrects for the asymmetry.
    """
    logq = lambda x: 2.0 * log_psi(x)
    if sampler == "mala":
        kernel = mala.build_kernel()
        init = jax.vmap(lambda x: mala.init(x, logq))
        step = lambda k, s: kernel(k, s, logq, step_size)
    elif nuclei is not None:
        nuclei = jnp.asarray(nuclei, positions.dtype)
        kernel = random_walk.build_rmh()

        def move(k, x):
            return x + step_size * nuclear_scale(x, nuclei) * jax.random.normal(k, x.shape,
                                                                                 x.dtype)

        def log_proposal(start, end):      # log q(end | start), up to a constant
            width = step_size * nuclear_scale(start.position, nuclei)
            return jnp.sum(-3.0 * jnp.log(width[:, 0])
                           - jnp.sum((end.position - start.position) ** 2, axis=-1)
                           / (2.0 * width[:, 0] ** 2))

        init = jax.vmap(lambda x: random_walk.init(x, logq))
        step = lambda k, s: kernel(k, s, logq, move, log_proposal)
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
