"""Target: one numpyro model seen as a log density over a flat unconstrained vector.

Engines see only a :class:`Target`. It wraps numpyro's effect handlers (``seed``,
``substitute``, ``condition``, ``trace``) once, so that no engine ever touches a trace.

A Target is a JAX pytree: the array-valued model arguments, observed data and
``numpyro.param`` values are its leaves; the model function, the non-array arguments and
the layout of the latent sites are its static part. Two Targets built from the same model
with data of the same shapes therefore share every compiled function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import compute_log_probs

from helmholtz.errors import ModelError

__all__ = ["Target", "SiteInfo"]

_JACOBIAN_PREFIX = "_helmholtz_jacobian_"


@dataclass(frozen=True)
class SiteInfo:
    """Layout of one latent site inside the flat unconstrained vector."""

    name: str
    shape: tuple[int, ...]  # shape of the unconstrained value
    constrained_shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _is_array(x) -> bool:
    return isinstance(x, jax.Array | np.ndarray | np.generic)


class _Static:
    """Hashable wrapper for a non-array leaf (falls back to identity when unhashable)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def _key(self):
        try:
            hash(self.value)
            return (type(self.value), self.value)
        except TypeError:
            return (type(self.value), id(self.value))

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key() == other._key()


@dataclass(frozen=True)
class _Spec:
    """The static, hashable part of a Target: what a compiled function depends on."""

    model: Callable
    data_treedef: Any
    static_leaves: tuple  # _Static for non-array leaves, None where an array sits
    sites: tuple[SiteInfo, ...]
    param_names: tuple[str, ...]
    observed_names: tuple[str, ...]  # sites with data (likelihood terms with values)
    deterministic_names: tuple[str, ...]
    name: str


def _unconstrain_substitute(values: dict):
    """substitute_fn mapping unconstrained values to a site's support, adding log|J|.

    numpyro's own ``_unconstrain_reparam`` does the same but is private; we keep the
    Jacobian factor under our own prefix so it is booked to the prior, not the likelihood.
    """

    def fn(site):
        name = site["name"]
        if site["type"] != "sample" or name not in values or site["is_observed"]:
            return None
        u = values[name]
        transform = biject_to(site["fn"].support)
        x = transform(u)
        log_det = transform.log_abs_det_jacobian(u, x)
        numpyro.factor(_JACOBIAN_PREFIX + name, jnp.sum(log_det))
        return x

    return fn


class Target:
    """A numpyro model as a log density over a flat unconstrained vector ``z``.

    Build one with :meth:`Target.from_model` (or :func:`helmholtz.boltzmann` for an energy
    function). It exposes

    * ``log_density(z)`` — log p(z) including the change-of-variables term;
    * ``grad_log_density(z)``;
    * ``log_prior(z)`` and ``log_likelihood(z)`` with ``log_prior + log_likelihood =
      log_density`` (the split that tempering uses; Jacobians count as prior);
    * ``sample_reference(rng_key, num)`` — draws of ``z`` from the prior (the proper
      reference measure that annealing starts from);
    * ``constrain(z)`` — named constrained sites (and deterministic sites);
    * ``dim``, ``log_z`` (exact log normaliser when the model declares one via a
      ``exact_log_z`` attribute, a number or a function of the model's arguments).

    ``numpyro.param`` sites are held at their values (``params``); ``with_data`` swaps the
    model's arguments without re-tracing anything that was compiled for the old ones.
    """

    def __init__(self, spec: _Spec, data_leaves: tuple, params: dict, observed: dict, log_z):
        self._spec = spec
        self._data_leaves = tuple(data_leaves)
        self.params = dict(params)
        self.observed = dict(observed)
        self.log_z = log_z
        # an exact draw of z from this Target (set by ``simulate``); host-side only
        self.exact_sample = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, model: Callable, *args, **kwargs) -> Target:
        """Trace ``model(*args, **kwargs)`` once and build its Target.

        Raises
        ------
        ModelError
            When the model raises while tracing, has no latent sites, or has a discrete
            latent site (enumerate it out first).
        """
        if isinstance(model, Target):
            raise TypeError("Target.from_model expects a numpyro model function, got a Target")
        if not callable(model):
            raise TypeError(f"Target.from_model: model must be callable, got {type(model)!r}")
        return cls._build(model, args, kwargs, params=None, observed={})

    @classmethod
    def _build(cls, model, args, kwargs, params, observed) -> Target:
        name = getattr(model, "__name__", type(model).__name__)
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        static = tuple(None if _is_array(x) else _Static(x) for x in leaves)
        data_leaves = tuple(jnp.asarray(x) if _is_array(x) else None for x in leaves)

        conditioned = handlers.condition(model, data=observed) if observed else model
        try:
            with handlers.block():
                tr = handlers.trace(
                    handlers.substitute(
                        handlers.seed(conditioned, jax.random.key(0)),
                        substitute_fn=numpyro.infer.init_to_uniform,
                    )
                ).get_trace(*args, **kwargs)
        except Exception as exc:  # a model can raise anything; we name the model
            raise ModelError(
                f"model '{name}' raised {type(exc).__name__} while tracing: {exc}. "
                "Check that the arguments match the model's signature and that it runs "
                "under numpyro.handlers.seed."
            ) from exc

        sites, param_values, obs_names, det_names = [], {}, [], []
        offset = 0
        for site in tr.values():
            if site["type"] == "param":
                param_values[site["name"]] = site["value"]
            elif site["type"] == "deterministic":
                det_names.append(site["name"])
            elif site["type"] == "sample" and not site["is_observed"]:
                fn = site["fn"]
                if fn.support.is_discrete:
                    raise ModelError(
                        f"model '{name}' has a discrete latent site '{site['name']}'; "
                        "gradient-based engines need it marginalised (enumerate it out "
                        "or give it as data)."
                    )
                u = biject_to(fn.support).inv(site["value"])
                info = SiteInfo(site["name"], tuple(jnp.shape(u)), tuple(jnp.shape(site["value"])),
                                offset)
                offset += info.size
                sites.append(info)
            elif site["type"] == "sample" and site["is_observed"]:
                if not isinstance(site["fn"], dist.Unit) and not site["name"].startswith(
                    _JACOBIAN_PREFIX
                ):
                    obs_names.append(site["name"])
        if not sites:
            raise ModelError(f"model '{name}' has no latent sample sites: nothing to infer.")
        if params is None:
            params = param_values
        spec = _Spec(model, treedef, static, tuple(sites), tuple(sorted(param_values)),
                     tuple(obs_names), tuple(det_names), name)

        # a model's exact_log_z is a function of its arguments; conditioning replaces data
        # (or turns latent sites into data), so it no longer applies
        log_z = None if observed else getattr(model, "exact_log_z", None)
        if callable(log_z):
            log_z = log_z(*args, **kwargs)
        log_z = None if log_z is None else float(log_z)
        return cls(spec, data_leaves, params, observed, log_z)

    def with_data(self, *args, **kwargs) -> Target:
        """The same model with new arguments (new data); parameters and conditioning kept.

        Compiled engine functions are reused when the new data have the old shapes.
        """
        return self._build(self.model, args, kwargs, params=self.params,
                           observed=self.observed)

    def condition(self, data: dict) -> Target:
        """Condition further sample sites on observed values (numpyro ``condition``)."""
        observed = {**self.observed, **{k: jnp.asarray(v) for k, v in data.items()}}
        return self._build(self.model, *self.model_args, params=self.params, observed=observed)

    def with_params(self, params: dict) -> Target:
        """A Target whose ``numpyro.param`` sites are held at ``params``."""
        unknown = set(params) - set(self._spec.param_names)
        if unknown:
            raise ValueError(
                f"unknown param sites {sorted(unknown)}; "
                f"the model has {list(self._spec.param_names)}"
            )
        return Target(self._spec, self._data_leaves, {**self.params, **params}, self.observed,
                      self.log_z)

    def simulate(self, rng_key) -> tuple[Target, jax.Array]:
        """Data simulated from the prior predictive, and the latent values that made them.

        Draws z* from the prior (``sample_reference``), then every observed site from the
        model at z*, and returns ``(target, z*)``: this model conditioned on the simulated
        observations, and z* (flat, unconstrained). z* is an exact draw from that Target's
        posterior (joint p(z) p(y | z) read the other way round), which is what reverse AIS
        and BAR need (Grosse, Ghahramani & Adams 2015); the returned Target keeps it as
        ``target.exact_sample``. Its ``log_z`` is None: the model's ``exact_log_z`` refers
        to the model's own arguments.

        Raises
        ------
        ModelError
            When the model has no observed sites, or its likelihood has ``numpyro.factor``
            terms (a factor is a number, not a distribution to simulate from).
        """
        if not self.observed_names:
            raise ModelError(f"model '{self.name}' has no observed sites: nothing to simulate.")
        k_z, k_y = jax.random.split(rng_key)
        z = self.sample_reference(k_z)
        tr = self._trace(_Unobserve(self._at(z), set(self.observed_names)), k_y)
        # what is still observed once the data sites are sampled: factor terms
        factors = [k for k, v in tr.items() if v["type"] == "sample" and v["is_observed"]
                   and not k.startswith(_JACOBIAN_PREFIX)]
        if factors:
            raise ModelError(
                f"model '{self.name}': the likelihood has factor terms {factors}, which "
                "cannot be simulated; write them as sample sites with observed values.")
        data = {k: tr[k]["value"] for k in self.observed_names}
        simulated = self.condition(data)
        simulated.exact_sample = z
        return simulated, z

    # ------------------------------------------------------------------ pytree protocol
    # log_z stays out of the static part on purpose: new data change it, and a compiled
    # function must not be re-traced for that. Inside a traced function it reads None.
    def tree_flatten(self):
        return (self._data_leaves, self.params, self.observed), self._spec

    @classmethod
    def tree_unflatten(cls, spec, children):
        data_leaves, params, observed = children
        return cls(spec, data_leaves, params, observed, None)

    # ------------------------------------------------------------------ plain facts
    @property
    def model(self) -> Callable:
        return self._spec.model

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def sites(self) -> tuple[SiteInfo, ...]:
        return self._spec.sites

    @property
    def dim(self) -> int:
        return sum(s.size for s in self._spec.sites)

    @property
    def observed_names(self) -> tuple[str, ...]:
        return self._spec.observed_names

    @property
    def model_args(self) -> tuple[tuple, dict]:
        leaves = [s.value if d is None else d for s, d in zip(self._spec.static_leaves,
                                                              self._data_leaves, strict=True)]
        return jax.tree_util.tree_unflatten(self._spec.data_treedef, leaves)

    @property
    def compile_key(self):
        """Hashable key of everything a compiled function of this Target depends on."""
        avals = tuple(
            (tuple(x.shape), str(x.dtype))
            for x in jax.tree_util.tree_leaves((self._data_leaves, self.params, self.observed))
        )
        return (self._spec, avals)

    def __repr__(self):
        sites = ", ".join(f"{s.name}{list(s.constrained_shape)}" for s in self.sites)
        return f"Target({self.name}: dim={self.dim}, sites=[{sites}], log_z={self.log_z})"

    # ------------------------------------------------------------------ flat vector
    def unravel(self, z) -> dict:
        """Split a flat vector into unconstrained site values."""
        return {s.name: z[s.offset:s.offset + s.size].reshape(s.shape) for s in self.sites}

    def ravel(self, values: dict):
        """Concatenate unconstrained site values into a flat vector."""
        return jnp.concatenate([jnp.reshape(values[s.name], (-1,)) for s in self.sites])

    def _trace(self, model, rng_key=None):
        """Trace ``model`` on this Target's data, shielded from any outer handlers."""
        args, kwargs = self.model_args
        key = jax.random.key(0) if rng_key is None else rng_key
        with handlers.block():
            return handlers.trace(handlers.seed(model, key)).get_trace(*args, **kwargs)

    def _bound_model(self):
        model = self.model
        if self.params:
            model = handlers.substitute(model, data=self.params)
        if self.observed:
            model = handlers.condition(model, data=self.observed)
        return model

    def _at(self, z):
        """The bound model with its latent sites set from the unconstrained vector ``z``."""
        return handlers.substitute(self._bound_model(),
                                   substitute_fn=_unconstrain_substitute(self.unravel(z)))

    def _log_probs(self, z, sum_log_prob: bool = True) -> dict:
        args, kwargs = self.model_args
        with handlers.block():  # keep an outer handler stack (an ELBO's trace) out
            log_probs, _ = compute_log_probs(self._at(z), args, kwargs, {},
                                             sum_log_prob=sum_log_prob)
        return log_probs

    def _split(self, z):
        prior, lik = 0.0, 0.0
        latent = {s.name for s in self.sites}
        for name, lp in self._log_probs(z).items():
            if name in latent or name.startswith(_JACOBIAN_PREFIX):
                prior = prior + lp
            else:
                lik = lik + lp
        return prior, lik

    # ------------------------------------------------------------------ densities
    def log_density(self, z):
        """log p(z): joint log density over the flat unconstrained vector, with log|J|."""
        prior, lik = self._split(z)
        return prior + lik

    def grad_log_density(self, z):
        return jax.grad(self.log_density)(z)

    def log_prior(self, z):
        """Log density of the reference (prior) in unconstrained space, with log|J|."""
        return self._split(z)[0]

    def log_likelihood(self, z):
        """Sum of observed-site log densities and factors: log_density − log_prior."""
        return self._split(z)[1]

    def pointwise_log_likelihood(self, z) -> dict:
        """Per-observation log likelihood of each observed site (for arviz's loo/waic)."""
        log_probs = self._log_probs(z, sum_log_prob=False)
        return {k: log_probs[k] for k in self.observed_names}

    def observed_data(self) -> dict:
        """Values of the observed sites (numpy arrays), for arviz's observed_data group."""
        tr = self._trace(self._bound_model())
        return {k: np.asarray(tr[k]["value"]) for k in self.observed_names}

    # ------------------------------------------------------------------ reference and maps
    def sample_reference(self, rng_key, num: int | None = None):
        """Draws of ``z`` from the prior (the proper reference measure).

        Returns shape ``(dim,)`` for ``num=None`` and ``(num, dim)`` otherwise.
        """
        if num is not None:
            return jax.vmap(self.sample_reference)(jax.random.split(rng_key, num))
        try:
            tr = self._trace(self._bound_model(), rng_key)
        except NotImplementedError as exc:
            raise ModelError(
                f"model '{self.name}' has no proper reference to draw from ({exc}); "
                "give every latent site a proper prior to use reference-based engines."
            ) from exc
        values = {}
        for s in self.sites:
            site = tr[s.name]
            values[s.name] = biject_to(site["fn"].support).inv(site["value"])
        return self.ravel(values)

    def constrain(self, z) -> dict:
        """Map a flat unconstrained vector to named constrained (and deterministic) sites."""
        tr = self._trace(self._at(z))
        names = [s.name for s in self.sites] + list(self._spec.deterministic_names)
        return {k: tr[k]["value"] for k in names}

    def unconstrain(self, values: dict):
        """Map named constrained latent values to the flat unconstrained vector."""
        tr = self._trace(handlers.substitute(self._bound_model(), data=values))
        return self.ravel({s.name: biject_to(tr[s.name]["fn"].support).inv(values[s.name])
                           for s in self.sites})


class _Unobserve(numpyro.primitives.Messenger):
    """Sample the named observed sites instead of scoring their data (for ``simulate``)."""

    def __init__(self, fn, names):
        self.names = names
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["name"] in self.names:
            msg["value"] = None
            msg["is_observed"] = False


jax.tree_util.register_pytree_node(Target, Target.tree_flatten, Target.tree_unflatten)
