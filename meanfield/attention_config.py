"""The ``[attention]`` section: the query/key/value matrices of a run, given once for every
domain that uses them (the circle's ``attention`` drift, particles).

One source per run: literal ``B`` (= Q^T K) or ``Q`` and ``K`` as nested lists (rows), a
named random ``ensemble`` drawn with ``seed`` (``meanfield.theory.attention``), or a ``.npz``
``path`` holding ``B`` (or ``Q`` and ``K``) and optionally ``V``. ``V`` defaults to the
identity. Nothing given means Q = K = V = I (the isotropic model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meanfield.theory.attention import attention_matrices
from meanfield.theory.errors import InputError


@dataclass(frozen=True)
class Matrices:
    """B = Q^T K and V of a run (d x d), where they came from, and whether B = V = I."""

    B: np.ndarray
    V: np.ndarray
    source: str
    isotropic: bool


def given(cfg: dict) -> bool:
    """Whether the run sets any [attention] key (else the isotropic model)."""
    a = cfg["attention"]
    return bool(a["B"] or a["Q"] or a["K"] or a["V"] or a["ensemble"] or a["path"])


def zero_temperature(cfg: dict) -> bool:
    return math.isinf(cfg["model"]["beta"])


def matrices(cfg: dict) -> Matrices:
    """Resolve [attention] for dimension model.dim (InputError naming the key at fault)."""
    a, d = cfg["attention"], int(cfg["model"]["dim"])
    sources = [name for name, on in (("attention.B", bool(a["B"])),
                                     ("attention.Q/K", bool(a["Q"] or a["K"])),
                                     ("attention.ensemble", bool(a["ensemble"])),
                                     ("attention.path", bool(a["path"]))) if on]
    if len(sources) > 1:
        raise InputError(sources[1], f"give one source of the matrices (also set: "
                         f"{sources[0]})")
    v = _square(a["V"], "attention.V", d) if a["V"] else None
    if a["ensemble"]:
        if v is not None:
            raise InputError("attention.V", "is drawn by attention.ensemble; remove it")
        m = attention_matrices(a["ensemble"], d, a["scale"], a["seed"])
        b, v, src = m.A, m.V, f"ensemble {a['ensemble']} (scale {a['scale']:g}, seed "\
                                f"{a['seed']})"
    elif a["path"]:
        b, v_file = _from_file(a["path"], d)
        if v is not None and v_file is not None:
            raise InputError("attention.V", "is also in attention.path; give it once")
        v = v if v is not None else v_file
        src = f"file {a['path']}"
    elif a["B"]:
        b, src = _square(a["B"], "attention.B", d), "literal B"
    elif a["Q"] or a["K"]:
        if not (a["Q"] and a["K"]):
            raise InputError("attention.K" if a["Q"] else "attention.Q",
                             "must be given with attention.Q/K (B = Q^T K)")
        q, k = np.array(a["Q"], float), np.array(a["K"], float)
        if q.shape != k.shape or q.shape[1] != d:
            raise InputError("attention.Q", f"Q and K must both be p x {d}",
                             f"shapes {q.shape}, {k.shape}")
        b, src = q.T @ k, "literal Q, K"
    else:
        b, src = np.eye(d), "identity"
    v = np.eye(d) if v is None else v
    iso = bool(np.array_equal(b, np.eye(d)) and np.array_equal(v, np.eye(d)))
    return Matrices(b, v, src, iso)


def _square(value, name: str, d: int) -> np.ndarray:
    m = np.array(value, float)
    if m.shape != (d, d) or not np.all(np.isfinite(m)):
        raise InputError(name, f"must be a finite {d} x {d} matrix (model.dim = {d})",
                         f"shape {m.shape}")
    return m


def _from_file(path: str, d: int) -> tuple[np.ndarray, np.ndarray | None]:
    p = Path(path)
    if not p.is_file() or p.suffix != ".npz":
        raise InputError("attention.path", "must be an existing .npz file with B (or Q and "
                         "K) and optionally V", path)
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            arrays = {k: np.array(z[k], float) for k in keys & {"B", "Q", "K", "V"}}
    except (OSError, ValueError) as exc:
        raise InputError("attention.path", f"is not a readable .npz ({exc})", path) from None
    if "B" in arrays:
        b = _square(arrays["B"], "attention.path: B", d)
    elif {"Q", "K"} <= arrays.keys():
        q, k = arrays["Q"], arrays["K"]
        if q.ndim != 2 or q.shape != k.shape or q.shape[1] != d:
            raise InputError("attention.path", f"Q and K must both be p x {d}",
                             f"shapes {q.shape}, {k.shape}")
        b = q.T @ k
    else:
        raise InputError("attention.path", "must hold B, or Q and K", f"keys {sorted(keys)}")
    v = _square(arrays["V"], "attention.path: V", d) if "V" in arrays else None
    return b, v
