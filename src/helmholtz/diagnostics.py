"""Sample-quality metrics for samplers with a reference: transport distances, energy
histograms, mode coverage and importance-weight ESS.

The entropy-regularised Wasserstein-2 distance is ott-jax's debiased Sinkhorn
divergence (Feydy et al. 2019), not a hand-written Sinkhorn loop. The energy-histogram
W2 is one-dimensional, where the optimal coupling is the monotone one, so it is the L²
distance between the two quantile functions (computed exactly here, as in the ASBS and
iDEM papers' "energy W2").
"""

from __future__ import annotations

import numpy as np

__all__ = ["sinkhorn_w2", "energy_w2", "modes_covered", "mode_weights", "kish_ess"]


def sinkhorn_w2(x, y, *, epsilon: float = 1e-2, weights_x=None, weights_y=None,
                max_points: int | None = 4000, seed: int = 0) -> float:
    """Entropy-regularised W2 between two samples: √(debiased Sinkhorn divergence) with
    the squared Euclidean cost, ε relative to the mean cost (ott-jax's ``scale_cost``).

    Parameters
    ----------
    x, y
        Samples ``(n, d)`` and ``(m, d)``.
    epsilon
        Entropic regularisation as a fraction of the mean squared distance.
    weights_x, weights_y
        Optional weights (normalised here), e.g. ``exp(log_weights)`` of an importance
        sampler.
    max_points
        Larger samples are thinned to this many points (at random, by ``seed``, with
        their weights) to bound the O(nm) cost.
    """
    import jax.numpy as jnp
    from ott.geometry import pointcloud
    from ott.tools.sinkhorn_divergence import sinkhorn_divergence

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"sinkhorn_w2: expected samples (n, d) and (m, d), got {x.shape} "
                         f"and {y.shape}")
    rng = np.random.default_rng(seed)
    x, a = _thin(x, weights_x, max_points, rng)
    y, b = _thin(y, weights_y, max_points, rng)
    scale = float(np.mean(np.sum((x[:50, None, :] - y[None, :50, :]) ** 2, axis=-1)))
    div, _ = sinkhorn_divergence(pointcloud.PointCloud, jnp.asarray(x), jnp.asarray(y),
                                 a=jnp.asarray(a), b=jnp.asarray(b),
                                 epsilon=epsilon * max(scale, 1e-12))
    return float(np.sqrt(max(float(div), 0.0)))


def _thin(x, weights, max_points, rng):
    w = np.full(len(x), 1.0 / len(x)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(x),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("sinkhorn_w2: weights must be finite, non-negative, not all zero, "
                         "one per point")
    w = w / w.sum()
    if max_points is not None and len(x) > max_points:
        keep = rng.choice(len(x), max_points, replace=False)
        x, w = x[keep], w[keep] / w[keep].sum()
    return x, w


def _quantiles(values, weights, levels):
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cdf = np.cumsum(w) - 0.5 * w
    return np.interp(levels, cdf / w.sum(), v)


def energy_w2(energies_a, energies_b, weights_a=None, weights_b=None,
              num_levels: int = 2000) -> float:
    """W2 between two (optionally weighted) 1-d samples of energies: the L² distance of
    their quantile functions on ``num_levels`` equally spaced levels."""
    a = np.asarray(energies_a, np.float64).ravel()
    b = np.asarray(energies_b, np.float64).ravel()
    wa = np.ones_like(a) if weights_a is None else np.asarray(weights_a, np.float64).ravel()
    wb = np.ones_like(b) if weights_b is None else np.asarray(weights_b, np.float64).ravel()
    keep_a, keep_b = np.isfinite(a) & (wa > 0), np.isfinite(b) & (wb > 0)
    levels = (np.arange(num_levels) + 0.5) / num_levels
    qa = _quantiles(a[keep_a], wa[keep_a], levels)
    qb = _quantiles(b[keep_b], wb[keep_b], levels)
    return float(np.sqrt(np.mean((qa - qb) ** 2)))


def mode_weights(x, means, log_weights=None) -> np.ndarray:
    """The (importance-weighted) fraction of samples nearest to each mode ``(K,)``."""
    x, means = np.asarray(x, np.float64), np.asarray(means, np.float64)
    nearest = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    if log_weights is None:
        w = np.ones(len(x))
    else:
        lw = np.asarray(log_weights, np.float64).ravel()
        lw = np.where(np.isfinite(lw), lw, -np.inf)
        w = np.exp(lw - lw.max())
    return np.bincount(nearest, weights=w, minlength=len(means)) / w.sum()


def modes_covered(x, means, radius: float = 2.0) -> int:
    """How many modes have at least one sample within ``radius`` of their mean."""
    x, means = np.asarray(x, np.float64), np.asarray(means, np.float64)
    dist = np.sqrt(((x[:, None, :] - means[None]) ** 2).sum(-1))
    return int(np.sum(np.any(dist < radius, axis=0)))


def kish_ess(log_weights) -> float:
    """Kish's effective sample size (Σw)²/Σw² of importance weights given as logs."""
    lw = np.asarray(log_weights, np.float64).ravel()
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    w = np.exp(lw - lw.max())
    return float(w.sum() ** 2 / np.sum(w**2))
