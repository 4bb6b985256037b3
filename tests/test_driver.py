"""The driver: chunking does not change draws; an interrupted run resumes exactly."""

import threading

import numpy as np
import pytest

import helmholtz
from helmholtz import driver

SETTINGS = dict(num_warmup=100, num_samples=100, num_chains=2)


def test_chunked_run_equals_one_scan():
    one = helmholtz.infer("linear_gaussian", "nuts", seed=5, **SETTINGS)
    chunked = helmholtz.infer("linear_gaussian", "nuts", seed=5, progress_bar=True, **SETTINGS)
    np.testing.assert_array_equal(one.samples["w"], chunked.samples["w"])


def test_interrupted_run_resumes_to_the_same_draws(tmp_path, monkeypatch):
    ckpt = tmp_path / "run.ckpt"
    full = helmholtz.infer("linear_gaussian", "nuts", seed=6, progress_bar=True, **SETTINGS)

    calls = {"n": 0}
    real_run = driver.Timer.run

    def dying_run(self, fn, *args):
        calls["n"] += 1
        if calls["n"] == 30:  # 1 init + 20 warmup chunks, then part-way through sampling
            raise KeyboardInterrupt
        return real_run(self, fn, *args)

    monkeypatch.setattr(driver.Timer, "run", dying_run)
    with pytest.raises(KeyboardInterrupt):
        helmholtz.infer("linear_gaussian", "nuts", seed=6, checkpoint=str(ckpt), **SETTINGS)
    monkeypatch.setattr(driver.Timer, "run", real_run)
    assert ckpt.exists()

    with pytest.raises(helmholtz.errors.CheckpointError, match="written by a different run: seed"):
        helmholtz.infer("linear_gaussian", "nuts", seed=7, checkpoint=str(ckpt), **SETTINGS)

    resumed = helmholtz.infer("linear_gaussian", "nuts", seed=6, checkpoint=str(ckpt),
                              **SETTINGS)
    np.testing.assert_array_equal(full.samples["w"], resumed.samples["w"])
    np.testing.assert_array_equal(full.stats["n_steps"], resumed.stats["n_steps"])
    assert not ckpt.exists()  # a finished run removes its checkpoint


def test_vector_width_override_is_validated(monkeypatch):
    """``HELMHOLTZ_CPU_VECTOR_WIDTH`` picks XLA's vector width for compiled loops: at
    XLA's default width NUTS still finds the exact posterior mean, and a bad value is
    refused by name."""
    from helmholtz.models import get

    entry = get("linear_gaussian")
    args, kwargs = entry.args(seed=0)
    mean, cov = entry.exact_posterior(*args, **kwargs)["w"]
    monkeypatch.setenv("HELMHOLTZ_CPU_VECTOR_WIDTH", "256")
    assert driver.cpu_compiler_options() == {"xla_cpu_prefer_vector_width": 256}
    result = helmholtz.infer("linear_gaussian", "nuts", seed=8, **SETTINGS)
    w = np.asarray(result.samples["w"]).reshape(-1, np.size(mean))
    # 200 draws, effective sample size above 50 for this well-conditioned posterior
    np.testing.assert_allclose(w.mean(0), mean, atol=4 * np.sqrt(np.diag(cov)).max() / np.sqrt(50))
    monkeypatch.setenv("HELMHOLTZ_CPU_VECTOR_WIDTH", "1024")
    with pytest.raises(ValueError, match="HELMHOLTZ_CPU_VECTOR_WIDTH must be 128, 256 or 512"):
        helmholtz.infer("linear_gaussian", "nuts", seed=8, **SETTINGS)


_MODEL_SOURCE = '''
import numpyro, numpyro.distributions as dist

def model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, {scale}))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
'''


def _load_model(tmp_path, scale, name):
    import importlib.util

    path = tmp_path / f"{name}.py"
    path.write_text(_MODEL_SOURCE.format(scale=scale))
    spec = importlib.util.spec_from_file_location("user_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.model


@pytest.mark.parametrize("change, expected", [
    ("model", "model source differs"),
    ("data", "data differs"),
    ("option", "option max_num_doublings differs"),
    ("seed", "seed differs"),
])
def test_a_stale_checkpoint_is_refused_naming_the_difference(tmp_path, change, expected):
    """A checkpoint kept from one run must not be resumed by a run with another model
    (same name, scales ×3), other data, another option or another seed."""
    ckpt = helmholtz.Checkpoint(tmp_path / "run.ckpt", keep=True)
    settings = dict(num_warmup=20, num_samples=20, num_chains=2, max_num_doublings=4)
    y = np.array([0.3, -0.2, 1.1])
    model = _load_model(tmp_path, 1.0, "a")
    first = helmholtz.infer(model, "nuts", seed=0, model_kwargs={"y": y}, checkpoint=ckpt,
                            **settings)
    assert ckpt.path.exists()
    again = helmholtz.infer(model, "nuts", seed=0, model_kwargs={"y": y}, checkpoint=ckpt,
                            **settings)  # the same run: its finished state is reused
    np.testing.assert_array_equal(first.samples["mu"], again.samples["mu"])
    args = dict(seed=0, model_kwargs={"y": y}, **settings)
    if change == "model":
        model = _load_model(tmp_path, 3.0, "b")
    elif change == "data":
        args["model_kwargs"] = {"y": y + 1.0}
    elif change == "option":
        args["max_num_doublings"] = 2
    else:
        args["seed"] = 1
    with pytest.raises(helmholtz.errors.CheckpointError, match=expected):
        helmholtz.infer(model, "nuts", checkpoint=ckpt, **args)
    fresh = helmholtz.infer(model, "nuts", checkpoint=helmholtz.Checkpoint(
        ckpt.path, overwrite=True), **args)
    assert not np.array_equal(fresh.samples["mu"], first.samples["mu"])
    assert not ckpt.path.exists()


@pytest.mark.parametrize("engine, options", [
    ("nuts", SETTINGS), ("svi", dict(num_steps=200, num_samples=50)),
    ("ti", dict(num_rungs=4, num_chains=2, num_warmup=100, num_samples=100))])
def test_compiling_ahead_changes_no_draw_and_wastes_no_compile(monkeypatch, engine, options):
    """The programs of a run's phases, compiled side by side on worker threads before the
    first phase runs (``driver.compile_ahead``), give the same draws bit for bit as
    programs compiled one by one as the run reaches them; and each program compiled ahead
    is the one the run then calls (NUTS and TI: the program that finds the start, the
    chains' start states, foreseen before the start is found, then warmup, its finish and
    sampling; SVI: training and the final ELBO). It empties the driver's cache."""
    driver.clear_cache()
    monkeypatch.setenv("HELMHOLTZ_COMPILE_AHEAD", "0")
    before = dict(driver.AHEAD)
    plain = helmholtz.infer("linear_gaussian", engine, seed=9, **options)
    assert driver.AHEAD == before
    driver.clear_cache()
    monkeypatch.delenv("HELMHOLTZ_COMPILE_AHEAD")
    ahead = helmholtz.infer("linear_gaussian", engine, seed=9, **options)
    done = {k: driver.AHEAD[k] - before[k] for k in before}
    programs = {"nuts": 5, "svi": 2, "ti": 5}[engine]
    assert done == {"submitted": programs, "used": programs, "discarded": 0}
    np.testing.assert_array_equal(plain.samples["w"], ahead.samples["w"])
    assert ahead.compile_seconds > 0


def test_an_interrupted_run_leaves_no_compile_queued(monkeypatch):
    """Ctrl-C in the start of a NUTS run, while its five programs wait for the two compile
    workers (held busy here): they are dropped, none is compiled for a run that ended; and
    the next run compiles what it lacks and gives the draws of an uninterrupted run."""
    from helmholtz.engines import mcmc

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    driver.clear_cache()
    gate = threading.Event()
    busy = [driver._pool().submit(gate.wait) for _ in range(2)]
    before = driver.AHEAD["submitted"]
    try:
        with monkeypatch.context() as m:
            m.setattr(mcmc, "engine_initial_positions", interrupt)
            with pytest.raises(KeyboardInterrupt):
                helmholtz.infer("linear_gaussian", "nuts", seed=9, **SETTINGS)
        assert driver.AHEAD["submitted"] - before == 5
        assert not any(isinstance(v, driver._Ahead) for v in driver._CACHE.values())
    finally:
        gate.set()
    assert all(f.result() for f in busy)
    again = helmholtz.infer("linear_gaussian", "nuts", seed=9, **SETTINGS)
    driver.clear_cache()
    fresh = helmholtz.infer("linear_gaussian", "nuts", seed=9, **SETTINGS)
    np.testing.assert_array_equal(again.samples["w"], fresh.samples["w"])


def test_compiling_ahead_under_a_thread_local_x64_context(monkeypatch):
    """``jax.enable_x64`` as a context manager holds for the calling thread only; the
    programs compiled ahead are traced and lowered there, so a run inside it samples in
    float64, as the same run compiled one program at a time does."""
    import jax

    driver.clear_cache()
    before = driver.AHEAD["used"]
    with jax.enable_x64(True):
        ahead = helmholtz.infer("linear_gaussian", "nuts", seed=4, **SETTINGS)
        assert driver.AHEAD["used"] - before == 5
        driver.clear_cache()
        monkeypatch.setenv("HELMHOLTZ_COMPILE_AHEAD", "0")
        plain = helmholtz.infer("linear_gaussian", "nuts", seed=4, **SETTINGS)
    driver.clear_cache()
    assert ahead.samples["w"].dtype == np.float64
    np.testing.assert_array_equal(ahead.samples["w"], plain.samples["w"])
