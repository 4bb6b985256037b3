"""Trained engines: networks as options compile once, training resumes bit for bit from
a checkpoint, a non-finite loss stops training with a status and the last finite
parameters, and a fitted guide draws again."""

from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import helmholtz
from helmholtz.driver import TRACE_COUNT
from helmholtz.engines._assemble import assemble
from helmholtz.engines.base import Engine
from helmholtz.models import get
from helmholtz.result import FreeEnergy
from helmholtz.training import init_training, training_phase, training_status


@dataclass(frozen=True)
class GaussianFit(Engine):
    """A toy trained engine: a Gaussian q = N(m, diag(e^{2s})) whose (m, s) are the output
    of an equinox network at a fixed input, fitted by the reparameterised reverse KL.
    The network is an option (its weights are arrays), which a hashed cache key could
    not hold."""

    name = "gaussian-fit"
    network: Any = None
    num_optimizer_steps: int = 500

    def make_optimizer(self):
        return optax.adam(optax.cosine_decay_schedule(0.05, self.num_optimizer_steps, 0.01))

    def init(self, rng_key, target, position=None):
        return init_training(self, eqx.filter(self.network, eqx.is_array))

    def loss(self, params, rng_key, target):
        net = eqx.combine(params, eqx.filter(self.network, eqx.is_array, inverse=True))
        out = net(jnp.ones(1))
        m, s = out[: target.dim], out[target.dim:]
        eps = jax.random.normal(rng_key, (16, target.dim))
        z = m + jnp.exp(s) * eps
        return -jnp.mean(jax.vmap(target.log_density)(z)) - jnp.sum(s)

    def phases(self, target):
        return (training_phase(self.num_optimizer_steps),)

    def result(self, rng_key, target, state, infos, run):
        net = eqx.combine(state.params, eqx.filter(self.network, eqx.is_array, inverse=True))
        out = np.asarray(net(jnp.ones(1)))
        z = out[None, None, : target.dim]
        return assemble(self, target, z, {}, run, 0, FreeEnergy.none("toy"),
                        trace={"loss": infos["training"]["loss"]},
                        status=training_status(state, infos["training"]["loss"]))


def _network(seed, dim=3):
    return eqx.nn.Linear(1, 2 * dim, key=jax.random.key(seed))


def test_engine_holding_a_network_compiles_once():
    target = get("linear_gaussian").target(seed=0)
    first = GaussianFit(network=_network(0)).run(target, jax.random.key(0))
    before = TRACE_COUNT["n"]
    second = GaussianFit(network=_network(1)).run(target, jax.random.key(0))
    assert TRACE_COUNT["n"] == before, "new network weights re-traced a compiled function"
    assert second.compile_seconds == 0.0
    # the weights are inputs, not constants baked into the first compilation
    assert not np.array_equal(first.trace["loss"], second.trace["loss"])
    # both fits reach the exact posterior mean (a Gaussian target: q can be exact)
    entry = get("linear_gaussian")
    args, kwargs = entry.args(seed=0)
    mean, cov = entry.exact_posterior(*args, **kwargs)["w"]
    for r in (first, second):
        np.testing.assert_allclose(r.samples["w"][0, 0], mean,
                                   atol=0.1 * np.sqrt(np.diag(cov)).max())


def test_interrupted_training_resumes_to_the_same_parameters(tmp_path, interrupted):
    target = get("linear_gaussian").target(seed=0)
    options = dict(num_optimizer_steps=400, num_samples=50, num_elbo_samples=50)
    full = helmholtz.infer(target, "svi", seed=3, checkpoint=str(tmp_path / "a.ckpt"),
                           **options)
    # the start, then part of the training
    interrupted(9, lambda: helmholtz.infer(target, "svi", seed=3,
                                           checkpoint=str(tmp_path / "b.ckpt"), **options))
    resumed = helmholtz.infer(target, "svi", seed=3, checkpoint=str(tmp_path / "b.ckpt"),
                              **options)
    for k in full.fitted.params:
        np.testing.assert_array_equal(full.fitted.params[k], resumed.fitted.params[k])
    np.testing.assert_array_equal(full.trace["loss"], resumed.trace["loss"])


def _poisoned_adam(step):
    """Adam whose update turns NaN at ``step``: a training that diverges there."""
    adam = optax.adam(0.01)

    def init(params):
        return (adam.init(params), jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        inner, count = state
        updates, inner = adam.update(updates, inner, params)
        bad = jnp.where(count == step, jnp.nan, 1.0)
        return jax.tree_util.tree_map(lambda u: u * bad, updates), (inner, count + 1)

    return optax.GradientTransformation(init, update)


def test_nan_loss_stops_training_with_a_status_and_finite_parameters():
    target = get("linear_gaussian").target(seed=0)
    r = helmholtz.infer(target, "svi", seed=0, optimizer=_poisoned_adam(120),
                        num_optimizer_steps=300, num_samples=100, num_elbo_samples=100)
    assert r.status.code == "nan" and "step 120" in r.status.message
    assert all(np.all(np.isfinite(np.asarray(v))) for v in r.fitted.params.values())
    assert np.all(np.isfinite(r.samples["w"])) and np.isfinite(r.free_energy.value)
    with pytest.raises(helmholtz.errors.RunError, match="step 120"):
        r.raise_for_status()


def test_fitted_guide_draws_again_from_the_posterior():
    entry = get("linear_gaussian")
    args, kwargs = entry.args(seed=0)
    mean, cov = entry.exact_posterior(*args, **kwargs)["w"]
    r = helmholtz.infer(entry.target(seed=0), "svi", seed=0, guide="mvn",
                        num_optimizer_steps=2000, num_samples=100)
    draws = r.fitted.sample(jax.random.key(9), 4000)["w"]
    assert draws.shape == (4000, 3)
    sd = np.sqrt(np.diag(cov))
    # a full-rank Gaussian guide on a Gaussian posterior: mean within 5 MC errors + 5% sd
    np.testing.assert_array_less(np.abs(draws.mean(0) - mean), 5 * sd / np.sqrt(4000)
                                 + 0.05 * sd)
    np.testing.assert_allclose(draws.std(0), sd, rtol=0.1)
    again = r.fitted.sample(jax.random.key(9), 4000)["w"]
    np.testing.assert_array_equal(draws, again)


def test_saved_guide_loads_and_draws_without_retraining(tmp_path):
    """A trained guide saved with its Result draws the same samples after loading, with
    its Target rebuilt from the model's name and arguments, or given explicitly."""
    target = get("linear_gaussian").target(seed=0)
    r = helmholtz.infer(target, "svi", seed=1, num_optimizer_steps=300, num_samples=50,
                        num_elbo_samples=50)
    path = r.save(tmp_path / "svi.nc")
    key = jax.random.key(4)
    expected = r.fitted.sample(key, 200)["w"]
    for loaded in (helmholtz.Result.load(path), helmholtz.Result.load(path, target=target)):
        assert type(loaded.fitted).__name__ == "FittedGuide"
        np.testing.assert_array_equal(loaded.fitted.sample(key, 200)["w"], expected)
    assert helmholtz.Result.load(path).estimates["is"].kind == "unbiased-Z estimate"
