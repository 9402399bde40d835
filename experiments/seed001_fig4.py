"""Seed 001 Fig. 4: phase diagrams at d = 128, n = 32 for the four random-matrix ensembles
(``meanfield.theory.attention.phase_ensemble``): Ginibre Q, K, V; GOE Q^T K with Wishart V;
Ginibre Q, K with V = Q^T K; GOE Q^T K with V = Q^T K; one draw per realisation, SA,
delta = 1e-3, beta in 0.3..9 (step 0.3), t in [0, 30] (100 outputs), dt = 0.1.

Writes data/experiments/seed001_fig4/<ensemble>.h5 and fig4.png (four panels, the identity
model's Gamma_{inf, delta} drawn for reference). 32 realisations per beta keep the figure at a
few minutes on 2 cores (general matrices cost O(n d^2) per step for B x_j and V x_j); prints
the cost.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from meanfield.phase import PhaseConfig, analyze_phase, phase_figure, run_phase

OUT = Path("data/experiments/seed001_fig4")
ENSEMBLES = ("ginibre", "wigner-psd", "ginibre-gradient", "wigner-gradient")


def main(argv: list[str]) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    r = 16 if "--quick" in argv else 32
    paths = []
    for ens in ENSEMBLES:
        cfg = PhaseConfig(dim=128, ensemble=ens, realisations=r, betas="0.3:9.05:0.3",
                          outputs=100, samples=0).check()
        path = OUT / f"{ens}.h5"
        start = time.perf_counter()
        if not path.exists():
            res = run_phase(cfg, str(path), quiet=True)
            if res["failed"]:
                raise SystemExit(f"{ens}: a beta failed: {res['failed'][0]['message']}")
        a = analyze_phase(path)
        band = sum(row["band_fraction"] for row in a["rows"]) / len(a["rows"])
        print(f"{ens:17s}: {r} realisations x {len(a['rows'])} betas in "
              f"{time.perf_counter() - start:6.1f} s; mean fraction of outputs with "
              f"0.05 < P < 0.95: {band:.3f}")
        paths.append(str(path))
    phase_figure(paths, OUT / "fig4.png", "seed 001 Fig. 4: d = 128, n = 32, random Q, K, V")
    print(f"wrote {OUT}/fig4.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
