"""Plateaus to one cluster and their cross-check against particles (make run's last stage):
quantile placement, merge-refined plateau ends, stop.single_cluster, meanfield.crosscheck."""

import numpy as np
import pytest

from meanfield import initial
from meanfield.analysis.metastability import metastable_intervals, refine_with_events
from meanfield.crosscheck import compare
from meanfield.io.reader import open_run
from solvers.clusters import wasserstein1_circle
from solvers.particles import quantile_circle_density

TWO_PI = 2 * np.pi


def test_quantile_placement_is_within_w1_of_the_density():
    """N tokens at F^{-1}((i + 1/2)/N): the empirical measure is W_1-close to the density
    (<= pi/N for the midpoint quantiles: each token carries mass 1/N over at most half a
    quantile cell), so every Fourier coefficient (e^{ik theta} is k-Lipschitz) is within
    k pi/N; measured 0.06/N to 0.2/N for k = 1..5."""
    p = initial.von_mises_bumps(512, [1.0, 3.0, 5.0], kappa=20.0, masses=[0.5, 0.3, 0.2])
    n = 4096
    x = quantile_circle_density(p, n)
    assert np.all(np.diff(x) >= 0) and 0 <= x[0] and x[-1] < TWO_PI
    h = np.bincount((x / TWO_PI * 512).astype(int), minlength=512) * 512 / (TWO_PI * n)
    assert wasserstein1_circle(h, p) <= np.pi / n + 2 * np.pi / 512
    dx = TWO_PI / 512
    theta = (np.arange(512) + 0.5) * dx
    for k in (1, 2, 3, 5):
        emp = np.mean(np.exp(1j * k * x))
        # cell averages: the exact Fourier coefficient of the piecewise-constant density
        ref = np.sum(p * np.exp(1j * k * theta)) * dx * np.sinc(k * dx / TWO_PI)
        assert abs(emp - ref) <= k * np.pi / n


def test_plateau_ends_are_refined_to_merge_events():
    t = np.array([0.0, 1.0, 2.0, 4.0, 8.0, 16.0])
    counts = np.array([0, 3, 3, 2, 2, 1])
    iv = refine_with_events(metastable_intervals(t, counts), np.array([3.1, 11.0]), 16.0)
    assert [(v["k"], v["t_start"], v["t_end"], v["open"]) for v in iv] == [
        (3, 1.0, 3.1, False), (2, 3.1, 11.0, False), (1, 11.0, 16.0, True)]


@pytest.fixture(scope="module")
def run_to_one_cluster(tmp_path_factory):
    """beta = 4 USA noise on M = 512 to one cluster through the CLI (log schedule,
    stop.single_cluster): the make run setting."""
    from tests.conftest import run_cli

    d = tmp_path_factory.mktemp("one")
    path = d / "run.h5"
    proc = run_cli("run", "--quiet", "--set", "model.beta=4", "--set", "discretization.cells=512",
                   "--set", "time.schedule=\"log\"", "--set", "time.t_first=0.01",
                   "--set", "time.t_end=1e6", "--set", "time.n_outputs=161",
                   "--set", "time.diagnostics_per_output=2", "--set", "stop.single_cluster=true",
                   "--output", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "one cluster left" in proc.stdout
    return path


def test_run_stops_at_one_cluster_with_closed_plateaus(run_to_one_cluster):
    with open_run(run_to_one_cluster) as run:
        res = run.analyze()
        t_last = float(run.times[-1])
    assert res["final_clusters"] == 1 and t_last < 1e3  # stopped long before t_end = 1e6
    assert res["first_plateau_clusters"] == 3 == res["k_max_predicted"]
    # every plateau reported is closed (bounded by merges), the last merge is the end state
    assert res["metastable"] and not any(p["open"] for p in res["metastable"])
    assert res["metastable"][-1]["t_end"] == pytest.approx(res["merges"][-1]["t"])
    assert res["one_cluster_time"] == pytest.approx(res["merges"][-1]["t"])
    assert res["first_plateau_length"] > 0


def test_plateaus_agree_with_particles_from_the_same_density(run_to_one_cluster):
    """Particles (N = 2048 at the quantiles of the run's initial density, then their
    collapsed clusters as weighted particles) reproduce the PDE's plateau sequence; the
    merge times agree to 5 % at M = 512 (measured 0.8 % for 3 -> 2 and 2.8 % for 2 -> 1;
    the PDE converges to the particle values: 101.5, 101.3 at M = 1024, 2048 against
    101.7 for the final merge)."""
    res = compare(str(run_to_one_cluster), 2048)
    assert res["first_plateau"]["pde"] == res["first_plateau"]["particles"] == 3
    closed = [r for r in res["plateaus"] if "length_ratio" in r]
    assert [r["k"] for r in closed] == [3, 2]
    for r in closed:
        assert r["pde_end"] == pytest.approx(r["particles_end"], rel=0.05)
    # the long plateau (2 clusters, ~40x the first) has the same length to 5 %
    assert closed[1]["length_ratio"] == pytest.approx(1.0, abs=0.05)


def test_quantiles_initial_kind_from_a_run_file(run_to_one_cluster, tmp_path, cli):
    """initial.kind = "quantiles" places the particle domain's tokens at the run's first
    snapshot's quantiles (every member of a batch identical)."""
    out = tmp_path / "p.h5"
    proc = cli("run", "--quiet", "--set", "model.domain=\"particles\"", "--set",
               "model.beta=4", "--set", "particles.count=256", "--set", "particles.batch=2",
               "--set", "initial.kind=\"quantiles\"", "--set",
               f"initial.path=\"{run_to_one_cluster}\"", "--set", "time.t_end=0.01",
               "--set", "time.n_outputs=2", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    with open_run(out) as run:
        x0 = np.asarray(run.snapshot(0))
        p0 = open_run(run_to_one_cluster).snapshot(0)
    np.testing.assert_allclose(np.squeeze(x0[0]), quantile_circle_density(p0, 256), atol=1e-12)
    np.testing.assert_array_equal(x0[0], x0[1])
    bad = cli("run", "--quiet", "--set", "model.domain=\"particles\"", "--set",
              "initial.kind=\"quantiles\"", "--output", str(tmp_path / "q.h5"))
    assert bad.returncode == 2 and "initial.path" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "q.h5").exists()
