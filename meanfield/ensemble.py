"""Ensembles in the workflow: several runs of a sweep advanced by one batched stepper.

Every member runs the ordinary driver (``meanfield.driver.execute``: its own file, lock,
schedule, diagnostics, stop rules, checkpoints and resume) in a thread of its own; the driver
calls ``adapt(problem)`` before stepping, and for a batchable member (a circle fv2 run with
the convolution drift, adaptive SSP-RK3, no atoms: ``Domain.ensemble_key``) the adapter's
``advance`` is replaced by a request to the coordinator. The coordinator (this process's
main thread) waits until every live member is either waiting for a step or finished, then
advances all waiting members together with ``solvers.ensemble.CircleEnsemble`` until one of
them reaches its output time (or fails, or its stop request fires), hands those back, and
repeats. Each member's steps are exactly its single run's, so its file is the single run's
file (bitwise: the batched FFT and flux kernels do the single run's arithmetic). A member that
is not batchable at run time simply steps on its own in its thread.

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

#: members per ensemble worth asking for (benchmarks/bench_ensemble.py on 2 cores, M = 512:
#: 1.7x, 5.5x, 5.8x, 10.2x the single run's member-steps/s at 1, 8, 32, 64 members; at
#: M = 4096 the arithmetic dominates and batching gains nothing, 0.8-1.1x)
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
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple | None = None
    error: str | None = None


class Coordinator:
    """Collects step requests from member threads and advances them in batches."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.pending: list[_Request] = []
        self.live = 0
        self.busy = 0          # live members not currently waiting for a step

    # ---------------------------------------------------------------- member side
    def adapt(self, problem) -> None:
        """Route a batchable grid problem's advance through the coordinator."""
        from solvers.circle import FiniteVolume

        scheme = getattr(problem, "scheme", None)
        if not (type(scheme) is FiniteVolume and scheme.fixed_dt is None
                and scheme.integrator == "ssprk3"):
            return

        def advance(state, t, target, stats, deadline=None, max_steps=None):
            if max_steps is not None:   # fixed-step targets: not batched
                return scheme.advance(state, t, target, stats, deadline, max_steps)
            req = _Request(scheme, np.asarray(state, float), float(t), float(target), stats,
                           deadline)
            with self.cond:
                self.pending.append(req)
                self.busy -= 1
                self.cond.notify_all()
            req.done.wait()
            with self.cond:
                self.busy += 1
            if req.error is not None:
                from solvers.stepping import SolverError

                raise SolverError(req.error)
            return req.result

        problem.advance = advance

    def enter(self) -> None:
        with self.cond:
            self.live += 1
            self.busy += 1

    def leave(self) -> None:
        with self.cond:
            self.live -= 1
            self.busy -= 1
            self.cond.notify_all()

    # ---------------------------------------------------------------- coordinator side
    def serve(self) -> None:
        """Step the waiting members until every member has left."""
        from solvers.ensemble import CircleEnsemble, Member
        from solvers.stepping import expired

        while True:
            with self.cond:
                # step whoever waits; members busy with their records rejoin when they ask
                # (no barrier: a member's writing overlaps the others' steps)
                self.cond.wait_for(lambda: self.live == 0 or bool(self.pending))
                if self.live == 0:
                    return
                batch = list(self.pending)
            ready = []
            for r in batch:           # a stop request (signal, wall budget) hands it back
                if expired(r.deadline):
                    r.result = (r.q, r.t)
                    ready.append(r)
            todo = [r for r in batch if r not in ready]
            if todo:
                groups: dict[int, list[_Request]] = {}
                for r in todo:
                    groups.setdefault(r.scheme.cells, []).append(r)
                for group in groups.values():
                    members = [Member(r.scheme, r.q, r.t, r.stats) for r in group]
                    errors = CircleEnsemble([r.scheme for r in group]).advance(
                        members, np.array([r.target for r in group]), until_any=True)
                    for r, m, err in zip(group, members, errors, strict=True):
                        r.q, r.t = m.q, m.t
                        if err is not None:
                            r.error = err
                            ready.append(r)
                        elif m.t >= r.target:
                            r.result = (m.q, m.t)
                            ready.append(r)
            with self.cond:
                for r in ready:
                    self.pending.remove(r)
            for r in ready:
                r.done.set()


def run_ensemble(spec: EnsembleSpec, run_member) -> dict[str, Any]:
    """Run an ensemble's members (threads, one batched stepper); never raises. Each member is
    ``run_member(run_spec, stop_request, adapt=...)`` (the sweep's per-run function, which
    returns its result dict). Returns {"name", "members": [the members' results]}."""
    os.environ.setdefault("MEANFIELD_FFT_THREADS", "1")
    from meanfield.driver import StopRequest, stop_on_signals

    start = time.monotonic()
    coord = Coordinator()
    requests = [StopRequest() for _ in spec.members]
    results: list[dict | None] = [None] * len(spec.members)

    def member(i: int) -> None:
        try:
            results[i] = run_member(spec.members[i], requests[i], adapt=coord.adapt)
        finally:
            coord.leave()

    shared = StopRequest()
    with stop_on_signals(shared):
        for _ in spec.members:
            coord.enter()
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
