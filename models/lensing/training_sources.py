"""A generator of realistic-looking pixelated sources: Sérsic superpositions and clumps.

Training an amortised reconstructor (the recurrent inference machine of
:mod:`~helmholtz.models.lensing.rim`) needs many sources that look like lensed galaxies
and that a Gaussian-process prior does not describe exactly: a smooth bulge or disc,
sometimes a companion, and compact star-forming clumps. Each source is drawn from a key
(pure, jit- and vmap-able) on the grid of a
:class:`~helmholtz.models.lensing.gp.GaussianProcessSource`:

    s(x) = B · u(x) / max u,   u(x) = Σ_k m_k w_k I_Sérsic,k(x) / max I_k
                                      + Σ_j c_j g_j exp(−|x − x_j|² / 2 r_j²),

with a fixed maximum number of components switched on and off by Bernoulli masks m, c
(the first Sérsic is always on), so every draw has the same program and shape.

Distributions (arcsec for lengths, ``extent`` the half-width of the grid):

=========================  =================================================
Sérsic components          1 + Bernoulli(0.5) + Bernoulli(0.25) (at most 3)
  weight w                 Uniform(0.3, 1) (the first: 1)
  R_sersic                 LogUniform(0.08, 0.35) · extent
  n_sersic                 Uniform(0.5, 4)
  e1, e2                   Normal(0, 0.2), clipped to |e| ≤ 0.6
  centre                   Normal(0, 0.12 · extent) (companions: 0.3 · extent)
clumps                     Bernoulli(0.6) each of 5
  height g                 Uniform(0.2, 0.8)
  radius r                 LogUniform(0.03, 0.1) · extent
  centre                   Normal(first Sérsic centre, 0.3 · extent)
peak brightness B          LogUniform(peak_low, peak_high) (flux / arcsec²)
=========================  =================================================
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from helmholtz.models.lensing.gp import GaussianProcessSource
from helmholtz.models.lensing.light import sersic

__all__ = ["random_source", "random_sources"]

Array = jax.Array

_MAX_SERSIC = 3
_MAX_CLUMPS = 5


def _log_uniform(key, low, high, shape=()):
    return jnp.exp(jax.random.uniform(key, shape, minval=jnp.log(low), maxval=jnp.log(high)))


def _clip_ellipticity(e):
    norm = jnp.linalg.norm(e, axis=-1, keepdims=True)
    return e * jnp.minimum(1.0, 0.6 / jnp.maximum(norm, 1e-12))


def random_source(
    rng_key: Array,
    grid: GaussianProcessSource,
    peak_low: float = 10.0,
    peak_high: float = 40.0,
) -> Array:
    """One random source (surface brightness at the pixel centres of ``grid``).

    Parameters
    ----------
    rng_key : jax.random key
    grid : GaussianProcessSource
        Only its geometry (``num_pix``, ``pixel_scale``, centre) is used.
    peak_low, peak_high : float
        Range of the log-uniform peak surface brightness (flux / arcsec²).

    Returns
    -------
    Array, shape (num_pix, num_pix)
        Non-negative source; rows along +y, columns along +x.
    """
    x, y = (jnp.asarray(c, dtype=jnp.float32) for c in grid.coordinates())
    x, y = x - grid.center_x, y - grid.center_y
    extent = 0.5 * grid.num_pix * grid.pixel_scale
    keys = iter(jax.random.split(rng_key, 16))
    k = _MAX_SERSIC

    on = jax.random.bernoulli(next(keys), jnp.array([1.0, 0.5, 0.25]))
    weight = jax.random.uniform(next(keys), (k,), minval=0.3, maxval=1.0).at[0].set(1.0)
    radius = _log_uniform(next(keys), 0.08, 0.35, (k,)) * extent
    index = jax.random.uniform(next(keys), (k,), minval=0.5, maxval=4.0)
    ell = _clip_ellipticity(0.2 * jax.random.normal(next(keys), (k, 2)))
    spread = jnp.array([0.12, 0.3, 0.3])[:, None] * extent
    centre = spread * jax.random.normal(next(keys), (k, 2))

    def one_sersic(amp, r, n, e, c):
        profile = sersic(x, y, 1.0, r, n, e[0], e[1], c[0], c[1])
        return amp * profile / jnp.max(profile)

    total = jnp.sum(jax.vmap(one_sersic)(on * weight, radius, index, ell, centre), axis=0)

    m = _MAX_CLUMPS
    clump_on = jax.random.bernoulli(next(keys), 0.6, (m,))
    height = jax.random.uniform(next(keys), (m,), minval=0.2, maxval=0.8)
    clump_r = _log_uniform(next(keys), 0.03, 0.1, (m,)) * extent
    clump_c = centre[0] + 0.3 * extent * jax.random.normal(next(keys), (m, 2))
    d2 = (x[None] - clump_c[:, 0, None, None]) ** 2 + (y[None] - clump_c[:, 1, None, None]) ** 2
    clumps = (clump_on * height)[:, None, None] * jnp.exp(-0.5 * d2 / clump_r[:, None, None] ** 2)
    total = total + jnp.sum(clumps, axis=0)

    peak = _log_uniform(next(keys), peak_low, peak_high)
    return peak * total / jnp.max(total)


def random_sources(
    rng_key: Array,
    grid: GaussianProcessSource,
    num: int,
    peak_low: float = 10.0,
    peak_high: float = 40.0,
) -> Array:
    """``num`` independent draws of :func:`random_source`, shape (num, num_pix, num_pix)."""
    keys = jax.random.split(rng_key, num)
    return jax.vmap(lambda k: random_source(k, grid, peak_low, peak_high))(keys)
