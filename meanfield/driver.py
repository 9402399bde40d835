"""The integration driver: config -> domain's run adapter -> HDF5 file, with checkpoints,
stop rules and resume.

The stepping loop is ``solvers.stepping.march``; this module is its file handler: it
appends diagnostics and snapshots, publishes checkpoints, and applies the stop rules
(``STOP_RULES``, a list of predicates on the diagnostics).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meanfield import config as config_mod
from meanfield.domains import get as get_domain
from meanfield.io import storage
from meanfield.schedule import targets
from meanfield.theory.errors import InputError
from solvers.stepping import SolverError, march

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


def unresolved_rule(cfg: dict, t: float, diag: dict) -> str | None:
    """Stop once a spectral solution reports it is no longer resolved (stop.unresolved)."""
    if cfg["stop"].get("unresolved", False) and "resolved" in diag and not diag["resolved"]:
        return (f"stopped at t = {t:.6g}: no longer resolved (spectral tail fraction "
                f"{diag.get('tail_fraction', float('nan')):.2e}); raise lmax, or set "
                "stop.unresolved = false")
    return None


def ebar_rule(cfg: dict, t: float, diag: dict) -> str | None:
    """Stop once Ebar exceeds stop.ebar_above (every system of a batch)."""
    level = cfg["stop"]["ebar_above"]
    if level > 0 and "ebar" in diag and np.min(diag["ebar"]) > level:
        return f"stopped at Ebar = {np.min(diag['ebar']):.4f} > {level}"
    return None


#: Stop rules: predicates (cfg, t, diagnostics) -> message or None, applied at every record.
STOP_RULES = [unresolved_rule, ebar_rule]


def execute(cfg: dict, cfg_text: str, *, resume: bool = False, overwrite: bool = False,
            quiet: bool = False) -> RunSummary:
    """Run (or resume) one configuration to its HDF5 file. See io.storage for safety."""
    action = plan(cfg, cfg_text, resume=resume, overwrite=overwrite)
    final = Path(cfg["output"]["path"])
    if action == "skip":
        return RunSummary(str(final), "skipped")
    if action == "resume":
        _, _, text = storage.read_checkpoint(storage.checkpoint_path(final))
        cfg = config_mod.from_text(text)
        cfg["output"]["path"] = str(final)
        cfg_text = text
    # build the solver and the schedule first: bad parameters fail before a file is touched
    problem = get_domain(cfg["model"]["domain"]).problem(cfg)
    t_end, next_target = targets(cfg, problem.gamma_max)
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
                     resumed=action == "resume", t_end=t_end, next_target=next_target)
    finally:
        writer.close()


def _loop(problem, writer, cfg, state, stats, t, index, final, quiet, resumed, t_end,
          next_target) -> RunSummary:
    stop, out = cfg["stop"], cfg["output"]
    start = time.monotonic()
    deadline = start + stop["wall_seconds"] if stop["wall_seconds"] > 0 else None
    last_ckpt = [start]
    bar = _progress(t_end, t, quiet)
    diag: dict[str, Any] = {}
    current = {"state": state, "t": t, "index": index}

    def checkpoint(status="running"):
        arrays, scalars = problem.save_state(current["state"], stats)
        scalars.update({"t": current["t"], "index": current["index"]})
        writer.checkpoint(final, arrays, scalars, status)

    def summary(status, message=""):
        mode = diag.get("dominant_mode")
        ebar = diag.get("ebar")
        return RunSummary(str(final), status, message, current["t"], stats.steps,
                          time.monotonic() - start, resumed,
                          None if mode is None else int(np.ravel(mode)[0]),
                          None if ebar is None else float(np.min(ebar)))

    def handler(i, t_now, s, d, target):
        diag.clear()
        diag.update(d)
        writer.append_diagnostics(t_now, d)
        snap = target.snapshot or t_now >= t_end
        if snap:
            writer.append_snapshot(t_now, problem.snapshot(s))
        current.update(state=s, t=t_now, index=i + 1)
        if bar is not None:
            bar.update(t_now - bar.n)
            mode = d.get("dominant_mode")
            mode = int(np.ravel(mode)[0]) if mode is not None else "-"
            bar.set_postfix_str(f"dt={stats.last_dt:.2e} mode={mode}", refresh=False)
        for rule in STOP_RULES:
            message = rule(cfg, t_now, d)
            if message is not None:
                if not snap:
                    writer.append_snapshot(t_now, problem.snapshot(s))
                return message
        if time.monotonic() - last_ckpt[0] >= out["checkpoint_seconds"]:
            checkpoint()
            last_ckpt[0] = time.monotonic()
        return None

    try:
        res = march(problem, state, t, stats, next_target, handler, index=index,
                    deadline=deadline)
        if res.status == "interrupted":
            # resume exactly where stepping stopped (possibly inside an output interval):
            # the state and the step statistics belong together
            current.update(state=res.state, t=res.t, index=res.index)
            checkpoint("interrupted")
            return _interrupted(writer, final, summary)
        writer.finish(final, "complete", res.message)
        if res.status == "stopped":
            return summary("complete", res.message)
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
