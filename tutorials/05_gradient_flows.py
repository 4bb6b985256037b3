# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Gradient flows of the free energy: Wasserstein, Fisher–Rao, WFR and SVGD
#
# Every engine in helmholtz lowers one functional, F[q] = E_q[U] − S(q) = KL(q‖p) − log Z,
# with U = −log p̃. A *gradient flow* lowers it continuously, and the metric on densities
# decides how the mass may move:
#
# * **Wasserstein** — mass flows along −∇(δF/δq): ∂q/∂t = ∇·(q ∇ log(q/p)), the
#   Fokker–Planck equation of Langevin dynamics. Particles move; none is created.
# * **Fisher–Rao** — mass is created where q < p and destroyed where q > p:
#   ∂q/∂t = −(log(q/p) − E_q[log(q/p)]) q. Nothing moves; particles are reweighted
#   (birth–death). For KL its solution is the geometric path q_t ∝ q_0^{e^{−t}} p^{1−e^{−t}}.
# * **Wasserstein–Fisher–Rao** — both at once (Lu, Lu & Nolen 2019).
# * **SVGD** — the Wasserstein flow projected onto a kernel space: deterministic particles
#   with a repulsion in place of the noise.
#
# The target below has two modes with weights 0.75 and 0.25, separated by a barrier of
# about 8 nats. All four flows start from the same 1 000 draws of a broad N(0, 3²)
# reference, which fall about evenly into the two basins.
#
# Run as a script (`python tutorials/05_gradient_flows.py`, about two minutes on two CPU
# cores) or open it as a notebook with jupytext. Figures go to `tutorials/images/`.

# %%
from pathlib import Path

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import logsumexp
from matplotlib.animation import FuncAnimation, PillowWriter

import helmholtz
from helmholtz.diagnostics import mode_weights
from helmholtz.engines.flows import free_energy_trace

IMAGES = Path(__file__).resolve().parent / "images"
IMAGES.mkdir(exist_ok=True)

MODES = np.array([[-2.0, 0.0], [2.0, 0.0]])
WEIGHTS = np.array([0.75, 0.25])


def energy(x):
    comp = jnp.sum(dist.Normal(jnp.asarray(MODES), 0.5).log_prob(x), -1)
    return -logsumexp(jnp.log(jnp.asarray(WEIGHTS)) + comp)


model = helmholtz.boltzmann(energy, dist.Normal(jnp.zeros(2), 3.0).to_event(1), log_z=0.0)

# %% [markdown]
# ## Four flows, one target
#
# Each run keeps the particles at every step (`keep_particles=True`) for the pictures.
# Langevin, SVGD and WFR spend 1 000 particles × 600 steps of target gradients;
# Fisher–Rao needs no gradient at all, only the likelihood at its reference draws.

# %%
common = dict(seed=0, keep_particles=True)
runs = {
    "Wasserstein (Langevin)": helmholtz.infer(model, "langevin", num_particles=1000,
                                              num_steps=600, step_size=0.05, **common),
    "SVGD": helmholtz.infer(model, "svgd", num_particles=1000, num_steps=600, **common),
    "Fisher–Rao": helmholtz.infer(model, "fisher-rao", num_particles=4000, num_replicates=2,
                                  num_steps=60, step_size=0.08, **common),
    "WFR": helmholtz.infer(model, "wfr", num_particles=1000, num_steps=600, step_size=0.05,
                           **common),
}
print(f"{'flow':24s} {'weight of mode 1':>17s} {'F[q] at the end':>16s}")
for name, r in runs.items():
    lw = None if r.log_weights is None else r.log_weights.ravel()
    w = mode_weights(r.samples["x"].reshape(-1, 2), MODES, lw)
    f = r.estimates.get("F[q]", r.free_energy)
    print(f"{name:24s} {w[0]:17.3f} {f.value:16.3f}")

# %% [markdown]
# Langevin keeps the split the reference gave it: the barrier is crossed on a time scale
# of e^8 ≫ 30 time units, so its F[q] stays at KL(π‖(0.75, 0.25)) above −log Z = 0. SVGD
# behaves alike (its repulsion spreads particles inside a basin, not across the
# barrier). Fisher–Rao and WFR move weight from the over-full basin to the under-full one
# and end at 0.75 — what neither transport alone can do. (F[q] of the particle methods
# uses a nearest-neighbour entropy, good to a few hundredths of a nat here.)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for name, r in runs.items():
    steps, f = free_energy_trace(r, every=10)
    t = steps * (r.config["step_size"] if name != "Fisher–Rao" else 1.0)
    if name == "Fisher–Rao":  # its time is −log(1 − β)
        beta = np.asarray(r.trace["beta"])[steps]
        t = -np.log1p(-np.minimum(beta, 1 - 1e-6))
    axes[0].plot(t, f, label=name)
axes[0].axhline(0.0, color="k", lw=0.8, ls="--", label="−log Z")
axes[0].set(xlabel="flow time t", ylabel="F[q_t] (nats)", ylim=(-0.5, 4), xlim=(0, 12),
            title="the free energy each flow lowers")
axes[0].legend()
for name, r in runs.items():
    pos = np.asarray(r.trace["positions"])
    if pos.ndim == 4:  # fisher-rao: (replicate, step, N, 2)
        pos = pos[0]
    lws = r.trace.get("log_weights")
    frac = []
    for i in range(pos.shape[0]):
        lw = None if lws is None else np.asarray(lws)[i].ravel() if np.ndim(lws) == 2 \
            else np.asarray(lws)[0, i]
        frac.append(mode_weights(pos[i], MODES, lw)[0])
    axes[1].plot(np.arange(len(frac)) / len(frac), frac, label=name)
axes[1].axhline(0.75, color="k", lw=0.8, ls="--", label="exact 0.75")
axes[1].set(xlabel="fraction of the run", ylabel="weight of mode 1", ylim=(0.3, 0.9),
            title="mode weight along the flow")
axes[1].legend()
fig.tight_layout()
fig.savefig(IMAGES / "flows_free_energy.png", dpi=110)

# %% [markdown]
# ## The particles
#
# Marker area is a particle's weight (Fisher–Rao and WFR); the contours are the target.

# %%
g = np.linspace(-5, 5, 120)
gx, gy = np.meshgrid(g, g)
grid = np.stack([gx.ravel(), gy.ravel()], 1)
dens = np.exp(-np.asarray([float(energy(jnp.asarray(p))) for p in grid[::1]]))
dens = dens.reshape(gx.shape)


def frame_data(r, i):
    pos = np.asarray(r.trace["positions"])
    lws = r.trace.get("log_weights")
    if pos.ndim == 4:
        pos, lws = pos[0], None if lws is None else np.asarray(lws)[0]
    n = pos.shape[0]
    i = min(i, n - 1)
    if lws is None:
        return pos[i], np.full(pos.shape[1], 4.0)
    lw = np.asarray(lws)[i]
    w = np.exp(lw - np.logaddexp.reduce(lw))
    return pos[i], 4.0 * w * len(w)


fig, axes = plt.subplots(1, 4, figsize=(15, 3.8), sharex=True, sharey=True)
for ax, (name, r) in zip(axes, runs.items(), strict=True):
    x, s = frame_data(r, 10**9)
    ax.contour(gx, gy, dens, levels=6, colors="0.6", linewidths=0.6)
    ax.scatter(x[:, 0], x[:, 1], s=s, alpha=0.5)
    ax.set(title=name, xlim=(-5, 5), ylim=(-4, 4))
fig.tight_layout()
fig.savefig(IMAGES / "flows_particles.png", dpi=110)

# %%
fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), sharex=True, sharey=True)
scatters = []
for ax, (name, r) in zip(axes, runs.items(), strict=True):
    ax.contour(gx, gy, dens, levels=6, colors="0.6", linewidths=0.6)
    x, s = frame_data(r, 0)
    scatters.append(ax.scatter(x[:, 0], x[:, 1], s=s, alpha=0.5))
    ax.set(title=name, xlim=(-5, 5), ylim=(-4, 4))
num_frames = 40


def update(k):
    for sc, r in zip(scatters, runs.values(), strict=True):
        n = np.asarray(r.trace["positions"]).shape[-3]
        x, s = frame_data(r, int(k * (n - 1) / (num_frames - 1)))
        sc.set_offsets(x)
        sc.set_sizes(s)
    return scatters


FuncAnimation(fig, update, frames=num_frames).save(IMAGES / "flows_particles.gif",
                                                   writer=PillowWriter(fps=8), dpi=60)
plt.close("all")
print("figures written to", IMAGES)
