"""Grid problems whose clusters become weighted atoms once the grid stops resolving them.

The sphere (spectral) and zonal (finite-volume) domains run in two phases: ``grid`` (the
scheme's density) and, once the domain's ``handoff_due`` says the grid no longer resolves
its clusters, ``atoms`` (a weighted atom system with merges: ``solvers.sphere_atoms``,
``solvers.zonal_atoms``). The hand-off keeps the total mass exactly, is logged, and is an
event of the run file (kind 3: its time, the mass handed over, the number of atoms and the
fraction of the mass that was outside the clusters). After it the density snapshots are zero
and the measure is the atoms (``atom_position``, ``atom_mass_by_atom``).

A subclass sets ``atom_axes`` (the shape of one atom's position and its coordinate
dictionary) and provides ``atoms_from_grid(q)`` and ``handoff_due(q)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meanfield.domains.base import Domain, GridProblem
from solvers.sphere_atoms import AtomEvent
from solvers.stepping import StepStats

#: grid steps between two hand-off checks
HANDOFF_CHECK_EVERY = 8
#: event kinds written to the file (docs/conventions.md): 1 merge, 3 hand-off
EVENT_KINDS = {"merge": 1, "handoff": 3}


class HandoffProblem(GridProblem):
    """Grid phase, then weighted atoms (module docstring)."""

    #: coordinates of one atom's position: {} for an angle, {"component": (values, attrs)}
    atom_axes: dict = {}  # noqa: RUF012
    position_attrs: dict = {"long_name": "atom position"}  # noqa: RUF012

    def __init__(self, cfg: dict, scheme, atoms) -> None:
        super().__init__(cfg, scheme)
        a = cfg["atoms"]
        self.handoff = bool(a["enabled"])
        self.phase = "grid"
        self._events_out = 0
        self.atoms = atoms
        #: lines for the run's log (printed by the driver at the next record)
        self.notices: list[str] = []
        self.snapshot_specs: dict = {}
        self.event_specs: dict = {}

    def add_atom_specs(self) -> None:
        """Coordinates, diagnostics and datasets of the atoms (call after ``coords``)."""
        if not self.handoff:
            return
        a = self.cfg["atoms"]
        self.coords["atom"] = (np.arange(a["max"]), {"long_name": "atom slot"})
        self.coords.update(self.atom_axes)
        self.coords["part"] = (np.arange(2), {"long_name": "merge: the two masses; "
                                              "hand-off: atoms, residual fraction"})
        self.diag_specs |= {"atoms": ((), "i4", {"long_name": "number of atoms"})}
        self.snapshot_specs = {
            "atom_position": (("atom", *self.atom_axes), "f8", self.position_attrs),
            "atom_mass_by_atom": (("atom",), "f8", {"long_name": "atom mass (0: none)"}),
        }
        self.event_specs = {
            "event_kind": ((), "i1", {"long_name": "3 hand-off (the density became atoms), "
                                      "1 merge"}),
            "event_mass": ((), "f8", {"long_name": "mass of the resulting atom(s)"}),
            "event_parts": (("part",), "f8", {"long_name": "merge: the masses merged; "
                                              "hand-off: number of atoms, fraction of the "
                                              "mass outside the clusters"}),
        }

    # ------------------------------------------------------------------ subclass hooks
    def atoms_from_grid(self, q) -> tuple[np.ndarray, np.ndarray, float]:
        """(positions, masses, residual fraction) of the atoms the density ``q`` becomes."""
        raise NotImplementedError

    def handoff_due(self, q) -> bool:
        """Whether the grid no longer resolves its clusters (checked every
        HANDOFF_CHECK_EVERY steps)."""
        raise NotImplementedError

    def where(self, pos) -> str:
        """Where the atoms are, for the log ("at ... "); empty by default."""
        return ""

    def atom_diagnostics(self, x, stats: StepStats) -> dict[str, Any]:
        """The grid's diagnostics for the atom phase (density entries: 0 or NaN)."""
        a = self.atoms
        pd = a.diagnostics(x, self.modes)
        spec = np.resize(np.asarray(pd.get("spectrum", np.zeros(self.modes + 1))),
                         self.modes + 1)
        out = {"mass": float(a.masses.sum()), "min_density": 0.0, "max_density": 0.0,
               "energy": float(pd.get("energy", np.nan)), "ebar": float(pd.get("ebar", np.nan)),
               "max_speed": float(pd.get("max_speed", 0.0)), "tv_distance": 1.0,
               "dominant_mode": int(np.argmax(spec[1:]) + 1), "spectrum": spec,
               "dt": stats.last_dt, "steps": stats.steps, "atoms": int(a.masses.size)}
        return out | {k: np.nan for k in self.diag_specs if k not in out}

    # ------------------------------------------------------------------ phases
    def advance(self, state, t, target, stats, deadline=None, max_steps=None):
        """Grid steps in chunks of HANDOFF_CHECK_EVERY, handing off as soon as the check
        says so (a function of the state and the step count alone: a resumed run hands off
        at the same step); then the atoms."""
        while self.phase == "grid" and t < target:
            if self.handoff and self.handoff_due(state):
                state = self._hand_off(state, t, stats)
                if self.phase == "atoms":
                    break
            chunk = stats.steps + HANDOFF_CHECK_EVERY if self.handoff else None
            if max_steps is not None:
                chunk = max_steps if chunk is None else min(chunk, max_steps)
            n0 = stats.steps
            state, t = self.scheme.advance(state, t, target, stats, deadline, chunk)
            if stats.steps == n0 or (max_steps is not None and stats.steps >= max_steps):
                return state, t
        if self.phase == "grid" or t >= target:
            return state, t
        return self.atoms.advance(state, t, target, stats, deadline, max_steps)

    def _hand_off(self, q, t: float, stats: StepStats):
        pos, mass, residual = self.atoms_from_grid(q)
        if mass.size == 0:  # nothing to hand off: the grid goes on (and may stop)
            return q
        self.atoms.masses = mass
        self.atoms.events.append(AtomEvent(t, "handoff", pos, float(mass.sum()),
                                           (float(mass.size), float(residual))))
        self.notices.append(f"t = {t:.6g}: the grid no longer resolves its clusters; hand-off "
                            f"to {mass.size} weighted atoms {self.where(pos)}(mass "
                            f"{float(mass.sum()):.15g}, "
                            f"{residual:.2e} of it outside the clusters)")
        self.phase = "atoms"
        stats.f, stats.dt, stats.compensation = None, None, None
        return pos

    def diagnostics(self, state, stats) -> dict[str, Any]:
        if self.phase == "atoms":
            return self.atom_diagnostics(state, stats)
        d = super().diagnostics(state, stats)
        if self.handoff:
            d["atoms"] = 0
            if self.handoff_due(state):
                d["handoff_pending"] = True  # the next step starts from atoms
        return d

    def snapshot(self, state) -> np.ndarray:
        if self.phase == "atoms":  # after the hand-off the measure is the atoms alone
            return np.zeros(tuple(self.coords[d][0].size for d in self.field_dims))
        return super().snapshot(state)

    def snapshot_extras(self, state) -> dict[str, np.ndarray]:
        if not self.handoff:
            return {}
        n = self.cfg["atoms"]["max"]
        shape = tuple(v[0].size for v in self.atom_axes.values())
        pos, mass = np.full((n, *shape), np.nan), np.zeros(n)
        if self.phase == "atoms":
            order = np.argsort(-self.atoms.masses)[:n]
            pos[: order.size], mass[: order.size] = state[order], self.atoms.masses[order]
        return {"atom_position": pos, "atom_mass_by_atom": mass}

    def new_events(self) -> list[tuple[float, dict]]:
        events = self.atoms.events[self._events_out:]
        self._events_out += len(events)
        return [(e.t, {"event_kind": EVENT_KINDS[e.kind], "event_mass": e.mass,
                       "event_parts": np.array([*e.parts, 0.0, 0.0][:2])}) for e in events]

    def save_state(self, state, stats) -> tuple[dict, dict]:
        if self.phase == "grid":
            arrays, scalars = super().save_state(state, stats)
        else:
            arrays = {"q": state, "atom_masses": self.atoms.masses}
            if stats.f is not None:
                arrays["f"] = stats.f
            scalars = {"steps": stats.steps, "last_dt": stats.last_dt,
                       "dt": -1.0 if stats.dt is None else stats.dt, "rejected": stats.rejected}
        scalars["phase"] = self.phase
        return arrays, scalars

    def load_state(self, arrays, scalars):
        self.phase = str(scalars.get("phase", "grid"))
        if self.phase == "grid":
            return super().load_state(arrays, scalars)
        self.atoms.masses = np.asarray(arrays["atom_masses"], float)
        stats = StepStats(int(scalars["steps"]), float(scalars["last_dt"]))
        stats.dt = None if scalars["dt"] < 0 else float(scalars["dt"])
        stats.f, stats.rejected = arrays.get("f"), int(scalars["rejected"])
        return np.asarray(arrays["q"], float), stats


class HandoffDomain(Domain):
    """A domain whose runs may hand off to atoms: clusters are counted on the grid before the
    hand-off and as the atoms of mass >= cluster_min_mass after it."""

    def cluster_series(self, run, params: dict, system: int = 0) -> np.ndarray:
        masses = run.extra("atom_mass_by_atom")
        grid = super().cluster_series(run, params, system)
        if masses is None:
            return grid
        m = masses[()]
        atoms = (m >= params["cluster_min_mass"]).sum(axis=1)
        return np.where(m.sum(axis=1) > 0, atoms, grid)


__all__ = ["EVENT_KINDS", "HandoffDomain", "HandoffProblem"]
