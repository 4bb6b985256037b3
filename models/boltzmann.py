"""Boltzmann targets p(x) ∝ exp(−U(x)/kT) and the standard sampler benchmarks.

Every energy function here is vectorised: it takes one configuration ``x`` of shape
``(d,)`` or a batch of shape ``(..., d)`` and returns ``U`` of shape ``()`` or ``(...)``.
Particle systems (DW-4, LJ-13) use flat coordinates, ``x = (x_1, …, x_n)`` of length
``n · dim``. The numpyro models are built with :func:`helmholtz.boltzmann.boltzmann`
(site ``"x"`` drawn from a proper base, plus the factor −U/kT − log base), so the joint
density of each model is exactly exp(−U/kT) and its normaliser is Z = ∫ exp(−U/kT) dx.

Exact log Z is analytic where it can be (Gaussians, the quartic double well via Bessel
functions, the normalised mixtures and the funnel) and otherwise a float64 quadrature
that runs once, on first use, and is cached.

=====================  ====  ======  =================================================
name                   dim   kT      exact log Z
=====================  ====  ======  =================================================
double_well            1     1       −0.0535719 (Bessel closed form)
muller_brown           2     20      5.3661332 (grid quadrature, ~1e-12)
gaussian_2d            2     1       ½ log det(2πΣ) = 1.5479678
gaussian_20d           20    1       ½ log det(2πΣ) = 24.6241801 (seed 0)
funnel                 10    1       0 (normalised)
gmm40                  2     1       0 (normalised)
student_t_mixture      2     1       0 (normalised)
many_well              32    1       164.6956753 (1-d quadrature per block)
banana                 10    1       0 (normalised, volume-preserving twist)
unequal_mixture        5     1       0 (normalised)
dw4                    8     1       unknown
lj13                   39    1       unknown
=====================  ====  ======  =================================================
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp
from scipy import special

from helmholtz.boltzmann import boltzmann

from ._zoo import ZooEntry, register

__all__ = [
    "double_well_energy",
    "double_well_log_z",
    "double_well",
    "muller_brown_energy",
    "muller_brown_log_z",
    "muller_brown",
    "MULLER_BROWN_TEMPERATURE",
    "gaussian_energy",
    "gaussian_target",
    "gaussian_2d",
    "gaussian_20d",
    "funnel",
    "funnel_energy",
    "GMM40_MEANS",
    "gmm40_energy",
    "gmm40",
    "STUDENT_T_MEANS",
    "student_t_mixture_energy",
    "student_t_mixture",
    "many_well_energy",
    "many_well_log_z",
    "many_well",
    "banana",
    "banana_energy",
    "unequal_mixture",
    "unequal_mixture_energy",
    "pair_distances",
    "multi_double_well_energy",
    "lennard_jones_energy",
    "com_restraint",
    "dw4_energy",
    "dw4",
    "lj13_energy",
    "lj13",
]


def _constant(value: float) -> Callable[..., float]:
    """An exact-log-Z callable that ignores the model's arguments."""
    value = float(value)

    def exact_log_z(*args, **kwargs) -> float:
        return value

    return exact_log_z


def _no_data(seed: int = 0) -> tuple[tuple, dict]:
    """Boltzmann targets take no data: every seed gives ``((), {})``."""
    del seed
    return (), {}


def _normal_base(loc, scale, d: int) -> dist.Distribution:
    # numpy parameters: building the model must not start a JAX backend or fix a dtype
    # before the user has had the chance to enable float64.
    loc = np.broadcast_to(np.asarray(loc, dtype=np.float64), (d,)).copy()
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (d,)).copy()
    return dist.Normal(loc, scale).to_event(1)


def _trapezoid_log_z(log_w: np.ndarray, cell: float) -> float:
    """log(Σ exp(log_w) · cell), stably; the trapezoid rule for an integrand ≈ 0 at the edges."""
    m = np.max(log_w)
    return float(m + np.log(np.sum(np.exp(log_w - m))) + np.log(cell))


# ---------------------------------------------------------------------------------------
# 1-d double well
# ---------------------------------------------------------------------------------------

DOUBLE_WELL_BARRIER = 4.0


def double_well_energy(x, barrier: float = DOUBLE_WELL_BARRIER):
    """Quartic double well U(x) = h (x² − 1)², minima at ±1, barrier height h at 0.

    ``x`` has shape ``(..., 1)``.
    """
    x = jnp.asarray(x)[..., 0]
    return barrier * (x**2 - 1.0) ** 2


def double_well_log_z(barrier: float = DOUBLE_WELL_BARRIER, temperature: float = 1.0) -> float:
    """Exact log ∫ exp(−h (x² − 1)² / kT) dx, in closed form.

    With a = h/kT, ∫ exp(−a x⁴ + 2a x² − a) dx = (π/2) e^{−a/2} [I_{−1/4}(a/2) + I_{1/4}(a/2)]
    (the standard quartic Gaussian integral, Gradshteyn & Ryzhik 3.323.3), written with
    exponentially scaled Bessel functions Iν(z)e^{−z} so that it is stable for large a.
    """
    a = barrier / temperature
    z = 0.5 * a
    return float(np.log(0.5 * np.pi) + np.log(special.ive(-0.25, z) + special.ive(0.25, z)))


double_well = boltzmann(
    double_well_energy,
    _normal_base(0.0, 2.0, 1),
    1.0,
    log_z=double_well_log_z(),
)
double_well.__name__ = "double_well"

# ---------------------------------------------------------------------------------------
# Müller–Brown
# ---------------------------------------------------------------------------------------

# Müller & Brown (1979), Theor. Chim. Acta 53, 75: U = Σ_k A_k exp(a_k (x − x0_k)²
# + b_k (x − x0_k)(y − y0_k) + c_k (y − y0_k)²).
_MB_A = (-200.0, -100.0, -170.0, 15.0)
_MB_a = (-1.0, -1.0, -6.5, 0.7)
_MB_b = (0.0, 0.0, 11.0, 0.6)
_MB_c = (-10.0, -10.0, -6.5, 0.7)
_MB_X0 = (1.0, 0.0, -0.5, -1.0)
_MB_Y0 = (0.0, 0.5, 1.5, 1.0)

MULLER_BROWN_TEMPERATURE = 20.0
"""kT for the registered Müller–Brown target: the deepest minimum (−146.70) and the
saddles (−40.7, −72.2) are 5.3 and 3.7 kT apart, high enough to be a real barrier and
low enough that plain MCMC still crosses it."""


def _muller_brown(xy, xp):
    x = xy[..., 0:1]
    y = xy[..., 1:2]
    A, a, b, c = (xp.asarray(v) for v in (_MB_A, _MB_a, _MB_b, _MB_c))
    dx = x - xp.asarray(_MB_X0)
    dy = y - xp.asarray(_MB_Y0)
    return xp.sum(A * xp.exp(a * dx**2 + b * dx * dy + c * dy**2), axis=-1)


def muller_brown_energy(x):
    """Müller–Brown potential (Müller & Brown 1979) with the standard parameters.

    Three minima, the deepest at (−0.558, 1.442) with U = −146.70, the others at
    (0.623, 0.028), U = −108.17, and (−0.050, 0.467), U = −80.77. ``x`` has shape
    ``(..., 2)``.
    """
    return _muller_brown(jnp.asarray(x), jnp)


@functools.cache
def muller_brown_log_z(temperature: float = MULLER_BROWN_TEMPERATURE) -> float:
    """log ∫ exp(−U_MB / kT) dx dy by float64 grid quadrature (cached).

    Trapezoid rule on [−4, 3] × [−3, 4.5] with spacing 0.01 (about half a million
    points). The integrand is smooth and on the box's edges is below e^{−135} of its
    peak at kT = 20 (e^{−68} at kT = 40; the positive fourth term grows like exp(0.7 r²)
    outside), so the rule converges spectrally: at kT = 20 halving the spacing changes
    log Z by less than 1e−12. Do not trust it above kT ≈ 60 without enlarging the box.
    """
    h = 0.01
    xs = np.arange(-4.0, 3.0 + h / 2, h)
    ys = np.arange(-3.0, 4.5 + h / 2, h)
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1)
    with np.errstate(over="ignore"):
        log_w = -_muller_brown(grid, np) / temperature
    return _trapezoid_log_z(log_w, h * h)


muller_brown = boltzmann(
    muller_brown_energy,
    _normal_base((-0.5, 0.75), 1.0, 2),
    MULLER_BROWN_TEMPERATURE,
    log_z=muller_brown_log_z,
)
muller_brown.__name__ = "muller_brown"

# ---------------------------------------------------------------------------------------
# Gaussians
# ---------------------------------------------------------------------------------------


def gaussian_energy(mean, cov) -> Callable:
    """Return U(x) = ½ (x − μ)ᵀ Σ⁻¹ (x − μ), vectorised over leading axes of ``x``.

    The normaliser at kT = 1 is Z = √det(2πΣ).
    """
    mean = np.asarray(mean, dtype=np.float64)
    precision = np.linalg.inv(np.asarray(cov, dtype=np.float64))
    precision = 0.5 * (precision + precision.T)

    def energy(x):
        r = jnp.asarray(x) - mean
        return 0.5 * jnp.einsum("...i,ij,...j->...", r, jnp.asarray(precision), r)

    energy.__name__ = "gaussian_energy"
    return energy


def _gaussian_posterior(model) -> Callable[..., dict]:
    """``exact_posterior`` of a Gaussian Boltzmann model: its mean and covariance (the
    model takes no data); reverse AIS and BAR draw their equilibrium starts from it."""

    def exact_posterior(*args, **kwargs) -> dict:
        return {"x": (model.mean.copy(), model.cov.copy())}

    return exact_posterior


def _gaussian_model(mean, cov, base_scale: float, name: str) -> Callable:
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    _, log_det = np.linalg.slogdet(2.0 * np.pi * cov)
    model = boltzmann(
        gaussian_energy(mean, cov),
        _normal_base(0.0, base_scale, mean.shape[0]),
        1.0,
        log_z=0.5 * float(log_det),
    )
    model.__name__ = name
    model.mean = mean
    model.cov = cov
    model.exact_posterior = _gaussian_posterior(model)
    return model


def gaussian_target(d: int, seed: int = 0) -> Callable:
    """A zero-mean Gaussian in ``d`` dimensions with a random covariance from ``seed``.

    Σ = Q diag(λ) Qᵀ with Q a Haar-random rotation and variances λ log-uniform in
    [0.1, 10] (condition number up to 100), drawn with ``numpy.random.default_rng(seed)``.
    The base is N(0, (1.5 √λ_max)² I). The model carries ``.mean``, ``.cov``,
    ``.exact_posterior`` and ``.exact_log_z = ½ log det(2πΣ)``.
    """
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    q = q * np.sign(np.diag(r))
    variances = np.exp(rng.uniform(np.log(0.1), np.log(10.0), size=d))
    cov = (q * variances) @ q.T
    cov = 0.5 * (cov + cov.T)
    return _gaussian_model(
        np.zeros(d), cov, 1.5 * math.sqrt(variances.max()), f"gaussian_{d}d_seed{seed}"
    )


GAUSSIAN_2D_MEAN = np.array([0.5, -0.5])
GAUSSIAN_2D_COV = np.array([[2.0, 1.2], [1.2, 1.0]])  # correlation 0.85

gaussian_2d = _gaussian_model(GAUSSIAN_2D_MEAN, GAUSSIAN_2D_COV, 3.0, "gaussian_2d")
gaussian_20d = gaussian_target(20, seed=0)
gaussian_20d.__name__ = "gaussian_20d"

# ---------------------------------------------------------------------------------------
# Neal's funnel
# ---------------------------------------------------------------------------------------


def funnel(dim: int = 10, scale: float = 3.0) -> None:
    """Neal's funnel (Neal 2003, "Slice sampling", Ann. Statist. 31, 705).

    v ~ N(0, scale²), x_i | v ~ N(0, e^v) (variance e^v, i.e. standard deviation
    e^{v/2}) for i = 1 … dim − 1. A normalised density, so
    log Z = 0. Site ``"v"`` is the neck coordinate, ``"x"`` the dim − 1 others.
    """
    v = numpyro.sample("v", dist.Normal(0.0, scale))
    numpyro.sample("x", dist.Normal(0.0, jnp.exp(0.5 * v)).expand([dim - 1]).to_event(1))


funnel.exact_log_z = _constant(0.0)


def funnel_energy(z, scale: float = 3.0):
    """−log p(z) of :func:`funnel` on the flat vector z = (v, x_1, …, x_{d−1})."""
    z = jnp.asarray(z)
    v, x = z[..., 0], z[..., 1:]
    n = x.shape[-1]
    log_pv = -0.5 * (v / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)
    log_px = -0.5 * jnp.sum(x**2, axis=-1) * jnp.exp(-v) - 0.5 * n * v
    return -(log_pv + log_px - 0.5 * n * math.log(2 * math.pi))


funnel_boltzmann = boltzmann(funnel_energy, _normal_base(0.0, 3.0, 10), 1.0, log_z=0.0)
"""The same funnel as a Boltzmann target exp(−U) over a N(0, 3² I) base (log Z = 0): the
form of the sampling literature. :func:`funnel` is a prior-only model, so annealing
engines, which start from the prior, meet it trivially; here they must travel from the
base into the neck."""
funnel_boltzmann.__name__ = "funnel_boltzmann"


def _funnel_draws(rng_key, num: int, dim: int = 10, scale: float = 3.0):
    k1, k2 = jax.random.split(rng_key)
    v = scale * jax.random.normal(k1, (num,))
    x = jnp.exp(0.5 * v)[:, None] * jax.random.normal(k2, (num, dim - 1))
    return v, x


def _funnel_sampler(rng_key, num, dim: int = 10, scale: float = 3.0):
    v, x = _funnel_draws(rng_key, num, dim, scale)
    return {"v": v, "x": x}


def _funnel_boltzmann_sampler(rng_key, num, *args, **kwargs):
    v, x = _funnel_draws(rng_key, num)
    return {"x": jnp.concatenate([v[:, None], x], axis=1)}


funnel.exact_sampler = _funnel_sampler
funnel_boltzmann.exact_sampler = _funnel_boltzmann_sampler


# ---------------------------------------------------------------------------------------
# GMM-40
# ---------------------------------------------------------------------------------------

# 40 means uniform in [−40, 40]², drawn once with numpy.random.default_rng(0).uniform and
# rounded to 4 decimals; stored so that the target never depends on a generator version.
GMM40_MEANS = np.array(
    [
        [10.9569, -18.4171],
        [-36.7221, -38.6778],
        [25.0616, 33.0204],
        [8.5309, 18.3597],
        [3.4900, 34.8058],
        [25.2683, -39.7809],
        [28.5923, -37.3132],
        [18.3724, -25.9476],
        [29.0543, 3.3169],
        [-16.0230, -6.1850],
        [-37.7344, -30.0573],
        [13.6500, 11.7752],
        [9.2308, -9.3058],
        [39.7768, 38.4668],
        [14.8434, 12.0367],
        [15.0757, -8.8863],
        [-29.1923, 17.7191],
        [2.0283, -15.1806],
        [-1.1332, 31.1590],
        [34.7235, -11.3764],
        [5.7224, -14.2504],
        [7.5440, -12.9671],
        [-8.6705, 31.2219],
        [-21.8274, 9.8550],
        [-33.2788, 26.6115],
        [22.9679, -20.8504],
        [30.1187, -35.3146],
        [-13.1106, -27.9776],
        [-3.9729, 23.7059],
        [-21.5486, -35.8383],
        [-7.6359, -24.1190],
        [-32.7398, 6.4266],
        [-16.1043, 13.7596],
        [-24.0388, 35.3690],
        [-10.7912, -31.5604],
        [10.3287, 34.1724],
        [-4.7698, 36.3672],
        [-0.0083, -5.9817],
        [9.6171, 39.6077],
        [35.9155, -3.1964],
    ]
)


def gmm40_energy(x):
    """GMM-40 (Midgley et al. 2023, "Flow annealed importance sampling bootstrap", ICLR).

    U(x) = −log (1/40) Σ_k N(x; μ_k, I), the normalised equal-weight mixture of 40 unit
    Gaussians with means :data:`GMM40_MEANS`; hence log Z = 0 at kT = 1. (FAB draws its
    own means and uses scale softplus(1); ours are fixed and unit.) ``x``: ``(..., 2)``.
    """
    x = jnp.asarray(x)
    sq = jnp.sum((x[..., None, :] - jnp.asarray(GMM40_MEANS)) ** 2, axis=-1)
    k = GMM40_MEANS.shape[0]
    return -(logsumexp(-0.5 * sq, axis=-1) - math.log(k) - math.log(2 * math.pi))


gmm40 = boltzmann(gmm40_energy, _normal_base(0.0, 30.0, 2), 1.0, log_z=0.0)
gmm40.__name__ = "gmm40"


def _mixture_sampler(means, weights, scales) -> Callable:
    """``exact_sampler(rng_key, num, …) -> {"x": (num, d)}`` of a Gaussian mixture."""
    means, weights, scales = (np.asarray(a, np.float64) for a in (means, weights, scales))

    def sampler(rng_key, num, *args, **kwargs):
        k1, k2 = jax.random.split(rng_key)
        comp = jax.random.choice(k1, len(weights), (num,), p=jnp.asarray(weights))
        eps = jax.random.normal(k2, (num, means.shape[1]))
        return {"x": jnp.asarray(means)[comp] + jnp.asarray(scales)[comp, None] * eps}

    return sampler


gmm40.exact_sampler = _mixture_sampler(GMM40_MEANS, np.full(40, 1 / 40), np.ones(40))

# ---------------------------------------------------------------------------------------
# Mixture of Student-t
# ---------------------------------------------------------------------------------------

# 10 means uniform in [−10, 10]², drawn once with numpy.random.default_rng(1).uniform.
STUDENT_T_MEANS = np.array(
    [
        [0.2364, 9.0093],
        [-7.1168, 8.9730],
        [-3.7634, -1.5335],
        [6.5541, -1.8160],
        [0.9919, -9.4488],
        [5.0703, 0.7629],
        [-3.4054, 5.7686],
        [-3.9361, -0.9300],
        [-7.3192, -1.9377],
        [-5.9309, -4.7537],
    ]
)
STUDENT_T_DF = 2.0


def student_t_mixture_energy(x):
    """Equal-weight mixture of 10 product Student-t densities (df = 2, unit scale) in 2-d.

    Each component is a product of independent 1-d t(ν = 2) densities centred on a row of
    :data:`STUDENT_T_MEANS` (the heavy-tailed benchmark of Blessing et al. 2024, "Beyond
    ELBOs"). U = −log p with p normalised, so log Z = 0 at kT = 1. ``x``: ``(..., 2)``.
    """
    nu = STUDENT_T_DF
    log_norm = math.lgamma(0.5 * (nu + 1)) - math.lgamma(0.5 * nu) - 0.5 * math.log(nu * math.pi)
    z = jnp.asarray(x)[..., None, :] - jnp.asarray(STUDENT_T_MEANS)
    log_t = log_norm - 0.5 * (nu + 1) * jnp.log1p(z**2 / nu)
    k = STUDENT_T_MEANS.shape[0]
    return -(logsumexp(jnp.sum(log_t, axis=-1), axis=-1) - math.log(k))


student_t_mixture = boltzmann(student_t_mixture_energy, _normal_base(0.0, 10.0, 2), 1.0, log_z=0.0)
student_t_mixture.__name__ = "student_t_mixture"

# ---------------------------------------------------------------------------------------
# Many-well
# ---------------------------------------------------------------------------------------


def many_well_energy(x):
    """Many-well energy (Midgley et al. 2023, FAB): independent 2-d double-well blocks.

    U = Σ_b [x_b⁴ − 6 x_b² − 0.5 x_b + ½ y_b²] over consecutive coordinate pairs
    (x_b, y_b) = (x[2b], x[2b+1]); 2¹⁶ modes in 32 dimensions. ``x``: ``(..., 2B)``.
    """
    x = jnp.asarray(x)
    pairs = x.reshape(x.shape[:-1] + (-1, 2))
    u, v = pairs[..., 0], pairs[..., 1]
    return jnp.sum(u**4 - 6.0 * u**2 - 0.5 * u + 0.5 * v**2, axis=-1)


@functools.cache
def _many_well_block_log_z() -> float:
    # ∫ exp(−(u⁴ − 6u² − 0.5u)) du on [−6, 6] (integrand < 1e−500 beyond), trapezoid with
    # spacing 1e−4; converged to ~1e−13. The y part contributes ½ log 2π.
    h = 1e-4
    u = np.arange(-6.0, 6.0 + h / 2, h)
    return _trapezoid_log_z(-(u**4 - 6.0 * u**2 - 0.5 * u), h) + 0.5 * math.log(2 * math.pi)


def many_well_log_z(dim: int = 32) -> float:
    """Exact log Z of the many-well target: (dim/2) × 10.2934797 = 164.6956753 for dim 32.

    The blocks are independent, so log Z is a sum of one 1-d quadrature (float64,
    trapezoid, error ~1e−13) per block plus ½ log 2π for the Gaussian coordinate.
    """
    if dim % 2:
        raise ValueError(f"many_well_log_z: dim must be even, got {dim}")
    return (dim // 2) * _many_well_block_log_z()


many_well = boltzmann(
    many_well_energy,
    _normal_base(0.0, 2.0, 32),
    1.0,
    log_z=lambda: many_well_log_z(32),
)
many_well.__name__ = "many_well"


@functools.cache
def _many_well_quantiles() -> tuple[np.ndarray, np.ndarray]:
    h = 1e-3
    u = np.arange(-6.0, 6.0 + h / 2, h)
    log_p = -(u**4 - 6.0 * u**2 - 0.5 * u)
    p = np.exp(log_p - log_p.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]))])
    return cdf / cdf[-1], u


def _many_well_sampler(rng_key, num, *args, dim: int = 32, **kwargs):
    """Exact draws: each block's x by inverting its CDF (trapezoid on a 1e-3 grid), y
    standard normal."""
    cdf, grid = _many_well_quantiles()
    k1, k2 = jax.random.split(rng_key)
    u = jnp.interp(jax.random.uniform(k1, (num, dim // 2)), jnp.asarray(cdf),
                   jnp.asarray(grid))
    y = jax.random.normal(k2, (num, dim // 2))
    return {"x": jnp.stack([u, y], axis=-1).reshape(num, dim)}


many_well.exact_sampler = _many_well_sampler

# ---------------------------------------------------------------------------------------
# Particle systems: DW-4 and LJ-13 (Köhler, Klein & Noé 2020)
# ---------------------------------------------------------------------------------------


def pair_distances(x, n_particles: int, dim: int):
    """Distances d_ij, i < j, for flat coordinates ``x`` of shape ``(..., n · dim)``.

    Returns ``(..., n(n − 1)/2)``. The square root is guarded so that coincident
    particles give d = 0 with a zero (not NaN) gradient.
    """
    x = jnp.asarray(x)
    pos = x.reshape(x.shape[:-1] + (n_particles, dim))
    i, j = np.triu_indices(n_particles, k=1)
    sq = jnp.sum((pos[..., i, :] - pos[..., j, :]) ** 2, axis=-1)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def com_restraint(x, n_particles: int, dim: int):
    """½ n ‖x̄‖², a harmonic restraint on the centre of mass x̄ = (1/n) Σ x_i.

    The particle energies below are translation invariant, so exp(−U) is not integrable
    over ℝ^{n·dim}; the literature samples in the zero-centre-of-mass subspace instead.
    Adding this term makes the target proper on ℝ^{n·dim} with x̄ ~ N(0, I/n), and since
    it depends on x̄ alone it factorises: every internal observable (distances, energies)
    has exactly the distribution of the centre-of-mass-free system.
    """
    x = jnp.asarray(x)
    pos = x.reshape(x.shape[:-1] + (n_particles, dim))
    centre = jnp.mean(pos, axis=-2)
    return 0.5 * n_particles * jnp.sum(centre**2, axis=-1)


def multi_double_well_energy(
    x,
    n_particles: int = 4,
    dim: int = 2,
    a: float = 0.0,
    b: float = -4.0,
    c: float = 0.9,
    d0: float = 4.0,
):
    """Pairwise double-well energy Σ_{i<j} a(d_ij − d0) + b(d_ij − d0)² + c(d_ij − d0)⁴.

    With the defaults this is DW-4 of Köhler, Klein & Noé (2020, "Equivariant flows:
    exact likelihood generative learning for symmetric densities", ICML): each pair
    prefers d ≈ 2.51 or d ≈ 5.49 (pair energy −4.44) over the barrier at d0 = 4.
    """
    r = pair_distances(x, n_particles, dim) - d0
    return jnp.sum(a * r + b * r**2 + c * r**4, axis=-1)


def _lj_pair(d, core_radius: float):
    # ε[(1/d)¹² − 2(1/d)⁶] for d ≥ core_radius; below it, the tangent line at core_radius
    # (C¹, still steeply repulsive, never overflowing, no NaN at d = 0).
    ds = jnp.maximum(d, core_radius)
    inv6 = ds**-6
    value = inv6**2 - 2.0 * inv6
    slope = (-12.0 * inv6**2 + 12.0 * inv6) / core_radius
    return value + slope * jnp.minimum(d - core_radius, 0.0)


def lennard_jones_energy(
    x,
    n_particles: int = 13,
    dim: int = 3,
    oscillator_scale: float = 1.0,
    core_radius: float = 0.5,
):
    """Lennard-Jones cluster energy with a harmonic oscillator (Köhler, Klein & Noé 2020).

    U = Σ_{i<j} [(1/d_ij)¹² − 2 (1/d_ij)⁶] + (s/2) Σ_i ‖x_i − x̄‖²  (ε = r_m = 1, s =
    ``oscillator_scale``). The pair term's minimum is −1 at d = 1; the 13-particle
    cluster's global minimum (the icosahedron, s = 0) is −44.326801.

    Soft core: below ``core_radius`` (0.5) the pair term is continued linearly from its
    value (≈ 3968) and slope at 0.5 instead of diverging, so that overlapping particles
    drawn from a base give finite energies and gradients. This changes exp(−U) only where
    it is below e^{−3800}, i.e. not at all in float64.
    """
    d = pair_distances(x, n_particles, dim)
    u = jnp.sum(_lj_pair(d, core_radius), axis=-1)
    if oscillator_scale:
        x = jnp.asarray(x)
        pos = x.reshape(x.shape[:-1] + (n_particles, dim))
        centred = pos - jnp.mean(pos, axis=-2, keepdims=True)
        u = u + 0.5 * oscillator_scale * jnp.sum(centred**2, axis=(-2, -1))
    return u


def dw4_energy(x):
    """The DW-4 model's energy: :func:`multi_double_well_energy` + :func:`com_restraint`.

    ``x``: ``(..., 8)``, four particles in the plane, kT = 1.
    """
    return multi_double_well_energy(x, 4, 2) + com_restraint(x, 4, 2)


def lj13_energy(x):
    """The LJ-13 model's energy: :func:`lennard_jones_energy` + :func:`com_restraint`.

    The oscillator ½ Σ‖x_i − x̄‖² plus the restraint ½ n‖x̄‖² is exactly ½‖x‖².
    ``x``: ``(..., 39)``, thirteen particles in 3-d, kT = 1.
    """
    return lennard_jones_energy(x, 13, 3) + com_restraint(x, 13, 3)


dw4 = boltzmann(dw4_energy, _normal_base(0.0, 3.0, 8), 1.0, log_z=None)
dw4.__name__ = "dw4"
# Bases: DW-4 coordinates have a standard deviation of about 1.9 at kT = 1, so N(0, 3²)
# covers them. LJ-13's total harmonic term is ½‖x‖², so N(0, I) has tails at least as
# heavy as the target and the weight p/base ∝ exp(−U_LJ) is bounded (U_LJ ≥ −44.33).
lj13 = boltzmann(lj13_energy, _normal_base(0.0, 1.0, 39), 1.0, log_z=None)
lj13.__name__ = "lj13"

# ---------------------------------------------------------------------------------------
# Banana and an unequal mixture: the targets of the error-bar study (benchmarks/honesty.py)
# ---------------------------------------------------------------------------------------

BANANA_TWIST = 0.1
"""b of the twisted Gaussian (Haario, Saksman & Tamminen 1999 use b = 0.03 and 0.1)."""


def banana_energy(x, twist: float = BANANA_TWIST):
    """Haario et al.'s (1999) twisted Gaussian ("banana") in 10-d, normalised (log Z = 0).

    x = T(g) with g ~ N(0, diag(100, 1, …, 1)) and T(g)_2 = g_2 + b(g_1² − 100), the other
    coordinates unchanged: T is triangular with unit diagonal, so U(x) = −log N(T⁻¹(x))
    needs no Jacobian. ``x``: ``(..., 10)``.
    """
    x = jnp.asarray(x)
    d = x.shape[-1]
    g2 = x[..., 1] - twist * (x[..., 0] ** 2 - 100.0)
    quad = x[..., 0] ** 2 / 100.0 + g2**2 + jnp.sum(x[..., 2:] ** 2, axis=-1)
    return 0.5 * quad + 0.5 * d * math.log(2 * math.pi) + 0.5 * math.log(100.0)


banana = boltzmann(banana_energy, _normal_base(0.0, 10.0, 10), 1.0, log_z=0.0)
banana.__name__ = "banana"

UNEQUAL_WEIGHTS = np.array([0.7, 0.2, 0.1])
UNEQUAL_MEANS = np.array([[0.0] * 5, [4.0] * 5, [-4.0, 4.0, -4.0, 4.0, -4.0]])
UNEQUAL_SCALES = np.array([1.0, 0.5, 2.0])


def unequal_mixture_energy(x):
    """A normalised 3-component Gaussian mixture in 5-d with unequal weights (0.7, 0.2,
    0.1) and isotropic scales (1, 0.5, 2), means 0, (4, …, 4), (−4, 4, −4, 4, −4); log Z = 0.
    The small, narrow component is what annealing misses when it under-explores."""
    x = jnp.asarray(x)
    d = x.shape[-1]
    sq = jnp.sum((x[..., None, :] - jnp.asarray(UNEQUAL_MEANS)) ** 2, axis=-1)
    scales = jnp.asarray(UNEQUAL_SCALES)
    log_comp = (jnp.log(jnp.asarray(UNEQUAL_WEIGHTS)) - 0.5 * sq / scales**2
                - d * jnp.log(scales) - 0.5 * d * math.log(2 * math.pi))
    return -logsumexp(log_comp, axis=-1)


unequal_mixture = boltzmann(unequal_mixture_energy, _normal_base(0.0, 6.0, 5), 1.0, log_z=0.0)
unequal_mixture.__name__ = "unequal_mixture"
unequal_mixture.exact_sampler = _mixture_sampler(UNEQUAL_MEANS, UNEQUAL_WEIGHTS, UNEQUAL_SCALES)

# ---------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------


def _log_z_callable(model) -> Callable[..., float] | None:
    log_z = model.exact_log_z
    if log_z is None or callable(log_z):
        return log_z
    return _constant(log_z)


def _register(name: str, description: str, model, exact_posterior=None) -> None:
    register(
        ZooEntry(
            name=name,
            description=description,
            family="boltzmann",
            model=model,
            make_data=_no_data,
            exact_log_z=_log_z_callable(model),
            exact_posterior=exact_posterior,
        )
    )


_register("double_well", "1-d quartic double well U = 4(x² − 1)², kT = 1.", double_well)
_register("muller_brown", "Müller–Brown potential (2-d, three minima) at kT = 20.", muller_brown)
_register(
    "gaussian_2d",
    "2-d correlated Gaussian (ρ = 0.85), analytic log Z.",
    gaussian_2d,
    _gaussian_posterior(gaussian_2d),
)
_register(
    "gaussian_20d",
    "20-d Gaussian with a random covariance (seed 0, condition number ≤ 100).",
    gaussian_20d,
    _gaussian_posterior(gaussian_20d),
)
_register("funnel", "Neal's funnel, 10-d, σ = 3 (normalised, log Z = 0).", funnel)
_register("funnel_boltzmann",
          "Neal's funnel, 10-d, σ = 3, as exp(−U) over a N(0, 3² I) base (log Z = 0).",
          funnel_boltzmann)
_register("gmm40", "GMM-40: 40 unit Gaussians with means in [−40, 40]² (log Z = 0).", gmm40)
_register(
    "student_t_mixture",
    "Mixture of 10 Student-t (df = 2) in 2-d, means in [−10, 10]² (log Z = 0).",
    student_t_mixture,
)
_register("banana", "Haario's twisted Gaussian (b = 0.1) in 10-d over a N(0, 10² I) base "
          "(log Z = 0).", banana)
_register("unequal_mixture", "3 Gaussians in 5-d, weights 0.7/0.2/0.1, scales 1/0.5/2 "
          "(log Z = 0).", unequal_mixture)
_register("many_well", "Many-well, 32-d: 16 independent double-well blocks.", many_well)
_register("dw4", "DW-4: 4 particles in 2-d with a pairwise double well (no exact log Z).", dw4)
_register("lj13", "LJ-13: 13 Lennard-Jones particles in 3-d (no exact log Z).", lj13)
