"""Metastability analysis of a run: clusters, plateaus, exit time, growth-rate fit.

Works on a run file (:class:`meanfield.io.reader.Run`, any domain: the domain module counts
clusters) or on an in-memory circle result (``solvers.circle.CircleResult`` plus the model
parameters). All thresholds are parameters with documented defaults (also in the
``[analysis]`` config section).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from meanfield.analysis.metastability import (
    crossing_time,
    fit_growth_rate,
    metastable_intervals,
    refine_with_events,
)
from meanfield.theory.errors import InputError
from meanfield.theory.growth import exit_time as predicted_exit_time
from meanfield.theory.growth import growth_rate, most_unstable_mode
from solvers.clusters import (
    DensityCluster,
    density_cluster_count,
    density_clusters,
    wasserstein1_circle,
)

#: the [analysis] defaults (config.py holds the same values with their documentation)
DEFAULTS = {"cluster_level": 2.0, "cluster_min_mass": 0.01, "exit_threshold": 0.3,
            "min_plateau_outputs": 3, "min_plateau_efolds": 2.0, "clustered_fraction": 0.5,
            "cluster_eps": 0.01}


def _source(src, params: dict) -> dict[str, Any]:
    """Normalise a Run or an in-memory CircleResult into one dict."""
    from meanfield.domains import get

    if hasattr(src, "domain_module"):  # a run file (meanfield.io.reader.Run)
        cfg = src.config
        dom = src.domain_module
        out = {"beta": cfg["model"]["beta"], "dim": cfg["model"]["dim"],
               "model": cfg["model"]["model"], "time_unit": cfg["model"]["time_unit"],
               "times": src.times, "diag_times": src.diag_times, "diag": src.diagnostics,
               "path": str(src.path), "domain": dom, "run": src, "status": src.status,
               "message": str(src.attrs.get("message", "")),
               "effective_tokens": dom.effective_tokens(cfg), **cfg["analysis"]}
        # format 1 files hold only runs of the self-attention convolution: theory applies
        out["theory"] = (src.format_version < 2
                         or src.attrs.get("linear_theory", "none") != "none")
        out["labels"] = {k: src.diagnostic_label(k) for k in ("tv_distance",
                                                                 "tv_fourier_proxy")}
    else:  # CircleResult
        out = {"times": src.times, "diag_times": src.times, "diag": src.diagnostics, "dim": 2,
               "time_unit": "raw", "model": "usa", "domain": get("circle"), "run": None,
               "density": src.density, "theory": True, **DEFAULTS}
    out.update({k: v for k, v in params.items() if v is not None})
    if out.get("beta") is None:
        raise ValueError("beta: must be given to analyse in-memory results")
    return out


def _counts(s: dict) -> np.ndarray:
    """Cluster counts per snapshot, by the domain's own counter."""
    params = {k: s[k] for k in DEFAULTS} | {"dim": s["dim"], "system": s["system"]}
    dom = s["domain"]
    if s["run"] is not None:
        return dom.cluster_series(s["run"], params, s["system"])
    return np.asarray([dom.cluster_count(p, {}, params) for p in s["density"]], dtype=int)


def _series(d: dict[str, np.ndarray], key: str, system: int) -> np.ndarray | None:
    """One diagnostic over diag_time (the given system of a particle batch)."""
    v = d.get(key)
    if v is None:
        return None
    v = np.asarray(v)
    if key == "spectrum":
        return v[:, system] if v.ndim == 3 else v
    return v[:, system] if v.ndim == 2 else v


def _exit_criterion(s: dict) -> tuple[str | None, str]:
    """Which series measures the distance to uniform, and how the file describes it."""
    labels = s.get("labels", {})
    fallback = {"tv_distance": "total variation (1/2) int |p - mean p| to uniform",
                "tv_fourier_proxy": "(2/pi) max_k |c_k| (a Fourier proxy of the TV distance)"}
    for key, text in fallback.items():
        if key in s["diag"]:
            return key, labels.get(key) or text
    return None, "no distance to uniform recorded"


def _predicted_exit(s: dict) -> float | None:
    """Linear-theory mean exit time (meanfield.theory.growth.exit_time) for the TV threshold
    tau: on the circle TV = sqrt(2) r / pi, so delta = pi tau / sqrt(2)."""
    n = s.get("effective_tokens")
    if not n or s["dim"] != 2 or not s["theory"]:
        return None
    delta = math.pi * s["exit_threshold"] / math.sqrt(2.0)
    return predicted_exit_time(n, s["beta"], s["dim"], s["model"], delta, s["time_unit"])


def _attention_summary(d: dict, t: np.ndarray, system: int, s: dict) -> dict | None:
    """Seed 004's two phases from the recorded series: the W_2 minimum to Pi_# rho_0 and its
    time, when mass concentrates on E (a_E >= 0.9), when it leaves E again (departure: a_E
    back below 0.5 after that), when it aligns with F (a_F >= 0.9); log beta for reference."""
    w2 = _series(d, "w2_pushforward", system)
    if w2 is None:
        return None
    a_e, a_f = _series(d, "align_E", system), _series(d, "align_F", system)

    def first(mask: np.ndarray, after: float = -math.inf) -> float | None:
        idx = np.flatnonzero(mask & (t > after))
        return float(t[idx[0]]) if idx.size else None

    ok = np.isfinite(w2)
    i = int(np.argmin(np.where(ok, w2, np.inf))) if ok.any() else None
    on_e = first(a_e >= 0.9)
    beta = float(s["beta"])
    return {"w2_min": float(w2[i]) if i is not None else None,
            "w2_min_time": float(t[i]) if i is not None else None,
            "w2_final": float(w2[-1]) if np.isfinite(w2[-1]) else None,
            "concentrated_on_E": on_e,
            "departure_from_E": first(a_e < 0.5, on_e) if on_e is not None else None,
            "aligned_with_F": first(a_f >= 0.9),
            "log_beta": math.log(beta) if 0 < beta < math.inf else None}


def _token_order_summary(s: dict) -> dict | None:
    """Renyi analysis of token-ordered runs (``Domain.token_trajectory``): the centres of the
    initial tokens for delta (``renyi_delta``, 0 = 4 beta^{-1/2}), captured fractions within
    ``capture_radius`` and centre drift at every snapshot, and (particles) the final
    configuration seed 002 Table 1 predicts from V against the one reached."""
    from meanfield.analysis.renyi import token_order_series

    run = s.get("run")
    if run is None:
        return None
    traj = s["domain"].token_trajectory(run, s.get("system", 0))
    if traj is None or traj.shape[1] < 1:
        return None
    beta = float(s["beta"])
    delta = float(s.get("renyi_delta") or 0.0) or (
        min(4.0 / math.sqrt(beta), 3.0) if 0 < beta < math.inf else 0.5)
    out = token_order_series(traj, delta, float(s.get("capture_radius", 0.05)))
    v = run.static("V")
    if v is not None and np.shape(v) == (2, 2):
        from meanfield.analysis.configuration import classify_configuration
        from meanfield.theory.causal import final_configuration

        pred = final_configuration(v)
        x = np.stack([np.cos(traj[-1]), np.sin(traj[-1])], axis=1)
        out["predicted_final"] = pred["type"]
        # an eigenspace L that is all of R^2 says nothing about alignment
        L = pred["L"] if pred["L"] is not None and pred["L"].shape[1] < 2 else None
        reached = classify_configuration(x, L)["type"]
        out["reached_final"] = "not collapsed" if reached == "unstructured" else reached
    return out


def _staircase_summary(s: dict, system: int) -> dict | None:
    """Ebar plateaus in log time (``energy_plateaus``) for runs with an Ebar record on
    log-spaced outputs, with the greedy merge predictor's levels (seed 000 §2.7) for token
    runs on S^1 with at most 64 tokens."""
    from meanfield.analysis.metastability import energy_plateaus

    run = s.get("run")
    ebar = _series({k: np.asarray(v) for k, v in s["diag"].items()}, "ebar", system)
    if run is None or ebar is None or run.config["time"]["schedule"] != "log":
        return None
    t = np.asarray(s["diag_times"], float)
    out = energy_plateaus(t, ebar)
    out["predicted_levels"] = None
    try:
        x, m = s["domain"].points(run, 0, system)
    except InputError:
        return out
    if x.shape[1] == 2 and x.shape[0] <= 64:
        from meanfield.theory.metastability import greedy_staircase

        out["predicted_levels"] = greedy_staircase(np.arctan2(x[:, 1], x[:, 0]),
                                                   m)["levels"].tolist()
    return out


def _one_cluster_time(counts: np.ndarray, intervals: list[dict], merges: list[dict]
                      ) -> float | None:
    """When one cluster is left for good: the last atom merge, else the first snapshot of the
    final run of count 1 (None if the run ends with more than one cluster)."""
    if not counts.size or int(counts[-1]) != 1:
        return None
    if merges:
        return merges[-1]["t"]
    return intervals[-1]["t_start"] if intervals else None


def _merges(s: dict) -> list[dict[str, Any]]:
    """Merge events of atoms (circle runs with atoms): time, mass, the two masses, and the
    two-cluster law's prediction from the pair's gap at the previous event."""
    run = s.get("run")
    ev = run.events if run is not None else {}
    if not ev:
        return []
    out = []
    n = ev["event_time"].size
    oracles = ev.get("event_oracle", np.full(n, np.nan))
    for t, kind, mass, parts, oracle in zip(ev["event_time"], ev["event_kind"],
                                            ev["event_mass"], ev["event_parts"], oracles,
                                            strict=True):
        if int(kind) == 1:
            out.append({"t": float(t), "mass": float(mass), "parts": [float(x) for x in parts],
                        "oracle": float(oracle) if np.isfinite(oracle) else None})
    return out


def analyze(src, *, beta: float | None = None, model: str | None = None,
            time_unit: str | None = None, system: int = 0, **params: Any) -> dict[str, Any]:
    """Analyse a run (any domain) or an in-memory circle result; returns a JSON-ready dict.

    ``params`` override the ``[analysis]`` settings: cluster_level, cluster_min_mass,
    clustered_fraction, cluster_eps, exit_threshold, min_plateau_outputs, min_plateau_efolds.
    Particle runs with several systems are analysed for ``system`` (default 0). Without a
    linear theory (e.g. a drift other than the self-attention convolution, or general
    Q, K, V) the predictions are None.
    """
    s = _source(src, {"beta": beta, "model": model, "time_unit": time_unit, **params})
    s["system"] = system
    times = np.asarray(s["times"])
    d = {k: np.asarray(v) for k, v in s["diag"].items()}
    dt_ = np.asarray(s["diag_times"])
    counts = _counts(s)
    merges = _merges(s)
    intervals = refine_with_events(metastable_intervals(times, counts),
                                   np.asarray([m["t"] for m in merges]),
                                   float(times[-1]) if times.size else 0.0)
    theory = s["theory"]
    k_pred = int(most_unstable_mode(s["beta"], s["dim"])) if theory else None
    g_max = float(growth_rate(k_pred, s["beta"], s["dim"], s["model"], s["time_unit"])) \
        if theory else 0.0
    min_len = s["min_plateau_efolds"] / g_max if g_max > 0 else 0.0
    plateaus = [iv for iv in intervals if iv["n"] >= s["min_plateau_outputs"]
                and iv["t_end"] - iv["t_start"] >= min_len * (1 - 1e-9)]
    key, criterion = _exit_criterion(s)
    tv = _series(d, key, system) if key is not None else None
    exit_time = crossing_time(dt_, tv, s["exit_threshold"]) if tv is not None else None
    dom = _series(d, "dominant_mode", system)
    dom_exit = None
    if exit_time is not None and dom is not None:
        # the last record at or before the exit: after it the grid may have handed off
        # to atoms, whose spectrum is flat and says nothing about the linear phase
        i = int(np.searchsorted(dt_, exit_time, side="right")) - 1
        dom_exit = int(dom[min(max(i, 0), len(dt_) - 1)])
    fit = None
    amps = _series(d, "spectrum", system)
    k_fit = dom_exit or k_pred
    if theory and amps is not None and k_fit is not None and k_fit < amps.shape[1]:
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
        "path": s.get("path"), "status": s.get("status", "complete"),
        "message": s.get("message", ""), "domain": s["domain"].name,
        "beta": float(s["beta"]), "dim": int(s["dim"]), "model": s["model"],
        "time_unit": s["time_unit"],
        "k_max_predicted": k_pred,
        "dominant_mode_at_exit": dom_exit,
        "first_plateau_clusters": plateaus[0]["k"] if plateaus else None,
        "final_clusters": int(counts[-1]) if counts.size else None,
        "metastable": [{"k": iv["k"], "t_start": iv["t_start"], "t_end": iv["t_end"],
                        "length": iv["t_end"] - iv["t_start"], "open": iv["open"]}
                       for iv in plateaus],
        # a plateau that lasts to the end of the run has no length, only a lower bound
        "first_plateau_length": (plateaus[0]["t_end"] - plateaus[0]["t_start"]
                                 if plateaus and not plateaus[0]["open"] else None),
        "one_cluster_time": _one_cluster_time(counts, intervals, merges),
        "merges": merges,
        "attention": _attention_summary(d, dt_, system, s),
        "token_order": _token_order_summary(s),
        "staircase": _staircase_summary(s, system),
        "exit_time": exit_time,
        "exit_time_predicted": _predicted_exit(s),
        "exit_threshold": s["exit_threshold"],
        "exit_criterion": criterion,
        "growth_rate_fit": fit,
        "mass_drift": float(np.max(np.abs(mass / mass[0] - 1))) if mass is not None else 0.0,
        "min_density": float(np.min(mind)) if mind is not None else None,
        "energy_monotone": mono,
        "final_ebar": float(ebar[-1]) if ebar is not None and np.isfinite(ebar[-1]) else None,
        "cluster_counts": counts.tolist(),
        "snapshot_times": times.tolist(),
    }


def summary_lines(res: dict[str, Any]) -> list[str]:
    fit = res.get("growth_rate_fit")
    kp = res["k_max_predicted"]
    status = res.get("status", "complete")
    lines = [f"status: {status}" + (f" -- {res['message']}" if res.get("message") else "")]
    if status in ("running", "interrupted"):
        lines[0] += " (unfinished: the analysis covers the part computed so far)"
    lines += [
        f"beta = {res['beta']:g}, d = {res['dim']}, model {res['model']}: predicted k_max = "
        f"{kp if kp is not None else 'n/a (no linear theory for this velocity)'}",
        f"dominant mode at exit = {res['dominant_mode_at_exit']}, exit time = "
        + (f"{res['exit_time']:.4g}" if res["exit_time"] is not None else "not reached")
        + f" ({res['exit_criterion']} > {res['exit_threshold']})",
        f"clusters: first plateau {res['first_plateau_clusters']}, final "
        f"{res['final_clusters']}; plateaus "
        + (", ".join(f"{iv['k']} on [{iv['t_start']:.4g}, {iv['t_end']:.4g}"
                     + ("...) (lasts to the end of the run)" if iv.get("open") else "]")
                     for iv in res["metastable"]) or "none"),
    ]
    if fit:
        lines.append(f"growth rate of mode {fit['k']}: measured {fit['measured']:.6g}, "
                     f"predicted {fit['predicted']:.6g} (relative error "
                     f"{fit['relative_error']:.2e})")
    att = res.get("attention")
    if att:
        def fmt(v):
            return "never" if v is None else f"{v:.4g}"
        lines.append(f"seed 004: W_2 to Pi_# rho_0 min {fmt(att['w2_min'])} at t = "
                     f"{fmt(att['w2_min_time'])}, final {fmt(att['w2_final'])}; on E (a_E >= "
                     f"0.9) at {fmt(att['concentrated_on_E'])}, leaves E at "
                     f"{fmt(att['departure_from_E'])}, aligned with F at "
                     f"{fmt(att['aligned_with_F'])}; log beta = {fmt(att['log_beta'])}")
    tok = res.get("token_order")
    if tok:
        lines.append(
            f"token order (delta = {tok['delta']:.3g}, capture radius {tok['radius']:.3g}): "
            f"{len(tok['renyi_centres'])} Renyi / {len(tok['strong_centres'])} strong centres;"
            f" captured at the end {tok['renyi_captured'][-1]:.3f} / "
            f"{tok['strong_captured'][-1]:.3f}; centre drift max {max(tok['renyi_drift']):.3g}"
            f" / {max(tok['strong_drift']):.3g} rad"
            + (f"; final configuration {tok['reached_final']} (Table 1 predicts "
               f"{tok['predicted_final']})" if "predicted_final" in tok else ""))
    st = res.get("staircase")
    if st and st["levels"]:
        pred = st.get("predicted_levels")
        lines.append("Ebar plateaus " + ", ".join(f"{v:.4g}" for v in st["levels"])
                     + " with jumps at t = " + (", ".join(f"{v:.4g}" for v in st["jumps"])
                                                or "-")
                     + (" (greedy predictor " + ", ".join(f"{v:.4g}" for v in pred) + ")"
                        if pred else ""))
    merges = res.get("merges") or []
    if merges:
        shown = ", ".join(f"{m['t']:.4g}" + (f" (law {m['oracle']:.4g})" if m["oracle"] else "")
                          for m in merges[:12])
        lines.append(f"atom merges: {len(merges)} at t = {shown}"
                     + (" ..." if len(merges) > 12 else ""))
    mind = res["min_density"]
    lines.append(f"mass drift {res['mass_drift']:.1e}, min density "
                 f"{'n/a' if mind is None else format(mind, '.3g')}, "
                 f"energy monotone: {res['energy_monotone']}")
    return lines


__all__ = ["DensityCluster", "analyze", "crossing_time", "density_cluster_count",
           "density_clusters", "fit_growth_rate", "metastable_intervals", "summary_lines",
           "wasserstein1_circle"]
