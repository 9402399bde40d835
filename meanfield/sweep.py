"""Parameter sweeps: a Cartesian product of config values, one HDF5 file per run.

``meanfield sweep CONFIG --param model.beta=1:12:0.5 --param initial.seed=0:3 -o DIR``

* ``KEY=START:STOP:STEP`` gives START, START+STEP, ... with STOP excluded (like ``range``;
  a value within 1e-9 STEP of STOP counts as STOP), ``KEY=v1,v2,...`` lists values (TOML
  syntax; bare words are strings). Any config key can be swept.
* Files are named from the parameters (``beta=5.5_seed=2.h5``). The client alone writes the
  manifest ``DIR/sweep.json`` (base config, grid, per-run status and summary); workers
  write only their own run file. Re-running is idempotent: complete runs are skipped,
  interrupted runs resume from their checkpoint, failed runs are retried; ``--overwrite``
  starts all again.
* Executors behind one interface: in-process (jobs = 1), a local process pool, or Dask
  distributed (an existing scheduler, or a LocalCluster started here).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import itertools
import json
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meanfield import config as config_mod
from meanfield.ensemble import DEFAULT_BATCH
from meanfield.io import locks
from meanfield.io.atomic import write_text_atomic
from meanfield.ranges import parse_range
from meanfield.theory.errors import InputError

MANIFEST = "sweep.json"
LOCK = ".sweep.lock"
SUMMARY_CSV = "summary.csv"
SUMMARY_H5 = "summary.h5"
SUMMARY_FIELDS = ("k_max_predicted", "first_plateau_clusters", "first_plateau_length",
                  "final_clusters", "one_cluster_time",
                  "dominant_mode_at_exit", "exit_time", "exit_time_predicted",
                  "growth_rate_measured",
                  "growth_rate_predicted", "mass_drift", "min_density", "final_ebar",
                  "wall_seconds", "steps")


# ---------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class Param:
    key: str            # section.key
    values: tuple


def parse_param(text: str) -> Param:
    """``section.key=START:STOP:STEP`` or ``section.key=v1,v2,...``."""
    if "=" not in text:
        raise InputError("--param", "must be SECTION.KEY=START:STOP:STEP or "
                         "SECTION.KEY=v1,v2,...", text)
    key, spec = (s.strip() for s in text.split("=", 1))
    if "." not in key:
        raise InputError("--param", "key must be SECTION.KEY", key)
    section, name = key.split(".", 1)
    if section not in config_mod.SCHEMA or name not in config_mod.SCHEMA[section]:
        raise InputError("--param", f"unknown config key {key!r} (see meanfield config)")
    if not spec:
        raise InputError("--param", "needs at least one value", text)
    kind = config_mod.SCHEMA[section][name].kind
    if spec.count(":") in (1, 2) and "," not in spec and kind not in (str, bool):
        values = parse_range(spec, f"--param {key}")
        if kind is int:
            if not all(float(v).is_integer() for v in values):
                raise InputError(f"--param {key}", "must give integers", spec)
            values = [int(v) for v in values]
    else:
        values = [config_mod.parse_value(v.strip(), kind) for v in spec.split(",") if v.strip()]
        if not values:
            raise InputError("--param", "needs at least one value", text)
    return Param(key, tuple(values))


def _fmt(v: Any) -> str:
    """A value in a run name: 10 significant digits when they identify the float exactly,
    else the shortest text that does (so 2.00000000001 and 2.00000000002 differ)."""
    if isinstance(v, float):
        short = format(v, ".10g")
        return short if float(short) == v else repr(v)
    return str(v).replace("/", "_").replace(" ", "_")


def run_name(assignment: dict[str, Any]) -> str:
    short = [k.split(".", 1)[1] for k in assignment]
    use_short = len(set(short)) == len(short)
    parts = [f"{k.split('.', 1)[1] if use_short else k}={_fmt(v)}" for k, v in assignment.items()]
    return "_".join(parts) if parts else "run"


@dataclass
class RunSpec:
    name: str
    params: dict[str, Any]
    path: str
    config_text: str | None      # None when the combination is invalid
    error: str | None = None
    overwrite: bool = False


def build_specs(base: dict, params: Sequence[Param], out_dir: Path,
                overwrite: bool = False) -> list[RunSpec]:
    specs = []
    for combo in itertools.product(*(p.values for p in params)):
        assignment = {p.key: v for p, v in zip(params, combo, strict=True)}
        name = run_name(assignment)
        path = str(out_dir / f"{name}.h5")
        sets: dict[str, dict[str, Any]] = {}
        for k, v in assignment.items():
            s, n = k.split(".", 1)
            sets.setdefault(s, {})[n] = v
        try:
            cfg = config_mod.merge(base, sets)
            cfg["output"]["path"] = path
            config_mod.check_consistency(cfg)
            specs.append(RunSpec(name, assignment, path, config_mod.dumps(cfg), None, overwrite))
        except InputError as exc:  # a bad combination fails that run, not the sweep
            specs.append(RunSpec(name, assignment, path, None, str(exc), overwrite))
    return specs


# ---------------------------------------------------------------------------- one run
def run_one(spec: RunSpec) -> dict[str, Any]:
    """Run (or skip/resume) one spec in this process; never raises. Small result dict.

    SIGTERM (e.g. the parent sweep died: workers get it, see ``_worker_init``) stops the
    run at the next step with a checkpoint, so a re-run resumes it."""
    os.environ.setdefault("MEANFIELD_FFT_THREADS", "1")
    from meanfield.driver import StopRequest, stop_on_signals

    request = StopRequest()
    with stop_on_signals(request):
        result = _run_one(spec, request)
    if request.signal is not None:
        if multiprocessing.parent_process() is not None:
            # a pool worker asked to stop (its sweep died, or the pool is shutting down):
            # the run has checkpointed; take no further task
            os._exit(0)
        raise SweepStopped(request.signal, result)
    return result


class SweepStopped(Exception):
    """The sweep process was asked to stop (SIGTERM, SIGINT): the running run has
    checkpointed; the manifest is written and the sweep exits (resumable)."""

    def __init__(self, signal_name: str, result: dict) -> None:
        super().__init__(signal_name)
        self.signal_name, self.result = signal_name, result


def _run_one(spec: RunSpec, request, adapt=None, stepped=None) -> dict[str, Any]:
    """One run and its analysis (``adapt``, ``stepped``: an ensemble member's hooks, see
    ``meanfield.ensemble``: called on the run adapter, and once the stepping is over)."""
    start = time.monotonic()
    out: dict[str, Any] = {"name": spec.name, "params": spec.params, "path": spec.path,
                           "pid": os.getpid()}
    if spec.config_text is None:
        return {**out, "status": "failed", "message": spec.error or "invalid configuration"}
    try:
        from meanfield.driver import execute
        from meanfield.io.reader import open_run
        from meanfield.io.storage import file_status

        cfg = config_mod.from_text(spec.config_text)
        overwrite = spec.overwrite or file_status(spec.path) == "failed"  # retry failures
        summary = execute(cfg, spec.config_text, overwrite=overwrite, quiet=True,
                          stop=request, wait=RUN_LOCK_WAIT, adapt=adapt)
        if stepped is not None:
            stepped()
        out.update({"status": summary.status, "message": summary.message,
                    "resumed": summary.resumed})
        if summary.status in ("complete", "skipped"):
            out["status"] = "complete"
            out["skipped"] = summary.status == "skipped"
            with open_run(spec.path) as run:
                res = run.analyze()
                out["steps"] = int(run.diagnostics["steps"][-1])
            fit = res.get("growth_rate_fit") or {}
            out["summary"] = {k: res.get(k) for k in SUMMARY_FIELDS if k in res}
            out["summary"].update({"growth_rate_measured": fit.get("measured"),
                                   "growth_rate_predicted": fit.get("predicted"),
                                   "steps": out["steps"],
                                   "wall_seconds": summary.wall_seconds})
            out["metastable"] = res["metastable"]
    except InputError as exc:
        out.update({"status": "failed", "message": str(exc)})
    except Exception as exc:  # a failing run is recorded, the sweep goes on
        out.update({"status": "failed", "message": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=5)})
    out["elapsed"] = time.monotonic() - start
    return out


#: seconds a sweep's run waits for a run file that another process still holds
RUN_LOCK_WAIT = 60.0


def _worker_init() -> None:
    """One thread per worker; and the worker dies with its parent (Linux: the kernel sends
    SIGTERM when the sweep process exits, however it exits, and the run then checkpoints)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "MEANFIELD_FFT_THREADS"):
        os.environ[var] = "1"
    die_with_parent()


def die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGTERM) on Linux; elsewhere a watchdog thread that sends
    SIGTERM to this process once its parent has gone."""
    import signal

    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) == 0:  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before prctl took effect
                os.kill(os.getpid(), signal.SIGTERM)
            return
    except (OSError, AttributeError):
        pass
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


# ---------------------------------------------------------------------------- executors
class Executor:
    """Runs ``fn(spec)`` for every spec (default: :func:`run_one`, one run file), calling
    ``done(result)`` as each finishes (in the client process). Any picklable task with the
    attributes ``name``, ``params`` and ``path`` and a module-level ``fn`` returning a small
    result dict works (``meanfield.phase`` maps beta blocks of a phase diagram)."""

    name = "base"

    def map(self, specs: list, done: Callable[[dict], None],
            fn: Callable[[Any], dict] | None = None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class InProcess(Executor):
    name = "in-process"

    def map(self, specs, done, fn=None):
        for spec in specs:
            done((fn or run_one)(spec))


class ProcessPool(Executor):
    """Local processes; a killed worker breaks the pool: its runs are retried once in a
    fresh pool, then recorded as failed."""

    name = "process pool"

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs

    def map(self, specs, done, fn=None):
        pending = list(specs)
        for attempt in range(2):
            if not pending:
                return
            broken: list[RunSpec] = []
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(self.jobs, mp_context=ctx,
                                        initializer=_worker_init) as pool:
                futs = {pool.submit(fn or run_one, s): s for s in pending}
                for fut in cf.as_completed(futs):
                    try:
                        done(fut.result())
                    except cf.process.BrokenProcessPool:
                        broken.append(futs[fut])
            if attempt == 1:
                for s in broken:
                    done({"name": s.name, "params": s.params, "path": s.path,
                          "status": "failed", "message": "worker process died (killed?)"})
            pending = broken


class DaskExecutor(Executor):
    """Dask distributed: an existing scheduler or a LocalCluster; workers write the files."""

    name = "dask"

    def __init__(self, address: str | None = None, local_workers: int | None = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise InputError("--scheduler", "needs dask: pip install 'meanfield-pde[dask]'") \
                from None
        self.cluster = None
        if address is not None:
            try:
                self.client = Client(address, timeout="5s")
            except (OSError, TimeoutError) as exc:
                raise InputError("--scheduler", f"cannot connect to {address} "
                                 f"({type(exc).__name__})") from None
        else:
            self.cluster = LocalCluster(n_workers=local_workers, threads_per_worker=1,
                                        processes=True, dashboard_address=None,
                                        silence_logs=40)
            self.client = Client(self.cluster)
        self.client.run(_worker_init)

    def map(self, specs, done, fn=None):
        from distributed import as_completed

        futs = self.client.map(fn or run_one, specs, pure=False, retries=1)
        index = {f.key: s for f, s in zip(futs, specs, strict=True)}
        for fut in as_completed(futs):
            try:
                done(fut.result())
            except Exception as exc:  # worker lost twice, or unpicklable error
                s = index[fut.key]
                done({"name": s.name, "params": s.params, "path": s.path, "status": "failed",
                      "message": f"dask: {type(exc).__name__}: {exc}"})

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


# ---------------------------------------------------------------------------- manifest
@dataclass
class Sweep:
    out_dir: Path
    base_text: str
    params: list[Param]
    specs: list[RunSpec]
    runs: dict[str, dict] = field(default_factory=dict)

    def manifest(self) -> dict:
        return {"format": "meanfield-sweep", "base_config": self.base_text,
                "params": [{"key": p.key, "values": list(p.values)} for p in self.params],
                "updated": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "runs": self.runs}

    def save(self) -> None:
        write_text_atomic(self.out_dir / MANIFEST, json.dumps(self.manifest(), indent=1,
                                                              default=_json_default))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))


def load_manifest(out_dir: Path) -> dict:
    path = out_dir / MANIFEST
    if not path.is_file():
        raise InputError("DIR", f"has no {MANIFEST}: not a sweep folder", str(out_dir))
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise InputError("DIR", f"{MANIFEST} is not valid JSON", str(out_dir)) from None
    if data.get("format") != "meanfield-sweep":
        raise InputError("DIR", f"{MANIFEST} is not a meanfield sweep manifest", str(out_dir))
    return data


# ---------------------------------------------------------------------------- summary
def write_summary(out_dir: Path, params: list[Param], runs: dict[str, dict]) -> None:
    """CSV (one row per run) and an HDF5/netCDF table with the swept keys as dimensions."""
    import h5py

    from meanfield.io.atomic import atomic_path

    keys = [p.key for p in params]
    header = ["name", *keys, "status", *SUMMARY_FIELDS, "message"]
    lines = [",".join(header)]
    def order(name: str) -> tuple:
        return tuple((isinstance(v, str), v) for v in
                     (runs[name]["params"].get(k) for k in keys))

    for name in sorted(runs, key=order):
        r = runs[name]
        s = r.get("summary") or {}
        row = [name, *(_fmt(r["params"].get(k)) for k in keys), r["status"],
               *("" if s.get(f) is None else _fmt(s[f]) for f in SUMMARY_FIELDS),
               '"' + str(r.get("message", "")).replace('"', "'") + '"']
        lines.append(",".join(row))
    write_text_atomic(out_dir / SUMMARY_CSV, "\n".join(lines) + "\n")
    axes = [sorted(set(p.values), key=lambda v: (isinstance(v, str), v)) for p in params]
    shape = tuple(len(a) for a in axes)
    with atomic_path(out_dir / SUMMARY_H5) as tmp, h5py.File(tmp, "w") as f:
        dims = []
        for p, ax in zip(params, axes, strict=True):
            dname = p.key
            data = np.array(ax, dtype=h5py.string_dtype()) if any(isinstance(v, str) for v in ax) \
                else np.asarray(ax)
            ds = f.create_dataset(dname, data=data)
            ds.make_scale(dname)
            dims.append(ds)
        status = np.zeros(shape, dtype="i1")
        tables = {fname: np.full(shape, np.nan) for fname in SUMMARY_FIELDS}
        for r in runs.values():
            idx = tuple(ax.index(r["params"][p.key]) for p, ax in zip(params, axes, strict=True))
            status[idx] = {"complete": 1, "failed": -1}.get(r["status"], 0)
            for fname, v in (r.get("summary") or {}).items():
                if fname in tables and v is not None:
                    tables[fname][idx] = v
        for fname, arr in [("status", status), *tables.items()]:
            ds = f.create_dataset(fname, data=arr)
            for i, d in enumerate(dims):
                ds.dims[i].attach_scale(d)
                ds.dims[i].label = d.name.lstrip("/")
        f["status"].attrs["meaning"] = "1 complete, -1 failed, 0 not run"
        f.attrs["format"] = "meanfield-sweep-summary"


#: swept keys that replicate a run (averaged over) rather than define a series
REPLICATE_KEYS = ("initial.seed",)


def series_of(runs: dict[str, dict] | Iterable[dict], keys: Sequence[str]
              ) -> dict[str, list[dict]]:
    """Runs grouped by the swept keys other than beta and the seed: label -> runs (label
    "model=usa, dim=3"; "" when there is only beta and seeds)."""
    other = [k for k in keys if k != "model.beta" and k not in REPLICATE_KEYS]
    out: dict[str, list[dict]] = {}
    values = runs.values() if isinstance(runs, dict) else runs
    for r in sorted(values, key=lambda r: tuple((isinstance(r["params"].get(k), str),
                                                 r["params"].get(k)) for k in other)):
        label = ", ".join(f"{k.split('.', 1)[1]}={_fmt(r['params'][k])}" for k in other)
        out.setdefault(label, []).append(r)
    return out


def require_complete(runs: dict[str, dict]) -> dict[str, dict]:
    """The runs, or SystemExit listing every failed run with its message (for scripts)."""
    bad = [f"{r['name']}: {r.get('message')}" for r in runs.values()
           if r["status"] != "complete"]
    if bad:
        raise SystemExit("failed runs:\n" + "\n".join(bad))
    return runs


def observed_table(params: list[Param], runs: dict[str, dict]) -> list[str]:
    """beta, predicted k_max, observed first-plateau clusters (per seed) lines, one block
    per series (the swept keys other than beta and the seed)."""
    bkey = "model.beta"
    keys = [p.key for p in params]
    if bkey not in keys:
        return []
    lines = []
    for label, members in series_of(runs, keys).items():
        by_beta: dict[float, list] = {}
        pred: dict[float, int] = {}
        for r in members:
            b = r["params"][bkey]
            s = r.get("summary") or {}
            by_beta.setdefault(b, []).append(s.get("first_plateau_clusters"))
            if s.get("k_max_predicted") is not None:
                pred[b] = s["k_max_predicted"]
        if label:
            lines.append(f"[{label}]")
        lines.append(f"{'beta':>7} {'k_max':>5} {'observed clusters (first plateau)':>36} "
                     f"{'mean':>6}")
        for b in sorted(by_beta):
            obs = by_beta[b]
            vals = [o for o in obs if o is not None]
            mean = f"{np.mean(vals):6.2f}" if vals else "   n/a"
            shown = " ".join("-" if o is None else str(o) for o in obs)
            lines.append(f"{b:7.3g} {pred.get(b, '?')!s:>5} {shown:>36} {mean}")
    return lines


# ---------------------------------------------------------------------------- driver
def run_sweep(config_path: str | None, param_texts: Sequence[str], out_dir: str, *,
              jobs: int | None = None, scheduler: str | None = None,
              dask_local: int | None = None, overwrite: bool = False, quiet: bool = False,
              sets: Iterable[str] = (), ensemble: int = DEFAULT_BATCH
              ) -> tuple[dict[str, dict], list[Param]]:
    """Validate, then run every combination; returns (runs, params).

    ``ensemble`` > 0 (default ``meanfield.ensemble.DEFAULT_BATCH``) groups runs that
    ``Domain.ensemble_key`` declares compatible into ensembles of at most that many members
    (``meanfield.ensemble``: one task, one batched stepper, one file per run as before); the
    others run one per task. 0: every run is its own task with its scheme's own stepper."""
    base, base_text = config_mod.resolve(config_path, list(sets))
    params = [parse_param(t) for t in param_texts]
    if not params:
        raise InputError("--param", "give at least one SECTION.KEY=VALUES to sweep")
    dup = {p.key for p in params if [q.key for q in params].count(p.key) > 1}
    if dup:
        raise InputError("--param", "each key may be swept once", ", ".join(sorted(dup)))
    if jobs is not None and jobs < 1:
        raise InputError("--jobs", "must be an integer >= 1", jobs)
    if ensemble < 0:
        raise InputError("--ensemble", "must be an integer >= 0 (0: one run per task)",
                         ensemble)
    if dask_local is not None and dask_local < 1:
        raise InputError("--dask-local", "must be an integer >= 1", dask_local)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("-o", "must be a folder", out_dir)
    specs = build_specs(base, params, out, overwrite)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InputError("--param", "two combinations give the same run name; list distinct "
                         "values", ", ".join(sorted({n for n in names if names.count(n) > 1})))
    check_writable(out / MANIFEST)
    if scheduler is not None or dask_local is not None:
        executor: Executor = DaskExecutor(scheduler, dask_local)
    elif (jobs or os.cpu_count() or 1) == 1:
        executor = InProcess()
    else:
        executor = ProcessPool(jobs or os.cpu_count() or 1)
    try:
        with locks.hold(out / LOCK, f"the sweep folder {out}", "-o"):
            return _run_sweep(out, base_text, params, specs, executor, overwrite, quiet,
                              ensemble=ensemble, workers=1 if isinstance(executor, InProcess)
                              else (jobs or dask_local or os.cpu_count() or 1))
    finally:
        executor.close()


def check_writable(target: Path) -> None:
    from meanfield.driver import check_writable as check

    try:
        check(target)
    except InputError as exc:
        raise InputError("-o", exc.allowed, str(target.parent)) from None


def group_ensembles(specs: list[RunSpec], size: int, workers: int = 1) -> list:
    """Tasks: compatible runs (same ``Domain.ensemble_key``) in ensembles of at most ``size``
    members, split into at least ``workers`` ensembles when there are enough runs (so every
    core or Dask worker gets one); runs sorted by name are dealt round-robin so that long and
    short runs mix. Runs without a key stay single tasks."""
    from meanfield.domains import get
    from meanfield.ensemble import EnsembleSpec

    if size <= 0:
        return list(specs)
    keyed: dict[tuple, list[RunSpec]] = {}
    tasks: list = []
    for s in specs:
        key = None
        if s.config_text is not None:
            cfg = config_mod.from_text(s.config_text)
            key = get(cfg["model"]["domain"]).ensemble_key(cfg)
        if key is None:
            tasks.append(s)
        else:
            keyed.setdefault(key, []).append(s)
    for group in keyed.values():
        n = max(-(-len(group) // size), min(workers, len(group)))
        for k in range(n):
            members = group[k::n]
            if len(members) == 1:
                tasks.append(members[0])
            else:
                tasks.append(EnsembleSpec(f"ensemble of {len(members)} ({members[0].name}...)",
                                          {}, members[0].path, members))
    return tasks


def run_task(task) -> dict[str, Any]:
    """The executors' unit of work: one run, or one ensemble of runs."""
    from meanfield.ensemble import EnsembleSpec, run_ensemble

    if isinstance(task, EnsembleSpec):
        res = run_ensemble(task, _run_one)
        if res.get("signal") is not None and multiprocessing.parent_process() is not None:
            os._exit(0)    # as run_one: a pool worker asked to stop takes no further task
        if res.get("signal") is not None:
            raise SweepStopped(res["signal"], res["members"][0])
        return res
    return run_one(task)


def _run_sweep(out: Path, base_text: str, params: list[Param], specs: list[RunSpec],
               executor: Executor, overwrite: bool, quiet: bool, ensemble: int = 0,
               workers: int = 1) -> tuple[dict[str, dict], list[Param]]:
    sweep = Sweep(out, base_text, params, specs)
    previous = {}
    if (out / MANIFEST).exists() and not overwrite:
        try:
            previous = load_manifest(out).get("runs", {})
        except InputError:
            previous = {}
    for s in specs:
        sweep.runs[s.name] = previous.get(s.name, {}) | {
            "params": s.params, "path": s.path, "status": "pending"}
    sweep.save()
    counts = {"complete": 0, "skipped": 0, "failed": 0}
    bar = None
    if not quiet and sys.stderr.isatty() and not os.environ.get("MEANFIELD_NO_PROGRESS"):
        from tqdm import tqdm

        bar = tqdm(total=len(specs), unit="run", file=sys.stderr, dynamic_ncols=True)

    def done(res: dict) -> None:
        before = previous.get(res["name"]) or {}
        if res.get("skipped") and (before.get("summary") or {}).get("wall_seconds"):
            # a complete run that is skipped keeps the wall time it took when it ran
            res.setdefault("summary", {})["wall_seconds"] = before["summary"]["wall_seconds"]
        sweep.runs[res["name"]] = res
        if res["status"] == "complete":
            counts["skipped" if res.get("skipped") else "complete"] += 1
        else:
            counts["failed"] += 1
        sweep.save()
        if bar is not None:
            bar.update(1)
            running = len(specs) - sum(counts.values())
            bar.set_postfix_str(f"done {counts['complete']} skipped {counts['skipped']} "
                                f"failed {counts['failed']} running/queued {running}")

    def unpack(res: dict) -> None:
        for r in res.get("members", [res]):
            done(r)

    def failed_task(res: dict) -> None:
        # a broken pool or a lost Dask worker reports the task: fail each of its runs
        task = next((t for t in tasks if t.name == res["name"]), None)
        members = getattr(task, "members", None)
        if members and res.get("status") == "failed" and "members" not in res:
            for m in members:
                done({"name": m.name, "params": m.params, "path": m.path,
                      "status": "failed", "message": res.get("message", "")})
        else:
            unpack(res)

    tasks = group_ensembles(specs, ensemble, workers)
    try:
        executor.map(tasks, failed_task, fn=run_task)
    except SweepStopped as exc:
        done(exc.result)
        write_summary(out, params, sweep.runs)
        raise
    finally:
        if bar is not None:
            bar.close()
    write_summary(out, params, sweep.runs)
    return sweep.runs, params


def sweep_cli(args) -> int:
    """``meanfield sweep``: exit 0 all complete, 1 some failed, 2 bad input, 75 stopped by
    SIGTERM and 130 by Ctrl-C (the running run checkpointed: re-run the command to go on)."""
    try:
        runs, params = run_sweep(args.config, args.param or [], args.output, jobs=args.jobs,
                                 scheduler=args.scheduler, dask_local=args.dask_local,
                                 overwrite=args.overwrite, quiet=args.quiet,
                                 sets=args.set or [], ensemble=args.ensemble)
    except SweepStopped as exc:
        print(f"sweep {args.output}: stopped by {exc.signal_name}; the running run "
              "checkpointed: run the same command again to continue", file=sys.stderr)
        return 130 if exc.signal_name == "SIGINT" else 75
    statuses = [r["status"] for r in runs.values()]
    n_failed = sum(s != "complete" for s in statuses)
    n_skipped = sum(bool(r.get("skipped")) for r in runs.values())
    for line in observed_table(params, runs):
        print(line)
    for r in runs.values():
        if r["status"] != "complete":
            print(f"failed: {r['name']}: {r.get('message', '')}")
    print(f"sweep {args.output}: {len(runs)} runs, done {len(runs) - n_failed - n_skipped}, "
          f"skipped {n_skipped}, failed {n_failed}; summary in "
          f"{Path(args.output) / SUMMARY_CSV}")
    return 1 if n_failed else 0


def is_sweep_dir(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()

