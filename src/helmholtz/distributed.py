"""One run over several processes and hosts, on JAX's own multi-process runtime.

Every process runs the same program (a GPU node each, a TPU host each, or several CPU
processes on one machine). :func:`initialize` starts ``jax.distributed``; from then on
``jax.devices()`` lists the devices of all processes, and the driver shards the chain
axis (``nuts``, ``hmc``, ``mala``, ``smc``'s replicates) and the particle axis (``ais``,
``reverse-ais``, ``bar``) over all of them. Between chunks the driver gathers each
process's shard (``process_allgather``), so every process ends with the whole state and
assembles the same Result; save it from one process (:func:`is_main`; the CLI does).
Progress bars show on process 0 only. helmholtz adds no scheduler and no messaging: the
coordinator, the collectives (gloo on CPUs, NCCL on GPUs) and the cluster detection are
JAX's.

Launch two processes on one machine (two simulated CPU devices each)::

    for i in 0 1; do
      JAX_COORDINATOR_ADDRESS=127.0.0.1:12345 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$i \\
      helmholtz run linear_gaussian --engine nuts --distributed --local-devices 2 &
    done; wait

Under SLURM (``srun``) or Open MPI (``mpirun``) JAX reads the process count and index
from the launcher's variables, and only the coordinator address may be needed.

The same seed gives the same draws with 2 processes of 2 devices as with 1 process of
4 devices for the chain-sharded engines (measured bit-identical for ``nuts`` and
``smc``); ``ais`` reduces over the population across processes, so its log Z agrees to
floating-point rounding, as between device counts in one process.
"""

from __future__ import annotations

import os

from helmholtz.errors import DistributedError

__all__ = ["initialize", "is_main", "process_index", "process_count", "DistributedError"]


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"{name} must be an integer, got {value!r}") from None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_count: int | None = None,
               timeout: float = 60.0) -> None:
    """Join this process to a multi-process run (``jax.distributed.initialize``).

    Call it first, before any JAX computation. Arguments left ``None`` come from
    ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``, or from JAX's detection of SLURM, Open MPI and TPU slices.
    ``local_device_count`` splits this process's CPU into that many devices (for tests
    and for trying a multi-device layout on one machine). On CPUs the collectives run
    over gloo. A process other than 0 that cannot reach the coordinator within
    ``timeout`` seconds raises :class:`DistributedError` (it does not hang); process 0,
    which hosts the coordinator, waits ``timeout`` seconds for the others, after which
    JAX itself ends it. Calling it again is a no-op.
    """
    import jax

    from helmholtz._runtime import backend_initialized

    if _joined():
        return
    if backend_initialized():
        raise DistributedError(
            "helmholtz.distributed.initialize() must run before any JAX computation in "
            "this process (JAX has already created its backend)")
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num_processes = num_processes if num_processes is not None else _env_int(
        "JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if local_device_count is not None:
        if int(local_device_count) < 1:
            raise DistributedError(f"local_device_count must be ≥ 1, got {local_device_count}")
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (f"{flags} --xla_force_host_platform_device_count="
                                   f"{int(local_device_count)}").strip()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU backend only
    if process_id not in (None, 0) and coordinator_address:
        _wait_for_coordinator(coordinator_address, timeout, process_id, num_processes)
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   initialization_timeout=max(1, int(timeout)))
    except Exception as err:  # JAX raises RuntimeError/ValueError with C++ status text
        where = coordinator_address or "(not set: JAX_COORDINATOR_ADDRESS)"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DistributedError(
            f"process {process_id} of {num_processes} could not join the run through the "
            f"coordinator at {where} within {timeout:g} s: {first[:300]}") from None


def _wait_for_coordinator(address: str, timeout: float, process_id, num_processes) -> None:
    """Connect to the coordinator's port until it answers or ``timeout`` passes.

    JAX's own client, when the coordinator never answers, aborts the whole process from
    C++ after its deadline (``DEADLINE_EXCEEDED`` and a stack dump, no Python exception);
    this check turns the common case, a coordinator that is not there, into one line.
    """
    import socket
    import time

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"the coordinator address must be host:port, got {address!r}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"process {process_id} of {num_processes} could not reach the "
                    f"coordinator at {address} within {timeout:g} s ({err.strerror or err}); "
                    "is process 0 running, and is JAX_COORDINATOR_ADDRESS its host:port?"
                    ) from None
            time.sleep(0.2)


def _joined() -> bool:
    try:
        from jax._src import distributed as state
    except ImportError:  # pragma: no cover - a jax without the module
        return False
    return getattr(getattr(state, "global_state", None), "client", None) is not None


def process_index() -> int:
    """This process's index (0 in a one-process run)."""
    import jax

    return jax.process_index()


def process_count() -> int:
    """How many processes the run spans (1 unless :func:`initialize` joined several)."""
    import jax

    return jax.process_count()


def is_main() -> bool:
    """Whether this is process 0, the one that prints, plots and saves."""
    return process_index() == 0
