"""Stochastic variational inference: numpyro's ``Trace_ELBO`` and autoguides, optax optimisers.

The engine sees only the Target. It hands numpyro a one-site model over the Target's flat
unconstrained vector ``z`` (an improper flat site plus a factor equal to the Target's log
density), so every autoguide works unchanged on any model, and the ELBO it maximises is
E_q[log p(z) − log q(z)] ≤ log Z, i.e. −ELBO is an upper bound on the free energy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.infer import Trace_ELBO, autoguide, init_to_value

from helmholtz.driver import compiled
from helmholtz.engines._assemble import assemble, status_of
from helmholtz.engines.annealing import log_mean_exp_se
from helmholtz.engines.base import Engine, Phase, _positive_int, _positive_number, register
from helmholtz.errors import OptionError
from helmholtz.initialize import (
    engine_initial_positions,
    validate_init_options,
    without_init_options,
)
from helmholtz.result import FreeEnergy, register_fitted
from helmholtz.training import init_training, training_phase, training_status

__all__ = ["SVI", "GUIDES", "flat_model", "FittedGuide"]


NUMPYRO_INIT_SCALE = 0.1  # the normal autoguides' default starting scale


def flat_model(target):
    """The Target as a one-site numpyro model: ∫ exp(log_density(z)) dz = Z."""
    z = numpyro.sample(
        "z", dist.ImproperUniform(dist.constraints.real_vector, (), (target.dim,)))
    numpyro.factor("log_density", target.log_density(z))


def _guide(kind: str, rank, hidden, num_flows, init, init_scale):
    init_loc_fn = init_to_value(values={"z": init})
    if kind == "normal":
        return autoguide.AutoNormal(flat_model, init_loc_fn=init_loc_fn, init_scale=init_scale)
    if kind == "mvn":
        return autoguide.AutoMultivariateNormal(flat_model, init_loc_fn=init_loc_fn,
                                                init_scale=init_scale)
    if kind == "lowrank":
        return autoguide.AutoLowRankMultivariateNormal(flat_model, init_loc_fn=init_loc_fn,
                                                       init_scale=init_scale, rank=rank)
    if kind == "iaf":
        return autoguide.AutoIAFNormal(flat_model, init_loc_fn=init_loc_fn,
                                       num_flows=num_flows, hidden_dims=[hidden, hidden])
    if kind == "bnaf":
        return autoguide.AutoBNAFNormal(flat_model, init_loc_fn=init_loc_fn,
                                        num_flows=num_flows, hidden_factors=[8, 8])
    raise AssertionError(kind)


GUIDES = {
    "normal": "mean-field normal (AutoNormal)",
    "mvn": "full-rank multivariate normal (AutoMultivariateNormal)",
    "lowrank": "low-rank plus diagonal normal (AutoLowRankMultivariateNormal)",
    "iaf": "normalizing flow: inverse autoregressive flow (AutoIAFNormal)",
    "bnaf": "normalizing flow: block neural autoregressive flow (AutoBNAFNormal)",
}


def _param_sites(guide, target) -> dict:
    """The guide's ``numpyro.param`` sites: name → (initial value, constraint). Tracing
    the guide also sets up its prototype (what ``sample_posterior`` needs)."""
    with handlers.block():
        tr = handlers.trace(handlers.seed(guide, jax.random.key(0))).get_trace(target)
    return {k: (v["value"], v["kwargs"].get("constraint", constraints.real))
            for k, v in tr.items() if v["type"] == "param"}


@register
@dataclass(frozen=True)
class SVI(Engine):
    """Stochastic variational inference (Hoffman et al. 2013; Kucukelbir et al. 2017).

    Maximises the ELBO E_q[log p(z) − log q(z)] ≤ log Z with numpyro's ``Trace_ELBO``
    over an autoguide, trained by :func:`helmholtz.training.train_step` (parameters in
    unconstrained space, as numpyro's own SVI keeps them). The headline free energy is
    −ELBO from ``num_elbo_samples`` fresh draws (an upper bound on F, a lower bound on
    log Z); ``estimates["is"]`` is the importance-sampling estimate log mean
    exp(log p − log q) from the same draws (unbiased for Z). ``result.fitted`` is the
    trained guide (:class:`FittedGuide`): ``result.fitted.sample(rng_key, n)`` draws
    anew, also after ``Result.load``.

    Options
    -------
    guide: one of ``GUIDES`` (``"normal"``, ``"mvn"``, ``"lowrank"``, ``"iaf"``, ``"bnaf"``).
    optimizer: an optax ``GradientTransformation``; default Adam, its learning rate decayed
    from ``learning_rate`` to 1% of it along a cosine
    (``decay="cosine"``) or held (``decay="constant"``). Stochastic gradients need the
    decay (Robbins & Monro 1951) for the ELBO to settle rather than hover at the noise
    level. (No gradient clipping by default: clipping a stochastic gradient changes its
    expectation and moves the optimum; measured here it left the full-rank covariance
    20–50% too wide.)
    num_optimizer_steps: optimiser iterations; num_gradient_samples: Monte Carlo draws
    of the ELBO per gradient (numpyro's ``num_particles``).
    num_samples: posterior draws returned; num_elbo_samples: fresh draws for the final
    ELBO estimate and its standard error (not the last noisy loss).
    init_strategy, init_values, init_jitter: where the guide's location starts
    (:mod:`helmholtz.initialize`); the sites in ``init_values`` ({site: constrained
    value}) start exactly there unless jittered.
    init_scale: the normal guides' starting standard deviation in unconstrained space
    (numpyro's default 0.1). Starting from a good guess on a posterior much narrower
    than that, a smaller scale keeps the first noisy steps near the guess: on the lens
    model of ``tests/models/lensing`` (posterior sds ~1e-3) the guide started at 0.1 left
    the good mode for another in 2 of 4 seeds.
    """

    name = "svi"
    description = "stochastic variational inference (numpyro ELBO + autoguides, optax)"
    approximate = ("variational: draws follow the fitted guide, whose mean may miss the "
                   "posterior's by a fraction of a posterior sd (mean-field guides)")
    aliases: ClassVar[dict[str, str]] = {"num_steps": "num_optimizer_steps",
                                         "num_particles": "num_gradient_samples"}
    guide: str = "normal"
    num_optimizer_steps: int = 5000
    learning_rate: float = 0.01
    decay: str = "cosine"
    optimizer: optax.GradientTransformation | None = None
    num_gradient_samples: int = 1
    num_samples: int = 1000
    num_elbo_samples: int = 4000
    rank: int | None = None
    hidden_dim: int = 32
    num_flows: int = 2
    init_strategy: str = "uniform"
    init_values: Any = None
    init_jitter: float = 0.0
    init_scale: float = NUMPYRO_INIT_SCALE

    def validate(self):
        if self.guide not in GUIDES:
            raise OptionError(
                f"svi: unknown guide {self.guide!r}; valid guides: {', '.join(GUIDES)}")
        _positive_int(self, "num_optimizer_steps", "num_gradient_samples", "num_samples",
                      "num_elbo_samples", "hidden_dim", "num_flows")
        if self.rank is not None:
            _positive_int(self, "rank")
        if not (isinstance(self.learning_rate, int | float) and self.learning_rate > 0):
            raise OptionError(f"svi: learning_rate must be positive, got {self.learning_rate!r}")
        if self.optimizer is not None and not isinstance(self.optimizer,
                                                         optax.GradientTransformation):
            raise OptionError(
                "svi: optimizer must be an optax GradientTransformation (e.g. optax.adam(1e-2)),"
                f" got {type(self.optimizer).__name__}")
        if self.decay not in ("cosine", "constant"):
            raise OptionError(f"svi: decay must be 'cosine' or 'constant', got {self.decay!r}")
        _positive_number(self, "init_scale")
        if self.init_scale != NUMPYRO_INIT_SCALE and self.guide in ("iaf", "bnaf"):
            raise OptionError(f"svi: init_scale sets the normal guides' starting scale; the "
                              f"{self.guide!r} flow has none (use guide='normal', 'mvn' or "
                              f"'lowrank')")
        validate_init_options(self)

    def make_optimizer(self) -> optax.GradientTransformation:
        if self.optimizer is not None:
            return self.optimizer
        lr = self.learning_rate
        if self.decay == "cosine":
            lr = optax.cosine_decay_schedule(self.learning_rate, self.num_optimizer_steps,
                                             alpha=0.01)
        return optax.adam(lr)

    def make_guide(self, target, z0=None):
        """The autoguide over the flat vector (its location starts at ``z0``)."""
        z0 = jnp.zeros(target.dim) if z0 is None else z0
        return _guide(self.guide, self.rank, self.hidden_dim, self.num_flows, z0,
                      self.init_scale)

    def constrain_params(self, guide, target, params) -> dict:
        sites = _param_sites(guide, target)
        return {k: biject_to(sites[k][1])(v) for k, v in params.items()}

    # ---- the trained engine's protocol
    def loss(self, params, rng_key, target):
        """−ELBO with ``num_gradient_samples`` draws (``params`` unconstrained)."""
        guide = self.make_guide(target)
        return Trace_ELBO(num_particles=self.num_gradient_samples).loss(
            rng_key, self.constrain_params(guide, target, params), flat_model, guide, target)

    def init(self, rng_key, target, position=None):
        guide = self.make_guide(target, position)
        params = {k: biject_to(c).inv(v) for k, (v, c) in _param_sites(guide, target).items()}
        return init_training(self, params)

    def start(self, rng_key, target, run):
        z0 = engine_initial_positions(self, target, rng_key, 1, run.timer)[0]
        return run.call(_init_at, without_init_options(self), target, z0)

    def loop_engine(self):
        return without_init_options(self)

    def phases(self, target):
        batch = min(ELBO_BATCH, self.num_elbo_samples)
        return (training_phase(self.num_optimizer_steps),
                Phase("final ELBO", type(self).elbo_step, -(-self.num_elbo_samples // batch)))

    def elbo_step(self, rng_key, target, state, x):
        """−ELBO of up to 256 fresh guide draws at the trained parameters (the final
        estimate runs as a phase of its own, so that a long one shows a progress bar)."""
        guide = self.make_guide(target)
        constrained = self.constrain_params(guide, target, state.params)
        keys = jax.random.split(rng_key, min(ELBO_BATCH, self.num_elbo_samples))
        neg_elbo = jax.vmap(
            lambda k: Trace_ELBO().loss(k, constrained, flat_model, guide, target))(keys)
        return state, {"neg_elbo": neg_elbo}

    def result(self, rng_key, target, state, infos, run):
        looped = without_init_options(self)
        z, lp = run.call(_evaluate, looped, target, state.params, rng_key)
        neg_elbo = np.asarray(infos["final ELBO"]["neg_elbo"], np.float64).ravel()
        neg_elbo = neg_elbo[:self.num_elbo_samples]
        finite = np.isfinite(neg_elbo)
        value = float(np.mean(neg_elbo[finite]))
        se = float(np.std(neg_elbo[finite], ddof=1) / np.sqrt(finite.sum()))
        note = "" if finite.all() else f"{(~finite).sum()} non-finite ELBO draws dropped"
        log_z_is, se_is, ess = log_mean_exp_se(-neg_elbo)
        elbo = FreeEnergy(value, se, "lower bound", note)
        estimates = {"elbo": elbo,
                     "is": FreeEnergy(-log_z_is, se_is, "unbiased-Z estimate",
                                      f"importance sampling with the guide as proposal, "
                                      f"ESS {ess:.0f} of {neg_elbo.size}",
                                      warning="" if ess >= 30 else f"ESS {ess:.1f} < 30")}
        losses = infos["training"]["loss"] if infos["training"] is not None else np.zeros(0)
        status = training_status(state, losses)
        return assemble(self, target, z[None], {"lp": np.asarray(lp)[None]}, run,
                        self.num_optimizer_steps * self.num_gradient_samples, elbo,
                        trace={"loss": losses}, estimates=estimates,
                        fitted=FittedGuide(looped, state.params, target),
                        status=status if not status.ok else status_of(elbo))


ELBO_BATCH = 256
"""Fresh draws per step of the final ELBO phase."""


def _init_at(engine, target, z0):
    return engine.init(None, target, z0)


def _guide_draws(engine, target, params, rng_key, num):
    guide = engine.make_guide(target)
    constrained = engine.constrain_params(guide, target, params)
    return guide.sample_posterior(rng_key, constrained, sample_shape=(num,))["z"]


def _evaluate(engine, target, params, k_draw):
    """Posterior draws from the trained guide and their log densities."""
    guide = engine.make_guide(target)
    constrained = engine.constrain_params(guide, target, params)
    z = guide.sample_posterior(k_draw, constrained, sample_shape=(engine.num_samples,))["z"]
    return z, jax.vmap(target.log_density)(z)


def _constrain_draws(target, z):
    return jax.vmap(target.constrain)(z)


@register_fitted
class FittedGuide:
    """A trained SVI guide: draws new posterior samples without retraining.

    ``sample(rng_key, num)`` returns ``{site: array}`` with a leading axis of ``num``
    (constrained values, as ``result.samples`` holds them without the chain axis).
    Saved with the Result; ``Result.load(path)`` rebuilds the model's Target when the
    model function can be imported by name and its arguments are arrays or plain values,
    else pass ``Result.load(path, target=...)``.
    """

    kind: ClassVar[str] = "svi-guide"

    def __init__(self, engine: SVI, params: dict, target):
        self.engine, self.params, self.target = engine, params, target

    def sample(self, rng_key, num: int) -> dict:
        if self.target is None:
            raise ValueError("this fitted guide was loaded without its model (the model "
                             "function could not be imported by name): pass "
                             "Result.load(path, target=...) to draw from it")
        exe = compiled(_guide_draws, self.engine, self.target, self.params, rng_key, num)
        z = exe(self.engine, self.target, self.params, rng_key, num)
        out = compiled(_constrain_draws, self.target, z)(self.target, z)
        return {k: np.asarray(v) for k, v in out.items()}

    def to_saved(self):
        options = {k: v for k, v in self.engine.options().items()
                   if isinstance(v, int | float | str | bool) or v is None}
        meta = {"options": options, "dim": self.target.dim, **_model_reference(self.target)}
        return meta, {k: np.asarray(v) for k, v in self.params.items()}

    @classmethod
    def from_saved(cls, meta, arrays, target=None):
        from helmholtz.engines.base import with_options

        engine = with_options(SVI(), meta["options"])
        return cls(engine, {k: jnp.asarray(v) for k, v in arrays.items()},
                   saved_target(meta, target, "guide"))


def _jsonable_arguments(value):
    """Model arguments as JSON (arrays as nested lists with their dtype), or None."""
    if isinstance(value, dict):
        items = {k: _jsonable_arguments(v) for k, v in value.items()}
        return None if any(v is None and value[k] is not None for k, v in items.items()) \
            else {"dict": items}
    if isinstance(value, list | tuple):
        items = [_jsonable_arguments(v) for v in value]
        return None if any(a is None and b is not None for a, b in zip(items, value,
                                                                       strict=True)) \
            else {"list": items}
    if value is None or isinstance(value, bool | int | float | str):
        return {"value": value}
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        a = np.asarray(value)
        return {"array": a.tolist(), "dtype": a.dtype.str}
    return None


def _from_json(node):
    if "dict" in node:
        return {k: _from_json(v) for k, v in node["dict"].items()}
    if "list" in node:
        return [_from_json(v) for v in node["list"]]
    if "array" in node:
        return np.asarray(node["array"], dtype=np.dtype(node["dtype"]))
    return node["value"]


def _model_reference(target) -> dict:
    model = target.model
    ref = f"{getattr(model, '__module__', '')}:{getattr(model, '__qualname__', '')}"
    args, kwargs = target.model_args
    arguments = _jsonable_arguments({"args": list(args), "kwargs": kwargs})
    if "<" in ref or arguments is None or target.observed or target.params:
        return {}
    return {"model": ref, "model_arguments": arguments}


def saved_target(meta, target, what: str):
    """The Target a saved fitted object draws for: ``target`` if given (checked against
    the saved dimension), else the model rebuilt from its saved reference, else None."""
    if target is None:
        target = _target_from_reference(meta)
    if target is not None and meta.get("dim") != target.dim:
        raise ValueError(f"the saved {what} is over {meta['dim']} dimensions, the target "
                         f"'{target.name}' has {target.dim}")
    return target


def _target_from_reference(meta):
    """The Target of the saved model, if its function imports by name."""
    import importlib

    from helmholtz.target import Target

    if "model" not in meta:
        return None
    module, _, qualname = meta["model"].partition(":")
    try:
        fn = importlib.import_module(module)
        for part in qualname.split("."):
            fn = getattr(fn, part)
    except (ImportError, AttributeError):
        return None
    arguments = _from_json(meta["model_arguments"])
    return Target.from_model(fn, *arguments["args"], **arguments["kwargs"])
