"""numpyro lens models, the GP source prior and the linear source inversion."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density

from helmholtz.models.lensing import (
    GaussianProcessSource,
    ImageConfig,
    invert_source,
    lens_kwargs,
    matern_covariance,
    noise_sigma,
    parametric_lens_model,
    pixelated_source_model,
    prior_predictive,
    render,
    source_kwargs,
    whitened_source_operator,
)

CONFIG = ImageConfig(
    num_pix=32, pixel_scale=0.1, psf_fwhm=0.2, background_rms=0.01, exposure_time=1000.0
)
SOURCE = GaussianProcessSource(
    num_pix=16, pixel_scale=0.1, amplitude=10.0, length_scale=0.2, nu=1.5
)
LENS_SITES = dict(
    lens_theta_E=1.0,
    lens_e1=0.1,
    lens_e2=-0.05,
    lens_center_x=0.02,
    lens_center_y=-0.01,
    shear_gamma1=0.03,
    shear_gamma2=0.01,
)


def test_parametric_model_prior_predictive_and_log_density():
    draws = jax.jit(
        lambda key: prior_predictive(key, parametric_lens_model, CONFIG, num_samples=2)
    )(jax.random.key(0))
    latent = {k: v[0] for k, v in draws.items() if k not in ("obs", "model_image")}
    assert set(latent) == {
        "lens_theta_E",
        "lens_e1",
        "lens_e2",
        "lens_center_x",
        "lens_center_y",
        "shear_gamma1",
        "shear_gamma2",
        "source_amp",
        "source_R_sersic",
        "source_n_sersic",
        "source_e1",
        "source_e2",
        "source_center_x",
        "source_center_y",
    }
    assert draws["obs"].shape == draws["model_image"].shape == (2, 32, 32)
    assert np.all(np.isfinite(draws["obs"]))
    model_image = jax.jit(lambda p: render(CONFIG, lens_kwargs(p), source_kwargs(p)))(latent)
    np.testing.assert_allclose(draws["model_image"][0], model_image, rtol=1e-5, atol=1e-7)

    data = draws["obs"][0]
    value_and_grad = jax.jit(
        jax.value_and_grad(lambda p: log_density(parametric_lens_model, (CONFIG, data), {}, p)[0])
    )
    log_joint, grads = value_and_grad(latent)
    sigma = noise_sigma(CONFIG, model_image)
    log_lik = dist.Normal(model_image, sigma).log_prob(data).sum()
    from helmholtz.models.lensing import default_priors

    priors = default_priors()
    log_prior = sum(priors[k].log_prob(v) for k, v in latent.items())
    np.testing.assert_allclose(log_joint, log_lik + log_prior, rtol=1e-5)
    assert all(np.isfinite(g) for g in grads.values())


def _sites(model, *args, **kwargs):
    """The model's trace, by abstract evaluation only (nothing is compiled or run)."""
    captured = {}

    def run(key):
        captured.update(handlers.trace(handlers.seed(model, key)).get_trace(*args, **kwargs))

    jax.eval_shape(run, jax.random.key(0))
    return captured


def test_priors_can_be_replaced_and_bad_options_raise():
    theta_prior = dist.Delta(1.3)
    sites = _sites(
        parametric_lens_model, CONFIG, priors={"lens_theta_E": theta_prior}, mass_profile="EPL"
    )
    assert sites["lens_theta_E"]["fn"] is theta_prior
    gamma_prior = sites["lens_gamma"]["fn"]  # default TruncatedNormal(2, 0.1, [1.5, 2.5])
    assert (float(gamma_prior.low), float(gamma_prior.high)) == (1.5, 2.5)
    assert sites["obs"]["value"].shape == (32, 32)
    with pytest.raises(ValueError, match="unknown prior"):
        _sites(parametric_lens_model, CONFIG, priors={"theta_E": dist.Delta(1.0)})
    with pytest.raises(ValueError, match="mass_profile"):
        _sites(parametric_lens_model, CONFIG, mass_profile="NFW")


def test_gp_source_has_the_matern_covariance(x64):
    source = GaussianProcessSource(
        num_pix=8, pixel_scale=0.1, amplitude=2.0, length_scale=0.15, nu=1.5
    )
    x, y = source.coordinates()
    # periodic separations on the 0.8" torus
    dx = np.abs(x.ravel()[:, None] - x.ravel()[None, :])
    dy = np.abs(y.ravel()[:, None] - y.ravel()[None, :])
    dx, dy = np.minimum(dx, 0.8 - dx), np.minimum(dy, 0.8 - dy)
    expected = matern_covariance(np.hypot(dx, dy), 2.0, 0.15, 1.5)
    np.testing.assert_allclose(source.covariance(), expected, atol=1e-12)
    np.testing.assert_allclose(np.diag(source.covariance()), 4.0, rtol=1e-12)
    # the whitened map is linear and batched: s = A ξ with A Aᵀ = C
    xi = jax.random.normal(jax.random.key(2), (3, 8, 8), dtype=jnp.float64)
    a = np.asarray(jax.vmap(source.source_from_whitened)(jnp.eye(64).reshape(64, 8, 8))).reshape(
        64, 64
    )
    np.testing.assert_allclose(
        source.source_from_whitened(xi).reshape(3, 64),
        np.asarray(xi).reshape(3, 64) @ a,
        atol=1e-12,
    )
    for nu in (0.5, 2.5, math.inf):  # all spectra are valid (clipped ≥ 0)
        assert np.all(GaussianProcessSource(nu=nu).spectrum() >= 0)
    with pytest.raises(ValueError, match="nu"):
        GaussianProcessSource(nu=1.0)


def test_pixelated_source_model_known_and_joint_lens():
    operator = whitened_source_operator(CONFIG, lens_kwargs(LENS_SITES), SOURCE)

    @jax.jit
    def draw_and_expected(key):
        draws = prior_predictive(
            key, pixelated_source_model, CONFIG, source=SOURCE, lens=LENS_SITES
        )
        return draws, operator(draws["source_xi"][0])

    draws, expected = draw_and_expected(jax.random.key(3))
    assert set(draws) == {"source_xi", "source", "model_image", "obs"}
    np.testing.assert_allclose(
        draws["source"][0], SOURCE.source_from_whitened(draws["source_xi"][0]), atol=1e-5
    )
    np.testing.assert_allclose(draws["model_image"][0], expected, rtol=1e-5, atol=1e-6)

    joint = _sites(pixelated_source_model, CONFIG, source=SOURCE)
    assert {"lens_theta_E", "shear_gamma1", "source_xi", "source"} <= set(joint)
    assert joint["obs"]["value"].shape == (32, 32)
    assert joint["source"]["value"].shape == (16, 16)


def _mock(key, lens):
    """Data drawn from the linear-Gaussian model itself (lens known, σ map fixed)."""
    xi_key, noise_key = jax.random.split(key)
    xi = jax.random.normal(xi_key, SOURCE.shape, dtype=jnp.float64)
    clean = whitened_source_operator(CONFIG, lens, SOURCE)(xi)
    sigma = noise_sigma(CONFIG, clean)
    return clean + sigma * jax.random.normal(noise_key, clean.shape, dtype=jnp.float64), sigma


def test_linear_inversion_fits_to_noise_level_and_agrees_with_model(x64):
    lens = lens_kwargs(LENS_SITES)
    n = CONFIG.num_pix**2
    operator = whitened_source_operator(CONFIG, lens, SOURCE)

    @jax.jit  # one compilation for everything checked per seed
    def mock_and_invert(key):
        data, sigma = _mock(key, lens)
        dense = invert_source(data, sigma, CONFIG, lens, SOURCE)
        cg = invert_source(data, sigma, CONFIG, lens, SOURCE, method="cg", cg_tol=1e-10)
        # evidence = log N(d; 0, B Bᵀ + Σ), computed densely
        b = jax.vmap(operator)(jnp.eye(SOURCE.size).reshape(SOURCE.size, *SOURCE.shape))
        b = b.reshape(SOURCE.size, n)
        cov = b.T @ b + jnp.diag(sigma.ravel() ** 2)
        direct = jax.scipy.stats.multivariate_normal.logpdf(data.ravel(), jnp.zeros(n), cov)
        return data, sigma, dense, cg, direct

    for seed in range(3):
        data, sigma, dense, cg, direct = mock_and_invert(jax.random.key(10 + seed))
        # For data from the model E[χ²] = N − p_eff and Var[χ²] ≤ 2N, p_eff the number of
        # constrained source modes: the MAP fits to the noise, no better and no worse.
        assert 10 < float(dense.effective_dof) < SOURCE.size
        assert abs(float(dense.chi2) - (n - float(dense.effective_dof))) < 4 * np.sqrt(2 * n)
        assert abs(float(dense.chi2) / (n - float(dense.effective_dof)) - 1) < 4 * np.sqrt(2 / n)
        np.testing.assert_allclose(cg.xi, dense.xi, atol=1e-6)
        assert np.isnan(cg.log_evidence)
        np.testing.assert_allclose(dense.log_evidence, direct, rtol=1e-10)

    # the MAP is the mode of the numpyro model with the same σ map (gradient vanishes)
    @jax.jit
    @jax.grad
    def grad_log_joint(xi):
        return log_density(
            pixelated_source_model,
            (CONFIG, data),
            dict(source=SOURCE, lens=LENS_SITES, sigma=sigma),
            {"source_xi": xi},
        )[0]

    grad_map = grad_log_joint(dense.xi)
    grad_zero = grad_log_joint(jnp.zeros_like(dense.xi))
    assert float(jnp.abs(grad_map).max()) < 1e-8 * float(jnp.abs(grad_zero).max())
