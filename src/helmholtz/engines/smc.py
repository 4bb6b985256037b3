"""Adaptive tempered SMC: the ``smc`` engine (blackjax's ``adaptive_tempered_smc``).

The tempering steps are an open-ended phase: the driver runs them in a
``lax.while_loop`` until β = 1 (or ``max_num_temperatures``), in chunks when a progress
bar or a checkpoint is asked for, with the independent replicates as its chains.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc import resampling

from helmholtz.engines._assemble import assemble
from helmholtz.engines._weights import batch_se
from helmholtz.engines.annealing import (
    _acceptance,
    _Annealing,
    _cloud_variance,
    _transition,
    log_densities,
    log_mean_exp_se,
)
from helmholtz.engines.base import Phase, _in_range, _positive_int, register
from helmholtz.errors import OptionError
from helmholtz.result import FreeEnergy, Result, Status

__all__ = ["SMC", "SMCState"]

_TRACE = ("beta", "log_z_increment", "acceptance_rate", "step_size")


class SMCState(NamedTuple):
    """One SMC replicate: blackjax's tempered state, the move's step size, the running
    log Ẑ, the tempering steps taken, the gradient evaluations (a float: counts overflow
    int32 in long runs) and the per-step trace (NaN beyond the steps taken)."""

    smc: Any
    step_size: jax.Array
    log_z: jax.Array
    num_steps: jax.Array
    grad_evals: jax.Array
    trace: dict


@register
@dataclass(frozen=True)
class SMC(_Annealing):
    """Adaptive tempered SMC (Del Moral, Doucet & Jasra 2006; Jasra et al. 2011) on
    blackjax's ``adaptive_tempered_smc`` kernel with systematic resampling.

    Each step picks β_{t+1} so that the incremental weights L^{β_{t+1}−β_t} keep the ESS
    at ``target_ess`` · N (bisection), resamples, moves every particle with
    ``num_mcmc_steps`` transitions of ``move`` at β_t, and multiplies Ẑ by the mean
    incremental weight: log Ẑ = Σ_t ``info.log_likelihood_increment``. Steps run until
    β = 1 or ``max_num_temperatures``. Between steps the kernel is preconditioned by the
    weighted particle variance and its step size follows the acceptance rate.

    Each transition draws its own step ε·e^{−J u}, u ~ U(0, 1), J = ``step_size_jitter``
    (default 2; 0 turns it off; AIS keeps 0). One ε tuned to the population's mean
    acceptance can be too long for a narrow minority of particles: on the zoo's
    ``unequal_mixture`` (a narrow component of weight 0.2, scale 0.5, in 5-d) most
    replicates ended with too few particles in it, and the error bars did not cover the
    loss (sd of the z-scores 2.7 over 60 seeds, unflagged runs up to 12 se off; a fixed
    short step, ε = 0.1 without adaptation, or no preconditioner, met the bar); on the
    10-d ``banana`` every replicate came out ≈ 0.2 low (sd 2.2). With J = 2: sd 1.5 and
    1.2 over 60 seeds, 1.2 and 1.0 with the Student factor of the se below
    (``benchmarks/honesty.py``; its README section has the table). The cost: on
    ``many_well`` the sd rose from 1.25 to 1.5 (before the factor). A drawn step is
    independent of the state, so each transition still leaves π_β invariant.

    Standard error: ``num_replicates`` independent SMC runs (``num_particles`` each). F
    reports log of the mean of the R unbiased Ẑ_r (still unbiased for Z), and se =
    c_R · std(log Ẑ_r)/√R with c_R = t_{0.975, R−1}/z_{0.975} (1.21 at the default
    R = 8): std/√R alone gives z-scores (log Ẑ − log Z)/(std/√R) that are roughly
    Student-t with R − 1 degrees of freedom (t₇: sd 1.18, one run in 200 beyond 4), and
    c_R makes ±1.96 se the t interval (z-scores of sd ≈ 0.98). We chose replicates over
    single-run variance estimators (Lee & Whiteley 2018) for simplicity and robustness:
    the estimate's spread is measured, not modelled. All R·N final particles are returned
    as one chain; their log weights are normalised within each replicate (replicates
    weigh equally). ``result.config`` holds ``replicate_log_z``, ``num_tempering_steps``
    and the pooled ``ess``; ``result.trace`` the first replicate's β, log-Ẑ increments,
    acceptance and step size per tempering step. A run that reaches
    ``max_num_temperatures`` before β = 1 has status ``max_steps``.

    The replicates are the driver's chains: vectorised together by default, sharded over
    devices when there are several; ``chain_group_size=1`` runs each replicate as its own
    program (its particles still vectorised), which gives the same log Z and particles
    on any device count, at about twice the run time (gmm40, 8 × 1000 particles).
    """

    name = "smc"
    description = ("adaptive tempered SMC (blackjax) with HMC/MALA/NUTS moves, systematic "
                   "resampling")
    population = False  # the replicates are the driver's chains; particles live inside
    aliases = {"kernel": "move", "max_steps": "max_num_temperatures"}
    num_mcmc_steps: int = 5
    target_ess: float = 0.5
    num_replicates: int = 8
    max_num_temperatures: int = 500
    step_size_jitter: float = 2.0
    chain_group_size: int | None = None

    def validate(self):
        super().validate()
        _positive_int(self, "num_replicates", "max_num_temperatures")
        if self.chain_group_size is not None:
            _positive_int(self, "chain_group_size")
            if self.num_replicates % self.chain_group_size:
                raise OptionError(f"smc: chain_group_size ({self.chain_group_size}) must "
                                  f"divide num_replicates ({self.num_replicates})")
        _in_range(self, "target_ess", 0.0, 1.0)

    # ---- pure functions over one replicate
    def init(self, rng_key, target, position=None) -> SMCState:
        z = target.sample_reference(rng_key, self.num_particles)
        dtype = z.dtype
        smc = blackjax.adaptive_tempered_smc.init(z)
        smc = smc._replace(tempering_param=jnp.zeros((), dtype))
        nan = jnp.full((self.max_num_temperatures,), jnp.nan, dtype)
        return SMCState(smc, jnp.asarray(self.step_size, dtype), jnp.zeros((), dtype),
                        jnp.zeros((), jnp.int32), jnp.zeros((), dtype),
                        {k: nan for k in _TRACE})

    def step(self, rng_key, target, state: SMCState, x=None):
        """One tempering step: choose β, reweight, resample, move.

        blackjax's tempered kernel moves the particles at the current β on
        ``log_prior + β · log_likelihood``, two model traces per gradient; the move here
        is given the Target's one-trace tempered view at that same β instead (the
        density blackjax passes in is ignored), which is the same function.
        """
        init_fn, kernel_fn = _transition(self.move, self.step_size_jitter)
        logdensity = target.tempered(state.smc.tempering_param).log_density
        kernel = blackjax.adaptive_tempered_smc.build_kernel(
            target.log_prior, target.log_likelihood,
            lambda key, s, _, **params: kernel_fn(key, s, logdensity, **params),
            lambda position, _: init_fn(position, logdensity),
            resampling.systematic, self.target_ess)
        particles = state.smc.particles
        dtype = particles.dtype
        imm = (_cloud_variance(particles, state.smc.weights) if self.precondition
               else jnp.ones(particles.shape[1], dtype))
        params = {"step_size": state.step_size[None], "inverse_mass_matrix": imm[None]}
        smc, info = kernel(rng_key, state.smc, self.num_mcmc_steps, params)
        acc = jnp.mean(_acceptance(info.update_info))
        i = state.num_steps
        row = {"beta": smc.tempering_param, "log_z_increment": info.log_likelihood_increment,
               "acceptance_rate": acc, "step_size": state.step_size}
        trace = {k: state.trace[k].at[i].set(row[k]) for k in _TRACE}
        # every particle's move starts with one gradient (the kernel's init)
        grads = self.num_particles + jnp.sum(self.move.grad_evals(info.update_info))
        return SMCState(smc, self._next_step_size(state.step_size, acc).astype(dtype),
                        state.log_z + info.log_likelihood_increment, i + 1,
                        state.grad_evals + grads.astype(dtype), trace), None

    def reached_one(self, state: SMCState):
        return state.smc.tempering_param >= 1.0 - 1e-6

    # ---- the run
    def start(self, rng_key, target, run):
        return run.call(_init_replicates, self, jax.random.split(rng_key, self.num_replicates),
                        target)

    def phases(self, target):
        cls = type(self)
        return (Phase("tempering", cls.step, self.max_num_temperatures, per_chain=True,
                      until=cls.reached_one, postfix=_smc_postfix),)

    def result(self, rng_key, target, state: SMCState, infos, run) -> Result:
        log_z_r = np.asarray(state.log_z, np.float64)
        steps = np.asarray(state.num_steps)
        betas = np.asarray(state.smc.tempering_param)
        r = self.num_replicates
        log_z, se, warning = _replicate_estimate(log_z_r)
        note = (f"{r} replicate runs of {self.num_particles} particles, "
                f"{int(steps.mean())} tempering steps on average")
        status = Status("unreliable", warning) if warning else Status()
        if np.any(betas < 1.0 - 1e-6):
            status = Status("max_steps", f"max_num_temperatures={self.max_num_temperatures} "
                            f"reached before β = 1 (β = {betas.min():.3g}): the estimate is "
                            "for a tempered target")
        log_w = np.log(np.asarray(state.smc.weights, np.float64)).reshape(1, -1)
        positions = state.smc.particles.reshape((1, -1, target.dim))
        lp = log_densities(target, positions[0], run)
        n0 = int(steps[0])
        return assemble(
            self, target, positions, {"lp": lp[None]}, run,
            int(np.sum(np.asarray(state.grad_evals, np.float64))),
            FreeEnergy(-log_z, se, "unbiased-Z estimate", note,
                       warning="" if status.ok else status.message),
            log_weights=log_w, status=status,
            config={"replicate_log_z": log_z_r.tolist(), "num_tempering_steps": steps.tolist(),
                    "ess": log_mean_exp_se(log_w)[2]},
            trace={k: np.asarray(v[0, :n0]) for k, v in state.trace.items()})


DOMINANT_SHARE = 0.5
"""A replicate whose Ẑ_r is more than this share of Σ_r Ẑ_r flags the estimate."""


@functools.lru_cache(maxsize=64)
def _student_factor(r: int) -> float:
    """t_{0.975, R−1} / z_{0.975}: how much wider the 95% interval of a mean is when its
    spread comes from R samples (Student) than when it is known (normal); 1.21 at R = 8,
    1.62 at R = 4, 6.5 at R = 2.

    Measured why it is needed (``benchmarks/honesty.py``, 60 seeds, R = 8): without it,
    SMC's z-scores on the banana spread like Student's t₇ (sd 1.2), and one run in 60 fell
    4.4–4.6 se from the exact log Z on both jax stacks, as t₇ puts one beyond 4 in 60
    about a quarter of the time.
    """
    from scipy import stats

    return float(stats.t.ppf(0.975, r - 1) / stats.norm.ppf(0.975))


def _replicate_estimate(log_z_r) -> tuple[float, float, str]:
    """log Ẑ = log mean_r Ẑ_r over independent replicates, its standard error and a
    warning.

    The se is the larger of sd(log Ẑ_r)/√R and sd(Ẑ_r/Ẑ)/√R (the delta method on the
    mean of Ẑ_r, which is what the estimate is): when Ẑ_r is right-skewed, as when a few
    replicates find a mode or tail the others miss, the second is the larger and covers
    the error. That spread is estimated from R values only, so the se is multiplied by
    :func:`_student_factor` (1.21 for R = 8): ±1.96 se is then the Student-t 95%
    interval of R replicates, not a normal one too short by that factor. One replicate
    carrying more than half of Σ Ẑ_r is flagged: the estimate then rests on one run, and
    the runs that missed what it found suggest that all might have.
    """
    log_z_r = np.asarray(log_z_r, np.float64).ravel()
    r = log_z_r.size
    finite = log_z_r[np.isfinite(log_z_r)]
    if finite.size == 0:
        return -math.inf, math.nan, "every replicate's Ẑ is 0 (log Ẑ = −inf)"
    log_z = float(np.logaddexp.reduce(log_z_r) - np.log(r))
    if r < 2:
        return log_z, math.nan, ""
    share = np.exp(log_z_r - np.logaddexp.reduce(log_z_r))
    se = batch_se(log_z_r, num_batches=r)  # each replicate is a batch of one Ẑ_r
    if finite.size == r:
        se = max(se, float(np.std(log_z_r, ddof=1) / math.sqrt(r)))
    se *= _student_factor(r)
    warning = ""
    if r >= 4 and share.max() > DOMINANT_SHARE:
        warning = (f"one of {r} replicates carries {100 * share.max():.0f}% of Ẑ (the "
                   "replicates disagree: a mode or tail found by few runs); use more "
                   "particles or replicates")
    return log_z, se, warning


def _init_replicates(engine, keys, target):
    return jax.vmap(lambda k: engine.init(k, target))(keys)


def _smc_postfix(engine, state, info):
    return {"β": f"{float(np.min(np.asarray(state.smc.tempering_param))):.3g}"}
