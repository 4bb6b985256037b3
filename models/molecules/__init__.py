"""Molecular systems as pure JAX energy functions (installed as ``helmholtz.models.molecules``).

Modules
-------
alanine
    Alanine dipeptide (ACE-ALA-NME) with amber99sb-ildn in vacuum: energy, backbone
    dihedrals, Kabsch RMSD, and the C5 / C7ax endpoints of its transition path.
build_alanine
    Developer script (needs OpenMM) that builds the molecule and writes
    ``data/alanine_dipeptide.npz``; not imported here.
"""

from . import alanine

__all__ = ["alanine"]
