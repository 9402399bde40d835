"""Clusters as atoms (solvers.atoms): exact through the metastable phase, against closed
forms and weighted particle runs; mass exact and energy monotone through every event; the
linear phase untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from meanfield import initial
from meanfield.theory.reference import two_cluster_gap, two_cluster_merge_time
from solvers.atoms import AtomicCircle
from solvers.circle import FiniteVolume
from solvers.stepping import StepStats

TWO_PI = 2 * math.pi


def _gap(s: AtomicCircle, state) -> float:
    x = np.sort(s.positions(state))
    return float(min(x[1] - x[0], TWO_PI - (x[1] - x[0])))


def _march(s: AtomicCircle, state, times):
    stats, t, out = StepStats(), 0.0, []
    for target in times:
        state, t = s.advance(state, t, float(target), stats)
        out.append((t, state.copy(), s.density_mass, s.atoms.masses.copy()))
    return out


@pytest.mark.parametrize("model,unit,t_end", [("usa", "scaled", 2000.0),
                                              ("usa", "raw", 2000.0 * math.exp(-8.0)),
                                              ("sa", "raw", 2000.0)])
def test_two_clusters_follow_the_two_point_law(model, unit, t_end):
    """Issue 12's reproducer: fv2, M = 512, beta = 8, two von Mises bumps (kappa = 400) at
    1 and 3. Without atoms the gap stayed at 2.0003 (pinned to the grid); the law gives
    1.976 at t = 2000 (scaled USA). With atoms the gap follows the law started from the atoms
    once the density is absorbed to 1e-6 (measured ~1e-9) and the law started from the
    bumps to 1e-3 (measured 1.1e-6: the collapse takes ~2 time units)."""
    s = AtomicCircle(FiniteVolume(512, 8.0, model, time_unit=unit))
    state = s.split(initial.von_mises_bumps(512, [1, 3], kappa=400))
    times = np.linspace(0, t_end, 201)[1:]
    out = _march(s, state, times)
    i0 = next(i for i, o in enumerate(out) if o[2] == 0 and o[3].size == 2)
    t0, st0, _, m0 = out[i0]
    law = two_cluster_gap([t - t0 for t, *_ in out[i0:]], _gap(s, st0), 8.0, tuple(m0),
                          model, unit)
    got = np.array([_gap(s, o[1]) for o in out[i0:]])
    assert np.max(np.abs(got / law - 1)) < 1e-6
    from_bumps = two_cluster_gap([t_end], 2.0, 8.0, (0.5, 0.5), model, unit)[0]
    assert got[-1] == pytest.approx(from_bumps, rel=1e-3)
    assert abs(got[-1] - 2.0) > 0.02  # the pinned grid solution did not move at all


def test_two_atoms_merge_at_the_closed_form_time():
    """Start from two atoms (masses 0.4, 0.6, gap 1.2, beta = 8, scaled USA): the merge event
    (gap < merge window 1e-3) is dated inside its step; closed form T(1.2 -> 1e-3)."""
    s = AtomicCircle(FiniteVolume(256, 8.0, time_unit="scaled"))
    state = s.start(np.zeros(256), [1.0, 2.2], [0.4, 0.6])
    expect = two_cluster_merge_time(1.2, 1e-3, 8.0, (0.4, 0.6), "usa", "scaled")
    _march(s, state, [1.2 * expect])
    merges = [e for e in s.atoms.events if e.kind == "merge"]
    assert len(merges) == 1 and s.count == 1
    assert merges[0].t == pytest.approx(expect, rel=1e-5)
    assert merges[0].oracle == pytest.approx(expect, rel=1e-10)  # what the file reports
    assert merges[0].position == pytest.approx(1.0 + 0.6 * 1.2, abs=1e-6)  # centre of mass


def _reference_merges(x, m, beta, model, t_end, window=1e-3):
    """Weighted particles on the circle with merges at gap < window (independent code:
    DOP853, rtol 1e-12, an event per pair)."""
    x, m, t, out = list(x), list(m), 0.0, []
    while len(x) > 1:
        mm = np.array(m)

        def rhs(_t, th, mm=mm):
            d = th[:, None] - th[None, :]
            e = np.exp(beta * (np.cos(d) - 1)) * mm[None, :]
            f = -(e * np.sin(d)).sum(1)
            return f if model == "usa" else f / e.sum(1)

        pairs = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))]
        events = []
        for i, j in pairs:
            def ev(_t, th, i=i, j=j):
                return abs(math.remainder(th[j] - th[i], TWO_PI)) - window
            ev.terminal, ev.direction = True, -1
            events.append(ev)
        sol = solve_ivp(rhs, (t, t_end), np.array(x), events=events, rtol=1e-12,
                        atol=1e-14, method="DOP853")
        if sol.status != 1:
            break
        k = min((e[0], n) for n, e in enumerate(sol.t_events) if len(e))[1]
        i, j = pairs[k]
        th, t = sol.y[:, -1], sol.t[-1]
        c = th[i] + math.remainder(th[j] - th[i], TWO_PI) * mm[j] / (mm[i] + mm[j])
        out.append((t, mm[i] + mm[j]))
        x = [th[n] for n in range(len(x)) if n not in (i, j)] + [c]
        m = [mm[n] for n in range(len(m)) if n not in (i, j)] + [mm[i] + mm[j]]
    return out


@pytest.mark.parametrize("centres,masses,model", [
    ([0.5, 1.6, 2.9], [0.2, 0.3, 0.5], "usa"),
    ([0.5, 1.6, 2.9], [0.2, 0.3, 0.5], "sa"),
    ([0.3, 1.45, 2.6, 3.8, 5.05], [0.1, 0.15, 0.2, 0.25, 0.3], "usa"),
])
def test_merge_order_and_times_match_weighted_particles(centres, masses, model):
    """Three and five clusters with unequal masses at beta = 8 (scaled USA, raw SA): every
    merge at the reference's time to 1e-4 (measured <= 3e-6), with the same masses."""
    unit = "scaled" if model == "usa" else "raw"
    t_end = 3000.0
    s = AtomicCircle(FiniteVolume(512, 8.0, model, time_unit=unit))
    state = s.start(np.zeros(512), centres, masses)
    _march(s, state, [t_end])
    got = [(e.t, e.mass) for e in s.atoms.events if e.kind == "merge"]
    ref = _reference_merges(centres, masses, 8.0, model, t_end)
    assert len(got) == len(ref) >= 2
    for (tg, mg), (tr, mr) in zip(got, ref, strict=True):
        assert tg == pytest.approx(tr, rel=1e-4)
        assert mg == pytest.approx(mr, rel=1e-12)


def test_seed000_fig2_made_continuous():
    """Seed 000, Fig. 2: five bumps at the authors' angles (kappa = 1e4, equal masses), SA,
    beta = 4, fv2 at M = 512. The exact particle ODE merges {1,2} at 5.09, {4,5} at 6.41,
    3 joins at 9.01 and the two caps at 332.2 (notes-000 V1); the PDE with atoms gives 5.09,
    6.40, 9.04 (the bumps first collapse: within 0.1 time units) and 332.20 (0.2 %; 332.53
    and 332.34 at M = 1024, 2048)."""
    angles = [0.0622, 0.2143, 1.8191, 2.9111, -3.0952]
    s = AtomicCircle(FiniteVolume(512, 4.0, "sa"))
    state = s.split(initial.von_mises_bumps(512, np.mod(angles, TWO_PI), kappa=1e4))
    _march(s, state, [400.0])
    merges = [e.t for e in s.atoms.events if e.kind == "merge" and min(e.parts) > 0.05]
    assert len(merges) == 4 and s.count == 1
    np.testing.assert_allclose(merges[:3], [5.09, 6.41, 9.01], atol=0.1)
    assert merges[3] == pytest.approx(332.2, rel=2e-3)


def test_mass_exact_and_energy_monotone_through_captures_and_merges():
    """Noise at beta = 6 (USA, M = 512) to t = 3: clusters form, are captured piecewise,
    merge, and the residual joins them. Mass to 1e-14, Ebar never decreases (relative
    1e-12), and the atoms end with all the mass."""
    s = AtomicCircle(FiniteVolume(512, 6.0))
    r = s.run(initial.white_noise(512, 0.01, seed=0), 3.0, np.linspace(0, 3, 151))
    d = r.diagnostics
    assert np.max(np.abs(d["mass"] - 1.0)) < 1e-14
    assert np.all(np.diff(d["ebar"]) >= -1e-12 * d["ebar"][1:])
    kinds = {e.kind for e in s.atoms.events}
    assert kinds == {"capture", "merge", "residual"}
    assert d["atoms"][-1] >= 2 and d["atom_mass"][-1] == pytest.approx(1.0, abs=1e-14)


def test_the_linear_phase_is_bitwise_unchanged():
    """Before any cluster forms the atoms change nothing: same steps, same bits."""
    p0 = initial.white_noise(512, 0.01, seed=3)
    times = np.linspace(0, 0.1, 11)
    plain = FiniteVolume(512, 5.0).run(p0, 0.1, times)
    atoms = AtomicCircle(FiniteVolume(512, 5.0)).run(p0, 0.1, times)
    assert atoms.steps == plain.steps
    np.testing.assert_array_equal(atoms.density, plain.density)
    for key in ("energy", "spectrum", "mass"):
        np.testing.assert_array_equal(atoms.diagnostics[key], plain.diagnostics[key])


def test_sphere_hands_clusters_to_atoms_that_merge_at_the_two_point_time(tmp_path):
    """Two von Mises-Fisher bumps on S^2 (kappa = 40, 1.2 rad apart), USA beta = 5 (scaled),
    lmax = 47: the spectral solution collapses them until it is no longer resolved, hands
    them to two atoms (mass exact), and the atoms merge when the two-point law (the same on
    S^2 as on the circle: the pair stays on its great circle) says, counted from the first
    snapshot after the hand-off: 1e-4 (measured ~1e-8)."""
    import h5py

    from meanfield import config
    from meanfield.driver import execute

    cfg, text = config.resolve(None, [
        "model.domain=sphere", "model.time_unit=scaled", "discretization.lmax=47",
        "initial.kind=bumps", "initial.centres=[0.0, 0.0, 0.0, 68.75493541569878]",
        "initial.kappa=40", "time.t_end=20", "time.n_outputs=81"], str(tmp_path / "s.h5"))
    summary = execute(cfg, text, quiet=True)
    assert summary.status == "complete", summary.message
    with h5py.File(tmp_path / "s.h5", "r") as f:
        kinds, tev = f["event_kind"][()], f["event_time"][()]
        assert list(kinds) == [3, 1]  # hand-off, then merge
        t, pos, mass = f["time"][()], f["atom_position"][()], f["atom_mass_by_atom"][()]
        assert np.all(np.abs(f["mass"][()] - 1) < 1e-13)
    i = int(np.argmax(t > tev[0]))
    x0, x1 = pos[i, 0], pos[i, 1]
    m0 = (float(mass[i, 0]), float(mass[i, 1]))
    gap = math.acos(float(np.clip(x0 @ x1, -1, 1)))
    law = t[i] + two_cluster_merge_time(gap, 1e-3, 5.0, m0, "usa", "scaled")
    assert tev[1] == pytest.approx(law, rel=1e-4)
    assert sum(m0) == pytest.approx(1.0, abs=1e-13)


@pytest.mark.parametrize(("dim", "model", "unit"), [(3, "usa", "scaled"), (3, "sa", "raw"),
                                                    (4, "usa", "scaled")])
def test_rings_move_like_particles_placed_on_them(dim, model, unit):
    """Zonal hand-off (solvers.zonal_atoms): three weighted rings on S^{d-1} (beta = 5) move
    as the weighted particle ODE started from quadrature points on the same rings (S^2: 64
    equispaced points per ring; S^3: a 24 x 24 Gauss-Legendre x trapezoid rule on each
    ring's S^2; both integrate the analytic kernel to round-off). The rings stay rings and
    the mean angles agree to 1e-8 (measured 3e-10 for SA, 4e-14 for USA)."""
    from solvers.particles import ParticleSystem
    from solvers.zonal_atoms import RingAtoms

    th0, m, t_end = np.array([0.9, 1.6, 2.5]), np.array([0.3, 0.5, 0.2]), 0.6
    rings = RingAtoms(dim, 5.0, model, unit, merge_window=1e-9)
    rings.masses = m.copy()
    x, _ = rings.advance(th0.copy(), 0.0, t_end, StepStats())
    assert not rings.events
    if dim == 3:
        ph = TWO_PI * np.arange(64) / 64
        s = np.stack([np.cos(ph), np.sin(ph)], 1)
        q = np.full(64, 1 / 64)
    else:  # product rule on S^2: Gauss-Legendre in the height x trapezoid in the azimuth
        zg, wg = np.polynomial.legendre.leggauss(24)
        ph = TWO_PI * np.arange(24) / 24
        z, phi = np.repeat(zg, 24), np.tile(ph, 24)
        r = np.sqrt(1 - z * z)
        s = np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)
        q = np.repeat(wg / 2, 24) / 24
    pts = np.concatenate([np.concatenate([np.full((len(s), 1), math.cos(t)),
                                          math.sin(t) * s], 1) for t in th0])
    w = np.concatenate([mj * q for mj in m])
    ps = ParticleSystem(len(pts), dim, 5.0, model, time_unit=unit, masses=w, rtol=1e-11,
                        atol=1e-13)
    y = ps.run(pts, t_end, [0.0, t_end], diagnostics=False).positions[-1].reshape(len(pts), dim)
    ang = np.arccos(np.clip(y[:, 0], -1, 1)).reshape(3, len(s))
    np.testing.assert_allclose(ang @ q, x, rtol=0, atol=1e-8)
    assert np.ptp(ang, axis=1).max() < 1e-5  # each ring stays a ring


def _zonal_cfg(tmp_path, name, extra=()):
    from meanfield import config

    return config.resolve(None, [
        "model.domain=zonal", "model.beta=5", "model.time_unit=scaled",
        "discretization.cells=512", "initial.kind=bumps", "initial.centres=[1.0, 1.6]",
        "initial.masses=[0.4, 0.6]", "initial.kappa=2000", "time.t_end=100",
        "time.n_outputs=41", *extra], str(tmp_path / name))


def test_zonal_run_hands_off_to_rings_that_merge_at_the_ring_law_time(tmp_path):
    """Two narrow rings on S^2 (kappa = 2000 at polar angles 1.0, 1.6, masses 0.4/0.6, USA
    beta = 5 scaled, M = 512): the zonal cells hand off once a ring is narrower than 1.5
    cells (event kind 3, mass exact), the rings merge when the ring ODE started from the
    initial bumps' centroids says (1e-3: the bumps' width shifts it; measured 1.7e-4), and
    the merged ring then collapses onto the nearer pole (a point atom, mass 1). Mass 1e-13
    and energy monotone through the hand-off and both events."""
    import h5py

    from meanfield.driver import execute
    from solvers.zonal import Zonal
    from solvers.zonal_atoms import RingAtoms, zonal_clusters

    cfg, text = _zonal_cfg(tmp_path, "z.h5")
    summary = execute(cfg, text, quiet=True)
    assert summary.status == "complete", summary.message
    with h5py.File(tmp_path / "z.h5", "r") as f:
        kinds, tev, parts = f["event_kind"][()], f["event_time"][()], f["event_parts"][()]
        mass, energy, p0 = f["mass"][()], f["energy"][()], f["density"][0]
        final_pos, final_mass = f["atom_position"][-1], f["atom_mass_by_atom"][-1]
    assert list(kinds) == [3, 1, 1] and parts[0][0] == 2 and parts[0][1] < 0.05
    assert np.abs(mass - 1).max() < 1e-13 and np.all(np.diff(energy) >= -1e-14)
    z = Zonal(512, 3, 5.0, "usa", time_unit="scaled")
    cl = zonal_clusters(z.theta, z.cell_weight, p0, level=1.0001)
    law = RingAtoms(3, 5.0, "usa", "scaled", merge_window=1e-3)
    law.masses = np.array([c.mass for c in cl]) / sum(c.mass for c in cl)
    law.advance(np.array([c.centre for c in cl]), 0.0, 100.0, StepStats())
    assert tev[1] == pytest.approx(law.events[0].t, rel=1e-3)
    assert final_mass[0] == pytest.approx(1.0, abs=1e-13) and final_pos[0] in (0.0, math.pi)


def test_zonal_hand_off_resumes_exactly(tmp_path):
    """A wall-clock budget interrupts the zonal run (before and after the hand-off); every
    resume continues bitwise: same events, atoms and diagnostics as the uninterrupted run."""
    import h5py

    from meanfield.driver import execute

    cfg, text = _zonal_cfg(tmp_path, "ref.h5", ["time.t_end=60"])
    assert execute(cfg, text, quiet=True).status == "complete"
    cfg, text = _zonal_cfg(tmp_path, "cut.h5", ["time.t_end=60", "stop.wall_seconds=0.15",
                                                 "output.checkpoint_seconds=0"])
    done = execute(cfg, text, quiet=True)
    cuts = 0
    while done.status == "interrupted":
        cuts += 1
        done = execute(cfg, text, resume=True, quiet=True)
    assert cuts >= 1 and done.status == "complete"
    with h5py.File(tmp_path / "ref.h5", "r") as a, h5py.File(tmp_path / "cut.h5", "r") as b:
        for key in ("event_time", "event_kind", "atom_position", "atom_mass_by_atom", "steps",
                    "ebar", "density"):
            np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=key)
