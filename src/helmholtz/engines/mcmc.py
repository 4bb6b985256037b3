"""Gradient-based MCMC engines on blackjax kernels: ``nuts``, ``hmc``, ``mala``.

Every chain adapts its own step size (dual averaging, Hoffman & Gelman 2014) and mass
matrix (Welford windows) on Stan's warmup schedule, using blackjax's public pieces
(``dual_averaging_adaptation``, ``mass_matrix_adaptation``, ``build_schedule``).
We step the schedule ourselves rather than call ``blackjax.window_adaptation(...).run``
because that runs the whole warmup as one opaque scan; here warmup goes through the same
chunked driver as sampling, so it gets a progress bar, a checkpoint and the chain sharding.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
from blackjax.adaptation.step_size import dual_averaging_adaptation
from blackjax.adaptation.window_adaptation import build_schedule

from helmholtz.driver import single_device_shapes
from helmholtz.engines._assemble import assemble
from helmholtz.engines.base import Engine, Phase, _in_range, _positive_int, register
from helmholtz.errors import OptionError
from helmholtz.initialize import (
    engine_initial_positions,
    engine_initial_positions_ahead,
    validate_init_options,
    without_init_options,
)
from helmholtz.result import FreeEnergy, Result

__all__ = ["NUTS", "HMC", "MALA", "MCMCState", "WarmupState"]


class MCMCState(NamedTuple):
    """One chain: the kernel state, the adaptation's state (dual averaging of the step
    size, Welford windows of the mass matrix) and the tuning the kernel uses now; the
    same state serves warmup and sampling."""

    kernel: Any
    da: Any
    mm: Any
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


WarmupState = MCMCState  # the name warmup states had


@dataclass(frozen=True)
class _GradientMCMC(Engine):
    """Shared options of the gradient-based MCMC engines.

    ``chain_group_size=None`` vectorises all chains of a device in one vmap (fastest);
    draws then agree across device counts only up to floating-point rounding, which
    MCMC amplifies. ``chain_group_size=k`` runs each group of k chains as its own
    one-device program (compiled once per device used): the same seed then gives
    bit-identical draws on any number of devices of one kind.

    Chains start where ``init_strategy`` (``"uniform"``, ``"prior"``, ``"median"``) puts
    them, except for the sites in ``init_values`` (``{site: constrained value}``), which
    start at those values, perturbed by Uniform(−``init_jitter``, ``init_jitter``) in
    unconstrained space; see :mod:`helmholtz.initialize`.
    """

    num_warmup: int = 1000
    num_samples: int = 1000
    num_chains: int = 4
    target_acceptance_rate: float = 0.8
    dense_mass: bool = False
    step_size: float = 1.0
    init_strategy: str = "uniform"
    chain_group_size: int | None = None
    init_values: Any = None
    init_jitter: float = 0.0

    def validate(self):
        _positive_int(self, "num_samples", "num_chains")
        if self.chain_group_size is not None:
            _positive_int(self, "chain_group_size")
            if self.num_chains % self.chain_group_size:
                raise OptionError(
                    f"{self.name}: chain_group_size ({self.chain_group_size}) must divide "
                    f"num_chains ({self.num_chains})")
        _positive_int(self, "num_warmup", allow_zero=True)
        _in_range(self, "target_acceptance_rate", 0.0, 1.0)
        if not (isinstance(self.step_size, int | float) and self.step_size > 0):
            raise OptionError(f"{self.name}: step_size must be positive, got {self.step_size!r}")
        validate_init_options(self)

    # ---- what differs between kernels
    def _kernel_init(self, position, logdensity_fn):
        return blackjax.hmc.init(position, logdensity_fn)

    def _kernel(self):
        raise NotImplementedError

    def _extra_stats(self, info) -> dict:
        return {}

    # ---- what other engines use: this kernel as a move
    def transition(self):
        """``(init_fn, step_fn)`` of this engine's kernel, for engines that use it as
        their move (AIS, SMC): ``init_fn(position, logdensity_fn)`` and
        ``step_fn(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix)``."""
        return self._kernel_init, self._kernel()

    def grad_evals(self, info):
        """Gradient evaluations of one transition, from the kernel's info."""
        return self._grad_evals(info)

    # ---- pure functions over one chain
    def _adaptation(self):
        da = dual_averaging_adaptation(self.target_acceptance_rate)
        mm = mass_matrix_adaptation(is_diagonal_matrix=not self.dense_mass)
        return da, mm

    def init(self, rng_key, target, position) -> WarmupState:
        """Warmup state of one chain started at ``position`` (flat unconstrained)."""
        (da_init, _, _), (mm_init, _, _) = self._adaptation()
        mm = mm_init(target.dim)
        return WarmupState(self._kernel_init(position, target.log_density),
                           da_init(self.step_size), mm,
                           jnp.asarray(self.step_size, position.dtype),
                           mm.inverse_mass_matrix.astype(position.dtype))

    def _adapt(self, state: MCMCState, kstate, info, stage) -> MCMCState:
        """One step of Stan's adaptation after a kernel step (``stage = (in a slow
        window, at a window's end, adapting)``)."""
        (da_init, da_update, da_final), (_, mm_update, mm_final) = self._adaptation()
        window, window_end = stage[0], stage[1]
        acc = jnp.where(jnp.isnan(info.acceptance_rate), 0.0, info.acceptance_rate)
        da = da_update(state.da, acc)
        mm = jax.lax.cond(window == 1, lambda m: mm_update(m, kstate.position),
                          lambda m: m, state.mm)

        def end_window(args):
            da, mm = args
            mm = mm_final(mm)
            return da_init(da_final(da)), mm

        da, mm = jax.lax.cond(window_end == 1, end_window, lambda a: a, (da, mm))
        return MCMCState(kstate, da, mm,
                         jnp.exp(da.log_step_size).astype(state.step_size.dtype),
                         mm.inverse_mass_matrix.astype(state.inverse_mass_matrix.dtype))

    def step(self, rng_key, target, state: MCMCState, x=None):
        """One sampling step at the chain's frozen tuning; info holds what the Result
        keeps per draw."""
        kstate, info = self._kernel()(rng_key, state.kernel, target.log_density,
                                      state.step_size, state.inverse_mass_matrix)
        stats = {
            "position": kstate.position,
            "lp": kstate.logdensity,
            "acceptance_rate": info.acceptance_rate,
            "diverging": getattr(info, "is_divergent", jnp.zeros((), bool)),
            "n_steps": self._grad_evals(info),
            "step_size": state.step_size,
            **self._extra_stats(info),
        }
        return state._replace(kernel=kstate), stats

    def warmup_step(self, rng_key, target, state: MCMCState, stage):
        """One kernel step at the current tuning, then one step of Stan's adaptation
        (``stage = (in a slow window, at a window's end)``); info: what the progress
        bar shows. Warmup and sampling are two compiled programs: one shared program
        would have to write every draw's statistics during warmup too, and those scan
        outputs made warmup 1.7× slower on a 100-d Gaussian (measured)."""
        kstate, info = self._kernel()(rng_key, state.kernel, target.log_density,
                                      state.step_size, state.inverse_mass_matrix)
        new = self._adapt(state, kstate, info, stage)
        return new, {"n_steps": self._grad_evals(info),
                     "acceptance_rate": info.acceptance_rate}

    def finalize(self, state: MCMCState) -> MCMCState:
        """Freeze the tuning: the averaged step size and the last window's mass matrix."""
        if self.num_warmup == 0:
            return state
        step = jnp.exp(state.da.log_step_size_avg).astype(state.step_size.dtype)
        return state._replace(step_size=step)

    def _grad_evals(self, info):
        return jnp.asarray(info.num_integration_steps, jnp.int32)

    # ---- the run, as phases the driver runs
    def start(self, rng_key, target, run):
        """Chains at valid points (``init_strategy``, ``init_values``), warmup state."""
        engine = without_init_options(self)
        start_chains_ahead(self, target, rng_key, run, self.num_chains, _init_chains)
        z0 = engine_initial_positions(self, target, rng_key, self.num_chains, run.timer)
        return run.call(_init_chains, engine, target, z0)

    def loop_engine(self):
        return without_init_options(self)

    def phases(self, target):
        return mcmc_phases(self, self.num_warmup, self.num_samples)

    def result(self, rng_key, target, state, infos, run) -> Result:
        info = dict(infos["sampling"])
        # summed in numpy: np.sum of a jax array calls its .sum(), a program to compile
        grad_evals = int(np.asarray(info["n_steps"]).sum())
        if infos["warmup"] is not None:
            grad_evals += int(np.asarray(infos["warmup"]["n_steps"]).sum())
        positions = info.pop("position")
        return assemble(self, target, positions, info, run, grad_evals,
                        FreeEnergy.none("MCMC gives no evidence; use ais, smc or ti"))


def mcmc_phases(engine, num_warmup: int, num_samples: int) -> tuple[Phase, Phase]:
    """Warmup (Stan's windows, then the tuning frozen) and sampling."""
    cls = type(engine)
    return (Phase("warmup", cls.warmup_step, num_warmup, per_chain=True,
                  inputs=_stan_schedule(num_warmup), finish=cls.finalize,
                  postfix=_acceptance_postfix),
            Phase("sampling", cls.step, num_samples, per_chain=True,
                  postfix=_acceptance_postfix))


def start_chains_ahead(engine, target, rng_key, run, num: int, init_chains, *extra):
    """Where the run compiles ahead: the program that finds ``num`` start points goes to
    the compile workers first; the chain states' shapes (``init_chains(engine, target,
    positions, *extra)`` of ``num`` positions) are known before it has run, so the warmup
    and sampling programs are traced meanwhile and compile beside it."""
    if not run.can_compile_ahead():
        return
    engine_initial_positions_ahead(engine, target, rng_key, num)
    positions = jax.ShapeDtypeStruct((num, target.dim), jnp.result_type(float))
    run.start_ahead(init_chains, without_init_options(engine), target,
                    single_device_shapes(positions), *extra)


def _init_chains(engine, target, positions):
    return jax.vmap(lambda p: engine.init(None, target, p))(positions)


def _acceptance_postfix(engine, state, info):
    out = {"acc": f"{float(np.nanmean(np.asarray(info['acceptance_rate']))):.2f}"}
    if "diverging" in info:
        out["div"] = int(np.sum(np.asarray(info["diverging"])))
    return out


@functools.lru_cache(maxsize=32)
def _stan_schedule(num_warmup: int):
    """Stan's warmup windows as an int array (blackjax builds it in a Python loop)."""
    # put on the device as it is: jnp.asarray with a dtype compiles a conversion (cold)
    return jax.device_put(np.asarray(build_schedule(num_warmup), np.int32).reshape(-1, 2))


@register
@dataclass(frozen=True)
class NUTS(_GradientMCMC):
    """The No-U-Turn sampler (Hoffman & Gelman 2014) with multinomial trajectory sampling
    (Betancourt 2017), blackjax's ``nuts`` kernel, and Stan's window adaptation."""

    name = "nuts"
    description = "No-U-Turn sampler (blackjax) with Stan's window adaptation"
    max_num_doublings: int = 10

    def validate(self):
        super().validate()
        _positive_int(self, "max_num_doublings")

    def _kernel(self):
        base = blackjax.nuts.build_kernel()
        return lambda k, s, f, eps, imm: base(k, s, f, eps, imm,
                                              max_num_doublings=self.max_num_doublings)

    def _extra_stats(self, info):
        return {"energy": info.energy, "tree_depth": info.num_trajectory_expansions}


@register
@dataclass(frozen=True)
class HMC(_GradientMCMC):
    """Hamiltonian Monte Carlo with a fixed number of leapfrog steps (Duane et al. 1987;
    Neal 2011); target acceptance 0.65 after Beskos et al. (2013)."""

    name = "hmc"
    description = "Hamiltonian Monte Carlo (blackjax), fixed path length, window adaptation"
    num_integration_steps: int = 10
    target_acceptance_rate: float = 0.65

    def validate(self):
        super().validate()
        _positive_int(self, "num_integration_steps")

    def _kernel(self):
        base = blackjax.hmc.build_kernel()
        return lambda k, s, f, eps, imm: base(k, s, f, eps, imm, self.num_integration_steps)

    def _extra_stats(self, info):
        return {"energy": info.energy}


@register
@dataclass(frozen=True)
class MALA(_GradientMCMC):
    """Metropolis-adjusted Langevin (Roberts & Tweedie 1996), preconditioned by the adapted
    mass matrix; target acceptance 0.574 (Roberts & Rosenthal 1998).

    blackjax's MALA kernel has no mass matrix, so we run it on the whitened coordinates
    u = L⁻¹z (L Lᵀ the inverse mass matrix), which is preconditioned MALA in z.
    """

    name = "mala"
    description = "Metropolis-adjusted Langevin (blackjax), preconditioned, window adaptation"
    target_acceptance_rate: float = 0.574

    def _kernel_init(self, position, logdensity_fn):
        return blackjax.mala.init(position, logdensity_fn)

    def _kernel(self):
        base = blackjax.mala.build_kernel()
        dense = self.dense_mass

        def kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix):
            if dense:
                chol = jnp.linalg.cholesky(inverse_mass_matrix)
                to_z = lambda u: chol @ u
                to_u = lambda z: jsl.solve_triangular(chol, z, lower=True)
                grad_to_u = lambda g: chol.T @ g
                grad_to_z = lambda g: jsl.solve_triangular(chol.T, g, lower=False)
            else:
                scale = jnp.sqrt(inverse_mass_matrix)
                to_z, to_u = (lambda u: scale * u), (lambda z: z / scale)
                grad_to_u, grad_to_z = (lambda g: scale * g), (lambda g: g / scale)
            u_state = blackjax.mcmc.mala.MALAState(
                to_u(state.position), state.logdensity, grad_to_u(state.logdensity_grad))
            new, info = base(rng_key, u_state, lambda u: logdensity_fn(to_z(u)), step_size)
            return blackjax.mcmc.mala.MALAState(
                to_z(new.position), new.logdensity, grad_to_z(new.logdensity_grad)), info

        return kernel

    def _grad_evals(self, info):
        return jnp.ones_like(info.acceptance_rate, jnp.int32)
