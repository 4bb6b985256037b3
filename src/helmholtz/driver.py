"""The one driver every engine runs through.

It owns what no engine should repeat: the phases of a run in order, the ``lax.scan``
(or, for open-ended phases, ``lax.while_loop``) over steps, cut into chunks so a progress
bar can move and a checkpoint can be written between them, the ``vmap`` over chains, the
sharding of the chain or particle axis across devices, and a cache of compiled functions
keyed on the static part of their arguments (equinox's partition into arrays and the
rest), so a second run (new data of the same shapes, an engine holding other network
weights) neither re-traces nor recompiles.

Why not ``jax.jit``'s own cache: we want compile seconds apart from run seconds (ahead-of-
time ``lower().compile()`` gives both), compiler options on every loop, and a counter
that tests can read.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from helmholtz.checkpoint import Checkpoint, as_checkpoint

__all__ = ["compiled", "cpu_compiler_options", "run_engine", "run_phase", "chain_mesh",
           "Timer", "Run", "TRACE_COUNT", "clear_cache"]

_CACHE: OrderedDict[Any, Any] = OrderedDict()
CACHE_SIZE = 256
"""The most compiled programs the driver keeps (least recently used go first).

Each CPU executable holds about six memory mappings of JIT-compiled code, and Linux
refuses a process more than ``vm.max_map_count`` (65 530 by default) of them; an
unbounded cache in a long session (the test suite compiles thousands of programs)
ended in a segmentation fault inside XLA's compiler once that limit was reached."""
TRACE_COUNT = {"n": 0}  # incremented once per trace of a driver function (tests read it)
AHEAD = {"submitted": 0, "used": 0, "discarded": 0}
"""Programs compiled ahead (:func:`compile_ahead`), how many a run then called, and how
many were dropped because the run's arguments differed from the ones foreseen."""


def clear_cache():
    """Drop every compiled program the driver holds (``jax.clear_caches()`` drops JAX's)."""
    _CACHE.clear()


class Timer:
    """Accumulates compile and run seconds over the functions one engine run uses."""

    def __init__(self):
        self.compile_seconds = 0.0
        self.run_seconds = 0.0

    def run(self, fn, *args):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        self.run_seconds += time.perf_counter() - t0
        return out


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_compiler_options() -> dict[str, Any]:
    """XLA options for the functions helmholtz compiles on CPU (``{}`` elsewhere).

    XLA's CPU backend emits 256-bit vector code by default, even on CPUs with 512-bit
    registers (a guard against the clock drop of the first AVX-512 chips). On the
    float64 loops of this project's models 512-bit code is faster: on the AMD EPYC
    (AVX-512) that runs the benchmarks, one core, the lensing forward model in a jitted
    loop takes 0.08 ms instead of 0.12 ms (100×100 pixels) and 0.26 ms instead of 0.47 ms
    (supersampling 2), with bit-identical images. So where ``/proc/cpuinfo`` lists
    ``avx512f`` helmholtz asks XLA for 512-bit vectors. The environment variable
    ``HELMHOLTZ_CPU_VECTOR_WIDTH`` (128, 256 or 512) overrides the choice; 256 is XLA's
    own default. The option changes the order of vectorised reductions, so sums can
    differ from a plain ``jax.jit`` of the same function in the last bits.
    """
    if jax.default_backend() != "cpu":
        return {}
    width = os.environ.get("HELMHOLTZ_CPU_VECTOR_WIDTH", "").strip()
    if width:
        if width not in ("128", "256", "512"):
            raise ValueError(
                f"HELMHOLTZ_CPU_VECTOR_WIDTH must be 128, 256 or 512, got {width!r}")
        return {"xla_cpu_prefer_vector_width": int(width)}
    if "avx512f" in _cpu_flags():
        return {"xla_cpu_prefer_vector_width": 512}
    return {}


# --------------------------------------------------------------------------- compiling
class _Unhashable:
    """A static leaf that cannot be hashed, keyed by identity (never wrongly shared)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __hash__(self):
        return id(self.value)

    def __eq__(self, other):
        return isinstance(other, _Unhashable) and other.value is self.value


def _static_leaf(x):
    try:
        hash(x)
        return x
    except TypeError:
        return _Unhashable(x)


def _partition(args):
    """Array leaves (the inputs of the compiled function) and the static rest."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    mask = tuple(eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    dynamic = [x for x, m in zip(leaves, mask, strict=True) if m]
    static = tuple(None if m else _static_leaf(x) for x, m in zip(leaves, mask, strict=True))
    return dynamic, (treedef, mask, static)


def _combine(dynamic, static_part):
    treedef, mask, static = static_part
    it = iter(dynamic)
    leaves = [next(it) if m else (s.value if isinstance(s, _Unhashable) else s)
              for m, s in zip(mask, static, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


class Compiled:
    """An executable compiled for one static part of its arguments; call it with
    arguments of the same structure (their array leaves are its inputs)."""

    def __init__(self, exe, out_info=None):
        self._exe = exe
        self.out_info = out_info  # the outputs' shapes and dtypes, weak types included

    def __call__(self, *args):
        return self._exe(*_partition(args)[0])


class _Ahead:
    """A program being compiled on a worker thread (see :func:`compile_ahead`)."""

    def __init__(self, future, out_info, weak):
        self.future, self.out_info, self.weak = future, out_info, weak


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="helmholtz-compile")
    return _POOL


def _weak(dynamic) -> tuple[bool, ...]:
    return tuple(bool(getattr(x, "weak_type", False)) for x in dynamic)


def _cache_key(fn, args, key):
    dynamic, static_part = _partition(args)
    avals = tuple((tuple(np.shape(x)), str(x.dtype), getattr(x, "sharding", None))
                  for x in dynamic)
    options = cpu_compiler_options()
    full_key = (fn if key is None else key, static_part, avals, jax.device_count(),
                tuple(sorted(options.items())))
    return full_key, dynamic, static_part, options


def _trace(fn, dynamic, static_part):
    def flat(*dyn):
        TRACE_COUNT["n"] += 1
        return fn(*_combine(dyn, static_part))

    # named after what it runs, so JAX's compile logs and profiles say which program
    flat.__name__ = flat.__qualname__ = getattr(fn, "__name__", "flat")
    return jax.jit(flat).trace(*dynamic)


def _compile(lowered, options):
    t0 = time.perf_counter()
    exe = lowered.compile(options or None)
    return exe, time.perf_counter() - t0


def _store(full_key, entry):
    _CACHE[full_key] = entry
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return entry


def compiled(fn: Callable, *args, key=None, timer: Timer | None = None) -> Compiled:
    """Ahead-of-time compile ``fn(*args)`` once per static part of ``args``.

    The cache key is ``fn`` (or ``key``, for a closure whose behaviour the key fully
    describes), the static leaves of ``args`` (engines' and Targets' non-array parts),
    the shapes, dtypes and shardings of the array leaves, the device count and the
    compiler options. Array leaves (data, network weights, states) are inputs, so new
    values never recompile. The compile time is added to ``timer``.
    """
    full_key, dynamic, static_part, options = _cache_key(fn, args, key)
    hit = _CACHE.get(full_key)
    if _failed(hit):
        hit = None
    if isinstance(hit, _Ahead):  # compiled on a worker thread: wait for it
        try:
            exe, seconds = hit.future.result()
        except Exception:  # compiled below instead, where an error is the run's own
            exe = None
        if exe is not None and hit.weak == _weak(dynamic):
            AHEAD["used"] += 1
            if timer is not None:
                timer.compile_seconds += seconds
            _CACHE.move_to_end(full_key)
            return _store(full_key, Compiled(exe, hit.out_info))
        AHEAD["discarded"] += exe is not None  # traced for other weak types than these
        hit = None
    if hit is not None:
        _CACHE.move_to_end(full_key)
        return hit
    traced = _trace(fn, dynamic, static_part)
    exe, seconds = _compile(traced.lower(), options)
    if timer is not None:
        timer.compile_seconds += seconds
    return _store(full_key, Compiled(exe, traced.out_info))


def _failed(hit) -> bool:
    """A program compiled ahead whose worker was cancelled: compile it anew."""
    return isinstance(hit, _Ahead) and hit.future.cancelled()


def _cancel_ahead():
    """Drop the programs still waiting for a worker (a run that raised or was
    interrupted will not call them); the ones compiling finish."""
    for k, v in list(_CACHE.items()):
        if isinstance(v, _Ahead) and v.future.cancel():
            del _CACHE[k]


def compile_ahead(fn: Callable, *args, key=None):
    """Trace ``fn(*args)`` now and compile it on a worker thread; returns the shapes and
    dtypes of its outputs (``jax.ShapeDtypeStruct`` leaves), so that the program after it
    can be traced too before either has compiled. Array leaves of ``args`` may be
    ``jax.ShapeDtypeStruct`` (with the sharding the real arguments will have).

    Why: XLA:CPU compiles one program on one core, and compiling took most of a NUTS
    run's cold first call (its warmup and sampling programs 1.3–1.5 s each of 5.4 s on a
    quiet machine); side by side on two cores the compiles overlap, and the cold first
    call fell from 1.12× to 1.02–1.04× numpyro's wall time (benchmarks/README, issue 9).
    :func:`compiled` then waits for the worker's result. The numbers are those of a
    program compiled on the calling thread: the same lowered module, the same options.
    """
    full_key, dynamic, static_part, options = _cache_key(fn, args, key)
    hit = _CACHE.get(full_key)
    if hit is not None and not _failed(hit):
        _CACHE.move_to_end(full_key)
        return hit.out_info
    # traced and lowered here: both read JAX's configuration, whose context managers
    # (jax.enable_x64, jax.default_device) hold for this thread only, not the worker
    traced = _trace(fn, dynamic, static_part)
    lowered = traced.lower()
    AHEAD["submitted"] += 1
    _store(full_key, _Ahead(_pool().submit(_compile, lowered, options), traced.out_info,
                            _weak(dynamic)))
    return traced.out_info


class Run:
    """What one engine run shares: its timer, progress-bar switch and checkpoint."""

    def __init__(self, progress_bar: bool = False, checkpoint: Checkpoint | None = None):
        self.timer = Timer()
        self.progress_bar = progress_bar
        self.checkpoint = checkpoint
        self.ahead = None  # run_engine's: compiles the phases' programs from a start state

    def compile_ahead(self, state):
        """Compile the phases' programs ahead (:func:`_compile_phases_ahead`) from the
        start ``state`` or its shapes; once per run, and only where the driver can."""
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            ahead(state)

    def start_ahead(self, fn: Callable, *args, key=None):
        """For an engine's ``start`` whose last program is ``fn(*args)``: compile it ahead
        with ``args``' array leaves as shapes (``jax.ShapeDtypeStruct`` leaves allowed),
        and the phases' programs from its output shapes, before the start's first program
        runs, so that the start's other compiles overlap theirs."""
        if self.can_compile_ahead():
            self.compile_ahead(single_device_shapes(compile_ahead(fn, *args, key=key)))

    def can_compile_ahead(self) -> bool:
        """Whether this run will compile its phases ahead (:meth:`start_ahead`)."""
        return self.ahead is not None and _ahead_possible()

    def call(self, fn, *args, key=None):
        """``fn(*args)``, compiled once (see :func:`compiled`), timed."""
        return self.timer.run(compiled(fn, *args, key=key, timer=self.timer), *args)


# --------------------------------------------------------------------------- devices
def chain_mesh(num_chains: int) -> Mesh | None:
    """A 1-d mesh over the visible devices for the chain axis, or None for one device.

    The chain axis is sharded only when the chain count divides evenly; draws do not
    depend on the device count because every chain's keys come from its own chain key.
    """
    devices = jax.devices()
    if len(devices) < 2 or num_chains % len(devices) != 0:
        return None
    return Mesh(np.array(devices), ("chain",))


def _multiprocess() -> bool:
    """Whether this run spans several JAX processes (:mod:`helmholtz.distributed`)."""
    return jax.process_count() > 1


def _put(x, sharding):
    """``jax.device_put(x, sharding)``, also when the sharding spans the devices of
    several processes: every process holds the same value (the driver keeps states on
    the host between chunks), and each contributes its own devices' slices."""
    if not eqx.is_array(x):
        return x
    if not _multiprocess():
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):  # typed keys travel as their data
        return jax.random.wrap_key_data(_put(jax.random.key_data(x), sharding),
                                        impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _gathered(tree):
    """Arrays spread over several processes' devices, gathered so that every process
    holds all of them (``process_allgather``); unchanged in a one-process run."""
    if not _multiprocess():
        return tree
    from jax.experimental import multihost_utils

    def get(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(get(jax.random.key_data(x)),
                                            impl=jax.random.key_impl(x))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(get, tree)


def _replicated(tree, mesh):
    """Array leaves placed whole on every device of ``mesh`` (several processes only:
    one process passes them to the compiled function as they are)."""
    if not _multiprocess():
        return tree
    whole = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda x: _put(x, whole), tree)


def _particle_sharding(state, num: int):
    """Shard every leaf whose leading axis is the population across the devices (XLA
    partitions the population step, collectives included); replicate the rest."""
    devices = jax.devices()
    if len(devices) < 2 or num % len(devices) != 0:
        return state
    mesh = Mesh(np.array(devices), ("particle",))
    split = NamedSharding(mesh, PartitionSpec("particle"))
    whole = NamedSharding(mesh, PartitionSpec())

    def place(x):
        if not eqx.is_array(x):
            return x
        return _put(x, split if (x.ndim >= 1 and x.shape[0] == num) else whole)

    return jax.tree_util.tree_map(place, state)


def _sharded(fn, mesh):
    """``fn(engine, phase, target, state, keys, start, xs)`` with state and keys split
    over the chain axis of ``mesh`` (every device runs the same per-chain program)."""
    spec = PartitionSpec("chain")

    def wrapped(engine, phase, target, state, keys, start, xs):
        inner = jax.shard_map(
            lambda s, k: fn(engine, phase, target, s, k, start, xs),
            mesh=mesh, in_specs=(spec, spec), out_specs=(spec, spec), check_vma=False,
        )
        return inner(state, keys)

    return wrapped


# --------------------------------------------------------------------------- the loops
def _scan_one(engine, phase, target, state, key, start, xs):
    """One chain (or the population): step i uses ``fold_in(key, i)``."""
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]

    def body(s, inp):
        i, x = inp
        s, info = phase.step(engine, jax.random.fold_in(key, i), target, s, x)
        return s, (info if phase.collect is None else phase.collect(engine, info))

    return jax.lax.scan(body, state, (start + jnp.arange(n), xs))


def _while_one(engine, phase, target, state, key, start, stop):
    """One chain (or the population) of an open-ended phase, steps ``start`` until
    ``phase.until`` holds or ``stop``; returns the state and whether it is done."""
    def cond(c):
        i, s = c
        return (i < stop) & jnp.logical_not(phase.until(engine, s))

    def body(c):
        i, s = c
        s, _ = phase.step(engine, jax.random.fold_in(key, i), target, s, i)
        return i + 1, s

    _, state = jax.lax.while_loop(cond, body, (start, state))
    return state, phase.until(engine, state)


def _chunk(engine, phase, target, state, keys, start, xs):
    """A chunk of a phase: ``xs`` rows (a scan) or, for an open-ended phase, up to
    ``xs`` more steps (a while loop); vmapped over chains when ``phase.per_chain``."""
    if phase.until is None:
        one = lambda s, k: _scan_one(engine, phase, target, s, k, start, xs)
    else:
        one = lambda s, k: _while_one(engine, phase, target, s, k, start, start + xs)
    if not phase.per_chain:
        return one(state, keys)
    return jax.vmap(one)(state, keys)


def _chunk_split(engine, phase, target, state, rng_key, start, xs):
    """``_chunk`` of a per-chain phase on one device, the chains' keys split from the
    phase's key inside the program: the same keys as ``jax.random.split`` outside, without
    its own small program to compile on the calling thread (cold, 0.06 s alone and 0.4 s
    beside the compile workers, on the path to the first draw)."""
    num = jax.tree_util.tree_leaves(state)[0].shape[0]
    return _chunk(engine, phase, target, state, jax.random.split(rng_key, num), start, xs)


def _grouped(args, group, timer):
    """The chunk as one single-device program per group of ``group`` chains.

    XLA compiles a ``shard_map`` over several devices with its SPMD pipeline and a
    one-device program with another, and the two simplify the same HLO differently
    (measured: the centred eight schools' ``1/exp(u)``, u the log of tau, becomes
    ``exp(-u)`` on one device only; a 1-ulp change in the gradient that NUTS turns into
    different draws after three warmup steps). So every group runs the same one-device
    program (compiled once per device used; groups spread over the devices in blocks,
    dispatched asynchronously) and the outputs are gathered on the first device.
    Returns the callable that runs the chunk.
    """
    engine, phase, target, state, keys, start, xs = args
    devices = jax.local_devices()  # several processes: each runs every group
    num = jax.tree_util.tree_leaves(state)[0].shape[0] // group
    where = [devices[g * len(devices) // num] for g in range(num)]
    on = lambda d, tree: jax.tree_util.tree_map(
        lambda x: jax.device_put(x, d) if eqx.is_array(x) else x, tree)
    part = lambda tree, g: jax.tree_util.tree_map(lambda a: a[g * group:(g + 1) * group], tree)
    placed = [on(d, (engine, phase, target, part(state, g), part(keys, g), start, xs))
              for g, d in enumerate(where)]
    exes = [compiled(_chunk, *a, timer=timer) for a in placed]
    home = devices[0]
    gather = lambda *a: jnp.concatenate([jax.device_put(x, home) for x in a])
    return lambda *_: jax.tree_util.tree_map(
        gather, *[exe(*a) for exe, a in zip(exes, placed, strict=True)])


def _mesh_of(tree):
    """The mesh of the first leaf placed with a NamedSharding, or None."""
    for x in jax.tree_util.tree_leaves(tree):
        sharding = getattr(x, "sharding", None)
        if isinstance(sharding, NamedSharding):
            return sharding.mesh
    return None


def _chunk_size(num_steps: int, num_chunks: int) -> int:
    """Largest chunk ≤ ceil(num_steps/num_chunks) that divides num_steps (one compile)."""
    target = max(1, -(-num_steps // max(1, num_chunks)))
    for size in range(target, num_steps + 1):
        if num_steps % size == 0:
            return size
    return num_steps


def _static_phase(phase):
    # what the compiled chunk depends on: the step's functions, not the phase's name,
    # inputs, length or finish, so that phases stepping alike share one program
    return dataclasses.replace(phase, name="", inputs=None, num_steps=0, postfix=None,
                               finish=None, keep=None)


def _finish(engine, finish, per_chain, state):
    if per_chain:
        return jax.vmap(lambda s: finish(engine, s))(state)
    return finish(engine, state)


def _layout(engine, phase, state, rng_key, group=None):
    """Where a phase runs: the chunk function (sharded over a chain mesh when several
    devices share the chains, unless chains run in groups), a function that places the
    state on the devices, and the step key(s): one per chain for per-chain phases."""
    first = jax.tree_util.tree_leaves(state)[0]
    num_lead = first.shape[0] if first.ndim else 1  # a state may start with a scalar (em)
    if not phase.per_chain:
        place = ((lambda s: _particle_sharding(s, num_lead)) if engine.population
                 else (lambda s: s))
        return _chunk, place, rng_key
    mesh = chain_mesh(num_lead) if group is None else None
    if mesh is None and group is None:
        return _chunk_split, (lambda s: s), rng_key
    keys = jax.random.split(rng_key, num_lead)
    if mesh is None:
        return _chunk, (lambda s: s), keys
    where = NamedSharding(mesh, PartitionSpec("chain"))
    place = ((lambda s: jax.tree_util.tree_map(lambda x: _put(x, where), s))
             if _multiprocess() else (lambda s: jax.device_put(s, where)))
    return _sharded(_chunk, mesh), place, place(keys)


def _chunk_sizes(phases, chunked: bool) -> list[int]:
    """Steps per compiled chunk for each phase. Unchunked, a phase runs in one chunk,
    except that phases stepping alike (one compiled program) run in chunks of the
    greatest common divisor of their lengths, when that leaves at most 20 chunks: NUTS's
    warmup and sampling then compile once even when their lengths differ."""
    sizes = [_chunk_size(p.num_steps, 20 if chunked else 1) if p.num_steps else 0
             for p in phases]
    if chunked:
        return sizes
    groups: dict = {}
    for i, p in enumerate(phases):
        if p.num_steps and p.until is None:
            groups.setdefault(_static_phase(p), []).append(i)
    for members in groups.values():
        lengths = [phases[i].num_steps for i in members]
        g = math.gcd(*lengths)
        if len(members) > 1 and 20 * g >= max(lengths):
            for i in members:
                sizes[i] = g
    return sizes


def run_phase(engine, phase, target, state, rng_key, run: Run, infos: dict, *,
              size: int | None = None, resume=None, save=None):
    """Run one phase; returns ``(state, info)`` with the kept info stacked along the step
    axis (axis 1 for per-chain phases; ``None`` for open-ended phases and empty ones).

    ``size`` is the steps per compiled chunk (default: all at once, or about 20 chunks
    with a progress bar or a checkpoint). ``resume`` is ``(steps done, state, info
    chunks)`` from a checkpoint; ``save(done, state, chunks)`` is called after every
    chunk.
    """
    n = phase.num_steps
    xs = _inputs(phase, infos)
    group = getattr(engine, "chain_group_size", None) if phase.per_chain else None
    chunk_fn, place, keys = _layout(engine, phase, state, rng_key, group)
    sharded = chunk_fn not in (_chunk, _chunk_split)
    if size is None:
        size = _chunk_sizes([phase], bool(run.progress_bar or run.checkpoint))[0]
    done, chunks = (0, []) if resume is None else (resume[0], resume[2])
    state = state if resume is None else resume[1]
    static = _static_phase(phase)
    bar = _progress(f"{engine.name} {phase.name}", n, done, run.progress_bar and n > 0)
    try:
        while done < n:
            state = place(state)
            args = _chunk_args(engine, static, target, state, keys, done, size, xs)
            if _multiprocess() and group is None:  # the rest, whole on every device
                mesh = _mesh_of(state)
                if mesh is not None:
                    args = (*_replicated((engine, static, target), mesh), state, keys,
                            *_replicated(args[5:], mesh))  # start, rows
            exe = (_grouped(args, group, run.timer) if group is not None else
                   compiled(chunk_fn, *args, key=("sharded-chunk",) if sharded else None,
                            timer=run.timer))
            state, out = _gathered(run.timer.run(exe, *args))
            done += size
            if phase.until is None:
                chunks.append(out if phase.keep is None else {k: out[k] for k in phase.keep})
            elif bool(np.all(np.asarray(out))):
                done = n
            _show(bar, done, phase, engine, state, None if phase.until else out)
            if save is not None:
                save(done, state, chunks)
    finally:
        if bar is not None:
            bar.close()
    if phase.finish is not None:
        state = run.call(_finish, engine, phase.finish, phase.per_chain, state)
    if not chunks:
        return state, None
    axis = 1 if phase.per_chain else 0
    return state, jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis=axis), *chunks)


def _inputs(phase, infos):
    xs = phase.inputs(infos) if callable(phase.inputs) else phase.inputs
    # the step indices stay in numpy, sliced on the host and put on the device per chunk:
    # jnp.arange, slicing a device array and jnp.int32 are each a program to compile
    # (cold, 0.01-0.1 s each, on the path to the first draw)
    if xs is None:
        return np.arange(phase.num_steps, dtype=np.int32)
    return jax.tree_util.tree_map(jnp.asarray, xs)


def _chunk_args(engine, static, target, state, keys, done, size, xs):
    """The arguments of the chunk program for steps ``done`` to ``done + size``."""
    rows = (np.int32(size) if static.until is not None else
            jax.tree_util.tree_map(lambda x, s=done: x[s:s + size], xs))
    return (engine, static, target, state, keys,
            *jax.device_put((np.int32(done), rows)))


def _ahead_possible() -> bool:
    return (os.environ.get("HELMHOLTZ_COMPILE_AHEAD", "1") != "0"
            and jax.device_count() == 1 and not _multiprocess())


def single_device_shapes(tree):
    """``jax.ShapeDtypeStruct`` leaves (weak types kept) placed on the one device: what
    the outputs of a compiled program will be, for :func:`compile_ahead`."""
    where = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type,
                                       sharding=where), tree)


def _compile_phases_ahead(engine, phases, target, state, keys, sizes):
    """Trace every phase's chunk program (and its ``finish``) in order, each from the
    output shapes of the one before, and compile them side by side on worker threads
    (:func:`compile_ahead`) while the first phase runs.

    Only where the programs' arguments can be foreseen: one device in one process, no
    chain groups, inputs that do not depend on earlier phases' infos. It stops at the
    first phase it cannot foresee; the driver compiles the rest as it comes to them.
    ``HELMHOLTZ_COMPILE_AHEAD=0`` turns it off.
    """
    if not _ahead_possible():
        return
    if sum(1 for p in phases if p.num_steps) + sum(1 for p in phases if p.finish) < 2:
        return  # one program: nothing to compile beside it
    try:
        for i, phase in enumerate(phases):
            if callable(phase.inputs) or (phase.per_chain
                                          and getattr(engine, "chain_group_size", None)):
                return
            static = _static_phase(phase)
            if phase.num_steps:
                chunk_fn, _, phase_keys = _layout(engine, phase, state, keys[i])
                if chunk_fn not in (_chunk, _chunk_split):
                    return
                args = _chunk_args(engine, static, target, state, phase_keys, 0, sizes[i],
                                   _inputs(phase, {}))
                state = single_device_shapes(compile_ahead(chunk_fn, *args)[0])
            if phase.finish is not None:
                state = single_device_shapes(compile_ahead(_finish, engine, phase.finish,
                                                           phase.per_chain, state))
    except Exception:  # noqa: BLE001 - only a head start: the run itself reports errors
        return


def _show(bar, done, phase, engine, state, info):
    if bar is None:
        return
    bar.n = done
    if phase.postfix is not None:
        bar.set_postfix(phase.postfix(engine, state, info), refresh=False)
    bar.refresh()


def run_engine(engine, target, rng_key, *, progress_bar: bool = False, checkpoint=None):
    """Run an engine's phases in order and return its Result.

    The key is split into one key for the start and one per phase (per-chain phases
    split theirs into one key per chain). With ``checkpoint`` the state is written after
    every chunk; a run started with the same checkpoint resumes where the last one
    stopped, and a finished run removes it (unless the checkpoint says ``keep``).
    """
    if target.dim == 0 and not getattr(engine, "fits_params", False):
        from helmholtz.errors import ModelError

        raise ModelError(
            f"model '{target.name}' has no continuous latent sites for {engine.name} to "
            "sample" + (f" (discrete sites {list(target.enumerated_names)} are summed out)"
                        if target.enumerated_names else "")
            + f"; its numpyro.param sites {[p.name for p in target.param_sites]} are "
            "fitted by the em engine")
    ckpt = as_checkpoint(checkpoint)
    run = Run(progress_bar, ckpt)
    looped = engine.loop_engine()
    phases = engine.phases(target)
    sizes = _chunk_sizes(phases, bool(progress_bar or ckpt))
    keys = _run_keys(rng_key, len(phases))
    saved = ckpt.open(engine, target, rng_key) if ckpt is not None else None
    try:
        return _run_phases(engine, target, rng_key, run, looped, phases, sizes, keys, saved)
    except BaseException:
        _cancel_ahead()  # an error or Ctrl-C: its queued compiles are dropped
        raise


@functools.partial(jax.jit, static_argnums=1)
def _run_keys(rng_key, num_phases: int) -> tuple:
    """A run's keys, as one small program: the start's, one per phase (``split``), and
    the result's (``fold_in`` by ``num_phases + 1``). Split and then indexed outside a
    program, they were four programs to compile (cold: 0.15 s on the calling thread)."""
    keys = jax.random.split(rng_key, 1 + num_phases)
    return (*keys, jax.random.fold_in(rng_key, num_phases + 1))


def _run_phases(engine, target, rng_key, run, looped, phases, sizes, keys, saved):
    ckpt = run.checkpoint
    if saved is not None and saved.phase > 0:
        state, infos = saved.state, saved.infos
    else:
        if saved is None:
            run.ahead = functools.partial(_compile_phases_ahead, looped, phases, target,
                                          keys=keys[1:-1], sizes=sizes)
        state, infos = engine.start(keys[0], target, run), {}
        run.compile_ahead(state)
    for i, phase in enumerate(phases):
        if saved is not None and i < saved.phase:
            continue
        resume = None
        if saved is not None and i == saved.phase and saved.done > 0:
            resume = (saved.done, saved.state, saved.chunks)
        save = None if ckpt is None else functools.partial(ckpt.save, i, infos)
        state, infos[phase.name] = run_phase(looped, phase, target, state, keys[1 + i], run,
                                             infos, size=sizes[i], resume=resume, save=save)
        if ckpt is not None:
            ckpt.save(i + 1, infos, 0, state, [])
    result = engine.result(keys[-1], target, state, infos, run)
    if ckpt is not None:
        ckpt.finish()
    return result


def _progress(label, total, initial, enabled):
    if not enabled or jax.process_index() != 0:  # one bar, from the first process
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=label, leave=False, dynamic_ncols=True)
