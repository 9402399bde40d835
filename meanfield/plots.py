"""Figures (PNG) of a run and of a sweep.

``plot_run`` draws what every run has (energy staircase, cluster counts, spectrum with the
predicted slopes) and asks the run's domain module for its own figures, which use the
helpers here: ``profile_figures`` (space-time map and snapshots of a 1-D density),
``sphere_maps`` and ``particle_figures``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from meanfield.figures import first_positive, pyplot, save, use_log_time
from meanfield.theory.growth import growth_rate


def _title(run) -> str:
    cfg = run.config
    m = cfg["model"]
    res = run.domain_module.resolution(cfg)
    return rf"$\beta$ = {m['beta']:g}, {m['model'].upper()}, $S^{{{m['dim'] - 1}}}$, {res}"


def _energy_figure(run, path: Path, title: str, system: int = 0) -> str:
    plt = pyplot()
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
    return save(fig, path)


def _attention_figure(run, res, path: Path, title: str) -> str | None:
    """Seed 004 Fig. 4 style: W_2(rho_t, Pi_# rho_0) and the alignments with E, F, F_abs
    against t (median and 10-90 % band over the systems of a batch), t = log beta marked."""
    d, td = run.diagnostics, run.diag_times
    if "w2_pushforward" not in d:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    for key, color, label in (("w2_pushforward", "C0", r"$W_2(\rho_t, \Pi_\# \rho_0)$"),
                              ("align_E", "C1", r"$\int |P_E x|^2 d\rho_t$"),
                              ("align_F", "C3", r"$\int |P_F x|^2 d\rho_t$"),
                              ("align_F_abs", "C2", r"$\int |P_{F^{abs}} x|^2 d\rho_t$")):
        y = np.asarray(d[key], float)
        y = y[:, None] if y.ndim == 1 else y
        lo, med, hi = np.nanquantile(y, [0.1, 0.5, 0.9], axis=1)
        ax.plot(td, med, color=color, label=label, ls=":" if key == "align_F_abs" else "-")
        if y.shape[1] > 1:
            ax.fill_between(td, lo, hi, color=color, alpha=0.2, lw=0)
    beta = run.config["model"]["beta"]
    if 0 < beta < math.inf:
        ax.axvline(math.log(beta), color="0.4", ls="--", lw=1, label=r"$t = \log\beta$")
    ax.set_xlabel(f"t ({run.config['model']['time_unit']} time)")
    ax.set_ylim(-0.02, max(1.45, float(np.nanmax(d["w2_pushforward"])) + 0.05))
    ax.set_title("two phases of seed 004: collapse onto E, then towards F", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def _clusters_figure(run, res, path: Path, title: str, system: int = 0) -> str:
    plt = pyplot()
    times, td = run.times, run.diag_times
    k_pred = res["k_max_predicted"]
    unit = run.config["model"]["time_unit"]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.step(times, res["cluster_counts"], where="post", color="C0", label="detected clusters")
    if k_pred is not None:
        ax.axhline(k_pred, color="C3", ls="--", lw=1, label=rf"$k_{{max}}$ = {k_pred}")
    dm = run.diagnostics.get("dominant_mode")
    if dm is not None:
        dm = dm[:, system] if dm.ndim == 2 else dm
        ax.plot(td, dm, ".", color="0.6", ms=2, label="dominant mode")
    ax.set_xlabel(f"t ({unit} time)")
    ax.set_ylabel("count")
    ax.set_ylim(bottom=0, top=max(2 * (k_pred or 1) + 1, max(res["cluster_counts"] or [0]) + 1))
    if use_log_time(run):
        ax.set_xscale("symlog", linthresh=first_positive(times))
    ax.legend(fontsize=8)
    ax.set_title(f"clusters, {title}", fontsize=9)
    ax.grid(alpha=0.3)
    return save(fig, path)


def _spectrum_figure(run, res, path: Path, title: str, label: str, system: int = 0) -> str | None:
    """Spectrum amplitudes against t on a log scale with the predicted slopes e^{gamma_k t}."""
    amps = run.diagnostics.get("spectrum")
    if amps is None:
        return None
    amps = amps[:, system] if amps.ndim == 3 else amps
    plt = pyplot()
    cfg = run.config
    beta, model, unit, dim = (cfg["model"]["beta"], cfg["model"]["model"],
                              cfg["model"]["time_unit"], cfg["model"]["dim"])
    td = run.diag_times
    k_pred = res["k_max_predicted"]
    k_ref = k_pred or int(np.argmax(amps[-1, 1:]) + 1)
    ks = sorted({max(1, k_ref - 1), k_ref, k_ref + 1, 1, 2 * k_ref} - {0})
    ks = [k for k in ks if k < amps.shape[1]]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    t_lin = td[td <= (res.get("exit_time") or td[-1])]
    for j, k in enumerate(ks):
        line, = ax.semilogy(td, amps[:, k], color=f"C{j}", label=f"k = {k}")
        if k_pred is None:
            continue
        g = float(growth_rate(k, beta, dim, model, unit))
        if np.isfinite(g) and amps[0, k] > 0:
            ax.semilogy(t_lin, amps[0, k] * np.exp(g * t_lin), "--", color=line.get_color(),
                        lw=0.9)
    ax.set_xlabel(f"t ({unit} time)")
    ax.set_ylabel(label)
    ax.set_title(r"spectrum (dashed: initial value $\times e^{\gamma_k t}$)" if k_pred
                 else "spectrum", fontsize=10)
    pos = amps[:, ks][amps[:, ks] > 0]
    if pos.size:
        ax.set_ylim(bottom=max(1e-14, pos.min() / 3))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save(fig, path)


def plot_run(run, out_dir: str | Path, analysis: dict[str, Any] | None = None, *,
             time_axis: str = "auto") -> list[str]:
    """Write the standard figures of ``run`` into ``out_dir``; returns the file names.

    Every run: energy (linear and log time), cluster counts, spectrum with the predicted
    slopes; plus the domain's own figures (circle, zonal: space-time map and snapshots;
    sphere: Mollweide and orthographic maps; particles: trajectories and histograms).
    ``time_axis`` (auto | linear | log) chooses the time axis of the time-resolved figures.
    """
    out = Path(out_dir)
    stem = Path(run.path).stem
    res = analysis if analysis is not None else run.analyze()
    title = _title(run)
    dom = run.domain_module
    run.time_axis = time_axis
    files = list(dom.figures(run, res, out, stem, title))
    spec = _spectrum_figure(run, res, out / f"{stem}_spectrum.png", title, dom.spectrum_label)
    if spec is not None:
        files.append(spec)
    files.append(_energy_figure(run, out / f"{stem}_energy.png", title))
    files.append(_clusters_figure(run, res, out / f"{stem}_clusters.png", title))
    att = _attention_figure(run, res, out / f"{stem}_attention.png", title)
    if att is not None:
        files.append(att)
    return files


def plot_sweep(out_dir: str | Path, fig_dir: str | Path | None = None) -> list[str]:
    """Sweep figure: first-plateau cluster count and exit time against beta.

    Runs are grouped into one series per combination of the swept keys other than beta and
    the seed (e.g. model = usa / sa): values of different series are never averaged
    together; each has its own markers, mean, theory curve and legend label."""
    from meanfield.sweep import load_manifest, series_of
    from meanfield.theory.growth import kmax_asymptotic, most_unstable_mode

    plt = pyplot()
    out = Path(out_dir)
    data = load_manifest(out)
    runs = data["runs"]
    keys = [p["key"] for p in data["params"]]
    if "model.beta" not in keys:
        from meanfield.theory.errors import InputError

        raise InputError("DIR", "the sweep figure needs model.beta among the swept keys")
    import tomllib

    base = tomllib.loads(data["base_config"])
    groups = series_of(runs, keys)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.6))
    all_b = np.array(sorted({float(r["params"]["model.beta"]) for r in runs.values()}))
    finite = all_b[np.isfinite(all_b)]
    lo_b, hi_b = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    # beta = inf (zero temperature) is drawn one step right of the largest finite beta
    inf_x = hi_b + (max(np.diff(finite).max(), 0.5) if finite.size > 1 else 1.0)

    def xpos(b):
        b = np.asarray(b, float)
        return np.where(np.isfinite(b), b, inf_x)

    bb = np.linspace(max(lo_b - 0.25, 0), hi_b + 0.25, 1500)
    dims = sorted({int(r["params"].get("model.dim", base.get("model", {}).get("dim", 2)))
                   for r in runs.values()})
    for j, dim in enumerate(dims):
        tag = f", d = {dim}" if len(dims) > 1 else ""
        ax1.step(bb, most_unstable_mode(bb, dim), where="post", color="C3", lw=1.3,
                 ls=("-", "--", "-.", ":")[j % 4], label=rf"predicted $k_{{max}}(\beta)${tag}")
        ax1.plot(bb, kmax_asymptotic(bb, dim), ":", color="0.5", lw=0.8)
    width = 0.08
    for g, (label, members) in enumerate(groups.items()):
        color = f"C{g % 10}" if len(groups) > 1 else "C0"
        rows: dict[float, list[dict]] = {}
        for r in members:
            rows.setdefault(float(r["params"]["model.beta"]), []).append(r.get("summary") or {})
        betas = np.array(sorted(rows))
        shift = (g - (len(groups) - 1) / 2) * 0.05
        means, lo, hi = [], [], []
        for b in betas:
            vals = np.array([s["first_plateau_clusters"] for s in rows[b]
                             if s.get("first_plateau_clusters") is not None], float)
            rng = np.random.default_rng(int(xpos(b) * 1000) + g)
            ax1.plot(xpos(b) + shift + rng.uniform(-width, width, vals.size), vals, "o",
                     color=color,
                     ms=3.5, alpha=0.45)
            means.append(vals.mean() if vals.size else np.nan)
            lo.append(vals.min() if vals.size else np.nan)
            hi.append(vals.max() if vals.size else np.nan)
        means = np.array(means)
        name = label or "observed"
        ax1.errorbar(xpos(betas) + shift, means,
                     yerr=[means - np.array(lo), np.array(hi) - means],
                     fmt="s", color=color, ms=5, capsize=2, label=f"{name}: mean, range")
        def mean_of(key, b, rows=rows):
            v = [s[key] for s in rows[b] if s.get(key) is not None]
            return float(np.mean(v)) if v else np.nan

        obs = [mean_of("exit_time", b) for b in betas]
        theory = [mean_of("exit_time_predicted", b) for b in betas]
        for b in betas:
            v = [s["exit_time"] for s in rows[b] if s.get("exit_time") is not None]
            ax2.plot([xpos(b) + shift] * len(v), v, "o", color=color, ms=3, alpha=0.45)
        ax2.plot(xpos(betas) + shift, obs, "s", color=color, ms=5, label=f"{name} (mean)")
        if np.isfinite(theory).any():
            ax2.plot(xpos(betas), theory, "-", color=color, lw=1.2,
                     label=f"{label + ': ' if label else ''}linear theory")
        for key, marker, what in (("first_plateau_length", "o", "first plateau length"),
                                  ("one_cluster_time", "^", "time to one cluster")):
            v = [(float(xpos(b)) + shift, s[key]) for b in betas for s in rows[b]
                 if s.get(key)]
            if v:
                ax3.plot(*zip(*v, strict=True), marker, color=color, ms=4, alpha=0.6,
                         mfc="none" if marker == "o" else color,
                         label=f"{label + ': ' if label else ''}{what}")
    ax1.set_xlabel(r"$\beta$")
    ax1.set_ylabel("clusters in the first metastable plateau")
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3)
    ax1.set_title(f"mode selection ({len(runs)} runs, {len(groups)} series)")
    ax2.set_yscale("log")
    ax2.set_xlabel(r"$\beta$")
    unit = base.get("model", {}).get("time_unit", "raw")
    ax2.set_ylabel(f"exit time from uniform ({unit} time)")
    ax2.set_title("exit time (TV distance > threshold)")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3, which="both")
    ax3.set_yscale("log")
    ax3.set_xlabel(r"$\beta$")
    ax3.set_ylabel(f"{unit} time")
    ax3.set_title("metastability: plateau length and time to one cluster")
    if ax3.lines:
        ax3.legend(fontsize=7)
    ax3.grid(alpha=0.3, which="both")
    if not np.all(np.isfinite(all_b)):
        for ax in (ax1, ax2, ax3):
            ticks = [t for t in ax.get_xticks() if lo_b - 1 <= t <= hi_b + 0.5]
            ax.set_xticks([*ticks, inf_x], [f"{t:g}" for t in ticks] + [r"$\infty$"])
    fig.tight_layout()
    target = Path(fig_dir) if fig_dir else out
    return [save(fig, target / "sweep.png")]
