"""Linear source inversion: the MAP pixelated source under the GP prior, lens known.

With the lens and the noise map fixed, the image is linear in the whitened source ξ,
m = B ξ (B = PSF ∘ rebin ∘ bilinear lensing ∘ GP transform), and the posterior is
Gaussian. Its mode solves

    (Bᵀ Σ⁻¹ B + I) ξ̂ = Bᵀ Σ⁻¹ d,

the regularised least-squares inversion of Warren & Dye (2003) and Suyu et al. (2006),
with the GP as regulariser. The Bayesian evidence of the linear-Gaussian model is exact:

    log p(d) = −½ (χ²(ξ̂) + |ξ̂|²) − ½ log det(Bᵀ Σ⁻¹ B + I) − Σ log σ − (N/2) log 2π.

This is the baseline the recurrent inference machine (Morningstar et al. 2019) improves on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.sparse.linalg import cg
from jax.typing import ArrayLike

from helmholtz.models.lensing.gp import GaussianProcessSource
from helmholtz.models.lensing.image import ImageConfig, render

__all__ = ["SourceInversion", "whitened_source_operator", "invert_source"]

Array = jax.Array


class SourceInversion(NamedTuple):
    """Result of :func:`invert_source`.

    Attributes
    ----------
    source : Array, (n, n)
        MAP source surface brightness s = F⁻¹[√λ ⊙ F ξ̂].
    xi : Array, (n, n)
        MAP whitened coefficients ξ̂.
    model_image : Array, (N, N)
        B ξ̂.
    chi2 : Array
        Σ ((d − B ξ̂)/σ)².
    effective_dof : Array
        Number of effectively constrained source modes, tr(Bᵀ Σ⁻¹ B (Bᵀ Σ⁻¹ B + I)⁻¹);
        for data drawn from the model, E[χ²] = N − effective_dof. NaN for ``"cg"``.
    log_evidence : Array
        log p(d | lens, GP) of the linear-Gaussian model. NaN for ``"cg"``.
    """

    source: Array
    xi: Array
    model_image: Array
    chi2: Array
    effective_dof: Array
    log_evidence: Array


def whitened_source_operator(
    config: ImageConfig,
    kwargs_lens: Sequence[Mapping[str, ArrayLike]],
    source: GaussianProcessSource,
    lens_model_list: Sequence[str] = ("SIE", "SHEAR"),
) -> Callable[[Array], Array]:
    """The linear map ξ ↦ image for a fixed lens (B in the module docstring)."""

    def operator(xi: Array) -> Array:
        surface = source.source_from_whitened(xi)
        return render(
            config, kwargs_lens, [source.kwargs(surface)], lens_model_list, ("PIXELATED",)
        )

    return operator


def invert_source(
    data: ArrayLike,
    sigma: ArrayLike,
    config: ImageConfig,
    kwargs_lens: Sequence[Mapping[str, ArrayLike]],
    source: GaussianProcessSource,
    lens_model_list: Sequence[str] = ("SIE", "SHEAR"),
    method: Literal["dense", "cg"] = "dense",
    cg_tol: float = 1e-6,
    cg_maxiter: int = 1000,
) -> SourceInversion:
    """MAP source under the GP prior for a known lens and noise map (see module docstring).

    Parameters
    ----------
    data, sigma : array_like, (N, N)
        Image and its per-pixel noise σ (fixed, e.g. from
        :func:`~helmholtz.models.lensing.image.simulate`).
    config : ImageConfig
        Imaging set-up used to render the model.
    kwargs_lens : list of dict
        Lens parameters for ``lens_model_list``.
    source : GaussianProcessSource
        Source grid and GP prior.
    method : {"dense", "cg"}
        ``"dense"`` builds B (N² × n² via ``vmap`` over unit vectors) and solves by
        Cholesky, also giving the evidence; memory ∝ N² n². ``"cg"`` is matrix-free
        conjugate gradients with B and Bᵀ by autodiff (``jax.linear_transpose``).
    cg_tol, cg_maxiter : float, int
        Relative tolerance and iteration cap for ``"cg"``.

    Returns
    -------
    SourceInversion
    """
    data = jnp.asarray(data)
    dtype = jnp.result_type(data, float)
    data = data.astype(dtype)
    weight = 1.0 / jnp.asarray(sigma, dtype) ** 2
    operator = whitened_source_operator(config, kwargs_lens, source, lens_model_list)
    xi0 = jnp.zeros(source.shape, dtype)
    transpose = jax.linear_transpose(operator, xi0)
    rhs = transpose(weight * data)[0]
    nan = jnp.asarray(jnp.nan, dtype)

    if method == "dense":
        basis = jnp.eye(source.size, dtype=dtype).reshape(source.size, *source.shape)
        b = jax.vmap(operator)(basis).reshape(source.size, -1).T  # (N², n²)
        precision = (b.T * weight.reshape(1, -1)) @ b + jnp.eye(source.size, dtype=dtype)
        chol = jnp.linalg.cholesky(precision)
        xi = jax.scipy.linalg.cho_solve((chol, True), rhs.reshape(-1)).reshape(source.shape)
        precision_inv_trace = jnp.sum(
            jax.scipy.linalg.solve_triangular(chol, jnp.eye(source.size, dtype=dtype), lower=True)
            ** 2
        )
        effective_dof = source.size - precision_inv_trace
        log_det = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    elif method == "cg":

        def normal_matvec(v):
            return transpose(weight * operator(v))[0] + v

        xi, _ = cg(normal_matvec, rhs, x0=xi0, tol=cg_tol, maxiter=cg_maxiter)
        effective_dof = log_det = nan
    else:
        raise ValueError(f"method must be 'dense' or 'cg', got {method!r}")

    model_image = operator(xi)
    chi2 = jnp.sum(weight * (data - model_image) ** 2)
    if method == "dense":
        log_evidence = (
            -0.5 * (chi2 + jnp.sum(xi**2))
            - 0.5 * log_det
            + 0.5 * jnp.sum(jnp.log(weight))
            - 0.5 * data.size * jnp.log(2.0 * jnp.pi)
        )
    else:
        log_evidence = nan
    return SourceInversion(
        source=source.source_from_whitened(xi),
        xi=xi,
        model_image=model_image,
        chi2=chi2,
        effective_dof=effective_dof,
        log_evidence=log_evidence,
    )
