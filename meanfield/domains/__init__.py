"""Domains: where the measure lives. ``DOMAINS`` is the only place that lists them.

A new domain is one module here (a :class:`meanfield.domains.base.Domain` instance named
``DOMAIN``: config keys, defaults, checks, run adapter, file layout, diagnostics, cluster
counter, figures) plus one line below.
"""

from __future__ import annotations

from meanfield.domains import causal, circle, particles, sphere, staircase, zonal
from meanfield.domains.base import Domain
from meanfield.theory.errors import InputError

#: The registry of domains (``model.domain`` -> its module's DOMAIN).
DOMAINS: dict[str, Domain] = {
    "circle": circle.DOMAIN,
    "sphere": sphere.DOMAIN,
    "zonal": zonal.DOMAIN,
    "particles": particles.DOMAIN,
    "causal": causal.DOMAIN,
    "staircase": staircase.DOMAIN,
}


def get(name: str) -> Domain:
    """The domain registered as ``name`` (InputError naming model.domain otherwise)."""
    if name not in DOMAINS:
        raise InputError("model.domain", f"must be one of {', '.join(DOMAINS)}", name)
    return DOMAINS[name]


__all__ = ["DOMAINS", "Domain", "get"]
