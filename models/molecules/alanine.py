"""Alanine dipeptide (ACE-ALA-NME, 22 atoms), amber99sb-ildn in vacuum, as a pure JAX energy.

The potential is OpenMM's for ``ForceField('amber99sbildn.xml').createSystem(topology,
nonbondedMethod=NoCutoff, constraints=None, rigidWater=False)`` (Lindorff-Larsen et al.
2010, Proteins 78, 1950), term by term:

.. math::

    U(x) = \\sum_{bonds} \\tfrac12 k_b (r - r_0)^2
         + \\sum_{angles} \\tfrac12 k_θ (θ - θ_0)^2
         + \\sum_{torsions} k_φ (1 + \\cos(n φ - φ_0))
         + \\sum_{pairs} \\frac{q_{ij}}{4π ε_0 r}
         + 4 ε_{ij} \\left[(σ_{ij}/r)^{12} - (σ_{ij}/r)^6\\right],

the pairs being every pair not excluded (q_ij = q_i q_j, Lorentz-Berthelot σ, ε) plus the
1-4 pairs with OpenMM's scaled exception parameters; 1-2 and 1-3 pairs are excluded. Units
are OpenMM's: positions in nm, energies in kJ/mol, forces −∇U in kJ/mol/nm.

Every function takes one configuration ``(22, 3)`` or a batch ``(..., 22, 3)`` and works
under ``jit``, ``vmap`` and ``grad``; use float64 (``jax_enable_x64``) to match OpenMM's
double-precision Reference platform to 1e-3 kJ/mol.

The parameters and structures are read from ``data/alanine_dipeptide.npz``, written once
by ``build_alanine.py`` (which needs OpenMM; this module does not).

>>> import jax
>>> from helmholtz.models.molecules import alanine
>>> mol = alanine.load()
>>> u = alanine.energy(mol.params, mol.positions)           # kJ/mol
>>> forces = -jax.grad(alanine.energy, argnums=1)(mol.params, mol.positions)
>>> phi, psi = alanine.phi_psi(mol.start)                   # radians
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = [
    "kabsch_superpose",
    "ONE_4PI_EPS0",
    "DATA_PATH",
    "AmberParams",
    "AlanineDipeptide",
    "load",
    "energy",
    "energy_terms",
    "energy_fn",
    "dihedral",
    "phi_psi",
    "kabsch_rmsd",
]

ONE_4PI_EPS0 = 138.93545764438198
"""1/(4π ε₀) in kJ·mol⁻¹·nm·e⁻², as OpenMM 8 has it (CODATA 2018; older OpenMM used
138.935456, which shifts this molecule's Coulomb energy by ~2e-6 kJ/mol)."""

DATA_PATH = Path(__file__).resolve().parent / "data" / "alanine_dipeptide.npz"


class AmberParams(NamedTuple):
    """Force-field terms as arrays (a pytree): indices into the atoms, nm, rad, kJ/mol, e.

    ``pair_*`` is the nonbonded pair list: every non-excluded pair with combined
    parameters, then the exception pairs (1-4) whose charge product or ε is non-zero.
    """

    bond_idx: np.ndarray  # (num_bonds, 2)
    bond_length: np.ndarray
    bond_k: np.ndarray
    angle_idx: np.ndarray  # (num_angles, 3)
    angle_theta0: np.ndarray
    angle_k: np.ndarray
    torsion_idx: np.ndarray  # (num_torsions, 4)
    torsion_periodicity: np.ndarray
    torsion_phase: np.ndarray
    torsion_k: np.ndarray
    pair_idx: np.ndarray  # (num_pairs, 2)
    pair_charge_prod: np.ndarray
    pair_sigma: np.ndarray
    pair_epsilon: np.ndarray


class AlanineDipeptide(NamedTuple):
    """The molecule: force field, topology and structures (positions in nm, ``(22, 3)``).

    ``positions`` is the minimised global minimum (C7eq); ``start`` the extended C5
    minimum near (φ, ψ) = (−147°, 159°) and ``target`` the C7ax minimum near (60°, −41°),
    the endpoints of a transition path, each minimised without restraint after a
    restrained minimisation (``start_restrained``, ``target_restrained``).
    """

    params: AmberParams
    positions: np.ndarray
    start: np.ndarray
    target: np.ndarray
    start_restrained: np.ndarray
    target_restrained: np.ndarray
    atom_names: tuple[str, ...]
    residue_names: tuple[str, ...]
    elements: tuple[str, ...]
    masses: np.ndarray  # (22,), dalton
    topology_bonds: np.ndarray  # (21, 2)
    heavy_indices: np.ndarray  # (10,)
    phi_quartet: np.ndarray  # C(ACE), N, CA, C
    psi_quartet: np.ndarray  # N, CA, C, N(NME)
    pdb: str  # the minimised structure as PDB text (rebuilds an OpenMM topology)

    @property
    def num_atoms(self) -> int:
        return len(self.atom_names)


def nonbonded_pairs(
    charge, sigma, epsilon, exception_idx, exception_charge_prod, exception_sigma, exception_epsilon
):
    """OpenMM's NonbondedForce (NoCutoff) as one pair list ``(idx, q_ij, σ_ij, ε_ij)``.

    Every pair i < j that is not an exception gets q_i q_j, (σ_i + σ_j)/2, √(ε_i ε_j);
    the exceptions replace their pair's parameters and are dropped where both q_ij and
    ε_ij vanish (exclusions), as OpenMM does.
    """
    num_atoms = len(charge)
    excluded = np.zeros((num_atoms, num_atoms), dtype=bool)
    excluded[exception_idx[:, 0], exception_idx[:, 1]] = True
    excluded |= excluded.T
    i, j = np.triu_indices(num_atoms, k=1)
    keep = ~excluded[i, j]
    i, j = i[keep], j[keep]
    live = (exception_charge_prod != 0.0) | (exception_epsilon != 0.0)
    idx = np.concatenate([np.stack([i, j], axis=1), exception_idx[live]]).astype(np.int32)
    charge_prod = np.concatenate([charge[i] * charge[j], exception_charge_prod[live]])
    sig = np.concatenate([0.5 * (sigma[i] + sigma[j]), exception_sigma[live]])
    eps = np.concatenate([np.sqrt(epsilon[i] * epsilon[j]), exception_epsilon[live]])
    return idx, charge_prod, sig, eps


def _frozen(x):
    x = np.asarray(x)
    x.flags.writeable = False
    return x


@functools.cache
def load(path: str | Path = DATA_PATH) -> AlanineDipeptide:
    """The molecule from the shipped data file (numpy float64 arrays, read-only, cached)."""
    with np.load(path, allow_pickle=False) as f:
        d = {k: f[k] for k in f.files}
    pair_idx, charge_prod, sig, eps = nonbonded_pairs(
        d["charge"],
        d["sigma"],
        d["epsilon"],
        d["exception_idx"],
        d["exception_charge_prod"],
        d["exception_sigma"],
        d["exception_epsilon"],
    )
    params = AmberParams(
        **{k: _frozen(d[k]) for k in AmberParams._fields if k in d},
        pair_idx=_frozen(pair_idx),
        pair_charge_prod=_frozen(charge_prod),
        pair_sigma=_frozen(sig),
        pair_epsilon=_frozen(eps),
    )
    return AlanineDipeptide(
        params=params,
        positions=_frozen(d["positions"]),
        start=_frozen(d["start"]),
        target=_frozen(d["target"]),
        start_restrained=_frozen(d["start_restrained"]),
        target_restrained=_frozen(d["target_restrained"]),
        atom_names=tuple(str(s) for s in d["atom_names"]),
        residue_names=tuple(str(s) for s in d["residue_names"]),
        elements=tuple(str(s) for s in d["elements"]),
        masses=_frozen(d["masses"]),
        topology_bonds=_frozen(d["topology_bonds"]),
        heavy_indices=_frozen(d["heavy_indices"]),
        phi_quartet=_frozen(d["phi_quartet"]),
        psi_quartet=_frozen(d["psi_quartet"]),
        pdb=str(d["pdb"]),
    )


def _atoms(positions, idx):
    """``positions[..., idx, :]`` split along the last axis of ``idx``: k arrays (..., m, 3)."""
    return [positions[..., idx[:, k], :] for k in range(idx.shape[1])]


def _norm(v):
    return jnp.sqrt(jnp.sum(v * v, axis=-1))


def _dihedral_vectors(p0, p1, p2, p3):
    """IUPAC dihedral (radians, (−π, π]) of the chain p0-p1-p2-p3, as mdtraj computes it:
    atan2(|b2| b1·(b2×b3), (b1×b2)·(b2×b3)) with b_k = p_k − p_{k−1}."""
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    c1 = jnp.cross(b2, b3)
    c2 = jnp.cross(b1, b2)
    y = jnp.sum(b1 * c1, axis=-1) * _norm(b2)
    x = jnp.sum(c2 * c1, axis=-1)
    return jnp.arctan2(y, x)


def energy_terms(params: AmberParams, positions) -> dict[str, jnp.ndarray]:
    """The five energy terms (kJ/mol), each of shape ``positions.shape[:-2]``.

    Keys: ``bond``, ``angle``, ``torsion`` (propers and impropers), ``coulomb``, ``lj``.
    """
    positions = jnp.asarray(positions)

    a, b = _atoms(positions, params.bond_idx)
    r = _norm(a - b)
    bond = jnp.sum(0.5 * params.bond_k * (r - params.bond_length) ** 2, axis=-1)

    a, b, c = _atoms(positions, params.angle_idx)
    u, v = a - b, c - b
    theta = jnp.arctan2(_norm(jnp.cross(u, v)), jnp.sum(u * v, axis=-1))
    angle = jnp.sum(0.5 * params.angle_k * (theta - params.angle_theta0) ** 2, axis=-1)

    phi = _dihedral_vectors(*_atoms(positions, params.torsion_idx))
    torsion = jnp.sum(
        params.torsion_k * (1.0 + jnp.cos(params.torsion_periodicity * phi - params.torsion_phase)),
        axis=-1,
    )

    a, b = _atoms(positions, params.pair_idx)
    r = _norm(a - b)
    coulomb = jnp.sum(ONE_4PI_EPS0 * params.pair_charge_prod / r, axis=-1)
    s6 = (params.pair_sigma / r) ** 6
    lj = jnp.sum(4.0 * params.pair_epsilon * (s6 * s6 - s6), axis=-1)
    return {"bond": bond, "angle": angle, "torsion": torsion, "coulomb": coulomb, "lj": lj}


def energy(params: AmberParams, positions) -> jnp.ndarray:
    """Potential energy U (kJ/mol) of ``positions`` (nm), ``(..., 22, 3) -> (...)``.

    The sum of :func:`energy_terms`; forces are ``-jax.grad(energy, argnums=1)``.
    """
    return sum(energy_terms(params, positions).values())


def energy_fn(molecule: AlanineDipeptide | None = None):
    """``positions -> U`` (kJ/mol) with the force field of ``molecule`` (default: :func:`load`)."""
    params = (molecule or load()).params
    return functools.partial(energy, params)


def dihedral(positions, quartet) -> jnp.ndarray:
    """Dihedral angle (radians, in (−π, π]) of atoms ``quartet`` = (i, j, k, l).

    ``positions``: ``(..., n, 3)``; returns ``(...)``. Same sign convention as
    ``mdtraj.compute_dihedrals`` (IUPAC: positive is clockwise looking along j → k).
    """
    positions = jnp.asarray(positions)
    return _dihedral_vectors(*(positions[..., int(i), :] for i in np.asarray(quartet)))


def phi_psi(positions, molecule: AlanineDipeptide | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Backbone (φ, ψ) in radians: φ = C(ACE)-N-Cα-C, ψ = N-Cα-C-N(NME), as mdtraj."""
    molecule = molecule or load()
    return dihedral(positions, molecule.phi_quartet), dihedral(positions, molecule.psi_quartet)


def kabsch_rmsd(a, b, indices=None) -> jnp.ndarray:
    """Root-mean-square deviation (nm) after optimal superposition (Kabsch 1976).

    Both structures are centred on the selected atoms, then rotated (proper rotations
    only) to minimise the deviation; as ``mdtraj.rmsd``, unweighted. The minimum is
    read off the singular values s of the covariance H = Aᵀ B (Kabsch; Theobald 2005):
    n·RMSD² = |A|² + |B|² − 2(s₁ + s₂ + sign(det H) s₃).

    ``a``, ``b``: ``(..., n, 3)`` (broadcast against each other); ``indices``: the atoms
    to use, by default the heavy atoms of alanine dipeptide. Returns ``(...)``.
    """
    if indices is None:
        indices = load().heavy_indices
    idx = np.asarray(indices)
    a = jnp.asarray(a)[..., idx, :]
    b = jnp.asarray(b)[..., idx, :]
    a = a - jnp.mean(a, axis=-2, keepdims=True)
    b = b - jnp.mean(b, axis=-2, keepdims=True)
    h = jnp.swapaxes(a, -1, -2) @ b
    s = jnp.linalg.svd(h, compute_uv=False)
    sign = jnp.sign(jnp.linalg.det(h))
    trace = s[..., 0] + s[..., 1] + sign * s[..., 2]
    msd = jnp.sum(a * a, axis=(-2, -1)) + jnp.sum(b * b, axis=(-2, -1)) - 2.0 * trace
    return jnp.sqrt(jnp.maximum(msd / idx.size, 0.0))


def kabsch_superpose(mobile, reference, indices=None) -> jnp.ndarray:
    """``mobile`` (n, 3) rotated and translated onto ``reference`` (n, 3) by the proper
    rotation that minimises the deviation on the atoms ``indices`` (all by default;
    Kabsch 1976), differentiable in both."""
    idx = np.arange(mobile.shape[-2]) if indices is None else np.asarray(indices)
    m_c = jnp.mean(mobile[idx], axis=0)
    r_c = jnp.mean(reference[idx], axis=0)
    a = mobile[idx] - m_c
    b = reference[idx] - r_c
    u, _, vt = jnp.linalg.svd(a.T @ b)
    d = jnp.sign(jnp.linalg.det(u @ vt))
    rot = u @ jnp.diag(jnp.array([1.0, 1.0, 1.0], mobile.dtype).at[2].set(d)) @ vt
    return (mobile - m_c) @ rot + r_c
