"""Diffusion samplers (pis, dds, cmcd, asbs) against helmholtz's SMC on the standard targets.

Part 1, targets with exact log Z and exact draws — ``funnel_boltzmann`` (10-d, σ = 3, over
a N(0, 3² I) base), ``gmm40`` (2-d, 40 modes) and ``many_well`` (32-d, 2¹⁶ modes). Per
engine and seed: |Δ log Z| of the importance-sampling estimate with its se, the
EUBO − ELBO gap, the Sinkhorn W2 (ott-jax, ε = 1% of the mean cost) of the raw draws to
2 000 exact draws, GMM-40 modes covered, target-gradient evaluations (training
included) and wall seconds on this machine.

Anchors: DDS authors (Vargas et al. 2023, Table 1) funnel-10 |Δ log Z| ≈ 0.18–0.22 for
DDS and 0.27–0.54 for PIS at 64–512 steps (30 seeds); FAB (Midgley et al. 2023) many-well
error 0.03. Goals (issue 12): one diffusion sampler at |Δ log Z| ≤ 0.1 on funnel-10 and
many-well-32, no GMM-40 mode lost, one diffusion sampler beating SMC on one target at
equal gradient evaluations.

Part 2 (``--particles``), DW-4 and LJ-13 (no exact log Z): sample W2 and energy-histogram
W2 against a long SMC reference run, next to the ASBS paper's table (Liu et al. 2025,
3 seeds; DW-4 W2 / energy W2: PIS 0.68 / 0.65, DDS 0.92 / 0.90, iDEM 0.70 / 0.55, ASBS
0.43 / 0.20; LJ-13: PIS 1.93 / 18.02, DDS 1.99 / 24.61, ASBS 1.59 / 1.99). Our W2 is on
raw flat coordinates with a centre-of-mass restraint (the paper's targets are
centre-of-mass free and its W2 may be taken modulo symmetries), so the comparison is
indicative, not like for like.

Run: ``python benchmarks/diffusion.py`` (part 1, one seed, about 40 minutes on 2 cores);
``--particles`` adds part 2; ``--seeds 3``; ``--steps N`` sets the training iterations;
``--json FILE`` writes every row.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import jax
import numpy as np

import helmholtz
from helmholtz import models
from helmholtz.diagnostics import energy_w2, modes_covered, sinkhorn_w2
from helmholtz.models.boltzmann import GMM40_MEANS

DIFFUSION = ("pis", "dds", "cmcd", "asbs")
TARGETS = ("funnel_boltzmann", "gmm40", "many_well")


def _options(engine: str, steps: int) -> dict:
    if engine == "smc":
        return {"num_particles": 2000}
    return {"num_steps": 64, "num_gradient_samples": 256, "num_optimizer_steps": steps,
            "num_samples": 2000, "learning_rate": 1e-3}


def _weights(r):
    if r.log_weights is None:
        return None
    lw = r.log_weights.ravel()
    return np.exp(lw - lw[np.isfinite(lw)].max())


def run_exact(target_name: str, engine: str, seed: int, steps: int) -> dict:
    target = models.get(target_name).target()
    exact = np.asarray(jax.vmap(target.unconstrain)(
        target.model.exact_sampler(jax.random.key(10_000 + seed), 2000)))
    start = time.perf_counter()
    r = helmholtz.infer(target, engine, seed=seed, **_options(engine, steps))
    wall = time.perf_counter() - start
    fe = r.estimates.get("is", r.free_energy)
    x = r.samples["x"].reshape(-1, target.dim)
    row = {"target": target_name, "engine": engine, "seed": seed, "wall_s": wall,
           "grad_evals": int(r.config["_num_grad_evals"]),
           "dlogz": fe.log_z - target.log_z, "se": fe.se, "flagged": bool(fe.warning),
           "w2": sinkhorn_w2(x, exact)}
    if "eubo" in r.estimates:
        row["gap"] = r.estimates["eubo"].log_z - r.estimates["elbo"].log_z
    if target_name == "gmm40":
        row["modes"] = modes_covered(x, GMM40_MEANS)
    return row


def run_particles(target_name: str, engine: str, seed: int, steps: int, reference) -> dict:
    target = models.get(target_name).target()
    energy = target.model.energy_fn
    start = time.perf_counter()
    r = helmholtz.infer(target, engine, seed=seed, **_options(engine, steps))
    wall = time.perf_counter() - start
    x = r.samples["x"].reshape(-1, target.dim)
    ref_x, ref_w = reference
    return {"target": target_name, "engine": engine, "seed": seed, "wall_s": wall,
            "grad_evals": int(r.config["_num_grad_evals"]),
            "w2": sinkhorn_w2(x, ref_x, weights_y=ref_w),
            "energy_w2": energy_w2(np.asarray(energy(x)), np.asarray(energy(ref_x)),
                                   weights_b=ref_w),
            "log_z": r.free_energy.log_z, "se": r.free_energy.se}


def reference_draws(target_name: str):
    """A long SMC run (5 000 particles × its replicates, 10 moves per temperature) and its
    weights."""
    target = models.get(target_name).target()
    r = helmholtz.infer(target, "smc", seed=123, num_particles=5000, num_mcmc_steps=10)
    return r.samples["x"].reshape(-1, target.dim), _weights(r)


def _fmt(rows, keys):
    lines = ["  ".join(f"{k:>10s}" for k in keys)]
    for row in rows:
        cells = []
        for k in keys:
            v = row.get(k, "")
            cells.append(f"{v:>10.3f}" if isinstance(v, float) else f"{v!s:>10s}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--engines", default=",".join(DIFFUSION + ("smc",)))
    parser.add_argument("--particles", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    from _common import environment_lines

    print("\n".join(environment_lines()))
    rows = []
    targets = [t for t in args.targets.split(",") if t]
    engines = args.engines.split(",")
    for name in targets:
        for engine in engines:
            for seed in range(args.seeds):
                rows.append(run_exact(name, engine, seed, args.steps))
                print(_fmt(rows[-1:], list(rows[-1])), flush=True)
    keys = ["target", "engine", "seed", "dlogz", "se", "flagged", "gap", "w2", "modes",
            "grad_evals", "wall_s"]
    print("\n" + _fmt(rows, keys))
    if args.particles:
        part = []
        for name in ("dw4", "lj13"):
            reference = reference_draws(name)
            for engine in engines:
                for seed in range(args.seeds):
                    part.append(run_particles(name, engine, seed, args.steps, reference))
                    print(_fmt(part[-1:], list(part[-1])), flush=True)
        print("\n" + _fmt(part, ["target", "engine", "seed", "w2", "energy_w2", "log_z",
                                 "se", "grad_evals", "wall_s"]))
        rows += part
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{k: (None if isinstance(v, float) and math.isnan(v) else v)
                        for k, v in row.items()} for row in rows], f, indent=1)


if __name__ == "__main__":
    main()
