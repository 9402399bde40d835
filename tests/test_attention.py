"""General query/key/value attention and zero temperature (seed 004): the general-kernel
circle drift, beta = inf on the grid and for particles, the Wasserstein diagnostics, the
[attention] configuration and ``meanfield compare``."""

import json
import math

import h5py
import numpy as np
import pytest
from scipy.special import ive

from meanfield import initial
from meanfield.io.reader import open_run
from meanfield.theory.attention import attention_report
from solvers.attention_measures import w2_chordal, w2_to_two_atoms
from solvers.circle import FiniteVolume
from solvers.drifts.attention import GeneralAttention
from solvers.particles import ParticleSystem
from solvers.particles.zero_temperature import ZeroTemperatureSystem
from solvers.stepping import StepStats

TWO_PI = 2 * math.pi


@pytest.mark.parametrize("model,t_end", [("usa", 0.8), ("sa", 12.0)])
def test_identity_matrices_equal_the_convolution_solver(model, t_end):
    """B = V = I: the quadrature drift (band-limited interpolant, trapezoid on 2M points,
    dual-cell face averages) is the convolution drift's discrete operator, so a run through
    clustering takes the same steps and ends within 1e-12 (measured 8e-14)."""
    p0 = initial.white_noise(256, 0.01, seed=1)
    times = np.linspace(0, t_end, 5)
    a = FiniteVolume(256, 5.0, model).run(p0, t_end, times)
    b = FiniteVolume(256, drift=GeneralAttention(5.0, model)).run(p0, t_end, times)
    assert a.steps == b.steps
    assert np.abs(a.density - b.density).max() <= 1e-12 * np.abs(a.density).max()
    assert a.density[-1].max() > 5  # clusters formed: the comparison covers the non-linear phase


@pytest.mark.parametrize("beta", [4.0, 10.0])
def test_isotropic_sa_growth_rate(beta):
    """Mode 3 from 1e-7 under the general-kernel SA solver (B = V = I, M = 512) grows at
    k^2 I_k(beta)/(beta I_0(beta)) to 1e-4 (measured 5.7e-5, second order in dx)."""
    k = 3
    s = FiniteVolume(512, drift=GeneralAttention(beta, "sa"))
    r = s.run(initial.mode(512, k, 1e-7), 3.0, np.linspace(0, 3.0, 7))
    amp = np.abs(np.fft.rfft(r.density, axis=1))[:, k]
    rate = np.polyfit(r.times, np.log(amp), 1)[0]
    assert rate == pytest.approx(k * k * ive(k, beta) / (beta * ive(0, beta)), rel=1e-4)


def _acg_cell_averages(cells: int, t: float, gamma: float = 1.0) -> np.ndarray:
    """Cell averages of f_t(theta) = (1/2 pi) e^{-gamma t}/(sin^2 theta + e^{-2 gamma t}
    cos^2 theta) (notes-004 X2 with E = e_1), by 64-point Gauss-Legendre per cell."""
    g, w = np.polynomial.legendre.leggauss(64)
    dx = TWO_PI / cells
    th = (np.arange(cells)[:, None] + 0.5 * (g[None, :] + 1)) * dx
    f = np.exp(-gamma * t) / (np.sin(th) ** 2 + np.exp(-2 * gamma * t) * np.cos(th) ** 2)
    return (f * w).sum(axis=1) / (2 * TWO_PI)


def test_zero_temperature_grid_converges_to_the_exact_solution_at_second_order():
    """beta = inf, B = I (orthogonal), V = diag(2, 1) (A symmetric, gamma = 1), uniform
    start: fv2 against the closed form at t = 1; L1 errors fall at order >= 1.7 (measured
    1.78 and 1.90 over M = 128 -> 256 -> 512)."""
    errs = []
    for m in (128, 256, 512):
        s = FiniteVolume(m, drift=GeneralAttention(math.inf, "sa", np.eye(2), np.diag([2., 1.])))
        r = s.run(np.full(m, 1 / TWO_PI), 1.0, [0.0, 1.0])
        errs.append(np.abs(r.density[-1] - _acg_cell_averages(m, 1.0)).sum() * TWO_PI / m)
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(orders >= 1.7), orders


def test_zero_temperature_particles_keep_their_projection_and_euler_is_first_order():
    """A symmetric but not diagonal (B rotated, V = B^{-1} S): Pi(x_i(t)) = Pi(x_i(0)) to
    1e-12 along the exact characteristics; Algorithm 2 (euler) also keeps Pi and converges
    to the characteristics at first order (error ratio ~10 for dt = 1e-2 -> 1e-3)."""
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    sym = q @ np.diag([2.0, 0.5, -1.0]) @ q.T                    # A = V B^T
    b = q @ np.diag([1.5, 1.0, 0.7]) @ q.T @ np.array([[1, .2, 0], [0, 1, 0], [0, 0, 1.]])
    v = sym @ np.linalg.inv(b.T)
    rep = attention_report(b, v)
    assert rep.symmetric and rep.multiplicity == 1
    qkv = (np.eye(3), b, v)
    exact = ZeroTemperatureSystem(300, 3, qkv=qkv, integrator="exact", seed=0)
    x0 = exact.uniform_sample(1, 5)
    xe, _ = exact.advance(x0.copy(), 0.0, 2.0, StepStats())
    assert np.nanmax(np.abs(rep.projection(xe[0]) - rep.projection(x0[0]))) < 1e-12
    errs = []
    for dt in (1e-2, 1e-3):
        eu = ZeroTemperatureSystem(300, 3, qkv=qkv, integrator="euler", dt=dt, seed=0)
        xu, _ = eu.advance(x0.copy(), 0.0, 2.0, StepStats())
        assert np.nanmax(np.abs(rep.projection(xu[0]) - rep.projection(x0[0]))) < 1e-12
        errs.append(np.abs(xu - xe).max())
    assert 7 < errs[0] / errs[1] < 13


def test_stationary_states_and_the_one_point_oja_flow():
    """delta_v and (delta_v + delta_{-v})/2 (v an eigenvector of V) do not move at any
    beta, for any B (notes-004 App. B); one token follows x(t) = e^{tV}x0/|e^{tV}x0|."""
    b = np.array([[0.3, 1.2, 0.0], [-0.4, 0.8, 0.5], [0.1, 0.0, 1.1]])
    v = np.diag([-1.0, 1.0, -2.0])
    for beta in (1.0, 100.0):
        s = ParticleSystem(4, 3, beta, "sa", qkv=(np.eye(3), b, v))
        for pts in ([[0, 1, 0]] * 4, [[0, 1, 0], [0, -1, 0]] * 2):
            assert np.abs(s.velocity(np.array([pts], float))).max() <= 1e-14
    one = ParticleSystem(1, 3, 50.0, "sa", qkv=(np.eye(3), b, v), integrator="adaptive",
                         rtol=1e-11, atol=1e-13)
    x0 = np.array([[[0.6, 0.48, 0.64]]])
    x, _ = one.advance(one.check_state(x0), 0.0, 1.0, StepStats())
    ref = np.exp(np.diag(v)) * x0[0, 0]
    np.testing.assert_allclose(x[0, 0], ref / np.linalg.norm(ref), atol=1e-9)


def test_closed_form_w2_to_two_atoms_equals_optimal_transport():
    rng = np.random.default_rng(0)
    th = rng.uniform(0, TWO_PI, 300)
    x = np.stack([np.cos(th), np.sin(th)], axis=1)
    w = rng.random(300)
    w /= w.sum()
    e = np.array([math.cos(0.3), math.sin(0.3)])
    wp = float(w[x @ e > 0].sum()) - 0.05        # not the natural split: the cut moves
    closed = w2_to_two_atoms(x, w, e, wp)
    assert closed == pytest.approx(w2_chordal(x, w, np.array([e, -e]),
                                              np.array([wp, 1 - wp])), abs=1e-10)


def test_mean_field_particles_stay_close_to_the_pde():
    """V = diag(1, 2), B = diag(3, 1), beta = 10, f0 = (1 + 0.5 cos(theta - 1))/(2 pi):
    n i.i.d. tokens against the fv2 solution (M = 512) at t = 1; W_2 sqrt(n) stays bounded:
    the O(n^{-1/2}) sampling error (measured means 1.7, 2.0, 1.4 for n = 100, 400, 1600;
    single draws 0.75 to 2.9), the grid's and the integrator's errors being far below."""
    from solvers.particles import sample_circle_density

    mats = (np.diag([3.0, 1.0]), np.diag([1.0, 2.0]))
    p0 = initial.mode(512, 1, 0.5 / TWO_PI, -1.0)
    pde = FiniteVolume(512, drift=GeneralAttention(10.0, "sa", *mats))
    r = pde.run(p0, 1.0, [0.0, 1.0])
    th = pde.theta
    xg, wg = np.stack([np.cos(th), np.sin(th)], axis=1), r.density[-1] * TWO_PI / 512
    scaled = []
    for n, seeds in ((100, 4), (400, 4), (1600, 2)):
        ps = ParticleSystem(n, 2, 10.0, "sa", qkv=(np.eye(2), *mats), integrator="adaptive",
                            rtol=1e-7, atol=1e-9)
        vals = []
        for seed in range(seeds):
            a = sample_circle_density(p0, n, seed=seed)[0]
            x0 = np.stack([np.cos(a), np.sin(a)], axis=1)[None]
            x, _ = ps.advance(ps.check_state(x0), 0.0, 1.0, StepStats())
            vals.append(w2_chordal(x[0], np.full(n, 1 / n), xg, wg))
        scaled.append(np.mean(vals) * math.sqrt(n))
    assert max(scaled) < 3.5 and max(scaled) / min(scaled) < 2.5, scaled


# --------------------------------------------------------------------------- CLI
ATT = ["--set", "model.model=sa", "--set", "attention.B=[[3.0, 0.0], [0.0, 1.0]]",
       "--set", "attention.V=[[1.0, 0.0], [0.0, 2.0]]"]


def test_general_matrices_through_run_analyze_plot_and_compare(cli, tmp_path):
    """A circle run with [attention] matrices, its beta = inf twin and a particle run go
    through run, analyze --json, plot and compare; the files hold the matrices, their
    spectral data and the seed-004 series."""
    grid = ["--set", "discretization.cells=256", "--set", "initial.kind=mode", "--set",
            "initial.mode=1", "--set", f"initial.amplitude={0.5 / TWO_PI}", "--set",
            "initial.phase=-1.0", "--set", "time.t_end=6", "--set", "time.n_outputs=7",
            "--quiet"]
    res = cli("run", *ATT, *grid, "--set", "model.beta=50", "-o", "g.h5", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = cli("run", *ATT, *grid, "--set", "model.beta=inf", "-o", "gi.h5", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "gi.h5", "r") as f:
        rep = json.loads(f.attrs["attention_report"])
        assert rep["gap_gamma"] == 1.0 and rep["circle_w2_rate"] == pytest.approx(1 / 3)
        assert f.attrs["drift"] == "attention" and np.isinf(f.attrs["model.beta"])
        w2 = f["w2_pushforward"][()]
        assert w2[-1] < 0.5 * w2[0] and np.all(np.diff(w2) < 0)
    res = cli("analyze", "g.h5", "--json", cwd=tmp_path)
    att = json.loads(res.stdout)["attention"]
    assert att["concentrated_on_E"] is not None and att["log_beta"] == pytest.approx(
        math.log(50))
    res = cli("plot", "g.h5", "-o", "figs", cwd=tmp_path)
    assert res.returncode == 0 and (tmp_path / "figs" / "g_attention.png").stat().st_size > 1e4
    res = cli("run", *ATT, "--set", "model.domain=particles", "--set", "model.beta=inf",
              "--set", "particles.integrator=exact", "--set", "particles.count=300",
              "--set", "time.t_end=6", "--set", "time.n_outputs=7", "--quiet", "-o", "p.h5",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = cli("compare", "gi.h5", "p.h5", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["times"] == [0, 1, 2, 3, 4, 5, 6] and all(0 < w < 1.5 for w in out["w2"])
    with open_run(tmp_path / "p.h5") as run:
        d = run.diagnostics
        assert d["align_E"][-1, 0] > 0.9 and "w2_pushforward" in d


@pytest.mark.parametrize("sets,name", [
    (["--set", "model.beta=inf", "--set", "attention.B=[[1.0, 2.0], [0.5, 1.0]]"],
     "attention"),                                                      # B singular
    (["--set", "model.domain=sphere", "--set", "attention.B=[[1.0, 0, 0], [0, 1, 0], "
      "[0, 0, 2]]"], "attention"),
    (["--set", "model.domain=zonal", "--set", "model.beta=inf"], "model.beta"),
    (["--set", "model.domain=particles", "--set", "particles.qkv=gaussian", "--set",
      "attention.B=[[1.0, 0], [0, 2.0]]"], "particles.qkv"),
    (["--set", "attention.B=[[1.0, 0], [0, 2.0]]", "--set", "attention.ensemble=gaussian"],
     "attention.ensemble"),
    (["--set", "attention.B=[[1.0, 0, 0]]"], "attention.B"),
    (["--set", "model.beta=-inf"], "model.beta"),
    (["--set", "model.domain=particles", "--set", "particles.integrator=exact"],
     "particles.integrator"),
])
def test_bad_attention_input_is_one_line(cli, tmp_path, sets, name):
    res = cli("run", *sets, "--set", "time.t_end=0.01", "--quiet", "-o", "x.h5", cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "x.h5").exists()


def _exact_sa_velocity(theta, beta, b, v, density, n=20000):
    """v(theta) = <tau, V N>/Z for the smooth density by a fine trapezoid (max-shifted)."""
    phi = np.arange(n) * TWO_PI / n
    y = np.stack([np.cos(phi), np.sin(phi)])
    x = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    tau = np.stack([-np.sin(theta), np.cos(theta)], axis=1)
    s = beta * (x @ (b @ y))
    w = np.exp(s - s.max(axis=1, keepdims=True)) * density(phi)[None, :]
    return (w * (tau @ (v @ y))).sum(1) / w.sum(1)


@pytest.mark.parametrize("beta", [100.0, 1000.0])
def test_general_face_velocity_is_second_order_for_anisotropic_b(beta):
    """B = diag(3, 1), V = diag(1, 2): |B^T x| varies along the circle, so e^{beta |B^T x|}
    changes by e^{beta dx |s'|} (up to e^16 at beta = 1000, M = 512) across one cell; the
    shifted face averages keep the SA face velocity within O(dx^2) of the exact velocity of
    the smooth density (measured 1.4e-4, 3.5e-5, 8.7e-6 at M = 256, 512, 1024 for both
    betas), and at beta = 1000 within
    1e-3 of the zero-temperature field (the O(1/beta) of notes-004 §3.10d)."""
    b, v = np.diag([3.0, 1.0]), np.diag([1.0, 2.0])

    def density(phi):
        return (1 + 0.5 * np.cos(phi - 1.0)) / TWO_PI

    errs = []
    for m in (256, 512):
        s = FiniteVolume(m, drift=GeneralAttention(beta, "sa", b, v))
        faces = s.theta + 0.5 * s.dx
        got = s.face_velocity(s.split(initial.mode(m, 1, 0.5 / TWO_PI, -1.0)))
        errs.append(np.abs(got - _exact_sa_velocity(faces, beta, b, v, density)).max())
    assert errs[1] < errs[0] / 3 and errs[1] < 5e-3, errs
    if beta == 1000.0:
        inf = GeneralAttention(math.inf, "sa", b, v).zero_temperature_velocity(faces)
        assert np.abs(got - inf).max() < 1e-3


def test_vmf_mixture_moments_and_the_config_kind(cli, tmp_path):
    """vmf_mixture: unit vectors whose mean is the mixture's mean resultant
    sum_i w_i A_d(kappa_i |mu_i|) mu_i/|mu_i| (A_3(k) = coth k - 1/k), within Monte Carlo
    error; non-unit directions concentrate kappa |mu| (seed 004's printed mu_i)."""
    from solvers.particles import vmf_mixture

    mus = np.array([[1, -0.3, -0.2], [0, 1, -0.3], [-1, 1, 1.0]])
    ks = np.array([2.0, 10.0, 5.0])
    x = vmf_mixture(mus, ks, None, 20000, seed=1)[0]
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0)
    n = np.linalg.norm(mus, axis=1)
    a = 1 / np.tanh(ks * n) - 1 / (ks * n)
    np.testing.assert_allclose(x.mean(0), (a[:, None] * mus / n[:, None]).mean(0), atol=0.015)
    res = cli("run", "--set", "model.domain=particles", "--set", "model.dim=3", "--set",
              "initial.kind=vmf", "--set", "initial.directions=[[0, 0, 1.0]]", "--set",
              "initial.kappas=[50.0]", "--set", "particles.count=64", "--set",
              "time.t_end=0.01", "--set", "time.n_outputs=2", "--quiet", "-o", "v.h5",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "v.h5", "r") as f:
        assert f["positions"][0, 0, :, 2].mean() > 0.95     # A_3(50) = 0.98
    res = cli("run", "--set", "model.domain=particles", "--set", "initial.kind=vmf",
              "--set", "initial.directions=[[0, 0, 1.0]]", "--quiet", "-o", "w.h5",
              cwd=tmp_path)
    assert res.returncode == 2 and "initial.directions" in res.stderr


def test_clustered_density_keeps_the_velocity_bound_at_large_beta():
    """Two narrow clusters at +-e_2 (kappa = 2000, 3 cells wide at M = 512), beta = 1000,
    B = diag(3, 1), V = diag(1, 2): the band-limited quadrature rings away from the clusters,
    so Z cancels there; those rows fall back to log-sum-exp and |v| <= sigma_max(V) = 2
    everywhere (without the fallback the ringing gave |v| up to 2.8), and inside the clusters
    the velocity contracts them."""
    b, v = np.diag([3.0, 1.0]), np.diag([1.0, 2.0])
    s = FiniteVolume(512, drift=GeneralAttention(1000.0, "sa", b, v))
    p = initial.von_mises_bumps(512, [math.pi / 2, 3 * math.pi / 2], kappa=2000.0)
    q = s.split(p)
    for vel in (s.face_velocity(q), s.centre_velocity(q)):
        assert np.all(np.isfinite(vel)) and np.abs(vel).max() <= 2.0 * (1 + 1e-12)
    off = np.angle(np.exp(1j * (s.theta - math.pi / 2)) * np.sign(np.sin(s.theta)))
    near = np.abs(off) < 0.05
    assert np.all(s.centre_velocity(q)[near] * off[near] < 0)
