"""Pseudo-spectral solver for the mean-field equation on the sphere S^2 (d = 3), with shtns.

    d_t p + div(p v) = 0,   v = grad (W * mu)              (USA)
                            v = grad (W * mu) / Z,  Z = beta (W * mu)   (SA; Z = 1 at beta = 0)

p is the density w.r.t. the surface measure sigma. The state is the vector of spherical-
harmonic coefficients of degree <= lmax (shtns orthonormal harmonics, integral |Y|^2 = 1, with
the Condon-Shortley phase; a real field keeps the m >= 0 coefficients), stored as the
deviation q = p - pbar from the uniform density pbar = mass/(4 pi) of the same mass, so that
a perturbation of 1e-8 keeps full relative precision (as in ``solvers.circle``).

Right-hand side (Galerkin, pseudo-spectral):

* convolution by Funk-Hecke: (W*mu)_lm = lambda_l p_lm with lambda_l from
  ``ExponentialKernel(beta, "scaled").funk_hecke(l, 3)`` = 4 pi sqrt(pi/(2 beta)) I_{l+1/2}(beta)
  e^{-beta}/beta (USA raw rates are multiplied by e^beta afterwards: nothing overflows);
* the linear part at the uniform state is applied exactly in spectral space,
      -div(pbar grad c)_lm = pbar l(l+1) lambda_l q_lm
  (USA; SA divides by Z_inf = beta lambda_0 pbar),
  so a degree-l mode grows at gamma_l of ``meanfield.theory.growth`` up to the time-integration
  error;
* the rest of the flux is formed on the grid: USA q grad(c), SA
  grad(c) (q - pbar beta c'/Z_inf)/Z with c' = W*(p - pbar) (both exactly p v - pbar v_lin);
  its divergence comes from the vector analysis: for V = grad S + curl T (shtns
  ``spat_to_SHsphtor``), (div V)_lm = -l(l+1) S_lm. The l = 0 tendency is set to exactly 0,
  so the mass is conserved exactly.

Grid and dealiasing (the 3/2 rule): on a Gauss-Legendre grid with
    nlat >= 3 (lmax + 1) / 2,   nphi >= 3 lmax + 1
the quadrature of (p v) . grad Y_l (a polynomial of degree <= 3 lmax + 2 on the sphere, with
|m| <= 3 lmax) is exact, so the USA right-hand side is the exact Galerkin projection of
div(p grad c): no aliasing, and the discrete flow commutes with every rotation. For SA, 1/Z is
not a polynomial; the same grid makes its aliasing error tiny (Z is smooth). ``dealias="none"``
only requires nlat >= lmax + 1, nphi >= 2 lmax + 1 (exact transforms, aliased product).
shtns needs nlat >= 32 in any case.

Time step: SSP-RK3 (``solvers.stepping.advance``) with
    dt = min(cfl * h / max|v|, accuracy / max(gamma_max, D)),   h = pi / lmax,
the first a CFL bound (SSP-RK3 is stable for advection of the top degree, eigenvalues up to
i lmax max|v|, if lmax max|v| dt <= sqrt 3, i.e. cfl <= sqrt(3)/pi = 0.55), the second resolves
the linear growth (rate gamma_max) and the compression of clusters, D >= max|div v|: the
density at a cluster grows like e^{|div v| t}, and |div v| reaches 2 rate m for a cluster of
mass m (rate = e^beta for raw USA), far above gamma_max at large beta. D comes from the
spectrum at O(nlm) cost: by the addition theorem
    |Delta c(x)| <= sum_l l(l+1) lambda_l sqrt((2l+1)/(4 pi) P_l),   P_l = sum_m |q_lm|^2,
an equality (2 m) for a point cluster; D = rate times that (USA), and
D = bound / min Z + beta max|v|^2 for SA (div v = Delta c / Z - beta |v|^2).

Positivity: a spectral solution is not positive. Once clusters are narrower than the grid
(~ pi/lmax) it oscillates (Gibbs); ``diagnostics`` reports the power fraction in the top 10 %
of the resolved degrees and ``resolved`` (fraction <= ``resolution_tol`` and no undershoot
beyond the amplitude level of the tail), see ``resolution_report``. The run
stops with ``SolverError`` only when the grid density dips below -``undershoot`` * pbar.
An optional exponential filter sigma(l) = exp(-alpha (l/lmax)^order) (alpha = 36, order = 16
with ``filter=True``) multiplies the coefficients after every time step; sigma(0) = 1 keeps
the mass exact. Its damping accumulates with the number of steps (dt-dependent), so leave it
off when measuring growth rates.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from meanfield.theory.checks import check_beta, check_model, check_positive, check_time_unit
from meanfield.theory.energy import energy_from_scaled
from meanfield.theory.errors import InputError
from meanfield.theory.kernels import ExponentialKernel
from solvers.base import DensityScheme, InMemory
from solvers.fft import default_threads
from solvers.stepping import StepStats, advance, integrators, output_times, run_outputs

FOUR_PI = 4.0 * math.pi
DEALIAS = ("3/2", "none")
#: shtns refuses (and exits the process on) Gauss grids with fewer rings
SHTNS_MIN_NLAT = 32
#: the top 10 % of degrees counted by the resolution diagnostic
TAIL_FRACTION_OF_DEGREES = 0.1
#: Funk-Hecke coefficients below this fraction of the largest are set to 0 (no subnormals)
KERNEL_FLOOR = 1e-24
#: largest beta for raw-time USA: the velocity scale e^beta must stay finite
RAW_BETA_LIMIT = 700.0

_SHTNS = None


def import_shtns():
    """Import shtns with its banner (printed by the C library to fd 1) silenced."""
    global _SHTNS
    if _SHTNS is not None:
        return _SHTNS
    try:
        sys.stdout.flush()
        saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):
        saved = None
    try:
        if saved is not None:
            os.dup2(devnull, 1)
        try:
            import shtns
        except ImportError as exc:  # pragma: no cover - shtns is a hard dependency
            raise RuntimeError("the sphere solver needs shtns (pip install shtns)") from exc
        finally:
            if saved is not None:
                try:  # flush C stdio while fd 1 still points at /dev/null
                    ctypes.CDLL(None).fflush(None)
                except (OSError, AttributeError):  # pragma: no cover
                    pass
    finally:
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
    _SHTNS = shtns
    return shtns


# --------------------------------------------------------------------------- grid rules
def _fast_length(n: int) -> int:
    """Smallest even m >= n whose prime factors are 2, 3, 5 (fast FFTs in shtns)."""
    m = max(2, int(n))
    while True:
        if m % 2 == 0:
            k = m
            for f in (2, 3, 5):
                while k % f == 0:
                    k //= f
            if k == 1:
                return m
        m += 1


def minimum_grid(lmax: int, dealias: str = "3/2") -> tuple[int, int]:
    """(nlat_min, nphi_min) for ``dealias``: 3/2 rule or exact transforms only (``none``)."""
    if dealias == "3/2":
        nlat, nphi = -(-3 * (lmax + 1) // 2), 3 * lmax + 1
    else:
        nlat, nphi = lmax + 1, 2 * lmax + 1
    return max(nlat, SHTNS_MIN_NLAT), nphi


def default_grid(lmax: int, dealias: str = "3/2") -> tuple[int, int]:
    """Even nlat and FFT-friendly even nphi just above :func:`minimum_grid`."""
    nlat, nphi = minimum_grid(lmax, dealias)
    return nlat + nlat % 2, _fast_length(nphi)


# --------------------------------------------------------------------------- backend
class SphericalTransform:
    """The one narrow interface to shtns: orthonormal harmonics on a Gauss grid (nlat, nphi).

    Grid arrays are (nlat, nphi), rings from the north pole (x = cos colatitude descending),
    phi_k = 2 pi k / nphi. Coefficients are complex, indexed like shtns (``l``, ``m`` arrays,
    index 0 is (0, 0)); a real field f = sum_l [f_l0 Y_l0 + 2 Re sum_{m>0} f_lm Y_lm], so its
    L2 norm squared is sum |f_l0|^2 + 2 sum_{m>0} |f_lm|^2.
    """

    def __init__(self, lmax: int, nlat: int, nphi: int, threads: int | None = None,
                 polar_opt: float = 0.0) -> None:
        shtns = import_shtns()
        self.lmax, self.nlat, self.nphi = int(lmax), int(nlat), int(nphi)
        self.sh = shtns.sht(self.lmax, self.lmax, norm=shtns.sht_orthonormal,
                            nthreads=int(threads or default_threads()))
        self.sh.set_grid(self.nlat, self.nphi, shtns.sht_gauss | shtns.SHT_PHI_CONTIGUOUS,
                         float(polar_opt))
        if (self.sh.nlat, self.sh.nphi) != (self.nlat, self.nphi):  # pragma: no cover
            raise RuntimeError(f"shtns chose grid {self.sh.nlat} x {self.sh.nphi}")
        self.nlm = self.sh.nlm
        self.l = np.asarray(self.sh.l, dtype=np.int64)
        self.m = np.asarray(self.sh.m, dtype=np.int64)
        self.x = np.array(self.sh.cos_theta)
        # Gauss-Legendre weights (sum 2) for the same nodes, north first as in shtns
        gx, gw = np.polynomial.legendre.leggauss(self.nlat)
        if not np.allclose(gx[::-1], self.x, rtol=0, atol=1e-13):  # pragma: no cover
            raise RuntimeError("shtns grid is not the Gauss-Legendre grid")
        self.weights = gw[::-1].copy()
        self.phi = 2.0 * math.pi * np.arange(self.nphi) / self.nphi
        self._zero = np.zeros(self.nlm, dtype=complex)

    def spat(self) -> np.ndarray:
        return np.empty((self.nlat, self.nphi))

    def analyse(self, f: np.ndarray) -> np.ndarray:
        """f_lm = integral f Y_lm^* dsigma (Gauss quadrature)."""
        out = np.empty(self.nlm, dtype=complex)
        self.sh.spat_to_SH(np.ascontiguousarray(f, dtype=float), out)
        return out

    def synth(self, c: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = self.spat() if out is None else out
        self.sh.SH_to_spat(np.ascontiguousarray(c, dtype=complex), out)
        return out

    def synth_grad(self, s: np.ndarray, vt: np.ndarray, vp: np.ndarray) -> None:
        """(d_theta S, (1/sin theta) d_phi S) of the scalar S with coefficients s."""
        self.sh.SHsph_to_spat(s, vt, vp)

    def synth_value_grad(self, q: np.ndarray, s: np.ndarray, f: np.ndarray, vt: np.ndarray,
                         vp: np.ndarray) -> None:
        """f = synth(q) and grad synth(s) in one pass (shtns SHqst_to_spat, T = 0)."""
        self.sh.SHqst_to_spat(q, s, self._zero, f, vt, vp)

    def spheroidal(self, vt: np.ndarray, vp: np.ndarray, s: np.ndarray,
                   t: np.ndarray) -> None:
        """S_lm (and T_lm) with V = grad S + curl T; div V = -l(l+1) S_lm."""
        self.sh.spat_to_SHsphtor(vt, vp, s, t)

    def quadrature(self, f: np.ndarray) -> float:
        """integral f dsigma on the grid (exact for degree <= 2 nlat - 1)."""
        return float(self.weights @ f.sum(axis=1)) * (2.0 * math.pi / self.nphi)


# --------------------------------------------------------------------------- results
@dataclass
class SphereResult:
    """What ``run`` returns: output times, densities (n_times, nlat, nphi) and diagnostics.

    ``lat`` (degrees north, rings from the north pole) and ``lon`` (degrees east) give the
    grid; ``coefficients`` (n_times, nlm) are the full p_lm (shtns order, ``degrees`` and
    ``orders`` give l and m) for exact evaluation anywhere.
    """

    lat: np.ndarray
    lon: np.ndarray
    times: np.ndarray
    density: np.ndarray
    coefficients: np.ndarray
    degrees: np.ndarray
    orders: np.ndarray
    diagnostics: dict[str, np.ndarray]
    steps: int
    max_courant: float
    scheme: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ResolutionReport:
    """Is the spectral solution still resolved? (see ``Spectral.resolution_report``)

    ``tail_fraction`` = sum_{l in band} P_l / sum_l P_l over the band
    ``first_tail_degree``..``last_tail_degree`` (the top 10 % of the resolved degrees);
    resolved iff tail_fraction <= ``threshold`` and min p >= -sqrt(threshold) max p (an
    undershoot beyond the amplitude level of the tail is Gibbs ringing: the exact solution is
    positive).
    """

    tail_fraction: float
    threshold: float
    first_tail_degree: int
    last_tail_degree: int
    min_density: float
    max_density: float

    @property
    def negative(self) -> bool:
        return bool(self.min_density < -math.sqrt(self.threshold) * self.max_density)

    @property
    def resolved(self) -> bool:
        return bool(self.tail_fraction <= self.threshold and not self.negative)

    @property
    def message(self) -> str:
        what = (f"{self.tail_fraction:.2e} of the L2 power of p lies in degrees "
                f"{self.first_tail_degree}..{self.last_tail_degree} (threshold "
                f"{self.threshold:.0e}), min p / max p = "
                f"{self.min_density / self.max_density:.1e}")
        if self.resolved:
            return "resolved: " + what
        return ("NOT resolved: " + what + ": structures are narrower than the grid resolves "
                "(increase lmax); values from here on are not to be trusted")


# --------------------------------------------------------------------------- scheme
class Spectral(DensityScheme):
    """Pseudo-spectral Galerkin scheme on S^2 (see module doc for the formulas).

    Parameters
    ----------
    lmax : int
        Truncation degree (>= 4).
    beta : float
        Inverse temperature (>= 0) of W(t) = e^{beta t}/beta.
    model : {"usa", "sa"}
    time_unit : {"raw", "scaled"}
        ``scaled`` (USA): time in units where the kernel is e^{beta(t-1)}/beta. Raw USA needs
        beta <= 700 (the velocity scale e^beta).
    cfl : float in (0, sqrt(3)/pi]
        Fraction of h/max|v|, h = pi/lmax, used by the adaptive step (<= 0.55: SSP-RK3
        stability for the top degree).
    dt : float, optional
        Fixed time step (a violation of h/max|v| warns).
    accuracy : float
        Adaptive steps also satisfy dt <= accuracy / gamma_max.
    integrator : {"ssprk3", "euler"}
    dealias : {"3/2", "none"}
        Grid rule (module doc). ``nlat``/``nphi`` override the default grid and must obey it.
    filter : None, bool or (alpha, order)
        Exponential filter sigma(l) = exp(-alpha (l/lmax)^order) after every step; ``True``
        means (36, 16).
    resolution_tol : float
        The solution counts as resolved while the power fraction in the top 10 % of degrees is
        at most this (default 1e-6, i.e. a relative amplitude of ~1e-3 there).
    undershoot : float
        The run stops (SolverError) when min p < -undershoot * pbar on the grid.
    threads : int, optional
        shtns OpenMP threads (default: $MEANFIELD_FFT_THREADS or 1).
    polar_opt : float
        shtns polar optimisation threshold (0: exact transforms).
    """

    name = "spectral"

    def __init__(self, lmax: int, beta: float = 5.0, model: str = "usa", *,
                 time_unit: str = "raw", cfl: float = 0.4, dt: float | None = None,
                 accuracy: float = 0.02, integrator: str = "ssprk3", dealias: str = "3/2",
                 filter: bool | tuple[float, float] | None = None, nlat: int | None = None,
                 nphi: int | None = None, resolution_tol: float = 1e-6,
                 undershoot: float = 0.5, threads: int | None = None,
                 polar_opt: float = 0.0) -> None:
        self.lmax = check_positive(lmax, "lmax", integer=True, minimum=4, inclusive=True)
        self.beta = float(check_beta(beta))
        self.model = check_model(model)
        self.time_unit = check_time_unit(time_unit, model)
        self.cfl = check_positive(cfl, "cfl")
        if self.cfl > math.sqrt(3.0) / math.pi:
            raise InputError("cfl", "must be in (0, 0.55] (sqrt(3)/pi: SSP-RK3 stability of "
                             "the top degree)", cfl)
        self.fixed_dt = None if dt in (None, 0) else check_positive(dt, "dt")
        self.accuracy = check_positive(accuracy, "accuracy")
        if integrator not in integrators("grid"):
            raise InputError("integrator", f"must be one of {', '.join(integrators('grid'))}",
                             integrator)
        self.integrator = integrator
        if dealias not in DEALIAS:
            raise InputError("dealias", f"must be one of {', '.join(DEALIAS)}", dealias)
        self.dealias = dealias
        self.resolution_tol = check_positive(resolution_tol, "resolution_tol")
        self.undershoot = check_positive(undershoot, "undershoot", inclusive=True)
        if model == "usa" and time_unit == "raw" and self.beta > RAW_BETA_LIMIT:
            raise InputError("time_unit", f"'raw' USA needs beta <= {RAW_BETA_LIMIT:g} (the "
                             "velocity scale e^beta overflows): use 'scaled'", time_unit)
        nlat_min, nphi_min = minimum_grid(self.lmax, dealias)
        dl, dp = default_grid(self.lmax, dealias)
        self.nlat = dl if nlat is None else check_positive(nlat, "nlat", integer=True)
        self.nphi = dp if nphi is None else check_positive(nphi, "nphi", integer=True)
        rule = "the 3/2 dealiasing rule" if dealias == "3/2" else "exact transforms"
        if self.nlat < nlat_min:
            raise InputError("nlat", f"must be >= {nlat_min} for lmax = {self.lmax} ({rule}; "
                             f"shtns needs >= {SHTNS_MIN_NLAT})", nlat)
        if self.nphi < nphi_min:
            raise InputError("nphi", f"must be >= {nphi_min} for lmax = {self.lmax} ({rule})",
                             nphi)
        self._filter_params = self._check_filter(filter)

        self.sht = SphericalTransform(self.lmax, self.nlat, self.nphi, threads, polar_opt)
        sht = self.sht
        self.x = sht.x
        self.theta = np.arccos(np.clip(sht.x, -1.0, 1.0))
        self.phi = sht.phi
        self.lat = 90.0 - np.degrees(self.theta)
        self.lon = np.degrees(self.phi)
        self.kernel = ExponentialKernel(self.beta, "scaled")
        # USA raw multiplies the scaled-unit velocity by e^beta (finite for beta <= 700)
        self.rate = math.exp(self.beta) if (model == "usa" and time_unit == "raw") else 1.0
        self._sa = model == "sa" and self.beta > 0  # SA at beta = 0 has Z = 1: same as USA
        degrees = np.arange(self.lmax + 1)
        self.lam = np.asarray(self.kernel.funk_hecke(degrees, 3), dtype=float)  # scaled unit
        # lambda_l decays like (beta/2)^l / l!: below 1e-24 max lambda it changes nothing in
        # double precision, but products with such numbers are subnormal and make every
        # transform many times slower, so those degrees get exactly 0
        self._negligible = self.lam < KERNEL_FLOOR * self.lam.max()
        self._lam_lm = np.where(self._negligible, 0.0, self.lam)[sht.l].astype(complex)
        self._ll1 = (sht.l * (sht.l + 1)).astype(float)
        self._power_weight = np.where(sht.m == 0, 1.0, 2.0)
        if self._filter_params is None:
            self._filter = None
            l_eff = self.lmax
        else:
            alpha, order = self._filter_params
            self._filter = np.exp(-alpha * (sht.l / self.lmax) ** order).astype(complex)
            # beyond the half-amplitude degree the filter, not the dynamics, sets the spectrum
            l_eff = max(2, int(self.lmax * (math.log(2.0) / alpha) ** (1.0 / order)))
        n_tail = max(1, round(TAIL_FRACTION_OF_DEGREES * (l_eff + 1)))
        self.tail_degrees = (l_eff + 1 - n_tail, l_eff)
        self.h = math.pi / self.lmax
        self.reference_density = 1.0 / FOUR_PI
        self.max_speed = 0.0
        self.max_degree = self.lmax
        self.max_compression = 0.0
        ll = np.arange(self.lmax + 1)
        lam_eff = np.where(self.lam < KERNEL_FLOOR * self.lam.max(), 0.0, self.lam)
        self._lap_bound = ll * (ll + 1) * lam_eff * np.sqrt((2 * ll + 1) / FOUR_PI)
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._buf = {k: sht.spat() for k in ("f", "vt", "vp", "w1", "w2", "w3")}
        self._s = np.empty(sht.nlm, dtype=complex)
        self._t = np.empty(sht.nlm, dtype=complex)
        self.set_background(1.0 / FOUR_PI)

    @staticmethod
    def _check_filter(spec) -> tuple[float, float] | None:
        if spec is None or spec is False:
            return None
        if spec is True:
            return 36.0, 16.0
        try:
            alpha, order = (float(v) for v in spec)
        except (TypeError, ValueError):
            raise InputError("filter", "must be None, True or (alpha, order)", spec) from None
        if not (math.isfinite(alpha) and alpha > 0 and math.isfinite(order) and order >= 2):
            raise InputError("filter", "needs alpha > 0 and order >= 2", spec)
        return alpha, order

    # ------------------------------------------------------------------ background, rates
    def set_background(self, pbar: float) -> None:
        """Uniform part pbar = mass/(4 pi); fixes Z_inf and the exact linear multipliers.

        gamma_l = rate pbar l(l+1) lambda_l (USA; lambda_l scaled, rate = e^beta for raw
        USA, else 1) and gamma_l / Z_inf, Z_inf = beta lambda_0 pbar, for SA.
        """
        self.background = float(pbar)
        self.z_uniform = self.beta * self.lam[0] * pbar if self._sa else 1.0
        per_degree = self.rate * pbar * np.arange(self.lmax + 1) * np.arange(1, self.lmax + 2)
        self.growth_rates = per_degree * self.lam / self.z_uniform
        self._lin = np.where(self._negligible, 0.0, self.growth_rates)[self.sht.l].astype(complex)

    @property
    def accuracy_dt(self) -> float:
        """accuracy / max(gamma_max, D), D >= max|div v| of the last ``rhs`` state."""
        rate = max(self.gamma_max, self.max_compression)
        return self.accuracy / rate if rate > 0 else math.inf

    # ------------------------------------------------------------------ grid <-> spectrum
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, phi): cos(colatitude) of the rings (north first) and longitudes in radians,
        the arguments of every function in ``meanfield.initial.sphere``."""
        return self.x.copy(), self.phi.copy()

    def analyse(self, p: np.ndarray) -> np.ndarray:
        """Coefficients p_lm (l <= lmax) of a grid field (Gauss quadrature)."""
        return self.sht.analyse(p)

    def synthesise(self, c: np.ndarray) -> np.ndarray:
        """Grid values (nlat, nphi) of the coefficients c."""
        return self.sht.synth(c)

    def check_density(self, p0) -> np.ndarray:
        p = np.asarray(p0, dtype=float)
        if p.shape != (self.nlat, self.nphi):
            raise InputError("p0", f"must be an array of shape (nlat, nphi) = "
                             f"({self.nlat}, {self.nphi})", f"shape {p.shape}")
        if not np.all(np.isfinite(p)) or p.min() < 0:
            raise InputError("p0", "must be finite and >= 0 everywhere")
        if not self.sht.quadrature(p) > 0:
            raise InputError("p0", "must have positive mass")
        return np.array(p, dtype=float)

    def mass_of(self, p: np.ndarray) -> float:
        """integral p dsigma of grid values (Gauss quadrature)."""
        return self.sht.quadrature(p)

    def split(self, p: np.ndarray) -> np.ndarray:
        """Project p on degrees <= lmax, set pbar = p_00/sqrt(4 pi), return q (q_00 = 0)."""
        c = self.sht.analyse(p)
        self.set_background(c[0].real / math.sqrt(FOUR_PI))
        c[0] = 0.0
        c[self.sht.m == 0] = c[self.sht.m == 0].real  # a real field: m = 0 terms are real
        self._cache = None
        return c

    def join(self, q: np.ndarray) -> np.ndarray:
        """The grid density p = pbar + synth(q)."""
        return self.background + self._grid_of(q)

    def coefficients(self, q: np.ndarray) -> np.ndarray:
        """The full p_lm (q plus the uniform part sqrt(4 pi) pbar at l = 0)."""
        c = q.copy()
        c[0] = math.sqrt(FOUR_PI) * self.background
        return c

    def _grid_of(self, q: np.ndarray) -> np.ndarray:
        """synth(q), cached: the positivity check and the next rhs share one synthesis."""
        hit = self._cached(q)
        if hit is not None:
            return hit
        g = self.sht.synth(q)
        self._cache = (q, q.copy(), g)
        return g

    def _cached(self, q: np.ndarray) -> np.ndarray | None:
        c = self._cache
        if c is not None and c[0] is q and np.array_equal(c[1], q):
            return c[2]
        return None

    # ------------------------------------------------------------------ right-hand side
    def _flux(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid flux p v - pbar v_lin (module doc) in buffers vt, vp; sets max_speed."""
        sht, b = self.sht, self._buf
        vt, vp, w1, w2 = b["vt"], b["vp"], b["w1"], b["w2"]
        qg = self._cached(q)
        if not self._sa:
            s = np.multiply(q, self._lam_lm, out=self._s)
            s *= self.rate
            if qg is None:
                qg = b["f"]
                sht.synth_value_grad(q, s, qg, vt, vp)
            else:
                sht.synth_grad(s, vt, vp)
            np.multiply(vt, vt, out=w1)
            np.multiply(vp, vp, out=w2)
            w1 += w2
            self.max_speed = math.sqrt(float(w1.max()))
            self.max_compression = self.rate * self._laplacian_bound(q)
            vt *= qg
            vp *= qg
            return vt, vp
        if qg is None:
            qg = sht.synth(q, b["f"])
        s = np.multiply(q, self._lam_lm, out=self._s)
        cdev, z, w3 = w1, w2, b["w3"]
        sht.synth_value_grad(s, s, cdev, vt, vp)  # c' = W*(p - pbar) and grad c'
        np.multiply(cdev, self.beta, out=z)
        z += self.z_uniform                        # Z = Z_inf + beta c'
        # max |v| = max |grad c'| / Z
        np.multiply(vt, vt, out=w3)
        w3 += vp * vp
        w3 /= z * z
        self.max_speed = math.sqrt(float(w3.max()))
        self.max_compression = (self._laplacian_bound(q) / float(z.min())
                                + self.beta * self.max_speed**2)
        # flux p v - pbar v_lin = grad(c') (q - pbar beta c'/Z_inf) / Z
        cdev *= -self.background * self.beta / self.z_uniform
        cdev += qg
        cdev /= z
        vt *= cdev
        vp *= cdev
        return vt, vp

    def _laplacian_bound(self, q: np.ndarray) -> float:
        """max |Delta (W*mu)| <= sum_l l(l+1) lambda_l sqrt((2l+1)/(4 pi) P_l) (scaled unit)."""
        p2 = (q.real * q.real + q.imag * q.imag) * self._power_weight
        power = np.bincount(self.sht.l, weights=p2, minlength=self.lmax + 1)
        return float(self._lap_bound @ np.sqrt(power))

    def rhs(self, q: np.ndarray) -> np.ndarray:
        """d q / dt: exact linear part plus the divergence of the grid flux (module doc)."""
        ft, fp = self._flux(q)
        self.sht.spheroidal(ft, fp, self._s, self._t)
        out = self._s * self._ll1           # -div F = l(l+1) S_lm
        out += self._lin * q
        out[0] = 0.0                        # mass: exactly zero tendency
        return out

    def velocity(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(v_theta, v_phi) on the grid in the run's time unit (theta = colatitude)."""
        s = q * self._lam_lm
        vt, vp = self.sht.spat(), self.sht.spat()
        self.sht.synth_grad(s, vt, vp)
        if not self._sa:
            return vt * self.rate, vp * self.rate
        z = self.z_uniform + self.beta * self.sht.synth(s)
        return vt / z, vp / z

    def stable_dt(self) -> float:
        """CFL bound h / max|v| (h = pi/lmax) for the state of the last ``rhs`` call."""
        if self.max_speed <= 0:
            return math.inf
        return self.h / self.max_speed

    @property
    def step_size(self) -> float | None:
        """The fixed time step (None: adaptive)."""
        return self.fixed_dt

    def euler_update(self, q: np.ndarray, dt: float, k: np.ndarray) -> np.ndarray:
        return q + dt * k

    def min_density(self, q: np.ndarray) -> float:
        """Grid minimum of p plus the tolerated undershoot (integrator's stop criterion).

        ``advance`` stops a run when this is negative, i.e. when min p < -undershoot pbar;
        ``diagnostics`` reports the true minimum.
        """
        return self.background * (1.0 + self.undershoot) + float(self._grid_of(q).min())

    # ------------------------------------------------------------------ diagnostics
    def power(self, q: np.ndarray) -> np.ndarray:
        """P_l = sum_m |p_lm|^2 (real-field convention), l = 0..lmax; sum_l P_l = ||p||_2^2."""
        p2 = (q.real * q.real + q.imag * q.imag) * self._power_weight
        out = np.bincount(self.sht.l, weights=p2, minlength=self.lmax + 1)
        out[0] = FOUR_PI * self.background**2
        return out

    def resolution_report(self, q: np.ndarray, power: np.ndarray | None = None,
                          density: np.ndarray | None = None) -> ResolutionReport:
        """Spectral tail and undershoot of the state q (see :class:`ResolutionReport`).

        The tail band is the top 10 % of the degrees 0..l_eff, l_eff = lmax without filter,
        else the filter's half-amplitude degree lmax (ln 2 / alpha)^{1/order} (0.78 lmax for
        the default filter: above it the filter, not the dynamics, shapes the spectrum).
        The threshold is ``resolution_tol`` (default 1e-6: tail amplitudes ~1e-3 of ||p||).
        """
        pw = self.power(q) if power is None else power
        p = self.join(q) if density is None else density
        lo, hi = self.tail_degrees
        tail = float(pw[lo: hi + 1].sum() / pw.sum())
        return ResolutionReport(tail, self.resolution_tol, lo, hi, float(p.min()),
                                float(p.max()))

    def diagnostics(self, q: np.ndarray, modes: int | None = None) -> dict:
        """mass, min/max density, energy, ebar, spectrum, dominant mode, max speed, spectral
        tail fraction and ``resolved``.

        E = (1/2) iint W dmu dmu = (1/2) sum_l lambda_l P_l in the run's unit (raw USA and SA:
        e^beta times the scaled value, inf beyond beta ~ 709; Ebar never overflows),
        Ebar = 2 beta e^{-beta} E (beta = 0, W(t) = t: Ebar = |integral x dmu|^2 = 2 E).
        mass = grid quadrature of p (exact for band-limited p); spectrum = sqrt(P_l) =
        ||P_l mu||_{L2(sigma)}, P_l = sum_m |p_lm|^2 (``power``), l = 0..lmax; dominant_mode
        = argmax of P_l over 1 <= l <= modes (default min(lmax, max(16, 4 k_max)));
        tv_distance = (1/2) integral |p - pbar| dsigma (grid quadrature).
        """
        modes = self.default_modes() if modes is None else int(modes)
        pw = self.power(q)
        e_scaled = 0.5 * float(self.lam @ pw)
        energy, ebar = energy_from_scaled(e_scaled, self.beta, self.model, self.time_unit)
        p = self.join(q)
        vt, vp = self.velocity(q)
        rep = self.resolution_report(q, pw, p)
        return {
            "mass": self.sht.quadrature(p),
            "min_density": float(p.min()),
            "max_density": float(p.max()),
            "energy": float(energy),
            "ebar": float(ebar),
            "max_speed": math.sqrt(float(np.max(vt * vt + vp * vp))),
            "dominant_mode": int(np.argmax(pw[1: modes + 1]) + 1),
            "tv_distance": 0.5 * self.sht.quadrature(np.abs(p - self.background)),
            "spectrum": np.sqrt(pw[: modes + 1]),
            "tail_fraction": rep.tail_fraction,
            "resolved": rep.resolved,
        }

    # ------------------------------------------------------------------ driving
    def advance(self, q: np.ndarray, t: float, t_target: float, stats: StepStats | None = None,
                deadline: float | None = None,
                max_steps: int | None = None) -> tuple[np.ndarray, float]:
        """Step q from t to exactly ``t_target`` (filter, if any, after every step); earlier
        if ``deadline`` passes or ``stats.steps`` reaches ``max_steps``."""
        if self._filter is None:
            return advance(self, q, t, t_target, integrator=self.integrator,
                           fixed_dt=self.fixed_dt, stats=stats, deadline=deadline,
                           max_steps=max_steps)
        stats = stats if stats is not None else StepStats()
        while t < t_target and (max_steps is None or stats.steps < max_steps):
            n0 = stats.steps
            q, t = advance(self, q, t, t_target, integrator=self.integrator,
                           fixed_dt=self.fixed_dt, stats=stats, deadline=deadline,
                           max_steps=n0 + 1)
            if stats.steps == n0:  # deadline passed
                break
            q = q * self._filter
            if stats.compensation is not None:
                stats.compensation = stats.compensation * self._filter
        return q, t

    def run(self, p0, t_end: float, times: Sequence[float] | None = None, *,
            observer: Callable | None = None, modes: int | None = None,
            progress: bool = False) -> SphereResult:
        """Integrate from t = 0 to ``t_end``; store density and diagnostics at ``times``.

        ``p0`` is a grid density (nlat, nphi) (see ``grid`` and ``meanfield.initial.sphere``);
        it is projected on degrees <= lmax (a rough p0, e.g. a particle histogram, rings
        after projection: use ``from_particles(..., kappa=...)``). ``times`` (default: 0 and
        t_end) are landed on exactly; ``observer(t, p, diag)`` is called at each. Raises
        :class:`~solvers.stepping.SolverError` on a non-finite density or an undershoot
        below -undershoot * pbar.
        """
        q = self.split(self.check_density(p0))
        t_end, out_times = output_times(times, t_end)
        r = run_outputs(InMemory(self, modes), q, out_times, progress=progress, observer=observer,
                        collect=self.coefficients, snapshot=self.join)
        return SphereResult(self.lat.copy(), self.lon.copy(), r["times"], r["snapshots"],
                            np.array(r["extra"]), self.sht.l.copy(), self.sht.m.copy(),
                            r["diagnostics"], r["stats"].steps, r["stats"].max_courant,
                            self.name,
                            {"wall_seconds": r["wall_seconds"], "lmax": self.lmax,
                             "nlat": self.nlat, "nphi": self.nphi, "dealias": self.dealias,
                             "filter": self._filter_params})


__all__ = [
    "DEALIAS",
    "ResolutionReport",
    "Spectral",
    "SphereResult",
    "SphericalTransform",
    "default_grid",
    "import_shtns",
    "minimum_grid",
]
