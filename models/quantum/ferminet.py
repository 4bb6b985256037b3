"""A small FermiNet: a neural wavefunction for electrons around fixed nuclei, and its
pretraining on Hartree–Fock orbitals.

FermiNet (Pfau, Spencer, Matthews & Foulkes, "Ab initio solution of the many-electron
Schrödinger equation with deep neural networks", Phys. Rev. Research 2, 033429, 2020)
writes ψ as a sum of K products of spin-up and spin-down determinants,

    ψ(x) = Σ_k det[φ^k_o(x_i; {x_/i})]_up · det[φ^k_o(x_i; {x_/i})]_down,

whose "orbitals" φ^k_o(x_i; {x_/i}) depend on electron i and, symmetrically, on all the
others: a one-electron stream h_i and a two-electron stream g_ij, fed with the
electron–nucleus vectors and distances (r_i − R_I, |r_i − R_I|) and the electron–electron
ones (r_i − r_j, |r_i − r_j|), are updated layer by layer,

    h_i ← tanh(W [h_i, ⟨h⟩_up, ⟨h⟩_down, ⟨g_ij⟩_{j up}, ⟨g_ij⟩_{j down}] + b) (+ h_i),
    g_ij ← tanh(V g_ij + c) (+ g_ij),

(means over the electrons of each spin; the residual where the widths match), and the
orbital is a linear read-out of the last h_i times an envelope that makes it decay:

    φ^k_o(x_i) = (w_ko · h_i + b_ko) · Σ_I π_koI exp(−σ_koI |r_i − R_I|).

The means make each h_i equivariant under permutations of same-spin electrons, so
swapping two of them swaps two columns of one determinant: ψ is antisymmetric. Electrons
0 … n_up − 1 are spin up, the rest spin down (:mod:`.systems`); the up and down orbitals
have separate read-outs and envelopes.

What is simplified here, to fit a CPU:

* no KFAC: the network is trained by whatever optimiser the caller uses (Adam in
  :func:`pretrain`);
* few determinants (4 by default, against FermiNet's 16) and small widths (32 for the
  one-electron stream, 8 for the two-electron stream, 2 layers; FermiNet has 256 / 32 and
  4 layers);
* isotropic exponential envelopes (FermiNet's paper has anisotropic ones, Σ_koI a 3×3
  matrix);
* no electron–nucleus cusp enforced: the envelope exp(−σ|r − R|) has a cusp of slope −σ
  at each nucleus, which training (on the local energy) learns to bring towards −Z; the
  electron–electron cusps are left to the network's |r_ij| inputs, as in FermiNet.

Distances use a norm whose value is exact and whose derivatives at exactly zero are
zero (the diagonal r_ii, or an electron placed on a nucleus), so gradients and Laplacians
are finite everywhere. ψ is evaluated as sign and log-modulus, each determinant's
(closed forms up to 2×2, slogdet beyond) combined by a signed logsumexp, so neither a
large nor a tiny determinant overflows.

:func:`pretrain`, as FermiNet does before VMC, fits the orbitals of every determinant to
the occupied Hartree–Fock orbitals by least squares at walkers drawn around the nuclei,
which puts the nodes of ψ near those of the HF determinant before the energy is ever
minimised.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .ansatz import safe_norm
from .mcmc import init_walkers

__all__ = ["FermiNet", "pretrain", "pretrain_loss"]


def _slogdet(m):
    """(sign, log|det|) of the last two axes; 1×1 and 2×2 written out (the molecules here
    have at most two electrons of a spin: the closed forms compile and differentiate
    twice far faster than an LU decomposition), slogdet beyond."""
    n = m.shape[-1]
    if n > 2:
        return jnp.linalg.slogdet(m)
    d = m[..., 0, 0] if n == 1 else m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    return jnp.sign(d), jnp.log(jnp.abs(d))


def _shell(o: int) -> int:
    """Principal shell n of the o-th orbital (0-based) of one spin filled in order:
    1 orbital in n = 1, 4 in n = 2, 9 in n = 3, ..."""
    n, filled = 1, 1
    while o >= filled:
        n += 1
        filled += n * n
    return n


class FermiNet(eqx.Module):
    """ψ(x) = Σ_k det(up_k) · det(down_k) with FermiNet's permutation-equivariant orbitals
    (see the module's docstring); ``x`` is one configuration (n_el, 3) in bohr.

    ``width`` and ``pair_width`` are the widths of the one- and two-electron streams,
    ``layers`` the number of one-electron updates (the two-electron stream is updated
    ``layers − 1`` times: its last update would feed nothing), ``determinants`` K.
    """

    h_layers: list
    g_layers: list
    heads: list
    system: object = eqx.field(static=True)
    n_up: int = eqx.field(static=True)
    n_down: int = eqx.field(static=True)
    determinants: int = eqx.field(static=True)

    def __init__(self, key, system, *, width: int = 32, pair_width: int = 8, layers: int = 2,
                 determinants: int = 4):
        for name, v in (("width", width), ("pair_width", pair_width), ("layers", layers),
                        ("determinants", determinants)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"FermiNet: {name} must be an integer ≥ 1, got {v!r}")
        self.system = system
        self.n_up, self.n_down = int(system.n_up), int(system.n_down)
        self.determinants = K = int(determinants)
        z = np.asarray(system.z, np.float64)
        n_nuc = len(z)
        dtype = jnp.asarray(1.0).dtype
        d_h, d_g = [4 * n_nuc] + [width] * layers, [4] + [pair_width] * (layers - 1)
        shapes = []
        for layer in range(layers):
            shapes += [(3 * d_h[layer] + 2 * d_g[layer], width), (width,)]
            if layer < layers - 1:
                shapes += [(d_g[layer], pair_width), (pair_width,)]
        for n_s in (self.n_up, self.n_down):
            shapes += [(width, K * n_s), (K * n_s, n_nuc)]
        # one draw for all parameters (each eager draw of a new shape would compile a
        # program of its own), in float32 so that a key gives the same network in either
        # precision (kept a jax array: under ``equinox.filter_eval_shape``, which a saved
        # Result uses to rebuild the network, the key is traced)
        noise = jax.random.normal(key, (sum(math.prod(t) for t in shapes),), jnp.float32)
        draws, at = [], 0
        for t in shapes:
            draws.append(noise[at:at + math.prod(t)].reshape(t))
            at += math.prod(t)
        draws = iter(draws)

        def array(a):
            return jnp.asarray(a, dtype)

        def dense():
            w = next(draws)
            return (array(w / math.sqrt(w.shape[0])), array(0.1 * next(draws)))

        self.h_layers, self.g_layers = [], []
        for layer in range(layers):
            self.h_layers.append(dense())
            if layer < layers - 1:
                self.g_layers.append(dense())

        self.heads = []
        for n_s in (self.n_up, self.n_down):
            w = next(draws) / math.sqrt(width)
            # envelopes: σ ≈ Z_I / n (a hydrogen-like orbital of shell n), jittered per
            # determinant so that the determinants start apart; π = 1 on every nucleus
            shells = np.array([_shell(o) for o in range(n_s)], np.float64)
            sigma = (jnp.asarray(np.tile(z[None, :] / shells[:, None], (K, 1)), dtype)
                     * jnp.exp(0.1 * array(next(draws))))
            self.heads.append((array(w), array(np.zeros(K * n_s)),
                               array(np.ones((K * n_s, n_nuc))), array(sigma)))

    # ------------------------------------------------------------------ the streams
    def _features(self, x):
        nuc = jnp.asarray(self.system.nuclei, x.dtype)
        ae = x[:, None, :] - nuc[None]                      # (n, N, 3)
        r_ae = safe_norm(ae)                               # (n, N)
        ee = x[:, None, :] - x[None, :, :]                  # (n, n, 3)
        r_ee = safe_norm(ee)                               # (n, n), 0 on the diagonal
        h = jnp.concatenate([ae, r_ae[..., None]], -1).reshape(x.shape[0], -1)
        g = jnp.concatenate([ee, r_ee[..., None]], -1)
        return h, g, r_ae

    def _spin_means(self, h, g):
        n = h.shape[0]
        parts = [h]
        spans = ((0, self.n_up), (self.n_up, self.n_up + self.n_down))
        for lo, hi in spans:   # an empty spin contributes zeros (no mean over no electrons)
            m = jnp.mean(h[lo:hi], axis=0) if hi > lo else jnp.zeros(h.shape[1:], h.dtype)
            parts.append(jnp.broadcast_to(m, (n, h.shape[1])))
        for lo, hi in spans:
            parts.append(jnp.mean(g[:, lo:hi], axis=1) if hi > lo
                         else jnp.zeros((n, g.shape[-1]), g.dtype))
        return jnp.concatenate(parts, -1)

    def _stream(self, x):
        h, g, r_ae = self._features(x)
        for layer, (w, b) in enumerate(self.h_layers):
            new_h = jnp.tanh(self._spin_means(h, g) @ w + b)
            h_next = new_h + h if new_h.shape == h.shape else new_h
            if layer < len(self.g_layers):
                v, c = self.g_layers[layer]
                new_g = jnp.tanh(g @ v + c)
                g = new_g + g if new_g.shape == g.shape else new_g
            h = h_next
        return h, r_ae

    # ------------------------------------------------------------------ ψ
    def orbitals(self, x):
        """The orbital matrices at configuration x (n_el, 3): (up (K, n_up, n_up),
        down (K, n_down, n_down)), entry [k, o, i] orbital o of determinant k at
        electron i of that spin."""
        x = jnp.asarray(x)
        h, r_ae = self._stream(x)
        K, out = self.determinants, []
        for (lo, n_s), (w, b, pi, sigma) in zip(
                ((0, self.n_up), (self.n_up, self.n_down)), self.heads, strict=True):
            if n_s == 0:
                out.append(jnp.zeros((K, 0, 0), h.dtype))
                continue
            hs, rs = h[lo:lo + n_s], r_ae[lo:lo + n_s]      # (n_s, d), (n_s, N)
            linear = hs @ w + b                              # (n_s, K·n_s)
            env = jnp.sum(pi * jnp.exp(-jnp.abs(sigma) * rs[:, None, :]), axis=-1)
            phi = (linear * env).reshape(n_s, K, n_s)        # [i, k, o]
            out.append(jnp.transpose(phi, (1, 2, 0)))        # [k, o, i]
        return out[0], out[1]

    def sign_log(self, x):
        """(sign ψ(x), log|ψ(x)|), through the sign and log-modulus of each determinant
        (closed forms up to 2×2, slogdet beyond) and a signed logsumexp over the K
        products (a 0×0 determinant is 1)."""
        up, down = self.orbitals(x)
        signs, logs = jnp.ones((self.determinants,), up.dtype), 0.0
        for m in (up, down):
            if m.shape[-1] == 0:
                continue
            s, l = _slogdet(m)
            signs, logs = signs * s, logs + l
        # signed logsumexp: Σ_k s_k e^{l_k} = e^m Σ_k s_k e^{l_k − m}, m = max_k l_k (a
        # constant to differentiation: it cancels; finite even when every det is 0)
        logs = jnp.broadcast_to(logs, signs.shape)
        m = jax.lax.stop_gradient(jnp.max(logs))
        m = jnp.where(jnp.isfinite(m), m, 0.0)
        total = jnp.sum(signs * jnp.exp(logs - m))
        return jnp.sign(total), m + jnp.log(jnp.abs(total))

    def __call__(self, x):
        """log|ψ(x)|, the scalar VMC differentiates."""
        return self.sign_log(x)[1]


# ---------------------------------------------------------------------- pretraining
def _hf_targets(hf, x, n_up: int, n_down: int):
    """The occupied HF orbitals at one configuration, as [o, i] matrices per spin."""
    up = jnp.transpose(hf.orbitals(x[:n_up])[0])
    down = (jnp.transpose(hf.orbitals(x[n_up:])[1]) if n_down
            else jnp.zeros((0, 0), x.dtype))
    return up, down


def pretrain_loss(net: FermiNet, hf, x):
    """Σ_k ‖orbitals_k(x) − HF(x)‖² (both spins, HF(x)[o, i] the o-th occupied HF
    orbital at electron i), averaged over the walkers x (W, n_el, 3)."""

    def one(xw):
        up, down = net.orbitals(xw)
        t_up, t_down = _hf_targets(hf, xw, net.n_up, net.n_down)
        return jnp.sum((up - t_up) ** 2) + jnp.sum((down - t_down) ** 2)

    return jnp.mean(jax.vmap(one)(x))


def pretrain(net: FermiNet, hf, key, *, num_steps: int = 1000, num_walkers: int = 256,
             learning_rate: float = 3e-3, width: float = 1.0) -> FermiNet:
    """Fit every determinant's orbitals to the occupied Hartree–Fock orbitals ``hf``
    (anything with ``orbitals(r)``: r (..., 3) → (up (..., n_up), down (..., n_down)),
    e.g. :func:`helmholtz.models.quantum.hf.hartree_fock`) by least squares
    (:func:`pretrain_loss`), Adam at ``learning_rate``, ``num_steps`` steps each on
    ``num_walkers`` fresh walkers from :func:`.mcmc.init_walkers` (Gaussians of standard
    deviation ``width`` bohr around the nuclei). The steps run in one ``lax.scan``; the
    trained network is returned."""
    for name, v in (("num_steps", num_steps), ("num_walkers", num_walkers)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"pretrain: {name} must be an integer ≥ 1, got {v!r}")
    params, static = eqx.partition(net, eqx.is_inexact_array)
    optimizer = optax.adam(learning_rate)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype

    def loss(p, x):
        return pretrain_loss(eqx.combine(p, static), hf, x)

    def step(carry, k):
        p, opt_state = carry
        x = init_walkers(k, net.system, num_walkers, dtype, width=width)
        value, grads = jax.value_and_grad(loss)(p, x)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), value

    @jax.jit
    def run(p, k):
        (p, _), _ = jax.lax.scan(step, (p, optimizer.init(p)), jax.random.split(k, num_steps))
        return p

    return eqx.combine(run(params, key), static)
