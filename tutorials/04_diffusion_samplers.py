# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Diffusion samplers: Q and P as Markov chains on path space
#
# A diffusion sampler is a pair of Markov chains on the time grid t_0 = 0 < … < t_K = 1,
#
#     Q(x_{0:K}) = q_0(x_0) Π_k F_k(x_{k+1} | x_k)      the sampler, with a learned control,
#     P(x_{0:K}) = p̃(x_K)  Π_k B_k(x_k | x_{k+1})      the target, run backwards,
#
# and training minimises a divergence between them on path space. Every path carries the
# exact weight w = dP/dQ (all kernels are Gaussian), so one trained sampler gives three
# numbers: the path ELBO E_Q[log w] ≤ log Z, the importance-sampling estimate
# log mean w (unbiased in Z, with an error bar), and, where exact target draws exist,
# the EUBO E_P[log w] ≥ log Z. The same F[Q] = E_Q[energy] − entropy(Q) as every other
# engine, now on paths.
#
# Four samplers, differing in the reference and the loss:
#
# * **PIS** — Brownian motion from a point, trained on the log-variance loss;
# * **DDS** — an Ornstein–Uhlenbeck process started at its stationary Gaussian;
# * **CMCD** — annealed Langevin dynamics from the model's prior to the target, with a
#   learned correction drift (and a learned step size);
# * **ASBS** — a Schrödinger bridge from a Gaussian source, trained by adjoint matching
#   and corrector matching (regressions, no backpropagation through the SDE).
#
# We put them side by side with NUTS and SMC on GMM-40: 40 unit Gaussians scattered over
# [−40, 40]², log Z = 0, the standard test of mode coverage.
#
# Run as a script (`python tutorials/04_diffusion_samplers.py`, about fifteen minutes on two
# CPU cores) or open it as a notebook with jupytext. Figures go to `tutorials/images/`.

# %%
import time
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np

import helmholtz
from helmholtz import models
from helmholtz.diagnostics import modes_covered, sinkhorn_w2
from helmholtz.models.boltzmann import GMM40_MEANS, gmm40_energy

IMAGES = (Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()) / "images"
IMAGES.mkdir(parents=True, exist_ok=True)

target = models.get("gmm40").target()
exact = np.asarray(target.model.exact_sampler(jax.random.key(1), 2000)["x"])

# %% [markdown]
# ## Six engines, one model
#
# The diffusion samplers train for a few thousand steps of 256 paths each; the budget
# column counts the target-gradient evaluations (training included), the currency in
# which samplers are compared.

# %%
TRAIN = dict(num_steps=64, num_gradient_samples=256, num_samples=2000, learning_rate=1e-3)
runs = {
    "nuts": dict(num_chains=8, num_warmup=1000, num_samples=250),
    "smc": dict(num_particles=2000),
    "pis": dict(TRAIN, num_optimizer_steps=2000),
    "dds": dict(TRAIN, num_optimizer_steps=2000),
    "cmcd": dict(TRAIN, num_optimizer_steps=2000),
    "asbs": dict(TRAIN, num_optimizer_steps=2000),
}
results = {}
for name, options in runs.items():
    start = time.perf_counter()
    results[name] = helmholtz.infer(target, name, seed=0, progress_bar=False, **options)
    print(f"{name:5s} {time.perf_counter() - start:6.1f} s")

# %%
print(helmholtz.compare(list(results.values())))
print()
print(f"{'engine':6s} {'modes':>5s} {'Sinkhorn W2':>11s} {'grad evals':>11s}")
for name, r in results.items():
    x = r.samples["x"].reshape(-1, 2)
    w = None if r.log_weights is None else np.exp(r.log_weights.ravel()
                                                  - r.log_weights.max())
    print(f"{name:6s} {modes_covered(x, GMM40_MEANS):5d} "
          f"{sinkhorn_w2(x, exact, weights_x=w):11.3f} {r.config['_num_grad_evals']:11.3g}")

# %% [markdown]
# ## Samples over the density
#
# Raw draws (no reweighting) over the contours of log p. NUTS chains stay in the mode they
# start near; SMC and the diffusion samplers spread over the modes, and the importance
# weights (not shown) correct the diffusion samplers' uneven mode masses.

# %%
grid = np.linspace(-50, 50, 300)
gx, gy = np.meshgrid(grid, grid)
logp = -np.asarray(gmm40_energy(np.stack([gx, gy], -1)))
fig, axes = plt.subplots(2, 3, figsize=(12, 8), sharex=True, sharey=True)
for ax, (name, r) in zip(axes.ravel(), results.items(), strict=True):
    ax.contour(gx, gy, np.maximum(logp, -30), levels=15, cmap="Greys", linewidths=0.5)
    x = r.samples["x"].reshape(-1, 2)
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, color="C3")
    ax.set_title(f"{name}: {modes_covered(x, GMM40_MEANS)}/40 modes")
fig.tight_layout()
fig.savefig(IMAGES / "diffusion_samples.png", dpi=110)

# %% [markdown]
# ## Training curves
#
# The path ELBO of each training batch (log Z = 0 is the ceiling) and the Kish ESS of its
# 256 importance weights.

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
for name in ("pis", "dds", "cmcd", "asbs"):
    trace = results[name].trace
    window = np.ones(25) / 25  # a running mean over 25 steps, only where it is whole
    steps = np.arange(trace["elbo"].size - window.size + 1) + window.size // 2
    ax1.plot(steps, np.convolve(trace["elbo"], window, mode="valid"), label=name)
    ax2.plot(steps, np.convolve(trace["ess"], window, mode="valid"), label=name)
ax1.axhline(0.0, color="k", lw=0.8)
ax1.set(xlabel="optimiser step", ylabel="batch ELBO", ylim=(-15, 1))
ax2.set(xlabel="optimiser step", ylabel="Kish ESS of 256 paths")
ax1.legend()
fig.tight_layout()
fig.savefig(IMAGES / "diffusion_training.png", dpi=110)

# %% [markdown]
# ## The path picture
#
# The trained DDS sampler draws whole paths again (`result.fitted.paths`) without
# retraining: particles start in the broad Gaussian reference and flow into the 40 modes.

# %%
states, log_w = results["dds"].fitted.paths(jax.random.key(2), 1500)
snapshots = np.linspace(0, states.shape[0] - 1, 6).astype(int)
fig, axes = plt.subplots(1, 6, figsize=(18, 3.3), sharex=True, sharey=True)
for ax, k in zip(axes, snapshots, strict=True):
    ax.contour(gx, gy, np.maximum(logp, -30), levels=10, cmap="Greys", linewidths=0.4)
    ax.scatter(states[k, :, 0], states[k, :, 1], s=1.5, alpha=0.5, color="C0")
    ax.set_title(f"t = {k / (states.shape[0] - 1):.2f}")
    ax.set_xlim(-60, 60)
    ax.set_ylim(-60, 60)
fig.tight_layout()
fig.savefig(IMAGES / "diffusion_paths.png", dpi=110)
print("log Z from 1500 fresh paths:",
      float(np.log(np.mean(np.exp(log_w - log_w.max()))) + log_w.max()))
