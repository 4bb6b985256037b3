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
    from helmholtz import _arviz

    nuts, _ = eight_schools
    data = nuts.to_arviz()  # InferenceData on arviz 0.23, xarray.DataTree on 1.x
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data"):
        assert group in _arviz.group_names(data), group
    assert _arviz.get_group(data, "posterior")["theta"].shape == (4, 1000, 8)
    assert _arviz.get_group(data, "log_likelihood")["y"].shape == (4, 1000, 8)
    stats = _arviz.get_group(data, "sample_stats")
    for stat in ("diverging", "lp", "acceptance_rate", "step_size"):
        assert stat in stats
    np.testing.assert_array_equal(_arviz.get_group(data, "observed_data")["y"],
                                  [28, 8, -3, 7, -1, 1, 18, 12])
    # arviz's loo runs on it: eight schools' elpd_loo is about −30.7 (loo of Stan's fit)
    elpd, se = _arviz.elpd_loo(data)
    assert -32.5 < elpd < -29 and 0 < se < 3
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


# ---------------------------------------------------------------------------- Result v2
import json  # noqa: E402

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import xarray as xr  # noqa: E402

from helmholtz import _arviz  # noqa: E402
from helmholtz.errors import HelmholtzError  # noqa: E402
from helmholtz.result import (  # noqa: E402
    FittedModule,
    FittedParams,
    ResultFileError,
    RunError,
    Status,
    register_fitted,
)


def test_free_energy_says_which_quantity_a_bound_is_on():
    assert str(FreeEnergy(39.1234, 0.02, "lower bound")) == (
        "F = 39.123 ± 0.020 nats (upper bound on F; −F = −39.123 is a lower bound on log Z)")
    assert str(FreeEnergy(-2.5, 0.1, "upper bound")) == (
        "F = −2.50 ± 0.10 nats (lower bound on F; −F = 2.50 is an upper bound on log Z)")
    assert str(FreeEnergy(1.25, 0.003, "unbiased-Z estimate")) == (
        "F = 1.2500 ± 0.0030 nats (e^−F is an unbiased estimate of Z; F is biased high)")
    assert str(FreeEnergy(0.0, 0.0, "exact")) == "F = 0.0000 ± 0.0000 nats (exact)"
    assert str(FreeEnergy(-1.1, 0.01, "lower bound", units="Hartree")) == (
        "F = −1.100 ± 0.010 Hartree (upper bound on F)")
    assert str(FreeEnergy(12.0, 0.5, "estimate", units="kJ/mol",
                          warning="Kish ESS 3.2 < 30")) == (
        "F = 12.00 ± 0.50 kJ/mol (estimate) [UNRELIABLE: Kish ESS 3.2 < 30]")
    assert str(FreeEnergy.none("MCMC")) == "F: not estimated (MCMC)"
    # positional order value, se, kind, note is kept; new fields default
    fe = FreeEnergy(3.0, 0.2, "lower bound", "elbo")
    assert (fe.note, fe.units, fe.warning, fe.reliable) == ("elbo", "nats", "", True)
    assert fe.log_z == -3.0
    with pytest.raises(ValueError, match="log_z is defined for a free energy in nats; "
                                         "this one is in Hartree"):
        _ = FreeEnergy(-1.1, 0.01, "lower bound", units="Hartree").log_z
    with pytest.raises(ValueError, match="units must be a non-empty string"):
        FreeEnergy(1.0, 0.1, "estimate", units="")


def test_status_and_raise_for_status():
    assert Status() == Status.ok_() == Status("ok", "")
    assert Status().ok and not Status("max_steps", "hit 100 steps").ok
    assert Status().raise_for_status() == Status()
    with pytest.raises(RunError, match=r"run ended with status nan: loss is NaN at step 7") as e:
        Status("nan", "loss is NaN at step 7").raise_for_status()
    assert isinstance(e.value, HelmholtzError) and isinstance(e.value, RuntimeError)
    assert e.value.status.code == "nan"
    with pytest.raises(ValueError, match="Status code must be one of"):
        Status("exploded")


def _toy(**kwargs):
    rng = np.random.default_rng(1)
    fields = dict(engine="toy", model="m", samples={"x": rng.normal(size=(2, 30)),
                                                    "v": rng.normal(size=(2, 30, 3))},
                  free_energy=FreeEnergy(4.0, 0.5, "unbiased-Z estimate"))
    fields.update(kwargs)
    return Result(**fields)


def test_warnings_show_next_to_the_numbers(capsys):
    r = _toy(free_energy=FreeEnergy(4.0, 0.5, "unbiased-Z estimate", warning="Kish ESS 3.2 < 30"),
             estimates={"elbo": FreeEnergy(4.5, 0.01, "lower bound"),
                        "eubo": FreeEnergy(3.0, 0.9, "upper bound", warning="2 particles")})
    assert r.status.ok and r.effective_status == Status("unreliable", "F: Kish ESS 3.2 < 30")
    assert r.warnings == ("F: Kish ESS 3.2 < 30", "eubo: 2 particles")
    assert "[UNRELIABLE: Kish ESS 3.2 < 30]" in repr(r)
    text = str(r).splitlines()
    assert text[1] == ("  free energy: F = 4.00 ± 0.50 nats (e^−F is an unbiased estimate of Z; "
                       "F is biased high) [UNRELIABLE: Kish ESS 3.2 < 30]")
    assert text[2].startswith("  elbo: F = 4.500 ± 0.010 nats (upper bound on F")
    assert text[3].endswith("[UNRELIABLE: 2 particles]") and text[-1] == "  status: ok"
    assert r.raise_for_status() is r
    with pytest.raises(RunError, match="unreliable: F: Kish ESS 3.2 < 30"):
        r.raise_for_status(require_reliable=True)
    stopped = _toy(status=Status("max_steps", "β reached 0.4 of 1"))
    assert "status='max_steps: β reached 0.4 of 1'" in repr(stopped)
    with pytest.raises(RunError, match="max_steps: β reached 0.4 of 1"):
        stopped.raise_for_status()

    df = helmholtz.compare([r, stopped, _toy(engine="plain")])
    out = capsys.readouterr().out
    assert "unreliable" in out and "max_steps" in out
    assert list(df["status"]) == ["unreliable", "max_steps", "ok"]
    assert df.loc["toy", "warnings"].iloc[0] == "F: Kish ESS 3.2 < 30; eubo: 2 particles"
    assert df.loc["plain", "warnings"] == ""
    assert df["elbo"].iloc[0] == 4.5 and df["eubo_se"].iloc[0] == 0.9
    assert math.isnan(df.loc["plain", "elbo"])
    assert list(df["F"]) == [4.0, 4.0, 4.0] and "kind" in df and "min_ess" in df


def test_result_without_samples_round_trips(tmp_path):
    theta = {"mu": np.array([0.5, -1.0]), "log_sigma": np.array(0.25)}
    r = Result("em", "mixture", {}, FreeEnergy(7.5, 0.0, "lower bound"),
               trace={"log_lik": np.linspace(-10, -7.5, 12)}, fitted=FittedParams(theta),
               estimates={"elbo": FreeEnergy(7.5, 0.0, "lower bound", "final E-step")})
    assert (r.num_chains, r.num_draws) == (0, 0)
    diag = r.diagnostics()
    assert math.isnan(diag["min_ess"]) and math.isnan(diag["max_rhat"])
    assert "posterior" not in _arviz.group_names(r.to_arviz())
    back = Result.load(r.save(tmp_path / "em.nc"))
    assert back.samples == {} and back.num_draws == 0
    assert back.free_energy == r.free_energy and back.estimates == r.estimates
    np.testing.assert_array_equal(back.trace["log_lik"], r.trace["log_lik"])
    assert isinstance(back.fitted, FittedParams)
    for k, v in theta.items():
        np.testing.assert_array_equal(back.fitted.params[k], v)
    key = jax.random.PRNGKey(3)
    draws, again = r.fitted.sample(key, 4), back.fitted.sample(key, 4)
    np.testing.assert_array_equal(draws["mu"], np.tile(theta["mu"], (4, 1)))
    for k in theta:
        np.testing.assert_array_equal(again[k], draws[k])


def test_trace_of_any_shape_estimates_and_status_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    trace = {"loss": rng.normal(size=250), "log_z_per_temperature": rng.normal(size=17),
             "replicate_step": rng.normal(size=(3, 40)), "beta": np.float64(0.75),
             "accepted": rng.random((5, 2, 4)) < 0.5, "n": np.arange(9, dtype=np.int32)}
    estimates = {"elbo": FreeEnergy(2.0, 0.1, "lower bound", "ELBO, 1000 draws"),
                 "is": FreeEnergy(1.9, 0.05, "unbiased-Z estimate", warning="ESS 12 < 30"),
                 "E": FreeEnergy(-0.4997, 0.0012, "lower bound", units="Hartree")}
    r = _toy(trace=trace, estimates=estimates, log_weights=rng.normal(size=(2, 30)),
             status=Status("low_ess", "Kish ESS 12 of 60"), config={"num_steps": 250})
    back = Result.load(r.save(tmp_path / "r.nc"))
    assert set(back.trace) == set(trace)
    for k, v in trace.items():
        np.testing.assert_array_equal(back.trace[k], v)
        assert back.trace[k].dtype == np.asarray(v).dtype, k
    assert back.estimates == estimates and list(back.estimates) == list(estimates)
    assert back.estimates["E"].units == "Hartree" and back.estimates["is"].warning == "ESS 12 < 30"
    assert back.status == Status("low_ess", "Kish ESS 12 of 60")
    np.testing.assert_array_equal(back.log_weights, r.log_weights)
    for k in r.samples:
        np.testing.assert_array_equal(back.samples[k], r.samples[k])
    assert back.config == {"num_steps": 250}


class _Sampler(eqx.Module):
    """A trained sampler stand-in: a diagonal Gaussian."""

    loc: jax.Array
    log_scale: jax.Array

    def sample(self, rng_key, num):
        eps = jax.random.normal(rng_key, (num, *self.loc.shape))
        return {"x": self.loc + jax.numpy.exp(self.log_scale) * eps}


def make_sampler(dim):
    return _Sampler(jax.numpy.zeros(dim), jax.numpy.zeros(dim))


def test_fitted_module_round_trip(tmp_path):
    trained = _Sampler(jax.numpy.array([1.0, -2.0, 0.5]), jax.numpy.array([0.1, -0.3, 0.0]))
    fitted = FittedModule(trained, f"{__name__}:make_sampler", {"dim": 3})
    target = object()
    r = Result("flow", "m", {}, FreeEnergy(1.0, 0.1, "lower bound"), fitted=fitted)
    back = Result.load(r.save(tmp_path / "flow.nc"), target=target)
    assert back.fitted.target is target and back.fitted.factory == fitted.factory
    key = jax.random.PRNGKey(11)
    np.testing.assert_array_equal(back.fitted.sample(key, 5)["x"], fitted.sample(key, 5)["x"])
    np.testing.assert_array_equal(back.fitted.module.loc, trained.loc)

    mlp = eqx.nn.MLP(2, 3, 8, 2, key=jax.random.PRNGKey(5))
    kwargs = {"in_size": 2, "out_size": 3, "width_size": 8, "depth": 2}
    r = Result("net", "m", {}, FreeEnergy.none("a network"),
               fitted=FittedModule(mlp, "equinox.nn:MLP", kwargs))
    back = Result.load(r.save(tmp_path / "mlp.nc"))
    x = jax.numpy.array([0.3, -1.2])
    np.testing.assert_array_equal(back.fitted.module(x), mlp(x))
    for a, b in zip(jax.tree.leaves(eqx.filter(back.fitted.module, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(mlp, eqx.is_array)), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="MLP has no sample method"):
        back.fitted.sample(key, 2)


def test_fitted_registry(tmp_path, monkeypatch):
    from helmholtz import result as result_module

    @register_fitted
    class Toy(FittedParams):
        kind = "toy-kind"

    r = Result("t", "m", {}, FreeEnergy.none(""), fitted=Toy({"a": np.ones(2)}))
    path = r.save(tmp_path / "toy.nc")
    assert type(Result.load(path).fitted) is Toy
    monkeypatch.delitem(result_module._FITTED, "toy-kind")
    with pytest.raises(ResultFileError, match="unknown fitted kind 'toy-kind'"):
        Result.load(path)
    with pytest.raises(ValueError, match="fitted kind 'params' is already registered"):
        register_fitted(type("Other", (FittedParams,), {"kind": "params"}))
    with pytest.raises(ValueError, match="needs a class attribute kind"):
        register_fitted(type("NoKind", (), {}))
    # an object that is not a registered Fitted is left out of the file, with a warning
    with pytest.warns(UserWarning, match="the fitted dict is not a registered"):
        path = _toy(fitted={"theta": 1.0}).save(tmp_path / "raw.nc")
    assert Result.load(path).fitted is None


def test_load_rejects_foreign_and_corrupt_files(tmp_path):
    missing = tmp_path / "nope.nc"
    with pytest.raises(FileNotFoundError, match="nope.nc"):
        Result.load(missing)
    text = tmp_path / "notes.nc"
    text.write_text("hello")
    with pytest.raises(ResultFileError, match=f"^not a helmholtz result file: {text}$"):
        Result.load(text)
    foreign = tmp_path / "foreign.nc"
    _arviz.to_netcdf(_arviz.from_dict({"posterior": {"x": np.zeros((1, 5))}}), foreign)
    with pytest.raises(ResultFileError, match=f"^not a helmholtz result file: {foreign}$"):
        Result.load(foreign)
    plain = tmp_path / "plain.nc"
    xr.Dataset({"a": ("i", np.arange(3))}).to_netcdf(plain)
    with pytest.raises(ResultFileError, match="not a helmholtz result file"):
        Result.load(plain)

    good = _toy().save(tmp_path / "good.nc")
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ResultFileError,
                       match=f"^corrupt helmholtz result file: {truncated} \\(cannot be read"):
        Result.load(truncated)
    bad_json = tmp_path / "bad_json.nc"
    xr.Dataset(attrs={"helmholtz": "{not json"}).to_netcdf(bad_json)
    with pytest.raises(ResultFileError, match="corrupt .* \\(unreadable metadata"):
        Result.load(bad_json)
    no_engine = tmp_path / "no_engine.nc"
    xr.Dataset(attrs={"helmholtz": json.dumps({"format": 2})}).to_netcdf(no_engine)
    with pytest.raises(ResultFileError, match="corrupt .*no_engine.nc \\(KeyError: 'has_log"):
        Result.load(no_engine)


def test_loads_files_of_format_1(tmp_path):
    """Files written before Result v2: metadata on the posterior, trace dim 'iteration'."""
    meta = {"engine": "svi", "model": "m", "free_energy": {"value": 3.0, "se": 0.1,
            "kind": "lower bound", "note": ""}, "compile_seconds": 1.5, "run_seconds": 0.5,
            "exact_log_z": None, "config": {"_num_grad_evals": 40}, "has_log_weights": False}
    x = np.arange(6.0).reshape(1, 6)
    tree = xr.DataTree.from_dict({
        "posterior": xr.Dataset({"x": (("chain", "draw"), x)},
                                attrs={"helmholtz": json.dumps(meta)}),
        "objective": xr.Dataset({"loss": (("iteration",), np.arange(4.0))})})
    tree.to_netcdf(tmp_path / "old.nc")
    back = Result.load(tmp_path / "old.nc")
    np.testing.assert_array_equal(back.samples["x"], x)
    np.testing.assert_array_equal(back.trace["loss"], np.arange(4.0))
    assert back.free_energy == FreeEnergy(3.0, 0.1, "lower bound")
    assert back.status.ok and back.estimates == {} and back.num_grad_evals == 40


def test_an_estimate_that_crosses_another_engines_bound_is_named():
    """ELBO (lower bound on log Z, F_b = 10.0 ± 0.01) against an SMC-like estimate: F =
    10.5 ± 0.05 is 9.8 se above the bound on F, a contradiction; 10.1 ± 0.05 is 2 se, not
    one. A reverse-AIS upper bound on log Z (F_b = 9.0) is crossed by F = 8.0 ± 0.1."""
    from types import SimpleNamespace

    from helmholtz.result import bound_conflicts

    def run(engine, value, se, kind):
        return SimpleNamespace(engine=engine, free_energy=FreeEnergy(value, se, kind))

    elbo = run("svi", 10.0, 0.01, "lower bound")
    results = [elbo, run("smc", 10.5, 0.05, "unbiased-Z estimate"),
               run("ais", 10.1, 0.05, "unbiased-Z estimate")]
    conflicts = bound_conflicts(results)
    assert set(conflicts) == {1}
    assert "above the upper bound on F from svi" in conflicts[1]
    upper = run("reverse-ais", 9.0, 0.05, "upper bound")
    assert set(bound_conflicts([upper, run("bar", 8.0, 0.1, "estimate")])) == {1}
    assert bound_conflicts([upper, elbo]) == {}  # bounds are not checked against bounds
