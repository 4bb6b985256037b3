"""Particle gradient flows of F[q] = KL(q‖p) − log Z: ``langevin``, ``svgd`` and ``wfr``
(``fisher-rao``, the pure reweighting flow, is in :mod:`helmholtz.engines.fisher_rao`).

Each engine moves a population of particles (``wfr`` their log weights too) by one of
the metric objects of :mod:`helmholtz.flows`:

* ``langevin`` — the Wasserstein flow, the entropy as Brownian noise (ULA), optionally
  Metropolis-adjusted (blackjax's MALA kernel). Particles stay in the basin they start in
  for as long as crossing a barrier takes.
* ``svgd`` — the kernelised Wasserstein flow (Liu & Wang 2016), deterministic, with an
  optax optimiser on the direction.
* ``wfr`` — Langevin moves and birth–death by the kernel-smoothed Fisher–Rao rate
  log q̂ − log p (Lu, Lu & Nolen 2019): the moves explore a mode, the reweighting moves
  mass between modes the Langevin particles cannot cross between.

They are population engines (the particle axis is sharded over devices). The Result's
draws are the final particles (with log weights for ``wfr``), ``result.trace`` holds
E_q[U] (U = −log p̃) per step, and ``result.estimates["F[q]"]`` is E_q[U] − Ŝ(q) with the
Kozachenko–Leonenko nearest-neighbour entropy, the free energy the flow minimises. With
``keep_particles`` the particles of every step are in the trace too
(:func:`free_energy_trace` turns them into F[q_t]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from helmholtz.engines._assemble import assemble
from helmholtz.engines._particles import (  # WEIGHT_COLLAPSE_ESS: re-exported
    WEIGHT_COLLAPSE_ESS,  # noqa: F401
    ParticleState,
    _check_start,
    _collapse_status,
    _ess,
    _free_energy_of_q,
    _resample_if,
    _value_and_score,
)
from helmholtz.engines.base import (
    Engine,
    Phase,
    _boolean,
    _in_range,
    _positive_int,
    _positive_number,
    register,
)
from helmholtz.engines.fisher_rao import FisherRaoFlow, FRState
from helmholtz.errors import OptionError
from helmholtz.flows import (
    FisherRao,
    KernelWasserstein,
    Wasserstein,
    free_energy_trace,
    kde_log_density,
    knn_entropy,
    knn_log_density,
)
from helmholtz.result import FreeEnergy

__all__ = ["Langevin", "SVGD", "WFRFlow", "ParticleState", "free_energy_trace",
           "knn_entropy", "FisherRaoFlow", "FRState"]


@dataclass(frozen=True)
class _ParticleFlow(Engine):
    """Options every particle flow shares.

    num_particles: N; num_steps: flow steps; step_size: h of the flow's time step;
    init_positions: ``(N, dim)`` or ``(dim,)`` flat unconstrained starting points (default:
    N draws from the Target's reference, its prior); keep_particles: record the particles
    at every step in ``result.trace["positions"]`` (for pictures; N · dim · num_steps
    numbers).
    """

    population = True
    num_particles: int = 1000
    num_steps: int = 1000
    step_size: float = 0.01
    init_positions: Any = None
    keep_particles: bool = False

    def validate(self):
        _positive_int(self, "num_steps")
        _positive_int(self, "num_particles")
        if self.num_particles < 2:
            raise OptionError(f"{self.name}: num_particles must be ≥ 2, got "
                              f"{self.num_particles}")
        _positive_number(self, "step_size")
        _boolean(self, "keep_particles")

    def loop_engine(self):
        return self.replace(init_positions=None) if self.init_positions is not None else self

    def _initial(self, rng_key, target, num):
        if self.init_positions is None:
            return target.sample_reference(rng_key, num)
        z = np.asarray(self.init_positions, np.float64)
        if z.ndim == 1:
            z = np.broadcast_to(z, (num, z.size))
        if z.ndim != 2 or z.shape != (num, target.dim):
            raise OptionError(
                f"{self.name}: init_positions must have shape ({num}, {target.dim}) or "
                f"({target.dim},) (flat unconstrained), got {np.shape(self.init_positions)}")
        return jnp.asarray(z, jnp.result_type(float))

    def start(self, rng_key, target, run):
        k_init, k_state = jax.random.split(rng_key)
        z0 = self._initial(k_init, target, self.num_particles)
        state = run.call(type(self).init, self.loop_engine(), k_state, target, z0)
        _check_start(self.name, target, state.log_density)
        return state

    def init(self, rng_key, target, position=None) -> ParticleState:
        z = target.sample_reference(rng_key, self.num_particles) if position is None \
            else position
        lp, score = _value_and_score(target, z)
        lw = jnp.full((z.shape[0],), -jnp.log(z.shape[0]), z.dtype)
        return ParticleState(z, lp, score, lw, self._opt_init(z))

    def _opt_init(self, z):
        return ()

    def _info(self, state: ParticleState, **extra):
        w = jax.nn.softmax(state.log_weight)
        info = {"energy": -jnp.sum(w * state.log_density), "ess": _ess(state.log_weight),
                **extra}
        if self.keep_particles:
            info["positions"] = state.position
            if self._weighted():
                info["log_weights"] = state.log_weight
        return info

    def phases(self, target):
        return (Phase("flow", type(self).step, self.num_steps, postfix=_flow_postfix),)

    def result(self, rng_key, target, state: ParticleState, infos, run):
        info = infos["flow"]
        log_w = np.asarray(state.log_weight, np.float64)
        weighted = self._weighted()
        f_q = _free_energy_of_q(np.asarray(state.position, np.float64), log_w,
                                np.asarray(state.log_density, np.float64))
        fe = FreeEnergy(math.nan, math.nan, "none",
                        f"{self.name} returns draws, not log Z; estimates['F[q]'] is the free "
                        "energy of the particles, E_q[U] − Ŝ(q)")
        status = _collapse_status(self.name, info.get("ess"), weighted)
        grad_evals = self.num_particles * (self.num_steps + 1)
        return assemble(self, target, state.position[None],
                        {"lp": np.asarray(state.log_density)[None]}, run, grad_evals, fe,
                        log_weights=log_w[None] if weighted else None,
                        estimates={"F[q]": f_q}, trace=info, status=status,
                        config={"ess": float(np.exp(2 * np.logaddexp.reduce(log_w)
                                                    - np.logaddexp.reduce(2 * log_w)))})

    def _weighted(self) -> bool:
        return False


def _flow_postfix(engine, state, info):
    w = jax.nn.softmax(state.log_weight)
    return {"E[U]": f"{float(-np.sum(np.asarray(w * state.log_density))):.4g}"}


# --------------------------------------------------------------------------- Langevin
@register
@dataclass(frozen=True)
class Langevin(_ParticleFlow):
    """Particles under overdamped Langevin dynamics: the Wasserstein gradient flow of
    KL(q‖p), dX = ∇log p(X) dt + √2 dW (Jordan, Kinderlehrer & Otto 1998).

    ``metropolis=False``: the unadjusted Langevin algorithm (Euler–Maruyama), whose
    stationary law is p only up to O(h): for a Gaussian target N(μ, Σ) it is N(μ, Σ')
    with Σ' = Σ (I − hΣ⁻¹/2)⁻¹ ≈ Σ + (h/2) I (Roberts & Tweedie 1996).
    ``metropolis=True``: every step is a MALA proposal accepted or rejected (blackjax's
    kernel), which leaves p exactly invariant.
    The particles are independent: what they find in num_steps · h of time is what one
    chain finds, and a barrier of height ΔU is crossed after a time of order e^{ΔU}.
    """

    name = "langevin"
    approximate = ("with metropolis=False (ULA) the stationary law is p only up to O(step_size); "
                   "MALA-adjusted runs are exact")
    description = "overdamped Langevin particles (ULA, or MALA-adjusted): the Wasserstein flow"
    metropolis: bool = False

    def validate(self):
        super().validate()
        _boolean(self, "metropolis")

    def step(self, rng_key, target, state: ParticleState, x=None):
        position, lp, score, acc = _langevin_move(rng_key, target, state, self.step_size,
                                                  self.metropolis)
        new = state._replace(position=position, log_density=lp, score=score)
        return new, self._info(new, acceptance_rate=acc)


def _langevin_move(rng_key, target, state, step_size, metropolis):
    """One ULA step (the Wasserstein metric's ``langevin``) or one MALA transition:
    new positions, log p̃ and its gradient there, and the acceptance rate."""
    if metropolis:
        return _mala_move(rng_key, target, state, step_size)
    position = Wasserstein(step_size).langevin(rng_key, state.position, state.score)
    lp, score = _value_and_score(target, position)
    return position, lp, score, jnp.ones((), position.dtype)


def _mala_move(rng_key, target, state, step_size):
    # blackjax's MALA proposes x + ε∇log p + √(2ε) ξ, the ULA step of Wasserstein.langevin
    kernel = blackjax.mala.build_kernel()
    mala_states = blackjax.mcmc.mala.MALAState(state.position, state.log_density,
                                               state.score)
    keys = jax.random.split(rng_key, state.position.shape[0])

    def one(k, s):
        return kernel(k, s, target.log_density, step_size)

    new, info = jax.vmap(one)(keys, mala_states)
    return new.position, new.logdensity, new.logdensity_grad, jnp.mean(info.acceptance_rate)


# --------------------------------------------------------------------------- SVGD
@register
@dataclass(frozen=True)
class SVGD(_ParticleFlow):
    """Stein variational gradient descent (Liu & Wang 2016): particles follow the
    kernelised Wasserstein direction φ of :class:`helmholtz.flows.KernelWasserstein`
    (RBF kernel, ``bandwidth=None``: the median heuristic each step), by an optax
    optimiser on −φ (``optimizer``; default ``optax.adam(step_size)``). With the median
    heuristic Σⱼ k(xᵢ, xⱼ)/N is about 1/N, so the plain flow (``optax.sgd``) moves the
    particles N times slower than Langevin at the same step; Liu & Wang used AdaGrad for
    this reason. Measured on a 2-d Gaussian from N(0, 3²), N = 500: sgd(0.2) had the
    variance still 1.9× too large after 600 steps, adam(0.05) within 4 % after 300.

    Deterministic once started; no noise, so the O(N²) repulsion is what spreads the
    particles. With a fixed kernel the fixed point matches p's moments only as far as
    the kernel space allows: for a Gaussian target and N in the hundreds the variance is
    within a few per cent (it is underestimated in high dimension; Ba et al. 2021).
    """

    name = "svgd"
    approximate = ("a finite particle set under a fixed kernel: moments within a few per cent "
                   "in low dimension, variances underestimated in high dimension")
    description = "Stein variational gradient descent (RBF kernel, median heuristic, optax)"
    step_size: float = 0.05
    optimizer: Any = None
    bandwidth: float | None = None

    def validate(self):
        super().validate()
        if self.bandwidth is not None:
            _positive_number(self, "bandwidth")
        if self.optimizer is not None and not isinstance(self.optimizer,
                                                         optax.GradientTransformation):
            raise OptionError("svgd: optimizer must be an optax.GradientTransformation "
                              f"(e.g. optax.adam(0.05)) or None, got {self.optimizer!r}")

    def _initial(self, rng_key, target, num):
        if self.init_positions is not None and np.ndim(self.init_positions) == 1:
            raise OptionError("svgd: init_positions must be N distinct points (N, dim): SVGD "
                              "is deterministic, and particles that start together stay "
                              "together")
        return super()._initial(rng_key, target, num)

    def _optimizer(self):
        return self.optimizer if self.optimizer is not None else optax.adam(self.step_size)

    def _opt_init(self, z):
        return self._optimizer().init(z)

    def step(self, rng_key, target, state: ParticleState, x=None):
        phi = KernelWasserstein(self.bandwidth).direction(state.position, state.score)
        updates, opt_state = self._optimizer().update(-phi, state.opt_state, state.position)
        position = optax.apply_updates(state.position, updates)
        lp, score = _value_and_score(target, position)
        new = ParticleState(position, lp, score, state.log_weight, opt_state)
        return new, self._info(new, step_norm=jnp.sqrt(jnp.mean(jnp.sum(phi**2, -1))))


# --------------------------------------------------------------------------- WFR
@register
@dataclass(frozen=True)
class WFRFlow(_ParticleFlow):
    """Wasserstein–Fisher–Rao particles (Lu, Lu & Nolen 2019): each step a Langevin move
    (the Wasserstein half; MALA-adjusted with ``metropolis``), then the Fisher–Rao half on
    the weights, log w ← log w − h_FR (v − E_w v) with v = log q̂(x) − log p̃(x), q̂ the
    weighted density estimate of the particles: from each one's ⌈√N⌉ nearest neighbours
    (``bandwidth=None``, adaptive to each mode's scale) or a Gaussian kernel of the given
    ``bandwidth`` (the smoothed rate of the paper). The weights are resampled
    (systematic) when their ESS drops below ``resample_threshold`` · N, which is the
    birth–death of the paper in the reweight–resample form.

    The reweighting moves mass between modes that the Langevin particles cannot cross
    between, so mode weights come out right when every mode holds some particles; mass
    in a mode no particle reaches cannot be born. The density estimate biases the FR half
    (smoothing pulls weight from the tails), which the Langevin half only partly
    counteracts: on a correlated 2-d Gaussian ``fisher_rao_step`` = step_size / 5 keeps
    the covariance within Monte Carlo error of N = 1000.
    """

    name = "wfr"
    approximate = ("ULA moves (O(step_size)) and a kernel-smoothed birth–death rate "
                   "(O(bandwidth²)) bias the stationary law")
    description = "Wasserstein–Fisher–Rao: Langevin moves plus kernel birth–death"
    fisher_rao_step: float | None = None
    metropolis: bool = False
    bandwidth: float | None = None
    resample_threshold: float = 0.5

    def validate(self):
        super().validate()
        _boolean(self, "metropolis")
        for name in ("fisher_rao_step", "bandwidth"):
            if getattr(self, name) is not None:
                _positive_number(self, name)
        _in_range(self, "resample_threshold", -1e-9, 1.0 + 1e-9)

    def _weighted(self):
        return True

    def step(self, rng_key, target, state: ParticleState, x=None):
        k_move, k_res = jax.random.split(rng_key)
        position, lp, score, acc = _langevin_move(k_move, target, state, self.step_size,
                                                  self.metropolis)
        log_q = (knn_log_density(position, state.log_weight) if self.bandwidth is None
                 else kde_log_density(position, position, state.log_weight, self.bandwidth))
        h_fr = self.step_size if self.fisher_rao_step is None else self.fisher_rao_step
        log_w = FisherRao(h_fr).reweight(state.log_weight, log_q - lp)
        moved = ParticleState(position, lp, score, log_w, ())
        ess = _ess(log_w)
        new, resampled, _ = _resample_if(k_res, moved, self.resample_threshold)
        return new, self._info(moved, acceptance_rate=acc, resampled=resampled,
                               ess=ess)
