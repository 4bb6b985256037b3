"""Lens mass profiles: deflection angles, lensing potentials and convergence.

All conventions are lenstronomy's (Birrer & Amara 2018), so that parameter dictionaries
can be moved between the two codes unchanged:

* the Einstein radius ``theta_E`` is the product-average (circularised) radius,
  κ_SIE = ½ θ_E / √(q x'² + y'²/q), with x' along the major axis;
* the ellipticity is e1 = (1−q)/(1+q) cos 2φ, e2 = (1−q)/(1+q) sin 2φ, φ the position
  angle of the major axis measured from +x towards +y; |e| is clipped at 0.9999;
* external shear deflects by α = (γ1 x + γ2 y, γ2 x − γ1 y).

The elliptical profiles are written in complex notation in terms of the complex
ellipticity ε = e1 + i e2 directly (never through φ and q) wherever the angle is
ill-conditioned, which keeps them smooth in (e1, e2) at the round limit ε = 0: there is
no angle to extract, so gradients stay finite and correct as q → 1. With z = x + i y
(relative to the centre), W = z − ε z̄ and q = (1−|ε|)/(1+|ε|), the elliptical power
law of Tessore & Metcalf (2015, eq. 22–23) becomes, after rotating back to the sky,

    α = (θ_E √(1−|ε|²) / |W|)^t · W · ₂F₁(1, t/2; 2 − t/2; −ε̄ W / W̄),   t = γ − 1,

and for the isothermal case t = 1 the hypergeometric function is atanh(√u)/√u, which is
the Kormann, Schneider & Bartelmann (1994) / Keeton (2001) SIE deflection. The SIE uses
the cheaper real closed form in the major-axis frame, and this series form only near
ε = 0 where the orientation angle is ill-defined.

Every function acts elementwise on arrays of positions and broadcasts over parameters,
so it can be ``jit``-ed and ``vmap``-ed freely; they are written by hand (a few lines
each) because numpyro/jax have no lensing primitives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from helmholtz.models.lensing.light import _log, elliptical_radius

__all__ = [
    "sis_deflection",
    "sis_potential",
    "sie_deflection",
    "sie_potential",
    "sie_convergence",
    "epl_deflection",
    "epl_potential",
    "epl_convergence",
    "shear_deflection",
    "shear_potential",
    "LENS_PROFILES",
    "deflection",
    "potential",
    "convergence",
    "ray_shoot",
]

Array = jax.Array

# lenstronomy clips |e| at this value (param_util.ellipticity2phi_q).
_MAX_ELLIPTICITY = 0.9999
# Below |ε| = 0.02 the SIE uses its power series: the closed form's gradient in (e1, e2)
# loses ~eps/|ε| to cancellation and is singular at ε = 0.
_SERIES_SWITCH = 0.02
_SIE_SERIES_TERMS = 10  # 0.02**10 ≈ 1e-17: float64 accurate


# --------------------------------------------------------------------------- helpers
# Cephes' atan (Moshier): range reduction to |x| ≤ 0.66 and a [4/5] rational in x²;
# ~1 ulp in float32 and float64 alike.
_ATAN_P = (-8.750608600031904122785e-1, -1.615753718733365076637e1,
           -7.500855792314704667340e1, -1.228866684490136173410e2,
           -6.485021904942025371773e1)
_ATAN_Q = (1.0, 2.485846490142306297962e1, 1.650270098316988542046e2,
           4.328810604912902668951e2, 4.853903996359136964868e2,
           1.945506571482613964425e2)
_TAN_3PI_8 = 2.41421356237309504880
_PIO2_LO = 6.123233995736765886130e-17


@jax.custom_jvp
def _atan_ratio(n: Array, d: Array) -> Array:
    """arctan(n/d) for d > 0, by Cephes' rational approximation.

    Why not ``jnp.arctan``: XLA's CPU lowering of float64 atan does not vectorise (10⁴
    elements: 69 µs, against 8 µs for this rational form). Taking n and d separately
    makes the range reduction (x, (x − 1)/(x + 1) or −1/x, x = n/d) one division instead
    of up to three (the same speed within noise here, and one rounding fewer).
    """
    a = jnp.abs(n)
    big = a > _TAN_3PI_8 * d
    mid = (a > 0.66 * d) & ~big
    r = (jnp.where(big, -d, jnp.where(mid, a - d, a))
         / jnp.where(big, a, jnp.where(mid, a + d, d)))
    z = r * r
    p = _ATAN_P[0]
    for c in _ATAN_P[1:]:
        p = p * z + c
    q = _ATAN_Q[0]
    for c in _ATAN_Q[1:]:
        q = q * z + c
    offset = jnp.where(big, jnp.pi / 2 + _PIO2_LO,
                       jnp.where(mid, jnp.pi / 4 + 0.5 * _PIO2_LO, 0.0))
    return jnp.sign(n) * (offset + (r + r * z * p / q))


@_atan_ratio.defjvp
def _atan_ratio_jvp(primals, tangents):
    (n, d), (tn, td) = primals, tangents
    return _atan_ratio(n, d), (d * tn - n * td) / (n * n + d * d)


@jax.custom_jvp
def _atanh_ratio(n: Array, d: Array) -> Array:
    """atanh(n/d) = ½ log((d + n)/(d − n)) for |n| < d, with the vectorisable log.

    Why not ``jnp.arctanh``: XLA's float64 atanh (and log1p) do not vectorise on CPU:
    10⁴ elements cost 59 µs (29 µs per ``log1p``), this ~12 µs. Absolute error ~1e-16
    (the rounding of the ratio), which is what the SIE needs: its prefactor b/s is
    bounded for |ε| ≥ 0.02.
    """
    return 0.5 * _log((d + n) / (d - n))


@_atanh_ratio.defjvp
def _atanh_ratio_jvp(primals, tangents):
    (n, d), (tn, td) = primals, tangents
    return _atanh_ratio(n, d), (d * tn - n * td) / ((d - n) * (d + n))


def _clip_ellipticity(e1: ArrayLike, e2: ArrayLike) -> tuple[Array, Array]:
    """Rescale (e1, e2) so that |e| ≤ 0.9999, keeping the orientation (as lenstronomy)."""
    e1 = jnp.asarray(e1)
    e2 = jnp.asarray(e2)
    c2 = e1**2 + e2**2
    big = c2 > _MAX_ELLIPTICITY**2
    scale = jnp.where(big, _MAX_ELLIPTICITY / jnp.sqrt(jnp.where(big, c2, 1.0)), 1.0)
    return e1 * scale, e2 * scale


def _elliptical_frame(x, y, e1, e2, center_x, center_y):
    """Return (W, |W|, ε, |ε|², origin-mask) for W = z − ε z̄, with W made safe at z = 0."""
    e1, e2 = _clip_ellipticity(e1, e2)
    dx = jnp.asarray(x - center_x)
    dy = jnp.asarray(y - center_y)
    z = lax.complex(dx, dy)
    eps = lax.complex(e1 + jnp.zeros_like(dx), e2 + jnp.zeros_like(dx))
    w = z - eps * jnp.conj(z)
    w_abs2 = jnp.real(w) ** 2 + jnp.imag(w) ** 2
    origin = w_abs2 == 0
    # "double where": keep the discarded branch finite so its gradient is not NaN.
    w = jnp.where(origin, jnp.ones_like(w), w)
    w_abs = jnp.sqrt(jnp.where(origin, 1.0, w_abs2))
    return w, w_abs, eps, e1**2 + e2**2, origin


def _hyp2f1_series(a: Array, c: Array, u: Array, num_terms: int) -> Array:
    """₂F₁(1, a; c; u) = Σ (a)ₙ/(c)ₙ uⁿ, summed to ``num_terms`` terms (|u| < 1)."""

    def body(n, carry):
        term, total = carry
        term = term * ((a + n - 1) / (c + n - 1)) * u
        return term, total + term

    one = jnp.ones_like(u)
    _, total = lax.fori_loop(1, num_terms, body, (one, one))
    return total


def _split(alpha: Array) -> tuple[Array, Array]:
    return jnp.real(alpha), jnp.imag(alpha)


# ------------------------------------------------------------------------------- SIS


def sis_deflection(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> tuple[Array, Array]:
    """Deflection of the singular isothermal sphere, α = θ_E r̂.

    κ = θ_E / (2 r); the deflection has magnitude θ_E everywhere except at the centre,
    where it is set to 0.

    Parameters
    ----------
    x, y : array_like
        Image-plane positions (arcsec).
    theta_E : array_like
        Einstein radius (arcsec).
    center_x, center_y : array_like
        Lens centre (arcsec).

    Returns
    -------
    alpha_x, alpha_y : Array
    """
    dx = jnp.asarray(x - center_x)
    dy = jnp.asarray(y - center_y)
    r2 = dx**2 + dy**2
    origin = r2 == 0
    r = jnp.sqrt(jnp.where(origin, 1.0, r2))
    ax = jnp.where(origin, 0.0, theta_E * dx / r)
    ay = jnp.where(origin, 0.0, theta_E * dy / r)
    return ax, ay


def sis_potential(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> Array:
    """Lensing potential of the SIS, ψ = θ_E r (lenstronomy ``SIS.function``)."""
    dx = jnp.asarray(x - center_x)
    dy = jnp.asarray(y - center_y)
    r2 = dx**2 + dy**2
    origin = r2 == 0
    return jnp.where(origin, 0.0, theta_E * jnp.sqrt(jnp.where(origin, 1.0, r2)))


# ------------------------------------------------------------------------------- SIE


def _sie_frame_constants(theta_E, e1, e2):
    """Per-lens scalars of the closed form: (cos φ, sin φ, q, s = √(1 − q²), b/s)."""
    c = jnp.sqrt(e1**2 + e2**2)
    phi = 0.5 * jnp.arctan2(e2, e1)
    q = (1.0 - c) / (1.0 + c)
    sq = 2.0 * jnp.sqrt(c) / (1.0 + c)  # √(1 − q²) without cancellation
    return jnp.cos(phi), jnp.sin(phi), q, sq, theta_E * jnp.sqrt(q) / sq


def _sie_major_axis_frame(dx, dy, constants):
    """Kormann et al. (1994) / Keeton (2001) closed form: α_x' + i α_y' in the major-axis frame.

    Returned as one complex array so that XLA computes both components in one loop (two
    real outputs of a ``lax.cond`` branch become two loops, each repeating the shared
    work).
    """
    cos_phi, sin_phi, q, sq, b_over_sq = constants
    xr = cos_phi * dx + sin_phi * dy
    yr = -sin_phi * dx + cos_phi * dy
    psi2 = (q * xr) ** 2 + yr**2
    origin = psi2 == 0
    psi = jnp.sqrt(jnp.where(origin, 1.0, psi2))
    ax_r = jnp.where(origin, 0.0, b_over_sq * _atan_ratio(sq * xr, psi))
    ay_r = jnp.where(origin, 0.0, b_over_sq * _atanh_ratio(sq * yr, psi))
    return lax.complex(ax_r, ay_r)


def _sie_series(dx, dy, theta_E, e1, e2):
    """Rotation-free complex form with atanh(√u)/√u as its power series (small |ε|).

    Returns α_x + i α_y on the sky.
    """
    w, w_abs, eps, c2, origin = _elliptical_frame(dx, dy, e1, e2, 0.0, 0.0)
    u = -jnp.conj(eps) * w / jnp.conj(w)
    series = jnp.zeros_like(u)
    for n in reversed(range(_SIE_SERIES_TERMS)):  # Horner
        series = series * u + 1.0 / (2 * n + 1)
    alpha = theta_E * jnp.sqrt(1.0 - c2) * (w / w_abs) * series
    return jnp.where(origin, jnp.zeros_like(alpha), alpha)


def sie_deflection(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    e1: ArrayLike,
    e2: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> tuple[Array, Array]:
    """Deflection of the singular isothermal ellipsoid (lenstronomy ``SIE``).

    κ = ½ θ_E / √(q x'² + y'²/q). In the major-axis frame (Kormann, Schneider &
    Bartelmann 1994; Keeton 2001)

        α_x' = b/s · atan(s x'/ψ),  α_y' = b/s · atanh(s y'/ψ),
        ψ = √(q² x'² + y'²),  s = √(1 − q²),  b = θ_E √q,

    rotated back to the sky. For |ε| < 0.02 the orientation angle is ill-conditioned
    (and its gradient singular at ε = 0), so there the rotation-free complex form of the
    module docstring, α = θ_E √(1−|ε|²) (W/|W|) Σₙ uⁿ/(2n+1) with u = −ε̄ W/W̄, is used;
    it is exact to float64 round-off for |u| = |ε| < 0.02 and reduces to the SIS at ε = 0,
    with finite, correct gradients in (e1, e2) everywhere.

    Parameters
    ----------
    x, y : array_like
        Image-plane positions (arcsec).
    theta_E : array_like
        Product-average Einstein radius (arcsec).
    e1, e2 : array_like
        Ellipticity components, |e| = (1−q)/(1+q).
    center_x, center_y : array_like
        Lens centre (arcsec).

    Returns
    -------
    alpha_x, alpha_y : Array
        Deflection (arcsec); 0 at the centre.
    """
    e1, e2 = _clip_ellipticity(e1, e2)
    dtype = jnp.result_type(x, y, theta_E, e1, e2, center_x, center_y, float)
    shape = jnp.broadcast_shapes(jnp.shape(x), jnp.shape(y), jnp.shape(center_x),
                                 jnp.shape(center_y))
    x = jnp.broadcast_to(jnp.asarray(x, dtype), shape)
    y = jnp.broadcast_to(jnp.asarray(y, dtype), shape)

    def offsets():  # inside the branches, so that x − x_c is not a separate loop
        return x - center_x, y - center_y

    small = e1**2 + e2**2 < _SERIES_SWITCH**2
    # keep the closed form's angle away from the singular ε = 0 (double-where trick); at
    # e = (0.02, 0) the rotation is the identity, so the series (already on the sky) and
    # the closed form (in the major-axis frame) share the rotation back below
    e1_c = jnp.where(small, _SERIES_SWITCH, e1)
    e2_c = jnp.where(small, 0.0, e2)
    # The per-lens constants are computed here, outside the cond, on purpose: inside a
    # branch XLA fuses the scalar atan2/cos/sin into the per-pixel loop and recomputes
    # them at every pixel (float64 CPU, 10⁴ pixels: 86 µs for the closed form, 33 µs so).
    constants = _sie_frame_constants(theta_E, e1_c, e2_c)
    if jnp.ndim(small) == 0:
        # one lens: evaluate only the branch taken (the series costs twice the closed
        # form); under vmap lax.cond would turn into the select below anyway
        complex_dtype = jnp.result_type(dtype, jnp.complex64)
        alpha = jax.lax.cond(
            small,
            lambda: _sie_series(*offsets(), theta_E, e1, e2).astype(complex_dtype),
            lambda: _sie_major_axis_frame(*offsets(), constants).astype(complex_dtype),
        )
    else:
        alpha = jnp.where(small, _sie_series(*offsets(), theta_E, e1, e2),
                          _sie_major_axis_frame(*offsets(), constants))
    ax_r, ay_r = _split(alpha)
    cos_phi, sin_phi = constants[0], constants[1]
    return cos_phi * ax_r - sin_phi * ay_r, sin_phi * ax_r + cos_phi * ay_r


def sie_potential(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    e1: ArrayLike,
    e2: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> Array:
    """Lensing potential of the SIE, ψ = x·α (relative to the centre).

    This is lenstronomy's NIE potential in its singular limit, and exact because α is
    homogeneous of degree 0, so ∇(x·α) = α + Hx = α.
    """
    ax, ay = sie_deflection(x, y, theta_E, e1, e2, center_x, center_y)
    return (x - center_x) * ax + (y - center_y) * ay


def sie_convergence(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    e1: ArrayLike,
    e2: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> Array:
    """Analytic SIE convergence κ = ½ θ_E / R, R = √(q x'² + y'²/q)."""
    e1, e2 = _clip_ellipticity(e1, e2)
    return 0.5 * theta_E / elliptical_radius(x, y, e1, e2, center_x, center_y)


# ------------------------------------------------------------------------------- EPL


def epl_deflection(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    gamma: ArrayLike,
    e1: ArrayLike,
    e2: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
    num_terms: int = 50,
) -> tuple[Array, Array]:
    """Deflection of the elliptical power law (lenstronomy ``EPL``).

    κ = (3−γ)/2 · (θ_E / √(q x'² + y'²/q))^(γ−1), γ = 2 being the SIE. Tessore & Metcalf
    (2015, eq. 22–23) in the rotation-free complex form of the module docstring,

        α = (θ_E √(1−|ε|²)/|W|)^t · W · ₂F₁(1, t/2; 2−t/2; −ε̄ W/W̄),  t = γ − 1,

    with the hypergeometric series summed to ``num_terms`` terms; its terms fall like
    |ε|ⁿ/n, so 50 terms reach ~1e-9 relative accuracy at q = 0.2 (|ε| = 2/3).

    Parameters
    ----------
    x, y : array_like
        Image-plane positions (arcsec).
    theta_E : array_like
        Product-average Einstein radius (arcsec).
    gamma : array_like
        Logarithmic slope of the 3-d density, 1 < γ < 3.
    e1, e2 : array_like
        Ellipticity components.
    center_x, center_y : array_like
        Lens centre (arcsec).
    num_terms : int
        Number of terms of the hypergeometric series (static).

    Returns
    -------
    alpha_x, alpha_y : Array
    """
    w, w_abs, eps, c2, origin = _elliptical_frame(x, y, e1, e2, center_x, center_y)
    t = jnp.asarray(gamma) - 1.0
    u = -jnp.conj(eps) * w / jnp.conj(w)
    hyp = _hyp2f1_series(t / 2, 2 - t / 2, u, num_terms)
    alpha = (theta_E * jnp.sqrt(1.0 - c2) / w_abs) ** t * w * hyp
    return _split(jnp.where(origin, jnp.zeros_like(alpha), alpha))


def epl_potential(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    gamma: ArrayLike,
    e1: ArrayLike,
    e2: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
    num_terms: int = 50,
) -> Array:
    """Lensing potential of the EPL, ψ = x·α / (2 − t) (Tessore & Metcalf 2015, eq. 15)."""
    ax, ay = epl_deflection(x, y, theta_E, gamma, e1, e2, center_x, center_y, num_terms)
    return ((x - center_x) * ax + (y - center_y) * ay) / (3.0 - gamma)


def epl_convergence(
    x: ArrayLike,
    y: ArrayLike,
    theta_E: ArrayLike,
    gamma: ArrayLike,
    e1: ArrayLike,
    e2: ArrayLike,
    center_x: ArrayLike = 0.0,
    center_y: ArrayLike = 0.0,
) -> Array:
    """Analytic EPL convergence κ = (3−γ)/2 · (θ_E / R)^(γ−1), R = √(q x'² + y'²/q)."""
    e1, e2 = _clip_ellipticity(e1, e2)
    r = elliptical_radius(x, y, e1, e2, center_x, center_y)
    return 0.5 * (3.0 - gamma) * (theta_E / r) ** (gamma - 1.0)


# ----------------------------------------------------------------------------- shear


def shear_deflection(
    x: ArrayLike,
    y: ArrayLike,
    gamma1: ArrayLike,
    gamma2: ArrayLike,
    ra_0: ArrayLike = 0.0,
    dec_0: ArrayLike = 0.0,
) -> tuple[Array, Array]:
    """External shear (lenstronomy ``SHEAR``), α = (γ1 x + γ2 y, γ2 x − γ1 y).

    Positions are relative to (ra_0, dec_0), where the shear deflection vanishes.
    """
    dx = jnp.asarray(x - ra_0)
    dy = jnp.asarray(y - dec_0)
    return gamma1 * dx + gamma2 * dy, gamma2 * dx - gamma1 * dy


def shear_potential(
    x: ArrayLike,
    y: ArrayLike,
    gamma1: ArrayLike,
    gamma2: ArrayLike,
    ra_0: ArrayLike = 0.0,
    dec_0: ArrayLike = 0.0,
) -> Array:
    """Shear potential ψ = ½ (γ1 (x² − y²) + 2 γ2 x y)."""
    dx = jnp.asarray(x - ra_0)
    dy = jnp.asarray(y - dec_0)
    return 0.5 * (gamma1 * (dx**2 - dy**2) + 2.0 * gamma2 * dx * dy)


# ---------------------------------------------------------------- composite lens models

#: profile name (as in lenstronomy) -> (deflection function, potential function)
LENS_PROFILES: dict[str, tuple[Callable, Callable]] = {
    "SIS": (sis_deflection, sis_potential),
    "SIE": (sie_deflection, sie_potential),
    "EPL": (epl_deflection, epl_potential),
    "SHEAR": (shear_deflection, shear_potential),
}


def _profiles(lens_model_list: Sequence[str]) -> list[tuple[Callable, Callable]]:
    unknown = [name for name in lens_model_list if name not in LENS_PROFILES]
    if unknown:
        raise ValueError(f"unknown lens profile(s) {unknown}; available: {sorted(LENS_PROFILES)}")
    return [LENS_PROFILES[name] for name in lens_model_list]


def _check_lengths(kwargs_lens, lens_model_list):
    if len(kwargs_lens) != len(lens_model_list):
        raise ValueError(
            f"{len(kwargs_lens)} parameter dicts for {len(lens_model_list)} lens profiles "
            f"{tuple(lens_model_list)}"
        )


def deflection(
    x: ArrayLike,
    y: ArrayLike,
    kwargs_lens: Sequence[Mapping[str, ArrayLike]],
    lens_model_list: Sequence[str] = ("SIE", "SHEAR"),
) -> tuple[Array, Array]:
    """Total deflection of a single-plane superposition of profiles.

    ``kwargs_lens[i]`` holds the keyword arguments of profile ``lens_model_list[i]``,
    exactly as lenstronomy's ``LensModel(lens_model_list).alpha(x, y, kwargs_lens)``.
    """
    _check_lengths(kwargs_lens, lens_model_list)
    ax = ay = jnp.zeros_like(x, dtype=jnp.result_type(x, float))
    for (defl_fn, _), kwargs in zip(_profiles(lens_model_list), kwargs_lens, strict=True):
        dax, day = defl_fn(x, y, **kwargs)
        ax, ay = ax + dax, ay + day
    return ax, ay


def potential(
    x: ArrayLike,
    y: ArrayLike,
    kwargs_lens: Sequence[Mapping[str, ArrayLike]],
    lens_model_list: Sequence[str] = ("SIE", "SHEAR"),
) -> Array:
    """Total lensing potential ψ with ∇ψ = α (lenstronomy ``LensModel.potential``)."""
    _check_lengths(kwargs_lens, lens_model_list)
    psi = jnp.zeros_like(x, dtype=jnp.result_type(x, float))
    for (_, pot_fn), kwargs in zip(_profiles(lens_model_list), kwargs_lens, strict=True):
        psi = psi + pot_fn(x, y, **kwargs)
    return psi


def convergence(
    x: ArrayLike,
    y: ArrayLike,
    kwargs_lens: Sequence[Mapping[str, ArrayLike]],
    lens_model_list: Sequence[str] = ("SIE", "SHEAR"),
) -> Array:
    """Convergence κ = ½ ∇·α, by forward-mode autodiff of :func:`deflection`.

    The deflection acts elementwise on positions, so one ``jvp`` per axis with a unit
    tangent gives the diagonal of the Jacobian at every position at once.
    """
    x = jnp.asarray(x, dtype=jnp.result_type(x, float))
    y = jnp.asarray(y, dtype=jnp.result_type(y, float))

    def defl(x, y):
        return deflection(x, y, kwargs_lens, lens_model_list)

    ones, zeros = jnp.ones_like(x), jnp.zeros_like(x)
    _, (daxdx, _) = jax.jvp(defl, (x, y), (ones, zeros))
    _, (_, daydy) = jax.jvp(defl, (x, y), (zeros, ones))
    return 0.5 * (daxdx + daydy)


def ray_shoot(
    x: ArrayLike,
    y: ArrayLike,
    kwargs_lens: Sequence[Mapping[str, ArrayLike]],
    lens_model_list: Sequence[str] = ("SIE", "SHEAR"),
) -> tuple[Array, Array]:
    """Source-plane positions β = θ − α(θ) (the lens equation)."""
    ax, ay = deflection(x, y, kwargs_lens, lens_model_list)
    return x - ax, y - ay
