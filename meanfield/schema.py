"""The building blocks of the run configuration: a documented, typed, checked key.

``meanfield.config`` assembles the schema from the core sections below it and from the keys
each domain module declares (``meanfield.domains``), so a domain's configuration lives in its
own module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

NUM = (int, float)


@dataclass(frozen=True)
class Key:
    """One configuration key: default, type(s), one-line doc, allowed values or a check."""

    default: Any
    kind: type | tuple[type, ...]
    doc: str
    choices: tuple | None = None
    check: Callable[[Any], bool] | None = None
    allowed: str = ""
    nested: bool = False        # a list of lists of numbers (a matrix, rows first)
    convert: Callable[[Any], Any] | None = None   # applied after the type check


def number_or_inf(v: Any) -> Any:
    """"inf" (or TOML inf) -> float inf; numbers -> float; anything else unchanged (the
    check then refuses it)."""
    if isinstance(v, str):
        return math.inf if v.strip().lower() in ("inf", "+inf", "infinity") else v
    return float(v)


def ge_or_inf(x: float) -> Callable[[Any], bool]:
    """>= x (inf allowed, NaN and strings refused)."""
    return lambda v: isinstance(v, float) and not math.isnan(v) and v >= x


def is_matrix(v: Any) -> bool:
    """[] or a rectangular list of rows of numbers."""
    if v == []:
        return True
    return (isinstance(v, list) and all(isinstance(r, list) for r in v)
            and len({len(r) for r in v}) == 1
            and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                    and math.isfinite(x) for r in v for x in r))


def ge(x: float) -> Callable[[Any], bool]:
    return lambda v: v >= x


def gt(x: float) -> Callable[[Any], bool]:
    return lambda v: v > x


def finite_ge(x: float) -> Callable[[Any], bool]:
    return lambda v: math.isfinite(v) and v >= x
