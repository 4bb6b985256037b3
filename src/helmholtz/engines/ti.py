"""Thermodynamic integration and the stepping-stone estimator: the ``ti`` engine.

Both integrate along the power posterior path π_β(z) ∝ prior(z) · L(z)^β from the
Target's proper reference (β = 0, log Z_0 = 0) to the Target (β = 1), with NUTS run
independently at every rung of a fixed ladder 0 = β_0 < … < β_{R−1} = 1:

* stepping stone (Xie, Lewis, Fan, Kuo & Chen 2011, Syst. Biol. 60, 150):
  Z = Π_k Z_{β_k}/Z_{β_{k−1}}, and each ratio is E_{π_{β_{k−1}}}[L^{β_k − β_{k−1}}],
  estimated by the mean over the draws at β_{k−1}. This is the reported free energy.
* thermodynamic integration (Ogata 1989; Gelman & Meng 1998; Friel & Pettitt 2008):
  log Z = ∫_0^1 E_{π_β}[log L] dβ by the trapezoid rule on the ladder, corrected with
  the rungs' variances (Friel, Hurn & Wyse 2014); kept in ``result.config``, it carries
  a discretisation error that the stepping stone does not.

Every rung's chains are ordinary NUTS chains (:class:`~helmholtz.engines.mcmc.NUTS`'s
``init``, ``warmup_step``, ``finalize`` and ``step``) on a tempered view of the Target;
all ``num_rungs × num_chains`` chains run as one vmapped batch through the driver, with
β carried in each chain's state.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from helmholtz.engines._assemble import assemble
from helmholtz.engines.base import Engine, _in_range, _positive_int, register
from helmholtz.engines.mcmc import NUTS, mcmc_phases, start_chains_ahead
from helmholtz.errors import OptionError
from helmholtz.initialize import (
    engine_initial_positions,
    validate_init_options,
    without_init_options,
)
from helmholtz.result import FreeEnergy, Result

__all__ = ["TI", "TIState", "power_ladder", "stepping_stone", "thermodynamic_integral"]


class TIState(NamedTuple):
    """One chain of one rung: the NUTS state (warmup or sampling) and its β."""

    inner: Any
    beta: jax.Array


def power_ladder(num_rungs: int, power: float = 5.0) -> np.ndarray:
    """β_k = (k / (R − 1))^power for k = 0 … R − 1 (Friel & Pettitt 2008).

    A large power puts most rungs near β = 0, where E_β[log L] changes fastest.
    """
    return (np.arange(num_rungs) / (num_rungs - 1)) ** power


def _ess_mean(x: np.ndarray) -> float:
    """arviz's ESS for the mean of ``x`` with shape ``(chain, draw)``; N when constant."""
    import arviz as az

    if not np.all(np.isfinite(x)) or np.ptp(x) == 0.0:
        return float(x.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = float(az.ess(np.asarray(x, np.float64), method="mean"))
    return ess if np.isfinite(ess) and ess > 0 else float(x.size)


def stepping_stone(betas, log_likelihood) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Stepping-stone estimate of log Z (Xie et al. 2011) and its standard error.

    Parameters
    ----------
    betas
        The ladder, shape ``(R,)``, from 0 to 1.
    log_likelihood
        log L at the draws of every rung, shape ``(R, chains, draws)``.

    Returns
    -------
    log_z, se, log_ratio, ess
        log Ẑ = Σ_k log r̂_k with r̂_k = mean over the draws at β_{k−1} of
        exp((β_k − β_{k−1}) log L); ``log_ratio`` has r̂_k at index k (0 at index 0).
        se² = Σ_k var(w_k)/(ESS_k · mean(w_k)²) (delta method; rungs are independent),
        with ESS_k arviz's ESS for the mean of the weights w_k across the rung's chains
        (``ess``, index k − 1 ↦ k as for ``log_ratio``).
    """
    betas = np.asarray(betas, np.float64)
    ll = np.asarray(log_likelihood, np.float64)
    num = len(betas)
    log_ratio, ess, var = np.zeros(num), np.full(num, np.nan), np.zeros(num)
    for k in range(1, num):
        a = (betas[k] - betas[k - 1]) * np.where(np.isnan(ll[k - 1]), -np.inf, ll[k - 1])
        top = np.max(a)
        if not np.isfinite(top):
            return -math.inf, math.nan, log_ratio, ess
        w = np.exp(a - top)
        log_ratio[k] = top + np.log(np.mean(w))
        ess[k] = _ess_mean(w)
        var[k] = np.var(w) / (ess[k] * np.mean(w) ** 2)
    return float(np.sum(log_ratio)), float(np.sqrt(np.sum(var))), log_ratio, ess


def thermodynamic_integral(betas, log_likelihood) -> tuple[float, float, np.ndarray,
                                                           np.ndarray]:
    """Thermodynamic integration log Z = ∫_0^1 E_β[log L] dβ by the corrected trapezoid
    rule of Friel, Hurn & Wyse (2014, Stat. Comput. 24, 709).

    The integrand's derivative is d/dβ E_β[log L] = var_β(log L), so the trapezoid
    rule's leading error term can be subtracted with the rungs' variances V_k:

        log Z ≈ Σ_k Δβ_k (E_k + E_{k−1})/2 − Σ_k Δβ_k² (V_k − V_{k−1})/12.

    Returns ``(log_z, se, mean, ess)``: the estimate, the Monte Carlo standard error of
    its trapezoid part (rungs independent; each rung's mean with arviz's ESS), and per
    rung the mean of log L and its ESS. The remaining discretisation error is not in
    ``se``.
    """
    betas = np.asarray(betas, np.float64)
    ll = np.asarray(log_likelihood, np.float64)
    mean = ll.mean(axis=(1, 2))
    var = ll.var(axis=(1, 2))
    ess = np.array([_ess_mean(rung) for rung in ll])
    db = np.diff(betas)
    weights = np.zeros_like(betas)
    weights[:-1] += 0.5 * db
    weights[1:] += 0.5 * db
    log_z = weights @ mean - np.sum(db**2 * np.diff(var)) / 12.0
    return float(log_z), float(np.sqrt(weights**2 @ (var / ess))), mean, ess


@register
@dataclass(frozen=True)
class TI(Engine):
    """Stepping-stone / thermodynamic-integration evidence with NUTS at every rung.

    Runs ``num_chains`` NUTS chains (Stan's window adaptation, ``num_warmup`` then
    ``num_samples`` draws) at each of ``num_rungs`` inverse temperatures
    β_k = (k/(R − 1))^``ladder_power`` on the power posterior prior · L^β, all chains in
    one vectorised batch. Then

        log Ẑ_SS = Σ_k log mean_{z ~ π_{β_{k−1}}} exp((β_k − β_{k−1}) log L(z))

    (stepping stone, Xie et al. 2011) is the reported free energy F = −log Ẑ_SS, kind
    ``"unbiased-Z estimate"``: each ratio is unbiased when the draws at a rung are exact,
    and the rungs are independent, so Ẑ_SS is unbiased up to the chains' burn-in bias.
    Its se is the delta method with arviz's ESS of the importance weights at each rung.
    The (corrected) trapezoid TI estimate of ∫ E_β[log L] dβ and its Monte Carlo se are
    in ``result.config["ti_log_z"]``, ``["ti_se"]``.

    Samples and per-draw stats are those of the β = 1 rung's chains. ``result.trace``
    holds per rung: ``beta``, ``mean_log_likelihood``, ``log_ratio`` (log r̂_k),
    ``log_z`` (running stepping-stone log Ẑ_{β_k}), ``ess`` (of the stepping-stone
    weights drawn at that rung, NaN at the last), ``acceptance_rate``, ``step_size`` and
    ``divergences``.

    Options
    -------
    num_rungs: R ≥ 2 rungs including β = 0 and β = 1 (default 16).
    ladder_power: spacing exponent of the ladder (default 5, Friel & Pettitt 2008).
    num_chains: chains per rung. Other options are NUTS's, including ``init_strategy``
    (default ``"prior"``), ``init_values`` and ``init_jitter``
    (:mod:`helmholtz.initialize`): every rung's chains start there.
    """

    name = "ti"
    description = "stepping-stone / thermodynamic integration, NUTS on a ladder of β"
    num_rungs: int = 16
    ladder_power: float = 5.0
    num_warmup: int = 500
    num_samples: int = 1000
    num_chains: int = 4
    target_acceptance_rate: float = 0.8
    dense_mass: bool = False
    step_size: float = 1.0
    max_num_doublings: int = 10
    init_strategy: str = "prior"
    init_values: Any = None
    init_jitter: float = 0.0

    def validate(self):
        _positive_int(self, "num_rungs", "num_samples", "num_chains", "max_num_doublings")
        _positive_int(self, "num_warmup", allow_zero=True)
        if self.num_rungs < 2:
            raise OptionError(f"ti: num_rungs must be ≥ 2, got {self.num_rungs}")
        if isinstance(self.ladder_power, bool) or not (
                isinstance(self.ladder_power, int | float) and self.ladder_power > 0):
            raise OptionError(f"ti: ladder_power must be positive, got {self.ladder_power!r}")
        _in_range(self, "target_acceptance_rate", 0.0, 1.0)
        if isinstance(self.step_size, bool) or not (
                isinstance(self.step_size, int | float) and self.step_size > 0):
            raise OptionError(f"ti: step_size must be positive, got {self.step_size!r}")
        validate_init_options(self)

    def betas(self) -> np.ndarray:
        return power_ladder(self.num_rungs, self.ladder_power)

    def _nuts(self) -> NUTS:
        return NUTS(num_warmup=self.num_warmup, num_samples=self.num_samples,
                    num_chains=self.num_rungs * self.num_chains,
                    target_acceptance_rate=self.target_acceptance_rate,
                    dense_mass=self.dense_mass, step_size=self.step_size,
                    max_num_doublings=self.max_num_doublings)

    # ---- pure functions over one chain
    def init(self, rng_key, target, position, beta=1.0) -> TIState:
        return TIState(self._nuts().init(rng_key, target.tempered(beta), position), beta)

    def finalize(self, state: TIState) -> TIState:
        return TIState(self._nuts().finalize(state.inner), state.beta)

    def warmup_step(self, rng_key, target, state: TIState, stage):
        inner, info = self._nuts().warmup_step(rng_key, target.tempered(state.beta),
                                               state.inner, stage)
        return TIState(inner, state.beta), info

    def step(self, rng_key, target, state: TIState, x=None):
        """One NUTS draw at the chain's β, with log L at the new position."""
        inner, stats = self._nuts().step(rng_key, target.tempered(state.beta), state.inner)
        stats["log_likelihood"] = target.log_likelihood(inner.kernel.position)
        return TIState(inner, state.beta), stats

    # ---- the run, as phases the driver runs
    def start(self, rng_key, target, run):
        total = self.num_rungs * self.num_chains
        engine = without_init_options(self)
        # each chain's β, cast on the host: jnp.asarray's cast is a program to compile
        betas = np.repeat(self.betas(), self.num_chains)
        start_chains_ahead(self, target, rng_key, run, total, _init_chains,
                           jax.device_put(betas.astype(jnp.result_type(float))))
        z0 = engine_initial_positions(self, target, rng_key, total, run.timer)
        return run.call(_init_chains, engine, target, z0,
                        jax.device_put(betas.astype(z0.dtype)))

    def loop_engine(self):
        return without_init_options(self)

    def phases(self, target):
        return mcmc_phases(self, self.num_warmup, self.num_samples)

    def result(self, rng_key, target, state, infos, run) -> Result:
        num_rungs, num_chains = self.num_rungs, self.num_chains
        info = dict(infos["sampling"])
        grad_evals = int(np.asarray(info["n_steps"]).sum())  # in numpy, as mcmc's
        if infos["warmup"] is not None:
            grad_evals += int(np.asarray(infos["warmup"]["n_steps"]).sum())
        by_rung = lambda a: np.asarray(a).reshape((num_rungs, num_chains) + a.shape[1:])
        ll = by_rung(info.pop("log_likelihood"))
        positions = info.pop("position")[-num_chains:]
        betas = self.betas()
        log_z, se, log_ratio, ess = stepping_stone(betas, ll)
        ti_log_z, ti_se, mean_ll, ess_ll = thermodynamic_integral(betas, ll)
        note = (f"stepping stone over {num_rungs} rungs × {num_chains} NUTS chains "
                f"(Xie et al. 2011); unbiased for Z when each rung's draws are exact")
        estimates = {"ti": FreeEnergy(-ti_log_z, ti_se, "estimate",
                                      "corrected-trapezoid thermodynamic integration "
                                      "(Friel, Hurn & Wyse 2014); se without the "
                                      "discretisation error")}
        return assemble(
            self, target, positions, {k: v[-num_chains:] for k, v in info.items()}, run,
            grad_evals, FreeEnergy(-log_z, se, "unbiased-Z estimate", note),
            estimates=estimates,
            config={"betas": betas.tolist(), "stepping_stone_log_z": log_z,
                    "stepping_stone_se": se, "ti_log_z": ti_log_z, "ti_se": ti_se,
                    "ess_log_likelihood": ess_ll.tolist()},
            trace={"beta": betas, "mean_log_likelihood": mean_ll, "log_ratio": log_ratio,
                   "log_z": np.cumsum(log_ratio), "ess": np.append(ess[1:], np.nan),
                   "acceptance_rate": by_rung(info["acceptance_rate"]).mean(axis=(1, 2)),
                   "step_size": by_rung(info["step_size"]).mean(axis=(1, 2)),
                   "divergences": by_rung(info["diverging"]).sum(axis=(1, 2)).astype(
                       np.float64)})


def _init_chains(engine, target, positions, betas):
    return jax.vmap(lambda p, b: engine.init(None, target, p, b))(positions, betas)
