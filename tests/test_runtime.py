"""helmholtz._runtime: the jaxlib 0.10 deadlock flag and the persistent compilation cache.

Each behaviour that depends on the state of a fresh process (XLA_FLAGS is read once, when
JAX creates its backend; the cache is read by a second process) runs in a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import jax
import numpy as np
import pytest

import helmholtz
from helmholtz import _runtime

NEEDS_FLAG = _runtime.jaxlib_version() < (0, 11)
_OUR_VARIABLES = ("XLA_FLAGS", "HELMHOLTZ_XLA_DEADLOCK_WORKAROUND", "HELMHOLTZ_CACHE_DIR",
                  "HELMHOLTZ_JAX_CACHE", "HELMHOLTZ_COMPILATION_CACHE",
                  "JAX_COMPILATION_CACHE_DIR")


def _run(code: str, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with a clean helmholtz/XLA environment plus ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in _OUR_VARIABLES}
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=base | env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the subprocess did not finish within {timeout} s (a deadlock?)")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _last_json(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the deadlock flag -----------------------------------------------------------------

TWO_SOLVES = """
    import helmholtz  # first: it sets XLA_FLAGS before JAX creates its backend
    import jax, jax.numpy as jnp, numpy as np
    batch, n = {batch}, {n}
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (n, n))
    chol = jnp.linalg.cholesky(a @ a.T + n * jnp.eye(n))

    @jax.jit  # exactly /work/shared/repro/trsm_deadlock.py (returning arrays did not hang)
    def solves(x, y):
        s = jax.scipy.linalg.solve_triangular(jnp.broadcast_to(chol, (batch, n, n)),
                                              x[..., None], lower=True).sum()
        return s + jax.scipy.linalg.solve_triangular(
            jnp.broadcast_to(2 * chol, (batch, n, n)), y[..., None], lower=True).sum()

    x = jax.random.normal(k2, (batch, n))
    sums = [float(solves(x + i, 3 * x - i)) for i in range(20)]
    np.savez({path!r}, chol=np.asarray(chol), x=np.asarray(x), sums=np.array(sums))
"""


@pytest.mark.parametrize("batch,n", [(8000, 3), (256, 100)])
def test_two_batched_triangular_solves_finish_with_correct_values(tmp_path, batch, n):
    # batch 256 of 100x100 (/work/shared/repro/trsm_deadlock.py) hung in 5 of 10 runs on
    # jaxlib 0.10.2 / 2 CPU cores without the flag; 8000 of 3x3 hung in none of 5
    path = tmp_path / "solves.npz"
    _run(TWO_SOLVES.format(batch=batch, n=n, path=str(path)), timeout=240)
    saved = np.load(path)
    chol, x = saved["chol"].astype(np.float64), saved["x"].astype(np.float64)
    inverse = np.linalg.inv(chol)  # float64 reference: Σ L⁻¹ (x + i) + Σ (2L)⁻¹ (3x − i)
    expect = [(inverse @ (x + i).T).sum() + (inverse / 2 @ (3 * x - i).T).sum()
              for i in range(20)]
    np.testing.assert_allclose(saved["sums"], expect, rtol=1e-4, atol=1e-3 * np.sqrt(batch))
    assert np.ptp(expect) > 1.0  # the calls differ, so each sum checks its own solves


PRINT_FLAGS = """
    import json, os, warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import helmholtz
    print(json.dumps({"flags": os.environ.get("XLA_FLAGS", ""),
                      "warnings": [str(w.message) for w in caught
                                   if issubclass(w.category, RuntimeWarning)]}))
"""


def test_flag_is_set_at_import_only_on_jaxlib_before_0_11():
    out = _last_json(_run(PRINT_FLAGS))
    assert (_runtime.DEADLOCK_FLAG in out["flags"]) == NEEDS_FLAG
    assert not out["warnings"]


def test_flag_keeps_other_xla_flags_and_a_user_setting():
    other = "--xla_force_host_platform_device_count=2"
    out = _last_json(_run(PRINT_FLAGS, XLA_FLAGS=other))
    assert out["flags"].startswith(other)
    assert (_runtime.DEADLOCK_FLAG in out["flags"]) == NEEDS_FLAG
    user = "--xla_cpu_enable_concurrency_optimized_scheduler=true"
    assert _last_json(_run(PRINT_FLAGS, XLA_FLAGS=user))["flags"] == user


def test_env_switch_turns_the_flag_off():
    out = _last_json(_run(PRINT_FLAGS, HELMHOLTZ_XLA_DEADLOCK_WORKAROUND="0"))
    assert _runtime.DEADLOCK_FLAG not in out["flags"]


def test_import_after_the_backend_exists_warns_on_jaxlib_0_10():
    code = PRINT_FLAGS.replace("import helmholtz", "import jax; jax.numpy.ones(1)\n"
                               "        import helmholtz")
    out = _last_json(_run(code))
    assert _runtime.DEADLOCK_FLAG not in out["flags"]
    assert len(out["warnings"]) == NEEDS_FLAG
    if NEEDS_FLAG:
        assert "import helmholtz before running jax code" in out["warnings"][0].lower()


@pytest.mark.parametrize("version,expect", [((0, 10, 2), "too late"), ((0, 12, 0), "not needed")])
def test_workaround_decision_per_version(monkeypatch, version, expect):
    jax.numpy.ones(1).block_until_ready()  # the backend exists now, so 0.10 can only warn
    monkeypatch.setattr(_runtime, "jaxlib_version", lambda: version)
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.delenv("HELMHOLTZ_XLA_DEADLOCK_WORKAROUND", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _runtime.apply_xla_deadlock_workaround() == expect
    assert [w.category for w in caught] == [RuntimeWarning] * (expect == "too late")
    assert os.environ["XLA_FLAGS"] == ""


# ---- the persistent compilation cache --------------------------------------------------

SMALL_NUTS = """
    import json
    import helmholtz
    import jax, numpyro, numpyro.distributions as dist
    from jax import monitoring
    OFF = False
    if OFF:
        helmholtz.set_compilation_cache(None)
    events = {"hits": 0, "misses": 0}
    def count(event, **kwargs):
        for name in events:
            if event == f"/jax/compilation_cache/cache_{name}":
                events[name] += 1
    monitoring.register_event_listener(count)

    def model():
        numpyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))

    result = helmholtz.infer(model, "nuts", seed=0, num_chains=2, num_warmup=100,
                             num_samples=100)
    print(json.dumps(events | {"dir": jax.config.jax_compilation_cache_dir,
                               "compile_seconds": result.compile_seconds}))
"""


def test_second_process_hits_the_persistent_cache(tmp_path):
    folder = tmp_path / "cache"
    first = _last_json(_run(SMALL_NUTS, timeout=300, HELMHOLTZ_CACHE_DIR=str(folder)))
    assert first["dir"] == str(folder)
    assert first["hits"] == 0 and first["misses"] > 0
    assert any(folder.iterdir())  # entries written
    second = _last_json(_run(SMALL_NUTS, timeout=300, HELMHOLTZ_CACHE_DIR=str(folder)))
    assert second["hits"] > 0
    off = _last_json(_run(SMALL_NUTS.replace("OFF = False", "OFF = True"), timeout=300,
                          HELMHOLTZ_CACHE_DIR=str(folder)))
    assert off["hits"] == 0 and off["dir"] is None


CACHE_DIR = """
    import json, helmholtz, jax
    print(json.dumps(jax.config.jax_compilation_cache_dir))
"""


def test_cache_folder_and_switches(tmp_path):
    home = tmp_path / "home"
    assert json.loads(_run(CACHE_DIR, HOME=str(home)).stdout) == str(
        home / ".cache" / "helmholtz" / "jax")
    xdg = tmp_path / "xdg"
    assert json.loads(_run(CACHE_DIR, XDG_CACHE_HOME=str(xdg)).stdout) == str(
        xdg / "helmholtz" / "jax")
    assert json.loads(_run(CACHE_DIR, HELMHOLTZ_COMPILATION_CACHE="0").stdout) is None
    assert json.loads(_run(CACHE_DIR, HELMHOLTZ_CACHE_DIR="").stdout) is None
    mine = str(tmp_path / "mine")  # a folder the user gave jax is kept
    assert json.loads(_run(CACHE_DIR, JAX_COMPILATION_CACHE_DIR=mine,
                           HELMHOLTZ_CACHE_DIR=str(tmp_path / "ours")).stdout) == mine


# ---- lazy public names -----------------------------------------------------------------


def test_import_is_lazy_and_every_public_name_resolves():
    code = """
        import json, sys
        import helmholtz
        print(json.dumps([m for m in ("numpyro", "blackjax", "arviz", "scipy.optimize",
                                      "helmholtz.engines") if m in sys.modules]))
    """
    assert json.loads(_run(code).stdout) == []
    for name in helmholtz.__all__:
        assert getattr(helmholtz, name) is not None
    assert callable(helmholtz.infer) and callable(helmholtz.boltzmann)
    assert helmholtz.models.__name__ == "helmholtz.models"


def test_a_submodule_import_does_not_replace_the_function_of_its_name():
    code = """
        import helmholtz
        from helmholtz.boltzmann import boltzmann
        import helmholtz.infer
        assert helmholtz.boltzmann is boltzmann and callable(helmholtz.infer), helmholtz.infer
        assert issubclass(helmholtz.errors.ModelError, Exception)  # submodules as attributes
        assert callable(helmholtz.driver.run_engine)
    """
    _run(code)
    # conftest switches the cache off in this process (HELMHOLTZ_COMPILATION_CACHE=0)
    assert not jax.config.jax_compilation_cache_dir


LKJ_SMC = textwrap.dedent("""
    import json
    import helmholtz  # first: the deadlock workaround must be in XLA_FLAGS
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as dist

    def covariance_model(y):
        d = y.shape[1]
        shares = numpyro.sample("shares", dist.Dirichlet(jnp.ones(d)))
        corr = numpyro.sample("corr", dist.LKJCholesky(d, 2.0))
        mu = numpyro.sample("mu", dist.Normal(0.0, 2.0).expand([d]).to_event(1))
        scale = jnp.sqrt(d * shares)[:, None] * corr
        with numpyro.plate("n", y.shape[0]):
            numpyro.sample("y", dist.MultivariateNormal(mu, scale_tril=scale), obs=y)

    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 3)) + np.array([1.0, -0.5, 0.3])
    r = helmholtz.infer(covariance_model, "smc", seed=0, model_args=(y,), num_particles=200,
                        num_replicates=2)
    w = np.exp(r.log_weights - r.log_weights.max()).ravel()
    w /= w.sum()
    mu = np.tensordot(w, r.samples["mu"].reshape(-1, 3), axes=1)
    print(json.dumps({"log_z": r.log_z, "mu": mu.tolist(), "ybar": y.mean(0).tolist()}))
""")


def test_dirichlet_lkj_mvn_model_under_smc_finishes(tmp_path):
    """The model that hung smc on jaxlib 0.10.2 (two independent batched triangular
    solves in one compiled function: the MVN's and the LKJ's) finishes within a
    wall-clock limit in a subprocess, and its posterior mean of mu is the data mean's
    (40 observations: posterior sd about 0.15)."""
    out = _last_json(_run(LKJ_SMC, timeout=600))
    assert np.isfinite(out["log_z"])
    np.testing.assert_allclose(out["mu"], out["ybar"], atol=0.4)
