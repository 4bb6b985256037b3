"""Result: the one output type of every engine, with arviz conversion and netCDF save/load.

A :class:`Result` holds draws with leading ``(chain, draw)`` axes (possibly none at all,
for an engine that only fits θ), the headline free energy and other named estimates
(:class:`FreeEnergy`), a :class:`Status`, what the engine learned (``fitted``, any
object following the :class:`Fitted` protocol, e.g. :class:`FittedParams` or
:class:`FittedModule`), the objective trace and timings. :meth:`Result.save` writes all
of it to one netCDF file that arviz 0.23 and arviz 1.x both open;
:meth:`Result.load` reads it back, trained samplers included.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from helmholtz import _arviz
from helmholtz.errors import ResultFileError, RunError

__all__ = [
    "FreeEnergy", "Status", "Result", "compare", "RunError", "ResultFileError", "Fitted",
    "register_fitted", "fitted_class", "FittedParams", "FittedModule", "KINDS",
    "STATUS_CODES",
]

# What an estimate says about log Z (F = −log Z, in nats).
KINDS = ("exact", "unbiased-Z estimate", "estimate", "lower bound", "upper bound", "none")

# Why a run ended: "ok" or what went wrong.
STATUS_CODES = (
    "ok",           # finished as configured and nothing looks wrong
    "max_steps",    # a phase hit its step limit before its stopping condition
    "not_converged",  # the stopping condition was not met (e.g. β never reached 1)
    "nan",          # the objective, a weight or a state became NaN / inf
    "diverged",     # too many divergent transitions or an exploding loss
    "low_ess",      # too few effective samples for the estimates to mean much
    "unreliable",   # ran through, but an error bar cannot be trusted
    "interrupted",  # stopped by the user (KeyboardInterrupt) or a time limit
    "error",        # anything else the engine caught and reports
)

_FORMAT = 2  # version of the file layout written by Result.save


class LazyArrays(Mapping):
    """A name → array mapping computed on first access (e.g. pointwise log likelihoods,
    which cost a pass over every draw and chains × draws × observations of memory, and
    which only arviz's loo/waic need)."""

    def __init__(self, fn, keys):
        self._fn, self._keys, self._data = fn, tuple(keys), None

    def _load(self):
        if self._data is None:
            self._data, self._fn = self._fn(), None
        return self._data

    def __getitem__(self, key):
        return self._load()[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


# ---------------------------------------------------------------------------- FreeEnergy
def _number(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}".replace("-", "−")


def _decimals(se: float) -> int:
    """Decimals that show two significant digits of the standard error."""
    if not (math.isfinite(se) and se > 0):
        return 4
    return int(min(max(1 - math.floor(math.log10(se)), 0), 10))


@dataclass(frozen=True)
class FreeEnergy:
    """A free-energy estimate F = −log Z with its standard error, kind and units.

    Parameters
    ----------
    value, se
        The estimate of F and its standard error (NaN where unknown).
    kind
        What the estimate is for log Z: ``"lower bound"`` (an ELBO: log Z ≥ −F, so F is an
        upper bound on the true F), ``"upper bound"`` (e.g. an EUBO or reverse AIS),
        ``"unbiased-Z estimate"`` (AIS and SMC: E[Ẑ] = Z, so log Ẑ is biased low by about
        var/2 and F high), ``"estimate"`` (consistent but neither unbiased in Z nor a
        bound, e.g. Bennett's acceptance ratio), ``"exact"``, or ``"none"`` for an engine
        that does not estimate it (``value`` is then NaN and ``note`` says why).
    note
        Free text: how it was computed, or why there is none.
    units
        ``"nats"`` for F = −log Z; an energy unit (``"Hartree"``, ``"kJ/mol"``, ``"kT"``)
        for F = −kT log Z or a variational energy.
    warning
        Non-empty when the error bar cannot be trusted, saying why (e.g. ``"Kish ESS 3.2
        < 30"``).

    Examples
    --------
    >>> print(FreeEnergy(39.1234, 0.02, "lower bound"))
    F = 39.123 ± 0.020 nats (upper bound on F; −F = −39.123 is a lower bound on log Z)
    """

    value: float
    se: float
    kind: str
    note: str = ""
    units: str = "nats"
    warning: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"FreeEnergy kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.units, str) or not self.units:
            raise ValueError(f"FreeEnergy units must be a non-empty string, got {self.units!r}")
        if not isinstance(self.warning, str):
            raise ValueError(f"FreeEnergy warning must be a string, got {self.warning!r}")

    @classmethod
    def none(cls, note: str) -> FreeEnergy:
        """No estimate (``kind="none"``, NaN value), with ``note`` saying why."""
        return cls(math.nan, math.nan, "none", note)

    @property
    def reliable(self) -> bool:
        """False when the estimate carries a warning (its error bar cannot be trusted)."""
        return not self.warning

    @property
    def log_z(self) -> float:
        """−F, the estimate of log Z (defined for nats only)."""
        if self.units != "nats":
            raise ValueError(f"log_z is defined for a free energy in nats; this one is in "
                             f"{self.units} (F = −kT log Z needs kT to convert)")
        return -self.value

    def describe(self) -> str:
        """What the number is, in words: which quantity a bound bounds, and from which side."""
        nats = self.units == "nats"
        d = _decimals(self.se)
        if self.kind == "lower bound":
            return ("upper bound on F" + (f"; −F = {_number(-self.value, d)} is a lower bound "
                                          "on log Z" if nats else ""))
        if self.kind == "upper bound":
            return ("lower bound on F" + (f"; −F = {_number(-self.value, d)} is an upper "
                                          "bound on log Z" if nats else ""))
        if self.kind == "unbiased-Z estimate":
            return ("e^−F is an unbiased estimate of Z; F is biased high" if nats
                    else "from an unbiased estimate of Z; biased high")
        if self.kind == "exact":
            return "exact"
        return "estimate of F = −log Z" if nats else "estimate"

    def __str__(self):
        if self.kind == "none":
            text = f"F: not estimated ({self.note})" if self.note else "F: not estimated"
        else:
            d = _decimals(self.se)
            se = f" ± {_number(self.se, d)}" if math.isfinite(self.se) else " ± ?"
            text = f"F = {_number(self.value, d)}{se} {self.units} ({self.describe()})"
        if self.warning:
            text += f" [UNRELIABLE: {self.warning}]"
        return text


# ---------------------------------------------------------------------------- Status
@dataclass(frozen=True)
class Status:
    """How a run ended: a ``code`` from :data:`STATUS_CODES` and a readable ``message``.

    ``Status()`` (or :meth:`ok_`) is a clean run. :meth:`raise_for_status` turns any
    other code into a :class:`RunError` (diffrax's ``throw`` switch).
    """

    code: str = "ok"
    message: str = ""

    def __post_init__(self):
        if self.code not in STATUS_CODES:
            raise ValueError(f"Status code must be one of {STATUS_CODES}, got {self.code!r}")

    @classmethod
    def ok_(cls) -> Status:
        """A clean run."""
        return cls()

    @property
    def ok(self) -> bool:
        """True for a clean run (code ``"ok"``)."""
        return self.code == "ok"

    def raise_for_status(self) -> Status:
        """Raise :class:`RunError` unless the code is ``"ok"``; return ``self`` otherwise."""
        if not self.ok:
            raise RunError(f"run ended with status {self}", self)
        return self

    def __str__(self):
        return f"{self.code}: {self.message}" if self.message else self.code


# ---------------------------------------------------------------------------- fitted
@runtime_checkable
class Fitted(Protocol):
    """What an engine learned, as an object that can draw again and be saved.

    A fitted class has a class attribute ``kind`` (its name in the registry, see
    :func:`register_fitted`) and these methods:

    ``sample(rng_key, num) -> dict[str, array]``
        ``num`` draws per site, leading axis ``num``.
    ``to_saved() -> (meta, arrays)``
        ``meta``: a JSON-able dict; ``arrays``: name → ``numpy`` array of any shape (names
        are letters, digits, ``_``, ``.`` and ``-``).
    ``from_saved(meta, arrays, target=None)`` (classmethod)
        The inverse of ``to_saved``; ``target`` is the :class:`helmholtz.Target` given to
        :meth:`Result.load`, for samplers that need the model to draw.
    """

    kind: ClassVar[str]

    def sample(self, rng_key, num: int) -> dict: ...

    def to_saved(self) -> tuple[dict, dict[str, np.ndarray]]: ...

    @classmethod
    def from_saved(cls, meta: dict, arrays: dict[str, np.ndarray], target=None): ...


_FITTED: dict[str, type] = {}


def register_fitted(cls: type) -> type:
    """Class decorator: make ``cls`` (a :class:`Fitted`) loadable by its ``kind``.

    Raises
    ------
    ValueError
        ``cls`` has no string ``kind``, lacks a protocol method, or its ``kind`` is taken
        by another class.
    """
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"fitted class {cls.__qualname__} needs a class attribute kind: str")
    missing = [m for m in ("sample", "to_saved", "from_saved") if not callable(
        getattr(cls, m, None))]
    if missing:
        raise ValueError(f"fitted class {cls.__qualname__} lacks {', '.join(missing)}")
    old = _FITTED.get(kind)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__,
                                                                  cls.__qualname__):
        raise ValueError(f"fitted kind {kind!r} is already registered by "
                         f"{old.__module__}.{old.__qualname__}")
    _FITTED[kind] = cls
    return cls


def fitted_class(kind: str) -> type:
    """The fitted class registered under ``kind`` (:class:`KeyError`-free: a clear error)."""
    try:
        return _FITTED[kind]
    except KeyError:
        raise ResultFileError(
            f"unknown fitted kind {kind!r}: no class registered for it (known: "
            f"{', '.join(sorted(_FITTED)) or 'none'}); import the module that defines it "
            f"(decorated with helmholtz.result.register_fitted) before loading"
        ) from None


def _resolve(ref: str):
    """The object named ``"package.module:Qual.name"``."""
    module, _, qualname = ref.partition(":")
    if not module or not qualname:
        raise ValueError(f"expected a reference 'module:qualname', got {ref!r}")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@register_fitted
@dataclass(frozen=True, eq=False)
class FittedParams:
    """Point estimates θ (e.g. from EM or MAP): a dict of arrays.

    ``sample(rng_key, num)`` returns θ repeated ``num`` times (a point mass), so that a
    fitted θ fits wherever a sampler does.
    """

    kind: ClassVar[str] = "params"
    params: dict[str, Any]

    def sample(self, rng_key, num: int) -> dict[str, np.ndarray]:
        """θ repeated ``num`` times along a new leading axis (``rng_key`` is unused)."""
        del rng_key
        return {k: np.broadcast_to(np.asarray(v), (num, *np.shape(v))).copy()
                for k, v in self.params.items()}

    def to_saved(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``({"names": [...]}, θ as numpy arrays)``."""
        return {"names": list(self.params)}, {k: np.asarray(v) for k, v in self.params.items()}

    @classmethod
    def from_saved(cls, meta: dict, arrays: dict[str, np.ndarray], target=None) -> FittedParams:
        """θ back from :meth:`to_saved`'s output, in the saved order (``target`` unused)."""
        del target
        return cls({k: arrays[k] for k in meta["names"]})


@register_fitted
@dataclass(frozen=True, eq=False)
class FittedModule:
    """An equinox module (a guide, a network, a trained sampler) that can be saved.

    Saved as its array leaves (``equinox.tree_serialise_leaves``, as bytes) plus the
    reference ``factory`` (``"package.module:qualname"``) and JSON-able ``kwargs`` that
    rebuild a module of the same structure; loading calls the factory (shapes only, via
    ``equinox.filter_eval_shape``; a ``key`` argument is supplied when the factory takes
    one and ``kwargs`` has none) and then reads the leaves into it.

    Parameters
    ----------
    module
        The equinox module.
    factory, kwargs
        ``factory(**kwargs)`` builds a module of the same structure.
    sample_fn
        Optional reference ``"package.module:qualname"`` to ``fn(module, rng_key, num)``
        returning draws; without it :meth:`sample` calls ``module.sample(rng_key, num)``.
    target
        The Target the module samples for (not saved; :meth:`Result.load` passes it in).
    """

    kind: ClassVar[str] = "module"
    module: Any
    factory: str
    kwargs: dict = field(default_factory=dict)
    sample_fn: str | None = None
    target: Any = None

    def sample(self, rng_key, num: int) -> dict:
        """``num`` draws from the module (see ``sample_fn``)."""
        if self.sample_fn is not None:
            return _resolve(self.sample_fn)(self.module, rng_key, num)
        if callable(getattr(self.module, "sample", None)):
            return self.module.sample(rng_key, num)
        raise TypeError(f"{type(self.module).__name__} has no sample method and no "
                        f"sample_fn was given: this fitted module cannot draw")

    def to_saved(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``({"factory", "kwargs", "sample_fn"}, {"leaves": uint8 bytes of the leaves})``."""
        import equinox as eqx

        meta = {"factory": self.factory, "kwargs": self.kwargs, "sample_fn": self.sample_fn}
        try:
            json.dumps(meta)
        except TypeError as e:
            raise ValueError(f"FittedModule kwargs must be JSON-able to be saved: {e}") from e
        buffer = io.BytesIO()
        eqx.tree_serialise_leaves(buffer, self.module)
        return meta, {"leaves": np.frombuffer(buffer.getvalue(), dtype=np.uint8).copy()}

    @classmethod
    def from_saved(cls, meta: dict, arrays: dict[str, np.ndarray], target=None) -> FittedModule:
        """Rebuild the module with its factory and read the saved leaves into it."""
        import equinox as eqx
        import jax

        factory = _resolve(meta["factory"])
        kwargs = dict(meta["kwargs"])
        try:
            takes_key = "key" in inspect.signature(factory).parameters
        except (TypeError, ValueError):
            takes_key = False
        if takes_key and "key" not in kwargs:
            kwargs["key"] = jax.random.PRNGKey(0)  # overwritten by the saved leaves
        like = eqx.filter_eval_shape(factory, **kwargs)
        module = eqx.tree_deserialise_leaves(io.BytesIO(arrays["leaves"].tobytes()), like)
        return cls(module, meta["factory"], dict(meta["kwargs"]), meta.get("sample_fn"),
                   target)


# ---------------------------------------------------------------------------- Result
@dataclass
class Result:
    """What every engine returns.

    Attributes
    ----------
    engine, model
        Names of the engine and the model.
    samples
        Constrained site values, each with leading ``(chain, draw)`` axes. Particles of
        a population engine count as draws of one chain. May be empty (``{}``) for an
        engine that only fits parameters; ``num_chains`` and ``num_draws`` are then 0.
    free_energy
        The headline :class:`FreeEnergy` (F = −log Z with standard error, kind, units).
    log_weights
        ``(chain, draw)`` log importance weights for weighted engines, else ``None``.
    trace
        Objective per iteration, entries of any shape (``{"loss": (num_steps,)}``, a
        ``(replicate, step)`` array, one value per temperature, ...).
    stats
        Per-draw statistics, ``(chain, draw)``: ``diverging``, ``lp``,
        ``acceptance_rate``, ``step_size``, ``n_steps`` (gradient evaluations), ...
    log_likelihood, observed_data
        Pointwise log likelihood ``(chain, draw, *obs_shape)`` and data per observed site.
        Engines fill ``log_likelihood`` lazily (:class:`LazyArrays`): it is computed on
        first access.
    compile_seconds, run_seconds
        Time spent compiling (0 when every function came from the cache) and running.
    exact_log_z
        log Z where the model knows it.
    config
        The engine's options (JSON-able after :func:`_jsonable`).
    estimates
        Named estimates side by side (``"elbo"``, ``"is"``, ``"eubo"``, ``"ti"``, an
        energy in Hartree, ...), each a :class:`FreeEnergy` with its own kind and units.
    fitted
        What the engine learned (θ, a guide, a trained sampler, a network), ideally a
        :class:`Fitted` so that it is saved and loaded with the result.
    status
        How the run ended (:class:`Status`); see also :attr:`effective_status`.
    """

    engine: str
    model: str
    samples: dict[str, np.ndarray]
    free_energy: FreeEnergy
    log_weights: np.ndarray | None = None
    trace: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    log_likelihood: Mapping[str, np.ndarray] = field(default_factory=dict)
    observed_data: dict[str, np.ndarray] = field(default_factory=dict)
    compile_seconds: float = 0.0
    run_seconds: float = 0.0
    exact_log_z: float | None = None
    config: dict = field(default_factory=dict)
    estimates: dict[str, FreeEnergy] = field(default_factory=dict)
    fitted: Any = None
    status: Status = Status()

    def __post_init__(self):
        for name, est in self.estimates.items():
            if not isinstance(est, FreeEnergy):
                raise TypeError(f"estimates[{name!r}] must be a FreeEnergy, got "
                                f"{type(est).__name__}")
        if not isinstance(self.status, Status):
            raise TypeError(f"status must be a Status, got {type(self.status).__name__}")

    # ------------------------------------------------------------------ facts
    @property
    def log_z(self) -> float:
        """−F of the headline free energy (nats only)."""
        return self.free_energy.log_z

    @property
    def num_chains(self) -> int:
        """Number of chains (0 for a result without samples)."""
        return int(next(iter(self.samples.values())).shape[0]) if self.samples else 0

    @property
    def num_draws(self) -> int:
        """Draws per chain (0 for a result without samples)."""
        return int(next(iter(self.samples.values())).shape[1]) if self.samples else 0

    @property
    def num_grad_evals(self) -> int:
        """Gradient evaluations spent, sampling and warmup (or optimisation) together."""
        return int(self.config.get("_num_grad_evals", 0))

    @property
    def num_divergent(self) -> int:
        d = self.stats.get("diverging")
        return 0 if d is None else int(np.sum(d))

    @property
    def warnings(self) -> tuple[str, ...]:
        """Everything that says a number should not be trusted, one line each: the status
        (when not ok), then the warnings of the headline and of the named estimates."""
        out = [] if self.status.ok else [f"status {self.status}"]
        if self.free_energy.warning:
            out.append(f"F: {self.free_energy.warning}")
        out += [f"{name}: {est.warning}" for name, est in self.estimates.items() if est.warning]
        return tuple(out)

    @property
    def effective_status(self) -> Status:
        """``status``, or ``Status("unreliable", ...)`` where the run ended ok but the
        headline free energy carries a warning."""
        if self.status.ok and self.free_energy.warning:
            return Status("unreliable", f"F: {self.free_energy.warning}")
        return self.status

    def raise_for_status(self, *, require_reliable: bool = False) -> Result:
        """Raise :class:`RunError` unless the run ended ok; with ``require_reliable``
        also when the headline free energy carries a warning. Returns ``self``."""
        (self.effective_status if require_reliable else self.status).raise_for_status()
        return self

    def __repr__(self):
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in self.samples.items())
        status = "" if self.status.ok else f", status={str(self.status)!r}"
        return (f"Result(engine={self.engine!r}, model={self.model!r}, samples=[{shapes}], "
                f"{self.free_energy}{status})")

    def __str__(self):
        lines = [f"{self.engine} on {self.model}: {self.num_chains} chain(s) × "
                 f"{self.num_draws} draws", f"  free energy: {self.free_energy}"]
        lines += [f"  {name}: {est}" for name, est in self.estimates.items()]
        if self.fitted is not None:
            lines.append(f"  fitted: {getattr(self.fitted, 'kind', type(self.fitted).__name__)}")
        lines.append(f"  status: {self.status}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ arviz
    def to_arviz(self):
        """The installed arviz's container (0.23: ``InferenceData``; 1.x:
        ``xarray.DataTree``) with posterior, sample_stats, log_likelihood and
        observed_data groups, each where there is something to put in it (a result
        without samples has no posterior group)."""
        stats = {k: np.asarray(v) for k, v in self.stats.items()}
        if self.log_weights is not None:
            stats["log_weight"] = np.asarray(self.log_weights)
        groups = {
            "posterior": self.samples,
            "sample_stats": stats,
            "log_likelihood": {k: np.asarray(v) for k, v in self.log_likelihood.items()},
            "observed_data": self.observed_data,
        }
        attrs = {"engine": self.engine, "model": self.model, "inference_library": "helmholtz"}
        return _arviz.from_dict(groups, attrs)

    def summary(self, **kwargs):
        """arviz's summary table of the posterior (columns differ between arviz 0.23 and
        1.x, see :func:`helmholtz._arviz.summary`)."""
        return _arviz.summary(self.to_arviz(), **kwargs)

    def diagnostics(self) -> dict:
        """min bulk ESS and max R-hat over every scalar of every site (arviz).

        For importance-weighted results the ESS is Kish's (Σw)²/Σw² of the weights
        (arviz's ESS of the unweighted particles would ignore the weights). Both are NaN
        for a result without samples; R-hat is NaN for one chain.
        """
        if self.log_weights is not None:
            lw = np.asarray(self.log_weights, np.float64).ravel()
            w = np.exp(lw - lw.max())
            return {"min_ess": float(w.sum() ** 2 / (w**2).sum()), "max_rhat": math.nan}
        if not self.samples or self.num_draws == 0:
            return {"min_ess": math.nan, "max_rhat": math.nan}
        data = _arviz.from_dict({"posterior": self.samples})
        ess = _arviz.ess(data)
        min_ess = min(float(np.nanmin(ess[v].values)) for v in ess.data_vars)
        max_rhat = math.nan
        if self.num_chains > 1:
            rhat = _arviz.rhat(data)
            max_rhat = max(float(np.nanmax(rhat[v].values)) for v in rhat.data_vars)
        return {"min_ess": min_ess, "max_rhat": max_rhat}

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> Path:
        """Write the result to one netCDF file that arviz 0.23 and 1.x both open.

        Layout: the arviz groups of :meth:`to_arviz`; ``objective`` holding the trace
        (each entry with dims of its own, ``<name>_dim_<i>``); ``fitted`` holding the
        fitted object's arrays, with its kind and meta in the group's attributes; and the
        root attribute ``helmholtz`` (JSON: engine, model, free energy, estimates,
        status, timings, configuration). A fitted object that is not a registered
        :class:`Fitted` is left out, with a warning.

        In a run over several processes (:mod:`helmholtz.distributed`) every process
        holds the same Result and only process 0 writes; the others return the path.
        """
        import warnings

        import jax
        import xarray as xr

        path = Path(path)
        if jax.process_count() > 1 and jax.process_index() != 0:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_arviz()
        nodes = {name: _arviz.get_dataset(data, name) for name in _arviz.group_names(data)}
        if self.trace:
            nodes["objective"] = _dataset_any_shape(self.trace, "trace")
        fitted_kind = _fitted_node(self.fitted, nodes)
        meta = {
            "format": _FORMAT,
            "engine": self.engine,
            "model": self.model,
            "free_energy": asdict(self.free_energy),
            "estimates": {k: asdict(v) for k, v in self.estimates.items()},
            "status": asdict(self.status),
            "compile_seconds": self.compile_seconds,
            "run_seconds": self.run_seconds,
            "exact_log_z": self.exact_log_z,
            "config": _jsonable(self.config),
            "has_log_weights": self.log_weights is not None,
            "fitted_kind": fitted_kind,
        }
        root = xr.Dataset(attrs={"helmholtz": json.dumps(meta),
                                 "inference_library": "helmholtz"})
        tree = xr.DataTree.from_dict({"/": root, **nodes})
        if path.exists():
            path.unlink()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree.to_netcdf(str(path))
        return path

    @classmethod
    def load(cls, path: str | Path, target=None) -> Result:
        """Read a result written by :meth:`save` (under either arviz stack).

        Parameters
        ----------
        path
            The ``.nc`` file.
        target
            Passed to the fitted class's ``from_saved``, so that a loaded trained sampler
            can draw again.

        Raises
        ------
        FileNotFoundError
            No file at ``path``.
        ResultFileError
            ``"not a helmholtz result file: <path>"`` (another file, or a netCDF /
            InferenceData without helmholtz's attributes) or ``"corrupt helmholtz result
            file: <path> (<reason>)"``; also an unknown fitted kind.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no such helmholtz result file: {path}")
        groups, meta, fitted_attrs = _read_file(path)
        try:
            stats = dict(groups.get("sample_stats", {}))
            log_weights = stats.pop("log_weight", None) if meta["has_log_weights"] else None
            fitted = None
            if meta.get("fitted_kind"):
                fitted_type = fitted_class(fitted_attrs["kind"])
                fitted = fitted_type.from_saved(json.loads(fitted_attrs["meta"]),
                                                groups.get("fitted", {}), target=target)
            return cls(
                engine=meta["engine"],
                model=meta["model"],
                samples=groups.get("posterior", {}),
                free_energy=FreeEnergy(**meta["free_energy"]),
                log_weights=log_weights,
                trace=groups.get("objective", {}),
                stats=stats,
                log_likelihood=groups.get("log_likelihood", {}),
                observed_data=groups.get("observed_data", {}),
                compile_seconds=meta["compile_seconds"],
                run_seconds=meta["run_seconds"],
                exact_log_z=meta["exact_log_z"],
                config=meta["config"],
                estimates={k: FreeEnergy(**v) for k, v in meta.get("estimates", {}).items()},
                fitted=fitted,
                status=Status(**meta.get("status", {})),
            )
        except ResultFileError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise ResultFileError(f"corrupt helmholtz result file: {path} "
                                  f"({type(e).__name__}: {e})") from e


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def _fitted_node(fitted, nodes: dict) -> str | None:
    """Add the ``fitted`` group for a registered :class:`Fitted` object to ``nodes`` and
    return its kind; warn and return None for any other object (it is not saved)."""
    import warnings

    if fitted is None:
        return None
    kind = getattr(type(fitted), "kind", None)
    if not (isinstance(kind, str) and _FITTED.get(kind) is type(fitted)):
        warnings.warn(f"Result.save: the fitted {type(fitted).__name__} is not a registered "
                      "helmholtz Fitted class; saved without it", stacklevel=3)
        return None
    meta, arrays = fitted.to_saved()
    ds = _dataset_any_shape(arrays, "fitted array")
    ds.attrs = {"kind": kind, "meta": json.dumps(_jsonable(meta))}
    nodes["fitted"] = ds
    return kind


def _dataset_any_shape(arrays: Mapping[str, Any], what: str):
    """An ``xarray.Dataset`` of arrays of any shapes: each with dims of its own."""
    import xarray as xr

    variables = {}
    for name, value in arrays.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"{what} name {name!r} cannot be saved: use letters, digits, "
                             "'_', '.' and '-'")
        value = np.asarray(value)
        variables[name] = ([f"{name}_dim_{i}" for i in range(value.ndim)], value)
    return xr.Dataset(variables)


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _read_file(path: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict, dict]:
    """Every group of the file as numpy arrays, helmholtz's metadata and the fitted
    group's attributes; one clear :class:`ResultFileError` for anything else."""
    import xarray as xr

    with open(path, "rb") as f:
        head = f.read(8)
    if head != _HDF5_MAGIC and head[:3] != b"CDF":
        raise ResultFileError(f"not a helmholtz result file: {path}")
    try:
        tree = xr.open_datatree(str(path))
    except Exception as e:  # noqa: BLE001 — netCDF4/h5py raise many kinds
        raise ResultFileError(f"corrupt helmholtz result file: {path} "
                              f"(cannot be read as netCDF: {_short(e)})") from e
    try:
        raw = tree.attrs.get("helmholtz")
        if raw is None and "posterior" in tree.children:  # files of format 1
            raw = tree["posterior"].attrs.get("helmholtz")
        if raw is None:
            raise ResultFileError(f"not a helmholtz result file: {path}")
        try:
            meta = json.loads(raw)
        except (TypeError, ValueError) as e:
            raise ResultFileError(f"corrupt helmholtz result file: {path} "
                                  f"(unreadable metadata: {_short(e)})") from e
        groups, fitted_attrs = {}, {}
        try:
            for name, node in tree.children.items():
                ds = node.to_dataset()
                groups[name] = {str(k): np.asarray(ds[k].values) for k in ds.data_vars}
                if name == "fitted":
                    fitted_attrs = dict(ds.attrs)
        except Exception as e:  # noqa: BLE001 — a damaged group fails in HDF5
            raise ResultFileError(f"corrupt helmholtz result file: {path} "
                                  f"(cannot read group {name!r}: {_short(e)})") from e
    finally:
        tree.close()
    if not isinstance(meta, dict):
        raise ResultFileError(f"corrupt helmholtz result file: {path} (metadata not a dict)")
    return groups, meta, fitted_attrs


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:120]


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool | int | float | str) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    return repr(obj)


BOUND_TOLERANCE = 3.0
"""Standard errors (of the difference) by which an estimate must cross another engine's
bound before :func:`bound_conflicts` calls it a contradiction."""


def bound_conflicts(results) -> dict[int, str]:
    """Which free-energy estimates contradict another result's bound, by index.

    A lower bound on log Z (an ELBO, kind ``"lower bound"``: F_b ≥ F) is contradicted by
    an estimate with F > F_b, and an upper bound on log Z (reverse AIS: F_b ≤ F) by one
    with F < F_b, each by more than :data:`BOUND_TOLERANCE` standard errors of the
    difference. The bound holds in expectation whatever the bounding engine's quality,
    so it is the estimate that is flagged (typically an AIS or SMC run that missed mass
    and so reports log Ẑ too low). Only results in the same units are compared.
    """
    out: dict[int, list[str]] = {}
    for i, est in enumerate(results):
        fe = est.free_energy
        if fe.kind in ("none", "lower bound", "upper bound") or not math.isfinite(fe.value):
            continue
        for bound in results:
            b = bound.free_energy
            if b.units != fe.units or not math.isfinite(b.value):
                continue
            se = math.sqrt(np.nan_to_num(fe.se) ** 2 + np.nan_to_num(b.se) ** 2)
            if b.kind == "lower bound" and fe.value > b.value + BOUND_TOLERANCE * se:
                side = "above the upper bound on F"
            elif b.kind == "upper bound" and fe.value < b.value - BOUND_TOLERANCE * se:
                side = "below the lower bound on F"
            else:
                continue
            out.setdefault(i, []).append(
                f"F = {fe.value:.4g} lies {abs(fe.value - b.value):.3g} {fe.units} {side} "
                f"from {bound.engine} ({b.value:.4g} ± {b.se:.2g})")
    return {i: "; ".join(msgs) for i, msgs in out.items()}


def compare(results, *, print_table: bool = True):
    """Put several Results side by side: free energy ± se, its kind and units, error
    against the exact value where known, the status and every warning (including an
    estimate that crosses another result's bound, :func:`bound_conflicts`), the named
    estimates (a column ``<name>`` and ``<name>_se`` each), min ESS, max R-hat,
    divergences, gradient evaluations and seconds.

    Returns a ``pandas.DataFrame`` (one row per result) and prints it unless
    ``print_table=False``.
    """
    import pandas as pd

    rows = []
    conflicts = bound_conflicts(results)
    for i, r in enumerate(results):
        diag = r.diagnostics()
        fe = r.free_energy
        row = {"engine": r.engine, "F": fe.value, "se": fe.se, "kind": fe.kind,
               "units": fe.units}
        if r.exact_log_z is not None:
            row["F_exact"] = -r.exact_log_z + 0.0  # no "-0" for log Z = 0
            row["|ΔF|"] = abs(fe.value + r.exact_log_z) if fe.kind != "none" else math.nan
        row.update({
            "min_ess": diag["min_ess"],
            "max_rhat": diag["max_rhat"],
            "divergences": r.num_divergent,
            "grad_evals": r.num_grad_evals,
            "compile_s": r.compile_seconds,
            "run_s": r.run_seconds,
            "status": r.effective_status.code,
            "warnings": "; ".join(r.warnings),
        })
        if i in conflicts:  # a bound of another engine says this estimate is wrong
            row["warnings"] = "; ".join(filter(None, [row["warnings"], conflicts[i]]))
            if row["status"] == "ok":
                row["status"] = "unreliable"
        for name, est in r.estimates.items():
            row[name] = est.value
            row[f"{name}_se"] = est.se
        rows.append(row)
    df = pd.DataFrame(rows).set_index("engine")
    if print_table:
        with pd.option_context("display.width", 160, "display.max_columns", 30,
                               "display.max_colwidth", 60,
                               "display.float_format", "{:.4g}".format):
            print(df)
    return df
