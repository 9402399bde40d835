"""Metastability of a time series: plateaus of the cluster count, crossings, growth fits."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np


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


def refine_with_events(intervals: list[dict[str, Any]], events: np.ndarray,
                       t_last: float) -> list[dict[str, Any]]:
    """Plateau ends at the exact merge times between the snapshots that bracket them.

    A plateau that ends between snapshots t_a < t_b ends at the first merge event in
    (t_a, t_b]; the next starts at the last merge in that window (several merges between
    two snapshots make a plateau that no snapshot saw). ``open`` marks the plateau that
    lasts to the last snapshot ``t_last``: its length is only a lower bound.
    """
    ev = np.sort(np.asarray(events, float))
    out = [dict(iv) for iv in intervals]
    for a, b in pairwise(out):
        inside = ev[(ev > a["t_end"]) & (ev <= b["t_start"])]
        if inside.size:
            a["t_end"], b["t_start"] = float(inside[0]), float(inside[-1])
    for iv in out:
        iv["open"] = bool(iv["t_end"] >= t_last)
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


def energy_plateaus(times: np.ndarray, ebar: np.ndarray, slope_tol: float = 0.02,
                    min_outputs: int = 3, level_tol: float = 0.01) -> dict:
    """Plateaus of Ebar(t) in log time (seed 000's staircase): maximal runs of at least
    ``min_outputs`` consecutive records (t > 0) along which the log-log slope
    |d log Ebar / d log t| stays below ``slope_tol`` (a jump or a slow drift rises faster);
    a run that ends at Ebar = 1 (one cluster, e.g. stopped by stop.single_cluster) ends on
    that top level; consecutive runs whose levels differ by at most ``level_tol`` (relative)
    are one plateau.
    Returns the plateau ``levels`` (median Ebar), their ``starts`` and ``ends``, and the
    ``jumps``: the time Ebar first crosses the midpoint between consecutive levels
    (interpolated in log t)."""
    t = np.asarray(times, float)
    e = np.asarray(ebar, float)
    ok = (t > 0) & np.isfinite(e) & (e > 0)
    t, e = t[ok], e[ok]
    flat = np.abs(np.diff(np.log(e))) <= slope_tol * np.diff(np.log(t))
    runs: list[list[int]] = []
    for i, f in enumerate(flat):   # interval i joins records i and i + 1
        if not f:
            continue
        if runs and runs[-1][-1] == i:
            runs[-1].append(i + 1)
        else:
            runs.append([i, i + 1])
    merged: list[list[int]] = []
    for r in (r for r in runs if len(r) >= min_outputs):
        # a merge (Def. 6.3) lifts Ebar by a hair (e^{-beta w^2/2} -> 1 for the pair): runs
        # within level_tol of each other are one plateau
        if merged and abs(np.median(e[r]) / np.median(e[merged[-1]]) - 1) <= level_tol:
            merged[-1] = list(range(merged[-1][0], r[-1] + 1))
        else:
            merged.append(r)
    if e.size and e[-1] >= 1.0 - 1e-9 and not (merged and merged[-1][-1] == e.size - 1):
        merged.append([e.size - 1])   # ended as one cluster: the top level Ebar = 1
    levels = [float(np.median(e[r])) for r in merged]
    jumps = []
    for k in range(len(merged) - 1):
        mid = 0.5 * (levels[k] + levels[k + 1])
        a, b = merged[k][-1], merged[k + 1][0]
        seg = e[a:b + 1] >= mid if levels[k + 1] > levels[k] else e[a:b + 1] <= mid
        idx = a + int(np.argmax(seg))
        j = max(idx - 1, a)
        if e[idx] == e[j]:
            jumps.append(float(t[idx]))
        else:
            f = (mid - e[j]) / (e[idx] - e[j])
            jumps.append(float(np.exp(np.log(t[j]) + f * (np.log(t[idx]) - np.log(t[j])))))
    return {"levels": levels, "starts": [float(t[r[0]]) for r in merged],
            "ends": [float(t[r[-1]]) for r in merged], "jumps": jumps}
