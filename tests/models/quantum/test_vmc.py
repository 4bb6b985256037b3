"""Variational Monte Carlo: exact ansätze give exact energies with zero variance, the
Laplacian is exact, the engine's flows reach the exact harmonic-oscillator ground
state, the blocked error bar covers a correlated series, and failures say what failed."""

import math
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helmholtz.errors import OptionError
from helmholtz.models.quantum import ansatz, hamiltonian, mcmc, systems, vmc

pytestmark = pytest.mark.usefixtures("x64_module")


@pytest.mark.parametrize("dim", [1, 3])
def test_harmonic_oscillator_exact_ansatz_has_exact_energy_and_zero_variance(dim):
    ho = systems.HarmonicOscillator(dim=dim, omega=1.3)
    x = jax.random.normal(jax.random.key(0), (200, 1, dim)) * 2.0
    e = hamiltonian.batch_local_energy(ansatz.Gaussian(1.3), ho, x)
    np.testing.assert_allclose(e, 0.5 * dim * 1.3, rtol=0, atol=1e-12)
    off = hamiltonian.batch_local_energy(ansatz.Gaussian(1.0), ho, x)
    assert float(jnp.var(off)) > 1e-2           # a wrong width is not an eigenstate


def test_hydrogen_exact_ansatz_gives_minus_one_half_everywhere():
    h = systems.molecule("H")
    x = jax.random.normal(jax.random.key(1), (200, 1, 3)) * 3.0
    e = hamiltonian.batch_local_energy(ansatz.Hydrogenic(1.0), h, x)
    np.testing.assert_allclose(e, -0.5, rtol=0, atol=1e-12)


@pytest.mark.parametrize("flow", ["fisher-rao", "wasserstein", "wfr"])
def test_every_flow_reaches_the_oscillator_ground_state(flow):
    ho = systems.HarmonicOscillator(dim=3, omega=1.0)
    r = vmc.VMC(ansatz=ansatz.Gaussian(0.6), flow=flow, num_walkers=256, num_steps=100,
                burn_in=20, num_samples=50, learning_rate=0.1,
                max_norm=None).run(ho, jax.random.key(0))
    assert r.status.ok
    assert abs(float(jnp.exp(r.fitted.module.log_a)) - 1.0) < 1e-3
    assert abs(r.free_energy.value - 1.5) < 1e-5
    assert float(np.mean(r.stats["variance"])) < 1e-6
    assert r.trace["energy"][0] > 1.5 + 1e-2      # it started away from the ground state


def test_laplacian_matches_finite_differences():
    """A Slater–Jastrow-like log|ψ| with every term switched on (random Jastrow weights)."""
    sys_ = systems.molecule("LiH")
    jas = ansatz.Jastrow(jax.random.key(2), sys_, width=8)
    # give the zero-initialised last layers random weights so the learned terms count
    leaves, tree = jax.tree_util.tree_flatten(eqx.filter(jas, eqx.is_array))
    keys = jax.random.split(jax.random.key(3), len(leaves))
    leaves = [lf + 0.3 * jax.random.normal(k, lf.shape, lf.dtype) if lf.ndim == 2 else lf
              for lf, k in zip(leaves, keys, strict=True)]
    jas = eqx.combine(jax.tree_util.tree_unflatten(tree, leaves), jas)
    x = jax.random.normal(jax.random.key(4), (4, 3)) + jnp.asarray(sys_.nuclei)[
        jnp.asarray([0, 0, 0, 1])]
    exact, _ = eqx.filter_jit(hamiltonian.laplacian)(jas, x)
    fd = eqx.filter_jit(hamiltonian.laplacian_fd)(jas, x, h=1e-4)
    assert abs(float(exact - fd)) < 1e-5 * max(1.0, abs(float(exact)))


def test_cusps_keep_the_local_energy_finite_at_coalescence():
    """Kato's cusps: as an electron reaches a nucleus (−Z/r) or another electron (+1/r)
    the potential diverges and the kinetic term of the cusp Jastrow cancels it."""
    he = systems.molecule("He")
    jas = ansatz.Jastrow(jax.random.key(0), he, learned=False)
    e_loc = jax.jit(lambda y: hamiltonian.local_energy(jas, he, y))
    far = jnp.asarray([[0.0, 0.0, 0.0], [0.3, -0.8, 0.5]])
    nucleus, pair = [], []
    for r in (1e-3, 1e-5, 1e-7):
        at_nucleus = far.at[0].set(jnp.asarray([r, 0.0, 0.0]))
        assert abs(float(he.potential(at_nucleus))) > 1.0 / r       # V diverges ...
        nucleus.append(float(e_loc(at_nucleus)))
        pair.append(float(e_loc(jnp.asarray([[0.4, 0.2, -0.3], [0.4 + r, 0.2, -0.3]]))))
    for values in (nucleus, pair):                                    # ... E_loc converges
        assert all(math.isfinite(v) for v in values)
        # the limit is approached linearly in r (measured: steps 0.22 then 0.0022)
        assert abs(values[2] - values[1]) < 0.01 and abs(values[1] - values[0]) < 1.0, values
    # without the cusp terms (a Gaussian has zero slope at the nucleus) it diverges
    no_cusp = float(hamiltonian.local_energy(lambda y: -0.5 * jnp.sum(y ** 2), he,
                                             far.at[0].set(jnp.asarray([1e-7, 0.0, 0.0]))))
    assert abs(no_cusp) > 1e6


def test_blocking_covers_the_error_of_a_correlated_series():
    """AR(1) with φ = 0.9: the mean's standard error is σ/√n · √((1+φ)/(1−φ)), here
    √19 ≈ 4.4 times the naive one; blocking recovers it (its largest level errs high)."""
    rng = np.random.default_rng(0)
    phi, n = 0.9, 2 ** 16
    noise = rng.normal(size=n)
    x = np.empty(n)
    x[0] = noise[0] / math.sqrt(1 - phi ** 2)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    mean, se, warn = vmc.blocking(x)
    exact = math.sqrt(1 / (1 - phi ** 2)) / math.sqrt(n) * math.sqrt((1 + phi) / (1 - phi))
    assert 0.8 < se / exact < 1.35, (se, exact)   # the largest level: noisy, conservative
    assert not warn
    short_mean, short_se, short_warn = vmc.blocking(x[:40])
    assert short_warn                               # 40 values of τ ≈ 19: says so


def test_bad_systems_and_options_are_refused_with_the_reason():
    with pytest.raises(systems.SystemError, match="spin"):
        systems.molecule("He", spin=1)
    with pytest.raises(systems.SystemError, match="n_up"):
        systems.Molecule((2.0,), ((0, 0, 0),), 0, 2)
    with pytest.raises(systems.SystemError, match="charge"):
        systems.Molecule((1.0,), ((0, 0, 0),), 2, 1)
    with pytest.raises(systems.SystemError, match="positions"):
        systems.Molecule((1.0, 1.0), ((0, 0, 0),), 1, 1)
    with pytest.raises(systems.SystemError, match="unknown system"):
        systems.molecule("Xx2")
    with pytest.raises(OptionError, match="unknown flow"):
        vmc.VMC(flow="wasserstien")
    with pytest.raises(OptionError, match="needs nuclei"):
        vmc.VMC().run(systems.HarmonicOscillator(), jax.random.key(0))
    with pytest.raises(OptionError, match="does not apply to sampler 'mala'"):
        vmc.VMC(sampler="mala", scale_by_nuclear_distance=True)
    with pytest.raises(OptionError, match="scale_by_nuclear_distance needs nuclei"):
        vmc.VMC(ansatz=ansatz.Gaussian(1.0), scale_by_nuclear_distance=True).run(
            systems.HarmonicOscillator(), jax.random.key(0))
    with pytest.raises(OptionError, match="equilibration must be an integer"):
        vmc.VMC(equilibration=-1)


class _Holey(eqx.Module):
    """exp(−|x|²/2) except inside a ball where log|ψ| is NaN (a broken ansatz)."""

    log_a: jax.Array

    def __call__(self, x):
        v = -0.5 * jnp.exp(self.log_a) * jnp.sum(x ** 2)
        return jnp.where(jnp.sum((x - 1.2) ** 2) < 0.09, jnp.nan, v)


@dataclass(frozen=True)
class _HoleyOscillator(systems.HarmonicOscillator):
    """An oscillator whose potential is NaN inside a ball (a broken Hamiltonian)."""

    def potential(self, x):
        return jnp.where(jnp.sum((x - 0.8) ** 2) < 0.09, jnp.nan, super().potential(x))


def test_nan_walkers_are_reported_not_averaged():
    r = vmc.VMC(ansatz=ansatz.Gaussian(1.0), num_walkers=128, num_steps=5, burn_in=5,
                num_samples=20).run(_HoleyOscillator(dim=1), jax.random.key(0))
    assert r.status.code == "unreliable" and "non-finite" in r.status.message
    assert np.sum(r.stats["nan_walkers"]) > 0
    assert abs(r.free_energy.value - 0.5) < 1e-9          # the finite walkers are exact
    # an ansatz that is NaN almost everywhere is refused at the start, by name
    with pytest.raises(ValueError, match="not finite at 128 of 128 starting walkers"):
        vmc.VMC(ansatz=_Holey(jnp.asarray(jnp.nan)), num_walkers=128).run(
            systems.HarmonicOscillator(dim=1), jax.random.key(0))


def test_an_exploding_step_stops_training_and_keeps_the_last_good_parameters():
    ho = systems.HarmonicOscillator(dim=3)
    r = vmc.VMC(ansatz=ansatz.Gaussian(1.05), preconditioner=None, learning_rate=5.0,
                decay_steps=1e9, num_walkers=128, num_steps=30, burn_in=10, num_samples=10,
                max_energy_rise=0.5).run(ho, jax.random.key(1))
    assert r.status.code == "diverged" and "step" in r.status.message
    a = float(jnp.exp(r.fitted.module.log_a))
    # the kept parameters are those of an iteration whose energy was within 0.5 Ha of the best
    assert abs(r.free_energy.value - 1.5) < 0.5, (r.free_energy.value, a)


def test_interrupted_training_resumes_to_the_same_parameters(tmp_path, interrupted):
    ho = systems.HarmonicOscillator(dim=2)
    eng = vmc.VMC(ansatz=ansatz.Gaussian(0.6), num_walkers=64, num_steps=40, burn_in=4,
                  num_samples=8, learning_rate=0.05)
    whole = eng.run(ho, jax.random.key(5))
    path = tmp_path / "vmc.ckpt"
    interrupted(8, lambda: eng.run(ho, jax.random.key(5), checkpoint=path))
    resumed = eng.run(ho, jax.random.key(5), checkpoint=path)
    assert float(resumed.fitted.module.log_a) == float(whole.fitted.module.log_a)
    np.testing.assert_array_equal(resumed.trace["energy"], whole.trace["energy"])


_SHARDED = """
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
from helmholtz.models.quantum import ansatz, systems, vmc
r = vmc.VMC(ansatz=ansatz.Gaussian(0.6), num_walkers=64, num_steps=60, burn_in=10,
            num_samples=20, learning_rate=0.1, max_norm=None).run(
    systems.HarmonicOscillator(dim=3), jax.random.key(0))
json.dump({"devices": jax.device_count(), "a": float(jax.numpy.exp(r.fitted.module.log_a)),
           "e": r.free_energy.value, "e0": float(r.trace["energy"][0])}, sys.stdout)
"""


def test_walkers_shard_over_four_devices():
    """The walker axis is the population the driver shards: on four (virtual CPU)
    devices the oscillator trains to the same exact ground state as on one."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["devices"] == 4
    assert got["e0"] > 1.55                      # started away from the ground state ...
    # ... and reached it (measured: a = 1.0013 after 60 steps, E − 1.5 of order δa²)
    assert abs(got["a"] - 1.0) < 1e-2 and abs(got["e"] - 1.5) < 1e-4


@pytest.mark.parametrize("sampler", ["metropolis", "mala"])
def test_walkers_sample_psi_squared(sampler):
    """A fixed non-exact oscillator ansatz (a = 0.7): E(a) = (3/4)(a + 1/a) exactly; both
    samplers' blocked estimate agrees within 4 standard errors, and the error bar is
    honest (not absurdly wide)."""
    a = 0.7
    r = vmc.VMC(ansatz=ansatz.Gaussian(a), sampler=sampler, learning_rate=1e-12,
                num_walkers=256, num_steps=1, burn_in=30, num_samples=400,
                initial_step_size=0.5 if sampler == "metropolis" else 0.2).run(
        systems.HarmonicOscillator(dim=3), jax.random.key(2))
    exact = 0.75 * (a + 1 / a)
    assert abs(r.free_energy.value - exact) < 4 * r.free_energy.se, (r.free_energy, exact)
    assert r.free_energy.se < 2e-3
    assert 0.3 < float(np.mean(r.stats["acceptance"])) < 0.8


def test_the_energy_is_measured_on_walkers_equilibrated_to_the_final_wavefunction():
    """Walkers start as N(0, 1) per coordinate; |ψ|² of a = 4 is N(0, 1/8). With no burn-in
    the first sampling sweeps read far too low (E_loc = 6 − 7.5|x|²); the equilibration
    sweeps before sampling remove that, and the estimate meets E(a) = (3/4)(a + 1/a)."""
    a, exact = 4.0, 0.75 * (4.0 + 0.25)
    ho = systems.HarmonicOscillator(dim=3)
    runs = {n: vmc.VMC(ansatz=ansatz.Gaussian(a), learning_rate=1e-12, num_walkers=256,
                       num_steps=1, burn_in=0, equilibration=n, num_samples=20,
                       mcmc_steps=2).run(ho, jax.random.key(4)) for n in (0, 100)}
    settled, raw = runs[100].free_energy, runs[0].free_energy
    assert abs(settled.value - exact) < 4 * settled.se, (settled, exact)
    # without it the bias is plain (measured: −0.08 Ha against 3.19, se of the settled
    # estimate 0.03)
    assert raw.value < exact - 1.0


def test_moves_scaled_by_nuclear_distance_sample_psi_squared():
    """Metropolis with each electron's width scaled by its distance to the nucleus is an
    asymmetric proposal; with blackjax's Hastings correction it samples |ψ|² of a 1s
    function of exponent ζ = 0.8 on the H atom, E(ζ) = ζ²/2 − ζ = −0.48 (measured
    −0.48037 ± 0.00084; without the correction −0.534)."""
    z = 0.8
    r = vmc.VMC(ansatz=ansatz.Hydrogenic(z), learning_rate=1e-12, num_walkers=256,
                num_steps=1, burn_in=30, num_samples=400,
                scale_by_nuclear_distance=True).run(systems.molecule("H"), jax.random.key(5))
    exact = z * z / 2 - z
    assert abs(r.free_energy.value - exact) < 4 * r.free_energy.se, (r.free_energy, exact)
    assert r.free_energy.se < 2e-3
    x = np.array([[0.1, 0.0, 0.0], [3.0, 4.0, 0.0]])
    np.testing.assert_allclose(mcmc.nuclear_scale(jnp.asarray(x),
                                                  jnp.asarray([[0.0, 0.0, 0.0]])),
                               [[0.1], [5.0]])


def test_sr_solves_in_parameter_and_walker_space_agree():
    """(AᵀA + λI)⁻¹ g by Cholesky in parameter space and by Woodbury in walker space,
    against a dense solve."""
    k1, k2 = jax.random.split(jax.random.key(7))
    for walkers, params in ((50, 20), (20, 50)):
        a = jax.random.normal(k1, (walkers, params)) / np.sqrt(walkers)
        g = jax.random.normal(k2, (params,))
        dense = np.linalg.solve(np.asarray(a.T @ a) + 1e-3 * np.eye(params), np.asarray(g))
        np.testing.assert_allclose(np.asarray(vmc._sr_solve(a, g, 1e-3)), dense,
                                   rtol=1e-9, atol=1e-9)
