"""Figures of a circle run (PNG): space-time map, snapshots, energy, Fourier modes, clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from meanfield.atomic import atomic_path
from meanfield.growth import growth_rate


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    _plt().close(fig)
    return str(path)


def plot_run(run, out_dir: str | Path, analysis: dict[str, Any] | None = None) -> list[str]:
    """Write the standard figures of ``run`` into ``out_dir``; returns the file names."""
    from matplotlib.colors import PowerNorm

    plt = _plt()
    out = Path(out_dir)
    stem = Path(run.path).stem
    cfg = run.config
    beta, model, unit = cfg["model"]["beta"], cfg["model"]["model"], cfg["model"]["time_unit"]
    title = rf"$\beta$ = {beta:g}, {model.upper()}, {cfg['discretization']['scheme']}, " \
            f"M = {cfg['discretization']['cells']}"
    res = analysis if analysis is not None else run.analyze()
    times = run.times
    theta = run.coords["theta"]
    dens = run.density[()]
    files = []

    # 1. space-time map (theta against t)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    vmax = np.percentile(dens, 99.5)
    mesh = ax.pcolormesh(times, theta, dens.T, shading="nearest", cmap="magma",
                         norm=PowerNorm(0.4, vmin=0, vmax=vmax), rasterized=True)
    fig.colorbar(mesh, ax=ax, label=r"density $p(t,\theta)$")
    if res.get("exit_time") is not None:
        ax.axvline(res["exit_time"], color="c", ls="--", lw=1, label="exit from uniform")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel(f"t ({unit} time)")
    ax.set_ylabel(r"$\theta$")
    ax.set_yticks([0, np.pi, 2 * np.pi], ["0", r"$\pi$", r"$2\pi$"])
    ax.set_title(f"space-time density, {title}")
    if cfg["time"]["schedule"] == "log" and times.size > 2:
        ax.set_xscale("symlog", linthresh=times[1])
    files.append(_save(fig, out / f"{stem}_spacetime.png"))

    # 2. snapshots
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    idx = np.unique(np.linspace(0, times.size - 1, 6).round().astype(int))
    cmap = plt.get_cmap("viridis")
    for j, i in enumerate(idx):
        ax.plot(theta, dens[i], color=cmap(j / max(len(idx) - 1, 1)), lw=1.1,
                label=f"t = {times[i]:.3g}")
    ax.set_yscale("symlog", linthresh=1.0 / (2 * np.pi))
    ax.set_xlabel(r"$\theta$")
    ax.set_ylabel(r"$p(\theta)$")
    ax.set_xticks([0, np.pi, 2 * np.pi], ["0", r"$\pi$", r"$2\pi$"])
    ax.legend(fontsize=8)
    ax.set_title(f"snapshots, {title}")
    files.append(_save(fig, out / f"{stem}_snapshots.png"))

    # 3. energy staircase
    d, td = run.diagnostics, run.diag_times
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, logx in zip(axes, (False, True), strict=True):
        sel = td > 0 if logx else slice(None)
        ax.plot(td[sel], d["ebar"][sel], color="C0")
        ax.set_xlabel(f"t ({unit} time)")
        ax.set_ylabel(r"$\bar E = 2\beta e^{-\beta} E$")
        if logx:
            ax.set_xscale("log")
            ax.set_title("energy staircase (log time)")
        else:
            ax.set_title("normalised energy")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    files.append(_save(fig, out / f"{stem}_energy.png"))

    # 4. Fourier amplitudes with predicted slopes
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    four = d["fourier"]
    k_pred = res["k_max_predicted"]
    ks = sorted({max(1, k_pred - 1), k_pred, k_pred + 1, 1, 2 * k_pred} - {0})
    ks = [k for k in ks if k < four.shape[1]]
    for j, k in enumerate(ks):
        line, = ax.semilogy(td, four[:, k], color=f"C{j}", label=f"k = {k}")
        g = float(growth_rate(k, beta, 2, model, unit))
        t_lin = td[td <= (res.get("exit_time") or td[-1])]
        if np.isfinite(g) and four[0, k] > 0:
            ax.semilogy(t_lin, four[0, k] * np.exp(g * t_lin), "--", color=line.get_color(),
                        lw=0.9)
    ax.set_xlabel(f"t ({unit} time)")
    ax.set_ylabel(r"$|\hat p_k(t)|$")
    ax.set_title(r"Fourier amplitudes (dashed: $|\hat p_k(0)| e^{\gamma_k t}$)")
    ax.set_ylim(bottom=max(1e-12, np.min(four[:, ks][four[:, ks] > 0]) / 3))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    files.append(_save(fig, out / f"{stem}_fourier.png"))

    # 5. cluster count
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.step(times, res["cluster_counts"], where="post", color="C0", label="detected clusters")
    ax.axhline(k_pred, color="C3", ls="--", lw=1, label=rf"$k_{{max}}$ = {k_pred}")
    ax.plot(td, d["dominant_mode"], ".", color="0.6", ms=2, label="dominant Fourier mode")
    ax.set_xlabel(f"t ({unit} time)")
    ax.set_ylabel("count")
    ax.set_ylim(bottom=0, top=max(2 * k_pred + 1, max(res["cluster_counts"] or [0]) + 1))
    ax.legend(fontsize=8)
    ax.set_title(f"clusters, {title}")
    ax.grid(alpha=0.3)
    files.append(_save(fig, out / f"{stem}_clusters.png"))
    return files


def plot_sweep(out_dir: str | Path, fig_dir: str | Path | None = None) -> list[str]:
    """Sweep figure: first-plateau cluster count and exit time against beta."""
    from meanfield.growth import kmax_asymptotic, most_unstable_mode
    from meanfield.sweep import load_manifest

    plt = _plt()
    out = Path(out_dir)
    data = load_manifest(out)
    runs = data["runs"]
    keys = [p["key"] for p in data["params"]]
    if "model.beta" not in keys:
        from meanfield.errors import InputError

        raise InputError("DIR", "the sweep figure needs model.beta among the swept keys")
    import tomllib

    base = tomllib.loads(data["base_config"])
    dim = base.get("model", {}).get("dim", 2)
    rows: dict[float, list[dict]] = {}
    for r in runs.values():
        rows.setdefault(float(r["params"]["model.beta"]), []).append(r.get("summary") or {})
    betas = np.array(sorted(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    bb = np.linspace(max(betas.min() - 0.25, 0), betas.max() + 0.25, 1500)
    ax1.step(bb, most_unstable_mode(bb, dim), where="post", color="C3", lw=1.3,
             label=r"predicted $k_{max}(\beta)$")
    ax1.plot(bb, kmax_asymptotic(bb, dim), ":", color="C3", lw=1, label="large-beta asymptotic")
    means, lo, hi = [], [], []
    for b in betas:
        vals = [s.get("first_plateau_clusters") for s in rows[b]]
        vals = np.array([v for v in vals if v is not None], float)
        rng = np.random.default_rng(int(b * 1000))
        ax1.plot(np.full(vals.size, b) + rng.uniform(-0.08, 0.08, vals.size), vals, "o",
                 color="C0", ms=3.5, alpha=0.5)
        means.append(vals.mean() if vals.size else np.nan)
        lo.append(vals.min() if vals.size else np.nan)
        hi.append(vals.max() if vals.size else np.nan)
    means = np.array(means)
    ax1.errorbar(betas, means, yerr=[means - np.array(lo), np.array(hi) - means], fmt="s",
                 color="C0", ms=5, capsize=2, label="observed: mean, range over runs")
    ax1.set_xlabel(r"$\beta$")
    ax1.set_ylabel("clusters in the first metastable plateau")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax1.set_title(rf"mode selection on $S^{{{dim - 1}}}$ ({len(runs)} runs)")
    for key, style, label in (("exit_time", "o", "observed"),
                              ("exit_time_predicted", "-", "linear theory")):
        ys = [np.nanmean([s.get(key) if s.get(key) is not None else np.nan for s in rows[b]])
              if rows[b] else np.nan for b in betas]
        if key == "exit_time":
            for b in betas:
                v = [s.get(key) for s in rows[b] if s.get(key) is not None]
                ax2.plot([b] * len(v), v, "o", color="C0", ms=3, alpha=0.5)
            ax2.plot(betas, ys, "s", color="C0", ms=5, label=f"{label} (mean)")
        elif np.isfinite(ys).any():
            ax2.plot(betas, ys, style, color="C3", label=label)
    ax2.set_yscale("log")
    ax2.set_xlabel(r"$\beta$")
    unit = base.get("model", {}).get("time_unit", "raw")
    ax2.set_ylabel(f"exit time from uniform ({unit} time)")
    ax2.set_title("exit time (TV distance > threshold)")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    target = Path(fig_dir) if fig_dir else out
    return [_save(fig, target / "sweep.png")]
