"""Seed 000 Fig. 4 (``seed000_fig4.toml``): the energy staircase for beta in {500, 1000, 1500,
2000, 3000, 4000} from the Fig. 7 configuration theta0 = 0.5 (0, 0.5, 2, 4, 7) log(2000)/
sqrt(2000), on the normalised-gradient clock (§6.2) with Def. 6.3 merges at 1e-3 rad.

Writes data/experiments/seed000_fig4/: beta=<b>.h5, fig4.png (Ebar against rescaled time, all
betas) and table.csv: per beta the plateau levels and jump times found in Ebar (analysis
``energy_plateaus``), the greedy predictor's levels (0.20, 0.28, 0.44, 0.52, 1: the Fig. 7
configuration is not well prepared, Def. 6.1 fails at i = 4), Thm 6.4's well-prepared levels
(0.20, 0.28, 0.44, 0.68, 1) for contrast, and the cost per decade of physical time.
Reference (notes-000 §3/V9, the authors' code re-run): jumps near 0.0015-0.002, 0.016-0.017,
0.039-0.049 and 0.088-0.107.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path

import numpy as np

import meanfield
from meanfield.driver import run_cli
from meanfield.io.atomic import atomic_path
from meanfield.theory.metastability import staircase_levels, well_prepared

HERE = Path(__file__).resolve().parent
OUT = Path("data/experiments/seed000_fig4")
BETAS = (500, 1000, 1500, 2000, 3000, 4000)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    theta0 = 0.5 * np.array([0, 0.5, 2, 4, 7]) * math.log(2000) / math.sqrt(2000)
    print(f"Fig. 7 configuration well prepared (Def. 6.1, beta = 2000): "
          f"{well_prepared(theta0, 2000.0)}; Thm 6.4 levels for n = 5: "
          + ", ".join(f"{v:.2f}" for v in staircase_levels(5)))
    rows, curves = [], []
    print(f"{'beta':>5} {'levels':>32} {'jumps':>36} {'s/decade':>9}")
    for b in BETAS:
        path = OUT / f"beta={b}.h5"
        start = time.perf_counter()
        code = run_cli(str(HERE / "seed000_fig4.toml"), [f"model.beta={b}"], str(path),
                       resume=None, overwrite=True, quiet=True)
        wall = time.perf_counter() - start     # the whole run: integration, analysis, file
        if code != 0:
            raise SystemExit(f"beta = {b} failed (exit {code})")
        with meanfield.open(path) as run:
            res = run.analyze()
            t = np.asarray(run.diag_times)
            e = np.asarray(run.diagnostics["ebar"])
            lt = np.asarray(run.diagnostics["log10_physical_time"])
        st = res["staircase"]
        pos = lt[lt > 0]
        decades = float(pos[-1] - pos[0])      # decades of physical time covered
        rows.append({"beta": b, "levels": " ".join(f"{v:.4f}" for v in st["levels"]),
                     "jumps": " ".join(f"{v:.4g}" for v in st["jumps"]),
                     "predicted_levels": " ".join(f"{v:.4f}" for v in st["predicted_levels"]),
                     "physical_decades": decades, "seconds_per_decade": wall / decades})
        curves.append((b, t, e))
        print(f"{b:5d} {rows[-1]['levels']:>32} {rows[-1]['jumps']:>36} "
              f"{wall / decades:9.2g}")
    print("greedy predictor: " + rows[-1]["predicted_levels"])
    with atomic_path(OUT / "table.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _figure(curves)
    print(f"wrote {OUT}/table.csv and {OUT}/fig4.png")
    return 0


def _figure(curves) -> None:
    from meanfield.figures import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for b, t, e in curves:
        ok = t > 0
        ax.plot(t[ok], e[ok], lw=1.2, label=rf"$\beta$ = {b}")
    ax.set_xscale("log")
    ax.set_xlabel("rescaled time (normalised-gradient clock, §6.2)")
    ax.set_ylabel(r"$\bar E$")
    ax.set_title("seed 000 Fig. 4: energy staircase from the Fig. 7 configuration",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, OUT / "fig4.png")


if __name__ == "__main__":
    sys.exit(main())
