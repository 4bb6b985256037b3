# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Classical density functional theory: an exact functional, a learned one, and DDFT
#
# A fluid in an external potential V(x) at chemical potential μ has a grand potential
#
#     βΩ[ρ] = ∫ρ(ln ρ − 1) + βF_exc[ρ] + ∫ρ(βV − βμ),
#
# a free energy of the density ρ, minimised by the equilibrium profile. Its stationary
# point is the Euler–Lagrange fixed point ρ = exp(βμ − βV + c1[ρ]), c1 = −δβF_exc/δρ.
# In helmholtz terms F_exc is the unknown part of a free energy, the grand-canonical
# fluid is a Boltzmann target sampled by Monte Carlo, the Picard iteration is a
# Fisher–Rao step of Ω, and dynamical DFT is its Wasserstein gradient flow.
#
# Planar hard rods are the test bed: Percus' functional is exact for them, so every
# learned or approximate answer has an exact one beside it. We
#
# 1. check Percus DFT against the exact wall profile and compare Picard with Anderson;
# 2. simulate the fluid by grand-canonical Monte Carlo (GCMC), with its bulk g(r) and,
#    by Ornstein–Zernike, c(r);
# 3. learn F_exc from the simulations three ways — one-body (c1) matching, pair-
#    correlation matching (Dijkman et al., PRL 134, 056103, 2025), both — and predict
#    profiles in potentials none of them saw;
# 4. relax a profile by DDFT, closed (Wasserstein) and open (Wasserstein–Fisher–Rao).
#
# Run as a script (`python tutorials/08_classical_dft.py`, about five minutes on two
# CPU cores; the simulations are cached in `~/.cache/helmholtz/cdft`) or open it as a
# notebook with jupytext. Figures go to `tutorials/images/`.

# %%
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter

from helmholtz.flows import WFR, FisherRao
from helmholtz.models.cdft import Anderson, Percus, Picard, data, flat, random_potential, solve
from helmholtz.models.cdft.ddft import ddft
from helmholtz.models.cdft.gcmc import Fluid, gcmc, hard_rod_c, hard_rod_g
from helmholtz.models.cdft.learn import TrainingData, train_functional
from helmholtz.models.cdft.potentials import Grid

IMAGES = Path(__file__).resolve().parent / "images"
IMAGES.mkdir(exist_ok=True)
jax.config.update("jax_enable_x64", True)   # the solvers go to 1e-10

# %% [markdown]
# ## Percus' functional at a hard wall, and two solvers
#
# βF_exc = ∫ −n0 ln(1 − n1) with n0 = [ρ(x − σ/2) + ρ(x + σ/2)]/2 and n1 = ∫ρ over a rod
# length. At a hard wall the exact profile is ρ_b g(x + σ): the wall acts as a rod fixed
# one length behind it. The contact value is the pressure, ρ(0⁺) = βp (Tonks).

# %%
beta_mu = np.log(0.5 / 0.5) + 1.0        # Tonks: βμ for ρ_b = 0.5 (η = 0.5)
f_fine = Percus(0.001)
wall = solve(f_fine, flat(16.0, walls=(1.0, 15.0)), beta_mu)
x = np.asarray(wall.x) - 1.0
near = (x > 0) & (x < 5)
exact = 0.5 * hard_rod_g(x[near] + 1.0, 0.5)
print(f"Percus vs exact: max |Δρ| = {np.abs(np.asarray(wall.rho)[near] - exact).max():.2e}; "
      f"contact density {wall.contact_density()[0]:.6f} (βp = 1)")

f = Percus(0.01)
pot = random_potential(jax.random.key(3), 40.96, walls=(1.0, 39.96), num_modes=6,
                       amplitude=1.5)
runs = {"Picard (α = 0.05)": solve(f, pot, 2.0, solver=Picard(0.05)),
        "Anderson (m = 6)": solve(f, pot, 2.0, solver=Anderson())}
fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
ax[0].plot(x[near], exact, "k", lw=3, alpha=0.3, label="exact: ρ_b g(x + σ)")
ax[0].plot(x[near], np.asarray(wall.rho)[near], "C3--", label="Percus DFT")
ax[0].set(xlabel="distance from the wall x/σ", ylabel="ρσ", title="hard rods at a hard wall")
ax[0].legend()
for name, r in runs.items():
    ax[1].semilogy(r.residuals, label=f"{name}: {r.iterations} iterations")
ax[1].axhline(1e-10, color="k", lw=0.8)
ax[1].set(xlabel="iteration", ylabel="max |ρ_EL − ρ|", title="4096 nodes, random potential")
ax[1].legend()
fig.tight_layout()
fig.savefig(IMAGES / "cdft_percus.png", dpi=110)

# %% [markdown]
# ## Grand-canonical Monte Carlo: profiles, g(r) and c(r)
#
# The simulations run many independent systems at once (vmapped in JAX), each in its own
# random potential at its own βμ. Bulk runs give g(r); the Ornstein–Zernike relation
# ĉ = ĥ/(1 + ρĥ) turns it into the direct correlation c(r), which is −δ²βF_exc/δρδρ' of
# the uniform fluid — what pair-correlation matching trains on.

# %%
DX = 0.05
prof = data.profiles(0, 64, num_sweeps=4000)
bulk = data.bulk_pairs(0, np.linspace(-2.0, 3.5, 12), num_sweeps=4000, num_replicas=4)
i = int(np.argmin(np.abs(bulk["rho"] - 0.5)))
r, rho_b = bulk["r"], bulk["rho"][i]
fig, ax = plt.subplots(1, 3, figsize=(14, 3.6))
for s in (1, 2):
    ax[0].errorbar(prof["x"], prof["rho"][s], prof["rho_se"][s], lw=0.8, label=f"system {s}")
ax[0].set(xlabel="x/σ", ylabel="ρσ", title="GCMC profiles in random potentials")
ax[1].errorbar(r, bulk["g"][i], bulk["g_se"][i], fmt=".", ms=2, label="GCMC")
ax[1].plot(r[r != 1.0], hard_rod_g(r[r != 1.0], rho_b), "k", lw=0.8, label="exact")
ax[1].set(xlabel="r/σ", ylabel="g(r)", title=f"bulk, ρσ = {rho_b:.3f}")
ax[2].plot(r, bulk["c"][i], ".", ms=3, label="GCMC + Ornstein–Zernike")
ax[2].plot(r[r != 1.0], hard_rod_c(r[r != 1.0], rho_b), "k", lw=0.8, label="exact (Percus)")
ax[2].set(xlabel="r/σ", ylabel="c(r)")
for a in ax[1:]:
    a.legend()
fig.tight_layout()
fig.savefig(IMAGES / "cdft_simulations.png", dpi=110)

# %% [markdown]
# ## Three ways to learn F_exc
#
# The network is a learned weighted-density functional: a few convolution kernels of
# range σ/2 and an MLP of the weighted densities, so it is local and works in a box of
# any length. It is trained by the core's trained-engine machinery (scanned steps, the
# loss on the progress bar, checkpoints); the trained functional is `result.fitted`.

# %%
j = int(round(1.5 / DX))
training = TrainingData.make(DX, rho=prof["rho"], beta_v=prof["beta_v"],
                             weight=prof["weight"], beta_mu=prof["beta_mu"],
                             bulk_rho=bulk["rho"], bulk_c2=bulk["c"][:, :j], bulk_r=bulk["r"][:j])
learned = {obj: train_functional(training, jax.random.key(1), objective=obj, num_steps=3000,
                                 progress_bar=True).fitted.module
           for obj in ("c1", "pair", "both")}

# %% [markdown]
# Predictions in potentials none of them saw, against Percus and against fresh GCMC:

# %%
keys = jax.random.split(jax.random.key(2024), 4)
tests = [(random_potential(k, 10.0, walls=(1.0, 9.0) if n % 2 else None, num_modes=4,
                           amplitude=2.0, num_knots=4, knot_amplitude=2.0), mu)
         for n, (k, mu) in enumerate(zip(keys, (0.0, 1.0, 2.0, 2.5), strict=True))]
errors = {name: [] for name in learned}
fig, axes = plt.subplots(1, len(tests), figsize=(16, 3.6))
for ax, (p, mu) in zip(axes, tests, strict=True):
    ex = solve(Percus(DX), p, mu)
    mc = gcmc(jax.random.key(99), Fluid.hard_rods(), p, mu, Grid(10.0, DX), num_sweeps=4000)
    ax.errorbar(ex.x, mc.density, mc.density_se, color="0.6", lw=0.8, label="fresh GCMC")
    ax.plot(ex.x, ex.rho, "k", lw=1.2, label="Percus (exact)")
    for n, (name, fn) in enumerate(learned.items()):
        s = solve(fn, p, mu, tol=1e-8)
        errors[name].append(float(np.abs(np.asarray(s.rho) - np.asarray(ex.rho)).max())
                            if s.status.ok else np.nan)
        ax.plot(s.x, s.rho, f"C{n}--", lw=1, label=f"learned: {name}")
    ax.set(xlabel="x/σ", title=f"βμ = {mu}")
axes[0].set_ylabel("ρσ")
axes[0].legend(fontsize=7)
fig.tight_layout()
fig.savefig(IMAGES / "cdft_learned.png", dpi=110)
for name, e in errors.items():
    print(f"{name:>5}: max |ρ − ρ_Percus| per potential {np.round(e, 4)}, mean "
          f"{np.nanmean(e):.4f}")

# %% [markdown]
# ## DDFT: the Wasserstein flow of Ω, and an open system
#
# ∂ρ/∂t = ∂ₓ(ρ ∂ₓ δβΩ/δρ) conserves the number of rods and relaxes to the equilibrium of
# the closed system; adding a Fisher–Rao reaction term −ρ δβΩ/δρ (the WFR flow) lets rods
# enter from a reservoir at βμ, and the profile relaxes to the grand-canonical one.

# %%
fp = Percus(0.05)
pot = random_potential(jax.random.key(1), 6.0, num_modes=3, amplitude=1.5)
eq = solve(fp, pot, 0.5, tol=1e-12)
closed = ddft(fp, pot, jnp.full(eq.grid.n, eq.num_particles / 6.0), t1=30.0, num_saves=60)
opened = ddft(fp, pot, jnp.full(eq.grid.n, 0.2), t1=30.0, num_saves=60, beta_mu=0.5,
              metric=WFR(fisher_rao=FisherRao(conserve_mass=False)))
print(f"closed: mass drift {np.ptp(closed.mass):.1e}, |ρ(t1) − ρ_eq| = "
      f"{np.abs(closed.rho[-1] - np.asarray(eq.rho)).max():.1e}; open: N from "
      f"{opened.mass[0]:.2f} to {opened.mass[-1]:.4f} (equilibrium {eq.num_particles:.4f})")

fig, ax = plt.subplots(figsize=(6.5, 3.6))
line_c, = ax.plot([], [], "C0", label="closed (Wasserstein)")
line_o, = ax.plot([], [], "C1", label="open (WFR)")
ax.plot(eq.x, eq.rho, "k:", lw=1, label="equilibrium (Anderson)")
ax.set(xlim=(0, 6), ylim=(0, 1.1 * float(np.max(closed.rho))), xlabel="x/σ", ylabel="ρσ")
ax.legend(loc="upper right", fontsize=8)
title = ax.set_title("")


def frame(k):
    line_c.set_data(closed.x, closed.rho[k])
    line_o.set_data(opened.x, opened.rho[k])
    title.set_text(f"t = {closed.ts[k]:.3g}")
    return line_c, line_o, title


FuncAnimation(fig, frame, frames=len(closed.ts), blit=False).save(
    IMAGES / "cdft_ddft.gif", writer=PillowWriter(fps=8), dpi=80)
fig2, ax2 = plt.subplots(1, 2, figsize=(11, 3.4))
for k in (0, 15, 25, 35, 45, len(closed.ts) - 1):
    ax2[0].plot(closed.x, closed.rho[k], lw=1, label=f"t = {closed.ts[k]:.2g}")
ax2[0].set(xlabel="x/σ", ylabel="ρσ", title="closed: relaxation")
ax2[0].legend(fontsize=7)
ax2[1].semilogx(closed.ts[1:], closed.omega[1:] - closed.omega[-1] + 1e-16, label="closed")
ax2[1].semilogx(opened.ts[1:], opened.omega[1:] - opened.omega[-1] + 1e-16, label="open")
ax2[1].set(yscale="log", xlabel="t", ylabel="βΩ(t) − βΩ(∞)", title="Ω falls along both flows")
ax2[1].legend()
fig2.tight_layout()
fig2.savefig(IMAGES / "cdft_ddft.png", dpi=110)
