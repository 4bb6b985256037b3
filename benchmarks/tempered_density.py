"""What the one-trace tempered density saves AIS and SMC per call.

Annealing engines evaluate log π_β(z) = log prior(z) + β log L(z) and its gradient at
every leapfrog step of every particle. Written as two calls (``target.log_prior(z) +
β * target.log_likelihood(z)``, as blackjax's tempered SMC writes it) the model is traced
twice; ``target.tempered(β).log_density`` traces it once. This script times both, jitted
and vmapped over a population, side by side in one process (interleaved rounds, medians),
on zoo models, and prints the ratio two-trace / one-trace for the value and gradient and
for the trace + compile time.

    python benchmarks/tempered_density.py [--particles 1000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import environment_lines, median, table

from helmholtz.driver import cpu_compiler_options
from helmholtz.models import get

MODELS = ("eight_schools_centered", "logistic_regression", "linear_gaussian")


def _functions(target, beta):
    def two(z):
        return target.log_prior(z) + beta * target.log_likelihood(z)

    one = target.tempered(beta).log_density

    def batched(fn):
        return lambda z: jax.vmap(jax.value_and_grad(fn))(z)

    return batched(two), batched(one)


def _compile(fn, z):
    t0 = time.perf_counter()
    exe = jax.jit(fn).lower(z).compile(cpu_compiler_options() or None)
    return exe, time.perf_counter() - t0


def _time(exe, z, repeats=20):
    jax.block_until_ready(exe(z))
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(exe(z))
    return (time.perf_counter() - t0) / repeats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--particles", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    print("\n".join(environment_lines()))
    rows = []
    for name in args.models.split(","):
        target = get(name).target(seed=0)
        z = target.sample_reference(jax.random.key(0), args.particles)
        two, one = _functions(target, jnp.asarray(0.3, z.dtype))
        (exe2, c2), (exe1, c1) = _compile(two, z), _compile(one, z)
        np.testing.assert_allclose(np.asarray(exe2(z)[0]), np.asarray(exe1(z)[0]),
                                   rtol=1e-5, atol=1e-4)
        t2, t1 = [], []
        for _ in range(args.rounds):  # A B B A
            t2.append(_time(exe2, z))
            t1.append(_time(exe1, z))
            t1.append(_time(exe1, z))
            t2.append(_time(exe2, z))
        rows.append([name, target.dim, f"{median(t2) * 1e3:.3f}", f"{median(t1) * 1e3:.3f}",
                     f"{median(t2) / median(t1):.2f}", f"{c2:.2f}", f"{c1:.2f}",
                     f"{c2 / c1:.2f}"])
    print()
    print(f"value and gradient of log π_β over {args.particles} particles, jitted")
    print(table(["model", "dim", "two-trace ms", "one-trace ms", "ratio",
                 "compile two s", "compile one s", "ratio"], rows))


if __name__ == "__main__":
    main()
