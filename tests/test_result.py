"""Result: arviz conversion, netCDF round trip, compare, and NUTS vs SVI on eight schools."""

import math

import numpy as np
import pytest

import helmholtz
from helmholtz import FreeEnergy, Result


@pytest.fixture(scope="module")
def eight_schools():
    target = helmholtz.models.get("eight_schools_noncentered").target(seed=0)
    nuts = helmholtz.infer(target, "nuts", seed=0, num_warmup=500, num_samples=1000,
                           num_chains=4, target_acceptance_rate=0.9)
    svi = helmholtz.infer(target, "svi", seed=0, guide="mvn", num_steps=4000,
                          learning_rate=0.01, num_samples=4000)
    return nuts, svi


def test_arviz_groups_and_shapes(eight_schools):
    nuts, _ = eight_schools
    idata = nuts.to_arviz()
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data"):
        assert group in idata.groups(), group
    assert idata.posterior["theta"].shape == (4, 1000, 8)
    assert idata.log_likelihood["y"].shape == (4, 1000, 8)
    for stat in ("diverging", "lp", "acceptance_rate", "step_size"):
        assert stat in idata.sample_stats
    np.testing.assert_array_equal(idata.observed_data["y"].values,
                                  [28, 8, -3, 7, -1, 1, 18, 12])
    # the pointwise log likelihood is what it says: Normal(theta, sigma) at y
    from scipy import stats
    sigma = np.array([15, 10, 16, 11, 9, 11, 10, 18.0])
    theta = nuts.samples["theta"][0, 0]
    np.testing.assert_allclose(nuts.log_likelihood["y"][0, 0],
                               stats.norm.logpdf([28, 8, -3, 7, -1, 1, 18, 12], theta, sigma),
                               rtol=1e-4)


def test_save_load_round_trip(eight_schools, tmp_path):
    for r in eight_schools:
        path = r.save(tmp_path / f"{r.engine}.nc")
        back = Result.load(path)
        assert back.engine == r.engine and back.model == r.model
        for k in r.samples:
            np.testing.assert_array_equal(back.samples[k], r.samples[k])
        for k in r.stats:
            np.testing.assert_array_equal(back.stats[k], r.stats[k])
        np.testing.assert_array_equal(back.log_likelihood["y"], r.log_likelihood["y"])
        assert back.free_energy.kind == r.free_energy.kind
        if not math.isnan(r.free_energy.value):
            assert back.free_energy == r.free_energy
        for k in r.trace:
            np.testing.assert_array_equal(back.trace[k], r.trace[k])
        assert back.num_grad_evals == r.num_grad_evals > 0
        assert back.run_seconds == r.run_seconds


def test_nuts_and_svi_agree_on_eight_schools(eight_schools):
    nuts, svi = eight_schools
    assert nuts.num_divergent < 10
    mu_n, mu_s = nuts.samples["mu"].ravel(), svi.samples["mu"].ravel()
    # the posterior of mu is close to Gaussian: a full-rank guide matches its mean and sd
    diag = nuts.diagnostics()
    assert diag["max_rhat"] < 1.02
    se = mu_n.std() / math.sqrt(diag["min_ess"])
    assert abs(mu_n.mean() - mu_s.mean()) < 4 * se + 0.1 * mu_n.std()
    assert abs(mu_n.std() - mu_s.std()) < 0.15 * mu_n.std()
    # theta means agree school by school within a tenth of a posterior sd
    th_n = nuts.samples["theta"].reshape(-1, 8)
    th_s = svi.samples["theta"].reshape(-1, 8)
    assert np.all(np.abs(th_n.mean(0) - th_s.mean(0)) < 0.15 * th_n.std(0) + 4 * se)


def test_compare_table(eight_schools, capsys):
    df = helmholtz.compare(list(eight_schools))
    out = capsys.readouterr().out
    assert "nuts" in out and "svi" in out
    assert df.loc["nuts", "kind"] == "none" and df.loc["svi", "kind"] == "lower bound"
    assert df.loc["svi", "F"] == pytest.approx(eight_schools[1].free_energy.value)
    assert df.loc["nuts", "divergences"] == eight_schools[0].num_divergent
    assert df.loc["nuts", "max_rhat"] < 1.02
    assert df.loc["nuts", "grad_evals"] == eight_schools[0].num_grad_evals


def test_free_energy_kinds_are_checked():
    with pytest.raises(ValueError, match="kind must be one of"):
        FreeEnergy(1.0, 0.1, "approximately")
    fe = FreeEnergy(-3.0, 0.1, "lower bound")
    assert fe.log_z == 3.0


def test_weighted_results_report_kish_ess():
    log_w = np.log(np.array([[1.0, 1.0, 2.0, 4.0]]))
    r = Result(engine="toy", model="toy", samples={"x": np.zeros((1, 4))},
               free_energy=FreeEnergy(0.0, 0.1, "unbiased-Z estimate"), log_weights=log_w)
    assert r.diagnostics()["min_ess"] == pytest.approx(8.0**2 / 22.0)
