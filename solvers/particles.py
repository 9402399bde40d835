"""Token (particle) dynamics of self-attention on the sphere S^{d-1}, any d >= 2.

N tokens x_1..x_N in S^{d-1} (``batch`` independent systems at once) move by

    dx_i/dt = P_{x_i}( (1/Z_i) sum_j w_ij m_j e^{beta <Q x_i, K x_j>} V x_j ),
    P_x y = y - <x, y> x,

* USA: Z_i = 1/a_N, a constant prefactor a_N in {1/N (default), 1, 1/N^2}
  (``normalization`` "1/N", "1", "1/N^2": the papers differ);
* SA:  Z_i = sum_j w_ij m_j e^{beta <Q x_i, K x_j>} (softmax, self term included);
* w_ij = 1 (``mask="none"``) or 1[j <= i] (``mask="causal"``, seed 002);
* m_j > 0 optional masses, rescaled to mean 1 so the empirical measure is
  mu = N^{-1} sum_j m_j delta_{x_j} (unit masses by default).

Only A = Q^T K and V enter. With Q = K = V = I and d = 2 the state is the angle vector and
(USA, 1/N)   dtheta_i/dt = -(1/N) sum_j m_j e^{beta cos(theta_i - theta_j)} sin(theta_i - theta_j).

Time units (USA only, as in ``meanfield.kernels``): ``raw`` (kernel e^{beta t}) or ``scaled``
(kernel e^{beta (t-1)}, time measured in units e^{-beta} of the raw one; every velocity is
e^{-beta} times the raw one and nothing overflows for any beta).

Evaluation never overflows: kernels are written e^{beta (s - M_i)} with the running row maximum
M_i of s_ij = <Q x_i, K x_j> (online log-sum-exp), and only the final USA factor e^{beta M_i}
is applied (it overflows only if the velocity itself does, e.g. raw USA beyond beta ~ 709).

Summation (``summation``):

* ``direct``  O(N^2): tiles of at most (batch, block, block) entries (``block``), so an
              N x N matrix is never formed unless block >= N (the dense evaluation).
* ``fourier`` O(N K), circle with identity QKV only: the Fourier-Bessel series
              e^{beta (cos s - 1)} = ive_0(beta) + 2 sum_{k>=1} ive_k(beta) cos(ks),
              e^{beta (cos s - 1)} sin s = sum_{k>=1} a_k sin(ks),  a_k = (2k/beta) ive_k(beta),
              truncated at K where both fall below 1e-17 of their largest value, and the power
              sums S_k = sum_j m_j e^{ik theta_j} (prefix sums for the causal mask):
              sum_j m_j e^{beta(cos(th_i - th_j) - 1)} sin(th_i - th_j)
                  = Im( sum_k a_k conj(S_k) e^{ik theta_i} ).
* ``auto``    ``fourier`` where it applies and N >= 4 K, else ``direct``.

Integrators: ``euler`` (projected: x <- (x + dt f)/|x + dt f|, what the papers use), ``rk4``
(classical, renormalised after each step) and ``adaptive`` (Dormand-Prince 5(4) with error
control, renormalised after each accepted step). On the circle the angles are not wrapped.

Energy (identity QKV; the same formula with <Q x_i, K x_j> for general QKV):
    E = (1/(2 beta N^2)) sum_ij m_i m_j e^{beta <x_i, x_j>},   Ebar = 2 beta e^{-beta} E in (0, 1].
It is a Lyapunov function (never decreases) for identity QKV, and more generally whenever
V = Q^T K is symmetric, without mask. Along the discrete flow (derivation in ``energy_rate``)
    USA: dE/dt = (1 / (a_N N^2)) sum_i m_i |v_i|^2      (a_N = 1/N: integral |v|^2 dmu),
    SA:  dE/dt = (1/N) sum_i m_i |v_i|^2 Z_i / N          (integral |v|^2 Z dmu).
At beta = 0 the kernel is W(t) = t (constant dropped, as in ``meanfield.kernels``):
E = (1/(2N^2)) sum_ij m_i m_j <x_i, A x_j> and Ebar := 2E.
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ive, logsumexp

from meanfield.checks import check_beta, check_dim, check_model, check_positive, check_time_unit
from meanfield.errors import InputError
from meanfield.geometry import harmonic_multiplicity, log_sphere_area
from meanfield.growth import mode_selection
from solvers.integrators import SolverError, output_times

TWO_PI = 2.0 * math.pi
MASKS = ("none", "causal")
NORMALIZATIONS = ("1/N", "1", "1/N^2")
QKV_ENSEMBLES = ("identity", "gaussian", "orthogonal", "symmetric-psd")
PARTICLE_INTEGRATORS = ("euler", "rk4", "adaptive")
SUMMATIONS = ("auto", "fourier", "direct")
REPRESENTATIONS = ("auto", "angles", "vectors")
#: relative size below which Fourier-Bessel coefficients are dropped
FOURIER_CUTOFF = 1e-17


# ---------------------------------------------------------------------------------------------
# Attention matrices
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttentionMatrices:
    """Q, K (p x d), V (d x d) and A = Q^T K; ``identity`` when Q = K = V = I exactly."""

    Q: np.ndarray
    K: np.ndarray
    V: np.ndarray
    A: np.ndarray
    name: str
    identity: bool

    @property
    def gradient_flow(self) -> bool:
        """V = Q^T K symmetric: the energy E is a Lyapunov function (unmasked dynamics)."""
        return bool(np.array_equal(self.A, self.V) and np.array_equal(self.A, self.A.T))


def attention_matrices(qkv: str | Sequence[ArrayLike] = "identity", dim: int = 2,
                       scale: float = 1.0, seed: int | np.random.Generator | None = None
                       ) -> AttentionMatrices:
    """Query, key and value matrices, given or drawn from a documented random ensemble.

    ``qkv`` is a tuple (Q, K, V) of arrays (Q, K of shape (p, d), V of shape (d, d)) or one of
    (G, G_Q, G_K, G_V: independent d x d matrices of i.i.d. N(0, 1) entries, s = ``scale``):

    * ``identity``      Q = K = V = I_d;
    * ``gaussian``      Q = I + (s/sqrt d) G_Q, K = I + (s/sqrt d) G_K, V = I + (s/sqrt d) G_V;
    * ``orthogonal``    Q, K, V independent Haar-random orthogonal matrices (QR of a Gaussian
                        matrix with the sign fix of Mezzadri 2007);
    * ``symmetric-psd`` Q = I, K = V = B = I + (s/d) G G^T: Q^T K = V symmetric positive
                        definite, the gradient-flow case of seed 001 (energy non-decreasing).
    """
    d = check_dim(dim)
    if not isinstance(qkv, str):
        try:
            q, k, v = (np.array(m, dtype=float) for m in qkv)
        except (TypeError, ValueError):
            raise InputError("qkv", "must be a name or a tuple (Q, K, V) of real matrices") \
                from None
        if (q.ndim != 2 or q.shape != k.shape or q.shape[1] != d or v.shape != (d, d)
                or not all(np.all(np.isfinite(m)) for m in (q, k, v))):
            raise InputError("qkv", f"Q and K must be finite (p, {d}) arrays, V ({d}, {d})",
                             f"shapes {q.shape}, {k.shape}, {v.shape}")
        a = q.T @ k
        eye = np.eye(d)
        ident = bool(np.array_equal(a, eye) and np.array_equal(v, eye))
        return AttentionMatrices(q, k, v, a, "user", ident)
    if qkv not in QKV_ENSEMBLES:
        raise InputError("qkv", f"must be one of {', '.join(QKV_ENSEMBLES)} or (Q, K, V)", qkv)
    s = check_positive(scale, "qkv_scale", inclusive=True)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    eye = np.eye(d)
    if qkv == "identity":
        return AttentionMatrices(eye, eye, eye, eye, qkv, True)
    if qkv == "gaussian":
        q, k, v = (eye + (s / math.sqrt(d)) * rng.standard_normal((d, d)) for _ in range(3))
    elif qkv == "orthogonal":
        q, k, v = (_haar_orthogonal(d, rng) for _ in range(3))
    else:
        g = rng.standard_normal((d, d))
        b = eye + (s / d) * (g @ g.T)
        q, k, v = eye, b, b.copy()
    return AttentionMatrices(q, k, v, q.T @ k, qkv, False)


def _haar_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    qm, r = np.linalg.qr(rng.standard_normal((d, d)))
    return qm * np.sign(np.diag(r))  # sign fix makes the law Haar (Mezzadri 2007)


# ---------------------------------------------------------------------------------------------
# Sampling and input helpers
# ---------------------------------------------------------------------------------------------
def uniform_sample(count: int, dim: int = 2, batch: int = 1,
                   seed: int | np.random.Generator | None = None, *,
                   representation: str = "auto") -> np.ndarray:
    """``batch`` x ``count`` i.i.d. uniform tokens on S^{d-1}.

    Angles in [0, 2 pi) of shape (batch, N) for d = 2 (``representation`` "auto" or "angles"),
    otherwise unit vectors (batch, N, d) from normalised standard Gaussians.
    """
    n = check_positive(count, "count", integer=True, minimum=1, inclusive=True)
    d = check_dim(dim)
    b = check_positive(batch, "batch", integer=True, minimum=1, inclusive=True)
    rep = _check_choice(representation, REPRESENTATIONS, "representation")
    if rep == "angles" and d != 2:
        raise InputError("representation", "'angles' needs dim = 2", representation)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if d == 2 and rep != "vectors":
        return rng.uniform(0.0, TWO_PI, size=(b, n))
    x = rng.standard_normal((b, n, d))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


def sample_circle_density(density: ArrayLike, count: int, batch: int = 1,
                          seed: int | np.random.Generator | None = None) -> np.ndarray:
    """i.i.d. angles (batch, N) from a density given as averages over M uniform cells.

    Cell j is [j dx, (j+1) dx), dx = 2 pi/M (the grid of ``solvers.circle``); the density is
    taken piecewise constant and sampled exactly by inverting its piecewise-linear CDF.
    """
    p = _check_density(density)
    n = check_positive(count, "count", integer=True, minimum=1, inclusive=True)
    b = check_positive(batch, "batch", integer=True, minimum=1, inclusive=True)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    m = p.size
    dx = TWO_PI / m
    cdf = np.concatenate(([0.0], np.cumsum(p) * dx))
    cdf /= cdf[-1]
    u = rng.uniform(0.0, 1.0, size=(b, n))
    j = np.clip(np.searchsorted(cdf, u, side="right") - 1, 0, m - 1)
    while np.any(p[j] <= 0):  # u landed on an empty cell's edge: move to the next cell
        j = np.where(p[j] <= 0, np.minimum(j + 1, m - 1), j)
    frac = (u - cdf[j]) / (cdf[j + 1] - cdf[j])
    return (j + np.clip(frac, 0.0, 1.0)) * dx


def _check_choice(value, allowed: Sequence[str], name: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InputError(name, f"must be one of {', '.join(allowed)}", value)
    return value


def _check_density(density) -> np.ndarray:
    p = np.asarray(density, dtype=float)
    if p.ndim != 1 or p.size < 2 or not np.all(np.isfinite(p)) or p.min() < 0 or p.sum() <= 0:
        raise InputError("density", "must be a 1-d array of >= 2 finite cell averages >= 0 "
                         "with positive mass")
    return p


def _batch_angles(angles, name: str = "angles") -> np.ndarray:
    th = np.asarray(angles, dtype=float)
    if th.ndim == 1:
        th = th[None]
    if th.ndim != 2 or th.shape[1] == 0 or not np.all(np.isfinite(th)):
        raise InputError(name, "must be finite angles of shape (N,) or (batch, N)",
                         f"shape {np.shape(angles)}")
    return th


def _batch_vectors(x, name: str = "x") -> np.ndarray:
    v = np.asarray(x, dtype=float)
    if v.ndim == 2:
        v = v[None]
    if v.ndim != 3 or v.shape[1] == 0 or v.shape[2] < 2 or not np.all(np.isfinite(v)):
        raise InputError(name, "must be finite unit vectors of shape (N, d) or (batch, N, d)",
                         f"shape {np.shape(x)}")
    return v


def _normalised_masses(masses, batch: int, count: int, name: str = "masses") -> np.ndarray:
    """Masses rescaled to mean 1 per system, shape (1 or batch, N)."""
    if masses is None:
        return np.ones((1, count))
    m = np.asarray(masses, dtype=float)
    if m.ndim == 1:
        m = m[None]
    if (m.ndim != 2 or m.shape[1] != count or m.shape[0] not in (1, batch)
            or not np.all(np.isfinite(m)) or np.any(m <= 0)):
        raise InputError(name, f"must be finite numbers > 0 of shape (N,) or (batch, N) with "
                         f"N = {count}", f"shape {m.shape}")
    return m / m.mean(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Circle diagnostics
# ---------------------------------------------------------------------------------------------
def fourier_coefficients(angles: ArrayLike, kmax: int, masses: ArrayLike | None = None
                         ) -> np.ndarray:
    """c_k = N^{-1} sum_j m_j e^{-ik theta_j}, k = 0..kmax, complex of shape (batch, kmax+1).

    Masses are rescaled to mean 1 (c_0 = 1). For i.i.d. uniform angles E|c_k|^2 = 1/N (k >= 1);
    the same convention as ``CircleScheme.fourier_amplitudes`` for a density.
    """
    th = _batch_angles(angles)
    kk = check_positive(kmax, "kmax", integer=True, minimum=0, inclusive=True)
    w = _normalised_masses(masses, th.shape[0], th.shape[1])
    z = np.exp(-1j * th)
    out = np.empty((th.shape[0], kk + 1), complex)
    zk = np.broadcast_to(w, th.shape).astype(complex)
    for k in range(kk + 1):  # repeated products: relative error ~ k eps
        out[:, k] = zk.mean(axis=-1)
        zk = zk * z
    return out


def circle_w1(angles: ArrayLike, density: ArrayLike, masses: ArrayLike | None = None
              ) -> np.ndarray:
    """Exact Wasserstein-1 distance on the circle between tokens and a cell-average density.

    W_1(mu, nu) = min_c integral_0^{2 pi} |F(theta) - G(theta) - c| d theta (the minimiser c is
    the median of F - G w.r.t. d theta), F, G the CDFs of mu = sum_j m_j delta_{theta_j}
    (masses normalised to 1) and of the density p (averages over M uniform cells
    [j dx, (j+1) dx), taken piecewise constant and normalised to mass 1). F - G is piecewise
    linear between the cell edges and the token angles, so the integral and the median are
    evaluated exactly (O((N + M) log(N + M)) per system). Returns shape (batch,).
    """
    th = _batch_angles(angles)
    p = _check_density(density)
    w = np.broadcast_to(_normalised_masses(masses, th.shape[0], th.shape[1]), th.shape)
    m = p.size
    dx = TWO_PI / m
    p = p / (p.sum() * dx)
    edges = np.arange(m + 1) * dx
    edges[-1] = TWO_PI
    cum_p = np.concatenate(([0.0], np.cumsum(p) * dx))
    out = np.empty(th.shape[0])
    for b in range(th.shape[0]):
        a = np.mod(th[b], TWO_PI)
        order = np.argsort(a)
        a = a[order]
        cw = np.concatenate(([0.0], np.cumsum(w[b][order]) / w[b].sum()))
        s = np.sort(np.concatenate((edges, a)))
        lo_s, hi_s = s[:-1], s[1:]
        length = hi_s - lo_s
        f = cw[np.searchsorted(a, lo_s, side="right")]  # F on (s_k, s_{k+1})
        j = np.clip(np.floor(0.5 * (lo_s + hi_s) / dx).astype(int), 0, m - 1)
        h0 = f - (cum_p[j] + p[j] * (lo_s - edges[j]))
        h1 = f - (cum_p[j] + p[j] * (hi_s - edges[j]))
        c = _uniform_median(np.minimum(h0, h1), np.maximum(h0, h1), length)
        out[b] = _abs_integral(np.minimum(h0, h1), np.maximum(h0, h1), length, c)
    return out


def _uniform_median(lo: np.ndarray, hi: np.ndarray, length: np.ndarray) -> float:
    """Median of a function that is linear from lo to hi on pieces of the given lengths.

    Phi(c) = measure{H <= c} = sum_k L_k clip((c - lo_k)/(hi_k - lo_k), 0, 1) is piecewise
    linear in c; sweep its breakpoints and solve Phi(c) = total/2.
    """
    flat = hi - lo <= 0
    slope = np.where(flat, 0.0, length / np.where(flat, 1.0, hi - lo))
    pos = np.concatenate((lo, hi))
    dslope = np.concatenate((slope, -slope))
    jump = np.concatenate((np.where(flat, length, 0.0), np.zeros_like(length)))
    order = np.argsort(pos, kind="stable")
    pos, dslope, jump = pos[order], dslope[order], jump[order]
    s_after = np.cumsum(dslope)  # slope of Phi right after each event
    gaps = np.diff(pos)
    phi = np.cumsum(jump) + np.concatenate(([0.0], np.cumsum(s_after[:-1] * gaps)))
    half = 0.5 * float(length.sum())
    m = int(np.searchsorted(phi, half, side="left"))
    if m == 0:
        return float(pos[0])
    m = min(m, pos.size - 1)
    left_limit = phi[m - 1] + s_after[m - 1] * (pos[m] - pos[m - 1])
    if left_limit >= half and s_after[m - 1] > 0:
        return float(pos[m - 1] + (half - phi[m - 1]) / s_after[m - 1])
    return float(pos[m])


def _abs_integral(lo, hi, length, c: float) -> float:
    """sum_k integral over piece k of |H - c| (H linear from lo_k to hi_k over length L_k)."""
    width = hi - lo
    mid = 0.5 * (lo + hi)
    inside = (lo < c) & (c < hi)
    safe = np.where(inside, width, 1.0)
    val = np.where(inside, ((hi - c) ** 2 + (c - lo) ** 2) / (2.0 * safe), np.abs(mid - c))
    return float(np.dot(length, val))


# ---------------------------------------------------------------------------------------------
# Harmonic power and clusters
# ---------------------------------------------------------------------------------------------
def harmonic_power(x: ArrayLike, kmax: int, masses: ArrayLike | None = None, *,
                   representation: str = "vectors", block: int = 1024) -> np.ndarray:
    """Squared L^2(sigma) norm of the degree-k part of mu = N^{-1} sum_j m_j delta_{x_j}.

        ||P_k mu||^2 = (1/N^2) sum_ij m_i m_j (dim H_k / |S^{d-1}|) C_k^a(<x_i,x_j>)/C_k^a(1),
        a = (d-2)/2 (Chebyshev T_k for d = 2, Legendre P_k for d = 3),

    for k = 0..kmax, shape (batch, kmax+1); ||P_0 mu||^2 = 1/|S^{d-1}|. The normalised
    Gegenbauer polynomials obey P_{k+1} = (2(k+a) t P_k - k P_{k-1})/(k+2a), P_0 = 1,
    P_1 = t; the double sum is done in tiles of at most (batch, block, block) entries.
    ``representation="angles"`` takes angles (batch, N) and uses the closed form
    (dim H_k/(2 pi)) |c_k|^2 (dim H_0 = 1, dim H_k = 2).
    """
    kk = check_positive(kmax, "kmax", integer=True, minimum=0, inclusive=True)
    rep = _check_choice(representation, ("angles", "vectors"), "representation")
    if rep == "angles":
        c = fourier_coefficients(x, kk, masses)
        mult = np.where(np.arange(kk + 1) == 0, 1.0, 2.0)
        return mult * np.abs(c) ** 2 / TWO_PI
    v = _batch_vectors(x)
    bsz, n, d = v.shape
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    w = np.broadcast_to(_normalised_masses(masses, bsz, n), (bsz, n))
    bs = check_positive(block, "block", integer=True, minimum=1, inclusive=True)
    a = 0.5 * (d - 2)
    total = np.zeros((bsz, kk + 1))
    for r0 in range(0, n, bs):
        r1 = min(n, r0 + bs)
        for c0 in range(0, n, bs):
            c1 = min(n, c0 + bs)
            t = np.clip(v[:, r0:r1] @ v[:, c0:c1].transpose(0, 2, 1), -1.0, 1.0)
            ww = w[:, r0:r1, None] * w[:, None, c0:c1]
            p_prev, p_cur = np.ones_like(t), t
            total[:, 0] += ww.sum(axis=(1, 2))
            if kk >= 1:
                total[:, 1] += np.einsum("bij,bij->b", ww, t)
            for k in range(1, kk):
                p_next = (2.0 * (k + a) * t * p_cur - k * p_prev) / (k + 2.0 * a)
                total[:, k + 1] += np.einsum("bij,bij->b", ww, p_next)
                p_prev, p_cur = p_cur, p_next
    mult = np.asarray(harmonic_multiplicity(np.arange(kk + 1), d), dtype=float)
    return total * mult * math.exp(-log_sphere_area(d)) / (n * n)


@dataclass
class Clusters:
    """Clusters of one system, sorted by decreasing mass.

    ``count`` counts clusters of mass >= ``min_mass`` (``masses``/``centres`` list all of
    them, ``labels`` gives each token's cluster index); masses are fractions of the total;
    centres are angles in [0, 2 pi) (circular mean) or unit vectors (normalised mean).
    """

    count: int
    masses: np.ndarray
    centres: np.ndarray
    labels: np.ndarray


def detect_clusters(x: ArrayLike, *, method: str = "inner", eps: float = 1e-3,
                    gap: float | None = None, masses: ArrayLike | None = None,
                    min_mass: float = 0.0, representation: str = "vectors",
                    block: int = 1024) -> list[Clusters]:
    """Clusters as connected components, one :class:`Clusters` per system.

    * ``method="inner"`` (seeds 001/002): tokens i, j are linked when <x_i, x_j> > 1 - eps;
      clusters are the connected components (breadth-first search against the unassigned
      tokens in blocks of ``block`` rows: memory O(block N), work O(N^2)). On angles this is
      exactly the gap rule with the link cos(gap) > 1 - eps.
    * ``method="gap"`` (angles only): sort the angles and split the circle at every gap
      larger than ``gap`` (default arccos(1 - eps)); O(N log N).
    """
    meth = _check_choice(method, ("inner", "gap"), "method")
    rep = _check_choice(representation, ("angles", "vectors"), "representation")
    e = check_positive(eps, "eps")
    if e > 2:
        raise InputError("eps", "must be in (0, 2]", eps)
    mm = check_positive(min_mass, "min_mass", inclusive=True)
    if meth == "gap" and rep != "angles":
        raise InputError("method", "'gap' needs angles (representation='angles')", method)
    bs = check_positive(block, "block", integer=True, minimum=1, inclusive=True)
    if rep == "angles":
        th = _batch_angles(x)
        w = np.broadcast_to(_normalised_masses(masses, *th.shape), th.shape)
        if meth == "gap":
            g = math.acos(1.0 - e) if gap is None else check_positive(gap, "gap")
            def split(d: np.ndarray) -> np.ndarray:
                return d > g
        else:
            def split(d: np.ndarray) -> np.ndarray:
                return ~(np.cos(d) > 1.0 - e)
        return [_circle_components(th[b], w[b], split, mm) for b in range(th.shape[0])]
    v = _batch_vectors(x)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    w = np.broadcast_to(_normalised_masses(masses, v.shape[0], v.shape[1]), v.shape[:2])
    return [_vector_components(v[b], w[b], 1.0 - e, mm, bs) for b in range(v.shape[0])]


def _finish_clusters(labels: np.ndarray, w: np.ndarray, centres_of, min_mass: float) -> Clusters:
    ncl = int(labels.max()) + 1
    mass = np.bincount(labels, weights=w, minlength=ncl) / w.sum()
    order = np.argsort(-mass, kind="stable")
    rank = np.empty(ncl, int)
    rank[order] = np.arange(ncl)
    labels = rank[labels]
    centres = centres_of(labels, ncl)
    return Clusters(int(np.sum(mass >= min_mass)), mass[order], centres, labels)


def _circle_components(th: np.ndarray, w: np.ndarray, split, min_mass: float) -> Clusters:
    a = np.mod(th, TWO_PI)
    order = np.argsort(a)
    s = a[order]
    gaps = np.diff(np.concatenate((s, [s[0] + TWO_PI])))  # gap after each sorted token
    cut = split(gaps)
    labels_sorted = np.zeros(s.size, int)
    if cut.any():
        # start a new cluster after every cut; the wrap-around run joins the last one
        start = int(np.argmax(cut)) + 1
        rolled = np.roll(cut, -start)
        labels_sorted = np.roll(np.concatenate(([0], np.cumsum(rolled[:-1]))), start)
    labels = np.empty_like(labels_sorted)
    labels[order] = labels_sorted

    def centres_of(lab, ncl):
        zs = np.bincount(lab, weights=w * np.cos(th), minlength=ncl) \
            + 1j * np.bincount(lab, weights=w * np.sin(th), minlength=ncl)
        return np.mod(np.angle(zs), TWO_PI)

    return _finish_clusters(labels, w, centres_of, min_mass)


def _vector_components(x: np.ndarray, w: np.ndarray, thresh: float, min_mass: float,
                       block: int) -> Clusters:
    n = x.shape[0]
    labels = np.full(n, -1)
    remaining = np.arange(n)
    lab = 0
    while remaining.size:
        labels[remaining[0]] = lab
        frontier, remaining = remaining[:1], remaining[1:]
        while frontier.size and remaining.size:
            hit = np.zeros(remaining.size, bool)
            for f0 in range(0, frontier.size, block):
                g = x[frontier[f0:f0 + block]] @ x[remaining].T
                hit |= np.any(g > thresh, axis=0)
            frontier, remaining = remaining[hit], remaining[~hit]
            labels[frontier] = lab
        lab += 1

    def centres_of(lab_, ncl):
        c = np.zeros((ncl, x.shape[1]))
        np.add.at(c, lab_, w[:, None] * x)
        return c / np.linalg.norm(c, axis=-1, keepdims=True)

    return _finish_clusters(labels, w, centres_of, min_mass)


# ---------------------------------------------------------------------------------------------
# The particle system
# ---------------------------------------------------------------------------------------------
@dataclass
class ParticleResult:
    """What :meth:`ParticleSystem.run` returns.

    ``positions`` has shape (n_times, batch, N) (angles) or (n_times, batch, N, d) (unit
    vectors); every diagnostic has leading shape (n_times, batch) (``fourier``: |c_k|,
    k = 0..modes, on the circle; ``harmonic_power`` on S^{d-1} when ``modes`` was given).
    """

    times: np.ndarray
    positions: np.ndarray
    diagnostics: dict[str, np.ndarray]
    steps: int
    rejected: int
    representation: str
    meta: dict = field(default_factory=dict)


@dataclass
class _StepState:
    dt: float | None = None       # adaptive: proposed next step
    f: np.ndarray | None = None   # adaptive: velocity at the current state (FSAL)
    steps: int = 0
    rejected: int = 0
    last_dt: float = 0.0


# Dormand-Prince 5(4) tableau (Hairer, Norsett, Wanner, vol. I, table 5.2)
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


class ParticleSystem:
    """N tokens of (masked) self-attention on S^{d-1}, ``batch`` independent systems at once.

    Parameters
    ----------
    count : int
        Number of tokens N (>= 1).
    dim : int
        Ambient dimension d (tokens on S^{d-1}), >= 2.
    beta : float
        Inverse temperature >= 0.
    model : {"usa", "sa"}
        Unnormalised (Z_i = 1/a_N) or softmax (Z_i = sum_j w_ij m_j e^{beta s_ij}) attention.
    mask : {"none", "causal"}
        w_ij = 1, or 1[j <= i] (token i attends to tokens 1..i; the order is the token index).
    qkv : str or (Q, K, V)
        See :func:`attention_matrices` (ensembles drawn once from ``seed``, shared by the
        batch); ``qkv_scale`` is its ``scale``.
    normalization : {"1/N", "1", "1/N^2"}
        USA prefactor a_N (default "1/N"); SA accepts only the default.
    time_unit : {"raw", "scaled"}
        ``scaled`` (USA): kernel e^{beta (s - 1)}, time in units of e^{-beta} raw time.
    masses : array (N,) or (batch, N), optional
        Token masses m_j > 0, rescaled to mean 1 (mu = N^{-1} sum_j m_j delta_{x_j}).
    integrator : {"euler", "rk4", "adaptive"}
    dt : float, optional
        Fixed step (euler, rk4) or first trial step (adaptive; default: the starting-step
        rule of Hairer, Norsett & Wanner from the initial velocity). Default for fixed steps:
        min(0.1 / L, 0.02 / gamma_max) with the velocity Lipschitz bound
        L = r a_N N ||V|| e^{beta(||A|| - 1)} (1 + beta | ||A|| - 1 |) (USA; r = e^{beta} raw,
        1 scaled; L = e^{beta} for identity QKV) or ||V|| (1 + 2 beta ||A||) (SA), and
        gamma_max of ``meanfield.growth`` (identity QKV, no mask).
    rtol, atol : float
        Adaptive error control: the error of a step, divided by atol + rtol componentwise
        (positions are O(1): unit vectors or angles in radians), must have RMS norm <= 1 in
        every system of the batch (one common step for the batch).
    batch : int
        Number of systems drawn by :meth:`uniform_sample`; ``run`` accepts any batch.
    seed : int, optional
        Seeds the QKV ensemble and :meth:`uniform_sample` (independent streams).
    summation : {"auto", "fourier", "direct"}
        See the module docstring; ``block`` is the tile side of the direct sums.
    representation : {"auto", "angles", "vectors"}
        ``auto``: angles when d = 2 and QKV is the identity, unit vectors otherwise.
    max_steps : int, optional
        Safety limit on the steps of one ``run`` (SolverError beyond it).
    """

    def __init__(self, count: int, dim: int = 2, beta: float = 1.0, model: str = "usa", *,
                 mask: str = "none", qkv: str | Sequence[ArrayLike] = "identity",
                 qkv_scale: float = 1.0, normalization: str | None = None,
                 time_unit: str = "raw", masses: ArrayLike | None = None,
                 integrator: str = "adaptive", dt: float | None = None, rtol: float = 1e-8,
                 atol: float = 1e-10, batch: int = 1, seed: int | None = None,
                 summation: str = "auto", block: int = 1024, representation: str = "auto",
                 max_steps: int | None = None) -> None:
        self.count = check_positive(count, "count", integer=True, minimum=1, inclusive=True)
        self.dim = check_dim(dim)
        self.beta = float(check_beta(beta))
        self.model = check_model(model)
        self.time_unit = check_time_unit(time_unit, model)
        self.mask = _check_choice(mask, MASKS, "mask")
        norm = "1/N" if normalization is None else normalization
        _check_choice(norm, NORMALIZATIONS, "normalization")
        if self.model == "sa" and norm != "1/N":
            raise InputError("normalization", "applies to model 'usa' only (SA divides by Z_i)",
                             normalization)
        self.normalization = norm
        n = self.count
        self.prefactor = {"1/N": 1.0 / n, "1": 1.0, "1/N^2": 1.0 / (n * n)}[norm]
        if self.model == "usa" and self.time_unit == "raw" and self.beta > 700:
            raise InputError("beta", "raw USA velocities ~ e^beta overflow float64 beyond "
                             "beta ~ 709: use time_unit='scaled'", self.beta)
        #: log of the factor turning a scaled kernel e^{beta (s - 1)} into the run's unit
        self.log_rate = self.beta if (self.model == "usa" and self.time_unit == "raw") else 0.0
        self.batch = check_positive(batch, "batch", integer=True, minimum=1, inclusive=True)
        seq = np.random.SeedSequence(seed)
        qkv_seq, sample_seq = seq.spawn(2)
        self._sample_rng = np.random.default_rng(sample_seq)
        self.attention = attention_matrices(qkv, self.dim, qkv_scale,
                                            np.random.default_rng(qkv_seq))
        rep = _check_choice(representation, REPRESENTATIONS, "representation")
        circle_ok = self.dim == 2 and self.attention.identity
        if rep == "angles" and not circle_ok:
            raise InputError("representation", "'angles' needs dim = 2 and qkv = identity",
                             representation)
        self.representation = "angles" if (rep == "auto" and circle_ok) or rep == "angles" \
            else "vectors"
        # (1 or B', N): a 2-d array fixes the batch of the systems it applies to
        self.masses = _normalised_masses(
            masses, np.shape(masses)[0] if np.ndim(masses) == 2 else 1, n)
        self._unit_masses = masses is None
        self.integrator = _check_choice(integrator, PARTICLE_INTEGRATORS, "integrator")
        self.rtol = check_positive(rtol, "rtol")
        self.atol = check_positive(atol, "atol")
        self.block = check_positive(block, "block", integer=True, minimum=1, inclusive=True)
        self.max_steps = None if max_steps is None else check_positive(
            max_steps, "max_steps", integer=True, minimum=1, inclusive=True)
        # Fourier-Bessel coefficients (scaled by e^{-beta}) for the circle fast path
        self._cos_coef, self._sin_coef = _bessel_series(self.beta)
        self.fourier_terms = self._sin_coef.size - 1
        summ = _check_choice(summation, SUMMATIONS, "summation")
        if summ == "fourier" and self.representation != "angles":
            raise InputError("summation", "'fourier' needs the circle representation (dim = 2, "
                             "qkv = identity, angles)", summation)
        if summ == "auto":
            summ = "fourier" if (self.representation == "angles"
                                 and n >= 4 * self.fourier_terms) else "direct"
        self.summation = summ
        self.gamma_max = self._gamma_max()
        #: the step given by the user (None: default for fixed steps, automatic if adaptive)
        self.dt_given = None if dt is None else check_positive(dt, "dt")
        self.dt = self._default_dt() if dt is None else self.dt_given

    # ------------------------------------------------------------------ set-up helpers
    def _gamma_max(self) -> float | None:
        """Largest linear growth rate of the uniform state (identity QKV, no mask)."""
        if not self.attention.identity or self.mask != "none":
            return None
        sel = mode_selection(self.beta, self.dim, self.model, self.time_unit)
        g = math.exp(sel.log_gamma_max)
        return g * self.prefactor * self.count if self.model == "usa" else g

    def _default_dt(self) -> float:
        at = self.attention
        na = float(np.linalg.norm(at.A, 2))
        nv = float(np.linalg.norm(at.V, 2))
        if self.model == "usa":  # in logs: e^{beta(||A|| - 1)} may overflow
            log_lip = (self.log_rate + self.beta * (na - 1.0)
                       + math.log(self.prefactor * self.count) + math.log(max(nv, 1e-300))
                       + math.log1p(self.beta * abs(na - 1.0)))
        else:
            log_lip = math.log(max(nv, 1e-300)) + math.log1p(2.0 * self.beta * na)
        dt = 0.1 * math.exp(-min(log_lip, 690.0))
        if self.gamma_max:
            dt = min(dt, 0.02 / self.gamma_max)
        return dt

    def _weights(self, batch: int) -> np.ndarray:
        if self.masses.shape[0] not in (1, batch):
            raise InputError("x", f"batch size {batch} does not match the masses' batch "
                             f"{self.masses.shape[0]}")
        return self.masses

    def check_state(self, x: ArrayLike, name: str = "x0") -> np.ndarray:
        """A validated copy with a batch axis: angles (batch, N) or unit vectors (batch, N, d).

        Vectors must have norms within 1e-6 of 1 and are renormalised exactly.
        """
        n = self.count
        if self.representation == "angles":
            th = np.array(x, dtype=float, copy=True)
            if th.ndim == 1:
                th = th[None]
            if th.ndim != 2 or th.shape[1] != n or not np.all(np.isfinite(th)):
                raise InputError(name, f"must be finite angles of shape ({n},) or (batch, {n})",
                                 f"shape {np.shape(x)}")
            self._weights(th.shape[0])
            return th
        v = np.array(x, dtype=float, copy=True)
        if v.ndim == 2:
            v = v[None]
        d = self.dim
        if v.ndim != 3 or v.shape[1:] != (n, d) or not np.all(np.isfinite(v)):
            raise InputError(name, f"must be finite unit vectors of shape ({n}, {d}) or "
                             f"(batch, {n}, {d})", f"shape {np.shape(x)}")
        r = np.linalg.norm(v, axis=-1)
        if np.max(np.abs(r - 1.0)) > 1e-6:
            raise InputError(name, "rows must be unit vectors (|x_i| = 1 within 1e-6)",
                             f"max ||x_i| - 1| = {np.max(np.abs(r - 1.0)):.3g}")
        self._weights(v.shape[0])
        return v / r[..., None]

    def uniform_sample(self, batch: int | None = None, seed: int | None = None) -> np.ndarray:
        """i.i.d. uniform tokens in this system's representation, shape (batch, N[, d]).

        ``seed`` None draws from the system's own stream (fixed by its ``seed``).
        """
        rng = self._sample_rng if seed is None else np.random.default_rng(seed)
        return uniform_sample(self.count, self.dim, self.batch if batch is None else batch, rng,
                              representation=self.representation)

    # ------------------------------------------------------------------ pairwise sums
    def _row_sums(self, x: np.ndarray, *, masked: bool, need_num: bool
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(L, num, den) with, for every token i,
            sum_j w_ij m_j e^{beta s_ij} V x_j = e^{L_i} num_i,
            sum_j w_ij m_j e^{beta s_ij}       = e^{L_i} den_i,
        where on angles V x_j is replaced by sin(theta_i - theta_j) (num_i then a scalar).
        ``masked`` False ignores the causal mask (energy, SA partition for dissipation).
        """
        causal = masked and self.mask == "causal"
        if self.representation == "angles":
            if self.summation == "fourier":
                return self._fourier_sums(x, causal, need_num)
            return self._direct_angle_sums(x, causal, need_num)
        return self._direct_vector_sums(x, causal, need_num)

    def _fourier_sums(self, th: np.ndarray, causal: bool, need_num: bool):
        need_den = not need_num or self.model == "sa"  # USA velocities need no Z_i
        if not causal:
            return self._fourier_sums_chunked(th, need_num, need_den)
        bsz, n = th.shape
        w = self._weights(bsz)
        z = np.exp(1j * th)
        zk = np.ones_like(z)
        a_coef, b_coef = self._sin_coef, self._cos_coef
        acc_num = np.zeros((bsz, n), complex) if need_num else None
        acc_den = None
        if need_den:
            s0 = np.cumsum(np.broadcast_to(w, th.shape), axis=-1) if causal else \
                np.broadcast_to(w.sum(axis=-1, keepdims=True), th.shape)
            acc_den = b_coef[0] * s0.astype(complex)
        for k in range(1, self.fourier_terms + 1):
            zk *= z
            wz = zk if self._unit_masses else w * zk
            s = np.cumsum(wz, axis=-1) if causal else wz.sum(axis=-1, keepdims=True)
            s = np.conj(s)
            # with d = th_i - th_j: sum_j m_j sin(kd) = Im(e^{ik th_i} conj(S_k)), cos: Re
            if need_num:
                acc_num += (a_coef[k] * s) * zk
            if need_den:
                acc_den += (2.0 * b_coef[k] * s) * zk
        num = acc_num.imag if need_num else None
        den = acc_den.real if need_den else None
        return np.full((bsz, n), self.beta), num, den

    def _fourier_sums_chunked(self, th: np.ndarray, need_num: bool, need_den: bool):
        """Unmasked Fourier sums in two passes over particle chunks.

        Pass 1 accumulates S_k = sum_j m_j z_j^k (k = 1..K) from a (batch, K, chunk) table of
        powers; pass 2 rebuilds the table and accumulates sum_k c_k z_i^k. The table stays in
        cache, ~2x faster than K sweeps over all N tokens, and rebuilding it is cheaper than
        storing K x N complex numbers. No BLAS call: OpenBLAS threads on these small products
        slow down ~10x when the cores are shared.
        """
        bsz, n = th.shape
        w = np.broadcast_to(self._weights(bsz), th.shape)
        kk = self.fourier_terms
        chunk = max(64, 8192 // bsz)
        z = np.exp(1j * th)

        def powers(c0: int, c1: int) -> np.ndarray:
            zc = z[:, c0:c1]
            tab = np.empty((bsz, kk, c1 - c0), complex)
            tab[:, 0] = zc
            for k in range(1, kk):  # repeated products: relative error ~ k eps
                np.multiply(tab[:, k - 1], zc, out=tab[:, k])
            return tab

        sums = np.zeros((bsz, kk), complex)
        for c0 in range(0, n, chunk):
            c1 = min(n, c0 + chunk)
            tab = powers(c0, c1)
            sums += tab.sum(axis=-1) if self._unit_masses else \
                np.einsum("bkc,bc->bk", tab, w[:, c0:c1])
        conj = np.conj(sums)
        # Im part: sum_j m_j sin(k d)-series; Re part: cos(k d)-series (d = th_i - th_j)
        c_num = self._sin_coef[1:] * conj if need_num else None
        c_den = 2.0 * self._cos_coef[1:] * conj if need_den else None
        num = np.empty((bsz, n)) if need_num else None
        den = np.empty((bsz, n)) if need_den else None
        acc = np.empty((bsz, min(chunk, n)), complex)
        tmp = np.empty_like(acc)
        for c0 in range(0, n, chunk):
            c1 = min(n, c0 + chunk)
            tab = powers(c0, c1)
            for coef, out in ((c_num, num), (c_den, den)):
                if coef is None:
                    continue
                a, t = acc[:, : c1 - c0], tmp[:, : c1 - c0]
                np.multiply(tab[:, 0], coef[:, 0, None], out=a)
                for k in range(1, kk):
                    np.multiply(tab[:, k], coef[:, k, None], out=t)
                    a += t
                out[:, c0:c1] = a.imag if coef is c_num else a.real
        if need_den:
            den += self._cos_coef[0] * w.sum(axis=-1, keepdims=True)
        return np.full((bsz, n), self.beta), num, den

    def _direct_angle_sums(self, th: np.ndarray, causal: bool, need_num: bool):
        bsz, n = th.shape
        w = self._weights(bsz)
        bs = self.block
        num = np.zeros((bsz, n)) if need_num else None
        den = np.zeros((bsz, n))
        for r0 in range(0, n, bs):
            r1 = min(n, r0 + bs)
            for c0 in range(0, r1 if causal else n, bs):
                c1 = min(n, c0 + bs)
                d = th[:, r0:r1, None] - th[:, None, c0:c1]
                e = np.cos(d)
                if self.beta > 0:
                    e -= 1.0
                    e *= self.beta
                    np.exp(e, out=e)  # e^{beta (cos d - 1)} <= 1: the row maximum is 1
                else:
                    e.fill(1.0)
                e *= w[:, None, c0:c1]
                if causal and c1 > r0 + 1:
                    e *= np.arange(c0, c1)[None, :] <= np.arange(r0, r1)[:, None]
                den[:, r0:r1] += e.sum(axis=-1)
                if need_num:
                    num[:, r0:r1] += np.einsum("bij,bij->bi", e, np.sin(d))
        return np.full((bsz, n), self.beta), num, den

    def _direct_vector_sums(self, x: np.ndarray, causal: bool, need_num: bool):
        bsz, n, d = x.shape
        w = self._weights(bsz)
        at = self.attention
        xa = x if at.identity else x @ at.A       # row i: x_i^T A, so s_ij = <xa_i, x_j>
        vx = x if at.identity else x @ at.V.T     # row j: V x_j
        xt = x.transpose(0, 2, 1)
        bs = self.block
        beta = self.beta
        big_l = np.zeros((bsz, n))
        num = np.zeros((bsz, n, d)) if need_num else None
        den = np.zeros((bsz, n))
        for r0 in range(0, n, bs):
            r1 = min(n, r0 + bs)
            m_run = np.full((bsz, r1 - r0), -np.inf if beta > 0 else 0.0)
            num_r = np.zeros((bsz, r1 - r0, d)) if need_num else None
            den_r = np.zeros((bsz, r1 - r0))
            for c0 in range(0, r1 if causal else n, bs):
                c1 = min(n, c0 + bs)
                s = xa[:, r0:r1] @ xt[:, :, c0:c1]
                valid = None
                if causal and c1 > r0 + 1:
                    valid = np.arange(c0, c1)[None, :] <= np.arange(r0, r1)[:, None]
                    s[:, ~valid] = -np.inf
                if beta > 0:
                    # online log-sum-exp: rescale the partial sums to the new row maximum
                    new = np.maximum(m_run, s.max(axis=-1))
                    with np.errstate(invalid="ignore"):
                        alpha = np.exp(beta * (m_run - new))
                    alpha[~np.isfinite(m_run)] = 0.0
                    den_r *= alpha
                    if need_num:
                        num_r *= alpha[..., None]
                    s -= new[..., None]
                    s *= beta
                    np.exp(s, out=s)
                    m_run = new
                else:
                    s = np.ones_like(s) if valid is None else \
                        np.broadcast_to(valid, s.shape).astype(float)
                s *= w[:, None, c0:c1]
                den_r += s.sum(axis=-1)
                if need_num:
                    num_r += s @ vx[:, c0:c1]
            big_l[:, r0:r1] = beta * m_run
            den[:, r0:r1] = den_r
            if need_num:
                num[:, r0:r1] = num_r
        return big_l, num, den

    # ------------------------------------------------------------------ velocity
    def velocity(self, x: ArrayLike) -> np.ndarray:
        """dx_i/dt (vectors: tangent vectors; angles: dtheta_i/dt), same shape as ``x``.

        USA: v_i = P_{x_i}( a_N sum_j w_ij m_j e^{beta s_ij} V x_j ) (times e^{-beta} in the
        scaled unit); SA: v_i = P_{x_i}( sum_j w_ij m_j e^{beta s_ij} V x_j / Z_i ).
        On angles: dtheta_i/dt = -(1/Z_i) sum_j w_ij m_j e^{beta cos(th_i - th_j)}
        sin(th_i - th_j). No check of the input beyond its shape (stages of RK methods are
        slightly off the sphere; the extended field keeps |x| = 1 invariant).
        """
        arr = np.asarray(x, dtype=float)
        single = arr.ndim == (1 if self.representation == "angles" else 2)
        xb = arr[None] if single else arr
        v = self._velocity(xb)
        return v[0] if single else v

    def _velocity(self, x: np.ndarray) -> np.ndarray:
        big_l, num, den = self._row_sums(x, masked=True, need_num=True)
        if self.model == "usa":
            with np.errstate(over="ignore"):  # overflows only if the velocity itself does
                fac = self.prefactor * np.exp(big_l - self.beta + self.log_rate)
        else:
            fac = 1.0 / den
        if self.representation == "angles":
            return -fac * num
        u = fac[..., None] * num
        return u - np.einsum("bnd,bnd->bn", u, x)[..., None] * x

    # ------------------------------------------------------------------ energy
    def log_pair_sum(self, x: ArrayLike) -> np.ndarray:
        """log sum_ij m_i m_j e^{beta <Q x_i, K x_j>} - beta, shape (batch,), overflow-free.

        On the circle with the Fourier path: log(ive_0 |S_0|^2 + 2 sum_k ive_k |S_k|^2).
        """
        xb = self.check_state(x, "x")
        return self._log_pair_sum(xb)

    def _log_pair_sum(self, x: np.ndarray) -> np.ndarray:
        w = self._weights(x.shape[0])
        if self.representation == "angles" and self.summation == "fourier":
            c = fourier_coefficients(x, self.fourier_terms, w)  # c_k = S_k^*/N
            mult = np.where(np.arange(c.shape[1]) == 0, 1.0, 2.0)
            tot = (np.abs(c) ** 2 * (mult * self._cos_coef)).sum(axis=-1) * self.count ** 2
            return np.log(tot)
        big_l, _, den = self._row_sums(x, masked=False, need_num=False)
        return logsumexp(np.log(w) + big_l + np.log(den), axis=-1) - self.beta

    def ebar(self, x: ArrayLike) -> np.ndarray:
        """Ebar = 2 beta e^{-beta} E = (1/N^2) sum_ij m_i m_j e^{beta(<Qx_i, Kx_j> - 1)}.

        In (0, 1] for identity QKV (1 = one cluster). At beta = 0: Ebar = 2E with
        E = (1/(2N^2)) sum_ij m_i m_j <x_i, A x_j> (|mean|^2 for identity QKV). Shape (batch,).
        """
        return self._ebar(self.check_state(x, "x"))

    def _ebar(self, x: np.ndarray) -> np.ndarray:
        if self.beta == 0:
            return 2.0 * self._energy_beta0(x)
        return np.exp(self._log_pair_sum(x) - 2.0 * math.log(self.count))

    def _energy_beta0(self, x: np.ndarray) -> np.ndarray:
        w = self._weights(x.shape[0])
        if self.representation == "angles":
            mean = np.stack([(w * np.cos(x)).mean(-1), (w * np.sin(x)).mean(-1)], axis=-1)
        else:
            mean = np.einsum("bn,bnd->bd", np.broadcast_to(w, x.shape[:2]), x) / self.count
        a = self.attention.A
        return 0.5 * np.einsum("bd,de,be->b", mean, a, mean)

    def energy(self, x: ArrayLike) -> np.ndarray:
        """E = (1/(2 beta N^2)) sum_ij m_i m_j e^{beta <Q x_i, K x_j>} in the run's time unit.

        ``scaled`` (USA) reports e^{-beta} E (the kernel e^{beta(t-1)}/beta); raw values
        beyond float64 are inf (Ebar never overflows). Shape (batch,).
        """
        return self._energy(self.check_state(x, "x"))

    def _energy(self, x: np.ndarray) -> np.ndarray:
        if self.beta == 0:
            return self._energy_beta0(x)
        unit_shift = self.beta if self.time_unit == "scaled" else 0.0
        log_e = (self._log_pair_sum(x) + self.beta - unit_shift - math.log(2.0 * self.beta)
                 - 2.0 * math.log(self.count))
        with np.errstate(over="ignore"):
            return np.exp(log_e)

    def energy_rate(self, x: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(dE/dt, dEbar/dt) predicted by the dissipation identity, shapes (batch,).

        Derivation for the discrete system (identity QKV, or V = Q^T K symmetric; no mask).
        The spherical gradient of E with respect to x_i is
            grad_i E = (m_i / N^2) sum_j m_j e^{beta s_ij} P_{x_i}(A x_j)
        (the factor 2 of the symmetric double sum cancels 1/2). USA: v_i equals a_N times the
        sum, so grad_i E = m_i v_i / (a_N N^2) and
            dE/dt = sum_i <grad_i E, v_i> = (1/(a_N N^2)) sum_i m_i |v_i|^2,
        i.e. (1/N) sum_i m_i |v_i|^2 = integral |v|^2 dmu for a_N = 1/N; the same formula holds
        in the scaled unit (E and t both rescaled). SA: v_i is the sum over Z_i, so
            dE/dt = (1/N^2) sum_i m_i Z_i |v_i|^2 = (1/N) sum_i m_i |v_i|^2 (Z_i / N),
        with Z_i = sum_j m_j e^{beta s_ij} (unmasked), integral |v|^2 Z dmu. Ebar = 2 beta
        e^{-beta} E (raw; 2 beta E in the scaled unit; 2E at beta = 0), so dEbar/dt follows and is
        computed overflow-free. For masked or non-gradient dynamics this is only the formula.
        """
        xb = self.check_state(x, "x")
        return self._energy_rate(xb, self._velocity(xb))

    def _energy_rate(self, x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = self._weights(x.shape[0])
        n = self.count
        sq = v * v if self.representation == "angles" else np.einsum("bnd,bnd->bn", v, v)
        if self.beta == 0:
            ebar_factor_log = math.log(2.0)
        elif self.model == "usa" and self.time_unit == "scaled":
            ebar_factor_log = math.log(2.0 * self.beta)
        else:
            ebar_factor_log = math.log(2.0 * self.beta) - self.beta
        if self.model == "usa":
            rate = (w * sq).sum(axis=-1) / (self.prefactor * n * n)
            return rate, rate * math.exp(ebar_factor_log)
        big_l, _, den = self._row_sums(x, masked=False, need_num=False)
        # log of sum_i m_i Z_i |v_i|^2 / N^2 with Z_i = e^{L_i} den_i
        with np.errstate(divide="ignore"):
            log_s = logsumexp(np.log(w) + big_l + np.log(den) + np.log(sq), axis=-1) \
                - 2.0 * math.log(n)
        with np.errstate(over="ignore"):
            return np.exp(log_s), np.exp(log_s + ebar_factor_log)

    # ------------------------------------------------------------------ other diagnostics
    def fourier(self, x: ArrayLike, kmax: int) -> np.ndarray:
        """c_k = N^{-1} sum_j m_j e^{-ik theta_j}, k = 0..kmax (angles only), (batch, kmax+1)."""
        if self.representation != "angles":
            raise InputError("representation", "Fourier coefficients need angles; use "
                             "harmonic_power on S^{d-1}")
        xb = self.check_state(x, "x")
        return fourier_coefficients(xb, kmax, self._weights(xb.shape[0]))

    def harmonic_power(self, x: ArrayLike, kmax: int) -> np.ndarray:
        """||P_k mu||^2_{L^2(sigma)}, k = 0..kmax (see :func:`harmonic_power`)."""
        xb = self.check_state(x, "x")
        return harmonic_power(xb, kmax, self._weights(xb.shape[0]),
                              representation=self.representation, block=self.block)

    def clusters(self, x: ArrayLike, **kw) -> list[Clusters]:
        """:func:`detect_clusters` with this system's masses and representation."""
        xb = self.check_state(x, "x")
        return detect_clusters(xb, masses=self._weights(xb.shape[0]),
                               representation=self.representation,
                               block=kw.pop("block", self.block), **kw)

    def diagnostics(self, x: ArrayLike, modes: int | None = None) -> dict[str, np.ndarray]:
        """energy, ebar, energy_rate, ebar_rate, max_speed (and fourier |c_k| / harmonic_power).

        Each has shape (batch,) (``fourier``/``harmonic_power``: (batch, modes+1)). On angles
        ``fourier`` holds |c_k| for k = 0..modes (default max(16, 4 k_max)); on vectors
        ``harmonic_power`` is added only when ``modes`` is given (cost O(N^2 modes)).
        """
        return self._diagnostics(self.check_state(x, "x"), modes)

    def _diagnostics(self, x: np.ndarray, modes: int | None) -> dict[str, np.ndarray]:
        v = self._velocity(x)
        rate, ebar_rate = self._energy_rate(x, v)
        speed = np.abs(v) if self.representation == "angles" else np.linalg.norm(v, axis=-1)
        out = {"energy": self._energy(x), "ebar": self._ebar(x), "energy_rate": rate,
               "ebar_rate": ebar_rate, "max_speed": speed.max(axis=-1)}
        w = self._weights(x.shape[0])
        if self.representation == "angles":
            km = modes if modes is not None else self._default_modes()
            out["fourier"] = np.abs(fourier_coefficients(x, km, w))
        elif modes is not None:
            out["harmonic_power"] = harmonic_power(x, modes, w, block=self.block)
        return out

    def _default_modes(self) -> int:
        k = mode_selection(self.beta, 2).k_max if self.beta > 0 else 1
        return max(16, 4 * k)

    # ------------------------------------------------------------------ time stepping
    def _renormalise(self, x: np.ndarray) -> np.ndarray:
        if self.representation == "angles":
            return x
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def step(self, x: ArrayLike, dt: float) -> np.ndarray:
        """One fixed step of size dt with the ``euler`` or ``rk4`` rule (renormalised)."""
        xb = self.check_state(x, "x")
        h = check_positive(dt, "dt")
        rule = "rk4" if self.integrator == "adaptive" else self.integrator
        return self._fixed_step(xb, h, rule)

    def _fixed_step(self, x: np.ndarray, h: float, rule: str) -> np.ndarray:
        f = self._velocity
        k1 = f(x)
        if rule == "euler":
            return self._renormalise(x + h * k1)
        k2 = f(x + (0.5 * h) * k1)
        k3 = f(x + (0.5 * h) * k2)
        k4 = f(x + h * k3)
        return self._renormalise(x + (h / 6.0) * (k1 + 2.0 * (k2 + k3) + k4))

    def _error_norm(self, err: np.ndarray) -> float:
        axes = tuple(range(1, err.ndim))
        return float(np.sqrt(np.mean((err / (self.atol + self.rtol)) ** 2, axis=axes)).max())

    def _initial_dt(self, x: np.ndarray, f0: np.ndarray, span: float) -> float:
        """Starting step of Hairer, Norsett & Wanner (II.4) for a 5th-order method."""
        d0 = self._error_norm(np.ones_like(x))  # positions are O(1)
        d1 = self._error_norm(f0)
        h0 = 1e-6 if d1 <= 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, span)
        f1 = self._velocity(self._renormalise(x + h0 * f0))
        d2 = self._error_norm(f1 - f0) / h0
        h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** 0.2
        return min(100 * h0, h1, span)

    def _adaptive_step(self, x: np.ndarray, t: float, t_target: float, st: _StepState
                       ) -> tuple[np.ndarray, float]:
        """One accepted Dormand-Prince 5(4) step, at most up to t_target."""
        if st.f is None:
            st.f = self._velocity(x)
        if st.dt is None:
            st.dt = self._initial_dt(x, st.f, t_target - t) if self.dt_given is None \
                else self.dt_given
        while True:
            remaining = t_target - t
            h = min(st.dt, remaining)
            last = h >= remaining * (1 - 1e-12)
            k = [st.f]
            for i in range(1, 7):
                y = x + h * sum(a * kj for a, kj in zip(_DP_A[i], k, strict=False) if a != 0.0)
                k.append(self._velocity(y))
            x_new = y  # stage 7 is evaluated at the 5th-order solution (FSAL)
            err = h * sum(e * kj for e, kj in zip(_DP_E, k, strict=True) if e != 0.0)
            en = self._error_norm(err)
            if not np.isfinite(en):
                en = np.inf
            if en <= 1.0:
                fac = 5.0 if en == 0 else min(5.0, max(0.2, 0.9 * en ** -0.2))
                # a step shortened to land on t_target says little about the proposed one
                st.dt = max(st.dt, h * fac) if (last and h < st.dt) else h * fac
                if self.representation == "vectors":
                    x_new = self._renormalise(x_new)
                    st.f = self._velocity(x_new)
                else:
                    st.f = k[6]
                st.last_dt = h
                return x_new, (t_target if last else t + h)
            st.rejected += 1
            st.dt = h * max(0.2, 0.9 * en ** -0.2)
            if st.dt < 1e-14 * max(1.0, abs(t)):
                raise SolverError(f"adaptive step underflow at t = {t:.6g} (dt = {st.dt:.3e}): "
                                  "non-finite or too stiff velocities")

    def _advance(self, x: np.ndarray, t: float, t_target: float, st: _StepState
                 ) -> tuple[np.ndarray, float]:
        while t < t_target:
            if self.max_steps is not None and st.steps >= self.max_steps:
                raise SolverError(f"max_steps = {self.max_steps} reached at t = {t:.6g}")
            if self.integrator == "adaptive":
                x, t = self._adaptive_step(x, t, t_target, st)
            else:
                remaining = t_target - t
                h = self.dt
                if h >= remaining * (1 - 1e-9):  # land exactly, no sliver step
                    h, t_new = remaining, t_target
                else:
                    t_new = t + h
                x = self._fixed_step(x, h, self.integrator)
                st.last_dt = h
                t = t_new
            st.steps += 1
            if not np.all(np.isfinite(x)):
                hint = " (raw USA at large beta: use time_unit='scaled')" \
                    if self.log_rate > 0 else ""
                raise SolverError(f"non-finite positions at t = {t:.6g}, step {st.steps} "
                                  f"(dt = {st.last_dt:.3e}){hint}")
        return x, t

    def run(self, x0: ArrayLike, t_end: float, times: ArrayLike | None = None, *,
            observer: Callable | None = None, modes: int | None = None,
            diagnostics: bool = True) -> ParticleResult:
        """Integrate from t = 0 to ``t_end``, storing positions and diagnostics at ``times``.

        ``times`` (default 0 and t_end) are landed on exactly; ``observer(t, x, diag)`` is
        called at each. Diagnostics: see :meth:`diagnostics` plus ``dt`` (last step).
        Raises :class:`~solvers.integrators.SolverError` on non-finite positions.
        """
        x = self.check_state(x0, "x0")
        t_end, out_times = output_times(times, t_end)
        st = _StepState()
        t = 0.0
        pos, diags = [], []
        start = _time.perf_counter()
        for target in out_times:
            x, t = self._advance(x, t, float(target), st)
            d = self._diagnostics(x, modes) if diagnostics else {}
            d["dt"] = np.full(x.shape[0], st.last_dt)
            pos.append(x.copy())
            diags.append(d)
            if observer is not None:
                observer(t, x, d)
        if t < t_end:
            x, t = self._advance(x, t, t_end, st)
        diag_arrays = {k: np.array([d[k] for d in diags]) for k in diags[0]}
        meta = {"wall_seconds": _time.perf_counter() - start, "model": self.model,
                "beta": self.beta, "dim": self.dim, "mask": self.mask,
                "qkv": self.attention.name, "normalization": self.normalization,
                "time_unit": self.time_unit, "integrator": self.integrator,
                "summation": self.summation, "dt": self.dt,
                "energy_is_lyapunov": self.mask == "none" and self.attention.gradient_flow}
        return ParticleResult(out_times, np.array(pos), diag_arrays, st.steps, st.rejected,
                              self.representation, meta)


def _bessel_series(beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (b_k, a_k), k = 0..K, of the scaled circle kernel:

        e^{beta (cos s - 1)}        = b_0 + 2 sum_{k>=1} b_k cos(ks),  b_k = ive(k, beta),
        e^{beta (cos s - 1)} sin s  = sum_{k>=1} a_k sin(ks),          a_k = (2k/beta) ive(k, beta)

    (from d/ds e^{beta cos s} = -beta sin s e^{beta cos s}; at beta = 0: b_0 = 1, a_1 = 1).
    K is the first degree where both fall below FOURIER_CUTOFF times their largest value.
    """
    if beta == 0:
        return np.array([1.0, 0.0]), np.array([0.0, 1.0])
    kk = np.arange(0, int(beta + 12 * math.sqrt(beta) + 60))
    b = ive(kk, beta)
    a = 2.0 * kk / beta * b
    small = (b < FOURIER_CUTOFF * b.max()) & (a < FOURIER_CUTOFF * a.max())
    k_end = int(np.argmax(small)) if small.any() else kk.size - 1
    k_end = max(k_end, 1)
    return b[: k_end + 1], a[: k_end + 1]


__all__ = [
    "FOURIER_CUTOFF", "MASKS", "NORMALIZATIONS", "PARTICLE_INTEGRATORS", "QKV_ENSEMBLES",
    "REPRESENTATIONS", "SUMMATIONS", "AttentionMatrices", "Clusters", "ParticleResult",
    "ParticleSystem", "attention_matrices", "circle_w1", "detect_clusters",
    "fourier_coefficients", "harmonic_power", "sample_circle_density", "uniform_sample",
]
