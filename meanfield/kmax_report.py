"""The k_max report: a table, JSON records and the growth-rate / staircase figure."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from meanfield.theory.growth import (
    ModeSelection,
    growth_rate,
    kmax_asymptotic,
    kmax_transitions,
    mode_selection,
    most_unstable_mode,
)


def fmt_log(log_value: float, digits: int = 6) -> str:
    """Format e^{log_value} in scientific notation, also beyond the float64 range."""
    if log_value == -math.inf:
        return "0"
    log10 = log_value / math.log(10.0)
    exp = math.floor(log10)
    mant = 10 ** (log10 - exp)
    if mant >= 10 - 0.5 * 10 ** (1 - digits):
        mant, exp = mant / 10, exp + 1
    return f"{mant:.{digits - 1}f}e{exp:+03d}"


def selections(betas: Sequence[float], dim: int, model: str,
               time_unit: str = "raw") -> list[ModeSelection]:
    return [mode_selection(b, dim, model, time_unit) for b in betas]


def table(sels: Sequence[ModeSelection]) -> str:
    unit = sels[0].time_unit if sels else "raw"
    head = (f"{'beta':>8} {'k_max':>5} {'gamma_max':>13} {'k_runner_up':>11} "
            f"{'gamma_ratio':>11} {'k_asym':>7}   (d = {sels[0].dim if sels else ''}, "
            f"model {sels[0].model if sels else ''}, time unit {unit})")
    rows = [head]
    for s in sels:
        rows.append(f"{s.beta:8.4g} {s.k_max:5d} {fmt_log(s.log_gamma_max):>13} "
                    f"{s.k_runner_up:11d} {s.gamma_ratio:11.6f} "
                    f"{kmax_asymptotic(s.beta, s.dim):7.3f}")
    return "\n".join(rows)


def plot(sels: Sequence[ModeSelection], path: str, *, staircase: bool) -> None:
    """gamma_k against k (dots: integer k; line: real k; star: the maximum) and, for a
    range of beta, k_max(beta) as a staircase with the large-beta asymptotic."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = 2 if staircase else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.2 * ncols, 4.6), squeeze=False)
    ax = axes[0, 0]
    show = list(sels)
    if len(show) > 8:  # keep the panel readable: 8 evenly spaced beta
        idx = np.unique(np.linspace(0, len(show) - 1, 8).round().astype(int))
        show = [show[i] for i in idx]
    cmap = matplotlib.colormaps["viridis"]
    for i, s in enumerate(show):
        color = cmap(i / max(len(show) - 1, 1))
        kk = np.arange(s.k.size)
        kr = np.linspace(0, kk[-1], 400)
        # normalise by gamma_max so curves for different beta share an axis and never overflow
        with np.errstate(over="ignore"):
            cont = np.exp(np.log(np.maximum(growth_rate(kr, s.beta, s.dim, "sa"), 1e-300))
                          - np.log(growth_rate(s.k_max, s.beta, s.dim, "sa")))
            disc = np.exp(s.log_gamma - s.log_gamma_max)
        ax.plot(kr, cont, color=color, lw=1.2, label=rf"$\beta$ = {s.beta:g}")
        ax.plot(kk, disc, "o", color=color, ms=3.5)
        ax.plot([s.k_max], [1.0], "*", color=color, ms=12, mec="k", mew=0.6)
    ax.set_xlabel("degree k")
    ax.set_ylabel(r"$\gamma_k / \gamma_{k_{max}}$")
    s0 = sels[0]
    ax.set_title(rf"linear growth rates, $S^{{{s0.dim - 1}}}$, {s0.model.upper()} "
                 r"($\star$ = $k_{max}$)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    if staircase:
        ax = axes[0, 1]
        b = np.array([s.beta for s in sels])
        bb = np.linspace(b.min(), b.max(), 2000)
        ax.step(bb, most_unstable_mode(bb, s0.dim), where="post", color="C0",
                label=r"$k_{max}(\beta)$")
        ax.plot(b, [s.k_max for s in sels], "o", color="C0", ms=3)
        ax.plot(bb, kmax_asymptotic(bb, s0.dim), "--", color="C3",
                label=r"$\sqrt{2\beta+\nu^2}-\nu$, $\nu=(d-2)/2$")
        kmax_hi = int(most_unstable_mode(b.max(), s0.dim))
        for bt in kmax_transitions(s0.dim, max(kmax_hi, 1)):
            if b.min() <= bt <= b.max():
                ax.axvline(bt, color="0.8", lw=0.7, zorder=0)
        ax.set_xlabel(r"$\beta$")
        ax.set_ylabel(r"$k_{max}$")
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title("most unstable mode (grey: root-found transitions)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
