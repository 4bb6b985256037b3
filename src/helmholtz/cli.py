"""The ``helmholtz`` command line: list models and engines, run one, compare several.

::

    helmholtz list
    helmholtz run eight_schools_noncentered --engine nuts --set num_chains=2 --out out/es
    helmholtz compare linear_gaussian --engines nuts,svi
    helmholtz run path/to/my_model.py:model --engine svi --set num_steps=2000

MODEL is a zoo name (``helmholtz list``) or ``path/to/file.py:function``. A model file is
imported as a module; the function is called with the file's optional module globals
``model_args`` (a tuple) and ``model_kwargs`` (a dict), or with no arguments. A function
attribute ``exact_log_z`` (a number, or a function of the model's arguments) declares
the exact log normaliser, which the free-energy line and the comparison then report.

``--set key=value`` (repeatable) sets engine options; values are converted to the option's
type. For ``compare`` an option goes to every engine that has it. Bad input (an unknown
name, a model that fails to trace or whose log density is not finite, an invalid option)
prints one ``error:`` paragraph on stderr and exits with status 2; ``--debug`` shows the
traceback instead. JAX's persistent compilation cache (set up at ``import helmholtz``, see
:mod:`helmholtz._runtime`) is kept in ``$HELMHOLTZ_CACHE_DIR`` (default
``~/.cache/helmholtz/jax``; ``HELMHOLTZ_COMPILATION_CACHE=0`` switches it off), so a
second run of the same model and engine does not compile again.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import importlib.util
import logging
import math
import os
import shutil
import sys
import textwrap
import warnings
from pathlib import Path

__all__ = ["main", "resolve_model", "parse_options"]

_SUMMARY_ROWS = 20
_NOT_FROM_CLI = "cannot be set from the command line"


# ---------------------------------------------------------------------------------- models
@dataclasses.dataclass
class _Model:
    label: str  # for the default output folder
    target: object
    exact_log_z: float | None
    exact_moments: dict | None = None  # {"w[0]": (mean, sd)} where the zoo knows them


def resolve_model(spec: str, model_seed: int = 0) -> _Model:
    """A zoo name or ``path/to/file.py:function`` → its Target (and exact log Z if known).

    Raises
    ------
    KeyError
        Unknown zoo name (the message lists the valid names).
    FileNotFoundError
        The file part of ``path.py:function`` does not exist.
    helmholtz.ModelError
        No ``:function``, a missing function (the message lists the file's functions), a
        file that fails to import, or a model that raises while tracing.
    """
    from helmholtz import models

    if spec in models.names():
        entry = models.get(spec)
        target = entry.target(seed=model_seed)
        exact = target.log_z
        if exact is None:
            with contextlib.suppress(Exception):  # exact log Z is a bonus, not a requirement
                exact = entry.log_z(model_seed)
        return _Model(spec, target, exact, _exact_moments(entry, model_seed))

    file_part, sep, func = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if not (sep or spec.endswith(".py") or "/" in spec or os.sep in spec):
        try:
            models.get(spec)
        except KeyError as exc:
            raise KeyError(f"{exc.args[0]} (or give a model file as path/to/file.py:function)"
                           ) from None
    return _file_model(Path(file_part), func.strip())


def _exact_moments(entry, model_seed: int) -> dict | None:
    """Exact posterior mean and sd per scalar component, from a zoo entry's
    ``exact_posterior`` ({site: (mean, cov)}), or None."""
    import numpy as np

    if getattr(entry, "exact_posterior", None) is None:
        return None
    try:
        args, kwargs = entry.args(model_seed)
        moments = entry.exact_posterior(*args, **kwargs)
    except Exception:
        return None
    out = {}
    for site, (mean, cov) in moments.items():
        mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
        if cov.ndim == 2 and cov.shape == (mean.size, mean.size):
            sd = np.sqrt(np.diag(cov))
        elif cov.size == mean.size:
            sd = np.sqrt(cov.reshape(-1))
        else:
            continue
        for i, (m, s) in enumerate(zip(mean.reshape(-1), sd, strict=True)):
            index = ",".join(map(str, np.unravel_index(i, mean.shape)))
            out[f"{site}[{index}]" if mean.shape else site] = (float(m), float(s))
    return out or None


def _file_model(path: Path, func: str) -> _Model:
    from helmholtz.errors import ModelError
    from helmholtz.target import Target

    if not path.is_file():
        raise FileNotFoundError(
            f"model file '{path}' does not exist. MODEL is a zoo name (see `helmholtz list`) "
            "or path/to/file.py:function."
        )
    if not func:
        defined = _defined_functions(path)
        raise ModelError(
            f"'{path}' names a file but not the model function in it: write "
            f"{path}:FUNCTION. The file defines: {', '.join(defined) or 'no functions'}."
        )
    module = _import_file(path)
    fn = getattr(module, func, None)
    if not callable(fn):
        defined = [k for k, v in vars(module).items() if _defined_here(v, module)]
        raise ModelError(
            f"model file '{path}' has no function '{func}'; it defines: "
            f"{', '.join(defined) or 'no functions'}."
        )
    args = getattr(module, "model_args", ())
    kwargs = getattr(module, "model_kwargs", {})
    if not isinstance(args, tuple | list) or not isinstance(kwargs, dict):
        raise ModelError(
            f"model file '{path}': model_args must be a tuple and model_kwargs a dict, got "
            f"{type(args).__name__} and {type(kwargs).__name__}."
        )
    target = Target.from_model(fn, *args, **kwargs)
    return _Model(f"{path.stem}_{func}", target, target.log_z)


def _defined_functions(path: Path) -> list[str]:
    """Top-level function names of a Python file, read without running it."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return []
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _defined_here(value, module) -> bool:
    return callable(value) and getattr(value, "__module__", None) == module.__name__ \
        and not getattr(value, "__name__", "_").startswith("_")


def _import_file(path: Path):
    from helmholtz.errors import ModelError

    name = f"_helmholtz_model_{abs(hash(str(path.resolve())))}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import '{path}' as a Python module (is it a .py file?).")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # so the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ModelError(
            f"importing model file '{path}' raised {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    return module


# ---------------------------------------------------------------------------------- options
def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip().replace("-", "_"), value.strip()


def parse_options(engine_name: str, pairs: list[tuple[str, str]], *, only_known: bool = False
                  ) -> dict:
    """``[("num_samples", "500"), ...]`` → the options of one engine.

    Strings go to :func:`helmholtz.get_engine`, which converts int, float and bool; here
    we add ``none`` for optional fields and refuse fields that take Python objects (an
    optax optimizer). Fields typed ``Any`` get the string itself and parse it (``ais``'s
    ``schedule=linear``, ``init_values=tau=1.5,w=[0,1]``). With ``only_known`` options
    the engine lacks are dropped.
    """
    from helmholtz.engines import ENGINES
    from helmholtz.errors import EngineError, OptionError

    cls = ENGINES.get(engine_name.lower())
    if cls is None:  # get_engine would say the same; say it before any work is done
        from helmholtz.engines import engine_names

        raise EngineError(
            f"unknown engine {engine_name!r}; valid engines: {', '.join(engine_names())}")
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    options = {}
    for key, value in pairs:
        if key not in fields:
            if only_known:
                continue
            options[key] = value  # get_engine raises with the list of valid options
            continue
        kind = fields[key].replace(" ", "")
        base = kind.removesuffix("|None")
        if base not in ("int", "float", "bool", "str", "Any"):
            raise OptionError(f"engine '{cls.name}': option {key} ({fields[key]}) {_NOT_FROM_CLI}; "
                              "use the Python API (helmholtz.infer) for it.")
        if base != kind and value.lower() == "none":
            options[key] = None
        elif base == "Any":
            options[key] = value
        elif base != kind:
            from helmholtz.engines.base import _coerce

            options[key] = _coerce(cls.name, key, value, base)
        else:
            options[key] = value
    return options


def _engines(names: list[str], pairs, *, only_known: bool):
    """The engine objects; with ``only_known`` (``compare``) an option goes only to the
    engines that have it under that name, where it means the same thing in each (old
    names, which meant different things in different engines, are not translated)."""
    import helmholtz

    engines = [helmholtz.get_engine(n, **parse_options(n, pairs, only_known=only_known))
               for n in names]
    if only_known:
        from helmholtz.engines import ENGINES
        from helmholtz.errors import OptionError

        unused = [k for k, _ in pairs if not any(k in ENGINES[e.name].option_names()
                                                  for e in engines)]
        if unused:
            renamed = sorted({f"{k} → {ENGINES[e.name].aliases[k]} ({e.name})"
                              for k in unused for e in engines if k in ENGINES[e.name].aliases})
            hint = f" (renamed: {', '.join(renamed)})" if renamed else ""
            raise OptionError(
                f"no engine among {', '.join(names)} has option "
                f"{', '.join(map(repr, dict.fromkeys(unused)))}{hint}; options of "
                + "; ".join(f"{e.name}: {', '.join(e.option_names())}" for e in engines))
    return engines


def _who_took(engines, pairs) -> list[str]:
    """One line per ``--set`` option: which engines took it and which do not have it."""
    lines = []
    for key in dict.fromkeys(k for k, _ in pairs):
        took = [e.name for e in engines if key in e.option_names()]
        left = [e.name for e in engines if key not in e.option_names()]
        lines.append(f"option {key}: set for {', '.join(took)}"
                     + (f"; not an option of {', '.join(left)}" if left else ""))
    return lines


def _checkpoint(args, suffix: str = "", keep: bool = False):
    from helmholtz.checkpoint import Checkpoint

    if not getattr(args, "checkpoint", None):
        return None
    return Checkpoint(f"{args.checkpoint}{suffix}", overwrite=args.overwrite_checkpoint,
                      keep=keep)


# ---------------------------------------------------------------------------------- output
def _print_table(df, **fmt):
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 30,
                           "display.max_rows", 200, "display.float_format", "{:.4g}".format):
        print(df.to_string(**fmt) if fmt else df)


def summary_table(result, max_rows: int = _SUMMARY_ROWS):
    """A posterior summary of at most ``max_rows`` scalar components (pandas DataFrame).

    Unweighted draws get arviz's summary (mean, sd, 94% HDI, MCSE, bulk and tail ESS,
    R-hat; arviz 1.x: its 89% equal-tailed interval); importance-weighted particles get
    weighted mean, sd, 3% and 97% quantiles and Kish's effective sample size. Components
    that are constant in every draw (a correlation matrix's unit diagonal) are skipped.
    """
    import numpy as np
    import pandas as pd

    from helmholtz import _arviz
    from helmholtz.plots import draw_weights, scalar_components

    # with one draw every component is "constant": skip only among several draws
    several = result.num_chains * result.num_draws > 1
    comps = scalar_components(result.samples, max_rows, skip_constant=several)
    if not comps:
        return pd.DataFrame()
    weights = draw_weights(result)
    if weights is None:
        with _quiet_arviz():
            idata = _arviz.from_dict({"posterior": {k: np.asarray(v) for k, v in comps}})
            return _arviz.summary(idata, round_to="none")
    w = weights.reshape(-1)
    rows = {}
    for label, v in comps:
        x = np.asarray(v, np.float64).reshape(-1)
        mean = float(np.sum(w * x))
        order = np.argsort(x)
        cdf = np.cumsum(w[order])
        q = np.interp([0.03, 0.97], cdf, x[order])
        rows[label] = {"mean": mean, "sd": math.sqrt(max(float(np.sum(w * (x - mean) ** 2)), 0)),
                       "q3%": q[0], "q97%": q[1], "ess_kish": 1.0 / float(np.sum(w ** 2))}
    return pd.DataFrame.from_dict(rows, orient="index")


@contextlib.contextmanager
def _quiet_arviz():
    """Silence arviz's warnings (R-hat of one chain and the like) inside the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _arviz_log_errors_only():
    """arviz *logs* a shape warning for every one-chain result (SVI, particles): mute it."""
    logger = logging.getLogger("arviz")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _num_scalars(result) -> int:
    from helmholtz.plots import scalar_components

    several = result.num_chains * result.num_draws > 1
    return len(scalar_components(result.samples, skip_constant=several))


def _report_drawless(result) -> None:
    """A Result without posterior draws: the fitted θ of ``em``, or the path metrics of
    a transition-path engine."""
    import numpy as np

    from helmholtz.result import FittedParams

    if isinstance(result.fitted, FittedParams):
        print("fitted parameters:")
        for name, value in result.fitted.params.items():
            v = np.asarray(value)
            text = np.array2string(v, threshold=12, edgeitems=3, max_line_width=88,
                                   formatter={"float_kind": lambda f: f"{f:.4f}"})
            print(f"  {name} {tuple(v.shape)}: {text}")
    if "hit" in result.stats:
        from helmholtz.paths.metrics import metrics_table, transition_metrics

        print(metrics_table({result.engine: transition_metrics(result)}, distance_unit="",
                            energy_unit=""))


def _report(result) -> None:
    """What ``run`` prints: a header, the summary table, the free energy, diagnostics."""
    chains = f"{result.num_chains} chain{'s' if result.num_chains != 1 else ''}"
    draws = f"{chains} × {result.num_draws} draws" if result.samples else "no posterior draws"
    print(f"{result.engine} on {result.model}: {draws}; "
          f"compile {result.compile_seconds:.1f} s, run {result.run_seconds:.2f} s, "
          f"{result.num_grad_evals} gradient evaluations")
    print()
    if not result.samples:
        _report_drawless(result)
    else:
        _print_table(summary_table(result))
    more = 0 if not result.samples else _num_scalars(result) - _SUMMARY_ROWS
    if more > 0:
        print(f"... {more} more scalar{'s' if more > 1 else ''} in the .nc file")
    print()
    print(f"free energy: {result.free_energy}")
    for name, est in result.estimates.items():
        print(f"  {name + ':':<10} {est}")
    if not result.status.ok:
        print(f"status:      {result.status.code}: {result.status.message}")
    fe = result.free_energy
    if result.exact_log_z is not None:
        exact = -float(result.exact_log_z)
        line = f"exact:       F = -log Z = {exact:.4f}"
        if fe.kind != "none" and math.isfinite(fe.value):
            err = fe.value - exact
            z = f" ({abs(err) / fe.se:.1f} se)" if fe.se > 0 else ""
            line += f"; error F - F_exact = {err:+.4f}{z}"
        print(line)
    if not result.samples:
        return
    with _quiet_arviz():
        diag = result.diagnostics()
    rhat = "n/a (one chain)" if math.isnan(diag["max_rhat"]) else f"{diag['max_rhat']:.3f}"
    print(f"diagnostics: min ESS {diag['min_ess']:.0f}, max R-hat {rhat}, "
          f"{result.num_divergent} divergent")


def _means_table(results, exact_moments=None, max_rows: int = 10):
    """Posterior mean (sd) of the first scalar components, one column per engine (and one
    for the exact values where known)."""
    import numpy as np
    import pandas as pd

    from helmholtz.plots import draw_weights, scalar_components

    common = [n for n in results[0].samples if all(n in r.samples for r in results)]
    cols = {}
    for r in results:
        w = draw_weights(r)
        col = {}
        for label, v in scalar_components({n: r.samples[n] for n in common}, max_rows):
            x = np.asarray(v, np.float64).reshape(-1)
            ww = np.full(x.shape, 1.0 / x.size) if w is None else w.reshape(-1)
            mean = float(np.sum(ww * x))
            sd = math.sqrt(max(float(np.sum(ww * (x - mean) ** 2)), 0.0))
            col[label] = f"{mean:.4g} ({sd:.3g})"
        cols[r.engine] = col
    if exact_moments:
        labels = list(next(iter(cols.values())))
        cols["exact"] = {k: f"{exact_moments[k][0]:.4g} ({exact_moments[k][1]:.3g})"
                         for k in labels if k in exact_moments}
    return pd.DataFrame(cols).fillna("")


def _use_agg():
    import matplotlib

    matplotlib.use("Agg")


def _out_dir(args, model: _Model) -> Path:
    return Path(args.out) if args.out else Path("out") / model.label


def _status(args, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- commands
def _cmd_list(args) -> int:
    from helmholtz import models
    from helmholtz.engines import ENGINES

    entries = models.entries()
    width = max([len(e.name) for e in entries] + [len(n) for n in ENGINES] + [4])
    print("models")
    for e in entries:
        log_z = None
        with contextlib.suppress(Exception):
            log_z = e.log_z(args.model_seed)
        if log_z is None:
            log_z = getattr(e.model, "exact_log_z", None)
            log_z = log_z if isinstance(log_z, int | float) else None
        known = f"log Z = {log_z:<9.4f}" if log_z is not None else " " * 17
        print(f"  {e.name:<{width}}  {e.family:<10} {known}  {e.description}")
    print()
    print("engines")
    for name in sorted(ENGINES):
        cls = ENGINES[name]
        print(f"  {name:<{width}}  {cls.description}")
        if args.verbose:
            defaults = cls()
            opts = ", ".join(f"{k}={getattr(defaults, k)!r}" for k in cls.option_names())
            print(textwrap.fill(opts, width=_term_width(), initial_indent=" " * (width + 4),
                                subsequent_indent=" " * (width + 4)))
    return 0


def _join(args) -> bool:
    """``--distributed``: join the multi-process run before any JAX work; returns
    whether this process is the one that prints and writes."""
    if getattr(args, "local_devices", None) is not None and not args.distributed:
        from helmholtz.errors import OptionError

        raise OptionError("--local-devices needs --distributed")
    if not getattr(args, "distributed", False):
        return True
    from helmholtz import distributed

    distributed.initialize(local_device_count=args.local_devices)
    if not distributed.is_main():
        args.quiet = True
    return distributed.is_main()


def _cmd_run(args) -> int:
    import helmholtz
    from helmholtz.plots import plot_loss, plot_trace

    main = _join(args)
    (engine,) = _engines([args.engine], args.set, only_known=False)
    model = resolve_model(args.model, args.model_seed)
    _status(args, f"running {engine.name} on {model.target.name} (dim {model.target.dim})")
    result = helmholtz.infer(model.target, engine, seed=args.seed,
                             progress_bar=not args.quiet, checkpoint=_checkpoint(args))
    if result.exact_log_z is None:
        result.exact_log_z = model.exact_log_z
    if not main:  # every process holds the Result; process 0 reports and writes it
        return 0
    _report(result)
    out = _out_dir(args, model)
    written = [result.save(out / f"{engine.name}.nc")]
    _use_agg()
    if result.samples:
        written.append(out / f"{engine.name}_trace.png")
        plot_trace(result, written[-1])
    if result.trace:
        written.append(out / f"{engine.name}_loss.png")
        plot_loss(result, written[-1])
    print()
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _cmd_compare(args) -> int:
    import helmholtz
    from helmholtz.errors import OptionError
    from helmholtz.plots import plot_compare

    main = _join(args)
    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    if not names:
        raise OptionError("--engines needs at least one engine name, e.g. --engines nuts,svi")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise OptionError(f"--engines names {', '.join(dupes)} more than once")
    engines = _engines(names, args.set, only_known=True)
    for line in _who_took(engines, args.set):
        _status(args, line)
    model = resolve_model(args.model, args.model_seed)
    out = _out_dir(args, model)
    results, written = [], []
    # with --checkpoint every engine keeps its finished state until all are done, so an
    # interrupted compare resumes without running the finished engines again
    checkpoints = [_checkpoint(args, f".{e.name}", keep=True) for e in engines]
    for i, (engine, ckpt) in enumerate(zip(engines, checkpoints, strict=True), 1):
        _status(args, f"[{i}/{len(engines)}] {engine.name} on {model.target.name}")
        result = helmholtz.infer(model.target, engine, seed=args.seed,
                                 progress_bar=not args.quiet, checkpoint=ckpt)
        if result.exact_log_z is None:
            result.exact_log_z = model.exact_log_z
        results.append(result)
        if main:
            written.append(result.save(out / f"{engine.name}.nc"))
    if not main:
        return 0
    for ckpt in checkpoints:
        if ckpt is not None:
            Path(ckpt.path).unlink(missing_ok=True)
    print(f"{model.target.name}: {len(results)} engines, seed {args.seed}")
    print()
    with _quiet_arviz():
        helmholtz.compare(results)  # prints the table
    print()
    print("posterior mean (sd)")
    _print_table(_means_table(results, model.exact_moments))
    _use_agg()
    written.append(out / "compare.png")
    plot_compare(results, written[-1], exact_moments=model.exact_moments)
    print()
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


# ---------------------------------------------------------------------------------- main
def _term_width() -> int:
    return max(60, min(100, shutil.get_terminal_size((100, 24)).columns))


def _common() -> argparse.ArgumentParser:
    # SUPPRESS so that the value given before or after the subcommand both survive
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of an error")
    p.add_argument("--seed", type=int, default=argparse.SUPPRESS,
                   help="seed of the inference (default 0)")
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bars or status lines")
    p.add_argument("--model-seed", type=int, default=argparse.SUPPRESS,
                   help="seed of a zoo model's data (default 0)")
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("helmholtz-ppl")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="helmholtz", parents=[common],
        description="One numpyro model, many inference engines, one free energy.",
        epilog="MODEL is a zoo name (helmholtz list) or path/to/file.py:function.")
    parser.add_argument("--version", action="version", version=f"helmholtz {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", parents=[common], help="list zoo models and engines")
    p.add_argument("-v", "--verbose", action="store_true", help="also list engine options")

    def inference(p):
        p.add_argument("model", metavar="MODEL", help="zoo name or path/to/file.py:function")
        p.add_argument("--set", metavar="KEY=VALUE", type=_key_value, action="append",
                       default=[], help="engine option (repeatable), e.g. num_samples=500")
        p.add_argument("--out", metavar="DIR", help="output folder (default out/MODEL)")
        p.add_argument("--checkpoint", metavar="PATH",
                       help="keep progress in PATH (compare: PATH.ENGINE per engine); run "
                            "the same command again to resume an interrupted run")
        p.add_argument("--overwrite-checkpoint", action="store_true",
                       help="start afresh when PATH was written by a different run")
        p.add_argument("--distributed", action="store_true",
                       help="join a multi-process run (jax.distributed) from "
                            "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID or "
                            "SLURM/Open MPI; process 0 prints and writes")
        p.add_argument("--local-devices", type=int, metavar="N",
                       help="with --distributed: split this process's CPU into N devices")

    p = sub.add_parser("run", parents=[common], help="run one engine on one model")
    inference(p)
    p.add_argument("--engine", default="nuts", help="engine name (default nuts)")

    p = sub.add_parser("compare", parents=[common], help="run several engines side by side")
    inference(p)
    p.add_argument("--engines", required=True, metavar="A,B,C",
                   help="comma-separated engine names, e.g. nuts,svi")
    return parser


def _paragraph(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]  # KeyError's str() would quote it
    else:
        text = str(exc) or type(exc).__name__
    return textwrap.fill(" ".join(text.split()), width=_term_width(), initial_indent="error: ",
                         subsequent_indent="       ", break_long_words=False,
                         break_on_hyphens=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``helmholtz`` command; returns the exit status.

    0 on success, 2 on bad input (one ``error:`` paragraph on stderr), 1 on an unexpected
    failure (also one paragraph); ``--debug`` re-raises instead of printing.
    """
    from helmholtz.errors import HelmholtzError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error (argparse printed it)
        return exc.code if isinstance(exc.code, int) else 2
    for name, default in (("debug", False), ("seed", 0), ("quiet", False), ("model_seed", 0)):
        if not hasattr(args, name):
            setattr(args, name, default)
    command = {"list": _cmd_list, "run": _cmd_run, "compare": _cmd_compare}[args.command]
    try:
        with _arviz_log_errors_only():
            return command(args)
    except BrokenPipeError:  # `helmholtz list | head`: stop quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (HelmholtzError, KeyError, ValueError, TypeError, FileNotFoundError) as exc:
        if args.debug:
            raise
        print(_paragraph(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        exc_text = f"{type(exc).__name__}: {exc}"
        print(_paragraph(RuntimeError(f"unexpected {exc_text} (run with --debug for the "
                                      "traceback)")), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
