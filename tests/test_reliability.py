"""Reliability at the edges (issue 11), each defect reproduced the way a user met it: a fixed
step that is honoured, full disks, killed and concurrent sweeps, initial-density files, run
status in analysis, errors that keep "one line, exit 2", sweep figures per series, domain
defaults, file permissions, and the smaller defects."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

CLI = [sys.executable, "-m", "meanfield.cli"]
ENV = dict(os.environ, MEANFIELD_NO_PROGRESS="1")


def _run(*args, cwd, preexec=None, timeout=300):
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=ENV, preexec_fn=preexec)


def _one_line_error(res, key: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert key in res.stderr, res.stderr


# --------------------------------------------------------------------------- 1 fixed dt
def test_a_fixed_dt_is_the_step_used_however_often_the_run_records(tmp_path):
    """lf, dt = 0.001, t_end = 0.1: 100 steps with 11 or 101 snapshots (5 diagnostic records
    per snapshot interval, i.e. intervals of 2e-3 and 2e-4 < dt), identical densities."""
    common = ["--set", "model.beta=5", "--set", "discretization.scheme=lf", "--set",
              "discretization.dt=0.001", "--set", "time.t_end=0.1", "--quiet"]
    dens = {}
    for n in (11, 101):
        res = _run("run", *common, "--set", f"time.n_outputs={n}", "-o", f"r{n}.h5",
                   cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert "steps = 100," in res.stdout
        with h5py.File(tmp_path / f"r{n}.h5", "r") as f:
            dens[n] = f["density"][-1]
            t = f["diag_time"][()]
            assert f["time"][-1] == pytest.approx(0.1, abs=1e-15)
            np.testing.assert_allclose(np.diff(f["steps"][()]) * 0.001, np.diff(t),
                                       rtol=1e-9)  # every record falls on a step
    np.testing.assert_array_equal(dens[11], dens[101])
    # an oversized step warns with the step actually used
    res = _run("run", "--set", "model.beta=5", "--set", "discretization.scheme=lf", "--set",
               "discretization.dt=0.05", "--set", "time.t_end=0.1", "--set",
               "time.n_outputs=3", "-o", "w.h5", "--quiet", cwd=tmp_path)
    assert "fixed dt = 5.000e-02 exceeds" in res.stderr


# --------------------------------------------------------------------------- 2 full disk
def _file_size_limit(nbytes: int):
    def pre():
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return pre


def test_full_disk_stops_with_one_line_and_keeps_a_resumable_checkpoint(tmp_path):
    """A 3 MB file size limit (a full disk as the process sees it) on a run whose final
    file is 5.6 MB: exit 74, one line naming the file and the space needed, no temporary
    files left, the last checkpoint intact; without the limit --resume completes the run
    and its file equals an uninterrupted run's."""
    args = ["--set", "time.t_end=0.05", "--set", "time.n_outputs=71", "--set",
            "discretization.cells=8192", "--set", "time.diagnostics_per_output=1", "--set",
            "output.compression=none", "--quiet"]
    res = _run("run", *args, "--set", "output.checkpoint_seconds=0", "-o", "f.h5",
               cwd=tmp_path, preexec=_file_size_limit(3_000_000))
    assert res.returncode == 74, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "f.h5" in res.stderr and "needs about" in res.stderr and "--resume" in res.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["f.h5.checkpoint"], names  # no .partial, .tmp or lock left behind
    res = _run("run", "--resume", "f.h5", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = _run("run", *args, "-o", "g.h5", cwd=tmp_path)
    with h5py.File(tmp_path / "f.h5", "r") as a, h5py.File(tmp_path / "g.h5", "r") as b:
        np.testing.assert_array_equal(a["density"][()], b["density"][()])
        np.testing.assert_array_equal(a["ebar"][()], b["ebar"][()])
        np.testing.assert_array_equal(a["time"][()], b["time"][()])


# ------------------------------------------------------------------ 3, 4 sweeps and locks
SWEEP = ["sweep", "--param", "model.beta=4,5,6,7", "--param", "initial.seed=0:2", "--set",
         "discretization.cells=256", "--set", "time.t_end=1.5", "--set", "time.n_outputs=31",
         "--set", "output.checkpoint_seconds=0.5", "--quiet"]


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_killed_sweep_takes_its_workers_with_it_and_a_rerun_completes(tmp_path):
    out = tmp_path / "sw"
    proc = subprocess.Popen([*CLI, *SWEEP, "-o", str(out), "--jobs", "2"], cwd=tmp_path,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("*.checkpoint")):
        time.sleep(0.1)
    assert list(out.glob("*.checkpoint")), "the sweep never reached a checkpoint"
    workers = [c for c in _children(proc.pid) if _alive(c)]
    assert len(workers) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(4.0)
    orphans = [w for w in workers if _alive(w)]
    for w in orphans:  # do not leave them behind even if the test fails
        os.kill(w, signal.SIGKILL)
    assert not orphans, "workers outlived the killed sweep"
    res = _run(*SWEEP, "-o", str(out), "--jobs", "2", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    manifest = json.loads((out / "sweep.json").read_text())
    assert {r["status"] for r in manifest["runs"].values()} == {"complete"}
    assert len(list(out.glob("beta=*.h5"))) == 8 and not list(out.glob("*.partial"))


def test_a_second_sweep_or_run_on_the_same_outputs_exits_2_naming_the_holder(tmp_path):
    out = tmp_path / "sw"
    proc = subprocess.Popen([*CLI, *SWEEP, "-o", str(out), "--jobs", "1"], cwd=tmp_path,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out / ".sweep.lock").exists():
            time.sleep(0.05)
        res = _run(*SWEEP, "-o", str(out), cwd=tmp_path)
        _one_line_error(res, "in use by another meanfield process")
        assert f"pid {proc.pid}" in res.stderr
        while time.monotonic() < deadline and not list(out.glob("*.h5.lock")):
            time.sleep(0.05)
        running = next(out.glob("*.h5.lock")).name[: -len(".lock")]
        params = dict(kv.split("=") for kv in running[: -len(".h5")].split("_"))
        res = _run("run", "--set", "discretization.cells=256", "--set", "time.t_end=1.5",
                   "--set", "time.n_outputs=31", "--set", f"model.beta={params['beta']}",
                   "--set", f"initial.seed={params['seed']}", "-o", str(out / running),
                   cwd=tmp_path)
        _one_line_error(res, "output.path")
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ 5 initial files
def test_initial_density_files_are_checked_against_the_documented_measure(tmp_path):
    np.save(tmp_path / "ones.npy", np.ones(1024))            # normalised to d theta/(2 pi)
    np.save(tmp_path / "zeros.npy", np.zeros(1024))
    base = ["run", "--set", "initial.kind=file", "--set", "time.t_end=0.01", "--quiet"]
    res = _run(*base, "--set", "initial.path=ones.npy", "-o", "a.h5", cwd=tmp_path)
    _one_line_error(res, "initial.path")
    assert "mass 6.283185307" in res.stderr and "initial.normalize_file" in res.stderr
    res = _run(*base, "--set", "initial.path=zeros.npy", "-o", "b.h5", cwd=tmp_path)
    _one_line_error(res, "mass 0")
    assert not list(tmp_path.glob("*.h5*"))
    res = _run(*base, "--set", "initial.path=ones.npy", "--set", "initial.normalize_file=true",
               "-o", "c.h5", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert abs(f["mass"][0] - 1) < 1e-14


# ------------------------------------------------------------------ 6 run status
def test_analyze_reports_the_status_of_failed_and_unfinished_runs(tmp_path):
    """The paper's Lax-Friedrichs step (dt = 0.02 dx) blows up at beta = 7 (status failed);
    a run stopped by its wall-clock budget leaves a checkpoint (status interrupted)."""
    res = _run("run", "--set", "model.beta=7", "--set", "discretization.scheme=lf", "--set",
               "discretization.dt_per_dx=0.02", "--set", "discretization.cells=512", "--set",
               "time.t_end=0.2", "--set", "time.n_outputs=21", "-o", "bad.h5", "--quiet",
               cwd=tmp_path)
    assert res.returncode == 1
    res = _run("analyze", "bad.h5", cwd=tmp_path)
    assert res.returncode == 1 and res.stdout.startswith("status: failed -- density has")
    res = _run("analyze", "bad.h5", "--json", "--any-status", cwd=tmp_path)
    out = json.loads(res.stdout)
    assert res.returncode == 0 and out["status"] == "failed" and "negative" in out["message"]
    res = _run("run", "--set", "time.t_end=5", "--set", "stop.wall_seconds=0.5", "--set",
               "output.checkpoint_seconds=0", "-o", "cut.h5", "--quiet", cwd=tmp_path)
    assert res.returncode == 75
    res = _run("analyze", "cut.h5.checkpoint", cwd=tmp_path)
    assert res.returncode == 3 and res.stdout.startswith("status: interrupted"), res.stdout


# ------------------------------------------------------------------ 7 one-line errors
def _unwritable_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        (d / "probe").touch()
    except OSError:
        return d / "sub"
    (d / "probe").unlink()  # root ignores permissions: use a read-only system folder
    for cand in (Path("/sys/fs"), Path("/proc/1")):
        try:
            (cand / "meanfield-probe").touch()
        except OSError:
            return cand / "meanfield-out"
    pytest.skip("no unwritable folder available")


def test_errors_keep_one_line_and_exit_2(tmp_path):
    ro = _unwritable_dir(tmp_path)
    _one_line_error(_run("run", "--set", "time.t_end=0.01", "-o", str(ro / "x.h5"),
                         cwd=tmp_path), "output.path")
    _one_line_error(_run("sweep", "--param", "model.beta=2,3", "-o", str(ro / "sw"),
                         cwd=tmp_path), "-o")
    _one_line_error(_run("kmax", "--beta", "5", "--plot", str(ro / "k.png"), cwd=tmp_path),
                    "cannot write")
    res = _run("run", "--set", "time.t_end=0.05", "--set", "time.n_outputs=6", "-o", "r.h5",
               "--quiet", cwd=tmp_path)
    assert res.returncode == 0
    _one_line_error(_run("plot", "r.h5", "-o", str(ro / "figs"), cwd=tmp_path),
                    "cannot write")
    with h5py.File(tmp_path / "r.h5", "r") as f:  # corrupt one compressed chunk
        info = f["density"].id.get_chunk_info(0)
    with open(tmp_path / "r.h5", "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 3)
        fh.write(b"\xff" * 64)
    _one_line_error(_run("analyze", "r.h5", cwd=tmp_path), "cannot read")
    _one_line_error(_run("plot", "r.h5", "-o", "figs", cwd=tmp_path), "cannot read")
    _one_line_error(_run("run", "--set", "initial.kind=file", "--set", "initial.path=r.h5",
                         "-o", "s.h5", cwd=tmp_path), "cannot read")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _one_line_error(_run("run", "--set", "initial.kind=file", "--set", "initial.path=obj.npy",
                         "-o", "t.h5", cwd=tmp_path), "initial.path")
    np.savez(tmp_path / "qkv.npz", Q=np.array([None]), K=np.eye(2), V=np.eye(2))
    _one_line_error(_run("run", "--set", "model.domain=particles", "--set",
                         "particles.qkv=qkv.npz", "-o", "u.h5", cwd=tmp_path), "particles.qkv")
    _one_line_error(_run("sweep", "--param", "model.beta=2,3", "-o", "sw", "--jobs", "0",
                         cwd=tmp_path), "--jobs")
    assert not list(tmp_path.glob("[stu].h5*"))


# ------------------------------------------------------------------ 8 sweep figure series
def test_sweep_table_and_figure_keep_usa_and_sa_apart(tmp_path):
    res = _run("sweep", "--param", "model.model=usa,sa", "--param", "model.beta=2,5",
               "--set", "discretization.cells=128", "--set", "time.t_end_units=e_folds",
               "--set", "time.t_end=6", "--set", "time.n_outputs=31", "-o", "sw", "--jobs",
               "1", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "[model=usa]" in res.stdout and "[model=sa]" in res.stdout
    from meanfield.sweep import load_manifest, series_of

    data = load_manifest(tmp_path / "sw")
    groups = series_of(data["runs"], [p["key"] for p in data["params"]])
    assert sorted(groups) == ["model=sa", "model=usa"]
    for label, runs in groups.items():  # each series holds only its own model
        assert {r["params"]["model.model"] for r in runs} == {label.split("=")[1]}
        pred = sorted(r["summary"]["exit_time_predicted"] for r in runs)
        assert pred[0] > 0
    usa = {r["params"]["model.beta"]: r["summary"]["exit_time_predicted"]
           for r in groups["model=usa"]}
    sa = {r["params"]["model.beta"]: r["summary"]["exit_time_predicted"]
          for r in groups["model=sa"]}
    assert sa[5.0] / usa[5.0] > 20  # the values the old figure averaged together
    res = _run("plot", "sw", cwd=tmp_path)
    assert res.returncode == 0 and (tmp_path / "sw" / "sweep.png").stat().st_size > 20_000


# ------------------------------------------------------------------ 9 domain defaults
def test_every_domain_runs_with_its_defaults(tmp_path):
    for dom in ("circle", "sphere", "zonal", "particles"):
        res = _run("run", "--set", f"model.domain={dom}", "--set", "time.t_end=0.02", "--set",
                   "time.n_outputs=3", "-o", f"{dom}.h5", "--quiet", cwd=tmp_path)
        assert res.returncode == 0, (dom, res.stderr)
    res = _run("run", "--set", "model.domain=sphere", "--set", "initial.tokens=100", "-o",
               "bad.h5", cwd=tmp_path)
    _one_line_error(res, "initial.tokens")
    assert "initial.cutoff" in res.stderr


# ------------------------------------------------------------------ 10, 11 smaller defects
def test_sweep_outputs_follow_the_umask_and_reruns_keep_what_they_know(tmp_path):
    old = os.umask(0o022)
    try:
        base = ["sweep", "--param", "model.beta=1.5,10,10.5,2.00000000001,2.00000000002",
                "--set", "discretization.cells=64", "--set", "time.t_end=0.05", "--set",
                "time.n_outputs=3", "-o", "sw", "--jobs", "1", "--quiet"]
        res = _run(*base, cwd=tmp_path)
    finally:
        os.umask(old)
    assert res.returncode == 0, res.stderr
    sw = tmp_path / "sw"
    for name in ("sweep.json", "summary.csv", "summary.h5", "beta=1.5.h5"):
        assert stat.S_IMODE((sw / name).stat().st_mode) == 0o644, name
    assert (sw / "beta=2.00000000001.h5").exists() and (sw / "beta=2.00000000002.h5").exists()
    rows = (sw / "summary.csv").read_text().splitlines()[1:]
    assert [r.split(",")[1] for r in rows] == ["1.5", "2.00000000001", "2.00000000002", "10",
                                                "10.5"]
    walls = {n: r["summary"]["wall_seconds"]
             for n, r in json.loads((sw / "sweep.json").read_text())["runs"].items()}
    res = _run(*base, cwd=tmp_path)  # everything is skipped
    assert res.returncode == 0 and "skipped 5" in res.stdout
    again = {n: r["summary"]["wall_seconds"]
             for n, r in json.loads((sw / "sweep.json").read_text())["runs"].items()}
    assert again == walls and min(walls.values()) > 0


def test_sigterm_checkpoints_then_exits_and_resume_is_exact(tmp_path):
    args = ["--set", "time.t_end=1.0", "--set", "time.n_outputs=31", "--set",
            "discretization.cells=1024", "--quiet"]  # ~7 s, through captures and merges
    proc = subprocess.Popen([*CLI, "run", *args, "-o", "t.h5"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, (out, err)
    assert "stopped by SIGTERM" in out and (tmp_path / "t.h5.checkpoint").exists()
    res = _run("run", "--resume", "t.h5", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = _run("run", *args, "-o", "ref.h5", cwd=tmp_path)
    with h5py.File(tmp_path / "t.h5", "r") as a, h5py.File(tmp_path / "ref.h5", "r") as b:
        np.testing.assert_array_equal(a["density"][()], b["density"][()])
        assert a["time"].attrs["units"] == "1" and "time unit" in a["time"].attrs["long_name"]
    size_a, size_b = (tmp_path / "t.h5").stat().st_size, (tmp_path / "ref.h5").stat().st_size
    assert size_a < 1.1 * size_b  # a resumed file carries no dead space
