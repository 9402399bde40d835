"""Drifts are plug-ins: the rigid rotation (one module + one registry line) runs through the
whole workflow from a config file, and the flux schemes transport it to their order."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from meanfield import initial
from solvers.circle import FiniteVolume, Rusanov
from solvers.drifts import DRIFTS, RigidRotation

ROOT = Path(__file__).resolve().parent.parent
OMEGA, K, ALPHA = 0.7, 2, 0.05


def _exact(cells: int, t: float) -> np.ndarray:
    """Cell averages of 1/(2 pi) + alpha cos(k (theta - omega t)): the mode's cell average
    factor sinc(k dx/2) times the shifted cosine (initial.mode at phase -k omega t)."""
    return initial.mode(cells, K, ALPHA, phase=-K * OMEGA * t)


def test_rotation_is_one_module_plus_one_registry_line():
    assert DRIFTS["rotation"] is RigidRotation
    mentions = sorted(str(p.relative_to(ROOT)) for pkg in ("meanfield", "solvers")
                      for p in (ROOT / pkg).rglob("*.py") if "RigidRotation" in p.read_text())
    assert mentions == ["solvers/drifts/__init__.py", "solvers/drifts/rotation.py"]
    registry = (ROOT / "solvers/drifts/__init__.py").read_text()
    assert len(re.findall(r'^\s+"rotation": RigidRotation,$', registry, re.M)) == 1


@pytest.mark.parametrize("scheme,order", [("fv2", 1.8), ("rusanov", 0.8)])
def test_flux_schemes_transport_the_rotation_at_their_order(scheme, order):
    """L1 error against p0(theta - omega t) after a quarter turn, M = 128 -> 256 -> 512.

    Smooth data: fv2 (MC limiter, SSP-RK3) converges at ~2 (the limiter clips the extrema
    to ~dx^2 locally), rusanov at ~1; the observed orders must exceed 1.8 and 0.8."""
    t_end = 0.5 * math.pi / OMEGA
    errs = []
    for m in (128, 256, 512):
        s = (FiniteVolume if scheme == "fv2" else Rusanov)(m, drift=RigidRotation(OMEGA))
        r = s.run(_exact(m, 0.0), t_end)
        errs.append(np.sum(np.abs(r.density[-1] - _exact(m, t_end))) * 2 * math.pi / m)
        assert abs(r.diagnostics["mass"][-1] - 1.0) < 1e-14
        assert np.isnan(r.diagnostics["energy"][-1])  # no interaction energy
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(rates > order), (errs, rates)
    assert s.k_max is None and s.gamma_max is None


def test_rotation_through_run_analyze_plot_from_a_config_file(tmp_path, cli):
    cfg = tmp_path / "rotation.toml"
    cfg.write_text(f"""
[model]
drift = "rotation"

[drift]
omega = {OMEGA}

[discretization]
cells = 512

[initial]
kind = "mode"
mode = {K}
amplitude = {ALPHA}

[time]
t_end = {math.pi / OMEGA}
n_outputs = 5
""")
    res = cli("run", str(cfg), "-o", "rot.h5", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "rot.h5", "r") as f:
        assert f.attrs["drift"] == "rotation" and f.attrs["drift.omega"] == OMEGA
        assert f.attrs["linear_theory"] == "none"
        t, p = f["time"][()], f["density"][()]
        assert "docs/conventions.md" in f.attrs["conventions"]
    for i, ti in enumerate(t):  # exact solution p0(theta - omega t) to fv2's accuracy
        err = np.sum(np.abs(p[i] - _exact(512, ti))) * 2 * math.pi / 512
        assert err < 2e-4, (ti, err)
    res = cli("analyze", "rot.h5", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["k_max_predicted"] is None and out["growth_rate_fit"] is None
    assert out["mass_drift"] < 1e-14 and out["final_clusters"] == 0
    assert out["energy_monotone"] is None  # there is no energy to be monotone
    res = cli("plot", "rot.h5", "-o", "figs", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in (tmp_path / "figs").glob("*.png"))
    assert names == ["rot_clusters.png", "rot_energy.png", "rot_snapshots.png",
                     "rot_spacetime.png", "rot_spectrum.png"]
    assert all((tmp_path / "figs" / n).stat().st_size > 10_000 for n in names)


def test_drift_parameters_are_validated_in_one_line(tmp_path, cli):
    res = cli("run", "--set", "model.drift=rotation", "--set", "drift.omega=nan", "-o",
              "x.h5", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "drift.omega" in res.stderr and not (tmp_path / "x.h5").exists()
    res = cli("run", "--set", "model.drift=spin", "-o", "x.h5", cwd=tmp_path)
    assert res.returncode == 2 and "model.drift" in res.stderr
    res = cli("run", "--set", "model.domain=sphere", "--set", "model.drift=rotation",
              "-o", "x.h5", cwd=tmp_path)
    assert res.returncode == 2 and "model.drift" in res.stderr
