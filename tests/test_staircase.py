"""Dynamic metastability on S^1 (seed 000): closed-form merge times, the merge operator, the
rescaled clocks, the staircase of a well-prepared configuration, and the staircase domain
through the CLI."""

import json
import math

import numpy as np
import pytest

from meanfield.analysis.metastability import energy_plateaus
from meanfield.theory.metastability import (
    greedy_staircase,
    merge_time_closed_form,
    rescaled_pair_time,
    staircase_levels,
    well_prepared,
)
from meanfield.theory.reference import two_cluster_gap, two_cluster_merge_time
from solvers.particles.staircase import MergingCircle


@pytest.mark.parametrize("model,masses,unit", [("usa", (0.4, 0.6), "raw"),
                                               ("usa", (0.3, 0.2), "scaled"),
                                               ("sa", (0.5, 0.5), "raw")])
@pytest.mark.parametrize("beta", [2.0, 8.0, 30.0])
def test_closed_form_merge_time_matches_the_ode(model, masses, unit, beta):
    """Ei/E_1 closed form of the two-cluster merge time = quadrature of the law to 1e-8
    (measured 1e-14), and (beta <= 8, where DOP853 resolves the e^{beta cos D} range of
    rates) the ODE D(t) integrated to the closed-form time ends at the target gap to 1e-6."""
    t = merge_time_closed_form(2.0, 1e-3, beta, masses, model, unit)
    assert t == pytest.approx(two_cluster_merge_time(2.0, 1e-3, beta, masses, model, unit),
                              rel=1e-8)
    if beta <= 8:
        gap = two_cluster_gap([t], 2.0, beta, masses, model, unit, rtol=1e-13)[0]
        assert gap == pytest.approx(1e-3, rel=1e-6)


def test_merge_operator_conserves_mass_and_the_usa_centre_of_mass():
    """12 random tokens, USA, beta = 10, physical clock, window 0.02: every merge keeps the
    total mass (1 to 1e-15) and, USA's pair kernel being odd, the angular centre of mass
    sum_i m_i theta_i (unwrapped) to round-off through all merges down to one token."""
    rng = np.random.default_rng(3)
    th = np.sort(rng.uniform(0, 2.5, 12))
    mc = MergingCircle(10.0, "usa", window=0.02, time_unit="scaled", rtol=1e-12,
                       atol=1e-14)
    s0 = mc.initial_state(th)
    s = mc.advance(s0, 0.0, 1e7)
    assert len(s.merges) == 11 and np.count_nonzero(s.mass) == 1
    assert abs(s.mass.sum() - 1.0) < 1e-15
    com0 = float(s0.mass @ s0.theta)
    a = s.mass > 0
    assert abs(float(s.mass[a] @ s.theta[a]) - com0) < 1e-11


def test_seed000_fig2_exact_ode_merges():
    """Notes-000 V1/V3: n = 5, beta = 4, SA, the authors' angles, exact ODE with merges at
    1e-3 rad: intra-cap merges at 5.090, 6.402, 9.038 (the notes' unmerged ODE: 5.09, 6.41,
    9.01 for pairs within 1e-3), final merge at 332.17 (notes 332.2, and the two-cluster law
    from the plateau gives the same time to 1e-6), Ebar on the plateau 0.5204."""
    th = [0.0621971, 0.214323, 1.8191226, 2.911071, -3.0952483]
    mc = MergingCircle(4.0, "sa", window=1e-3, time_unit="raw", rtol=1e-11, atol=1e-13)
    s = mc.advance(mc.initial_state(th), 0.0, 100.0)
    times = [m.s for m in s.merges]
    np.testing.assert_allclose(times, [5.090, 6.402, 9.038], atol=2e-3)
    assert mc.ebar(s) == pytest.approx(0.52037, abs=1e-4)
    a = np.flatnonzero(s.mass > 0)
    gap = abs(math.remainder(s.theta[a[1]] - s.theta[a[0]], 2 * math.pi))
    law = 100.0 + two_cluster_merge_time(gap, 1e-3, 4.0, tuple(s.mass[a]), "sa")
    end = mc.advance(s, 100.0, 400.0)
    assert end.merges[-1].s == pytest.approx(law, rel=1e-6)
    assert end.merges[-1].s == pytest.approx(332.2, abs=0.1)


def test_rescaled_pair_law_and_the_well_prepared_staircase():
    """(6.1) clock, (3.7) normalisation: n = 3, beta = 200, theta0 = (0, 0.3, 1.2): the pair
    reaches the window 1/sqrt(beta log beta) at T = 1.9418498 (notes-000 V8: the exact law
    tan(u/2) = tan(u0/2) beta^{-ct}, c = 2/n^2; measured 5e-13). A well-prepared configuration
    (Def. 6.1: theta_j = 0.15 2^j, beta = 1000) climbs Thm 6.4's levels 1/n + i(i+1)/n^2 =
    0.20, 0.28, 0.44, 0.68, 1: each plateau within 1e-3 (the cross terms between clusters are
    below e^{-beta(1 - cos 0.15)} = 1.3e-5 each), equal to the greedy predictor."""
    mc = MergingCircle(200.0, "usa", clock="closest", normalization="1/N^2", rtol=1e-12,
                       atol=1e-14)
    s = mc.advance(mc.initial_state([0.0, 0.3, 1.2]), 0.0, 3.0)
    law = rescaled_pair_time(0.3, 1 / math.sqrt(200 * math.log(200)), 200.0, 2 / 9)
    assert law == pytest.approx(1.9418498, abs=1e-7)
    assert s.merges[0].s == pytest.approx(law, rel=1e-9)

    th = 0.15 * 2.0 ** np.arange(5)
    assert well_prepared(th, 1000.0) and not well_prepared(
        0.5 * np.array([0, 0.5, 2, 4, 7]) * math.log(2000) / math.sqrt(2000), 2000.0)
    mc = MergingCircle(1000.0, "usa", clock="closest", normalization="1/N^2")
    s, prev, ebar = mc.initial_state(th), 0.0, []
    times = np.geomspace(1e-3, 200.0, 300)
    for t in times:
        s = mc.advance(s, prev, t)
        prev = t
        ebar.append(mc.ebar(s))
    levels = energy_plateaus(times, np.array(ebar))["levels"]
    np.testing.assert_allclose(levels, staircase_levels(5), atol=1e-3)
    np.testing.assert_allclose(greedy_staircase(th)["levels"], staircase_levels(5),
                               atol=1e-15)


def test_staircase_domain_through_the_cli(cli, tmp_path):
    """The Fig. 7 configuration at beta = 2000 on the gradient clock (seed 000 Fig. 4 as the
    authors coded it): run, analyze (plateaus 0.2138, 0.28, 0.44, 0.52, 1 with jumps near
    0.0018, 0.017, 0.041, 0.097: notes-000 V9 0.0015-0.002, 0.016-0.017, 0.039-0.049,
    0.088-0.107; the greedy predictor's levels), plot, a bad key; and the run adapter's
    checkpoint state (save, load into a fresh adapter, continue) gives the same state
    bitwise."""
    import h5py

    cfg = tmp_path / "s.toml"
    cfg.write_text('[model]\ndomain = "staircase"\nbeta = 2000\n[staircase]\nangles = '
                   '[0.0, 0.04249034, 0.16996136, 0.33992272, 0.59486476]\nclock = "gradient"'
                   '\nwindow = 1e-3\nnormalization = "1/N^2"\n[time]\nt_end = 0.3\n'
                   't_first = 1e-5\nn_outputs = 300\n[stop]\nsingle_cluster = true\n')
    res = cli("run", str(cfg), "-o", "s.h5", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(cli("analyze", "s.h5", "--json", cwd=tmp_path).stdout)
    st = out["staircase"]
    np.testing.assert_allclose(st["levels"], [0.2138, 0.28, 0.44, 0.52, 1.0], atol=2e-3)
    np.testing.assert_allclose(st["jumps"], [0.0018, 0.017, 0.041, 0.097], rtol=0.06)
    np.testing.assert_allclose(st["predicted_levels"], [0.2, 0.28, 0.44, 0.52, 1.0],
                               atol=1e-12)
    assert len(out["merges"]) == 4 and out["final_clusters"] == 1
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["log10_physical_time"][-1] > 60 and f.attrs["clock"] == "gradient"
    res = cli("plot", "s.h5", "-o", "figs", cwd=tmp_path)
    assert res.returncode == 0 and (tmp_path / "figs" / "s_staircase.png").exists()
    bad = cli("run", str(cfg), "--set", "staircase.clock=fast", "-o", "x.h5",
              cwd=tmp_path)
    assert bad.returncode == 2 and "staircase.clock" in bad.stderr

    from meanfield import config
    from meanfield.domains import get
    from solvers.stepping import StepStats

    conf, _ = config.resolve(str(cfg), [])
    dom = get("staircase")
    one = dom.problem(conf)
    mid, _ = one.advance(one.initial_state(), 0.0, 0.01, StepStats())
    arrays, scalars = one.save_state(mid, StepStats())
    two = dom.problem(conf)
    back, _ = two.load_state(arrays, scalars)
    a, _ = one.advance(mid, 0.01, 0.05, StepStats())
    b, _ = two.advance(back, 0.01, 0.05, StepStats())
    assert np.array_equal(a.theta, b.theta) and np.array_equal(a.mass, b.mass)
    assert a.log1p_t == b.log1p_t and len(a.merges) == len(b.merges) == 3
