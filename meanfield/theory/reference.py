"""Reference laws derived in the papers: closed forms and scalar ODEs that solvers must follow.

Each function states its law; docs/conventions.md fixes the conventions (USA with the 1/N
normalisation, SA with the self term in Z, probability masses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.integrate import quad, solve_ivp
from scipy.linalg import expm

from meanfield.theory.checks import check_beta, check_model, check_positive, check_time_unit
from meanfield.theory.errors import InputError


def _masses(masses: Sequence[float]) -> tuple[float, float]:
    try:
        ma, mb = (float(m) for m in masses)
    except (TypeError, ValueError):
        raise InputError("masses", "must be two numbers (mA, mB)", masses) from None
    if not (ma > 0 and mb > 0 and math.isfinite(ma + mb)):
        raise InputError("masses", "must be two finite numbers > 0", masses)
    return ma, mb


def two_cluster_rate(gap, beta: float, masses: Sequence[float] = (0.5, 0.5),
                     model: str = "usa", time_unit: str = "raw"):
    """dD/dt for two point clusters on the circle at angular gap D (masses mA, mB).

    USA:  dD/dt = -(mA + mB) e^{beta cos D} sin D   (``scaled``: times e^{-beta});
    SA:   dD/dt = -sin D e^{beta cos D} [mB / (mA e^beta + mB e^{beta cos D})
                                         + mA / (mB e^beta + mA e^{beta cos D})]
    (self term included in Z). Evaluated with e^{beta (cos D - 1)}: overflow-free.
    """
    b = float(check_beta(beta))
    check_model(model)
    check_time_unit(time_unit, model)
    ma, mb = _masses(masses)
    out = _rate(np.asarray(gap, dtype=float), b, ma, mb, model, time_unit)
    return float(out) if out.ndim == 0 else out


def _rate(d, b: float, ma: float, mb: float, model: str, time_unit: str):
    """The formula of ``two_cluster_rate`` on checked arguments (quadrature calls it often)."""
    e = np.exp(b * (np.cos(d) - 1.0))
    if model == "usa":
        scale = 1.0 if time_unit == "scaled" else math.exp(b)
        return -(ma + mb) * scale * e * np.sin(d)
    return -np.sin(d) * e * (mb / (ma + mb * e) + ma / (mb + ma * e))


def two_cluster_merge_time(gap0: float, gap1: float, beta: float,
                           masses: Sequence[float] = (0.5, 0.5), model: str = "usa",
                           time_unit: str = "raw") -> float:
    """Time for the gap of two point clusters to close from ``gap0`` to ``gap1``:
    T = integral_{gap1}^{gap0} dD / |dD/dt| (adaptive quadrature, relative error ~1e-12)."""
    g0 = check_positive(gap0, "gap0")
    g1 = check_positive(gap1, "gap1")
    if not g1 < g0 < math.pi:
        raise InputError("gap1", "must satisfy 0 < gap1 < gap0 < pi", (gap0, gap1))

    b = float(check_beta(beta))
    check_model(model)
    check_time_unit(time_unit, model)
    ma, mb = _masses(masses)

    def inv(s: float) -> float:
        return -1.0 / float(_rate(s, b, ma, mb, model, time_unit))

    t, _ = quad(inv, g1, g0, epsabs=0.0, epsrel=1e-13, limit=400)
    return float(t)


def two_cluster_gap(times, gap0: float, beta: float, masses: Sequence[float] = (0.5, 0.5),
                    model: str = "usa", time_unit: str = "raw", rtol: float = 1e-12):
    """D(t) at ``times`` (sorted, >= 0) from D(0) = ``gap0`` (DOP853 on the law above)."""
    t = np.asarray(times, dtype=float)

    def rhs(_t, y):
        return [two_cluster_rate(y[0], beta, masses, model, time_unit)]

    sol = solve_ivp(rhs, (0.0, float(t.max(initial=0.0))), [float(gap0)], t_eval=t,
                    rtol=rtol, atol=1e-14, method="DOP853")
    return sol.y[0]


def orthogonal_curve_rate(g, tokens: int, beta: float, model: str = "sa"):
    """dg/dt for N tokens started orthonormal (d >= N; seed 001, Thm 4.6): every pairwise
    inner product equals g(t), g(0) = 0, and

    SA:   dg/dt = 2 (1 - g) ((N - 1) g + 1) / (e^{beta (1 - g)} + N - 1),
    USA:  dg/dt = (2/N) e^{beta g} (1 - g) ((N - 1) g + 1).
    """
    n = check_positive(tokens, "tokens", integer=True, minimum=1, inclusive=True)
    b = float(check_beta(beta))
    check_model(model)
    g = np.asarray(g, dtype=float)
    if model == "sa":
        return 2.0 * (1 - g) * ((n - 1) * g + 1) / (np.exp(b * (1 - g)) + n - 1)
    return (2.0 / n) * np.exp(b * g) * (1 - g) * ((n - 1) * g + 1)


def orthogonal_curve(times, tokens: int, beta: float, model: str = "sa",
                     rtol: float = 1e-13) -> np.ndarray:
    """g(t) at ``times`` from g(0) = 0 (the law of :func:`orthogonal_curve_rate`)."""
    t = np.asarray(times, dtype=float)
    sol = solve_ivp(lambda _t, y: orthogonal_curve_rate(y, tokens, beta, model),
                    (0.0, float(t.max(initial=0.0))), [0.0], t_eval=t, rtol=rtol, atol=1e-15,
                    method="DOP853")
    return sol.y[0]


def causal_first_token(x0, value, t: float) -> np.ndarray:
    """Token 1 under a causal mask sees only itself (seed 002):
    x_1(t) = e^{t V} x_1(0) / |e^{t V} x_1(0)|."""
    y = expm(float(t) * np.asarray(value, dtype=float)) @ np.asarray(x0, dtype=float)
    return y / np.linalg.norm(y)
