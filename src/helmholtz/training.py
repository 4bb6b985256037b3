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

import jax
import jax.numpy as jnp
import numpy as np
import optax

from helmholtz.engines.base import Phase
from helmholtz.result import Status

__all__ = ["TrainState", "init_training", "train_step", "training_phase", "training_status"]


class TrainState(NamedTuple):
    """Parameters, optimiser state, and the first step whose loss or gradient was not
    finite (−1 while every step was finite)."""

    params: Any
    opt_state: Any
    failed_at: jax.Array


def init_training(engine, params) -> TrainState:
    """The state before the first step: ``params`` and a fresh optimiser state."""
    return TrainState(params, engine.make_optimizer().init(params),
                      jnp.asarray(-1, jnp.int32))


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def train_step(engine, rng_key, target, state: TrainState, step_index):
    """One optimiser step on ``engine.loss``; info ``{"loss": …}``."""
    loss, grads = jax.value_and_grad(engine.loss)(state.params, rng_key, target)
    updates, opt_state = engine.make_optimizer().update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(params)
    go = finite & (state.failed_at < 0)
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(go, a, b), new, old)
    failed_at = jnp.where((state.failed_at < 0) & ~finite,
                          jnp.asarray(step_index, jnp.int32), state.failed_at)
    return TrainState(keep(params, state.params), keep(opt_state, state.opt_state),
                      failed_at), {"loss": loss}


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
    last = ""
    if losses is not None and at > 0:
        last = f" (last finite loss {float(np.asarray(losses)[at - 1]):.6g})"
    return Status("nan", f"training stopped at step {at}: the loss or its gradient was not "
                  f"finite; the parameters are those after step {at - 1}{last}")
