"""The ``helmholtz`` command line, called in-process through ``main(argv)``.

Inference runs use tiny option sets on ``linear_gaussian`` (3-d, exact log Z and
posterior); the NUTS configuration of ``run`` and ``compare`` is the same, so the second
reuses the first's compiled functions.
"""

import contextlib
import io
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import helmholtz
from helmholtz import models
from helmholtz.cli import main, resolve_model, summary_table
from helmholtz.engines import ENGINES
from helmholtz.plots import plot_compare, plot_trace

MODEL = "linear_gaussian"
MCMC = ["--set", "num_warmup=100", "--set", "num_samples=100", "--set", "num_chains=2"]
SVI = ["--set", "num_optimizer_steps=200", "--set", "num_elbo_samples=500"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def call(*argv):
    """Run ``main`` and return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def table_value(stdout: str, row: str, column: str) -> float:
    """A number from a printed pandas table: the ``column`` entry of the line ``row``."""
    for kind in ("lower bound", "upper bound", "unbiased-Z estimate"):  # one token each
        stdout = stdout.replace(kind, kind.replace(" ", "_"))
    lines = stdout.splitlines()
    header = next(line for line in lines if re.search(rf"(^|\s){re.escape(column)}(\s|$)", line))
    columns = header.split()
    line = next(line for line in lines if line.split() and line.split()[0] == row)
    return float(line.split()[1:][columns.index(column)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return root, {
        "nuts": call("--quiet", "run", MODEL, "--engine", "nuts", *MCMC, "--out", root / "nuts"),
        "svi": call("run", MODEL, "--engine", "svi", *SVI, "--out", root / "svi", "--quiet"),
        "compare": call("compare", MODEL, "--engines", "nuts,svi", *MCMC, *SVI,
                        "--out", root / "cmp", "--quiet"),
    }


# ------------------------------------------------------------------------------ list
def test_list_names_every_model_and_engine(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    first_words = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert first_words == models.names() + sorted(ENGINES)
    line = next(line for line in out.splitlines() if line.split()[:1] == [MODEL])
    assert f"log Z = {models.get(MODEL).log_z(0):.4f}" in line
    assert models.get(MODEL).description in line


def test_module_runs_as_a_script():
    proc = subprocess.run([sys.executable, "-m", "helmholtz.cli", "list"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "eight_schools_noncentered" in proc.stdout and "\n  nuts " in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "helmholtz.cli", "run", "no_such_model"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown model 'no_such_model'")
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------ run
def test_run_writes_netcdf_and_plot_and_prints_the_saved_means(runs):
    root, results = runs
    code, out, err = results["nuts"]
    assert code == 0, err
    nc, png = root / "nuts" / "nuts.nc", root / "nuts" / "nuts_trace.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    loaded = helmholtz.Result.load(nc)
    assert loaded.engine == "nuts" and loaded.samples["w"].shape == (2, 100, 3)
    for i in range(3):
        printed = table_value(out, f"w[{i}]", "mean")
        assert printed == pytest.approx(loaded.samples["w"][..., i].mean(), rel=1e-3, abs=1e-4)
    assert "free energy: F: not estimated" in out
    assert f"F = -log Z = {-models.get(MODEL).log_z(0):.4f}" in out
    assert err == ""  # --quiet: no progress bars, no status line


def test_init_values_from_the_command_line(tmp_path):
    # a string option typed Any reaches the engine, which parses it: with no warmup and a
    # vanishing step the one draw is the starting point
    code, _, err = call("--quiet", "run", MODEL, "--engine", "mala", "--set", "num_warmup=0",
                        "--set", "num_samples=1", "--set", "num_chains=1", "--set",
                        "step_size=1e-12", "--set", "init_values=w=[0.5,-0.5,2.0]",
                        "--out", tmp_path)
    assert code == 0, err
    draw = helmholtz.Result.load(tmp_path / "mala.nc").samples["w"][0, 0]
    np.testing.assert_allclose(draw, [0.5, -0.5, 2.0], atol=1e-5)


def test_run_svi_reports_the_error_against_the_exact_free_energy(runs):
    root, results = runs
    code, out, err = results["svi"]
    assert code == 0, err
    loaded = helmholtz.Result.load(root / "svi" / "svi.nc")
    fe, exact = loaded.free_energy, -models.get(MODEL).log_z(0)
    assert fe.kind == "lower bound" and loaded.trace["loss"].shape == (200,)
    match = re.search(r"error F - F_exact = ([-+]\d+\.\d+)", out)
    assert match and float(match.group(1)) == pytest.approx(fe.value - exact, abs=1e-4)
    assert f"free energy: {fe}" in out  # the headline line prints the loaded estimate
    assert (root / "svi" / "svi_loss.png").read_bytes()[:8] == PNG_MAGIC
    assert "r_hat" in out and "one chain" in out


# ------------------------------------------------------------------------------ compare
def test_compare_prints_a_row_per_engine_and_writes_files(runs):
    root, results = runs
    code, out, err = results["compare"]
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert {"nuts", "svi"} <= set(rows)
    exact = -models.get(MODEL).log_z(0)
    assert table_value(out, "svi", "F_exact") == pytest.approx(exact, abs=1e-2)
    svi = helmholtz.Result.load(root / "cmp" / "svi.nc")
    assert table_value(out, "svi", "F") == pytest.approx(svi.free_energy.value, rel=1e-3)
    assert np.isnan(table_value(out, "nuts", "F"))
    # the means table has the closed-form posterior beside the engines
    assert re.search(r"^w\[0\]\s+\S+ \(\S+\)\s+\S+ \(\S+\)\s+\S+ \(\S+\)$", out, re.M)
    assert (root / "cmp" / "compare.png").read_bytes()[:8] == PNG_MAGIC
    assert (root / "cmp" / "nuts.nc").exists()


# ------------------------------------------------------------------------------ bad input
@pytest.fixture
def model_files(tmp_path):
    files = {
        "raises": """
            import numpyro, numpyro.distributions as dist

            def model():
                numpyro.sample("x", dist.Normal(0.0, 1.0))
                raise RuntimeError("boom in the model")

            def helper():
                return 1
            """,
        "nan": """
            import jax.numpy as jnp
            import numpyro, numpyro.distributions as dist

            def model():
                mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
                numpyro.sample("y", dist.Normal(mu, 1.0), obs=jnp.array([jnp.nan, 1.0]))
            """,
        "args": """
            import numpy as np
            import numpyro, numpyro.distributions as dist

            model_args = (np.array([0.5, 1.5, 1.0]),)
            model_kwargs = {"scale": 2.0}

            def model(y, scale=1.0):
                mu = numpyro.sample("mu", dist.Normal(0.0, scale))
                numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
            """,
    }
    paths = {}
    for name, text in files.items():
        paths[name] = tmp_path / f"{name}_model.py"
        paths[name].write_text(textwrap.dedent(text))
    paths["missing"] = tmp_path / "missing.py"
    return paths


BAD = {
    "unknown engine": (lambda f: ["run", MODEL, "--engine", "nutz"],
                       ["unknown engine 'nutz'", "nuts", "svi"]),
    "unknown model": (lambda f: ["run", "no_such_model"], models.names()),
    "file without function": (lambda f: ["run", f["raises"]], ["FUNCTION", "model, helper"]),
    "missing file": (lambda f: ["run", f"{f['missing']}:model"], ["does not exist"]),
    "missing function": (lambda f: ["run", f"{f['raises']}:nomodel"],
                         ["no function 'nomodel'", "model, helper"]),
    "model raises": (lambda f: ["run", f"{f['raises']}:model", *MCMC],
                     ["raised RuntimeError while tracing", "boom in the model"]),
    "NaN log density": (lambda f: ["--quiet", "run", f"{f['nan']}:model", *MCMC],
                        ["NaN or -inf", "initial points", "Non-finite terms: y"]),
    "non-integer option": (lambda f: ["run", MODEL, "--set", "num_samples=abc"],
                           ["num_samples", "expects int", "'abc'"]),
    "negative option": (lambda f: ["run", MODEL, "--set", "num_chains=0"],
                        ["num_chains", "≥ 1"]),
    "unknown option": (lambda f: ["run", MODEL, "--set", "bogus=1"],
                       ["no option 'bogus'", "num_samples"]),
    "option no engine has": (lambda f: ["compare", MODEL, "--engines", "nuts,svi",
                                        "--set", "bogus=1"], ["bogus", "num_optimizer_steps"]),
    "object option": (lambda f: ["run", MODEL, "--engine", "svi", "--set", "optimizer=adam"],
                      ["optimizer", "command line"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_paragraph_and_exit_2(case, model_files):
    argv, expected = BAD[case]
    code, out, err = call(*argv(model_files))
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    assert "\n\n" not in err.strip()  # one paragraph
    assert all(line.startswith(("error: ", "       ")) for line in err.strip().splitlines())
    flat = " ".join(err.split())
    for text in expected:
        assert text in flat, (text, flat)
    assert out == ""


def test_debug_shows_the_exception_instead():
    with pytest.raises(helmholtz.EngineError, match="valid engines"):
        main(["--debug", "run", MODEL, "--engine", "nutz"])


def test_usage_error_exits_2_without_traceback(capsys):
    assert main(["run", MODEL, "--set", "num_samples"]) == 2
    err = capsys.readouterr().err
    assert "expected key=value" in err and "Traceback" not in err


def test_file_model_uses_its_model_args(model_files):
    model = resolve_model(f"{model_files['args']}:model")
    (y,), kwargs = model.target.model_args
    np.testing.assert_array_equal(np.asarray(y), [0.5, 1.5, 1.0])
    assert kwargs == {"scale": 2.0} and model.target.dim == 1
    assert model.label == "args_model_model"


# ------------------------------------------------------------------------------ plots, tables
def _weighted_result(engine="smc", kind="unbiased-Z estimate"):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 4000))
    log_w = -0.5 * (x - 1.0) ** 2 + 0.5 * x**2  # reweights N(0, 1) draws to N(1, 1)
    return helmholtz.Result(
        engine=engine, model="toy",
        samples={"x": x, "v": rng.normal(size=(1, 4000, 12)),
                 "m": rng.normal(size=(1, 4000, 3, 3))},
        free_energy=helmholtz.FreeEnergy(-0.1, 0.05, kind), log_weights=log_w)


def test_weighted_summary_and_plots(tmp_path):
    result = _weighted_result()
    table = summary_table(result)
    assert len(table) == 20 and list(table.index[:3]) == ["x", "v[0]", "v[1]"]
    assert "m[0,1]" in table.index
    assert table.loc["x", "mean"] == pytest.approx(1.0, abs=0.1)  # weighted, not 0
    fig = plot_trace(result, tmp_path / "trace.png")
    assert (tmp_path / "trace.png").read_bytes()[:8] == PNG_MAGIC
    assert any("first 8 of 12" in ax.get_title(loc="left") for ax in fig.axes)
    mcmc = _weighted_result("nuts", "none")
    mcmc.log_weights = None
    mcmc.free_energy = helmholtz.FreeEnergy.none("MCMC")
    fig = plot_compare([result, mcmc], tmp_path / "cmp.png", max_vars=2,
                       exact_moments={"x": (1.0, 1.0)})
    assert (tmp_path / "cmp.png").read_bytes()[:8] == PNG_MAGIC
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_visible()]
    assert titles[:2] == ["x", "v[0]"] and titles[2].startswith("free energy")


# ------------------------------------------------------------------------------ issue 9/10
def test_compare_set_says_which_engines_took_an_option(tmp_path):
    code, out, err = call("compare", MODEL, "--engines", "ais,smc", "--set", "num_particles=60",
                          "--set", "num_temperatures=10", "--set", "num_replicates=2",
                          "--out", tmp_path)
    assert code == 0, err
    assert "option num_particles: set for ais, smc" in err
    assert "option num_temperatures: set for ais; not an option of smc" in err
    # an old name that meant different things in different engines is not translated
    code, _, err = call("compare", MODEL, "--engines", "svi,ais", "--set", "num_steps=10",
                        "--out", tmp_path)
    assert code == 2
    err = " ".join(err.split())  # the message is wrapped to the terminal
    assert "num_steps → num_optimizer_steps (svi)" in err
    assert "num_steps → num_temperatures (ais)" in err


def test_cli_checkpoint_refuses_another_run_and_overwrites_on_request(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    small = ["--set", "num_particles=50", "--set", "num_temperatures=5"]
    helmholtz.infer(MODEL, "ais", seed=0, num_particles=50, num_temperatures=5,
                    checkpoint=helmholtz.Checkpoint(ckpt, keep=True))
    code, _, err = call("run", MODEL, "--engine", "ais", *small, "--seed", "1", "--quiet",
                        "--checkpoint", ckpt, "--out", tmp_path)
    assert code == 2 and "written by a different run: seed differs" in " ".join(err.split())
    code, out, err = call("run", MODEL, "--engine", "ais", *small, "--seed", "1", "--quiet",
                          "--checkpoint", ckpt, "--overwrite-checkpoint", "--out", tmp_path)
    assert code == 0, err
    assert not ckpt.exists()  # the finished run removed it
    # the same command again (a fresh checkpoint) prints the same free energy
    code, again, _ = call("run", MODEL, "--engine", "ais", *small, "--seed", "1", "--quiet",
                          "--checkpoint", ckpt, "--out", tmp_path)
    line = next(x for x in out.splitlines() if x.startswith("free energy"))
    assert line == next(x for x in again.splitlines() if x.startswith("free energy"))


def test_summary_skips_constant_components():
    """A correlation matrix's unit diagonal is constant in every draw: the summary lists
    the off-diagonal entries and the other sites, not the ones."""
    rng = np.random.default_rng(0)
    rho = np.tanh(rng.normal(size=(2, 50)))
    corr = np.ones((2, 50, 2, 2))
    corr[..., 0, 1] = corr[..., 1, 0] = rho
    result = helmholtz.Result(engine="nuts", model="m", samples={
        "corr": corr, "mu": rng.normal(size=(2, 50))}, free_energy=helmholtz.FreeEnergy.none(""))
    table = summary_table(result)
    assert list(table.index) == ["corr[0,1]", "corr[1,0]", "mu"]
    np.testing.assert_allclose(table.loc["mu", "mean"], result.samples["mu"].mean(), rtol=1e-6)


# ------------------------------------------------------------------------------ no draws
def test_run_prints_what_a_drawless_result_holds(tmp_path):
    """``em`` returns a fitted θ and the transition-path engines per-path statistics, no
    posterior draws: ``run`` prints θ (the saved values) or the path metrics (those
    ``transition_metrics`` reads from the saved Result) and plots no trace."""
    from helmholtz.paths.metrics import transition_metrics

    model = tmp_path / "mix.py"
    model.write_text(textwrap.dedent("""
        import numpy as np
        import numpyro, numpyro.distributions as dist
        from numpyro.distributions import constraints

        x = np.concatenate([np.full(30, -2.0), np.full(70, 3.0)]) + np.tile([-.5, .5], 50)

        def model():
            w = numpyro.param("w", np.array([0.5, 0.5]), constraint=constraints.simplex)
            mu = numpyro.param("mu", np.array([-1.0, 1.0]))
            with numpyro.plate("n", x.size):
                z = numpyro.sample("z", dist.Categorical(w), infer={"enumerate": "parallel"})
                numpyro.sample("x", dist.Normal(mu[z], 0.5), obs=x)
        """))
    code, out, err = call("run", f"{model}:model", "--engine", "em", "--out",
                          tmp_path / "em", "--quiet")
    assert code == 0, err
    saved = helmholtz.Result.load(tmp_path / "em" / "em.nc").fitted.params
    assert "fitted parameters:" in out and "no posterior draws" in out
    line = next(line for line in out.splitlines() if line.strip().startswith("mu "))
    printed = [float(v) for v in re.findall(r"-?\d+\.\d+", line.split(":", 1)[1])]
    np.testing.assert_allclose(printed, saved["mu"], atol=1e-4)
    np.testing.assert_allclose(saved["mu"], [-2.0, 3.0], atol=0.05)  # the cluster centres
    assert not (tmp_path / "em" / "em_trace.png").exists()

    from helmholtz.models import transition_paths

    code, out, err = call("run", f"{transition_paths.__file__}:muller_brown_paths",
                          "--engine", "steered-md", "--set", "num_samples=64", "--out",
                          tmp_path / "smd", "--quiet")
    assert code == 0, err
    loaded = helmholtz.Result.load(tmp_path / "smd" / "steered-md.nc")
    thp = float(re.search(r"^steered-md\s+\S+ ± \S+\s+(\S+) ±", out, re.M).group(1))
    assert thp == pytest.approx(transition_metrics(loaded).thp, abs=0.01)
