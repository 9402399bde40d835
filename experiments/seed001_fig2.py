"""Seed 001 Fig. 2: phase diagrams of P(<x_1, x_2> >= 1 - delta) over (t, beta), SA,
Q = K = V = I, n = 32, delta = 1e-3, beta in 0.1..9 (step 0.1), t in [0, 30] (200 outputs),
the papers' Euler step (unprojected, dt = 0.1), with Gamma_{inf, delta} from the theory.

Writes data/experiments/seed001_fig2/: d=<d>.h5 (``meanfield phase`` files, resumable per
beta) and fig2.png (one panel per d). Realisations per d (the paper: 1024 for every d) are
chosen so that the whole figure takes ~10 min on 2 cores: d = 2: 1024, d = 8: 256,
d = 32: 128, d = 128: 32 (--full: 1024 for every d and d = 512, 1024 as well; prints the
cost). Prints per d the wall time and, per beta, where P first reaches 1/2 against t*.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from meanfield.phase import PhaseConfig, analyze_phase, phase_figure, run_phase

OUT = Path("data/experiments/seed001_fig2")
DEFAULT = ((2, 1024), (8, 256), (32, 128), (128, 32))
FULL = ((2, 1024), (8, 1024), (32, 1024), (128, 1024), (512, 1024), (1024, 1024))


def main(argv: list[str]) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    plan = FULL if "--full" in argv else DEFAULT
    paths = []
    for d, r in plan:
        cfg = PhaseConfig(dim=d, realisations=r).check()
        path = OUT / f"d={d}.h5"
        start = time.perf_counter()
        if not path.exists():
            res = run_phase(cfg, str(path), quiet=True)
            if res["failed"]:
                raise SystemExit(f"d = {d}: {len(res['failed'])} betas failed")
        wall = time.perf_counter() - start
        a = analyze_phase(path)
        rows = {round(row["beta"], 3): row for row in a["rows"]}
        picks = " ".join(f"beta={b}: {rows[b]['t_half'] or float('nan'):.3g}/"
                         f"{rows[b]['gamma_time']:.3g}" for b in (1.0, 4.0, 6.0))
        print(f"d = {d:5d}: {r} realisations x {len(a['rows'])} betas in {wall:7.1f} s "
              f"(stored {a['wall_seconds']:.1f} s); t(P >= 1/2) / Gamma t*: {picks}")
        paths.append(str(path))
    phase_figure(paths, OUT / "fig2.png", "seed 001 Fig. 2: SA, n = 32, delta = 1e-3")
    print(f"wrote {OUT}/fig2.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
