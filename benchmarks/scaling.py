"""Throughput over devices and processes: ``nuts`` chains and ``smc`` particles.

Each layout runs in fresh processes: 1 process with 1, 2 or 4 devices, and 2 processes
(``helmholtz.distributed``, gloo over localhost) with 1 or 2 devices each. On the CPU the
devices are XLA's simulated host devices (``--xla_force_host_platform_device_count``),
which share the machine's cores; on a GPU machine pass ``--platform gpu`` and the
devices are the GPUs (one process per GPU when 2 processes). Every process runs the same
program; each engine is called once to compile and then timed on a second call
(``Result.run_seconds``, the compiled work and the gathers between chunks).

* ``nuts``: ``--chains`` chains (a multiple of 4), ``--warmup`` + ``--samples`` steps on
  the zoo's logistic regression; throughput = chains × (warmup + samples) / run s.
* ``smc``: 4 replicates (the chain axis) of ``--particles`` particles, 5 HMC moves per
  temperature; throughput = particle moves per second.

The communication overhead is the run time of 2 processes over that of 1 process with
the same number of devices. Usage::

    python benchmarks/scaling.py                 # CPU, about 3 minutes on 2 cores
    python benchmarks/scaling.py --platform gpu  # on a machine with 2+ GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

CHILD = r"""
import json, os, sys
nproc, pid, port, per, platform, args = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                         int(sys.argv[4]), sys.argv[5], json.loads(sys.argv[6]))
import helmholtz, helmholtz.distributed
if nproc > 1:
    helmholtz.distributed.initialize(f"127.0.0.1:{port}", nproc, pid,
                                     local_device_count=per if platform == "cpu" else None)
import jax
from helmholtz.models import get
target = get("logistic_regression").target()
out = {"devices": jax.device_count(), "processes": jax.process_count()}
nuts = dict(num_chains=args["chains"], num_warmup=args["warmup"], num_samples=args["samples"])
smc = dict(num_particles=args["particles"], num_replicates=4)
for name, opts in (("nuts", nuts), ("smc", smc)):
    helmholtz.infer(target, name, seed=0, progress_bar=False, **opts)  # compile
    r = helmholtz.infer(target, name, seed=1, progress_bar=False, **opts)
    if name == "nuts":
        work = args["chains"] * (args["warmup"] + args["samples"])
    else:
        work = 4 * args["particles"] * 5 * sum(r.config["num_tempering_steps"]) / 4
    out[name] = {"run_s": r.run_seconds, "per_s": work / r.run_seconds}
if helmholtz.distributed.is_main():
    print(json.dumps(out))
"""

LAYOUTS = ((1, 1), (1, 2), (1, 4), (2, 1), (2, 2))  # (processes, devices per process)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_layout(nproc: int, per: int, platform: str, settings: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    if platform == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        if nproc == 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                                f" --xla_force_host_platform_device_count={per}").strip()
    port = str(_free_port())
    procs = []
    for i in range(nproc):
        e = dict(env)
        if platform != "cpu":  # one process per group of GPUs
            e["CUDA_VISIBLE_DEVICES"] = ",".join(str(i * per + j) for j in range(per))
        procs.append(subprocess.Popen(
            [sys.executable, "-c", CHILD, str(nproc), str(i), port, str(per), platform,
             json.dumps(settings)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=e))
    outs = [p.communicate(timeout=1800) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"layout {nproc}×{per} failed:\n{err[-2000:]}")
    return json.loads([ln for ln in outs[0][0].splitlines() if ln.startswith("{")][-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--particles", type=int, default=2000)
    args = parser.parse_args(argv)
    settings = {k: getattr(args, k) for k in ("chains", "warmup", "samples", "particles")}
    rows = {}
    print(f"{'processes':>9s} {'devices':>7s} {'nuts run s':>10s} {'chain-steps/s':>13s} "
          f"{'smc run s':>9s} {'moves/s':>10s}")
    for nproc, per in LAYOUTS:
        r = run_layout(nproc, per, args.platform, settings)
        rows[(nproc, nproc * per)] = r
        print(f"{nproc:9d} {nproc * per:7d} {r['nuts']['run_s']:10.2f} "
              f"{r['nuts']['per_s']:13.0f} {r['smc']['run_s']:9.2f} "
              f"{r['smc']['per_s']:10.3g}", flush=True)
    print()
    for devices in (2, 4):
        one, two = rows[(1, devices)], rows[(2, devices)]
        print(f"{devices} devices, 2 processes / 1 process run time: nuts "
              f"{two['nuts']['run_s'] / one['nuts']['run_s']:.2f}, smc "
              f"{two['smc']['run_s'] / one['smc']['run_s']:.2f}")


if __name__ == "__main__":
    main()
