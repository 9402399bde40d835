"""Phase diagrams in (t, beta) of many particle systems (seed 001 Figs. 2-4): ``meanfield phase``.

For every beta of a grid, R independent systems of n tokens on S^{d-1} (i.i.d. uniform initial
tokens from ``seed``, the same for every beta, so neighbouring betas differ only by beta) are
advanced by the papers' rule (``euler-unprojected``: x <- (x + dt u)/|x + dt u|, u the attention
average, self term included; or projected ``euler``) with the fused kernels of
``solvers.particles.fused``, steps of ``dt`` that land on every output time. Statistics per
(beta, t):

* ``P``: the fraction of ordered pairs i != j with <x_i, x_j> >= 1 - delta, averaged over the
  realisations: P(<x_1, x_2> >= 1 - delta) of seed 001 by permutation symmetry;
* ``cluster_fraction``: the distribution of the cluster count (tokens linked by
  <x_i, x_j> >= 1 - cluster_delta), with its median and 10/90 % quantiles;
* ``ebar``: the mean of Ebar = n^{-2} sum_ij e^{beta(<x_i, x_j> - 1)}.

Q, K, V: the identity or one of seed 001 Fig. 4's ensembles (``meanfield.theory.attention.
phase_ensemble``), one draw per realisation (``draw = "realisation"``) or one for the run.
The theory layer's Gamma_{inf, delta} (``meanfield.theory.metastability.gamma_curve``, the
orthogonal-start hitting time) is stored with the diagram and drawn over it.

Work is split by beta: each beta is one task for the sweep executors (in-process, process pool,
Dask), writes its statistics to ``OUT.parts/beta-<i>.npz`` atomically, and a re-run skips the
betas already done (resumable per beta). When all are done the HDF5 file OUT is written
atomically, with beta and time as dimension scales (xarray reads it directly) and the whole
configuration, conventions, package version and seed as attributes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meanfield.io.atomic import atomic_path
from meanfield.ranges import parse_range
from meanfield.theory.errors import InputError

KIND = "phase-diagram"
RULES = ("euler-unprojected", "euler")
DRAWS = ("realisation", "run")


@dataclass
class PhaseConfig:
    """The ``[phase]`` section (every key also a flag of ``meanfield phase``)."""

    n: int = 32                 # tokens per system
    dim: int = 2                # tokens on S^{dim - 1}
    model: str = "sa"           # sa | usa
    time_unit: str = "raw"      # raw | scaled (USA: kernel e^{beta(t - 1)})
    betas: str = "0.1:9.05:0.1"  # START:STOP:STEP (STOP excluded) or a comma list
    t_end: float = 30.0
    outputs: int = 200          # output times linspace(0, t_end, outputs)
    dt: float = 0.1             # Euler step (the papers' 0.1)
    rule: str = "euler-unprojected"
    realisations: int = 1024
    delta: float = 1e-3         # P: <x_i, x_j> >= 1 - delta
    cluster_delta: float = 1e-4  # cluster links: <x_i, x_j> >= 1 - cluster_delta
    ensemble: str = "identity"  # see meanfield.theory.attention.PHASE_ENSEMBLES
    draw: str = "realisation"   # one matrix draw per realisation, or one for the run
    seed: int = 0
    samples: int = 4            # trajectories stored for the first realisations (n d <= 4096)

    def beta_values(self) -> np.ndarray:
        text = str(self.betas)
        try:
            vals = parse_range(text, "phase.betas") if ":" in text else [
                float(v) for v in text.split(",")]
        except ValueError:
            raise InputError("phase.betas", "must be START:STOP:STEP or a comma list of "
                             "numbers", text) from None
        b = np.asarray(vals, float)
        if b.size < 1 or not np.all(np.isfinite(b)) or np.any(b < 0):
            raise InputError("phase.betas", "must be finite numbers >= 0", text)
        return b

    def times(self) -> np.ndarray:
        return np.linspace(0.0, self.t_end, self.outputs)

    def check(self) -> PhaseConfig:
        from meanfield.theory.attention import PHASE_ENSEMBLES

        def need(ok: bool, key: str, allowed: str, value: Any) -> None:
            if not ok:
                raise InputError(f"phase.{key}", allowed, value)

        need(isinstance(self.n, int) and self.n >= 2, "n", "must be an integer >= 2", self.n)
        need(isinstance(self.dim, int) and self.dim >= 2, "dim", "must be an integer >= 2",
             self.dim)
        need(self.model in ("sa", "usa"), "model", "must be sa or usa", self.model)
        need(self.time_unit in ("raw", "scaled") and (self.model == "usa" or
                                                      self.time_unit == "raw"),
             "time_unit", "must be raw, or scaled with model usa", self.time_unit)
        need(math.isfinite(self.t_end) and self.t_end > 0, "t_end", "must be a number > 0",
             self.t_end)
        need(isinstance(self.outputs, int) and self.outputs >= 2, "outputs",
             "must be an integer >= 2", self.outputs)
        need(math.isfinite(self.dt) and self.dt > 0, "dt", "must be a number > 0", self.dt)
        need(self.rule in RULES, "rule", f"must be one of {', '.join(RULES)}", self.rule)
        need(isinstance(self.realisations, int) and self.realisations >= 1, "realisations",
             "must be an integer >= 1", self.realisations)
        need(0 < self.delta < 2, "delta", "must be in (0, 2)", self.delta)
        need(0 < self.cluster_delta < 2, "cluster_delta", "must be in (0, 2)",
             self.cluster_delta)
        need(self.ensemble in PHASE_ENSEMBLES, "ensemble",
             f"must be one of {', '.join(PHASE_ENSEMBLES)}", self.ensemble)
        need(self.draw in DRAWS, "draw", f"must be one of {', '.join(DRAWS)}", self.draw)
        need(isinstance(self.seed, int) and self.seed >= 0, "seed", "must be an integer >= 0",
             self.seed)
        need(isinstance(self.samples, int) and self.samples >= 0, "samples",
             "must be an integer >= 0", self.samples)
        b = self.beta_values()
        if self.model == "usa" and self.time_unit == "raw" and b.max() > 700:
            raise InputError("phase.betas", "raw USA overflows beyond beta ~ 700: use "
                             "time_unit = 'scaled'", float(b.max()))
        return self

    def text(self) -> str:
        """The configuration as a TOML [phase] section (stored in the file)."""
        lines = ["[phase]"]
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            lines.append(f"{f.name} = {json.dumps(v)}")
        return "\n".join(lines) + "\n"

    def digest(self) -> str:
        """Identifies the numbers a part file holds (everything but ``samples``)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "samples"}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | None, sets: dict[str, Any]) -> PhaseConfig:
    """[phase] from a TOML file (optional), then the flags; unknown keys are errors."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError("CONFIG", "must be an existing TOML file", path)
        try:
            doc = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError("CONFIG", f"is not valid TOML ({exc})", path) from None
        extra = set(doc) - {"phase"}
        if extra:
            raise InputError(sorted(extra)[0], "unknown section; a phase config has only "
                             "[phase]")
        values.update(doc.get("phase", {}))
    values.update({k: v for k, v in sets.items() if v is not None})
    names = {f.name: f for f in dataclasses.fields(PhaseConfig)}
    for k, v in values.items():
        if k not in names:
            raise InputError(f"phase.{k}", f"unknown key; allowed: {', '.join(names)}")
        default = getattr(PhaseConfig, k)
        if isinstance(default, bool) or (isinstance(default, int) and (
                isinstance(v, bool) or not isinstance(v, int))):
            raise InputError(f"phase.{k}", "must be an integer", v)
        if isinstance(default, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"phase.{k}", "must be a number", v)
            values[k] = float(v)
        if isinstance(default, str):
            if isinstance(v, list):
                v = ",".join(str(x) for x in v)
            values[k] = str(v)
    return PhaseConfig(**values).check()


# ---------------------------------------------------------------------------- the tasks
@dataclass
class BetaTask:
    """One beta of a phase diagram (the unit of work of the sweep executors)."""

    name: str
    params: dict[str, Any]
    path: str                   # the part file
    config: dict[str, Any]
    index: int


def initial_tokens(cfg: PhaseConfig) -> np.ndarray:
    """i.i.d. uniform tokens (R, n, d) from ``seed`` (normalised Gaussians)."""
    x = np.random.default_rng([cfg.seed, 0]).standard_normal(
        (cfg.realisations, cfg.n, cfg.dim))
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def matrices(cfg: PhaseConfig) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(B, V) per realisation (R, d, d), one pair for the run (d, d), or (None, None)."""
    from meanfield.theory.attention import phase_ensemble

    if cfg.ensemble == "identity":
        return None, None
    rng = np.random.default_rng([cfg.seed, 1])
    if cfg.draw == "run":
        return phase_ensemble(cfg.ensemble, cfg.dim, rng)
    pairs = [phase_ensemble(cfg.ensemble, cfg.dim, rng) for _ in range(cfg.realisations)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def beta_task(task: BetaTask) -> dict[str, Any]:
    """Compute one beta and write its part file; never raises (a failed result instead)."""
    start = time.perf_counter()
    out = {"name": task.name, "params": task.params, "path": task.path}
    try:
        import multiprocessing

        if multiprocessing.parent_process() is not None:   # pool worker: one thread each
            import numba

            numba.set_num_threads(1)
        cfg = PhaseConfig(**task.config)
        stats = compute_beta(cfg, float(task.params["beta"]))
        with atomic_path(task.path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, digest=cfg.digest(), **stats)
        out.update(status="complete", wall_seconds=time.perf_counter() - start)
    except Exception as exc:  # recorded per beta, the others go on
        out.update(status="failed", message=f"{type(exc).__name__}: {exc}")
    return out


def compute_beta(cfg: PhaseConfig, beta: float) -> dict[str, np.ndarray]:
    """Statistics of one beta: P (T,), cluster-count fractions (T, n + 1), mean Ebar (T,),
    and the sample trajectories (samples, T, n, d)."""
    from solvers.particles.fused import run_batch

    times = cfg.times()
    x0 = initial_tokens(cfg)
    b, v = matrices(cfg)
    kw = {"model": cfg.model, "rule": cfg.rule, "delta": cfg.delta,
          "cluster_delta": cfg.cluster_delta, "B": b, "V": v, "time_unit": cfg.time_unit}
    res = run_batch(x0, np.full(cfg.realisations, beta), times, cfg.dt, **kw)
    counts = res["clusters"]                                       # (R, T)
    hist = np.stack([np.bincount(c, minlength=cfg.n + 1) for c in counts.T]) / counts.shape[0]
    out = {"p": res["p"].mean(axis=0), "cluster_fraction": hist,
           "ebar": res["ebar"].mean(axis=0), "p_each": res["p"][: cfg.samples]}
    k = min(cfg.samples, cfg.realisations) if cfg.n * cfg.dim <= 4096 else 0
    traj = np.empty((k, times.size, cfg.n, cfg.dim))
    if k:
        x = x0[:k].copy()
        traj[:, 0] = x
        sub = {**kw, "B": None if b is None else (b[:k] if b.ndim == 3 else b),
               "V": None if v is None else (v[:k] if v.ndim == 3 else v)}
        for o in range(1, times.size):
            x = run_batch(x, np.full(k, beta), [times[o] - times[o - 1]], cfg.dt, **sub)["x"]
            traj[:, o] = x
    out["samples"] = traj
    return out


# ---------------------------------------------------------------------------- the driver
def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def run_phase(cfg: PhaseConfig, out_path: str, *, jobs: int | None = None,
              scheduler: str | None = None, dask_local: int | None = None,
              overwrite: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Compute (or resume) the diagram and write OUT; returns a summary dict."""
    from meanfield.io import locks
    from meanfield.sweep import DaskExecutor, InProcess, ProcessPool, check_writable

    out = Path(out_path)
    if out.suffix not in (".h5", ".hdf5"):
        raise InputError("-o", "must be an .h5 file", out_path)
    if jobs is not None and jobs < 1:
        raise InputError("--jobs", "must be an integer >= 1", jobs)
    check_writable(out)
    if out.exists() and not overwrite:
        raise InputError("-o", "exists; use --overwrite to compute it again", out_path)
    betas = cfg.beta_values()
    parts = parts_dir(out)
    tasks, done_before = [], 0
    digest = cfg.digest()
    for i, b in enumerate(betas):
        path = parts / f"beta-{i:04d}.npz"
        if path.exists() and not overwrite and _part_ok(path, digest):
            done_before += 1
            continue
        tasks.append(BetaTask(f"beta={b:g}", {"beta": float(b)}, str(path),
                              dataclasses.asdict(cfg), i))
    if scheduler is not None or dask_local is not None:
        executor = DaskExecutor(scheduler, dask_local)
    elif (jobs or 1) == 1:
        executor = InProcess()
    else:
        executor = ProcessPool(jobs)
    failed: list[dict] = []
    start = time.perf_counter()
    try:
        with locks.hold(out.with_name(out.name + ".lock"), f"the phase diagram {out}", "-o"):
            parts.mkdir(parents=True, exist_ok=True)
            bar = None
            if not quiet and sys.stderr.isatty() and not os.environ.get(
                    "MEANFIELD_NO_PROGRESS"):
                from tqdm import tqdm

                bar = tqdm(total=len(betas), initial=done_before, unit="beta",
                           file=sys.stderr, dynamic_ncols=True)

            def done(res: dict) -> None:
                if res["status"] != "complete":
                    failed.append(res)
                if bar is not None:
                    bar.update(1)

            try:
                executor.map(tasks, done, fn=beta_task)
            finally:
                if bar is not None:
                    bar.close()
            wall = time.perf_counter() - start
            if not failed:
                write_file(cfg, out, betas, parts, wall)
                shutil.rmtree(parts, ignore_errors=True)
    finally:
        executor.close()
    return {"path": str(out), "betas": int(betas.size), "computed": len(tasks) - len(failed),
            "resumed": done_before, "failed": failed, "wall_seconds": wall}


def _part_ok(path: Path, digest: str) -> bool:
    try:
        with np.load(path) as z:
            return str(z["digest"]) == digest
    except (OSError, ValueError, KeyError):
        return False


def write_file(cfg: PhaseConfig, out: Path, betas: np.ndarray, parts: Path,
               wall: float) -> None:
    """Assemble the parts into OUT (atomic), beta and time as dimension scales."""
    import h5py

    from meanfield import __version__
    from meanfield.domains.base import CONVENTIONS
    from meanfield.theory.metastability import gamma_curve

    times = cfg.times()
    loaded = [np.load(parts / f"beta-{i:04d}.npz") for i in range(betas.size)]
    p = np.stack([z["p"] for z in loaded])
    frac = np.stack([z["cluster_fraction"] for z in loaded])          # (beta, T, n + 1)
    ebar = np.stack([z["ebar"] for z in loaded])
    samples = np.stack([z["samples"] for z in loaded])                # (beta, k, T, n, d)
    for z in loaded:
        z.close()
    cdf = np.cumsum(frac, axis=-1)
    q = {name: np.argmax(cdf >= level - 1e-12, axis=-1).astype(float)
         for name, level in (("clusters_q10", 0.1), ("clusters_median", 0.5),
                             ("clusters_q90", 0.9))}
    gamma = gamma_curve(betas, cfg.n, cfg.delta, cfg.model) if cfg.time_unit == "raw" else \
        np.full(betas.size, np.nan)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        dims = {"beta": (betas, "inverse temperature"), "time": (times, "time (the run's "
                                                                  "unit)"),
                "count": (np.arange(cfg.n + 1), "number of clusters"),
                "sample": (np.arange(samples.shape[1]), "realisation (the first ones)"),
                "particle": (np.arange(cfg.n), "token index"),
                "component": (np.arange(cfg.dim), "ambient axis")}
        for name, (vals, long) in dims.items():
            ds = f.create_dataset(name, data=vals)
            ds.attrs["long_name"] = long
            ds.make_scale(name)

        def var(name, data, axes, long):
            ds = f.create_dataset(name, data=data, compression="gzip" if data.size > 4096
                                  else None)
            ds.attrs["long_name"] = long
            for i, a in enumerate(axes):
                ds.dims[i].attach_scale(f[a])

        bt = ("beta", "time")
        var("P", p, bt, f"P(<x_1, x_2> >= 1 - delta), delta = {cfg.delta:g}: fraction of "
            "ordered pairs i != j, mean over realisations")
        var("cluster_fraction", frac, ("beta", "time", "count"), "fraction of realisations "
            f"with that many clusters (links <x_i, x_j> >= 1 - {cfg.cluster_delta:g})")
        for name, arr in q.items():
            var(name, arr, bt, f"{name.split('_')[1]} of the cluster count over realisations")
        var("ebar", ebar, bt, "mean of Ebar = n^-2 sum_ij e^{beta(<x_i, x_j> - 1)}")
        var("gamma_time", gamma, ("beta",), "Gamma_{inf, delta}: time t* at which tokens "
            "started orthonormal reach <x_i, x_j> = 1 - delta (seed 001 (4.13))")
        var("trajectory", samples, ("beta", "sample", "time", "particle", "component"),
            "positions of the first realisations (unit vectors)")
        f.attrs.update({"kind": KIND, "config_text": cfg.text(), "version": __version__,
                        "seed": cfg.seed, "status": "complete", "wall_seconds": wall,
                        "conventions": CONVENTIONS + "; phase diagrams: meanfield/phase.py",
                        "n": cfg.n, "dim": cfg.dim, "model": cfg.model,
                        "ensemble": cfg.ensemble, "delta": cfg.delta,
                        "integrator": f"{cfg.rule}, dt = {cfg.dt:g} (landing on outputs)"})


def is_phase_file(path: str | os.PathLike) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("kind") == KIND
    except OSError:
        return False


# ---------------------------------------------------------------------------- analysis
def analyze_phase(path: str | os.PathLike) -> dict[str, Any]:
    """Per beta: the first time P >= 1/2 (the transition), Gamma's t*, and the metastable
    band (the outputs with 0.05 < P < 0.95) with the modal cluster count there."""
    import h5py

    with h5py.File(path, "r") as f:
        betas, times = f["beta"][()], f["time"][()]
        p, frac, gamma = f["P"][()], f["cluster_fraction"][()], f["gamma_time"][()]
        attrs = dict(f.attrs)
    rows = []
    for i, b in enumerate(betas):
        above = np.flatnonzero(p[i] >= 0.5)
        band = (p[i] > 0.05) & (p[i] < 0.95)
        modal = np.argmax(frac[i][band].mean(axis=0)) if band.any() else None
        rows.append({"beta": float(b), "t_half": float(times[above[0]]) if above.size else
                     None, "gamma_time": float(gamma[i]) if np.isfinite(gamma[i]) else None,
                     "band_fraction": float(band.mean()),
                     "band_modal_clusters": None if modal is None else int(modal)})
    return {"path": str(path), "kind": KIND, "n": int(attrs["n"]), "dim": int(attrs["dim"]),
            "model": str(attrs["model"]), "ensemble": str(attrs["ensemble"]),
            "delta": float(attrs["delta"]), "wall_seconds": float(attrs["wall_seconds"]),
            "rows": rows}


def summary_lines(res: dict[str, Any]) -> list[str]:
    lines = [f"phase diagram: n = {res['n']}, d = {res['dim']}, {res['model']}, "
             f"{res['ensemble']}, delta = {res['delta']:g} ({res['wall_seconds']:.1f} s)",
             f"{'beta':>7} {'t(P>=1/2)':>10} {'Gamma t*':>10} {'band':>6} {'clusters':>8}"]

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    for r in res["rows"]:
        lines.append(f"{r['beta']:7.3g} {fmt(r['t_half'], '10.4g')} "
                     f"{fmt(r['gamma_time'], '10.4g')} {r['band_fraction']:6.2f} "
                     f"{fmt(r['band_modal_clusters'], '8d')}")
    return lines


# ---------------------------------------------------------------------------- figures
def phase_figure(paths: list[str], out: str | os.PathLike, title: str | None = None) -> str:
    """seed 001 Fig. 2: P over (t, beta), one panel per file, Gamma_{inf, delta} in white."""
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(paths), figsize=(3.6 * len(paths) + 0.8, 3.4),
                             squeeze=False, constrained_layout=True)
    mesh = None
    for ax, path in zip(axes[0], paths, strict=True):
        with h5py.File(path, "r") as f:
            b, t, p, g = f["beta"][()], f["time"][()], f["P"][()], f["gamma_time"][()]
            d, ens = int(f.attrs["dim"]), str(f.attrs["ensemble"])
        mesh = ax.pcolormesh(t, b, p, vmin=0, vmax=1, cmap="Blues", shading="nearest")
        ok = np.isfinite(g) & (g <= t[-1])
        ax.plot(g[ok], b[ok], color="tab:red", lw=1.6, label=r"$\Gamma_{\infty,\delta}$")
        ax.set_xlabel("t")
        ax.set_title(f"d = {d}" + ("" if ens == "identity" else f", {ens}"))
    axes[0][0].set_ylabel(r"$\beta$")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.colorbar(mesh, ax=axes[0].tolist(), label=r"$P(\langle x_1,x_2\rangle\geq 1-\delta)$")
    if title:
        fig.suptitle(title)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return str(out)


def plot_phase(path: str | os.PathLike, out_dir: str | os.PathLike,
               zoom_betas: tuple[float, ...] = (4.0, 9.0),
               zoom_times: tuple[float, ...] = (2.5, 18.0, 30.0)) -> list[str]:
    """The diagram, and seed 001 Fig. 3: for the betas nearest ``zoom_betas``, sample token
    positions (circle) at ``zoom_times`` and the cluster-count distribution there."""
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(path).stem
    files = [phase_figure([str(path)], out / f"{stem}_phase.png")]
    with h5py.File(path, "r") as f:
        b, t = f["beta"][()], f["time"][()]
        frac, traj = f["cluster_fraction"][()], f["trajectory"][()]
        n = int(f.attrs["n"])
    zb = [int(np.argmin(np.abs(b - z))) for z in zoom_betas]
    zt = [int(np.argmin(np.abs(t - z))) for z in zoom_times if z <= t[-1] + 1e-9]
    if not zt:
        return files
    fig, axes = plt.subplots(len(zb), len(zt) + 1, figsize=(2.6 * (len(zt) + 1),
                                                            2.6 * len(zb)), squeeze=False,
                             constrained_layout=True)
    for r, i in enumerate(zb):
        for c, j in enumerate(zt):
            ax = axes[r][c]
            ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="0.7"))
            if traj.shape[1] and traj.shape[-1] >= 2:
                x = traj[i, 0, j]
                ax.scatter(x[:, 0], x[:, 1], s=14, color="tab:blue", zorder=3)
            ax.set_aspect("equal")
            ax.set_xlim(-1.15, 1.15)
            ax.set_ylim(-1.15, 1.15)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(rf"$\beta$ = {b[i]:.3g}, t = {t[j]:.3g}", fontsize=9)
        ax = axes[r][-1]
        for j in zt:
            ax.plot(np.arange(n + 1), frac[i, j], marker="o", ms=3, label=f"t = {t[j]:.3g}")
        ax.set_xlim(0.5, min(n, 12) + 0.5)
        ax.set_xlabel("clusters")
        ax.set_ylabel("fraction of realisations")
        ax.legend(fontsize=7)
    p = out / f"{stem}_zoom.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return [*files, str(p)]


# ---------------------------------------------------------------------------- CLI
FLAGS = {f.name: f for f in dataclasses.fields(PhaseConfig)}


def add_parser(sub) -> None:
    p = sub.add_parser("phase", help="phase diagram P(<x_1,x_2> >= 1-delta) over (t, beta) "
                       "of many particle systems (seed 001)",
                       description="Batched particle systems for every beta of a grid "
                       "(fused kernels), statistics per (beta, t), Gamma_{inf,delta} from the "
                       "theory; resumable per beta; --jobs / --dask-local / --scheduler as "
                       "for sweeps. Exit 0 complete, 1 some beta failed, 2 bad input.")
    p.add_argument("config", nargs="?", metavar="CONFIG.toml", help="a [phase] section")
    for name, f in FLAGS.items():
        default = f.default
        kind = str if isinstance(default, str) else type(default)
        p.add_argument(f"--{name.replace('_', '-')}", dest=f"phase_{name}", type=kind,
                       metavar=name.upper(), help=f"phase.{name} (default {default})")
    p.add_argument("-o", "--output", required=True, metavar="PATH.h5")
    p.add_argument("--jobs", type=int, help="processes (default 1: in-process, threads)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler")
    p.add_argument("--dask-local", type=int, metavar="N", help="a local Dask cluster")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cli)


def cli(args) -> int:
    sets = {name: getattr(args, f"phase_{name}") for name in FLAGS}
    cfg = load_config(args.config, sets)
    res = run_phase(cfg, args.output, jobs=args.jobs, scheduler=args.scheduler,
                    dask_local=args.dask_local, overwrite=args.overwrite, quiet=args.quiet)
    for r in res["failed"]:
        print(f"failed: {r['name']}: {r.get('message', '')}")
    if res["failed"]:
        print(f"phase {res['path']}: {len(res['failed'])} of {res['betas']} betas failed; "
              "the others are kept: run again to retry them")
        return 1
    print(f"phase {res['path']}: {res['betas']} betas ({res['computed']} computed, "
          f"{res['resumed']} resumed), {res['wall_seconds']:.1f} s")
    return 0
