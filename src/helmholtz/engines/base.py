"""The engine protocol and the registry that maps names to engines."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from helmholtz.errors import EngineError, OptionError

__all__ = ["Engine", "register", "get_engine", "engine_names", "ENGINES"]

ENGINES: dict[str, type[Engine]] = {}


@dataclass(frozen=True)
class Engine:
    """A frozen engine configuration (options are typed fields with defaults).

    Subclasses provide ``run(target, rng_key, *, progress_bar, checkpoint) -> Result``,
    built from pure ``init``/``step`` functions that the shared driver scans, vmaps over
    chains and shards over devices. Being frozen and hashable, the configuration is part
    of the key under which compiled functions are cached.
    """

    name: ClassVar[str] = "engine"
    description: ClassVar[str] = ""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise :class:`OptionError` for an invalid option value."""

    def replace(self, **options) -> Engine:
        return with_options(self, options)

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def run(self, target, rng_key, *, progress_bar: bool = False, checkpoint=None):
        raise NotImplementedError


def _positive_int(engine, *names, allow_zero=False):
    for n in names:
        v = getattr(engine, n)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (v == 0 and not allow_zero):
            lo = "≥ 0" if allow_zero else "≥ 1"
            raise OptionError(f"{engine.name}: option {n} must be an integer {lo}, got {v!r}")


def _in_range(engine, name, lo, hi):
    v = getattr(engine, name)
    if not isinstance(v, int | float) or not (lo < v < hi):
        raise OptionError(f"{engine.name}: option {name} must lie in ({lo}, {hi}), got {v!r}")


def with_options(engine: Engine, options: dict) -> Engine:
    """``dataclasses.replace`` with an error that lists the valid options."""
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
