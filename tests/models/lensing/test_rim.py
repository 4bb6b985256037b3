"""Training sources, the recurrent inference machine, and the ``rim`` engine."""

import dataclasses

import jax
import numpy as np
import pytest

import helmholtz
from helmholtz.errors import ModelError, OptionError
from helmholtz.models.lensing import (
    GaussianProcessSource,
    ImageConfig,
    invert_source,
    lens_kwargs,
    pixelated_source_model,
)
from helmholtz.models.lensing.rim import RIM, RIMConfig, simulate_mocks, source_mse, train
from helmholtz.models.lensing.training_sources import random_source, random_sources

CONFIG = ImageConfig(num_pix=32, pixel_scale=0.1, psf_fwhm=0.2)
# GP prior of the baseline: amplitude and length scale that minimise the MAP's MSE on
# 64 mocks of this source distribution (tune_gp_prior over amplitude 1–15, ℓ 0.05–0.25;
# the tutorial repeats the search), i.e. the best linear inversion we know to run.
SOURCE = GaussianProcessSource(num_pix=16, pixel_scale=0.1, amplitude=2.0, length_scale=0.1)
HYPER = RIMConfig(image=CONFIG, source=SOURCE, hidden_channels=16, num_steps=8)


def test_training_sources_are_positive_varied_and_reproducible():
    sources = random_sources(jax.random.key(0), SOURCE, 64, peak_low=10.0, peak_high=40.0)
    assert sources.shape == (64, 16, 16)
    assert np.all(np.asarray(sources) >= 0)
    peaks = np.asarray(sources.max(axis=(1, 2)))
    assert np.all((peaks >= 10.0 - 1e-3) & (peaks <= 40.0 + 1e-3))
    # varied: peak positions and light fractions differ from draw to draw
    argmax = np.asarray(sources.reshape(64, -1).argmax(axis=1))
    assert len(np.unique(argmax)) > 10
    fill = np.asarray((sources > 0.1 * sources.max(axis=(1, 2), keepdims=True)).mean(axis=(1, 2)))
    assert fill.std() > 0.3 * fill.mean()  # compact and extended sources alike
    np.testing.assert_array_equal(random_source(jax.random.key(3), SOURCE),
                                  random_source(jax.random.key(3), SOURCE))


@pytest.fixture(scope="module")
def trained():
    """A small RIM trained on 256 mocks (~1 min on 2 CPU cores), and 64 held-out mocks."""
    mocks = simulate_mocks(jax.random.key(1), HYPER, 320)
    held_out = jax.tree.map(lambda a: a[256:], mocks)
    mocks = jax.tree.map(lambda a: a[:256], mocks)
    rim = RIM(HYPER, key=jax.random.key(0))
    rim, losses = train(rim, mocks, jax.random.key(3), num_steps=150, batch_size=8,
                        learning_rate=1e-2)
    return rim, held_out, losses


def _reconstruct_all(rim, mocks):
    fn = jax.jit(jax.vmap(lambda d, s, lens, x0: rim.reconstruct(d, s, lens_kwargs(lens), x0)))
    return fn(mocks.data, mocks.sigma, mocks.lens, mocks.init)


def test_untrained_rim_starts_at_the_gp_map():
    mocks = simulate_mocks(jax.random.key(7), HYPER, 2)
    kw = mocks.kwargs_lens(0)
    rim = RIM(HYPER, key=jax.random.key(0))
    dense = jax.jit(lambda d, s: invert_source(d, s, CONFIG, kw, SOURCE).source)
    map_source = dense(mocks.data[0], mocks.sigma[0])
    # the mocks' starting point is the GP MAP (by conjugate gradients)
    np.testing.assert_allclose(mocks.init[0], map_source, atol=2e-3 * np.abs(map_source).max())
    out = jax.jit(lambda d, s: rim.reconstruct(d, s, kw))(mocks.data[0], mocks.sigma[0])
    # the output layer starts at zero: an untrained RIM returns the non-negative part
    np.testing.assert_allclose(out, np.maximum(mocks.init[0], 0), rtol=1e-3, atol=1e-3)


def test_rim_beats_the_gp_map_on_held_out_mocks(trained):
    rim, held_out, losses = trained
    assert np.all(np.isfinite(losses))
    assert losses[-20:].mean() < losses[:20].mean()
    mse_rim = np.asarray(source_mse(_reconstruct_all(rim, held_out), held_out.source))
    mse_map = np.asarray(source_mse(held_out.init, held_out.source))
    mse_clipped = np.asarray(source_mse(np.maximum(held_out.init, 0), held_out.source))
    print(f"held-out MSE: RIM {mse_rim.mean():.4f}, GP MAP {mse_map.mean():.4f}, "
          f"GP MAP clipped at 0 {mse_clipped.mean():.4f}; "
          f"RIM better than the MAP on {np.mean(mse_rim < mse_map):.0%} of mocks")
    # paired comparisons: the mean improvement is > 3 standard errors, over the GP MAP
    # and over its non-negative part (what the network learned beyond positivity)
    for baseline in (mse_map, mse_clipped):
        diff = baseline - mse_rim
        assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(diff.size)


def test_save_load_and_rim_engine(trained, tmp_path):
    rim, held_out, _ = trained
    path = rim.save(tmp_path / "rim.eqx")
    loaded = RIM.load(path)
    assert loaded.hyper == rim.hyper
    kw = held_out.kwargs_lens(0)
    data, sigma = held_out.data[0], held_out.sigma[0]
    expected = jax.jit(lambda d, s: rim.reconstruct(d, s, kw))(data, sigma)
    np.testing.assert_array_equal(
        jax.jit(lambda d, s: loaded.reconstruct(d, s, kw))(data, sigma), expected)

    lens = {k: v[0] for k, v in held_out.lens.items()}
    target = helmholtz.Target.from_model(pixelated_source_model, CONFIG, data, source=SOURCE,
                                         lens=lens, sigma=sigma)
    result = helmholtz.infer(target, "rim", weights=str(path))
    assert result.engine == "rim" and result.free_energy.kind == "none"
    assert result.samples["source"].shape == (1, 1, 16, 16)
    assert result.samples["model_image"].shape == (1, 1, 32, 32)
    np.testing.assert_allclose(result.samples["source"][0, 0], expected, atol=1e-3 * 40)
    assert np.isfinite(result.log_likelihood["obs"]).all()

    with pytest.raises(OptionError, match="weights"):
        helmholtz.infer(target, "rim")
    joint = helmholtz.Target.from_model(pixelated_source_model, CONFIG, data, source=SOURCE,
                                        sigma=sigma)
    with pytest.raises(ModelError, match="lens must be known"):
        helmholtz.infer(joint, "rim", weights=str(path))
    other = helmholtz.Target.from_model(
        pixelated_source_model, dataclasses.replace(CONFIG, psf_fwhm=0.3), data,
        source=SOURCE, lens=lens, sigma=sigma)
    with pytest.raises(OptionError, match="trained for"):
        helmholtz.infer(other, "rim", weights=str(path))


def test_rim_config_round_trips_through_json():
    hyper = dataclasses.replace(
        HYPER, image=dataclasses.replace(CONFIG, psf_kernel=((0.0, 0.1, 0.0), (0.1, 0.6, 0.1),
                                                             (0.0, 0.1, 0.0))), init="zero")
    assert RIMConfig.from_json(hyper.to_json()) == hyper
    with pytest.raises(ValueError, match="init"):
        RIMConfig(image=CONFIG, source=SOURCE, init="gp")
