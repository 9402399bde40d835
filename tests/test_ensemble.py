"""Ensembles (solvers.ensemble, meanfield.ensemble): many fv2 runs advanced by one batched
stepper give each run's own result bitwise, through the sweep (files, resume after SIGKILL,
failing members) as well as through the solver API."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

from meanfield import initial
from solvers.circle import FiniteVolume
from solvers.ensemble import CircleEnsemble, Member
from solvers.stepping import StepStats

BASE = """
[discretization]
cells = 256
[atoms]
enabled = false
[time]
t_end_units = "e_folds"
t_end = 5.0
n_outputs = 11
"""


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
    from meanfield.cli import build_parser
    from meanfield.ensemble import DEFAULT_BATCH

    args = build_parser().parse_args(["sweep", "--param", "model.beta=1", "-o", "x",
                                      "--ensemble"])
    assert args.ensemble == DEFAULT_BATCH



def _data(path):
    with h5py.File(path) as f:
        return {k: f[k][()] for k in ("density", "time", "diag_time", "ebar", "steps",
                                      "spectrum")}


def test_sweep_ensembles_write_the_single_runs_files_and_resume(cli, tmp_path):
    """A mixed sweep (beta 3, 6; SA and USA; 2 seeds) with --ensemble 8 writes the same files
    as one run per task, bitwise; killed (SIGKILL) in the middle and run again it resumes
    each member from its checkpoint or its finished file, and the result is again bitwise
    the same; an invalid combination (beta = -1) fails alone."""
    (tmp_path / "base.toml").write_text(BASE + "[output]\ncheckpoint_seconds = 0.2\n")
    params = ["--param", "model.beta=3,6", "--param", "model.model=usa,sa", "--param",
              "initial.seed=0:2"]
    res = cli("sweep", "base.toml", *params, "-o", "single", "--jobs", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    proc = subprocess.Popen([sys.executable, "-m", "meanfield.cli", "sweep", "base.toml",
                             *params, "-o", "ens", "--jobs", "1", "--ensemble", "8"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, MEANFIELD_NO_PROGRESS="1"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "ens").glob("*.checkpoint")):
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    res = cli("sweep", "base.toml", *params, "-o", "ens", "--jobs", "1", "--ensemble", "8",
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in (tmp_path / "single").glob("beta=*.h5"))
    assert len(names) == 8
    for name in names:
        a, b = _data(tmp_path / "single" / name), _data(tmp_path / "ens" / name)
        assert all(np.array_equal(a[k], b[k]) for k in a), name
    bad = cli("sweep", "base.toml", "--param", "model.beta=-1,4", "-o", "mixed",
               "--jobs", "1", "--ensemble", "8", cwd=tmp_path)
    assert bad.returncode == 1 and "failed: beta=-1" in bad.stdout
    assert (tmp_path / "mixed" / "beta=4.h5").exists()
