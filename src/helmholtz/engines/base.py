"""The engine protocol, the phases an engine runs, and the registry of engine names.

An engine is a frozen configuration whose algorithm is written as pure functions over
pytree state, in blackjax's shape:

* ``init(rng_key, target, position=None) -> State`` — one chain (per-chain engines,
  started at ``position``) or the whole population (population engines);
* ``step(rng_key, target, state, x) -> (State, Info)`` — one step;
* ``phases(target) -> tuple[Phase, ...]`` — what the driver runs in order (warmup then
  sampling; temperatures until β = 1; training then drawing);
* ``result(rng_key, target, state, infos, run) -> Result`` — the one Result, built once.

The driver (:mod:`helmholtz.driver`) alone jits, scans, vmaps over chains, shards,
shows progress and checkpoints. Engines are JAX pytrees: array-valued options (the
weights of an equinox network, say) are leaves and the rest is static, so the compile
cache keys on the static part, as ``equinox.filter_jit`` does, and an engine that holds a
network compiles once.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import jax

from helmholtz.errors import EngineError, OptionError

__all__ = ["Engine", "Phase", "register", "get_engine", "engine_names", "ENGINES",
           "with_options"]

ENGINES: dict[str, type[Engine]] = {}


@dataclass(frozen=True)
class Phase:
    """One stage of an engine's run, which the driver scans.

    Parameters
    ----------
    name
        Shown on the progress bar; the key of this phase's info in ``infos``.
    step
        ``step(engine, rng_key, target, state, x) -> (state, info)`` — an engine method
        taken from the class (``type(self).step``), so that inside the compiled function
        it runs on the traced engine, whose array options are inputs, not constants.
    num_steps
        Steps to run (the most, for an open-ended phase).
    inputs
        Per-step inputs ``x`` with a leading axis of ``num_steps``, or a function of the
        infos of the earlier phases returning them; ``None`` gives the step index.
    per_chain
        The state has a leading chain axis and ``step`` works on one chain (the driver
        vmaps it); otherwise ``step`` works on the whole population.
    collect
        ``collect(engine, info) -> info``: what of each step's info to keep (applied
        inside the compiled function). ``None`` keeps everything.
    finish
        ``finish(engine, state) -> state`` applied (per chain) once the phase is done,
        e.g. to freeze a tuned step size.
    until
        ``until(engine, state) -> bool``: for an open-ended phase (adaptive SMC, fixed-
        point iterations), stop as soon as it holds (per chain; the phase ends when it
        holds for every chain). Such a phase keeps no per-step info: what it records
        lives in its state.
    postfix
        ``postfix(engine, state, info) -> {name: scalar}`` shown on the progress bar
        after each chunk (a loss, β, an acceptance rate). ``info`` is the last chunk's
        (``None`` for an open-ended phase).
    keep
        Names of the info entries to keep once a chunk has run (``None``: all). Phases
        that step alike (the same ``step``, ``per_chain``, ``collect``, ``until``) share
        one compiled program, so a phase that needs less of the info drops it here
        rather than collecting less.
    """

    name: str
    step: Callable
    num_steps: int
    inputs: Any = None
    per_chain: bool = False
    collect: Callable | None = None
    finish: Callable | None = None
    until: Callable | None = None
    postfix: Callable | None = None
    keep: tuple[str, ...] | None = None


def _flatten_engine(engine):
    names = tuple(f.name for f in dataclasses.fields(engine))
    return tuple(getattr(engine, n) for n in names), names


def _unflatten_engine(cls, names, values):
    # no validation here: JAX rebuilds engines with tracers or placeholders as leaves
    engine = object.__new__(cls)
    for n, v in zip(names, values, strict=True):
        object.__setattr__(engine, n, v)
    return engine


@dataclass(frozen=True)
class Engine:
    """A frozen engine configuration (options are typed fields with defaults).

    Subclasses implement :meth:`init`, :meth:`phases` and :meth:`result` (and the step
    functions their phases name); :meth:`run` hands them to the driver. Class
    attributes: ``name`` (the registry key), ``description``, ``population`` (True when
    the state's leading axis is a particle population rather than chains),
    ``approximate`` (a sentence stating the accuracy bound of an engine whose draws are
    not exact in the limit, e.g. variational families; empty for exact engines), and
    ``aliases`` (old option names, ``{old: new}``, still accepted with a
    DeprecationWarning).
    """

    name: ClassVar[str] = "engine"
    description: ClassVar[str] = ""
    population: ClassVar[bool] = False
    approximate: ClassVar[str] = ""
    aliases: ClassVar[dict[str, str]] = {}
    fits_params: ClassVar[bool] = False  # runs on models with no continuous latent (em)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node(
            cls, _flatten_engine, lambda names, values, c=cls: _unflatten_engine(c, names,
                                                                                 values))

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise :class:`OptionError` for an invalid option value."""

    def replace(self, **options) -> Engine:
        return with_options(self, options)

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def translate_options(cls, options: dict) -> dict:
        """Map deprecated option names to current ones (with a DeprecationWarning)."""
        out = dict(options)
        for old, new in cls.aliases.items():
            if old in out:
                warnings.warn(f"{cls.name}: option {old!r} is now called {new!r}",
                              DeprecationWarning, stacklevel=4)
                if new in out:
                    raise OptionError(f"{cls.name}: give {new!r} or its old name {old!r}, "
                                      "not both")
                out[new] = out.pop(old)
        return out

    def options(self) -> dict:
        """The options as a dict (what a Result records as its configuration)."""
        return {f: getattr(self, f) for f in self.option_names()}

    # ------------------------------------------------------------------ the protocol
    def init(self, rng_key, target, position=None):
        raise NotImplementedError

    def phases(self, target) -> tuple[Phase, ...]:
        raise NotImplementedError

    def start(self, rng_key, target, run):
        """The state the first phase starts from (host-side set-up allowed, e.g. the
        search for valid initial points). Default: :meth:`init` over the population,
        compiled once."""
        return run.call(type(self).init, self, rng_key, target)

    def loop_engine(self) -> Engine:
        """The engine the phases' compiled loops see. Options that only change where a
        run starts (``init_values``, ...) are reset here, so that runs differing only in
        them share every compiled loop."""
        return self

    def result(self, rng_key, target, state, infos: dict, run):
        """The Result, built once from the final state and every phase's info; ``run``
        gives compiled calls (``run.call``) and the timings; ``rng_key`` serves final
        draws (a trained sampler's, say)."""
        raise NotImplementedError

    def run(self, target, rng_key, *, progress_bar: bool = False, checkpoint=None):
        """Run every phase through the driver and return the Result."""
        from helmholtz.driver import run_engine

        return run_engine(self, target, rng_key, progress_bar=progress_bar,
                          checkpoint=checkpoint)


def _positive_int(engine, *names, allow_zero=False):
    for n in names:
        v = getattr(engine, n)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (v == 0 and not allow_zero):
            lo = "≥ 0" if allow_zero else "≥ 1"
            raise OptionError(f"{engine.name}: option {n} must be an integer {lo}, got {v!r}")


def _positive_or_none(engine, *names):
    for n in names:
        v = getattr(engine, n)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v <= 0):
            raise OptionError(f"{engine.name}: {n} must be positive or None, got {v!r}")


def _in_range(engine, name, lo, hi):
    v = getattr(engine, name)
    if isinstance(v, bool) or not isinstance(v, int | float) or not (lo < v < hi):
        raise OptionError(f"{engine.name}: option {name} must lie in ({lo}, {hi}), got {v!r}")


def _positive_number(engine, *names, allow_zero=False):
    for n in names:
        v = getattr(engine, n)
        ok = (not isinstance(v, bool) and isinstance(v, int | float)
              and (v >= 0 if allow_zero else v > 0) and v < float("inf"))
        if not ok:
            lo = "≥ 0" if allow_zero else "positive"
            raise OptionError(f"{engine.name}: option {n} must be a finite number {lo}, "
                              f"got {v!r}")


def _boolean(engine, *names):
    for n in names:
        if not isinstance(getattr(engine, n), bool):
            raise OptionError(f"{engine.name}: option {n} must be True or False, "
                              f"got {getattr(engine, n)!r}")


def with_options(engine: Engine, options: dict) -> Engine:
    """``dataclasses.replace`` with an error that lists the valid options."""
    options = type(engine).translate_options(options)
    valid = engine.option_names()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise OptionError(
            f"engine '{engine.name}' has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(valid)}"
        )
    fields = {f.name: f for f in dataclasses.fields(engine)}
    coerced = {k: _coerce(engine.name, k, v, fields[k].type) for k, v in options.items()}
    return dataclasses.replace(engine, **coerced)


def _coerce(engine_name, key, value, annotation):
    """Turn CLI strings into the field's type (int, float, bool); leave other values alone."""
    if not isinstance(value, str):
        return value
    kind = str(annotation)
    if kind.endswith("| None"):
        if value.lower() == "none":
            return None
        kind = kind[: -len("| None")].strip()
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
    except ValueError:
        raise OptionError(
            f"engine '{engine_name}': option {key} expects {kind}, got {value!r}"
        ) from None
    return value


def register(cls: type[Engine]) -> type[Engine]:
    """Class decorator: make an engine available by its ``name``."""
    ENGINES[cls.name] = cls
    return cls


def engine_names() -> list[str]:
    return sorted(ENGINES)


def get_engine(engine, **options) -> Engine:
    """An engine object from a name or an engine (options applied on top)."""
    if isinstance(engine, Engine):
        return with_options(engine, options) if options else engine
    if isinstance(engine, type) and issubclass(engine, Engine):
        return with_options(engine(), options)
    if not isinstance(engine, str):
        raise EngineError(
            f"engine must be a name or an Engine object, got {type(engine).__name__}; "
            f"valid names: {', '.join(engine_names())}"
        )
    cls = ENGINES.get(engine.lower())
    if cls is None:
        raise EngineError(
            f"unknown engine {engine!r}; valid engines: {', '.join(engine_names())}"
        )
    return with_options(cls(), options)
