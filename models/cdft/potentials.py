"""External potentials and grids for planar (1-d) fluids.

Conventions shared by the Monte Carlo and the density-functional code of this package:
energies in units of kT (every potential is βV), lengths in units of the particle
diameter σ unless a fluid says otherwise, the thermal wavelength Λ = 1 (so βμ is
ln(ρΛ) + βμ_exc). A system lives on a periodic box [0, L); a hard wall is a region where
βV = +∞. The walls of :class:`ExternalPotential` confine particle *centres* to
[lo, hi], so a rod of length σ touching the wall has its centre at lo.

On a grid, a node that sits exactly on a wall gets half the Boltzmann factor of its
neighbour inside: the density jumps there, and the trapezoid rule that weighs the
density in the functionals is second-order accurate across a jump only when the node
on it carries the mean of the two one-sided values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Grid", "ExternalPotential", "random_potential", "flat", "GridError"]


class GridError(ValueError):
    """A profile, potential or functional given on a grid that does not match."""


@dataclass(frozen=True)
class Grid:
    """A uniform periodic grid x_i = i·dx, i = 0 … n−1, on [0, length).

    ``length`` must be a whole number of ``dx`` (to 1e-9 relative).
    """

    length: float
    dx: float

    def __post_init__(self):
        if not (self.length > 0 and self.dx > 0 and math.isfinite(self.length)):
            raise GridError(f"Grid: length and dx must be positive, got {self.length}, "
                            f"{self.dx}")
        n = self.length / self.dx
        if abs(n - round(n)) > 1e-9 * n:
            raise GridError(f"Grid: length {self.length} is not a whole number of dx = "
                            f"{self.dx} ({n:.6g} cells)")

    @property
    def n(self) -> int:
        return int(round(self.length / self.dx))

    @property
    def x(self) -> jax.Array:
        return jnp.arange(self.n) * self.dx

    def points(self, length: float) -> int:
        """The number of grid cells spanning ``length``, which must be a whole number."""
        m = length / self.dx
        if abs(m - round(m)) > 1e-9 * max(m, 1.0):
            raise GridError(f"length {length} is not a whole number of dx = {self.dx} on "
                            "this grid; choose dx = σ / integer")
        return int(round(m))


class ExternalPotential(eqx.Module):
    """βV(x) on the periodic box [0, length): a sum of cosine modes, a periodic
    piecewise-linear part, and optional hard walls confining centres to [lo, hi].

    βV(x) = Σₙ aₙ cos(2π n x / L + φₙ) + linear interpolation of ``knot_values`` at
    ``knot_positions`` (periodic) ; +∞ outside [lo, hi] when ``walls`` is given.
    """

    length: float = eqx.field(static=True)
    amplitudes: jax.Array
    phases: jax.Array
    knot_positions: jax.Array
    knot_values: jax.Array
    walls: tuple[float, float] | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.walls is not None:
            lo, hi = self.walls
            if not 0 <= lo < hi < self.length:
                raise GridError(f"walls {self.walls} must satisfy 0 ≤ lo < hi < length = "
                                f"{self.length} (centres live in [lo, hi] of the periodic "
                                "box; the rest is behind the walls)")

    def smooth(self, x):
        """The finite part of βV (what is left without the walls)."""
        x = jnp.asarray(x)
        n = jnp.arange(1, self.amplitudes.shape[0] + 1)
        arg = 2 * jnp.pi * n * x[..., None] / self.length + self.phases
        v = jnp.sum(self.amplitudes * jnp.cos(arg), axis=-1)
        if self.knot_positions.shape[0] > 0:
            v = v + jnp.interp(x, self.knot_positions, self.knot_values, period=self.length)
        return v

    def inside(self, x):
        """Whether a centre at ``x`` is allowed (between the walls)."""
        x = jnp.asarray(x)
        if self.walls is None:
            return jnp.ones(x.shape, bool)
        lo, hi = self.walls
        return (x >= lo) & (x <= hi)

    def __call__(self, x):
        """βV(x), +∞ outside the walls."""
        return jnp.where(self.inside(x), self.smooth(x), jnp.inf)

    def on_grid(self, grid: Grid):
        """``(beta_v, weight)`` on the grid's nodes: βV without walls, and the wall
        factor (1 inside, ½ on a node that sits on a wall, 0 outside) that multiplies
        the Boltzmann factor exp(−βV)."""
        if abs(grid.length - self.length) > 1e-9 * self.length:
            raise GridError(f"potential on a box of length {self.length}, grid of length "
                            f"{grid.length}")
        x = grid.x
        weight = np.ones(grid.n)
        if self.walls is not None:
            nodes = []
            for w in self.walls:
                m = w / grid.dx
                if abs(m - round(m)) > 1e-9 * max(abs(m), 1.0):
                    raise GridError(f"wall at {w} is not on a node of a grid with dx = "
                                    f"{grid.dx}")
                nodes.append(int(round(m)))
            # by index, not by comparing i·dx with the wall (which float32 misses)
            i = np.arange(grid.n)
            weight = np.where((i > nodes[0]) & (i < nodes[1]), 1.0, 0.0)
            weight[nodes] = 0.5
        return self.smooth(x), jnp.asarray(weight, x.dtype)


def flat(length: float, walls: tuple[float, float] | None = None) -> ExternalPotential:
    """βV = 0 (a bulk fluid, or a slit between hard walls)."""
    z = jnp.zeros((0,))
    return ExternalPotential(float(length), z, z, z, z, walls)


def random_potential(rng_key, length: float, *, walls: tuple[float, float] | None = None,
                     num_modes: int = 4, amplitude: float = 1.0, num_knots: int = 0,
                     knot_amplitude: float = 0.0) -> ExternalPotential:
    """A random βV: ``num_modes`` cosine modes with amplitudes aₙ ~ U(−a, a)/√n and
    uniform phases, plus (``num_knots`` ≥ 2) a periodic piecewise-linear part with knot
    values ~ U(−s, s) at sorted uniform positions — the kinds of potential the neural
    functionals of Sammüller et al. (PNAS 2023) and Dijkman et al. (PRL 2025) are
    trained on."""
    ka, kp, kx, kv = jax.random.split(rng_key, 4)
    n = np.arange(1, num_modes + 1)
    amps = jax.random.uniform(ka, (num_modes,), minval=-amplitude, maxval=amplitude) / np.sqrt(n)
    phases = jax.random.uniform(kp, (num_modes,), maxval=2 * np.pi)
    if num_knots >= 2:
        pos = jnp.sort(jax.random.uniform(kx, (num_knots,), maxval=length))
        vals = jax.random.uniform(kv, (num_knots,), minval=-knot_amplitude,
                                  maxval=knot_amplitude)
    else:
        pos = vals = jnp.zeros((0,))
    return ExternalPotential(float(length), amps, phases, pos, vals, walls)
