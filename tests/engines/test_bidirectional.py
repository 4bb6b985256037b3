"""Bidirectional Monte Carlo: reverse AIS bounds log Z from above, forward AIS from below,
and BAR combines both directions."""

import jax
import numpy as np
import pytest

import helmholtz
from helmholtz.engines.bidirectional import BAR, ReverseAIS, _replay_schedule
from helmholtz.errors import ModelError
from helmholtz.models import get

NUM_PARTICLES = 200


@pytest.fixture(scope="module")
def linear_gaussian():
    return get("linear_gaussian").target(seed=0)


@pytest.fixture(scope="module")
def sandwiches(linear_gaussian):
    """(forward ais, reverse ais) on linear_gaussian at a short and a long schedule."""
    out = {}
    for num_steps in (30, 300):
        options = dict(num_particles=NUM_PARTICLES, num_steps=num_steps)
        out[num_steps] = (helmholtz.infer(linear_gaussian, "ais", seed=0, **options),
                          helmholtz.infer(linear_gaussian, "reverse-ais", seed=0, **options))
    return out


@pytest.mark.parametrize("num_steps", [30, 300])
def test_reverse_and_forward_ais_sandwich_log_z(sandwiches, linear_gaussian, num_steps):
    lower, upper = sandwiches[num_steps]
    truth = linear_gaussian.log_z
    assert lower.free_energy.kind == "unbiased-Z estimate"
    assert upper.free_energy.kind == "upper bound"
    assert lower.log_z <= truth + 3 * lower.free_energy.se, (lower.log_z, truth)
    assert upper.log_z >= truth - 3 * upper.free_energy.se, (upper.log_z, truth)
    # the two exp-averages sandwich log Z in expectation only: with 200 particles their
    # noise (se 0.07–0.9) exceeds the gap, and over seeds 0–5 on both stacks upper < lower
    # in 3 of 12 runs at 30 steps and 7 of 12 at 300, by at most 1.5 combined se
    assert upper.log_z > lower.log_z - 3 * np.hypot(lower.free_energy.se, upper.free_energy.se)
    # the mean works sandwich it for sure (Jensen: −⟨W_F⟩ ≤ log Ẑ_F, ⟨W_R⟩ ≥ log Ẑ_R): over
    # the same seeds both bounds stood ≥ 4.5 of their se off log Z, at either length
    lower_work, upper_work = mean_works(lower, upper)
    assert lower_work < truth < upper_work, (lower_work, truth, upper_work)


def mean_works(forward, reverse):
    """−⟨W_F⟩ and ⟨W_R⟩: the Jensen bounds below and above the two exp-averages."""
    return (-forward.stats["work"].astype(np.float64).mean(),
            reverse.stats["work"].astype(np.float64).mean())


def test_sandwich_tightens_with_more_steps(sandwiches, linear_gaussian):
    # the mean-work gap shrinks about as 1/steps (measured 7.5–9.6 nats at 30 steps,
    # 0.71–0.92 at 300, seeds 0–5 on both stacks)
    work_gap = {k: np.subtract(*mean_works(lo, up)[::-1]) for k, (lo, up) in sandwiches.items()}
    assert work_gap[300] < 0.5 * work_gap[30], work_gap
    gap = {k: up.log_z - lo.log_z for k, (lo, up) in sandwiches.items()}
    assert gap[300] < 0.5, gap


def test_reverse_ais_result_layout(sandwiches):
    result = sandwiches[30][1]
    assert result.samples["w"].shape == (1, NUM_PARTICLES, 3)  # the exact draws
    assert result.stats["work"].shape == (1, NUM_PARTICLES)
    assert result.log_weights is None
    beta = result.trace["beta"]
    assert beta.shape == (30,) and beta[-1] == 0.0 and np.all(np.diff(beta) < 0)
    # upper bound = −log mean exp(−W_R), and the trace ends on it
    w = -result.stats["work"][0].astype(np.float64)
    assert result.log_z == pytest.approx(-(np.logaddexp.reduce(w) - np.log(w.size)), abs=1e-5)
    assert result.trace["log_z"][-1] == pytest.approx(result.log_z, abs=1e-3)
    # the reverse runs start from exact posterior draws
    args, kwargs = get("linear_gaussian").args(seed=0)
    mean, cov = get("linear_gaussian").exact_posterior(*args, **kwargs)["w"]
    sd = np.sqrt(np.diag(cov) / NUM_PARTICLES)
    assert np.all(np.abs(result.samples["w"][0].mean(0) - mean) < 4 * sd)


def test_bar_engine_on_linear_gaussian(linear_gaussian):
    result = helmholtz.infer(linear_gaussian, "bar", seed=0, num_particles=NUM_PARTICLES,
                             num_steps=100)
    fe = result.free_energy
    assert fe.kind == "estimate"
    assert abs(result.log_z - linear_gaussian.log_z) < 3 * fe.se, (result.log_z, fe.se)
    cfg = result.config
    # BAR uses both directions, so it beats each one-sided estimate
    assert fe.se < min(cfg["forward_log_z_se"], cfg["reverse_log_z_se"])
    truth = linear_gaussian.log_z
    assert cfg["forward_log_z"] <= truth + 3 * cfg["forward_log_z_se"]
    assert cfg["reverse_log_z"] >= truth - 3 * cfg["reverse_log_z_se"]
    assert result.stats["work"].shape == result.stats["reverse_work"].shape == (1, NUM_PARTICLES)
    np.testing.assert_allclose(result.log_weights, -result.stats["work"])
    assert result.config["overlap"] > 0.3 and "WARNING" not in fe.note


def test_bar_warns_when_the_two_directions_do_not_overlap():
    # one temperature step on the 20-d Gaussian: forward and reverse works far apart
    target = get("gaussian_20d").target()
    result = helmholtz.infer(target, "bar", seed=0, num_particles=NUM_PARTICLES, num_steps=1)
    assert result.config["overlap"] < 0.06
    assert "barely overlap" in result.free_energy.warning
    assert result.status.code == "unreliable"


def test_bar_with_adaptive_kernels_replays_them_in_reverse():
    # the forward run tunes step size and preconditioner per temperature; the reverse run
    # must use the same kernels in reverse order (before the replay: z ≈ −8 here)
    target = get("gaussian_20d").target()
    result = helmholtz.infer(target, "bar", seed=0, num_particles=500, num_steps=30)
    assert result.config["adapt_step_size"] and result.config["precondition"]
    assert abs(result.log_z - target.log_z) < 3 * result.free_energy.se, (
        result.log_z, target.log_z, result.free_energy.se)


def test_replay_schedule_pairs_each_temperature_with_its_forward_kernel():
    betas = np.array([0.0, 0.2, 0.5, 1.0])  # forward rows k = 1, 2, 3 move at 0.2, 0.5, 1
    kernels = {"step_size": np.array([10.0, 20.0, 30.0]),
               "inverse_mass_matrix": np.array([[1.0], [2.0], [3.0]])}
    rows = _replay_schedule(betas, kernels)
    # reverse rows move at 0.5, 0.2, 0 and take the kernels used at 0.5 and 0.2 going forward
    np.testing.assert_array_equal(rows["betas"], [[1.0, 0.5], [0.5, 0.2], [0.2, 0.0]])
    np.testing.assert_array_equal(rows["step_size"], [20.0, 10.0, 10.0])
    np.testing.assert_array_equal(rows["inverse_mass_matrix"][:, 0], [2.0, 1.0, 1.0])


def test_data_simulated_from_the_prior_sandwich_their_log_z(linear_gaussian):
    # Grosse et al.'s route: no exact_posterior needed, z_true is the exact draw. A short
    # schedule (10 steps) opens a clear gap: averaged over data sets, reverse AIS lands
    # above each data set's exact log Z, and forward AIS below reverse AIS.
    from helmholtz.models.classic import linear_gaussian_log_z

    X = linear_gaussian.model_args[0][0]
    upper, lower = [], []
    for i in range(8):
        sim, _ = linear_gaussian.simulate(jax.random.key(100 + i))
        truth = linear_gaussian_log_z(X, np.asarray(sim.observed["y"]))
        options = dict(num_particles=NUM_PARTICLES, num_steps=10)
        up = helmholtz.infer(sim, "reverse-ais", seed=i, **options)
        assert up.free_energy.kind == "upper bound" and "simulated" in up.free_energy.note
        upper.append(up.log_z - truth)
        lower.append(helmholtz.infer(sim, "ais", seed=i, **options).log_z - truth)
    for gaps in (upper, np.subtract(upper, lower)):
        mean, sem = np.mean(gaps), np.std(gaps, ddof=1) / np.sqrt(len(gaps))
        assert mean > 2 * sem, (upper, lower)


def test_a_conditioned_model_does_not_reuse_its_exact_posterior(linear_gaussian):
    conditioned = linear_gaussian.condition({"y": np.zeros(20)})
    with pytest.raises(ModelError, match="simulate"):
        helmholtz.infer(conditioned, "reverse-ais", seed=0, num_particles=10, num_steps=2)


def test_reverse_ais_on_a_boltzmann_gaussian():
    # the zoo's Gaussian Boltzmann targets carry exact_posterior (mean and covariance)
    target = get("gaussian_2d").target()
    result = helmholtz.infer(target, "reverse-ais", seed=1, num_particles=100, num_steps=50)
    assert result.log_z >= target.log_z - 3 * result.free_energy.se
    assert result.log_z - target.log_z < 0.5


@pytest.mark.parametrize("engine", ["reverse-ais", "bar"])
def test_no_exact_posterior_is_a_clear_error(engine):
    with pytest.raises(ModelError, match="exact posterior"):
        helmholtz.infer(get("double_well").target(), engine, seed=0, num_particles=10,
                        num_steps=2)


def test_engines_are_registered():
    assert isinstance(helmholtz.get_engine("reverse-ais"), ReverseAIS)
    assert isinstance(helmholtz.get_engine("bar"), BAR)
    assert {"reverse-ais", "bar"} <= set(helmholtz.engine_names())
