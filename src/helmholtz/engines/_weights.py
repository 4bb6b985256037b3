"""Temperature schedules and importance weights: what the annealing engines share.

Kept apart from the engines so that the free-energy estimators (:mod:`helmholtz.
free_energy`) and the tests can use them without the engines' kernels.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SCHEDULES", "temperature_schedule", "log_mean_exp_se", "batch_se",
           "weights_warning", "KHAT_LIMIT", "NUM_BATCHES"]

KHAT_LIMIT = 0.7
"""Pareto k̂ above which importance weights are not trusted (Vehtari et al. 2024)."""

NUM_BATCHES = 10
"""Batches of particles whose spread gives :func:`batch_se`."""

SCHEDULES = ("linear", "geometric", "sigmoid")


def temperature_schedule(schedule, num_steps: int) -> np.ndarray:
    """Inverse temperatures 0 = β_0 < β_1 < … < β_K = 1 (``K = num_steps``).

    ``"linear"``: β_k = k/K. ``"geometric"``: β_k = 10^{-4 (1 − k/K)} for k ≥ 1, with
    β_0 = 0, so that early steps are short where log L varies most. ``"sigmoid"``
    (Grosse et al. 2013): β̃_k = σ(δ(2k/K − 1)) with δ = 4, rescaled to run from 0 to 1.
    A sequence of numbers is taken as the schedule itself (it must run from 0 to 1 and
    never decrease).
    """
    if isinstance(schedule, str):
        k = np.arange(num_steps + 1) / num_steps
        if schedule == "linear":
            betas = k
        elif schedule == "geometric":
            betas = np.concatenate([[0.0], np.logspace(-4.0, 0.0, num_steps)])
        elif schedule == "sigmoid":
            s = 1.0 / (1.0 + np.exp(-4.0 * (2.0 * k - 1.0)))
            betas = (s - s[0]) / (s[-1] - s[0])
        else:
            raise AssertionError(schedule)
    else:
        betas = np.asarray(schedule, dtype=np.float64)
    betas[0], betas[-1] = 0.0, 1.0
    return betas


def log_mean_exp_se(log_w) -> tuple[float, float, float]:
    """log of the mean of exp(log_w), its delta-method standard error, and the ESS.

    With ŵ the normalised weights, ESS = 1/Σŵ², and var(w)/mean(w)² = N/ESS − 1, so
    se(log mean w) ≈ sqrt(var(w)/N)/mean(w) = sqrt(1/ESS − 1/N), computed from ŵ alone
    (no overflow whatever the scale of log_w). Non-finite log weights count as zero.
    """
    log_w = np.asarray(log_w, dtype=np.float64).ravel()
    log_w = np.where(np.isnan(log_w), -np.inf, log_w)
    n = log_w.size
    top = np.max(log_w)
    if not np.isfinite(top):
        return -math.inf, math.nan, 0.0
    w = np.exp(log_w - top)
    log_mean = float(top + np.log(w.sum()) - np.log(n))
    w_hat = w / w.sum()
    ess = float(1.0 / np.sum(w_hat**2))
    se = float(np.sqrt(max(1.0 / ess - 1.0 / n, 0.0)))
    return log_mean, se, ess


def _low_ess_warning(ess: float) -> str:
    """A warning for weights so uneven that the delta-method se cannot be trusted: it is
    computed from the same few dominant weights, and a heavy right tail of e^{−W} that
    the particles have not sampled is invisible to it."""
    if ess >= 30:
        return ""
    return (f"ESS {ess:.1f} < 30, the standard error is unreliable (the weights' tail is "
            "unsampled); use more particles or more temperatures")


def batch_se(log_w, num_batches: int = NUM_BATCHES) -> float:
    """The standard error of log mean(w) from the spread of ``num_batches`` batch means.

    With Ẑ_b the mean weight of batch b (contiguous, equal-size batches of independent
    particles) and Ẑ their mean, se(log Ẑ) ≈ sd(Ẑ_b / Ẑ)/√B. Unlike the delta method it
    does not assume that the largest weights seen describe the tail: one batch that
    holds a dominant particle moves every batch ratio. Deterministic (no bootstrap draws);
    NaN when there are fewer particles than batches.
    """
    log_w = np.asarray(log_w, dtype=np.float64).ravel()
    log_w = np.where(np.isnan(log_w), -np.inf, log_w)
    n = log_w.size - log_w.size % num_batches
    if n < num_batches or not np.isfinite(np.max(log_w)):
        return math.nan
    batches = log_w[:n].reshape(num_batches, -1)
    top = np.max(log_w)
    z_b = np.exp(batches - top).mean(axis=1)
    ratio = z_b / z_b.mean()
    return float(np.std(ratio, ddof=1) / math.sqrt(num_batches))


def weights_warning(log_w, ess: float | None = None) -> str:
    """Why the error bar of log mean(e^{log_w}) cannot be trusted, or ``""``.

    Two tests, either flags: Kish ESS below 30 (:func:`_low_ess_warning`), and the
    Pareto k̂ of the weights above 0.7, the point past which the weights' variance is
    effectively infinite so that Ẑ's distribution is skewed and its log typically falls
    short of log Z by more than any standard error computed from the draws (Vehtari et
    al. 2024, "Pareto smoothed importance sampling", JMLR 25, §3).
    """
    from helmholtz._arviz import pareto_khat

    if ess is None:
        ess = log_mean_exp_se(log_w)[2]
    low = _low_ess_warning(ess)
    if low:
        return low
    khat = pareto_khat(log_w)
    if khat > KHAT_LIMIT:
        return (f"Pareto k̂ {khat:.2f} > {KHAT_LIMIT} (the weights' tail is too heavy for "
                "the standard error); use more particles or more temperatures")
    return ""
