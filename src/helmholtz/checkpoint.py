"""Checkpoints that cannot lie: resume only the run that wrote them.

A checkpoint file holds the state of an engine run after its last finished chunk, the
infos of its finished phases, and a fingerprint of everything that changes the result:
the model function (module, name and a hash of its source), the data and parameters (a
hash of the Target's array leaves and its static structure), the engine and every
option, the seed, and the jax / helmholtz versions. A run started with a checkpoint
whose fingerprint differs is refused with a message naming what differs, unless it asks
to overwrite. Writes are atomic (a temporary file, then ``os.replace``), and a finished
run removes its checkpoint unless asked to keep it.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from helmholtz.errors import CheckpointError

__all__ = ["Checkpoint", "as_checkpoint", "fingerprint"]

_FORMAT = 2


@dataclass(frozen=True)
class Checkpoint:
    """Where and how an engine run keeps its progress.

    Parameters
    ----------
    path
        The checkpoint file.
    overwrite
        Start afresh when the file was written by a different run (default: refuse).
    keep
        Keep the file once the run has finished (default: remove it).
    """

    path: str | os.PathLike
    overwrite: bool = False
    keep: bool = False

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def open(self, engine, target, rng_key):
        """The saved progress of this very run, or ``None`` to start afresh."""
        object.__setattr__(self, "_fingerprint", fingerprint(engine, target, rng_key))
        path = self.path
        if not path.exists():
            return None
        try:
            with open(path, "rb") as f:
                payload = pickle.load(f)
            old = payload["fingerprint"]
        except Exception as exc:
            if self.overwrite:
                return None
            raise CheckpointError(f"checkpoint {path} is not a readable helmholtz checkpoint "
                                  f"({type(exc).__name__}); remove it or pass another "
                                  "path") from None
        differs = [k for k in sorted(set(old) | set(self._fingerprint))
                   if old.get(k) != self._fingerprint.get(k)]
        if differs:
            if self.overwrite:
                return None
            raise CheckpointError(
                f"checkpoint {path} was written by a different run: "
                f"{_describe(differs, old, self._fingerprint)}. "
                "Remove it, pass another path, or overwrite it (Checkpoint(path, "
                "overwrite=True); CLI --overwrite-checkpoint).")
        return _Saved(payload["phase"], payload["done"], _from_host(payload["state"]),
                      _from_host(payload["infos"]), _from_host(payload["chunks"]))

    def save(self, phase: int, infos: dict, done: int, state, chunks: list) -> None:
        """Write the progress atomically: phase index, steps done in it, state, infos.

        In a run over several processes every process holds the whole state (the driver
        gathers it between chunks) and process 0 alone writes it; on a restart of all
        processes each reads that one file (on several hosts: a shared filesystem)."""
        if jax.process_index() != 0:
            return
        payload = {"format": _FORMAT, "fingerprint": self._fingerprint, "phase": phase,
                   "done": done, "state": _to_host(state), "infos": _to_host(infos),
                   "chunks": _to_host(chunks)}
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(payload, f)
        os.replace(tmp, path)

    def finish(self) -> None:
        """The run is complete: remove the file unless asked to keep it."""
        if not self.keep and jax.process_index() == 0:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Saved:
    phase: int
    done: int
    state: Any
    infos: dict
    chunks: list


def as_checkpoint(checkpoint) -> Checkpoint | None:
    if checkpoint is None or isinstance(checkpoint, Checkpoint):
        return checkpoint
    if isinstance(checkpoint, str | os.PathLike):
        return Checkpoint(checkpoint)
    raise TypeError(f"checkpoint must be a path or a helmholtz.Checkpoint, got "
                    f"{type(checkpoint).__name__}")


# --------------------------------------------------------------------------- fingerprint
def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
    return h.hexdigest()[:16]


def _array_digest(x) -> str:
    if jax.dtypes.issubdtype(getattr(x, "dtype", np.float64), jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    a = np.asarray(x)
    return _digest(a.dtype.str, a.shape, np.ascontiguousarray(a).tobytes())


def _model_source(model) -> str:
    fn = getattr(model, "func", model)  # functools.partial
    try:
        return _digest(inspect.getsource(fn))
    except (OSError, TypeError):
        return "unavailable"


def _leaf_digest(x, depth=0) -> str:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return _array_digest(x)
    if callable(x) and hasattr(x, "__qualname__"):
        # functions by name and by what their closures hold (optax's learning rates),
        # not by their address, which changes from one process to the next
        cells = getattr(x, "__closure__", None) or ()
        inner = [_value_digest(c.cell_contents, depth + 1) for c in cells
                 if depth < 4 and _has_contents(c)]
        return _digest(getattr(x, "__module__", ""), x.__qualname__, *inner)
    return repr(x)


def _has_contents(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018
        return True
    except ValueError:
        return False


def _value_digest(value, depth=0) -> str:
    leaves, treedef = jax.tree_util.tree_flatten(value)
    return _digest(treedef, *[_leaf_digest(x, depth) for x in leaves])


def fingerprint(engine, target, rng_key) -> dict:
    """What identifies a run: a dict of short digests, compared entry by entry."""
    from helmholtz import __version__

    model = target.model
    options = engine.options()
    name = getattr(model, "__qualname__", repr(model))
    return {
        "model": f"{getattr(model, '__module__', '?')}.{name}",
        "model source": _model_source(model),
        "data": _value_digest((target.model_args, target.params, target.observed)),
        "engine": engine.name,
        **{f"option {k}": _value_digest(v) for k, v in options.items()},
        "seed": _array_digest(rng_key),
        "processes": str(jax.process_count()),
        "jax version": jax.__version__,
        "helmholtz version": __version__,
    }


def _describe(differs: list[str], old: dict, new: dict) -> str:
    def say(k):
        if k in ("model", "engine", "jax version", "helmholtz version", "processes"):
            return f"{k} {old.get(k)!r} → {new.get(k)!r}"
        return f"{k} differs"

    return ", ".join(say(k) for k in differs)


# --------------------------------------------------------------------------- host copies
class _Key:
    """A JAX random key on the host (key data), restored as a typed key."""

    def __init__(self, data):
        self.data = data


def _to_host(tree):
    def one(x):
        if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return _Key(np.asarray(jax.random.key_data(x)))
        if isinstance(x, jax.Array):
            return np.asarray(x)
        return x

    return jax.tree_util.tree_map(one, tree)


def _from_host(tree):
    def one(x):
        if isinstance(x, _Key):
            return jax.random.wrap_key_data(jax.numpy.asarray(x.data))
        if isinstance(x, np.ndarray):
            return jax.numpy.asarray(x)
        return x

    return jax.tree_util.tree_map(one, tree, is_leaf=lambda x: isinstance(x, _Key))
