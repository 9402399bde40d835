"""Sweep throughput (runs per minute): in-process, 2 local processes, Dask LocalCluster(2).

Printed, never asserted. The 2-process sweep should take at most 0.6x the 1-process time.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from meanfield.sweep import run_sweep

BASE = """
[discretization]
cells = 1024
[time]
t_end_units = "e_folds"
t_end = 14.0
n_outputs = 29
"""


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mf-bench-sweep-"))
    (tmp / "base.toml").write_text(BASE)
    params = ["model.beta=3:9:1", "initial.seed=0:2"]  # 12 runs
    results = {}
    try:
        for label, kw in (("1 process", {"jobs": 1}), ("2 processes", {"jobs": 2}),
                          ("dask LocalCluster(2)", {"dask_local": 2})):
            start = time.perf_counter()
            runs, _ = run_sweep(str(tmp / "base.toml"), params, str(tmp / label.split()[0]),
                                quiet=True, **kw)
            wall = time.perf_counter() - start
            assert all(r["status"] == "complete" for r in runs.values())
            results[label] = wall
            print(f"{label:>22}: {len(runs)} runs in {wall:6.1f} s = "
                  f"{60 * len(runs) / wall:5.1f} runs/min")
        ratio = results["2 processes"] / results["1 process"]
        print(f"2-process / 1-process wall time: {ratio:.2f} (target <= 0.6)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
