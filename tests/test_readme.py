"""The README's Python examples run as written (the circle solver with a drift, the theory
one-liners), and their comments state what they return."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _block(header: str) -> str:
    """The first ```python block after the line ``header``."""
    start = README.index(header)
    m = re.compile(r"```python\n(.*?)```", re.S).search(README, start)
    return m.group(1)


def test_theory_one_liners_return_what_the_comments_say():
    ns: dict = {}
    code = _block("## k_max for your beta in one line")
    exec(code, ns)
    mf = ns["mf"]
    assert mf.most_unstable_mode(5.0) == 3
    assert mf.growth_rate(3, 5.0) == pytest.approx(18.59607, abs=1e-5)
    assert mf.growth_rate(3, 5.0, dim=3) == pytest.approx(9.97809, abs=1e-5)
    sel = ns["sel"]
    assert (sel.k_max, sel.k_runner_up) == (4, 3) and sel.gamma_ratio == pytest.approx(0.9394,
                                                                                   abs=1e-4)


def test_circle_example_with_the_default_and_a_plugged_in_drift():
    ns: dict = {}
    exec(_block("## Solving the PDE on the circle"), ns)
    res = ns["res"]
    assert res.density.shape == (61, 4096)
    from meanfield.analysis import analyze

    out = analyze(res, beta=5.0)  # the in-memory result, as the README's analysis section says
    assert out["dominant_mode_at_exit"] == 3 and out["final_clusters"] == 3
    assert abs(res.diagnostics["mass"][-1] - 1.0) < 1e-13  # white noise is normalised
    rot = ns["rot"]
    out = rot.run(ns["initial"].mode(512, 2, 0.05), t_end=1.0)
    exact = ns["initial"].mode(512, 2, 0.05, phase=-2 * 0.7)
    assert np.sum(np.abs(out.density[-1] - exact)) * 2 * np.pi / 512 < 2e-4
