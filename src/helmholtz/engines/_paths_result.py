"""The Result of a path sampler and the trained sampler it carries (``result.fitted``).

Kept apart from the engines so that ``pis``, ``dds``, ``cmcd`` and ``asbs`` build their
estimates (``is``, ``elbo``, ``eubo``) and their fitted sampler in one place.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from helmholtz.driver import compiled
from helmholtz.engines._assemble import assemble, status_of
from helmholtz.engines._weights import batch_se, log_mean_exp_se, weights_warning
from helmholtz.engines.svi import _constrain_draws
from helmholtz.errors import ModelError
from helmholtz.result import FreeEnergy, _resolve, register_fitted
from helmholtz.training import training_status

__all__ = ["path_result", "FittedPathSampler", "exact_target_draws"]


def exact_target_draws(target, rng_key, num: int):
    """``num`` exact draws of z from the Target ``(num, dim)``, or None where the model
    offers none. Sources, in order: a model attribute ``exact_sampler(rng_key, num,
    *args, **kwargs) -> {site: values}`` (the zoo's mixtures, funnel, many-well), then a
    Gaussian ``exact_posterior`` (see :mod:`helmholtz.engines.bidirectional`)."""
    from helmholtz.engines.bidirectional import exact_draws, exact_posterior_moments

    args, kwargs = target.model_args
    sampler = getattr(target.model, "exact_sampler", None)
    if sampler is not None and not target.observed:
        values = sampler(rng_key, num, *args, **kwargs)
        return jax.vmap(target.unconstrain)({k: jnp.asarray(v) for k, v in values.items()})
    try:
        mean, chol = exact_posterior_moments(target)
    except ModelError:
        return None
    return exact_draws(target, rng_key, jnp.asarray(mean), jnp.asarray(chol), num)


def _draw(engine, target, params, rng_key, num):
    return engine.simulate(params, rng_key, target, num, detach=True)


def _trajectories(engine, target, params, rng_key, num):
    batch, states = engine.simulate(params, rng_key, target, num, detach=True,
                                    keep_path=True)
    return jnp.concatenate([batch.start[None], states]), batch.log_weight


def _backward(engine, target, params, rng_key, x_end):
    return engine.simulate_backward(params, rng_key, target, x_end.astype(
        params["scale"].dtype))


def _finite_mean_se(values) -> tuple[float, float, str]:
    """Mean and se over the finite values, and a warning counting the others (a bound
    over the finite paths alone is no longer a bound)."""
    finite = np.isfinite(values)
    v = values[finite]
    warning = "" if finite.all() else (f"{int((~finite).sum())} of {values.size} log "
                                       "weights not finite (left out; not a bound)")
    if v.size < 2:
        return math.nan, math.nan, warning or "fewer than 2 finite log weights"
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)), warning


def _reverse(eubo_log_w):
    """−log mean(1/w) over paths of P, with its se: E_P[1/w] = 1/Z, so it estimates log Z
    from the exact draws' side (Jensen: biased high, a stochastic upper bound)."""
    log_inv, se, ess = log_mean_exp_se(-eubo_log_w)
    return -log_inv, float(np.nanmax([se, batch_se(-eubo_log_w)])), ess


def _disagreement(log_z, se, reverse) -> str:
    """A warning when forward and reverse importance sampling disagree beyond their error
    bars: mass of the target that the sampler does not reach (a lost mode) makes the
    forward estimate low and the reverse one high by about −log of the mass reached,
    which no statistic of the forward weights alone can see."""
    rev, rev_se, _ = reverse
    gap = rev - log_z
    if not (math.isfinite(gap) and gap > max(3.0 * math.hypot(se, rev_se), 0.1)):
        return ""
    return (f"reverse importance sampling from exact draws gives log Z {rev:.3f} ± "
            f"{rev_se:.3f}, {gap:.2f} nats above: the sampler misses target mass (a mode?)")


def _estimates(engine, log_w, eubo_log_w, what: str = "the trained sampler") -> dict:
    """``is`` (log mean w, se the larger of the delta-method and batch ones) and
    ``elbo`` over the paths' log weights; ``eubo`` and ``reverse_is`` from exact draws
    run backwards where there are some. ``what`` names the paths in the notes."""
    log_z, se_delta, ess = log_mean_exp_se(log_w)
    ses = np.array([se_delta, batch_se(log_w)], np.float64)
    se = float(np.max(ses[~np.isnan(ses)])) if not np.isnan(ses).all() else math.nan
    n = log_w.size
    warning = weights_warning(log_w, ess)
    if eubo_log_w is not None and not warning:
        warning = _disagreement(log_z, se, _reverse(eubo_log_w))
    out = {"is": FreeEnergy(-log_z, se, "unbiased-Z estimate",
                            f"importance sampling over {n} paths of {what}, ESS {ess:.1f}",
                            warning=warning)}
    elbo, elbo_se, warning = _finite_mean_se(log_w)
    out["elbo"] = FreeEnergy(-elbo, elbo_se, "lower bound", f"path ELBO E_Q[log w] over {n} "
                             "paths", warning=warning)
    if eubo_log_w is not None:
        eubo, eubo_se, warning = _finite_mean_se(eubo_log_w)
        out["eubo"] = FreeEnergy(-eubo, eubo_se, "upper bound",
                                 f"path EUBO E_P[log w] over {eubo_log_w.size} exact target "
                                 "draws run backwards", warning=warning)
        rev, rev_se, rev_ess = _reverse(eubo_log_w)
        out["reverse_is"] = FreeEnergy(-rev, rev_se, "upper bound",
                                       "reverse importance sampling −log mean(1/w) over "
                                       f"{eubo_log_w.size} exact draws run backwards, ESS "
                                       f"{rev_ess:.1f}")
    return out


def path_result(engine, rng_key, target, state, infos, run):
    """Draws of the trained sampler, the estimates ``is`` (headline), ``elbo``, ``eubo``
    and the training trace, assembled into the one Result."""
    looped = engine.loop_engine()
    params = state.params
    k_draw, k_exact, k_back = jax.random.split(rng_key, 3)
    batch = run.call(_draw, looped, target, params, k_draw, engine.num_samples)
    log_w = np.asarray(batch.log_weight, np.float64)
    exact = exact_target_draws(target, k_exact, engine.num_eubo_samples)
    eubo_log_w = None
    if exact is not None:
        eubo_log_w = np.asarray(run.call(_backward, looped, target, params, k_back, exact),
                                np.float64)
    estimates = _estimates(engine, log_w, eubo_log_w)
    headline = estimates["is"]
    training = infos.get("training")
    trace = {} if training is None else {k: np.asarray(v) for k, v in training.items()}
    status = training_status(state, trace.get("loss"))
    paths = engine.num_gradient_samples * engine.num_optimizer_steps + engine.num_samples \
        + (0 if exact is None else engine.num_eubo_samples)
    return assemble(engine, target, np.asarray(batch.end, np.float64)[None],
                    {"log_weight": log_w[None]}, run, paths * engine.grads_per_path(),
                    headline, log_weights=log_w[None], trace=trace, estimates=estimates,
                    fitted=FittedPathSampler(looped, params, target),
                    status=status if not status.ok else status_of(headline))


def _reference(fn) -> str | None:
    ref = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"
    return None if "<" in ref or ref.startswith(":") else ref


def _jsonable(value):
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return [float(v) for v in np.asarray(value, np.float64).ravel()]


@register_fitted
class FittedPathSampler:
    """A trained path sampler: ``sample(rng_key, num)`` simulates ``num`` fresh paths and
    returns their end points ``{site: values}`` (constrained, leading axis ``num``) with
    ``"log_weight"``, the exact log importance weight of each path (log mean exp of
    them estimates log Z). Saved and loaded with the Result (parameters as arrays, the
    engine's options, a custom network factory by its import name); loading rebuilds
    the model's Target when its function imports by name, else pass
    ``Result.load(path, target=...)``.
    """

    kind: ClassVar[str] = "path-sampler"

    def __init__(self, engine, params: dict, target):
        self.engine, self.params, self.target = engine, params, target

    def sample(self, rng_key, num: int) -> dict:
        if self.target is None:
            raise ValueError("this trained sampler was loaded without its model (the model "
                             "function could not be imported by name): pass "
                             "Result.load(path, target=...) to draw from it")
        batch = compiled(_draw, self.engine, self.target, self.params, rng_key, num)(
            self.engine, self.target, self.params, rng_key, num)
        z = batch.end.astype(jnp.result_type(float))
        out = compiled(_constrain_draws, self.target, z)(self.target, z)
        return {**{k: np.asarray(v) for k, v in out.items()},
                "log_weight": np.asarray(batch.log_weight, np.float64)}

    def paths(self, rng_key, num: int) -> tuple[np.ndarray, np.ndarray]:
        """``num`` whole paths: the states x_0 … x_K ``(K + 1, num, dim)`` (flat,
        unconstrained) and each path's log weight ``(num,)``; the picture of particles
        flowing from the reference to the target."""
        states, log_w = compiled(_trajectories, self.engine, self.target, self.params,
                                 rng_key, num)(self.engine, self.target, self.params,
                                               rng_key, num)
        return np.asarray(states), np.asarray(log_w, np.float64)

    def to_saved(self):
        from helmholtz.engines.svi import _model_reference

        engine = self.engine
        options = {k: _jsonable(v) for k, v in engine.options().items()
                   if k not in ("network", "optimizer")}
        if engine.optimizer is not None:
            raise ValueError(f"{engine.name}: a sampler trained with a custom optimizer "
                             "cannot be saved with its options (the optimiser is code); "
                             "the trained parameters are in result.fitted.params")
        network = None
        if engine.network is not None:
            network = _reference(engine.network)
            if network is None:
                raise ValueError(f"{engine.name}: the network factory {engine.network!r} has "
                                 "no import name (a lambda or local function), so a saved "
                                 "sampler could not rebuild it; define it at module level")
        leaves = jax.tree_util.tree_leaves(self.params)
        meta = {"engine": engine.name, "options": options, "network": network,
                "dim": int(self.params["scale"].shape[0]),
                **_model_reference(self.target)}
        return meta, {f"p{i}": np.asarray(x) for i, x in enumerate(leaves)}

    @classmethod
    def from_saved(cls, meta, arrays, target=None):
        from helmholtz.engines.base import get_engine, with_options
        from helmholtz.engines.svi import saved_target

        options = dict(meta["options"])
        if meta.get("network"):
            options["network"] = _resolve(meta["network"])
        engine = with_options(get_engine(meta["engine"]), options)
        target = saved_target(meta, target, "sampler")
        skeleton = jax.eval_shape(lambda: engine.param_skeleton(meta["dim"]))
        shapes, treedef = jax.tree_util.tree_flatten(skeleton)
        if len(arrays) != len(shapes) or any(
                arrays[f"p{i}"].shape != s.shape or arrays[f"p{i}"].dtype != s.dtype
                for i, s in enumerate(shapes)):
            raise ValueError(f"the saved {meta['engine']} parameters do not fit the network "
                             "its options build (another version of the network factory?)")
        leaves = [jnp.asarray(arrays[f"p{i}"]) for i in range(len(shapes))]
        return cls(engine.loop_engine(), jax.tree_util.tree_unflatten(treedef, leaves),
                   target)
