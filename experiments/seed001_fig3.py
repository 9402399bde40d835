"""Seed 001 Fig. 3: the d = 2 zoom, beta = 4 and 9, SA, n = 32, 1024 realisations: sample
token configurations at t = 2.5, 18, 30 and the cluster-count distribution there (clusters:
tokens linked by <x_i, x_j> >= 1 - 1e-4, about 0.014 rad).

Writes data/experiments/seed001_fig3/: zoom.h5 (a ``meanfield phase`` file) and
zoom_zoom.png, zoom_phase.png; prints the fractions of 1, 2, 3, 4 clusters beside notes-001
§3's reproduction (beta = 4: 2 clusters in 82 % at t = 18, 91 % at t = 30; beta = 9: 3
clusters in 66 % / 72 %, 4 in 29 % / 20 %).
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np

from meanfield.phase import PhaseConfig, plot_phase, run_phase

OUT = Path("data/experiments/seed001_fig3")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "zoom.h5"
    cfg = PhaseConfig(betas="4,9", outputs=301, samples=4).check()   # outputs every 0.1
    if not path.exists():
        res = run_phase(cfg, str(path), quiet=True)
        if res["failed"]:
            raise SystemExit("a beta failed")
    with h5py.File(path) as f:
        b, t, frac, p = f["beta"][()], f["time"][()], f["cluster_fraction"][()], f["P"][()]
    print(f"{'beta':>5} {'t':>5} {'P':>6} " + " ".join(f"{k:>6}" for k in
                                                         ("1", "2", "3", "4", ">=5")))
    for i, beta in enumerate(b):
        for tt in (2.5, 18.0, 30.0):
            j = int(np.argmin(np.abs(t - tt)))
            f = frac[i, j]
            print(f"{beta:5g} {t[j]:5.3g} {p[i, j]:6.3f} " + " ".join(
                f"{v:6.3f}" for v in (*f[1:5], f[5:].sum())))
    for f in plot_phase(path, OUT, zoom_betas=(4.0, 9.0), zoom_times=(2.5, 18.0, 30.0)):
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
