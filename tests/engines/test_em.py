"""EM (the ``em`` engine) against independent codes and closed forms: scikit-learn's
GaussianMixture and FactorAnalysis, hmmlearn's GaussianHMM, the PPCA maximum likelihood
of Tipping & Bishop (1999); F never increases; the work and heat of an iteration against
a direct computation from responsibilities."""

import re

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import helmholtz
from helmholtz.engines.em import MonteCarlo
from helmholtz.errors import ModelError, OptionError
from helmholtz.models import latent
from helmholtz.result import Result

pytestmark = pytest.mark.usefixtures("x64_module")  # sklearn and hmmlearn run in float64


@pytest.fixture(scope="module")
def mixture():
    x, _ = latent.simulate_gaussian_mixture(0, 300, 2, 3)
    x = np.asarray(x, np.float64)
    init = {"weights": np.full(3, 1 / 3), "means": x[[0, 100, 200]].copy(),
            "scale_tril": np.broadcast_to(np.eye(2), (3, 2, 2)).copy()}
    return x, init


def _em(model, data, **options):
    return helmholtz.infer(model, "em", model_args=(data,), **options)


def _assert_f_never_increases(result):
    f = result.trace["free_energy"]
    assert np.all(np.diff(f) <= 1e-10 * np.abs(f[1:])), np.max(np.diff(f))
    np.testing.assert_allclose(result.trace["work"] + result.trace["heat"],
                               result.trace["delta"], rtol=0, atol=1e-9 * abs(f[0]))


def test_exact_em_on_a_mixture_matches_scikit_learn(mixture):
    from sklearn.mixture import GaussianMixture

    x, init = mixture
    r = _em(latent.gaussian_mixture, x, init_params=init, tol=1e-12, max_iterations=300,
            m_step_options={"reg_covar": 1e-6})
    assert r.status.ok, r.status
    _assert_f_never_increases(r)
    assert np.all(r.trace["work"] <= 1e-9) and np.all(r.trace["heat"] <= 1e-9)
    sk = GaussianMixture(3, covariance_type="full", reg_covar=1e-6, tol=1e-12, max_iter=1000,
                         weights_init=init["weights"], means_init=init["means"],
                         precisions_init=np.broadcast_to(np.eye(2), (3, 2, 2)).copy()).fit(x)
    log_lik = sk.score(x) * len(x)
    assert abs(-r.free_energy.value - log_lik) <= 1e-6 * abs(log_lik), (r.free_energy, log_lik)
    np.testing.assert_allclose(r.fitted.params["weights"], sk.weights_, atol=1e-5)
    resp = r.stats["marginals.z"]  # (K, N) responsibilities
    np.testing.assert_allclose(resp.sum(0), 1.0, atol=1e-12)


def _gmm_terms(x, theta):
    w, mu, tril = theta["weights"], theta["means"], theta["scale_tril"]
    comp = np.stack([np.log(w[k]) + multivariate_normal(mu[k], tril[k] @ tril[k].T).logpdf(x)
                     for k in range(len(w))], 1)
    return comp, logsumexp(comp, 1)


def test_work_and_heat_of_one_iteration_match_a_direct_computation(mixture):
    """One EM iteration from θ₀: W = −Σ r₀ (log p(x, z | θ₁) − log p(x, z | θ₀)) with r₀
    the responsibilities at θ₀, H = −KL(r₀ ‖ r₁), ΔF = −(log p(x | θ₁) − log p(x | θ₀)),
    computed with scipy from the fitted θ₁ alone."""
    x, init = mixture
    r = _em(latent.gaussian_mixture, x, init_params=init, max_iterations=1)
    theta1 = {k: np.asarray(v, np.float64) for k, v in r.fitted.params.items()}
    comp0, ll0 = _gmm_terms(x, init)
    comp1, ll1 = _gmm_terms(x, theta1)
    r0 = np.exp(comp0 - ll0[:, None])
    r1 = np.exp(comp1 - ll1[:, None])
    work = -np.sum(r0 * (comp1 - comp0))
    heat = -np.sum(r0 * (np.log(r0) - np.log(r1)))
    delta = -(ll1.sum() - ll0.sum())
    np.testing.assert_allclose(r.trace["work"][0], work, rtol=1e-8)
    np.testing.assert_allclose(r.trace["heat"][0], heat, rtol=1e-6)
    np.testing.assert_allclose(r.trace["delta"][0], delta, rtol=1e-8)
    assert heat < 0 and work < 0


def test_exact_em_on_an_hmm_matches_hmmlearn():
    from hmmlearn.hmm import GaussianHMM

    y, _ = latent.simulate_gaussian_hmm(1, 80, 2, 2)
    y = np.asarray(y, np.float64)
    target = helmholtz.Target.from_model(latent.gaussian_hmm, y, num_states=2)
    init = {k: np.asarray(v, np.float64) for k, v in target.params.items()}
    r = helmholtz.infer(target, "em", tol=1e-12, max_iterations=300)
    assert r.status.ok, r.status
    _assert_f_never_increases(r)
    hmm = GaussianHMM(2, covariance_type="full", init_params="", params="stmc",
                      covars_prior=0.0, n_iter=1000, tol=1e-10, implementation="log")
    hmm.startprob_, hmm.transmat_, hmm.means_ = init["initial"], init["transition"], \
        init["means"]
    hmm.covars_ = init["scale_tril"] @ np.swapaxes(init["scale_tril"], -1, -2)
    hmm.fit(y)
    log_lik = hmm.score(y)
    assert abs(-r.free_energy.value - log_lik) <= 1e-6 * abs(log_lik), (r.free_energy, log_lik)


def test_ppca_reaches_the_closed_form_maximum_likelihood():
    x, _ = latent.simulate_ppca(0, 300, 5, 2, 0.1)
    x = np.asarray(x, np.float64)
    r = _em(latent.ppca, x, model_kwargs={"latent_dim": 2}, tol=1e-13, max_iterations=2000)
    _assert_f_never_increases(r)
    best = latent.ppca_max_log_likelihood(x, 2)
    assert abs(-r.free_energy.value - best) <= 1e-6 * abs(best), (r.free_energy, best)


def test_factor_analysis_matches_scikit_learn():
    from sklearn.decomposition import FactorAnalysis

    x, _ = latent.simulate_factor_analysis(0, 300, 5, 2)
    x = np.asarray(x, np.float64)
    r = _em(latent.factor_analysis, x, model_kwargs={"latent_dim": 2}, tol=1e-14,
            max_iterations=3000)
    _assert_f_never_increases(r)
    log_lik = FactorAnalysis(2, tol=1e-12, max_iter=10000).fit(x).score(x) * len(x)
    assert abs(-r.free_energy.value - log_lik) <= 1e-6 * abs(log_lik), (r.free_energy, log_lik)


def test_monte_carlo_em_agrees_with_exact_em(mixture):
    """Exact draws of the assignments (infer_discrete) and Adam steps on θ: the weights
    end within 0.01 of exact EM's (Monte Carlo noise of 16 draws × 300 points)."""
    x, init = mixture
    exact = _em(latent.gaussian_mixture, x, init_params=init, max_iterations=200, tol=1e-10)
    mc = _em(latent.gaussian_mixture, x, init_params=init, e_step=MonteCarlo(num_samples=16),
             learning_rate=0.05, m_steps=20, max_iterations=60)
    assert mc.status.ok, mc.status
    np.testing.assert_allclose(mc.fitted.params["weights"], exact.fitted.params["weights"],
                               atol=0.01)
    assert np.all(np.abs(mc.trace["work"][-3:]) < 0.1)  # the last M-steps barely move θ


def test_bad_models_and_collapsing_components_are_named(mixture):
    x, init = mixture
    # an isolated point claimed by a narrow component: its covariance collapses to zero
    xo = np.concatenate([x, [[40.0, 40.0]]])
    bad = dict(init, means=np.concatenate([init["means"][:2], [[40.0, 40.0]]]),
               scale_tril=np.stack([np.eye(2), np.eye(2), 0.01 * np.eye(2)]))
    r = _em(latent.gaussian_mixture, xo, init_params=bad, max_iterations=20)
    assert r.status.code == "nan" and "scale_tril" in r.status.message, r.status
    assert re.search(r"at iteration 1\b", r.status.message), r.status
    assert all(np.all(np.isfinite(v)) for v in r.fitted.params.values())

    def no_params(x):
        import numpyro
        import numpyro.distributions as dist

        mu = numpyro.sample("mu", dist.Normal(0, 1))
        numpyro.sample("x", dist.Normal(mu, 1), obs=x)

    with pytest.raises(ModelError, match="no numpyro.param sites"):
        _em(no_params, x[:, 0])
    with pytest.raises(OptionError, match=r"\['weights'\] lie outside"):
        _em(latent.gaussian_mixture, x, init_params=dict(init, weights=np.array([2.0, 0, 0])))
    with pytest.raises(ModelError, match="fitted by the em engine"):
        helmholtz.infer(latent.gaussian_mixture, "nuts", model_args=(x,))


def test_em_conforms_progress_bar_checkpoint_resume_and_save_load(mixture, tmp_path, capsys,
                                                                    interrupted):
    """What every engine does (tests/engines/test_conformance.py), on the mixture: a
    progress bar, a run killed part-way resumed from its checkpoint to the uninterrupted
    run's θ and F trace, the same θ for the same seed, a Result that saves and loads."""
    x, init = mixture
    options = dict(init_params=init, max_iterations=40, tol=0.0)
    full = _em(latent.gaussian_mixture, x, progress_bar=True, **options)
    assert capsys.readouterr().err
    ckpt = tmp_path / "em.ckpt"
    interrupted(3, lambda: _em(latent.gaussian_mixture, x, checkpoint=str(ckpt), **options))
    assert ckpt.exists()
    resumed = _em(latent.gaussian_mixture, x, checkpoint=str(ckpt), **options)
    assert not ckpt.exists()
    np.testing.assert_array_equal(resumed.trace["free_energy"], full.trace["free_energy"])
    for k, v in full.fitted.params.items():
        np.testing.assert_array_equal(resumed.fitted.params[k], v)
    loaded = Result.load(full.save(tmp_path / "em.nc"))
    assert loaded.engine == "em" and loaded.free_energy.value == full.free_energy.value
    np.testing.assert_array_equal(loaded.fitted.params["means"], full.fitted.params["means"])
    np.testing.assert_array_equal(loaded.stats["marginals.z"], full.stats["marginals.z"])


def test_variational_em_bounds_the_likelihood_from_above_on_ppca():
    """A mean-field Gaussian E-step on PPCA with one latent dimension (where mean field is
    exact): F = −ELBO on fresh draws stays above −log p(x | θ_ML) and within 10 % of it,
    and σ² lands within 10 % of its maximum-likelihood value."""
    from helmholtz.engines.em import Variational

    x, _ = latent.simulate_ppca(0, 200, 4, 1, 0.1)
    x = np.asarray(x, np.float64)
    best = latent.ppca_max_log_likelihood(x, 1)
    # Tipping & Bishop: σ²_ML is the mean of the discarded eigenvalues of the covariance
    sigma2_ml = np.mean(np.linalg.eigvalsh(np.cov(x.T, bias=True))[:-1])
    r = _em(latent.ppca, x, model_kwargs={"latent_dim": 1}, e_step=Variational(),
            learning_rate=0.02, m_steps=10, max_iterations=200)
    assert r.free_energy.kind == "lower bound" and r.status.ok, r.status
    assert -best <= r.free_energy.value <= -best + 0.1 * abs(best), (r.free_energy, best)
    np.testing.assert_allclose(r.fitted.params["noise_variance"], sigma2_ml, rtol=0.1)
