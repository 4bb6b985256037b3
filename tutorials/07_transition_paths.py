# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Transition paths as inference on path measures: Müller–Brown and alanine dipeptide
#
# A molecule sits in a basin A; we want the rare paths by which Langevin dynamics P
# reaches a basin B within a fixed time. Conditioning P on the end point,
#
#     P*(path) ∝ P(path) f(x_K),   log f(x) = −½ (d(x, B)/σ)²,
#
# gives the path measure of transitions, whose normaliser Z = E_P[f(x_K)] is the
# (relaxed) probability of a transition and F = −log Z its free energy. In helmholtz this
# conditioned measure is a *model* (`transition_path_model`), a controlled Langevin
# dynamics is the variational family, and the trainers are engines: `tps` learns a
# control force u_θ(t, x) by the path ELBO (`kl`), by the log-variance loss with a learned
# log Ẑ (`log_variance`, TPS-DPS) or by path-integral cross-entropy (`pice`, PIPS). Every
# path carries its exact Girsanov weight, so each run also estimates F. Classical
# baselines are engines too: `steered-md` (a spring on the collective variables pulled
# from A to B) and `hot-md` (plain dynamics at a raised temperature).
#
# Run as a script (`python tutorials/07_transition_paths.py`, about eight minutes on two
# CPU cores) or open it as a notebook with jupytext. Figures go to `tutorials/images/`.

# %%
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter

import helmholtz
from helmholtz.engines.transition import SteeredMD
from helmholtz.models.boltzmann import muller_brown_energy
from helmholtz.models.molecules import alanine
from helmholtz.models.transition_paths import (
    KJ_PER_MOL_PER_K,
    MB_A,
    MB_B,
    MB_LOWER_SADDLE,
    MB_UPPER_SADDLE,
    alanine_paths,
    alanine_transition,
    muller_brown_paths,
)
from helmholtz.paths.metrics import TransitionMetrics, metrics_table, transition_metrics
from helmholtz.paths.transition import rollout

IMAGES = Path(__file__).resolve().parent / "images"
IMAGES.mkdir(exist_ok=True)

# %% [markdown]
# ## Müller–Brown: overdamped Langevin at kT = 12.5, 275 steps of 10⁻⁴
#
# From the deepest minimum A to B, the minimum-energy path climbs to the saddle at
# (−0.82, 0.62) (U = −40.7), drops into the middle basin and crosses the lower saddle
# (0.21, 0.29) (U = −72.25). Plain dynamics never makes it in 275 steps; steered MD drags
# the state along the straight line; `tps` learns a control by the path ELBO.

# %%
mb_tps = helmholtz.infer(muller_brown_paths, "tps", seed=0, objective="kl",
                         num_optimizer_steps=600, num_gradient_samples=32,
                         learning_rate=3e-3, hidden_dim=64, num_samples=512,
                         progress_bar=True)
mb_smd = helmholtz.infer(muller_brown_paths, "steered-md", seed=0, num_samples=512)
mb_md = helmholtz.infer(muller_brown_paths, "hot-md", seed=0, num_samples=512,
                        temperature_factor=1.0)
print(metrics_table({"tps (kl)": transition_metrics(mb_tps),
                     "steered MD": transition_metrics(mb_smd),
                     "MD at kT": transition_metrics(mb_md)}, distance_unit="",
                    energy_unit=""))
print("free energy of the transition:", mb_tps.free_energy)

# %%
problem = muller_brown_paths.transition_path
trained = mb_tps.fitted.paths(jax.random.key(1), 64)
xs, ys = np.meshgrid(np.linspace(-1.5, 1.1, 200), np.linspace(-0.4, 2.0, 200))
u = np.asarray(muller_brown_energy(np.stack([xs, ys], -1)))
fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
for ax, (title, pos) in zip(axes[:2], [
        ("tps (reverse KL), 64 paths", np.asarray(trained.positions)),
        ("plain dynamics at kT, 64 paths",
         np.asarray(jax.jit(lambda k: rollout(problem, k, 64, keep=True))(
             jax.random.key(2)).positions))], strict=True):
    ax.contourf(xs, ys, np.minimum(u, 100), levels=30, cmap="viridis")
    ax.plot(pos[:, :, 0], pos[:, :, 1], color="white", lw=0.5, alpha=0.5)
    for (x, y), name in [(MB_A, "A"), (MB_B, "B"), (MB_LOWER_SADDLE[0], "S₂"),
                         (MB_UPPER_SADDLE[0], "S₁")]:
        ax.annotate(name, (x, y), color="red", fontsize=12, ha="center", va="center")
    ax.set(title=title, xlabel="x", ylabel="y")
tr = mb_tps.trace
axes[2].plot(tr["elbo"], lw=0.6, label="batch path ELBO")
axes[2].plot(np.convolve(tr["elbo"], np.ones(25) / 25, "valid"), lw=1.5,
             label="running mean (25 steps)")
axes[2].set(xlabel="optimizer step", ylabel="E_Q[log w] (nats)", ylim=(-80, 0),
            title="training")
axes[2].legend()
fig.tight_layout()
fig.savefig(IMAGES / "transition_muller_brown.png", dpi=110)

# %% [markdown]
# ## Alanine dipeptide: C5 → C7ax at 300 K, 1 fs × 1000 steps (BAOAB, γ = 1/ps)
#
# The energy is amber99sb-ildn in vacuum, in pure JAX (checked against OpenMM to 1e−3
# kJ/mol in `tests/models/test_alanine.py`). The background of the Ramachandran map is the
# free energy of (φ, ψ) from a hot reference run computed here: 32 trajectories of 40 ps
# at 800 K from C5 (at 300 K the C7ax basin is hardly visited in any affordable run). It
# is the free-energy surface *at 800 K*, −kT log p(φ, ψ), shown as such.

# %%
hot = alanine_transition(temperature_kelvin=800.0, num_steps=40_000, name="hot_reference")
hot_problem = hot.transition_path


def _hot_cvs(key):
    paths = rollout(hot_problem, key, 32, keep=True)
    frames = paths.positions[::20]  # every 20 fs
    return jax.vmap(jax.vmap(hot_problem.cv_fn))(frames)


cvs = np.degrees(np.asarray(jax.jit(_hot_cvs)(jax.random.key(3)))).reshape(-1, 2)
hist, phi_edges, psi_edges = np.histogram2d(cvs[:, 0], cvs[:, 1], bins=60,
                                            range=[[-180, 180], [-180, 180]])
kt_hot = KJ_PER_MOL_PER_K * 800.0
with np.errstate(divide="ignore"):
    fes = -kt_hot * np.log(hist.T / hist.sum())
fes -= np.nanmin(fes[np.isfinite(fes)])

# %% [markdown]
# Paths: steered MD (a spring of 500 kJ/mol/rad² on (φ, ψ), its centre moved linearly
# from C5 to C7ax) and a `tps` control trained for a few minutes by the log-variance loss
# as a residual on a softer spring (100 kJ/mol/rad²), starting at 600 K and cooling to
# 300 K over the first half. A network alone, from zero, learns nothing useful in this
# budget: no uncontrolled path comes near C7ax, so the loss has no transition to learn
# from. `benchmarks/transition_paths.py` trains longer and prints the full table.

# %%
ala = alanine_paths.transition_path
ala_smd = helmholtz.infer(alanine_paths, "steered-md", seed=0, num_samples=64, spring=500.0)
ala_tps = helmholtz.infer(alanine_paths, "tps", seed=0, objective="log_variance",
                          spring=100.0, num_optimizer_steps=200, num_gradient_samples=16,
                          num_samples=64, anneal_from=2.0, progress_bar=True)
published = {"PIPS (published)": (0.66, 43.75, 28.17),
             "TPS-DPS (published)": (0.47, 39.58, 46.34),
             "steered MD (published)": (0.56, 54.69, 78.40)}
nan = float("nan")
rows = {"steered MD (helmholtz)": transition_metrics(ala_smd),
        "tps log-var + spring, 200 st.": transition_metrics(ala_tps)}
rows.update({k: TransitionMetrics(r, nan, t, nan, e, nan, nan, 0, 0, 0, 0, nan)
             for k, (r, t, e) in published.items()})
print(metrics_table(rows))

# %%
smd_control = SteeredMD(spring=500.0).control_fn(ala, None)
smd_paths = jax.jit(lambda k: rollout(ala, k, 16, smd_control, keep=True))(jax.random.key(5))
tps_paths = ala_tps.fitted.paths(jax.random.key(4), 16)


def _cv_path(positions):
    return np.degrees(np.asarray(jax.vmap(jax.vmap(ala.cv_fn))(positions)))


fig, axes = plt.subplots(1, 2, figsize=(13, 5.4))
ax = axes[0]
mesh = ax.pcolormesh(phi_edges, psi_edges, np.where(np.isfinite(fes), fes, np.nan),
                     cmap="Blues_r", shading="flat")
fig.colorbar(mesh, ax=ax, label="free energy at 800 K (kJ/mol)")
for paths, color in [(smd_paths, "gray"), (tps_paths, "orange")]:
    for pos in np.moveaxis(_cv_path(paths.positions), 1, 0):
        jumps = np.abs(np.diff(pos, axis=0)).max(axis=1) > 180  # wrap-around: break it
        pos = pos.copy()
        pos[1:][jumps] = np.nan
        ax.plot(pos[:, 0], pos[:, 1], color=color, lw=0.7)
start_cv, target_cv = np.degrees(np.asarray(ala.cv_fn(ala.start))), np.degrees(
    np.asarray(ala.cv_fn(ala.target)))
ax.plot(*start_cv, "o", color="red")
ax.plot(*target_cv, "*", color="red", ms=12)
ax.set(xlabel="φ (°)", ylabel="ψ (°)", xlim=(-180, 180), ylim=(-180, 180),
       title="tps (orange) and steered-MD (gray) paths")
tr = ala_tps.trace
axes[1].plot(tr["loss"], lw=0.6, label="log-variance loss")
axes[1].set(yscale="log", xlabel="optimizer step", title="training (alanine dipeptide)")
ax2 = axes[1].twinx()
ax2.plot(tr["hit_rate"], color="C1", lw=0.8, label="hit rate of the batch")
ax2.set(ylabel="hit rate", ylim=(0, 1.05))
axes[1].legend(loc="upper left")
ax2.legend(loc="upper right")
fig.tight_layout()
fig.savefig(IMAGES / "transition_alanine.png", dpi=110)

# %% [markdown]
# One path as a sequence of 3-d snapshots (every 25 fs), heavy atoms larger.

# %%
mol = alanine.load()
path = np.asarray(tps_paths.positions[:, 0]).reshape(-1, mol.num_atoms, 3)
frames = path[::25]
heavy = np.isin(np.arange(mol.num_atoms), mol.heavy_indices)
colors = {"C": "dimgray", "N": "royalblue", "O": "crimson", "H": "lightgray"}
atom_colors = [colors.get(e, "green") for e in mol.elements]
fig = plt.figure(figsize=(5, 5))
ax = fig.add_subplot(projection="3d")


def draw(i):
    ax.cla()
    x = frames[i] - frames[i].mean(0)
    for a, b in mol.topology_bonds:
        ax.plot(*zip(x[a], x[b], strict=True), color="k", lw=1)
    ax.scatter(*x.T, c=atom_colors, s=np.where(heavy, 80, 25), depthshade=False)
    phi, psi = np.degrees(np.asarray(ala.cv_fn(jnp.asarray(frames[i].reshape(-1)))))
    ax.set(title=f"t = {25 * i} fs   φ = {phi:.0f}°, ψ = {psi:.0f}°",
           xlim=(-0.35, 0.35), ylim=(-0.35, 0.35), zlim=(-0.35, 0.35))
    ax.set_axis_off()


anim = FuncAnimation(fig, draw, frames=len(frames))
anim.save(IMAGES / "transition_alanine.gif", writer=PillowWriter(fps=8))
