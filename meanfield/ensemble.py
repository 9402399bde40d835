"""Ensembles in the workflow: several runs of a sweep advanced by one batched stepper.

Every member runs the ordinary driver (``meanfield.driver.execute``: its own file, lock,
schedule, diagnostics, stop rules, checkpoints and resume) in a thread of its own; the driver
calls ``adapt(problem)`` before stepping, and for a batchable member (its ``problem.stepper``
taken by a stepper of ``solvers.ensemble.ENSEMBLES``: circle runs with the convolution drift,
zonal runs) the stepper's ``advance`` is replaced by a request to the coordinator; the
problem's own logic around it (e.g. the zonal hand-off checks between chunks of steps) is
unchanged. The coordinator (this process's main thread) keeps every member's state in a row
of one batched stepper and takes one batched step of all members that wait for one, handing
each back as soon as it reaches its output time or step limit (or fails, or its stop request
fires). Each member's steps are its single run's, so its file is the single run's file
(bitwise or to round-off: see ``solvers.ensemble``). A member that is not batchable at run
time steps on its own in its thread, and so does a member after a hand-off to atoms (the
batch stops waiting for it after ``AWAY_AFTER``).

``run_ensemble(spec, run_member)`` is the unit of work that the sweep executors (process
pool, Dask) run: one task per ensemble, returning one result per member.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: members per ensemble (benchmarks/bench_ensemble.py on this 2-core machine, M = 512, members
#: with atoms: 4.4x, 15x, 19x, 22x the single run's member-steps/s at 1, 8, 32, 64 members;
#: without atoms 2.6x, 7.3x, 11x, 11x; zonal 3.6x, 7.9x, 15x, 15x). Gains stop growing past
#: ~32 rows at M = 512 (the stepper works in cache-sized blocks, ``solvers.ensemble.
#: BLOCK_CELLS``), while a larger ensemble still amortises the per-step Python work over more
#: members; the sweep splits the runs so that every worker gets an ensemble.
DEFAULT_BATCH = 64


@dataclass
class EnsembleSpec:
    """A group of sweep runs (``meanfield.sweep.RunSpec``) advanced together."""

    name: str
    params: dict[str, Any]
    path: str
    members: list = field(default_factory=list)


@dataclass
class _Request:
    scheme: Any
    q: np.ndarray
    t: float
    target: float
    stats: Any
    deadline: Any
    max_steps: int | None = None
    handle: Any = None
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple | None = None
    error: str | None = None


class _Handle:
    """One member's link to the coordinator: ``adapt`` for the driver, ``leave`` once its
    run has stopped stepping (idempotent)."""

    def __init__(self, coord: Coordinator) -> None:
        self.coord, self.left = coord, False

    def adapt(self, problem) -> None:
        self.coord._adapt(problem, self)

    def leave(self) -> None:
        if not self.left:
            self.left = True
            self.coord._leave(self)


#: a running member's stop request (signal, wall budget) is looked at every this many steps
DEADLINE_EVERY = 16
#: seconds the batch waits for a member that is not asking (writing its records takes about
#: a millisecond); after that it steps without it until it asks again (a member stepping on
#: its own, e.g. atoms after a hand-off, or busy with a first compilation)
AWAY_AFTER = 0.02


class Coordinator:
    """Collects step requests from member threads and advances them in one batch.

    Each member's scheme gets a row of the batched stepper that takes it
    (``solvers.ensemble.ensemble_key``: one ensemble per key) the first time it asks; its
    state stays in that row between requests. Every round, once every live member waits,
    the coordinator loads the new requests, takes one step of all rows below their target,
    and hands back the rows that reached it (or failed, or whose stop request fired). A
    member's records are written while the others wait (one process has one core's worth of
    Python anyway), so every step is taken by the whole batch; a member that has not asked
    within ``AWAY_AFTER`` is not waited for until it asks again, and a member leaves the
    count as soon as its run stops stepping, before its analysis."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.pending: list[_Request] = []
        self.live = 0          # members that may still ask for steps
        self.held = 0          # requests the coordinator is stepping
        self.handles: set[_Handle] = set()     # live members
        self.away: set[_Handle] = set()        # live members not waited for
        self.holding: set[_Handle] = set()     # members whose request is being stepped
        self._rows: dict[int, tuple] = {}        # id(scheme) -> (ensemble, row, scheme)
        self._ensembles: dict[tuple, Any] = {}   # solvers.ensemble.ensemble_key -> ensemble

    # ---------------------------------------------------------------- member side
    def member(self) -> _Handle:
        """A member's handle (counted as live until its ``leave``)."""
        h = _Handle(self)
        with self.cond:
            self.live += 1
            self.handles.add(h)
        return h

    def _adapt(self, problem, handle: _Handle) -> None:
        """Route a batchable problem's stepper through the coordinator: its scheme's
        ``advance`` becomes a request (the problem's own logic around it, e.g. hand-off
        checks between chunks of steps, is unchanged). A member that is not batchable
        leaves: it steps on its own and never asks."""
        from solvers.ensemble import ensemble_key

        scheme = getattr(problem, "stepper", None)
        if scheme is None or ensemble_key(scheme) is None:
            handle.leave()
            return

        def advance(state, t, target, stats, deadline=None, max_steps=None):
            req = _Request(scheme, np.asarray(state, float), float(t), float(target), stats,
                           deadline, max_steps, handle)
            with self.cond:
                self.away.discard(handle)
                self.pending.append(req)
                self.cond.notify_all()
            req.done.wait()
            if req.error is not None:
                from solvers.stepping import SolverError

                raise SolverError(req.error)
            return req.result

        scheme.advance = advance

    def _leave(self, handle: _Handle) -> None:
        with self.cond:
            self.live -= 1
            self.handles.discard(handle)
            self.away.discard(handle)
            self.cond.notify_all()

    def _ready(self) -> bool:
        """Every live member that is waited for asks (and someone does), or none is left."""
        busy = self.held + len(self.pending)
        return self.live == 0 or (busy > 0 and busy >= self.live - len(self.away))

    # ---------------------------------------------------------------- coordinator side
    def _row(self, scheme) -> tuple:
        from solvers.ensemble import ensemble_key

        got = self._rows.get(id(scheme))
        if got is None or got[2] is not scheme:
            key = ensemble_key(scheme)
            ens = self._ensembles.get(key)
            if ens is None:
                ens = self._ensembles[key] = key[0]()
            got = self._rows[id(scheme)] = (ens, ens.add(scheme), scheme)
        return got[:2]

    def serve(self) -> None:
        """Step the waiting members until every member has left."""
        from solvers.stepping import expired

        active: dict[Any, dict[int, _Request]] = {}    # ensemble -> {row: request}
        rounds = 0
        while True:
            with self.cond:
                # step once every live member waits (a member busy with its records is back
                # within a step's time; stepping without it would split the batch)
                if not self.cond.wait_for(self._ready, timeout=AWAY_AFTER):
                    asking = {r.handle for r in self.pending} | self.holding
                    self.away = self.handles - asking
                    self.cond.wait_for(lambda: self.live == 0 or self.pending or self.held)
                if self.live == 0 and not self.pending and not self.held:
                    return
                new, self.pending = self.pending, []
            for r in new:
                if expired(r.deadline):       # a stop request hands it back at once
                    r.result = (r.q, r.t)
                    r.done.set()
                    continue
                ens, row = self._row(r.scheme)
                ens.load(row, r.q, r.t, r.stats, r.target, r.max_steps)
                active.setdefault(ens, {})[row] = r
                with self.cond:
                    self.held += 1
                    self.holding.add(r.handle)
            rounds += 1
            for ens, reqs in active.items():
                if not reqs:
                    continue
                rows = np.fromiter(sorted(reqs), np.int64, len(reqs))
                todo = rows[ens.pending(rows)]
                failed = ens.step(todo) if todo.size else {}
                done = ~ens.pending(rows)
                if rounds % DEADLINE_EVERY == 0:
                    done |= np.array([expired(reqs[r].deadline) for r in rows.tolist()])
                for row in rows[done].tolist() + list(failed):
                    r = reqs.pop(row, None)
                    if r is None:
                        continue
                    r.result = ens.unload(row)
                    r.error = failed.get(row)
                    with self.cond:
                        self.held -= 1
                        self.holding.discard(r.handle)
                    r.done.set()


def run_ensemble(spec: EnsembleSpec, run_member) -> dict[str, Any]:
    """Run an ensemble's members (threads, one batched stepper); never raises. Each member is
    ``run_member(run_spec, stop_request, adapt=..., stepped=...)`` (the sweep's per-run
    function, which
    returns its result dict). Returns {"name", "members": [the members' results]}."""
    os.environ.setdefault("MEANFIELD_FFT_THREADS", "1")
    from meanfield.driver import StopRequest, stop_on_signals

    start = time.monotonic()
    coord = Coordinator()
    requests = [StopRequest() for _ in spec.members]
    results: list[dict | None] = [None] * len(spec.members)

    handles = [coord.member() for _ in spec.members]

    def member(i: int) -> None:
        h = handles[i]
        try:
            results[i] = run_member(spec.members[i], requests[i], adapt=h.adapt,
                                    stepped=h.leave)
        finally:
            h.leave()

    shared = StopRequest()
    with stop_on_signals(shared):
        threads = [threading.Thread(target=member, args=(i,), daemon=True)
                   for i in range(len(spec.members))]
        for th in threads:
            th.start()
        watcher = threading.Thread(target=_relay, args=(shared, requests, coord),
                                   daemon=True)
        watcher.start()
        coord.serve()
        for th in threads:
            th.join()
    out = [r if r is not None else {"name": s.name, "params": s.params, "path": s.path,
                                    "status": "failed", "message": "member thread died"}
           for r, s in zip(results, spec.members, strict=True)]
    return {"name": spec.name, "params": spec.params, "path": spec.path, "members": out,
            "signal": shared.signal, "elapsed": time.monotonic() - start}


def _relay(shared, requests, coord) -> None:
    """Pass a signal received by the ensemble's process to every member's stop request."""
    while coord.live > 0:
        if shared.signal is not None:
            for r in requests:
                r.signal = shared.signal
            return
        time.sleep(0.05)
