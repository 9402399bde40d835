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
