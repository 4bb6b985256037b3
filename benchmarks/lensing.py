"""Lensing benchmarks: forward model, likelihood gradient, NUTS to 1000 ESS, RIM.

Set-up (issue 4): 100×100 image, 0.05″ pixels, Gaussian PSF FWHM 0.1″, SIE + external
shear, elliptical Sérsic source, supersampling 1 and 2.

* seconds per forward model and per log-likelihood gradient (jitted; median over
  repeats after a warm-up call), with lenstronomy's ``ImageModel.image`` on the same
  model timed side by side when lenstronomy imports (``benchmarks/lensing_forward.py``);
* NUTS (``helmholtz.infer(..., "nuts")`` on ``parametric_lens_model``) seconds to 1000
  effective samples of θ_E: wall seconds × 1000 / bulk ESS(θ_E), with and without
  compilation;
* RIM seconds per source reconstruction (40×40 source of 0.05″, T = 8, 24 hidden
  channels; untrained weights, the cost does not depend on them), from the GP MAP
  (``init="map"``, conjugate gradients included) and from zero, one image and per
  image in a batch of 16.

Run from the repository root::

    python benchmarks/lensing.py [--repeats 50] [--chains 2] [--warmup 300] [--samples 500]

(~15 min on 2 CPU cores; NUTS takes most of it: at this S/N the posterior is narrow and
trees are deep. Seconds to 1000 ESS are extrapolated from the run's ESS per second.)
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from _common import environment_lines, min_ess, table
from lensing_forward import KWARGS_LENS, KWARGS_SOURCE, time_helmholtz, time_lenstronomy

import helmholtz
from helmholtz.models.lensing import (
    GaussianProcessSource,
    ImageConfig,
    lens_kwargs,
    parametric_lens_model,
    simulate,
    source_kwargs,
)
from helmholtz.models.lensing.rim import RIM, RIMConfig, simulate_mocks

TRUTH = dict(
    lens_theta_E=1.1, lens_e1=0.12, lens_e2=-0.05, lens_center_x=0.02, lens_center_y=-0.01,
    shear_gamma1=0.03, shear_gamma2=-0.02, source_amp=20.0, source_R_sersic=0.25,
    source_n_sersic=1.5, source_e1=0.1, source_e2=0.05, source_center_x=0.05,
    source_center_y=0.03,
)
# Bounded boxes around the truth (see tests/models/lensing/test_inference.py for why).
PRIORS = {
    "lens_theta_E": dist.Uniform(1.05, 1.15),
    "lens_e1": dist.Uniform(-0.2, 0.2),
    "lens_e2": dist.Uniform(-0.2, 0.2),
    "lens_center_x": dist.Uniform(-0.05, 0.05),
    "lens_center_y": dist.Uniform(-0.05, 0.05),
    "shear_gamma1": dist.Uniform(-0.05, 0.05),
    "shear_gamma2": dist.Uniform(-0.05, 0.05),
    "source_amp": dist.Uniform(10.0, 40.0),
    "source_R_sersic": dist.Uniform(0.1, 0.4),
    "source_n_sersic": dist.Uniform(0.5, 4.0),
    "source_e1": dist.Uniform(-0.2, 0.2),
    "source_e2": dist.Uniform(-0.2, 0.2),
    "source_center_x": dist.Uniform(-0.1, 0.1),
    "source_center_y": dist.Uniform(-0.1, 0.1),
}


def _config(supersampling: int) -> ImageConfig:
    return ImageConfig(num_pix=100, pixel_scale=0.05, supersampling=supersampling,
                       psf_fwhm=0.1)


def time_nuts(config: ImageConfig, chains: int, warmup: int, samples: int) -> dict:
    data, sigma, _ = simulate(jax.random.key(0), config, lens_kwargs(TRUTH),
                              source_kwargs(TRUTH))
    target = helmholtz.Target.from_model(parametric_lens_model, config, data, sigma=sigma,
                                         priors=PRIORS)
    t0 = time.perf_counter()
    result = helmholtz.infer(target, "nuts", seed=0, num_warmup=warmup, num_samples=samples,
                             num_chains=chains)
    wall = time.perf_counter() - t0
    ess = min_ess({"theta_E": result.samples["lens_theta_E"]})
    run = wall - result.compile_seconds
    return {"ess": ess, "wall": wall, "compile": result.compile_seconds,
            "per_1000": 1000 * wall / ess, "per_1000_run": 1000 * run / ess,
            "divergent": result.num_divergent,
            "grads_per_draw": float(np.mean(result.stats["n_steps"])),
            "z": float((result.samples["lens_theta_E"].mean() - TRUTH["lens_theta_E"])
                       / result.samples["lens_theta_E"].std())}


def _median_call(fn, *args, repeats: int = 10) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_rim(config: ImageConfig, repeats: int) -> dict:
    grid = GaussianProcessSource(num_pix=40, pixel_scale=0.05, amplitude=2.0,
                                 length_scale=0.1)
    out = {}
    for init in ("map", "zero"):
        hyper = RIMConfig(image=config, source=grid, hidden_channels=24, num_steps=8,
                          init=init)
        rim = RIM(hyper, key=jax.random.key(0))
        mocks = simulate_mocks(jax.random.key(1), dataclasses.replace(hyper, init="zero"), 16)

        def one(d, s, lens, rim=rim):
            return rim.reconstruct(d, s, lens_kwargs(lens))

        single = jax.jit(one)
        batch = jax.jit(jax.vmap(one))
        lens0 = jax.tree.map(lambda a: a[0], mocks.lens)
        out[init] = (
            _median_call(single, mocks.data[0], mocks.sigma[0], lens0, repeats=repeats),
            _median_call(batch, mocks.data, mocks.sigma, mocks.lens, repeats=max(3, repeats // 5))
            / 16,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--skip-nuts", action="store_true")
    parser.add_argument("--skip-rim", action="store_true")
    args = parser.parse_args()
    print("\n".join(environment_lines()))

    rows = []
    for s in (1, 2):
        config = _config(s)
        t_fwd, t_grad = time_helmholtz(config, args.repeats, jnp.float32)
        t_lens = time_lenstronomy(config, args.repeats)
        rows.append([s, t_fwd * 1e3, t_grad * 1e3,
                     None if t_lens is None else t_lens * 1e3,
                     None if t_lens is None else t_lens / t_fwd])
    print("\nForward model and log-likelihood gradient (float32, jitted, median ms)")
    print(table(["supersampling", "helmholtz forward ms", "helmholtz ∇logL ms",
                 "lenstronomy forward ms", "lenstronomy / helmholtz"], rows))
    print(f"(SIE + shear, Sérsic; kwargs {KWARGS_LENS} / {KWARGS_SOURCE})")

    if not args.skip_nuts:
        print(f"\nNUTS on parametric_lens_model, {args.chains} chains × "
              f"({args.warmup} warmup + {args.samples} draws)")
        rows = []
        for s in (1, 2):
            r = time_nuts(_config(s), args.chains, args.warmup, args.samples)
            rows.append([s, r["ess"], r["grads_per_draw"], r["compile"], r["wall"],
                         r["per_1000"], r["per_1000_run"], r["divergent"], r["z"]])
        print(table(["supersampling", "ESS(θ_E)", "grads/draw", "compile s", "wall s",
                     "s / 1000 ESS", "s / 1000 ESS (no compile)", "divergent",
                     "θ_E z-score"], rows))

    if not args.skip_rim:
        print("\nRIM reconstruction (100×100 image → 40×40 source, T = 8, 24 channels), "
              "seconds per image")
        rows = []
        for s in (1, 2):
            r = time_rim(_config(s), max(3, args.repeats // 5))
            for init, (single, batched) in r.items():
                rows.append([s, init, single, batched])
        print(table(["supersampling", "init", "one image s", "per image, batch of 16 s"],
                    rows))


if __name__ == "__main__":
    main()
