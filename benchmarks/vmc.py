"""Quantum VMC: energies of He, H2, Li, LiH and Be against exact references, for the
three flows — Fisher–Rao (standard VMC with SR), Wasserstein QMC and the joint WFR — at
equal steps, with the local-energy variance and seconds per step.

References (Hartree, exact non-relativistic): He −2.903724, H2 −1.174476 (R = 1.4),
Li −7.478060, LiH −8.070548 (R = 3.015), Be −14.66736. FermiNet (Pfau et al. 2020) reached
Li −7.47798, LiH −8.07050, Be −14.66733 with 16 determinants and 2·10⁵ KFAC steps on
GPUs. Neklyudov et al. (NeurIPS 2023) report WQMC's local-energy variance 3–7× below
VMC's at equal steps on their systems (PsiFormer, KFAC, 4096 walkers).

Run: ``python benchmarks/vmc.py`` (the default table: FermiNet, 512 walkers, 300
steps per flow and system, about 40 minutes on 2 cores); ``--systems He,H2``,
``--flows fisher-rao``, ``--steps``, ``--walkers``, ``--ansatz slater-jastrow``,
``--scaled-moves`` (Metropolis widths scaled by the distance to the nuclei),
``--determinants``, ``--width`` (the FermiNet's size; 4 and 32 by default),
``--json FILE`` for rows.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

jax.config.update("jax_enable_x64", True)

from _common import environment_lines, table  # noqa: E402

from helmholtz.models.quantum import systems, vmc  # noqa: E402


def run(name, flow, steps, walkers, ansatz, pretrain, seed, scaled=False, net=None):
    options = {"pretrain_steps": pretrain, **(net or {})} if ansatz == "ferminet" else {}
    t = time.perf_counter()
    engine = vmc.VMC(ansatz=ansatz, ansatz_options=options, flow=flow, num_walkers=walkers,
                     num_steps=steps, burn_in=100, num_samples=300,
                     scale_by_nuclear_distance=scaled)
    system = systems.molecule(name)
    sweeps = sum(p.num_steps for p in engine.phases(system))
    r = engine.run(system, jax.random.key(seed))
    s = vmc.energy_summary(r)
    tail = r.trace["train_variance"][-max(1, steps // 10):]
    return {"system": name, "flow": flow, "ansatz": ansatz, "steps": steps,
            "walkers": walkers, "scaled_moves": scaled, **(net or {}),
            "energy": s["energy"], "se": s["se"],
            "error_mHa": s["error_mHa"], "variance": s["variance"],
            "train_variance_last10pct": float(tail.mean()),
            "s_per_step": r.run_seconds / sweeps, "wall_s": time.perf_counter() - t,
            "status": r.status.code}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", default="He,H2,Li,LiH,Be")
    p.add_argument("--flows", default="fisher-rao,wasserstein,wfr")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--walkers", type=int, default=512)
    p.add_argument("--ansatz", default="ferminet")
    p.add_argument("--pretrain", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scaled-moves", action="store_true",
                   help="Metropolis widths scaled by the distance to the nuclei")
    p.add_argument("--determinants", type=int, help="FermiNet determinants (default 4)")
    p.add_argument("--width", type=int, help="FermiNet one-electron stream width (default 32)")
    p.add_argument("--json")
    a = p.parse_args()
    net = {k: v for k, v in (("determinants", a.determinants), ("width", a.width))
           if v is not None}
    rows = []
    for name in a.systems.split(","):
        for flow in a.flows.split(","):
            row = run(name, flow, a.steps, a.walkers, a.ansatz, a.pretrain, a.seed,
                      a.scaled_moves, net)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if a.json:
                with open(a.json, "w") as f:
                    json.dump(rows, f, indent=1)
    print("\n".join(environment_lines()))
    print(table(["system", "flow", "E (Ha)", "± se", "error (mHa)", "var E_loc",
                 "var (train, last 10%)", "s/step", "status"],
                [[r["system"], r["flow"], f"{r['energy']:.5f}", f"{r['se']:.5f}",
                  f"{r['error_mHa']:+.2f}", f"{r['variance']:.4f}",
                  f"{r['train_variance_last10pct']:.4f}", f"{r['s_per_step']:.3f}",
                  r["status"]] for r in rows]))


if __name__ == "__main__":
    main()
