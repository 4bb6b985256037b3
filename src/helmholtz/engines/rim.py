"""``rim``: an amortised engine that applies a trained recurrent inference machine.

The network and its training live with the lensing models
(:mod:`helmholtz.models.lensing.rim`); this engine only applies a trained one to the
Target of :func:`~helmholtz.models.lensing.models.pixelated_source_model` with a known
lens, and returns the reconstruction as a one-draw Result (chain 1, draw 1), so that it
can be compared, saved and plotted like the output of any other engine.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import jax.numpy as jnp
import numpy as np

from helmholtz.engines._assemble import assemble
from helmholtz.engines.base import Engine, register
from helmholtz.errors import ModelError, OptionError
from helmholtz.result import FreeEnergy

__all__ = ["RIMEngine"]


@lru_cache(maxsize=8)
def _load(path: str, mtime: float):
    from helmholtz.models.lensing.rim import RIM

    return RIM.load(path)


def _model_arguments(target) -> dict:
    from helmholtz.models.lensing.models import pixelated_source_model

    if target.model is not pixelated_source_model:
        raise ModelError(
            f"engine 'rim' reconstructs the source of pixelated_source_model with a known "
            f"lens; got model '{target.name}'.")
    args, kwargs = target.model_args
    bound = inspect.signature(pixelated_source_model).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    if arguments["lens"] is None:
        raise ModelError(
            "engine 'rim': the lens must be known (pass lens=... to pixelated_source_model, "
            "e.g. the posterior mean of parametric_lens_model); the RIM reconstructs the "
            "source only.")
    if arguments["data"] is None and "obs" not in target.observed:
        raise ModelError("engine 'rim': the model has no data to reconstruct from.")
    return arguments


@register
@dataclass(frozen=True)
class RIMEngine(Engine):
    """Recurrent inference machine (Putzky & Welling 2017; Morningstar et al. 2019).

    Options
    -------
    weights : str
        Path to a RIM saved by :meth:`helmholtz.models.lensing.rim.RIM.save` (a string,
        so the engine stays hashable). Its imaging set-up and source grid must match the
        model's ``config`` and ``source``.

    Returns a Result with one draw (chain 1, draw 1) of ``source_xi`` and ``source``: the
    reconstructed surface brightness s and ξ = F⁻¹[F s / √λ] (exact where the GP
    spectrum λ is positive). The free energy is not estimated (an amortised point
    estimate). Without a ``sigma`` map in the model, σ is estimated from the data.
    """

    name = "rim"
    description = "recurrent inference machine: amortised pixelated-source reconstruction"
    weights: str | None = None

    def validate(self):
        if self.weights is not None and not isinstance(self.weights, str | os.PathLike):
            raise OptionError(f"rim: weights must be a path (str), got {self.weights!r}")

    def phases(self, target):
        return ()  # amortised: the network's one pass is the whole run (in ``start``)

    def start(self, rng_key, target, run):
        """The reconstruction ξ as a flat unconstrained vector."""
        from helmholtz.models.lensing.models import lens_kwargs
        from helmholtz.models.lensing.rim import noise_map

        if self.weights is None:
            raise OptionError("rim: pass weights='path/to/rim.eqx' (a RIM saved with "
                              "RIM.save; train one with helmholtz.models.lensing.rim.train)")
        path = os.fspath(self.weights)
        if not os.path.exists(path):
            raise OptionError(f"rim: no saved RIM at {path!r}")
        rim = _load(path, os.path.getmtime(path))
        arguments = _model_arguments(target)
        hyper = rim.hyper
        if arguments["config"] != hyper.image or arguments["source"].shape != hyper.source.shape \
                or arguments["source"].pixel_scale != hyper.source.pixel_scale:
            raise OptionError(
                f"rim: the saved RIM was trained for {hyper.image} and a source grid of "
                f"{hyper.source.num_pix}² × {hyper.source.pixel_scale}″; the model has "
                f"{arguments['config']} and {arguments['source'].num_pix}² × "
                f"{arguments['source'].pixel_scale}″.")
        if arguments["mass_profile"] != hyper.mass_profile:
            raise OptionError(f"rim: trained for mass profile {hyper.mass_profile}, the model "
                              f"has {arguments['mass_profile']}")
        data = arguments["data"] if arguments["data"] is not None else target.observed["obs"]
        lens = arguments["lens"]
        kw_lens = (lens_kwargs(lens, hyper.mass_profile) if isinstance(lens, Mapping)
                   else list(lens))
        sigma = arguments["sigma"]
        gp = arguments["source"]

        def fn(rim, data, sigma, kw_lens):
            sigma = noise_map(hyper, data) if sigma is None else sigma
            source = rim.reconstruct(data, sigma, kw_lens)
            sqrt_spec = jnp.sqrt(jnp.asarray(gp.spectrum(), source.dtype))
            inv = jnp.where(sqrt_spec > 1e-12 * sqrt_spec.max(), 1.0 / sqrt_spec, 0.0)
            return jnp.fft.irfft2(jnp.fft.rfft2(source) * inv, s=gp.shape)

        xi = run.call(fn, rim, data, sigma, kw_lens, key=("rim", path, hyper, gp))
        dtype = jnp.result_type(float)
        return target.unconstrain({"source_xi": jnp.asarray(xi, dtype)})

    def result(self, rng_key, target, state, infos, run):
        return assemble(self, target, np.asarray(state)[None, None], {}, run, 0,
                        FreeEnergy.none("amortised point estimate (RIM)"))

