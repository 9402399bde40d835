"""Run pipeline: config -> HDF5 file -> reader/xarray -> analysis -> plots; restart; bad input."""

import math
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from scipy.special import iv

from meanfield import config, initial
from meanfield.analysis import density_clusters as detect_clusters
from meanfield.driver import execute
from meanfield.io.reader import open_run

SMALL = ["discretization.cells=256", "time.t_end=0.5", "time.n_outputs=26"]


def _run(tmp_path, sets=(), name="run.h5"):
    cfg, text = config.resolve(None, [*SMALL, *sets], str(tmp_path / name))
    return execute(cfg, text, quiet=True), cfg, text


def test_file_round_trip_and_xarray(tmp_path):
    summary, cfg, text = _run(tmp_path, ["model.beta=4.5", "initial.seed=7"])
    assert summary.status == "complete"
    path = tmp_path / "run.h5"
    with h5py.File(path, "r") as f:
        for key, value in config.flat(cfg).items():
            stored = f.attrs[key]
            if isinstance(value, list):
                np.testing.assert_array_equal(stored, value)
            else:
                assert stored == value, key
        assert f.attrs["config_text"] == text
        assert f.attrs["status"] == "complete"
        assert f.attrs["seed"] == 7
        assert f.attrs["package_version"]
        for lib in ("numpy", "scipy", "h5py", "hdf5", "pyfftw"):
            assert f.attrs[f"version.{lib}"]
        assert "d theta" in f.attrs["density_measure"]
        assert f["density"].shape == (26, 256)
        assert f["density"].chunks[1] == 256 and f["density"].compression == "gzip"
        assert "checkpoint" not in f
    assert config.from_text(text) == cfg
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds["density"].dims == ("time", "theta")
        assert ds["spectrum"].dims == ("diag_time", "mode")
        np.testing.assert_allclose(ds["time"].values, np.linspace(0, 0.5, 26))
        assert ds.attrs["model.beta"] == 4.5
        # the measure is the density plus the atoms that clusters become (solvers.atoms)
        mass = ds["density"].sum("theta").values * 2 * np.pi / 256
        mass += ds["atom_mass_by_atom"].sum("atom").values
        np.testing.assert_allclose(mass, mass[0], rtol=1e-13)
    with open_run(path) as run:
        assert run.config["model"]["beta"] == 4.5
        assert run.snapshot(-1).shape == (256,)
        assert run.diagnostics["ebar"].shape == run.diag_times.shape == (126,)


@pytest.mark.parametrize("cells", [256, 1024, 4096])
def test_cluster_detection_counts_bumps_and_noise(cells):
    for k in (1, 2, 3, 5):
        centres = 0.4 + 2 * np.pi * np.arange(k) / k
        p = initial.von_mises_bumps(cells, centres, kappa=60.0)
        clusters = detect_clusters(p)
        assert len(clusters) == k
        np.testing.assert_allclose([c.mass for c in clusters], 1.0 / k, rtol=0.05)
        np.testing.assert_allclose(sorted(c.centre for c in clusters),
                                   np.sort(centres % (2 * np.pi)), atol=2 * np.pi / cells)
    for seed in range(5):
        assert detect_clusters(initial.white_noise(cells, 0.01, seed=seed)) == []
        assert detect_clusters(initial.token_noise(cells, 1000, seed=seed, cutoff=20)) == []


def test_analysis_of_a_run(tmp_path):
    _summary, _, _ = _run(tmp_path, ["time.t_end=0.8", "time.n_outputs=41"])
    with open_run(tmp_path / "run.h5") as run:
        res = run.analyze()
    assert res["k_max_predicted"] == 3
    assert res["dominant_mode_at_exit"] == 3
    assert res["first_plateau_clusters"] == 3 and res["final_clusters"] == 3
    assert 0.15 < res["exit_time"] < 0.5
    assert res["metastable"][0]["k"] == 3
    assert res["mass_drift"] < 1e-13 and res["min_density"] >= 0 and res["energy_monotone"]


def test_growth_rate_fit_on_mode_initial_condition(tmp_path):
    _run(tmp_path, ["initial.kind=\"mode\"", "initial.mode=2", "initial.amplitude=1e-4",
                    "discretization.cells=1024", "model.beta=5", "time.t_end=0.6",
                    "time.n_outputs=61"])
    with open_run(tmp_path / "run.h5") as run:
        fit = run.analyze()["growth_rate_fit"]
    assert fit["k"] == 2
    assert fit["measured"] == pytest.approx(fit["predicted"], rel=1e-2)
    assert fit["predicted"] == pytest.approx(4 * iv(2, 5.0) / 5, rel=1e-12)


def test_stop_on_ebar_and_wall_budget_resume(tmp_path):
    summary, _, _ = _run(tmp_path, ["stop.ebar_above=0.25", "time.t_end=2.0"], "ebar.h5")
    assert summary.status == "complete" and summary.t < 2.0
    with open_run(tmp_path / "ebar.h5") as run:
        assert run.diagnostics["ebar"][-1] > 0.25 >= run.diagnostics["ebar"][-2]
        assert "Ebar" in run.attrs["message"]
    # a wall-clock budget stops the run resumably; resuming reproduces the full run exactly
    _ref, _, _ = _run(tmp_path, ["model.beta=7", "time.t_end=0.3"], "ref.h5")
    cut, cfg, text = _run(tmp_path, ["model.beta=7", "time.t_end=0.3", "stop.wall_seconds=0.3",
                                     "output.checkpoint_seconds=0"], "cut.h5")
    assert cut.status == "interrupted"
    assert not (tmp_path / "cut.h5").exists() and (tmp_path / "cut.h5.checkpoint").exists()
    cfg["stop"]["wall_seconds"] = 0.0  # the resumed run continues under the stored config
    done = execute(cfg, text, resume=True, quiet=True)
    assert done.status == "interrupted" or done.status == "complete"
    while done.status == "interrupted":
        done = execute(cfg, text, resume=True, quiet=True)
    _assert_same_run(tmp_path / "ref.h5", tmp_path / "cut.h5")


def _assert_same_run(a, b):
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert fb.attrs["status"] == "complete"
        np.testing.assert_array_equal(fa["time"][()], fb["time"][()])
        np.testing.assert_allclose(fb["density"][()], fa["density"][()], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(fa["diag_time"][()], fb["diag_time"][()])
        np.testing.assert_allclose(fb["ebar"][()], fa["ebar"][()], rtol=1e-12)
        np.testing.assert_array_equal(fa["steps"][()], fb["steps"][()])


def _cli(*args, cwd):
    env = dict(os.environ, MEANFIELD_NO_PROGRESS="1")
    return subprocess.run([sys.executable, "-m", "meanfield.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('[model]\nbeta = 7.0\n[discretization]\ncells = 512\n'
                    '[time]\nt_end = 0.4\nn_outputs = 41\n[output]\ncheckpoint_seconds = 0.0\n')
    ref = _cli("run", str(conf), "-o", "ref.h5", "--quiet", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    rng = np.random.default_rng(0)
    kills = 0
    target = tmp_path / "killed.h5"
    for attempt in range(6):
        args = ["run", "--resume", "killed.h5"] if attempt else ["run", str(conf), "-o",
                                                                   "killed.h5", "--quiet"]
        env = dict(os.environ, MEANFIELD_NO_PROGRESS="1")
        proc = subprocess.Popen([sys.executable, "-m", "meanfield.cli", *args], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not (tmp_path / "killed.h5.checkpoint").exists() and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.05, 0.6)))  # any moment, including mid-write
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if target.exists():
            break
    assert kills >= 1
    if not target.exists():
        res = _cli("run", "--resume", "killed.h5", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    _assert_same_run(tmp_path / "ref.h5", target)
    assert not (tmp_path / "killed.h5.checkpoint").exists()
    assert not (tmp_path / "killed.h5.partial").exists()
    # a finished run asked to run again says so and does nothing
    before = target.stat().st_mtime_ns
    again = _cli("run", str(conf), "-o", "killed.h5", cwd=tmp_path)
    assert again.returncode == 0 and "already complete" in again.stdout
    assert target.stat().st_mtime_ns == before


@pytest.mark.parametrize("args,param", [
    (["--set", "model.betta=3"], "model.betta"),
    (["--set", "model.beta=-1"], "model.beta"),
    (["--set", "model.beta=nan"], "model.beta"),
    (["--set", "model.beta=\"high\""], "model.beta"),
    (["--set", "discretization.cells=0"], "discretization.cells"),
    (["--set", "discretization.scheme=weno"], "discretization.scheme"),
    (["--set", "discretization.cfl=1.5"], "discretization.cfl"),
    (["--set", "time.t_end=-1"], "time.t_end"),
    (["--set", "foo.bar=1"], "foo"),
    (["--set", "nonsense"], "--set"),
    (["missing.toml"], "CONFIG"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args, param):
    res = _cli("run", *args, "-o", "out.h5", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and param in lines[0] and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_config_file_and_foreign_files(tmp_path):
    (tmp_path / "bad.toml").write_text("[model]\nbeta = 5\nwhatever = 1\n")
    res = _cli("run", "bad.toml", "-o", "out.h5", cwd=tmp_path)
    assert res.returncode == 2 and "model.whatever" in res.stderr
    res = _cli("run", "--resume", "nothing.h5", cwd=tmp_path)
    assert res.returncode == 2 and "--resume" in res.stderr
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = 1
    res = _cli("analyze", "foreign.h5", cwd=tmp_path)
    assert res.returncode == 2 and "not a meanfield run file" in res.stderr
    res = _cli("analyze", "absent.h5", cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.h5").exists()


def test_cli_run_analyze_json_and_plots(tmp_path):
    res = _cli("run", "--set", "discretization.cells=256", "--set", "time.t_end=0.6",
               "-o", "r.h5", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("complete: r.h5")
    res = _cli("analyze", "r.h5", "--json", cwd=tmp_path)
    import json

    out = json.loads(res.stdout)
    for key in ("beta", "dim", "model", "k_max_predicted", "dominant_mode_at_exit",
                "first_plateau_clusters", "final_clusters", "metastable", "exit_time",
                "growth_rate_fit", "mass_drift", "min_density", "energy_monotone"):
        assert key in out
    assert out["k_max_predicted"] == 3 and out["final_clusters"] == 3
    assert math.isfinite(out["exit_time"])
    res = _cli("plot", "r.h5", "-o", "figs", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    pngs = sorted((tmp_path / "figs").glob("*.png"))
    assert [p.name for p in pngs] == ["r_clusters.png", "r_energy.png", "r_snapshots.png",
                                      "r_spacetime.png", "r_spectrum.png"]
    for p in pngs:
        assert p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 15_000


def test_complete_run_of_other_config_is_not_silently_kept(tmp_path):
    _run(tmp_path, ["model.beta=3"], "x.h5")
    cfg, text = config.resolve(None, [*SMALL, "model.beta=4"], str(tmp_path / "x.h5"))
    with pytest.raises(ValueError, match="different configuration"):
        execute(cfg, text, quiet=True)
    assert execute(cfg, text, overwrite=True, quiet=True).status == "complete"
    with open_run(tmp_path / "x.h5") as run:
        assert run.config["model"]["beta"] == 4.0


def test_initial_condition_from_a_previous_run(tmp_path):
    _run(tmp_path, ["time.t_end=0.2"], "first.h5")
    with open_run(tmp_path / "first.h5") as run:
        last = run.snapshot(-1)
    _run(tmp_path, ["initial.kind=\"file\"", f"initial.path=\"{tmp_path / 'first.h5'}\"",
                    "time.t_end=0.1"], "second.h5")
    with open_run(tmp_path / "second.h5") as run:
        np.testing.assert_allclose(run.snapshot(0), last, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match=r"initial\.path"):
        _run(tmp_path, ["initial.kind=\"file\"", "initial.path=\"nope.npy\""], "third.h5")
    np.save(tmp_path / "short.npy", last[:10])
    with pytest.raises(ValueError, match="shape"):
        _run(tmp_path, ["initial.kind=\"file\"", f"initial.path=\"{tmp_path / 'short.npy'}\""],
             "fourth.h5")


def test_same_config_by_value_across_schema_additions():
    from meanfield.driver import same_config

    cfg, text = config.resolve(None, ["model.beta=3"], "a.h5")
    older = "\n".join(line for line in text.splitlines() if not line.startswith("fft_planner"))
    assert same_config(older, cfg)  # a key added later takes its default
    assert same_config(text.replace('"a.h5"', '"b.h5"'), cfg)  # the path is not compared
    assert not same_config(text.replace("beta = 3.0", "beta = 3.5"), cfg)
    assert not same_config("[model]\nunknown = 1\n", cfg)
