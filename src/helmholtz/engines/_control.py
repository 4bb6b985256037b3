"""Control networks of the path samplers (equinox modules acting on one state).

The default follows the Path Integral Sampler's (Zhang & Chen 2022, §4): a network of
(x, Fourier features of t) plus a time-only network that gates the target's score,

    u(t, x) = MLP([x, φ(t)]) + MLP_t(φ(t)) ⊙ clip(∇ log p̃(x)),

with both last layers zero, so that training starts from the uncontrolled reference
process (u ≡ 0) and the first importance weights are those of the reference.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["ControlNetwork", "control_network", "corrector_network", "zero_last_layer"]


def zero_last_layer(mlp: eqx.nn.MLP) -> eqx.nn.MLP:
    """``mlp`` with its output layer's weight and bias set to zero."""
    last = mlp.layers[-1]
    mlp = eqx.tree_at(lambda m: m.layers[-1].weight, mlp, jnp.zeros_like(last.weight))
    return eqx.tree_at(lambda m: m.layers[-1].bias, mlp, jnp.zeros_like(last.bias))


def _fourier(t, num_frequencies: int):
    k = jnp.arange(1, num_frequencies + 1, dtype=jnp.result_type(t))
    angle = jnp.pi * k * t
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)])


class ControlNetwork(eqx.Module):
    """u(t, x, score) → ``(d,)`` for one state; see the module docstring."""

    state_net: eqx.nn.MLP
    score_gate: eqx.nn.MLP | None
    num_frequencies: int = eqx.field(static=True)
    max_score: float = eqx.field(static=True)

    def __call__(self, t, x, score=None):
        features = _fourier(jnp.asarray(t, x.dtype), self.num_frequencies)
        u = self.state_net(jnp.concatenate([x, features]))
        if self.score_gate is not None and score is not None:
            u = u + self.score_gate(features) * jnp.clip(score, -self.max_score,
                                                          self.max_score)
        return u

    @property
    def uses_score(self) -> bool:
        return self.score_gate is not None


def control_network(dim: int, *, key, hidden_dim: int = 64, num_layers: int = 2,
                    num_frequencies: int = 8, use_score: bool = True,
                    max_score: float = 30.0, dtype=jnp.float32) -> ControlNetwork:
    """The default control network for states of dimension ``dim`` (GELU MLPs of
    ``num_layers`` hidden layers of ``hidden_dim``; last layers zero)."""
    k1, k2 = jax.random.split(key)
    width = dim + 2 * num_frequencies
    state_net = zero_last_layer(eqx.nn.MLP(width, dim, hidden_dim, num_layers,
                                           activation=jax.nn.gelu, key=k1, dtype=dtype))
    gate = None
    if use_score:
        gate = zero_last_layer(eqx.nn.MLP(2 * num_frequencies, dim, hidden_dim, num_layers,
                                          activation=jax.nn.gelu, key=k2, dtype=dtype))
    return ControlNetwork(state_net, gate, num_frequencies, float(max_score))


def corrector_network(dim: int, *, key, hidden_dim: int = 64, num_layers: int = 2,
                      dtype=jnp.float32) -> eqx.nn.MLP:
    """h(x) → ``(d,)``, ASBS's corrector ∇ log φ̂₁ (starts at zero)."""
    return zero_last_layer(eqx.nn.MLP(dim, dim, hidden_dim, num_layers,
                                      activation=jax.nn.gelu, key=key, dtype=dtype))
