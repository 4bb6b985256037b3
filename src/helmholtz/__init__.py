"""helmholtz: one numpyro model, many inference engines, one free energy.

Every engine minimises (or estimates) F[Q] = E_Q[energy] − entropy(Q) = KL(Q‖P) − log Z
and reports its estimate of F = −log Z with a standard error and a kind.

Importing helmholtz sets up the process first (:mod:`helmholtz._runtime`: an XLA flag
that avoids a jaxlib 0.10 CPU deadlock, JAX's persistent compilation cache), then loads
each public name on first use, so ``import helmholtz`` costs little more than ``import
jax``; ``helmholtz.infer`` loads numpyro, blackjax and the engines.
"""

import importlib
import sys
import types

from helmholtz import _runtime

_runtime.setup()  # before anything creates JAX's backend: XLA reads XLA_FLAGS only then

from helmholtz._runtime import set_compilation_cache  # noqa: E402

# public name -> the module that defines it (the name itself where it is a module)
_LAZY = {
    "Target": "helmholtz.target", "Result": "helmholtz.result",
    "FreeEnergy": "helmholtz.result", "compare": "helmholtz.result",
    "Status": "helmholtz.result", "Checkpoint": "helmholtz.checkpoint",
    "infer": "helmholtz.infer", "boltzmann": "helmholtz.boltzmann",
    "engines": "helmholtz.engines", "free_energy": "helmholtz.free_energy",
    "models": "helmholtz.models",
    **dict.fromkeys(["Engine", "Phase", "engine_names", "get_engine", "NUTS", "HMC", "MALA",
                     "SVI", "AIS", "SMC", "TI", "ReverseAIS", "BAR"], "helmholtz.engines"),
    **dict.fromkeys(["HelmholtzError", "ModelError", "EngineError", "OptionError",
                     "InitializationError", "CheckpointError", "RunError", "ResultFileError",
                     "DistributedError"],
                    "helmholtz.errors"),
}
# functions named like the module that defines them: the package attribute is the function
_FUNCTION_MODULES = ("infer", "boltzmann")

__all__ = [
    "Target", "Result", "FreeEnergy", "Status", "Checkpoint", "infer", "compare", "boltzmann",
    "engines", "Engine", "Phase", "engine_names", "get_engine", "NUTS", "HMC", "MALA", "SVI",
    "AIS", "SMC", "TI", "ReverseAIS", "BAR", "HelmholtzError", "ModelError", "EngineError",
    "OptionError", "InitializationError", "CheckpointError", "RunError", "ResultFileError",
    "DistributedError",
    "free_energy", "set_compilation_cache",
]
__version__ = "0.1.0"


def __getattr__(name):
    # a submodule (helmholtz.errors, helmholtz.driver, ...) is an attribute too, as it was
    # when this package imported them all eagerly
    if name.startswith("__"):  # dunder probes (inspect, doctest, pickle) are not modules
        raise AttributeError(f"module 'helmholtz' has no attribute {name!r}")
    module_name = _LAZY.get(name, f"helmholtz.{name}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        raise AttributeError(f"module 'helmholtz' has no attribute {name!r}") from None
    is_module = module_name == f"helmholtz.{name}" and name not in _FUNCTION_MODULES
    value = module if is_module else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The import system binds a submodule to its package's attribute when it first loads
    it (``from helmholtz.infer import infer`` anywhere sets ``helmholtz.infer`` to the
    module); for :data:`_FUNCTION_MODULES` keep the function of the same name instead,
    as the eager imports this package used to do guaranteed."""

    def __setattr__(self, name, value):
        if name in _FUNCTION_MODULES and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
