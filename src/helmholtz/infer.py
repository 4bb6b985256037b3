"""``infer``: the one entry point from a model (or Target, or zoo name) to a Result."""

from __future__ import annotations

from collections.abc import Callable

import jax

from helmholtz.engines.base import get_engine
from helmholtz.result import Result
from helmholtz.target import Target

__all__ = ["infer", "as_target"]


def as_target(model_or_target, model_args: tuple = (), model_kwargs: dict | None = None,
              *, seed: int = 0) -> Target:
    """A Target from a Target, a numpyro model function, or a zoo model name."""
    if isinstance(model_or_target, Target):
        if model_args or model_kwargs:
            return model_or_target.with_data(*model_args, **(model_kwargs or {}))
        return model_or_target
    if isinstance(model_or_target, str):
        from helmholtz import models

        entry = models.get(model_or_target)
        if model_args or model_kwargs:
            return Target.from_model(entry.model, *model_args, **(model_kwargs or {}))
        return entry.target(seed=seed)
    if isinstance(model_or_target, Callable):
        return Target.from_model(model_or_target, *model_args, **(model_kwargs or {}))
    raise TypeError(
        "infer expects a numpyro model function, a helmholtz.Target or a zoo model name, "
        f"got {type(model_or_target).__name__}"
    )


def _key(seed):
    if isinstance(seed, int) and not isinstance(seed, bool):
        return jax.random.key(seed)
    if isinstance(seed, jax.Array) and jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return seed
    if isinstance(seed, jax.Array) and seed.shape == (2,):  # legacy uint32 key
        return jax.random.wrap_key_data(seed)
    raise TypeError(f"seed must be an int or a jax random key, got {seed!r}")


def infer(model_or_target, engine="nuts", *, seed=0, model_args: tuple = (),
          model_kwargs: dict | None = None, progress_bar: bool = False,
          checkpoint=None, raise_on_error: bool = False, **options) -> Result:
    """Run one engine on one model and return its :class:`~helmholtz.Result`.

    Parameters
    ----------
    model_or_target
        A numpyro model function, a :class:`~helmholtz.Target`, or a zoo model name
        (``helmholtz list`` shows them).
    engine
        An engine name (``"nuts"``, ``"hmc"``, ``"mala"``, ``"svi"``, ...) or object.
    seed
        An int or a jax random key; the same seed gives the same draws, whatever the
        number of devices.
    model_args, model_kwargs
        Arguments of the model function (data).
    progress_bar
        Show progress bars (tqdm) for warmup, sampling and optimisation.
    checkpoint
        A file path or a :class:`~helmholtz.Checkpoint`: the state is written there
        between chunks of work; a run started with the same path resumes from it, a
        checkpoint written by a different run (model, data, options, seed, versions) is
        refused with a message naming the difference, and a finished run removes it.
    raise_on_error
        Raise :class:`~helmholtz.errors.RunError` when the run ends with a status other
        than ``ok`` (stopped early, NaN loss, an error bar that cannot be trusted)
        instead of returning the Result with that status.
    **options
        Engine options (``num_samples``, ``num_warmup``, ``num_chains``, ...); an unknown
        option raises an error that lists the valid ones.

    Examples
    --------
    >>> import helmholtz
    >>> result = helmholtz.infer("eight_schools_noncentered", "nuts", seed=0)  # doctest: +SKIP
    >>> result.to_arviz()  # doctest: +SKIP
    """
    eng = get_engine(engine, **options)
    target = as_target(model_or_target, model_args, model_kwargs)
    result = eng.run(target, _key(seed), progress_bar=progress_bar, checkpoint=checkpoint)
    if raise_on_error:
        result.raise_for_status()
    return result
