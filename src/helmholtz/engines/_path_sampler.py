"""What the path samplers share: options, the simulation of Q and P with their exact
log weights, the losses, and the checks of the target (see :mod:`helmholtz.engines.
diffusion` for the construction)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from helmholtz.engines._control import control_network
from helmholtz.engines._paths_result import path_result
from helmholtz.engines.base import Engine, _positive_int, _positive_or_none
from helmholtz.errors import InitializationError, OptionError
from helmholtz.training import init_training, static_part, training_phase

__all__ = ["PathSampler", "PathBatch", "LOSSES", "path_diagnostics", "check_target",
           "robust_scale", "normal_log_density"]

LOSSES = ("kl", "log_variance", "tb")


class PathBatch(NamedTuple):
    """Simulated paths: start ``(n, d)``, end ``(n, d)``, log weight ``(n,)``."""

    start: jax.Array
    end: jax.Array
    log_weight: jax.Array


def normal_log_density(x, mean, scale):
    z = (x - mean) / scale
    return jnp.sum(-0.5 * z**2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi), axis=-1)


def robust_scale(x):
    """1.4826 × the median absolute deviation per coordinate (the sd for Gaussian draws;
    finite for heavy-tailed references, where the sample sd is not)."""
    med = jnp.median(x, axis=0)
    return jnp.maximum(1.4826 * jnp.median(jnp.abs(x - med), axis=0), 1e-3)


@dataclass(frozen=True)
class PathSampler(Engine):
    """What the path samplers share: options, simulation, losses, the trained sampler.

    Options
    -------
    num_steps: time steps K of the discretised SDE. num_optimizer_steps: training
    iterations; num_gradient_samples: paths per gradient step. num_samples: paths drawn
    by the trained sampler for the Result (its samples, ``is`` and ``elbo``);
    num_eubo_samples: exact target draws run backwards for ``eubo`` (where the model
    provides exact draws). objective: the loss, one of ``LOSSES``. learning_rate, max_grad_norm
    (global-norm clipping; None for none) or optimizer (any optax transformation).
    network: ``factory(dim, *, key, dtype) -> module`` with ``module(t, x, score) -> u``;
    default :func:`helmholtz.engines._control.control_network` with hidden_dim,
    num_layers, use_score (the target score as an input feature) and max_score (the
    feature σ ∇log p̃, whitened by the reference scale σ, is clipped to ±max_score: a
    score thousands of times the reference's, as in a funnel's neck, otherwise trains
    into a runaway drift).
    reference_scale: σ of the reference process (default: from the Target's reference
    draws). max_elbo_drop: training stops (status ``diverged``, the last good
    parameters kept) when a batch's ELBO falls more than this + 10 |best| nats below its
    best so far, the importance weights exploding (None: never). dtype: ``"float32"`` or
    ``"float64"`` (needs ``jax_enable_x64``).
    """

    population: ClassVar[bool] = True
    loss_has_aux: ClassVar[bool] = True
    approximate = ("importance-weighted: draws follow the trained sampler; reweight with "
                   "result.log_weights (the 'is' estimate does)")
    evaluate_kind: ClassVar[str] = "score"  # what of the target each step needs

    num_steps: int = 64
    num_optimizer_steps: int = 2000
    num_gradient_samples: int = 256
    num_samples: int = 2000
    num_eubo_samples: int = 1000
    objective: str = "log_variance"
    learning_rate: float = 1e-3
    max_grad_norm: float | None = 10.0
    optimizer: optax.GradientTransformation | None = None
    network: Callable | None = None
    hidden_dim: int = 64
    num_layers: int = 2
    use_score: bool = True
    max_score: float = 30.0
    reference_scale: float | None = None
    max_elbo_drop: float | None = 1000.0
    dtype: str = "float32"

    # ------------------------------------------------------------------ options
    def validate(self):
        _positive_int(self, "num_steps", "num_optimizer_steps", "num_gradient_samples",
                      "num_samples", "num_eubo_samples", "hidden_dim", "num_layers")
        if self.num_gradient_samples < 2:
            raise OptionError(f"{self.name}: num_gradient_samples must be ≥ 2 (the "
                              "log-variance loss and the ESS need a batch)")
        if self.objective not in self.losses():
            raise OptionError(f"{self.name}: unknown objective {self.objective!r}; valid "
                              f"objectives: {', '.join(self.losses())}")
        for name in ("learning_rate", "max_score"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and v > 0):
                raise OptionError(f"{self.name}: {name} must be positive, got {v!r}")
        _positive_or_none(self, "max_grad_norm", "reference_scale", "max_elbo_drop")
        if self.dtype not in ("float32", "float64"):
            raise OptionError(f"{self.name}: dtype must be 'float32' or 'float64', got "
                              f"{self.dtype!r}")
        if self.optimizer is not None and not isinstance(self.optimizer,
                                                         optax.GradientTransformation):
            raise OptionError(f"{self.name}: optimizer must be an optax "
                              f"GradientTransformation, got {type(self.optimizer).__name__}")
        if self.network is not None and not callable(self.network):
            raise OptionError(f"{self.name}: network must be a factory "
                              "(dim, *, key, dtype) -> module, got "
                              f"{type(self.network).__name__}")

    @classmethod
    def losses(cls) -> tuple[str, ...]:
        return LOSSES

    @property
    def float_dtype(self):
        if self.dtype == "float64" and not jax.config.jax_enable_x64:
            raise OptionError(f"{self.name}: dtype='float64' needs "
                              "jax.config.update('jax_enable_x64', True) first")
        return jnp.dtype(self.dtype)

    def make_optimizer(self) -> optax.GradientTransformation:
        if self.optimizer is not None:
            inner = self.optimizer
        else:
            lr = optax.cosine_decay_schedule(self.learning_rate, self.num_optimizer_steps,
                                             alpha=0.1)
            inner = optax.adam(lr)
            if self.max_grad_norm is not None:
                inner = optax.chain(optax.clip_by_global_norm(self.max_grad_norm), inner)
        # fixed entries of the parameter dict (the reference scale) are never updated
        return optax.multi_transform({"train": inner, "fixed": optax.set_to_zero()},
                                     _labels)

    # ------------------------------------------------------------------ networks
    def build_networks(self, dim: int, key) -> dict:
        """The trainable modules, freshly initialised (override to add more)."""
        dtype = self.float_dtype
        if self.network is not None:
            return {"control": self.network(dim, key=key, dtype=dtype)}
        return {"control": control_network(dim, key=key, hidden_dim=self.hidden_dim,
                                           num_layers=self.num_layers,
                                           use_score=self.use_score,
                                           max_score=self.max_score, dtype=dtype)}

    def extra_params(self, dim: int) -> dict:
        """Trainable arrays besides the networks (a log Ẑ for ``tb``, a log step size)."""
        dtype = self.float_dtype
        return {"log_z": jnp.zeros((), dtype)} if self.objective == "tb" else {}

    def _static(self, dim: int) -> dict:
        return static_part(self.build_networks, dim, jax.random.key(0))

    def modules(self, params) -> dict:
        """The networks, rebuilt from the parameter arrays kept in the training state."""
        dim = params["scale"].shape[0]
        static = self._static(dim)
        return {k: eqx.combine(params[k], static[k]) for k in static}

    def param_skeleton(self, dim: int, rng_key=None) -> dict:
        """The parameter dict: network arrays, extra parameters, and the reference scale
        (zeros here; :meth:`init_params` sets it)."""
        key = jax.random.key(0) if rng_key is None else rng_key
        nets = self.build_networks(dim, key)
        return {**{k: eqx.filter(m, eqx.is_array) for k, m in nets.items()},
                **self.extra_params(dim), "scale": jnp.zeros((dim,), self.float_dtype)}

    def init_params(self, rng_key, target) -> dict:
        k_net, k_ref = jax.random.split(rng_key)
        params = self.param_skeleton(target.dim, k_net)
        scale = (jnp.full((target.dim,), self.reference_scale, self.float_dtype)
                 if self.reference_scale is not None else
                 robust_scale(target.sample_reference(k_ref, 1024)).astype(self.float_dtype))
        return {**params, "scale": scale}

    # ------------------------------------------------------------------ the target
    def evaluate(self, target, x, kind=None) -> dict:
        """log p̃ and what the kernels need of the target at a batch ``x`` ``(n, d)``."""
        kind = self.evaluate_kind if kind is None else kind
        dtype = x.dtype
        if kind == "value":
            return {"log_p": jax.vmap(target.log_density)(x).astype(dtype)}
        if kind == "split":
            def two(z):
                lp, ll = target.log_prior_and_likelihood(z)
                pair = jnp.stack([lp, ll])
                return pair, pair
            jac, val = jax.vmap(jax.jacrev(two, has_aux=True))(x)
            jac, val = jac.astype(dtype), val.astype(dtype)
            return {"log_p": val[:, 0] + val[:, 1], "score": jac[:, 0] + jac[:, 1],
                    "prior_score": jac[:, 0], "lik_score": jac[:, 1]}
        lp, g = jax.vmap(jax.value_and_grad(target.log_density))(x)
        return {"log_p": lp.astype(dtype), "score": g.astype(dtype)}

    def _needs(self, params) -> str:
        uses = getattr(self.modules(params)["control"], "uses_score", True)
        return self.evaluate_kind if uses or self.evaluate_kind == "split" else "value"

    def control(self, params, k, x, ev):
        """u(t_k, x) in score units for the batch ``x``. The network works in coordinates
        whitened by the reference scale σ (input x/σ, score feature σ ∇log p̃, output
        σ u), so that its inputs and outputs are of order one whatever the target's
        scale, and Adam's steps, which are scale-free per parameter, stay sensible."""
        net = self.modules(params)["control"]
        sigma = jax.lax.stop_gradient(params["scale"])
        t = jnp.asarray(k, x.dtype) / self.num_steps
        score = ev.get("score")
        if score is None:
            out = jax.vmap(lambda xi: net(t, xi, None))(x / sigma)
        else:
            out = jax.vmap(lambda xi, si: net(t, xi, si))(x / sigma, score * sigma)
        return out / sigma

    # ------------------------------------------------------------------ kernels
    def source(self, params, rng_key, n, target):
        """x_0 ~ q_0 ``(n, d)`` and log q_0(x_0) ``(n,)``."""
        raise NotImplementedError

    def source_log_density(self, params, x0, target):
        raise NotImplementedError

    def forward(self, params, k, x, ev):
        """Mean and scale of F_k(· | x) for the batch ``x``."""
        raise NotImplementedError

    def backward(self, params, k, x_next, ev_next):
        """Mean and scale of B_k(· | x_{k+1}); scale 0 where B_k is a point mass."""
        raise NotImplementedError

    # ------------------------------------------------------------------ simulation
    def simulate(self, params, rng_key, target, n: int, detach: bool,
                 keep_path: bool = False):
        """``n`` paths of Q and their log weights. ``detach``: no gradient through the
        states (the log-variance and trajectory-balance losses, and sampling).
        ``keep_path``: also return the states x_1 … x_K ``(K, n, d)``."""
        k_src, k_noise = jax.random.split(rng_key)
        x0, log_q0 = self.source(params, k_src, n, target)
        need = self._needs(params)
        hold = jax.lax.stop_gradient if detach else (lambda v: v)
        x0 = hold(x0)
        ev0 = self.evaluate(target, x0, need) if need != "value" else {}
        noise = jax.random.normal(k_noise, (self.num_steps,) + x0.shape, x0.dtype)

        def body(carry, inp):
            x, ev, log_f, log_b = carry
            k, eps = inp
            mean, scale = self.forward(params, k, x, ev)
            x_new = hold(mean + scale * eps)
            ev_new = self.evaluate(target, x_new, need) if need != "value" else {}
            log_f = log_f + normal_log_density(x_new, mean, scale)
            b_mean, b_scale = self.backward(params, k, x_new, ev_new)
            point = jnp.all(b_scale == 0)
            lb = normal_log_density(x, b_mean, jnp.where(b_scale == 0, 1.0, b_scale))
            return (x_new, ev_new, log_f, log_b + jnp.where(point, 0.0, lb)), (
                x_new if keep_path else None)

        zeros = jnp.zeros(n, x0.dtype)
        (x, ev, log_f, log_b), states = jax.lax.scan(
            body, (x0, ev0, zeros, zeros), (jnp.arange(self.num_steps), noise))
        log_p = ev["log_p"] if "log_p" in ev else self.evaluate(target, x, "value")["log_p"]
        batch = PathBatch(x0, x, log_p + log_b - log_q0 - log_f)
        return (batch, states) if keep_path else batch

    def simulate_backward(self, params, rng_key, target, x_end) -> jax.Array:
        """Log weights of paths of P: exact target draws ``x_end`` run back through B."""
        need = self._needs(params)
        ev_end = self.evaluate(target, x_end, need)
        noise = jax.random.normal(rng_key, (self.num_steps,) + x_end.shape, x_end.dtype)

        def body(carry, inp):
            x_next, ev_next, log_f, log_b = carry
            k, eps = inp
            b_mean, b_scale = self.backward(params, k, x_next, ev_next)
            x = b_mean + b_scale * eps
            lb = normal_log_density(x, b_mean, jnp.where(b_scale == 0, 1.0, b_scale))
            ev = self.evaluate(target, x, need) if need != "value" else {}
            mean, scale = self.forward(params, k, x, ev)
            log_f = log_f + normal_log_density(x_next, mean, scale)
            return (x, ev, log_f, log_b + jnp.where(jnp.all(b_scale == 0), 0.0, lb)), None

        zeros = jnp.zeros(x_end.shape[0], x_end.dtype)
        ev_start = ev_end if need != "value" else {}
        (x0, _, log_f, log_b), _ = jax.lax.scan(
            body, (x_end, ev_start, zeros, zeros), (jnp.arange(self.num_steps), noise),
            reverse=True)
        log_q0 = self.source_log_density(params, x0, target)
        return ev_end["log_p"] + log_b - log_q0 - log_f

    # ------------------------------------------------------------------ training
    def loss(self, params, rng_key, target):
        batch = self.simulate(params, rng_key, target, self.num_gradient_samples,
                              detach=self.objective != "kl")
        log_w = batch.log_weight
        if self.objective == "kl":
            value = -jnp.mean(log_w)
        elif self.objective == "log_variance":
            value = jnp.var(log_w)
        else:
            value = jnp.mean((log_w - params["log_z"]) ** 2)
        return value, path_diagnostics(jax.lax.stop_gradient(log_w))

    def init(self, rng_key, target, position=None):
        return init_training(self, self.init_params(rng_key, target))

    def start(self, rng_key, target, run):
        check_target(self, target, rng_key)
        return run.call(type(self).init, self, rng_key, target)

    def phases(self, target):
        return (training_phase(self.num_optimizer_steps),)

    def grads_per_path(self) -> int:
        """Target gradient evaluations per simulated path (at every state when the
        kernels or the network's score feature need them, else none)."""
        uses = self.use_score if self.network is None else True
        return self.num_steps + 1 if uses or self.evaluate_kind == "split" else 0

    def result(self, rng_key, target, state, infos, run):
        return path_result(self, rng_key, target, state, infos, run)


FIXED = ("scale",)
"""Parameter entries the optimiser leaves alone."""


def _labels(params) -> dict:
    return {k: jax.tree_util.tree_map(lambda _, label="fixed" if k in FIXED else "train":
                                      label, v) for k, v in params.items()}


def path_diagnostics(log_w) -> dict:
    """Per-step training diagnostics from a batch's log weights: the ELBO estimate
    mean(log w), log mean w, and the Kish ESS (non-finite weights count as zero)."""
    finite = jnp.isfinite(log_w)
    safe = jnp.where(finite, log_w, -jnp.inf)
    top = jnp.max(safe)
    w = jnp.where(finite, jnp.exp(safe - top), 0.0)
    ess = jnp.sum(w) ** 2 / jnp.sum(w**2)
    return {"elbo": jnp.mean(log_w), "log_z": top + jnp.log(jnp.mean(w)), "ess": ess}


def check_target(engine, target, rng_key) -> None:
    """A proper reference (``target.sample_reference`` raises ModelError otherwise) and a
    finite log density and score at reference draws, or a clear error."""
    z = target.sample_reference(jax.random.fold_in(rng_key, 7), 16)
    lp, g = jax.vmap(jax.value_and_grad(target.log_density))(z)
    bad = ~(jnp.isfinite(lp) & jnp.all(jnp.isfinite(g), axis=-1))
    if bool(jnp.any(bad)):
        i = int(jnp.argmax(bad))
        what = "log density" if not bool(jnp.isfinite(lp[i])) else "score ∇ log p"
        raise InitializationError(
            f"{engine.name}: the {what} of model '{target.name}' is not finite at "
            f"{int(bad.sum())} of 16 reference draws (e.g. z = {z[i].tolist()}); the path "
            "sampler starts from the reference and needs both finite there — check the "
            "model's support and the reference (prior) it draws from")
