"""Linear theory and cluster-scale predictions of causal attention (seed 002, notes-002 §5).

* Linearising the label hierarchy about the uniform state on S^{d-1} (Q = K = V = I, SA), a
  perturbation eps(s, t) Y_l of degree l obeys d_t eps(s) = lambda_l (1/s) int_0^s eps(s') ds'
  (the Hardy averaging operator in the label s), lambda_l the full-attention SA rate
  (``meanfield.theory.growth.growth_rate``). Label profiles s^{g-1} are eigenfunctions:
  they grow at lambda_l / g (g > 1/2 in L^2(0, 1), so rates up to 2 lambda_l).
* Cluster scales of the metastable state: Renyi parking with separation delta = c beta^{-1/2}
  (seed 002 uses c = 4), strong Renyi centres, and the full-attention k_max ~ sqrt(2 beta).
"""

from __future__ import annotations

import math

from meanfield.theory.checks import check_beta, check_positive
from meanfield.theory.errors import InputError
from meanfield.theory.growth import growth_rate, most_unstable_mode

#: Renyi's parking constant (random sequential adsorption on a line, jamming density)
RENYI_CONSTANT = 0.7475979202534114


def hardy_growth_rate(k: int, beta: float, g: float = 1.0, dim: int = 2,
                      model: str = "sa") -> float:
    """lambda_k / g: the growth rate of the label profile s^{g-1} of degree-k perturbations
    (g = 1: label-independent, the full-attention rate; g > 1/2)."""
    gg = float(g)
    if not gg > 0.5:
        raise InputError("g", "must be > 1/2 (s^{g-1} in L^2(0, 1))", g)
    return float(growth_rate(k, beta, dim, model)) / gg


def renyi_expected_strong(n: int, delta: float) -> float:
    """E[# strong Renyi centres] of n i.i.d. uniform tokens on S^1 with arc separation
    delta: (pi/delta)(1 - (1 - delta/pi)^n) (notes-002 Lemma C.1; a token is a strong centre
    iff it is farther than delta from every earlier token)."""
    d = check_positive(delta, "delta")
    if d >= math.pi:
        raise InputError("delta", "must be < pi", delta)
    nn = int(check_positive(n, "n", integer=True, minimum=1, inclusive=True))
    return (math.pi / d) * (1.0 - (1.0 - d / math.pi) ** nn)


def cluster_scales(beta: float, c: float = 4.0) -> dict[str, float]:
    """Predicted metastable cluster counts on S^1 at inverse temperature beta: Renyi jamming
    0.7476 (2 pi/delta) and strong Renyi (n -> inf) pi/delta with delta = c beta^{-1/2}, and the
    full-attention most unstable mode k_max (~ sqrt(2 beta))."""
    b = check_beta(beta)
    delta = check_positive(c, "c") / math.sqrt(b)
    return {"delta": delta, "renyi": RENYI_CONSTANT * 2 * math.pi / delta,
            "strong_renyi": math.pi / delta, "k_max": float(most_unstable_mode(b, 2)),
            "sqrt_2beta": math.sqrt(2 * b)}


#: seed 002 Table 1: the final configuration of (causal or full) attention from V alone
FINAL_TYPES = ("first-token point", "one point in L", "two points +-xi", "cloud around L",
               "two clouds around +-xi", "rotating", "not covered")


def final_configuration(V) -> dict:
    """The final configuration seed 002 Table 1 predicts from the value matrix V: its top
    eigenvalue lambda_max (by real part), the multiplicity, the eigenspace L (orthonormal
    columns) and the type (``FINAL_TYPES``): V a positive multiple of I -> the first token's
    initial position; lambda_max > 0 with dim L >= 2 -> one point in L; dim L = 1 -> two points
    +-xi (L = span xi); lambda_max < 0 -> a cloud around L, or two clouds around +-xi; a complex
    lambda_max -> the configuration rotates. Only the first row is a theorem (Thm 4.1)."""
    import numpy as np

    v = np.asarray(V, float)
    if v.ndim != 2 or v.shape[0] != v.shape[1] or not np.all(np.isfinite(v)):
        raise InputError("V", "must be a finite square matrix", getattr(v, "shape", None))
    w, vecs = np.linalg.eig(v)
    top = float(np.max(w.real))
    sel = np.abs(w.real - top) <= 1e-9 * max(1.0, abs(top))
    if np.any(np.abs(w[sel].imag) > 1e-12):
        return {"type": "rotating", "lambda_max": top, "multiplicity": int(sel.sum()),
                "L": None}
    basis, s, _ = np.linalg.svd(vecs[:, sel].real, full_matrices=False)
    L = basis[:, s > 1e-10 * s.max()]
    k, d = L.shape[1], v.shape[0]
    if top > 0 and np.allclose(v, top * np.eye(d)):
        kind = "first-token point"
    elif top > 0:
        kind = "one point in L" if k >= 2 else "two points +-xi"
    elif top < 0:
        kind = "cloud around L" if k >= 2 else "two clouds around +-xi"
    else:
        kind = "not covered"
    return {"type": kind, "lambda_max": top, "multiplicity": k, "L": L}
