"""Initial densities on the sphere S^2 as point values on a latitude-longitude grid.

Every function takes the grid as two 1-D arrays, as a spectral solver exposes them,

* ``x``   cos(colatitude) of the nlat rings (any order; Gauss-Legendre nodes, north first,
          for ``solvers.sphere.Spectral``),
* ``phi`` longitudes in radians of the nphi meridians (uniform, phi_k = 2 pi k / nphi),

and returns p of shape (nlat, nphi), the density w.r.t. the surface measure sigma
(integral 1 up to the stated exceptions; the uniform density is p_inf = 1/(4 pi)). This module is
layer 1: pure numpy/scipy, no spherical-harmonic library.

Real spherical harmonics are orthonormal on S^2 (integral Y^2 dsigma = 1), without the
Condon-Shortley phase:
    Y_{l,0} = N_l^0 P_l(x),  Y_{l,m} = sqrt(2) N_l^m P_l^m(x) cos(m phi)  (m > 0),
    Y_{l,m} = sqrt(2) N_l^|m| P_l^|m|(x) sin(|m| phi)                      (m < 0),
with P_l^m >= 0 near the north pole for small colatitude (P_l^m = (1-x^2)^{m/2} d^m P_l/dx^m).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import sph_legendre_p

from meanfield.theory.checks import check_positive
from meanfield.theory.errors import InputError

FOUR_PI = 4.0 * math.pi
P_INF = 1.0 / FOUR_PI


# --------------------------------------------------------------------------- grids
def _grid(x, phi) -> tuple[np.ndarray, np.ndarray]:
    xa = np.asarray(x, dtype=float)
    pa = np.asarray(phi, dtype=float)
    if xa.ndim != 1 or xa.size < 2 or not np.all(np.isfinite(xa)) or np.any(np.abs(xa) > 1):
        raise InputError("x", "must be a 1-D array (>= 2 values) of cos(colatitude) in [-1, 1]")
    if pa.ndim != 1 or pa.size < 2 or not np.all(np.isfinite(pa)):
        raise InputError("phi", "must be a 1-D array (>= 2 values) of finite longitudes")
    return xa, pa


def gauss_grid(nlat: int, nphi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Legendre grid: x (nodes, descending: north pole first), phi, full weights w.

    integral f dsigma ~= (2 pi / nphi) sum_{j,k} w_j f(x_j, phi_k), exact for harmonics of
    degree <= 2 nlat - 1 in x and |m| < nphi; sum_j w_j = 2. The same nodes and order as
    shtns' ``sht_gauss`` grid.
    """
    n = check_positive(nlat, "nlat", integer=True, minimum=2, inclusive=True)
    k = check_positive(nphi, "nphi", integer=True, minimum=2, inclusive=True)
    x, w = np.polynomial.legendre.leggauss(n)
    return x[::-1].copy(), 2.0 * math.pi * np.arange(k) / k, w[::-1].copy()


def unit_vectors(x, phi) -> np.ndarray:
    """Cartesian points (nlat, nphi, 3) of the grid: (sin t cos phi, sin t sin phi, cos t)."""
    xa, pa = _grid(x, phi)
    s = np.sqrt(np.maximum(0.0, 1.0 - xa * xa))[:, None]
    return np.stack(np.broadcast_arrays(s * np.cos(pa)[None, :], s * np.sin(pa)[None, :],
                                        xa[:, None]), axis=-1)


def direction(lat: float, lon: float) -> np.ndarray:
    """Unit vector at latitude ``lat`` and longitude ``lon`` (degrees)."""
    la, lo = math.radians(float(lat)), math.radians(float(lon))
    return np.array([math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la)])


def _ring_areas(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latitude cell edges in x and their widths dx_j (Gauss weights for a Gauss grid).

    For Gauss-Legendre nodes the cells are chosen with widths equal to the weights, so a
    histogram integrates to exactly 1 with the grid's own quadrature; otherwise the edges are
    the midpoints between rings (and +-1).
    """
    order = np.argsort(-x)
    xs = x[order]
    gx, gw = np.polynomial.legendre.leggauss(x.size)
    if np.allclose(xs, gx[::-1], rtol=0, atol=1e-12):
        widths = gw[::-1]
        edges = 1.0 - np.concatenate([[0.0], np.cumsum(widths)])
        edges[-1] = -1.0
    else:
        edges = np.concatenate([[1.0], 0.5 * (xs[1:] + xs[:-1]), [-1.0]])
        widths = edges[:-1] - edges[1:]
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)
    return edges, widths[inv]


def _nonnegative(p: np.ndarray, what: str, key: str = "initial.amplitude",
                 fix: str = "lower the amplitude") -> np.ndarray:
    if p.min() < 0:
        raise InputError(key, f"{what} makes the density negative (min {p.min():.3g}); {fix}")
    return p


# --------------------------------------------------------------------------- harmonics
def real_harmonic_coefficients(lmax: int) -> np.ndarray:
    """Zero array (lmax+1, 2 lmax+1) for real coefficients a[l, lmax + m], |m| <= l."""
    n = check_positive(lmax, "lmax", integer=True, minimum=0, inclusive=True)
    return np.zeros((n + 1, 2 * n + 1))


def from_real_coefficients(x, phi, coeffs, background: float = P_INF) -> np.ndarray:
    """p = background + sum_{l,m} a_{l,m} Y_{l,m}(x, phi) with a[l, lmax + m] (see module doc).

    Synthesised per order m with scipy's normalised associated Legendre functions (stable to
    high degree); cost O(lmax^2 nlat + lmax nlat nphi). Not checked for positivity.
    """
    xa, pa = _grid(x, phi)
    a = np.asarray(coeffs, dtype=float)
    if a.ndim != 2 or a.shape[1] != 2 * a.shape[0] - 1 or not np.all(np.isfinite(a)):
        raise InputError("coeffs", "must be a finite array of shape (lmax+1, 2 lmax+1)")
    lmax = a.shape[0] - 1
    theta = np.arccos(np.clip(xa, -1.0, 1.0))
    cos_part = np.zeros((xa.size, lmax + 1))  # A_m(x) multiplying cos(m phi)
    sin_part = np.zeros((xa.size, lmax + 1))  # B_m(x) multiplying sin(m phi)
    for m in range(lmax + 1):
        ac, as_ = a[m:, lmax + m], a[m:, lmax - m]
        if m == 0:
            ac = a[:, lmax]
        if not (np.any(ac) or (m > 0 and np.any(as_))):
            continue
        ls = np.arange(m, lmax + 1)
        # scipy's N P_l^m includes (-1)^m (Condon-Shortley); undo it
        leg = sph_legendre_p(ls[:, None], m, theta[None, :]) * (-1.0) ** m
        scale = 1.0 if m == 0 else math.sqrt(2.0)
        cos_part[:, m] = scale * (ac @ leg)
        if m > 0:
            sin_part[:, m] = scale * (as_ @ leg)
    mm = np.arange(lmax + 1)
    ang = mm[:, None] * pa[None, :]
    return background + cos_part @ np.cos(ang) + sin_part @ np.sin(ang)


def real_harmonic(x, phi, l: int, m: int) -> np.ndarray:
    """The real orthonormal harmonic Y_{l,m} on the grid (|m| <= l; see module doc)."""
    ll = check_positive(l, "initial.degree", integer=True, minimum=0, inclusive=True)
    if isinstance(m, bool) or not float(m).is_integer() or abs(int(m)) > ll:
        raise InputError("initial.order", f"must be an integer with |m| <= l = {ll}", m)
    a = real_harmonic_coefficients(ll)
    a[ll, ll + int(m)] = 1.0
    return from_real_coefficients(x, phi, a, background=0.0)


def uniform(x, phi) -> np.ndarray:
    """p = 1/(4 pi)."""
    xa, pa = _grid(x, phi)
    return np.full((xa.size, pa.size), P_INF)


def harmonic(x, phi, modes: Sequence[tuple[int, int]] | tuple[int, int],
             amplitudes: Sequence[float] | float) -> np.ndarray:
    """p = 1/(4 pi) + sum_i alpha_i Y_{l_i, m_i} (mass exactly 1 when every l_i >= 1).

    ``modes`` is one (l, m) pair or a list of them, ``amplitudes`` the alpha_i (absolute, on
    the density: the relative size is alpha sqrt(4 pi) in L2).
    """
    md = [tuple(modes)] if np.ndim(modes) == 1 else [tuple(mm) for mm in modes]
    amp = np.atleast_1d(np.asarray(amplitudes, dtype=float))
    if len(md) == 0 or any(len(mm) != 2 for mm in md):
        raise InputError("initial.modes", "must be an (l, m) pair or a list of them")
    if amp.shape != (len(md),) or not np.all(np.isfinite(amp)):
        raise InputError("initial.amplitude", "must be finite, one per mode")
    lmax = 0
    for l, m in md:
        ll = check_positive(l, "initial.degree", integer=True, minimum=0, inclusive=True)
        if not float(m).is_integer() or abs(int(m)) > ll:
            raise InputError("initial.order", f"must be an integer with |m| <= l = {ll}", m)
        lmax = max(lmax, ll)
    a = real_harmonic_coefficients(lmax)
    for (l, m), al in zip(md, amp, strict=True):
        a[int(l), lmax + int(m)] += al
    return _nonnegative(from_real_coefficients(x, phi, a), "the harmonic perturbation")


def token_noise(x, phi, tokens: float, seed: int | None = 0, *, cutoff: int = 16) -> np.ndarray:
    """Uniform plus the fluctuation of N i.i.d. uniform tokens up to degree ``cutoff``.

    The empirical measure mu_N of N i.i.d. uniform points has coefficients
    a_{l,m} = integral Y_{l,m} dmu_N = N^{-1} sum_j Y_{l,m}(x_j) with mean 0 and variance
    E[Y_{l,m}^2]/N = 1/(4 pi N) (l >= 1); equivalently, in the basis sqrt(4 pi) Y_{l,m} that is
    orthonormal for the uniform probability measure, each real coefficient c_{l,m} has
    variance 1/N (the circle's E|c_k|^2 = 1/N). This draws independent Gaussians of that
    variance for 1 <= l <= ``cutoff`` (in a fixed order from ``seed``, so any grid sees the
    same perturbation) and returns
        p = (1/(4 pi)) [1 + sum_{l=1}^{cutoff} sum_m c_{l,m} sqrt(4 pi) Y_{l,m}].
    """
    n = check_positive(tokens, "initial.tokens", minimum=1.0, inclusive=True)
    kc = check_positive(cutoff, "cutoff", integer=True, minimum=1, inclusive=True)
    rng = np.random.default_rng(seed)
    a = real_harmonic_coefficients(kc)
    for l in range(1, kc + 1):
        a[l, kc - l: kc + l + 1] = rng.standard_normal(2 * l + 1) / math.sqrt(FOUR_PI * n)
    return _nonnegative(from_real_coefficients(x, phi, a), f"N = {n:g} token noise up to "
                        f"degree {kc}", "initial.tokens",
                        "raise initial.tokens or lower initial.cutoff")


# --------------------------------------------------------------------------- bumps, particles
def _unit_rows(points, name: str) -> np.ndarray:
    c = np.asarray(points, dtype=float)
    c = c.reshape(1, -1) if c.ndim == 1 else c
    if c.ndim != 2 or c.shape[1] != 3 or c.shape[0] == 0 or not np.all(np.isfinite(c)):
        raise InputError(name, "must be a non-empty array of 3-vectors (n, 3)")
    norm = np.linalg.norm(c, axis=1)
    if np.any(norm == 0):
        raise InputError(name, "must be non-zero vectors (they are normalised to unit length)")
    return c / norm[:, None]


def vmf_normaliser(kappa: float) -> float:
    """C(kappa) = kappa / (2 pi (1 - e^{-2 kappa})): C e^{kappa(<x,c> - 1)} has integral 1."""
    k = float(kappa)
    return k / (2.0 * math.pi * -math.expm1(-2.0 * k))


def von_mises_fisher(x, phi, centres, masses: Sequence[float] | None = None,
                     kappa: float = 50.0) -> np.ndarray:
    """Sum of von Mises-Fisher bumps m_i C(kappa) e^{kappa(<x, c_i> - 1)}, plus a uniform rest.

    ``centres`` are 3-vectors (normalised here), ``masses`` default to equal shares of 1; if
    they sum to less than 1 the rest (1 - sum m_i)/(4 pi) is spread uniformly. Written with
    e^{kappa(t - 1)} <= 1, so any kappa > 0 is overflow-free. Point values: a bump narrower
    than the grid (kappa >~ lmax^2) is not resolved by a degree-lmax expansion.
    """
    cen = _unit_rows(centres, "initial.centres")
    mass = (np.full(cen.shape[0], 1.0 / cen.shape[0]) if masses is None
            else np.atleast_1d(np.asarray(masses, dtype=float)))
    if mass.shape != (cen.shape[0],) or np.any(~np.isfinite(mass)) or np.any(mass < 0) \
            or mass.sum() > 1 + 1e-12:
        raise InputError("initial.masses", "must be >= 0, one per centre, summing to <= 1")
    kap = check_positive(kappa, "initial.kappa")
    pts = unit_vectors(x, phi)
    p = np.full(pts.shape[:2], (1.0 - mass.sum()) * P_INF)
    p += np.exp(kap * (pts @ cen.T - 1.0)) @ (mass * vmf_normaliser(kap))
    return p


def from_particles(x, phi, points, weights=None, *, kappa: float | None = None) -> np.ndarray:
    """Density of weighted particles: a histogram on the grid, or a vMF kernel estimate.

    ``points`` (N, 3) are normalised to the sphere; ``weights`` default to 1/N and are
    normalised to sum 1. Without ``kappa``: each particle's weight goes to the grid cell
    around its nearest node (uniform ``phi``; cells bounded by mid-longitudes and, on a
    Gauss-Legendre grid, by latitude edges whose x-widths equal the Gauss weights, so the
    grid quadrature gives mass exactly 1) divided by the cell area. A histogram is rough:
    a spectral solver's projection of it rings. With ``kappa``: the kernel density estimate
        p(x) = sum_j w_j C(kappa) e^{kappa(<x, x_j> - 1)},
    smooth and band-limited in practice for kappa << lmax^2 (bandwidth ~ 1/sqrt(kappa)).
    """
    xa, pa = _grid(x, phi)
    pts = _unit_rows(points, "points")
    w = (np.full(pts.shape[0], 1.0 / pts.shape[0]) if weights is None
         else np.asarray(weights, dtype=float).ravel())
    if w.shape != (pts.shape[0],) or np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InputError("weights", "must be >= 0, one per particle, with a positive sum")
    w = w / w.sum()
    if kappa is not None:
        kap = check_positive(kappa, "initial.kappa")
        grid = unit_vectors(xa, pa).reshape(-1, 3)
        out = np.zeros(grid.shape[0])
        chunk = max(1, 2_000_000 // grid.shape[0])  # bound the (grid x chunk) temporary
        for s in range(0, pts.shape[0], chunk):
            out += np.exp(kap * (grid @ pts[s: s + chunk].T - 1.0)) @ w[s: s + chunk]
        return (vmf_normaliser(kap) * out).reshape(xa.size, pa.size)
    edges, widths = _ring_areas(xa)
    order = np.argsort(-xa)
    ring_sorted = np.clip(np.searchsorted(-edges, -pts[:, 2], side="right") - 1, 0, xa.size - 1)
    ring = order[ring_sorted]
    nphi = pa.size
    dphi = 2.0 * math.pi / nphi
    lon = np.mod(np.arctan2(pts[:, 1], pts[:, 0]) - pa[0], 2.0 * math.pi)
    col = np.mod(np.floor(lon / dphi + 0.5).astype(int), nphi)
    hist = np.bincount(ring * nphi + col, weights=w, minlength=xa.size * nphi)
    return hist.reshape(xa.size, nphi) / (widths[:, None] * dphi)


__all__ = [
    "direction",
    "from_particles",
    "from_real_coefficients",
    "gauss_grid",
    "harmonic",
    "real_harmonic",
    "real_harmonic_coefficients",
    "token_noise",
    "uniform",
    "unit_vectors",
    "vmf_normaliser",
    "von_mises_fisher",
]
