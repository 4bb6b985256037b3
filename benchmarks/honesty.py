"""Are the default ``ais`` and ``smc`` error bars honest? A 20-seed study.

For each target with an exact log Z and each engine at its default options, ``--seeds``
runs (seeds 0 … S−1) give log Ẑ ± se and a status. With z = (log Ẑ − log Z)/se, an honest
engine has z-scores of standard deviation about 1; the bar (issue 10) is sd(z) ≤ 2 over
all runs, or the run's status flags it (``result.free_energy.warning`` non-empty, status
``unreliable``), and no unflagged run more than 4 se from the truth.

Targets:

* ``banana`` — Haario et al.'s twisted Gaussian, 10-d, b = 0.1, base N(0, 10² I), log Z = 0.
* ``unequal_mixture`` — 3 Gaussians in 5-d (weights 0.7/0.2/0.1, scales 1/0.5/2), base
  N(0, 6² I), log Z = 0.
* ``heavy_tailed_mixture`` — a 1-d two-component mixture (n = 40) with Cauchy(0, 5) priors
  on both means, log Z by a float64 grid quadrature (−94.19338).

Run: ``python benchmarks/honesty.py`` (about ten minutes on 2 cores; ``--seeds 5`` for a
quick look). Prints one row per target × engine: sd(z) over all runs and over unflagged
runs, the largest |z| of an unflagged run, how many runs were flagged, the mean |error|
and the mean reported se. ``--json FILE`` writes every run.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

import helmholtz
from helmholtz import models

TARGETS = ("banana", "unequal_mixture", "heavy_tailed_mixture")
ENGINES = ("ais", "smc")


def study(target_name: str, engine: str, seeds: int, options: dict | None = None) -> list[dict]:
    """One row per seed: log Ẑ, se, the flag, z."""
    entry = models.get(target_name)
    target = entry.target(seed=0)
    exact = entry.log_z(seed=0)
    rows = []
    for seed in range(seeds):
        result = helmholtz.infer(target, engine, seed=seed, progress_bar=False,
                                 **(options or {}))
        fe = result.free_energy
        log_z, se = -fe.value, fe.se
        z = (log_z - exact) / se if se > 0 else math.inf
        rows.append({"seed": seed, "log_z": log_z, "se": se, "exact": exact, "z": z,
                     "flagged": not fe.reliable or not result.status.ok,
                     "warning": fe.warning or result.status.message,
                     "seconds": result.run_seconds})
    return rows


def summarise(rows: list[dict]) -> dict:
    z = np.array([r["z"] for r in rows])
    flagged = np.array([r["flagged"] for r in rows])
    err = np.abs([r["log_z"] - r["exact"] for r in rows])
    clean = z[~flagged]
    return {
        "sd_z": float(np.std(z, ddof=1)) if np.all(np.isfinite(z)) else math.inf,
        "sd_z_unflagged": float(np.std(clean, ddof=1)) if clean.size > 1 else math.nan,
        "max_abs_z_unflagged": float(np.max(np.abs(clean))) if clean.size else math.nan,
        "flagged": int(flagged.sum()), "runs": len(rows),
        "mean_abs_error": float(err.mean()),
        "mean_se": float(np.mean([r["se"] for r in rows])),
        "passes": bool((np.std(z, ddof=1) <= 2 or flagged.all()
                        or (clean.size > 1 and np.std(clean, ddof=1) <= 2))
                       and (clean.size == 0 or np.max(np.abs(clean)) <= 4)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--engines", nargs="+", default=list(ENGINES))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    print(f"{'target':22s} {'engine':6s} {'sd(z)':>7s} {'sd(z) ok':>9s} {'max|z| ok':>10s} "
          f"{'flagged':>8s} {'mean|err|':>10s} {'mean se':>8s} {'s/run':>6s}  bar")
    everything = {}
    for name in args.targets:
        for engine in args.engines:
            t0 = time.perf_counter()
            rows = study(name, engine, args.seeds)
            s = summarise(rows)
            everything[f"{name}/{engine}"] = {"runs": rows, "summary": s}
            per_run = (time.perf_counter() - t0) / len(rows)
            print(f"{name:22s} {engine:6s} {s['sd_z']:7.2f} {s['sd_z_unflagged']:9.2f} "
                  f"{s['max_abs_z_unflagged']:10.2f} {s['flagged']:4d}/{s['runs']:<3d} "
                  f"{s['mean_abs_error']:10.3f} {s['mean_se']:8.3f} {per_run:6.1f}  "
                  f"{'PASS' if s['passes'] else 'MISS'}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(everything, f, indent=1, default=float)


if __name__ == "__main__":
    main()
