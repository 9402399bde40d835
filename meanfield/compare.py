"""``meanfield compare``: the Wasserstein distance between two runs at their common times.

Each run's snapshot is a measure given as weighted points on S^{d-1} (its domain's
``points``: a circle run's cells and atoms, a particle run's tokens); W_2 uses the chordal
ground cost |x - y|^2 of seed 004 and is computed exactly by discrete optimal transport
(POT). Times are matched to a relative 1e-9; ``every`` thins them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meanfield.io.reader import open_run
from meanfield.theory.errors import InputError
from solvers.attention_measures import w2_chordal


def common_times(ta: np.ndarray, tb: np.ndarray, rtol: float = 1e-9
                 ) -> list[tuple[int, int, float]]:
    """(index in a, index in b, t) for the output times the two runs share."""
    out = []
    for i, t in enumerate(ta):
        j = int(np.argmin(np.abs(tb - t)))
        if abs(tb[j] - t) <= rtol * max(1.0, abs(t)):
            out.append((i, j, float(t)))
    return out


def compare(path_a: str, path_b: str, *, every: int = 1, system_a: int = 0,
            system_b: int = 0) -> dict[str, Any]:
    """W_2 (chordal) between the runs at every ``every``-th common output time."""
    if every < 1:
        raise InputError("--every", "must be an integer >= 1", every)
    with open_run(path_a) as a, open_run(path_b) as b:
        da, db = a.config["model"]["dim"], b.config["model"]["dim"]
        if da != db:
            raise InputError("RUN_B", f"lives on S^{db - 1}, RUN_A on S^{da - 1}", path_b)
        pairs = common_times(np.asarray(a.times), np.asarray(b.times))[::every]
        if not pairs:
            raise InputError("RUN_B", "shares no output time with RUN_A", path_b)
        rows = []
        for i, j, t in pairs:
            xa, wa = a.domain_module.points(a, i, system_a)
            xb, wb = b.domain_module.points(b, j, system_b)
            keep_a, keep_b = wa > 0, wb > 0
            rows.append({"t": t, "w2": w2_chordal(xa[keep_a], wa[keep_a], xb[keep_b],
                                                  wb[keep_b])})
        return {"run_a": str(path_a), "run_b": str(path_b), "cost": "chordal |x - y|^2",
                "times": [r["t"] for r in rows], "w2": [r["w2"] for r in rows]}
