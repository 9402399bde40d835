"""Query, key and value matrices of self-attention and their documented random ensembles.

Only B = Q^T K (the bilinear form of the attention scores <Q x, K y> = <x, B y>) and V enter
the dynamics (docs/conventions.md). ``attention_matrices`` builds them from literal arrays or
draws them from an ensemble with a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from meanfield.theory.checks import check_dim, check_positive
from meanfield.theory.errors import InputError

QKV_ENSEMBLES = ("identity", "gaussian", "orthogonal", "symmetric-psd")


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


@dataclass(frozen=True)
class AttentionReport:
    """Spectral data of a general attention layer (B = Q^T K, V) for the low-temperature
    theory of seed 004 (docs/conventions.md §3): A = V B^T and its top eigenspace E, the top
    eigenspaces F (largest eigenvalue) and F_abs (largest modulus) of V, the singular values
    of B and the predicted rates. Eigenvalues of non-symmetric matrices are ordered by their
    real part (F) or modulus (F_abs); spaces are orthonormal bases (columns)."""

    B: np.ndarray
    V: np.ndarray
    A: np.ndarray
    invertible: bool            # A1: B invertible
    symmetric: bool             # A2: A = V B^T symmetric
    mu: np.ndarray              # eigenvalues of A (real parts if A is not symmetric), desc.
    multiplicity: int           # k = dim E
    E: np.ndarray               # (d, k) orthonormal basis of the top eigenspace of A
    gap: float                  # gamma = mu_1 - mu_2 (inf when k = d)
    F: np.ndarray               # top eigenspace of V (largest real part)
    F_abs: np.ndarray           # eigenspace of V's eigenvalue of largest modulus
    sigma_min: float
    sigma_max: float

    def collapse_rate(self, p: float = 1.0) -> float:
        """p gamma / sigma_max(B): the rate of W_2(rho_t, Pi_# rho_0) <= sqrt(2 V_p)
        e^{-p gamma t / sigma_max(B)} at beta = inf (seed 004, Cor. 2; p in (0, 1],
        p < k/2 for a positive density)."""
        return p * self.gap / self.sigma_max

    def circle_rate(self) -> float | None:
        """d = 2, dim E = 1: the exact zero-temperature W_2 decay rate of a positive
        density, min(gamma / |B^T e|, gamma / (2 |B^T e_perp|)) (notes-004 X4)."""
        if self.A.shape[0] != 2 or self.multiplicity != 1:
            return None
        e = self.E[:, 0]
        perp = np.array([-e[1], e[0]])
        return float(min(self.gap / np.linalg.norm(self.B.T @ e),
                         self.gap / (2 * np.linalg.norm(self.B.T @ perp))))

    def projection(self, x: np.ndarray) -> np.ndarray:
        """Pi(x) = P_E x / |P_E x| (rows of x; NaN rows on E^perp)."""
        pe = (np.asarray(x, float) @ self.E) @ self.E.T
        with np.errstate(invalid="ignore", divide="ignore"):
            return pe / np.linalg.norm(pe, axis=-1, keepdims=True)

    def as_dict(self) -> dict:
        def num(v):
            return None if not np.isfinite(v) else float(v)
        return {"d": int(self.A.shape[0]), "A1_B_invertible": self.invertible,
                "A2_A_symmetric": self.symmetric, "mu": [float(m) for m in self.mu],
                "mu_1": float(self.mu[0]), "multiplicity_k": self.multiplicity,
                "gap_gamma": num(self.gap), "E": self.E.T.tolist(), "F": self.F.T.tolist(),
                "F_abs": self.F_abs.T.tolist(), "sigma_min_B": self.sigma_min,
                "sigma_max_B": self.sigma_max, "collapse_rate_p1": num(self.collapse_rate()),
                "circle_w2_rate": self.circle_rate()}


def _top_space(w: np.ndarray, vecs: np.ndarray, key: np.ndarray, tol: float) -> np.ndarray:
    """Orthonormal basis of the span of the eigenvectors whose ``key`` is within tol of the
    largest (real parts of complex pairs give a real 2-plane)."""
    top = key.max()
    sel = np.abs(key - top) <= tol * max(1.0, abs(top))
    basis = np.concatenate([vecs[:, sel].real, vecs[:, sel].imag], axis=1)
    u, s, _ = np.linalg.svd(basis, full_matrices=False)
    return u[:, s > 1e-10 * s.max()]


def attention_report(B, V, tol: float = 1e-10) -> AttentionReport:
    """The spectral data of (B, V) that seed 004's theory uses (see :class:`AttentionReport`).

    ``tol`` (relative) decides equal eigenvalues, the symmetry of A and the invertibility of
    B (sigma_min(B) > tol sigma_max(B))."""
    b = np.asarray(B, dtype=float)
    v = np.asarray(V, dtype=float)
    if b.ndim != 2 or b.shape[0] != b.shape[1] or v.shape != b.shape \
            or not (np.all(np.isfinite(b)) and np.all(np.isfinite(v))):
        raise InputError("B, V", "must be finite square matrices of the same shape",
                         (b.shape, v.shape))
    d = b.shape[0]
    a = v @ b.T
    sv = np.linalg.svd(b, compute_uv=False)
    invertible = bool(sv[-1] > tol * sv[0])
    symmetric = bool(np.linalg.norm(a - a.T) <= tol * max(np.linalg.norm(a), 1e-300))
    if symmetric:
        mu, vecs = np.linalg.eigh(0.5 * (a + a.T))
        mu, vecs = mu[::-1], vecs[:, ::-1]
        k = int(np.sum(np.abs(mu - mu[0]) <= tol * max(1.0, abs(mu[0]))))
        e = vecs[:, :k]
    else:
        w, vecs = np.linalg.eig(a)
        order = np.argsort(-w.real, kind="stable")
        w, vecs = w[order], vecs[:, order]
        e = _top_space(w, vecs, w.real, tol)
        k = e.shape[1]
        mu = w.real
    gap = float(mu[0] - mu[k]) if k < d else math.inf
    wv, vv = np.linalg.eig(v)
    f = _top_space(wv, vv, wv.real, tol)
    f_abs = _top_space(wv, vv, np.abs(wv), tol)
    return AttentionReport(b, v, a, invertible, symmetric, np.asarray(mu, float), k, e, gap,
                           f, f_abs, float(sv[-1]), float(sv[0]))


#: the random-matrix ensembles of seed 001 Fig. 4 (``phase_ensemble``)
PHASE_ENSEMBLES = ("identity", "ginibre", "wigner-psd", "ginibre-gradient", "wigner-gradient")


def phase_ensemble(name: str, dim: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(B = Q^T K, V) drawn from one of seed 001 Fig. 4's ensembles, normalised so that B and
    V have operator norms O(1) in any d (G, H: independent d x d matrices of i.i.d. N(0, 1)):

    * ``identity``          B = V = I;
    * ``ginibre``           Q, K, V Ginibre with entries N(0, 1/d): B = Q^T K (Fig. 4a);
    * ``wigner-psd``        B = (G + G^T)/sqrt(2d) (GOE, semicircle on [-2, 2]) and
                            V = H H^T/d (Wishart, positive semi-definite; Fig. 4b);
    * ``ginibre-gradient``  Q, K Ginibre, V = B = Q^T K (Fig. 4c);
    * ``wigner-gradient``   B GOE as above, V = B (Fig. 4d).
    """
    d = check_dim(dim)
    if name not in PHASE_ENSEMBLES:
        raise InputError("ensemble", f"must be one of {', '.join(PHASE_ENSEMBLES)}", name)
    if name == "identity":
        return np.eye(d), np.eye(d)
    s = 1.0 / math.sqrt(d)
    if name.startswith("ginibre"):
        q, k = s * rng.standard_normal((d, d)), s * rng.standard_normal((d, d))
        b = q.T @ k
        v = b.copy() if name.endswith("gradient") else s * rng.standard_normal((d, d))
        return b, v
    g = rng.standard_normal((d, d))
    b = (g + g.T) / math.sqrt(2 * d)
    if name.endswith("gradient"):
        return b, b.copy()
    h = rng.standard_normal((d, d))
    return b, h @ h.T / d
