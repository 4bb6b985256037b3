"""What every engine does at the end: constrain draws and build the one Result."""

from __future__ import annotations

import jax
import numpy as np

from helmholtz.driver import Run, compiled
from helmholtz.result import LazyArrays, Result, Status

__all__ = ["assemble", "postprocess", "status_of"]


def assemble(engine, target, positions, stats, run: Run, grad_evals, free_energy, *,
             log_weights=None, trace=None, config=None, estimates=None, fitted=None,
             status=None) -> Result:
    """Constrain draws, evaluate pointwise log likelihoods (lazily) and build the Result.

    ``positions`` are flat unconstrained draws ``(chain, draw, dim)``, or ``None`` for a
    run that returns no draws (a fitted θ only).
    """
    if positions is None:
        samples, loglik = {}, {}
    else:
        samples, loglik = postprocess(target, positions, run)
    return Result(
        engine=engine.name,
        model=target.name,
        samples=samples,
        free_energy=free_energy,
        log_weights=None if log_weights is None else np.asarray(log_weights),
        trace={k: np.asarray(v) for k, v in (trace or {}).items()},
        stats={k: np.asarray(v) for k, v in stats.items()},
        log_likelihood=loglik,
        observed_data=target.observed_data() if target.observed_names else {},
        compile_seconds=run.timer.compile_seconds,
        run_seconds=run.timer.run_seconds,
        exact_log_z=target.log_z,
        config={**engine.options(), **(config or {}), "_num_grad_evals": grad_evals},
        estimates=dict(estimates or {}),
        fitted=fitted,
        status=status if status is not None else status_of(free_energy),
    )


def status_of(free_energy) -> Status:
    """``ok``, or ``unreliable`` when the headline estimate's error bar is flagged."""
    warning = getattr(free_energy, "warning", "")
    return Status("unreliable", warning) if warning else Status()


def _pointwise(fn, target, positions):
    """``fn(target, z)`` at every ``(chain, draw)`` position, as a tree of arrays."""
    c, d = positions.shape[:2]
    out = jax.lax.map(lambda z: fn(target, z), positions.reshape((c * d, -1)),
                      batch_size=min(c * d, 256))
    return jax.tree_util.tree_map(lambda a: a.reshape((c, d) + a.shape[1:]), out)


def _constrain(target, z):
    return target.constrain(z)


def _pointwise_loglik(target, z):
    return target.pointwise_log_likelihood(z)


def _over_draws(fn, target, positions, run=None):
    exe = compiled(_pointwise, fn, target, positions, timer=None if run is None else run.timer)
    out = exe(fn, target, positions) if run is None else run.timer.run(exe, fn, target,
                                                                       positions)
    return {k: np.asarray(v) for k, v in out.items()}


def postprocess(target, positions, run: Run):
    """Constrained samples now; pointwise log likelihoods lazily, when first read (none
    for a model with enumerated discrete sites, whose observations are scored jointly)."""
    samples = _over_draws(_constrain, target, positions, run)
    if target.enumerated_names:
        return samples, {}
    loglik = LazyArrays(lambda: _over_draws(_pointwise_loglik, target, positions),
                        target.observed_names)
    return samples, loglik
