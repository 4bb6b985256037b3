"""Lensing benchmarks: forward model, likelihood gradient, NUTS to 1000 ESS, RIM.

Set-up (issue 4): 100×100 image, 0.05″ pixels, Gaussian PSF FWHM 0.1″, SIE + external
shear, elliptical Sérsic source, supersampling 1 and 2.

* seconds per forward model and per log-likelihood gradient (jitted), float64 and
  float32, with lenstronomy's ``ImageModel.image`` on the same model timed side by side
  in interleaved rounds when lenstronomy imports, and the ratio (goal ≥ 5 on CPU; see
  ``benchmarks/lensing_forward.py``, which this calls);
* NUTS (``helmholtz.infer(..., "nuts")`` on ``parametric_lens_model``) seconds to 1000
  effective samples of θ_E: wall seconds × 1000 / bulk ESS(θ_E), with and without
  compilation;
* RIM seconds per source reconstruction (40×40 source of 0.05″, T = 8, 24 hidden
  channels; untrained weights, the cost does not depend on them), from the GP MAP
  (``init="map"``, conjugate gradients included) and from zero, one image and per
  image in a batch of 16.

Run from the repository root::

    python benchmarks/lensing.py [--repeats 50] [--rounds 15] [--chains 2] [--warmup 300]
                                 [--samples 500] [--skip-nuts] [--skip-rim]

(~15 min on 2 CPU cores; NUTS takes most of it: at this S/N the posterior is narrow and
trees are deep. Seconds to 1000 ESS are extrapolated from the run's ESS per second.)
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np
from _common import environment_lines, min_ess, table
from lensing_forward import KWARGS_LENS, KWARGS_SOURCE, forward_rows

import helmholtz
from helmholtz.models.lensing import (
    GaussianProcessSource,
    ImageConfig,
    first_guess,
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
# NUTS starts the way lens modelling does (tests/models/lensing/test_inference.py):
# first_guess from the image → SVI (full-rank normal) → NUTS from the SVI medians.
SVI_OPTIONS = dict(guide="mvn", num_optimizer_steps=10000, learning_rate=0.02, num_samples=200,
                   num_elbo_samples=200, init_strategy="median")


def _config(supersampling: int) -> ImageConfig:
    return ImageConfig(num_pix=100, pixel_scale=0.05, supersampling=supersampling,
                       psf_fwhm=0.1)


def time_nuts(config: ImageConfig, chains: int, warmup: int, samples: int) -> dict:
    data, sigma, _ = simulate(jax.random.key(0), config, lens_kwargs(TRUTH),
                              source_kwargs(TRUTH))
    target = helmholtz.Target.from_model(parametric_lens_model, config, data, sigma=sigma)
    t0 = time.perf_counter()
    svi = helmholtz.infer(target, "svi", seed=0, init_values=first_guess(data, config),
                          **SVI_OPTIONS)
    svi_wall = time.perf_counter() - t0
    start = {site.name: float(np.median(svi.samples[site.name])) for site in target.sites}
    t0 = time.perf_counter()
    result = helmholtz.infer(target, "nuts", seed=0, num_warmup=warmup, num_samples=samples,
                             num_chains=chains, init_values=start, init_jitter=0.02)
    wall = time.perf_counter() - t0
    ess = min_ess({"theta_E": result.samples["lens_theta_E"]})
    run = wall - result.compile_seconds
    return {"ess": ess, "wall": wall, "compile": result.compile_seconds, "svi_wall": svi_wall,
            "rhat": float(result.diagnostics()["max_rhat"]),
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
    parser.add_argument("--rounds", type=int, default=15,
                        help="interleaved rounds of the forward-model timing")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--skip-nuts", action="store_true")
    parser.add_argument("--skip-rim", action="store_true")
    args = parser.parse_args()
    print("\n".join(environment_lines()))

    header, rows = forward_rows(("float64", "float32"), args.rounds)
    print("\nForward model and log-likelihood gradient (jitted; medians over interleaved "
          "rounds; goal lenstronomy / helmholtz ≥ 5, float64 like for like)")
    print(table(header, rows))
    print(f"(SIE + shear, Sérsic; kwargs {KWARGS_LENS} / {KWARGS_SOURCE})")

    if not args.skip_nuts:
        print(f"\nNUTS on parametric_lens_model, {args.chains} chains × "
              f"({args.warmup} warmup + {args.samples} draws)")
        rows = []
        for s in (1, 2):
            r = time_nuts(_config(s), args.chains, args.warmup, args.samples)
            rows.append([s, r["svi_wall"], r["ess"], r["grads_per_draw"], r["compile"],
                         r["wall"], r["per_1000"], r["per_1000_run"], r["divergent"],
                         r["rhat"], r["z"]])
        print(table(["supersampling", "SVI start s", "ESS(θ_E)", "grads/draw", "compile s",
                     "wall s", "s / 1000 ESS", "s / 1000 ESS (no compile)", "divergent",
                     "max R-hat", "θ_E z-score"], rows))
        print("NUTS seconds exclude the SVI fit that gives the start (column 'SVI start s').")

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
