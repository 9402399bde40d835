"""The type of a final token configuration on S^{d-1}, for seed 002 Table 1 checks.

``classify_configuration(x, L)`` names what the tokens x (n, d) form, in the vocabulary of
``meanfield.theory.causal.FINAL_TYPES``: one point (all tokens within ``tol`` of their mean
direction), two antipodal points, or a cloud (not collapsed) that lies around the subspace L
(mean |P_L x|^2 >= ``align``) — one cloud, or two clouds around +-xi when L = span xi.
"""

from __future__ import annotations

import numpy as np


def classify_configuration(x: np.ndarray, L: np.ndarray | None, tol: float = 1e-3,
                           align: float = 0.9) -> dict:
    """{type, spread, alignment}: spread = max distance to the nearest of the one or two
    antipodal centres, alignment = mean |P_L x|^2 (None without L)."""
    x = np.asarray(x, float)
    m = x.mean(axis=0)
    spread1 = float(np.linalg.norm(x - m / np.linalg.norm(m), axis=1).max()) \
        if np.linalg.norm(m) > 1e-12 else np.inf
    # two antipodal centres: the principal axis of the second moment
    _, vecs = np.linalg.eigh(x.T @ x)
    xi = vecs[:, -1]
    sgn = np.sign(x @ xi)
    spread2 = float(np.linalg.norm(x - sgn[:, None] * xi[None, :], axis=1).max())
    a = None if L is None else float(np.mean(np.sum((x @ L) ** 2, axis=1)))
    if spread1 <= tol:
        kind = "one point"
    elif spread2 <= tol and np.any(sgn > 0) and np.any(sgn < 0):
        kind = "two points"
    elif a is not None and a >= align:
        two = L.shape[1] == 1 and np.any(x @ L[:, 0] > 0) and np.any(x @ L[:, 0] < 0)
        kind = "two clouds" if two else "cloud"
    else:
        kind = "unstructured"
    return {"type": kind, "spread": min(spread1, spread2), "alignment": a}
