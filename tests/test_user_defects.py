"""Defects found when the package was tried as a new user would (issue 10), each run the way
the user ran it: through the CLI."""

from __future__ import annotations

import inspect
import json
import math
import re

import h5py
import numpy as np
import pytest

from meanfield import kmax_transitions

PARTICLES = ["--set", "model.domain=particles", "--set", "particles.count=40", "--set",
             "time.n_outputs=3", "--quiet"]


def _particle_run(cli, tmp_path, *sets, name="p.h5", t_end="0.2"):
    args = [a for s in sets for a in ("--set", s)]
    return cli("run", *PARTICLES, "--set", f"time.t_end={t_end}", *args, "-o", name,
               cwd=tmp_path)


# ----------------------------------------------------------------------- defect 1
@pytest.mark.parametrize("sets,check", [
    (["particles.mask=causal"], lambda f: f.attrs["particles.mask"] == "causal"),
    (["particles.qkv=gaussian", "particles.qkv_scale=0.5", "particles.integrator=adaptive"],
     lambda f: not np.allclose(f["Q"][()], np.eye(2)) and f.attrs["qkv"] == "gaussian"),
    (["particles.qkv=orthogonal", "model.dim=3", "particles.integrator=adaptive"],
     lambda f: np.allclose(f["V"][()] @ f["V"][()].T, np.eye(3))),
    (["particles.qkv=symmetric-psd", "model.model=sa"],
     lambda f: np.allclose(f["K"][()], f["V"][()]) and bool(f.attrs["energy_is_lyapunov"])),
    (["particles.normalization=1"], lambda f: f.attrs["particles.normalization"] == "1"),
    (["particles.normalization=1/N^2"], lambda f: f["angles"].shape == (3, 1, 40)),
    (["particles.batch=3"], lambda f: f["angles"].shape == (3, 3, 40)),
    (["particles.integrator=euler", "particles.dt=0.01"],
     lambda f: np.allclose(f["dt"][-1], 0.01)),
    (["particles.integrator=euler-unprojected", "particles.dt=0.01"],
     lambda f: f.attrs["particles.integrator"] == "euler-unprojected"),
    (["particles.integrator=rk4"], lambda f: f["steps"][-1] > 0),
    (["particles.integrator=adaptive", "particles.rtol=1e-6", "particles.atol=1e-8"],
     lambda f: f["steps"][-1] > 0),
    (["particles.count=7"], lambda f: f["angles"].shape[-1] == 7),
    (["particles.mask=causal", "particles.qkv=gaussian", "model.dim=3",
      "particles.integrator=adaptive"],
     lambda f: f["positions"].shape == (3, 1, 40, 3)),
])
def test_every_particle_option_runs_from_the_cli(cli, tmp_path, sets, check):
    """``meanfield run --set model.domain=particles --set particles.mask=causal ...`` used to
    exit 2 with a message about 'e_folds' although t_end_units was 'time'."""
    res = _particle_run(cli, tmp_path, *sets)
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert f.attrs["status"] == "complete"
        assert check(f)


def test_particle_qkv_from_an_npz_file_and_e_folds_refused_without_theory(cli, tmp_path):
    rng = np.random.default_rng(0)
    q, k, v = (np.eye(3) + 0.3 * rng.standard_normal((3, 3)) for _ in range(3))
    np.savez(tmp_path / "m.npz", Q=q, K=k, V=v)
    res = _particle_run(cli, tmp_path, "model.dim=3", "particles.qkv=m.npz")
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "p.h5", "r") as f:
        np.testing.assert_array_equal(f["V"][()], v)
        assert f.attrs["linear_theory"] == "none"
    res = _particle_run(cli, tmp_path, "particles.mask=causal", "time.t_end_units=e_folds",
                        name="e.h5")
    assert res.returncode == 2 and "time.t_end_units" in res.stderr
    assert res.stderr.count("\n") == 1 and not (tmp_path / "e.h5").exists()


# ----------------------------------------------------------------------- defect 2
def test_default_initial_condition_is_a_probability_density(cli, tmp_path):
    """The default run (M = 1024, noise 0.01) had mass 0.99691; now 1 to 1e-14. The
    unnormalised paper variant (seed 003) stays available as initial.renormalize = false."""
    res = cli("run", "--set", "time.t_end=0.01", "--set", "time.n_outputs=2", "-o", "d.h5",
              "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "d.h5", "r") as f:
        mass = f["mass"][()]
        p0 = f["density"][0]
    assert np.max(np.abs(mass - 1.0)) < 1e-14
    assert abs(p0.sum() * 2 * math.pi / p0.size - 1.0) < 1e-14
    res = cli("run", "--set", "time.t_end=0.01", "--set", "time.n_outputs=2", "--set",
              "initial.renormalize=false", "-o", "u.h5", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "u.h5", "r") as f:
        assert abs(f["mass"][0] - 0.99691) < 1e-5  # the paper's u_j = 1/(2 pi) + sigma xi_j


# ----------------------------------------------------------------------- defect 3
def test_unstable_fixed_particle_step_warns(cli, tmp_path):
    """USA, beta = 4, Euler, dt = 0.1 (dt e^beta ~ 5.5): the energy decreases; the run must
    say so. The seed 000 setting (SA, beta = 4, Euler, dt = 0.1) is stable and silent."""
    res = _particle_run(cli, tmp_path, "model.beta=4", "particles.integrator=euler",
                        "particles.dt=0.1", t_end="1.0")
    assert res.returncode == 0
    assert "dt = 1.000e-01" in res.stderr and "stability" in res.stderr, res.stderr
    res = _particle_run(cli, tmp_path, "model.beta=4", "model.model=sa",
                        "particles.integrator=euler", "particles.dt=0.1", t_end="1.0",
                        name="sa.h5")
    assert res.returncode == 0 and "Warning" not in res.stderr, res.stderr


# ----------------------------------------------------------------------- defect 4
def test_particle_exit_uses_the_histogram_tv_and_says_so(cli, tmp_path):
    res = _particle_run(cli, tmp_path, "particles.count=2000", "time.n_outputs=21",
                        t_end="1.0")
    assert res.returncode == 0, res.stderr
    out = json.loads(cli("analyze", "p.h5", "--json", cwd=tmp_path).stdout)
    assert "100-bin" in out["exit_criterion"] and "noise floor" in out["exit_criterion"]
    with h5py.File(tmp_path / "p.h5", "r") as f:
        x = f["angles"][0, 0]
        tv0 = f["tv_distance"][0, 0]
        proxy0 = f["tv_fourier_proxy"][0, 0]
    counts = np.histogram(np.mod(x, 2 * math.pi), bins=100, range=(0, 2 * math.pi))[0]
    assert tv0 == pytest.approx(0.5 * np.sum(np.abs(counts / x.size - 0.01)), rel=1e-12)
    assert 0.5 * 0.399 * math.sqrt(100 / 2000) < tv0 < 2 * 0.399 * math.sqrt(100 / 2000)
    assert proxy0 < tv0  # the proxy has no histogram noise
    text = cli("analyze", "p.h5", cwd=tmp_path).stdout
    assert "100-bin" in text


# ----------------------------------------------------------------------- defect 5
def test_kmax_transitions_docstring_quotes_what_the_function_returns():
    quoted = [float(x) for x in re.findall(r"(\d+\.\d{4}) \(\d -> \d\)",
                                           inspect.getdoc(kmax_transitions))]
    assert len(quoted) == 4
    np.testing.assert_allclose(quoted, kmax_transitions(2, 4), atol=5e-5)


# ----------------------------------------------------------------------- defect 6
def test_papers_integrator_is_selectable_and_matches_a_direct_port(cli, tmp_path):
    """particles.integrator = euler-unprojected: x <- (x + dt sum_j A_ij V x_j)/|...|, the
    step of the papers' code (seeds 000, 001, 004), on S^2 against a 6-line numpy port."""
    res = _particle_run(cli, tmp_path, "model.dim=3", "model.model=sa", "model.beta=4",
                        "particles.integrator=euler-unprojected", "particles.dt=0.05",
                        "time.n_outputs=2", t_end="1.0")
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "p.h5", "r") as f:
        x0, x1 = f["positions"][0, 0], f["positions"][-1, 0]
    x = x0.copy()
    for _ in range(20):
        a = np.exp(4.0 * (x @ x.T))
        a /= a.sum(axis=1, keepdims=True)
        x = x + 0.05 * (a @ x)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(x1, x, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------- defect 7
def test_space_time_figure_uses_log_time_when_the_dynamics_span_decades(cli, tmp_path):
    """beta = 7 with t_end = 1: the dynamics sit in the first tenth of the run, so the
    default (auto) time axis is logarithmic; --time-axis linear forces the old picture."""
    from meanfield import open as open_run
    from meanfield.figures import use_log_time

    res = cli("run", "--set", "model.beta=7", "--set", "discretization.cells=256", "--set",
              "time.t_end=1.0", "--set", "time.n_outputs=41", "--set", "atoms.enabled=false",
              "-o", "b7.h5", "--quiet", cwd=tmp_path)   # the grid alone: the axis is the point
    assert res.returncode == 0, res.stderr
    with open_run(tmp_path / "b7.h5") as run:
        assert use_log_time(run)
        run.time_axis = "linear"
        assert not use_log_time(run)
    res = cli("run", "--set", "discretization.cells=256", "--set", "time.t_end=0.5",
              "--set", "time.n_outputs=11", "-o", "b5.h5", "--quiet", cwd=tmp_path)
    with open_run(tmp_path / "b5.h5") as run:
        assert not use_log_time(run)  # beta = 5 to t = 0.5: the dynamics fill the run
    for axis in ("auto", "linear"):       # auto is log here (asserted above)
        res = cli("plot", "b7.h5", "-o", f"f_{axis}", "--time-axis", axis, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert (tmp_path / f"f_{axis}" / "b7_spacetime.png").stat().st_size > 20_000
