"""The integration driver: config -> solver -> HDF5 file, with checkpoints and resume."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meanfield import config as config_mod
from meanfield import storage
from meanfield.errors import InputError
from meanfield.problems import make_problem, output_schedule, time_scale
from solvers.integrators import SolverError

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: resumable, run again


@dataclass
class RunSummary:
    path: str
    status: str          # complete | failed | interrupted | skipped
    message: str = ""
    t: float = 0.0
    steps: int = 0
    wall_seconds: float = 0.0
    resumed: bool = False
    dominant_mode: int | None = None
    ebar: float | None = None

    def line(self) -> str:
        if self.status == "skipped":
            return f"skipped: {self.path} is already complete (use --overwrite to run again)"
        parts = [f"{self.status}: {self.path}", f"t = {self.t:.6g}", f"steps = {self.steps}",
                 f"wall = {self.wall_seconds:.1f} s"]
        if self.dominant_mode is not None:
            parts.append(f"dominant mode {self.dominant_mode}")
        if self.ebar is not None:
            parts.append(f"Ebar {self.ebar:.4f}")
        if self.resumed:
            parts.append("(resumed)")
        line = ", ".join(parts)
        if self.message:
            line += f" -- {self.message}"
        return line


def _remove_outputs(final: Path) -> None:
    for p in (final, storage.partial_path(final), storage.checkpoint_path(final)):
        p.unlink(missing_ok=True)


def same_config(stored_text: str, cfg: dict) -> bool:
    """Whether a stored config equals ``cfg`` by value (keys added to the schema since the
    file was written take their defaults; the output path is not compared)."""
    try:
        stored = config_mod.from_text(stored_text)
    except (InputError, ValueError):
        return False
    a, b = config_mod.flat(stored), config_mod.flat(cfg)
    a.pop("output.path", None)
    b.pop("output.path", None)
    return a == b


def plan(cfg: dict, cfg_text: str, *, resume: bool = False, overwrite: bool = False) -> str:
    """Decide what to do with the output path: 'fresh', 'resume' or 'skip'.

    Raises InputError (nothing written) for a foreign file, a checkpoint of another
    configuration, or ``resume`` without anything to resume.
    """
    final = Path(cfg["output"]["path"])
    ckpt = storage.checkpoint_path(final)
    status = storage.file_status(final)
    if overwrite:
        return "fresh"
    if status == "complete":
        import h5py

        with h5py.File(final, "r") as f:
            stored = str(f.attrs.get("config_text", ""))
        if not same_config(stored, cfg):
            raise InputError("output.path", "holds a complete run of a different "
                             "configuration; use --overwrite or another output path", str(final))
        return "skip"
    if ckpt.exists():
        try:
            _, _, text = storage.read_checkpoint(ckpt)
        except (OSError, KeyError):
            raise InputError("output.path", "has an unreadable checkpoint; use --overwrite",
                             str(ckpt)) from None
        if not resume and not same_config(text, cfg):
            raise InputError("output.path", "has a checkpoint of a different configuration; "
                             "use --overwrite or another output path", str(final))
        return "resume"
    if resume:
        raise InputError("--resume", "no checkpoint to resume and no complete run at this path",
                         str(final))
    return "fresh"


def execute(cfg: dict, cfg_text: str, *, resume: bool = False, overwrite: bool = False,
            quiet: bool = False) -> RunSummary:
    """Run (or resume) one configuration to its HDF5 file. See module storage for safety."""
    action = plan(cfg, cfg_text, resume=resume, overwrite=overwrite)
    final = Path(cfg["output"]["path"])
    if action == "skip":
        return RunSummary(str(final), "skipped")
    if action == "resume":
        _, _, text = storage.read_checkpoint(storage.checkpoint_path(final))
        cfg = config_mod.from_text(text)
        cfg["output"]["path"] = str(final)
        cfg_text = text
    problem = make_problem(cfg)  # validates solver parameters before any file is touched
    out = cfg["output"]
    if action == "fresh":
        state = problem.initial_state()
        _remove_outputs(final)
        stats = problem.new_stats()
        t, index = 0.0, 0
        attrs = storage.base_attrs(config_mod.flat(cfg), cfg_text, problem.attrs())
        writer = storage.RunWriter.create(
            storage.partial_path(final), attrs, problem.coords, problem.field,
            problem.field_dims, problem.field_attrs, problem.diag_specs,
            out["compression"], out["compression_level"], problem.static)
    else:
        live = storage.restore_live_from_checkpoint(final)
        writer = storage.RunWriter.reopen(live, out["compression"], out["compression_level"])
        arrays, scalars = {k: writer.f["checkpoint"][k][()] for k in writer.f["checkpoint"]}, \
            dict(writer.f["checkpoint"].attrs)
        state, stats = problem.load_state(arrays, scalars)
        t, index = float(scalars["t"]), int(scalars["index"])
        writer.set_status("running")
    try:
        return _loop(problem, writer, cfg, state, stats, t, index, final, quiet,
                     resumed=action == "resume")
    finally:
        writer.close()


def _loop(problem, writer, cfg, state, stats, t, index, final, quiet, resumed) -> RunSummary:
    tcfg, stop, out = cfg["time"], cfg["stop"], cfg["output"]
    t_end = tcfg["t_end"] * time_scale(cfg, problem.gamma_max)
    schedule = output_schedule(cfg, problem.gamma_max)
    start = time.monotonic()
    deadline = start + stop["wall_seconds"] if stop["wall_seconds"] > 0 else None
    last_ckpt = start
    bar = _progress(t_end, t, quiet)
    diag: dict[str, Any] = {}

    def checkpoint(status="running"):
        arrays, scalars = problem.save_state(state, stats)
        scalars.update({"t": t, "index": index})
        writer.checkpoint(final, arrays, scalars, status)

    def summary(status, message=""):
        mode = diag.get("dominant_mode", diag.get("dominant_degree"))
        ebar = diag.get("ebar")
        return RunSummary(str(final), status, message, t, stats.steps,
                          time.monotonic() - start, resumed,
                          None if mode is None else int(np.ravel(mode)[0]),
                          None if ebar is None else float(np.min(ebar)))

    try:
        if schedule is None:  # every n steps
            every = tcfg["every_steps"]
            sub = max(1, every // tcfg["diagnostics_per_output"])
            n_targets = None
        else:
            times, mask = schedule
            n_targets = len(times)
        while True:
            if schedule is None:
                if index > 0 and t >= t_end:
                    break
                if index == 0:
                    target_steps = 0
                else:
                    target_steps = index * sub
                    state, t = problem.advance(state, t, t_end, stats, deadline, target_steps)
                snap = index % (every // sub) == 0 or t >= t_end
                if stats.steps < target_steps and t < t_end:  # deadline
                    checkpoint("interrupted")
                    return _interrupted(writer, final, summary)
            else:
                if index >= n_targets:
                    break
                target = float(times[index])
                state, t = problem.advance(state, t, target, stats, deadline)
                if t < target:
                    checkpoint("interrupted")
                    return _interrupted(writer, final, summary)
                snap = bool(mask[index])
            diag = problem.diagnostics(state, stats)
            writer.append_diagnostics(t, diag)
            if snap:
                writer.append_snapshot(t, problem.snapshot(state))
            index += 1
            if bar is not None:
                bar.update(t - bar.n)
                mode = diag.get("dominant_mode", diag.get("dominant_degree"))
                mode = int(np.ravel(mode)[0]) if mode is not None else "-"
                bar.set_postfix_str(f"dt={stats.last_dt:.2e} mode={mode}", refresh=False)
            if deadline is not None and time.monotonic() > deadline and index < (
                    n_targets or index + 1):
                checkpoint("interrupted")
                return _interrupted(writer, final, summary)
            if stop["unresolved"] and "resolved" in diag and not diag["resolved"]:
                if not snap:
                    writer.append_snapshot(t, problem.snapshot(state))
                msg = (f"stopped at t = {t:.6g}: no longer resolved (spectral tail fraction "
                       f"{diag.get('tail_fraction', float('nan')):.2e}); raise lmax, or set "
                       "stop.unresolved = false")
                writer.finish(final, "complete", msg)
                return summary("complete", msg)
            if stop["ebar_above"] > 0 and np.min(diag.get("ebar", 0)) > stop["ebar_above"]:
                if not snap:
                    writer.append_snapshot(t, problem.snapshot(state))
                writer.finish(final, "complete",
                              f"stopped at Ebar = {np.min(diag['ebar']):.4f} > "
                              f"{stop['ebar_above']}")
                return summary("complete", f"stopped early: Ebar > {stop['ebar_above']}")
            now = time.monotonic()
            if now - last_ckpt >= out["checkpoint_seconds"]:
                checkpoint()
                last_ckpt = time.monotonic()
        writer.finish(final, "complete")
        return summary("complete")
    except SolverError as exc:
        writer.finish(final, "failed", str(exc))
        return summary("failed", str(exc))
    finally:
        if bar is not None:
            bar.close()


def _interrupted(writer, final, summary) -> RunSummary:
    live = Path(writer.f.filename)
    writer.close()
    live.unlink(missing_ok=True)
    return summary("interrupted", f"wall-clock budget reached; resume with: meanfield run "
                   f"--resume {final}")


def _progress(total: float, t0: float, quiet: bool):
    if quiet or not sys.stderr.isatty() or os.environ.get("MEANFIELD_NO_PROGRESS"):
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, initial=t0, unit="t", file=sys.stderr, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| t={n:.4g}/{total:.4g} [{elapsed}<{remaining}{postfix}]")
    return bar


def run_cli(config_path: str | None, sets: list[str], output: str | None, *, resume: str | None,
            overwrite: bool, quiet: bool) -> int:
    """``meanfield run``: returns the exit code."""
    if resume is not None:
        final = Path(resume)
        ckpt = storage.checkpoint_path(final)
        if storage.file_status(final) == "complete" and not overwrite:
            print(RunSummary(str(final), "skipped").line())
            return 0
        if not ckpt.exists():
            raise InputError("--resume", "no checkpoint to resume at this path", str(final))
        _, _, text = storage.read_checkpoint(ckpt)
        cfg = config_mod.from_text(text)
        cfg["output"]["path"] = str(final)
        summary = execute(cfg, text, resume=True, overwrite=False, quiet=quiet)
    else:
        cfg, text = config_mod.resolve(config_path, sets, output)
        summary = execute(cfg, text, overwrite=overwrite, quiet=quiet)
    print(summary.line())
    if summary.status == "failed":
        return 1
    if summary.status == "interrupted":
        return EXIT_INTERRUPTED
    return 0
