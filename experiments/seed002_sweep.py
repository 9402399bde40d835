"""Seed 002: metastable cluster counts of causal attention on S^1 against sqrt(beta).

beta in {16, 32, 64, 128, 256}, n = 300 i.i.d. uniform tokens, 2 draws each (adaptive
Dormand-Prince; the notes suggest n = 1000, which costs ~10x more here), clusters counted
with the gap rule (0.05 rad) on the plateau t in [100, 150]. Writes
data/experiments/seed002_sweep/ (runs, sweep.json, counts.png, counts.csv) and prints the
counts beside the three predictions of meanfield.theory.causal.cluster_scales: Renyi parking
0.7476 (2 pi/delta) = 1.17 sqrt(beta), strong Renyi pi/delta = 0.79 sqrt(beta) (delta = 4
beta^{-1/2}), and the full-attention k_max ~ sqrt(2 beta).
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np

import meanfield
from meanfield.io.atomic import atomic_path
from meanfield.sweep import require_complete, run_sweep
from meanfield.theory.causal import cluster_scales
from solvers.clusters import detect_clusters

HERE = Path(__file__).resolve().parent
OUT = Path("data/experiments/seed002_sweep")
BETAS = (16, 32, 64, 128, 256)
SETS = ["particles.count=300", "particles.batch=2", "particles.integrator=adaptive",
        "particles.rtol=1e-6", "particles.atol=1e-8", "time.t_end=150", "time.n_outputs=31"]


def main() -> int:
    runs, _ = run_sweep(str(HERE / "seed002_fig2.toml"),
                        [f"model.beta={','.join(map(str, BETAS))}"], str(OUT), jobs=2,
                        sets=SETS)
    require_complete(runs)
    rows = []
    for b in BETAS:
        with meanfield.open(OUT / f"beta={b}.h5") as run:
            t, x = np.asarray(run.times), np.asarray(run.density[()])
        plateau = np.flatnonzero(t >= 100.0)
        counts = [float(np.median([detect_clusters(np.mod(x[i, d], 2 * math.pi), method="gap",
                                             gap=0.05, representation="angles")[0].masses.size
                             for i in plateau])) for d in range(x.shape[1])]
        rows.append({"beta": b, "counts": counts, **cluster_scales(float(b))})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    sb = np.sqrt(np.array(BETAS, float))
    for r in rows:
        ax.plot([math.sqrt(r["beta"])] * len(r["counts"]), r["counts"], "ko", ms=4)
    for key, c, name in (("renyi", "C0", "Renyi, c = 4"), ("strong_renyi", "C3", "strong Renyi"),
                         ("sqrt_2beta", "C2", "sqrt(2 beta) (k_max)")):
        ax.plot(sb, [r[key] for r in rows], "-", color=c, label=name)
    ax.set_xlabel(r"$\sqrt{\beta}$")
    ax.set_ylabel("clusters on the plateau t in [100, 150]")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(OUT / "counts.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    with atomic_path(OUT / "counts.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["beta", "counts", "renyi", "strong_renyi", "k_max", "sqrt_2beta"])
        for r in rows:
            w.writerow([r["beta"], " ".join(f"{c:g}" for c in r["counts"]), r["renyi"],
                        r["strong_renyi"], r["k_max"], r["sqrt_2beta"]])
    for r in rows:
        print(f"beta = {r['beta']:4d}: clusters {[f'{c:g}' for c in r['counts']]}, per "
              f"sqrt(beta) "
              f"{np.mean(r['counts']) / math.sqrt(r['beta']):.2f}; Renyi {r['renyi']:.1f}, "
              f"strong {r['strong_renyi']:.1f}, k_max {r['k_max']:.0f}")
    print(f"figure {OUT / 'counts.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
