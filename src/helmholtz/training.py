"""The one training step every trained engine uses: a loss and an optax transformation.

A trained engine (SVI, and the diffusion samplers, learned functionals and neural
wavefunctions to come) defines

* ``loss(params, rng_key, target) -> scalar`` — what it minimises;
* ``make_optimizer() -> optax.GradientTransformation``;

and runs :func:`training_phase`: the driver scans :func:`train_step` (no Python loop,
no device sync per step), shows the loss on the progress bar, and checkpoints the
:class:`TrainState` — parameters and optimiser state — between chunks, so an
interrupted training resumes to the same parameters bit for bit.

A step whose loss or gradient is not finite leaves the parameters and the optimiser
state as they were and stops the training there: every later step is a no-op, and
:func:`training_status` reports the step, so a run whose loss turned NaN keeps its last
finite parameters and says so instead of returning NaN draws.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from helmholtz.engines.base import Phase
from helmholtz.result import Status

__all__ = ["TrainState", "init_training", "train_step", "training_phase", "training_status",
           "static_part"]


class TrainState(NamedTuple):
    """Parameters, optimiser state, the first step whose loss or gradient was not finite
    or whose monitored ELBO collapsed (−1 while none), whether it was the latter, the
    best monitored ELBO so far, and the parameters before the last update (what a
    collapse returns to: the update that produced the current ones caused it)."""

    params: Any
    opt_state: Any
    failed_at: jax.Array
    diverged: jax.Array
    best: jax.Array
    previous: Any


def static_part(factory, *args, **kwargs):
    """The non-array part of the module ``factory(*args, **kwargs)`` would build, found by
    tracing shapes only (``equinox.filter_eval_shape``): a training state keeps a
    network's arrays, and ``eqx.combine(arrays, static_part(factory, ...))`` rebuilds the
    network from them inside a compiled step."""
    shapes = eqx.filter_eval_shape(factory, *args, **kwargs)
    return eqx.partition(shapes, lambda x: isinstance(x, jax.ShapeDtypeStruct))[1]


def init_training(engine, params) -> TrainState:
    """The state before the first step: ``params`` and a fresh optimiser state."""
    return TrainState(params, engine.make_optimizer().init(params),
                      jnp.asarray(-1, jnp.int32), jnp.asarray(False),
                      jnp.asarray(-jnp.inf, jnp.float32), params)


def _collapsed(engine, aux, best):
    """True when the batch ELBO fell below its best so far by more than
    ``engine.max_elbo_drop`` + 10 |best| nats: importance weights exploding (a path
    sampler whose drift runs away). The |best| term spares the first steps of a sampler
    that starts far from its target, whose batch ELBOs scatter by thousands of nats
    (measured: −940 then −3 570 on the funnel) without diverging."""
    drop = getattr(engine, "max_elbo_drop", None)
    if drop is None or "elbo" not in aux:
        return jnp.asarray(False), best
    elbo = jnp.asarray(aux["elbo"], jnp.float32)
    floor = best - drop - 10.0 * jnp.abs(best)
    return ~((elbo >= floor) | jnp.isinf(best)), jnp.maximum(
        best, jnp.where(jnp.isfinite(elbo), elbo, -jnp.inf))


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _loss_and_aux(engine, params, rng_key, target, step_index):
    """``engine.loss`` as ``(loss, aux)``: engines whose class sets ``loss_has_aux`` return
    a dict of per-step diagnostics with the loss (an ELBO, an ESS), and those that set
    ``loss_uses_step`` take the step index (alternating objectives, as in ASBS)."""
    args = (params, rng_key, target) + ((step_index,) if getattr(
        engine, "loss_uses_step", False) else ())
    out = engine.loss(*args)
    return out if getattr(engine, "loss_has_aux", False) else (out, {})


def train_step(engine, rng_key, target, state: TrainState, step_index):
    """One optimiser step on ``engine.loss``; info ``{"loss": …}`` plus the loss's aux."""
    (loss, aux), grads = jax.value_and_grad(_loss_and_aux, argnums=1, has_aux=True)(
        engine, state.params, rng_key, target, step_index)
    updates, opt_state = engine.make_optimizer().update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(params)
    collapsed, best = _collapsed(engine, aux, state.best)
    running = state.failed_at < 0
    go = finite & ~collapsed & running
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(go, a, b), new, old)
    failed_at = jnp.where(running & ~go, jnp.asarray(step_index, jnp.int32), state.failed_at)
    revert = running & finite & collapsed
    diverged = jnp.where(revert, True, state.diverged)
    stay = jax.tree_util.tree_map(lambda p, q: jnp.where(revert, q, p), state.params,
                                  state.previous)
    return TrainState(keep(params, stay), keep(opt_state, state.opt_state), failed_at,
                      diverged, jnp.where(go, best, state.best),
                      keep(state.params, state.previous)), {"loss": loss, **aux}


def _loss_postfix(engine, state, info):
    loss = np.asarray(info["loss"], np.float64)
    finite = loss[np.isfinite(loss)]
    return {"loss": f"{finite.mean():.4g}" if finite.size else "nan"}


def training_phase(num_steps: int, name: str = "training") -> Phase:
    """The phase that trains: ``num_steps`` scanned :func:`train_step` calls, with the
    mean loss of the last chunk on the progress bar."""
    return Phase(name, train_step, num_steps, postfix=_loss_postfix)


def training_status(state: TrainState, losses=None) -> Status:
    """``ok``, or ``nan`` naming the step where the loss or a gradient stopped being
    finite (the parameters are the last finite ones)."""
    at = int(np.asarray(state.failed_at))
    if at < 0:
        return Status()
    if bool(np.asarray(state.diverged)):
        return Status("diverged", f"training stopped at step {at}: the batch ELBO fell more than "
                      "max_elbo_drop + 10 |best| nats below its best (best "
                      f"{float(np.asarray(state.best)):.6g}), the importance weights "
                      "exploding; the parameters are those step "
                      f"{max(at - 1, 0)} was evaluated at")
    last = ""
    if losses is not None and at > 0:
        last = f" (last finite loss {float(np.asarray(losses)[at - 1]):.6g})"
    return Status("nan", f"training stopped at step {at}: the loss or its gradient was not "
                  f"finite; the parameters are those after step {at - 1}{last}")
