"""Quantum variational Monte Carlo (installed as ``helmholtz.models.quantum``).

Modules
-------
systems
    Electrons and fixed nuclei (H, He, H2, Li, LiH, Be and any element), the harmonic
    oscillator; exact reference energies.
hamiltonian
    Local energies with an exact Laplacian (forward-over-reverse autodiff), ∇ₓE_loc.
hf
    Hartree–Fock orbitals from pyscf, evaluated in JAX (Gaussian basis functions).
ansatz
    Exact ansätze for checks, and Slater–Jastrow with exact cusps and a learned Jastrow.
ferminet
    A small FermiNet-style neural wavefunction and its pretraining on Hartree–Fock.
mcmc
    Walkers on |ψ|²: blackjax Metropolis and MALA with a shared, tuned step size.
vmc
    The VMC engine: Fisher–Rao (standard VMC with SR), Wasserstein QMC and WFR flows;
    blocked error bars.
"""

from . import ansatz, ferminet, hamiltonian, hf, mcmc, systems, vmc
from .systems import HarmonicOscillator, Molecule, SystemError, molecule
from .vmc import VMC, blocking, energy_summary, run_vmc

__all__ = ["ansatz", "ferminet", "hamiltonian", "hf", "mcmc", "systems", "vmc", "Molecule",
           "HarmonicOscillator", "SystemError", "molecule", "VMC", "blocking",
           "energy_summary", "run_vmc"]
