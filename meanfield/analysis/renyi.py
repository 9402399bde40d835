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
