# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # EM as stochastic thermodynamics
#
# A latent-variable model p(x, z | θ) has a free energy for every pair of a distribution
# Q over the latents and a parameter θ:
#
#     F(Q, θ) = E_Q[−log p(x, z | θ)] − S(Q)  ≥  −log p(x | θ),
#
# with equality when Q is the posterior p(z | x, θ). Expectation–maximisation lowers F in
# turns. The **M-step** moves θ with Q held: an external agent changes the energy
# landscape, and the change of F is *work* W. The **E-step** lets Q relax to the posterior
# of the new θ with θ held: the system equilibrates, and the change of F is *heat*
# H = −KL(Q_old ‖ p(z | x, θ_new)) ≤ 0. Per iteration ΔF = W + H — the first law, in the
# reading of the Helmholtz machine (Dayan, Hinton, Neal & Zemel 1995).
#
# We fit a three-component Gaussian mixture with full covariances by exact EM (the
# assignments summed by enumeration, the M-step in closed form), then fit the same model
# by gradient ascent on the marginal likelihood (a variational E-step with nothing left to
# vary: SVI with the discrete sites enumerated) and by Monte Carlo EM (exact draws of the
# assignments, Adam steps on θ).
#
# Run as a script (`python tutorials/06_em_thermodynamics.py`, about a minute on two CPU
# cores) or open it as a notebook with jupytext. Figures go to `tutorials/images/`.

# %%
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # EM's F changes by 1e-10 near convergence

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import helmholtz  # noqa: E402
from helmholtz.engines.em import MonteCarlo, Variational  # noqa: E402
from helmholtz.models import latent  # noqa: E402

IMAGES = Path(__file__).resolve().parent / "images"
IMAGES.mkdir(exist_ok=True)

x, truth = latent.simulate_gaussian_mixture(seed=3, num_points=600, dim=2, num_components=3,
                                           separation=2.0)
x = np.asarray(x)
init = {"weights": np.full(3, 1 / 3), "means": x[[0, 1, 2]].copy(),
        "scale_tril": np.broadcast_to(np.eye(2), (3, 2, 2)).copy()}

# %%
exact = helmholtz.infer(latent.gaussian_mixture, "em", model_args=(x,), init_params=init,
                        max_iterations=300, tol=1e-10)
tr = exact.trace
print(exact.free_energy, "|", exact.status, "| iterations:", exact.config["iterations"])
print("largest increase of F:", np.max(np.diff(tr["free_energy"])))
print("largest |W + H − ΔF|:", np.max(np.abs(tr["work"] + tr["heat"] - tr["delta"])))

# %% [markdown]
# F never rises, and the work and heat of every iteration add up to its change. Early
# on both are large: the M-step pulls the components onto the data (work), and the
# responsibilities then swing after them (heat). Near convergence each step does a little
# of both, in a fixed ratio, as EM's linear convergence predicts.

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
it = np.arange(1, len(tr["free_energy"]) + 1)
f_all = np.r_[tr["free_energy"][0] - tr["delta"][0], tr["free_energy"]]
axes[0].semilogy(np.r_[0, it][:-1], (f_all - f_all[-1])[:-1], "o-", ms=3)
axes[0].set(xlabel="iteration", ylabel="F − F(θ̂) (nats)",
            title=f"free energy, exact EM (F(θ̂) = {f_all[-1]:.2f})")
axes[1].semilogy(it, -tr["work"], "o-", ms=3, label="−W (M-step: θ moves)")
axes[1].semilogy(it, -tr["heat"], "s-", ms=3, label="−H (E-step: Q relaxes)")
axes[1].set(xlabel="iteration", ylabel="nats", title="work and heat per iteration")
axes[1].legend()
resp = exact.stats["marginals.z"].T  # (N, K) responsibilities
axes[2].scatter(x[:, 0], x[:, 1], c=resp, s=8)
theta = exact.fitted.params
t = np.linspace(0, 2 * np.pi, 100)
for k in range(3):
    ell = theta["means"][k][:, None] + 2 * theta["scale_tril"][k] @ np.stack([np.cos(t),
                                                                             np.sin(t)])
    axes[2].plot(*ell, "k", lw=1)
axes[2].set(title="responsibilities and 2σ ellipses", aspect="equal")
fig.tight_layout()
fig.savefig(IMAGES / "em_work_heat.png", dpi=110)

# %% [markdown]
# ## The same model by gradient ascent (SVI) and by Monte Carlo EM
#
# With the assignments enumerated there is nothing left for a variational Q to describe,
# so the variational E-step does no heat: every iteration is pure work, Adam steps on θ
# up the marginal likelihood. Monte Carlo EM draws 32 assignments per point from
# p(z | x, θ) (numpyro's `infer_discrete`) and takes Adam steps on their average
# log-likelihood; its Q is a sample, whose entropy — and so F — it does not know.

# %%
svi = helmholtz.infer(latent.gaussian_mixture, "em", model_args=(x,), init_params=init,
                      e_step=Variational(), learning_rate=0.02, m_steps=10,
                      max_iterations=300)
mc = helmholtz.infer(latent.gaussian_mixture, "em", model_args=(x,), init_params=init,
                     e_step=MonteCarlo(num_samples=32), learning_rate=0.02, m_steps=10,
                     max_iterations=300)
target = helmholtz.Target.from_model(latent.gaussian_mixture, x)
for name, r in [("exact EM", exact), ("gradient (SVI)", svi), ("Monte Carlo EM", mc)]:
    theta = {k: np.asarray(v) for k, v in r.fitted.params.items()}
    from helmholtz.engines.em import enumerated_marginals

    u = target.unconstrain_params(theta)
    log_lik = float(enumerated_marginals(target, u)[0])
    print(f"{name:16s} log p(x | θ̂) = {log_lik:10.4f}   weights {np.round(theta['weights'], 3)}"
          f"   M-steps (θ updates): {r.config['iterations'] * (1 if r is exact else 10)}")

# %%
fig, ax = plt.subplots(figsize=(6, 4))
best = tr["free_energy"][-1]
for name, r in [("exact EM", exact), ("gradient ascent (variational E-step)", svi)]:
    f = r.trace["free_energy"]
    ax.loglog(np.arange(1, len(f) + 1), np.maximum(f - best, 1e-9), label=name)
ax.set(xlabel="iteration", ylabel="F − F(θ̂_EM) (nats)", title="F per iteration")
ax.legend()
fig.tight_layout()
fig.savefig(IMAGES / "em_compare.png", dpi=110)
plt.close("all")
print("figures written to", IMAGES)
