"""The one place helmholtz calls arviz: the same functions on arviz 0.23 and arviz 1.x.

arviz 0.23 (Python 3.11, with jax 0.10) keeps a run in an ``arviz.InferenceData``;
arviz 1.x (Python ≥ 3.12, with jax 0.11–0.12; the packages arviz-base, arviz-stats and
arviz-plots) keeps it in an ``xarray.DataTree``. The differences that matter here:

================  ===============================  ===================================
                  arviz 0.23                       arviz 1.x
================  ===============================  ===================================
``from_dict``     one keyword per group            one dict ``{group: {name: array}}``
groups            ``idata.groups()`` (names)       ``dt.groups`` (paths ``"/posterior"``)
add a group       ``idata.add_groups(name=ds)``    ``dt[name] = xr.DataTree(ds)``
``ess``/``rhat``  an ``xarray.Dataset``            a ``DataTree`` (the posterior node)
``summary``       ``hdi_3%``/``hdi_97%`` columns   ``eti89_lb``/``eti89_ub`` columns
================  ===============================  ===================================

Both write the same netCDF layout (one netCDF group per arviz group), so a file written
under one stack opens under the other. Everything else in helmholtz goes through the
functions below and never imports arviz itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = [
    "ARVIZ_MAJOR", "from_dict", "add_group", "group_names", "get_group", "get_dataset",
    "to_netcdf", "from_netcdf", "ess", "rhat", "summary", "loo", "elpd_loo", "pareto_khat",
    "plot_trace",
]


def _az():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz 0.23 warns of its 1.x refactor on import
        import arviz as az
    return az


def _major() -> int:
    from importlib.metadata import version

    return int(version("arviz").split(".")[0])


ARVIZ_MAJOR: int = _major()
"""The installed arviz's major version: 0 (``InferenceData``) or 1 (``xarray.DataTree``)."""


def from_dict(groups: Mapping[str, Mapping[str, np.ndarray]], attrs: Mapping | None = None):
    """Build the installed arviz's container from ``{group: {name: array}}``.

    Groups whose dict is empty are left out. Arrays of the sampled groups (``posterior``,
    ``sample_stats``, ``log_likelihood``, ...) have leading ``(chain, draw)`` axes;
    ``observed_data`` and ``constant_data`` have none.

    Parameters
    ----------
    groups
        Group name → variable name → array.
    attrs
        Attributes set on every group (arviz 0.23's ``from_dict`` drops its own ``attrs``
        argument; arviz 1.x's expects one dict per group, so they are set here by hand).

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
    """
    az = _az()
    groups = {g: {k: np.asarray(v) for k, v in d.items()} for g, d in groups.items() if d}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = az.from_dict(groups) if ARVIZ_MAJOR >= 1 else az.from_dict(**groups)
    if attrs:
        for name in group_names(data):
            _node(data, name).attrs.update(dict(attrs))
    return data


def _node(data, name: str):
    """The group ``name`` as an object whose ``attrs`` can be set in place."""
    return data[name] if ARVIZ_MAJOR >= 1 else getattr(data, name)


def add_group(data, name: str, dataset) -> None:
    """Add (or replace) the group ``name`` holding the ``xarray.Dataset`` ``dataset``,
    in place. Its variables may have any dims (no ``chain``/``draw`` needed)."""
    if ARVIZ_MAJOR >= 1:
        import xarray as xr

        data[name] = xr.DataTree(dataset)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name in data.groups():
            setattr(data, name, dataset)
        else:
            data.add_groups({name: dataset})


def group_names(data) -> tuple[str, ...]:
    """The names of the groups, without the root: ``("posterior", "sample_stats", ...)``."""
    if ARVIZ_MAJOR >= 1:
        return tuple(p.strip("/") for p in data.groups if p.strip("/"))
    return tuple(data.groups())


def get_dataset(data, name: str):
    """The group ``name`` as an ``xarray.Dataset``, or ``None`` where there is none."""
    if name not in group_names(data):
        return None
    if ARVIZ_MAJOR >= 1:
        return data[name].to_dataset()
    return getattr(data, name)


def get_group(data, name: str) -> dict[str, np.ndarray]:
    """The group ``name`` as ``{variable: numpy array}`` (empty where there is none)."""
    ds = get_dataset(data, name)
    if ds is None:
        return {}
    return {str(k): np.asarray(ds[k].values) for k in ds.data_vars}


def to_netcdf(data, path: str | Path) -> Path:
    """Write the container to one netCDF file (one netCDF group per arviz group)."""
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.to_netcdf(str(path))
    return path


def from_netcdf(path: str | Path):
    """Read a netCDF file written by either arviz into the installed arviz's container."""
    az = _az()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = az.from_netcdf(str(path))
    if ARVIZ_MAJOR >= 1:
        data = data.load()  # read it all now, so that the file is not held open
    else:
        data.load()
    return data


def _dataset(out):
    """arviz 1.x returns the posterior node of a DataTree where 0.23 returns a Dataset."""
    return out.to_dataset() if hasattr(out, "to_dataset") else out


def ess(data, **kwargs):
    """Effective sample size per variable (``arviz.ess``), as an ``xarray.Dataset``."""
    az = _az()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _dataset(az.ess(data, **kwargs))


def rhat(data, **kwargs):
    """R-hat per variable (``arviz.rhat``), as an ``xarray.Dataset``."""
    az = _az()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _dataset(az.rhat(data, **kwargs))


def summary(data, **kwargs):
    """``arviz.summary`` as a ``pandas.DataFrame``.

    Both stacks give ``mean``, ``sd``, ``ess_bulk``, ``ess_tail``, ``r_hat``,
    ``mcse_mean`` and ``mcse_sd``; the credible interval columns differ (0.23:
    ``hdi_3%``/``hdi_97%``; 1.x: ``eti89_lb``/``eti89_ub``).
    """
    az = _az()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.summary(data, **kwargs)


def loo(data, **kwargs):
    """Pareto-smoothed importance-sampling leave-one-out cross-validation (``arviz.loo``).

    Returns arviz's own object (0.23: ``ELPDData``, a pandas Series with ``elpd_loo``;
    1.x: ``ELPDDataLOO`` with ``.elpd``); :func:`elpd_loo` reads the number from either.
    """
    az = _az()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.loo(data, **kwargs)


def elpd_loo(data, **kwargs) -> tuple[float, float]:
    """The PSIS-LOO expected log pointwise predictive density and its standard error.

    The two stacks agree on the estimate; arviz 1.x computes its standard error
    differently (it can differ from 0.23's by tens of percent on a few observations).
    """
    out = loo(data, **kwargs)
    if ARVIZ_MAJOR >= 1:
        return float(out.elpd), float(out.se)
    return float(out["elpd_loo"]), float(out["se"])


def pareto_khat(log_weights) -> float:
    """Pareto k̂ of importance weights given as logs (Vehtari et al. 2024, "Pareto smoothed
    importance sampling", JMLR 25): the shape of a generalised Pareto fitted to the
    largest weights. Above 0.7 the weights' variance is effectively infinite and neither
    the estimate nor its delta-method standard error can be trusted. (0.23:
    ``arviz.psislw``; 1.x: ``arviz_stats``' ``pareto_khat`` on the weights' right tail,
    which gives the same number; its ``psislw`` does not return k̂ in the same slot.)"""
    lw = np.asarray(log_weights, dtype=np.float64).ravel()
    lw = lw[np.isfinite(lw)]
    if lw.size < 10:
        return float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ARVIZ_MAJOR >= 1:
            from arviz_stats.base.array import array_stats

            return float(array_stats.pareto_khat(np.exp(lw - lw.max())[None, :],
                                                 tail="right"))
        return float(_az().psislw(lw - lw.max())[1])


def plot_trace(data, **kwargs):
    """arviz's trace plot (0.23: ``arviz.plot_trace``, matplotlib axes; 1.x:
    ``arviz_plots.plot_trace_dist``, a ``PlotCollection`` on the matplotlib backend)."""
    az = _az()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ARVIZ_MAJOR >= 1:
            kwargs.setdefault("backend", "matplotlib")
            return az.plot_trace_dist(data, **kwargs)
        return az.plot_trace(data, **kwargs)
