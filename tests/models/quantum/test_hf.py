"""Hartree–Fock orbitals in JAX against pyscf: the AOs (values, gradients, Laplacians)
against ``mol.eval_gto``, the occupied orbitals orthonormal in pyscf's overlap and giving
pyscf's energy, HF energies against an independent pyscf run and the HF limits, and the
errors for what pyscf refuses."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("pyscf")

from pyscf import scf  # noqa: E402

from helmholtz.models.quantum import hf as hf_module  # noqa: E402
from helmholtz.models.quantum.hf import (  # noqa: E402
    HF_LIMIT_ENERGY,
    GaussianBasis,
    HartreeFock,
    hartree_fock,
    pyscf_mole,
)
from helmholtz.models.quantum.systems import Molecule, SystemError, molecule  # noqa: E402

NAMES = ["He", "H2", "Li", "LiH", "Be"]


def points(system, n=200, seed=0):
    """Random points around the nuclei: most within 2 bohr, some on the far tail."""
    rng = np.random.default_rng(seed)
    centre = system.nuclei[rng.integers(len(system.z), size=n)]
    scale = np.where(rng.random(n) < 0.8, 0.8, 3.0)[:, None]
    return centre + scale * rng.normal(size=(n, 3))


@pytest.mark.parametrize("name", NAMES)
def test_basis_matches_pyscf(name, x64):
    system = molecule(name)
    hf = hartree_fock(system)
    mol = pyscf_mole(system)
    r = points(system)
    ao = hf.basis(jnp.asarray(r))
    assert ao.dtype == jnp.float64 and ao.shape == (200, mol.nao)
    ref = mol.eval_gto("GTOval_sph", r)
    np.testing.assert_allclose(np.asarray(ao), ref, rtol=0, atol=1e-10)
    # orbitals are basis @ coefficients, and batch dimensions pass through
    up, down = hf.orbitals(r.reshape(20, 10, 3))
    assert up.shape == (20, 10, system.n_up) and down.shape == (20, 10, system.n_down)
    np.testing.assert_allclose(np.asarray(up).reshape(200, -1), ref @ hf.coeff_up, atol=1e-10)
    np.testing.assert_allclose(np.asarray(down).reshape(200, -1), ref @ hf.coeff_down,
                               atol=1e-10)


def test_basis_layout_has_d_shells_and_general_contractions(x64):
    # cc-pVDZ on Be: a generally contracted s shell (two contractions), p and d shells
    mol = pyscf_mole(molecule("Be"))
    assert max(mol.bas_nctr(i) for i in range(mol.nbas)) == 2
    basis = GaussianBasis.from_pyscf(mol)
    assert max(sum(p) for p in basis.powers) == 2
    assert basis.n_cart == mol.nao_cart() == 15 and basis.n_ao == mol.nao == 14


def test_derivatives_match_pyscf(x64):
    """∇ and ∇² of the AOs by automatic differentiation against pyscf's analytic
    derivatives, and finite at a nucleus (where VMC samples do land)."""
    system = molecule("LiH")
    hf = hartree_fock(system)
    mol = pyscf_mole(system)
    # random points and the two nuclei, in one compiled call (forward over forward)
    r = np.concatenate([points(system, n=40, seed=1), system.nuclei])
    ref = mol.eval_gto("GTOval_sph_deriv2", r)    # value, x, y, z, xx, xy, xz, yy, yz, zz

    @jax.jit
    def derivatives(r):
        return (jax.vmap(jax.jacfwd(hf.basis))(r),                   # (n, n_ao, 3)
                jax.vmap(jax.jacfwd(jax.jacfwd(hf.basis)))(r))      # (n, n_ao, 3, 3)

    jac, hess = map(np.asarray, derivatives(jnp.asarray(r)))
    assert np.all(np.isfinite(hess))
    np.testing.assert_allclose(np.moveaxis(jac, -1, 0), ref[1:4], atol=1e-9)
    lap = np.trace(hess, axis1=-2, axis2=-1)
    np.testing.assert_allclose(lap, ref[4] + ref[7] + ref[9], atol=1e-7, rtol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_occupied_orbitals_orthonormal_and_give_the_energy(name, x64):
    system = molecule(name)
    hf = hartree_fock(system)
    mol = pyscf_mole(system)
    s = mol.intor("int1e_ovlp")
    for c, n in ((hf.coeff_up, system.n_up), (hf.coeff_down, system.n_down)):
        assert c.shape == (mol.nao, n)
        np.testing.assert_allclose(c.T @ s @ c, np.eye(n), atol=1e-10)
    # ROHF: the down orbitals are the first up ones (the doubly occupied core)
    np.testing.assert_array_equal(hf.coeff_up[:, :system.n_down], hf.coeff_down)
    # the selected orbitals are the occupied ones: their determinant has pyscf's energy
    dm = np.stack([hf.coeff_up @ hf.coeff_up.T, hf.coeff_down @ hf.coeff_down.T])
    assert scf.UHF(mol).energy_tot(dm=dm) == pytest.approx(hf.energy, abs=1e-9)


# measured here (pyscf 2.14, cc-pVDZ, conv_tol 1e-10): the basis-set error of each
MEASURED_CC_PVDZ = {"He": -2.85516048, "H2": -1.12870945, "Li": -7.43241988,
                    "LiH": -7.98361861, "Be": -14.57233763}


@pytest.mark.parametrize("name", NAMES)
def test_energy_against_pyscf_and_hf_limit(name):
    system = molecule(name)
    hf = hartree_fock(system)
    mol = pyscf_mole(system)
    mf = scf.RHF(mol) if system.spin == 0 else scf.ROHF(mol)
    mf.conv_tol = 1e-10
    assert mf.kernel() == pytest.approx(hf.energy, abs=1e-8)
    assert hf.energy == pytest.approx(MEASURED_CC_PVDZ[name], abs=1e-6)
    # variational: above the HF limit, by cc-pVDZ's basis-set error (6.5 mHa for He,
    # 4.9 for H2, 3.7 for LiH, 0.7 for Be, 0.3 for Li)
    error = hf.energy - HF_LIMIT_ENERGY[name]
    assert 0 < error < 7e-3
    assert hf.energy > system.reference_energy    # and above the exact energy


def test_larger_basis_approaches_hf_limit():
    he = molecule("He")
    dz, tz = hartree_fock(he, "cc-pvdz"), hartree_fock(he, "cc-pVTZ")
    assert tz.basis_name == "cc-pvtz" and tz.n_ao == 14
    assert HF_LIMIT_ENERGY["He"] < tz.energy < dz.energy
    assert tz.energy - HF_LIMIT_ENERGY["He"] < 1e-3      # measured 0.53 mHa
    assert hartree_fock(he) is dz                          # cached


def test_float32_and_cache_per_precision(x64):
    system = molecule("LiH")
    r = points(system, n=50, seed=2)
    ref = pyscf_mole(system).eval_gto("GTOval_sph", r)
    h64 = hartree_fock(system)
    jax.config.update("jax_enable_x64", False)
    try:
        h32 = hartree_fock(system)
        assert h32 is not h64 and h32.basis.exponents.dtype == jnp.float32
        ao = h32.basis(r)
        up, _ = h32.orbitals(r)
    finally:
        jax.config.update("jax_enable_x64", True)
    assert ao.dtype == jnp.float32 and up.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(ao), ref, atol=1e-4 * np.abs(ref).max())
    assert hartree_fock(system) is h64
    assert isinstance(h64, HartreeFock) and h64.energy == h32.energy


@pytest.mark.filterwarnings("ignore:Basis may be available")
def test_pyscf_refusals_are_clear_errors():
    # a basis pyscf does not have
    with pytest.raises(SystemError, match="nonsense"):
        hartree_fock(molecule("He"), "nonsense-basis")
    # a fractional nuclear charge
    with pytest.raises(SystemError, match="whole nuclear charges"):
        hartree_fock(Molecule((1.5,), ((0.0, 0.0, 0.0),), 1, 0))
    # symbols that contradict the charges: pyscf would build He with 3 electrons and spin 0
    with pytest.raises(SystemError, match="symbol He has Z = 2"):
        hartree_fock(Molecule((1.0,), ((0.0, 0.0, 0.0),), 1, 1, symbols=("He",)))
    with pytest.raises(TypeError):
        hartree_fock("He")


def test_pyscf_own_refusal_is_wrapped(monkeypatch):
    # pyscf's own check (electron number and spin of different parity) behind ours
    system = molecule("H2")
    monkeypatch.setattr(Molecule, "spin", property(lambda self: 1))
    with pytest.raises(SystemError, match="pyscf refuses.*not consistent"):
        pyscf_mole(system)


def test_unconverged_scf_raises(monkeypatch):
    monkeypatch.setattr(hf_module, "SCF_MAX_CYCLE", 1)
    with pytest.raises(RuntimeError, match="did not converge"):
        hf_module._scf.__wrapped__(molecule("LiH"), "cc-pvdz")


def test_missing_pyscf_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyscf", None)
    with pytest.raises(ImportError, match="pip install pyscf"):
        hf_module._scf.__wrapped__(molecule("He"), "cc-pvdz")
