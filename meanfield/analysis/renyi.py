"""Renyi and strong Renyi centres of token-ordered data on S^1 (seed 002, notes-002 §1.8).

Token order is the label: the tokens are never sorted away. Greedy in token order:

* Renyi centres: token k is a centre iff its arc distance to every previously selected
  centre exceeds delta (random sequential adsorption); token 1 always is;
* strong Renyi centres: token k is one iff its arc distance to every earlier token exceeds
  delta (a subset of the Renyi centres).

Both in O(n log n): the earlier centres (tokens) are kept sorted by angle and only the two
circular neighbours of token k are checked.
"""

from __future__ import annotations

import bisect
import math

import numpy as np
from numpy.typing import ArrayLike

from meanfield.theory.errors import InputError

TWO_PI = 2.0 * math.pi


def _near(sorted_angles: list[float], a: float, delta: float) -> bool:
    """Whether some angle of the sorted list lies within arc distance delta of a."""
    if not sorted_angles:
        return False
    i = bisect.bisect_left(sorted_angles, a)
    for j in (i - 1, i % len(sorted_angles)):
        d = abs(sorted_angles[j] - a)
        if min(d, TWO_PI - d) <= delta:
            return True
    return False


def renyi_centres(theta: ArrayLike, delta: float, strong: bool = False) -> np.ndarray:
    """Indices (in token order) of the Renyi (or strong Renyi) centres of the angles."""
    th = np.mod(np.asarray(theta, float), TWO_PI)
    if th.ndim != 1 or not np.all(np.isfinite(th)):
        raise InputError("theta", "must be a 1-D array of finite angles in token order")
    if not 0 < float(delta) < math.pi:
        raise InputError("delta", "must be in (0, pi)", delta)
    seen: list[float] = []
    out = []
    for k, a in enumerate(th.tolist()):
        ok = not _near(seen, a, delta)
        if ok:
            out.append(k)
        if ok or strong:  # strong: every earlier token blocks; Renyi: only the centres
            bisect.insort(seen, a)
    return np.asarray(out, dtype=int)


def captured_fraction(theta: ArrayLike, centres: ArrayLike, radius: float) -> float:
    """Fraction of tokens within arc distance ``radius`` of the current positions of the
    centre tokens (seed 002 Fig. 3's "consumed" tokens, with an explicit radius)."""
    th = np.mod(np.asarray(theta, float), TWO_PI)
    c = th[np.asarray(centres, dtype=int)]
    d = np.abs(th[:, None] - c[None, :])
    d = np.minimum(d, TWO_PI - d)
    return float(np.mean(d.min(axis=1) <= radius)) if c.size else 0.0


def centre_drift(theta0: ArrayLike, theta: ArrayLike, centres: ArrayLike) -> float:
    """Largest arc distance the centre tokens moved from their initial angles (0 without
    centres): how frozen the metastable centres are (seed 002 Lemma 5.1)."""
    c = np.asarray(centres, dtype=int)
    if not c.size:
        return 0.0
    d = np.abs(np.mod(np.asarray(theta, float)[c] - np.asarray(theta0, float)[c] + math.pi,
                      TWO_PI) - math.pi)
    return float(d.max())


def token_order_series(trajectory: ArrayLike, delta: float, radius: float) -> dict:
    """Renyi analysis of a token-ordered trajectory (T, n) of angles (snapshots x tokens in
    label order): the Renyi and strong Renyi centres of the initial tokens, and at every
    snapshot the fraction of tokens within ``radius`` of each family's current positions and
    the largest drift of its centres from their initial angles."""
    x = np.asarray(trajectory, float)
    if x.ndim != 2:
        raise InputError("trajectory", "must be (snapshots, tokens) angles", x.shape)
    out: dict = {"delta": float(delta), "radius": float(radius)}
    for name, strong in (("renyi", False), ("strong", True)):
        c = renyi_centres(x[0], delta, strong=strong)
        out[f"{name}_centres"] = c.tolist()
        out[f"{name}_captured"] = [captured_fraction(row, c, radius) for row in x]
        out[f"{name}_drift"] = [centre_drift(x[0], row, c) for row in x]
    return out
