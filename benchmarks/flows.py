"""The four particle flows (langevin, svgd, fisher-rao, wfr) at equal gradient evaluations.

Targets: the unequal bimodal target of the flows tutorial (2-d, weights 0.75 / 0.25, sd 0.5,
modes ±2 apart from the origin, over a N(0, 3² I) reference) and ``gmm40`` (2-d, 40 equal
modes over N(0, 30² I)). Every flow gets N particles × S steps = the same budget of target
gradients (``fisher-rao`` uses none: it is given the same number of likelihood evaluations
as reference draws). Reported: the largest error of the mode weights (nearest-mode
assignment, importance weights where the flow has them), the modes holding any mass, the
Sinkhorn W2 (ott-jax) of the particles to 4 000 exact draws, and seconds on this machine.

Run: ``python benchmarks/flows.py`` (a few minutes on 2 cores); ``--particles``,
``--steps``; ``--json FILE`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import time

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from _common import environment_lines, table
from jax.scipy.special import logsumexp

import helmholtz
from helmholtz.diagnostics import mode_weights, sinkhorn_w2
from helmholtz.models import boltzmann as zoo

BIMODAL_MEANS = np.array([[-2.0, 0.0], [2.0, 0.0]])
BIMODAL_WEIGHTS = np.array([0.75, 0.25])


def _bimodal_energy(x):
    comp = jnp.sum(dist.Normal(jnp.asarray(BIMODAL_MEANS), 0.5).log_prob(x), -1)
    return -logsumexp(jnp.log(jnp.asarray(BIMODAL_WEIGHTS)) + comp)


BIMODAL = helmholtz.boltzmann(_bimodal_energy, dist.Normal(jnp.zeros(2), 3.0).to_event(1),
                              log_z=0.0)


def _exact(means, weights, sd, num, seed):
    rng = np.random.default_rng(seed)
    comp = rng.choice(len(weights), size=num, p=weights)
    return means[comp] + sd * rng.standard_normal((num, means.shape[1]))


def problems():
    gm = zoo.GMM40_MEANS
    return {
        "bimodal": (BIMODAL, BIMODAL_MEANS, BIMODAL_WEIGHTS, 0.5, 0.05),
        "gmm40": (zoo.gmm40, gm, np.full(len(gm), 1.0 / len(gm)), 1.0, 0.1),
    }


def run(name, model, means, weights, sd, step, n, steps, seed):
    exact = _exact(means, weights, sd, 4000, seed)
    rows = []
    flows = {
        "langevin": dict(num_particles=n, num_steps=steps, step_size=step),
        "svgd": dict(num_particles=n, num_steps=steps),
        "wfr": dict(num_particles=n, num_steps=steps, step_size=step),
        "fisher-rao": dict(num_particles=n * steps // 4, num_replicates=4, num_steps=50,
                           step_size=0.1),
    }
    for engine, options in flows.items():
        t0 = time.perf_counter()
        r = helmholtz.infer(model, engine, seed=seed, **options)
        seconds = time.perf_counter() - t0
        x = r.samples["x"].reshape(-1, 2)
        lw = None if r.log_weights is None else r.log_weights.ravel()
        mw = mode_weights(x, means, lw)
        w = None if lw is None else np.exp(lw - np.logaddexp.reduce(lw))
        rows.append({"target": name, "engine": engine, "grads": r.num_grad_evals,
                     "mode_weight_error": float(np.max(np.abs(mw - weights))),
                     "modes_with_mass": int(np.sum(mw > 0.25 / len(weights))),
                     "w2": sinkhorn_w2(x, exact, weights_x=w), "seconds": seconds,
                     "log_z": r.log_z if engine == "fisher-rao" else None,
                     "status": str(r.status)})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--particles", type=int, default=1000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    for line in environment_lines():
        print(line)
    rows = []
    for name, (model, means, weights, sd, step) in problems().items():
        rows += run(name, model, means, weights, sd, step, a.particles, a.steps, a.seed)
    cols = ["target", "engine", "grads", "mode_weight_error", "modes_with_mass", "w2",
            "seconds", "log_z"]
    print(table(cols, [[r[c] for c in cols] for r in rows]))
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['target']} {r['engine']}: {r['status']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
