"""Stepping-stone / thermodynamic integration (``ti``): log Z against exact values, with
standard errors that are honest over many seeds."""

import numpy as np
import pytest
from scipy.special import logsumexp

import helmholtz
from helmholtz.driver import TRACE_COUNT
from helmholtz.engines.ti import TI, power_ladder, stepping_stone, thermodynamic_integral
from helmholtz.errors import OptionError
from helmholtz.models import get

# small and fast: one compile, then ~0.05 s a seed on linear_gaussian
TI_SMALL = dict(num_rungs=8, num_warmup=100, num_samples=200, num_chains=2)
NUM_SEEDS = 20


@pytest.fixture(scope="module")
def linear_gaussian():
    return get("linear_gaussian").target(seed=0)


@pytest.fixture(scope="module")
def seeded_runs(linear_gaussian):
    """TI on linear_gaussian for seeds 0 … 19 (compiled once)."""
    return [helmholtz.infer(linear_gaussian, "ti", seed=s, **TI_SMALL) for s in range(NUM_SEEDS)]


def _z(result, target):
    fe = result.free_energy
    assert fe.kind == "unbiased-Z estimate"
    assert np.isfinite(fe.se) and fe.se > 0
    return (result.log_z - target.log_z) / fe.se


def test_ti_log_z_on_linear_gaussian(seeded_runs, linear_gaussian):
    result = seeded_runs[0]
    assert abs(_z(result, linear_gaussian)) < 3, (result.log_z, linear_gaussian.log_z)
    assert result.free_energy.se < 0.3


def test_ti_standard_errors_are_honest(seeded_runs, linear_gaussian):
    z = np.array([_z(r, linear_gaussian) for r in seeded_runs])
    assert 0.5 < np.std(z, ddof=1) < 2.0, z
    assert abs(np.mean(z)) < 3 * 2.0 / np.sqrt(NUM_SEEDS), z  # no bias beyond its noise


def test_ti_compiles_once_across_seeds(seeded_runs, linear_gaussian):
    assert all(r.compile_seconds == 0.0 for r in seeded_runs[1:])
    before = TRACE_COUNT["n"]
    again = helmholtz.infer(linear_gaussian, "ti", seed=0, **TI_SMALL)
    assert TRACE_COUNT["n"] == before
    assert again.log_z == seeded_runs[0].log_z


def test_ti_from_init_values_reuses_the_compiled_ladder(seeded_runs, linear_gaussian):
    """Every rung's chains start at w = (3, 3, 3) (prior sd 1), jittered; the log Z is
    still right and only the initialisation is compiled anew."""
    before = TRACE_COUNT["n"]
    r = helmholtz.infer(linear_gaussian, "ti", seed=100, init_values={"w": [3.0, 3.0, 3.0]},
                        init_jitter=0.5, **TI_SMALL)
    assert TRACE_COUNT["n"] - before <= 1
    assert abs(_z(r, linear_gaussian)) < 4, (r.log_z, linear_gaussian.log_z)


def test_ti_result_layout(seeded_runs):
    result = seeded_runs[0]
    r, c, s = TI_SMALL["num_rungs"], TI_SMALL["num_chains"], TI_SMALL["num_samples"]
    assert result.samples["w"].shape == (c, s, 3)  # the β = 1 rung's chains
    assert result.stats["diverging"].shape == (c, s)
    assert result.log_weights is None
    betas = np.asarray(result.config["betas"])
    np.testing.assert_allclose(betas, (np.arange(r) / (r - 1)) ** 5)
    for name in ("beta", "mean_log_likelihood", "log_ratio", "log_z", "ess",
                 "acceptance_rate", "step_size", "divergences"):
        assert result.trace[name].shape == (r,), name
    assert result.trace["log_z"][-1] == pytest.approx(result.log_z, abs=1e-9)
    assert result.config["stepping_stone_log_z"] == pytest.approx(result.log_z)
    # E_β[log L] increases with β (d/dβ E_β[log L] = var_β(log L) ≥ 0)
    mean_ll = result.trace["mean_log_likelihood"]
    assert mean_ll[-1] > mean_ll[r // 2] > mean_ll[0]
    assert np.isfinite(result.config["ti_log_z"]) and result.config["ti_se"] > 0
    assert 0.6 < np.mean(result.trace["acceptance_rate"]) < 0.99
    # the posterior draws agree with the exact posterior mean
    args, kwargs = get("linear_gaussian").args(seed=0)
    mean, cov = get("linear_gaussian").exact_posterior(*args, **kwargs)["w"]
    est = result.samples["w"].reshape(-1, 3).mean(0)
    assert np.all(np.abs(est - mean) < 5 * np.sqrt(np.diag(cov) / 100)), (est, mean)


def test_ti_log_z_on_correlated_gaussian_20d():
    target = get("gaussian_20d").target(seed=0)
    result = helmholtz.infer(target, "ti", seed=0, num_warmup=200, num_samples=300,
                             num_chains=2)
    assert abs(_z(result, target)) < 3, (result.log_z, target.log_z, result.free_energy.se)
    # the corrected trapezoid agrees too (its discretisation error is small at 16 rungs)
    ti, ti_se = result.config["ti_log_z"], result.config["ti_se"]
    assert abs(ti - target.log_z) < 3 * ti_se + 0.1, (ti, ti_se, target.log_z)
    assert result.free_energy.se < 0.3
    assert result.samples["x"].shape == (2, 300, 20)


def test_stepping_stone_matches_the_direct_formula():
    rng = np.random.default_rng(0)
    betas = power_ladder(5, 3.0)
    ll = rng.normal(-10.0, 2.0, size=(5, 3, 200))
    log_z, se, log_ratio, ess = stepping_stone(betas, ll)
    direct = sum(logsumexp((betas[k] - betas[k - 1]) * ll[k - 1]) - np.log(600)
                 for k in range(1, 5))
    assert log_z == pytest.approx(direct)
    assert log_ratio[0] == 0.0 and np.sum(log_ratio) == pytest.approx(log_z)
    # independent draws: arviz's ESS is about N, so se is the i.i.d. delta method
    assert np.all((ess[1:] > 400) & (ess[1:] < 900))
    weights = [np.exp((betas[k] - betas[k - 1]) * ll[k - 1]) for k in range(1, 5)]
    iid = sum(np.var(w) / (w.size * np.mean(w) ** 2) for w in weights)
    assert se == pytest.approx(np.sqrt(iid), rel=0.3)


def test_corrected_trapezoid_is_exact_for_a_quadratic_integrand():
    # E_β[log L] = 1 + 2β + 3β², whose derivative var_β(log L) = 2 + 6β: ∫_0^1 = 3, which
    # the plain trapezoid rule misses by Σ Δβ³/2 and the corrected rule hits exactly
    betas = power_ladder(6)
    mean, var = 1 + 2 * betas + 3 * betas**2, 2 + 6 * betas
    signs = np.array([1.0, -1.0]).reshape(1, 2, 1)  # two chains: mean ± sd exactly
    ll = mean[:, None, None] + np.sqrt(var)[:, None, None] * signs
    log_z, _, est_mean, _ = thermodynamic_integral(betas, np.repeat(ll, 5, axis=2))
    np.testing.assert_allclose(est_mean, mean)
    assert log_z == pytest.approx(3.0, abs=1e-10)
    plain = np.sum(np.diff(betas) * (mean[1:] + mean[:-1]) / 2)
    assert abs(plain - 3.0) > 0.05


def test_thermodynamic_integral_is_exact_for_a_linear_integrand():
    # E_β[log L] = a + b β is integrated exactly by the trapezoid rule: log Z = a + b/2
    betas = power_ladder(6)
    ll = (2.0 + 3.0 * betas)[:, None, None] + np.zeros((6, 2, 10))
    log_z, se, mean, _ = thermodynamic_integral(betas, ll)
    assert log_z == pytest.approx(3.5)
    assert se == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(mean, 2.0 + 3.0 * betas)


@pytest.mark.parametrize("options, message", [
    ({"num_rungs": 1}, "num_rungs"),
    ({"ladder_power": 0.0}, "ladder_power"),
    ({"num_chains": 0}, "num_chains"),
    ({"target_acceptance_rate": 1.5}, "target_acceptance_rate"),
    ({"init_strategy": "middle"}, "init_strategy"),
    ({"init_jitter": -1.0}, "init_jitter"),
    ({"num_temperatures": 8}, "valid options"),
])
def test_bad_options_raise_option_error(options, message):
    with pytest.raises(OptionError, match=message):
        helmholtz.get_engine("ti", **options)


def test_ti_is_registered():
    assert isinstance(helmholtz.get_engine("ti"), TI)
    assert helmholtz.get_engine("ti").num_rungs == 16
