"""Inference engines, one family per module, all behind one protocol."""

from helmholtz.engines import annealing, mcmc, svi
from helmholtz.engines.annealing import AIS, SMC
from helmholtz.engines.base import ENGINES, Engine, engine_names, get_engine, register
from helmholtz.engines.mcmc import HMC, MALA, NUTS
from helmholtz.engines.svi import SVI

__all__ = ["ENGINES", "Engine", "engine_names", "get_engine", "register", "NUTS", "HMC",
           "MALA", "SVI", "AIS", "SMC", "mcmc", "svi", "annealing"]
