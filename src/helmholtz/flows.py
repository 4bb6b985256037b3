"""Gradient flows of a free energy: the metric objects every flow engine shares.

A flow minimises a functional F[q] of a density q by following its first variation
v = δF/δq. Which way q moves for a given v is the choice of a metric on densities:

* :class:`Wasserstein` moves mass along −∇v: ∂q/∂t = ∇·(q ∇v). For F[q] = KL(q‖p) − log Z,
  v = log q − log p + 1 and this is the Fokker–Planck equation of Langevin dynamics; on
  particles the −∇ log q part is Brownian noise (Jordan, Kinderlehrer & Otto 1998).
* :class:`FisherRao` moves no mass but changes it where it is: ∂q/∂t = −(v − E_q[v]) q
  (birth–death); on weighted particles that is log w ← log w − h (v − E_w[v]).
* :class:`WFR` does both (Wasserstein–Fisher–Rao; Lu, Lu & Nolen 2019, arXiv 1905.09863).
* :class:`KernelWasserstein` is the Wasserstein flow with the velocity projected on a
  reproducing-kernel space, which is Stein variational gradient descent (Liu & Wang 2016):
  the −∇ log q part becomes a repulsion between particles, so no noise is needed.

Each object takes v (or what it needs of v: its gradient, or the score of p) evaluated on
particles, or on a uniform grid (the density functionals of classical DFT), and returns
the update with its step size. They are small frozen dataclasses of pure ``jax.numpy``
functions, so the engines in :mod:`helmholtz.engines.flows` (and any solver that works
on a grid) call them inside compiled loops.

Written here rather than taken from a library: blackjax has the Langevin and SVGD steps
on particles (its MALA kernel is used by the ``langevin`` engine), but no object that
turns a first variation on a grid or on weighted particles into a Fisher–Rao or WFR
update; these few lines are that object.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

__all__ = ["Wasserstein", "FisherRao", "WFR", "KernelWasserstein", "rbf_kernel",
           "median_bandwidth", "kde_log_density", "knn_log_density", "sq_distances",
           "weighted_mean", "knn_entropy", "free_energy_trace"]


def weighted_mean(values, log_weights=None):
    """E_w[values] over the leading axis (plain mean without weights)."""
    if log_weights is None:
        return jnp.mean(values, axis=0)
    w = jax.nn.softmax(log_weights)
    return jnp.tensordot(w, values, axes=(0, 0))


def _check_step(name, h):
    if isinstance(h, bool) or not isinstance(h, numbers.Real) or not (0 < h < math.inf):
        raise ValueError(f"{name}: step_size must be a finite positive number, got {h!r}")


@dataclass(frozen=True)
class Wasserstein:
    """The 2-Wasserstein metric: mass moves along −∇(δF/δq), ∂q/∂t = ∇·(q ∇ δF/δq).

    ``move`` is an explicit Euler step of particles along a given ∇v; ``langevin`` is
    the step for F = KL(q‖p) on particles, where ∇ log q is not known and the entropy's
    share of the velocity is replaced by Brownian noise of the same generator
    (Euler–Maruyama of dX = ∇log p dt + √2 dW, the unadjusted Langevin algorithm, whose
    stationary law differs from p by O(h)); ``grid`` is a conservative finite-volume step
    of the continuity equation on a uniform 1-d grid (no-flux or periodic boundaries).
    """

    step_size: float = 0.01

    def __post_init__(self):
        _check_step("Wasserstein", self.step_size)

    def move(self, positions, grad_first_variation):
        """x ← x − h ∇v(x)."""
        return positions - self.step_size * grad_first_variation

    def langevin(self, rng_key, positions, score):
        """x ← x + h ∇log p(x) + √(2h) ξ: the flow of KL(q‖p) with the entropy as noise."""
        noise = jax.random.normal(rng_key, positions.shape, positions.dtype)
        return positions + self.step_size * score + jnp.sqrt(2.0 * self.step_size) * noise

    def grid(self, rho, first_variation, dx: float, *, periodic: bool = False, mask=None):
        """ρ ← ρ + h ∂ₓ(ρ ∂ₓ v) on a uniform grid along the last axis: an explicit Euler
        step of :meth:`grid_rate`."""
        return rho + self.step_size * self.grid_rate(rho, first_variation, dx,
                                                     periodic=periodic, mask=mask)

    def grid_rate(self, rho, first_variation, dx: float, *, periodic: bool = False,
                  mask=None):
        """∂ρ/∂t = ∂ₓ(ρ ∂ₓ v) on a uniform grid along the last axis (unit mobility; the
        time derivative that an ODE solver integrates, e.g. for dynamical DFT).

        The flux J = −ρ ∂ₓv sits on cell faces, with ρ there the mean of its two
        neighbours; each cell gains what flows in, so Σ ρ Δx is conserved exactly
        (no-flux walls, or periodic wrap-around). ``mask`` (bool, per node) marks nodes
        mass may occupy: faces next to a masked-out node carry no flux, and v there is
        ignored (it may be infinite, as ln ρ where ρ = 0 behind a hard wall).
        """
        v = first_variation
        if mask is not None:
            v = jnp.where(mask, v, 0.0)
        if periodic:
            rho_face = 0.5 * (rho + jnp.roll(rho, -1, axis=-1))
            flux = -rho_face * (jnp.roll(v, -1, axis=-1) - v) / dx   # face i+1/2
            if mask is not None:
                flux = jnp.where(mask & jnp.roll(mask, -1, axis=-1), flux, 0.0)
            return -(flux - jnp.roll(flux, 1, axis=-1)) / dx
        rho_face = 0.5 * (rho[..., 1:] + rho[..., :-1])
        flux = -rho_face * (v[..., 1:] - v[..., :-1]) / dx
        if mask is not None:
            flux = jnp.where(mask[..., 1:] & mask[..., :-1], flux, 0.0)
        zero = jnp.zeros(rho.shape[:-1] + (1,), rho.dtype)
        flux = jnp.concatenate([zero, flux, zero], axis=-1)
        return -(flux[..., 1:] - flux[..., :-1]) / dx


@dataclass(frozen=True)
class FisherRao:
    """The Fisher–Rao metric: mass is created and destroyed in place,
    ∂q/∂t = −(δF/δq − E_q[δF/δq]) q.

    On weighted particles one step multiplies each weight by exp(−h (v − E_w v)), the
    mirror-descent (exponentiated) form of the flow, exact when v does not depend on q.
    For F = KL(q‖p) on particles that do not move, q_t(x) ∝ q_0(x)^{1−β} p(x)^β exactly
    with β = 1 − e^{−t}: the Fisher–Rao flow of KL is the geometric annealing path.
    ``conserve_mass=False`` drops the mean (a grand-canonical density, whose mass is free).
    """

    step_size: float = 0.1
    conserve_mass: bool = True

    def __post_init__(self):
        _check_step("FisherRao", self.step_size)

    def reweight(self, log_weights, first_variation):
        """log w ← log w − h (v − E_w[v]); with ``conserve_mass`` the weights are
        normalised, which subtracts the mean E_w[v] implicitly (an infinite v, a particle
        where p = 0, gives it weight 0 rather than NaN for all)."""
        new = log_weights - self.step_size * first_variation
        return new - logsumexp(new) if self.conserve_mass else new

    def grid_rate(self, rho, first_variation, dx: float, *, mask=None):
        """∂ρ/∂t = −(v − ⟨v⟩_ρ) ρ (with ``conserve_mass``) or −v ρ (without) on a grid;
        ``mask`` as for :meth:`Wasserstein.grid_rate` (v ignored where it is False)."""
        v = first_variation if mask is None else jnp.where(mask, first_variation, 0.0)
        if self.conserve_mass:
            mean = jnp.sum(rho * v, axis=-1, keepdims=True) / jnp.sum(rho, axis=-1,
                                                                       keepdims=True)
            v = v - mean
        rate = -v * rho
        return rate if mask is None else jnp.where(mask, rate, 0.0)

    def grid(self, rho, first_variation, dx: float):
        """ρ ← ρ exp(−h (v − ⟨v⟩_ρ)) on a grid; with ``conserve_mass`` rescaled to the
        old mass ∫ρ (the explicit step alone gains O(h² var v) of it, by Jensen), which
        also takes care of the mean ⟨v⟩_ρ; without, ρ exp(−h v) (a grand-canonical
        density, whose mass is free)."""
        new = rho * jnp.exp(-self.step_size * first_variation)
        if not self.conserve_mass:
            return new
        mass = jnp.sum(rho, axis=-1, keepdims=True)
        return new * mass / jnp.sum(new, axis=-1, keepdims=True)


@dataclass(frozen=True)
class WFR:
    """Wasserstein–Fisher–Rao: a transport step then a birth–death step (Lu, Lu & Nolen
    2019; the operator splitting of their Algorithm 1)."""

    wasserstein: Wasserstein = Wasserstein()
    fisher_rao: FisherRao = FisherRao()

    def grid_rate(self, rho, first_variation, dx: float, *, periodic: bool = False,
                  mask=None, mobility: float = 1.0, reaction: float = 1.0):
        """∂ρ/∂t = γ ∂ₓ(ρ ∂ₓ v) + κ × :meth:`FisherRao.grid_rate`: transport and birth–death
        at once, with mobility γ and reaction rate κ (the continuous-time WFR flow)."""
        return (mobility * self.wasserstein.grid_rate(rho, first_variation, dx,
                                                      periodic=periodic, mask=mask)
                + reaction * self.fisher_rao.grid_rate(rho, first_variation, dx, mask=mask))


def median_bandwidth(positions, max_points: int = 256):
    """The median heuristic of Liu & Wang (2016): h² = med(‖xᵢ − xⱼ‖²) / (2 log(N + 1)) in
    the parametrisation exp(−‖x − y‖²/(2h²)), so that Σⱼ k(xᵢ, xⱼ) ≈ 1 + N·(1/N).

    The median is taken over the pairs of at most ``max_points`` particles (every
    ⌈N/max_points⌉-th): sorting all N² distances cost 0.42 s a step at N = 1000 on a CPU,
    against 6 ms for the rest of the SVGD step.
    """
    n = positions.shape[0]
    sub = positions[:: max(1, -(-n // max_points))]
    d2 = sq_distances(sub, sub)
    off = d2[jnp.triu_indices(sub.shape[0], k=1)]
    return jnp.sqrt(0.5 * jnp.median(off) / jnp.log(n + 1.0)) + 1e-12


def rbf_kernel(x, y, bandwidth):
    """exp(−‖x − y‖² / (2h²)) over all pairs: ``(len(x), len(y))``."""
    return jnp.exp(-0.5 * sq_distances(x, y) / bandwidth**2)


def sq_distances(x, y):
    """‖xᵢ − yⱼ‖² over all pairs as ‖x‖² + ‖y‖² − 2x·y (no N × M × d array), ≥ 0."""
    d2 = (jnp.sum(x**2, -1)[:, None] + jnp.sum(y**2, -1)[None, :] - 2.0 * x @ y.T)
    return jnp.maximum(d2, 0.0)


@dataclass(frozen=True)
class KernelWasserstein:
    """The Wasserstein flow of KL(q‖p) projected on an RBF kernel space (SVGD).

    φ(xᵢ) = Σⱼ wⱼ [k(xⱼ, xᵢ) ∇log p(xⱼ) + ∇_{xⱼ} k(xⱼ, xᵢ)] is the steepest descent
    direction of KL in the unit ball of the RKHS (Liu & Wang 2016, Thm 3.3): the first
    term is the kernel-smoothed drift, the second the repulsion that replaces −∇ log q.
    ``bandwidth=None`` takes the median heuristic at every step. The O(N²) pairwise term
    is one matrix product; on a particle axis sharded over devices XLA gathers the other
    shards for it.
    """

    bandwidth: float | None = None

    def direction(self, positions, score, log_weights=None):
        """φ at every particle (the update is x ← x + h φ, or an optax step on −φ)."""
        h = (median_bandwidth(positions) if self.bandwidth is None
             else jnp.asarray(self.bandwidth, positions.dtype))
        n = positions.shape[0]
        w = jnp.full((n,), 1.0 / n, positions.dtype) if log_weights is None else \
            jax.nn.softmax(log_weights)
        k = rbf_kernel(positions, positions, h)          # k[j, i]
        kw = k * w[:, None]
        drift = kw.T @ score
        # ∇_{x_j} k(x_j, x_i) = −(x_j − x_i) k / h²; summed over j with weights
        repulsion = (positions * jnp.sum(kw, axis=0)[:, None] - kw.T @ positions) / h**2
        return drift + repulsion


def kde_log_density(points, positions, log_weights=None, bandwidth=None):
    """log of the Gaussian kernel density estimate of the (weighted) particles at
    ``points``: log Σⱼ wⱼ N(x; xⱼ, h² I).

    ``bandwidth=None`` takes Scott's rule with the Kish ESS as the sample size,
    h = σ̄ n_eff^{−1/(d+4)}, σ̄ the mean weighted standard deviation over coordinates.
    The birth–death step of Lu, Lu & Nolen (2019) uses exactly this kernel-smoothed
    log q, which converges as h → 0 with N → ∞.
    """
    n, d = positions.shape
    lw = (jnp.full((n,), -jnp.log(n), positions.dtype) if log_weights is None
          else jax.nn.log_softmax(log_weights))
    if bandwidth is None:
        w = jnp.exp(lw)
        mean = w @ positions
        sd = jnp.sqrt(w @ (positions - mean) ** 2)
        n_eff = 1.0 / jnp.sum(w**2)
        bandwidth = jnp.mean(sd) * n_eff ** (-1.0 / (d + 4))
    d2 = sq_distances(points, positions)
    log_k = -0.5 * d2 / bandwidth**2 - 0.5 * d * jnp.log(2 * jnp.pi * bandwidth**2)
    return logsumexp(log_k + lw[None, :], axis=1)


def knn_log_density(positions, log_weights=None, num_neighbours: int | None = None):
    """log q̂ at each particle from its k nearest other particles (a balloon estimator):
    q̂(xᵢ) = Wᵢ / (V_d εᵢ^d), εᵢ the distance to the k-th nearest, Wᵢ the weight within
    it (k = ⌈√N⌉ by default), up to a constant (ψ(k) − log k), which no Fisher–Rao step
    sees. Unlike a Gaussian kernel of one global bandwidth it adapts to local scale: on
    GMM-40 (40 unit modes over [−40, 40]²) Scott's bandwidth is about 10 and smoothed
    the modes into each other, and WFR's birth–death then emptied 8 of them.

    εᵢ comes from ``jnp.partition`` (14 ms for N = 1000 on a CPU core, against 220 ms for
    ``lax.top_k``), and Wᵢ from the mass inside that radius.
    """
    n, d = positions.shape
    k = int(num_neighbours or math.ceil(math.sqrt(n)))
    k = max(1, min(k, n - 1))
    lw = (jnp.full((n,), -jnp.log(n), positions.dtype) if log_weights is None
          else jax.nn.log_softmax(log_weights))
    d2 = sq_distances(positions, positions) + jnp.diag(jnp.full((n,), jnp.inf, positions.dtype))
    eps2 = jnp.maximum(jnp.partition(d2, k - 1, axis=1)[:, k - 1],
                       jnp.finfo(positions.dtype).tiny)
    inside = d2 <= eps2[:, None]
    log_mass = logsumexp(jnp.where(inside, lw[None, :], -jnp.inf), axis=1)
    log_vd = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    return log_mass - log_vd - 0.5 * d * jnp.log(eps2)


def knn_entropy(x, k: int | None = None, log_weights=None) -> float:
    """The Kozachenko–Leonenko nearest-neighbour estimate of the differential entropy of
    (weighted) draws ``x`` ``(N, d)``.

    With normalised weights wᵢ, Ŝ = −Σᵢ wᵢ log q̂(xᵢ) + log k − ψ(k), where
    q̂(xᵢ) = Wᵢ / (V_d εᵢ^d), εᵢ the distance to the k-th nearest other point and Wᵢ the
    weight of those k points (times N/(N − 1)); with equal weights this is the classic
    ψ(N) − ψ(k) + log V_d + (d/N) Σ log εᵢ up to ψ(N) ≈ log N (Kozachenko & Leonenko
    1987). Exact copies (a resampled population) are merged first, their weights summed.
    Measured on a 2-d two-mode mixture, N = 1000: within ±0.05 nats of the exact entropy
    for k = 1 … 10, weighted or not. ``k=None`` takes 3, or 10 for weighted draws: noisy
    weights (a WFR population, log-weights spread over 7 nats) bias the few-neighbour
    masses, and F[q] of such a run came out 0.18 nats below −log Z at k = 3, 0.015 at
    k = 10.
    """
    from scipy.spatial import cKDTree
    from scipy.special import digamma, gammaln

    x = np.asarray(x, np.float64)
    lw = np.zeros(len(x)) if log_weights is None else np.asarray(log_weights, np.float64)
    w = np.exp(lw - np.logaddexp.reduce(lw))
    x, inverse = np.unique(x, axis=0, return_inverse=True)
    w = np.bincount(inverse.ravel(), weights=w, minlength=len(x))
    n, d = x.shape
    if k is None:
        k = 3 if np.ptp(w) == 0 else 10
    if n < 2:
        return math.nan  # one distinct point: a collapsed population has no entropy estimate
    k = min(k, n - 1)
    dist, idx = cKDTree(x).query(x, k=k + 1)
    eps = np.maximum(dist[:, k], 1e-300)
    mass = w[idx[:, 1:]].sum(1) * n / (n - 1)
    log_vd = 0.5 * d * math.log(math.pi) - gammaln(0.5 * d + 1)
    return float(-np.sum(w * (np.log(mass) - log_vd - d * np.log(eps)))
                 + math.log(k) - digamma(k))


def free_energy_trace(result, every: int = 10):
    """``(steps, F)``: the free energy F[q_t] = E_q[U] − S(q_t) of a flow's particles
    along its run, from a Result run with ``keep_particles=True``.

    ``fisher-rao`` knows it exactly on its particles (its trace's ``free_energy``);
    for the others S is the (weighted) Kozachenko–Leonenko entropy of the particles at
    every ``every``-th step, E_q[U] the trace's ``energy``.
    F[q] ≥ −log Z, with equality when q = p.
    """
    trace = result.trace
    if "free_energy" in trace:
        f = np.asarray(trace["free_energy"], np.float64)
        steps = np.arange(len(f))[::every]
        return steps, f[steps]
    if "positions" not in trace:
        raise ValueError(f"{result.engine}: run it with keep_particles=True to trace F[q]")
    pos = np.asarray(trace["positions"], np.float64)
    steps = np.arange(pos.shape[0])[::every]
    out = []
    for t in steps:
        lw = trace["log_weights"][t] if "log_weights" in trace else None
        out.append(float(trace["energy"][t]) - knn_entropy(pos[t], log_weights=lw))
    return steps, np.asarray(out)
