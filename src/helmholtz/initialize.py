"""Starting points for chains, particles and variational families.

The per-chain engines (``nuts``, ``hmc``, ``mala``, ``svi``, ``ti``) share three options,
implemented here once after numpyro's ``init_to_*`` strategies:

``init_strategy``
    How a site not named in ``init_values`` starts: ``"uniform"`` (numpyro's
    ``init_to_uniform``: Uniform(−2, 2) per unconstrained coordinate), ``"prior"``
    (``init_to_sample``: a draw from the prior) or ``"median"`` (``init_to_median``: the
    coordinate-wise median of 101 prior draws, the same point for every chain).
``init_values``
    ``{site: constrained value}`` (numpyro's ``init_to_value``); a partial dict leaves the
    other sites to ``init_strategy``. Each value is mapped to unconstrained space by the
    bijection of its site's support, evaluated where the other sites start, so supports
    that depend on other sites are honoured.
``init_jitter``
    Half-width r ≥ 0 of a Uniform(−r, r) perturbation, in unconstrained space, added to
    the coordinates that would otherwise start at the same point in every chain (those
    from ``init_values`` and, with ``"median"``, all of them), so that chains are
    distinct and R-hat can see whether they forget their start. Default 0: start exactly
    where asked.

Example
-------
>>> result = helmholtz.infer(model, "nuts", init_values={"tau": 1.0, "mu": 0.5},
...                          init_jitter=0.1)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions.transforms import biject_to

from helmholtz.driver import Timer, compile_ahead, compiled
from helmholtz.errors import InitializationError, OptionError

__all__ = ["initial_positions", "engine_initial_positions", "normalize_init_values",
           "STRATEGIES", "INIT_OPTIONS"]

STRATEGIES = ("uniform", "prior", "median")
INIT_OPTIONS = ("init_strategy", "init_values", "init_jitter")
_NUM_TRIES = 16
_NUM_MEDIAN_DRAWS = 101


# ------------------------------------------------------------------------- the options
def normalize_init_values(engine_name: str, values) -> tuple | None:
    """An ``init_values`` option as a hashable tuple of ``(site, value)`` pairs.

    Accepts a mapping ``{site: number or array}``, such a tuple of pairs, ``None``, or a
    string (as the CLI passes it): a JSON object ``'{"w": [0, 1]}'`` or comma-separated
    ``site=value`` pairs with JSON values ``'tau=1.5,w=[0,1]'``. Array values become
    nested tuples of floats (engines are compile-cache keys and must be hashable);
    ``dict(engine.init_values)`` gives the mapping back.

    Raises
    ------
    OptionError
        For a value that is not a finite number or array of numbers, or an unreadable
        string.
    """
    if values is None:
        return None
    if isinstance(values, str):
        if values.strip().lower() in ("", "none"):
            return None
        values = _parse(engine_name, values)
    if isinstance(values, list | tuple):
        try:
            values = dict(values)
        except (TypeError, ValueError):
            raise OptionError(
                f"{engine_name}: init_values must be a dict {{site: constrained value}}, "
                f"got {values!r}") from None
    if not isinstance(values, Mapping):
        raise OptionError(f"{engine_name}: init_values must be a dict {{site: constrained "
                          f"value}}, got {type(values).__name__}")
    out = []
    for name, value in values.items():
        if not isinstance(name, str):
            raise OptionError(f"{engine_name}: init_values keys must be site names, "
                              f"got {name!r}")
        try:
            a = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise OptionError(f"{engine_name}: init_values[{name!r}] must be a number or an "
                              f"array of numbers, got {value!r}") from None
        if not np.all(np.isfinite(a)):
            raise OptionError(f"{engine_name}: init_values[{name!r}] is not finite: "
                              f"{_short(a)}")
        out.append((name, _nested_tuple(a)))
    return tuple(sorted(out)) or None


def _nested_tuple(a: np.ndarray):
    if a.ndim == 0:
        return float(a)
    return tuple(_nested_tuple(x) for x in a)


def _parse(engine_name: str, text: str) -> dict:
    def bad():
        return OptionError(
            f"{engine_name}: cannot read init_values {text!r}; write a JSON object "
            "'{\"tau\": 1.5, \"w\": [0, 1]}' or pairs 'tau=1.5,w=[0,1]'")

    text = text.strip()
    try:
        if text.startswith("{"):
            return json.loads(text)
        out = {}
        for part in _split_top_level(text):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise bad()
            out[key.strip()] = json.loads(value)
        return out
    except json.JSONDecodeError:
        raise bad() from None


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: ``'a=1,w=[0,1]'`` → ``['a=1', 'w=[0,1]']``."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += (c == "[") - (c == "]")
        if c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def validate_init_options(engine) -> None:
    """Normalise ``init_values`` in place (a dict becomes a hashable tuple of pairs) and
    raise :class:`OptionError` for a bad ``init_strategy``, ``init_values`` or
    ``init_jitter``. Engines call it from ``validate``, which their ``__post_init__`` runs
    before the frozen engine is ever hashed."""
    object.__setattr__(engine, "init_values",
                       normalize_init_values(engine.name, engine.init_values))
    if engine.init_strategy not in STRATEGIES:
        raise OptionError(f"{engine.name}: init_strategy must be one of {STRATEGIES}, "
                          f"got {engine.init_strategy!r}")
    jitter = engine.init_jitter
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not (
            0 <= jitter < np.inf):
        raise OptionError(f"{engine.name}: init_jitter must be a finite number ≥ 0, "
                          f"got {jitter!r}")


def without_init_options(engine):
    """The engine with its init options at their defaults: the key of its compiled loops.

    Where a run starts changes no compiled function but the one that finds the start, so
    runs that differ only in their init options share every other compilation.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(engine) if f.name in INIT_OPTIONS}
    if all(getattr(engine, k) == v for k, v in defaults.items()):
        return engine
    return dataclasses.replace(engine, **defaults)


def engine_initial_positions(engine, target, rng_key, num: int, timer: Timer | None = None):
    """:func:`initial_positions` with an engine's ``init_*`` options."""
    return initial_positions(target, rng_key, num, engine.init_strategy, timer,
                             values=engine.init_values, jitter=engine.init_jitter)


def engine_initial_positions_ahead(engine, target, rng_key, num: int):
    """:func:`initial_positions_ahead` with an engine's ``init_*`` options."""
    initial_positions_ahead(target, rng_key, num, engine.init_strategy,
                            values=engine.init_values, jitter=engine.init_jitter)


# ------------------------------------------------------------------------- the points
def _flat_uniform(rng_key, shape, dtype=None, minval=0.0, maxval=1.0):
    """``jax.random.uniform(rng_key, shape, dtype, minval, maxval)``, drawn as a vector and
    reshaped: the same numbers, bit for bit, compiled several times faster.

    With JAX's partitionable Threefry (the default since jax 0.5), XLA:CPU takes longer to
    compile a draw the more axes its shape has: measured with jax 0.10.2 on 2 cores,
    0.2–0.3 s for shape (704,), 0.3–0.6 s for (16, 44) or (64, 11), 1.3 s for (16, 4, 11)
    and 3.0 s for (4, 4, 4, 11). Threefry's counters run over the flat index, so the flat
    draw reshaped is the same array. Here the 16 tries of ``num`` candidates were a
    three-axis draw under ``vmap``; it made 1.3 of the 1.7 s that the program of
    :func:`initial_positions` took to compile for a 10-feature logistic regression, the
    first thing a NUTS call compiles. (``jax.random.normal`` drawn flat is not offered
    the same way: on jax 0.12 its inverse-erf transform rounds a few values 1 ulp
    differently once the shape changes, so the draws would not be identical.)
    """
    shape = tuple(int(n) for n in shape)
    flat = jax.random.uniform(rng_key, (math.prod(shape),), dtype or jnp.result_type(float),
                              minval, maxval)
    return flat.reshape(shape)


def _candidates(target, rng_key, num, strategy, median):
    k_u, k_p = jax.random.split(rng_key)
    if strategy == "prior":
        return target.sample_reference(k_p, num)
    if strategy == "median":
        return jnp.broadcast_to(median, (num, target.dim))
    # numpyro's init_to_uniform: Uniform(−2, 2) in unconstrained space
    return _flat_uniform(k_u, (num, target.dim), minval=-2.0, maxval=2.0)


def _evaluate(target, z):
    lp, g = jax.vmap(jax.value_and_grad(target.log_density))(z)
    return jnp.isfinite(lp) & jnp.all(jnp.isfinite(g), axis=-1)


def _overlay(target, z, given: dict):
    """``z`` with the given sites' coordinates replaced by their unconstrained values.

    The other sites keep their coordinates; the model is traced with them and the given
    constrained values, so each given site's support is the one at this point. Also
    returns, per given site, whether the value is in its support and whether its
    unconstrained value is finite (it is not on the support's boundary).
    """
    u = target.unravel(z)

    def substitute_fn(site):
        name = site["name"]
        if site["type"] != "sample" or site["is_observed"] or name not in u:
            return None
        if name in given:
            return given[name]
        return biject_to(site["fn"].support)(u[name])

    tr = target._trace(handlers.substitute(target._bound_model(), substitute_fn=substitute_fn))
    in_support, finite = [], []
    for name, value in given.items():
        support = tr[name]["fn"].support
        u[name] = jnp.reshape(biject_to(support).inv(value), jnp.shape(u[name]))
        in_support.append(jnp.all(support(value)))
        finite.append(jnp.all(jnp.isfinite(u[name])))
    return target.ravel(u), jnp.stack(in_support), jnp.stack(finite)


def _given_values(target, values) -> dict:
    """Check names and shapes of ``init_values`` against the Target; arrays out."""
    values = dict(normalize_init_values("init", values) or ())
    sites = {s.name: s for s in target.sites}
    unknown = [k for k in values if k not in sites]
    if unknown:
        raise OptionError(
            f"init_values: model '{target.name}' has no latent site "
            f"{', '.join(map(repr, unknown))}; its latent sites are: {', '.join(sites)} "
            "(observed and deterministic sites take no initial value)")
    dtype = jnp.result_type(float)
    given = {}
    for name, value in values.items():
        a = np.asarray(value)
        if a.shape != sites[name].constrained_shape:
            raise OptionError(
                f"init_values[{name!r}] has shape {a.shape}; site '{name}' of model "
                f"'{target.name}' has shape {sites[name].constrained_shape}")
        given[name] = jnp.asarray(a, dtype)
    return given


def _jitter_mask(target, given, strategy) -> np.ndarray:
    """The coordinates that would start at the same point in every chain."""
    mask = np.full(target.dim, strategy == "median")
    for s in target.sites:
        if s.name in given:
            mask[s.offset:s.offset + s.size] = True
    return mask


def _check_found(target, z, given, strategy, found, in_support, finite_u):
    """Raise when a given value lies outside its support, or no candidate was valid."""
    for i, name in enumerate(given):
        if not bool(np.all(np.asarray(in_support)[:, i])):
            raise OptionError(_outside_support(target, name, given[name], "outside"))
        if not bool(np.all(np.asarray(finite_u)[:, i])):
            raise OptionError(_outside_support(target, name, given[name], "on the boundary of"))
    if not bool(np.all(np.asarray(found))):
        bad = int(np.argmin(np.asarray(found)))
        raise InitializationError(_describe_failure(target, z[bad], tuple(given), strategy))


def initial_positions(target, rng_key, num: int, strategy: str = "uniform",
                      timer: Timer | None = None, *, values=None, jitter: float = 0.0):
    """``num`` starting points in unconstrained space with finite log density and gradient.

    Each point gets up to 16 candidates (``"uniform"``: Uniform(−2, 2) per coordinate of
    ``z`` as numpyro's ``init_to_uniform``; ``"prior"``: draws from the reference;
    ``"median"``: the coordinate-wise median of 101 reference draws); sites in ``values``
    (``{site: constrained value}``) are set to those values, mapped to unconstrained
    space; ``jitter`` adds Uniform(−jitter, jitter) to the coordinates that are the same
    for every point (the given sites, or all with ``"median"``). The first candidate with
    a finite log density and gradient is kept.

    Raises
    ------
    OptionError
        For an unknown strategy, a name in ``values`` that is not a latent site (the
        message lists the latent sites), a value of the wrong shape, or a value outside
        its site's support or on its boundary.
    InitializationError
        When every candidate of some point has a NaN or infinite log density or gradient;
        the message names the sites whose log density is not finite.
    """
    fn, args, key, given = _init_program(target, rng_key, num, strategy, values, jitter)
    exe = compiled(fn, *args, key=key, timer=timer)
    z, found, in_support, finite_u = exe(*args) if timer is None else timer.run(exe, *args)
    _check_found(target, z, given, strategy, found, in_support, finite_u)
    return z


def initial_positions_ahead(target, rng_key, num: int, strategy: str = "uniform", *,
                            values=None, jitter: float = 0.0):
    """Check the options of :func:`initial_positions` and compile its program on a
    worker thread (``driver.compile_ahead``), first in the queue, so that a run can trace
    its other programs meanwhile; :func:`initial_positions` then waits for it."""
    fn, args, key, _ = _init_program(target, rng_key, num, strategy, values, jitter)
    compile_ahead(fn, *args, key=key)


def _init_program(target, rng_key, num, strategy, values, jitter):
    """The checked options as the program that finds the points: ``(fn, args, cache
    key, given values)``."""
    if strategy not in STRATEGIES:
        raise OptionError(f"init strategy must be one of {STRATEGIES}, got {strategy!r}")
    given = _given_values(target, values)
    names = tuple(given)
    mask = _jitter_mask(target, given, strategy)

    def fn(target, rng_key, given, jitter):
        median = None
        if strategy == "median":
            draws = target.sample_reference(jax.random.fold_in(rng_key, 1), _NUM_MEDIAN_DRAWS)
            median = jnp.median(draws, axis=0)

        def one_try(key):
            z = _candidates(target, key, num, strategy, median)
            k_j = jax.random.fold_in(key, 1)
            in_support = finite_u = jnp.ones((num, 0), bool)
            if given:
                z, in_support, finite_u = jax.vmap(lambda zz: _overlay(target, zz, given))(z)
            z = z + jnp.where(mask, _flat_uniform(k_j, z.shape, z.dtype, -1.0, 1.0)
                              * jitter, 0.0)
            return z, in_support, finite_u

        z, in_support, finite_u = jax.vmap(one_try)(jax.random.split(rng_key, _NUM_TRIES))
        ok = (jax.vmap(lambda zz: _evaluate(target, zz))(z)  # (tries, num)
              & jnp.all(in_support, -1) & jnp.all(finite_u, -1))
        first = jnp.argmax(ok, axis=0)
        chosen = z[first, jnp.arange(num)]
        return chosen, jnp.any(ok, axis=0), jnp.any(in_support, 0), jnp.any(finite_u, 0)

    jitter = jax.device_put(np.asarray(jitter, jnp.result_type(float)))  # no conversion program
    return fn, (target, rng_key, given, jitter), ("init", num, strategy, names), given


def _short(a) -> str:
    a = np.asarray(a)
    if a.size <= 6:
        return np.array2string(a, precision=6)
    return f"array of shape {a.shape} in [{a.min():.6g}, {a.max():.6g}]"


class _Found(Exception):
    def __init__(self, support):
        self.support = support


def _outside_support(target, name, value, where) -> str:
    # the support at the site, with the sites before it at their unconstrained zero; the
    # trace stops there (the rest of the model may reject the value)
    u = target.unravel(jnp.zeros(target.dim))

    def substitute_fn(site):
        if site["type"] != "sample" or site["is_observed"] or site["name"] not in u:
            return None
        if site["name"] == name:
            raise _Found(site["fn"].support)
        return biject_to(site["fn"].support)(u[site["name"]])

    support = ""
    try:
        target._trace(handlers.substitute(target._bound_model(), substitute_fn=substitute_fn))
    except _Found as found:
        support = f" {found.support!r}"
    except Exception:  # the description must not hide the original problem
        pass
    return (f"init_values[{name!r}] = {_short(value)} lies {where} the support{support} "
            f"of site '{name}' of model '{target.name}'; give a value strictly inside it")


def _describe_failure(target, z, names=(), strategy="uniform") -> str:
    try:
        log_probs = jax.jit(target._log_probs)(z)
        bad = [k for k, v in log_probs.items() if not np.all(np.isfinite(np.asarray(v)))]
    except Exception:  # the description must not hide the original problem
        bad = []
    where = f" Non-finite terms: {', '.join(bad)}." if bad else ""
    if names:
        rest = ("" if len(names) == len(target.sites)
                else f", the other sites by init_strategy={strategy!r}")
        return (
            f"model '{target.name}': the log density or its gradient is NaN or -inf at "
            f"init_values ({', '.join(names)}{rest}; {_NUM_TRIES} points tried).{where} "
            "Check the initial values against the data and the priors."
        )
    return (
        f"model '{target.name}': the log density is NaN or -inf at every one of "
        f"{_NUM_TRIES} initial points tried.{where} Check the data for NaN or values "
        "outside a likelihood's support, priors whose support the data contradict, and "
        "constraints on latent sites; or try init_strategy='prior'."
    )
