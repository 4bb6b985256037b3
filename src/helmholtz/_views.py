"""Views of a Target that annealing and bridging engines consume: tempered and bridged.

Both are JAX pytrees whose leaves are the wrapped Targets' leaves (and β), so a new β or
new data of the same shapes never recompiles a function that takes a view as argument.
They are re-exported from :mod:`helmholtz.target`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from helmholtz.errors import ModelError

__all__ = ["Tempered", "Bridge", "bridge"]


class Tempered:
    """The tempered view π_β(z) ∝ p(z) L(z)^β of a Target (or of a :class:`Bridge`).

    .. math::

        \\log π_β(z) = \\log p(z) + β \\log L(z),

    with log p the base's ``log_prior`` and log L its ``log_likelihood``, both from one
    model trace (``log_prior_and_likelihood``). β = 0 is the reference (the prior), β = 1
    the posterior; annealed importance sampling (Neal 2001), SMC samplers (Del Moral,
    Doucet & Jasra 2006) and thermodynamic integration move along β. ``log_likelihood``
    stays untempered so that an engine can weight a step β → β' by (β' − β) log L(z).

    Build one with :meth:`Target.tempered` (or :meth:`Bridge.tempered`). β is a pytree
    leaf: ``jax.jit(f)(target.tempered(0.3))`` and ``jax.jit(f)(target.tempered(0.7))``
    share one compilation.
    """

    def __init__(self, base, beta):
        self._base = base
        self._beta = beta

    @property
    def base(self):
        """The untempered Target (or Bridge)."""
        return self._base

    @property
    def beta(self):
        return self._beta

    @property
    def dim(self) -> int:
        return self._base.dim

    def tempered(self, beta) -> Tempered:
        """The same base at another β (views do not nest)."""
        return self._base.tempered(beta)

    def log_prior_and_likelihood(self, z):
        """(log p(z), log L(z)) of the base, untempered, from one trace."""
        return self._base.log_prior_and_likelihood(z)

    def log_density(self, z):
        """log p(z) + β log L(z)."""
        log_prior, log_lik = self._base.log_prior_and_likelihood(z)
        return log_prior + self._beta * log_lik

    def grad_log_density(self, z):
        return jax.grad(self.log_density)(z)

    def log_prior(self, z):
        return self._base.log_prior(z)

    def log_likelihood(self, z):
        """The untempered log L(z) (for weight increments (β' − β) log L)."""
        return self._base.log_likelihood(z)

    def sample_reference(self, rng_key, num: int | None = None):
        """Draws from the base's reference (π_0 when the base is a Target)."""
        return self._base.sample_reference(rng_key, num)

    def constrain(self, z) -> dict:
        return self._base.constrain(z)

    def __repr__(self):
        return f"Tempered({self._base!r}, beta={self._beta})"

    def tree_flatten(self):
        return (self._base, self._beta), None

    @classmethod
    def tree_unflatten(cls, _, children):
        return cls(*children)


class Bridge:
    """The geometric path between two Targets over the same flat vector.

    .. math::

        \\log π_λ(z) = \\log p_A(z) + λ [\\log p_B(z) − \\log p_A(z)],

    presented as a Target whose "prior" is p_A and whose "likelihood" is the ratio
    p_B / p_A, so that any annealing engine that tempers a Target (``tempered(λ)``)
    moves from p_A (λ = 0) to p_B (λ = 1) and estimates log Z_B − log Z_A (Gelman & Meng
    1998, path sampling; Neal 2001). ``log_density`` is log p_B. Both densities are
    unnormalised; ``log_prior_and_likelihood`` traces each model once. There is no
    ``sample_reference``: a draw from p_A must come from an engine run on A.
    """

    def __init__(self, target_a, target_b):
        self._a, self._b = target_a, target_b

    @property
    def targets(self) -> tuple:
        """(A, B)."""
        return self._a, self._b

    @property
    def dim(self) -> int:
        return self._a.dim

    def tempered(self, beta) -> Tempered:
        """π_β on the path, β a pytree leaf (see :class:`Tempered`)."""
        return Tempered(self, jnp.asarray(beta, dtype=jnp.result_type(float)))

    def log_prior_and_likelihood(self, z):
        """(log p_A(z), log p_B(z) − log p_A(z))."""
        log_a = self._a.log_density(z)
        return log_a, self._b.log_density(z) - log_a

    def log_prior(self, z):
        """log p_A(z)."""
        return self._a.log_density(z)

    def log_likelihood(self, z):
        """log p_B(z) − log p_A(z)."""
        return self._b.log_density(z) - self._a.log_density(z)

    def log_density(self, z):
        """log p_B(z), the end of the path."""
        return self._b.log_density(z)

    def grad_log_density(self, z):
        return jax.grad(self.log_density)(z)

    def __repr__(self):
        return f"Bridge({self._a!r} -> {self._b!r})"

    def tree_flatten(self):
        return (self._a, self._b), None

    @classmethod
    def tree_unflatten(cls, _, children):
        return cls(*children)


def bridge(target_a, target_b) -> Bridge:
    """The geometric path from ``target_a`` to ``target_b`` (see :class:`Bridge`).

    Raises
    ------
    ModelError
        When the two Targets live on flat vectors of different dimensions.
    """
    if target_a.dim != target_b.dim:
        name_a = getattr(target_a, "name", type(target_a).__name__)
        name_b = getattr(target_b, "name", type(target_b).__name__)
        raise ModelError(
            f"cannot bridge '{name_a}' (dim {target_a.dim}) and '{name_b}' "
            f"(dim {target_b.dim}): a geometric path needs both Targets over the same flat "
            "vector z (same latent sites, same unconstrained shapes).")
    return Bridge(target_a, target_b)


jax.tree_util.register_pytree_node(Tempered, Tempered.tree_flatten, Tempered.tree_unflatten)
jax.tree_util.register_pytree_node(Bridge, Bridge.tree_flatten, Bridge.tree_unflatten)
