"""Classical DFT of planar hard rods: solvers, learned functionals, Monte Carlo speed.

Three tables:

1. **Solvers.** Seconds (after compile, best of 3) and iterations to max |ρ_EL − ρ| <
   1e-10 for Picard (mixing 0.05) and Anderson (memory 6, mixing 0.2) on a 4096-point
   grid: Percus hard rods between hard walls in a random potential at βμ = 2. Beside
   them, FeOs (``pip install feos``; Rust) solving its textbook problem — White-Bear FMT
   hard spheres at ρσ³ = 0.5 against a hard wall, 4096 points, tol 1e-10 on its RMS
   residual — as a reference for solver speed (another functional and dimension, so the
   ratio is an order of magnitude, not a like-for-like race).
2. **Learned functionals.** A neural F_exc trained on GCMC data by one-body matching
   ("c1", 64 inhomogeneous profiles), pair-correlation matching ("pair", bulk c(r) at
   12 chemical potentials, 4 replicas each) and both, at 3000 steps each; max and L2
   profile errors against Percus in held-out random potentials (other seeds) at
   βμ ∈ [−0.5, 2.5]. Goal: the pair-matched error at least 2× below the naive one
   (Dijkman et al., PRL 134, 056103, 2025, report this qualitatively).
3. **GCMC speed.** System-sweeps per second of the vmapped JAX GCMC (256 systems) and of
   a plain NumPy loop over moves (one system), side by side in this process.

Run: ``python benchmarks/cdft.py`` (about ten minutes on 2 cores; simulations are cached
in ``~/.cache/helmholtz/cdft``); ``--quick`` for a smaller run, ``--json FILE`` for rows.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import environment_lines, table  # noqa: E402
from _feos_reference import feos_hard_sphere_wall  # noqa: E402

from helmholtz.models.cdft import Anderson, Percus, Picard, data, random_potential, solve  # noqa: E402
from helmholtz.models.cdft.gcmc import Fluid, gcmc, gcmc_numpy  # noqa: E402
from helmholtz.models.cdft.learn import TrainingData, train_functional  # noqa: E402
from helmholtz.models.cdft.potentials import Grid  # noqa: E402


def _best(fn, repeats=3):
    out, best = None, np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        jax.block_until_ready(out.rho)
        best = min(best, time.perf_counter() - t)
    return out, best


def solver_rows():
    f = Percus(0.01)
    pot = random_potential(jax.random.key(3), 40.96, walls=(1.0, 39.96), num_modes=6,
                           amplitude=1.5)
    rows = []
    for name, solver in (("Picard 0.05", Picard(0.05)), ("Anderson m=6", Anderson())):
        solve(f, pot, 2.0, solver=solver)                         # compile
        sol, sec = _best(lambda s=solver: solve(f, pot, 2.0, solver=s))
        rows.append(["helmholtz Percus rods", name, 4096, sol.iterations,
                     f"{sol.residual:.1e} ({sol.status.code})", f"{sec:.3f}"])
    for name in ("picard", "anderson"):
        try:
            r = feos_hard_sphere_wall(4096, solver=name)
            rows.append([f"FeOs {r['feos_version']} FMT spheres", name, r["n_grid"],
                         r["iterations"], f"{r['residual']:.1e} (rms)", f"{r['seconds']:.3f}"])
        except ImportError as e:
            rows.append(["FeOs", name, 4096, "—", "—", str(e)[:30]])
    return rows


def learned_rows(quick: bool):
    n_prof, steps = (16, 600) if quick else (64, 3000)
    prof = data.profiles(0, n_prof, num_sweeps=4000)
    bulk = data.bulk_pairs(0, np.linspace(-2.0, 3.5, 12), num_sweeps=4000, num_replicas=4)
    dx = 0.05
    j = int(round(1.5 / dx))
    training = TrainingData.make(dx, rho=prof["rho"], beta_v=prof["beta_v"],
                                 weight=prof["weight"], beta_mu=prof["beta_mu"],
                                 bulk_rho=bulk["rho"], bulk_c2=bulk["c"][:, :j],
                                 bulk_r=bulk["r"][:j])
    keys = jax.random.split(jax.random.key(123), 8)
    mus = np.linspace(-0.5, 2.5, 8)
    tests = [(random_potential(k, 10.0, walls=(1.0, 9.0) if i % 2 else None, num_modes=4,
                               amplitude=2.0, num_knots=4, knot_amplitude=2.0), m)
             for i, (k, m) in enumerate(zip(keys, mus, strict=True))]
    exact = [solve(Percus(dx), p, m) for p, m in tests]
    rows, means = [], {}
    for obj in ("c1", "pair", "both"):
        t = time.perf_counter()
        res = train_functional(training, jax.random.key(1), objective=obj, num_steps=steps,
                               progress_bar=True)
        seconds = time.perf_counter() - t
        fn = res.fitted.module
        mx, l2, failed = [], [], 0
        for (p, m), e in zip(tests, exact, strict=True):
            s = solve(fn, p, m, tol=1e-8)
            if not s.status.ok:
                failed += 1
                continue
            d = np.asarray(s.rho) - np.asarray(e.rho)
            mx.append(np.abs(d).max())
            l2.append(np.linalg.norm(d) / np.linalg.norm(np.asarray(e.rho)))
        means[obj] = float(np.mean(mx)) if mx else np.nan
        data_used = {"c1": f"{n_prof} profiles", "pair": "12 bulk states",
                     "both": f"{n_prof} profiles + 12 bulk"}[obj]
        worst = float(np.max(mx)) if mx else np.nan
        rows.append([obj, data_used, steps, f"{seconds:.0f}", f"{means[obj]:.4f}",
                     f"{worst:.4f}", f"{100 * np.mean(l2) if l2 else np.nan:.2f} %", failed])
    return rows, means


def gcmc_rows():
    fluid = Fluid.hard_rods()
    grid = Grid(10.0, 0.05)
    mus = jnp.full(256, 1.0)
    sweeps = 400
    gcmc(jax.random.key(0), fluid, None, mus, grid, num_sweeps=sweeps)      # compile
    t = time.perf_counter()
    gcmc(jax.random.key(1), fluid, None, mus, grid, num_sweeps=sweeps)
    jax_rate = 256 * sweeps * 1.1 / (time.perf_counter() - t)  # + 10 % equilibration
    t = time.perf_counter()
    gcmc_numpy(0, fluid, lambda x: 0.0, 1.0, 10.0, 200, num_blocks=10)
    np_rate = 200 * 1.1 / (time.perf_counter() - t)
    return [["JAX, 256 systems (vmap)", f"{jax_rate:,.0f}", f"{jax_rate / np_rate:.0f}×"],
            ["NumPy loop, 1 system", f"{np_rate:,.0f}", "1×"]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    print("\n".join(environment_lines()))
    s_rows = solver_rows()
    print("\nSolvers to 1e-10 on 4096 points (seconds: best of 3, after compile)")
    print(table(["problem", "solver", "points", "iterations", "residual", "seconds"], s_rows))
    g_rows = gcmc_rows()
    print("\nGCMC, hard rods, L = 10σ, 40 moves per sweep")
    print(table(["implementation", "system-sweeps / s", "ratio"], g_rows))
    l_rows, means = learned_rows(args.quick)
    print("\nLearned functionals vs Percus, 8 held-out potentials (max |Δρ|, relative L2)")
    print(table(["objective", "training data", "steps", "seconds", "mean max |Δρ|",
                 "worst max |Δρ|", "mean L2", "unsolved"], l_rows))
    ratio = means["c1"] / means["pair"]
    print(f"\nnaive / pair-matched mean max error: {ratio:.1f}× (goal ≥ 2×)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"solvers": s_rows, "gcmc": g_rows, "learned": l_rows,
                       "ratio": ratio}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
