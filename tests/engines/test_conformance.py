"""The engine conformance suite: every registered engine, the day it is registered.

Each engine runs on a small model with a known posterior and log Z (Bayesian linear
regression with known noise, ``linear_gaussian``: Gaussian posterior and evidence in
closed form) and must: return a Result with the common fields; give the same draws for
the same seed and other draws for another; refuse a bad option name and a bad value with
one ``OptionError``; run with a progress bar; resume an interrupted run from its
checkpoint to the draws of an uninterrupted one; save and load; and put the draws' mean
within 5 Monte Carlo standard errors of the exact mean (or, for an engine that declares
itself approximate, within the looser bound stated here), and its log Z, where it
estimates one, within 5 of its standard errors of the exact value.

The ``rim`` engine applies a trained network to one lensing model only; it is checked on
that model (an untrained RIM, whose output is the GP MAP's non-negative part). ``em`` fits
``numpyro.param`` sites, which this model has none of; it conforms on a Gaussian mixture in
``tests/engines/test_em.py``.
"""

import dataclasses
import math

import numpy as np
import pytest

import helmholtz
from helmholtz import driver
from helmholtz.engines import ENGINES
from helmholtz.errors import OptionError
from helmholtz.models import get
from helmholtz.result import FreeEnergy, Result, Status

# small settings per engine (an engine missing here runs with its defaults)
SMALL = {
    "nuts": dict(num_warmup=150, num_samples=150, num_chains=2),
    "hmc": dict(num_warmup=150, num_samples=150, num_chains=2),
    "mala": dict(num_warmup=200, num_samples=300, num_chains=2),
    "svi": dict(num_optimizer_steps=2000, learning_rate=0.03, num_samples=400,
                num_elbo_samples=400),
    "ais": dict(num_particles=300, num_temperatures=60),
    "smc": dict(num_particles=200, num_replicates=4, max_num_temperatures=40),
    "ti": dict(num_rungs=6, num_warmup=100, num_samples=100, num_chains=2),
    "reverse-ais": dict(num_particles=300, num_temperatures=60),
    "bar": dict(num_particles=200, num_temperatures=40),
    **{name: dict(num_steps=16, num_gradient_samples=64, num_optimizer_steps=300,
                  learning_rate=5e-3, hidden_dim=16, num_samples=1000, num_eubo_samples=200)
       for name in ("pis", "dds", "cmcd", "asbs")},
    # the flows start from the prior (sd ≈ 1) and must reach a posterior of sd 0.10: ULA
    # needs steps well below 2 · 0.10², and importance sampling from the prior many draws
    "langevin": dict(num_particles=500, num_steps=300, step_size=0.004),
    "svgd": dict(num_particles=300, num_steps=300),
    "fisher-rao": dict(num_particles=20000, num_steps=30, step_size=0.2),
    "wfr": dict(num_particles=500, num_steps=300, step_size=0.004),
}
# adjoint matching regresses on the target's score without seeing the weights: on 16 steps
# its drift is too stiff for Euler on this narrow posterior and training runs away
SMALL["asbs"] = dict(SMALL["asbs"], num_steps=64)
# unadjusted Langevin is stable for steps below twice the target's smallest variance
# (posterior sd 0.10 here); cmcd's default step (0.05) is not, and its weights say so
SMALL["cmcd"] = dict(SMALL["cmcd"], step_size=0.004)
# how far the mean of an approximate engine may be from the exact mean, in posterior sds
APPROXIMATE_MEAN_SD = 0.25
NOT_ON_LINEAR_GAUSSIAN = {"rim", "em", "tps", "hot-md", "steered-md"}  # em fits param
# sites (tests/engines/test_em.py); the transition-path engines run on path models only
# (tests/engines/test_transition.py)
NAMES = sorted(set(ENGINES) - NOT_ON_LINEAR_GAUSSIAN)


@pytest.fixture(scope="module")
def problem():
    entry = get("linear_gaussian")
    args, kwargs = entry.args(seed=0)
    mean, cov = entry.exact_posterior(*args, **kwargs)["w"]
    return entry.target(seed=0), np.asarray(mean), np.sqrt(np.diag(cov))


_RUNS: dict = {}


def _run(problem, name, seed, **extra):
    key = (name, seed, tuple(sorted(extra.items())))
    if key not in _RUNS:
        _RUNS[key] = helmholtz.infer(problem[0], name, seed=seed, **SMALL.get(name, {}),
                                     **extra)
    return _RUNS[key]


def _weighted_mean_and_mcse(result):
    """Mean of w over the draws (weighted where the engine weights them) and its Monte
    Carlo standard error (arviz's ESS for chains; Kish's ESS for weighted particles)."""
    w = np.asarray(result.samples["w"], np.float64)
    flat = w.reshape(-1, w.shape[-1])
    if result.log_weights is not None:
        lw = np.asarray(result.log_weights, np.float64).ravel()
        p = np.exp(lw - lw.max())
        p /= p.sum()
        mean = p @ flat
        var = p @ (flat - mean) ** 2
        return mean, np.sqrt(var / (1.0 / np.sum(p**2)))
    import arviz as az

    ess = np.array([float(az.ess(w[..., i], method="mean")) for i in range(w.shape[-1])])
    return flat.mean(0), flat.std(0) / np.sqrt(ess)


@pytest.mark.parametrize("name", NAMES)
def test_result_has_the_common_fields(problem, name):
    r = _run(problem, name, 0)
    assert isinstance(r, Result) and r.engine == name and r.model == "linear_gaussian"
    assert r.samples["w"].ndim == 3 and r.samples["w"].shape[-1] == 3  # (chain, draw, 3)
    assert isinstance(r.free_energy, FreeEnergy) and isinstance(r.status, Status)
    assert r.compile_seconds >= 0 and r.run_seconds > 0 and r.num_grad_evals >= 0
    assert r.config == {**r.config, **{k: r.config[k] for k in ENGINES[name].option_names()}}
    for est in r.estimates.values():
        assert isinstance(est, FreeEnergy)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_draws_other_seed_other_draws(problem, name):
    a, b = _run(problem, name, 0), helmholtz.infer(problem[0], name, seed=0,
                                                   **SMALL.get(name, {}))
    np.testing.assert_array_equal(a.samples["w"], b.samples["w"])
    c = _run(problem, name, 1)
    assert not np.array_equal(a.samples["w"], c.samples["w"])


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_bad_option_name_and_value_raise_option_error(name):
    with pytest.raises(OptionError, match="has no option 'no_such_option'"):
        helmholtz.get_engine(name, no_such_option=1)
    fields = dataclasses.fields(ENGINES[name])
    ints = [f.name for f in fields if f.type == "int"]
    option, value = (ints[0], -7) if ints else (fields[0].name, object())
    with pytest.raises(OptionError, match=option):
        helmholtz.get_engine(name, **{option: value})


@pytest.mark.parametrize("name", NAMES)
def test_draws_match_the_exact_posterior(problem, name):
    _, mean, sd = problem
    r = _run(problem, name, 0)
    got, mcse = _weighted_mean_and_mcse(r)
    if ENGINES[name].approximate:
        assert np.all(np.abs(got - mean) < APPROXIMATE_MEAN_SD * sd + 5 * mcse), (got, mean)
    else:
        z = (got - mean) / mcse
        assert np.all(np.abs(z) < 5), z


@pytest.mark.parametrize("name", NAMES)
def test_log_z_matches_the_exact_evidence(problem, name):
    target = problem[0]
    r = _run(problem, name, 0)
    fe = r.free_energy
    if fe.kind == "none":
        assert math.isnan(fe.value)
        return
    assert np.isfinite(fe.value) and np.isfinite(fe.se) and fe.se > 0
    if fe.kind == "lower bound":
        assert -fe.value <= target.log_z + 5 * fe.se
    elif fe.kind == "upper bound":
        assert -fe.value >= target.log_z - 5 * fe.se
    else:
        assert abs(-fe.value - target.log_z) < 5 * fe.se + 0.05, (fe, target.log_z)


@pytest.mark.parametrize("name", NAMES)
def test_progress_bar_and_checkpoint_resume(problem, name, tmp_path, monkeypatch, capsys):
    target = problem[0]
    ckpt = tmp_path / "run.ckpt"
    options = SMALL.get(name, {})
    full = helmholtz.infer(target, name, seed=2, progress_bar=True, **options)
    assert capsys.readouterr().err  # the bar was drawn (tqdm writes to stderr)

    calls = {"n": 0}
    real_run = driver.Timer.run

    def dying_run(self, fn, *args):
        calls["n"] += 1
        if calls["n"] == 5:  # a few chunks in: the start and some of the first phase
            raise KeyboardInterrupt
        return real_run(self, fn, *args)

    monkeypatch.setattr(driver.Timer, "run", dying_run)
    with pytest.raises(KeyboardInterrupt):
        helmholtz.infer(target, name, seed=2, checkpoint=str(ckpt), **options)
    monkeypatch.setattr(driver.Timer, "run", real_run)
    assert ckpt.exists()
    resumed = helmholtz.infer(target, name, seed=2, checkpoint=str(ckpt), **options)
    np.testing.assert_array_equal(full.samples["w"], resumed.samples["w"])
    assert full.free_energy.value == resumed.free_energy.value or (
        math.isnan(full.free_energy.value) and math.isnan(resumed.free_energy.value))
    assert not ckpt.exists()  # a finished run removes its checkpoint


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(problem, name, tmp_path):
    r = _run(problem, name, 0)
    loaded = Result.load(r.save(tmp_path / f"{name}.nc"))
    np.testing.assert_array_equal(loaded.samples["w"], r.samples["w"])
    assert loaded.engine == name
    assert loaded.free_energy.kind == r.free_energy.kind
    np.testing.assert_equal(loaded.free_energy.value, r.free_energy.value)
    assert sorted(loaded.estimates) == sorted(r.estimates)
    assert loaded.status == r.status


def test_rim_conforms_on_its_lensing_model(tmp_path):
    """The rim engine on its model: a Result with one draw, the same draw for any seed
    (it is deterministic), the untrained network's known output, save and load."""
    import jax

    from helmholtz.models.lensing import (
        GaussianProcessSource,
        ImageConfig,
        invert_source,
        pixelated_source_model,
    )
    from helmholtz.models.lensing.rim import RIM, RIMConfig, simulate_mocks

    config = ImageConfig(num_pix=16, pixel_scale=0.2, psf_fwhm=0.3)
    source = GaussianProcessSource(num_pix=8, pixel_scale=0.2, amplitude=2.0,
                                   length_scale=0.2)
    hyper = RIMConfig(image=config, source=source, hidden_channels=4, num_steps=2)
    mocks = simulate_mocks(jax.random.key(7), hyper, 1)
    path = RIM(hyper, key=jax.random.key(0)).save(tmp_path / "rim.eqx")
    lens = {k: v[0] for k, v in mocks.lens.items()}
    target = helmholtz.Target.from_model(pixelated_source_model, config, mocks.data[0],
                                         source=source, lens=lens, sigma=mocks.sigma[0])
    r = helmholtz.infer(target, "rim", seed=0, weights=str(path))
    again = helmholtz.infer(target, "rim", seed=5, weights=str(path))
    np.testing.assert_array_equal(r.samples["source"], again.samples["source"])
    map_source = invert_source(mocks.data[0], mocks.sigma[0], config,
                               mocks.kwargs_lens(0), source).source
    np.testing.assert_allclose(r.samples["source"][0, 0], np.maximum(map_source, 0),
                               atol=2e-2 * np.abs(map_source).max())
    loaded = Result.load(r.save(tmp_path / "rim.nc"))
    np.testing.assert_array_equal(loaded.samples["source"], r.samples["source"])
