"""A first guess of the lens from the image alone, to start fits from."""

from __future__ import annotations

import numpy as np

__all__ = ["first_guess"]


def first_guess(data, config, threshold: float = 5.0) -> dict[str, float]:
    """θ_E and the lens centre read off an image: the flux-weighted centroid and mean
    radius (about that centroid) of the pixels brighter than ``threshold`` · σ_bkg.

    For a lensed arc or ring around the lens this lands within a few percent of θ_E
    and within a pixel or two of the centre: far from the answer on the posterior's scale
    (tens of posterior sds at high S/N) but inside the right basin, which is what a start
    for SVI or NUTS needs (``init_values``). Returns ``{"lens_theta_E", "lens_center_x",
    "lens_center_y"}`` in arcsec; the other sites are left to the engine's init strategy.

    Raises
    ------
    ValueError
        When no pixel is above the threshold (nothing to read the lens from).
    """
    x, y = config.coordinates(supersampled=False)
    d = np.asarray(data, np.float64)
    w = np.where(d > threshold * config.background_rms, d, 0.0)
    total = w.sum()
    if not total > 0:
        raise ValueError(f"first_guess: no pixel is brighter than {threshold}·σ_bkg = "
                         f"{threshold * config.background_rms:g}; lower the threshold")
    cx, cy = (w * x).sum() / total, (w * y).sum() / total
    radius = (w * np.hypot(x - cx, y - cy)).sum() / total
    return {"lens_theta_E": float(radius), "lens_center_x": float(cx),
            "lens_center_y": float(cy)}
