"""Ensembles (solvers.ensemble, meanfield.ensemble): many circle runs (fv2, rusanov, lf)
advanced by one batched stepper give each run's own result (bitwise without atoms at
M >= 256, to round-off with atoms), through the sweep (files, resume after SIGKILL, failing
members) as well as through the solver API."""

import os
import signal
import subprocess
import sys
import time
import warnings

import h5py
import numpy as np
import pytest
from conftest import ATOM_RUN_CLOSE, ATOM_RUN_EXACT, assert_same_run_files

from meanfield import initial
from solvers.circle import FiniteVolume, make_scheme
from solvers.ensemble import CircleEnsemble, Member
from solvers.stepping import CFLWarning, SolverError, StepStats


def test_mixed_ensemble_equals_single_runs_bitwise():
    """Six members (beta 3..8, SA and USA raw/scaled, own seeds and end times): the same
    number of steps and bitwise the same densities as each scheme advanced alone (the
    batched FFT plan and the fused flux kernel do the single run's arithmetic)."""
    specs = [(3.0, "sa", "raw", 6.0), (5.0, "usa", "raw", 0.4), (7.0, "sa", "raw", 9.0),
             (4.0, "usa", "scaled", 30.0), (8.0, "sa", "raw", 3.0), (6.0, "usa", "scaled",
                                                                     20.0)]
    members, singles, ends = [], [], []
    for k, (b, model, unit, t_end) in enumerate(specs):
        p0 = initial.white_noise(256, 0.01, seed=k)
        one = FiniteVolume(256, b, model, time_unit=unit)
        st = StepStats()
        q, _ = one.advance(one.split(one.check_density(p0)), 0.0, t_end, st)
        singles.append((q, st))
        s = FiniteVolume(256, b, model, time_unit=unit)
        members.append(Member(s, s.split(s.check_density(p0)), 0.0, StepStats()))
        ends.append(t_end)
    errors = CircleEnsemble([m.scheme for m in members]).advance(members, np.array(ends))
    assert errors == [None] * 6
    for (q, st), m in zip(singles, members, strict=True):
        assert m.stats.steps == st.steps
        assert np.array_equal(m.q, q)
        assert m.stats.last_dt == st.last_dt and m.stats.max_courant == st.max_courant


@pytest.mark.parametrize("scheme, kw", [
    ("rusanov", {}), ("rusanov", {"integrator": "euler"}), ("lf", {}),
    ("lf", {"dt_per_dx": 0.02}), ("fv2", {"integrator": "euler"}), ("fv2", {"dt": 2e-3})])
def test_every_circle_scheme_batches_bitwise(scheme, kw):
    """Rusanov and Lax-Friedrichs members (centre velocities: one inverse transform for USA,
    two for SA), Euler steps and fixed steps: bitwise each scheme advanced alone, through
    intermediate targets (M = 256: FFTW's batched plans use the single-row codelets; below
    M = 256 they vectorise across rows and agree to round-off only)."""
    specs = [(2.0, "usa", "raw"), (5.0, "sa", "raw"), (6.0, "usa", "scaled"), (0.0, "sa", "raw")]
    members, singles = [], []
    for k, (b, model, unit) in enumerate(specs):
        p0 = initial.white_noise(256, 0.01, seed=k)
        one = make_scheme(scheme, 256, b, model, time_unit=unit, **kw)
        singles.append([one, one.split(one.check_density(p0)), 0.0, StepStats()])
        s = make_scheme(scheme, 256, b, model, time_unit=unit, **kw)
        members.append(Member(s, s.split(s.check_density(p0)), 0.0, StepStats()))
    ens = CircleEnsemble([m.scheme for m in members])
    for target in (0.3, 1.0, 2.5):
        assert ens.advance(members, np.full(4, target)) == [None] * 4
        for one, m in zip(singles, members, strict=True):
            one[1], one[2] = one[0].advance(one[1], one[2], target, one[3])
            assert m.stats.steps == one[3].steps and m.t == one[2]
            assert np.array_equal(m.q, one[1])
            assert m.stats.max_courant == one[3].max_courant
            assert (m.stats.compensation is None) == (one[3].compensation is None)


@pytest.mark.parametrize("scheme", ["fv2", "rusanov", "lf"])
def test_members_with_any_drift_batch_bitwise(scheme):
    """Drifts without batched transforms (general attention B, V for SA and USA; a rigid
    rotation) give their velocities row by row, the ensemble batches the fluxes and the
    steps: bitwise each scheme advanced alone."""
    from solvers.drifts import GeneralAttention, RigidRotation

    def drift(k):
        return [GeneralAttention(3.0, "sa", B=[[2.0, 0.3], [0.0, 1.0]],
                                 V=[[1.0, 0.5], [0.0, 1.0]]),
                GeneralAttention(2.0, "usa", B=[[1.0, 0.0], [0.2, 1.5]]),
                RigidRotation(1.3)][k]

    members, singles = [], []
    for k in range(3):
        p0 = initial.white_noise(128, 0.01, seed=k)
        one = make_scheme(scheme, 128, drift=drift(k))
        singles.append([one, one.split(one.check_density(p0)), 0.0, StepStats()])
        s = make_scheme(scheme, 128, drift=drift(k))
        members.append(Member(s, s.split(s.check_density(p0)), 0.0, StepStats()))
    ens = CircleEnsemble([m.scheme for m in members])
    for target in (0.5, 1.5):
        assert ens.advance(members, np.full(3, target)) == [None] * 3
        for one, m in zip(singles, members, strict=True):
            one[1], one[2] = one[0].advance(one[1], one[2], target, one[3])
            assert m.stats.steps == one[3].steps and np.array_equal(m.q, one[1])


def test_a_fixed_step_beyond_the_bound_warns_and_fails_alone():
    """Lax-Friedrichs with a fixed dt ~6x the positivity bound: the single run's CFLWarning
    once, then its negative-density failure with its message; the other member is its
    single run."""
    p0 = initial.white_noise(256, 0.01, seed=3)

    def pair():
        return make_scheme("lf", 256, 3.0, "sa", dt_per_dx=0.02), \
            make_scheme("lf", 256, 3.0, "usa", dt=0.2)

    alone = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for one in pair():
            try:
                alone.append(one.advance(one.split(one.check_density(p0)), 0.0, 3.0,
                                         StepStats())[0])
            except SolverError as e:
                alone.append(str(e))
    members = [Member(s, s.split(s.check_density(p0)), 0.0, StepStats()) for s in pair()]
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        errors = CircleEnsemble([m.scheme for m in members]).advance(members,
                                                                     np.array([3.0, 3.0]))
    assert [w.category for w in got] == [CFLWarning]
    assert "fixed dt = 2.000e-01 exceeds the positivity/CFL bound" in str(got[0].message)
    assert errors == [None, alone[1]] and "negative values" in alone[1]
    assert np.array_equal(members[0].q, alone[0])


def test_a_failing_member_fails_alone():
    """A member whose density turns negative (an explicit CFL far too large) reports the
    solver's message; the others reach their targets unchanged."""
    good = FiniteVolume(128, 5.0, "sa")
    bad = FiniteVolume(128, 5.0, "usa", cfl=1.0, accuracy=1e6)   # no accuracy cap
    bad.positivity_factor = 50.0          # steps 100x beyond the positivity bound
    p = [initial.white_noise(128, 0.05, seed=s) for s in (1, 2)]
    members = [Member(good, good.split(good.check_density(p[0])), 0.0, StepStats()),
               Member(bad, bad.split(bad.check_density(p[1])), 0.0, StepStats())]
    errors = CircleEnsemble([good, bad]).advance(members, np.array([3.0, 3.0]))
    assert errors[0] is None and members[0].t == 3.0
    assert errors[1] is not None and ("negative" in errors[1] or "non-finite" in errors[1])


def test_cli_default_batch_is_the_documented_one():
    """Sweeps use ensembles unless told otherwise: no flag or a bare --ensemble gives
    DEFAULT_BATCH, --ensemble 0 one run per task."""
    from meanfield.cli import build_parser
    from meanfield.ensemble import DEFAULT_BATCH

    base = ["sweep", "--param", "model.beta=1", "-o", "x"]
    assert build_parser().parse_args(base).ensemble == DEFAULT_BATCH
    assert build_parser().parse_args([*base, "--ensemble"]).ensemble == DEFAULT_BATCH
    assert build_parser().parse_args([*base, "--ensemble", "0"]).ensemble == 0


ATOMS_BASE = """
[discretization]
cells = 128
[time]
t_end_units = "e_folds"
t_end = 30.0
n_outputs = 16
[output]
checkpoint_seconds = 0.2
"""
def test_sweep_ensembles_write_the_single_runs_files_and_resume(cli, tmp_path):
    """A sweep with atoms (M = 128, beta 4, 7, 30 e-folds: captures, merges and the
    residual) run in one ensemble writes the files of one run per task
    (``--ensemble 0``): the same steps, atom counts and events, and densities, atoms, times
    and energies equal to 1e-12 of each series' largest value (measured <= 4e-14). Killed
    (SIGKILL) in the middle and run again, it resumes each member from its checkpoint or
    its finished file, with the same result; an invalid combination (beta = -1) fails
    alone."""
    (tmp_path / "base.toml").write_text(ATOMS_BASE)
    params = ["--param", "model.beta=4,7"]
    res = cli("sweep", "base.toml", *params, "-o", "single", "--jobs", "1", "--ensemble",
              "0", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    proc = subprocess.Popen([sys.executable, "-m", "meanfield.cli", "sweep", "base.toml",
                             *params, "-o", "ens", "--jobs", "1"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, MEANFIELD_NO_PROGRESS="1"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "ens").glob("*.checkpoint")):
        time.sleep(0.02)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    res = cli("sweep", "base.toml", *params, "-o", "ens", "--jobs", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    names = assert_same_run_files(tmp_path / "single", tmp_path / "ens", ATOM_RUN_EXACT,
                                  ATOM_RUN_CLOSE, 1e-12)
    assert len(names) == 2
    kinds = set()
    for name in names:
        with h5py.File(tmp_path / "single" / name) as f:
            kinds |= set(f["event_kind"][()].tolist())
    assert kinds == {0, 1, 2}                 # captures, merges and the residual
    bad = cli("sweep", "base.toml", "--param", "model.beta=-1,4", "-o", "mixed",
              "--jobs", "1", cwd=tmp_path)
    assert bad.returncode == 1 and "failed: beta=-1" in bad.stdout
    assert (tmp_path / "mixed" / "beta=4.h5").exists()


def test_a_sweep_of_another_scheme_and_drift_batches_bitwise(cli, tmp_path):
    """A rusanov sweep with the general-attention drift (B != I, SA at beta 1 and 3) run as
    one ensemble writes bitwise the files of one run per task (the drift's velocities row by
    row, the rest of the step batched)."""
    (tmp_path / "base.toml").write_text(
        '[model]\ndrift = "attention"\nmodel = "sa"\n[attention]\n'
        'B = [[2.0, 0.3], [0.0, 1.0]]\n[discretization]\ncells = 128\nscheme = "rusanov"\n'
        '[time]\nt_end = 3.0\nn_outputs = 6\n')
    params = ["--param", "model.beta=1,3"]
    for out, extra in (("single", ["--ensemble", "0"]), ("ens", [])):
        res = cli("sweep", "base.toml", *params, "-o", out, "--jobs", "1", *extra,
                  cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    names = assert_same_run_files(tmp_path / "single", tmp_path / "ens",
                                  ("steps", "density", "time", "dt", "max_speed"), (), 0.0)
    assert len(names) == 2


def test_atomic_members_equal_single_runs_through_captures_and_merges():
    """Four AtomicCircle members (M = 128, beta 4..8, SA and USA raw/scaled, 40 e-folds:
    each captures its clusters and merges atoms) against the same runs alone: the same
    steps and events; states, masses and event times equal to 1e-12 (the ensemble sums the
    density's and the atoms' potentials before one inverse FFT and the atoms' sums in
    another order, so equality is to round-off, not bitwise; measured <= 2e-15 in the
    states)."""
    from solvers.atoms import AtomicCircle

    specs = [(4.0, "usa", "scaled"), (6.0, "sa", "raw"), (8.0, "usa", "raw"),
             (5.0, "usa", "scaled")]
    singles, members, ends = [], [], []
    for seed, (b, model, unit) in enumerate(specs):
        p0 = initial.white_noise(128, 0.01, seed)
        one = AtomicCircle(FiniteVolume(128, b, model, time_unit=unit))
        st = StepStats()
        t_end = 40.0 / one.gamma_max
        q, _ = one.advance(one.split(one.check_density(p0)), 0.0, t_end, st)
        singles.append((q, st, one))
        s = AtomicCircle(FiniteVolume(128, b, model, time_unit=unit))
        members.append(Member(s, s.split(s.check_density(p0)), 0.0, StepStats()))
        ends.append(t_end)
    errors = CircleEnsemble([m.scheme for m in members]).advance(members, np.array(ends))
    assert errors == [None] * 4
    for (q, st, one), m in zip(singles, members, strict=True):
        assert m.stats.steps == st.steps and m.q.shape == q.shape
        assert np.max(np.abs(m.q - q)) < 1e-12
        assert np.allclose(m.scheme.atoms.masses, one.atoms.masses, rtol=0, atol=1e-12)
        a, b = one.atoms.events, m.scheme.atoms.events
        assert [e.kind for e in a] == [e.kind for e in b]
        assert "merge" in [e.kind for e in a]
        assert all(abs(x.t - y.t) <= 1e-12 * abs(x.t) for x, y in zip(a, b, strict=True))


def _capture_reference(p, level, min_mass, width):
    """The capture rule written out with numpy (solvers.atoms' module docstring): cores of
    density_clusters in centre order, each core's bump from its peak down to 1e-3 of it,
    captured if its mass >= min_mass and its standard deviation <= width."""
    from solvers.clusters import density_clusters

    p = p.copy()
    m = p.size
    dx = 2 * np.pi / m
    theta = (np.arange(m) + 0.5) * dx
    out = []
    for cl in density_clusters(p, level=level, min_mass=min_mass):
        i0 = min(int(cl.centre / dx), m - 1)
        near = (i0 + np.arange(-3, 4)) % m
        i0 = int(near[np.argmax(p[near])])
        lo = hi = i0
        while (i0 - lo) < m // 2 and 1e-3 * p[i0] < p[(lo - 1) % m] <= p[lo % m]:
            lo -= 1
        while (hi - i0) < m // 2 and 1e-3 * p[i0] < p[(hi + 1) % m] <= p[hi % m]:
            hi += 1
        idx = np.arange(lo, hi + 1) % m
        w = p[idx] * dx
        mass = w.sum()
        if mass < min_mass:
            continue
        d = np.mod(theta[idx] - cl.centre + np.pi, 2 * np.pi) - np.pi
        c = cl.centre + np.dot(w, d) / mass
        d = np.mod(theta[idx] - c + np.pi, 2 * np.pi) - np.pi
        if np.sqrt(np.dot(w, d * d) / mass) > width:
            continue
        out.append((np.mod(c, 2 * np.pi), mass))
        p[idx] = 0.0
    return out, p


def test_compiled_capture_follows_the_written_rule():
    """solvers.atom_kernels.capture_scan against the rule in numpy, on densities with narrow
    (captured) and wide (kept) von Mises bumps, one across the 0/2 pi seam: the same atoms
    to 1e-14 and the same cells emptied."""
    from solvers.atom_kernels import capture_scan

    rng = np.random.default_rng(3)
    m = 256
    dx = 2 * np.pi / m
    for trial in range(20):
        k = rng.integers(1, 5)
        centres = rng.uniform(0, 2 * np.pi, k)
        centres[0] = 0.01 if trial % 4 == 0 else centres[0]
        kappas = rng.choice([20.0, 400.0, 2e4, 2e5], k)
        p = initial.von_mises_bumps(m, list(centres), kappa=float(kappas[0]))
        for c, kap in zip(centres[1:], kappas[1:], strict=True):
            p = p + initial.von_mises_bumps(m, [float(c)], kappa=float(kap))
        p = p / (p.sum() * dx) + 1e-3 * rng.random(m)
        ref, p_ref = _capture_reference(p, 2.0, 1e-3, 1.5 * dx)
        q = p.copy()
        pos, mass = np.empty(m), np.empty(m)
        n = capture_scan(q, 2.0, 1e-3, 1.5 * dx, dx, pos, mass)
        assert n == len(ref)
        for (c, w), c2, w2 in zip(ref, pos[:n], mass[:n], strict=True):
            assert abs(np.mod(c - c2 + np.pi, 2 * np.pi) - np.pi) < 1e-14
            assert abs(w - w2) < 1e-14
        assert np.array_equal(q == 0, p_ref == 0)
