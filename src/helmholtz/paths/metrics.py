"""Metrics of transition paths, as PIPS (Holdijk et al. 2023) and TPS-DPS (Seong et al.
2025) report them.

* RMSD: the distance of each path's final frame to B (heavy-atom RMSD after Kabsch
  alignment for a molecule, in Å), averaged over the paths;
* THP (target hit percentage): the share of paths whose final collective variables lie
  within ``hit_radius`` of B's (Δφ² + Δψ² < 0.75² rad² for alanine dipeptide);
* ETS (energy of the transition state): over the hitting paths, the mean of the
  largest potential energy along the path;
* the log-likelihood of the paths under the uncontrolled dynamics, the energy (force)
  evaluations and the wall seconds the run took.

A path whose energy overflowed (``blown_up``) counts as a miss for THP, is left out of
RMSD and ETS, and is counted in ``num_blown_up``; it never enters a mean silently.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import numpy as np

__all__ = ["path_statistics", "TransitionMetrics", "transition_metrics", "metrics_table"]


def path_statistics(problem, paths) -> dict:
    """Per-path arrays of a :class:`~helmholtz.paths.transition.Rollout`:
    ``final_distance``, ``final_cv`` ``(n, m)``, ``hit``, ``max_energy``, ``blown_up``,
    ``log_likelihood``, ``log_weight`` (numpy, float64)."""
    end = paths.end
    dist_ = jax.vmap(problem.distance_fn)(end)
    cv = jax.vmap(problem.cv_fn)(end)
    gap = jax.vmap(problem.cv_distance)(end)
    bad = np.asarray(paths.blown_up)
    out = {"final_distance": dist_, "final_cv": cv, "hit": (gap < problem.hit_radius) & ~bad,
           "max_energy": paths.max_energy, "blown_up": bad,
           "log_likelihood": paths.log_likelihood, "log_weight": paths.log_weight}
    out = {k: np.asarray(v, np.float64 if k not in ("hit", "blown_up") else bool)
           for k, v in out.items()}
    for k in ("final_distance", "max_energy", "log_likelihood"):
        out[k] = np.where(bad, np.nan, out[k])
    return out


class TransitionMetrics(NamedTuple):
    """RMSD (the unit of the problem's distance), THP (%), ETS (energy unit), mean path
    log-likelihood under P, with standard errors; counts, energy evaluations and wall
    seconds."""

    rmsd: float
    rmsd_se: float
    thp: float
    thp_se: float
    ets: float
    ets_se: float
    log_likelihood: float
    num_paths: int
    num_hits: int
    num_blown_up: int
    energy_evaluations: int
    wall_seconds: float

    def row(self, label: str) -> str:
        ets = "—" if math.isnan(self.ets) else f"{self.ets:8.2f} ± {self.ets_se:5.2f}"
        return (f"{label:<36} {self.rmsd:6.3f} ± {self.rmsd_se:5.3f}  {self.thp:6.2f} ± "
                f"{self.thp_se:5.2f}  {ets:>16}  {self.num_blown_up:4d}  "
                f"{self.energy_evaluations:12.3e}  {self.wall_seconds:8.1f}")


def _mean_se(v) -> tuple[float, float]:
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan


def transition_metrics(source, *, energy_evaluations: int | None = None,
                       wall_seconds: float | None = None) -> TransitionMetrics:
    """The metrics of a transition-path Result (``tps``, ``hot-md``, ``steered-md``) or
    of a dict of :func:`path_statistics`."""
    if isinstance(source, dict):
        stats = source
        evals = 0 if energy_evaluations is None else energy_evaluations
        wall = math.nan if wall_seconds is None else wall_seconds
    else:
        if "hit" not in source.stats:
            raise ValueError(f"transition_metrics: the Result of engine '{source.engine}' "
                             "has no per-path statistics (run a transition-path engine: tps, "
                             "hot-md, steered-md)")
        stats = {k: np.asarray(v).reshape((-1,) + np.asarray(v).shape[2:])
                 for k, v in source.stats.items()}
        evals = int(source.config.get("_num_grad_evals", 0)) if energy_evaluations is None \
            else energy_evaluations
        wall = float(source.compile_seconds + source.run_seconds) if wall_seconds is None \
            else wall_seconds
    hit = np.asarray(stats["hit"], bool)
    bad = np.asarray(stats["blown_up"], bool)
    n = hit.size
    rmsd, rmsd_se = _mean_se(stats["final_distance"][~bad])
    p = hit.mean()
    ets, ets_se = _mean_se(np.asarray(stats["max_energy"])[hit])
    ll, _ = _mean_se(stats["log_likelihood"][~bad])
    return TransitionMetrics(rmsd, rmsd_se, 100 * float(p),
                             100 * math.sqrt(p * (1 - p) / max(n - 1, 1)), ets, ets_se, ll,
                             n, int(hit.sum()), int(bad.sum()), int(evals), float(wall))


def metrics_table(rows: dict, distance_unit: str = "Å", energy_unit: str = "kJ/mol") -> str:
    """A text table of ``{label: TransitionMetrics}``."""
    def unit(u):
        return f" ({u})" if u else ""

    head = (f"{'method':<36} {'RMSD' + unit(distance_unit):>14}  {'THP (%)':>14}  "
            f"{'ETS' + unit(energy_unit):>16}  {'blow':>4}  {'energy evals':>12}  "
            f"{'wall s':>8}")
    return "\n".join([head] + [m.row(label) for label, m in rows.items()])
