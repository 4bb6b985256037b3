"""Shared test setup: JAX's persistent compilation cache and shared engine settings."""

import os
from pathlib import Path

import jax
import pytest

# the tests' cache is the repository's .jax_cache unless the environment names another;
# importing helmholtz turns it on (helmholtz._runtime) before any JAX backend exists.
# It is off unless HELMHOLTZ_COMPILATION_CACHE=1: on jaxlib 0.10.2 a full run of the suite
# once crashed (SIGSEGV) inside jax's put_executable_and_time, serialising a chunk program
# for the persistent cache; a fresh CI clone gains little from the cache (its folder starts
# empty, and compiled programs are shared within the process by the driver's own cache).
os.environ.setdefault("HELMHOLTZ_COMPILATION_CACHE", "0")
os.environ.setdefault("HELMHOLTZ_CACHE_DIR", os.environ.get(
    "HELMHOLTZ_JAX_CACHE", str(Path(__file__).resolve().parents[1] / ".jax_cache")))
import helmholtz  # noqa: E402, F401

jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture
def x64():
    """Float64 for one test (references computed in double precision)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture(scope="module")
def x64_module():
    """Float64 for a whole module (``pytestmark = pytest.mark.usefixtures("x64_module")``),
    so that its module-scoped fixtures compute in double precision too."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def interrupted(monkeypatch):
    """``interrupted(n, fn)``: call ``fn()`` with the driver's n-th timed call raising
    KeyboardInterrupt (a run killed part-way), which must propagate; afterwards the
    driver is whole again."""
    from helmholtz import driver

    def run(n, fn):
        calls = {"n": 0}
        real_run = driver.Timer.run

        def dying_run(self, f, *args):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real_run(self, f, *args)

        monkeypatch.setattr(driver.Timer, "run", dying_run)
        try:
            with pytest.raises(KeyboardInterrupt):
                fn()
        finally:
            monkeypatch.setattr(driver.Timer, "run", real_run)

    return run


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop compiled programs after each test module.

    Every CPU executable keeps about six memory mappings of JIT code; the suite compiles
    thousands of programs, and one process may hold at most ``vm.max_map_count`` (65 530)
    mappings: past about three quarters of the suite XLA's compiler crashed with a
    segmentation fault (measured: 8 000 mappings after the first module, 37 000 after a
    third of them). Tests share compiled functions within a module, never across."""
    yield
    import gc

    from helmholtz import driver
    driver.clear_cache()
    jax.clear_caches()
    gc.collect()
