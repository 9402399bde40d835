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


def ge(x: float) -> Callable[[Any], bool]:
    return lambda v: v >= x


def gt(x: float) -> Callable[[Any], bool]:
    return lambda v: v > x


def finite_ge(x: float) -> Callable[[Any], bool]:
    return lambda v: math.isfinite(v) and v >= x
