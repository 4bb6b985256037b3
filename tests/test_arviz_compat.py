"""helmholtz._arviz on arviz 0.23 (InferenceData) and arviz 1.x (xarray.DataTree), and
result files that open under both stacks.

``tests/data/result_arviz0.nc`` was written under Python 3.11 (jax 0.10, arviz 0.23) and
``tests/data/result_arviz1.nc`` under Python 3.12 (jax 0.12, arviz 1.x), both by
``python tests/test_arviz_compat.py tests/data`` from :func:`fixture_result`; every stack
must read both back exactly.
"""

import math
import sys
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

from helmholtz import _arviz
from helmholtz.result import FittedModule, FittedParams, FreeEnergy, Result, Status

DATA = Path(__file__).parent / "data"
MLP_KWARGS = {"in_size": 2, "out_size": 2, "width_size": 4, "depth": 1}


def fixture_mlp():
    """A small MLP whose weights come from numpy (the same under every jax version)."""
    mlp = eqx.nn.MLP(**MLP_KWARGS, key=jax.random.PRNGKey(0))
    rng = np.random.default_rng(5)
    params, static = eqx.partition(mlp, eqx.is_array)
    params = jax.tree.map(lambda a: jax.numpy.asarray(rng.normal(size=a.shape), a.dtype), params)
    return eqx.combine(params, static)


def fixture_result() -> Result:
    """The result stored in the cross-stack fixtures (deterministic, a few KB)."""
    rng = np.random.default_rng(7)
    return Result(
        engine="smc", model="fixture",
        samples={"mu": rng.normal(size=(2, 25)), "theta": rng.normal(size=(2, 25, 3))},
        free_energy=FreeEnergy(3.25, 0.125, "unbiased-Z estimate", "SMC",
                               warning="Kish ESS 9.5 < 30"),
        log_weights=rng.normal(size=(2, 25)),
        trace={"loss": rng.normal(size=12), "log_z_steps": rng.normal(size=(2, 5))},
        stats={"diverging": rng.random((2, 25)) < 0.1, "acceptance_rate": rng.random((2, 25))},
        log_likelihood={"y": rng.normal(size=(2, 25, 4))},
        observed_data={"y": np.array([0.5, -1.0, 2.0, 0.0])},
        compile_seconds=1.5, run_seconds=0.25, exact_log_z=-3.0,
        config={"num_particles": 25, "_num_grad_evals": 1000},
        estimates={"is": FreeEnergy(3.5, 0.25, "unbiased-Z estimate"),
                   "E": FreeEnergy(-0.5, 0.001, "lower bound", units="Hartree")},
        fitted=FittedModule(fixture_mlp(), "equinox.nn:MLP", MLP_KWARGS),
        status=Status("max_steps", "β reached 0.9 of 1"),
    )


def _assert_same(back: Result, r: Result):
    assert (back.engine, back.model, back.exact_log_z) == (r.engine, r.model, r.exact_log_z)
    assert back.free_energy == r.free_energy and back.estimates == r.estimates
    assert back.status == r.status and back.config == r.config
    assert (back.compile_seconds, back.run_seconds) == (r.compile_seconds, r.run_seconds)
    for name in ("samples", "trace", "stats", "log_likelihood", "observed_data"):
        a, b = getattr(back, name), getattr(r, name)
        assert list(a) == list(b), name
        for k in b:
            np.testing.assert_array_equal(a[k], b[k])
            assert a[k].dtype == np.asarray(b[k]).dtype, (name, k)
    np.testing.assert_array_equal(back.log_weights, r.log_weights)
    x = jax.numpy.array([0.25, -0.75])
    np.testing.assert_array_equal(back.fitted.module(x), r.fitted.module(x))


@pytest.mark.parametrize("stack", ["arviz0", "arviz1"])
def test_fixture_of_either_stack_loads(stack):
    """A file written under arviz 0.23 loads under 1.x, and the other way round."""
    path = DATA / f"result_{stack}.nc"
    back = Result.load(path)
    _assert_same(back, fixture_result())
    # and the installed arviz opens it as its own container
    data = _arviz.from_netcdf(path)
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data"):
        assert group in _arviz.group_names(data), group
    np.testing.assert_array_equal(_arviz.get_group(data, "posterior")["theta"],
                                  fixture_result().samples["theta"])


def test_round_trip_on_the_installed_stack(tmp_path):
    r = fixture_result()
    _assert_same(Result.load(r.save(tmp_path / "r.nc")), r)


def test_to_arviz_is_the_installed_container():
    data = fixture_result().to_arviz()
    if _arviz.ARVIZ_MAJOR >= 1:
        import xarray as xr

        assert isinstance(data, xr.DataTree)
    else:
        import arviz as az

        assert isinstance(data, az.InferenceData)
    assert set(_arviz.group_names(data)) == {"posterior", "sample_stats", "log_likelihood",
                                             "observed_data"}
    assert _arviz.get_dataset(data, "posterior").attrs["engine"] == "smc"
    stats = _arviz.get_group(data, "sample_stats")
    np.testing.assert_array_equal(stats["log_weight"], fixture_result().log_weights)
    assert _arviz.get_group(data, "no_such_group") == {}
    _arviz.add_group(data, "extra", _arviz.get_dataset(data, "observed_data"))
    np.testing.assert_array_equal(_arviz.get_group(data, "extra")["y"], [0.5, -1.0, 2.0, 0.0])


def _ar1(rng, rho, shape):
    x = np.empty(shape)
    x[..., 0] = rng.normal(size=shape[:-1])
    for t in range(1, shape[-1]):
        x[..., t] = rho * x[..., t - 1] + math.sqrt(1 - rho**2) * rng.normal(size=shape[:-1])
    return x


def test_ess_rhat_and_summary_numbers():
    rng = np.random.default_rng(0)
    rho = 0.8
    x = _ar1(rng, rho, (4, 2000))
    shifted = rng.normal(size=(4, 2000)) + np.array([[0.0], [0.0], [3.0], [3.0]])
    data = _arviz.from_dict({"posterior": {"x": x, "shifted": shifted}})
    ess = _arviz.ess(data)
    expected = x.size * (1 - rho) / (1 + rho)  # 889 for an AR(1) chain
    assert abs(float(ess["x"]) / expected - 1) < 0.2
    rhat = _arviz.rhat(data)
    assert abs(float(rhat["x"]) - 1) < 0.01 and float(rhat["shifted"]) > 1.5
    table = _arviz.summary(data, round_to="none")
    assert float(table.loc["x", "mean"]) == pytest.approx(x.mean(), abs=1e-12)
    assert float(table.loc["x", "sd"]) == pytest.approx(x.std(ddof=1), rel=1e-6)
    assert float(table.loc["x", "ess_bulk"]) == pytest.approx(float(ess["x"]), rel=1e-9)
    assert float(table.loc["shifted", "r_hat"]) > 1.5
    # Result.diagnostics goes the same way
    r = Result("t", "m", {"x": x}, FreeEnergy.none(""))
    assert r.diagnostics()["min_ess"] == pytest.approx(float(ess["x"]), rel=1e-9)


def test_loo_matches_importance_sampling():
    """With light-tailed weights PSIS-LOO equals plain importance-sampling LOO."""
    rng = np.random.default_rng(1)
    log_lik = -0.5 * (1.0 + 0.1 * rng.normal(size=(2, 1000, 5))) ** 2
    data = _arviz.from_dict({"posterior": {"m": rng.normal(size=(2, 1000))},
                             "log_likelihood": {"y": log_lik}})
    elpd, se = _arviz.elpd_loo(data)
    flat = log_lik.reshape(-1, 5)
    by_is = -np.log(np.mean(np.exp(-flat), axis=0))  # log of the harmonic mean, per point
    assert elpd == pytest.approx(by_is.sum(), rel=1e-3)
    assert 0 < se < 1


def test_plot_trace_draws_the_chains():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.random.default_rng(2).normal(size=(2, 50))
    out = _arviz.plot_trace(_arviz.from_dict({"posterior": {"x": x}}))
    if _arviz.ARVIZ_MAJOR >= 1:
        lines = list(out.viz["trace"]["x"].values)
    else:
        lines = out[0, 1].lines
    for chain in range(2):
        np.testing.assert_array_equal(lines[chain].get_ydata(), x[chain])
    plt.close("all")


def test_fitted_params_sample_is_theta_repeated():
    theta = {"w": np.array([[1.0, 2.0], [3.0, 4.0]]), "b": np.array(0.5)}
    draws = FittedParams(theta).sample(jax.random.PRNGKey(0), 3)
    np.testing.assert_array_equal(draws["w"], np.stack([theta["w"]] * 3))
    np.testing.assert_array_equal(draws["b"], [0.5, 0.5, 0.5])


if __name__ == "__main__":  # write this stack's fixture: python tests/test_arviz_compat.py DIR
    out = Path(sys.argv[1])
    name = f"result_arviz{min(_arviz.ARVIZ_MAJOR, 1)}.nc"
    print(fixture_result().save(out / name), out.joinpath(name).stat().st_size, "bytes")
