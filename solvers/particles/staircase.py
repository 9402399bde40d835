"""Weighted tokens on S^1 that merge, on the clocks of seed 000 §6 (the energy staircase).

Tokens theta_i with masses m_i (fractions of the n tokens, summing to 1) move by

    USA:  v_i = a sum_j m_j e^{beta(cos(theta_j - theta_i) - 1)} sin(theta_j - theta_i)
          (a = 1: the 1/N normalisation with the kernel e^{beta(t - 1)}, ``scaled`` time;
          a = 1/n: seed 000's (3.7), the gradient of E_beta with its 1/n^2);
    SA:   v_i = sum_j m_j e^{beta cos_ij} sin_ij / sum_j m_j e^{beta cos_ij}  (self term in Z),

and two tokens closer than ``window`` merge (seed 000 Def. 6.3, default window
1/sqrt(beta log beta)) into one token of the summed mass at their weighted mean angle, so
mass is conserved exactly and, for USA, so is the angular centre of mass sum_i m_i theta_i
(the pair kernel is odd). Merges are located by event detection of the DOP853 integrator
(scipy ``solve_ivp``), not by a step size.

Clocks (the variable s the ODE is integrated in; physical time t is integrated alongside):

* ``physical``: s = t;
* ``closest`` (6.1), in the normalised form of notes-000 §1.5: dt/ds = log(beta)
  e^{beta(1 - c*)}, c* = the largest cos(theta_i - theta_j) over distinct tokens (the
  closest pair), so dtheta/ds = log(beta) sum_j ... e^{beta(cos_ij - c*)} ... with every
  exponent <= 0: nothing overflows at any beta;
* ``gradient`` (§6.2): dtheta/ds = log(beta) v/|v|, the normalised-gradient flow that the
  authors' Fig. 4 code integrates (|v| the Euclidean norm over the n original tokens, a
  merged token counted with its multiplicity as the code's duplicates are); dt/ds =
  log(beta)/|v|.

Physical time is accumulated as log(1 + t): over each integration segment, log int e^{L(s)}
ds with L = log dt/ds evaluated in logs along the dense solution (adaptive quadrature of
e^{L - max L}), so it stays finite and accurate however many decades the plateaus span (t
itself overflows float64 beyond 1e308; ``log1p_t`` does not).

The energy Ebar = sum_ij m_i m_j e^{beta(cos_ij - 1)} in (0, 1] (1: one cluster) and its
plateaus are what seed 000 plots; on a plateau Ebar ~ sum_q M_q^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy.integrate import solve_ivp

from meanfield.theory.checks import check_beta, check_model
from meanfield.theory.errors import InputError

CLOCKS = ("physical", "closest", "gradient")
NORMALIZATIONS = ("1/N", "1/N^2")


@dataclass
class Merge:
    """One merge: clock time s, physical time t, the tokens' masses, the new token."""

    s: float
    t: float                  # physical time (inf beyond 1e308)
    parts: tuple[float, float]
    mass: float
    angle: float
    gap: float


@dataclass
class State:
    """Angles of the representatives (n, unwrapped), masses (0 for merged-away tokens),
    ``rep``: each original token's current representative, physical time t."""

    theta: np.ndarray
    mass: np.ndarray
    rep: np.ndarray
    log1p_t: float = 0.0      # log(1 + t): finite however long the plateaus get
    merges: list[Merge] = field(default_factory=list)

    @property
    def t(self) -> float:
        """Physical time (inf beyond e^709 ~ 1e308: use ``log1p_t``)."""
        return math.expm1(self.log1p_t) if self.log1p_t < 709.0 else math.inf

    def positions(self) -> np.ndarray:
        """Every original token's angle (that of its representative), token order kept."""
        return self.theta[self.rep]

    def copy(self) -> State:
        return State(self.theta.copy(), self.mass.copy(), self.rep.copy(), self.log1p_t,
                     list(self.merges))


class MergingCircle:
    """Weighted merging tokens on S^1 on a chosen clock (see the module docstring)."""

    def __init__(self, beta: float, model: str = "usa", *, clock: str = "physical",
                 window: float | None = None, normalization: str = "1/N",
                 time_unit: str = "scaled", rtol: float = 1e-10, atol: float = 1e-12) -> None:
        self.beta = float(check_beta(beta))
        self.model = check_model(model)
        if clock not in CLOCKS:
            raise InputError("clock", f"must be one of {', '.join(CLOCKS)}", clock)
        if clock != "physical" and self.beta <= 1:
            raise InputError("beta", "must be > 1 for the rescaled clocks (factor log beta)",
                             beta)
        self.clock = clock
        if normalization not in NORMALIZATIONS:
            raise InputError("normalization", f"must be one of {', '.join(NORMALIZATIONS)}",
                             normalization)
        self.normalization = normalization
        if time_unit not in ("raw", "scaled") or (time_unit == "raw" and model == "usa"
                                                  and self.beta > 700):
            raise InputError("time_unit", "must be scaled (or raw with beta <= 700)",
                             time_unit)
        self.time_unit = time_unit
        if window is None or window == 0:
            window = 1.0 / math.sqrt(self.beta * math.log(self.beta)) if self.beta > 1 \
                else 1e-3
        if not 0 < window < math.pi:
            raise InputError("window", "must be in (0, pi)", window)
        self.window = float(window)
        self.rtol, self.atol = float(rtol), float(atol)
        self.log_beta = math.log(self.beta) if self.beta > 1 else 1.0

    # ------------------------------------------------------------------ fields
    def initial_state(self, theta: ArrayLike, masses: ArrayLike | None = None) -> State:
        th = np.asarray(theta, float).ravel()
        m = np.ones(th.size) if masses is None else np.asarray(masses, float).ravel()
        if th.size < 1 or m.shape != th.shape or not np.all(np.isfinite(th)) or \
                np.any(m <= 0):
            raise InputError("theta", "must be finite angles with positive masses")
        state = State(th.copy(), m / m.sum(), np.arange(th.size))
        self._merge_close(state, 0.0)
        return state

    def _usa_factor(self, n: int) -> float:
        a = 1.0 if self.normalization == "1/N" else 1.0 / n
        return a * (math.exp(self.beta) if self.time_unit == "raw" else 1.0)

    def velocity(self, theta: np.ndarray, m: np.ndarray, n: int, shift: float = 1.0
                 ) -> np.ndarray:
        """v_i times e^{beta(1 - shift)} (shift = 1: the physical velocity; shift = c*: the
        closest-pair normalisation, every exponent beta(cos - c*) <= 0 between distinct
        tokens)."""
        return self._velocities(theta[None, :], m, n, np.array([shift]))[0]

    def _velocities(self, th: np.ndarray, m: np.ndarray, n: int, shift: np.ndarray
                    ) -> np.ndarray:
        """``velocity`` at P states at once: th (P, k), shift (P,) -> (P, k)."""
        d = th[:, None, :] - th[:, :, None]                # theta_j - theta_i
        c = np.cos(d)
        x = self.beta * (c - shift[:, None, None])
        diag = np.arange(th.shape[1])
        x[:, diag, diag] = -np.inf        # the self term has sin 0 (and would overflow)
        e = m[None, None, :] * np.exp(x)
        num = (e * np.sin(d)).sum(axis=2)
        if self.model == "usa":
            return num * self._usa_factor(n)
        z = (m[None, None, :] * np.exp(self.beta * (c - 1.0))).sum(axis=2)
        return num / z

    def closest_cos(self, theta: np.ndarray) -> float:
        if theta.size < 2:
            return 1.0
        c = np.cos(theta[:, None] - theta[None, :])
        np.fill_diagonal(c, -np.inf)
        return float(c.max())

    def ebar(self, state: State) -> float:
        a = state.mass > 0
        th, m = state.theta[a], state.mass[a]
        return float(m @ np.exp(self.beta * (np.cos(th[:, None] - th[None, :]) - 1.0)) @ m)

    def speeds(self, state: State) -> tuple[float, float]:
        """(|v| on the physical clock, |dtheta/ds| on the run's clock), sum over tokens with
        their masses: |v|^2 = sum_i m_i v_i^2."""
        a = state.mass > 0
        th, m = state.theta[a], state.mass[a]
        n = state.mass.size
        v = self.velocity(th, m, n)
        phys = math.sqrt(float(m @ v**2))
        if self.clock == "physical":
            return phys, phys
        rhs = self._rhs_parts(th, m, n)[0]
        return phys, math.sqrt(float(m @ rhs**2))

    def _rhs_parts(self, th: np.ndarray, m: np.ndarray, n: int) -> tuple[np.ndarray, float]:
        """(dtheta/ds, log dt/ds) on the clock, the logarithm evaluated without overflow."""
        if self.clock == "physical":
            return self.velocity(th, m, n), 0.0
        if self.clock == "closest":
            cs = self.closest_cos(th)
            v = self.velocity(th, m, n, shift=cs)   # v e^{beta(1 - c*)}, SA and USA alike
            return self.log_beta * v, math.log(self.log_beta) + self.beta * (1.0 - cs)
        # |v| = e^{beta(c* - 1)} |v~| with v~ the closest-pair-shifted velocity (no underflow)
        cs = self.closest_cos(th)
        vt = self.velocity(th, m, n, shift=cs)
        norm = math.sqrt(n * float(m @ vt**2))
        if norm == 0.0:
            return np.zeros_like(th), 0.0
        return self.log_beta * vt / norm, (math.log(self.log_beta) - math.log(norm)
                                            + self.beta * (1.0 - cs))

    # ------------------------------------------------------------------ stepping
    def _merge_close(self, state: State, s: float, slack: float = 1e-9) -> None:
        """Merge every pair closer than the window (closest first), recording events; at a
        located event the gap equals the window to the root finder's tolerance (slack)."""
        while True:
            a = np.flatnonzero(state.mass > 0)
            if a.size < 2:
                return
            th = state.theta[a]
            d = np.abs(np.remainder(th[:, None] - th[None, :] + math.pi, 2 * math.pi)
                       - math.pi)
            np.fill_diagonal(d, np.inf)
            k = int(np.argmin(d))
            i, j = divmod(k, a.size)
            if d[i, j] > self.window * (1 + slack):
                return
            self._merge(state, int(a[i]), int(a[j]), s, float(d[i, j]))

    def _merge(self, state: State, i: int, j: int, s: float, gap: float) -> None:
        mi, mj = state.mass[i], state.mass[j]
        keep, gone = (i, j) if i < j else (j, i)
        # the weighted mean on the unwrapped line, the partner brought next to keep
        partner = state.theta[keep] + math.remainder(state.theta[gone] - state.theta[keep],
                                                     2 * math.pi)
        m_keep, m_gone = state.mass[keep], state.mass[gone]
        state.theta[keep] = (m_keep * state.theta[keep] + m_gone * partner) / (mi + mj)
        state.mass[keep] = mi + mj
        state.mass[gone] = 0.0
        state.rep[state.rep == gone] = keep
        state.theta[gone] = state.theta[keep]
        state.merges.append(Merge(s, state.t, (float(m_keep), float(m_gone)), mi + mj,
                                  float(state.theta[keep]), gap))

    def _log_rates(self, y: np.ndarray, m: np.ndarray, n: int) -> np.ndarray:
        """L = log dt/ds at many states at once: y (k, P) angles of k tokens at P points."""
        th = y.T                                               # (P, k)
        k = th.shape[1]
        if k > 1:
            c = np.cos(th[:, None, :] - th[:, :, None])
            c[:, np.arange(k), np.arange(k)] = -np.inf
            cs = c.max(axis=(1, 2))
        else:
            cs = np.ones(th.shape[0])
        if self.clock == "closest":
            return math.log(self.log_beta) + self.beta * (1.0 - cs)
        vt = self._velocities(th, m, n, cs)
        norm = np.sqrt(n * (vt**2 @ m))
        with np.errstate(divide="ignore"):
            return math.log(self.log_beta) - np.log(norm) + self.beta * (1.0 - cs)

    def _log_elapsed(self, sol, s_a: float, s_b: float, m: np.ndarray, n: int) -> float:
        """log of the physical time elapsed over [s_a, s_b]: log int e^{L(s)} ds, L = log
        dt/ds along the dense solution, by composite 8-point Gauss-Legendre on panels that
        are halved until L varies by at most 2 across each (e^{L - max L} then resolved to
        ~1e-12), evaluated in logs."""
        if s_b <= s_a:
            return -math.inf
        if self.clock == "physical":
            return math.log(s_b - s_a)
        g, w = np.polynomial.legendre.leggauss(8)
        lo = np.linspace(s_a, s_b, 9)
        lo, hi = lo[:-1], lo[1:]
        logs: list[float] = []
        for _ in range(40):
            x = 0.5 * (hi - lo)[:, None] * (g[None, :] + 1.0) + lo[:, None]   # (panels, 8)
            ends = np.concatenate([lo[:, None], x, hi[:, None]], axis=1)
            big = self._log_rates(sol.sol(ends.ravel()), m, n).reshape(ends.shape)
            ok = big.max(axis=1) - big.min(axis=1) <= 2.0
            inner = big[ok, 1:-1]
            top = inner.max(axis=1, keepdims=True)
            logs.extend((top[:, 0] + np.log(0.5 * (hi[ok] - lo[ok])
                                             * (np.exp(inner - top) @ w))).tolist())
            if ok.all():
                break
            mid = 0.5 * (lo[~ok] + hi[~ok])          # halve the panels L varies too much on
            lo, hi = np.concatenate([lo[~ok], mid]), np.concatenate([mid, hi[~ok]])
        return float(np.logaddexp.reduce(logs)) if logs else -math.inf

    def advance(self, state: State, s0: float, s1: float) -> State:
        """From clock time s0 to s1 (merging on the way); returns the new state."""
        st = state.copy()
        s = s0
        n = st.mass.size
        while s < s1 and np.count_nonzero(st.mass > 0) > 1:
            a = np.flatnonzero(st.mass > 0)
            m = st.mass[a]

            def rhs(_s, y, m=m):
                return self._rhs_parts(y, m, n)[0]

            def gap_event(_s, y):
                d = np.abs(np.remainder(y[:, None] - y[None, :] + math.pi, 2 * math.pi)
                           - math.pi)
                np.fill_diagonal(d, np.inf)
                return float(d.min()) - self.window

            gap_event.terminal = True
            gap_event.direction = -1
            sol = solve_ivp(rhs, (s, s1), st.theta[a], method="DOP853", rtol=self.rtol,
                            atol=self.atol, events=gap_event,
                            dense_output=self.clock != "physical")
            if sol.status < 0:
                raise InputError("rtol", f"the integrator failed: {sol.message}")
            st.theta[a] = sol.y[:, -1]
            st.log1p_t = float(np.logaddexp(st.log1p_t, self._log_elapsed(sol, s, float(sol.t[-1]),
                                                                           m, n)))
            for i in a:   # merged-away tokens follow their representative
                st.theta[st.rep == i] = st.theta[i]
            s = float(sol.t[-1])
            if sol.status == 1:   # a merge
                self._merge_close(st, s, slack=1e-6)
            else:
                s = s1
        return st
