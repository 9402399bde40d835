"""Linear stability of the uniform state: growth rates, the most unstable mode, time scales.

Linearising d_t mu + div(mu grad(W*mu)) = 0 at p_inf = 1/|S^{d-1}|, a degree-k harmonic
perturbation grows at (USA)
    gamma_k = p_inf k (k+d-2) lambda_k
            = k (k+d-2) beta^{-1} Gamma(d/2) (2/beta)^{nu} I_{k+nu}(beta),   nu = (d-2)/2,
(d = 2: gamma_k = k^2 I_k(beta)/beta), and for SA at gamma_k / Z_inf with
Z_inf = Gamma(d/2) (2/beta)^{nu} I_nu(beta).  In the ``scaled`` time unit (USA only) every
rate is multiplied by e^{-beta}.  At beta = 0 (W(t) = t) only k = 1 grows: gamma_1 = (d-1)/d.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import digamma, gammaln, ive

from meanfield.theory.checks import (
    check_beta,
    check_dim,
    check_model,
    check_positive,
    check_time_unit,
)
from meanfield.theory.geometry import gegenbauer_index, harmonic_multiplicity


def log_growth_rate(k, beta, dim: int = 2, model: str = "usa", time_unit: str = "raw"):
    """log gamma_k (natural log), vectorised over k (real >= 0) and beta (broadcast).

    Evaluated with scipy.special.ive so that no intermediate overflows for any beta;
    -inf where gamma_k = 0 (k = 0, or k != 1 at beta = 0).
    """
    d = check_dim(dim)
    check_model(model)
    check_time_unit(time_unit, model)
    b = np.asarray(check_beta(beta), dtype=float)
    k = np.asarray(k, dtype=float)
    if np.any(~np.isfinite(k)) or np.any(k < 0):
        raise ValueError("k: must be real numbers >= 0")
    k, b = np.broadcast_arrays(k, b)
    nu = gegenbauer_index(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        poly = np.log(k) + np.log(k + d - 2) if d > 2 else 2 * np.log(k)
        bpos = np.where(b > 0, b, 1.0)
        log_i = np.log(ive(k + nu, bpos))  # log I_{k+nu}(beta) - beta
        out = poly - np.log(bpos) + gammaln(0.5 * d) + nu * np.log(2.0 / bpos) + log_i
        if model == "sa":
            out = out - np.log(ive(nu, bpos)) - gammaln(0.5 * d) - nu * np.log(2.0 / bpos)
        elif time_unit == "raw":
            out = out + bpos
        # beta = 0: W(t) = t, only k = 1 is unstable, gamma_1 = (d-1)/d (Z_inf = 1)
        zero = np.where(k == 1, np.log((d - 1) / d), -np.inf)
        out = np.where(b > 0, out, zero)
        out = np.where(k == 0, -np.inf, out)
    return out if out.ndim else float(out)


def growth_rate(k, beta, dim: int = 2, model: str = "usa", time_unit: str = "raw"):
    """Linear growth rate gamma_k of a degree-k perturbation of the uniform state.

    Parameters
    ----------
    k : float or array_like
        Degree (real values give the continuous curve).
    beta : float or array_like
        Inverse temperature >= 0 (broadcast against k).
    dim : int
        Ambient dimension d (the sphere is S^{d-1}).
    model : {"usa", "sa"}
    time_unit : {"raw", "scaled"}
        ``scaled`` (USA only) measures time in units where the kernel is e^{beta(t-1)}/beta.

    Returns
    -------
    gamma : float or ndarray
        In 1/time. Intermediate results never overflow; a raw USA rate above ~1.8e308
        (beta > ~709) is returned as inf: use ``log_growth_rate`` or ``time_unit="scaled"``.
    """
    with np.errstate(over="ignore"):
        return np.exp(log_growth_rate(k, beta, dim, model, time_unit))


def _k_range(beta_max: float, d: int) -> int:
    """Largest degree worth scanning: well beyond sqrt(2 beta + nu^2) - nu."""
    return int(2 * np.sqrt(2 * beta_max + 1) + d + 12)


def most_unstable_mode(beta, dim: int = 2):
    """k_max = argmax_{k >= 1} gamma_k (the same for SA and USA), vectorised over beta."""
    d = check_dim(dim)
    b = np.asarray(check_beta(beta), dtype=float)
    kk = np.arange(1, _k_range(float(np.max(b, initial=0.0)), d) + 1)
    lg = log_growth_rate(kk, b[..., None], d, "sa")
    out = kk[np.argmax(lg, axis=-1)]
    return int(out) if out.ndim == 0 else out


def kmax_asymptotic(beta, dim: int = 2):
    """Large-beta k_max from I_mu(beta) ~ e^beta (2 pi beta)^{-1/2} e^{-(mu^2 - 1/4)/(2 beta)}.

    Maximising log(k(k+d-2)) - (k+nu)^2/(2 beta) over real k gives
        k* = sqrt(2 beta + nu^2) - nu  ~  sqrt(2 beta) - (d-2)/2,   nu = (d-2)/2.
    """
    d = check_dim(dim)
    b = np.asarray(check_beta(beta), dtype=float)
    nu = gegenbauer_index(d)
    out = np.sqrt(2 * b + nu * nu) - nu
    return float(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class ModeSelection:
    """How the linear phase selects a mode at one beta (rates in ``time_unit``)."""

    beta: float
    dim: int
    model: str
    time_unit: str
    k_max: int
    gamma_max: float
    log_gamma_max: float
    k_runner_up: int
    gamma_runner_up: float
    gamma_ratio: float
    k: np.ndarray
    gamma: np.ndarray
    log_gamma: np.ndarray

    def as_dict(self) -> dict:
        def num(x):
            return float(x) if np.isfinite(x) else None

        return {
            "beta": self.beta, "dim": self.dim, "model": self.model,
            "time_unit": self.time_unit, "k_max": self.k_max,
            "gamma_max": num(self.gamma_max), "log_gamma_max": self.log_gamma_max,
            "k_runner_up": self.k_runner_up, "gamma_runner_up": num(self.gamma_runner_up),
            "gamma_ratio": self.gamma_ratio,
            "k_max_asymptotic": kmax_asymptotic(self.beta, self.dim),
            "gamma": [num(g) if np.isfinite(lg) else (0.0 if lg == -np.inf else None)
                      for g, lg in zip(self.gamma, self.log_gamma, strict=True)],
            "log_gamma": [float(lg) if np.isfinite(lg) else None for lg in self.log_gamma],
        }


def mode_selection(beta: float, dim: int = 2, model: str = "usa", time_unit: str = "raw",
                   kmax_list: int | None = None) -> ModeSelection:
    """k_max, gamma_max, the runner-up degree and gamma_runner_up/gamma_max at one beta.

    The ratio (the same for SA and USA) measures how sharply the linear phase selects
    k_max: a competing mode is suppressed by (delta/|c_0|)^{1 - ratio} at exit (seed 003).
    ``gamma`` lists gamma_k for k = 0..K with K >= 2 k_max + 5 (or ``kmax_list``).
    """
    d = check_dim(dim)
    b = float(check_beta(beta))
    check_model(model)
    check_time_unit(time_unit, model)
    kk = np.arange(0, _k_range(b, d) + 1)
    lg = log_growth_rate(kk, b, d, model, time_unit)
    order = np.argsort(-lg[1:], kind="stable") + 1
    k1, k2 = int(order[0]), int(order[1])
    big_k = max(2 * k1 + 5, kmax_list or 0)
    if big_k + 1 > kk.size:
        kk = np.arange(0, big_k + 1)
        lg = log_growth_rate(kk, b, d, model, time_unit)
    kk, lg = kk[: big_k + 1], lg[: big_k + 1]
    with np.errstate(over="ignore"):
        gam = np.exp(lg)
        ratio = float(np.exp(lg[k2] - lg[k1])) if np.isfinite(lg[k2]) else 0.0
    return ModeSelection(b, d, model, time_unit, k1, float(gam[k1]), float(lg[k1]), k2,
                         float(gam[k2]), ratio, kk, gam, lg)


def kmax_transitions(dim: int = 2, up_to: int = 10) -> np.ndarray:
    """The beta values where k_max steps from k to k+1, k = 1..up_to (root-found).

    beta_k solves gamma_k(beta) = gamma_{k+1}(beta), i.e.
        (k+1)(k+d-1) I_{k+1+nu}(beta) = k (k+d-2) I_{k+nu}(beta);
    the ratio I_{k+1+nu}/I_{k+nu} increases from 0 to 1, so the root is unique.
    d = 2 gives 1.0445 (1 -> 2), 3.1654 (2 -> 3), 6.2113 (3 -> 4), 10.2285 (4 -> 5) for the
    steps of k_max.
    """
    d = check_dim(dim)
    n = int(check_positive(up_to, "up_to", integer=True, minimum=1, inclusive=True))
    nu = gegenbauer_index(d)
    out = np.empty(n)
    for i, k in enumerate(range(1, n + 1)):
        def f(b, k=k):
            return (np.log((k + 1) * (k + d - 1)) + np.log(ive(k + 1 + nu, b))
                    - np.log(k * (k + d - 2)) - np.log(ive(k + nu, b)))
        lo, hi = 1e-6, max(1.0, 0.5 * (k + nu) ** 2)
        while f(hi) < 0:
            hi *= 2
        out[i] = brentq(f, lo, hi, xtol=1e-14, rtol=1e-14)
    return out


def exit_time(tokens, beta: float, dim: int = 2, model: str = "usa", threshold: float = 0.3,
              time_unit: str = "raw") -> float:
    """Predicted mean exit time from the uniform state for N i.i.d. uniform tokens.

    Linear theory with the most unstable degree only (seed 003, Sec. 4). Measure the
    distance to uniform by the relative L2 size of the degree-k_max component,
        r(t) = ||P_k (p_t - p_inf)||_{L2(sigma)} / ||p_inf||_{L2(sigma)}.
    For N i.i.d. tokens N r(0)^2 is chi-squared with m = dim H_k degrees of freedom
    (m = 2 on the circle), and r(t) = r(0) e^{gamma_max t}; the exit time T is when r hits
    ``threshold`` = delta. Hence
        E[T] = (1/gamma_max) [ (1/2) ln N + ln delta - (1/2)(psi(m/2) + ln 2) ],
    i.e. T ~ (ln N)/(2 gamma_max) + O(1/gamma_max). On the circle r = sqrt(2)|c_k| and
    the total-variation distance (1/2) integral |p - p_inf| = (2/pi)|c_k| = sqrt(2) r / pi, so
    a TV threshold tau corresponds to delta = pi tau / sqrt(2). Nonlinear saturation and
    competing modes are ignored: expect O(1/gamma_max) offsets at finite N, not in the slope.
    """
    n = check_positive(tokens, "tokens", minimum=1.0)
    delta = check_positive(threshold, "threshold")
    sel = mode_selection(beta, dim, model, time_unit)
    m = harmonic_multiplicity(sel.k_max, sel.dim)
    g = np.exp(sel.log_gamma_max)
    return float((0.5 * np.log(n) + np.log(delta) - 0.5 * (digamma(0.5 * m) + np.log(2.0))) / g)
