"""Learning F_exc from simulations: one-body (c1) matching, pair-correlation matching, both.

Two kinds of simulation data teach a functional:

* **Inhomogeneous profiles** ρ(x) in external potentials at βμ give the one-body direct
  correlation exactly where ρ > 0: c1(x) = ln(ρ(x)/w(x)) + βV(x) − βμ. The *naive* loss
  matches the functional's c1[ρ] to it (Sammüller, Hermann, de las Heras & Schmidt,
  PNAS 120, e2312484120, 2023, learn c1 directly; here c1 is the derivative of a
  learned F_exc, so the functional is integrable by construction).
* **Bulk pair correlations** g(r) at several densities give, through Ornstein–Zernike,
  the bulk two-body direct correlation c(r) = c2(0, r), which *pair-correlation
  matching* compares with the functional's second derivative −δ²βF_exc/δρδρ' at the
  uniform density (Dijkman, Dijkstra, van Roij, Welling, van de Meent & Ensing, PRL 134,
  056103, 2025). Two further facts pin what c2 leaves free (a term linear in ρ): F_exc
  of the empty system is 0 (built into the network) and c1 → 0 as ρ → 0.

:class:`FunctionalTraining` is a trained engine on the core's machinery
(:func:`helmholtz.training.training_phase`): the driver scans the optimiser steps,
shows the loss on the progress bar, checkpoints parameters and optimiser state, and the
Result's ``fitted`` is the trained functional (saved and loaded with the Result).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from helmholtz.engines.base import Engine, _positive_int, _positive_number
from helmholtz.errors import OptionError
from helmholtz.result import FittedModule, FreeEnergy, Result
from helmholtz.training import init_training, static_part, training_phase, training_status

from .functionals import NeuralFunctional, c1, c2_bulk
from .potentials import GridError

__all__ = ["TrainingData", "FunctionalTraining", "train_functional", "OBJECTIVES"]

OBJECTIVES = ("c1", "pair", "both")


class TrainingData(eqx.Module):
    """What a functional learns from (either part may be empty).

    Profiles: ``rho``, ``beta_v``, ``weight`` (S, n) on one grid of spacing ``dx`` and
    ``beta_mu`` (S,); nodes with ρ below ``min_density`` are not fitted (ln ρ is noise
    there). Bulk: densities ``bulk_rho`` (B,) with c(r_j) at r_j = j·dx, j = 0 … J−1 in
    ``bulk_c2`` (B, J).
    """

    dx: float = eqx.field(static=True)
    rho: jax.Array
    beta_v: jax.Array
    weight: jax.Array
    beta_mu: jax.Array
    bulk_rho: jax.Array
    bulk_c2: jax.Array
    min_density: float = eqx.field(static=True, default=0.02)

    @classmethod
    def make(cls, dx, *, rho=None, beta_v=None, weight=None, beta_mu=None, bulk_rho=None,
             bulk_c2=None, x=None, bulk_r=None, min_density: float = 0.02) -> TrainingData:
        """Check and pack the arrays; ``x`` (the profiles' nodes) and ``bulk_r`` (the r of
        ``bulk_c2``), when given, must be spaced by ``dx`` (a :class:`GridError` otherwise:
        c(r) binned at 0.1 compared with c2 on a 0.05 grid would train silently wrong)."""
        for name, pts in (("x", x), ("bulk_r", bulk_r)):
            if pts is not None:
                pts = np.asarray(pts, np.float64)
                if pts.size < 2 or not np.allclose(np.diff(pts), dx, rtol=1e-6, atol=0):
                    raise GridError(f"TrainingData: {name} is not spaced by dx = {dx} "
                                    f"(spacing {np.diff(pts)[:1]})")
        if bulk_r is not None and abs(float(np.asarray(bulk_r)[0])) > 1e-9 * dx:
            raise GridError("TrainingData: bulk_r must start at r = 0")
        z2, z1 = jnp.zeros((0, 1)), jnp.zeros((0,))
        if rho is not None:
            rho = jnp.asarray(rho)
            beta_v = jnp.zeros_like(rho) if beta_v is None else jnp.asarray(beta_v)
            weight = jnp.ones_like(rho) if weight is None else jnp.asarray(weight)
            beta_mu = jnp.asarray(beta_mu).reshape(-1)
            if rho.ndim != 2 or beta_v.shape != rho.shape or weight.shape != rho.shape \
                    or beta_mu.shape != rho.shape[:1]:
                raise ValueError(f"TrainingData: rho, beta_v, weight must share a shape "
                                 f"(S, n) and beta_mu be (S,); got {rho.shape}, "
                                 f"{beta_v.shape}, {weight.shape}, {beta_mu.shape}")
        if bulk_rho is not None:
            bulk_rho = jnp.asarray(bulk_rho).reshape(-1)
            bulk_c2 = jnp.asarray(bulk_c2)
            if bulk_c2.ndim != 2 or bulk_c2.shape[0] != bulk_rho.shape[0]:
                raise ValueError(f"TrainingData: bulk_c2 must be (B, J) for B = "
                                 f"{bulk_rho.shape[0]} densities, got {bulk_c2.shape}")
        return cls(float(dx), z2 if rho is None else rho, z2 if rho is None else beta_v,
                   z2 if rho is None else weight, z1 if rho is None else beta_mu,
                   z1 if bulk_rho is None else bulk_rho, z2 if bulk_rho is None else bulk_c2,
                   float(min_density))

    # what the driver and checkpoints read of a target
    @property
    def name(self) -> str:
        return "cdft-training-data"

    @property
    def dim(self) -> int:
        return 1

    @property
    def model(self):
        return TrainingData

    @property
    def model_args(self):
        return (self.rho, self.beta_v, self.weight, self.beta_mu, self.bulk_rho, self.bulk_c2,
                self.dx, self.min_density)

    params = None
    observed = None

    @property
    def num_profiles(self) -> int:
        return int(self.rho.shape[0])

    @property
    def num_bulk(self) -> int:
        return int(self.bulk_rho.shape[0])


def _profile_loss(functional, rho, beta_v, weight, beta_mu, min_density):
    on = (weight > 0) & (rho > min_density)
    target = jnp.log(jnp.where(on, rho / jnp.where(on, weight, 1.0), 1.0)) + beta_v - beta_mu
    err = jnp.where(on, c1(functional, rho) - target, 0.0)
    return jnp.sum(err ** 2), jnp.sum(on)


@dataclass(frozen=True)
class FunctionalTraining(Engine):
    """Train a :class:`NeuralFunctional` on :class:`TrainingData`.

    Options: ``objective`` (``"c1"``, ``"pair"`` or ``"both"``), ``num_steps`` optimiser
    steps of Adam at ``learning_rate`` (cosine decay to a tenth), ``batch_size`` profiles
    and bulk densities per step, ``pair_weight`` (the pair loss's weight in ``"both"``),
    the network's ``range_`` (kernel half-width), ``num_kernels``, ``width``, ``depth``.
    """

    name: ClassVar[str] = "functional-training"
    description: ClassVar[str] = "learn βF_exc[ρ] from simulated profiles and/or bulk c(r)"
    loss_has_aux: ClassVar[bool] = True

    objective: str = "both"
    num_steps: int = 2000
    learning_rate: float = 3e-3
    batch_size: int = 16
    pair_weight: float = 1.0
    range_: float = 0.5
    num_kernels: int = 4
    width: int = 32
    depth: int = 3
    max_grad_norm: float = 1.0

    def validate(self):
        if self.objective not in OBJECTIVES:
            raise OptionError(f"{self.name}: unknown objective {self.objective!r}; valid: "
                              f"{', '.join(OBJECTIVES)}")
        _positive_int(self, "num_steps", "batch_size", "num_kernels", "width", "depth")
        _positive_number(self, "learning_rate", "pair_weight", "range_", "max_grad_norm")

    def factory_kwargs(self, dx) -> dict:
        return {"dx": float(dx), "range_": float(self.range_), "num_kernels": self.num_kernels,
                "width": self.width, "depth": self.depth}

    def network(self, dx, params):
        return eqx.combine(params, static_part(NeuralFunctional.factory, jax.random.key(0),
                                               **self.factory_kwargs(dx)))

    def make_optimizer(self):
        lr = optax.cosine_decay_schedule(self.learning_rate, self.num_steps, 0.1)
        return optax.chain(optax.clip_by_global_norm(self.max_grad_norm), optax.adam(lr))

    def _check(self, data):
        if not isinstance(data, TrainingData):
            raise TypeError(f"{self.name} trains on TrainingData, got {type(data).__name__}")
        if self.objective in ("c1", "both") and data.num_profiles == 0:
            raise ValueError(f"{self.name}: objective {self.objective!r} needs profiles "
                             "(TrainingData.make(rho=..., beta_mu=...))")
        if self.objective in ("pair", "both") and data.num_bulk == 0:
            raise ValueError(f"{self.name}: objective {self.objective!r} needs bulk pair "
                             "correlations (TrainingData.make(bulk_rho=..., bulk_c2=...))")

    def init(self, rng_key, target, position=None):
        net = NeuralFunctional.factory(rng_key, **self.factory_kwargs(target.dx))
        return init_training(self, eqx.filter(net, eqx.is_array))

    def start(self, rng_key, target, run):
        self._check(target)
        return run.call(type(self).init, self, rng_key, target)

    def phases(self, target):
        return (training_phase(self.num_steps),)

    def loss(self, params, rng_key, data):
        functional = self.network(data.dx, params)
        k1, k2 = jax.random.split(rng_key)
        aux, total = {}, 0.0
        if self.objective in ("c1", "both"):
            idx = jax.random.choice(k1, data.rho.shape[0], (self.batch_size,))
            sq, cnt = jax.vmap(_profile_loss, in_axes=(None, 0, 0, 0, 0, None))(
                functional, data.rho[idx], data.beta_v[idx], data.weight[idx],
                data.beta_mu[idx], data.min_density)
            one = jnp.sum(sq) / jnp.maximum(jnp.sum(cnt), 1)
            aux["c1_loss"] = one
            total = total + one
        if self.objective in ("pair", "both"):
            idx = jax.random.choice(k2, data.bulk_rho.shape[0], (self.batch_size,))
            j = data.bulk_c2.shape[1]
            n = 2 * j + 2 * int(round(self.range_ / data.dx)) + 2
            pred = jax.vmap(lambda r: c2_bulk(functional, r, n)[:j])(data.bulk_rho[idx])
            pair = jnp.mean(jnp.sum((pred - data.bulk_c2[idx]) ** 2, axis=1) * data.dx)
            low = c1(functional, jnp.zeros(n))[0] ** 2      # c1 → 0 as ρ → 0
            aux["pair_loss"] = pair
            total = total + self.pair_weight * (pair + low)
        return total, jax.tree_util.tree_map(jax.lax.stop_gradient, aux)

    def result(self, rng_key, target, state, infos, run):
        functional = self.network(target.dx, state.params)
        info = infos["training"]
        trace = {k: np.asarray(v) for k, v in info.items()}
        return Result(
            engine=self.name, model=target.name, samples={},
            free_energy=FreeEnergy(math.nan, math.nan, "none",
                                   "a functional, not a free-energy estimate"),
            trace=trace, compile_seconds=run.timer.compile_seconds,
            run_seconds=run.timer.run_seconds,
            config={**self.options(), "num_profiles": target.num_profiles,
                    "num_bulk": target.num_bulk},
            fitted=FittedModule(functional, "helmholtz.models.cdft.functionals:"
                                "NeuralFunctional.factory", self.factory_kwargs(target.dx)),
            status=training_status(state, trace["loss"]))


def train_functional(data: TrainingData, rng_key, *, objective: str = "both",
                     progress_bar: bool = False, checkpoint=None, **options) -> Result:
    """Train a neural functional on ``data`` with :class:`FunctionalTraining`; the
    trained functional is ``result.fitted.module``."""
    engine = FunctionalTraining(objective=objective, **options)
    return engine.run(data, rng_key, progress_bar=progress_bar, checkpoint=checkpoint)
