"""Tests for the classic Bayesian models and the zoo registry."""

import dataclasses

import jax
import numpy as np
import numpyro.handlers as handlers
import pytest
from numpyro.infer.util import log_density
from scipy import integrate, stats

from helmholtz import models

classic = models.classic


# ---------------------------------------------------------------------------------------
# linear-Gaussian closed forms
# ---------------------------------------------------------------------------------------


def test_linear_gaussian_log_z_matches_quadrature_in_one_dimension():
    rng = np.random.default_rng(3)
    alpha, sigma = 1.3, 0.7
    X = rng.standard_normal((15, 1))
    y = X[:, 0] * 0.8 + sigma * rng.standard_normal(15)

    def log_joint(w):
        return stats.norm.logpdf(w, 0.0, alpha) + stats.norm.logpdf(y, X[:, 0] * w, sigma).sum()

    post = classic.linear_gaussian_posterior(X, y, prior_scale=alpha, noise_scale=sigma)
    m, s = post["w"][0][0], np.sqrt(post["w"][1][0, 0])
    peak = log_joint(m)
    value, _ = integrate.quad(
        lambda w: np.exp(log_joint(w) - peak), m - 15 * s, m + 15 * s, epsabs=0, epsrel=1e-13
    )
    reference = peak + np.log(value)

    log_z = classic.linear_gaussian_log_z(X, y, prior_scale=alpha, noise_scale=sigma)
    assert log_z == pytest.approx(reference, abs=1e-9)


def test_linear_gaussian_posterior_matches_joint_gaussian_conditional():
    (X,), kwargs = models.get("linear_gaussian").args(seed=4)
    y = kwargs["y"]
    alpha, sigma = 0.8, 0.3
    # (w, y) is jointly Gaussian; condition on y with the covariance (not precision) form.
    cov_wy = alpha**2 * X.T
    cov_yy = sigma**2 * np.eye(len(y)) + alpha**2 * X @ X.T
    mean_ref = cov_wy @ np.linalg.solve(cov_yy, y)
    cov_ref = alpha**2 * np.eye(X.shape[1]) - cov_wy @ np.linalg.solve(cov_yy, cov_wy.T)

    mean, cov = classic.linear_gaussian_posterior(X, y, prior_scale=alpha, noise_scale=sigma)["w"]
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-9, atol=1e-12)


def test_linear_gaussian_model_density_satisfies_bayes_identity(x64):
    # log p(w, y) − log p(w | y) = log Z at every w: ties the numpyro model to both closed forms.
    entry = models.get("linear_gaussian")
    (X,), kwargs = entry.args(seed=0)
    mean, cov = entry.exact_posterior(X, **kwargs)["w"]
    log_z = entry.exact_log_z(X, **kwargs)
    rng = np.random.default_rng(0)
    for w in rng.standard_normal((4, X.shape[1])):
        log_joint = float(log_density(classic.linear_gaussian, (X,), kwargs, {"w": w})[0])
        log_post = stats.multivariate_normal.logpdf(w, mean, cov)
        assert log_joint - log_post == pytest.approx(log_z, abs=1e-9)


def test_linear_gaussian_closed_forms_need_y():
    X = np.ones((4, 2))
    with pytest.raises(ValueError, match="observed y"):
        classic.linear_gaussian_log_z(X)
    with pytest.raises(ValueError, match="observed y"):
        classic.linear_gaussian_posterior(X, None)


def test_linear_gaussian_exact_log_z_attribute_on_model():
    (X,), kwargs = models.get("linear_gaussian").args(seed=1)
    assert classic.linear_gaussian.exact_log_z(X, **kwargs) == pytest.approx(
        models.get("linear_gaussian").log_z(seed=1)
    )


# ---------------------------------------------------------------------------------------
# eight schools and logistic regression
# ---------------------------------------------------------------------------------------


def test_eight_schools_parameterisations_are_the_same_joint(x64):
    (J, sigma), kwargs = classic.eight_schools_data()
    assert J == 8 and kwargs["y"].tolist() == [28, 8, -3, 7, -1, 1, 18, 12]
    rng = np.random.default_rng(1)
    for _ in range(3):
        mu, tau = rng.normal(0, 3), rng.uniform(0.5, 8)
        theta = rng.normal(mu, tau, size=J)
        centred = {"mu": mu, "tau": tau, "theta": theta}
        lp_c = log_density(classic.eight_schools_centered, (J, sigma), kwargs, centred)[0]
        lp_nc = log_density(
            classic.eight_schools_noncentered,
            (J, sigma),
            kwargs,
            {"mu": mu, "tau": tau, "theta_tilde": (theta - mu) / tau},
        )[0]
        # θ = μ + τ θ̃ has Jacobian τ^J.
        assert float(lp_nc) == pytest.approx(float(lp_c) + J * np.log(tau), abs=1e-9)


def test_eight_schools_noncentered_records_theta():
    args, kwargs = classic.eight_schools_data()
    tr = handlers.trace(handlers.seed(classic.eight_schools_noncentered, 0)).get_trace(
        *args, **kwargs
    )
    assert tr["theta"]["type"] == "deterministic"
    np.testing.assert_allclose(
        tr["theta"]["value"],
        tr["mu"]["value"] + tr["tau"]["value"] * tr["theta_tilde"]["value"],
        rtol=1e-6,
    )


def test_logistic_data_is_seeded_and_informative():
    X, y, params = classic.logistic_data(7, n=1000, d=20, return_params=True)
    X2, y2 = classic.logistic_data(7, n=1000, d=20)
    assert X.shape == (1000, 20) and y.shape == (1000,)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert set(np.unique(y)) <= {0, 1}
    assert not np.array_equal(classic.logistic_data(8, n=1000, d=20)[1], y)
    p = 1.0 / (1.0 + np.exp(-(X @ params["w"] + params["b"])))
    # The labels follow the true probabilities: mean within 4 standard errors.
    assert abs(y.mean() - p.mean()) < 4 * np.sqrt(np.sum(p * (1 - p))) / len(y)


def test_logistic_regression_log_density_matches_formula(x64):
    X, y = classic.logistic_data(0, n=30, d=3)
    w, b = np.array([0.3, -1.0, 0.5]), 0.2
    logits = X @ w + b
    expected = (
        np.sum(y * logits - np.logaddexp(0.0, logits))
        + stats.norm.logpdf(w).sum()
        + stats.norm.logpdf(b)
    )
    lp = log_density(classic.logistic_regression, (X,), {"y": y}, {"w": w, "b": b})[0]
    assert float(lp) == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------

EXPECTED = {
    "eight_schools_centered",
    "eight_schools_noncentered",
    "logistic_regression",
    "linear_gaussian",
    "heavy_tailed_mixture",
    "banana",
    "unequal_mixture",
    "double_well",
    "muller_brown",
    "gaussian_2d",
    "gaussian_20d",
    "funnel",
    "funnel_boltzmann",
    "gmm40",
    "student_t_mixture",
    "many_well",
    "dw4",
    "lj13",
}


def test_registry_names_and_unknown_name_error():
    assert set(models.names()) == EXPECTED
    assert models.names() == sorted(models.names())
    assert [e.name for e in models.entries()] == models.names()
    with pytest.raises(KeyError) as info:
        models.get("nope")
    message = str(info.value)
    assert "unknown model 'nope'" in message
    assert "valid models: " + ", ".join(sorted(EXPECTED)) in message


def test_register_rejects_duplicates_and_bad_family():
    entry = models.get("funnel")
    models.register(entry)  # the same entry again is harmless
    with pytest.raises(ValueError, match="already registered"):
        models.register(dataclasses.replace(entry, description="other"))
    with pytest.raises(ValueError, match="family"):
        models.register(dataclasses.replace(entry, name="x_bad", family="other"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.name = "renamed"


def _assert_same(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for u, v in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_entry_is_deterministic_and_traces(name):
    entry = models.get(name)
    assert entry.family in ("bayesian", "boltzmann")
    assert entry.description and "\n" not in entry.description
    args, kwargs = entry.args(0)
    _assert_same((args, kwargs), entry.make_data(0))

    tr = handlers.trace(handlers.seed(entry.model, 0)).get_trace(*args, **kwargs)
    params = {
        k: s["value"] for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]
    }
    assert params
    lp = float(log_density(entry.model, args, kwargs, params)[0])
    assert np.isfinite(lp)

    # The attribute the Target reads agrees with the entry.
    attr = getattr(entry.model, "exact_log_z", "missing")
    assert attr != "missing"
    if entry.exact_log_z is None:
        assert attr is None
    else:
        value = attr(*args, **kwargs) if callable(attr) else attr
        assert np.isfinite(entry.log_z(0))
        assert float(value) == pytest.approx(entry.log_z(0), abs=1e-12)


def test_seed_changes_synthetic_data():
    (X0,), kw0 = models.get("linear_gaussian").args(0)
    (X1,), kw1 = models.get("linear_gaussian").args(1)
    assert not np.allclose(X0, X1)
    assert models.get("linear_gaussian").log_z(0) != models.get("linear_gaussian").log_z(1)


def test_entry_target_builds():
    pytest.importorskip("helmholtz.target")
    entry = models.get("linear_gaussian")
    target = entry.target(seed=0)
    assert target.dim == 3
    assert target.log_z == pytest.approx(entry.log_z(0), rel=1e-12)


def _mixture_log_joint(y, m1, m2):
    """log prior + log likelihood of the heavy-tailed mixture, written out by hand
    (normal and Cauchy densities in closed form; scipy.stats is too slow per call for
    dblquad's thousands of evaluations)."""
    half_log_2pi = 0.5 * np.log(2 * np.pi)
    lik = np.logaddexp(np.log(0.6) - 0.5 * (y - m1) ** 2 - half_log_2pi,
                       np.log(0.4) - 0.5 * (y - m2) ** 2 - half_log_2pi).sum()
    log_cauchy = lambda m: np.log(5.0 / np.pi) - np.log(25.0 + m * m)
    return lik + log_cauchy(m1) + log_cauchy(m2)


def test_heavy_tailed_mixture_log_z_matches_scipy_quadrature(x64):
    """The model's density is the scipy formula, and the registered grid quadrature
    agrees with scipy's adaptive one on the posterior's two windows (the main mode and
    the label-swapped one), which hold all but e^−100 of Z."""
    y = models.classic.heavy_tailed_mixture_data(0)
    for m1, m2 in [(-2.0, 3.0), (3.0, -2.0), (40.0, -7.0)]:
        lp = log_density(models.classic.heavy_tailed_mixture, (y,), {},
                         {"mu": np.array([m1, m2])})[0]
        assert float(lp) == pytest.approx(_mixture_log_joint(y, m1, m2), abs=1e-9)
    shift = _mixture_log_joint(y, -2.0, 3.0)
    total = sum(integrate.dblquad(lambda m2, m1: np.exp(_mixture_log_joint(y, m1, m2) - shift),
                                  lo1, hi1, lo2, hi2, epsabs=0, epsrel=1e-8)[0]
                for lo1, hi1, lo2, hi2 in [(-5.0, 1.0, 0.0, 6.0), (0.0, 6.0, -5.0, 1.0)])
    assert np.log(total) + shift == pytest.approx(models.get("heavy_tailed_mixture").log_z(),
                                                  abs=1e-6)
