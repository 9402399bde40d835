"""The integration driver: config -> domain's run adapter -> HDF5 file, with checkpoints,
stop rules and resume.

The stepping loop is ``solvers.stepping.march``; this module is its file handler: it
appends diagnostics and snapshots, publishes checkpoints, and applies the stop rules
(``STOP_RULES``, a list of predicates on the diagnostics).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meanfield import config as config_mod
from meanfield.domains import get as get_domain
from meanfield.io import locks, storage
from meanfield.schedule import targets
from meanfield.theory.errors import InputError
from solvers.stepping import SolverError, march

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: resumable, run again (wall-clock budget, SIGTERM)
EXIT_IO = 74           # EX_IOERR: a write failed (disk full); the last checkpoint is kept
EXIT_SIGINT = 130      # Ctrl-C: a checkpoint was written, resumable


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
    if diag.get("handoff_pending"):  # the grid hands its clusters to atoms instead
        return None
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


def single_cluster_rule(cfg: dict, t: float, diag: dict) -> str | None:
    """Stop once one atom holds the whole mass (stop.single_cluster): nothing moves after."""
    if (cfg["stop"].get("single_cluster") and int(np.max(diag.get("atoms", 0))) == 1
            and float(np.min(diag.get("atom_mass", 1.0))) >= 1.0 - 1e-9):
        return f"stopped at t = {t:.6g}: one cluster left (one atom holds the whole mass)"
    return None


#: Stop rules: predicates (cfg, t, diagnostics) -> message or None, applied at every record.
STOP_RULES = [unresolved_rule, ebar_rule, single_cluster_rule]


def execute(cfg: dict, cfg_text: str, *, resume: bool = False, overwrite: bool = False,
            quiet: bool = False, stop: StopRequest | None = None,
            wait: float = 0.0, adapt=None) -> RunSummary:
    """Run (or resume) one configuration to its HDF5 file. See io.storage for safety.

    Holds a lock on ``PATH.lock`` while it runs (a second writer gets InputError). A failed
    write raises :class:`~meanfield.io.storage.StorageError` after removing the live and
    temporary files; the last checkpoint is kept and resumable. ``stop`` (a
    :class:`StopRequest`) interrupts the run at the next step with a checkpoint; ``wait``
    seconds are allowed for another process to release the run file. ``adapt(problem)``,
    if given, is called on the run adapter before stepping (``meanfield.ensemble`` routes
    its ``advance`` through a shared batched stepper).
    """
    final = Path(cfg["output"]["path"])
    check_writable(final)
    with locks.hold(lock_path(final), str(final), "output.path", wait=wait):
        return _execute(cfg, cfg_text, final, resume=resume, overwrite=overwrite, quiet=quiet,
                        stop=stop, adapt=adapt)


def lock_path(final: Path) -> Path:
    return Path(f"{final}.lock")


def check_writable(final: Path) -> None:
    """InputError (nothing computed, nothing written) if the output folder is not writable."""
    folder = final.parent
    probe = folder
    while not probe.exists() and probe != probe.parent:  # creating it comes later
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(20, "not a folder")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise InputError("output.path", f"cannot write to the folder {folder} "
                         f"({exc.strerror or exc})", str(final)) from None


def estimated_bytes(problem, n_records: int | None, n_snapshots: int | None) -> int | None:
    """Free space a run needs: twice its uncompressed size (the live file and a checkpoint)."""
    if n_records is None or n_snapshots is None:
        return None
    snap = 8 * int(np.prod([problem.coords[d][0].shape[0] for d in problem.field_dims]))
    diag = 8 * sum(int(np.prod([problem.coords[d][0].shape[0] for d in dims] or [1]))
                   for dims, _dt, _a in problem.diag_specs.values())
    return int(2 * (n_snapshots * (snap + 8) + n_records * (diag + 8)) + (1 << 20))


def _execute(cfg, cfg_text, final, *, resume, overwrite, quiet, stop,
             adapt=None) -> RunSummary:
    action = plan(cfg, cfg_text, resume=resume, overwrite=overwrite)
    if action == "skip":
        return RunSummary(str(final), "skipped")
    if action == "resume":
        _, _, text = storage.read_checkpoint(storage.checkpoint_path(final))
        cfg = config_mod.from_text(text)
        cfg["output"]["path"] = str(final)
        cfg_text = text
    # build the solver and the schedule first: bad parameters fail before a file is touched
    problem = get_domain(cfg["model"]["domain"]).problem(cfg)
    if adapt is not None:
        adapt(problem)
    plan_ = targets(cfg, problem.gamma_max, problem.step_size)
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
            out["compression"], out["compression_level"], problem.static,
            problem.snapshot_specs, problem.event_specs)
    else:
        live, arrays, scalars = storage.restore_live_from_checkpoint(final)
        writer = storage.RunWriter.reopen(live, out["compression"], out["compression_level"])
        state, stats = problem.load_state(arrays, scalars)
        t, index = float(scalars["t"]), int(scalars["index"])
        writer.set_status("running")
    writer.estimated_bytes = estimated_bytes(problem, plan_.records, plan_.snapshots)
    try:
        return _loop(problem, writer, cfg, state, stats, t, index, final, quiet,
                     resumed=action == "resume", t_end=plan_.t_end, next_target=plan_.next,
                     stop=stop)
    except storage.StorageError as exc:
        writer.abandon(fatal=exc.fatal)
        storage.partial_path(final).unlink(missing_ok=True)
        Path(f"{storage.checkpoint_path(final)}.tmp").unlink(missing_ok=True)
        raise
    finally:
        writer.close()


class StopRequest:
    """A request to stop stepping: a wall-clock budget and/or a signal (SIGTERM, SIGINT).

    Passed to the stepping loop as its ``deadline`` (a callable); ``signal`` names the
    signal that asked, if any."""

    def __init__(self, wall_seconds: float = 0.0) -> None:
        self.deadline = time.monotonic() + wall_seconds if wall_seconds > 0 else None
        self.signal: str | None = None

    def __call__(self) -> bool:
        return self.signal is not None or (self.deadline is not None
                                           and time.monotonic() > self.deadline)

    def with_budget(self, wall_seconds: float) -> StopRequest:
        if wall_seconds > 0:
            self.deadline = time.monotonic() + wall_seconds
        return self


@contextlib.contextmanager
def stop_on_signals(request: StopRequest):
    """SIGTERM and SIGINT ask the run to stop at the next step (checkpoint, then exit); a
    second SIGINT interrupts at once. No-op outside the main thread."""
    def ask(signum, _frame):
        if request.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.signal = signal.Signals(signum).name

    saved = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            saved[sig] = signal.signal(sig, ask)
    except ValueError:  # not the main thread (e.g. a Dask worker thread)
        pass
    try:
        yield request
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _loop(problem, writer, cfg, state, stats, t, index, final, quiet, resumed, t_end,
          next_target, stop) -> RunSummary:
    stop_cfg, out = cfg["stop"], cfg["output"]
    start = time.monotonic()
    request = (stop or StopRequest()).with_budget(stop_cfg["wall_seconds"])
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
        writer.append_events(problem.new_events())
        for line in getattr(problem, "notices", ()):
            if not quiet:
                print(f"meanfield: {line}", file=sys.stderr)
        if getattr(problem, "notices", None):
            problem.notices.clear()
        snap = target.snapshot or t_now >= t_end
        if snap:
            writer.append_snapshot(t_now, problem.snapshot(s), problem.snapshot_extras(s))
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
                    writer.append_snapshot(t_now, problem.snapshot(s), problem.snapshot_extras(s))
                return message
        if time.monotonic() - last_ckpt[0] >= out["checkpoint_seconds"]:
            checkpoint()
            last_ckpt[0] = time.monotonic()
        return None

    try:
        res = march(problem, state, t, stats, next_target, handler, index=index,
                    deadline=request)
        if res.status == "interrupted":
            # resume exactly where stepping stopped (possibly inside an output interval):
            # the state and the step statistics belong together
            current.update(state=res.state, t=res.t, index=res.index)
            checkpoint("interrupted")
            why = (f"stopped by {request.signal}" if request.signal
                   else "wall-clock budget reached")
            return _interrupted(writer, final, summary, why)
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


def _interrupted(writer, final, summary, why: str) -> RunSummary:
    writer.close()
    writer.path.unlink(missing_ok=True)
    return summary("interrupted", f"{why}; resume with: meanfield run --resume {final}")


def _progress(total: float, t0: float, quiet: bool):
    if quiet or not sys.stderr.isatty() or os.environ.get("MEANFIELD_NO_PROGRESS"):
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, initial=t0, unit="t", file=sys.stderr, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| t={n:.4g}/{total:.4g} [{elapsed}<{remaining}{postfix}]")
    return bar


def run_cli(config_path: str | None, sets: list[str], output: str | None, *, resume: str | None,
            overwrite: bool, quiet: bool) -> int:
    """``meanfield run``: returns the exit code (0 complete, 1 failed, 2 bad input, 74 a
    write failed (disk full: the last checkpoint is kept), 75 interrupted by the wall-clock
    budget or SIGTERM, 130 interrupted by Ctrl-C; the last two are resumable)."""
    if resume is not None:
        final = Path(resume)
        ckpt = storage.checkpoint_path(final)
        if storage.file_status(final) == "complete" and not overwrite:
            print(RunSummary(str(final), "skipped").line())
            return 0
        if not ckpt.exists():
            raise InputError("--resume", "no checkpoint to resume at this path", str(final))
        try:
            _, _, text = storage.read_checkpoint(ckpt)
        except (OSError, KeyError):
            raise InputError("--resume", "the checkpoint is unreadable; start again with "
                             "--overwrite", str(ckpt)) from None
        cfg = config_mod.from_text(text)
        cfg["output"]["path"] = str(final)
        kwargs = {"resume": True, "overwrite": False}
    else:
        cfg, text = config_mod.resolve(config_path, sets, output)
        kwargs = {"overwrite": overwrite}
    request = StopRequest()
    try:
        with stop_on_signals(request):
            summary = execute(cfg, text, quiet=quiet, stop=request, **kwargs)
    except storage.StorageError as exc:
        ckpt = storage.checkpoint_path(cfg["output"]["path"])
        keep = (f"the last checkpoint {ckpt} is intact: free space, then meanfield run "
                f"--resume {cfg['output']['path']}") if ckpt.exists() else \
            "no checkpoint was written yet"
        print(f"meanfield: error: output.path: {exc.strerror}; {keep}", file=sys.stderr)
        if exc.fatal:  # the HDF5 library saw the failure: exiting through it could crash
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(EXIT_IO)
        return EXIT_IO
    print(summary.line())
    if summary.status == "failed":
        return 1
    if summary.status == "interrupted":
        return EXIT_SIGINT if request.signal == "SIGINT" else EXIT_INTERRUPTED
    return 0
