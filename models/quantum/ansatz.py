"""Wavefunction ansätze as equinox modules: ``module(x) -> log|ψ(x)|`` for one
configuration x of shape (n_particles, dim).

* :class:`Gaussian` — ψ = exp(−a|x|²/2), exact for the harmonic oscillator at a = ω.
* :class:`Hydrogenic` — a product of 1s Slater functions exp(−ζ r) on one nucleus, exact
  for the hydrogen atom at ζ = 1.
* :class:`SlaterJastrow` — det Φ↑ · det Φ↓ · e^J: orbitals Φ = (atomic Gaussians) × C,
  with C initialised from Hartree–Fock (pyscf, :mod:`.hf`), and a Jastrow factor that
  satisfies Kato's cusp conditions exactly: e–n terms −Z r/(1 + b r) (Gaussian orbitals
  have zero slope at a nucleus, so the Jastrow alone gives ∂ log ψ/∂r = −Z there), e–e
  terms a r/(1 + b r) with a = ½ for antiparallel and ¼ for parallel spins, plus learned
  e–n, e–e and e–e–n terms of smooth features (Gaussians in r, so their slope at
  coalescence is zero and the cusps stay exact). The learned terms' last layers start
  at zero, so the untrained ansatz is Hartree–Fock with the cusp Jastrow.

A Jastrow of this kind (Drummond, Towler & Needs, Phys. Rev. B 70, 235119, 2004, with
a small network in place of their polynomials) is what the neural Jastrows of
Schätzle, Hermann & Noé (2021) and others refine; it is written here because neither
numpyro nor the quantum-chemistry codes give a differentiable JAX wavefunction.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Gaussian", "Hydrogenic", "SlaterJastrow", "Jastrow", "slater_jastrow", "safe_norm",
           "frozen"]

_SCALES = (0.1, 0.4, 1.5, 5.0)   # widths (bohr²) of the Gaussian features of the learned Jastrow


def safe_norm(v, axis=-1):
    """|v| with a finite gradient at v = 0 (the gradient there is taken as 0)."""
    sq = jnp.sum(v ** 2, axis=axis)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


class Gaussian(eqx.Module):
    """log ψ = −a|x|²/2 (a = exp(log_a)); the exact harmonic-oscillator ground state at a = ω."""

    log_a: jax.Array

    def __init__(self, a: float = 1.0):
        self.log_a = jnp.log(jnp.asarray(a, jnp.float32 if not jax.config.jax_enable_x64
                                         else jnp.float64))

    def __call__(self, x):
        return -0.5 * jnp.exp(self.log_a) * jnp.sum(x ** 2)


class Hydrogenic(eqx.Module):
    """log ψ = −ζ Σᵢ |rᵢ − R| (ζ = exp(log_zeta)): 1s Slater functions on one nucleus; exact
    for the hydrogen atom at ζ = 1 (E_loc = −½ everywhere)."""

    log_zeta: jax.Array
    centre: jax.Array

    def __init__(self, zeta: float = 1.0, centre=(0.0, 0.0, 0.0)):
        dt = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        self.log_zeta = jnp.log(jnp.asarray(zeta, dt))
        self.centre = jnp.asarray(centre, dt)

    def __call__(self, x):
        return -jnp.exp(self.log_zeta) * jnp.sum(safe_norm(x - frozen(self.centre)))


def frozen(tree):
    """``tree`` with every array behind ``stop_gradient``: constants an ansatz carries
    (nuclear positions and charges, basis exponents) that training must not move (an
    exponent that turned negative would make ψ grow without bound)."""
    return jax.tree_util.tree_map(
        lambda a: jax.lax.stop_gradient(a) if eqx.is_array(a) else a, tree)


def _features(r):
    """Smooth features of a distance r: Gaussians of r² (zero slope at r = 0)."""
    return jnp.exp(-(r[..., None] ** 2) / jnp.asarray(_SCALES, r.dtype))


class _MLP(eqx.Module):
    layers: list

    def __init__(self, key, n_in, width, depth):
        keys = jax.random.split(key, depth + 1)
        sizes = [n_in] + [width] * depth
        self.layers = [eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:],
                                                                   keys[:-1], strict=True)]
        last = eqx.nn.Linear(sizes[-1], 1, key=keys[-1])
        last = eqx.tree_at(lambda m: (m.weight, m.bias), last,
                           (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
        self.layers.append(last)

    def __call__(self, h):
        for layer in self.layers[:-1]:
            h = jnp.tanh(layer(h))
        return self.layers[-1](h)[0]


class Jastrow(eqx.Module):
    """J(x) for electrons x (n_el, 3): exact cusps plus learned smooth e–n, e–e, e–e–n terms."""

    nuclei: jax.Array
    charges: jax.Array
    n_up: int = eqx.field(static=True)
    log_b_en: jax.Array
    log_b_ee: jax.Array
    en: _MLP | None
    ee: _MLP | None
    een: _MLP | None

    def __init__(self, key, system, *, width: int = 16, depth: int = 2, learned: bool = True):
        dt = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        self.nuclei = jnp.asarray(system.nuclei, dt)
        self.charges = jnp.asarray(system.z, dt)
        self.n_up = system.n_up
        # the cusp terms act within ~1/b of a coalescence; b = 2Z keeps the e–n one inside
        # the 1s shell, so the Hartree–Fock orbitals keep their shape elsewhere
        self.log_b_en = jnp.log(2.0 * self.charges)
        self.log_b_ee = jnp.log(jnp.asarray([1.0, 1.0], dt))
        k1, k2, k3 = jax.random.split(key, 3)
        nf = len(_SCALES)
        self.en = _MLP(k1, nf + len(system.z), width, depth) if learned else None
        self.ee = _MLP(k2, nf + 1, width, depth) if learned and system.n_electrons > 1 else None
        self.een = (_MLP(k3, 3 * nf + len(system.z), width, depth)
                    if learned and system.n_electrons > 1 else None)

    def __call__(self, x):
        n = x.shape[0]
        nuclei, charges = frozen((self.nuclei, self.charges))           # fixed, not trained
        n_nuc = nuclei.shape[0]
        r_en = safe_norm(x[:, None, :] - nuclei[None])                  # (n, N)
        b_en = jnp.exp(self.log_b_en)
        j = -jnp.sum(charges * r_en / (1.0 + b_en * r_en))
        onehot = jnp.eye(n_nuc, dtype=x.dtype)
        f_en = _features(r_en)                                          # (n, N, F)
        if self.en is not None:
            inp = jnp.concatenate([f_en, jnp.broadcast_to(onehot, (n, n_nuc, n_nuc))], -1)
            j = j + jnp.sum(jax.vmap(jax.vmap(self.en))(inp))
        if n > 1:
            i, k = np.triu_indices(n, 1)
            same = jnp.asarray((i < self.n_up) == (k < self.n_up))
            r_ee = safe_norm(x[i] - x[k])
            a = jnp.where(same, 0.25, 0.5)
            b = jnp.exp(jnp.where(same, self.log_b_ee[1], self.log_b_ee[0]))
            j = j + jnp.sum(a * r_ee / (1.0 + b * r_ee))
            if self.ee is not None:
                f_ee = _features(r_ee)
                inp = jnp.concatenate([f_ee, same[:, None].astype(x.dtype)], -1)
                j = j + jnp.sum(jax.vmap(self.ee)(inp))
            if self.een is not None:
                fe = jnp.broadcast_to(_features(r_ee)[:, None], (len(i), n_nuc, len(_SCALES)))
                oh = jnp.broadcast_to(onehot, (len(i), n_nuc, n_nuc))
                a_in = jnp.concatenate([f_en[i], f_en[k], fe, oh], -1)
                b_in = jnp.concatenate([f_en[k], f_en[i], fe, oh], -1)
                g = jax.vmap(jax.vmap(self.een))
                j = j + 0.5 * jnp.sum(g(a_in) + g(b_in))
        return j


def _logdet(m):
    if m.shape[-1] == 0:
        return jnp.zeros((), m.dtype)
    return jnp.linalg.slogdet(m)[1]


class SlaterJastrow(eqx.Module):
    """log|ψ| = log|det Φ↑| + log|det Φ↓| + J, Φ[i, o] = Σ_μ χ_μ(rᵢ) C[μ, o].

    Trained: C, the Jastrow, and a positive scale exp(s_k) of the exponents of each
    contracted radial function (the Gaussian basis can then tighten towards the cusp
    region or spread, as a basis optimisation would).

    Build with :func:`slater_jastrow` (Hartree–Fock orbitals from pyscf); ``basis`` is a
    :class:`.hf.GaussianBasis` (χ), ``coeff_up``/``coeff_down`` the orbital coefficients
    (trained), ``jastrow`` a :class:`Jastrow`.
    """

    basis: eqx.Module
    coeff_up: jax.Array
    coeff_down: jax.Array
    jastrow: Jastrow
    log_exponent_scale: jax.Array
    n_up: int = eqx.field(static=True)

    def __init__(self, basis, coeff_up, coeff_down, jastrow, n_up):
        dt = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        self.basis = basis
        self.log_exponent_scale = jnp.zeros(basis.exponents.shape[0], dt)
        self.coeff_up = jnp.asarray(coeff_up, dt)
        self.coeff_down = jnp.asarray(coeff_down, dt)
        self.jastrow = jastrow
        self.n_up = n_up

    def orbitals(self, x):
        """(Φ↑ (n_up, n_up), Φ↓ (n_down, n_down)): orbital o at electron i."""
        # the basis is fixed but for one scale per radial function, exp(s) > 0 (a trained
        # exponent that turned negative would make ψ grow without bound)
        basis = frozen(self.basis)
        basis = eqx.tree_at(lambda b: b.exponents, basis,
                            basis.exponents * jnp.exp(self.log_exponent_scale)[:, None])
        ao = basis(x)                                                   # (n, n_ao)
        return ao[: self.n_up] @ self.coeff_up, ao[self.n_up:] @ self.coeff_down

    def __call__(self, x):
        up, down = self.orbitals(x)
        return _logdet(up) + _logdet(down) + self.jastrow(x)


def slater_jastrow(system=None, *, key=None, basis: str = "cc-pvdz", width: int = 16,
                   depth: int = 2, learned: bool = True, name: str | None = None):
    """A :class:`SlaterJastrow` for ``system`` (a :class:`.systems.Molecule`, or ``name``
    of one in :data:`.systems.SYSTEMS`) with Hartree–Fock orbitals in ``basis`` (pyscf)."""
    from .hf import hartree_fock
    from .systems import molecule

    if system is None:
        if name is None:
            raise ValueError("slater_jastrow: give a system or the name of one")
        system = molecule(name)
    key = jax.random.key(0) if key is None else key
    hf = hartree_fock(system, basis)
    return SlaterJastrow(hf.basis, hf.coeff_up, hf.coeff_down,
                         Jastrow(key, system, width=width, depth=depth, learned=learned),
                         system.n_up)
