"""Transition-path engines: a learned control (``tps``) and two classical baselines
(``hot-md``, ``steered-md``) on a transition-path model
(:func:`helmholtz.paths.transition.transition_path_model`).

``tps`` trains a control force u_θ(t, x) so that the controlled dynamics Q^θ approaches
the conditioned path measure P* ∝ P f(x_K). Objectives:

* ``kl`` — reverse KL, i.e. the negative path ELBO −E_Q[log w], differentiated through
  the simulated paths (reparameterised; second derivatives of U);
* ``log_variance`` — E[(log w − log Ẑ)²] over paths drawn from the current Q and held
  fixed, with a learnable log Ẑ (the objective of TPS-DPS, Seong et al. ICLR 2025; the
  log-variance divergence of Richter et al. 2020);
* ``pice`` — the cross-entropy KL(P*‖Q^θ) estimated with self-normalised weights of
  paths from the current Q (path-integral cross-entropy, Kappen & Ruiz 2016; PIPS,
  Holdijk et al. NeurIPS 2023).

Controls: ``force`` (an MLP of (x − A)/ℓ and Fourier features of t, as PIPS), ``potential``
(u = −∇b_θ, a learned bias potential) and ``displacement`` (per particle
u_i = s_θ,i(x, t) (B̃ − x)_i with B̃ the target superposed onto x by Kabsch, the
equivariant scaled displacement of TPS-DPS). Training may start at a raised temperature
(``anneal_from`` × kT) and cool to kT over ``anneal_fraction`` of the steps.

Every path carries its exact weight log w = log f(x_K) − log dQ/dP, so each engine's
Result reports ``is`` (−log mean w, the free energy of the relaxed transition
probability Z = E_P[f(x_K)]) and the per-path statistics the metrics read
(:func:`helmholtz.paths.metrics.transition_metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from helmholtz.engines._assemble import assemble
from helmholtz.engines._paths_result import _estimates as path_estimates
from helmholtz.engines.base import Engine, _positive_int, _positive_or_none, register
from helmholtz.engines.transition_controls import (  # NUM_FREQUENCIES: re-exported
    CONTROLS,
    NUM_FREQUENCIES,  # noqa: F401
    DisplacementControl,
    FittedTransitionControl,
    ForceControl,
    PotentialControl,
    _draw,
    build_control,
    transition_problem,
)
from helmholtz.errors import OptionError
from helmholtz.paths.metrics import path_statistics
from helmholtz.paths.transition import TransitionPath, path_log_ratio, rollout  # noqa: F401
from helmholtz.result import Status
from helmholtz.training import init_training, static_part, training_phase, training_status

__all__ = ["TransitionPathSampler", "HotMD", "SteeredMD", "transition_problem",
           "ForceControl", "PotentialControl", "DisplacementControl",
           "FittedTransitionControl", "CONTROLS", "OBJECTIVES"]

OBJECTIVES = ("log_variance", "kl", "pice")


# --------------------------------------------------------------------------- results
def _paths_result(engine, target, problem, paths, run, energy_evals, *, what, trace=None,
                  fitted=None, train_status=None):
    stats = path_statistics(problem, paths)
    log_w = stats["log_weight"]
    estimates = path_estimates(engine, log_w, None, what=f"{what} (Z = E_P[f(x_K)], the "
                               "relaxed transition probability)")
    status = train_status if train_status is not None and not train_status.ok else None
    bad = int(stats["blown_up"].sum())
    if status is None and bad:
        status = Status("diverged", f"{bad} of {log_w.size} paths blew up (energy above "
                        "1e6 or not finite); they are left out of RMSD and ETS and count as "
                        "misses for THP (helmholtz.paths.metrics)")
    if status is None:
        w = estimates["is"].warning
        status = Status("unreliable", w) if w else Status()
    return assemble(engine, target, None, {k: v[None] for k, v in stats.items()}, run,
                    energy_evals, estimates["is"], log_weights=log_w[None], trace=trace,
                    estimates=estimates, fitted=fitted, status=status)


@dataclass(frozen=True)
class _PathEngine(Engine):
    population: ClassVar[bool] = True
    num_samples: int = 256

    def validate(self):
        _positive_int(self, "num_samples")

    def init(self, rng_key, target, position=None):
        return jnp.zeros(())

    def start(self, rng_key, target, run):
        transition_problem(target, self.name)
        return jnp.zeros(())

    def phases(self, target):
        return ()

    def control_fn(self, problem, state):
        return None

    def result(self, rng_key, target, state, infos, run):
        problem = transition_problem(target, self.name)
        paths = run.call(_draw, self, target, state, rng_key, self.num_samples)
        evals = self.num_samples * (problem.num_steps + 1)
        return _paths_result(self, target, problem, paths, run, evals,
                             what=f"{self.name} (exact Girsanov weights against the "
                             "dynamics at kT)")


# --------------------------------------------------------------------------- baselines
@register
@dataclass(frozen=True)
class HotMD(_PathEngine):
    """Unbiased dynamics at a raised temperature (``temperature_factor`` × kT), each path
    weighed against the dynamics at kT (the ratio of their Gaussian step densities).

    Options: num_samples (paths), temperature_factor (> 0; e.g. 12 for 3600 K against
    300 K, the hot-MD row of TPS-DPS's tables).
    """

    name: ClassVar[str] = "hot-md"
    description: ClassVar[str] = "unbiased MD at a raised temperature (transition-path baseline)"
    temperature_factor: float = 4.0

    def validate(self):
        super().validate()
        if not (isinstance(self.temperature_factor, int | float) and self.temperature_factor > 0):
            raise OptionError(f"hot-md: temperature_factor must be positive, got "
                              f"{self.temperature_factor!r}")


def _steering(problem, spring: float):
    """The steered-MD force u(t, x) = −∇ ½ k |cv(x) − c(t)|², c(t) moving from A's
    collective variables to B's (along the shorter arc for angles)."""
    a, b = problem.cv_fn(problem.start), problem.cv_fn(problem.target)

    def force(t, x):
        centre = a + t * problem.cv_difference(b, a)
        energy = lambda y: 0.5 * spring * jnp.sum(problem.cv_difference(problem.cv_fn(y),
                                                                       centre) ** 2)
        return -jax.grad(energy)(x)

    return force


@register
@dataclass(frozen=True)
class SteeredMD(_PathEngine):
    """Steered MD: a harmonic spring ½ k |cv(x) − c(t)|² on the collective variables whose
    centre moves linearly (on the circle, for angles) from A's to B's over the path. The
    spring is a control like any other, so each path carries its exact Girsanov weight.

    Options: num_samples, spring (k in energy/cv²; default 10 kT/hit_radius²; on
    overdamped dynamics keep k δ/γ < 2 for a stable step).
    """

    name: ClassVar[str] = "steered-md"
    description: ClassVar[str] = "steered MD along the collective variables (baseline)"
    spring: float | None = None

    def validate(self):
        super().validate()
        _positive_or_none(self, "spring")

    def control_fn(self, problem, state):
        k = self.spring if self.spring is not None else (
            10 * problem.temperature / problem.hit_radius**2)
        return _steering(problem, float(k))


# --------------------------------------------------------------------------- trained
@register
@dataclass(frozen=True)
class TransitionPathSampler(_PathEngine):
    """A learned control force for transition paths (see the module docstring).

    Options
    -------
    objective: ``log_variance`` (default), ``kl`` or ``pice``. control: ``force``
    (default), ``potential`` or ``displacement``. num_optimizer_steps, num_gradient_samples
    (paths per step), num_samples (paths drawn by the trained control for the Result),
    learning_rate (Adam, cosine decay to a tenth; log Ẑ by gradient descent at rate
    1/4), max_grad_norm (None: no clipping), hidden_dim, num_layers, anneal_from
    (training starts at this multiple of kT, ≥ 1) and anneal_fraction (of the steps over
    which it cools to kT). spring: when set, the control is steered MD's spring on the
    collective variables (``steered-md``'s option of that name) plus the network, which
    starts at zero, so training starts from the steered-MD path measure and learns a
    residual that lowers the KL to the transition paths (None: the network alone).
    """

    name: ClassVar[str] = "tps"
    description: ClassVar[str] = "transition paths by a learned control (PIPS / TPS-DPS)"
    loss_has_aux: ClassVar[bool] = True
    loss_uses_step: ClassVar[bool] = True
    approximate: ClassVar[str] = ("importance-weighted: paths follow the trained control; "
                                  "reweight with result.log_weights (the 'is' estimate does)")

    objective: str = "log_variance"
    control: str = "force"
    num_optimizer_steps: int = 500
    num_gradient_samples: int = 16
    learning_rate: float = 1e-3
    max_grad_norm: float | None = 10.0
    hidden_dim: int = 128
    num_layers: int = 2
    anneal_from: float = 1.0
    anneal_fraction: float = 0.5
    spring: float | None = None

    def validate(self):
        super().validate()
        _positive_int(self, "num_optimizer_steps", "num_gradient_samples", "hidden_dim",
                      "num_layers")
        if self.num_gradient_samples < 2:
            raise OptionError("tps: num_gradient_samples must be ≥ 2 (the losses need a batch)")
        if self.objective not in OBJECTIVES:
            raise OptionError(f"tps: unknown objective {self.objective!r}; valid objectives: "
                              f"{', '.join(OBJECTIVES)}")
        if self.control not in CONTROLS:
            raise OptionError(f"tps: unknown control {self.control!r}; valid controls: "
                              f"{', '.join(CONTROLS)}")
        if not (isinstance(self.learning_rate, int | float) and self.learning_rate > 0):
            raise OptionError(f"tps: learning_rate must be positive, got {self.learning_rate!r}")
        _positive_or_none(self, "max_grad_norm", "spring")
        if not (isinstance(self.anneal_from, int | float) and self.anneal_from >= 1):
            raise OptionError(f"tps: anneal_from must be ≥ 1 (a multiple of kT), got "
                              f"{self.anneal_from!r}")
        if not (isinstance(self.anneal_fraction, int | float) and 0 < self.anneal_fraction <= 1):
            raise OptionError(f"tps: anneal_fraction must lie in (0, 1], got "
                              f"{self.anneal_fraction!r}")

    # ---------------------------------------------------------------- parameters
    def param_skeleton(self, problem, rng_key=None) -> dict:
        key = jax.random.key(0) if rng_key is None else rng_key
        net = build_control(self.control, problem, key, self.hidden_dim, self.num_layers)
        return {"control": eqx.filter(net, eqx.is_array),
                "log_z": jnp.zeros((), problem.start.dtype)}

    def network(self, problem, params):
        return eqx.combine(params["control"], static_part(
            build_control, self.control, problem, jax.random.key(0), self.hidden_dim,
            self.num_layers))

    def control_fn(self, problem, state):
        params = state.params if hasattr(state, "params") else state
        return self._combined(problem, self.network(problem, params))

    def _combined(self, problem, net):
        """The network's force, plus the steered-MD spring when ``spring`` is set."""
        if self.spring is None:
            return lambda t, x: net(problem, t, x)
        steer = _steering(problem, float(self.spring))
        return lambda t, x: net(problem, t, x) + steer(t, x)

    def make_optimizer(self):
        lr = optax.cosine_decay_schedule(self.learning_rate, self.num_optimizer_steps, 0.1)
        inner = optax.adam(lr)
        if self.max_grad_norm is not None:
            inner = optax.chain(optax.clip_by_global_norm(self.max_grad_norm), inner)
        # log Ẑ is one number that may need to travel hundreds of nats while the control
        # learns, which Adam's bounded steps cannot: plain gradient descent at rate 1/4
        # on E(log w − log Ẑ)², whose gradient is 2(log Ẑ − mean log w), moves it half
        # way to the batch mean each step (an exponential average, still learned)
        return optax.multi_transform(
            {"net": inner, "log_z": optax.sgd(0.25)},
            lambda p: {"control": jax.tree_util.tree_map(lambda _: "net", p["control"]),
                       "log_z": "log_z"})

    def init(self, rng_key, target, position=None):
        problem = transition_problem(target, self.name)
        k_net, k_paths = jax.random.split(rng_key)
        params = self.param_skeleton(problem, k_net)
        # log Ẑ starts at the ELBO of the uncontrolled dynamics (its optimum for them)
        first = rollout(problem, k_paths, self.num_gradient_samples, None,
                        temperature=problem.temperature * self.anneal_from)
        lw = first.log_weight
        good = jnp.isfinite(lw)
        start = jnp.sum(jnp.where(good, lw, 0.0)) / jnp.maximum(jnp.sum(good), 1)
        return init_training(self, {**params, "log_z": start.astype(params["log_z"].dtype)})

    def start(self, rng_key, target, run):
        transition_problem(target, self.name)
        return run.call(type(self).init, self, rng_key, target)

    def phases(self, target):
        return (training_phase(self.num_optimizer_steps),)

    def temperature_at(self, problem, step):
        frac = jnp.minimum(1.0, jnp.asarray(step, jnp.float32)
                           / (self.anneal_fraction * self.num_optimizer_steps))
        return problem.temperature * (self.anneal_from + (1.0 - self.anneal_from) * frac)

    # ---------------------------------------------------------------- the losses
    def loss(self, params, rng_key, target, step):
        problem = transition_problem(target, self.name)
        kt = self.temperature_at(problem, step).astype(problem.start.dtype)
        n = self.num_gradient_samples
        net = self.network(problem, params)
        control = self._combined(problem, net)
        if self.objective == "kl":
            paths = rollout(problem, rng_key, n, control, temperature=kt)
            lw = paths.log_terminal - paths.log_ratio
            good = ~paths.blown_up & jnp.isfinite(lw)
            count = jnp.maximum(jnp.sum(good), 1)
            value = -jnp.sum(jnp.where(good, lw, 0.0)) / count
            lw_report = lw
        else:
            frozen = jax.lax.stop_gradient(params)
            fnet = self.network(problem, frozen)
            paths = rollout(problem, rng_key, n, self._combined(problem, fnet),
                            temperature=kt, keep=True, detach=True)
            log_ratio = path_log_ratio(problem, control, paths.control_states, paths.noises,
                                       kt)
            lw = paths.log_terminal - log_ratio
            good = ~paths.blown_up & jnp.isfinite(lw)
            count = jnp.maximum(jnp.sum(good), 1)
            lw_safe = jnp.where(good, lw, 0.0)
            if self.objective == "log_variance":
                value = jnp.sum(jnp.where(good, (lw_safe - params["log_z"]) ** 2, 0.0)) / count
            else:
                w = jax.nn.softmax(jnp.where(good, jax.lax.stop_gradient(lw), -jnp.inf))
                value = -jnp.sum(jnp.where(good, w * log_ratio, 0.0))
            lw_report = jax.lax.stop_gradient(lw)
        value = jnp.where(jnp.sum(good) > 0, value, jnp.nan)
        lw_report = jnp.where(good, lw_report, -jnp.inf)
        top = jnp.max(lw_report)
        wts = jnp.exp(lw_report - top)
        hit = jax.vmap(problem.cv_distance)(paths.end) < problem.hit_radius
        aux = {"elbo": jnp.sum(jnp.where(good, lw_report, 0.0)) / count,
               "log_z": top + jnp.log(jnp.mean(wts)),
               "ess": jnp.sum(wts) ** 2 / jnp.sum(wts**2),
               "hit_rate": jnp.mean(hit & good), "temperature": kt,
               "blown_up": jnp.mean(paths.blown_up)}
        return value, jax.tree_util.tree_map(jax.lax.stop_gradient, aux)

    # ---------------------------------------------------------------- the Result
    def result(self, rng_key, target, state, infos, run):
        problem = transition_problem(target, self.name)
        paths = run.call(_draw, self, target, state.params, rng_key, self.num_samples)
        training = infos.get("training")
        trace = {} if training is None else {k: np.asarray(v) for k, v in training.items()}
        per_path = problem.num_steps + 1
        evals = (self.num_optimizer_steps * self.num_gradient_samples
                 + self.num_samples + self.num_gradient_samples) * per_path
        return _paths_result(self, target, problem, paths, run, evals,
                             what="the trained control", trace=trace,
                             fitted=FittedTransitionControl(self, state.params, target),
                             train_status=training_status(state, trace.get("loss")))
