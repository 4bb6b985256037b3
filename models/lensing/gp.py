"""Gaussian-process prior for a pixelated source, applied by FFT in whitened form.

A stationary covariance C(r) on an n×n grid with periodic boundaries is a block-circulant
matrix, diagonalised by the 2-d DFT: C = F⁻¹ diag(λ) F with λ = DFT(c), c the first row
(the covariance between pixel (0, 0) and every pixel, at periodic distances). Hence

    s = F⁻¹ [ √λ ⊙ F ξ ],   ξ ~ N(0, I),

has covariance exactly C. Sampling ξ instead of s ("whitening", as in the non-centred
parameterisation) gives an isotropic prior that samplers and optimisers like, and costs
one FFT pair per evaluation (cf. the pixelated sources of Vernardos & Koopmans 2022 and
Karchev et al. 2022; Morningstar et al. 2019 for the RIM on the same problem).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["matern_covariance", "GaussianProcessSource"]

Array = jax.Array


def matern_covariance(
    r: np.ndarray, amplitude: float, length_scale: float, nu: float
) -> np.ndarray:
    """Matérn covariance for ν ∈ {0.5, 1.5, 2.5, ∞} (∞: squared exponential).

        ν = 1/2:  σ² e^{−r/ℓ}
        ν = 3/2:  σ² (1 + √3 r/ℓ) e^{−√3 r/ℓ}
        ν = 5/2:  σ² (1 + √5 r/ℓ + 5r²/3ℓ²) e^{−√5 r/ℓ}
        ν = ∞:    σ² e^{−r²/2ℓ²}

    (Rasmussen & Williams 2006, eq. 4.16–4.17.)
    """
    d = np.asarray(r, dtype=np.float64) / length_scale
    if nu == 0.5:
        k = np.exp(-d)
    elif nu == 1.5:
        k = (1.0 + math.sqrt(3.0) * d) * np.exp(-math.sqrt(3.0) * d)
    elif nu == 2.5:
        k = (1.0 + math.sqrt(5.0) * d + 5.0 * d**2 / 3.0) * np.exp(-math.sqrt(5.0) * d)
    elif math.isinf(nu):
        k = np.exp(-0.5 * d**2)
    else:
        raise ValueError(f"Matérn nu must be 0.5, 1.5, 2.5 or inf, got {nu}")
    return amplitude**2 * k


@dataclass(frozen=True)
class GaussianProcessSource:
    """Pixelated source grid with a whitened stationary Gaussian-process prior.

    Frozen and hashable (a static argument). The grid is square, centred on
    (``center_x``, ``center_y``), and its pixel values are surface brightness evaluated
    by bilinear interpolation (see :func:`~helmholtz.models.lensing.light.pixelated`).

    Parameters
    ----------
    num_pix : int
        Source pixels per side.
    pixel_scale : float
        Source pixel size (arcsec).
    amplitude : float
        Prior standard deviation σ of every pixel (surface-brightness units).
    length_scale : float
        Correlation length ℓ (arcsec).
    nu : float
        Matérn smoothness: 0.5, 1.5, 2.5 or ``math.inf`` (squared exponential).
    center_x, center_y : float
        Centre of the source grid (arcsec).

    Notes
    -----
    The covariance is the periodic one on the torus of side num_pix·pixel_scale, so
    opposite edges are weakly correlated when ℓ is comparable to the grid size; choose a
    grid wider than the source. Negative eigenvalues of the sampled covariance (round-off,
    or a squared exponential with ℓ ≫ pixel) are clipped to 0.
    """

    num_pix: int = 40
    pixel_scale: float = 0.05
    amplitude: float = 1.0
    length_scale: float = 0.1
    nu: float = 1.5
    center_x: float = 0.0
    center_y: float = 0.0

    def __post_init__(self):
        if int(self.num_pix) != self.num_pix or self.num_pix < 2:
            raise ValueError(f"num_pix must be an integer >= 2, got {self.num_pix}")
        if self.pixel_scale <= 0 or self.length_scale <= 0 or self.amplitude <= 0:
            raise ValueError("pixel_scale, length_scale and amplitude must be positive")
        matern_covariance(np.zeros(1), 1.0, 1.0, self.nu)  # validates nu

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_pix, self.num_pix)

    @property
    def size(self) -> int:
        return self.num_pix**2

    def coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """Source pixel-centre coordinates (rows = y, columns = x)."""
        coord = (np.arange(self.num_pix) - (self.num_pix - 1) / 2.0) * self.pixel_scale
        x, y = np.meshgrid(coord + self.center_x, coord + self.center_y)
        return x, y

    def spectrum(self) -> np.ndarray:
        """Eigenvalues λ_k of the circulant covariance, in ``rfft2`` layout (numpy)."""
        n = self.num_pix
        lag = np.minimum(np.arange(n), n - np.arange(n)) * self.pixel_scale  # periodic
        r = np.hypot(lag[:, None], lag[None, :])
        first_row = matern_covariance(r, self.amplitude, self.length_scale, self.nu)
        return np.maximum(np.fft.rfft2(first_row).real, 0.0)

    def source_from_whitened(self, xi: ArrayLike) -> Array:
        """s = F⁻¹[√λ ⊙ F ξ]: map white noise ξ (num_pix × num_pix) to a GP draw.

        Linear in ξ, batched over leading axes.
        """
        xi = jnp.asarray(xi)
        sqrt_spec = jnp.asarray(np.sqrt(self.spectrum()), dtype=xi.dtype)
        return jnp.fft.irfft2(jnp.fft.rfft2(xi) * sqrt_spec, s=self.shape).astype(xi.dtype)

    def covariance(self) -> np.ndarray:
        """Dense prior covariance of the flattened source (numpy; small grids, for tests)."""
        n = self.num_pix
        eye = np.eye(n * n).reshape(n * n, n, n)
        sqrt_spec = np.sqrt(self.spectrum())
        a = np.fft.irfft2(np.fft.rfft2(eye) * sqrt_spec, s=self.shape).reshape(n * n, n * n)
        return a @ a.T

    def kwargs(self, source: ArrayLike) -> dict:
        """lenstronomy-style keyword dict of the ``PIXELATED`` light profile for ``source``."""
        return {
            "image": source,
            "pixel_scale": self.pixel_scale,
            "center_x": self.center_x,
            "center_y": self.center_y,
        }
