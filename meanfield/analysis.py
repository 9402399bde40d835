"""Metastability analysis of a run: clusters, plateaus, exit time, growth-rate fit.

Works on a run file (:class:`meanfield.reader.Run`) or on in-memory results
(``solvers.circle.CircleResult`` plus the model parameters). All thresholds are parameters
with documented defaults (also in the ``[analysis]`` config section).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from meanfield.growth import growth_rate, most_unstable_mode

TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class Cluster:
    centre: float  # angle in [0, 2 pi)
    mass: float    # mass of the basin: the arc between the density minima on either side
    width: float   # angular extent of the core (the region above the level)
    core_mass: float  # mass inside the core


def detect_clusters(p: np.ndarray, *, level: float = 2.0, min_mass: float = 0.01) -> list[Cluster]:
    """Clusters of a density on M uniform cells of [0, 2 pi).

    A cluster core is a maximal connected (periodic) run of cells where p > ``level`` *
    mean(p) whose mass (integral of p over the run) is >= ``min_mass``. Thresholds are levels
    of the density, not cell counts, so the count does not depend on the resolution. At the
    uniform state with 1 % noise max p / mean(p) ~ 1.25, so noise counts as zero clusters;
    k separated bumps (or Dirac-like clusters) count as k. The circle is then split at the
    density minimum between consecutive cores: a cluster's mass is that of its basin (masses
    sum to the total), its centre the p-weighted circular mean of its core.
    """
    p = np.asarray(p, float)
    m = p.size
    dx = TWO_PI / m
    above = p > level * p.mean()
    if not above.any():
        return []
    theta = (np.arange(m) + 0.5) * dx
    if above.all():
        total = float(p.sum() * dx)
        return [Cluster(float(np.angle(np.sum(p * np.exp(1j * theta))) % TWO_PI), total,
                        TWO_PI, total)]
    # rotate so that index 0 is below the level: runs never wrap
    shift = int(np.argmin(above))
    a = np.roll(above, -shift)
    edges = np.diff(np.concatenate([[0], a.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    pr = np.roll(p, -shift)
    cores = [(s, e) for s, e in zip(starts, ends, strict=True)
             if pr[s:e].sum() * dx >= min_mass]
    if not cores:
        return []
    # basin boundaries: the minimum of p in each gap between consecutive cores (cyclically)
    cuts = []
    for (_s0, e0), (s1, _) in zip(cores, [*cores[1:], (cores[0][0] + m, 0)], strict=True):
        gap = np.arange(e0, s1) % m
        cuts.append(int(gap[np.argmin(pr[gap])]) if gap.size else e0 % m)
    cum = np.concatenate([[0.0], np.cumsum(pr) * dx])

    def arc_mass(i0: int, i1: int) -> float:  # cells i0 .. i1-1, cyclic
        return cum[i1] - cum[i0] if i1 >= i0 else cum[m] - cum[i0] + cum[i1]

    out = []
    for j, (s, e) in enumerate(cores):
        lo, hi = cuts[j - 1], cuts[j]
        idx = (np.arange(s, e) + shift) % m
        centre = float(np.angle(np.sum(p[idx] * np.exp(1j * theta[idx]))) % TWO_PI)
        mass = arc_mass(lo, hi) if len(cores) > 1 else float(cum[m])
        out.append(Cluster(centre, float(mass), float((e - s) * dx), float(pr[s:e].sum() * dx)))
    return sorted(out, key=lambda c: c.centre)


def cluster_count(p: np.ndarray, *, level: float = 2.0, min_mass: float = 0.01,
                  clustered_fraction: float = 0.5) -> int:
    """Number of clusters once the pattern has formed: the number of cores if they hold at
    least ``clustered_fraction`` of the mass, else 0 (uniform, or clusters still forming,
    which would otherwise show as a staircase 1, 2, ... as bumps cross the level in turn)."""
    clusters = detect_clusters(p, level=level, min_mass=min_mass)
    total = float(np.sum(p)) * TWO_PI / p.size
    if sum(c.core_mass for c in clusters) < clustered_fraction * total:
        return 0
    return len(clusters)


def wasserstein1_circle(p: np.ndarray, q: np.ndarray | None = None) -> float:
    """Exact W_1 on the circle between two densities on the same M cells (q: uniform).

    W_1 = min_c integral |F - G - c| d theta = integral |F - G - median(F - G)| d theta, with
    F, G the cumulative distributions (both normalised to mass 1).
    """
    p = np.asarray(p, float)
    dx = TWO_PI / p.size
    q = np.full(p.size, 1.0 / TWO_PI) if q is None else np.asarray(q, float)
    diff = np.cumsum(p / (p.sum() * dx) - q / (q.sum() * dx)) * dx
    return float(np.sum(np.abs(diff - np.median(diff))) * dx)


def metastable_intervals(times: np.ndarray, counts: np.ndarray) -> list[dict[str, Any]]:
    """Maximal runs of snapshots with the same non-zero cluster count: {k, t_start, t_end, n}."""
    out = []
    i = 0
    n = len(counts)
    while i < n:
        j = i
        while j + 1 < n and counts[j + 1] == counts[i]:
            j += 1
        if counts[i] > 0:
            out.append({"k": int(counts[i]), "t_start": float(times[i]),
                        "t_end": float(times[j]), "n": j - i + 1})
        i = j + 1
    return out


def crossing_time(t: np.ndarray, y: np.ndarray, threshold: float) -> float | None:
    """First time y crosses ``threshold`` upwards, linearly interpolated (None if never)."""
    idx = np.flatnonzero(y >= threshold)
    if idx.size == 0:
        return None
    i = int(idx[0])
    if i == 0:
        return float(t[0])
    t0, t1, y0, y1 = t[i - 1], t[i], y[i - 1], y[i]
    return float(t0 + (threshold - y0) * (t1 - t0) / (y1 - y0))


def fit_growth_rate(t: np.ndarray, amp: np.ndarray, t_stop: float | None,
                    fraction: float = 0.05) -> dict[str, Any] | None:
    """Least-squares slope of log(amplitude) of one mode while it is linear.

    The window is the initial stretch with t <= t_stop (the exit time) and amplitude <=
    ``fraction`` of its value at t_stop (of its maximum if the run never exits). On the
    circle at the default TV threshold 0.3 that is a modulation 2|p_hat_k|/p_hat_0 of ~5 %.
    """
    ref = np.interp(t_stop, t, amp) if t_stop is not None else np.max(amp)
    ok = (amp > 0) & (amp <= fraction * ref)
    if t_stop is not None:
        ok &= t <= t_stop
    # the window is the initial stretch only: stop at the first point that leaves it
    first_bad = np.flatnonzero(~ok)
    end = int(first_bad[0]) if first_bad.size else len(t)
    if end < 3:
        return None
    slope, _ = np.polyfit(t[:end], np.log(amp[:end]), 1)
    return {"measured": float(slope), "t_start": float(t[0]), "t_end": float(t[end - 1]),
            "points": end}


def effective_tokens(cfg: dict) -> float | None:
    """N whose i.i.d. tokens perturb the uniform state as much as the initial condition.

    Particles: N = particles.count. Token noise: N itself (E|c_k|^2 = 1/N). White noise
    sigma per cell on M cells:
    E|p_hat_k|^2 = dx^2 M sigma^2 = (2 pi)^2 sigma^2 / M, i.e. N_eff = M / (2 pi sigma)^2.
    """
    i = cfg["initial"]
    if cfg["model"]["domain"] == "particles":  # the tokens themselves
        return float(cfg["particles"]["count"]) if i["kind"] != "file" else None
    if i["kind"] == "tokens":
        return float(i["tokens"])
    if i["kind"] == "noise" and i["amplitude"] > 0 and cfg["model"]["domain"] == "circle":
        return cfg["discretization"]["cells"] / (TWO_PI * i["amplitude"]) ** 2
    return None


def _predicted_exit(s: dict) -> float | None:
    """Linear-theory mean exit time (meanfield.growth.exit_time) for the TV threshold tau:
    on the circle TV = sqrt(2) r / pi, so delta = pi tau / sqrt(2)."""
    n = s.get("effective_tokens")
    if not n or s["dim"] != 2:
        return None
    from meanfield.growth import exit_time

    delta = math.pi * s["exit_threshold"] / math.sqrt(2.0)
    return exit_time(n, s["beta"], s["dim"], s["model"], delta, s["time_unit"])


def _source(src, params: dict) -> dict[str, Any]:
    """Normalise a Run or an in-memory CircleResult into one dict."""
    from meanfield.reader import Run

    if isinstance(src, Run):
        cfg = src.config
        a = cfg["analysis"]
        out = {"beta": cfg["model"]["beta"], "dim": cfg["model"]["dim"],
               "model": cfg["model"]["model"], "time_unit": cfg["model"]["time_unit"],
               "times": src.times, "density": src.density, "diag_times": src.diag_times,
               "diag": src.diagnostics, "cluster_level": a["cluster_level"],
               "cluster_min_mass": a["cluster_min_mass"], "exit_threshold": a["exit_threshold"],
               "min_plateau_outputs": a["min_plateau_outputs"], "path": str(src.path),
               "min_plateau_efolds": a["min_plateau_efolds"],
               "clustered_fraction": a["clustered_fraction"], "cluster_eps": a["cluster_eps"],
               "domain": src.domain, "coords": src.coords,
               "angles": src.field == "angles",
               "effective_tokens": effective_tokens(cfg)}
    else:  # CircleResult
        out = {"times": src.times, "density": src.density, "diag_times": src.times,
               "diag": src.diagnostics, "dim": 2, "time_unit": "raw", "model": "usa",
               "cluster_level": 2.0, "cluster_min_mass": 0.01, "exit_threshold": 0.3,
               "min_plateau_outputs": 3, "min_plateau_efolds": 2.0, "clustered_fraction": 0.5,
               "cluster_eps": 0.01, "domain": "circle", "coords": {}, "angles": False}
    out.update({k: v for k, v in params.items() if v is not None})
    if out.get("beta") is None:
        raise ValueError("beta: must be given to analyse in-memory results")
    return out


def zonal_cluster_count(theta: np.ndarray, p: np.ndarray, dim: int, *, level: float = 2.0,
                        min_mass: float = 0.01, clustered_fraction: float = 0.5) -> int:
    """Zonal data on S^{d-1}: regions of theta in [0, pi] (polar caps or rings) where p >
    level * mean(p), weighted by the measure |S^{d-2}| sin^{d-2}(theta) d theta."""
    from meanfield.geometry import sphere_area

    h = math.pi / p.size
    w = (np.sin(theta) ** (dim - 2) if dim > 2 else np.ones_like(theta)) * h
    w *= sphere_area(dim) / w.sum()
    total = float(w @ p)
    above = p > level * total / sphere_area(dim)
    edges = np.diff(np.concatenate([[0], above.astype(np.int8), [0]]))
    masses = [float(w[a:b] @ p[a:b]) for a, b in zip(np.flatnonzero(edges == 1),
                                                      np.flatnonzero(edges == -1), strict=True)]
    masses = [m for m in masses if m >= min_mass * total]
    return len(masses) if sum(masses) >= clustered_fraction * total else 0


def sphere_cluster_count(lat: np.ndarray, lon: np.ndarray, p: np.ndarray, *,
                         level: float = 2.0, min_mass: float = 0.01, cap: float = 0.35,
                         clustered_fraction: float = 0.5) -> int:
    """S^2 grid data: local maxima above level * mean(p), each with the mass of the cap of
    angular radius ``cap`` (radians) around it; maxima closer than ``cap`` to a higher one
    are merged into it. Counted once the caps hold ``clustered_fraction`` of the mass."""
    from scipy.ndimage import maximum_filter

    colat = np.radians(90.0 - lat)
    phi = np.radians(lon)
    dA = np.sin(colat)[:, None] * np.ones_like(phi)[None, :]
    dA *= 4 * np.pi / dA.sum()
    total = float(np.sum(p * dA))
    mean = total / (4 * np.pi)
    peak = (p == maximum_filter(p, size=3, mode=("nearest", "wrap"))) & (p > level * mean)
    idx = np.argwhere(peak)
    idx = idx[np.argsort(-p[peak])]
    x = np.stack([np.sin(colat)[:, None] * np.cos(phi)[None, :],
                  np.sin(colat)[:, None] * np.sin(phi)[None, :],
                  np.cos(colat)[:, None] * np.ones_like(phi)[None, :]], axis=-1)
    centres: list[np.ndarray] = []
    masses: list[float] = []
    cos_cap = math.cos(cap)
    for i, j in idx:
        c = x[i, j]
        if any(float(c @ o) > cos_cap for o in centres):
            continue
        centres.append(c)
        masses.append(float(np.sum((p * dA)[(x @ c) > cos_cap])))
    kept = [m for m in masses if m >= min_mass * total]
    return len(kept) if sum(kept) >= clustered_fraction * total else 0


def particle_cluster_count(x: np.ndarray, *, angles: bool, level: float = 2.0,
                           min_mass: float = 0.01, clustered_fraction: float = 0.5,
                           eps: float = 0.01) -> int:
    """Tokens of one system. Circle: the PDE rule on a histogram with max(16, min(N/20,
    720)) bins (>= 20 tokens per bin on average, so counting noise stays below the level).
    S^{d-1}: connected components of <x_i, x_j> > 1 - eps (seed 001's rule, in
    solvers.particles), with eps capped so that i.i.d. uniform tokens have 0.3 linked
    neighbours on average: the link angle a solves N |S^{d-2}| a^{d-1} / ((d-1) |S^{d-1}|)
    = 0.3, far below percolation, so the uniform state counts as zero clusters for any N."""
    if angles:
        from meanfield.initial import from_particles

        bins = int(max(16, min(x.size // 20, 720)))
        return cluster_count(from_particles(bins, x), level=level, min_mass=min_mass,
                             clustered_fraction=clustered_fraction)
    from meanfield.geometry import sphere_area
    from solvers.particles import detect_clusters as components

    n, d = x.shape
    a = (0.3 * (d - 1) * sphere_area(d) / (sphere_area(d - 1) * n)) ** (1.0 / (d - 1)) \
        if d > 2 else 0.3 * math.pi / n
    cl = components(x[None], method="inner", eps=min(eps, 1.0 - math.cos(a)))[0]
    kept = cl.masses[cl.masses >= min_mass]
    return int(kept.size) if kept.sum() >= clustered_fraction else 0


def _counts(s: dict) -> np.ndarray:
    dom = s["domain"]
    kw = {"level": s["cluster_level"], "min_mass": s["cluster_min_mass"],
          "clustered_fraction": s["clustered_fraction"]}
    out = []
    for i in range(len(s["times"])):
        snap = s["density"][i]
        if dom == "circle":
            out.append(cluster_count(snap, **kw))
        elif dom == "zonal":
            out.append(zonal_cluster_count(s["coords"]["theta"], snap, s["dim"], **kw))
        elif dom == "sphere":
            out.append(sphere_cluster_count(s["coords"]["lat"], s["coords"]["lon"], snap, **kw))
        else:
            out.append(particle_cluster_count(snap[s["system"]], angles=s["angles"],
                                              eps=s["cluster_eps"], **kw))
    return np.asarray(out, dtype=int)


def _amplitudes(s: dict, d: dict[str, np.ndarray]) -> np.ndarray | None:
    """|amplitude of degree k| over diag_time, (n, K+1), for the growth-rate fit."""
    if "fourier" in d:
        f = d["fourier"]
        return f[:, s["system"]] if f.ndim == 3 else f
    if "power" in d:
        return np.sqrt(np.maximum(d["power"], 0.0))
    if "gegenbauer" in d:
        return np.abs(d["gegenbauer"])
    return None


def _series(d: dict[str, np.ndarray], key: str, system: int) -> np.ndarray | None:
    v = d.get(key)
    if v is None:
        return None
    return v[:, system] if v.ndim == 2 else v


def analyze(src, *, beta: float | None = None, model: str | None = None,
            time_unit: str | None = None, system: int = 0, **params: Any) -> dict[str, Any]:
    """Analyse a run (circle, sphere, zonal or particles); returns a JSON-ready dict.

    ``params`` override the ``[analysis]`` settings: cluster_level, cluster_min_mass,
    clustered_fraction, cluster_eps, exit_threshold, min_plateau_outputs, min_plateau_efolds.
    Particle runs with several systems are analysed for ``system`` (default 0).
    """
    s = _source(src, {"beta": beta, "model": model, "time_unit": time_unit, **params})
    s["system"] = system
    times = np.asarray(s["times"])
    d = {k: np.asarray(v) for k, v in s["diag"].items()}
    dt_ = np.asarray(s["diag_times"])
    counts = _counts(s)
    intervals = metastable_intervals(times, counts)
    k_pred = int(most_unstable_mode(s["beta"], s["dim"]))
    g_max = float(growth_rate(k_pred, s["beta"], s["dim"], s["model"], s["time_unit"]))
    min_len = s["min_plateau_efolds"] / g_max if g_max > 0 else 0.0
    plateaus = [iv for iv in intervals if iv["n"] >= s["min_plateau_outputs"]
                and iv["t_end"] - iv["t_start"] >= min_len * (1 - 1e-9)]
    tv = _series(d, "tv_distance", system)
    exit_time = crossing_time(dt_, tv, s["exit_threshold"]) if tv is not None else None
    dom = _series(d, "dominant_mode", system)
    if dom is None:
        dom = _series(d, "dominant_degree", system)
    dom_exit = None
    if exit_time is not None and dom is not None:
        i = int(np.searchsorted(dt_, exit_time))
        dom_exit = int(dom[min(i, len(dt_) - 1)])
    k_fit = dom_exit or k_pred
    fit = None
    amps = _amplitudes(s, d)
    if amps is not None and k_fit < amps.shape[1]:
        fit = fit_growth_rate(dt_, amps[:, k_fit], exit_time)
        if fit is not None:
            pred = float(growth_rate(k_fit, s["beta"], s["dim"], s["model"], s["time_unit"]))
            fit.update({"k": k_fit, "predicted": pred,
                        "relative_error": fit["measured"] / pred - 1 if pred else None})
    energy = _series(d, "energy", system)
    mono = None
    if energy is not None and np.all(np.isfinite(energy)):
        mono = bool(np.all(np.diff(energy) >= -1e-12 * np.max(np.abs(energy))))
    mass = _series(d, "mass", system)
    mind = _series(d, "min_density", system)
    ebar = _series(d, "ebar", system)
    return {
        "path": s.get("path"), "domain": s["domain"],
        "beta": float(s["beta"]), "dim": int(s["dim"]), "model": s["model"],
        "time_unit": s["time_unit"],
        "k_max_predicted": k_pred,
        "dominant_mode_at_exit": dom_exit,
        "first_plateau_clusters": plateaus[0]["k"] if plateaus else None,
        "final_clusters": int(counts[-1]) if counts.size else None,
        "metastable": [{k: iv[k] for k in ("k", "t_start", "t_end")} for iv in plateaus],
        "exit_time": exit_time,
        "exit_time_predicted": _predicted_exit(s),
        "exit_threshold": s["exit_threshold"],
        "growth_rate_fit": fit,
        "mass_drift": float(np.max(np.abs(mass / mass[0] - 1))) if mass is not None else 0.0,
        "min_density": float(np.min(mind)) if mind is not None else None,
        "energy_monotone": mono,
        "final_ebar": float(ebar[-1]) if ebar is not None else None,
        "cluster_counts": counts.tolist(),
        "snapshot_times": times.tolist(),
    }


def summary_lines(res: dict[str, Any]) -> list[str]:
    fit = res.get("growth_rate_fit")
    lines = [
        f"beta = {res['beta']:g}, d = {res['dim']}, model {res['model']}: predicted k_max = "
        f"{res['k_max_predicted']}",
        f"dominant mode at exit = {res['dominant_mode_at_exit']}, exit time = "
        + (f"{res['exit_time']:.4g}" if res["exit_time"] is not None else "not reached")
        + f" (TV > {res['exit_threshold']})",
        f"clusters: first plateau {res['first_plateau_clusters']}, final "
        f"{res['final_clusters']}; plateaus "
        + (", ".join(f"{iv['k']} on [{iv['t_start']:.3g}, {iv['t_end']:.3g}]"
                     for iv in res["metastable"]) or "none"),
    ]
    if fit:
        lines.append(f"growth rate of mode {fit['k']}: measured {fit['measured']:.6g}, "
                     f"predicted {fit['predicted']:.6g} (relative error "
                     f"{fit['relative_error']:.2e})")
    mind = res["min_density"]
    lines.append(f"mass drift {res['mass_drift']:.1e}, min density "
                 f"{'n/a' if mind is None else format(mind, '.3g')}, "
                 f"energy monotone: {res['energy_monotone']}")
    return lines
