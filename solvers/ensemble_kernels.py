"""Compiled pieces of one ensemble step (``solvers.ensemble``): everything between the
batched FFTs, for the rows ``rows`` of the ensemble's (members x cells) and
(members x atom slots) arrays, in the single run's operations and order (so that a member
without atoms is bitwise its single run; ``solvers.stepping.advance``, ``FiniteVolume.rhs``,
``Convolution.face_velocity``, ``AtomicCircle``).

One step: ``load_stage`` (stage 1 input) -> FFT, multipliers, ``atom_terms``, inverse FFT ->
``faces_flux`` (k1) -> ``choose_dt`` (and the stage 2 input) -> ... ``faces_flux`` (k2) ->
``stage_three`` (the stage 3 input) -> ... ``faces_flux`` (k3) -> ``finish`` (the
compensated update, the positivity check) -> ``periodic_events``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from solvers.atom_kernels import absorb, atom_rate, capture_scan, min_gap

TWO_PI = 2.0 * math.pi


@njit(cache=True, fastmath=False, nogil=True, inline="always")
def _slope(left, right, limiter):
    """minmod(th*left, (left+right)/2, th*right), ``FiniteVolume.rhs``'s operations."""
    b1 = min(abs(left), abs(right)) * limiter
    b2 = abs(left + right) * 0.5
    s = math.copysign(min(b1, b2), left)
    return s if left * right > 0.0 else s * 0.0


@njit(cache=True, fastmath=False, nogil=True, inline="always")
def _fv2_row(v, qr, bg, limiter, inv_dx, still, out, qq, d, slope, flux):
    """``FiniteVolume.rhs`` at the state qr with face velocities v (v[j] at face j + 1/2):
    -(F_{j+1/2} - F_{j-1/2})/dx into out (0 if ``still``: atoms alone); returns max |v|.
    qq, d, slope, flux: work arrays of length M + 1 (periodic copies at index M)."""
    m = qr.size
    for j in range(m):
        qq[j] = qr[j]
    qq[m] = qq[0]
    d[0] = qq[0] - qq[m - 1]                  # d[j] = q_j - q_{j-1}
    for j in range(1, m + 1):
        d[j] = qq[j] - qq[j - 1]
    for j in range(m):
        slope[j] = _slope(d[j], d[j + 1], limiter)
    slope[m] = slope[0]
    top = 0.0                                 # max(max v+, -min v-) = max |v|
    for j in range(m):
        top = max(top, abs(v[j]))
    if still:
        out[:] = 0.0
        return top
    for j in range(m):
        vf = v[j]
        # F_{j+1/2} = v+ (q_j + s_j/2) + v- (q_{j+1} - s_{j+1}/2) + pbar v
        flux[j + 1] = (qq[j] + slope[j] * 0.5) * max(vf, 0.0) \
            + min(vf, 0.0) * (qq[j + 1] - slope[j + 1] * 0.5) + vf * bg
    flux[0] = flux[m]
    for j in range(m):
        out[j] = (flux[j + 1] - flux[j]) * -inv_dx
    return top


@njit(cache=True, fastmath=False, nogil=True)
def faces_flux(raw, inv_n, q, usa, scale, beta, shift, dx, background, limiter, inv_dx,
               still, out, speed):
    """For every row i: the face velocities of ``Convolution.face_velocity`` from the
    unnormalised inverse FFT raw[i] of the potential (c = raw / n; USA v = (c_{j+1} - c_j)
    scale; SA v = (c_{j+1} - c_j) / (dx beta (c_f + shift)), 1 instead of beta (...) at
    beta = 0), then -(F_{j+1/2} - F_{j-1/2})/dx of ``FiniteVolume.rhs`` at the state q[i]
    (out[i]; 0 where ``still[i]``: atoms alone) and the max face speed (speed[i])."""
    n_rows, m = q.shape
    v = np.empty(m)
    c = np.empty(m + 1)
    qq = np.empty(m + 1)
    d = np.empty(m + 1)
    slope = np.empty(m + 1)
    flux = np.empty(m + 1)
    # simple loops with periodic copies at index m (no branches: they vectorise)
    for r in range(n_rows):
        for j in range(m):
            c[j] = raw[r, j] * inv_n
        c[m] = c[0]
        if usa[r]:
            sc = scale[r]
            for j in range(m):
                v[j] = (c[j + 1] - c[j]) * sc
        elif beta[r] > 0:
            b, sh = beta[r], shift[r]
            for j in range(m):
                v[j] = (c[j + 1] - c[j]) / (dx * (b * (0.5 * (c[j + 1] + c[j]) + sh)))
        else:
            for j in range(m):
                v[j] = (c[j + 1] - c[j]) / (dx * 1.0)
        speed[r] = _fv2_row(v, q[r], background[r], limiter, inv_dx, still[r], out[r], qq,
                            d, slope, flux)


@njit(cache=True, fastmath=False, nogil=True)
def faces_flux_given(vel, q, background, limiter, inv_dx, out, speed):
    """``FiniteVolume.rhs`` for every row i with the face velocities vel[i] computed by the
    member's own drift (any drift), and the max face speed."""
    n_rows, m = q.shape
    qq = np.empty(m + 1)
    d = np.empty(m + 1)
    slope = np.empty(m + 1)
    flux = np.empty(m + 1)
    for r in range(n_rows):
        speed[r] = _fv2_row(vel[r], q[r], background[r], limiter, inv_dx, False, out[r], qq,
                            d, slope, flux)


@njit(cache=True, fastmath=False, nogil=True, inline="always")
def _centres_row(v, qr, bg, lf, scale, out, f, a, flux):
    """``Rusanov.rhs`` (``lf`` False; scale = -1/dx) or ``LaxFriedrichs.rhs`` (``lf`` True;
    scale = 0.5/dx) at the state qr with the centre velocities v[j + 1] = v_j (v[0], v[M + 1]
    its periodic copies) into out; returns max |v|. f, a, flux: work arrays."""
    m = qr.size
    top = 0.0
    for j in range(1, m + 1):
        top = max(top, abs(v[j]))
    for j in range(m):
        f[j + 1] = (qr[j] + bg) * v[j + 1]
    f[0], f[m + 1] = f[m], f[1]
    if lf:
        # -(f_{j+1} - f_{j-1}) / (2 dx)
        for j in range(m):
            out[j] = (f[j] - f[j + 2]) * scale
        return top
    # flux_j at face j + 1/2 = (f_j + f_{j+1})/2 - max(|v_j|, |v_{j+1}|) (q_{j+1} - q_j)/2
    for j in range(m + 1):
        a[j] = abs(v[j + 1])
    for j in range(m - 1):
        flux[j + 1] = 0.5 * (f[j + 1] + f[j + 2]) - 0.5 * max(a[j], a[j + 1]) * (qr[j + 1]
                                                                                 - qr[j])
    flux[m] = 0.5 * (f[m] + f[m + 1]) - 0.5 * max(a[m - 1], a[m]) * (qr[0] - qr[m - 1])
    flux[0] = flux[m]
    for j in range(m):
        out[j] = (flux[j + 1] - flux[j]) * scale
    return top


@njit(cache=True, fastmath=False, nogil=True)
def centres_flux(rawg, rawc, inv_n, q, usa, rate, beta, shift, background, lf, scale, out,
                 speed):
    """For every row i: the centre velocities of ``Convolution.centre_velocity`` from the
    unnormalised inverse FFTs rawg[i] (derivative) and rawc[i] (potential; SA only) (USA
    v = (g / n) rate; SA v = (g / n) / (beta (c / n + shift)), / 1 at beta = 0), then the
    right-hand side of ``Rusanov.rhs`` or ``LaxFriedrichs.rhs`` (``_centres_row``) at the
    state q[i] (out[i]) and max |v| (speed[i])."""
    n_rows, m = q.shape
    v = np.empty(m + 2)
    f = np.empty(m + 2)
    a = np.empty(m + 1)
    flux = np.empty(m + 1)
    for r in range(n_rows):
        if usa[r]:
            rt = rate[r]
            for j in range(m):
                v[j + 1] = (rawg[r, j] * inv_n) * rt
        elif beta[r] > 0:
            b, sh = beta[r], shift[r]
            for j in range(m):
                v[j + 1] = (rawg[r, j] * inv_n) / (b * (rawc[r, j] * inv_n + sh))
        else:
            for j in range(m):
                v[j + 1] = (rawg[r, j] * inv_n) / 1.0
        v[0], v[m + 1] = v[m], v[1]               # periodic copies: v[j + 1] = v_j
        speed[r] = _centres_row(v, q[r], background[r], lf, scale, out[r], f, a, flux)


@njit(cache=True, fastmath=False, nogil=True)
def centres_flux_given(vel, q, background, lf, scale, out, speed):
    """``_centres_row`` for every row i with the centre velocities vel[i] computed by the
    member's own drift (any drift), and max |v|."""
    n_rows, m = q.shape
    v = np.empty(m + 2)
    f = np.empty(m + 2)
    a = np.empty(m + 1)
    flux = np.empty(m + 1)
    for r in range(n_rows):
        for j in range(m):
            v[j + 1] = vel[r, j]
        v[0], v[m + 1] = v[m], v[1]
        speed[r] = _centres_row(v, q[r], background[r], lf, scale, out[r], f, a, flux)


@njit(cache=True, nogil=True)
def finish_euler(rows, q, comp, dt, k1, lf, bg, floor, tn, cour, t, steps, last_dt, courant,
                 low):
    """The forward-Euler update (``euler_update``: q + dt k, or Lax-Friedrichs' average
    (q_{j-1} + q_{j+1})/2 + dt k_j in ``LaxFriedrichs.euler_update``'s order), no
    compensation; the clocks and the positivity check of ``finish`` (returns its count)."""
    n_rows, m = k1.shape
    new = np.empty(m)
    count = 0
    for i in range(n_rows):
        r = rows[i]
        d = dt[i]
        if lf:
            for j in range(1, m - 1):
                new[j] = (k1[i, j] * d + 0.5 * q[r, j + 1]) + 0.5 * q[r, j - 1]
            new[0] = k1[i, 0] * d + 0.5 * (q[r, 1] + q[r, m - 1])
            new[m - 1] = k1[i, m - 1] * d + 0.5 * (q[r, 0] + q[r, m - 2])
        else:
            for j in range(m):
                new[j] = q[r, j] + d * k1[i, j]
        mn = np.inf
        bad = False
        for j in range(m):
            out = new[j]
            q[r, j] = out
            comp[r, j] = 0.0
            if out < mn:
                mn = out
            if not math.isfinite(out):
                bad = True
        low[i] = bad or bg[r] + mn < floor[i]
        count += low[i]
        t[r] = tn[i]
        steps[r] += 1
        last_dt[r] = d
        courant[r] = max(courant[r], cour[i])
    return count


@njit(cache=True, nogil=True)
def load_stage(rows, q, x, rin, xs):
    """Stage 1 input: the rows' densities and atom positions."""
    for i in range(rows.size):
        r = rows[i]
        rin[i, :] = q[r, :]
        xs[i, :] = x[r, :]


@njit(cache=True, nogil=True)
def choose_dt(rows, speed, aspeed, pf, dx, cfl, acc, accuracy, rate, beta, usa, dmass, na,
              mass, x, linear_fraction, t, target, q, k1, kx1, fixed, viol, stage2, dt, tn,
              courant, rin, xs):
    """The step of each row (``solvers.stepping.advance`` with ``AtomicCircle``'s bounds):
    dt = min(cfl * bound, accuracy_dt), or the fixed step fixed[i] > 0 (a step above the
    bound counts in viol), shortened to land on the target or (adaptive) halved to avoid a
    sliver; then, if ``stage2``, the stage 2 input q + dt k1 (and x + dt kx1)."""
    n_rows, m = rin.shape
    ar = np.zeros(n_rows)
    atom_rate(x, mass, na, usa, rate, beta, ar)
    for i in range(n_rows):
        r = rows[i]
        bound = pf[i] * dx / speed[i] if speed[i] > 0 else np.inf
        a = acc[i]
        if na[i] > 0:
            if dmass[i] <= 0:
                bound = np.inf
            if aspeed[i] > 0:
                bound = min(bound, dx / aspeed[i])
            total = dmass[i]
            for s in range(na[i]):
                total += mass[i, s]
            if dmass[i] < linear_fraction * total:
                rr = ar[i] + rate[i] * (beta[i] + 1.0) * dmass[i]
                a = accuracy[i] / rr if rr > 0 else np.inf
        if fixed[i] > 0:
            d = fixed[i]
            if d > bound * (1 + 1e-12):
                viol[r] += 1
        else:
            d = min(cfl[i] * bound, a)
        remaining = target[r] - t[r]
        if d >= remaining * (1 - 1e-12):
            d = remaining
            tn[i] = target[r]
        else:
            if fixed[i] == 0 and d > 0.5 * remaining:
                d = 0.5 * remaining
            tn[i] = t[r] + d
        dt[i] = d
        courant[i] = d / bound if bound > 0 and math.isfinite(bound) else 0.0
        if not stage2:
            continue
        for j in range(m):
            rin[i, j] = q[r, j] + d * k1[i, j]
        for s in range(xs.shape[1]):
            xs[i, s] = x[i, s] + d * kx1[i, s]


@njit(cache=True, nogil=True)
def stage_three(rows, q, x, dt, k12, k2, kx12, kx2, rin, xs):
    """k12 = k1 + k2 (in place of k1) and the stage 3 input q + (dt/4) k12."""
    n_rows, m = rin.shape
    for i in range(n_rows):
        r = rows[i]
        d = 0.25 * dt[i]
        for j in range(m):
            k = k12[i, j] + k2[i, j]
            k12[i, j] = k
            rin[i, j] = q[r, j] + d * k
        for s in range(xs.shape[1]):
            k = kx12[i, s] + kx2[i, s]
            kx12[i, s] = k
            xs[i, s] = x[r, s] + d * k


@njit(cache=True, nogil=True, inline="always")
def kahan(old, incr, comp):
    """(old + incr, the new compensation) with the compensation comp carried from the last
    step (``stepping._compensated_add``'s operations)."""
    y = incr - comp
    out = old + y
    return out, (out - old) - y


@njit(cache=True, nogil=True)
def finish(rows, q, comp, x, xcomp, dt, k12, k3, kx12, kx3, bg, floor, tn, cour, t, steps,
           last_dt, courant, low):
    """q+ = q + (dt/6)(k12 + 4 k3) with Kahan compensation carried in comp (and the same for
    the atoms); the clock, step count, last dt and largest Courant number; low[i]: the
    density went below floor (negative or non-finite). Returns the number of such rows."""
    n_rows, m = k12.shape
    count = 0
    for i in range(n_rows):
        r = rows[i]
        h = dt[i] / 6.0
        mn = np.inf
        bad = False
        for j in range(m):
            out, comp[r, j] = kahan(q[r, j], h * (k12[i, j] + 4.0 * k3[i, j]), comp[r, j])
            q[r, j] = out
            if out < mn:
                mn = out
            if not math.isfinite(out):
                bad = True
        for s in range(kx12.shape[1]):
            x[r, s], xcomp[r, s] = kahan(x[r, s], h * (kx12[i, s] + 4.0 * kx3[i, s]),
                                          xcomp[r, s])
        low[i] = bad or bg[r] + mn < floor[i]
        count += low[i]
        t[r] = tn[i]
        steps[r] += 1
        last_dt[r] = dt[i]
        courant[r] = max(courant[r], cour[i])
    return count


@njit(cache=True, nogil=True)
def periodic_events(rows, atomic, since, every, window, q, comp, x, xcomp, mass, na, dmass,
                    bg, t, config_t, config_x, config_n, level, min_mass, width, residual,
                    dx, python):
    """``AtomicCircle.events`` after a step, for the common cases, on the batch's arrays:
    counts the step; every ``every`` steps absorbs each atom's cell and, if that is all
    that happens (no capture, no merge, no residual), applies it (masses, positions,
    the density's mass and mean, the configuration; the compensation restarts). Sets
    python[i] where the member's own ``events`` must run (a capture, atoms within the merge
    window, the residual): the step counter is then left for it."""
    m = q.shape[1]
    p = np.empty(m)
    pc = np.empty(m)
    cap = np.empty(m)
    for i in range(rows.size):
        python[i] = False
        r = rows[i]
        if not atomic[i]:
            continue
        n = na[r]
        trigger = window[i] * (1 + 1e-9)      # loose: the member's events decide
        if min_gap(x[r], n) < trigger:
            python[i] = True
            continue
        if since[r] + 1 < every:
            since[r] += 1
            continue
        for j in range(m):
            p[j] = bg[r] + q[r, j]
        pos = np.empty(n)
        ms = np.empty(n)
        for a in range(n):
            pos[a] = x[r, a] % TWO_PI
            ms[a] = mass[r, a]
        changed = absorb(p, dx, pos, ms, n) if n > 0 else False
        pc[:] = p
        if capture_scan(pc, level[i], min_mass[i], width[i], dx, cap, cap) > 0:
            python[i] = True
            continue
        near = min_gap(pos, n) < trigger     # absorbing moved the atoms
        dens = 0.0
        total = 0.0
        for j in range(m):
            dens += p[j]
        dens *= dx
        for a in range(n):
            total += ms[a]
        if near or (n > 0 and 0 < dens <= residual[i] * (dens + total)):
            python[i] = True
            continue
        since[r] = 0
        if not changed:
            continue
        mean = np.mean(p)
        dmass[r] = np.sum(p) * dx
        bg[r] = mean
        for j in range(m):
            q[r, j] = p[j] - mean
            comp[r, j] = 0.0
        for a in range(n):
            x[r, a] = pos[a] % TWO_PI
            xcomp[r, a] = 0.0
            mass[r, a] = ms[a]
            config_x[r, a] = pos[a] % TWO_PI
        config_t[r] = t[r]
        config_n[r] = n
