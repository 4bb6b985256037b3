"""Expectation–maximisation as stochastic thermodynamics: the ``em`` engine.

For a model with ``numpyro.param`` sites θ and latent sites z, the variational free
energy F(Q, θ) = E_Q[−log p(x, z | θ)] − S(Q) ≥ −log p(x | θ) (Neal & Hinton 1998). EM
alternates

* the M-step, θ ← argmin_θ F(Q, θ) with Q held: the change of F is the **work** done on
  the system by moving its parameters, W = F(Q, θ') − F(Q, θ);
* the E-step, Q ← argmin_Q F(Q, θ') with θ' held: the change of F is the **heat**,
  the relaxation of Q towards p(z | x, θ'), H = F(Q', θ') − F(Q, θ') = −KL(Q‖p(z|x, θ'))
  for an exact E-step;

and ΔF = W + H per iteration (Dayan, Hinton, Neal & Zemel 1995, the Helmholtz machine's
free energy). The E-step is an object:

* :class:`Exact` — discrete latents summed by numpyro's funsor enumeration: Q is the
  exact posterior, represented by the posterior marginal of every site's factor
  (responsibilities, pairwise marginals of a chain), obtained as the gradient of the
  log normaliser with respect to an additive shift of each factor; or, for a model that
  supplies ``gaussian_posterior`` / ``expected_log_joint`` / ``posterior_entropy``
  (conjugate Gaussian latents), those closed forms.
* :class:`MonteCarlo` — draws of z: exact draws of discrete latents (numpyro's
  ``infer_discrete``), or an MCMC kernel on continuous latents (any helmholtz MCMC
  engine's, warm-started across iterations). The entropy of Q is not known, so F and
  the heat are not reported; the work is (the same draws before and after the M-step).
* :class:`Variational` — a mean-field Gaussian Q over the continuous latents (discrete
  ones summed by enumeration), a few optax steps per iteration on the ELBO; F = −ELBO
  with common random numbers across each iteration.

The M-step is the model's closed form where it offers one (a ``m_step`` attribute of
the model function, fed the exact E-step's marginals or posterior) or ``m_steps`` optax
steps on θ in unconstrained space (``numpyro.param`` constraints respected by
``biject_to``), the optimiser state carried across iterations.

Written here because numpyro has no EM: its SVI with ``TraceEnum_ELBO`` maximises the
same marginal likelihood by gradient steps, which is what :class:`Variational` with no
continuous latents does; the closed-form M-steps and the work/heat split are not there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from helmholtz.engines._assemble import assemble
from helmholtz.engines.base import Engine, Phase, _positive_int, _positive_number, register
from helmholtz.engines.em_steps import (
    E_STEPS,
    Exact,
    MonteCarlo,
    Variational,
    _expected,
    conjugate,
    e_init,
    e_step,
    enumerated_marginals,
    expected_at,
)
from helmholtz.errors import ModelError, OptionError
from helmholtz.result import FittedParams, FreeEnergy, Status

__all__ = ["EM", "Exact", "MonteCarlo", "Variational", "EMState", "enumerated_marginals"]


class EMState(NamedTuple):
    """θ (unconstrained), the E-step's Q (a pytree), E_Q[log p(x, z | θ)] and S(Q) at the
    current θ, F, the M-step optimiser state, the E-step's own state (chains, a guide),
    the iteration count, the per-iteration F / work / heat, and the first bad iteration
    (−1: none) with the param sites that were not finite there."""

    u_theta: dict
    posterior: Any
    expected: jax.Array
    entropy: jax.Array
    free_energy: jax.Array
    m_opt: Any
    e_state: Any
    iteration: jax.Array
    trace: dict
    bad_iteration: jax.Array
    bad_sites: jax.Array
    done: jax.Array


_TRACE = ("free_energy", "work", "heat", "delta")


@register
@dataclass(frozen=True)
class EM(Engine):
    """Expectation–maximisation over a model's ``numpyro.param`` sites.

    Options
    -------
    e_step: an E-step object (:class:`Exact`, :class:`MonteCarlo`, :class:`Variational`)
    or its name.
    m_step: ``"auto"`` (the model's closed-form ``m_step`` with an exact E-step where the
    model function has one, else gradient steps), ``"closed-form"`` or ``"gradient"``.
    m_step_options: keyword arguments of the model's closed-form ``m_step`` (e.g.
    ``{"reg_covar": 1e-6}``).
    learning_rate, m_steps: Adam steps on θ per iteration for the gradient M-step.
    max_iterations: the most EM iterations; tol: stop when |ΔF| ≤ tol · (1 + |F|) (exact
    E-step only: a Monte Carlo or variational F is noisy, and those run
    ``max_iterations``; a variational iteration's F, W and H are estimated on fresh
    draws, so W + H = ΔF holds per iteration but the ΔF do not telescope exactly).
    init_params: starting θ (constrained values by site name; default: the values the
    model's ``numpyro.param`` statements give).

    The Result: ``fitted`` is θ (:class:`~helmholtz.result.FittedParams`);
    ``free_energy`` is F at the end (``exact`` for an exact E-step: −log p(x | θ̂));
    ``trace`` holds per iteration F, the work W of the M-step, the heat H of the E-step
    and ΔF (= W + H); ``stats`` the posterior over latents (``marginals.<site>`` for
    enumeration, ``posterior.mean``/``posterior.cov`` for conjugate models); ``samples``
    the latent draws of a Monte Carlo E-step. A θ that leaves its support or turns NaN
    (a collapsing mixture component, say) stops the run at that iteration with status
    ``nan`` naming the site, θ kept at the last finite value.
    """

    name = "em"
    fits_params = True  # runs on models whose latents are all discrete
    description = "expectation–maximisation of numpyro.param sites; F split into work and heat"
    e_step: Any = "exact"
    m_step: str = "auto"
    m_step_options: Any = None
    learning_rate: float = 0.01
    m_steps: int = 10
    max_iterations: int = 500
    tol: float = 1e-10
    init_params: Any = None

    def __post_init__(self):
        e = self.e_step
        if isinstance(e, str):
            if e not in E_STEPS:
                raise OptionError(f"em: e_step must be one of {tuple(E_STEPS)} or an E-step "
                                  f"object, got {e!r}")
            object.__setattr__(self, "e_step", E_STEPS[e]())
        if self.m_step_options is not None and not isinstance(self.m_step_options,
                                                                dict | tuple):
            raise OptionError("em: m_step_options must be a dict of keyword arguments of the "
                              f"model's m_step, got {self.m_step_options!r}")
        if isinstance(self.m_step_options, dict):
            object.__setattr__(self, "m_step_options", tuple(sorted(
                self.m_step_options.items())))
        super().__post_init__()

    def validate(self):
        if not isinstance(self.e_step, Exact | MonteCarlo | Variational):
            raise OptionError(f"em: e_step must be Exact(), MonteCarlo() or Variational(), "
                              f"got {self.e_step!r}")
        if self.m_step not in ("auto", "closed-form", "gradient"):
            raise OptionError("em: m_step must be 'auto', 'closed-form' or 'gradient', got "
                              f"{self.m_step!r}")
        _positive_int(self, "m_steps", "max_iterations")
        _positive_number(self, "learning_rate")
        _positive_number(self, "tol", allow_zero=True)

    # ---- what kind of problem
    def _closed_form(self, target) -> bool:
        has = callable(getattr(target.model, "m_step", None))
        if self.m_step == "gradient":
            return False
        if self.m_step == "closed-form":
            return True
        return has and isinstance(self.e_step, Exact)

    def loop_engine(self):
        return self.replace(init_params=None) if self.init_params is not None else self

    def _check(self, target):
        if not target.param_sites:
            raise ModelError(f"em: model '{target.name}' has no numpyro.param sites: nothing "
                             "for EM to fit (its latent sites are sampled by nuts, smc, ...)")
        if self._closed_form(target):
            if not isinstance(self.e_step, Exact):
                raise OptionError("em: a closed-form M-step needs the exact E-step (its "
                                  "marginals or posterior are the M-step's input)")
            if not callable(getattr(target.model, "m_step", None)):
                raise OptionError(f"em: m_step='closed-form' but model '{target.name}' has no "
                                  "m_step attribute (a function of the E-step's marginals "
                                  "returning θ)")
        for p in target.param_sites:
            if self.init_params is not None and p.name in self.init_params and \
                    np.shape(self.init_params[p.name]) != p.shape:
                raise OptionError(f"em: init_params['{p.name}'] has shape "
                                  f"{np.shape(self.init_params[p.name])}, the param site "
                                  f"{p.shape}")
        if isinstance(self.e_step, Exact) and target.dim > 0 and not conjugate(self.e_step, target):
            raise ModelError(
                f"em: the exact E-step needs discrete latents (summed by enumeration) or a "
                f"conjugate model (gaussian_posterior/expected_log_joint/posterior_entropy); "
                f"model '{target.name}' has continuous latent sites "
                f"{[s.name for s in target.sites]}: use e_step=MonteCarlo() or Variational()")
        if isinstance(self.e_step, MonteCarlo) and target.dim == 0 and not \
                target.enumerated_names:
            raise ModelError(f"em: model '{target.name}' has no latent sites to draw; its "
                             "maximum likelihood is what e_step=Exact() gives")

    # ---- the pure pieces
    def _model_args(self, target):
        return target.model_args

    def _m_step(self, target, state: EMState):
        if self._closed_form(target):
            args, kwargs = target.model_args
            options = dict(self.m_step_options or ())
            theta = target.model.m_step(state.posterior, *args, **kwargs, **options)
            full = {**target.constrain_params(state.u_theta), **theta}
            return _onto_boundary(target, target.unconstrain_params(full)), state.m_opt
        opt = optax.adam(self.learning_rate)

        def loss(u):
            return -expected_at(self.e_step, target, state.posterior, u)

        def body(c, _):
            u, s = c
            grads = jax.grad(loss)(u)
            updates, s = opt.update(grads, s, u)
            return (optax.apply_updates(u, updates), s), None

        (u, s), _ = jax.lax.scan(body, (state.u_theta, state.m_opt), None,
                                 length=self.m_steps)
        return u, s

    # ---- the protocol
    def start(self, rng_key, target, run):
        self._check(target)
        theta0 = dict(target.params)
        if self.init_params is not None:
            unknown = set(self.init_params) - {p.name for p in target.param_sites}
            if unknown:
                raise OptionError(f"em: init_params names {sorted(unknown)}, which are not "
                                  f"param sites of '{target.name}' "
                                  f"({[p.name for p in target.param_sites]})")
            theta0.update({k: jnp.asarray(v) for k, v in self.init_params.items()})
        u0 = target.unconstrain_params(theta0)
        bad = [k for k, v in u0.items() if not np.all(np.isfinite(np.asarray(v)))]
        if bad:
            raise OptionError(f"em: the starting values of param sites {bad} lie outside "
                              "their constraints")
        state = run.call(type(self).init, self.loop_engine(), rng_key, target, u0)
        expected, f = float(state.expected), float(state.free_energy)
        if not np.isfinite(expected) or (isinstance(self.e_step, Exact)
                                         and not np.isfinite(f)):
            raise ModelError(f"em: the E-step at the starting θ of '{target.name}' gives a "
                             f"non-finite free energy (E_Q log p = {expected}, F = {f}); "
                             "check init_params and the data")
        return state

    def init(self, rng_key, target, position=None) -> EMState:
        u_theta = position
        dtype = jnp.result_type(float)
        k_init, k_step = jax.random.split(rng_key)
        e_state = e_init(self.e_step, k_init, target, u_theta)
        post, expected, entropy, e_state, _ = e_step(self.e_step, k_step, target, u_theta, e_state)
        m_opt = optax.adam(self.learning_rate).init(u_theta)
        nan = jnp.full((self.max_iterations,), jnp.nan, dtype)
        f = -(expected + entropy)
        return EMState(u_theta, post, expected, entropy, f, m_opt, e_state,
                       jnp.zeros((), jnp.int32), {k: nan for k in _TRACE},
                       jnp.full((), -1, jnp.int32),
                       jnp.zeros((len(target.param_sites),), bool), jnp.zeros((), bool))

    def step(self, rng_key, target, state: EMState, x=None):
        u_new, m_opt = self._m_step(target, state)
        names = [p.name for p in target.param_sites]
        finite = jnp.stack([jnp.all(jnp.isfinite(u_new[k])) for k in names])
        # a non-finite θ is not evaluated further: the E-step runs on the old θ
        u_safe = jax.tree_util.tree_map(lambda a, b: jnp.where(jnp.all(finite), a, b), u_new,
                                        state.u_theta)
        k_eval, rng_key = jax.random.split(rng_key)
        variational = isinstance(self.e_step, Variational)
        # a variational F is judged on fresh draws: on the draws Q and θ were fitted to it
        # is biased low (measured: 10 nats below −log p(x | θ̂) on PPCA, 200 latent dims)
        eps = (jax.random.normal(k_eval, state.e_state[2].shape, state.e_state[2].dtype)
               if variational else None)
        expected_old = (expected_at(self.e_step, target, state.posterior, state.u_theta, eps)
                        if variational else state.expected)
        f_old = -(expected_old + state.entropy)
        post, expected, entropy, e_state, log_probs = e_step(self.e_step, rng_key, target, u_safe,
                                                                   state.e_state)
        # the old Q at the new θ: from the E-step's own log-prob tensors when it has them
        expected_mid = (_expected(state.posterior, log_probs) if log_probs is not None else
                        expected_at(self.e_step, target, state.posterior, u_safe, eps))
        work = -(expected_mid - expected_old)
        if variational:
            expected = expected_at(self.e_step, target, post, u_safe, eps)
        f = -(expected + entropy)
        if isinstance(self.e_step, MonteCarlo):
            delta, heat = jnp.nan, jnp.nan
        else:
            delta = f - f_old
            heat = delta - work
        ok = jnp.all(finite) & jnp.isfinite(expected)
        i = state.iteration
        row = {"free_energy": f, "work": work, "heat": heat, "delta": delta}
        trace = {k: state.trace[k].at[i].set(jnp.where(ok, row[k], jnp.nan)) for k in _TRACE}
        bad_iteration = jnp.where(ok | (state.bad_iteration >= 0), state.bad_iteration, i)
        if not isinstance(self.e_step, Exact):  # a noisy F never meets a tolerance
            converged = jnp.zeros((), bool)
        else:  # a tolerance below the float's resolution of F is taken at that resolution
            tol = jnp.maximum(self.tol, 10 * jnp.finfo(f.dtype).eps)
            converged = jnp.abs(delta) <= tol * (1.0 + jnp.abs(f))
        moved = state._replace(u_theta=u_safe, posterior=post, expected=expected,
                               entropy=entropy, free_energy=f, m_opt=m_opt, e_state=e_state)
        # a bad iteration changes nothing but the record: θ stays at the last finite value
        kept = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), moved, state)
        return kept._replace(iteration=i + 1, trace=trace, bad_iteration=bad_iteration,
                             bad_sites=jnp.where(ok, state.bad_sites, ~finite),
                             done=converged | ~ok), None

    def finished(self, state: EMState):
        return state.done

    def phases(self, target):
        return (Phase("iterations", type(self).step, self.max_iterations,
                      until=type(self).finished, postfix=_em_postfix),)

    def result(self, rng_key, target, state: EMState, infos, run):
        n = int(state.iteration)
        trace = {k: np.asarray(v[:n], np.float64) for k, v in state.trace.items()}
        theta = {k: np.asarray(v) for k, v in target.constrain_params(state.u_theta).items()}
        names = [p.name for p in target.param_sites]
        bad = int(state.bad_iteration)
        f = float(state.free_energy)
        if bad >= 0:
            sites = [k for k, b in zip(names, np.asarray(state.bad_sites), strict=True) if b]
            what = (f"param site(s) {sites} became non-finite or left their support"
                    if sites else "the E-step's expected log joint became non-finite")
            status = Status("nan", f"em: at iteration {bad + 1}, {what} (a collapsing "
                            "component or an empty cluster?); θ is the last finite value, "
                            f"from iteration {bad}")
        elif not bool(state.done) and isinstance(self.e_step, Exact):
            status = Status("max_steps", f"em: |ΔF| still above tol={self.tol:g}·(1+|F|) after "
                            f"{self.max_iterations} iterations")
        else:
            status = Status()
        e = self.e_step
        if isinstance(e, Exact):
            fe = FreeEnergy(f, 0.0, "exact", f"−log p(x | θ̂) after {n} EM iterations "
                            "(exact E-step: F = −log p(x | θ))")
        elif isinstance(e, Variational):
            fe = FreeEnergy(f, math.nan, "lower bound",
                            f"−ELBO of the Gaussian E-step after {n} iterations")
        else:
            fe = FreeEnergy(math.nan, math.nan, "none", "a Monte Carlo E-step does not know "
                            "the entropy of Q, so F is not estimated; trace['work'] is")
        stats, positions = {}, None
        post = state.posterior
        if isinstance(e, Exact) and conjugate(self.e_step, target):
            stats = {f"posterior.{k}": np.asarray(v) for k, v in post.items()}
        elif isinstance(e, Exact):
            stats = {f"marginals.{k}": np.asarray(v) for k, v in post.items()
                     if not k.startswith("_")}
        elif isinstance(e, MonteCarlo):
            if target.dim > 0:
                positions = jnp.asarray(post)[None]
            else:
                stats = {f"draws.{k}": np.asarray(v) for k, v in post.items()}
        return assemble(self, target, positions, stats, run, 0, fe,
                        trace=trace, status=status, fitted=FittedParams(theta),
                        config={"iterations": n, "converged": bool(state.done) and bad < 0,
                                "closed_form_m_step": self._closed_form(target)})


BOUNDARY = 700.0
"""|u| at which a simplex coordinate that is exactly 0 or 1 is held (e^−700 ≈ 1e−304)."""


def _onto_boundary(target, u_theta):
    """A closed-form M-step may put a probability exactly at 0 (an HMM's initial state
    from one sequence: its maximum likelihood is one-hot), which the unconstraining map
    sends to ±inf. On a simplex that is a valid maximum, kept as u = ±700; anywhere else
    (a variance or a Cholesky diagonal at 0: a collapsed component) it stays infinite and
    the step is reported as leaving the support."""
    from numpyro.distributions import constraints

    simplex = {p.name for p in target.param_sites
               if isinstance(p.constraint, type(constraints.simplex))}
    return {k: (jnp.where(jnp.isinf(v), jnp.sign(v) * BOUNDARY, v) if k in simplex else v)
            for k, v in u_theta.items()}


def _em_postfix(engine, state, info):
    return {"F": f"{float(state.free_energy):.6g}", "iter": int(state.iteration)}


