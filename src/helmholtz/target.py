"""Target: one numpyro model seen as a log density over a flat unconstrained vector.

Engines see only a :class:`Target`. It wraps numpyro's effect handlers (``seed``,
``substitute``, ``condition``, ``trace``) once, so that no engine ever touches a trace.

A Target is a JAX pytree: the array-valued model arguments, observed data and
``numpyro.param`` values are its leaves; the model function, the non-array arguments and
the layout of the latent sites are its static part. Two Targets built from the same model
with data of the same shapes therefore share every compiled function.

Discrete latent sites with finite support are summed out by numpyro's funsor-based
enumeration (``numpyro.contrib.funsor``; Obermeyer et al. 2019, "Tensor variable
elimination for plated factor graphs", ICML), as numpyro's HMC does: the flat vector holds
the continuous sites only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.distributions.util import sum_rightmost
from numpyro.infer.util import compute_log_probs

from helmholtz._views import Bridge, Tempered, bridge
from helmholtz.errors import ModelError

__all__ = ["Target", "SiteInfo", "ParamInfo", "Tempered", "Bridge", "bridge"]

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


def _constraint_key(c) -> tuple:
    """A structural, hashable key of a numpyro constraint (instances are rebuilt per trace)."""
    items = []
    for k, v in sorted(vars(c).items()):
        if isinstance(v, constraints.Constraint):
            v = _constraint_key(v)
        elif _is_array(v) or isinstance(v, int | float | bool):
            v = (np.shape(v), tuple(np.ravel(np.asarray(v)).tolist()))
        else:
            v = _Static(v)
        items.append((k, v))
    return (type(c), tuple(items))


@dataclass(frozen=True)
class ParamInfo:
    """A ``numpyro.param`` site: its shapes and the constraint its value lives in.

    The unconstrained value u maps to the constrained one by θ = biject_to(constraint)(u).
    """

    name: str
    shape: tuple[int, ...]  # constrained
    unconstrained_shape: tuple[int, ...]
    constraint: Any = field(compare=False)
    constraint_key: tuple = field(repr=False, default=())


def _is_array(x) -> bool:
    return isinstance(x, jax.Array | np.ndarray | np.generic)


def _on_device(x):
    """``jnp.asarray(x)`` for data: a numpy array is cast on the host and put on the
    device as it is, since jnp.asarray's cast (float64 to float32 without x64) is a small
    program to compile per shape (cold, on the path to the first draw)."""
    if isinstance(x, jax.Array):
        return x
    x = np.asarray(x)
    # a copy: on CPU device_put may share the numpy array's memory, and the caller's
    # array must not change the Target's data (jnp.asarray copied too)
    return jax.device_put(x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=True))


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
    param_sites: tuple[ParamInfo, ...]
    observed_names: tuple[str, ...]  # sites with data (likelihood terms with values)
    deterministic_names: tuple[str, ...]
    name: str
    enum_names: tuple[str, ...] = ()  # discrete latent sites summed out by enumeration
    max_plate_nesting: int = 0
    jacobian: bool = True  # add log|det J| of the unconstraining transforms

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.param_sites)


def _unconstrain_substitute(values: dict, jacobian: bool = True):
    """substitute_fn mapping unconstrained values to a site's support, adding log|J|.

    numpyro's own ``_unconstrain_reparam`` does the same but is private; we keep the
    Jacobian factor under our own prefix so it is booked to the prior, not the likelihood.
    Like numpyro's, the factor keeps the site's batch shape, so that a plate (or an
    enumeration dimension) around the site broadcasts it without counting it twice.
    """

    def fn(site):
        name = site["name"]
        if site["type"] != "sample" or name not in values or site["is_observed"]:
            return None
        u = values[name]
        transform = biject_to(site["fn"].support)
        x = transform(u)
        if jacobian:
            log_det = transform.log_abs_det_jacobian(u, x)
            log_det = sum_rightmost(log_det, jnp.ndim(log_det) - jnp.ndim(x)
                                    + len(site["fn"].event_shape))
            numpyro.factor(_JACOBIAN_PREFIX + name, log_det)
        return x

    return fn


def _prototype_trace(model, args, kwargs, observed, name, rng_key=None):
    """One trace of the model at a random feasible point (numpyro's ``init_to_uniform``),
    with ``rng_key`` (default: key 0)."""
    conditioned = handlers.condition(model, data=observed) if observed else model
    rng_key = jax.random.key(0) if rng_key is None else rng_key
    try:
        with handlers.block():
            return handlers.trace(
                handlers.substitute(
                    handlers.seed(conditioned, rng_key),
                    substitute_fn=numpyro.infer.init_to_uniform,
                )
            ).get_trace(*args, **kwargs)
    except Exception as exc:  # a model can raise anything; we name the model
        raise ModelError(
            f"model '{name}' raised {type(exc).__name__} while tracing: {exc}. "
            "Check that the arguments match the model's signature and that it runs "
            "under numpyro.handlers.seed."
        ) from exc


def _prototype_layout(model, args, kwargs, observed, name) -> dict:
    """The model's layout (``_layout`` plus ``plates``) from one trace with an abstract key.

    The trace runs under ``jax.eval_shape`` with the key abstract, inside
    ``jax.ensure_compile_time_eval``: what the model computes from its data and constants
    alone is evaluated as in an eager trace (so a value the model caches, or turns into a
    Python number, is concrete, and numpyro's argument checks run), while everything that
    depends on a draw stays abstract and compiles nothing. The eager trace compiled each
    of those operations as its own small XLA program, about 0.5 s in a fresh process for
    a ten-line model (14 programs for the logistic regression of
    ``benchmarks/mcmc_overhead.py``; 2 now), which numpyro's ``initialize_model`` pays too.
    The eager trace stays where its values are needed, for the initial values of
    ``numpyro.param`` sites, and where the abstract one fails (a model that branches on a
    drawn value, or raises: its error then comes from the eager trace, as before).
    """
    found = {}

    def probe(raw_key):
        with jax.ensure_compile_time_eval():
            tr = _prototype_trace(model, args, kwargs, observed, name, raw_key)
            found.update(_layout(tr, name), plates=_max_plate_nesting(tr))

    try:
        jax.eval_shape(probe, jax.ShapeDtypeStruct((2,), jnp.uint32))
    except Exception:  # noqa: BLE001 - the eager trace below reports the model's error
        found = {}
    if not found or found["param_sites"]:
        tr = _prototype_trace(model, args, kwargs, observed, name)
        found = {**_layout(tr, name), "plates": _max_plate_nesting(tr)}
    return found


def _check_enumerable(site, model_name):
    """Raise a ModelError unless a discrete latent site can be enumerated in parallel."""
    fn, name = site["fn"], site["name"]
    if not fn.has_enumerate_support:
        raise ModelError(
            f"model '{model_name}' has a discrete latent site '{name}' "
            f"({type(fn).__name__}) with infinite support, which cannot be enumerated. "
            "Marginalise it by hand (a numpyro.factor with the log of the summed "
            "probabilities, truncated where the terms become negligible), replace it by a "
            "Categorical over a finite range, or give it as data (Target.condition).")
    how = site["infer"].get("enumerate")
    if how not in (None, "parallel"):
        raise ModelError(
            f"model '{model_name}': discrete latent site '{name}' is marked "
            f"enumerate={how!r}; only parallel enumeration is supported (mark it "
            "infer={'enumerate': 'parallel'} or leave it unmarked).")


def _layout(tr, model_name) -> dict:
    """Latent, enumerated, param, observed and deterministic sites of a prototype trace."""
    sites, enum, params, param_values, obs, det = [], [], [], {}, [], []
    offset = 0
    for site in tr.values():
        if site["type"] == "param":
            c = site["kwargs"].get("constraint", constraints.real)
            u = biject_to(c).inv(site["value"])
            params.append(ParamInfo(site["name"], tuple(jnp.shape(site["value"])),
                                    tuple(jnp.shape(u)), c, _constraint_key(c)))
            param_values[site["name"]] = site["value"]
        elif site["type"] == "deterministic":
            det.append(site["name"])
        elif site["type"] == "sample" and not site["is_observed"]:
            if site["fn"].support.is_discrete:
                _check_enumerable(site, model_name)
                enum.append(site["name"])
                continue
            u = biject_to(site["fn"].support).inv(site["value"])
            info = SiteInfo(site["name"], tuple(jnp.shape(u)), tuple(jnp.shape(site["value"])),
                            offset)
            offset += info.size
            sites.append(info)
        elif site["type"] == "sample" and site["is_observed"]:
            if not isinstance(site["fn"], dist.Unit) and not site["name"].startswith(
                _JACOBIAN_PREFIX
            ):
                obs.append(site["name"])
    if not sites and not params:
        raise ModelError(f"model '{model_name}' has no latent sample sites: nothing to infer."
                         + (f" (Its discrete sites {enum} are summed out.)" if enum else "")
                         + " A model with numpyro.param sites and only discrete latents is "
                         "fitted by the em engine.")
    return {"sites": tuple(sites), "enum": tuple(enum),
            "param_sites": tuple(sorted(params, key=lambda p: p.name)),
            "param_values": param_values, "observed": tuple(obs), "deterministic": tuple(det)}


def _max_plate_nesting(tr) -> int:
    """How many batch dimensions the plates use (numpyro's ``_guess_max_plate_nesting``):
    enumeration allocates its dimensions to the left of them."""
    dims = [f.dim for s in tr.values() if s["type"] == "sample"
            for f in s["cond_indep_stack"] if f.dim is not None]
    return -min(dims) if dims else 0


class Target:
    """A numpyro model as a log density over a flat unconstrained vector ``z``.

    Build one with :meth:`Target.from_model` (or :func:`helmholtz.boltzmann` for an energy
    function). It exposes

    * ``log_density(z)`` — log p(z) including the change-of-variables term
      log|det ∂x/∂z| (unless built with ``jacobian=False``);
    * ``grad_log_density(z)``;
    * ``log_prior_and_likelihood(z)``, ``log_prior(z)`` and ``log_likelihood(z)`` with
      ``log_prior + log_likelihood = log_density`` (the split that tempering uses;
      Jacobians count as prior), the pair from one model trace;
    * ``tempered(β)`` — the view log_prior + β · log_likelihood (a pytree, β a leaf);
    * ``sample_reference(rng_key, num)`` — draws of ``z`` from the prior (the proper
      reference measure that annealing starts from);
    * ``constrain(z)`` — named constrained sites (and deterministic sites);
    * ``param_sites``, ``constrain_params``, ``unconstrain_params`` and ``log_joint(θ, z)``
      for ``numpyro.param`` sites;
    * ``dim``, ``log_z`` (exact log normaliser when the model declares one via a
      ``exact_log_z`` attribute, a number or a function of the model's arguments), and
      ``exact_sample`` (a draw of z from this Target's posterior, made by ``simulate``).

    Discrete latent sites with finite support are marginalised by enumeration: ``z``
    holds the continuous sites c only and log_density(c) = log Σ_k p(c, k, data),
    computed by numpyro's funsor backend (Obermeyer et al. 2019), as numpyro's HMC does
    for sites marked ``infer={"enumerate": "parallel"}`` (``config_enumerate``) or not
    marked at all. Draw k from p(k | c, data) with :meth:`sample_discrete`.

    ``numpyro.param`` sites are held at their values (``params``, constrained); ``with_data``
    swaps the model's arguments without re-tracing anything compiled for the old ones.
    """

    def __init__(self, spec: _Spec, data_leaves: tuple, params: dict, observed: dict, log_z,
                 exact_sample=None):
        self._spec = spec
        self._data_leaves = tuple(data_leaves)
        self.params = dict(params)
        self.observed = dict(observed)
        self.log_z = log_z
        # an exact draw of z from this Target's posterior (made by ``simulate``); host-side
        # only: it is no pytree leaf, and an unflattened Target has none
        self.exact_sample = exact_sample

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, model: Callable, *args, jacobian: bool = True,
                   model_kwargs: dict | None = None, **kwargs) -> Target:
        """Trace ``model(*args, **kwargs)`` once and build its Target.

        Parameters
        ----------
        model
            A numpyro model function.
        *args, **kwargs
            The model's arguments. ``jacobian`` and ``model_kwargs`` are reserved here: a
            model keyword argument of either name goes in ``model_kwargs``.
        jacobian
            ``True`` (default): ``log_density`` is the density of z, log p(x(z)) +
            log|det ∂x/∂z|, whose maxima are the modes in unconstrained space and which
            samplers need. ``False``: the Jacobian term is left out, log p(x(z)), whose
            maxima are the modes of the constrained density (MAP in constrained space,
            density functionals). Part of the compile key.
        model_kwargs
            More keyword arguments of the model (merged over ``kwargs``).

        Raises
        ------
        ModelError
            When the model raises while tracing, has no latent sites, or has a discrete
            latent site that cannot be enumerated (infinite support, or marked for
            sequential enumeration).
        """
        if isinstance(model, Target):
            raise TypeError("Target.from_model expects a numpyro model function, got a Target")
        if not callable(model):
            raise TypeError(f"Target.from_model: model must be callable, got {type(model)!r}")
        kwargs = {**kwargs, **(model_kwargs or {})}
        return cls._build(model, args, kwargs, params=None, observed={}, jacobian=jacobian)

    @classmethod
    def _build(cls, model, args, kwargs, params, observed, jacobian=True,
               exact_sample=None) -> Target:
        name = getattr(model, "__name__", type(model).__name__)
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        static = tuple(None if _is_array(x) else _Static(x) for x in leaves)
        data_leaves = tuple(_on_device(x) if _is_array(x) else None for x in leaves)
        layout = _prototype_layout(model, args, kwargs, observed, name)
        if params is None:
            params = layout["param_values"]
        spec = _Spec(model, treedef, static, layout["sites"], layout["param_sites"],
                     layout["observed"], layout["deterministic"], name, layout["enum"],
                     layout["plates"] if layout["enum"] else 0, bool(jacobian))

        # a model's exact_log_z is a function of its arguments; conditioning replaces data
        # (or turns latent sites into data), so it no longer applies; nor without Jacobian
        log_z = None if observed or not jacobian else getattr(model, "exact_log_z", None)
        if callable(log_z):
            log_z = log_z(*args, **kwargs)
        log_z = None if log_z is None else float(log_z)
        return cls(spec, data_leaves, params, observed, log_z, exact_sample)

    def _rebuild(self, args, kwargs, observed, exact_sample=None) -> Target:
        return self._build(self.model, args, kwargs, params=self.params, observed=observed,
                           jacobian=self._spec.jacobian, exact_sample=exact_sample)

    def with_data(self, *args, **kwargs) -> Target:
        """The same model with new arguments (new data); parameters and conditioning kept.

        Compiled engine functions are reused when the new data have the old shapes.
        """
        return self._rebuild(args, kwargs, self.observed)

    def condition(self, data: dict) -> Target:
        """Condition further sample sites on observed values (numpyro ``condition``)."""
        observed = {**self.observed, **{k: jnp.asarray(v) for k, v in data.items()}}
        return self._rebuild(*self.model_args, observed)

    def with_params(self, params: dict) -> Target:
        """A Target whose ``numpyro.param`` sites are held at ``params`` (constrained)."""
        unknown = set(params) - set(self._spec.param_names)
        if unknown:
            raise ValueError(
                f"unknown param sites {sorted(unknown)}; "
                f"the model has {list(self._spec.param_names)}"
            )
        return Target(self._spec, self._data_leaves, {**self.params, **params}, self.observed,
                      self.log_z)

    def without_jacobian(self) -> Target:
        """This Target with ``log_density`` = log p(x(z)), no log|det ∂x/∂z| term.

        Maximising it gives the mode of the density of the constrained values x (MAP in
        constrained space); with the Jacobian the maximiser is the mode in unconstrained
        space. ``log_z`` is dropped: the integral over z changes.
        """
        return Target(replace(self._spec, jacobian=False), self._data_leaves, self.params,
                      self.observed, None)

    def simulate(self, rng_key) -> tuple[Target, jax.Array]:
        """Data simulated from the prior predictive, and the latent values that made them.

        Draws z* from the prior (``sample_reference``), then every observed site from the
        model at z* (discrete latent sites drawn from their prior too), and returns
        ``(target, z*)``: this model conditioned on the simulated observations, and z*
        (flat, unconstrained). z* is an exact draw from that Target's posterior (joint
        p(z) p(y | z) read the other way round), which is what reverse AIS and BAR need
        (Grosse, Ghahramani & Adams 2015); the returned Target is built with it as
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
        data = {k: jnp.asarray(tr[k]["value"]) for k in self.observed_names}
        simulated = self._rebuild(*self.model_args, {**self.observed, **data}, exact_sample=z)
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
    def enumerated_names(self) -> tuple[str, ...]:
        """Discrete latent sites summed out by enumeration (not in ``z``)."""
        return self._spec.enum_names

    @property
    def jacobian(self) -> bool:
        """Whether ``log_density`` includes log|det ∂x/∂z| (see ``without_jacobian``)."""
        return self._spec.jacobian

    @property
    def param_sites(self) -> tuple[ParamInfo, ...]:
        """The model's ``numpyro.param`` sites, by name: shapes and constraints."""
        return self._spec.param_sites

    @property
    def model_args(self) -> tuple[tuple, dict]:
        leaves = [s.value if d is None else d for s, d in zip(self._spec.static_leaves,
                                                              self._data_leaves, strict=True)]
        return jax.tree_util.tree_unflatten(self._spec.data_treedef, leaves)

    @property
    def compile_key(self):
        """Hashable key of everything a compiled function of this Target depends on."""
        avals = tuple(
            (tuple(np.shape(x)), str(jnp.result_type(x)))
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
        return handlers.substitute(
            self._bound_model(),
            substitute_fn=_unconstrain_substitute(self.unravel(z), self._spec.jacobian))

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

    def _enumerated(self, model):
        """``model`` with every discrete latent site enumerated in parallel (funsor)."""
        from numpyro.contrib.funsor import config_enumerate, enum

        return enum(config_enumerate(model), first_available_dim=-self._spec.max_plate_nesting
                    - 1)

    def _enum_log_joint(self, z):
        """log Σ_k p(z, k, data) by numpyro's funsor backend, and the enumerated trace."""
        from numpyro.contrib.funsor import log_density

        args, kwargs = self.model_args
        model = self._enumerated(handlers.seed(self._at(z), jax.random.key(0)))
        with handlers.block():
            return log_density(model, args, kwargs, {})

    def _enum_split(self, z):
        total, tr = self._enum_log_joint(z)
        prior = _enumerated_prior(tr, {s.name for s in self.sites}, self.name)
        return prior, total - prior

    # ------------------------------------------------------------------ densities
    def log_prior_and_likelihood(self, z):
        """(log prior, log likelihood) at ``z`` from one trace of the model.

        .. math::

            \\log p(z) = \\sum_{\\text{latent } i} \\log p_i(x_i(z))
                        + \\log|\\det ∂x/∂z|, \\qquad
            \\log L(z) = \\log p(z, y) − \\log p(z),

        i.e. the likelihood is every observed site and factor. With enumerated discrete
        sites k the prior is the marginal prior of the continuous sites,
        log Σ_k p(z, k) (just Σ_i log p_i when no continuous site depends on k), and the
        likelihood the marginal log p(y | z) = log Σ_k p(z, k, y) − log p(z); tempering
        p(z) p(y | z)^β then runs from the (marginal) prior to the posterior.
        """
        if self._spec.enum_names:
            return self._enum_split(z)
        return self._split(z)

    def log_density(self, z):
        """log p(z): joint log density over the flat unconstrained vector, with log|J|
        (without it for a Target built with ``jacobian=False``); discrete latent sites
        summed out: log Σ_k p(z, k, data)."""
        if self._spec.enum_names:
            return self._enum_log_joint(z)[0]
        prior, lik = self._split(z)
        return prior + lik

    def grad_log_density(self, z):
        return jax.grad(self.log_density)(z)

    def log_prior(self, z):
        """Log density of the reference (prior) in unconstrained space, with log|J|."""
        return self.log_prior_and_likelihood(z)[0]

    def log_likelihood(self, z):
        """Sum of observed-site log densities and factors: log_density − log_prior."""
        return self.log_prior_and_likelihood(z)[1]

    def tempered(self, beta) -> Tempered:
        """The view log π_β(z) = log_prior(z) + β · log_likelihood(z) (a pytree; β is a leaf,
        so a new β never recompiles). See :class:`helmholtz.target.Tempered`."""
        return Tempered(self, jnp.asarray(beta, dtype=jnp.result_type(float)))

    def pointwise_log_likelihood(self, z) -> dict:
        """Per-observation log likelihood of each observed site (for arviz's loo/waic).

        Raises
        ------
        ModelError
            For a model with enumerated discrete sites: its observations are scored
            jointly, marginal over those sites.
        """
        if self._spec.enum_names:
            raise ModelError(
                f"model '{self.name}': no pointwise log likelihood with enumerated discrete "
                f"sites {list(self._spec.enum_names)}; log_likelihood(z) gives the marginal "
                "total.")
        log_probs = self._log_probs(z, sum_log_prob=False)
        return {k: log_probs[k] for k in self.observed_names}

    def observed_data(self) -> dict:
        """Values of the observed sites (numpy arrays), for arviz's observed_data group.

        Read from an abstract trace (``jax.eval_shape``), in which data given to the
        model come through as they are and the rest of the model is not run: an eager
        trace compiled seven small programs (0.3 s of a cold first NUTS call on a
        logistic regression). An observed value the model computes from its latent
        draws is a tracer there, and then the model is traced eagerly as before."""
        seen = {}

        def read():
            tr = self._trace(self._bound_model())
            seen.update({k: tr[k]["value"] for k in self.observed_names})

        try:
            jax.eval_shape(read)
        except Exception:  # noqa: BLE001 - the eager trace below reports the model's error
            seen = {}
        if len(seen) < len(self.observed_names) or any(
                isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(seen)):
            tr = self._trace(self._bound_model())
            seen = {k: tr[k]["value"] for k in self.observed_names}
        return {k: np.asarray(v) for k, v in seen.items()}

    # ------------------------------------------------------------------ params θ
    def constrain_params(self, u_theta: dict) -> dict:
        """θ = biject_to(constraint)(u) for each given param site (unconstrained → site)."""
        infos = self._param_infos(u_theta)
        return {k: biject_to(infos[k].constraint)(v) for k, v in u_theta.items()}

    def unconstrain_params(self, theta: dict) -> dict:
        """u = biject_to(constraint)⁻¹(θ) for each given param site."""
        infos = self._param_infos(theta)
        return {k: biject_to(infos[k].constraint).inv(jnp.asarray(v)) for k, v in theta.items()}

    def log_joint(self, u_theta: dict, z):
        """log p_θ(z) with the param sites at θ = constrain_params(u_theta).

        .. math::  \\log p_θ(z) = \\log p(x(z), y; θ) + \\log|\\det ∂x/∂z|

        The Jacobian is that of z only (as in ``log_density``): θ is a parameter, not a
        random variable, so no log|det ∂θ/∂u| enters and the maximiser in u is the
        maximum-likelihood (or MAP-by-prior-in-model) θ of the constrained model. This is
        EM's M-step objective: ``jax.grad(target.log_joint)(u_theta, z)``. Param sites
        missing from ``u_theta`` stay at ``params``.
        """
        return self.with_params(self.constrain_params(u_theta)).log_density(z)

    def _param_infos(self, values: dict) -> dict:
        infos = {p.name: p for p in self._spec.param_sites}
        unknown = set(values) - set(infos)
        if unknown:
            raise ValueError(f"unknown param sites {sorted(unknown)}; the model has "
                             f"{list(infos)}")
        return infos

    # ------------------------------------------------------------------ reference and maps
    def sample_reference(self, rng_key, num: int | None = None):
        """Draws of ``z`` from the prior (the proper reference measure).

        Returns shape ``(dim,)`` for ``num=None`` and ``(num, dim)`` otherwise.

        Raises
        ------
        ModelError
            Naming the latent sites whose distributions cannot be sampled (improper
            priors such as ``ImproperUniform``).
        """
        if num is not None:
            return jax.vmap(self.sample_reference)(jax.random.split(rng_key, num))
        try:
            tr = self._trace(self._bound_model(), rng_key)
        except NotImplementedError as exc:
            raise ModelError(
                f"model '{self.name}' has no proper reference to draw from: sites "
                f"{self._unsamplable_sites()} cannot be sampled ({exc}); give every latent "
                "site a proper prior to use reference-based engines."
            ) from exc
        values = {}
        for s in self.sites:
            site = tr[s.name]
            values[s.name] = biject_to(site["fn"].support).inv(site["value"])
        return self.ravel(values)

    def _unsamplable_sites(self) -> list[str]:
        """Latent sites whose distribution raises NotImplementedError when sampled."""
        bad = []

        def probe(site):
            if site["type"] != "sample" or site["is_observed"]:
                return None
            try:
                return site["fn"].sample(jax.random.key(0))
            except NotImplementedError:
                bad.append(site["name"])
                return numpyro.infer.init_to_uniform(site)

        model = handlers.substitute(handlers.seed(self._bound_model(), jax.random.key(0)),
                                    substitute_fn=probe)
        self._trace(model)
        return bad

    def constrain(self, z) -> dict:
        """Map a flat unconstrained vector to named constrained (and deterministic) sites.

        Enumerated discrete sites are not in the result (a deterministic site that
        depends on them is evaluated at a prior draw of them); draw them from their
        conditional posterior with :meth:`sample_discrete`.
        """
        tr = self._trace(self._at(z))
        names = [s.name for s in self.sites] + list(self._spec.deterministic_names)
        return {k: tr[k]["value"] for k in names}

    def unconstrain(self, values: dict):
        """Map named constrained latent values to the flat unconstrained vector."""
        tr = self._trace(handlers.substitute(self._bound_model(), data=values))
        return self.ravel({s.name: biject_to(tr[s.name]["fn"].support).inv(values[s.name])
                           for s in self.sites})

    def sample_discrete(self, rng_key, z) -> dict:
        """A draw of the enumerated discrete sites from p(k | z, data).

        numpyro's ``infer_discrete`` (forward filtering, backward sampling over the funsor
        factor graph) at the continuous values ``z``; with z from the posterior of the
        continuous sites, (z, k) is a draw from the full posterior.
        """
        from numpyro.contrib.funsor import config_enumerate, infer_discrete

        if not self._spec.enum_names:
            return {}
        model = infer_discrete(config_enumerate(self._at(z)),
                               first_available_dim=-self._spec.max_plate_nesting - 1,
                               temperature=1, rng_key=rng_key)
        tr = self._trace(model)
        return {k: tr[k]["value"] for k in self._spec.enum_names}


def _site_log_prob(site):
    """A site's (scaled) log density, as numpyro's enumerated ``log_density`` scores it."""
    log_prob = site["fn"].log_prob(site["value"])
    scale = site["scale"]
    return log_prob if scale is None else scale * log_prob


def _enumerated_prior(tr, continuous: set, model_name):
    """log p(z) of the continuous sites (with Jacobians) from an enumerated trace.

    When none of their factors carries an enumerated dimension the discrete sites'
    probabilities sum to one and log p(z) is a plain sum; otherwise funsor contracts
    log Σ_k p(z, k) over the prior factors (discrete sites included).
    """
    import funsor

    prior_sites, discrete = [], []
    for name, site in tr.items():
        if site["type"] != "sample":
            continue
        if name in continuous or name.startswith(_JACOBIAN_PREFIX):
            prior_sites.append(site)
        elif not site["is_observed"]:
            discrete.append(site)

    def enum_dims(site):
        plates = {f.name for f in site["cond_indep_stack"]}
        return set(site["infer"].get("dim_to_name", {}).values()) - plates

    if not any(enum_dims(s) for s in prior_sites):
        return sum(jnp.sum(_site_log_prob(s)) for s in prior_sites)
    if any(n.startswith("_time") or n.startswith("_PREV_") for s in prior_sites + discrete
           for n in enum_dims(s)):
        raise ModelError(
            f"model '{model_name}': a continuous site depends on a discrete site inside "
            "numpyro.contrib.funsor.markov; its prior/likelihood split is not supported.")
    factors = []
    for s in prior_sites + discrete:
        log_prob, dim_to_name = _site_log_prob(s), s["infer"]["dim_to_name"]
        if not dim_to_name:  # no batch dimension left: squeeze, as numpyro does
            log_prob = jnp.sum(log_prob)
        factors.append(funsor.to_funsor(log_prob, output=funsor.Real, dim_to_name=dim_to_name))
    plates = frozenset(f.name for s in prior_sites + discrete for f in s["cond_indep_stack"]
                       if f.dim is not None)
    sum_vars = frozenset(s["name"] for s in discrete)
    result = funsor.sum_product.sum_product(funsor.ops.logaddexp, funsor.ops.add, factors,
                                            eliminate=sum_vars | plates, plates=plates)
    return result.data


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
