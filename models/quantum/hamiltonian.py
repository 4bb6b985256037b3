"""Local energies E_loc = Hψ/ψ of a wavefunction given as log|ψ|.

For real ψ, Hψ/ψ = −½ (∇² log|ψ| + |∇ log|ψ||²) + V. The Laplacian is exact: the
Hessian of log|ψ| by forward-over-reverse automatic differentiation (``jax.jacfwd`` of
``jax.grad``), whose trace costs one forward pass per coordinate. For the systems here
(at most 12 coordinates) that is as fast as folx's forward Laplacian and needs no further
dependency; :func:`laplacian_fd` is the central-difference check the tests compare it to.

:func:`local_energy_gradient` is ∇ₓ E_loc, the force Wasserstein QMC moves walkers'
density along (third derivatives of log|ψ|, again by autodiff).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["local_energy", "kinetic_energy", "laplacian", "laplacian_fd",
           "local_energy_gradient", "batch_local_energy"]


def _flat(log_psi, shape):
    return lambda y: log_psi(y.reshape(shape))


def laplacian(log_psi, x):
    """(∇² f, ∇f) of f = log_psi at x (any shape), exact by forward-over-reverse AD."""
    f = _flat(log_psi, x.shape)
    y = x.reshape(-1)
    grad = jax.grad(f)
    eye = jnp.eye(y.size, dtype=y.dtype)

    def one(v):
        return jax.jvp(grad, (y,), (v,))[1] @ v

    g = grad(y)
    lap = jnp.sum(jax.vmap(one)(eye))
    return lap, g.reshape(x.shape)


def laplacian_fd(log_psi, x, h: float = 1e-4):
    """∇² f at x by second-order central differences (a check; not for production)."""
    f = _flat(log_psi, x.shape)
    y = x.reshape(-1)
    f0 = f(y)
    eye = jnp.eye(y.size, dtype=y.dtype) * h
    return jnp.sum(jax.vmap(lambda e: f(y + e) - 2 * f0 + f(y - e))(eye)) / h ** 2


def kinetic_energy(log_psi, x):
    """−½ ∇²ψ / ψ = −½ (∇² log|ψ| + |∇ log|ψ||²)."""
    lap, g = laplacian(log_psi, x)
    return -0.5 * (lap + jnp.sum(g ** 2))


def local_energy(log_psi, system, x):
    """E_loc(x) = −½ ∇²ψ/ψ + V(x) for one configuration x (n_particles, dim)."""
    return kinetic_energy(log_psi, x) + system.potential(x)


def batch_local_energy(log_psi, system, xs):
    """E_loc over walkers xs (W, n_particles, dim)."""
    return jax.vmap(lambda x: local_energy(log_psi, system, x))(xs)


def local_energy_gradient(log_psi, system, x):
    """(E_loc(x), ∇ₓ E_loc(x))."""
    return jax.value_and_grad(lambda y: local_energy(log_psi, system, y))(x)
