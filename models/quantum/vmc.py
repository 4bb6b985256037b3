"""Variational Monte Carlo as an engine: minimise E[ψ] = E_{x∼|ψ|²}[E_loc(x)] by a gradient
flow of q = |ψ|², projected onto the ansatz.

Three flows, all with the same stochastic-reconfiguration preconditioner:

* ``"fisher-rao"`` (standard VMC): ∂q/∂t = −(E_loc − Ē) q, whose projection onto the
  ansatz is the gradient E[(E_loc − Ē) ∇_θ log q]. Preconditioned by the Fisher
  information S = Cov(∇_θ log q) this is stochastic reconfiguration (Sorella 1998),
  i.e. imaginary-time evolution projected onto the ansatz.
* ``"wasserstein"`` (Wasserstein QMC; Neklyudov, Nys, Thiede, Carrasquilla, Liu, Welling
  & Makhzani, NeurIPS 2023): ∂q/∂t = ∇·(q ∇E_loc). Its projection is the gradient of
  the per-walker loss ⟨tanh(∇ₓE_loc), ∇ₓ log q_θ⟩ with ∇ₓE_loc held fixed (integrate by
  parts: −∇_θ of that loss is ∫ ∂_θ log q · ∇·(q ∇E_loc), the target velocity of q seen
  through the ansatz's tangent vectors); tanh bounds each component, as in the paper.
* ``"wfr"``: both at once (Wasserstein–Fisher–Rao), the Fisher–Rao gradient plus
  ``wasserstein_weight`` times the Wasserstein one.

In the terms of :mod:`helmholtz.flows`: the first variation of E[q] is E_loc, the
Fisher–Rao metric turns it into a birth–death rate and the Wasserstein metric into a
velocity −∇E_loc; here both are seen through the ansatz rather than applied to particles.

One iteration: ``mcmc_steps`` moves of every walker on |ψ|² (:mod:`.mcmc`), local
energies (exact Laplacian, :mod:`.hamiltonian`), local energies clipped at 5 mean
absolute deviations from their median for the gradient only (FermiNet's default), the
flow's gradient g, the natural-gradient direction (S + λ)⁻¹ g (dense, in parameter or
walker space, whichever is smaller: an SR solve that fits a CPU), a norm constraint
η² δᵀSδ ≤ ``max_norm`` (the idea of FermiNet's KFAC norm constraint; note that here S
and g are of log q = 2 log|ψ|, so S is 4× and g 2× FermiNet's, and λ, ``max_norm`` and
η are not on its scale), and the update by an optax
transformation (SGD with η_t = η/(1 + t/decay) by default). After training the walkers
keep sampling with the final wavefunction, first ``equilibration`` sweeps that are
discarded (the walkers lag a wavefunction that is being trained), then sweeps whose
local energies' mean, with a blocked (Flyvbjerg–Petersen) error bar, is the energy.

Failure: a walker whose |ψ|² or E_loc is not finite is moved onto a finite walker,
counted per step in the trace, and never averaged; an iteration whose energy is not
finite or rises more than ``max_energy_rise`` Hartree above the best so far (an update
that made the energy explode) restores the parameters before that update and stops the
training there, with a ``diverged`` status naming the step. Checkpoints (the driver's)
hold parameters, optimiser state and walkers, so the last good parameters are what a
checkpoint keeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from helmholtz.engines.base import Engine, Phase, _in_range, _positive_int, _positive_number
from helmholtz.errors import OptionError
from helmholtz.result import FittedModule, FreeEnergy, Result, Status

from .hamiltonian import local_energy
from .mcmc import SAMPLERS, adapt_step_size, init_walkers, replace_bad, sweep

__all__ = ["VMC", "FLOWS", "blocking", "run_vmc", "energy_summary", "build_ansatz"]

FLOWS = ("fisher-rao", "wasserstein", "wfr")
_ALIASES = {"vmc": "fisher-rao", "fr": "fisher-rao", "wqmc": "wasserstein", "w": "wasserstein",
            "joint": "wfr", "w(fr)": "wfr"}
ANSATZE = ("slater-jastrow", "ferminet")


def _system_kwargs(system) -> dict:
    return {"charges": list(system.charges), "positions": [list(p) for p in system.positions],
            "n_up": system.n_up, "n_down": system.n_down, "name": system.name,
            "symbols": list(system.symbols)}


def build_ansatz(kind: str, system: dict, key=None, **options):
    """The ansatz ``kind`` for a system given as JSON-able keyword arguments of
    :class:`.systems.Molecule` (what a saved Result records to rebuild it)."""
    from .systems import Molecule

    mol = Molecule(tuple(system["charges"]), tuple(map(tuple, system["positions"])),
                   system["n_up"], system["n_down"], name=system.get("name", "molecule"),
                   symbols=tuple(system.get("symbols", ())))
    key = jax.random.key(0) if key is None else key
    if kind == "slater-jastrow":
        from .ansatz import slater_jastrow

        return slater_jastrow(mol, key=key, **options)
    if kind == "ferminet":
        from .ferminet import FermiNet, pretrain
        from .hf import hartree_fock

        steps = options.pop("pretrain_steps", 0)
        basis = options.pop("basis", "cc-pvdz")
        net = FermiNet(key, mol, **options)
        if steps:
            net = pretrain(net, hartree_fock(mol, basis), jax.random.fold_in(key, 1),
                           num_steps=steps)
        return net
    raise OptionError(f"unknown ansatz {kind!r}; valid: {', '.join(ANSATZE)} or an equinox "
                      "module")


class VMCState(NamedTuple):
    """Walkers first (the driver shards the population over devices by them)."""

    walkers: jax.Array
    params: Any
    opt_state: Any
    step_size: jax.Array
    failed_at: jax.Array     # first iteration that failed (−1 while none)
    diverged: jax.Array      # whether it was an energy explosion (else not finite)
    best: jax.Array          # lowest iteration energy so far
    previous: Any            # parameters before the last update


def blocking(series, min_blocks: int = 16) -> tuple[float, float, str]:
    """Mean of a correlated series and its Flyvbjerg–Petersen blocked standard error.

    The series is halved by averaging neighbours until fewer than ``min_blocks`` blocks
    remain; the standard error of the mean at each level grows while blocks are still
    correlated and levels off once they are not, so the largest over the levels is
    taken (conservative). The third value is a warning: non-empty when there are fewer
    than three levels, or when the coarsest level's error still exceeds the one two
    levels finer by more than three times its own uncertainty (no plateau: the series
    is too short for its correlation time).
    """
    x = np.asarray(series, np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (float(x.mean()) if x.size else math.nan), math.nan, "fewer than 2 values"
    ses = []
    while x.size >= min_blocks:
        ses.append(x.std(ddof=1) / math.sqrt(x.size))
        m = x.size // 2 * 2
        x = 0.5 * (x[0:m:2] + x[1:m:2])
    mean = float(np.mean(np.asarray(series, np.float64)[np.isfinite(series)]))
    if not ses:
        return mean, float(np.std(x, ddof=1) / math.sqrt(x.size)), \
            f"only {x.size} values: too few to block"
    se = float(max(ses))
    warn = ""
    if len(ses) < 3:
        warn = f"only {len(series)} values: too few blocking levels to see a plateau"
    else:
        blocks = x.size * 2                   # blocks at the coarsest level used
        noise = math.sqrt(1.0 / (2.0 * (blocks - 1)))
        if ses[-1] > ses[-3] * (1.0 + 3.0 * noise):
            warn = ("blocked error bar still rising at the coarsest levels: the series is "
                    "too short for its autocorrelation time")
    return mean, se, warn


@dataclass(frozen=True)
class VMC(Engine):
    """Variational Monte Carlo of a :class:`.systems.Molecule` (or the harmonic oscillator).

    Options: ``ansatz`` (``"slater-jastrow"``, ``"ferminet"`` or an equinox module giving
    log|ψ|, the starting wavefunction), ``ansatz_options`` (keyword arguments of its
    builder, e.g. ``{"basis": "cc-pvdz", "width": 16}``), ``flow`` (``"fisher-rao"`` =
    standard VMC, ``"wasserstein"`` = WQMC, ``"wfr"`` = both; aliases ``vmc``, ``wqmc``,
    ``joint``), ``num_walkers``, ``num_steps`` (optimisation iterations), ``burn_in``
    (sweeps before training), ``equilibration`` (sweeps with the trained wavefunction before
    the energy is measured; default ``burn_in``), ``num_samples`` (sweeps after training
    that estimate the energy), ``mcmc_steps`` (moves per sweep), ``sampler``
    (``"metropolis"`` or ``"mala"``), ``target_acceptance``, ``initial_step_size``,
    ``learning_rate``, ``decay_steps`` (η_t = η/(1 + t/decay)), ``preconditioner`` (``"sr"``
    or ``None``), ``damping`` (λ of SR; default 1e-3 for ``"fisher-rao"`` and 0.1 for the
    flows with a Wasserstein part, see :attr:`sr_damping`), ``max_norm`` (norm constraint;
    ``None`` for none), ``optimizer`` (an optax transformation; default SGD at η_t),
    ``clip`` (local-energy clipping in mean absolute deviations; ``None`` for none),
    ``wasserstein_weight`` (the Wasserstein share of ``"wfr"``), ``max_energy_rise``
    (Hartree; the explosion test), ``scale_by_nuclear_distance`` (Metropolis moves scaled
    per electron by the harmonic mean of its distances to the nuclei,
    :func:`.mcmc.nuclear_scale`; the step size is then per bohr of that distance).
    """

    name: ClassVar[str] = "vmc"
    description: ClassVar[str] = "variational Monte Carlo: Fisher–Rao (SR), Wasserstein QMC or WFR"
    population: ClassVar[bool] = True
    approximate: ClassVar[str] = ("a variational energy: an upper bound on the ground-state "
                                  "energy, exact only if the ansatz contains the ground state")

    ansatz: Any = "slater-jastrow"
    ansatz_options: Any = None
    flow: str = "fisher-rao"
    # SR estimates its direction from the walkers: with 512 the LiH energy wandered by tens
    # of mHa over 1500 steps, with 2048 it fell steadily (benchmarks/README.md, vmc.py)
    num_walkers: int = 1024
    num_steps: int = 1000
    burn_in: int = 100
    equilibration: int | None = None
    num_samples: int = 200
    mcmc_steps: int = 10
    sampler: str = "metropolis"
    target_acceptance: float = 0.5
    initial_step_size: float = 0.3
    learning_rate: float = 0.05
    decay_steps: float = 1000.0
    preconditioner: str | None = "sr"
    damping: float | None = None
    max_norm: float | None = 1e-3
    optimizer: Any = None
    clip: float | None = 5.0
    wasserstein_weight: float = 1.0
    max_energy_rise: float = 1.0
    scale_by_nuclear_distance: bool = False

    def validate(self):
        flow = _ALIASES.get(str(self.flow).lower(), str(self.flow).lower())
        if flow not in FLOWS:
            raise OptionError(f"vmc: unknown flow {self.flow!r}; valid: {', '.join(FLOWS)} "
                              f"(aliases {', '.join(_ALIASES)})")
        object.__setattr__(self, "flow", flow)
        if isinstance(self.ansatz, str) and self.ansatz not in ANSATZE:
            raise OptionError(f"vmc: unknown ansatz {self.ansatz!r}; valid: "
                              f"{', '.join(ANSATZE)} or an equinox module")
        if not isinstance(self.ansatz, str) and not callable(self.ansatz):
            raise OptionError("vmc: ansatz must be a name or an equinox module x -> log|ψ(x)|")
        if self.sampler not in SAMPLERS:
            raise OptionError(f"vmc: unknown sampler {self.sampler!r}; valid: "
                              f"{', '.join(SAMPLERS)}")
        if not isinstance(self.scale_by_nuclear_distance, bool):
            raise OptionError("vmc: scale_by_nuclear_distance must be True or False, got "
                              f"{self.scale_by_nuclear_distance!r}")
        if self.scale_by_nuclear_distance and self.sampler != "metropolis":
            raise OptionError("vmc: scale_by_nuclear_distance scales Metropolis moves; it "
                              f"does not apply to sampler {self.sampler!r}")
        if self.preconditioner not in ("sr", None):
            raise OptionError(f"vmc: preconditioner must be 'sr' or None, got "
                              f"{self.preconditioner!r}")
        _positive_int(self, "num_walkers", "num_steps", "mcmc_steps", "num_samples")
        _positive_int(self, "burn_in", allow_zero=True)
        if self.equilibration is not None:
            _positive_int(self, "equilibration", allow_zero=True)
        _in_range(self, "target_acceptance", 0.0, 1.0)
        _positive_number(self, "initial_step_size", "learning_rate", "decay_steps",
                         "max_energy_rise")
        _positive_number(self, "wasserstein_weight", allow_zero=True)
        for n in ("max_norm", "clip", "damping"):
            v = getattr(self, n)
            if v is not None and not (isinstance(v, int | float) and 0 < v < math.inf):
                raise OptionError(f"vmc: {n} must be positive or None, got {v!r}")
        if self.ansatz_options is not None and not isinstance(self.ansatz_options, dict):
            raise OptionError("vmc: ansatz_options must be a dict of the builder's keywords")

    @property
    def sr_damping(self) -> float:
        """λ of SR. The Fisher–Rao gradient lies in the span of the per-walker scores, so
        a small λ (1e-3, FermiNet's) is safe; the Wasserstein gradient does not, and
        (S + λ)⁻¹ amplifies its components along directions the walkers barely see by
        up to 1/λ. Measured on He (Slater–Jastrow, 256 walkers, 200 steps): λ = 1e-3 let
        the energy climb from −2.80 to −1.95 Ha until the explosion test stopped it,
        λ = 1e-2 drifted up to −2.75, λ = 0.1 reached −2.90 within 40 steps. (WQMC's
        authors precondition with KFAC, whose block-diagonal curvature is damped
        similarly.)"""
        if self.damping is not None:
            return float(self.damping)
        return 1e-3 if self.flow == "fisher-rao" else 0.1

    # ------------------------------------------------------------------ the ansatz
    def _check_system(self, system):
        if not hasattr(system, "potential") or not hasattr(system, "n_particles"):
            raise TypeError(f"vmc runs on a quantum system (Molecule, HarmonicOscillator), "
                            f"got {type(system).__name__}")
        if self.scale_by_nuclear_distance and not hasattr(system, "nuclei"):
            raise OptionError(f"vmc: scale_by_nuclear_distance needs nuclei; "
                              f"{type(system).__name__} has none")
        if isinstance(self.ansatz, str) and not hasattr(system, "nuclei"):
            raise OptionError(f"vmc: ansatz {self.ansatz!r} needs nuclei; for "
                              f"{type(system).__name__} pass an equinox module as ansatz")

    def initial_wavefunction(self, system):
        """The starting ansatz: the module given, or the named one built for ``system``
        (Hartree–Fock by pyscf; FermiNet pretrained on it), built once per process and
        kept, so that the compiled steps and a resumed run see the same one."""
        if not isinstance(self.ansatz, str):
            return self.ansatz
        opts = self.ansatz_options or {}
        key = (self.ansatz, tuple(sorted((k, repr(v)) for k, v in opts.items())), system,
               bool(jax.config.jax_enable_x64))
        if key not in _BUILT:
            _BUILT[key] = build_ansatz(self.ansatz, _system_kwargs(system), **opts)
        return _BUILT[key]

    def _static(self, system):
        return eqx.partition(self.initial_wavefunction(system), eqx.is_array)[1]

    def wavefunction(self, params, static):
        return eqx.combine(params, static)

    def _schedule(self):
        return lambda t: self.learning_rate / (1.0 + t / self.decay_steps)

    def make_optimizer(self):
        if self.optimizer is not None:
            return self.optimizer
        if self.preconditioner is None:
            return optax.adam(self._schedule())
        return optax.sgd(self._schedule())

    # ------------------------------------------------------------------ protocol
    def start(self, rng_key, system, run):
        self._check_system(system)
        wf = self.initial_wavefunction(system)
        params = eqx.filter(wf, eqx.is_array)
        walkers = init_walkers(rng_key, system, self.num_walkers)
        ok = jnp.isfinite(jax.vmap(wf)(walkers))
        if int(jnp.sum(ok)) < self.num_walkers // 2 + 1:
            raise ValueError(f"vmc: log|ψ| is not finite at {int(jnp.sum(~ok))} of "
                             f"{self.num_walkers} starting walkers; check the ansatz")
        walkers = _reset(walkers, ok)   # a few: moved onto finite ones (burn-in spreads them)
        dt = walkers.dtype
        return VMCState(walkers, params, self.make_optimizer().init(params),
                        jnp.asarray(self.initial_step_size, dt), jnp.asarray(-1, jnp.int32),
                        jnp.asarray(False), jnp.asarray(jnp.inf, dt), params)

    def phases(self, system):
        self._check_system(system)
        self.initial_wavefunction(system)   # built here, on the host, before any tracing
        out = []
        if self.burn_in:
            out.append(Phase("burn-in", type(self).burn_step, self.burn_in,
                             postfix=_acceptance_postfix))
        out.append(Phase("training", type(self).train_step, self.num_steps,
                         postfix=_energy_postfix))
        # the walkers lag the wavefunction while it trains: on LiH (FermiNet, 512 walkers)
        # the first 30 sampling sweeps after 1500 steps read 10 mHa above the later ones
        settle = self.burn_in if self.equilibration is None else self.equilibration
        if settle:
            out.append(Phase("equilibration", type(self).burn_step, settle,
                             postfix=_acceptance_postfix))
        out.append(Phase("sampling", type(self).sample_step, self.num_samples,
                         postfix=_energy_postfix))
        return tuple(out)

    # ------------------------------------------------------------------ steps
    def _sweep(self, key, system, state, adapt: bool):
        wf = self.wavefunction(state.params, self._static(system))
        nuclei = getattr(system, "nuclei", None) if self.scale_by_nuclear_distance else None
        x, acc, bad = sweep(key, wf, state.walkers, state.step_size, self.mcmc_steps,
                            self.sampler, nuclei)
        s = adapt_step_size(state.step_size, acc, self.target_acceptance) if adapt \
            else state.step_size
        return wf, x, acc, bad, s

    def burn_step(self, rng_key, system, state, i):
        _, x, acc, bad, s = self._sweep(rng_key, system, state, True)
        return state._replace(walkers=x, step_size=s), {"acceptance": acc, "nan_walkers": bad}

    def sample_step(self, rng_key, system, state, i):
        wf, x, acc, bad, s = self._sweep(rng_key, system, state, False)
        e = jax.vmap(lambda y: local_energy(wf, system, y))(x)
        ok = jnp.isfinite(e)
        n = jnp.maximum(jnp.sum(ok), 1)
        mean = jnp.sum(jnp.where(ok, e, 0.0)) / n
        var = jnp.sum(jnp.where(ok, (e - mean) ** 2, 0.0)) / n
        mean = jnp.where(jnp.any(ok), mean, jnp.nan)
        x = _reset(x, ok)
        return state._replace(walkers=x), {"energy": mean, "variance": var,
                                           "acceptance": acc,
                                           "nan_walkers": bad + jnp.sum(~ok)}

    def train_step(self, rng_key, system, state, i):
        wf, x, acc, bad, s = self._sweep(rng_key, system, state, True)
        static = self._static(system)
        theta, unravel = ravel_pytree(state.params)

        def logpsi(th, y):
            return self.wavefunction(unravel(th), static)(y)

        need_grad = self.flow != "fisher-rao"
        if need_grad:
            e, ge = jax.vmap(jax.value_and_grad(lambda y: local_energy(wf, system, y)))(x)
            ok = jnp.isfinite(e) & jnp.all(jnp.isfinite(ge), axis=(1, 2))
        else:
            e = jax.vmap(lambda y: local_energy(wf, system, y))(x)
            ge = None
            ok = jnp.isfinite(e)
        # per-walker ∇_θ log q = 2 ∇_θ log|ψ|; a walker whose gradient is not finite
        # (a near-singular determinant) is dropped like one whose energy is not
        grads = jax.vmap(jax.grad(logpsi), in_axes=(None, 0))(theta, x) * 2.0
        ok = ok & jnp.all(jnp.isfinite(grads), axis=1)
        grads = jnp.where(ok[:, None], grads, 0.0)
        n_ok = jnp.sum(ok)
        w = ok / jnp.maximum(n_ok, 1)
        e0 = jnp.where(ok, e, 0.0)
        mean = jnp.where(n_ok > 0, jnp.sum(w * e0), jnp.nan)
        var = jnp.sum(w * (e0 - jnp.where(n_ok > 0, mean, 0.0)) ** 2)
        median = jnp.nanmedian(jnp.where(ok, e, jnp.nan))
        centred = grads - jnp.sum(w[:, None] * grads, axis=0)
        g = jnp.zeros_like(theta)
        if self.flow in ("fisher-rao", "wfr"):
            ec = _clip(e0, ok, self.clip)
            ec = ec - jnp.sum(w * ec)
            g = g + jnp.sum((w * jnp.where(ok, ec, 0.0))[:, None] * centred, axis=0)
        if need_grad:
            # walkers whose score |∇ₓ log q| is an outlier (beyond median + 5 mean absolute
            # deviations, as the WQMC authors do) are left out of the Wasserstein term
            score = jax.vmap(jax.grad(wf))(x) * 2.0
            norm = jnp.where(ok, jnp.sqrt(jnp.sum(score ** 2, axis=(1, 2))), jnp.nan)
            med = jnp.nanmedian(norm)
            keep = ok & (norm <= med + 5.0 * jnp.nanmean(jnp.abs(norm - med)))
            wk = keep / jnp.maximum(jnp.sum(keep), 1)
            force = jnp.where(keep[:, None, None], jnp.tanh(jnp.where(ok[:, None, None], ge,
                                                                     0.0)), 0.0)
            weight = 1.0 if self.flow == "wasserstein" else self.wasserstein_weight
            x_safe = _reset(x, keep)          # no NaN at dropped walkers, even times zero

            def wloss(th):
                gx = jax.vmap(jax.grad(lambda y: logpsi(th, y)))(x_safe) * 2.0
                return jnp.sum(wk * jnp.sum(force * gx, axis=(1, 2)))

            g = g + weight * jax.grad(wloss)(theta)
        if self.preconditioner == "sr":
            a = centred * jnp.sqrt(w)[:, None]
            d = _sr_solve(a, g, self.sr_damping)
            if self.max_norm is not None:
                eta = self._schedule()(i.astype(theta.dtype))
                fisher = jnp.sum((a @ d) ** 2)
                scale = jnp.minimum(1.0, jnp.sqrt(self.max_norm / jnp.maximum(
                    eta ** 2 * fisher, 1e-300)))
                d = d * scale
        else:
            d = g
        updates, opt_state = self.make_optimizer().update(unravel(d), state.opt_state,
                                                          state.params)
        params = optax.apply_updates(state.params, updates)
        # explosion and NaN checks. The explosion test compares the median local energy
        # with the lowest median so far: a mean would let one walker near a node (E_loc
        # of −500 Ha among 256) lower the record for good and stop a healthy run later.
        running = state.failed_at < 0
        sampled = (n_ok > 0) & jnp.isfinite(mean)          # these parameters' energy is fine
        exploded = sampled & (median > state.best + self.max_energy_rise)
        go = running & sampled & ~exploded & jnp.all(jnp.isfinite(d))
        pick = lambda a, b: jax.tree_util.tree_map(lambda u, v: jnp.where(go, u, v), a, b)
        stop = running & ~go
        # an explosion or a non-finite energy: back to the parameters before the update
        # that led here; an update that failed on sound parameters: keep them
        revert = stop & ~(sampled & ~exploded)
        stay = jax.tree_util.tree_map(lambda p, q: jnp.where(revert, q, p), state.params,
                                      state.previous)
        new = VMCState(
            walkers=_reset(x, ok), params=pick(params, stay),
            opt_state=pick(opt_state, state.opt_state), step_size=s,
            failed_at=jnp.where(stop, i.astype(jnp.int32), state.failed_at),
            diverged=jnp.where(stop & exploded, True, state.diverged),
            best=jnp.where(go, jnp.minimum(state.best, median), state.best),
            previous=pick(state.params, state.previous))
        info = {"energy": mean, "variance": var, "acceptance": acc,
                "nan_walkers": bad + (self.num_walkers - n_ok), "step_size": s,
                "grad_norm": jnp.linalg.norm(g)}
        return new, info

    # ------------------------------------------------------------------ result
    def result(self, rng_key, system, state, infos, run):
        wf = self.wavefunction(state.params, self._static(system))
        sampling = {k: np.asarray(v) for k, v in infos["sampling"].items()}
        training = {k: np.asarray(v) for k, v in infos["training"].items()}
        energy, se, warning = blocking(sampling["energy"])
        variance = float(np.mean(sampling["variance"]))
        ref = getattr(system, "reference_energy", None)
        note = (f"variational energy (Hartree) from {self.num_samples} sweeps of "
                f"{self.num_walkers} walkers after {self.num_steps} {self.flow} steps; "
                f"blocked error bar; local-energy variance {variance:.4g} Ha²")
        fe = FreeEnergy(energy, se, "lower bound", note, units="Hartree", warning=warning)
        status = _status(state, training, sampling)
        trace = {f"train_{k}" if k != "energy" else "energy": v for k, v in training.items()}
        trace["loss"] = training["energy"]
        factory, kwargs = _factory(self, system)
        return Result(
            engine=self.name, model=system.name, samples={"electrons": np.asarray(
                state.walkers)[None]},
            free_energy=fe, estimates={"energy": fe}, trace=trace,
            # per sampling sweep, as (chain, draw) = (1, sweep) like every engine's stats
            stats={k: sampling[k][None] for k in ("energy", "variance", "acceptance",
                                                  "nan_walkers")},
            compile_seconds=run.timer.compile_seconds, run_seconds=run.timer.run_seconds,
            exact_log_z=None,
            config={**{k: v for k, v in self.options().items()
                       if isinstance(v, str | int | float | bool | type(None))},
                    "ansatz": self.ansatz if isinstance(self.ansatz, str)
                    else type(self.ansatz).__name__,
                    "reference_energy": ref, "local_energy_variance": variance,
                    "num_parameters": int(ravel_pytree(state.params)[0].size)},
            fitted=FittedModule(wf, factory, kwargs) if factory else None,
            status=status)


_BUILT: dict = {}


def _factory(engine, system):
    if isinstance(engine.ansatz, str) and hasattr(system, "nuclei"):
        return ("helmholtz.models.quantum.vmc:build_ansatz",
                {"kind": engine.ansatz, "system": _system_kwargs(system),
                 **{k: v for k, v in (engine.ansatz_options or {}).items()
                    if k != "pretrain_steps"}})
    cls = type(engine.ansatz)
    try:       # a module class that rebuilds without arguments can be saved and loaded
        eqx.filter_eval_shape(cls)
    except Exception:
        return None, {}
    return f"{cls.__module__}:{cls.__qualname__}", {}


def _reset(x, ok):
    return replace_bad(x, ~ok)


def _clip(e, ok, scale):
    """Local energies clipped to median ± scale·(mean absolute deviation from the median)."""
    if scale is None:
        return e
    med = jnp.nanmedian(jnp.where(ok, e, jnp.nan))
    mad = jnp.nanmean(jnp.where(ok, jnp.abs(e - med), jnp.nan))
    return jnp.clip(e, med - scale * mad, med + scale * mad)


def _sr_solve(a, g, damping):
    """(AᵀA + λI)⁻¹ g, A = √w (O − Ō) (walkers × parameters): a Cholesky solve in
    parameter space when there are fewer parameters than walkers, else the same by the
    Woodbury identity in walker space, (1/λ)(g − Aᵀ(λI + AAᵀ)⁻¹ A g)."""
    w, p = a.shape
    if p <= w:
        s = a.T @ a + damping * jnp.eye(p, dtype=a.dtype)
        return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(s), g)
    k = a @ a.T + damping * jnp.eye(w, dtype=a.dtype)
    inner = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(k), a @ g)
    return (g - a.T @ inner) / damping


def _status(state, training, sampling) -> Status:
    at = int(np.asarray(state.failed_at))
    if at >= 0:
        energies = training["energy"]
        if bool(np.asarray(state.diverged)):
            return Status("diverged", f"training stopped at step {at}: the median local "
                          f"energy rose more than max_energy_rise above the lowest so far "
                          f"({float(np.asarray(state.best)):.6g} Ha; mean energy at that "
                          f"step {energies[at]:.6g} Ha); the parameters are those before "
                          "the update that caused it")
        return Status("nan", f"training stopped at step {at}: the energy or the update was "
                      "not finite; the parameters are the last ones whose energy was")
    bad_train = int(np.sum(training["nan_walkers"]))
    bad_sample = int(np.sum(sampling["nan_walkers"]))
    if bad_sample or bad_train:
        steps = np.nonzero(sampling["nan_walkers"])[0][:5]
        return Status("unreliable", f"{bad_train} walker-steps in training and {bad_sample} "
                      f"in sampling (first sampling steps {steps.tolist()}) had non-finite "
                      "|ψ|² or local energy; they were moved onto finite walkers and left "
                      "out of the averages")
    return Status()


def _energy_postfix(engine, state, info):
    if info is None:
        return {}
    e = np.asarray(info["energy"], np.float64)
    return {"E": f"{np.nanmean(e[-10:]):.5f}", "var": f"{np.nanmean(info['variance'][-10:]):.3g}"}


def _acceptance_postfix(engine, state, info):
    if info is None:
        return {}
    return {"accept": f"{float(np.mean(info['acceptance'])):.2f}",
            "step": f"{float(np.asarray(state.step_size)):.3g}"}


def energy_summary(result: Result) -> dict:
    """Energy, blocked error, local-energy variance and the error against the reference
    (mHa) of a VMC Result, as a dict for tables."""
    fe = result.free_energy
    ref = result.config.get("reference_energy")
    return {"system": result.model, "flow": result.config.get("flow"),
            "energy": fe.value, "se": fe.se,
            "error_mHa": (fe.value - ref) * 1e3 if ref is not None else math.nan,
            "variance": result.config.get("local_energy_variance"),
            "seconds_per_step": result.run_seconds / max(1, result.config.get("num_steps", 1)),
            "status": result.status.code}


def run_vmc(system, rng_key, *, progress_bar: bool = False, checkpoint=None, **options):
    """Run :class:`VMC` with ``options`` on ``system`` and return its Result."""
    return VMC(**options).run(system, rng_key, progress_bar=progress_bar,
                              checkpoint=checkpoint)
