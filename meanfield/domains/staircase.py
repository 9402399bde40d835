"""The energy staircase (seed 000 §6): weighted merging tokens on S^1 on a rescaled clock.

Config: ``[staircase]`` angles (or count i.i.d. uniform tokens from initial.seed), masses,
clock (physical | closest (6.1) | gradient (§6.2)), window (Def. 6.3 merges; 0 =
1/sqrt(beta log beta)), normalization (USA: 1/N, or 1/N^2 for (3.7)), rtol, atol;
``model.beta``, ``model.model``, ``model.time_unit``. The file's time axis is the clock's
variable s; ``physical_time`` is stored as a diagnostic, with Ebar, the speeds on both clocks,
the number of tokens left and the smallest gap; every merge is an event (solvers.particles.
staircase). Use ``time.schedule = "log"`` to span the decades.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from meanfield.domains.base import CONVENTIONS, Domain
from meanfield.schema import NUM, Key, gt
from meanfield.theory.errors import InputError
from solvers.particles.staircase import CLOCKS, NORMALIZATIONS, MergingCircle
from solvers.stepping import StepStats

TWO_PI = 2.0 * math.pi


class StaircaseProblem:
    """Run adapter for ``solvers.particles.staircase.MergingCircle``."""

    field = "angles"
    field_dims = ("particle",)
    field_attrs: dict = {  # noqa: RUF012 - read-only
        "long_name": "token angles (merged tokens at their cluster's angle, not wrapped)",
        "units": "rad"}
    snapshot_specs: dict = {}  # noqa: RUF012
    gamma_max = None
    step_size = None

    def __init__(self, cfg: dict) -> None:
        m, s = cfg["model"], cfg["staircase"]
        self.cfg = cfg
        self.solver = MergingCircle(m["beta"], m["model"], clock=s["clock"],
                                    window=s["window"] or None,
                                    normalization=s["normalization"],
                                    time_unit=m["time_unit"], rtol=s["rtol"], atol=s["atol"])
        theta = np.asarray(s["angles"], float) if s["angles"] else np.random.default_rng(
            cfg["initial"]["seed"]).uniform(0.0, TWO_PI, s["count"])
        self.state0 = self.solver.initial_state(theta, s["masses"] or None)
        n = theta.size
        self.coords = {"particle": (np.arange(n), {"long_name": "token index"}),
                       "part": (np.arange(2), {"long_name": "the two merged tokens"})}
        masses = np.asarray(s["masses"] or np.ones(n), float)
        self.static = {"masses": (masses / masses.sum(), {"long_name": "initial token "
                                                          "masses (sum 1)"}, ("particle",))}
        per = ()
        self.diag_specs = {
            "ebar": (per, "f8", {"long_name": "Ebar = sum_ij m_i m_j e^{beta(cos_ij - 1)}"}),
            "physical_time": (per, "f8", {"long_name": "physical time t at the clock time s "
                                          "(inf beyond 1e308)"}),
            "log10_physical_time": (per, "f8", {"long_name": "log10(1 + t), finite at any "
                                                "beta"}),
            "speed": (per, "f8", {"long_name": "|v| = (sum_i m_i v_i^2)^{1/2}, physical clock "
                                  "(the gradient norm in the model's metric)"}),
            "rescaled_speed": (per, "f8", {"long_name": "|dtheta/ds| on the run's clock"}),
            "atoms": (per, "i8", {"long_name": "tokens left (clusters merged to one token)"}),
            "atom_mass": (per, "f8", {"long_name": "largest token mass"}),
            "min_gap": (per, "f8", {"long_name": "smallest gap between tokens", "units":
                                    "rad"}),
            "steps": ((), "i8", {"long_name": "merge events so far"}),
        }
        self.event_specs = {
            "event_kind": ((), "i1", {"long_name": "1 merge (seed 000 Def. 6.3)"}),
            "event_position": ((), "f8", {"long_name": "angle of the merged token",
                                          "units": "rad"}),
            "event_mass": ((), "f8", {"long_name": "mass of the merged token"}),
            "event_parts": (("part",), "f8", {"long_name": "masses merged"}),
            "event_physical_time": ((), "f8", {"long_name": "physical time of the merge "
                                               "(inf beyond 1e308)"}),
        }
        self._events_out = 0
        self._state = self.state0

    def attrs(self) -> dict[str, Any]:
        s = self.solver
        return {"conventions": CONVENTIONS + "; staircase: solvers/particles/staircase.py",
                "domain": "staircase", "clock": s.clock, "merge_window": s.window,
                "normalization": s.normalization, "time_unit": s.time_unit,
                "seed": self.cfg["initial"]["seed"], "linear_theory": "none",
                "drift": "merging tokens", "model": s.model,
                "time_axis": "clock time s (" + s.clock + ")"}

    def new_stats(self) -> StepStats:
        return StepStats()

    def initial_state(self):
        return self.state0.copy()

    def advance(self, state, t, target, stats, deadline=None, max_steps=None):
        new = self.solver.advance(state, t, target)
        stats.steps = len(new.merges)
        self._state = new
        return new, target

    def diagnostics(self, state, stats) -> dict[str, Any]:
        a = state.mass > 0
        th = state.theta[a]
        d = np.abs(np.remainder(th[:, None] - th[None, :] + math.pi, TWO_PI) - math.pi)
        np.fill_diagonal(d, np.inf)
        phys, resc = self.solver.speeds(state)
        return {"ebar": self.solver.ebar(state), "physical_time": state.t,
                "log10_physical_time": state.log1p_t / math.log(10.0), "speed": phys,
                "rescaled_speed": resc, "atoms": int(a.sum()),
                "atom_mass": float(state.mass.max()),
                "min_gap": float(d.min()) if th.size > 1 else 0.0,
                "steps": len(state.merges)}

    def snapshot(self, state) -> np.ndarray:
        return state.positions()

    def snapshot_extras(self, state) -> dict:
        return {}

    def new_events(self) -> list[tuple[float, dict]]:
        ev = self._state.merges[self._events_out:]
        self._events_out += len(ev)
        return [(e.s, {"event_kind": 1, "event_position": e.angle, "event_mass": e.mass,
                       "event_parts": np.array(e.parts),
                       "event_physical_time": e.t}) for e in ev]

    def save_state(self, state, stats) -> tuple[dict, dict]:
        merges = np.array([[e.s, e.t, *e.parts, e.mass, e.angle, e.gap]
                           for e in state.merges]).reshape(-1, 7)
        return ({"theta": state.theta, "mass": state.mass, "rep": state.rep,
                 "merges": merges}, {"log1p_t": state.log1p_t, "events_out":
                                     self._events_out})

    def load_state(self, arrays, scalars):
        from solvers.particles.staircase import Merge, State

        merges = [Merge(float(r[0]), float(r[1]), (float(r[2]), float(r[3])), float(r[4]),
                        float(r[5]), float(r[6])) for r in np.asarray(arrays["merges"])]
        st = State(np.asarray(arrays["theta"], float), np.asarray(arrays["mass"], float),
                   np.asarray(arrays["rep"], int), float(scalars["log1p_t"]), merges)
        self._events_out = int(scalars["events_out"])
        self._state = st
        stats = StepStats()
        stats.steps = len(merges)
        return st, stats


class Staircase(Domain):
    name = "staircase"
    summary = "merging weighted tokens on S^1 on seed 000's clocks (energy staircase; " \
              "[staircase])"
    schemes = ()
    defaults = {"model": {"model": "usa", "time_unit": "scaled"},  # noqa: RUF012
                "time": {"schedule": "log"}}
    keys = {  # noqa: RUF012 - read-only class data
        "staircase": {
            "angles": Key([], list, "initial angles (token order); empty: count i.i.d. "
                          "uniform tokens from initial.seed",
                          check=lambda v: all(isinstance(x, (int, float)) and math.isfinite(x)
                                              for x in v), allowed="a list of finite angles"),
            "count": Key(5, int, "tokens when angles is empty", check=lambda v: v >= 1,
                         allowed="an integer >= 1"),
            "masses": Key([], list, "token masses (default equal; normalised to sum 1)",
                          check=lambda v: all(isinstance(x, (int, float)) and x > 0
                                              for x in v), allowed="positive numbers"),
            "clock": Key("physical", str, "physical | closest (seed 000 (6.1), closest pair) "
                         "| gradient (§6.2, log(beta) grad E/|grad E|)", CLOCKS),
            "window": Key(0.0, NUM, "merge tokens closer than this (Def. 6.3); 0 = "
                          "1/sqrt(beta log beta)", check=lambda v: 0 <= v < math.pi,
                          allowed="a number in [0, pi)"),
            "normalization": Key("1/N", str, "USA prefactor: 1/N (masses sum to 1) | 1/N^2 "
                                 "(seed 000 (3.7))", NORMALIZATIONS),
            "rtol": Key(1e-10, NUM, "DOP853 relative tolerance", check=gt(0),
                        allowed="a number > 0"),
            "atol": Key(1e-12, NUM, "DOP853 absolute tolerance", check=gt(0),
                        allowed="a number > 0"),
        },
    }
    spectrum_label = "Ebar"

    def check(self, cfg: dict) -> None:
        self.check_attention(cfg)
        m, s = cfg["model"], cfg["staircase"]
        if m["dim"] != 2:
            raise InputError("model.dim", "must be 2 for model.domain = 'staircase'", m["dim"])
        if s["masses"] and len(s["masses"]) != (len(s["angles"]) or s["count"]):
            raise InputError("staircase.masses", "must give one mass per token", s["masses"])
        if s["clock"] != "physical" and m["beta"] <= 1:
            raise InputError("model.beta", "must be > 1 for the rescaled clocks", m["beta"])
        if m["model"] == "usa" and m["time_unit"] == "raw" and m["beta"] > 700:
            raise InputError("model.time_unit", "must be 'scaled' for USA beyond beta = 700",
                             m["time_unit"])
        if cfg["time"]["schedule"] == "steps":
            raise InputError("time.schedule", "must be linear or log for the staircase")

    def problem(self, cfg: dict) -> StaircaseProblem:
        return StaircaseProblem(cfg)

    def resolution(self, cfg: dict) -> str:
        s = cfg["staircase"]
        return f"n = {len(s['angles']) or s['count']}, {s['clock']} clock"

    def cluster_count(self, snapshot: np.ndarray, coords: dict, params: dict) -> int:
        """Distinct angles (merged tokens share their cluster's angle exactly)."""
        return int(np.unique(np.round(np.mod(np.asarray(snapshot, float), TWO_PI), 12)).size)

    def points(self, run, index: int, system: int = 0) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(run.snapshot(index), float)
        m = np.asarray(run.static("masses"), float)
        return np.stack([np.cos(x), np.sin(x)], axis=1), m / m.sum()

    def effective_tokens(self, cfg: dict) -> float | None:
        return None

    def figures(self, run, analysis: dict, out: Path, stem: str, title: str) -> list[str]:
        from meanfield.figures import staircase_figure

        return [staircase_figure(run, analysis, out / f"{stem}_staircase.png", title)]


DOMAIN = Staircase()
