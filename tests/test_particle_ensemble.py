"""Particle ensembles (``solvers.particles.ensemble``): members against their single runs, the
member checks, failures and statistics, and the phase diagrams' ``run_batch`` on the same step
function (``solvers.particles.fused.march``)."""

import math
import warnings

import numpy as np
import pytest
from conftest import assert_same_run_files

from solvers.particles import ParticleSystem
from solvers.particles.ensemble import ParticleEnsemble
from solvers.particles.fused import run_batch
from solvers.particles.zero_temperature import ZeroTemperatureSystem
from solvers.stepping import CFLWarning, SolverError, StepStats

#: members against single runs: the same formulas in another summation order (numba loops vs
#: numpy/BLAS with the log-sum-exp shift), measured <= 1e-15 here and <= 2e-13 through
#: clustering (N = 32-128, t = 50, beta 1-5, measured when the ensemble was written)
TOL = 1e-12


def _members(rep, d, qkv, n=10):
    """Several betas, SA and USA (scaled; raw with a_N = 1 at the smallest beta), both
    rules, each with half its single run's stability bound as step (at most 0.1)."""
    out = []
    for beta in (0.5, 2.0, 4.0):
        for model, unit, norm in (("sa", "raw", None), ("usa", "scaled", "1/N"),
                                  ("usa", "raw", "1")):
            if unit == "raw" and model == "usa" and beta > 0.5:
                continue          # raw USA: velocities ~ e^beta N, steps ~ e^-beta / N
            for rule in ("euler-unprojected", "euler"):
                kw = dict(qkv=qkv, qkv_scale=0.3, integrator=rule, time_unit=unit,
                          normalization=norm, seed=3, representation=rep)
                dt = min(0.1, 0.5 * ParticleSystem(n, d, beta, model, **kw).stable_dt())
                out.append(ParticleSystem(n, d, beta, model, dt=dt, **kw))
    return out


def _drive(ens, rows, states, times, stats, targets, limits):
    """Load, step until no row is pending, unload (what the workflow's coordinator does)."""
    for i, r in enumerate(rows):
        ens.load(r, states[i], times[i], stats[i], targets[i], limits[i])
    errors = {}
    while (todo := rows[ens.pending(rows)]).size:
        errors |= ens.step(todo)
    for i, r in enumerate(rows):
        states[i], times[i] = ens.unload(r)
    return errors


@pytest.mark.parametrize("rep,d,qkv", [("angles", 2, "identity"), ("vectors", 3, "identity"),
                                       ("vectors", 3, "gaussian")])
def test_members_equal_their_single_runs(rep, d, qkv):
    """14 members (3 betas x SA/USA scaled/USA raw x both rules, their own dt, 1-3 systems
    each) through intermediate targets and a max_steps stop: positions within TOL of
    ``ParticleSystem.advance`` alone (measured <= 9e-16), clocks and statistics equal."""
    ms = _members(rep, d, qkv)
    ens = ParticleEnsemble()
    rows = np.array([ens.add(s) for s in ms])
    assert len({ParticleEnsemble.key(s) for s in ms}) == 1
    x0 = [s.uniform_sample(1 + i % 3, seed=i) for i, s in enumerate(ms)]
    xe, xs = [x.copy() for x in x0], [x.copy() for x in x0]
    te, ts = [0.0] * len(ms), [0.0] * len(ms)
    se, ss = [StepStats() for _ in ms], [StepStats() for _ in ms]
    for target, limit in ((0.3, None), (1.1, 7), (1.1, None), (2.0, None)):
        limits = [limit if i % 2 else None for i in range(len(ms))]
        assert _drive(ens, rows, xe, te, se, [target] * len(ms), limits) == {}
        for i, s in enumerate(ms):
            xs[i], ts[i] = s.advance(xs[i], ts[i], target, ss[i], max_steps=limits[i])
        assert max(np.abs(a - b).max() for a, b in zip(xe, xs, strict=True)) < TOL
        assert te == ts
        assert [(a.steps, a.last_dt, a.max_courant, a.cfl_violations) for a in se] == \
            [(a.steps, a.last_dt, a.max_courant, a.cfl_violations) for a in ss]
    assert min(ts) == 2.0 and xe[0].shape == x0[0].shape


def test_key_takes_fixed_unmasked_unit_mass_systems_only():
    """key: ("particles", representation, N, d) for euler / euler-unprojected without mask,
    frozen tokens or masses; None for the rest; add refuses another key."""
    ok = ParticleSystem(6, 3, 1.0, "sa", integrator="euler", dt=0.1, qkv="orthogonal")
    assert ParticleEnsemble.key(ok) == ("particles", "vectors", 6, 3)
    refused = [ParticleSystem(6, 3, 1.0, integrator="adaptive"),
               ParticleSystem(6, 3, 1.0, integrator="rk4", dt=0.1),
               ParticleSystem(6, 3, 1.0, mask="causal", integrator="euler", dt=0.1),
               ParticleSystem(6, 3, 1.0, frozen=1, integrator="euler", dt=0.1),
               ParticleSystem(6, 3, 1.0, masses=np.arange(1, 7), integrator="euler", dt=0.1),
               ZeroTemperatureSystem(6, 3, integrator="euler", dt=0.1)]
    assert [ParticleEnsemble.key(s) for s in refused] == [None] * len(refused)
    ens = ParticleEnsemble([ok])
    with pytest.raises(ValueError):
        ens.add(ParticleSystem(7, 3, 1.0, integrator="euler", dt=0.1))
    with pytest.raises(ValueError):
        ens.add(refused[0])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_failures_and_limits_are_the_single_runs():
    """A raw USA member with e^{beta <x, B x>} beyond float64 (non-finite positions) and one
    at its system's max_steps fail alone with their single runs' messages."""
    ok = ParticleSystem(5, 2, 1.0, "sa", integrator="euler", dt=0.1, representation="angles")
    eye = np.eye(2)
    blow = ParticleSystem(5, 2, 300.0, "usa", qkv=(eye, 3 * eye, eye),
                          integrator="euler-unprojected", dt=0.1)
    capped = ParticleSystem(5, 2, 1.0, "sa", integrator="euler", dt=0.1, max_steps=3,
                            representation="vectors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CFLWarning)
        for members in ([ok], [blow, capped]):
            ens = ParticleEnsemble(members)
            rows = np.arange(len(members))
            x0 = [s.uniform_sample(2, seed=i) for i, s in enumerate(members)]
            states, times = [x.copy() for x in x0], [0.0] * len(members)
            errors = _drive(ens, rows, states, times, [StepStats() for _ in rows],
                            [1.0] * len(members), [None] * len(members))
            for r in errors:
                with pytest.raises(SolverError) as single:
                    members[r].advance(x0[r].copy(), 0.0, 1.0, StepStats())
                assert errors[r] == str(single.value)
            assert len(errors) == (0 if members == [ok] else 2)
    assert "non-finite positions at t = 0.1, step 1" in errors[0]
    assert errors[1] == "max_steps = 3 reached at t = 0.3"


def test_cfl_warning_and_statistics_are_the_single_runs():
    """A member above the stability bound warns once (first load) with the single run's
    CFLWarning; max_courant = dt/stable_dt and cfl_violations count as in the single run."""
    fast = ParticleSystem(5, 3, 1.0, "sa", integrator="euler", dt=2.0)
    x0 = fast.uniform_sample(2, seed=0)
    ens, alone, stats = ParticleEnsemble([fast]), StepStats(), StepStats()
    with warnings.catch_warnings(record=True) as ref:
        warnings.simplefilter("always")
        x, _ = fast.advance(x0.copy(), 0.0, 1.0, alone)
        fast.advance(x, 1.0, 5.5, alone)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        states, times = [x0.copy()], [0.0]
        for target in (1.0, 5.5):
            _drive(ens, np.arange(1), states, times, [stats], [target], [None])
    assert [str(w.message) for w in got] == [str(w.message) for w in ref] and len(ref) == 1
    assert (stats.steps, stats.max_courant, stats.cfl_violations) == \
        (alone.steps, alone.max_courant, alone.cfl_violations) == \
        (4, fast.dt / fast.stable_dt(), 4)


@pytest.mark.filterwarnings("ignore::solvers.stepping.CFLWarning")
def test_run_batch_is_the_ensemble_step_and_the_papers_rule():
    """run_batch (phase diagrams) and ParticleEnsemble take their steps in one compiled
    function: SA members stepped by the ensemble are bitwise run_batch's systems (identity and
    general B, V); both equal a plain numpy loop of the papers' rule x <- (x + h u)/|x + h u|
    (u the softmax average, self term included) to 1e-13."""
    rng = np.random.default_rng(5)
    n, d, betas = 6, 3, np.array([0.5, 2.0, 5.0])
    x0 = rng.standard_normal((3, n, d))
    x0 /= np.linalg.norm(x0, axis=-1, keepdims=True)
    q, k, v = (np.eye(d) + 0.4 * rng.standard_normal((d, d)) / math.sqrt(d) for _ in range(3))
    a = q.T @ k
    ref = x0.copy()
    for _ in range(8):    # the papers' rule with B = Q^T K, V, steps of 0.25 to t = 2
        s = np.einsum("bid,de,bje->bij", ref, a, ref)
        w = np.exp(betas[:, None, None] * (s - s.max(-1, keepdims=True)))
        u = np.einsum("bij,bjd->bid", w / w.sum(-1, keepdims=True), ref @ v.T)
        ref = ref + 0.25 * u
        ref /= np.linalg.norm(ref, axis=-1, keepdims=True)
    for qkv, mats in (("identity", {}), ((q, k, v), {"B": a, "V": v})):
        batch = run_batch(x0, betas, [0.0, 2.0], 0.25, **mats)["x"]
        ms = [ParticleSystem(n, d, b, "sa", qkv=qkv, integrator="euler-unprojected", dt=0.25)
              for b in betas]
        ens = ParticleEnsemble(ms)
        states, times = [x0[i: i + 1].copy() for i in range(3)], [0.0] * 3
        _drive(ens, np.arange(3), states, times, [StepStats() for _ in ms], [2.0] * 3,
               [None] * 3)
        assert np.array_equal(np.concatenate(states), batch)
        if mats:
            assert np.abs(batch - ref).max() < 1e-13


PARTICLE_SWEEP = """
[model]
domain = "particles"
dim = 3
[particles]
count = 32
batch = 2
integrator = "euler-unprojected"
dt = 0.02
[time]
t_end = 20.0
n_outputs = 10
"""


def test_particle_sweep_in_ensembles_writes_the_single_runs_files(cli, tmp_path):
    """A particle sweep (beta 1, 4 x SA, USA x 2 seeds, 2 systems each) run as one ensemble
    writes the files of one run per task: the same steps, positions and diagnostics to
    1e-11 of each series' largest value (measured <= 3.2e-12, the energy rate, a sum of
    squared velocities; positions <= 1e-13)."""
    (tmp_path / "base.toml").write_text(PARTICLE_SWEEP)
    params = ["--param", "model.beta=1,4", "--param", "model.model=usa,sa",
              "--param", "initial.seed=0:2"]
    for out, extra in (("single", ["--ensemble", "0"]), ("ens", [])):
        res = cli("sweep", "base.toml", *params, "-o", out, "--jobs", "1", *extra,
                  cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    names = assert_same_run_files(tmp_path / "single", tmp_path / "ens", ("steps",),
                                  ("positions", "time", "ebar", "energy_rate", "max_speed"),
                                  1e-11)
    assert len(names) == 8
