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


def _title(run) -> str:
    cfg = run.config
    m, d = cfg["model"], cfg["discretization"]
    dom = run.domain
    if dom == "particles":
        res = f"N = {cfg['particles']['count']}, {cfg['particles']['integrator']}"
    elif dom == "sphere":
        res = f"spectral, lmax = {d['lmax']}"
    else:
        res = f"{d['scheme']}, M = {d['cells']}"
    return rf"$\beta$ = {m['beta']:g}, {m['model'].upper()}, $S^{{{m['dim'] - 1}}}$, {res}"


def _energy_figure(run, path: Path, title: str, system: int = 0) -> str:
    plt = _plt()
    d, td = run.diagnostics, run.diag_times
    eb = d["ebar"][:, system] if d["ebar"].ndim == 2 else d["ebar"]
    unit = run.config["model"]["time_unit"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, logx in zip(axes, (False, True), strict=True):
        sel = td > 0 if logx else slice(None)
        ax.plot(td[sel], eb[sel], color="C0")
        ax.set_xlabel(f"t ({unit} time)")
        ax.set_ylabel(r"$\bar E = 2\beta e^{-\beta} E$")
        if logx:
            ax.set_xscale("log")
        ax.set_title("energy staircase (log time)" if logx else "normalised energy")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _clusters_figure(run, res, path: Path, title: str, dom_key: str | None,
                     system: int = 0) -> str:
    plt = _plt()
    times, td = run.times, run.diag_times
    k_pred = res["k_max_predicted"]
    unit = run.config["model"]["time_unit"]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.step(times, res["cluster_counts"], where="post", color="C0", label="detected clusters")
    ax.axhline(k_pred, color="C3", ls="--", lw=1, label=rf"$k_{{max}}$ = {k_pred}")
    if dom_key is not None:
        dm = run.diagnostics[dom_key]
        dm = dm[:, system] if dm.ndim == 2 else dm
        ax.plot(td, dm, ".", color="0.6", ms=2, label="dominant mode / degree")
    ax.set_xlabel(f"t ({unit} time)")
    ax.set_ylabel("count")
    ax.set_ylim(bottom=0, top=max(2 * k_pred + 1, max(res["cluster_counts"] or [0]) + 1))
    ax.legend(fontsize=8)
    ax.set_title(f"clusters, {title}", fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _modes_figure(run, res, amps: np.ndarray, path: Path, title: str, label: str,
                  power: bool = False) -> str:
    """Mode amplitudes against t on a log scale with the predicted slopes e^{gamma_k t}."""
    plt = _plt()
    cfg = run.config
    beta, model, unit, dim = (cfg["model"]["beta"], cfg["model"]["model"],
                              cfg["model"]["time_unit"], cfg["model"]["dim"])
    td = run.diag_times
    k_pred = res["k_max_predicted"]
    ks = sorted({max(1, k_pred - 1), k_pred, k_pred + 1, 1, 2 * k_pred} - {0})
    ks = [k for k in ks if k < amps.shape[1]]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    t_lin = td[td <= (res.get("exit_time") or td[-1])]
    for j, k in enumerate(ks):
        line, = ax.semilogy(td, amps[:, k], color=f"C{j}", label=f"k = {k}")
        g = float(growth_rate(k, beta, dim, model, unit)) * (2 if power else 1)
        if np.isfinite(g) and amps[0, k] > 0:
            ax.semilogy(t_lin, amps[0, k] * np.exp(g * t_lin), "--", color=line.get_color(),
                        lw=0.9)
    ax.set_xlabel(f"t ({unit} time)")
    ax.set_ylabel(label)
    slope = r"e^{2\gamma_k t}" if power else r"e^{\gamma_k t}"
    ax.set_title(rf"mode amplitudes (dashed: initial value $\times {slope}$)", fontsize=10)
    pos = amps[:, ks][amps[:, ks] > 0]
    if pos.size:
        ax.set_ylim(bottom=max(1e-14, pos.min() / 3))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_run(run, out_dir: str | Path, analysis: dict[str, Any] | None = None) -> list[str]:
    """Write the standard figures of ``run`` into ``out_dir``; returns the file names.

    circle, zonal: space-time map, snapshots, energy, mode amplitudes, clusters;
    sphere: Mollweide and orthographic maps, degree spectrum, energy, clusters;
    particles: trajectories with the predicted cluster lines (circle), histograms, energy,
    clusters.
    """
    out = Path(out_dir)
    stem = Path(run.path).stem
    res = analysis if analysis is not None else run.analyze()
    title = _title(run)
    dom = run.domain
    files = []
    if dom in ("circle", "zonal"):
        files += _plot_profiles(run, res, out, stem, title)
        amps = run.diagnostics["fourier"] if dom == "circle" else np.abs(
            run.diagnostics["gegenbauer"])
        label = r"$|\hat p_k(t)|$" if dom == "circle" else r"$|a_k(t)|$ (Gegenbauer)"
        files.append(_modes_figure(run, res, amps, out / f"{stem}_modes.png", title, label))
        dom_key = "dominant_mode" if dom == "circle" else "dominant_degree"
    elif dom == "sphere":
        files += _plot_sphere_maps(run, out, stem, title)
        files.append(_modes_figure(run, res, run.diagnostics["power"],
                                   out / f"{stem}_spectrum.png", title,
                                   r"power per degree $P_l(t)$", power=True))
        dom_key = "dominant_degree"
    else:
        files += _plot_particles(run, res, out, stem, title)
        dom_key = "dominant_mode" if "dominant_mode" in run.diagnostics else None
    files.append(_energy_figure(run, out / f"{stem}_energy.png", title))
    files.append(_clusters_figure(run, res, out / f"{stem}_clusters.png", title, dom_key))
    return files


def _plot_profiles(run, res, out: Path, stem: str, title: str) -> list[str]:
    """Space-time map and snapshots of a 1-D density (circle: theta in [0, 2pi); zonal:
    polar angle in [0, pi])."""
    from matplotlib.colors import PowerNorm

    plt = _plt()
    times = run.times
    theta = run.coords["theta"]
    dens = run.density[()]
    unit = run.config["model"]["time_unit"]
    top = 2 * np.pi if run.domain == "circle" else np.pi
    ticks = ([0, np.pi, 2 * np.pi], ["0", r"$\pi$", r"$2\pi$"]) if top > 4 else (
        [0, np.pi / 2, np.pi], ["0", r"$\pi/2$", r"$\pi$"])
    files = []
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    vmax = np.percentile(dens, 99.5)
    mesh = ax.pcolormesh(times, theta, dens.T, shading="nearest", cmap="magma",
                         norm=PowerNorm(0.4, vmin=0, vmax=vmax), rasterized=True)
    fig.colorbar(mesh, ax=ax, label=r"density $p(t,\theta)$")
    if res.get("exit_time") is not None:
        ax.axvline(res["exit_time"], color="c", ls="--", lw=1, label="exit from uniform")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel(f"t ({unit} time)")
    ax.set_ylabel(r"$\theta$" + (" (angle to the pole)" if top < 4 else ""))
    ax.set_yticks(*ticks)
    ax.set_title(f"space-time density, {title}", fontsize=9)
    if run.config["time"]["schedule"] == "log" and times.size > 2:
        ax.set_xscale("symlog", linthresh=times[1])
    files.append(_save(fig, out / f"{stem}_spacetime.png"))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    idx = np.unique(np.linspace(0, times.size - 1, 6).round().astype(int))
    cmap = plt.get_cmap("viridis")
    for j, i in enumerate(idx):
        ax.plot(theta, dens[i], color=cmap(j / max(len(idx) - 1, 1)), lw=1.1,
                label=f"t = {times[i]:.3g}")
    ax.set_yscale("symlog", linthresh=float(np.mean(dens[0])))
    ax.set_xlabel(r"$\theta$")
    ax.set_ylabel(r"$p(\theta)$")
    ax.set_xticks(*ticks)
    ax.legend(fontsize=8)
    ax.set_title(f"snapshots, {title}", fontsize=9)
    files.append(_save(fig, out / f"{stem}_snapshots.png"))
    return files


def _plot_sphere_maps(run, out: Path, stem: str, title: str) -> list[str]:
    """Mollweide maps of 4 snapshots and an orthographic view of the last one."""
    plt = _plt()
    lat = np.radians(run.coords["lat"])
    lon = np.radians(run.coords["lon"])
    lon_c = np.where(lon > np.pi, lon - 2 * np.pi, lon)
    order = np.argsort(lon_c)
    times = run.times
    idx = np.unique(np.linspace(0, times.size - 1, 4).round().astype(int))
    fig = plt.figure(figsize=(12, 6))
    for n, i in enumerate(idx):
        ax = fig.add_subplot(2, 2, n + 1, projection="mollweide")
        p = run.snapshot(int(i))[:, order]
        mesh = ax.pcolormesh(lon_c[order], lat, p, shading="nearest", cmap="magma",
                             rasterized=True)
        ax.set_title(f"t = {times[i]:.3g}", fontsize=9)
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        fig.colorbar(mesh, ax=ax, shrink=0.7)
    fig.suptitle(f"density on the sphere (Mollweide), {title}", fontsize=10)
    files = [_save(fig, out / f"{stem}_mollweide.png")]
    # orthographic view: project the visible hemisphere (centred on the density maximum)
    p = run.snapshot(times.size - 1)
    i0, j0 = np.unravel_index(np.argmax(p), p.shape)
    la0, lo0 = lat[i0], lon[j0]
    LA, LO = np.meshgrid(lat, lon, indexing="ij")
    cosc = np.sin(la0) * np.sin(LA) + np.cos(la0) * np.cos(LA) * np.cos(LO - lo0)
    xs = np.cos(LA) * np.sin(LO - lo0)
    ys = np.cos(la0) * np.sin(LA) - np.sin(la0) * np.cos(LA) * np.cos(LO - lo0)
    vis = cosc > 0
    fig, ax = plt.subplots(figsize=(5.2, 5))
    sc = ax.scatter(xs[vis], ys[vis], c=p[vis], s=4, cmap="magma", rasterized=True)
    ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="0.5"))
    ax.set_aspect("equal")
    ax.axis("off")
    fig.colorbar(sc, ax=ax, shrink=0.8)
    ax.set_title(f"orthographic view at t = {times[-1]:.3g}\n{title}", fontsize=9)
    files.append(_save(fig, out / f"{stem}_orthographic.png"))
    return files


def _plot_particles(run, res, out: Path, stem: str, title: str, system: int = 0) -> list[str]:
    plt = _plt()
    files = []
    times = run.times
    if run.field != "angles":
        return files
    ang = np.mod(run.density[:, system, :], 2 * np.pi)  # (time, N)
    n = ang.shape[1]
    pick = np.linspace(0, n - 1, min(n, 300)).round().astype(int)
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    ax.plot(times, ang[:, pick], ",", color="C0", alpha=0.6)
    ax.plot(np.repeat(times, pick.size), ang[:, pick].ravel(), ".", color="C0", ms=0.8,
            alpha=0.5)
    k = res["k_max_predicted"]
    t_exit = res.get("exit_time")
    if t_exit is not None and k >= 1:
        i = int(np.searchsorted(times, t_exit))
        i = min(i, times.size - 1)
        ck = np.mean(np.exp(-1j * k * ang[i]))
        for j in range(k):
            ax.axhline(np.mod((2 * np.pi * j - np.angle(ck)) / k, 2 * np.pi), color="C3",
                       ls="--", lw=0.9)
        ax.axvline(t_exit, color="c", ls=":", lw=1)
    ax.set_ylim(0, 2 * np.pi)
    ax.set_xlabel(f"t ({run.config['model']['time_unit']} time)")
    ax.set_ylabel(r"$\theta_i$")
    ax.set_title(f"token trajectories (dashed: predicted cluster angles), {title}",
                 fontsize=9)
    files.append(_save(fig, out / f"{stem}_trajectories.png"))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True)
    for ax, i in zip(axes, np.unique(np.linspace(0, times.size - 1, 3).round().astype(int)),
                     strict=False):
        ax.hist(ang[i], bins=100, range=(0, 2 * np.pi), density=True, color="C0")
        ax.axhline(1 / (2 * np.pi), color="0.5", lw=0.8)
        ax.set_title(f"t = {times[i]:.3g}", fontsize=9)
        ax.set_xlabel(r"$\theta$")
    axes[0].set_ylabel("density")
    fig.suptitle(f"histograms (100 bins), {title}", fontsize=9)
    fig.tight_layout()
    files.append(_save(fig, out / f"{stem}_histograms.png"))
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
