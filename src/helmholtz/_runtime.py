"""Process-wide JAX set-up done once, at ``import helmholtz``, before any engine runs.

Two things, each with a switch to turn it off:

* **An XLA flag that avoids a CPU deadlock on jaxlib < 0.11.** jaxlib 0.10.2 on CPU
  hangs on two independent batched ``jax.scipy.linalg.solve_triangular`` calls in one
  compiled function: the caller waits in ``block_until_ready`` while both Eigen pool
  threads wait inside the LAPACK trsm FFI's batch map (``/work/shared/repro/
  trsm_deadlock.py``; issue 10, item 3). Measured on 2 shared CPU cores, batch 256 of
  100×100, 20 calls: it hung (killed after 60 s) in 5 of 10 runs without the flag and in
  none of 10 runs with ``--xla_cpu_enable_concurrency_optimized_scheduler=false``
  (``--xla_cpu_multi_thread_eigen=false`` was reported not to help); jaxlib 0.12 does not
  hang. Its cost, in interleaved fresh processes on the same 2 shared cores, was within
  the noise: NUTS on a 500×10 logistic regression, 4 chains × (1000 + 1000), best of 5
  calls 1.05 s with it against 1.07 s without (median of 8 pairs; per-pair ratio 1.05,
  range 0.71–1.65; CPU seconds per call ratio 0.90); a float64 lensing forward-model loop
  0.98× and its gradient 0.93×. XLA reads ``XLA_FLAGS`` once, when
  the backend is initialised, so the flag is appended to ``os.environ["XLA_FLAGS"]``
  here if that has not happened yet and a :class:`RuntimeWarning` is issued if it has.
  ``HELMHOLTZ_XLA_DEADLOCK_WORKAROUND=0`` turns this off; a value of the same flag
  already in ``XLA_FLAGS`` (``=true`` included) is left as it is.
* **JAX's persistent compilation cache, on by default.** A second process that runs
  the same model and engine loads the compiled programs from disk instead of compiling
  them again. The folder is ``$HELMHOLTZ_CACHE_DIR``, else ``$XDG_CACHE_HOME/helmholtz/
  jax``, else ``~/.cache/helmholtz/jax``; ``HELMHOLTZ_COMPILATION_CACHE=0`` (or an empty
  ``HELMHOLTZ_CACHE_DIR``, or :func:`set_compilation_cache` ``(None)``) turns it off.
  A folder already set in ``jax.config`` (``jax_compilation_cache_dir``, e.g. from
  ``JAX_COMPILATION_CACHE_DIR``) is kept.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

DEADLOCK_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
"""The XLA flag appended on jaxlib < 0.11 (see the module docstring)."""

MIN_COMPILE_SECONDS = 0.5
"""Programs that compile faster than this are not written to the persistent cache.

JAX's default is 1 s. Measured (2 shared CPU cores, jaxlib 0.10.2): NUTS on a 500×10
logistic regression compiles 37 XLA programs in 59.6 s; the 10 that take ≥ 0.5 s hold
54.4 s (91 %), the 4 that take ≥ 1 s hold 50.0 s (84 %), and lowering the bar to 0.25 s
would add 7 entries for 2.6 s more. Entries are never evicted, so 0.5 s keeps what is
worth a disk read and leaves out the many small programs.
"""

_FLAG_NAME = DEADLOCK_FLAG.split("=")[0]
_OFF = ("0", "false", "no", "off")


def _switched_off(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in _OFF


def jaxlib_version() -> tuple[int, ...]:
    """The installed jaxlib's version as integers, e.g. ``(0, 10, 2)``; read without
    importing jax or initialising a backend."""
    import jaxlib.version

    return tuple(int(part) for part in jaxlib.version.__version_info__ if isinstance(part, int))


def backend_initialized() -> bool:
    """Whether JAX has created its backends (after which XLA_FLAGS is no longer read).

    Checked without creating them: no backend exists before jax is imported, and after
    that ``jax._src.xla_bridge.backends_are_initialized()`` (jax 0.10 and 0.12) says so.
    Importing some libraries creates them (``import blackjax`` does, on 0.10.2).
    """
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    check = getattr(xla_bridge, "backends_are_initialized", None)
    if check is not None:
        return bool(check())
    return bool(getattr(xla_bridge, "_backends", True))  # unknown jax: assume too late


def _cpu_backend_possible() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", os.environ.get("JAX_PLATFORM_NAME", ""))
    names = {name.strip().lower() for name in platforms.split(",") if name.strip()}
    return not names or "cpu" in names


def apply_xla_deadlock_workaround() -> str:
    """Append :data:`DEADLOCK_FLAG` to ``XLA_FLAGS`` where jaxlib needs it.

    Returns what was done: ``"applied"``, ``"not needed"`` (jaxlib ≥ 0.11, or no CPU
    backend), ``"disabled"`` (``HELMHOLTZ_XLA_DEADLOCK_WORKAROUND=0``), ``"user setting"``
    (the flag is in ``XLA_FLAGS`` already, with any value) or ``"too late"`` (the backend
    exists already; a :class:`RuntimeWarning` says what to do).
    """
    if _switched_off("HELMHOLTZ_XLA_DEADLOCK_WORKAROUND"):
        return "disabled"
    if jaxlib_version() >= (0, 11) or not _cpu_backend_possible():
        return "not needed"
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG_NAME in flags:
        return "user setting"
    if backend_initialized():
        warnings.warn(
            f"helmholtz was imported after JAX created its backend, too late to set "
            f"XLA_FLAGS={DEADLOCK_FLAG}, which avoids a deadlock of jaxlib "
            f"{'.'.join(map(str, jaxlib_version()))} on CPU (two batched triangular solves "
            f"in one compiled function can hang). Import helmholtz before running JAX code "
            f"(or importing blackjax), set that flag in XLA_FLAGS yourself, or upgrade to "
            f"jaxlib >= 0.11; HELMHOLTZ_XLA_DEADLOCK_WORKAROUND=0 silences this.",
            RuntimeWarning, stacklevel=3)
        return "too late"
    os.environ["XLA_FLAGS"] = f"{flags} {DEADLOCK_FLAG}".strip()
    return "applied"


def default_cache_dir() -> Path | None:
    """The persistent compilation cache folder helmholtz uses, or ``None`` when off.

    ``HELMHOLTZ_COMPILATION_CACHE=0`` → ``None``; else ``$HELMHOLTZ_CACHE_DIR`` (empty →
    ``None``; ``$HELMHOLTZ_JAX_CACHE``, the CLI's older name, is read the same way); else
    ``$XDG_CACHE_HOME/helmholtz/jax``, else ``~/.cache/helmholtz/jax``.
    """
    if _switched_off("HELMHOLTZ_COMPILATION_CACHE"):
        return None
    for variable in ("HELMHOLTZ_CACHE_DIR", "HELMHOLTZ_JAX_CACHE"):
        if variable in os.environ:
            folder = os.environ[variable].strip()
            return Path(folder).expanduser() if folder else None
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "helmholtz" / "jax"


def set_compilation_cache(path: str | os.PathLike | None,
                          min_compile_seconds: float = MIN_COMPILE_SECONDS) -> None:
    """Point JAX's persistent compilation cache at ``path``, or turn it off with ``None``.

    Parameters
    ----------
    path
        A folder (created on the first write), or ``None`` to stop reading and writing
        the cache in this process.
    min_compile_seconds
        Programs that compile faster are not written (:data:`MIN_COMPILE_SECONDS`).

    Examples
    --------
    >>> import helmholtz
    >>> helmholtz.set_compilation_cache(None)          # no disk cache in this process
    >>> helmholtz.set_compilation_cache("/tmp/jax")    # another folder
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()  # the cache object keeps its folder once created
    jax.config.update("jax_compilation_cache_dir", None if path is None else os.fspath(path))
    if path is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)


def enable_compilation_cache() -> Path | None:
    """Turn the persistent cache on at :func:`default_cache_dir` unless a folder is set in
    ``jax.config`` already or the cache is switched off; returns the folder it set."""
    import jax

    if jax.config.jax_compilation_cache_dir:  # the user (or a test) chose already
        return None
    folder = default_cache_dir()
    if folder is not None:
        set_compilation_cache(folder)
    return folder


def setup() -> None:
    """Everything :mod:`helmholtz` does to the process at import (the module docstring)."""
    apply_xla_deadlock_workaround()
    try:
        enable_compilation_cache()
    except Exception as err:  # a cache that cannot be set up must not break the import
        warnings.warn(f"helmholtz could not turn on JAX's persistent compilation cache: "
                      f"{err!r}", RuntimeWarning, stacklevel=3)
