"""Excess free-energy functionals βF_exc[ρ] of planar fluids on a periodic grid.

A functional here is an equinox module with a grid spacing ``dx`` and a call
``functional(rho) -> βF_exc`` (a scalar) for a density ``rho`` on the nodes of a
periodic grid of any length. Its one-body direct correlation is the discrete first
derivative, c1_i = −(1/Δx) ∂βF_exc/∂ρ_i, and its two-body direct correlation the
second, c2_ij = −(1/Δx²) ∂²βF_exc/∂ρ_i∂ρ_j, both by automatic differentiation — so the
Euler–Lagrange equation solved in :mod:`.solvers` is the exact stationarity condition
of the discretised grand potential.

Both functionals below are weighted-density functionals, βF_exc = Δx Σ_i Φ(n_α(x_i)),
with n_α = w_α ∗ ρ short-ranged convolutions: evaluated by FFT on the periodic grid,
so one module serves boxes of every length (the kernels are built per grid size).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .potentials import GridError

__all__ = ["Percus", "NeuralFunctional", "c1", "c2_bulk", "convolve", "check_spacing"]


def check_spacing(functional, dx: float) -> None:
    """Raise :class:`GridError` unless ``dx`` is the functional's grid spacing."""
    if abs(float(dx) - functional.dx) > 1e-9 * functional.dx:
        raise GridError(f"{type(functional).__name__} works on a grid with dx = "
                        f"{functional.dx}; the profile or potential is on dx = {dx}")


def convolve(rho, kernel):
    """Periodic convolution of ``rho`` (..., n) with a symmetric ``kernel`` (2m+1,) given
    at offsets −m … m (n_i = Σ_j kernel_j ρ_{i+j}), by FFT."""
    n = rho.shape[-1]
    m = (kernel.shape[0] - 1) // 2
    if 2 * m + 1 > n:
        raise GridError(f"a box of {n} grid points is shorter than the functional's range "
                        f"({2 * m + 1} points)")
    full = jnp.zeros(n, kernel.dtype).at[jnp.arange(-m, m + 1) % n].add(kernel)
    return jnp.fft.irfft(jnp.fft.rfft(rho) * jnp.conj(jnp.fft.rfft(full)), n=n)


def c1(functional, rho):
    """One-body direct correlation c1 = −δβF_exc/δρ on the grid."""
    return -jax.grad(functional)(rho) / functional.dx


def c2_bulk(functional, rho_bulk, n: int):
    """Two-body direct correlation c2(r_j) = −δ²βF_exc/δρ(0)δρ(r_j) of the uniform fluid
    at density ``rho_bulk``, on a periodic grid of ``n`` points (one Hessian row, by a
    forward-over-reverse product)."""
    rho = jnp.full((n,), rho_bulk)
    e0 = jnp.zeros(n).at[0].set(1.0)
    row = jax.jvp(jax.grad(functional), (rho,), (e0,))[1]
    return -row / functional.dx ** 2


class Percus(eqx.Module):
    """Percus' exact functional for hard rods of length σ (Percus 1976, J. Stat. Phys. 15,
    505): βF_exc = ∫ −n0 ln(1 − n1) dx with n0 = [ρ(x−R) + ρ(x+R)]/2 and
    n1 = ∫_{x−R}^{x+R} ρ, R = σ/2 — Rosenfeld's fundamental-measure form in one
    dimension. On the grid, R must be a whole number m of ``dx``; n1 is the trapezoid
    rule over 2m cells (exact for piecewise-linear ρ).
    """

    dx: float = eqx.field(static=True)
    sigma: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        m = 0.5 * self.sigma / self.dx
        if not (self.dx > 0 and abs(m - round(m)) < 1e-9 * max(m, 1.0) and round(m) >= 1):
            raise GridError(f"Percus: σ/2 = {self.sigma / 2} must be a whole number (≥ 1) "
                            f"of dx = {self.dx}")

    @property
    def m(self) -> int:
        return int(round(0.5 * self.sigma / self.dx))

    def weighted_densities(self, rho):
        m = self.m
        w0 = jnp.zeros(2 * m + 1, rho.dtype).at[0].set(0.5).at[-1].set(0.5)
        w1 = jnp.full(2 * m + 1, self.dx, rho.dtype).at[0].set(0.5 * self.dx).at[-1].set(
            0.5 * self.dx)
        return convolve(rho, w0), convolve(rho, w1)

    def __call__(self, rho):
        n0, n1 = self.weighted_densities(rho)
        return -self.dx * jnp.sum(n0 * jnp.log1p(-n1))

    def packing(self, rho):
        """The local packing fraction n1 (must stay below 1)."""
        return self.weighted_densities(rho)[1]


class NeuralFunctional(eqx.Module):
    """A learned local functional βF_exc = Δx Σ_i Φ_θ(n(x_i)): ``num_kernels`` learned
    symmetric kernels of half-width ``range_`` (in units of length; the weighted
    densities n_α = w_α ∗ ρ), and an MLP Φ_θ of them. Local and convolutional, so it
    transfers to boxes of any length (Sammüller et al., PNAS 120, e2312484120, 2023, and
    Dijkman et al., PRL 134, 056103, 2025, learn such local functionals; the weighted-
    density form is that of fundamental-measure theory, which is exact for hard rods).

    The kernels start as the Percus weights' shapes (two end points and a box) plus small
    noise, so training starts near a sensible functional; Φ_θ(0) is subtracted, so the
    empty system has βF_exc = 0 whatever the weights (the MLP is equinox's default
    softplus MLP with its default initialisation).
    """

    dx: float = eqx.field(static=True)
    range_: float = eqx.field(static=True)
    kernels: jax.Array
    mlp: eqx.nn.MLP

    def __init__(self, rng_key, dx: float, *, range_: float = 0.5, num_kernels: int = 4,
                 width: int = 32, depth: int = 3):
        m = range_ / dx
        if not (dx > 0 and abs(m - round(m)) < 1e-9 * max(m, 1.0) and round(m) >= 1):
            raise GridError(f"NeuralFunctional: range {range_} must be a whole number (≥ 1) "
                            f"of dx = {dx}")
        self.dx, self.range_ = float(dx), float(range_)
        m = int(round(m))
        k1, k2 = jax.random.split(rng_key)
        base = jnp.zeros((num_kernels, 2 * m + 1))
        base = base.at[0, 0].set(0.5).at[0, -1].set(0.5)          # n0-like
        base = base.at[1].set(dx)                                 # n1-like
        noise = 0.1 * dx * jax.random.normal(k1, base.shape)
        self.kernels = base + noise
        self.mlp = eqx.nn.MLP(num_kernels, 1, width, depth, activation=jax.nn.softplus,
                              key=k2)

    def weighted_densities(self, rho):
        sym = 0.5 * (self.kernels + self.kernels[:, ::-1])
        return jax.vmap(lambda k: convolve(rho, k))(sym)          # (K, n)

    def phi(self, n):
        """Φ_θ at points n of shape (K, …), less Φ_θ(0): an empty system costs nothing."""
        flat = n.reshape(n.shape[0], -1)
        out = jax.vmap(self.mlp, in_axes=1)(flat)[:, 0] - self.mlp(jnp.zeros(n.shape[0],
                                                                              n.dtype))[0]
        return out.reshape(n.shape[1:])

    def __call__(self, rho):
        return self.dx * jnp.sum(self.phi(self.weighted_densities(rho)))

    @classmethod
    def factory(cls, key, dx: float, range_: float = 0.5, num_kernels: int = 4,
                width: int = 32, depth: int = 3):
        """Rebuild from JSON-able keyword arguments (what a saved Result stores)."""
        return cls(key, dx, range_=range_, num_kernels=num_kernels, width=width,
                   depth=depth)

