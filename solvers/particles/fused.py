"""Fused batched kernels for many small particle systems (phase diagrams, seed 001).

Many independent systems of n tokens on S^{d-1} (one per realisation and beta), each with its
own beta and, optionally, its own B = Q^T K and V, advanced by a fixed step sequence with the
papers' rule (``euler-unprojected``: x_i <- (x_i + h u_i)/|x_i + h u_i|, u_i the attention
average including the self term; ``euler``: the same with u_i projected on the tangent space)
and summarised at the output times, all in one compiled loop per system:

* the systems are independent, so the loop over systems is parallel (numba ``prange``) and
  each system's n x d tokens stay in cache for all its steps; no temporaries, no per-step
  Python;
* for B = V = I the pair weights are symmetric: each pair's exponential is evaluated once
  for both tokens (half the exponentials of a dense softmax; above d = 16 the Gram matrix
  and the weighted sums go to BLAS, the exponentials stay halved); every exponent is
  beta (<x_i, x_j> - 1) <= 0 (SA: the shift cancels in the ratio; USA: the factor e^beta is
  applied to the sum), so nothing overflows;
* general B, V: scores s_ij = <x_i, B x_j> with the row maximum as the softmax shift
  (log-sum-exp), values V x_j computed once per step (the products by BLAS).

At every output time each system records P (the fraction of ordered pairs i != j with
<x_i, x_j> >= 1 - delta, seed 001 Fig. 2), the number of clusters (tokens linked by
<x_i, x_j> >= 1 - cluster_delta, counted by leaders: token i leads when no earlier token is
linked to it; exact for clusters narrower than the link) and Ebar = n^{-2} sum_ij
e^{beta (<x_i, x_j> - 1)} (the energy of B = I, a geometric clustering measure for any B).

The step is one function for every batched particle run: :func:`march` (unit vectors) and
:func:`march_angles` (angles, d = 2, B = V = I) take systems with per-row parameters (beta,
model, prefactor, rule, B, V, steps); ``run_batch`` calls ``march`` once for its whole
schedule (every system its own row, statistics at the outputs), and
``solvers.particles.ensemble.ParticleEnsemble`` once per step (members' rows, one step each).

Compiled with numba (``cache=True``: the first call in a fresh environment compiles, about
20 s on 2 cores; later processes load the cache in about 1 s).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from meanfield.theory.errors import InputError

RULES = ("euler-unprojected", "euler")


@njit(cache=True, fastmath=False)
def _stats_identity(x, beta, delta, cdelta, out_p, out_c, out_e):
    n, d = x.shape
    close = 0
    e_sum = float(n)
    for i in range(n):
        for j in range(i + 1, n):
            g = 0.0
            for k in range(d):
                g += x[i, k] * x[j, k]
            if g >= 1.0 - delta:
                close += 2
            e_sum += 2.0 * math.exp(beta * (g - 1.0))
    out_p[0] = close / (n * (n - 1)) if n > 1 else 1.0
    out_e[0] = e_sum / (n * n)
    leaders = 0
    for i in range(n):
        lead = True
        for j in range(i):
            g = 0.0
            for k in range(d):
                g += x[i, k] * x[j, k]
            if g >= 1.0 - cdelta:
                lead = False
                break
        if lead:
            leaders += 1
    out_c[0] = leaders


@njit(cache=True, fastmath=False, inline="always")
def _euler_update(x, s, h, project):
    """x_i <- (x_i + h u_i)/|x_i + h u_i| with u_i = s_i (projected on the tangent space
    first for ``euler``); s is overwritten."""
    n, d = x.shape
    for i in range(n):
        if project:
            r = 0.0
            for k in range(d):
                r += s[i, k] * x[i, k]
            for k in range(d):
                s[i, k] -= r * x[i, k]
        norm = 0.0
        for k in range(d):
            yk = x[i, k] + h * s[i, k]
            s[i, k] = yk
            norm += yk * yk
        norm = math.sqrt(norm)
        for k in range(d):
            x[i, k] = s[i, k] / norm


@njit(cache=True, fastmath=False)
def _step_identity(x, beta, h, usa, factor, project, s, z):
    """One step of one system, B = V = I (s: (n, d) sums, z: (n,) scratch)."""
    n, d = x.shape
    for i in range(n):
        z[i] = 1.0
        for k in range(d):
            s[i, k] = x[i, k]
    for i in range(n):
        for j in range(i + 1, n):
            g = 0.0
            for k in range(d):
                g += x[i, k] * x[j, k]
            e = math.exp(beta * (g - 1.0))
            z[i] += e
            z[j] += e
            for k in range(d):
                s[i, k] += e * x[j, k]
                s[j, k] += e * x[i, k]
    for i in range(n):
        f = factor if usa else 1.0 / z[i]
        for k in range(d):
            s[i, k] *= f
    _euler_update(x, s, h, project)


@njit(cache=True, fastmath=False)
def _step_general(x, bt, vt, beta, h, usa, factor, project, y, vx, s, w):
    """One step of one system with scores <x_i, B x_j> and values V x_j (bt = B^T, vt = V^T
    contiguous: the products x B^T, x V^T and x (x B^T)^T go to BLAS)."""
    n = x.shape[0]
    y[:, :] = np.dot(x, bt)          # rows B x_j
    vx[:, :] = np.dot(x, vt)         # rows V x_j
    w[:, :] = np.dot(x, y.T)         # w_ij = <x_i, B x_j>
    for i in range(n):
        mx = -1e300
        for j in range(n):
            if w[i, j] > mx:
                mx = w[i, j]
        zi = 0.0
        for j in range(n):
            e = math.exp(beta * (w[i, j] - mx))
            w[i, j] = e
            zi += e
        f = factor * math.exp(beta * mx) if usa else 1.0 / zi
        for j in range(n):
            w[i, j] *= f
    s[:, :] = np.dot(w, vx)
    _euler_update(x, s, h, project)


@njit(cache=True, fastmath=False)
def _step_identity_blas(x, beta, h, usa, factor, project, s, w):
    """``_step_identity`` for large d: the Gram matrix and the weighted sums by BLAS."""
    n = x.shape[0]
    w[:, :] = np.dot(x, x.T)
    for i in range(n):
        w[i, i] = 1.0
        for j in range(i + 1, n):
            e = math.exp(beta * (w[i, j] - 1.0))
            w[i, j] = e
            w[j, i] = e
    for i in range(n):
        zi = 0.0
        for j in range(n):
            zi += w[i, j]
        f = factor if usa else 1.0 / zi
        for j in range(n):
            w[i, j] *= f
    s[:, :] = np.dot(w, x)
    _euler_update(x, s, h, project)


#: above this dimension the identity kernel uses BLAS for the Gram matrix and the sums
BLAS_DIM = 16


@njit(cache=True, fastmath=False)
def _step_angles(th, beta, h, usa, factor, project, num, den, rad):
    """One step of one system of angles (d = 2, B = V = I; num, den, rad: (n,) scratch), the
    single run's direct circle sums (``summation.direct_angle_sums``): with d = th_i - th_j,
    e = e^{beta (cos d - 1)} (once per pair: even in d), num_i = sum_j e sin d,
    den_i = sum_j e, rad_i = sum_j e cos d; fac = 1/den_i (SA) or ``factor`` (USA,
    a_N e^{log_rate}); f_t = -fac num_i, f_r = fac rad_i; ``euler`` th += h f_t,
    ``euler-unprojected`` th += atan2(h f_t, 1 + h f_r) (the angle of x + h u)."""
    n = th.shape[0]
    for i in range(n):
        num[i] = 0.0
        den[i] = 1.0
        rad[i] = 1.0
    for i in range(n):
        for j in range(i + 1, n):
            d = th[i] - th[j]
            c = math.cos(d)
            e = math.exp((c - 1.0) * beta)
            es = e * math.sin(d)
            num[i] += es
            num[j] -= es
            den[i] += e
            den[j] += e
            ec = e * c
            rad[i] += ec
            rad[j] += ec
    for i in range(n):
        fac = factor if usa else 1.0 / den[i]
        f_t = -fac * num[i]
        if project:
            th[i] += h * f_t
        else:
            th[i] += math.atan2(h * f_t, 1.0 + h * (fac * rad[i]))


@njit(cache=True, fastmath=False, nogil=True)
def _finite(x):
    for v in x.ravel():
        if not math.isfinite(v):
            return False
    return True


@njit(cache=True, fastmath=False, nogil=True)
def _march_one(xb, r, h, counts, beta, usa, factor, project, general, bt, vt, which, record,
               delta, cdelta, p, c, e):
    """One system xb (n, d) of row r through the steps h[r] (h[0] when h has one row):
    counts[o] steps, then (``record``) its statistics into p[o], c[o], e[o]. Returns
    whether xb is finite."""
    n, d = xb.shape
    hr = r if h.shape[0] > 1 else 0
    gen = general[r]
    blas = d > BLAS_DIM
    s = np.empty((n, d))
    z = np.empty(n)
    w = np.empty((n, n) if gen or blas else (0, 0))
    y = np.empty((n, d) if gen else (0, 0))
    vx = np.empty((n, d) if gen else (0, 0))
    m = which[r]
    k = 0
    for o in range(counts.size):
        for _ in range(counts[o]):
            if gen:
                _step_general(xb, bt[m], vt[m], beta[r], h[hr, k], usa[r], factor[r],
                              project[r], y, vx, s, w)
            elif blas:
                _step_identity_blas(xb, beta[r], h[hr, k], usa[r], factor[r], project[r], s,
                                    w)
            else:
                _step_identity(xb, beta[r], h[hr, k], usa[r], factor[r], project[r], s, z)
            k += 1
        if record:
            _stats_identity(xb, beta[r], delta, cdelta, p[o:o + 1], c[o:o + 1], e[o:o + 1])
    return _finite(xb)


@njit(parallel=True, cache=True, fastmath=False)
def march(x, systems, owner, h, counts, beta, usa, factor, project, general, bt, vt, which,
          record, delta, cdelta, p, c, e, ok):
    """The batched particle step on unit vectors, parallel over systems: system
    x[systems[i]] (n, d) of row r = owner[i] takes the steps h[r, :] (or h[0, :], shared),
    ``counts[o]`` of them before output o, where (``record``) P, the cluster count and Ebar
    go to p[i, o], c[i, o], e[i, o] (``_stats_identity``); ok[i]: finite afterwards.

    Per row: beta[r], usa[r], factor[r] (USA prefactor: B = I, a_N e^{log_rate} times the
    kernel e^{beta(<x_i, x_j> - 1)}; general, a_N e^{log_rate - beta} times
    e^{beta max_j s_ij}), project[r] (``euler``, else ``euler-unprojected``) and general[r]
    (s_ij = <x_i, B x_j>, values V x_j with bt[which[r]] = B^T, vt[which[r]] = V^T; else
    B = V = I, BLAS above d = BLAS_DIM)."""
    for i in prange(systems.size):
        ok[i] = _march_one(x[systems[i]], owner[i], h, counts, beta, usa, factor, project,
                           general, bt, vt, which, record, delta, cdelta, p[i], c[i], e[i])


@njit(cache=True, fastmath=False, nogil=True)
def _march_angles_one(tb, r, h, beta, usa, factor, project):
    n = tb.shape[0]
    hr = r if h.shape[0] > 1 else 0
    num = np.empty(n)
    den = np.empty(n)
    rad = np.empty(n)
    for k in range(h.shape[1]):
        _step_angles(tb, beta[r], h[hr, k], usa[r], factor[r], project[r], num, den, rad)
    return _finite(tb)


@njit(parallel=True, cache=True, fastmath=False)
def march_angles(th, systems, owner, h, beta, usa, factor, project, ok):
    """:func:`march` for angles th (systems, n) (d = 2, B = V = I; ``_step_angles``), every
    step of h[r] (no statistics)."""
    for i in prange(systems.size):
        ok[i] = _march_angles_one(th[systems[i]], owner[i], h, beta, usa, factor, project)


def step_schedule(times: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Steps of size dt that land on every output time (a shorter last step before an
    output when dt does not divide the interval): the step sizes and the number of steps
    before each output (0 for an output at the start)."""
    t = np.asarray(times, float)
    if t.ndim != 1 or t.size < 1 or np.any(np.diff(t) <= 0) or t[0] < 0:
        raise InputError("times", "must be increasing output times >= 0")
    steps, counts, now = [], [], 0.0
    for target in t:
        k = 0
        while now < target - 1e-12 * max(1.0, target):
            h = min(dt, target - now)
            steps.append(h)
            now = target if h < dt else now + h
            k += 1
        counts.append(k)
    return np.asarray(steps, float), np.asarray(counts, np.int64)


def run_batch(x: np.ndarray, beta: np.ndarray, times: np.ndarray, dt: float, *,
              model: str = "sa", rule: str = "euler-unprojected", delta: float = 1e-3,
              cluster_delta: float = 1e-4, B: np.ndarray | None = None,
              V: np.ndarray | None = None, time_unit: str = "raw") -> dict[str, np.ndarray]:
    """Advance systems x (S, n, d) (unit vectors; the final ones returned as ``x``) with
    per-system beta (S,)
    through ``times`` by steps of ``dt`` (see :func:`step_schedule`) and return the per-output
    statistics ``p``, ``clusters``, ``ebar`` (each (S, n_times)).

    ``B``, ``V``: None (identity), one (d, d) matrix for every system, or (S, d, d) per
    system. USA: u_i = (1/n) sum_j e^{beta <x_i, B x_j>} V x_j (``scaled``: times
    e^{-beta}); SA divides by the softmax sum instead."""
    if rule not in RULES:
        raise InputError("rule", f"must be one of {', '.join(RULES)}", rule)
    if model not in ("sa", "usa"):
        raise InputError("model", "must be sa or usa", model)
    x = np.array(x, dtype=float, order="C")      # a copy: the caller's array is kept
    n_sys, n, d = x.shape
    beta = np.broadcast_to(np.asarray(beta, float), (n_sys,)).copy()
    steps, counts = step_schedule(times, dt)
    usa = model == "usa"
    unit = 1.0 if time_unit == "scaled" else 0.0
    general = B is not None or V is not None
    # USA prefactor per system: (1/n) e^{beta(1 - unit)} for B = I (sum of e^{beta(g - 1)});
    # general B: (1/n) e^{-beta unit}, the row shift e^{beta max} applied in the kernel
    factor = np.exp(beta * ((0.0 if general else 1.0) - unit)) / n if usa else np.ones(n_sys)
    p = np.empty((n_sys, counts.size))
    c = np.empty((n_sys, counts.size), np.int64)
    e = np.empty((n_sys, counts.size))
    if general:
        bm = np.eye(d) if B is None else np.asarray(B, float)
        vm = np.eye(d) if V is None else np.asarray(V, float)
        per = bm.ndim == 3 or vm.ndim == 3
        bm = np.broadcast_to(bm, (n_sys, d, d)) if per else bm[None]
        vm = np.broadcast_to(vm, bm.shape)
        bm = np.ascontiguousarray(np.swapaxes(bm, 1, 2))     # B^T, V^T per system
        vm = np.ascontiguousarray(np.swapaxes(vm, 1, 2))
        which = np.arange(n_sys, dtype=np.int64) if per else np.zeros(n_sys, np.int64)
    else:
        bm = vm = np.empty((0, d, d))
        which = np.zeros(n_sys, np.int64)
    # every system is its own row of ``march`` (the particle ensembles' step); the whole
    # schedule in one call, each system's tokens in cache for all its steps
    rows = np.arange(n_sys, dtype=np.int64)
    flags = {k: np.full(n_sys, v) for k, v in (("usa", usa), ("project", rule == "euler"),
                                               ("general", general))}
    march(x, rows, rows, steps[None], counts, beta, flags["usa"], factor, flags["project"],
          flags["general"], bm, vm, which, True, float(delta), float(cluster_delta), p, c, e,
          np.empty(n_sys, np.bool_))
    if x.dtype != np.float64 or not np.all(np.isfinite(x)):
        raise InputError("dt", "the run produced non-finite positions (USA at large beta: "
                         "a smaller dt or time_unit = 'scaled')")
    return {"p": p, "clusters": c, "ebar": e, "x": x}
