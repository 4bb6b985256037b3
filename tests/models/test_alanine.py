"""Alanine dipeptide (amber99sb-ildn, vacuum): the JAX energy against OpenMM, the backbone
dihedrals and RMSD against mdtraj, and the transition-path endpoints."""

import copy
import io
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helmholtz.models.molecules import alanine

NUM_FRAMES = 10
NOISE_NM = 0.005

_heavy_rmsd = jax.jit(lambda a, b: alanine.kabsch_rmsd(a, b))  # default: heavy atoms


# float64 for every test here (the references are double precision)
pytestmark = pytest.mark.usefixtures("x64_module")


@pytest.fixture(scope="module")
def molecule():
    return alanine.load()


@pytest.fixture(scope="module")
def structures(molecule):
    """The minimised structure and the two endpoints, ``(3, 22, 3)``."""
    return np.stack([molecule.positions, molecule.start, molecule.target])


@pytest.fixture(scope="module")
def jax_results(molecule, frames, structures):
    """Energies, forces and terms of the ten frames then the three structures, from one
    compiled function (op-by-op dispatch in float64 costs seconds per new shape)."""

    @jax.jit
    def evaluate(params, x):
        e, grad = jax.vmap(jax.value_and_grad(alanine.energy, argnums=1), in_axes=(None, 0))(
            params, x
        )
        return e, -grad, alanine.energy_terms(params, x)

    e, forces, terms = evaluate(molecule.params, jnp.asarray(np.concatenate([frames, structures])))
    return np.asarray(e), np.asarray(forces), {k: np.asarray(v) for k, v in terms.items()}


@pytest.fixture(scope="module")
def frames(molecule):
    """Ten Gaussian perturbations (σ = 0.005 nm) of the minimised structure, fixed seed."""
    rng = np.random.default_rng(20261130)
    return molecule.positions + NOISE_NM * rng.standard_normal((NUM_FRAMES, 22, 3))


@pytest.fixture(scope="module")
def openmm_system(molecule):
    """(topology, System) rebuilt from the stored PDB text with the developer script."""
    from openmm import app

    from helmholtz.models.molecules import build_alanine

    topology = app.PDBFile(io.StringIO(molecule.pdb)).topology
    return topology, build_alanine.create_system(topology)


def _openmm_energies_forces(system, frames, groups=-1):
    import openmm
    from openmm import unit

    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    energies, forces = [], []
    for x in frames:
        context.setPositions(x)
        state = context.getState(getEnergy=True, getForces=True, groups=groups)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        forces.append(
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        )
    return np.array(energies), np.array(forces)


def _angle_diff(a, b):
    return np.abs(np.angle(np.exp(1j * (np.asarray(a, np.float64) - np.asarray(b, np.float64)))))


def test_data_matches_a_fresh_openmm_system(molecule, openmm_system):
    """The shipped terms are what the converter reads from today's OpenMM System."""
    from helmholtz.models.molecules import build_alanine

    _, system = openmm_system
    fresh = build_alanine.system_parameters(system)
    with np.load(alanine.DATA_PATH) as stored:
        for key, value in fresh.items():
            np.testing.assert_array_equal(stored[key], value, err_msg=key)
    assert system.getNumParticles() == molecule.num_atoms == 22
    masses = [system.getParticleMass(i)._value for i in range(22)]
    np.testing.assert_allclose(molecule.masses, masses, rtol=0, atol=0)
    # 1-4 pairs kept with scaled parameters, 1-2/1-3 pairs excluded (not in the pair list)
    pairs = {tuple(sorted(p)) for p in molecule.params.pair_idx.tolist()}
    assert len(pairs) == len(molecule.params.pair_idx)
    for i, j in molecule.topology_bonds.tolist():
        assert (i, j) not in pairs


def test_energy_and_forces_match_openmm_reference(frames, openmm_system, jax_results):
    _, system = openmm_system
    e_ref, f_ref = _openmm_energies_forces(system, frames)
    e, forces, _ = jax_results
    assert e.dtype == np.float64
    de = np.abs(e[:NUM_FRAMES] - e_ref)
    df = np.abs(forces[:NUM_FRAMES] - f_ref)
    print(f"max |dE| = {de.max():.3e} kJ/mol, max |dF| = {df.max():.3e} kJ/mol/nm")
    assert de.max() < 1e-3
    assert df.max() < 1e-2
    # the perturbations are real: energies spread and forces are large
    assert np.ptp(e_ref) > 1.0 and np.abs(f_ref).max() > 100.0


def test_energy_terms_match_openmm_force_groups(frames, openmm_system, jax_results):
    """Per term (bonds, angles, torsions, nonbonded) so that a failure names its term."""
    import openmm

    _, system = openmm_system
    system = copy.deepcopy(system)
    group_of = {
        openmm.HarmonicBondForce: 1,
        openmm.HarmonicAngleForce: 2,
        openmm.PeriodicTorsionForce: 3,
        openmm.NonbondedForce: 4,
    }
    for force in system.getForces():
        force.setForceGroup(group_of.get(type(force), 0))
    terms = {k: v[:3] for k, v in jax_results[2].items()}
    ours = {
        1: terms["bond"],
        2: terms["angle"],
        3: terms["torsion"],
        4: terms["coulomb"] + terms["lj"],
    }
    for group, value in ours.items():
        e_ref, _ = _openmm_energies_forces(system, frames[:3], groups={group})
        np.testing.assert_allclose(value, e_ref, rtol=0, atol=1e-6, err_msg=f"force group {group}")


def test_energy_shapes_batches_and_stored_openmm_energies(molecule, structures, jax_results):
    """(22, 3) -> (), (..., 22, 3) -> (...), and the energies the build script recorded."""
    e = jax_results[0][NUM_FRAMES:]
    energy = jax.jit(alanine.energy_fn(molecule))
    single = energy(structures[1])
    assert single.shape == () and float(single) == pytest.approx(e[1], rel=1e-12)
    batch = energy(structures.reshape(3, 1, 22, 3))
    assert batch.shape == (3, 1)
    np.testing.assert_allclose(np.asarray(batch)[:, 0], e, rtol=1e-12)
    with np.load(alanine.DATA_PATH) as stored:
        recorded = [float(stored[f"openmm_energy_{k}"]) for k in ("positions", "start", "target")]
    np.testing.assert_allclose(e, recorded, rtol=0, atol=1e-6)


def test_phi_psi_match_mdtraj(molecule, frames, openmm_system):
    import mdtraj as md
    topology, _ = openmm_system
    xyz = np.concatenate([frames, np.stack([molecule.positions, molecule.start, molecule.target])])
    traj = md.Trajectory(xyz, md.Topology.from_openmm(topology))
    phi_idx, phi_ref = md.compute_phi(traj)
    psi_idx, psi_ref = md.compute_psi(traj)
    np.testing.assert_array_equal(phi_idx[0], molecule.phi_quartet)
    np.testing.assert_array_equal(psi_idx[0], molecule.psi_quartet)
    phi, psi = alanine.phi_psi(xyz, molecule)
    assert phi.shape == psi.shape == (NUM_FRAMES + 3,)
    assert _angle_diff(phi, phi_ref[:, 0]).max() < 1e-6
    assert _angle_diff(psi, psi_ref[:, 0]).max() < 1e-6
    # the generic dihedral on an arbitrary quartet: an improper and an H-C-C-H torsion
    for quartet in ([4, 6, 8, 10][::-1], [9, 8, 12, 13]):
        ref = md.compute_dihedrals(traj, [quartet])[:, 0]
        assert _angle_diff(alanine.dihedral(xyz, quartet), ref).max() < 1e-6


def test_kabsch_rmsd_matches_mdtraj(molecule, frames, openmm_system):
    import mdtraj as md
    topology, _ = openmm_system
    xyz = np.concatenate([frames, np.stack([molecule.start, molecule.target])])
    traj = md.Trajectory(xyz, md.Topology.from_openmm(topology))
    heavy = [int(i) for i in molecule.heavy_indices]
    for reference in (0, NUM_FRAMES):  # a perturbed frame, then the C5 endpoint
        ref = md.rmsd(traj, traj, reference, atom_indices=heavy)
        ours = np.asarray(_heavy_rmsd(xyz, xyz[reference]))
        # mdtraj works in float32: its self-RMSD is ~1e-4 nm of rounding, not zero
        other = np.arange(len(xyz)) != reference
        assert np.abs(ours[other] - ref[other]).max() < 1e-6
        assert ours[reference] < 1e-6
    assert float(ours[NUM_FRAMES + 1]) > 0.05  # start to target


def test_kabsch_rmsd_is_invariant_to_rigid_motion_and_not_to_reflection(molecule):
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    rotation = q * np.sign(np.linalg.det(q))
    moved = molecule.start @ rotation.T + rng.standard_normal(3)
    mirrored = molecule.start * np.array([1.0, 1.0, -1.0])  # the D enantiomer
    a = np.stack([molecule.start, molecule.target, molecule.target, molecule.start])
    b = np.stack([moved, moved, molecule.start, mirrored])
    rmsd = np.asarray(_heavy_rmsd(a, b))
    assert rmsd[0] < 1e-7
    assert rmsd[1] == pytest.approx(rmsd[2], abs=1e-10)
    assert rmsd[3] > 0.01  # a reflection is not a rotation
    assert float(alanine.kabsch_rmsd(molecule.start, moved, np.arange(22))) < 1e-7


@pytest.mark.parametrize(
    ("name", "phi_deg", "psi_deg"),
    [
        ("start", -147.0, 159.0),
        ("target", 60.0, -41.0),
        ("start_restrained", -147.0, 159.0),
        ("target_restrained", 60.0, -41.0),
    ],
)
def test_endpoints_are_in_their_basins(molecule, name, phi_deg, psi_deg):
    phi, psi = alanine.phi_psi(getattr(molecule, name), molecule)
    print(f"{name}: phi = {math.degrees(phi):.2f}, psi = {math.degrees(psi):.2f}")
    assert _angle_diff(phi, math.radians(phi_deg)) < math.radians(15.0)
    assert _angle_diff(psi, math.radians(psi_deg)) < math.radians(15.0)


def test_stored_structures_are_minima(molecule, jax_results):
    """The C7eq global minimum and the free endpoints: forces vanish; C7eq is lowest."""
    e, forces, _ = jax_results
    e, forces = e[NUM_FRAMES:], forces[NUM_FRAMES:]
    assert np.abs(forces).max() < 1.0
    assert e[0] < min(e[1], e[2])
    phi, psi = np.degrees(np.asarray(alanine.phi_psi(molecule.positions, molecule)))
    assert -100 < phi < -60 and 40 < psi < 90
