"""Minimising the grand potential: the Euler–Lagrange fixed point, by Picard or Anderson.

On a periodic grid with spacing Δx the discrete grand potential is

    βΩ[ρ] = Δx Σ_i ρ_i (ln ρ_i − 1) + βF_exc[ρ] + Δx Σ_i ρ_i (βV_i − ln w_i − βμ),

(w_i the wall factor of :meth:`ExternalPotential.on_grid`; Λ = 1), and its stationary
point is ρ_i = w_i exp(βμ − βV_i + c1_i[ρ]) with c1_i = −(1/Δx) ∂βF_exc/∂ρ_i. The
first variation v = δβΩ/δρ = ln ρ − ln ρ_EL[ρ]; a Picard step with mixing α in log
space, ρ ← ρ exp(−α v), is one step of the :class:`helmholtz.flows.FisherRao` flow of Ω
without mass conservation (the grand-canonical density's mass is free), which is how it
is written below. Anderson acceleration (Anderson 1965; in the form of Walker & Ni,
SIAM J. Numer. Anal. 49, 1715, 2011) mixes the last few iterates by least squares on
their residuals, in log ρ.

Both run as one ``lax.while_loop`` (compiled once per grid size), with step limiting:
a step that would leave the functional's domain (the Percus functional's n1 ≥ 1, any
non-finite c1) is halved until it does not, and Anderson's history restarts. A run
that does not reach the tolerance returns the best profile it saw with a
:class:`helmholtz.result.Status` naming the last residual — never a NaN profile.

Written by hand: the fixed-point solvers of optimistix/jaxopt do not limit steps to a
domain, nor report a best iterate with a status; these are a few dozen lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from helmholtz.flows import FisherRao
from helmholtz.result import Status

from .functionals import c1, check_spacing
from .potentials import ExternalPotential, Grid, GridError

__all__ = ["Picard", "Anderson", "DFTSolution", "solve", "bulk_density",
           "potential_on_grid", "default_tolerance"]


@dataclass(frozen=True)
class Picard:
    """Damped Picard iteration in log ρ (a Fisher–Rao step of size ``mixing``)."""

    mixing: float = 0.05

    def __post_init__(self):
        if not (0 < self.mixing <= 1):
            raise ValueError(f"Picard: mixing must be in (0, 1], got {self.mixing!r}")


@dataclass(frozen=True)
class Anderson:
    """Anderson acceleration with ``memory`` past residuals and mixing β."""

    memory: int = 6
    mixing: float = 0.2

    def __post_init__(self):
        if not (isinstance(self.memory, int) and self.memory >= 1):
            raise ValueError(f"Anderson: memory must be an integer ≥ 1, got {self.memory!r}")
        if not (0 < self.mixing <= 1):
            raise ValueError(f"Anderson: mixing must be in (0, 1], got {self.mixing!r}")


def potential_on_grid(functional, potential, grid: Grid | None = None):
    """``(grid, beta_v, weight)`` for an :class:`ExternalPotential` (on the functional's
    spacing) or an array βV given with its ``grid`` (+∞ marks forbidden nodes)."""
    if isinstance(potential, ExternalPotential):
        grid = Grid(potential.length, functional.dx) if grid is None else grid
        check_spacing(functional, grid.dx)
        _check_wall_gap(functional, potential, grid)
        beta_v, weight = potential.on_grid(grid)
        return grid, beta_v, weight
    if grid is None:
        raise GridError("an external potential given as an array needs its grid= (a Grid)")
    check_spacing(functional, grid.dx)
    beta_v = jnp.asarray(potential, jnp.result_type(float))
    if beta_v.shape != (grid.n,):
        raise GridError(f"external potential has shape {beta_v.shape}; the grid has "
                        f"{grid.n} nodes (length {grid.length}, dx {grid.dx})")
    weight = jnp.isfinite(beta_v).astype(beta_v.dtype)
    return grid, jnp.where(weight > 0, beta_v, 0.0), weight


def default_tolerance(value, dtype, name: str, f64: float, f32: float, *,
                      relative: bool = True) -> float:
    """``value``, or its default for the working precision; a relative tolerance below
    100 machine epsilons cannot be met and is refused."""
    eps = float(jnp.finfo(dtype).eps)
    value = (f64 if eps < 1e-10 else f32) if value is None else float(value)
    if not value > 0 or (relative and value < 100 * eps):
        raise ValueError(f"{name} = {value:g} is below what {jnp.dtype(dtype).name} "
                         f"resolves (100 ε = {100 * eps:.1e}); turn on jax_enable_x64 or "
                         f"raise {name}")
    return value


def _half_width(functional) -> float:
    """How far a functional's weights reach from a point: ``range_`` of a learned one,
    σ/2 of Percus'."""
    return getattr(functional, "range_", getattr(functional, "sigma", 1.0) / 2)


def _check_wall_gap(functional, potential, grid):
    """Hard walls on a periodic grid: the forbidden gap must be wider than the
    functional's range, or the fluid feels itself through the periodic image."""
    walls = getattr(potential, "walls", None)
    if walls is None:
        return
    reach = 2 * _half_width(functional)
    gap = grid.length - (walls[1] - walls[0])
    if gap < reach - 1e-9:
        raise GridError(f"walls at {walls} leave a gap of {gap:g} behind them, shorter than "
                        f"the functional's range {reach:g}: the fluid would interact with "
                        "itself across the periodic boundary; lengthen the box")


class DFTSolution(eqx.Module):
    """An equilibrium profile and how it was found.

    ``rho`` on ``grid``'s nodes; ``residual`` = max_i |ρ_EL,i − ρ_i| at ``rho``;
    ``iterations``; ``residuals`` (one per iteration); ``status``.
    """

    rho: jax.Array
    beta_mu: float
    beta_v: jax.Array
    weight: jax.Array
    residual: float
    iterations: int
    residuals: np.ndarray
    functional: Any
    grid: Grid = eqx.field(static=True)
    status: Status = eqx.field(static=True)

    @property
    def x(self):
        return self.grid.x

    @property
    def num_particles(self) -> float:
        """⟨N⟩ = Δx Σ ρ_i (the node on a wall carries half its contact value, so this is
        the trapezoid rule across the jump)."""
        return float(self.grid.dx * jnp.sum(self.rho))

    def grand_potential(self) -> float:
        """βΩ per unit area (the discrete functional whose stationary point ``rho`` is)."""
        return float(grand_potential(self.functional, self.rho, self.beta_v, self.weight,
                                     self.beta_mu))

    def adsorption(self, rho_bulk: float) -> float:
        """Γ = ∫(ρ − ρ_b) over the allowed region (the walls' accessible length)."""
        allowed = self.grid.dx * float(jnp.sum(self.weight))
        return self.num_particles - rho_bulk * allowed

    def contact_density(self) -> np.ndarray:
        """ρ at contact with each hard wall (ρ_node / ½ on the nodes on walls): the
        pressure on a hard wall, βp = ρ(contact), by the contact theorem."""
        w = np.asarray(self.weight)
        return np.asarray(self.rho)[np.isclose(w, 0.5)] * 2.0

    def wall_force(self, lo: float, hi: float) -> float:
        """β × the force per area the fluid exerts on the soft wall whose potential acts
        on [lo, hi): ∫ρ ∂βV/∂x dx over those nodes (central differences), positive when
        it pushes towards +x. For a wall between a bulk fluid and an empty region this is
        the pressure on the wall, βp (mechanical equilibrium); over the whole periodic box
        the forces on all walls cancel."""
        dv = (jnp.roll(self.beta_v, -1) - jnp.roll(self.beta_v, 1)) / (2 * self.grid.dx)
        x = self.grid.x
        inside = (x >= lo - 1e-9 * self.grid.dx) & (x < hi - 1e-9 * self.grid.dx)
        return float(self.grid.dx * jnp.sum(jnp.where(inside, self.rho * dv, 0.0)))


def grand_potential(functional, rho, beta_v, weight, beta_mu):
    """βΩ[ρ] per unit area on the grid (see the module docstring)."""
    dx = functional.dx
    on = weight > 0
    safe = jnp.where(on, rho, 1.0)
    ideal = jnp.where(on, rho * (jnp.log(safe) - 1.0), 0.0)
    ext = jnp.where(on, rho * (beta_v - jnp.log(jnp.where(on, weight, 1.0)) - beta_mu), 0.0)
    return dx * jnp.sum(ideal + ext) + functional(rho)


def bulk_density(functional, beta_mu: float, *, max_density: float | None = None) -> float:
    """The uniform density at chemical potential βμ: the root of ln ρ − c1(ρ) = βμ by
    bisection in ln ρ on (1e-12, ``max_density``) (default the functional's
    ``max_density`` attribute, else 1/σ = 1). Raises ``ValueError`` when βμ is beyond
    what the functional reaches below ``max_density``."""
    top = max_density or getattr(functional, "max_density", None) or (
        1.0 / getattr(functional, "sigma", 1.0))
    n = 2 * int(round(_half_width(functional) / functional.dx)) + 2
    shape = jnp.zeros((n,))
    f = lambda log_rho, mu: _bulk_gap(functional, shape, jnp.asarray(log_rho), jnp.asarray(mu))
    lo, hi = math.log(1e-12), math.log(top)
    if not (float(f(hi, beta_mu)) > 0):   # nan (outside the domain) counts as too dense
        hi_val = float(f(hi * (1 - 1e-12), beta_mu))
        if math.isfinite(hi_val) and hi_val < 0:
            raise ValueError(f"βμ = {beta_mu} is beyond this functional's range: the bulk "
                             f"density would exceed {top}")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        val = float(f(mid, beta_mu))
        if math.isfinite(val) and val < 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return math.exp(0.5 * (lo + hi))


@eqx.filter_jit
def _bulk_gap(functional, shape, log_rho, beta_mu):
    """ln ρ − c1(ρ) − βμ for the uniform density ρ on a grid of ``shape``'s size."""
    rho = jnp.full(shape.shape, jnp.exp(log_rho))
    return log_rho - c1(functional, rho)[0] - beta_mu


class _Iter(eqx.Module):
    u: jax.Array            # log ρ on the support (0 elsewhere)
    f: jax.Array            # G(u) − u
    residual: jax.Array
    d_u: jax.Array          # (memory, n) Anderson history of Δu and Δf
    d_f: jax.Array
    count: jax.Array        # history columns written since the last restart
    head: jax.Array         # the column the next difference goes to
    k: jax.Array
    best_u: jax.Array
    best: jax.Array
    history: jax.Array


def _evaluate(functional, u, log_w, beta_v, beta_mu, on):
    """f = G(u) − u and the residual max|ρ_EL − ρ| at u, and whether u is in the domain."""
    rho = jnp.where(on, jnp.exp(u), 0.0)
    g = log_w + beta_mu - beta_v + c1(functional, rho)
    valid = jnp.all(jnp.isfinite(jnp.where(on, g, 0.0)))
    f = jnp.where(on, g - u, 0.0)
    res = jnp.max(jnp.where(on, jnp.abs(jnp.exp(jnp.where(on, g, -jnp.inf)) - rho), 0.0))
    return f, jnp.where(valid, res, jnp.inf), valid


def _proposal(solver, state, dx):
    if isinstance(solver, Picard):
        rho = jnp.exp(state.u)
        new = FisherRao(step_size=solver.mixing, conserve_mass=False).grid(rho, -state.f, dx)
        return jnp.log(new)
    beta = solver.mixing
    cols = jnp.arange(solver.memory) < state.count
    # least squares min‖f − ΔFᵀγ‖ by its m × m normal equations (a 4096 × 6 SVD per
    # iteration cost eight Picard steps), with a small ridge; unused columns give γ = 0
    d_f = jnp.where(cols[:, None], state.d_f, 0.0)
    gram = d_f @ d_f.T
    ridge = 1e-12 * jnp.trace(gram) / solver.memory + jnp.finfo(gram.dtype).tiny
    gram = gram + jnp.diag(jnp.where(cols, ridge, 1.0))
    gamma = jnp.where(cols, jnp.linalg.solve(gram, d_f @ state.f), 0.0)
    return state.u + beta * state.f - (state.d_u + beta * state.d_f).T @ gamma


@eqx.filter_jit
def _iterate(functional, solver, u0, beta_v, weight, beta_mu, tol, max_iterations):
    on = weight > 0
    log_w = jnp.log(jnp.where(on, weight, 1.0))
    memory = getattr(solver, "memory", 1)
    f0, r0, _ = _evaluate(functional, u0, log_w, beta_v, beta_mu, on)
    n = u0.shape[0]
    zeros = jnp.zeros((memory, n), u0.dtype)
    hist = jnp.full((max_iterations,), jnp.nan, u0.dtype)
    state = _Iter(u0, f0, r0, zeros, zeros, jnp.int32(0), jnp.int32(0), jnp.int32(0), u0, r0,
                  hist)

    def cond(s):
        return (s.residual > tol) & (s.k < max_iterations) & jnp.isfinite(s.residual) & (
            s.residual < 1e8 * jnp.maximum(s.best, tol))

    def body(s):
        target = jnp.where(on, _proposal(solver, s, functional.dx), 0.0)

        # step limiting: halve the step until the functional is defined there
        def shrink_cond(c):
            return ~c[3] & (c[4] < 40)

        def shrink(c):
            scale = jnp.asarray(0.5, s.u.dtype) ** (c[4] + 1)
            u = s.u + scale * (target - s.u)
            f, r, ok = _evaluate(functional, u, log_w, beta_v, beta_mu, on)
            return u, f, r, ok, c[4] + 1

        f1, r1, ok1 = _evaluate(functional, target, log_w, beta_v, beta_mu, on)
        u, f, r, ok, halvings = jax.lax.while_loop(shrink_cond, shrink,
                                                   (target, f1, r1, ok1, jnp.int32(0)))
        # a ring buffer that restarts at column 0 after a limited step, so the columns
        # in use are always 0 … count − 1 until it is full
        restart = halvings > 0
        d_u = jnp.where(restart, 0.0, s.d_u.at[s.head].set(u - s.u))
        d_f = jnp.where(restart, 0.0, s.d_f.at[s.head].set(f - s.f))
        count = jnp.where(restart, 0, jnp.minimum(s.count + 1, memory))
        head = jnp.where(restart, 0, (s.head + 1) % memory)
        better = r < s.best
        return _Iter(u, f, r, d_u, d_f, count, head, s.k + 1, jnp.where(better, u, s.best_u),
                     jnp.where(better, r, s.best), s.history.at[s.k].set(r))

    return jax.lax.while_loop(cond, body, state)


def solve(functional, potential, beta_mu: float, *, grid: Grid | None = None,
          solver: Picard | Anderson | None = None, tol: float | None = None,
          max_iterations: int = 20_000, initial=None) -> DFTSolution:
    """The equilibrium density of ``functional`` in ``potential`` at chemical potential
    ``beta_mu``: the Euler–Lagrange fixed point to ``tol`` in max |ρ_EL − ρ|.

    Parameters
    ----------
    functional
        A functional of :mod:`.functionals` (its ``dx`` fixes the grid spacing).
    potential
        An :class:`ExternalPotential`, or an array βV on ``grid`` (+∞ where forbidden).
    beta_mu
        βμ (Λ = 1).
    solver
        :class:`Anderson` (default) or :class:`Picard`.
    tol
        Default 1e-10 in float64 (``jax_enable_x64``), 1e-4 in float32; a tol below 100
        machine epsilons of the working precision is refused (it could never be met).
    initial
        A starting profile; default the bulk density times exp(−βV) and the wall factor,
        scaled down until the functional is defined.

    Returns
    -------
    DFTSolution
        Its ``status`` is ``ok``, or ``max_steps`` / ``diverged`` / ``nan`` with the last
        and best residual (``rho`` is then the best iterate, never NaN), or
        ``not_converged`` with ``rho`` = 0 when βμ lies beyond what the functional reaches
        (no bulk density to start from).
    """
    solver = Anderson() if solver is None else solver
    if not isinstance(solver, Picard | Anderson):
        raise TypeError(f"solver must be Picard(...) or Anderson(...), got {solver!r}")
    if not (isinstance(max_iterations, int) and max_iterations >= 1):
        raise ValueError(f"max_iterations must be an integer ≥ 1, got {max_iterations!r}")
    grid, beta_v, weight = potential_on_grid(functional, potential, grid)
    dtype = jnp.result_type(float)          # float64 when x64 is on, whatever βV was made in
    beta_v, weight = beta_v.astype(dtype), weight.astype(dtype)
    tol = default_tolerance(tol, dtype, "tol", 1e-10, 1e-4)
    beta_mu = float(beta_mu)
    on = weight > 0
    if initial is None:
        try:
            rho_b = bulk_density(functional, beta_mu)
        except ValueError as e:
            return _failed(functional, grid, beta_v, weight, beta_mu, str(e))
        rho0 = weight * jnp.exp(-jnp.clip(beta_v, -20.0, 50.0)) * rho_b
        rho0 = _into_domain(functional, rho0, on)
    else:
        rho0 = jnp.asarray(initial, beta_v.dtype)
        if rho0.shape != (grid.n,):
            raise GridError(f"initial profile has shape {rho0.shape}; the grid has {grid.n} "
                            "nodes")
    tiny = jnp.finfo(dtype).tiny
    u0 = jnp.where(on, jnp.log(jnp.where(on, jnp.maximum(rho0, tiny), 1.0)), 0.0)
    out = _iterate(functional, solver, u0, beta_v, weight, jnp.asarray(beta_mu, beta_v.dtype),
                   jnp.asarray(tol, beta_v.dtype), max_iterations)
    k = int(out.k)
    history = np.asarray(out.history)[:k]
    last, best = float(out.residual), float(out.best)
    name = type(solver).__name__
    if last <= tol:
        status, u = Status(), out.u
    else:
        u = out.best_u
        if not math.isfinite(last):
            status = Status("nan", f"{name}: the functional left its domain after {k} "
                            f"iterations (best residual {best:.3g})")
        elif k < max_iterations:
            status = Status("diverged", f"{name}: the residual grew to {last:.3g} after {k} "
                            f"iterations (best {best:.3g}); lower the mixing")
        else:
            status = Status("max_steps", f"{name}: residual {last:.3g} after {k} iterations "
                            f"(best {best:.3g}, tol {tol:g})")
    rho = jnp.where(on, jnp.exp(u), 0.0)
    return DFTSolution(rho, beta_mu, beta_v, weight, min(last, best) if last > tol else last,
                       k, history, functional, grid, status)


def _into_domain(functional, rho, on):
    for _ in range(60):
        if bool(jnp.all(jnp.isfinite(jnp.where(on, c1(functional, rho), 0.0)))):
            return rho
        rho = 0.5 * rho
    return rho


def _failed(functional, grid, beta_v, weight, beta_mu, message):
    rho = jnp.zeros(grid.n)
    return DFTSolution(rho, beta_mu, beta_v, weight, math.inf, 0, np.zeros(0), functional,
                       grid, Status("not_converged", message))

