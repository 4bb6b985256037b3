"""Pictures of Results: trace plots, objective curves and side-by-side engine comparisons.

Drawn with matplotlib by hand rather than with arviz's trace plot (which works here, see
:func:`helmholtz._arviz.plot_trace` for arviz 0.23 and 1.x alike)
because engines that return importance-weighted particles need weighted marginals, and a
site with thousands of components (a pixelated source) must be cut to a few lines.

With ``path=None`` the figures come from ``pyplot`` (so notebooks and ``plt.show()``
display them); with a ``path`` they are plain :class:`matplotlib.figure.Figure` objects
written to that file and never registered with ``pyplot``, so no GUI backend is touched.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["plot_trace", "plot_loss", "plot_compare", "scalar_components", "draw_weights"]

_MAX_COMPONENTS = 8  # lines per vector site in a trace panel


def scalar_components(samples: dict, limit: int | None = None, *,
                      skip_constant: bool = False) -> list[tuple[str, np.ndarray]]:
    """Split sites into scalar components ``("theta[3]", (chain, draw) array)``.

    Sites keep their order; components of a site come in C order. At most ``limit``
    components are returned (all when ``None``). With ``skip_constant`` components that
    take one value in every draw (the unit diagonal of a correlation matrix, say) are
    left out.
    """
    out = []
    for name, value in samples.items():
        value = np.asarray(value)
        shape = value.shape[2:]
        flat = value.reshape(value.shape[:2] + (-1,))
        for i in range(flat.shape[-1]):
            if limit is not None and len(out) >= limit:
                return out
            if skip_constant and flat[..., i].size and np.all(flat[..., i] == flat[0, 0, i]):
                continue
            index = ",".join(map(str, np.unravel_index(i, shape)))
            label = f"{name}[{index}]" if shape else name
            out.append((label, flat[..., i]))
    return out


def draw_weights(result) -> np.ndarray | None:
    """Normalised importance weights ``(chain, draw)`` of a weighted Result, else ``None``."""
    if result.log_weights is None:
        return None
    lw = np.asarray(result.log_weights, dtype=np.float64)
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    w = np.exp(lw - np.max(lw))
    return w / np.sum(w)


def _figure(path, figsize):
    if path is None:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize, layout="constrained")
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _finish(fig, path, dpi=110):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig


def _bins(values: np.ndarray, per_line: int) -> np.ndarray:
    """Shared bin edges over the central 99.8% of ``values``; Rice's rule 2 n^(1/3) bins
    for the ``per_line`` draws behind each histogram, between 10 and 50."""
    num = int(np.clip(2 * per_line ** (1 / 3), 10, 50))
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.linspace(-1.0, 1.0, num + 1)
    lo, hi = np.quantile(finite, [0.001, 0.999])
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, num + 1)


def _density(ax, values, weights, bins, **kwargs):
    ok = np.isfinite(values)
    if weights is not None:
        weights = weights[ok]
        if not np.sum(weights) > 0:
            return
    counts, edges = np.histogram(values[ok], bins=bins, weights=weights, density=True)
    ax.stairs(counts, edges, **kwargs)


def _site_lines(value: np.ndarray):
    """(chain, draw, k) view of a site, cut to the first few components, and a note."""
    value = np.asarray(value, dtype=np.float64)
    size = math.prod(value.shape[2:])
    flat = value.reshape(value.shape[:2] + (size,))
    note = f" (first {_MAX_COMPONENTS} of {size})" if size > _MAX_COMPONENTS else ""
    return flat[..., :_MAX_COMPONENTS], note


def _divergence_ticks(ax, diverging, num_chains, num_draws):
    """Tick the draws where any chain diverged under the trace."""
    if diverging is None or not np.any(diverging):
        return
    idx = np.nonzero(np.asarray(diverging).reshape(num_chains, num_draws).any(0))[0]
    ymin = ax.get_ylim()[0]
    ax.plot(idx, np.full(idx.shape, ymin), "|", color="black", ms=8,
            label=f"{int(np.sum(diverging))} divergent")
    ax.legend(loc="upper right", fontsize=8, frameon=False)


def plot_trace(result, path=None, max_vars: int = 6):
    """Marginal densities (left) and traces (right) of the first ``max_vars`` sites.

    A scalar site gets one colour per chain; a vector site one colour per component (its
    first 8), chains pooled on the left. Divergent transitions are ticked under the
    trace; importance-weighted particles get weighted histograms.

    Parameters
    ----------
    result
        A :class:`helmholtz.Result`.
    path
        Where to write the PNG; ``None`` returns a pyplot figure without saving.
    max_vars
        How many sites to draw (in the Result's order).

    Returns
    -------
    matplotlib.figure.Figure
    """
    names = list(result.samples)[:max_vars]
    if not names:
        raise ValueError(f"result of engine '{result.engine}' has no samples to plot")
    fig = _figure(path, (11.0, 0.6 + 2.0 * max(1, len(names))))
    axes = fig.subplots(len(names), 2, squeeze=False, width_ratios=[1, 1.6])
    weights = draw_weights(result)
    diverging = result.stats.get("diverging")
    colors = _colors()
    for row, name in enumerate(names):
        lines, note = _site_lines(result.samples[name])
        num_chains, num_draws, k = lines.shape
        ax_d, ax_t = axes[row]
        if k == 1:  # one colour per chain, bins shared so that chains compare
            bins = _bins(lines, num_draws)
            for c in range(num_chains):
                w = None if weights is None else weights[c]
                _density(ax_d, lines[c, :, 0], w, bins, color=colors[c % len(colors)], lw=1.2)
        else:  # one colour per component, chains pooled, bins of its own
            w = None if weights is None else weights.reshape(-1)
            for j in range(k):
                x = lines[..., j].reshape(-1)
                _density(ax_d, x, w, _bins(x, x.size), color=colors[j % len(colors)], lw=1.0)
        draws = np.arange(num_draws)
        for c in range(num_chains):
            for j in range(k):
                color = colors[(c if k == 1 else j) % len(colors)]
                ax_t.plot(draws, lines[c, :, j], color=color, lw=0.6,
                          alpha=0.8 if k == 1 else 0.5)
        _divergence_ticks(ax_t, diverging, num_chains, num_draws)
        ax_d.set_title(f"{name}{note}", fontsize=10, loc="left")
        ax_d.set_yticks([])
        ax_t.set_title(f"{name}{note}", fontsize=10, loc="left")
        ax_t.set_xlim(0, max(1, num_draws - 1))
        ax_t.margins(x=0)
    axes[-1, 0].set_xlabel("value" + ("  (importance-weighted)" if weights is not None else ""))
    axes[-1, 1].set_xlabel("particle" if weights is not None else "draw")
    chains = f"{result.num_chains} chain{'s' if result.num_chains > 1 else ''}"
    fig.suptitle(f"{result.model} — {result.engine} ({chains} × {result.num_draws} draws)   "
                 f"{result.free_energy}{_status_note(result)}", fontsize=11)
    return _finish(fig, path)


def _running_median(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or y.size < 3:
        return y
    pad = window // 2
    padded = np.pad(y, pad, mode="edge")
    view = np.lib.stride_tricks.sliding_window_view(padded, 2 * pad + 1)
    return np.median(view, axis=-1)


def plot_loss(result, path=None, keys=None):
    """The objective trace(s) of an optimising engine (e.g. SVI's loss = −ELBO per step).

    The raw curve is drawn thin with a running median on top; the y range follows the
    second half of the run so that the first steps do not flatten the rest. For the loss
    the exact free energy F = −log Z (which −ELBO bounds from above) is a dashed line when
    the model knows it.

    Returns
    -------
    matplotlib.figure.Figure
    """
    keys = [k for k in (keys or list(result.trace)) if k in result.trace][:3]
    if not keys:
        raise ValueError(f"result of engine '{result.engine}' has no objective trace to plot")
    fig = _figure(path, (9.0, 0.8 + 3.0 * len(keys)))
    axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
    exact = None if result.exact_log_z is None else -float(result.exact_log_z)
    for ax, key in zip(axes, keys, strict=True):
        y = np.asarray(result.trace[key], dtype=np.float64).reshape(len(result.trace[key]), -1)
        y = y.mean(axis=1)  # several chains or particles: their mean
        steps = np.arange(y.size)
        smooth = _running_median(y, max(1, y.size // 50))
        ax.plot(steps, y, color="C0", lw=0.5, alpha=0.35, label=key)
        ax.plot(steps, smooth, color="C0", lw=1.6, label=f"{key} (running median)")
        tail = y[y.size // 2:]
        tail = tail[np.isfinite(tail)]
        if key == "loss" and exact is not None:
            ax.axhline(exact, color="C3", ls="--", lw=1.2, label=f"exact F = −log Z = {exact:.4g}")
            tail = np.append(tail, exact)
        if tail.size:
            lo, hi = np.min(tail), np.quantile(tail, 0.99)
            span = max(hi - lo, 1e-6 * max(1.0, abs(hi)))
            ax.set_ylim(lo - 0.15 * span, hi + 0.6 * span)
        ax.set_xlim(0, max(1, y.size - 1))
        ax.set_ylabel(key)
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    axes[-1].set_xlabel("step")
    fig.suptitle(f"{result.model} — {result.engine}: objective   {result.free_energy}"
                 f"{_status_note(result)}", fontsize=11)
    return _finish(fig, path)


def _status_note(result) -> str:
    """`` [status max_steps: ...]`` for a run that did not end ok, else nothing."""
    status = getattr(result, "status", None)
    return "" if status is None or status.ok else f"\n[status {status}]"


def _colors():
    return [f"C{i}" for i in range(10)]


def plot_compare(results, path=None, max_vars: int = 4, exact_moments: dict | None = None):
    """Posterior marginals of the first ``max_vars`` scalar parameters, one colour per
    engine, and a panel of free-energy estimates (± 2 standard errors) with the exact
    F = −log Z as a dashed line where the model knows it.

    Only components present in every Result are drawn. Triangles mark bounds (▲ lower
    bound on log Z, i.e. F from above; ▼ upper bound), circles unbiased or exact values.
    ``exact_moments`` (``{"w[0]": (mean, sd), ...}``, e.g. from a zoo model's exact
    posterior) adds the normal density with those moments as a dashed black curve.

    Returns
    -------
    matplotlib.figure.Figure
    """
    results = list(results)
    if not results:
        raise ValueError("plot_compare needs at least one Result")
    common = [n for n in results[0].samples if all(n in r.samples for r in results)]
    comps = scalar_components({n: results[0].samples[n] for n in common}, max_vars)
    labels = [label for label, _ in comps]
    per_result = [dict(scalar_components({n: r.samples[n] for n in common}, max_vars))
                  for r in results]
    num_panels = len(labels) + 1
    ncols = 2 if num_panels == 4 else min(3, num_panels)
    nrows = -(-num_panels // ncols)
    fig = _figure(path, (4.0 * ncols, 0.7 + 3.0 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).reshape(-1)
    colors = _colors()
    for ax, label in zip(axes, labels, strict=False):
        pooled = np.concatenate([np.asarray(pr[label], np.float64).reshape(-1)
                                 for pr in per_result])
        bins = _bins(pooled, min(np.size(pr[label]) for pr in per_result))
        for i, (r, pr) in enumerate(zip(results, per_result, strict=True)):
            w = draw_weights(r)
            _density(ax, np.asarray(pr[label], np.float64).reshape(-1),
                     None if w is None else w.reshape(-1), bins,
                     color=colors[i % len(colors)], lw=1.4, label=r.engine)
        if exact_moments and label in exact_moments:
            mean, sd = map(float, exact_moments[label])
            x = np.linspace(bins[0], bins[-1], 200)
            ax.plot(x, np.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi)),
                    color="black", ls="--", lw=1.0, label="exact")
        ax.set_title(label, fontsize=10, loc="left")
        ax.set_yticks([])
    if labels:
        axes[0].legend(fontsize=8, frameon=False)
    _free_energy_panel(axes[len(labels)], results, colors)
    for ax in axes[num_panels:]:
        ax.set_visible(False)
    fig.suptitle(f"{results[0].model}: {', '.join(r.engine for r in results)}", fontsize=11)
    return _finish(fig, path)


def _free_energy_panel(ax, results, colors):
    markers = {"lower bound": "^", "upper bound": "v"}
    exact = next((-float(r.exact_log_z) for r in results if r.exact_log_z is not None), None)
    x = np.arange(len(results))
    from helmholtz.result import bound_conflicts

    conflicts = bound_conflicts(results)
    for i, r in enumerate(results):
        fe = r.free_energy
        if fe.kind == "none" or not np.isfinite(fe.value):
            ax.annotate("not\nestimated", (i, 0.5), xycoords=("data", "axes fraction"),
                        ha="center", va="center", fontsize=8, color=colors[i % len(colors)])
            continue
        color = colors[i % len(colors)]
        ax.errorbar([i], [fe.value], yerr=[2 * fe.se if np.isfinite(fe.se) else 0.0],
                    fmt=markers.get(fe.kind, "o"), color=color, capsize=4, ms=7,
                    mfc="none" if fe.warning or i in conflicts else color)
        if fe.warning or not r.status.ok or i in conflicts:  # hollow, and a word: do not
            word = ("unreliable" if fe.warning or r.status.ok  # trust the bar
                    else r.status.code)
            word = "crosses a bound" if i in conflicts and not fe.warning else word
            ax.annotate(word, (i, fe.value),
                        textcoords="offset points", xytext=(0, -16), ha="center",
                        fontsize=7, color=color)
    if exact is not None:
        ax.axhline(exact, color="black", ls="--", lw=1.0, label=f"exact {exact:.4g}")
        ax.legend(fontsize=8, frameon=False)
    ax.margins(y=0.15)
    ax.set_xticks(x, [r.engine for r in results], fontsize=9)
    ax.set_xlim(-0.6, len(results) - 0.4)
    ax.set_title("free energy F = −log Z (± 2 se)", fontsize=10, loc="left")
