"""Diagnostics of seed 004 for a measure given as weighted points on S^{d-1}.

A particle run passes its tokens (weights 1/n); a circle grid passes its cell centres with
the cell masses (midpoint rule, second order). With P_E, P_F the orthogonal projectors on
the top eigenspace E of A = V B^T and on the top eigenspace F of V (notes-004 §1.4-1.6):

* alignment a_S = int |P_S x|^2 drho (1 when rho lives on S, k/d when uniform);
* V_p = int |(I - P_E) x|^{2p} / |P_E x|^{2p} drho (the Lyapunov functional, eq. 14;
  capped at 1e12 per point so mass exactly on E^perp stays finite);
* the transport cost through Pi(x) = P_E x/|P_E x|: int |x - Pi x|^2 drho = int 2 (1 -
  |P_E x|) drho >= W_2^2(rho, Pi_# rho) (Lemma 7);
* the chordal W_2 to Pi_# rho_0 = w_+ delta_e + w_- delta_{-e} when dim E = 1, in closed form
  (notes-004 X3): W_2^2 = 2 - 2 (int_A s drho - int_{A^c} s drho), s = <x, e>, A the top-w_+
  mass of s; for dim E >= 2 by optimal transport (POT) to the projected initial points.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike

#: cap of the ratio |(I - P_E) x|^2 / |P_E x|^2 (points on E^perp)
RATIO_CAP = 1e12


def projector(basis: ArrayLike) -> np.ndarray:
    """P = U U^T for an orthonormal basis U (d, k)."""
    u = np.asarray(basis, float)
    return u @ u.T


def alignment(x: np.ndarray, w: np.ndarray, basis: np.ndarray) -> float:
    """a_S = sum_i w_i |P_S x_i|^2 (S spanned by the orthonormal columns of ``basis``)."""
    c = x @ np.asarray(basis, float)
    return float(w @ np.einsum("ij,ij->i", c, c))


def lyapunov(x: np.ndarray, w: np.ndarray, e_basis: np.ndarray, p: float) -> float:
    """V_p = sum_i w_i R_1(x_i)^p, R_1 = |(I - P_E) x|^2 / |P_E x|^2 (capped)."""
    c = x @ np.asarray(e_basis, float)
    on = np.einsum("ij,ij->i", c, c)
    off = np.maximum(np.einsum("ij,ij->i", x, x) - on, 0.0)
    with np.errstate(divide="ignore"):
        r = np.where(on > 0, off / np.where(on > 0, on, 1.0), RATIO_CAP)
    return float(w @ np.minimum(r, RATIO_CAP) ** p)


def transport_cost(x: np.ndarray, w: np.ndarray, e_basis: np.ndarray) -> float:
    """int |x - Pi x|^2 drho = sum_i w_i 2 (1 - |P_E x_i|) (Pi undefined on E^perp: cost 2)."""
    c = x @ np.asarray(e_basis, float)
    return float(w @ (2.0 * (1.0 - np.sqrt(np.einsum("ij,ij->i", c, c)))))


def two_atom_masses(x: np.ndarray, w: np.ndarray, e: np.ndarray) -> tuple[float, float]:
    """w_+ = rho(<x, e> > 0), w_- = rho(<x, e> < 0) (mass on E^perp split evenly)."""
    s = x @ np.asarray(e, float)
    zero = float(w[s == 0].sum())
    return float(w[s > 0].sum()) + 0.5 * zero, float(w[s < 0].sum()) + 0.5 * zero


def w2_to_two_atoms(x: np.ndarray, w: np.ndarray, e: np.ndarray, w_plus: float) -> float:
    """Chordal W_2(rho, w_+ delta_e + (1 - w_+) delta_{-e}) in closed form (notes-004 X3):
    the top-w_+ mass of s = <x, e> goes to e (the last point split), the rest to -e."""
    s = x @ np.asarray(e, float)
    order = np.argsort(-s, kind="stable")
    s, m = s[order], w[order] / w.sum()
    cum = np.cumsum(m)
    to_plus = np.clip(w_plus - (cum - m), 0.0, m)   # mass of each point sent to +e
    val = 2.0 - 2.0 * (float(to_plus @ s) - float((m - to_plus) @ s))
    return float(np.sqrt(max(val, 0.0)))


def w2_chordal(x: np.ndarray, wx: np.ndarray, y: np.ndarray, wy: np.ndarray) -> float:
    """W_2 between two weighted point sets with the chordal cost |x - y|^2 (exact discrete
    optimal transport, POT's network simplex)."""
    import ot

    a = np.asarray(wx, float) / np.sum(wx)
    b = np.asarray(wy, float) / np.sum(wy)
    cost = np.maximum(2.0 - 2.0 * (np.asarray(x, float) @ np.asarray(y, float).T), 0.0)
    return float(np.sqrt(max(ot.emd2(a, b, cost, numItermax=10_000_000), 0.0)))


class AttentionDiagnostics:
    """The seed-004 series of a run: built once from the spectral report (E, F, F_abs, k)
    and the initial measure (x0, w0), evaluated on each state (x, w).

    ``p`` of V_p defaults to k/4 (Assumption 2 needs p < k/2 for a positive density).
    For dim E >= 2 the W_2 to Pi_# rho_0 is an optimal-transport problem per record (POT);
    ``ot_points`` bounds its size (more points: NaN, use ``meanfield compare`` afterwards).
    """

    NAMES: ClassVar[dict[str, str]] = {
        "w2_pushforward": "chordal W_2(rho_t, Pi_# rho_0) (seed 004 Thm 1)",
        "align_E": "int |P_E x|^2 drho (E: top eigenspace of V B^T)",
        "align_F": "int |P_F x|^2 drho (F: top eigenspace of V)",
        "align_F_abs": "int |P_Fabs x|^2 drho (F_abs: V's eigenvalue of largest modulus)",
        "lyapunov_Vp": "V_p = int |(I - P_E)x|^{2p}/|P_E x|^{2p} drho (seed 004 eq. 14)",
        "transport_cost": "int |x - Pi x|^2 drho >= W_2^2(rho_t, Pi_# rho_t)",
    }

    def __init__(self, report, x0: np.ndarray, w0: np.ndarray, p: float | None = None,
                 ot_points: int = 2048) -> None:
        self.E, self.F, self.F_abs = report.E, report.F, report.F_abs
        self.k = int(report.multiplicity)
        self.p = float(p) if p is not None else self.k / 4.0
        self.ot_points = int(ot_points)
        x0, w0 = np.asarray(x0, float), np.asarray(w0, float)
        if self.k == 1:
            self.e = self.E[:, 0]
            self.w_plus, self.w_minus = two_atom_masses(x0, w0, self.e)
        else:
            proj = x0 @ self.E @ self.E.T
            norm = np.linalg.norm(proj, axis=1)
            keep = norm > 0
            self.pushforward = (proj[keep] / norm[keep, None], w0[keep])

    def __call__(self, x: np.ndarray, w: np.ndarray) -> dict[str, float]:
        x, w = np.asarray(x, float), np.asarray(w, float)
        if self.k == 1:
            w2 = w2_to_two_atoms(x, w, self.e, self.w_plus)
        elif x.shape[0] * self.pushforward[0].shape[0] <= self.ot_points ** 2:
            w2 = w2_chordal(x, w, *self.pushforward)
        else:
            w2 = float("nan")
        return {"w2_pushforward": w2, "align_E": alignment(x, w, self.E),
                "align_F": alignment(x, w, self.F), "align_F_abs": alignment(x, w, self.F_abs),
                "lyapunov_Vp": lyapunov(x, w, self.E, self.p),
                "transport_cost": transport_cost(x, w, self.E)}

    def masses(self) -> dict[str, float]:
        """The two atoms of Pi_# rho_0 (dim E = 1)."""
        return {"w_plus": self.w_plus, "w_minus": self.w_minus} if self.k == 1 else {}
