"""ZonalEnsemble (solvers.zonal_ensemble): many zonal runs advanced by one batched stepper give
each run's own result (the same steps; states and times to round-off), through intermediate
targets, step-limited chunks, mixed integrators, fixed steps and a failing member."""

import numpy as np
import pytest
from conftest import ATOM_RUN_CLOSE, ATOM_RUN_EXACT, assert_same_run_files
from numpy.testing import assert_allclose, assert_array_equal

from solvers.circle import FiniteVolume
from solvers.stepping import CFLWarning, SolverError, StepStats
from solvers.zonal import Zonal
from solvers.zonal_ensemble import ZonalEnsemble

M, DIM = 128, 3
#: e-folds of each member's fastest mode: noise of relative size ~1e-2 grows past the linear
#: phase into clusters at the poles (max p / pbar ~ 10 .. 10^3 at the end); members with a
#: fixed step (0.4 accuracy_dt) stop at 6 e-folds, before the clusters' positivity bound falls
#: below their step (Courant numbers <= 0.65)
E_FOLDS = 8.0

# (beta, model, keywords): every beta x model, a scaled time unit, Euler (adaptive and fixed
# dt), an explicit degree, a fixed SSP-RK3 step
SPECS = [(b, model, {}) for b in (1.0, 4.0, 9.0) for model in ("usa", "sa")] + [
    (2.0, "usa", {"time_unit": "scaled"}),
    (4.0, "sa", {"integrator": "euler"}),
    (5.0, "usa", {"degree": 12}),
    (2.0, "sa", {"dt": "fixed"}),
    (2.0, "usa", {"integrator": "euler", "dt": "fixed"}),
]


def _scheme(beta, model, kw):
    kw = dict(kw)
    if kw.get("dt") == "fixed":
        kw["dt"] = 0.4 * Zonal(M, DIM, beta, model).accuracy_dt
    return Zonal(M, DIM, beta, model, **kw)


def _initial(s, seed):
    """``ZonalProblem``'s 'noise': zonal harmonics 1..16 with N(0, 1/(|S| N)) coefficients."""
    a = np.random.default_rng(seed).standard_normal(16) / np.sqrt(s.area * 1e5)
    return s.split(s.uniform() + s.cell_average_matrix(16)[:, 1:] @ a)


def _targets(s, e_folds):
    end = (e_folds if s.fixed_dt is None else min(e_folds, 6.0)) / s.gamma_max
    return 0.4 * end, 0.8 * end, end


def _single(s, seed, e_folds=E_FOLDS, chunk=8):
    """The scheme alone: two output times, then chunks of ``chunk`` steps (as the hand-off
    checks advance) to the end."""
    q, t, st = _initial(s, seed), 0.0, StepStats()
    a, b, end = _targets(s, e_folds)
    q, t = s.advance(q, t, a, st)
    q, t = s.advance(q, t, b, st)
    while t < end:
        q, t = s.advance(q, t, end, st, None, st.steps + chunk)
    return q, t, st


def _round(ens, rows, qs, ts, stats, targets, limits=None):
    """One load / step-while-pending / unload round through the ``Ensemble`` contract."""
    errors = {}
    for i, r in enumerate(rows):
        ens.load(r, qs[i], ts[i], stats[i], targets[i], None if limits is None else limits[i])
    active = np.array(rows, np.int64)
    while (active := active[ens.pending(active)]).size:
        errors |= ens.step(active)
    for i, r in enumerate(rows):
        qs[i], ts[i] = ens.unload(r)
    return errors


def _ensemble(ens_cls, specs, e_folds=E_FOLDS, chunk=8):
    """The members through the same output times in rounds (the last in chunks)."""
    ens = ens_cls()
    schemes = [_scheme(*sp) for sp in specs]
    rows = [ens.add(s) for s in schemes]
    qs = [_initial(s, seed) for seed, s in enumerate(schemes)]
    ts, stats = [0.0] * len(rows), [StepStats() for _ in rows]
    targets = np.array([_targets(s, e_folds) for s in schemes])
    for k in range(2):
        assert _round(ens, rows, qs, ts, stats, targets[:, k]) == {}
    while any(t < e for t, e in zip(ts, targets[:, 2], strict=True)):
        assert _round(ens, rows, qs, ts, stats, targets[:, 2],
                      [st.steps + chunk for st in stats]) == {}
    return schemes, qs, ts, stats


def _assert_same_run(q, t, st, q1, t1, st1):
    """Tolerances: the members differ from their single runs only by the rounding of the
    potential's matrix products (gemm vs the single run's gemv, 1e-16 relative per step),
    carried through ~10^3 steps (measured <= 6e-14 of max |q|); the landing step
    dt = target - t is a difference of two times, so it is compared to 1e-12 of t."""
    assert st.steps == st1.steps
    assert t == t1
    assert_allclose(q, q1, rtol=0, atol=1e-12 * np.max(np.abs(q1)))
    assert_allclose(st.last_dt, st1.last_dt, rtol=0, atol=1e-12 * t1)
    assert_allclose(st.max_courant, st1.max_courant, rtol=1e-12)
    assert st.cfl_violations == st1.cfl_violations
    assert (st.compensation is None) == (st1.compensation is None)


def test_mixed_ensemble_equals_single_runs():
    """Eleven members (beta 1..9, USA raw/scaled and SA, SSP-RK3 and Euler, adaptive and
    fixed dt, default and explicit degrees), through two output times and 8-step chunks into
    clustering: the same steps and, to round-off, the same states and times as alone."""
    schemes, qs, ts, stats = _ensemble(ZonalEnsemble, SPECS)
    for seed, s in enumerate(schemes):
        q1, t1, st1 = _single(_scheme(*SPECS[seed]), seed)
        _assert_same_run(qs[seed], ts[seed], stats[seed], q1, t1, st1)
        assert (st1.compensation is None) == (s.integrator == "euler")
    assert max(np.max(q) / s.background for q, s in zip(qs, schemes, strict=True)) > 100


class _SinglePotential(ZonalEnsemble):
    """The ensemble with each row's potential computed by its own scheme (the single run's
    matrix products)."""

    def _potential(self, rows, w):
        for i, r in enumerate(rows.tolist()):
            w["c"][i] = self.schemes[r].potential(w["s"][i])


def test_compiled_step_is_the_single_runs_arithmetic():
    """Given the single run's potential, everything else (faces, limiter, flux, bound, dt,
    stages, Kahan update, statistics) is bitwise the single run's."""
    specs = [SPECS[1], SPECS[4], SPECS[7], SPECS[10]]
    schemes, qs, ts, stats = _ensemble(_SinglePotential, specs, 5.0)
    for i, s in enumerate(schemes):
        q1, t1, st1 = _single(_scheme(*specs[i]), i, 5.0)
        assert_array_equal(qs[i], q1)
        assert ts[i] == t1
        assert (stats[i].steps, stats[i].last_dt, stats[i].max_courant) == \
            (st1.steps, st1.last_dt, st1.max_courant)
        if s.integrator == "ssprk3":
            assert_array_equal(stats[i].compensation, st1.compensation)


def test_failing_member_fails_alone_with_the_single_runs_message():
    """A fixed Euler step of half an e-fold: it exceeds the positivity bound once the noise
    has grown (the first violation warns, as alone), the density turns negative, and the
    member reports the single run's SolverError message and stops; the others reach their
    targets as alone."""
    g = Zonal(M, DIM, 4.0, "usa").gamma_max
    specs = [(4.0, "sa", {}), (4.0, "usa", {"integrator": "euler", "dt": 0.5 / g}),
             (9.0, "usa", {"integrator": "euler"})]
    seeds = [3, 0, 5]
    ends = [4.0 / Zonal(M, DIM, b, m).gamma_max for b, m, _ in specs]
    ends[1] = 12.0 / g

    alone = []
    for (b, model, kw), seed, end in zip(specs, seeds, ends, strict=True):
        s, st = Zonal(M, DIM, b, model, **kw), StepStats()
        if "dt" in kw:
            with pytest.warns(CFLWarning) as warned, pytest.raises(SolverError) as err:
                s.advance(_initial(s, seed), 0.0, end, st)
            alone.append((str(err.value), [str(w.message) for w in warned], st.steps))
        else:
            alone.append((*s.advance(_initial(s, seed), 0.0, end, st), st))

    ens = ZonalEnsemble()
    schemes = [Zonal(M, DIM, b, model, **kw) for b, model, kw in specs]
    rows = [ens.add(s) for s in schemes]
    qs = [_initial(s, seed) for s, seed in zip(schemes, seeds, strict=True)]
    ts, stats = [0.0] * 3, [StepStats() for _ in rows]
    with pytest.warns(CFLWarning) as warned:
        errors = _round(ens, rows, qs, ts, stats, ends)
    message, warnings_alone, steps_alone = alone[1]
    assert errors == {rows[1]: message}
    assert [str(w.message) for w in warned] == warnings_alone
    assert stats[1].steps == steps_alone and stats[1].cfl_violations >= 1
    assert not ens.pending(np.array(rows)).any()
    for i in (0, 2):
        _assert_same_run(qs[i], ts[i], stats[i], *alone[i])


def test_key_and_rows():
    """Zonal schemes (exactly) share an ensemble per (cells, dim, limiter), whatever their
    beta, model, time unit, degree, step or integrator; rows are given once, in order."""
    base = ZonalEnsemble.key(Zonal(M, DIM, 1.0, "usa"))
    assert base == ("zonal", M, DIM, 2.0)
    for s in (Zonal(M, DIM, 9.0, "sa"), Zonal(M, DIM, 4.0, "usa", time_unit="scaled"),
              Zonal(M, DIM, 2.0, "sa", degree=5, dt=1e-3, integrator="euler", cfl=0.2)):
        assert ZonalEnsemble.key(s) == base
    for s in (Zonal(M, 5, 1.0, "usa"), Zonal(64, DIM, 1.0, "usa"),
              Zonal(M, DIM, 1.0, "usa", limiter_theta=1.5)):
        assert ZonalEnsemble.key(s) not in (None, base)

    class Sub(Zonal):
        pass

    assert ZonalEnsemble.key(FiniteVolume(64, 2.0, "usa")) is None
    assert ZonalEnsemble.key(Sub(M, DIM, 1.0, "usa")) is None
    ens = ZonalEnsemble()
    assert [ens.add(Zonal(M, DIM, b, "sa")) for b in range(1, 12)] == list(range(11))
    q = np.linspace(-1.0, 1.0, M)
    ens.load(0, q, 0.5, StepStats(), 1.0)
    ens.add(Zonal(M, DIM, 30.0, "sa"))            # a larger degree widens the basis
    assert ens.degree[11] > ens.degree[10]
    q_back, t_back = ens.unload(0)
    assert_array_equal(q_back, q)
    assert t_back == 0.5
    with pytest.raises(ValueError, match="share the grid"):
        ens.add(Zonal(M, 5, 1.0, "usa"))
    # a step limit already reached, a target already reached: nothing pending
    ens.load(0, np.zeros(M), 0.0, StepStats(steps=3), 1.0, max_steps=3)
    ens.load(1, np.zeros(M), 1.0, StepStats(), 1.0)
    ens.load(2, np.zeros(M), 0.0, StepStats(), 1.0, max_steps=4)
    assert ens.pending(np.arange(3)).tolist() == [False, False, True]


ZONAL_SWEEP = """
[model]
domain = "zonal"
dim = 3
[discretization]
cells = 128
[time]
t_end_units = "e_folds"
t_end = 30.0
n_outputs = 16
[atoms]
enabled = true
"""
def test_zonal_sweep_in_ensembles_writes_the_single_runs_files(cli, tmp_path):
    """A zonal sweep (beta 2, 9 x USA, SA; the grid hands off to ring atoms, which merge)
    run in one ensemble writes the files of one run per task: the same steps, atom counts
    and events; densities, atoms and times to 1e-10 of each series' largest value. The grid
    phase agrees to ~1e-14 (the potential's products are grouped differently); the atoms'
    merge after the hand-off comes out of a metastable state and amplifies that to
    <= 1.5e-11 relative (measured). Members that hand off step their atoms on their own
    while the ensemble goes on without them (``meanfield.ensemble.AWAY_AFTER``)."""
    import h5py

    (tmp_path / "base.toml").write_text(ZONAL_SWEEP)
    params = ["--param", "model.beta=2,9", "--param", "model.model=usa,sa"]
    for out, extra in (("single", ["--ensemble", "0"]), ("ens", [])):
        res = cli("sweep", "base.toml", *params, "-o", out, "--jobs", "1", *extra,
                  cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    names = assert_same_run_files(tmp_path / "single", tmp_path / "ens", ATOM_RUN_EXACT,
                                  ATOM_RUN_CLOSE, 1e-10)
    assert len(names) == 4
    for name in names:
        with h5py.File(tmp_path / "single" / name) as f:
            assert 3 in f["event_kind"][()]              # the hand-off happened
