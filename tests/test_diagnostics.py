"""Sample-quality metrics against closed forms: W2 between Gaussians, mode weights, ESS."""

import math

import numpy as np
import pytest

from helmholtz.diagnostics import energy_w2, kish_ess, mode_weights, modes_covered, sinkhorn_w2


def test_energy_w2_is_the_gaussian_closed_form():
    # W2(N(μ1, σ1²), N(μ2, σ2²)) = sqrt((μ1 − μ2)² + (σ1 − σ2)²) in one dimension
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, 200_000)
    b = rng.normal(1.0, 2.0, 200_000)
    assert energy_w2(a, b) == pytest.approx(math.sqrt(2.0), abs=0.02)
    # weights: the same law drawn with importance weights from a wider proposal
    c = rng.normal(0.0, 2.0, 400_000)
    w = np.exp(-0.5 * c**2 + 0.5 * (c / 2) ** 2)
    assert energy_w2(a, c, weights_b=w) < 0.03


def test_sinkhorn_w2_approaches_the_exact_distance_between_shifted_gaussians():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1500, 2))
    y = rng.normal(size=(1500, 2)) + np.array([3.0, 0.0])
    same = rng.normal(size=(1500, 2))
    # a shift of 3 between equal covariances: W2 = 3
    assert sinkhorn_w2(x, y) == pytest.approx(3.0, abs=0.15)
    assert sinkhorn_w2(x, same) < 0.3
    with pytest.raises(ValueError, match="samples"):
        sinkhorn_w2(x, y[:, :1])


def test_mode_weights_modes_covered_and_kish_ess():
    means = np.array([[-5.0, 0.0], [5.0, 0.0], [0.0, 9.0]])
    rng = np.random.default_rng(2)
    x = np.concatenate([means[0] + 0.3 * rng.normal(size=(300, 2)),
                        means[1] + 0.3 * rng.normal(size=(100, 2))])
    np.testing.assert_allclose(mode_weights(x, means), [0.75, 0.25, 0.0])
    log_w = np.where(np.arange(400) < 300, 0.0, np.log(3.0))
    np.testing.assert_allclose(mode_weights(x, means, log_w), [0.5, 0.5, 0.0])
    assert modes_covered(x, means) == 2
    assert kish_ess(np.zeros(50)) == pytest.approx(50.0)
    assert kish_ess(log_w) == pytest.approx(600.0**2 / (300 + 100 * 9))
