"""Sphere, zonal and particle runs through the whole pipeline: config -> file -> analysis."""

import h5py
import numpy as np
import pytest

from meanfield import config, growth_rate, most_unstable_mode
from meanfield.driver import execute
from meanfield.io.reader import open_run
from meanfield.plots import plot_run
from meanfield.sweep import run_sweep


def _run(tmp_path, sets, name="run.h5", **kw):
    cfg, text = config.resolve(None, sets, str(tmp_path / name))
    return execute(cfg, text, quiet=True, **kw), cfg, text


def test_sphere_run_file_analysis_and_figures(tmp_path):
    summary, cfg, _ = _run(tmp_path, [
        "model.domain=\"sphere\"", "discretization.lmax=42", "initial.tokens=1e12",
        "initial.cutoff=8", "time.t_end=2.2", "time.n_outputs=45"])
    assert cfg["model"]["dim"] == 3 and cfg["discretization"]["scheme"] == "spectral"
    assert summary.status == "complete"
    path = tmp_path / "run.h5"
    with h5py.File(path, "r") as f:
        nlat, nphi = f.attrs["nlat"], f.attrs["nphi"]
        assert f["density"].shape[1:] == (nlat, nphi)
        assert nlat >= 3 * 43 / 2 and nphi >= 3 * 42 + 1  # the 3/2 dealiasing rule
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds["density"].dims == ("time", "lat", "lon")
        assert ds["spectrum"].dims == ("diag_time", "mode")
        assert -90 < float(ds.lat.min()) < -80 and 80 < float(ds.lat.max()) < 90
    with open_run(path) as run:
        res = run.analyze()
        files = plot_run(run, tmp_path / "figs", res)
    # N = 1e12: the initial amplitudes are tiny, so degree 3 wins with probability ~99 %
    assert res["k_max_predicted"] == 3 and res["dominant_mode_at_exit"] == 3
    fit = res["growth_rate_fit"]
    assert fit["k"] == 3 and fit["measured"] == pytest.approx(growth_rate(3, 5.0, 3), rel=1e-2)
    assert res["mass_drift"] < 1e-12
    assert {p.split("_")[-1] for p in files} == {"mollweide.png", "orthographic.png",
                                                 "spectrum.png", "energy.png", "clusters.png"}


def test_zonal_growth_rate_in_d4_and_sweep_over_dim(tmp_path):
    _run(tmp_path, ["model.domain=\"zonal\"", "model.dim=4", "initial.kind=\"mode\"",
                    "initial.mode=2", "initial.amplitude=1e-5", "time.t_end=1.2",
                    "time.n_outputs=61"])
    with open_run(tmp_path / "run.h5") as run:
        assert run.density.shape[1] == 512 and run.attrs["dim"] == 4
        res = run.analyze()
    assert res["growth_rate_fit"]["k"] == 2
    assert res["growth_rate_fit"]["measured"] == pytest.approx(growth_rate(2, 5.0, 4), rel=1e-2)
    assert res["mass_drift"] < 1e-13 and res["min_density"] >= 0 and res["energy_monotone"]
    (tmp_path / "z.toml").write_text('[model]\ndomain = "zonal"\n[discretization]\ncells = 256\n'
                                     '[time]\nt_end_units = "e_folds"\nt_end = 8.0\n')
    runs, _ = run_sweep(str(tmp_path / "z.toml"), ["model.dim=3,8"], str(tmp_path / "sw"),
                        jobs=1, quiet=True, sets=["initial.tokens=1e8"])
    assert {r["status"] for r in runs.values()} == {"complete"}
    assert runs["dim=8"]["summary"]["k_max_predicted"] == most_unstable_mode(5.0, 8)
    assert runs["dim=3"]["summary"]["k_max_predicted"] == 3


def test_particle_run_resume_and_figures(tmp_path):
    sets = ["model.domain=\"particles\"", "particles.count=600", "particles.batch=2",
            "particles.integrator=\"adaptive\"", "particles.rtol=1e-9", "time.t_end=0.5",
            "time.n_outputs=26"]
    ref, _, _ = _run(tmp_path, sets, "ref.h5")
    assert ref.status == "complete"
    cut, cfg, text = _run(tmp_path, [*sets, "stop.wall_seconds=0.2",
                                     "output.checkpoint_seconds=0"], "cut.h5")
    assert cut.status == "interrupted"
    while cut.status == "interrupted":
        cut = execute(cfg, text, resume=True, quiet=True)
    with h5py.File(tmp_path / "ref.h5", "r") as a, h5py.File(tmp_path / "cut.h5", "r") as b:
        np.testing.assert_array_equal(a["time"][()], b["time"][()])
        np.testing.assert_allclose(b["angles"][()], a["angles"][()], rtol=0, atol=1e-12)
        assert a["angles"].shape == (26, 2, 600)
        np.testing.assert_array_equal(a["V"][()], np.eye(2))
        assert a.attrs["domain"] == "particles" and a.attrs["energy_is_lyapunov"]
    import xarray as xr

    with xr.open_dataset(tmp_path / "ref.h5", engine="h5netcdf") as ds:
        assert ds["angles"].dims == ("time", "system", "particle")
        assert ds["ebar"].dims == ("diag_time", "system")
        assert np.all(np.diff(ds["energy"].values, axis=0) >= -1e-12)
    with open_run(tmp_path / "ref.h5") as run:
        res = run.analyze()
        files = plot_run(run, tmp_path / "figs", res)
    assert res["k_max_predicted"] == 3 and res["exit_time"] is not None
    assert res["final_clusters"] in (2, 3, 4)  # finite N: k_max or a neighbour
    assert any(f.endswith("_trajectories.png") for f in files)


def test_particles_on_s2_store_unit_vectors(tmp_path):
    summary, _, _ = _run(tmp_path, ["model.domain=\"particles\"", "model.dim=3",
                                    "particles.count=300", "model.beta=4", "time.t_end=1.0",
                                    "time.n_outputs=11"])
    assert summary.status == "complete"
    with open_run(tmp_path / "run.h5") as run:
        x = run.snapshot(-1)
        assert x.shape == (1, 300, 3)
        np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, atol=1e-12)
        res = run.analyze()
    assert res["energy_monotone"]


@pytest.mark.parametrize("sets,key", [
    (["model.domain=\"sphere\"", "model.dim=4"], "model.dim"),
    (["model.domain=\"sphere\"", "discretization.scheme=\"fv2\""], "discretization.scheme"),
    (["model.domain=\"sphere\"", "discretization.lmax=2"], "discretization.lmax"),
    (["model.domain=\"zonal\"", "model.dim=1"], "model.dim"),
    (["model.domain=\"particles\"", "initial.kind=\"mode\""], "initial.kind"),
    (["model.domain=\"particles\"", "particles.integrator=\"leapfrog\""],
     "particles.integrator"),
])
def test_domain_bad_input(tmp_path, sets, key):
    with pytest.raises(ValueError, match=key):
        config.resolve(None, sets, str(tmp_path / "x.h5"))
    assert not (tmp_path / "x.h5").exists()


def test_cluster_counts_on_sphere_zonal_and_particles():
    from meanfield.domains.particles import particle_cluster_count
    from meanfield.domains.sphere import sphere_cluster_count
    from meanfield.domains.zonal import zonal_cluster_count
    from meanfield.initial import sphere as ins
    from solvers.particles import uniform_sample
    from solvers.sphere import default_grid
    from solvers.zonal import Zonal

    nlat, nphi = default_grid(63)
    x, phi, _ = ins.gauss_grid(nlat, nphi)
    lat, lon = 90 - np.degrees(np.arccos(x)), np.degrees(phi)
    tetra = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)
    for k in (1, 2, 4):
        p = ins.von_mises_fisher(x, phi, tetra[:k], kappa=60.0)
        assert sphere_cluster_count(lat, lon, p) == k
    assert sphere_cluster_count(lat, lon, ins.token_noise(x, phi, 1e4, seed=1, cutoff=10)) == 0
    z = Zonal(256, 5)
    caps = z.cell_average(lambda th: np.exp(40 * (np.cos(th) - 1)) + np.exp(40 * (-np.cos(th) - 1)))
    caps /= float(z.cell_weight @ caps)
    assert zonal_cluster_count(z.theta, caps, 5) == 2
    assert zonal_cluster_count(z.theta, z.uniform(), 5) == 0
    rng = np.random.default_rng(0)
    three = np.concatenate([c + 0.02 * rng.standard_normal(300) for c in (0.5, 2.6, 4.7)])
    assert particle_cluster_count(three, angles=True) == 3
    assert particle_cluster_count(uniform_sample(900, 2, seed=2)[0], angles=True) == 0
    pts = np.repeat(tetra[:3], 100, axis=0) + 1e-3 * rng.standard_normal((300, 3))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    assert particle_cluster_count(pts, angles=False) == 3
    assert particle_cluster_count(uniform_sample(300, 3, seed=3)[0], angles=False) == 0
