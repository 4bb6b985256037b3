"""Inference engines, one family per module, all behind one protocol."""

from helmholtz.engines import (
    annealing,
    asbs,
    bidirectional,
    diffusion,
    em,
    em_steps,
    fisher_rao,
    flows,
    mcmc,
    rim,
    smc,
    svi,
    ti,
    transition,
)
from helmholtz.engines.annealing import AIS
from helmholtz.engines.asbs import ASBS
from helmholtz.engines.base import ENGINES, Engine, Phase, engine_names, get_engine, register
from helmholtz.engines.bidirectional import BAR, ReverseAIS
from helmholtz.engines.diffusion import CMCD, DDS, PIS
from helmholtz.engines.em import EM
from helmholtz.engines.fisher_rao import FisherRaoFlow
from helmholtz.engines.flows import SVGD, Langevin, WFRFlow
from helmholtz.engines.mcmc import HMC, MALA, NUTS
from helmholtz.engines.rim import RIMEngine
from helmholtz.engines.smc import SMC
from helmholtz.engines.svi import SVI
from helmholtz.engines.ti import TI
from helmholtz.engines.transition import HotMD, SteeredMD, TransitionPathSampler

__all__ = ["ENGINES", "Engine", "Phase", "engine_names", "get_engine", "register", "NUTS",
           "HMC", "MALA", "SVI", "AIS", "SMC", "TI", "ReverseAIS", "BAR", "mcmc", "svi",
           "annealing", "smc", "ti", "bidirectional", "RIMEngine", "rim", "PIS", "DDS",
           "CMCD", "ASBS", "diffusion", "asbs", "Langevin", "SVGD", "FisherRaoFlow",
           "WFRFlow", "flows", "fisher_rao", "EM", "em", "em_steps", "TransitionPathSampler",
           "HotMD", "SteeredMD", "transition"]
