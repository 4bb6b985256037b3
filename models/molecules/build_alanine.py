"""Build alanine dipeptide with OpenMM and write ``data/alanine_dipeptide.npz`` (run once).

This is a developer script, not a runtime module: it needs ``openmm`` (a test extra), which
:mod:`helmholtz.models.molecules.alanine` never imports. Run it from the repository root::

    .venv/bin/python -m helmholtz.models.molecules.build_alanine   # or
    .venv/bin/python models/molecules/build_alanine.py

What it does, with no downloaded files:

1. Places the ten heavy atoms of ACE-ALA-NME from internal coordinates (a Z-matrix of
   Engh & Huber-like bond lengths and angles, trans peptide bonds, L-alanine) and writes
   them as PDB text; ``openmm.app.PDBFile`` adds the standard bonds and
   ``Modeller.addHydrogens`` the twelve hydrogens (OpenMM's ``hydrogens.xml``).
2. Builds the amber99sb-ildn ``System`` in vacuum (``NoCutoff``, no constraints) and reads
   every force-field term from it (:func:`system_parameters`).
3. Minimises on the Reference platform (double precision): the built structure gives the
   global C7eq minimum; the PIPS endpoints come from restraining (φ, ψ) with a harmonic
   ``CustomTorsionForce`` to the extended C5 basin (−147°, 159°) and to C7ax (60°, −41°),
   minimising, then minimising again with the restraint switched off.

The file stores positions in nm, the topology (atom and residue names, elements, masses,
bonds, PDB text of the minimised structure), heavy-atom indices, the φ and ψ quartets,
every force-field term, and OpenMM's energies of the stored structures.
"""

from __future__ import annotations

import copy
import io
import math
import random
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

FORCEFIELD = "amber99sbildn.xml"
DATA_PATH = Path(__file__).resolve().parent / "data" / "alanine_dipeptide.npz"

START_PHI_PSI = (-147.0, 159.0)
"""Extended C5 basin: the PIPS start (degrees)."""
TARGET_PHI_PSI = (60.0, -41.0)
"""C7ax: the PIPS target (degrees)."""
BUILD_PHI_PSI = (-80.0, 75.0)
"""(φ, ψ) of the Z-matrix build, in the C7eq basin (the vacuum global minimum)."""
RESTRAINT_K = 2000.0
"""Force constant of the φ/ψ restraint, kJ/mol/rad²."""
MINIMISE_TOLERANCE = 1e-3
"""``LocalEnergyMinimizer`` tolerance, kJ/mol/nm (root-mean-square force)."""


def _place(a, b, c, bond, angle, torsion):
    """Position of d with |cd| = bond, ∠bcd = angle, dihedral abcd = torsion (NeRF).

    Angles in degrees, lengths in Å; Parsons et al. (2005), J. Comput. Chem. 26, 1063.
    """
    angle, torsion = math.radians(angle), math.radians(torsion)
    bc = c - b
    bc /= np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d_local = bond * np.array(
        [-math.cos(angle), math.sin(angle) * math.cos(torsion), math.sin(angle) * math.sin(torsion)]
    )
    return c + d_local[0] * bc + d_local[1] * m + d_local[2] * n


def heavy_atom_pdb(phi: float = BUILD_PHI_PSI[0], psi: float = BUILD_PHI_PSI[1]) -> str:
    """PDB text of the ten heavy atoms of ACE-ALA-NME at backbone angles (φ, ψ) in degrees.

    Bond lengths (Å) and angles (°) are Engh & Huber's; ω = 180° (trans) for both peptide
    bonds; Cβ is placed on the L side (dihedral C-N-Cα-Cβ = −122.6°).
    """
    ace_ch3 = np.zeros(3)
    ace_c = np.array([1.52, 0.0, 0.0])
    dummy = np.array([2.0, 1.3, 0.0])  # fixes the plane of the first three atoms
    n = _place(dummy, ace_ch3, ace_c, 1.335, 116.6, 180.0)
    ca = _place(ace_ch3, ace_c, n, 1.458, 121.9, 180.0)
    ace_o = _place(ca, n, ace_c, 1.229, 122.7, 0.0)
    c = _place(ace_c, n, ca, 1.525, 111.2, phi)
    cb = _place(c, n, ca, 1.530, 110.5, -122.6)
    nme_n = _place(n, ca, c, 1.335, 116.2, psi)
    nme_c = _place(ca, c, nme_n, 1.458, 121.9, 180.0)
    o = _place(nme_c, nme_n, c, 1.229, 122.7, 0.0)
    atoms = [
        ("CH3", "ACE", 1, "C", ace_ch3),
        ("C", "ACE", 1, "C", ace_c),
        ("O", "ACE", 1, "O", ace_o),
        ("N", "ALA", 2, "N", n),
        ("CA", "ALA", 2, "C", ca),
        ("C", "ALA", 2, "C", c),
        ("O", "ALA", 2, "O", o),
        ("CB", "ALA", 2, "C", cb),
        ("N", "NME", 3, "N", nme_n),
        ("C", "NME", 3, "C", nme_c),
    ]
    lines = []
    for serial, (name, res, resid, element, xyz) in enumerate(atoms, start=1):
        lines.append(
            f"ATOM  {serial:5d} {name:<4s} {res:3s} A{resid:4d}    "
            f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}  1.00  0.00          {element:>2s}"
        )
    return "\n".join(lines + ["TER", "END"]) + "\n"


def pdb_text(topology, positions) -> str:
    """PDB text of ``positions`` (nm, numpy) on ``topology``."""
    out = io.StringIO()
    app.PDBFile.writeFile(topology, positions * 10.0 * unit.angstrom, out)
    return out.getvalue()


def topology_from_pdb(text: str):
    """OpenMM topology read back from PDB text (standard residues get standard bonds)."""
    return app.PDBFile(io.StringIO(text)).topology


def build_structure(phi: float = BUILD_PHI_PSI[0], psi: float = BUILD_PHI_PSI[1], seed: int = 0):
    """(topology, positions in nm as a numpy array) of the 22-atom molecule, unminimised.

    The topology is the one read back from the PDB text of the structure, so that the
    stored PDB text rebuilds it exactly (same atoms, same bond order, hence the same
    order of force-field terms in the ``System``).
    """
    pdb = app.PDBFile(io.StringIO(heavy_atom_pdb(phi, psi)))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    random.seed(seed)  # addHydrogens starts some hydrogens at random positions
    reference = openmm.Platform.getPlatformByName("Reference")  # deterministic, double
    modeller.addHydrogens(app.ForceField(FORCEFIELD), platform=reference)
    positions = np.array(modeller.positions.value_in_unit(unit.nanometer), dtype=np.float64)
    return topology_from_pdb(pdb_text(modeller.topology, positions)), positions


def create_system(topology) -> openmm.System:
    """The amber99sb-ildn vacuum ``System``: no cutoff, no constraints, flexible water."""
    forcefield = app.ForceField(FORCEFIELD)
    return forcefield.createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )


def system_parameters(system: openmm.System) -> dict[str, np.ndarray]:
    """Every energy term of ``system`` as numpy arrays (nm, rad, kJ/mol, e).

    Reads HarmonicBondForce, HarmonicAngleForce, PeriodicTorsionForce (propers and
    impropers as OpenMM stores them) and NonbondedForce (per-atom charge, σ, ε and every
    exception: the zeroed 1-2/1-3 exclusions and the scaled 1-4 pairs). Any other force,
    except the CMMotionRemover (no energy), raises: the JAX energy would miss it.
    """
    out: dict[str, np.ndarray] = {}
    seen = set()
    for force in system.getForces():
        name = type(force).__name__
        seen.add(name)
        if isinstance(force, openmm.HarmonicBondForce):
            rows = [force.getBondParameters(i) for i in range(force.getNumBonds())]
            out["bond_idx"] = np.array([[r[0], r[1]] for r in rows], dtype=np.int32)
            out["bond_length"] = np.array([r[2].value_in_unit(unit.nanometer) for r in rows])
            out["bond_k"] = np.array(
                [r[3].value_in_unit(unit.kilojoule_per_mole / unit.nanometer**2) for r in rows]
            )
        elif isinstance(force, openmm.HarmonicAngleForce):
            rows = [force.getAngleParameters(i) for i in range(force.getNumAngles())]
            out["angle_idx"] = np.array([r[:3] for r in rows], dtype=np.int32)
            out["angle_theta0"] = np.array([r[3].value_in_unit(unit.radian) for r in rows])
            out["angle_k"] = np.array(
                [r[4].value_in_unit(unit.kilojoule_per_mole / unit.radian**2) for r in rows]
            )
        elif isinstance(force, openmm.PeriodicTorsionForce):
            rows = [force.getTorsionParameters(i) for i in range(force.getNumTorsions())]
            out["torsion_idx"] = np.array([r[:4] for r in rows], dtype=np.int32)
            out["torsion_periodicity"] = np.array([r[4] for r in rows], dtype=np.int32)
            out["torsion_phase"] = np.array([r[5].value_in_unit(unit.radian) for r in rows])
            out["torsion_k"] = np.array([r[6].value_in_unit(unit.kilojoule_per_mole) for r in rows])
        elif isinstance(force, openmm.NonbondedForce):
            if force.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff:
                raise ValueError("expected NonbondedForce.NoCutoff")
            if force.getNumGlobalParameters() or force.getNumParticleParameterOffsets():
                raise ValueError("parameter offsets are not supported")
            rows = [force.getParticleParameters(i) for i in range(force.getNumParticles())]
            out["charge"] = np.array([r[0].value_in_unit(unit.elementary_charge) for r in rows])
            out["sigma"] = np.array([r[1].value_in_unit(unit.nanometer) for r in rows])
            out["epsilon"] = np.array([r[2].value_in_unit(unit.kilojoule_per_mole) for r in rows])
            rows = [force.getExceptionParameters(i) for i in range(force.getNumExceptions())]
            out["exception_idx"] = np.array([r[:2] for r in rows], dtype=np.int32)
            out["exception_charge_prod"] = np.array(
                [r[2].value_in_unit(unit.elementary_charge**2) for r in rows]
            )
            out["exception_sigma"] = np.array([r[3].value_in_unit(unit.nanometer) for r in rows])
            out["exception_epsilon"] = np.array(
                [r[4].value_in_unit(unit.kilojoule_per_mole) for r in rows]
            )
        elif not isinstance(force, openmm.CMMotionRemover):
            raise ValueError(f"unsupported force {name}")
    missing = {
        "HarmonicBondForce",
        "HarmonicAngleForce",
        "PeriodicTorsionForce",
        "NonbondedForce",
    } - seen
    if missing:
        raise ValueError(f"system lacks {sorted(missing)}")
    return out


def backbone_quartets(topology) -> tuple[np.ndarray, np.ndarray]:
    """φ = C(ACE)-N-Cα-C and ψ = N-Cα-C-N(NME) atom indices (mdtraj's definitions)."""
    index = {(a.residue.name, a.name): a.index for a in topology.atoms()}
    phi = [index["ACE", "C"], index["ALA", "N"], index["ALA", "CA"], index["ALA", "C"]]
    psi = [index["ALA", "N"], index["ALA", "CA"], index["ALA", "C"], index["NME", "N"]]
    return np.array(phi, dtype=np.int32), np.array(psi, dtype=np.int32)


def _dihedral_deg(x, quartet):
    p0, p1, p2, p3 = x[quartet]
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    c1, c2 = np.cross(b2, b3), np.cross(b1, b2)
    return math.degrees(math.atan2(np.dot(b1, c1) * np.linalg.norm(b2), np.dot(c2, c1)))


def _context(system):
    integrator = openmm.VerletIntegrator(0.001)
    platform = openmm.Platform.getPlatformByName("Reference")
    return openmm.Context(system, integrator, platform)


def openmm_energy(system, positions) -> float:
    """Potential energy (kJ/mol) of ``positions`` (nm) on the Reference platform."""
    context = _context(system)
    context.setPositions(positions)
    state = context.getState(getEnergy=True)
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def minimise(system, positions, quartets=None, phi_psi_deg=None):
    """Minimise ``positions`` (nm): returns (restrained, free) minima as numpy arrays.

    With ``phi_psi_deg`` (degrees, one per quartet) the first minimisation is restrained
    and the second starts from its result with the restraint off; without, both are the
    same unrestrained minimum. The restraint is ½ k Δθ² on each quartet, Δθ wrapped to
    (−π, π] and k = RESTRAINT_K; the second minimisation sets k = 0 in the same context.
    """
    system = copy.deepcopy(system)
    if phi_psi_deg is not None:
        restraint = openmm.CustomTorsionForce(
            "0.5*k_restraint*d^2; d = atan2(sin(theta - theta0), cos(theta - theta0))"
        )
        restraint.addGlobalParameter("k_restraint", RESTRAINT_K)
        restraint.addPerTorsionParameter("theta0")
        for quartet, angle in zip(quartets, phi_psi_deg, strict=True):
            restraint.addTorsion(*[int(i) for i in quartet], [math.radians(angle)])
        system.addForce(restraint)
    context = _context(system)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, MINIMISE_TOLERANCE, 0)
    restrained = context.getState(getPositions=True).getPositions(asNumpy=True)
    restrained = np.array(restrained.value_in_unit(unit.nanometer), dtype=np.float64)
    if phi_psi_deg is None:
        return restrained, restrained
    context.setParameter("k_restraint", 0.0)
    openmm.LocalEnergyMinimizer.minimize(context, MINIMISE_TOLERANCE, 0)
    free = context.getState(getPositions=True).getPositions(asNumpy=True)
    return restrained, np.array(free.value_in_unit(unit.nanometer), dtype=np.float64)


def build(path: Path = DATA_PATH, verbose: bool = True) -> dict[str, np.ndarray]:
    """Build, minimise and write the data file; returns what it wrote."""
    topology, built = build_structure()
    system = create_system(topology)
    phi_q, psi_q = backbone_quartets(topology)
    quartets = (phi_q, psi_q)
    _, minimised = minimise(system, built)
    start_restrained, start = minimise(system, minimised, quartets, START_PHI_PSI)
    target_restrained, target = minimise(system, minimised, quartets, TARGET_PHI_PSI)

    structures = {
        "positions": minimised,
        "start": start,
        "target": target,
        "start_restrained": start_restrained,
        "target_restrained": target_restrained,
    }
    atoms = list(topology.atoms())
    minimised_pdb = pdb_text(topology, minimised)
    params = system_parameters(system)
    rebuilt = system_parameters(create_system(topology_from_pdb(minimised_pdb)))
    if any(not np.array_equal(params[k], rebuilt[k]) for k in params):
        raise RuntimeError("the stored PDB text does not rebuild the same system")
    data = dict(structures)
    data.update(
        atom_names=np.array([a.name for a in atoms]),
        residue_names=np.array([a.residue.name for a in atoms]),
        residue_ids=np.array([a.residue.index for a in atoms], dtype=np.int32),
        elements=np.array([a.element.symbol for a in atoms]),
        masses=np.array(
            [
                system.getParticleMass(i).value_in_unit(unit.dalton)
                for i in range(system.getNumParticles())
            ]
        ),
        topology_bonds=np.array(
            sorted(
                (min(b[0].index, b[1].index), max(b[0].index, b[1].index)) for b in topology.bonds()
            ),
            dtype=np.int32,
        ),
        heavy_indices=np.array([a.index for a in atoms if a.element.symbol != "H"], dtype=np.int32),
        phi_quartet=phi_q,
        psi_quartet=psi_q,
        pdb=np.array(minimised_pdb),
        forcefield=np.array(FORCEFIELD),
        openmm_version=np.array(openmm.__version__),
        **params,
        **{f"openmm_energy_{k}": np.array(openmm_energy(system, v)) for k, v in structures.items()},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **data)
    if verbose:
        print(f"wrote {path}")
        for key, x in structures.items():
            print(
                f"  {key:18s} phi = {_dihedral_deg(x, phi_q):8.2f}  "
                f"psi = {_dihedral_deg(x, psi_q):8.2f}  "
                f"E = {float(data['openmm_energy_' + key]):10.4f} kJ/mol"
            )
    return data


if __name__ == "__main__":
    build()
