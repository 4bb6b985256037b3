"""The model-zoo registry: a name → :class:`ZooEntry` table shared by the CLI and benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ZooEntry", "register", "get", "names", "entries"]

Family = Literal["bayesian", "boltzmann"]


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo with the data that goes with it.

    Attributes
    ----------
    name
        Registry key, e.g. ``"eight_schools_centered"``.
    description
        One line for listings.
    family
        ``"bayesian"`` (a posterior given data) or ``"boltzmann"`` (p(x) ∝ exp(−U/kT)).
    model
        The numpyro model function; it knows nothing of engines.
    make_data
        ``seed -> (args, kwargs)``, the arguments the model is called with. The same seed
        always gives the same arrays.
    exact_log_z
        ``exact_log_z(*args, **kwargs) -> float``, the exact log normaliser for those
        arguments, or ``None`` where it is unknown.
    exact_posterior
        ``exact_posterior(*args, **kwargs) -> {site: (mean, cov)}``, exact posterior
        moments where they are known in closed form (Gaussian targets), else ``None``.
    """

    name: str
    description: str
    family: Family
    model: Callable
    make_data: Callable[[int], tuple[tuple, dict]]
    exact_log_z: Callable[..., float] | None = None
    exact_posterior: Callable[..., dict] | None = None

    def args(self, seed: int = 0) -> tuple[tuple, dict]:
        """Return the model's ``(args, kwargs)`` for ``seed``."""
        args, kwargs = self.make_data(seed)
        return tuple(args), dict(kwargs)

    def log_z(self, seed: int = 0) -> float | None:
        """Exact log Z for the data of ``seed``, or ``None`` where it is unknown."""
        if self.exact_log_z is None:
            return None
        args, kwargs = self.args(seed)
        return float(self.exact_log_z(*args, **kwargs))

    def target(self, seed: int = 0) -> Any:
        """Build a :class:`helmholtz.target.Target` for this model and the data of ``seed``."""
        from helmholtz.target import Target

        args, kwargs = self.args(seed)
        return Target.from_model(self.model, *args, **kwargs)


_REGISTRY: dict[str, ZooEntry] = {}


def register(entry: ZooEntry) -> ZooEntry:
    """Add ``entry`` to the zoo under ``entry.name``; a name may be registered once."""
    if not isinstance(entry, ZooEntry):
        raise TypeError(f"register: expected a ZooEntry, got {type(entry).__name__}")
    if entry.family not in ("bayesian", "boltzmann"):
        raise ValueError(
            f"register: family must be 'bayesian' or 'boltzmann', got {entry.family!r}"
        )
    if entry.name in _REGISTRY and _REGISTRY[entry.name] is not entry:
        raise ValueError(f"register: a model named {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def get(name: str) -> ZooEntry:
    """Return the entry registered as ``name``.

    Raises
    ------
    KeyError
        If no model has that name; the message lists every valid name.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(names())
        raise KeyError(f"unknown model {name!r}; valid models: {valid}") from None


def names() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_REGISTRY)


def entries() -> list[ZooEntry]:
    """All registered entries, sorted by name."""
    return [_REGISTRY[n] for n in names()]
