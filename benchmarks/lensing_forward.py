"""Time the lensing forward model and its log-likelihood gradient, against lenstronomy.

Set-up: 100×100 image, 0.05″ pixels, Gaussian PSF FWHM 0.1″, SIE + external shear lens,
elliptical Sérsic source, supersampling 1 and 2. helmholtz timings are of jitted
functions (median over repeats after a warm-up call, ``block_until_ready``);
lenstronomy's ``ImageModel.image`` with the same profiles, PSF and supersampling is timed
the same way when it imports. Run::

    python benchmarks/lensing_forward.py [--repeats 50] [--x64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from helmholtz.models.lensing import ImageConfig, noise_sigma, render, simulate

KWARGS_LENS = [
    dict(theta_E=1.1, e1=0.12, e2=-0.05, center_x=0.02, center_y=-0.01),
    dict(gamma1=0.03, gamma2=-0.02),
]
KWARGS_SOURCE = [
    dict(amp=20.0, R_sersic=0.25, n_sersic=1.5, e1=0.1, e2=0.05, center_x=0.05, center_y=0.03)
]


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (compilation for jitted functions)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_helmholtz(config: ImageConfig, repeats: int, dtype) -> tuple[float, float]:
    params = jax.tree.map(lambda v: jnp.asarray(v, dtype), (KWARGS_LENS, KWARGS_SOURCE))
    data, _, _ = simulate(jax.random.key(0), config, *params)

    @jax.jit
    def forward(params):
        return render(config, *params)

    def log_likelihood(params):
        model = render(config, *params)
        sigma = noise_sigma(config, model)
        return jnp.sum(-0.5 * ((data - model) / sigma) ** 2 - jnp.log(sigma))

    grad = jax.jit(jax.grad(log_likelihood))
    t_forward = _median_seconds(lambda: forward(params).block_until_ready(), repeats)
    t_grad = _median_seconds(lambda: jax.block_until_ready(grad(params)), repeats)
    return t_forward, t_grad


def time_lenstronomy(config: ImageConfig, repeats: int) -> float | None:
    try:
        import lenstronomy.Util.simulation_util as sim_util
        from lenstronomy.Data.imaging_data import ImageData
        from lenstronomy.Data.psf import PSF
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel
    except ImportError:
        return None
    kwargs_data = sim_util.data_configure_simple(
        config.num_pix, config.pixel_scale, config.exposure_time, config.background_rms
    )
    psf = PSF(
        psf_type="GAUSSIAN",
        fwhm=config.psf_fwhm,
        pixel_size=config.pixel_scale,
        truncation=config.psf_truncation,
    )
    model = ImageModel(
        ImageData(**kwargs_data),
        psf,
        LensModel(["SIE", "SHEAR"]),
        LightModel(["SERSIC_ELLIPSE"]),
        kwargs_numerics={"supersampling_factor": config.supersampling},
    )
    ours = np.asarray(render(config, KWARGS_LENS, KWARGS_SOURCE))
    theirs = model.image(KWARGS_LENS, KWARGS_SOURCE)
    print(
        f"  [s={config.supersampling}] max |helmholtz − lenstronomy| / max = "
        f"{np.abs(ours - theirs).max() / theirs.max():.1e}"
    )
    return _median_seconds(lambda: model.image(KWARGS_LENS, KWARGS_SOURCE), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--x64", action="store_true", help="time in float64")
    args = parser.parse_args()
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.x64 else jnp.float32
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"dtype: {jnp.dtype(dtype).name}, repeats: {args.repeats}"
    )

    rows = []
    for supersampling in (1, 2):
        config = ImageConfig(
            num_pix=100, pixel_scale=0.05, supersampling=supersampling, psf_fwhm=0.1
        )
        t_fwd, t_grad = time_helmholtz(config, args.repeats, dtype)
        t_lens = time_lenstronomy(config, args.repeats)
        rows.append((supersampling, t_fwd, t_grad, t_lens))

    header = (
        f"{'supersampling':>13} | {'helmholtz forward':>17} | {'helmholtz ∇logL':>15} | "
        f"{'lenstronomy forward':>19} | {'lenstronomy / helmholtz':>23}"
    )
    print(header)
    print("-" * len(header))
    for s, t_fwd, t_grad, t_lens in rows:
        lens_col = f"{t_lens * 1e3:16.3f} ms" if t_lens is not None else f"{'n/a':>19}"
        ratio = f"{t_lens / t_fwd:22.1f}x" if t_lens is not None else f"{'n/a':>23}"
        print(f"{s:>13} | {t_fwd * 1e3:14.3f} ms | {t_grad * 1e3:12.3f} ms | {lens_col} | {ratio}")


if __name__ == "__main__":
    main()
