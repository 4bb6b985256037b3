"""Result: the one output type of every engine, with arviz conversion and netCDF save/load."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["FreeEnergy", "Result", "Status", "compare"]

# What an estimate says about log Z (F = −log Z, in nats).
KINDS = ("exact", "unbiased-Z estimate", "estimate", "lower bound", "upper bound", "none")


class LazyArrays(Mapping):
    """A name → array mapping computed on first access (e.g. pointwise log likelihoods,
    which cost a pass over every draw and chains × draws × observations of memory, and
    which only arviz's loo/waic need)."""

    def __init__(self, fn, keys):
        self._fn, self._keys, self._data = fn, tuple(keys), None

    def _load(self):
        if self._data is None:
            self._data, self._fn = self._fn(), None
        return self._data

    def __getitem__(self, key):
        return self._load()[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


@dataclass(frozen=True)
class FreeEnergy:
    """A free-energy estimate F = −log Z in nats, with its standard error and kind.

    ``kind`` says what the estimate is for log Z: ``"lower bound"`` (an ELBO: log Z ≥
    −F), ``"upper bound"`` (e.g. reverse AIS), ``"unbiased-Z estimate"`` (AIS and SMC:
    E[Ẑ] = Z, so log Ẑ is biased low by about var/2), ``"estimate"`` (consistent but
    neither unbiased in Z nor a bound, e.g. Bennett's acceptance ratio), ``"exact"``, or
    ``"none"`` for an engine that does not estimate it (``value`` is then NaN and ``note``
    says why).
    """

    value: float
    se: float
    kind: str
    note: str = ""
    units: str = "nats"
    warning: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"FreeEnergy kind must be one of {KINDS}, got {self.kind!r}")

    @classmethod
    def none(cls, note: str) -> FreeEnergy:
        return cls(math.nan, math.nan, "none", note)

    @property
    def log_z(self) -> float:
        return -self.value

    def __str__(self):
        if self.kind == "none":
            return f"F: not estimated ({self.note})" if self.note else "F: not estimated"
        return f"F = {self.value:.4f} ± {self.se:.4f} ({self.kind} on log Z)"


@dataclass(frozen=True)
class Status:
    """How a run ended: ``code`` ``"ok"`` or what went wrong, with a readable message."""

    code: str = "ok"
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code == "ok"


@dataclass
class Result:
    """What every engine returns.

    Attributes
    ----------
    samples
        Constrained site values, each with leading ``(chain, draw)`` axes. Particles of
        a population engine count as draws of one chain.
    free_energy
        :class:`FreeEnergy` (F = −log Z with standard error and kind).
    log_weights
        ``(chain, draw)`` log importance weights for weighted engines, else ``None``.
    trace
        Objective per iteration (e.g. ``{"loss": ...}`` for SVI).
    stats
        Per-draw statistics, ``(chain, draw)``: ``diverging``, ``lp``,
        ``acceptance_rate``, ``step_size``, ``n_steps`` (gradient evaluations), ...
    log_likelihood, observed_data
        Pointwise log likelihood ``(chain, draw, *obs_shape)`` and data per observed site.
        Engines fill ``log_likelihood`` lazily: it is computed on first access.
    compile_seconds, run_seconds
        Time spent compiling (0 when every function came from the cache) and running.
    """

    engine: str
    model: str
    samples: dict[str, np.ndarray]
    free_energy: FreeEnergy
    log_weights: np.ndarray | None = None
    trace: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    log_likelihood: Mapping[str, np.ndarray] = field(default_factory=dict)
    observed_data: dict[str, np.ndarray] = field(default_factory=dict)
    compile_seconds: float = 0.0
    run_seconds: float = 0.0
    exact_log_z: float | None = None
    config: dict = field(default_factory=dict)
    estimates: dict = field(default_factory=dict)
    fitted: object = None
    status: Status = field(default_factory=Status)

    # ------------------------------------------------------------------ facts
    def raise_for_status(self) -> None:
        """Raise :class:`~helmholtz.errors.RunError` unless the status is ``ok``."""
        if not self.status.ok:
            from helmholtz.errors import RunError

            raise RunError(f"{self.engine} on {self.model}: {self.status.code}: "
                           f"{self.status.message}")

    @property
    def log_z(self) -> float:
        return self.free_energy.log_z

    @property
    def num_chains(self) -> int:
        return next(iter(self.samples.values())).shape[0]

    @property
    def num_draws(self) -> int:
        return next(iter(self.samples.values())).shape[1]

    @property
    def num_grad_evals(self) -> int:
        """Gradient evaluations spent, sampling and warmup (or optimisation) together."""
        return int(self.config.get("_num_grad_evals", 0))

    @property
    def num_divergent(self) -> int:
        d = self.stats.get("diverging")
        return 0 if d is None else int(np.sum(d))

    def __repr__(self):
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in self.samples.items())
        return (f"Result(engine={self.engine!r}, model={self.model!r}, samples=[{shapes}], "
                f"{self.free_energy})")

    # ------------------------------------------------------------------ arviz
    def to_arviz(self):
        """An ``arviz.InferenceData`` with posterior, sample_stats, log_likelihood and
        observed_data groups (the last two when the model has observed sites)."""
        import arviz as az

        stats = {k: np.asarray(v) for k, v in self.stats.items()}
        if self.log_weights is not None:
            stats["log_weight"] = np.asarray(self.log_weights)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idata = az.from_dict(
                posterior={k: np.asarray(v) for k, v in self.samples.items()},
                sample_stats=stats or None,
                log_likelihood={k: np.asarray(v) for k, v in self.log_likelihood.items()}
                or None,
                observed_data={k: np.asarray(v) for k, v in self.observed_data.items()}
                or None,
            )
        # arviz 0.23's from_dict drops its attrs argument; set them on each group
        for group in idata.groups():
            getattr(idata, group).attrs.update(
                {"engine": self.engine, "model": self.model, "inference_library": "helmholtz"})
        return idata

    def summary(self, **kwargs):
        """arviz's summary table of the posterior."""
        import arviz as az

        return az.summary(self.to_arviz(), **kwargs)

    def diagnostics(self) -> dict:
        """min bulk ESS and max R-hat over every scalar of every site (arviz).

        For importance-weighted results the ESS is Kish's (Σw)²/Σw² of the weights
        (arviz's ESS of the unweighted particles would ignore the weights).
        """
        import arviz as az

        if self.log_weights is not None:
            lw = np.asarray(self.log_weights, np.float64).ravel()
            w = np.exp(lw - lw.max())
            return {"min_ess": float(w.sum() ** 2 / (w**2).sum()), "max_rhat": math.nan}

        idata = self.to_arviz()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ess = az.ess(idata)
            rhat = az.rhat(idata) if self.num_chains > 1 else None
        min_ess = min(float(np.nanmin(ess[v].values)) for v in ess.data_vars)
        max_rhat = (max(float(np.nanmax(rhat[v].values)) for v in rhat.data_vars)
                    if rhat is not None else math.nan)
        return {"min_ess": min_ess, "max_rhat": max_rhat}

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> Path:
        """Write the result to one netCDF file (InferenceData plus helmholtz's own fields).

        The objective trace goes in an extra group ``objective``; free energy, timings and
        the engine configuration in the file's attributes. :meth:`load` reads it back.
        """
        import xarray as xr

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        idata = self.to_arviz()
        meta = {
            "engine": self.engine,
            "model": self.model,
            "free_energy": asdict(self.free_energy),
            "compile_seconds": self.compile_seconds,
            "run_seconds": self.run_seconds,
            "exact_log_z": self.exact_log_z,
            "config": _jsonable(self.config),
            "has_log_weights": self.log_weights is not None,
        }
        idata.posterior.attrs["helmholtz"] = json.dumps(meta)
        if self.trace:
            objective = xr.Dataset(
                {k: (("iteration",), np.asarray(v)) for k, v in self.trace.items()}
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                idata.add_groups(objective=objective)
        if path.exists():
            path.unlink()
        idata.to_netcdf(str(path))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Result:
        """Read a result written by :meth:`save`."""
        import arviz as az

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idata = az.from_netcdf(str(path))
        meta = json.loads(idata.posterior.attrs["helmholtz"])

        def group(name):
            if name not in idata.groups():
                return {}
            ds = getattr(idata, name)
            return {k: np.asarray(ds[k].values) for k in ds.data_vars}

        stats = group("sample_stats")
        log_weights = stats.pop("log_weight", None) if meta["has_log_weights"] else None
        return cls(
            engine=meta["engine"],
            model=meta["model"],
            samples=group("posterior"),
            free_energy=FreeEnergy(**meta["free_energy"]),
            log_weights=log_weights,
            trace=group("objective"),
            stats=stats,
            log_likelihood=group("log_likelihood"),
            observed_data=group("observed_data"),
            compile_seconds=meta["compile_seconds"],
            run_seconds=meta["run_seconds"],
            exact_log_z=meta["exact_log_z"],
            config=meta["config"],
        )


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool | int | float | str) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    return repr(obj)


def compare(results, *, print_table: bool = True):
    """Put several Results side by side: free energy ± se, error against the exact value
    where known, min ESS, max R-hat, divergences, gradient evaluations and seconds.

    Returns a ``pandas.DataFrame`` (one row per result) and prints it unless
    ``print_table=False``.
    """
    import pandas as pd

    rows = []
    for r in results:
        diag = r.diagnostics()
        fe = r.free_energy
        row = {
            "engine": r.engine,
            "F": fe.value,
            "se": fe.se,
            "kind": fe.kind,
        }
        if r.exact_log_z is not None:
            row["F_exact"] = -r.exact_log_z
            row["|ΔF|"] = abs(fe.value + r.exact_log_z) if fe.kind != "none" else math.nan
        row.update({
            "min_ess": diag["min_ess"],
            "max_rhat": diag["max_rhat"],
            "divergences": r.num_divergent,
            "grad_evals": r.num_grad_evals,
            "compile_s": r.compile_seconds,
            "run_s": r.run_seconds,
        })
        rows.append(row)
    df = pd.DataFrame(rows).set_index("engine")
    if print_table:
        with pd.option_context("display.width", 160, "display.max_columns", 20,
                               "display.float_format", "{:.4g}".format):
            print(df)
    return df
