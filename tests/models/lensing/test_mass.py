"""Mass profiles: analytic identities, limits and lenstronomy's conventions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helmholtz.models.lensing import (
    LENS_PROFILES,
    convergence,
    deflection,
    epl_convergence,
    epl_deflection,
    potential,
    ray_shoot,
    shear_deflection,
    sie_convergence,
    sie_deflection,
    sis_deflection,
)


def _points(n=400, seed=0, half_width=2.5):
    rng = np.random.default_rng(seed)
    return rng.uniform(-half_width, half_width, (2, n))


SIE = dict(theta_E=1.2, e1=0.15, e2=-0.08, center_x=0.1, center_y=-0.05)
EPL = dict(theta_E=1.2, gamma=2.25, e1=-0.2, e2=0.12, center_x=-0.05, center_y=0.02)
SHEAR = dict(gamma1=0.04, gamma2=-0.03)


def _kormann_reference(x, y, theta_E, e1, e2, center_x, center_y):
    """Textbook SIE (Kormann et al. 1994) with an explicit angle, in numpy float64."""
    phi = np.arctan2(e2, e1) / 2
    c = np.hypot(e1, e2)
    q = (1 - c) / (1 + c)
    dx, dy = x - center_x, y - center_y
    xr = np.cos(phi) * dx + np.sin(phi) * dy
    yr = -np.sin(phi) * dx + np.cos(phi) * dy
    psi = np.sqrt(q**2 * xr**2 + yr**2)
    s = np.sqrt(1 - q**2)
    b = theta_E * np.sqrt(q)
    axr = b / s * np.arctan(s * xr / psi)
    ayr = b / s * np.arctanh(s * yr / psi)
    return np.cos(phi) * axr - np.sin(phi) * ayr, np.sin(phi) * axr + np.cos(phi) * ayr


def test_sis_deflection_has_magnitude_theta_E_off_centre():
    x, y = _points()
    ax, ay = sis_deflection(
        jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), 1.3, 0.2, -0.1
    )
    assert ax.dtype == jnp.float32
    # float32 round-off of x/r and the product: a few ulp of 1.3
    np.testing.assert_allclose(np.hypot(ax, ay), 1.3, rtol=1e-6)
    # pointing away from the centre
    assert np.all(ax * (x - 0.2) + ay * (y + 0.1) > 0)
    assert sis_deflection(0.2, -0.1, 1.3, 0.2, -0.1) == (0.0, 0.0)


def test_sie_matches_kormann_closed_form(x64):
    x, y = _points()
    for e1, e2 in [(0.15, -0.08), (-0.4, 0.3), (0.0, 0.021), (-0.03, 0.0), (0.6, 0.5)]:
        kw = dict(SIE, e1=e1, e2=e2)
        ax, ay = sie_deflection(x, y, **kw)
        rx, ry = _kormann_reference(x, y, **kw)
        np.testing.assert_allclose(ax, rx, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(ay, ry, rtol=1e-12, atol=1e-13)


def test_sie_tends_to_sis_as_q_to_one(x64):
    x, y = _points()
    sis = np.stack(sis_deflection(x, y, 1.2, 0.1, -0.05))
    np.testing.assert_allclose(
        np.stack(sie_deflection(x, y, **dict(SIE, e1=0.0, e2=0.0))), sis, rtol=1e-15, atol=1e-15
    )
    # first-order in |e|: error/|e| converges to a constant as e -> 0 (both sides of the
    # series/closed-form switch at |e| = 0.02)
    ratios = []
    for c in [1e-1, 3e-2, 1e-2, 1e-3, 1e-5]:
        sie = np.stack(sie_deflection(x, y, **dict(SIE, e1=0.6 * c, e2=0.8 * c)))
        ratios.append(np.max(np.abs(sie - sis)) / c)
    assert np.all(np.array(ratios) < 1.2 * 1.2)  # |dα/de| ≤ θ_E (2/3 + 1/2) < 1.2 θ_E
    np.testing.assert_allclose(ratios[-1], ratios[-2], rtol=1e-3)


def test_sie_is_continuous_and_differentiable_at_the_series_switch(x64):
    x, y = _points(50)
    below = np.stack(sie_deflection(x, y, **dict(SIE, e1=0.02 - 1e-12, e2=0.0)))
    above = np.stack(sie_deflection(x, y, **dict(SIE, e1=0.02 + 1e-12, e2=0.0)))
    np.testing.assert_allclose(below, above, atol=1e-11)

    @jax.jit
    @jax.value_and_grad
    def total(e):
        ax, ay = sie_deflection(x, y, 1.2, e[0], e[1], 0.1, -0.05)
        return jnp.sum(ax * np.cos(x) + ay * np.sin(y))

    h = 1e-6
    for e in [(0.0, 0.0), (0.01, -0.005), (0.2, 0.1)]:
        e = np.array(e)
        grad = np.asarray(total(e)[1])
        fd = [(total(e + h * u)[0] - total(e - h * u)[0]) / (2 * h) for u in np.eye(2)]
        assert np.all(np.isfinite(grad))
        # central differences: O(h²) truncation plus ~1e-16/h round-off on O(10) sums
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


def test_epl_with_gamma_two_is_the_sie(x64):
    x, y = _points()
    kw = dict(SIE)
    sie = np.stack(sie_deflection(x, y, **kw))
    epl = np.stack(epl_deflection(x, y, gamma=2.0, **kw))
    # the series is truncated at 50 terms: |e|^50 ≈ 1e-43 here
    np.testing.assert_allclose(epl, sie, rtol=1e-12, atol=1e-13)


def test_shear_is_the_analytic_linear_map(x64):
    x, y = _points()
    ax, ay = shear_deflection(x, y, **SHEAR)
    np.testing.assert_allclose(ax, 0.04 * x - 0.03 * y, rtol=1e-15)
    np.testing.assert_allclose(ay, -0.03 * x - 0.04 * y, rtol=1e-15)
    jac = jax.jacfwd(lambda v: jnp.stack(shear_deflection(v[0], v[1], **SHEAR)))(
        jnp.array([0.3, -1.1])
    )
    np.testing.assert_array_equal(jac, [[0.04, -0.03], [-0.03, -0.04]])


def test_deflection_is_gradient_of_potential(x64):
    # every profile at once (one compilation): SIS, SIE (closed form and series branch),
    # EPL and shear; a wrong profile would have to be cancelled exactly by another
    profiles = ("SIS", "SIE", "SIE", "EPL", "SHEAR")
    kwargs = [
        dict(theta_E=1.1, center_x=0.1, center_y=0.0),
        SIE,
        dict(SIE, e1=0.005, e2=0.0, center_x=-0.2),
        EPL,
        SHEAR,
    ]
    x, y = _points(200)
    grad_psi = jax.jit(jax.vmap(jax.grad(lambda a, b: potential(a, b, kwargs, profiles), (0, 1))))(
        x, y
    )
    ax, ay = deflection(x, y, kwargs, profiles)
    np.testing.assert_allclose(grad_psi[0], ax, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad_psi[1], ay, rtol=1e-10, atol=1e-12)


def test_convergence_matches_formula(x64):
    x, y = _points()
    kappa = convergence(x, y, [SIE], ("SIE",))
    np.testing.assert_allclose(kappa, sie_convergence(x, y, **SIE), rtol=1e-10)
    # definition written out: ½ θ_E / √(q x'² + y'²/q)
    phi = np.arctan2(SIE["e2"], SIE["e1"]) / 2
    c = np.hypot(SIE["e1"], SIE["e2"])
    q = (1 - c) / (1 + c)
    dx, dy = x - SIE["center_x"], y - SIE["center_y"]
    xr = np.cos(phi) * dx + np.sin(phi) * dy
    yr = -np.sin(phi) * dx + np.cos(phi) * dy
    np.testing.assert_allclose(kappa, 0.5 * 1.2 / np.sqrt(q * xr**2 + yr**2 / q), rtol=1e-10)

    kappa_epl = convergence(x, y, [EPL], ("EPL",))
    np.testing.assert_allclose(kappa_epl, epl_convergence(x, y, **EPL), rtol=1e-9)
    r = np.hypot(x - 0.1, y)
    np.testing.assert_allclose(
        convergence(x, y, [dict(theta_E=1.1, center_x=0.1)], ("SIS",)), 1.1 / (2 * r), rtol=1e-12
    )
    np.testing.assert_allclose(convergence(x, y, [SHEAR], ("SHEAR",)), 0.0, atol=1e-15)


def test_float32_jit_vmap_and_finite_gradients():
    x64_points = _points(400)
    x, y = (jnp.asarray(v, jnp.float32) for v in x64_points)
    theta = jnp.linspace(0.8, 1.4, 5, dtype=jnp.float32)
    batched = jax.jit(jax.vmap(lambda t: ray_shoot(x, y, [dict(SIE, theta_E=t), SHEAR])))
    bx, by = batched(theta)
    assert bx.shape == (5, 400) and bx.dtype == jnp.float32
    ax, ay = _kormann_reference(*x64_points, **dict(SIE, theta_E=1.1))
    sx, sy = (
        0.04 * x64_points[0] - 0.03 * x64_points[1],
        -0.03 * x64_points[0] - 0.04 * x64_points[1],
    )
    # float32 round-off on O(1) quantities
    np.testing.assert_allclose(bx[2], x64_points[0] - ax - sx, atol=2e-6)
    np.testing.assert_allclose(by[2], x64_points[1] - ay - sy, atol=2e-6)

    @jax.jit
    @jax.grad
    def loss(params):
        ax, ay = deflection(
            jnp.array([0.0, 0.5]), jnp.array([0.0, 0.3]), [params, SHEAR], ("SIE", "SHEAR")
        )
        return jnp.sum(ax + ay)

    grads = loss(dict(theta_E=1.0, e1=0.0, e2=0.0, center_x=0.0, center_y=0.0))
    assert all(np.isfinite(v) for v in jax.tree.leaves(grads))  # incl. at the centre, e = 0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown lens profile"):
        deflection(0.0, 0.0, [{}], ("NFW",))
    with pytest.raises(ValueError, match="2 parameter dicts for 1"):
        deflection(0.0, 0.0, [SIE, SHEAR], ("SIE",))
    assert set(LENS_PROFILES) == {"SIS", "SIE", "EPL", "SHEAR"}


def test_matches_lenstronomy(x64):
    lenstronomy = pytest.importorskip("lenstronomy.LensModel.lens_model")
    x, y = _points()
    for profiles, kwargs in [
        (["SIE", "SHEAR"], [SIE, SHEAR]),
        (["EPL"], [EPL]),
        (["SIS"], [dict(theta_E=1.1, center_x=0.1, center_y=0.0)]),
    ]:
        model = lenstronomy.LensModel(profiles)
        # lenstronomy's SIE is its NIE with core 1e-10: agreement to ~1e-9 is its core
        np.testing.assert_allclose(
            np.stack(deflection(x, y, kwargs, profiles)),
            np.stack(model.alpha(x, y, kwargs)),
            atol=1e-8,
        )
        np.testing.assert_allclose(
            potential(x, y, kwargs, profiles), model.potential(x, y, kwargs), atol=1e-8
        )
