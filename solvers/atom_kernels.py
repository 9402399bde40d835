"""Compiled kernels of the circle's atoms (``solvers.atoms``), shared by a single run and by
ensembles (``solvers.ensemble``): the periodic events (absorb, capture) of one density, and
the atoms' part of the right-hand side, step-size bound and merge trigger for a block of
members with padded atom arrays (members x atom slots; slot a < n_atoms[r] is an atom).

Kernel convention (``solvers.drifts.convolution``): the scaled exponential kernel
W(t) = e^{beta (t - 1)}/beta, W'(t) = e^{beta (t - 1)}, W''(t) = beta e^{beta (t - 1)}
(W(t) = t at beta = 0); USA velocities are multiplied by the run's ``rate``, SA velocities are
g / (beta c) (g at beta = 0).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

TWO_PI = 2.0 * math.pi
#: a bump extends from its peak down to this fraction of the peak (or its next minimum)
BUMP_FLOOR = 1e-3


@njit(cache=True, nogil=True, inline="always")
def _wrap(d):
    """np.mod(d + pi, 2 pi) - pi: the angle d in [-pi, pi)."""
    return (d + math.pi) % TWO_PI - math.pi


@njit(cache=True, nogil=True)
def absorb(p, dx, positions, masses, n):
    """Each atom j < n takes the density of its cell (in place: p, positions in [0, 2 pi),
    masses): mass and first moment conserved. Returns whether anything moved."""
    m = p.size
    changed = False
    for j in range(n):
        i = min(int(positions[j] / dx), m - 1)
        dm = p[i] * dx
        if dm > 0:
            th = (i + 0.5) * dx
            positions[j] = positions[j] + dm * _wrap(th - positions[j]) / (masses[j] + dm)
            masses[j] = masses[j] + dm
            p[i] = 0.0
            changed = True
    return changed


@njit(cache=True, nogil=True)
def _core_range(p, centre, dx):
    """(lo, hi): the bump around ``centre`` (from its peak, the cells on either side
    while p decreases and stays above BUMP_FLOOR x the peak), cells lo..hi modulo M. The
    second moment over the whole bump tells a collapsed cluster from the tip of a wide one."""
    m = p.size
    i0 = min(int(centre / dx), m - 1)
    best = (i0 - 3) % m
    for o in range(-2, 4):
        j = (i0 + o) % m
        if p[j] > p[best]:
            best = j
    i0 = best
    floor = BUMP_FLOOR * p[i0]
    lo = i0
    hi = i0
    while (i0 - lo) < m // 2 and floor < p[(lo - 1) % m] <= p[lo % m]:
        lo -= 1
    while (hi - i0) < m // 2 and floor < p[(hi + 1) % m] <= p[hi % m]:
        hi += 1
    return lo, hi


@njit(cache=True, nogil=True)
def capture_scan(p, level, min_mass, width, dx, out_pos, out_mass):
    """Capture of ``solvers.atoms`` on the density p (in place): the cores of
    ``solvers.clusters.density_clusters`` (runs of p > level mean(p) of mass >= min_mass),
    in the order of their centres; each core's bump (``_core_range``) of mass >= min_mass and
    standard deviation <= width (radians) becomes an atom at its centre of mass, its cells
    emptied. Writes the atoms to out_pos, out_mass and returns their number."""
    m = p.size
    thr = level * np.mean(p)
    n_above = 0
    for i in range(m):
        if p[i] > thr:
            n_above += 1
    if n_above == 0:
        return 0
    centres = np.empty(m)
    n_cores = 0
    if n_above == m:
        re = 0.0
        im = 0.0
        for i in range(m):
            th = (i + 0.5) * dx
            re += p[i] * math.cos(th)
            im += p[i] * math.sin(th)
        centres[0] = math.atan2(im, re) % TWO_PI
        n_cores = 1
    else:
        shift = 0
        while p[shift] > thr:
            shift += 1
        i = 0
        while i < m:
            if p[(i + shift) % m] > thr:
                s = i
                mass = 0.0
                re = 0.0
                im = 0.0
                while i < m and p[(i + shift) % m] > thr:
                    j = (i + shift) % m
                    th = (j + 0.5) * dx
                    mass += p[j]
                    re += p[j] * math.cos(th)
                    im += p[j] * math.sin(th)
                    i += 1
                if mass * dx >= min_mass and i > s:
                    centres[n_cores] = math.atan2(im, re) % TWO_PI
                    n_cores += 1
            else:
                i += 1
    order = np.argsort(centres[:n_cores])
    n_out = 0
    for oc in range(n_cores):
        centre = centres[order[oc]]
        lo, hi = _core_range(p, centre, dx)
        mass = 0.0
        first = 0.0
        for i in range(lo, hi + 1):
            j = i % m
            w = p[j] * dx
            mass += w
            first += w * _wrap((j + 0.5) * dx - centre)
        if mass < min_mass:
            continue
        c = centre + first / mass
        second = 0.0
        for i in range(lo, hi + 1):
            j = i % m
            d = _wrap((j + 0.5) * dx - c)
            second += p[j] * dx * d * d
        if math.sqrt(second / mass) > width:
            continue
        out_pos[n_out] = c % TWO_PI
        out_mass[n_out] = mass
        n_out += 1
        for i in range(lo, hi + 1):
            p[i % m] = 0.0
    return n_out


@njit(cache=True, nogil=True, inline="always")
def _kernels(beta, cd):
    """(W, W', W'') of the scaled exponential kernel at cos d = cd."""
    if beta == 0.0:
        return cd, 1.0, 0.0
    e = math.exp(beta * cd - beta)
    return e / beta, e, beta * e


@njit(cache=True, nogil=True)
def atom_terms(spec, x, mass, n_atoms, amult, pgrad, pconv, modes, usa, rate, beta, shift,
               inv_m, cin, vx, speed):
    """The atoms' part of the right-hand side of members r (rows of all arrays):

    * cin[r] += lambda~_k S_k, S_k = sum_a m_a e^{-ik x_a} (``amult`` = the drift's point
      multipliers): the atoms' potential joins the density's before the inverse FFT;
    * vx[r, a]: the exact velocity at atom a, from the density's spectrum ``spec`` (``pgrad``,
      ``pconv``: the drift's point-evaluation multipliers of the field and the potential,
      including the half-cell shift) and the pair forces of the other atoms;
    * speed[r] = max_a |vx[r, a]| (0 without atoms).

    Only the modes k < modes[r] enter: beyond them every multiplier is below 1e-17 of its
    largest (``significant_modes``), so what is left out is below round-off.
    """
    rows, width = spec.shape
    tg = np.empty(width, np.complex128)
    tc = np.empty(width, np.complex128)
    for r in range(rows):
        n = n_atoms[r]
        speed[r] = 0.0
        if n == 0:
            continue
        kk = modes[r]
        for k in range(kk):
            tg[k] = pgrad[r, k] * spec[r, k]
            tc[k] = pconv[r, k] * spec[r, k]
        for a in range(n):
            step = complex(math.cos(x[r, a]), -math.sin(x[r, a]))   # e^{-i x_a}
            z = 1.0 + 0.0j
            g = 0.0
            c = 0.0
            ma = mass[r, a]
            for k in range(kk):
                cin[r, k] += amult[r, k] * (ma * z)
                g += z.real * tg[k].real + z.imag * tg[k].imag       # Re(conj(z) tg)
                if not usa[r]:
                    c += z.real * tc[k].real + z.imag * tc[k].imag
                z = z * step
            g *= inv_m
            c *= inv_m
            for b in range(n):
                d = x[r, a] - x[r, b]
                w0, w1, _ = _kernels(beta[r], math.cos(d))
                g -= w1 * math.sin(d) * mass[r, b]
                c += w0 * mass[r, b]
            if usa[r]:
                v = g * rate[r]
            else:
                c += shift[r]
                v = g / (beta[r] * c) if beta[r] > 0 else g
            vx[r, a] = v
            if abs(v) > speed[r]:
                speed[r] = abs(v)


def significant_modes(*multipliers: np.ndarray, tol: float = 1e-17) -> int:
    """1 + the largest k at which some multiplier exceeds tol times its own largest value."""
    last = 0
    for mult in multipliers:
        a = np.abs(mult)
        big = np.flatnonzero(a > tol * a.max()) if a.max() > 0 else np.zeros(1, int)
        last = max(last, int(big[-1]))
    return last + 1


@njit(cache=True, nogil=True)
def atom_rate(x, mass, n_atoms, usa, rate, beta, out):
    """``AtomicCircle._atom_rate`` per member: max_j sum_{k != j} m_k |W'' sin^2 d - W' cos d|
    times the run's rate (SA: divided by min_j beta sum_k m_k W(cos d_jk), times 1 + beta);
    0 with fewer than two atoms."""
    for r in range(x.shape[0]):
        n = n_atoms[r]
        out[r] = 0.0
        if n < 2:
            continue
        best = 0.0
        zmin = np.inf
        for a in range(n):
            s = 0.0
            z = 0.0
            for b in range(n):
                d = x[r, a] - x[r, b]
                cd = math.cos(d)
                w0, w1, w2 = _kernels(beta[r], cd)
                z += w0 * mass[r, b]
                if b != a:
                    sd = math.sin(d)
                    s += abs(w2 * sd * sd - w1 * cd) * mass[r, b]
            best = max(best, s)
            zmin = min(zmin, beta[r] * z)
        out[r] = best * rate[r]
        if not usa[r] and beta[r] > 0:
            out[r] = out[r] / zmin * (1.0 + beta[r])


@njit(cache=True, nogil=True)
def min_gap(x, n):
    """Smallest circular distance between two of the atoms x[:n] (inf with fewer than two):
    the merge trigger."""
    g = np.inf
    for a in range(n):
        for b in range(a + 1, n):
            g = min(g, abs(_wrap(x[a] - x[b])))
    return g
