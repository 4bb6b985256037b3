"""Transition paths as a conditioned path measure, and controlled dynamics that sample it.

The problem (Dellago, Bolhuis & Geissler 2002; as inference: Holdijk et al. 2023, PIPS;
Seong et al. 2025, TPS-DPS): from a start state A, Langevin dynamics P at temperature kT
rarely reaches the target B within K steps. Conditioning P on the end,

    P*(dx_{0:K}) ∝ P(dx_{0:K}) f(x_K),   log f(x) = −½ (d(x, B)/σ)²,

with d a distance to B (heavy-atom RMSD after Kabsch alignment for a molecule, the
Euclidean distance on Müller–Brown) and σ its width, is the path measure of transitions;
its normaliser Z = E_P[f(x_K)] is the (relaxed) probability of a transition and
F = −log Z its free energy. A control force u(t, x) added to the dynamics gives the path
measure Q^u; every path of Q^u carries the exact weight

    log w = log f(x_K) − log dQ^u/dP (x_{0:K}),

so E_Q[log w] ≤ log Z (the path ELBO) and log mean w estimates log Z.

Both dynamics here are written in *noise coordinates*: each step draws a standard
normal ξ_k, and P's step is x_{k+1} = m(x_k) + s ε_k with ε_k ~ N(0, I). A control
shifts the noise the step sees, ε_k = a_k + r ξ_k, where a_k = u(t_k, x_k) × coef is the
force in noise units and r = s_Q/s_P (≠ 1 only when Q runs at another temperature, the
hot-MD baseline). Then log dQ/dP is a sum over steps of
log N(ε_k; a_k, r²) − log N(ε_k; 0, 1), exact for the discretisation:

* overdamped (Euler–Maruyama, γ dx = −∇U dt + u dt + √(2γ kT) dW):
  s = √(2 kT δ/γ), coef = √(δ/(2 kT γ));
* underdamped (BAOAB, Leimkuhler & Matthews 2013), the control a force acting during the
  O step, where the Ornstein–Uhlenbeck refreshment with a constant force F is exact:
  v ← c v + (1 − c) F/(γ m) + s ξ with c = e^{−γδ}, s = √((1 − c²) kT/m), so
  coef = (1 − c)/(γ m s). Only the O step is random, so the path's density is that of
  its refreshments; the B and A steps are the deterministic Verlet parts.

Why written here rather than taken from :mod:`helmholtz.paths` alone: the path samplers
there weigh paths from a reference to a target *density*; here the start is a fixed
state, the "target" is a terminal factor on paths of a given physical dynamics, and the
engines need the effective noise of each step to re-score fixed paths under new
controls (the log-variance and cross-entropy losses), which no SDE library returns.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

__all__ = ["TransitionPath", "Rollout", "rollout", "transition_path_model",
           "path_log_ratio", "relaxed_indicator", "angle_difference"]

BLOWUP_ENERGY = 1e6
"""A state whose potential energy exceeds this (in the problem's energy unit) or is not
finite marks its path as blown up (energy overflow)."""


def angle_difference(a, b):
    """a − b wrapped into (−π, π] (for dihedral collective variables)."""
    return jnp.mod(a - b + jnp.pi, 2 * jnp.pi) - jnp.pi


def relaxed_indicator(distance, sigma):
    """log f = −½ (distance/σ)²: the Gaussian relaxation of the indicator of B."""
    return -0.5 * (distance / sigma) ** 2


class TransitionPath(eqx.Module):
    """A transition-path problem: the dynamics P, the endpoints, the terminal factor, and
    the collective variables the metrics read.

    Parameters
    ----------
    name
        Shown in results.
    energy_fn
        U(x) for one flat state ``x`` ``(d,)`` (kJ/mol for molecules).
    start, target
        The endpoints A and B, flat ``(d,)``.
    temperature
        kT in the energy unit.
    dynamics
        ``"overdamped"`` or ``"underdamped"``.
    step_size, num_steps, friction
        δ, K and γ (1/time).
    mass
        Per coordinate ``(d,)`` (underdamped only).
    distance_fn
        d(x, B) ≥ 0 for one flat state (RMSD in Å for a molecule), used by the terminal
        factor and reported as the final-frame RMSD.
    sigma
        Width of the relaxed indicator, in the unit of ``distance_fn``.
    cv_fn
        Collective variables ``(m,)`` of one flat state (φ, ψ; or x, y).
    periodic_cv
        The collective variables are angles (differences wrap into (−π, π]).
    hit_radius
        A path hits B when ‖cv(x_K) − cv(B)‖ < hit_radius (0.75 rad for alanine
        dipeptide, as PIPS and TPS-DPS count THP).
    spatial_dim
        Coordinates per particle (3 for molecules, 2 for a 2-d toy): the displacement
        control acts per particle.
    length_scale
        A typical displacement (nm, or the toy's unit): the control networks see
        (x − A)/length_scale.
    force_scale
        The control networks' output unit (kT/length_scale by default).
    align_fn
        ``align_fn(x) -> B`` superposed onto ``x`` (Kabsch), for the displacement control;
        ``None``: B as it is.
    energy_unit
        For labels ("kJ/mol").
    """

    name: str = eqx.field(static=True)
    energy_fn: Callable = eqx.field(static=True)
    start: jax.Array
    target: jax.Array
    temperature: float = eqx.field(static=True)
    dynamics: str = eqx.field(static=True)
    step_size: float = eqx.field(static=True)
    num_steps: int = eqx.field(static=True)
    friction: float = eqx.field(static=True)
    mass: jax.Array
    distance_fn: Callable = eqx.field(static=True)
    sigma: float = eqx.field(static=True)
    cv_fn: Callable = eqx.field(static=True)
    periodic_cv: bool = eqx.field(static=True)
    hit_radius: float = eqx.field(static=True)
    spatial_dim: int = eqx.field(static=True)
    length_scale: float = eqx.field(static=True)
    force_scale: float = eqx.field(static=True)
    align_fn: Callable | None = eqx.field(static=True)
    energy_unit: str = eqx.field(static=True)

    def __init__(self, name, energy_fn, start, target, *, temperature, dynamics, step_size,
                 num_steps, friction=1.0, mass=1.0, distance_fn=None, sigma=0.1,
                 cv_fn=None, periodic_cv=False, hit_radius=0.1, spatial_dim=None,
                 length_scale=1.0, force_scale=None, align_fn=None, energy_unit=""):
        start = jnp.asarray(start)
        target = jnp.asarray(target)
        if start.ndim != 1 or target.shape != start.shape:
            raise ValueError(f"TransitionPath {name!r}: start and target must be flat states "
                             f"of one shape (d,), got {start.shape} and {target.shape}")
        if dynamics not in ("overdamped", "underdamped"):
            raise ValueError(f"TransitionPath {name!r}: dynamics must be 'overdamped' or "
                             f"'underdamped', got {dynamics!r}")
        for label, v in (("temperature", temperature), ("step_size", step_size),
                         ("friction", friction), ("sigma", sigma), ("hit_radius", hit_radius),
                         ("length_scale", length_scale)):
            if not (isinstance(v, int | float) and v > 0 and math.isfinite(v)):
                raise ValueError(f"TransitionPath {name!r}: {label} must be positive, got {v!r}")
        if not (isinstance(num_steps, int) and num_steps >= 1):
            raise ValueError(f"TransitionPath {name!r}: num_steps must be a positive int, got "
                             f"{num_steps!r}")
        self.name, self.energy_fn = name, energy_fn
        self.start, self.target = start, target
        self.temperature, self.dynamics = float(temperature), dynamics
        self.step_size, self.num_steps, self.friction = float(step_size), num_steps, float(friction)
        self.mass = jnp.broadcast_to(jnp.asarray(mass, start.dtype), start.shape)
        self.distance_fn = distance_fn or (lambda x: jnp.sqrt(jnp.sum((x - target) ** 2)))
        self.sigma = float(sigma)
        self.cv_fn = cv_fn or (lambda x: x)
        self.periodic_cv, self.hit_radius = bool(periodic_cv), float(hit_radius)
        self.spatial_dim = int(spatial_dim or start.shape[0])
        if start.shape[0] % self.spatial_dim:
            raise ValueError(f"TransitionPath {name!r}: spatial_dim {self.spatial_dim} does "
                             f"not divide the state's dimension {start.shape[0]}")
        self.length_scale = float(length_scale)
        self.force_scale = float(force_scale or temperature / length_scale)
        self.align_fn, self.energy_unit = align_fn, energy_unit
        gap = float(self.cv_distance(start))
        if gap < self.hit_radius:
            raise ValueError(
                f"TransitionPath {name!r}: start and target are in the same basin (their "
                f"collective variables are {gap:.3g} apart, within the hit radius "
                f"{self.hit_radius:g}); a transition path needs two distinct states")
        u0 = float(energy_fn(start))
        if not math.isfinite(u0) or abs(u0) > BLOWUP_ENERGY:
            raise ValueError(f"TransitionPath {name!r}: the energy at the start is {u0!r}; "
                             "check the structure and its unit")

    @property
    def dim(self) -> int:
        return self.start.shape[0]

    def cv_difference(self, a, b):
        """a − b for collective-variable values (wrapped into (−π, π] for angles)."""
        return angle_difference(a, b) if self.periodic_cv else a - b

    def cv_distance(self, x):
        """‖cv(x) − cv(B)‖ (angles wrapped)."""
        diff = self.cv_difference(self.cv_fn(x), self.cv_fn(self.target))
        return jnp.sqrt(jnp.sum(diff**2))

    def log_terminal(self, x):
        return relaxed_indicator(self.distance_fn(x), self.sigma)

    def noise_scale(self, temperature=None):
        """s: the scale of P's per-step noise at ``temperature`` (default kT), ``(d,)``."""
        kt = self.temperature if temperature is None else temperature
        d = self.step_size
        if self.dynamics == "overdamped":
            return jnp.full_like(self.mass, jnp.sqrt(2 * kt * d / self.friction))
        c = math.exp(-self.friction * d)
        return jnp.sqrt((1 - c**2) * kt / self.mass)

    def force_coefficient(self, temperature=None):
        """coef with a = force × coef: a force in noise units, ``(d,)``."""
        s = self.noise_scale(temperature)
        if self.dynamics == "overdamped":
            return self.step_size / self.friction / s
        c = math.exp(-self.friction * self.step_size)
        return (1 - c) / (self.friction * self.mass * s)


class Rollout(NamedTuple):
    """Paths of controlled dynamics, one entry per path unless noted.

    end: x_K ``(n, d)``; log_ratio: log dQ/dP; log_terminal: log f(x_K); max_energy:
    max_k U(x_k); blown_up: a state overflowed; log_likelihood: log density of the path
    under P (its per-step Gaussian noise densities). With ``keep``: positions
    ``(K + 1, n, d)``, the states the control saw ``(K, n, d)``, the effective noises ε_k
    ``(K, n, d)`` and the energies ``(K + 1, n)``.
    """

    end: jax.Array
    log_ratio: jax.Array
    log_terminal: jax.Array
    max_energy: jax.Array
    blown_up: jax.Array
    log_likelihood: jax.Array
    positions: jax.Array | None = None
    control_states: jax.Array | None = None
    noises: jax.Array | None = None
    energies: jax.Array | None = None

    @property
    def log_weight(self):
        """log f(x_K) − log dQ/dP, −∞ for a blown-up path."""
        lw = self.log_terminal - self.log_ratio
        return jnp.where(self.blown_up | ~jnp.isfinite(lw), -jnp.inf, lw)


def _sane(u, x):
    """Per path: a finite energy below :data:`BLOWUP_ENERGY` at a finite state."""
    return jnp.isfinite(u) & (jnp.abs(u) <= BLOWUP_ENERGY) & jnp.all(jnp.isfinite(x), axis=-1)


def _energy_and_force(problem, x):
    u, g = jax.value_and_grad(problem.energy_fn)(x)
    return u, -g


def rollout(problem: TransitionPath, rng_key, num_paths: int, control: Callable | None = None,
            *, temperature: float | None = None, reference_temperature: float | None = None,
            keep: bool = False, detach: bool = False, noise=None) -> Rollout:
    """``num_paths`` paths of the dynamics from A with the control force
    ``control(t, x) -> (d,)`` (``t`` in [0, 1]; None: uncontrolled).

    ``temperature``: the kT Q runs at (default: the problem's); ``reference_temperature``:
    the kT of the P the paths are weighed against (default: ``temperature``, so that an
    annealed training run weighs its paths against the dynamics at the same kT; the
    hot-MD baseline passes the problem's kT here). ``detach``: no gradient
    through the states (the log-variance and cross-entropy losses re-score them).
    ``noise``: the standard normal draws ``(K, num_paths, d)`` to use instead of drawing
    them from ``rng_key``. Paths start at A at rest (v = 0 for underdamped dynamics),
    which the numpyro model (:func:`transition_path_model`) shares.
    """
    kt_q = problem.temperature if temperature is None else temperature
    kt_p = kt_q if reference_temperature is None else reference_temperature
    s_p, s_q = problem.noise_scale(kt_p), problem.noise_scale(kt_q)
    ratio = s_q / s_p
    coef = problem.force_coefficient(kt_p)
    d = problem.dim
    dtype = problem.start.dtype
    x0 = jnp.broadcast_to(problem.start, (num_paths, d))
    xi = (jax.random.normal(rng_key, (problem.num_steps, num_paths, d), dtype)
          if noise is None else jnp.asarray(noise, dtype))
    hold = jax.lax.stop_gradient if detach else (lambda v: v)
    ef = jax.vmap(lambda x: _energy_and_force(problem, x))
    u0, f0 = ef(x0)
    steps = jnp.arange(problem.num_steps)
    scheme = _Scheme(problem, control, ef, hold, coef, ratio, s_p,
                     math.exp(-problem.friction * problem.step_size), detach, keep)
    body = functools.partial(_rollout_step, scheme)

    v0 = jnp.zeros_like(x0)
    zeros = jnp.zeros(num_paths, dtype)
    init = (x0, v0, f0, zeros, zeros, u0, ~jnp.isfinite(u0))
    (x, _, _, lr, ll, umax, bad), out = jax.lax.scan(body, init, (steps, xi))
    log_terminal = jax.vmap(problem.log_terminal)(x)
    if not keep:
        return Rollout(x, lr, log_terminal, umax, bad, ll)
    xs, cs, eps, us = out
    return Rollout(x, lr, log_terminal, umax, bad, ll, jnp.concatenate([x0[None], xs]),
                   cs, eps, jnp.concatenate([u0[None], us]))


class _Scheme(NamedTuple):
    """What one step of :func:`rollout` needs besides its carry: the problem, the
    control, the batched energy-and-force, the gradient stop (detached paths), the force
    coefficient, Q's noise over P's, P's noise scale, the velocity decay e^{−γh}."""

    problem: TransitionPath
    control: Callable | None
    ef: Callable
    hold: Callable
    coef: Any
    ratio: Any
    s_p: Any
    decay: float
    detach: bool
    keep: bool


def _rollout_step(sc: _Scheme, carry, inp):
    """One controlled step of every path, with its log dQ/dP and log P increments."""
    problem, h = sc.problem, sc.problem.step_size
    under = problem.dynamics == "underdamped"
    x, v, f, lr, ll, umax, bad = carry
    k, z = inp
    if under:
        v = v + 0.5 * h * f / problem.mass
        x = x + 0.5 * h * v
    cs = x
    a = _control_force(sc, k, sc.hold(x)) * sc.coef
    eps = a + sc.ratio * z
    lr = lr + jnp.sum(-0.5 * z**2 - jnp.log(sc.ratio) + 0.5 * eps**2, axis=-1)
    ll = ll + jnp.sum(-0.5 * eps**2 - 0.5 * math.log(2 * math.pi) - jnp.log(sc.s_p), axis=-1)
    if under:
        v = sc.decay * v + sc.s_p * eps
        x = x + 0.5 * h * v
    else:
        x = x + h * f / problem.friction + sc.s_p * eps
    if not sc.detach:
        # differentiated paths: find overflow first, on a value without gradient, and
        # evaluate the force of a blown-up path at its last finite state, so that the
        # backward pass never meets an infinite energy (0 × inf would be NaN)
        u_now = jax.vmap(problem.energy_fn)(jax.lax.stop_gradient(x))
        bad = bad | ~_sane(u_now, x)
        x = jnp.where(bad[:, None], jax.lax.stop_gradient(cs), x)
    u, f = sc.ef(x)
    if under:
        v = v + 0.5 * h * f / problem.mass
    x = sc.hold(x)
    v = sc.hold(v)
    bad = bad | ~_sane(u, x)
    umax = jnp.maximum(umax, jnp.where(jnp.isfinite(u), u, jnp.inf))
    # a blown-up path stays frozen at a finite state, and counts as blown up
    x_safe = jnp.where(bad[:, None], jax.lax.stop_gradient(cs), x)
    f = jnp.where(bad[:, None], 0.0, f)
    out = (x_safe, cs, eps, u) if sc.keep else None
    return (x_safe, jnp.where(bad[:, None], 0.0, v), f, lr, ll, umax, bad), out


def _control_force(sc: _Scheme, k, x):
    if sc.control is None:
        return jnp.zeros_like(x)
    t = jnp.asarray(k, x.dtype) / sc.problem.num_steps
    return jax.vmap(lambda xi_: sc.control(t, xi_))(x)


def path_log_ratio(problem: TransitionPath, control: Callable, control_states, noises,
                   temperature: float | None = None):
    """log dQ^u/dP of fixed paths (their control states and effective noises from a
    :func:`rollout` with ``keep=True``) under a new control ``u``: Σ_k a_k·ε_k − ½|a_k|²
    with a_k = u(t_k, x_k) × coef. The losses that re-score paths drawn from another
    control (log-variance, cross-entropy) differentiate this, not the rollout."""
    coef = problem.force_coefficient(temperature)
    k = jnp.arange(control_states.shape[0])
    t = jnp.asarray(k, control_states.dtype) / problem.num_steps

    def step(tk, xs, eps):
        a = jax.vmap(lambda x: control(tk, x))(xs) * coef
        return jnp.sum(a * eps - 0.5 * a**2, axis=-1)

    return jnp.sum(jax.vmap(step)(t, control_states, noises), axis=0)


def transition_path_model(problem: TransitionPath) -> Callable:
    """The conditioned path measure P* as a numpyro model in noise coordinates: site
    ``"noise"`` ``(K, d)`` standard normal, the dynamics run on it deterministically, and
    the terminal factor log f(x_K). Its normaliser is Z = E_P[f(x_K)]. The function
    carries the problem as ``model.transition_path``, which the transition-path engines
    (``tps``, ``hot-md``, ``steered-md``) read."""

    def model():
        noise = numpyro.sample("noise", dist.Normal(0.0, 1.0).expand(
            (problem.num_steps, problem.dim)).to_event(2))
        paths = rollout(problem, None, 1, noise=noise[:, None])
        # a path whose energy overflows has no density under P*, not its frozen end's
        numpyro.factor("terminal", jnp.where(paths.blown_up[0], -jnp.inf,
                                             paths.log_terminal[0]))

    model.__name__ = model.__qualname__ = problem.name
    model.transition_path = problem
    return model
