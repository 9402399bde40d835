"""Causal attention on S^1 (seed 002): the label-sliced mean field (solvers.causal), its
linear theory (Hardy operator), Renyi parking counts, and the causal domain through the CLI."""

import json
import math

import numpy as np
import pytest
from scipy.special import ive

from meanfield import initial
from meanfield.analysis.renyi import captured_fraction, renyi_centres
from meanfield.theory.causal import (
    RENYI_CONSTANT,
    cluster_scales,
    hardy_growth_rate,
    renyi_expected_strong,
)
from solvers.causal import CausalCircle
from solvers.circle import FiniteVolume
from solvers.stepping import StepStats

TWO_PI = 2 * math.pi


@pytest.mark.parametrize("model,t_end", [("sa", 12.0), ("usa", 0.8)])
def test_one_slice_is_full_attention(model, t_end):
    """S = 1 (self weight 1) is the full-attention fv2 solver through clustering: same steps,
    densities equal to 1e-12 (measured 5e-14 SA, 1e-16 USA)."""
    p0 = initial.white_noise(256, 0.01, seed=1)
    ref = FiniteVolume(256, 5.0, model).run(p0, t_end, [0.0, t_end])
    c = CausalCircle(256, 1, 5.0, model)
    stats = StepStats()
    q, _ = c.advance(c.split(c.check_density(p0)), 0.0, t_end, stats)
    assert stats.steps == ref.steps
    assert np.abs(c.join(q)[0] - ref.density[-1]).max() <= 1e-12 * ref.density[-1].max()


def test_uniform_is_stationary_and_earlier_slices_ignore_later_ones():
    """Uniform data in every slice: zero right-hand side. With a fixed step, slices 1..S-1
    are bitwise the same whatever the last slice holds (the mask j <= k)."""
    c = CausalCircle(256, 8, 9.0, "sa", dt=1e-2)
    assert np.abs(c.rhs(c.split(np.full((8, 256), 1 / TWO_PI)))).max() == 0.0
    p = np.stack([initial.white_noise(256, 0.01, seed=s) for s in range(8)])
    other = p.copy()
    other[-1] = initial.white_noise(256, 0.01, seed=99)
    a, _ = c.advance(c.split(p), 0.0, 3.0, StepStats())
    b, _ = c.advance(c.split(other), 0.0, 3.0, StepStats())
    assert np.array_equal(a[:-1], b[:-1]) and not np.array_equal(a[-1], b[-1])


@pytest.mark.parametrize("g", [1.0, 2.0, 3.0])
def test_label_profiles_grow_at_the_hardy_rates(g):
    """Mode 3 at beta = 4 with the label profile s^{g-1} (S = 64 midpoint slices, self weight
    1/2, M = 512): each slice's instantaneous growth rate is lambda_3/g to 1e-3 for s >= 1/2
    (measured 5.6e-5, 1.8e-4, 4.2e-4: the fv2 error and the midpoint rule in s); g = 1 holds
    in every slice."""
    m, s_count = 3, 64
    c = CausalCircle(512, s_count, 4.0, "sa", self_weight=0.5)
    s = (np.arange(s_count) + 0.5) / s_count
    cos = np.cos(m * c.theta)
    q = (1e-7 * s ** (g - 1))[:, None] * cos[None, :]
    rate = (c.rhs(q) @ cos) / (q @ cos)
    pred = hardy_growth_rate(m, 4.0, g)
    assert pred == pytest.approx(m * m * ive(m, 4.0) / (4.0 * ive(0, 4.0)) / g, rel=1e-12)
    sel = s >= 0.5 if g > 1 else slice(None)
    assert np.abs(rate[sel] / pred - 1).max() < 1e-3


def test_renyi_counts_match_parking_theory():
    """Strong Renyi centres of n = 200 uniform tokens (delta = 0.5): mean over 2000 draws
    within 4 standard errors of (pi/delta)(1 - (1 - delta/pi)^n) = 6.283 (measured 6.297 +-
    0.022); Renyi centres of 20000 tokens at delta = 0.05: 0.7476 per 2 pi/delta (Renyi's
    constant; measured 0.74763 +- 0.0029 over 40 draws)."""
    rng = np.random.default_rng(0)
    strong = [renyi_centres(rng.uniform(0, TWO_PI, 200), 0.5, strong=True).size
              for _ in range(2000)]
    assert abs(np.mean(strong) - renyi_expected_strong(200, 0.5)) < 4 * np.std(strong) / \
        math.sqrt(2000)
    d = 0.05
    counts = [renyi_centres(rng.uniform(0, TWO_PI, 20000), d).size for _ in range(40)]
    assert np.mean(counts) / (TWO_PI / d) == pytest.approx(RENYI_CONSTANT, abs=0.01)
    x = rng.uniform(0, TWO_PI, 300)
    r, st = renyi_centres(x, 0.3), renyi_centres(x, 0.3, strong=True)
    assert r[0] == 0 and set(st) <= set(r)                  # strong centres are Renyi centres
    assert captured_fraction(x, r, 0.3) == 1.0              # jammed: every token is near one
    sc = cluster_scales(64.0)
    assert sc["delta"] == 0.5 and sc["renyi"] == pytest.approx(9.39, abs=0.01)
    assert sc["strong_renyi"] == pytest.approx(6.28, abs=0.01) and sc["k_max"] == 11


def test_causal_domain_through_the_cli(cli, tmp_path):
    """model.domain = "causal": run (independent noise per slice), analyze --json, plot
    (slice space-time maps), compare (label-averaged densities) and a one-line error."""
    args = ["run", "--set", "model.domain=causal", "--set", "model.beta=9", "--set",
            "causal.slices=8", "--set", "discretization.cells=256", "--set",
            "time.t_end=11", "--set", "time.n_outputs=12", "--quiet"]
    res = cli(*args, "-o", "c.h5", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = cli(*args, "--set", "initial.seed=5", "-o", "d.h5", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(cli("analyze", "c.h5", "--json", cwd=tmp_path).stdout)
    assert out["domain"] == "causal" and out["final_clusters"] >= 3 and out["mass_drift"] < 1e-13
    res = cli("plot", "c.h5", "-o", "figs", cwd=tmp_path)
    assert res.returncode == 0 and (tmp_path / "figs" / "c_slices.png").exists()
    res = cli("compare", "c.h5", "d.h5", "--json", "--every", "8", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["w2"][0] < 0.05
    bad = cli(*args, "--set", "initial.kind=tokens", "-o", "x.h5", cwd=tmp_path)
    assert bad.returncode == 2 and "initial.kind" in bad.stderr


def test_masked_particles_token_one_and_the_two_token_law():
    """Causal particles (mask j <= k): token 1 attends only to itself and follows the Oja
    flow x(t) = e^{tV} x0/|e^{tV} x0| for any B (seed 002 Lemma 3.1); on S^1 with Q = K = V = I
    token 1 stays put and the gap D of two tokens obeys dD/dt = -h(D)/(1 + e^{beta(cos D -
    1)}), h(D) = sin D e^{beta(cos D - 1)} (notes-002 V3), to the integrator's tolerance."""
    from scipy.integrate import solve_ivp

    from solvers.particles import ParticleSystem

    b = np.array([[0.3, 1.2, 0.0], [-0.4, 0.8, 0.5], [0.1, 0.0, 1.1]])
    v = np.diag([-1.0, 1.0, -2.0])
    ps = ParticleSystem(5, 3, 9.0, "sa", mask="causal", qkv=(np.eye(3), b, v),
                        integrator="adaptive", rtol=1e-11, atol=1e-13)
    x0 = ps.uniform_sample(1, 3)
    x, _ = ps.advance(x0.copy(), 0.0, 1.5, StepStats())
    ref = np.exp(1.5 * np.diag(v)) * x0[0, 0]
    np.testing.assert_allclose(x[0, 0], ref / np.linalg.norm(ref), atol=1e-9)

    beta = 9.0
    two = ParticleSystem(2, 2, beta, "sa", mask="causal", integrator="adaptive", rtol=1e-11,
                         atol=1e-13)
    th0 = np.array([[0.4, 1.3]])
    th, _ = two.advance(two.check_state(th0), 0.0, 20.0, StepStats())

    def law(_t, d):
        e = np.exp(beta * (np.cos(d) - 1))
        return -np.sin(d) * e / (1 + e)

    gap = solve_ivp(law, (0, 20.0), [0.9], rtol=1e-12, atol=1e-14).y[0, -1]
    assert th[0, 0] == pytest.approx(0.4, abs=1e-12)
    assert th[0, 1] - th[0, 0] == pytest.approx(gap, rel=1e-7)


def test_hybrid_tokens_are_exact_particles_and_the_hybrid_converges_to_particles():
    """Hybrid (K = 8 exact tokens ahead of the slices): the tokens follow the masked particle
    system of their own (2e-8 with the grid's SSP-RK3 steps); started from the same n = 100
    tokens (the later 92 smoothed per slice, kappa = 200), the hybrid's token-averaged density
    approaches the particle run at t = 4 (beta = 9) as the slices refine: W_1 = 0.090, 0.047,
    0.037 for S = 4, 23, 92 (one token per slice; the floor is the smoothing and the grid)."""
    from solvers.causal import slices_from_tokens
    from solvers.clusters import wasserstein1_circle
    from solvers.particles import ParticleSystem

    beta, k, t_end, m, n = 9.0, 8, 4.0, 256, 100
    th0 = np.random.default_rng(0).uniform(0, TWO_PI, n)
    ps = ParticleSystem(n, 2, beta, "sa", mask="causal", integrator="adaptive", rtol=1e-8,
                        atol=1e-10)
    x, _ = ps.advance(ps.check_state(th0[None]), 0.0, t_end, StepStats())
    first = ParticleSystem(k, 2, beta, "sa", mask="causal", integrator="adaptive",
                           rtol=1e-12, atol=1e-14)
    xk, _ = first.advance(first.check_state(th0[None, :k]), 0.0, t_end, StepStats())
    hist = np.bincount((np.mod(x[0], TWO_PI) / TWO_PI * m).astype(int), minlength=m) * m / (
        TWO_PI * n)
    w1 = []
    for s in (4, 23):
        p0, w = slices_from_tokens(th0[k:], s, m, 200.0)
        c = CausalCircle(m, w, beta, "sa", tokens=k, token_mass=k / n, self_weight=0.5)
        c.set_tokens(th0[:k])
        st, _ = c.advance(c.split(p0), 0.0, t_end, StepStats())
        assert np.abs(c.token_angles(st) - xk[0]).max() < 1e-6
        assert c.mass_of(c.join(st)) + c.token_mass == pytest.approx(1.0, abs=1e-13)
        w1.append(wasserstein1_circle(c.token_density(st), hist))
    assert w1[1] < 0.7 * w1[0] and w1[1] < 0.06, w1


def test_hybrid_run_through_the_cli_resumes_exactly(cli, tmp_path):
    """[causal] tokens = 8 of a sequence of 200: the tokens seed clusters in uniform slices
    (the Renyi mechanism inside a mean-field run), are stored as token_angle(time, token), and
    a run stopped by its wall-clock budget resumes to the uninterrupted file's numbers."""
    import h5py

    args = ["run", "--set", "model.domain=causal", "--set", "model.beta=9", "--set",
            "causal.slices=8", "--set", "causal.tokens=8", "--set", "causal.sequence=200",
            "--set", "initial.kind=uniform", "--set", "discretization.cells=256", "--set",
            "time.t_end=12", "--set", "time.n_outputs=13", "--quiet"]
    assert cli(*args, "-o", "ref.h5", cwd=tmp_path).returncode == 0
    res = cli(*args, "--set", "stop.wall_seconds=1.5", "--set", "output.checkpoint_seconds=0",
              "-o", "cut.h5", cwd=tmp_path)
    for _ in range(40):                  # the budget is part of the config: resume until done
        if res.returncode != 75:
            break
        res = cli("run", "--resume", "cut.h5", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    with h5py.File(tmp_path / "ref.h5", "r") as a, h5py.File(tmp_path / "cut.h5", "r") as b:
        np.testing.assert_array_equal(a["density"][()], b["density"][()])
        np.testing.assert_array_equal(a["token_angle"][()], b["token_angle"][()])
        assert a["token_angle"].shape == (13, 8)
    out = json.loads(cli("analyze", "ref.h5", "--json", cwd=tmp_path).stdout)
    assert out["final_clusters"] >= 2 and out["exit_time"] is not None


def test_table_one_types_from_v_and_the_configuration_classifier():
    """seed 002 Table 1 from V alone, and the classifier on synthetic final states."""
    from meanfield.analysis.configuration import classify_configuration
    from meanfield.theory.causal import final_configuration

    types = [final_configuration(np.diag(d))["type"] for d in
             ([1, 1, 1.0], [1, 1, 0.0], [1, 0, 0.0], [-1, -1, -3.0], [-1, -3, -3.0])]
    assert types == ["first-token point", "one point in L", "two points +-xi",
                     "cloud around L", "two clouds around +-xi"]
    rot = np.array([[1, -1, 0], [1, 1, 0], [0, 0, 0.5]])          # lambda_max = 1 +- i
    assert final_configuration(rot)["type"] == "rotating"
    rng = np.random.default_rng(1)
    e1 = np.eye(3)[:, :1]
    point = np.tile([0.6, 0.8, 0.0], (10, 1))
    assert classify_configuration(point, None)["type"] == "one point"
    pm = np.concatenate([np.tile([1.0, 0, 0], (5, 1)), np.tile([-1.0, 0, 0], (7, 1))])
    assert classify_configuration(pm, e1)["type"] == "two points"
    clouds = pm + 0.2 * rng.standard_normal(pm.shape) * [0, 1, 1]
    clouds /= np.linalg.norm(clouds, axis=1, keepdims=True)
    assert classify_configuration(clouds, e1)["type"] == "two clouds"
    ring = np.stack([np.cos(np.arange(12)), np.sin(np.arange(12)), np.zeros(12)], axis=1)
    assert classify_configuration(ring, np.eye(3)[:, :2])["type"] == "cloud"


def test_masked_particle_runs_plot_tokens_by_index_with_their_renyi_centres(cli, tmp_path):
    args = ["run", "--set", "model.domain=particles", "--set", "model.model=sa", "--set",
            "particles.mask=causal", "--set", "particles.count=60", "--set", "model.beta=16",
            "--set", "time.t_end=5", "--set", "time.n_outputs=11", "--quiet", "-o", "m.h5"]
    assert cli(*args, cwd=tmp_path).returncode == 0
    res = cli("plot", "m.h5", "-o", "figs", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "figs" / "m_trajectories.png").stat().st_size > 10_000


B_GEN = np.array([[1.0, 0.3], [-0.2, 0.8]])
V_GEN = np.array([[1.0, 0.1], [0.0, 0.7]])


@pytest.mark.parametrize("model,t_end", [("sa", 6.0), ("usa", 0.5)])
def test_general_matrices_one_slice_is_the_attention_solver(model, t_end):
    """General B = Q^T K and V (the attention drift's kernel matrices applied to every prefix
    sum): one slice equals the full-attention fv2 solver with the ``attention`` drift, same
    steps, to 1e-12 (measured 1e-16 SA, 4e-18 USA)."""
    from solvers.drifts.attention import GeneralAttention

    p0 = initial.white_noise(128, 0.01, seed=1)
    ref = FiniteVolume(128, drift=GeneralAttention(5.0, model, B_GEN, V_GEN)).run(
        p0, t_end, [0.0, t_end])
    c = CausalCircle(128, 1, 5.0, model, B=B_GEN, V=V_GEN)
    stats = StepStats()
    q, _ = c.advance(c.split(c.check_density(p0)), 0.0, t_end, stats)
    assert stats.steps == ref.steps
    assert np.abs(c.join(q)[0] - ref.density[-1]).max() <= 1e-12 * ref.density[-1].max()


def test_general_matrices_with_tokens_and_centres_keep_the_mask_and_oja_flow():
    """General B, V with K = 3 hybrid tokens and two frozen centres: the uniform part of the
    mass is exact per slice, earlier slices are bitwise independent of the last one, and a
    token that attends only to itself (no centres) follows x(t) = e^{tV}x0/|e^{tV}x0| to the
    SSP-RK3 order (dt = 1e-2: 1e-7)."""
    from scipy.linalg import expm

    kw = {"B": B_GEN, "V": V_GEN, "dt": 1e-2}
    c = CausalCircle(128, 4, 9.0, "sa", tokens=3, token_mass=0.1, centres=[0.0, 2.0],
                     centre_mass=[0.01, 0.01], **kw)
    c.set_tokens([0.3, 1.0, 4.0])
    p = np.stack([initial.white_noise(128, 0.01, seed=s) for s in range(4)])
    other = p.copy()
    other[-1] = initial.white_noise(128, 0.01, seed=99)
    a, _ = c.advance(c.split(p), 0.0, 2.0, StepStats())
    b, _ = c.advance(c.split(other), 0.0, 2.0, StepStats())
    pa, pb = c.join(a), c.join(b)
    assert np.array_equal(pa[:-1], pb[:-1]) and not np.array_equal(pa[-1], pb[-1])
    assert np.array_equal(c.token_angles(a), c.token_angles(b))
    assert np.abs(pa.sum(axis=1) * c.dx - 1).max() < 1e-13 and c.min_density(a) >= 0
    solo = CausalCircle(128, 2, 9.0, "sa", tokens=2, token_mass=0.1, **kw)
    solo.set_tokens([0.3, 2.0])
    st, _ = solo.advance(solo.split(np.full((2, 128), 1 / TWO_PI)), 0.0, 2.0, StepStats())
    x = expm(2.0 * V_GEN) @ np.array([math.cos(0.3), math.sin(0.3)])
    assert abs(solo.token_angles(st)[0] - math.atan2(x[1], x[0])) < 1e-7


def test_frozen_centres_capture_every_token():
    """Seed 002 Thm 5.2 (notes-002 V13): beta = 15, centres 0, 2 pi/3, 4 pi/3 with a_j = 1
    (spacing 2.09 > c beta^{-1/2} = 1.678 for c = 6.5), eps = 0.1. Particles (n = 200 causal
    tokens after the frozen keys): at t = 100 every token is within eps beta^{-1/2} = 0.0258
    rad of a centre (measured 1e-7) and the centres have not moved. Causal PDE with one slice
    per token (S = n = 30, mass a_j/n per centre, M = 256): by t = 40 no slice keeps mass
    farther than 0.0258 + dx from a centre. With 5 tokens per slice (S = 6) a slice's own
    mass (1/6) outweighs a centre's (1/30) and it clusters between the centres: over 10 % of
    the mass stays away, the reason the PDE needs slices no heavier than the centres."""
    from solvers.particles import ParticleSystem

    beta, n = 15.0, 200
    cen = np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    ps = ParticleSystem(n + 3, 2, beta, "sa", mask="causal", masses=np.ones(n + 3), frozen=3,
                        integrator="adaptive", rtol=1e-7, atol=1e-9)
    x0 = np.concatenate([cen, np.random.default_rng(0).uniform(0, TWO_PI, n)])
    x, _ = ps.advance(ps.check_state(x0[None]), 0.0, 100.0, StepStats())
    dist = np.abs(np.angle(np.exp(1j * (x[0, 3:, None] - cen[None, :])))).min(axis=1)
    assert dist.max() < 0.1 / math.sqrt(beta)
    assert np.array_equal(x[0, :3], cen)

    far = []
    for s, t_end in ((30, 40.0), (6, 10.0)):
        c = CausalCircle(256, s, beta, "sa", centres=cen, centre_mass=np.full(3, 1 / 30))
        p = np.stack([initial.white_noise(256, 0.01, seed=k) for k in range(s)])
        q, _ = c.advance(c.split(p), 0.0, t_end, StepStats())
        d = np.abs(np.angle(np.exp(1j * (c.theta[:, None] - cen[None, :])))).min(axis=1)
        far.append((c.join(q)[:, d > 0.1 / math.sqrt(beta) + c.dx] * c.dx).sum(axis=1))
    assert far[0].max() < 1e-8
    assert c.weights @ far[1] > 0.1


def test_frozen_centres_and_token_order_through_the_cli(cli, tmp_path):
    """[frozen] centres for masked particles and the causal domain with [attention] matrices:
    runs, the frozen tokens stored first and unmoved, and ``analyze`` reporting the Renyi
    centres, captured fractions, centre drift and the Table 1 prediction from V."""
    import h5py

    cfg = tmp_path / "frozen.toml"
    cfg.write_text('[model]\ndomain = "particles"\nbeta = 15\nmodel = "sa"\n'
                   '[particles]\ncount = 100\nmask = "causal"\nintegrator = "adaptive"\n'
                   'rtol = 1e-7\natol = 1e-9\n[frozen]\ncentres = [0.0, 2.0943951023931953, '
                   '4.1887902047863905]\n[time]\nt_end = 100\nn_outputs = 5\n')
    res = cli("run", str(cfg), "-o", "p.h5", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "p.h5") as f:
        x = f["angles"][()]
        assert f.attrs["frozen_tokens"] == 3 and x.shape[-1] == 103
        assert np.array_equal(x[-1, 0, :3], x[0, 0, :3])
    tok = json.loads(cli("analyze", "p.h5", "--json", cwd=tmp_path).stdout)["token_order"]
    assert tok["delta"] == pytest.approx(4 / math.sqrt(15))
    assert tok["renyi_captured"][-1] == 1.0 and tok["predicted_final"] == "first-token point"
    args = ["run", "--set", "model.domain=causal", "--set", "model.beta=9", "--set",
            "causal.slices=4", "--set", "discretization.cells=64", "--set", "time.t_end=2",
            "--set", "attention.V=[[1.0, 0.1], [0.0, 0.7]]", "--set", "frozen.centres=[1.0]",
            "--quiet", "-o", "c.h5"]
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "c.h5") as f:
        assert f.attrs["drift"] == "causal general attention"
        assert list(f.attrs["frozen_centres"]) == [1.0]
    bad = cli(*args[:-1], "c2.h5", "--set", "frozen.weights=[1, 2]", cwd=tmp_path)
    assert bad.returncode == 2 and "frozen.weights" in bad.stderr and not (
        tmp_path / "c2.h5").exists()


def test_hybrid_sweep_over_beta_and_seeds(cli, tmp_path):
    """`meanfield sweep` over causal hybrid runs (2 beta x 2 seeds, 2 processes): one file per
    run, every run complete with the slices' mass exact and its clusters counted."""
    import csv

    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\ndomain = "causal"\n[causal]\nslices = 8\ntokens = 8\n'
                   'sequence = 200\n[discretization]\ncells = 128\n[initial]\nkind = "uniform"'
                   '\n[time]\nt_end = 6\nn_outputs = 7\n')
    res = cli("sweep", str(cfg), "--param", "model.beta=9,16", "--param", "initial.seed=0:2",
              "-o", "sw", "--jobs", "2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((tmp_path / "sw" / "summary.csv").open()))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"complete"}
    assert all(float(r["mass_drift"]) < 1e-13 and int(r["final_clusters"]) >= 3 for r in rows)
