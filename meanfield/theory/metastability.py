"""Reference laws of clustering and dynamic metastability (seeds 000 and 001), closed forms.

Conventions as in ``docs/conventions.md``: probability masses, USA with the 1/N normalisation
(raw kernel e^{beta t}, ``scaled`` e^{beta (t - 1)}), SA with the self term in Z, angles on
S^1, Ebar = n^{-2} sum_ij m_i m_j e^{beta (<x_i, x_j> - 1)} in (0, 1].

* :func:`orthogonal_hitting_time` -- t*(beta) with gamma_beta(t*) = 1 - delta for N tokens
  started orthonormal (seed 001 Thm 4.6): the curve Gamma_{inf, delta} of (4.13).
* :func:`merge_time_closed_form` -- the two-cluster merge time through Ei and E_1 (seed 000
  §2.8 of the notes), USA with any masses and SA with equal masses.
* :func:`greedy_staircase` -- the plateau levels and merge order of the greedy predictor
  (closest pair first, weighted mean angle; notes-000 §2.7), and the well-prepared levels
  1/n + i (i + 1)/n^2 of Thm 6.4 (:func:`staircase_levels`).
* :func:`well_prepared` -- Def. 6.1 for a configuration on S^1.
* :func:`rescaled_pair_time` -- the reduced law tan(u/2) = tan(u0/2) beta^{-c t} of a pair in
  the closest-pair time (6.1) (Lemma 6.5 corrected: notes-000 §2.7).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.integrate import quad
from scipy.special import exp1, expi

from meanfield.theory.checks import check_beta, check_model, check_positive, check_time_unit
from meanfield.theory.errors import InputError


def orthogonal_hitting_time(beta: float, tokens: int, delta: float, model: str = "sa"
                            ) -> float:
    """t* = inf{t: gamma_beta(t) = 1 - delta}, gamma the pairwise inner product of N tokens
    started orthonormal (seed 001 (4.10)/(4.11)), in closed form (notes-001 §2.3):

        SA:   t* = 1/2 int_delta^1 e^{beta s} / (s (N - (N - 1) s)) ds
                   + ((N - 1)/(2N)) log((N - (N - 1) delta)/delta)
        USA:  t* = (N/2) int_0^{1 - delta} e^{-beta g} / ((1 - g)(1 + (N - 1) g)) dg

    (the remaining integrals by adaptive quadrature, relative error ~1e-13). The points
    (t*(beta), beta) form Gamma_{inf, delta}, the large-d limit of the phase boundary."""
    b = float(check_beta(beta))
    n = check_positive(tokens, "tokens", integer=True, minimum=2, inclusive=True)
    d = float(delta)
    if not 0 < d < 1:
        raise InputError("delta", "must be in (0, 1)", delta)
    if check_model(model) == "sa":
        # e^{beta s}/(s (N - (N-1)s)) = [e^{beta s} - 1]/(...) + 1/(s (N - (N-1) s)); the
        # second part integrates to (1/N) log(s/(N - (N-1)s)), giving the log term above
        # together with the first
        val, _ = quad(lambda s: math.expm1(b * s) / (s * (n - (n - 1) * s)), d, 1.0,
                      epsabs=0.0, epsrel=1e-13, limit=400)
        rest = (1.0 / n) * (math.log(1.0) - math.log(d / (n - (n - 1) * d)))
        return 0.5 * (val + rest) + ((n - 1) / (2.0 * n)) * math.log((n - (n - 1) * d) / d)
    val, _ = quad(lambda g: math.exp(-b * g) / ((1 - g) * (1 + (n - 1) * g)), 0.0, 1.0 - d,
                  epsabs=0.0, epsrel=1e-13, limit=400)
    return 0.5 * n * val


def gamma_curve(betas: ArrayLike, tokens: int, delta: float, model: str = "sa") -> np.ndarray:
    """Gamma_{inf, delta}: t*(beta) of :func:`orthogonal_hitting_time` for every beta."""
    return np.array([orthogonal_hitting_time(float(b), tokens, delta, model)
                     for b in np.atleast_1d(np.asarray(betas, float))])


def _usa_integral(beta: float, gap0: float, gap1: float) -> float:
    """int_{gap1}^{gap0} e^{beta (1 - cos s)} / sin s ds, with w = 1 - cos s:
    (1/2)[Ei(beta w0) - Ei(beta w1)] + (e^{2 beta}/2)[E_1(beta(2 - w0)) - E_1(beta(2 - w1))]."""
    w0, w1 = 1.0 - math.cos(gap0), 1.0 - math.cos(gap1)
    if beta == 0.0:
        return math.log(math.tan(gap0 / 2) / math.tan(gap1 / 2))
    far = 0.5 * (math.exp(2 * beta - beta * (2 - w0)) * (math.exp(beta * (2 - w0))
                                                          * exp1(beta * (2 - w0)))
                 - math.exp(2 * beta - beta * (2 - w1)) * (math.exp(beta * (2 - w1))
                                                            * exp1(beta * (2 - w1))))
    return 0.5 * (expi(beta * w0) - expi(beta * w1)) + far


def merge_time_closed_form(gap0: float, gap1: float, beta: float,
                           masses: Sequence[float] = (0.5, 0.5), model: str = "usa",
                           time_unit: str = "raw") -> float:
    """Time for two point clusters on S^1 to close their gap from ``gap0`` to ``gap1``
    (the law of ``meanfield.theory.reference.two_cluster_rate``), in closed form:

        USA:  T = I / (m_A + m_B)  (raw: times e^{-beta}),
              I = int e^{beta(1 - cos s)}/sin s ds = (1/2)[Ei(beta w0) - Ei(beta w1)]
                  + (e^{2 beta}/2)[E_1(beta(2 - w0)) - E_1(beta(2 - w1))],  w = 1 - cos gap;
        SA, m_A = m_B:  T = (1/2)[I + log(tan(gap0/2)/tan(gap1/2))]
              (1/|dD/dt| = (1 + e^{beta w})/(2 sin D) for equal masses).

    SA with unequal masses has no closed form (a term C e^{beta w}/(a e^{beta w} + b) remains)
    and raises InputError: use ``two_cluster_merge_time``. Valid while beta (2 - w) < 700."""
    b = float(check_beta(beta))
    check_model(model)
    check_time_unit(time_unit, model)
    g0, g1 = check_positive(gap0, "gap0"), check_positive(gap1, "gap1")
    if not g1 < g0 < math.pi:
        raise InputError("gap1", "must satisfy 0 < gap1 < gap0 < pi", (gap0, gap1))
    try:
        ma, mb = (float(m) for m in masses)
    except (TypeError, ValueError):
        raise InputError("masses", "must be two numbers (mA, mB)", masses) from None
    if not (ma > 0 and mb > 0):
        raise InputError("masses", "must be two numbers > 0", masses)
    if b * 2 > 700:
        raise InputError("beta", "closed form overflows beyond beta = 350 (e^{2 beta}): use "
                         "two_cluster_merge_time", beta)
    i_usa = _usa_integral(b, g0, g1)
    if model == "usa":
        return i_usa / (ma + mb) * (1.0 if time_unit == "scaled" else math.exp(-b))
    if abs(ma - mb) > 1e-14 * (ma + mb):
        raise InputError("masses", "SA has a closed form for equal masses only (use "
                         "two_cluster_merge_time)", masses)
    return 0.5 * (i_usa + math.log(math.tan(g0 / 2) / math.tan(g1 / 2)))


def staircase_levels(n: int) -> np.ndarray:
    """Thm 6.4 (seed 000): the plateau levels of Ebar for a well-prepared configuration of n
    tokens, 1/n + i (i + 1)/n^2 for i = 0..n-1 (the last is 1)."""
    k = check_positive(n, "n", integer=True, minimum=1, inclusive=True)
    i = np.arange(k)
    return 1.0 / k + i * (i + 1) / k**2


def greedy_staircase(theta: ArrayLike, masses: ArrayLike | None = None) -> dict:
    """The greedy merge predictor (notes-000 §2.7, beta -> inf): the closest pair (largest
    cosine) merges first into one token of the summed mass at the weighted mean angle; on
    every plateau Ebar = sum_q M_q^2 (masses normalised to 1). Returns ``levels`` (n - k + 1
    values, from the initial one to 1), ``pairs`` (the merged groups' token lists in merge
    order) and ``gaps`` (the gap closed by each merge)."""
    th = np.asarray(theta, float).ravel().copy()
    m = np.ones(th.size) if masses is None else np.asarray(masses, float).ravel().copy()
    if th.size < 1 or m.shape != th.shape or np.any(m <= 0) or not np.all(np.isfinite(th)):
        raise InputError("theta", "must be finite angles with positive masses")
    m = m / m.sum()
    groups = [[i] for i in range(th.size)]
    levels, pairs, gaps = [float(np.sum(m**2))], [], []
    while th.size > 1:
        c = np.cos(th[:, None] - th[None, :])
        np.fill_diagonal(c, -np.inf)
        i, j = np.unravel_index(int(np.argmax(c)), c.shape)
        i, j = min(i, j), max(i, j)
        d = math.remainder(th[j] - th[i], 2 * math.pi)
        gaps.append(abs(d))
        new = th[i] + m[j] / (m[i] + m[j]) * d
        pairs.append(sorted(groups[i] + groups[j]))
        th[i], m[i], groups[i] = new, m[i] + m[j], pairs[-1]
        th, m = np.delete(th, j), np.delete(m, j)
        del groups[j]
        levels.append(float(np.sum(m**2)))
    return {"levels": np.array(levels), "pairs": pairs, "gaps": np.array(gaps)}


def well_prepared(theta: ArrayLike, beta: float, c: float = 1.0) -> bool:
    """Def. 6.1 (seed 000): 0 <= theta_1 < ... < theta_n <= pi and, for every i in 2..n-1 and
    k > i, cos(theta_i - theta_1) > cos(theta_k - theta_i) + c log(beta)/beta (token i is
    closer to theta_1 than any later token is to theta_i: the tokens join theta_1 one by
    one). ``c`` > 1 in the definition; the default checks the borderline c = 1."""
    th = np.asarray(theta, float).ravel()
    b = float(check_beta(beta))
    if b <= 1:
        raise InputError("beta", "must be > 1 (the margin is c log(beta)/beta)", beta)
    if th.size < 2 or np.any(np.diff(th) <= 0) or th[0] < 0 or th[-1] > math.pi:
        return False
    margin = c * math.log(b) / b
    for i in range(1, th.size - 1):
        if np.any(math.cos(th[i] - th[0]) <= np.cos(th[i + 1:] - th[i]) + margin):
            return False
    return True


def rescaled_pair_time(u0: float, u1: float, beta: float, c: float) -> float:
    """Rescaled time for a pair's gap to go from u0 to u1 under du/dt = -c log(beta) sin u
    (the closest-pair clock (6.1), Lemma 6.5 with c(beta) = 0): tan(u/2) = tan(u0/2)
    beta^{-c t}, so t = log(tan(u0/2)/tan(u1/2)) / (c log beta) (notes-000 §2.7: the paper's
    2/c should read 1/(2c) in the limit)."""
    b = float(check_beta(beta))
    if not (0 < u1 < u0 < math.pi and b > 1 and c > 0):
        raise InputError("u1", "needs 0 < u1 < u0 < pi, beta > 1, c > 0", (u0, u1))
    return math.log(math.tan(u0 / 2) / math.tan(u1 / 2)) / (c * math.log(b))
