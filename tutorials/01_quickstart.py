# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Quickstart: one model, four engines, one free energy
#
# A numpyro model is written once. `helmholtz.infer` runs any engine on it by name and
# returns the same `Result`: constrained draws with `(chain, draw)` axes, per-draw
# statistics, an arviz `InferenceData`, and the engine's estimate of the free energy
# F = −log Z with its standard error and kind.
#
# Run as a script (`python tutorials/01_quickstart.py`) or open it as a notebook with
# jupytext.

# %%
import numpy as np
import numpyro
import numpyro.distributions as dist

import helmholtz
from helmholtz.models import classic

# %% [markdown]
# ## A model whose answer we know
#
# Bayesian linear regression with known noise: the posterior N(m, S) and the evidence
# log Z = log N(y; 0, σ²I + α²XXᵀ) are in closed form, so every engine can be checked.

# %%
X, y = classic.linear_gaussian_data(seed=0)
target = helmholtz.Target.from_model(classic.linear_gaussian, X, y=y)
print(target)
exact_mean, exact_cov = classic.linear_gaussian_posterior(X, y=y)["w"]

# %% [markdown]
# ## Four engines by name

# %%
results = [
    helmholtz.infer(target, "nuts", seed=0, num_warmup=500, num_samples=1000),
    helmholtz.infer(target, "hmc", seed=0, num_warmup=500, num_samples=1000),
    helmholtz.infer(target, "mala", seed=0, num_warmup=500, num_samples=1000),
    helmholtz.infer(target, "svi", seed=0, guide="mvn", num_optimizer_steps=4000, learning_rate=0.02),
]
for r in results:
    w = r.samples["w"].reshape(-1, 3)
    print(f"{r.engine:5s} mean error / posterior sd:",
          np.round((w.mean(0) - exact_mean) / np.sqrt(np.diag(exact_cov)), 3))

# %% [markdown]
# MCMC engines give draws but no evidence; SVI's −ELBO is an upper bound on F = −log Z,
# which here is tight because the full-rank family contains the exact posterior.

# %%
helmholtz.compare(results)
print("exact F = -log Z =", -target.log_z)

# %% [markdown]
# ## Diagnostics through arviz, saving and loading

# %%
idata = results[0].to_arviz()
print(helmholtz.Result.load(results[0].save("out/quickstart_nuts.nc")))
print(results[0].summary())

# %% [markdown]
# ## Your own model
#
# Anything numpyro can trace works: constrained sites, plates, deterministic sites.
# New data of the same shapes reuse every compiled function (`Target.with_data`).


# %%
def my_model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0, 10))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5))
    with numpyro.plate("obs", 50):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


data = np.random.default_rng(1).normal(3.0, 2.0, size=50)
r = helmholtz.infer(my_model, "nuts", seed=1, model_kwargs={"y": data})
print(r.summary())
r2 = helmholtz.infer(my_model, "nuts", seed=1, model_kwargs={"y": data + 1.0})
print(f"second run compiled for {r2.compile_seconds:.1f} s (cache hit), ran {r2.run_seconds:.2f} s")
