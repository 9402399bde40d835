"""Cross-check of a circle PDE run against particles from the same initial density.

The particle counterpart of a grid run: N tokens at the quantiles of the run's first snapshot
(:func:`solvers.particles.quantile_circle_density`: no sampling noise, W_1 <= 2 pi / N), the
N-particle ODE (Dormand-Prince, exact kernel sums) until every cluster has collapsed below the
merge window, then the collapsed clusters as weighted particles that merge at gap < window
(seed 000, Def. 6.3; :class:`solvers.atoms.AtomicCircle` with no density, whose merge times
the tests pin to an independent DOP853 reference) until one cluster is left. The metastable
times grow like e^{c beta}, which no unmerged particle run reaches.

Compared: the cluster count of the first plateau, the merge times (exact events on both
sides), and the lengths of the plateaus between merges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meanfield.io.reader import open_run
from meanfield.theory.errors import InputError
from solvers.atoms import AtomicCircle
from solvers.circle import FiniteVolume
from solvers.clusters import density_cluster_count, detect_clusters
from solvers.particles import ParticleSystem, quantile_circle_density
from solvers.stepping import StepStats

#: Collapse test: a cluster (gap > COLLAPSE_GAP radians to its neighbours) is collapsed once
#: the tokens in it are also within the merge window of each other.
COLLAPSE_GAP = 0.05


@dataclass
class ParticlePlateaus:
    """Plateaus and merges of the particle counterpart (times in the run's time unit)."""

    tokens: int
    handoff_time: float          # particles -> weighted clusters
    handoff_clusters: int        # clusters (incl. single stragglers) at the hand-off
    plateaus: list[dict[str, Any]] = field(default_factory=list)  # {k, t_start, t_end}
    merges: list[float] = field(default_factory=list)


def particle_plateaus(path: str, tokens: int = 2048, *, t_limit: float | None = None,
                      rtol: float = 1e-7) -> ParticlePlateaus:
    """Run the particle counterpart of the circle run at ``path`` to one cluster.

    ``t_limit`` (default: the run's last time) bounds the particle phase and the merges.
    """
    with open_run(path) as run:
        cfg = run.config
        # a density on the cells of [0, 2 pi) moved by the self-attention convolution
        if "theta" not in run.coords or run.attrs.get("drift") != "convolution":
            raise InputError("path", "must be a circle run with the self-attention "
                             "convolution drift", str(path))
        p0 = np.asarray(run.snapshot(0), float)
        t_run = float(run.times[-1])
        window = float(cfg["atoms"]["merge_window"])
        a = cfg["analysis"]
    cells = p0.size

    def count(theta: np.ndarray, masses: np.ndarray) -> int:
        """The run's own cluster counter on the measure binned to the run's cells."""
        h = np.bincount(np.minimum((np.mod(theta, 2 * np.pi) / (2 * np.pi) * cells)
                                   .astype(int), cells - 1), masses, cells)
        return density_cluster_count(h * cells / (2 * np.pi * h.sum()),
                                     level=a["cluster_level"], min_mass=a["cluster_min_mass"],
                                     clustered_fraction=a["clustered_fraction"])

    m = cfg["model"]
    beta, model, unit = float(m["beta"]), m["model"], m["time_unit"]
    t_limit = t_run if t_limit is None else float(t_limit)
    x = quantile_circle_density(p0, tokens)[None, :]
    ps = ParticleSystem(tokens, 2, beta, model, time_unit=unit, integrator="adaptive",
                        rtol=rtol, atol=1e-3 * rtol, representation="angles")
    x = ps.check_state(x, "x0")
    stats, t = StepStats(), 0.0
    counts: list[tuple[float, int]] = []
    # check on a log grid from the first e-fold: collapse is exponential in time
    checks = np.geomspace(max(t_limit, 1e-300) * 1e-6, t_limit, 241)
    for t_next in checks:
        x, t = ps.advance(x, t, float(t_next), stats)
        th = np.mod(x[0], 2 * np.pi)
        wide = detect_clusters(th, method="gap", gap=COLLAPSE_GAP,
                               representation="angles")[0]
        tight = detect_clusters(th, method="gap", gap=window, representation="angles")[0]
        counts.append((t, count(th, np.ones(tokens))))
        if tight.masses.size == wide.masses.size and wide.masses.size < tokens:
            break  # every cluster is narrower than the merge window
    out = ParticlePlateaus(tokens, t, int(tight.masses.size))
    # weighted clusters with merges (no density): the exact dynamics of collapsed clusters
    s = AtomicCircle(FiniteVolume(64, beta, model, time_unit=unit), merge_window=window)
    state = s.start(np.zeros(64), tight.centres, tight.masses / tight.masses.sum())
    grid = checks[checks > t]
    for t_next in grid:
        state, t = s.advance(state, t, float(t_next), StepStats())
        counts.append((t, count(s.positions(state), s.atoms.masses)))
        if s.count == 1:
            break
    out.merges = [e.t for e in s.atoms.events if e.kind == "merge"]
    out.plateaus = _plateaus(counts, out.merges)
    return out


def _plateaus(counts: list[tuple[float, int]], merges: list[float]) -> list[dict[str, Any]]:
    """Runs of equal counts over at least two checks, ends refined to the merge events."""
    from meanfield.analysis.metastability import metastable_intervals, refine_with_events

    t = np.array([c[0] for c in counts])
    k = np.array([c[1] for c in counts])
    iv = refine_with_events(metastable_intervals(t, k), np.asarray(merges), float(t[-1]))
    return [{"k": v["k"], "t_start": v["t_start"], "t_end": v["t_end"], "open": v["open"]}
            for v in iv if v["n"] >= 2]


def compare(path: str, tokens: int = 2048) -> dict[str, Any]:
    """The PDE run's plateaus and merges beside the particle counterpart's (JSON-ready)."""
    with open_run(path) as run:
        res = run.analyze()
    part = particle_plateaus(path, tokens)
    pde = [iv for iv in res["metastable"]]
    rows = []
    for a in pde:
        b = next((p for p in part.plateaus if p["k"] == a["k"]), None)
        row = {"k": a["k"], "pde_start": a["t_start"], "pde_end": a["t_end"],
               "pde_open": a.get("open", False)}
        if b is not None:
            row |= {"particles_start": b["t_start"], "particles_end": b["t_end"],
                    "particles_open": b["open"]}
            if not (a.get("open") or b["open"]):
                la, lb = a["t_end"] - a["t_start"], b["t_end"] - b["t_start"]
                row["length_ratio"] = la / lb if lb > 0 else None
        rows.append(row)
    return {"path": str(path), "beta": res["beta"], "tokens": tokens,
            "first_plateau": {"pde": res["first_plateau_clusters"],
                              "particles": part.plateaus[0]["k"] if part.plateaus else None},
            "handoff": {"t": part.handoff_time, "clusters": part.handoff_clusters},
            "merges": {"pde": [m["t"] for m in res["merges"]], "particles": part.merges},
            "plateaus": rows}
