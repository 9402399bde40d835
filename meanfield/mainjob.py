"""``make run``: the headline sweep (beta = 1..12 x 3 seeds on the circle, in parallel).

Writes data/sweep/ (one HDF5 file per run, sweep.json, summary.csv, summary.h5, sweep.png)
and prints beta, predicted k_max and the observed cluster counts. Re-running skips the runs
that are already complete.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from meanfield.plots import plot_sweep
from meanfield.sweep import SUMMARY_CSV, observed_table, run_sweep

CONFIG = Path(__file__).resolve().parent.parent / "experiments" / "sweep_beta.toml"


def main(out_dir: str = "data/sweep") -> int:
    start = time.monotonic()
    runs, params = run_sweep(str(CONFIG), ["model.beta=1:12.5:0.5", "initial.seed=0:3"],
                             out_dir)
    print("\n".join(observed_table(params, runs)))
    failed = [r for r in runs.values() if r["status"] != "complete"]
    for r in failed:
        print(f"failed: {r['name']}: {r.get('message')}")
    fig = plot_sweep(out_dir)
    agree = sum(1 for r in runs.values() if (r.get("summary") or {}).get(
        "first_plateau_clusters") == (r.get("summary") or {}).get("k_max_predicted"))
    print(f"{len(runs)} runs in {time.monotonic() - start:.0f} s; first plateau = predicted "
          f"k_max in {agree}/{len(runs)}; table {Path(out_dir) / SUMMARY_CSV}, figure {fig[0]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
