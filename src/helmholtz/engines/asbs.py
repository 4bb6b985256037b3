"""Adjoint Schrödinger Bridge Sampler (``asbs``; Liu et al., NeurIPS 2025, arXiv 2506.22565).

The Schrödinger bridge from a Gaussian source μ = N(0, s_0²) to the target ν = p̃/Z
with a Brownian reference dX = σ dW on [0, 1] is the controlled process
dX = σ² ∇log φ_t(X) dt + σ dW, where φ_1 φ̂_1 = ν and φ̂_1(x) = ∫ p(x | x_0) φ̂_0(x_0) dx_0.
With a driftless reference the adjoint is constant along a path, so the control solves
a regression (adjoint matching, Domingo-Enrich et al. 2025):

    u(t, X_t) ≈ ∇log p̃(X_1) − ∇log φ̂_1(X_1),   X_t from the reference bridge of (X_0, X_1),

with (X_0, X_1) drawn from the current sampler (no gradient through the simulation, and
only one target gradient per path, at X_1). The corrector h ≈ ∇log φ̂_1 solves another
(corrector matching): h(X_1) ≈ ∇_{x_1} log p(X_1 | X_0) = −(X_1 − X_0)/σ². The two
regressions alternate in stages of ``stage_steps`` (h starts at 0). The trained sampler
is the same Brownian chain as ``pis``'s with a Gaussian source, so its paths carry the
same exact importance weights, ELBO and EUBO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp

from helmholtz.engines._control import corrector_network
from helmholtz.engines.base import _positive_int, register
from helmholtz.engines.diffusion import PIS, path_diagnostics
from helmholtz.errors import OptionError

__all__ = ["ASBS"]


@register
@dataclass(frozen=True)
class ASBS(PIS):
    """Adjoint Schrödinger Bridge Sampler; see the module docstring.

    Options (besides the path samplers'): source_fraction, the share f of the reference
    variance given to the source (s_0² = f σ_ref², σ² = (1 − f) σ_ref²; f = 0 is
    adjoint sampling from a point); stage_steps, optimiser steps per adjoint-matching or
    corrector-matching stage (counted back from the end, so that training finishes
    with adjoint matching); corrector (False: adjoint matching only, with h the score of
    the reference's end marginal N(0, s_0² + σ²), exact for a point source — adjoint
    sampling, Havens et al. 2025 — and an approximation otherwise, which the importance
    weights correct).
    The regression itself needs the target's gradient at the end point only (ASBS's
    economy); with ``use_score=False`` the whole training costs one gradient per path.
    The default keeps the score feature all path samplers share: without it, on a 2-d
    mixture with weights 1/4 and 3/4, adjoint matching lost the small mode in 1 200
    steps (with and without the corrector, and from a point source), while with it both
    modes kept their weights (measured here, tests/engines/test_diffusion.py's mixture).
    """

    name = "asbs"
    description = "adjoint Schrödinger bridge sampler (adjoint + corrector matching)"
    loss_uses_step: ClassVar[bool] = True

    objective: str = "adjoint_matching"
    use_score: bool = True
    source_fraction: float = 0.5
    stage_steps: int = 200
    corrector: bool = True

    @classmethod
    def losses(cls):
        return ("adjoint_matching",)

    def validate(self):
        super().validate()
        _positive_int(self, "stage_steps")
        f = self.source_fraction
        if not (isinstance(f, int | float) and 0 <= f < 1):
            raise OptionError(f"asbs: source_fraction must be in [0, 1), got {f!r}")

    def build_networks(self, dim, key):
        k1, k2 = jax.random.split(key)
        nets = super().build_networks(dim, k1)
        if self.corrector:
            nets["corrector"] = corrector_network(dim, key=k2, hidden_dim=self.hidden_dim,
                                                  num_layers=self.num_layers,
                                                  dtype=self.float_dtype)
        return nets

    def source_variance(self, params):
        return self.source_fraction * params["scale"] ** 2

    def grads_per_path(self) -> int:
        # the path's states (with the score feature), its end point, its bridge point
        return super().grads_per_path() + 1 + (1 if self.use_score else 0)

    def loss(self, params, rng_key, target, step_index):
        k_sim, k_t, k_bridge = jax.random.split(rng_key, 3)
        n = self.num_gradient_samples
        batch = self.simulate(jax.lax.stop_gradient(params), k_sim, target, n, detach=True)
        x0, x1 = batch.start, batch.end
        nets = self.modules(params)
        sigma = self.diffusion(params)
        scale = jax.lax.stop_gradient(params["scale"])  # whitening, as in ``control``
        score1 = jnp.clip(self.evaluate(target, x1, "score")["score"] * scale,
                          -self.max_score, self.max_score) / scale
        if self.corrector:
            h1 = jax.vmap(nets["corrector"])(x1 / scale) / scale
        else:  # ∇log of the reference's end marginal N(0, s_0² + σ²): exact for s_0 = 0
            h1 = -x1 / scale**2
        # adjoint matching at a bridge point of each path
        k = jax.random.randint(k_t, (n,), 0, self.num_steps)
        t = (k.astype(x1.dtype) / self.num_steps)[:, None]
        eps = jax.random.normal(k_bridge, x1.shape, x1.dtype)
        xt = x0 + t * (x1 - x0) + sigma * jnp.sqrt(t * (1.0 - t)) * eps
        need = self._needs(params)
        ev = self.evaluate(target, xt, "score") if need != "value" else {}
        u = jax.vmap(lambda kk, xi, e: self.control(params, kk, xi[None], jax.tree_util.tree_map(
            lambda a: a[None], e))[0])(k, xt, ev)
        goal = score1 - jax.lax.stop_gradient(h1)
        # in the network's whitened units (σ u against σ × goal), as the sampler uses it
        am = jnp.mean(jnp.sum(((u - goal) * scale) ** 2, axis=-1))
        # corrector matching: h(X_1) ≈ ∇_{x_1} log p(X_1 | X_0) = −(X_1 − X_0)/σ²
        cm = jnp.mean(jnp.sum(((h1 + (x1 - x0) / sigma**2) * scale) ** 2, axis=-1))
        # stages counted back from the last step, so that training ends on adjoint
        # matching (a corrector stage changes no sampler)
        stage = ((self.num_optimizer_steps - 1 - step_index) // self.stage_steps) % 2
        value = jnp.where(stage == 1, cm, am) if self.corrector else am
        return value, path_diagnostics(batch.log_weight)
