"""Inference on the lens models from the spine: NUTS and SVI by name, no special cases.

A high-S/N mock of the parametric model (SIE + shear, Sérsic source) on a 40×40 grid,
fitted under the model's own default priors (a LogNormal Einstein radius, Normal
centres and shear, truncated-Normal ellipticities, broad source priors).

A high-S/N lens likelihood is multimodal on the scale of those priors, so where the
engines start matters. From numpyro's default start, Uniform(−2, 2) in unconstrained
space (θ_E anywhere in 0.6″–1.6″, centres within ±0.1″), SVI finds wrong modes. We
start the way lens modelling does — a rough guess, then a fit, then sampling:

1. ``first_guess`` reads θ_E and the lens centre off the image (the flux-weighted mean
   radius and centroid of the pixels brighter than 5σ_bkg); every other site starts at
   its prior median (``init_strategy="median"``: no shear, a round lens, the source at
   the centre). No truth goes in; the guess is tens of posterior sds off (asserted).
2. SVI (full-rank normal) from that guess, the guide's scale starting at 0.01 rather than
   numpyro's 0.1 (still ~20 posterior sds), so that the first noisy steps stay near the
   guess.
3. NUTS from the SVI fit's medians (``init_values``), each chain jittered by ±0.02 in
   unconstrained space (±2% in θ_E, ~40 posterior sds) so that the two chains start
   apart and R-hat can see whether they forget their start.

Step 2 is there because NUTS straight from the rough guess is seed-dependent: measured
here, seed 1 found the mode, seed 2 left one chain in a local mode (e1 ≈ −0.09,
e2 ≈ 0.2, R-hat 1.85). The scale in step 2 matters as much: started at 0.1, SVI left
for a wrong mode (θ_E ≈ 2.4, or −ELBO 800 nats worse) with seeds 1 and 4 of 1–4 (seed 1,
the test's, had passed only on CPUs without AVX-512, whose rounding differs); started at
0.01, seeds 1, 4, 5 and 6 all recovered the truth (every |z| < 1.6, SVI within 0.7 NUTS
sd of NUTS).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helmholtz
from helmholtz.models.lensing import (
    GaussianProcessSource,
    ImageConfig,
    first_guess,
    invert_source,
    lens_kwargs,
    lens_site_names,
    noise_sigma,
    parametric_lens_model,
    pixelated_source_model,
    prior_predictive,
    simulate,
    source_kwargs,
    whitened_source_operator,
)

CONFIG = ImageConfig(num_pix=40, pixel_scale=0.08, psf_fwhm=0.16, background_rms=0.005)
TRUTH = dict(
    lens_theta_E=1.0, lens_e1=0.1, lens_e2=-0.05, lens_center_x=0.02, lens_center_y=-0.01,
    shear_gamma1=0.03, shear_gamma2=0.01, source_amp=20.0, source_R_sersic=0.2,
    source_n_sersic=1.5, source_e1=0.1, source_e2=0.05, source_center_x=0.05,
    source_center_y=0.03,
)
LENS_SITES = lens_site_names()


@pytest.fixture(scope="module")
def mock():
    data, sigma, _ = simulate(jax.random.key(0), CONFIG, lens_kwargs(TRUTH),
                              source_kwargs(TRUTH))
    target = helmholtz.Target.from_model(parametric_lens_model, CONFIG, data, sigma=sigma)
    return target, first_guess(data, CONFIG)


@pytest.fixture(scope="module")
def svi(mock):
    # the posterior is ~100× narrower than the guide's initial scale: many small steps
    target, guess = mock
    return helmholtz.infer(target, "svi", seed=1, guide="mvn", num_steps=10000,
                           learning_rate=0.02, num_samples=500, num_elbo_samples=500,
                           init_values=guess, init_strategy="median", init_scale=0.01)


@pytest.fixture(scope="module")
def nuts(mock, svi):
    target, _ = mock
    start = {s.name: float(np.median(svi.samples[s.name])) for s in target.sites}
    return helmholtz.infer(target, "nuts", seed=1, num_warmup=300, num_samples=300,
                           num_chains=2, init_values=start, init_jitter=0.02)


def test_nuts_recovers_every_lens_parameter(mock, nuts):
    _, guess = mock
    assert nuts.num_divergent == 0
    assert nuts.diagnostics()["max_rhat"] < 1.1
    # the first guess is far from the answer on the posterior's scale
    off = {k: abs(v - TRUTH[k]) / nuts.samples[k].std() for k, v in guess.items()}
    print("first guess − truth in posterior sd:", {k: round(float(v), 1) for k, v in off.items()})
    assert all(v > 10 for v in off.values()), off
    z = {}
    for name in LENS_SITES:
        draws = nuts.samples[name]
        z[name] = (draws.mean() - TRUTH[name]) / draws.std()
    print("NUTS z-scores (posterior mean − truth) / sd:",
          {k: round(float(v), 2) for k, v in z.items()})
    assert all(abs(v) < 3 for v in z.values()), z
    # and the source, for good measure
    for name in ("source_amp", "source_R_sersic", "source_n_sersic"):
        draws = nuts.samples[name]
        assert abs(draws.mean() - TRUTH[name]) < 3 * draws.std()


def test_svi_agrees_with_nuts(svi, nuts):
    assert svi.free_energy.kind == "lower bound" and np.isfinite(svi.free_energy.value)
    diff = {}
    for name in LENS_SITES:
        ref = nuts.samples[name]
        diff[name] = (svi.samples[name].mean() - ref.mean()) / ref.std()
    print("SVI − NUTS means in NUTS sd:", {k: round(float(v), 2) for k, v in diff.items()})
    assert all(abs(v) < 4 for v in diff.values()), diff


def test_nuts_and_svi_on_the_pixelated_source_model_match_the_exact_posterior():
    """Lens known, σ fixed: the model is linear-Gaussian in ξ, its posterior known exactly,
    N(Σ Bᵀ Σ_d⁻¹ d, Σ) with Σ = (Bᵀ Σ_d⁻¹ B + I)⁻¹ (``invert_source`` gives the mean)."""
    config = ImageConfig(num_pix=24, pixel_scale=0.1, psf_fwhm=0.2, background_rms=0.02)
    source = GaussianProcessSource(num_pix=8, pixel_scale=0.15, amplitude=10.0,
                                   length_scale=0.25)
    lens = {k: TRUTH[k] for k in LENS_SITES}
    draw = prior_predictive(jax.random.key(4), pixelated_source_model, config, source=source,
                            lens=lens)
    data = draw["obs"][0]
    sigma = noise_sigma(config, draw["model_image"][0])
    kw = lens_kwargs(lens)
    exact = invert_source(data, sigma, config, kw, source)
    op = whitened_source_operator(config, kw, source)
    b = jax.vmap(op)(jnp.eye(source.size).reshape(source.size, *source.shape))
    b = np.asarray(b.reshape(source.size, -1), np.float64)
    w = 1.0 / np.asarray(sigma, np.float64).ravel() ** 2
    sd = np.sqrt(np.diag(np.linalg.inv((b * w) @ b.T + np.eye(source.size))))
    mean = np.asarray(exact.xi).ravel()

    target = helmholtz.Target.from_model(pixelated_source_model, config, data, source=source,
                                         lens=lens, sigma=sigma)
    nuts = helmholtz.infer(target, "nuts", seed=0, num_warmup=300, num_samples=300,
                           num_chains=2)
    # the posterior covariance has condition number ~5e3: the full-rank guide needs many
    # steps; after 20000 its means are right, its marginal sds still 0.5–1.0× the exact
    svi = helmholtz.infer(target, "svi", seed=0, guide="mvn", num_steps=20000,
                          learning_rate=0.01, num_samples=4000)
    for result, tol in ((nuts, 0.35), (svi, 0.5)):
        xi = result.samples["source_xi"].reshape(-1, source.size)
        err = np.abs(xi.mean(0) - mean) / sd
        ratio = xi.std(0) / sd
        print(f"{result.engine}: max |mean − exact| / sd = {err.max():.3f}, "
              f"sd / exact sd in [{ratio.min():.2f}, {ratio.max():.2f}]")
        assert err.max() < tol
    ratio = nuts.samples["source_xi"].reshape(-1, source.size).std(0) / sd
    assert 0.75 < ratio.min() and ratio.max() < 1.25
