"""Sweeps: real process pools, a real Dask LocalCluster, failures, kills and idempotency."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from meanfield.sweep import parse_param, run_sweep

BASE = """
[discretization]
cells = 256
[time]
t_end_units = "e_folds"
t_end = 10.0
n_outputs = 21
"""


def _cli(*args, cwd, timeout=600):
    env = dict(os.environ, MEANFIELD_NO_PROGRESS="1")
    return subprocess.run([sys.executable, "-m", "meanfield.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture
def base(tmp_path):
    p = tmp_path / "base.toml"
    p.write_text(BASE)
    return p


def test_parse_param_ranges_and_lists():
    assert parse_param("model.beta=1:2:0.25").values == (1.0, 1.25, 1.5, 1.75)
    assert parse_param("initial.seed=0:4").values == (0, 1, 2, 3)
    assert parse_param("model.model=usa,sa").values == ("usa", "sa")
    assert parse_param("model.beta=0:0.3:0.1").values == (0.0, 0.1, 0.2)  # STOP excluded


def _summary_values(out):
    with h5py.File(out / "summary.h5", "r") as f:
        return {k: f[k][()] for k in ("exit_time", "first_plateau_clusters", "final_ebar",
                                      "growth_rate_measured", "status")}


def test_process_pool_sweep_skip_and_failure(base, tmp_path):
    out = tmp_path / "sw"
    res = _cli("sweep", str(base), "--param", "model.beta=4,9", "--param", "initial.seed=0:2",
               "-o", str(out), "--jobs", "2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    files = sorted(p.name for p in out.glob("beta=*.h5"))
    assert files == ["beta=4_seed=0.h5", "beta=4_seed=1.h5", "beta=9_seed=0.h5",
                     "beta=9_seed=1.h5"]
    for f in files:
        with h5py.File(out / f, "r") as h:
            assert h.attrs["status"] == "complete"
    manifest = json.loads((out / "sweep.json").read_text())
    assert {r["status"] for r in manifest["runs"].values()} == {"complete"}
    assert len({r["pid"] for r in manifest["runs"].values()}) == 2  # two worker processes
    csv = (out / "summary.csv").read_text().splitlines()
    assert len(csv) == 5 and csv[0].startswith("name,model.beta,initial.seed,status")
    summary = _summary_values(out)
    assert summary["status"].shape == (2, 2) and np.all(summary["status"] == 1)
    np.testing.assert_array_equal(summary["first_plateau_clusters"], [[3, 3], [4, 4]])
    import xarray as xr

    with xr.open_dataset(out / "summary.h5", engine="h5netcdf") as ds:
        assert ds["exit_time"].dims == ("model.beta", "initial.seed")
        assert ds["exit_time"].sel({"model.beta": 9.0}).values.max() < 0.1
    mtimes = {f: (out / f).stat().st_mtime_ns for f in files}
    again = _cli("sweep", str(base), "--param", "model.beta=4,9", "--param", "initial.seed=0:2",
                 "-o", str(out), "--jobs", "2", cwd=tmp_path)
    assert again.returncode == 0 and "skipped 4" in again.stdout
    assert mtimes == {f: (out / f).stat().st_mtime_ns for f in files}
    np.testing.assert_array_equal(_summary_values(out)["exit_time"], summary["exit_time"])
    # a bad combination and a blow-up are recorded, the other runs complete, exit code 1
    bad = _cli("sweep", str(base), "--param", "discretization.cfl=0.4,1.5", "--param",
               "discretization.dt=0,1e-1", "-o", str(tmp_path / "bad"), "--jobs", "2",
               cwd=tmp_path)
    assert bad.returncode == 1
    runs = json.loads((tmp_path / "bad" / "sweep.json").read_text())["runs"]
    status = {name: r["status"] for name, r in runs.items()}
    assert status == {"cfl=0.4_dt=0": "complete", "cfl=0.4_dt=0.1": "failed",
                      "cfl=1.5_dt=0": "failed", "cfl=1.5_dt=0.1": "failed"}
    assert "discretization.cfl" in runs["cfl=1.5_dt=0"]["message"]
    assert "negative" in runs["cfl=0.4_dt=0.1"]["message"] or \
        "non-finite" in runs["cfl=0.4_dt=0.1"]["message"]
    with h5py.File(tmp_path / "bad" / "cfl=0.4_dt=0.1.h5", "r") as h:
        assert h.attrs["status"] == "failed"
    assert "failed 3" in bad.stdout


def test_dask_local_cluster_matches_process_pool(base, tmp_path):
    args = [str(base), "--param", "model.beta=3,6", "--param", "initial.seed=0,1"]
    run_sweep(*args[:1], args[2::2], str(tmp_path / "pool"), jobs=2, quiet=True)
    run_sweep(*args[:1], args[2::2], str(tmp_path / "dask"), dask_local=2, quiet=True)
    a, b = _summary_values(tmp_path / "pool"), _summary_values(tmp_path / "dask")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-12, atol=0)


def test_killed_worker_then_rerun_completes(base, tmp_path):
    # a few seconds per run so the kill lands inside one (atoms are not the subject here)
    (tmp_path / "slow.toml").write_text(BASE.replace("cells = 256", "cells = 2048")
                                        .replace("t_end = 10.0", "t_end = 16.0")
                                        + "[atoms]\nenabled = false\n")
    out = tmp_path / "k"
    args = ["sweep", "slow.toml", "--param", "model.beta=6,8", "-o", str(out), "--jobs", "2"]
    import psutil

    env = dict(os.environ, MEANFIELD_NO_PROGRESS="1")
    proc = subprocess.Popen([sys.executable, "-m", "meanfield.cli", *args], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not killed:
        time.sleep(0.2)
        if list(out.glob("*.partial")):  # a worker is inside a run
            kids = psutil.Process(proc.pid).children(recursive=True)
            workers = [k for k in kids if "resource_tracker" not in " ".join(k.cmdline())]
            if workers:
                os.kill(workers[-1].pid, signal.SIGKILL)
                killed = True
    proc.wait(timeout=300)
    assert killed
    res = _cli("sweep", *args[1:], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    ref = _cli("sweep", *args[1:4], "-o", str(tmp_path / "ref"), "--jobs", "1", cwd=tmp_path)
    assert ref.returncode == 0
    for name in ("beta=6.h5", "beta=8.h5"):
        with h5py.File(out / name, "r") as a, h5py.File(tmp_path / "ref" / name, "r") as b:
            assert a.attrs["status"] == "complete"
            np.testing.assert_array_equal(a["time"][()], b["time"][()])
            np.testing.assert_allclose(a["density"][()], b["density"][()], rtol=0, atol=1e-12)
    assert not list(out.glob("*.partial")) and not list(out.glob("*.checkpoint"))


@pytest.mark.parametrize("args,param", [
    (["--param", "model.beta"], "--param"),
    (["--param", "model.betta=1,2"], "--param"),
    (["--param", "model.beta=5:1:1"], "model.beta"),
    (["--param", "model.beta=1,2", "--scheduler", "tcp://127.0.0.1:9"], "--scheduler"),
    (["--param", "model.beta=1,2", "--jobs", "0"], "--jobs"),
])
def test_bad_sweep_input(tmp_path, args, param):
    res = _cli("sweep", *args, "-o", str(tmp_path / "never"), cwd=tmp_path, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and param in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "never").exists()


def test_sweep_figure(base, tmp_path):
    out = tmp_path / "fig"
    run_sweep(str(base), ["model.beta=2,5", "initial.seed=0"], str(out), jobs=1, quiet=True)
    res = _cli("plot", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    png = out / "sweep.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 30_000
