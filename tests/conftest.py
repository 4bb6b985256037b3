"""Shared test setup: JAX's persistent compilation cache and shared engine settings."""

import os
from pathlib import Path

import jax
import pytest

_CACHE = Path(os.environ.get("HELMHOLTZ_JAX_CACHE", Path(__file__).resolve().parents[1]
                             / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture
def x64():
    """Float64 for one test (references computed in double precision)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
