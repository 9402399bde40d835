"""Figure helpers and the figures a domain module draws (PNG, written atomically).

Used by the domain modules (``Domain.figures``) and by ``meanfield.plots``; this module
imports nothing from the rest of the workflow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from meanfield.io.atomic import atomic_path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    pyplot().close(fig)
    return str(path)


def first_positive(times: np.ndarray) -> float:
    pos = times[times > 0]
    return float(pos[0]) if pos.size else 1.0


def use_log_time(run) -> bool:
    """Log time when asked, when the outputs are log-spaced, or when the dynamics span
    decades: Ebar reaches 90 % of its total change within the first 10 % of the run."""
    axis = getattr(run, "time_axis", "auto")
    if axis != "auto":
        return axis == "log"
    times = run.times
    if times.size < 3 or times[-1] <= 0:
        return False
    if run.config["time"]["schedule"] == "log":
        return True
    eb = run.diagnostics.get("ebar")
    if eb is None:
        return False
    eb = eb[:, 0] if eb.ndim == 2 else eb
    if not np.all(np.isfinite(eb)) or eb[-1] - eb[0] <= 0:
        return False
    td = run.diag_times
    reached = td[np.argmax(eb - eb[0] >= 0.9 * (eb[-1] - eb[0]))]
    return bool(reached <= 0.1 * td[-1])


def profile_figures(run, res, out: Path, stem: str, title: str, period: float) -> list[str]:
    """Space-time map and snapshots of a 1-D density (circle: theta in [0, 2 pi); zonal:
    polar angle in [0, pi]).

    Colour: p - pbar on an asinh scale whose linear width is the initial fluctuation level,
    so both the noise (a few linear widths) and the clusters (up to max p) are visible.
    Time axis: logarithmic when the outputs are log-spaced or the dynamics span decades
    (see ``use_log_time``), else linear.
    """
    from matplotlib.colors import AsinhNorm

    plt = pyplot()
    times = run.times
    theta = run.coords["theta"]
    dens = run.density[()]
    unit = run.config["model"]["time_unit"]
    ticks = ([0, np.pi, 2 * np.pi], ["0", r"$\pi$", r"$2\pi$"]) if period > 4 else (
        [0, np.pi / 2, np.pi], ["0", r"$\pi/2$", r"$\pi$"])
    files = []
    pbar = float(np.mean(dens[0]))
    dev = dens - pbar
    width = float(np.std(dev[0])) or 1e-3 * pbar
    top = float(np.max(np.abs(dev))) or pbar
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    log_t = use_log_time(run)
    mesh = ax.pcolormesh(times, theta, dev.T, shading="nearest", cmap="RdBu_r",
                         norm=AsinhNorm(linear_width=width, vmin=-top, vmax=top),
                         rasterized=True)
    cb = fig.colorbar(mesh, ax=ax)
    cb.set_label(r"$p(t,\theta) - \bar p$ (asinh scale, linear width = initial noise)",
                 fontsize=8)
    pos = run.extra("atom_position") if hasattr(run, "extra") else None
    if pos is not None:
        x, m = pos[()], run.extra("atom_mass_by_atom")[()]
        tt = np.broadcast_to(times[:, None], x.shape)
        ok = m > 0
        if ok.any():
            ax.scatter(tt[ok], np.mod(x[ok], period), s=4 + 40 * m[ok] / m[ok].max(),
                       c="k", marker="o", lw=0, label="atoms (size ~ mass)", zorder=3)
    if res.get("exit_time") is not None:
        ax.axvline(res["exit_time"], color="k", ls="--", lw=1, label="exit from uniform")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel(f"t ({unit} time)" + (", log scale" if log_t else ""))
    ax.set_ylabel(r"$\theta$" + (" (angle to the pole)" if period < 4 else ""))
    ax.set_yticks(*ticks)
    ax.set_title(f"space-time density, {title}", fontsize=9)
    if log_t and times.size > 2:
        ax.set_xscale("symlog", linthresh=first_positive(times))
    files.append(save(fig, out / f"{stem}_spacetime.png"))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if log_t and times.size > 2:
        pos = np.flatnonzero(times > 0)
        pick = np.unique(np.geomspace(1, pos.size, 5).round().astype(int) - 1)
        idx = np.unique(np.concatenate([[0], pos[pick]]))
    else:
        idx = np.unique(np.linspace(0, times.size - 1, 6).round().astype(int))
    cmap = plt.get_cmap("viridis")
    for j, i in enumerate(idx):
        ax.plot(theta, dens[i], color=cmap(j / max(len(idx) - 1, 1)), lw=1.1,
                label=f"t = {times[i]:.3g}")
    ax.set_yscale("symlog", linthresh=pbar)
    ax.set_xlabel(r"$\theta$")
    ax.set_ylabel(r"$p(\theta)$")
    ax.set_xticks(*ticks)
    ax.legend(fontsize=8)
    ax.set_title(f"snapshots, {title}", fontsize=9)
    files.append(save(fig, out / f"{stem}_snapshots.png"))
    return files


def sphere_maps(run, out: Path, stem: str, title: str) -> list[str]:
    """Mollweide maps of 4 snapshots and an orthographic view of the last one."""
    plt = pyplot()
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
    files = [save(fig, out / f"{stem}_mollweide.png")]
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
    files.append(save(fig, out / f"{stem}_orthographic.png"))
    return files


def particle_figures(run, res, out: Path, stem: str, title: str, system: int = 0) -> list[str]:
    plt = pyplot()
    files = []
    times = run.times
    if run.field != "angles":
        return files
    ang = np.mod(run.density[:, system, :], 2 * np.pi)  # (time, N)
    n = ang.shape[1]
    pick = np.linspace(0, n - 1, min(n, 300)).round().astype(int)
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    masked = run.config["particles"]["mask"] != "none"
    if masked:  # token order matters: colour by index, follow the Renyi centres (seed 002)
        from meanfield.analysis.renyi import renyi_centres

        ax.scatter(np.repeat(times, pick.size), ang[:, pick].ravel(), s=0.8,
                   c=np.tile(pick, times.size), cmap="viridis", alpha=0.6)
        beta = float(run.config["model"]["beta"])
        if 0 < beta < np.inf and 4.0 / np.sqrt(beta) < np.pi:
            delta = 4.0 / np.sqrt(beta)
            for strong, color in ((False, "k"), (True, "r")):
                for c in renyi_centres(ang[0], delta, strong=strong):
                    ax.plot(times, ang[:, c], ".", color=color, ms=1.2)
    else:
        ax.plot(times, ang[:, pick], ",", color="C0", alpha=0.6)
        ax.plot(np.repeat(times, pick.size), ang[:, pick].ravel(), ".", color="C0", ms=0.8,
                alpha=0.5)
    k = res["k_max_predicted"]
    t_exit = res.get("exit_time")
    if t_exit is not None and k is not None and k >= 1:
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
    ax.set_title(("tokens by index; Renyi (black) / strong (red) centres, delta = 4/sqrt(beta)"
                  if masked else
                  "token trajectories (dashed: predicted cluster angles)") + f", {title}",
                 fontsize=9)
    files.append(save(fig, out / f"{stem}_trajectories.png"))
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
    files.append(save(fig, out / f"{stem}_histograms.png"))
    return files


def causal_figures(run, out: Path, stem: str, title: str) -> list[str]:
    """Space-time maps of the first, a middle and the last slice of token labels and of the
    label-averaged density (causal runs)."""
    plt = pyplot()
    rho = np.asarray(run.density[()], float)               # (time, slice, theta)
    w = np.asarray(run.static("slice_weight"), float)
    n = rho.shape[1]
    panels = [(f"slice 1 of {n} (first tokens)", rho[:, 0]),
              (f"slice {n // 2 + 1}", rho[:, n // 2]), (f"slice {n} (last tokens)", rho[:, -1]),
              ("all tokens", np.einsum("s,tsj->tj", w, rho))]
    t, th = np.asarray(run.times), np.asarray(run.coords["theta"])
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), sharey=True)
    top = float(np.percentile(rho, 99.5))
    for ax, (name, data) in zip(axes, panels, strict=True):
        ax.pcolormesh(t, th, data.T, shading="nearest", cmap="magma", vmin=0, vmax=top,
                      rasterized=True)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("t")
    axes[0].set_ylabel(r"$\theta$")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return [save(fig, out / f"{stem}_slices.png")]


def staircase_figure(run, analysis: dict, path: Path, title: str) -> str:
    """Seed 000 Fig. 4: Ebar against the clock time (log axis), the detected plateau levels
    and the greedy predictor's levels; token angles below (merges as they happen)."""
    plt = pyplot()
    t = np.asarray(run.diag_times, float)
    e = np.asarray(run.diagnostics["ebar"], float)
    x = np.asarray(run.density[()], float)
    ts = np.asarray(run.times, float)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True,
                                 gridspec_kw={"height_ratios": [3, 2]})
    ok = t > 0
    a1.plot(t[ok], e[ok], color="tab:blue", lw=1.4, label=r"$\bar E$")
    st = analysis.get("staircase") or {}
    for v in st.get("predicted_levels") or []:
        a1.axhline(v, color="0.6", lw=0.8, ls="--")
    for v in st.get("jumps") or []:
        a1.axvline(v, color="tab:red", lw=0.6, alpha=0.6)
    a1.set_xscale("log")
    a1.set_ylabel(r"$\bar E$")
    a1.set_title(f"{title} (dashed: greedy predictor; red: jumps)", fontsize=9)
    okp = ts > 0
    for k in range(x.shape[1]):
        a2.plot(ts[okp], np.mod(x[okp, k] + np.pi, 2 * np.pi) - np.pi, lw=1.0)
    a2.set_xscale("log")
    a2.set_xlabel(f"t ({run.attrs.get('time_axis', 'time')})")
    a2.set_ylabel(r"$\theta_i$")
    fig.tight_layout()
    return save(fig, path)
