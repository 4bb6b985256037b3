"""What every engine does at the end: constrain draws and fill the common Result."""

from __future__ import annotations

import jax
import numpy as np

from helmholtz.driver import Timer, compiled
from helmholtz.result import LazyArrays, Result

__all__ = ["assemble", "postprocess"]


def assemble(engine, target, positions, stats, timer, grad_evals, free_energy) -> Result:
    """Constrain draws, evaluate pointwise log likelihoods and fill a Result."""
    samples, loglik = postprocess(target, positions, timer)
    return Result(
        engine=engine.name,
        model=target.name,
        samples=samples,
        free_energy=free_energy,
        stats={k: np.asarray(v) for k, v in stats.items()},
        log_likelihood=loglik,
        observed_data=target.observed_data() if target.observed_names else {},
        compile_seconds=timer.compile_seconds,
        run_seconds=timer.run_seconds,
        exact_log_z=target.log_z,
        config={**{f: getattr(engine, f) for f in engine.option_names()},
                "_num_grad_evals": grad_evals},
    )


def _over_draws(fn, name, target, positions, timer=None):
    """Apply ``fn(target, z)`` to every ``(chain, draw)`` position; numpy arrays out."""
    c, d = positions.shape[:2]

    def mapped(t, z):
        out = jax.lax.map(lambda zz: fn(t, zz), z.reshape((c * d, -1)),
                          batch_size=min(c * d, 256))
        return jax.tree_util.tree_map(lambda a: a.reshape((c, d) + a.shape[1:]), out)

    exe = compiled((name, target.compile_key), mapped, target, positions, timer=timer)
    out = exe(target, positions) if timer is None else timer.run(exe, target, positions)
    return {k: np.asarray(v) for k, v in out.items()}


def postprocess(target, positions, timer: Timer):
    """Constrained samples now; pointwise log likelihoods lazily, when first read."""
    samples = _over_draws(lambda t, z: t.constrain(z), "constrain", target, positions, timer)
    loglik = LazyArrays(
        lambda: _over_draws(lambda t, z: t.pointwise_log_likelihood(z), "pointwise_loglik",
                            target, positions),
        target.observed_names)
    return samples, loglik
