"""Finding finite starting points for chains, particles and variational families."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from helmholtz.driver import Timer, compiled
from helmholtz.errors import InitializationError, OptionError

__all__ = ["initial_positions", "STRATEGIES"]

STRATEGIES = ("uniform", "prior")
_NUM_TRIES = 16


def _candidates(target, rng_key, num, strategy):
    k_u, k_p = jax.random.split(rng_key)
    if strategy == "prior":
        return target.sample_reference(k_p, num)
    # numpyro's init_to_uniform: Uniform(−2, 2) in unconstrained space
    return jax.random.uniform(k_u, (num, target.dim), minval=-2.0, maxval=2.0)


def _evaluate(target, z):
    lp, g = jax.vmap(jax.value_and_grad(target.log_density))(z)
    return jnp.isfinite(lp) & jnp.all(jnp.isfinite(g), axis=-1)


def initial_positions(target, rng_key, num: int, strategy: str = "uniform",
                      timer: Timer | None = None):
    """``num`` starting points in unconstrained space with finite log density and gradient.

    Each point gets up to 16 candidates (``"uniform"``: Uniform(−2, 2) per coordinate of
    ``z`` as numpyro's ``init_to_uniform``; ``"prior"``: draws from the reference); the
    first finite one is kept.

    Raises
    ------
    InitializationError
        When every candidate of some point has a NaN or infinite log density or gradient;
        the message names the sites whose log density is not finite.
    """
    if strategy not in STRATEGIES:
        raise OptionError(f"init strategy must be one of {STRATEGIES}, got {strategy!r}")

    def fn(target, rng_key):
        keys = jax.random.split(rng_key, _NUM_TRIES)
        z = jax.vmap(lambda k: _candidates(target, k, num, strategy))(keys)  # (tries, num, d)
        ok = jax.vmap(lambda zz: _evaluate(target, zz))(z)  # (tries, num)
        first = jnp.argmax(ok, axis=0)
        chosen = z[first, jnp.arange(num)]
        return chosen, jnp.any(ok, axis=0)

    exe = compiled(("init", num, strategy), fn, target, rng_key, timer=timer)
    z, found = exe(target, rng_key) if timer is None else timer.run(exe, target, rng_key)
    if not bool(np.all(np.asarray(found))):
        bad = int(np.argmin(np.asarray(found)))
        raise InitializationError(_describe_failure(target, z[bad]))
    return z


def _describe_failure(target, z) -> str:
    try:
        log_probs = jax.jit(target._log_probs)(z)
        bad = [k for k, v in log_probs.items() if not np.all(np.isfinite(np.asarray(v)))]
    except Exception:  # the description must not hide the original problem
        bad = []
    where = f" Non-finite terms: {', '.join(bad)}." if bad else ""
    return (
        f"model '{target.name}': the log density is NaN or -inf at every one of "
        f"{_NUM_TRIES} initial points tried.{where} Check the data for NaN or values "
        "outside a likelihood's support, priors whose support the data contradict, and "
        "constraints on latent sites; or try init_strategy='prior'."
    )
