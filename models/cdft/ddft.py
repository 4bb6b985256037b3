"""Dynamical density functional theory as a gradient flow of the grand potential.

With v = δβΩ/δρ = ln ρ − ln w + βV − c1[ρ] − βμ (see :mod:`.solvers`), the density moves
by one of the metric objects of :mod:`helmholtz.flows`:

* :class:`~helmholtz.flows.Wasserstein` — DDFT proper, ∂ρ/∂t = γ ∂ₓ(ρ ∂ₓ v) (Marconi &
  Tarazona, J. Chem. Phys. 110, 8032, 1999; the Wasserstein gradient flow of Ω, Jordan,
  Kinderlehrer & Otto 1998). Mass is conserved; the stationary state is the equilibrium
  of the closed system, the grand-canonical profile at the βμ whose ⟨N⟩ is that mass.
* :class:`~helmholtz.flows.WFR` with ``FisherRao(conserve_mass=False)`` — an open
  system: transport plus a reaction term −κ ρ v that exchanges particles with a
  reservoir at βμ; it relaxes to the grand-canonical profile at βμ. With a
  mass-conserving Fisher–Rao part, −κ ρ (v − ⟨v⟩_ρ), mass jumps between distant wells
  without crossing the barrier between them, and the system stays closed.
* :class:`~helmholtz.flows.FisherRao` alone — reaction only: without mass conservation
  the continuous-time limit of the Picard iteration.

The method-of-lines ODE is integrated with diffrax (an implicit, L-stable Runge–Kutta
method by default: the diffusion term is stiff, with a stable explicit step of order
Δx²/2γ, while relaxing to equilibrium takes times of order L²/γ). Runge–Kutta methods
keep linear invariants, and the finite-volume flux of
:meth:`~helmholtz.flows.Wasserstein.grid_rate` conserves Σρ exactly, so the mass is
conserved to the tolerance of the implicit stages' Newton solves.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from helmholtz.flows import WFR, FisherRao, Wasserstein
from helmholtz.result import Status

from .functionals import c1
from .potentials import Grid, GridError
from .solvers import default_tolerance, grand_potential, potential_on_grid

__all__ = ["ddft", "DDFTSolution"]


class DDFTSolution(eqx.Module):
    """Density profiles ``rho`` (time, node) at times ``ts``, their ``mass`` (Δx Σρ) and
    grand potential ``omega`` (βΩ at ``beta_mu``), the solver's ``num_steps`` and
    ``status``."""

    ts: np.ndarray
    rho: np.ndarray
    mass: np.ndarray
    omega: np.ndarray
    num_steps: int
    grid: Grid = eqx.field(static=True)
    status: Status = eqx.field(static=True)

    @property
    def x(self):
        return np.asarray(self.grid.x)


def _rate(t, rho, args):
    functional, beta_v, log_w, on, beta_mu, metric, mobility, reaction = args
    safe = jnp.where(on, jnp.maximum(rho, jnp.finfo(rho.dtype).tiny), 1.0)
    v = jnp.log(safe) - log_w + beta_v - c1(functional, jnp.where(on, rho, 0.0)) - beta_mu
    dx = functional.dx
    if isinstance(metric, WFR):
        return metric.grid_rate(rho, v, dx, periodic=True, mask=on, mobility=mobility,
                                reaction=reaction)
    if isinstance(metric, Wasserstein):
        return mobility * metric.grid_rate(rho, v, dx, periodic=True, mask=on)
    return reaction * metric.grid_rate(rho, v, dx, mask=on)


def ddft(functional, potential, rho0, *, t1: float, beta_mu: float | None = None,
         metric=None, mobility: float = 1.0, reaction: float = 1.0, num_saves: int = 50,
         grid: Grid | None = None, rtol: float | None = None, atol: float | None = None,
         solver=None, max_steps: int = 100_000, dt0: float | None = None) -> DDFTSolution:
    """Relax ``rho0`` in ``potential`` from t = 0 to ``t1`` by the gradient flow of βΩ
    under ``metric`` (default :class:`~helmholtz.flows.Wasserstein`).

    Parameters
    ----------
    functional, potential, grid
        As for :func:`.solvers.solve`; the box is periodic.
    rho0
        The initial density on the grid's nodes (0 where the potential forbids).
    beta_mu
        The reservoir's βμ: needed when the Fisher–Rao part does not conserve mass (an
        open system); otherwise it only shifts ``omega`` (default 0).
    mobility, reaction
        γ of the transport term, κ of the reaction term.
    num_saves
        Profiles saved at times evenly spaced in log t from t1/10⁴ to t1, plus t = 0.
    solver
        A diffrax solver (default ``diffrax.Kvaerno5()``), stepped adaptively with a PID
        controller at ``rtol``, ``atol`` (default 1e-8, 1e-10 in float64; 1e-4, 1e-6 in
        float32).
    """
    metric = Wasserstein() if metric is None else metric
    if not isinstance(metric, Wasserstein | FisherRao | WFR):
        raise TypeError(f"metric must be Wasserstein(), FisherRao() or WFR(), got {metric!r}")
    fr = metric.fisher_rao if isinstance(metric, WFR) else metric
    open_system = isinstance(fr, FisherRao) and not fr.conserve_mass
    if open_system and beta_mu is None:
        raise ValueError(f"{type(metric).__name__} exchanges particles with a reservoir: "
                         "give beta_mu")
    if not t1 > 0:
        raise ValueError(f"t1 must be positive, got {t1!r}")
    grid, beta_v, weight = potential_on_grid(functional, potential, grid)
    dtype = jnp.result_type(float)
    beta_v, weight = beta_v.astype(dtype), weight.astype(dtype)
    rtol = default_tolerance(rtol, dtype, "rtol", 1e-8, 1e-4)
    atol = default_tolerance(atol, dtype, "atol", 1e-10, 1e-6, relative=False)
    rho0 = jnp.asarray(rho0, dtype)
    if rho0.shape != (grid.n,):
        raise GridError(f"rho0 has shape {rho0.shape}; the grid has {grid.n} nodes")
    on = weight > 0
    log_w = jnp.log(jnp.where(on, weight, 1.0))
    mu = jnp.asarray(0.0 if beta_mu is None else beta_mu, beta_v.dtype)
    ts = np.concatenate([[0.0], np.geomspace(t1 * 1e-4, t1, max(num_saves, 1))])
    args = (functional, beta_v, log_w, on, mu, metric, jnp.asarray(mobility, beta_v.dtype),
            jnp.asarray(reaction, beta_v.dtype))
    solver = diffrax.Kvaerno5() if solver is None else solver
    dt0 = grid.dx ** 2 / (4 * mobility) if dt0 is None else dt0
    sol = _integrate(solver, jnp.where(on, rho0, 0.0), args, float(t1), float(dt0),
                     jnp.asarray(ts, beta_v.dtype), rtol, atol, max_steps)
    rho = np.asarray(sol.ys)
    ok = bool(sol.result == diffrax.RESULTS.successful) and np.all(np.isfinite(rho))
    omega = np.asarray(jax.vmap(lambda r: grand_potential(functional, r, beta_v, weight, mu))(
        jnp.asarray(rho)))
    status = Status() if ok else Status(
        "not_converged", f"ddft: diffrax stopped at t < {t1} ({sol.result}); the profiles "
        "after that time are not valid")
    if not ok:
        bad = ~np.all(np.isfinite(rho), axis=1)
        rho[bad] = np.nan
    return DDFTSolution(ts, rho, grid.dx * rho.sum(axis=1), omega, int(sol.stats["num_steps"]),
                        grid, status)


@eqx.filter_jit
def _integrate(solver, y0, args, t1, dt0, ts, rtol, atol, max_steps):
    term = diffrax.ODETerm(_rate)
    return diffrax.diffeqsolve(
        term, solver, 0.0, t1, dt0, y0, args=args, saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps, throw=False)
