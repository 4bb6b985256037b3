"""Annealing engines that estimate log Z along the tempering path: ``ais`` and ``smc``.

Both walk the geometric path π_β(z) ∝ prior(z) · likelihood(z)^β from the Target's proper
reference (β = 0, drawn with ``target.sample_reference``) to the Target (β = 1), moving
the particles with an MCMC kernel that leaves π_β invariant (blackjax HMC, MALA or NUTS
on ``log_prior + β · log_likelihood``, preconditioned by the particle cloud's variance).
Gradient evaluations are counted from the kernels' own info (NUTS trajectories vary).

* ``ais``: annealed importance sampling (Neal 2001) on a fixed schedule of temperatures;
  the particles never interact, and log Ẑ is Jarzynski's estimate from their work.
* ``smc``: adaptive tempered SMC (Del Moral et al. 2006; Jasra et al. 2011) with
  blackjax's ``adaptive_tempered_smc`` kernel: the next β keeps the weights' ESS at a
  target fraction, then the particles are resampled (systematic) and moved.

Both return the final particles as draws of one chain with their log weights, and a
:class:`~helmholtz.result.FreeEnergy` of kind ``"unbiased-Z estimate"`` (E[Ẑ] = Z, so
log Ẑ is biased low by about half its variance). Reverse AIS (an upper bound on log Z)
and Bennett's acceptance ratio, which also run the path backwards from exact posterior
draws, are in :mod:`helmholtz.engines.bidirectional`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from helmholtz.engines._assemble import assemble
from helmholtz.engines._weights import (
    SCHEDULES,
    batch_se,
    log_mean_exp_se,
    temperature_schedule,
    weights_warning,
)
from helmholtz.engines.base import (
    Engine,
    Phase,
    _boolean,
    _positive_int,
    _positive_number,
    register,
)
from helmholtz.engines.mcmc import HMC, MALA, NUTS, _GradientMCMC
from helmholtz.errors import OptionError
from helmholtz.result import FreeEnergy, Result

__all__ = ["AIS", "AISState", "SCHEDULES", "MOVES", "temperature_schedule",
           "log_mean_exp_se", "move_preset"]

# the presets a move can be named by (the CLI's strings); each builds an MCMC engine whose
# default target acceptance is the optimum the population's step size is tuned towards:
# HMC 0.65 (Beskos et al. 2013), MALA 0.574 (Roberts & Rosenthal 1998), NUTS 0.8 (Stan)
MOVES = {"hmc": lambda: HMC(num_integration_steps=5), "mala": MALA, "nuts": NUTS}


def move_preset(move, num_integration_steps: int | None = None) -> _GradientMCMC:
    """The move of an annealing engine from a preset name (``"hmc"``, ``"mala"``,
    ``"nuts"``) or an MCMC engine object (returned as it is)."""
    if isinstance(move, str):
        if move not in MOVES:
            raise OptionError(f"annealing: move must be one of {tuple(MOVES)} or an MCMC "
                              f"engine object such as HMC(...), got {move!r}")
        move = MOVES[move]()
        if num_integration_steps is not None and isinstance(move, HMC):
            move = move.replace(num_integration_steps=num_integration_steps)
    if not isinstance(move, _GradientMCMC) and not hasattr(move, "transition"):
        raise OptionError("annealing: move must be an MCMC engine (helmholtz.NUTS(), HMC(), "
                          f"MALA() or one with a transition() method), got {move!r}")
    return move


# --------------------------------------------------------------------------- helpers
def _transition(move, jitter: float = 0.0):
    """``(init_fn, step_fn)`` of the move's kernel, preconditioned by a diagonal inverse
    mass matrix; ``step_fn(rng_key, state, logdensity_fn, step_size,
    inverse_mass_matrix)``.

    With ``jitter`` > 0 every transition uses the step size ε·exp(−jitter·u), u ~ U(0, 1),
    drawn afresh and independently of the state, so each transition still leaves the
    tempered target invariant (a mixture of invariant kernels).
    """
    init_fn, base = move.transition()

    def step_fn(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix):
        if jitter > 0:
            k_eps, rng_key = jax.random.split(rng_key)
            u = jax.random.uniform(k_eps, (), dtype=jnp.result_type(step_size))
            step_size = step_size * jnp.exp(-jitter * u)
        return base(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix)

    return init_fn, step_fn


def _acceptance(info):
    acc = info.acceptance_rate
    return jnp.where(jnp.isnan(acc), 0.0, acc)


def _cloud_variance(positions, weights=None):
    """Per-coordinate variance of the particles (weighted when weights are given), floored
    so that a collapsed coordinate still gets a usable step."""
    if weights is None:
        var = jnp.var(positions, axis=0)
    else:
        mean = weights @ positions
        var = weights @ (positions - mean) ** 2
    return jnp.maximum(var, 1e-6 * jnp.maximum(jnp.max(var), 1e-12))


@dataclass(frozen=True)
class _Annealing(Engine):
    """Options shared by the annealing engines.

    ``move`` is the MCMC engine whose kernel moves the particles (an object such as
    ``HMC(num_integration_steps=10)``, ``MALA()``, ``NUTS(max_num_doublings=5)``, or a
    preset name); its step size is tuned across the population towards the move's
    ``target_acceptance_rate`` (or this engine's, when given).
    """

    population = True
    aliases = {"kernel": "move"}
    num_particles: int = 1000
    move: Any = "hmc"
    num_mcmc_steps: int = 1
    step_size: float = 0.5
    adapt_step_size: bool = True
    target_acceptance_rate: float | None = None
    precondition: bool = True
    step_size_jitter: float = 0.0

    @classmethod
    def translate_options(cls, options: dict) -> dict:
        """``kernel`` is the old name of ``move``; ``num_integration_steps`` sets the
        leapfrog steps of the ``"hmc"`` preset (ignored for other moves, as before)."""
        options = super().translate_options(options)
        steps = options.pop("num_integration_steps", None)
        if steps is not None:
            move = options.get("move", "hmc")
            if isinstance(move, str):
                options["move"] = move_preset(move, int(steps))
        return options

    def __post_init__(self):
        object.__setattr__(self, "move", move_preset(self.move))
        super().__post_init__()

    def validate(self):
        _positive_int(self, "num_particles", "num_mcmc_steps")
        if self.num_particles < 2:
            raise OptionError(f"{self.name}: num_particles must be ≥ 2, got {self.num_particles}")
        _positive_number(self, "step_size")
        _positive_number(self, "step_size_jitter", allow_zero=True)
        _boolean(self, "adapt_step_size", "precondition")
        if self.target_acceptance_rate is not None and not (
                isinstance(self.target_acceptance_rate, float | int)
                and 0 < self.target_acceptance_rate < 1):
            raise OptionError(f"{self.name}: target_acceptance_rate must lie in (0, 1) or be "
                              f"None, got {self.target_acceptance_rate!r}")

    def _acceptance_target(self) -> float:
        if self.target_acceptance_rate is not None:
            return self.target_acceptance_rate
        return self.move.target_acceptance_rate

    def _next_step_size(self, step_size, acceptance):
        """Robbins–Monro-like update of log ε towards the move's optimal acceptance
        (the rule of blackjax's ``update_scale_from_acceptance_rate``)."""
        if not self.adapt_step_size:
            return step_size
        return step_size * jnp.exp(acceptance - self._acceptance_target())


# --------------------------------------------------------------------------- AIS
class AISState(NamedTuple):
    """The particle population: positions ``(N, dim)``, log weights −W ``(N,)``, and the
    inner kernel's step size (shared by all particles)."""

    position: jax.Array
    log_weight: jax.Array
    step_size: jax.Array


@register
@dataclass(frozen=True)
class AIS(_Annealing):
    """Annealed importance sampling (Neal 2001).

    Particles z_0 ~ prior move through π_{β_1}, …, π_{β_K} = target with one MCMC
    transition T_k (leaving π_{β_k} invariant) per temperature, accumulating the work

        W = −Σ_k (β_k − β_{k−1}) log L(z_{k−1}),

    and Jarzynski's equality E[e^{−W}] = Z/Z_0 = Z gives log Ẑ = logsumexp(−W) − log N.
    Its standard error is the larger of the delta method's sqrt(1/ESS − 1/N)
    (:func:`log_mean_exp_se`) and the spread of ten batches of particles
    (:func:`~helmholtz.engines._weights.batch_se`); the estimate is flagged (status
    ``unreliable``) when the weights' Kish ESS is below 30 or their Pareto k̂ above 0.7.

    Options
    -------
    num_particles: N independent AIS runs.
    num_temperatures: K, the temperatures β_1 … β_K after β_0 = 0 (ignored when
    ``schedule`` is a sequence).
    schedule: ``"linear"``, ``"geometric"``, ``"sigmoid"`` or a sequence β_0 = 0 … β_K = 1.
    move: the MCMC engine whose kernel moves the particles, ``HMC(num_integration_steps=5)``
    by default (presets ``"hmc"``, ``"mala"``, ``"nuts"``; NUTS chooses the trajectory
    length per transition, and vmapped over particles a move costs the longest
    particle's tree); ``num_mcmc_steps`` transitions per temperature.
    step_size_jitter: J ≥ 0; each transition uses ε·e^{−J u}, u ~ U(0, 1), a mixture of
    π_β-invariant kernels that reaches scales the one adapted ε misses (a funnel's neck).
    step_size: initial step size (in the coordinates whitened by the particles' variance
    when ``precondition``); with ``adapt_step_size`` it is multiplied by
    exp(acceptance − optimum) after every temperature. The population-wide tuning makes
    the particles weakly dependent; with N in the hundreds the effect on Ẑ is negligible.

    ``result.stats["work"]`` holds W per particle ``(1, N)``, ``result.log_weights`` is
    −W, ``result.config["ess"]`` the weights' effective sample size, and
    ``result.trace`` the per-temperature β, acceptance, step size, ESS and running log Ẑ.
    """

    name = "ais"
    description = "annealed importance sampling (Neal 2001) with HMC/MALA/NUTS transitions"
    aliases = {"kernel": "move", "num_steps": "num_temperatures"}
    num_temperatures: int = 100
    schedule: Any = "sigmoid"

    def __post_init__(self):
        # arrays are not hashable; a tuple keeps the engine usable as a cache key
        if not isinstance(self.schedule, str):
            try:
                sched = tuple(float(b) for b in np.asarray(self.schedule, float).ravel())
            except (TypeError, ValueError):
                raise OptionError(
                    f"ais: schedule must be one of {SCHEDULES} or a sequence of numbers, "
                    f"got {self.schedule!r}") from None
            object.__setattr__(self, "schedule", sched)
        super().__post_init__()

    def validate(self):
        super().validate()
        _positive_int(self, "num_temperatures")
        if isinstance(self.schedule, str):
            if self.schedule not in SCHEDULES:
                raise OptionError(f"ais: schedule must be one of {SCHEDULES} or a sequence "
                                  f"of numbers, got {self.schedule!r}")
            return
        betas = np.asarray(self.schedule)
        if (betas.size < 2 or not np.all(np.isfinite(betas)) or betas[0] != 0.0
                or betas[-1] != 1.0 or np.any(np.diff(betas) < 0)):
            raise OptionError(
                "ais: a schedule sequence must start at 0, end at 1 and never decrease, "
                f"got {self.schedule!r}")

    def betas(self) -> np.ndarray:
        return temperature_schedule(self.schedule, self.num_temperatures)

    # ---- pure functions over the population
    def init(self, rng_key, target, position=None) -> AISState:
        """N draws from the reference, all with log weight 0."""
        z = target.sample_reference(rng_key, self.num_particles)
        return AISState(z, jnp.zeros(z.shape[0], z.dtype), jnp.asarray(self.step_size, z.dtype))

    def step(self, rng_key, target, state: AISState, betas):
        """Temperature k: reweight by (β_k − β_{k−1}) log L(z_{k−1}), then move at β_k
        with the state's step size, preconditioned by the particles' variance."""
        return self.tuned_step(rng_key, target, state, betas)[:2]

    def tuned_step(self, rng_key, target, state: AISState, betas):
        """:meth:`step`, also returning the kernel it used, ``{"step_size",
        "inverse_mass_matrix"}``, so that a reverse run can replay it (:meth:`replay_step`)."""
        imm = (_cloud_variance(state.position) if self.precondition
               else jnp.ones(state.position.shape[1], state.position.dtype))
        kernel = {"step_size": state.step_size, "inverse_mass_matrix": imm}
        new, info = self._step_with(rng_key, target, state, betas, state.step_size, imm)
        return new, info, kernel

    def replay_step(self, rng_key, target, state: AISState, x):
        """One temperature with a given kernel: ``x = {"betas", "step_size",
        "inverse_mass_matrix"}``, typically recorded by :meth:`tuned_step` on a forward
        run and replayed in reverse order, so that the reverse protocol is the time
        reversal of the forward one (what Crooks' theorem needs)."""
        return self._step_with(rng_key, target, state, x["betas"], x["step_size"],
                               x["inverse_mass_matrix"])

    def _step_with(self, rng_key, target, state: AISState, betas, step_size, imm):
        dtype = state.position.dtype
        beta_prev, beta = betas[0].astype(dtype), betas[1].astype(dtype)
        loglik = jax.vmap(target.log_likelihood)(state.position)
        # β may also decrease: reverse AIS (helmholtz.engines.bidirectional) anneals 1 → 0
        incr = jnp.where(beta != beta_prev, (beta - beta_prev) * loglik, 0.0)
        log_weight = state.log_weight + jnp.where(jnp.isnan(incr), -jnp.inf, incr)

        logdensity_fn = target.tempered(beta).log_density  # one model trace per call

        init_fn, kernel_fn = _transition(self.move, self.step_size_jitter)

        def move(key, z):
            def body(s, k):
                s, info = kernel_fn(k, s, logdensity_fn, step_size, imm)
                return s, (_acceptance(info), self.move.grad_evals(info))

            s, (acc, grads) = jax.lax.scan(body, init_fn(z, logdensity_fn),
                                           jax.random.split(key, self.num_mcmc_steps))
            return s.position, jnp.mean(acc), 1 + jnp.sum(grads)  # + the init's gradient

        keys = jax.random.split(rng_key, self.num_particles)
        position, acc, grads = jax.vmap(move)(keys, state.position)
        acc = jnp.mean(acc)
        w = jax.nn.softmax(log_weight)
        info = {"beta": beta, "acceptance_rate": acc, "step_size": step_size,
                "grad_evals": jnp.sum(grads),
                "ess": 1.0 / jnp.sum(w**2),
                "log_z": logsumexp(log_weight) - jnp.log(self.num_particles)}
        new_step = self._next_step_size(step_size, acc).astype(dtype)
        return AISState(position, log_weight, new_step), info

    # ---- the run, as phases the driver runs
    def temperature_pairs(self) -> np.ndarray:
        """Rows (β_{k−1}, β_k), k = 1 … K: the per-step inputs of the annealing phase."""
        betas = self.betas()
        return np.stack([betas[:-1], betas[1:]], axis=1)

    def phases(self, target):
        pairs = self.temperature_pairs()
        return (Phase("annealing", type(self).step, len(pairs), inputs=pairs,
                      postfix=_ais_postfix),)

    def result(self, rng_key, target, state: AISState, infos, run) -> Result:
        log_w = np.asarray(state.log_weight, np.float64)
        log_z, se_delta, ess = log_mean_exp_se(log_w)
        se = float(np.nanmax([se_delta, batch_se(log_w)]))
        info = infos["annealing"]
        note = (f"Jarzynski estimate over {self.num_particles} particles, ESS {ess:.1f}; se "
                "the larger of the delta method's and that of 10 batches' spread")
        fe = FreeEnergy(-log_z, se, "unbiased-Z estimate", note,
                        warning=weights_warning(log_w, ess))
        lp = log_densities(target, state.position, run)
        return assemble(self, target, state.position[None],
                        {"work": -log_w[None], "lp": lp[None]}, run,
                        int(np.sum(info["grad_evals"])), fe, log_weights=log_w[None],
                        config={"ess": ess}, trace=info)


def _ais_postfix(engine, state, info):
    return {"β": f"{float(np.asarray(info['beta'])[-1]):.3g}",
            "ESS": f"{float(np.asarray(info['ess'])[-1]):.0f}"}


def _vmapped_log_density(target, z):
    return jax.vmap(target.log_density)(z)


def log_densities(target, positions, run) -> np.ndarray:
    """log p(z) of every particle, compiled once per Target structure."""
    return np.asarray(run.call(_vmapped_log_density, target, positions))


def __getattr__(name):
    # SMC moved to helmholtz.engines.smc; the old import path keeps working
    if name in ("SMC", "SMCState"):
        from helmholtz.engines import smc

        return getattr(smc, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
