"""Latent-variable models fitted by expectation–maximisation: mixtures, factor models, HMMs.

Every model is a plain numpyro program whose unknowns are ``numpyro.param`` sites; the
latent variables are ordinary sample sites. Closed-form pieces that an EM engine uses are
attached to the model function as attributes:

* discrete latents (:func:`gaussian_mixture`, :func:`gaussian_hmm`): the E-step is numpyro's
  exact enumeration; ``model.m_step(marginals, *args, **kwargs)`` maps the posterior
  marginals of every sample site (laid out as numpyro's enumeration lays out that site's
  ``log_prob``) to the maximising parameters;
* linear-Gaussian latents (:func:`ppca`, :func:`factor_analysis`): the posterior of ``z``
  is Gaussian, so ``gaussian_posterior``, ``expected_log_joint``, ``posterior_entropy``,
  ``m_step`` and the marginal ``log_likelihood`` are all closed forms.

Sources: Bishop, *Pattern Recognition and Machine Learning* (2006), ch. 9 and 12 (PRML);
Tipping & Bishop, *Probabilistic principal component analysis*, JRSS B 61 (1999);
Rubin & Thayer, *EM algorithms for ML factor analysis*, Psychometrika 47 (1982);
Ghahramani & Hinton, *The EM algorithm for mixtures of factor analyzers*, TR CRG-TR-96-1
(1996); Rabiner, *A tutorial on hidden Markov models*, Proc. IEEE 77 (1989).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.control_flow import scan
from numpyro.distributions import constraints

__all__ = [
    "gaussian_mixture", "simulate_gaussian_mixture", "ppca", "ppca_max_log_likelihood",
    "simulate_ppca", "factor_analysis", "simulate_factor_analysis", "gaussian_hmm",
    "simulate_gaussian_hmm",
]


def _spread_rows(x, k):
    """``k`` rows of ``x`` evenly spaced through it: a deterministic, symmetry-breaking init."""
    return jnp.asarray(x)[np.linspace(0, x.shape[0] - 1, k).astype(int)]


def _random_scale_tril(rng, k, d):
    """``k`` lower-triangular factors with diagonal in [0.5, 1.5] and small off-diagonal."""
    diag = rng.uniform(0.5, 1.5, size=(k, d))
    low = np.tril(0.3 * rng.normal(size=(k, d, d)), -1)
    return low + diag[..., None] * np.eye(d)


# ---------------------------------------------------------------------------------------
# Gaussian mixture (PRML §9.2)
# ---------------------------------------------------------------------------------------


def gaussian_mixture(x, num_components: int = 3) -> None:
    """Full-covariance Gaussian mixture: z_n ~ Cat(weights), x_n | z_n ~ N(means_z, Σ_z).

    Params: ``weights`` (K,) on the simplex, ``means`` (K, d) unconstrained, ``scale_tril``
    (K, d, d) lower Cholesky factors of Σ_k. The default means are K data points spread
    through ``x`` (identical means would be a fixed point of EM); pass your own init.
    """
    n, d = x.shape
    k = num_components
    weights = numpyro.param("weights", jnp.ones(k) / k, constraint=constraints.simplex)
    means = numpyro.param("means", _spread_rows(x, k))
    scale_tril = numpyro.param(
        "scale_tril", jnp.broadcast_to(jnp.eye(d), (k, d, d)),
        constraint=constraints.lower_cholesky,
    )
    with numpyro.plate("data", n):
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("x", dist.MultivariateNormal(means[z], scale_tril=scale_tril[z]), obs=x)


def _gmm_m_step(marginals, x, num_components: int = 3, reg_covar: float = 0.0) -> dict:
    """Closed-form M-step of the mixture (PRML eqs. 9.24–9.26).

    Parameters
    ----------
    marginals
        ``{"z": r, ...}`` with ``r`` the responsibilities, shape (K, N) (numpyro's layout
        for the enumerated ``z`` inside the ``data`` plate).
    x
        Data, (N, d).
    num_components
        K.
    reg_covar
        Added to the diagonal of every covariance. As in scikit-learn's
        ``GaussianMixture`` (full covariances), N_k gets 10·eps added, the weights are
        N_k / Σ N_k, and the same ``reg_covar`` gives the same update.

    Returns
    -------
    dict
        ``weights`` (K,), ``means`` (K, d), ``scale_tril`` (K, d, d).
    """
    x = jnp.asarray(x)
    n, d = x.shape
    r = jnp.reshape(marginals["z"], (num_components, n))
    nk = r.sum(1) + 10 * jnp.finfo(r.dtype).eps
    means = r @ x / nk[:, None]
    diff = x[None] - means[:, None]  # (K, N, d)
    cov = jnp.einsum("kn,kni,knj->kij", r, diff, diff) / nk[:, None, None]
    cov = cov + reg_covar * jnp.eye(d)
    return {"weights": nk / nk.sum(), "means": means, "scale_tril": jnp.linalg.cholesky(cov)}


gaussian_mixture.m_step = _gmm_m_step


def simulate_gaussian_mixture(seed: int, num_points: int, dim: int, num_components: int,
                              separation: float = 4.0) -> tuple[np.ndarray, dict]:
    """Draw ``num_points`` points from a random K-component mixture.

    Means are N(0, separation²·I); scale factors have unit-order diagonal; weights are
    Dirichlet(5, …, 5). Returns ``(x, params)`` with ``params`` keyed like the model's.
    """
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(num_components, 5.0))
    means = separation * rng.normal(size=(num_components, dim))
    tril = _random_scale_tril(rng, num_components, dim)
    z = rng.choice(num_components, size=num_points, p=weights)
    x = means[z] + np.einsum("nij,nj->ni", tril[z], rng.normal(size=(num_points, dim)))
    return x, {"weights": weights, "means": means, "scale_tril": tril}


# ---------------------------------------------------------------------------------------
# Linear-Gaussian latent models: PPCA and factor analysis (PRML ch. 12)
# x_n = W z_n + μ + ε_n, z_n ~ N(0, I_q), ε_n ~ N(0, Ψ); Ψ = σ² I for PPCA.
# ---------------------------------------------------------------------------------------


def _linear_gaussian(x, latent_dim, noise_variance) -> None:
    n, d = x.shape
    loading = numpyro.param("loading", jnp.eye(d, latent_dim))
    mean = numpyro.param("mean", jnp.mean(x, 0))
    with numpyro.plate("data", n):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([latent_dim]).to_event(1))
        loc = z @ loading.T + mean
        numpyro.sample("x", dist.Normal(loc, jnp.sqrt(noise_variance)).to_event(1), obs=x)


def ppca(x, latent_dim: int = 2) -> None:
    """Probabilistic PCA (Tipping & Bishop 1999; PRML §12.2).

    Params: ``loading`` W (d, q), ``mean`` μ (d,), ``noise_variance`` σ² > 0 (scalar,
    ``constraints.positive``). Latent ``z`` (N, q) ~ N(0, I); ``x ~ N(W z + μ, σ² I)``.
    Defaults: W = I_{d×q}, μ = data mean, σ² = 1.
    """
    sigma2 = numpyro.param("noise_variance", jnp.ones(()), constraint=constraints.positive)
    _linear_gaussian(x, latent_dim, sigma2)


def factor_analysis(x, latent_dim: int = 2) -> None:
    """Factor analysis (Rubin & Thayer 1982; PRML §12.2.4): PPCA with diagonal noise.

    Params: ``loading`` W (d, q), ``mean`` μ (d,), ``noise_variance`` ψ (d,) > 0
    (``constraints.positive``). Latent ``z`` (N, q) ~ N(0, I); ``x ~ N(W z + μ, diag ψ)``.
    """
    psi = numpyro.param("noise_variance", jnp.ones(x.shape[1]), constraint=constraints.positive)
    _linear_gaussian(x, latent_dim, psi)


def _psi(params, d):
    return jnp.broadcast_to(params["noise_variance"], (d,))


def _lg_posterior(params, x, latent_dim: int = 2) -> dict:
    """Exact posterior q(z_n) = N(mean_n, cov) given x (PRML eqs. 12.42, 12.66).

    With G = (I + Wᵀ Ψ⁻¹ W)⁻¹: cov = G (the same for every point), mean_n = G Wᵀ Ψ⁻¹
    (x_n − μ). For PPCA this is Tipping & Bishop's M⁻¹Wᵀ(x − μ) and σ² M⁻¹, M = WᵀW + σ²I.
    Returns ``{"mean": (N, q), "cov": (q, q)}``.
    """
    x = jnp.asarray(x)
    w, mu = params["loading"], params["mean"]
    wt_pinv = w.T / _psi(params, x.shape[1])  # Wᵀ Ψ⁻¹
    cov = jnp.linalg.inv(jnp.eye(w.shape[1]) + wt_pinv @ w)
    cov = 0.5 * (cov + cov.T)
    return {"mean": (x - mu) @ (cov @ wt_pinv).T, "cov": cov}


def _second_moment(posterior, n):
    """Σ_n E[z_n z_nᵀ] for a shared (q, q) or per-point (N, q, q) covariance."""
    m, cov = posterior["mean"], jnp.asarray(posterior["cov"])
    cov_sum = cov.sum(0) if cov.ndim == 3 else n * cov
    return cov_sum + m.T @ m, cov_sum


def _lg_expected_log_joint(params, posterior, x, latent_dim: int = 2):
    """E_q[log p(x, z | θ)] summed over points, exact for Gaussian q (PRML eq. 12.53).

    E‖x − Wz − μ‖²_Ψ⁻¹ = ‖x − W m − μ‖²_Ψ⁻¹ + tr(Wᵀ Ψ⁻¹ W S) and E[zᵀz] = ‖m‖² + tr S.
    ``posterior["cov"]`` may be shared (q, q) or per point (N, q, q).
    """
    x = jnp.asarray(x)
    n, d = x.shape
    w, mu, psi = params["loading"], params["mean"], _psi(params, d)
    m = posterior["mean"]
    ezz, cov_sum = _second_moment(posterior, n)
    q = m.shape[1]
    resid = x - m @ w.T - mu
    log_prior = -0.5 * (n * q * jnp.log(2 * jnp.pi) + jnp.trace(ezz))
    quad = jnp.sum(resid**2 / psi) + jnp.trace((w.T / psi) @ w @ cov_sum)
    log_lik = -0.5 * (n * jnp.sum(jnp.log(2 * jnp.pi * psi)) + quad)
    return log_prior + log_lik


def _lg_entropy(posterior):
    """Entropy Σ_n ½ log det(2πe S_n) of the Gaussian posterior (shared or per-point S)."""
    m, cov = posterior["mean"], jnp.asarray(posterior["cov"])
    q = m.shape[1]
    logdet = jnp.linalg.slogdet(cov)[1]
    total = logdet.sum() if cov.ndim == 3 else m.shape[0] * logdet
    return 0.5 * (total + m.shape[0] * q * (1.0 + jnp.log(2 * jnp.pi)))


def _lg_m_step_core(posterior, x):
    """Joint maximisation of E_q log p over (W, μ) and the residual second moments.

    Ghahramani & Hinton (1996, eqs. 15–16) augment z̃ = (z, 1), W̃ = (W, μ):
    W̃ = (Σ x E[z̃]ᵀ)(Σ E[z̃ z̃ᵀ])⁻¹ and Σ_n E[(x − W̃z̃)(x − W̃z̃)ᵀ] diag = diag(Σ x xᵀ − W̃ Σ
    E[z̃] xᵀ) at that W̃. Data are centred first for accuracy (the intercept absorbs it).
    When μ is already the data mean this is PRML eqs. 12.56 / 12.69.
    """
    x = jnp.asarray(x)
    n, d = x.shape
    xbar = x.mean(0)
    xc = x - xbar
    m = posterior["mean"]
    ezz, _ = _second_moment(posterior, n)
    q = m.shape[1]
    msum = m.sum(0)
    a = jnp.zeros((q + 1, q + 1)).at[:q, :q].set(ezz).at[:q, q].set(msum)
    a = a.at[q, :q].set(msum).at[q, q].set(n)
    b = jnp.concatenate([xc.T @ m, xc.sum(0)[:, None]], axis=1)  # Σ x E[z̃]ᵀ, (d, q+1)
    w_aug = jnp.linalg.solve(a, b.T).T
    resid2 = jnp.sum(xc**2, 0) - jnp.sum(w_aug * b, 1)  # diag(Σ x xᵀ − W̃ Σ E[z̃] xᵀ)
    return w_aug[:, :q], w_aug[:, q] + xbar, resid2 / n


def _ppca_m_step(posterior, x, latent_dim: int = 2) -> dict:
    """PPCA EM update (Tipping & Bishop 1999 eqs. 27–28; PRML eqs. 12.56–12.57).

    σ²_new = (1 / N d) Σ_n E‖x_n − W_new z_n − μ_new‖², the mean of FA's ψ update.
    """
    w, mu, psi = _lg_m_step_core(posterior, x)
    return {"loading": w, "mean": mu, "noise_variance": psi.mean()}


def _fa_m_step(posterior, x, latent_dim: int = 2) -> dict:
    """Factor-analysis EM update (Rubin & Thayer 1982; PRML eqs. 12.69–12.70)."""
    w, mu, psi = _lg_m_step_core(posterior, x)
    return {"loading": w, "mean": mu, "noise_variance": psi}


def _lg_log_likelihood(params, x, latent_dim: int = 2):
    """Σ_n log N(x_n; μ, W Wᵀ + Ψ), the marginal likelihood (PRML eq. 12.35)."""
    x = jnp.asarray(x)
    w = params["loading"]
    cov = w @ w.T + jnp.diag(_psi(params, x.shape[1]))
    return dist.MultivariateNormal(params["mean"], covariance_matrix=cov).log_prob(x).sum()


for _model, _m_step in ((ppca, _ppca_m_step), (factor_analysis, _fa_m_step)):
    _model.gaussian_posterior = _lg_posterior
    _model.expected_log_joint = _lg_expected_log_joint
    _model.posterior_entropy = _lg_entropy
    _model.m_step = _m_step
    _model.log_likelihood = _lg_log_likelihood


def ppca_max_log_likelihood(x, latent_dim: int) -> float:
    """The maximum of the PPCA log-likelihood, in closed form (Tipping & Bishop 1999 §3.2).

    With λ_1 ≥ … ≥ λ_d the eigenvalues of the sample covariance S (divisor N), σ²_ML is
    the mean of the d − q discarded ones, and L = −N/2 (d log 2π + Σ_{j≤q} log λ_j
    + (d − q) log σ²_ML + d).
    """
    x = np.asarray(x, dtype=float)
    n, d = x.shape
    lam = np.sort(np.linalg.eigvalsh(np.cov(x.T, bias=True)))[::-1]
    sigma2 = lam[latent_dim:].mean()
    logdet = np.log(lam[:latent_dim]).sum() + (d - latent_dim) * np.log(sigma2)
    return float(-0.5 * n * (d * np.log(2 * np.pi) + logdet + d))


def _simulate_linear_gaussian(rng, num_points, dim, latent_dim, psi):
    loading = rng.normal(size=(dim, latent_dim))
    mean = rng.normal(size=dim)
    z = rng.normal(size=(num_points, latent_dim))
    x = z @ loading.T + mean + np.sqrt(psi) * rng.normal(size=(num_points, dim))
    return x, {"loading": loading, "mean": mean, "noise_variance": psi}


def simulate_ppca(seed: int, num_points: int, dim: int, latent_dim: int,
                  noise_variance: float = 0.1) -> tuple[np.ndarray, dict]:
    """Draw from PPCA with W, μ standard normal; returns ``(x, params)``."""
    rng = np.random.default_rng(seed)
    return _simulate_linear_gaussian(rng, num_points, dim, latent_dim, float(noise_variance))


def simulate_factor_analysis(seed: int, num_points: int, dim: int, latent_dim: int,
                             noise_variance=None) -> tuple[np.ndarray, dict]:
    """Draw from factor analysis; ψ defaults to Uniform(0.05, 1) per dimension."""
    rng = np.random.default_rng(seed)
    psi = rng.uniform(0.05, 1.0, dim) if noise_variance is None else noise_variance
    psi = np.broadcast_to(np.asarray(psi, dtype=float), (dim,)).copy()
    return _simulate_linear_gaussian(rng, num_points, dim, latent_dim, psi)


# ---------------------------------------------------------------------------------------
# Gaussian hidden Markov model (Rabiner 1989; PRML §13.2)
# ---------------------------------------------------------------------------------------


def gaussian_hmm(y, num_states: int = 2) -> None:
    """HMM with full-covariance Gaussian emissions, written for numpyro's enumeration.

    z_0 ~ Cat(initial), z_t | z_{t−1} ~ Cat(transition[z_{t−1}]), y_t | z_t ~
    N(means_z, Σ_z). The first step (sites ``z0``, ``y0``) sits outside a
    :func:`numpyro.contrib.control_flow.scan` over ``y[1:]`` (sites ``z``, ``y``).

    Params: ``initial`` (K,) simplex, ``transition`` (K, K) with rows on the simplex
    (``transition[i, j] = p(z_t = j | z_{t−1} = i)``), ``means`` (K, d), ``scale_tril``
    (K, d, d) lower Cholesky. ``y`` is (T, d) (a (T,) series is read as d = 1).
    """
    y = jnp.reshape(jnp.asarray(y), (jnp.shape(y)[0], -1))
    d = y.shape[1]
    k = num_states
    initial = numpyro.param("initial", jnp.ones(k) / k, constraint=constraints.simplex)
    transition = numpyro.param("transition", jnp.full((k, k), 1.0 / k),
                               constraint=constraints.simplex)
    means = numpyro.param("means", _spread_rows(y, k))
    scale_tril = numpyro.param("scale_tril", jnp.broadcast_to(jnp.eye(d), (k, d, d)),
                               constraint=constraints.lower_cholesky)

    def emit(name, z, obs):
        numpyro.sample(name, dist.MultivariateNormal(means[z], scale_tril=scale_tril[z]),
                       obs=obs)

    z0 = numpyro.sample("z0", dist.Categorical(initial))
    emit("y0", z0, y[0])

    def step(z_prev, y_t):
        z = numpyro.sample("z", dist.Categorical(transition[z_prev]))
        emit("y", z, y_t)
        return z, None

    if y.shape[0] > 1:
        scan(step, z0, y[1:])


def _hmm_m_step(marginals, y, num_states: int = 2, min_covar: float = 0.0,
                covars_prior: float = 0.0) -> dict:
    """Baum–Welch re-estimation (Rabiner 1989 eqs. 40a–c, 53; PRML eqs. 13.18–13.21).

    Parameters
    ----------
    marginals
        Posterior marginals in numpyro's enumeration layout. Unary γ_t(k) come from the
        emission sites: ``y0`` (K,) for t = 0, ``_PREV_y`` (K, 1) for t = 1 and ``y``
        (T − 2, K, 1, 1) for t ≥ 2. Pairwise ξ_t(new, prev) = p(z_t = new, z_{t−1} = prev)
        come from ``_PREV_z`` (K, K) for t = 1 and ``z`` (T − 2, K, K, 1) for t ≥ 2.
    y
        Observations (T, d).
    num_states
        K.
    min_covar
        Added to the diagonal of every covariance after the update (0 by default).
        hmmlearn uses its own ``min_covar`` only to initialise covariances, never in the
        M-step, so 0 reproduces hmmlearn.
    covars_prior
        hmmlearn's ``covars_prior`` for full covariances: a scalar added to every entry
        of the scatter matrix before dividing by N_k (its default is 1e-2; give the same
        value to reproduce its update). Dirichlet and mean priors are taken as flat,
        which is hmmlearn's default.

    Returns
    -------
    dict
        ``initial``, ``transition``, ``means``, ``scale_tril``.
    """
    y = jnp.reshape(jnp.asarray(y), (jnp.shape(y)[0], -1))
    t_len, d = y.shape
    k = num_states
    gammas = [jnp.reshape(marginals["y0"], (1, k))]
    xis = []
    if t_len > 1:
        gammas.append(jnp.reshape(marginals["_PREV_y"], (1, k)))
        xis.append(jnp.reshape(marginals["_PREV_z"], (1, k, k)))
    if t_len > 2:
        gammas.append(jnp.reshape(marginals["y"], (t_len - 2, k)))
        xis.append(jnp.reshape(marginals["z"], (t_len - 2, k, k)))
    gamma = jnp.concatenate(gammas)  # (T, K)
    initial = gamma[0] / gamma[0].sum()
    if xis:
        counts = jnp.concatenate(xis).sum(0).T  # [prev, new]
        rows = counts.sum(1, keepdims=True)
        transition = counts / jnp.where(rows == 0, 1.0, rows)
    else:
        transition = jnp.full((k, k), 1.0 / k)
    nk = gamma.sum(0)
    means = gamma.T @ y / nk[:, None]
    diff = y[None] - means[:, None]  # (K, T, d)
    scatter = jnp.einsum("tk,kti,ktj->kij", gamma, diff, diff)
    cov = (covars_prior + scatter) / nk[:, None, None] + min_covar * jnp.eye(d)
    return {"initial": initial, "transition": transition, "means": means,
            "scale_tril": jnp.linalg.cholesky(cov)}


gaussian_hmm.m_step = _hmm_m_step


def simulate_gaussian_hmm(seed: int, num_steps: int, num_states: int,
                          dim: int) -> tuple[np.ndarray, dict]:
    """Draw a (T, d) series from a sticky Gaussian HMM (self-transition ≈ 0.9).

    Returns ``(y, params)`` with ``params`` keyed like :func:`gaussian_hmm`'s plus
    ``"states"`` (T,), the hidden path.
    """
    rng = np.random.default_rng(seed)
    k = num_states
    transition = 0.9 * np.eye(k) + 0.1 * rng.dirichlet(np.ones(k), size=k)
    initial = rng.dirichlet(np.full(k, 5.0))
    means = 3.0 * rng.normal(size=(k, dim))
    tril = _random_scale_tril(rng, k, dim)
    states = np.empty(num_steps, dtype=int)
    states[0] = rng.choice(k, p=initial)
    for t in range(1, num_steps):
        states[t] = rng.choice(k, p=transition[states[t - 1]])
    noise = np.einsum("tij,tj->ti", tril[states], rng.normal(size=(num_steps, dim)))
    params = {"initial": initial, "transition": transition, "means": means,
              "scale_tril": tril, "states": states}
    return means[states] + noise, params
