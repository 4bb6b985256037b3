"""Boltzmann targets p(x) ∝ exp(−U(x)/kT) written as ordinary numpyro models."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

__all__ = ["boltzmann"]


def _check_arguments(energy_fn, base, temperature) -> None:
    if not callable(energy_fn):
        raise TypeError(f"boltzmann: energy_fn must be callable, got {type(energy_fn).__name__}")
    if not isinstance(base, dist.Distribution):
        raise TypeError(
            "boltzmann: base must be a numpyro Distribution (a proper reference measure), "
            f"got {type(base).__name__}"
        )
    if not float(temperature) > 0:
        raise ValueError(f"boltzmann: temperature must be positive, got {temperature}")


def boltzmann(
    energy_fn: Callable,
    base: dist.Distribution,
    temperature: float = 1.0,
    *,
    name: str = "x",
    log_z: float | Callable | None = None,
) -> Callable:
    """Return a numpyro model whose joint density is exactly exp(−U(x)/kT).

    The model draws ``x`` from the proper ``base`` measure (the reference that annealing
    and diffusion engines start from) and adds the factor ``−U(x)/kT − log base(x)``.
    The prior/likelihood split that tempering uses is therefore base × (Boltzmann/base)^β:
    β = 0 is the base, β = 1 the Boltzmann distribution, and the model's normaliser is
    Z = ∫ exp(−U(x)/kT) dx, so the free energy in physical units is F = −kT log Z.

    Parameters
    ----------
    energy_fn
        U(x) for one configuration ``x`` of the base's event shape; returns a scalar.
    base
        A proper distribution over the configuration space (its support is the space the
        engines move in; use a bounded one to confine a particle to a box).
    temperature
        kT, in the units of ``energy_fn``.
    name
        Name of the sample site holding the configuration.
    log_z
        Exact log Z = log ∫ exp(−U/kT) dx, when known; engines report their error
        against it.

    Examples
    --------
    >>> import numpyro.distributions as dist
    >>> model = boltzmann(lambda x: 0.5 * (x**2).sum(), dist.Normal(0, 3).expand([2]).to_event(1))
    """
    _check_arguments(energy_fn, base, temperature)
    kT = float(temperature)

    def model():
        x = numpyro.sample(name, base)
        u = energy_fn(x)
        if jnp.ndim(u) != 0:
            raise ValueError(
                f"boltzmann: energy_fn must return a scalar, got shape {jnp.shape(u)}"
            )
        numpyro.factor("boltzmann", -u / kT - jnp.sum(base.log_prob(x)))

    model.__name__ = getattr(energy_fn, "__name__", "boltzmann")
    model.exact_log_z = log_z
    model.energy_fn = energy_fn
    model.temperature = kT
    return model
