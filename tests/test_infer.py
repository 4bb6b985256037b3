"""infer: names and objects, bad input, no re-trace on a second run, 1 vs 4 devices."""

import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import helmholtz
from helmholtz.driver import TRACE_COUNT
from helmholtz.models import classic, get

SMALL = dict(num_warmup=200, num_samples=200, num_chains=2)


def test_unknown_engine_lists_valid_names():
    with pytest.raises(helmholtz.EngineError) as err:
        helmholtz.infer("linear_gaussian", "nutz")
    msg = str(err.value)
    assert "unknown engine 'nutz'" in msg
    for name in ("hmc", "mala", "nuts", "svi"):
        assert name in msg


def test_unknown_model_lists_zoo_names():
    with pytest.raises(KeyError) as err:
        helmholtz.infer("eight_skools", "nuts")
    assert "eight_schools_noncentered" in str(err.value)


def test_unknown_and_invalid_options():
    with pytest.raises(helmholtz.OptionError, match="no option 'num_draws'.*num_samples"):
        helmholtz.infer("linear_gaussian", "nuts", num_draws=10)
    with pytest.raises(helmholtz.OptionError, match="num_samples must be an integer ≥ 1"):
        helmholtz.infer("linear_gaussian", "nuts", num_samples=-5)
    with pytest.raises(helmholtz.OptionError, match="target_acceptance_rate must lie in"):
        helmholtz.infer("linear_gaussian", "hmc", target_acceptance_rate=1.5)
    with pytest.raises(helmholtz.OptionError, match="unknown guide 'flowz'"):
        helmholtz.infer("linear_gaussian", "svi", guide="flowz")
    with pytest.raises(helmholtz.OptionError, match="expects int, got 'abc'"):
        helmholtz.get_engine("nuts", num_samples="abc")


def test_string_options_are_coerced_like_the_cli():
    eng = helmholtz.get_engine("nuts", num_samples="10", dense_mass="true",
                               target_acceptance_rate="0.9")
    assert (eng.num_samples, eng.dense_mass, eng.target_acceptance_rate) == (10, True, 0.9)


def test_nan_log_density_at_initialisation_is_reported():
    def bad(y=None):
        scale = numpyro.sample("scale", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Exponential(scale), obs=y)

    with pytest.raises(helmholtz.InitializationError, match="Non-finite terms: y"):
        helmholtz.infer(bad, "nuts", model_kwargs={"y": jnp.array([1.0, -2.0])}, **SMALL)
    with pytest.raises(helmholtz.InitializationError, match="NaN or -inf"):
        helmholtz.infer(bad, "svi", model_kwargs={"y": jnp.array([jnp.nan])}, num_steps=10)


def test_model_raising_while_tracing_from_infer():
    def broken():
        numpyro.sample("x", dist.Normal(0, 1))
        raise ValueError("shape mismatch in my model")

    with pytest.raises(helmholtz.ModelError, match="shape mismatch in my model"):
        helmholtz.infer(broken, "nuts")


def test_engine_object_and_name_give_the_same_draws():
    a = helmholtz.infer("linear_gaussian", "mala", seed=2, **SMALL)
    b = helmholtz.infer("linear_gaussian", helmholtz.MALA(**SMALL), seed=2)
    np.testing.assert_array_equal(a.samples["w"], b.samples["w"])


def test_second_run_with_new_data_does_not_retrace_or_recompile():
    entry = get("linear_gaussian")
    args, kwargs = entry.args(seed=0)
    target = entry.target(seed=0)
    first = helmholtz.infer(target, "nuts", seed=0, **SMALL)
    before = TRACE_COUNT["n"]
    new_data = target.with_data(args[0] * 1.1, y=kwargs["y"] + 0.5)
    second = helmholtz.infer(new_data, "nuts", seed=1, **SMALL)
    assert TRACE_COUNT["n"] == before, "the second run traced a driver function again"
    assert second.compile_seconds == 0.0
    # and the new data really were used: the exact posterior mean moved with them
    m_new = classic.linear_gaussian_posterior(args[0] * 1.1, y=kwargs["y"] + 0.5)["w"][0]
    m_old = classic.linear_gaussian_posterior(*args, **kwargs)["w"][0]
    w2 = second.samples["w"].reshape(-1, 3).mean(0)
    assert np.linalg.norm(w2 - m_new) < np.linalg.norm(w2 - m_old)
    assert first.compile_seconds >= 0.0


_SHARD_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    import helmholtz
    r = helmholtz.infer("eight_schools_noncentered", "nuts", seed=7, num_warmup=150,
                        num_samples=100, num_chains=4, chain_group_size=1)
    ais = helmholtz.infer("linear_gaussian", "ais", seed=3, num_particles=400,
                          num_temperatures=40)
    smc = helmholtz.infer("linear_gaussian", "smc", seed=3, num_particles=100,
                          num_replicates=4, chain_group_size=1)
    json.dump({"devices": jax.device_count(), "mu": r.samples["mu"].tolist(),
               "ais_log_z": ais.log_z, "ais_se": ais.free_energy.se,
               "ais_w": ais.samples["w"].tolist(),
               "smc_log_z": smc.log_z, "smc_w": smc.samples["w"].tolist()}, sys.stdout)
""")


def _run_with_devices(n, script=_SHARD_SCRIPT):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_and_four_devices():
    return _run_with_devices(1), _run_with_devices(4)


def test_one_and_four_devices_give_identical_draws(one_and_four_devices):
    """With one chain per program (chain_group_size=1) the draws are bit-identical."""
    one, four = one_and_four_devices
    assert (one["devices"], four["devices"]) == (1, 4)
    np.testing.assert_array_equal(np.array(one["mu"]), np.array(four["mu"]))


def test_population_engines_shard_over_devices(one_and_four_devices):
    """SMC with chain_group_size=1 runs one replicate per compiled program: the same log Z
    and particles on 1 and 4 devices, to the last bit. AIS's particle axis is sharded over the 4
    devices (XLA partitions the population step): the same start, but XLA compiles the
    per-particle arithmetic of a batch of 100 and of 400 differently in the last bits
    (measured: 3e-6 after three HMC steps), accept/reject decisions amplify that, so
    its promise is agreement within the Monte Carlo error, checked here. Once decisions
    differ the two runs are independent, so their log Z differ by at most 4 combined se
    (2 would fail one run in 20 by chance), and the means of their 400 endpoints by 4 sds
    of a difference of two means, √2·σ/√400 per coordinate."""
    one, four = one_and_four_devices
    assert four["smc_log_z"] == one["smc_log_z"]
    np.testing.assert_array_equal(np.array(four["smc_w"]), np.array(one["smc_w"]))
    delta = abs(four["ais_log_z"] - one["ais_log_z"])
    assert delta < 4 * np.hypot(four["ais_se"], one["ais_se"]), (delta, one["ais_se"])
    w1, w4 = np.array(one["ais_w"]).reshape(-1, 3), np.array(four["ais_w"]).reshape(-1, 3)
    sd_of_difference = np.sqrt(2) * w1.std(0) / np.sqrt(len(w1))
    np.testing.assert_array_less(np.abs(w1.mean(0) - w4.mean(0)), 4 * sd_of_difference)


_CENTRED_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    import helmholtz
    r = helmholtz.infer("eight_schools_centered", "nuts", seed=7, num_warmup=30,
                        num_samples=20, num_chains=2, chain_group_size=1)
    json.dump({"devices": jax.device_count(),
               **{k: r.samples[k].tolist() for k in ("mu", "tau", "theta")}}, sys.stdout)
""")


def test_centred_model_gives_identical_draws_on_one_and_two_devices():
    """Issue 10 item 4: a shard_map over two devices went through XLA's SPMD pipeline,
    which kept the centred model's 1/exp(u) where the one-device compile made it exp(-u);
    one ulp in the gradient, different draws after three warmup steps."""
    one, two = _run_with_devices(1, _CENTRED_SCRIPT), _run_with_devices(2, _CENTRED_SCRIPT)
    assert (one["devices"], two["devices"]) == (1, 2)
    for site in ("mu", "tau", "theta"):
        np.testing.assert_array_equal(np.array(one[site]), np.array(two[site]), err_msg=site)
