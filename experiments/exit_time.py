"""Exit time against ln N (N-token noise, beta = 2): slope 1/(2 gamma_max) = 0.363.

Sweeps initial.tokens over N = 1000 * 2^j (j = 0..4) and 12 seeds in parallel, fits the mean
exit time against ln N, and plots it with the linear-theory line (data/experiments/exit_time).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from meanfield import exit_time, growth_rate
from meanfield.io.atomic import atomic_path
from meanfield.sweep import run_sweep

HERE = Path(__file__).resolve().parent
OUT = Path("data/experiments/exit_time")
TOKENS = [1000, 2000, 4000, 8000, 16000]


def main() -> int:
    runs, _ = run_sweep(str(HERE / "exit_time.toml"),
                        ["initial.tokens=" + ",".join(str(n) for n in TOKENS),
                         "initial.seed=0:12"], str(OUT))
    by_n: dict[float, list[float]] = {}
    for r in runs.values():
        t = (r.get("summary") or {}).get("exit_time")
        if t is not None:
            by_n.setdefault(float(r["params"]["initial.tokens"]), []).append(t)
    ns = np.array(sorted(by_n))
    means = np.array([np.mean(by_n[n]) for n in ns])
    sems = np.array([np.std(by_n[n], ddof=1) / math.sqrt(len(by_n[n])) for n in ns])
    (slope, icpt), cov = np.polyfit(np.log(ns), means, 1, w=1 / sems, cov="unscaled")
    slope_err = math.sqrt(cov[0, 0])
    g = float(growth_rate(2, 2.0))
    theory = [exit_time(n, 2.0, threshold=math.pi * 0.5 / math.sqrt(2)) for n in ns]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for n in ns:
        ax.plot(np.full(len(by_n[n]), n), by_n[n], "o", color="C0", ms=3, alpha=0.4)
    ax.errorbar(ns, means, sems, fmt="s", color="C0", capsize=3, label="PDE, mean over seeds")
    ax.plot(ns, icpt + slope * np.log(ns), color="C0", lw=1,
            label=f"fit: slope {slope:.3f} in ln N")
    ax.plot(ns, theory, "--", color="C3", label=rf"linear theory, slope 1/(2$\gamma_{{max}}$)"
            f" = {1 / (2 * g):.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("N (tokens)")
    ax.set_ylabel("exit time (TV > 0.5)")
    ax.set_title(r"$\beta$ = 2: exit time from uniform")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    with atomic_path(OUT / "exit_time.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    for n, m, s, th in zip(ns, means, sems, theory, strict=True):
        print(f"N = {n:7.0f}: exit time {m:.3f} +- {s:.3f} (linear theory {th:.3f})")
    print(f"slope in ln N: {slope:.3f} +- {slope_err:.3f} (theory 1/(2 gamma_max) = "
          f"{1 / (2 * g):.4f}); "
          f"figure {OUT / 'exit_time.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
