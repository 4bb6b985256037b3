"""helmholtz: one numpyro model, many inference engines, one free energy.

Every engine minimises (or estimates) F[Q] = E_Q[energy] − entropy(Q) = KL(Q‖P) − log Z
and reports its estimate of F = −log Z with a standard error and a kind.
"""

from helmholtz import engines, free_energy
from helmholtz.boltzmann import boltzmann
from helmholtz.checkpoint import Checkpoint
from helmholtz.engines import HMC, MALA, NUTS, SVI, Engine, engine_names, get_engine
from helmholtz.errors import (
    EngineError,
    HelmholtzError,
    InitializationError,
    ModelError,
    OptionError,
)
from helmholtz.infer import infer
from helmholtz.result import FreeEnergy, Result, compare
from helmholtz.target import Target

__all__ = [
    "Target", "Result", "FreeEnergy", "Checkpoint", "infer", "compare", "boltzmann", "engines", "Engine",
    "engine_names", "get_engine", "NUTS", "HMC", "MALA", "SVI", "HelmholtzError",
    "ModelError", "EngineError", "OptionError", "InitializationError", "free_energy",
]
__version__ = "0.1.0"


def __getattr__(name):
    # the zoo imports helmholtz itself, so it is loaded on first use, not at import
    if name == "models":
        import importlib

        return importlib.import_module("helmholtz.models")
    raise AttributeError(f"module 'helmholtz' has no attribute {name!r}")
