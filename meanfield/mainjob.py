"""``make run``: the headline sweep (beta = 1..12 x 3 seeds on the circle, in parallel, from
uniform to one cluster; the runs are advanced in ensembles, one per core, see
``meanfield.ensemble``), then a cross-check of its plateaus against particles.

Writes data/sweep/ (one HDF5 file per run, sweep.json, summary.csv, summary.h5, sweep.png,
crosscheck.json) and prints beta, predicted k_max, the observed cluster counts, the times to
one cluster, and for beta in CROSSCHECK_BETAS (seed 0) the plateau lengths and merge times
beside a particle run from the same initial density (meanfield.crosscheck). Re-running skips
the runs that are already complete.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from meanfield.plots import plot_sweep
from meanfield.sweep import SUMMARY_CSV, observed_table, run_sweep

CONFIG = Path(__file__).resolve().parent.parent / "experiments" / "sweep_beta.toml"
#: (beta, tokens) of the particle cross-check (seed 0 of the sweep)
CROSSCHECK = ((3.0, 2048), (5.0, 2048), (7.0, 2048))


def main(out_dir: str = "data/sweep") -> int:
    start = time.monotonic()
    runs, params = run_sweep(str(CONFIG), ["model.beta=1:12.5:0.5", "initial.seed=0:3"],
                             out_dir)
    print("\n".join(observed_table(params, runs)))
    failed = [r for r in runs.values() if r["status"] != "complete"]
    for r in failed:
        print(f"failed: {r['name']}: {r.get('message')}")
    fig = plot_sweep(out_dir)
    print(one_cluster_lines(runs))
    if not failed:
        print("\n".join(crosscheck_lines(runs, out_dir)))
    agree = sum(1 for r in runs.values() if (r.get("summary") or {}).get(
        "first_plateau_clusters") == (r.get("summary") or {}).get("k_max_predicted"))
    print(f"{len(runs)} runs in {time.monotonic() - start:.0f} s; first plateau = predicted "
          f"k_max in {agree}/{len(runs)}; table {Path(out_dir) / SUMMARY_CSV}, figure {fig[0]}")
    return 1 if failed else 0


def one_cluster_lines(runs: dict) -> str:
    """Median time to one cluster and wall time per beta (the e^{c beta} law in one line)."""
    rows: dict[float, list] = {}
    for r in runs.values():
        s = r.get("summary") or {}
        rows.setdefault(float(r["params"]["model.beta"]), []).append(
            (s.get("one_cluster_time"), s.get("wall_seconds")))
    out = [f"{'beta':>6} {'time to one cluster (median)':>29} {'max wall s':>10}"]
    for b in sorted(rows):
        t = [x for x, _ in rows[b] if x is not None]
        w = [x for _, x in rows[b] if x is not None]
        out.append(f"{b:6.3g} {np.median(t) if t else float('nan'):29.4g} "
                   f"{max(w) if w else float('nan'):10.1f}")
    return "\n".join(out)


def crosscheck_lines(runs: dict, out_dir: str) -> list[str]:
    """Plateaus and merges of seed-0 runs against particles from the same initial density."""
    from meanfield.crosscheck import compare

    lines, results = ["cross-check against particles (same initial density, tokens at its "
                      "quantiles; meanfield.crosscheck):"], []
    for beta, tokens in CROSSCHECK:
        run = next((r for r in runs.values() if float(r["params"]["model.beta"]) == beta
                    and int(r["params"]["initial.seed"]) == 0), None)
        if run is None:
            continue
        start = time.monotonic()
        res = compare(run["path"], tokens)
        res["wall_seconds"] = time.monotonic() - start
        results.append(res)
        lines.append(f"beta = {beta:g}: first plateau {res['first_plateau']['pde']} clusters "
                     f"(particles {res['first_plateau']['particles']}), N = {tokens}, "
                     f"{res['wall_seconds']:.0f} s")
        for row in res["plateaus"]:
            if "length_ratio" in row:
                lines.append(f"   {row['k']} clusters until t = {row['pde_end']:.5g} "
                             f"(particles {row['particles_end']:.5g}), length ratio "
                             f"PDE/particles {row['length_ratio']:.4f}")
    (Path(out_dir) / "crosscheck.json").write_text(json.dumps(results, indent=1))
    return lines


if __name__ == "__main__":
    sys.exit(main())
