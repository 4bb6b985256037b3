"""Electrons and fixed nuclei (the Coulomb Hamiltonian in atomic units), and the
harmonic oscillator as a check.

A system gives what variational Monte Carlo needs of a Hamiltonian H = −½∇² + V: the
number of particles, their spin assignment (the first ``n_up`` electrons are spin up,
the rest spin down, fixed: the Hamiltonian has no spin terms, so fixing S_z labels the
electrons once and for all), and the potential V(x) of one configuration x of shape
(n_particles, dim). Everything is in Hartree atomic units (bohr, Hartree).

Reference energies: exact non-relativistic, infinite-nuclear-mass values from the
literature, as FermiNet's paper (Pfau et al., Phys. Rev. Research 2, 033429, 2020,
Table I) collects them: He −2.903724 (Pekeris), H2 at R = 1.4 bohr −1.174476 (Kołos &
Wolniewicz), Li −7.478060, LiH at R = 3.015 bohr −8.070548, Be −14.66736.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

__all__ = ["Molecule", "HarmonicOscillator", "SystemError", "molecule", "REFERENCE_ENERGY",
           "SYSTEMS", "FERMINET_ENERGY"]

ELEMENTS = {"H": 1, "He": 2, "Li": 3, "Be": 4, "B": 5, "C": 6, "N": 7, "O": 8, "F": 9,
            "Ne": 10}

REFERENCE_ENERGY = {"H": -0.5, "He": -2.903724, "H2": -1.174476, "Li": -7.478060,
                    "LiH": -8.070548, "Be": -14.66736}
"""Exact non-relativistic ground-state energies (Hartree) of the named systems."""

FERMINET_ENERGY = {"Li": -7.47798, "LiH": -8.07050, "Be": -14.66733}
"""FermiNet's VMC energies (16 determinants, 2·10⁵ KFAC steps; Pfau et al. 2020)."""


class SystemError(ValueError):
    """A system whose electrons and nuclei do not match (charge, spin, geometry)."""


@dataclass(frozen=True)
class Molecule:
    """Nuclei with charges ``charges`` at ``positions`` (bohr), ``n_up`` spin-up and
    ``n_down`` spin-down electrons.

    The electron count must be a non-negative whole number, n_up ≥ n_down (a relabelling
    otherwise), and the total charge Σ Z − n_el between −1 and the nuclear charge (an
    ion with more than one extra electron is not bound in VMC's sense, and the ask is
    almost always a typo). ``charge`` and ``spin`` (n_up − n_down), when given, must
    agree with the electron counts.
    """

    charges: tuple[float, ...]
    positions: tuple[tuple[float, float, float], ...]
    n_up: int
    n_down: int
    name: str = "molecule"
    symbols: tuple[str, ...] = field(default=())

    def __post_init__(self):
        ch = tuple(float(z) for z in np.atleast_1d(np.asarray(self.charges, np.float64)))
        pos = np.asarray(self.positions, np.float64)
        if pos.ndim == 1 and pos.size == 3:
            pos = pos[None]
        if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] != len(ch):
            raise SystemError(f"{self.name}: positions must be (n_nuclei, 3) for "
                              f"{len(ch)} nuclei, got shape {pos.shape}")
        if not np.all(np.isfinite(pos)) or any(not np.isfinite(z) or z <= 0 for z in ch):
            raise SystemError(f"{self.name}: nuclear charges must be positive and positions "
                              f"finite, got charges {ch}")
        for n in ("n_up", "n_down"):
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
                raise SystemError(f"{self.name}: {n} must be an integer ≥ 0, got {v!r}")
        if self.n_up + self.n_down == 0:
            raise SystemError(f"{self.name}: no electrons")
        if self.n_up < self.n_down:
            raise SystemError(f"{self.name}: n_up = {self.n_up} < n_down = {self.n_down}; "
                              "label the majority spin as up")
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(ch))
        if len(ch) > 1 and d.min() < 1e-3:
            raise SystemError(f"{self.name}: two nuclei closer than 1e-3 bohr")
        total = sum(ch) - self.n_up - self.n_down
        if total < -1 or total > sum(ch):
            raise SystemError(f"{self.name}: {self.n_up + self.n_down} electrons on nuclear "
                              f"charge {sum(ch):g} gives charge {total:+g}")
        object.__setattr__(self, "charges", ch)
        object.__setattr__(self, "positions", tuple(map(tuple, pos.tolist())))
        object.__setattr__(self, "n_up", int(self.n_up))
        object.__setattr__(self, "n_down", int(self.n_down))

    # ------------------------------------------------------------ what VMC reads
    dim = 3

    @property
    def n_particles(self) -> int:
        return self.n_up + self.n_down

    @property
    def n_electrons(self) -> int:
        return self.n_particles

    @property
    def charge(self) -> float:
        return sum(self.charges) - self.n_particles

    @property
    def spin(self) -> int:
        return self.n_up - self.n_down

    @property
    def nuclei(self) -> np.ndarray:
        return np.asarray(self.positions, np.float64)

    @property
    def z(self) -> np.ndarray:
        return np.asarray(self.charges, np.float64)

    def nuclear_repulsion(self) -> float:
        r, z = self.nuclei, self.z
        e = 0.0
        for i in range(len(z)):
            for j in range(i):
                e += z[i] * z[j] / np.linalg.norm(r[i] - r[j])
        return float(e)

    def potential(self, x):
        """V(x) for electrons x (n_el, 3): electron–electron repulsion, electron–nucleus
        attraction and the (constant) nuclear repulsion."""
        nuc = jnp.asarray(self.nuclei, x.dtype)
        z = jnp.asarray(self.z, x.dtype)
        r_en = jnp.linalg.norm(x[:, None, :] - nuc[None], axis=-1)
        v = -jnp.sum(z / r_en)
        n = x.shape[0]
        if n > 1:
            i, j = np.triu_indices(n, 1)
            v = v + jnp.sum(1.0 / jnp.linalg.norm(x[i] - x[j], axis=-1))
        return v + self.nuclear_repulsion()

    @property
    def reference_energy(self) -> float | None:
        return REFERENCE_ENERGY.get(self.name)

    # ------------------------------------------------------------ what the driver reads
    @property
    def model(self):
        return Molecule

    @property
    def model_args(self):
        return (self.charges, self.positions, self.n_up, self.n_down)

    params = None
    observed = None

    def __repr__(self):
        return (f"Molecule({self.name!r}, Z={self.charges}, n_up={self.n_up}, "
                f"n_down={self.n_down})")


def _spins(n: int, spin: int | None, name: str) -> tuple[int, int]:
    if spin is None:
        spin = n % 2
    if (n - spin) % 2 or spin < 0 or spin > n:
        raise SystemError(f"{name}: {n} electrons cannot have spin (n_up − n_down) {spin}")
    return (n + spin) // 2, (n - spin) // 2


SYSTEMS = {
    "H": (("H",), ((0.0, 0.0, 0.0),)),
    "He": (("He",), ((0.0, 0.0, 0.0),)),
    "Li": (("Li",), ((0.0, 0.0, 0.0),)),
    "Be": (("Be",), ((0.0, 0.0, 0.0),)),
    "H2": (("H", "H"), ((0.0, 0.0, -0.7), (0.0, 0.0, 0.7))),
    "LiH": (("Li", "H"), ((0.0, 0.0, 0.0), (0.0, 0.0, 3.015))),
}
"""Geometries (bohr) of the named systems: H2 at R = 1.4, LiH at R = 3.015."""


def molecule(name: str, *, charge: int = 0, spin: int | None = None) -> Molecule:
    """A named system from :data:`SYSTEMS` (or an element symbol), neutral and in its
    lowest spin state by default; ``charge`` and ``spin`` (n_up − n_down) override."""
    if name not in SYSTEMS:
        if name in ELEMENTS:
            symbols, pos = (name,), ((0.0, 0.0, 0.0),)
        else:
            raise SystemError(f"unknown system {name!r}; known: {', '.join(SYSTEMS)} or an "
                              f"element symbol ({', '.join(ELEMENTS)})")
    else:
        symbols, pos = SYSTEMS[name]
    z = tuple(float(ELEMENTS[s]) for s in symbols)
    n = int(sum(z)) - int(charge)
    if n <= 0:
        raise SystemError(f"{name} with charge {charge:+d} has no electrons")
    up, down = _spins(n, spin, name)
    return Molecule(z, pos, up, down, name=name if charge == 0 and spin is None else
                    f"{name}{charge:+d}" if charge else f"{name}(2S={spin})", symbols=symbols)


@dataclass(frozen=True)
class HarmonicOscillator:
    """One particle in ``dim`` dimensions, V = ½ ω² |x|²; ground state E₀ = dim·ω/2 with
    ψ₀ ∝ exp(−ω|x|²/2)."""

    dim: int = 1
    omega: float = 1.0
    name: str = "harmonic"

    def __post_init__(self):
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise SystemError(f"harmonic oscillator: dim must be an integer ≥ 1, got {self.dim!r}")
        if not (self.omega > 0 and np.isfinite(self.omega)):
            raise SystemError(f"harmonic oscillator: omega must be positive, got {self.omega!r}")

    n_particles = 1
    n_up = 1
    n_down = 0
    params = None
    observed = None

    @property
    def n_electrons(self) -> int:
        return 1

    @property
    def reference_energy(self) -> float:
        return 0.5 * self.dim * self.omega

    def potential(self, x):
        return 0.5 * self.omega ** 2 * jnp.sum(x ** 2)

    @property
    def model(self):
        return HarmonicOscillator

    @property
    def model_args(self):
        return (self.dim, self.omega)
