"""Light profiles: Sérsic normalisation and conventions, bilinear interpolation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import gammainc

from helmholtz.models.lensing import (
    bilinear_interpolate,
    elliptical_radius,
    sersic,
    sersic_b_n,
    sersic_total_flux,
    surface_brightness,
)


@pytest.mark.parametrize("n_sersic", [0.5, 1.0, 2.0])
def test_sersic_total_flux_matches_closed_form(x64, n_sersic):
    # midpoint rule on a 0.004" grid over ±4" (20 R_sersic): the truncated tail is
    # < 1e-6 of the flux for n ≤ 2 and the cusp at the centre costs < 1e-4
    delta = 0.004
    coord = (np.arange(2000) - 999.5) * delta
    x, y = np.meshgrid(coord, coord)
    kw = dict(
        amp=3.0, R_sersic=0.2, n_sersic=n_sersic, e1=0.2, e2=-0.1, center_x=0.03, center_y=-0.02
    )
    numeric = float(jnp.sum(sersic(x, y, **kw))) * delta**2
    exact = float(sersic_total_flux(3.0, 0.2, n_sersic))
    assert numeric == pytest.approx(exact, rel=3e-4)


@pytest.mark.parametrize("n_sersic, rel", [(0.5, 1e-7), (1.0, 1e-7), (4.0, 5e-6)])
def test_sersic_total_flux_radial_quadrature(x64, n_sersic, rel):
    # ∫ 2πR I(R) dR on a log grid to 10⁶ R_e (trapezoid on 20000 log-spaced nodes, error
    # < 1e-9). For n = 4 the 1e-4" floor on R (lenstronomy's smoothing) flattens the
    # central cusp and removes 1.5e-6 of the flux.
    r = np.logspace(-8, 6, 20001) * 0.3
    integrand = 2 * np.pi * r * np.asarray(sersic(r, 0.0, 2.0, 0.3, n_sersic)) * r
    numeric = np.trapezoid(integrand, np.log(r))
    assert numeric == pytest.approx(float(sersic_total_flux(2.0, 0.3, n_sersic)), rel=rel)


def test_b_n_makes_R_sersic_the_half_light_radius():
    # fraction of light inside R_e is P(2n, b_n); the linear fit b_n = 1.9992 n − 0.3271
    # is good to 0.2% for n ≥ 1 and drifts to 1% at n = 0.5 (0.4896; exact b = ln 2 there)
    n = jnp.array([1.0, 2.0, 4.0, 8.0])
    np.testing.assert_allclose(gammainc(2 * n, sersic_b_n(n)), 0.5, atol=2e-3)
    assert float(gammainc(1.0, sersic_b_n(0.5))) == pytest.approx(0.4896, abs=1e-4)


def test_sersic_equals_amp_on_the_half_light_ellipse(x64):
    # points on q x'² + y'²/q = R² for the lenstronomy (e1, e2) <-> (q, φ) relation
    q, phi = 0.6, 0.4
    e1 = (1 - q) / (1 + q) * np.cos(2 * phi)
    e2 = (1 - q) / (1 + q) * np.sin(2 * phi)
    t = np.linspace(0, 2 * np.pi, 17)
    xr, yr = 0.25 * np.cos(t) / np.sqrt(q), 0.25 * np.sin(t) * np.sqrt(q)
    x = np.cos(phi) * xr - np.sin(phi) * yr + 0.1
    y = np.sin(phi) * xr + np.cos(phi) * yr - 0.2
    values = sersic(
        x, y, amp=7.0, R_sersic=0.25, n_sersic=2.5, e1=e1, e2=e2, center_x=0.1, center_y=-0.2
    )
    np.testing.assert_allclose(values, 7.0, rtol=1e-12)
    np.testing.assert_allclose(elliptical_radius(x, y, e1, e2, 0.1, -0.2), 0.25, rtol=1e-12)
    # major axis along φ: brighter at distance 0.3 along φ than perpendicular to it
    along = sersic(
        0.1 + 0.3 * np.cos(phi), -0.2 + 0.3 * np.sin(phi), 7.0, 0.25, 2.5, e1, e2, 0.1, -0.2
    )
    across = sersic(
        0.1 - 0.3 * np.sin(phi), -0.2 + 0.3 * np.cos(phi), 7.0, 0.25, 2.5, e1, e2, 0.1, -0.2
    )
    assert along > across


def test_bilinear_interpolation(x64):
    rng = np.random.default_rng(1)
    ny, nx, delta = 7, 9, 0.1
    a, b, c, d = rng.normal(size=4)
    xs = (np.arange(nx) - (nx - 1) / 2) * delta + 0.05
    ys = (np.arange(ny) - (ny - 1) / 2) * delta - 0.02
    gx, gy = np.meshgrid(xs, ys)
    image = a + b * gx + c * gy + d * gx * gy
    # exact at the pixel centres
    np.testing.assert_allclose(
        bilinear_interpolate(image, gx, gy, delta, 0.05, -0.02), image, rtol=1e-13
    )
    # exact for bilinear functions inside the grid
    px = rng.uniform(xs[0], xs[-1], 200)
    py = rng.uniform(ys[0], ys[-1], 200)
    np.testing.assert_allclose(
        bilinear_interpolate(image, px, py, delta, 0.05, -0.02),
        a + b * px + c * py + d * px * py,
        rtol=1e-12,
        atol=1e-12,
    )
    # zero beyond half a pixel outside, linear fall-off in between
    far = bilinear_interpolate(
        image, np.array([10.0, -10.0, 0.05]), np.array([0.0, 0.0, 5.0]), delta, 0.05, -0.02
    )
    np.testing.assert_array_equal(far, 0.0)
    edge_x = xs[-1] + 0.5 * delta
    half = bilinear_interpolate(image, np.array([edge_x]), np.array([ys[3]]), delta, 0.05, -0.02)
    np.testing.assert_allclose(half, 0.5 * image[3, -1], rtol=1e-12)


def test_bilinear_interpolation_is_differentiable_in_positions():
    image = jnp.arange(16.0).reshape(4, 4)  # value = 4 i + j: slope 1/Δ in x, 4/Δ in y
    grad = jax.grad(lambda p: bilinear_interpolate(image, p[0], p[1], 0.5))(jnp.array([0.1, -0.2]))
    np.testing.assert_allclose(grad, [2.0, 8.0], rtol=1e-6)


def test_surface_brightness_sums_profiles_and_rejects_bad_input():
    kw = dict(amp=1.0, R_sersic=0.2, n_sersic=1.0, e1=0.0, e2=0.0, center_x=0.0, center_y=0.0)
    x = jnp.linspace(-1.0, 1.0, 11)
    total = surface_brightness(x, 0 * x, [kw, kw], ("SERSIC_ELLIPSE", "SERSIC_ELLIPSE"))
    np.testing.assert_allclose(total, 2 * sersic(x, 0 * x, **kw), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown light profile"):
        surface_brightness(x, x, [kw], ("GAUSSIAN",))
    with pytest.raises(ValueError, match="1 parameter dicts for 2"):
        surface_brightness(x, x, [kw], ("SERSIC", "SERSIC_ELLIPSE"))


def test_sersic_matches_lenstronomy(x64):
    light_model = pytest.importorskip("lenstronomy.LightModel.light_model")
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-1.5, 1.5, (2, 300))
    kw = dict(amp=5.0, R_sersic=0.3, n_sersic=3.2, e1=-0.15, e2=0.22, center_x=0.1, center_y=0.05)
    theirs = light_model.LightModel(["SERSIC_ELLIPSE"]).surface_brightness(x, y, [kw])
    np.testing.assert_allclose(sersic(x, y, **kw), theirs, rtol=1e-12)
