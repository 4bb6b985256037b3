"""Exact EM in helmholtz against scikit-learn (Gaussian mixture) and hmmlearn (HMM).

Same data, same initialisation, float64 on both sides. For each problem: iterations and
seconds to the same stopping rule after compile, the final log-likelihood, the ratio of
seconds helmholtz / peer (goal ≤ 1 on the mixture at 10⁵ points × 10 dimensions × 8
components), and the seconds of helmholtz's first call (trace + compile) apart.

Stopping rule: scikit-learn and hmmlearn stop when the log-likelihood per point (sklearn)
or in total (hmmlearn) changes by less than their ``tol``; helmholtz's ``em`` stops on
|ΔF| ≤ tol · (1 + |F|), so it is given tol = peer_tol · (per-point scale) / (1 + |F|),
the same rule at the peer's final F. The iteration counts are printed to show they agree.

Run: ``python benchmarks/em.py`` (about 3 minutes on 2 cores); ``--points``, ``--dim``,
``--components`` change the mixture; ``--json FILE`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from _common import environment_lines, table  # noqa: E402

import helmholtz  # noqa: E402
from helmholtz.models import latent  # noqa: E402


def _em(model, data, model_kwargs, **options):
    t0 = time.perf_counter()
    r = helmholtz.infer(model, "em", model_args=(data,), model_kwargs=model_kwargs, **options)
    return r, time.perf_counter() - t0


def mixture(n, d, k, tol, seed=0):
    from sklearn.mixture import GaussianMixture

    x, _ = latent.simulate_gaussian_mixture(seed, n, d, k)
    x = np.asarray(x, np.float64)
    rng = np.random.default_rng(seed + 1)
    init = {"weights": np.full(k, 1.0 / k), "means": x[rng.choice(n, k, replace=False)],
            "scale_tril": np.broadcast_to(np.eye(d), (k, d, d)).copy()}
    sk = GaussianMixture(k, covariance_type="full", reg_covar=1e-6, tol=tol, max_iter=1000,
                         weights_init=init["weights"], means_init=init["means"],
                         precisions_init=init["scale_tril"].copy())
    t0 = time.perf_counter()
    sk.fit(x)
    t_sk = time.perf_counter() - t0
    ll_sk = sk.score(x) * n
    our_tol = tol * n / (1.0 + abs(ll_sk))
    opts = dict(init_params=init, tol=our_tol, max_iterations=1000,
                m_step_options={"reg_covar": 1e-6})
    kw = {"num_components": k}
    _, t_first = _em(latent.gaussian_mixture, x, kw, **opts)
    r, t_ours = _em(latent.gaussian_mixture, x, kw, **opts)
    return {"problem": f"GMM {n}×{d}, K={k}", "peer": "scikit-learn",
            "iters": r.config["iterations"], "peer_iters": int(sk.n_iter_),
            "seconds": t_ours, "peer_seconds": t_sk, "ratio": t_ours / t_sk,
            "first_call": t_first, "log_lik": -r.free_energy.value, "peer_log_lik": ll_sk,
            "status": str(r.status)}


def hmm(t_len, d, k, tol, seed=0):
    from hmmlearn.hmm import GaussianHMM

    y, _ = latent.simulate_gaussian_hmm(seed, t_len, k, d)
    y = np.asarray(y, np.float64)
    target = helmholtz.Target.from_model(latent.gaussian_hmm, y, num_states=k)
    init = {key: np.asarray(v, np.float64) for key, v in target.params.items()}
    peer = GaussianHMM(k, covariance_type="full", init_params="", params="stmc",
                       covars_prior=0.0, n_iter=1000, tol=tol)
    peer.startprob_, peer.transmat_, peer.means_ = (init["initial"], init["transition"],
                                                   init["means"])
    peer.covars_ = init["scale_tril"] @ np.swapaxes(init["scale_tril"], -1, -2)
    t0 = time.perf_counter()
    peer.fit(y)
    t_peer = time.perf_counter() - t0
    ll_peer = peer.score(y)
    opts = dict(init_params=init, tol=tol / (1.0 + abs(ll_peer)), max_iterations=1000)
    kw = {"num_states": k}
    _, t_first = _em(latent.gaussian_hmm, y, kw, **opts)
    r, t_ours = _em(latent.gaussian_hmm, y, kw, **opts)
    return {"problem": f"HMM T={t_len}, d={d}, K={k}", "peer": "hmmlearn",
            "iters": r.config["iterations"], "peer_iters": int(peer.monitor_.iter),
            "seconds": t_ours, "peer_seconds": t_peer, "ratio": t_ours / t_peer,
            "first_call": t_first, "log_lik": -r.free_energy.value, "peer_log_lik": ll_peer,
            "status": str(r.status)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--components", type=int, default=8)
    p.add_argument("--tol", type=float, default=1e-6, help="scikit-learn's tol (per point)")
    p.add_argument("--hmm-steps", type=int, default=10_000)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    for line in environment_lines():
        print(line)
    rows = [mixture(a.points, a.dim, a.components, a.tol),
            hmm(a.hmm_steps, 2, 4, a.tol * a.hmm_steps)]
    cols = ["problem", "peer", "iters", "peer_iters", "seconds", "peer_seconds", "ratio",
            "first_call", "log_lik", "peer_log_lik"]
    print(table(cols, [[r[c] for c in cols] for r in rows]))
    for r in rows:
        rel = abs(r["log_lik"] - r["peer_log_lik"]) / abs(r["peer_log_lik"])
        print(f"{r['problem']}: relative log-lik difference {rel:.2e}; status {r['status']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
