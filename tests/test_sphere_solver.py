"""Pseudo-spectral sphere solver (S^2) against the mathematics, and sphere initial data."""

import math

import numpy as np
import pytest

from meanfield import ExponentialKernel, exit_time, growth_rate
from meanfield.initial import sphere as ins
from solvers import SolverError
from solvers.sphere import Spectral, import_shtns

P_INF = 1.0 / (4.0 * math.pi)


def _rk3_rate(gamma, dt, steps, t_end):
    """Rate that SSP-RK3 with ``steps`` equal steps gives d a/dt = gamma a: R(z)=1+z+z^2/2+z^3/6."""
    z = gamma * dt
    return steps * math.log(1 + z + z * z / 2 + z**3 / 6) / t_end


def _rotation(angle, axis):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


# --------------------------------------------------------------------------- conventions
def test_shtns_gradient_and_divergence_conventions():
    s = Spectral(8, 1.0)
    sht = s.sht
    x, phi = s.grid()
    sin_t = np.sqrt(1 - x**2)[:, None]
    # S = cos(theta): grad S = -sin(theta) e_theta
    c = sht.analyse(np.broadcast_to(x[:, None], (s.nlat, s.nphi)).copy())
    vt, vp = sht.spat(), sht.spat()
    sht.synth_grad(c, vt, vp)
    np.testing.assert_allclose(vt, -sin_t * np.ones_like(phi), atol=1e-14)
    np.testing.assert_allclose(vp, 0.0, atol=1e-14)
    # V = grad S has spheroidal scalar S and no toroidal part; div V = -l(l+1) S_lm
    rng = np.random.default_rng(0)
    c = rng.standard_normal(sht.nlm) + 1j * rng.standard_normal(sht.nlm)
    c[sht.m == 0] = c[sht.m == 0].real
    c[0] = 0.0
    sht.synth_grad(c, vt, vp)
    s_lm, t_lm = np.empty_like(c), np.empty_like(c)
    sht.spheroidal(vt, vp, s_lm, t_lm)
    np.testing.assert_allclose(s_lm, c, atol=1e-12)
    np.testing.assert_allclose(t_lm, 0.0, atol=1e-12)
    # L2 norm of a real field = sum |c_l0|^2 + 2 sum_{m>0} |c_lm|^2 (the ``power`` convention)
    f = sht.synth(c)
    norm2 = sht.quadrature(f * f)
    assert norm2 == pytest.approx(float(np.sum(np.where(sht.m == 0, 1, 2) * np.abs(c) ** 2)),
                                  rel=1e-13)


def test_grid_and_coefficients_match_initial_conditions_module():
    s = Spectral(20, 1.0)
    x, phi = s.grid()
    gx, gphi, gw = ins.gauss_grid(s.nlat, s.nphi)
    np.testing.assert_allclose(x, gx, atol=1e-15)
    np.testing.assert_allclose(phi, gphi, atol=1e-15)
    np.testing.assert_allclose(s.sht.weights, gw, atol=1e-15)
    assert s.lat[0] > 0 > s.lat[-1] and s.lon[0] == 0.0
    # real harmonics of the layer-1 module are orthonormal; shtns stores them as
    # c_lm = (+-1)^m / sqrt 2 (Condon-Shortley phase) at m > 0
    for l, m in [(0, 0), (4, 0), (5, 3), (5, -3), (20, -11)]:
        c = s.analyse(ins.real_harmonic(x, phi, l, m))
        i = s.sht.sh.idx(l, abs(m))
        expect = 1.0 if m == 0 else (-1) ** m / math.sqrt(2) * (1 if m > 0 else -1j)
        assert c[i] == pytest.approx(expect, abs=1e-13)
        c[i] = 0.0
        assert np.abs(c).max() < 1e-13


# --------------------------------------------------------------------------- linear growth
@pytest.mark.parametrize("beta", [2.0, 5.0, 9.0])
def test_linear_growth_rates_usa_and_sa(beta):
    """A degree-l harmonic of amplitude 1e-10 grows at gamma_l (l = 1..6).

    The linear part is applied exactly in spectral space, so the only error is SSP-RK3's:
    its amplification R(z) = 1 + z + z^2/2 + z^3/6 per step, a rate error -z^3/24 relative with
    z = gamma_l dt <= accuracy = 0.02, i.e. <= 3.4e-7 < 1e-6. Against the exact discrete
    prediction ln R(z)/dt the measured rate agrees to round-off (the quadratic terms feed
    degree l at relative size ~ amplitude / pbar ~ 1e-9).
    """
    usa_rates = {}
    log_z_inf = ExponentialKernel(beta).log_partition_uniform(3)
    for model in ("usa", "sa"):
        s = Spectral(16, beta, model)
        x, phi = s.grid()
        t_end = 1.0 / s.gamma_max
        for l in range(1, 7):
            p0 = ins.harmonic(x, phi, (l, (-1) ** l * (l // 2)), 1e-10)
            r = s.run(p0, t_end)
            assert r.steps == 50  # dt = accuracy / gamma_max exactly
            power = r.diagnostics["spectrum"][:, l] ** 2
            rate = math.log(power[-1] / power[0]) / (2 * t_end)
            expect = growth_rate(l, beta, 3, model)
            assert rate == pytest.approx(expect, rel=1e-6)
            assert rate == pytest.approx(_rk3_rate(expect, t_end / 50, 50, t_end), rel=1e-10)
            if model == "usa":
                usa_rates[l] = rate
            else:  # SA = USA / Z_inf, Z_inf = Gamma(3/2) (2/beta)^{1/2} I_{1/2}(beta)
                assert rate * math.exp(log_z_inf) == pytest.approx(usa_rates[l], rel=1e-6)
        assert s.k_max == (2 if beta == 2 else 3 if beta == 5 else 4)


def test_scaled_time_unit_and_growth_rates_attribute():
    raw, scaled = Spectral(12, 5.0), Spectral(12, 5.0, time_unit="scaled")
    np.testing.assert_allclose(raw.growth_rates[1:], growth_rate(np.arange(1, 13), 5.0, 3),
                               rtol=1e-13)
    np.testing.assert_allclose(scaled.growth_rates * math.exp(5.0), raw.growth_rates,
                               rtol=1e-13)


# --------------------------------------------------------------------------- invariants
def test_uniform_is_stationary_and_its_energy():
    beta = 5.0
    s = Spectral(16, beta)
    x, phi = s.grid()
    r = s.run(ins.uniform(x, phi), 1.0, [0.0, 1.0])
    assert np.array_equal(r.density[-1], r.density[0])  # q = 0 has rhs exactly 0
    assert np.max(np.abs(r.density[-1] - P_INF)) < 4e-16 * P_INF  # pbar from quadrature
    # uniform: E = Z_inf / (2 beta), Ebar = e^{-beta} Z_inf = (1 - e^{-2 beta}) / (2 beta)
    assert r.diagnostics["ebar"][-1] == pytest.approx(-math.expm1(-2 * beta) / (2 * beta),
                                                      rel=1e-13)
    assert r.diagnostics["dominant_mode"][-1] >= 1


@pytest.mark.parametrize("model", ["usa", "sa"])
def test_mass_energy_and_resolution_through_clustering(model):
    """Mass to round-off, E non-decreasing while resolved, and the resolution flag flips.

    Two vMF bumps (masses 0.4, 0.3, kappa = 4) at beta = 5 collapse into point clusters; a
    degree-24 expansion follows them until their width is ~ pi/24, after which the spectral
    tail grows and ``resolved`` turns False (and stays so).
    """
    s = Spectral(24, 5.0, model, undershoot=1e6)
    x, phi = s.grid()
    p0 = ins.von_mises_fisher(x, phi, [[0.3, 0.5, 0.8], [-0.7, 0.1, 0.2]], [0.4, 0.3],
                              kappa=4.0)
    t_end = 0.12 if model == "usa" else 3.0
    r = s.run(p0, t_end, np.linspace(0, t_end, 25))
    d = r.diagnostics
    assert np.max(np.abs(d["mass"] - 1.0)) < 1e-12
    assert np.array_equal(r.coefficients[:, 0], r.coefficients[:1, 0].repeat(25))
    res = d["resolved"]
    assert res[0] and not res[-1]
    first_bad = int(np.argmin(res))
    assert not np.any(res[first_bad:])
    e = d["energy"][:first_bad]
    assert np.all(np.diff(e) > 0)  # dE/dt = integral |v|^2 (Z) dmu > 0 away from equilibria
    assert d["min_density"][:first_bad].min() > 0
    rep = s.resolution_report(s.split(r.density[-1]))
    assert not rep.resolved and rep.message.startswith("NOT resolved")


def test_undershoot_stops_the_run_with_a_clear_error():
    s = Spectral(16, 5.0, undershoot=0.5)
    x, phi = s.grid()
    p0 = ins.von_mises_fisher(x, phi, [[1, 0, 0]], [0.8], kappa=4.0)
    with pytest.raises(SolverError, match=r"negative values .* at t = "):
        s.run(p0, 0.5)


def test_filter_keeps_mass_and_damps_the_tail():
    s = Spectral(24, 5.0, filter=True, undershoot=1e6)
    plain = Spectral(24, 5.0, undershoot=1e6)
    x, phi = s.grid()
    p0 = ins.von_mises_fisher(x, phi, [[0.3, 0.5, 0.8], [-0.7, 0.1, 0.2]], [0.4, 0.3],
                              kappa=4.0)
    a, b = s.run(p0, 0.08), plain.run(p0, 0.08)
    assert a.diagnostics["mass"][-1] == pytest.approx(1.0, abs=1e-13)
    assert a.coefficients[-1, 0] == b.coefficients[-1, 0]
    top = a.degrees == 24
    assert np.abs(a.coefficients[-1, top]).max() < 1e-3 * np.abs(b.coefficients[-1, top]).max()
    # band = top 10 % of 0..18, 18 = the filter's half-amplitude degree int(0.78 lmax)
    assert s.tail_degrees == (17, 18)


# --------------------------------------------------------------------------- symmetry
def test_longitude_shift_by_grid_multiple_is_exact():
    s = Spectral(24, 5.0)
    x, phi = s.grid()
    p0 = ins.von_mises_fisher(x, phi, [[0.3, 0.5, 0.8], [-0.7, 0.1, 0.2]], [0.4, 0.3],
                              kappa=4.0)
    shift = 7
    a = s.run(p0, 0.05).density[-1]
    b = s.run(np.roll(p0, shift, axis=1), 0.05).density[-1]
    assert np.max(np.abs(np.roll(a, shift, axis=1) - b)) < 1e-14 * a.max()


@pytest.mark.parametrize("model", ["usa", "sa"])
def test_general_rotation_commutes_with_the_flow(model):
    """Rotating the vMF centres rotates the solution (shtns Wigner rotation of the result).

    kappa = 4 bumps have coefficients ~ e^{-l^2/8}: below 1e-30 at l = 24, so the initial
    data are band-limited to round-off. The dealiased USA right-hand side is the exact
    Galerkin projection, which commutes with rotations: agreement to round-off. SA divides
    by Z on the grid (aliasing of the smooth 1/Z is at truncation level, here ~1e-16 too);
    we allow 1e-11 relative.
    """
    rot_matrix = _rotation(0.7, [1.0, 2.0, 0.5])
    centres = np.array([[0.3, 0.5, 0.8], [-0.7, 0.1, 0.2]])
    s = Spectral(24, 5.0, model)
    x, phi = s.grid()
    p1 = ins.von_mises_fisher(x, phi, centres, [0.4, 0.3], kappa=4.0)
    p2 = ins.von_mises_fisher(x, phi, centres @ rot_matrix.T, [0.4, 0.3], kappa=4.0)
    shtns = import_shtns()
    rot = shtns.rotation(s.lmax, s.lmax)
    axis = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    rot.set_angle_axis(0.7, *axis)
    t_end = 0.03 if model == "usa" else 1.0
    a, b = s.run(p1, t_end), s.run(p2, t_end)
    assert a.diagnostics["resolved"][-1]
    rotated = rot.apply_real(a.coefficients[-1].copy())
    scale = np.abs(b.coefficients[-1]).max()
    assert np.abs(rotated - b.coefficients[-1]).max() < 1e-11 * scale
    np.testing.assert_allclose(a.diagnostics["energy"], b.diagnostics["energy"], rtol=1e-12)


@pytest.mark.parametrize("model", ["usa", "sa"])
def test_dealiasing_rule(model):
    """On the 3/2 grid the quadratic product is exact: a finer grid changes nothing.

    Random coefficients (0.003 each, a positive density) fill every degree <= lmax. With the
    3/2 rule the USA rhs equals the one from a much finer grid to round-off. SA's flux
    (p/Z - pbar/Z_inf) grad c is not a polynomial: its first non-quadratic term is cubic in
    the perturbation and aliases (measured 2e-11 relative here, falling ~amplitude^3); we
    allow 1e-9. Without dealiasing the USA rhs is visibly aliased.
    """
    lmax = 20
    base = Spectral(lmax, 5.0, model)
    fine = Spectral(lmax, 5.0, model, nlat=96, nphi=192)
    bare = Spectral(lmax, 5.0, model, dealias="none")
    rng = np.random.default_rng(1)
    c = (rng.standard_normal(base.sht.nlm) + 1j * rng.standard_normal(base.sht.nlm)) * 0.003
    c[base.sht.m == 0] = c[base.sht.m == 0].real
    c[0] = 0.0
    r_base, r_fine, r_bare = (s.rhs(c.copy()) for s in (base, fine, bare))
    scale = np.abs(r_fine).max()
    assert np.abs(r_base - r_fine).max() < (1e-13 if model == "usa" else 1e-9) * scale
    if model == "usa":
        assert np.abs(r_bare - r_fine).max() > 1e-4 * scale
    assert np.array_equal(r_base[:1], [0.0])  # l = 0: exactly no tendency


# --------------------------------------------------------------------------- mode selection
def test_token_noise_selects_kmax_3_at_beta_5():
    """From N-token noise at beta = 5 the dominant degree at exit (r = 0.3) is k_max = 3.

    Linear theory: P_l(t) ~ (2l+1)/N e^{2 gamma_l t} times chi^2_{2l+1}/(2l+1). gamma_2/gamma_3 =
    0.928 selects weakly: at exit E P_2 / E P_3 = (5/7) N^{-0.072}-ish; with N = 1e12 it is
    0.13, and a seed picks degree 2 with probability P(F_{5,7} > 7.6) = 1 % (degree 4: 5e-7).
    We require all 6 seeds. The exit time matches ``meanfield.growth.exit_time`` (linear
    theory for the k_max component alone) within its O(1/gamma_max) accuracy.
    """
    n_tokens, beta = 1e12, 5.0
    s = Spectral(31, beta, undershoot=1e6)
    assert s.k_max == 3
    x, phi = s.grid()
    t_pred = exit_time(n_tokens, beta, 3)
    t_end = 1.15 * t_pred
    times = np.linspace(0, t_end, 47)
    exits = []
    for seed in range(6):
        r = s.run(ins.token_noise(x, phi, n_tokens, seed=seed, cutoff=16), t_end, times)
        power = r.diagnostics["spectrum"] ** 2
        dist = np.sqrt(power[:, 1:].sum(axis=1) / power[:, 0])  # ||p - pbar|| / ||pbar||
        i = int(np.argmax(dist > 0.3))
        assert i > 0
        assert r.diagnostics["dominant_mode"][i] == 3
        exits.append(times[i])
    assert abs(np.mean(exits) - t_pred) < 0.5 / s.gamma_max


# --------------------------------------------------------------------------- initial data
def test_initial_conditions_on_the_gauss_grid():
    s = Spectral(24, 1.0)
    x, phi = s.grid()
    mass = s.sht.quadrature
    assert mass(ins.uniform(x, phi)) == pytest.approx(1.0, abs=1e-14)
    p = ins.von_mises_fisher(x, phi, [[1, 0, 0], [0, 0, -1]], [0.5, 0.3], kappa=6.0)
    assert mass(p) == pytest.approx(1.0, abs=1e-13)  # kappa = 6 is resolved by nlat = 38
    # overflow-safe for any kappa: a kappa = 1e6 bump is all exp(-large) = 0 off its centre
    p = ins.von_mises_fisher(x, phi, [[0.1, 0.2, 0.3]], [0.5], kappa=1e6)
    assert np.all(np.isfinite(p)) and p.min() == pytest.approx(0.5 * P_INF)
    # histogram of particles: exact unit mass with the grid's own quadrature
    rng = np.random.default_rng(3)
    pts = rng.standard_normal((5000, 3))
    h = ins.from_particles(x, phi, pts)
    assert mass(h) == pytest.approx(1.0, abs=1e-13)
    kde = ins.from_particles(x, phi, pts[:3], [1.0, 2.0, 1.0], kappa=5.0)
    ref = ins.von_mises_fisher(x, phi, pts[:3], [0.25, 0.5, 0.25], kappa=5.0)
    np.testing.assert_allclose(kde, ref, rtol=1e-13)
    # harmonic: mass 1, the requested coefficient
    p = ins.harmonic(x, phi, [(3, 2), (1, 0)], [0.01, 0.02])
    c = s.analyse(p)
    assert c[0].real == pytest.approx(1 / math.sqrt(4 * math.pi), rel=1e-14)  # mass 1
    assert c[s.sht.sh.idx(1, 0)].real == pytest.approx(0.02, rel=1e-12)
    assert abs(c[s.sht.sh.idx(3, 2)]) == pytest.approx(0.01 / math.sqrt(2), rel=1e-12)


def test_token_noise_statistics():
    """Each real coefficient a_lm of N-token noise has variance 1/(4 pi N) (= 1/N in the basis
    sqrt(4 pi) Y_lm): 400 seeds x 63 coefficients (l = 1..7), std of the mean ~ 1/sqrt(25200)."""
    n = 1e4
    s = Spectral(8, 1.0)
    x, phi = s.grid()
    weight = np.where(s.sht.m == 0, 1.0, 2.0)
    sel = (s.sht.l >= 1) & (s.sht.l <= 7)
    vals = []
    for seed in range(400):
        c = s.analyse(ins.token_noise(x, phi, n, seed=seed, cutoff=7))
        vals.append(np.sum(weight[sel] * np.abs(c[sel]) ** 2))
    per_coeff = np.mean(vals) / 63 * 4 * math.pi * n
    assert per_coeff == pytest.approx(1.0, abs=4 / math.sqrt(25200))
    assert ins.token_noise(x, phi, n, seed=5).tobytes() == ins.token_noise(x, phi, n,
                                                                           seed=5).tobytes()


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,param", [
    ({"lmax": 3}, "lmax"),
    ({"lmax": 16, "nlat": 24}, "nlat"),
    ({"lmax": 40, "nlat": 60}, "nlat"),
    ({"lmax": 40, "nphi": 100}, "nphi"),
    ({"lmax": 40, "nphi": 70, "dealias": "none"}, "nphi"),
    ({"beta": -1.0}, "beta"),
    ({"beta": float("nan")}, "beta"),
    ({"cfl": 0.0}, "cfl"),
    ({"cfl": 0.9}, "cfl"),
    ({"model": "xx"}, "model"),
    ({"dealias": "2/3"}, "dealias"),
    ({"filter": (1.0,)}, "filter"),
    ({"filter": (-1.0, 16)}, "filter"),
    ({"beta": 800.0}, "time_unit"),
    ({"integrator": "rk4"}, "integrator"),
])
def test_bad_construction(kwargs, param):
    args = {"lmax": 16, "beta": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=param):
        Spectral(args.pop("lmax"), args.pop("beta"), **args)


def test_bad_run_input():
    s = Spectral(8, 1.0)
    x, phi = s.grid()
    good = ins.uniform(x, phi)
    with pytest.raises(ValueError, match="p0"):
        s.run(good[:, :-1], 1.0)
    bad = good.copy()
    bad[3, 3] = -1.0
    with pytest.raises(ValueError, match="p0"):
        s.run(bad, 1.0)
    with pytest.raises(ValueError, match="t_end"):
        s.run(good, -1.0)
    with pytest.raises(ValueError, match="times"):
        s.run(good, 1.0, [0.5, 2.0])
    with pytest.raises(ValueError, match=r"initial\.amplitude"):
        ins.harmonic(x, phi, (2, 1), 1.0)
    with pytest.raises(ValueError, match=r"initial\.masses"):
        ins.von_mises_fisher(x, phi, [[1, 0, 0], [0, 1, 0]], [0.8, 0.8])
    with pytest.raises(ValueError, match=r"initial\.order"):
        ins.real_harmonic(x, phi, 2, 3)
