"""Parsing of value lists and START:STOP:STEP ranges (CLI and sweeps share one rule)."""

from __future__ import annotations

import math

from meanfield.theory.errors import InputError


def parse_range(text: str, name: str) -> list[float]:
    """START:STOP[:STEP] -> [START, START+STEP, ...], STOP excluded (like ``range``; STEP 1).

    Values are START + i*STEP (no accumulated rounding); a value within 1e-9 STEP of STOP
    counts as STOP and is excluded, so 0:1:0.1 gives ten values on every platform.
    """
    parts = text.split(":")
    allowed = "must be START:STOP:STEP with finite numbers, STEP > 0 and STOP > START"
    if len(parts) == 2:
        parts.append("1")
    if len(parts) != 3:
        raise InputError(name, allowed, text)
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise InputError(name, allowed, text) from None
    if not all(math.isfinite(v) for v in (start, stop, step)) or step <= 0 or stop <= start:
        raise InputError(name, allowed, text)
    n = math.ceil((stop - start) / step - 1e-9)
    if n > 1_000_000:
        raise InputError(name, "must give at most 1,000,000 values", text)
    return [round(start + i * step, 12) for i in range(n)]
