"""Helium to chemical accuracy in a test-sized run: a pretrained FermiNet trained by
standard VMC (Fisher–Rao with SR) against the exact −2.903724 Ha (Pekeris)."""

import jax
import numpy as np
import pytest

from helmholtz.models.quantum import systems, vmc
from helmholtz.result import Result

pytestmark = pytest.mark.usefixtures("x64_module")


@pytest.fixture(scope="module")
def helium():
    he = systems.molecule("He")
    r = vmc.VMC(ansatz="ferminet", ansatz_options={"pretrain_steps": 300}, num_walkers=256,
                num_steps=150, burn_in=50, num_samples=300).run(he, jax.random.key(0))
    return he, r


def test_helium_within_chemical_accuracy(helium):
    he, r = helium
    assert r.status.ok, r.status
    e, se = r.free_energy.value, r.free_energy.se
    assert se < 0.5e-3, se
    assert abs(e - he.reference_energy) < 1.6e-3, (e, se)
    # the variational principle: not below the exact energy beyond the error bar
    assert e > he.reference_energy - 3 * se
    # training lowered the variance by more than 10× from Hartree–Fock's start
    assert np.mean(r.stats["variance"]) < 0.1 * np.mean(r.trace["train_variance"][:5])


def test_saved_wavefunction_reloads_identically(helium, tmp_path):
    he, r = helium
    path = tmp_path / "he.h5"
    r.save(path)
    back = Result.load(path)
    x = np.asarray(r.samples["electrons"][0, :16])
    a = jax.vmap(r.fitted.module)(x)
    b = jax.vmap(back.fitted.module)(x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert back.free_energy.value == r.free_energy.value
    assert back.free_energy.units == "Hartree"


_LOAD = """
import sys, jax, numpy as np
jax.config.update("jax_enable_x64", True)
from helmholtz.result import Result
from helmholtz.models.quantum import ansatz, systems
r = Result.load(sys.argv[1])
x = np.asarray(r.samples["electrons"][0, :8])
print(repr(np.asarray(jax.vmap(r.fitted.module)(x)).tolist()))
# building the same ansatz afresh in this process still works after the load
fresh = ansatz.slater_jastrow(systems.molecule("He"), learned=False)
print(float(fresh(x[0])))
"""


def test_slater_jastrow_result_loads_in_a_fresh_process(tmp_path):
    """A saved Slater–Jastrow run reloads in a new process (Hartree–Fock is recomputed by
    pyscf under JAX's shape tracing there) to the same log|ψ|, and the process can still
    build a fresh Slater–Jastrow afterwards."""
    import subprocess
    import sys

    he = systems.molecule("He")
    r = vmc.VMC(ansatz_options={"learned": False}, num_walkers=32, num_steps=3, burn_in=3,
                num_samples=4).run(he, jax.random.key(3))
    path = tmp_path / "sj.h5"
    r.save(path)
    out = subprocess.run([sys.executable, "-c", _LOAD, str(path)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    x = np.asarray(r.samples["electrons"][0, :8])
    np.testing.assert_allclose(eval(lines[-2]), np.asarray(jax.vmap(r.fitted.module)(x)),
                               rtol=1e-12)
    assert np.isfinite(float(lines[-1]))
