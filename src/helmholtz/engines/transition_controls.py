"""The pieces of the transition-path engines (:mod:`helmholtz.engines.transition`) that
are not engines: the problem a model carries, the three control networks, drawing paths
from an engine's control, and the trained control a Result keeps (saved, loaded and drawn
from again without retraining).
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from helmholtz.engines._control import _fourier, zero_last_layer
from helmholtz.engines._paths_result import _jsonable
from helmholtz.errors import ModelError
from helmholtz.paths.transition import TransitionPath, rollout
from helmholtz.result import register_fitted

__all__ = ["transition_problem", "ForceControl", "PotentialControl", "DisplacementControl",
           "build_control", "FittedTransitionControl", "CONTROLS"]

CONTROLS = ("force", "potential", "displacement")
NUM_FREQUENCIES = 6


def transition_problem(target, engine_name: str) -> TransitionPath:
    problem = getattr(target.model, "transition_path", None)
    if not isinstance(problem, TransitionPath):
        raise ModelError(f"{engine_name}: model '{target.name}' is not a transition-path "
                         "model; build one with helmholtz.paths.transition_path_model("
                         "TransitionPath(...)) (e.g. helmholtz.models.transition_paths."
                         "muller_brown_paths)")
    return problem


# --------------------------------------------------------------------------- controls
def _features(problem, t, x):
    """(x − A)/ℓ, Fourier features of t, and the end-time feature
    τ = log((1 + 1/K)/(1 − t + 1/K))/log(K + 1) ∈ [0, 1] alone and times (x − B)/ℓ: the
    control that lands paths on B grows like 1/(time left) near the end (a Brownian
    bridge's does), which a few Fourier features of t cannot resolve in the last steps."""
    t = jnp.asarray(t, x.dtype)
    k = problem.num_steps
    tau = jnp.log((1.0 + 1.0 / k) / (1.0 - t + 1.0 / k)) / math.log(k + 1.0)
    return jnp.concatenate([(x - problem.start) / problem.length_scale,
                            _fourier(t, NUM_FREQUENCIES), tau[None],
                            tau * (x - problem.target) / problem.length_scale])


class ForceControl(eqx.Module):
    """u(t, x) = force_scale · MLP((x − A)/ℓ, φ(t)) (last layer zero: starts at u ≡ 0)."""

    mlp: eqx.nn.MLP

    def __call__(self, problem, t, x):
        return self.mlp(_features(problem, t, x)) * problem.force_scale


class PotentialControl(eqx.Module):
    """u = −∇ₓ b(t, x) with the bias potential b = kT · MLP((x − A)/ℓ, φ(t))."""

    mlp: eqx.nn.MLP

    def __call__(self, problem, t, x):
        bias = lambda y: self.mlp(_features(problem, t, y))[0] * problem.temperature
        return -jax.grad(bias)(x)


class DisplacementControl(eqx.Module):
    """u_i = (force_scale/ℓ) s_i(t, x) (B̃ − x)_i per particle i, with B̃ the target
    superposed onto x (rotation-equivariant when the scales see invariant features; here
    they see (x − A)/ℓ and φ(t), as TPS-DPS's scale network does)."""

    mlp: eqx.nn.MLP

    def __call__(self, problem, t, x):
        b = problem.target if problem.align_fn is None else problem.align_fn(x)
        k = problem.spatial_dim
        scales = self.mlp(_features(problem, t, x))
        disp = (b - x).reshape(-1, k)
        return (scales[:, None] * disp).reshape(-1) * problem.force_scale / problem.length_scale


def build_control(kind: str, problem: TransitionPath, key, hidden_dim: int, num_layers: int):
    width = 2 * problem.dim + 2 * NUM_FREQUENCIES + 1
    out = {"force": problem.dim, "potential": 1,
           "displacement": problem.dim // problem.spatial_dim}[kind]
    mlp = zero_last_layer(eqx.nn.MLP(width, out, hidden_dim, num_layers,
                                     activation=jax.nn.gelu, key=key,
                                     dtype=problem.start.dtype))
    return {"force": ForceControl, "potential": PotentialControl,
            "displacement": DisplacementControl}[kind](mlp)


def _draw(engine, target, state, key, n, keep=False):
    """``n`` paths of the engine's control (at its temperature), weighed against P."""
    problem = transition_problem(target, engine.name)
    factor = getattr(engine, "temperature_factor", 1.0)
    return rollout(problem, key, n, engine.control_fn(problem, state),
                   temperature=problem.temperature * factor,
                   reference_temperature=problem.temperature, keep=keep)


@register_fitted
class FittedTransitionControl:
    """A trained transition-path control: ``paths(rng_key, n)`` simulates ``n`` fresh
    controlled paths (a :class:`~helmholtz.paths.transition.Rollout` with positions);
    ``sample(rng_key, n)`` returns their end points ``"end"`` (flat states, not the
    model's noise site, whose draws would be K times larger) with log weights. Saved and
    loaded with the Result (parameters as arrays, the engine's options); loading rebuilds
    the model when it imports by name (``helmholtz.models.transition_paths``), else pass
    ``Result.load(path, target=...)``; without it the Result loads whole (its statistics
    and estimates) and the control says what it needs when asked to draw."""

    kind: ClassVar[str] = "transition-control"

    def __init__(self, engine, params, target, saved_leaves=None):
        self.engine, self._params, self.target = engine, params, target
        self._saved_leaves = saved_leaves

    @property
    def params(self):
        if self._params is None:
            self._problem()
        return self._params

    def _problem(self):
        if self.target is None:
            raise ValueError("this trained control was loaded without its model (the model "
                             "function does not import by name): pass "
                             "Result.load(path, target=Target.from_model(model)) to draw "
                             "from it")
        return transition_problem(self.target, self.engine.name)

    def control(self):
        """The trained force u(t, x) for one state (``t`` in [0, 1])."""
        return self.engine.control_fn(self._problem(), self.params)

    def paths(self, rng_key, num: int):
        """``num`` fresh paths with their states (``positions`` ``(K + 1, num, d)``,
        ``energies``), log weights and statistics (a Rollout)."""
        from helmholtz.driver import compiled

        self._problem()
        args = (self.engine, self.target, self.params, rng_key, num, True)
        return compiled(_draw, *args)(*args)

    def sample(self, rng_key, num: int) -> dict:
        from helmholtz.driver import compiled

        self._problem()
        args = (self.engine, self.target, self.params, rng_key, num)
        paths = compiled(_draw, *args)(*args)
        return {"end": np.asarray(paths.end), "log_weight": np.asarray(paths.log_weight,
                                                                       np.float64)}

    def to_saved(self):
        from helmholtz.engines.svi import _model_reference

        options = {k: _jsonable(v) for k, v in self.engine.options().items()}
        leaves = (self._saved_leaves if self._params is None
                  else jax.tree_util.tree_leaves(self._params))
        meta = {"engine": self.engine.name, "options": options,
                "dim": int(self.target.dim) if self.target is not None else None,
                **(_model_reference(self.target) if self.target is not None else {})}
        return meta, {f"p{i}": np.asarray(x) for i, x in enumerate(leaves)}

    @classmethod
    def from_saved(cls, meta, arrays, target=None):
        from helmholtz.engines.base import get_engine, with_options
        from helmholtz.engines.svi import saved_target

        engine = with_options(get_engine(meta["engine"]), dict(meta["options"]))
        target = saved_target(meta, target, "transition control")
        if target is None:
            return cls(engine, None, None, [arrays[f"p{i}"] for i in range(len(arrays))])
        problem = transition_problem(target, engine.name)
        skeleton = jax.eval_shape(lambda: engine.param_skeleton(problem))
        shapes, treedef = jax.tree_util.tree_flatten(skeleton)
        if len(arrays) != len(shapes) or any(arrays[f"p{i}"].shape != s.shape
                                             for i, s in enumerate(shapes)):
            raise ValueError("the saved tps parameters do not fit the control network its "
                             "options build")
        leaves = [jnp.asarray(arrays[f"p{i}"], shapes[i].dtype) for i in range(len(shapes))]
        return cls(engine, jax.tree_util.tree_unflatten(treedef, leaves), target)
