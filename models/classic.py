"""Classic Bayesian models: eight schools, logistic regression, linear-Gaussian regression.

Each model is a plain numpyro program; the data that goes with it comes from a
``make_data(seed)`` registered beside it in the zoo (see :mod:`helmholtz.models`).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from scipy import linalg

from ._zoo import ZooEntry, register

__all__ = [
    "EIGHT_SCHOOLS_Y",
    "EIGHT_SCHOOLS_SIGMA",
    "eight_schools_centered",
    "eight_schools_noncentered",
    "eight_schools_data",
    "logistic_regression",
    "logistic_data",
    "linear_gaussian",
    "linear_gaussian_data",
    "linear_gaussian_log_z",
    "linear_gaussian_posterior",
    "heavy_tailed_mixture",
    "heavy_tailed_mixture_data",
    "heavy_tailed_mixture_log_z",
]

# ---------------------------------------------------------------------------------------
# Eight schools (Rubin 1981; Gelman et al., Bayesian Data Analysis, §5.5)
# ---------------------------------------------------------------------------------------

EIGHT_SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools_data(seed: int = 0) -> tuple[tuple, dict]:
    """The eight-schools SAT-coaching data; ``seed`` is ignored (the data are fixed)."""
    del seed
    return (8, EIGHT_SCHOOLS_SIGMA.copy()), {"y": EIGHT_SCHOOLS_Y.copy()}


def eight_schools_centered(J: int, sigma, y=None) -> None:
    """Eight schools, centred parameterisation.

    mu ~ N(0, 5), tau ~ HalfCauchy(5), theta_j ~ N(mu, tau), y_j ~ N(theta_j, sigma_j).
    The funnel between ``tau`` and ``theta`` gives NUTS divergences; that is the point
    of pairing it with :func:`eight_schools_noncentered`.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", J):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools_noncentered(J: int, sigma, y=None) -> None:
    """Eight schools, non-centred parameterisation.

    theta_j = mu + tau · theta_tilde_j with theta_tilde_j ~ N(0, 1); the same joint over
    (mu, tau, theta) as :func:`eight_schools_centered`, so the same evidence.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", J):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


eight_schools_centered.exact_log_z = None
eight_schools_noncentered.exact_log_z = None

# ---------------------------------------------------------------------------------------
# Logistic regression on synthetic data
# ---------------------------------------------------------------------------------------


def logistic_data(seed: int = 0, n: int = 200, d: int = 5, *, return_params: bool = False) -> tuple:
    """Synthetic logistic-regression data drawn from ``numpy.random.default_rng(seed)``.

    X has i.i.d. N(0, 1) entries (n × d); the true weights w ~ N(0, I_d) and bias
    b ~ N(0, 1) are drawn from the same generator, and y_i ~ Bernoulli(σ(x_i·w + b)).

    Returns
    -------
    (X, y), or (X, y, {"w": w, "b": b}) with ``return_params=True``. X is float64,
    y int64 in {0, 1}.

    Examples
    --------
    >>> X, y = logistic_data(0, n=1000, d=20)   # the benchmark-sized problem
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    b = float(rng.standard_normal())
    p = 1.0 / (1.0 + np.exp(-(X @ w + b)))
    y = (rng.uniform(size=n) < p).astype(np.int64)
    if return_params:
        return X, y, {"w": w, "b": b}
    return X, y


def logistic_regression(X, y=None) -> None:
    """Bayesian logistic regression: w ~ N(0, I_d), b ~ N(0, 1), y_i ~ Bernoulli(σ(x_i·w + b))."""
    n, d = X.shape
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([d]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", n):
        numpyro.sample("y", dist.Bernoulli(logits=jnp.asarray(X) @ w + b), obs=y)


logistic_regression.exact_log_z = None

# ---------------------------------------------------------------------------------------
# Linear-Gaussian regression: posterior and evidence in closed form
# ---------------------------------------------------------------------------------------


def linear_gaussian_data(
    seed: int = 0, n: int = 20, d: int = 3, prior_scale: float = 1.0, noise_scale: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Draw X (n × d, i.i.d. N(0, 1)), w ~ N(0, α² I) and y = X w + σ ε from ``seed``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = prior_scale * rng.standard_normal(d)
    y = X @ w + noise_scale * rng.standard_normal(n)
    return X, y


def linear_gaussian(X, y=None, prior_scale: float = 1.0, noise_scale: float = 0.5) -> None:
    """Bayesian linear regression with known noise: w ~ N(0, α² I_d), y ~ N(X w, σ² I_n).

    α = ``prior_scale``, σ = ``noise_scale``. The posterior and the evidence are Gaussian
    in closed form (:func:`linear_gaussian_posterior`, :func:`linear_gaussian_log_z`),
    which makes this the reference problem for every engine's log Z.
    """
    n, d = X.shape
    w = numpyro.sample("w", dist.Normal(0.0, prior_scale).expand([d]).to_event(1))
    with numpyro.plate("data", n):
        numpyro.sample("y", dist.Normal(jnp.asarray(X) @ w, noise_scale), obs=y)


def _check_y(y, fn: str) -> np.ndarray:
    if y is None:
        raise ValueError(f"{fn}: needs the observed y (got None)")
    return np.asarray(y, dtype=np.float64)


def linear_gaussian_log_z(X, y=None, prior_scale: float = 1.0, noise_scale: float = 0.5) -> float:
    """Exact log evidence of :func:`linear_gaussian`, in float64.

    log Z = log N(y; 0, σ² I_n + α² X Xᵀ)  (marginalising w out of the joint Gaussian).
    """
    X = np.asarray(X, dtype=np.float64)
    y = _check_y(y, "linear_gaussian_log_z")
    n = X.shape[0]
    cov = noise_scale**2 * np.eye(n) + prior_scale**2 * (X @ X.T)
    chol = linalg.cholesky(cov, lower=True)
    r = linalg.solve_triangular(chol, y, lower=True)
    log_det = 2.0 * np.sum(np.log(np.diag(chol)))
    return float(-0.5 * (r @ r) - 0.5 * log_det - 0.5 * n * np.log(2.0 * np.pi))


def linear_gaussian_posterior(
    X, y=None, prior_scale: float = 1.0, noise_scale: float = 0.5
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Exact posterior of :func:`linear_gaussian`, in float64.

    p(w | y) = N(m, S) with S = (I/α² + XᵀX/σ²)⁻¹ and m = S Xᵀ y / σ² (conjugacy).

    Returns
    -------
    ``{"w": (m, S)}``
    """
    X = np.asarray(X, dtype=np.float64)
    y = _check_y(y, "linear_gaussian_posterior")
    d = X.shape[1]
    precision = np.eye(d) / prior_scale**2 + (X.T @ X) / noise_scale**2
    cov = linalg.cho_solve(linalg.cho_factor(precision), np.eye(d))
    cov = 0.5 * (cov + cov.T)
    mean = cov @ (X.T @ y) / noise_scale**2
    return {"w": (mean, cov)}


linear_gaussian.exact_log_z = linear_gaussian_log_z
linear_gaussian.exact_posterior = linear_gaussian_posterior


def _linear_gaussian_make_data(seed: int) -> tuple[tuple, dict]:
    X, y = linear_gaussian_data(seed)
    return (X,), {"y": y}


def _logistic_make_data(seed: int) -> tuple[tuple, dict]:
    X, y = logistic_data(seed)
    return (X,), {"y": y}


# ---------------------------------------------------------------------------------------
# A two-component mixture with heavy-tailed (Cauchy) priors on its means
# ---------------------------------------------------------------------------------------


def heavy_tailed_mixture_data(seed: int = 0, n: int = 40) -> np.ndarray:
    """n draws of 0.6 N(−2, 1) + 0.4 N(3, 1) from ``seed``."""
    rng = np.random.default_rng(seed)
    first = rng.uniform(size=n) < 0.6
    return np.where(first, -2.0, 3.0) + rng.standard_normal(n)


def heavy_tailed_mixture(y, weight: float = 0.6, prior_scale: float = 5.0) -> None:
    """μ_1, μ_2 ~ Cauchy(0, s) i.i.d.; y_i ~ w N(μ_1, 1) + (1 − w) N(μ_2, 1).

    A user's mixture as it is usually written: heavy-tailed priors on the locations,
    known weight and scale. The prior is the annealing reference, so particles start
    as far out as the Cauchy tails reach, and the posterior has a second, much smaller
    mode with the labels swapped. Exact log Z: :func:`heavy_tailed_mixture_log_z`.
    """
    mu = numpyro.sample("mu", dist.Cauchy(0.0, prior_scale).expand([2]).to_event(1))
    mix = dist.MixtureSameFamily(dist.Categorical(probs=jnp.array([weight, 1.0 - weight])),
                                 dist.Normal(mu, 1.0))
    with numpyro.plate("data", len(y)):
        numpyro.sample("y", mix, obs=y)


def heavy_tailed_mixture_log_z(y, weight: float = 0.6, prior_scale: float = 5.0,
                               half_width: float = 20.0, spacing: float = 0.02) -> float:
    """log Z of :func:`heavy_tailed_mixture` by the trapezoid rule on a float64 grid over
    [−20, 20]² (h = 0.02, ten points per posterior standard deviation; halving h changes
    log Z by < 1e-9). Mass outside the box: where one μ leaves it the other component
    must explain all the data, a likelihood ratio below e^−100 for n = 40."""
    y = _check_y(y, "heavy_tailed_mixture_log_z")
    return _mixture_grid_log_z(y.tobytes(), float(weight), float(prior_scale),
                               float(half_width), float(spacing))


@functools.lru_cache(maxsize=8)
def _mixture_grid_log_z(y_bytes, weight, prior_scale, half_width, spacing) -> float:
    """The grid sum of :func:`heavy_tailed_mixture_log_z`, once per data set (seconds)."""
    y = np.frombuffer(y_bytes, dtype=np.float64)
    grid = np.arange(-half_width, half_width + spacing / 2, spacing)
    log_prior = np.log(prior_scale / np.pi) - np.log(prior_scale**2 + grid**2)
    log_n = -0.5 * (y[None, :] - grid[:, None]) ** 2 - 0.5 * np.log(2 * np.pi)  # (G, n)
    a = np.log(weight) + log_n  # component 1 at μ_1 = grid[i]
    b = np.log1p(-weight) + log_n  # component 2 at μ_2 = grid[j]
    rows = np.empty((grid.size, grid.size))
    for i in range(grid.size):  # log p(y | μ_1 = grid[i], μ_2 = grid[:])
        rows[i] = np.logaddexp(a[i][None, :], b).sum(axis=1)
    log_f = rows + log_prior[:, None] + log_prior[None, :]
    top = log_f.max()
    w = np.ones(grid.size)
    w[0] = w[-1] = 0.5
    return float(top + np.log(w @ np.exp(log_f - top) @ w) + 2 * np.log(spacing))


heavy_tailed_mixture.exact_log_z = heavy_tailed_mixture_log_z


def _heavy_tailed_mixture_make_data(seed: int) -> tuple[tuple, dict]:
    return (heavy_tailed_mixture_data(seed),), {}


# ---------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------

register(
    ZooEntry(
        name="eight_schools_centered",
        description="Eight schools, centred hierarchical normal model (funnel geometry).",
        family="bayesian",
        model=eight_schools_centered,
        make_data=eight_schools_data,
    )
)
register(
    ZooEntry(
        name="eight_schools_noncentered",
        description="Eight schools, non-centred parameterisation (theta = mu + tau·theta_tilde).",
        family="bayesian",
        model=eight_schools_noncentered,
        make_data=eight_schools_data,
    )
)
register(
    ZooEntry(
        name="logistic_regression",
        description="Bayesian logistic regression on synthetic data (n=200, d=5, from the seed).",
        family="bayesian",
        model=logistic_regression,
        make_data=_logistic_make_data,
    )
)
register(
    ZooEntry(
        name="linear_gaussian",
        description="Linear-Gaussian regression (n=20, d=3); posterior and log Z in closed form.",
        family="bayesian",
        model=linear_gaussian,
        make_data=_linear_gaussian_make_data,
        exact_log_z=linear_gaussian_log_z,
        exact_posterior=linear_gaussian_posterior,
    )
)
register(
    ZooEntry(
        name="heavy_tailed_mixture",
        description="Two-component 1-d mixture (n=40) with Cauchy(0, 5) priors on the means; "
                    "log Z by quadrature.",
        family="bayesian",
        model=heavy_tailed_mixture,
        make_data=_heavy_tailed_mixture_make_data,
        exact_log_z=heavy_tailed_mixture_log_z,
    )
)
