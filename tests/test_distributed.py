"""Runs over several processes (helmholtz.distributed): local CPU processes talking over
gloo, each with simulated devices, against one process with as many devices."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

SCRIPT = r"""
import json, os, sys
nproc, pid, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
checkpoint = sys.argv[4] if len(sys.argv) > 4 else None
crash_after = int(sys.argv[5]) if len(sys.argv) > 5 else 0
import helmholtz, helmholtz.distributed
if nproc > 1:
    helmholtz.distributed.initialize(f"127.0.0.1:{port}", nproc, pid,
                                     local_device_count=4 // nproc, timeout=60)
import jax, numpy as np
from helmholtz.models import get
if crash_after:  # process 0 dies (SIGKILL) right after writing its crash_after-th chunk
    import signal
    from helmholtz.checkpoint import Checkpoint
    saved, original = [0], Checkpoint.save
    def save(self, *args):
        original(self, *args)
        saved[0] += 1
        if saved[0] == crash_after and jax.process_index() == 0:
            os.kill(os.getpid(), signal.SIGKILL)
    Checkpoint.save = save
target = get("linear_gaussian").target()
resumed = checkpoint is not None and os.path.exists(checkpoint)
nuts = helmholtz.infer(target, "nuts", seed=3, num_warmup=150, num_samples=100,
                       num_chains=4, checkpoint=checkpoint)
if checkpoint is not None:
    if helmholtz.distributed.is_main():
        print(json.dumps({"resumed": resumed, "left": os.path.exists(checkpoint),
                          "w": np.asarray(nuts.samples["w"]).tolist()}))
    sys.exit(0)
smc = helmholtz.infer(target, "smc", seed=3, num_particles=100, num_replicates=4)
svgd = helmholtz.infer(target, "svgd", seed=3, num_particles=64, num_steps=100)
if helmholtz.distributed.is_main():
    print(json.dumps({"devices": jax.device_count(), "processes": jax.process_count(),
                      "w": np.asarray(nuts.samples["w"]).tolist(),
                      "smc": smc.config["replicate_log_z"], "smc_log_z": smc.log_z,
                      "svgd": np.asarray(svgd.samples["w"]).tolist()}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(extra)
    return env


def _last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


@pytest.fixture(scope="module")
def one_and_two_processes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    script = folder / "run.py"
    script.write_text(SCRIPT)
    port = str(_free_port())
    flags = os.environ.get("XLA_FLAGS", "")
    two = [subprocess.Popen([sys.executable, str(script), "2", str(i), port],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env()) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in two]
    one = subprocess.run(
        [sys.executable, str(script), "1", "0", port], capture_output=True, text=True,
        timeout=600, env=_env(XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=4"))
    assert all(p.returncode == 0 for p in two), outs
    assert one.returncode == 0, one.stdout + one.stderr
    return _last_json(one.stdout), _last_json(outs[0])


def test_two_processes_give_the_draws_and_log_z_of_one(one_and_two_processes):
    """2 processes × 2 devices against 1 process × 4 devices, same seed: NUTS draws and
    every SMC replicate's log Z are bit-identical (the chain axis is sharded alike, and
    each chain's program is the same one-device program on either layout)."""
    one, two = one_and_two_processes
    assert (one["devices"], one["processes"]) == (4, 1)
    assert (two["devices"], two["processes"]) == (4, 2)
    np.testing.assert_array_equal(np.asarray(two["w"]), np.asarray(one["w"]))
    assert two["smc"] == one["smc"]
    # and the answer is right: the linear-Gaussian evidence is known in closed form
    from helmholtz.models import get

    assert abs(two["smc_log_z"] - get("linear_gaussian").log_z()) < 0.3


def test_svgd_interacts_across_shards_as_on_one_device(one_and_two_processes):
    """SVGD's O(N²) kernel sum over particles sharded on 4 devices (1 or 2 processes)
    gives the particles of the unsharded run here (float32 sums in another order)."""
    import helmholtz
    from helmholtz.models import get

    one, two = one_and_two_processes
    np.testing.assert_allclose(np.asarray(two["svgd"]), np.asarray(one["svgd"]), atol=1e-4)
    here = helmholtz.infer(get("linear_gaussian").target(), "svgd", seed=3, num_particles=64,
                           num_steps=100)
    np.testing.assert_allclose(np.asarray(one["svgd"]), here.samples["w"], atol=1e-3)


def test_a_missing_coordinator_fails_within_its_timeout_naming_the_address():
    port = _free_port()  # nothing listens there
    code = ("import helmholtz.distributed as d\n"
            f"d.initialize('127.0.0.1:{port}', 2, 1, timeout=3)\n")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=_env())
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("helmholtz.errors.DistributedError: process 1 of 2 could not "
                           f"reach the coordinator at 127.0.0.1:{port} within 3 s"), last


def test_a_run_whose_process_died_resumes_when_all_processes_restart(one_and_two_processes,
                                                                      tmp_path):
    """Process 0 is killed after writing its third chunk; process 1, left waiting in a
    collective, is stopped as a scheduler would. Both restart with the same checkpoint:
    the run resumes from the file and ends with the uninterrupted run's draws."""
    one, _ = one_and_two_processes
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    ckpt = str(tmp_path / "nuts.ckpt")

    def launch(*extra):
        port = str(_free_port())
        return [subprocess.Popen([sys.executable, str(script), "2", str(i), port, ckpt,
                                  *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env=_env()) for i in range(2)]

    first = launch("3")
    first[0].wait(timeout=600)
    assert first[0].returncode == -9  # SIGKILL
    first[1].kill()
    first[1].wait(timeout=60)
    assert os.path.exists(ckpt)
    again = launch()
    outs = [p.communicate(timeout=600)[0] for p in again]
    assert all(p.returncode == 0 for p in again), outs
    out = _last_json(outs[0])
    assert out["resumed"] and not out["left"]
    np.testing.assert_array_equal(np.asarray(out["w"]), np.asarray(one["w"]))
