"""Clusters as atoms: a measure mu = p(theta) d theta + sum_j m_j delta_{theta_j} on the circle.

Grid schemes cannot transport clusters narrower than a few cells: the upwind flux pins them
to the grid, and in the metastable phase (clusters that attract each other with forces
~ e^{beta (cos D - 1)}) their positions stop moving altogether. Here such clusters become
weighted atoms that move with the exact mean-field velocity, while the density is advanced
by the flux scheme; both feel the velocity of the whole measure (``Convolution.set_atoms``).

Events, applied after every time step (documented thresholds, all recorded):

* **capture**: a density cluster (found as a connected run of cells where p >
  ``capture_level`` x mean p) whose bump (the cells around its peak down to ``BUMP_FLOOR`` of
  the peak or the next minimum) has a second moment of at most ``capture_width`` cells,
  sigma^2 = sum_i p_i dx (theta_i - c)^2 / m <= (capture_width dx)^2, and mass at least
  ``capture_min_mass``, becomes an atom: the bump's mass m = sum_i p_i dx exactly, at its
  centre c = sum_i p_i dx theta_i / m (angles unwrapped about the cluster), and those cells
  are emptied. The threshold is in cells, so captures happen later as the grid is refined and
  results converge with it.
* **absorb**: the density in an atom's cell flows into the atom (mass and first moment
  conserved), so the tails of a captured cluster join it as the flux brings them in.
* **merge**: atoms closer than ``merge_window`` (radians) become one atom with the sum of the
  masses at their centre of mass (seed 000, Def. 6.3, with multiplicity weights).
* **residual**: once the density holds less than ``residual_mass`` of the total mass, each
  cell's mass joins its nearest atom (mass exact, each atom's first moment updated) and the run
  continues with atoms alone: the density's CFL bound no longer limits the step.

Time step: while the density holds at least ``LINEAR_FRACTION`` of the mass, the scheme's
linear-phase limit accuracy / gamma_max applies (clusters may still be forming); after that
dt <= accuracy / D with D a bound on the rate of the atoms' velocity field (the Lipschitz
constant of the pair forces, plus (beta + 1) times the density's mass), so a metastable
configuration, whose forces are exponentially small, is crossed in large steps.

Mass is conserved to round-off through every event; the energy jumps up at a capture and a
merge (a point has more self-energy than a bump, two merged points more than two).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from meanfield.theory.checks import check_positive
from meanfield.theory.errors import InputError
from solvers.stepping import StepStats, advance

TWO_PI = 2.0 * math.pi
EVENT_KINDS = ("capture", "merge", "residual")
#: the linear-phase step limit applies while the density holds this fraction of the mass
LINEAR_FRACTION = 0.05
#: density clusters are examined for capture every this many steps
CAPTURE_EVERY = 8


@dataclass
class Event:
    """One capture, merge or residual event: when, where, the resulting atom's mass, the
    masses involved, and for a merge the two-point oracle: the time the two-cluster law
    (``meanfield.theory.reference``) predicts from the pair's gap at the previous event."""

    t: float
    kind: str
    position: float
    mass: float
    parts: tuple[float, ...]
    oracle: float = float("nan")


@dataclass
class AtomState:
    """Atom masses (positions live in the state vector) and the events so far."""

    masses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    events: list[Event] = field(default_factory=list)


def _centre(theta: np.ndarray, w: np.ndarray, ref: float) -> float:
    """sum w theta / sum w with the angles unwrapped about ``ref`` (first moment exact)."""
    d = np.mod(theta - ref + math.pi, TWO_PI) - math.pi
    return float(ref + np.dot(w, d) / np.sum(w))


class AtomicCircle:
    """A circle scheme (fv2, rusanov) and weighted atoms, one time integrator for both.

    The state vector is [q (the scheme's density deviation, M values), theta_1..theta_A];
    the atom masses change only at events. With no atoms the right-hand side, the steps and
    the results are bitwise those of the scheme alone.

    Parameters
    ----------
    scheme : CircleScheme
        fv2 or rusanov with a drift that supports atoms (``set_atoms``, ``atom_velocity``).
    capture_width : float
        Capture a cluster once its standard deviation is at most this many cells.
    capture_level : float
        Clusters are runs of cells where p > capture_level x mean(p).
    capture_min_mass : float
        Lighter clusters are not captured (they may still be absorbed by an atom).
    merge_window : float
        Atoms closer than this (radians) merge.
    residual_mass : float
        Below this fraction of the total mass the density joins the atoms.
    """

    def __init__(self, scheme, *, capture_width: float = 1.5, capture_level: float = 2.0,
                 capture_min_mass: float = 1e-3, merge_window: float = 1e-3,
                 residual_mass: float = 1e-5) -> None:
        if not hasattr(scheme.drift, "atom_velocity"):
            raise InputError("atoms", f"the drift {scheme.drift.name!r} does not support "
                             "atoms")
        self.scheme = scheme
        self.capture_width = check_positive(capture_width, "atoms.capture_width")
        self.capture_level = check_positive(capture_level, "atoms.capture_level", minimum=1.0)
        self.capture_min_mass = check_positive(capture_min_mass, "atoms.capture_min_mass",
                                               inclusive=True)
        self.merge_window = check_positive(merge_window, "atoms.merge_window", inclusive=True)
        self.residual_mass = check_positive(residual_mass, "atoms.residual_mass",
                                            inclusive=True)
        self.density_mass = 1.0
        self.cells, self.dx, self.theta = scheme.cells, scheme.dx, scheme.theta
        self.atoms = AtomState()
        self._last_positions = np.zeros(0)
        self._config = (0.0, np.zeros(0))
        self._since_capture = 0
        self.name = f"{scheme.name}+atoms"

    # ------------------------------------------------------------------ delegated
    def __getattr__(self, name: str):
        # grid, drift, rates, cfl, accuracy, reference density, integrator, step size, ...
        return getattr(self.scheme, name)

    @property
    def count(self) -> int:
        return int(self.atoms.masses.size)

    # ------------------------------------------------------------------ state
    def check_density(self, p0) -> np.ndarray:
        return self.scheme.check_density(p0)

    def split(self, p: np.ndarray) -> np.ndarray:
        """State of a density without atoms (atoms appear by capture)."""
        return self.start(p)

    def start(self, p: np.ndarray, positions=(), masses=()) -> np.ndarray:
        """State of the measure p d theta + sum_j m_j delta_{theta_j} (``p`` may be zero)."""
        x = np.mod(np.asarray(positions, dtype=float).ravel(), TWO_PI)
        m = np.asarray(masses, dtype=float).ravel()
        if x.shape != m.shape or not np.all(np.isfinite(x)) or np.any(~(m > 0)):
            raise InputError("atoms", "need one finite position and one mass > 0 per atom",
                             (x.shape, m.shape))
        self.atoms = AtomState(m.copy())
        self.density_mass = self.scheme.mass_of(p)
        self.scheme.drift.set_atoms(x, m)
        self._last_positions = x
        self._config = (0.0, x.copy())
        q = self.scheme.split(p)
        return np.concatenate([q, x]) if m.size else q

    def parts(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.cells
        return state[:m], state[m:]

    def join(self, state: np.ndarray) -> np.ndarray:
        """The grid density p (the atoms are ``positions(state)``, ``atoms.masses``)."""
        return self.scheme.join(state[: self.cells])

    def positions(self, state: np.ndarray) -> np.ndarray:
        return np.mod(state[self.cells:], TWO_PI)

    def set_background(self, pbar: float) -> None:
        self.scheme.set_background(pbar)

    def mass_of(self, p: np.ndarray) -> float:
        return self.scheme.mass_of(p)

    # ------------------------------------------------------------------ stepping contract
    def rhs(self, state: np.ndarray) -> np.ndarray:
        if self.count == 0:
            return self.scheme.rhs(state)
        q, x = self.parts(state)
        drift = self.scheme.drift
        drift.set_atoms(x, self.atoms.masses)
        dq = self.scheme.rhs(q) if self.density_mass > 0 else np.zeros_like(q)
        vx = drift.atom_velocity(q)
        self._atom_speed = float(np.abs(vx).max())
        self._last_positions = x
        return np.concatenate([dq, vx])

    def stable_dt(self) -> float:
        if self.count == 0:
            return self.scheme.stable_dt()
        bound = self.scheme.stable_dt() if self.density_mass > 0 else math.inf
        speed = getattr(self, "_atom_speed", 0.0)
        if speed > 0:  # an atom crosses at most one cell per step
            bound = min(bound, self.dx / speed)
        return bound

    @property
    def accuracy_dt(self) -> float:
        """The scheme's linear-phase limit while the density holds LINEAR_FRACTION of the
        mass, then accuracy / D (module docstring)."""
        total = self.density_mass + float(self.atoms.masses.sum())
        if self.count == 0 or self.density_mass >= LINEAR_FRACTION * total:
            return self.scheme.accuracy_dt
        rate = self._atom_rate() + self._kernel_rate() * (self.beta + 1.0) * self.density_mass
        return self.scheme.accuracy / rate if rate > 0 else math.inf

    def _kernel_rate(self) -> float:
        drift = self.scheme.drift
        return float(getattr(drift, "rate", 1.0))

    def _atom_rate(self) -> float:
        """max_j sum_{k != j} m_k |d/d theta_j of the pair force| (run's unit; SA: divided by
        the smallest Z over the atoms, a bound of the normalised field's rate)."""
        x, m = self._last_positions, self.atoms.masses
        if m.size < 2:
            return 0.0
        drift = self.scheme.drift
        d = x[:, None] - x[None, :]
        cd = np.cos(d)
        kern = drift.kernel
        second = np.abs(kern.derivative(cd, 2) * np.sin(d) ** 2 - kern.derivative(cd) * cd)
        np.fill_diagonal(second, 0.0)
        rate = float((second @ m).max()) * self._kernel_rate()
        if getattr(drift, "model", "usa") == "sa" and drift.beta > 0:
            z = drift.beta * (kern(cd) @ m)
            rate = rate / float(z.min()) * (1.0 + drift.beta)
        return rate

    def euler_update(self, state: np.ndarray, dt: float, k: np.ndarray) -> np.ndarray:
        if self.count == 0:
            return self.scheme.euler_update(state, dt, k)
        m = self.cells
        return np.concatenate([self.scheme.euler_update(state[:m], dt, k[:m]),
                               state[m:] + dt * k[m:]])

    def min_density(self, state: np.ndarray) -> float:
        return self.scheme.min_density(state[: self.cells])

    def advance(self, state: np.ndarray, t: float, t_target: float,
                stats: StepStats | None = None, deadline=None,
                max_steps: int | None = None) -> tuple[np.ndarray, float]:
        """Step to exactly ``t_target`` one step at a time, applying the events after each
        (capture, absorb, merge); earlier only for ``deadline`` or ``max_steps``."""
        stats = stats if stats is not None else StepStats()
        while t < t_target and (max_steps is None or stats.steps < max_steps):
            n0 = stats.steps
            before, t_before = state, t
            state, t = advance(self, state, t, t_target, integrator=self.scheme.integrator,
                               fixed_dt=self.scheme.step_size, stats=stats, deadline=deadline,
                               max_steps=n0 + 1)
            if stats.steps == n0:  # deadline passed
                break
            new = self.events(state, t, before, t_before)
            if new is not state:
                state = new
                stats.compensation = None  # the round-off carried belongs to the old state
        return state, t

    # ------------------------------------------------------------------ events
    def events(self, state: np.ndarray, t: float, before: np.ndarray | None = None,
               t_before: float | None = None) -> np.ndarray:
        """Apply absorb, capture, merge and residual to the state (a new array if anything
        changed). A merge is dated at the crossing of the window inside the last step, from
        the gaps before and after it (log-linear: gaps close exponentially)."""
        q, x = self.parts(state)
        x_before = before[self.cells:] if before is not None and before.size == state.size \
            else None
        masses = self.atoms.masses
        self._since_capture += 1
        periodic = self._since_capture >= CAPTURE_EVERY
        if not periodic and not self._merge_due(x):
            return state  # nothing to do on this step (the common case)
        from solvers.atom_kernels import absorb, capture_scan  # numba: only when stepping

        p = self.scheme.join(q)
        positions = np.mod(x, TWO_PI)
        changed = False
        # absorb: the atom's own cell flows into it (every CAPTURE_EVERY steps)
        if masses.size and periodic:
            masses = masses.copy()
            changed = absorb(p, self.dx, positions, masses, masses.size)
        # capture: narrow density clusters (every CAPTURE_EVERY steps)
        if periodic:
            self._since_capture = 0
            cap_pos, cap_mass = np.empty(self.cells), np.empty(self.cells)
            n_cap = capture_scan(p, self.capture_level, self.capture_min_mass,
                                 self.capture_width * self.dx, self.dx, cap_pos, cap_mass)
            for c, mass in zip(cap_pos[:n_cap], cap_mass[:n_cap], strict=True):
                self.atoms.events.append(Event(t, "capture", float(c), float(mass),
                                               (float(mass),)))
            if n_cap:
                positions = np.append(positions, cap_pos[:n_cap])
                masses = np.append(masses, cap_mass[:n_cap])
                changed = True
        # merge: atoms within the window
        while masses.size > 1:
            order = np.argsort(positions)
            ps = positions[order]
            gaps = np.diff(np.concatenate([ps, [ps[0] + TWO_PI]]))
            j = int(np.argmin(gaps))
            if gaps[j] >= self.merge_window:
                break
            a, b = order[j], order[(j + 1) % masses.size]
            c = _centre(np.array([positions[a], positions[b]]),
                        np.array([masses[a], masses[b]]), positions[a])
            m_new = masses[a] + masses[b]
            t_merge = t
            if x_before is not None and a < x_before.size and b < x_before.size:
                g0 = abs(math.remainder(float(x_before[b] - x_before[a]), TWO_PI))
                g1 = max(float(gaps[j]), 1e-300)
                if g0 > self.merge_window > g1 and g0 > g1:
                    frac = math.log(g0 / self.merge_window) / math.log(g0 / g1)
                    t_merge = t_before + frac * (t - t_before)
            self.atoms.events.append(Event(t_merge, "merge", float(np.mod(c, TWO_PI)),
                                           float(m_new), (float(masses[a]), float(masses[b])),
                                           self._oracle(a, b, masses)))
            x_before = None  # indices change after a merge
            keep = np.ones(masses.size, bool)
            keep[[a, b]] = False
            positions = np.append(positions[keep], np.mod(c, TWO_PI))
            masses = np.append(masses[keep], m_new)
            changed = True
        # residual: a negligible density joins the nearest atoms
        dens = float(p.sum()) * self.dx
        if masses.size and 0 < dens <= self.residual_mass * (dens + float(masses.sum())):
            near = np.argmin(np.abs(np.mod(self.theta[:, None] - positions[None, :] + math.pi,
                                           TWO_PI) - math.pi), axis=1)
            for j in range(masses.size):
                idx = np.flatnonzero((near == j) & (p > 0))
                if idx.size:
                    w = np.concatenate([[masses[j]], p[idx] * self.dx])
                    positions[j] = _centre(np.concatenate([[positions[j]], self.theta[idx]]),
                                           w, positions[j])
                    masses[j] = float(w.sum())
            self.atoms.events.append(Event(t, "residual", float("nan"), dens, (dens,)))
            p[:] = 0.0
            changed = True
        if not changed:
            return state
        self.atoms.masses = masses
        self.density_mass = float(p.sum()) * self.dx
        q = self.scheme.split(p)
        positions = np.mod(positions, TWO_PI)
        self.scheme.drift.set_atoms(positions, masses)
        self._last_positions = positions
        self._config = (t, positions.copy())
        return np.concatenate([q, positions])

    @property
    def config_time(self) -> float:
        """Time of the last event (the start of the current configuration of atoms)."""
        return self._config[0]

    @property
    def config_positions(self) -> np.ndarray:
        """Atom positions right after the last event."""
        return self._config[1]

    @property
    def since_capture(self) -> int:
        """Steps since clusters were last examined for capture (part of the exact state)."""
        return self._since_capture

    def restore(self, state: np.ndarray, masses: np.ndarray, density_mass: float,
                config_time: float, config_positions: np.ndarray,
                since_capture: int = 0) -> None:
        """Take back the atoms' part of a saved state (checkpoints): masses, the density's
        mass, the configuration at the last event, the capture counter; positions come from
        ``state``."""
        self._since_capture = int(since_capture)
        self.atoms = AtomState(np.asarray(masses, float).copy())
        self.density_mass = float(density_mass)
        x = np.mod(state[self.cells:], TWO_PI)
        self.scheme.drift.set_atoms(x, self.atoms.masses)
        self._last_positions = x
        self._config = (float(config_time), np.asarray(config_positions, float).copy())

    def _merge_due(self, x: np.ndarray) -> bool:
        """Whether two atoms are closer than the merge window (a sort of A angles)."""
        if x.size < 2:
            return False
        s = np.sort(np.mod(x, TWO_PI))
        return bool(min(float(np.diff(s).min()), float(s[0] + TWO_PI - s[-1]))
                    < self.merge_window)

    def _oracle(self, a: int, b: int, masses: np.ndarray) -> float:
        """Merge time the two-cluster law predicts for atoms a, b from their gap at the last
        configuration change (other atoms and the density ignored), NaN if unknown."""
        from meanfield.theory.reference import two_cluster_merge_time

        t0, x0 = self._config
        drift = self.scheme.drift
        if max(a, b) >= x0.size or not hasattr(drift, "model") or math.isnan(drift.beta):
            return float("nan")
        gap = abs(math.remainder(float(x0[b] - x0[a]), TWO_PI))
        if not self.merge_window < gap < math.pi:
            return float("nan")
        try:
            return t0 + two_cluster_merge_time(gap, self.merge_window, drift.beta,
                                               (float(masses[a]), float(masses[b])),
                                               drift.model, drift.time_unit)
        except (ValueError, ArithmeticError):
            return float("nan")

    def run(self, p0, t_end: float, times=None, *, observer=None, modes: int | None = None,
            progress: bool = False):
        """Integrate the density ``p0`` (atoms appear by capture) to ``t_end``; a
        ``CircleResult`` whose diagnostics include ``atoms`` and ``atom_mass`` and whose
        ``meta`` holds the final ``atom_positions``, ``atom_masses`` and the ``events``."""
        from solvers.base import InMemory
        from solvers.circle import CircleResult
        from solvers.stepping import output_times, run_outputs

        state = self.split(self.check_density(p0))
        t_end, out_times = output_times(times, t_end)
        last = {}

        def keep(st):
            last["state"] = st
            return self.join(st)

        r = run_outputs(InMemory(self, modes), state, out_times, observer=observer,
                        snapshot=keep, progress=progress)
        meta = {"wall_seconds": r["wall_seconds"], "events": list(self.atoms.events),
                "atom_positions": self.positions(last["state"]),
                "atom_masses": self.atoms.masses.copy()}
        return CircleResult(self.theta.copy(), r["times"], r["snapshots"], r["diagnostics"],
                            r["stats"].steps, r["stats"].max_courant, self.name, meta)

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self, state: np.ndarray, modes: int | None = None) -> dict:
        """The scheme's diagnostics of the whole measure (density plus atoms): mass, energy
        (density-density, density-atom, atom-atom), angular momentum, spectrum, TV distance
        (1/2)(integral |p - mean| + sum m_j); min/max density of the grid part; atom count
        and mass."""
        q, x = self.parts(state)
        drift = self.scheme.drift
        masses = self.atoms.masses
        drift.set_atoms(np.mod(x, TWO_PI), masses)
        d = self.scheme.diagnostics(q, modes)
        if masses.size:
            pos = np.mod(x, TWO_PI)
            d["mass"] += float(masses.sum())
            va = drift.atom_velocity(q)
            d["angular_momentum"] += float(masses @ va)
            d["max_speed"] = max(d["max_speed"], float(np.abs(va).max()))
            k = np.arange(d["spectrum"].size)
            # add the atoms' Fourier coefficients to the density's (complex sum)
            dens = self.scheme.grid.fft.forward(q) * self.dx / self.scheme.grid.sinc
            dens = dens[: k.size]
            dens[0] = TWO_PI * self.scheme.background + self.dx * float(q.sum())
            total = dens + np.exp(-1j * np.outer(k, pos)) @ masses
            amp = np.abs(total)
            amp[0] /= math.sqrt(TWO_PI)
            amp[1:] /= math.sqrt(math.pi)
            d["spectrum"] = amp
            mm = amp.size - 1 if modes is None else int(modes)
            d["dominant_mode"] = int(np.argmax(amp[1: mm + 1]) + 1)
            d["tv_distance"] += 0.5 * float(masses.sum())
        d["atoms"] = int(masses.size)
        d["atom_mass"] = float(masses.sum())
        return d
