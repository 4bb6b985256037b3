"""Grand-canonical Monte Carlo of planar (1-d) fluids, and their exact bulk references.

The reference data for classical DFT in one dimension: density profiles ρ(x) of a fluid
in an external potential βV(x) at chemical potential βμ, sampled by grand-canonical
Monte Carlo (GCMC) for many independent systems at once, and the exact bulk equation of
state (Tonks 1936; Takahashi 1942) and pair structure (Percus 1976) that test them.
Conventions (βV, σ = 1, Λ = 1, periodic box [0, L), hard walls as βV = +∞) are those of
:mod:`helmholtz.models.cdft.potentials`; pair interactions use the minimum image, as
the functionals' periodic convolutions do.

Written by hand: no library runs 1-d GCMC in JAX vectorised over systems. Each system
keeps fixed-capacity arrays, one `lax.scan` runs the moves of a sweep, `jax.vmap` runs
the systems, and the sweeps are called in chunks so that a progress bar can move.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from scipy.special import gammaln
from tqdm.auto import tqdm

from .potentials import ExternalPotential, Grid, GridError, flat

__all__ = [
    "Fluid",
    "exact_pressure",
    "exact_density",
    "exact_beta_mu",
    "GCMCState",
    "GCMCResult",
    "gcmc",
    "NumpyGCMCResult",
    "gcmc_numpy",
    "direct_correlation",
    "hard_rod_g",
    "hard_rod_c",
]

# move probabilities: insertion and deletion equal, so that their proposal densities
# cancel in the acceptance ratio; a displacement for the rest
_P_INSERT, _P_DELETE = 0.25, 0.25
_ON_JUMP = 1e-9  # relative distance at which r counts as sitting on a discontinuity


@dataclass(frozen=True)
class Fluid:
    """Hard rods of length σ with an optional square well: βu(r) = +∞ for r < σ,
    −ε for σ ≤ r < λσ, 0 beyond.

    λ = ``well_width`` must lie in [1, 2]: a second neighbour is at least 2σ away, so
    only nearest neighbours interact, which is what makes the bulk equation of state
    exact (Takahashi 1942) and bounds the number of neighbours a trial particle sees.
    """

    sigma: float = 1.0
    epsilon: float = 0.0
    well_width: float = 1.5

    def __post_init__(self):
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise ValueError(f"Fluid: sigma must be positive and finite, got {self.sigma}")
        if not math.isfinite(self.epsilon):
            raise ValueError(f"Fluid: epsilon must be finite, got {self.epsilon}")
        if not 1.0 <= self.well_width <= 2.0:
            raise ValueError(f"Fluid: well_width λ = {self.well_width} outside [1, 2]; only "
                             "λ ≤ 2 keeps the interactions nearest-neighbour")

    @classmethod
    def hard_rods(cls, sigma: float = 1.0) -> Fluid:
        """Hard rods of length σ (Tonks 1936)."""
        return cls(sigma=sigma, epsilon=0.0, well_width=1.0)

    @classmethod
    def square_well(cls, epsilon: float = 1.0, well_width: float = 1.5,
                    sigma: float = 1.0) -> Fluid:
        """Hard rods with an attractive well of depth βε out to λσ."""
        return cls(sigma=sigma, epsilon=epsilon, well_width=well_width)

    @property
    def cutoff(self) -> float:
        """The range of the interaction: λσ with a well, σ without."""
        return self.sigma * (self.well_width if self.epsilon != 0 else 1.0)

    def pair_energy(self, r):
        """βu(r) (+∞ on overlap); NumPy in, NumPy out, JAX in, JAX out."""
        xp = jnp if isinstance(r, jax.Array) else np
        r = xp.abs(r)
        well = xp.where(r < self.sigma * self.well_width, -self.epsilon, 0.0)
        return xp.where(r < self.sigma, xp.inf, well)


# ------------------------------------------------------------------ exact bulk EOS
# Takahashi (1942): for nearest-neighbour interactions the isobaric partition function
# factorises over spacings, Δ(βp) = ∫₀^∞ exp(−βp s − βu(s)) ds, with βμ = −ln Δ and
# 1/ρ = −d ln Δ/d(βp). For the square well, with a = βp (λ−1)σ,
# Δ = e^{−βpσ} [e^{−a} − e^{βε} expm1(−a)] / βp.


def _log_delta(fluid: Fluid, s):
    a = s * (fluid.well_width - 1.0) * fluid.sigma
    b = np.exp(-a) - np.exp(fluid.epsilon) * np.expm1(-a)
    return -s * fluid.sigma + np.log(b) - np.log(s)


def _spacing(fluid: Fluid, s):
    """1/ρ = −d ln Δ / d(βp): the mean nearest-neighbour spacing."""
    a = s * (fluid.well_width - 1.0) * fluid.sigma
    b = np.exp(-a) - np.exp(fluid.epsilon) * np.expm1(-a)
    well = (1.0 - np.exp(fluid.epsilon)) * (fluid.well_width - 1.0) * fluid.sigma * np.exp(-a)
    return fluid.sigma + 1.0 / s + well / b


def _solve_log(f, target, what: str):
    """t with f(t) = target for f increasing, by bracketing then bisection in float64."""
    target = np.asarray(target, np.float64)
    lo, hi = np.full(target.shape, -1.0), np.full(target.shape, 1.0)
    for _ in range(12):  # brackets up to |t| = 2¹⁰ … clipped to 700 (e^700 overflows next)
        lo = np.where(f(lo) > target, np.maximum(2 * lo, -700.0), lo)
        hi = np.where(f(hi) < target, np.minimum(2 * hi, 700.0), hi)
    if np.any(f(lo) > target) or np.any(f(hi) < target):
        raise ValueError(f"{what} out of the range the equation of state can solve")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.all((mid == lo) | (mid == hi)):
            break
        above = f(mid) > target
        lo, hi = np.where(above, lo, mid), np.where(above, mid, hi)
    return 0.5 * (lo + hi)


def _beta_p(fluid: Fluid, beta_mu):
    beta_mu = np.asarray(beta_mu, np.float64)
    if not np.all(np.isfinite(beta_mu)):
        raise ValueError("beta_mu must be finite")
    return np.exp(_solve_log(lambda t: -_log_delta(fluid, np.exp(t)), beta_mu, "beta_mu"))


def exact_pressure(fluid: Fluid, beta_mu) -> np.ndarray:
    """Bulk βp at βμ: the root of −ln Δ(βp) = βμ (Takahashi 1942), to float64 precision.

    For hard rods βμ = ln βp + βpσ (Tonks 1936).
    """
    return _beta_p(fluid, beta_mu)[()]


def exact_density(fluid: Fluid, beta_mu) -> np.ndarray:
    """Bulk density ρ at βμ: 1/ρ = −d ln Δ/d(βp) at the βp of :func:`exact_pressure`.

    For hard rods ρ = βp/(1 + βpσ), i.e. Tonks' βμ = ln(ρ/(1−η)) + η/(1−η), η = ρσ.
    """
    return (1.0 / _spacing(fluid, _beta_p(fluid, beta_mu)))[()]


def exact_beta_mu(fluid: Fluid, rho) -> np.ndarray:
    """Bulk βμ at density ρ ∈ (0, 1/σ): βμ = −ln Δ(βp) with βp solving
    −d ln Δ/d(βp) = 1/ρ (Takahashi 1942)."""
    rho = np.asarray(rho, np.float64)
    if not np.all((rho > 0) & (rho * fluid.sigma < 1)):
        raise ValueError(f"rho must lie in (0, 1/sigma) = (0, {1 / fluid.sigma}), got {rho}")
    t = _solve_log(lambda t: -_spacing(fluid, np.exp(t)), -1.0 / rho, "rho")
    return (-_log_delta(fluid, np.exp(t)))[()]


# ------------------------------------------------------------------ GCMC in JAX


class GCMCState(NamedTuple):
    """One system: particle centres in fixed-capacity slots, ``occupied`` marks the live
    ones, ``n`` counts them."""

    positions: jax.Array  # (max_particles,)
    occupied: jax.Array  # (max_particles,) bool
    n: jax.Array  # () int32


class _Sums(NamedTuple):
    n: jax.Array  # Σ over sweeps of N
    density: jax.Array  # (num_nodes,) centres per bin, summed over sweeps
    pairs: jax.Array  # (num_pair_bins,) unordered pairs per |r| bin
    attempts: jax.Array  # (3,) insertion, deletion, displacement
    accepts: jax.Array  # (3,)
    capacity_binds: jax.Array  # insertions refused only because the arrays were full


class GCMCResult(NamedTuple):
    """Per-system estimates (leading axis: system, absent when nothing was batched).

    ``density`` is ρ(x_i) on the grid's nodes, from centres binned in
    [x_i − dx/2, x_i + dx/2); ``*_se`` are batch-means standard errors; ``acceptance`` is
    (insertion, deletion, displacement); ``g`` is the bin average of g(r) over
    [r_i − dx/2, r_i + dx/2) at ``pair_r`` = i·dx (``None`` without ``pair_range``);
    ``capacity_binds`` counts insertions that only the capacity refused (0 unless
    ``max_particles`` was set too small).
    """

    mean_n: np.ndarray
    mean_n_se: np.ndarray
    density: np.ndarray
    density_se: np.ndarray
    acceptance: np.ndarray
    capacity_binds: np.ndarray
    pair_r: np.ndarray | None = None
    g: np.ndarray | None = None
    g_se: np.ndarray | None = None


@dataclass(frozen=True)
class _Config:
    """What fixes the compiled program's shapes; the fluid, βV and βμ are traced, so new
    values of them reuse it."""

    length: float
    dx: float
    num_nodes: int
    num_pair_bins: int
    max_particles: int
    moves_per_sweep: int


_trace_count = 0  # times the chunk program was traced (tests check it does not recompile)


def _energy(cfg: _Config, pair, potential, x, skip, state: GCMCState):
    """βV(x) + Σ_j βu(|x − x_j|) over occupied j ≠ ``skip``, minimum image; ``pair`` is
    (σ, βε, λσ)."""
    d = jnp.abs(x - state.positions)
    d = jnp.minimum(d, cfg.length - d)
    u = jnp.where(d < pair[0], jnp.inf, jnp.where(d < pair[2], -pair[1], 0.0))
    others = state.occupied & (jnp.arange(cfg.max_particles) != skip)
    return potential(x) + jnp.sum(jnp.where(others, u, 0.0))


def _move(cfg: _Config, pair, potential, beta_mu, step, state: GCMCState, u):
    """One attempted move from four uniforms: (kind, position or shift, which, accept)."""
    length, n = cfg.length, state.n
    insert = u[0] < _P_INSERT
    delete = (u[0] >= _P_INSERT) & (u[0] < _P_INSERT + _P_DELETE)
    kind = jnp.where(insert, 0, jnp.where(delete, 1, 2))
    # the (k+1)-th occupied slot, k uniform in 0 … N−1; the first free slot for insertion
    k = jnp.minimum(jnp.floor(u[2] * n).astype(jnp.int32), jnp.maximum(n - 1, 0))
    chosen = jnp.argmax(jnp.cumsum(state.occupied) > k)
    slot = jnp.where(insert, jnp.argmin(state.occupied), chosen)
    shifted = jnp.mod(state.positions[slot] + step * (2 * u[1] - 1), length)
    trial = jnp.where(insert, u[1] * length, jnp.where(shifted >= length, 0.0, shifted))
    # an insertion skips no one: at capacity its "slot" 0 holds a live particle
    e_new = _energy(cfg, pair, potential, trial, jnp.where(insert, -1, slot), state)
    e_old = _energy(cfg, pair, potential, state.positions[slot], slot, state)
    log_z_l = beta_mu + math.log(length)
    log_acc = jnp.where(insert, log_z_l - jnp.log(n + 1.0) - e_new,
                        jnp.where(delete, jnp.log(n * 1.0) - log_z_l + e_old, e_old - e_new))
    full = n >= cfg.max_particles
    valid = jnp.where(insert, ~full, n > 0)
    accept = valid & (jnp.log(u[3]) < jnp.where(valid, log_acc, -jnp.inf))
    binds = insert & full & jnp.isfinite(e_new)
    state = GCMCState(
        positions=state.positions.at[slot].set(jnp.where(accept & ~delete, trial,
                                                         state.positions[slot])),
        occupied=state.occupied.at[slot].set(jnp.where(accept, ~delete, state.occupied[slot])),
        n=n + jnp.where(accept, jnp.where(insert, 1, jnp.where(delete, -1, 0)), 0),
    )
    hit = jnp.arange(3) == kind
    return state, (hit, hit & accept, binds)


def _observe(cfg: _Config, state: GCMCState):
    """This sweep's centres per node bin and unordered pairs per |r| bin."""
    x, occ = state.positions, state.occupied
    node = jnp.mod(jnp.floor(x / cfg.dx + 0.5).astype(jnp.int32), cfg.num_nodes)
    density = jnp.zeros(cfg.num_nodes, x.dtype).at[node].add(occ.astype(x.dtype))
    pairs = jnp.zeros(cfg.num_pair_bins, x.dtype)
    if cfg.num_pair_bins:
        d = jnp.abs(x[:, None] - x[None, :])
        d = jnp.minimum(d, cfg.length - d)
        upper = jnp.triu(jnp.ones((cfg.max_particles,) * 2, bool), 1)
        live = occ[:, None] & occ[None, :] & upper
        b = jnp.floor(d / cfg.dx + 0.5).astype(jnp.int32)
        b = jnp.where(live & (b < cfg.num_pair_bins), b, cfg.num_pair_bins)
        pairs = pairs.at[b.ravel()].add(1.0, mode="drop")
    return density, pairs


def _sweeps(cfg: _Config, pair, potential, beta_mu, step, state, rng_key, num_sweeps):
    """``num_sweeps`` fixed-length sweeps of one system, and the sums of its observables."""

    def sweep(i, carry):
        state, sums = carry
        u = jax.random.uniform(jax.random.fold_in(rng_key, i), (cfg.moves_per_sweep, 4))
        state, (tried, took, binds) = lax.scan(
            lambda s, ui: _move(cfg, pair, potential, beta_mu, step, s, ui), state, u)
        density, pairs = _observe(cfg, state)
        count = lambda b: jnp.sum(b, 0, dtype=jnp.int32)
        sums = _Sums(sums.n + state.n, sums.density + density, sums.pairs + pairs,
                     sums.attempts + count(tried), sums.accepts + count(took),
                     sums.capacity_binds + count(binds))
        return state, sums

    real = state.positions.dtype
    zeros = _Sums(jnp.zeros((), jnp.int32), jnp.zeros(cfg.num_nodes, real),
                  jnp.zeros(cfg.num_pair_bins, real), jnp.zeros(3, jnp.int32),
                  jnp.zeros(3, jnp.int32), jnp.zeros((), jnp.int32))
    return lax.fori_loop(0, num_sweeps, sweep, (state, zeros))


def _chunk(cfg: _Config, pair, potential, beta_mu, step, state, rng_keys, chunk, num_sweeps):
    global _trace_count
    _trace_count += 1
    keys = jax.vmap(jax.random.fold_in, (0, None))(rng_keys, chunk)
    run = jax.vmap(_sweeps, (None, None, 0, 0, None, 0, 0, None))
    return run(cfg, pair, potential, beta_mu, step, state, keys, num_sweeps)


_run_chunk = jax.jit(_chunk, static_argnums=0)


def _default_capacity(length: float, sigma: float, walls) -> int:
    # N hard cores on a ring of circumference L need N σ ≤ L; centres between walls a
    # distance W apart fit at most floor(W/σ) + 1. Either bound is hard: never binds.
    cap = math.floor(length / sigma + 1e-9)
    if walls is not None:
        cap = min(cap, math.floor((walls[1] - walls[0]) / sigma + 1e-9) + 1)
    return max(cap, 1)


def _batch_means(sums: np.ndarray, per_block: int):
    """Mean and standard error over blocks (axis 1) of per-block sums."""
    means = sums / per_block
    nb = means.shape[1]
    return means.mean(1), means.std(1, ddof=1) / math.sqrt(nb)


def gcmc(rng_key, fluid: Fluid, potential: ExternalPotential | None, beta_mu, grid: Grid, *,
         num_sweeps: int, num_equilibration: int | None = None,
         moves_per_sweep: int | None = None, max_particles: int | None = None,
         step: float = 0.5, num_blocks: int = 20, pair_range: float | None = None,
         progress_bar: bool = False) -> GCMCResult:
    """Grand-canonical Monte Carlo of a 1-d fluid in βV(x), for many systems at once.

    Moves, chosen with probabilities ¼, ¼, ½: insertion at a uniform x ∈ [0, L),
    accepted with min(1, L e^{βμ}/(N+1) e^{−βΔU}); deletion of a uniformly chosen
    particle, min(1, N/(L e^{βμ}) e^{βΔU}); displacement by U(−δ, δ) with periodic wrap,
    min(1, e^{−βΔU}). A deletion at N = 0 and an insertion at capacity are rejected;
    the default capacity is a hard bound for hard cores, so it never truncates the
    ensemble. A sweep is a fixed number of attempted moves, independent of N: a sweep
    length that followed the current N would weigh the samples by the sweep length and
    bias ⟨N⟩. After ``num_equilibration`` sweeps, each of ``num_sweeps`` sweeps adds N,
    the centres binned on the grid nodes and, with ``pair_range``, the pair separations
    (for g(r) in a homogeneous periodic box) to the running sums of one of
    ``num_blocks`` blocks; standard errors are batch means over the blocks.

    Parameters
    ----------
    rng_key
        One key (split into one per system) or a batch of keys, one per system.
    fluid
        The pair interaction.
    potential
        βV on a box of length ``grid.length``, or a batch of them (arrays with a leading
        system axis, e.g. ``jax.vmap(lambda k: random_potential(k, L))(keys)``); ``None``
        for βV = 0 (periodic bulk).
    beta_mu
        βμ, a scalar or one per system.
    grid
        Nodes x_i = i·dx; the density is binned in [x_i − dx/2, x_i + dx/2).
    num_sweeps, num_equilibration
        Sampled sweeps (a multiple of ``num_blocks``), and sweeps discarded before them
        (default ``num_sweeps // 10``).
    moves_per_sweep
        Attempted moves per sweep; default 4 ⌈L/σ⌉.
    max_particles
        Capacity; default the hard-core bound min(⌊L/σ⌋, ⌊W/σ⌋ + 1) with walls W apart.
    step
        Displacement half-width δ.
    pair_range
        Largest separation for g(r), at most L/2; its bins are the grid's, r_i = i·dx.

    Returns
    -------
    GCMCResult
    """
    potential = flat(grid.length) if potential is None else potential
    cfg, num_equilibration = _options(fluid, potential, grid, num_sweeps, num_equilibration,
                                      moves_per_sweep, max_particles, step, num_blocks,
                                      pair_range)
    keys, potential, beta_mu, batched = _systems(rng_key, potential, beta_mu)
    num_systems = beta_mu.shape[0]
    pair = jnp.asarray([fluid.sigma, fluid.epsilon, fluid.sigma * fluid.well_width])
    state = GCMCState(jnp.zeros((num_systems, cfg.max_particles)),
                      jnp.zeros((num_systems, cfg.max_particles), bool),
                      jnp.zeros((num_systems,), jnp.int32))  # empty boxes

    per_block = num_sweeps // num_blocks
    chunks = [(0, min(per_block, num_equilibration - s))
              for s in range(0, num_equilibration, per_block)] + [(1, per_block)] * num_blocks
    blocks = []
    with tqdm(total=num_equilibration + num_sweeps, unit="sweep", disable=not progress_bar,
              desc="gcmc") as bar:
        for c, (sampled, count) in enumerate(chunks):
            state, sums = _run_chunk(cfg, pair, potential, beta_mu, jnp.asarray(step), state,
                                     keys, jnp.int32(c), jnp.int32(count))
            if sampled:
                blocks.append(sums)
            jax.block_until_ready(state)
            bar.update(count)
    sums = jax.tree.map(lambda *b: np.stack([np.asarray(x, np.float64) for x in b], 1),
                        *blocks)  # (system, block, ...)
    result = _estimates(cfg, sums, per_block)
    if np.any(result.capacity_binds):
        warnings.warn(f"gcmc: max_particles = {cfg.max_particles} refused "
                      f"{int(result.capacity_binds.sum())} insertions that had a finite "
                      "energy; the ensemble is truncated", stacklevel=2)
    if not batched:
        result = GCMCResult(*(v if v is None or k == "pair_r" else v[0]
                              for k, v in zip(GCMCResult._fields, result, strict=True)))
    return result


def _options(fluid, potential, grid, num_sweeps, num_equilibration, moves_per_sweep,
             max_particles, step, num_blocks, pair_range) -> tuple[_Config, int]:
    """Check :func:`gcmc`'s options; the static configuration and the equilibration."""
    length = float(potential.length)
    if abs(length - grid.length) > 1e-9 * grid.length:
        raise GridError(f"gcmc: potential on a box of length {length}, grid of length "
                        f"{grid.length}")
    if not (isinstance(num_sweeps, int | np.integer) and num_sweeps > 0):
        raise ValueError(f"gcmc: num_sweeps must be a positive integer, got {num_sweeps}")
    if not (isinstance(num_blocks, int | np.integer) and num_blocks >= 2):
        raise ValueError(f"gcmc: num_blocks must be an integer ≥ 2, got {num_blocks}")
    if num_sweeps % num_blocks:
        raise ValueError(f"gcmc: num_sweeps = {num_sweeps} is not a multiple of num_blocks "
                         f"= {num_blocks}")
    num_equilibration = num_sweeps // 10 if num_equilibration is None else num_equilibration
    if not (isinstance(num_equilibration, int | np.integer) and num_equilibration >= 0):
        raise ValueError(f"gcmc: num_equilibration must be ≥ 0, got {num_equilibration}")
    if length < 2 * fluid.cutoff:
        raise ValueError(f"gcmc: box length {length} shorter than twice the interaction "
                         f"range {fluid.cutoff}; the minimum image would be ambiguous")
    if not step > 0:
        raise ValueError(f"gcmc: step must be positive, got {step}")
    moves = 4 * math.ceil(length / fluid.sigma) if moves_per_sweep is None else moves_per_sweep
    capacity = (_default_capacity(length, fluid.sigma, potential.walls)
                if max_particles is None else max_particles)
    if moves < 1 or capacity < 1:
        raise ValueError(f"gcmc: moves_per_sweep ({moves}) and max_particles ({capacity}) "
                         "must be positive")
    num_pair_bins = 0
    if pair_range is not None:
        if potential.walls is not None:
            raise ValueError("gcmc: pair_range (g(r)) needs a periodic bulk box, not walls")
        if not 0 < pair_range <= length / 2:
            raise ValueError(f"gcmc: pair_range must lie in (0, L/2 = {length / 2}], got "
                             f"{pair_range}")
        # bins [r_i − dx/2, r_i + dx/2) up to pair_range, none reaching past L/2
        num_pair_bins = int(math.floor(pair_range / grid.dx + 1e-9)) + 1
        num_pair_bins -= (num_pair_bins - 0.5) * grid.dx > length / 2 + 1e-9 * grid.dx
    cfg = _Config(length, float(grid.dx), grid.n, num_pair_bins, int(capacity), int(moves))
    return cfg, int(num_equilibration)


def _systems(rng_key, potential, beta_mu):
    """One βV, βμ and key per system (broadcast over a shared system axis), and whether
    any input had that axis."""
    pot_batch = potential.amplitudes.shape[:-1]
    beta_mu = jnp.asarray(beta_mu, dtype=jnp.result_type(float))
    typed = jax.dtypes.issubdtype(rng_key.dtype, jax.dtypes.prng_key)
    key_batch = rng_key.shape[:rng_key.ndim - (0 if typed else 1)]
    if len(pot_batch) > 1 or beta_mu.ndim > 1 or len(key_batch) > 1:
        raise ValueError("gcmc: potential, beta_mu and rng_key take at most one leading "
                         "system axis")
    try:
        num = int(np.broadcast_shapes(pot_batch, beta_mu.shape, key_batch, (1,))[0])
    except ValueError:
        raise ValueError(f"gcmc: system axes disagree: {pot_batch} potentials, "
                         f"{beta_mu.shape} beta_mu, {key_batch} keys") from None
    potential = jax.tree.map(lambda a: jnp.broadcast_to(a, (num, *a.shape[-1:])), potential)
    keys = rng_key if key_batch else jax.random.split(rng_key, num)
    if keys.shape[0] != num:  # one key for many systems is split, never shared
        raise ValueError(f"gcmc: {keys.shape[0]} keys for {num} systems")
    batched = bool(pot_batch or beta_mu.shape or key_batch)
    return keys, potential, jnp.broadcast_to(beta_mu, (num,)), batched


def _estimates(cfg: _Config, sums: _Sums, per_block: int) -> GCMCResult:
    """Means and batch-means errors from per-block sums, axes (system, block, ...)."""
    num_blocks = sums.n.shape[1]
    mean_n, mean_n_se = _batch_means(sums.n, per_block)
    density, density_se = _batch_means(sums.density / cfg.dx, per_block)
    acceptance = sums.accepts.sum(1) / np.maximum(sums.attempts.sum(1), 1)
    binds = sums.capacity_binds.sum(1).astype(np.int64)
    extra = {}
    if cfg.num_pair_bins:
        r = np.arange(cfg.num_pair_bins) * cfg.dx
        width = np.where(r == 0, cfg.dx / 2, cfg.dx)
        # unordered pairs with |r| in a bin: L ρ² ∫_bin g(r) dr, ρ = ⟨N⟩/L
        block_n = sums.n / per_block
        g_blocks = sums.pairs / (per_block * block_n[..., None] ** 2 / cfg.length * width)
        g = sums.pairs.sum(1) / (num_blocks * per_block * mean_n[:, None] ** 2 / cfg.length
                                 * width)
        extra = dict(pair_r=r, g=g, g_se=g_blocks.std(1, ddof=1) / math.sqrt(num_blocks))
    return GCMCResult(mean_n, mean_n_se, density, density_se, acceptance, binds, **extra)


# ------------------------------------------------------------------ NumPy reference


class NumpyGCMCResult(NamedTuple):
    """⟨N⟩ with its batch-means standard error, acceptance (insertion, deletion,
    displacement) and N after each sampled sweep."""

    mean_n: float
    mean_n_se: float
    acceptance: np.ndarray
    n_trace: np.ndarray


def gcmc_numpy(seed: int, fluid: Fluid, potential_fn, beta_mu: float, length: float,
               num_sweeps: int, *, num_equilibration: int | None = None,
               moves_per_sweep: int | None = None, max_particles: int | None = None,
               step: float = 0.5, num_blocks: int = 20) -> NumpyGCMCResult:
    """The moves of :func:`gcmc`, one at a time in a plain Python/NumPy loop, for one
    system: the baseline of the speed benchmark and a second opinion in the tests.

    ``potential_fn(x)`` returns βV at a float x (+∞ outside walls), ``None`` for βV = 0.
    """
    if num_sweeps <= 0 or num_sweeps % num_blocks:
        raise ValueError(f"gcmc_numpy: num_sweeps = {num_sweeps} must be a positive multiple "
                         f"of num_blocks = {num_blocks}")
    rng = np.random.default_rng(seed)
    v = (lambda x: 0.0) if potential_fn is None else potential_fn
    num_equilibration = num_sweeps // 10 if num_equilibration is None else num_equilibration
    moves = 4 * math.ceil(length / fluid.sigma) if moves_per_sweep is None else moves_per_sweep
    capacity = math.floor(length / fluid.sigma + 1e-9) if max_particles is None else max_particles
    x = np.zeros(capacity)
    n = 0  # live particles are x[:n]
    log_zl = beta_mu + math.log(length)

    def energy(y, skip=None):
        others = x[:n] if skip is None else np.delete(x[:n], skip)
        d = np.abs(y - others)
        return v(y) + float(np.sum(fluid.pair_energy(np.minimum(d, length - d))))

    tried, took, trace = np.zeros(3), np.zeros(3), []
    for sweep in range(num_equilibration + num_sweeps):
        for u in rng.random((moves, 4)):
            kind = 0 if u[0] < _P_INSERT else 1 if u[0] < _P_INSERT + _P_DELETE else 2
            tried[kind] += 1
            if kind == 0:
                y = u[1] * length
                de = energy(y)
                if n < capacity and math.log(u[3]) < log_zl - math.log(n + 1) - de:
                    x[n], n = y, n + 1
                    took[0] += 1
            elif n > 0:
                i = min(int(u[2] * n), n - 1)
                if kind == 1:
                    if math.log(u[3]) < math.log(n) - log_zl + energy(x[i], i):
                        x[i], n = x[n - 1], n - 1
                        took[1] += 1
                else:
                    y = (x[i] + step * (2 * u[1] - 1)) % length
                    if math.log(u[3]) < energy(x[i], i) - energy(y, i):
                        x[i] = y
                        took[2] += 1
        if sweep >= num_equilibration:
            trace.append(n)
    trace = np.asarray(trace)
    means = trace.reshape(num_blocks, -1).mean(1)
    return NumpyGCMCResult(float(trace.mean()), float(means.std(ddof=1) / math.sqrt(num_blocks)),
                           took / np.maximum(tried, 1), trace)


# ------------------------------------------------------------------ pair structure


def direct_correlation(r, g, rho: float, *, padding: int = 4) -> np.ndarray:
    """Bulk direct correlation c(r) from g(r) by the 1-d Ornstein–Zernike relation,
    ĉ(k) = ĥ(k) / (1 + ρ ĥ(k)), h = g − 1.

    h on r_i = i·dr, 0 ≤ r < r_max, is mirrored to negative r and zero-padded to
    ``padding`` times its length; the transforms are FFTs (the rectangle rule of the
    Fourier integrals). Where h and c jump at the same r (|r| = σ for hard cores) the
    discrete convolution is first order in dr even with mean values on the jump: for the
    exact hard-rod g at ρσ = 0.5, c is within 1.03 dr of Percus' c. Returns c on r.
    """
    r, g = np.asarray(r, np.float64), np.asarray(g, np.float64)
    if r.ndim != 1 or r.shape != g.shape or r.size < 2:
        raise ValueError(f"direct_correlation: r and g must be 1-d of one length, got "
                         f"{r.shape} and {g.shape}")
    dr = r[1] - r[0]
    if r[0] != 0 or not (dr > 0 and np.allclose(np.diff(r), dr, rtol=1e-9, atol=0)):
        raise ValueError("direct_correlation: r must be a uniform grid starting at 0")
    if not (rho > 0 and padding >= 2):
        raise ValueError(f"direct_correlation: need rho > 0 and padding ≥ 2, got {rho}, "
                         f"{padding}")
    n, size = r.size, padding * r.size
    h = np.zeros(size)
    h[:n] = g - 1.0
    h[size - n + 1:] = (g[1:] - 1.0)[::-1]
    h_k = np.fft.rfft(h).real * dr
    s_k = 1.0 + rho * h_k  # the structure factor, positive for any physical h
    if np.any(s_k <= 0):
        raise ValueError("direct_correlation: 1 + ρ ĥ(k) ≤ 0 at some k; g is too noisy or "
                         "too short-ranged for this density")
    return np.fft.irfft(h_k / s_k, n=size)[:n] / dr


def _on_jump(a, at, sigma):
    return np.abs(a - at) <= _ON_JUMP * sigma


def hard_rod_g(r, rho: float, sigma: float = 1.0) -> np.ndarray:
    """Exact g(r) of bulk hard rods (Percus 1976): g = (1/ρ) Σ_{k≥1} f_k(r), f_k the
    density of the k-th neighbour, a Gamma density
    f_k(r) = βp^k (r − kσ)^{k−1} e^{−βp (r − kσ)} / (k−1)! for r > kσ, βp = ρ/(1 − ρσ).

    At |r| = σ exactly, the mean of the one-sided limits, 1/(2(1 − η)).
    """
    if not 0 < rho * sigma < 1:
        raise ValueError(f"hard_rod_g: rho σ must lie in (0, 1), got {rho * sigma}")
    a = np.abs(np.asarray(r, np.float64))
    beta_p = rho / (1.0 - rho * sigma)
    total = np.zeros(a.shape)
    for k in range(1, int(np.max(a, initial=0) / sigma) + 1):
        s = a - k * sigma
        ok = s > 0
        safe = np.where(ok, s, 1.0)
        log_f = k * np.log(beta_p) + (k - 1) * np.log(safe) - beta_p * safe - gammaln(k)
        total += np.where(ok, np.exp(log_f), 0.0)
    total = np.where(_on_jump(a, sigma, sigma), beta_p / 2, total)
    return total / rho


def hard_rod_c(r, rho: float, sigma: float = 1.0) -> np.ndarray:
    """Exact direct correlation of bulk hard rods (Percus 1976),
    c(r) = −Θ(σ − |r|) [1/(1 − η) + ρ(σ − |r|)/(1 − η)²], η = ρσ; at |r| = σ exactly
    the mean of the one-sided limits, −1/(2(1 − η))."""
    if not 0 < rho * sigma < 1:
        raise ValueError(f"hard_rod_c: rho σ must lie in (0, 1), got {rho * sigma}")
    a = np.abs(np.asarray(r, np.float64))
    eta = rho * sigma
    c = np.where(a < sigma, -(1 / (1 - eta) + rho * (sigma - a) / (1 - eta) ** 2), 0.0)
    return np.where(_on_jump(a, sigma, sigma), -0.5 / (1 - eta), c)
