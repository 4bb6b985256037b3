"""Classical density functional theory of planar fluids (installed as
``helmholtz.models.cdft``).

Modules
-------
potentials
    Grids and external potentials βV(x) (cosine modes, linear pieces, hard walls).
functionals
    Excess free-energy functionals on a grid: Percus' exact hard-rod functional and a
    learned local one; c1 and c2 by automatic differentiation.
solvers
    The Euler–Lagrange fixed point by Picard (a Fisher–Rao step) or Anderson
    acceleration, with step limiting; grand potential, adsorption, wall pressure.
ddft
    Dynamical DFT as the Wasserstein (closed) or WFR (open) gradient flow of Ω, by diffrax.
gcmc
    Grand-canonical Monte Carlo of hard rods and square wells, vmapped over systems; the
    exact Tonks / Takahashi equations of state; g(r) and c(r) by Ornstein–Zernike.
data
    Simulated profiles and bulk pair correlations, cached on disk by seed.
learn
    Training a neural functional by one-body, pair-correlation matching, or both.
"""

from . import data, ddft, functionals, gcmc, learn, potentials, solvers
from .functionals import NeuralFunctional, Percus
from .potentials import ExternalPotential, Grid, GridError, flat, random_potential
from .solvers import Anderson, DFTSolution, Picard, bulk_density, solve

__all__ = ["data", "ddft", "functionals", "gcmc", "learn", "potentials", "solvers", "Percus",
           "NeuralFunctional", "ExternalPotential", "Grid", "GridError", "flat",
           "random_potential", "Anderson", "Picard", "DFTSolution", "bulk_density", "solve"]
