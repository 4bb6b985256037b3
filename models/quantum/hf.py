"""Hartree–Fock orbitals from pyscf, evaluated in JAX.

A Slater–Jastrow or FermiNet-style wavefunction starts far better from the occupied
Hartree–Fock orbitals than from random ones: FermiNet (Pfau, Spencer, Matthews and
Foulkes, Phys. Rev. Research 2, 033429, 2020) pretrains its orbitals on HF orbitals
before variational Monte Carlo, and a Slater–Jastrow ansatz can take them as its
determinant outright. pyscf computes the orbitals well, but evaluates the atomic orbitals
(``mol.eval_gto``) in NumPy and C: a wavefunction built on them could be neither traced
nor differentiated, and VMC needs ∇ψ and ∇²ψ by automatic differentiation. So this
module takes from pyscf only numbers — each shell's exponents and contraction
coefficients, the cartesian→spherical matrix, and the converged MO coefficients — and
evaluates the contracted Gaussians again in JAX (:class:`GaussianBasis`), in pyscf's AO
order, so that ``basis(r) @ mo_coeff`` are pyscf's molecular orbitals.

pyscf's conventions (checked against ``mol.eval_gto`` at random points, to 1e-15):

* A shell of angular momentum l on centre A has cartesian functions
  x^a y^b z^c Σ_p c_p exp(−α_p |r − A|²), a + b + c = l, ordered as pyscf (libcint)
  orders them: a from l down to 0, then b from l − a down to 0 (xx, xy, xz, yy, yz, zz).
  A generally contracted shell (``mol.bas_nctr(i) > 1``, e.g. the s shell of Be in
  cc-pVDZ) gives each contraction its own block of functions, contraction by contraction.
* ``mol.bas_ctr_coeff(i)`` are coefficients of *normalised* primitives; the coefficient
  of the bare primitive r^l exp(−α r²) is that times ``gto_norm(l, α)`` (what
  ``mol._libcint_ctr_coeff`` returns).
* s and p cartesian functions carry in addition the factor of the real spherical
  harmonic, 1/√(4π) and √(3/(4π)) (libcint's ``CINTcommon_fac_sp``); from d on the
  cartesian functions carry none, and ``mol.cart2sph_coeff()`` (normalised 'sp') holds the
  whole angular normalisation. The spherical AOs are the cartesian ones times that matrix;
  for p shells pyscf's spherical order is (px, py, pz), not m = −1, 0, 1.

Closed shells use RHF; open shells ROHF, whose doubly occupied orbitals are the spin-down
orbitals and doubly plus singly occupied ones the spin-up orbitals (read from
``mo_occ``, which for the atoms and molecules here is (2, …, 2, 1, …, 1, 0, …): the
lowest n_down and the lowest n_up orbitals).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .systems import ELEMENTS, Molecule, SystemError

__all__ = ["GaussianBasis", "HartreeFock", "hartree_fock", "pyscf_mole",
           "HF_LIMIT_ENERGY"]

HF_LIMIT_ENERGY = {"He": -2.861680, "H2": -1.133630, "Li": -7.432727, "LiH": -7.987352,
                   "Be": -14.573023}
"""Hartree–Fock limit energies (Hartree; ROHF for Li) of the named systems, at the
geometries of :data:`~helmholtz.models.quantum.systems.SYSTEMS` (Clementi & Roetti for
the atoms; Kołos & Roothaan / Cade & Huo for H2 and LiH). cc-pVDZ lies above them by
6.5 mHa (He), 4.9 (H2), 0.3 (Li), 3.7 (LiH) and 0.7 (Be), measured with pyscf 2.14."""

SCF_CONV_TOL = 1e-10
"""Convergence threshold of the SCF energy (Hartree)."""
SCF_MAX_CYCLE = 100
"""Most SCF iterations before :func:`hartree_fock` gives up."""

_SYMBOLS = {z: s for s, z in ELEMENTS.items()}


def _pyscf():
    try:
        import pyscf  # noqa: F401
        from pyscf import gto, scf
    except ImportError as e:
        raise ImportError("Hartree–Fock orbitals need pyscf: pip install pyscf (or the "
                          "'quantum' extra: pip install 'helmholtz-ppl[quantum]')") from e
    return gto, scf


# ---------------------------------------------------------------------------- the basis
class GaussianBasis(eqx.Module):
    """Contracted Gaussian atomic orbitals of a pyscf basis, evaluated in JAX.

    ``basis(r)`` for points r of shape (..., 3) (bohr) gives the spherical AOs
    (..., n_ao) in pyscf's order, equal to ``mol.eval_gto("GTOval_sph", r)``; it is
    differentiable everywhere (also on a nucleus) and vectorised over points.

    Each radial function k (one contraction of one shell) is Σ_p ``coefficients[k, p]``
    exp(−``exponents[k, p]`` |r − ``centres[k]``|²), with zero-padded primitives and the
    coefficients of bare primitives (pyscf's normalisation and the s/p harmonic factor
    included). Cartesian function j is radial function ``radial_index[j]`` times
    x^a y^b z^c about its centre, (a, b, c) = ``powers[j]``; the spherical AOs are the
    cartesian ones times ``cart2sph`` (n_cart, n_ao).
    """

    centres: jax.Array        # (n_radial, 3)
    exponents: jax.Array      # (n_radial, n_prim_max)
    coefficients: jax.Array   # (n_radial, n_prim_max)
    cart2sph: jax.Array       # (n_cart, n_ao)
    radial_index: tuple[int, ...] = eqx.field(static=True)              # (n_cart,)
    powers: tuple[tuple[int, int, int], ...] = eqx.field(static=True)   # (n_cart, 3)

    @classmethod
    def from_pyscf(cls, mol) -> GaussianBasis:
        """The AOs of a built ``pyscf.gto.Mole`` (spherical basis, ``mol.cart`` False)."""
        gto, _ = _pyscf()
        if mol.cart:
            raise ValueError("GaussianBasis evaluates spherical AOs; build the Mole with "
                             "cart=False (pyscf's default)")
        centres, exps, coefs, radial_index, powers = [], [], [], [], []
        for i in range(mol.nbas):
            l = int(mol.bas_angular(i))
            a = np.asarray(mol.bas_exp(i), np.float64)
            c = np.asarray(mol.bas_ctr_coeff(i), np.float64).reshape(len(a), -1)
            c = c * gto.gto_norm(l, a)[:, None]
            c = c * {0: 1 / np.sqrt(4 * np.pi), 1: np.sqrt(3 / (4 * np.pi))}.get(l, 1.0)
            centre = np.asarray(mol.bas_coord(i), np.float64)
            pw = [(lx, ly, l - lx - ly) for lx in range(l, -1, -1)
                  for ly in range(l - lx, -1, -1)]
            for k in range(int(mol.bas_nctr(i))):
                radial_index += [len(exps)] * len(pw)
                powers += pw
                centres.append(centre)
                exps.append(a)
                coefs.append(c[:, k])
        n_prim = max(len(a) for a in exps)
        pad = [(0, n_prim - len(a)) for a in exps]
        exps = np.stack([np.pad(a, p) for a, p in zip(exps, pad, strict=True)])
        coefs = np.stack([np.pad(c, p) for c, p in zip(coefs, pad, strict=True)])
        c2s = np.asarray(mol.cart2sph_coeff(), np.float64)
        if c2s.shape != (len(powers), mol.nao):
            raise AssertionError(f"cart2sph {c2s.shape} does not match {len(powers)} "
                                 f"cartesian and {mol.nao} spherical AOs")
        return cls(jnp.asarray(np.stack(centres)), jnp.asarray(exps), jnp.asarray(coefs),
                   jnp.asarray(c2s), tuple(radial_index), tuple(powers))

    @property
    def n_ao(self) -> int:
        return self.cart2sph.shape[1]

    @property
    def n_cart(self) -> int:
        return len(self.powers)

    def __call__(self, r):
        r = jnp.asarray(r)
        if r.shape[-1:] != (3,):
            raise ValueError(f"points must have shape (..., 3), got {r.shape}")
        if not jnp.issubdtype(r.dtype, jnp.floating):
            r = r.astype(jnp.result_type(float))
        return _evaluate(self, r)


@eqx.filter_jit
def _evaluate(basis: GaussianBasis, r):
    # compiled once per basis layout and shape of r (op by op, a first call took 1.5 s);
    # inside an outer jit, grad or vmap it is inlined
    dtype = jnp.result_type(r.dtype, basis.exponents.dtype)
    r = r.astype(dtype)
    d = r[..., None, :] - basis.centres.astype(dtype)                   # (..., n_rad, 3)
    r2 = jnp.sum(d * d, axis=-1)
    radial = jnp.sum(basis.coefficients.astype(dtype)
                     * jnp.exp(-basis.exponents.astype(dtype) * r2[..., None]), axis=-1)
    idx = np.asarray(basis.radial_index, np.intp)
    powers = np.asarray(basis.powers, np.intp).reshape(-1, 3)
    d = d[..., idx, :]                                                  # (..., n_cart, 3)
    # x^a as products (no x**0 or x**a with its ill-defined derivative at x = 0)
    monomials = [jnp.ones_like(d)]
    for _ in range(int(powers.max(initial=0))):
        monomials.append(monomials[-1] * d)
    monomials = jnp.stack(monomials, axis=-1)                      # (..., n_cart, 3, l+1)
    angular = monomials[..., np.arange(len(idx))[:, None], np.arange(3)[None], powers]
    cart = radial[..., idx] * jnp.prod(angular, axis=-1)                # (..., n_cart)
    return cart @ basis.cart2sph.astype(dtype)


# ------------------------------------------------------------------------- pyscf side
def pyscf_mole(system: Molecule, basis: str = "cc-pvdz"):
    """The built ``pyscf.gto.Mole`` of ``system`` in ``basis`` (bohr, spherical AOs).

    Raises :class:`~helmholtz.models.quantum.systems.SystemError` (a ValueError) for a
    molecule pyscf cannot represent (fractional nuclear charges, symbols that disagree
    with the charges, a charge or spin it refuses, a basis it does not know)."""
    gto, _ = _pyscf()
    z = [float(q) for q in system.charges]
    if any(abs(q - round(q)) > 1e-12 for q in z):
        raise SystemError(f"{system.name}: pyscf needs whole nuclear charges, got {tuple(z)}")
    if system.symbols:
        if len(system.symbols) != len(z):
            raise SystemError(f"{system.name}: {len(system.symbols)} symbols for {len(z)} "
                              "nuclei")
        for s, q in zip(system.symbols, z, strict=True):
            if s in ELEMENTS and ELEMENTS[s] != round(q):
                raise SystemError(f"{system.name}: symbol {s} has Z = {ELEMENTS[s]}, but the "
                                  f"nuclear charge is {q:g}")
        atoms = list(system.symbols)
    else:
        atoms = [_SYMBOLS.get(round(q), round(q)) for q in z]
    charge = system.charge
    if abs(charge - round(charge)) > 1e-12:
        raise SystemError(f"{system.name}: pyscf needs a whole total charge, got {charge:g}")
    mol = gto.Mole()
    mol.atom = [(a, tuple(p)) for a, p in zip(atoms, system.positions, strict=True)]
    mol.unit = "Bohr"
    mol.basis = basis
    mol.charge = int(round(charge))
    mol.spin = int(system.spin)
    mol.verbose = 0
    try:
        mol.build()
    except (RuntimeError, ValueError, KeyError, TypeError) as e:   # BasisNotFoundError too
        raise SystemError(f"pyscf refuses {system!r} (charge {mol.charge:+d}, spin "
                          f"n_up − n_down = {mol.spin}) in basis {basis!r}: "
                          f"{type(e).__name__}: {e}") from e
    if mol.nelectron != system.n_electrons or tuple(mol.nelec) != (system.n_up,
                                                                   system.n_down):
        raise SystemError(f"{system.name}: pyscf built {mol.nelec} (up, down) electrons for "
                          f"({system.n_up}, {system.n_down})")
    return mol


@functools.lru_cache(maxsize=32)
def _scf(system: Molecule, basis: str):
    """pyscf's converged SCF of ``system`` (RHF closed shell, ROHF open shell): the Mole,
    the occupied up and down MO coefficients (float64) and the total energy."""
    _, scf = _pyscf()
    mol = pyscf_mole(system, basis)
    mf = scf.RHF(mol) if system.n_up == system.n_down else scf.ROHF(mol)
    mf.conv_tol = SCF_CONV_TOL
    mf.max_cycle = SCF_MAX_CYCLE
    mf.verbose = 0
    energy = float(mf.kernel())
    if not mf.converged:
        raise RuntimeError(f"{type(mf).__name__} of {system.name} in {basis} did not converge "
                           f"in {mf.max_cycle} cycles (last energy {energy:.8f} Ha)")
    occ = np.asarray(mf.mo_occ)
    coeff = np.asarray(mf.mo_coeff, np.float64)
    double = np.flatnonzero(occ > 1.5)
    single = np.flatnonzero((occ > 0.5) & (occ < 1.5))
    up, down = np.concatenate([double, single]), double
    if len(up) != system.n_up or len(down) != system.n_down:
        raise RuntimeError(f"{system.name}: pyscf's occupations {occ.tolist()} do not give "
                           f"({system.n_up}, {system.n_down}) electrons")
    up_c, down_c = coeff[:, up].copy(), coeff[:, down].copy()
    up_c.flags.writeable = down_c.flags.writeable = False
    return mol, up_c, down_c, energy


# ------------------------------------------------------------------------ the result
@dataclass(frozen=True, eq=False)
class HartreeFock:
    """Converged Hartree–Fock of ``system`` in ``basis_name``: the AOs in JAX and the
    occupied MO coefficients, ``orbitals(r) = (basis(r) @ coeff_up, basis(r) @ coeff_down)``.

    Compared and hashed by identity (its fields hold arrays); :func:`hartree_fock`
    returns the same object for the same system, basis and precision."""

    system: Molecule
    basis_name: str
    basis: GaussianBasis
    coeff_up: np.ndarray     # (n_ao, n_up)
    coeff_down: np.ndarray   # (n_ao, n_down)
    energy: float

    @property
    def n_ao(self) -> int:
        return self.basis.n_ao

    def orbitals(self, r):
        """Occupied orbitals at points r (..., 3): (up (..., n_up), down (..., n_down))."""
        ao = self.basis(r)
        return (ao @ jnp.asarray(self.coeff_up, ao.dtype),
                ao @ jnp.asarray(self.coeff_down, ao.dtype))

    def __repr__(self):
        return (f"HartreeFock({self.system.name!r}, {self.basis_name!r}, n_ao={self.n_ao}, "
                f"energy={self.energy:.8f})")


@functools.lru_cache(maxsize=32)
def _hartree_fock(system: Molecule, basis: str, x64: bool) -> HartreeFock:
    mol, up, down, energy = _scf(system, basis)
    # concrete arrays even when called under a trace (a saved Result rebuilds its
    # wavefunction inside ``equinox.filter_eval_shape``): a cached tracer would poison
    # every later call for this system
    with jax.ensure_compile_time_eval():
        basis_fn = GaussianBasis.from_pyscf(mol)
    return HartreeFock(system, basis, basis_fn, up, down, energy)


def hartree_fock(system: Molecule, basis: str = "cc-pvdz") -> HartreeFock:
    """Hartree–Fock orbitals of ``system`` in ``basis`` (any basis name pyscf knows): RHF
    when n_up = n_down, ROHF otherwise.

    The SCF is cached by (system, basis); the JAX arrays of the basis are made in the
    precision in force (float64 under ``jax_enable_x64``), so the returned object is
    cached by that too. Raises ImportError without pyscf, SystemError (a ValueError) for
    a molecule or basis pyscf refuses, RuntimeError when the SCF does not converge."""
    if not isinstance(system, Molecule):
        raise TypeError(f"hartree_fock needs a Molecule, got {type(system).__name__}")
    return _hartree_fock(system, str(basis).lower(), bool(jax.config.jax_enable_x64))
