"""Transition-path models: Müller–Brown (2-d, overdamped) and alanine dipeptide
(22 atoms, underdamped), each a conditioned path measure for the ``tps``, ``hot-md``
and ``steered-md`` engines (see :mod:`helmholtz.paths.transition`).

* ``muller_brown_paths``: overdamped Langevin on the Müller–Brown potential at kT = 12.5,
  δ = 1e−4, K = 275 steps, γ = 1, from the deepest minimum A = (−0.5582, 1.4417) to
  B = (0.6235, 0.0280), the setting of Doob's-Lagrangian transition paths (Du et al.,
  NeurIPS 2024). The minimum-energy path crosses the saddle (−0.822, 0.624),
  U = −40.67, then the lower saddle (0.2125, 0.2930), U = −72.25.
* ``alanine_paths``: BAOAB Langevin of alanine dipeptide (amber99sb-ildn, vacuum) at
  300 K, γ = 1/ps, δ = 1 fs, K = 1000 steps, from the C5 minimum (φ, ψ ≈ −147°, 159°) to
  C7ax (≈ 60°, −41°), the setting of PIPS (Holdijk et al. 2023) and TPS-DPS (Seong et al.
  2025). Distances are heavy-atom RMSDs after Kabsch alignment, in Å; THP counts
  Δφ² + Δψ² < 0.75² rad².

:func:`alanine_transition` and :func:`muller_brown_transition` build variants (other
endpoints, widths, lengths) and check the structures they are given.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from helmholtz.models.boltzmann import muller_brown_energy
from helmholtz.models.molecules import alanine
from helmholtz.paths.transition import TransitionPath, transition_path_model

__all__ = ["muller_brown_transition", "alanine_transition", "muller_brown_paths",
           "alanine_paths", "MB_A", "MB_B", "MB_LOWER_SADDLE", "MB_UPPER_SADDLE",
           "KJ_PER_MOL_PER_K"]

MB_A = (-0.5582, 1.4417)
MB_B = (0.6235, 0.0280)
MB_LOWER_SADDLE = ((0.2125, 0.2930), -72.25)
MB_UPPER_SADDLE = ((-0.8220, 0.6243), -40.67)
KJ_PER_MOL_PER_K = 0.00831446261815324
"""Molar gas constant R in kJ/(mol K): kT = R T."""


def _named(model, name: str, importable: bool = False):
    """Name the model; only the module-level instances below import by name (a saved
    Result rebuilds them), a variant built by a factory call does not (load its Result
    with ``target=``), so that no variant is ever rebuilt as the default."""
    model.__name__ = name
    model.__qualname__ = name if importable else f"{name}.<variant>"
    model.__module__ = __name__
    return model


def muller_brown_transition(*, temperature: float = 12.5, step_size: float = 1e-4,
                            num_steps: int = 275, sigma: float = 0.03,
                            hit_radius: float = 0.15, start=MB_A, target=MB_B,
                            name: str = "muller_brown_transition"):
    """The Müller–Brown transition-path model (see the module docstring).

    ``sigma``: the width of the terminal factor; ``hit_radius``: a path reaches B when it
    ends within this distance of it (the disc of radius 0.15 around B lies wholly below
    the lower saddle's energy, so it is inside B's basin).
    """
    problem = TransitionPath(
        name, lambda x: muller_brown_energy(x), jnp.asarray(start, jnp.float32),
        jnp.asarray(target, jnp.float32), temperature=temperature, dynamics="overdamped",
        step_size=step_size, num_steps=num_steps, friction=1.0, sigma=sigma,
        hit_radius=hit_radius, length_scale=0.5, force_scale=100.0)
    return _named(transition_path_model(problem), name)


def _check_structure(x, label: str, molecule) -> np.ndarray:
    x = np.asarray(x, np.float64)
    n = molecule.num_atoms
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"alanine_transition: {label} must be positions (22, 3) in nm, got "
                         f"shape {x.shape}")
    if x.shape[0] != n:
        raise ValueError(f"alanine_transition: {label} has {x.shape[0]} atoms, alanine "
                         f"dipeptide (ACE-ALA-NME with hydrogens) has {n}: atoms are missing "
                         "or extra")
    bonds = molecule.topology_bonds
    lengths = np.linalg.norm(x[bonds[:, 0]] - x[bonds[:, 1]], axis=-1)
    median = float(np.median(lengths))
    if median > 0.5:
        raise ValueError(f"alanine_transition: {label} has a median bond length of "
                         f"{median:.3g}; positions are in nm (bonds ≈ 0.1–0.15 nm), these "
                         "look like Å — divide by 10")
    if median < 0.05:
        raise ValueError(f"alanine_transition: {label} has a median bond length of "
                         f"{median:.3g} nm; bonds are ≈ 0.1–0.15 nm (wrong unit?)")
    return x


def alanine_transition(*, start=None, target=None, temperature_kelvin: float = 300.0,
                       step_size: float = 1e-3, num_steps: int = 1000,
                       friction: float = 1.0, sigma: float = 0.1,
                       name: str = "alanine_transition"):
    """The alanine-dipeptide transition-path model (see the module docstring).

    ``start``, ``target``: positions (22, 3) in nm (default: the shipped C5 and C7ax
    minima); step_size in ps, friction in 1/ps; sigma: the width of the terminal factor
    in Å of heavy-atom RMSD. It must be narrow: the start is 1.65 Å from the target, so
    f = exp(−½ (1.65/σ)²) at the start, which has to be far below the chance of a
    spontaneous transition in 1 ps (≈ e^{−40}) or the conditioned measure is mostly
    paths that stay home; σ = 0.1 Å gives e^{−136}.
    """
    molecule = alanine.load()
    start = _check_structure(molecule.start if start is None else start, "start", molecule)
    target = _check_structure(molecule.target if target is None else target, "target",
                              molecule)
    params = molecule.params
    heavy = np.asarray(molecule.heavy_indices)
    target_xyz = jnp.asarray(target, jnp.float32)

    def energy(x):
        return alanine.energy(params, x.reshape(-1, 3))

    def distance(x):
        return 10.0 * alanine.kabsch_rmsd(x.reshape(-1, 3), target_xyz, heavy)

    def cvs(x):
        phi, psi = alanine.phi_psi(x.reshape(-1, 3), molecule)
        return jnp.stack([phi, psi])

    def align(x):
        return alanine.kabsch_superpose(target_xyz, x.reshape(-1, 3)).reshape(-1)

    problem = TransitionPath(
        name, energy, jnp.asarray(start.reshape(-1), jnp.float32),
        jnp.asarray(target.reshape(-1), jnp.float32),
        temperature=KJ_PER_MOL_PER_K * temperature_kelvin, dynamics="underdamped",
        step_size=step_size, num_steps=num_steps, friction=friction,
        mass=np.repeat(np.asarray(molecule.masses), 3), distance_fn=distance, sigma=sigma,
        cv_fn=cvs, periodic_cv=True, hit_radius=0.75, spatial_dim=3, length_scale=0.1,
        align_fn=align, energy_unit="kJ/mol")
    return _named(transition_path_model(problem), name)


muller_brown_paths = _named(muller_brown_transition(name="muller_brown_paths"),
                            "muller_brown_paths", importable=True)
alanine_paths = _named(alanine_transition(name="alanine_paths"), "alanine_paths",
                       importable=True)
